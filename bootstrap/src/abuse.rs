//! Floods against a throwaway process cluster while honest users keep transferring: one
//! line per scenario with what the honest users saw and what the nodes held.
//!
//! Sources are real: every attacker connection leaves from 127.66.0.0/24 (hosts .2 to .5;
//! in `shared-prefix` the one host .2), the honest users from four hosts in other /24s
//! (127.77.0.2, 127.78.0.2, …) and, in `shared-prefix`, two of them from 127.66.0.200 and
//! .201, neighbours inside the attacker's /24. The nodes exempt only 127.0.0.1. Honest
//! users transfer through the flooded node, each at most one transfer every two seconds,
//! as people do: during the floods on HTTP, the draft's transfer over HTTP (create, the
//! recipient's read, an update, the other side's read); during the floods on the libp2p
//! protocols ([`p2p`]), a share, its acceptance and an answer through the client library.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::process::{ProcessCluster, UpOptions};

mod p2p;

/// The scenarios this command runs.
pub const SCENARIOS: &[&str] = &[
    "longpoll-http",
    "longpoll-p2p",
    "slowloris",
    "genesis-flood",
    "stalled-frames",
    "summaries-flood",
    "random-lookups",
    "fresh-peers",
    "bad-signatures",
    "relay-flood",
    "shared-prefix",
];

/// The honest hosts, each in a /24 of its own.
const HONEST: [&str; 4] = ["127.77.0.2", "127.78.0.2", "127.79.0.2", "127.80.0.2"];
/// Honest hosts inside the attacker's /24.
const NEIGHBOURS: [&str; 2] = ["127.66.0.200", "127.66.0.201"];
/// The least time between the starts of one honest user's transfers.
const PACE: Duration = Duration::from_secs(2);
const INITIATOR: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const RECIPIENT: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

/// What one scenario showed.
#[derive(Debug, Clone)]
pub struct AbuseReport {
    /// The scenario.
    pub scenario: String,
    /// Honest transfers completed during the flood.
    pub honest_ok: usize,
    /// Honest transfers that failed during the flood.
    pub honest_failed: usize,
    /// Their p99 (ms).
    pub honest_p99_ms: f64,
    /// The honest p99 of the quiet phase before the flood (ms).
    pub quiet_p99_ms: f64,
    /// The highest RSS of any one node during the flood (MB).
    pub node_peak_rss_mb: u64,
    /// The most descriptors any one node held during the flood.
    pub node_peak_fds: u64,
    /// Seconds after the flood until the honest p99 was back within 1.5× quiet; `None`
    /// when it was not within the time looked.
    pub recovered_s: Option<f64>,
}

impl AbuseReport {
    /// The one-line summary.
    pub fn line(&self) -> String {
        format!(
            "abuse scenario={} honest_ok={} honest_failed={} honest_p99_ms={:.1} quiet_p99_ms={:.1} node_peak_rss_mb={} node_peak_fds={} recovered_s={}",
            self.scenario,
            self.honest_ok,
            self.honest_failed,
            self.honest_p99_ms,
            self.quiet_p99_ms,
            self.node_peak_rss_mb,
            self.node_peak_fds,
            self.recovered_s
                .map_or_else(|| "never".to_owned(), |s| format!("{s:.1}"))
        )
    }
}

/// A TCP connection to `to` leaving from the local address `from`.
pub async fn connect(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    let ip = from
        .parse()
        .map_err(|_| std::io::Error::other("bad source address"))?;
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(to).await
}

/// One HTTP/1.1 exchange from `from` (`Connection: close`, a JSON body when there is
/// one): everything the server sent back until it closed.
pub async fn exchange(
    from: &str,
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Vec<u8>> {
    let mut s = connect(from, to).await?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    Ok(raw)
}

/// One HTTP/1.1 request from `from`: its status and body.
async fn request(
    from: &str,
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    limit: Duration,
) -> std::io::Result<(u16, Vec<u8>)> {
    let exchange = exchange(from, to, method, path, headers, body);
    let raw = tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.as_bytes().to_vec())
        .unwrap_or_default();
    Ok((status, body))
}

/// A random (version 4) UUID.
fn random_uuid() -> uuid::Uuid {
    let mut bytes = [0u8; 16];
    let _ = getrandom::fill(&mut bytes);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

fn create_body() -> Vec<u8> {
    let expiration = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() + Duration::from_secs(24 * 3600),
    );
    format!(
        r#"{{"displayInformation":{{"title":"Pass","description":"A pass","imageURL":"https://example.com/i"}},"payload":{{"type":"AEAD_AES_128_GCM","data":"RkRFQy4uLjk4NzY1NDMyMQ=="}},"notificationToken":{{"type":"com.apple.apns","tokenData":"APNS...1234"}},"mailboxConfiguration":{{"accessRights":"RWD","expiration":"{expiration}"}}}}"#
    )
    .into_bytes()
}

const UPDATE: &[u8] = br#"{"payload":{"type":"AEAD_AES_128_GCM","data":"QkJC"},"notificationToken":{"type":"com.apple.apns","tokenData":"APNS...1234"}}"#;

/// Creates a mailbox from `from` and has its recipient read it: its path.
async fn mailbox(from: &str, to: SocketAddr, limit: Duration) -> Option<String> {
    let rid = random_uuid().to_string();
    let (status, body) = request(
        from,
        to,
        "POST",
        "/v1/m",
        &[
            ("Mailbox-Device-Claim", INITIATOR),
            ("Mailbox-Request-ID", &rid),
        ],
        &create_body(),
        limit,
    )
    .await
    .ok()?;
    if !(200..300).contains(&status) {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let link = v.get("urlLink")?.as_str()?;
    let path = link.get(link.find("/v1/m/")?..)?.to_owned();
    let (status, _) = request(
        from,
        to,
        "POST",
        &path,
        &[("Mailbox-Device-Claim", RECIPIENT)],
        b"",
        limit,
    )
    .await
    .ok()?;
    (status == 200).then_some(path)
}

/// One honest transfer through the draft API: create, read, update, read.
async fn transfer(from: &str, to: SocketAddr) -> bool {
    let limit = Duration::from_secs(30);
    let Some(path) = mailbox(from, to, limit).await else {
        return false;
    };
    let rid = random_uuid().to_string();
    let updated = request(
        from,
        to,
        "PUT",
        &path,
        &[
            ("Mailbox-Device-Claim", RECIPIENT),
            ("Mailbox-Request-ID", &rid),
        ],
        UPDATE,
        limit,
    )
    .await;
    if !matches!(updated, Ok((200, _))) {
        return false;
    }
    let read = request(
        from,
        to,
        "POST",
        &path,
        &[("Mailbox-Device-Claim", INITIATOR)],
        b"",
        limit,
    )
    .await;
    matches!(read, Ok((200, _)))
}

/// A finished honest transfer: when it started and ended, whether it worked, how long it
/// took. A transfer belongs to the phase it started in: one slowed by the flood counts
/// for the flood even if it ends after it.
#[derive(Debug, Clone, Copy)]
struct Sample {
    started: Instant,
    ended: Instant,
    ok: bool,
    ms: f64,
}

fn p99(samples: &[Sample]) -> f64 {
    let mut ms: Vec<f64> = samples.iter().filter(|s| s.ok).map(|s| s.ms).collect();
    if ms.is_empty() {
        return f64::NAN;
    }
    ms.sort_by(f64::total_cmp);
    let at = ((ms.len() as f64) * 0.99).ceil() as usize;
    ms.get(at.saturating_sub(1).min(ms.len() - 1))
        .copied()
        .unwrap_or(f64::NAN)
}

/// The attacker's hosts in `scenario`.
fn attackers(scenario: &str) -> Vec<String> {
    let hosts = if scenario == "shared-prefix" {
        2..3
    } else {
        2..6
    };
    hosts.map(|h| format!("127.66.0.{h}")).collect()
}

/// The flood of `scenario` against `to`, until `stop`.
async fn flood(scenario: &str, to: SocketAddr, stop: Arc<AtomicBool>) {
    let hosts = attackers(scenario);
    match scenario {
        "longpoll-http" | "shared-prefix" => {
            // Mailboxes of the attacker's own, then 300 long-polls on them, each sent
            // again as soon as it ends.
            let mut paths = Vec::new();
            for (i, host) in hosts.iter().cycle().take(40).enumerate() {
                if let Some(p) = mailbox(host, to, Duration::from_secs(10)).await {
                    paths.push((host.clone(), p));
                }
                if stop.load(Ordering::Relaxed) || i > 200 {
                    break;
                }
            }
            if paths.is_empty() {
                return;
            }
            let mut tasks = Vec::new();
            for i in 0..300 {
                let Some((host, path)) = paths.get(i % paths.len()).cloned() else {
                    break;
                };
                let stop = stop.clone();
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let r = request(
                            &host,
                            to,
                            "POST",
                            &format!("{path}?wait=100"),
                            &[("Mailbox-Device-Claim", INITIATOR)],
                            b"",
                            Duration::from_secs(2),
                        )
                        .await;
                        if !matches!(r, Err(ref e) if e.kind() == std::io::ErrorKind::TimedOut) {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        }
        "slowloris" => {
            let mut held = Vec::new();
            for i in 0..3000 {
                let Some(host) = hosts.get(i % hosts.len().max(1)) else {
                    break;
                };
                if let Ok(s) = connect(host, to).await {
                    held.push(s);
                }
            }
            for s in &mut held {
                let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await;
            }
            while !stop.load(Ordering::Relaxed) {
                for s in &mut held {
                    let _ = s.write_all(b"X-Slow: 1\r\n").await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        "random-lookups" => {
            let mut tasks = Vec::new();
            for host in hosts {
                let stop = stop.clone();
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let path = format!("/v1/m/{}", random_uuid());
                        let _ = request(
                            &host,
                            to,
                            "POST",
                            &path,
                            &[("Mailbox-Device-Claim", RECIPIENT)],
                            b"",
                            Duration::from_secs(5),
                        )
                        .await;
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        }
        _ => {}
    }
}

fn usage(pid: u32) -> (u64, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    (rss / 1024, fds)
}

/// Runs `scenario` on a throwaway cluster of `nodes` in `dir`: a quiet phase of half of
/// `seconds`, a flood of `seconds`, then up to `recovery` for the honest p99 to come back.
pub async fn run(
    scenario: &str,
    seconds: u64,
    recovery: Duration,
    nodes: usize,
    node_bin: &std::path::Path,
    dir: &std::path::Path,
) -> anyhow::Result<AbuseReport> {
    if !SCENARIOS.contains(&scenario) {
        anyhow::bail!(
            "unknown or not yet written scenario {scenario:?}; the scenarios are {}",
            SCENARIOS.join(", ")
        );
    }
    // Thousands of attacker connections: as many descriptors as this process may have.
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ = nix::sys::resource::setrlimit(
            nix::sys::resource::Resource::RLIMIT_NOFILE,
            hard.min(65_536),
            hard,
        );
    }
    let replication = u8::try_from(nodes.min(3)).unwrap_or(3);
    let cluster = ProcessCluster::up(&UpOptions {
        nodes,
        dir: dir.join(scenario),
        base_port: None,
        replication,
        node_bin: node_bin.to_path_buf(),
        extra_args: Vec::new(),
        liars: None,
    })
    .await?;
    let first = cluster
        .file()
        .nodes
        .first()
        .ok_or_else(|| anyhow::anyhow!("no nodes"))?;
    let to: SocketAddr = first.http.parse()?;
    let multiaddr: libp2p::Multiaddr = first.multiaddr.parse()?;
    let key_of = |peer: &str| {
        peer.parse::<libp2p::PeerId>()
            .ok()
            .and_then(|p| tigress_client::oblivious::key_of(&p))
    };
    let keys: Vec<_> = cluster
        .file()
        .nodes
        .iter()
        .filter_map(|n| key_of(&n.peer_id))
        .collect();
    let target_key = key_of(&first.peer_id).ok_or_else(|| anyhow::anyhow!("bad peer ID"))?;
    let native = p2p::SCENARIOS.contains(&scenario);
    let pids = cluster.pids();
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let honest_stop = Arc::new(AtomicBool::new(false));
    let mut honest = Vec::new();
    let sources: Vec<&'static str> = if scenario == "shared-prefix" {
        vec![HONEST[0], NEIGHBOURS[0], HONEST[1], NEIGHBOURS[1]]
    } else {
        HONEST.to_vec()
    };
    for (i, from) in sources.into_iter().enumerate() {
        let (samples, stop) = (samples.clone(), honest_stop.clone());
        let (multiaddr, state) = (
            multiaddr.clone(),
            dir.join(scenario).join(format!("honest-{i}")),
        );
        honest.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = if native {
                    p2p::transfer(&multiaddr, &state, from).await
                } else {
                    transfer(from, to).await
                };
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                if let Ok(mut s) = samples.lock() {
                    s.push(Sample {
                        started: t,
                        ended: Instant::now(),
                        ok,
                        ms,
                    });
                }
                tokio::time::sleep(PACE.saturating_sub(t.elapsed())).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds.div_ceil(2).max(1))).await;
    let flood_start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = if native {
        tokio::spawn(p2p::flood(
            scenario.to_owned(),
            multiaddr.clone(),
            target_key,
            keys,
            usize::from(replication),
            attackers(scenario),
            dir.join(scenario).join("attacker"),
            stop.clone(),
        ))
    } else {
        tokio::spawn(flood_owned(scenario.to_owned(), to, stop.clone()))
    };
    let (mut peak_rss, mut peak_fds) = (0, 0);
    while flood_start.elapsed() < Duration::from_secs(seconds) {
        for pid in &pids {
            let (rss, fds) = usage(*pid);
            peak_rss = peak_rss.max(rss);
            peak_fds = peak_fds.max(fds);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let flood_end = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(10), attacker).await;
    // Recovered: the first window after the flood whose transfers all worked with a p99
    // within 1.5× the quiet p99 (looked for up to `recovery`).
    let quiet: Vec<Sample> = samples
        .lock()
        .map(|s| {
            s.iter()
                .filter(|x| x.ended < flood_start)
                .copied()
                .collect()
        })
        .unwrap_or_default();
    let quiet_p99 = p99(&quiet);
    let mut recovered = None;
    let deadline = flood_end + recovery;
    let mut window_start = flood_end;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let window: Vec<Sample> = samples
            .lock()
            .map(|s| {
                s.iter()
                    .filter(|x| x.started >= window_start)
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        if window.len() >= 4 {
            if p99(&window) <= 1.5 * quiet_p99 && window.iter().all(|x| x.ok) {
                recovered = Some(window_start.duration_since(flood_end).as_secs_f64());
                break;
            }
            window_start = Instant::now();
        }
    }
    honest_stop.store(true, Ordering::Relaxed);
    for h in honest {
        let _ = tokio::time::timeout(Duration::from_secs(35), h).await;
    }
    let during: Vec<Sample> = samples
        .lock()
        .map(|s| {
            s.iter()
                .filter(|x| x.started >= flood_start && x.started <= flood_end)
                .copied()
                .collect()
        })
        .unwrap_or_default();
    cluster.stop().await;
    Ok(AbuseReport {
        scenario: scenario.to_owned(),
        honest_ok: during.iter().filter(|x| x.ok).count(),
        honest_failed: during.iter().filter(|x| !x.ok).count(),
        honest_p99_ms: p99(&during),
        quiet_p99_ms: quiet_p99,
        node_peak_rss_mb: peak_rss,
        node_peak_fds: peak_fds,
        recovered_s: recovered,
    })
}

async fn flood_owned(scenario: String, to: SocketAddr, stop: Arc<AtomicBool>) {
    flood(&scenario, to, stop).await;
}
