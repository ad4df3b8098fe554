//! The floods on the libp2p protocols, and the honest users who share through the client
//! library meanwhile. Every connection leaves from a bound source address
//! ([`tigress_transport::SourceTcp`]), so the node sees the attacker's /24 and each honest
//! user's own.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, StreamProtocol, noise, yamux};
use tigress_client::{Client, Connection, Party, StateDir};
use tigress_protocol::crypto::PublicKey;
use tigress_protocol::rpc::{self, ClientRequest, ReplicaRequest};
use tigress_protocol::session::{SenderSession, ShareIdentity, ShareOptions};
use tigress_protocol::wire;
use tigress_transport::{ReplicaCodec, SourceTcp};
use tokio::sync::mpsc;

/// The scenarios on the libp2p protocols (the others flood HTTP).
pub(super) const SCENARIOS: &[&str] = &[
    "longpoll-p2p",
    "genesis-flood",
    "stalled-frames",
    "summaries-flood",
    "fresh-peers",
    "bad-signatures",
    "relay-flood",
];

fn rng() -> rand_core::UnwrapErr<getrandom::SysRng> {
    rand_core::UnwrapErr(getrandom::SysRng)
}

fn ip(text: &str) -> Option<IpAddr> {
    text.parse().ok()
}

/// A client of the node at `addr` leaving from `from`, its state in `dir`.
async fn client(addr: &Multiaddr, dir: &Path, from: &str) -> Option<Client> {
    let state = StateDir::open(dir).ok()?;
    Client::connect_direct_from(addr, state, ip(from))
        .await
        .ok()
}

/// One honest transfer through the client library: Alice shares, Bob accepts and
/// answers, Alice reads the answer.
pub(super) async fn transfer(addr: &Multiaddr, dir: &Path, from: &str) -> bool {
    let started = std::time::Instant::now();
    let step = |what: &str, r: Result<(), String>| {
        tracing::debug!(from, what, ms = started.elapsed().as_millis() as u64, error = ?r.err(), "honest transfer");
    };
    let work = async {
        let alice = client(addr, &dir.join("alice"), from).await?;
        let shared = alice
            .share(b"a car key", &ShareOptions::default(), None)
            .await;
        step(
            "share",
            shared.as_ref().map(|_| ()).map_err(|e| e.to_string()),
        );
        let shared = shared.ok()?;
        let bob = client(addr, &dir.join("bob"), from).await?;
        let got = bob.accept(&shared.url).await;
        step(
            "accept",
            got.as_ref().map(|_| ()).map_err(|e| e.to_string()),
        );
        let got = got.ok()?;
        let sent = bob.send(&shared.share_id, b"received", None).await;
        step("send", sent.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        sent.ok()?;
        let answer = alice.recv(&shared.share_id, Duration::ZERO).await;
        step(
            "recv",
            answer.as_ref().map(|_| ()).map_err(|e| e.to_string()),
        );
        let answer = answer.ok()?;
        Some(got == b"a car key" && answer.messages.len() == 1)
    };
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// A codec that announces a frame of [`rpc::MAX_FRAME`] − 1 bytes, sends the number of
/// bytes asked and stalls: the attack on a reader that buffers what is announced.
#[derive(Clone, Default)]
struct Stall;

impl request_response::Codec for Stall {
    type Protocol = StreamProtocol;
    type Request = usize;
    type Response = ();

    async fn read_request<T>(&mut self, _: &StreamProtocol, _: &mut T) -> std::io::Result<usize>
    where
        T: AsyncRead + Unpin + Send,
    {
        Err(std::io::Error::other("the attacker serves nothing"))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, _: &mut T) -> std::io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        futures::future::pending().await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        sent: usize,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let announced = u32::try_from(rpc::MAX_FRAME - 1).unwrap_or(u32::MAX);
        io.write_all(&announced.to_be_bytes()).await?;
        let chunk = vec![0u8; 16 * 1024];
        let mut left = sent;
        while left > 0 {
            let n = left.min(chunk.len());
            io.write_all(chunk.get(..n).unwrap_or_default()).await?;
            left -= n;
        }
        io.flush().await?;
        futures::future::pending().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: (),
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        Err(std::io::Error::other("the attacker serves nothing"))
    }
}

#[derive(NetworkBehaviour)]
struct Attack {
    replica: request_response::Behaviour<ReplicaCodec>,
    stall: request_response::Behaviour<Stall>,
}

enum Order {
    Replica(Box<ReplicaRequest>),
    Stall(usize),
}

/// An attacker's raw connection: replica requests as if it were a node, and stalled
/// frames. Requests are sent and their answers dropped; `in_flight` counts those not yet
/// answered or failed.
struct Raw {
    orders: mpsc::Sender<Order>,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

impl Raw {
    async fn connect(addr: &Multiaddr, from: &str) -> Option<Self> {
        let source = ip(from)?;
        let config = request_response::Config::default()
            .with_request_timeout(Duration::from_secs(600))
            .with_max_concurrent_streams(2048);
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_other_transport(
                |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                    use libp2p::Transport as _;
                    Ok(SourceTcp::new(source)
                        .upgrade(libp2p::core::upgrade::Version::V1)
                        .authenticate(noise::Config::new(key)?)
                        .multiplex(yamux::Config::default()))
                },
            )
            .ok()?
            .with_behaviour(|_| Attack {
                replica: request_response::Behaviour::with_codec(
                    ReplicaCodec::default(),
                    [(tigress_transport::REPLICA_STREAM, ProtocolSupport::Outbound)],
                    config.clone(),
                ),
                stall: request_response::Behaviour::with_codec(
                    Stall,
                    [(tigress_transport::CLIENT_STREAM, ProtocolSupport::Outbound)],
                    config.clone(),
                ),
            })
            .ok()?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
            .build();
        swarm.dial(addr.clone()).ok()?;
        let peer = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } => return Some(peer_id),
                    SwarmEvent::OutgoingConnectionError { .. } => return None,
                    _ => {}
                }
            }
        })
        .await
        .ok()??;
        let (orders, mut rx) = mpsc::channel::<Order>(64);
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = in_flight.clone();
        tokio::spawn(async move {
            let (mut served, mut refused, mut failed) = (0u64, 0u64, 0u64);
            loop {
                tokio::select! {
                    order = rx.recv() => match order {
                        Some(Order::Replica(r)) => {
                            swarm.behaviour_mut().replica.send_request(&peer, *r);
                            counted.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(Order::Stall(n)) => {
                            swarm.behaviour_mut().stall.send_request(&peer, n);
                            counted.fetch_add(1, Ordering::Relaxed);
                        }
                        // The attack is over: the connection goes with the swarm.
                        None => break,
                    },
                    event = swarm.select_next_some() => match event {
                        SwarmEvent::Behaviour(AttackEvent::Replica(
                            request_response::Event::Message {
                                message: request_response::Message::Response { response, .. },
                                ..
                            },
                        )) => {
                            counted.fetch_sub(1, Ordering::Relaxed);
                            if matches!(response, tigress_protocol::rpc::ReplicaResponse::Error(_)) {
                                refused += 1;
                            } else {
                                served += 1;
                            }
                        }
                        SwarmEvent::Behaviour(AttackEvent::Replica(
                            request_response::Event::OutboundFailure { .. },
                        ))
                        | SwarmEvent::Behaviour(AttackEvent::Stall(
                            request_response::Event::Message { .. }
                            | request_response::Event::OutboundFailure { .. },
                        )) => {
                            counted.fetch_sub(1, Ordering::Relaxed);
                            failed += 1;
                        }
                        SwarmEvent::ConnectionClosed { num_established: 0, .. } => break,
                        _ => {}
                    },
                }
            }
            tracing::debug!(served, refused, failed, "attacker connection closed");
        });
        Some(Self { orders, in_flight })
    }

    /// Sends `order` (a closed connection drops it: see [`Raw::closed`]).
    async fn send(&self, order: Order) {
        let _ = self.orders.send(order).await;
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn closed(&self) -> bool {
        self.orders.is_closed()
    }
}

/// Connections from `hosts`, one each; a connection the node closed is opened again.
struct Raws {
    addr: Multiaddr,
    hosts: Vec<String>,
    raws: Vec<Option<Raw>>,
    reopened: usize,
}

impl Raws {
    async fn connect(addr: &Multiaddr, hosts: &[String]) -> Self {
        let mut raws = Vec::new();
        for host in hosts {
            raws.push(Raw::connect(addr, host).await);
        }
        Self {
            addr: addr.clone(),
            hosts: hosts.to_vec(),
            raws,
            reopened: 0,
        }
    }

    /// The connections open now, after opening again those that closed.
    async fn live(&mut self) -> Vec<&Raw> {
        for (slot, host) in self.raws.iter_mut().zip(&self.hosts) {
            if slot.as_ref().is_none_or(Raw::closed) {
                *slot = Raw::connect(&self.addr, host).await;
                self.reopened += 1;
            }
        }
        self.raws.iter().flatten().collect()
    }
}

impl Drop for Raws {
    fn drop(&mut self) {
        tracing::debug!(reopened = self.reopened, "attacker connections");
    }
}

/// The attacker's own shares at the node (made as any user makes them): their sender
/// sessions and the recipient's, once accepted.
async fn own_shares(
    addr: &Multiaddr,
    dir: &Path,
    hosts: &[String],
    n: usize,
) -> Vec<(
    SenderSession,
    Option<tigress_protocol::session::RecipientSession>,
)> {
    let mut out = Vec::new();
    for (i, host) in hosts.iter().cycle().take(n).enumerate() {
        let at = dir.join(format!("own-{i}"));
        let Some(alice) = client(addr, &at.join("alice"), host).await else {
            continue;
        };
        let Ok(shared) = alice.share(b"mine", &ShareOptions::default(), None).await else {
            continue;
        };
        let recipient = match client(addr, &at.join("bob"), host).await {
            Some(bob) if bob.accept(&shared.url).await.is_ok() => bob
                .state()
                .load(&shared.share_id)
                .ok()
                .and_then(|s| match s.party {
                    Party::Recipient(r) => Some(r),
                    Party::Sender(_) => None,
                }),
            _ => None,
        };
        if let Ok(state) = alice.state().load(&shared.share_id)
            && let Party::Sender(s) = state.party
        {
            out.push((s, recipient));
        }
    }
    out
}

/// The `i`-th of `items`, round robin.
fn nth<T: Clone + Default>(items: &[T], i: usize) -> T {
    items
        .get(i % items.len().max(1))
        .cloned()
        .unwrap_or_default()
}

fn now() -> u64 {
    tigress_client::unix_now()
}

/// Whether `stop` is set, checked every 50 ms until `limit`.
async fn stopped_within(stop: &AtomicBool, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.load(Ordering::Relaxed)
}

/// The flood of `scenario` against the node at `addr` (the others at `others`, their
/// keys `keys`, R = `r`) from `hosts`, until `stop`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn flood(
    scenario: String,
    addr: Multiaddr,
    target_key: PublicKey,
    keys: Vec<PublicKey>,
    r: usize,
    hosts: Vec<String>,
    dir: PathBuf,
    stop: Arc<AtomicBool>,
) {
    let mut tasks = Vec::new();
    match scenario.as_str() {
        "longpoll-p2p" => {
            // 300 long-polls of 100 s on the attacker's own mailboxes, each sent again
            // every 2 s (the earlier ones stay at the node until their wait ends).
            let shares = own_shares(&addr, &dir, &hosts, 8).await;
            if shares.is_empty() {
                return;
            }
            let mut conns = Vec::new();
            for host in &hosts {
                if let Ok(c) = Connection::connect_from(&addr, ip(host)).await {
                    conns.push(c);
                }
            }
            for i in 0..300 {
                let (Some(conn), Some((session, _))) = (
                    conns.get(i % conns.len().max(1)).cloned(),
                    shares.get(i % shares.len()).cloned(),
                ) else {
                    break;
                };
                let stop = stop.clone();
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(fetch) = tigress_protocol::flow::fetch(
                            |scope| session.read_request(now(), scope),
                            session.cursor(),
                            100_000,
                        ) else {
                            return;
                        };
                        if tokio::time::timeout(Duration::from_secs(2), conn.request(fetch))
                            .await
                            .is_ok()
                        {
                            // Refused or answered at once: again shortly.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }));
            }
        }
        "genesis-flood" => {
            // Self-made geneses of 64 KiB whose replica set names the node (the set an
            // honest client would compute), straight to its replica protocol, until
            // 17 000 are sent or the flood ends; refusals do not slow the attacker.
            let payload = vec![7u8; 63 * 1024];
            let mut raws = Raws::connect(&addr, &hosts).await;
            let mut sent = 0usize;
            let mut rng = rng();
            while sent < 17_000 && !stop.load(Ordering::Relaxed) {
                let identity = ShareIdentity::random(&mut rng);
                let replicas = tigress_protocol::placement::nearest(
                    keys.iter().copied(),
                    &identity.id.address(),
                    r,
                );
                if !replicas.contains(&target_key) {
                    continue;
                }
                let Ok((session, _)) = SenderSession::create(
                    identity,
                    "https://attacker.example",
                    replicas,
                    &payload,
                    &ShareOptions::default(),
                    now(),
                    &mut rng,
                ) else {
                    continue;
                };
                let live = raws.live().await;
                let Some(raw) = live.get(sent % live.len().max(1)) else {
                    let _ = stopped_within(&stop, Duration::from_millis(200)).await;
                    continue;
                };
                // At most 256 unanswered per connection: the attacker's own memory.
                while raw.in_flight() >= 256 && !raw.closed() && !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                raw.send(Order::Replica(Box::new(ReplicaRequest::StoreGenesis {
                    genesis: session.genesis().clone(),
                })))
                .await;
                sent += 1;
                tokio::task::yield_now().await;
            }
            let _ = stopped_within(&stop, Duration::from_secs(3600)).await;
        }
        "stalled-frames" => {
            // 3 connections × 400 streams, each announcing 1 MiB, sending all but one
            // byte of it and stalling; a stream the node ends is opened again.
            let mut raws = Raws::connect(&addr, hosts.get(..3).unwrap_or(&hosts)).await;
            while !stop.load(Ordering::Relaxed) {
                for raw in raws.live().await {
                    while raw.in_flight() < 400 && !raw.closed() {
                        raw.send(Order::Stall(rpc::MAX_FRAME - 2)).await;
                    }
                }
                let _ = stopped_within(&stop, Duration::from_millis(200)).await;
            }
        }
        "summaries-flood" => {
            // 128 requests of 1 024 addresses (32 KiB) at a time per connection, as
            // anti-entropy asks them, from a peer that holds no mailbox of the node.
            let mut raws = Raws::connect(&addr, &hosts).await;
            let mut rng = rng();
            let addresses: Vec<_> = (0..rpc::MAX_SUMMARIES)
                .map(|_| ShareIdentity::random(&mut rng).id.address())
                .collect();
            let Some(addresses) = tigress_protocol::wire::BoundedVec::new(addresses) else {
                return;
            };
            while !stop.load(Ordering::Relaxed) {
                for raw in raws.live().await {
                    while raw.in_flight() < 128 && !raw.closed() {
                        raw.send(Order::Replica(Box::new(ReplicaRequest::Summaries {
                            addresses: addresses.clone(),
                        })))
                        .await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        "fresh-peers" => {
            // Connections from new peer IDs, 32 at a time, each asking the node about a
            // random address and leaving.
            for i in 0..32 {
                let (addr, stop) = (addr.clone(), stop.clone());
                let host = nth(&hosts, i);
                tasks.push(tokio::spawn(async move {
                    let mut rng = rng();
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(Ok(c)) = tokio::time::timeout(
                            Duration::from_secs(5),
                            Connection::connect_from(&addr, ip(&host)),
                        )
                        .await
                        {
                            let address = ShareIdentity::random(&mut rng).id.address();
                            let _ = tokio::time::timeout(
                                Duration::from_secs(5),
                                c.request(ClientRequest::Status { address }),
                            )
                            .await;
                        }
                    }
                }));
            }
        }
        "bad-signatures" => {
            // Reads and messages of the attacker's own mailboxes with one byte of the
            // signature changed: each costs the node a verification.
            let shares = own_shares(&addr, &dir, &hosts, 4).await;
            let mut conns = Vec::new();
            for host in &hosts {
                if let Ok(c) = Connection::connect_from(&addr, ip(host)).await {
                    conns.push(c);
                }
            }
            for (i, (session, recipient)) in shares.into_iter().enumerate() {
                let Some(conn) = conns.get(i % conns.len().max(1)).cloned() else {
                    break;
                };
                for _ in 0..8 {
                    let (conn, stop) = (conn.clone(), stop.clone());
                    let (session, mut recipient) = (session.clone(), recipient.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut rng = rng();
                        let mut k = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            k += 1;
                            let request = match recipient.as_mut() {
                                Some(r) if k.is_multiple_of(2) => r
                                    .seal(b"forged", [0; 16], now(), &mut rng)
                                    .ok()
                                    .map(|message| ClientRequest::Send { message }),
                                _ => Some(ClientRequest::Read {
                                    request: session.read_request(
                                        now(),
                                        tigress_protocol::record::ReadScope::View,
                                    ),
                                }),
                            };
                            let Some(request) = request.and_then(|r| forge(&r)) else {
                                continue;
                            };
                            let _ =
                                tokio::time::timeout(Duration::from_secs(5), conn.request(request))
                                    .await;
                        }
                    }));
                }
            }
        }
        "relay-flood" => {
            // Sealed requests to relay to another node: 64 at a time, each 4 KiB of
            // noise the target cannot open.
            let Some(target) = keys.iter().find(|k| **k != target_key).copied() else {
                return;
            };
            for i in 0..64 {
                let (addr, stop) = (addr.clone(), stop.clone());
                let host = nth(&hosts, i);
                tasks.push(tokio::spawn(async move {
                    let Ok(conn) = Connection::connect_from(&addr, ip(&host)).await else {
                        return;
                    };
                    let mut noise = vec![0u8; 4096];
                    while !stop.load(Ordering::Relaxed) {
                        let _ = getrandom::fill(&mut noise);
                        let Some(sealed) = tigress_protocol::wire::BoundedBytes::new(noise.clone())
                        else {
                            return;
                        };
                        let r = tokio::time::timeout(
                            Duration::from_secs(5),
                            conn.request(ClientRequest::Relay { target, sealed }),
                        )
                        .await;
                        if r.is_err() {
                            continue;
                        }
                    }
                }));
            }
        }
        _ => {}
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// `request` with one byte of its signature changed (the last bytes of its encoding),
/// if it still decodes.
fn forge(request: &ClientRequest) -> Option<ClientRequest> {
    let mut bytes = wire::encode(request);
    let at = bytes.len().checked_sub(9)?;
    *bytes.get_mut(at)? ^= 0x01;
    wire::decode(&bytes, rpc::MAX_FRAME).ok()
}
