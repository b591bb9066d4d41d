//! The documents in a bundle, rendered from its facts: `timeline.md` (every event in time
//! order), `comms.md` (the internal status update and a status-page draft), `postmortem.md` (a
//! blameless first draft), and the bodies of `decision.json`, `actions.json` and `pages.json`.
//!
//! Everything here is pure and cannot panic on its input: any field may be empty and any time
//! may fail to parse. Times are shown in UTC as `YYYY-MM-DD HH:MM:SS UTC`; a time that does not
//! parse reads "time unknown" and sorts last. Prose (the postmortem's summary, the status-page
//! draft) says `HH:MM UTC`, as a person would write it.
//!
//! The Markdown documents are built from plain text: every value, and every sentence made from
//! one, goes through `escape::markdown` (or `markdown_code`, `markdown_url`) where it is put
//! into the document, so alert data never becomes a link, an image or HTML; the markup around
//! it is nightshift's own. The JSON bodies carry the values as they are.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::bundle::facts::{BundleFacts, CollectorFacts, DecisionFacts, PageEventFacts};
use crate::escape::{markdown, markdown_code, markdown_fenced, markdown_url};
use crate::page::notify::render::{
    DEFAULT_STATUS_TEMPLATE, action_sentence, change_summary, status_context,
};
use crate::page::notify::view::{ActionLine, IncidentView, PageView};
use crate::page::policy::PageState;

const UNKNOWN_TIME: &str = "time unknown";
const TO_BE_WRITTEN: &str = "_to be written_";
/// Files listed per collector before the rest are counted; the manifest has them all.
const FILES_SHOWN: usize = 12;
/// A label value shown to customers (the service's name) is cut at this many characters.
const SERVICE_NAME_LIMIT: usize = 80;

// ---------------------------------------------------------------------------------------------
// timeline.md

/// `timeline.md`: every recorded event with its UTC time, oldest first.
pub fn timeline(facts: &BundleFacts) -> String {
    let mut text = format!("# Timeline: {}\n\n", markdown(&title(facts)));
    text.push_str(&heading_line(facts));
    text.push_str("\n\n");
    let events = events(facts);
    if events.is_empty() {
        text.push_str("- nothing recorded yet\n");
    }
    for event in &events {
        text.push_str(&event.line());
    }
    if !facts.collectors.is_empty() {
        text.push_str(&format!(
            "\nCollectors carry no time of their own: they are shown when this bundle was \
             written ({}), with the phase they ran in.\n",
            utc(&facts.generated_at)
        ));
    }
    text
}

/// One thing that happened, placed in time.
struct Event {
    at: Option<DateTime<Utc>>,
    /// Orders events recorded at the same instant: an alert is opened before it is decided,
    /// acted on, paged and resolved.
    order: u8,
    /// Markdown, escaped.
    what: String,
    /// Markdown, escaped.
    text: String,
    /// Kept in the postmortem's short timeline.
    key: bool,
    /// Needs a human's eye (an unknown outcome, a failed page, a failed probe).
    alarm: bool,
}

const ORDER_OPEN: u8 = 0;
const ORDER_DECISION: u8 = 1;
const ORDER_ACTION: u8 = 2;
const ORDER_VERIFY: u8 = 3;
const ORDER_PAGE: u8 = 4;
const ORDER_CLOSE: u8 = 5;
const ORDER_BUNDLE: u8 = 6;

impl Event {
    /// An event told in plain text.
    fn new(at: Option<DateTime<Utc>>, order: u8, what: &str, text: String) -> Self {
        Self::markdown(at, order, what, markdown(&text))
    }

    /// An event whose text is already Markdown, its values escaped.
    fn markdown(at: Option<DateTime<Utc>>, order: u8, what: &str, text: String) -> Self {
        Event {
            at,
            order,
            what: markdown(what),
            text,
            key: false,
            alarm: false,
        }
    }

    fn key(mut self) -> Self {
        self.key = true;
        self
    }

    fn alarm(mut self, alarm: bool) -> Self {
        self.alarm = alarm;
        self
    }

    fn line(&self) -> String {
        let time = self.at.map_or_else(|| UNKNOWN_TIME.to_owned(), format_utc);
        let flag = if self.alarm { "⚠️ " } else { "" };
        if self.text.is_empty() {
            format!("- {time} — {flag}**{}**\n", self.what)
        } else {
            format!("- {time} — {flag}**{}**: {}\n", self.what, self.text)
        }
    }
}

/// Every event of the incident, in time order (unknown times last).
fn events(facts: &BundleFacts) -> Vec<Event> {
    let mut events = Vec::new();
    let incident = &facts.incident;
    if !incident.starts_at.trim().is_empty() {
        events.push(
            Event::new(
                parse_time(&incident.starts_at),
                ORDER_OPEN,
                "firing",
                format!(
                    "{} started firing (Alertmanager's startsAt)",
                    alert_name(facts)
                ),
            )
            .key(),
        );
    }
    let mut closed = false;
    for transition in &facts.transitions {
        closed |= matches!(transition.kind.as_str(), "resolved" | "gone");
        events.push(transition_event(&transition.at, &transition.kind));
    }
    if !closed && let Some(ended) = incident.ended_at.as_deref() {
        let kind = if incident.status == "gone" {
            "gone"
        } else {
            "resolved"
        };
        events.push(transition_event(ended, kind));
    }
    decision_events(&facts.decisions, &mut events);
    for action in &facts.actions {
        action_events(action, &mut events);
    }
    for page in &facts.pages {
        page_events(page, &mut events);
    }
    let written = parse_time(&facts.generated_at);
    for collector in &facts.collectors {
        events.push(
            Event::markdown(
                written,
                ORDER_BUNDLE,
                "collected",
                collector_text(collector),
            )
            .alarm(collector_failed(collector)),
        );
    }
    // A stable sort keeps the recorded order among events of the same instant and kind.
    events.sort_by_key(|event| (event.at.is_none(), event.at, event.order));
    events
}

fn transition_event(at: &str, kind: &str) -> Event {
    let at = parse_time(at);
    let (order, text, key) = match kind {
        "opened" => (
            ORDER_OPEN,
            "nightshift received the alert and opened the incident",
            true,
        ),
        "reopened" => (ORDER_OPEN, "the alert fires again", true),
        "resolved" => (
            ORDER_CLOSE,
            "Alertmanager reported the alert resolved",
            true,
        ),
        "gone" => (
            ORDER_CLOSE,
            "the alert vanished from Alertmanager without a resolve",
            true,
        ),
        "silenced" => (ORDER_CLOSE, "silenced or inhibited in Alertmanager", true),
        "unsilenced" => (ORDER_OPEN, "no longer silenced or inhibited", false),
        _ => (ORDER_CLOSE, "", false),
    };
    let what = shown(kind, "transition");
    let event = Event::new(at, order, &what, text.to_owned());
    if key { event.key() } else { event }
}

fn decision_events(decisions: &[DecisionFacts], events: &mut Vec<Event>) {
    let mut previous: Option<&DecisionFacts> = None;
    for decision in decisions {
        let at = parse_time(&decision.at);
        let branch = shown(&decision.branch, "no branch");
        let note = one_line(&decision.note);
        match previous {
            None => {
                let mut text = format!(
                    "rule {}, {}",
                    shown(&decision.rule, "unknown"),
                    shown(&decision.severity, "no severity")
                );
                if !decision.why.trim().is_empty() {
                    text.push_str(&format!(" — {}", decision.why));
                }
                events.push(Event::new(at, ORDER_DECISION, "classified", text).key());
                probe_events(decision, at, events);
                events.push(
                    Event::new(at, ORDER_DECISION, "branch taken", joined(&branch, &note)).key(),
                );
            }
            Some(before) => {
                let branch_changed = decision.changed || before.branch != decision.branch;
                let mut text = if branch_changed {
                    format!("branch {} → {branch}", shown(&before.branch, "none"))
                } else {
                    format!("branch {branch} unchanged")
                };
                if before.severity != decision.severity {
                    text.push_str(&format!(
                        "; severity {} → {}",
                        shown(&before.severity, "none"),
                        shown(&decision.severity, "none")
                    ));
                }
                if before.rule != decision.rule {
                    text.push_str(&format!(
                        "; rule {} → {}",
                        shown(&before.rule, "none"),
                        shown(&decision.rule, "none")
                    ));
                }
                let what = if branch_changed {
                    "branch changed"
                } else {
                    "re-evaluated"
                };
                if branch_changed && !note.is_empty() {
                    text.push_str(&format!(": {note}"));
                }
                let event = Event::new(at, ORDER_DECISION, what, text);
                let key = branch_changed || before.severity != decision.severity;
                events.push(if key { event.key() } else { event });
                probe_events(decision, at, events);
            }
        }
        previous = Some(decision);
    }
}

fn probe_events(decision: &DecisionFacts, at: Option<DateTime<Utc>>, events: &mut Vec<Event>) {
    for (name, result) in &decision.probes {
        events.push(
            Event::new(
                at,
                ORDER_DECISION,
                "probed",
                joined(&shown(name, "probe"), &shown(result, "no result")),
            )
            .alarm(probe_failed(result)),
        );
    }
}

fn action_events(action: &ActionLine, events: &mut Vec<Event>) {
    let at = action.at.as_deref().and_then(parse_time);
    let outcome = ActionOutcome::of(action);
    let what = match outcome {
        ActionOutcome::Helped | ActionOutcome::DidNotHelp | ActionOutcome::Unjudged => "acted",
        ActionOutcome::Failed => "action failed",
        ActionOutcome::Uncertain => "action outcome unknown",
        ActionOutcome::NotApplied => "action not applied",
        ActionOutcome::InProgress if action.state == "planned" => "action planned",
        ActionOutcome::InProgress => "action started",
        ActionOutcome::Skipped => "skipped",
        ActionOutcome::DryRun => "dry-run",
        ActionOutcome::Other => "action",
    };
    let mut text = plain_sentence(action);
    if outcome == ActionOutcome::Skipped && !action.detail.trim().is_empty() {
        let detail = one_line(&action.detail);
        if !text.contains(&detail) {
            text.push_str(&format!(" (governor: {detail})"));
        }
    }
    events.push(
        Event::new(at, ORDER_ACTION, what, text)
            .key()
            .alarm(outcome.needs_a_human()),
    );
    let verified = action.verified.as_deref().unwrap_or("").trim();
    if verified.is_empty() {
        return;
    }
    let window = action.verify_window.trim();
    let judged_at = at.map(|at| {
        crate::duration::parse(window)
            .ok()
            .and_then(|window| chrono::Duration::from_std(window).ok())
            .and_then(|window| at.checked_add_signed(window))
            .unwrap_or(at)
    });
    let after = if window.is_empty() {
        "its verify window".to_owned()
    } else {
        window.to_owned()
    };
    let name = action_name(action);
    let text = match verified {
        "helped" => format!("{name} helped: the alert no longer fired after {after}"),
        "did_not_help" => format!("{name} did not help: still firing after {after}"),
        other => format!("{name}: {other}"),
    };
    events.push(Event::new(judged_at, ORDER_VERIFY, "verified", text).key());
}

fn page_events(page: &PageEventFacts, events: &mut Vec<Event>) {
    let at = parse_time(&page.at);
    let channel = channel_name(&page.channel);
    let kind = page_kind_name(&page.kind);
    let reason = one_line(&page.reason);
    let fallback = fallback_reason(&page.reason);
    let queued = match fallback {
        Some(why) => Event::new(
            at,
            ORDER_PAGE,
            "fallback",
            joined(&format!("{kind} handed to {channel}"), why),
        )
        .key(),
        None => Event::new(
            at,
            ORDER_PAGE,
            "page queued",
            joined(&format!("{channel} {kind}"), &reason),
        ),
    };
    events.push(queued);
    let attempts = attempts_text(page.attempts);
    let is_change = page.kind == "change";
    match page.state.as_str() {
        "delivered" => {
            let delivered_at = page.delivered_at.as_deref().and_then(parse_time).or(at);
            let what = match page.kind.as_str() {
                "trigger" => "paged",
                "resolve" => "page resolved",
                "change" => "change event",
                _ => "page delivered",
            };
            let mut text = format!("{channel} {kind} delivered");
            if !attempts.is_empty() {
                text.push_str(&format!(" ({attempts})"));
            }
            let event = Event::new(delivered_at, ORDER_PAGE, what, text);
            events.push(if is_change { event } else { event.key() });
        }
        "rejected" => {
            let mut text = format!("{channel} {kind} rejected");
            if !attempts.is_empty() {
                text.push_str(&format!(" after {attempts}"));
            }
            if let Some(error) = page
                .error
                .as_deref()
                .filter(|error| !error.trim().is_empty())
            {
                text.push_str(&format!(": {error}"));
            }
            events.push(
                Event::new(at, ORDER_PAGE, "page rejected", text)
                    .key()
                    .alarm(true),
            );
        }
        state => {
            let error = page
                .error
                .as_deref()
                .filter(|error| !error.trim().is_empty());
            if error.is_some() || page.attempts > 0 {
                let mut text = format!("{channel} {kind} not delivered yet");
                if !attempts.is_empty() {
                    text.push_str(&format!(" ({attempts})"));
                }
                if let Some(error) = error {
                    text.push_str(&format!("; last error: {error}"));
                }
                events.push(
                    Event::new(at, ORDER_PAGE, "page failing", text)
                        .key()
                        .alarm(true),
                );
            } else if !matches!(state, "pending" | "") {
                events.push(Event::new(
                    at,
                    ORDER_PAGE,
                    "page",
                    format!("{channel} {kind}: {state}"),
                ));
            }
        }
    }
}

/// A collector as Markdown: its name, how it went and its files.
fn collector_text(collector: &CollectorFacts) -> String {
    let mut text = markdown(&shown(&collector.name, "collector"));
    let mut about: Vec<String> = Vec::new();
    if !collector.kind.trim().is_empty() {
        about.push(one_line(&collector.kind));
    }
    if !collector.phase.trim().is_empty() {
        about.push(format!("at {}", one_line(&collector.phase)));
    }
    if collector.shared {
        about.push("shared with another incident".to_owned());
    }
    if !about.is_empty() {
        text.push_str(&format!(" ({})", markdown(&about.join(", "))));
    }
    text.push_str(&format!(
        ": {}",
        markdown(&collector_status(&collector.status))
    ));
    if collector.duration_ms > 0 {
        text.push_str(&format!(" in {}", milliseconds_text(collector.duration_ms)));
    }
    if let Some(error) = collector
        .error
        .as_deref()
        .filter(|error| !error.trim().is_empty())
    {
        text.push_str(&format!(" — {}", markdown(error)));
    }
    text.push_str(&format!(" → {}", files_text(&collector.files)));
    text
}

fn collector_failed(collector: &CollectorFacts) -> bool {
    matches!(collector.status.as_str(), "failed" | "timed_out")
}

fn collector_status(status: &str) -> String {
    match status {
        "ok" => "ok".to_owned(),
        "truncated" => "ok, truncated at its size cap".to_owned(),
        "failed" => "FAILED".to_owned(),
        "timed_out" => "TIMED OUT".to_owned(),
        "skipped" => "skipped".to_owned(),
        other => shown(other, "status unknown"),
    }
}

fn files_text(files: &[String]) -> String {
    let files: Vec<String> = files
        .iter()
        .map(|file| one_line(file))
        .filter(|file| !file.is_empty())
        .collect();
    if files.is_empty() {
        return "no files".to_owned();
    }
    let mut text = files
        .iter()
        .take(FILES_SHOWN)
        .map(|file| markdown_code(file))
        .collect::<Vec<_>>()
        .join(", ");
    if files.len() > FILES_SHOWN {
        text.push_str(&format!(" and {} more", files.len() - FILES_SHOWN));
    }
    text
}

// ---------------------------------------------------------------------------------------------
// comms.md

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

// ---------------------------------------------------------------------------------------------
// postmortem.md

/// `postmortem.md`: a blameless first draft, filled in with everything nightshift knows, and
/// the sections only a person can write clearly marked as such.
pub fn postmortem(facts: &BundleFacts) -> String {
    let incident = &facts.incident;
    let mut text = format!("# Postmortem (draft): {}\n\n", markdown(&title(facts)));
    text.push_str(
        "_A blameless first draft written by nightshift from what it recorded. Check it against \
         the evidence, then write the sections marked \"to be written\"._\n\n",
    );

    // The facts at a glance.
    let date = parse_time(&incident.starts_at)
        .or_else(|| parse_time(&facts.generated_at))
        .map_or_else(
            || "unknown".to_owned(),
            |time| time.format("%Y-%m-%d").to_string(),
        );
    text.push_str(&format!("- **Date:** {date}\n"));
    text.push_str(&format!(
        "- **Duration:** {}\n",
        markdown(&duration_line(facts))
    ));
    text.push_str(&format!(
        "- **Severity:** {}\n",
        markdown(&severity_text(
            &incident.severity,
            &incident.meaning,
            &incident.respond_within
        ))
    ));
    text.push_str(&format!(
        "- **Status:** {}\n",
        markdown(&shown(&incident.status, "unknown"))
    ));
    text.push_str(&format!(
        "- **Incident:** {} · alert {} · rule {} · branch {}\n",
        markdown_code(&shown(&incident.id, "unknown")),
        markdown(&known_alert_name(facts).unwrap_or_else(|| "unknown".to_owned())),
        markdown(&shown(&incident.rule, "unknown")),
        markdown(&shown(&incident.branch, "none"))
    ));
    if let Some(commander) = incident
        .incident_commander
        .as_deref()
        .filter(|name| !name.trim().is_empty())
    {
        text.push_str(&format!(
            "- **Incident commander:** {}\n",
            markdown(commander)
        ));
    }
    if let Some(bundle) = bundle_markdown(facts) {
        text.push_str(&format!("- **Bundle:** {bundle}\n"));
    }

    text.push_str("\n## Summary\n\n");
    text.push_str(&summary_paragraph(facts));
    text.push('\n');

    text.push_str("\n## Detection\n\n");
    text.push_str(&detection_paragraph(facts));
    text.push('\n');

    text.push_str("\n## Timeline (UTC)\n\n");
    let key_events: Vec<Event> = events(facts)
        .into_iter()
        .filter(|event| event.key)
        .collect();
    if key_events.is_empty() {
        text.push_str("- nothing recorded\n");
    }
    for event in &key_events {
        text.push_str(&event.line());
    }
    text.push_str("\nEvery event, probe and collector is in `timeline.md`.\n");

    text.push_str("\n## What was tried\n\n");
    if facts.actions.is_empty() {
        text.push_str("Nothing automatic: the runbook's branch has no action for this case.\n");
    }
    for action in &facts.actions {
        let when = action
            .at
            .as_deref()
            .map_or_else(|| UNKNOWN_TIME.to_owned(), utc);
        text.push_str(&format!(
            "- {when} — {}. {}\n",
            markdown(&action_sentence(action)),
            ActionOutcome::of(action).verdict_text()
        ));
    }

    text.push_str("\n## What the probes showed\n\n");
    text.push_str(&probes_section(&facts.decisions));

    text.push_str("\n## Pages sent\n\n");
    text.push_str(&pages_section(facts));

    text.push_str("\n## Evidence collected\n\n");
    if facts.collectors.is_empty() {
        text.push_str("No collector ran.\n");
    }
    for collector in &facts.collectors {
        let flag = if collector_failed(collector) {
            "⚠️ "
        } else {
            ""
        };
        text.push_str(&format!("- {flag}{}\n", collector_text(collector)));
    }
    if let Some(bundle) = bundle_markdown(facts) {
        text.push_str(&format!("\nAll of it is in the bundle: {bundle}\n"));
    }

    text.push_str("\n## Root cause\n\n");
    text.push_str(&format!(
        "Root cause: {TO_BE_WRITTEN} (what broke, and why it broke then)\n"
    ));
    if !incident.note.trim().is_empty() {
        text.push_str(&format!(
            "\nThe runbook's guess, to confirm or correct: \"{}\"\n",
            markdown(&incident.note)
        ));
    }

    text.push_str("\n## Impact\n\n");
    text.push_str(&format!(
        "Impact: {TO_BE_WRITTEN} (customer-visible? duration? affected users?)\n"
    ));
    let mut known = Vec::new();
    if !incident.severity.trim().is_empty() {
        known.push(severity_text(
            &incident.severity,
            &incident.meaning,
            &incident.respond_within,
        ));
    }
    known.push(format!("duration {}", duration_line(facts)));
    if let Some(description) = incident
        .annotations
        .get("description")
        .map(|text| one_line(text))
        .filter(|text| !text.is_empty())
    {
        known.push(format!("the alert said: \"{description}\""));
    }
    text.push_str(&format!(
        "\nKnown so far: {}.\n",
        markdown(&known.join("; "))
    ));

    text.push_str("\n## Action items\n\n");
    text.push_str(&format!("Action items: {TO_BE_WRITTEN}\n\n"));
    text.push_str("| Action item | Owner | Priority | Due | Ticket |\n");
    text.push_str("| --- | --- | --- | --- | --- |\n");
    text.push_str(&format!("| {TO_BE_WRITTEN} | | | | |\n"));

    text.push_str("\n## Lessons learned\n\n");
    text.push_str(&format!("Lessons learned: {TO_BE_WRITTEN}\n\n"));
    text.push_str("- What went well:\n- What went badly:\n- Where we were lucky:\n");
    if !facts.generated_at.trim().is_empty() {
        text.push_str(&format!(
            "\n_Drafted by nightshift at {}._\n",
            utc(&facts.generated_at)
        ));
    }
    text
}

/// "42m (2026-11-28 03:02:00 UTC → 2026-11-28 03:44:00 UTC)" or "ongoing (firing since …)".
fn duration_line(facts: &BundleFacts) -> String {
    let incident = &facts.incident;
    let ended = incident
        .ended_at
        .as_deref()
        .filter(|ended| !ended.trim().is_empty());
    let Some(ended) = ended else {
        return if incident.starts_at.trim().is_empty() {
            "ongoing".to_owned()
        } else {
            format!("ongoing (firing since {})", utc(&incident.starts_at))
        };
    };
    let duration = incident_duration(facts).unwrap_or_else(|| "unknown".to_owned());
    format!("{duration} ({} → {})", utc(&incident.starts_at), utc(ended))
}

/// How long it lasted: the store's words, else computed from its start and end.
fn incident_duration(facts: &BundleFacts) -> Option<String> {
    let incident = &facts.incident;
    if let Some(duration) = incident
        .duration
        .as_deref()
        .map(one_line)
        .filter(|duration| !duration.is_empty())
    {
        return Some(duration);
    }
    let start = parse_time(&incident.starts_at)?;
    let end = parse_time(incident.ended_at.as_deref()?)?;
    Some(duration_text(
        end.signed_duration_since(start).num_seconds(),
    ))
}

/// The summary: what fired and for how long, what the runbook concluded, what nightshift did,
/// and who was paged.
fn summary_paragraph(facts: &BundleFacts) -> String {
    let incident = &facts.incident;
    let mut sentences = Vec::new();
    let what = title(facts);
    let ended = incident.ended_at.as_deref().unwrap_or("");
    let opening = match clock_span(&incident.starts_at, ended, "from", "to") {
        Some(span) => match incident_duration(facts) {
            Some(duration) => format!("{what} {span} ({duration})"),
            None => format!("{what} {span}"),
        },
        None => match clock(&incident.starts_at) {
            Some(start) if ended.trim().is_empty() => format!(
                "{what}, firing since {start} UTC and still open when this draft was written"
            ),
            Some(start) => format!("{what}, from {start} UTC"),
            None => what,
        },
    };
    sentences.push(opening);
    if !incident.note.trim().is_empty() {
        sentences.push(format!(
            "The runbook ({}, branch {}) says: {}",
            shown(&incident.rule, "unknown rule"),
            shown(&incident.branch, "none"),
            one_line(&incident.note)
        ));
    }
    if facts.actions.is_empty() {
        sentences.push("nightshift took no automatic action".to_owned());
    }
    for action in &facts.actions {
        sentences.push(nightshift_did(action));
    }
    sentences.push(paging_sentence(facts));
    sentences
        .into_iter()
        .filter(|sentence| !sentence.trim().is_empty())
        .map(|sentence| markdown(&capitalise(&full_stop(&sentence))))
        .collect::<Vec<_>>()
        .join(" ")
}

/// "nightshift restarted deployment vastai/vastai-integration at 03:05:00; still failing after
/// 10m".
fn nightshift_did(action: &ActionLine) -> String {
    let sentence = action_sentence(action);
    let reads_as_verb = [
        "restarted",
        "scaled",
        "set env",
        "ran",
        "called",
        "would have",
        "did not",
        "tried to",
    ]
    .iter()
    .any(|verb| sentence.starts_with(verb));
    if reads_as_verb {
        format!("nightshift {sentence}")
    } else {
        format!("nightshift: {sentence}")
    }
}

/// Who was paged and when, or why nobody was.
fn paging_sentence(facts: &BundleFacts) -> String {
    let incident = &facts.incident;
    let reason = one_line(&incident.paging_reason);
    let because = if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason})")
    };
    let triggers: Vec<&PageEventFacts> = facts
        .pages
        .iter()
        .filter(|page| page.kind == "trigger")
        .collect();
    if let Some(page) = triggers.iter().find(|page| page.state == "delivered") {
        let when = page
            .delivered_at
            .as_deref()
            .and_then(clock)
            .or_else(|| clock(&page.at));
        return match when {
            Some(when) => format!(
                "the on-call engineer was paged at {when} UTC through {}{because}",
                channel_name(&page.channel)
            ),
            None => format!(
                "the on-call engineer was paged through {}{because}",
                channel_name(&page.channel)
            ),
        };
    }
    // Not delivered: the one page state the API, `incidents show` and the report show too.
    let state = crate::bundle::facts::page_state(
        &incident.paging_state,
        &incident.paging_reason,
        &facts.pages,
    );
    if !matches!(state, PageState::NotPaged { .. }) {
        return one_line(&state.sentence());
    }
    match incident.paging_state.as_str() {
        "not_paged" => format!("nobody was paged{because}"),
        "waiting" => format!("paging was waiting{because}"),
        "paged" => format!("it was paged{because}"),
        "resolved" => format!("it resolved before paging{because}"),
        _ if reason.is_empty() => String::new(),
        state => format!("paging: {state}{because}"),
    }
}

fn detection_paragraph(facts: &BundleFacts) -> String {
    let incident = &facts.incident;
    let mut sentences = Vec::new();
    let alert = known_alert_name(facts)
        .map_or_else(|| "An alert".to_owned(), |name| format!("Alert {name}"));
    match parse_time(&incident.starts_at) {
        Some(start) => sentences.push(format!(
            "{alert} started firing at {} (Prometheus alerting rule, through Alertmanager)",
            format_utc(start)
        )),
        None => sentences.push(format!(
            "{alert} fired (Prometheus alerting rule, through Alertmanager)"
        )),
    }
    if let Some(opened) = facts
        .transitions
        .iter()
        .find(|transition| transition.kind == "opened")
    {
        sentences.push(format!("nightshift received it at {}", utc(&opened.at)));
    }
    if let Some(first) = facts.decisions.first() {
        let mut sentence = format!(
            "nightshift classified it as {} with rule {} at {}",
            shown(&first.severity, "no severity"),
            shown(&first.rule, "unknown"),
            utc(&first.at)
        );
        if !first.why.trim().is_empty() {
            sentence.push_str(&format!(" because {}", one_line(&first.why)));
        }
        sentences.push(sentence);
    }
    let mut text = sentences
        .into_iter()
        .map(|sentence| markdown(&capitalise(&full_stop(&sentence))))
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(description) = incident
        .annotations
        .get("description")
        .map(|text| markdown(text))
        .filter(|text| !text.is_empty())
    {
        text.push_str(&format!("\n\nThe alert said: \"{description}\""));
    }
    let source = incident.generator_url.trim();
    if crate::escape::is_web(source) {
        text.push_str(&format!("\n\nAlert expression: {}", markdown_url(source)));
    }
    text
}

fn probes_section(decisions: &[DecisionFacts]) -> String {
    let mut text = String::new();
    for decision in decisions {
        let which = match decision.kind.as_str() {
            "initial" => "first decision",
            "reevaluation" => "re-evaluation",
            other if other.trim().is_empty() => "decision",
            other => other,
        };
        for (name, result) in &decision.probes {
            let flag = if probe_failed(result) { "⚠️ " } else { "" };
            text.push_str(&format!(
                "- {flag}{}: {} ({}, {})\n",
                markdown(&shown(name, "probe")),
                markdown(&shown(result, "no result")),
                markdown(which),
                utc(&decision.at)
            ));
        }
    }
    if text.is_empty() {
        text.push_str("No probe ran: the rule decides without asking anything.\n");
    }
    text
}

fn pages_section(facts: &BundleFacts) -> String {
    let incident = &facts.incident;
    let mut text = String::new();
    let state = crate::bundle::facts::page_state(
        &incident.paging_state,
        &incident.paging_reason,
        &facts.pages,
    );
    text.push_str(&format!(
        "Page state: {} — {}\n\n",
        markdown_code(state.as_str()),
        markdown(&state.sentence())
    ));
    if !incident.paging_state.trim().is_empty() || !incident.paging_reason.trim().is_empty() {
        text.push_str(&format!(
            "Paging decision: {}",
            markdown(&shown(&incident.paging_state, "unknown"))
        ));
        if !incident.paging_reason.trim().is_empty() {
            text.push_str(&format!(" — {}", markdown(&incident.paging_reason)));
        }
        text.push_str("\n\n");
    }
    let mut listed = 0;
    for page in &facts.pages {
        let flag = if page_failed(page) { "⚠️ " } else { "" };
        text.push_str(&format!(
            "- {flag}{} — {}\n",
            utc(&page.at),
            markdown(&page_summary(page))
        ));
        listed += 1;
    }
    if listed == 0 {
        text.push_str("No page was sent.\n");
    }
    text
}

/// "PagerDuty trigger: delivered at 2026-11-28 03:15:02 UTC (1 attempt); reason: …", as plain
/// text.
pub(crate) fn page_summary(page: &PageEventFacts) -> String {
    let channel = channel_name(&page.channel);
    let kind = page_kind_name(&page.kind);
    let attempts = attempts_text(page.attempts);
    let mut text = format!("{channel} {kind}: ");
    match page.state.as_str() {
        "delivered" => {
            text.push_str("delivered");
            if let Some(at) = page.delivered_at.as_deref() {
                text.push_str(&format!(" at {}", utc(at)));
            }
        }
        "rejected" => text.push_str("REJECTED"),
        "pending" if page.attempts > 0 || page.error.is_some() => {
            text.push_str("NOT DELIVERED yet")
        }
        "pending" => text.push_str("queued"),
        other => text.push_str(&shown(other, "state unknown")),
    }
    if !attempts.is_empty() {
        text.push_str(&format!(" ({attempts})"));
    }
    if let Some(error) = page
        .error
        .as_deref()
        .map(one_line)
        .filter(|error| !error.is_empty())
    {
        text.push_str(&format!("; error: {error}"));
    }
    let reason = one_line(&page.reason);
    if !reason.is_empty() {
        text.push_str(&format!("; reason: {reason}"));
    }
    text
}

/// A page event that did not reach anyone: rejected, or failing and not yet delivered.
pub(crate) fn page_failed(page: &PageEventFacts) -> bool {
    match page.state.as_str() {
        "rejected" => true,
        "delivered" => false,
        _ => {
            page.attempts > 0
                || page
                    .error
                    .as_deref()
                    .is_some_and(|error| !error.trim().is_empty())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// decision.json, actions.json, pages.json

/// The body of `decision.json`: the rule and why it matched, what each probe answered, and
/// every decision over time with its whole trace.
pub fn decision_json(facts: &BundleFacts) -> Value {
    let incident = &facts.incident;
    let first = facts.decisions.first();
    let mut probes: Map<String, Value> = Map::new();
    for decision in &facts.decisions {
        for (name, result) in &decision.probes {
            let history = probes
                .entry(name.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(history) = history {
                history.push(json!({
                    "at": decision.at,
                    "at_utc": utc(&decision.at),
                    "result": result,
                }));
            }
        }
    }
    let branches: Vec<Value> = facts
        .decisions
        .iter()
        .map(|decision| {
            json!({
                "at": decision.at,
                "at_utc": utc(&decision.at),
                "kind": decision.kind,
                "branch": decision.branch,
                "severity": decision.severity,
                "changed": decision.changed,
            })
        })
        .collect();
    let decisions: Vec<Value> = facts
        .decisions
        .iter()
        .map(|decision| {
            json!({
                "at": decision.at,
                "at_utc": utc(&decision.at),
                "kind": decision.kind,
                "rule": decision.rule,
                "severity": decision.severity,
                "branch": decision.branch,
                "changed": decision.changed,
                "note": decision.note,
                "why": decision.why,
                "probes": decision.probes,
                "trace": decision.trace,
            })
        })
        .collect();
    json!({
        "incident": incident.id,
        "alertname": incident.alertname,
        "rule": incident.rule,
        "matched_because": first.map_or("", |decision| decision.why.as_str()),
        "severity": {
            "level": incident.severity,
            "meaning": incident.meaning,
            "respond_within": incident.respond_within,
        },
        "branch": {
            "current": incident.branch,
            "note": incident.note,
        },
        "labels": incident.labels,
        "probes": probes,
        "branches_over_time": branches,
        "decisions": decisions,
    })
}

/// The body of `actions.json`: every action with the governor's verdict, its state, the
/// sentence a human reads and whether it helped.
pub fn actions_json(facts: &BundleFacts) -> Value {
    let actions: Vec<Value> = facts
        .actions
        .iter()
        .map(|action| {
            json!({
                "id": action.id,
                "name": action.name,
                "kind": action.kind,
                "target": action.target,
                "verdict": action.verdict,
                "state": action.state,
                "outcome": ActionOutcome::of(action).label(),
                "sentence": action_sentence(action),
                "at": action.at,
                "at_utc": action.at.as_deref().map(utc),
                "verified": action.verified,
                "verify_window": action.verify_window,
                "detail": action.detail,
                "shares": action.shares,
            })
        })
        .collect();
    json!({
        "incident": facts.incident.id,
        "count": actions.len(),
        "actions": actions,
    })
}

/// The body of `pages.json`: whether and why it paged, and every page event.
pub fn pages_json(facts: &BundleFacts) -> Value {
    let events: Vec<Value> = facts
        .pages
        .iter()
        .map(|page| {
            json!({
                "at": page.at,
                "at_utc": utc(&page.at),
                "channel": page.channel,
                "kind": page.kind,
                "state": page.state,
                "reason": page.reason,
                "fallback": fallback_reason(&page.reason).is_some(),
                "attempts": page.attempts,
                "delivered_at": page.delivered_at,
                "delivered_at_utc": page.delivered_at.as_deref().map(utc),
                "error": page.error,
                "summary": page_summary(page),
            })
        })
        .collect();
    json!({
        "incident": facts.incident.id,
        "paging": {
            "state": facts.incident.paging_state,
            "reason": facts.incident.paging_reason,
        },
        "count": events.len(),
        "events": events,
    })
}

// ---------------------------------------------------------------------------------------------
// What an action came to (shared with the report)

/// What an action came to, as a reader needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ActionOutcome {
    /// It ran and the alert stopped within its verify window.
    Helped,
    /// It ran and the alert still fired after its verify window.
    DidNotHelp,
    /// It ran; its verify window has not passed.
    Unjudged,
    Failed,
    /// Started, and nobody knows whether it finished: check by hand.
    Uncertain,
    NotApplied,
    InProgress,
    /// The governor did not run it (cooldown, in flight, budget, paused, did not help before).
    Skipped,
    /// Dry-run or shadow: recorded, nothing changed.
    DryRun,
    Other,
}

impl ActionOutcome {
    pub(crate) fn of(action: &ActionLine) -> Self {
        match action.verdict.as_str() {
            "dry_run" | "shadow" => return ActionOutcome::DryRun,
            "cooldown" | "in_flight" | "budget" | "paused" | "did_not_help" => {
                return ActionOutcome::Skipped;
            }
            _ => {}
        }
        match action.state.as_str() {
            "done" => match action.verified.as_deref() {
                Some("helped") => ActionOutcome::Helped,
                Some("did_not_help") => ActionOutcome::DidNotHelp,
                _ => ActionOutcome::Unjudged,
            },
            "failed" => ActionOutcome::Failed,
            "uncertain" => ActionOutcome::Uncertain,
            "not_applied" => ActionOutcome::NotApplied,
            "started" | "planned" => ActionOutcome::InProgress,
            "skipped" => ActionOutcome::Skipped,
            _ => ActionOutcome::Other,
        }
    }

    /// A person has to look: the target's state is unknown, or the action broke.
    pub(crate) fn needs_a_human(self) -> bool {
        matches!(self, ActionOutcome::Failed | ActionOutcome::Uncertain)
    }

    /// It changed something (or was meant to and did).
    pub(crate) fn ran(self) -> bool {
        matches!(
            self,
            ActionOutcome::Helped | ActionOutcome::DidNotHelp | ActionOutcome::Unjudged
        )
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            ActionOutcome::Helped => "helped",
            ActionOutcome::DidNotHelp => "did_not_help",
            ActionOutcome::Unjudged => "not_judged_yet",
            ActionOutcome::Failed => "failed",
            ActionOutcome::Uncertain => "uncertain",
            ActionOutcome::NotApplied => "not_applied",
            ActionOutcome::InProgress => "in_progress",
            ActionOutcome::Skipped => "skipped",
            ActionOutcome::DryRun => "dry_run",
            ActionOutcome::Other => "other",
        }
    }

    /// Whether it helped, as the postmortem says it.
    pub(crate) fn verdict_text(self) -> &'static str {
        match self {
            ActionOutcome::Helped => "**Helped.**",
            ActionOutcome::DidNotHelp => "**Did not help.**",
            ActionOutcome::Unjudged => "Not judged: its verify window had not passed.",
            ActionOutcome::Failed => "⚠️ **Failed**: nothing changed.",
            ActionOutcome::Uncertain => "⚠️ **Outcome unknown**: check the target's state by hand.",
            ActionOutcome::NotApplied => "Not applied: nothing changed.",
            ActionOutcome::InProgress => "Still in progress when this was written.",
            ActionOutcome::Skipped => "Skipped by the governor: nothing changed.",
            ActionOutcome::DryRun => "Dry-run: recorded, nothing changed.",
            ActionOutcome::Other => "Outcome not recorded.",
        }
    }
}

/// What an action did, without whether it helped (the timeline says that when it was judged).
fn plain_sentence(action: &ActionLine) -> String {
    let (summary, _) = change_summary(action, "");
    summary
        .strip_prefix("nightshift: ")
        .unwrap_or(&summary)
        .to_owned()
}

fn action_name(action: &ActionLine) -> String {
    let name = if action.name.trim().is_empty() {
        action.kind.as_str()
    } else {
        action.name.as_str()
    };
    let name = shown(name, "the action");
    let target = one_line(&action.target);
    if target.is_empty() {
        name
    } else {
        format!("{name} on {}", cut(&target, 160))
    }
}

// ---------------------------------------------------------------------------------------------
// Shared text helpers

pub(crate) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|time| time.with_timezone(&Utc))
}

fn format_utc(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// An RFC 3339 time as `YYYY-MM-DD HH:MM:SS UTC`, or "time unknown".
pub(crate) fn utc(text: &str) -> String {
    parse_time(text).map_or_else(|| UNKNOWN_TIME.to_owned(), format_utc)
}

/// `HH:MM` in UTC.
fn clock(text: &str) -> Option<String> {
    parse_time(text).map(|time| time.format("%H:%M").to_string())
}

/// "from 03:02 to 03:44 UTC", or with dates when the two fall on different days.
fn clock_span(start: &str, end: &str, from: &str, to: &str) -> Option<String> {
    let start = parse_time(start)?;
    let end = parse_time(end)?;
    if start.date_naive() == end.date_naive() {
        Some(format!(
            "{from} {} {to} {} UTC",
            start.format("%H:%M"),
            end.format("%H:%M")
        ))
    } else {
        Some(format!(
            "{from} {} {to} {} UTC",
            start.format("%Y-%m-%d %H:%M"),
            end.format("%Y-%m-%d %H:%M")
        ))
    }
}

/// "42m", "1h5m", "2d3h", "30s": the largest unit and the next one.
pub(crate) fn duration_text(seconds: i64) -> String {
    crate::duration::format_rough(std::time::Duration::from_secs(
        u64::try_from(seconds).unwrap_or(0),
    ))
}

fn milliseconds_text(milliseconds: u64) -> String {
    if milliseconds < 1000 {
        format!("{milliseconds} ms")
    } else {
        format!("{:.1} s", milliseconds as f64 / 1000.0)
    }
}

/// "P2 — degraded; respond within 1h".
pub(crate) fn severity_text(severity: &str, meaning: &str, respond_within: &str) -> String {
    let mut text = shown(severity, "no severity");
    if !meaning.trim().is_empty() {
        text.push_str(&format!(" — {}", one_line(meaning)));
    }
    if !respond_within.trim().is_empty() {
        let separator = if meaning.trim().is_empty() {
            " — "
        } else {
            "; "
        };
        text.push_str(&format!(
            "{separator}respond within {}",
            one_line(respond_within)
        ));
    }
    text
}

/// "PagerDuty" or "notifier slack-oncall".
pub(crate) fn channel_name(channel: &str) -> String {
    match channel.trim() {
        "pagerduty" => "PagerDuty".to_owned(),
        "" => "an unnamed channel".to_owned(),
        other => format!("notifier {}", one_line(other)),
    }
}

pub(crate) fn page_kind_name(kind: &str) -> String {
    match kind.trim() {
        "change" => "change event".to_owned(),
        "" => "event".to_owned(),
        other => one_line(other),
    }
}

pub(crate) fn attempts_text(attempts: i64) -> String {
    match attempts {
        attempts if attempts <= 0 => String::new(),
        1 => "1 attempt".to_owned(),
        attempts => format!("{attempts} attempts"),
    }
}

/// Why an event went to a fallback channel, if it did (the outbox says "fallback: <why>").
fn fallback_reason(reason: &str) -> Option<&str> {
    reason.trim().strip_prefix("fallback:").map(str::trim)
}

fn probe_failed(result: &str) -> bool {
    let result = result.trim_start();
    result.starts_with("failed") || result.starts_with("unknown")
}

fn is_closed(status: &str) -> bool {
    matches!(status, "resolved" | "gone")
}

/// The incident's title: its summary, else its alert's name, rule or id.
pub(crate) fn title(facts: &BundleFacts) -> String {
    let incident = &facts.incident;
    [
        incident.summary.as_str(),
        incident.alertname.as_str(),
        incident.labels.get("alertname").map_or("", String::as_str),
        incident.rule.as_str(),
        incident.id.as_str(),
    ]
    .into_iter()
    .map(one_line)
    .find(|text| !text.is_empty())
    .unwrap_or_else(|| "incident".to_owned())
}

/// The alert's name, or "an alert".
fn alert_name(facts: &BundleFacts) -> String {
    known_alert_name(facts).unwrap_or_else(|| "an alert".to_owned())
}

fn known_alert_name(facts: &BundleFacts) -> Option<String> {
    let incident = &facts.incident;
    [
        incident.alertname.as_str(),
        incident.labels.get("alertname").map_or("", String::as_str),
    ]
    .into_iter()
    .map(one_line)
    .find(|text| !text.is_empty())
}

/// "Incident `id` · P2 — degraded; respond within 1h · resolved · all times UTC".
fn heading_line(facts: &BundleFacts) -> String {
    let incident = &facts.incident;
    format!(
        "Incident {} · {} · {} · all times UTC",
        markdown_code(&shown(&incident.id, "unknown")),
        markdown(&severity_text(
            &incident.severity,
            &incident.meaning,
            &incident.respond_within
        )),
        markdown(&shown(&incident.status, "status unknown"))
    )
}

/// Where the bundle is: its link, else its path.
pub(crate) fn bundle_location(facts: &BundleFacts) -> Option<String> {
    facts
        .bundle_url
        .as_deref()
        .map(one_line)
        .filter(|url| !url.is_empty())
        .or_else(|| Some(one_line(&facts.bundle_path)).filter(|path| !path.is_empty()))
}

/// Where the bundle is, as Markdown: a link to it, else its path as code.
fn bundle_markdown(facts: &BundleFacts) -> Option<String> {
    bundle_location(facts).map(|location| markdown_location(&location))
}

/// A bundle's link as a link, or its path as code (paths are full of `_`).
pub(crate) fn markdown_location(location: &str) -> String {
    if crate::escape::is_web(location) {
        markdown_url(location)
    } else {
        markdown_code(location)
    }
}

/// One line, single spaces: details come from command output and HTTP answers.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` on one line, or `fallback` when there is nothing to show.
pub(crate) fn shown(text: &str, fallback: &str) -> String {
    let text = one_line(text);
    if text.is_empty() {
        fallback.to_owned()
    } else {
        text
    }
}

/// "first: second", or whichever is not empty.
fn joined(first: &str, second: &str) -> String {
    match (first.trim().is_empty(), second.trim().is_empty()) {
        (false, false) => format!("{first}: {second}"),
        (false, true) => first.to_owned(),
        (true, _) => second.to_owned(),
    }
}

/// `text` within `limit` characters, marked with an ellipsis when cut.
pub(crate) fn cut(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        text.to_owned()
    } else {
        let kept: String = text.chars().take(limit.saturating_sub(1)).collect();
        format!("{kept}…")
    }
}

fn capitalise(text: &str) -> String {
    let mut characters = text.chars();
    match characters.next() {
        // nightshift's name keeps its lower case, as everywhere else.
        Some(_) if text.starts_with("nightshift") => text.to_owned(),
        Some(first) => first.to_uppercase().chain(characters).collect(),
        None => String::new(),
    }
}

fn full_stop(text: &str) -> String {
    let text = text.trim_end();
    if text.ends_with(['.', '!', '?']) {
        text.to_owned()
    } else {
        format!("{text}.")
    }
}

/// Helpers for tests of rendered Markdown (here and in `report`).
#[cfg(test)]
pub(crate) mod text {
    pub(crate) fn position(text: &str, needle: &str) -> usize {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in:\n{text}"))
    }

    pub(crate) fn assert_in_order(text: &str, needles: &[&str]) {
        let positions: Vec<usize> = needles
            .iter()
            .map(|needle| position(text, needle))
            .collect();
        assert!(
            positions.windows(2).all(|pair| pair[0] < pair[1]),
            "{needles:?} out of order in:\n{text}"
        );
    }

    /// The lines outside fenced blocks where an unescaped `[` or `<` would let the hostile data
    /// in them (which always says "evil") make a link, an image, an autolink or HTML.
    pub(crate) fn live_markup(text: &str) -> Vec<&str> {
        let mut fenced = false;
        let mut found = Vec::new();
        for line in text.lines() {
            if line.starts_with("```") {
                fenced = !fenced;
                continue;
            }
            if fenced || !line.contains("evil") {
                continue;
            }
            let mut previous = ' ';
            for character in line.chars() {
                if matches!(character, '[' | '<') && previous != '\\' {
                    found.push(line);
                    break;
                }
                previous = character;
            }
        }
        found
    }

    /// The text of the section that starts with `heading`, up to the next `## `.
    pub(crate) fn section<'a>(text: &'a str, heading: &str) -> &'a str {
        let start = position(text, heading);
        let rest = &text[start + heading.len()..];
        let end = rest.find("\n## ").unwrap_or(rest.len());
        &rest[..end]
    }
}

#[cfg(test)]
mod tests {
    use super::text::{assert_in_order, live_markup, section};
    use std::collections::BTreeMap;

    use super::*;
    use crate::bundle::facts::{IncidentFacts, TransitionFacts};

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    fn page(kind: &str, at: &str, delivered_at: &str, reason: &str) -> PageEventFacts {
        PageEventFacts {
            at: at.into(),
            channel: "pagerduty".into(),
            kind: kind.into(),
            state: "delivered".into(),
            reason: reason.into(),
            attempts: 1,
            delivered_at: Some(delivered_at.into()),
            error: None,
        }
    }

    fn collector(name: &str, kind: &str, status: &str, files: &[&str]) -> CollectorFacts {
        CollectorFacts {
            name: name.into(),
            kind: kind.into(),
            status: status.into(),
            error: None,
            duration_ms: 1200,
            files: files.iter().map(|file| file.to_string()).collect(),
            shared: false,
            phase: "open".into(),
        }
    }

    const NOTE: &str = "Vast.ai status page reports none/All Systems Operational, yet we get \
        5xx: likely our integration (bad requests, a bad deploy) or an incident Vast.ai has not \
        posted yet. Evidence: 12.5% of Vast.ai API requests answered 5xx over the last 5 \
        minutes. No automatic action";

    /// The Vast.ai 5xx incident: P2, the status page says none, one restart that did not help,
    /// paged after its verify window, resolved after 42 minutes, one of four collectors timed
    /// out.
    fn vastai_5xx() -> BundleFacts {
        let decision = |at: &str, kind: &str| DecisionFacts {
            at: at.into(),
            kind: kind.into(),
            rule: "vastai-server-errors".into(),
            severity: "P2".into(),
            branch: "our-integration".into(),
            changed: false,
            note: NOTE.into(),
            why: "alertname=\"VastaiServerErrors\", namespace=\"vastai\" matched".into(),
            probes: map(&[("status", "ok: none/All Systems Operational")]),
            trace: json!({"branches": [{"name": "provider-incident", "result": false}]}),
        };
        BundleFacts {
            incident: IncidentFacts {
                id: "c626d2275ab0f610-20261128T030200Z".into(),
                alertname: "VastaiServerErrors".into(),
                summary: "Vast.ai API server errors (5xx) in vastai".into(),
                status: "resolved".into(),
                severity: "P2".into(),
                meaning: "degraded".into(),
                respond_within: "1h".into(),
                rule: "vastai-server-errors".into(),
                branch: "our-integration".into(),
                note: NOTE.into(),
                labels: map(&[
                    ("alertname", "VastaiServerErrors"),
                    ("namespace", "vastai"),
                    ("service", "vastai-integration"),
                    ("pod", "vastai-integration-7d9f8b6c5-x2k9q"),
                    ("instance", "10.0.3.7:8080"),
                    ("job", "vastai-integration-metrics"),
                ]),
                annotations: map(&[
                    (
                        "description",
                        "12.5% of Vast.ai API requests answered 5xx over the last 5 minutes",
                    ),
                    ("runbook_url", "https://runbooks.example.com/vastai"),
                ]),
                generator_url: "http://prometheus:9090/graph?g0.expr=vastai_5xx".into(),
                starts_at: "2026-11-28T03:02:00Z".into(),
                ended_at: Some("2026-11-28T03:44:00Z".into()),
                duration: Some("42m".into()),
                paging_state: "paged".into(),
                paging_reason: "restart did not help".into(),
                incident_commander: Some("the primary on-call".into()),
                url: Some(
                    "https://nightshift.example/api/v1/incidents/c626d2275ab0f610-20261128T030200Z"
                        .into(),
                ),
            },
            decisions: vec![
                decision("2026-11-28T03:02:05.120Z", "initial"),
                decision("2026-11-28T03:17:05Z", "reevaluation"),
            ],
            actions: vec![ActionLine {
                id: 7,
                name: "restart".into(),
                kind: "kubernetes.rollout_restart".into(),
                target: "deployment/vastai/vastai-integration".into(),
                verdict: "run".into(),
                state: "done".into(),
                at: Some("2026-11-28T03:05:00Z".into()),
                verified: Some("did_not_help".into()),
                verify_window: "10m".into(),
                detail: "restartedAt=2026-11-28T03:05:00Z".into(),
                shares: None,
            }],
            pages: vec![
                page(
                    "change",
                    "2026-11-28T03:05:01Z",
                    "2026-11-28T03:05:02Z",
                    "action",
                ),
                page(
                    "trigger",
                    "2026-11-28T03:15:00Z",
                    "2026-11-28T03:15:02Z",
                    "restart did not help",
                ),
                page(
                    "resolve",
                    "2026-11-28T03:44:01Z",
                    "2026-11-28T03:44:03Z",
                    "resolved",
                ),
            ],
            transitions: vec![
                TransitionFacts {
                    at: "2026-11-28T03:02:04Z".into(),
                    kind: "opened".into(),
                },
                TransitionFacts {
                    at: "2026-11-28T03:44:00Z".into(),
                    kind: "resolved".into(),
                },
            ],
            collectors: vec![
                collector(
                    "error-rate",
                    "prometheus",
                    "ok",
                    &["prometheus/error-rate.json"],
                ),
                collector(
                    "logs",
                    "kubernetes.logs",
                    "truncated",
                    &["logs/vastai-integration-7d9f8b6c5-x2k9q.log"],
                ),
                collector("events", "kubernetes.events", "ok", &["events.json"]),
                CollectorFacts {
                    error: Some("timed out after 10s".into()),
                    duration_ms: 10_000,
                    ..collector("vastai-api", "http", "timed_out", &[])
                },
            ],
            generated_at: "2026-11-28T03:45:00Z".into(),
            bundle_path: "bundles/c626d2275ab0f610-20261128T030200Z.tar.gz".into(),
            bundle_url: Some(
                "https://nightshift.example/api/v1/incidents/c626d2275ab0f610-20261128T030200Z/bundle"
                    .into(),
            ),
        }
    }

    #[test]
    fn the_timeline_is_every_event_in_time_order() {
        let text = timeline(&vastai_5xx());
        let times: Vec<DateTime<Utc>> = text
            .lines()
            .filter_map(|line| line.strip_prefix("- "))
            .map(|line| {
                let time = line.split(" — ").next().unwrap();
                chrono::NaiveDateTime::parse_from_str(time, "%Y-%m-%d %H:%M:%S UTC")
                    .unwrap_or_else(|error| panic!("{time:?}: {error}"))
                    .and_utc()
            })
            .collect();
        assert!(times.len() >= 15, "{text}");
        assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "{text}");
        assert_in_order(
            &text,
            &[
                "# Timeline: Vast.ai API server errors (5xx) in vastai\n",
                "Incident `c626d2275ab0f610-20261128T030200Z` · P2 — degraded; respond within 1h \
                 · resolved · all times UTC",
                "- 2026-11-28 03:02:00 UTC — **firing**: VastaiServerErrors started firing",
                "- 2026-11-28 03:02:04 UTC — **opened**: nightshift received the alert",
                "- 2026-11-28 03:02:05 UTC — **classified**: rule vastai-server-errors, P2 — \
                 alertname=\"VastaiServerErrors\", namespace=\"vastai\" matched",
                "- 2026-11-28 03:02:05 UTC — **probed**: status: ok: none/All Systems Operational",
                "- 2026-11-28 03:02:05 UTC — **branch taken**: our-integration: Vast.ai status page",
                "- 2026-11-28 03:05:00 UTC — **acted**: restarted deployment \
                 vastai/vastai-integration at 03:05:00\n",
                "- 2026-11-28 03:05:01 UTC — **page queued**: PagerDuty change event: action",
                "- 2026-11-28 03:05:02 UTC — **change event**: PagerDuty change event delivered",
                "- 2026-11-28 03:15:00 UTC — **verified**: restart on \
                 deployment/vastai/vastai-integration did not help: still firing after 10m",
                "- 2026-11-28 03:15:00 UTC — **page queued**: PagerDuty trigger: restart did not help",
                "- 2026-11-28 03:15:02 UTC — **paged**: PagerDuty trigger delivered (1 attempt)",
                "- 2026-11-28 03:17:05 UTC — **re-evaluated**: branch our-integration unchanged",
                "- 2026-11-28 03:44:00 UTC — **resolved**: Alertmanager reported the alert resolved",
                "- 2026-11-28 03:44:03 UTC — **page resolved**: PagerDuty resolve delivered",
                "- 2026-11-28 03:45:00 UTC — **collected**: error-rate (prometheus, at open): ok",
                "- 2026-11-28 03:45:00 UTC — ⚠️ **collected**: vastai-api (http, at open): TIMED \
                 OUT in 10.0 s — timed out after 10s → no files",
            ],
        );
    }

    #[test]
    fn the_timeline_tells_skips_failures_and_fallbacks() {
        let mut facts = vastai_5xx();
        facts.actions.push(ActionLine {
            id: 8,
            verdict: "cooldown".into(),
            state: "skipped".into(),
            at: Some("2026-11-28T03:17:05Z".into()),
            verified: None,
            detail: "restarted at 03:05:00, cooldown 30m".into(),
            shares: Some(7),
            ..facts.actions[0].clone()
        });
        facts.decisions[1].branch = "provider-incident".into();
        facts.decisions[1].changed = true;
        facts.decisions[1].note = "Vast.ai status page reports major/Partial System Outage".into();
        facts.decisions[1].probes = map(&[("status", "failed: timeout")]);
        facts.pages.push(PageEventFacts {
            state: "rejected".into(),
            attempts: 3,
            error: Some("Invalid Routing Key".into()),
            delivered_at: None,
            ..page("trigger", "2026-11-28T03:20:00Z", "", "severity raised")
        });
        facts.pages.push(PageEventFacts {
            channel: "slack-oncall".into(),
            ..page(
                "trigger",
                "2026-11-28T03:20:01Z",
                "2026-11-28T03:20:02Z",
                "fallback: PagerDuty rejected the page",
            )
        });
        let text = timeline(&facts);
        assert_in_order(
            &text,
            &[
                "- 2026-11-28 03:17:05 UTC — **branch changed**: branch our-integration → \
                 provider-incident: Vast.ai status page reports major/Partial System Outage",
                "- 2026-11-28 03:17:05 UTC — ⚠️ **probed**: status: failed: timeout",
                "- 2026-11-28 03:17:05 UTC — **skipped**: did not restart deployment \
                 vastai/vastai-integration again: in cooldown, sharing action #7 (governor: \
                 restarted at 03:05:00, cooldown 30m)",
                "- 2026-11-28 03:20:00 UTC — ⚠️ **page rejected**: PagerDuty trigger rejected \
                 after 3 attempts: Invalid Routing Key",
                "- 2026-11-28 03:20:01 UTC — **fallback**: trigger handed to notifier \
                 slack-oncall: PagerDuty rejected the page",
                "- 2026-11-28 03:20:02 UTC — **paged**: notifier slack-oncall trigger delivered",
            ],
        );
    }

    /// The postmortem says the page state the API, `incidents show` and the report say: a
    /// trigger rejected for want of a routing key is "could not be paged", never "paged".
    #[test]
    fn the_postmortem_shows_the_one_page_state() {
        let mut facts = vastai_5xx();
        for page in &mut facts.pages {
            page.state = "rejected".into();
            page.delivered_at = None;
            page.error = Some("no routing key for this page".into());
        }
        let text = postmortem(&facts);
        let sentence = "could not be paged: no PagerDuty routing key and no fallback notifier";
        assert!(
            text.contains(&format!("Page state: `no_destination` — {sentence}\n")),
            "{text}"
        );
        assert!(text.contains(sentence), "{text}");
        assert!(!text.contains("was paged"), "{text}");
    }

    #[test]
    fn the_postmortem_is_a_useful_first_draft() {
        let text = postmortem(&vastai_5xx());
        assert_in_order(
            &text,
            &[
                "# Postmortem (draft): Vast.ai API server errors (5xx) in vastai\n",
                "blameless",
                "- **Date:** 2026-11-28\n",
                "- **Duration:** 42m (2026-11-28 03:02:00 UTC → 2026-11-28 03:44:00 UTC)\n",
                "- **Severity:** P2 — degraded; respond within 1h\n",
                "- **Status:** resolved\n",
                "- **Incident commander:** the primary on-call\n",
                "## Summary\n\nVast.ai API server errors (5xx) in vastai from 03:02 to 03:44 UTC \
                 (42m). The runbook (vastai-server-errors, branch our-integration) says: Vast.ai \
                 status page reports none/All Systems Operational, yet we get 5xx",
                "nightshift restarted deployment vastai/vastai-integration at 03:05:00; still \
                 failing after 10m. The on-call engineer was paged at 03:15 UTC through \
                 PagerDuty (restart did not help).\n",
                "## Detection\n\nAlert VastaiServerErrors started firing at 2026-11-28 03:02:00 \
                 UTC (Prometheus alerting rule, through Alertmanager). nightshift received it at \
                 2026-11-28 03:02:04 UTC. nightshift classified it as P2 with rule \
                 vastai-server-errors at 2026-11-28 03:02:05 UTC because",
                "## Timeline (UTC)\n",
                "## What was tried\n\n- 2026-11-28 03:05:00 UTC — restarted deployment \
                 vastai/vastai-integration at 03:05:00; still failing after 10m. **Did not help.**",
                "## What the probes showed\n\n- status: ok: none/All Systems Operational (first \
                 decision, 2026-11-28 03:02:05 UTC)",
                "## Pages sent\n\nPage state: `delivered` — paged: delivered through pagerduty at 2026-11-28T03:15:02Z\n\nPaging decision: paged — restart did not help\n",
                "- 2026-11-28 03:15:00 UTC — PagerDuty trigger: delivered at 2026-11-28 03:15:02 \
                 UTC (1 attempt); reason: restart did not help",
                "## Evidence collected\n",
                "- error-rate (prometheus, at open): ok in 1.2 s → `prometheus/error-rate.json`",
                "- ⚠️ vastai-api (http, at open): TIMED OUT in 10.0 s — timed out after 10s → no \
                 files",
                "## Root cause\n\nRoot cause: _to be written_",
                "## Impact\n\nImpact: _to be written_ (customer-visible? duration? affected users?)",
                "## Action items\n\nAction items: _to be written_\n\n| Action item | Owner |",
                "## Lessons learned\n\nLessons learned: _to be written_",
            ],
        );
        // The short timeline keeps the key events only.
        let short = section(&text, "## Timeline (UTC)");
        assert!(short.contains("**verified**: restart on"), "{short}");
        assert!(
            short.contains("**paged**: PagerDuty trigger delivered"),
            "{short}"
        );
        assert!(short.contains("**resolved**"), "{short}");
        assert!(!short.contains("**probed**"), "{short}");
        assert!(!short.contains("**collected**"), "{short}");
        assert!(!short.contains("change event"), "{short}");
    }

    #[test]
    fn an_ongoing_incident_says_so() {
        let mut facts = vastai_5xx();
        facts.incident.status = "firing".into();
        facts.incident.ended_at = None;
        facts.incident.duration = None;
        facts.transitions.pop();
        let text = postmortem(&facts);
        assert!(
            text.contains("- **Duration:** ongoing (firing since 2026-11-28 03:02:00 UTC)\n"),
            "{text}"
        );
        assert!(text.contains(
            "Vast.ai API server errors (5xx) in vastai, firing since 03:02 UTC and still open"
        ));
        // Without the store's words the duration is computed.
        let mut facts = vastai_5xx();
        facts.incident.duration = None;
        facts.incident.ended_at = Some("2026-11-28T04:47:30Z".into());
        assert!(postmortem(&facts).contains("- **Duration:** 1h45m ("));
    }

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
    fn hostile_alert_data_makes_no_link_image_or_html() {
        let mut facts = vastai_5xx();
        let incident = &mut facts.incident;
        incident.summary = "# evil heading\n![x](https://evil/track.png)".into();
        incident.alertname = "Evil_[Acknowledge](https://evil)".into();
        incident
            .labels
            .insert("service".into(), "[Acknowledge](https://evil)".into());
        incident.annotations.insert(
            "description".into(),
            "<img src=https://evil/t.png> <https://evil> `evil` *evil* | evil |".into(),
        );
        incident.note = "1. evil [ref]: https://evil".into();
        incident.generator_url = "https://prometheus/\"><img src=https://evil/t.png>".into();
        incident.paging_reason = "[Acknowledge](https://evil)".into();
        facts.decisions[0].probes = map(&[("status", "ok: [Acknowledge](https://evil)")]);
        facts.actions[0].target = "deployment/evil/[Acknowledge](https://evil)".into();
        facts.pages[1].error = Some("![x](https://evil/track.png)".into());
        facts.collectors[3].error = Some("[evil](https://evil)".into());

        for (name, text) in [
            ("timeline", timeline(&facts)),
            ("comms", comms(&facts)),
            ("postmortem", postmortem(&facts)),
        ] {
            assert_eq!(live_markup(&text), Vec::<&str>::new(), "{name}:\n{text}");
            assert!(
                !text
                    .lines()
                    .any(|line| line.starts_with("# evil") || line.starts_with("1. evil")),
                "{name}:\n{text}"
            );
        }
        let text = postmortem(&facts);
        for escaped in [
            "# Postmortem (draft): \\# evil heading !\\[x\\](https://evil/track.png)\n",
            "alert Evil\\_\\[Acknowledge\\](https://evil)",
            "The alert said: \"\\<img src=https://evil/t.png\\> \\<https://evil\\> \\`evil\\` \\*evil\\* \\| \
             evil \\|\"",
            "Alert expression: https://prometheus/\"\\>\\<img src=https://evil/t.png\\>",
            "The runbook's guess, to confirm or correct: \"1\\. evil \\[ref\\]: https://evil\"",
            "status: ok: \\[Acknowledge\\](https://evil)",
            // nightshift's own link stays a link.
            "- **Bundle:** \
             <https://nightshift.example/api/v1/incidents/c626d2275ab0f610-20261128T030200Z/bundle>",
        ] {
            assert!(text.contains(escaped), "{escaped:?} not in:\n{text}");
        }
        // The status update is fenced: copied as it is, nothing in it is markup.
        let text = comms(&facts);
        assert!(
            text.contains("\nImpact: degraded: <img src=https://evil/t.png> <https://evil>"),
            "{text}"
        );
        assert!(
            text.contains("elevated errors with \\[Acknowledge\\](https://evil)."),
            "{text}"
        );
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

    #[test]
    fn the_json_bodies_are_shaped_for_reading() {
        let facts = vastai_5xx();
        let decision = decision_json(&facts);
        assert_eq!(decision["rule"], "vastai-server-errors");
        assert_eq!(
            decision["matched_because"],
            "alertname=\"VastaiServerErrors\", namespace=\"vastai\" matched"
        );
        assert_eq!(decision["severity"]["level"], "P2");
        assert_eq!(decision["decisions"].as_array().unwrap().len(), 2);
        assert_eq!(
            decision["decisions"][0]["trace"],
            json!({"branches": [{"name": "provider-incident", "result": false}]})
        );
        assert_eq!(
            decision["probes"]["status"][1],
            json!({
                "at": "2026-11-28T03:17:05Z",
                "at_utc": "2026-11-28 03:17:05 UTC",
                "result": "ok: none/All Systems Operational",
            })
        );
        assert_eq!(
            decision["branches_over_time"][1]["branch"],
            "our-integration"
        );

        let actions = actions_json(&facts);
        assert_eq!(actions["count"], 1);
        assert_eq!(actions["actions"][0]["outcome"], "did_not_help");
        assert_eq!(
            actions["actions"][0]["sentence"],
            "restarted deployment vastai/vastai-integration at 03:05:00; still failing after 10m"
        );
        assert_eq!(actions["actions"][0]["at_utc"], "2026-11-28 03:05:00 UTC");

        let pages = pages_json(&facts);
        assert_eq!(pages["paging"]["state"], "paged");
        assert_eq!(pages["count"], 3);
        assert_eq!(pages["events"][1]["kind"], "trigger");
        assert_eq!(
            pages["events"][1]["delivered_at_utc"],
            "2026-11-28 03:15:02 UTC"
        );
        assert_eq!(pages["events"][1]["fallback"], false);
    }

    #[test]
    fn durations_read_like_a_person_wrote_them() {
        for (seconds, expected) in [
            (0, "0s"),
            (-5, "0s"),
            (30, "30s"),
            (42 * 60, "42m"),
            (42 * 60 + 10, "42m10s"),
            (3600 + 5, "1h"),
            (3600 + 5 * 60, "1h5m"),
            (2 * 86_400 + 3 * 3600, "2d3h"),
            (i64::MAX, "106751991167300d15h"),
        ] {
            assert_eq!(duration_text(seconds), expected, "{seconds}");
        }
    }

    /// Every field empty, odd or absurd: every document still renders, and says something.
    #[test]
    fn empty_and_odd_facts_never_panic() {
        let odd = "\u{1F600}`|*_\n\t```é";
        let long = "x".repeat(100_000);
        let mut variants = vec![BundleFacts::default()];
        let empties = BundleFacts {
            decisions: vec![DecisionFacts::default(), DecisionFacts::default()],
            actions: vec![ActionLine::default()],
            pages: vec![PageEventFacts::default()],
            transitions: vec![TransitionFacts::default()],
            collectors: vec![CollectorFacts::default()],
            incident: IncidentFacts {
                ended_at: Some(String::new()),
                duration: Some(String::new()),
                incident_commander: Some(String::new()),
                url: Some(String::new()),
                labels: map(&[("", ""), ("service", "")]),
                ..IncidentFacts::default()
            },
            bundle_url: Some(String::new()),
            ..BundleFacts::default()
        };
        variants.push(empties);
        let mut strange = vastai_5xx();
        strange.incident.summary = odd.into();
        strange.incident.severity = odd.into();
        strange.incident.starts_at = "not a time".into();
        strange.incident.ended_at = Some("9999-12-31T23:59:59Z".into());
        strange.incident.duration = None;
        strange.incident.note = long.clone();
        strange.incident.labels = map(&[("service", odd)]);
        strange.generated_at = odd.into();
        strange.actions[0].verify_window = "forever".into();
        strange.actions[0].at = Some("+999999-01-01T00:00:00Z".into());
        strange.actions.push(ActionLine {
            verify_window: "9999999999999999999s".into(),
            at: Some("9999-12-31T23:59:59Z".into()),
            verified: Some(odd.into()),
            target: long.clone(),
            detail: long.clone(),
            ..strange.actions[0].clone()
        });
        strange.pages[0].attempts = i64::MIN;
        strange.pages[0].state = odd.into();
        strange.pages[0].error = Some(odd.into());
        strange.decisions[0].probes = map(&[("", ""), (odd, odd)]);
        strange.collectors[0].files = vec![String::new(), odd.into()];
        strange.collectors[0].duration_ms = u64::MAX;
        strange.collectors[1].files = (0..100).map(|index| format!("f{index}")).collect();
        variants.push(strange);
        for facts in &variants {
            for (name, text) in [
                ("timeline", timeline(facts)),
                ("comms", comms(facts)),
                ("postmortem", postmortem(facts)),
            ] {
                assert!(!text.trim().is_empty(), "{name} empty");
                assert!(text.starts_with("# "), "{name}: {text}");
            }
            for value in [decision_json(facts), actions_json(facts), pages_json(facts)] {
                assert!(value.is_object());
            }
        }
        let text = postmortem(&BundleFacts::default());
        assert!(text.contains("- **Duration:** ongoing\n"), "{text}");
        assert!(text.contains("Root cause: _to be written_"));
        assert!(timeline(&BundleFacts::default()).contains("- nothing recorded yet"));
    }
}
