//! The replica side of a node: answers `/tigress/replica/1` requests from the store, and
//! turns a fetch with a wait into a long-poll that returns as soon as a message for the
//! reader arrives.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tigress_protocol::crypto::PublicKey;
use tigress_protocol::placement;
use tigress_protocol::rpc::{MAX_WAIT_MS, RemoteError, ReplicaRequest, ReplicaResponse};
use tigress_protocol::{Address, ErrorCode};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use crate::identity::key_of;
use crate::metrics::Metrics;
use crate::network::NetworkHandle;
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
    placement: Option<Placement>,
}

/// What a replica checks a new genesis against: the nodes its routing table knows.
#[derive(Clone)]
pub struct Placement {
    /// This node's key.
    pub me: PublicKey,
    /// The network, for the routing table.
    pub net: NetworkHandle,
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
            placement: None,
        }
    }

    /// Checks every new genesis against the routing table: a genesis is refused unless
    /// this node is among the 2R nodes it knows nearest to the address (a lying entry
    /// cannot place a mailbox on nodes far from it).
    pub fn with_placement(mut self, placement: Placement) -> Self {
        self.placement = Some(placement);
        self
    }

    /// Whether this node may hold a mailbox at `address` with `r` replicas.
    async fn near(&self, address: &Address, r: usize) -> bool {
        let Some(p) = &self.placement else {
            return true;
        };
        let known: Vec<PublicKey> = p
            .net
            .closest_local(address.as_bytes().to_vec(), 2 * r)
            .await
            .iter()
            .filter_map(key_of)
            .collect();
        placement::nearer_than(&p.me, &known, address) < 2 * r
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
        if let ReplicaRequest::StoreGenesis { genesis } = &request {
            let h = genesis.header();
            if !self.near(&h.address, h.replicas.len()).await {
                return ReplicaResponse::Error(RemoteError::new(
                    ErrorCode::Unauthorized,
                    "this node is not among the nodes nearest to the mailbox's address that it knows",
                ));
            }
        }
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
        if wait_ms > 0
            && let Err(e) = crate::budget::long_poll(*address.as_bytes())
        {
            return ReplicaResponse::Error(crate::budget::refusal(e, "long-polls"));
        }
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
