//! The HTTP endpoint: `/metrics` (OpenMetrics text), `/healthz` (the process answers) and
//! `/readyz` (a policy is applied and exfw filters every configured interface).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Router, extract::State, http::StatusCode, http::header, response::IntoResponse, routing::get,
};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::{links::InterfaceState, metrics, state::Shared};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The metrics registry.
    pub registry: Arc<Registry>,
    /// Set once the policy is applied; cleared when the daemon stops.
    pub ready: Arc<AtomicBool>,
    /// The daemon's state, for the interfaces.
    pub shared: Arc<Shared>,
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    // Reading the maps is a handful of syscalls; keep it off the async workers anyway.
    let registry = state.registry.clone();
    match tokio::task::spawn_blocking(move || metrics::render(&registry)).await {
        Ok(Ok(body)) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "reading the kernel counters failed; see the exfw log\n",
        )
            .into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if !state.ready.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the policy is not applied\n".to_string(),
        );
    }
    let unfiltered: Vec<String> = state
        .shared
        .interfaces
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|s| !matches!(s.state, InterfaceState::Attached(_)))
        .map(|s| format!("{} {}", s.name, s.state.name()))
        .collect();
    if unfiltered.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: unfiltered interfaces: {}\n",
                unfiltered.join(", ")
            ),
        )
    }
}

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Binds the listener (done before anything changes, so a taken port fails the start cleanly).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, state: AppState) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}
