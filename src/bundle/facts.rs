//! Everything known about one incident, gathered from the store when its bundle is written,
//! in the shape the documents (`docs`) and the report need. Times are RFC 3339 UTC strings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::page::notify::view::ActionLine;

/// One incident, as its bundle tells it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BundleFacts {
    pub incident: IncidentFacts,
    /// Every decision, oldest first.
    pub decisions: Vec<DecisionFacts>,
    /// Every action taken or skipped, oldest first.
    pub actions: Vec<ActionLine>,
    /// Every page event about it (PagerDuty and other notifiers), oldest first.
    pub pages: Vec<PageEventFacts>,
    /// Every episode transition, oldest first.
    pub transitions: Vec<TransitionFacts>,
    /// Every collector run for the bundle.
    pub collectors: Vec<CollectorFacts>,
    /// When this version of the bundle was written.
    pub generated_at: String,
    /// Where the bundle is (path under the state directory) and its link, if any.
    pub bundle_path: String,
    pub bundle_url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IncidentFacts {
    pub id: String,
    pub alertname: String,
    /// The rule's rendered summary.
    pub summary: String,
    /// `firing`, `resolved`, `gone`, `silenced`.
    pub status: String,
    pub severity: String,
    /// What the severity means and its response target ("complete outage", "15m").
    pub meaning: String,
    pub respond_within: String,
    pub rule: String,
    pub branch: String,
    /// The branch's runbook note.
    pub note: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub generator_url: String,
    pub starts_at: String,
    /// When it resolved (or was seen gone), if it did.
    pub ended_at: Option<String>,
    /// How long it lasted, written as "42m10s", once ended.
    pub duration: Option<String>,
    /// Whether and why it paged (`paged`, `not_paged`, `waiting`, `resolved`), and why.
    pub paging_state: String,
    pub paging_reason: String,
    pub incident_commander: Option<String>,
    /// nightshift's link to the incident, if `paging.external_url` is set.
    pub url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DecisionFacts {
    pub at: String,
    /// `initial` or `reevaluation`.
    pub kind: String,
    pub rule: String,
    pub severity: String,
    pub branch: String,
    /// The branch differs from the previous decision's.
    pub changed: bool,
    pub note: String,
    /// Why the rule matched, in words (the classification's reason).
    pub why: String,
    /// Probe name → one-line result ("ok: {…}" / "failed: timeout").
    pub probes: BTreeMap<String, String>,
    /// The whole decision trace, for decision.json.
    pub trace: serde_json::Value,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PageEventFacts {
    pub at: String,
    /// `pagerduty`, or a notifier's name.
    pub channel: String,
    /// `trigger`, `resolve`, `change`.
    pub kind: String,
    /// `pending`, `delivered`, `rejected`.
    pub state: String,
    pub reason: String,
    pub attempts: i64,
    pub delivered_at: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TransitionFacts {
    pub at: String,
    /// opened, resolved, gone, silenced, unsilenced, reopened.
    pub kind: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CollectorFacts {
    pub name: String,
    pub kind: String,
    /// ok, truncated, failed, timed_out, skipped.
    pub status: String,
    pub error: Option<String>,
    pub duration_ms: u64,
    /// Files in the bundle, relative to its root.
    pub files: Vec<String>,
    pub shared: bool,
    /// When it ran: at open, or again at resolve.
    pub phase: String,
}

/// An incident's page state from its recorded facts: the same function the API uses
/// (`paging::page_state`), so the report and the postmortem say what the API says.
pub fn page_state(
    paging_state: &str,
    paging_reason: &str,
    pages: &[PageEventFacts],
) -> crate::page::policy::PageState {
    let events: Vec<crate::page::policy::PageEvent<'_>> = pages
        .iter()
        .map(|page| crate::page::policy::PageEvent {
            channel: &page.channel,
            kind: &page.kind,
            state: &page.state,
            error: page.error.as_deref(),
            delivered_at: page.delivered_at.as_deref(),
        })
        .collect();
    crate::page::policy::page_state(paging_state, paging_reason, &events)
}
