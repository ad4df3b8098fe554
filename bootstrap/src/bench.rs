//! `tigress-cluster bench`: complete transfers through the client library, C at a time,
//! each step through a randomly chosen entry node; latency percentiles, throughput, and
//! the CPU time and peak memory of the node processes.
//!
//! A transfer: the sender shares a B-byte payload; the recipient opens and claims it
//! (certificate), reads and decrypts it; then K more B-byte messages alternate recipient →
//! sender → recipient …, each awaited by the other side with a long-poll fetch that is
//! already waiting when the message is sent; then the sender deletes the mailbox.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::Multiaddr;
use rand_core::{Rng as _, UnwrapErr};
use tigress_client::oblivious::{Directory, KeyCache, Route};
use tigress_client::{ClientError, Connection, unix_now};
use tigress_protocol::Address;
use tigress_protocol::flow;
use tigress_protocol::mailbox::Limits;
use tigress_protocol::record::{Message, ReadScope, Record};
use tigress_protocol::rpc::ClientRequest;
use tigress_protocol::rpc::ClientResponse;
use tigress_protocol::session::{DeviceKeys, RecipientSession, ShareIdentity, ShareOptions};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Transfers in all.
    pub transfers: usize,
    /// Transfers at a time.
    pub concurrency: usize,
    /// Messages after the first payload.
    pub messages: usize,
    /// Bytes of each payload and message.
    pub payload_bytes: usize,
    /// Requests straight to the nodes (`--direct`) instead of oblivious requests (each
    /// operation through a fresh connection to a relay, sealed to a target), which is how
    /// the client runs by default.
    pub direct: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            transfers: 2000,
            concurrency: 50,
            messages: 3,
            payload_bytes: 1024,
            direct: false,
        }
    }
}

/// The steps timed.
const STEPS: [&str; 5] = ["create", "claim", "send", "fetch", "delete"];

#[derive(Default)]
struct Timings {
    total: Vec<Duration>,
    steps: BTreeMap<&'static str, Vec<Duration>>,
    failures: BTreeMap<String, usize>,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Transfers attempted.
    pub transfers: usize,
    /// Transfers completed.
    pub ok: usize,
    /// Transfers failed.
    pub failed: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Percentiles (p50, p90, p99) of a whole transfer, milliseconds.
    pub total_ms: (f64, f64, f64),
    /// Per step: (p50, p90, p99) in milliseconds.
    pub steps_ms: BTreeMap<&'static str, (f64, f64, f64)>,
    /// Failure reasons with counts.
    pub failures: BTreeMap<String, usize>,
    /// CPU seconds used by the node processes during the run.
    pub node_cpu_s: f64,
    /// Peak resident memory of the node processes, summed, MiB.
    pub node_rss_mb: f64,
    /// Ed25519 verifications the nodes ran during the run, and checks they answered from
    /// memory (from their `/metrics`, when their admin addresses are known).
    pub verifications: Option<(u64, u64)>,
}

fn percentiles(v: &mut [Duration]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort();
    let at = |q: f64| {
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    (at(0.5), at(0.9), at(0.99))
}

impl BenchReport {
    /// The summary line.
    pub fn line(&self) -> String {
        let (p50, p90, p99) = self.total_ms;
        let (c50, _, c99) = self.steps_ms.get("claim").copied().unwrap_or_default();
        format!(
            "bench transfers={} ok={} failed={} seconds={:.2} transfers_per_s={:.1} p50_ms={:.1} p90_ms={:.1} p99_ms={:.1} claim_p50_ms={:.1} claim_p99_ms={:.1} node_cpu_s={:.2} node_rss_mb={:.1}",
            self.transfers,
            self.ok,
            self.failed,
            self.seconds,
            self.ok as f64 / self.seconds.max(1e-9),
            p50,
            p90,
            p99,
            c50,
            c99,
            self.node_cpu_s,
            self.node_rss_mb
        )
    }

    /// The JSON report: the summary's keys plus per-step percentiles and failures.
    pub fn json(&self) -> serde_json::Value {
        let (p50, p90, p99) = self.total_ms;
        let (c50, _, c99) = self.steps_ms.get("claim").copied().unwrap_or_default();
        let steps: serde_json::Map<String, serde_json::Value> = self
            .steps_ms
            .iter()
            .map(|(k, (a, b, c))| {
                (
                    (*k).to_owned(),
                    serde_json::json!({"p50_ms": a, "p90_ms": b, "p99_ms": c}),
                )
            })
            .collect();
        serde_json::json!({
            "transfers": self.transfers,
            "ok": self.ok,
            "failed": self.failed,
            "seconds": self.seconds,
            "transfers_per_s": self.ok as f64 / self.seconds.max(1e-9),
            "p50_ms": p50, "p90_ms": p90, "p99_ms": p99,
            "claim_p50_ms": c50, "claim_p99_ms": c99,
            "node_cpu_s": self.node_cpu_s,
            "node_rss_mb": self.node_rss_mb,
            "steps": steps,
            "failures": self.failures,
            "verifications": self.verifications.map(|v| v.0),
            "verifications_remembered": self.verifications.map(|v| v.1),
        })
    }

    /// `bench-crypto ...`: the signature work of the nodes per completed transfer, when
    /// it was measured.
    pub fn crypto_line(&self) -> Option<String> {
        let (run, remembered) = self.verifications?;
        let per = |n: u64| n as f64 / self.ok.max(1) as f64;
        Some(format!(
            "bench-crypto verifications={run} remembered={remembered} verifications_per_transfer={:.1} remembered_per_transfer={:.1}",
            per(run),
            per(remembered)
        ))
    }
}

/// The nodes' verification counters, summed over the admin addresses that answer.
async fn verification_counters(admins: &[String]) -> Option<(u64, u64)> {
    if admins.is_empty() {
        return None;
    }
    let mut sum = (0, 0);
    for a in admins {
        let text = crate::process::http_get(a, "/metrics").await.ok()?;
        sum.0 += crate::process::gauge(&text, "tigress_signature_verifications_total")?;
        sum.1 += crate::process::gauge(&text, "tigress_signatures_remembered_total")?;
    }
    Some(sum)
}

/// CPU seconds (user + system) and peak RSS (MiB) of a process, from /proc.
pub fn proc_usage(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Some(((utime + stime) / tick, hwm_kb / 1024.0))
}

struct Pool {
    conns: Vec<Connection>,
    /// For oblivious requests: the nodes to enter at, what the network looks like, and
    /// the target keys checked so far.
    oblivious: Option<(Vec<Multiaddr>, Arc<Directory>, KeyCache)>,
}

/// How one operation reaches the network.
enum Via {
    Direct(Connection),
    Oblivious(Route),
}

impl Via {
    async fn request(&self, request: ClientRequest) -> Result<ClientResponse, ClientError> {
        match self {
            Via::Direct(c) => c.request(request).await,
            Via::Oblivious(r) => r.request(request).await,
        }
    }
}

fn random_index(len: usize) -> usize {
    let mut b = [0u8; 4];
    UnwrapErr(getrandom::SysRng).fill_bytes(&mut b);
    u32::from_le_bytes(b) as usize % len.max(1)
}

impl Pool {
    fn pick(&self) -> &Connection {
        let i = random_index(self.conns.len());
        // `run` refuses an empty pool, and `i` is reduced modulo its length.
        #[allow(clippy::indexing_slicing)]
        &self.conns[i]
    }

    /// The way for an operation on `address`: a pooled connection, or a fresh oblivious
    /// route entering at a random node (as a client opens one per operation).
    async fn via(&self, address: &Address) -> Result<Via, ClientError> {
        match &self.oblivious {
            None => Ok(Via::Direct(self.pick().clone())),
            Some((addrs, directory, keys)) => {
                #[allow(clippy::indexing_slicing)]
                let home = &addrs[random_index(addrs.len())];
                let mut directory = (**directory).clone();
                // The node entered at is the one the user named.
                if let Some(key) = home.iter().find_map(|p| match p {
                    libp2p::multiaddr::Protocol::P2p(id) => tigress_client::oblivious::key_of(&id),
                    _ => None,
                }) {
                    directory.info.node_key = key;
                }
                Ok(Via::Oblivious(
                    Route::open(
                        home,
                        &directory,
                        address,
                        usize::from(directory.info.replication),
                        keys.clone(),
                        None,
                    )
                    .await?,
                ))
            }
        }
    }
}

fn unexpected(what: &'static str) -> ClientError {
    ClientError::UnexpectedResponse(what.into())
}

async fn timed<T>(
    steps: &mut Vec<(&'static str, Duration)>,
    step: &'static str,
    f: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, String> {
    let start = Instant::now();
    // A refusal is counted by its code; anything else (a check the client made that
    // failed, a broken connection) by what it says.
    let r = f.await.map_err(|e| match e.code() {
        Some(code) => format!("{step}: {}", code.as_str()),
        None => format!("{step}: {e}"),
    });
    steps.push((step, start.elapsed()));
    r
}

async fn fetch_one(conn: &Via, fetch: ClientRequest) -> Result<Vec<Message>, ClientError> {
    Ok(flow::fetched(conn.request(fetch).await?)?)
}

/// A write, with its acknowledgements checked as a client checks them.
async fn stored(
    conn: &Via,
    request: ClientRequest,
    genesis: &tigress_protocol::record::Genesis,
    record: [u8; 32],
) -> Result<(), ClientError> {
    // A loaded node asks a proof of work for a new mailbox: made, as a client makes it,
    // and the create sent again (again if the demand rose meanwhile).
    let (mut request, mut bits) = (request, 0);
    loop {
        match conn.request(request.clone()).await? {
            ClientResponse::AdmissionRequired { bits: asked }
                if tigress_protocol::admission::work_again(bits, asked) =>
            {
                bits = asked;
                request = tigress_client::with_admission(request, genesis, bits).await?;
            }
            answer => {
                flow::stored(answer, genesis, &record)?;
                return Ok(());
            }
        }
    }
}

/// One transfer; returns each step's duration.
async fn transfer(
    pool: &Pool,
    opts: &BenchOptions,
) -> Result<Vec<(&'static str, Duration)>, String> {
    let mut rng = UnwrapErr(getrandom::SysRng);
    let limits = Limits::default();
    let mut steps = Vec::new();
    let payload = vec![0x5au8; opts.payload_bytes];

    let mut sender = timed(&mut steps, "create", async {
        let identity = ShareIdentity::random(&mut rng);
        let conn = &pool.via(&identity.address()).await?;
        let located = conn.request(flow::locate(&identity)).await?;
        let options = ShareOptions::default();
        let device = DeviceKeys::generate(options.hpke, &mut rng);
        let (session, url, create) = flow::create(
            located,
            identity,
            device,
            "https://bench.invalid",
            &payload,
            &options,
            unix_now(),
            &mut rng,
        )?;
        stored(conn, create, session.genesis(), session.genesis().digest()).await?;
        Ok((session, url))
    })
    .await?;
    let url = sender.1.clone();

    let mut recipient = timed(&mut steps, "claim", async {
        let conn = pool.via(&url.mailbox_id().address()).await?;
        let genesis = flow::genesis(conn.request(flow::open(&url, unix_now())).await?)?;
        let device = DeviceKeys::generate(genesis.header().sender_hpke.suite, &mut rng);
        let now = unix_now();
        let (mut session, first) =
            RecipientSession::open_with_device(&url, genesis, device, now, &limits, now)?;
        if first.len() != opts.payload_bytes {
            return Err(unexpected("first payload length"));
        }
        let answer = conn.request(flow::claim(&session)).await?;
        flow::certified(&mut session, answer, &limits, unix_now())?;
        Ok(session)
    })
    .await?;

    let address = url.mailbox_id().address();
    // The sender learns the recipient from its view.
    timed(&mut steps, "fetch", async {
        let answer = pool
            .via(&address)
            .await?
            .request(ClientRequest::Read {
                request: sender.0.read_request(unix_now(), ReadScope::View),
            })
            .await?;
        flow::learn(&mut sender.0, answer, &limits, unix_now())?;
        Ok(())
    })
    .await?;
    let to = recipient.public_key();

    for k in 0..opts.messages {
        let from_recipient = k % 2 == 0;
        let (send_conn, fetch_conn) = (
            pool.via(&address)
                .await
                .map_err(|e| format!("send: {}", e.code_name()))?,
            pool.via(&address)
                .await
                .map_err(|e| format!("fetch: {}", e.code_name()))?,
        );
        let now = unix_now();
        let fetch = if from_recipient {
            let cursor = sender.0.cursor();
            flow::fetch(|scope| sender.0.read_request(now, scope), cursor, 30_000)
        } else {
            let cursor = recipient.cursor();
            flow::fetch(|scope| recipient.read_request(now, scope), cursor, 30_000)
        }
        .map_err(|e| format!("fetch: {}", e.code()))?;
        // The other side is already waiting when the message goes out.
        let start_fetch = Instant::now();
        let waiting = tokio::spawn(async move { fetch_one(&fetch_conn, fetch).await });
        let message = if from_recipient {
            recipient.seal(&payload, [k as u8; 16], unix_now(), &mut rng)
        } else {
            sender
                .0
                .seal(&to, &payload, [k as u8; 16], unix_now(), &mut rng)
        }
        .map_err(|e| format!("send: {}", e.code()))?;
        let record = message.digest();
        let genesis = sender.0.genesis().clone();
        timed(
            &mut steps,
            "send",
            stored(&send_conn, flow::send(message), &genesis, record),
        )
        .await?;
        let got = waiting
            .await
            .map_err(|_| "fetch: task failed".to_owned())?
            .map_err(|e| format!("fetch: {}", e.code_name()))?;
        steps.push(("fetch", start_fetch.elapsed()));
        let mut delivered = 0;
        for m in &got {
            let d = if from_recipient {
                sender.0.receive(m)
            } else {
                recipient.receive(m)
            };
            delivered += d.map_err(|e| format!("fetch: {}", e.code()))?.len();
        }
        if delivered != 1 {
            return Err("fetch: message not delivered".into());
        }
    }

    let delete = sender.0.delete(unix_now());
    let record = delete.digest();
    timed(&mut steps, "delete", async {
        let conn = pool.via(&address).await?;
        stored(&conn, flow::delete(delete), sender.0.genesis(), record).await
    })
    .await?;
    Ok(steps)
}

/// Runs the benchmark against the nodes at `addrs`; `pids` are node processes to measure.
/// `admins` are the nodes' admin addresses, for their signature counters (may be empty).
pub async fn run(
    addrs: &[Multiaddr],
    pids: &[u32],
    admins: &[String],
    opts: &BenchOptions,
) -> anyhow::Result<BenchReport> {
    // A connection per concurrent transfer and node, as many clients would have: each is
    // its own peer to the node's per-peer rate limit (a few clients sharing a connection
    // went over it once a transfer got cheap enough).
    let per_node = opts.concurrency.max(1);
    let mut conns = Vec::new();
    for a in addrs {
        for _ in 0..per_node {
            conns.push(Connection::connect(a).await?);
        }
    }
    anyhow::ensure!(!conns.is_empty(), "no nodes to run against");
    let mut oblivious = None;
    if !opts.direct
        && let Some(first) = conns.first()
    {
        let directory = Directory::fetch(first).await?;
        let home = tigress_client::oblivious::key_of(&first.peer_id());
        if home.is_some_and(|h| directory.has_others(&h)) {
            oblivious = Some((addrs.to_vec(), Arc::new(directory), KeyCache::default()));
        }
    }
    let pool = Arc::new(Pool { conns, oblivious });
    let counted_before = verification_counters(admins).await;
    let usage_before: Vec<(f64, f64)> = pids.iter().filter_map(|p| proc_usage(*p)).collect();
    let done = Arc::new(AtomicUsize::new(0));
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let total = opts.transfers;
    let results: Vec<Result<Vec<(&'static str, Duration)>, String>> =
        futures::stream::iter(0..total)
            .map(|_| {
                let pool = pool.clone();
                let opts = opts.clone();
                let done = done.clone();
                async move {
                    let t0 = Instant::now();
                    let r = transfer(&pool, &opts).await.map(|mut s| {
                        s.push(("total", t0.elapsed()));
                        s
                    });
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    progress(n, total, tty);
                    r
                }
            })
            .buffer_unordered(opts.concurrency.max(1))
            .collect()
            .await;
    let seconds = start.elapsed().as_secs_f64();
    if tty {
        let _ = writeln!(std::io::stderr());
    }
    let mut t = Timings::default();
    for r in results {
        match r {
            Ok(steps) => {
                for (name, d) in steps {
                    if name == "total" {
                        t.total.push(d);
                    } else {
                        t.steps.entry(name).or_default().push(d);
                    }
                }
            }
            Err(reason) => *t.failures.entry(reason).or_insert(0) += 1,
        }
    }
    let usage_after: Vec<(f64, f64)> = pids.iter().filter_map(|p| proc_usage(*p)).collect();
    let counted_after = verification_counters(admins).await;
    let cpu_before: f64 = usage_before.iter().map(|u| u.0).sum();
    let cpu_after: f64 = usage_after.iter().map(|u| u.0).sum();
    let rss: f64 = usage_after.iter().map(|u| u.1).sum();
    let ok = t.total.len();
    Ok(BenchReport {
        transfers: total,
        ok,
        failed: total - ok,
        seconds,
        total_ms: percentiles(&mut t.total),
        steps_ms: STEPS
            .iter()
            .map(|s| {
                (
                    *s,
                    percentiles(t.steps.get_mut(s).map_or(&mut [][..], |v| &mut v[..])),
                )
            })
            .collect(),
        failures: t.failures,
        node_cpu_s: (cpu_after - cpu_before).max(0.0),
        node_rss_mb: rss,
        verifications: counted_before
            .zip(counted_after)
            .map(|(b, a)| (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1))),
    })
}

fn progress(n: usize, total: usize, tty: bool) {
    let mut err = std::io::stderr();
    if tty {
        let width = 40;
        let filled = n * width / total.max(1);
        let _ = write!(
            err,
            "\r[{}{}] {n}/{total}",
            "=".repeat(filled),
            " ".repeat(width - filled)
        );
        let _ = err.flush();
    } else if n == total || n.is_multiple_of((total / 10).max(1)) {
        let _ = writeln!(err, "bench: {n}/{total} transfers");
    }
}
