//! A fake web server for the `http` probe: every request to the configured path gets the
//! configured status, headers and body (optionally after a delay); any other path is
//! unexpected.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{Journal, Server, pause};

#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    delay: Duration,
}

pub struct FakeWeb {
    pub journal: Journal,
    path: String,
    reply: Arc<Mutex<Reply>>,
    server: Server,
}

impl FakeWeb {
    /// Serve `path` (any method); 200 with an empty body until told otherwise.
    pub async fn start(path: &str) -> FakeWeb {
        let journal = Journal::default();
        let reply = Arc::new(Mutex::new(Reply {
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
        }));
        let server = Server::serve(
            (journal.clone(), reply.clone(), path.to_owned()),
            |(journal, reply, path), request| async move {
                handle(journal, reply, &path, request).await
            },
        )
        .await;
        FakeWeb {
            journal,
            path: path.to_owned(),
            reply,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("{}{}", self.server.url(), self.path)
    }

    pub fn reply(&self, status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) {
        let mut reply = self.reply.lock().unwrap();
        reply.status = status;
        reply.headers = headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        reply.body = body.into();
    }

    pub fn set_delay(&self, delay: Duration) {
        self.reply.lock().unwrap().delay = delay;
    }
}

async fn handle(
    journal: Journal,
    reply: Arc<Mutex<Reply>>,
    path: &str,
    request: Request<Body>,
) -> Response {
    let request = journal.record(request).await;
    if request.path != path {
        journal.unexpected(&request);
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    let reply = reply.lock().unwrap().clone();
    pause(reply.delay).await;
    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap();
    for (name, value) in reply.headers {
        response.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(&value).unwrap(),
        );
    }
    response
}
