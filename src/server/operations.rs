//! server::operations: the endpoints that run the daemon rather than read incidents: liveness
//! (`/healthz`), readiness with its reasons (`/readyz`), `/metrics`, and the admin switches
//! (`/-/reload`, `/-/pause`, `/-/resume`).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{AppState, json_error};
use crate::auth::Role;
use crate::store::Engine;

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready or not for anyone (load balancers, systemd checks); the reasons only for callers with
/// the *read* credential, since error text can name paths, hosts and rules.
pub(super) async fn readyz(State(state): State<AppState>, headers: HeaderMap) -> Response {
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
    if health.is_ok()
        && let Ok(unpaged) = state.store.unpaged_p1_incidents().await
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

pub(super) async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
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

pub(super) async fn reload(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(response) = state.authorize(Role::Admin, &headers) {
        return response;
    }
    let reloader = state.reloader.clone();
    match tokio::task::spawn_blocking(move || reloader("http")).await {
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
pub(super) struct PauseQuery {
    /// How long, e.g. `30m`; without it, until resumed.
    #[serde(rename = "for")]
    duration: Option<String>,
    reason: Option<String>,
}

/// The kill switch: stop every automatic action (pages still go) until resumed or expired.
pub(super) async fn pause(
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

pub(super) async fn resume(State(state): State<AppState>, headers: HeaderMap) -> Response {
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
