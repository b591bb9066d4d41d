//! The real binary classifies every opened incident, runs its probes, walks the branches and
//! records the decision; it re-evaluates while the incident fires; broken rules never keep it
//! down.

use crate::fakes;

use crate::common::*;
use std::time::Duration;

const RULES: &str = r#"
[runbook]
name = "vastai"

[[rule]]
name = "api-unreachable"
matchers = ['alertname="VastaiApiUnreachable"']
severity = "P1"
probes = ["status"]
reevaluate_every = "1s"

[[rule.branch]]
name = "provider-outage"
when = 'probe.status.indicator in ["minor", "major", "critical"]'
actions = ["fallback"]
note = "status page reports {{ probe.status.indicator }}; fallback enabled"

[[rule.branch]]
name = "our-side"
otherwise = true
actions = ["restart"]

[probe.status]
kind = "statuspage"
url = "STATUS_URL"
timeout = "2s"
cache = "0s"

[action.fallback]
kind = "kubernetes.set_env"
namespace = "vastai"
workload = "deployment/vastai-integration"
env = { VASTAI_FALLBACK = "true" }
revert_on_resolve = true

[action.restart]
kind = "kubernetes.rollout_restart"
namespace = "vastai"
workload = "deployment/vastai-integration"
"#;

fn start(status_url: &str) -> Daemon {
    let mut daemon = Daemon::prepare(
        "[rules]\ndir = \"{dir}/rules\"\n[kubernetes]\nnamespaces = [\"vastai\"]\n",
        &[],
    );
    std::fs::create_dir_all(daemon.path("rules")).unwrap();
    daemon.write_file(
        "rules/vastai.toml",
        &RULES.replace("STATUS_URL", status_url),
    );
    daemon.spawn();
    daemon
}

fn send(daemon: &Daemon, alerts: &[(&str, &str, &str, &str)]) {
    let response = client().post(
        &format!("{}/webhook", daemon.base),
        &[JSON],
        webhook("g", alerts, 0).as_bytes(),
    );
    assert_eq!(response.status, 200, "{}", response.body);
}

/// The incident of `instance`, once it has at least `decisions` decisions.
fn incident_with_decisions(daemon: &Daemon, instance: &str, decisions: usize) -> serde_json::Value {
    wait_for(Duration::from_secs(20), || {
        let list = client()
            .get(&format!("{}/api/v1/incidents", daemon.base), &[])
            .json();
        let id = list["incidents"]
            .as_array()?
            .iter()
            .find(|i| i["labels"]["instance"] == instance)?["id"]
            .as_str()?
            .to_owned();
        let detail = client()
            .get(&format!("{}/api/v1/incidents/{id}", daemon.base), &[])
            .json();
        (detail["decisions"].as_array()?.len() >= decisions).then_some(detail)
    })
    .unwrap_or_else(|| {
        panic!(
            "no {decisions} decision(s) for {instance}:\n{}",
            daemon.log()
        )
    })
}

#[test]
fn the_decision_follows_the_status_page_and_changes_are_recorded() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let page = runtime.block_on(fakes::statuspage::FakeStatuspage::start());
    page.set_indicator("major", "Partial outage of the API");
    let daemon = start(&page.url());
    send(
        &daemon,
        &[(
            "VastaiApiUnreachable",
            "a",
            "firing",
            "2026-11-28T03:00:00Z",
        )],
    );
    let detail = incident_with_decisions(&daemon, "a", 1);
    let first = &detail["decisions"][0];
    assert_eq!(first["kind"], "initial");
    assert_eq!(first["rule"], "api-unreachable");
    assert_eq!(first["severity"], "P1");
    assert_eq!(first["branch"], "provider-outage");
    let trace = &first["trace"];
    assert_eq!(
        trace["classification"]["matched"][0]["evidence"][0]["matcher"],
        "alertname=\"VastaiApiUnreachable\""
    );
    assert_eq!(trace["probes"]["vastai/status"]["ok"], true);
    assert_eq!(
        trace["probes"]["vastai/status"]["fields"]["indicator"],
        "major"
    );
    assert_eq!(trace["actions"][0]["name"], "fallback");
    assert_eq!(
        trace["actions"][0]["rendered"]["env.VASTAI_FALLBACK"],
        "true"
    );
    assert_eq!(trace["note"], "status page reports major; fallback enabled");
    assert_eq!(trace["page"]["policy"], "immediate");
    assert_eq!(detail["severity"], "P1");
    assert!(
        detail["transitions"][0]["done_at"].is_string(),
        "the opened transition is done"
    );

    // The provider recovers while our alert still fires: a re-evaluation takes the other
    // branch and says it changed.
    page.set_indicator("none", "All Systems Operational");
    let detail = wait_for(Duration::from_secs(20), || {
        let detail = incident_with_decisions(&daemon, "a", 2);
        let decisions = detail["decisions"].as_array()?.clone();
        decisions
            .iter()
            .any(|d| d["branch"] == "our-side" && d["changed"] == true)
            .then_some(detail)
    })
    .expect("a changed re-evaluation");
    let changed = detail["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["branch"] == "our-side")
        .unwrap()
        .clone();
    assert_eq!(changed["kind"], "reevaluation");
    assert_eq!(changed["trace"]["actions"][0]["name"], "restart");

    // Another incident keeps firing: its re-evaluations are the sign that a's would have
    // been due too, had it not resolved.
    let response = client().post(
        &format!("{}/webhook", daemon.base),
        &[JSON],
        webhook(
            "other",
            &[(
                "VastaiApiUnreachable",
                "keep",
                "firing",
                "2026-11-28T03:00:00Z",
            )],
            0,
        )
        .as_bytes(),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    incident_with_decisions(&daemon, "keep", 1);
    // Resolved: no more re-evaluations.
    send(
        &daemon,
        &[(
            "VastaiApiUnreachable",
            "a",
            "resolved",
            "2026-11-28T03:00:00Z",
        )],
    );
    let count = wait_for(Duration::from_secs(10), || {
        let detail = incident_with_decisions(&daemon, "a", 1);
        (detail["status"] == "resolved").then(|| detail["decisions"].as_array().unwrap().len())
    })
    .unwrap();
    let keep = incident_with_decisions(&daemon, "keep", 1)["decisions"]
        .as_array()
        .unwrap()
        .len();
    incident_with_decisions(&daemon, "keep", keep + 2);
    let after = incident_with_decisions(&daemon, "a", 1)["decisions"]
        .as_array()
        .unwrap()
        .len();
    assert!(
        after <= count + 1,
        "re-evaluation stopped after resolve ({count} → {after})"
    );

    let show = daemon.cli(&["incidents", "show", detail["id"].as_str().unwrap()]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("decision   rule api-unreachable"), "{text}");
    assert!(text.contains("(changed)"), "{text}");
    let metrics = client().get(&format!("{}/metrics", daemon.base), &[]).body;
    assert!(metrics.contains("nightshift_decisions_total{branch_kind=\"when\",rule=\"api-unreachable\",severity=\"P1\"}"), "{metrics}");
}

#[test]
fn a_probe_that_cannot_answer_means_no_action() {
    let daemon = start(&format!("{}/api/v2/status.json", fakes::dead_url()));
    send(
        &daemon,
        &[(
            "VastaiApiUnreachable",
            "b",
            "firing",
            "2026-11-28T03:00:00Z",
        )],
    );
    let detail = incident_with_decisions(&daemon, "b", 1);
    let trace = &detail["decisions"][0]["trace"];
    assert_eq!(detail["decisions"][0]["branch"], "on_probe_failure");
    assert_eq!(trace["actions"].as_array().unwrap().len(), 0);
    assert_eq!(trace["probes"]["vastai/status"]["ok"], false);
    assert!(
        trace["note"]
            .as_str()
            .unwrap()
            .starts_with("could not confirm: status "),
        "{trace}"
    );
}

#[test]
fn what_no_rule_matches_is_classified_by_the_default_rule() {
    let daemon = start("https://status.invalid/api/v2/status.json");
    // The webhook helper labels every alert severity=critical.
    send(
        &daemon,
        &[("SomethingElse", "c", "firing", "2026-11-28T03:00:00Z")],
    );
    let detail = incident_with_decisions(&daemon, "c", 1);
    assert_eq!(detail["decisions"][0]["rule"], "default");
    assert_eq!(detail["decisions"][0]["severity"], "P1");
    assert!(
        detail["decisions"][0]["trace"]["classification"]["reason"]
            .as_str()
            .unwrap()
            .contains("default rule maps severity=\"critical\" to P1")
    );
}

#[test]
fn broken_rules_never_keep_the_daemon_down() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let page = runtime.block_on(fakes::statuspage::FakeStatuspage::start());
    let mut daemon = start(&page.url());
    // The first start saved these rules as the last good set. Break them and restart.
    daemon.kill9();
    daemon.write_file(
        "rules/vastai.toml",
        "[[rule]]\nname = \"x\"\nseverity = \"P9\"\n",
    );
    daemon.spawn();
    let ready = client().get(&format!("{}/readyz", daemon.base), &[]);
    assert_eq!(ready.status, 200);
    assert!(
        ready.body.contains("degraded") && ready.body.contains("last good set"),
        "{}",
        ready.body
    );
    assert!(daemon.log().contains("ERROR"), "{}", daemon.log());
    let metrics = client().get(&format!("{}/metrics", daemon.base), &[]).body;
    assert!(metrics.contains("nightshift_rules_last_load_successful 0"));
    // The last good rules still classify.
    send(
        &daemon,
        &[(
            "VastaiApiUnreachable",
            "d",
            "firing",
            "2026-11-28T03:00:00Z",
        )],
    );
    let detail = incident_with_decisions(&daemon, "d", 1);
    assert_eq!(detail["decisions"][0]["rule"], "api-unreachable");
    // A reload with the broken file is refused and says why.
    let response = client().post(&format!("{}/-/reload", daemon.base), &[], b"");
    assert_eq!(response.status, 400);
    assert!(response.body.contains("vastai.toml:3"), "{}", response.body);
    // Fixed: the reload applies, and the degraded note goes away.
    daemon.write_file(
        "rules/vastai.toml",
        &RULES.replace("STATUS_URL", &page.url()),
    );
    let response = client().post(&format!("{}/-/reload", daemon.base), &[], b"");
    assert_eq!(response.status, 200, "{}", response.body);
    // (The P1 above had no PagerDuty routing key: once its page is refused, /readyz names
    // that too; only the rules' note must be gone.)
    let ready = client().get(&format!("{}/readyz", daemon.base), &[]);
    assert_eq!(ready.status, 200);
    assert!(ready.body.starts_with("ready"), "{}", ready.body);
    assert!(
        !ready.body.contains("last good set") && !ready.body.contains("rule"),
        "{}",
        ready.body
    );

    // With no last good set either, it runs on the built-in default rule.
    let mut fresh = Daemon::prepare("[rules]\ndir = \"{dir}/rules\"\n", &[]);
    std::fs::create_dir_all(fresh.path("rules")).unwrap();
    fresh.write_file("rules/broken.toml", "this is not toml");
    fresh.spawn();
    let ready = client().get(&format!("{}/readyz", fresh.base), &[]);
    assert!(
        ready.body.contains("built-in default rule only"),
        "{}",
        ready.body
    );
    // `check` fails on the same rules, naming the file and line; --config-only does not.
    let check = fresh.cli(&["check"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&check.stderr).contains("broken.toml:1"),
        "{check:?}"
    );
    assert!(fresh.cli(&["check", "--config-only"]).status.success());
}

/// The value of an unlabelled sample, or the sum over a metric's labelled samples.
fn metric_total(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A backlog (thousands of alerts posted faster than they are decided) gets each transition
/// decided once: the work queue's read may predate a decision's commit, and a transition that
/// looks pending there is not decided a second time.
#[test]
fn a_backlog_decides_each_transition_once() {
    const WEBHOOKS: usize = 40;
    const PER_WEBHOOK: usize = 50;
    const ALERTS: usize = WEBHOOKS * PER_WEBHOOK;
    let daemon = Daemon::start("");
    let instances: Vec<String> = (0..ALERTS).map(|i| format!("host-{i}")).collect();
    for chunk in instances.chunks(PER_WEBHOOK) {
        let alerts: Vec<(&str, &str, &str, &str)> = chunk
            .iter()
            .map(|instance| {
                (
                    "Backlog",
                    instance.as_str(),
                    "firing",
                    "2026-11-28T03:00:00Z",
                )
            })
            .collect();
        let group = format!("backlog-{}", chunk[0]);
        let response = client().post(
            &format!("{}/webhook", daemon.base),
            &[JSON],
            webhook(&group, &alerts, 0).as_bytes(),
        );
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let metrics = || client().get(&format!("{}/metrics", daemon.base), &[]).body;
    // Proof the backlog was worked through: every incident has its recorded decision.
    let recorded = wait_for(Duration::from_secs(240), || {
        let exposition = metrics();
        (metric_total(&exposition, "nightshift_decisions_total") >= ALERTS as f64)
            .then_some(exposition)
    })
    .unwrap_or_else(|| panic!("the backlog was not decided:\n{}", metrics()));
    assert_eq!(
        metric_total(&recorded, "nightshift_decisions_total"),
        ALERTS as f64,
        "a decision recorded twice"
    );
    // Every decision made, recorded or thrown away, is timed: none was made twice.
    let made = metric_total(&recorded, "nightshift_decision_duration_seconds_count");
    assert_eq!(
        made, ALERTS as f64,
        "decisions made for {ALERTS} transitions"
    );
    let incidents = client()
        .get(&format!("{}/api/v1/incidents?limit=1000", daemon.base), &[])
        .json();
    assert_eq!(incidents["incidents"].as_array().unwrap().len(), 1000);
}
