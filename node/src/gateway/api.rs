//! The draft's wire forms: JSON bodies, headers, the long-poll query, and answers.

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};
use tigress_protocol::crypto::sha256;
use tigress_protocol::rpc::RemoteError;
use tigress_protocol::{ErrorCode, MailboxId};

use super::{DEVICE_CLAIM, MAX_BODY, REQUEST_ID, SEQUENCE};

/// An answer: status, JSON body, and the request ID to echo.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: Value,
    pub(crate) request_id: Option<HeaderValue>,
    pub(crate) sequence: Option<u64>,
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
pub(crate) struct Fail {
    pub(crate) status: StatusCode,
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl Fail {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Malformed, message)
    }

    pub(crate) fn reply(self, request_id: Option<HeaderValue>) -> Reply {
        Reply {
            status: self.status,
            body: json!({"error": {"code": self.code.as_str(), "message": self.message}}),
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

impl From<tigress_protocol::flow::FlowError> for Fail {
    fn from(e: tigress_protocol::flow::FlowError) -> Self {
        Fail::new(e.code(), e.to_string())
    }
}

impl From<tigress_protocol::Error> for Fail {
    fn from(e: tigress_protocol::Error) -> Self {
        Fail::new(e.code(), e.to_string())
    }
}

#[derive(Deserialize)]
pub(crate) struct PayloadJson {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) data: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DisplayJson {
    pub(crate) title: String,
    pub(crate) description: String,
    #[serde(rename = "imageURL")]
    pub(crate) image_url: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConfigJson {
    pub(crate) access_rights: Option<String>,
    pub(crate) expiration: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateJson {
    pub(crate) payload: PayloadJson,
    pub(crate) display_information: DisplayJson,
    #[allow(dead_code)]
    pub(crate) notification_token: Option<Value>,
    pub(crate) mailbox_configuration: Option<ConfigJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpdateJson {
    pub(crate) payload: PayloadJson,
    #[allow(dead_code)]
    pub(crate) notification_token: Option<Value>,
}

/// The long-poll extension's query: `wait=SECONDS`, `after=SEQ`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ReadQuery {
    pub(crate) wait: Option<u64>,
    pub(crate) after: Option<u64>,
}

impl ReadQuery {
    pub(crate) fn parse(query: &str) -> Result<Self, Fail> {
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
pub(crate) fn payload_bytes(p: &PayloadJson) -> Result<Vec<u8>, Fail> {
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
pub(crate) fn payload_json(bytes: &[u8]) -> Value {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) if v.get("type").is_some() && v.get("data").is_some() => v,
        _ => json!({"type": "application/octet-stream", "data": STANDARD.encode(bytes)}),
    }
}

pub(crate) fn header_uuid(headers: &HeaderMap, name: &str) -> Result<Option<[u8; 16]>, Fail> {
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

pub(crate) fn required_claim(headers: &HeaderMap) -> Result<[u8; 16], Fail> {
    header_uuid(headers, DEVICE_CLAIM)?
        .ok_or_else(|| Fail::bad("the Mailbox-Device-Claim header is required"))
}

/// The 16 bytes of a request ID: the UUID's, or a hash of any other text.
pub(crate) fn required_request_id(headers: &HeaderMap) -> Result<[u8; 16], Fail> {
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

pub(crate) fn mailbox_id(text: &str) -> Result<MailboxId, Fail> {
    text.parse()
        .map_err(|_| Fail::new(ErrorCode::NotFound, "no such mailbox (not a UUID)"))
}

pub(crate) async fn read_body(request: Request) -> Result<Bytes, Fail> {
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

pub(crate) fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Fail> {
    serde_json::from_slice(body).map_err(|e| Fail::bad(format!("invalid JSON body: {e}")))
}

/// The `Mailbox-Request-ID` to echo: only a UUID, as the draft defines it, in its
/// canonical form (anything else a client sends, markup or raw bytes, is not sent back).
pub(crate) fn echo(headers: &HeaderMap) -> Option<HeaderValue> {
    let text = headers.get(REQUEST_ID)?.to_str().ok()?;
    let id = uuid::Uuid::try_parse(text.trim()).ok()?;
    HeaderValue::from_str(&id.hyphenated().to_string()).ok()
}

pub(crate) fn finish(result: Result<Reply, Fail>, headers: &HeaderMap) -> Response {
    let rid = echo(headers);
    match result {
        Ok(mut r) => {
            r.request_id = rid;
            r.into_response()
        }
        Err(f) => f.reply(rid).into_response(),
    }
}
