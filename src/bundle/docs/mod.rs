//! docs: the documents in a bundle, rendered from its facts, one file each: `timeline`
//! (`timeline.md`, every event in time order), `comms` (`comms.md`, the internal status update
//! and a status-page draft), `postmortem` (`postmortem.md`, a blameless first draft) and `json`
//! (the bodies of `decision.json`, `actions.json` and `pages.json`); `outcome` says what an
//! action came to, and this file holds the text helpers they share with the night report.
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

mod comms;
#[cfg(test)]
mod fixtures;
mod json;
mod outcome;
mod postmortem;
#[cfg(test)]
pub(crate) mod text;
mod timeline;

use chrono::{DateTime, Utc};

use crate::bundle::facts::{BundleFacts, PageEventFacts};
use crate::escape::{markdown, markdown_code, markdown_url};

pub use self::comms::comms;
pub use self::json::{actions_json, decision_json, pages_json};
pub(crate) use self::outcome::ActionOutcome;
pub use self::postmortem::postmortem;
pub use self::timeline::timeline;

const UNKNOWN_TIME: &str = "time unknown";
const TO_BE_WRITTEN: &str = "_to be written_";

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::docs::fixtures::*;
    use crate::bundle::docs::text::*;
    use crate::bundle::facts::{CollectorFacts, DecisionFacts, IncidentFacts, TransitionFacts};
    use crate::page::notify::view::ActionLine;

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
