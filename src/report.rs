//! The night in one report: every incident between two times, grouped by severity (P1 first)
//! with its response target, what nightshift did about each and whether it helped, who was
//! paged and when, what waits for the next business day (P4), and what still needs a human.
//!
//! Pure: the facts are read from the store by the caller (`nightshift report`,
//! `GET /api/v1/report`) and rendered here as Markdown or JSON. Nothing here can panic on its
//! input. In the Markdown every value from an alert (and every sentence made from one) is
//! escaped where it is put in (`escape::markdown`), so it never becomes a link, an image or
//! HTML; the markup around it is nightshift's own.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use crate::bundle::docs::{
    ActionOutcome, channel_name, markdown_location, one_line, page_failed, page_kind_name,
    page_summary, parse_time, severity_text, shown, utc,
};
use crate::bundle::facts::{self, PageEventFacts};
use crate::escape::{self, markdown_code};
use crate::page::notify::render::action_sentence;
use crate::page::notify::view::ActionLine;
use crate::page::policy::PageState;

/// Everything the report says, for one window of time.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ReportFacts {
    /// The window, RFC 3339 UTC.
    pub since: String,
    pub until: String,
    pub incidents: Vec<ReportIncident>,
}

/// One incident of the window.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ReportIncident {
    pub id: String,
    /// The rule's rendered summary.
    pub summary: String,
    pub alertname: String,
    /// `P1`..`P4`.
    pub severity: String,
    /// What the severity means and its response target ("complete outage", "15m").
    pub meaning: String,
    pub respond_within: String,
    /// `firing`, `resolved`, `gone`, `silenced`.
    pub status: String,
    /// RFC 3339 UTC.
    pub started_at: String,
    pub ended_at: Option<String>,
    /// Humanised ("42m"), once ended.
    pub duration: Option<String>,
    pub rule: String,
    pub branch: String,
    /// Every action taken or skipped, oldest first.
    pub actions: Vec<ActionLine>,
    /// `paged`, `not_paged`, `waiting`, `resolved`, and why.
    pub paging_state: String,
    pub paging_reason: String,
    /// Every page event about it, oldest first.
    pub pages: Vec<PageEventFacts>,
    /// Its debug bundle: a path or a URL.
    pub bundle: Option<String>,
}

/// The report as Markdown: a headline, what needs a human, the incidents by severity, and the
/// P4s waiting for the next business day.
pub fn markdown(report: &ReportFacts) -> String {
    let window = format!("{} and {}", utc(&report.since), utc(&report.until));
    let mut text = format!(
        "# nightshift report: {} → {}",
        utc(&report.since),
        utc(&report.until)
    );
    // A P1 nobody could be woken about is the loudest thing a report can say: its first line.
    if let Some(warning) = unpaged_p1_warning(report) {
        text.push_str(&format!(" · ⚠️ {}", escape::markdown(&warning)));
    }
    text.push_str("\n\n");
    if report.incidents.is_empty() {
        text.push_str(&format!("Nothing happened between {window}.\n"));
        return text;
    }
    let counts = Counts::of(report);
    text.push_str(&counts.headline());
    text.push_str("\n\n");

    let needs = needs_a_human(report);
    text.push_str(&format!("## Needs a human ({})\n\n", needs.len()));
    if needs.is_empty() {
        text.push_str(
            "Nothing: every action's outcome is known, every page was delivered, and no urgent \
             incident is still firing.\n",
        );
    }
    for need in &needs {
        text.push_str(&format!("- ⚠️ {}\n", need.text));
    }

    for group in groups(report) {
        text.push('\n');
        if group.severity == "P4" {
            text.push_str(&format!(
                "## Waiting for the next business day ({})\n\n",
                group.incidents.len()
            ));
            text.push_str(&format!(
                "{}: recorded, not paged.\n",
                escape::markdown(&group.heading())
            ));
        } else {
            text.push_str(&format!(
                "## {} ({})\n",
                escape::markdown(&group.heading()),
                group.incidents.len()
            ));
        }
        for incident in &group.incidents {
            text.push('\n');
            text.push_str(&incident_block(incident));
        }
    }
    text
}

/// The report as JSON: the window, the counts, what needs a human, and every incident (by
/// severity, then oldest first) with its action sentences and whether it paged.
pub fn json(report: &ReportFacts) -> Value {
    let counts = Counts::of(report);
    let needs: Vec<Value> = needs_a_human(report)
        .into_iter()
        .map(|need| {
            json!({
                "incident": need.incident,
                "what": need.what,
                "text": need.text,
            })
        })
        .collect();
    let incidents: Vec<Value> = groups(report)
        .into_iter()
        .flat_map(|group| group.incidents)
        .map(|incident| {
            let actions: Vec<Value> = incident
                .actions
                .iter()
                .map(|action| {
                    let mut value = serde_json::to_value(action).unwrap_or(Value::Null);
                    if let Value::Object(fields) = &mut value {
                        fields.insert("sentence".into(), Value::String(action_sentence(action)));
                        fields.insert(
                            "outcome".into(),
                            Value::String(ActionOutcome::of(action).label().to_owned()),
                        );
                    }
                    value
                })
                .collect();
            let mut value = serde_json::to_value(incident).unwrap_or(Value::Null);
            if let Value::Object(fields) = &mut value {
                fields.insert("actions".into(), Value::Array(actions));
                let state = page_state(incident);
                fields.insert("paged".into(), Value::Bool(state.delivered()));
                fields.insert("page_state".into(), Value::from(state.as_str()));
                fields.insert("page".into(), Value::from(state.sentence()));
                fields.insert(
                    "handled_automatically".into(),
                    Value::Bool(handled_automatically(incident)),
                );
            }
            value
        })
        .collect();
    json!({
        "warning": unpaged_p1_warning(report),
        "since": report.since,
        "until": report.until,
        "counts": {
            "incidents": counts.incidents,
            "by_severity": counts.by_severity,
            "paged": counts.paged,
            "with_a_failed_page": counts.pages_failed,
            "could_not_be_paged": counts.no_destination,
            "handled_automatically": counts.handled,
            "needs_a_human": needs.len(),
        },
        "needs_a_human": needs,
        "incidents": incidents,
    })
}

// ---------------------------------------------------------------------------------------------
// Counting and grouping

struct Counts {
    incidents: usize,
    /// Severity → incidents.
    by_severity: BTreeMap<String, usize>,
    paged: usize,
    /// Incidents with a page event that reached nobody.
    pages_failed: usize,
    /// Incidents nothing is configured to page about.
    no_destination: usize,
    handled: usize,
}

impl Counts {
    fn of(report: &ReportFacts) -> Self {
        let mut by_severity = BTreeMap::new();
        for incident in &report.incidents {
            *by_severity
                .entry(shown(&incident.severity, "no severity"))
                .or_insert(0) += 1;
        }
        Counts {
            incidents: report.incidents.len(),
            by_severity,
            paged: report
                .incidents
                .iter()
                .filter(|incident| was_paged(incident))
                .count(),
            pages_failed: report
                .incidents
                .iter()
                .filter(|incident| incident.pages.iter().any(page_failed))
                .count(),
            no_destination: report
                .incidents
                .iter()
                .filter(|incident| matches!(page_state(incident), PageState::NoDestination { .. }))
                .count(),
            handled: report
                .incidents
                .iter()
                .filter(|incident| handled_automatically(incident))
                .count(),
        }
    }

    /// "**5 incidents**: 1 P1, 2 P2, 1 P3, 1 P4 · 2 paged · 1 handled automatically".
    fn headline(&self) -> String {
        let mut severities: Vec<(&String, &usize)> = self.by_severity.iter().collect();
        severities.sort_by_key(|(severity, _)| severity_rank(severity));
        let severities = severities
            .iter()
            .map(|(severity, count)| format!("{count} {}", escape::markdown(severity)))
            .collect::<Vec<_>>()
            .join(", ");
        let plural = if self.incidents == 1 { "" } else { "s" };
        let mut text = format!(
            "**{} incident{plural}**: {severities} · {} paged · {} handled automatically",
            self.incidents, self.paged, self.handled
        );
        if self.pages_failed > 0 {
            text.push_str(&format!(
                " · ⚠️ {} with a page that did not get through",
                self.pages_failed
            ));
        }
        text
    }
}

/// P1..P4 in order, anything else after them.
fn severity_rank(severity: &str) -> (u8, String) {
    match severity {
        "P1" => (1, String::new()),
        "P2" => (2, String::new()),
        "P3" => (3, String::new()),
        // Unknown severities are shown before P4: they may well be urgent.
        "P4" => (5, String::new()),
        other => (4, other.to_owned()),
    }
}

struct Group<'a> {
    severity: String,
    incidents: Vec<&'a ReportIncident>,
}

impl Group<'_> {
    /// "P2 — degraded; respond within 1h", from the first incident that knows it.
    fn heading(&self) -> String {
        let meaning = self
            .incidents
            .iter()
            .map(|incident| incident.meaning.as_str())
            .find(|meaning| !meaning.trim().is_empty())
            .unwrap_or("");
        let respond_within = self
            .incidents
            .iter()
            .map(|incident| incident.respond_within.as_str())
            .find(|within| !within.trim().is_empty())
            .unwrap_or("");
        severity_text(&self.severity, meaning, respond_within)
    }
}

/// The incidents by severity (P1 first, P4 last), oldest first within each.
fn groups(report: &ReportFacts) -> Vec<Group<'_>> {
    let mut by_severity: BTreeMap<(u8, String), Vec<&ReportIncident>> = BTreeMap::new();
    for incident in &report.incidents {
        by_severity
            .entry(severity_rank(&incident.severity))
            .or_default()
            .push(incident);
    }
    by_severity
        .into_values()
        .map(|mut incidents| {
            // Stable: incidents whose start does not parse keep their order, after the rest.
            incidents.sort_by_key(|incident| {
                let start = parse_time(&incident.started_at);
                (start.is_none(), start)
            });
            let severity = incidents
                .first()
                .map(|incident| one_line(&incident.severity))
                .unwrap_or_default();
            Group {
                severity,
                incidents,
            }
        })
        .collect()
}

/// Whether anybody was woken about it: the one page state the API and the postmortem show.
fn page_state(incident: &ReportIncident) -> PageState {
    facts::page_state(
        &incident.paging_state,
        &incident.paging_reason,
        &incident.pages,
    )
}

/// Somebody was paged about it: a trigger reached them.
fn was_paged(incident: &ReportIncident) -> bool {
    page_state(incident).delivered()
}

/// "1 P1 incident could not be paged: no PagerDuty routing key and no fallback notifier".
fn unpaged_p1_warning(report: &ReportFacts) -> Option<String> {
    let whys: Vec<String> = report
        .incidents
        .iter()
        .filter(|incident| incident.severity == "P1")
        .filter_map(|incident| match page_state(incident) {
            PageState::NoDestination { why } => Some(why),
            _ => None,
        })
        .collect();
    let first = whys.first()?;
    let plural = if whys.len() == 1 { "" } else { "s" };
    Some(format!(
        "{} P1 incident{plural} could not be paged: {first}",
        whys.len()
    ))
}

/// nightshift meant to wake somebody, whether or not the page got through.
fn paging_wanted(incident: &ReportIncident) -> bool {
    incident.paging_state == "paged" || incident.pages.iter().any(|page| page.kind == "trigger")
}

/// It ended, nightshift's action ran, and nobody had to be woken.
fn handled_automatically(incident: &ReportIncident) -> bool {
    matches!(incident.status.as_str(), "resolved" | "gone")
        && !paging_wanted(incident)
        && incident
            .actions
            .iter()
            .any(|action| ActionOutcome::of(action).ran())
}

fn still_firing(incident: &ReportIncident) -> bool {
    matches!(incident.status.as_str(), "firing" | "silenced")
}

// ---------------------------------------------------------------------------------------------
// Needs a human

struct Need {
    incident: String,
    /// `uncertain_action`, `failed_action`, `page_not_delivered`, `still_firing`.
    what: &'static str,
    /// Markdown, its values escaped.
    text: String,
}

/// Actions whose outcome is unknown, pages that did not reach anyone, and incidents (other
/// than P4s, which wait for the next business day) still firing.
fn needs_a_human(report: &ReportFacts) -> Vec<Need> {
    let mut needs = Vec::new();
    for group in groups(report) {
        for incident in group.incidents {
            let name = incident_name(incident);
            for action in &incident.actions {
                let outcome = ActionOutcome::of(action);
                let what = match outcome {
                    ActionOutcome::Uncertain => "uncertain_action",
                    // A failed action matters while the incident still fires.
                    ActionOutcome::Failed if still_firing(incident) => "failed_action",
                    _ => continue,
                };
                let label = if outcome == ActionOutcome::Uncertain {
                    "**outcome unknown**"
                } else {
                    "**action failed**"
                };
                needs.push(Need {
                    incident: incident.id.clone(),
                    what,
                    text: format!(
                        "{label} — {name}: {}",
                        escape::markdown(&action_sentence(action))
                    ),
                });
            }
            for page in incident.pages.iter().filter(|page| page_failed(page)) {
                needs.push(Need {
                    incident: incident.id.clone(),
                    what: "page_not_delivered",
                    text: format!(
                        "**page not delivered** — {name}: {}",
                        escape::markdown(&page_summary(page))
                    ),
                });
            }
            if still_firing(incident) && incident.severity != "P4" {
                let mut text = format!(
                    "**still {}** — {name}, since {}",
                    escape::markdown(&shown(&incident.status, "firing")),
                    utc(&incident.started_at)
                );
                if was_paged(incident) {
                    text.push_str("; paged");
                } else if paging_wanted(incident) {
                    text.push_str("; the page did NOT reach anyone");
                } else {
                    text.push_str(&format!(
                        "; not paged ({})",
                        escape::markdown(&shown(&incident.paging_reason, "no reason recorded"))
                    ));
                }
                needs.push(Need {
                    incident: incident.id.clone(),
                    what: "still_firing",
                    text,
                });
            }
        }
    }
    needs
}

// ---------------------------------------------------------------------------------------------
// One incident

/// "Vast.ai API server errors (5xx) in vastai (`id`)", as Markdown.
fn incident_name(incident: &ReportIncident) -> String {
    let title = [
        incident.summary.as_str(),
        incident.alertname.as_str(),
        incident.rule.as_str(),
    ]
    .into_iter()
    .map(one_line)
    .find(|text| !text.is_empty())
    .unwrap_or_else(|| "incident".to_owned());
    if incident.id.trim().is_empty() {
        escape::markdown(&title)
    } else {
        format!(
            "{} ({})",
            escape::markdown(&title),
            markdown_code(&incident.id)
        )
    }
}

fn incident_block(incident: &ReportIncident) -> String {
    let mut text = format!("### {}\n\n", incident_name(incident));
    let mut about = Vec::new();
    if !incident.alertname.trim().is_empty() {
        about.push(format!("alert {}", one_line(&incident.alertname)));
    }
    if !incident.rule.trim().is_empty() {
        about.push(format!("rule {}", one_line(&incident.rule)));
    }
    if !incident.branch.trim().is_empty() {
        about.push(format!("branch {}", one_line(&incident.branch)));
    }
    if !about.is_empty() {
        text.push_str(&format!("- {}\n", escape::markdown(&about.join(" · "))));
    }
    text.push_str(&format!("- {}\n", when_line(incident)));

    let mut did_something = false;
    for action in &incident.actions {
        did_something = true;
        text.push_str(&format!("- {}\n", action_line(action)));
    }
    if !did_something {
        text.push_str("- Nothing was done automatically.\n");
    }
    text.push_str(&paging_lines(incident));
    if let Some(bundle) = incident
        .bundle
        .as_deref()
        .map(one_line)
        .filter(|bundle| !bundle.is_empty())
    {
        text.push_str(&format!("- Bundle: {}\n", markdown_location(&bundle)));
    }
    text
}

/// "Resolved · 2026-11-28 03:02:00 UTC → 2026-11-28 03:44:00 UTC (42m)", as Markdown.
fn when_line(incident: &ReportIncident) -> String {
    let status = match incident.status.as_str() {
        "firing" => "**Still firing**".to_owned(),
        "silenced" => "**Silenced, still open**".to_owned(),
        "resolved" => "Resolved".to_owned(),
        "gone" => "Gone (vanished without a resolve)".to_owned(),
        other => escape::markdown(&shown(other, "Status unknown")),
    };
    let ended = incident
        .ended_at
        .as_deref()
        .filter(|ended| !ended.trim().is_empty());
    let mut text = match ended {
        Some(ended) => format!("{status} · {} → {}", utc(&incident.started_at), utc(ended)),
        None => format!("{status} · since {}", utc(&incident.started_at)),
    };
    let duration = incident
        .duration
        .as_deref()
        .map(one_line)
        .filter(|duration| !duration.is_empty())
        .or_else(|| {
            let start = parse_time(&incident.started_at)?;
            let end = parse_time(ended?)?;
            Some(crate::bundle::docs::duration_text(
                end.signed_duration_since(start).num_seconds(),
            ))
        });
    if let Some(duration) = duration {
        text.push_str(&format!(" ({})", escape::markdown(&duration)));
    }
    text
}

/// One action as a line of the report, the doubtful ones flagged.
fn action_line(action: &ActionLine) -> String {
    let sentence = escape::markdown(&action_sentence(action));
    match ActionOutcome::of(action) {
        ActionOutcome::Helped => format!("Done automatically, **helped**: {sentence}"),
        ActionOutcome::DidNotHelp => format!("Done automatically, **did not help**: {sentence}"),
        ActionOutcome::Unjudged => format!("Done automatically: {sentence}"),
        ActionOutcome::Failed => format!("⚠️ **FAILED**: {sentence}"),
        ActionOutcome::Uncertain => format!("⚠️ **UNCERTAIN**: {sentence}"),
        ActionOutcome::NotApplied => format!("Not applied: {sentence}"),
        ActionOutcome::InProgress => format!("In progress: {sentence}"),
        ActionOutcome::Skipped => format!("Skipped: {sentence}"),
        ActionOutcome::DryRun => format!("Dry-run only: {sentence}"),
        ActionOutcome::Other => format!("Action: {sentence}"),
    }
}

/// Who was paged and when (trigger events; resolves and change events are not people being
/// woken), and failed deliveries flagged; or why nobody was paged.
fn paging_lines(incident: &ReportIncident) -> String {
    let sentence = page_state(incident).sentence();
    let mut text = format!("- {}\n", escape::markdown(&capitalised(&sentence)));
    for page in &incident.pages {
        if page_failed(page) {
            text.push_str(&format!(
                "- ⚠️ **Page not delivered**: {}\n",
                escape::markdown(&page_summary(page))
            ));
            continue;
        }
        if page.kind != "trigger" {
            continue;
        }
        let channel = channel_name(&page.channel);
        let kind = page_kind_name(&page.kind);
        let line = match page.state.as_str() {
            "delivered" => format!(
                "Paged: {channel} {kind}, delivered {}",
                utc(page.delivered_at.as_deref().unwrap_or(&page.at))
            ),
            "pending" => format!("Page queued: {channel} {kind} at {}", utc(&page.at)),
            other => format!(
                "Page: {channel} {kind} at {}: {}",
                utc(&page.at),
                shown(other, "state unknown")
            ),
        };
        let because = one_line(&page.reason);
        let line = if because.is_empty() {
            line
        } else {
            format!("{line} ({because})")
        };
        text.push_str(&format!("- {}\n", escape::markdown(&line)));
    }
    text
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::docs::text::{assert_in_order, live_markup, section};

    fn restart(state: &str, verified: Option<&str>) -> ActionLine {
        ActionLine {
            id: 7,
            name: "restart".into(),
            kind: "kubernetes.rollout_restart".into(),
            target: "deployment/vastai/vastai-integration".into(),
            verdict: "run".into(),
            state: state.into(),
            at: Some("2026-11-28T03:05:00Z".into()),
            verified: verified.map(str::to_owned),
            verify_window: "10m".into(),
            detail: if state == "uncertain" {
                "nightshift restarted while the restart was in flight".into()
            } else {
                String::new()
            },
            shares: None,
        }
    }

    fn page(kind: &str, state: &str, at: &str, delivered_at: Option<&str>) -> PageEventFacts {
        PageEventFacts {
            at: at.into(),
            channel: "pagerduty".into(),
            kind: kind.into(),
            state: state.into(),
            reason: "restart did not help".into(),
            attempts: 1,
            delivered_at: delivered_at.map(str::to_owned),
            error: None,
        }
    }

    fn vastai_5xx() -> ReportIncident {
        ReportIncident {
            id: "c626d2275ab0f610-20261128T030200Z".into(),
            summary: "Vast.ai API server errors (5xx) in vastai".into(),
            alertname: "VastaiServerErrors".into(),
            severity: "P2".into(),
            meaning: "degraded".into(),
            respond_within: "1h".into(),
            status: "resolved".into(),
            started_at: "2026-11-28T03:02:00Z".into(),
            ended_at: Some("2026-11-28T03:44:00Z".into()),
            duration: Some("42m".into()),
            rule: "vastai-server-errors".into(),
            branch: "our-integration".into(),
            actions: vec![restart("done", Some("did_not_help"))],
            paging_state: "paged".into(),
            paging_reason: "restart did not help".into(),
            pages: vec![page(
                "trigger",
                "delivered",
                "2026-11-28T03:15:00Z",
                Some("2026-11-28T03:15:02Z"),
            )],
            bundle: Some("https://nightshift.example/api/v1/incidents/c626/bundle".into()),
        }
    }

    fn night() -> ReportFacts {
        let unreachable = ReportIncident {
            id: "a1-20261128T021000Z".into(),
            summary: "Vast.ai API unreachable from vastai/vastai-integration".into(),
            alertname: "VastaiApiUnreachable".into(),
            severity: "P1".into(),
            meaning: "complete outage".into(),
            respond_within: "15m".into(),
            status: "firing".into(),
            started_at: "2026-11-28T02:10:00Z".into(),
            rule: "vastai-api-unreachable".into(),
            branch: "our-side".into(),
            actions: vec![restart("uncertain", None)],
            paging_state: "paged".into(),
            paging_reason: "an action's outcome is unknown".into(),
            pages: vec![PageEventFacts {
                state: "rejected".into(),
                error: Some("invalid routing key".into()),
                ..page("trigger", "rejected", "2026-11-28T02:11:00Z", None)
            }],
            ..ReportIncident::default()
        };
        let rate_limited = ReportIncident {
            id: "b2-20261128T040000Z".into(),
            summary: "Vast.ai rate-limits the integration (429) in vastai".into(),
            alertname: "VastaiRateLimited".into(),
            severity: "P3".into(),
            meaning: "minor problem".into(),
            respond_within: "4h".into(),
            status: "resolved".into(),
            started_at: "2026-11-28T04:00:00Z".into(),
            ended_at: Some("2026-11-28T04:06:00Z".into()),
            duration: Some("6m".into()),
            rule: "vastai-rate-limited".into(),
            branch: "queue-mode".into(),
            actions: vec![ActionLine {
                name: "queue-mode".into(),
                kind: "kubernetes.set_env".into(),
                at: Some("2026-11-28T04:00:05Z".into()),
                verified: Some("helped".into()),
                ..restart("done", Some("helped"))
            }],
            paging_state: "not_paged".into(),
            paging_reason: "mitigation helped: queue-mode".into(),
            ..ReportIncident::default()
        };
        let metrics_absent = ReportIncident {
            id: "d4-20261128T010000Z".into(),
            summary: "Vast.ai integration metrics absent in vastai".into(),
            alertname: "VastaiMetricsAbsent".into(),
            severity: "P4".into(),
            meaning: "no user impact".into(),
            respond_within: "next business day".into(),
            status: "firing".into(),
            started_at: "2026-11-28T01:00:00Z".into(),
            rule: "vastai-metrics-absent".into(),
            branch: "rule".into(),
            paging_state: "not_paged".into(),
            paging_reason: "P4 is never paged".into(),
            ..ReportIncident::default()
        };
        ReportFacts {
            since: "2026-11-28T00:00:00Z".into(),
            until: "2026-11-28T08:00:00Z".into(),
            // Deliberately out of order: the report sorts them.
            incidents: vec![metrics_absent, vastai_5xx(), rate_limited, unreachable],
        }
    }

    #[test]
    fn the_headline_counts_by_severity_paged_and_handled() {
        let text = markdown(&night());
        assert!(
            text.starts_with(
                "# nightshift report: 2026-11-28 00:00:00 UTC → 2026-11-28 08:00:00 UTC\n\n\
             **4 incidents**: 1 P1, 1 P2, 1 P3, 1 P4 · 1 paged · 1 handled automatically · ⚠️ 1 \
             with a page that did not get through\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn incidents_are_grouped_by_severity_with_their_response_targets() {
        let text = markdown(&night());
        assert_in_order(
            &text,
            &[
                "## Needs a human",
                "## P1 — complete outage; respond within 15m (1)",
                "### Vast.ai API unreachable",
                "## P2 — degraded; respond within 1h (1)",
                "### Vast.ai API server errors (5xx) in vastai (`c626d2275ab0f610-20261128T030200Z`)",
                "## P3 — minor problem; respond within 4h (1)",
                "### Vast.ai rate-limits the integration",
                "## Waiting for the next business day (1)",
                "### Vast.ai integration metrics absent",
            ],
        );
        let p2 = section(&text, "## P2");
        assert_in_order(
            p2,
            &[
                "- alert VastaiServerErrors · rule vastai-server-errors · branch our-integration",
                "- Resolved · 2026-11-28 03:02:00 UTC → 2026-11-28 03:44:00 UTC (42m)",
                "- Done automatically, **did not help**: restarted deployment \
                 vastai/vastai-integration at 03:05:00; still failing after 10m",
                "- Paged: PagerDuty trigger, delivered 2026-11-28 03:15:02 UTC (restart did not help)",
                "- Bundle: <https://nightshift.example/api/v1/incidents/c626/bundle>",
            ],
        );
        let p3 = section(&text, "## P3");
        assert!(
            p3.contains("- Done automatically, **helped**: set env on"),
            "{p3}"
        );
        assert!(
            p3.contains("- Not paged: mitigation helped: queue-mode"),
            "{p3}"
        );
    }

    #[test]
    fn p4s_wait_for_the_next_business_day() {
        let text = markdown(&night());
        let waiting = section(&text, "## Waiting for the next business day");
        assert!(waiting.contains("P4 — no user impact; respond within next business day"));
        assert!(waiting.contains("### Vast.ai integration metrics absent in vastai"));
        assert!(
            waiting.contains("- Not paged: P4 is never paged"),
            "{waiting}"
        );
        assert!(waiting.contains("- Nothing was done automatically."));
        // A P4 still firing is not an emergency.
        let needs = section(&text, "## Needs a human");
        assert!(!needs.contains("metrics absent"), "{needs}");
        for group in ["## P1", "## P2", "## P3"] {
            assert!(!section(&text, group).contains("metrics absent"));
        }
    }

    #[test]
    fn what_needs_a_human_is_listed_first_and_flagged() {
        let text = markdown(&night());
        let needs = section(&text, "## Needs a human (3)");
        assert_in_order(
            needs,
            &[
                "- ⚠️ **outcome unknown** — Vast.ai API unreachable from vastai/vastai-integration \
                 (`a1-20261128T021000Z`): restart deployment vastai/vastai-integration: outcome \
                 UNKNOWN",
                "- ⚠️ **page not delivered** — Vast.ai API unreachable",
                "PagerDuty trigger: REJECTED (1 attempt); error: invalid routing key",
                "- ⚠️ **still firing** — Vast.ai API unreachable",
                "since 2026-11-28 02:10:00 UTC; the page did NOT reach anyone",
            ],
        );
        let p1 = section(&text, "## P1");
        assert!(
            p1.contains("- ⚠️ **UNCERTAIN**: restart deployment"),
            "{p1}"
        );
        assert!(
            p1.contains("- ⚠️ **Page not delivered**: PagerDuty trigger: REJECTED"),
            "{p1}"
        );
        assert!(
            p1.contains("- **Still firing** · since 2026-11-28 02:10:00 UTC"),
            "{p1}"
        );
    }

    #[test]
    fn hostile_alert_data_makes_no_link_image_or_html() {
        let mut hostile = vastai_5xx();
        hostile.summary = "# evil heading\n![x](https://evil/track.png)".into();
        hostile.alertname = "Evil_[Acknowledge](https://evil)".into();
        hostile.rule = "<img src=https://evil/t.png>".into();
        hostile.status = "firing".into();
        hostile.actions[0].target = "deployment/evil/[Acknowledge](https://evil)".into();
        hostile.actions[0].state = "uncertain".into();
        hostile.pages[0].state = "rejected".into();
        hostile.pages[0].error = Some("![x](https://evil/track.png)".into());
        hostile.paging_reason = "<https://evil|Acknowledge>".into();
        hostile.bundle = Some("https://evil/ [Acknowledge](https://evil)".into());
        let report = ReportFacts {
            incidents: vec![hostile],
            ..night()
        };
        let text = markdown(&report);
        assert_eq!(live_markup(&text), Vec::<&str>::new(), "{text}");
        assert!(
            !text.lines().any(|line| line.starts_with("# evil")),
            "{text}"
        );
        for escaped in [
            "### \\# evil heading !\\[x\\](https://evil/track.png) (`c626d2275ab0f610-20261128T030200Z`)",
            "- alert Evil\\_\\[Acknowledge\\](https://evil) · rule \\<img src=https://evil/t.png\\>",
            "- ⚠️ **UNCERTAIN**: restart deployment/evil/\\[Acknowledge\\](https://evil)",
            "error: !\\[x\\](https://evil/track.png)",
            "- Bundle: https://evil/ \\[Acknowledge\\](https://evil)\n",
        ] {
            assert!(text.contains(escaped), "{escaped:?} not in:\n{text}");
        }
        // The JSON carries the values as they are; only its Markdown `text` is escaped.
        let value = json(&report);
        assert_eq!(
            value["incidents"][0]["summary"],
            report.incidents[0].summary
        );
        assert!(
            value["needs_a_human"][0]["text"]
                .as_str()
                .is_some_and(|text| text.contains("!\\[x\\](https://evil/track.png)")),
            "{value:#}"
        );
    }

    /// A P1 whose only trigger found no routing key: not paged in the counts, its own line,
    /// and the report's first line; and a decision to page with no trigger answered yet is
    /// not counted as paged.
    #[test]
    fn a_p1_nothing_could_page_is_the_first_line_and_not_counted_as_paged() {
        let unpaged = ReportIncident {
            id: "a1-20261128T021000Z".into(),
            summary: "Vast.ai API unreachable".into(),
            severity: "P1".into(),
            status: "firing".into(),
            started_at: "2026-11-28T02:10:00Z".into(),
            paging_state: "paged".into(),
            paging_reason: "P1 pages immediately".into(),
            pages: vec![PageEventFacts {
                error: Some("PagerDuty is not configured (no pagerduty.routing_keys)".into()),
                ..page("trigger", "rejected", "2026-11-28T02:11:00Z", None)
            }],
            ..ReportIncident::default()
        };
        let queued = ReportIncident {
            id: "b2-20261128T030000Z".into(),
            severity: "P2".into(),
            paging_state: "paged".into(),
            ..ReportIncident::default()
        };
        let report = ReportFacts {
            since: "2026-11-27T18:00:00Z".into(),
            until: "2026-11-28T09:00:00Z".into(),
            incidents: vec![unpaged, queued],
        };
        let text = markdown(&report);
        let first = text.lines().next().unwrap_or_default();
        assert!(
            first.ends_with(
                "⚠️ 1 P1 incident could not be paged: no PagerDuty routing key and no fallback \
                 notifier"
            ),
            "{text}"
        );
        assert!(text.contains("· 0 paged ·"), "{text}");
        assert!(
            text.contains(
                "- Could not be paged: no PagerDuty routing key and no fallback notifier\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("- Page pending (not delivered yet)\n"),
            "{text}"
        );
        let value = json(&report);
        assert_eq!(value["counts"]["paged"], 0);
        assert_eq!(value["counts"]["could_not_be_paged"], 1);
        assert_eq!(value["incidents"][0]["page_state"], "no_destination");
        assert_eq!(value["incidents"][1]["page_state"], "pending");
    }

    #[test]
    fn an_empty_night_says_so() {
        let report = ReportFacts {
            since: "2026-11-28T00:00:00Z".into(),
            until: "2026-11-28T08:00:00Z".into(),
            incidents: Vec::new(),
        };
        let text = markdown(&report);
        assert!(
            text.ends_with(
                "Nothing happened between 2026-11-28 00:00:00 UTC and 2026-11-28 08:00:00 UTC.\n"
            ),
            "{text}"
        );
        let value = json(&report);
        assert_eq!(value["counts"]["incidents"], 0);
        assert_eq!(value["incidents"], json!([]));
    }

    #[test]
    fn the_json_carries_counts_needs_and_sentences() {
        let value = json(&night());
        assert_eq!(value["counts"]["incidents"], 4);
        assert_eq!(
            value["counts"]["by_severity"],
            json!({"P1": 1, "P2": 1, "P3": 1, "P4": 1})
        );
        assert_eq!(value["counts"]["paged"], 1);
        assert_eq!(value["counts"]["with_a_failed_page"], 1);
        assert_eq!(value["counts"]["handled_automatically"], 1);
        assert_eq!(value["counts"]["needs_a_human"], 3);
        let whats: Vec<&str> = value["needs_a_human"]
            .as_array()
            .unwrap()
            .iter()
            .map(|need| need["what"].as_str().unwrap())
            .collect();
        assert_eq!(
            whats,
            ["uncertain_action", "page_not_delivered", "still_firing"]
        );
        let severities: Vec<&str> = value["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|incident| incident["severity"].as_str().unwrap())
            .collect();
        assert_eq!(severities, ["P1", "P2", "P3", "P4"]);
        let p2 = &value["incidents"][1];
        assert_eq!(p2["paged"], true);
        assert_eq!(p2["actions"][0]["outcome"], "did_not_help");
        assert_eq!(
            p2["actions"][0]["sentence"],
            "restarted deployment vastai/vastai-integration at 03:05:00; still failing after 10m"
        );
    }

    #[test]
    fn empty_and_odd_fields_never_panic() {
        let odd = "\u{1F600}`|*_\n\t```";
        let incidents = vec![
            ReportIncident::default(),
            ReportIncident {
                id: odd.into(),
                summary: odd.into(),
                severity: odd.into(),
                status: "firing".into(),
                started_at: "not a time".into(),
                ended_at: Some(String::new()),
                duration: Some(String::new()),
                actions: vec![ActionLine::default(), restart("uncertain", Some(odd))],
                pages: vec![
                    PageEventFacts::default(),
                    PageEventFacts {
                        attempts: -3,
                        error: Some(odd.into()),
                        delivered_at: Some(odd.into()),
                        state: "delivered".into(),
                        ..PageEventFacts::default()
                    },
                ],
                bundle: Some(String::new()),
                ..ReportIncident::default()
            },
        ];
        for report in [
            ReportFacts::default(),
            ReportFacts {
                incidents,
                ..ReportFacts::default()
            },
        ] {
            let text = markdown(&report);
            assert!(!text.trim().is_empty());
            assert!(json(&report).is_object());
        }
        let text = markdown(&ReportFacts::default());
        assert!(text.contains("Nothing happened between time unknown and time unknown."));
    }
}
