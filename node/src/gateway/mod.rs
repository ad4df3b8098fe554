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

mod api;
mod preview;
mod time;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use rand_core::UnwrapErr;
use serde_json::json;
use tigress_protocol::crypto::{GatewaySecret, HpkeSuite, PublicKey};
use tigress_protocol::flow;
use tigress_protocol::invitation::Vertical;
use tigress_protocol::mailbox::Limits;
use tigress_protocol::record::{
    Delete, DisplayInfo, Genesis, Message, Policy, ReadRequest, ReadScope, Record, Relinquish,
    Rights,
};
use tigress_protocol::rpc::{ClientRequest, ClientResponse, MAX_WAIT_MS};
use tigress_protocol::session::{
    DeviceKeys, RecipientSession, SenderSession, ShareIdentity, ShareOptions,
};
use tigress_protocol::wire::BoundedString;
use tigress_protocol::{ErrorCode, MailboxId, Secret, ShareUrl};

use self::api::{
    CreateJson, Fail, ReadQuery, Reply, UpdateJson, echo, finish, mailbox_id, parse_json,
    payload_bytes, payload_json, read_body, required_claim, required_request_id,
};
use crate::entry::Entry;

/// The largest request body read (a 64 KiB payload in base64 with its JSON).
pub const MAX_BODY: usize = 128 * 1024;
/// The header naming a request.
pub const REQUEST_ID: &str = "mailbox-request-id";
/// The request header with a proof of work for a create's body (a decimal nonce; see
/// `tigress_protocol::admission`): the create is not charged to its source's budget.
pub const ADMISSION_PROOF: &str = "tigress-admission-proof";
/// The header naming a device.
pub const DEVICE_CLAIM: &str = "mailbox-device-claim";
/// The optional attestation header.
pub const DEVICE_ATTESTATION: &str = "mailbox-device-attestation";
/// The sequence number of the payload a read returns (extension).
pub const SEQUENCE: &str = "mailbox-sequence";

/// The gateway's state.
pub struct Gateway {
    entry: Arc<Entry>,
    secret: GatewaySecret,
    public_url: String,
    limits: Limits,
    default_ttl_secs: u64,
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
        secret: GatewaySecret,
        public_url: String,
        limits: Limits,
    ) -> Self {
        Self {
            entry,
            secret,
            public_url,
            limits,
            default_ttl_secs: 24 * 3600,
        }
    }

    fn identity(&self, id: MailboxId) -> ShareIdentity {
        ShareIdentity {
            id,
            secret: Secret::from_bytes(*self.secret.share_secret(id.as_bytes())),
        }
    }

    fn device(&self, id: MailboxId, claim: &[u8; 16]) -> DeviceKeys {
        DeviceKeys::derive(
            HpkeSuite::default(),
            &self.secret.device_seed(id.as_bytes(), claim),
        )
    }

    /// The mailbox a (device, request) pair creates: the same pair always names the same
    /// mailbox, on every gateway sharing the secret, so a repeated create is detected.
    fn created_id(&self, claim: &[u8; 16], request_id: &[u8; 16]) -> MailboxId {
        MailboxId::from_bytes(self.secret.created_mailbox_id(claim, request_id))
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

    /// Admits a draft create: with a proof of work for its body in
    /// `Tigress-Admission-Proof` (at least the first level, or what the node asks now if
    /// more), else from its source's budget of creates.
    fn admit_create(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), Fail> {
        use tigress_protocol::admission::{FIRST_LEVEL, verify};
        let proof = headers
            .get(ADMISSION_PROOF)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(nonce) = proof {
            let bits = self.entry.admission_bits().max(FIRST_LEVEL);
            if verify(&tigress_protocol::crypto::sha256(&[body]), bits, nonce) {
                return Ok(());
            }
        }
        crate::budget::charge_create().map_err(|e| {
            let r = crate::budget::refusal(e, "mailboxes created");
            Fail::new(r.code, r.message.as_str())
        })
    }

    async fn client(&self, request: ClientRequest) -> Result<ClientResponse, Fail> {
        match self.entry.handle_paid(request).await {
            ClientResponse::Error(e) => Err(e.into()),
            other => Ok(other),
        }
    }

    /// The genesis of a mailbox this gateway made, opened with its claim key (the gateway
    /// derives every share secret it made; for any other mailbox the replicas refuse).
    async fn genesis(&self, id: MailboxId) -> Result<Genesis, Fail> {
        let now = self.entry.clock().unix();
        let answer = self.client(flow::open(&self.share_url(id)?, now)).await?;
        let genesis = flow::genesis(answer)?;
        if genesis.header().address != id.address()
            || genesis.header().claim_key
                != self.identity(id).secret.derive_keys(&id).claim.public_key()
        {
            return Err(Fail::new(
                ErrorCode::Unavailable,
                "the network answered with another mailbox's genesis",
            ));
        }
        Ok(genesis)
    }

    /// Resumes the device's side; a new recipient device is bound here (claimed).
    async fn side(&self, id: MailboxId, claim: &[u8; 16], bind: bool) -> Result<Side, Fail> {
        let genesis = self.genesis(id).await?;
        let device = self.device(id, claim);
        let now = self.entry.clock().unix();
        if device.signing.public_key() == genesis.header().sender {
            let mut session =
                SenderSession::resume(self.identity(id), genesis, device, Vertical::General)?;
            let request = session.read_request(now, ReadScope::View);
            let answer = self.client(ClientRequest::Read { request }).await?;
            flow::learn(&mut session, answer, &self.limits, now)?;
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
            match self.client(flow::claim(&session)).await {
                Ok(answer) => flow::certified(&mut session, answer, &self.limits, now)?,
                Err(f) if f.code == ErrorCode::Conflict => {
                    return Err(Fail::new(
                        ErrorCode::Unauthorized,
                        "the mailbox is bound to another device",
                    ));
                }
                Err(f) => return Err(f),
            }
        } else {
            let request = session.read_request(now, ReadScope::View);
            let view = match self.client(ClientRequest::Read { request }).await {
                Ok(answer) => flow::view(answer, session.genesis())?,
                Err(f) if f.code == ErrorCode::Unauthorized => {
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

    fn read_request(side: &Side, now: u64, scope: ReadScope) -> ReadRequest {
        match side {
            Side::Sender(s) => s.read_request(now, scope),
            Side::Recipient(r) => r.read_request(now, scope),
        }
    }

    fn genesis_of(side: &Side) -> &Genesis {
        match side {
            Side::Sender(s) => s.genesis(),
            Side::Recipient(r) => r.genesis(),
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
            let now = self.entry.clock().unix();
            let fetch = flow::fetch(
                |scope| Self::read_request(side, now, scope),
                cursor.clone(),
                u64::from(wait),
            )?;
            let page = flow::fetched(self.client(fetch).await?)?;
            wait = 0;
            let mut fresh = false;
            for m in page {
                let h = m.header();
                if let Some(entry) = cursor.iter_mut().find(|(a, _)| *a == h.from) {
                    entry.1 = entry.1.max(h.seq.saturating_add(1));
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
        let CreateBody {
            payload,
            terms,
            display,
        } = read_create(body)?;
        let now = self.entry.clock().unix();
        let (rights, expires_at) =
            terms.unwrap_or((Rights::DRAFT_DEFAULT, now + self.default_ttl_secs));
        if expires_at <= now {
            return Err(Fail::bad("expiration lies in the past"));
        }
        // Capped by the network's maximum lifetime.
        let ttl = (expires_at - now).min(self.limits.max_ttl_secs);
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
        match self.genesis(id).await {
            Ok(_) => {
                return Ok(Reply {
                    status: StatusCode::CREATED,
                    body: link,
                    request_id: None,
                    sequence: None,
                });
            }
            Err(e) if e.code == ErrorCode::NotFound => {}
            Err(e) => return Err(e),
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
        let identity = self.identity(id);
        let located = self.client(flow::locate(&identity)).await?;
        let (session, _, create) = flow::create(
            located,
            identity,
            self.device(id, &claim),
            &self.public_url,
            &payload,
            &options,
            now,
            &mut UnwrapErr(getrandom::SysRng),
        )?;
        let digest = session.genesis().digest();
        let status = if flow::stored(self.client(create).await?, session.genesis(), &digest)? {
            StatusCode::CREATED
        } else {
            StatusCode::OK
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
            "expiration": time::format_rfc3339(genesis.header().expires_at),
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
        let payload = read_update(body)?;
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
        let digest = message.digest();
        let genesis = Self::genesis_of(&side).clone();
        let status = if flow::stored(self.client(flow::send(message)).await?, &genesis, &digest)? {
            StatusCode::CREATED
        } else {
            StatusCode::OK
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
        let genesis = match self.genesis(id).await {
            Ok(g) => g,
            // The draft answers 404 for a mailbox already deleted.
            Err(f) if f.code == ErrorCode::Gone => {
                return Err(Fail::new(ErrorCode::NotFound, f.message));
            }
            Err(f) => return Err(f),
        };
        let device = self.device(id, &claim);
        let digest = genesis.digest();
        let delete = Delete::sign(
            id.address(),
            digest,
            &device.signing,
            self.entry.clock().unix(),
        );
        let record = delete.digest();
        match self.client(ClientRequest::Delete { delete }).await {
            Ok(answer) => {
                flow::stored(answer, &genesis, &record)?;
                Ok(Reply {
                    status: StatusCode::OK,
                    body: json!({}),
                    request_id: None,
                    sequence: None,
                })
            }
            // The draft answers 404 for a mailbox already deleted.
            Err(f) if f.code == ErrorCode::Gone => Err(Fail::new(ErrorCode::NotFound, f.message)),
            Err(f) => Err(f),
        }
    }

    async fn relinquish(&self, id: &str, headers: &HeaderMap) -> Result<Reply, Fail> {
        let claim = required_claim(headers)?;
        required_request_id(headers)?;
        let id = mailbox_id(id)?;
        let genesis = self.genesis(id).await?;
        let device = self.device(id, &claim);
        let relinquish = Relinquish::sign(
            id.address(),
            genesis.digest(),
            &device.signing,
            self.entry.clock().unix(),
        );
        let record = relinquish.digest();
        let answer = self
            .client(ClientRequest::Relinquish { relinquish })
            .await?;
        let status = if flow::stored(answer, &genesis, &record)? {
            StatusCode::CREATED
        } else {
            StatusCode::OK
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
        let status = match self
            .client(ClientRequest::Status {
                address: id.address(),
            })
            .await?
        {
            ClientResponse::Status(s) => s,
            _ => {
                return Err(Fail::new(
                    ErrorCode::Unavailable,
                    "no replica gave a status",
                ));
            }
        };
        if status.deleted || status.expired {
            return Err(Fail::new(ErrorCode::Gone, "the mailbox is gone"));
        }
        let display = status.display.ok_or_else(|| {
            Fail::new(
                ErrorCode::NotFound,
                "this share shows no public display information",
            )
        })?;
        let html = preview::page(
            display.title.as_ref().map(|s| s.as_str()),
            display.description.as_ref().map(|s| s.as_str()),
            display.image_url.as_ref().map(|s| s.as_str()),
            &self.url_link(id),
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

async fn create_handler(State(gw): State<Arc<Gateway>>, request: Request) -> Response {
    let headers = request.headers().clone();
    let result = match read_body(request).await {
        Ok(body) => match gw.admit_create(&headers, &body) {
            Ok(()) => gw.create(&headers, &body).await,
            Err(f) => Err(f),
        },
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

/// What a create's body asks, checked.
struct CreateBody {
    payload: Vec<u8>,
    /// The access rights and expiration, when the body configures them.
    terms: Option<(Rights, u64)>,
    display: DisplayInfo,
}

/// Reads a create's JSON body: the payload, the configuration and the display
/// information, each checked.
fn read_create(body: &[u8]) -> Result<CreateBody, Fail> {
    let req: CreateJson = parse_json(body)?;
    let payload = payload_bytes(&req.payload)?;
    let terms = match &req.mailbox_configuration {
        Some(c) => {
            let rights: Rights = c
                .access_rights
                .as_deref()
                .unwrap_or("RD")
                .parse()
                .map_err(|_| Fail::bad("accessRights must combine R, W and D"))?;
            let exp = time::parse_rfc3339(&c.expiration)
                .ok_or_else(|| Fail::bad("expiration must be YYYY-MM-DDThh:mm:ssZ"))?;
            Some((rights, exp))
        }
        None => None,
    };
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
    Ok(CreateBody {
        payload,
        terms,
        display,
    })
}

/// Reads an update's JSON body: its payload, checked.
fn read_update(body: &[u8]) -> Result<Vec<u8>, Fail> {
    let req: UpdateJson = parse_json(body)?;
    payload_bytes(&req.payload)
}

/// Every parser the gateway runs on what a draft client sends, applied to `input` with
/// no node behind it: the JSON bodies of a create and an update (and what is read out of
/// them: the payload, the access rights, the expiration), the headers (`name: value`
/// lines: the device claim, the request ID and its echo, the admission proof), the long
/// poll's query and a mailbox path. For the fuzzer: whatever the input, this returns.
#[doc(hidden)]
pub fn parse_untrusted(input: &[u8]) {
    let Some((which, rest)) = input.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(create) = read_create(rest)
                && let Some(title) = &create.display.title
            {
                let _ = preview::html_escape(title.as_str());
            }
        }
        1 => {
            let _ = read_update(rest);
        }
        2 => {
            let mut headers = HeaderMap::new();
            for line in rest.split(|b| *b == b'\n') {
                let Some(at) = line.iter().position(|b| *b == b':') else {
                    continue;
                };
                let (name, value) = line.split_at(at);
                if let (Ok(name), Ok(value)) = (
                    axum::http::HeaderName::from_bytes(name),
                    axum::http::HeaderValue::from_bytes(value.get(1..).unwrap_or_default()),
                ) {
                    headers.append(name, value);
                }
            }
            let _ = api::required_claim(&headers);
            let _ = api::required_request_id(&headers);
            let _ = echo(&headers);
            let _ = headers
                .get(ADMISSION_PROOF)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
        }
        _ => {
            let text = String::from_utf8_lossy(rest);
            let (path, query) = text.split_once('?').unwrap_or((&text, ""));
            let _ = ReadQuery::parse(query);
            let _ = mailbox_id(path);
        }
    }
}
