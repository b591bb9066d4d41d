//! `http` actions: one request with a fixed method, URL, headers and body.
//!
//! Inputs are data, never code. The scheme and `host[:port]` of the URL are written out in the
//! rule file (`check_fixed_origin` refuses a templated origin at load); templates fill the
//! path, query and fragment, and **every value a `{{ … }}` prints is percent-encoded** (all
//! but the unreserved `A-Za-z0-9-._~`), so a label value can add neither a path segment (`/`),
//! nor a query parameter (`?`, `&`, `=`), nor a fragment (`#`), nor userinfo (`@`), nor an
//! already-encoded sequence (`%` becomes `%25`). After rendering, the URL is parsed and its
//! origin (scheme, userinfo, host, port) must equal the one written in the template.
//!
//! Dot segments: the one thing encoding cannot neutralise is a path segment that is exactly
//! `.` or `..` — the URL standard treats `%2e` as a dot, so `..` and `%2E%2E` alike would be
//! resolved by the parser (`/api/{{ x }}` with `x = ".."` would become `/`). A rendered URL
//! with such a segment is refused. A value like `../../etc` is *not* refused: it is encoded to
//! the single segment `..%2F..%2Fetc`, which a server that follows RFC 3986 routes as one
//! segment. (A server that decodes `%2F` before routing is broken in a way no client can
//! repair; `..%2F` is left to it.)
//!
//! Consequences for rule authors: write `/`, `?`, `&` and `=` outside the braces; `{{ "a/b" }}`
//! prints `a%2Fb` and `| urlencode` would be encoded twice. Literal text (outside `{{ }}`,
//! including inside `{% if %}` blocks) is kept as written.
//!
//! The client must not follow redirects (a redirect could move the call to another host):
//! use [`client_for`], whose clients also ignore the proxy environment variables
//! ([`crate::http_client`]).

use std::time::Duration;

use minijinja::Environment;
use serde::Serialize;
use serde_json::json;

use super::Outcome;
use crate::config::HttpConfig;
use crate::rules::template::Template;

/// How much of a response body is kept.
pub const MAX_BODY_BYTES: usize = 4 * 1024;

/// A request ready to send: every template rendered and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpActionRequest {
    pub method: String,
    pub url: reqwest::Url,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The statuses that mean "done"; empty means any 2xx.
    pub expect_status: Vec<u16>,
    pub timeout: Duration,
}

/// How long [`client`] waits for a connection. A connection that is never made is known not
/// to have delivered anything (`NotApplied`, retryable); an action whose own `timeout` passes
/// first cannot tell and reports `Unknown`, so keep action timeouts above this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A client fit for `http` actions and collectors, through the `[http]` proxy if one is set:
/// redirects are never followed (a redirect could move the call to another host), the proxy
/// environment variables are ignored, connecting is bounded by [`CONNECT_TIMEOUT`]. The rustls
/// crypto provider must be installed first, as the daemon does at start.
pub fn client_for(http: &HttpConfig) -> Result<reqwest::Client, String> {
    crate::http_client::builder(http)?
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .map_err(|error| format!("cannot build the HTTP client: {error}"))
}

/// [`client_for`] with no proxy at all, for callers that have no configuration.
pub fn client() -> Result<reqwest::Client, String> {
    client_for(&HttpConfig::default())
}

/// Percent-encode everything but the unreserved characters of RFC 3986.
pub fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn url_environment() -> Environment<'static> {
    // As for every other template (a missing label renders empty), but every printed value
    // is encoded, `| safe` strings included.
    let mut environment = crate::rules::template::base_environment();
    environment.set_formatter(|out, _state, value| {
        let text = value.to_string();
        out.write_str(&encode_component(&text))
            .map_err(minijinja::Error::from)
    });
    environment
}

thread_local! {
    static URL_ENVIRONMENT: Environment<'static> = url_environment();
}

/// Where the written-out origin of a URL template ends: `scheme://authority`. Refuses a
/// template whose scheme or authority is not literal.
fn literal_origin(template: &str) -> Result<&str, String> {
    let Some((scheme, rest)) = template.split_once("://") else {
        return Err(format!(
            "url {template:?} must start with http:// or https://"
        ));
    };
    if !matches!(scheme, "http" | "https") {
        return Err(format!("url scheme {scheme:?} must be http or https"));
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() || !Template::is_literal(authority) || authority.contains("{#") {
        return Err(format!(
            "url {template:?}: the host must be written out; templates may only fill the path, query and body"
        ));
    }
    Ok(&template[..scheme.len() + 3 + end])
}

type Origin = (String, String, Option<String>, Option<String>, Option<u16>);

fn origin(url: &reqwest::Url) -> Origin {
    (
        url.scheme().to_owned(),
        url.username().to_owned(),
        url.password().map(str::to_owned),
        url.host_str().map(str::to_owned),
        url.port_or_known_default(),
    )
}

/// A path segment the URL parser would resolve: `.` or `..`, in any `%2e` spelling.
fn is_dot_segment(segment: &str) -> bool {
    let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
    decoded == "." || decoded == ".."
}

/// Render an `http` action's URL template: values printed by `{{ … }}` are percent-encoded,
/// the origin must be the template's written-out one, and no path segment may be `.` or
/// `..` (see the module documentation).
pub fn render_url(template: &str, context: &impl Serialize) -> Result<reqwest::Url, String> {
    let prefix = literal_origin(template)?;
    let expected = reqwest::Url::parse(&format!("{prefix}/"))
        .map_err(|error| format!("url {template:?}: invalid origin {prefix:?}: {error}"))?;
    let rendered = URL_ENVIRONMENT.with(|environment| {
        let value = minijinja::Value::from(minijinja::value::Serde(context));
        environment
            .render_str(template, value)
            .map_err(|error| format!("url: template error: {error}"))
    })?;
    // Literal text renders as written, so the origin must still be there, untouched.
    let Some(rest) = rendered.strip_prefix(prefix) else {
        return Err(format!(
            "url {rendered:?}: the rendered URL does not start with {prefix:?}; refused"
        ));
    };
    if !(rest.is_empty() || rest.starts_with(['/', '?', '#'])) {
        return Err(format!(
            "url {rendered:?}: the rendered URL changes the host; refused"
        ));
    }
    let path = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    if let Some(segment) = path.split(['/', '\\']).find(|s| is_dot_segment(s)) {
        return Err(format!(
            "url {rendered:?}: the path segment {segment:?} would be resolved away; refused"
        ));
    }
    let url = reqwest::Url::parse(&rendered)
        .map_err(|error| format!("url {rendered:?} is not a valid URL: {error}"))?;
    if origin(&url) != origin(&expected) {
        return Err(format!(
            "url {rendered:?}: the rendered origin differs from the rule's {prefix:?}; refused"
        ));
    }
    Ok(url)
}

/// The error and its causes on one line (reqwest's top-level message alone says little).
fn describe(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// The first `MAX_BODY_BYTES` of the body, lossily decoded; a body that fails or times out
/// half-way keeps what arrived.
async fn read_body(response: &mut reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_BODY_BYTES - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

fn snippet(body: &str) -> String {
    let line = body
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let mut short: String = line.chars().take(200).collect();
    if short.len() < line.len() {
        short.push('…');
    }
    short
}

/// Send the request once and say what is known about its effect.
///
/// * an expected status (`expect_status`, or any 2xx when empty) → `Done { status, body }`;
/// * no connection was made (refused, DNS, TLS handshake) → `NotApplied`, retryable;
/// * 409 or 429 → `NotApplied`, retryable (the server says it did not act);
/// * any other 4xx → `Failed`;
/// * 5xx, a timeout once connected, a connection lost after sending, an unexpected 2xx or a
///   3xx (redirects are not followed) → `Unknown`: there is no read-back for an `http`
///   action, so the caller escalates.
/// * a method or header the HTTP library refuses → `Failed` (nothing was sent).
pub async fn run(client: &reqwest::Client, request: &HttpActionRequest) -> Outcome {
    let method = match reqwest::Method::from_bytes(request.method.as_bytes()) {
        Ok(method) => method,
        Err(_) => {
            return Outcome::Failed {
                error: format!("invalid method {:?}", request.method),
            };
        }
    };
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &request.headers {
        let name = match reqwest::header::HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => name,
            Err(_) => {
                return Outcome::Failed {
                    error: format!("invalid header name {name:?}"),
                };
            }
        };
        let value = match reqwest::header::HeaderValue::from_str(value) {
            Ok(value) => value,
            Err(_) => {
                return Outcome::Failed {
                    error: format!("header {name}: the value holds characters a header cannot"),
                };
            }
        };
        headers.append(name, value);
    }
    let sent = client
        .request(method, request.url.clone())
        .headers(headers)
        .body(request.body.clone())
        .timeout(request.timeout)
        .send()
        .await;
    let mut response = match sent {
        Ok(response) => response,
        Err(error) if error.is_connect() => {
            return Outcome::NotApplied {
                error: format!("could not connect: {}", describe(&error)),
                retryable: true,
            };
        }
        Err(error) if error.is_timeout() => {
            return Outcome::Unknown {
                error: format!(
                    "no answer within {}; the request may have been received",
                    crate::duration::Shown(request.timeout)
                ),
            };
        }
        Err(error) if error.is_builder() => {
            return Outcome::Failed {
                error: format!("invalid request: {}", describe(&error)),
            };
        }
        Err(error) => {
            return Outcome::Unknown {
                error: format!("the request failed after connecting: {}", describe(&error)),
            };
        }
    };
    let status = response.status();
    let code = status.as_u16();
    let body = read_body(&mut response).await;
    let expected = if request.expect_status.is_empty() {
        status.is_success()
    } else {
        request.expect_status.contains(&code)
    };
    if expected {
        return Outcome::Done {
            detail: json!({ "status": code, "body": body }),
        };
    }
    let mut message = format!("HTTP {status}");
    let line = snippet(&body);
    if !line.is_empty() {
        message.push_str(": ");
        message.push_str(&line);
    }
    match code {
        409 | 429 => Outcome::NotApplied {
            error: message,
            retryable: true,
        },
        400..=499 => Outcome::Failed { error: message },
        200..=299 => Outcome::Unknown {
            error: format!("{message} (the rule expects {:?})", request.expect_status),
        },
        _ => Outcome::Unknown { error: message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_all_but_unreserved() {
        assert_eq!(encode_component("aZ09-._~"), "aZ09-._~");
        assert_eq!(
            encode_component("../x?y=1&z=2#@%/ é"),
            "..%2Fx%3Fy%3D1%26z%3D2%23%40%25%2F%20%C3%A9"
        );
    }

    #[test]
    fn values_are_encoded_literal_text_is_not() {
        let context = json!({"labels": {"a": "x/y", "n": null}});
        let url = render_url(
            "https://h.example.com:8443/p/{{ labels.a }}/{{ labels.a | safe }}?q={{ labels.a }}&m={{ labels.missing }}",
            &context,
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://h.example.com:8443/p/x%2Fy/x%2Fy?q=x%2Fy&m="
        );
    }

    #[test]
    fn dot_segments_and_moved_origins_are_refused() {
        let template = "https://h.example.com/api/{{ labels.a }}/x";
        for value in ["..", "."] {
            let context = json!({"labels": {"a": value}});
            let error = render_url(template, &context).unwrap_err();
            assert!(error.contains("resolved away"), "{value}: {error}");
        }
        // `%` is encoded, so an encoded dot in a value stays data.
        for (value, path) in [("%2e%2E", "/api/%252e%252E/x"), (".%2e", "/api/.%252e/x")] {
            let context = json!({"labels": {"a": value}});
            assert_eq!(render_url(template, &context).unwrap().path(), path);
        }
        // A dot segment written in the rule, in any spelling, is refused too.
        for template in [
            "https://h.example.com/a/%2E%2e/x",
            "https://h.example.com/a/./x",
        ] {
            assert!(render_url(template, &json!({})).is_err(), "{template}");
        }
        let context = json!({"labels": {"h": "evil.com"}});
        for template in [
            "https://{{ labels.h }}/x",
            "https://h.example.com{{ labels.h }}/x",
            "https://h.example.com:{{ labels.h }}/x",
            "https://u@{{ labels.h }}/x",
            "ftp://h.example.com/{{ labels.h }}",
            "//h.example.com/x",
            "https://h.example.com/../x",
        ] {
            assert!(render_url(template, &context).is_err(), "{template}");
        }
    }
}
