//! The libp2p side of a node: one event loop owns the swarm (TCP, Noise, Yamux, identify,
//! ping, connection limits, Kademlia for routing, and the client and replica protocols);
//! [`NetworkHandle`] sends it commands with a reply channel, as in rust-libp2p's
//! file-sharing example. Inbound requests run as tasks bounded by a semaphore; beyond it
//! they are refused at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use libp2p::core::transport::ListenerId;
use libp2p::kad::{self, QueryId, QueryResult};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, autonat, connection_limits, identify, noise, ping,
    tcp, yamux,
};
use tigress_protocol::ErrorCode;
use tigress_protocol::quorum::CallError;
use tigress_protocol::rpc::{
    ClientRequest, ClientResponse, RemoteError, ReplicaRequest, ReplicaResponse,
};
use tigress_transport::{
    CLIENT_STREAM, ClientCodec, IDENTIFY_PROTOCOL, REPLICA_LINK, REPLICA_STREAM, REQUEST_TIMEOUT,
    ReplicaCodec,
};
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, NodeRole, Reachability};
use crate::metrics::Metrics;
use crate::prefix;

/// The Kademlia protocol of the tigress network (never the IPFS one).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/tigress/kad/1.0.0");

#[derive(NetworkBehaviour)]
pub(crate) struct NodeBehaviour {
    limits: connection_limits::Behaviour,
    per_prefix: crate::conn_budget::ConnBudget,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    /// Asks other nodes to dial this one's candidate addresses back (`auto` reachability).
    autonat_client: Toggle<autonat::v2::client::Behaviour>,
    /// Dials other nodes' candidate addresses back for them (every serving relay).
    autonat_server: Toggle<autonat::v2::server::Behaviour>,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    client: request_response::Behaviour<ClientCodec>,
    replica: request_response::Behaviour<ReplicaCodec>,
    /// The replica protocol over one stream per peer ([`crate::link`]).
    stream: libp2p_stream::Behaviour,
    /// Where lookups found nodes, for dialing those the routing table lacks.
    addresses: crate::addresses::AddressBook,
}

type ReplicaReply = oneshot::Sender<Result<ReplicaResponse, CallError>>;
type ClientReply = oneshot::Sender<Result<ClientResponse, CallError>>;

enum Command {
    Client {
        peer: PeerId,
        request: ClientRequest,
        reply: ClientReply,
    },
    KnownNodes {
        reply: oneshot::Sender<Vec<(PeerId, Vec<Multiaddr>)>>,
    },
    Replica {
        peer: PeerId,
        request: ReplicaRequest,
        reply: ReplicaReply,
    },
    RespondClient {
        channel: ResponseChannel<ClientResponse>,
        response: ClientResponse,
    },
    RespondReplica {
        channel: ResponseChannel<ReplicaResponse>,
        response: ReplicaResponse,
    },
    Closest {
        key: Vec<u8>,
        reply: oneshot::Sender<Lookup>,
    },
    RoutingTable {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    ClosestLocal {
        key: Vec<u8>,
        count: usize,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Remote {
        peer: PeerId,
        reply: oneshot::Sender<Option<Multiaddr>>,
    },
    InRoutingTable {
        peer: PeerId,
        reply: oneshot::Sender<bool>,
    },
    /// Dial `peer` unless connected or dialing, and say whether it is connected (`true`,
    /// once the swarm has the connection) or the dial failed (`false`).
    Connect {
        peer: PeerId,
        reply: oneshot::Sender<bool>,
    },
    Stop,
}

/// What a Kademlia lookup found and what it cost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    /// The closest peers found, nearest first, without routing-only peers.
    pub peers: Vec<PeerId>,
    /// Requests the query sent (libp2p's `QueryStats`).
    pub requests: u32,
    /// Of those, requests that failed or timed out.
    pub failures: u32,
    /// Whether the query finished on its own rather than by its timeout.
    pub completed: bool,
}

/// A handle on the event loop.
#[derive(Clone)]
pub struct NetworkHandle {
    commands: mpsc::Sender<Command>,
    local: PeerId,
    public: Arc<AtomicBool>,
    links: Arc<crate::link::Links>,
    finding: Arc<Finding>,
}

/// What looking up undialable replicas may cost: a few lookups at a time, and none again
/// soon for a peer a lookup did not find (a genesis can name replicas that do not exist).
pub(crate) struct Finding {
    slots: tokio::sync::Semaphore,
    unfound: std::sync::Mutex<hashlink::LruCache<PeerId, std::time::Instant>>,
    /// Counts lookups run and spared.
    metrics: Arc<Metrics>,
}

/// Lookups of undialable replicas at once.
const FINDING_SLOTS: usize = 8;

/// How long a peer a lookup did not find is not looked up again.
const UNFOUND_FOR: Duration = Duration::from_secs(60);

impl Finding {
    fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            slots: tokio::sync::Semaphore::new(FINDING_SLOTS),
            unfound: std::sync::Mutex::new(hashlink::LruCache::new(4096)),
            metrics,
        }
    }

    fn spare(&self) -> CallError {
        self.metrics
            .replica_lookups_spared
            .fetch_add(1, Ordering::Relaxed);
        CallError::Unreachable
    }
}

/// Where an inbound replica request's answer goes: back through the swarm
/// (request-response) or onto the link it came on.
pub(crate) enum ReplicaChannel {
    /// `/tigress/replica/1`.
    Swarm(ResponseChannel<ReplicaResponse>),
    /// `/tigress/replica/2`.
    Link(crate::link::LinkAnswer),
}

impl NetworkHandle {
    /// Whether other nodes can dial this one: set for `public`, found by AutoNAT for
    /// `auto`, never for `private`. Only then does the node serve in routing tables and
    /// hold other nodes' mailboxes.
    pub fn is_public(&self) -> bool {
        self.public.load(Ordering::Relaxed)
    }

    /// This node's peer ID.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// Sends a replica request to `peer` and awaits the answer: over the link to `peer`
    /// ([`crate::link`]), or over request-response to a peer that has no link protocol.
    pub async fn replica_request(
        &self,
        peer: PeerId,
        request: ReplicaRequest,
    ) -> Result<ReplicaResponse, CallError> {
        use crate::link::Outcome;
        let request = match self.links.call(peer, request).await {
            Outcome::Answered(answer) => return answer,
            // A peer this node has no address for (far from it, so not in its routing
            // table, and not connected): found by a lookup of its ID, which leaves its
            // addresses in the address book, and asked again. Not for a request that came
            // through a relay: the lookup could ask the relay about the replicas.
            Outcome::Undialable(request) => {
                let finding = &self.finding;
                if crate::entry::via().is_some() {
                    return Err(finding.spare());
                }
                let recently_unfound = finding
                    .unfound
                    .lock()
                    .ok()
                    .and_then(|mut u| u.get(&peer).copied())
                    .is_some_and(|at| at.elapsed() < UNFOUND_FOR);
                if recently_unfound {
                    return Err(finding.spare());
                }
                let Ok(_slot) = finding.slots.try_acquire() else {
                    return Err(finding.spare());
                };
                finding
                    .metrics
                    .replica_lookups
                    .fetch_add(1, Ordering::Relaxed);
                let found = self.lookup(peer.to_bytes()).await.peers.contains(&peer);
                tracing::debug!(%peer, found, "an undialable replica looked up");
                if !found {
                    if let Ok(mut u) = finding.unfound.lock() {
                        u.insert(peer, std::time::Instant::now());
                    }
                    return Err(CallError::Unreachable);
                }
                match self.links.call(peer, request).await {
                    Outcome::Answered(answer) => return answer,
                    Outcome::Undialable(_) => return Err(CallError::Unreachable),
                    Outcome::Legacy(request) | Outcome::Closed(request) => request,
                }
            }
            // Never returned by `call`, which sends a request a closed link handed back
            // over a new one; request-response takes it if it came.
            Outcome::Legacy(request) | Outcome::Closed(request) => request,
        };
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Replica {
                peer,
                request,
                reply,
            })
            .await
            .map_err(|_| CallError::Stopping)?;
        rx.await.map_err(|_| CallError::Stopping)?
    }

    /// Sends a client-protocol request to `peer` (this node relaying a sealed request, or
    /// fetching a node's key record) and awaits the answer.
    pub async fn client_request(
        &self,
        peer: PeerId,
        request: ClientRequest,
    ) -> Result<ClientResponse, CallError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Client {
                peer,
                request,
                reply,
            })
            .await
            .map_err(|_| CallError::Stopping)?;
        rx.await.map_err(|_| CallError::Stopping)?
    }

    /// The relay nodes of the routing table with the addresses it holds for them.
    pub async fn known_nodes(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::KnownNodes { reply })
            .await
            .is_err()
        {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// The peers closest to `key` that a Kademlia lookup finds, without the peers known
    /// to be routing-only (bootstrap nodes).
    pub async fn closest_peers(&self, key: Vec<u8>) -> Vec<PeerId> {
        self.lookup(key).await.peers
    }

    /// A Kademlia lookup of `key`, with what it cost (see [`Lookup`]).
    pub async fn lookup(&self, key: Vec<u8>) -> Lookup {
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Closest { key, reply })
            .await
            .is_err()
        {
            return Lookup::default();
        }
        rx.await.unwrap_or_default()
    }

    /// The `count` peers of the local routing table closest to `key` (no network
    /// lookup), without routing-only peers.
    pub async fn closest_local(&self, key: Vec<u8>, count: usize) -> Vec<PeerId> {
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::ClosestLocal { key, count, reply })
            .await
            .is_err()
        {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// The peers in the routing table.
    pub async fn routing_table(&self) -> Vec<PeerId> {
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::RoutingTable { reply })
            .await
            .is_err()
        {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    pub(crate) async fn respond_client(
        &self,
        channel: ResponseChannel<ClientResponse>,
        response: ClientResponse,
    ) {
        let _ = self
            .commands
            .send(Command::RespondClient { channel, response })
            .await;
    }

    pub(crate) async fn respond_replica(&self, channel: ReplicaChannel, response: ReplicaResponse) {
        match channel {
            ReplicaChannel::Swarm(channel) => {
                let _ = self
                    .commands
                    .send(Command::RespondReplica { channel, response })
                    .await;
            }
            ReplicaChannel::Link(answer) => answer.send(response).await,
        }
    }

    /// The remote address of `peer`'s connection, if it is connected.
    pub(crate) async fn remote_of(&self, peer: PeerId) -> Option<Multiaddr> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Remote { peer, reply })
            .await
            .ok()?;
        rx.await.ok().flatten()
    }

    /// Whether `peer` is in the routing table.
    pub(crate) async fn in_routing_table(&self, peer: PeerId) -> bool {
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::InRoutingTable { peer, reply })
            .await
            .is_err()
        {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Replica links this node holds open to other nodes.
    pub fn links_open(&self) -> usize {
        self.links.open()
    }

    /// Stops the event loop (closing every listener and connection).
    pub async fn stop(&self) {
        let _ = self.commands.send(Command::Stop).await;
    }
}

/// The swarm, listening, before its event loop starts.
pub struct Network {
    swarm: Swarm<NodeBehaviour>,
    commands: mpsc::Receiver<Command>,
    handle: NetworkHandle,
    /// Whether this node answers the replica protocol over links.
    serves_links: bool,
    prefix_limits: prefix::Limits,
    /// The addresses the node listens on.
    pub listen_addrs: Vec<Multiaddr>,
    /// The seeds it joins the network through, dialed again while it is cut off.
    seeds: Vec<Multiaddr>,
}

/// Why the network could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// Building the transport failed.
    #[error("building the libp2p transport: {0}")]
    Transport(String),
    /// A listen address is not a valid multiaddr or could not be bound.
    #[error("listening on {addr}: {message}")]
    Listen {
        /// The address.
        addr: String,
        /// What went wrong.
        message: String,
    },
}

impl Network {
    /// Builds the swarm and binds every listen address of `config`.
    pub async fn bind(
        keypair: libp2p::identity::Keypair,
        config: &Config,
        tap: Option<crate::tap::Tap>,
        without_links: bool,
        metrics: Arc<Metrics>,
    ) -> Result<Self, NetworkError> {
        let relay = config.role == NodeRole::Relay;
        let reachability = config.reachability;
        let serves = reachability != Reachability::Private;
        let max_connections = config.max_connections;
        let classify =
            crate::budget::Classifier::new(&config.budgets).map_err(NetworkError::Transport)?;
        let per_prefix = config.budgets.connections_per_prefix;
        let make_behaviour = |key: &libp2p::identity::Keypair| {
            let mut kad_config = kad::Config::new(KAD_PROTOCOL);
            kad_config
                .set_query_timeout(Duration::from_secs(30))
                .set_record_filtering(kad::StoreInserts::FilterBoth)
                // Lookups follow disjoint paths, so one lying peer on a path cannot
                // steer where a lookup ends.
                .disjoint_query_paths(true)
                // Peers enter the routing table only through `LoopState::admit`, which
                // limits how many one network prefix may hold.
                .set_kbucket_inserts(kad::BucketInserts::Manual)
                .set_replication_interval(None)
                .set_publication_interval(None)
                .set_periodic_bootstrap_interval(Some(Duration::from_secs(
                    config.bootstrap_interval_secs.max(1),
                )));
            let peer = key.public().to_peer_id();
            let mut kad =
                kad::Behaviour::with_config(peer, kad::store::MemoryStore::new(peer), kad_config);
            // Kademlia's client mode neither answers queries nor announces the protocol,
            // so other nodes never put this node in their routing tables. `auto` starts
            // there and turns server when AutoNAT confirms an address.
            kad.set_mode(match reachability {
                Reachability::Public => Some(kad::Mode::Server),
                Reachability::Private => Some(kad::Mode::Client),
                Reachability::Auto => None,
            });
            NodeBehaviour {
                limits: connection_limits::Behaviour::new(
                    connection_limits::ConnectionLimits::default()
                        .with_max_established(Some(max_connections))
                        .with_max_established_per_peer(Some(4))
                        .with_max_pending_incoming(Some(256)),
                ),
                per_prefix: crate::conn_budget::ConnBudget::new(classify.clone(), per_prefix),
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                        .with_agent_version(format!("tigress-node/{}", env!("CARGO_PKG_VERSION"))),
                ),
                ping: ping::Behaviour::new(ping::Config::new()),
                autonat_client: (reachability == Reachability::Auto)
                    .then(autonat::v2::client::Behaviour::default)
                    .into(),
                autonat_server: serves.then(autonat::v2::server::Behaviour::default).into(),
                kad,
                client: request_response::Behaviour::with_codec(
                    ClientCodec::default(),
                    // Inbound from clients; outbound as a relay to targets.
                    [(CLIENT_STREAM, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(REQUEST_TIMEOUT)
                        .with_max_concurrent_streams(256),
                ),
                replica: request_response::Behaviour::with_codec(
                    ReplicaCodec::default(),
                    [(
                        REPLICA_STREAM,
                        if relay && serves {
                            ProtocolSupport::Full
                        } else {
                            ProtocolSupport::Outbound
                        },
                    )],
                    request_response::Config::default()
                        .with_request_timeout(REQUEST_TIMEOUT)
                        .with_max_concurrent_streams(512),
                ),
                stream: libp2p_stream::Behaviour::new(),
                addresses: crate::addresses::AddressBook::default(),
            }
        };
        let idle = Duration::from_secs(config.idle_timeout_secs);
        let transport_error = |e: &dyn std::fmt::Display| NetworkError::Transport(e.to_string());
        let held = crate::held::HeldBudget::new(
            classify.clone(),
            config.budgets.held_bytes_per_connection,
            config.budgets.held_bytes_per_prefix,
        );
        let pacing = crate::pace::Pacing::new(
            classify.clone(),
            config.budgets.read_bytes_per_sec_per_prefix,
            config.budgets.read_bytes_per_sec_per_host,
        );
        // TCP paced per source ([`crate::pace`]), Noise and yamux, each connection's muxer
        // wrapped so that what a peer sent and the node has not answered is held to a
        // budget ([`crate::held`]), and, in tests, every substream recorded
        // ([`crate::tap`]).
        let tcp = move |key: &libp2p::identity::Keypair| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
            use libp2p::Transport as _;
            use libp2p::core::muxing::StreamMuxerBox;
            Ok(libp2p::tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                .map(move |stream, endpoint| pacing.wrap(stream, endpoint.get_remote_address()))
                .upgrade(libp2p::core::upgrade::Version::V1)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default())
                .map(move |(peer, muxer), endpoint| {
                    let from = endpoint.get_remote_address().clone();
                    let muxer = crate::held::Held::new(muxer, &from, held.clone());
                    let muxer = match &tap {
                        Some(tap) => StreamMuxerBox::new(crate::tap::Tapped::new(
                            muxer,
                            peer,
                            from,
                            tap.clone(),
                        )),
                        None => StreamMuxerBox::new(muxer),
                    };
                    (peer, muxer)
                }))
        };
        let builder = libp2p::SwarmBuilder::with_existing_identity(keypair).with_tokio();
        // QUIC (listen on `/ip4/…/udp/…/quic-v1`) is an optional cargo feature: it builds
        // aws-lc-sys, a C library. Its connections are neither paced nor held to the byte
        // budget.
        #[cfg(feature = "quic")]
        let builder = builder.with_quic();
        let mut swarm = builder
            .with_other_transport(tcp)
            .map_err(|e| transport_error(&e))?
            .with_behaviour(|key| make_behaviour(key))
            .map_err(|e| transport_error(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build();

        let mut listeners: HashSet<ListenerId> = HashSet::new();
        for text in &config.listen {
            let addr: Multiaddr = text.parse().map_err(|e| NetworkError::Listen {
                addr: text.clone(),
                message: format!("{e}"),
            })?;
            probe_tcp(&addr).map_err(|message| NetworkError::Listen {
                addr: text.clone(),
                message,
            })?;
            let id = swarm.listen_on(addr).map_err(|e| NetworkError::Listen {
                addr: text.clone(),
                message: e.to_string(),
            })?;
            listeners.insert(id);
        }
        let mut listen_addrs = Vec::new();
        let mut waiting = listeners.clone();
        while !waiting.is_empty() {
            match tokio::time::timeout(Duration::from_secs(10), swarm.select_next_some()).await {
                Ok(SwarmEvent::NewListenAddr {
                    listener_id,
                    address,
                }) => {
                    waiting.remove(&listener_id);
                    listen_addrs.push(address);
                }
                Ok(SwarmEvent::ListenerError { error, .. })
                | Ok(SwarmEvent::ListenerClosed {
                    reason: Err(error), ..
                }) => {
                    return Err(NetworkError::Listen {
                        addr: config.listen.join(","),
                        message: error.to_string(),
                    });
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(NetworkError::Listen {
                        addr: config.listen.join(","),
                        message: "no listen address reported within 10 s".into(),
                    });
                }
            }
        }
        // Collect the other interface addresses of wildcard listeners already reported.
        while let Some(event) = swarm.next().now_or_never().flatten() {
            if let SwarmEvent::NewListenAddr { address, .. } = event {
                listen_addrs.push(address);
            }
        }
        let (tx, commands) = mpsc::channel(1024);
        let control = swarm.behaviour().stream.new_control();
        let connecting = tx.clone();
        let connect: crate::link::Connect = Arc::new(move |peer, reply| {
            // A full queue drops `reply` (not known): libp2p-stream dials on its own too.
            let _ = connecting.try_send(Command::Connect { peer, reply });
        });
        let handle = NetworkHandle {
            commands: tx,
            local: *swarm.local_peer_id(),
            public: Arc::new(AtomicBool::new(reachability == Reachability::Public)),
            links: crate::link::Links::new(control, idle, without_links, connect),
            finding: Arc::new(Finding::new(metrics)),
        };
        tracing::info!(
            setting = reachability.as_str(),
            "reachability: {}",
            match reachability {
                Reachability::Public => "public (serving in routing tables and as a replica)",
                Reachability::Private => "private (a client of the network, never a replica)",
                Reachability::Auto => "private until AutoNAT confirms an address",
            }
        );
        Ok(Self {
            swarm,
            commands,
            handle,
            serves_links: relay && serves && !without_links,
            listen_addrs,
            prefix_limits: prefix::Limits {
                total: config.max_peers_per_prefix,
                per_bucket: config.max_peers_per_prefix_per_bucket,
            },
            seeds: Vec::new(),
        })
    }

    /// The handle.
    pub fn handle(&self) -> NetworkHandle {
        self.handle.clone()
    }

    /// Dials the seeds and adds them to the routing table.
    pub fn add_seeds(&mut self, seeds: &[Multiaddr]) {
        for seed in seeds {
            let peer = peer_of(seed);
            if peer == Some(*self.swarm.local_peer_id()) {
                continue;
            }
            if let Some(peer) = peer {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, seed.clone());
            }
            self.seeds.push(seed.clone());
        }
        dial_seeds(&mut self.swarm, &self.seeds);
    }

    /// Runs the event loop until stopped.
    pub(crate) async fn run(self, ctx: LoopContext) {
        let Network {
            mut swarm,
            mut commands,
            prefix_limits,
            handle,
            serves_links,
            seeds,
            ..
        } = self;
        // Other nodes' links to this replica.
        let serving = if serves_links {
            match swarm.behaviour().stream.new_control().accept(REPLICA_LINK) {
                Ok(incoming) => Some(tokio::spawn(crate::link::serve(
                    incoming,
                    Arc::new(crate::link::ServeContext {
                        inbound: ctx.inbound.clone(),
                        metrics: ctx.metrics.clone(),
                        budgets: ctx.budgets.clone(),
                        net: handle.clone(),
                        answering: ctx.answering.clone(),
                    }),
                ))),
                Err(e) => {
                    tracing::error!(error = %e, "the replica link protocol is taken");
                    None
                }
            }
        } else {
            None
        };
        let mut state = LoopState::new(
            prefix_limits,
            handle.public.clone(),
            seeds,
            handle.links.clone(),
        );
        ctx.metrics
            .reachable
            .store(state.public.load(Ordering::Relaxed), Ordering::Relaxed);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None | Some(Command::Stop) => break,
                    Some(c) => state.command(&mut swarm, c),
                },
                event = swarm.select_next_some() => state.event(&mut swarm, event, &ctx),
                () = tokio::time::sleep_until(state.rejoin.next), if !state.rejoin.seeds.is_empty() => {
                    state.rejoin.check(&mut swarm);
                }
            }
        }
        handle.links.stop();
        if let Some(serving) = serving {
            serving.abort();
        }
        for (_, reply) in state.pending_replica.drain() {
            let _ = reply.send(Err(CallError::Stopping));
        }
        for (_, reply) in state.pending_client.drain() {
            let _ = reply.send(Err(CallError::Stopping));
        }
        // The answers already handed over (the last requests of a graceful stop, the
        // long-polls it ended) go out before the connections close.
        let deadline = tokio::time::Instant::now() + RESPONSE_DRAIN;
        while state.responding > 0 || ctx.answering.load(Ordering::Acquire) > 0 {
            tokio::select! {
                event = swarm.select_next_some() => state.event(&mut swarm, event, &ctx),
                () = tokio::time::sleep_until(deadline) => break,
                // Links write their answers on their own: look again now and then.
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
        // An answer counted as sent may still sit in the connection's buffers: the
        // connections stay up a little longer, until their peers close them (a client
        // does once it has its answer) or the linger ends.
        let linger = deadline.min(tokio::time::Instant::now() + RESPONSE_LINGER);
        while swarm.connected_peers().next().is_some() {
            tokio::select! {
                event = swarm.select_next_some() => state.event(&mut swarm, event, &ctx),
                () = tokio::time::sleep_until(linger) => break,
            }
        }
    }
}

/// The peer ID a multiaddr ends with, if it names one.
fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

/// Dials every seed not connected or being dialed, and starts a Kademlia bootstrap.
fn dial_seeds(swarm: &mut Swarm<NodeBehaviour>, seeds: &[Multiaddr]) {
    for seed in seeds {
        let opts = match peer_of(seed) {
            Some(peer) => DialOpts::peer_id(peer)
                .addresses(vec![seed.clone()])
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build(),
            None => DialOpts::unknown_peer_id().address(seed.clone()).build(),
        };
        if let Err(e) = swarm.dial(opts) {
            tracing::debug!(%seed, error = %e, "seed not dialed");
        }
    }
    if !seeds.is_empty() {
        let _ = swarm.behaviour_mut().kad.bootstrap();
    }
}

/// How soon a node cut off from the network first dials its seeds again.
const REJOIN_FIRST: Duration = Duration::from_secs(1);

/// The longest wait between two tries to rejoin.
const REJOIN_MAX: Duration = Duration::from_secs(60);

/// How often a joined node checks it still is (a walk over its routing table).
const REJOIN_CHECK: Duration = Duration::from_secs(5);

/// Dials the seeds again, backing off, while the node knows no node but its seeds and is
/// connected to none of them: a seed that was down or slow when the node started, or the
/// only peers it had going away, would otherwise leave it alone until the next periodic
/// bootstrap, minutes away. (A node whose table holds other nodes is not cut off even
/// when every connection has idled out: its lookups dial them.)
struct Rejoin {
    seeds: Vec<Multiaddr>,
    /// The seeds' peer IDs (those of `seeds` that name one).
    seed_peers: HashSet<PeerId>,
    next: tokio::time::Instant,
    wait: Duration,
}

impl Rejoin {
    fn new(seeds: Vec<Multiaddr>) -> Self {
        Self {
            seed_peers: seeds.iter().filter_map(peer_of).collect(),
            seeds,
            next: tokio::time::Instant::now() + REJOIN_FIRST,
            wait: REJOIN_FIRST,
        }
    }

    fn check(&mut self, swarm: &mut Swarm<NodeBehaviour>) {
        let now = tokio::time::Instant::now();
        let seed_connected = self.seed_peers.iter().any(|p| swarm.is_connected(p));
        // A node that knows others besides its seeds is not cut off, connected or not
        // (connections idle out): its lookups dial them.
        let seeds = &self.seed_peers;
        let knows_others = swarm.behaviour_mut().kad.kbuckets().any(|bucket| {
            bucket
                .iter()
                .any(|e| !seeds.contains(e.node.key.preimage()))
        });
        if seed_connected || knows_others {
            self.wait = REJOIN_FIRST;
            self.next = now + REJOIN_CHECK;
            return;
        }
        tracing::warn!(
            seeds = self.seeds.len(),
            next_try_secs = self.wait.as_secs(),
            "knows no node of the network but its seeds and reaches none; dialing them again"
        );
        dial_seeds(swarm, &self.seeds);
        self.next = now + self.wait;
        self.wait = (self.wait * 2).min(REJOIN_MAX);
    }
}

/// How long a stopping node keeps its connections to write answers already given.
const RESPONSE_DRAIN: Duration = Duration::from_secs(2);

/// How long a stopping node keeps its connections after the last answer went out, for
/// the bytes to leave and the peers to close.
const RESPONSE_LINGER: Duration = Duration::from_millis(500);

/// An inbound request, handed by the event loop to the dispatcher with the channel its
/// answer goes back on.
pub(crate) enum Inbound {
    /// A client's request.
    Client {
        peer: PeerId,
        /// The remote address of the connection it came on.
        from: Option<Multiaddr>,
        request: ClientRequest,
        channel: ResponseChannel<ClientResponse>,
    },
    /// Another node's request to this replica.
    Replica {
        /// The peer asking.
        peer: PeerId,
        /// The remote address of the connection it came on.
        from: Option<Multiaddr>,
        request: ReplicaRequest,
        channel: ReplicaChannel,
    },
}

/// Where the event loop puts inbound requests and its gauges.
pub(crate) struct LoopContext {
    pub(crate) inbound: mpsc::Sender<Inbound>,
    /// Answers handed to replica links and not yet written ([`crate::link`]).
    pub(crate) answering: Arc<AtomicUsize>,
    pub(crate) metrics: Arc<Metrics>,
    /// The request rates per source are checked here, as requests arrive: a source over
    /// its rate is answered at once and never queues ahead of others for the dispatcher.
    pub(crate) budgets: Arc<crate::budget::Budgets>,
}

/// The peers of this node's routing table.
fn table_peers(swarm: &mut Swarm<NodeBehaviour>) -> HashSet<PeerId> {
    let mut peers = HashSet::new();
    for bucket in swarm.behaviour_mut().kad.kbuckets() {
        for entry in bucket.iter() {
            peers.insert(*entry.node.key.preimage());
        }
    }
    peers
}

/// The bucket `peer` goes to in this node's routing table.
fn bucket_of(swarm: &Swarm<NodeBehaviour>, peer: &PeerId) -> u32 {
    kad::KBucketKey::from(*swarm.local_peer_id())
        .distance(&kad::KBucketKey::from(*peer))
        .ilog2()
        .unwrap_or(0)
}

/// Whether `peer` is in the routing table.
fn in_routing_table(swarm: &mut Swarm<NodeBehaviour>, peer: &PeerId) -> bool {
    swarm
        .behaviour_mut()
        .kad
        .kbucket(*peer)
        .is_some_and(|bucket| bucket.iter().any(|e| e.node.key.preimage() == peer))
}

/// Whether a replica request of this kind is served only to nodes in the routing table.
/// Anti-entropy runs between the nodes of a replica set, which know each other: a
/// stranger's Summaries never reach the store.
pub(crate) fn only_from_known_nodes(request: &ReplicaRequest) -> bool {
    matches!(request, ReplicaRequest::Summaries { .. })
}

/// Admits another node's request to this replica, whichever way it came (request-response
/// or a replica link): refused when it is for known nodes only and `known` is false, when
/// its source is over its replica rate, or when the dispatcher's queue is full. On a
/// refusal the answer's channel comes back with the error to answer on it.
pub(crate) fn admit_replica(
    budgets: &crate::budget::Budgets,
    inbound: &mpsc::Sender<Inbound>,
    peer: PeerId,
    from: Option<Multiaddr>,
    known: bool,
    request: ReplicaRequest,
    channel: ReplicaChannel,
) -> Result<(), (ReplicaChannel, RemoteError)> {
    if only_from_known_nodes(&request) && !known {
        return Err((
            channel,
            RemoteError::new(
                ErrorCode::Unauthorized,
                "summaries go to nodes this node knows only",
            ),
        ));
    }
    let source = budgets.classify.of_node(peer, from.as_ref());
    if let Err(e) = budgets.replica_rates.check(&source) {
        return Err((channel, crate::budget::refusal(e, "requests")));
    }
    match inbound.try_send(Inbound::Replica {
        peer,
        from,
        request,
        channel,
    }) {
        Ok(()) => Ok(()),
        Err(
            mpsc::error::TrySendError::Full(Inbound::Replica { channel, .. })
            | mpsc::error::TrySendError::Closed(Inbound::Replica { channel, .. }),
        ) => Err((channel, busy())),
        // Only replica requests are sent here.
        Err(_) => Ok(()),
    }
}

/// The answer to a request the node has no room for now.
pub(crate) fn busy() -> RemoteError {
    RemoteError::new(
        ErrorCode::RateLimited,
        "the node is at its request limit; retry shortly",
    )
}

struct LoopState {
    pending_replica: HashMap<OutboundRequestId, ReplicaReply>,
    pending_client: HashMap<OutboundRequestId, ClientReply>,
    pending_closest: HashMap<QueryId, oneshot::Sender<Lookup>>,
    /// Peers known (from identify) not to serve the replica protocol: bootstrap nodes.
    routing_only: HashSet<PeerId>,
    /// Answers handed to the swarm and not yet written (or failed).
    responding: usize,
    /// The address each connected peer's connection comes from.
    remote: HashMap<PeerId, Multiaddr>,
    /// The remote address of each established connection.
    addrs: HashMap<ConnectionId, Multiaddr>,
    /// The prefixes of the routing-table entries this node inserted.
    prefixes: prefix::PrefixTable,
    prefix_limits: prefix::Limits,
    /// The addresses this node reached each connected peer at by dialing: the only ones it
    /// puts in its routing table.
    dialed: HashMap<PeerId, Vec<Multiaddr>>,
    /// Dials checking an address a peer announced before it enters the routing table.
    verifying: HashMap<ConnectionId, (PeerId, Multiaddr)>,
    /// Checks started per connected peer: a peer that announces address after address
    /// (identify pushes are free) gets at most [`MAX_ADDRS_PER_PEER`] dials from us.
    checks: HashMap<PeerId, usize>,
    /// Whether this node is reachable (see [`NetworkHandle::is_public`]).
    public: Arc<AtomicBool>,
    /// The configured seeds, dialed again while the node is cut off. The operator chose
    /// them: they are not counted against their network prefix.
    rejoin: Rejoin,
    /// This node's links to other replicas (told which peers serve links).
    links: Arc<crate::link::Links>,
    /// Links waiting for a connection to their peer, by peer.
    connecting: HashMap<PeerId, Connecting>,
}

/// Links waiting for a connection to one peer, and the dial made for them.
#[derive(Default)]
struct Connecting {
    /// This node's dial, if it made one (another dial under way answers them otherwise).
    dial: Option<ConnectionId>,
    waiting: Vec<oneshot::Sender<bool>>,
}

impl Connecting {
    fn answer(self, connected: bool) {
        for reply in self.waiting {
            let _ = reply.send(connected);
        }
    }
}

/// The most peers links wait for a connection to at once; beyond it a link is not told
/// and asks for its stream at once (libp2p-stream dials the peer itself).
const MAX_CONNECTING: usize = 4096;

/// The most links waiting for a connection to one peer (a peer has one link at a time).
const MAX_WAITING_PER_PEER: usize = 8;

/// The most addresses of one peer that are checked and put in the routing table.
const MAX_ADDRS_PER_PEER: usize = 8;

/// The most address checks in flight at once.
const MAX_VERIFYING: usize = 256;

/// Whether `addr` is on this host (127.0.0.0/8 or ::1).
fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

/// `addr` without its trailing `/p2p/<id>`.
fn without_peer(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

impl LoopState {
    fn new(
        prefix_limits: prefix::Limits,
        public: Arc<AtomicBool>,
        seeds: Vec<Multiaddr>,
        links: Arc<crate::link::Links>,
    ) -> Self {
        Self {
            links,
            pending_replica: HashMap::new(),
            pending_client: HashMap::new(),
            pending_closest: HashMap::new(),
            routing_only: HashSet::new(),
            responding: 0,
            remote: HashMap::new(),
            addrs: HashMap::new(),
            prefixes: prefix::PrefixTable::default(),
            prefix_limits,
            dialed: HashMap::new(),
            verifying: HashMap::new(),
            checks: HashMap::new(),
            public,
            rejoin: Rejoin::new(seeds),
            connecting: HashMap::new(),
        }
    }

    /// Has `reply` told when `peer` is connected, dialing it unless it is connected or being
    /// dialed. Opening a link's stream only on a connection the swarm has (not through
    /// libp2p-stream's own dial) keeps the request from landing in libp2p-stream's pending
    /// channel for the peer just as another connection to it is being set up: no
    /// connection ever takes that channel then, and the link waits out its open timeout.
    fn connect(
        &mut self,
        swarm: &mut Swarm<NodeBehaviour>,
        peer: PeerId,
        reply: oneshot::Sender<bool>,
    ) {
        if swarm.is_connected(&peer) {
            let _ = reply.send(true);
            return;
        }
        if self.connecting.len() >= MAX_CONNECTING && !self.connecting.contains_key(&peer) {
            self.connecting
                .retain(|_, c| c.waiting.iter().any(|w| !w.is_closed()));
            if self.connecting.len() >= MAX_CONNECTING {
                return;
            }
        }
        let connecting = self.connecting.entry(peer).or_default();
        connecting.waiting.retain(|w| !w.is_closed());
        if connecting.waiting.len() >= MAX_WAITING_PER_PEER {
            return;
        }
        if connecting.dial.is_none() {
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            let id = opts.connection_id();
            match swarm.dial(opts) {
                Ok(()) => connecting.dial = Some(id),
                // Being dialed already: that dial's end answers.
                Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => {}
                Err(error) => {
                    tracing::debug!(%peer, %error, "replica not dialed for its link");
                    let _ = reply.send(false);
                    if connecting.waiting.is_empty() {
                        self.connecting.remove(&peer);
                    }
                    return;
                }
            }
        }
        connecting.waiting.push(reply);
    }

    /// Puts `peer`'s announced addresses in the routing table, each only once this node has
    /// reached the peer there itself: an address it dialed already counts, any other is
    /// dialed first. An address nobody can dial (behind NAT, private, someone else's)
    /// never enters the table.
    fn add_verified(
        &mut self,
        swarm: &mut Swarm<NodeBehaviour>,
        peer: PeerId,
        announced: Vec<Multiaddr>,
    ) {
        // A peer connected over loopback is on this host: its loopback addresses need no
        // dial-back (local clusters start dozens of nodes at once).
        let local = self.remote.get(&peer).is_some_and(is_loopback);
        for addr in announced.iter().take(MAX_ADDRS_PER_PEER) {
            let addr = without_peer(addr);
            if self.dialed.get(&peer).is_some_and(|d| d.contains(&addr))
                || (local && is_loopback(&addr))
            {
                swarm.behaviour_mut().kad.add_address(&peer, addr);
                continue;
            }
            if self.verifying.len() >= MAX_VERIFYING
                || self
                    .verifying
                    .values()
                    .any(|(p, a)| *p == peer && *a == addr)
            {
                continue;
            }
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![addr.clone()])
                .condition(PeerCondition::Always)
                .build();
            let id = opts.connection_id();
            if swarm.dial(opts).is_ok() {
                self.verifying.insert(id, (peer, addr));
            }
        }
    }

    /// Records this node's reachability as Kademlia's mode reports it.
    fn set_public(&self, public: bool, ctx: &LoopContext) {
        if self.public.swap(public, Ordering::Relaxed) != public {
            tracing::info!(
                "reachability: {}",
                if public {
                    "public (an address was dialed back; serving in routing tables and as a replica)"
                } else {
                    "private (a client of the network, never a replica)"
                }
            );
        }
        ctx.metrics.reachable.store(public, Ordering::Relaxed);
    }

    /// Whether `peer`, identified on a connection from `from`, may enter the routing
    /// table: that connection's prefix has room, in all and in the bucket the peer would
    /// go to. A peer whose connection closed before its identification was handled is not
    /// admitted (it has no address to count it by); a connection without an IP address
    /// (no prefix) is not limited.
    fn admit(
        &mut self,
        swarm: &mut Swarm<NodeBehaviour>,
        peer: &PeerId,
        from: Option<&Multiaddr>,
    ) -> bool {
        let Some(from) = from else {
            tracing::debug!(%peer, "identified on a connection already closed; not routed");
            return false;
        };
        let Some(prefix) = prefix::Prefix::of_addr(from) else {
            return true;
        };
        if self.rejoin.seed_peers.contains(peer) {
            return true;
        }
        let admitted = self.take_place(swarm, peer, prefix);
        if !admitted {
            tracing::debug!(%peer, ?prefix, "routing table: the peer's network prefix is full");
        }
        admitted
    }

    /// Counts `peer` under `prefix` if the prefix has room in all and in the peer's bucket;
    /// whether it had.
    fn take_place(
        &mut self,
        swarm: &mut Swarm<NodeBehaviour>,
        peer: &PeerId,
        prefix: prefix::Prefix,
    ) -> bool {
        self.count_table(swarm);
        let bucket = bucket_of(swarm, peer);
        self.prefixes.take(self.prefix_limits, peer, prefix, bucket)
    }

    /// Forgets the counted entries Kademlia no longer holds (it drops entries on its own),
    /// keeping those whose address is still being dialed back before they enter.
    fn count_table(&mut self, swarm: &mut Swarm<NodeBehaviour>) {
        let mut table = table_peers(swarm);
        table.extend(self.verifying.values().map(|(p, _)| *p));
        self.prefixes.retain(|p| table.contains(p));
    }

    /// A peer entered the routing table: one that was not counted when admitted (its
    /// insert waited for a place, or its dial-back outlived the count) is counted now, and
    /// taken out again if its prefix has no room left.
    fn entered(
        &mut self,
        swarm: &mut Swarm<NodeBehaviour>,
        peer: &PeerId,
        address: Option<&Multiaddr>,
    ) {
        if self.prefixes.contains(peer) || self.rejoin.seed_peers.contains(peer) {
            return;
        }
        let Some(prefix) = self
            .remote
            .get(peer)
            .or(address)
            .and_then(prefix::Prefix::of_addr)
        else {
            return;
        };
        if !self.take_place(swarm, peer, prefix) {
            tracing::debug!(%peer, ?prefix, "routing table: a late entry's network prefix is full; removed");
            swarm.behaviour_mut().kad.remove_peer(peer);
        }
    }

    fn command(&mut self, swarm: &mut Swarm<NodeBehaviour>, command: Command) {
        match command {
            Command::Client {
                peer,
                request,
                reply,
            } => {
                let id = swarm.behaviour_mut().client.send_request(&peer, request);
                self.pending_client.insert(id, reply);
            }
            Command::KnownNodes { reply } => {
                let mut nodes = Vec::new();
                for bucket in swarm.behaviour_mut().kad.kbuckets() {
                    for entry in bucket.iter() {
                        let peer = *entry.node.key.preimage();
                        if !self.routing_only.contains(&peer) {
                            nodes.push((peer, entry.node.value.iter().cloned().collect()));
                        }
                    }
                }
                let _ = reply.send(nodes);
            }
            Command::Replica {
                peer,
                request,
                reply,
            } => {
                let id = swarm.behaviour_mut().replica.send_request(&peer, request);
                self.pending_replica.insert(id, reply);
            }
            Command::RespondClient { channel, response } => {
                let sent = swarm
                    .behaviour_mut()
                    .client
                    .send_response(channel, response);
                self.responding += usize::from(sent.is_ok());
            }
            Command::RespondReplica { channel, response } => {
                let sent = swarm
                    .behaviour_mut()
                    .replica
                    .send_response(channel, response);
                self.responding += usize::from(sent.is_ok());
            }
            Command::Closest { key, reply } => {
                let id = swarm.behaviour_mut().kad.get_closest_peers(key);
                self.pending_closest.insert(id, reply);
            }
            Command::RoutingTable { reply } => {
                let mut peers = Vec::new();
                for bucket in swarm.behaviour_mut().kad.kbuckets() {
                    for entry in bucket.iter() {
                        peers.push(*entry.node.key.preimage());
                    }
                }
                let _ = reply.send(peers);
            }
            Command::ClosestLocal { key, count, reply } => {
                let target = kad::KBucketKey::new(key);
                let peers: Vec<PeerId> = swarm
                    .behaviour_mut()
                    .kad
                    .get_closest_local_peers(&target)
                    .map(|k| *k.preimage())
                    .filter(|p| !self.routing_only.contains(p))
                    .take(count)
                    .collect();
                let _ = reply.send(peers);
            }
            Command::Connect { peer, reply } => self.connect(swarm, peer, reply),
            Command::Remote { peer, reply } => {
                let _ = reply.send(self.remote.get(&peer).cloned());
            }
            Command::InRoutingTable { peer, reply } => {
                let _ = reply.send(in_routing_table(swarm, &peer));
            }
            Command::Stop => {}
        }
    }

    fn event(
        &mut self,
        swarm: &mut Swarm<NodeBehaviour>,
        event: SwarmEvent<NodeBehaviourEvent>,
        ctx: &LoopContext,
    ) {
        match event {
            SwarmEvent::Behaviour(NodeBehaviourEvent::Client(
                request_response::Event::Message {
                    message:
                        request_response::Message::Response {
                            request_id,
                            response,
                        },
                    ..
                },
            )) => {
                if let Some(reply) = self.pending_client.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::Client(
                request_response::Event::OutboundFailure {
                    request_id, error, ..
                },
            )) => {
                if let Some(reply) = self.pending_client.remove(&request_id) {
                    let _ = reply.send(Err(call_error(&error)));
                }
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::Client(
                request_response::Event::Message {
                    peer,
                    connection_id,
                    message:
                        request_response::Message::Request {
                            request, channel, ..
                        },
                },
            )) => {
                let from = self.addrs.get(&connection_id).cloned();
                let source = ctx.budgets.classify.of_addr(from.as_ref());
                let refused = match ctx.budgets.client_rates.check(&source) {
                    Err(e) => Some((channel, crate::budget::refusal(e, "requests"))),
                    Ok(()) => match ctx.inbound.try_send(Inbound::Client {
                        peer,
                        from,
                        request,
                        channel,
                    }) {
                        Err(mpsc::error::TrySendError::Full(Inbound::Client {
                            channel, ..
                        })) => Some((channel, busy())),
                        _ => None,
                    },
                };
                if let Some((channel, e)) = refused {
                    ctx.metrics.refused.fetch_add(1, Ordering::Relaxed);
                    let sent = swarm
                        .behaviour_mut()
                        .client
                        .send_response(channel, ClientResponse::Error(e));
                    self.responding += usize::from(sent.is_ok());
                }
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::Replica(
                request_response::Event::Message {
                    peer,
                    connection_id,
                    message,
                },
            )) => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let from = self.addrs.get(&connection_id).cloned();
                    let known = only_from_known_nodes(&request) && in_routing_table(swarm, &peer);
                    let refused = admit_replica(
                        &ctx.budgets,
                        &ctx.inbound,
                        peer,
                        from,
                        known,
                        request,
                        ReplicaChannel::Swarm(channel),
                    )
                    .err()
                    .and_then(|(channel, e)| match channel {
                        ReplicaChannel::Swarm(channel) => Some((channel, e)),
                        ReplicaChannel::Link(_) => None,
                    });
                    if let Some((channel, e)) = refused {
                        ctx.metrics.refused.fetch_add(1, Ordering::Relaxed);
                        let sent = swarm
                            .behaviour_mut()
                            .replica
                            .send_response(channel, ReplicaResponse::Error(e));
                        self.responding += usize::from(sent.is_ok());
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.pending_replica.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            SwarmEvent::Behaviour(
                NodeBehaviourEvent::Client(
                    request_response::Event::ResponseSent { .. }
                    | request_response::Event::InboundFailure { .. },
                )
                | NodeBehaviourEvent::Replica(
                    request_response::Event::ResponseSent { .. }
                    | request_response::Event::InboundFailure { .. },
                ),
            ) => {
                self.responding = self.responding.saturating_sub(1);
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::Replica(
                request_response::Event::OutboundFailure {
                    request_id, error, ..
                },
            )) => {
                if let Some(reply) = self.pending_replica.remove(&request_id) {
                    let _ = reply.send(Err(call_error(&error)));
                }
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                connection_id,
                info,
            })) => {
                let from = self.addrs.get(&connection_id).cloned();
                if info.protocols.contains(&KAD_PROTOCOL)
                    && self.admit(swarm, &peer_id, from.as_ref())
                {
                    self.add_verified(swarm, peer_id, info.listen_addrs);
                }
                if info.protocols.contains(&REPLICA_STREAM) {
                    self.routing_only.remove(&peer_id);
                } else {
                    self.routing_only.insert(peer_id);
                }
                self.links
                    .identified(peer_id, info.protocols.contains(&REPLICA_LINK));
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::Kad(
                kad::Event::OutboundQueryProgressed {
                    id,
                    result: QueryResult::GetClosestPeers(result),
                    step,
                    stats,
                },
            )) => {
                let (peers, timed_out) = match result {
                    Ok(ok) => (ok.peers, false),
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => (peers, true),
                };
                for p in &peers {
                    swarm.behaviour_mut().addresses.found(p.peer_id, &p.addrs);
                }
                if let Some(reply) = self.pending_closest.remove(&id) {
                    let found: Vec<PeerId> = peers
                        .into_iter()
                        .map(|p| p.peer_id)
                        .filter(|p| !self.routing_only.contains(p))
                        .collect();
                    let _ = reply.send(Lookup {
                        peers: found,
                        requests: stats.num_requests(),
                        failures: stats.num_failures(),
                        completed: !timed_out,
                    });
                }
                if !step.last
                    && let Some(mut q) = swarm.behaviour_mut().kad.query_mut(&id)
                {
                    q.finish();
                }
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer,
                is_new_peer,
                addresses,
                ..
            })) => {
                if is_new_peer {
                    self.entered(swarm, &peer, Some(addresses.first()));
                }
                let n: usize = swarm
                    .behaviour_mut()
                    .kad
                    .kbuckets()
                    .map(|b| b.num_entries())
                    .sum();
                ctx.metrics.routing_table.store(n as u64, Ordering::Relaxed);
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::Kad(kad::Event::ModeChanged {
                new_mode,
            })) => {
                self.set_public(new_mode == kad::Mode::Server, ctx);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                connection_id,
                ..
            } => {
                self.addrs
                    .insert(connection_id, endpoint.get_remote_address().clone());
                self.remote
                    .insert(peer_id, endpoint.get_remote_address().clone());
                if endpoint.is_dialer() {
                    let dialed = self.dialed.entry(peer_id).or_default();
                    let addr = without_peer(endpoint.get_remote_address());
                    if dialed.len() < MAX_ADDRS_PER_PEER && !dialed.contains(&addr) {
                        dialed.push(addr);
                    }
                }
                if let Some((peer, addr)) = self.verifying.remove(&connection_id)
                    && peer == peer_id
                {
                    tracing::debug!(%peer, %addr, "address reached; into the routing table");
                    swarm.behaviour_mut().kad.add_address(&peer, addr);
                }
                if let Some(waiting) = self.connecting.remove(&peer_id) {
                    waiting.answer(true);
                }
                ctx.metrics
                    .peers
                    .store(swarm.connected_peers().count() as u64, Ordering::Relaxed);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.addrs.remove(&connection_id);
                if num_established == 0 {
                    self.remote.remove(&peer_id);
                    self.dialed.remove(&peer_id);
                    self.checks.remove(&peer_id);
                }
                ctx.metrics
                    .peers
                    .store(swarm.connected_peers().count() as u64, Ordering::Relaxed);
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                peer_id,
            } => {
                if let Some((peer, addr)) = self.verifying.remove(&connection_id) {
                    tracing::debug!(%peer, %addr, %error, "announced address not reachable; not routed");
                }
                // The dial links waited on failed: they hear it (another dial to the peer
                // failing leaves them waiting on their own).
                if let Some(peer) = peer_id
                    && !swarm.is_connected(&peer)
                    && self
                        .connecting
                        .get(&peer)
                        .is_some_and(|c| c.dial.is_none_or(|d| d == connection_id))
                    && let Some(waiting) = self.connecting.remove(&peer)
                {
                    tracing::debug!(%peer, %error, "replica not reached for its link");
                    waiting.answer(false);
                }
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                tracing::debug!(%error, "incoming connection failed");
            }
            _ => {}
        }
    }
}

/// The typed reason a replica request got no answer.
fn call_error(error: &request_response::OutboundFailure) -> CallError {
    match error {
        request_response::OutboundFailure::Timeout => CallError::Timeout,
        request_response::OutboundFailure::UnsupportedProtocols => CallError::UnsupportedProtocol,
        request_response::OutboundFailure::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            CallError::Malformed
        }
        _ => CallError::Unreachable,
    }
}

/// Refuses a fixed TCP port another process already listens on. libp2p's TCP transport
/// sets `SO_REUSEPORT`, so without this probe a second node would share the port and the
/// kernel would split connections between two peers. The probe binds without that option
/// and lets go at once.
fn probe_tcp(addr: &Multiaddr) -> Result<(), String> {
    let mut ip: Option<std::net::IpAddr> = None;
    let mut port: Option<u16> = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(a.into()),
            Protocol::Ip6(a) => ip = Some(a.into()),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    match (ip, port) {
        (Some(ip), Some(port)) if port != 0 => std::net::TcpListener::bind((ip, port))
            .map(drop)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AddrInUse => {
                    format!("port {port} is already in use by another process")
                }
                _ => e.to_string(),
            }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lone node on loopback with its event loop running.
    async fn lone() -> (NetworkHandle, Arc<Metrics>) {
        let config = Config {
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            reachability: Reachability::Public,
            ..Config::default()
        };
        let metrics = Arc::new(Metrics::default());
        let keypair = libp2p::identity::Keypair::generate_ed25519();
        let network = Network::bind(keypair, &config, None, false, metrics.clone())
            .await
            .expect("binding on loopback");
        let handle = network.handle();
        let (inbound, _inbound_rx) = mpsc::channel(16);
        tokio::spawn(network.run(LoopContext {
            inbound,
            answering: Arc::new(AtomicUsize::new(0)),
            metrics: metrics.clone(),
            budgets: Arc::new(
                crate::budget::Budgets::new(&config.budgets).expect("default budgets"),
            ),
        }));
        (handle, metrics)
    }

    fn counts(metrics: &Metrics) -> (u64, u64) {
        (
            metrics.replica_lookups.load(Ordering::Relaxed),
            metrics.replica_lookups_spared.load(Ordering::Relaxed),
        )
    }

    fn digest() -> ReplicaRequest {
        ReplicaRequest::Digest {
            address: tigress_protocol::Address([9; 32]),
        }
    }

    /// A genesis may name replicas that do not exist, so that every request to its
    /// mailbox would cost a lookup: a peer not found is not looked up again soon, no
    /// more than `FINDING_SLOTS` lookups run at once, and a request that came through a
    /// relay never looks one up (the lookup could ask the relay).
    #[tokio::test]
    async fn undialable_replicas_cost_a_bounded_number_of_lookups() {
        let (net, metrics) = lone().await;
        let nowhere = PeerId::random();

        // Through a relay: refused without a lookup.
        let relay = tigress_protocol::crypto::SigningKey::from_seed(&[5; 32]).public_key();
        let relayed = crate::entry::VIA.scope(relay, net.replica_request(nowhere, digest()));
        assert!(matches!(relayed.await, Err(CallError::Unreachable)));
        assert_eq!(counts(&metrics), (0, 1));

        // Directly: looked up once, not found; asked again, not looked up.
        for _ in 0..2 {
            let answer = net.replica_request(nowhere, digest()).await;
            assert!(matches!(answer, Err(CallError::Unreachable)), "{answer:?}");
        }
        assert_eq!(counts(&metrics), (1, 2));

        // Every slot busy: another unknown peer is not looked up either.
        let held = net
            .finding
            .slots
            .try_acquire_many(FINDING_SLOTS as u32)
            .expect("idle slots");
        let answer = net.replica_request(PeerId::random(), digest()).await;
        assert!(matches!(answer, Err(CallError::Unreachable)), "{answer:?}");
        assert_eq!(counts(&metrics), (1, 3));
        drop(held);

        // A slot free again: that peer is looked up.
        let answer = net.replica_request(PeerId::random(), digest()).await;
        assert!(matches!(answer, Err(CallError::Unreachable)), "{answer:?}");
        assert_eq!(counts(&metrics), (2, 3));
        net.stop().await;
    }

    /// One network prefix gets no more than its share of the routing table, whichever
    /// way its peers come: identified on a connection that closed before the
    /// identification was handled (no address to count them by: not admitted), or
    /// entering the table late, uncounted (a pending insert, a dial-back that outlived
    /// the count): taken out again when they enter.
    #[tokio::test]
    async fn a_prefix_gets_its_share_of_the_table_however_its_peers_enter() {
        let limits = prefix::Limits {
            total: 2,
            per_bucket: 2,
        };
        let config = Config {
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            reachability: Reachability::Public,
            max_peers_per_prefix: limits.total,
            max_peers_per_prefix_per_bucket: limits.per_bucket,
            ..Config::default()
        };
        let keypair = libp2p::identity::Keypair::generate_ed25519();
        let network = Network::bind(keypair, &config, None, false, Arc::new(Metrics::default()))
            .await
            .expect("binding on loopback");
        assert_eq!(network.prefix_limits, limits);
        let mut swarm = network.swarm;
        let links = network.handle.links.clone();
        let seed = PeerId::random();
        let seed_addr: Multiaddr = format!("/ip4/192.0.2.99/tcp/4001/p2p/{seed}")
            .parse()
            .unwrap();
        let mut state = LoopState::new(
            limits,
            Arc::new(AtomicBool::new(true)),
            vec![seed_addr],
            links,
        );
        let at = |i: u8| -> Multiaddr { format!("/ip4/192.0.2.{i}/tcp/4001").parse().unwrap() };

        // Identified on a connection already gone: not admitted.
        assert!(!state.admit(&mut swarm, &PeerId::random(), None));

        // Admitted while there is room, then refused.
        let mut admitted = 0;
        for i in 0..4 {
            let peer = PeerId::random();
            if state.admit(&mut swarm, &peer, Some(&at(i))) {
                swarm.behaviour_mut().kad.add_address(&peer, at(i));
                state.entered(&mut swarm, &peer, Some(&at(i)));
                admitted += 1;
            }
        }
        assert_eq!(admitted, 2);
        assert_eq!(table_peers(&mut swarm).len(), 2);

        // A seed is the operator's: it enters a full prefix, both ways.
        assert!(state.admit(&mut swarm, &seed, Some(&at(99))));
        swarm.behaviour_mut().kad.add_address(&seed, at(99));
        state.entered(&mut swarm, &seed, Some(&at(99)));
        assert!(table_peers(&mut swarm).contains(&seed));
        assert_eq!(table_peers(&mut swarm).len(), 3);

        // Entering late, uncounted: counted when they enter, and over the share, removed.
        for i in 10..13 {
            let peer = PeerId::random();
            swarm.behaviour_mut().kad.add_address(&peer, at(i));
            state.entered(&mut swarm, &peer, Some(&at(i)));
            assert!(
                !table_peers(&mut swarm).contains(&peer),
                "late entry {i} stayed"
            );
        }
        assert_eq!(table_peers(&mut swarm).len(), 3);

        // Another prefix has room of its own.
        let other = PeerId::random();
        let addr: Multiaddr = "/ip4/198.51.100.7/tcp/4001".parse().unwrap();
        swarm.behaviour_mut().kad.add_address(&other, addr.clone());
        state.entered(&mut swarm, &other, Some(&addr));
        assert!(table_peers(&mut swarm).contains(&other));
    }

    /// A node that knows no node but its seeds, and reaches none, dials its seeds again.
    /// A node whose table holds another node does not, even with no connection at all:
    /// connections idle out, and its lookups dial the nodes it knows (hundreds of quiet
    /// nodes would otherwise redial their seed every few seconds).
    #[tokio::test]
    async fn only_a_node_that_knows_no_one_but_its_seeds_dials_them_again() {
        let network = public_on_loopback().await;
        let mut swarm = network.swarm;
        // Ports nothing listens on: a dial fails, but only once the swarm runs, and this
        // test never runs it, so a dial stays pending where it can be counted.
        let closed_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
        };
        let seed = PeerId::random();
        let seed_at: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", closed_port())
            .parse()
            .unwrap();
        let mut rejoin = Rejoin::new(vec![seed_at.clone().with(Protocol::P2p(seed))]);
        let pending = |swarm: &Swarm<NodeBehaviour>| {
            swarm
                .network_info()
                .connection_counters()
                .num_pending_outgoing()
        };
        swarm.behaviour_mut().kad.add_address(&seed, seed_at);
        let other = PeerId::random();
        let other_at: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", closed_port())
            .parse()
            .unwrap();
        swarm.behaviour_mut().kad.add_address(&other, other_at);
        assert_eq!(table_peers(&mut swarm).len(), 2);

        // Quiet: no connection, but another node known.
        rejoin.check(&mut swarm);
        assert_eq!(pending(&swarm), 0, "a quiet node dialed its seed");

        // Cut off: its only other node gone from the table.
        swarm.behaviour_mut().kad.remove_peer(&other);
        rejoin.check(&mut swarm);
        assert_eq!(pending(&swarm), 1, "a node cut off did not dial its seed");
    }

    /// A public node's network bound on loopback, with the default configuration.
    async fn public_on_loopback() -> Network {
        let config = Config {
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            reachability: Reachability::Public,
            ..Config::default()
        };
        let keypair = libp2p::identity::Keypair::generate_ed25519();
        Network::bind(keypair, &config, None, false, Arc::new(Metrics::default()))
            .await
            .expect("binding on loopback")
    }

    /// A link asking for a connection to a peer no address is known for hears at once
    /// that the dial failed; links asking for one to a peer being dialed wait for that
    /// one dial, not a dial each.
    #[tokio::test]
    async fn a_link_hears_its_dial_failed_and_links_share_a_dial() {
        let network = public_on_loopback().await;
        let mut swarm = network.swarm;
        let mut state = LoopState::new(
            network.prefix_limits,
            Arc::new(AtomicBool::new(true)),
            Vec::new(),
            network.handle.links.clone(),
        );

        let nowhere = PeerId::random();
        let (reply, mut heard) = oneshot::channel();
        state.connect(&mut swarm, nowhere, reply);
        assert_eq!(heard.try_recv(), Ok(false), "not told the dial failed");
        assert!(!state.connecting.contains_key(&nowhere));

        // A port nothing listens on; the swarm is never run, so the dial stays pending.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let somewhere = PeerId::random();
        swarm.behaviour_mut().kad.add_address(
            &somewhere,
            format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap(),
        );
        let (first, mut first_heard) = oneshot::channel();
        let (second, mut second_heard) = oneshot::channel();
        state.connect(&mut swarm, somewhere, first);
        state.connect(&mut swarm, somewhere, second);
        assert!(first_heard.try_recv().is_err() && second_heard.try_recv().is_err());
        let pending = swarm
            .network_info()
            .connection_counters()
            .num_pending_outgoing();
        assert_eq!(pending, 1, "one dial for both links");
        assert_eq!(
            state.connecting.get(&somewhere).map(|c| c.waiting.len()),
            Some(2)
        );
    }
}
