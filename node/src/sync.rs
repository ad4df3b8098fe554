//! Anti-entropy: the replicas of a mailbox reconcile with each other, so a replica that was
//! down or partitioned catches up without any client. Every round, for each mailbox it
//! holds, a replica exchanges digests with the other replicas of the genesis set, pulls
//! what it lacks and pushes what they lack. Every record goes through the receiving
//! store's protocol checks, so a peer can offer nothing that a client could not.
//! Records go only to the mailbox's holders: the genesis's replicas, and the standbys that
//! took the place of replicas that left. A holder another holder has not reached for the
//! takeover time is handed over ([`AntiEntropy::take_over`]): this replica signs its
//! handover and sends it to the other holders; once a claim quorum agree, the takeover
//! is adopted and anti-entropy brings the mailbox to the standby.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tigress_protocol::Address;
use tigress_protocol::ErrorCode;
use tigress_protocol::crypto::PublicKey;
use tigress_protocol::reconcile::{self, Lacking};
use tigress_protocol::rpc::{MAX_SUMMARIES, ReplicaDigest, ReplicaRequest, ReplicaResponse};
use tigress_protocol::wire::BoundedVec;
use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::identity::peer_of;
use crate::metrics::Metrics;
use crate::network::NetworkHandle;
use crate::store::Store;

/// The most mailboxes reconciled at once.
const PARALLEL: usize = 8;

/// Where records are read from or written to.
#[derive(Clone, Copy)]
enum Side {
    Local,
    Peer(PublicKey),
}

/// The anti-entropy task of a replica.
pub struct AntiEntropy {
    me: PublicKey,
    store: Store,
    net: NetworkHandle,
    timeout: Duration,
    metrics: Arc<Metrics>,
    clock: Clock,
    takeover_after: u64,
    /// Since when (unix seconds) each peer has failed every anti-entropy call.
    unreachable: Mutex<HashMap<PublicKey, u64>>,
}

impl AntiEntropy {
    /// The task for the replica `me`.
    pub fn new(
        me: PublicKey,
        store: Store,
        net: NetworkHandle,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            me,
            store,
            net,
            timeout,
            metrics,
            clock: Clock::system(),
            takeover_after: u64::MAX,
            unreachable: Mutex::new(HashMap::new()),
        }
    }

    /// Hands over a holder that stayed unreachable for `after_secs` on `clock`.
    pub fn with_takeovers(mut self, clock: Clock, after_secs: u64) -> Self {
        self.clock = clock;
        self.takeover_after = after_secs;
        self
    }

    /// Notes whether `peer` answered.
    fn reached(&self, peer: PublicKey, answered: bool) {
        if let Ok(mut u) = self.unreachable.lock() {
            if answered {
                u.remove(&peer);
            } else {
                let now = self.clock.unix();
                u.entry(peer).or_insert(now);
            }
        }
    }

    /// The holders unreachable for the takeover time.
    fn gone(&self) -> Vec<PublicKey> {
        let now = self.clock.unix();
        self.unreachable
            .lock()
            .map(|u| {
                u.iter()
                    .filter(|(_, since)| now.saturating_sub(**since) >= self.takeover_after)
                    .map(|(k, _)| *k)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// For every mailbox this replica holds with a holder gone for the takeover time:
    /// signs (or re-sends) its handover to the other holders. A holder that completes a
    /// takeover adopts it, and anti-entropy carries it to the standby.
    pub async fn take_over(&self) {
        let gone = self.gone();
        if gone.is_empty() {
            return;
        }
        let mut handed = std::collections::BTreeSet::new();
        for (address, holders) in self.store.mailboxes().await {
            if !holders.contains(&self.me) {
                continue;
            }
            let Some(retiree) = holders.iter().find(|h| gone.contains(h)).copied() else {
                continue;
            };
            let ReplicaResponse::HandedOver { handover, takeover } = self
                .store
                .apply(ReplicaRequest::SignHandover { address, retiree })
                .await
            else {
                continue;
            };
            tracing::info!(
                mailbox = %address.short(),
                %retiree,
                "holder unreachable for the takeover time: handed over"
            );
            let mut sends: FuturesUnordered<_> = holders
                .iter()
                .filter(|h| **h != self.me && **h != retiree)
                .map(|h| {
                    self.call(
                        Side::Peer(*h),
                        ReplicaRequest::Handover {
                            handover: handover.clone(),
                        },
                    )
                })
                .collect();
            while sends.next().await.is_some() {}
            if takeover.is_some() {
                tracing::info!(mailbox = %address.short(), "takeover adopted");
            }
            handed.insert(address);
        }
        // Whoever completed a takeover: bring every holder (the standby first of all) up
        // to date now rather than next round.
        for (address, holders) in self.store.mailboxes().await {
            if handed.contains(&address) {
                self.sync_mailbox(address, &holders).await;
            }
        }
    }

    /// Runs a round every `every`, and a mailbox at once when nudged.
    pub async fn run(self, every: Duration, mut nudges: mpsc::Receiver<Address>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.round().await,
                Some(address) = nudges.recv() => {
                    if let Some((_, holders)) = self
                        .store
                        .mailboxes()
                        .await
                        .into_iter()
                        .find(|(a, _)| *a == address)
                    {
                        self.sync_mailbox(address, &holders).await;
                    }
                }
            }
        }
    }

    /// One pass over every mailbox held: per peer, the summaries of the mailboxes both
    /// should hold are compared in batches, and only mailboxes whose summaries differ are
    /// reconciled in full.
    pub async fn round(&self) {
        let started = Instant::now();
        let mailboxes = self.store.mailboxes().await;
        let count = mailboxes.len();
        let mut by_peer: std::collections::BTreeMap<PublicKey, Vec<Address>> = Default::default();
        for (address, replicas) in &mailboxes {
            for r in replicas.iter().filter(|r| **r != self.me) {
                by_peer.entry(*r).or_default().push(*address);
            }
        }
        // Only holders of mailboxes held now are watched (a retired peer is forgotten).
        if let Ok(mut u) = self.unreachable.lock() {
            u.retain(|peer, _| by_peer.contains_key(peer));
        }
        let mut work = futures::stream::iter(by_peer)
            .map(|(peer, addresses)| async move { self.sync_peer(peer, addresses).await })
            .buffer_unordered(PARALLEL);
        while work.next().await.is_some() {}
        self.take_over().await;
        self.metrics
            .anti_entropy_rounds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(
            mailboxes = count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "anti-entropy round"
        );
    }

    async fn summaries(&self, side: Side, addresses: &[Address]) -> Option<Vec<Option<[u8; 32]>>> {
        let request = ReplicaRequest::Summaries {
            addresses: BoundedVec::truncated(addresses.to_vec()),
        };
        match self.call(side, request).await? {
            ReplicaResponse::Summaries { summaries } if summaries.len() == addresses.len() => {
                Some(summaries.into_vec())
            }
            _ => None,
        }
    }

    async fn sync_peer(&self, peer: PublicKey, addresses: Vec<Address>) {
        for chunk in addresses.chunks(MAX_SUMMARIES) {
            let local = self.summaries(Side::Local, chunk).await;
            let remote = self.summaries(Side::Peer(peer), chunk).await;
            self.reached(peer, remote.is_some());
            let (Some(local), Some(remote)) = (local, remote) else {
                continue;
            };
            for ((address, mine), theirs) in chunk.iter().zip(local).zip(remote) {
                if reconcile::worth_comparing(mine, theirs) {
                    self.sync_with(*address, peer).await;
                }
            }
        }
    }

    async fn call(&self, side: Side, request: ReplicaRequest) -> Option<ReplicaResponse> {
        match side {
            Side::Local => Some(self.store.apply(request).await),
            Side::Peer(key) => {
                let peer = peer_of(&key)?;
                tokio::time::timeout(self.timeout, self.net.replica_request(peer, request))
                    .await
                    .ok()?
                    .ok()
            }
        }
    }

    async fn digest(&self, side: Side, address: Address) -> Result<Option<ReplicaDigest>, ()> {
        match self.call(side, ReplicaRequest::Digest { address }).await {
            Some(ReplicaResponse::Digest(d)) => Ok(Some(d)),
            Some(ReplicaResponse::Error(e)) if e.code == ErrorCode::NotFound => Ok(None),
            _ => Err(()),
        }
    }

    /// Reconciles one mailbox with every other replica of its set.
    pub async fn sync_mailbox(&self, address: Address, replicas: &[PublicKey]) {
        let mut peers: FuturesUnordered<_> = replicas
            .iter()
            .filter(|r| **r != self.me)
            .map(|peer| self.sync_with(address, *peer))
            .collect();
        while peers.next().await.is_some() {}
    }

    /// Reconciles one mailbox with one peer: pulls what this replica lacks, pushes what
    /// the peer lacks.
    async fn sync_with(&self, address: Address, peer: PublicKey) {
        let Ok(Some(local)) = self.digest(Side::Local, address).await else {
            return;
        };
        let side = Side::Peer(peer);
        if let Ok(remote) = self.digest(side, address).await {
            if let Some(remote) = &remote {
                let pull = reconcile::lacking(Some(&local), remote);
                self.copy(address, Side::Local, side, &pull).await;
            }
            let push = reconcile::lacking(remote.as_ref(), &local);
            self.copy(address, side, Side::Local, &push).await;
        }
    }

    /// Copies to `target` what it lacks, reading message bytes from `source`.
    async fn copy(&self, address: Address, target: Side, source: Side, lacking: &Lacking) {
        if lacking.is_empty() {
            return;
        }
        let mut copied = 0u64;
        let (before, after) = lacking.requests();
        let mut send = async |request: ReplicaRequest| {
            if matches!(
                self.call(target, request).await,
                Some(ReplicaResponse::Stored {
                    duplicate: false,
                    ..
                })
            ) {
                copied += 1;
            }
        };
        for request in before {
            send(request).await;
        }
        for keys in lacking.message_batches() {
            if let Some(ReplicaResponse::Messages { messages }) = self
                .call(source, ReplicaRequest::GetMessages { address, keys })
                .await
            {
                for message in messages.into_vec() {
                    send(ReplicaRequest::StoreMessage { message }).await;
                }
            }
        }
        for request in after {
            send(request).await;
        }
        if copied > 0 {
            self.metrics
                .anti_entropy_repaired
                .fetch_add(copied, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(mailbox = %address.short(), copied, "anti-entropy repaired records");
        }
    }
}
