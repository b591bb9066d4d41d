//! `statuspage` probe: GET an Atlassian Statuspage `/api/v2/status.json` and report its
//! rollup `indicator` (`none`, `minor`, `major`, `critical`, `maintenance`, anything else
//! reported as `unknown`) and `description`. A non-2xx answer (a redirect included: none is
//! followed) or a body that is not a status document is a failure.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::http::{MAX_BODY_BYTES, describe_error, read_body, redirect_refusal, snippet};
use super::{ProbeKind, ProbeResult};

/// Indicator values reported as they are; any other is `unknown`.
const KNOWN_INDICATORS: [&str; 5] = ["none", "minor", "major", "critical", "maintenance"];

#[derive(Deserialize)]
struct StatusDocument {
    status: Status,
}

#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    indicator: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

pub async fn probe(client: &reqwest::Client, url: &str) -> ProbeResult {
    let fail = |message: String| ProbeResult::failure(ProbeKind::Statuspage, message);
    let response = match client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
    {
        Ok(response) => response,
        Err(error) => return fail(format!("GET {url}: {}", describe_error(&error))),
    };
    if let Some(refusal) = redirect_refusal(&response) {
        return fail(format!("GET {url}: {refusal}"));
    }
    let status = response.status();
    let body = match read_body(response, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(error) if status.is_success() => return fail(format!("GET {url}: {error}")),
        Err(_) => Vec::new(),
    };
    if !status.is_success() {
        let mut message = format!("GET {url}: HTTP {}", status.as_u16());
        let text = snippet(&body, 200);
        if !text.is_empty() {
            message.push_str(": ");
            message.push_str(&text);
        }
        return fail(message);
    }
    let document: StatusDocument = match serde_json::from_slice(&body) {
        Ok(document) => document,
        Err(error) => {
            return fail(format!(
                "GET {url}: not a Statuspage status document: {error}"
            ));
        }
    };
    let indicator = document
        .status
        .indicator
        .map(|indicator| indicator.trim().to_ascii_lowercase())
        .filter(|indicator| KNOWN_INDICATORS.contains(&indicator.as_str()))
        .unwrap_or_else(|| "unknown".to_owned());
    let mut fields = Map::new();
    fields.insert("indicator".to_owned(), Value::String(indicator));
    fields.insert(
        "description".to_owned(),
        Value::String(document.status.description.unwrap_or_default()),
    );
    ProbeResult::success(fields)
}
