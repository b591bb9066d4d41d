//! server: the HTTP side of the daemon. This file holds what every endpoint shares (the
//! state, the credential check, JSON errors) and the routes; `listener` accepts and guards
//! connections (with `peers` and `idle`), `api` answers the incident API and `operations` the
//! operational endpoints. The webhook handler itself lives in `ingest`, which builds on this
//! module's state and is handed to [`router`] by the daemon.

mod api;
mod idle;
mod listener;
mod operations;
mod peers;

pub use api::MAX_LIST_LIMIT;
pub use listener::{Serving, load_tls, serve};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use tokio_util::sync::CancellationToken;

use crate::auth::{Credentials, Role};
use crate::clock::SharedClock;
use crate::config::ServerConfig;
use crate::store::Store;
use crate::telemetry::Metrics;

/// What `POST /-/reload` runs: the daemon's reload, passed in as a value so that the server
/// needs nothing of the daemon. Notes on what changed, or every error (nothing applied).
pub type Reload = Arc<dyn Fn(&str) -> Result<Vec<String>, Vec<String>> + Send + Sync>;

/// The peer address of a connection, put into each request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub clock: SharedClock,
    pub server: Arc<ServerConfig>,
    pub credentials: Arc<RwLock<Arc<Credentials>>>,
    pub state_dir: PathBuf,
    pub reloader: Reload,
    pub shutdown: CancellationToken,
    /// Set when the rules in use are not the configured ones (shown by /readyz).
    pub rules_degraded: Arc<RwLock<Option<String>>>,
    /// Set when actions run in dry-run against the configuration (shown by /readyz).
    pub actions_note: Arc<RwLock<Option<String>>>,
    /// The Watchdog heartbeat, fed by ingest.
    pub heartbeat: Arc<crate::page::notify::selfpage::Heartbeat>,
    /// What the night report needs besides the store.
    pub report: Arc<crate::bundle::bundler::ReportOptions>,
}

impl AppState {
    /// The credentials in force (swapped whole by a reload).
    pub fn credentials(&self) -> Arc<Credentials> {
        self.credentials
            .read()
            .map_or_else(|p| p.into_inner().clone(), |c| c.clone())
    }

    /// Whether the request carries the credential `role` needs (or the role is open).
    pub fn permits(&self, role: Role, headers: &HeaderMap) -> bool {
        let header = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
        self.credentials().for_role(role).permits(header)
    }

    /// `None` when the request carries the credential `role` needs; else the 401 to send.
    pub fn authorize(&self, role: Role, headers: &HeaderMap) -> Option<Response> {
        if self.permits(role, headers) {
            return None;
        }
        self.metrics
            .http_unauthorized_total
            .with_label_values(&[role.as_str()])
            .inc();
        Some(unauthorized(role))
    }
}

pub fn json_error(status: StatusCode, error: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": error, "message": message });
    (status, axum::Json(body)).into_response()
}

pub fn unauthorized(role: Role) -> Response {
    let mut response = json_error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        &format!("this endpoint needs the {} credential", role.as_str()),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"nightshift\", Basic realm=\"nightshift\""),
    );
    response
}

/// Every route. `webhook` is `POST /webhook`, built by `ingest` (see `ingest::route`).
pub fn router(state: AppState, webhook: MethodRouter<AppState>) -> Router {
    Router::new()
        .route("/webhook", webhook)
        .route("/healthz", get(operations::healthz))
        .route("/readyz", get(operations::readyz))
        .route("/metrics", get(operations::metrics))
        .route("/api/v1/incidents", get(api::list_incidents))
        .route("/api/v1/incidents/{id}", get(api::show_incident))
        .route("/api/v1/incidents/{id}/bundle", get(api::download_bundle))
        .route("/api/v1/report", get(api::report))
        .route("/-/reload", post(operations::reload))
        .route("/-/pause", post(operations::pause))
        .route("/-/resume", post(operations::resume))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "not found", "no such endpoint")
}
