//! A fake Prometheus HTTP API: `GET /api/v1/query?query=…` answers the API envelope
//! (`{"status":"success","data":{"resultType":…,"result":…}}`) with the result set for that
//! query (an empty vector for any other), or an injected error envelope / raw proxy error,
//! optionally after a delay. `GET /api/v1/query_range?query=…&start=…&end=…&step=…` answers
//! the matrix set for that query with [`FakePrometheus::set_range_result`] (an empty matrix
//! for any other; 400 `bad_data` when a parameter is missing), with the same faults and
//! delay; [`FakePrometheus::range_params`] gives the parameters each one was asked with.
//! Any other request is unexpected.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Journal, Server, pause, query_pairs};

pub const PATH: &str = "/api/v1/query";
pub const RANGE_PATH: &str = "/api/v1/query_range";

#[derive(Debug, Clone)]
enum Failure {
    /// The API's own error envelope with this HTTP status.
    Api {
        status: u16,
        error_type: String,
        error: String,
    },
    /// A body that is not the API's (a proxy in front of it).
    Raw { status: u16, body: String },
}

#[derive(Debug, Default, Clone)]
struct State {
    results: HashMap<String, (String, Value)>,
    /// Matrix results of range queries, by query.
    ranges: HashMap<String, Value>,
    failure: Option<Failure>,
    delay: Duration,
}

pub struct FakePrometheus {
    pub journal: Journal,
    state: Arc<Mutex<State>>,
    server: Server,
}

impl FakePrometheus {
    pub async fn start() -> FakePrometheus {
        let journal = Journal::default();
        let state = Arc::new(Mutex::new(State::default()));
        let server = Server::serve(
            (journal.clone(), state.clone()),
            |(journal, state), request| handle(journal, state, request),
        )
        .await;
        FakePrometheus {
            journal,
            state,
            server,
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Answer `query` with this `resultType` and `result`.
    pub fn set_result(&self, query: &str, result_type: &str, result: Value) {
        self.state
            .lock()
            .unwrap()
            .results
            .insert(query.to_owned(), (result_type.to_owned(), result));
    }

    /// Answer every query with an API error (`{"status":"error",…}`).
    pub fn set_api_error(&self, status: u16, error_type: &str, error: &str) {
        self.state.lock().unwrap().failure = Some(Failure::Api {
            status,
            error_type: error_type.to_owned(),
            error: error.to_owned(),
        });
    }

    /// Answer every query with a non-API body (as a proxy in front of Prometheus would).
    pub fn set_raw_error(&self, status: u16, body: &str) {
        self.state.lock().unwrap().failure = Some(Failure::Raw {
            status,
            body: body.to_owned(),
        });
    }

    /// Answer the range query `query` with this matrix (`[{"metric": {...}, "values":
    /// [[ts, "v"], ...]}, ...]`; see [`series`]).
    pub fn set_range_result(&self, query: &str, matrix: Value) {
        self.state
            .lock()
            .unwrap()
            .ranges
            .insert(query.to_owned(), matrix);
    }

    /// The parameters of every range query received, percent-decoded, in order.
    pub fn range_params(&self) -> Vec<BTreeMap<String, String>> {
        self.journal
            .requests()
            .iter()
            .filter(|request| request.path == RANGE_PATH)
            .map(|request| query_pairs(&request.query).into_iter().collect())
            .collect()
    }

    /// Delay every answer (instant and range queries) by this much.
    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    /// The `query` parameter of every query received.
    pub fn queries(&self) -> Vec<String> {
        self.journal
            .requests()
            .iter()
            .filter_map(|request| request.query_param("query"))
            .collect()
    }
}

/// A vector sample as Prometheus writes it: `{"metric": {...}, "value": [ts, "v"]}`.
pub fn sample(labels: Value, value: &str) -> Value {
    json!({"metric": labels, "value": [1_435_781_451.781, value]})
}

/// A matrix series as Prometheus writes it: `{"metric": {...}, "values": [[ts, "v"], ...]}`.
pub fn series(labels: Value, values: &[(f64, &str)]) -> Value {
    let values: Vec<Value> = values
        .iter()
        .map(|(timestamp, value)| json!([timestamp, value]))
        .collect();
    json!({"metric": labels, "values": values})
}

async fn handle(journal: Journal, state: Arc<Mutex<State>>, request: Request<Body>) -> Response {
    let request = journal.record(request).await;
    let range = request.path == RANGE_PATH;
    if request.method != Method::GET || !(request.path == PATH || range) {
        journal.unexpected(&request);
        return (StatusCode::NOT_FOUND, "404 page not found\n").into_response();
    }
    let Some(query) = request.query_param("query") else {
        journal.unexpected(&request);
        return bad_data("invalid parameter \"query\": missing");
    };
    if range {
        for name in ["start", "end", "step"] {
            if request
                .query_param(name)
                .is_none_or(|value| value.is_empty())
            {
                journal.unexpected(&request);
                return bad_data(&format!("invalid parameter \"{name}\": missing"));
            }
        }
    }
    let state = state.lock().unwrap().clone();
    pause(state.delay).await;
    match state.failure {
        Some(Failure::Api {
            status,
            error_type,
            error,
        }) => {
            return (
                StatusCode::from_u16(status).unwrap(),
                axum::Json(json!({"status": "error", "errorType": error_type, "error": error})),
            )
                .into_response();
        }
        Some(Failure::Raw { status, body }) => {
            return (
                StatusCode::from_u16(status).unwrap(),
                [(header::CONTENT_TYPE, "text/html")],
                body,
            )
                .into_response();
        }
        None => {}
    }
    let (result_type, result) = if range {
        let matrix = state
            .ranges
            .get(&query)
            .cloned()
            .unwrap_or_else(|| json!([]));
        ("matrix".to_owned(), matrix)
    } else {
        state
            .results
            .get(&query)
            .cloned()
            .unwrap_or_else(|| ("vector".to_owned(), json!([])))
    };
    axum::Json(json!({
        "status": "success",
        "data": {"resultType": result_type, "result": result}
    }))
    .into_response()
}

fn bad_data(error: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"status": "error", "errorType": "bad_data", "error": error})),
    )
        .into_response()
}
