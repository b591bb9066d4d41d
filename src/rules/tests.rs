//! Rule sets from text: classification, decisions, load errors.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;
use crate::probes::ProbeResult;

fn options() -> LoadOptions {
    LoadOptions {
        namespaces: vec!["vastai".to_owned()],
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
fn a_missing_directory_is_the_default_rule_only() {
    let set = load_dir(&PathBuf::from("/nonexistent/rules"), &options()).unwrap();
    assert!(set.rules.is_empty());
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
