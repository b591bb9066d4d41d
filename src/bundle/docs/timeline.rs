//! timeline: `timeline.md`, every recorded event of the incident with its UTC time, oldest
//! first; the postmortem's short timeline is the key events of the same list.

use chrono::{DateTime, Utc};

use super::outcome::{ActionOutcome, action_name, plain_sentence};
use super::{
    UNKNOWN_TIME, alert_name, attempts_text, channel_name, fallback_reason, format_utc,
    heading_line, joined, milliseconds_text, one_line, page_kind_name, parse_time, probe_failed,
    shown, title, utc,
};
use crate::bundle::facts::{BundleFacts, CollectorFacts, DecisionFacts, PageEventFacts};
use crate::escape::{markdown, markdown_code};
use crate::page::notify::view::ActionLine;

/// Files listed per collector before the rest are counted; the manifest has them all.
const FILES_SHOWN: usize = 12;

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
pub(super) struct Event {
    at: Option<DateTime<Utc>>,
    /// Orders events recorded at the same instant: an alert is opened before it is decided,
    /// acted on, paged and resolved.
    order: u8,
    /// Markdown, escaped.
    what: String,
    /// Markdown, escaped.
    text: String,
    /// Kept in the postmortem's short timeline.
    pub(super) key: bool,
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

    pub(super) fn line(&self) -> String {
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
pub(super) fn events(facts: &BundleFacts) -> Vec<Event> {
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
pub(super) fn collector_text(collector: &CollectorFacts) -> String {
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

pub(super) fn collector_failed(collector: &CollectorFacts) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::docs::fixtures::*;
    use crate::bundle::docs::text::*;

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
}
