//! The node's two HTTP listeners. The public port serves `/health` (up, and the
//! version: nothing an outsider could use) and the gateway; the admin listener, on
//! loopback by default, serves `/metrics` and `/status` to the operator.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::budget::{Admission, Budgets, Exhausted, Slot};

use crate::config::Reachability;
use crate::metrics::Metrics;
use crate::store::Store;

/// What the admin listener reads.
#[derive(Clone)]
pub struct AdminState {
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// The store, on a relay.
    pub store: Option<Store>,
    /// The node's peer ID.
    pub peer_id: String,
    /// The operator's reachability setting.
    pub reachability: Reachability,
}

/// `{"status":"ok","version":…}`.
async fn health() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!(
            "{{\"status\":\"ok\",\"version\":\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        ),
    )
}

/// `{"status":"ok","version":…,"peer_id":…,"reachability":"public"|"private","reachability_setting":…}`:
/// `reachability` is the mode the node is in now (`public`: it serves in routing tables
/// and as a replica), the setting is what the operator chose (`auto` lets AutoNAT decide).
async fn status(State(s): State<AdminState>) -> impl IntoResponse {
    let mode = if s.metrics.reachable.load(Ordering::Relaxed) {
        "public"
    } else {
        "private"
    };
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!(
            "{{\"status\":\"ok\",\"version\":\"{}\",\"peer_id\":\"{}\",\"reachability\":\"{mode}\",\"reachability_setting\":\"{}\"}}",
            env!("CARGO_PKG_VERSION"),
            s.peer_id,
            s.reachability.as_str()
        ),
    )
}

async fn metrics_page(State(s): State<AdminState>) -> impl IntoResponse {
    let body = s
        .metrics
        .render(s.store.as_ref().map(|st| st.stats().as_ref()));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// Binds a listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// The public port's routes: `/health` and, when given, the gateway's; with a tap
/// (a test double), every request is recorded with its source address first.
pub fn public_router(gateway: Option<Router>, tap: Option<crate::tap::Tap>) -> Router {
    let app = Router::new().route("/health", get(health));
    let app = match gateway {
        Some(g) => app.merge(g),
        None => app,
    };
    match tap {
        Some(tap) => app.layer(axum::middleware::from_fn(
            move |axum::extract::ConnectInfo(from): axum::extract::ConnectInfo<SocketAddr>,
                  request: axum::extract::Request,
                  next: axum::middleware::Next| {
                let tap = tap.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let bytes = axum::body::to_bytes(body, usize::MAX)
                        .await
                        .unwrap_or_default();
                    let mut head = format!("{} {}\n", parts.method, parts.uri);
                    for (k, v) in &parts.headers {
                        head.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
                    }
                    tap.http(from.to_string(), &head, &bytes);
                    let request =
                        axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
                    next.run(request).await
                }
            },
        )),
        None => app,
    }
}

/// Adds `Strict-Transport-Security` to every answer (a node whose public URL is
/// `https://`: browsers that opened it once never fall back to plain HTTP).
pub fn with_hsts(app: Router) -> Router {
    app.layer(axum::middleware::map_response(
        |mut response: axum::response::Response| async move {
            response.headers_mut().insert(
                header::STRICT_TRANSPORT_SECURITY,
                header::HeaderValue::from_static("max-age=31536000"),
            );
            response
        },
    ))
}

/// The admin listener's routes: `/metrics` and `/status`.
pub fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/status", get(status))
        .route("/health", get(health))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` resolves (the admin listener: loopback,
/// the operator's own).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

/// The most bytes of request bodies the public port holds at once, all connections
/// together.
pub const BODY_BYTES: usize = 64 << 20;
/// The largest request body the public port reads (an oblivious request at most; the
/// gateway's own routes take less).
pub const MAX_REQUEST_BODY: usize = tigress_protocol::rpc::MAX_FRAME;
/// The most bytes of one request's head (request line and headers) a connection buffers.
pub const MAX_HEAD: usize = 64 << 10;

/// The response header with the proof of work a new mailbox costs now (bits).
pub const ADMISSION_BITS: &str = "tigress-admission-bits";

/// The public port's limits: budgets per source, and the bytes of bodies held at once.
#[derive(Clone)]
pub struct PublicLimits {
    /// The budgets.
    pub budgets: Arc<Budgets>,
    /// Bytes of bodies held, one permit a byte.
    pub body_bytes: Arc<Semaphore>,
    /// The proof of work asked for new mailboxes.
    pub admission: Arc<crate::budget::AdmissionLevel>,
}

impl PublicLimits {
    /// Limits under `budgets`, publishing `admission`.
    pub fn new(budgets: Arc<Budgets>, admission: Arc<crate::budget::AdmissionLevel>) -> Self {
        Self {
            budgets,
            body_bytes: Arc::new(Semaphore::new(BODY_BYTES)),
            admission,
        }
    }
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn exhausted(e: Exhausted, what: &str) -> Response {
    let r = crate::budget::refusal(e, what);
    let status =
        StatusCode::from_u16(r.code.http_status()).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
    refuse(status, r.code.as_str(), r.message.as_str())
}

/// Admits each request of the public port against its source's budgets: its rate, its
/// requests in flight (a long-poll gives its slot back for a place among long-polls),
/// and its body, which must arrive whole within the body timeout and is held against the
/// port's byte budget while the request is served.
pub fn with_budgets(app: Router, limits: PublicLimits) -> Router {
    app.layer(axum::middleware::from_fn(
        move |axum::extract::ConnectInfo(from): axum::extract::ConnectInfo<SocketAddr>,
              request: Request,
              next: Next| {
            let limits = limits.clone();
            async move { admit(limits, from, request, next).await }
        },
    ))
}

async fn admit(limits: PublicLimits, from: SocketAddr, request: Request, next: Next) -> Response {
    let budgets = &limits.budgets;
    let source = budgets.classify.of_ip(from.ip());
    if let Err(e) = budgets.http_rates.check(&source) {
        return exhausted(e, "requests");
    }
    let slot = match budgets.http_slots.take(&source) {
        Ok(s) => s,
        Err(e) => return exhausted(e, "requests in flight"),
    };
    let (parts, body) = request.into_parts();
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if announced.is_some_and(|n| n > MAX_REQUEST_BODY) {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            &format!("body over {MAX_REQUEST_BODY} bytes"),
        );
    }
    // A request without a body holds nothing; one whose length is not announced
    // (chunked) is held as if it were the largest.
    let exact = axum::body::HttpBody::size_hint(&body).exact();
    let hold = announced
        .or_else(|| exact.and_then(|n| usize::try_from(n).ok()))
        .unwrap_or(MAX_REQUEST_BODY);
    let bytes_permit = if hold == 0 {
        None
    } else {
        match limits
            .body_bytes
            .clone()
            .try_acquire_many_owned(u32::try_from(hold).unwrap_or(u32::MAX))
        {
            Ok(p) => Some(p),
            Err(_) => {
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the node holds as many request bodies as it can; retry shortly",
                );
            }
        }
    };
    let deadline = Duration::from_secs(budgets.config.http_body_timeout_secs);
    let bytes = match tokio::time::timeout(deadline, axum::body::to_bytes(body, hold)).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                &format!("body over {hold} bytes"),
            );
        }
        Err(_) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                "malformed",
                "the request body did not arrive in time",
            );
        }
    };
    let request = Request::from_parts(parts, axum::body::Body::from(bytes));
    let mut held: Vec<Box<dyn Send>> = vec![Box::new(slot)];
    if let Some(p) = bytes_permit {
        held.push(Box::new(p));
    }
    let mut response = Admission::new(source, budgets.http_polls.clone(), held)
        .with_creates(budgets.http_creates.clone())
        .scope(next.run(request))
        .await;
    // What a native create would cost here now (a draft client may pay it too, in
    // place of its source's budget of creates).
    if let Ok(v) = HeaderValue::from_str(&limits.admission.bits().to_string()) {
        response.headers_mut().insert(ADMISSION_BITS, v);
    }
    response
}

/// A connection of the public port, holding its place in the connection budget.
pub struct Held<S> {
    inner: S,
    _slot: Slot,
}

impl<S: AsyncRead + Unpin> AsyncRead for Held<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Held<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Admits each connection against its source's connection budget and rate before the
/// inner acceptor (TLS, or none) sees it; a connection over either is closed at once,
/// before anything is read from it. The
/// inner accept (a TLS handshake) must finish within the header timeout.
#[derive(Clone)]
pub struct Budgeted<A> {
    inner: A,
    budgets: Arc<Budgets>,
}

impl<A> Budgeted<A> {
    /// `inner` under `budgets`.
    pub fn new(inner: A, budgets: Arc<Budgets>) -> Self {
        Self { inner, budgets }
    }
}

impl<A, S> axum_server::accept::Accept<TcpStream, S> for Budgeted<A>
where
    A: axum_server::accept::Accept<TcpStream, S> + Clone + Send + Sync + 'static,
    A::Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A::Service: Send + 'static,
    A::Future: Send + 'static,
    S: Send + 'static,
{
    type Stream = Held<A::Stream>;
    type Service = A::Service;
    type Future = Pin<
        Box<
            dyn std::future::Future<Output = std::io::Result<(Self::Stream, Self::Service)>> + Send,
        >,
    >;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let slot = stream.peer_addr().map_err(|e| e.to_string()).and_then(|a| {
            let source = self.budgets.classify.of_ip(a.ip());
            self.budgets
                .http_accepts
                .check(&source)
                .map_err(|e| format!("{e:?}"))?;
            self.budgets
                .http_connections
                .take(&source)
                .map_err(|e| format!("{e:?}"))
        });
        let slot = match slot {
            Ok(slot) => slot,
            Err(why) => {
                tracing::debug!(why, "HTTP connection over budget; closed");
                return Box::pin(std::future::ready(Err(std::io::Error::other(
                    "connection over budget",
                ))));
            }
        };
        let deadline = Duration::from_secs(self.budgets.config.http_header_timeout_secs);
        let accepting = self.inner.accept(stream, service);
        Box::pin(async move {
            let (inner, service) = tokio::time::timeout(deadline, accepting)
                .await
                .map_err(|_| std::io::Error::other("handshake timed out"))??;
            Ok((Held { inner, _slot: slot }, service))
        })
    }
}

/// Sets the public port's HTTP/1 limits: the time a client has for a request's head
/// (which also bounds how long a kept-alive connection idles) and the bytes of head a
/// connection buffers.
pub fn configure<A>(server: &mut axum_server::Server<A>, budgets: &Budgets) {
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(budgets.config.http_header_timeout_secs))
        .max_buf_size(MAX_HEAD);
}

/// Serves the public port's `app` on `listener`, plain HTTP, until `handle` stops it.
pub async fn serve_public(
    listener: TcpListener,
    app: Router,
    budgets: Arc<Budgets>,
    handle: axum_server::Handle,
) {
    let listener = match listener.into_std() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "HTTP listener");
            return;
        }
    };
    let make = app.into_make_service_with_connect_info::<SocketAddr>();
    let mut server = axum_server::from_tcp(listener)
        .acceptor(Budgeted::new(
            axum_server::accept::DefaultAcceptor::new(),
            budgets.clone(),
        ))
        .handle(handle);
    configure(&mut server, &budgets);
    if let Err(e) = server.serve(make).await {
        tracing::error!(error = %e, "HTTP server failed");
    }
}
