//! render::event: the PagerDuty trigger for a page (summary, fields, details and links) and
//! the change event after an automatic action. The incidents listed and the links are
//! bounded here; the limits on the event as a whole are `pagerduty::trigger_event`'s.

use serde_json::{Map, Value, json};

use super::sentence::{action_sentence, sentence};
use super::summary::{join_url, nightshift_link, runbook_link, title, what_was_done};
use crate::page::notify::pagerduty::{SUMMARY_LIMIT, Trigger, truncate_chars};
use crate::page::notify::view::{ActionLine, IncidentView, PageView};

/// Links PagerDuty shows; the Alertmanager and nightshift links are always among them.
const LINK_LIMIT: usize = 20;
/// A link longer than this (a generator URL of a huge expression) is left out rather than
/// cut, since a cut URL leads nowhere.
const HREF_LIMIT: usize = 8 * 1024;
/// PagerDuty's `source`, `component`, `group` and `class` come from labels; keep them short.
const FIELD_LIMIT: usize = 1024;
/// The incidents listed in the details stop at this many bytes, so the first (most severe)
/// ones survive and the rest are counted in `more_incidents`, instead of the whole list being
/// cut when the event is shrunk to PagerDuty's limit.
const INCIDENT_DETAILS_BUDGET: usize = 256 * 1024;

/// The PagerDuty trigger for a page. Limits PagerDuty enforces on the event as a whole
/// (summary length, total size) are applied by `pagerduty::trigger_event`.
pub fn trigger(view: &PageView) -> Trigger {
    let first = view.incidents.first();
    let label = |names: &[&str]| {
        first
            .and_then(|incident| first_label(incident, names))
            .map(|value| truncate_chars(value, FIELD_LIMIT).to_owned())
    };
    let prefix = if view.severity.is_empty() {
        String::new()
    } else {
        format!("[{}] ", view.severity)
    };
    let summary = format!(
        "{prefix}{}",
        title(view, SUMMARY_LIMIT.saturating_sub(prefix.chars().count()))
    );
    Trigger {
        summary,
        source: label(&["instance", "job", "service"]).unwrap_or_else(|| "nightshift".to_owned()),
        severity: view.pagerduty_severity.clone(),
        timestamp: first
            .filter(|incident| !incident.starts_at.is_empty())
            .map(|incident| incident.starts_at.clone()),
        component: label(&["service", "job", "app"]),
        group: label(&["namespace", "cluster", "team"]),
        class: label(&["alertname"]),
        custom_details: details(view),
        links: links(view),
        client_url: first.and_then(|incident| nightshift_link(view, incident)),
    }
}

/// The summary and details of a PagerDuty change event after an automatic action.
pub fn change_summary(action: &ActionLine, incident_id: &str) -> (String, Map<String, Value>) {
    let summary = format!("nightshift: {}", sentence(action, false));
    let mut details = Map::new();
    for (key, value) in [
        ("incident", incident_id),
        ("action", action.name.as_str()),
        ("kind", action.kind.as_str()),
        ("target", action.target.as_str()),
        ("state", action.state.as_str()),
        ("detail", action.detail.as_str()),
    ] {
        details.insert(key.to_owned(), Value::String(value.to_owned()));
    }
    (summary, details)
}

fn first_label<'a>(incident: &'a IncidentView, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .filter_map(|name| incident.labels.get(*name))
        .map(|value| value.trim())
        .find(|value| !value.is_empty())
}

/// "P1 — complete outage; respond within 15m".
fn severity_text(view: &PageView) -> String {
    let mut text = view.severity.clone();
    if !view.meaning.is_empty() {
        if !text.is_empty() {
            text.push_str(" — ");
        }
        text.push_str(&view.meaning);
    }
    if !view.respond_within.is_empty() {
        if !text.is_empty() {
            text.push_str("; ");
        }
        text.push_str("respond within ");
        text.push_str(&view.respond_within);
    }
    text
}

fn details(view: &PageView) -> Map<String, Value> {
    let mut details = Map::new();
    details.insert("severity".into(), Value::String(severity_text(view)));
    if let Some(first) = view.incidents.first() {
        details.insert(
            "page_reason".into(),
            Value::String(first.page_reason.clone()),
        );
    }
    let mut incidents = Vec::new();
    let mut used = 0;
    let mut left_out = 0;
    for incident in &view.incidents {
        if left_out > 0 {
            left_out += 1;
            continue;
        }
        let detail = incident_details(incident);
        let bytes = serde_json::to_vec(&detail).map_or(usize::MAX, |bytes| bytes.len());
        if used + bytes <= INCIDENT_DETAILS_BUDGET {
            used += bytes;
            incidents.push(detail);
        } else {
            left_out += 1;
        }
    }
    details.insert("incidents".into(), Value::Array(incidents));
    details.insert("what_was_done".into(), Value::String(what_was_done(view)));
    if let Some(bundle) = view
        .incidents
        .first()
        .and_then(|incident| incident.bundle.as_ref())
    {
        details.insert("bundle".into(), Value::String(bundle.clone()));
    }
    if let Some(commander) = &view.incident_commander {
        details.insert(
            "incident_commander".into(),
            Value::String(commander.clone()),
        );
    }
    let more = view.more_incidents + left_out;
    if more > 0 {
        details.insert("more_incidents".into(), json!(more));
    }
    details
}

fn incident_details(incident: &IncidentView) -> Value {
    let probes: Map<String, Value> = incident
        .probes
        .iter()
        .map(|probe| {
            let outcome = if probe.ok { "ok" } else { "failed" };
            (
                probe.name.clone(),
                Value::String(format!("{outcome}: {}", probe.result)),
            )
        })
        .collect();
    let actions: Vec<Value> = incident
        .actions
        .iter()
        .map(|action| Value::String(action_sentence(action)))
        .collect();
    let mut detail = json!({
        "id": incident.id,
        "rule": incident.rule,
        "branch": incident.branch,
        "note": incident.note,
        "summary": incident.summary,
        "status": incident.status,
        "starts_at": incident.starts_at,
        "labels": incident.labels,
        "probes": probes,
        "actions": actions,
    });
    if !incident.recent_errors.is_empty() {
        detail["recent_errors"] = json!(incident.recent_errors);
    }
    if let Some(bundle) = &incident.bundle {
        detail["bundle"] = Value::String(bundle.clone());
    }
    detail
}

/// Add a web link unless it is already there, too long or past `limit` links.
fn add_link(links: &mut Vec<(String, String)>, href: &str, text: String, limit: usize) {
    let href = href.trim();
    if links.len() < limit
        && crate::escape::is_web(href)
        && href.len() <= HREF_LIMIT
        && !links.iter().any(|(known, _)| known == href)
    {
        links.push((href.to_owned(), text));
    }
}

fn links(view: &PageView) -> Vec<(String, String)> {
    let mut links = Vec::new();
    // Keep room for the Alertmanager and nightshift links, which every page has.
    let incident_limit = LINK_LIMIT - 2;
    for incident in &view.incidents {
        if links.len() >= incident_limit {
            break;
        }
        add_link(
            &mut links,
            &incident.generator_url,
            "Prometheus graph".to_owned(),
            incident_limit,
        );
        if let Some(runbook) = runbook_link(incident) {
            add_link(&mut links, runbook, "Runbook".to_owned(), incident_limit);
        }
    }
    if let Some(alertmanager) = view.alertmanager_url.as_deref() {
        add_link(
            &mut links,
            &join_url(alertmanager.trim(), "#/alerts"),
            "Alertmanager".to_owned(),
            LINK_LIMIT,
        );
    }
    if let Some(first) = view.incidents.first()
        && let Some(href) = nightshift_link(view, first)
    {
        add_link(
            &mut links,
            &href,
            format!("nightshift incident {}", first.id),
            LINK_LIMIT,
        );
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::notify::pagerduty::{EVENT_LIMIT, trigger_event};
    use crate::page::notify::render::fixtures::{incident, labels, restart, vastai_view};
    use crate::page::notify::render::summary::WHAT_WAS_DONE_LIMIT;

    #[test]
    fn change_events_say_what_was_done_without_the_verdict() {
        let (summary, details) = change_summary(&restart(Some("did_not_help")), "01JDXK5");
        assert_eq!(
            summary,
            "nightshift: restarted deployment vastai/vastai-integration at 03:12:05"
        );
        assert_eq!(
            Value::Object(details),
            json!({
                "incident": "01JDXK5",
                "action": "restart",
                "kind": "kubernetes.rollout_restart",
                "target": "deployment/vastai/vastai-integration",
                "state": "done",
                "detail": "restartedAt=2026-11-28T03:12:05Z",
            })
        );
    }

    #[test]
    fn a_trigger_carries_fields_details_and_links() {
        let trigger = trigger(&vastai_view());
        assert_eq!(
            trigger.summary,
            "[P1] Vast.ai API answers 5xx to vastai/vastai-integration"
        );
        assert_eq!(trigger.source, "10.0.3.7:8080");
        assert_eq!(trigger.component.as_deref(), Some("vastai-integration"));
        assert_eq!(trigger.group.as_deref(), Some("vastai"));
        assert_eq!(trigger.class.as_deref(), Some("VastaiServerErrors"));
        assert_eq!(trigger.severity, "critical");
        assert_eq!(trigger.timestamp.as_deref(), Some("2026-11-28T03:01:00Z"));
        assert_eq!(
            trigger.client_url.as_deref(),
            Some("https://nightshift.example.com/api/v1/incidents/01JDXK5")
        );
        let details = Value::Object(trigger.custom_details);
        assert_eq!(
            details["severity"],
            "P1 — complete outage; respond within 15m"
        );
        assert_eq!(details["page_reason"], "restart did not help");
        assert_eq!(
            details["what_was_done"],
            "restarted deployment vastai/vastai-integration at 03:12:05; still failing after 10m"
        );
        assert_eq!(details["incidents"][0]["id"], "01JDXK5");
        assert_eq!(details["incidents"][0]["branch"], "our-side");
        assert_eq!(
            details["incidents"][0]["probes"],
            json!({
                "vastai/status": "ok: none/All Systems Operational",
                "vastai/key": "failed: forbidden: secrets is forbidden",
            })
        );
        assert_eq!(
            details["incidents"][0]["actions"],
            json!([
                "restarted deployment vastai/vastai-integration at 03:12:05; still failing after 10m"
            ])
        );
        assert!(details.get("more_incidents").is_none());
        assert!(details.get("incident_commander").is_none());
        assert!(details.get("bundle").is_none());
    }

    #[test]
    fn links_are_deduplicated_web_only_and_in_order() {
        let mut view = vastai_view();
        let mut second = incident("01JDXK6");
        // Same graph and runbook as the first: listed once.
        second.actions.clear();
        let mut third = incident("01JDXK7");
        third.generator_url = "javascript:alert(1)".into();
        third.annotations.insert(
            "runbook_url".into(),
            "https://runbooks.example.com/vastai-auth".into(),
        );
        view.incidents.push(second);
        view.incidents.push(third);
        let links = trigger(&view).links;
        let expected = [
            (
                "http://prometheus:9090/graph?g0.expr=vastai_5xx",
                "Prometheus graph",
            ),
            ("https://runbooks.example.com/vastai", "Runbook"),
            ("https://runbooks.example.com/vastai-auth", "Runbook"),
            ("http://alertmanager:9093/#/alerts", "Alertmanager"),
            (
                "https://nightshift.example.com/api/v1/incidents/01JDXK5",
                "nightshift incident 01JDXK5",
            ),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(href, text)| (href.to_string(), text.to_string()))
            .collect();
        assert_eq!(links, expected);

        // Without external URLs, only the incidents' own links.
        view.external_url = None;
        view.alertmanager_url = Some("alertmanager:9093".into());
        let trigger = trigger(&view);
        assert_eq!(trigger.links.len(), 3);
        assert_eq!(trigger.client_url, None);
    }

    #[test]
    fn several_incidents_are_counted_in_the_summary() {
        let mut view = vastai_view();
        view.incidents.push(incident("01JDXK6"));
        view.more_incidents = 3;
        view.incident_commander = Some("platform lead".into());
        view.incidents[0].bundle = Some("/var/lib/nightshift/bundles/01JDXK5.tar.gz".into());
        let trigger = trigger(&view);
        assert_eq!(
            trigger.summary,
            "[P1] Vast.ai API answers 5xx to vastai/vastai-integration (+4 more)"
        );
        assert_eq!(trigger.custom_details["more_incidents"], 3);
        assert_eq!(
            trigger.custom_details["incident_commander"],
            "platform lead"
        );
        assert_eq!(
            trigger.custom_details["bundle"],
            "/var/lib/nightshift/bundles/01JDXK5.tar.gz"
        );
        // The same sentence from two incidents is said once.
        assert_eq!(
            trigger.custom_details["what_was_done"],
            "restarted deployment vastai/vastai-integration at 03:12:05; still failing after 10m"
        );
        assert_eq!(
            trigger.custom_details["incidents"].as_array().map(Vec::len),
            Some(2)
        );
    }

    #[test]
    fn source_component_and_group_fall_back_through_labels() {
        let mut view = vastai_view();
        view.incidents[0].labels = labels(&[("job", "node"), ("app", "api"), ("team", "platform")]);
        let with_job = trigger(&view);
        assert_eq!(with_job.source, "node");
        assert_eq!(with_job.component.as_deref(), Some("node"));
        assert_eq!(with_job.group.as_deref(), Some("platform"));
        assert_eq!(with_job.class, None);
        view.incidents[0].labels = labels(&[("app", "api")]);
        view.incidents[0].actions.clear();
        view.incidents[0].starts_at.clear();
        let bare = trigger(&view);
        assert_eq!(bare.source, "nightshift");
        assert_eq!(bare.component.as_deref(), Some("api"));
        assert_eq!(bare.group, None);
        assert_eq!(bare.timestamp, None);
        assert_eq!(
            bare.custom_details["what_was_done"],
            "nothing was done automatically"
        );
        // A page with no incident listed still renders.
        let empty = trigger(&PageView {
            severity: "P2".into(),
            more_incidents: 5,
            ..PageView::default()
        });
        assert_eq!(empty.summary, "[P2] 5 incidents");
        assert_eq!(empty.source, "nightshift");
    }

    #[test]
    fn a_huge_page_still_fits_in_one_pagerduty_event() {
        let mut view = vastai_view();
        view.incidents[0].summary = "ü".repeat(5000);
        view.incidents[0].generator_url = format!(
            "http://prometheus:9090/graph?g0.expr={}",
            "a".repeat(HREF_LIMIT)
        );
        let template = view.incidents[0].clone();
        for number in 0..400 {
            let mut incident = template.clone();
            incident.id = format!("INC{number}");
            incident.generator_url = format!("http://prometheus:9090/graph?n={number}");
            for label in 0..20 {
                incident
                    .labels
                    .insert(format!("label_{label}"), "v".repeat(1024));
            }
            incident.actions = (0..5)
                .map(|index| ActionLine {
                    state: "failed".into(),
                    target: format!("deployment/vastai/worker-{number}-{index}"),
                    detail: "d".repeat(1024),
                    ..restart(None)
                })
                .collect();
            view.incidents.push(incident);
        }
        view.more_incidents = 10_000;
        let trigger = trigger(&view);
        assert!(
            trigger.summary.ends_with(" (+10400 more)"),
            "{}",
            trigger.summary
        );
        assert!(trigger.summary.starts_with("[P1] üü"));
        assert!(trigger.links.len() <= LINK_LIMIT);
        // The oversized generator URL is left out, the ends are kept.
        assert!(
            !trigger
                .links
                .iter()
                .any(|(href, _)| href.len() > HREF_LIMIT)
        );
        assert_eq!(trigger.links[LINK_LIMIT - 2].1, "Alertmanager");
        assert_eq!(
            trigger.links[LINK_LIMIT - 1].1,
            "nightshift incident 01JDXK5"
        );
        let what = trigger.custom_details["what_was_done"]
            .as_str()
            .unwrap_or("");
        assert!(what.chars().count() <= WHAT_WAS_DONE_LIMIT + 60);
        assert!(what.ends_with("more (see the incidents)"), "{what}");
        let listed = trigger.custom_details["incidents"]
            .as_array()
            .map_or(0, Vec::len);
        assert!(listed > 0 && listed < 401);
        assert_eq!(
            trigger.custom_details["more_incidents"],
            json!(10_000 + 401 - listed)
        );

        let event = trigger_event("k", "d", &trigger);
        let bytes = serde_json::to_vec(&event).unwrap().len();
        assert!(bytes <= EVENT_LIMIT, "{bytes} bytes");
        assert!(bytes < 512 * 1024);
        assert_eq!(
            event["payload"]["summary"]
                .as_str()
                .map(|s| s.chars().count()),
            Some(SUMMARY_LIMIT)
        );
        assert!(
            event["payload"]["summary"]
                .as_str()
                .is_some_and(|summary| summary.ends_with(" (+10400 more)"))
        );
    }
}
