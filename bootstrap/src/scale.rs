//! `tigress-cluster scale`: an in-process network of N relays, a fraction of which leaves
//! and rejoins every minute, measured from inside while users transfer through it.
//!
//! What is measured:
//!
//! - **Lookups.** From a random running node, for a random address: a Kademlia lookup as
//!   the node runs it (libp2p's query; its `QueryStats` give the requests it sent), whether
//!   the R nearest it finds are the R nearest running relays (`lookup_success`), and
//!   whether a second random node names the same R (`placement_agreement`: the two
//!   entries would place and find a mailbox on the same replicas).
//! - **Hops.** libp2p's query keeps α requests in flight and does not count rounds, so
//!   each sampled lookup is also traced round by round over the same routing tables: a
//!   round asks the α nearest peers not yet asked (each answers with the k nearest of its
//!   own routing table, exactly what it answers a Kademlia request with); the lookup ends
//!   when the k nearest known have all been asked. A lookup's hops are the rounds until
//!   its R nearest stopped changing (at least one: a lookup asks before it trusts).
//! - **Transfers.** Writers share, accept (the claim and the first payload) and send a
//!   message, each step through a random running node, through the client library; a
//!   step that fails is tried again through another node, at most three times, as a user
//!   would. A transfer succeeds when all three did.
//! - **Mailboxes lost.** At the end the recipient of every share reads it: the payload of
//!   every acknowledged share and every acknowledged message must arrive, through a
//!   running node (as in the crash soak); that is when each transfer's message is
//!   received. What cannot be read while the nodes then away are still away is counted
//!   (`writes_unavailable`: a replica set missing a majority cannot answer), then those
//!   nodes come back, as churn has them do, and it is read again: a write still
//!   unreadable then is lost.
//!
//! Churn: every `60 / (P·N)` seconds a random running node (never node 0, the seed) leaves
//! (a graceful shutdown) and comes back with its identity and data 30 s later.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use tigress_client::{Client, StateDir};
use tigress_node::Node;
use tigress_protocol::Address;
use tigress_protocol::crypto::PublicKey;
use tigress_protocol::session::ShareOptions;

use crate::cluster::Cluster;
use crate::soak::{Dice, READ_PATIENCE, Written, read_back};

/// Kademlia's parallelism (α) and bucket size (k), as the nodes run them.
const ALPHA: usize = 3;
const K: usize = 20;
/// How long a node that left stays away.
const AWAY: Duration = Duration::from_secs(30);
/// Attempts per transfer step.
const ATTEMPTS: usize = 3;

/// What a scale run does.
#[derive(Debug, Clone)]
pub struct ScaleOptions {
    /// Relays in the network.
    pub nodes: usize,
    /// The fraction of the nodes that leaves (and rejoins) per minute.
    pub churn: f64,
    /// Wall-clock minutes of transfers and lookups.
    pub minutes: f64,
    /// The replication factor.
    pub replication: u8,
    /// Transfers at a time.
    pub writers: usize,
    /// Seed for the choice of leaving nodes, entries and addresses.
    pub seed: u64,
}

/// What a scale run found.
#[derive(Debug, Clone, Default)]
pub struct ScaleReport {
    /// Relays.
    pub nodes: usize,
    /// Churn per minute.
    pub churn: f64,
    /// Minutes run.
    pub minutes: f64,
    /// Hops of each traced lookup.
    pub hops: Vec<u32>,
    /// Requests of each traced lookup.
    pub traced_requests: Vec<u32>,
    /// Requests of each libp2p lookup (its `QueryStats`).
    pub requests: Vec<u32>,
    /// libp2p lookups that found the R nearest running relays.
    pub lookups_ok: usize,
    /// Pairs of entries asked to place an address, and how many named the same R.
    pub placements: usize,
    /// Of `placements`, those that agreed.
    pub placements_agreed: usize,
    /// Transfers begun and completed.
    pub transfers: usize,
    /// Of `transfers`, those completed.
    pub transfers_ok: usize,
    /// Steps that needed another attempt.
    pub retries: usize,
    /// Claim (accept) latencies.
    pub claims: Vec<Duration>,
    /// Acknowledged writes (shares and messages).
    pub writes_acked: usize,
    /// Acknowledged writes that could not be read at the end, with the nodes then away
    /// still away.
    pub writes_unavailable: usize,
    /// Acknowledged writes that could not be read at the end, even with every node back.
    pub writes_lost: usize,
    /// Mailboxes with at least one acknowledged write unreadable even with every node
    /// back.
    pub mailboxes_lost: usize,
    /// Nodes that left (each came back after 30 s, unless the run ended first).
    pub departures: usize,
    /// Seconds from start to ready.
    pub ready_s: f64,
}

/// What reading back every acknowledged write came to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadBack {
    /// Writes not read with the nodes then away still away.
    pub(crate) unavailable: usize,
    /// Writes still not read with every node back.
    pub(crate) lost: usize,
    /// Shares with a write still not read with every node back.
    pub(crate) mailboxes_lost: usize,
}

/// Reads back every acknowledged write of `written` through the running nodes of
/// `cluster`: first with the nodes of `away` still away (what a user could read at that
/// moment), then, once they are back (each after its shutdown in progress ends), what
/// was not read, again. A write still unreadable then is lost. Each pass retries a share
/// for up to its `patience`.
pub(crate) async fn read_twice(
    cluster: &mut Cluster,
    written: &[(usize, Written)],
    away: Vec<(usize, tokio::task::JoinHandle<()>)>,
    clients: &std::path::Path,
    patience: [Duration; 2],
) -> anyhow::Result<ReadBack> {
    let mut read = ReadBack::default();
    let addrs: Vec<Multiaddr> = (0..cluster.len()).filter_map(|i| cluster.addr(i)).collect();
    let missing = read_back(written, &addrs, clients, patience[0]).await;
    read.unavailable = missing.iter().map(Written::unread).sum();
    for (node, shutdown) in away {
        let _ = shutdown.await;
        cluster.restart(node).await?;
    }
    let again: Vec<(usize, Written)> = written
        .iter()
        .zip(missing)
        .filter(|(_, unread)| unread.unread() > 0)
        .map(|((w, _), unread)| (*w, unread))
        .collect();
    if !again.is_empty() {
        tracing::info!(
            shares = again.len(),
            "scale: reading again, with every node back, what was not read"
        );
        let addrs: Vec<Multiaddr> = (0..cluster.len()).filter_map(|i| cluster.addr(i)).collect();
        let lost = read_back(&again, &addrs, clients, patience[1]).await;
        read.lost = lost.iter().map(Written::unread).sum();
        read.mailboxes_lost = lost.iter().filter(|one| one.unread() > 0).count();
    }
    Ok(read)
}

fn quantile<T: Copy + Ord + Default>(v: &[T], q: f64) -> T {
    let mut v = v.to_vec();
    v.sort_unstable();
    let i = ((v.len().saturating_sub(1)) as f64 * q).round() as usize;
    v.get(i).copied().unwrap_or_default()
}

fn fraction(n: usize, of: usize) -> f64 {
    if of == 0 { 0.0 } else { n as f64 / of as f64 }
}

fn mean(v: &[u32]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().map(|x| f64::from(*x)).sum::<f64>() / v.len() as f64
    }
}

impl ScaleReport {
    /// The result line.
    pub fn line(&self) -> String {
        format!(
            "scale nodes={} churn={} minutes={} lookups={} hops_p50={} hops_p99={} lookup_success={:.4} placement_agreement={:.4} transfers={} transfer_success={:.4} claim_p99_ms={:.1} mailboxes_lost={}",
            self.nodes,
            self.churn,
            self.minutes,
            self.requests.len(),
            quantile(&self.hops, 0.5),
            quantile(&self.hops, 0.99),
            fraction(self.lookups_ok, self.requests.len()),
            fraction(self.placements_agreed, self.placements),
            self.transfers,
            fraction(self.transfers_ok, self.transfers),
            quantile(&self.claims, 0.99).as_secs_f64() * 1000.0,
            self.mailboxes_lost,
        )
    }

    /// What the line leaves out: the cost of lookups, retries, writes, churn.
    pub fn detail(&self) -> String {
        format!(
            "scale-detail requests_per_lookup_p50={} requests_per_lookup_mean={:.1} traced_requests_mean={:.1} hops_max={} claim_p50_ms={:.1} retries={} writes_acked={} writes_unavailable={} writes_lost={} departures={} ready_s={:.0}",
            quantile(&self.requests, 0.5),
            mean(&self.requests),
            mean(&self.traced_requests),
            self.hops.iter().max().copied().unwrap_or(0),
            quantile(&self.claims, 0.5).as_secs_f64() * 1000.0,
            self.retries,
            self.writes_acked,
            self.writes_unavailable,
            self.writes_lost,
            self.departures,
            self.ready_s,
        )
    }
}

/// The running nodes' dial addresses, by index, for the writers.
type Live = Arc<Mutex<Vec<Option<Multiaddr>>>>;

fn random_live(live: &Live, dice: &mut Dice) -> Option<Multiaddr> {
    let up: Vec<Multiaddr> = live
        .lock()
        .map(|l| l.iter().flatten().cloned().collect())
        .unwrap_or_default();
    up.get(dice.below(up.len())).cloned()
}

/// A client of a random running node with the state directory `state`.
async fn entry(live: &Live, dice: &mut Dice, state: &Path) -> Option<Client> {
    let Some(addr) = random_live(live, dice) else {
        tokio::time::sleep(Duration::from_millis(100)).await;
        return None;
    };
    let dir = StateDir::open(state).ok()?;
    Client::connect_direct(&addr, dir).await.ok()
}

/// One step of a transfer, `$step` on a client of a random running node, tried through
/// up to [`ATTEMPTS`] nodes; `Some` of what it returned, or `None`.
/// A step that fails through every node tried is logged with its last error.
macro_rules! attempt {
    ($what:literal, $live:expr, $dice:expr, $state:expr, $retries:expr, |$client:ident| $step:expr) => {{
        let mut out = None;
        let mut last = String::from("no running node to enter at");
        for n in 0..ATTEMPTS {
            if n > 0 {
                $retries.fetch_add(1, Ordering::Relaxed);
            }
            let Some($client) = entry($live, $dice, $state).await else {
                continue;
            };
            match $step.await {
                Ok(v) => {
                    out = Some(v);
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        if out.is_none() {
            tracing::info!(step = $what, error = %last, "scale: a transfer step failed at every entry tried");
        }
        out
    }};
}

/// What one writer did.
#[derive(Default)]
struct Writes {
    written: Vec<Written>,
    transfers: usize,
    transfers_ok: usize,
    claims: Vec<Duration>,
}

/// Transfers until `stop`: share, accept, one message from the sender.
async fn writer(
    w: usize,
    dir: PathBuf,
    live: Live,
    stop: Arc<AtomicBool>,
    retries: Arc<AtomicUsize>,
    seed: u64,
) -> Writes {
    let (alice, bob) = (dir.join(format!("alice-{w}")), dir.join(format!("bob-{w}")));
    let mut dice = Dice(seed ^ (w as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut out = Writes::default();
    while !stop.load(Ordering::Relaxed) {
        out.transfers += 1;
        let payload = format!("share {} of writer {w}", out.transfers).into_bytes();
        let Some(shared) = attempt!("share", &live, &mut dice, &alice, retries, |c| c.share(
            &payload,
            &ShareOptions::default(),
            None
        )) else {
            continue;
        };
        let mut written = Written {
            url: shared.url.clone(),
            payload: payload.clone(),
            accepted: false,
            messages: Vec::new(),
        };
        let started = Instant::now();
        let got = attempt!("accept", &live, &mut dice, &bob, retries, |c| c
            .accept(&shared.url));
        if got.as_ref() == Some(&payload) {
            out.claims.push(started.elapsed());
            written.accepted = true;
            let message = format!("message of share {} of writer {w}", out.transfers);
            let sent = attempt!("send", &live, &mut dice, &alice, retries, |c| c.send(
                &shared.share_id,
                message.as_bytes(),
                None
            ));
            if sent.is_some() {
                written.messages.push(message.into_bytes());
                out.transfers_ok += 1;
            }
        }
        out.written.push(written);
    }
    out
}

/// A lookup traced round by round over the running nodes' routing tables (see the module
/// documentation): (hops, requests).
async fn traced(
    nodes: &HashMap<PeerId, &Node>,
    entry: &Node,
    address: &Address,
    r: usize,
) -> (u32, u32) {
    let distance = |p: &PeerId| {
        tigress_client::oblivious::key_of(p)
            .map(|k| tigress_protocol::placement::distance(&k, address))
    };
    let mut known: BTreeMap<[u8; 32], PeerId> = BTreeMap::new();
    for p in entry.closest_local(address, K).await {
        if let Some(d) = distance(&p) {
            known.insert(d, p);
        }
    }
    let nearest = |known: &BTreeMap<[u8; 32], PeerId>| -> Vec<PeerId> {
        known.values().take(r).copied().collect()
    };
    let mut asked: HashSet<PeerId> = HashSet::new();
    let mut best = nearest(&known);
    let (mut round, mut settled, mut requests) = (0u32, 0u32, 0u32);
    loop {
        let next: Vec<PeerId> = known
            .values()
            .take(K)
            .filter(|p| !asked.contains(*p))
            .take(ALPHA)
            .copied()
            .collect();
        if next.is_empty() {
            break;
        }
        round += 1;
        for p in next {
            asked.insert(p);
            requests += 1;
            // A node that left does not answer; it is dropped from the candidates.
            let Some(node) = nodes.get(&p) else {
                known.retain(|_, q| *q != p);
                continue;
            };
            for q in node.closest_local(address, K).await {
                if q != entry.peer_id()
                    && let Some(d) = distance(&q)
                {
                    known.insert(d, q);
                }
            }
        }
        let now = nearest(&known);
        if now != best {
            best = now;
            settled = round;
        }
    }
    (settled.max(1), requests)
}

fn same(a: &[PublicKey], b: &[PublicKey]) -> bool {
    a.len() == b.len() && a.iter().all(|k| b.contains(k))
}

/// One sampled lookup from a random running node; adds to `report`. A lookup succeeds
/// when it finds the R nearest running relays (or, while nodes are shutting down, the R
/// nearest of the running ones and those).
async fn sample(
    cluster: &Cluster,
    leaving: &[PeerId],
    report: &mut ScaleReport,
    dice: &mut Dice,
    r: usize,
) {
    let running: Vec<&Node> = (0..cluster.len()).filter_map(|i| cluster.node(i)).collect();
    if running.len() < 2 {
        return;
    }
    let by_peer: HashMap<PeerId, &Node> = running.iter().map(|n| (n.peer_id(), *n)).collect();
    let peers: Vec<PeerId> = by_peer.keys().copied().collect();
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&dice.next().to_le_bytes());
    }
    let address = Address(bytes);
    let (Some(entry), Some(other)) = (
        running.get(dice.below(running.len())).copied(),
        running.get(dice.below(running.len())).copied(),
    ) else {
        return;
    };
    let want = tigress_node::entry::nearest(peers.clone(), &address, r);
    // A node still shutting down is still in the network: naming it is right too.
    let want_with_leaving = (!leaving.is_empty()).then(|| {
        let mut all = peers;
        all.extend_from_slice(leaving);
        tigress_node::entry::nearest(all, &address, r)
    });
    let lookup = entry.lookup(&address).await;
    let mut found = lookup.peers.clone();
    found.push(entry.peer_id());
    let found = tigress_node::entry::nearest(found, &address, r);
    report.requests.push(lookup.requests);
    let right = same(&found, &want) || want_with_leaving.is_some_and(|w| same(&found, &w));
    report.lookups_ok += usize::from(right);
    if !right {
        let missing = want.iter().filter(|k| !found.contains(k)).count();
        let extra = found.iter().filter(|k| !want.contains(k)).count();
        tracing::info!(
            missing,
            extra,
            requests = lookup.requests,
            failures = lookup.failures,
            completed = lookup.completed,
            "scale: a lookup missed"
        );
    }
    let placed = other.locate(&address, r).await;
    report.placements += 1;
    report.placements_agreed += usize::from(same(&found, &placed));
    let (hops, requests) = traced(&by_peer, entry, &address, r).await;
    report.hops.push(hops);
    report.traced_requests.push(requests);
}

/// Runs a scale measurement on an in-process network in `dir`.
pub async fn run(opts: &ScaleOptions, dir: &Path) -> anyhow::Result<ScaleReport> {
    anyhow::ensure!(opts.nodes >= 2, "--nodes must be at least 2");
    anyhow::ensure!(
        (0.0..=1.0).contains(&opts.churn),
        "--churn is a fraction of the nodes per minute, in [0, 1]"
    );
    anyhow::ensure!(opts.minutes > 0.0, "--minutes must be positive");
    let started = Instant::now();
    let replication = opts.replication;
    let mut cluster = Cluster::start_under(&dir.join("nodes"), opts.nodes, move |_, c| {
        c.replication = replication;
        crate::cluster::large(c);
    })
    .await?;
    tracing::info!(
        nodes = opts.nodes,
        seconds = started.elapsed().as_secs(),
        "scale: ready"
    );
    let mut report = ScaleReport {
        nodes: opts.nodes,
        churn: opts.churn,
        minutes: opts.minutes,
        ready_s: started.elapsed().as_secs_f64(),
        ..ScaleReport::default()
    };
    let live: Live = Arc::new(Mutex::new(
        (0..cluster.len()).map(|i| cluster.addr(i)).collect(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let retries = Arc::new(AtomicUsize::new(0));
    let clients = dir.join("clients");
    let writers: Vec<_> = (0..opts.writers.max(1))
        .map(|w| {
            tokio::spawn(writer(
                w,
                clients.clone(),
                live.clone(),
                stop.clone(),
                retries.clone(),
                opts.seed,
            ))
        })
        .collect();

    let mut dice = Dice(opts.seed | 1);
    let r = usize::from(opts.replication);
    let end = Instant::now() + Duration::from_secs_f64(opts.minutes * 60.0);
    let per_minute = opts.churn * opts.nodes as f64;
    let every = (per_minute > 0.0).then(|| Duration::from_secs_f64(60.0 / per_minute));
    let mut next_departure = every.map(|e| Instant::now() + e);
    // Nodes away, with when they come back and their shutdown in progress.
    let mut away: Vec<(usize, Instant, tokio::task::JoinHandle<()>, PeerId)> = Vec::new();
    while Instant::now() < end {
        let now = Instant::now();
        // Nodes whose time away is over come back.
        let mut i = 0;
        while let Some((node, back, _, _)) = away.get(i) {
            if *back <= now {
                let (node, _, shutdown, _) = away.swap_remove(i);
                let _ = shutdown.await;
                cluster.restart(node).await?;
                if let Ok(mut l) = live.lock()
                    && let Some(slot) = l.get_mut(node)
                {
                    *slot = cluster.addr(node);
                }
            } else {
                let _ = node;
                i += 1;
            }
        }
        if let (Some(at), Some(every)) = (next_departure, every)
            && at <= now
        {
            next_departure = Some(at + every);
            let candidates: Vec<usize> = (1..cluster.len())
                .filter(|i| cluster.node(*i).is_some())
                .collect();
            if let Some(&leaving) = candidates.get(dice.below(candidates.len())) {
                if let Ok(mut l) = live.lock()
                    && let Some(slot) = l.get_mut(leaving)
                {
                    *slot = None;
                }
                if let Some(node) = cluster.take(leaving) {
                    report.departures += 1;
                    let peer = node.peer_id();
                    away.push((leaving, now + AWAY, tokio::spawn(node.shutdown()), peer));
                }
            }
        }
        // Nodes still shutting down answer until they stop: a lookup may name them.
        let leaving: Vec<PeerId> = away
            .iter()
            .filter(|(_, _, shutdown, _)| !shutdown.is_finished())
            .map(|(_, _, _, peer)| *peer)
            .collect();
        sample(&cluster, &leaving, &mut report, &mut dice, r).await;
        if report.requests.len().is_multiple_of(100) {
            tracing::info!(
                lookups = report.requests.len(),
                lookups_ok = report.lookups_ok,
                departures = report.departures,
                away = away.len(),
                "scale: sampling"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut written: Vec<(usize, Written)> = Vec::new();
    for (w, task) in writers.into_iter().enumerate() {
        let writes = task.await?;
        report.transfers += writes.transfers;
        report.transfers_ok += writes.transfers_ok;
        report.claims.extend(writes.claims);
        written.extend(writes.written.into_iter().map(|one| (w, one)));
    }
    report.retries = retries.load(Ordering::Relaxed);
    report.writes_acked = written.iter().map(|(_, one)| 1 + one.messages.len()).sum();
    let away = away
        .into_iter()
        .map(|(node, _, shutdown, _)| (node, shutdown))
        .collect();
    let patience = [READ_PATIENCE; 2];
    let read = read_twice(&mut cluster, &written, away, &clients, patience).await?;
    report.writes_unavailable = read.unavailable;
    report.writes_lost = read.lost;
    report.mailboxes_lost = read.mailboxes_lost;
    cluster.shutdown().await;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tigress_client::{Client, Party, StateDir};
    use tigress_protocol::session::ShareOptions;

    /// A share whose holders are all away cannot be read in the first pass and is read in
    /// the second, once they are back; one that cannot be read even then (its recipient
    /// expects another payload) is lost. (Two shares: two recipients of one share would
    /// race for its one recipient's place.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_share_unreadable_while_its_holders_are_away_is_read_once_they_are_back() {
        let mut cluster = Cluster::start(6, |_, c| {
            c.replication = 3;
            c.standbys = 0;
        })
        .await
        .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let clients = tmp.path().join("clients");
        let alice_dir = tmp.path().join("alice");
        let alice = Client::connect_direct(
            &cluster.addr(0).unwrap(),
            StateDir::open(&alice_dir).unwrap(),
        )
        .await
        .unwrap();
        let payload = b"garage door".to_vec();
        let shared = alice
            .share(&payload, &ShareOptions::default(), None)
            .await
            .unwrap();
        let other = alice
            .share(b"shed", &ShareOptions::default(), None)
            .await
            .unwrap();
        let Party::Sender(sender) = alice.state().load(&shared.share_id).unwrap().party else {
            panic!("the sharer is the sender")
        };
        let holders: Vec<usize> = sender
            .genesis()
            .header()
            .lineup()
            .members()
            .iter()
            .map(|m| {
                (0..cluster.len())
                    .find(|i| cluster.node(*i).unwrap().identity().public_key() == *m)
                    .unwrap()
            })
            .collect();
        assert_eq!(holders.len(), 3);
        let url = |s: &tigress_protocol::ShareUrl| {
            tigress_protocol::ShareUrl::parse(&s.expose_url()).unwrap()
        };
        let written = vec![
            (
                0,
                Written {
                    url: url(&shared.url),
                    payload: payload.clone(),
                    accepted: false,
                    messages: Vec::new(),
                },
            ),
            (
                1,
                Written {
                    url: url(&other.url),
                    payload: b"not what was shared".to_vec(),
                    accepted: false,
                    messages: Vec::new(),
                },
            ),
        ];
        let away = holders
            .iter()
            .map(|i| {
                let node = cluster.take(*i).unwrap();
                (*i, tokio::spawn(node.shutdown()))
            })
            .collect();
        let patience = [Duration::from_secs(2), READ_PATIENCE];
        let read = read_twice(&mut cluster, &written, away, &clients, patience)
            .await
            .unwrap();
        assert_eq!(
            read,
            ReadBack {
                unavailable: 2,
                lost: 1,
                mailboxes_lost: 1,
            }
        );
        cluster.shutdown().await;
    }
}
