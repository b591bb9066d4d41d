//! server: the HTTP listener (plain or TLS), connection limits and timeouts, routes, the
//! operational endpoints and the incident API. Ingest itself lives in `ingest`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::auth::{Credentials, Role};
use crate::clock::{Millis, SharedClock};
use crate::config::ServerConfig;
use crate::daemon::Reloader;
use crate::episodes::reconcile::EpisodeStatus;
use crate::store::Store;
use crate::telemetry::Metrics;

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
    pub reloader: Arc<Reloader>,
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

    /// Keep a rejected body for forensics, off the request path. `reservation` (the body's
    /// share of the in-flight budget) is released once the body is written.
    pub fn keep_rejected(
        &self,
        received_at: Millis,
        reason: &'static str,
        body: Bytes,
        reservation: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let dir = self.state_dir.clone();
        let keep = self.store.settings().store.rejected_keep;
        let metrics = self.metrics.clone();
        if keep == 0 {
            return;
        }
        tokio::task::spawn_blocking(move || {
            let _reservation = reservation;
            match crate::ingest::rejected::keep(&dir, received_at, reason, &body, keep) {
                Ok(path) => {
                    metrics.rejected_bodies_kept_total.inc();
                    tracing::debug!(path = %path.display(), "rejected body kept");
                }
                Err(error) => tracing::warn!(%error, "cannot keep rejected body"),
            }
        });
    }
}

pub fn json_error(status: StatusCode, error: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": error, "message": message });
    (status, axum::Json(body)).into_response()
}

/// Run a read of the store (SQLite, blocking) off the async workers: its error is a 503 (the
/// store may be back soon), a task that failed a 500.
async fn read_store<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    read: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(read).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store unavailable",
            &error.to_string(),
        )),
        Err(error) => Err(json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
            &error.to_string(),
        )),
    }
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

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/webhook", post(crate::ingest::handle_webhook))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/incidents", get(list_incidents))
        .route("/api/v1/incidents/{id}", get(show_incident))
        .route("/api/v1/incidents/{id}/bundle", get(download_bundle))
        .route("/api/v1/report", get(report))
        .route("/-/reload", post(reload))
        .route("/-/pause", post(pause))
        .route("/-/resume", post(resume))
        .fallback(not_found)
        .layer(axum::Extension(crate::ingest::InflightBudget::new(
            &state.server,
        )))
        .with_state(state)
}

async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "not found", "no such endpoint")
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready or not for anyone (load balancers, systemd checks); the reasons only for callers with
/// the *read* credential, since error text can name paths, hosts and rules.
async fn readyz(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if state.permits(Role::Read, &headers) {
        return readiness(&state).await.into_response();
    }
    // Load balancers poll this: the answer needs no store read, only the status.
    let ready = !state.shutdown.is_cancelled() && state.store.health().is_ok();
    if ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn readiness(state: &AppState) -> (StatusCode, String) {
    if state.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n".to_owned(),
        );
    }
    let mut degraded: Vec<String> = [&state.rules_degraded, &state.actions_note]
        .iter()
        .filter_map(|note| note.read().ok().and_then(|n| n.clone()))
        .collect();
    // A P1 nothing is configured to page about is a daemon that cannot do its job for it:
    // still ready (ingest works), but said loudly. A store that cannot be read says so below.
    let health = state.store.health();
    let store = state.store.clone();
    if health.is_ok()
        && let Ok(Ok(unpaged)) =
            tokio::task::spawn_blocking(move || store.reader()?.unpaged_p1_incidents()).await
        && let Some(crate::store::UnpagedIncident { why, .. }) = unpaged.first()
    {
        let ids: Vec<&str> = unpaged.iter().map(|u| u.episode_id.as_str()).collect();
        let plural = if unpaged.len() == 1 { "" } else { "s" };
        degraded.push(format!(
            "{} P1 incident{plural} could not be paged: {why} ({})",
            unpaged.len(),
            ids.join(", ")
        ));
    }
    let degraded = (!degraded.is_empty()).then(|| degraded.join("; "));
    match health {
        // Ingest works, so the daemon is ready; but say loudly that the rules are not the
        // configured ones.
        Ok(()) => match degraded {
            None => (StatusCode::OK, "ready\n".to_owned()),
            Some(reason) => (StatusCode::OK, format!("ready (degraded: {reason})\n")),
        },
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if state.credentials().metrics == crate::config::MetricsAccess::Read
        && let Some(response) = state.authorize(Role::Read, &headers)
    {
        return response;
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// The most incidents one list answer holds: each carries its labels and annotations (up to
/// 16 KiB a value), so an unbounded `limit` could build an answer of gigabytes.
pub const MAX_LIST_LIMIT: usize = 1000;

#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
}

async fn list_incidents(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Some(response) = state.authorize(Role::Read, &headers) {
        return response;
    }
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => {
            return json_error(StatusCode::BAD_REQUEST, "bad query", &rejection.body_text());
        }
    };
    let status = match query.status.as_deref() {
        None => None,
        Some(text) => match EpisodeStatus::parse(text) {
            Some(status) => Some(status),
            None => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "bad query",
                    "status must be one of firing, resolved, gone, silenced",
                );
            }
        },
    };
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_LIST_LIMIT);
    let store = state.store.clone();
    match read_store(move || store.reader()?.incidents(status, limit)).await {
        Ok(incidents) => axum::Json(serde_json::json!({ "incidents": incidents })).into_response(),
        Err(response) => response,
    }
}

async fn show_incident(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(response) = state.authorize(Role::Read, &headers) {
        return response;
    }
    let store = state.store.clone();
    let lookup = id.clone();
    match read_store(move || store.reader()?.incident(&lookup)).await {
        Ok(Some(incident)) => axum::Json(incident).into_response(),
        Ok(None) => json_error(
            StatusCode::NOT_FOUND,
            "not found",
            &format!("no incident {id}"),
        ),
        Err(response) => response,
    }
}

/// The incident's bundle as written (`tar.gz`), *read* credential.
async fn download_bundle(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(response) = state.authorize(Role::Read, &headers) {
        return response;
    }
    let store = state.store.clone();
    let state_dir = state.state_dir.clone();
    let lookup = id.clone();
    let result = read_store(move || {
        let row = store.reader().map_err(|e| e.to_string())?.bundle(&lookup);
        let row = row.map_err(|e| e.to_string())?;
        let Some(path) = row
            .filter(|row| matches!(row.state.as_str(), "written" | "final"))
            .and_then(|row| row.path)
        else {
            return Ok(None);
        };
        let file = crate::bundle::bundler::resolve_path(&state_dir, &path)
            .ok_or_else(|| format!("bundle path {path:?} is outside the bundles directory"))?;
        // Opened here, streamed below: an archive can be large, and several downloads at
        // once must not each hold one in memory.
        let opened = std::fs::File::open(&file)
            .map_err(|error| format!("cannot read {}: {error}", file.display()))?;
        let length = opened.metadata().map(|m| m.len()).ok();
        Ok::<_, String>(Some((opened, length)))
    })
    .await;
    match result {
        Ok(Some((file, length))) => {
            let stream = tokio_util::io::ReaderStream::with_capacity(
                tokio::fs::File::from_std(file),
                64 * 1024,
            );
            let disposition = format!("attachment; filename=\"{id}.tar.gz\"");
            let mut response =
                (StatusCode::OK, axum::body::Body::from_stream(stream)).into_response();
            let headers = response.headers_mut();
            headers.insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/gzip"),
            );
            if let Some(length) = length {
                headers.insert(axum::http::header::CONTENT_LENGTH, length.into());
            }
            if let Ok(value) = axum::http::HeaderValue::from_str(&disposition) {
                headers.insert(axum::http::header::CONTENT_DISPOSITION, value);
            }
            response
        }
        Ok(None) => json_error(
            StatusCode::NOT_FOUND,
            "not found",
            &format!("no bundle for incident {id} (yet)"),
        ),
        Err(response) => response,
    }
}

#[derive(Debug, serde::Deserialize)]
struct ReportQuery {
    since: Option<String>,
    format: Option<String>,
}

/// The night in one report, *read* credential: `?since=24h&format=md|json` (JSON default).
async fn report(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<ReportQuery>,
) -> Response {
    if let Some(response) = state.authorize(Role::Read, &headers) {
        return response;
    }
    let since = match crate::duration::parse(query.since.as_deref().unwrap_or("24h")) {
        Ok(since) => since,
        Err(error) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad request",
                &format!("since: {error}"),
            );
        }
    };
    let markdown = match query.format.as_deref() {
        None | Some("json") => false,
        Some("md") => true,
        Some(other) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad request",
                &format!("format {other:?}: expected md or json"),
            );
        }
    };
    let store = state.store.clone();
    let now = state.clock.now_millis();
    let options = state.report.clone();
    let result = read_store(move || {
        let reader = store.reader()?;
        crate::bundle::bundler::report_facts(
            &reader,
            &options,
            now - crate::clock::duration_millis(since),
            now,
        )
    })
    .await;
    match result {
        Ok(facts) if markdown => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/markdown; charset=utf-8",
            )],
            crate::report::markdown(&facts),
        )
            .into_response(),
        Ok(facts) => axum::Json(crate::report::json(&facts)).into_response(),
        Err(response) => response,
    }
}

async fn reload(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(response) = state.authorize(Role::Admin, &headers) {
        return response;
    }
    let reloader = state.reloader.clone();
    match tokio::task::spawn_blocking(move || reloader.reload("http")).await {
        Ok(Ok(notes)) => {
            axum::Json(serde_json::json!({ "status": "reloaded", "notes": notes })).into_response()
        }
        Ok(Err(errors)) => (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({
                "error": "reload failed; the running configuration is kept",
                "errors": errors,
            })),
        )
            .into_response(),
        Err(error) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
            &error.to_string(),
        ),
    }
}

#[derive(Debug, Deserialize)]
struct PauseQuery {
    /// How long, e.g. `30m`; without it, until resumed.
    #[serde(rename = "for")]
    duration: Option<String>,
    reason: Option<String>,
}

/// The kill switch: stop every automatic action (pages still go) until resumed or expired.
async fn pause(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<PauseQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Some(response) = state.authorize(Role::Admin, &headers) {
        return response;
    }
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => {
            return json_error(StatusCode::BAD_REQUEST, "bad query", &rejection.body_text());
        }
    };
    let now = state.clock.now_millis();
    let until = match query.duration.as_deref() {
        None => i64::MAX / 2,
        Some(text) => match crate::duration::parse(text) {
            Ok(duration) => now.saturating_add(crate::clock::duration_millis(duration)),
            Err(error) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "bad query",
                    &format!("for={text:?}: {error}"),
                );
            }
        },
    };
    let reason = query
        .reason
        .unwrap_or_else(|| "paused by an operator".to_owned());
    let pause = crate::store::Pause {
        until,
        reason: reason.clone(),
    };
    match state.store.set_pause(Some(pause)).await {
        Ok(()) => {
            state.metrics.actions_paused.set(1);
            let until_text = (until < i64::MAX / 2).then(|| crate::duration::rfc3339_millis(until));
            let until_shown = until_text
                .as_deref()
                .map_or_else(|| "resumed".to_owned(), |at| at.to_owned());
            tracing::warn!(
                reason = %crate::escape::log_text(&reason),
                "automatic actions paused until {until_shown}"
            );
            axum::Json(
                serde_json::json!({"status": "paused", "until": until_text, "reason": reason}),
            )
            .into_response()
        }
        Err(error) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store unavailable",
            &error.to_string(),
        ),
    }
}

async fn resume(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(response) = state.authorize(Role::Admin, &headers) {
        return response;
    }
    match state.store.set_pause(None).await {
        Ok(()) => {
            state.metrics.actions_paused.set(0);
            tracing::warn!("automatic actions resumed");
            axum::Json(serde_json::json!({"status": "resumed"})).into_response()
        }
        Err(error) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store unavailable",
            &error.to_string(),
        ),
    }
}

/// Load the TLS certificate chain and key, if configured.
pub fn load_tls(config: &ServerConfig) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    let (Some(cert_path), Some(key_path)) = (&config.tls_cert_file, &config.tls_key_file) else {
        return Ok(None);
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("server.tls_cert_file: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "server.tls_cert_file: no certificate in {}",
            cert_path.display()
        ));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| format!("server.tls_key_file: {e}"))?
        .ok_or_else(|| {
            format!(
                "server.tls_key_file: no private key in {}",
                key_path.display()
            )
        })?;
    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("server.tls_cert_file/tls_key_file: {e}"))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls))))
}

/// What [`serve`] needs besides the listener.
pub struct Serving {
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub router: Router,
    pub config: Arc<ServerConfig>,
    pub metrics: Arc<Metrics>,
    /// The credentials in force: only a request carrying one keeps its connection open.
    pub credentials: Arc<RwLock<Arc<Credentials>>>,
}

/// Accept connections until `shutdown` fires, then let in-flight requests finish (up to
/// `drain`), so that every webhook being committed gets its answer.
///
/// Connections are limited three ways: `server.max_connections` at once (lowered to fit the
/// open-file limit, counted in `metrics`); `MAX_UNAUTHENTICATED_PER_PEER` waiting for a first
/// request, per peer address (see there); and a request that carries no valid credential
/// (answered 401, or an open endpoint such as `/healthz`) closes its connection after its
/// answer, so only authenticated requests keep one open.
pub async fn serve(
    listener: TcpListener,
    serving: Serving,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let Serving {
        tls,
        router,
        config,
        metrics,
        credentials,
    } = serving;
    let open_files = open_file_limit();
    let cap = connection_cap(config.max_connections, open_files);
    if cap < config.max_connections {
        tracing::warn!(
            configured = config.max_connections,
            effective = cap,
            open_file_limit = open_files,
            "server.max_connections lowered to leave file descriptors for the store, outgoing \
             clients, bundles and commands; raise the open-file limit (LimitNOFILE) to serve more"
        );
    }
    metrics
        .http_max_connections
        .set(i64::try_from(cap).unwrap_or(i64::MAX));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_headers(100)
        // The request head must fit in this (431 beyond): what a connection that trickles its
        // headers can make the daemon hold. hyper's default, ~400 KiB, let 1024 such
        // connections hold ~400 MB; Alertmanager's headers take well under 1 KiB.
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64)
        .keep_alive_interval(Duration::from_secs(30));
    let listening = Arc::new(Listening {
        tls,
        router,
        builder,
        handshake_timeout: config.tls_handshake_timeout,
        idle_timeout: config.header_read_timeout,
        closing: CancellationToken::new(),
        credentials,
        unauthorized: std::sync::Mutex::new(EveryMinute::default()),
    });
    // Each connection task holds a watcher until it ends, so that `graceful.shutdown()` waits
    // for them all; the signal to close goes through `listening.closing`.
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(cap));
    let peers = Arc::new(PeerGate::new(MAX_UNAUTHENTICATED_PER_PEER, metrics));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Running out of file descriptors must not spin the loop.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let accepted = Accepted {
            stream,
            remote,
            unauthenticated: peers.admit(remote.ip()),
            _slot: permit,
            _watcher: graceful.watcher(),
        };
        tokio::spawn(serve_connection(listening.clone(), accepted));
    }
    drop(listener);
    listening.closing.cancel();
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            drain = %crate::duration::Shown(drain),
            "connections still open after the drain deadline; closing them"
        );
    }
}

/// Connections from one peer address that may wait for their first request (idle, trickling
/// their headers, in the TLS handshake) as long as `server.header_read_timeout`. Beyond it, a
/// new connection from that peer is on probation: closed unless its first request begins
/// within `PROBATION`. Without it, one client could take every `max_connections` slot with
/// connections that never authenticate; with probation rather than refusal, a burst of fresh
/// connections that each send their request at once (Alertmanager flushing many groups
/// together, perhaps through one load balancer) still gets in.
const MAX_UNAUTHENTICATED_PER_PEER: usize = 64;

/// How long a connection on probation has for its TLS handshake and its first request. Far
/// more than a client that sends its request at once needs; a peer would have to open some
/// 2,000 connections a second to hold the slots of a 1,024 cap this way, which is a flood for
/// the firewall.
const PROBATION: Duration = Duration::from_millis(500);

/// File descriptors kept out of the connections' reach, for the store, outgoing clients,
/// bundles and the commands `exec` runs: a quarter of the open-file limit, at least this many
/// (but never more than half of the limit).
const RESERVED_DESCRIPTORS: u64 = 256;

/// `configured`, lowered to leave `RESERVED_DESCRIPTORS` of the open-file limit free: a
/// connection is a descriptor, and running out of them fails commits, probes and pages, not
/// just accepts.
fn connection_cap(configured: usize, open_file_limit: Option<u64>) -> usize {
    let configured = configured.min(u32::MAX as usize);
    let Some(limit) = open_file_limit else {
        return configured;
    };
    let reserve = (limit / 4).max(RESERVED_DESCRIPTORS).min(limit / 2);
    let available = usize::try_from(limit - reserve).unwrap_or(usize::MAX);
    configured.min(available).max(1)
}

/// The soft RLIMIT_NOFILE; `None` when unlimited or unknown.
fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes to the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// What every connection of one listener shares.
struct Listening {
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    builder: auto::Builder<TokioExecutor>,
    handshake_timeout: Duration,
    /// `server.header_read_timeout`: how long a connection may go without a request.
    idle_timeout: Duration,
    /// Cancelled at shutdown: each connection finishes what it has in flight, then closes.
    closing: CancellationToken,
    credentials: Arc<RwLock<Arc<Credentials>>>,
    /// Requests answered 401, logged with the peer: the first at once, then once a minute
    /// with the count (an Alertmanager holding the wrong token shows in the journal).
    unauthorized: std::sync::Mutex<EveryMinute>,
}

/// An accepted connection and what it holds until it ends.
struct Accepted {
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    unauthenticated: Unauthenticated,
    _slot: tokio::sync::OwnedSemaphorePermit,
    _watcher: hyper_util::server::graceful::Watcher,
}

/// Serve one connection until the client leaves, it idles past the timeout, a request on it is
/// answered 401, or the server shuts down.
async fn serve_connection(listening: Arc<Listening>, accepted: Accepted) {
    let Accepted {
        stream,
        remote,
        unauthenticated,
        _slot,
        _watcher,
    } = accepted;
    // Also cancelled by a 401 over HTTP/2, which has no `Connection: close`.
    let closing = listening.closing.child_token();
    let accepted_at = tokio::time::Instant::now();
    let probation = unauthenticated
        .on_probation
        .then_some(accepted_at + PROBATION);
    let activity = Arc::new(Activity::new(unauthenticated));
    let stream = match &listening.tls {
        None => tokio_util::either::Either::Left(stream),
        Some(acceptor) => {
            let deadline = accepted_at + listening.handshake_timeout;
            let deadline = probation.map_or(deadline, |probation| probation.min(deadline));
            let handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream));
            let handshake = tokio::select! {
                _ = closing.cancelled() => return,
                handshake = handshake => handshake,
            };
            match handshake {
                Ok(Ok(stream)) => tokio_util::either::Either::Right(stream),
                Ok(Err(error)) => {
                    tracing::debug!(%remote, %error, "TLS handshake failed");
                    return;
                }
                Err(_) if activity.refuse_on_probation() => {
                    tracing::debug!(%remote, "TLS handshake over the peer's limit cut");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    let service = {
        let activity = activity.clone();
        let closing = closing.clone();
        let router = listening.router.clone();
        let credentials = listening.credentials.clone();
        let listening = listening.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(RemoteAddr(remote));
            let method = request.method().as_str().to_owned();
            let path = request.uri().path().to_owned();
            let listening = listening.clone();
            let http1 = request.version() < axum::http::Version::HTTP_2;
            let authenticated = credentials
                .read()
                .map_or_else(|p| p.into_inner().clone(), |c| c.clone())
                .any_permits(
                    request
                        .headers()
                        .get(header::AUTHORIZATION)
                        .map(|v| v.as_bytes()),
                );
            let mut router = router.clone();
            let mut busy = activity.begin();
            let closing = closing.clone();
            async move {
                let mut response = router.call(request).await?;
                if response.status() == StatusCode::UNAUTHORIZED
                    && let Some(refused) = listening
                        .unauthorized
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .count()
                {
                    tracing::warn!(
                        peer = %remote,
                        method,
                        path,
                        refused,
                        "request refused: missing or wrong credential (401)"
                    );
                }
                if !authenticated || response.status() == StatusCode::UNAUTHORIZED {
                    // Only requests that carry a credential may keep a connection (and its
                    // slot): a client must not hold one with a stream of cheap refusals, nor
                    // of health checks.
                    busy.mark_refused();
                    if http1 {
                        response.headers_mut().insert(
                            header::CONNECTION,
                            header::HeaderValue::from_static("close"),
                        );
                    } else {
                        // GOAWAY: the streams in flight finish, no new ones are taken.
                        closing.cancel();
                    }
                }
                // Busy until the answer's body is sent (or dropped).
                Ok::<_, std::convert::Infallible>(response.map(|body| {
                    axum::body::Body::new(http_body_util::BodyExt::map_frame(body, move |frame| {
                        let _ = &busy;
                        frame
                    }))
                }))
            }
        })
    };
    let stream = IdleCutoff::new(stream, activity.clone(), listening.idle_timeout);
    let connection = listening
        .builder
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let mut on_probation = probation.is_some();
    let mut probation = std::pin::pin!(tokio::time::sleep_until(probation.unwrap_or(accepted_at)));
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break result,
            _ = closing.cancelled() => {
                connection.as_mut().graceful_shutdown();
                break connection.await;
            }
            _ = probation.as_mut(), if on_probation => {
                on_probation = false;
                if activity.refuse_on_probation() {
                    // Dropped: it never sent a request, so nothing is cut short.
                    tracing::debug!(%remote, "connection over its peer's limit closed");
                    return;
                }
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(%remote, %error, "connection ended with an error");
    }
}

/// Connections waiting for their first request, per peer (see `MAX_UNAUTHENTICATED_PER_PEER`).
struct PeerGate {
    limit: usize,
    counts: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    metrics: Arc<Metrics>,
    refusals: std::sync::Mutex<EveryMinute>,
}

impl PeerGate {
    fn new(limit: usize, metrics: Arc<Metrics>) -> PeerGate {
        PeerGate {
            limit,
            counts: std::sync::Mutex::new(std::collections::HashMap::new()),
            metrics,
            refusals: std::sync::Mutex::new(EveryMinute::default()),
        }
    }

    /// Count a new connection from `address`; on probation if its peer was at the limit.
    fn admit(self: &Arc<Self>, address: std::net::IpAddr) -> Unauthenticated {
        let peer = peer_key(address);
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(peer).or_insert(0);
        let on_probation = *count >= self.limit;
        *count += 1;
        Unauthenticated {
            gate: self.clone(),
            peer,
            on_probation,
        }
    }

    /// A connection from `peer` closed for being over the limit: counted, and logged at most
    /// once a minute.
    fn refused(&self, peer: std::net::IpAddr) {
        self.metrics
            .http_connections_refused_total
            .with_label_values(&["unauthenticated_per_peer"])
            .inc();
        let due = self
            .refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .count();
        if let Some(refused) = due {
            tracing::warn!(
                %peer,
                refused,
                limit = self.limit,
                "connections closed: the peer holds too many connections waiting for a first request"
            );
        }
    }

    #[cfg(test)]
    fn count(&self, address: std::net::IpAddr) -> usize {
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.get(&peer_key(address)).copied().unwrap_or(0)
    }
}

/// The address a connection is counted under: IPv4 (also mapped into IPv6) as is, IPv6 by its
/// /64, which one host usually holds whole.
fn peer_key(address: std::net::IpAddr) -> std::net::IpAddr {
    match address.to_canonical() {
        std::net::IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !(u128::from(u64::MAX));
            std::net::IpAddr::V6(std::net::Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// A connection's place in its peer's count; given up when its first request begins or when it
/// closes.
struct Unauthenticated {
    gate: Arc<PeerGate>,
    peer: std::net::IpAddr,
    /// Admitted over the limit: closed rather than waited on.
    on_probation: bool,
}

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        let mut counts = self
            .gate
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.peer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.peer);
            }
        }
    }
}

/// A refusal that is logged the first time at once, then at most once a minute with how many
/// there were since: enough to see who is knocking, never a log flood.
#[derive(Default)]
struct EveryMinute {
    last: Option<tokio::time::Instant>,
    since: u64,
}

impl EveryMinute {
    const INTERVAL: Duration = Duration::from_secs(60);

    /// Count one; `Some(count since the last line)` when a line is due now.
    fn count(&mut self) -> Option<u64> {
        self.since += 1;
        let now = tokio::time::Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < Self::INTERVAL)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.since))
    }
}

/// Largest request head (request line and headers) a connection may send.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Whether a connection has a request in flight, and since when it has had none.
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    /// Milliseconds from `start` to the last sign of life: the stream's start (after TLS), or
    /// the end of a request that was not refused (401).
    last: std::sync::atomic::AtomicU64,
    start: tokio::time::Instant,
    /// The connection's place in its peer's count until its first request begins. (A request
    /// answered 401 closes the connection, so one that stays open has passed.)
    unauthenticated: std::sync::Mutex<Option<Unauthenticated>>,
}

impl Activity {
    fn new(unauthenticated: Unauthenticated) -> Activity {
        Activity {
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            last: std::sync::atomic::AtomicU64::new(0),
            start: tokio::time::Instant::now(),
            unauthenticated: std::sync::Mutex::new(Some(unauthenticated)),
        }
    }

    fn touch(&self) {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last
            .store(elapsed, std::sync::atomic::Ordering::Relaxed);
    }

    /// A request began; it ends when the guard is dropped.
    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        drop(
            self.unauthenticated
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        Busy {
            activity: self.clone(),
            refused: false,
        }
    }

    /// Whether to close the connection now that its probation is over: it came in over its
    /// peer's limit and has not sent a request (recorded as a refusal).
    fn refuse_on_probation(&self) -> bool {
        let mut unauthenticated = self
            .unauthenticated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match unauthenticated.take_if(|slot| slot.on_probation) {
            Some(slot) => {
                slot.gate.refused(slot.peer);
                true
            }
            None => false,
        }
    }

    /// When the connection will have been idle for `idle`, or `None` while a request is in
    /// flight.
    fn idle_deadline(&self, idle: Duration) -> Option<tokio::time::Instant> {
        if self.in_flight.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            return None;
        }
        let last = self.last.load(std::sync::atomic::Ordering::Relaxed);
        Some(self.start + Duration::from_millis(last) + idle)
    }
}

/// A request in flight on a connection.
struct Busy {
    activity: Arc<Activity>,
    /// Answered 401: its end does not count as activity.
    refused: bool,
}

impl Busy {
    fn mark_refused(&mut self) {
        self.refused = true;
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if !self.refused {
            self.activity.touch();
        }
        self.activity
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A connection's stream that reads as closed once the connection has had no request in flight
/// for `idle` (`server.header_read_timeout`). hyper's own header timeout covers HTTP/1 only once
/// it knows the connection is HTTP/1: a client that connected and sent nothing (or half the
/// HTTP/2 preface), or an HTTP/2 client idling between requests, held its `max_connections`
/// slot for ever, and 32 such connections shut everyone out.
struct IdleCutoff<I> {
    inner: I,
    activity: Arc<Activity>,
    idle: Duration,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    cut: bool,
}

impl<I> IdleCutoff<I> {
    fn new(inner: I, activity: Arc<Activity>, idle: Duration) -> IdleCutoff<I> {
        // Counted from now: after the TLS handshake, if any.
        activity.touch();
        let timer = Box::pin(tokio::time::sleep(idle));
        IdleCutoff {
            inner,
            activity,
            idle,
            timer,
            cut: false,
        }
    }

    /// Whether the idle time is over; otherwise the timer will wake the reader when it may be.
    fn expired(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        use std::future::Future;
        loop {
            let now = tokio::time::Instant::now();
            let deadline = match self.activity.idle_deadline(self.idle) {
                Some(deadline) if deadline <= now => return true,
                Some(deadline) => deadline,
                // Look again later: the request may end meanwhile.
                None => now + self.idle,
            };
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
        }
    }
}

impl<I: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for IdleCutoff<I> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.cut {
            return std::task::Poll::Ready(Ok(()));
        }
        match std::pin::Pin::new(&mut this.inner).poll_read(cx, buf) {
            std::task::Poll::Pending if this.expired(cx) => {
                // End of stream: the protocol closes the connection as if the client had.
                this.cut = true;
                tracing::debug!(idle = %crate::duration::Shown(this.idle), "idle connection closed");
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for IdleCutoff<I> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn the_connection_cap_leaves_descriptors_free() {
        // (configured, soft open-file limit, effective cap)
        let cases = [
            (1024, None, 1024),
            (1024, Some(u64::MAX), 1024),
            (1024, Some(65536), 1024),
            (100_000, Some(65536), 49152),
            (1024, Some(1024), 768),
            (1024, Some(4096), 1024),
            (4096, Some(4096), 3072),
            (1024, Some(300), 150),
            (1024, Some(1), 1),
            (usize::MAX, None, u32::MAX as usize),
        ];
        for (configured, limit, expected) in cases {
            assert_eq!(
                connection_cap(configured, limit),
                expected,
                "{configured} with {limit:?}"
            );
        }
    }

    #[test]
    fn peers_are_counted_by_address_and_ipv6_by_64() {
        let cases = [
            ("127.0.0.1", "127.0.0.1"),
            ("::ffff:10.1.2.3", "10.1.2.3"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::"),
            ("2001:db8:1:2:ffff::1", "2001:db8:1:2::"),
            ("::1", "::"),
        ];
        for (address, key) in cases {
            let address: IpAddr = address.parse().unwrap();
            assert_eq!(
                peer_key(address),
                key.parse::<IpAddr>().unwrap(),
                "{address}"
            );
        }
    }

    #[test]
    fn a_peer_gets_its_limit_then_probation_and_each_place_comes_back() {
        let gate = Arc::new(PeerGate::new(2, Arc::new(Metrics::new())));
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let first = gate.admit(one);
        let second = gate.admit(one);
        let third = gate.admit(one);
        assert_eq!(
            [first.on_probation, second.on_probation, third.on_probation],
            [false, false, true]
        );
        let from_other = gate.admit(other);
        assert!(!from_other.on_probation, "another peer is not affected");
        drop((first, third));
        let fourth = gate.admit(one);
        assert!(!fourth.on_probation, "places came back");
        drop((second, fourth, from_other));
        assert_eq!(gate.count(one), 0);
        assert!(
            gate.counts.lock().unwrap().is_empty(),
            "no entry left behind"
        );
    }

    /// A server on 127.0.0.1:0 answering `/` with 200 and `/secret` with 401.
    async fn start(
        metrics: Arc<Metrics>,
        max_connections: usize,
    ) -> (SocketAddr, CancellationToken) {
        let router = Router::new()
            .route("/", get(|| async { "ok" }))
            .route("/secret", get(|| async { StatusCode::UNAUTHORIZED }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let config = Arc::new(ServerConfig {
            max_connections,
            // Long: nothing in these tests may be cut by the idle timeout.
            header_read_timeout: Duration::from_secs(120),
            ..ServerConfig::default()
        });
        let shutdown = CancellationToken::new();
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "t\n").unwrap();
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let config_auth = crate::config::AuthConfig {
            read_token_file: Some(token),
            ..crate::config::AuthConfig::default()
        };
        let (credentials, _) =
            Credentials::load(&config_auth, crate::auth::Missing::CheckOnly).unwrap();
        let serving = Serving {
            tls: None,
            router,
            config,
            metrics,
            credentials: Arc::new(RwLock::new(Arc::new(credentials))),
        };
        tokio::spawn(serve(
            listener,
            serving,
            shutdown.clone(),
            Duration::from_secs(5),
        ));
        (address, shutdown)
    }

    /// Everything the server sends until it closes the connection; `None` if it has not closed
    /// within 20 s.
    async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> Option<String> {
        let mut received = Vec::new();
        let read = stream.read_to_end(&mut received);
        match tokio::time::timeout(Duration::from_secs(20), read).await {
            Ok(_) => Some(String::from_utf8_lossy(&received).into_owned()),
            Err(_) => None,
        }
    }

    /// Send a keep-alive request with the credential and read its answer's status line.
    async fn status_line(stream: &mut tokio::net::TcpStream) -> String {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn over_its_limit_a_peer_is_served_only_if_its_request_comes_at_once() {
        let limit = MAX_UNAUTHENTICATED_PER_PEER;
        let metrics = Arc::new(Metrics::new());
        // One slot more than the limit, taken by a connection that has made a request.
        let (address, shutdown) = start(metrics.clone(), limit + 1).await;
        let refused = metrics
            .http_connections_refused_total
            .with_label_values(&["unauthenticated_per_peer"]);
        let mut passed = tokio::net::TcpStream::connect(address).await.unwrap();
        assert_eq!(status_line(&mut passed).await, "HTTP/1.1 200");
        let mut silent = Vec::new();
        for _ in 0..limit {
            silent.push(tokio::net::TcpStream::connect(address).await.unwrap());
        }
        // These two wait in the backlog; the first sends its request meanwhile.
        let mut ready = tokio::net::TcpStream::connect(address).await.unwrap();
        ready
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut waiting = tokio::net::TcpStream::connect(address).await.unwrap();
        // Slots free up: each is taken on probation, the peer being at its limit.
        drop(passed);
        let answer = read_until_closed(&mut ready)
            .await
            .expect("served, then closed");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(read_until_closed(&mut waiting).await.as_deref(), Some(""));
        assert_eq!(refused.get(), 1);
        // A request gives a connection's place back: the next one is admitted as usual.
        assert_eq!(status_line(&mut silent[0]).await, "HTTP/1.1 200");
        drop(silent.pop());
        let mut next = tokio::net::TcpStream::connect(address).await.unwrap();
        assert_eq!(status_line(&mut next).await, "HTTP/1.1 200");
        assert_eq!(refused.get(), 1);
        assert_eq!(metrics.http_max_connections.get(), (limit + 1) as i64);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_401_closes_the_connection() {
        let (address, shutdown) = start(Arc::new(Metrics::new()), 16).await;
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        // Keep-alive, and a second request right behind: only the first is answered.
        stream
            .write_all(b"GET /secret HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_until_closed(&mut stream).await.expect("closed");
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        assert!(answer.contains("connection: close\r\n"), "{answer}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
        // So does any answer to a request without a credential, a 200 included: cheap open
        // requests (health checks) cannot hold a connection either.
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_until_closed(&mut stream).await.expect("closed");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("connection: close\r\n"), "{answer}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
        // With the credential the connection stays open for the next request.
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        assert_eq!(status_line(&mut stream).await, "HTTP/1.1 200");
        // The rest of the first answer, up to its body ("ok").
        let mut rest = Vec::new();
        while !rest.ends_with(b"\r\n\r\nok") {
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut byte));
            assert_eq!(
                read.await.unwrap().unwrap(),
                1,
                "closed after an authenticated request"
            );
            rest.push(byte[0]);
        }
        assert_eq!(status_line(&mut stream).await, "HTTP/1.1 200");
        shutdown.cancel();
    }
}
