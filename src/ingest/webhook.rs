//! The Alertmanager webhook body (version 4): lenient on what Alertmanager may add, strict on
//! what nightshift needs. Only this module knows the webhook JSON.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub type LabelSet = BTreeMap<String, String>;

/// The longest label value, annotation value or generator URL kept, in bytes, marker included.
/// A longer one is cut, never refused: a 4xx makes Alertmanager drop the whole group, the alerts
/// beside it included, while a value of megabytes would be carried by every later step (store,
/// rules, pages, bundles) of an incident that lasts for days.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;

/// Which kind of value was cut (a bounded metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Label,
    Annotation,
    GroupLabel,
    GeneratorUrl,
}

impl ValueKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueKind::Label => "label",
            ValueKind::Annotation => "annotation",
            ValueKind::GroupLabel => "group_label",
            ValueKind::GeneratorUrl => "generator_url",
        }
    }
}

/// A value cut to `MAX_VALUE_BYTES`: where it was, never what it said. Names are shortened for
/// log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncatedValue {
    /// The alert's `alertname`; empty for group labels.
    pub alertname: String,
    pub kind: ValueKind,
    /// The label or annotation name; empty for a generator URL.
    pub name: String,
    /// The value's length before it was cut, in bytes.
    pub bytes: usize,
}

/// Why a body was refused; becomes a 400 with a JSON body naming the problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PayloadError {
    /// Where in the document: `alerts[2].startsAt`, or `.` for the whole body.
    pub path: String,
    pub message: String,
    /// Bounded label for the rejection metric.
    #[serde(skip)]
    pub reason: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// Maps that Go may encode as `null` are read as empty.
fn null_as_empty<'de, D>(deserializer: D) -> Result<LabelSet, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::<LabelSet>::deserialize(deserializer)?.unwrap_or_default())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMessage {
    version: String,
    #[serde(default)]
    group_key: String,
    #[serde(default)]
    truncated_alerts: u64,
    status: Status,
    #[serde(default)]
    receiver: String,
    alerts: Vec<RawAlert>,
    #[serde(default, deserialize_with = "null_as_empty")]
    group_labels: LabelSet,
    #[serde(default)]
    external_url: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAlert {
    status: Status,
    #[serde(deserialize_with = "null_as_empty")]
    labels: LabelSet,
    #[serde(default, deserialize_with = "null_as_empty")]
    annotations: LabelSet,
    starts_at: String,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
    #[serde(default)]
    fingerprint: String,
}

/// A validated notification: one snapshot of an Alertmanager group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    pub group_key: String,
    pub receiver: String,
    pub status: Status,
    pub truncated_alerts: u64,
    pub group_labels: LabelSet,
    pub external_url: String,
    pub alerts: Vec<Alert>,
    /// Values that were over `MAX_VALUE_BYTES` and were cut, for ingest to count and log.
    #[serde(skip)]
    pub truncated_values: Vec<TruncatedValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub status: Status,
    pub labels: LabelSet,
    pub annotations: LabelSet,
    pub starts_at: DateTime<Utc>,
    /// `None` for the zero time Alertmanager sends with firing alerts.
    pub ends_at: Option<DateTime<Utc>>,
    pub generator_url: String,
    pub fingerprint: String,
}

/// Parse and validate a webhook body.
pub fn parse(body: &[u8]) -> Result<Notification, PayloadError> {
    // The plain parser is the fast path; the path-tracking one, several times slower, runs
    // only to explain a body that failed.
    let raw: RawMessage = match serde_json::from_slice(body) {
        Ok(raw) => raw,
        Err(_) => return Err(explain_invalid(body)),
    };
    if raw.version != "4" {
        return Err(PayloadError {
            path: "version".to_owned(),
            message: format!(
                "expected \"4\" (the only webhook version Alertmanager sends), got {:?}",
                raw.version
            ),
            reason: "unsupported_version",
        });
    }
    let mut truncated_values = Vec::new();
    let mut alerts = Vec::with_capacity(raw.alerts.len());
    for (index, alert) in raw.alerts.into_iter().enumerate() {
        alerts.push(validate_alert(index, alert, &mut truncated_values)?);
    }
    let group_key = if raw.group_key.is_empty() {
        // Older or hand-made senders may omit it; fall back to the receiver and group labels
        // so that snapshots of one group still land together.
        format!("{}:{}", raw.receiver, render_label_set(&raw.group_labels))
    } else {
        raw.group_key
    };
    let mut group_labels = raw.group_labels;
    truncate_values(
        &mut group_labels,
        ValueKind::GroupLabel,
        &mut truncated_values,
    );
    Ok(Notification {
        group_key,
        receiver: raw.receiver,
        status: raw.status,
        truncated_alerts: raw.truncated_alerts,
        group_labels,
        external_url: raw.external_url,
        alerts,
        truncated_values,
    })
}

/// Re-parse an invalid body with path tracking to say where it is wrong.
fn explain_invalid(body: &[u8]) -> PayloadError {
    let deserializer = &mut serde_json::Deserializer::from_slice(body);
    let Err(error) = serde_path_to_error::deserialize::<_, RawMessage>(deserializer) else {
        return PayloadError {
            path: ".".to_owned(),
            message: "invalid webhook body".to_owned(),
            reason: "invalid_json",
        };
    };
    // A syntax error has no field path ("?"): it concerns the document as a whole.
    let path = match error.path().to_string() {
        path if path == "?" => ".".to_owned(),
        path => path,
    };
    let inner = error.into_inner();
    // serde_json files a value of the wrong type for an enum (`"status": null`) as a syntax
    // error too; only a body that is not JSON at all is invalid JSON. Skipping a value does not
    // check its UTF-8, hence the separate check.
    let not_json = || {
        std::str::from_utf8(body).is_err()
            || serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err()
    };
    let reason = if (inner.is_syntax() || inner.is_eof()) && not_json() {
        "invalid_json"
    } else {
        "invalid_field"
    };
    PayloadError {
        path,
        message: inner.to_string(),
        reason,
    }
}

fn validate_alert(
    index: usize,
    raw: RawAlert,
    truncated: &mut Vec<TruncatedValue>,
) -> Result<Alert, PayloadError> {
    let field = |name: &str| format!("alerts[{index}].{name}");
    let starts_at = parse_time(&raw.starts_at).ok_or_else(|| PayloadError {
        path: field("startsAt"),
        message: format!("expected an RFC 3339 time, got {:?}", raw.starts_at),
        reason: "invalid_field",
    })?;
    let ends_at = match raw.ends_at.as_deref() {
        None | Some("") => None,
        Some(text) => {
            let time = parse_time(text).ok_or_else(|| PayloadError {
                path: field("endsAt"),
                message: format!("expected an RFC 3339 time, got {text:?}"),
                reason: "invalid_field",
            })?;
            // Go's zero time marks an alert that has not ended.
            (time.timestamp() > 0).then_some(time)
        }
    };
    let fingerprint = if raw.fingerprint.is_empty() {
        fingerprint(&raw.labels)
    } else if raw.fingerprint.len() <= 64 && raw.fingerprint.bytes().all(|b| b.is_ascii_hexdigit())
    {
        raw.fingerprint.to_ascii_lowercase()
    } else {
        return Err(PayloadError {
            path: field("fingerprint"),
            message: format!(
                "expected up to 64 hexadecimal digits, got {:?}",
                truncate_for_message(&raw.fingerprint)
            ),
            reason: "invalid_field",
        });
    };
    // Cut only now: the fingerprint above is Alertmanager's, of the labels as sent, so that
    // two alerts differing past the cut stay two episodes.
    let (mut labels, mut annotations) = (raw.labels, raw.annotations);
    let mut generator_url = raw.generator_url;
    let cut_before = truncated.len();
    truncate_values(&mut labels, ValueKind::Label, truncated);
    truncate_values(&mut annotations, ValueKind::Annotation, truncated);
    if let Some(bytes) = truncate_value(&mut generator_url) {
        truncated.push(TruncatedValue {
            alertname: String::new(),
            kind: ValueKind::GeneratorUrl,
            name: String::new(),
            bytes,
        });
    }
    if truncated.len() > cut_before {
        let alertname = labels
            .get("alertname")
            .map(|name| truncate_for_message(name))
            .unwrap_or_default();
        for value in &mut truncated[cut_before..] {
            value.alertname.clone_from(&alertname);
        }
    }
    Ok(Alert {
        status: raw.status,
        labels,
        annotations,
        starts_at,
        ends_at,
        generator_url,
        fingerprint,
    })
}

/// Cut every value of `set` over `MAX_VALUE_BYTES`, recording each (the alert's name is filled
/// in by the caller).
fn truncate_values(set: &mut LabelSet, kind: ValueKind, truncated: &mut Vec<TruncatedValue>) {
    for (name, value) in set.iter_mut() {
        if let Some(bytes) = truncate_value(value) {
            truncated.push(TruncatedValue {
                alertname: String::new(),
                kind,
                name: truncate_for_message(name),
                bytes,
            });
        }
    }
}

/// Cut `value` to at most `MAX_VALUE_BYTES` (on a character boundary), ending it with a marker
/// that gives its full length; `Some(full length)` if it was cut.
fn truncate_value(value: &mut String) -> Option<usize> {
    let bytes = value.len();
    if bytes <= MAX_VALUE_BYTES {
        return None;
    }
    let marker = format!("…[truncated: {bytes} bytes]");
    let mut keep = MAX_VALUE_BYTES - marker.len();
    while !value.is_char_boundary(keep) {
        keep -= 1;
    }
    value.truncate(keep);
    value.push_str(&marker);
    // Give back the allocation of the full value.
    value.shrink_to_fit();
    Some(bytes)
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.with_timezone(&Utc))
}

fn truncate_for_message(text: &str) -> String {
    text.chars().take(80).collect()
}

/// Alertmanager's fingerprint of a label set: FNV-1a 64 over sorted names and values, each
/// followed by 0xFF (prometheus/common `model.LabelSet.Fingerprint`).
pub fn fingerprint(labels: &LabelSet) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for &byte in bytes {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    // BTreeMap iterates in bytewise order of the names, which is what Alertmanager sorts by.
    for (name, value) in labels {
        feed(name.as_bytes());
        feed(&[0xff]);
        feed(value.as_bytes());
        feed(&[0xff]);
    }
    format!("{hash:016x}")
}

/// `{a="1", b="2"}`, the way Alertmanager renders a label set in a group key.
fn render_label_set(labels: &LabelSet) -> String {
    let inner: Vec<String> = labels
        .iter()
        .map(|(name, value)| format!("{name}={value:?}"))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/alertmanager")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn real_alertmanager_payloads_parse() {
        for name in [
            "firing-group.json",
            "firing-single.json",
            "group-partially-resolved.json",
            "prometheus-rule-firing.json",
            "prometheus-rule-resolved.json",
            "prometheus-rule-vector1.json",
            "resolved-single.json",
        ] {
            let notification = parse(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!notification.alerts.is_empty(), "{name}");
            for alert in &notification.alerts {
                assert_eq!(alert.fingerprint, fingerprint(&alert.labels), "{name}");
                assert_eq!(
                    alert.status == Status::Firing,
                    alert.ends_at.is_none(),
                    "{name}"
                );
            }
        }
        let partial = parse(&fixture("group-partially-resolved.json")).unwrap();
        assert_eq!(partial.group_key, "{}:{alertname=\"HostDown\"}");
        assert_eq!(partial.alerts[1].status, Status::Resolved);
    }

    #[test]
    fn fingerprint_matches_prometheus_test_vectors() {
        let labels: LabelSet = [
            ("fear".to_owned(), "love is not enough".to_owned()),
            ("name".to_owned(), "garland, briggs".to_owned()),
        ]
        .into();
        assert_eq!(fingerprint(&labels), "507a62d79ee76c9a");
        assert_eq!(fingerprint(&LabelSet::new()), "cbf29ce484222325");
    }

    fn check_rejected(body: &str, path: &str, message_part: &str) {
        let error = parse(body.as_bytes()).unwrap_err();
        assert_eq!(error.path, path, "{body} -> {error:?}");
        assert!(
            error.message.contains(message_part),
            "{body} -> {error:?}, wanted {message_part:?}"
        );
    }

    const ALERT: &str = r#"{"status":"firing","labels":{"alertname":"A"},"annotations":{},"startsAt":"2026-11-28T03:00:00Z","endsAt":"0001-01-01T00:00:00Z","fingerprint":"abc"}"#;

    #[test]
    fn bad_bodies_name_the_problem() {
        check_rejected("{", ".", "EOF");
        check_rejected("[]", ".", "expected struct");
        check_rejected(
            r#"{"version":"4","status":"firing"}"#,
            ".",
            "missing field `alerts`",
        );
        check_rejected(
            r#"{"version":"4","status":"burning","alerts":[]}"#,
            "status",
            "unknown variant `burning`, expected `firing` or `resolved`",
        );
        check_rejected(
            r#"{"version":"3","status":"firing","alerts":[]}"#,
            "version",
            "expected \"4\"",
        );
        check_rejected(
            r#"{"version":"4","status":"firing","alerts":{}}"#,
            "alerts",
            "expected a sequence",
        );
        check_rejected(
            r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"a":1},"startsAt":"2026-11-28T03:00:00Z"}]}"#,
            "alerts[0].labels.a",
            "expected a string",
        );
        check_rejected(
            r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{},"startsAt":"yesterday"}]}"#,
            "alerts[0].startsAt",
            "RFC 3339",
        );
        check_rejected(
            r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{},"startsAt":"2026-11-28T03:00:00Z","fingerprint":"../x"}]}"#,
            "alerts[0].fingerprint",
            "hexadecimal",
        );
    }

    #[test]
    fn additions_from_newer_alertmanagers_are_accepted() {
        let body = format!(
            r#"{{"receiver":"x","status":"firing","alerts":[{ALERT}],"notification_reason":"first notification","routeLabels":{{"team":"gpu"}},"groupLabels":null,"someFutureField":[1,2],"version":"4","groupKey":"{{}}:{{}}","truncatedAlerts":0}}"#
        );
        let notification = parse(body.as_bytes()).unwrap();
        assert_eq!(notification.alerts.len(), 1);
        assert_eq!(notification.alerts[0].ends_at, None);
    }

    #[test]
    fn a_value_over_the_cap_is_cut_on_a_character_boundary_with_a_marker() {
        let at_cap = "a".repeat(MAX_VALUE_BYTES);
        // (value, full length if cut, the marker it ends with)
        let cases = [
            ("", None, ""),
            (at_cap.as_str(), None, ""),
            (
                &format!("{at_cap}b"),
                Some(16385),
                "…[truncated: 16385 bytes]",
            ),
            (
                &"é".repeat(MAX_VALUE_BYTES),
                Some(32768),
                "…[truncated: 32768 bytes]",
            ),
            (
                &"😀".repeat(MAX_VALUE_BYTES),
                Some(65536),
                "…[truncated: 65536 bytes]",
            ),
            (
                &"x".repeat(1 << 20),
                Some(1 << 20),
                "…[truncated: 1048576 bytes]",
            ),
        ];
        for (input, cut, marker) in cases {
            let mut value = input.to_owned();
            assert_eq!(truncate_value(&mut value), cut, "{}", input.len());
            match cut {
                None => assert_eq!(value, input),
                Some(_) => {
                    assert!(value.len() <= MAX_VALUE_BYTES, "{}", value.len());
                    assert!(value.ends_with(marker), "{}", &value[value.len() - 40..]);
                    let kept = &value[..value.len() - marker.len()];
                    assert!(input.starts_with(kept));
                    // As much as fits: less than one character short of it.
                    assert!(kept.len() + marker.len() + 4 > MAX_VALUE_BYTES);
                }
            }
        }
    }

    #[test]
    fn oversized_values_are_cut_and_recorded_and_the_alerts_kept() {
        let big = "x".repeat(1 << 20);
        let body = serde_json::json!({
            "version": "4",
            "status": "firing",
            "receiver": "r",
            "groupLabels": {"cluster": big},
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": "Huge", "trace": big},
                    "annotations": {"description": big, "summary": "short"},
                    "startsAt": "2026-11-28T03:00:00Z",
                    "generatorURL": big,
                },
                {
                    "status": "firing",
                    "labels": {"alertname": "P1", "severity": "critical"},
                    "annotations": {"summary": "the one that matters"},
                    "startsAt": "2026-11-28T03:00:00Z",
                },
            ],
        });
        let notification = parse(&serde_json::to_vec(&body).unwrap()).unwrap();
        let recorded = |alertname: &str, kind, name: &str| TruncatedValue {
            alertname: alertname.to_owned(),
            kind,
            name: name.to_owned(),
            bytes: 1 << 20,
        };
        assert_eq!(
            notification.truncated_values,
            [
                recorded("Huge", ValueKind::Label, "trace"),
                recorded("Huge", ValueKind::Annotation, "description"),
                recorded("Huge", ValueKind::GeneratorUrl, ""),
                recorded("", ValueKind::GroupLabel, "cluster"),
            ]
        );
        let huge = &notification.alerts[0];
        let marker = "…[truncated: 1048576 bytes]";
        for value in [
            &huge.labels["trace"],
            &huge.annotations["description"],
            &huge.generator_url,
            &notification.group_labels["cluster"],
        ] {
            assert!(value.len() <= MAX_VALUE_BYTES && value.ends_with(marker));
        }
        assert_eq!(huge.annotations["summary"], "short");
        // The identity is that of the labels as sent.
        let sent: LabelSet = [
            ("alertname".to_owned(), "Huge".to_owned()),
            ("trace".to_owned(), big.clone()),
        ]
        .into();
        assert_eq!(huge.fingerprint, fingerprint(&sent));
        let p1 = &notification.alerts[1];
        assert_eq!(p1.labels["severity"], "critical");
        assert_eq!(p1.annotations["summary"], "the one that matters");
    }

    #[test]
    fn any_rfc3339_precision_is_accepted() {
        for (text, nanos) in [
            ("2026-11-28T03:00:00Z", 0),
            ("2026-11-28T03:00:00.5Z", 500_000_000),
            ("2026-11-28T03:00:00.349673924Z", 349_673_924),
            ("2026-11-28T04:00:00.1+01:00", 100_000_000),
        ] {
            let time = parse_time(text).unwrap();
            assert_eq!(time.timestamp_subsec_nanos(), nanos, "{text}");
            assert_eq!(time.timestamp() % 86400, 3 * 3600, "{text}");
        }
    }
}
