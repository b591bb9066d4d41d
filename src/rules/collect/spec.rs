//! rules::collect::spec: a collector as written in a rule file (`[collector.NAME]`, one
//! variant per kind), its defaults, and the settings every kind shares.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::rules::template::Template;

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
    pub(super) fn templates(&self) -> Vec<(String, &str)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::collect::fixtures::parse;

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
}
