//! The shipped runbooks stay valid: their own [[test]] cases pass, they load without errors
//! or warnings on a host that allows their namespaces, the Prometheus rules that raise their
//! alerts pass promtool, and `explain` works on real Alertmanager payloads.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn nightshift(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nightshift"))
        .args(args)
        .current_dir(ROOT)
        .output()
        .expect("run nightshift")
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A config that points at the repository's rules and allows their namespaces, and whose
/// probes cannot reach anything (so `explain` without --probe shows probe failures).
fn config(dir: &Path) -> String {
    let path = dir.join("nightshift.toml");
    std::fs::write(
        &path,
        format!(
            "[rules]\ndir = \"{ROOT}/rules\"\n[kubernetes]\nnamespaces = [\"vastai\", \"default\", \"monitoring\"]\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// Copy the Vast.ai runbook (and its payloads) into `dir`, changed by `edit`.
fn copy_runbook(dir: &Path, edit: impl Fn(&str) -> String) -> std::path::PathBuf {
    let original = std::fs::read_to_string(Path::new(ROOT).join("rules/vastai.toml")).unwrap();
    let file = dir.join("vastai.toml");
    std::fs::write(&file, edit(&original)).unwrap();
    std::fs::create_dir_all(dir.join("payloads")).unwrap();
    for entry in std::fs::read_dir(Path::new(ROOT).join("rules/payloads")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join("payloads").join(entry.file_name())).unwrap();
    }
    file
}

#[test]
fn rule_tests_pass() {
    let output = nightshift(&["test", "rules/"]);
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(
        out.contains("Unit Testing: rules/vastai.toml\n  SUCCESS"),
        "{out}"
    );
    assert!(
        out.contains("Unit Testing: rules/kubernetes.toml\n  SUCCESS"),
        "{out}"
    );
}

#[test]
fn a_failing_rule_test_fails_the_command() {
    let dir = tempfile::tempdir().unwrap();
    // Expect the wrong branch somewhere: the runner must notice.
    let file = copy_runbook(dir.path(), |text| {
        assert!(text.contains("branch = \"provider-outage\""));
        text.replacen("branch = \"provider-outage\"", "branch = \"our-side\"", 1)
    });
    let output = nightshift(&["test", file.to_str().unwrap()]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("FAILED: 1 of"), "{out}");
    assert!(
        out.contains("expected branch \"our-side\", got \"provider-outage\""),
        "{out}"
    );
}

#[test]
fn runbooks_load_cleanly_where_their_namespaces_are_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let output = nightshift(&["check", "--config", &config]);
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(!out.contains("warning"), "{out}");
    assert!(out.contains("rules in 2 files OK"), "{out}");
}

#[test]
fn prometheus_rules_for_the_vastai_alerts_pass_promtool() {
    for args in [
        vec!["check", "rules", "config/prometheus/vastai-alerts.yml"],
        vec!["test", "rules", "config/prometheus/vastai-alerts.test.yml"],
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
    // Every alert the runbook handles is raised by these Prometheus rules.
    let alerts =
        std::fs::read_to_string(Path::new(ROOT).join("config/prometheus/vastai-alerts.yml"))
            .unwrap();
    for name in [
        "VastaiApiUnreachable",
        "VastaiAuthErrors",
        "VastaiRateLimited",
        "VastaiServerErrors",
        "VastaiHighLatency",
        "VastaiWebhookDelays",
        "VastaiMetricsAbsent",
    ] {
        assert!(alerts.contains(&format!("alert: {name}")), "{name}");
    }
}

#[test]
fn explain_works_on_real_alertmanager_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    for entry in std::fs::read_dir(Path::new(ROOT).join("tests/fixtures/alertmanager")).unwrap() {
        let path = entry.unwrap().path();
        let output = nightshift(&[
            "explain",
            "--config",
            &config,
            "--payload",
            path.to_str().unwrap(),
            "--json",
        ]);
        let out = text(&output);
        assert!(output.status.success(), "{}: {out}", path.display());
        let explained: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let body: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            explained.as_array().unwrap().len(),
            body["alerts"].as_array().unwrap().len(),
            "{}",
            path.display()
        );
        for alert in explained.as_array().unwrap() {
            // These captured alerts match no runbook: the default rule grades them.
            assert_eq!(alert["decision"]["branch"], "default", "{}", path.display());
            assert!(alert["incident_id"].as_str().unwrap().contains('-'));
        }
    }
    // A Vast.ai payload with the status probe given: the provider-outage branch, and the
    // fallback action rendered, with nothing run.
    let output = nightshift(&[
        "explain",
        "--config",
        &config,
        "--payload",
        "rules/payloads/vastai-api-unreachable.json",
        "--probe",
        r#"status={"indicator":"major","description":"Major outage"}"#,
    ]);
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(out.contains("rule      vastai-api-unreachable"), "{out}");
    assert!(out.contains("branch    provider-outage"), "{out}");
    assert!(out.contains("VASTAI_FALLBACK"), "{out}");
    assert!(out.contains("(given,"), "{out}");
    // Without --probe the probe runs live. Tests talk to 127.0.0.1 only, so the runbook is
    // copied with its status page pointed at a closed local port: the rule confirms
    // nothing and acts on nothing.
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    copy_runbook(&rules, |text| {
        text.replace("https://status.vast.ai", &format!("http://{closed}"))
    });
    let local = dir.path().join("local.toml");
    std::fs::write(
        &local,
        format!(
            "[rules]\ndir = \"{}\"\n[kubernetes]\nnamespaces = [\"vastai\"]\n",
            rules.display()
        ),
    )
    .unwrap();
    let output = nightshift(&[
        "explain",
        "--config",
        local.to_str().unwrap(),
        "--payload",
        "rules/payloads/vastai-api-unreachable.json",
    ]);
    let out = text(&output);
    assert!(out.contains("branch    on_probe_failure"), "{out}");
    assert!(out.contains("actions   none"), "{out}");
}

/// A misspelt key in the config file and a misspelt environment override are both reported
/// by `check`, at once: the file's with its `file:line`, the override's with the variable's
/// name, each with the key that was probably meant.
#[test]
fn check_suggests_the_nearest_key_for_a_typo_in_the_file_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nightshift.toml");
    std::fs::write(
        &path,
        format!("[rules]\ndir = \"{ROOT}/rules\"\n[server]\nlistn = \"127.0.0.1:9\"\n"),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_nightshift"))
        .args(["check", "--config", path.to_str().unwrap()])
        .current_dir(ROOT)
        .env("NIGHTSHIFT_SERVR__LISTEN", "127.0.0.1:9")
        .env("NIGHTSHIFT_LOG__LEVL", "debug")
        .output()
        .expect("run nightshift");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "{}:4: server.listn: unknown field `listn`; did you mean `listen`?",
                path.display()
            ),
            // Every override is reported, in name order.
            "environment NIGHTSHIFT_LOG__LEVL: log.levl: unknown field `levl`; did you mean \
             `level`?"
                .to_owned(),
            "environment NIGHTSHIFT_SERVR__LISTEN: servr: unknown section; did you mean \
             [server]?"
                .to_owned(),
        ],
        "{}",
        text(&output)
    );
}
