//! `http` probe: send one request, report the status code, chosen response headers and chosen
//! fields of a JSON body. Any HTTP status but a redirect is an answer (`ok = true`): whether a
//! 503 or a 429 matters is the rule's call. Transport failures (connect, TLS, reset, timeout),
//! requests that cannot be built (a header value with a control character) and redirects are
//! probe failures: no probe follows a redirect, which could take it to another host.
//!
//! Also home of the small helpers the other HTTP-based probes share: a bounded body reader,
//! the refusal of redirects and a precise description of a transport error.

use std::error::Error as _;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

use super::{ProbeKind, ProbeResult};

/// The most of a response body any probe reads.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

pub async fn probe(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    capture_headers: &[String],
    json_fields: &[String],
) -> ProbeResult {
    let method_name = method.trim().to_ascii_uppercase();
    let fail = |message: String| ProbeResult::failure(ProbeKind::Http, message);
    let Ok(parsed_method) = reqwest::Method::from_bytes(method_name.as_bytes()) else {
        return fail(format!(
            "{method_name} {url}: invalid HTTP method {method:?}"
        ));
    };
    let mut request_headers = HeaderMap::new();
    for (name, value) in headers {
        let Ok(header_name) = HeaderName::from_bytes(name.trim().as_bytes()) else {
            return fail(format!(
                "{method_name} {url}: invalid request header name {name:?}"
            ));
        };
        // A label can put anything in a templated value; a control character (CR and LF
        // above all) could end the header and start another, so the probe is refused.
        let header_value = match HeaderValue::from_str(value) {
            Ok(header_value) if !value.chars().any(char::is_control) => header_value,
            _ => {
                return fail(format!(
                    "{method_name} {url}: the value of request header {name:?} holds a control \
                     character; refused"
                ));
            }
        };
        request_headers.append(header_name, header_value);
    }
    let response = match client
        .request(parsed_method, url)
        .headers(request_headers)
        .send()
        .await
    {
        Ok(response) => response,
        Err(error) => return fail(format!("{method_name} {url}: {}", describe_error(&error))),
    };
    if let Some(refusal) = redirect_refusal(&response) {
        return fail(format!("{method_name} {url}: {refusal}"));
    }

    let status = response.status().as_u16();
    let captured: Map<String, Value> = capture_headers
        .iter()
        .map(|name| {
            let lower = name.to_ascii_lowercase();
            let value = header_text(response.headers(), &lower);
            (lower, Value::String(value))
        })
        .collect();

    // The body only matters when JSON fields are asked for. A body that cannot be read
    // whole (too large, connection cut mid-way) counts as "not JSON": every field is null,
    // but the status and headers still stand.
    let document = if json_fields.is_empty() {
        None
    } else {
        match read_body(response, MAX_BODY_BYTES).await {
            Ok(body) => serde_json::from_slice::<Value>(&body).ok(),
            Err(_) => None,
        }
    };
    let json_values: Map<String, Value> = json_fields
        .iter()
        .map(|path| {
            let value = document
                .as_ref()
                .and_then(|document| lookup(document, path))
                .cloned()
                .unwrap_or(Value::Null);
            (path.clone(), value)
        })
        .collect();

    let mut fields = Map::new();
    fields.insert("status".to_owned(), Value::from(status));
    fields.insert("headers".to_owned(), Value::Object(captured));
    fields.insert("json".to_owned(), Value::Object(json_values));
    ProbeResult::success(fields)
}

/// Why an answer is refused, when it is a redirect (any 3xx but 304 Not Modified, which is
/// not one): probe clients follow none, since a redirect could move the probe to another
/// host (see [`crate::http_client`]).
pub(crate) fn redirect_refusal(response: &reqwest::Response) -> Option<String> {
    let status = response.status();
    if !status.is_redirection() || status == reqwest::StatusCode::NOT_MODIFIED {
        return None;
    }
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    let target = match location {
        Some(location) => format!(" to {:?}", snippet(location.as_bytes(), 200)),
        None => String::new(),
    };
    Some(format!(
        "HTTP {} redirects{target}; redirects are not followed",
        status.as_u16()
    ))
}

/// All values of a response header joined with ", " (as HTTP allows), "" when absent.
fn header_text(headers: &HeaderMap, name: &str) -> String {
    headers
        .get_all(name)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Follow a dotted path (`data.items.0.name`) into a JSON document. Object keys are tried
/// first, so a key that looks like a number still works; on an array a segment that is a
/// non-negative integer indexes it. The empty path is the whole document.
pub(crate) fn lookup<'a>(document: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(document);
    }
    path.split('.')
        .try_fold(document, |value, segment| match value {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment
                .parse::<usize>()
                .ok()
                .and_then(|index| items.get(index)),
            _ => None,
        })
}

/// Read a response body, refusing one larger than `limit` bytes (without reading past it).
pub(crate) async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, String> {
    if let Some(length) = response.content_length()
        && length > limit as u64
    {
        return Err(format!(
            "response body is {length} bytes, more than the {limit} bytes read"
        ));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(format!(
                        "response body is larger than the {limit} bytes read"
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(error) => {
                return Err(format!("reading response body: {}", describe_error(&error)));
            }
        }
    }
}

/// A transport error in words: what kind of failure, then each distinct underlying cause
/// (reqwest's own top-level text only repeats the URL, which callers already print).
pub(crate) fn describe_error(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_redirect() {
        "redirect failed"
    } else if error.is_body() || error.is_decode() {
        "reading response failed"
    } else if error.is_builder() {
        "invalid request"
    } else {
        "request failed"
    };
    let mut causes: Vec<String> = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !causes.iter().any(|seen| seen.contains(&text)) {
            causes.push(text);
        }
        source = cause.source();
    }
    if causes.is_empty() {
        // No underlying cause (e.g. a builder error): reqwest's text is all there is.
        return format!("{kind}: {error}");
    }
    format!("{kind}: {}", causes.join(": "))
}

/// The first `max` characters of a body, for error messages.
pub(crate) fn snippet(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut out: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lookup_follows_objects_and_array_indexes() {
        let document = json!({"data": {"items": [{"name": "a"}, {"name": "b"}], "0": "key"}});
        assert_eq!(lookup(&document, "data.items.1.name"), Some(&json!("b")));
        assert_eq!(lookup(&document, "data.0"), Some(&json!("key")));
        assert_eq!(lookup(&document, "data.items.2.name"), None);
        assert_eq!(lookup(&document, "data.items.x"), None);
        assert_eq!(lookup(&document, "data.items.-1"), None);
        assert_eq!(lookup(&document, "data.items.0.name.more"), None);
        assert_eq!(lookup(&document, ""), Some(&document));
    }

    #[test]
    fn snippet_is_bounded_and_single_line() {
        assert_eq!(snippet(b"  a\n b  ", 10), "a b");
        assert_eq!(snippet("é".repeat(5).as_bytes(), 2), "éé…");
    }
}
