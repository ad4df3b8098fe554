//! The node's HTTP port: `/health`, `/metrics` and the draft's gateway.

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
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::store::Store;

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    store: Option<Store>,
    peer_id: String,
    reachability: Reachability,
}

/// `{"status":"ok","peer_id":…,"reachability":"public"|"private","reachability_setting":…}`:
/// `reachability` is the mode the node is in now (`public`: it serves in routing tables
/// and as a replica), the setting is what the operator chose (`auto` lets AutoNAT decide).
async fn health(State(s): State<HttpState>) -> impl IntoResponse {
    let mode = if s.metrics.reachable.load(Ordering::Relaxed) {
        "public"
    } else {
        "private"
    };
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!(
            "{{\"status\":\"ok\",\"peer_id\":\"{}\",\"reachability\":\"{mode}\",\"reachability_setting\":\"{}\"}}",
            s.peer_id,
            s.reachability.as_str()
        ),
    )
}

async fn metrics_page(State(s): State<HttpState>) -> impl IntoResponse {
    let body = s
        .metrics
        .render(s.store.as_ref().map(|st| st.stats().as_ref()));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// Binds the HTTP port.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Serves `/health`, `/metrics` and the gateway until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    store: Option<Store>,
    peer_id: String,
    reachability: Reachability,
    gateway: Option<Arc<Gateway>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let mut app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_page))
        .with_state(HttpState {
            metrics,
            store,
            peer_id,
            reachability,
        });
    if let Some(gateway) = gateway {
        app = app.merge(crate::gateway::router(gateway));
    }
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "HTTP server failed");
    }
}
