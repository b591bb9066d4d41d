//! ingest: `POST /webhook`. Authenticate, bound, parse, journal durably, and only then answer.
//!
//! Answers follow Alertmanager's retry rules (protocols.md §1.7): 200 once the notification is
//! on disk; 4xx only for input that can never succeed (wrong credential, invalid body), since
//! Alertmanager gives up on a 4xx; 503 for everything that may pass later (queue full, backlog,
//! store failure), since Alertmanager retries 5xx.

pub mod rejected;
pub mod webhook;

use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};

use crate::auth::Role;
use crate::server::{AppState, RemoteAddr, json_error};
use crate::store::{IngestRecord, Rejected};

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

pub async fn handle_webhook(
    State(state): State<AppState>,
    remote: Option<axum::Extension<RemoteAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let remote = remote.map_or_else(String::new, |r| r.0.0.to_string());
    let (outcome, response) = ingest(&state, &remote, &headers, body).await;
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

async fn ingest(
    state: &AppState,
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
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let collected = tokio::time::timeout(state.server.body_read_timeout, limited.collect()).await;
    let bytes = match collected {
        Err(_) => {
            let response = json_error(
                StatusCode::REQUEST_TIMEOUT,
                "request timeout",
                "the body was not received within server.body_read_timeout",
            );
            return (Outcome::Timeout, response);
        }
        Ok(Err(error)) => {
            if error.is::<http_body_util::LengthLimitError>() {
                return (Outcome::PayloadTooLarge, too_large());
            }
            let response = json_error(
                StatusCode::BAD_REQUEST,
                "unreadable body",
                &format!("the request body could not be read: {error}"),
            );
            return (Outcome::BadRequest, response);
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let received_at = state.clock.now_millis();
    let notification = match webhook::parse(&bytes) {
        Ok(notification) => notification,
        Err(error) => {
            state
                .metrics
                .webhook_rejected_total
                .with_label_values(&[error.reason])
                .inc();
            tracing::warn!(remote, path = %error.path, message = %error.message, "webhook rejected");
            state.keep_rejected(received_at, error.reason, bytes);
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
    // A sign of life of the alerting pipeline, whether or not the store can keep it.
    state.heartbeat.observe(&notification, received_at);
    let alert_count = notification.alerts.len();
    let record = IngestRecord {
        received_at,
        remote: remote.to_owned(),
        group_key: notification.group_key,
        alert_count,
        body: bytes,
    };
    let receiver = match state.store.try_submit(record) {
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
        Ok(Err(error)) => (
            Outcome::StoreUnavailable,
            unavailable("store unavailable", &error),
        ),
        Err(_) => (
            Outcome::StoreUnavailable,
            unavailable("store unavailable", "the store writer stopped"),
        ),
    }
}

fn unavailable(error: &str, message: &str) -> Response {
    let mut response = json_error(StatusCode::SERVICE_UNAVAILABLE, error, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}
