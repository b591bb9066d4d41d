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
use crate::reconcile::EpisodeStatus;
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
    pub heartbeat: Arc<crate::notify::selfpage::Heartbeat>,
    /// What the night report needs besides the store.
    pub report: Arc<crate::bundle::bundler::ReportOptions>,
}

impl AppState {
    /// `None` when the request carries the credential `role` needs; else the 401 to send.
    pub fn authorize(&self, role: Role, headers: &HeaderMap) -> Option<Response> {
        let credentials = self
            .credentials
            .read()
            .map_or_else(|p| p.into_inner().clone(), |c| c.clone());
        let header = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
        if credentials.for_role(role).permits(header) {
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

async fn readyz(State(state): State<AppState>) -> Response {
    if state.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n",
        )
            .into_response();
    }
    let degraded: Vec<String> = [&state.rules_degraded, &state.actions_note]
        .iter()
        .filter_map(|note| note.read().ok().and_then(|n| n.clone()))
        .collect();
    let degraded = (!degraded.is_empty()).then(|| degraded.join("; "));
    match state.store.health() {
        // Ingest works, so the daemon is ready; but say loudly that the rules are not the
        // configured ones.
        Ok(()) => match degraded {
            None => (StatusCode::OK, "ready\n").into_response(),
            Some(reason) => {
                (StatusCode::OK, format!("ready (degraded: {reason})\n")).into_response()
            }
        },
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

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
    let limit = query.limit.unwrap_or(100).clamp(1, 10_000);
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
        std::fs::read(&file)
            .map(Some)
            .map_err(|error| format!("cannot read {}: {error}", file.display()))
    })
    .await;
    match result {
        Ok(Some(bytes)) => {
            let disposition = format!("attachment; filename=\"{id}.tar.gz\"");
            let mut response = (StatusCode::OK, bytes).into_response();
            let headers = response.headers_mut();
            headers.insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/gzip"),
            );
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
    let since = match humantime::parse_duration(query.since.as_deref().unwrap_or("24h")) {
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
        Some(text) => match humantime::parse_duration(text) {
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
    match state.store.set_pause(Some((until, reason.clone()))).await {
        Ok(()) => {
            state.metrics.actions_paused.set(1);
            tracing::warn!(%reason, until, "automatic actions paused");
            let until_text = (until < i64::MAX / 2)
                .then(|| crate::reconcile::canonical_time(crate::clock::millis_to_datetime(until)));
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

/// Accept connections until `shutdown` fires, then let in-flight requests finish (up to
/// `drain`), so that every webhook being committed gets its answer.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    config: Arc<ServerConfig>,
    shutdown: CancellationToken,
    drain: Duration,
) {
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
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(config.max_connections));
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
        let router = router.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        let handshake_timeout = config.tls_handshake_timeout;
        let idle_timeout = config.header_read_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let activity = Arc::new(Activity::new());
            let requests = activity.clone();
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(RemoteAddr(remote));
                    let mut router = router.clone();
                    let busy = requests.begin();
                    async move {
                        let response = router.call(request).await?;
                        // Busy until the answer's body is sent (or dropped).
                        Ok::<_, std::convert::Infallible>(response.map(|body| {
                            axum::body::Body::new(http_body_util::BodyExt::map_frame(
                                body,
                                move |frame| {
                                    let _ = &busy;
                                    frame
                                },
                            ))
                        }))
                    }
                },
            );
            match tls {
                None => {
                    let stream = IdleCutoff::new(stream, activity, idle_timeout);
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    if let Err(error) = watcher.watch(connection.into_owned()).await {
                        tracing::debug!(%remote, %error, "connection ended with an error");
                    }
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(
                        handshake_timeout,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::debug!(%remote, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%remote, "TLS handshake timed out");
                            return;
                        }
                    };
                    let stream = IdleCutoff::new(stream, activity, idle_timeout);
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    if let Err(error) = watcher.watch(connection.into_owned()).await {
                        tracing::debug!(%remote, %error, "connection ended with an error");
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "connections still open after the drain deadline; closing them"
        );
    }
}

/// Largest request head (request line and headers) a connection may send.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Whether a connection has a request in flight, and since when it has had none.
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    /// Milliseconds from `start` to the last time a request began or ended.
    last: std::sync::atomic::AtomicU64,
    start: tokio::time::Instant,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            last: std::sync::atomic::AtomicU64::new(0),
            start: tokio::time::Instant::now(),
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
        self.touch();
        Busy(self.clone())
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

struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0
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
                tracing::debug!(idle = ?this.idle, "idle connection closed");
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
