//! Fake servers for the integration tests: each listens on 127.0.0.1:0 inside the test's
//! runtime, speaks the real wire format of what it stands in for, records every request it
//! receives (so a test can assert what nightshift sent) and notes any request it was not
//! built to answer (so a test can fail on it: `assert_no_unexpected`).
//!
//! * [`statuspage::FakeStatuspage`] — `/api/v2/status.json`.
//! * [`prometheus::FakePrometheus`] — `/api/v1/query` and `/api/v1/query_range`.
//! * [`kube::FakeKube`] — the Kubernetes API server paths nightshift uses (objects, lists,
//!   patches, scale, pod logs, events).
//! * [`web::FakeWeb`] — any HTTP answer, for the `http` probe.
//! * [`pagerduty::FakePagerDuty`] — the Events API v2; [`pagerduty::FakeChat`] — a chat webhook.
#![allow(dead_code)]

pub mod kube;
pub mod pagerduty;
pub mod prometheus;
pub mod statuspage;
pub mod web;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request};
use axum::response::Response;
use std::future::Future;

/// Install the rustls crypto provider (needed before anything builds a TLS config).
pub fn init() {
    crate::common::install_crypto_provider();
}

/// A URL on 127.0.0.1 where nothing listens: the port was free a moment ago.
pub fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    /// The raw query string (still percent-encoded), "" when none.
    pub query: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// When the whole request had arrived (wall clock, to compare with the daemon's stored
    /// times).
    pub received: std::time::SystemTime,
}

impl Recorded {
    /// A header's value ("" when absent).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .unwrap_or_default()
    }

    /// A query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_pairs(&self.query)
            .into_iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    pub fn describe(&self) -> String {
        if self.query.is_empty() {
            format!("{} {}", self.method, self.path)
        } else {
            format!("{} {}?{}", self.method, self.path, self.query)
        }
    }
}

/// Decode an `application/x-www-form-urlencoded` query string.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        index += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Requests received and requests not expected, shared by a fake and its handlers.
#[derive(Debug, Default, Clone)]
pub struct Journal {
    inner: Arc<Mutex<JournalInner>>,
}

#[derive(Debug, Default)]
struct JournalInner {
    requests: Vec<Recorded>,
    unexpected: Vec<String>,
}

impl Journal {
    fn lock(&self) -> MutexGuard<'_, JournalInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Read a whole request and record it.
    pub async fn record(&self, request: Request<Body>) -> Recorded {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, 16 * 1024 * 1024)
            .await
            .map(|bytes| bytes.to_vec())
            .unwrap_or_default();
        let recorded = Recorded {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            headers: parts.headers,
            body,
            received: std::time::SystemTime::now(),
        };
        self.lock().requests.push(recorded.clone());
        recorded
    }

    pub fn unexpected(&self, request: &Recorded) {
        self.lock().unexpected.push(request.describe());
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    pub fn count(&self) -> usize {
        self.lock().requests.len()
    }

    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.requests.clear();
        inner.unexpected.clear();
    }

    /// Panic (failing the test) if the fake received a request it was not built for.
    pub fn assert_no_unexpected(&self) {
        let unexpected = self.lock().unexpected.clone();
        assert!(
            unexpected.is_empty(),
            "the fake received unexpected requests: {unexpected:?}"
        );
    }
}

/// A running axum server on 127.0.0.1, stopped when dropped.
pub struct Server {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Start a fake on 127.0.0.1:0 that hands every request, whatever its method and path, to
    /// `handle` with a clone of `shared` (the fake's journal and state): the one way every
    /// fake listens, so each fake is only its `handle` and its settings.
    pub async fn serve<S, H, F>(shared: S, handle: H) -> Server
    where
        S: Clone + Send + Sync + 'static,
        H: Fn(S, Request<Body>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response> + Send + 'static,
    {
        let router = Router::new().fallback(move |request: Request<Body>| {
            let shared = shared.clone();
            let handle = handle.clone();
            async move { handle(shared, request).await }
        });
        Server::start(router).await
    }

    pub async fn start(router: Router) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Server { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Poll `check` every 20 ms, from async code (a blocking wait would stall the fakes running
/// on the same runtime), until it holds (true) or `timeout` passes (false).
pub async fn until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sleep in a handler (a slow server); zero does not yield.
pub async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_queries() {
        assert_eq!(
            query_pairs("query=sum%28up%7Bjob%3D%22a%22%7D%29&x=a+b&y=%"),
            vec![
                ("query".to_owned(), "sum(up{job=\"a\"})".to_owned()),
                ("x".to_owned(), "a b".to_owned()),
                ("y".to_owned(), "%".to_owned()),
            ]
        );
    }
}
