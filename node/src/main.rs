//! The `tigress-node` binary: parse flags, load the config, run a [`tigress_node::Node`].

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tigress_node::{Config, Node, NodeIdentity, NodeRole, Reachability};

/// The allocator. A node allocates and frees buffers for every frame, record and task;
/// mimalloc, backed by the transparent huge pages it asks for, takes 6–18 % off a
/// replicated transfer's CPU for about 2.5 times the memory (BENCHMARKS.md, "After the
/// allocator"). `MIMALLOC_ALLOW_THP=0` in the environment gives the memory back.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A relay node of the tigress credential-sharing network.
#[derive(Debug, Parser)]
#[command(name = "tigress-node", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node until SIGINT or SIGTERM.
    Run(Box<RunArgs>),
    /// Print the node's peer ID (creating its identity if needed).
    Id {
        /// The data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// A TOML configuration file (see node/config.example.toml); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The data directory (identity and database).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A libp2p listen multiaddr (repeatable).
    #[arg(long)]
    listen: Vec<String>,
    /// The public HTTP address (/health, the gateway).
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Disable HTTP.
    #[arg(long, conflicts_with = "http")]
    no_http: bool,
    /// The admin listener (/metrics, /status); default 127.0.0.1:9090, or a free port
    /// when that is taken.
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Disable the admin listener.
    #[arg(long, conflicts_with = "admin")]
    no_admin: bool,
    /// The base of share URLs made through this node.
    #[arg(long)]
    public_url: Option<String>,
    /// HTTPS on the public port: a PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// HTTPS with certificates from an ACME CA for this domain name (the public port must
    /// be reachable under it on port 443).
    #[arg(long, requires = "acme_contact", conflicts_with = "tls_cert")]
    acme_domain: Option<String>,
    /// The contact e-mail address given to the ACME CA.
    #[arg(long, requires = "acme_domain")]
    acme_contact: Option<String>,
    /// The ACME CA's directory URL (default: Let's Encrypt).
    #[arg(long, requires = "acme_domain")]
    acme_directory: Option<String>,
    /// Extra root certificates (PEM) to trust for the ACME CA's own HTTPS (a private CA).
    #[arg(long, requires = "acme_domain")]
    acme_root: Option<PathBuf>,
    /// A seed node multiaddr with /p2p/<peer-id> (repeatable).
    #[arg(long)]
    bootstrap: Vec<String>,
    /// A file of seed multiaddrs, one per line.
    #[arg(long)]
    seeds_file: Option<PathBuf>,
    /// relay (stores mailboxes) or bootstrap (routes only).
    #[arg(long, value_enum)]
    role: Option<NodeRole>,
    /// Whether other nodes can dial this one: auto (AutoNAT decides), public, or private
    /// (behind NAT: a client of the network, never a replica).
    #[arg(long, value_enum)]
    reachability: Option<Reachability>,
    /// The network's replication factor.
    #[arg(long)]
    replication: Option<u8>,
    /// The most bytes this node stores.
    #[arg(long)]
    quota_bytes: Option<u64>,
    /// Seconds between sweeps of expired mailboxes.
    #[arg(long)]
    sweep_interval_secs: Option<u64>,
    /// Seconds between anti-entropy rounds.
    #[arg(long)]
    anti_entropy_interval_secs: Option<u64>,
    /// Milliseconds an entry node waits for each replica.
    #[arg(long)]
    replica_timeout_ms: Option<u64>,
}

fn config_of(args: RunArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if args.data_dir.is_some() {
        config.data_dir = args.data_dir;
    }
    if !args.listen.is_empty() {
        config.listen = args.listen;
    }
    if args.http.is_some() {
        config.http = args.http;
    }
    if args.no_http {
        config.http = None;
    }
    if let Some(admin) = args.admin {
        config.admin = Some(admin.to_string());
    }
    if args.no_admin {
        config.admin = Some("off".to_owned());
    }
    if args.public_url.is_some() {
        config.public_url = args.public_url;
    }
    if args.tls_cert.is_some() {
        config.tls_cert = args.tls_cert;
        config.tls_key = args.tls_key;
    }
    if args.acme_domain.is_some() {
        config.acme_domain = args.acme_domain;
        config.acme_contact = args.acme_contact;
    }
    if args.acme_directory.is_some() {
        config.acme_directory = args.acme_directory;
    }
    if args.acme_root.is_some() {
        config.acme_root = args.acme_root;
    }
    if !args.bootstrap.is_empty() {
        config.bootstrap = args.bootstrap;
    }
    if args.seeds_file.is_some() {
        config.seeds_file = args.seeds_file;
    }
    if let Some(role) = args.role {
        config.role = role;
    }
    if let Some(r) = args.reachability {
        config.reachability = r;
    }
    if let Some(r) = args.replication {
        config.replication = r;
    }
    if let Some(q) = args.quota_bytes {
        config.quota_bytes = q;
    }
    if let Some(s) = args.sweep_interval_secs {
        config.sweep_interval_secs = s;
    }
    if let Some(s) = args.anti_entropy_interval_secs {
        config.anti_entropy_interval_secs = s;
    }
    if let Some(t) = args.replica_timeout_ms {
        config.replica_timeout_ms = t;
    }
    config.validate()?;
    Ok(config)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, no backtrace.
            eprintln!("tigress-node: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p_kad=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Id { data_dir } => {
            let dir = Config {
                data_dir,
                ..Config::default()
            }
            .data_dir();
            let identity = NodeIdentity::load_or_create(&dir)
                .with_context(|| format!("data directory {}", dir.display()))?;
            writeln!(std::io::stdout(), "{}", identity.peer_id())?;
        }
        Command::Run(args) => {
            let config = config_of(*args)?;
            let node = Node::start(config).await?;
            {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", node.startup_line())?;
                out.flush()?;
            }
            tigress_node::shutdown_signal().await;
            tracing::info!("stopping");
            node.shutdown().await;
        }
    }
    Ok(())
}
