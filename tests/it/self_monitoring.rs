//! The Prometheus rules that watch nightshift itself (config/prometheus/nightshift-alerts.yml)
//! pass promtool's check and their unit tests, and watch only metrics nightshift exports; and
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

#[test]
fn self_monitoring_rules_watch_metrics_nightshift_exports() {
    let rules = std::fs::read_to_string(Path::new(ROOT).join(RULES)).unwrap();
    let telemetry = std::fs::read_to_string(Path::new(ROOT).join("src/telemetry.rs")).unwrap();
    let used = metric_names(&rules);
    assert!(used.contains("nightshift_store_writable"), "{used:?}");
    // The catalogue names each metric as a string literal.
    let missing: Vec<&String> = used
        .iter()
        .filter(|name| !telemetry.contains(&format!("\"{name}\"")))
        .collect();
    assert!(
        missing.is_empty(),
        "{RULES} uses metrics that src/telemetry.rs does not define: {missing:?}"
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
