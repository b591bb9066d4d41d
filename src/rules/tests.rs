//! Rule sets from text: classification, decisions, load errors.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;
use crate::probes::ProbeResult;

fn options() -> LoadOptions {
    LoadOptions {
        namespaces: vec!["vastai".to_owned()],
        tests: true,
        ..LoadOptions::default()
    }
}

/// Load `files` (name, text) from a temporary directory.
fn load(files: &[(&str, &str)]) -> Result<RuleSet, Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    load_dir(dir.path(), &options()).map_err(|errors| {
        errors
            .iter()
            .map(|e| {
                e.to_string()
                    .replace(&format!("{}/", dir.path().display()), "")
            })
            .collect()
    })
}

fn labels(pairs: &[(&str, &str)]) -> LabelSet {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn alert(pairs: &[(&str, &str)]) -> AlertInput {
    AlertInput {
        labels: labels(pairs),
        status: "firing".to_owned(),
        ..AlertInput::default()
    }
}

const RUNBOOK: &str = r#"
[runbook]
name = "vastai"

[[rule]]
name = "api-unreachable"
matchers = ['alertname="VastaiApiUnreachable"']
severity = "P1"
probes = ["status"]
summary = "Vast.ai API unreachable from {{ labels.namespace }}"

[[rule.branch]]
name = "provider-outage"
when = 'probe.status.indicator in ["minor", "major", "critical"]'
actions = ["fallback"]
note = "status page says {{ probe.status.indicator }}; fallback enabled"

[[rule.branch]]
name = "our-side"
otherwise = true
actions = ["restart"]
severity = "P2"

[[rule]]
name = "errors-team"
matchers = ['alertname=~"Vastai.*Errors"', 'team!="other"']
severity = "P3"
continue = true

[[rule]]
name = "server-errors"
matchers = ['alertname="VastaiServerErrors"']
severity = "P2"

[probe.status]
kind = "statuspage"
url = "https://status.example.com/api/v2/status.json"
timeout = "3s"
cache = "1m"

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

fn statuspage(indicator: &str) -> BTreeMap<String, ProbeResult> {
    let mut fields = crate::probes::sample_fields(crate::probes::ProbeKind::Statuspage);
    fields.insert("indicator".into(), indicator.into());
    [("vastai/status".to_owned(), ProbeResult::success(fields))].into()
}

fn failed() -> BTreeMap<String, ProbeResult> {
    [(
        "vastai/status".to_owned(),
        ProbeResult::failure(crate::probes::ProbeKind::Statuspage, "timed out after 3s"),
    )]
    .into()
}

#[test]
fn first_match_wins_and_continue_adds_rules() {
    let set = load(&[("vastai.toml", RUNBOOK)]).unwrap();
    let first = set.classify(
        &labels(&[("alertname", "VastaiApiUnreachable")]),
        &LabelSet::new(),
    );
    assert_eq!(first.matched.len(), 1);
    assert_eq!(first.matched[0].rule, "api-unreachable");
    assert_eq!(
        first.matched[0].evidence[0].matcher,
        "alertname=\"VastaiApiUnreachable\""
    );
    assert_eq!(first.severity, Severity::P1);
    // errors-team (P3, continue) then server-errors (P2): the severity is the highest.
    let both = set.classify(
        &labels(&[("alertname", "VastaiServerErrors")]),
        &LabelSet::new(),
    );
    let names: Vec<&str> = both.matched.iter().map(|m| m.rule.as_str()).collect();
    assert_eq!(names, ["errors-team", "server-errors"]);
    assert_eq!(both.severity, Severity::P2);
    // A missing label equals "": team!="other" matches alerts without a team.
    let other = set.classify(
        &labels(&[("alertname", "VastaiAuthErrors"), ("team", "other")]),
        &LabelSet::new(),
    );
    assert!(other.matched.is_empty());
}

#[test]
fn the_default_rule_classifies_what_nothing_matched() {
    let set = load(&[("vastai.toml", RUNBOOK)]).unwrap();
    for (severity_label, expected) in [
        (Some("critical"), Severity::P1),
        (Some("Warning"), Severity::P3),
        (Some("info"), Severity::P4),
        (Some("whatever"), Severity::P3),
        (None, Severity::P3),
    ] {
        let mut pairs = vec![("alertname", "Other")];
        if let Some(value) = severity_label {
            pairs.push(("severity", value));
        }
        let classification = set.classify(&labels(&pairs), &LabelSet::new());
        assert!(classification.matched.is_empty());
        assert_eq!(classification.severity, expected, "{severity_label:?}");
        let decision = set.decide(&classification, &alert(&pairs), &BTreeMap::new());
        assert_eq!(decision.branch, "default");
        assert!(decision.actions.is_empty());
    }
}

#[test]
fn branches_follow_the_probe() {
    let set = load(&[("vastai.toml", RUNBOOK)]).unwrap();
    let input = alert(&[
        ("alertname", "VastaiApiUnreachable"),
        ("namespace", "vastai"),
    ]);
    let classification = set.classify(&input.labels, &input.annotations);
    let outage = set.decide(&classification, &input, &statuspage("major"));
    assert_eq!(outage.branch, "provider-outage");
    assert_eq!(outage.severity, Severity::P1);
    assert_eq!(outage.note, "status page says major; fallback enabled");
    assert_eq!(outage.actions.len(), 1);
    assert_eq!(outage.actions[0].name, "fallback");
    assert_eq!(outage.actions[0].rendered["env.VASTAI_FALLBACK"], "true");
    assert_eq!(outage.summary, "Vast.ai API unreachable from vastai");
    assert_eq!(outage.page.policy, "immediate");
    assert_eq!(outage.page.pagerduty_severity, "critical");
    let ours = set.decide(&classification, &input, &statuspage("none"));
    assert_eq!(ours.branch, "our-side");
    assert_eq!(
        ours.severity,
        Severity::P2,
        "the branch re-grades the incident"
    );
    assert_eq!(ours.actions[0].name, "restart");
    let evaluations = &ours.rules[0].evaluations;
    assert_eq!(evaluations.len(), 1);
    assert_eq!(evaluations[0].result, serde_json::Value::Bool(false));
}

#[test]
fn a_failed_probe_takes_no_ordinary_branch() {
    let set = load(&[("vastai.toml", RUNBOOK)]).unwrap();
    let input = alert(&[("alertname", "VastaiApiUnreachable")]);
    let classification = set.classify(&input.labels, &input.annotations);
    let decision = set.decide(&classification, &input, &failed());
    assert_eq!(decision.branch, "on_probe_failure");
    assert!(decision.actions.is_empty(), "no action on a guess");
    assert_eq!(
        decision.note,
        "could not confirm: status timed out after 3s"
    );
    assert_eq!(decision.rules[0].failed_probes, ["status"]);
    // A probe that never ran counts as failed too.
    let decision = set.decide(&classification, &input, &BTreeMap::new());
    assert_eq!(decision.branch, "on_probe_failure");
}

#[test]
fn load_errors_name_file_line_and_rule_all_at_once() {
    let broken = r#"
[[rule]]
name = "a"
matchers = ['alertname=~"("']
severity = "P5"

[[rule]]
name = "b"
matchers = ['alertname="B"']
severity = "P2"
probes = ["nope"]
colour = "red"

[[rule]]
name = "c"
matchers = ['alertname="C"']
severity = "P2"
probes = ["s"]

[[rule.branch]]
name = "x"
when = 'probe.s.indicatr == "major"'
actions = ["missing"]

[[rule.branch]]
name = "y"
otherwise = true

[[rule.branch]]
name = "z"
when = "true"

[probe.s]
kind = "statuspage"
url = "https://status.example.com/api/v2/status.json"

[action.bad]
kind = "kubernetes.rollout_restart"
namespace = "Kube_System"
workload = "deployment/x"
"#;
    let errors = load(&[
        ("a.toml", broken),
        ("b.toml", "[[rule]]\nname = \"a\"\nseverity = \"P1\"\n"),
    ])
    .unwrap_err();
    let expected = [
        "a.toml:37: action bad: namespace \"Kube_System\" is not a valid namespace name",
        "a.toml:5: rule a: severity \"P5\" must be one of P1, P2, P3, P4",
        "a.toml:4: rule a: matcher \"alertname=~\\\"(\\\"\": invalid regular expression",
        "a.toml:12: rule b: unknown field `colour`",
        "a.toml:20: rule c branch x: when: no such key: indicatr",
        "a.toml:20: rule c branch x: action \"missing\" is not defined",
        "a.toml:25: rule c branch y: an otherwise branch must be the last",
        "b.toml:1: rule a: a rule with this name already exists",
    ];
    for want in expected {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in\n{}",
            errors.join("\n")
        );
    }
    assert_eq!(errors.len(), expected.len(), "{}", errors.join("\n"));
}

#[test]
fn a_namespace_outside_the_allowlist_is_a_warning_not_an_error() {
    let text = RUNBOOK.replace("namespace = \"vastai\"", "namespace = \"payments\"");
    let set = load(&[("vastai.toml", &text)]).unwrap();
    assert_eq!(set.warnings.len(), 2, "{:?}", set.warnings);
    assert!(set.warnings[0].contains("namespace \"payments\" is not in kubernetes.namespaces"));
}

#[test]
fn a_missing_or_empty_rules_directory_is_an_error_not_an_empty_set() {
    // Runbooks that silently went missing would leave every alert to the default rule.
    let errors = load_dir(&PathBuf::from("/nonexistent/rules"), &options()).unwrap_err();
    assert!(errors[0].message.contains("does not exist"), "{errors:?}");
    let dir = tempfile::tempdir().unwrap();
    let errors = load_dir(dir.path(), &options()).unwrap_err();
    assert!(errors[0].message.contains("no rule file"), "{errors:?}");
    std::fs::write(
        dir.path().join("actions.toml"),
        "[action.x]\nkind = \"exec\"\nargv = [\"/bin/true\"]\n",
    )
    .unwrap();
    let errors = load_dir(dir.path(), &options()).unwrap_err();
    assert!(errors[0].message.contains("holds no rule"), "{errors:?}");
}

#[test]
fn test_payload_files_are_read_only_for_nightshift_test() {
    // Runbooks copied without their test data still load for the daemon.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("r.toml"),
        "[[rule]]\nname = \"r\"\nseverity = \"P3\"\n\
         [[test]]\nname = \"t\"\npayload = \"payloads/missing.json\"\nexpect = {rule = \"r\"}\n",
    )
    .unwrap();
    let run = LoadOptions {
        tests: false,
        ..options()
    };
    let set = load_dir(dir.path(), &run).unwrap();
    assert_eq!(set.rules.len(), 1);
    let errors = load_dir(dir.path(), &options()).unwrap_err();
    assert!(
        errors[0].to_string().contains("payloads/missing.json"),
        "{errors:?}"
    );
}

#[test]
fn probe_names_are_local_to_their_file() {
    // Two runbooks both call their probe "s"; a rule reads its own file's.
    let first = r#"
[runbook]
name = "one"
[[rule]]
name = "one"
matchers = ['alertname="X"']
severity = "P3"
continue = true
probes = ["s"]
[[rule.branch]]
name = "status-page"
when = 'probe.s.indicator == "major"'
severity = "P1"
note = "{{ severity }} because {{ probe.s.indicator }}"
[probe.s]
kind = "statuspage"
url = "https://status.example.com/api/v2/status.json"
"#;
    let second = r#"
[runbook]
name = "two"
[[rule]]
name = "two"
matchers = ['alertname="X"']
severity = "P3"
probes = ["s"]
[[rule.branch]]
name = "query"
when = 'probe.s.value > 1.0'
[probe.s]
kind = "prometheus"
query = "up"
"#;
    let set = load(&[("a.toml", first), ("b.toml", second)]).unwrap();
    let input = alert(&[("alertname", "X")]);
    let classification = set.classify(&input.labels, &input.annotations);
    let keys: Vec<&str> = set
        .probes_for(&classification)
        .iter()
        .map(|d| d.key.as_str())
        .collect();
    assert_eq!(keys, ["one/s", "two/s"]);
    let mut probes = statuspage("major");
    let status = probes.remove("vastai/status").unwrap();
    probes.insert("one/s".to_owned(), status);
    let mut fields = crate::probes::sample_fields(crate::probes::ProbeKind::Prometheus);
    fields.insert("value".into(), 2.0.into());
    probes.insert("two/s".to_owned(), ProbeResult::success(fields));
    let decision = set.decide(&classification, &input, &probes);
    let branches: Vec<&str> = decision.rules.iter().map(|r| r.branch.as_str()).collect();
    assert_eq!(branches, ["status-page", "query"]);
    // The note is rendered with the severity its branch leads to.
    assert_eq!(decision.rules[0].note, "P1 because major");
    assert_eq!(decision.severity, Severity::P1);
    // Runbook names must be unique, since they qualify probe names.
    let errors = load(&[
        ("a.toml", first),
        (
            "c.toml",
            &first.replace(
                "name = \"one\"\n[[rule]]\nname = \"one\"",
                "name = \"one\"\n[[rule]]\nname = \"three\"",
            ),
        ),
    ])
    .unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("runbook name \"one\" is already used")),
        "{errors:?}"
    );
}

#[test]
fn a_condition_that_cannot_be_evaluated_is_said_so() {
    let text = r#"
[[rule]]
name = "team"
matchers = ['alertname="X"']
severity = "P3"
[[rule.branch]]
name = "gpu-team"
when = 'labels.team == "gpu"'
"#;
    let set = load(&[("t.toml", text)]).unwrap();
    let input = alert(&[("alertname", "X")]);
    let classification = set.classify(&input.labels, &input.annotations);
    let decision = set.decide(&classification, &input, &BTreeMap::new());
    assert_eq!(decision.branch, "none");
    assert!(
        decision
            .note
            .starts_with("could not evaluate gpu-team: error: "),
        "{decision:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Collectors

use crate::bundle::request::{CollectorRequest, RequestKind};
use std::time::Duration;

const COLLECTORS: &str = r#"
[runbook]
name = "vastai"

[[rule]]
name = "server-errors"
matchers = ['alertname="VastaiServerErrors"']
severity = "P2"
collect = ["errors", "value-at-start", "value-now", "logs", "events", "object", "status", "journal"]

[[rule]]
name = "team"
matchers = ['team="gpu"']
severity = "P3"
collect = ["logs", "logs", "errors"]

[collector.errors]
kind = "prometheus_range"
query = 'sum(rate(vastai_api_requests_total{namespace="{{ labels.namespace }}",code=~"5.."}[5m]))'
look_back = "2h"
step = "1m"

[collector.value-at-start]
kind = "prometheus_query"
query = "up"

[collector.value-now]
kind = "prometheus_query"
query = "up"
at = "now"
on_resolve = true

[collector.logs]
kind = "kubernetes_logs"
namespace = "{{ labels.namespace }}"
workload = "deployment/{{ labels.service }}"
containers = ["app"]
tail_lines = 100
since = "30m"
previous = false

[collector.events]
kind = "kubernetes_events"
namespace = "vastai"
selector = "app={{ labels.service }}"

[collector.object]
kind = "kubernetes_object"
namespace = "vastai"
workload = "deployment/{{ labels.service }}"
timeout = "10s"
max_bytes = 4096

[collector.status]
kind = "http"
url = "https://status.example.com/api/v2/{{ labels.service }}.json"
headers = { Accept = "application/json", X-Incident = "{{ incident_id }}" }

[collector.journal]
kind = "exec"
argv = ["/usr/bin/journalctl", "-u", "{{ labels.service }}", "--since=-2h"]
before_action = true
"#;

/// 2026-03-14T02:47:31.204Z
const STARTED: &str = "2026-03-14T02:47:31.204Z";
/// 2026-03-14T02:55:12Z
const NOW: i64 = 1_773_456_912_000;

fn storm_alert(starts_at: &str) -> AlertInput {
    AlertInput {
        labels: labels(&[
            ("alertname", "VastaiServerErrors"),
            ("namespace", "vastai"),
            ("service", "vastai-integration"),
        ]),
        status: "firing".to_owned(),
        starts_at: starts_at.to_owned(),
        incident_id: format!("f00d-{starts_at}"),
        ..AlertInput::default()
    }
}

fn plan(
    set: &RuleSet,
    input: &AlertInput,
    now: i64,
) -> Vec<Result<CollectorRequest, (String, String)>> {
    let classification = set.classify(&input.labels, &input.annotations);
    let decision = set.decide(&classification, input, &BTreeMap::new());
    set.collector_requests(&decision, input, now)
}

fn rendered(set: &RuleSet, input: &AlertInput, now: i64) -> BTreeMap<String, CollectorRequest> {
    plan(set, input, now)
        .into_iter()
        .map(|r| {
            let request = r.unwrap_or_else(|(name, error)| panic!("{name}: {error}"));
            (request.name.clone(), request)
        })
        .collect()
}

#[test]
fn collectors_of_every_kind_parse_with_their_defaults() {
    let set = load(&[("vastai.toml", COLLECTORS)]).unwrap();
    let file = &set.files[0];
    let kinds: Vec<(&str, &str, bool, bool)> = file
        .collectors
        .iter()
        .map(|(name, spec)| {
            let common = spec.common();
            (
                name.as_str(),
                spec.kind(),
                common.before_action,
                common.on_resolve,
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("errors", "prometheus_range", false, false),
            ("events", "kubernetes_events", true, false),
            ("journal", "exec", true, false),
            ("logs", "kubernetes_logs", true, false),
            ("object", "kubernetes_object", false, false),
            ("status", "http", false, false),
            ("value-at-start", "prometheus_query", false, false),
            ("value-now", "prometheus_query", false, true),
        ]
    );
    let object = file.collectors["object"].common();
    assert_eq!(
        (object.timeout, object.max_bytes),
        (Duration::from_secs(10), 4096)
    );
    let errors = file.collectors["errors"].common();
    assert_eq!(
        (errors.timeout, errors.max_bytes),
        (Duration::from_secs(30), 1_048_576)
    );
    assert_eq!(set.rules[0].collect.len(), 8);
}

#[test]
fn collectors_render_from_the_alert() {
    let set = load(&[("vastai.toml", COLLECTORS)]).unwrap();
    let input = storm_alert(STARTED);
    let requests = rendered(&set, &input, NOW);
    // Rule order, then `collect` order.
    let order: Vec<String> = plan(&set, &input, NOW)
        .into_iter()
        .map(|r| r.unwrap().name)
        .collect();
    assert_eq!(
        order,
        [
            "errors",
            "value-at-start",
            "value-now",
            "logs",
            "events",
            "object",
            "status",
            "journal"
        ]
    );
    let errors = &requests["errors"];
    assert_eq!(errors.rule, "server-errors");
    assert_eq!(
        errors.kind,
        RequestKind::PrometheusRange {
            query: r#"sum(rate(vastai_api_requests_total{namespace="vastai",code=~"5.."}[5m]))"#
                .to_owned(),
            // 00:47:00Z (02:47:31 - 2h, rounded down to the minute) to 02:55:00Z.
            start: 1_773_449_220_000,
            end: 1_773_456_900_000,
            step: Duration::from_secs(60),
        }
    );
    // at = "start" is the alert's start; at = "now" is now.
    assert_eq!(
        requests["value-at-start"].kind,
        RequestKind::PrometheusQuery {
            query: "up".into(),
            at: 1_773_456_451_204
        }
    );
    assert_eq!(
        requests["value-now"].kind,
        RequestKind::PrometheusQuery {
            query: "up".into(),
            at: NOW
        }
    );
    assert!(requests["value-now"].on_resolve);
    assert_eq!(
        requests["logs"].kind,
        RequestKind::KubernetesLogs {
            namespace: "vastai".into(),
            workload: Some("deployment/vastai-integration".into()),
            selector: None,
            containers: vec!["app".into()],
            tail_lines: Some(100),
            since: Some(Duration::from_secs(1800)),
            previous: false,
        }
    );
    assert!(requests["logs"].before_action);
    assert_eq!(
        requests["events"].kind,
        RequestKind::KubernetesEvents {
            namespace: "vastai".into(),
            workload: None,
            selector: Some("app=vastai-integration".into()),
        }
    );
    assert_eq!(
        requests["object"].kind,
        RequestKind::KubernetesObject {
            namespace: "vastai".into(),
            workload: "deployment/vastai-integration".into(),
        }
    );
    let RequestKind::Http { url, headers } = &requests["status"].kind else {
        panic!("{:?}", requests["status"]);
    };
    assert_eq!(
        url,
        "https://status.example.com/api/v2/vastai-integration.json"
    );
    assert_eq!(headers["X-Incident"], input.incident_id);
    let RequestKind::Exec { argv, env } = &requests["journal"].kind else {
        panic!("{:?}", requests["journal"]);
    };
    assert_eq!(
        argv,
        &[
            "/usr/bin/journalctl",
            "-u",
            "vastai-integration",
            "--since=-2h"
        ]
    );
    assert_eq!(
        env,
        &crate::act::actions::exec::incident_env(
            &input.incident_id,
            "server-errors",
            "P2",
            &input.labels
        )
    );
}

#[test]
fn a_storm_shares_one_window() {
    let set = load(&[("vastai.toml", COLLECTORS)]).unwrap();
    // Two alerts of a storm, started 20 s apart, their incidents opened a few seconds apart.
    let first = rendered(&set, &storm_alert("2026-03-14T02:47:31.204Z"), NOW);
    let second = rendered(&set, &storm_alert("2026-03-14T02:47:51.9Z"), NOW + 4_000);
    let window = |requests: &BTreeMap<String, CollectorRequest>| match &requests["errors"].kind {
        RequestKind::PrometheusRange { start, end, .. } => (*start, *end),
        other => panic!("{other:?}"),
    };
    assert_eq!(window(&first), window(&second));
    assert_eq!(first["errors"].share_key(), second["errors"].share_key());
    // Logs, events, the object and the command are the same request too; the exec
    // environment (which carries the incident id) does not take part.
    for name in ["logs", "events", "object", "journal"] {
        assert_eq!(first[name].share_key(), second[name].share_key(), "{name}");
    }
    // The status request carries the incident id in a header: not shared.
    assert_ne!(first["status"].share_key(), second["status"].share_key());
    // A minute later the window moves on.
    let later = rendered(&set, &storm_alert("2026-03-14T02:47:31.204Z"), NOW + 60_000);
    assert_ne!(first["errors"].share_key(), later["errors"].share_key());
}

#[test]
fn continued_rules_add_their_collectors_once_each() {
    let set = load(&[("vastai.toml", COLLECTORS)]).unwrap();
    let mut input = storm_alert(STARTED);
    input.labels.insert("team".into(), "gpu".into());
    // server-errors has no `continue`, so team never joins; make an alert only team matches.
    input.labels.insert("alertname".into(), "Other".into());
    let requests: Vec<(String, String)> = plan(&set, &input, NOW)
        .into_iter()
        .map(|r| {
            let r = r.unwrap();
            (r.rule, r.name)
        })
        .collect();
    assert_eq!(
        requests,
        [
            ("team".to_owned(), "logs".to_owned()),
            ("team".to_owned(), "errors".to_owned())
        ]
    );
    // The default rule collects nothing.
    let input = AlertInput {
        labels: labels(&[("alertname", "Nobody")]),
        starts_at: STARTED.to_owned(),
        ..AlertInput::default()
    };
    assert!(plan(&set, &input, NOW).is_empty());
}

#[test]
fn a_collector_that_cannot_render_is_reported_not_fatal() {
    let set = load(&[("vastai.toml", COLLECTORS)]).unwrap();
    let mut input = storm_alert("not a time");
    input.labels.insert("service".into(), "api;reboot".into());
    let plan = plan(&set, &input, NOW);
    assert_eq!(plan.len(), 8);
    let errors: BTreeMap<&str, &str> = plan
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|(name, error)| (name.as_str(), error.as_str()))
        .collect();
    assert!(
        errors["errors"].contains("not an RFC 3339 time"),
        "{errors:?}"
    );
    assert!(errors["value-at-start"].contains("not an RFC 3339 time"));
    assert!(
        errors["logs"].contains("workload name \"api;reboot\""),
        "{errors:?}"
    );
    assert!(
        errors["events"].contains("which no label selector has"),
        "{errors:?}"
    );
    assert!(!errors.contains_key("value-now"), "at = now needs no start");
    assert!(
        !errors.contains_key("status"),
        "the path is percent-encoded"
    );
}

#[test]
fn collector_load_errors_name_file_line_all_at_once() {
    let broken = r#"
[[rule]]
name = "a"
matchers = ['alertname="A"']
severity = "P3"
collect = ["logs", "missing"]

[collector.logs]
kind = "kubernetes_logs"
namespace = "vastai"
workload = "deployment/a"
selector = "app=a"

[collector.nothing]
kind = "kubernetes_events"
namespace = "vastai"

[collector.relative]
kind = "exec"
argv = ["journalctl", "-u", "x"]

[collector.templated]
kind = "exec"
argv = ["{{ labels.program }}"]

[collector.secret]
kind = "exec"
argv = ["/usr/bin/curl", "-H", "Authorization: {{ secret('token') }}"]

[collector.too-many-points]
kind = "prometheus_range"
query = "up"
look_back = "24h"
step = "5s"

[collector.slow]
kind = "prometheus_query"
query = "up"
timeout = "15m"

[collector.unknown-key]
kind = "http"
url = "https://status.example.com/"
method = "POST"

[collector.no-such-kind]
kind = "kubernetes_secret"
namespace = "vastai"

[collector."../escape"]
kind = "prometheus_query"
query = "up"

[collector.host]
kind = "http"
url = "https://{{ labels.host }}/status"
"#;
    let errors = load(&[("a.toml", broken)]).unwrap_err();
    let expected = [
        "a.toml:6: rule a: collector \"missing\" is not defined in this file ([collector.missing])",
        "a.toml:8: collector logs: give workload or selector, not both",
        "a.toml:14: collector nothing: needs workload",
        "a.toml:18: collector relative: argv[0] \"journalctl\" must be an absolute path",
        "a.toml:22: collector templated: argv[0], the program, must not be a template",
        "a.toml:26: collector secret: argv[2]: secret() is not allowed in collectors",
        "a.toml:30: collector too-many-points: look_back 1d / step 5s is 17280 points",
        "a.toml:36: collector slow: timeout 15m is over the limit of 10m",
        "a.toml:44: collector unknown-key: unknown field `method`",
        "a.toml:47: collector no-such-kind: unknown variant `kubernetes_secret`",
        "a.toml:50: collector ../escape: a collector name must be",
        "a.toml:54: collector host: url \"https://{{ labels.host }}/status\": the host must be written out",
    ];
    assert_eq!(errors.len(), expected.len(), "{}", errors.join("\n"));
    // In the order the file reads, line 8 before line 14 (not as text, "14" < "8").
    for (error, want) in errors.iter().zip(expected) {
        assert!(
            error.starts_with(want),
            "expected {want:?}, got {error:?} in\n{}",
            errors.join("\n")
        );
    }
}

#[test]
fn warnings_come_in_file_then_line_order() {
    // Found probes first, then actions, then collectors; written the other way round.
    let first = "[[rule]]\nname = \"a\"\nmatchers = ['alertname=\"A\"']\nseverity = \"P3\"\n\n\
                 [collector.events]\nkind = \"kubernetes_events\"\nnamespace = \"payments\"\n\
                 selector = \"app=a\"\n\n\
                 [action.restart]\nkind = \"kubernetes.rollout_restart\"\n\
                 namespace = \"payments\"\nworkload = \"deployment/x\"\n\n\
                 [probe.pods]\nkind = \"kubernetes\"\nnamespace = \"payments\"\n\
                 workload = \"deployment/x\"\n";
    let second = "\n[probe.pods]\nkind = \"kubernetes\"\nnamespace = \"billing\"\n\
                  workload = \"deployment/y\"\n";
    let set = load(&[("a.toml", first), ("b.toml", second)]).unwrap();
    let places: Vec<String> = set
        .warnings
        .iter()
        .map(|warning| {
            let (path, rest) = warning.split_once(':').unwrap();
            let file = std::path::Path::new(path).file_name().unwrap();
            let (line, rest) = rest.split_once(": ").unwrap();
            let context = rest.split(": ").next().unwrap();
            format!("{}:{line}: {context}", file.to_string_lossy())
        })
        .collect();
    assert_eq!(
        places,
        [
            "a.toml:6: collector events",
            "a.toml:11: action restart",
            "a.toml:16: probe pods",
            "b.toml:2: probe pods",
        ],
        "{:#?}",
        set.warnings
    );
}

#[test]
fn a_collector_namespace_outside_the_allowlist_is_a_warning() {
    let text = COLLECTORS.replace("namespace = \"vastai\"", "namespace = \"payments\"");
    let set = load(&[("vastai.toml", &text)]).unwrap();
    assert_eq!(set.warnings.len(), 2, "{:?}", set.warnings);
    assert!(set.warnings[0].contains("collector events: namespace \"payments\""));
}

/// The shipped Vast.ai runbook, on the captured 5xx payload: the bundle holds the 5xx rate
/// around the alert's start, the integration's logs and events (before any action), the
/// status page JSON and the health endpoint.
#[test]
fn the_vastai_5xx_rule_collects_the_evidence() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let set = load_dir(&root.join("rules"), &options()).unwrap();
    let body = std::fs::read(root.join("rules/payloads/vastai-server-errors.json")).unwrap();
    let notification = crate::ingest::webhook::parse(&body).unwrap();
    let alert = notification.alerts.into_iter().next().unwrap();
    let input = AlertInput {
        incident_id: crate::episodes::reconcile::episode_id(&alert.fingerprint, alert.starts_at),
        status: alert.status.as_str().to_owned(),
        starts_at: crate::episodes::reconcile::canonical_time(alert.starts_at),
        fingerprint: alert.fingerprint,
        generator_url: alert.generator_url,
        labels: alert.labels,
        annotations: alert.annotations,
        age_seconds: 0,
    };
    let classification = set.classify(&input.labels, &input.annotations);
    let decision = set.decide(&classification, &input, &statuspage("none"));
    assert_eq!(decision.rules[0].rule, "vastai-server-errors");
    assert_eq!(decision.branch, "our-integration");
    let plan = set.collector_requests(&decision, &input, NOW);
    let requests: BTreeMap<String, CollectorRequest> = plan
        .into_iter()
        .map(|r| {
            let request = r.unwrap_or_else(|(name, error)| panic!("{name}: {error}"));
            (request.name.clone(), request)
        })
        .collect();
    let names: Vec<&str> = requests.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "events",
            "health",
            "logs",
            "requests-by-code",
            "server-error-ratio",
            "status-page"
        ]
    );
    let RequestKind::PrometheusRange {
        query,
        start,
        end,
        step,
    } = &requests["server-error-ratio"].kind
    else {
        panic!("{:?}", requests["server-error-ratio"]);
    };
    assert!(
        query.contains(r#"vastai_api_requests_total{job="vastai-integration",code=~"5.."}"#),
        "{query}"
    );
    assert_eq!(*step, Duration::from_secs(60));
    // Two hours before the alert's start (02:47:31), rounded to the minute, to now.
    assert_eq!(collect::rfc3339(*start), "2026-03-14T00:47:00Z");
    assert_eq!(collect::rfc3339(*end), "2026-03-14T02:55:00Z");
    let logs = &requests["logs"];
    assert!(logs.before_action);
    assert!(matches!(
        &logs.kind,
        RequestKind::KubernetesLogs { namespace, workload: Some(workload), previous: true, .. }
            if namespace == "vastai" && workload == "deployment/vastai-integration"
    ));
    let events = &requests["events"];
    assert!(events.before_action);
    assert_eq!(
        events.kind,
        RequestKind::KubernetesEvents {
            namespace: "vastai".into(),
            workload: Some("deployment/vastai-integration".into()),
            selector: None,
        }
    );
    // The status page the rule's probe reads, and again on resolve.
    let status = &requests["status-page"];
    assert!(status.on_resolve);
    assert!(matches!(
        &status.kind,
        RequestKind::Http { url, .. } if url == "https://status.vast.ai/api/v2/status.json"
    ));
    let probe_url = match &set
        .files
        .iter()
        .find(|f| f.runbook == "vastai")
        .unwrap()
        .probes["status"]
        .request
    {
        crate::probes::ProbeRequest::Statuspage { url } => url.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        probe_url, "https://status.vast.ai/api/v2/status.json",
        "the collector reads what the probe reads"
    );
    assert!(matches!(
        &requests["health"].kind,
        RequestKind::Http { url, .. } if url.ends_with("/healthz")
    ));
    // Every Vast.ai rule collects something, and everything it names renders.
    for rule in set.rules.iter().filter(|r| r.name.starts_with("vastai-")) {
        assert!(!rule.collect.is_empty(), "{}", rule.name);
    }
}
