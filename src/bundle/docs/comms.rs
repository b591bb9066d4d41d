//! comms: `comms.md`, the runbook's internal status update filled in, and a customer-facing
//! status-page draft that names only the service.

use serde_json::{Value, json};

use super::outcome::ActionOutcome;
use super::{
    bundle_location, capitalise, clock_span, cut, is_closed, known_alert_name, one_line, title,
};
use crate::bundle::facts::BundleFacts;
use crate::escape::{markdown, markdown_fenced};
use crate::page::notify::render::{DEFAULT_STATUS_TEMPLATE, status_context};
use crate::page::notify::view::{IncidentView, PageView};

/// A label value shown to customers (the service's name) is cut at this many characters.
const SERVICE_NAME_LIMIT: usize = 80;

/// `comms.md`: the runbook's internal status update, filled in, and a customer-facing
/// status-page draft that names only the service.
pub fn comms(facts: &BundleFacts) -> String {
    let mut text = format!("# Communications: {}\n\n", markdown(&title(facts)));
    text.push_str("## Internal status update\n\n");
    text.push_str("For the incident channel; copy as it is.\n\n");
    // A fence shows its content as it is: nothing in it is markup.
    text.push_str(&markdown_fenced(&internal_status(facts), "text"));
    text.push_str("\n## Status page draft (customer-facing)\n\n");
    let service = markdown(&service_name(facts));
    text.push_str(&format!(
        "_Review before posting. It names only the service ({service}) and times: no hosts, pods, \
         labels or internal findings._\n\n"
    ));
    if facts.incident.severity == "P4" {
        text.push_str("P4 means no user impact: a status-page post is usually not needed.\n\n");
    }
    let impact = customer_impact(&facts.incident.severity);
    text.push_str("### Investigating\n\n");
    text.push_str(&format!(
        "Investigating — We are investigating elevated errors with {service}. {impact} We will \
         post an update as soon as we know more.\n"
    ));
    let status = comms_status(facts);
    if status == "MONITORING" {
        text.push_str("\n### Monitoring\n\n");
        text.push_str(&format!(
            "Monitoring — A fix has been applied and we are monitoring the results for \
             {service}.\n"
        ));
    }
    if status == "RESOLVED" {
        let incident = &facts.incident;
        let span = incident
            .ended_at
            .as_deref()
            .and_then(|ended| clock_span(&incident.starts_at, ended, "between", "and"));
        text.push_str("\n### Resolved\n\n");
        match span {
            Some(span) => text.push_str(&format!(
                "Resolved — This incident has been resolved. {}, customers may have seen \
                 elevated errors with {service}. The service is operating normally again. We \
                 are sorry for the disruption.\n",
                capitalise(&span)
            )),
            None => text.push_str(&format!(
                "Resolved — This incident has been resolved and {service} is operating normally \
                 again. We are sorry for the disruption.\n"
            )),
        }
    }
    text
}

/// The runbook's internal status update: `DEFAULT_STATUS_TEMPLATE` rendered against the
/// notifiers' own context, with nightshift's bundle facts. Unlike the chat update, which says
/// MITIGATING for anything done, this one says MONITORING once an action has finished and is
/// being watched.
fn internal_status(facts: &BundleFacts) -> String {
    let view = page_view(facts);
    let mut context = status_context(&view);
    context["status"] = Value::String(comms_status(facts).to_owned());
    context["links"] = Value::Array(
        status_links(facts)
            .into_iter()
            .map(|(text, href)| json!({"text": text, "href": href}))
            .collect(),
    );
    let environment = crate::rules::template::base_environment();
    let rendered = environment.render_str(
        DEFAULT_STATUS_TEMPLATE,
        minijinja::Value::from(minijinja::value::Serde(&context)),
    );
    match rendered {
        Ok(text) => text,
        // The template is ours and fixed; should it ever fail, the same fields by hand.
        Err(_) => {
            let field = |name: &str| context[name].as_str().unwrap_or_default().to_owned();
            format!(
                "{} {} INCIDENT: {}\nStatus: {}\nImpact: {}\nCurrent action: {}\nNext update: \
                 {}\nIncident commander: {}",
                field("icon"),
                field("severity"),
                field("title"),
                field("status"),
                field("impact"),
                field("current_action"),
                field("next_update"),
                field("incident_commander"),
            )
        }
    }
}

/// The incident as a one-incident page, so the status update reads like the chat one.
fn page_view(facts: &BundleFacts) -> PageView {
    let incident = &facts.incident;
    PageView {
        severity: incident.severity.clone(),
        meaning: incident.meaning.clone(),
        respond_within: incident.respond_within.clone(),
        status: if is_closed(&incident.status) {
            "resolved".to_owned()
        } else {
            "triggered".to_owned()
        },
        incident_commander: incident.incident_commander.clone(),
        incidents: vec![IncidentView {
            id: incident.id.clone(),
            rule: incident.rule.clone(),
            severity: incident.severity.clone(),
            branch: incident.branch.clone(),
            note: incident.note.clone(),
            summary: title(facts),
            status: incident.status.clone(),
            starts_at: incident.starts_at.clone(),
            labels: incident.labels.clone(),
            annotations: incident.annotations.clone(),
            generator_url: incident.generator_url.clone(),
            page_reason: incident.paging_reason.clone(),
            actions: facts.actions.clone(),
            bundle: bundle_location(facts),
            ..IncidentView::default()
        }],
        ..PageView::default()
    }
}

/// (text, href) of the links worth a click from the incident channel.
fn status_links(facts: &BundleFacts) -> Vec<(String, String)> {
    let incident = &facts.incident;
    let mut links = Vec::new();
    let candidates = [
        ("nightshift incident", incident.url.as_deref()),
        (
            "runbook",
            incident.annotations.get("runbook_url").map(String::as_str),
        ),
        ("bundle", facts.bundle_url.as_deref()),
    ];
    for (text, href) in candidates {
        if let Some(href) = href
            .map(str::trim)
            .filter(|href| crate::escape::is_web(href))
        {
            links.push((text.to_owned(), href.to_owned()));
        }
    }
    links
}

/// RESOLVED once resolved or gone; INVESTIGATING when an action failed or its outcome is
/// unknown, or nothing is under way; MITIGATING while an action runs; MONITORING once one has
/// finished and has not been judged useless.
pub(crate) fn comms_status(facts: &BundleFacts) -> &'static str {
    if is_closed(&facts.incident.status) {
        return "RESOLVED";
    }
    let mut in_progress = false;
    let mut watching = false;
    for action in &facts.actions {
        match ActionOutcome::of(action) {
            ActionOutcome::Failed | ActionOutcome::Uncertain => return "INVESTIGATING",
            ActionOutcome::InProgress => in_progress = true,
            ActionOutcome::Helped | ActionOutcome::Unjudged => watching = true,
            _ => {}
        }
    }
    if in_progress {
        "MITIGATING"
    } else if watching {
        "MONITORING"
    } else {
        "INVESTIGATING"
    }
}

/// What customers may notice, by severity, in words a status page uses.
fn customer_impact(severity: &str) -> &'static str {
    match severity {
        "P1" => "The service may be unavailable.",
        "P2" => "Some requests may fail or be slower than usual.",
        "P3" => "A small number of requests may be affected.",
        "P4" => "We do not expect customer impact.",
        _ => "Some requests may be affected.",
    }
}

/// The service's name for customers: the `service`, `job` or `app` label, else the alert's
/// name. Nothing else from the labels ever reaches the status-page draft.
pub(crate) fn service_name(facts: &BundleFacts) -> String {
    let labels = &facts.incident.labels;
    let name = ["service", "job", "app"]
        .iter()
        .filter_map(|key| labels.get(*key))
        .map(|value| one_line(value))
        .find(|value| !value.is_empty())
        .or_else(|| known_alert_name(facts))
        .unwrap_or_else(|| "our service".to_owned());
    cut(&name, SERVICE_NAME_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::docs::fixtures::*;
    use crate::bundle::docs::text::*;

    #[test]
    fn comms_fill_the_runbook_status_and_keep_internals_off_the_status_page() {
        let facts = vastai_5xx();
        let text = comms(&facts);
        assert_in_order(
            &text,
            &[
                "## Internal status update\n",
                "✅ P2 INCIDENT: Vast.ai API server errors (5xx) in vastai\n\
                 Status: RESOLVED\n\
                 Impact: degraded: 12.5% of Vast.ai API requests answered 5xx over the last 5 \
                 minutes\n\
                 Current action: restarted deployment vastai/vastai-integration at 03:05:00; \
                 still failing after 10m\n\
                 Next update: none (resolved)\n\
                 Incident commander: the primary on-call\n\
                 Links: nightshift incident: https://nightshift.example/api/v1/incidents/",
                "## Status page draft (customer-facing)\n",
                "Investigating — We are investigating elevated errors with vastai-integration. \
                 Some requests may fail or be slower than usual.",
                "Resolved — This incident has been resolved. Between 03:02 and 03:44 UTC, \
                 customers may have seen elevated errors with vastai-integration.",
            ],
        );
        let customer = section(&text, "## Status page draft (customer-facing)");
        for internal in [
            "vastai-integration-7d9f8b6c5-x2k9q",
            "10.0.3.7",
            "vastai-integration-metrics",
            "VastaiServerErrors",
            "deployment",
            "namespace",
            "Vast.ai",
            "restart",
        ] {
            assert!(!customer.contains(internal), "{internal:?} in:\n{customer}");
        }

        // While it fires the status follows what was done.
        let mut firing = facts.clone();
        firing.incident.status = "firing".into();
        firing.incident.ended_at = None;
        let status = |facts: &BundleFacts| {
            comms(facts)
                .lines()
                .find(|line| line.starts_with("Status: "))
                .unwrap()
                .to_owned()
        };
        assert_eq!(status(&firing), "Status: INVESTIGATING");
        firing.actions[0].verified = None;
        assert_eq!(status(&firing), "Status: MONITORING");
        assert!(comms(&firing).contains("Monitoring — A fix has been applied"));
        assert!(!comms(&firing).contains("Resolved —"));
        firing.actions[0].state = "started".into();
        assert_eq!(status(&firing), "Status: MITIGATING");
        firing.actions[0].state = "uncertain".into();
        assert_eq!(status(&firing), "Status: INVESTIGATING");
        let text = comms(&firing);
        assert!(text.contains("🟠 P2 INCIDENT: "), "{text}");
        assert!(text.contains("Next update: in 1h"), "{text}");
    }

    #[test]
    fn the_service_name_comes_from_labels_then_the_alert() {
        let mut facts = vastai_5xx();
        assert_eq!(service_name(&facts), "vastai-integration");
        facts.incident.labels.remove("service");
        assert_eq!(service_name(&facts), "vastai-integration-metrics");
        facts.incident.labels.remove("job");
        facts
            .incident
            .labels
            .insert("app".into(), " vastai  app ".into());
        assert_eq!(service_name(&facts), "vastai app");
        facts.incident.labels.clear();
        assert_eq!(service_name(&facts), "VastaiServerErrors");
        facts.incident.alertname.clear();
        assert_eq!(service_name(&facts), "our service");
    }
}
