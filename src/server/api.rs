//! server::api: the incident API for people and tools holding the *read* credential: list and
//! show incidents, download an incident's bundle, and the night report.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{AppState, json_error};
use crate::auth::Role;
use crate::episodes::reconcile::EpisodeStatus;
use crate::store::{Engine, StoreError};

/// The answer when the store could not be read: a 503, as it may be back soon.
fn unavailable(error: impl std::fmt::Display) -> Response {
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store unavailable",
        &error.to_string(),
    )
}

/// A store read's answer, or the 503 that says it could not be read.
// The error is the response itself, handed straight back to axum; boxing it gains nothing.
#[allow(clippy::result_large_err)]
fn stored<T>(result: Result<T, StoreError>) -> Result<T, Response> {
    result.map_err(unavailable)
}

/// Run blocking work for an answer (opening a bundle file, composing the report on a store
/// reader) off the async workers: its error is a 503, a task that failed a 500.
async fn blocking<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(unavailable(error)),
        Err(error) => Err(json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
            &error.to_string(),
        )),
    }
}

/// The most incidents one list answer holds: each carries its labels and annotations (up to
/// 16 KiB a value), so an unbounded `limit` could build an answer of gigabytes.
pub const MAX_LIST_LIMIT: usize = 1000;

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn list_incidents(
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
    match stored(state.store.incidents(status, limit).await) {
        Ok(incidents) => axum::Json(serde_json::json!({ "incidents": incidents })).into_response(),
        Err(response) => response,
    }
}

pub(super) async fn show_incident(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(response) = state.authorize(Role::Read, &headers) {
        return response;
    }
    match stored(state.store.incident(&id).await) {
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
pub(super) async fn download_bundle(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(response) = state.authorize(Role::Read, &headers) {
        return response;
    }
    let row = match stored(state.store.bundle_row(&id).await) {
        Ok(row) => row,
        Err(response) => return response,
    };
    let state_dir = state.state_dir.clone();
    let result = blocking(move || {
        let Some(path) = row
            .filter(|row| {
                matches!(
                    row.state,
                    crate::store::BundleState::Written | crate::store::BundleState::Final
                )
            })
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

#[derive(Debug, Deserialize)]
pub(super) struct ReportQuery {
    since: Option<String>,
    format: Option<String>,
}

/// The night in one report, *read* credential: `?since=24h&format=md|json` (JSON default).
pub(super) async fn report(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<ReportQuery>,
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
    let result = blocking(move || {
        store.read_blocking(|reader| {
            crate::bundle::bundler::report_facts(
                reader,
                &options,
                now - crate::clock::duration_millis(since),
                now,
            )
        })
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
