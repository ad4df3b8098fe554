//! `tigress-cluster`: local multi-node clusters (`up`), the end-to-end benchmark
//! (`bench`) and the deterministic simulator (`simulate`).

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use libp2p::Multiaddr;
use tigress_bootstrap::bench::{self, BenchOptions};
use tigress_bootstrap::liar::Behaviour;
use tigress_bootstrap::process::{
    ClusterFile, Liars, ProcessCluster, UpOptions, default_liar_bin, default_node_bin,
};

/// Local tigress clusters and benchmarks.
#[derive(Debug, Parser)]
#[command(name = "tigress-cluster", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start N node processes on 127.0.0.1 and run until SIGINT/SIGTERM.
    Up {
        /// How many nodes.
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// Where node data and cluster.json go.
        #[arg(long)]
        dir: PathBuf,
        /// Node i listens on P+i (HTTP on P+1000+i, admin on P+2000+i); default: free ports.
        #[arg(long)]
        base_port: Option<u16>,
        /// The replication factor.
        #[arg(long, default_value_t = 5)]
        replication: u8,
        /// The tigress-node binary (default: beside this one, else on PATH).
        #[arg(long)]
        node_bin: Option<PathBuf>,
        /// Start the last K nodes (never node 0) lying, with `tigress-liar`.
        #[arg(long, default_value_t = 0)]
        byzantine: usize,
        /// How the lying nodes lie.
        #[arg(long, value_enum, default_value_t = Behaviour::Equivocate)]
        behaviour: Behaviour,
        /// For `--behaviour sybil`: the mailbox address (64 hex digits) whose replicas the
        /// Sybils' ground peer IDs are nearer to.
        #[arg(long)]
        near: Option<String>,
        /// The tigress-liar binary (default: beside this one, else on PATH).
        #[arg(long)]
        liar_bin: Option<PathBuf>,
        /// Run the nodes in this process instead of one process each (for hundreds of
        /// nodes on a small machine); no HTTP or admin listeners, no liars.
        #[arg(long, conflicts_with_all = ["byzantine", "base_port"])]
        in_process: bool,
    },
    /// Run an in-process network of N relays while a fraction of them leaves and rejoins
    /// every minute: sampled lookups (hops, requests, success, placement agreement) and
    /// transfers through random nodes; then read back every acknowledged write. Ends with
    /// one `scale ...` line.
    Scale {
        /// Relays in the network.
        #[arg(long, default_value_t = 50)]
        nodes: usize,
        /// The fraction of the nodes that leaves per minute (each comes back 30 s later).
        #[arg(long, default_value_t = 0.0)]
        churn: f64,
        /// Wall-clock minutes of transfers and lookups.
        #[arg(long, default_value_t = 1.0)]
        minutes: f64,
        /// The replication factor.
        #[arg(long, default_value_t = 5)]
        replication: u8,
        /// Transfers at a time.
        #[arg(long, default_value_t = 8)]
        writers: usize,
        /// Seed for the leaving nodes, entries and looked-up addresses.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Run complete transfers and report throughput and latency.
    Bench {
        /// A cluster file written by `up`.
        #[arg(long, conflicts_with_all = ["node", "nodes"])]
        cluster: Option<PathBuf>,
        /// One node's multiaddr.
        #[arg(long, conflicts_with = "nodes")]
        node: Option<Multiaddr>,
        /// Start a throwaway cluster of N node processes.
        #[arg(long)]
        nodes: Option<usize>,
        /// The throwaway cluster's replication factor.
        #[arg(long, default_value_t = 5)]
        replication: u8,
        /// Transfers in all.
        #[arg(long, default_value_t = 2000)]
        transfers: usize,
        /// Transfers at a time.
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
        /// Messages after the first payload.
        #[arg(long, default_value_t = 3)]
        messages: usize,
        /// Bytes per payload and message.
        #[arg(long, default_value_t = 1024)]
        payload_bytes: usize,
        /// Requests straight to the nodes instead of oblivious requests through relays.
        #[arg(long)]
        direct: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// The tigress-node binary for --nodes.
        #[arg(long)]
        node_bin: Option<PathBuf>,
    },
    /// Flood a throwaway process cluster from other loopback hosts while honest users
    /// transfer through the flooded node; one line per scenario.
    Abuse {
        /// The scenario (`all`: every one).
        #[arg(long)]
        scenario: String,
        /// Seconds of flood (after a quiet phase of half as long).
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Nodes in the cluster.
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// The tigress-node binary (default: beside this one, else on PATH).
        #[arg(long)]
        node_bin: Option<PathBuf>,
    },
    /// Kill random nodes of a throwaway process cluster with SIGKILL (sometimes two at
    /// once) and restart them while writers create shares and send messages; then read
    /// back every acknowledged write. Exits 1 when one was lost.
    Soak {
        /// Kill-and-restart cycles.
        #[arg(long, default_value_t = 20)]
        cycles: usize,
        /// Writers at a time.
        #[arg(long, default_value_t = 20)]
        writers: usize,
        /// Nodes in the cluster.
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// The replication factor.
        #[arg(long, default_value_t = 5)]
        replication: u8,
        /// Seed for the victims and pauses.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The tigress-node binary (default: beside this one, else on PATH).
        #[arg(long)]
        node_bin: Option<PathBuf>,
    },
    /// Run the deterministic simulator: claim races and message exchanges on the
    /// protocol's state machines under injected faults, checking the invariants at every
    /// step. Exits 1 when an invariant broke, with the first on stderr.
    Simulate {
        /// Relay nodes.
        #[arg(long, default_value_t = 16)]
        nodes: usize,
        /// Replicas per mailbox.
        #[arg(long, default_value_t = 5)]
        replication: usize,
        /// Claim races (two or three claimants for one slot).
        #[arg(long, default_value_t = 1000)]
        claim_races: u64,
        /// Messages exchanged between senders and recipients.
        #[arg(long, default_value_t = 1000)]
        exchanges: u64,
        /// Lying replicas in every replica set.
        #[arg(long, default_value_t = 0)]
        liars: usize,
        /// Instead: this fraction of the nodes lies (equivocates, withholds) and mailboxes
        /// live on the nodes nearest their address; prints a second line with how many
        /// replica sets held more than f liars and how many mailboxes got more
        /// certificates than allowed.
        #[arg(long)]
        liar_fraction: Option<f64>,
        /// The seed; the same seed replays the same run.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Sign with real Ed25519 instead of the simulator's keyed hash.
        #[arg(long)]
        ed25519: bool,
        /// The lying replicas each genesis tolerates (f); default the most the replica set
        /// allows, ⌊(R − 1) / 4⌋. Lower it to watch liars break a weaker claim quorum.
        #[arg(long)]
        fault_tolerance: Option<u8>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,yamux=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Simulate {
            nodes,
            replication,
            claim_races,
            exchanges,
            liars,
            liar_fraction,
            seed,
            ed25519,
            fault_tolerance,
        } => {
            if liar_fraction.is_some_and(|p| !(0.0..1.0).contains(&p))
                || (liar_fraction.is_some() && liars > 0)
            {
                anyhow::bail!("--liar-fraction is in [0, 1) and excludes --liars");
            }
            if replication == 0 || nodes == 0 || liars > replication {
                anyhow::bail!(
                    "--nodes and --replication must be at least 1, and --liars at most --replication"
                );
            }
            let most = tigress_protocol::record::max_fault_tolerance(replication);
            if fault_tolerance.is_some_and(|f| f > most) {
                anyhow::bail!("--fault-tolerance is at most (replication - 1) / 4 = {most}");
            }
            let config = tigress_sim::Config {
                nodes,
                replication,
                claim_races,
                exchanges,
                liars,
                liar_fraction: liar_fraction.unwrap_or(0.0),
                seed,
                signatures: if ed25519 {
                    tigress_sim::Signatures::Ed25519
                } else {
                    tigress_sim::Signatures::Simulated
                },
                rules: tigress_sim::Rules {
                    fault_tolerance,
                    ..tigress_sim::Rules::default()
                },
                ..tigress_sim::Config::default()
            };
            let started = std::time::Instant::now();
            let report = tokio::task::spawn_blocking(move || tigress_sim::run(&config)).await?;
            let seconds = started.elapsed().as_secs_f64();
            writeln!(std::io::stdout().lock(), "{}", report.line(seconds))?;
            if let Some(p) = liar_fraction {
                writeln!(std::io::stdout().lock(), "{}", report.byzantine_line(p))?;
            }
            if let Some(first) = &report.first_violation {
                eprintln!("first violation (seed {seed}): {first}");
                for (invariant, n) in &report.by_invariant {
                    eprintln!("  {invariant}: {n}");
                }
                std::process::exit(1);
            }
        }
        Command::Up {
            nodes,
            dir,
            base_port,
            replication,
            node_bin,
            byzantine,
            behaviour,
            near,
            liar_bin,
            in_process,
        } => {
            if in_process {
                return up_in_process(nodes, &dir, replication).await;
            }
            let opts = UpOptions {
                nodes,
                dir,
                base_port,
                replication,
                node_bin: node_bin.unwrap_or_else(default_node_bin),
                extra_args: Vec::new(),
                liars: (byzantine > 0).then(|| Liars {
                    count: byzantine,
                    behaviour,
                    bin: liar_bin.unwrap_or_else(default_liar_bin),
                    near,
                }),
            };
            let mut cluster = ProcessCluster::up(&opts).await?;
            let file = cluster.write_file()?;
            {
                let mut out = std::io::stdout().lock();
                writeln!(
                    out,
                    "tigress-cluster ready nodes={nodes} file={}",
                    file.display()
                )?;
                out.flush()?;
            }
            let mut watch = tokio::time::interval(std::time::Duration::from_millis(500));
            let stop = tigress_node::shutdown_signal();
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    _ = watch.tick() => { cluster.reap(); }
                }
            }
            cluster.stop().await;
        }
        Command::Scale {
            nodes,
            churn,
            minutes,
            replication,
            writers,
            seed,
        } => {
            raise_open_files(nodes);
            let dir = tempfile::tempdir()?;
            let report = tigress_bootstrap::scale::run(
                &tigress_bootstrap::scale::ScaleOptions {
                    nodes,
                    churn,
                    minutes,
                    replication,
                    writers,
                    seed,
                },
                dir.path(),
            )
            .await?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", report.detail())?;
            writeln!(out, "{}", report.line())?;
        }
        Command::Abuse {
            scenario,
            seconds,
            nodes,
            node_bin,
        } => {
            let node_bin = node_bin.unwrap_or_else(default_node_bin);
            let scenarios: Vec<String> = if scenario == "all" {
                tigress_bootstrap::abuse::SCENARIOS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            } else {
                vec![scenario]
            };
            for s in scenarios {
                let dir = tempfile::tempdir()?;
                let report = tigress_bootstrap::abuse::run(
                    &s,
                    seconds,
                    std::time::Duration::from_secs(30),
                    nodes,
                    &node_bin,
                    dir.path(),
                )
                .await?;
                writeln!(std::io::stdout().lock(), "{}", report.line())?;
            }
        }
        Command::Soak {
            cycles,
            writers,
            nodes,
            replication,
            seed,
            node_bin,
        } => {
            let dir = tempfile::tempdir()?;
            let report = tigress_bootstrap::soak::run(
                &tigress_bootstrap::soak::SoakOptions {
                    cycles,
                    writers,
                    nodes,
                    replication,
                    node_bin: node_bin.unwrap_or_else(default_node_bin),
                    seed,
                },
                dir.path(),
            )
            .await?;
            writeln!(std::io::stdout().lock(), "{}", report.line())?;
            if report.writes_lost > 0 {
                std::process::exit(1);
            }
        }
        Command::Bench {
            cluster,
            node,
            nodes,
            replication,
            transfers,
            concurrency,
            messages,
            payload_bytes,
            direct,
            json,
            node_bin,
        } => {
            let opts = BenchOptions {
                transfers,
                concurrency,
                messages,
                payload_bytes,
                direct,
            };
            let mut throwaway = None;
            let admins_of = |file: &ClusterFile| -> Vec<String> {
                file.nodes
                    .iter()
                    .filter(|n| !n.admin.is_empty())
                    .map(|n| n.admin.clone())
                    .collect()
            };
            let (addrs, pids, admins): (Vec<Multiaddr>, Vec<u32>, Vec<String>) =
                if let Some(path) = cluster {
                    let file = ClusterFile::read(&path)?;
                    (
                        file.nodes
                            .iter()
                            .map(|n| n.multiaddr.parse())
                            .collect::<Result<_, _>>()?,
                        file.nodes.iter().map(|n| n.pid).collect(),
                        admins_of(&file),
                    )
                } else if let Some(addr) = node {
                    (vec![addr], Vec::new(), Vec::new())
                } else {
                    let n = nodes.unwrap_or(1);
                    let dir = tempfile::tempdir()?;
                    let up = ProcessCluster::up(&UpOptions {
                        nodes: n,
                        dir: dir.path().to_path_buf(),
                        base_port: None,
                        replication,
                        node_bin: node_bin.unwrap_or_else(default_node_bin),
                        extra_args: Vec::new(),
                        liars: None,
                    })
                    .await?;
                    let addrs = up
                        .file()
                        .nodes
                        .iter()
                        .map(|n| n.multiaddr.parse())
                        .collect::<Result<_, _>>()?;
                    let pids = up.pids();
                    let admins = admins_of(up.file());
                    throwaway = Some((up, dir));
                    (addrs, pids, admins)
                };
            let report = bench::run(&addrs, &pids, &admins, &opts).await?;
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(out, "{}", report.json())?;
            } else {
                if let Some(crypto) = report.crypto_line() {
                    writeln!(out, "{crypto}")?;
                }
                writeln!(out, "{}", report.line())?;
            }
            drop(out);
            if let Some((up, _dir)) = throwaway {
                up.stop().await;
            }
        }
    }
    Ok(())
}

/// Raises this process's open-file limit for `nodes` in-process nodes: both ends of every
/// connection between them are descriptors of this process (200 nodes hold tens of
/// thousands). Asks for what they may need, else takes the hard limit; says so when the
/// limit stays below that.
fn raise_open_files(nodes: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let want = (nodes as u64).saturating_mul(400).max(4096);
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft >= want {
        return;
    }
    // Raising the hard limit needs privilege; without it, the hard limit is the most.
    if setrlimit(Resource::RLIMIT_NOFILE, want, want.max(hard)).is_err() {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard.min(want), hard);
    }
    let now = getrlimit(Resource::RLIMIT_NOFILE).map_or(soft, |(s, _)| s);
    if now < want {
        tracing::warn!(
            limit = now,
            wanted = want,
            "the open-file limit is low for this many in-process nodes; connections may fail"
        );
    }
}

/// `up --in-process`: N nodes in this process, `cluster.json` in `dir`, until a signal.
async fn up_in_process(nodes: usize, dir: &std::path::Path, replication: u8) -> anyhow::Result<()> {
    let cluster = tigress_bootstrap::Cluster::start_under(dir, nodes, |_, c| {
        c.replication = replication;
        if nodes > 50 {
            tigress_bootstrap::cluster::large(c);
        }
    })
    .await?;
    let pid = std::process::id();
    let file = ClusterFile {
        nodes: (0..cluster.len())
            .filter_map(|i| {
                let node = cluster.node(i)?;
                Some(tigress_bootstrap::process::NodeEntry {
                    peer_id: node.peer_id().to_string(),
                    multiaddr: cluster.addr(i)?.to_string(),
                    http: String::new(),
                    admin: String::new(),
                    pid,
                    data_dir: cluster.dir().join(format!("node-{i}")),
                    behaviour: "honest".into(),
                })
            })
            .collect(),
    };
    let path = dir.join("cluster.json");
    std::fs::write(&path, serde_json::to_string_pretty(&file)?)?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "tigress-cluster ready nodes={nodes} file={}",
            path.display()
        )?;
        out.flush()?;
    }
    tigress_node::shutdown_signal().await;
    cluster.shutdown().await;
    Ok(())
}
