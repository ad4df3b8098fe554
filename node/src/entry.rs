//! The entry role: a client's request arrives here and is carried out on the replicas of
//! the mailbox, which this node may or may not be one of. Each request to the replicas is
//! a [`Quorum`] of `tigress_protocol::quorum`: this module sends, feeds the answers in and
//! waits for as long as the quorum says; what counts as enough and how answers merge is
//! decided there, not here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hashlink::LruCache;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::PeerId;
use tigress_protocol::crypto::PublicKey;
use tigress_protocol::mailbox::{self, Limits};
use tigress_protocol::quorum::{
    self, Answer, CallError, ChainGather, ClaimGather, ClaimOutcome, FETCH_GRACE_MS, FetchGather,
    FirstGather, Gather, Heard, Quorum, READ_GRACE_MS, ReadGather, SearchGather, WriteGather,
    Written, absence,
};
use tigress_protocol::record::{Equivocation, Genesis, ReadRequest, Record};
use tigress_protocol::replica;
use tigress_protocol::rpc::{
    Access, ClientRequest, ClientResponse, Cursor, NodeInfo, RemoteError, ReplicaRequest,
    ReplicaResponse,
};
use tigress_protocol::takeover::{self, Takeover};
use tigress_protocol::wire::{BoundedString, BoundedVec};
use tigress_protocol::{Address, ErrorCode};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::clock::Clock;
use crate::identity::{key_of, peer_of};
use crate::metrics::{Metrics, client_op};
use crate::network::NetworkHandle;
use crate::replica::Replica;

/// The most genesis records cached by an entry node (least recently used first out).
const GENESIS_CACHE: usize = 4096;

/// The most replicas remembered as proven liars (least recently proven first out: each
/// needs a key that signed two conflicting receipts, which costs a liar nothing, so the
/// memory is bounded).
const LIARS: usize = 4096;
/// How many addresses found absent are remembered.
const ABSENT_CACHE: usize = 65_536;
/// How long an address found absent is answered from memory (seconds): short, so a
/// mailbox created through another entry just after is soon found here.
const ABSENT_SECS: u64 = 10;

/// Seconds an entry trusts the takeovers it last learned for a mailbox before asking its
/// holders again.
const CHAIN_TTL_SECS: u64 = 10;

tokio::task_local! {
    /// The relay a sealed request came through, while this node carries it out as its
    /// target: no lookup or search for the mailbox goes to that relay, so the node that
    /// knows the client is not asked about what the client asked about. (A relay that
    /// holds the mailbox, in a network too small to keep them apart, still gets its
    /// writes: a replica set must stay whole.)
    pub static VIA: PublicKey;
}

/// The relay of the request being carried out, if it came through one.
pub(crate) fn via() -> Option<PublicKey> {
    VIA.try_with(|v| *v).ok()
}

tokio::task_local! {
    /// Set while the HTTP gateway carries out a draft client's request: its creates were
    /// paid from the source's budget of creates, not with a proof of work.
    static PAID: ();
}

/// Settings of the entry role.
#[derive(Debug, Clone)]
pub struct EntryConfig {
    /// The network's replication factor.
    pub replication: u8,
    /// How many standbys a new mailbox gets after its replicas.
    pub standbys: u8,
    /// How long to wait for one replica.
    pub replica_timeout: Duration,
    /// The base of share URLs.
    pub public_url: String,
    /// The validation limits.
    pub limits: Limits,
    /// The node's clock.
    pub clock: Clock,
}

/// A seam for test doubles of the entry role: sees every client request first and may
/// answer it instead (a lying entry node in a test or a development build). Honest nodes
/// have none.
pub trait ClientFilter: Send + Sync {
    /// The answer to give instead of carrying `request` out, if any.
    fn intercept(&self, request: &ClientRequest) -> Option<ClientResponse>;
}

/// The entry role of a node.
pub struct Entry {
    me: PublicKey,
    replica: Option<Replica>,
    nudge: Option<mpsc::Sender<Address>>,
    net: NetworkHandle,
    config: EntryConfig,
    /// Geneses found, with their digests (computed once, as the genesis is cached).
    genesis_cache: Mutex<LruCache<Address, (Genesis, [u8; 32])>>,
    /// Addresses a search found no mailbox at, until when (unix seconds): asking again
    /// for an address that does not exist costs no lookup for a while.
    absent: Mutex<LruCache<Address, u64>>,
    /// The takeovers each mailbox went through, as last asked (unix seconds).
    chains: Mutex<LruCache<Address, (Vec<Takeover>, u64)>>,
    liars: Mutex<LruCache<PublicKey, ()>>,
    filter: Option<Arc<dyn ClientFilter>>,
    admission: Option<Arc<crate::budget::AdmissionLevel>>,
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
            genesis_cache: Mutex::new(LruCache::new(GENESIS_CACHE)),
            absent: Mutex::new(LruCache::new(ABSENT_CACHE)),
            chains: Mutex::new(LruCache::new(GENESIS_CACHE)),
            liars: Mutex::new(LruCache::new(LIARS)),
            filter: None,
            admission: None,
            metrics,
            stopping,
        }
    }

    /// Answers client requests through `filter` first (a test-double seam).
    pub fn with_filter(mut self, filter: Option<Arc<dyn ClientFilter>>) -> Self {
        self.filter = filter;
        self
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
        if let Some(lie) = self.filter.as_ref().and_then(|f| f.intercept(&request)) {
            self.metrics.record_client(op, &lie);
            return lie;
        }
        let response = match self.dispatch(request).instrument(span).await {
            Ok(r) => r,
            Err(e) => ClientResponse::Error(e),
        };
        self.metrics.record_client(op, &response);
        response
    }

    async fn dispatch(&self, request: ClientRequest) -> Result<ClientResponse, RemoteError> {
        match request {
            // The relay layer's requests (`crate::oblivious`), which never reach an entry:
            // one inside a sealed request is a client nesting relays.
            ClientRequest::Keys
            | ClientRequest::KeysOf { .. }
            | ClientRequest::Nodes
            | ClientRequest::Relay { .. }
            | ClientRequest::Oblivious { .. } => Err(remote(
                ErrorCode::Malformed,
                "relay requests are not carried inside a sealed request",
            )),
            ClientRequest::Info => Ok(ClientResponse::Info(NodeInfo {
                node_key: self.me,
                public_url: BoundedString::new(self.config.public_url.clone()).unwrap_or_default(),
                replication: self.config.replication,
                max_ttl_secs: self.config.limits.max_ttl_secs,
                admission_bits: self.admission_bits(),
            })),
            ClientRequest::Locate { address } => {
                let r = usize::from(self.config.replication);
                let mut replicas = self
                    .locate(&address, r + usize::from(self.config.standbys))
                    .await;
                if replicas.is_empty() {
                    return Err(remote(
                        ErrorCode::Unavailable,
                        "no relay nodes are known yet",
                    ));
                }
                let standbys = replicas.split_off(r.min(replicas.len()));
                Ok(ClientResponse::Located {
                    replicas: BoundedVec::truncated(replicas),
                    standbys: BoundedVec::truncated(standbys),
                })
            }
            ClientRequest::Create { genesis, admission } => {
                mailbox::validate_genesis(&genesis, &self.config.limits, self.config.clock.unix())
                    .map_err(|e| RemoteError::from(&e))?;
                let bits = self.admission_bits();
                if PAID.try_with(|_| ()).is_err()
                    && !tigress_protocol::admission::verify(&genesis.digest(), bits, admission)
                {
                    self.metrics
                        .admission_refused
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Ok(ClientResponse::AdmissionRequired { bits });
                }
                let replicas = genesis.header().replicas.to_vec();
                let address = genesis.header().address;
                let written = self
                    .write(
                        &replicas,
                        ReplicaRequest::StoreGenesis {
                            genesis: genesis.clone(),
                        },
                    )
                    .await?;
                self.cache(address, genesis);
                // A new mailbox went through no takeover.
                if let Ok(mut c) = self.chains.lock() {
                    c.insert(address, (Vec::new(), self.config.clock.unix()));
                }
                Ok(stored(written))
            }
            ClientRequest::Open { request } => {
                let access = Access::Read(request.clone());
                let genesis = self.genesis(&access).await?;
                let wanted = genesis.clone();
                let holders = self.holders(&genesis).await;
                let found = self
                    .drive(
                        Quorum::new(
                            &holders,
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
                let replicas = self.replicas_of(&Access::Message(message.clone())).await?;
                let written = self
                    .write(&replicas, ReplicaRequest::StoreMessage { message })
                    .await?;
                Ok(stored(written))
            }
            ClientRequest::Fetch {
                request,
                cursor,
                wait_ms,
            } => self.fetch(request, cursor, wait_ms).await,
            ClientRequest::Delete { delete } => {
                let replicas = self.replicas_of(&Access::Delete(delete.clone())).await?;
                let written = self
                    .write(&replicas, ReplicaRequest::Delete { delete })
                    .await?;
                Ok(stored(written))
            }
            ClientRequest::Relinquish { relinquish } => {
                let replicas = self
                    .replicas_of(&Access::Relinquish(relinquish.clone()))
                    .await?;
                let written = self
                    .write(&replicas, ReplicaRequest::Relinquish { relinquish })
                    .await?;
                Ok(stored(written))
            }
            ClientRequest::Resolve { resolve } => {
                let replicas = self.replicas_of(&Access::Resolve(resolve.clone())).await?;
                let written = self
                    .write(&replicas, ReplicaRequest::Resolve { resolve })
                    .await?;
                Ok(stored(written))
            }
            ClientRequest::Status { address } => {
                // Public: asked of the nodes where the mailbox must live (a replica refuses
                // a genesis it is not near), without a genesis to go by: those a lookup
                // finds alive, and those of the routing table nearest the address, which
                // may be holders away whose silence keeps the answer from being "no such
                // mailbox".
                let r = usize::from(self.config.replication);
                let mut nodes = self.locate(&address, 2 * r).await;
                for k in self.near_in_table(&address, 2 * r).await {
                    if !nodes.contains(&k) && !self.is_liar(&k) {
                        nodes.push(k);
                    }
                }
                let found = self
                    .drive(
                        Quorum::new(
                            &nodes,
                            SearchGather::new(|r| matches!(r, ReplicaResponse::Status(_))),
                            0,
                        ),
                        ReplicaRequest::Status { address },
                    )
                    .await
                    .map_err(|heard| absence(&address, &nodes, &heard, r))?;
                match found {
                    ReplicaResponse::Status(s) => Ok(ClientResponse::Status(s)),
                    _ => Err(remote(ErrorCode::Unavailable, "no replica gave a status")),
                }
            }
            ClientRequest::Report { proof } => {
                proof.verify().map_err(|e| RemoteError::from(&e))?;
                // Keys cost nothing: only a node this one routes to is worth a place in
                // the bounded memory of liars (a flood of self-made proofs cannot push
                // real liars out).
                let known = match peer_of(&proof.liar()) {
                    Some(peer) => self.net.routing_table().await.contains(&peer),
                    None => false,
                };
                if !known {
                    return Err(remote(
                        ErrorCode::NotFound,
                        "the proven liar is not a node this node knows",
                    ));
                }
                let fresh = self.prove_liar(&proof);
                Ok(ClientResponse::Stored {
                    duplicate: !fresh,
                    acks: BoundedVec::default(),
                })
            }
        }
    }

    fn cache(&self, address: Address, genesis: Genesis) {
        if let Ok(mut absent) = self.absent.lock() {
            absent.remove(&address);
        }
        let digest = genesis.digest();
        if let Ok(mut cache) = self.genesis_cache.lock() {
            cache.insert(address, (genesis, digest));
        }
    }

    /// Whether a search found nothing at `address` less than [`ABSENT_SECS`] ago.
    fn known_absent(&self, address: &Address) -> bool {
        let now = self.config.clock.unix();
        self.absent
            .lock()
            .ok()
            .and_then(|mut a| a.get(address).copied())
            .is_some_and(|until| now < until)
    }

    /// The proof of work asked for a new mailbox now.
    pub fn admission_bits(&self) -> u8 {
        self.admission.as_ref().map_or(0, |a| a.bits())
    }

    /// Sets how the proof of work asked for new mailboxes follows the load.
    pub fn with_admission(mut self, admission: Arc<crate::budget::AdmissionLevel>) -> Self {
        self.admission = Some(admission);
        self
    }

    /// Carries out a request of the HTTP gateway, whose creates its sources paid from
    /// their budgets of creates.
    pub async fn handle_paid(&self, request: ClientRequest) -> ClientResponse {
        PAID.scope((), self.handle(request)).await
    }

    /// Remembers the replica `proof` shows lying: it is no longer placed nor asked.
    /// Returns whether it was new.
    pub fn prove_liar(&self, proof: &Equivocation) -> bool {
        let liar = proof.liar();
        let fresh = self
            .liars
            .lock()
            .map(|mut l| l.insert(liar, ()).is_none())
            .unwrap_or(false);
        if fresh {
            tracing::warn!(replica = %liar.short(), "a replica is proven to lie (two receipts for one slot)");
        }
        fresh
    }

    /// Whether `replica` is proven to lie.
    pub fn is_liar(&self, replica: &PublicKey) -> bool {
        self.liars
            .lock()
            .map(|mut l| l.get(replica).is_some())
            .unwrap_or(false)
    }

    /// The R closest relay nodes to `address`. This node is among them when it is a relay
    /// that others can reach, or when it knows no other node (a network of one).
    ///
    /// For a request that came through a relay, the answer comes from the routing table
    /// alone: a network lookup could ask the relay about the address. A client picks its
    /// targets among the nodes nearest the address, whose routing tables Kademlia keeps
    /// complete around it, and confirms the answer with a second target.
    pub async fn locate(&self, address: &Address, r: usize) -> Vec<PublicKey> {
        let relay = via();
        let mut peers = match relay {
            None => self.net.closest_peers(address.as_bytes().to_vec()).await,
            Some(_) => {
                self.net
                    .closest_local(address.as_bytes().to_vec(), r.saturating_mul(2).max(20))
                    .await
            }
        };
        peers.retain(|p| relay.is_none() || key_of(p) != relay);
        if self.replica.is_some() && (self.net.is_public() || peers.is_empty()) {
            peers.push(self.net.local_peer_id());
        }
        peers.retain(|p| key_of(p).is_none_or(|k| !self.is_liar(&k)));
        nearest(peers, address, r)
    }

    /// The `n` nodes of the routing table nearest `address`, those that stopped answering
    /// included (Kademlia keeps them until a newcomer needs their place): a search asks
    /// them so that a holder away is heard as silent, not missed. The relay of this
    /// request is not asked about it.
    async fn near_in_table(&self, address: &Address, n: usize) -> Vec<PublicKey> {
        let peers = self.net.closest_local(address.as_bytes().to_vec(), n).await;
        let mut near = nearest(peers, address, n);
        near.retain(|k| Some(*k) != via());
        near
    }

    /// The genesis the signed request `access` is for: from the cache, else from the nodes
    /// closest to its address. Only a genesis the request fits is used or cached (a node
    /// answering with a genesis of its own making is ignored).
    pub async fn genesis(&self, access: &Access) -> Result<Genesis, RemoteError> {
        let address = access.address();
        if let Some(g) = self
            .genesis_cache
            .lock()
            .ok()
            .and_then(|mut c| c.get(&address).cloned())
            && access.fits_digested(&g.0, &g.1)
        {
            return Ok(g.0);
        }
        if self.known_absent(&address) {
            self.metrics
                .absent_hits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(remote(ErrorCode::NotFound, "no such mailbox"));
        }
        // Where the genesis most likely is, cheapest first: this node's own store, the
        // closest peers of the local routing table, then a network lookup.
        let r = usize::from(self.config.replication);
        let mut asked: Vec<PublicKey> = Vec::new();
        // What each node asked said, over the rounds: the mailbox is absent only when the
        // nearest of them say so (a node answering with a genesis this request does not
        // fit, or not at all, may hold it).
        let mut heard: Vec<(PublicKey, Heard)> = Vec::new();
        for round in 0..3 {
            let candidates: Vec<PublicKey> = match round {
                0 => self.replica.iter().map(|_| self.me).collect(),
                1 => self.near_in_table(&address, 2 * r).await,
                _ => self.locate(&address, 2 * r).await,
            };
            let fresh: Vec<PublicKey> = candidates
                .into_iter()
                .filter(|c| !asked.contains(c))
                .collect();
            if fresh.is_empty() {
                continue;
            }
            asked.extend(fresh.iter().copied());
            let wanted = access.clone();
            let found = self
                .drive(
                    Quorum::new(
                        &fresh,
                        SearchGather::new(
                            move |r| matches!(r, ReplicaResponse::Genesis(g) if wanted.fits(g)),
                        ),
                        0,
                    ),
                    ReplicaRequest::GetGenesis {
                        access: access.clone(),
                    },
                )
                .await;
            match found {
                Ok(ReplicaResponse::Genesis(g)) => {
                    self.cache(address, g.clone());
                    return Ok(g);
                }
                Ok(_) => {}
                Err(said) => {
                    // A tombstone in this node's own store needs no wider search; another
                    // node's counts only as one voice among the nearest (it may lie).
                    if let Some(e) = said.iter().find_map(|(k, h)| match h {
                        Heard::Refused(e) if *k == self.me && e.code != ErrorCode::Unauthorized => {
                            Some(e)
                        }
                        _ => None,
                    }) {
                        return Err(e.clone());
                    }
                    heard.extend(said);
                }
            }
        }
        let refusal = absence(&address, &asked, &heard, r);
        tracing::debug!(
            address = %address.short(),
            asked = asked.len(),
            ?heard,
            code = ?refusal.code,
            "a genesis search found nothing"
        );
        if refusal.code == ErrorCode::NotFound
            && let Ok(mut absent) = self.absent.lock()
        {
            absent.insert(address, self.config.clock.unix() + ABSENT_SECS);
        }
        Err(refusal)
    }

    async fn replicas_of(&self, access: &Access) -> Result<Vec<PublicKey>, RemoteError> {
        let genesis = self.genesis(access).await?;
        Ok(self.holders(&genesis).await)
    }

    /// Where the mailbox of `genesis` lives now: its replicas after the takeovers its
    /// holders report (asked again once the answer is older than [`CHAIN_TTL_SECS`]).
    async fn holders(&self, genesis: &Genesis) -> Vec<PublicKey> {
        let h = genesis.header();
        let lineup = h.lineup();
        let now = self.config.clock.unix();
        let cached = self
            .chains
            .lock()
            .ok()
            .and_then(|mut c| c.get(&h.address).cloned());
        let known = cached.as_ref().map(|(c, _)| c.clone()).unwrap_or_default();
        // Most mailboxes never see a takeover: their empty chain needs no digest.
        let follow = |chain: &[takeover::Takeover]| {
            if chain.is_empty() {
                return takeover::Retired::NONE;
            }
            takeover::follow(&lineup, &h.address, &genesis.digest(), chain).unwrap_or_default()
        };
        let retired = follow(&known);
        if let Some((_, at)) = cached
            && now.saturating_sub(at) < CHAIN_TTL_SECS
        {
            return lineup.holders(retired);
        }
        let asked = lineup.holders(retired);
        let found = self
            .drive(
                Quorum::new(&asked, ChainGather::new(genesis), 0),
                ReplicaRequest::Takeovers { address: h.address },
            )
            .await;
        let chain = if found.len() >= known.len() {
            found
        } else {
            known
        };
        let retired = follow(&chain);
        if let Ok(mut c) = self.chains.lock() {
            c.insert(h.address, (chain, now));
        }
        lineup.holders(retired)
    }

    async fn call(&self, replica: PublicKey, request: ReplicaRequest) -> (PublicKey, Answer) {
        let wait = match &request {
            ReplicaRequest::Fetch { wait_ms, .. } => Duration::from_millis(u64::from(*wait_ms)),
            _ => Duration::ZERO,
        };
        let answer = if self.is_liar(&replica) {
            Err(CallError::ProvenLiar)
        } else if replica == self.me {
            match &self.replica {
                Some(local) => Ok(local.handle(request, Some(self.me)).await),
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
        match &answer {
            Err(e) => {
                tracing::debug!(replica = %replica.short(), error = %e, "replica did not answer");
            }
            Ok(ReplicaResponse::Error(e)) => {
                tracing::debug!(replica = %replica.short(), code = ?e.code, message = ?e.message, "replica refused");
            }
            Ok(_) => {}
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

    /// A write: stored once a strict majority of `replicas` acknowledged it, each with
    /// its signature.
    async fn write(
        &self,
        replicas: &[PublicKey],
        request: ReplicaRequest,
    ) -> Result<Written, RemoteError> {
        let (address, record) = replica::acknowledged(&request)
            .ok_or_else(|| remote(ErrorCode::Malformed, "not a write"))?;
        self.drive(
            Quorum::new(replicas, WriteGather::new(address, record), 0),
            request,
        )
        .await
    }

    async fn claim(
        &self,
        claim: tigress_protocol::record::Claim,
    ) -> Result<ClientResponse, RemoteError> {
        let genesis = self.genesis(&Access::Claim(claim.clone())).await?;
        let replicas = self.holders(&genesis).await;
        let (outcome, liars) = self
            .drive(
                Quorum::new(&replicas, ClaimGather::new(genesis, claim.clone()), 0),
                ReplicaRequest::Grant {
                    claim: claim.clone(),
                },
            )
            .await;
        for proof in &liars {
            self.prove_liar(proof);
        }
        match outcome {
            ClaimOutcome::Certified(cert) => {
                let written = self
                    .write(
                        &replicas,
                        ReplicaRequest::StoreCertificate {
                            certificate: (*cert).clone(),
                        },
                    )
                    .await?;
                Ok(ClientResponse::Certified {
                    certificate: *cert,
                    acks: BoundedVec::truncated(written.acks),
                })
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
        let genesis = self.genesis(&Access::Read(request.clone())).await?;
        let replicas = self.holders(&genesis).await;
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
        if wait_ms > 0 {
            crate::budget::long_poll(*address.as_bytes())
                .map_err(|e| crate::budget::refusal(e, "long-polls"))?;
        }
        let replicas = self.replicas_of(&Access::Read(request.clone())).await?;
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
pub fn nearest(peers: Vec<PeerId>, address: &Address, r: usize) -> Vec<PublicKey> {
    tigress_protocol::placement::nearest(peers.iter().filter_map(key_of), address, r)
}

/// The answer to a client's write, with the acknowledgements that prove it.
fn stored(written: Written) -> ClientResponse {
    ClientResponse::Stored {
        duplicate: written.duplicate,
        acks: BoundedVec::truncated(written.acks),
    }
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
        ClientRequest::Info
        | ClientRequest::Keys
        | ClientRequest::KeysOf { .. }
        | ClientRequest::Nodes
        | ClientRequest::Relay { .. }
        | ClientRequest::Oblivious { .. } => None,
        ClientRequest::Locate { address } | ClientRequest::Status { address } => Some(*address),
        ClientRequest::Create { genesis, .. } => Some(genesis.header().address),
        ClientRequest::Open { request }
        | ClientRequest::Read { request }
        | ClientRequest::Fetch { request, .. } => Some(request.body.address),
        ClientRequest::Claim { claim } => Some(claim.body.address),
        ClientRequest::Send { message } => Some(message.header().address),
        ClientRequest::Delete { delete } => Some(delete.body.address),
        ClientRequest::Relinquish { relinquish } => Some(relinquish.body.address),
        ClientRequest::Resolve { resolve } => Some(resolve.body.address),
        ClientRequest::Report { proof } => Some(proof.first.body.address),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::kad::KBucketKey;
    use tigress_protocol::crypto::SigningKey;

    /// The placement rule (`protocol::placement`) orders nodes exactly as the DHT's
    /// own XOR metric does.
    #[test]
    fn the_protocol_placement_rule_is_kademlias() {
        let keys: Vec<SigningKey> = (0..40u8).map(|i| SigningKey::from_seed(&[i; 32])).collect();
        for a in 0..20u8 {
            let address = Address([a; 32]);
            let target = KBucketKey::new(address.as_bytes().to_vec());
            let mut peers: Vec<PeerId> = keys
                .iter()
                .filter_map(|k| crate::identity::peer_of(&k.public_key()))
                .collect();
            peers.sort_by_key(|p| KBucketKey::from(*p).distance(&target));
            let kademlia: Vec<PublicKey> = peers.iter().filter_map(key_of).take(7).collect();
            assert_eq!(kademlia.len(), 7);
            assert_eq!(nearest(peers, &address, 7), kademlia);
        }
    }
}
