//! A cluster of `tigress-node` processes on 127.0.0.1, as `tigress-cluster up` runs it.
//!
//! Node `i` keeps everything under `DIR/node-i`: its data, its `config.toml` (with the
//! ports it actually bound, so `tigress-node run --config DIR/node-i/config.toml` restarts
//! it on the same address and it rejoins), and its log `node.log`. Node 0 seeds the others.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tigress_protocol::rpc::{ClientRequest, ClientResponse};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::liar::Behaviour;
use crate::ready;

/// One node of `cluster.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// The peer ID.
    pub peer_id: String,
    /// The multiaddr to dial, with `/p2p/<peer_id>`.
    pub multiaddr: String,
    /// The HTTP address.
    pub http: String,
    /// The admin address (`/metrics`, `/status`).
    #[serde(default)]
    pub admin: String,
    /// The process ID.
    pub pid: u32,
    /// The data directory.
    pub data_dir: PathBuf,
    /// `"honest"`, or how the node lies (`tigress-liar`): tests route through liars by it.
    #[serde(default = "honest")]
    pub behaviour: String,
}

fn honest() -> String {
    Behaviour::Honest.name().to_owned()
}

/// The lying nodes of a cluster: the last `count` nodes (never node 0, the seed) run
/// `bin` (`tigress-liar`) with `behaviour`.
#[derive(Debug, Clone)]
pub struct Liars {
    /// How many.
    pub count: usize,
    /// How they lie.
    pub behaviour: Behaviour,
    /// The `tigress-liar` binary.
    pub bin: PathBuf,
    /// For Sybils: the address (hex) their peer IDs are ground near.
    pub near: Option<String>,
}

/// The `tigress-liar` binary beside the running executable, else on PATH.
pub fn default_liar_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("tigress-liar")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("tigress-liar"))
}

/// `cluster.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFile {
    /// The nodes, node 0 first.
    pub nodes: Vec<NodeEntry>,
}

impl ClusterFile {
    /// Reads a cluster file.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// What `up` starts.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// How many nodes.
    pub nodes: usize,
    /// Where the nodes keep their data, and where `cluster.json` goes.
    pub dir: PathBuf,
    /// Node `i` listens on `base_port + i` and serves HTTP on `base_port + 1000 + i`;
    /// without it, free ports are chosen.
    pub base_port: Option<u16>,
    /// The network's replication factor.
    pub replication: u8,
    /// The `tigress-node` binary.
    pub node_bin: PathBuf,
    /// Extra flags for every node.
    pub extra_args: Vec<String>,
    /// Lying nodes, if any.
    pub liars: Option<Liars>,
}

/// The `tigress-node` binary beside the running executable, else `tigress-node` on PATH.
pub fn default_node_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("tigress-node")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("tigress-node"))
}

/// A running process cluster.
pub struct ProcessCluster {
    children: Vec<Option<Child>>,
    file: ClusterFile,
    dir: PathBuf,
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

async fn write_config(
    path: &Path,
    data_dir: &Path,
    listen: &str,
    http: &str,
    admin: &str,
    replication: u8,
    seed: Option<&str>,
) -> anyhow::Result<()> {
    let mut text = String::from(
        "# Written by tigress-cluster up; restart this node with\n# tigress-node run --config <this file>\n",
    );
    text.push_str(&format!(
        "data_dir = {}\n",
        toml_string(&data_dir.display().to_string())
    ));
    text.push_str(&format!("listen = [{}]\n", toml_string(listen)));
    text.push_str(&format!("http = {}\n", toml_string(http)));
    text.push_str(&format!("admin = {}\n", toml_string(admin)));
    text.push_str(&format!("replication = {replication}\n"));
    // Loopback is reachable: no AutoNAT probes to wait for.
    text.push_str("reachability = \"public\"\n");
    // Every node of a local cluster shares 127.0.0.1: no network-prefix limits.
    text.push_str("max_peers_per_prefix = 0\nmax_peers_per_prefix_per_bucket = 0\n");
    if let Some(seed) = seed {
        text.push_str(&format!("bootstrap = [{}]\n", toml_string(seed)));
    }
    // ...and no per-source budgets for it (other sources are counted as anywhere).
    text.push_str("\n[budgets]\nexempt = [\"127.0.0.1/32\"]\n");
    tokio::fs::write(path, text).await?;
    Ok(())
}

impl ProcessCluster {
    /// Starts the nodes one by one (node 0 first), then waits until the DHT is connected.
    pub async fn up(opts: &UpOptions) -> anyhow::Result<Self> {
        tokio::fs::create_dir_all(&opts.dir).await?;
        let dir = std::path::absolute(&opts.dir)?;
        let mut children = Vec::new();
        let mut entries: Vec<NodeEntry> = Vec::new();
        let liar_count = opts.liars.as_ref().map_or(0, |l| l.count);
        if liar_count >= opts.nodes && liar_count > 0 {
            anyhow::bail!(
                "--byzantine must leave node 0 honest: at most {}",
                opts.nodes.saturating_sub(1)
            );
        }
        let first_liar = opts.nodes - liar_count;
        // The liars' identities first, so each knows its fellows (a lying locate names
        // them); a Sybil's is ground near its target address.
        let mut liar_ids: Vec<libp2p::PeerId> = Vec::new();
        if let Some(liars) = &opts.liars {
            for i in first_liar..opts.nodes {
                let node_dir = dir.join(format!("node-{i}"));
                tokio::fs::create_dir_all(&node_dir).await?;
                if liars.behaviour == Behaviour::Sybil {
                    let hex = liars.near.as_deref().ok_or_else(|| {
                        anyhow::anyhow!("--behaviour sybil needs --near ADDRESS (64 hex digits)")
                    })?;
                    let address: tigress_protocol::Address = hex
                        .parse()
                        .map_err(|_| anyhow::anyhow!("--near must be an address: 64 hex digits"))?;
                    let seed = crate::liar::ground_within(&address, crate::liar::SYBIL_BITS);
                    std::fs::write(node_dir.join(tigress_node::identity::IDENTITY_FILE), seed)?;
                }
                liar_ids.push(tigress_node::NodeIdentity::load_or_create(&node_dir)?.peer_id());
            }
        }
        for i in 0..opts.nodes {
            let node_dir = dir.join(format!("node-{i}"));
            tokio::fs::create_dir_all(&node_dir).await?;
            let lying = opts.liars.as_ref().filter(|_| i >= first_liar);
            let offset = u16::try_from(i)?;
            let (p2p, http, admin) = match opts.base_port {
                Some(p) => (
                    p.saturating_add(offset),
                    p.saturating_add(1000).saturating_add(offset),
                    p.saturating_add(2000).saturating_add(offset),
                ),
                None => (0, 0, 0),
            };
            let listen = format!("/ip4/127.0.0.1/tcp/{p2p}");
            let http_addr = format!("127.0.0.1:{http}");
            let admin_addr = format!("127.0.0.1:{admin}");
            let seed = entries.first().map(|e| e.multiaddr.clone());
            let config = node_dir.join("config.toml");
            write_config(
                &config,
                &node_dir,
                &listen,
                &http_addr,
                &admin_addr,
                opts.replication,
                seed.as_deref(),
            )
            .await?;
            let log = std::fs::File::create(node_dir.join("node.log"))?;
            let mut command = match lying {
                None => {
                    let mut c = Command::new(&opts.node_bin);
                    c.arg("run")
                        .arg("--config")
                        .arg(&config)
                        .args(&opts.extra_args);
                    c
                }
                Some(liars) => {
                    let mut c = Command::new(&liars.bin);
                    c.arg("run")
                        .arg("--config")
                        .arg(&config)
                        .arg("--behaviour")
                        .arg(liars.behaviour.name());
                    let me = liar_ids.get(i - first_liar).copied();
                    for fellow in liar_ids.iter().filter(|f| Some(**f) != me) {
                        c.arg("--fellow").arg(fellow.to_string());
                    }
                    c
                }
            };
            let bin = lying.map_or(&opts.node_bin, |l| &l.bin);
            let mut child = command
                .stdout(Stdio::piped())
                .stderr(Stdio::from(log))
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| anyhow::anyhow!("starting {}: {e}", bin.display()))?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
            let mut lines = BufReader::new(stdout).lines();
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "node {i} did not start within 30 s (see {})",
                        node_dir.join("node.log").display()
                    )
                })??
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "node {i} exited at start (see {})",
                        node_dir.join("node.log").display()
                    )
                })?;
            // Keep draining stdout so the node never blocks on it.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                    .map(str::to_owned)
                    .ok_or_else(|| anyhow::anyhow!("node {i}: no {name} in {line:?}"))
            };
            let peer_id = field("peer_id")?;
            let bound = field("listen")?
                .split(',')
                .next()
                .unwrap_or_default()
                .to_owned();
            let http_bound = field("http")?;
            let admin_bound = field("admin")?;
            // Record the bound ports so a restart by hand uses the same address.
            write_config(
                &config,
                &node_dir,
                &bound,
                &http_bound,
                &admin_bound,
                opts.replication,
                seed.as_deref(),
            )
            .await?;
            entries.push(NodeEntry {
                multiaddr: format!("{bound}/p2p/{peer_id}"),
                peer_id,
                http: http_bound,
                admin: admin_bound,
                pid: child.id().unwrap_or(0),
                data_dir: node_dir,
                behaviour: lying
                    .map_or(Behaviour::Honest, |l| l.behaviour)
                    .name()
                    .to_owned(),
            });
            children.push(Some(child));
        }
        let cluster = Self {
            children,
            file: ClusterFile { nodes: entries },
            dir,
        };
        cluster
            .wait_ready(opts.replication, Duration::from_secs(180))
            .await?;
        Ok(cluster)
    }

    /// Kills node `i` with SIGKILL (a crash: nothing flushed, nothing answered) and reaps
    /// it.
    pub async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let slot = self
            .children
            .get_mut(i)
            .ok_or_else(|| anyhow::anyhow!("no node {i}"))?;
        if let Some(mut child) = slot.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// Starts node `i` again from its configuration file: the same addresses, identity
    /// and data. Returns once it printed its startup line.
    pub async fn restart(&mut self, i: usize, node_bin: &Path) -> anyhow::Result<()> {
        let entry = self
            .file
            .nodes
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("no node {i}"))?;
        let node_dir = entry.data_dir.clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node_dir.join("node.log"))?;
        let mut child = Command::new(node_bin)
            .arg("run")
            .arg("--config")
            .arg(node_dir.join("config.toml"))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {}: {e}", node_bin.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| anyhow::anyhow!("node {i} did not restart within 30 s"))??
            .ok_or_else(|| anyhow::anyhow!("node {i} exited at restart"))?;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        if let Some(e) = self.file.nodes.get_mut(i) {
            e.pid = child.id().unwrap_or(0);
        }
        if let Some(slot) = self.children.get_mut(i) {
            *slot = Some(child);
        }
        Ok(())
    }

    /// The cluster file's content.
    pub fn file(&self) -> &ClusterFile {
        &self.file
    }

    /// Writes `DIR/cluster.json`; returns its path.
    pub fn write_file(&self) -> anyhow::Result<PathBuf> {
        let path = self.dir.join("cluster.json");
        std::fs::write(&path, serde_json::to_string_pretty(&self.file)?)?;
        Ok(path)
    }

    /// Waits until every node's lookups find, for each probe address, the same R closest
    /// nodes the whole cluster would name (see [`crate::ready`]), asking each node over
    /// the client protocol.
    pub async fn wait_ready(&self, replication: u8, limit: Duration) -> anyhow::Result<()> {
        let r = usize::from(replication);
        let peers: Vec<libp2p::PeerId> = self
            .file
            .nodes
            .iter()
            .map(|n| n.peer_id.parse())
            .collect::<Result<_, _>>()?;
        let mut connections = Vec::with_capacity(self.file.nodes.len());
        for node in &self.file.nodes {
            let addr: libp2p::Multiaddr = node.multiaddr.parse()?;
            connections.push(tigress_client::Connection::connect(&addr).await?);
        }
        let honest: Vec<bool> = self
            .file
            .nodes
            .iter()
            .map(|n| n.behaviour == Behaviour::Honest.name())
            .collect();
        ready::wait(
            connections.len(),
            &peers,
            |_| r,
            limit,
            // A lying node's own answer says nothing about the cluster: it is not asked.
            async |i, address, _| match connections.get(i) {
                Some(_) if !honest.get(i).copied().unwrap_or(true) => {
                    ready::closest(&peers, &address, r)
                }
                Some(conn) => match conn.request(ClientRequest::Locate { address }).await {
                    Ok(ClientResponse::Located { replicas, .. }) => replicas.into_vec(),
                    _ => Vec::new(),
                },
                None => Vec::new(),
            },
        )
        .await
    }

    /// Reports node processes that exited; returns how many are still running.
    pub fn reap(&mut self) -> usize {
        let mut running = 0;
        for (i, slot) in self.children.iter_mut().enumerate() {
            if let Some(child) = slot {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        eprintln!(
                            "tigress-cluster: node {i} (pid {}) exited: {status}",
                            child.id().unwrap_or(0)
                        );
                        *slot = None;
                    }
                    Ok(None) => running += 1,
                    Err(e) => eprintln!("tigress-cluster: node {i}: {e}"),
                }
            }
        }
        running
    }

    /// The PIDs of the node processes still owned by this cluster.
    pub fn pids(&self) -> Vec<u32> {
        self.children
            .iter()
            .flatten()
            .filter_map(Child::id)
            .collect()
    }

    /// Stops every node with SIGTERM and waits for it (SIGKILL after 30 s).
    pub async fn stop(mut self) {
        for child in self.children.iter().flatten() {
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        for child in self.children.iter_mut().flatten() {
            if tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

/// A minimal HTTP/1.1 GET on loopback.
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await??;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut body)).await??;
    Ok(body)
}

/// The value of an unlabelled gauge in Prometheus text.
pub fn gauge(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
