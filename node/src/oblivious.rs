//! Oblivious requests on a node: every node is an Oblivious HTTP gateway (RFC 9458) for
//! its own API and a relay towards every other node's gateway.
//!
//! - As a **target**, the node opens a request sealed to its key, serves the Binary HTTP
//!   (RFC 9292) request inside it (the draft's gateway, or a native client request at
//!   `POST /tigress/client/1`) and seals the answer back. The request's mailbox never
//!   reaches the relay it came through (`entry::VIA`).
//! - As a **relay**, it forwards opaque sealed bytes to a target over libp2p and returns
//!   the sealed answer: from native clients (`ClientRequest::Relay`) and from HTTP clients
//!   (`POST /v1/ohttp-relay/{peer_id}`).
//!
//! Its key configuration is served at `GET /.well-known/ohttp-gateway`
//! (`application/ohttp-keys`, RFC 9540) and, for native clients, in a record signed by
//! its node key (`ClientRequest::Keys`), which a relay passes on but cannot forge.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tigress_protocol::ErrorCode;
use tigress_protocol::crypto::{PublicKey, SigningKey};
use tigress_protocol::oblivious::{
    GatewayKeys, KnownNode, MAX_NODE_ADDRS, MAX_NODES, MAX_SEALED, NATIVE_MEDIA_TYPE, NATIVE_PATH,
};
use tigress_protocol::rpc::{self, ClientRequest, ClientResponse, RemoteError};
use tigress_protocol::wire::{BoundedBytes, BoundedString, BoundedVec};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::entry::{Entry, VIA};
use crate::identity::{key_of, peer_of};
use crate::network::NetworkHandle;

/// The media type of an Oblivious HTTP request.
pub const OHTTP_REQUEST: &str = "message/ohttp-req";
/// The media type of an Oblivious HTTP response.
pub const OHTTP_RESPONSE: &str = "message/ohttp-res";
/// The media type of a key configuration list.
pub const OHTTP_KEYS: &str = "application/ohttp-keys";
/// The gateway's path (RFC 9540 names the key configuration's; requests go to the same).
pub const GATEWAY_PATH: &str = "/.well-known/ohttp-gateway";
/// The most HTTP relay forwards in flight at once on one node.
const RELAY_SLOTS: usize = 128;
/// How long a relay waits for a target (a long-poll inside waits up to two minutes).
const RELAY_TIMEOUT: Duration = Duration::from_secs(150);
/// The largest inner answer sealed back (a fetch of several full messages fits).
const MAX_INNER_RESPONSE: usize = MAX_SEALED - 1024;

/// Why a sealed request was not served.
#[derive(Debug, thiserror::Error)]
pub enum ObliviousError {
    /// It could not be opened (not sealed to this node's key, or corrupted).
    #[error("the request could not be opened with this node's key")]
    Open,
    /// Its content is not a Binary HTTP request.
    #[error("the sealed content is not a Binary HTTP request")]
    Inner,
    /// The answer could not be sealed.
    #[error("the answer could not be sealed")]
    Seal,
}

/// A node's gateway and relay for oblivious requests.
pub struct Oblivious {
    me: PublicKey,
    server: ohttp::Server,
    key_list: Vec<u8>,
    keys: GatewayKeys,
    inner: Router,
    net: NetworkHandle,
    /// This node's listen addresses, listed to clients when it is public.
    listen: Vec<libp2p::Multiaddr>,
    relay_slots: Arc<Semaphore>,
}

impl Oblivious {
    /// The gateway of the node with key `signer`, its HPKE key derived from `seed`,
    /// serving `inner` (the draft's gateway routes) and native requests to `entry`.
    pub fn new(
        seed: &[u8; 32],
        signer: &SigningKey,
        issued_at: u64,
        inner: Router,
        entry: Arc<Entry>,
        net: NetworkHandle,
        listen: Vec<libp2p::Multiaddr>,
    ) -> Result<Self, String> {
        use ohttp::hpke::{Aead, Kdf, Kem};
        let config = ohttp::KeyConfig::derive(
            1,
            Kem::X25519Sha256,
            vec![
                ohttp::SymmetricSuite::new(Kdf::HkdfSha256, Aead::Aes128Gcm),
                ohttp::SymmetricSuite::new(Kdf::HkdfSha256, Aead::ChaCha20Poly1305),
            ],
            seed,
        )
        .map_err(|e| format!("deriving the OHTTP key: {e}"))?;
        let key_list = ohttp::KeyConfig::encode_list(&[&config])
            .map_err(|e| format!("encoding the OHTTP key: {e}"))?;
        let keys = GatewayKeys::sign(key_list.clone(), issued_at, signer)
            .map_err(|e| format!("signing the OHTTP key: {e}"))?;
        let server =
            ohttp::Server::new(config).map_err(|e| format!("starting the OHTTP gateway: {e}"))?;
        let native = Router::new()
            .route(NATIVE_PATH, post(native))
            .with_state(entry);
        Ok(Self {
            me: signer.public_key(),
            server,
            key_list,
            keys,
            inner: inner.merge(native),
            net,
            listen,
            relay_slots: Arc::new(Semaphore::new(RELAY_SLOTS)),
        })
    }

    /// The key configuration list (`application/ohttp-keys`).
    pub fn key_list(&self) -> &[u8] {
        &self.key_list
    }

    /// The signed key record.
    pub fn keys(&self) -> &GatewayKeys {
        &self.keys
    }

    /// Opens a sealed request, serves what is inside and seals the answer. `via` is the
    /// relay it came through: nothing that names the request's mailbox is sent there.
    pub async fn open(
        &self,
        sealed: &[u8],
        via: Option<PublicKey>,
    ) -> Result<Vec<u8>, ObliviousError> {
        let (plain, reply) = self
            .server
            .decapsulate(sealed)
            .map_err(|_| ObliviousError::Open)?;
        let message = bhttp::Message::read_bhttp(&mut std::io::Cursor::new(&plain[..]))
            .map_err(|_| ObliviousError::Inner)?;
        let request = to_http(&message).ok_or(ObliviousError::Inner)?;
        let serve = self.inner.clone().oneshot(request);
        let response = match via {
            Some(relay) => VIA.scope(relay, serve).await,
            None => serve.await,
        };
        let response = match response {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let answer = to_bhttp(response).await;
        let mut out = Vec::new();
        answer
            .write_bhttp(bhttp::Mode::KnownLength, &mut out)
            .map_err(|_| ObliviousError::Seal)?;
        reply.encapsulate(&out).map_err(|_| ObliviousError::Seal)
    }

    /// Answers the relay layer's client-protocol requests: `Keys`, `KeysOf`, `Nodes`,
    /// `Relay` (this node is the relay) and `Oblivious` (this node is the target).
    pub async fn handle(&self, from: Option<PublicKey>, request: ClientRequest) -> ClientResponse {
        match request {
            ClientRequest::Keys => ClientResponse::Keys(self.keys.clone()),
            ClientRequest::KeysOf { target } => {
                if target == self.me {
                    return ClientResponse::Keys(self.keys.clone());
                }
                match self.forward(target, ClientRequest::Keys).await {
                    Ok(ClientResponse::Keys(k)) if k.body.node == target => ClientResponse::Keys(k),
                    Ok(ClientResponse::Error(e)) => ClientResponse::Error(e),
                    Ok(_) => refuse(ErrorCode::Unavailable, "the target gave no key record"),
                    Err(e) => ClientResponse::Error(e),
                }
            }
            ClientRequest::Nodes => ClientResponse::Nodes(self.nodes().await),
            ClientRequest::Relay { target, sealed } => {
                if target == self.me {
                    return refuse(
                        ErrorCode::Malformed,
                        "a relay does not carry requests out itself: pick another target",
                    );
                }
                match self
                    .forward(target, ClientRequest::Oblivious { sealed })
                    .await
                {
                    Ok(r @ (ClientResponse::Sealed(_) | ClientResponse::Error(_))) => r,
                    Ok(_) => refuse(ErrorCode::Unavailable, "the target gave no sealed answer"),
                    Err(e) => ClientResponse::Error(e),
                }
            }
            ClientRequest::Oblivious { sealed } => match self.open(&sealed, from).await {
                Ok(answer) => match BoundedBytes::new(answer) {
                    Some(b) => ClientResponse::Sealed(b),
                    None => refuse(ErrorCode::TooLarge, "the sealed answer is too large"),
                },
                Err(e) => refuse(ErrorCode::Malformed, e.to_string()),
            },
            _ => refuse(ErrorCode::Malformed, "not a relay request"),
        }
    }

    /// Sends `request` to `target` over libp2p.
    async fn forward(
        &self,
        target: PublicKey,
        request: ClientRequest,
    ) -> Result<ClientResponse, RemoteError> {
        let peer = peer_of(&target).ok_or_else(|| {
            RemoteError::new(ErrorCode::Malformed, "the target is not a node key")
        })?;
        match tokio::time::timeout(RELAY_TIMEOUT, self.net.client_request(peer, request)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(RemoteError::new(
                ErrorCode::Unavailable,
                format!("the target did not answer: {e}"),
            )),
            Err(_) => Err(RemoteError::new(
                ErrorCode::Unavailable,
                "the target did not answer in time",
            )),
        }
    }

    /// The relay nodes this node knows, with their addresses (itself first when public).
    async fn nodes(&self) -> BoundedVec<KnownNode, MAX_NODES> {
        let mut out = Vec::new();
        if self.net.is_public() {
            out.push(known(self.me, &self.listen));
        }
        for (peer, addrs) in self.net.known_nodes().await {
            if let Some(key) = key_of(&peer) {
                out.push(known(key, &addrs));
            }
        }
        BoundedVec::truncated(out)
    }

    /// The public routes: the gateway's key configuration and requests, and the relay.
    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route(GATEWAY_PATH, get(key_config).post(gateway_request))
            .route("/v1/ohttp-relay/{peer_id}", post(relay_request))
            .with_state(self.clone())
            .layer(axum::extract::DefaultBodyLimit::max(MAX_SEALED))
    }
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> ClientResponse {
    ClientResponse::Error(RemoteError::new(code, message))
}

fn known(key: PublicKey, addrs: &[libp2p::Multiaddr]) -> KnownNode {
    KnownNode {
        key,
        addrs: BoundedVec::truncated(
            addrs
                .iter()
                .filter_map(|a| BoundedString::new(a.to_string()))
                .take(MAX_NODE_ADDRS)
                .collect(),
        ),
    }
}

/// The HTTP request a Binary HTTP request describes.
fn to_http(message: &bhttp::Message) -> Option<Request<Body>> {
    let control = message.control();
    let method = control.method()?;
    let path = std::str::from_utf8(control.path()?).ok()?;
    if !path.starts_with('/') {
        return None;
    }
    let mut request = Request::builder()
        .method(axum::http::Method::from_bytes(method).ok()?)
        .uri(path);
    for field in message.header().iter() {
        let name = axum::http::HeaderName::from_bytes(field.name()).ok()?;
        let value = HeaderValue::from_bytes(field.value()).ok()?;
        request = request.header(name, value);
    }
    request.body(Body::from(message.content().to_vec())).ok()
}

/// The Binary HTTP response of an HTTP response (an answer too large to seal becomes a
/// 502).
async fn to_bhttp(response: Response) -> bhttp::Message {
    let (parts, body) = response.into_parts();
    let Ok(content) = axum::body::to_bytes(body, MAX_INNER_RESPONSE).await else {
        let mut m = bhttp::Message::response(status_of(502));
        m.write_content(b"the answer is too large to seal");
        return m;
    };
    let mut m = bhttp::Message::response(status_of(parts.status.as_u16()));
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        m.put_header(name.as_str().as_bytes(), value.as_bytes());
    }
    m.write_content(&content);
    m
}

/// The Binary HTTP status `code` (every status the router produces is in 100..=599;
/// another would become 500).
fn status_of(code: u16) -> bhttp::StatusCode {
    bhttp::StatusCode::try_from(code)
        .or_else(|_| bhttp::StatusCode::try_from(500u16))
        .unwrap_or(bhttp::StatusCode::OK)
}

/// A native client request inside an oblivious request.
async fn native(State(entry): State<Arc<Entry>>, body: Bytes) -> Response {
    let response = match rpc::decode_body::<ClientRequest>(&body) {
        Ok(request) => entry.handle(request).await,
        Err(e) => ClientResponse::Error(RemoteError::new(
            ErrorCode::Malformed,
            format!("not a client request: {e}"),
        )),
    };
    match rpc::encode_body(&response) {
        Ok(bytes) => ([(header::CONTENT_TYPE, NATIVE_MEDIA_TYPE)], bytes).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn media_type_is(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

fn problem(status: StatusCode, title: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        serde_json::json!({ "title": title }).to_string(),
    )
        .into_response()
}

async fn key_config(State(o): State<Arc<Oblivious>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, OHTTP_KEYS),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        o.key_list.clone(),
    )
        .into_response()
}

async fn gateway_request(
    State(o): State<Arc<Oblivious>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !media_type_is(&headers, OHTTP_REQUEST) {
        return problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the gateway takes message/ohttp-req",
        );
    }
    match o.open(&body, None).await {
        Ok(answer) => ([(header::CONTENT_TYPE, OHTTP_RESPONSE)], answer).into_response(),
        // RFC 9458 §6.3: a request that cannot be opened is refused with 400 and the
        // `ohttp-key` problem type when the key is the cause.
        Err(ObliviousError::Open) => (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/problem+json")],
            serde_json::json!({
                "type": "https://iana.org/assignments/http-problem-types#ohttp-key",
                "title": "the request is not sealed to this gateway's key"
            })
            .to_string(),
        )
            .into_response(),
        Err(e) => problem(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

async fn relay_request(
    State(o): State<Arc<Oblivious>>,
    Path(peer_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !media_type_is(&headers, OHTTP_REQUEST) {
        return problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the relay takes message/ohttp-req",
        );
    }
    let Some(target) = peer_id
        .parse::<libp2p::PeerId>()
        .ok()
        .as_ref()
        .and_then(key_of)
    else {
        return problem(StatusCode::NOT_FOUND, "not a node's peer ID");
    };
    if target == o.me {
        return problem(
            StatusCode::BAD_REQUEST,
            "a relay does not carry requests out itself: use the gateway",
        );
    }
    let Ok(_slot) = o.relay_slots.clone().try_acquire_owned() else {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "the relay is at its limit; retry shortly",
        );
    };
    let Some(sealed) = BoundedBytes::new(body.to_vec()) else {
        return problem(StatusCode::PAYLOAD_TOO_LARGE, "the request is too large");
    };
    match o.forward(target, ClientRequest::Oblivious { sealed }).await {
        Ok(ClientResponse::Sealed(answer)) => {
            ([(header::CONTENT_TYPE, OHTTP_RESPONSE)], answer.into_vec()).into_response()
        }
        Ok(ClientResponse::Error(e)) => problem(StatusCode::BAD_GATEWAY, e.message.as_str()),
        Ok(_) => problem(StatusCode::BAD_GATEWAY, "the target gave no sealed answer"),
        Err(e) => problem(StatusCode::BAD_GATEWAY, e.message.as_str()),
    }
}
