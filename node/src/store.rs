//! The storage actor: one thread owns the sled database and applies replica requests with
//! the protocol's state machine. Callers talk to it through a bounded channel; a write is
//! answered only after the database is flushed (one flush per batch of writes: group
//! commit), so an acknowledged write survives a crash.
//!
//! Layout: tree `geneses` maps an address (32 bytes) to its mailbox's genesis, written
//! once; tree `books` maps it to the rest of the mailbox's state (`mailbox::Book`), which
//! every write rewrites; tree `messages` maps address ‖ from ‖ to ‖ sequence (big endian)
//! to the message's bytes. The first layout kept each whole `MailboxState` in tree
//! `mailboxes`; opening a database of that layout moves its states into the two trees.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tigress_protocol::Address;
use tigress_protocol::crypto::{PublicKey, SigningKey};
use tigress_protocol::error::ErrorCode;
use tigress_protocol::mailbox::{Book, Limits, MailboxState, MessageKey};
use tigress_protocol::record::Genesis;
use tigress_protocol::record::{Message, Record};
use tigress_protocol::replica::{self, Applied, Storage};
use tigress_protocol::rpc::{RemoteError, ReplicaRequest, ReplicaResponse};
use tigress_protocol::wire;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::clock::Clock;

pub use tigress_protocol::replica::Arrival;

/// The most jobs applied before one flush.
const MAX_BATCH: usize = 128;

/// The most memory sled keeps for its page cache (its default is 1 GiB): what others
/// make this node store must not grow its memory with it; the rest stays on disk.
const CACHE_BYTES: u64 = 64 << 20;

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
    /// Mailbox states decoded to answer `Summaries` (the rest came from the cache).
    pub summaries_decoded: AtomicU64,
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
    Replica(Box<(ReplicaRequest, Option<PublicKey>)>),
    Sweep,
    List,
    Flush,
    /// Flushes, lets go of the database, and stops the store thread.
    Close,
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Reply>,
}

enum Reply {
    Replica(Box<ReplicaResponse>),
    List(Vec<(Address, Vec<PublicKey>)>),
    /// An internal job (flush, sweep) is done; whether its writes were persisted.
    Done(bool),
}

/// A handle on the storage actor.
#[derive(Clone)]
pub struct Store {
    /// This node's key: requests from the node itself come from it.
    me: PublicKey,
    jobs: mpsc::Sender<Job>,
    arrivals: broadcast::Sender<Arrival>,
    stats: Arc<StoreStats>,
}

fn unavailable(message: impl Into<String>) -> RemoteError {
    RemoteError::new(ErrorCode::Unavailable, message)
}

impl Store {
    /// Opens (or creates) the database in `dir` and starts the actor thread.
    pub fn open(
        dir: &Path,
        node_key: SigningKey,
        limits: Limits,
        quota_bytes: u64,
        clock: Clock,
    ) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(None)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|source| StoreError::Open {
                path: dir.display().to_string(),
                source,
            })?;
        Self::start(db, node_key, limits, quota_bytes, clock)
    }

    /// A store in memory only, for tests.
    pub fn in_memory(
        node_key: SigningKey,
        limits: Limits,
        clock: Clock,
    ) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(|source| StoreError::Open {
                path: "<memory>".into(),
                source,
            })?;
        Self::start(db, node_key, limits, u64::MAX, clock)
    }

    fn start(
        db: sled::Db,
        node_key: SigningKey,
        limits: Limits,
        quota_bytes: u64,
        clock: Clock,
    ) -> Result<Self, StoreError> {
        let open = |name: &str| {
            db.open_tree(name).map_err(|source| StoreError::Open {
                path: name.into(),
                source,
            })
        };
        let me = node_key.public_key();
        let first_layout = open("mailboxes")?;
        let actor = Actor {
            geneses: open("geneses")?,
            books: open("books")?,
            messages: open("messages")?,
            db,
            node_key,
            limits,
            quota_bytes,
            clock,
            stats: Arc::new(StoreStats::default()),
            summaries: hashlink::LruCache::new(SUMMARY_CACHE),
            geneses_seen: std::cell::RefCell::new(hashlink::LruCache::new(GENESIS_MEMO)),
        };
        actor
            .migrate(&first_layout)
            .map_err(|source| StoreError::Open {
                path: "mailboxes".into(),
                source,
            })?;
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
            me,
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
            Reply::List(_) | Reply::Done(_) => {
                ReplicaResponse::Error(unavailable("unexpected store reply"))
            }
        }
    }

    /// Every mailbox stored, with its holders now (for anti-entropy and takeovers).
    pub async fn mailboxes(&self) -> Vec<(Address, Vec<PublicKey>)> {
        match self.submit(Op::List).await {
            Reply::List(list) => list,
            Reply::Replica(_) | Reply::Done(_) => Vec::new(),
        }
    }

    /// Applies one replica request from this node itself (a fetch here never waits; see
    /// `replica`).
    pub async fn apply(&self, request: ReplicaRequest) -> ReplicaResponse {
        self.apply_from(request, Some(self.me)).await
    }

    /// Applies one replica request from the node `from` (`None`: not a known node).
    pub async fn apply_from(
        &self,
        request: ReplicaRequest,
        from: Option<PublicKey>,
    ) -> ReplicaResponse {
        self.submit_replica(Op::Replica(Box::new((request, from))))
            .await
    }

    /// Removes expired mailboxes and tombstones; returns how many.
    pub async fn sweep(&self) -> u64 {
        match self.submit(Op::Sweep).await {
            Reply::Done(true) => self.stats.swept.load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// Waits until every job sent so far is applied, then flushes the database (the
    /// actor flushes once more when the last handle is dropped).
    pub async fn flush(&self) {
        let _ = self.submit(Op::Flush).await;
    }

    /// Waits until every job sent so far is applied, flushes, and stops the store: the
    /// database is closed when this returns (its directory can be opened again), and
    /// every later request is answered "the store has stopped".
    pub async fn close(&self) {
        let _ = self.submit(Op::Close).await;
    }
}

struct Actor {
    db: sled::Db,
    geneses: sled::Tree,
    books: sled::Tree,
    messages: sled::Tree,
    node_key: SigningKey,
    limits: Limits,
    quota_bytes: u64,
    clock: Clock,
    stats: Arc<StoreStats>,
    /// Each mailbox's anti-entropy summary with the nodes it may go to, kept until the
    /// mailbox changes: `Summaries` requests cost no decoding of states already seen.
    summaries: hashlink::LruCache<Address, Summary>,
    /// Recently loaded geneses, decoded, with their digests: a genesis is written once per
    /// address, so a request for a busy mailbox needs neither decoding it nor hashing it
    /// again to check its book against it. Forgotten where the tree changes (a genesis
    /// written or swept); geneses over [`GENESIS_MEMO_BYTES`] are not kept.
    geneses_seen: std::cell::RefCell<hashlink::LruCache<Address, (Genesis, [u8; 32])>>,
}

/// How many decoded geneses the store keeps.
const GENESIS_MEMO: usize = 1024;

/// The largest stored genesis the store keeps decoded (those carrying a large payload
/// cost more to keep than to decode).
const GENESIS_MEMO_BYTES: usize = 4096;

/// A mailbox's summary and the nodes it is for (its lineup).
#[derive(Clone)]
struct Summary {
    members: Vec<PublicKey>,
    summary: [u8; 32],
}

/// How many mailbox summaries the store keeps.
const SUMMARY_CACHE: usize = 65_536;

fn message_key(address: &Address, key: &MessageKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(104);
    k.extend_from_slice(address.as_bytes());
    k.extend_from_slice(key.0.as_bytes());
    k.extend_from_slice(key.1.as_bytes());
    k.extend_from_slice(&key.2.to_be_bytes());
    k
}

impl Actor {
    /// Moves the whole states of the first layout (tree `old`) into `geneses` and
    /// `books`. A state that does not decode stays where it is, and is said once.
    fn migrate(&self, old: &sled::Tree) -> Result<(), sled::Error> {
        let (mut moved, mut kept) = (0u64, 0u64);
        for entry in old.iter() {
            let (k, v) = entry?;
            let Ok(state) = wire::decode_local::<MailboxState>(&v) else {
                kept += 1;
                continue;
            };
            let (Ok(genesis), Ok(book)) = (
                wire::encode_local(state.genesis()),
                wire::encode_local(state.book()),
            ) else {
                kept += 1;
                continue;
            };
            if let Ok(address) = <[u8; 32]>::try_from(k.as_ref()) {
                self.geneses_seen.borrow_mut().remove(&Address(address));
            }
            self.geneses.insert(&k, genesis)?;
            self.books.insert(&k, book)?;
            old.remove(&k)?;
            moved += 1;
        }
        if moved > 0 {
            self.db.flush()?;
            tracing::info!(
                moved,
                "mailbox states moved to the layout of genesis and book"
            );
        }
        if kept > 0 {
            tracing::error!(
                kept,
                "mailbox states of the first layout do not decode; left in tree `mailboxes`"
            );
        }
        Ok(())
    }

    /// The state of the mailbox at `key` from its book's bytes.
    fn assemble(&self, key: &[u8], book: &[u8]) -> Result<MailboxState, String> {
        let book: Book = wire::decode_local(book).map_err(|e| e.to_string())?;
        let address = Address(key.try_into().map_err(|_| "a key is not an address")?);
        let seen = self.geneses_seen.borrow_mut().get(&address).cloned();
        let (genesis, digest) = match seen {
            Some(known) => known,
            None => {
                let bytes = self
                    .geneses
                    .get(key)
                    .map_err(|e| e.to_string())?
                    .ok_or("the genesis is missing")?;
                let genesis: Genesis = wire::decode_local(&bytes).map_err(|e| e.to_string())?;
                let digest = genesis.digest();
                if bytes.len() <= GENESIS_MEMO_BYTES {
                    self.geneses_seen
                        .borrow_mut()
                        .insert(address, (genesis.clone(), digest));
                }
                (genesis, digest)
            }
        };
        MailboxState::from_digested_parts(genesis, &digest, book)
            .ok_or_else(|| "the book is of another genesis".into())
    }

    fn count(&self) {
        let mut bytes = 0u64;
        for (_, v) in self.books.iter().flatten() {
            bytes += v.len() as u64;
        }
        for (_, v) in self.geneses.iter().flatten() {
            bytes += v.len() as u64;
        }
        let mut msgs = 0u64;
        for (_, v) in self.messages.iter().flatten() {
            bytes += v.len() as u64;
            msgs += 1;
        }
        self.stats
            .mailboxes
            .store(self.books.len() as u64, Ordering::Relaxed);
        self.stats.messages.store(msgs, Ordering::Relaxed);
        self.stats.bytes.store(bytes, Ordering::Relaxed);
    }

    fn run(mut self, mut rx: mpsc::Receiver<Job>, arrivals: broadcast::Sender<Arrival>) {
        let mut closing = None;
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let now = self.clock.unix();
            let mut results = Vec::with_capacity(batch.len());
            let mut internal = Vec::new();
            let mut dirty = false;
            for job in batch {
                let applied = match job.op {
                    Op::Replica(req) => {
                        let (req, from) = *req;
                        self.apply(req, from, now)
                    }
                    Op::Sweep => {
                        dirty |= self.sweep(now);
                        internal.push(job.reply);
                        continue;
                    }
                    Op::Flush => {
                        dirty = true;
                        internal.push(job.reply);
                        continue;
                    }
                    Op::Close => {
                        dirty = true;
                        closing = Some(job.reply);
                        continue;
                    }
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
            for reply in internal {
                let _ = reply.send(Reply::Done(flushed.is_ok()));
            }
            if closing.is_some() {
                break;
            }
        }
        let flushed = self.db.flush();
        if let Err(e) = &flushed {
            tracing::error!(error = %e, "final flush failed");
        }
        // Jobs still queued are answered "stopped" as their replies drop; the database
        // is let go of before the close is answered.
        drop(rx);
        drop(self);
        if let Some(reply) = closing {
            let _ = reply.send(Reply::Done(flushed.is_ok()));
        }
    }

    fn list(&self) -> Vec<(Address, Vec<PublicKey>)> {
        self.books
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, v)| {
                let state = self.assemble(&k, &v).ok()?;
                let addr: [u8; 32] = k.as_ref().try_into().ok()?;
                Some((Address(addr), state.holders()))
            })
            .collect()
    }

    fn apply(&mut self, req: ReplicaRequest, from: Option<PublicKey>, now: u64) -> Applied {
        if let ReplicaRequest::Summaries { addresses } = &req {
            return Applied::read(self.summaries(addresses, from.as_ref()));
        }
        let key = self.node_key.clone();
        let limits = self.limits;
        replica::apply(self, &key, &limits, from.as_ref(), req, now)
    }

    /// The summaries of `addresses` for the node `from`: `None` where this store holds
    /// nothing or `from` is not of the mailbox's lineup. A request that is not from a
    /// node is refused before anything is read.
    fn summaries(&mut self, addresses: &[Address], from: Option<&PublicKey>) -> ReplicaResponse {
        let Some(from) = from else {
            return ReplicaResponse::Error(RemoteError::new(
                ErrorCode::Unauthorized,
                "summaries go to the mailboxes' replicas only",
            ));
        };
        let mut out = Vec::with_capacity(addresses.len());
        for address in addresses {
            let cached = self.summaries.get(address).cloned();
            let entry = match cached {
                Some(s) => Some(s),
                None => match self.load(address) {
                    Ok(Some(state)) => {
                        let s = Summary {
                            members: state.genesis().header().lineup().members().to_vec(),
                            summary: replica::digest_of(&state).summary(),
                        };
                        self.summaries.insert(*address, s.clone());
                        self.stats.summaries_decoded.fetch_add(1, Ordering::Relaxed);
                        Some(s)
                    }
                    Ok(None) => None,
                    Err(e) => return ReplicaResponse::Error(e),
                },
            };
            out.push(
                entry
                    .filter(|s| s.members.contains(from))
                    .map(|s| s.summary),
            );
        }
        ReplicaResponse::Summaries {
            summaries: tigress_protocol::wire::BoundedVec::truncated(out),
        }
    }

    /// Removes expired mailboxes; returns whether anything was removed.
    fn sweep(&mut self, now: u64) -> bool {
        let mut removed = 0u64;
        let expired: Vec<Address> = self
            .books
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, v)| {
                let state = self.assemble(&k, &v).ok()?;
                let addr: [u8; 32] = k.as_ref().try_into().ok()?;
                state.is_sweepable(now).then_some(Address(addr))
            })
            .collect();
        for address in &expired {
            self.summaries.remove(address);
            self.remove_messages(address);
            self.geneses_seen.borrow_mut().remove(address);
            let genesis = self.geneses.remove(address.as_bytes()).ok().flatten();
            if let Ok(Some(old)) = self.books.remove(address.as_bytes()) {
                let freed = old.len() + genesis.map_or(0, |g| g.len());
                self.stats.bytes.fetch_sub(freed as u64, Ordering::Relaxed);
                self.stats.mailboxes.fetch_sub(1, Ordering::Relaxed);
                removed += 1;
            }
        }
        self.stats.sweeps.fetch_add(1, Ordering::Relaxed);
        self.stats.swept.store(removed, Ordering::Relaxed);
        if removed > 0 {
            tracing::info!(removed, "sweep removed expired mailboxes");
        }
        removed > 0
    }
}

impl replica::Storage for Actor {
    fn load(&self, address: &Address) -> Result<Option<MailboxState>, RemoteError> {
        match self.books.get(address.as_bytes()) {
            Ok(None) => Ok(None),
            Ok(Some(bytes)) => self
                .assemble(address.as_bytes(), &bytes)
                .map(Some)
                .map_err(|e| {
                    tracing::error!(address = %address.short(), error = %e, "stored state unreadable");
                    unavailable("stored state unreadable")
                }),
            Err(e) => Err(unavailable(format!("database read failed: {e}"))),
        }
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

    fn save(&mut self, state: &MailboxState) -> Result<(), RemoteError> {
        let address = state.address();
        self.summaries.remove(&address);
        let key = address.as_bytes();
        let failed = |e: sled::Error| unavailable(format!("database write failed: {e}"));
        let book = wire::encode_local(state.book()).map_err(|e| unavailable(e.to_string()))?;
        let mut added = book.len() as u64;
        // The genesis goes first, once: a book is never without its genesis.
        if !self.books.contains_key(key).map_err(failed)? {
            let genesis =
                wire::encode_local(state.genesis()).map_err(|e| unavailable(e.to_string()))?;
            added += genesis.len() as u64;
            self.geneses_seen.borrow_mut().remove(&address);
            if let Some(stale) = self.geneses.insert(key, genesis).map_err(failed)? {
                added = added.saturating_sub(stale.len() as u64);
            }
        }
        let previous = self.books.insert(key, book).map_err(failed)?;
        let old = previous.map_or(0, |p| p.len() as u64);
        if old == 0 {
            self.stats.mailboxes.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.bytes.fetch_add(added, Ordering::Relaxed);
        self.stats.bytes.fetch_sub(old, Ordering::Relaxed);
        Ok(())
    }

    fn remove_messages(&mut self, address: &Address) {
        self.summaries.remove(address);
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

    fn message(&self, address: &Address, key: &MessageKey) -> Result<Option<Message>, RemoteError> {
        match self.messages.get(message_key(address, key)) {
            Ok(Some(bytes)) => Message::from_bytes(&bytes).map(Some).map_err(|e| {
                tracing::error!(address = %address.short(), error = %e, "stored message unreadable");
                unavailable("stored message unreadable")
            }),
            Ok(None) => Ok(None),
            Err(e) => Err(unavailable(format!("database read failed: {e}"))),
        }
    }

    fn put_message(&mut self, message: &Message) -> Result<(), RemoteError> {
        let h = message.header();
        let bytes = message.to_bytes();
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;
    use tigress_protocol::record::ReadScope;
    use tigress_protocol::session::{SenderSession, ShareIdentity, ShareOptions};

    const T0: u64 = 1_800_000_000;

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
            T0,
            &mut rng,
        )
        .unwrap();
        s.genesis().clone()
    }

    /// A closed store has written what it acknowledged and let go of its directory
    /// while a handle on it is still held: the directory opens again in the same process
    /// with the mailbox in it, and the old handle is told the store stopped.
    #[tokio::test]
    async fn a_closed_store_lets_go_of_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let node = SigningKey::from_seed(&[3; 32]);
        let g = genesis(&node, 1, 3600);
        let open = || {
            Store::open(
                dir.path(),
                node.clone(),
                Limits::default(),
                1 << 20,
                Clock::manual(T0),
            )
        };
        let store = open().unwrap();
        let r = store
            .apply(ReplicaRequest::StoreGenesis { genesis: g.clone() })
            .await;
        assert!(matches!(r, ReplicaResponse::Stored { .. }), "{r:?}");
        store.close().await;
        let again = open().expect("the directory is free once the store is closed");
        let digest = again
            .apply(ReplicaRequest::Digest {
                address: g.header().address,
            })
            .await;
        assert!(
            matches!(&digest, ReplicaResponse::Digest(d) if d.genesis == g),
            "{digest:?}"
        );
        let late = store
            .apply(ReplicaRequest::Digest {
                address: g.header().address,
            })
            .await;
        assert!(
            matches!(&late, ReplicaResponse::Error(e) if e.code == ErrorCode::Unavailable),
            "{late:?}"
        );
    }

    #[tokio::test]
    async fn summaries_go_to_the_lineup_only_and_come_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let node = SigningKey::from_seed(&[3; 32]);
        let g = genesis(&node, 1, 3600);
        let store = Store::open(
            dir.path(),
            node.clone(),
            Limits::default(),
            1 << 20,
            Clock::manual(T0),
        )
        .unwrap();
        let r = store
            .apply(ReplicaRequest::StoreGenesis { genesis: g.clone() })
            .await;
        assert!(matches!(r, ReplicaResponse::Stored { .. }), "{r:?}");
        let address = g.header().address;
        let absent = Address([9; 32]);
        let ask = |from: Option<PublicKey>| {
            let store = store.clone();
            async move {
                store
                    .apply_from(
                        ReplicaRequest::Summaries {
                            addresses: tigress_protocol::wire::BoundedVec::truncated(vec![
                                address, absent,
                            ]),
                        },
                        from,
                    )
                    .await
            }
        };
        let stranger = SigningKey::from_seed(&[4; 32]).public_key();
        match ask(Some(stranger)).await {
            ReplicaResponse::Summaries { summaries } => {
                assert_eq!(summaries.to_vec(), vec![None, None]);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(ask(None).await, ReplicaResponse::Error(e) if e.code == ErrorCode::Unauthorized)
        );
        for _ in 0..3 {
            match ask(Some(node.public_key())).await {
                ReplicaResponse::Summaries { summaries } => {
                    assert!(summaries.to_vec()[0].is_some());
                    assert!(summaries.to_vec()[1].is_none());
                }
                other => panic!("{other:?}"),
            }
        }
        // Four requests, one state decoded.
        assert_eq!(store.stats().summaries_decoded.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn writes_survive_a_reopen_and_the_quota_refuses_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let node = SigningKey::from_seed(&[3; 32]);
        let g1 = genesis(&node, 1, 3600);
        // Room for one mailbox, not two.
        let quota = g1.to_bytes().len() as u64 * 3 / 2;
        let store = Store::open(
            dir.path(),
            node.clone(),
            Limits::default(),
            quota,
            Clock::manual(T0),
        )
        .unwrap();
        let r = store
            .apply(ReplicaRequest::StoreGenesis {
                genesis: g1.clone(),
            })
            .await;
        assert!(
            matches!(
                r,
                ReplicaResponse::Stored {
                    duplicate: false,
                    ..
                }
            ),
            "{r:?}"
        );
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
            match Store::open(
                dir.path(),
                node.clone(),
                Limits::default(),
                quota,
                Clock::manual(T0),
            ) {
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
        assert!(
            matches!(
                r,
                ReplicaResponse::Stored {
                    duplicate: true,
                    ..
                }
            ),
            "{r:?}"
        );
        assert_eq!(reopened.stats().mailboxes.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_database_of_the_first_layout_opens_with_its_mailboxes() {
        let dir = tempfile::tempdir().unwrap();
        let node = SigningKey::from_seed(&[5; 32]);
        let g1 = genesis(&node, 1, 3600);
        let address = g1.header().address;
        // The first layout: the whole state in tree `mailboxes`, and one that does not
        // decode.
        {
            let db = sled::Config::new().path(dir.path()).open().unwrap();
            let old = db.open_tree("mailboxes").unwrap();
            let state = MailboxState::create(g1.clone(), &Limits::default(), T0).unwrap();
            old.insert(address.as_bytes(), wire::encode_local(&state).unwrap())
                .unwrap();
            old.insert([9u8; 32], &b"not a state"[..]).unwrap();
            db.flush().unwrap();
        }
        let open = || {
            Store::open(
                dir.path(),
                node.clone(),
                Limits::default(),
                u64::MAX,
                Clock::manual(T0),
            )
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let store = loop {
            match open() {
                Ok(s) => break s,
                Err(e) => {
                    assert!(std::time::Instant::now() < deadline, "opening: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        };
        // The mailbox is there: its genesis again is a duplicate.
        let r = store
            .apply(ReplicaRequest::StoreGenesis {
                genesis: g1.clone(),
            })
            .await;
        assert!(
            matches!(
                r,
                ReplicaResponse::Stored {
                    duplicate: true,
                    ..
                }
            ),
            "{r:?}"
        );
        assert_eq!(store.stats().mailboxes.load(Ordering::Relaxed), 1);
        drop(store);
        // Moved: the genesis and the book apart; the undecodable state left as it was.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let db = loop {
            match sled::Config::new().path(dir.path()).open() {
                Ok(db) => break db,
                Err(e) => {
                    assert!(std::time::Instant::now() < deadline, "reopening: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        };
        let old = db.open_tree("mailboxes").unwrap();
        assert_eq!(old.len(), 1);
        assert!(old.get([9u8; 32]).unwrap().is_some());
        let genesis = db
            .open_tree("geneses")
            .unwrap()
            .get(address.as_bytes())
            .unwrap();
        assert_eq!(
            genesis.as_deref(),
            Some(wire::encode_local(&g1).unwrap().as_slice())
        );
        assert_eq!(db.open_tree("books").unwrap().len(), 1);
    }

    #[tokio::test]
    async fn the_sweep_removes_expired_mailboxes_only() {
        let node = SigningKey::from_seed(&[4; 32]);
        let clock = Clock::manual(T0);
        let store = Store::in_memory(node.clone(), Limits::default(), clock.clone()).unwrap();
        let short = genesis(&node, 5, 1);
        let long = genesis(&node, 6, 3600);
        for g in [&short, &long] {
            let r = store
                .apply(ReplicaRequest::StoreGenesis { genesis: g.clone() })
                .await;
            assert!(
                matches!(
                    r,
                    ReplicaResponse::Stored {
                        duplicate: false,
                        ..
                    }
                ),
                "{r:?}"
            );
        }
        // Nothing is due yet; once the clock passes the short one's expiry, it goes.
        assert_eq!(store.sweep().await, 0);
        clock.advance(1);
        assert_eq!(store.sweep().await, 1);
        assert_eq!(store.stats().mailboxes.load(Ordering::Relaxed), 1);
        let status = store
            .apply(ReplicaRequest::Status {
                address: long.header().address,
            })
            .await;
        assert!(matches!(status, ReplicaResponse::Status(_)));

        // Another genesis at the swept address is stored and read as itself, not as the
        // genesis the store had decoded there before.
        let again = genesis(&node, 5, 3600);
        assert_eq!(again.header().address, short.header().address);
        assert_ne!(again.digest(), short.digest());
        let r = store
            .apply(ReplicaRequest::StoreGenesis {
                genesis: again.clone(),
            })
            .await;
        assert!(matches!(r, ReplicaResponse::Stored { .. }), "{r:?}");
        let status = store
            .apply(ReplicaRequest::Status {
                address: again.header().address,
            })
            .await;
        let ReplicaResponse::Status(status) = status else {
            panic!("the new mailbox reads: {status:?}")
        };
        assert_eq!(status.expires_at, again.header().expires_at);
    }

    #[tokio::test]
    async fn expiry_and_the_read_window_follow_the_clock() {
        let node = SigningKey::from_seed(&[5; 32]);
        let clock = Clock::manual(T0);
        let store = Store::in_memory(node.clone(), Limits::default(), clock.clone()).unwrap();
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([9; 32]);
        let options = ShareOptions {
            ttl_secs: 3600,
            ..ShareOptions::default()
        };
        let (sender, _) = SenderSession::create(
            ShareIdentity::random(&mut rng),
            "https://relay.example",
            vec![node.public_key()],
            b"k",
            &options,
            T0,
            &mut rng,
        )
        .unwrap();
        let genesis = sender.genesis().clone();
        let r = store.apply(ReplicaRequest::StoreGenesis { genesis }).await;
        assert!(
            matches!(
                r,
                ReplicaResponse::Stored {
                    duplicate: false,
                    ..
                }
            ),
            "{r:?}"
        );
        let read = |at| ReplicaRequest::Read {
            request: sender.read_request(at, ReadScope::View),
        };
        let code = |r: ReplicaResponse| match r {
            ReplicaResponse::Error(e) => Some(e.code),
            _ => None,
        };
        // A read signed now is served; the same read ten minutes later is stale.
        assert!(matches!(
            store.apply(read(T0)).await,
            ReplicaResponse::View(_)
        ));
        clock.advance(600);
        assert_eq!(
            code(store.apply(read(T0)).await),
            Some(ErrorCode::Unauthorized)
        );
        assert!(matches!(
            store.apply(read(T0 + 600)).await,
            ReplicaResponse::View(_)
        ));
        // Past the expiry, everything is gone.
        clock.advance(3600);
        assert_eq!(
            code(store.apply(read(T0 + 4200)).await),
            Some(ErrorCode::Gone)
        );
    }
}
