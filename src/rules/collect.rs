//! The collector schema: what a rule file asks to be gathered into an incident's debug bundle
//! (`[collector.NAME]`, listed by a rule's `collect = [...]`), validated at load so that
//! `check` refuses a broken collector and `explain` can show the bundle plan. Rendering turns
//! a declaration into a [`CollectorRequest`] for one incident; running it is the bundle's job
//! (`crate::bundle::collect`). Nothing here has side effects.
//!
//! Collectors follow the actions' rules for inputs: every string that is a template is
//! rendered from the incident's context (labels, annotations, probe results, severity,
//! incident id); Kubernetes names are checked after rendering; an `http` collector's scheme
//! and host are written out in the file ([`crate::act::actions::http::render_url`]); an `exec`
//! collector's argv follows [`crate::act::actions::exec::render_argv`] and runs with
//! [`crate::act::actions::exec::incident_env`]. `secret()` is refused in every collector template:
//! a [`CollectorRequest`] carries rendered values only, and those are shown by `explain` and
//! kept in the bundle's manifest.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::template::Template;
use super::{AlertInput, Severity};
use crate::act::actions::{exec, http};
use crate::bundle::request::{CollectorRequest, RequestKind};
use crate::clock::Millis;

/// The longest a collector may be given.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// `max_bytes` when the file does not say.
pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024;
/// The most `max_bytes` may be.
pub const MAX_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Prometheus refuses a range query with more points per series than this.
pub const MAX_POINTS: i64 = 11_000;

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_bytes() -> u64 {
    DEFAULT_MAX_BYTES
}

fn default_look_back() -> Duration {
    Duration::from_secs(2 * 3600)
}

fn default_step() -> Duration {
    Duration::from_secs(60)
}

fn default_tail_lines() -> u64 {
    500
}

fn default_since() -> Duration {
    Duration::from_secs(3600)
}

fn default_true() -> bool {
    true
}

/// When a `prometheus_query` is evaluated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum At {
    /// The alert's start (`startsAt`), or now if that lies in the future.
    #[default]
    Start,
    /// The moment the collector is rendered (`now` of [`super::RuleSet::collector_requests`]).
    Now,
}

/// Settings every collector kind has. As for actions, serde cannot flatten shared fields into
/// an internally tagged enum that also denies unknown fields, so each kind repeats them; this
/// is the one place that reads them ([`CollectorCommon::of`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CollectorCommon {
    pub description: String,
    pub timeout: Duration,
    pub max_bytes: u64,
    /// Resolved: the file's value, else the kind's default.
    pub before_action: bool,
    pub on_resolve: bool,
}

/// One collector as written in a rule file (`[collector.NAME]`, `kind = "..."`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CollectorSpec {
    /// A PromQL range query around the alert's start.
    PrometheusRange {
        query: String,
        #[serde(default = "default_look_back", with = "crate::duration::text")]
        look_back: Duration,
        #[serde(default = "default_step", with = "crate::duration::text")]
        step: Duration,
        #[serde(default)]
        description: String,
        #[serde(default = "default_timeout", with = "crate::duration::text")]
        timeout: Duration,
        #[serde(default = "default_max_bytes")]
        max_bytes: u64,
        before_action: Option<bool>,
        #[serde(default)]
        on_resolve: bool,
    },
    /// A PromQL instant query at the alert's start or now.
    PrometheusQuery {
        query: String,
        #[serde(default)]
        at: At,
        #[serde(default)]
        description: String,
        #[serde(default = "default_timeout", with = "crate::duration::text")]
        timeout: Duration,
        #[serde(default = "default_max_bytes")]
        max_bytes: u64,
        before_action: Option<bool>,
        #[serde(default)]
        on_resolve: bool,
    },
    /// Logs of a workload's pods (or of a label selector's), per container.
    KubernetesLogs {
        namespace: String,
        workload: Option<String>,
        selector: Option<String>,
        /// Container names; empty means every container.
        #[serde(default)]
        containers: Vec<String>,
        #[serde(default = "default_tail_lines")]
        tail_lines: u64,
        #[serde(default = "default_since", with = "crate::duration::text")]
        since: Duration,
        #[serde(default = "default_true")]
        previous: bool,
        #[serde(default)]
        description: String,
        #[serde(default = "default_timeout", with = "crate::duration::text")]
        timeout: Duration,
        #[serde(default = "default_max_bytes")]
        max_bytes: u64,
        before_action: Option<bool>,
        #[serde(default)]
        on_resolve: bool,
    },
    /// Events of a workload, its replica sets and pods (or of a selector's pods).
    KubernetesEvents {
        namespace: String,
        workload: Option<String>,
        selector: Option<String>,
        #[serde(default)]
        description: String,
        #[serde(default = "default_timeout", with = "crate::duration::text")]
        timeout: Duration,
        #[serde(default = "default_max_bytes")]
        max_bytes: u64,
        before_action: Option<bool>,
        #[serde(default)]
        on_resolve: bool,
    },
    /// A workload's spec and status.
    KubernetesObject {
        namespace: String,
        workload: String,
        #[serde(default)]
        description: String,
        #[serde(default = "default_timeout", with = "crate::duration::text")]
        timeout: Duration,
        #[serde(default = "default_max_bytes")]
        max_bytes: u64,
        before_action: Option<bool>,
        #[serde(default)]
        on_resolve: bool,
    },
    /// A GET of a health or status endpoint.
    Http {
        url: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        description: String,
        #[serde(default = "default_timeout", with = "crate::duration::text")]
        timeout: Duration,
        #[serde(default = "default_max_bytes")]
        max_bytes: u64,
        before_action: Option<bool>,
        #[serde(default)]
        on_resolve: bool,
    },
    /// A local diagnostic command: an argv list, no shell.
    Exec {
        argv: Vec<String>,
        /// Allow a rendered argument to start with `-` from a template.
        #[serde(default)]
        allow_leading_dash: bool,
        #[serde(default)]
        description: String,
        #[serde(default = "default_timeout", with = "crate::duration::text")]
        timeout: Duration,
        #[serde(default = "default_max_bytes")]
        max_bytes: u64,
        before_action: Option<bool>,
        #[serde(default)]
        on_resolve: bool,
    },
}

/// What rendering needs besides the template context.
#[derive(Debug, Clone, Copy)]
pub struct RenderInput<'a> {
    /// The template context (see [`super::RuleSet::action_context`]).
    pub context: &'a serde_json::Value,
    pub alert: &'a AlertInput,
    /// The rule the collector is rendered for.
    pub rule: &'a str,
    pub severity: Severity,
    /// Unix milliseconds.
    pub now: Millis,
}

impl CollectorSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            CollectorSpec::PrometheusRange { .. } => "prometheus_range",
            CollectorSpec::PrometheusQuery { .. } => "prometheus_query",
            CollectorSpec::KubernetesLogs { .. } => "kubernetes_logs",
            CollectorSpec::KubernetesEvents { .. } => "kubernetes_events",
            CollectorSpec::KubernetesObject { .. } => "kubernetes_object",
            CollectorSpec::Http { .. } => "http",
            CollectorSpec::Exec { .. } => "exec",
        }
    }

    pub fn common(&self) -> CollectorCommon {
        CollectorCommon::of(self)
    }

    /// Every templated string of the collector with where it sits, for load-time checks.
    fn templates(&self) -> Vec<(String, &str)> {
        let mut all: Vec<(String, &str)> = Vec::new();
        match self {
            CollectorSpec::PrometheusRange { query, .. }
            | CollectorSpec::PrometheusQuery { query, .. } => all.push(("query".into(), query)),
            CollectorSpec::KubernetesLogs {
                namespace,
                workload,
                selector,
                ..
            }
            | CollectorSpec::KubernetesEvents {
                namespace,
                workload,
                selector,
                ..
            } => {
                all.push(("namespace".into(), namespace));
                if let Some(workload) = workload {
                    all.push(("workload".into(), workload));
                }
                if let Some(selector) = selector {
                    all.push(("selector".into(), selector));
                }
            }
            CollectorSpec::KubernetesObject {
                namespace,
                workload,
                ..
            } => {
                all.push(("namespace".into(), namespace));
                all.push(("workload".into(), workload));
            }
            CollectorSpec::Http { url, headers, .. } => {
                all.push(("url".into(), url));
                for (name, value) in headers {
                    all.push((format!("headers.{name}"), value));
                }
            }
            CollectorSpec::Exec { argv, .. } => {
                for (index, argument) in argv.iter().enumerate() {
                    all.push((format!("argv[{index}]"), argument));
                }
            }
        }
        all
    }

    /// The namespace, when it is written out rather than templated.
    pub fn literal_namespace(&self) -> Option<&str> {
        match self {
            CollectorSpec::KubernetesLogs { namespace, .. }
            | CollectorSpec::KubernetesEvents { namespace, .. }
            | CollectorSpec::KubernetesObject { namespace, .. } => {
                Template::is_literal(namespace).then_some(namespace.as_str())
            }
            _ => None,
        }
    }

    /// Check the collector; every problem is returned. Templates are compiled and rendered
    /// once against `sample`; values that are written out are checked as they will be sent.
    /// Whether a namespace is in the allowlist is checked when the collector runs.
    pub fn validate(&self, sample: &impl Serialize) -> Vec<String> {
        let mut problems = Vec::new();
        for (field, source) in self.templates() {
            if calls_secret(source) {
                problems.push(format!(
                    "{field}: secret() is not allowed in collectors: what a collector sends is \
                     shown by explain and kept in the bundle; let the endpoint or command get \
                     its credential another way"
                ));
            } else if let Err(error) = Template::compile(source, sample) {
                problems.push(format!("{field}: {error}"));
            }
        }
        let common = self.common();
        if common.timeout.is_zero() {
            problems.push("timeout must be longer than 0s".to_owned());
        } else if common.timeout > MAX_TIMEOUT {
            problems.push(format!(
                "timeout {} is over the limit of {}",
                human(common.timeout),
                human(MAX_TIMEOUT)
            ));
        }
        if common.max_bytes == 0 {
            problems.push("max_bytes must be at least 1".to_owned());
        } else if common.max_bytes > MAX_MAX_BYTES {
            problems.push(format!(
                "max_bytes {} is over the limit of {MAX_MAX_BYTES} (64 MiB)",
                common.max_bytes
            ));
        }
        match self {
            CollectorSpec::PrometheusRange {
                query,
                look_back,
                step,
                ..
            } => {
                if query.trim().is_empty() {
                    problems.push("query is empty".to_owned());
                }
                if *step < Duration::from_secs(1) {
                    problems.push(format!("step {} must be at least 1s", human(*step)));
                } else if look_back.is_zero() {
                    problems.push("look_back must be longer than 0s".to_owned());
                } else if look_back.as_millis() > step.as_millis() * MAX_POINTS as u128 {
                    problems.push(format!(
                        "look_back {} / step {} is {} points; Prometheus answers at most \
                         {MAX_POINTS} per series: raise step or shorten look_back",
                        human(*look_back),
                        human(*step),
                        look_back.as_millis().div_ceil(step.as_millis())
                    ));
                }
            }
            CollectorSpec::PrometheusQuery { query, .. } => {
                if query.trim().is_empty() {
                    problems.push("query is empty".to_owned());
                }
            }
            CollectorSpec::KubernetesLogs {
                namespace,
                workload,
                selector,
                containers,
                tail_lines,
                since,
                ..
            } => {
                check_namespace_literal(namespace, &mut problems);
                check_target(workload.as_deref(), selector.as_deref(), &mut problems);
                for container in containers {
                    if !super::is_rfc1123_label(container) {
                        problems.push(format!(
                            "containers: {container:?} is not a container name (leave \
                             containers out to collect every container)"
                        ));
                    }
                }
                if *tail_lines == 0 {
                    problems.push("tail_lines must be at least 1".to_owned());
                }
                if *since < Duration::from_secs(1) {
                    problems.push(format!("since {} must be at least 1s", human(*since)));
                }
            }
            CollectorSpec::KubernetesEvents {
                namespace,
                workload,
                selector,
                ..
            } => {
                check_namespace_literal(namespace, &mut problems);
                check_target(workload.as_deref(), selector.as_deref(), &mut problems);
            }
            CollectorSpec::KubernetesObject {
                namespace,
                workload,
                ..
            } => {
                check_namespace_literal(namespace, &mut problems);
                if Template::is_literal(workload)
                    && let Err(problem) = check_workload(workload)
                {
                    problems.push(problem);
                }
            }
            CollectorSpec::Http { url, headers, .. } => {
                if !calls_secret(url)
                    && let Err(problem) = http::render_url(url, sample)
                {
                    problems.push(problem);
                }
                for name in headers.keys() {
                    if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        problems.push(format!("headers: {name:?} is not a valid header name"));
                    }
                }
            }
            CollectorSpec::Exec { argv, .. } => match argv.first() {
                None => problems.push("argv is empty".to_owned()),
                Some(program) if calls_secret(program) => {}
                Some(program) if !Template::is_literal(program) => {
                    problems.push("argv[0], the program, must not be a template".to_owned())
                }
                Some(program) if !program.starts_with('/') => problems.push(format!(
                    "argv[0] {program:?} must be an absolute path (no PATH lookup)"
                )),
                Some(_) => {}
            },
        }
        problems
    }

    /// The collector rendered for one incident: templates filled, times resolved, rendered
    /// names checked. `name` is the collector's name in the file.
    pub fn render(&self, name: &str, input: &RenderInput<'_>) -> Result<CollectorRequest, String> {
        let common = self.common();
        Ok(CollectorRequest {
            name: name.to_owned(),
            rule: input.rule.to_owned(),
            kind: self.render_kind(input)?,
            timeout: common.timeout,
            max_bytes: common.max_bytes,
            before_action: common.before_action,
            on_resolve: common.on_resolve,
        })
    }

    fn render_kind(&self, input: &RenderInput<'_>) -> Result<RequestKind, String> {
        let fill = |field: &str, source: &str| {
            Template {
                source: source.to_owned(),
            }
            .render(input.context)
            .map_err(|error| format!("{field}: {error}"))
        };
        let namespace = |source: &str| {
            let value = fill("namespace", source)?;
            if super::is_rfc1123_label(&value) {
                Ok(value)
            } else {
                Err(format!("namespace {value:?} is not a valid namespace name"))
            }
        };
        let workload = |source: &str| {
            let value = fill("workload", source)?;
            check_workload(&value).map(|()| value)
        };
        let selector = |source: &str| {
            let value = fill("selector", source)?;
            check_selector(&value).map(|()| value)
        };
        let query = |source: &str| {
            let value = fill("query", source)?;
            if value.trim().is_empty() {
                Err("query: renders empty".to_owned())
            } else {
                Ok(value)
            }
        };
        Ok(match self {
            CollectorSpec::PrometheusRange {
                query: source,
                look_back,
                step,
                ..
            } => {
                let query = query(source)?;
                let started = alert_start(input.alert)?;
                let (start, end, step) = range_window(started, input.now, *look_back, *step);
                RequestKind::PrometheusRange {
                    query,
                    start,
                    end,
                    step,
                }
            }
            CollectorSpec::PrometheusQuery {
                query: source, at, ..
            } => {
                let query = query(source)?;
                let at = match at {
                    At::Now => input.now,
                    At::Start => alert_start(input.alert)?.min(input.now),
                };
                RequestKind::PrometheusQuery { query, at }
            }
            CollectorSpec::KubernetesLogs {
                namespace: ns,
                workload: target,
                selector: labels,
                containers,
                tail_lines,
                since,
                previous,
                ..
            } => RequestKind::KubernetesLogs {
                namespace: namespace(ns)?,
                workload: target.as_deref().map(workload).transpose()?,
                selector: labels.as_deref().map(selector).transpose()?,
                containers: containers.clone(),
                tail_lines: Some(*tail_lines),
                since: Some(*since),
                previous: *previous,
            },
            CollectorSpec::KubernetesEvents {
                namespace: ns,
                workload: target,
                selector: labels,
                ..
            } => RequestKind::KubernetesEvents {
                namespace: namespace(ns)?,
                workload: target.as_deref().map(workload).transpose()?,
                selector: labels.as_deref().map(selector).transpose()?,
            },
            CollectorSpec::KubernetesObject {
                namespace: ns,
                workload: target,
                ..
            } => RequestKind::KubernetesObject {
                namespace: namespace(ns)?,
                workload: workload(target)?,
            },
            CollectorSpec::Http { url, headers, .. } => {
                let url = http::render_url(url, input.context)?;
                let mut rendered = BTreeMap::new();
                for (name, source) in headers {
                    let value = fill(&format!("headers.{name}"), source)?;
                    if reqwest::header::HeaderValue::from_str(&value).is_err() {
                        return Err(format!(
                            "headers.{name}: the rendered value holds characters a header cannot"
                        ));
                    }
                    rendered.insert(name.clone(), value);
                }
                RequestKind::Http {
                    url: url.to_string(),
                    headers: rendered,
                }
            }
            CollectorSpec::Exec {
                argv,
                allow_leading_dash,
                ..
            } => RequestKind::Exec {
                argv: exec::render_argv(argv, input.context, *allow_leading_dash)?,
                env: exec::incident_env(
                    &input.alert.incident_id,
                    input.rule,
                    input.severity.as_str(),
                    &input.alert.labels,
                ),
            },
        })
    }
}

/// Kept in one place so that the duplicated common fields above stay in step.
impl CollectorCommon {
    pub fn of(spec: &CollectorSpec) -> CollectorCommon {
        let (description, timeout, max_bytes, before_action, on_resolve) = match spec {
            CollectorSpec::PrometheusRange {
                description,
                timeout,
                max_bytes,
                before_action,
                on_resolve,
                ..
            }
            | CollectorSpec::PrometheusQuery {
                description,
                timeout,
                max_bytes,
                before_action,
                on_resolve,
                ..
            }
            | CollectorSpec::KubernetesLogs {
                description,
                timeout,
                max_bytes,
                before_action,
                on_resolve,
                ..
            }
            | CollectorSpec::KubernetesEvents {
                description,
                timeout,
                max_bytes,
                before_action,
                on_resolve,
                ..
            }
            | CollectorSpec::KubernetesObject {
                description,
                timeout,
                max_bytes,
                before_action,
                on_resolve,
                ..
            }
            | CollectorSpec::Http {
                description,
                timeout,
                max_bytes,
                before_action,
                on_resolve,
                ..
            }
            | CollectorSpec::Exec {
                description,
                timeout,
                max_bytes,
                before_action,
                on_resolve,
                ..
            } => (description, timeout, max_bytes, before_action, on_resolve),
        };
        // Logs and events are what a restart destroys: by default they are taken first.
        let before_by_default = matches!(
            spec,
            CollectorSpec::KubernetesLogs { .. } | CollectorSpec::KubernetesEvents { .. }
        );
        CollectorCommon {
            description: description.clone(),
            timeout: *timeout,
            max_bytes: *max_bytes,
            before_action: before_action.unwrap_or(before_by_default),
            on_resolve: *on_resolve,
        }
    }
}

/// A collector's name becomes a directory of the bundle (`collectors/NAME/`): letters,
/// digits, `-`, `_` and `.`, starting with a letter or digit, at most 64 characters.
pub fn is_collector_name(name: &str) -> bool {
    name.len() <= 64
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The window of a `prometheus_range` collector: `end` is `now` rounded down to a multiple of
/// `step`; `start` is the alert's start (but not after `end`) minus `look_back`, rounded down
/// to a multiple of `step`. So the alerts of a storm, started within one step of each other,
/// get the same window and their identical queries are made once. Should the window hold
/// more than [`MAX_POINTS`] steps (an alert that has fired for a long time), the step is
/// widened to a multiple of itself until it fits. Returns `(start, end, step)`.
pub fn range_window(
    alert_start: Millis,
    now: Millis,
    look_back: Duration,
    step: Duration,
) -> (Millis, Millis, Duration) {
    let base = i64::try_from(step.as_millis()).unwrap_or(i64::MAX).max(1);
    let look_back = i64::try_from(look_back.as_millis()).unwrap_or(i64::MAX);
    let floor = |time: Millis, step: i64| time - time.rem_euclid(step);
    let window = |step: i64| {
        let end = floor(now, step);
        let start = floor(alert_start.min(end).saturating_sub(look_back), step);
        (start, end)
    };
    let mut multiple: i64 = 1;
    loop {
        let step = base.saturating_mul(multiple);
        let (start, end) = window(step);
        let points = (end - start) / step;
        if points <= MAX_POINTS || step == i64::MAX {
            return (start, end, Duration::from_millis(step.unsigned_abs()));
        }
        // Rounding may add a point; the loop takes the next multiple then.
        multiple =
            (multiple + 1).max(multiple.saturating_mul((points + MAX_POINTS - 1) / MAX_POINTS));
    }
}

/// The alert's start in unix milliseconds.
fn alert_start(alert: &AlertInput) -> Result<Millis, String> {
    chrono::DateTime::parse_from_rfc3339(&alert.starts_at)
        .map(|time| time.timestamp_millis())
        .map_err(|error| {
            format!(
                "the alert's starts_at {:?} is not an RFC 3339 time: {error}",
                alert.starts_at
            )
        })
}

/// Whether a template calls `secret(…)` (spaces before the parenthesis included). Collector
/// templates are rendered with the recording environment, where `secret()` only ever gives
/// `<secret:NAME>`, so this is about telling the author, not about a leak.
fn calls_secret(source: &str) -> bool {
    !Template::is_literal(source)
        && source
            .match_indices("secret")
            .any(|(at, word)| source[at + word.len()..].trim_start().starts_with('('))
}

fn check_namespace_literal(namespace: &str, problems: &mut Vec<String>) {
    if Template::is_literal(namespace) && !super::is_rfc1123_label(namespace) {
        problems.push(format!(
            "namespace {namespace:?} is not a valid namespace name"
        ));
    }
}

/// Exactly one of `workload` and `selector`, each checked when it is written out.
fn check_target(workload: Option<&str>, selector: Option<&str>, problems: &mut Vec<String>) {
    match (workload, selector) {
        (Some(_), Some(_)) => {
            problems.push("give workload or selector, not both".to_owned());
        }
        (None, None) => problems.push(
            "needs workload (deployment/NAME, statefulset/NAME, daemonset/NAME) or selector \
             (a label selector such as app=api)"
                .to_owned(),
        ),
        (Some(workload), None) => {
            if Template::is_literal(workload)
                && let Err(problem) = check_workload(workload)
            {
                problems.push(problem);
            }
        }
        (None, Some(selector)) => {
            if Template::is_literal(selector)
                && let Err(problem) = check_selector(selector)
            {
                problems.push(problem);
            }
        }
    }
}

/// `deployment/NAME`, `statefulset/NAME` or `daemonset/NAME`, with a valid name.
fn check_workload(workload: &str) -> Result<(), String> {
    let Some((kind, name)) = workload.split_once('/') else {
        return Err(format!(
            "workload {workload:?} must be deployment/NAME, statefulset/NAME or daemonset/NAME"
        ));
    };
    if !matches!(kind, "deployment" | "statefulset" | "daemonset") {
        return Err(format!(
            "workload kind {kind:?} must be deployment, statefulset or daemonset"
        ));
    }
    if !super::is_rfc1123_name(name) {
        return Err(format!(
            "workload name {name:?} is not a valid Kubernetes name"
        ));
    }
    Ok(())
}

/// A label selector: not empty, and only the characters selectors are made of.
fn check_selector(selector: &str) -> Result<(), String> {
    if selector.trim().is_empty() {
        return Err("selector is empty".to_owned());
    }
    if selector.len() > 1024 {
        return Err("selector is longer than 1024 characters".to_owned());
    }
    if let Some(bad) = selector.chars().find(|c| {
        !(c.is_ascii_alphanumeric()
            || matches!(c, '-' | '_' | '.' | '/' | '=' | '!' | ',' | '(' | ')' | ' '))
    }) {
        return Err(format!(
            "selector {selector:?} holds {bad:?}, which no label selector has"
        ));
    }
    Ok(())
}

fn human(duration: Duration) -> String {
    crate::duration::format(duration)
}

/// Unix milliseconds as RFC 3339 UTC, to the second (or millisecond when there are some).
pub fn rfc3339(millis: Millis) -> String {
    crate::clock::millis_to_datetime(millis).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// One line saying what a rendered collector will fetch, for `explain`.
pub fn describe(request: &CollectorRequest) -> String {
    let target = |workload: &Option<String>, selector: &Option<String>| match (workload, selector) {
        (Some(workload), _) => workload.clone(),
        (None, Some(selector)) => format!("pods with {selector}"),
        (None, None) => "?".to_owned(),
    };
    match &request.kind {
        RequestKind::PrometheusRange {
            query,
            start,
            end,
            step,
        } => format!(
            "{query} from {} to {} every {}",
            rfc3339(*start),
            rfc3339(*end),
            human(*step)
        ),
        RequestKind::PrometheusQuery { query, at } => format!("{query} at {}", rfc3339(*at)),
        RequestKind::KubernetesLogs {
            namespace,
            workload,
            selector,
            containers,
            tail_lines,
            since,
            previous,
        } => {
            let mut out = format!("logs of {} in {namespace}", target(workload, selector));
            if containers.is_empty() {
                out.push_str(", every container");
            } else {
                out.push_str(&format!(", containers {}", containers.join(", ")));
            }
            match (tail_lines, since) {
                (Some(lines), Some(since)) => out.push_str(&format!(
                    ", the last {lines} lines of the last {}",
                    human(*since)
                )),
                (Some(lines), None) => out.push_str(&format!(", the last {lines} lines")),
                (None, Some(since)) => out.push_str(&format!(", the last {}", human(*since))),
                (None, None) => {}
            }
            if *previous {
                out.push_str(", previous containers too");
            }
            out
        }
        RequestKind::KubernetesEvents {
            namespace,
            workload,
            selector,
        } => format!("events of {} in {namespace}", target(workload, selector)),
        RequestKind::KubernetesObject {
            namespace,
            workload,
        } => format!("{workload} in {namespace} (spec and status)"),
        RequestKind::Http { url, headers } => {
            if headers.is_empty() {
                format!("GET {url}")
            } else {
                let names: Vec<&str> = headers.keys().map(String::as_str).collect();
                format!("GET {url} (headers {})", names.join(", "))
            }
        }
        RequestKind::Exec { argv, .. } => {
            serde_json::to_string(argv).unwrap_or_else(|_| argv.join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> CollectorSpec {
        toml::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn problems(text: &str) -> Vec<String> {
        let sample = serde_json::json!({"labels": {"namespace": "vastai"}});
        parse(text).validate(&sample)
    }

    const MINUTE: i64 = 60_000;

    #[test]
    fn valid_collectors_pass() {
        for text in [
            "kind = \"prometheus_range\"\nquery = 'rate(x_total{namespace=\"{{ labels.namespace }}\"}[5m])'\nlook_back = \"2h\"\nstep = \"30s\"",
            "kind = \"prometheus_query\"\nquery = \"up\"\nat = \"now\"",
            "kind = \"kubernetes_logs\"\nnamespace = \"{{ labels.namespace }}\"\nworkload = \"deployment/api\"\ncontainers = [\"app\"]",
            "kind = \"kubernetes_logs\"\nnamespace = \"vastai\"\nselector = \"app=api,tier in (web, worker)\"",
            "kind = \"kubernetes_events\"\nnamespace = \"vastai\"\nworkload = \"statefulset/db\"",
            "kind = \"kubernetes_object\"\nnamespace = \"vastai\"\nworkload = \"daemonset/agent\"",
            "kind = \"http\"\nurl = \"https://status.example.com/api/{{ labels.service }}\"\nheaders = { Accept = \"application/json\" }",
            "kind = \"exec\"\nargv = [\"/usr/bin/journalctl\", \"-u\", \"{{ labels.unit }}\", \"--since=-1h\"]\ntimeout = \"10m\"\nmax_bytes = 67108864",
        ] {
            assert_eq!(problems(text), Vec::<String>::new(), "{text}");
        }
    }

    #[test]
    fn defaults() {
        let logs =
            parse("kind = \"kubernetes_logs\"\nnamespace = \"a\"\nworkload = \"deployment/b\"");
        let common = logs.common();
        assert!(common.before_action, "logs are taken before actions");
        assert!(!common.on_resolve);
        assert_eq!(common.timeout, Duration::from_secs(30));
        assert_eq!(common.max_bytes, 1_048_576);
        let CollectorSpec::KubernetesLogs {
            tail_lines,
            since,
            previous,
            containers,
            ..
        } = &logs
        else {
            unreachable!()
        };
        assert_eq!(
            (*tail_lines, *since, *previous, containers.len()),
            (500, Duration::from_secs(3600), true, 0)
        );
        let events =
            parse("kind = \"kubernetes_events\"\nnamespace = \"a\"\nworkload = \"deployment/b\"");
        assert!(events.common().before_action);
        let object =
            parse("kind = \"kubernetes_object\"\nnamespace = \"a\"\nworkload = \"deployment/b\"");
        assert!(!object.common().before_action);
        let range = parse("kind = \"prometheus_range\"\nquery = \"up\"");
        assert!(!range.common().before_action);
        let CollectorSpec::PrometheusRange {
            look_back, step, ..
        } = range
        else {
            unreachable!()
        };
        assert_eq!(
            (look_back, step),
            (Duration::from_secs(7200), Duration::from_secs(60))
        );
        let query = parse("kind = \"prometheus_query\"\nquery = \"up\"");
        assert!(matches!(
            query,
            CollectorSpec::PrometheusQuery { at: At::Start, .. }
        ));
        // Overridden either way.
        let logs = parse(
            "kind = \"kubernetes_logs\"\nnamespace = \"a\"\nselector = \"app=b\"\nbefore_action = false\non_resolve = true",
        );
        assert!(!logs.common().before_action);
        assert!(logs.common().on_resolve);
        let http = parse("kind = \"http\"\nurl = \"https://x/\"\nbefore_action = true");
        assert!(http.common().before_action);
    }

    #[test]
    fn unsafe_or_broken_collectors_are_refused() {
        for (text, message) in [
            (
                "kind = \"kubernetes_logs\"\nnamespace = \"vastai\"\nworkload = \"deployment/a\"\nselector = \"app=a\"",
                "not both",
            ),
            (
                "kind = \"kubernetes_events\"\nnamespace = \"vastai\"",
                "needs workload",
            ),
            (
                "kind = \"kubernetes_logs\"\nnamespace = \"Kube_System\"\nworkload = \"deployment/a\"",
                "not a valid namespace name",
            ),
            (
                "kind = \"kubernetes_object\"\nnamespace = \"vastai\"\nworkload = \"secret/api-key\"",
                "must be deployment",
            ),
            (
                "kind = \"kubernetes_logs\"\nnamespace = \"vastai\"\nselector = \"app=a;rm\"",
                "which no label selector has",
            ),
            (
                "kind = \"kubernetes_logs\"\nnamespace = \"vastai\"\nworkload = \"deployment/a\"\ncontainers = [\"*\"]",
                "not a container name",
            ),
            (
                "kind = \"kubernetes_logs\"\nnamespace = \"vastai\"\nworkload = \"deployment/a\"\ntail_lines = 0",
                "tail_lines must be at least 1",
            ),
            (
                "kind = \"exec\"\nargv = [\"journalctl\", \"-u\", \"x\"]",
                "must be an absolute path",
            ),
            (
                "kind = \"exec\"\nargv = [\"{{ labels.cmd }}\"]",
                "must not be a template",
            ),
            ("kind = \"exec\"\nargv = []", "argv is empty"),
            (
                "kind = \"exec\"\nargv = [\"/usr/bin/curl\", \"-H\", \"{{ secret('token') }}\"]",
                "argv[2]: secret() is not allowed in collectors",
            ),
            (
                "kind = \"prometheus_query\"\nquery = \"{{ secret ('t') }}\"",
                "query: secret() is not allowed in collectors",
            ),
            (
                "kind = \"http\"\nurl = \"https://x/\"\nheaders = { Authorization = \"Bearer {{ secret('t') }}\" }",
                "headers.Authorization: secret() is not allowed in collectors",
            ),
            (
                "kind = \"http\"\nurl = \"https://{{ labels.host }}/x\"",
                "host must be written out",
            ),
            ("kind = \"http\"\nurl = \"ftp://x/y\"", "http or https"),
            (
                "kind = \"http\"\nurl = \"https://x/\"\nheaders = { \"Bad Name\" = \"x\" }",
                "not a valid header name",
            ),
            (
                "kind = \"prometheus_range\"\nquery = \"up\"\nlook_back = \"24h\"\nstep = \"1s\"",
                "86400 points",
            ),
            (
                "kind = \"prometheus_range\"\nquery = \"up\"\nstep = \"500ms\"",
                "step 500ms must be at least 1s",
            ),
            (
                "kind = \"prometheus_query\"\nquery = \" \"",
                "query is empty",
            ),
            (
                "kind = \"prometheus_query\"\nquery = \"up\"\ntimeout = \"11m\"",
                "timeout 11m is over the limit of 10m",
            ),
            (
                "kind = \"prometheus_query\"\nquery = \"up\"\ntimeout = \"0s\"",
                "longer than 0s",
            ),
            (
                "kind = \"prometheus_query\"\nquery = \"up\"\nmax_bytes = 67108865",
                "over the limit of 67108864",
            ),
            (
                "kind = \"prometheus_query\"\nquery = \"{{ labels.a | nofilter }}\"",
                "query: template error",
            ),
        ] {
            let found = problems(text);
            assert!(
                found.iter().any(|p| p.contains(message)),
                "{text}: {found:?}"
            );
        }
    }

    #[test]
    fn unknown_fields_and_kinds_are_errors() {
        for text in [
            "kind = \"exec\"\nargv = [\"/bin/true\"]\nshell = true",
            "kind = \"kubernetes_object\"\nnamespace = \"a\"\nworkload = \"deployment/b\"\nselector = \"x=y\"",
            "kind = \"http\"\nurl = \"https://x/\"\nmethod = \"POST\"",
            "kind = \"prometheus_query\"\nquery = \"up\"\nat = \"later\"",
            "kind = \"kubernetes_secret\"",
        ] {
            assert!(toml::from_str::<CollectorSpec>(text).is_err(), "{text}");
        }
    }

    #[test]
    fn names_are_safe_directory_names() {
        for good in ["logs", "error-rate", "status_page.json", "5xx"] {
            assert!(is_collector_name(good), "{good}");
        }
        for bad in ["", "..", ".hidden", "a/b", "../etc", "a b", &"x".repeat(65)] {
            assert!(!is_collector_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_window_is_rounded_to_the_step() {
        let hour = Duration::from_secs(3600);
        let minute = Duration::from_secs(60);
        // 2026-03-14T02:47:31Z and 20 s later; now 02:55:12.
        let first = 1_773_456_451_000;
        let now = 1_773_456_912_345;
        let a = range_window(first, now, 2 * hour, minute);
        let b = range_window(first + 20_000, now + 5_000, 2 * hour, minute);
        assert_eq!(a, b);
        let (start, end, step) = a;
        assert_eq!(step, minute);
        assert_eq!(end % MINUTE, 0);
        assert_eq!(start % MINUTE, 0);
        assert_eq!(rfc3339(start), "2026-03-14T00:47:00Z");
        assert_eq!(rfc3339(end), "2026-03-14T02:55:00Z");
        // An alert "starting" in the future (clock skew) ends the window now.
        let (start, end, _) = range_window(now + 3_600_000, now, 2 * hour, minute);
        assert_eq!(end - start, 2 * 3_600_000);
        // An alert firing for a week at a 1 s step would be 600 000 points: the step widens.
        let week = 7 * 24 * 3_600_000;
        let (start, end, step) = range_window(now - week, now, hour, Duration::from_secs(1));
        let step_ms = step.as_millis() as i64;
        assert!(step_ms > 1000 && step_ms % 1000 == 0, "{step:?}");
        assert!((end - start) / step_ms <= MAX_POINTS);
        assert_eq!(start % step_ms, 0);
        assert_eq!(end % step_ms, 0);
        assert!(start <= now - week - 3_600_000);
    }

    fn render(text: &str, alert: &AlertInput, now: Millis) -> Result<CollectorRequest, String> {
        let context = alert.template_context(&BTreeMap::new(), "r", Severity::P2);
        parse(text).render(
            "c",
            &RenderInput {
                context: &context,
                alert,
                rule: "r",
                severity: Severity::P2,
                now,
            },
        )
    }

    fn alert(labels: &[(&str, &str)]) -> AlertInput {
        AlertInput {
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            starts_at: "2026-03-14T02:47:31.204Z".to_owned(),
            incident_id: "abc-20260314T024731Z".to_owned(),
            ..AlertInput::default()
        }
    }

    #[test]
    fn rendering_checks_what_templates_produce() {
        let logs = "kind = \"kubernetes_logs\"\nnamespace = \"{{ labels.namespace }}\"\nworkload = \"deployment/{{ labels.deployment }}\"";
        let ok = render(
            logs,
            &alert(&[("namespace", "vastai"), ("deployment", "api")]),
            0,
        )
        .unwrap();
        assert_eq!(
            ok.kind,
            RequestKind::KubernetesLogs {
                namespace: "vastai".into(),
                workload: Some("deployment/api".into()),
                selector: None,
                containers: vec![],
                tail_lines: Some(500),
                since: Some(Duration::from_secs(3600)),
                previous: true,
            }
        );
        assert!(ok.before_action);
        let error = render(
            logs,
            &alert(&[("namespace", "kube-system/../x"), ("deployment", "api")]),
            0,
        )
        .unwrap_err();
        assert!(error.contains("not a valid namespace name"), "{error}");
        let error = render(logs, &alert(&[("namespace", "vastai")]), 0).unwrap_err();
        assert!(error.contains("workload name \"\""), "{error}");
        // The host of an http collector is the file's, whatever a label says.
        let http = "kind = \"http\"\nurl = \"https://status.example.com/{{ labels.path }}\"";
        let ok = render(http, &alert(&[("path", "a/../../b?x=1")]), 0).unwrap();
        let RequestKind::Http { url, .. } = &ok.kind else {
            unreachable!()
        };
        assert_eq!(url, "https://status.example.com/a%2F..%2F..%2Fb%3Fx%3D1");
        // exec: one argument per template, a dash from a label refused, the incident's env.
        let exec =
            "kind = \"exec\"\nargv = [\"/usr/bin/journalctl\", \"-u\", \"{{ labels.unit }}\"]";
        let ok = render(exec, &alert(&[("unit", "x; reboot")]), 0).unwrap();
        let RequestKind::Exec { argv, env } = &ok.kind else {
            unreachable!()
        };
        assert_eq!(argv, &["/usr/bin/journalctl", "-u", "x; reboot"]);
        assert!(env.contains(&("NIGHTSHIFT_LABEL_UNIT".to_owned(), "x; reboot".to_owned())));
        assert!(env.contains(&("NIGHTSHIFT_RULE".to_owned(), "r".to_owned())));
        let error = render(exec, &alert(&[("unit", "--rf")]), 0).unwrap_err();
        assert!(error.contains("starts with '-'"), "{error}");
        // A start that is not a time is an error of that collector only.
        let mut broken = alert(&[]);
        broken.starts_at = String::new();
        let error = render("kind = \"prometheus_query\"\nquery = \"up\"", &broken, 0).unwrap_err();
        assert!(error.contains("not an RFC 3339 time"), "{error}");
    }

    #[test]
    fn at_start_or_now() {
        let now = 1_773_457_000_000;
        let start = render(
            "kind = \"prometheus_query\"\nquery = \"up\"",
            &alert(&[]),
            now,
        )
        .unwrap();
        assert_eq!(
            start.kind,
            RequestKind::PrometheusQuery {
                query: "up".into(),
                at: 1_773_456_451_204
            }
        );
        let later = render(
            "kind = \"prometheus_query\"\nquery = \"up\"\nat = \"now\"",
            &alert(&[]),
            now,
        )
        .unwrap();
        assert_eq!(
            later.kind,
            RequestKind::PrometheusQuery {
                query: "up".into(),
                at: now
            }
        );
    }

    #[test]
    fn describe_says_what_is_fetched() {
        let now = 1_773_457_000_000;
        let range = render(
            "kind = \"prometheus_range\"\nquery = 'rate(x{ns=\"{{ labels.ns }}\"}[5m])'",
            &alert(&[("ns", "vastai")]),
            now,
        )
        .unwrap();
        assert_eq!(
            describe(&range),
            "rate(x{ns=\"vastai\"}[5m]) from 2026-03-14T00:47:00Z to 2026-03-14T02:56:00Z every 1m"
        );
        let logs = render(
            "kind = \"kubernetes_logs\"\nnamespace = \"vastai\"\nselector = \"app=api\"\ncontainers = [\"app\", \"proxy\"]",
            &alert(&[]),
            now,
        )
        .unwrap();
        assert_eq!(
            describe(&logs),
            "logs of pods with app=api in vastai, containers app, proxy, the last 500 lines of \
             the last 1h, previous containers too"
        );
    }
}
