//! What a page says: the facts about a page (one dedup key) and its incidents as read from the
//! store when the event is sent, so a page delivered late still tells the latest truth. The
//! renderers (`render`) turn a view into a PagerDuty trigger, a change event or a chat message.

use std::collections::BTreeMap;

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

/// One page: an Alertmanager group (or one incident, with `dedup = "incident"`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PageView {
    pub dedup_key: String,
    pub group_key: String,
    /// The highest severity of its paged incidents: `P1`..`P4`.
    pub severity: String,
    /// What the severity means ("complete outage") and its response target ("15m").
    pub meaning: String,
    pub respond_within: String,
    /// `critical`, `error`, `warning` or `info`.
    pub pagerduty_severity: String,
    /// `triggered` or `resolved`.
    pub status: String,
    /// Who leads the response at this severity (config), if set.
    pub incident_commander: Option<String>,
    /// nightshift's own base URL (`paging.external_url`), if set.
    pub external_url: Option<String>,
    /// Alertmanager's base URL, if known.
    pub alertmanager_url: Option<String>,
    /// The paged incidents of the page, most severe and then oldest first.
    pub incidents: Vec<IncidentView>,
    /// Incidents of the page left out of `incidents` (a group of thousands).
    pub more_incidents: usize,
}

/// One incident as the person paged needs to see it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct IncidentView {
    pub id: String,
    pub rule: String,
    pub severity: String,
    pub branch: String,
    /// The branch's note (runbook guidance), may be empty.
    pub note: String,
    /// The rule's rendered summary.
    pub summary: String,
    /// `firing`, `resolved`, `gone` or `silenced`.
    pub status: String,
    /// RFC 3339, UTC.
    pub starts_at: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub generator_url: String,
    /// Why it was paged ("P1 pages immediately", "restart did not help", ...).
    pub page_reason: String,
    pub probes: Vec<ProbeLine>,
    pub actions: Vec<ActionLine>,
    /// Where its debug bundle is, once it is written.
    pub bundle: Option<String>,
    /// The most recent error lines of the logs its bundle collected (redacted).
    pub recent_errors: Vec<String>,
}

/// What one probe returned.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ProbeLine {
    /// `runbook/name`.
    pub name: String,
    pub ok: bool,
    /// A short rendering of the value or the error, at most a few hundred characters.
    pub result: String,
}

/// One automatic action, taken or skipped.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ActionLine {
    pub id: i64,
    /// The action's name in the rule file.
    pub name: String,
    /// `rollout_restart`, `set_env`, `scale`, `exec` or `http`.
    pub kind: String,
    /// `deployment/ns/name`, an exec target, an http origin.
    pub target: String,
    /// The governor's verdict: run, hold, dry_run, shadow, paused, in_flight, cooldown, budget,
    /// did_not_help.
    pub verdict: String,
    /// planned, started, done, failed, not_applied, uncertain, skipped.
    pub state: String,
    /// When it finished (or was judged), RFC 3339 UTC.
    pub at: Option<String>,
    /// `helped` or `did_not_help` once its verify window passed.
    pub verified: Option<String>,
    /// The verify window, humanised ("10m").
    pub verify_window: String,
    /// The result or the governor's reason, short and already redacted.
    pub detail: String,
    /// For a skip that follows another action (cooldown, in flight): that action's id.
    pub shares: Option<i64>,
}

/// A probe's stored result as a page shows it: its fields, or its error.
pub fn probe_line(name: &str, result: &Value) -> ProbeLine {
    let ok = result["ok"].as_bool().unwrap_or(false);
    let text = if ok {
        result["fields"].to_string()
    } else {
        result["error"].as_str().unwrap_or_default().to_owned()
    };
    ProbeLine {
        name: name.to_owned(),
        ok,
        result: super::pagerduty::truncate_chars(&text, 300).to_owned(),
    }
}

/// An action row (as the store's `actions` read gives it) as a page shows it.
pub fn action_line(action: &Value) -> ActionLine {
    let text = |field: &str| action[field].as_str().unwrap_or_default().to_owned();
    let detail = match action["state"].as_str() {
        Some("skipped") => {
            let reason = &action["verdict_detail"];
            reason["why"]
                .as_str()
                .or(reason["reason"].as_str())
                .unwrap_or_default()
                .to_owned()
        }
        _ => {
            let result = &action["result"];
            result["detail"]
                .as_str()
                .or(result["error"].as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| {
                    if result.is_null() {
                        String::new()
                    } else {
                        result.to_string()
                    }
                })
        }
    };
    let window = Duration::from_millis(action["verify_window_ms"].as_u64().unwrap_or(0));
    ActionLine {
        id: action["id"].as_i64().unwrap_or_default(),
        name: text("action"),
        kind: text("kind"),
        target: text("target"),
        verdict: text("verdict"),
        state: text("state"),
        at: action["finished_at"]
            .as_str()
            .or(action["created_at"].as_str())
            .map(str::to_owned),
        verified: action["verified"].as_str().map(str::to_owned),
        verify_window: crate::duration::format(window),
        detail: super::pagerduty::truncate_chars(&detail, 200).to_owned(),
        shares: action["verdict_detail"]["shares"].as_i64(),
    }
}
