//! `tigress-liar`: a development build of a relay node that lies in one way (see
//! `tigress_bootstrap::liar::Behaviour`), for `tigress-cluster up --byzantine K` and for
//! trying attacks by hand. It takes the config file `tigress-cluster up` writes and prints
//! the same start-up line as `tigress-node`. Never run it on a network you care about.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tigress_bootstrap::liar::{self, Behaviour};
use tigress_node::{Config, Node, NodeIdentity};
use tigress_protocol::crypto::PublicKey;

/// A lying tigress relay node, for tests.
#[derive(Debug, Parser)]
#[command(name = "tigress-liar", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a lying node until SIGINT or SIGTERM.
    Run {
        /// The node's TOML configuration file.
        #[arg(long)]
        config: PathBuf,
        /// How it lies.
        #[arg(long, value_enum)]
        behaviour: Behaviour,
        /// Another liar's peer ID (repeatable; a lying locate names them).
        #[arg(long)]
        fellow: Vec<libp2p::PeerId>,
        /// For a Sybil: the address (64 hex digits) to grind the node's peer ID near,
        /// when its data directory has no identity yet.
        #[arg(long)]
        near: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p_kad=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let Command::Run {
        config,
        behaviour,
        fellow,
        near,
    } = Cli::parse().command;
    let config = Config::from_file(&config)?;
    let dir = config.data_dir();
    std::fs::create_dir_all(&dir)?;
    let key_file = dir.join(tigress_node::identity::IDENTITY_FILE);
    if let Some(hex) = near
        && !key_file.exists()
    {
        let address: tigress_protocol::Address = hex
            .parse()
            .map_err(|_| anyhow::anyhow!("--near must be an address: 64 hex digits"))?;
        let seed = liar::ground_within(&address, liar::SYBIL_BITS);
        std::fs::write(&key_file, seed)?;
    }
    let identity = NodeIdentity::load_or_create(&dir)?;
    let fellows: Vec<PublicKey> = fellow
        .iter()
        .filter_map(tigress_node::identity::key_of)
        .collect();
    let node = Node::start_with(config, behaviour.doubles(&identity, &fellows)).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", node.startup_line())?;
        out.flush()?;
    }
    tracing::warn!(behaviour = %behaviour, "this node lies");
    tigress_node::shutdown_signal().await;
    node.shutdown().await;
    Ok(())
}
