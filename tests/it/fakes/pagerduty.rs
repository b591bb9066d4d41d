//! A fake PagerDuty Events API v2 (`https://events.pagerduty.com`) and a fake chat webhook
//! (a Slack incoming webhook, or any JSON webhook receiver). Protocol facts: protocols.md §3.
//!
//! [`FakePagerDuty`] serves `POST /v2/enqueue` (alert events) and `POST /v2/change/enqueue`
//! (change events):
//!
//! * Every request is checked against the documented schema and limits (`Content-Type:
//!   application/json`, a JSON object of at most 512 KB, a 32-character `routing_key`, a
//!   known `event_action`, a `dedup_key` of at most 255 characters — nightshift always sends
//!   one, so it is required on a trigger too —, a trigger `payload` with a non-blank `summary`
//!   of at most 1024 characters, a `source` and a known `severity`, an ISO 8601 `timestamp`,
//!   `links[].href`, HTTPS `images[].src`, and no key PagerDuty does not document). An
//!   invalid event is answered 400 `{"status":"invalid event","message":"Event object is
//!   invalid","errors":[…]}` as PagerDuty does, and noted as unexpected: nightshift must never
//!   send one. An `acknowledge` is valid for PagerDuty and processed, but also noted as
//!   unexpected (nightshift never acknowledges for a human). Any other path or method: 404,
//!   unexpected.
//! * Every valid event is recorded as a [`PdEvent`] in [`FakePagerDuty::attempts`], whatever
//!   the answer; those answered 202 also in [`FakePagerDuty::accepted`].
//! * The answer is set with [`FakePagerDuty::set_mode`] ([`Mode`]), or for the next n valid
//!   events only with [`FakePagerDuty::fail_next`].
//! * PagerDuty's own rate limit is modelled: more than `limit_per_minute` (default 120) valid
//!   events for one routing key in the last 60 s (a sliding window of real time) are answered
//!   429 and recorded in [`FakePagerDuty::rate_limited`], which a test expects to stay empty.
//!
//! [`FakeChat`] serves one path: a POST of a JSON object (for Slack, one with a non-blank
//! `text`), recorded in [`FakeChat::messages`] and answered with a settable status.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::{Journal, Recorded, Server, pause};

/// Alert events.
pub const ENQUEUE_PATH: &str = "/v2/enqueue";
/// Change events.
pub const CHANGE_PATH: &str = "/v2/change/enqueue";
/// A routing key of the right length, for tests.
pub const ROUTING_KEY: &str = "R0UT1NGKEY0123456789abcdef012345";
/// PagerDuty's payload limit.
pub const MAX_BODY: usize = 512 * 1024;
pub const MAX_SUMMARY: usize = 1024;
pub const MAX_DEDUP_KEY: usize = 255;
pub const ROUTING_KEY_LEN: usize = 32;
/// PagerDuty's documented limit per integration key, per minute.
pub const DEFAULT_RATE_LIMIT: usize = 120;
/// How long a [`Mode::Hang`] holds a request before giving up itself (503).
pub const HANG_LIMIT: Duration = Duration::from_secs(600);

const RATE_WINDOW: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);

/// How the fake answers a valid event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// 202 `{"status":"success","message":"Event processed","dedup_key":…}`.
    Accept,
    /// 400 `{"status":"invalid event","message":"Event object is invalid","errors":[…]}`
    /// (injected: not noted as unexpected).
    Reject400(Vec<String>),
    /// 429, the event not ingested.
    RateLimit429,
    /// 500 with PagerDuty's `Error` body.
    Error500,
    /// 202 after this delay. The event counts as accepted once the delay is over, whether or
    /// not the client still waits (PagerDuty keeps what it received).
    Slow(Duration),
    /// Never answer: hold the request until the client gives up (bounded by [`HANG_LIMIT`],
    /// then 503). Never accepted.
    Hang,
}

impl Mode {
    /// The status this mode answers with (0: none).
    fn status(&self) -> u16 {
        match self {
            Mode::Accept | Mode::Slow(_) => 202,
            Mode::Reject400(_) => 400,
            Mode::RateLimit429 => 429,
            Mode::Error500 => 500,
            Mode::Hang => 0,
        }
    }
}

/// One valid event as the fake received it.
#[derive(Debug, Clone)]
pub struct PdEvent {
    /// `"enqueue"` (alert event) or `"change"` (change event).
    pub path: &'static str,
    pub routing_key: String,
    /// `trigger`, `acknowledge` or `resolve`; `None` for a change event.
    pub event_action: Option<String>,
    /// `None` for a change event.
    pub dedup_key: Option<String>,
    pub body: Value,
    pub received: Instant,
    pub at: DateTime<Utc>,
    /// The status it was answered with (202, 400, 429, 500; 0 for a hang).
    pub status: u16,
}

impl PdEvent {
    pub fn is_trigger(&self) -> bool {
        self.path == "enqueue" && self.event_action.as_deref() == Some("trigger")
    }

    pub fn is_resolve(&self) -> bool {
        self.path == "enqueue" && self.event_action.as_deref() == Some("resolve")
    }

    pub fn is_change(&self) -> bool {
        self.path == "change"
    }

    /// `payload.summary` ("" when none).
    pub fn summary(&self) -> &str {
        self.body["payload"]["summary"].as_str().unwrap_or_default()
    }

    /// `payload.severity` ("" when none).
    pub fn severity(&self) -> &str {
        self.body["payload"]["severity"]
            .as_str()
            .unwrap_or_default()
    }
}

#[derive(Debug)]
struct State {
    mode: Mode,
    /// Modes for the next valid events, before `mode` again.
    next: VecDeque<Mode>,
    limit_per_minute: usize,
    attempts: Vec<PdEvent>,
    accepted: Vec<PdEvent>,
    rate_limited: Vec<PdEvent>,
    /// Why each unexpected request was unexpected.
    problems: Vec<String>,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct FakePagerDuty {
    pub journal: Journal,
    state: Shared,
    server: Server,
}

impl FakePagerDuty {
    /// Accepting every valid event, at most 120 a minute per routing key.
    pub async fn start() -> FakePagerDuty {
        let journal = Journal::default();
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Accept,
            next: VecDeque::new(),
            limit_per_minute: DEFAULT_RATE_LIMIT,
            attempts: Vec::new(),
            accepted: Vec::new(),
            rate_limited: Vec::new(),
            problems: Vec::new(),
        }));
        let server = Server::serve(
            (journal.clone(), state.clone()),
            |(journal, state), request| handle_pd(journal, state, request),
        )
        .await;
        FakePagerDuty {
            journal,
            state,
            server,
        }
    }

    /// The base URL (`http://127.0.0.1:PORT`), standing in for `https://events.pagerduty.com`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// `{url}/v2/enqueue`.
    pub fn enqueue_url(&self) -> String {
        format!("{}{ENQUEUE_PATH}", self.server.url())
    }

    /// `{url}/v2/change/enqueue`.
    pub fn change_url(&self) -> String {
        format!("{}{CHANGE_PATH}", self.server.url())
    }

    /// How to answer valid events from now on (after any [`Self::fail_next`] ones).
    pub fn set_mode(&self, mode: Mode) {
        lock(&self.state).mode = mode;
    }

    /// Answer the next `n` valid events (that are not rate limited) this way, then go back to
    /// the current mode. Calls queue up: `fail_next(1, Error500); fail_next(1, RateLimit429)`.
    pub fn fail_next(&self, n: usize, mode: Mode) {
        let mut state = lock(&self.state);
        for _ in 0..n {
            state.next.push_back(mode.clone());
        }
    }

    /// PagerDuty's limit per routing key per 60 s (default 120).
    pub fn set_rate_limit(&self, limit_per_minute: usize) {
        lock(&self.state).limit_per_minute = limit_per_minute;
    }

    /// Every valid event received, whatever it was answered.
    pub fn attempts(&self) -> Vec<PdEvent> {
        lock(&self.state).attempts.clone()
    }

    /// How many valid alert events with this dedup key arrived, whatever they were answered.
    pub fn attempts_for(&self, dedup_key: &str) -> usize {
        lock(&self.state)
            .attempts
            .iter()
            .filter(|event| event.dedup_key.as_deref() == Some(dedup_key))
            .count()
    }

    /// The valid events answered 202.
    pub fn accepted(&self) -> Vec<PdEvent> {
        lock(&self.state).accepted.clone()
    }

    pub fn accepted_triggers(&self) -> Vec<PdEvent> {
        self.accepted_where(PdEvent::is_trigger)
    }

    pub fn accepted_resolves(&self) -> Vec<PdEvent> {
        self.accepted_where(PdEvent::is_resolve)
    }

    pub fn accepted_changes(&self) -> Vec<PdEvent> {
        self.accepted_where(PdEvent::is_change)
    }

    /// The accepted alert events (trigger and resolve) with this dedup key, in order.
    pub fn accepted_for(&self, dedup_key: &str) -> Vec<PdEvent> {
        self.accepted_where(|event| event.dedup_key.as_deref() == Some(dedup_key))
    }

    fn accepted_where(&self, keep: impl Fn(&PdEvent) -> bool) -> Vec<PdEvent> {
        lock(&self.state)
            .accepted
            .iter()
            .filter(|event| keep(event))
            .cloned()
            .collect()
    }

    /// The valid events answered 429 by the fake's own rate-limit model (not by
    /// [`Mode::RateLimit429`]).
    pub fn rate_limited(&self) -> Vec<PdEvent> {
        lock(&self.state).rate_limited.clone()
    }

    /// The most accepted events for one routing key in any window of this length (by
    /// `received`), over all routing keys.
    pub fn max_in_window(&self, window: Duration) -> usize {
        let accepted = self.accepted();
        let mut by_key: BTreeMap<&str, Vec<Instant>> = BTreeMap::new();
        for event in &accepted {
            by_key
                .entry(event.routing_key.as_str())
                .or_default()
                .push(event.received);
        }
        by_key
            .into_values()
            .map(|times| max_in_window(times, window))
            .max()
            .unwrap_or(0)
    }

    /// The most accepted events for this routing key in any window of this length.
    pub fn max_in_window_for(&self, routing_key: &str, window: Duration) -> usize {
        let times = self
            .accepted()
            .iter()
            .filter(|event| event.routing_key == routing_key)
            .map(|event| event.received)
            .collect();
        max_in_window(times, window)
    }

    /// Poll `predicate` until it holds (true) or `timeout` passes (false).
    pub async fn wait_for(
        &self,
        predicate: impl Fn(&FakePagerDuty) -> bool,
        timeout: Duration,
    ) -> bool {
        super::until(timeout, || predicate(self)).await
    }

    /// What was unexpected, and why.
    pub fn unexpected(&self) -> Vec<String> {
        lock(&self.state).problems.clone()
    }

    /// Panic (failing the test) if nightshift sent anything invalid, an acknowledge, or a
    /// request to another path.
    pub fn assert_no_unexpected(&self) {
        let problems = self.unexpected();
        assert!(
            problems.is_empty(),
            "the fake PagerDuty received unexpected requests: {problems:#?}"
        );
        self.journal.assert_no_unexpected();
    }

    /// Forget every request and event (the mode, queued failures and limit stay).
    pub fn clear(&self) {
        let mut state = lock(&self.state);
        state.attempts.clear();
        state.accepted.clear();
        state.rate_limited.clear();
        state.problems.clear();
        drop(state);
        self.journal.clear();
    }
}

/// The most instants within any window of this length.
fn max_in_window(mut times: Vec<Instant>, window: Duration) -> usize {
    times.sort();
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end].duration_since(times[start]) >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

fn note(journal: &Journal, state: &Shared, request: &Recorded, why: &str) {
    journal.unexpected(request);
    lock(state)
        .problems
        .push(format!("{}: {why}", request.describe()));
}

fn invalid(errors: Vec<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({
            "status": "invalid event",
            "message": "Event object is invalid",
            "errors": errors,
        })),
    )
        .into_response()
}

async fn handle_pd(journal: Journal, state: Shared, request: Request<Body>) -> Response {
    let request = journal.record(request).await;
    let kind = match request.path.as_str() {
        ENQUEUE_PATH => "enqueue",
        CHANGE_PATH => "change",
        _ => "",
    };
    if request.method != Method::POST || kind.is_empty() {
        note(&journal, &state, &request, "no such endpoint");
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"status": "not found", "message": "Not Found"})),
        )
            .into_response();
    }
    let event = match validate_request(&request, kind) {
        Ok(event) => event,
        Err(errors) => {
            note(&journal, &state, &request, &errors.join("; "));
            return invalid(errors);
        }
    };
    let routing_key = event["routing_key"].as_str().unwrap_or_default().to_owned();
    let event_action = event["event_action"].as_str().map(str::to_owned);
    let dedup_key = event["dedup_key"].as_str().map(str::to_owned);
    if event_action.as_deref() == Some("acknowledge") {
        note(&journal, &state, &request, "nightshift never acknowledges");
    }
    let now = Instant::now();
    let mut recorded = PdEvent {
        path: kind,
        routing_key,
        event_action,
        dedup_key,
        body: event,
        received: now,
        at: Utc::now(),
        status: 0,
    };

    let mode = {
        let mut guard = lock(&state);
        let state = &mut *guard;
        let recent = state
            .attempts
            .iter()
            .filter(|earlier| {
                earlier.routing_key == recorded.routing_key
                    && now.duration_since(earlier.received) < RATE_WINDOW
            })
            .count()
            + 1;
        if recent > state.limit_per_minute {
            recorded.status = 429;
            state.rate_limited.push(recorded.clone());
            state.attempts.push(recorded);
            return rate_limited();
        }
        let mode = state.next.pop_front().unwrap_or_else(|| state.mode.clone());
        recorded.status = mode.status();
        state.attempts.push(recorded.clone());
        if mode == Mode::Accept {
            state.accepted.push(recorded.clone());
        }
        mode
    };

    match mode {
        Mode::Accept => success(&recorded),
        Mode::Reject400(errors) => invalid(errors),
        Mode::RateLimit429 => rate_limited(),
        Mode::Error500 => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({
                "status": "error",
                "message": "Internal Server Error",
                "errors": ["An unexpected error occurred"],
            })),
        )
            .into_response(),
        Mode::Slow(delay) => {
            // In a task of its own, so the event is accepted even if the client gives up
            // (and hyper drops this handler).
            let event = recorded.clone();
            let task = tokio::spawn(async move {
                pause(delay).await;
                lock(&state).accepted.push(event);
            });
            let _ = task.await;
            success(&recorded)
        }
        Mode::Hang => {
            tokio::time::sleep(HANG_LIMIT).await;
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"status": "error", "message": "Service Unavailable"})),
            )
                .into_response()
        }
    }
}

fn success(event: &PdEvent) -> Response {
    let body = if event.is_change() {
        json!({"status": "success", "message": "Change event processed"})
    } else {
        json!({
            "status": "success",
            "message": "Event processed",
            "dedup_key": event.dedup_key,
        })
    };
    (StatusCode::ACCEPTED, axum::Json(body)).into_response()
}

fn rate_limited() -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(json!({
            "status": "throttle event",
            "message": "Requests for this service are arriving too quickly. Please retry later.",
        })),
    )
        .into_response()
}

/// `Content-Type: application/json` (parameters such as `charset` allowed).
fn is_json(request: &Recorded) -> bool {
    let content_type = request.header("content-type");
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    media_type.eq_ignore_ascii_case("application/json")
}

/// The event as a JSON object, or PagerDuty's reasons to refuse it.
fn validate_request(request: &Recorded, kind: &str) -> Result<Value, Vec<String>> {
    if !is_json(request) {
        return Err(vec![format!(
            "Content-Type must be application/json, not '{}'",
            request.header("content-type")
        )]);
    }
    if request.body.len() > MAX_BODY {
        return Err(vec![format!(
            "Event object is too large ({} bytes, at most {MAX_BODY})",
            request.body.len()
        )]);
    }
    let event: Value = serde_json::from_slice(&request.body)
        .map_err(|error| vec![format!("Event object is not valid JSON: {error}")])?;
    let errors = match kind {
        "enqueue" => validate_alert(&event),
        _ => validate_change(&event),
    };
    if errors.is_empty() {
        Ok(event)
    } else {
        Err(errors)
    }
}

/// The errors in an alert event (`/v2/enqueue`); empty when valid.
pub fn validate_alert(event: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let Some(object) = event.as_object() else {
        return vec!["Event object must be a JSON object".to_owned()];
    };
    unknown_keys(
        object,
        "",
        &[
            "routing_key",
            "event_action",
            "dedup_key",
            "payload",
            "images",
            "links",
            "client",
            "client_url",
        ],
        &mut errors,
    );
    check_routing_key(object, &mut errors);
    let action = match object.get("event_action") {
        None | Some(Value::Null) => {
            errors.push("'event_action' is missing or blank".to_owned());
            ""
        }
        Some(Value::String(action))
            if ["trigger", "acknowledge", "resolve"].contains(&action.as_str()) =>
        {
            action.as_str()
        }
        Some(other) => {
            errors.push(format!(
                "'event_action' is invalid: {other} (must be one of trigger, acknowledge, resolve)"
            ));
            ""
        }
    };
    // PagerDuty makes one up for a trigger without it; nightshift always sends its own.
    if let Some(dedup_key) = string(object, "dedup_key", "", true, &mut errors)
        && dedup_key.chars().count() > MAX_DEDUP_KEY
    {
        errors.push(format!(
            "Length of 'dedup_key' is incorrect (should be at most {MAX_DEDUP_KEY} characters)"
        ));
    }
    match object.get("payload") {
        Some(payload) => check_alert_payload(payload, &mut errors),
        None if action == "trigger" => errors.push("'payload' is missing".to_owned()),
        None => {}
    }
    if let Some(images) = object.get("images") {
        check_list(images, "images", &mut errors, |image, at, errors| {
            unknown_keys(image, at, &["src", "href", "alt"], errors);
            if let Some(src) = string(image, "src", at, true, errors)
                && !src.starts_with("https://")
            {
                errors.push(format!("'{at}.src' must be an HTTPS URL"));
            }
            string(image, "href", at, false, errors);
            string(image, "alt", at, false, errors);
        });
    }
    if let Some(links) = object.get("links") {
        check_links(links, &mut errors);
    }
    string(object, "client", "", false, &mut errors);
    string(object, "client_url", "", false, &mut errors);
    errors
}

/// The errors in a change event (`/v2/change/enqueue`); empty when valid.
pub fn validate_change(event: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let Some(object) = event.as_object() else {
        return vec!["Event object must be a JSON object".to_owned()];
    };
    for key in ["event_action", "dedup_key"] {
        if object.contains_key(key) {
            errors.push(format!("'{key}' is not allowed in a change event"));
        }
    }
    let known = [
        "routing_key",
        "payload",
        "links",
        "event_action",
        "dedup_key",
    ];
    unknown_keys(object, "", &known, &mut errors);
    check_routing_key(object, &mut errors);
    match object.get("payload") {
        Some(Value::Object(payload)) => {
            unknown_keys(
                payload,
                "payload",
                &["summary", "source", "timestamp", "custom_details"],
                &mut errors,
            );
            check_summary(payload, &mut errors);
            string(payload, "source", "payload", false, &mut errors);
            check_timestamp(payload, &mut errors);
            check_object(payload, "custom_details", "payload", &mut errors);
        }
        Some(_) => errors.push("'payload' must be an object".to_owned()),
        None => errors.push("'payload' is missing".to_owned()),
    }
    if let Some(links) = object.get("links") {
        check_links(links, &mut errors);
    }
    errors
}

fn check_routing_key(object: &Map<String, Value>, errors: &mut Vec<String>) {
    if let Some(key) = string(object, "routing_key", "", true, errors)
        && key.chars().count() != ROUTING_KEY_LEN
    {
        errors.push(format!(
            "Length of 'routing_key' is incorrect (should be {ROUTING_KEY_LEN} characters)"
        ));
    }
}

fn check_alert_payload(payload: &Value, errors: &mut Vec<String>) {
    let Some(payload) = payload.as_object() else {
        errors.push("'payload' must be an object".to_owned());
        return;
    };
    unknown_keys(
        payload,
        "payload",
        &[
            "summary",
            "source",
            "severity",
            "timestamp",
            "component",
            "group",
            "class",
            "custom_details",
        ],
        errors,
    );
    check_summary(payload, errors);
    string(payload, "source", "payload", true, errors);
    if let Some(severity) = string(payload, "severity", "payload", true, errors)
        && !["critical", "error", "warning", "info"].contains(&severity)
    {
        errors.push(format!(
                "'payload.severity' is invalid: '{severity}' (must be one of critical, error, warning, info)"
            ));
    }
    check_timestamp(payload, errors);
    for key in ["component", "group", "class"] {
        string(payload, key, "payload", false, errors);
    }
    check_object(payload, "custom_details", "payload", errors);
}

fn check_summary(payload: &Map<String, Value>, errors: &mut Vec<String>) {
    if let Some(summary) = string(payload, "summary", "payload", true, errors)
        && summary.chars().count() > MAX_SUMMARY
    {
        errors.push(format!(
            "Length of 'payload.summary' is incorrect (should be at most {MAX_SUMMARY} characters)"
        ));
    }
}

fn check_timestamp(payload: &Map<String, Value>, errors: &mut Vec<String>) {
    if let Some(timestamp) = string(payload, "timestamp", "payload", false, errors)
        && !is_timestamp(timestamp)
    {
        errors.push(format!(
            "'payload.timestamp' is not an ISO 8601 timestamp: '{timestamp}'"
        ));
    }
}

/// RFC 3339, or ISO 8601 as PagerDuty's own example writes it (`2015-07-17T08:42:58.315+0000`).
pub fn is_timestamp(text: &str) -> bool {
    DateTime::parse_from_rfc3339(text).is_ok()
        || DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z").is_ok()
}

fn check_links(links: &Value, errors: &mut Vec<String>) {
    check_list(links, "links", errors, |link, at, errors| {
        unknown_keys(link, at, &["href", "text"], errors);
        string(link, "href", at, true, errors);
        string(link, "text", at, false, errors);
    });
}

/// An array of objects, each checked by `check`.
fn check_list(
    list: &Value,
    name: &str,
    errors: &mut Vec<String>,
    check: impl Fn(&Map<String, Value>, &str, &mut Vec<String>),
) {
    let Some(items) = list.as_array() else {
        errors.push(format!("'{name}' must be an array"));
        return;
    };
    for (index, item) in items.iter().enumerate() {
        let at = format!("{name}[{index}]");
        match item.as_object() {
            Some(item) => check(item, &at, errors),
            None => errors.push(format!("'{at}' must be an object")),
        }
    }
}

fn field_name(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// A string field: when `required`, present and not blank.
fn string<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    parent: &str,
    required: bool,
    errors: &mut Vec<String>,
) -> Option<&'a str> {
    let name = field_name(parent, key);
    match object.get(key) {
        Some(Value::String(text)) if required && text.trim().is_empty() => {
            errors.push(format!("'{name}' is missing or blank"));
            None
        }
        Some(Value::String(text)) => Some(text),
        None if required => {
            errors.push(format!("'{name}' is missing or blank"));
            None
        }
        None => None,
        Some(other) => {
            errors.push(format!("'{name}' must be a string, not {other}"));
            None
        }
    }
}

fn check_object(object: &Map<String, Value>, key: &str, parent: &str, errors: &mut Vec<String>) {
    if let Some(value) = object.get(key)
        && !value.is_object()
    {
        errors.push(format!("'{}' must be an object", field_name(parent, key)));
    }
}

fn unknown_keys(
    object: &Map<String, Value>,
    parent: &str,
    known: &[&str],
    errors: &mut Vec<String>,
) {
    for key in object.keys() {
        if !known.contains(&key.as_str()) {
            errors.push(format!(
                "'{}' is not a known field",
                field_name(parent, key)
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct ChatState {
    status: u16,
    messages: Vec<Value>,
    problems: Vec<String>,
}

/// A Slack incoming webhook ([`FakeChat::start_slack`]) or any JSON webhook receiver
/// ([`FakeChat::start`]) at one path.
pub struct FakeChat {
    pub journal: Journal,
    path: String,
    state: Arc<Mutex<ChatState>>,
    server: Server,
}

/// Fields a Slack incoming webhook takes.
const SLACK_FIELDS: &[&str] = &[
    "text",
    "blocks",
    "attachments",
    "username",
    "icon_emoji",
    "icon_url",
    "channel",
    "mrkdwn",
    "unfurl_links",
    "unfurl_media",
    "thread_ts",
];

impl FakeChat {
    /// A generic webhook: any JSON object POSTed to `path`, answered 200 `ok`.
    pub async fn start(path: &str) -> FakeChat {
        FakeChat::start_with(path, false).await
    }

    /// A Slack incoming webhook: a JSON object with a non-blank `text` (and optionally
    /// `blocks`, `username`, `icon_emoji`, `channel`, …) POSTed to `path`, answered 200 `ok`.
    pub async fn start_slack(path: &str) -> FakeChat {
        FakeChat::start_with(path, true).await
    }

    async fn start_with(path: &str, slack: bool) -> FakeChat {
        let journal = Journal::default();
        let state = Arc::new(Mutex::new(ChatState {
            status: 200,
            messages: Vec::new(),
            problems: Vec::new(),
        }));
        let server = Server::serve(
            (journal.clone(), state.clone(), path.to_owned()),
            move |(journal, state, path), request| async move {
                handle_chat(journal, state, &path, slack, request).await
            },
        )
        .await;
        FakeChat {
            journal,
            path: path.to_owned(),
            state,
            server,
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self) -> String {
        format!("{}{}", self.server.url(), self.path)
    }

    /// Answer valid messages with this status (200 to go back to normal); the message is
    /// recorded whatever the status.
    pub fn set_status(&self, status: u16) {
        self.lock().status = status;
    }

    /// The bodies of the valid messages received, in order.
    pub fn messages(&self) -> Vec<Value> {
        self.lock().messages.clone()
    }

    /// The `text` of each message ("" when none).
    pub fn texts(&self) -> Vec<String> {
        self.messages()
            .iter()
            .map(|message| message["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Poll `predicate` until it holds (true) or `timeout` passes (false).
    pub async fn wait_for(&self, predicate: impl Fn(&FakeChat) -> bool, timeout: Duration) -> bool {
        super::until(timeout, || predicate(self)).await
    }

    /// What was unexpected, and why.
    pub fn unexpected(&self) -> Vec<String> {
        self.lock().problems.clone()
    }

    pub fn assert_no_unexpected(&self) {
        let problems = self.unexpected();
        assert!(
            problems.is_empty(),
            "the fake chat webhook received unexpected requests: {problems:#?}"
        );
        self.journal.assert_no_unexpected();
    }

    pub fn clear(&self) {
        let mut state = self.lock();
        state.messages.clear();
        state.problems.clear();
        drop(state);
        self.journal.clear();
    }

    fn lock(&self) -> MutexGuard<'_, ChatState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Why a Slack message is not one (empty when it is).
pub fn validate_slack(message: &Map<String, Value>) -> Vec<String> {
    let mut errors = Vec::new();
    unknown_keys(message, "", SLACK_FIELDS, &mut errors);
    string(message, "text", "", true, &mut errors);
    for key in ["username", "icon_emoji", "icon_url", "channel", "thread_ts"] {
        string(message, key, "", false, &mut errors);
    }
    for key in ["blocks", "attachments"] {
        if message.get(key).is_some_and(|value| !value.is_array()) {
            errors.push(format!("'{key}' must be an array"));
        }
    }
    for key in ["mrkdwn", "unfurl_links", "unfurl_media"] {
        if message.get(key).is_some_and(|value| !value.is_boolean()) {
            errors.push(format!("'{key}' must be a boolean"));
        }
    }
    errors
}

/// The body Slack answers a status with.
fn slack_body(status: u16) -> &'static str {
    match status {
        200..=299 => "ok",
        400 => "invalid_payload",
        403 => "action_prohibited",
        404 => "no_service",
        410 => "channel_is_archived",
        429 => "rate_limited",
        _ => "rollup_error",
    }
}

async fn handle_chat(
    journal: Journal,
    state: Arc<Mutex<ChatState>>,
    path: &str,
    slack: bool,
    request: Request<Body>,
) -> Response {
    let request = journal.record(request).await;
    let refuse = |status: StatusCode, why: String| {
        journal.unexpected(&request);
        state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .problems
            .push(format!("{}: {why}", request.describe()));
        let body = if slack {
            slack_body(status.as_u16())
        } else {
            status.canonical_reason().unwrap_or("error")
        };
        (status, body).into_response()
    };
    if request.method != Method::POST || request.path != path {
        return refuse(StatusCode::NOT_FOUND, "no such endpoint".to_owned());
    }
    if !is_json(&request) {
        let why = format!(
            "Content-Type must be application/json, not '{}'",
            request.header("content-type")
        );
        return refuse(StatusCode::BAD_REQUEST, why);
    }
    let message = match serde_json::from_slice::<Value>(&request.body) {
        Ok(Value::Object(message)) => message,
        Ok(other) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("not a JSON object: {other}"),
            );
        }
        Err(error) => {
            return refuse(StatusCode::BAD_REQUEST, format!("not JSON: {error}"));
        }
    };
    if slack {
        let errors = validate_slack(&message);
        if !errors.is_empty() {
            return refuse(StatusCode::BAD_REQUEST, errors.join("; "));
        }
    }
    let status = {
        let mut state = state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.messages.push(Value::Object(message));
        state.status
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = if slack || status.is_success() {
        slack_body(status.as_u16())
    } else {
        status.canonical_reason().unwrap_or("error")
    };
    (status, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger() -> Value {
        json!({
            "routing_key": ROUTING_KEY,
            "event_action": "trigger",
            "dedup_key": "nightshift/inc-1",
            "payload": {
                "summary": "vastai-integration is down",
                "source": "nightshift",
                "severity": "critical",
                "custom_details": {"probe": "http"},
            },
            "links": [{"href": "https://runbooks.example.com/x", "text": ""}],
            "client": "nightshift",
        })
    }

    #[test]
    fn pagerduty_events_are_checked_as_documented() {
        assert_eq!(validate_alert(&trigger()), Vec::<String>::new());
        let resolve =
            json!({"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "d"});
        assert!(validate_alert(&resolve).is_empty());

        let mut bad = trigger();
        bad["routing_key"] = json!("short");
        bad["payload"]["summary"] = json!("é".repeat(MAX_SUMMARY + 1));
        bad["payload"]["severity"] = json!("P1");
        bad["dedup_key"] = json!("d".repeat(MAX_DEDUP_KEY + 1));
        bad["extra"] = json!(1);
        bad["images"] = json!([{"src": "http://insecure.example.com/x.png"}]);
        assert_eq!(validate_alert(&bad).len(), 6, "{:?}", validate_alert(&bad));

        let mut fits = trigger();
        fits["payload"]["summary"] = json!("é".repeat(MAX_SUMMARY));
        fits["payload"]["timestamp"] = json!("2015-07-17T08:42:58.315+0000");
        assert!(validate_alert(&fits).is_empty());

        let change = json!({
            "routing_key": ROUTING_KEY,
            "payload": {"summary": "restarted x", "source": "nightshift",
                        "timestamp": "2026-11-28T03:12:05Z", "custom_details": {}},
        });
        assert!(validate_change(&change).is_empty());
        let mut change = change;
        change["dedup_key"] = json!("d");
        assert_eq!(validate_change(&change).len(), 1);
    }

    #[test]
    fn timestamps_are_iso_8601() {
        for good in [
            "2015-07-17T08:42:58.315+0000",
            "2015-07-17T08:42:58+0000",
            "2026-11-28T03:12:05Z",
            "2026-11-28T03:12:05.123456+01:00",
        ] {
            assert!(is_timestamp(good), "{good}");
        }
        for bad in ["yesterday", "2026-11-28", "1700000000"] {
            assert!(!is_timestamp(bad), "{bad}");
        }
    }

    #[test]
    fn windows_count_the_busiest_stretch() {
        let start = Instant::now();
        let times = [0, 10, 20, 1000, 1005]
            .iter()
            .map(|ms| start + Duration::from_millis(*ms))
            .collect();
        assert_eq!(max_in_window(times, Duration::from_millis(100)), 3);
        assert_eq!(max_in_window(Vec::new(), Duration::from_secs(1)), 0);
    }

    #[test]
    fn slack_messages_need_text() {
        let ok = json!({"text": "hi", "username": "nightshift", "blocks": []});
        assert!(validate_slack(ok.as_object().unwrap()).is_empty());
        let blank = json!({"text": " ", "color": "red"});
        assert_eq!(validate_slack(blank.as_object().unwrap()).len(), 2);
    }
}
