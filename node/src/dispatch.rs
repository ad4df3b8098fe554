//! The inbound dispatcher: every request the network loop receives comes here, and here
//! alone are the per-peer throttle, the request budget, shutdown refusals and the request
//! metrics. A request that passes goes to the entry role (client protocol) or the replica
//! role (replica protocol) as a task holding one permit of the budget; its answer goes
//! back through the network handle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tigress_protocol::ErrorCode;
use tigress_protocol::rpc::{ClientRequest, ClientResponse, RemoteError, ReplicaResponse};
use tokio::sync::{Semaphore, mpsc};

use crate::entry::Entry;
use crate::metrics::{Metrics, replica_op};
use crate::network::{Inbound, NetworkHandle};
use crate::oblivious::Oblivious;
use crate::replica::Replica;
use crate::throttle::PeerThrottle;

/// How many inbound requests may wait between the network loop and the dispatcher.
pub(crate) const INBOUND_QUEUE: usize = 1024;

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
                    request,
                    channel,
                } => {
                    let admitted = if !self.throttle.allow(peer, std::time::Instant::now()) {
                        Err(refusal(
                            ErrorCode::RateLimited,
                            "too many requests from this peer; slow down",
                        ))
                    } else {
                        self.admit()
                    };
                    match admitted {
                        Ok(permit) => {
                            let entry = self.entry.clone();
                            let oblivious = self.oblivious.clone();
                            let net = self.net.clone();
                            let metrics = self.metrics.clone();
                            tokio::spawn(async move {
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
                                drop(permit);
                            });
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
                    request,
                    channel,
                } => {
                    let admitted = match &self.replica {
                        None => Err(refusal(
                            ErrorCode::NotFound,
                            "a bootstrap node stores nothing",
                        )),
                        Some(replica) => self.admit().map(|p| (p, replica.clone())),
                    };
                    match admitted {
                        Ok((permit, replica)) => {
                            let net = self.net.clone();
                            let metrics = self.metrics.clone();
                            tokio::spawn(async move {
                                let op = replica_op(&request);
                                let from = crate::identity::key_of(&peer);
                                let response = replica.handle(request, from).await;
                                metrics.record_replica(op, &response);
                                net.respond_replica(channel, response).await;
                                drop(permit);
                            });
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
