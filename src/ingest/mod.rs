//! ingest: `POST /webhook`. Authenticate, bound, parse, journal durably, and only then answer.
//!
//! Answers follow Alertmanager's retry rules (protocols.md §1.7): 200 once the notification is
//! on disk; 4xx only for input that can never succeed (wrong credential, invalid body), since
//! Alertmanager gives up on a 4xx; 503 for everything that may pass later (queue full, backlog,
//! store failure), since Alertmanager retries 5xx.

pub mod alertmanager;
pub mod rejected;
pub mod webhook;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::Role;
use crate::clock::Millis;
use crate::server::{AppState, RemoteAddr, json_error};
use crate::store::{IngestRecord, Prepared, Rejected, WriteError};

/// Outcome labels for `nightshift_webhook_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Accepted,
    Unauthorized,
    BadRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    Timeout,
    Overloaded,
    StoreUnavailable,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Unauthorized => "unauthorized",
            Outcome::BadRequest => "bad_request",
            Outcome::PayloadTooLarge => "payload_too_large",
            Outcome::UnsupportedMediaType => "unsupported_media_type",
            Outcome::Timeout => "timeout",
            Outcome::Overloaded => "overloaded",
            Outcome::StoreUnavailable => "store_unavailable",
        }
    }
}

/// The webhook body bytes all requests may hold at once (`server.max_inflight_body_bytes`):
/// without it, memory would be `max_connections x max_body_bytes`. A request reserves its
/// bytes as they arrive (all of a declared Content-Length up front) and keeps them until it is
/// answered; one that does not fit is answered 503 with Retry-After, which Alertmanager retries.
///
/// Parsing gets its own, narrower gate, since a parsed body takes up to ~12 times its size (a
/// map entry per label): bodies of 1 MiB or more are parsed one at a time, smaller ones up to
/// 1 MiB at once in a lane of their own (so that a normal webhook never waits behind a large
/// one), off the async workers.
#[derive(Clone)]
pub struct InflightBudget {
    permits: Arc<Semaphore>,
    bytes: u64,
    parse_large: Arc<Semaphore>,
    parse_small: Arc<Semaphore>,
}

/// From this size on, a body is parsed in the one-at-a-time lane, and the memory its parse
/// freed is given back (see `release_freed_memory`).
const LARGE_BODY: usize = 1 << 20;

impl InflightBudget {
    /// Never below `max_body_bytes`, so that a body within the limit always fits eventually.
    pub fn new(config: &crate::config::ServerConfig) -> InflightBudget {
        let bytes = config
            .max_inflight_body_bytes
            .max(config.max_body_bytes)
            .min(Semaphore::MAX_PERMITS as u64);
        InflightBudget {
            permits: Arc::new(Semaphore::new(bytes as usize)),
            bytes,
            parse_large: Arc::new(Semaphore::new(1)),
            parse_small: Arc::new(Semaphore::new(LARGE_BODY)),
        }
    }

    /// Parse and check a body on the blocking pool, within the parse gate, and hash it there
    /// too (the journal's key for the body): the writer thread does neither.
    async fn parse(
        &self,
        body: Bytes,
    ) -> Result<(webhook::Notification, [u8; 32]), webhook::PayloadError> {
        // The semaphores are never closed. The turn goes with the parse, which runs to its end
        // even if the client leaves meanwhile.
        let turn = if body.len() >= LARGE_BODY {
            self.parse_large.clone().acquire_owned().await
        } else {
            // Below LARGE_BODY (a u32), within the lane's capacity.
            let weight = body.len().max(1) as u32;
            self.parse_small.clone().acquire_many_owned(weight).await
        };
        let parsed = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let parsed = webhook::parse(&body).and_then(within_caps);
            if parsed.is_err() {
                release_freed_memory(body.len());
            }
            parsed.map(|notification| (notification, crate::store::payload_hash(&body)))
        })
        .await;
        parsed.unwrap_or_else(|error| {
            // A parser bug; the body is kept with the other rejected ones to reproduce it.
            tracing::error!(%error, "the webhook parser failed");
            Err(webhook::PayloadError {
                path: ".".to_owned(),
                message: format!("the body could not be parsed: {error}"),
                reason: "invalid_json",
            })
        })
    }

    /// Add `bytes` to `held`, or `false` when the budget has no room for them now.
    fn reserve(&self, held: &mut Option<OwnedSemaphorePermit>, bytes: u64) -> bool {
        if bytes == 0 {
            return true;
        }
        let Ok(count) = u32::try_from(bytes) else {
            return false;
        };
        match self.permits.clone().try_acquire_many_owned(count) {
            Ok(permit) => {
                match held {
                    Some(held) => held.merge(permit),
                    None => *held = Some(permit),
                }
                true
            }
            Err(_) => false,
        }
    }
}

/// `POST /webhook` for [`crate::server::router`], with the in-flight body budget it shares.
pub fn route(config: &crate::config::ServerConfig) -> MethodRouter<AppState> {
    post(handle_webhook).layer(Extension(InflightBudget::new(config)))
}

pub async fn handle_webhook(
    State(state): State<AppState>,
    Extension(budget): Extension<InflightBudget>,
    remote: Option<axum::Extension<RemoteAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let remote = remote.map_or_else(String::new, |r| r.0.0.to_string());
    let (outcome, response) = ingest(&state, &budget, &remote, &headers, body).await;
    let metrics = &state.metrics;
    metrics
        .webhook_requests_total
        .with_label_values(&[outcome.label()])
        .inc();
    metrics
        .webhook_request_duration_seconds
        .with_label_values(&[outcome.label()])
        .observe(started.elapsed().as_secs_f64());
    response
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// Labels, and separately annotations, one alert may carry. Alertmanager never sends anything
/// near this (a Prometheus alert has tens of labels); the cap keeps a hostile body from becoming
/// one alert with a million labels that every later step (reconcile, rules, the incident API)
/// would carry: such an alert, within the body limit, took the daemon to ~1 GB. The body limit
/// bounds the number of alerts.
pub const MAX_LABELS_PER_ALERT: usize = 1000;

/// Refuse (400, like an invalid body: it can never succeed) a notification over the caps.
fn within_caps(
    notification: webhook::Notification,
) -> Result<webhook::Notification, webhook::PayloadError> {
    let over = |path: String, what: &str, count: usize| webhook::PayloadError {
        path,
        message: format!("{count} {what}; at most {MAX_LABELS_PER_ALERT} are accepted"),
        reason: "too_many_labels",
    };
    if notification.group_labels.len() > MAX_LABELS_PER_ALERT {
        let count = notification.group_labels.len();
        return Err(over("groupLabels".to_owned(), "group labels", count));
    }
    for (index, alert) in notification.alerts.iter().enumerate() {
        if alert.labels.len() > MAX_LABELS_PER_ALERT {
            let path = format!("alerts[{index}].labels");
            return Err(over(path, "labels", alert.labels.len()));
        }
        if alert.annotations.len() > MAX_LABELS_PER_ALERT {
            let path = format!("alerts[{index}].annotations");
            return Err(over(path, "annotations", alert.annotations.len()));
        }
    }
    Ok(notification)
}

/// Count each value that was cut, and say so once per notification: which alert and which
/// name, never the value (it may be what the cap keeps out of the logs).
fn report_truncated(state: &AppState, remote: &str, truncated: &[webhook::TruncatedValue]) {
    let Some(first) = truncated.first() else {
        return;
    };
    for value in truncated {
        state
            .metrics
            .webhook_values_truncated_total
            .with_label_values(&[value.kind.as_str()])
            .inc();
    }
    tracing::warn!(
        remote,
        values = truncated.len(),
        alertname = %first.alertname,
        kind = first.kind.as_str(),
        name = %first.name,
        bytes = first.bytes,
        limit = webhook::MAX_VALUE_BYTES,
        "webhook values over the size limit were truncated; the notification is accepted"
    );
}

/// glibc keeps freed memory in per-thread arenas: each large body parsed on another thread
/// would leave its ~12x-size peak resident for good, arena after arena (six 8 MiB bodies took
/// the daemon from 40 to 390 MB). After a large body, give the freed memory back.
fn release_freed_memory(body_len: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if body_len >= LARGE_BODY {
        // SAFETY: malloc_trim only returns free pages to the kernel; it touches no live memory.
        unsafe {
            libc::malloc_trim(0);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = body_len;
}

/// Why a body could not be read whole.
enum BodyError {
    TooLarge,
    OverBudget,
    Unreadable(String),
}

/// Read the body within `limit` bytes, reserving them from `budget` as they arrive.
async fn read_body(
    body: Body,
    limit: u64,
    declared: Option<u64>,
    budget: &InflightBudget,
    held: &mut Option<OwnedSemaphorePermit>,
) -> Result<Bytes, BodyError> {
    let capacity = declared.unwrap_or(0).min(limit);
    if !budget.reserve(held, capacity) {
        return Err(BodyError::OverBudget);
    }
    let mut buffer = BytesMut::with_capacity(usize::try_from(capacity).unwrap_or(0));
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| BodyError::Unreadable(error.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let total = buffer.len() as u64 + data.len() as u64;
        if total > limit {
            return Err(BodyError::TooLarge);
        }
        let reserved = held.as_ref().map_or(0, |p| p.num_permits() as u64);
        if total > reserved && !budget.reserve(held, total - reserved) {
            return Err(BodyError::OverBudget);
        }
        buffer.extend_from_slice(&data);
    }
    Ok(buffer.freeze())
}

async fn ingest(
    state: &AppState,
    budget: &InflightBudget,
    remote: &str,
    headers: &HeaderMap,
    body: Body,
) -> (Outcome, Response) {
    if let Some(response) = state.authorize(Role::Ingest, headers) {
        return (Outcome::Unauthorized, response);
    }
    if !is_json(headers) {
        let response = json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported media type",
            "the webhook body must be sent as Content-Type: application/json",
        );
        return (Outcome::UnsupportedMediaType, response);
    }
    let limit = state.server.max_body_bytes;
    let too_large = || {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload too large",
            &format!("the body limit is {limit} bytes (server.max_body_bytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return (Outcome::PayloadTooLarge, too_large());
    }
    // Held until the answer: the body, its parse, and its wait for the commit all count.
    let mut held = None;
    let read = read_body(body, limit, declared, budget, &mut held);
    let bytes = match tokio::time::timeout(state.server.body_read_timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Err(_) => {
            let response = json_error(
                StatusCode::REQUEST_TIMEOUT,
                "request timeout",
                "the body was not received within server.body_read_timeout",
            );
            return (Outcome::Timeout, response);
        }
        Ok(Err(BodyError::TooLarge)) => return (Outcome::PayloadTooLarge, too_large()),
        Ok(Err(BodyError::OverBudget)) => {
            tracing::warn!(
                remote,
                budget = budget.bytes,
                "webhook refused with 503: too many body bytes in flight; Alertmanager will retry"
            );
            let response = unavailable(
                "overloaded",
                &format!(
                    "webhook bodies in flight exceed server.max_inflight_body_bytes ({} bytes); retry later",
                    budget.bytes
                ),
            );
            return (Outcome::Overloaded, response);
        }
        Ok(Err(BodyError::Unreadable(error))) => {
            let response = json_error(
                StatusCode::BAD_REQUEST,
                "unreadable body",
                &format!("the request body could not be read: {error}"),
            );
            return (Outcome::BadRequest, response);
        }
    };
    let received_at = state.clock.now_millis();
    let (notification, hash) = match budget.parse(bytes.clone()).await {
        Ok(parsed) => parsed,
        Err(error) => {
            state
                .metrics
                .webhook_rejected_total
                .with_label_values(&[error.reason])
                .inc();
            tracing::warn!(remote, path = %error.path, message = %error.message, "webhook rejected");
            // The body stays counted in the budget until it is written out.
            keep_rejected(state, received_at, error.reason, bytes, held);
            let body = serde_json::json!({
                "error": "invalid webhook payload",
                "path": error.path,
                "message": error.message,
            });
            return (
                Outcome::BadRequest,
                (StatusCode::BAD_REQUEST, axum::Json(body)).into_response(),
            );
        }
    };
    report_truncated(state, remote, &notification.truncated_values);
    // A sign of life of the alerting pipeline, whether or not the store can keep it.
    state.heartbeat.observe(&notification, received_at);
    // The parse goes to the writer, which reconciles from it instead of parsing the body
    // again. Not a large body's: its parse (several times the body's size) must not wait for
    // the commit with it, and reconcile parses it from the store.
    let alert_count = notification.alerts.len();
    let group_key = notification.group_key.clone();
    let prepared = if bytes.len() < LARGE_BODY {
        Prepared {
            hash,
            notification: Some(Arc::new(notification)),
        }
    } else {
        drop(notification);
        release_freed_memory(bytes.len());
        Prepared {
            hash,
            notification: None,
        }
    };
    let record = IngestRecord {
        received_at,
        remote: remote.to_owned(),
        group_key,
        alert_count,
        body: bytes,
    };
    let receiver = match state.store.try_submit_prepared(record, prepared) {
        Ok(receiver) => receiver,
        Err(rejected) => {
            let reason = match rejected {
                Rejected::QueueFull | Rejected::Backlog => "overloaded",
                Rejected::Stopped => "shutting down",
            };
            tracing::warn!(remote, %rejected, "webhook refused with 503; Alertmanager will retry");
            let response = unavailable(reason, &rejected.to_string());
            return (Outcome::Overloaded, response);
        }
    };
    match receiver.await {
        Ok(Ok(id)) => {
            state
                .metrics
                .webhook_alerts_total
                .inc_by(alert_count as u64);
            let body = serde_json::json!({ "status": "stored", "notification": id });
            (
                Outcome::Accepted,
                (StatusCode::OK, axum::Json(body)).into_response(),
            )
        }
        Ok(Err(error)) => (Outcome::StoreUnavailable, store_failed(&error)),
        Err(_) => (
            Outcome::StoreUnavailable,
            unavailable("store unavailable", "the store writer stopped"),
        ),
    }
}

/// Keep a rejected body for forensics, off the request path. `reservation` (the body's
/// share of the in-flight budget) is released once the body is written.
fn keep_rejected(
    state: &AppState,
    received_at: Millis,
    reason: &'static str,
    body: Bytes,
    reservation: Option<OwnedSemaphorePermit>,
) {
    let dir = state.state_dir.clone();
    let keep = state.store.settings().store.rejected_keep;
    let metrics = state.metrics.clone();
    if keep == 0 {
        return;
    }
    tokio::task::spawn_blocking(move || {
        let _reservation = reservation;
        match rejected::keep(&dir, received_at, reason, &body, keep) {
            Ok(path) => {
                metrics.rejected_bodies_kept_total.inc();
                tracing::debug!(path = %path.display(), "rejected body kept");
            }
            Err(error) => tracing::warn!(%error, "cannot keep rejected body"),
        }
    });
}

/// A 503 for a write the store could not make, with its kind (`full`, `read_only`, ...) so a
/// client or a test can tell a full disk from a broken one without reading SQLite's words.
fn store_failed(error: &WriteError) -> Response {
    let body = serde_json::json!({
        "error": "store unavailable",
        "message": error.message(),
        "kind": error.kind().label(),
    });
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}

fn unavailable(error: &str, message: &str) -> Response {
    let mut response = json_error(StatusCode::SERVICE_UNAVAILABLE, error, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}
