//! The entry role: a client's request arrives here and is carried out on the replicas of
//! the mailbox, which this node may or may not be one of. Each request to the replicas is
//! a [`Quorum`] of `tigress_protocol::quorum`: this module sends, feeds the answers in and
//! waits for as long as the quorum says; what counts as enough and how answers merge is
//! decided there, not here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::PeerId;
use libp2p::kad::KBucketKey;
use tigress_protocol::crypto::PublicKey;
use tigress_protocol::mailbox::{self, Limits};
use tigress_protocol::quorum::{
    self, Answer, CallError, ClaimGather, ClaimOutcome, FETCH_GRACE_MS, FetchGather, FirstGather,
    Gather, Quorum, READ_GRACE_MS, ReadGather, WriteGather,
};
use tigress_protocol::record::{Genesis, ReadRequest};
use tigress_protocol::rpc::{
    ClientRequest, ClientResponse, Cursor, NodeInfo, RemoteError, ReplicaRequest, ReplicaResponse,
};
use tigress_protocol::wire::{BoundedString, BoundedVec};
use tigress_protocol::{Address, ErrorCode};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::clock::Clock;
use crate::identity::{key_of, peer_of};
use crate::metrics::{Metrics, client_op};
use crate::network::NetworkHandle;
use crate::replica::Replica;

/// The most genesis records cached by an entry node.
const GENESIS_CACHE: usize = 4096;

/// Settings of the entry role.
#[derive(Debug, Clone)]
pub struct EntryConfig {
    /// The network's replication factor.
    pub replication: u8,
    /// How long to wait for one replica.
    pub replica_timeout: Duration,
    /// The base of share URLs.
    pub public_url: String,
    /// The validation limits.
    pub limits: Limits,
    /// The node's clock.
    pub clock: Clock,
}

/// The entry role of a node.
pub struct Entry {
    me: PublicKey,
    replica: Option<Replica>,
    nudge: Option<mpsc::Sender<Address>>,
    net: NetworkHandle,
    config: EntryConfig,
    genesis_cache: Mutex<HashMap<Address, Genesis>>,
    metrics: Arc<Metrics>,
    stopping: watch::Receiver<bool>,
}

fn remote(code: ErrorCode, message: impl Into<String>) -> RemoteError {
    RemoteError::new(code, message)
}

impl Entry {
    /// The entry role of the node with key `me`.
    pub fn new(
        me: PublicKey,
        replica: Option<Replica>,
        nudge: Option<mpsc::Sender<Address>>,
        net: NetworkHandle,
        config: EntryConfig,
        metrics: Arc<Metrics>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Self {
            me,
            replica,
            nudge,
            net,
            config,
            genesis_cache: Mutex::new(HashMap::new()),
            metrics,
            stopping,
        }
    }

    /// The node's clock.
    pub fn clock(&self) -> &Clock {
        &self.config.clock
    }

    /// Handles one client request.
    pub async fn handle(&self, request: ClientRequest) -> ClientResponse {
        let op = client_op(&request);
        let address = request_address(&request);
        let span = tracing::debug_span!("client", op, mailbox = address.map(|a| a.short()));
        let response = match self.dispatch(request).instrument(span).await {
            Ok(r) => r,
            Err(e) => ClientResponse::Error(e),
        };
        self.metrics.record_client(op, &response);
        response
    }

    async fn dispatch(&self, request: ClientRequest) -> Result<ClientResponse, RemoteError> {
        match request {
            ClientRequest::Info => Ok(ClientResponse::Info(NodeInfo {
                node_key: self.me,
                public_url: BoundedString::new(self.config.public_url.clone()).unwrap_or_default(),
                replication: self.config.replication,
                max_ttl_secs: self.config.limits.max_ttl_secs,
            })),
            ClientRequest::Locate { address } => {
                let replicas = self
                    .locate(&address, usize::from(self.config.replication))
                    .await;
                if replicas.is_empty() {
                    return Err(remote(
                        ErrorCode::Unavailable,
                        "no relay nodes are known yet",
                    ));
                }
                Ok(ClientResponse::Located {
                    replicas: BoundedVec::truncated(replicas),
                })
            }
            ClientRequest::Create { genesis } => {
                mailbox::validate_genesis(&genesis, &self.config.limits, self.config.clock.unix())
                    .map_err(|e| RemoteError::from(&e))?;
                let replicas = genesis.header().replicas.to_vec();
                let address = genesis.header().address;
                let duplicate = self
                    .write(
                        &replicas,
                        ReplicaRequest::StoreGenesis {
                            genesis: genesis.clone(),
                        },
                    )
                    .await?;
                self.cache(address, genesis);
                Ok(ClientResponse::Stored { duplicate })
            }
            ClientRequest::Open { request } => {
                let genesis = self.genesis(&request.body.address).await?;
                let wanted = genesis.clone();
                let found = self
                    .drive(
                        Quorum::new(
                            &genesis.header().replicas,
                            FirstGather::new(
                                move |r| matches!(r, ReplicaResponse::Genesis(g) if *g == wanted),
                            ),
                            0,
                        ),
                        ReplicaRequest::Open { request },
                    )
                    .await?;
                match found {
                    ReplicaResponse::Genesis(g) => Ok(ClientResponse::Genesis(g)),
                    _ => Err(remote(
                        ErrorCode::Unavailable,
                        "no replica opened the mailbox",
                    )),
                }
            }
            ClientRequest::Claim { claim } => self.claim(claim).await,
            ClientRequest::Read { request } => self.read(request).await,
            ClientRequest::Send { message } => {
                let replicas = self.replicas_of(&message.header().address).await?;
                let duplicate = self
                    .write(&replicas, ReplicaRequest::StoreMessage { message })
                    .await?;
                Ok(ClientResponse::Stored { duplicate })
            }
            ClientRequest::Fetch {
                request,
                cursor,
                wait_ms,
            } => self.fetch(request, cursor, wait_ms).await,
            ClientRequest::Delete { delete } => {
                let replicas = self.replicas_of(&delete.body.address).await?;
                let duplicate = self
                    .write(&replicas, ReplicaRequest::Delete { delete })
                    .await?;
                Ok(ClientResponse::Stored { duplicate })
            }
            ClientRequest::Relinquish { relinquish } => {
                let replicas = self.replicas_of(&relinquish.body.address).await?;
                let duplicate = self
                    .write(&replicas, ReplicaRequest::Relinquish { relinquish })
                    .await?;
                Ok(ClientResponse::Stored { duplicate })
            }
            ClientRequest::Resolve { resolve } => {
                let replicas = self.replicas_of(&resolve.body.address).await?;
                let duplicate = self
                    .write(&replicas, ReplicaRequest::Resolve { resolve })
                    .await?;
                Ok(ClientResponse::Stored { duplicate })
            }
            ClientRequest::Status { address } => {
                let replicas = self.replicas_of(&address).await?;
                let found = self
                    .drive(
                        Quorum::new(
                            &replicas,
                            FirstGather::new(|r| matches!(r, ReplicaResponse::Status(_))),
                            0,
                        ),
                        ReplicaRequest::Status { address },
                    )
                    .await?;
                match found {
                    ReplicaResponse::Status(s) => Ok(ClientResponse::Status(s)),
                    _ => Err(remote(ErrorCode::Unavailable, "no replica gave a status")),
                }
            }
        }
    }

    fn cache(&self, address: Address, genesis: Genesis) {
        if let Ok(mut cache) = self.genesis_cache.lock() {
            if cache.len() >= GENESIS_CACHE {
                cache.clear();
            }
            cache.insert(address, genesis);
        }
    }

    /// The R closest relay nodes to `address` (this node included when it is a relay).
    pub async fn locate(&self, address: &Address, r: usize) -> Vec<PublicKey> {
        let mut peers = self.net.closest_peers(address.as_bytes().to_vec()).await;
        if self.replica.is_some() {
            peers.push(self.net.local_peer_id());
        }
        nearest(peers, address, r)
    }

    /// The genesis of `address`: from the cache, else from the nodes closest to it.
    pub async fn genesis(&self, address: &Address) -> Result<Genesis, RemoteError> {
        if let Some(g) = self
            .genesis_cache
            .lock()
            .ok()
            .and_then(|c| c.get(address).cloned())
        {
            return Ok(g);
        }
        // Where the genesis most likely is, cheapest first: this node's own store, the
        // closest peers of the local routing table, then a network lookup.
        let r = usize::from(self.config.replication);
        let target = *address;
        let mut asked: Vec<PublicKey> = Vec::new();
        let mut last: Option<RemoteError> = None;
        for round in 0..3 {
            let candidates: Vec<PublicKey> = match round {
                0 => self.replica.iter().map(|_| self.me).collect(),
                1 => {
                    let peers = self
                        .net
                        .closest_local(address.as_bytes().to_vec(), 2 * r)
                        .await;
                    nearest(peers, address, 2 * r)
                }
                _ => self.locate(address, 2 * r).await,
            };
            let fresh: Vec<PublicKey> = candidates
                .into_iter()
                .filter(|c| !asked.contains(c))
                .collect();
            if fresh.is_empty() {
                continue;
            }
            asked.extend(fresh.iter().copied());
            let found = self
                .drive(
                    Quorum::new(
                        &fresh,
                        FirstGather::new(|r| {
                            matches!(r, ReplicaResponse::Genesis(g) if quorum::genesis_fits(g, &target))
                        }),
                        0,
                    ),
                    ReplicaRequest::GetGenesis { address: target },
                )
                .await;
            match found {
                Ok(ReplicaResponse::Genesis(g)) => {
                    self.cache(*address, g.clone());
                    return Ok(g);
                }
                Ok(_) => {}
                // A tombstone or a definitive refusal from a replica needs no wider search.
                Err(e) if e.code != ErrorCode::NotFound && e.code != ErrorCode::Unavailable => {
                    return Err(e);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) if e.code == ErrorCode::Unavailable => e,
            _ => remote(ErrorCode::NotFound, "no such mailbox"),
        })
    }

    async fn replicas_of(&self, address: &Address) -> Result<Vec<PublicKey>, RemoteError> {
        Ok(self.genesis(address).await?.header().replicas.to_vec())
    }

    async fn call(&self, replica: PublicKey, request: ReplicaRequest) -> (PublicKey, Answer) {
        let wait = match &request {
            ReplicaRequest::Fetch { wait_ms, .. } => Duration::from_millis(u64::from(*wait_ms)),
            _ => Duration::ZERO,
        };
        let answer = if replica == self.me {
            match &self.replica {
                Some(local) => Ok(local.handle(request).await),
                None => Err(CallError::NoLocalStore),
            }
        } else {
            match peer_of(&replica) {
                None => Err(CallError::NotAPeer),
                Some(peer) => tokio::time::timeout(
                    self.config.replica_timeout + wait,
                    self.net.replica_request(peer, request),
                )
                .await
                .unwrap_or(Err(CallError::Timeout)),
            }
        };
        if let Err(e) = &answer {
            tracing::debug!(replica = %replica.short(), error = %e, "replica did not answer");
        }
        (replica, answer)
    }

    /// Sends `request` to every target of `quorum` at once and feeds the answers in until
    /// the quorum is done.
    async fn drive<G: Gather>(&self, mut quorum: Quorum<G>, request: ReplicaRequest) -> G::Output {
        let started = tokio::time::Instant::now();
        let elapsed = || started.elapsed().as_millis() as u64;
        let mut pending: FuturesUnordered<_> = quorum
            .targets()
            .iter()
            .map(|r| self.call(*r, request.clone()))
            .collect();
        while !quorum.is_done(elapsed()) {
            let wake = quorum
                .poll_deadline()
                .map(|ms| started + Duration::from_millis(ms));
            tokio::select! {
                next = pending.next() => match next {
                    Some((from, answer)) => quorum.handle_answer(from, answer, elapsed()),
                    None => break,
                },
                () = sleep_until(wake) => {}
            }
        }
        quorum.finish()
    }

    /// A write: stored once a strict majority of `replicas` stored it durably.
    async fn write(
        &self,
        replicas: &[PublicKey],
        request: ReplicaRequest,
    ) -> Result<bool, RemoteError> {
        self.drive(Quorum::new(replicas, WriteGather::new(), 0), request)
            .await
    }

    async fn claim(
        &self,
        claim: tigress_protocol::record::Claim,
    ) -> Result<ClientResponse, RemoteError> {
        let genesis = self.genesis(&claim.body.address).await?;
        let replicas = genesis.header().replicas.to_vec();
        let outcome = self
            .drive(
                Quorum::new(&replicas, ClaimGather::new(genesis, claim.clone()), 0),
                ReplicaRequest::Grant {
                    claim: claim.clone(),
                },
            )
            .await;
        match outcome {
            ClaimOutcome::Certified(cert) => {
                self.write(
                    &replicas,
                    ReplicaRequest::StoreCertificate {
                        certificate: (*cert).clone(),
                    },
                )
                .await?;
                Ok(ClientResponse::Certified(*cert))
            }
            ClaimOutcome::Contested(evidence) => {
                let _ = self
                    .write(
                        &replicas,
                        ReplicaRequest::MarkContested {
                            address: claim.body.address,
                            evidence,
                        },
                    )
                    .await;
                Err(quorum::contested())
            }
            ClaimOutcome::Refused(e) => Err(e),
        }
    }

    async fn read(&self, request: ReadRequest) -> Result<ClientResponse, RemoteError> {
        let genesis = self.genesis(&request.body.address).await?;
        let replicas = genesis.header().replicas.to_vec();
        let gather = ReadGather::new(genesis, self.config.limits, self.config.clock.unix());
        self.drive(
            Quorum::new(&replicas, gather, READ_GRACE_MS),
            ReplicaRequest::Read { request },
        )
        .await
        .map(ClientResponse::View)
    }

    async fn fetch(
        &self,
        request: ReadRequest,
        cursor: Cursor,
        wait_ms: u32,
    ) -> Result<ClientResponse, RemoteError> {
        let address = request.body.address;
        let replicas = self.replicas_of(&address).await?;
        let gather = FetchGather::new(address, request.body.by, cursor.clone());
        let drive = self.drive(
            Quorum::new(&replicas, gather, FETCH_GRACE_MS),
            ReplicaRequest::Fetch {
                request,
                cursor,
                wait_ms,
            },
        );
        // A long-poll of a stopping node answers at once with nothing new: the client
        // polls again, through another entry if this one is gone.
        let mut stopping = self.stopping.clone();
        let fetched = tokio::select! {
            fetched = drive => fetched?,
            _ = stopping.wait_for(|s| *s), if wait_ms > 0 => {
                return Ok(ClientResponse::Messages {
                    messages: BoundedVec::default(),
                });
            }
        };
        // A replica that answered with fewer messages than the others has a gap: if this
        // node is one of the replicas, reconcile the mailbox now rather than at the next
        // round.
        if fetched.gap
            && replicas.contains(&self.me)
            && let Some(nudge) = &self.nudge
        {
            let _ = nudge.try_send(address);
        }
        Ok(ClientResponse::Messages {
            messages: BoundedVec::truncated(fetched.messages),
        })
    }
}

/// At most `r` of `peers` (duplicates once), nearest to `address` first by the DHT's XOR
/// distance: where a mailbox at `address` lives.
pub fn nearest(mut peers: Vec<PeerId>, address: &Address, r: usize) -> Vec<PublicKey> {
    let target = KBucketKey::new(address.as_bytes().to_vec());
    peers.sort_by_key(|p| KBucketKey::from(*p).distance(&target));
    peers.dedup();
    peers.iter().filter_map(key_of).take(r).collect()
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn request_address(request: &ClientRequest) -> Option<Address> {
    match request {
        ClientRequest::Info => None,
        ClientRequest::Locate { address } | ClientRequest::Status { address } => Some(*address),
        ClientRequest::Create { genesis } => Some(genesis.header().address),
        ClientRequest::Open { request }
        | ClientRequest::Read { request }
        | ClientRequest::Fetch { request, .. } => Some(request.body.address),
        ClientRequest::Claim { claim } => Some(claim.body.address),
        ClientRequest::Send { message } => Some(message.header().address),
        ClientRequest::Delete { delete } => Some(delete.body.address),
        ClientRequest::Relinquish { relinquish } => Some(relinquish.body.address),
        ClientRequest::Resolve { resolve } => Some(resolve.body.address),
    }
}
