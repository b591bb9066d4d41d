//! Rule tests: `[[test]]` cases inside rule files. Alert labels and annotations (or a whole
//! webhook payload) and probe results go in; the expected rule, severity, branch and actions
//! come out. `nightshift test` runs them with promtool-style output.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value as Json;

use super::{AlertInput, ProbeDef, RuleSet, Severity};
use crate::ingest::webhook::{self, LabelSet};
use crate::probes::{self, ProbeResult};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTest {
    name: String,
    #[serde(default)]
    labels: LabelSet,
    #[serde(default)]
    annotations: LabelSet,
    /// A webhook payload file (relative to the rule file); every alert in it is tested.
    payload: Option<String>,
    /// Probe name → result fields (`ok` defaults to true). A probe the rule reads but the
    /// test does not give counts as failed.
    #[serde(default)]
    probes: BTreeMap<String, toml::Value>,
    expect: RawExpect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    /// The first matched rule, or "default" for the built-in default rule.
    rule: Option<String>,
    severity: Option<String>,
    branch: Option<String>,
    actions: Option<Vec<String>>,
    note_contains: Option<String>,
    page: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TestCase {
    pub name: String,
    pub file: PathBuf,
    pub line: usize,
    pub alerts: Vec<AlertInput>,
    pub probes: BTreeMap<String, ProbeResult>,
    pub expect_rule: Option<String>,
    pub expect_severity: Option<Severity>,
    pub expect_branch: Option<String>,
    pub expect_actions: Option<Vec<String>>,
    pub expect_note: Option<String>,
    pub expect_page: Option<String>,
}

pub(crate) fn compile(
    raw: RawTest,
    file: &Path,
    line: usize,
    probes: &BTreeMap<String, ProbeDef>,
    runbook: &str,
) -> Result<TestCase, String> {
    let context = format!("test {:?}", raw.name);
    let alerts = match &raw.payload {
        None => vec![AlertInput {
            fingerprint: webhook::fingerprint(&raw.labels),
            incident_id: "test".to_owned(),
            labels: raw.labels,
            annotations: raw.annotations,
            status: "firing".to_owned(),
            ..AlertInput::default()
        }],
        Some(relative) => {
            let path = file.parent().unwrap_or(Path::new(".")).join(relative);
            let body = std::fs::read(&path)
                .map_err(|e| format!("{context}: payload {}: {e}", path.display()))?;
            let notification = webhook::parse(&body)
                .map_err(|e| format!("{context}: payload {}: {e}", path.display()))?;
            notification
                .alerts
                .into_iter()
                .map(|alert| AlertInput {
                    labels: alert.labels,
                    annotations: alert.annotations,
                    status: alert.status.as_str().to_owned(),
                    starts_at: alert.starts_at.to_rfc3339(),
                    generator_url: alert.generator_url,
                    incident_id: crate::episodes::reconcile::episode_id(
                        &alert.fingerprint,
                        alert.starts_at,
                    ),
                    fingerprint: alert.fingerprint,
                    age_seconds: 0,
                })
                .collect()
        }
    };
    let mut results = BTreeMap::new();
    for (name, value) in raw.probes {
        let definition = probes
            .get(&name)
            .ok_or_else(|| format!("{context}: probe {name:?} is not defined in this file"))?;
        let given = serde_json::to_value(&value).map_err(|e| format!("{context}: {e}"))?;
        let result = result_from(&definition.request, given)
            .map_err(|error| format!("{context}: probe {name}: {error}"))?;
        results.insert(format!("{runbook}/{name}"), result);
    }
    let severity = match raw.expect.severity.as_deref() {
        None => None,
        Some(text) => Some(
            Severity::parse(text)
                .ok_or_else(|| format!("{context}: expect.severity {text:?} is not P1-P4"))?,
        ),
    };
    Ok(TestCase {
        name: raw.name,
        file: file.to_path_buf(),
        line,
        alerts,
        probes: results,
        expect_rule: raw.expect.rule,
        expect_severity: severity,
        expect_branch: raw.expect.branch,
        expect_actions: raw.expect.actions,
        expect_note: raw.expect.note_contains,
        expect_page: raw.expect.page,
    })
}

/// A probe result from a test's partial description over the kind's sample.
pub fn result_from(request: &probes::ProbeRequest, given: Json) -> Result<ProbeResult, String> {
    let mut result = probes::sample_for(request);
    let Json::Object(fields) = given else {
        return Err(
            "a probe result must be a table such as { ok = true, indicator = \"major\" }"
                .to_owned(),
        );
    };
    for (key, value) in fields {
        match (key.as_str(), value) {
            ("ok", Json::Bool(ok)) => result.ok = ok,
            ("error", Json::String(error)) => result.error = error,
            ("ok" | "error", other) => return Err(format!("{key} has the wrong type: {other}")),
            (_, value) => {
                let Some(sample) = result.fields.get(&key) else {
                    return Err(format!(
                        "a {} probe has no field {key:?}",
                        request.kind().as_str()
                    ));
                };
                if !same_type(sample, &value) {
                    return Err(format!(
                        "field {key:?} should be {} like {sample}, got {value}",
                        type_name(sample)
                    ));
                }
                result.fields.insert(key, value);
            }
        }
    }
    if !result.ok && result.error.is_empty() {
        result.error = "failed (in the test)".to_owned();
    }
    Ok(result)
}

fn type_name(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a table",
    }
}

/// Whether a given value has the sample's type (numbers are numbers, integer or not).
fn same_type(sample: &Json, value: &Json) -> bool {
    std::mem::discriminant(sample) == std::mem::discriminant(value)
}

/// The outcome of one file's tests.
#[derive(Debug, Default)]
pub struct FileReport {
    pub file: PathBuf,
    pub passed: usize,
    pub failures: Vec<String>,
}

/// Run every test case of every file of `set`.
pub fn run(set: &RuleSet) -> Vec<FileReport> {
    set.files
        .iter()
        .map(|file| {
            let mut report = FileReport {
                file: file.path.clone(),
                ..FileReport::default()
            };
            for case in &file.tests {
                let problems = check_case(set, case);
                if problems.is_empty() {
                    report.passed += 1;
                } else {
                    report.failures.push(format!(
                        "{}:{}: test {:?}: {}",
                        case.file.display(),
                        case.line,
                        case.name,
                        problems.join("; ")
                    ));
                }
            }
            report
        })
        .collect()
}

fn check_case(set: &RuleSet, case: &TestCase) -> Vec<String> {
    let mut problems = Vec::new();
    for alert in &case.alerts {
        let classification = set.classify(&alert.labels, &alert.annotations);
        // Probes the matched rules read but the test does not give count as failed.
        let mut probes = case.probes.clone();
        for definition in set.probes_for(&classification) {
            probes.entry(definition.key.clone()).or_insert_with(|| {
                ProbeResult::failure(definition.request.kind(), "no result given in the test")
            });
        }
        let decision = set.decide(&classification, alert, &probes);
        let rule = classification
            .matched
            .first()
            .map_or("default", |m| m.rule.as_str());
        let alertname = alert.labels.get("alertname").map_or("", String::as_str);
        let mut expect = |what: &str, expected: &str, got: &str| {
            if expected != got {
                problems.push(format!(
                    "alert {alertname:?}: expected {what} {expected:?}, got {got:?}"
                ));
            }
        };
        if let Some(expected) = &case.expect_rule {
            expect("rule", expected, rule);
        }
        if let Some(expected) = case.expect_severity {
            expect("severity", expected.as_str(), decision.severity.as_str());
        }
        if let Some(expected) = &case.expect_branch {
            expect("branch", expected, &decision.branch);
        }
        if let Some(expected) = &case.expect_actions {
            let got: Vec<&str> = decision.actions.iter().map(|a| a.name.as_str()).collect();
            expect("actions", &expected.join(","), &got.join(","));
        }
        if let Some(expected) = &case.expect_page {
            expect("page policy", expected, &decision.page.policy);
        }
        if let Some(expected) = &case.expect_note
            && !decision.note.contains(expected.as_str())
        {
            problems.push(format!(
                "alert {alertname:?}: expected the note to contain {expected:?}, got {:?}",
                decision.note
            ));
        }
    }
    problems
}

/// promtool-style text for the reports; the second value is whether everything passed.
pub fn render(reports: &[FileReport]) -> (String, bool) {
    let mut out = String::new();
    let mut all_passed = true;
    for report in reports {
        let _ = writeln!(out, "Unit Testing: {}", report.file.display());
        if report.failures.is_empty() {
            let _ = writeln!(out, "  SUCCESS ({} tests)\n", report.passed);
        } else {
            all_passed = false;
            let _ = writeln!(
                out,
                "  FAILED: {} of {} tests",
                report.failures.len(),
                report.failures.len() + report.passed
            );
            for failure in &report.failures {
                let _ = writeln!(out, "    {failure}");
            }
            out.push('\n');
        }
    }
    (out, all_passed)
}
