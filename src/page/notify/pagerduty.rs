//! PagerDuty Events API v2: the events nightshift sends, built so that PagerDuty never
//! refuses them for their shape: `summary` cut to 1024 characters on a character boundary,
//! `dedup_key` at most 255, a known severity, and the whole event under 512 KB (details are
//! shrunk, never the page dropped). Protocol facts: protocols.md §3.

use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// PagerDuty refuses a summary longer than this.
pub const SUMMARY_LIMIT: usize = 1024;
/// PagerDuty refuses a dedup key longer than this.
pub const DEDUP_KEY_LIMIT: usize = 255;
/// PagerDuty refuses an event larger than this; stay a little under it.
pub const EVENT_LIMIT: usize = 512 * 1024 - 4 * 1024;

/// `trigger` or `resolve` (nightshift never acknowledges for a human).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Trigger,
    Resolve,
}

/// The dedup key of an Alertmanager group, as Alertmanager's own PagerDuty integration makes
/// it (lowercase hex SHA-256 of the group key), so switching to nightshift keeps incident
/// granularity and keys.
pub fn group_dedup_key(group_key: &str) -> String {
    hex::encode(Sha256::digest(group_key.as_bytes()))
}

/// The dedup key of one incident (`dedup = "incident"`): its ID, which is URL-safe, stable
/// across re-sends and restarts, and short.
pub fn incident_dedup_key(incident_id: &str) -> String {
    let key = format!("nightshift/{incident_id}");
    truncate_chars(&key, DEDUP_KEY_LIMIT).to_owned()
}

/// `text` cut to at most `limit` characters, on a character boundary.
pub fn truncate_chars(text: &str, limit: usize) -> &str {
    match text.char_indices().nth(limit) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// What goes into a trigger.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trigger {
    pub summary: String,
    pub source: String,
    /// `critical`, `error`, `warning` or `info`.
    pub severity: String,
    pub timestamp: Option<String>,
    pub component: Option<String>,
    pub group: Option<String>,
    pub class: Option<String>,
    pub custom_details: Map<String, Value>,
    /// (href, text)
    pub links: Vec<(String, String)>,
    pub client_url: Option<String>,
}

/// A trigger event, within every PagerDuty limit. Details that do not fit are replaced,
/// largest first, by a note saying they were cut (the whole set is in the bundle).
pub fn trigger_event(routing_key: &str, dedup_key: &str, trigger: &Trigger) -> Value {
    let severity = match trigger.severity.as_str() {
        "critical" | "error" | "warning" | "info" => trigger.severity.as_str(),
        // An unknown severity would get a 400 that is never retried: page as error instead.
        _ => "error",
    };
    let mut payload = json!({
        "summary": truncate_chars(&trigger.summary, SUMMARY_LIMIT),
        "source": if trigger.source.is_empty() { "nightshift" } else { trigger.source.as_str() },
        "severity": severity,
        "custom_details": trigger.custom_details,
    });
    for (field, value) in [
        ("timestamp", &trigger.timestamp),
        ("component", &trigger.component),
        ("group", &trigger.group),
        ("class", &trigger.class),
    ] {
        if let Some(value) = value {
            payload[field] = Value::String(value.clone());
        }
    }
    let links: Vec<Value> = trigger
        .links
        .iter()
        .filter(|(href, _)| !href.is_empty())
        .map(|(href, text)| json!({"href": href, "text": text}))
        .collect();
    let mut event = json!({
        "routing_key": routing_key,
        "event_action": Action::Trigger,
        "dedup_key": truncate_chars(dedup_key, DEDUP_KEY_LIMIT),
        "payload": payload,
        "links": links,
        "client": "nightshift",
    });
    if let Some(url) = &trigger.client_url {
        event["client_url"] = Value::String(url.clone());
    }
    shrink(&mut event);
    event
}

/// A resolve event: only the routing key it was triggered with, and the dedup key.
pub fn resolve_event(routing_key: &str, dedup_key: &str) -> Value {
    json!({
        "routing_key": routing_key,
        "event_action": Action::Resolve,
        "dedup_key": truncate_chars(dedup_key, DEDUP_KEY_LIMIT),
    })
}

/// A change event (`/v2/change/enqueue`): what nightshift changed, on the service timeline.
pub fn change_event(
    routing_key: &str,
    summary: &str,
    timestamp: &str,
    custom_details: Map<String, Value>,
) -> Value {
    let mut event = json!({
        "routing_key": routing_key,
        "payload": {
            "summary": truncate_chars(summary, SUMMARY_LIMIT),
            "source": "nightshift",
            "timestamp": timestamp,
            "custom_details": custom_details,
        },
    });
    shrink(&mut event);
    event
}

fn size(event: &Value) -> usize {
    serde_json::to_vec(event).map_or(usize::MAX, |bytes| bytes.len())
}

/// Replace custom details, largest first, until the event fits.
fn shrink(event: &mut Value) {
    while size(event) > EVENT_LIMIT {
        let Some(details) = event["payload"]["custom_details"].as_object_mut() else {
            return;
        };
        let largest = details
            .iter()
            .filter(|(_, value)| {
                !value.is_string() || value.as_str().is_some_and(|s| !s.starts_with("<cut:"))
            })
            .max_by_key(|(_, value)| value.to_string().len())
            .map(|(key, value)| (key.clone(), value.to_string().len()));
        match largest {
            Some((key, bytes)) => {
                details.insert(
                    key,
                    Value::String(format!("<cut: {bytes} bytes; see the incident's bundle>")),
                );
            }
            None => return,
        }
    }
}

/// What PagerDuty's answer means for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Accepted,
    /// 429, 5xx, a timeout or a connection error: try again later.
    Retry(String),
    /// 400: the event is invalid and never will be valid; the reasons PagerDuty gave.
    Rejected(Vec<String>),
}

/// Read an HTTP status and body from PagerDuty.
pub fn interpret(status: u16, body: &str) -> Delivery {
    match status {
        200..=299 => Delivery::Accepted,
        429 => Delivery::Retry("PagerDuty rate limit (429)".to_owned()),
        400 => {
            let errors = serde_json::from_str::<Value>(body)
                .ok()
                .and_then(|v| v["errors"].as_array().cloned())
                .map(|list| {
                    list.iter()
                        .filter_map(|e| e.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_else(|| vec![truncate_chars(body, 512).to_owned()]);
            Delivery::Rejected(errors)
        }
        500..=599 => Delivery::Retry(format!("PagerDuty error {status}")),
        // Other 4xx (403 for a disabled integration, 404, 413): nothing to gain by retrying
        // the same event; keep the answer for a human.
        _ => Delivery::Rejected(vec![format!(
            "HTTP {status}: {}",
            truncate_chars(body, 512)
        )]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_keys_hash_as_alertmanager_does() {
        // The example from protocols.md §2.
        assert_eq!(
            group_dedup_key("{}/{severity=\"critical\"}:{alertname=\"HighLatency\"}"),
            "73042dc50d9d7d783a3772aae2a313acab072425608782aea59917e35ef8ec46"
        );
        assert!(incident_dedup_key(&"x".repeat(400)).chars().count() <= DEDUP_KEY_LIMIT);
    }

    #[test]
    fn summaries_are_cut_on_a_character_boundary() {
        let long = "é".repeat(2000);
        let event = trigger_event(
            "k",
            "d",
            &Trigger {
                summary: long,
                severity: "critical".into(),
                ..Trigger::default()
            },
        );
        let summary = event["payload"]["summary"].as_str().unwrap();
        assert_eq!(summary.chars().count(), SUMMARY_LIMIT);
        assert_eq!(event["payload"]["severity"], "critical");
        assert_eq!(event["payload"]["source"], "nightshift");
    }

    #[test]
    fn an_unknown_severity_is_paged_as_error_rather_than_refused() {
        let event = trigger_event(
            "k",
            "d",
            &Trigger {
                summary: "s".into(),
                severity: "P1".into(),
                ..Trigger::default()
            },
        );
        assert_eq!(event["payload"]["severity"], "error");
    }

    #[test]
    fn oversized_details_are_shrunk_never_the_page() {
        let mut details = Map::new();
        details.insert(
            "probe_results".into(),
            Value::String("x".repeat(600 * 1024)),
        );
        details.insert(
            "note".into(),
            Value::String("status page reports major".into()),
        );
        let event = trigger_event(
            "k",
            "d",
            &Trigger {
                summary: "s".into(),
                severity: "error".into(),
                custom_details: details,
                ..Trigger::default()
            },
        );
        assert!(size(&event) <= EVENT_LIMIT);
        assert_eq!(
            event["payload"]["custom_details"]["note"],
            "status page reports major"
        );
        assert!(
            event["payload"]["custom_details"]["probe_results"]
                .as_str()
                .unwrap()
                .starts_with("<cut: ")
        );
    }

    #[test]
    fn answers_are_read_as_deliver_retry_or_give_up() {
        assert_eq!(
            interpret(202, r#"{"status":"success"}"#),
            Delivery::Accepted
        );
        assert!(matches!(interpret(429, ""), Delivery::Retry(_)));
        assert!(matches!(interpret(503, ""), Delivery::Retry(_)));
        assert_eq!(
            interpret(
                400,
                r#"{"status":"invalid event","message":"Event object is invalid","errors":["Length of 'routing_key' is incorrect (should be 32 characters)"]}"#
            ),
            Delivery::Rejected(vec![
                "Length of 'routing_key' is incorrect (should be 32 characters)".to_owned()
            ])
        );
        assert!(matches!(interpret(403, "disabled"), Delivery::Rejected(_)));
    }

    #[test]
    fn resolves_carry_only_the_keys() {
        let event = resolve_event("k", "d");
        assert_eq!(
            event,
            json!({"routing_key": "k", "event_action": "resolve", "dedup_key": "d"})
        );
        let change = change_event(
            "k",
            "restarted deployment vastai-integration",
            "2026-11-28T03:12:05Z",
            Map::new(),
        );
        assert_eq!(change["payload"]["source"], "nightshift");
        assert!(change.get("event_action").is_none() && change.get("dedup_key").is_none());
    }
}
