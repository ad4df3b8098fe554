//! The crash soak: writers create shares and send messages through random live nodes of
//! a process cluster while nodes are killed with SIGKILL (sometimes two at once) and
//! restarted; at the end every write a writer saw acknowledged must be readable.
//!
//! A write counts as acknowledged when the client library returned success for it: the
//! share's create (its payload must reach the recipient) and each message the sender
//! sent after the recipient accepted (it must be among what the recipient receives).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use tigress_client::{Client, StateDir};
use tigress_protocol::ShareUrl;
use tigress_protocol::session::ShareOptions;

use crate::process::{ProcessCluster, UpOptions};

/// What a soak runs.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Kill-and-restart cycles.
    pub cycles: usize,
    /// Writers at a time.
    pub writers: usize,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// The replication factor (killing two at once needs at least 5 for a majority).
    pub replication: u8,
    /// The tigress-node binary.
    pub node_bin: PathBuf,
    /// A seed for the choice of victims and pauses.
    pub seed: u64,
}

/// What a soak found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoakReport {
    /// Cycles run.
    pub cycles: usize,
    /// Writers.
    pub writers: usize,
    /// Writes acknowledged.
    pub writes_acked: usize,
    /// Acknowledged writes that could not be read at the end.
    pub writes_lost: usize,
    /// Wall-clock seconds.
    pub seconds: u64,
}

impl SoakReport {
    /// `soak cycles=N writers=W writes_acked=A writes_lost=L seconds=S`.
    pub fn line(&self) -> String {
        format!(
            "soak cycles={} writers={} writes_acked={} writes_lost={} seconds={}",
            self.cycles, self.writers, self.writes_acked, self.writes_lost, self.seconds
        )
    }
}

/// One share a writer made: its invitation, payload, and the messages acknowledged.
#[derive(Clone)]
pub(crate) struct Written {
    pub(crate) url: ShareUrl,
    pub(crate) payload: Vec<u8>,
    /// Whether the recipient accepted during the run (else it accepts at the end).
    pub(crate) accepted: bool,
    pub(crate) messages: Vec<Vec<u8>>,
}

impl Written {
    /// What of it is yet to be read: nothing once the payload was read and no message is
    /// left.
    pub(crate) fn unread(&self) -> usize {
        usize::from(!self.accepted) + self.messages.len()
    }

    /// All of it, payload included, as not read.
    fn none_read(&self) -> Self {
        Self {
            accepted: false,
            ..self.clone()
        }
    }
}

/// A tiny deterministic generator (xorshift) for victims and pauses.
pub(crate) struct Dice(pub(crate) u64);

impl Dice {
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }
}

/// The nodes a writer may use now.
type Live = Arc<Mutex<Vec<bool>>>;

fn pick(live: &Live, addrs: &[Multiaddr], salt: u64) -> Option<Multiaddr> {
    let up: Vec<usize> = live
        .lock()
        .map(|l| {
            l.iter()
                .enumerate()
                .filter(|(_, up)| **up)
                .map(|(i, _)| i)
                .collect()
        })
        .unwrap_or_default();
    let n = up.len();
    let i = *up.get(usize::try_from(salt % u64::try_from(n.max(1)).ok()?).ok()?)?;
    addrs.get(i).cloned()
}

async fn client(addr: &Multiaddr, state: &std::path::Path) -> Option<Client> {
    let state = StateDir::open(state).ok()?;
    Client::connect_direct(addr, state).await.ok()
}

/// One writer: shares, the recipient's acceptance, messages, until `stop`.
async fn writer(
    w: usize,
    dir: PathBuf,
    addrs: Vec<Multiaddr>,
    live: Live,
    stop: Arc<AtomicBool>,
) -> Vec<Written> {
    let (alice_dir, bob_dir) = (dir.join(format!("alice-{w}")), dir.join(format!("bob-{w}")));
    let mut out: Vec<Written> = Vec::new();
    let mut salt = u64::try_from(w).unwrap_or(0).wrapping_mul(7919);
    let mut next = || {
        salt = salt.wrapping_add(0x9E37_79B9_7F4A_7C15);
        salt >> 16
    };
    while !stop.load(Ordering::Relaxed) {
        let Some(addr) = pick(&live, &addrs, next()) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let payload = format!("share {} of writer {w}", out.len()).into_bytes();
        let Some(alice) = client(&addr, &alice_dir).await else {
            continue;
        };
        let Ok(shared) = alice.share(&payload, &ShareOptions::default(), None).await else {
            continue;
        };
        let mut written = Written {
            url: shared.url.clone(),
            payload: payload.clone(),
            accepted: false,
            messages: Vec::new(),
        };
        let bob_addr = pick(&live, &addrs, next()).unwrap_or(addr.clone());
        if let Some(bob) = client(&bob_addr, &bob_dir).await
            && let Ok(got) = bob.accept(&shared.url).await
        {
            written.accepted = got == payload;
        }
        if written.accepted {
            for k in 0..5 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let message = format!("message {k} of share {} of writer {w}", out.len());
                let Some(addr) = pick(&live, &addrs, next()) else {
                    break;
                };
                let Some(alice) = client(&addr, &alice_dir).await else {
                    continue;
                };
                if alice
                    .send(&shared.share_id, message.as_bytes(), None)
                    .await
                    .is_ok()
                {
                    written.messages.push(message.into_bytes());
                }
            }
        }
        out.push(written);
    }
    out
}

/// What of `written`'s acknowledged writes the recipient cannot read, asking node `addr`
/// (retried until `deadline`: restarted nodes may still be catching up): all of it when
/// the payload cannot be read, else the messages not received.
async fn lost(
    written: &Written,
    bob_dir: &std::path::Path,
    addr: &Multiaddr,
    deadline: Instant,
) -> Written {
    let id = written.url.mailbox_id();
    let address = id.address().short();
    let Some(bob) = client(addr, bob_dir).await else {
        tracing::warn!(%address, %addr, "read-back: no client connection to read with");
        return written.none_read();
    };
    // The share's payload.
    if !written.accepted {
        loop {
            let error = match bob.accept(&written.url).await {
                Ok(p) if p == written.payload => break,
                Ok(_) => "another payload".to_owned(),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                tracing::warn!(%address, %addr, %error, "read-back: an acknowledged share was not read");
                return written.none_read();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Every acknowledged message, in what the recipient receives.
    let mut received: Vec<Vec<u8>> = Vec::new();
    loop {
        let error = match bob.recv(&id, Duration::ZERO).await {
            Ok(r) => {
                received.extend(r.messages.into_iter().map(|m| m.plaintext));
                None
            }
            Err(e) => Some(e.to_string()),
        };
        let absent: Vec<Vec<u8>> = written
            .messages
            .iter()
            .filter(|m| !received.contains(m))
            .cloned()
            .collect();
        if absent.is_empty() || Instant::now() >= deadline {
            if !absent.is_empty() {
                tracing::warn!(
                    %address,
                    %addr,
                    absent = absent.len(),
                    error = error.as_deref().unwrap_or("none; the messages were not among those fetched"),
                    "read-back: acknowledged messages were not read"
                );
            }
            return Written {
                accepted: true,
                messages: absent,
                ..written.clone()
            };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How long a read-back retries a share while something is missing (restarted nodes may
/// still be catching up).
pub(crate) const READ_PATIENCE: Duration = Duration::from_secs(30);

/// Every acknowledged write of `written` (with its writer's index), read back by its
/// recipient (state in `clients/bob-W`) through `addrs` in turn: sixteen shares at a
/// time, each retried for up to `patience` while something is missing. Returns, per
/// share, what of it could not be read.
pub(crate) async fn read_back(
    written: &[(usize, Written)],
    addrs: &[Multiaddr],
    clients: &std::path::Path,
    patience: Duration,
) -> Vec<Written> {
    use futures::StreamExt as _;
    futures::stream::iter(written.iter().enumerate())
        .map(|(i, (w, one))| {
            let addr = addrs.get(i % addrs.len().max(1)).cloned();
            let bob_dir = clients.join(format!("bob-{w}"));
            async move {
                match addr {
                    Some(addr) => {
                        let deadline = Instant::now() + patience;
                        lost(one, &bob_dir, &addr, deadline).await
                    }
                    None => one.none_read(),
                }
            }
        })
        .buffered(16)
        .collect()
        .await
}

/// Runs a soak on a throwaway cluster in `dir`.
pub async fn run(opts: &SoakOptions, dir: &std::path::Path) -> anyhow::Result<SoakReport> {
    let started = Instant::now();
    let mut cluster = ProcessCluster::up(&UpOptions {
        nodes: opts.nodes,
        dir: dir.join("cluster"),
        base_port: None,
        replication: opts.replication,
        node_bin: opts.node_bin.clone(),
        extra_args: Vec::new(),
        liars: None,
    })
    .await?;
    let addrs: Vec<Multiaddr> = cluster
        .file()
        .nodes
        .iter()
        .map(|n| n.multiaddr.parse())
        .collect::<Result<_, _>>()?;
    let live: Live = Arc::new(Mutex::new(vec![true; addrs.len()]));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..opts.writers)
        .map(|w| {
            tokio::spawn(writer(
                w,
                dir.join("clients"),
                addrs.clone(),
                live.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let mut dice = Dice(opts.seed | 1);
    // At most a minority of the replicas down at once.
    let most = (usize::from(opts.replication).saturating_sub(1) / 2).clamp(1, 2);
    for cycle in 0..opts.cycles {
        if cycle > 0 && cycle % 50 == 0 {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr().lock(),
                "soak: {cycle}/{} cycles",
                opts.cycles
            );
        }
        let two = most >= 2 && dice.below(4) == 0;
        let first = dice.below(addrs.len());
        let mut victims = vec![first];
        if two {
            victims.push((first + 1 + dice.below(addrs.len() - 1)) % addrs.len());
        }
        for v in &victims {
            if let Some(up) = live.lock().ok().as_mut().and_then(|l| l.get_mut(*v)) {
                *up = false;
            }
            cluster.kill(*v).await?;
        }
        let down = Duration::from_millis(200 + u64::try_from(dice.below(800)).unwrap_or(0));
        tokio::time::sleep(down).await;
        for v in &victims {
            cluster.restart(*v, &opts.node_bin).await?;
        }
        // Back in the others' routing tables before writers use it again.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for v in &victims {
            if let Some(up) = live.lock().ok().as_mut().and_then(|l| l.get_mut(*v)) {
                *up = true;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut written: Vec<(usize, Written)> = Vec::new();
    for (w, task) in writers.into_iter().enumerate() {
        for one in task.await? {
            written.push((w, one));
        }
    }
    let acked: usize = written.iter().map(|(_, one)| 1 + one.messages.len()).sum();
    let missing: usize = read_back(&written, &addrs, &dir.join("clients"), READ_PATIENCE)
        .await
        .iter()
        .map(Written::unread)
        .sum();
    cluster.stop().await;
    Ok(SoakReport {
        cycles: opts.cycles,
        writers: opts.writers,
        writes_acked: acked,
        writes_lost: missing,
        seconds: started.elapsed().as_secs(),
    })
}
