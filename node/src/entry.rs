//! The entry role: a client's request arrives here and is carried out on the replicas of
//! the mailbox, which this node may or may not be one of. Writes go to every replica and
//! succeed once a strict majority has stored them durably; reads take the first valid
//! answer for immutable records and merge the valid records of the answers for lists.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::kad::KBucketKey;
use tigress_protocol::crypto::PublicKey;
use tigress_protocol::mailbox::{self, CheckedReceipt, ClaimTally, Limits};
use tigress_protocol::record::{Genesis, Message, Receipt, Record};
use tigress_protocol::rpc::{
    ClientRequest, ClientResponse, MailboxView, NodeInfo, RemoteError, ReplicaRequest,
    ReplicaResponse,
};
use tigress_protocol::wire::{BoundedString, BoundedVec};
use tigress_protocol::{Address, ErrorCode};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::identity::{key_of, peer_of};
use crate::metrics::{Metrics, client_op};
use crate::network::NetworkHandle;
use crate::replica::Replica;

/// How long a read waits for the replicas beyond the majority.
const READ_GRACE: Duration = Duration::from_millis(250);

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
}

type Answer = (PublicKey, Result<ReplicaResponse, String>);

fn remote(code: ErrorCode, message: impl Into<String>) -> RemoteError {
    RemoteError::new(code, message)
}

fn unavailable(got: usize, of: usize, need: usize) -> RemoteError {
    remote(
        ErrorCode::Unavailable,
        format!("reached {got} of {of} replicas; a majority of {need} is needed, try again later"),
    )
}

/// The most frequent definitive refusal among the answers, if any.
fn common_error(answers: &[Answer]) -> Option<RemoteError> {
    let mut counts: BTreeMap<String, (usize, RemoteError)> = BTreeMap::new();
    for (_, a) in answers {
        if let Ok(ReplicaResponse::Error(e) | ReplicaResponse::Refused { error: e, .. }) = a
            && e.code != ErrorCode::Unavailable
            && e.code != ErrorCode::RateLimited
        {
            counts
                .entry(e.code.as_str().to_owned())
                .or_insert((0, e.clone()))
                .0 += 1;
        }
    }
    // "Not found" is what nodes outside the replica set say: any other refusal wins.
    counts
        .into_values()
        .max_by_key(|(n, e)| (e.code != ErrorCode::NotFound, *n))
        .map(|(_, e)| e)
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
    ) -> Self {
        Self {
            me,
            replica,
            nudge,
            net,
            config,
            genesis_cache: Mutex::new(HashMap::new()),
            metrics,
        }
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
                mailbox::validate_genesis(&genesis, &self.config.limits, crate::now())
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
                let answers = self
                    .fan_out(
                        genesis.header().replicas.to_vec(),
                        ReplicaRequest::Open { request },
                        |answers| answers.iter().any(|(_, a)| matches!(a, Ok(ReplicaResponse::Genesis(g)) if *g == genesis)),
                    )
                    .await;
                for (_, a) in &answers {
                    if let Ok(ReplicaResponse::Genesis(g)) = a
                        && *g == genesis
                    {
                        return Ok(ClientResponse::Genesis(g.clone()));
                    }
                }
                Err(self.failure(&answers, genesis.header().replicas.len()))
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
                let address = delete.body.address;
                let replicas = self.replicas_of(&address).await?;
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
                let answers = self
                    .fan_out(
                        replicas.clone(),
                        ReplicaRequest::Status { address },
                        |answers| {
                            answers
                                .iter()
                                .any(|(_, a)| matches!(a, Ok(ReplicaResponse::Status(_))))
                        },
                    )
                    .await;
                for (_, a) in &answers {
                    if let Ok(ReplicaResponse::Status(s)) = a {
                        return Ok(ClientResponse::Status(s.clone()));
                    }
                }
                Err(self.failure(&answers, replicas.len()))
            }
        }
    }

    /// The refusal to report when no answer was good enough.
    fn failure(&self, answers: &[Answer], of: usize) -> RemoteError {
        common_error(answers).unwrap_or_else(|| {
            let got = answers.iter().filter(|(_, a)| a.is_ok()).count();
            unavailable(got, of, of / 2 + 1)
        })
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
        let target = KBucketKey::new(address.as_bytes().to_vec());
        let mut peers = self.net.closest_peers(address.as_bytes().to_vec()).await;
        if self.replica.is_some() {
            peers.push(self.net.local_peer_id());
        }
        peers.sort_by_key(|p| KBucketKey::from(*p).distance(&target));
        peers.dedup();
        peers.iter().filter_map(key_of).take(r).collect()
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
        let mut answers: Vec<Answer> = Vec::new();
        let mut asked: Vec<PublicKey> = Vec::new();
        for round in 0..3 {
            let candidates: Vec<PublicKey> = match round {
                0 => self.replica.iter().map(|_| self.me).collect(),
                1 => {
                    let near = KBucketKey::new(address.as_bytes().to_vec());
                    let mut peers = self
                        .net
                        .closest_local(address.as_bytes().to_vec(), 2 * r)
                        .await;
                    peers.sort_by_key(|p| KBucketKey::from(*p).distance(&near));
                    peers.iter().filter_map(key_of).collect()
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
            answers.extend(
                self.fan_out(
                    fresh,
                    ReplicaRequest::GetGenesis { address: target },
                    |answers| {
                        answers.iter().any(|(_, a)| {
                        matches!(a, Ok(ReplicaResponse::Genesis(g)) if genesis_fits(g, &target))
                    })
                    },
                )
                .await,
            );
            for (_, a) in &answers {
                if let Ok(ReplicaResponse::Genesis(g)) = a
                    && genesis_fits(g, address)
                {
                    self.cache(*address, g.clone());
                    return Ok(g.clone());
                }
            }
            // A tombstone or a definitive refusal from a replica needs no wider search.
            if common_error(&answers).is_some_and(|e| e.code != ErrorCode::NotFound) {
                break;
            }
        }
        Err(common_error(&answers)
            .unwrap_or_else(|| remote(ErrorCode::NotFound, "no such mailbox")))
    }

    async fn replicas_of(&self, address: &Address) -> Result<Vec<PublicKey>, RemoteError> {
        Ok(self.genesis(address).await?.header().replicas.to_vec())
    }

    async fn call(&self, replica: PublicKey, request: ReplicaRequest) -> Answer {
        let wait = match &request {
            ReplicaRequest::Fetch { wait_ms, .. } => Duration::from_millis(u64::from(*wait_ms)),
            _ => Duration::ZERO,
        };
        let answer = if replica == self.me {
            match &self.replica {
                Some(local) => Ok(local.handle(request).await),
                None => Err("this node stores nothing".to_owned()),
            }
        } else {
            match peer_of(&replica) {
                None => Err("replica key is not a peer identity".to_owned()),
                Some(peer) => tokio::time::timeout(
                    self.config.replica_timeout + wait,
                    self.net.replica_request(peer, request),
                )
                .await
                .unwrap_or_else(|_| Err("replica timed out".to_owned())),
            }
        };
        (replica, answer)
    }

    /// Sends `request` to every replica at once; collects answers until `enough` says so or
    /// every replica answered (or timed out).
    async fn fan_out(
        &self,
        replicas: Vec<PublicKey>,
        request: ReplicaRequest,
        enough: impl FnMut(&[Answer]) -> bool,
    ) -> Vec<Answer> {
        self.fan_out_with_grace(replicas, request, enough, Duration::ZERO)
            .await
    }

    /// Like [`Entry::fan_out`], then keeps collecting late answers for up to `grace`.
    async fn fan_out_with_grace(
        &self,
        replicas: Vec<PublicKey>,
        request: ReplicaRequest,
        mut enough: impl FnMut(&[Answer]) -> bool,
        grace: Duration,
    ) -> Vec<Answer> {
        let total = replicas.len();
        let mut pending: FuturesUnordered<_> = replicas
            .into_iter()
            .map(|r| self.call(r, request.clone()))
            .collect();
        let mut answers = Vec::new();
        while let Some(answer) = pending.next().await {
            if let Err(e) = &answer.1 {
                tracing::debug!(replica = %answer.0.short(), error = %e, "replica did not answer");
            }
            answers.push(answer);
            if enough(&answers) {
                break;
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        while answers.len() < total {
            match tokio::time::timeout_at(deadline, pending.next()).await {
                Ok(Some(answer)) => answers.push(answer),
                _ => break,
            }
        }
        answers
    }

    /// A write: stored once a strict majority of `replicas` stored it durably.
    async fn write(
        &self,
        replicas: &[PublicKey],
        request: ReplicaRequest,
    ) -> Result<bool, RemoteError> {
        let need = replicas.len() / 2 + 1;
        let stored = |answers: &[Answer]| {
            answers
                .iter()
                .filter(|(_, a)| matches!(a, Ok(ReplicaResponse::Stored { .. })))
                .count()
        };
        let answers = self
            .fan_out(replicas.to_vec(), request, |a| stored(a) >= need)
            .await;
        if stored(&answers) >= need {
            let duplicate = answers
                .iter()
                .all(|(_, a)| !matches!(a, Ok(ReplicaResponse::Stored { duplicate: false })));
            return Ok(duplicate);
        }
        Err(common_error(&answers)
            .unwrap_or_else(|| unavailable(stored(&answers), replicas.len(), need)))
    }

    async fn claim(
        &self,
        claim: tigress_protocol::record::Claim,
    ) -> Result<ClientResponse, RemoteError> {
        let genesis = self.genesis(&claim.body.address).await?;
        let replicas = genesis.header().replicas.to_vec();
        // Each receipt is checked once, as it arrives.
        let mut evidence: Vec<CheckedReceipt> = Vec::new();
        let mut outcome = ClaimTally::Pending;
        let answers = self
            .fan_out(
                replicas.clone(),
                ReplicaRequest::Grant {
                    claim: claim.clone(),
                },
                |answers| {
                    let arrived: Vec<Receipt> = match answers.last() {
                        Some((_, Ok(ReplicaResponse::Granted(r)))) => vec![r.clone()],
                        Some((_, Ok(ReplicaResponse::Refused { grants, .. }))) => grants.to_vec(),
                        _ => Vec::new(),
                    };
                    for r in arrived {
                        if let Ok(checked) = CheckedReceipt::check(&genesis, r)
                            && !evidence.contains(&checked)
                        {
                            evidence.push(checked);
                        }
                    }
                    outcome = mailbox::tally_checked(&genesis, &claim, &evidence);
                    matches!(outcome, ClaimTally::Certified(_))
                },
            )
            .await;
        match outcome {
            ClaimTally::Certified(cert) => {
                self.write(
                    &replicas,
                    ReplicaRequest::StoreCertificate {
                        certificate: (*cert).clone(),
                    },
                )
                .await?;
                Ok(ClientResponse::Certified(*cert))
            }
            ClaimTally::Contested => {
                let evidence = BoundedVec::truncated(
                    evidence
                        .into_iter()
                        .map(CheckedReceipt::into_inner)
                        .collect(),
                );
                let _ = self
                    .write(
                        &replicas,
                        ReplicaRequest::MarkContested {
                            address: claim.body.address,
                            evidence,
                        },
                    )
                    .await;
                Err(remote(
                    ErrorCode::Conflict,
                    "the mailbox is contested: claimants raced and no one reached a majority; the sender must resolve it",
                ))
            }
            ClaimTally::Lost => Err(common_error(&answers)
                .unwrap_or_else(|| remote(ErrorCode::Conflict, "the mailbox is already claimed"))),
            ClaimTally::Pending => Err(common_error(&answers).unwrap_or_else(|| {
                let got = answers.iter().filter(|(_, a)| a.is_ok()).count();
                unavailable(got, replicas.len(), genesis.header().majority())
            })),
        }
    }

    async fn read(
        &self,
        request: tigress_protocol::record::ReadRequest,
    ) -> Result<ClientResponse, RemoteError> {
        let genesis = self.genesis(&request.body.address).await?;
        let replicas = genesis.header().replicas.to_vec();
        let need = genesis.header().majority();
        // A majority of views, plus whatever the others answer shortly after: the sender
        // needs every claimant's claim to resolve a contest.
        let answers = self
            .fan_out_with_grace(
                replicas.clone(),
                ReplicaRequest::Read { request },
                |answers| {
                    answers
                        .iter()
                        .filter(|(_, a)| matches!(a, Ok(ReplicaResponse::View(_))))
                        .count()
                        >= need
                },
                READ_GRACE,
            )
            .await;
        let views: Vec<&MailboxView> = answers
            .iter()
            .filter_map(|(_, a)| match a {
                Ok(ReplicaResponse::View(v)) if v.genesis == genesis => Some(v),
                _ => None,
            })
            .collect();
        let Some(first) = views.first() else {
            return Err(self.failure(&answers, replicas.len()));
        };
        // Merge what each replica knows, keeping only records that validate.
        let limits = &self.config.limits;
        let now = crate::now();
        let mut merged = (*first).clone();
        let mut certs = Vec::new();
        let mut claims = Vec::new();
        for v in &views {
            for c in v.certificates.iter() {
                if !certs.contains(c)
                    && mailbox::validate_certificate(&genesis, c, limits, now).is_ok()
                {
                    certs.push(c.clone());
                }
            }
            for c in v.claims.iter() {
                if !claims.contains(c) && mailbox::validate_claim(&genesis, c, limits, now).is_ok()
                {
                    claims.push(c.clone());
                }
            }
            if merged.resolve.is_none()
                && let Some(r) = &v.resolve
                && r.verify_signature(&genesis.header().sender).is_ok()
            {
                merged.resolve = Some(r.clone());
            }
            merged.status.contested |= v.status.contested;
            merged.status.deleted |= v.status.deleted;
            merged.status.messages = merged.status.messages.max(v.status.messages);
            for r in &v.status.recipients {
                if !merged.status.recipients.contains(r)
                    && certs.iter().any(|c| c.claim.body.recipient == *r)
                {
                    merged.status.recipients.push(*r);
                }
            }
        }
        merged.certificates = BoundedVec::truncated(certs);
        merged.claims = BoundedVec::truncated(claims);
        Ok(ClientResponse::View(merged))
    }

    async fn fetch(
        &self,
        request: tigress_protocol::record::ReadRequest,
        cursor: tigress_protocol::rpc::Cursor,
        wait_ms: u32,
    ) -> Result<ClientResponse, RemoteError> {
        let address = request.body.address;
        let reader = request.body.by;
        let own = cursor.iter().any(|(author, _)| *author == reader);
        let replicas = self.replicas_of(&address).await?;
        let answers = self
            .fan_out(
                replicas.clone(),
                ReplicaRequest::Fetch {
                    request,
                    cursor,
                    wait_ms,
                },
                |answers| {
                    answers.iter().any(|(_, a)| {
                        matches!(a, Ok(ReplicaResponse::Messages { messages }) if !messages.is_empty())
                    })
                },
            )
            .await;
        let mut merged: BTreeMap<(PublicKey, PublicKey, u64), Message> = BTreeMap::new();
        let mut any = false;
        for (_, a) in &answers {
            if let Ok(ReplicaResponse::Messages { messages }) = a {
                any = true;
                for m in messages.iter() {
                    let h = m.header();
                    let valid = h.address == address
                        && (h.to == reader || (own && h.from == reader))
                        && m.check_shape().is_ok()
                        && m.verify_signature().is_ok();
                    if valid {
                        merged
                            .entry((h.from, h.to, h.seq))
                            .or_insert_with(|| m.clone());
                    }
                }
            }
        }
        if !any {
            return Err(self.failure(&answers, replicas.len()));
        }
        // A replica that answered with fewer messages than the others has a gap: if this
        // node is one of the replicas, reconcile the mailbox now rather than at the next
        // round.
        let gap = answers.iter().any(|(_, a)| {
            matches!(a, Ok(ReplicaResponse::Messages { messages }) if messages.len() < merged.len())
        });
        if gap
            && replicas.contains(&self.me)
            && let Some(nudge) = &self.nudge
        {
            let _ = nudge.try_send(address);
        }
        let messages: Vec<Message> = merged
            .into_values()
            .take(tigress_protocol::rpc::MAX_FETCH)
            .collect();
        Ok(ClientResponse::Messages {
            messages: BoundedVec::truncated(messages),
        })
    }
}

fn genesis_fits(genesis: &Genesis, address: &Address) -> bool {
    genesis.header().address == *address
        && genesis.check_shape().is_ok()
        && genesis.verify_signature().is_ok()
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
