//! `tigress-bootstrap`: joining and running tigress networks.
//!
//! - Seeds: a node joins through seed nodes given as flags (`--bootstrap`), in its config
//!   file (`bootstrap = [...]`) or in a seeds file (`seeds_file`, one multiaddr per line);
//!   [`parse_seeds`] reads that file format.
//! - The bootstrap role: `tigress-node run --role bootstrap` runs a node that only routes
//!   (Kademlia) and stores nothing; relays never pick it as a replica.
//! - Local clusters: [`Cluster`] runs N nodes in one runtime for tests;
//!   [`process::ProcessCluster`] runs N `tigress-node` processes, as the `tigress-cluster`
//!   binary does (`tigress-cluster up`, `tigress-cluster bench`); both are ready when
//!   every node's lookups agree on where mailboxes live ([`ready`]).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let cluster = tigress_bootstrap::Cluster::start(5, |_, _| {}).await?;
//! let entry = cluster.addr(3).expect("node 3 runs");
//! cluster.shutdown().await;
//! # let _ = entry; Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod abuse;
pub mod bench;
pub mod cluster;
pub mod liar;
pub mod process;
pub mod ready;
pub mod scale;
pub mod soak;

pub use cluster::Cluster;
pub use tigress_node::config::parse_seeds;
