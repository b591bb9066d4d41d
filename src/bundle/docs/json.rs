//! json: the bodies of `decision.json`, `actions.json` and `pages.json`, the values as they are
//! (no escaping: they are data, not Markdown).

use serde_json::{Map, Value, json};

use super::outcome::ActionOutcome;
use super::{fallback_reason, page_summary, utc};
use crate::bundle::facts::BundleFacts;
use crate::page::notify::render::action_sentence;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::docs::fixtures::*;

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
}
