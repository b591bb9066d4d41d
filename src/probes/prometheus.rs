//! `prometheus` probe: an instant query (`GET <url>/api/v1/query?query=…`), tried against each
//! URL in order until one answers `"status": "success"`. A connection error, a timeout, a
//! non-2xx answer (a redirect included: none is followed), a body that is not the API envelope
//! or `"status": "error"` moves on to the next URL; when every URL fails the error names what
//! each one said.
//!
//! Fields: `value` (the scalar, or the first sample of a vector, 0.0 when the vector is
//! empty), `empty`, `vector` (`[{labels, value}]`) and `url` (the URL that answered).
//!
//! Sample values arrive as strings and may be `"NaN"`, `"+Inf"` or `"-Inf"`, which JSON (and
//! so the rule's view of the result) cannot hold: infinities are reported as the largest
//! finite float of the same sign (comparisons still come out right) and NaN as `null`.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::http::{MAX_BODY_BYTES, describe_error, read_body, redirect_refusal, snippet};
use super::{ProbeKind, ProbeResult};

/// The least time an attempt is given, however little of the budget is left.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    #[serde(default)]
    result: Value,
}

/// What one URL answered.
struct Answer {
    value: Value,
    empty: bool,
    vector: Vec<Value>,
}

pub async fn probe(
    client: &reqwest::Client,
    query: &str,
    urls: &[String],
    timeout: Duration,
) -> ProbeResult {
    if urls.is_empty() {
        return ProbeResult::failure(
            ProbeKind::Prometheus,
            "no Prometheus URL: the probe names none and [prometheus] urls is empty",
        );
    }
    let started = Instant::now();
    // Keep a little of the caller's timeout back, so that when every URL is slow this
    // function still reports what each said before the caller gives up on it.
    let budget = timeout.saturating_sub(timeout / 20);
    let mut errors = Vec::new();
    for (index, url) in urls.iter().enumerate() {
        // Share what is left of the budget among the URLs not yet tried, so that a URL
        // that hangs cannot use up the time the backups need.
        let left = budget.saturating_sub(started.elapsed());
        let remaining_urls = u32::try_from(urls.len() - index).unwrap_or(u32::MAX);
        let attempt = (left / remaining_urls).max(MIN_ATTEMPT);
        match query_one(client, url, query, attempt).await {
            Ok(answer) => {
                let mut fields = Map::new();
                fields.insert("value".to_owned(), answer.value);
                fields.insert("empty".to_owned(), Value::Bool(answer.empty));
                fields.insert("vector".to_owned(), Value::Array(answer.vector));
                fields.insert("url".to_owned(), Value::String(url.clone()));
                return ProbeResult::success(fields);
            }
            Err(error) => errors.push(format!("{url}: {error}")),
        }
    }
    ProbeResult::failure(
        ProbeKind::Prometheus,
        format!(
            "query {query:?} failed on every Prometheus URL: {}",
            errors.join("; ")
        ),
    )
}

async fn query_one(
    client: &reqwest::Client,
    base: &str,
    query: &str,
    timeout: Duration,
) -> Result<Answer, String> {
    let endpoint = format!("{}/api/v1/query", base.trim_end_matches('/'));
    let mut url =
        reqwest::Url::parse(&endpoint).map_err(|error| format!("invalid URL: {error}"))?;
    url.query_pairs_mut()
        .append_pair("query", query)
        // Let Prometheus give up on the query when we do.
        .append_pair("timeout", &format!("{:.3}", timeout.as_secs_f64()));
    let response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(timeout)
        .send()
        .await
        .map_err(|error| describe_error(&error))?;
    if let Some(refusal) = redirect_refusal(&response) {
        return Err(refusal);
    }
    let status = response.status();
    let body = match read_body(response, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(error) if status.is_success() => return Err(error),
        Err(_) => Vec::new(),
    };
    let envelope = serde_json::from_slice::<Envelope>(&body);
    if !status.is_success() {
        // The API's own errors come with an envelope; a proxy's may not.
        let detail = match &envelope {
            Ok(envelope) => api_error(envelope),
            Err(_) => snippet(&body, 200),
        };
        return Err(if detail.is_empty() {
            format!("HTTP {}", status.as_u16())
        } else {
            format!("HTTP {}: {detail}", status.as_u16())
        });
    }
    let envelope = envelope.map_err(|error| format!("not a Prometheus API response: {error}"))?;
    if envelope.status != "success" {
        return Err(format!(
            "status {:?}: {}",
            envelope.status,
            api_error(&envelope)
        ));
    }
    let data = envelope
        .data
        .ok_or_else(|| "status \"success\" without data".to_owned())?;
    parse_result(&data.result_type, &data.result)
}

fn api_error(envelope: &Envelope) -> String {
    match (&envelope.error_type, &envelope.error) {
        (Some(kind), Some(error)) => format!("{kind}: {error}"),
        (None, Some(error)) => error.clone(),
        (Some(kind), None) => kind.clone(),
        (None, None) => String::new(),
    }
}

fn parse_result(result_type: &str, result: &Value) -> Result<Answer, String> {
    match result_type {
        "vector" => {
            let series = result
                .as_array()
                .ok_or_else(|| "vector result is not a list".to_owned())?;
            let mut vector = Vec::with_capacity(series.len());
            for sample in series {
                let labels = match sample.get("metric") {
                    Some(Value::Object(labels)) => Value::Object(labels.clone()),
                    None | Some(Value::Null) => Value::Object(Map::new()),
                    Some(_) => return Err("vector sample has a malformed metric".to_owned()),
                };
                let value = if let Some(pair) = sample.get("value") {
                    sample_value(pair)?
                } else if let Some(pair) = sample.get("histogram") {
                    // A native histogram has no single value; its observation count is the
                    // closest thing to one.
                    histogram_count(pair)?
                } else {
                    return Err("vector sample has neither value nor histogram".to_owned());
                };
                vector.push(json!({"labels": labels, "value": value}));
            }
            let value = vector
                .first()
                .map(|sample| sample["value"].clone())
                .unwrap_or_else(|| json!(0.0));
            Ok(Answer {
                value,
                empty: vector.is_empty(),
                vector,
            })
        }
        "scalar" => Ok(Answer {
            value: sample_value(result)?,
            empty: false,
            vector: Vec::new(),
        }),
        "string" => {
            // A string result is a number only if it reads as one.
            let text = result
                .get(1)
                .and_then(Value::as_str)
                .ok_or_else(|| "malformed string result".to_owned())?;
            let value = parse_number(text).map_err(|_| {
                format!("query returned a string, not a number: {}", snippet(text.as_bytes(), 100))
            })?;
            Ok(Answer {
                value,
                empty: false,
                vector: Vec::new(),
            })
        }
        "matrix" => Err(
            "query returned a range vector (matrix); an instant probe needs an instant vector or a scalar"
                .to_owned(),
        ),
        other => Err(format!("unknown resultType {other:?}")),
    }
}

/// `[<unix seconds>, "<value>"]` → the value.
fn sample_value(pair: &Value) -> Result<Value, String> {
    let text = pair.get(1).and_then(Value::as_str).ok_or_else(|| {
        format!(
            "malformed sample {}",
            snippet(pair.to_string().as_bytes(), 100)
        )
    })?;
    parse_number(text)
}

/// `[<unix seconds>, {"count": "<n>", …}]` → the count.
fn histogram_count(pair: &Value) -> Result<Value, String> {
    let text = pair
        .get(1)
        .and_then(|histogram| histogram.get("count"))
        .and_then(Value::as_str)
        .ok_or_else(|| "malformed histogram sample".to_owned())?;
    parse_number(text)
}

/// Prometheus' float text (Go's `strconv.FormatFloat`, with `NaN`, `+Inf`, `-Inf`) as JSON.
fn parse_number(text: &str) -> Result<Value, String> {
    let number: f64 = match text.trim() {
        "NaN" => return Ok(Value::Null),
        "+Inf" | "Inf" => f64::MAX,
        "-Inf" => f64::MIN,
        other => other
            .parse()
            .map_err(|_| format!("sample value {other:?} is not a number"))?,
    };
    if number.is_nan() {
        return Ok(Value::Null);
    }
    let finite = if number.is_infinite() {
        number.signum() * f64::MAX
    } else {
        number
    };
    Ok(json!(finite))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_special_float_values() {
        assert_eq!(parse_number("1.5").unwrap(), json!(1.5));
        assert_eq!(parse_number("+Inf").unwrap(), json!(f64::MAX));
        assert_eq!(parse_number("-Inf").unwrap(), json!(f64::MIN));
        assert_eq!(parse_number("NaN").unwrap(), Value::Null);
        assert_eq!(parse_number("1e400").unwrap(), json!(f64::MAX));
        assert!(parse_number("abc").is_err());
    }

    #[test]
    fn parses_vector_scalar_and_string_results() {
        let vector = json!([
            {"metric": {"__name__": "up", "job": "a"}, "value": [1.0, "1"]},
            {"metric": {"job": "b"}, "histogram": [1.0, {"count": "7", "sum": "3"}]}
        ]);
        let answer = parse_result("vector", &vector).unwrap();
        assert_eq!(answer.value, json!(1.0));
        assert!(!answer.empty);
        assert_eq!(
            answer.vector[1],
            json!({"labels": {"job": "b"}, "value": 7.0})
        );

        let answer = parse_result("vector", &json!([])).unwrap();
        assert_eq!(answer.value, json!(0.0));
        assert!(answer.empty);

        let answer = parse_result("scalar", &json!([1.0, "-Inf"])).unwrap();
        assert_eq!(answer.value, json!(f64::MIN));

        assert_eq!(
            parse_result("string", &json!([1.0, "42"])).unwrap().value,
            json!(42.0)
        );
        assert!(parse_result("string", &json!([1.0, "hello"])).is_err());
        assert!(parse_result("matrix", &json!([])).is_err());
    }
}
