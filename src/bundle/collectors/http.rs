//! http: the `http` collector. `response.json` (`{"status": N, "headers": {...}}`, repeated
//! headers joined with ", ") and `body` (the bytes as received). Redirects are not followed,
//! and any status is `ok`: the answer is the evidence.

use std::collections::BTreeMap;

use serde_json::{Map, json};

use super::files::{Files, Keep, char_boundary_at_or_before};
use super::{Collected, Failure, pretty_json};
use crate::probes::http::describe_error;

pub(super) async fn collect(
    client: &reqwest::Client,
    url: &str,
    headers: &BTreeMap<String, String>,
    files: &mut Files,
) -> Collected {
    let fail = |error: String| Failure::Failed(format!("GET {url}: {error}"));
    let mut request_headers = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        let name = reqwest::header::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| fail(format!("invalid request header name {name:?}")))?;
        let value = reqwest::header::HeaderValue::from_str(value)
            .map_err(|_| fail(format!("invalid value for request header {name:?}")))?;
        request_headers.append(name, value);
    }
    let mut response = match client.get(url).headers(request_headers).send().await {
        Ok(response) => response,
        Err(error) if error.is_timeout() => {
            return Err(Failure::TimedOut(format!(
                "GET {url}: {}",
                describe_error(&error)
            )));
        }
        Err(error) => return Err(fail(describe_error(&error))),
    };
    let mut answer_headers = Map::new();
    for name in response.headers().keys() {
        let values: Vec<String> = response
            .headers()
            .get_all(name)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect();
        answer_headers.insert(name.as_str().to_owned(), json!(values.join(", ")));
    }
    let status = response.status().as_u16();
    let length = response.content_length();
    files.add(
        "response.json",
        pretty_json(&json!({"status": status, "headers": answer_headers})),
        Keep::Head,
    );

    // Read no more than fits; one byte beyond tells that there was more.
    let room = usize::try_from(files.room()).unwrap_or(usize::MAX);
    let mut body = Vec::new();
    let mut more = false;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > room {
                    // One byte past the room tells whether the cut splits a character.
                    body.extend_from_slice(&chunk[..=room - body.len()]);
                    let end = char_boundary_at_or_before(&body, room);
                    body.truncate(end);
                    more = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(error) if error.is_timeout() => {
                return Err(Failure::TimedOut(format!(
                    "GET {url}: reading the body: {}",
                    describe_error(&error)
                )));
            }
            Err(error) => {
                return Err(fail(format!(
                    "reading the body: {}",
                    describe_error(&error)
                )));
            }
        }
    }
    if more {
        files.add_cut("body", body, Keep::Head, length);
    } else {
        files.add("body", body, Keep::Head);
    }
    Ok(None)
}
