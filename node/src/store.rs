//! The storage actor: one thread owns the sled database and applies replica requests with
//! the protocol's state machine. Callers talk to it through a bounded channel; a write is
//! answered only after the database is flushed (one flush per batch of writes: group
//! commit), so an acknowledged write survives a crash.
//!
//! Layout: tree `mailboxes` maps an address (32 bytes) to its `MailboxState`; tree
//! `messages` maps address ‖ from ‖ to ‖ sequence (big endian) to the message's bytes.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tigress_protocol::crypto::{PublicKey, SigningKey};
use tigress_protocol::error::{ErrorCode, Role};
use tigress_protocol::mailbox::{Limits, MailboxState, MessageKey, Outcome};
use tigress_protocol::record::{Message, Record};
use tigress_protocol::rpc::{
    Cursor, MAX_FETCH, MailboxView, RemoteError, ReplicaDigest, ReplicaRequest, ReplicaResponse,
};
use tigress_protocol::wire::{self, BoundedVec};
use tigress_protocol::{Address, Error};
use tokio::sync::{broadcast, mpsc, oneshot};

/// The most bytes of messages in one fetch answer (well inside a frame).
const MAX_FETCH_BYTES: usize = 768 * 1024;
/// The most jobs applied before one flush.
const MAX_BATCH: usize = 128;

/// A message for `to` arrived at `address`: wakes long-polls.
pub type Arrival = (Address, PublicKey);

/// Counters the store keeps for `/metrics`.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Mailboxes stored (live and tombstones).
    pub mailboxes: AtomicU64,
    /// Messages stored.
    pub messages: AtomicU64,
    /// Bytes stored (values of both trees).
    pub bytes: AtomicU64,
    /// Sweeps run.
    pub sweeps: AtomicU64,
    /// Mailboxes removed by sweeps.
    pub swept: AtomicU64,
}

/// Why the store could not start.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled refused to open the database.
    #[error("opening the database in {path}: {source}")]
    Open {
        /// The directory.
        path: String,
        /// The cause.
        source: sled::Error,
    },
}

enum Op {
    Replica(Box<ReplicaRequest>),
    Sweep,
    List,
    Flush,
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Reply>,
}

enum Reply {
    Replica(Box<ReplicaResponse>),
    List(Vec<(Address, Vec<PublicKey>)>),
}

/// A handle on the storage actor.
#[derive(Clone)]
pub struct Store {
    jobs: mpsc::Sender<Job>,
    arrivals: broadcast::Sender<Arrival>,
    stats: Arc<StoreStats>,
}

fn err(e: &Error) -> RemoteError {
    RemoteError::from(e)
}

fn unavailable(message: impl Into<String>) -> RemoteError {
    RemoteError::new(ErrorCode::Unavailable, message)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Store {
    /// Opens (or creates) the database in `dir` and starts the actor thread.
    pub fn open(
        dir: &Path,
        node_key: SigningKey,
        limits: Limits,
        quota_bytes: u64,
    ) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(None)
            .open()
            .map_err(|source| StoreError::Open {
                path: dir.display().to_string(),
                source,
            })?;
        Self::start(db, node_key, limits, quota_bytes)
    }

    /// A store in memory only, for tests.
    pub fn in_memory(node_key: SigningKey, limits: Limits) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(|source| StoreError::Open {
                path: "<memory>".into(),
                source,
            })?;
        Self::start(db, node_key, limits, u64::MAX)
    }

    fn start(
        db: sled::Db,
        node_key: SigningKey,
        limits: Limits,
        quota_bytes: u64,
    ) -> Result<Self, StoreError> {
        let open = |name: &str| {
            db.open_tree(name).map_err(|source| StoreError::Open {
                path: name.into(),
                source,
            })
        };
        let actor = Actor {
            mailboxes: open("mailboxes")?,
            messages: open("messages")?,
            db,
            node_key,
            limits,
            quota_bytes,
            stats: Arc::new(StoreStats::default()),
        };
        actor.count();
        let stats = actor.stats.clone();
        let (jobs, rx) = mpsc::channel(1024);
        let (arrivals, _) = broadcast::channel(1024);
        let notify = arrivals.clone();
        std::thread::Builder::new()
            .name("tigress-store".into())
            .spawn(move || actor.run(rx, notify))
            .map_err(|e| StoreError::Open {
                path: "store thread".into(),
                source: sled::Error::Io(e),
            })?;
        Ok(Self {
            jobs,
            arrivals,
            stats,
        })
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<StoreStats> {
        &self.stats
    }

    /// Subscribes to message arrivals (for long-polls).
    pub fn arrivals(&self) -> broadcast::Receiver<Arrival> {
        self.arrivals.subscribe()
    }

    async fn submit(&self, op: Op) -> Reply {
        let stopped = || {
            Reply::Replica(Box::new(ReplicaResponse::Error(unavailable(
                "the store has stopped",
            ))))
        };
        let (reply, rx) = oneshot::channel();
        if self.jobs.send(Job { op, reply }).await.is_err() {
            return stopped();
        }
        rx.await.unwrap_or_else(|_| stopped())
    }

    async fn submit_replica(&self, op: Op) -> ReplicaResponse {
        match self.submit(op).await {
            Reply::Replica(r) => *r,
            Reply::List(_) => ReplicaResponse::Error(unavailable("unexpected store reply")),
        }
    }

    /// Every mailbox stored, with its replica set (for anti-entropy).
    pub async fn mailboxes(&self) -> Vec<(Address, Vec<PublicKey>)> {
        match self.submit(Op::List).await {
            Reply::List(list) => list,
            Reply::Replica(_) => Vec::new(),
        }
    }

    /// Applies one replica request (a fetch here never waits; see `replica`).
    pub async fn apply(&self, request: ReplicaRequest) -> ReplicaResponse {
        self.submit_replica(Op::Replica(Box::new(request))).await
    }

    /// Removes expired mailboxes and tombstones; returns how many.
    pub async fn sweep(&self) -> u64 {
        match self.submit_replica(Op::Sweep).await {
            ReplicaResponse::Stored { .. } => self.stats.swept.load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// Waits until every job sent so far is applied, then flushes the database (the
    /// actor flushes once more when the last handle is dropped).
    pub async fn flush(&self) {
        let _ = self.submit_replica(Op::Flush).await;
    }
}

struct Actor {
    db: sled::Db,
    mailboxes: sled::Tree,
    messages: sled::Tree,
    node_key: SigningKey,
    limits: Limits,
    quota_bytes: u64,
    stats: Arc<StoreStats>,
}

/// What applying one job did.
struct Applied {
    response: ReplicaResponse,
    wrote: bool,
    arrival: Option<Arrival>,
}

impl Applied {
    fn read(response: ReplicaResponse) -> Self {
        Self {
            response,
            wrote: false,
            arrival: None,
        }
    }
}

fn digest_of(state: &MailboxState) -> ReplicaDigest {
    let keys: Vec<MessageKey> = state.message_keys().map(|(k, _)| *k).collect();
    ReplicaDigest {
        genesis: state.genesis().clone(),
        certificates: BoundedVec::truncated(state.certificates().to_vec()),
        resolve: state.resolution().cloned(),
        delete: state.deletion().cloned(),
        relinquished: BoundedVec::truncated(state.relinquishes().to_vec()),
        messages: BoundedVec::truncated(keys),
    }
}

fn message_key(address: &Address, key: &MessageKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(104);
    k.extend_from_slice(address.as_bytes());
    k.extend_from_slice(key.0.as_bytes());
    k.extend_from_slice(key.1.as_bytes());
    k.extend_from_slice(&key.2.to_be_bytes());
    k
}

impl Actor {
    fn count(&self) {
        let mut bytes = 0u64;
        for (_, v) in self.mailboxes.iter().flatten() {
            bytes += v.len() as u64;
        }
        let mut msgs = 0u64;
        for (_, v) in self.messages.iter().flatten() {
            bytes += v.len() as u64;
            msgs += 1;
        }
        self.stats
            .mailboxes
            .store(self.mailboxes.len() as u64, Ordering::Relaxed);
        self.stats.messages.store(msgs, Ordering::Relaxed);
        self.stats.bytes.store(bytes, Ordering::Relaxed);
    }

    fn run(self, mut rx: mpsc::Receiver<Job>, arrivals: broadcast::Sender<Arrival>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let now = now_secs();
            let mut results = Vec::with_capacity(batch.len());
            let mut dirty = false;
            for job in batch {
                let applied = match job.op {
                    Op::Replica(req) => self.apply(*req, now),
                    Op::Sweep => self.sweep(now),
                    Op::Flush => Applied {
                        response: ReplicaResponse::Stored { duplicate: false },
                        wrote: true,
                        arrival: None,
                    },
                    Op::List => {
                        let _ = job.reply.send(Reply::List(self.list()));
                        continue;
                    }
                };
                dirty |= applied.wrote;
                results.push((job.reply, applied));
            }
            let flushed = if dirty {
                self.db.flush().map(|_| ()).map_err(|e| e.to_string())
            } else {
                Ok(())
            };
            for (reply, applied) in results {
                let response = match (&flushed, applied.wrote) {
                    (Err(e), true) => {
                        tracing::error!(error = %e, "flushing the database failed");
                        ReplicaResponse::Error(unavailable(format!(
                            "the node could not persist the write: {e}"
                        )))
                    }
                    _ => {
                        if let Some(a) = applied.arrival {
                            let _ = arrivals.send(a);
                        }
                        applied.response
                    }
                };
                let _ = reply.send(Reply::Replica(Box::new(response)));
            }
        }
        if let Err(e) = self.db.flush() {
            tracing::error!(error = %e, "final flush failed");
        }
    }

    fn list(&self) -> Vec<(Address, Vec<PublicKey>)> {
        self.mailboxes
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, v)| {
                let state: MailboxState = wire::decode_local(&v).ok()?;
                let addr: [u8; 32] = k.as_ref().try_into().ok()?;
                Some((Address(addr), state.genesis().header().replicas.to_vec()))
            })
            .collect()
    }

    fn load(&self, address: &Address) -> Result<Option<MailboxState>, RemoteError> {
        match self.mailboxes.get(address.as_bytes()) {
            Ok(None) => Ok(None),
            Ok(Some(bytes)) => wire::decode_local(&bytes).map(Some).map_err(|e| {
                tracing::error!(address = %address.short(), error = %e, "stored state unreadable");
                unavailable("stored state unreadable")
            }),
            Err(e) => Err(unavailable(format!("database read failed: {e}"))),
        }
    }

    fn load_existing(&self, address: &Address) -> Result<MailboxState, RemoteError> {
        self.load(address)?
            .ok_or_else(|| RemoteError::new(ErrorCode::NotFound, "no such mailbox"))
    }

    fn check_quota(&self, extra: usize) -> Result<(), RemoteError> {
        let used = self.stats.bytes.load(Ordering::Relaxed);
        if used.saturating_add(extra as u64) > self.quota_bytes {
            return Err(unavailable(format!(
                "this node's storage quota of {} bytes is full",
                self.quota_bytes
            )));
        }
        Ok(())
    }

    fn save(&self, state: &MailboxState) -> Result<(), RemoteError> {
        let bytes = wire::encode_local(state).map_err(|e| unavailable(e.to_string()))?;
        let previous = self
            .mailboxes
            .insert(state.address().as_bytes(), bytes.as_slice())
            .map_err(|e| unavailable(format!("database write failed: {e}")))?;
        let old = previous.map_or(0, |p| p.len() as u64);
        if old == 0 {
            self.stats.mailboxes.fetch_add(1, Ordering::Relaxed);
        }
        self.stats
            .bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.stats.bytes.fetch_sub(old, Ordering::Relaxed);
        Ok(())
    }

    fn remove_messages(&self, address: &Address) {
        let keys: Vec<_> = self
            .messages
            .scan_prefix(address.as_bytes())
            .filter_map(Result::ok)
            .collect();
        for (k, v) in keys {
            if self.messages.remove(k).is_ok() {
                self.stats
                    .bytes
                    .fetch_sub(v.len() as u64, Ordering::Relaxed);
                self.stats.messages.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn write(&self, state: &MailboxState, outcome: Outcome) -> Applied {
        if outcome == Outcome::Duplicate {
            return Applied::read(ReplicaResponse::Stored { duplicate: true });
        }
        match self.save(state) {
            Ok(()) => Applied {
                response: ReplicaResponse::Stored { duplicate: false },
                wrote: true,
                arrival: None,
            },
            Err(e) => Applied::read(ReplicaResponse::Error(e)),
        }
    }

    fn apply(&self, req: ReplicaRequest, now: u64) -> Applied {
        match self.try_apply(req, now) {
            Ok(a) => a,
            Err(e) => Applied::read(ReplicaResponse::Error(e)),
        }
    }

    fn try_apply(&self, req: ReplicaRequest, now: u64) -> Result<Applied, RemoteError> {
        let limits = &self.limits;
        Ok(match req {
            ReplicaRequest::StoreGenesis { genesis } => {
                let address = genesis.header().address;
                match self.load(&address)? {
                    Some(state) => {
                        let outcome = state.offer_genesis(&genesis, now).map_err(|e| err(&e))?;
                        self.write(&state, outcome)
                    }
                    None => {
                        self.check_quota(genesis.to_bytes().len())?;
                        let state =
                            MailboxState::create(genesis, limits, now).map_err(|e| err(&e))?;
                        self.write(&state, Outcome::Applied)
                    }
                }
            }
            ReplicaRequest::Grant { claim } => {
                let mut state = self.load_existing(&claim.body.address)?;
                match state.grant(&claim, &self.node_key, limits, now) {
                    Ok((receipt, outcome)) => {
                        if outcome == Outcome::Applied {
                            self.check_quota(claim.to_bytes().len() + receipt.to_bytes().len())?;
                            self.save(&state)?;
                        }
                        Applied {
                            response: ReplicaResponse::Granted(receipt),
                            wrote: outcome == Outcome::Applied,
                            arrival: None,
                        }
                    }
                    Err(e) => Applied::read(ReplicaResponse::Refused {
                        error: RemoteError::from(&e),
                        grants: BoundedVec::truncated(state.grants().to_vec()),
                    }),
                }
            }
            ReplicaRequest::StoreCertificate { certificate } => {
                let mut state = self.load_existing(&certificate.claim.body.address)?;
                let outcome = state
                    .accept_certificate(&certificate, limits, now)
                    .map_err(|e| err(&e))?;
                self.write(&state, outcome)
            }
            ReplicaRequest::MarkContested { address, evidence } => {
                let mut state = self.load_existing(&address)?;
                let outcome = state.mark_contested(&evidence, now).map_err(|e| err(&e))?;
                self.write(&state, outcome)
            }
            ReplicaRequest::StoreMessage { message } => self.store_message(message, now)?,
            ReplicaRequest::Delete { delete } => {
                let mut state = self.load_existing(&delete.body.address)?;
                let outcome = state.delete(&delete, limits, now).map_err(|e| err(&e))?;
                if outcome == Outcome::Applied {
                    self.remove_messages(&state.address());
                }
                self.write(&state, outcome)
            }
            ReplicaRequest::Relinquish { relinquish } => {
                let mut state = self.load_existing(&relinquish.body.address)?;
                let outcome = state
                    .relinquish(&relinquish, limits, now)
                    .map_err(|e| err(&e))?;
                self.write(&state, outcome)
            }
            ReplicaRequest::Resolve { resolve } => {
                let mut state = self.load_existing(&resolve.body.address)?;
                let outcome = state.resolve(&resolve, limits, now).map_err(|e| err(&e))?;
                self.write(&state, outcome)
            }
            ReplicaRequest::GetGenesis { address } => {
                let state = self.load_existing(&address)?;
                state.live(now).map_err(|e| err(&e))?;
                Applied::read(ReplicaResponse::Genesis(state.genesis().clone()))
            }
            ReplicaRequest::Open { request } => {
                let state = self.load_existing(&request.body.address)?;
                state
                    .authorize_open(&request, limits, now)
                    .map_err(|e| err(&e))?;
                Applied::read(ReplicaResponse::Genesis(state.genesis().clone()))
            }
            ReplicaRequest::Read { request } => {
                let state = self.load_existing(&request.body.address)?;
                let party = state
                    .authorize_read(&request, limits, now)
                    .map_err(|e| err(&e))?;
                let claims = if party.role == Role::Sender {
                    state.claims().to_vec()
                } else {
                    Vec::new()
                };
                Applied::read(ReplicaResponse::View(MailboxView {
                    genesis: state.genesis().clone(),
                    status: state.status(now),
                    certificates: BoundedVec::truncated(state.certificates().to_vec()),
                    claims: BoundedVec::truncated(claims),
                    resolve: state.resolution().cloned(),
                }))
            }
            ReplicaRequest::Fetch {
                request, cursor, ..
            } => {
                let state = self.load_existing(&request.body.address)?;
                let party = state
                    .authorize_read(&request, limits, now)
                    .map_err(|e| err(&e))?;
                Applied::read(self.fetch(&state, &party.key, &cursor)?)
            }
            ReplicaRequest::Status { address } => {
                let state = self.load_existing(&address)?;
                state.live(now).map_err(|e| err(&e))?;
                Applied::read(ReplicaResponse::Status(state.status(now)))
            }
            ReplicaRequest::Digest { address } => {
                let state = self.load_existing(&address)?;
                Applied::read(ReplicaResponse::Digest(digest_of(&state)))
            }
            ReplicaRequest::Summaries { addresses } => {
                let mut out = Vec::with_capacity(addresses.len());
                for address in addresses.iter() {
                    out.push(self.load(address)?.map(|s| digest_of(&s).summary()));
                }
                Applied::read(ReplicaResponse::Summaries {
                    summaries: BoundedVec::truncated(out),
                })
            }
            ReplicaRequest::GetMessages { address, keys } => {
                let mut out = Vec::new();
                for key in keys.iter() {
                    if let Some(m) = self.read_message(&address, key)? {
                        out.push(m);
                    }
                }
                Applied::read(ReplicaResponse::Messages {
                    messages: BoundedVec::truncated(out),
                })
            }
        })
    }

    fn read_message(
        &self,
        address: &Address,
        key: &MessageKey,
    ) -> Result<Option<Message>, RemoteError> {
        match self.messages.get(message_key(address, key)) {
            Ok(Some(bytes)) => Message::from_bytes(&bytes).map(Some).map_err(|e| {
                tracing::error!(address = %address.short(), error = %e, "stored message unreadable");
                unavailable("stored message unreadable")
            }),
            Ok(None) => Ok(None),
            Err(e) => Err(unavailable(format!("database read failed: {e}"))),
        }
    }

    fn store_message(&self, message: Message, now: u64) -> Result<Applied, RemoteError> {
        let h = message.header().clone();
        let mut state = self.load_existing(&h.address)?;
        let outcome = state
            .apply_message(&message, &self.limits, now)
            .map_err(|e| err(&e))?;
        if outcome == Outcome::Duplicate {
            return Ok(Applied::read(ReplicaResponse::Stored { duplicate: true }));
        }
        let bytes = message.to_bytes();
        self.check_quota(bytes.len())?;
        self.messages
            .insert(
                message_key(&h.address, &(h.from, h.to, h.seq)),
                bytes.as_slice(),
            )
            .map_err(|e| unavailable(format!("database write failed: {e}")))?;
        self.stats
            .bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.stats.messages.fetch_add(1, Ordering::Relaxed);
        self.save(&state)?;
        Ok(Applied {
            response: ReplicaResponse::Stored { duplicate: false },
            wrote: true,
            arrival: Some((h.address, h.to)),
        })
    }

    /// Messages for `reader` at or after the cursor, in (author, sequence) order, bounded
    /// by count and bytes.
    fn fetch(
        &self,
        state: &MailboxState,
        reader: &PublicKey,
        cursor: &Cursor,
    ) -> Result<ReplicaResponse, RemoteError> {
        let address = state.address();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        // Messages addressed to the reader; its own messages too when it names itself in
        // the cursor (a device resuming its outgoing sequence).
        let own = cursor.iter().any(|(author, _)| author == reader);
        for (key, _) in state.message_keys() {
            if key.1 != *reader && !(own && key.0 == *reader) {
                continue;
            }
            let next = cursor
                .iter()
                .find(|(author, _)| *author == key.0)
                .map_or(1, |(_, n)| *n);
            if key.2 < next {
                continue;
            }
            if let Some(m) = self.read_message(&address, key)? {
                let len = m.to_bytes().len();
                if out.len() == MAX_FETCH || bytes + len > MAX_FETCH_BYTES {
                    break;
                }
                bytes += len;
                out.push(m);
            }
        }
        Ok(ReplicaResponse::Messages {
            messages: BoundedVec::truncated(out),
        })
    }

    fn sweep(&self, now: u64) -> Applied {
        let mut removed = 0u64;
        let expired: Vec<Address> = self
            .mailboxes
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, v)| {
                let state: MailboxState = wire::decode_local(&v).ok()?;
                let addr: [u8; 32] = k.as_ref().try_into().ok()?;
                state.is_sweepable(now).then_some(Address(addr))
            })
            .collect();
        for address in &expired {
            self.remove_messages(address);
            if let Ok(Some(old)) = self.mailboxes.remove(address.as_bytes()) {
                self.stats
                    .bytes
                    .fetch_sub(old.len() as u64, Ordering::Relaxed);
                self.stats.mailboxes.fetch_sub(1, Ordering::Relaxed);
                removed += 1;
            }
        }
        self.stats.sweeps.fetch_add(1, Ordering::Relaxed);
        self.stats.swept.store(removed, Ordering::Relaxed);
        if removed > 0 {
            tracing::info!(removed, "sweep removed expired mailboxes");
        }
        Applied {
            response: ReplicaResponse::Stored { duplicate: false },
            wrote: removed > 0,
            arrival: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;
    use tigress_protocol::session::{SenderSession, ShareIdentity, ShareOptions};

    fn genesis(node: &SigningKey, seed: u8, ttl: u64) -> tigress_protocol::record::Genesis {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([seed; 32]);
        let options = ShareOptions {
            ttl_secs: ttl,
            ..ShareOptions::default()
        };
        let (s, _) = SenderSession::create(
            ShareIdentity::random(&mut rng),
            "https://relay.example",
            vec![node.public_key()],
            &[seed; 100],
            &options,
            now_secs(),
            &mut rng,
        )
        .unwrap();
        s.genesis().clone()
    }

    #[tokio::test]
    async fn writes_survive_a_reopen_and_the_quota_refuses_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let node = SigningKey::from_seed(&[3; 32]);
        let g1 = genesis(&node, 1, 3600);
        // Room for one mailbox, not two.
        let quota = g1.to_bytes().len() as u64 * 3 / 2;
        let store = Store::open(dir.path(), node.clone(), Limits::default(), quota).unwrap();
        let r = store
            .apply(ReplicaRequest::StoreGenesis {
                genesis: g1.clone(),
            })
            .await;
        assert_eq!(r, ReplicaResponse::Stored { duplicate: false });
        // A second mailbox does not fit.
        let r = store
            .apply(ReplicaRequest::StoreGenesis {
                genesis: genesis(&node, 2, 3600),
            })
            .await;
        match r {
            ReplicaResponse::Error(e) => {
                assert_eq!(e.code, ErrorCode::Unavailable);
                assert!(e.message.as_str().contains("quota"), "{e}");
            }
            other => panic!("expected a quota refusal, got {other:?}"),
        }
        drop(store);
        // Reopened (after the actor thread let go of the database), the first is there.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let reopened = loop {
            match Store::open(dir.path(), node.clone(), Limits::default(), quota) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(std::time::Instant::now() < deadline, "reopening: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        };
        let r = reopened
            .apply(ReplicaRequest::StoreGenesis {
                genesis: g1.clone(),
            })
            .await;
        assert_eq!(r, ReplicaResponse::Stored { duplicate: true });
        assert_eq!(reopened.stats().mailboxes.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn the_sweep_removes_expired_mailboxes_only() {
        let node = SigningKey::from_seed(&[4; 32]);
        let store = Store::in_memory(node.clone(), Limits::default()).unwrap();
        let short = genesis(&node, 5, 1);
        let long = genesis(&node, 6, 3600);
        for g in [&short, &long] {
            let r = store
                .apply(ReplicaRequest::StoreGenesis { genesis: g.clone() })
                .await;
            assert_eq!(r, ReplicaResponse::Stored { duplicate: false });
        }
        // Wait (bounded) until the short one's expiry second has passed, then sweep.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while now_secs() < short.header().expires_at {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(store.sweep().await, 1);
        assert_eq!(store.stats().mailboxes.load(Ordering::Relaxed), 1);
        let status = store
            .apply(ReplicaRequest::Status {
                address: long.header().address,
            })
            .await;
        assert!(matches!(status, ReplicaResponse::Status(_)));
    }
}
