//! The node's two HTTP listeners. The public port serves `/health` (up, and the
//! version: nothing an outsider could use) and the gateway; the admin listener, on
//! loopback by default, serves `/metrics` and `/status` to the operator.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

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

/// Serves `app` on `listener` until `shutdown` resolves.
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
