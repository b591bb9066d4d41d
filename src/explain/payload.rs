//! The payloads `explain` reads: an Alertmanager webhook body, a bundle's `alert.json`, or the
//! output of `nightshift incidents show ID --json`. Each is recognised by its shape and turned
//! into the webhook it stands for, then read by `ingest::webhook::parse`, the daemon's own
//! reader, so that explain judges exactly what ingest would have accepted.
//!
//! **Invariant:** nothing in a payload names a file or a host that explain opens; alert data
//! is hostile and only ever becomes labels, annotations and times.

use serde_json::{Value, json};

use crate::ingest::webhook::{self, Notification};

/// What a payload was recognised as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// An Alertmanager webhook body, as posted to `/webhook`.
    Webhook,
    /// A bundle's `alert.json`: the incident and the notification that opened it.
    BundleAlert,
    /// `nightshift incidents show ID --json`.
    Incident,
}

impl Shape {
    /// The shape in words, for the text output.
    pub fn describe(self) -> &'static str {
        match self {
            Shape::Webhook => "Alertmanager webhook body",
            Shape::BundleAlert => "bundle alert.json",
            Shape::Incident => "incident (nightshift incidents show --json)",
        }
    }
}

/// Why a payload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("not JSON ({0}); {ACCEPTED}")]
    NotJson(serde_json::Error),
    #[error("not a payload explain knows; {ACCEPTED}")]
    UnknownShape,
    #[error("looks like a {shape} but is not valid: {error}", shape = .shape.describe())]
    Invalid {
        shape: Shape,
        error: webhook::PayloadError,
    },
}

/// The three accepted shapes, named in every error about the shape.
const ACCEPTED: &str = "expected one of: an Alertmanager webhook body (an object with \
    \"alerts\"), a bundle's alert.json (an object with \"incident\" and \"notification\"), or \
    the output of `nightshift incidents show ID --json` (an object with \"id\", \"labels\" and \
    \"starts_at\")";

/// Recognise `body` and read it as the webhook it stands for.
pub fn read(body: &[u8]) -> Result<(Shape, Notification), PayloadError> {
    let value: Value = serde_json::from_slice(body).map_err(PayloadError::NotJson)?;
    let shape = shape_of(&value).ok_or(PayloadError::UnknownShape)?;
    let invalid = |error| PayloadError::Invalid { shape, error };
    let notification = match shape {
        Shape::Webhook => webhook::parse(body).map_err(invalid)?,
        Shape::BundleAlert => from_bundle_alert(&value).map_err(invalid)?,
        Shape::Incident => from_incident(&value).map_err(invalid)?,
    };
    Ok((shape, notification))
}

fn shape_of(value: &Value) -> Option<Shape> {
    let object = value.as_object()?;
    if object.contains_key("alerts") {
        Some(Shape::Webhook)
    } else if object.get("incident").is_some_and(Value::is_object)
        && object.contains_key("notification")
    {
        Some(Shape::BundleAlert)
    } else if ["id", "labels", "starts_at"]
        .iter()
        .all(|key| object.contains_key(*key))
    {
        Some(Shape::Incident)
    } else {
        None
    }
}

/// A bundle's `alert.json` holds the webhook that opened the incident (`notification.body`),
/// which may carry the whole group: the incident's own alert is the one whose episode id is the
/// incident's. Without that body (pruned, or not JSON) the incident's recorded facts stand in.
fn from_bundle_alert(value: &Value) -> Result<Notification, webhook::PayloadError> {
    let incident = &value["incident"];
    let notification = &value["notification"];
    let id = incident["id"].as_str().unwrap_or_default();
    if notification["body"].get("alerts").is_some() {
        let body = serde_json::to_vec(&notification["body"]).unwrap_or_default();
        let mut parsed = webhook::parse(&body).map_err(|error| webhook::PayloadError {
            path: format!("notification.body.{}", error.path),
            ..error
        })?;
        parsed.alerts.retain(|alert| {
            crate::episodes::reconcile::episode_id(&alert.fingerprint, alert.starts_at) == id
        });
        if !parsed.alerts.is_empty() {
            return Ok(parsed);
        }
    }
    // The episode id starts with the alert's fingerprint (`FINGERPRINT-TIME`).
    let fingerprint = id
        .split_once('-')
        .map_or("", |(fingerprint, _)| fingerprint);
    single_alert(
        notification["group_key"].as_str().unwrap_or_default(),
        incident,
        fingerprint,
        None,
        "incident.",
    )
}

/// `incidents show --json`: the incident's labels, annotations, times and group.
fn from_incident(value: &Value) -> Result<Notification, webhook::PayloadError> {
    single_alert(
        value["group_key"].as_str().unwrap_or_default(),
        value,
        value["fingerprint"].as_str().unwrap_or_default(),
        value["ends_at"].as_str(),
        "",
    )
}

/// The one-alert webhook equivalent to a recorded incident, read as ingest reads a webhook;
/// errors name the field of the original document (`prefix` + field).
fn single_alert(
    group_key: &str,
    incident: &Value,
    fingerprint: &str,
    ends_at: Option<&str>,
    prefix: &str,
) -> Result<Notification, webhook::PayloadError> {
    // An incident that resolved, or went from Alertmanager without resolving, is over; any
    // other recorded status (firing, silenced) is an alert still firing.
    let status = match incident["status"].as_str() {
        Some("resolved" | "gone") => "resolved",
        _ => "firing",
    };
    let mut alert = json!({
        "status": status,
        "labels": incident["labels"],
        "annotations": incident["annotations"],
        "startsAt": incident["starts_at"],
        "generatorURL": incident["generator_url"].as_str().unwrap_or_default(),
        "fingerprint": fingerprint,
    });
    if let Some(ends_at) = ends_at {
        alert["endsAt"] = json!(ends_at);
    }
    let body = json!({
        "version": "4",
        "status": status,
        "groupKey": group_key,
        "alerts": [alert],
    });
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    webhook::parse(&bytes).map_err(|error| webhook::PayloadError {
        path: match error.path.strip_prefix("alerts[0].") {
            Some(field) => format!("{prefix}{}", snake_case(field)),
            None => error.path,
        },
        ..error
    })
}

/// `startsAt` → `starts_at`: the recorded documents' spelling of a webhook field.
fn snake_case(field: &str) -> String {
    match field {
        "generatorURL" => "generator_url".to_owned(),
        other => other
            .chars()
            .flat_map(|c| {
                let lower = c.to_ascii_lowercase();
                let underscore = c.is_ascii_uppercase().then_some('_');
                underscore.into_iter().chain(std::iter::once(lower))
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEBHOOK: &str = r#"{"version":"4","status":"firing","groupKey":"g","alerts":[
        {"status":"firing","labels":{"alertname":"A","instance":"x"},"annotations":{"summary":"s"},
         "startsAt":"2026-11-28T03:00:00Z","fingerprint":"0123456789abcdef"},
        {"status":"firing","labels":{"alertname":"B"},"startsAt":"2026-11-28T03:00:00Z",
         "fingerprint":"fedcba9876543210"}]}"#;

    fn check(body: &str, expected_shape: Shape, expected_alertnames: &[&str]) {
        let (shape, notification) = read(body.as_bytes()).unwrap();
        assert_eq!(shape, expected_shape, "{body}");
        let names: Vec<&str> = notification
            .alerts
            .iter()
            .map(|alert| alert.labels["alertname"].as_str())
            .collect();
        assert_eq!(names, expected_alertnames, "{body}");
    }

    #[test]
    fn each_shape_is_recognised() {
        check(WEBHOOK, Shape::Webhook, &["A", "B"]);
        // alert.json: only the incident's own alert of the group.
        let bundle = json!({
            "incident": {"id": "fedcba9876543210-20261128T030000Z", "labels": {"alertname": "B"},
                         "status": "firing", "starts_at": "2026-11-28T03:00:00Z"},
            "notification": {"group_key": "g", "body": serde_json::from_str::<Value>(WEBHOOK).unwrap()},
        });
        check(&bundle.to_string(), Shape::BundleAlert, &["B"]);
        // alert.json without the body: the incident's facts.
        let bare = json!({
            "incident": {"id": "0123456789abcdef-20261128T030000Z", "labels": {"alertname": "A"},
                         "annotations": {}, "status": "resolved", "starts_at": "2026-11-28T03:00:00Z",
                         "generator_url": ""},
            "notification": null,
        });
        check(&bare.to_string(), Shape::BundleAlert, &["A"]);
        let incident = json!({
            "id": "0123456789abcdef-20261128T030000Z", "fingerprint": "0123456789abcdef",
            "starts_at": "2026-11-28T03:00:00Z", "status": "firing",
            "labels": {"alertname": "A"}, "annotations": {}, "group_key": "g",
            "generator_url": "", "ends_at": null,
        });
        check(&incident.to_string(), Shape::Incident, &["A"]);
    }

    #[test]
    fn the_incident_id_is_kept() {
        let incident = json!({
            "id": "0123456789abcdef-20261128T030000.5Z", "fingerprint": "0123456789abcdef",
            "starts_at": "2026-11-28T03:00:00.5Z", "status": "silenced",
            "labels": {"alertname": "A"}, "annotations": null, "group_key": "g",
        });
        let (_, notification) = read(incident.to_string().as_bytes()).unwrap();
        let alert = &notification.alerts[0];
        assert_eq!(
            crate::episodes::reconcile::episode_id(&alert.fingerprint, alert.starts_at),
            "0123456789abcdef-20261128T030000.5Z"
        );
        assert_eq!(alert.status, webhook::Status::Firing);
        assert_eq!(notification.group_key, "g");
    }

    #[test]
    fn unknown_shapes_name_the_three_accepted() {
        for body in ["[]", r#"{"foo": 1}"#, "not json", r#""alerts""#] {
            let error = read(body.as_bytes()).unwrap_err().to_string();
            for shape in ["webhook body", "alert.json", "incidents show ID --json"] {
                assert!(error.contains(shape), "{body}: {error}");
            }
        }
    }

    #[test]
    fn invalid_fields_are_named_as_in_the_document() {
        let incident = json!({
            "id": "x", "starts_at": "yesterday", "labels": {"alertname": "A"}, "group_key": "g",
        });
        let error = read(incident.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("incident") && error.contains("starts_at"),
            "{error}"
        );
        // A hostile fingerprint is refused as ingest refuses it.
        let incident = json!({
            "id": "x", "fingerprint": "../../etc", "starts_at": "2026-11-28T03:00:00Z",
            "labels": {}, "group_key": "g",
        });
        let error = read(incident.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(error.contains("fingerprint"), "{error}");
    }
}
