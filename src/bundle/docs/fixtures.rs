//! fixtures: the facts the document tests render: a Vast.ai 5xx incident told end to end, and
//! small builders.

use std::collections::BTreeMap;

use serde_json::json;

use crate::bundle::facts::{
    BundleFacts, CollectorFacts, DecisionFacts, IncidentFacts, PageEventFacts, TransitionFacts,
};
use crate::page::notify::view::ActionLine;

pub(super) const NOTE: &str = "Vast.ai status page reports none/All Systems Operational, yet we get \
    5xx: likely our integration (bad requests, a bad deploy) or an incident Vast.ai has not \
    posted yet. Evidence: 12.5% of Vast.ai API requests answered 5xx over the last 5 \
    minutes. No automatic action";

pub(super) fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

pub(super) fn page(kind: &str, at: &str, delivered_at: &str, reason: &str) -> PageEventFacts {
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

pub(super) fn collector(name: &str, kind: &str, status: &str, files: &[&str]) -> CollectorFacts {
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

/// The Vast.ai 5xx incident: P2, the status page says none, one restart that did not help,
/// paged after its verify window, resolved after 42 minutes, one of four collectors timed
/// out.
pub(super) fn vastai_5xx() -> BundleFacts {
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
