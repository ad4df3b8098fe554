//! Oblivious requests from a client: each request goes to a *target* node through a
//! *relay* node, sealed to the target's key (Oblivious HTTP, RFC 9458), so the relay
//! learns who asks but not what, and the target learns what but not who.
//!
//! [`Directory`] is what the node the user named says about the network (its `Info` and
//! the nodes it knows). For each operation on a mailbox, [`Route::open`] opens a fresh
//! connection under a fresh libp2p key, to a relay that is not among the nodes near the
//! mailbox's address (`tigress_protocol::oblivious::choose`), with the replicas as
//! targets. A target's key comes in a record signed by the target itself
//! ([`GatewayKeys`]), which the relay passes on but cannot forge.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use libp2p::{Multiaddr, PeerId};
use tigress_protocol::crypto::PublicKey;
use tigress_protocol::oblivious::{self, GatewayKeys, KnownNode, NATIVE_MEDIA_TYPE, NATIVE_PATH};
use tigress_protocol::rpc::{self, ClientRequest, ClientResponse, NodeInfo};
use tigress_protocol::wire::BoundedBytes;
use tigress_protocol::{Address, ErrorCode};

use crate::connection::Connection;
use crate::error::ClientError;

/// The node key of a peer ID (Ed25519 identities only).
pub fn key_of(peer: &PeerId) -> Option<PublicKey> {
    let key = libp2p::identity::PublicKey::try_decode_protobuf(peer.as_ref().digest()).ok()?;
    let ed = key.try_into_ed25519().ok()?;
    Some(PublicKey(ed.to_bytes()))
}

/// The peer ID of a node key.
pub fn peer_of(key: &PublicKey) -> Option<PeerId> {
    let ed = libp2p::identity::ed25519::PublicKey::try_from_bytes(key.as_bytes()).ok()?;
    Some(libp2p::identity::PublicKey::from(ed).to_peer_id())
}

/// What the node the user named says about itself and the network.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Directory {
    /// Its information.
    pub info: NodeInfo,
    /// The nodes it knows, itself included when it serves.
    pub nodes: Vec<KnownNode>,
}

impl Directory {
    /// Asks the node behind `conn`.
    pub async fn fetch(conn: &Connection) -> Result<Self, ClientError> {
        let info = match conn.request(ClientRequest::Info).await? {
            ClientResponse::Info(i) => i,
            _ => return Err(ClientError::UnexpectedResponse("info".into())),
        };
        let nodes = match conn.request(ClientRequest::Nodes).await {
            Ok(ClientResponse::Nodes(n)) => n.into_vec(),
            Ok(_) => return Err(ClientError::UnexpectedResponse("nodes".into())),
            // A node that predates oblivious requests lists nobody.
            Err(ClientError::Remote(e)) if e.code == ErrorCode::Malformed => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(Self { info, nodes })
    }

    /// Whether there is anyone to hide from: more than one node known.
    pub fn has_others(&self, home: &PublicKey) -> bool {
        self.nodes.iter().any(|n| n.key != *home)
    }

    /// The network prefix (IPv4 /24, IPv6 /48) of the first address listed for `key`.
    pub fn prefix_of(&self, key: &PublicKey) -> Option<Vec<u8>> {
        use libp2p::multiaddr::Protocol;
        let node = self.nodes.iter().find(|n| n.key == *key)?;
        node.addrs.iter().find_map(|a| {
            let addr: Multiaddr = a.as_str().parse().ok()?;
            addr.iter().find_map(|p| match p {
                Protocol::Ip4(ip) => Some(ip.octets().get(..3)?.to_vec()),
                Protocol::Ip6(ip) => Some(ip.octets().get(..6)?.to_vec()),
                _ => None,
            })
        })
    }

    /// Where to dial `key`, as listed.
    fn addrs_of(&self, key: &PublicKey) -> Vec<Multiaddr> {
        let Some(peer) = peer_of(key) else {
            return Vec::new();
        };
        self.nodes
            .iter()
            .filter(|n| n.key == *key)
            .flat_map(|n| n.addrs.iter())
            .filter_map(|a| a.as_str().parse::<Multiaddr>().ok())
            .filter_map(|a| a.with_p2p(peer).ok())
            .collect()
    }
}

/// Target keys already checked, shared by the routes of one client.
#[derive(Debug, Clone, Default)]
pub struct KeyCache(Arc<Mutex<HashMap<PublicKey, Vec<u8>>>>);

/// The relay and targets of one operation.
#[derive(Debug)]
pub struct Route {
    relay: Connection,
    targets: Vec<PublicKey>,
    keys: KeyCache,
}

impl Route {
    /// A route for an operation on `address`: a fresh connection to the node at `home`
    /// (the node the user named) and, when that node is near the address, a fresh one to
    /// another relay instead. `r` is the network's replication factor.
    pub async fn open(
        home: &Multiaddr,
        directory: &Directory,
        address: &Address,
        r: usize,
        keys: KeyCache,
        source: Option<std::net::IpAddr>,
    ) -> Result<Self, ClientError> {
        let home_key = directory.info.node_key;
        let known: Vec<PublicKey> = directory.nodes.iter().map(|n| n.key).collect();
        let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
        let prefix_of = |k: &PublicKey| directory.prefix_of(k);
        let route = oblivious::choose(&known, address, r, &home_key, &prefix_of, &mut rng);
        // Connect to the chosen relay only: a node near the address never sees this
        // connection.
        let mut relay = None;
        if let Some(other) = route.relay {
            for addr in directory.addrs_of(&other) {
                match Connection::connect_from(&addr, source).await {
                    Ok(c) => {
                        relay = Some((c, other));
                        break;
                    }
                    Err(e) => tracing::debug!(%addr, error = %e, "a relay is unreachable"),
                }
            }
            if relay.is_none() {
                tracing::warn!(
                    "no other relay answered: the named node relays a request about a mailbox near it"
                );
            }
        } else if route.relay_sees_address {
            tracing::warn!(
                "the network is too small to keep the relay apart from the mailbox's nodes"
            );
        }
        let (relay, relay_key, targets) = match relay {
            Some((c, key)) => (
                c,
                key,
                oblivious::choose(&known, address, r, &key, &|_| None, &mut rng).targets,
            ),
            None => (
                Connection::connect_from(home, source).await?,
                home_key,
                route.targets,
            ),
        };
        let targets: Vec<PublicKey> = targets.into_iter().filter(|t| *t != relay_key).collect();
        if targets.is_empty() {
            return Err(ClientError::Unreachable(
                "no node other than the relay is known to carry the request out".into(),
            ));
        }
        Ok(Self {
            relay,
            targets,
            keys,
        })
    }

    /// The targets, in the order tried.
    pub fn targets(&self) -> &[PublicKey] {
        &self.targets
    }

    /// Sends `request` to the first target that answers; a refusal of the target itself
    /// is final, a relay that cannot reach a target moves on to the next.
    pub async fn request(&self, request: ClientRequest) -> Result<ClientResponse, ClientError> {
        let mut last = None;
        for target in &self.targets {
            match self.request_at(target, request.clone()).await {
                Err(e @ (ClientError::Unreachable(_) | ClientError::Relay(_))) => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Unreachable("no target".into())))
    }

    /// Sends `request` through another target than the first: the `i`-th after it.
    pub async fn request_second(
        &self,
        i: usize,
        request: ClientRequest,
    ) -> Option<Result<ClientResponse, ClientError>> {
        let target = self.targets.get(i + 1)?;
        Some(self.request_at(target, request).await)
    }

    /// How many second targets there are.
    pub fn seconds(&self) -> usize {
        self.targets.len().saturating_sub(1)
    }

    /// Sends `request` to `target`, sealed.
    pub async fn request_at(
        &self,
        target: &PublicKey,
        request: ClientRequest,
    ) -> Result<ClientResponse, ClientError> {
        let config = self.key_config(target).await?;
        let (sealed, opener) = seal(&config, target, &request)?;
        let answer = match self
            .relay
            .request(ClientRequest::Relay {
                target: *target,
                sealed,
            })
            .await
        {
            Ok(ClientResponse::Sealed(b)) => b,
            Ok(_) => return Err(ClientError::UnexpectedResponse("relay".into())),
            Err(ClientError::Remote(e)) => return Err(ClientError::Relay(e)),
            Err(e) => return Err(e),
        };
        match open(opener, &answer)? {
            ClientResponse::Error(e) => Err(ClientError::Remote(e)),
            other => Ok(other),
        }
    }

    /// The target's key configuration, from its own signed record.
    async fn key_config(&self, target: &PublicKey) -> Result<Vec<u8>, ClientError> {
        if let Some(k) = self.keys.0.lock().ok().and_then(|m| m.get(target).cloned()) {
            return Ok(k);
        }
        let record: GatewayKeys = match self
            .relay
            .request(ClientRequest::KeysOf { target: *target })
            .await
        {
            Ok(ClientResponse::Keys(k)) => k,
            Ok(_) => return Err(ClientError::UnexpectedResponse("keys".into())),
            Err(ClientError::Remote(e)) => return Err(ClientError::Relay(e)),
            Err(e) => return Err(e),
        };
        let config = record
            .verify(target)
            .map_err(|e| ClientError::Sealed(format!("the key record of {target}: {e}")))?
            .to_vec();
        if let Ok(mut m) = self.keys.0.lock() {
            m.insert(*target, config.clone());
        }
        Ok(config)
    }
}

/// Seals `request` for `target` as a Binary HTTP `POST` of the native path.
fn seal(
    config: &[u8],
    target: &PublicKey,
    request: &ClientRequest,
) -> Result<
    (
        BoundedBytes<{ oblivious::MAX_SEALED }>,
        ohttp::ClientResponse,
    ),
    ClientError,
> {
    let body = rpc::encode_body(request)
        .map_err(|e| ClientError::Sealed(format!("encoding the request: {e}")))?;
    let authority = peer_of(target).map(|p| p.to_string()).unwrap_or_default();
    let mut message = bhttp::Message::request(
        b"POST".to_vec(),
        b"https".to_vec(),
        authority.into_bytes(),
        NATIVE_PATH.as_bytes().to_vec(),
    );
    message.put_header("content-type", NATIVE_MEDIA_TYPE);
    message.write_content(&body);
    let mut inner = Vec::new();
    message
        .write_bhttp(bhttp::Mode::KnownLength, &mut inner)
        .map_err(|e| ClientError::Sealed(format!("encoding the request: {e}")))?;
    let (sealed, opener) = ohttp::ClientRequest::from_encoded_config_list(config)
        .and_then(|c| c.encapsulate(&inner))
        .map_err(|e| ClientError::Sealed(format!("sealing the request: {e}")))?;
    let sealed = BoundedBytes::new(sealed)
        .ok_or_else(|| ClientError::Sealed("the sealed request is too large".into()))?;
    Ok((sealed, opener))
}

/// Opens the target's sealed answer.
fn open(opener: ohttp::ClientResponse, answer: &[u8]) -> Result<ClientResponse, ClientError> {
    let inner = opener
        .decapsulate(answer)
        .map_err(|e| ClientError::Sealed(format!("opening the answer: {e}")))?;
    let message = bhttp::Message::read_bhttp(&mut std::io::Cursor::new(&inner[..]))
        .map_err(|e| ClientError::Sealed(format!("reading the answer: {e}")))?;
    let status = message.control().status().map(u16::from);
    if status != Some(200) {
        return Err(ClientError::Sealed(format!(
            "the target answered HTTP {}: {}",
            status.unwrap_or(0),
            String::from_utf8_lossy(message.content())
        )));
    }
    rpc::decode_body::<ClientResponse>(message.content())
        .map_err(|e| ClientError::Sealed(format!("reading the answer: {e}")))
}
