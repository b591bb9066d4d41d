//! rules::collect::render: a collector filled in for one incident: templates rendered from
//! its context, times resolved (the range query's window is rounded so a storm's alerts share
//! one), and rendered names checked; the result is a [`CollectorRequest`] for the bundle.

use std::collections::BTreeMap;
use std::time::Duration;

use super::spec::{At, CollectorSpec, MAX_POINTS};
use super::validate::{check_selector, check_workload};
use crate::act::actions::{exec, http};
use crate::bundle::request::{CollectorRequest, RequestKind};
use crate::clock::Millis;
use crate::rules::template::Template;
use crate::rules::{AlertInput, Severity};

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
            if crate::rules::is_rfc1123_label(&value) {
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

/// Unix milliseconds as RFC 3339 UTC, to the second (or millisecond when there are some).
pub fn rfc3339(millis: Millis) -> String {
    crate::clock::millis_to_datetime(millis).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::collect::fixtures::{alert, render};

    const MINUTE: i64 = 60_000;

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
}
