//! render::fixtures: the pages the renderer's tests read: the Vast.ai incident as the runbook
//! describes it, its actions, and the same page as a hostile sender would write its alert.

use std::collections::BTreeMap;

use crate::page::notify::view::{ActionLine, IncidentView, PageView, ProbeLine};

pub(super) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

pub(super) fn restart(verified: Option<&str>) -> ActionLine {
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

pub(super) fn incident(id: &str) -> IncidentView {
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

pub(super) fn vastai_view() -> PageView {
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

pub(super) fn skipped(verdict: &str, detail: &str, shares: Option<i64>) -> ActionLine {
    ActionLine {
        verdict: verdict.into(),
        state: "skipped".into(),
        detail: detail.into(),
        shares,
        at: None,
        ..restart(None)
    }
}

/// The Vast.ai page with alert data as a hostile sender writes it.
pub(super) fn hostile_view() -> PageView {
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
