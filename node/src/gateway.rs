//! The TIGRESS relay HTTP API (draft-vinokurov-tigress-http-00, API v1) on every node.
//!
//! A draft client trusts its gateway as the draft trusts its relay server: the gateway
//! holds the per-share device keys of its HTTP clients, derived from the gateway secret,
//! the mailbox ID and the `Mailbox-Device-Claim`, so every node sharing the secret serves
//! the same devices. The mailboxes themselves are ordinary tigress mailboxes in the DHT:
//! the draft client's already-encrypted `payload` object is the first payload (sealed
//! again under the share's key) and each `UpdateMailbox` is the next message of the
//! mailbox log, so signatures, sequence numbers and replay protection all hold. A read
//! returns the latest payload addressed to the reader.
//!
//! Extension: `POST /v1/m/{id}?wait=SECONDS[&after=SEQ]` long-polls until the other party
//! updates (a message with a sequence number above `after`, by default the latest one
//! when the request arrives). Every read answers with a `Mailbox-Sequence` header: the
//! sequence number of the payload returned (0 for the creator's first payload).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand_core::UnwrapErr;
use serde::Deserialize;
use serde_json::{Value, json};
use tigress_protocol::crypto::{HpkeSuite, PublicKey, sha256};
use tigress_protocol::invitation::Vertical;
use tigress_protocol::mailbox::Limits;
use tigress_protocol::record::{
    Delete, DisplayInfo, Genesis, Message, Policy, ReadRequest, Relinquish, Rights,
};
use tigress_protocol::rpc::{ClientRequest, ClientResponse, Cursor, MAX_WAIT_MS, RemoteError};
use tigress_protocol::session::{
    DeviceKeys, RecipientSession, SenderSession, ShareIdentity, ShareOptions,
};
use tigress_protocol::wire::BoundedString;
use tigress_protocol::{Address, ErrorCode, MailboxId, Secret, ShareUrl};
use zeroize::Zeroizing;

use crate::entry::Entry;

/// The largest request body read (a 64 KiB payload in base64 with its JSON).
pub const MAX_BODY: usize = 128 * 1024;
/// The header naming a request.
pub const REQUEST_ID: &str = "mailbox-request-id";
/// The header naming a device.
pub const DEVICE_CLAIM: &str = "mailbox-device-claim";
/// The optional attestation header.
pub const DEVICE_ATTESTATION: &str = "mailbox-device-attestation";
/// The sequence number of the payload a read returns (extension).
pub const SEQUENCE: &str = "mailbox-sequence";

/// The gateway's state.
pub struct Gateway {
    entry: Arc<Entry>,
    secret: Zeroizing<[u8; 32]>,
    public_url: String,
    limits: Limits,
    replication: usize,
    default_ttl_secs: u64,
}

/// An answer: status, JSON body, and the request ID to echo.
struct Reply {
    status: StatusCode,
    body: Value,
    request_id: Option<HeaderValue>,
    sequence: Option<u64>,
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if let Some(rid) = self.request_id {
            response.headers_mut().insert(REQUEST_ID, rid);
        }
        if let Some(seq) = self.sequence
            && let Ok(v) = HeaderValue::from_str(&seq.to_string())
        {
            response.headers_mut().insert(SEQUENCE, v);
        }
        response
    }
}

/// A refusal with its HTTP status.
#[derive(Debug)]
struct Fail {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Fail {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
            code: code.as_str(),
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Malformed, message)
    }

    fn reply(self, request_id: Option<HeaderValue>) -> Reply {
        Reply {
            status: self.status,
            body: json!({"error": {"code": self.code, "message": self.message}}),
            request_id,
            sequence: None,
        }
    }
}

impl From<RemoteError> for Fail {
    fn from(e: RemoteError) -> Self {
        Fail::new(e.code, e.message.as_str())
    }
}

impl From<tigress_protocol::Error> for Fail {
    fn from(e: tigress_protocol::Error) -> Self {
        Fail::new(e.code(), e.to_string())
    }
}

fn hkdf32(ikm: &[u8; 32], salt: &[u8], info: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), ikm);
    let mut out = Zeroizing::new([0u8; 32]);
    let info: Vec<u8> = info.concat();
    // 32 bytes is far below HKDF's limit: expand cannot fail.
    let _ = hk.expand(&info, out.as_mut());
    out
}

/// Parses `YYYY-MM-DDThh:mm:ssZ` (RFC 3339, UTC) into unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 20
        || b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || b.get(10) != Some(&b'T')
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
        || b.get(19) != Some(&b'Z')
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + se).ok()
}

/// Formats unix seconds as `YYYY-MM-DDThh:mm:ssZ`.
pub fn format_rfc3339(t: u64) -> String {
    let days = i64::try_from(t / 86_400).unwrap_or(0);
    let secs = t % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Escapes text for HTML attribute and element content.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Deserialize)]
struct PayloadJson {
    #[serde(rename = "type")]
    kind: String,
    data: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DisplayJson {
    title: String,
    description: String,
    #[serde(rename = "imageURL")]
    image_url: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigJson {
    access_rights: Option<String>,
    expiration: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateJson {
    payload: PayloadJson,
    display_information: DisplayJson,
    #[allow(dead_code)]
    notification_token: Option<Value>,
    mailbox_configuration: Option<ConfigJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateJson {
    payload: PayloadJson,
    #[allow(dead_code)]
    notification_token: Option<Value>,
}

/// The long-poll extension's query: `wait=SECONDS`, `after=SEQ`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReadQuery {
    wait: Option<u64>,
    after: Option<u64>,
}

impl ReadQuery {
    fn parse(query: &str) -> Result<Self, Fail> {
        let mut q = ReadQuery::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let n = || {
                v.parse::<u64>()
                    .map_err(|_| Fail::bad(format!("{k} must be a number")))
            };
            match k {
                "wait" => q.wait = Some(n()?),
                "after" => q.after = Some(n()?),
                _ => {}
            }
        }
        Ok(q)
    }
}

/// The stored form of a draft payload: the client's `{type, data}` object, checked.
fn payload_bytes(p: &PayloadJson) -> Result<Vec<u8>, Fail> {
    if p.kind != "AEAD_AES_128_GCM" && p.kind != "AEAD_AES_256_GCM" {
        return Err(Fail::bad(
            "payload.type must be AEAD_AES_128_GCM or AEAD_AES_256_GCM",
        ));
    }
    STANDARD
        .decode(p.data.as_bytes())
        .map_err(|_| Fail::bad("payload.data is not base64"))?;
    let bytes = serde_json::to_vec(&json!({"type": p.kind, "data": p.data}))
        .map_err(|e| Fail::bad(e.to_string()))?;
    if bytes.len() > tigress_protocol::crypto::pad::MAX_PLAINTEXT {
        return Err(Fail::new(ErrorCode::TooLarge, "payload over 64 KiB"));
    }
    Ok(bytes)
}

/// The payload object a reader gets: the stored `{type, data}`, or opaque bytes of a
/// native share wrapped as base64.
fn payload_json(bytes: &[u8]) -> Value {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) if v.get("type").is_some() && v.get("data").is_some() => v,
        _ => json!({"type": "application/octet-stream", "data": STANDARD.encode(bytes)}),
    }
}

fn header_uuid(headers: &HeaderMap, name: &str) -> Result<Option<[u8; 16]>, Fail> {
    let Some(v) = headers.get(name) else {
        return Ok(None);
    };
    let text = v
        .to_str()
        .map_err(|_| Fail::bad(format!("{name} is not text")))?;
    let id: MailboxId = text
        .parse()
        .map_err(|_| Fail::bad(format!("{name} must be a UUID")))?;
    Ok(Some(*id.as_bytes()))
}

fn required_claim(headers: &HeaderMap) -> Result<[u8; 16], Fail> {
    header_uuid(headers, DEVICE_CLAIM)?
        .ok_or_else(|| Fail::bad("the Mailbox-Device-Claim header is required"))
}

/// The 16 bytes of a request ID: the UUID's, or a hash of any other text.
fn required_request_id(headers: &HeaderMap) -> Result<[u8; 16], Fail> {
    let v = headers
        .get(REQUEST_ID)
        .ok_or_else(|| Fail::bad("the Mailbox-Request-ID header is required"))?;
    let text = v
        .to_str()
        .map_err(|_| Fail::bad("Mailbox-Request-ID is not text"))?;
    if let Ok(id) = text.parse::<MailboxId>() {
        return Ok(*id.as_bytes());
    }
    let h = sha256(&[b"tigress/v1/gateway/request-id", text.as_bytes()]);
    let mut out = [0u8; 16];
    out.copy_from_slice(h.get(..16).unwrap_or(&[0; 16]));
    Ok(out)
}

fn mailbox_id(text: &str) -> Result<MailboxId, Fail> {
    text.parse()
        .map_err(|_| Fail::new(ErrorCode::NotFound, "no such mailbox (not a UUID)"))
}

async fn read_body(request: Request) -> Result<Bytes, Fail> {
    if let Some(len) = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > MAX_BODY
    {
        return Err(Fail::new(
            ErrorCode::TooLarge,
            format!("body over {MAX_BODY} bytes"),
        ));
    }
    axum::body::to_bytes(request.into_body(), MAX_BODY)
        .await
        .map_err(|_| Fail::new(ErrorCode::TooLarge, format!("body over {MAX_BODY} bytes")))
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Fail> {
    serde_json::from_slice(body).map_err(|e| Fail::bad(format!("invalid JSON body: {e}")))
}

/// Which side a device is on, with its resumed session.
enum Side {
    Sender(Box<SenderSession>),
    Recipient(Box<RecipientSession>),
}

impl Gateway {
    /// A gateway over `entry`.
    pub fn new(
        entry: Arc<Entry>,
        secret: Zeroizing<[u8; 32]>,
        public_url: String,
        limits: Limits,
        replication: usize,
    ) -> Self {
        Self {
            entry,
            secret,
            public_url,
            limits,
            replication,
            default_ttl_secs: 24 * 3600,
        }
    }

    fn identity(&self, id: MailboxId) -> ShareIdentity {
        let s = hkdf32(&self.secret, id.as_bytes(), &[b"tigress/v1/gateway/share"]);
        ShareIdentity {
            id,
            secret: Secret::from_bytes(*s),
        }
    }

    fn device(&self, id: MailboxId, claim: &[u8; 16]) -> DeviceKeys {
        let seed = hkdf32(
            &self.secret,
            id.as_bytes(),
            &[b"tigress/v1/gateway/device", claim],
        );
        DeviceKeys::derive(HpkeSuite::default(), &seed)
    }

    /// The mailbox a (device, request) pair creates: the same pair always names the same
    /// mailbox, on every gateway sharing the secret, so a repeated create is detected.
    fn created_id(&self, claim: &[u8; 16], request_id: &[u8; 16]) -> MailboxId {
        let h = hkdf32(
            &self.secret,
            claim,
            &[b"tigress/v1/gateway/create", request_id],
        );
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(h.get(..16).unwrap_or(&[0; 16]));
        // Version 4, RFC 4122 variant.
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        MailboxId::from_bytes(bytes)
    }

    fn url_link(&self, id: MailboxId) -> String {
        format!("{}/v1/m/{id}", self.public_url.trim_end_matches('/'))
    }

    fn share_url(&self, id: MailboxId) -> Result<ShareUrl, Fail> {
        ShareUrl::new(
            &self.public_url,
            id,
            Vertical::General,
            self.identity(id).secret,
        )
        .map_err(|_| {
            Fail::new(
                ErrorCode::Unavailable,
                "the gateway's public URL is not an http(s) URL",
            )
        })
    }

    async fn client(&self, request: ClientRequest) -> Result<ClientResponse, Fail> {
        match self.entry.handle(request).await {
            ClientResponse::Error(e) => Err(e.into()),
            other => Ok(other),
        }
    }

    async fn genesis(&self, address: &Address) -> Result<Genesis, Fail> {
        self.entry.genesis(address).await.map_err(Fail::from)
    }

    /// Resumes the device's side; a new recipient device is bound here (claimed).
    async fn side(&self, id: MailboxId, claim: &[u8; 16], bind: bool) -> Result<Side, Fail> {
        let genesis = self.genesis(&id.address()).await?;
        let device = self.device(id, claim);
        let now = self.entry.clock().unix();
        if device.signing.public_key() == genesis.header().sender {
            let mut session =
                SenderSession::resume(self.identity(id), genesis, device, Vertical::General)?;
            let request = session.read_request(now);
            if let ClientResponse::View(view) = self.client(ClientRequest::Read { request }).await?
            {
                session.learn_recipients(&view, &self.limits, now)?;
            }
            return Ok(Side::Sender(Box::new(session)));
        }
        let created = genesis.header().created_at;
        let (mut session, _) = RecipientSession::open_with_device(
            &self.share_url(id)?,
            genesis,
            device,
            created,
            &self.limits,
            now,
        )?;
        if bind {
            // Idempotent: a bound device gets its certificate again.
            let claim = session.claim().clone();
            match self.client(ClientRequest::Claim { claim }).await {
                Ok(ClientResponse::Certified(cert)) => {
                    session.accept_certificate(cert, &self.limits, now)?
                }
                Ok(_) => {
                    return Err(Fail::new(
                        ErrorCode::Unavailable,
                        "unexpected answer to a claim",
                    ));
                }
                Err(f) if f.code == ErrorCode::Conflict.as_str() => {
                    return Err(Fail::new(
                        ErrorCode::Unauthorized,
                        "the mailbox is bound to another device",
                    ));
                }
                Err(f) => return Err(f),
            }
        } else {
            let request = session.read_request(now);
            let view = match self.client(ClientRequest::Read { request }).await {
                Ok(ClientResponse::View(v)) => v,
                Ok(_) => {
                    return Err(Fail::new(
                        ErrorCode::Unavailable,
                        "unexpected answer to a read",
                    ));
                }
                Err(f) if f.code == ErrorCode::Unauthorized.as_str() => {
                    return Err(Fail::new(
                        ErrorCode::Unauthorized,
                        "this device is not bound to the mailbox",
                    ));
                }
                Err(f) => return Err(f),
            };
            let cert = view
                .certificates
                .iter()
                .find(|c| c.claim == *session.claim())
                .cloned()
                .ok_or_else(|| {
                    Fail::new(
                        ErrorCode::Unauthorized,
                        "this device is not bound to the mailbox",
                    )
                })?;
            session.accept_certificate(cert, &self.limits, now)?;
        }
        Ok(Side::Recipient(Box::new(session)))
    }

    fn read_request(side: &Side, now: u64) -> ReadRequest {
        match side {
            Side::Sender(s) => s.read_request(now),
            Side::Recipient(r) => r.read_request(now),
        }
    }

    /// Every message for the device after `cursor`, across pages.
    async fn fetch_all(
        &self,
        side: &Side,
        mut cursor: Vec<(PublicKey, u64)>,
        wait_ms: u32,
    ) -> Result<Vec<Message>, Fail> {
        let mut all = Vec::new();
        let mut wait = wait_ms;
        loop {
            let request = Self::read_request(side, self.entry.clock().unix());
            let c = Cursor::new(cursor.clone()).ok_or_else(|| Fail::bad("too many parties"))?;
            let page = match self
                .client(ClientRequest::Fetch {
                    request,
                    cursor: c,
                    wait_ms: wait,
                })
                .await?
            {
                ClientResponse::Messages { messages } => messages.into_vec(),
                _ => {
                    return Err(Fail::new(
                        ErrorCode::Unavailable,
                        "unexpected answer to a fetch",
                    ));
                }
            };
            wait = 0;
            let mut fresh = false;
            for m in page {
                let h = m.header();
                if let Some(entry) = cursor.iter_mut().find(|(a, _)| *a == h.from) {
                    entry.1 = entry.1.max(h.seq + 1);
                }
                let key = (h.from, h.to, h.seq);
                if !all
                    .iter()
                    .any(|a: &Message| (a.header().from, a.header().to, a.header().seq) == key)
                {
                    fresh = true;
                    all.push(m);
                }
            }
            if !fresh {
                return Ok(all);
            }
        }
    }

    fn others(side: &Side) -> Vec<PublicKey> {
        match side {
            Side::Sender(s) => s.recipients().iter().map(|r| r.key).collect(),
            Side::Recipient(r) => vec![r.genesis().header().sender],
        }
    }

    async fn create(&self, headers: &HeaderMap, body: &[u8]) -> Result<Reply, Fail> {
        let claim = required_claim(headers)?;
        let rid = required_request_id(headers)?;
        let req: CreateJson = parse_json(body)?;
        let payload = payload_bytes(&req.payload)?;
        let now = self.entry.clock().unix();
        let (rights, expires_at) = match &req.mailbox_configuration {
            Some(c) => {
                let rights: Rights = c
                    .access_rights
                    .as_deref()
                    .unwrap_or("RD")
                    .parse()
                    .map_err(|_| Fail::bad("accessRights must combine R, W and D"))?;
                let exp = parse_rfc3339(&c.expiration)
                    .ok_or_else(|| Fail::bad("expiration must be YYYY-MM-DDThh:mm:ssZ"))?;
                (rights, exp)
            }
            None => (Rights::DRAFT_DEFAULT, now + self.default_ttl_secs),
        };
        if expires_at <= now {
            return Err(Fail::bad("expiration lies in the past"));
        }
        // Capped by the network's maximum lifetime.
        let ttl = (expires_at - now).min(self.limits.max_ttl_secs);
        let bounded = |field: &str, v: &str| -> Result<(), Fail> {
            if v.len() > 2048 {
                Err(Fail::new(
                    ErrorCode::TooLarge,
                    format!("displayInformation.{field} is too long"),
                ))
            } else {
                Ok(())
            }
        };
        let d = &req.display_information;
        bounded("title", &d.title)?;
        bounded("description", &d.description)?;
        bounded("imageURL", &d.image_url)?;
        let display = DisplayInfo {
            title: BoundedString::new(d.title.clone()),
            description: BoundedString::new(d.description.clone()),
            image_url: BoundedString::new(d.image_url.clone()),
        };
        if display.title.is_none() {
            return Err(Fail::new(
                ErrorCode::TooLarge,
                "displayInformation.title is too long",
            ));
        }
        let attestation = headers
            .get(DEVICE_ATTESTATION)
            .map(|v| v.as_bytes().to_vec());
        if attestation
            .as_ref()
            .is_some_and(|a| a.len() > tigress_protocol::record::MAX_ATTESTATION)
        {
            return Err(Fail::new(
                ErrorCode::TooLarge,
                "Mailbox-Device-Attestation is too long",
            ));
        }
        let id = self.created_id(&claim, &rid);
        let link = json!({"urlLink": self.url_link(id), "isPushNotificationSupported": false});
        // A repeated request: the mailbox it created exists.
        match self.entry.genesis(&id.address()).await {
            Ok(_) => {
                return Ok(Reply {
                    status: StatusCode::CREATED,
                    body: link,
                    request_id: None,
                    sequence: None,
                });
            }
            Err(e) if e.code == ErrorCode::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let replicas = self.entry.locate(&id.address(), self.replication).await;
        if replicas.is_empty() {
            return Err(Fail::new(
                ErrorCode::Unavailable,
                "no relay nodes are known yet",
            ));
        }
        let options = ShareOptions {
            ttl_secs: ttl,
            policy: Policy {
                max_recipients: 1,
                sender_rights: rights,
                recipient_rights: rights,
                ..Policy::default()
            },
            display: Some(display),
            attestation,
            ..ShareOptions::default()
        };
        let device = self.device(id, &claim);
        let mut rng = UnwrapErr(getrandom::SysRng);
        let (session, _) = SenderSession::create_with_device(
            self.identity(id),
            device,
            &self.public_url,
            replicas,
            &payload,
            &options,
            now,
            &mut rng,
        )?;
        let status = match self
            .client(ClientRequest::Create {
                genesis: session.genesis().clone(),
            })
            .await?
        {
            ClientResponse::Stored { duplicate: true } => StatusCode::CREATED,
            _ => StatusCode::OK,
        };
        Ok(Reply {
            status,
            body: link,
            request_id: None,
            sequence: None,
        })
    }

    async fn read(&self, id: &str, headers: &HeaderMap, query: &ReadQuery) -> Result<Reply, Fail> {
        let claim = required_claim(headers)?;
        let id = mailbox_id(id)?;
        let side = self.side(id, &claim, true).await?;
        let genesis = match &side {
            Side::Sender(s) => s.genesis().clone(),
            Side::Recipient(r) => r.genesis().clone(),
        };
        let others = Self::others(&side);
        let mut messages = self
            .fetch_all(&side, others.iter().map(|o| (*o, 1)).collect(), 0)
            .await?;
        let mut latest_seq = messages.iter().map(|m| m.header().seq).max().unwrap_or(0);
        if let Some(wait) = query.wait.filter(|w| *w > 0) {
            let after = query.after.unwrap_or(latest_seq);
            let wait_ms = u32::try_from(wait.saturating_mul(1000))
                .unwrap_or(u32::MAX)
                .min(MAX_WAIT_MS);
            let newer = self
                .fetch_all(
                    &side,
                    others.iter().map(|o| (*o, after + 1)).collect(),
                    wait_ms,
                )
                .await?;
            if !newer.is_empty() {
                latest_seq = newer
                    .iter()
                    .map(|m| m.header().seq)
                    .max()
                    .unwrap_or(latest_seq);
                messages.extend(newer);
            }
        }
        let latest = messages
            .iter()
            .filter(|m| m.header().seq == latest_seq)
            .max_by_key(|m| m.header().sent_at);
        let plaintext = match latest {
            Some(m) => match &side {
                Side::Sender(s) => s.open_message(m)?.plaintext,
                Side::Recipient(r) => r.open_message(m)?.plaintext,
            },
            None => match &side {
                Side::Sender(s) => s.first_payload()?,
                Side::Recipient(r) => r.first_payload()?,
            },
        };
        let display = genesis.header().display.clone().unwrap_or_default();
        let text =
            |v: &Option<BoundedString<256>>| v.as_ref().map_or("", |s| s.as_str()).to_owned();
        let body = json!({
            "payload": payload_json(&plaintext),
            "displayInformation": {
                "title": text(&display.title),
                "description": display.description.as_ref().map_or("", |s| s.as_str()),
                "imageURL": display.image_url.as_ref().map_or("", |s| s.as_str()),
            },
            "expiration": format_rfc3339(genesis.header().expires_at),
        });
        Ok(Reply {
            status: StatusCode::OK,
            body,
            request_id: None,
            sequence: Some(latest_seq),
        })
    }

    async fn update(&self, id: &str, headers: &HeaderMap, body: &[u8]) -> Result<Reply, Fail> {
        let claim = required_claim(headers)?;
        let rid = required_request_id(headers)?;
        let req: UpdateJson = parse_json(body)?;
        let payload = payload_bytes(&req.payload)?;
        let id = mailbox_id(id)?;
        let mut side = self.side(id, &claim, false).await?;
        let me = match &side {
            Side::Sender(s) => s.public_key(),
            Side::Recipient(r) => r.public_key(),
        };
        let to = *Self::others(&side).first().ok_or_else(|| {
            Fail::new(ErrorCode::Conflict, "no recipient has read the mailbox yet")
        })?;
        // The device's own messages: a repeated request ID, and the next sequence number.
        let mut cursor = vec![(me, 1)];
        cursor.extend(Self::others(&side).into_iter().map(|o| (o, u64::MAX)));
        let own = self.fetch_all(&side, cursor, 0).await?;
        let ok = json!({"isPushNotificationSupported": false});
        if own
            .iter()
            .any(|m| m.header().from == me && m.header().request_id == rid)
        {
            return Ok(Reply {
                status: StatusCode::CREATED,
                body: ok,
                request_id: None,
                sequence: None,
            });
        }
        let next = own
            .iter()
            .filter(|m| m.header().from == me && m.header().to == to)
            .map(|m| m.header().seq)
            .max()
            .unwrap_or(0)
            + 1;
        let now = self.entry.clock().unix();
        let mut rng = UnwrapErr(getrandom::SysRng);
        let message = match &mut side {
            Side::Sender(s) => {
                s.set_next_seq(to, next);
                s.seal(&to, &payload, rid, now, &mut rng)?
            }
            Side::Recipient(r) => {
                r.set_next_seq(next);
                r.seal(&payload, rid, now, &mut rng)?
            }
        };
        let status = match self.client(ClientRequest::Send { message }).await? {
            ClientResponse::Stored { duplicate: true } => StatusCode::CREATED,
            _ => StatusCode::OK,
        };
        Ok(Reply {
            status,
            body: ok,
            request_id: None,
            sequence: Some(next),
        })
    }

    async fn delete(&self, id: &str, headers: &HeaderMap) -> Result<Reply, Fail> {
        let claim = required_claim(headers)?;
        required_request_id(headers)?;
        let id = mailbox_id(id)?;
        let device = self.device(id, &claim);
        let delete = Delete::sign(id.address(), &device.signing, self.entry.clock().unix());
        match self.client(ClientRequest::Delete { delete }).await {
            Ok(_) => Ok(Reply {
                status: StatusCode::OK,
                body: json!({}),
                request_id: None,
                sequence: None,
            }),
            // The draft answers 404 for a mailbox already deleted.
            Err(f) if f.code == ErrorCode::Gone.as_str() => {
                Err(Fail::new(ErrorCode::NotFound, f.message))
            }
            Err(f) => Err(f),
        }
    }

    async fn relinquish(&self, id: &str, headers: &HeaderMap) -> Result<Reply, Fail> {
        let claim = required_claim(headers)?;
        required_request_id(headers)?;
        let id = mailbox_id(id)?;
        self.genesis(&id.address()).await?;
        let device = self.device(id, &claim);
        let relinquish = Relinquish::sign(id.address(), &device.signing, self.entry.clock().unix());
        let status = match self
            .client(ClientRequest::Relinquish { relinquish })
            .await?
        {
            ClientResponse::Stored { duplicate: true } => StatusCode::CREATED,
            _ => StatusCode::OK,
        };
        Ok(Reply {
            status,
            body: json!({}),
            request_id: None,
            sequence: None,
        })
    }

    async fn preview(&self, id: &str) -> Result<Response, Fail> {
        let id = mailbox_id(id)?;
        let genesis = self.genesis(&id.address()).await?;
        let display = genesis.header().display.clone().ok_or_else(|| {
            Fail::new(
                ErrorCode::NotFound,
                "this share shows no public display information",
            )
        })?;
        let field = |v: Option<&str>| html_escape(v.unwrap_or(""));
        let title = field(display.title.as_ref().map(|s| s.as_str()));
        let description = field(display.description.as_ref().map(|s| s.as_str()));
        let image = field(display.image_url.as_ref().map(|s| s.as_str()));
        let url = html_escape(&self.url_link(id));
        let html = format!(
            "<!DOCTYPE html>\n<html prefix=\"og: https://ogp.me/ns#\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n<meta property=\"og:title\" content=\"{title}\" />\n<meta property=\"og:type\" content=\"website\" />\n<meta property=\"og:description\" content=\"{description}\" />\n<meta property=\"og:url\" content=\"{url}\" />\n<meta property=\"og:image\" content=\"{image}\" />\n</head>\n<body>\n<h1>{title}</h1>\n<p>{description}</p>\n</body>\n</html>\n"
        );
        Ok((
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; img-src *",
                ),
            ],
            html,
        )
            .into_response())
    }
}

fn echo(headers: &HeaderMap) -> Option<HeaderValue> {
    headers.get(REQUEST_ID).cloned()
}

fn finish(result: Result<Reply, Fail>, headers: &HeaderMap) -> Response {
    let rid = echo(headers);
    match result {
        Ok(mut r) => {
            r.request_id = rid;
            r.into_response()
        }
        Err(f) => f.reply(rid).into_response(),
    }
}

async fn create_handler(State(gw): State<Arc<Gateway>>, request: Request) -> Response {
    let headers = request.headers().clone();
    let result = match read_body(request).await {
        Ok(body) => gw.create(&headers, &body).await,
        Err(f) => Err(f),
    };
    finish(result, &headers)
}

async fn read_handler(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let result = match ReadQuery::parse(query.as_deref().unwrap_or("")) {
        Ok(q) => gw.read(&id, &headers, &q).await,
        Err(f) => Err(f),
    };
    finish(result, &headers)
}

async fn update_handler(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let headers = request.headers().clone();
    let result = match read_body(request).await {
        Ok(body) => gw.update(&id, &headers, &body).await,
        Err(f) => Err(f),
    };
    finish(result, &headers)
}

async fn delete_handler(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = gw.delete(&id, &headers).await;
    finish(result, &headers)
}

async fn relinquish_handler(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = gw.relinquish(&id, &headers).await;
    finish(result, &headers)
}

async fn preview_handler(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match gw.preview(&id).await {
        Ok(mut r) => {
            if let Some(rid) = echo(&headers) {
                r.headers_mut().insert(REQUEST_ID, rid);
            }
            r
        }
        Err(f) => f.reply(echo(&headers)).into_response(),
    }
}

/// The gateway's routes.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/m", post(create_handler))
        .route(
            "/v1/m/{id}",
            post(read_handler)
                .put(update_handler)
                .get(preview_handler)
                .delete(delete_handler)
                .patch(relinquish_handler),
        )
        .with_state(gateway)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .fallback(|| async { Fail::new(ErrorCode::NotFound, "no such endpoint").reply(None) })
        .method_not_allowed_fallback(|| async {
            Reply {
                status: StatusCode::METHOD_NOT_ALLOWED,
                body: json!({"error": {"code": "method_not_allowed", "message": "method not allowed"}}),
                request_id: None,
                sequence: None,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        for t in [
            0u64,
            951_782_400,
            1_644_332_242,
            1_800_000_000,
            4_102_444_800,
        ] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }
        assert_eq!(parse_rfc3339("2022-02-08T14:57:22Z"), Some(1_644_332_242));
        assert_eq!(format_rfc3339(1_644_332_242), "2022-02-08T14:57:22Z");
        for bad in [
            "2022-02-08 14:57:22Z",
            "2022-13-08T14:57:22Z",
            "2022-02-08T14:57:22",
            "x",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            html_escape("<script>alert(\"x\")</script>&'"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
    }
}
