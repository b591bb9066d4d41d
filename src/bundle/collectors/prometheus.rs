//! prometheus: the `prometheus_range` and `prometheus_query` collectors.
//!
//! `prometheus_range` writes `range.json` (the API's body as it came) and `range.csv`;
//! `prometheus_query` writes `query.json` and `query.csv`. CSV columns `series,timestamp,value`,
//! one row per sample: `series` is the labels as `{a="b",…}` (sorted, `__name__` included,
//! escaped as PromQL does), `timestamp` RFC 3339 in UTC with milliseconds, `value` the sample
//! text as Prometheus gave it (`NaN`, `+Inf` kept; a native histogram's observation count).
//! URLs are tried in order: a connection error, a 5xx, or an answer that is not the API's
//! envelope moves on to the next; the API's own error (`"status": "error"` with a 4xx) is the
//! answer, and the collector `failed` with its `errorType: error`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use super::files::{Files, Keep};
use super::{Budget, Collected, Failure, MAX_API_BODY};
use crate::clock::Millis;
use crate::probes::http::{describe_error, read_body, snippet};

/// Prometheus URLs after the first get at least this long each, however little is left.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);

/// `GET {url}/api/v1/{endpoint}` against each URL in turn; `{stem}.json` and `{stem}.csv`.
pub(super) async fn collect(
    client: &reqwest::Client,
    urls: &[String],
    endpoint: &str,
    stem: &str,
    params: Vec<(&str, String)>,
    budget: Budget,
    files: &mut Files,
) -> Collected {
    if urls.is_empty() {
        return Err(Failure::Failed(
            "no Prometheus URL: [prometheus] urls is empty".to_owned(),
        ));
    }
    let mut errors = Vec::new();
    for (index, base) in urls.iter().enumerate() {
        let last = index + 1 == urls.len();
        // Share what is left among the URLs not tried yet, so that one that hangs cannot
        // use up the time of the others; the last one has whatever is left (the
        // collector's own timeout bounds it).
        let attempt = if last {
            None
        } else {
            let remaining = u32::try_from(urls.len() - index).unwrap_or(u32::MAX);
            Some((budget.left() / remaining).max(MIN_ATTEMPT))
        };
        match prometheus_attempt(client, base, endpoint, &params, attempt, budget).await {
            Attempt::Answer(body) => {
                return prometheus_files(base, stem, body, files);
            }
            Attempt::NextUrl(error) => errors.push(format!("{base}: {error}")),
        }
    }
    let query = params
        .iter()
        .find(|(name, _)| *name == "query")
        .map(|(_, query)| query.as_str())
        .unwrap_or_default();
    Err(Failure::Failed(format!(
        "{endpoint} {query:?} failed on every Prometheus URL: {}",
        errors.join("; ")
    )))
}

enum Attempt {
    /// The API answered (a success, or its own error for the query): no other URL is tried.
    Answer(Vec<u8>),
    /// This URL could not answer; try the next.
    NextUrl(String),
}

async fn prometheus_attempt(
    client: &reqwest::Client,
    base: &str,
    endpoint: &str,
    params: &[(&str, String)],
    attempt: Option<Duration>,
    budget: Budget,
) -> Attempt {
    let address = format!("{}/api/v1/{endpoint}", base.trim_end_matches('/'));
    let mut url = match reqwest::Url::parse(&address) {
        Ok(url) => url,
        Err(error) => return Attempt::NextUrl(format!("invalid URL: {error}")),
    };
    {
        let mut pairs = url.query_pairs_mut();
        for (name, value) in params {
            pairs.append_pair(name, value);
        }
        // Let Prometheus give up on the query when this collector does.
        let timeout = attempt.unwrap_or_else(|| budget.left()).max(MIN_ATTEMPT);
        pairs.append_pair("timeout", &format!("{:.3}", timeout.as_secs_f64()));
    }
    let mut builder = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json");
    if let Some(attempt) = attempt {
        builder = builder.timeout(attempt);
    }
    let response = match builder.send().await {
        Ok(response) => response,
        Err(error) => return Attempt::NextUrl(describe_error(&error)),
    };
    let status = response.status();
    let body = match read_body(response, MAX_API_BODY).await {
        Ok(body) => body,
        Err(error) if status.is_success() => return Attempt::NextUrl(error),
        Err(_) => Vec::new(),
    };
    let envelope = serde_json::from_slice::<Value>(&body)
        .ok()
        .filter(|envelope| envelope.get("status").and_then(Value::as_str).is_some());
    if status.is_server_error() || envelope.is_none() {
        let detail = match &envelope {
            Some(envelope) => api_error(envelope),
            None => snippet(&body, 200),
        };
        let code = status.as_u16();
        return Attempt::NextUrl(match (status.is_success(), detail.is_empty()) {
            (true, _) => format!("not a Prometheus API response: {detail}"),
            (false, true) => format!("HTTP {code}"),
            (false, false) => format!("HTTP {code}: {detail}"),
        });
    }
    Attempt::Answer(body)
}

fn api_error(envelope: &Value) -> String {
    let text = |name: &str| envelope.get(name).and_then(Value::as_str).unwrap_or("");
    match (text("errorType"), text("error")) {
        ("", "") => String::new(),
        (kind, "") => kind.to_owned(),
        ("", error) => error.to_owned(),
        (kind, error) => format!("{kind}: {error}"),
    }
}

/// `{stem}.json` as the API gave it, then `{stem}.csv`; failed when the API said `error`.
fn prometheus_files(base: &str, stem: &str, body: Vec<u8>, files: &mut Files) -> Collected {
    let envelope: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    files.add(format!("{stem}.json"), body, Keep::Head);
    if envelope["status"] != "success" {
        return Err(Failure::Failed(format!(
            "{base}: status {}: {}",
            envelope["status"],
            api_error(&envelope)
        )));
    }
    let data = &envelope["data"];
    let result_type = data["resultType"].as_str().unwrap_or_default();
    let csv = result_csv(result_type, &data["result"])
        .map_err(|error| Failure::Failed(format!("{base}: {error}")))?;
    files.add(format!("{stem}.csv"), csv, Keep::Head);
    Ok(None)
}

/// A query's result as CSV: `series,timestamp,value`, one row per sample.
fn result_csv(result_type: &str, result: &Value) -> Result<Vec<u8>, String> {
    let mut csv = String::from("series,timestamp,value\n");
    let mut row = |series: &str, pair: &Value| -> Result<(), String> {
        let (timestamp, value) = sample_text(pair)?;
        csv.push_str(&csv_field(series));
        csv.push(',');
        csv.push_str(&timestamp);
        csv.push(',');
        csv.push_str(&csv_field(&value));
        csv.push('\n');
        Ok(())
    };
    let series_list = || {
        result
            .as_array()
            .ok_or_else(|| format!("{result_type} result is not a list"))
    };
    match result_type {
        "matrix" => {
            for series in series_list()? {
                let name = series_name(&series["metric"]);
                let samples = series["values"].as_array().into_iter().flatten();
                let histograms = series["histograms"].as_array().into_iter().flatten();
                for pair in samples.chain(histograms) {
                    row(&name, pair)?;
                }
            }
        }
        "vector" => {
            for series in series_list()? {
                let name = series_name(&series["metric"]);
                match (series.get("value"), series.get("histogram")) {
                    (Some(pair), _) | (None, Some(pair)) => row(&name, pair)?,
                    (None, None) => {
                        return Err("vector sample has neither value nor histogram".to_owned());
                    }
                }
            }
        }
        "scalar" | "string" => row("", result)?,
        other => return Err(format!("unknown resultType {other:?}")),
    }
    Ok(csv.into_bytes())
}

/// `[<unix seconds>, "<value>"]` (or a native histogram, `[ts, {"count": …}]`) → the time in
/// RFC 3339 and the value as written.
fn sample_text(pair: &Value) -> Result<(String, String), String> {
    let malformed = || {
        format!(
            "malformed sample {}",
            snippet(pair.to_string().as_bytes(), 100)
        )
    };
    let seconds = pair.get(0).and_then(Value::as_f64).ok_or_else(malformed)?;
    let value = match pair.get(1) {
        Some(Value::String(value)) => value.clone(),
        Some(histogram @ Value::Object(_)) => histogram
            .get("count")
            .and_then(Value::as_str)
            .ok_or_else(malformed)?
            .to_owned(),
        _ => return Err(malformed()),
    };
    // Float seconds with millisecond precision, as Prometheus writes them.
    #[allow(clippy::cast_possible_truncation)]
    let millis = (seconds * 1000.0).round() as i64;
    let time = DateTime::<Utc>::from_timestamp_millis(millis).ok_or_else(malformed)?;
    Ok((time.to_rfc3339_opts(SecondsFormat::Millis, true), value))
}

/// `{a="b",c="d"}`, sorted, values escaped as in PromQL; `{}` for no labels.
fn series_name(metric: &Value) -> String {
    let labels: BTreeMap<&str, &str> = metric
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, value)| (name.as_str(), value.as_str().unwrap_or_default()))
        .collect();
    let inner: Vec<String> = labels
        .iter()
        .map(|(name, value)| {
            let escaped = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{name}=\"{escaped}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// A CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Unix milliseconds as the seconds Prometheus takes: `1700000000.123`.
pub(super) fn unix_seconds(millis: Millis) -> String {
    format!("{}.{:03}", millis.div_euclid(1000), millis.rem_euclid(1000))
}

/// A step as float seconds: `15`, `0.5`.
pub(super) fn duration_seconds(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        duration.as_secs().to_string()
    } else {
        format!("{}.{:03}", duration.as_secs(), duration.subsec_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_of_each_result_type() {
        let matrix = json!([
            {"metric": {"job": "a", "__name__": "up"}, "values": [[1700000000, "1"], [1700000015.5, "NaN"]]},
            {"metric": {"le": "a\"b,c"}, "histograms": [[1700000000, {"count": "7", "sum": "3"}]]}
        ]);
        assert_eq!(
            String::from_utf8(result_csv("matrix", &matrix).unwrap()).unwrap(),
            "series,timestamp,value\n\
             \"{__name__=\"\"up\"\",job=\"\"a\"\"}\",2023-11-14T22:13:20.000Z,1\n\
             \"{__name__=\"\"up\"\",job=\"\"a\"\"}\",2023-11-14T22:13:35.500Z,NaN\n\
             \"{le=\"\"a\\\"\"b,c\"\"}\",2023-11-14T22:13:20.000Z,7\n"
        );
        let vector = json!([{"metric": {}, "value": [1700000000.25, "+Inf"]}]);
        assert_eq!(
            String::from_utf8(result_csv("vector", &vector).unwrap()).unwrap(),
            "series,timestamp,value\n{},2023-11-14T22:13:20.250Z,+Inf\n"
        );
        assert_eq!(
            String::from_utf8(result_csv("scalar", &json!([1700000000, "2"])).unwrap()).unwrap(),
            "series,timestamp,value\n,2023-11-14T22:13:20.000Z,2\n"
        );
        assert!(result_csv("vector", &json!([{"metric": {}}])).is_err());
        assert!(result_csv("matrix", &json!({})).is_err());
        assert!(result_csv("other", &json!([])).is_err());
    }

    #[test]
    fn times_as_prometheus_takes_them() {
        assert_eq!(unix_seconds(1_700_000_000_123), "1700000000.123");
        assert_eq!(unix_seconds(5), "0.005");
        assert_eq!(unix_seconds(-1), "-1.999");
        assert_eq!(duration_seconds(Duration::from_secs(15)), "15");
        assert_eq!(duration_seconds(Duration::from_millis(500)), "0.500");
    }
}
