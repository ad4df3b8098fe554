//! A libp2p connection from a client to one node, speaking `/tigress/client/1`.
//!
//! One task owns the swarm; [`Connection`] is a cheap handle that sends it requests and
//! awaits the answers, in the shape of rust-libp2p's file-sharing example.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, noise, ping, tcp, yamux};
use tigress_protocol::rpc::{ClientRequest, ClientResponse};
use tokio::sync::{mpsc, oneshot};

use crate::error::ClientError;
use tigress_transport::{CLIENT_STREAM, ClientCodec, IDENTIFY_PROTOCOL, SourceTcp};

use tigress_transport::REQUEST_TIMEOUT;
/// How long to wait for the connection to a node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(NetworkBehaviour)]
struct ClientBehaviour {
    rpc: request_response::Behaviour<ClientCodec>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

fn behaviour(key: &libp2p::identity::Keypair) -> ClientBehaviour {
    ClientBehaviour {
        rpc: request_response::Behaviour::with_codec(
            ClientCodec::default(),
            [(CLIENT_STREAM, ProtocolSupport::Outbound)],
            request_response::Config::default().with_request_timeout(REQUEST_TIMEOUT),
        ),
        identify: identify::Behaviour::new(identify::Config::new(
            IDENTIFY_PROTOCOL.into(),
            key.public(),
        )),
        ping: ping::Behaviour::new(ping::Config::new()),
    }
}

type Reply = oneshot::Sender<Result<ClientResponse, ClientError>>;

struct Command {
    request: ClientRequest,
    reply: Reply,
}

/// A handle on a connection to one node. Clones share the connection.
#[derive(Clone, Debug)]
pub struct Connection {
    peer: PeerId,
    commands: mpsc::Sender<Command>,
}

impl Connection {
    /// Connects to the node at `addr` (with or without a `/p2p/<id>` suffix).
    pub async fn connect(addr: &Multiaddr) -> Result<Self, ClientError> {
        Self::connect_from(addr, None).await
    }

    /// Like [`Connection::connect`], leaving from the local address `source` when given
    /// (a host with several addresses; see [`tigress_transport::SourceTcp`]).
    pub async fn connect_from(
        addr: &Multiaddr,
        source: Option<IpAddr>,
    ) -> Result<Self, ClientError> {
        let keypair = libp2p::identity::Keypair::generate_ed25519();
        let unreachable = |e: &dyn std::fmt::Display| ClientError::Unreachable(e.to_string());
        let idle =
            |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(300));
        let builder = libp2p::SwarmBuilder::with_existing_identity(keypair).with_tokio();
        let mut swarm = match source {
            None => builder
                .with_tcp(
                    tcp::Config::default().nodelay(true),
                    noise::Config::new,
                    yamux::Config::default,
                )
                .map_err(|e| unreachable(&e))?
                .with_behaviour(behaviour)
                .map_err(|e| unreachable(&e))?
                .with_swarm_config(idle)
                .build(),
            Some(ip) => builder
                .with_other_transport(
                    |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                        use libp2p::Transport as _;
                        Ok(SourceTcp::new(ip)
                            .upgrade(libp2p::core::upgrade::Version::V1)
                            .authenticate(noise::Config::new(key)?)
                            .multiplex(yamux::Config::default()))
                    },
                )
                .map_err(|e| unreachable(&e))?
                .with_behaviour(behaviour)
                .map_err(|e| unreachable(&e))?
                .with_swarm_config(idle)
                .build(),
        };
        let expected = addr.iter().find_map(|p| match p {
            Protocol::P2p(id) => Some(id),
            _ => None,
        });
        swarm
            .dial(addr.clone())
            .map_err(|e| ClientError::Unreachable(format!("{addr}: {e}")))?;
        let peer = tokio::time::timeout(CONNECT_TIMEOUT, async {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } => return Ok(peer_id),
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        return Err(ClientError::Unreachable(format!("{addr}: {error}")));
                    }
                    _ => {}
                }
            }
        })
        .await
        .map_err(|_| ClientError::Unreachable(format!("{addr}: connection timed out")))??;
        if let Some(expected) = expected
            && expected != peer
        {
            return Err(ClientError::Unreachable(format!(
                "{addr}: the node is {peer}, not {expected}"
            )));
        }
        let (commands, rx) = mpsc::channel(32);
        tokio::spawn(run(swarm, peer, rx));
        Ok(Self { peer, commands })
    }

    /// The node's peer ID.
    pub fn peer_id(&self) -> PeerId {
        self.peer
    }

    /// Sends a request and awaits the answer; a refusal becomes [`ClientError::Remote`].
    pub async fn request(&self, request: ClientRequest) -> Result<ClientResponse, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command { request, reply })
            .await
            .map_err(|_| ClientError::Unreachable("connection closed".into()))?;
        match rx
            .await
            .map_err(|_| ClientError::Unreachable("connection closed".into()))??
        {
            ClientResponse::Error(e) => Err(ClientError::Remote(e)),
            other => Ok(other),
        }
    }
}

async fn run(
    mut swarm: Swarm<ClientBehaviour>,
    peer: PeerId,
    mut commands: mpsc::Receiver<Command>,
) {
    let mut pending: HashMap<OutboundRequestId, Reply> = HashMap::new();
    let mut open = true;
    loop {
        if !open && pending.is_empty() {
            // Every handle dropped and nothing in flight: done.
            return;
        }
        tokio::select! {
            command = commands.recv(), if open => match command {
                Some(Command { request, reply }) => {
                    let id = swarm.behaviour_mut().rpc.send_request(&peer, request);
                    pending.insert(id, reply);
                }
                None => open = false,
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(ClientBehaviourEvent::Rpc(request_response::Event::Message {
                    message: request_response::Message::Response { request_id, response },
                    ..
                })) => {
                    if let Some(reply) = pending.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
                SwarmEvent::Behaviour(ClientBehaviourEvent::Rpc(
                    request_response::Event::OutboundFailure { request_id, error, .. },
                )) => {
                    if let Some(reply) = pending.remove(&request_id) {
                        let _ = reply.send(Err(ClientError::Unreachable(error.to_string())));
                    }
                }
                _ => {}
            },
        }
    }
}
