//! rules: classify every alert into P1–P4 and walk the runbook's decision tree.
//!
//! A rule set is compiled once from `rules/*.toml` (see `load`): matchers, regexes, CEL
//! conditions and templates are all checked at load. At runtime [`RuleSet::classify`] picks the
//! matching rules (pure, no I/O, cannot fail), the worker runs the probes those rules name,
//! and [`RuleSet::decide`] walks each rule's branches against the probe results.
//!
//! Invariant: if any probe a rule reads failed, none of its ordinary branches is taken; its
//! `on_probe_failure` branch is. Confirm, then act.

pub mod action;
pub mod collect;
pub mod expr;
pub mod load;
pub mod matcher;
pub mod template;
pub mod testing;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value as Json, json};

use crate::config::{DefaultRuleConfig, SeveritiesConfig};
use crate::ingest::webhook::LabelSet;
use crate::probes::{ProbeRequest, ProbeResult};
use action::ActionSpec;
use collect::CollectorSpec;
use expr::{Condition, Variables};
use matcher::Matcher;
use template::Template;

pub use crate::config::{is_rfc1123_label, is_rfc1123_name};
pub use load::{LoadError, LoadOptions, load_dir, load_files};

/// P1 (complete outage) to P4 (no user impact). P1 is the highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Severity {
    P1,
    P2,
    P3,
    P4,
}

impl Severity {
    pub fn parse(text: &str) -> Option<Severity> {
        Some(match text {
            "P1" => Severity::P1,
            "P2" => Severity::P2,
            "P3" => Severity::P3,
            "P4" => Severity::P4,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::P1 => "P1",
            Severity::P2 => "P2",
            Severity::P3 => "P3",
            Severity::P4 => "P4",
        }
    }

    pub fn level(self) -> u8 {
        self as u8 + 1
    }

    /// The more urgent of two.
    pub fn highest(self, other: Severity) -> Severity {
        self.min(other)
    }
}

/// A probe as declared in a rule file, with templated targets.
#[derive(Debug, Clone)]
pub struct ProbeDef {
    pub name: String,
    /// `runbook/name`: probe names are local to their file, so results are keyed by this.
    pub key: String,
    pub line: usize,
    /// The request with templates still in it; rendered per incident.
    pub request: ProbeRequest,
    pub timeout: Duration,
    pub cache: Duration,
}

impl ProbeDef {
    /// Render every templated string of the request with the incident's context. URLs are
    /// rendered as `http` actions' are ([`crate::act::actions::http::render_url`]): the origin is
    /// the one written in the rule, every value printed into them is percent-encoded, and a
    /// `.` or `..` path segment is refused.
    pub fn render(&self, context: &impl Serialize) -> Result<ProbeRequest, String> {
        let render = |source: &str| {
            Template {
                source: source.to_owned(),
            }
            .render(context)
        };
        let render_url = |source: &str| {
            crate::act::actions::http::render_url(source, context).map(|url| url.to_string())
        };
        Ok(match &self.request {
            ProbeRequest::Statuspage { url } => ProbeRequest::Statuspage {
                url: render_url(url)?,
            },
            ProbeRequest::Http {
                method,
                url,
                headers,
                capture_headers,
                json_fields,
            } => ProbeRequest::Http {
                method: method.clone(),
                url: render_url(url)?,
                headers: headers
                    .iter()
                    .map(|(name, value)| Ok((name.clone(), render(value)?)))
                    .collect::<Result<_, String>>()?,
                capture_headers: capture_headers.clone(),
                json_fields: json_fields.clone(),
            },
            ProbeRequest::Prometheus { query, urls } => ProbeRequest::Prometheus {
                query: render(query)?,
                urls: urls.clone(),
            },
            ProbeRequest::Kubernetes {
                namespace,
                workload,
                object,
            } => ProbeRequest::Kubernetes {
                namespace: render(namespace)?,
                workload: workload.as_deref().map(render).transpose()?,
                object: object.as_deref().map(render).transpose()?,
            },
        })
    }
}

/// One branch of a rule's decision tree.
#[derive(Debug)]
pub struct Branch {
    pub name: String,
    pub line: usize,
    /// `None` for `otherwise` (and for the probe-failure branch).
    pub when: Option<Condition>,
    pub actions: Vec<String>,
    pub severity: Option<Severity>,
    pub note: Option<Template>,
}

#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub file: PathBuf,
    pub line: usize,
    pub description: String,
    pub matchers: Vec<Matcher>,
    pub annotation_matchers: Vec<Matcher>,
    pub severity: Severity,
    pub continue_matching: bool,
    pub probes: Vec<String>,
    pub summary: Option<Template>,
    pub reevaluate_every: Duration,
    /// The mitigation stage runs this rule's actions dry while others enforce.
    pub shadow: bool,
    pub branches: Vec<Branch>,
    pub on_probe_failure: Branch,
    /// The `[collector.NAME]`s of its file that go into the incident's bundle, in order.
    pub collect: Vec<String>,
    /// Index of the rule's file in [`RuleSet::files`].
    pub file_index: usize,
}

/// A rule file: a runbook, its probes, actions, collectors and tests.
#[derive(Debug)]
pub struct RuleFile {
    pub path: PathBuf,
    pub runbook: String,
    pub probes: BTreeMap<String, ProbeDef>,
    pub actions: BTreeMap<String, ActionSpec>,
    pub collectors: BTreeMap<String, CollectorSpec>,
    pub tests: Vec<testing::TestCase>,
}

/// The compiled rules, ready to classify.
#[derive(Debug)]
pub struct RuleSet {
    pub files: Vec<RuleFile>,
    pub rules: Vec<Rule>,
    pub default_rule: DefaultRuleConfig,
    pub severities: SeveritiesConfig,
    /// Where the set was loaded from (the rules directory or the last-good copy).
    pub source: PathBuf,
    /// Things that load but will not work as written (a namespace outside the allowlist),
    /// as `file:line: context: message`, in file then line order.
    pub warnings: Vec<String>,
    /// Rules with an `alertname="X"` matcher, by X, and the rules without one; both in rule
    /// order. Classification only looks at the rules an alert's name can reach.
    by_alertname: std::collections::HashMap<String, Vec<usize>>,
    without_alertname: Vec<usize>,
}

/// Why a matcher matched: the matcher and the value it saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatcherEvidence {
    pub matcher: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatchedRule {
    #[serde(skip)]
    pub index: usize,
    pub rule: String,
    pub file: String,
    pub severity: Severity,
    pub evidence: Vec<MatcherEvidence>,
}

/// What classification found; pure function of the alert and the rule set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classification {
    /// The matched rules in order: the first, then any reached through `continue`.
    pub matched: Vec<MatchedRule>,
    pub severity: Severity,
    /// How the severity was chosen, in words.
    pub reason: String,
}

/// One alert as rules see it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AlertInput {
    pub labels: LabelSet,
    pub annotations: LabelSet,
    pub status: String,
    pub fingerprint: String,
    pub starts_at: String,
    pub generator_url: String,
    /// Seconds the alert has been firing when the decision is made.
    pub age_seconds: i64,
    pub incident_id: String,
}

impl AlertInput {
    fn alert_json(&self) -> Map<String, Json> {
        let value = json!({
            "status": self.status,
            "fingerprint": self.fingerprint,
            "starts_at": self.starts_at,
            "generator_url": self.generator_url,
            "age_seconds": self.age_seconds,
            "incident_id": self.incident_id,
        });
        match value {
            Json::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn label_json(labels: &LabelSet) -> Map<String, Json> {
        labels
            .iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect()
    }

    /// CEL variables for this alert and these probe results.
    pub fn variables(&self, probes: &BTreeMap<String, ProbeResult>) -> Variables {
        Variables {
            labels: Self::label_json(&self.labels),
            annotations: Self::label_json(&self.annotations),
            alert: self.alert_json(),
            probe: probes
                .iter()
                .map(|(name, result)| (name.clone(), result.to_value()))
                .collect(),
        }
    }

    /// The template context: the CEL variables plus rule, severity and incident id.
    pub fn template_context(
        &self,
        probes: &BTreeMap<String, ProbeResult>,
        rule: &str,
        severity: Severity,
    ) -> Json {
        let variables = self.variables(probes);
        json!({
            "labels": variables.labels,
            "annotations": variables.annotations,
            "alert": variables.alert,
            "probe": variables.probe,
            "rule": rule,
            "severity": severity.as_str(),
            "incident_id": self.incident_id,
        })
    }
}

/// How one branch condition came out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BranchEvaluation {
    pub branch: String,
    pub when: String,
    /// `true`, `false`, or the evaluation error.
    pub result: Json,
}

/// An action a decision chose, with its arguments rendered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChosenAction {
    pub name: String,
    pub rule: String,
    pub kind: String,
    pub rendered: Json,
}

/// The decision for one matched rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleDecision {
    pub rule: String,
    pub branch: String,
    /// `when`, `otherwise`, `on_probe_failure`, `rule` (no branches), or `none`.
    pub branch_kind: String,
    pub evaluations: Vec<BranchEvaluation>,
    pub failed_probes: Vec<String>,
    pub actions: Vec<String>,
    pub severity_override: Option<Severity>,
    pub note: String,
}

/// What paging the decision implies (carried out by the paging stage).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PagePlan {
    pub severity: Severity,
    pub meaning: String,
    pub respond_within: String,
    pub pagerduty_severity: String,
    pub policy: String,
}

/// Everything decided about an incident at one moment; stored, shown and explained.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub classification: Classification,
    pub probes: BTreeMap<String, ProbeResult>,
    pub rules: Vec<RuleDecision>,
    pub severity: Severity,
    pub summary: String,
    pub note: String,
    pub actions: Vec<ChosenAction>,
    pub page: PagePlan,
    /// The first rule's branch; what a re-evaluation compares.
    pub branch: String,
}

impl RuleSet {
    /// A rule set with only the built-in default rule.
    pub fn default_only(default_rule: DefaultRuleConfig, severities: SeveritiesConfig) -> RuleSet {
        RuleSet {
            files: Vec::new(),
            rules: Vec::new(),
            default_rule,
            severities,
            source: PathBuf::from("<built-in default rule>"),
            warnings: Vec::new(),
            by_alertname: std::collections::HashMap::new(),
            without_alertname: Vec::new(),
        }
    }

    /// Build the alertname index; call after the rules change.
    pub(crate) fn index(&mut self) {
        self.by_alertname.clear();
        self.without_alertname.clear();
        for (index, rule) in self.rules.iter().enumerate() {
            let name = rule
                .matchers
                .iter()
                .find(|m| m.name == "alertname" && m.kind == matcher::MatchType::Equal);
            match name {
                Some(matcher) => self
                    .by_alertname
                    .entry(matcher.value.clone())
                    .or_default()
                    .push(index),
                None => self.without_alertname.push(index),
            }
        }
    }

    /// The rules that can match an alert named `alertname`, in rule order.
    fn candidates(&self, alertname: &str) -> impl Iterator<Item = usize> + '_ {
        let named = self
            .by_alertname
            .get(alertname)
            .map_or(&[][..], Vec::as_slice);
        let mut named = named.iter().copied().peekable();
        let mut others = self.without_alertname.iter().copied().peekable();
        std::iter::from_fn(move || match (named.peek(), others.peek()) {
            (Some(&a), Some(&b)) if a < b => named.next(),
            (Some(_), Some(_)) | (None, Some(_)) => others.next(),
            (Some(_), None) => named.next(),
            (None, None) => None,
        })
    }

    pub fn file_of(&self, rule: &Rule) -> &RuleFile {
        &self.files[rule.file_index]
    }

    /// Which rules match, and the severity: first match wins, `continue` lets later rules
    /// join; the severity is the highest of them. Nothing matched → the default rule.
    pub fn classify(&self, labels: &LabelSet, annotations: &LabelSet) -> Classification {
        let mut matched: Vec<MatchedRule> = Vec::new();
        let alertname = labels.get("alertname").map_or("", String::as_str);
        for index in self.candidates(alertname) {
            let rule = &self.rules[index];
            let label_match = rule.matchers.iter().all(|m| m.matches(labels));
            if !label_match
                || !rule
                    .annotation_matchers
                    .iter()
                    .all(|m| m.matches(annotations))
            {
                continue;
            }
            let evidence = rule
                .matchers
                .iter()
                .map(|m| (m, labels))
                .chain(rule.annotation_matchers.iter().map(|m| (m, annotations)))
                .map(|(m, set)| MatcherEvidence {
                    matcher: m.to_string(),
                    value: set.get(&m.name).cloned().unwrap_or_default(),
                })
                .collect();
            matched.push(MatchedRule {
                index,
                rule: rule.name.clone(),
                file: rule.file.display().to_string(),
                severity: rule.severity,
                evidence,
            });
            if !rule.continue_matching {
                break;
            }
        }
        if let Some(severity) = matched.iter().map(|m| m.severity).min() {
            let reason = if matched.len() == 1 {
                format!("rule {} says {}", matched[0].rule, severity.as_str())
            } else {
                format!(
                    "highest of the matched rules ({})",
                    matched
                        .iter()
                        .map(|m| format!("{} {}", m.rule, m.severity.as_str()))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Classification {
                matched,
                severity,
                reason,
            };
        }
        let label = &self.default_rule.severity_label;
        let value = labels.get(label).map(String::as_str).unwrap_or("");
        let mapped = self
            .default_rule
            .map
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(value))
            .and_then(|(_, severity)| Severity::parse(severity));
        let fallback = Severity::parse(&self.default_rule.fallback).unwrap_or(Severity::P3);
        let (severity, reason) = match mapped {
            Some(severity) => (
                severity,
                format!(
                    "no rule matched; default rule maps {label}={value:?} to {}",
                    severity.as_str()
                ),
            ),
            None => (
                fallback,
                format!(
                    "no rule matched; {label}={value:?} is not in the default rule's map, so {}",
                    fallback.as_str()
                ),
            ),
        };
        Classification {
            matched: Vec::new(),
            severity,
            reason,
        }
    }

    /// The probes the matched rules need, by name, with their definitions.
    pub fn probes_for<'a>(&'a self, classification: &Classification) -> Vec<&'a ProbeDef> {
        let mut wanted: Vec<&ProbeDef> = Vec::new();
        for matched in &classification.matched {
            let rule = &self.rules[matched.index];
            for name in &rule.probes {
                if let Some(definition) = self.file_of(rule).probes.get(name)
                    && !wanted.iter().any(|d| d.key == definition.key)
                {
                    wanted.push(definition);
                }
            }
        }
        wanted
    }

    /// The template context an action of rule `rule_name` is rendered with.
    pub fn action_context(
        &self,
        rule_name: &str,
        alert: &AlertInput,
        probes: &BTreeMap<String, ProbeResult>,
        severity: Severity,
    ) -> Json {
        let local = self
            .rules
            .iter()
            .find(|r| r.name == rule_name)
            .map_or_else(BTreeMap::new, |rule| self.local_probes(rule, probes));
        alert.template_context(&local, rule_name, severity)
    }

    /// The bundle plan of a decision: the collectors of every matched rule (the first and
    /// those reached through `continue`), in rule order and then `collect` order, each once
    /// per (rule, name), rendered with the context the rule's actions get. One that cannot be
    /// rendered is `Err((name, message))`: reported in the bundle, never fatal. `now` is unix
    /// milliseconds; `alert.starts_at` is RFC 3339.
    pub fn collector_requests(
        &self,
        decision: &Decision,
        alert: &AlertInput,
        now: crate::clock::Millis,
    ) -> Vec<Result<crate::bundle::request::CollectorRequest, (String, String)>> {
        let mut seen = std::collections::HashSet::new();
        let mut requests = Vec::new();
        for matched in &decision.classification.matched {
            // The decision may come from an earlier rule set: find the rule by name.
            let rule = match self.rules.get(matched.index) {
                Some(rule) if rule.name == matched.rule => rule,
                _ => match self.rules.iter().find(|r| r.name == matched.rule) {
                    Some(rule) => rule,
                    None => continue,
                },
            };
            if rule.collect.is_empty() {
                continue;
            }
            let file = self.file_of(rule);
            let context = alert.template_context(
                &self.local_probes(rule, &decision.probes),
                &rule.name,
                decision.severity,
            );
            let input = collect::RenderInput {
                context: &context,
                alert,
                rule: &rule.name,
                severity: decision.severity,
                now,
            };
            for name in &rule.collect {
                if !seen.insert((rule.name.as_str(), name.as_str())) {
                    continue;
                }
                let rendered = match file.collectors.get(name) {
                    Some(spec) => spec.render(name, &input),
                    None => Err(format!(
                        "collector {name:?} is not defined in {}",
                        file.path.display()
                    )),
                };
                requests.push(rendered.map_err(|error| (name.clone(), error)));
            }
        }
        requests
    }

    /// The results a rule sees as `probe.<name>`: those of its own file's probes.
    fn local_probes(
        &self,
        rule: &Rule,
        probes: &BTreeMap<String, ProbeResult>,
    ) -> BTreeMap<String, ProbeResult> {
        let prefix = format!("{}/", self.file_of(rule).runbook);
        probes
            .iter()
            .filter_map(|(key, result)| {
                key.strip_prefix(&prefix)
                    .map(|name| (name.to_owned(), result.clone()))
            })
            .collect()
    }

    /// Walk each matched rule's branches against the probe results (keyed `runbook/name`).
    /// Pure.
    pub fn decide(
        &self,
        classification: &Classification,
        alert: &AlertInput,
        probes: &BTreeMap<String, ProbeResult>,
    ) -> Decision {
        let mut severity = classification.severity;
        let mut rules = Vec::new();
        let mut actions = Vec::new();
        let mut notes = Vec::new();
        for matched in &classification.matched {
            let rule = &self.rules[matched.index];
            let local = self.local_probes(rule, probes);
            let variables = alert.variables(&local);
            let decision =
                self.decide_rule(rule, alert, &variables, &local, classification.severity);
            if let Some(override_severity) = decision.severity_override
                && rules.is_empty()
            {
                // The first rule's chosen branch may re-grade the incident; a continued rule
                // can only raise it.
                severity = override_severity;
            } else if let Some(override_severity) = decision.severity_override {
                severity = severity.highest(override_severity);
            }
            let file = self.file_of(rule);
            let context = alert.template_context(&local, &rule.name, severity);
            for name in &decision.actions {
                if let Some(spec) = file.actions.get(name) {
                    actions.push(ChosenAction {
                        name: name.clone(),
                        rule: rule.name.clone(),
                        kind: spec.kind().to_owned(),
                        rendered: spec.render(&context),
                    });
                }
            }
            if !decision.note.is_empty() {
                notes.push(decision.note.clone());
            }
            rules.push(decision);
        }
        let first_rule = classification.matched.first().map(|m| &self.rules[m.index]);
        let rule_name = first_rule.map_or("default", |rule| rule.name.as_str());
        let local = first_rule.map_or_else(BTreeMap::new, |rule| self.local_probes(rule, probes));
        let context = alert.template_context(&local, rule_name, severity);
        let summary = first_rule
            .and_then(|rule| rule.summary.as_ref())
            .map(|template| {
                template
                    .render(&context)
                    .unwrap_or_else(|e| format!("<{e}>"))
            })
            .unwrap_or_else(|| default_summary(alert));
        let settings = self.severities.get(severity.level());
        let page = PagePlan {
            severity,
            meaning: settings.meaning.clone(),
            respond_within: crate::duration::format(settings.respond_within),
            pagerduty_severity: settings.pagerduty_severity.as_str().to_owned(),
            // P1 is always immediate whatever the configuration says.
            policy: if severity == Severity::P1 {
                "immediate".to_owned()
            } else {
                settings.paging.as_str().to_owned()
            },
        };
        let branch = rules
            .first()
            .map_or_else(|| "default".to_owned(), |r| r.branch.clone());
        Decision {
            classification: classification.clone(),
            probes: probes.clone(),
            rules,
            severity,
            summary,
            note: notes.join("; "),
            actions,
            page,
            branch,
        }
    }

    fn decide_rule(
        &self,
        rule: &Rule,
        alert: &AlertInput,
        variables: &Variables,
        probes: &BTreeMap<String, ProbeResult>,
        severity: Severity,
    ) -> RuleDecision {
        // A note is rendered with the severity its branch leads to.
        let render_note = |branch: &Branch| {
            let context =
                alert.template_context(probes, &rule.name, branch.severity.unwrap_or(severity));
            branch
                .note
                .as_ref()
                .map(|t| t.render(&context).unwrap_or_else(|e| format!("<{e}>")))
                .unwrap_or_default()
        };
        let failed: Vec<String> = rule
            .probes
            .iter()
            .filter(|name| probes.get(*name).is_none_or(|result| !result.ok))
            .cloned()
            .collect();
        if !failed.is_empty() {
            let branch = &rule.on_probe_failure;
            let mut note = render_note(branch);
            if note.is_empty() {
                let reasons: Vec<String> = failed
                    .iter()
                    .map(|name| {
                        let error = probes.get(name).map_or("not run", |r| r.error.as_str());
                        format!("{name} {error}")
                    })
                    .collect();
                note = format!("could not confirm: {}", reasons.join("; "));
            }
            return RuleDecision {
                rule: rule.name.clone(),
                branch: branch.name.clone(),
                branch_kind: "on_probe_failure".to_owned(),
                evaluations: Vec::new(),
                failed_probes: failed,
                actions: branch.actions.clone(),
                severity_override: branch.severity,
                note,
            };
        }
        let mut evaluations = Vec::new();
        for branch in &rule.branches {
            let Some(condition) = &branch.when else {
                return RuleDecision {
                    rule: rule.name.clone(),
                    branch: branch.name.clone(),
                    branch_kind: "otherwise".to_owned(),
                    evaluations,
                    failed_probes: Vec::new(),
                    actions: branch.actions.clone(),
                    severity_override: branch.severity,
                    note: render_note(branch),
                };
            };
            let result = condition.evaluate(variables);
            evaluations.push(BranchEvaluation {
                branch: branch.name.clone(),
                when: condition.source.clone(),
                result: match &result {
                    Ok(value) => Json::Bool(*value),
                    Err(error) => Json::String(format!("error: {error}")),
                },
            });
            if result == Ok(true) {
                return RuleDecision {
                    rule: rule.name.clone(),
                    branch: branch.name.clone(),
                    branch_kind: "when".to_owned(),
                    evaluations,
                    failed_probes: Vec::new(),
                    actions: branch.actions.clone(),
                    severity_override: branch.severity,
                    note: render_note(branch),
                };
            }
        }
        // No branch was taken. If a condition could not be evaluated (a label it reads is
        // missing, say), say so: silence would look like a decision.
        let errors: Vec<String> = evaluations
            .iter()
            .filter_map(|e| {
                e.result
                    .as_str()
                    .map(|error| format!("{}: {error}", e.branch))
            })
            .collect();
        let note = if errors.is_empty() {
            String::new()
        } else {
            format!("could not evaluate {}", errors.join("; "))
        };
        let name = if rule.branches.is_empty() {
            "rule"
        } else {
            "none"
        };
        RuleDecision {
            rule: rule.name.clone(),
            branch: name.to_owned(),
            branch_kind: name.to_owned(),
            evaluations,
            failed_probes: Vec::new(),
            actions: Vec::new(),
            severity_override: None,
            note,
        }
    }
}

fn default_summary(alert: &AlertInput) -> String {
    let name = alert
        .labels
        .get("alertname")
        .map_or("alert", String::as_str);
    match alert.annotations.get("summary") {
        Some(summary) => format!("{name}: {summary}"),
        None => name.to_owned(),
    }
}

#[cfg(test)]
mod tests;
