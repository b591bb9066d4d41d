//! The action schema: the kinds of automatic mitigation a rule file can define, validated at
//! load so that `check` refuses a broken action and `explain` can render one. Carrying them
//! out is the mitigation stage's job; nothing here has side effects.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::template::Template;

fn default_verify_window() -> Duration {
    Duration::from_secs(600)
}

fn default_cooldown() -> Duration {
    Duration::from_secs(1800)
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_containers() -> Vec<String> {
    vec!["*".to_owned()]
}

fn default_method() -> String {
    "POST".to_owned()
}

fn default_output() -> usize {
    64 * 1024
}

/// Settings every action kind has. serde cannot flatten shared fields into an internally
/// tagged enum that also denies unknown fields, so each kind repeats them; this is the one
/// place that reads them ([`Common::of`]).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Common {
    pub description: String,
    /// Undo the change when the incident resolves (set_env, scale).
    pub revert_on_resolve: bool,
    /// How long after acting the incident must have stopped firing for the action to count
    /// as having helped.
    pub verify_window: Duration,
    /// At most one run of this action per target within this time.
    pub cooldown: Duration,
}

/// One action as written in a rule file (`[action.NAME]`, `kind = "..."`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum ActionSpec {
    /// Same effect as `kubectl rollout restart`.
    #[serde(rename = "kubernetes.rollout_restart")]
    RolloutRestart {
        namespace: String,
        /// `deployment/NAME`, `statefulset/NAME` or `daemonset/NAME`.
        workload: String,
        #[serde(default)]
        description: String,
        #[serde(default)]
        revert_on_resolve: bool,
        #[serde(default = "default_verify_window", with = "crate::duration::text")]
        verify_window: Duration,
        #[serde(default = "default_cooldown", with = "crate::duration::text")]
        cooldown: Duration,
    },
    /// Set (or remove) environment variables on a workload's containers.
    #[serde(rename = "kubernetes.set_env")]
    SetEnv {
        namespace: String,
        workload: String,
        #[serde(default = "default_containers")]
        containers: Vec<String>,
        /// Name → value template. Names are literal, never taken from labels.
        #[serde(default)]
        env: BTreeMap<String, String>,
        #[serde(default)]
        remove: Vec<String>,
        #[serde(default)]
        description: String,
        #[serde(default)]
        revert_on_resolve: bool,
        #[serde(default = "default_verify_window", with = "crate::duration::text")]
        verify_window: Duration,
        #[serde(default = "default_cooldown", with = "crate::duration::text")]
        cooldown: Duration,
    },
    /// Set replicas through the scale subresource.
    #[serde(rename = "kubernetes.scale")]
    Scale {
        namespace: String,
        workload: String,
        /// A number, or a template rendering to one.
        replicas: toml::Value,
        #[serde(default)]
        description: String,
        #[serde(default)]
        revert_on_resolve: bool,
        #[serde(default = "default_verify_window", with = "crate::duration::text")]
        verify_window: Duration,
        #[serde(default = "default_cooldown", with = "crate::duration::text")]
        cooldown: Duration,
    },
    /// A local command: an argv list, no shell.
    #[serde(rename = "exec")]
    Exec {
        argv: Vec<String>,
        /// What the governor's cooldown and in-flight rules count this action against (a
        /// template); default: the action's name.
        target: Option<String>,
        #[serde(default = "default_timeout", with = "crate::duration::text")]
        timeout: Duration,
        /// Allow a rendered argument to start with `-`.
        #[serde(default)]
        allow_leading_dash: bool,
        #[serde(default = "default_output")]
        max_output_bytes: usize,
        #[serde(default)]
        description: String,
        #[serde(default)]
        revert_on_resolve: bool,
        #[serde(default = "default_verify_window", with = "crate::duration::text")]
        verify_window: Duration,
        #[serde(default = "default_cooldown", with = "crate::duration::text")]
        cooldown: Duration,
    },
    /// An HTTP call; scheme and host are fixed in the file, templates fill path, query, body.
    #[serde(rename = "http")]
    Http {
        /// As for `exec`: the governor's target; default: the action's name.
        target: Option<String>,
        #[serde(default = "default_method")]
        method: String,
        url: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        body: String,
        #[serde(default)]
        expect_status: Vec<u16>,
        #[serde(default = "default_timeout", with = "crate::duration::text")]
        timeout: Duration,
        #[serde(default)]
        description: String,
        #[serde(default)]
        revert_on_resolve: bool,
        #[serde(default = "default_verify_window", with = "crate::duration::text")]
        verify_window: Duration,
        #[serde(default = "default_cooldown", with = "crate::duration::text")]
        cooldown: Duration,
    },
}

impl ActionSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            ActionSpec::RolloutRestart { .. } => "kubernetes.rollout_restart",
            ActionSpec::SetEnv { .. } => "kubernetes.set_env",
            ActionSpec::Scale { .. } => "kubernetes.scale",
            ActionSpec::Exec { .. } => "exec",
            ActionSpec::Http { .. } => "http",
        }
    }

    pub fn revert_on_resolve(&self) -> bool {
        match self {
            ActionSpec::RolloutRestart {
                revert_on_resolve, ..
            }
            | ActionSpec::SetEnv {
                revert_on_resolve, ..
            }
            | ActionSpec::Scale {
                revert_on_resolve, ..
            }
            | ActionSpec::Exec {
                revert_on_resolve, ..
            }
            | ActionSpec::Http {
                revert_on_resolve, ..
            } => *revert_on_resolve,
        }
    }

    /// Every templated string of the action with where it sits, for load-time checks and
    /// rendering.
    fn templates(&self) -> Vec<(String, &str)> {
        let mut all: Vec<(String, &str)> = Vec::new();
        match self {
            ActionSpec::RolloutRestart {
                namespace,
                workload,
                ..
            } => {
                all.push(("namespace".into(), namespace));
                all.push(("workload".into(), workload));
            }
            ActionSpec::SetEnv {
                namespace,
                workload,
                env,
                ..
            } => {
                all.push(("namespace".into(), namespace));
                all.push(("workload".into(), workload));
                for (name, value) in env {
                    all.push((format!("env.{name}"), value));
                }
            }
            ActionSpec::Scale {
                namespace,
                workload,
                replicas,
                ..
            } => {
                all.push(("namespace".into(), namespace));
                all.push(("workload".into(), workload));
                if let toml::Value::String(text) = replicas {
                    all.push(("replicas".into(), text));
                }
            }
            ActionSpec::Exec { argv, target, .. } => {
                for (index, argument) in argv.iter().enumerate() {
                    all.push((format!("argv[{index}]"), argument));
                }
                if let Some(target) = target {
                    all.push(("target".into(), target));
                }
            }
            ActionSpec::Http {
                url,
                headers,
                body,
                target,
                ..
            } => {
                if let Some(target) = target {
                    all.push(("target".into(), target));
                }
                all.push(("url".into(), url));
                for (name, value) in headers {
                    all.push((format!("headers.{name}"), value));
                }
                all.push(("body".into(), body));
            }
        }
        all
    }

    /// The namespace, when it is written out rather than templated.
    pub fn literal_namespace(&self) -> Option<&str> {
        match self {
            ActionSpec::RolloutRestart { namespace, .. }
            | ActionSpec::SetEnv { namespace, .. }
            | ActionSpec::Scale { namespace, .. } => {
                Template::is_literal(namespace).then_some(namespace.as_str())
            }
            _ => None,
        }
    }

    /// Check the action; every problem is returned. Whether its namespace is in the
    /// allowlist is checked when it runs (and reported by `check` as a warning), so that a
    /// rule file stays valid on a host whose allowlist does not include it yet.
    pub fn validate(&self, sample: &impl Serialize) -> Vec<String> {
        let mut problems = Vec::new();
        for (field, source) in self.templates() {
            if let Err(error) = Template::compile(source, sample) {
                problems.push(format!("{field}: {error}"));
            }
        }
        let kubernetes_target = match self {
            ActionSpec::RolloutRestart {
                namespace,
                workload,
                ..
            }
            | ActionSpec::SetEnv {
                namespace,
                workload,
                ..
            }
            | ActionSpec::Scale {
                namespace,
                workload,
                ..
            } => Some((namespace, workload)),
            _ => None,
        };
        if let Some((namespace, workload)) = kubernetes_target {
            if Template::is_literal(namespace) && !super::is_rfc1123_label(namespace) {
                problems.push(format!(
                    "namespace {namespace:?} is not a valid namespace name"
                ));
            }
            if let Err(problem) = check_workload(workload) {
                problems.push(problem);
            }
        }
        match self {
            ActionSpec::SetEnv {
                env,
                remove,
                containers,
                ..
            } => {
                if env.is_empty() && remove.is_empty() {
                    problems.push("set_env needs env or remove".to_owned());
                }
                for name in env.keys().chain(remove.iter()) {
                    if !is_env_name(name) {
                        problems.push(format!("{name:?} is not a valid environment variable name"));
                    }
                }
                if containers.is_empty() {
                    problems.push("containers is empty; use [\"*\"] for all".to_owned());
                }
            }
            ActionSpec::Scale { replicas, .. } => match replicas {
                toml::Value::Integer(n) if *n >= 0 => {}
                toml::Value::String(text) if !Template::is_literal(text) => {}
                toml::Value::String(text) if text.parse::<u32>().is_ok() => {}
                other => problems.push(format!(
                    "replicas must be a non-negative integer or a template, got {other}"
                )),
            },
            ActionSpec::Exec { argv, .. }
                if argv.iter().any(|argument| argument.contains("secret(")) =>
            {
                problems.push(
                    "secret() is not allowed in exec arguments: every user of the host can read a \
                     process's arguments; let the command read the secret file itself"
                        .to_owned(),
                )
            }
            ActionSpec::Exec { argv, .. } => match argv.first() {
                None => problems.push("argv is empty".to_owned()),
                Some(program) if !Template::is_literal(program) => {
                    problems.push("argv[0], the program, must not be a template".to_owned())
                }
                Some(_) => {}
            },
            ActionSpec::Http {
                method,
                url,
                expect_status,
                ..
            } => {
                if url.contains("secret(") {
                    problems.push(
                        "secret() is not allowed in the url: URLs end up in logs and proxies; \
                         put the secret in a header or the body"
                            .to_owned(),
                    );
                }
                if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
                    problems.push(format!(
                        "method {method:?} is not one of GET POST PUT PATCH DELETE"
                    ));
                }
                if let Err(problem) = check_fixed_origin(url) {
                    problems.push(problem);
                }
                if expect_status.iter().any(|s| !(100..600).contains(s)) {
                    problems.push("expect_status holds a code outside 100-599".to_owned());
                }
            }
            ActionSpec::RolloutRestart { .. } => {}
        }
        problems
    }

    /// The action with each template rendered; what `explain` shows and the mitigation stage
    /// would run.
    pub fn render(&self, context: &impl Serialize) -> serde_json::Value {
        let mut rendered = serde_json::Map::new();
        rendered.insert("kind".to_owned(), self.kind().into());
        for (field, source) in self.templates() {
            let template = Template {
                source: source.to_owned(),
            };
            let value = template
                .render(context)
                .unwrap_or_else(|error| format!("<{error}>"));
            rendered.insert(field, value.into());
        }
        if let ActionSpec::Scale {
            replicas: toml::Value::Integer(n),
            ..
        } = self
        {
            rendered.insert("replicas".to_owned(), (*n).into());
        }
        if let ActionSpec::SetEnv {
            remove, containers, ..
        } = self
        {
            rendered.insert("remove".to_owned(), serde_json::json!(remove));
            rendered.insert("containers".to_owned(), serde_json::json!(containers));
        }
        if let ActionSpec::Http { method, .. } = self {
            rendered.insert("method".to_owned(), method.clone().into());
        }
        rendered.insert(
            "revert_on_resolve".to_owned(),
            self.revert_on_resolve().into(),
        );
        serde_json::Value::Object(rendered)
    }
}

fn check_workload(workload: &str) -> Result<(), String> {
    if !Template::is_literal(workload) {
        return Ok(());
    }
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

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The scheme and host of an `http` action must be written out, not templated, so that alert
/// labels can never redirect the call.
fn check_fixed_origin(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("url {url:?} must start with http:// or https://"));
    };
    if !matches!(scheme, "http" | "https") {
        return Err(format!("url scheme {scheme:?} must be http or https"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || !Template::is_literal(authority) {
        return Err(format!(
            "url {url:?}: the host must be written out; templates may only fill the path, query and body"
        ));
    }
    Ok(())
}

/// Kept in one place so that the duplicated common fields above stay in step.
impl Common {
    pub fn of(spec: &ActionSpec) -> Common {
        match spec {
            ActionSpec::RolloutRestart {
                description,
                revert_on_resolve,
                verify_window,
                cooldown,
                ..
            }
            | ActionSpec::SetEnv {
                description,
                revert_on_resolve,
                verify_window,
                cooldown,
                ..
            }
            | ActionSpec::Scale {
                description,
                revert_on_resolve,
                verify_window,
                cooldown,
                ..
            }
            | ActionSpec::Exec {
                description,
                revert_on_resolve,
                verify_window,
                cooldown,
                ..
            }
            | ActionSpec::Http {
                description,
                revert_on_resolve,
                verify_window,
                cooldown,
                ..
            } => Common {
                description: description.clone(),
                revert_on_resolve: *revert_on_resolve,
                verify_window: *verify_window,
                cooldown: *cooldown,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ActionSpec {
        toml::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn problems(text: &str) -> Vec<String> {
        let sample = serde_json::json!({"labels": {"namespace": "vastai"}});
        parse(text).validate(&sample)
    }

    #[test]
    fn valid_actions_pass() {
        for text in [
            "kind = \"kubernetes.rollout_restart\"\nnamespace = \"vastai\"\nworkload = \"deployment/vastai-integration\"",
            "kind = \"kubernetes.set_env\"\nnamespace = \"vastai\"\nworkload = \"deployment/x\"\nenv = { VASTAI_FALLBACK = \"true\" }\nrevert_on_resolve = true",
            "kind = \"kubernetes.scale\"\nnamespace = \"{{ labels.namespace }}\"\nworkload = \"deployment/x\"\nreplicas = 3",
            "kind = \"exec\"\nargv = [\"/usr/bin/logger\", \"{{ labels.alertname }}\"]",
            "kind = \"http\"\nurl = \"https://hooks.example.com/path/{{ labels.alertname }}\"\nexpect_status = [200]",
        ] {
            assert_eq!(problems(text), Vec::<String>::new(), "{text}");
        }
    }

    #[test]
    fn unsafe_or_broken_actions_are_refused() {
        for (text, message) in [
            (
                "kind = \"kubernetes.rollout_restart\"\nnamespace = \"Kube_System\"\nworkload = \"deployment/x\"",
                "not a valid namespace name",
            ),
            (
                "kind = \"kubernetes.rollout_restart\"\nnamespace = \"vastai\"\nworkload = \"pod/x\"",
                "must be deployment",
            ),
            (
                "kind = \"kubernetes.rollout_restart\"\nnamespace = \"vastai\"\nworkload = \"deployment/X_Y\"",
                "not a valid Kubernetes name",
            ),
            (
                "kind = \"kubernetes.set_env\"\nnamespace = \"vastai\"\nworkload = \"deployment/x\"\nenv = { \"1BAD\" = \"x\" }",
                "not a valid environment variable",
            ),
            (
                "kind = \"kubernetes.scale\"\nnamespace = \"vastai\"\nworkload = \"deployment/x\"\nreplicas = -1",
                "non-negative",
            ),
            (
                "kind = \"exec\"\nargv = [\"{{ labels.cmd }}\"]",
                "must not be a template",
            ),
            (
                "kind = \"http\"\nurl = \"https://{{ labels.host }}/x\"",
                "host must be written out",
            ),
            ("kind = \"http\"\nurl = \"ftp://x/y\"", "http or https"),
            (
                "kind = \"http\"\nurl = \"https://x/{{ secret('t') }}\"",
                "not allowed in the url",
            ),
            (
                "kind = \"exec\"\nargv = [\"/bin/echo\", \"{{ labels.a | nofilter }}\"]",
                "argv[1]: template error",
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
        assert!(
            toml::from_str::<ActionSpec>("kind = \"exec\"\nargv = [\"x\"]\nshell = true").is_err()
        );
        assert!(toml::from_str::<ActionSpec>("kind = \"kubernetes.delete\"").is_err());
    }

    #[test]
    fn rendering_fills_templates() {
        let spec = parse(
            "kind = \"kubernetes.set_env\"\nnamespace = \"{{ labels.namespace }}\"\nworkload = \"deployment/x\"\nenv = { MODE = \"queue\" }",
        );
        let rendered = spec.render(&serde_json::json!({"labels": {"namespace": "vastai"}}));
        assert_eq!(rendered["namespace"], "vastai");
        assert_eq!(rendered["env.MODE"], "queue");
        assert_eq!(Common::of(&spec).cooldown, Duration::from_secs(1800));
    }
}
