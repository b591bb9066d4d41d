//! rules::collect::validate: the load-time checks of a collector, so that `check` refuses a
//! broken one: templates compile and render against a sample, `secret()` is refused, limits
//! hold, and names written out are names Kubernetes and the bundle accept.

use std::time::Duration;

use serde::Serialize;

use super::spec::{CollectorSpec, MAX_MAX_BYTES, MAX_POINTS, MAX_TIMEOUT};
use crate::act::actions::http;
use crate::rules::template::Template;

impl CollectorSpec {
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
                    if !crate::rules::is_rfc1123_label(container) {
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
    if Template::is_literal(namespace) && !crate::rules::is_rfc1123_label(namespace) {
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
pub(super) fn check_workload(workload: &str) -> Result<(), String> {
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
    if !crate::rules::is_rfc1123_name(name) {
        return Err(format!(
            "workload name {name:?} is not a valid Kubernetes name"
        ));
    }
    Ok(())
}

/// A label selector: not empty, and only the characters selectors are made of.
pub(super) fn check_selector(selector: &str) -> Result<(), String> {
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

pub(super) fn human(duration: Duration) -> String {
    crate::duration::format(duration)
}

#[cfg(test)]
mod tests {
    use crate::rules::collect::fixtures::problems;

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
}
