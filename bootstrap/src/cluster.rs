//! An in-process cluster: N nodes in one tokio runtime, on loopback, for tests.

use std::time::Duration;

use libp2p::Multiaddr;
use tigress_node::{Config, Doubles, Node, NodeIdentity, Reachability};

use crate::ready;

/// Adjusts a test node's config for a network of hundreds in one process: routing
/// refreshed at the node's own default interval (each refresh is a lookup per bucket, and
/// the suite's two-second refresh times hundreds of nodes saturates two cores), replicas
/// reconciled every 5 s, and connections closed after 5 s idle (both ends of each
/// are descriptors of this one process).
pub fn large(config: &mut Config) {
    config.bootstrap_interval_secs = Config::default().bootstrap_interval_secs;
    config.anti_entropy_interval_secs = 5;
    config.idle_timeout_secs = 5;
}

/// N nodes in this process, node 0 seeding the others. Dropping the cluster stops every
/// node at once; [`Cluster::shutdown`] stops them gracefully.
pub struct Cluster {
    nodes: Vec<Option<Node>>,
    configs: Vec<Config>,
    dir: tempfile::TempDir,
}

/// How long a cluster may take to become ready (at least; 3 s per node beyond 30 nodes).
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);

impl Cluster {
    /// Starts `n` relay nodes (each with its own data directory under a temporary
    /// directory, free loopback ports, no HTTP); `tweak` adjusts each node's config.
    /// Returns once the cluster is ready (every node's lookups agree; see [`crate::ready`]).
    pub async fn start(n: usize, tweak: impl Fn(usize, &mut Config)) -> anyhow::Result<Self> {
        Self::start_with(n, tweak, |_, _| Doubles::default()).await
    }

    /// Like [`Cluster::start`], with test doubles per node, made from the node's index
    /// and identity (created before the node starts).
    pub async fn start_with(
        n: usize,
        tweak: impl Fn(usize, &mut Config),
        doubles: impl Fn(usize, &NodeIdentity) -> Doubles,
    ) -> anyhow::Result<Self> {
        Self::start_in(tempfile::tempdir()?, n, tweak, doubles).await
    }

    /// Like [`Cluster::start`], with the nodes' data in a new directory under `parent`
    /// (removed when the cluster is dropped).
    pub async fn start_under(
        parent: &std::path::Path,
        n: usize,
        tweak: impl Fn(usize, &mut Config),
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(parent)?;
        Self::start_in(tempfile::tempdir_in(parent)?, n, tweak, |_, _| {
            Doubles::default()
        })
        .await
    }

    async fn start_in(
        dir: tempfile::TempDir,
        n: usize,
        tweak: impl Fn(usize, &mut Config),
        doubles: impl Fn(usize, &NodeIdentity) -> Doubles,
    ) -> anyhow::Result<Self> {
        let mut nodes: Vec<Option<Node>> = Vec::with_capacity(n);
        let mut configs = Vec::with_capacity(n);
        let mut seed: Option<Multiaddr> = None;
        for i in 0..n {
            let mut config = Config {
                data_dir: Some(dir.path().join(format!("node-{i}"))),
                listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
                http: None,
                admin: Some("off".into()),
                bootstrap_interval_secs: 2,
                anti_entropy_interval_secs: 1,
                replica_timeout_ms: 3_000,
                // Loopback is reachable: no AutoNAT probes to wait for.
                reachability: Reachability::Public,
                // Every node shares 127.0.0.1: no network-prefix limits.
                max_peers_per_prefix: 0,
                max_peers_per_prefix_per_bucket: 0,
                // ...and no per-source budgets for it; other loopback addresses (the
                // abuse suite's hosts) are counted as any source.
                budgets: tigress_node::budget::BudgetConfig {
                    exempt: vec!["127.0.0.1/32".into()],
                    ..Default::default()
                },
                ..Config::default()
            };
            if let Some(seed) = &seed {
                config.bootstrap = vec![seed.to_string()];
            }
            tweak(i, &mut config);
            let identity = NodeIdentity::load_or_create(&config.data_dir())?;
            let node = Node::start_with(config.clone(), doubles(i, &identity)).await?;
            if seed.is_none() {
                seed = node.dial_addr();
            }
            // Listen on the same port after a restart.
            if let Some(addr) = node.listen_addrs().first() {
                config.listen = vec![addr.to_string()];
            }
            configs.push(config);
            nodes.push(Some(node));
        }
        let cluster = Self {
            nodes,
            configs,
            dir,
        };
        // Larger clusters take longer to start and to settle their lookups (fifty nodes in
        // one process on a loaded two-core machine need a few minutes).
        let limit = READY_TIMEOUT.max(Duration::from_secs(6 * n as u64));
        cluster.wait_ready(limit).await?;
        Ok(cluster)
    }

    /// Waits until every running node's lookups find, for each probe address, the same
    /// R closest nodes the whole cluster would name (see [`crate::ready`]).
    pub async fn wait_ready(&self, limit: Duration) -> anyhow::Result<()> {
        let running: Vec<(&Node, usize)> = self
            .nodes
            .iter()
            .zip(&self.configs)
            .filter_map(|(n, c)| n.as_ref().map(|n| (n, usize::from(c.replication))))
            .collect();
        // Bootstrap-role nodes route but are never named as replicas.
        let peers: Vec<libp2p::PeerId> = self
            .nodes
            .iter()
            .zip(&self.configs)
            .filter(|(_, c)| c.role == tigress_node::NodeRole::Relay)
            .filter_map(|(n, _)| n.as_ref().map(Node::peer_id))
            .collect();
        let waited = ready::wait(
            running.len(),
            &peers,
            |i| running.get(i).map_or(0, |(_, r)| *r),
            limit,
            async |i, address, r| match running.get(i) {
                Some((node, _)) => node.locate(&address, r).await,
                None => Vec::new(),
            },
        )
        .await;
        match waited {
            Ok(()) => Ok(()),
            Err(e) => Err(e.context(self.describe().await)),
        }
    }

    /// Each running node's key, routing-table size and connections to the other running
    /// nodes: what a readiness failure needs to be understood.
    async fn describe(&self) -> String {
        let running: Vec<(usize, &Node)> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
            .collect();
        let mut lines = Vec::with_capacity(running.len());
        for &(i, node) in &running {
            let table = node.routing_table().await.len();
            let mut connected = 0;
            for &(j, other) in &running {
                if j != i && node.is_connected(other.peer_id()).await {
                    connected += 1;
                }
            }
            lines.push(format!(
                "node {i} ({}): {table} in its routing table, connected to {connected} of {}",
                tigress_node::identity::key_of(&node.peer_id())
                    .map_or_else(|| "?".into(), |k| k.short()),
                running.len() - 1
            ));
        }
        lines.join("; ")
    }

    /// The number of node slots.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`, if running.
    pub fn node(&self, i: usize) -> Option<&Node> {
        self.nodes.get(i).and_then(Option::as_ref)
    }

    /// The dialable address of node `i`, with `/p2p/`, if running.
    pub fn addr(&self, i: usize) -> Option<Multiaddr> {
        self.node(i)?.dial_addr()
    }

    /// The temporary directory holding the nodes' data.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Stops node `i` gracefully (its data stays for a restart).
    pub async fn stop(&mut self, i: usize) {
        if let Some(node) = self.nodes.get_mut(i).and_then(Option::take) {
            node.shutdown().await;
        }
    }

    /// Takes node `i` out of the cluster, running, for the caller to stop (its slot
    /// stays for [`Cluster::restart`]).
    pub fn take(&mut self, i: usize) -> Option<Node> {
        self.nodes.get_mut(i).and_then(Option::take)
    }

    /// Restarts node `i` with its data directory and address.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let config = self
            .configs
            .get(i)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no node {i}"))?;
        let node = Node::start(config).await?;
        if let Some(slot) = self.nodes.get_mut(i) {
            *slot = Some(node);
        }
        Ok(())
    }

    /// Starts one more node, seeded by node 0, with the identity made from `seed` (e.g. a
    /// Sybil's ground key), its config adjusted by `tweak`, and the test doubles `doubles`
    /// makes for it; returns its index.
    pub async fn add(
        &mut self,
        seed: [u8; 32],
        tweak: impl FnOnce(&mut Config),
        doubles: impl FnOnce(&NodeIdentity) -> Doubles,
    ) -> anyhow::Result<usize> {
        let i = self.nodes.len();
        let data_dir = self.dir.path().join(format!("node-{i}"));
        std::fs::create_dir_all(&data_dir)?;
        std::fs::write(data_dir.join(tigress_node::identity::IDENTITY_FILE), seed)?;
        let mut config = self
            .configs
            .first()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("the cluster has no node 0"))?;
        config.data_dir = Some(data_dir.clone());
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
        config.bootstrap = self.addr(0).iter().map(ToString::to_string).collect();
        tweak(&mut config);
        let identity = NodeIdentity::load_or_create(&data_dir)?;
        let node = Node::start_with(config.clone(), doubles(&identity)).await?;
        if let Some(addr) = node.listen_addrs().first() {
            config.listen = vec![addr.to_string()];
        }
        self.configs.push(config);
        self.nodes.push(Some(node));
        Ok(i)
    }

    /// Stops every node gracefully.
    pub async fn shutdown(mut self) {
        for slot in &mut self.nodes {
            if let Some(node) = slot.take() {
                node.shutdown().await;
            }
        }
    }
}
