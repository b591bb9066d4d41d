//! The Prometheus rules that watch nightshift itself (config/prometheus/nightshift-alerts.yml)
//! pass promtool's check and their unit tests, and watch only metrics nightshift exports.

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
