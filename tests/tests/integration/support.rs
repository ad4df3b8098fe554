//! Running real `tigress-node` processes and the `tigress` CLI on loopback.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The built binaries (`tigress-node`, `tigress`). `cargo test --workspace` builds them
/// (the node and client packages have binary tests); when this crate is tested alone they
/// are built here once.
pub(crate) fn bins() -> &'static (PathBuf, PathBuf) {
    static BINS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BINS.get_or_init(|| {
        let dir = target_dir();
        let bins = (dir.join("tigress-node"), dir.join("tigress"));
        let all = ["tigress-node", "tigress", "tigress-cluster", "tigress-liar"];
        if !all.iter().all(|b| dir.join(b).exists()) {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--workspace", "--bins"])
                .current_dir(workspace_root())
                .status()
                .expect("running cargo build");
            assert!(status.success(), "building the binaries failed");
        }
        bins
    })
}

/// Has the nodes of this process log the link and dial paths at debug level into the
/// output of the test that runs them, which the harness prints only for a test that
/// fails. `TIGRESS_TEST_LOG` (an `EnvFilter`) replaces the default filter. Called by
/// tests that failed now and then in CI without saying why; the first call sets it for
/// the whole process.
pub(crate) fn debug_logs() {
    let filter = std::env::var("TIGRESS_TEST_LOG").unwrap_or_else(|_| {
        "warn,tigress_node::link=debug,tigress_node::network=debug,libp2p_stream=debug".into()
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

/// The path of the workspace binary `name` (built with the others by [`bins`]).
pub(crate) fn bin(name: &str) -> PathBuf {
    bins();
    target_dir().join(name)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The profile directory the test binary runs from (`target/debug`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target profile directory")
        .to_path_buf()
}

/// A running node process.
pub(crate) struct NodeProc {
    pub(crate) child: Child,
    /// Set once the process was reaped outside `child` (after SIGTERM).
    reaped: bool,
    pub(crate) peer_id: String,
    pub(crate) listen: String,
    pub(crate) http: String,
    /// The admin listener (`/metrics`, `/status`).
    pub(crate) admin: String,
}

impl NodeProc {
    /// Starts a node on free loopback ports with its data in `data_dir`.
    pub(crate) fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_on(data_dir, "/ip4/127.0.0.1/tcp/0", extra)
    }

    /// Starts a node listening on `listen`.
    pub(crate) fn start_on(data_dir: &Path, listen: &str, extra: &[&str]) -> Self {
        let mut args: Vec<String> = vec!["--data-dir".into(), data_dir.display().to_string()];
        args.extend(["--listen", listen, "--http", "127.0.0.1:0"].map(String::from));
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        Self::spawn(&args)
    }

    /// Starts `tigress-node run <args>`.
    pub(crate) fn spawn(args: &[String]) -> Self {
        Self::spawn_in(None, args)
    }

    /// Starts `tigress-node run <args>`, in the network namespace `netns` if given.
    pub(crate) fn spawn_in(netns: Option<&str>, args: &[String]) -> Self {
        let (node, _) = bins();
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(node);
                c
            }
            None => Command::new(node),
        };
        let mut child = command
            .arg("run")
            .args(args)
            .env("RUST_LOG", "warn,libp2p_kad=error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning tigress-node");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the node prints its startup line within 30 s");
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in startup line {line:?}"))
                .to_owned()
        };
        assert!(line.starts_with("tigress-node "), "startup line: {line:?}");
        let listen = field("listen").split(',').next().unwrap().to_owned();
        Self {
            peer_id: field("peer_id"),
            http: field("http"),
            admin: field("admin"),
            listen,
            child,
            reaped: false,
        }
    }

    /// The multiaddr to dial, with `/p2p/<id>`.
    pub(crate) fn addr(&self) -> String {
        format!("{}/p2p/{}", self.listen, self.peer_id)
    }

    /// SIGKILL.
    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; returns the exit code (the node must stop within 40 s).
    pub(crate) fn terminate(mut self) -> Option<i32> {
        let pid = i32::try_from(self.child.id()).expect("pid");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("sending SIGTERM");
        let (tx, rx) = std::sync::mpsc::channel();
        let pid = nix::unistd::Pid::from_raw(pid);
        std::thread::spawn(move || {
            let _ = tx.send(nix::sys::wait::waitpid(pid, None));
        });
        let status = rx
            .recv_timeout(Duration::from_secs(40))
            .expect("the node stops within 40 s after SIGTERM")
            .expect("waiting for the node");
        // Reaped above: Drop must not signal a PID that may now be another process's.
        self.reaped = true;
        match status {
            nix::sys::wait::WaitStatus::Exited(_, code) => Some(code),
            _ => None,
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `tigress` CLI bound to a state directory and a node.
pub(crate) struct Cli {
    pub(crate) state: PathBuf,
    pub(crate) node: String,
    /// The network namespace the CLI runs in, if not the test's own.
    pub(crate) netns: Option<String>,
}

impl Cli {
    pub(crate) fn new(state: &Path, node: &str) -> Self {
        Self {
            state: state.to_path_buf(),
            node: node.to_owned(),
            netns: None,
        }
    }

    /// The same CLI run inside the network namespace `ns`.
    pub(crate) fn in_netns(mut self, ns: &str) -> Self {
        self.netns = Some(ns.to_owned());
        self
    }

    /// Runs `tigress <args>`.
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        let (_, cli) = bins();
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(cli);
                c
            }
            None => Command::new(cli),
        };
        command
            .args(args)
            .arg("--state")
            .arg(&self.state)
            .arg("--node")
            .arg(&self.node)
            .env_remove("TIGRESS_NODE")
            .env_remove("TIGRESS_STATE")
            .env_remove("TIGRESS_CLUSTER")
            .env_remove("TIGRESS_DIRECT")
            .env_remove("TIGRESS_BASE_URL")
            .output()
            .expect("running tigress")
    }

    /// Runs and expects success; returns stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "tigress {args:?} failed ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

/// A direct client of the node at `addr` with its state in `dir`: every request enters
/// the network at that node (the tests of entry nodes, lying or not, drive one).
pub(crate) async fn client(
    addr: &libp2p::Multiaddr,
    dir: impl AsRef<Path>,
) -> tigress_client::Client {
    let state = tigress_client::StateDir::open(dir.as_ref()).expect("state directory");
    tigress_client::Client::connect_direct(addr, state)
        .await
        .expect("connecting to the node")
}

/// A client of the node at `addr` as users run it: oblivious requests through relays.
pub(crate) async fn oblivious_client(
    addr: &libp2p::Multiaddr,
    dir: impl AsRef<Path>,
) -> tigress_client::Client {
    let state = tigress_client::StateDir::open(dir.as_ref()).expect("state directory");
    let client = tigress_client::Client::connect(addr, state)
        .await
        .expect("connecting to the node");
    assert!(client.is_oblivious(), "the node knows other nodes");
    client
}

/// Writes `bytes` to a new file in `dir`.
pub(crate) fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("writing a test file");
    path
}

/// Polls `check` until it returns `Some`, failing after `limit`.
pub(crate) fn eventually<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub(crate) struct HttpReply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl HttpReply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A minimal HTTP/1.1 request over loopback (`Connection: close`).
pub(crate) fn http(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpReply {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connecting to the gateway");
    s.set_read_timeout(Some(Duration::from_secs(150))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    let typed = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    if !body.is_empty() && !typed {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_reply(&raw)
}

/// An HTTP/1.1 answer read to the end: status, headers, body.
pub(crate) fn parse_reply(raw: &[u8]) -> HttpReply {
    let text = String::from_utf8_lossy(raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpReply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// A Python interpreter with pyhpke (and cryptography), for the independent Oblivious
/// HTTP client: a virtual environment under the target directory, made on first use
/// (`python3 -m venv`, then `pip install` from the package index).
pub(crate) fn python_with_hpke() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = target_dir().join("ohttp-venv");
        let python = venv.join("bin").join("python");
        let ready = |p: &Path| {
            Command::new(p)
                .args(["-c", "import pyhpke, cryptography"])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !ready(&python) {
            // Built aside and moved in whole, so a concurrent test run never sees half.
            let building = target_dir().join(format!("ohttp-venv.{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&building);
            let made = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&building)
                .status()
                .expect("running python3 -m venv");
            assert!(made.success(), "python3 -m venv failed");
            let installed = Command::new(building.join("bin").join("pip"))
                .args(["install", "-q", "pyhpke==0.6.5", "cryptography>=42"])
                .status()
                .expect("running pip");
            assert!(
                installed.success(),
                "pip install pyhpke cryptography failed"
            );
            let _ = std::fs::remove_dir_all(&venv);
            if std::fs::rename(&building, &venv).is_err() {
                let _ = std::fs::remove_dir_all(&building);
            }
        }
        assert!(ready(&python), "no pyhpke in {}", venv.display());
        python
    })
}

/// The independent Oblivious HTTP client's script.
pub(crate) fn ohttp_script() -> PathBuf {
    workspace_root()
        .join("tests")
        .join("ohttp")
        .join("draft_flow.py")
}

/// A swarm with a fresh identity over TCP, Noise and Yamux, running `behaviour`: a peer
/// that is no node of the network, for tests that speak to a node as a stranger.
pub(crate) fn stranger_swarm<B: libp2p::swarm::NetworkBehaviour>(behaviour: B) -> libp2p::Swarm<B> {
    stranger_swarm_with(|_| behaviour)
}

/// As [`stranger_swarm`], with a behaviour made from the stranger's key.
pub(crate) fn stranger_swarm_with<B: libp2p::swarm::NetworkBehaviour>(
    make: impl FnOnce(&libp2p::identity::Keypair) -> B,
) -> libp2p::Swarm<B> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(make)
        .unwrap()
        .build()
}

/// A share made where a test needs it: entering at a node that is not among its holders
/// and not in `avoid`, with every node of `held_by` among them (known once the genesis is
/// made, so shared again until one fits; sixty tries, each fitting with odds of at least
/// 2/7 in a 7-node R = 3 cluster, all miss with odds under 1e-8). Returns the sender's
/// client (entering at that node), the share, the indices of its holders, and the
/// entry's index.
pub(crate) async fn share_placed(
    cluster: &tigress_bootstrap::Cluster,
    dir: &Path,
    avoid: &[usize],
    held_by: &[usize],
) -> (
    tigress_client::Client,
    tigress_client::Shared,
    Vec<usize>,
    usize,
) {
    let keys: Vec<_> = (0..cluster.len())
        .map(|i| {
            cluster
                .node(i)
                .expect("a running node")
                .identity()
                .public_key()
        })
        .collect();
    let entries: Vec<usize> = (0..keys.len()).filter(|i| !avoid.contains(i)).collect();
    for attempt in 0..60 {
        let i = entries[attempt % entries.len()];
        let addr = cluster.addr(i).expect("a running node");
        let alice = client(&addr, dir.join(format!("alice-{attempt}"))).await;
        let shared = alice
            .share(
                b"front door",
                &tigress_protocol::session::ShareOptions::default(),
                None,
            )
            .await
            .expect("sharing");
        let state = alice
            .state()
            .load(&shared.share_id)
            .expect("the sender's state");
        let tigress_client::Party::Sender(session) = &state.party else {
            panic!("the sharer is the sender")
        };
        let members = session.genesis().header().lineup().members().to_vec();
        let holders: Vec<usize> = members
            .iter()
            .map(|m| {
                keys.iter()
                    .position(|k| k == m)
                    .expect("a holder of the cluster")
            })
            .collect();
        if !holders.contains(&i) && held_by.iter().all(|h| holders.contains(h)) {
            return (alice, shared, holders, i);
        }
    }
    panic!("no share was placed as the test needs in sixty tries")
}

/// The last lines of `files` and of every `node.log` one level under `cluster_dir`, for a
/// failure message that says why a cluster did not come up.
pub(crate) fn logs(files: &[PathBuf], cluster_dir: &Path) -> String {
    const LINES: usize = 30;
    let mut paths = files.to_vec();
    if let Ok(entries) = std::fs::read_dir(cluster_dir) {
        let mut nodes: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path().join("node.log"))
            .filter(|p| p.exists())
            .collect();
        nodes.sort();
        paths.extend(nodes);
    }
    let mut out = String::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| format!("({e})"));
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LINES)..];
        out.push_str(&format!(
            "--- {} ---\n{}\n",
            path.display(),
            tail.join("\n")
        ));
    }
    out
}
