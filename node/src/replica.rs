//! The replica side of a node: answers `/tigress/replica/1` requests from the store, and
//! turns a fetch with a wait into a long-poll that returns as soon as a message for the
//! reader arrives.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tigress_protocol::crypto::PublicKey;
use tigress_protocol::rpc::{MAX_WAIT_MS, ReplicaRequest, ReplicaResponse};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::store::Store;

/// A seam for test doubles: sees every replica answer before it leaves the node and may
/// replace it. Honest nodes have none; a misbehaving node in a test uses one to forge,
/// replay or withhold.
pub trait ResponseFilter: Send + Sync {
    /// The answer to send for `request`, given the honest `response`.
    fn filter(&self, request: &ReplicaRequest, response: ReplicaResponse) -> ReplicaResponse;
}

/// The replica role of this node.
#[derive(Clone)]
pub struct Replica {
    store: Store,
    metrics: Arc<Metrics>,
    filter: Option<Arc<dyn ResponseFilter>>,
    stopping: watch::Receiver<bool>,
}

impl Replica {
    /// A replica over `store`; its long-polls end early once `stopping` turns true.
    pub fn new(
        store: Store,
        metrics: Arc<Metrics>,
        filter: Option<Arc<dyn ResponseFilter>>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Self {
            store,
            metrics,
            filter,
            stopping,
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Answers one request from the node `from` (`None`: a peer that is not a node).
    pub async fn handle(
        &self,
        request: ReplicaRequest,
        from: Option<PublicKey>,
    ) -> ReplicaResponse {
        match &self.filter {
            None => self.answer(request, from).await,
            Some(filter) => {
                let response = self.answer(request.clone(), from).await;
                filter.filter(&request, response)
            }
        }
    }

    async fn answer(&self, request: ReplicaRequest, from: Option<PublicKey>) -> ReplicaResponse {
        let ReplicaRequest::Fetch {
            request: read,
            cursor,
            wait_ms,
        } = request
        else {
            return self.store.apply_from(request, from).await;
        };
        let address = read.body.address;
        let reader = read.body.by;
        // Subscribe before the first look, so an arrival in between is not missed.
        let mut arrivals = self.store.arrivals();
        let mut stopping = self.stopping.clone();
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(u64::from(wait_ms.min(MAX_WAIT_MS)));
        let fetch = ReplicaRequest::Fetch {
            request: read,
            cursor,
            wait_ms: 0,
        };
        loop {
            let answer = self.store.apply_from(fetch.clone(), from).await;
            let empty =
                matches!(&answer, ReplicaResponse::Messages { messages } if messages.is_empty());
            if !empty || tokio::time::Instant::now() >= deadline || *stopping.borrow() {
                return answer;
            }
            // Wait for an arrival for this reader, or the deadline.
            self.metrics.long_polls.fetch_add(1, Ordering::Relaxed);
            let woken = loop {
                let arrival = tokio::select! {
                    a = tokio::time::timeout_at(deadline, arrivals.recv()) => a,
                    // The node is stopping: answer with what there is.
                    _ = stopping.wait_for(|s| *s) => break false,
                };
                match arrival {
                    Err(_) => break false,
                    Ok(Ok((a, to))) if a == address && to == reader => break true,
                    Ok(Ok(_)) => {}
                    // Missed some arrivals: look again.
                    Ok(Err(RecvError::Lagged(_))) => break true,
                    Ok(Err(RecvError::Closed)) => break false,
                }
            };
            self.metrics.long_polls.fetch_sub(1, Ordering::Relaxed);
            if !woken {
                return answer;
            }
        }
    }
}
