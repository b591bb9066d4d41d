//! The Prometheus rules that watch nightshift itself (config/prometheus/nightshift-alerts.yml)
//! pass promtool's check and their unit tests, and select only series a running nightshift
//! exports (with the label values they ask for); and
//! what the daemon logs about itself reads as a person would write it.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const RULES: &str = "config/prometheus/nightshift-alerts.yml";
const RULE_TESTS: &str = "config/prometheus/nightshift-alerts.test.yml";

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn self_monitoring_rules_pass_promtool() {
    for args in [
        vec!["check", "rules", RULES],
        vec!["test", "rules", RULE_TESTS],
    ] {
        let output = Command::new("promtool")
            .args(&args)
            .current_dir(ROOT)
            .output()
            .expect("promtool (Debian package prometheus; .ci/run installs it)");
        assert!(
            output.status.success(),
            "promtool {args:?}: {}",
            text(&output)
        );
    }
    let rules = std::fs::read_to_string(Path::new(ROOT).join(RULES)).unwrap();
    for name in [
        "NightshiftDown",
        "NightshiftOutboxBacklog",
        "NightshiftPageDeliveryFailing",
        "NightshiftPagesRejected",
        "NightshiftFallbackUsed",
        "NightshiftStoreFailing",
        "NightshiftRuleLoadFailing",
        "NightshiftConfigReloadFailing",
        "NightshiftActionBudgetExhausted",
        "NightshiftPausedForLong",
        "NightshiftSelfPaging",
        "NightshiftWebhooksRejected",
    ] {
        assert!(rules.contains(&format!("alert: {name}")), "{name}");
    }
}

/// Every `nightshift_[a-z_]+` token in `text` that starts a word.
fn metric_names(text: &str) -> BTreeSet<String> {
    const PREFIX: &str = "nightshift_";
    let mut names = BTreeSet::new();
    for (start, _) in text.match_indices(PREFIX) {
        let starts_word = text[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        if !starts_word {
            continue;
        }
        let rest = &text[start + PREFIX.len()..];
        let len = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(rest.len());
        if len > 0 {
            names.insert(format!("{PREFIX}{}", &rest[..len]));
        }
    }
    names
}

/// A series an alert selects: the metric and, per label, the values it accepts (`=` one,
/// `=~"a|b"` any of them). `job` and `instance` are Prometheus's own labels.
#[derive(Debug)]
struct Selector {
    metric: String,
    labels: Vec<(String, Vec<String>)>,
}

/// Each alert of `rules` with the nightshift series its `expr` selects.
fn alert_selectors(rules: &str) -> Vec<(String, Vec<Selector>)> {
    let mut alerts = Vec::new();
    for block in rules.split("- alert: ").skip(1) {
        let name = block.lines().next().unwrap_or_default().trim().to_owned();
        let Some((_, after)) = block.split_once("expr:") else {
            continue;
        };
        let expr: String = after
            .lines()
            .take_while(|line| {
                let line = line.trim_start();
                !(line.starts_with("for:") || line.starts_with("labels:"))
            })
            .collect::<Vec<_>>()
            .join("\n");
        let mut selectors = Vec::new();
        for metric in metric_names(&expr) {
            for (start, _) in expr.match_indices(&metric) {
                let rest = &expr[start + metric.len()..];
                if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
                    continue;
                }
                let mut labels = Vec::new();
                if let Some(inside) = rest.strip_prefix('{').and_then(|r| r.split_once('}')) {
                    for matcher in inside.0.split(',') {
                        let (label, values) = if let Some((label, value)) = matcher.split_once("=~")
                        {
                            let value = value.trim().trim_matches('"');
                            (label, value.split('|').map(str::to_owned).collect())
                        } else if let Some((label, value)) = matcher.split_once('=') {
                            (label, vec![value.trim().trim_matches('"').to_owned()])
                        } else {
                            continue;
                        };
                        let label = label.trim();
                        if label != "job" && label != "instance" {
                            labels.push((label.to_owned(), values));
                        }
                    }
                }
                selectors.push(Selector {
                    metric: metric.clone(),
                    labels,
                });
            }
        }
        alerts.push((name, selectors));
    }
    alerts
}

/// Every sample of an exposition: (metric name, labels).
fn samples(exposition: &str) -> Vec<(String, Vec<(String, String)>)> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, _value) = line.rsplit_once(' ')?;
            let Some((name, labels)) = series.split_once('{') else {
                return Some((series.to_owned(), Vec::new()));
            };
            let labels = labels
                .trim_end_matches('}')
                .split("\",")
                .filter_map(|pair| pair.split_once("=\""))
                .map(|(k, v)| (k.to_owned(), v.trim_end_matches('"').to_owned()))
                .collect();
            Some((name.to_owned(), labels))
        })
        .collect()
}

fn exported(samples: &[(String, Vec<(String, String)>)], selector: &Selector) -> bool {
    samples.iter().any(|(name, labels)| {
        let same_metric = name == &selector.metric
            || ["_bucket", "_count", "_sum"]
                .iter()
                .any(|suffix| *name == format!("{}{suffix}", selector.metric));
        same_metric
            && selector.labels.iter().all(|(label, values)| {
                labels
                    .iter()
                    .any(|(k, v)| k == label && values.iter().any(|value| value == v))
            })
    })
}

/// A rule whose exec action (two targets, an hourly budget of one) spends the budget.
const KICK_RULES: &str = r#"
[[rule]]
name = "kick"
matchers = ['alertname="Kick"']
severity = "P4"
[[rule.branch]]
name = "kick"
otherwise = true
actions = ["kick"]

[action.kick]
kind = "exec"
target = "kick-{{ labels.instance }}"
argv = ["/bin/true"]
"#;

/// The series each self-monitoring alert selects are exported by a running daemon, with the
/// label values the alert asks for, once the daemon has done what they count: a page retried
/// then delivered, a page PagerDuty rejects, a webhook refused, an action stopped by the
/// budget, a store that is full. An alert on a series nightshift never exports would never
/// fire.
#[test]
fn each_self_monitoring_alert_selects_series_a_running_daemon_exports() {
    use crate::common::{ADMIN, JSON, Stack, client, wait_for, webhook};
    use crate::fakes::pagerduty::Mode;
    use std::time::Duration;

    let rules = std::fs::read_to_string(Path::new(ROOT).join(RULES)).unwrap();
    let alerts = alert_selectors(&rules);
    assert!(alerts.len() >= 12, "{alerts:#?}");
    let watched = alerts.iter().filter(|(_, s)| !s.is_empty()).count();
    assert!(watched >= 11, "{alerts:#?}");
    assert!(
        alerts
            .iter()
            .flat_map(|(_, selectors)| selectors)
            .any(|selector| selector.metric == "nightshift_store_writable"),
        "{alerts:#?}"
    );
    // The label values are read too, not only the names.
    assert!(
        alerts
            .iter()
            .flat_map(|(_, selectors)| selectors)
            .any(|selector| {
                selector.metric == "nightshift_actions_total"
                    && selector.labels == [("outcome".to_owned(), vec!["budget".to_owned()])]
            }),
        "{alerts:#?}"
    );

    let stack = Stack::builder()
        .pagerduty()
        .slack_fallback()
        .ingest_token(true)
        .rules("kick.toml", KICK_RULES)
        .extra("[actions]\nmode = \"enforce\"\nhourly_budget = 1\n")
        .start();
    let metric = |series: &str| -> f64 {
        stack
            .metrics()
            .lines()
            .find_map(|line| {
                line.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    let wait_metric = |series: &str| {
        let seen = wait_for(Duration::from_secs(60), || {
            (metric(series) >= 1.0).then_some(())
        });
        assert!(
            seen.is_some(),
            "{series} never counted:\n{}\n{}",
            stack.metrics(),
            stack.daemon.log()
        );
    };
    // A webhook with a wrong credential.
    let refused = client().post(
        &format!("{}/webhook", stack.daemon.base),
        &[JSON, ("Authorization", "Bearer wrong")],
        b"{}",
    );
    assert_eq!(refused.status, 401, "{}", refused.body);
    // A page PagerDuty answers 500 once: retried, then delivered.
    stack.pd().fail_next(1, Mode::Error500);
    stack.post_webhook(&webhook(
        "Retried",
        &[("Retried", "r-1", "firing", "2026-11-28T03:00:00Z")],
        0,
    ));
    wait_metric("nightshift_notify_events_total{notifier=\"pagerduty\",outcome=\"retry\"}");
    wait_metric("nightshift_notify_events_total{notifier=\"pagerduty\",outcome=\"delivered\"}");
    // A page PagerDuty refuses.
    stack
        .pd()
        .set_mode(Mode::Reject400(vec!["Event object is invalid".to_owned()]));
    stack.post_webhook(&webhook(
        "Rejected",
        &[("Rejected", "x-1", "firing", "2026-11-28T03:00:00Z")],
        0,
    ));
    wait_metric("nightshift_notify_events_total{notifier=\"pagerduty\",outcome=\"rejected\"}");
    // Two actions in an hour with a budget of one.
    for instance in ["k-1", "k-2"] {
        stack.post_webhook(&webhook(
            "Kick",
            &[("Kick", instance, "firing", "2026-11-28T03:00:00Z")],
            0,
        ));
    }
    wait_metric("nightshift_actions_total{kind=\"exec\",outcome=\"budget\"}");
    // A store capped below its size: the next webhook cannot be stored.
    let config = std::fs::read_to_string(&stack.daemon.config).unwrap();
    std::fs::write(
        &stack.daemon.config,
        format!("{config}[store]\nmax_size_bytes = 4096\n"),
    )
    .unwrap();
    let reload = client().post(
        &format!("{}/-/reload", stack.daemon.base),
        &[("Authorization", ADMIN)],
        b"",
    );
    assert_eq!(reload.status, 200, "{}", reload.body);
    let big = serde_json::json!({
        "version": "4", "status": "firing", "receiver": "nightshift", "groupKey": "big",
        "alerts": [{"status": "firing", "labels": {"alertname": "Big", "instance": "b-1"},
                    "annotations": {"description": "x".repeat(200_000)},
                    "startsAt": "2026-11-28T03:00:00Z"}],
    })
    .to_string();
    let full = wait_for(Duration::from_secs(20), || {
        (stack.try_post_webhook(&big).status == 503).then_some(())
    });
    assert!(
        full.is_some(),
        "the capped store took it:\n{}",
        stack.daemon.log()
    );
    wait_metric("nightshift_webhook_requests_total{outcome=\"store_unavailable\"}");

    let exposition = stack.metrics();
    let samples = samples(&exposition);
    let missing: Vec<String> = alerts
        .iter()
        .flat_map(|(alert, selectors)| {
            selectors
                .iter()
                .filter(|selector| !exported(&samples, selector))
                .map(move |selector| format!("{alert}: {selector:?}"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{RULES} selects series the daemon does not export: {missing:#?}\n{exposition}"
    );
}

/// A night's log lines (start, an alert, pause for a while and until resumed, reload, stop)
/// carry times as RFC 3339 and durations as `30m`: no epoch milliseconds, no sentinel numbers,
/// no Rust `Debug` text.
#[test]
fn the_daemon_log_reads_as_a_person_would_write_it() {
    use std::time::Duration;

    let mut daemon = common::Daemon::start("");
    let body = common::webhook(
        "DiskFull",
        &[("DiskFull", "db-1", "firing", "2026-11-28T03:00:00Z")],
        0,
    );
    let response = common::client().post(
        &format!("{}/webhook", daemon.base),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let paused = daemon.cli(&["pause", "--for", "1h30m", "--reason", "deploy freeze"]);
    assert!(paused.status.success(), "{}", text(&paused));
    let forever = daemon.cli(&["pause"]);
    assert!(forever.status.success(), "{}", text(&forever));
    daemon.signal(1);
    let reloaded = common::wait_for(Duration::from_secs(20), || {
        daemon
            .log()
            .contains("configuration reloaded")
            .then_some(())
    });
    assert!(reloaded.is_some(), "no reload in:\n{}", daemon.log());
    let decided = common::wait_for(Duration::from_secs(20), || {
        daemon.log().contains("decision recorded").then_some(())
    });
    assert!(decided.is_some(), "no decision in:\n{}", daemon.log());
    assert!(daemon.terminate().success());
    let log = daemon.log();

    // A pause for a while names its end as a point in time; a pause without one says so.
    let timed = log
        .lines()
        .find(|line| line.contains("automatic actions paused until 2"))
        .unwrap_or_else(|| panic!("no timed pause in:\n{log}"));
    let at = timed
        .split("paused until ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(at).is_ok(),
        "{at:?} is not RFC 3339: {timed}"
    );
    assert!(
        log.contains("automatic actions paused until resumed"),
        "{log}"
    );
    assert!(log.contains("stopped cleanly"), "{log}");
    for line in log.lines() {
        for debug_text in [
            "Some(",
            "None",
            "[\"",
            "{ ",
            "4294967294",
            "4611686018427387903",
        ] {
            assert!(
                !line.contains(debug_text),
                "{debug_text:?} in a log line: {line}"
            );
        }
        // Durations and ages are written out (`20s`), not as Debug (`20.000s`) or raw millis.
        assert!(!line.contains("_ms="), "milliseconds field in: {line}");
        for field in ["deadline=", "elapsed=", "until="] {
            if let Some(value) = line.split(field).nth(1).and_then(|v| v.split(' ').next()) {
                assert!(
                    !value.contains('.') || value.contains('T'),
                    "{field}{value} in: {line}"
                );
            }
        }
    }
}
