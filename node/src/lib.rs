//! `tigress-node`: a relay node of the tigress network.
//!
//! A node is three roles over one libp2p swarm: the *entry* that clients talk to
//! (`/tigress/client/1`), which carries each request out on the mailbox's replicas; the
//! *replica* that stores mailboxes in sled and answers `/tigress/replica/1`; and a
//! Kademlia DHT server (`/tigress/kad/1.0.0`) that finds the nodes closest to an address.
//! Every rule is `tigress_protocol`'s; the node moves bytes and keeps state.
//!
//! It is not a client library (see `tigress-client`) and not a cluster harness (see
//! `tigress-bootstrap`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), tigress_node::NodeError> {
//! let mut config = tigress_node::Config::default();
//! config.data_dir = Some("/tmp/tigress-node".into());
//! config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
//! config.http = None;
//! config.admin = Some("off".into());
//! let node = tigress_node::Node::start(config).await?;
//! println!("{}", node.startup_line());
//! node.shutdown().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod addresses;
pub mod budget;
pub mod clock;
pub mod config;
pub mod conn_budget;
mod dispatch;
pub mod entry;
pub mod gateway;
pub mod held;
pub mod http;
pub mod identity;
mod link;
pub mod metrics;
pub mod network;
pub mod oblivious;
pub mod pace;
pub mod prefix;
pub mod replica;
pub mod store;
pub mod sync;
pub mod tap;
pub mod throttle;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use tigress_protocol::mailbox::Limits;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinHandle;

pub use config::{Config, ConfigError, NodeRole, Reachability};
pub use identity::NodeIdentity;

use crate::entry::{Entry, EntryConfig};
use crate::metrics::Metrics;
use crate::network::{LoopContext, Network, NetworkHandle};
use crate::replica::Replica;
use crate::store::Store;

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory or identity could not be used.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Another process uses the data directory.
    #[error("data directory {path} is in use by another tigress-node")]
    DataDirInUse {
        /// The directory.
        path: String,
    },
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The network could not start.
    #[error(transparent)]
    Network(#[from] network::NetworkError),
    /// The HTTP port or the admin listener could not be bound.
    #[error("binding HTTP on {addr}: {source}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// HTTPS could not be set up.
    #[error(transparent)]
    Tls(tls::TlsError),
    /// A seed is not a valid multiaddr.
    #[error("seed {seed}: {message}")]
    Seed {
        /// The seed.
        seed: String,
        /// What is wrong.
        message: String,
    },
}

/// The gateway secret: from the config (`gateway_secret`, 64 hex digits, shared by an
/// operator's nodes), else `gateway.key` in the data directory (created on first start).
fn gateway_secret(
    config: &Config,
    dir: &std::path::Path,
) -> Result<zeroize::Zeroizing<[u8; 32]>, NodeError> {
    let invalid = |message: &str| NodeError::Config(ConfigError::Invalid(message.to_owned()));
    if let Some(hex) = &config.gateway_secret {
        let bytes = zeroize::Zeroizing::new(
            (0..hex.len())
                .step_by(2)
                .map(|i| {
                    hex.get(i..i + 2)
                        .and_then(|b| u8::from_str_radix(b, 16).ok())
                })
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| invalid("gateway_secret must be 64 hex digits"))?,
        );
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| invalid("gateway_secret must be 64 hex digits"))?;
        return Ok(zeroize::Zeroizing::new(arr));
    }
    let path = dir.join("gateway.key");
    let key = identity::load_or_create_secret(&path).map_err(|source| NodeError::DataDir {
        path: path.display().to_string(),
        source,
    })?;
    Ok(key)
}

/// A running node.
pub struct Node {
    identity: NodeIdentity,
    listen_addrs: Vec<Multiaddr>,
    http_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    net: NetworkHandle,
    store: Option<Store>,
    entry: Arc<Entry>,
    inflight: Arc<Semaphore>,
    serving: dispatch::Serving,
    metrics: Arc<Metrics>,
    max_inflight: usize,
    accepting: Arc<AtomicBool>,
    stopping: watch::Sender<bool>,
    network_task: Option<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    http_stop: Vec<oneshot::Sender<()>>,
    http_tasks: Vec<JoinHandle<()>>,
    // Held for the node's lifetime: no second node opens the data directory.
    _lock: std::fs::File,
}

impl Drop for Node {
    /// A node dropped without [`Node::shutdown`] stops at once, like a crash (the store
    /// keeps only what it already flushed).
    fn drop(&mut self) {
        if let Some(t) = self.network_task.take() {
            t.abort();
        }
        for t in self.http_tasks.drain(..) {
            t.abort();
        }
        for t in self.background.drain(..) {
            t.abort();
        }
    }
}

/// Takes the data directory for this process: refuses one another node holds.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, NodeError> {
    let path = dir.join("lock");
    let io = |source| NodeError::DataDir {
        path: dir.display().to_string(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(NodeError::DataDirInUse {
            path: dir.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// Binds the admin listener: the default address or, when another process holds it, a
/// free loopback port (said in the log and the start line); an explicit address that is
/// taken is an error.
async fn bind_admin(
    admin: config::Admin,
) -> Result<Option<(tokio::net::TcpListener, SocketAddr)>, NodeError> {
    let fixed = |addr: SocketAddr| async move {
        http::bind(addr)
            .await
            .map(Some)
            .map_err(|source| NodeError::Http { addr, source })
    };
    match admin {
        config::Admin::Off => Ok(None),
        config::Admin::At(addr) => fixed(addr).await,
        config::Admin::Default => {
            let addr: SocketAddr = config::DEFAULT_ADMIN
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9090)));
            match http::bind(addr).await {
                Ok(bound) => Ok(Some(bound)),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    let bound = fixed(SocketAddr::new(addr.ip(), 0)).await?;
                    if let Some((_, at)) = &bound {
                        tracing::warn!(
                            "the default admin address {addr} is taken; the admin listener is on {at}"
                        );
                    }
                    Ok(bound)
                }
                Err(source) => Err(NodeError::Http { addr, source }),
            }
        }
    }
}

/// The validation limits a node applies.
fn limits_of(config: &Config) -> Limits {
    Limits {
        max_ttl_secs: config.max_ttl_secs,
        ..Limits::default()
    }
}

/// The seeds of `config`, parsed.
fn seeds_of(config: &Config) -> Result<Vec<Multiaddr>, NodeError> {
    config
        .seeds()?
        .into_iter()
        .map(|s| {
            s.parse::<Multiaddr>().map_err(|e| NodeError::Seed {
                seed: s.clone(),
                message: e.to_string(),
            })
        })
        .collect()
}

/// The base of share URLs: the configured one, else the ACME domain or the HTTP
/// address, under `https://` when the port speaks TLS.
fn public_url_of(config: &Config, http_addr: Option<SocketAddr>, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    if let Some(url) = &config.public_url {
        return url.clone();
    }
    match (&config.acme_domain, http_addr) {
        (Some(domain), Some(a)) if a.port() != 443 => format!("https://{domain}:{}", a.port()),
        (Some(domain), _) => format!("https://{domain}"),
        (None, Some(a)) => format!("{scheme}://{a}"),
        (None, None) => "http://127.0.0.1:8080".to_owned(),
    }
}

/// Test doubles a test or a development build plugs into a node to make it lie: a filter
/// of its replica answers and one of its entry answers. The shipped `tigress-node` has
/// none.
#[derive(Clone, Default)]
pub struct Doubles {
    /// Sees every replica answer before it leaves.
    pub replica: Option<Arc<dyn replica::ResponseFilter>>,
    /// Sees every client request before the entry carries it out.
    pub entry: Option<Arc<dyn entry::ClientFilter>>,
    /// The clock, when not the system's (a test moves it through a simulated week).
    pub clock: Option<clock::Clock>,
    /// Records everything the node receives (the curious-node test).
    pub tap: Option<tap::Tap>,
    /// Speaks the replica protocol only over request-response (`/tigress/replica/1`), as
    /// nodes did before replica links: a mixed network's older node.
    pub without_links: bool,
}

impl Node {
    /// Starts a node: identity, database, swarm, HTTP, background sweeps.
    pub async fn start(config: Config) -> Result<Self, NodeError> {
        Self::start_with(config, Doubles::default()).await
    }

    /// Starts a node whose answers pass through the test doubles `doubles` (honest nodes
    /// have none). The steps, in order: take the data directory, open the store, bind the
    /// network and HTTP, start the roles and the dispatcher, start the background tasks.
    pub async fn start_with(config: Config, doubles: Doubles) -> Result<Self, NodeError> {
        let Doubles {
            replica: filter,
            entry: client_filter,
            clock,
            tap,
            without_links,
        } = doubles;
        config.validate()?;
        let clock = clock.unwrap_or_else(clock::Clock::system);
        let limits = limits_of(&config);

        // The data directory: locked, with the identity in it.
        let data_dir = config.data_dir();
        let dir_err = |source| NodeError::DataDir {
            path: data_dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&data_dir).map_err(dir_err)?;
        let lock = lock_data_dir(&data_dir)?;
        let identity = NodeIdentity::load_or_create(&data_dir).map_err(dir_err)?;

        // The store, on a relay.
        let store = match config.role {
            NodeRole::Relay => Some(Store::open(
                &data_dir.join("db"),
                identity.signing.clone(),
                limits,
                config.quota_bytes,
                clock.clone(),
            )?),
            NodeRole::Bootstrap => None,
        };

        // The network and the HTTP port, bound before anything answers.
        let metrics = Arc::new(Metrics::default());
        let mut network = Network::bind(
            identity.keypair.clone(),
            &config,
            tap.clone(),
            without_links,
            metrics.clone(),
        )
        .await?;
        network.add_seeds(&seeds_of(&config)?);
        let net = network.handle();
        let listen_addrs = network.listen_addrs.clone();
        let http_listener = match config.http {
            Some(addr) => Some(
                http::bind(addr)
                    .await
                    .map_err(|source| NodeError::Http { addr, source })?,
            ),
            None => None,
        };
        let http_addr = http_listener.as_ref().map(|(_, a)| *a);
        let tls = match config.tls(data_dir.join("acme"))? {
            Some(t) => Some(tls::prepare(t).await.map_err(NodeError::Tls)?),
            None => None,
        };
        let admin_listener = bind_admin(config.admin()?).await?;
        let admin_addr = admin_listener.as_ref().map(|(_, a)| *a);
        let public_url = public_url_of(&config, http_addr, tls.is_some());

        // The roles, and the dispatcher that hands them inbound requests.
        let (stopping, stop_rx) = watch::channel(false);
        let replica = store.clone().map(|s| {
            Replica::new(s, metrics.clone(), filter.clone(), stop_rx.clone()).with_placement(
                replica::Placement {
                    me: identity.public_key(),
                    net: net.clone(),
                },
            )
        });
        let (nudge_tx, nudge_rx) = tokio::sync::mpsc::channel(256);
        let inflight = Arc::new(Semaphore::new(config.max_inflight_requests));
        let admission = Arc::new(budget::AdmissionLevel::new(
            inflight.clone(),
            config.max_inflight_requests,
            config.budgets.admission_bits_min,
        ));
        let entry = Arc::new(
            Entry::new(
                identity.public_key(),
                replica.clone(),
                store.as_ref().map(|_| nudge_tx),
                net.clone(),
                EntryConfig {
                    replication: config.replication,
                    standbys: config.standbys,
                    replica_timeout: Duration::from_millis(config.replica_timeout_ms),
                    public_url: public_url.clone(),
                    limits,
                    clock: clock.clone(),
                },
                metrics.clone(),
                stop_rx,
            )
            .with_filter(client_filter)
            .with_admission(admission.clone()),
        );
        // The draft's gateway, served on the public port and inside oblivious requests,
        // and the oblivious gateway and relay around it.
        let gateway_router = {
            let secret = gateway_secret(&config, &data_dir)?;
            gateway::router(Arc::new(gateway::Gateway::new(
                entry.clone(),
                tigress_protocol::crypto::GatewaySecret::from_bytes(secret),
                public_url.clone(),
                limits,
            )))
        };
        let ohttp_seed = {
            let path = data_dir.join("ohttp.key");
            identity::load_or_create_secret(&path).map_err(|source| NodeError::DataDir {
                path: path.display().to_string(),
                source,
            })?
        };
        let oblivious = Arc::new(
            oblivious::Oblivious::new(
                &ohttp_seed,
                &identity.signing,
                clock.unix(),
                gateway_router.clone(),
                entry.clone(),
                net.clone(),
                listen_addrs.clone(),
            )
            .map_err(|e| NodeError::Config(ConfigError::Invalid(e)))?,
        );
        let budgets = Arc::new(
            budget::Budgets::new(&config.budgets)
                .map_err(|e| NodeError::Config(ConfigError::Invalid(e)))?,
        );
        let serving = dispatch::Serving::default();
        let accepting = Arc::new(AtomicBool::new(true));
        let (inbound_tx, inbound_rx) = tokio::sync::mpsc::channel(dispatch::INBOUND_QUEUE);
        let dispatcher = dispatch::Dispatcher {
            entry: entry.clone(),
            oblivious: oblivious.clone(),
            replica,
            net: net.clone(),
            inflight: inflight.clone(),
            accepting: accepting.clone(),
            metrics: metrics.clone(),
            throttle: throttle::PeerThrottle::new(
                config.peer_requests_per_sec,
                config.peer_request_burst,
            ),
            budgets: budgets.clone(),
            serving: serving.clone(),
        };
        let mut background = vec![tokio::spawn(dispatcher.run(inbound_rx))];
        let network_task = tokio::spawn(network.run(LoopContext {
            inbound: inbound_tx,
            answering: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            metrics: metrics.clone(),
            budgets: budgets.clone(),
        }));

        // HTTP: health and the gateway on the public port; metrics on the admin listener.
        let mut http_stop = Vec::new();
        let mut http_tasks = Vec::new();
        let spawn_http = |stops: &mut Vec<oneshot::Sender<()>>,
                          tasks: &mut Vec<JoinHandle<()>>,
                          listener,
                          app| {
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            stops.push(stop_tx);
            tasks.push(tokio::spawn(http::serve(listener, app, async move {
                let _ = stop_rx.await;
            })));
        };
        if let Some((listener, _)) = http_listener {
            let app = http::public_router(Some(oblivious.routes().merge(gateway_router)), tap);
            let app = http::with_budgets(
                app,
                http::PublicLimits::new(budgets.clone(), admission.clone()),
            );
            let app = if public_url.starts_with("https://") {
                http::with_hsts(app)
            } else {
                app
            };
            let handle = tls::Handle::new();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            http_stop.push(stop_tx);
            let stopper = handle.clone();
            tokio::spawn(async move {
                let _ = stop_rx.await;
                tls::stop(&stopper, Duration::from_secs(5));
            });
            http_tasks.push(match tls {
                None => tokio::spawn(http::serve_public(listener, app, budgets.clone(), handle)),
                Some(tls) => tokio::spawn(tls::serve(listener, app, tls, handle, budgets.clone())),
            });
        }
        if let Some((listener, _)) = admin_listener {
            spawn_http(
                &mut http_stop,
                &mut http_tasks,
                listener,
                http::admin_router(http::AdminState {
                    metrics: metrics.clone(),
                    store: store.clone(),
                    peer_id: identity.peer_id().to_string(),
                    reachability: config.reachability,
                }),
            );
        }

        // Background work of a relay: anti-entropy and the sweep.
        if let Some(store) = store.clone() {
            let task = sync::AntiEntropy::new(
                identity.public_key(),
                store.clone(),
                net.clone(),
                Duration::from_millis(config.replica_timeout_ms),
                metrics.clone(),
            )
            .with_takeovers(clock.clone(), config.takeover_after_secs);
            let every = Duration::from_secs(config.anti_entropy_interval_secs.max(1));
            background.push(tokio::spawn(task.run(every, nudge_rx)));
            let every = Duration::from_secs(config.sweep_interval_secs);
            background.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    store.sweep().await;
                }
            }));
        }
        tracing::info!(
            peer_id = %identity.peer_id(),
            role = ?config.role,
            data_dir = %data_dir.display(),
            "node started"
        );
        Ok(Self {
            identity,
            listen_addrs,
            http_addr,
            admin_addr,
            net,
            store,
            entry,
            inflight,
            serving,
            metrics: metrics.clone(),
            max_inflight: config.max_inflight_requests,
            accepting,
            stopping,
            network_task: Some(network_task),
            background,
            http_stop,
            http_tasks,
            _lock: lock,
        })
    }

    /// The peer ID.
    pub fn peer_id(&self) -> PeerId {
        self.identity.peer_id()
    }

    /// The node's identity.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// The bound listen addresses.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    /// A listen address with `/p2p/<peer-id>`, preferring loopback.
    pub fn dial_addr(&self) -> Option<Multiaddr> {
        let pick = self
            .listen_addrs
            .iter()
            .find(|a| a.to_string().starts_with("/ip4/127."))
            .or_else(|| self.listen_addrs.first())?;
        pick.clone().with_p2p(self.peer_id()).ok()
    }

    /// The node's metrics in the Prometheus text exposition (as `/metrics` serves them).
    pub fn metrics_text(&self) -> String {
        self.metrics
            .render(self.store.as_ref().map(|s| s.stats().as_ref()))
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The bound admin address (`/metrics`, `/status`).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The line printed on start: `tigress-node peer_id=… listen=…,… http=… admin=…`.
    pub fn startup_line(&self) -> String {
        let listen: Vec<String> = self.listen_addrs.iter().map(ToString::to_string).collect();
        let or_none =
            |a: Option<SocketAddr>| a.map_or_else(|| "none".to_owned(), |a| a.to_string());
        format!(
            "tigress-node peer_id={} listen={} http={} admin={}",
            self.peer_id(),
            listen.join(","),
            or_none(self.http_addr),
            or_none(self.admin_addr),
        )
    }

    /// The store, on a relay.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// The `r` relay nodes this node finds closest to `address` (a DHT lookup; what it
    /// would name as a new mailbox's replicas).
    pub async fn locate(
        &self,
        address: &tigress_protocol::Address,
        r: usize,
    ) -> Vec<tigress_protocol::crypto::PublicKey> {
        self.entry.locate(address, r).await
    }

    /// A Kademlia lookup of `address` from this node, with what it cost.
    pub async fn lookup(&self, address: &tigress_protocol::Address) -> network::Lookup {
        self.net.lookup(address.as_bytes().to_vec()).await
    }

    /// The `count` peers of this node's routing table closest to `address`: what it
    /// answers a Kademlia request for that key (no network traffic).
    pub async fn closest_local(
        &self,
        address: &tigress_protocol::Address,
        count: usize,
    ) -> Vec<PeerId> {
        self.net
            .closest_local(address.as_bytes().to_vec(), count)
            .await
    }

    /// The peers in the routing table.
    pub async fn routing_table(&self) -> Vec<PeerId> {
        self.net.routing_table().await
    }

    /// Whether this node is connected to `peer` now.
    pub async fn is_connected(&self, peer: PeerId) -> bool {
        self.net.remote_of(peer).await.is_some()
    }

    /// Sends `request` to the node `peer` as this node's entry role does (dialing it, and
    /// finding it first if no address is known), and awaits its answer.
    pub async fn ask_replica(
        &self,
        peer: PeerId,
        request: tigress_protocol::rpc::ReplicaRequest,
    ) -> Result<tigress_protocol::rpc::ReplicaResponse, tigress_protocol::quorum::CallError> {
        self.net.replica_request(peer, request).await
    }

    /// Stops gracefully: refuses new requests, answers waiting long-polls at once, lets
    /// other in-flight requests finish (up to 30 s),
    /// stops the network and HTTP, and flushes and closes the database.
    pub async fn shutdown(mut self) {
        self.accepting.store(false, Ordering::Release);
        // Waiting long-polls answer now with what they have.
        let _ = self.stopping.send(true);
        let all = u32::try_from(self.max_inflight).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(Duration::from_secs(30), async {
            let permits = self.inflight.acquire_many(all).await;
            self.serving.idle().await;
            permits
        })
        .await;
        if drained.is_err() {
            tracing::warn!("in-flight requests did not finish within 30 s");
        }
        self.net.stop().await;
        if let Some(task) = self.network_task.take() {
            let _ = task.await;
        }
        for stop in self.http_stop.drain(..) {
            let _ = stop.send(());
        }
        for task in self.http_tasks.drain(..) {
            let _ = task.await;
        }
        for task in self.background.drain(..) {
            task.abort();
        }
        // Closed, not only flushed: a node started again on this directory in the same
        // process finds the database free.
        if let Some(store) = &self.store {
            store.close().await;
        }
        tracing::info!("node stopped");
    }
}
