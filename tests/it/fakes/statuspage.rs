//! A fake Atlassian Statuspage: `GET /api/v2/status.json` answers
//! `{"page": {...}, "status": {"indicator": …, "description": …}}` like a real page, with a
//! settable indicator, an injectable HTTP status (with the `{"code", "message"}` error body
//! Statuspage sends), a raw body, and a delay. Any other request is unexpected.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Journal, Server, pause};

pub const PATH: &str = "/api/v2/status.json";

#[derive(Debug, Clone)]
struct State {
    indicator: String,
    description: String,
    status: u16,
    raw_body: Option<String>,
    delay: Duration,
}

pub struct FakeStatuspage {
    pub journal: Journal,
    state: Arc<Mutex<State>>,
    server: Server,
}

impl FakeStatuspage {
    pub async fn start() -> FakeStatuspage {
        let journal = Journal::default();
        let state = Arc::new(Mutex::new(State {
            indicator: "none".to_owned(),
            description: "All Systems Operational".to_owned(),
            status: 200,
            raw_body: None,
            delay: Duration::ZERO,
        }));
        let server = Server::serve(
            (journal.clone(), state.clone()),
            |(journal, state), request| handle(journal, state, request),
        )
        .await;
        FakeStatuspage {
            journal,
            state,
            server,
        }
    }

    /// The page's base URL.
    pub fn base(&self) -> String {
        self.server.url()
    }

    /// The status.json URL.
    pub fn url(&self) -> String {
        format!("{}{PATH}", self.server.url())
    }

    pub fn set_indicator(&self, indicator: &str, description: &str) {
        let mut state = self.state.lock().unwrap();
        state.indicator = indicator.to_owned();
        state.description = description.to_owned();
    }

    /// Answer with this HTTP status (200 to go back to normal).
    pub fn set_status(&self, status: u16) {
        self.state.lock().unwrap().status = status;
    }

    /// Answer with this body instead of the status document.
    pub fn set_raw_body(&self, body: Option<&str>) {
        self.state.lock().unwrap().raw_body = body.map(str::to_owned);
    }

    /// Wait this long before answering.
    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    /// How many status.json requests were received.
    pub fn hits(&self) -> usize {
        self.journal
            .requests()
            .iter()
            .filter(|request| request.path == PATH)
            .count()
    }
}

async fn handle(journal: Journal, state: Arc<Mutex<State>>, request: Request<Body>) -> Response {
    let request = journal.record(request).await;
    if request.method != Method::GET || request.path != PATH {
        journal.unexpected(&request);
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"code": 404, "message": "Resource not found"})),
        )
            .into_response();
    }
    let state = state.lock().unwrap().clone();
    pause(state.delay).await;
    let status = StatusCode::from_u16(state.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(body) = state.raw_body {
        return (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    }
    if !status.is_success() {
        return (
            status,
            axum::Json(json!({"code": state.status, "message": "Internal Server Error"})),
        )
            .into_response();
    }
    let document = json!({
        "page": {
            "id": "y2j98763l56x",
            "name": "Example Cloud Status",
            "url": "https://status.example.com",
            "time_zone": "Etc/UTC",
            "updated_at": "2025-03-11T00:52:20-07:00"
        },
        "status": {"indicator": state.indicator, "description": state.description}
    });
    (status, axum::Json(document)).into_response()
}
