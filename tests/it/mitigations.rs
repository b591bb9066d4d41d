//! The Vast.ai runbook's actions, end to end: a real webhook payload into the daemon binary,
//! the decision, the governor, and the change on a fake Kubernetes API server that applies
//! patches with real strategic-merge semantics.

use crate::fakes;

use crate::common::*;
use std::path::Path;
use std::time::Duration;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const TOKEN: &str = "Bearer e2e-ingest";

/// The daemon with the shipped Vast.ai runbook (status page pointed at a fake), a fake API
/// server holding deployment vastai/vastai-integration, and `extra` config.
fn setup(extra: &str, ingest_token: bool) -> Stack {
    let stack = Stack::builder()
        .vastai_runbook()
        .kubernetes(&["vastai"])
        .ingest_token(ingest_token)
        // Bundles have their own tests (tests/it/bundles.rs); here the API server's requests
        // are the actions' alone.
        .extra(&format!("[bundles]\nenabled = false\n{extra}"))
        .start();
    stack.kube().put(fakes::kube::workload(
        "Deployment",
        "vastai",
        "vastai-integration",
        &[("app", "vastai")],
    ));
    stack
}

/// A web server on 127.0.0.1 that records every request and answers with `answer(request)`.
fn recording_server(
    runtime: &tokio::runtime::Runtime,
    answer: fn(&fakes::Recorded) -> String,
) -> (fakes::Journal, fakes::Server) {
    use axum::response::IntoResponse;
    let journal = fakes::Journal::default();
    let server = runtime.block_on(fakes::Server::serve(
        journal.clone(),
        move |journal, request| async move {
            let recorded = journal.record(request).await;
            answer(&recorded).into_response()
        },
    ));
    (journal, server)
}

/// The shipped runbook's captured VastaiApiUnreachable webhook.
fn unreachable_payload() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("rules/payloads/vastai-api-unreachable.json"))
        .unwrap()
}

fn post(setup: &Stack, body: &str) {
    setup.post_webhook(body);
}

/// Every action recorded for every incident, once `count` of them exist.
fn actions(setup: &Stack, count: usize) -> Vec<serde_json::Value> {
    wait_for(Duration::from_secs(30), || {
        let list = client()
            .get(
                &format!("{}/api/v1/incidents?limit=1000", setup.daemon.base),
                &[],
            )
            .json();
        let mut all = Vec::new();
        for incident in list["incidents"].as_array()? {
            let id = incident["id"].as_str()?;
            let detail = client()
                .get(&format!("{}/api/v1/incidents/{id}", setup.daemon.base), &[])
                .json();
            all.extend(detail["actions"].as_array()?.iter().cloned());
        }
        let settled = all
            .iter()
            .all(|a| a["state"] != "planned" && a["state"] != "started");
        (all.len() >= count && settled).then_some(all)
    })
    .unwrap_or_else(|| panic!("no {count} settled action(s):\n{}", setup.daemon.log()))
}

fn env_of(setup: &Stack) -> serde_json::Value {
    let object = setup
        .kube()
        .workload_object("Deployment", "vastai", "vastai-integration")
        .unwrap();
    object["spec"]["template"]["spec"]["containers"][0]["env"].clone()
}

#[test]
fn a_provider_outage_enables_the_fallback_on_the_deployment() {
    let setup = setup("[actions]\nmode = \"enforce\"\n", true);
    setup.status().set_indicator("major", "Partial API outage");
    let payload = unreachable_payload();
    post(&setup, &payload);
    let actions = actions(&setup, 1);
    assert_eq!(actions.len(), 1, "{actions:#?}");
    let action = &actions[0];
    assert_eq!(action["action"], "fallback");
    assert_eq!(action["verdict"], "run");
    assert_eq!(action["state"], "done", "{action:#}");
    assert_eq!(action["target"], "deployment/vastai/vastai-integration");
    assert_eq!(
        env_of(&setup),
        serde_json::json!([{"name": "VASTAI_FALLBACK", "value": "true"}])
    );
    let writes = setup.kube().writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(
        fakes::kube::content_type(&writes[0]),
        "application/strategic-merge-patch+json"
    );
    // The same payload again (an Alertmanager retry) does nothing new: once it is
    // reconciled and nothing is left to do, still one write.
    post(&setup, &payload);
    setup.wait_settled(2);
    assert_eq!(setup.kube().writes().len(), 1);
}

#[test]
fn a_storm_for_one_deployment_restarts_it_once() {
    let setup = setup("[actions]\nmode = \"enforce\"\n", true);
    setup
        .status()
        .set_indicator("none", "All Systems Operational");
    // 40 incidents of our side, in 4 groups, all asking to restart the same deployment.
    for group in 0..4 {
        let alerts: Vec<(String, String)> = (0..10)
            .map(|n| (format!("pod-{group}-{n}"), "firing".to_owned()))
            .collect();
        let alerts: Vec<serde_json::Value> = alerts
            .iter()
            .map(|(instance, status)| {
                serde_json::json!({
                    "status": status,
                    "labels": {"alertname": "VastaiApiUnreachable", "namespace": "vastai", "instance": instance, "severity": "critical"},
                    "annotations": {"summary": "unreachable"},
                    "startsAt": "2026-11-28T03:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z",
                })
            })
            .collect();
        let body = serde_json::json!({
            "version": "4", "status": "firing", "receiver": "nightshift",
            "groupKey": format!("{{}}:{{group=\"{group}\"}}"), "alerts": alerts,
        });
        post(&setup, &body.to_string());
    }
    let actions = actions(&setup, 40);
    let runs: Vec<_> = actions.iter().filter(|a| a["verdict"] == "run").collect();
    assert_eq!(runs.len(), 1, "{actions:#?}");
    assert_eq!(runs[0]["action"], "restart");
    assert_eq!(runs[0]["state"], "done");
    let skipped = actions
        .iter()
        .filter(|a| a["verdict"] == "cooldown" || a["verdict"] == "in_flight")
        .count();
    assert_eq!(skipped, 39);
    let patches = setup.kube().writes();
    assert_eq!(patches.len(), 1, "exactly one restart patch");
    let object = setup
        .kube()
        .workload_object("Deployment", "vastai", "vastai-integration")
        .unwrap();
    let annotations = &object["spec"]["template"]["metadata"]["annotations"];
    assert!(
        annotations["kubectl.kubernetes.io/restartedAt"].is_string(),
        "{object:#}"
    );
    assert!(
        annotations["nightshift.io/action-key"].is_string(),
        "{object:#}"
    );
}

#[test]
fn dry_run_is_the_default_and_changes_nothing() {
    let setup = setup("", true);
    setup.status().set_indicator("major", "Partial API outage");
    let payload = unreachable_payload();
    post(&setup, &payload);
    let actions = actions(&setup, 1);
    assert_eq!(actions[0]["verdict"], "dry_run");
    assert_eq!(actions[0]["verdict_detail"]["would"]["verdict"], "run");
    assert_eq!(actions[0]["state"], "skipped");
    assert!(setup.kube().writes().is_empty(), "nothing was changed");
    let metrics = client()
        .get(&format!("{}/metrics", setup.daemon.base), &[])
        .body;
    assert!(metrics.contains("nightshift_actions_enforced 0"));
}

#[test]
fn enforce_with_the_webhook_opened_is_refused_at_start() {
    // Whoever can post an alert could otherwise restart deployments: the configuration is
    // refused as a whole, by `check` and by `run`, instead of running in some other mode.
    let daemon = Daemon::prepare(
        "[auth]\nallow_unauthenticated = [\"webhook\"]\n[actions]\nmode = \"enforce\"\n",
        &[],
    );
    for args in [&["check", "--config-only"][..], &["run"]] {
        let output = daemon.cli(args);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("actions.mode: enforce needs a credential on the webhook"),
            "{args:?}: {stderr}"
        );
    }
    assert!(!daemon.state_dir().join("nightshift.db").exists());
}

#[test]
fn pause_stops_every_action_until_resume() {
    let setup = setup("[actions]\nmode = \"enforce\"\n", true);
    setup.status().set_indicator("major", "Partial API outage");
    let paused = setup
        .daemon
        .cli(&["pause", "--for", "1h", "--reason", "deploy freeze"]);
    assert!(paused.status.success(), "{paused:?}");
    assert!(String::from_utf8_lossy(&paused.stdout).contains("deploy freeze"));
    // Without the admin credential the endpoint refuses.
    let refused = client().post(
        &format!("{}/-/pause", setup.daemon.base),
        &[("Authorization", TOKEN)],
        b"",
    );
    assert_eq!(refused.status, 401);
    let payload = unreachable_payload();
    post(&setup, &payload);
    let actions = actions(&setup, 1);
    assert_eq!(actions[0]["verdict"], "paused", "{actions:#?}");
    assert_eq!(actions[0]["verdict_detail"]["why"], "deploy freeze");
    assert!(setup.kube().writes().is_empty());
    let resumed = setup.daemon.cli(&["resume"]);
    assert!(resumed.status.success(), "{resumed:?}");
    let metrics = client()
        .get(&format!("{}/metrics", setup.daemon.base), &[])
        .body;
    assert!(metrics.contains("nightshift_actions_paused 0"), "{metrics}");
}

#[test]
fn a_crash_between_started_and_finished_is_settled_by_read_back_not_repeated() {
    let mut setup = setup("[actions]\nmode = \"enforce\"\n", true);
    setup
        .status()
        .set_indicator("none", "All Systems Operational");
    // The restart patch lands, but its answer is held back long enough to kill nightshift
    // while the action is marked started.
    let path = fakes::kube::workload_path("Deployment", "vastai", "vastai-integration");
    setup
        .kube()
        .delay_after_apply(axum::http::Method::PATCH, &path, Duration::from_secs(20));
    let payload = unreachable_payload();
    post(&setup, &payload);
    let applied = wait_for(Duration::from_secs(20), || {
        (!setup.kube().writes().is_empty()).then_some(())
    });
    assert!(
        applied.is_some(),
        "the restart was sent:\n{}",
        setup.daemon.log()
    );
    // The fake records a patch when it arrives and applies it after; the crash comes once
    // the change is in place (its answer is still held back).
    let landed = wait_for(Duration::from_secs(10), || {
        let object = setup
            .kube()
            .workload_object("Deployment", "vastai", "vastai-integration")?;
        object["spec"]["template"]["metadata"]["annotations"]["nightshift.io/action-key"]
            .is_string()
            .then_some(())
    });
    assert!(landed.is_some(), "{}", setup.daemon.log());
    setup.daemon.kill9();
    setup.kube().clear_faults();
    setup.daemon.spawn();
    let actions = actions(&setup, 1);
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0]["action"], "restart");
    assert_eq!(
        actions[0]["state"], "done",
        "settled by reading the action key back: {actions:#?}"
    );
    assert!(
        setup
            .daemon
            .log()
            .contains("settled an action left started by a crash")
    );
    // Re-deliveries after the restart change nothing: one restart in all (the first
    // notification this process reconciled).
    post(&setup, &payload);
    setup.wait_settled(1);
    assert_eq!(setup.kube().writes().len(), 1, "never run twice");
}

#[test]
fn an_action_that_did_not_land_before_the_crash_is_escalated_not_retried() {
    let mut setup = setup("[actions]\nmode = \"enforce\"\n", true);
    setup
        .status()
        .set_indicator("none", "All Systems Operational");
    // The API server hangs on the workload read, so the action is started but nothing was
    // changed when nightshift dies.
    let path = fakes::kube::workload_path("Deployment", "vastai", "vastai-integration");
    setup
        .kube()
        .delay(axum::http::Method::GET, &path, Duration::from_secs(20));
    let payload = unreachable_payload();
    post(&setup, &payload);
    let started = wait_for(Duration::from_secs(20), || {
        setup
            .kube()
            .calls()
            .iter()
            .any(|c| c.starts_with("GET"))
            .then_some(())
    });
    assert!(started.is_some(), "{}", setup.daemon.log());
    setup.daemon.kill9();
    setup.kube().clear_faults();
    setup.daemon.spawn();
    let actions = actions(&setup, 1);
    assert_eq!(actions[0]["state"], "failed", "{actions:#?}");
    assert!(
        actions[0]["result"]["error"]
            .as_str()
            .unwrap()
            .contains("read-back shows the change absent")
    );
    // Everything the restarted daemon had to do is done, and it wrote nothing.
    setup.wait_settled(0);
    assert!(setup.kube().writes().is_empty(), "not retried blindly");
}

#[test]
fn label_values_crafted_as_injections_stay_data() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (journal, web) = recording_server(&runtime, |_| String::new());
    let marker = tempfile::tempdir().unwrap();
    let marker_path = marker.path().join("pwned");
    let rules = format!(
        r#"
[[rule]]
name = "inject"
matchers = ['alertname="Inject"']
severity = "P3"
[[rule.branch]]
name = "act"
otherwise = true
actions = ["echo", "call"]

# Each incident has its own target here, so each gets its own run.
[action.echo]
kind = "exec"
target = "echo-{{{{ labels.n }}}}"
argv = ["/usr/bin/printf", "[%s]", "{{{{ labels.payload }}}}"]

[action.call]
kind = "http"
target = "call-{{{{ labels.n }}}}"
method = "POST"
url = "{}/hook/{{{{ labels.payload }}}}"
body = "{{{{ labels.payload }}}}"
"#,
        web.url()
    );
    let mut daemon = Daemon::prepare(
        "[rules]\ndir = \"{dir}/rules\"\n[auth]\ningest_token_file = \"{dir}/ingest\"\n[actions]\nmode = \"enforce\"\n",
        &[],
    );
    daemon.write_file("ingest", "e2e-ingest\n");
    std::fs::create_dir_all(daemon.path("rules")).unwrap();
    daemon.write_file("rules/inject.toml", &rules);
    daemon.spawn();
    let payloads = [
        format!("$(touch {})", marker_path.display()),
        format!("; touch {}", marker_path.display()),
        "--kubeconfig=/x".to_owned(),
        "../../etc/passwd".to_owned(),
        "{{ 7*7 }}".to_owned(),
        "@evil.example/x?y=1#z".to_owned(),
    ];
    for (n, payload) in payloads.iter().enumerate() {
        let body = serde_json::json!({
            "version": "4", "status": "firing", "groupKey": format!("g{n}"),
            "alerts": [{"status": "firing", "labels": {"alertname": "Inject", "payload": payload, "n": n.to_string()},
                        "startsAt": "2026-11-28T03:00:00Z"}],
        });
        let response = client().post(
            &format!("{}/webhook", daemon.base),
            &[JSON, ("Authorization", TOKEN)],
            body.to_string().as_bytes(),
        );
        assert_eq!(response.status, 200);
    }
    let setup_actions = wait_for(Duration::from_secs(30), || {
        let list = client()
            .get(&format!("{}/api/v1/incidents?limit=100", daemon.base), &[])
            .json();
        let mut all = Vec::new();
        for incident in list["incidents"].as_array()? {
            let id = incident["id"].as_str()?;
            let detail = client()
                .get(&format!("{}/api/v1/incidents/{id}", daemon.base), &[])
                .json();
            for action in detail["actions"].as_array()? {
                all.push((
                    incident["labels"]["payload"].as_str()?.to_owned(),
                    action.clone(),
                ));
            }
        }
        let settled = all
            .iter()
            .all(|(_, a)| a["state"] != "planned" && a["state"] != "started");
        (all.len() >= 2 * payloads.len() - 1 && settled).then_some(all)
    })
    .unwrap_or_else(|| panic!("actions did not settle:\n{}", daemon.log()));
    for (payload, action) in &setup_actions {
        match action["action"].as_str().unwrap() {
            "echo" => {
                assert_eq!(action["state"], "done", "{action:#}");
                assert_eq!(
                    action["result"]["detail"]["stdout"],
                    format!("[{payload}]"),
                    "{action:#}"
                );
            }
            "call" => assert_eq!(action["state"], "done", "{payload}: {action:#}"),
            other => panic!("{other}"),
        }
    }
    // The option-shaped value was refused for exec (never planned, never run).
    assert!(
        !setup_actions
            .iter()
            .any(|(payload, action)| payload.starts_with('-') && action["action"] == "echo")
    );
    assert!(daemon.log().contains("action refused"), "{}", daemon.log());
    assert!(!marker_path.exists(), "no shell ever ran the label");
    // Every HTTP call stayed on the configured host, one path segment, the value encoded.
    let requests = journal.requests();
    assert_eq!(requests.len(), payloads.len(), "{requests:#?}");
    for request in &requests {
        assert!(request.path.starts_with("/hook/"), "{}", request.describe());
        assert_eq!(
            request.path.matches('/').count(),
            2,
            "{}",
            request.describe()
        );
    }
}

/// One alert of group `group`, firing or resolved.
fn alert_body(group: &str, alertname: &str, status: &str) -> String {
    serde_json::json!({
        "version": "4", "status": status, "receiver": "nightshift", "groupKey": group,
        "alerts": [{
            "status": status,
            "labels": {"alertname": alertname, "namespace": "vastai", "severity": "critical"},
            "annotations": {"summary": alertname, "description": "error rate 40%"},
            "startsAt": "2026-11-28T03:00:00Z",
            "endsAt": if status == "firing" { "0001-01-01T00:00:00Z" } else { "2026-11-28T03:30:00Z" },
        }],
    })
    .to_string()
}

fn fallback_value(setup: &Stack) -> Option<String> {
    env_of(setup)
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "VASTAI_FALLBACK")
        .map(|e| e["value"].as_str().unwrap_or("").to_owned())
}

#[test]
fn two_incidents_hold_one_change_and_it_is_reverted_once_after_both_resolve() {
    let setup = setup("[actions]\nmode = \"enforce\"\nmin_hold = \"1s\"\n", true);
    setup.status().set_indicator("major", "Partial API outage");
    post(&setup, &alert_body("a", "VastaiApiUnreachable", "firing"));
    post(&setup, &alert_body("b", "VastaiServerErrors", "firing"));
    let actions = actions(&setup, 2);
    let verdicts: Vec<&str> = actions
        .iter()
        .map(|a| a["verdict"].as_str().unwrap())
        .collect();
    assert!(
        verdicts.contains(&"run") && verdicts.contains(&"hold"),
        "{actions:#?}"
    );
    assert_eq!(fallback_value(&setup).as_deref(), Some("true"));
    assert_eq!(
        setup.kube().writes().len(),
        1,
        "the second incident only holds the change"
    );
    // The first resolves: the other still holds it. Once the resolve is processed (its
    // transition done; holds are released in the step before), the hold is still held, so
    // no revert is due however long the 1 s minimum hold has passed.
    post(&setup, &alert_body("a", "VastaiApiUnreachable", "resolved"));
    let processed = wait_for(Duration::from_secs(20), || {
        setup
            .incidents()
            .iter()
            .filter(|i| i["alertname"] == "VastaiApiUnreachable")
            .any(|i| transition_done(&setup.incident(i["id"].as_str().unwrap()), "resolved"))
            .then_some(())
    });
    assert!(processed.is_some(), "{}", setup.daemon.log());
    let held = holds(&setup);
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].0, "held", "{held:?}");
    assert_eq!(
        fallback_value(&setup).as_deref(),
        Some("true"),
        "still held"
    );
    // The last holder resolves: reverted (the variable did not exist before), once.
    post(&setup, &alert_body("b", "VastaiServerErrors", "resolved"));
    let reverted = wait_for(Duration::from_secs(20), || {
        fallback_value(&setup).is_none().then_some(())
    });
    assert!(reverted.is_some(), "reverted:\n{}", setup.daemon.log());
    // The revert is recorded and nothing else is pending: still one change, one revert.
    let recorded = wait_for(Duration::from_secs(10), || {
        (holds(&setup)[0].0 == "reverted").then_some(())
    });
    assert!(recorded.is_some(), "{:?}", holds(&setup));
    setup.wait_settled(4);
    assert_eq!(setup.kube().writes().len(), 2, "one change, one revert");
}

#[test]
fn a_human_change_since_is_left_alone() {
    let setup = setup("[actions]\nmode = \"enforce\"\nmin_hold = \"1s\"\n", true);
    setup.status().set_indicator("major", "Partial API outage");
    post(&setup, &alert_body("a", "VastaiApiUnreachable", "firing"));
    actions(&setup, 1);
    assert_eq!(fallback_value(&setup).as_deref(), Some("true"));
    // Someone sets it by hand to something else.
    let mut object = setup
        .kube()
        .workload_object("Deployment", "vastai", "vastai-integration")
        .unwrap();
    object["spec"]["template"]["spec"]["containers"][0]["env"] =
        serde_json::json!([{"name": "VASTAI_FALLBACK", "value": "manual"}]);
    setup.kube().put(object);
    post(&setup, &alert_body("a", "VastaiApiUnreachable", "resolved"));
    let left = wait_for(Duration::from_secs(20), || {
        setup.daemon.log().contains("state=\"left\"").then_some(())
    });
    assert!(left.is_some(), "{}", setup.daemon.log());
    assert_eq!(
        fallback_value(&setup).as_deref(),
        Some("manual"),
        "the human wins"
    );
    assert_eq!(setup.kube().writes().len(), 1);
}

#[test]
fn a_planted_secret_never_appears_in_any_output() {
    const SECRET: &str = "s3cr3t-planted-value";
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // The endpoint echoes what it was sent: the secret comes back in the answer too.
    let (journal, web) = recording_server(&runtime, |recorded| {
        format!("you sent {}", recorded.header("authorization"))
    });
    let rules = format!(
        r#"
[[rule]]
name = "notify"
matchers = ['alertname="Notify"']
severity = "P3"
[[rule.branch]]
name = "call"
otherwise = true
actions = ["hook"]

[action.hook]
kind = "http"
url = "{}/hook"
headers = {{ Authorization = "Bearer {{{{ secret('hook_token') }}}}" }}
body = "token={{{{ secret('hook_token') }}}} alert={{{{ labels.alertname }}}}"
"#,
        web.url()
    );
    let mut daemon = Daemon::prepare(
        "[rules]\ndir = \"{dir}/rules\"\n[auth]\ningest_token_file = \"{dir}/ingest\"\n[actions]\nmode = \"enforce\"\nsecrets_dir = \"{dir}/secrets\"\n",
        &[],
    );
    daemon.write_file("ingest", "e2e-ingest\n");
    std::fs::create_dir_all(daemon.path("rules")).unwrap();
    std::fs::create_dir_all(daemon.path("secrets")).unwrap();
    daemon.write_file("secrets/hook_token", &format!("{SECRET}\n"));
    daemon.write_file("rules/notify.toml", &rules);
    daemon.spawn();
    let body = serde_json::json!({
        "version": "4", "status": "firing", "groupKey": "g",
        "alerts": [{"status": "firing", "labels": {"alertname": "Notify"}, "startsAt": "2026-11-28T03:00:00Z"}],
    })
    .to_string();
    let response = client().post(
        &format!("{}/webhook", daemon.base),
        &[JSON, ("Authorization", TOKEN)],
        body.as_bytes(),
    );
    assert_eq!(response.status, 200);
    let detail = wait_for(Duration::from_secs(20), || {
        let list = client()
            .get(&format!("{}/api/v1/incidents", daemon.base), &[])
            .json();
        let id = list["incidents"].as_array()?.first()?["id"]
            .as_str()?
            .to_owned();
        let detail = client().get(&format!("{}/api/v1/incidents/{id}", daemon.base), &[]);
        (detail.json()["actions"][0]["state"] == "done").then_some(detail.body)
    })
    .unwrap_or_else(|| panic!("no action:\n{}", daemon.log()));
    // The endpoint got the real secret...
    let requests = journal.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].header("authorization"),
        format!("Bearer {SECRET}")
    );
    assert!(String::from_utf8_lossy(&requests[0].body).contains(SECRET));
    // ...and no output of nightshift shows it: the API, the CLI, the log, explain.
    assert!(!detail.contains(SECRET), "{detail}");
    assert!(detail.contains("<secret:hook_token>"), "{detail}");
    let id = serde_json::from_str::<serde_json::Value>(&detail).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let show = daemon.cli(&["incidents", "show", &id, "--json"]);
    assert!(!String::from_utf8_lossy(&show.stdout).contains(SECRET));
    assert!(!daemon.log().contains(SECRET), "{}", daemon.log());
    let payload = daemon.write_file("payload.json", &body);
    let explained = daemon.cli(&["explain", "--payload", payload.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&explained.stdout);
    assert!(
        text.contains("<secret:hook_token>") && !text.contains(SECRET),
        "{text}"
    );
    let db = std::fs::read(daemon.state_dir().join("nightshift.db")).unwrap();
    let wal = std::fs::read(daemon.state_dir().join("nightshift.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "the store holds the secret"
        );
    }
}

#[test]
fn secrets_are_refused_in_exec_arguments() {
    let daemon = Daemon::prepare("[rules]\ndir = \"{dir}/rules\"\n", &[]);
    std::fs::create_dir_all(daemon.path("rules")).unwrap();
    daemon.write_file(
        "rules/x.toml",
        "[[rule]]\nname = \"x\"\nseverity = \"P3\"\n[action.leak]\nkind = \"exec\"\nargv = [\"/bin/echo\", \"{{ secret('t') }}\"]\n",
    );
    let check = daemon.cli(&["check"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&check.stderr)
            .contains("secret() is not allowed in exec arguments"),
        "{check:?}"
    );
}

#[test]
fn a_mitigation_is_judged_once_its_verify_window_has_passed() {
    let setup = setup("[actions]\nmode = \"enforce\"\n", true);
    // A restart with a one-second verify window.
    let runbook = std::fs::read_to_string(setup.daemon.path("rules/vastai.toml")).unwrap();
    let runbook = runbook.replacen(
        "cooldown = \"30m\"\n",
        "cooldown = \"30m\"\nverify_window = \"1s\"\n",
        1,
    );
    assert!(runbook.contains("verify_window = \"1s\""));
    std::fs::write(setup.daemon.path("rules/vastai.toml"), runbook).unwrap();
    let reload = client().post(
        &format!("{}/-/reload", setup.daemon.base),
        &[("Authorization", "Bearer e2e-admin")],
        b"",
    );
    assert_eq!(reload.status, 200, "{}", reload.body);
    setup
        .status()
        .set_indicator("none", "All Systems Operational");
    // Still firing after the window: did not help.
    post(&setup, &alert_body("a", "VastaiApiUnreachable", "firing"));
    let verified = wait_for(Duration::from_secs(20), || {
        let actions = actions(&setup, 1);
        actions[0]["verified"].as_str().map(str::to_owned)
    });
    assert_eq!(
        verified.as_deref(),
        Some("did_not_help"),
        "{}",
        setup.daemon.log()
    );
    assert!(setup.daemon.log().contains("mitigation did not help"));
    let metrics = client()
        .get(&format!("{}/metrics", setup.daemon.base), &[])
        .body;
    assert!(
        metrics.contains("nightshift_actions_verified_total{outcome=\"did_not_help\"} 1"),
        "{metrics}"
    );
}

#[test]
fn an_env_change_interrupted_by_a_crash_is_settled_by_reading_the_env_back() {
    let mut setup = setup("[actions]\nmode = \"enforce\"\n", true);
    setup.status().set_indicator("major", "Partial API outage");
    let path = fakes::kube::workload_path("Deployment", "vastai", "vastai-integration");
    setup
        .kube()
        .delay_after_apply(axum::http::Method::PATCH, &path, Duration::from_secs(20));
    post(&setup, &alert_body("a", "VastaiApiUnreachable", "firing"));
    let applied = wait_for(Duration::from_secs(20), || {
        (!setup.kube().writes().is_empty()).then_some(())
    });
    assert!(applied.is_some(), "{}", setup.daemon.log());
    // The fake applies the patch after recording it: crash once the change is in place
    // (its answer is still held back).
    let landed = wait_for(Duration::from_secs(10), || {
        (fallback_value(&setup).as_deref() == Some("true")).then_some(())
    });
    assert!(landed.is_some(), "{}", setup.daemon.log());
    setup.daemon.kill9();
    setup.kube().clear_faults();
    setup.daemon.spawn();
    let actions = actions(&setup, 1);
    assert_eq!(actions[0]["action"], "fallback");
    assert_eq!(actions[0]["state"], "done", "{actions:#?}");
    assert_eq!(actions[0]["result"]["detail"]["settled_by_read_back"], true);
    assert_eq!(fallback_value(&setup).as_deref(), Some("true"));
    assert_eq!(setup.kube().writes().len(), 1, "never run twice");
}

#[test]
fn a_scale_is_reverted_to_the_exact_previous_replica_count() {
    let setup = setup("[actions]\nmode = \"enforce\"\nmin_hold = \"1s\"\n", true);
    setup.daemon.write_file(
        "rules/capacity.toml",
        r#"
[runbook]
name = "capacity"
[[rule]]
name = "queue-backlog"
matchers = ['alertname="QueueBacklog"']
severity = "P3"
[[rule.branch]]
name = "scale-out"
otherwise = true
actions = ["scale-out"]
[action.scale-out]
kind = "kubernetes.scale"
namespace = "vastai"
workload = "deployment/vastai-integration"
replicas = 5
revert_on_resolve = true
"#,
    );
    let reload = client().post(
        &format!("{}/-/reload", setup.daemon.base),
        &[("Authorization", "Bearer e2e-admin")],
        b"",
    );
    assert_eq!(reload.status, 200, "{}", reload.body);
    let replicas = || {
        setup
            .kube()
            .workload_object("Deployment", "vastai", "vastai-integration")
            .unwrap()["spec"]["replicas"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(replicas(), 2);
    post(&setup, &alert_body("q", "QueueBacklog", "firing"));
    let actions = actions(&setup, 1);
    assert_eq!(actions[0]["state"], "done", "{actions:#?}");
    assert_eq!(replicas(), 5);
    post(&setup, &alert_body("q", "QueueBacklog", "resolved"));
    let restored = wait_for(Duration::from_secs(20), || (replicas() == 2).then_some(()));
    assert!(restored.is_some(), "{}", setup.daemon.log());
}

#[test]
fn an_action_planned_but_never_started_before_a_crash_does_not_block_its_target() {
    let mut setup = setup("[actions]\nmode = \"enforce\"\n", true);
    setup.daemon.kill9();
    // What a crash between planning and starting leaves behind.
    {
        let db =
            rusqlite::Connection::open(setup.daemon.state_dir().join("nightshift.db")).unwrap();
        db.execute(
            "INSERT INTO actions(key, episode_id, rule, action, kind, target, verdict, verdict_detail,
                 arguments, state, created_at)
             VALUES ('k', 'old-episode', 'r', 'restart', 'kubernetes.rollout_restart',
                 'deployment/vastai/vastai-integration', 'run', '{}', '{}', 'planned', 0)",
            [],
        )
        .unwrap();
    }
    setup.daemon.spawn();
    setup.status().set_indicator("major", "Partial API outage");
    post(&setup, &alert_body("a", "VastaiApiUnreachable", "firing"));
    let actions = actions(&setup, 1);
    assert_eq!(
        actions[0]["verdict"], "run",
        "the target is not left in flight: {actions:#?}"
    );
    assert_eq!(actions[0]["state"], "done");
    let db = rusqlite::Connection::open(setup.daemon.state_dir().join("nightshift.db")).unwrap();
    let state: String = db
        .query_row("SELECT state FROM actions WHERE key = 'k'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(state, "failed", "recorded as never run");
}

/// `explain` on the Vast.ai payload (status probe given: the provider-outage branch and its
/// set_env action) under `config`, as text and as JSON.
fn explain_under(config: &str) -> (String, serde_json::Value) {
    let daemon = Daemon::prepare(config, &[]);
    install_vastai_runbook(&daemon.path("rules"), None, None);
    daemon.write_file("ingest", "e2e-ingest\n");
    daemon.write_file("pd-primary", "pdroutingkey0123456789abcdef0123\n");
    let payload = daemon.write_file("payload.json", &unreachable_payload());
    let run = |json: bool| {
        let mut args = vec![
            "explain",
            "--payload",
            payload.to_str().unwrap(),
            "--probe",
            r#"status={"indicator":"major","description":"Major outage"}"#,
        ];
        if json {
            args.push("--json");
        }
        let output = daemon.cli(&args);
        assert!(output.status.success(), "{config}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let text = run(false);
    let json = serde_json::from_str(&run(true)).unwrap();
    (text, json)
}

#[test]
fn explain_says_what_the_running_configuration_would_do() {
    const RULES: &str = "[rules]\ndir = \"{dir}/rules\"\n";
    const AUTH: &str = "[auth]\ningest_token_file = \"{dir}/ingest\"\n";
    const ROUTED: &str = "[pagerduty]\nrouting_keys = { primary = \"{dir}/pd-primary\" }\ndefault_routing_key = \"primary\"\n";
    // (configuration, action state, words the action line says, page state, words the page says)
    let cases = [
        (
            format!("{RULES}[kubernetes]\nnamespaces = [\"vastai\"]\n"),
            "dry_run",
            "dry-run: would not run; set [actions] mode = \"enforce\" to act",
            "no_destination",
            "no routing key: this page would reach nobody",
        ),
        (
            format!(
                "{RULES}{AUTH}[actions]\nmode = \"enforce\"\n[kubernetes]\nnamespaces = [\"other\"]\n"
            ),
            "refused",
            "refused: namespace \"vastai\" is not in kubernetes.namespaces",
            "no_destination",
            "no routing key: this page would reach nobody",
        ),
        (
            format!(
                "{RULES}{AUTH}{ROUTED}[actions]\nmode = \"enforce\"\n[kubernetes]\nnamespaces = [\"vastai\"]\n"
            ),
            "run",
            "would run on deployment/vastai/vastai-integration",
            "pagerduty",
            "would go to PagerDuty with routing key \"primary\"",
        ),
    ];
    for (config, action_state, action_words, page_state, page_words) in cases {
        let (text, json) = explain_under(&config);
        let action_line = text
            .lines()
            .skip_while(|line| !line.starts_with("  action    fallback"))
            .nth(1)
            .unwrap_or_default();
        assert!(
            action_line.starts_with("    effective ") && action_line.contains(action_words),
            "{config}\n{text}"
        );
        let page_line = text
            .lines()
            .skip_while(|line| !line.starts_with("  page "))
            .nth(1)
            .unwrap_or_default();
        assert!(page_line.contains(page_words), "{config}\n{text}");
        let effective = &json[0]["effective"];
        assert_eq!(effective["actions"][0]["name"], "fallback", "{json:#}");
        assert_eq!(
            effective["actions"][0]["effective"]["state"], action_state,
            "{config}\n{json:#}"
        );
        assert_eq!(
            effective["page"]["effective"]["state"], page_state,
            "{config}\n{json:#}"
        );
        // Only dry-run says nothing changes; only a page with no destination reaches nobody.
        assert_eq!(
            text.contains("dry-run"),
            action_state == "dry_run",
            "{config}\n{text}"
        );
        assert_eq!(
            text.contains("would reach nobody"),
            page_state == "no_destination",
            "{config}\n{text}"
        );
        // The routing key is named, never shown.
        assert!(!text.contains("pdroutingkey0123456789abcdef0123"), "{text}");
    }
}

#[test]
fn explain_reads_a_bundle_alert_json_and_an_incident_as_their_webhook() {
    let mut daemon = Daemon::prepare(
        "[rules]\ndir = \"{dir}/rules\"\n[auth]\ningest_token_file = \"{dir}/ingest\"\nread_token_file = \"{dir}/read\"\n",
        &[],
    );
    daemon.write_file("ingest", "e2e-ingest\n");
    daemon.write_file("read", "e2e-read\n");
    std::fs::create_dir_all(daemon.path("rules")).unwrap();
    daemon.write_file(
        "rules/disk.toml",
        "[[rule]]\nname = \"disk-full\"\nmatchers = ['alertname=\"DiskFull\"']\nseverity = \"P2\"\n",
    );
    daemon.spawn();
    // One group of two alerts: the bundle's notification holds both, the incident is one.
    let body = webhook(
        "g",
        &[
            ("DiskFull", "db-1", "firing", "2026-11-28T03:00:00Z"),
            ("DiskFull", "db-2", "firing", "2026-11-28T03:00:05Z"),
        ],
        0,
    );
    let response = client().post(
        &format!("{}/webhook", daemon.base),
        &[JSON, ("Authorization", TOKEN)],
        body.as_bytes(),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let read = |path: &str| {
        client().get(
            &format!("{}{path}", daemon.base),
            &[("Authorization", "Bearer e2e-read")],
        )
    };
    let explain = |payload: &Path| {
        let output = daemon.cli(&["explain", "--payload", payload.to_str().unwrap(), "--json"]);
        assert!(output.status.success(), "{output:?}");
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let webhook_path = daemon.write_file("webhook.json", &body);
    let from_webhook = explain(&webhook_path);
    assert_eq!(from_webhook.as_array().unwrap().len(), 2);
    let original = from_webhook
        .as_array()
        .unwrap()
        .iter()
        .find(|alert| alert["labels"]["instance"] == "db-2")
        .unwrap()
        .clone();
    assert_eq!(original["decision"]["page"]["severity"], "P2");
    let id = original["incident_id"].as_str().unwrap().to_owned();
    // The bundle's alert.json, as the daemon wrote it.
    let alert_json = wait_for(Duration::from_secs(60), || {
        let response = read(&format!("/api/v1/incidents/{id}/bundle"));
        if response.status != 200 {
            return None;
        }
        untar(response.body_bytes()).remove("alert.json")
    })
    .unwrap_or_else(|| panic!("no bundle for {id}:\n{}", daemon.log()));
    let alert_json = String::from_utf8(alert_json).unwrap();
    assert!(alert_json.contains("db-1"), "the whole group: {alert_json}");
    let bundle_path = daemon.write_file("alert.json", &alert_json);
    // `incidents show --json`, as printed.
    let show = daemon.cli(&["incidents", "show", &id, "--json"]);
    assert!(show.status.success(), "{show:?}");
    let incident_path =
        daemon.write_file("incident.json", std::str::from_utf8(&show.stdout).unwrap());
    for (path, shape) in [(bundle_path, "bundle_alert"), (incident_path, "incident")] {
        let explained = explain(&path);
        assert_eq!(explained.as_array().unwrap().len(), 1, "{explained:#}");
        let alert = &explained[0];
        assert_eq!(alert["payload_shape"], shape);
        assert_eq!(alert["incident_id"], id.as_str(), "{shape}");
        assert_eq!(alert["labels"], original["labels"], "{shape}");
        assert_eq!(
            alert["decision"]["classification"]["matched"][0]["rule"], "disk-full",
            "{shape}: {alert:#}"
        );
        assert_eq!(
            alert["decision"]["page"]["severity"], original["decision"]["page"]["severity"],
            "{shape}"
        );
    }
    // Anything else is refused, naming the three shapes it takes.
    let other = daemon.write_file("other.json", "{\"incidents\": []}");
    let output = daemon.cli(&["explain", "--payload", other.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for shape in ["webhook body", "alert.json", "incidents show ID --json"] {
        assert!(stderr.contains(shape), "{stderr}");
    }
}

/// Milliseconds since the Unix epoch, the unit the store keeps times in.
fn epoch_millis(time: std::time::SystemTime) -> i64 {
    let since = time.duration_since(std::time::UNIX_EPOCH).unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

/// The state directory's holds, read-only while the daemon runs: (state, changed_at,
/// release_after) of each.
fn holds(setup: &Stack) -> Vec<(String, i64, Option<i64>)> {
    let db = rusqlite::Connection::open_with_flags(
        setup.daemon.state_dir().join("nightshift.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut statement = db
        .prepare("SELECT state, changed_at, release_after FROM holds ORDER BY id")
        .unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_change_stays_for_the_minimum_hold_after_it_was_made_then_is_reverted() {
    const MIN_HOLD_MS: i64 = 8_000;
    let setup = setup("[actions]\nmode = \"enforce\"\nmin_hold = \"8s\"\n", true);
    setup.status().set_indicator("major", "Partial API outage");
    post(&setup, &alert_body("a", "VastaiApiUnreachable", "firing"));
    let actions = actions(&setup, 1);
    assert_eq!(actions[0]["state"], "done", "{actions:#?}");
    assert_eq!(fallback_value(&setup).as_deref(), Some("true"));
    // It resolves at once: the positive sign that the resolve was processed is its
    // transition marked done (the holds are released in the step before).
    post(&setup, &alert_body("a", "VastaiApiUnreachable", "resolved"));
    let id = setup.incidents()[0]["id"].as_str().unwrap().to_owned();
    let processed = wait_for(Duration::from_secs(20), || {
        transition_done(&setup.incident(&id), "resolved").then_some(())
    });
    assert!(processed.is_some(), "{}", setup.daemon.log());
    let looked_at = epoch_millis(std::time::SystemTime::now());
    let released = holds(&setup);
    assert_eq!(released.len(), 1, "{released:?}");
    let (state, changed_at, release_after) = released[0].clone();
    // Reverted already only if the hold ran out meanwhile (a very slow machine).
    assert!(
        state == "releasing" || looked_at >= changed_at + MIN_HOLD_MS,
        "{released:?}"
    );
    let release_after = release_after.expect("a release time");
    assert!(
        release_after >= changed_at + MIN_HOLD_MS,
        "released before the minimum hold: {released:?}"
    );
    if looked_at < release_after {
        assert_eq!(
            fallback_value(&setup).as_deref(),
            Some("true"),
            "still held"
        );
        assert_eq!(setup.kube().writes().len(), 1);
    }
    // Reverted once the minimum hold has passed, and not a moment before.
    let reverted = wait_for(Duration::from_secs(40), || {
        fallback_value(&setup).is_none().then_some(())
    });
    assert!(
        reverted.is_some(),
        "never reverted:\n{}",
        setup.daemon.log()
    );
    let writes = setup.kube().writes();
    assert_eq!(writes.len(), 2, "one change, one revert");
    let revert_at = epoch_millis(writes[1].received);
    assert!(
        revert_at >= changed_at + MIN_HOLD_MS,
        "reverted {} ms after the change, before the {MIN_HOLD_MS} ms minimum hold",
        revert_at - changed_at
    );
    let settled = wait_for(Duration::from_secs(10), || {
        (holds(&setup)[0].0 == "reverted").then_some(())
    });
    assert!(settled.is_some(), "{:?}", holds(&setup));
}

const SHADOW_RULES: &str = r#"
[runbook]
name = "capacity"
[[rule]]
name = "queue-backlog"
matchers = ['alertname="QueueBacklog"']
severity = "P3"
shadow = true
[[rule.branch]]
name = "scale-out"
otherwise = true
actions = ["scale-out"]
[action.scale-out]
kind = "kubernetes.scale"
namespace = "vastai"
workload = "deployment/vastai-integration"
replicas = 5
"#;

#[test]
fn a_shadow_rule_from_a_rule_file_records_its_action_and_changes_nothing_while_others_enforce() {
    let setup = setup("[actions]\nmode = \"enforce\"\n", true);
    setup.daemon.write_file("rules/capacity.toml", SHADOW_RULES);
    let reload = client().post(
        &format!("{}/-/reload", setup.daemon.base),
        &[("Authorization", ADMIN)],
        b"",
    );
    assert_eq!(reload.status, 200, "{}", reload.body);
    setup.status().set_indicator("major", "Partial API outage");
    post(&setup, &alert_body("q", "QueueBacklog", "firing"));
    post(&setup, &alert_body("a", "VastaiApiUnreachable", "firing"));
    let actions = actions(&setup, 2);
    let shadowed = actions
        .iter()
        .find(|a| a["action"] == "scale-out")
        .unwrap_or_else(|| panic!("{actions:#?}"));
    assert_eq!(shadowed["verdict"], "dry_run", "{shadowed:#}");
    assert!(
        shadowed
            .to_string()
            .contains("the rule runs in shadow mode"),
        "{shadowed:#}"
    );
    // The other rule, in the same daemon, enforces: the mode is not what kept it dry.
    let enforced = actions
        .iter()
        .find(|a| a["action"] == "fallback")
        .unwrap_or_else(|| panic!("{actions:#?}"));
    assert_eq!(enforced["verdict"], "run", "{enforced:#}");
    assert_eq!(enforced["state"], "done", "{enforced:#}");
    // Only the enforced change reached the API server; the replicas are untouched.
    let writes = setup.kube().writes();
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert!(!writes[0].path.ends_with("/scale"), "{writes:#?}");
    let object = setup
        .kube()
        .workload_object("Deployment", "vastai", "vastai-integration")
        .unwrap();
    assert_eq!(object["spec"]["replicas"], 2, "{object:#}");
    setup.kube().journal.assert_no_unexpected();
}
