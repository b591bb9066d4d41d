//! What a page says, rendered from a `PageView`: the PagerDuty trigger (summary, fields,
//! details and links), the change event after an automatic action, the one-line sentence that
//! tells a human what an action did, and the chat status update (a minijinja template, the
//! default one following the runbook's internal status format). In a Slack message every value
//! a template prints is escaped for Slack (`escape::slack`); the template's own text is not.
//!
//! Everything here is pure and cannot panic on its input: summaries, sentences and link lists
//! are bounded so that even a group of thousands of incidents makes an event PagerDuty takes.

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use crate::config::NotifierKind;
use crate::escape;
use crate::page::notify::pagerduty::{SUMMARY_LIMIT, Trigger, truncate_chars};
use crate::page::notify::view::{ActionLine, IncidentView, PageView};

/// The runbook's internal status update. Rendered against `status_context`.
pub const DEFAULT_STATUS_TEMPLATE: &str = "\
{{ icon }} {{ severity }} INCIDENT: {{ title }}
Status: {{ status }}
Impact: {{ impact }}
Current action: {{ current_action }}
Next update: {{ next_update }}
Incident commander: {{ incident_commander }}
{%- if links %}
Links: {% for link in links %}{{ link.text }}: {{ link.href }}{% if not loop.last %} | {% endif %}{% endfor %}
{%- endif %}";

/// A sentence about one action is read on a phone: keep it to this many characters.
const SENTENCE_LIMIT: usize = 300;
/// A target longer than this (a templated exec target, say) is cut in sentences.
const TARGET_LIMIT: usize = 160;
/// `what_was_done` (and the status update's current action) stays readable at this size; the
/// full list is in the incidents.
const WHAT_WAS_DONE_LIMIT: usize = 4000;
/// A chat title, like a PagerDuty summary, is one line a human reads at once.
const TITLE_LIMIT: usize = SUMMARY_LIMIT;
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
/// Slack refuses incoming-webhook text longer than this.
const SLACK_TEXT_LIMIT: usize = 40_000;

const NOTHING_DONE: &str = "nothing was done automatically";

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

/// One human sentence about an action, taken or skipped, with whether it helped.
pub fn action_sentence(action: &ActionLine) -> String {
    sentence(action, true)
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

/// The context status templates are rendered against: the fields of the default template,
/// `links` (a list of `{text, href}`), and the whole view under `page`.
pub fn status_context(view: &PageView) -> Value {
    let resolved = is_resolved(view);
    let next_update = if resolved {
        "none (resolved)".to_owned()
    } else if view.respond_within.is_empty() {
        "at the next change".to_owned()
    } else {
        format!("in {}", view.respond_within)
    };
    let links: Vec<Value> = status_links(view)
        .into_iter()
        .map(|(href, text)| json!({"text": text, "href": href}))
        .collect();
    json!({
        "icon": icon(view),
        "severity": view.severity,
        "title": title(view, TITLE_LIMIT),
        "status": response_status(view),
        "impact": impact(view),
        "current_action": what_was_done(view),
        "next_update": next_update,
        "incident_commander": view
            .incident_commander
            .as_deref()
            .filter(|name| !name.trim().is_empty())
            .unwrap_or("on-call (not configured)"),
        "links": links,
        "page": serde_json::to_value(view).unwrap_or(Value::Null),
    })
}

/// The message for a notifier of `kind`: `template` (from config) or the default, rendered
/// against `status_context`. For Slack every value the template prints is escaped
/// (`escape::slack`), so alert data cannot mention `<!channel>` or disguise a link; the
/// template's own text is the operator's and stays as written, links and mentions included,
/// and `| safe` prints a value unescaped. A generic webhook's text is plain: its JSON is the
/// only encoding. A wrong template is an error with minijinja's text, never a panic.
pub fn render_chat(
    kind: NotifierKind,
    template: Option<&str>,
    view: &PageView,
) -> Result<String, String> {
    let source = template.unwrap_or(DEFAULT_STATUS_TEMPLATE);
    let context = minijinja::Value::from(minijinja::value::Serde(status_context(view)));
    chat_environment(kind)
        .render_str(source, context)
        .map_err(|error| describe(&error))
}

/// The status update as Slack text (`render_chat` for a Slack notifier). Escaped for Slack
/// whatever the notifier, so that no caller sends unescaped data to Slack by leaving the kind
/// out.
pub fn render_status(template: Option<&str>, view: &PageView) -> Result<String, String> {
    render_chat(NotifierKind::Slack, template, view)
}

/// Config validation: the template parses and renders against a sample page (an unknown
/// filter or function shows only when rendering).
pub fn check_template(source: &str) -> Result<(), String> {
    let environment = crate::rules::template::base_environment();
    environment
        .template_from_str(source)
        .map_err(|error| describe(&error))?;
    render_status(Some(source), &sample_view()).map(|_| ())
}

/// minijinja's auto-escape mode for Slack text.
const SLACK_ESCAPE: &str = "slack";

/// The template environment for a notifier of `kind`.
fn chat_environment(kind: NotifierKind) -> minijinja::Environment<'static> {
    let mut environment = crate::rules::template::base_environment();
    if kind == NotifierKind::Slack {
        // As auto-escaping, minijinja also keeps a captured block (`{% set %}`) from being
        // escaped twice and routes `| e` here. The formatter sees each value a template
        // prints, from whichever path of the context, but never the template's own text.
        environment
            .set_auto_escape_callback(|_| minijinja::AutoEscape::Custom(SLACK_ESCAPE.into()));
        environment.set_formatter(|out, state, value| match state.auto_escape() {
            minijinja::AutoEscape::Custom(name) if name == SLACK_ESCAPE && !value.is_safe() => out
                .write_str(&escape::slack(&value.to_string()))
                .map_err(minijinja::Error::from),
            _ => minijinja::escape_formatter(out, state, value),
        });
    }
    environment
}

/// A Slack incoming-webhook body.
pub fn slack_body(text: &str) -> Value {
    json!({ "text": truncate_chars(text, SLACK_TEXT_LIMIT) })
}

/// A generic webhook body: the rendered text and the whole page. `event` is `trigger` or
/// `resolve`.
pub fn webhook_body(view: &PageView, text: &str, event: &str) -> Value {
    json!({
        "version": "1",
        "event": event,
        "text": text,
        "page": view,
    })
}

/// minijinja's own text: the kind, the detail and where in the template.
fn describe(error: &minijinja::Error) -> String {
    error.to_string()
}

fn sample_view() -> PageView {
    PageView {
        severity: "P1".to_owned(),
        meaning: "complete outage".to_owned(),
        respond_within: "15m".to_owned(),
        pagerduty_severity: "critical".to_owned(),
        status: "triggered".to_owned(),
        incidents: vec![IncidentView {
            id: "sample".to_owned(),
            summary: "sample incident".to_owned(),
            actions: vec![ActionLine {
                kind: "rollout_restart".to_owned(),
                target: "deployment/ns/name".to_owned(),
                verdict: "run".to_owned(),
                state: "done".to_owned(),
                ..ActionLine::default()
            }],
            ..IncidentView::default()
        }],
        ..PageView::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Sentences

fn sentence(action: &ActionLine, with_verify: bool) -> String {
    let kind = short_kind(&action.kind);
    let (past, infinitive) = verbs(kind);
    let target = display_target(&action.target);
    let at = action
        .at
        .as_deref()
        .and_then(clock_time)
        .map(|time| format!(" at {time}"))
        .unwrap_or_default();
    let detail = one_line(&action.detail);
    match action.verdict.as_str() {
        "dry_run" | "shadow" => fit(&detail, |detail| {
            if detail.is_empty() {
                format!("would have {past} {target} (dry-run)")
            } else {
                format!("would have {past} {target} (dry-run: {detail})")
            }
        }),
        "cooldown" => match action.shares {
            Some(shares) => format!(
                "did not {infinitive} {target} again: in cooldown, sharing action #{shares}"
            ),
            None => format!("did not {infinitive} {target} again: in cooldown"),
        },
        "in_flight" => {
            format!("did not {infinitive} {target}: another incident's action was in flight")
        }
        "budget" => format!("did not {infinitive} {target}: hourly action budget spent"),
        "paused" => fit(&detail, |detail| {
            if detail.is_empty() {
                format!("did not {infinitive} {target}: automatic actions are paused")
            } else {
                format!("did not {infinitive} {target}: automatic actions are paused ({detail})")
            }
        }),
        "did_not_help" => format!(
            "did not repeat {} on {target}: it did not help before",
            if kind.is_empty() { "the action" } else { kind }
        ),
        _ => match action.state.as_str() {
            "done" => {
                let verify = if with_verify {
                    verify_part(action)
                } else {
                    String::new()
                };
                fit("", |_| format!("{past} {target}{at}{verify}"))
            }
            "failed" => fit(&detail, |detail| {
                format!("tried to {infinitive} {target}{at}: failed: {detail}")
            }),
            "uncertain" => fit(&detail, |detail| {
                format!(
                    "{infinitive} {target}: outcome UNKNOWN ({detail}); not retried, check by hand"
                )
            }),
            "not_applied" => fit(&detail, |detail| {
                format!("tried to {infinitive} {target}{at}: not applied ({detail})")
            }),
            "started" | "planned" => fit("", |_| {
                format!(
                    "{} {target} in progress",
                    if kind.is_empty() { "action" } else { kind }
                )
            }),
            state => fit(&detail, |detail| {
                if detail.is_empty() {
                    format!("{infinitive} {target}: {state}")
                } else {
                    format!("{infinitive} {target}: {state} ({detail})")
                }
            }),
        },
    }
}

fn verify_part(action: &ActionLine) -> String {
    match action.verified.as_deref() {
        Some("did_not_help") if action.verify_window.is_empty() => {
            "; still failing after its verify window".to_owned()
        }
        Some("did_not_help") => format!("; still failing after {}", action.verify_window),
        Some("helped") => "; it helped".to_owned(),
        None | Some("") => "; checking whether it helped".to_owned(),
        Some(other) => format!("; verified: {other}"),
    }
}

/// A sentence within `SENTENCE_LIMIT`: the detail is cut first, then, should the rest be too
/// long (a huge target), the sentence itself.
fn fit(detail: &str, build: impl Fn(&str) -> String) -> String {
    let full = build(detail);
    if full.chars().count() <= SENTENCE_LIMIT {
        return full;
    }
    let fixed = build("").chars().count();
    let room = SENTENCE_LIMIT.saturating_sub(fixed + 1);
    let shorter = if room == 0 || detail.is_empty() {
        build(detail)
    } else {
        build(&format!("{}…", truncate_chars(detail, room)))
    };
    cut(&shorter, SENTENCE_LIMIT)
}

/// `text` within `limit` characters, marked with an ellipsis when cut.
fn cut(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        text.to_owned()
    } else {
        format!("{}…", truncate_chars(text, limit.saturating_sub(1)))
    }
}

/// Details come from command output and HTTP answers: one line, single spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The kind as the rule file's action spec names it, without the `kubernetes.` family.
fn short_kind(kind: &str) -> &str {
    kind.strip_prefix("kubernetes.").unwrap_or(kind)
}

/// (past tense, infinitive) of what an action of this kind does to its target.
fn verbs(kind: &str) -> (String, String) {
    let (past, infinitive) = match kind {
        "rollout_restart" => ("restarted", "restart"),
        "scale" => ("scaled", "scale"),
        "set_env" => ("set env on", "set env on"),
        "exec" => ("ran", "run"),
        "http" => ("called", "call"),
        "" => ("ran an action on", "run an action on"),
        other => return (format!("ran {other} on"), format!("run {other} on")),
    };
    (past.to_owned(), infinitive.to_owned())
}

/// `deployment/ns/name` reads as `deployment ns/name`; other targets as they are.
fn display_target(target: &str) -> String {
    let mut parts = target.splitn(3, '/');
    let shown = match (parts.next(), parts.next(), parts.next()) {
        (Some(kind), Some(namespace), Some(name))
            if !kind.is_empty()
                && kind.bytes().all(|byte| byte.is_ascii_lowercase())
                && !namespace.is_empty()
                && !name.is_empty()
                && !name.contains('/') =>
        {
            format!("{kind} {namespace}/{name}")
        }
        _ => target.to_owned(),
    };
    cut(&shown, TARGET_LIMIT)
}

/// `HH:MM:SS` in UTC of an RFC 3339 time.
fn clock_time(at: &str) -> Option<String> {
    chrono::DateTime::parse_from_rfc3339(at).ok().map(|time| {
        time.with_timezone(&chrono::Utc)
            .format("%H:%M:%S")
            .to_string()
    })
}

// ---------------------------------------------------------------------------------------------
// The page as a whole

fn is_resolved(view: &PageView) -> bool {
    view.status == "resolved"
}

fn first_label<'a>(incident: &'a IncidentView, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .filter_map(|name| incident.labels.get(*name))
        .map(|value| value.trim())
        .find(|value| !value.is_empty())
}

fn incident_title(incident: &IncidentView) -> &str {
    [
        incident.summary.as_str(),
        incident.labels.get("alertname").map_or("", String::as_str),
        incident.rule.as_str(),
        incident.id.as_str(),
    ]
    .into_iter()
    .find(|text| !text.trim().is_empty())
    .unwrap_or("incident")
}

/// The first incident's summary and how many more there are, within `limit` characters; the
/// summary is cut rather than the count.
fn title(view: &PageView, limit: usize) -> String {
    let more = view.incidents.len().saturating_sub(1) + view.more_incidents;
    let Some(first) = view.incidents.first() else {
        return cut(&format!("{more} incidents"), limit);
    };
    let summary = one_line(incident_title(first));
    if more == 0 {
        return cut(&summary, limit);
    }
    let suffix = format!(" (+{more} more)");
    let room = limit.saturating_sub(suffix.chars().count());
    format!("{}{suffix}", cut(&summary, room))
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

/// Every incident's action sentences joined, identical ones once, within
/// `WHAT_WAS_DONE_LIMIT`.
fn what_was_done(view: &PageView) -> String {
    let mut seen = HashSet::new();
    let sentences: Vec<String> = view
        .incidents
        .iter()
        .flat_map(|incident| &incident.actions)
        .map(action_sentence)
        .filter(|sentence| seen.insert(sentence.clone()))
        .collect();
    if sentences.is_empty() {
        return NOTHING_DONE.to_owned();
    }
    let mut text = String::new();
    let mut length = 0;
    let mut shown = 0;
    for sentence in &sentences {
        let separator = if shown == 0 { "" } else { "; " };
        let added = separator.len() + sentence.chars().count();
        if length + added > WHAT_WAS_DONE_LIMIT {
            break;
        }
        text.push_str(separator);
        text.push_str(sentence);
        length += added;
        shown += 1;
    }
    let left = sentences.len() - shown;
    if left > 0 {
        text.push_str(&format!("; and {left} more (see the incidents)"));
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

fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// nightshift's own page for an incident, when nightshift knows its external URL.
fn nightshift_link(view: &PageView, incident: &IncidentView) -> Option<String> {
    view.external_url
        .as_deref()
        .map(str::trim)
        .filter(|base| crate::escape::is_web(base))
        .map(|base| join_url(base, &format!("api/v1/incidents/{}", incident.id)))
}

fn runbook_link(incident: &IncidentView) -> Option<&str> {
    incident
        .annotations
        .get("runbook_url")
        .map(|href| href.trim())
        .filter(|href| crate::escape::is_web(href))
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

/// The status update's links: nightshift's incident page and the runbook, when known.
fn status_links(view: &PageView) -> Vec<(String, String)> {
    let mut links = Vec::new();
    if let Some(first) = view.incidents.first() {
        if let Some(href) = nightshift_link(view, first) {
            links.push((href, "nightshift incident".to_owned()));
        }
        if let Some(href) = runbook_link(first) {
            links.push((href.to_owned(), "runbook".to_owned()));
        }
    }
    links
}

fn icon(view: &PageView) -> &'static str {
    if is_resolved(view) {
        return "✅";
    }
    match view.severity.as_str() {
        "P1" => "🔴",
        "P2" => "🟠",
        "P3" => "🟡",
        "P4" => "🔵",
        _ => "⚪",
    }
}

/// RESOLVED; MITIGATING while an action runs or waits for its verdict; INVESTIGATING when
/// nothing was done, an action failed or its outcome is unknown, or what was done did not help.
fn response_status(view: &PageView) -> &'static str {
    if is_resolved(view) {
        return "RESOLVED";
    }
    let mut mitigating = false;
    for action in view.incidents.iter().flat_map(|incident| &incident.actions) {
        if !matches!(action.verdict.as_str(), "run" | "hold") {
            continue;
        }
        match action.state.as_str() {
            "failed" | "uncertain" => return "INVESTIGATING",
            "started" | "planned" => mitigating = true,
            "done" if action.verified.as_deref() != Some("did_not_help") => mitigating = true,
            _ => {}
        }
    }
    if mitigating {
        "MITIGATING"
    } else {
        "INVESTIGATING"
    }
}

/// What the severity means, and what the alert says the impact is.
fn impact(view: &PageView) -> String {
    let described = view.incidents.first().and_then(|incident| {
        ["description", "impact"]
            .iter()
            .filter_map(|name| incident.annotations.get(*name))
            .map(|text| one_line(text))
            .find(|text| !text.is_empty())
    });
    match (view.meaning.trim(), described) {
        ("", None) => "unknown".to_owned(),
        ("", Some(described)) => described,
        (meaning, None) => meaning.to_owned(),
        (meaning, Some(described)) => format!("{meaning}: {described}"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::page::notify::pagerduty::{EVENT_LIMIT, trigger_event};
    use crate::page::notify::view::ProbeLine;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    fn restart(verified: Option<&str>) -> ActionLine {
        ActionLine {
            id: 7,
            name: "restart".into(),
            kind: "kubernetes.rollout_restart".into(),
            target: "deployment/vastai/vastai-integration".into(),
            verdict: "run".into(),
            state: "done".into(),
            at: Some("2026-11-28T03:12:05.412Z".into()),
            verified: verified.map(str::to_owned),
            verify_window: "10m".into(),
            detail: "restartedAt=2026-11-28T03:12:05Z".into(),
            shares: None,
        }
    }

    fn incident(id: &str) -> IncidentView {
        IncidentView {
            id: id.into(),
            rule: "vastai-server-errors".into(),
            severity: "P1".into(),
            branch: "our-side".into(),
            note: "Vast.ai status page reports none/All Systems Operational: the problem is likely on our side".into(),
            summary: "Vast.ai API answers 5xx to vastai/vastai-integration".into(),
            status: "firing".into(),
            starts_at: "2026-11-28T03:01:00Z".into(),
            labels: labels(&[
                ("alertname", "VastaiServerErrors"),
                ("namespace", "vastai"),
                ("service", "vastai-integration"),
                ("job", "vastai-integration-metrics"),
                ("instance", "10.0.3.7:8080"),
                ("severity", "critical"),
            ]),
            annotations: labels(&[
                ("description", "More than 5% of Vast.ai API calls answer 5xx"),
                ("runbook_url", "https://runbooks.example.com/vastai"),
            ]),
            generator_url: "http://prometheus:9090/graph?g0.expr=vastai_5xx".into(),
            page_reason: "restart did not help".into(),
            probes: vec![
                ProbeLine {
                    name: "vastai/status".into(),
                    ok: true,
                    result: "none/All Systems Operational".into(),
                },
                ProbeLine {
                    name: "vastai/key".into(),
                    ok: false,
                    result: "forbidden: secrets is forbidden".into(),
                },
            ],
            actions: vec![restart(Some("did_not_help"))],
            bundle: None,
            recent_errors: Vec::new(),
        }
    }

    fn vastai_view() -> PageView {
        PageView {
            dedup_key: "73042dc5".into(),
            group_key: "{}/{namespace=\"vastai\"}:{alertname=\"VastaiServerErrors\"}".into(),
            severity: "P1".into(),
            meaning: "complete outage".into(),
            respond_within: "15m".into(),
            pagerduty_severity: "critical".into(),
            status: "triggered".into(),
            incident_commander: None,
            external_url: Some("https://nightshift.example.com/".into()),
            alertmanager_url: Some("http://alertmanager:9093/".into()),
            incidents: vec![incident("01JDXK5")],
            more_incidents: 0,
        }
    }

    fn check_sentence(action: ActionLine, expected: &str) {
        assert_eq!(action_sentence(&action), expected, "{action:?}");
    }

    fn skipped(verdict: &str, detail: &str, shares: Option<i64>) -> ActionLine {
        ActionLine {
            verdict: verdict.into(),
            state: "skipped".into(),
            detail: detail.into(),
            shares,
            at: None,
            ..restart(None)
        }
    }

    #[test]
    fn done_actions_say_what_was_done_when_and_whether_it_helped() {
        check_sentence(
            restart(Some("did_not_help")),
            "restarted deployment vastai/vastai-integration at 03:12:05; still failing after 10m",
        );
        check_sentence(
            restart(Some("helped")),
            "restarted deployment vastai/vastai-integration at 03:12:05; it helped",
        );
        check_sentence(
            restart(None),
            "restarted deployment vastai/vastai-integration at 03:12:05; checking whether it helped",
        );
        // An offset time is shown in UTC.
        check_sentence(
            ActionLine {
                kind: "set_env".into(),
                verdict: "hold".into(),
                at: Some("2026-11-28T05:12:05+02:00".into()),
                ..restart(Some("helped"))
            },
            "set env on deployment vastai/vastai-integration at 03:12:05; it helped",
        );
        check_sentence(
            ActionLine {
                kind: "exec".into(),
                target: "collect-logs".into(),
                at: None,
                ..restart(Some("helped"))
            },
            "ran collect-logs; it helped",
        );
    }

    #[test]
    fn failed_uncertain_and_running_actions() {
        check_sentence(
            ActionLine {
                state: "failed".into(),
                detail: "403\nForbidden".into(),
                ..restart(None)
            },
            "tried to restart deployment vastai/vastai-integration at 03:12:05: failed: 403 Forbidden",
        );
        check_sentence(
            ActionLine {
                state: "uncertain".into(),
                detail: "timeout after 10s".into(),
                ..restart(None)
            },
            "restart deployment vastai/vastai-integration: outcome UNKNOWN (timeout after 10s); not retried, check by hand",
        );
        check_sentence(
            ActionLine {
                state: "started".into(),
                ..restart(None)
            },
            "rollout_restart deployment vastai/vastai-integration in progress",
        );
        check_sentence(
            ActionLine {
                kind: "http".into(),
                target: "https://hooks.example.com".into(),
                state: "planned".into(),
                ..restart(None)
            },
            "http https://hooks.example.com in progress",
        );
    }

    #[test]
    fn skipped_and_dry_run_actions_say_why_nothing_changed() {
        check_sentence(
            skipped("cooldown", "", Some(12)),
            "did not restart deployment vastai/vastai-integration again: in cooldown, sharing action #12",
        );
        check_sentence(
            skipped("in_flight", "", Some(12)),
            "did not restart deployment vastai/vastai-integration: another incident's action was in flight",
        );
        check_sentence(
            skipped("budget", "10 actions in the last hour", None),
            "did not restart deployment vastai/vastai-integration: hourly action budget spent",
        );
        check_sentence(
            skipped("paused", "paused by alice until 04:00", None),
            "did not restart deployment vastai/vastai-integration: automatic actions are paused (paused by alice until 04:00)",
        );
        check_sentence(
            skipped("did_not_help", "", None),
            "did not repeat rollout_restart on deployment vastai/vastai-integration: it did not help before",
        );
        check_sentence(
            skipped("dry_run", "dry-run mode", None),
            "would have restarted deployment vastai/vastai-integration (dry-run: dry-run mode)",
        );
        check_sentence(
            ActionLine {
                kind: "scale".into(),
                ..skipped("shadow", "the rule runs in shadow mode", None)
            },
            "would have scaled deployment vastai/vastai-integration (dry-run: the rule runs in shadow mode)",
        );
    }

    #[test]
    fn sentences_stay_short_and_cut_on_a_character_boundary() {
        let long = ActionLine {
            state: "failed".into(),
            detail: "é".repeat(5000),
            ..restart(None)
        };
        let sentence = action_sentence(&long);
        assert_eq!(sentence.chars().count(), SENTENCE_LIMIT);
        assert!(sentence.starts_with(
            "tried to restart deployment vastai/vastai-integration at 03:12:05: failed: éé"
        ));
        assert!(sentence.ends_with("é…"));
        let huge_target = ActionLine {
            kind: "exec".into(),
            target: "x".repeat(10_000),
            ..skipped("paused", &"y".repeat(10_000), None)
        };
        assert!(action_sentence(&huge_target).chars().count() <= SENTENCE_LIMIT);
    }

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
    fn the_default_status_update_follows_the_runbook() {
        let view = vastai_view();
        assert_eq!(
            render_status(None, &view).unwrap(),
            "🔴 P1 INCIDENT: Vast.ai API answers 5xx to vastai/vastai-integration\n\
             Status: INVESTIGATING\n\
             Impact: complete outage: More than 5% of Vast.ai API calls answer 5xx\n\
             Current action: restarted deployment vastai/vastai-integration at 03:12:05; still failing after 10m\n\
             Next update: in 15m\n\
             Incident commander: on-call (not configured)\n\
             Links: nightshift incident: https://nightshift.example.com/api/v1/incidents/01JDXK5 | runbook: https://runbooks.example.com/vastai"
        );
    }

    fn status_lines(view: &PageView) -> Vec<String> {
        render_status(None, view)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_status_follows_what_the_actions_did() {
        let mut view = vastai_view();
        view.incidents[0].actions = vec![restart(None)];
        view.incident_commander = Some("Dana (platform)".into());
        view.severity = "P2".into();
        let lines = status_lines(&view);
        assert!(lines[0].starts_with("🟠 P2 INCIDENT: "), "{lines:?}");
        assert_eq!(lines[1], "Status: MITIGATING");
        assert_eq!(lines[5], "Incident commander: Dana (platform)");

        // A failed action is a human's turn even while another is being verified.
        view.incidents[0].actions.push(ActionLine {
            state: "uncertain".into(),
            ..restart(None)
        });
        assert_eq!(status_lines(&view)[1], "Status: INVESTIGATING");

        // Only skips: nothing is being done.
        view.incidents[0].actions = vec![skipped("cooldown", "", Some(3))];
        assert_eq!(status_lines(&view)[1], "Status: INVESTIGATING");

        view.status = "resolved".into();
        let lines = status_lines(&view);
        assert!(lines[0].starts_with("✅ P2 INCIDENT: "), "{lines:?}");
        assert_eq!(lines[1], "Status: RESOLVED");
        assert_eq!(lines[4], "Next update: none (resolved)");

        // No links known: no links line.
        view.external_url = None;
        view.incidents[0].annotations.clear();
        let lines = status_lines(&view);
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[2], "Impact: complete outage");
    }

    #[test]
    fn custom_templates_reach_the_page_and_wrong_ones_are_errors() {
        let view = vastai_view();
        assert_eq!(
            render_status(
                Some(
                    "{{ page.incidents[0].labels.namespace }}/{{ status }}/{{ page.nothing.here }}"
                ),
                &view
            )
            .unwrap(),
            "vastai/INVESTIGATING/"
        );
        let broken = render_status(Some("{{ title "), &view).unwrap_err();
        assert!(broken.contains("syntax"), "{broken}");
        assert!(check_template("{{ title ").unwrap_err().contains("syntax"));
        assert!(
            check_template("{{ title | nosuchfilter }}")
                .unwrap_err()
                .contains("filter")
        );
        assert_eq!(check_template(DEFAULT_STATUS_TEMPLATE), Ok(()));
        // A runtime error (a loop over a number) is an error, not a panic.
        assert!(render_status(Some("{% for x in 3 %}{% endfor %}"), &view).is_err());
    }

    /// The Vast.ai page with alert data as a hostile sender writes it.
    fn hostile_view() -> PageView {
        let mut view = vastai_view();
        let incident = &mut view.incidents[0];
        incident.summary = "db down <!channel>".into();
        incident
            .labels
            .insert("instance".into(), "<!channel>".into());
        incident.annotations.insert(
            "description".into(),
            "<https://evil|Acknowledge> & more".into(),
        );
        incident
            .annotations
            .insert("runbook_url".into(), "https://evil/?a=1&b=<@U1>".into());
        view
    }

    #[test]
    fn slack_text_escapes_alert_data_but_not_the_template() {
        let view = hostile_view();
        let text = render_chat(NotifierKind::Slack, None, &view).unwrap();
        for expected in [
            "🔴 P1 INCIDENT: db down &lt;!channel&gt;\n",
            "Impact: complete outage: &lt;https://evil|Acknowledge&gt; &amp; more\n",
            "runbook: https://evil/?a=1&amp;b=&lt;@U1&gt;",
        ] {
            assert!(text.contains(expected), "{expected:?} not in:\n{text}");
        }
        assert!(!text.contains(['<', '>']), "{text}");
        assert_eq!(render_status(None, &view).unwrap(), text);

        // A user template: its own mention and link stay, every value is escaped, whatever
        // path it was read from, unless the operator marks it safe.
        for (template, expected) in [
            (
                "<!here> {{ page.incidents[0].labels.instance }} \
                 <{{ links[0].href }}|{{ links[0].text }}>",
                "<!here> &lt;!channel&gt; \
                 <https://nightshift.example.com/api/v1/incidents/01JDXK5|nightshift incident>",
            ),
            (
                "{% for name, value in page.incidents[0].annotations|items %}{{ name }}={{ value }};{% endfor %}",
                "description=&lt;https://evil|Acknowledge&gt; &amp; more;\
                 runbook_url=https://evil/?a=1&amp;b=&lt;@U1&gt;;",
            ),
            (
                "{{ page.incidents[0].labels.instance ~ '>' }}",
                "&lt;!channel&gt;&gt;",
            ),
            (
                "{{ page.incidents[0].labels.instance | safe }}",
                "<!channel>",
            ),
            (
                "{{ page.incidents[0].labels.instance | e }}",
                "&lt;!channel&gt;",
            ),
            (
                "{% set said %}<{{ title }}>{% endset %}{{ said }}",
                "<db down &lt;!channel&gt;>",
            ),
            ("{{ nothing }}|{{ none }}|{{ 3 }}", "|None|3"),
        ] {
            assert_eq!(
                render_chat(NotifierKind::Slack, Some(template), &view).as_deref(),
                Ok(expected),
                "{template}"
            );
        }
        let json = render_chat(
            NotifierKind::Slack,
            Some("{{ page.incidents[0].labels | tojson }}"),
            &view,
        )
        .unwrap();
        assert!(!json.contains(['<', '>']), "{json}");

        // A generic webhook's text is plain: JSON is its only encoding.
        let plain = render_chat(NotifierKind::Webhook, None, &view).unwrap();
        assert!(plain.contains("INCIDENT: db down <!channel>\n"), "{plain}");
        assert!(
            plain.contains("<https://evil|Acknowledge> & more"),
            "{plain}"
        );
    }

    #[test]
    fn chat_bodies() {
        let text = "é".repeat(SLACK_TEXT_LIMIT + 10);
        let body = slack_body(&text);
        assert_eq!(
            body["text"].as_str().map(|text| text.chars().count()),
            Some(SLACK_TEXT_LIMIT)
        );
        assert_eq!(slack_body("hi"), json!({"text": "hi"}));
        let view = vastai_view();
        let body = webhook_body(&view, "hello", "resolve");
        assert_eq!(body["version"], "1");
        assert_eq!(body["event"], "resolve");
        assert_eq!(body["text"], "hello");
        assert_eq!(body["page"]["incidents"][0]["id"], "01JDXK5");
        assert_eq!(body["page"]["dedup_key"], "73042dc5");
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
