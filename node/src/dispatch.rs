//! The inbound dispatcher: every request the network loop receives comes here, and here
//! alone are the per-peer throttle, the request budget, shutdown refusals and the request
//! metrics. A request that passes goes to the entry role (client protocol) or the replica
//! role (replica protocol) as a task holding one permit of the budget; its answer goes
//! back through the network handle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tigress_protocol::ErrorCode;
use tigress_protocol::rpc::{
    ClientRequest, ClientResponse, RemoteError, ReplicaRequest, ReplicaResponse,
};
use tokio::sync::{Semaphore, mpsc};

use crate::budget::{Admission, Budgets};
use crate::entry::Entry;
use crate::metrics::{Metrics, replica_op};
use crate::network::{Inbound, NetworkHandle};
use crate::oblivious::Oblivious;
use crate::replica::Replica;
use crate::throttle::PeerThrottle;

/// How many inbound requests may wait between the network loop and the dispatcher.
pub(crate) const INBOUND_QUEUE: usize = 1024;

/// The requests being served, long-polls included (which hold no request permit): a
/// stopping node waits for them to answer.
#[derive(Clone, Default)]
pub(crate) struct Serving(Arc<(std::sync::atomic::AtomicUsize, tokio::sync::Notify)>);

/// One request being served; dropping it ends it.
pub(crate) struct Served(Serving);

impl Serving {
    fn enter(&self) -> Served {
        self.0.0.fetch_add(1, Ordering::AcqRel);
        Served(self.clone())
    }

    /// Returns once no request is being served.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.0.1.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.0.0.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.0.0.0.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.0.1.notify_waiters();
        }
    }
}

/// The dispatcher's parts.
pub(crate) struct Dispatcher {
    pub(crate) entry: Arc<Entry>,
    pub(crate) oblivious: Arc<Oblivious>,
    pub(crate) replica: Option<Replica>,
    pub(crate) net: NetworkHandle,
    pub(crate) inflight: Arc<Semaphore>,
    pub(crate) accepting: Arc<AtomicBool>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) throttle: PeerThrottle,
    pub(crate) budgets: Arc<Budgets>,
    pub(crate) serving: Serving,
}

/// Whether `request` is for the relay layer (keys, nodes, relaying, sealed requests)
/// rather than the entry.
fn is_relay_layer(request: &ClientRequest) -> bool {
    matches!(
        request,
        ClientRequest::Keys
            | ClientRequest::KeysOf { .. }
            | ClientRequest::Nodes
            | ClientRequest::Relay { .. }
            | ClientRequest::Oblivious { .. }
    )
}

fn refusal(code: ErrorCode, message: &str) -> RemoteError {
    RemoteError::new(code, message)
}

impl Dispatcher {
    /// Takes inbound requests until the network loop stops.
    pub(crate) async fn run(mut self, mut inbound: mpsc::Receiver<Inbound>) {
        while let Some(request) = inbound.recv().await {
            match request {
                Inbound::Client {
                    peer,
                    from,
                    request,
                    channel,
                } => {
                    let source = self.budgets.classify.of_addr(from.as_ref());
                    let admitted = if !self.throttle.allow(peer, std::time::Instant::now()) {
                        Err(refusal(
                            ErrorCode::RateLimited,
                            "too many requests from this peer; slow down",
                        ))
                    } else {
                        self.budgets
                            .client_slots
                            .take(&source)
                            .map_err(|e| crate::budget::refusal(e, "requests in flight"))
                            .and_then(|slot| self.admit().map(|permit| (slot, permit)))
                    };
                    match admitted {
                        Ok((slot, permit)) => {
                            // Draft requests sealed inside an oblivious one pay their
                            // creates from the budget of the source that brought them.
                            let admission = Admission::new(
                                source,
                                self.budgets.client_polls.clone(),
                                vec![Box::new(slot), Box::new(permit)],
                            )
                            .with_creates(self.budgets.http_creates.clone());
                            let served = self.serving.enter();
                            let entry = self.entry.clone();
                            let oblivious = self.oblivious.clone();
                            let net = self.net.clone();
                            let metrics = self.metrics.clone();
                            tokio::spawn(admission.scope(async move {
                                let response = if is_relay_layer(&request) {
                                    let op = crate::metrics::client_op(&request);
                                    let from = crate::identity::key_of(&peer);
                                    let response = oblivious.handle(from, request).await;
                                    metrics.record_client(op, &response);
                                    response
                                } else {
                                    entry.handle(request).await
                                };
                                net.respond_client(channel, response).await;
                                drop(served);
                            }));
                        }
                        Err(e) => {
                            self.metrics.refused.fetch_add(1, Ordering::Relaxed);
                            self.net
                                .respond_client(channel, ClientResponse::Error(e))
                                .await;
                        }
                    }
                }
                Inbound::Replica {
                    peer,
                    from,
                    request,
                    channel,
                } => {
                    let source = self.budgets.classify.of_node(peer, from.as_ref());
                    let stored = u32::try_from(request.stored_len()).unwrap_or(u32::MAX);
                    let admitted = match &self.replica {
                        None => Err(refusal(
                            ErrorCode::NotFound,
                            "a bootstrap node stores nothing",
                        )),
                        Some(_) if self.budgets.replica_bytes.check_n(&source, stored).is_err() => {
                            Err(crate::budget::refusal(
                                crate::budget::Exhausted::Source,
                                "bytes to store",
                            ))
                        }
                        Some(replica) => self
                            .budgets
                            .replica_slots
                            .take(&source)
                            .map_err(|e| crate::budget::refusal(e, "requests in flight"))
                            .and_then(|slot| {
                                let mut held: Vec<Box<dyn Send>> = vec![Box::new(slot)];
                                if matches!(request, ReplicaRequest::Summaries { .. }) {
                                    let summaries =
                                        self.budgets.summaries.take(&source).map_err(|e| {
                                            crate::budget::refusal(e, "summaries in flight")
                                        })?;
                                    held.push(Box::new(summaries));
                                }
                                held.push(Box::new(self.admit()?));
                                Ok((held, replica.clone()))
                            }),
                    };
                    match admitted {
                        Ok((held, replica)) => {
                            let admission =
                                Admission::new(source, self.budgets.replica_polls.clone(), held);
                            let served = self.serving.enter();
                            let net = self.net.clone();
                            let metrics = self.metrics.clone();
                            tokio::spawn(admission.scope(async move {
                                let op = replica_op(&request);
                                let from = crate::identity::key_of(&peer);
                                let response = replica.handle(request, from).await;
                                metrics.record_replica(op, &response);
                                net.respond_replica(channel, response).await;
                                drop(served);
                            }));
                        }
                        Err(e) => {
                            self.metrics.refused.fetch_add(1, Ordering::Relaxed);
                            self.net
                                .respond_replica(channel, ReplicaResponse::Error(e))
                                .await;
                        }
                    }
                }
            }
        }
    }

    /// A permit of the request budget, unless the node is stopping or at its limit.
    fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, RemoteError> {
        if !self.accepting.load(Ordering::Acquire) {
            return Err(refusal(ErrorCode::Unavailable, "the node is shutting down"));
        }
        self.inflight.clone().try_acquire_owned().map_err(|_| {
            refusal(
                ErrorCode::RateLimited,
                "the node is at its request limit; retry shortly",
            )
        })
    }
}
