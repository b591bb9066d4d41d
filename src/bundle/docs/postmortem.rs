//! postmortem: `postmortem.md`, a blameless first draft filled in with everything nightshift
//! knows, and the sections only a person can write clearly marked as such.

use super::outcome::ActionOutcome;
use super::timeline::{Event, collector_failed, collector_text, events};
use super::{
    TO_BE_WRITTEN, UNKNOWN_TIME, bundle_markdown, capitalise, channel_name, clock, clock_span,
    duration_text, format_utc, full_stop, known_alert_name, one_line, page_failed, page_summary,
    parse_time, probe_failed, severity_text, shown, title, utc,
};
use crate::bundle::facts::{BundleFacts, DecisionFacts, PageEventFacts};
use crate::escape::{markdown, markdown_code, markdown_url};
use crate::page::notify::render::action_sentence;
use crate::page::notify::view::ActionLine;
use crate::page::policy::PageState;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::docs::fixtures::*;
    use crate::bundle::docs::text::*;

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
}
