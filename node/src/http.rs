//! The node's HTTP port: `/health` and `/metrics` (the draft's gateway joins them here).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::store::Store;

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    store: Option<Store>,
    peer_id: String,
}

async fn health(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"status\":\"ok\",\"peer_id\":\"{}\"}}", s.peer_id),
    )
}

async fn metrics_page(State(s): State<HttpState>) -> impl IntoResponse {
    let body = s
        .metrics
        .render(s.store.as_ref().map(|st| st.stats().as_ref()));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// Binds the HTTP port; the returned future serves until `shutdown` resolves.
pub async fn bind(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    store: Option<Store>,
    peer_id: String,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()> + Send)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_page))
        .with_state(HttpState {
            metrics,
            store,
            peer_id,
        });
    let serve = async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "HTTP server failed");
        }
    };
    Ok((local, serve))
}
