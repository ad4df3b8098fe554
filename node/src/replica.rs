//! The replica side of a node: answers `/tigress/replica/1` requests from the store, and
//! turns a fetch with a wait into a long-poll that returns as soon as a message for the
//! reader arrives.

use std::time::Duration;

use tigress_protocol::rpc::{MAX_WAIT_MS, ReplicaRequest, ReplicaResponse};
use tokio::sync::broadcast::error::RecvError;

use crate::store::Store;

/// The replica role of this node.
#[derive(Clone)]
pub struct Replica {
    store: Store,
}

impl Replica {
    /// A replica over `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Answers one request.
    pub async fn handle(&self, request: ReplicaRequest) -> ReplicaResponse {
        let ReplicaRequest::Fetch {
            request: read,
            cursor,
            wait_ms,
        } = request
        else {
            return self.store.apply(request).await;
        };
        let address = read.body.address;
        let reader = read.body.by;
        // Subscribe before the first look, so an arrival in between is not missed.
        let mut arrivals = self.store.arrivals();
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(u64::from(wait_ms.min(MAX_WAIT_MS)));
        let fetch = ReplicaRequest::Fetch {
            request: read,
            cursor,
            wait_ms: 0,
        };
        loop {
            let answer = self.store.apply(fetch.clone()).await;
            let empty =
                matches!(&answer, ReplicaResponse::Messages { messages } if messages.is_empty());
            if !empty || tokio::time::Instant::now() >= deadline {
                return answer;
            }
            // Wait for an arrival for this reader, or the deadline.
            loop {
                match tokio::time::timeout_at(deadline, arrivals.recv()).await {
                    Err(_) => return answer,
                    Ok(Ok((a, to))) if a == address && to == reader => break,
                    Ok(Ok(_)) => {}
                    // Missed some arrivals: look again.
                    Ok(Err(RecvError::Lagged(_))) => break,
                    Ok(Err(RecvError::Closed)) => return answer,
                }
            }
        }
    }
}
