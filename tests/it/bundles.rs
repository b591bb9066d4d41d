//! Debug bundles end to end through the daemon binary, with the shipped Vast.ai runbook and
//! fakes for the Kubernetes API, Prometheus, the status page, the health endpoint and
//! PagerDuty: what a bundle holds, that no planted secret reaches it, evidence before
//! disruption, the rewrite at resolve, retention, and crashes mid-write.

use crate::fakes;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::fakes::kube::PodFixture;
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Planted in the logs, an env dump and the health answer: must never reach a bundle file.
const PLANTED: [&str; 3] = [
    "planted-bearer-7f3a9c",
    "sk-planted-api-key-42",
    "hunter2-planted",
];

fn setup(extra: &str) -> Stack {
    setup_with(extra, &[])
}

/// The shipped Vast.ai runbook with every fake it talks to: the deployment
/// vastai/vastai-integration with two pods (logs and events holding planted secrets), the
/// health endpoint answering 503 with one, Prometheus and PagerDuty; and environment
/// overrides (for settings in sections the base config has).
fn setup_with(extra: &str, env: &[(&str, &str)]) -> Stack {
    let mut builder = Stack::builder()
        .vastai_runbook()
        .web("/healthz")
        .kubernetes(&["vastai"])
        .prometheus()
        .pagerduty()
        .ingest_token(true)
        .read_token()
        .extra(extra);
    for (key, value) in env {
        builder = builder.env(key, value);
    }
    let stack = builder.start();
    let deployment = fakes::kube::workload(
        "Deployment",
        "vastai",
        "vastai-integration",
        &[("app", "vastai")],
    );
    let deployment_key = stack.kube().put(deployment);
    let stored = stack.kube().get(&deployment_key).unwrap();
    let rs_key = stack.kube().put(fakes::kube::replica_set(
        "vastai",
        "vastai-integration-5d9c",
        &stored,
        &[("app", "vastai")],
    ));
    for (pod, restarts) in [
        ("vastai-integration-5d9c-a1", 0),
        ("vastai-integration-5d9c-b2", 3),
    ] {
        let fixture = PodFixture::new("vastai", pod, &[("app", "vastai")]).container(
            "app",
            restarts,
            (restarts > 0).then_some("2026-11-28T02:58:00Z"),
            None,
        );
        let key = stack.kube().put(fixture.to_json());
        stack.kube().set_log(
            "vastai",
            pod,
            "app",
            false,
            &format!(
                "03:01:10 INFO polling Vast.ai\n03:01:11 ERROR Vast.ai answered 503 (Authorization: Bearer {})\n03:01:12 ERROR retry failed\n",
                PLANTED[0]
            ),
        );
        if restarts > 0 {
            stack.kube().set_log(
                "vastai",
                pod,
                "app",
                true,
                &format!("VASTAI_API_KEY={}\npanic: upstream 503\n", PLANTED[1]),
            );
        }
        stack.kube().event_for(
            &key,
            "Warning",
            "BackOff",
            "Back-off restarting failed container",
            "2026-11-28T02:59:00Z",
        );
    }
    stack.kube().event_for(
        &rs_key,
        "Normal",
        "SuccessfulCreate",
        "Created pod",
        "2026-11-28T02:00:00Z",
    );
    stack
        .status()
        .set_indicator("none", "All Systems Operational");
    stack.web().reply(
        503,
        &[("content-type", "application/json")],
        format!(
            r#"{{"ok":false,"upstream":"vast.ai 503","db_password":"{}"}}"#,
            PLANTED[2]
        ),
    );
    stack
}

fn payload(name: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join("rules/payloads").join(name)).unwrap()
}

fn post(setup: &Stack, body: &str) {
    setup.post_webhook(body);
}

fn read_get(setup: &Stack, path: &str) -> http_client::Response {
    client().get(
        &format!("{}{path}", setup.daemon.base),
        &[("Authorization", "Bearer e2e-read")],
    )
}

fn only_incident(setup: &Stack) -> String {
    wait_for(Duration::from_secs(20), || {
        read_get(setup, "/api/v1/incidents").json()["incidents"][0]["id"]
            .as_str()
            .map(str::to_owned)
    })
    .expect("an incident")
}

/// The bundle's files once its manifest says `version`.
fn bundle(setup: &Stack, id: &str, version: &str) -> BTreeMap<String, Vec<u8>> {
    wait_for(Duration::from_secs(60), || {
        let response = read_get(setup, &format!("/api/v1/incidents/{id}/bundle"));
        if response.status != 200 {
            return None;
        }
        let files = untar(response.body_bytes());
        let manifest: Value = serde_json::from_slice(files.get("manifest.json")?).ok()?;
        (manifest["version"] == version).then_some(files)
    })
    .unwrap_or_else(|| panic!("no {version} bundle for {id}:\n{}", setup.daemon.log()))
}

fn text(files: &BTreeMap<String, Vec<u8>>, name: &str) -> String {
    String::from_utf8_lossy(files.get(name).unwrap_or_else(|| {
        panic!(
            "{name} missing; files: {:?}",
            files.keys().collect::<Vec<_>>()
        )
    }))
    .into_owned()
}

fn range_matrix() -> Value {
    json!([{
        "metric": {"code": "503"},
        "values": [[1_764_298_800, "0.12"], [1_764_298_860, "0.4"]],
    }])
}

#[test]
fn the_vastai_5xx_bundle_holds_the_evidence_and_a_useful_postmortem() {
    let setup = setup("");
    for query in [
        r#"sum(rate(vastai_api_requests_total{job="vastai-integration",code=~"5.."}[5m])) / sum(rate(vastai_api_requests_total{job="vastai-integration"}[5m]))"#,
        r#"sum by (code) (rate(vastai_api_requests_total{job="vastai-integration"}[5m]))"#,
    ] {
        setup.prometheus().set_range_result(query, range_matrix());
    }
    post(&setup, &payload("vastai-server-errors.json"));
    let id = only_incident(&setup);
    let files = bundle(&setup, &id, "initial");
    for name in [
        "alert.json",
        "decision.json",
        "actions.json",
        "pages.json",
        "timeline.md",
        "comms.md",
        "postmortem.md",
        "manifest.json",
        "collectors/server-error-ratio/range.json",
        "collectors/server-error-ratio/range.csv",
        "collectors/requests-by-code/range.csv",
        "collectors/logs/vastai-integration-5d9c-a1/app.log",
        "collectors/logs/vastai-integration-5d9c-b2/app.log",
        "collectors/logs/vastai-integration-5d9c-b2/app.previous.log",
        "collectors/events/events.json",
        "collectors/status-page/body",
        "collectors/health/body",
        "collectors/health/response.json",
    ] {
        assert!(
            files.contains_key(name),
            "{name} missing: {:?}",
            files.keys().collect::<Vec<_>>()
        );
    }
    // The restarted pod's previous logs only; not for the one that never restarted.
    assert!(!files.contains_key("collectors/logs/vastai-integration-5d9c-a1/app.previous.log"));
    assert!(text(&files, "collectors/server-error-ratio/range.csv").contains("0.4"));
    assert!(text(&files, "collectors/status-page/body").contains("All Systems Operational"));
    assert!(text(&files, "collectors/events/events.json").contains("BackOff"));
    assert!(text(&files, "alert.json").contains("VastaiServerErrors"));
    // The manifest tells each file's size and digest, and each collector's outcome.
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    for file in manifest["files"].as_array().unwrap() {
        let name = file["path"].as_str().unwrap();
        let bytes = &files[name];
        assert_eq!(
            file["bytes"].as_u64().unwrap() as usize,
            bytes.len(),
            "{name}"
        );
        use sha2::Digest;
        assert_eq!(
            file["sha256"],
            hex::encode(sha2::Sha256::digest(bytes)),
            "{name}"
        );
    }
    let collectors = manifest["collectors"].as_array().unwrap();
    assert_eq!(collectors.len(), 6, "{collectors:#?}");
    for collector in collectors {
        assert_eq!(collector["status"], "ok", "{collector:#}");
    }
    // No planted secret anywhere, and the manifest counts what was redacted.
    for (name, bytes) in &files {
        let content = String::from_utf8_lossy(bytes);
        for secret in PLANTED {
            assert!(!content.contains(secret), "{secret} leaked into {name}");
        }
    }
    assert!(
        manifest["redactions"]
            .as_object()
            .is_some_and(|r| !r.is_empty()),
        "{manifest:#}"
    );
    // A first draft a human can work from.
    let postmortem = text(&files, "postmortem.md");
    for expected in [
        "Vast.ai API server errors (5xx)",
        "P2",
        "Root cause",
        "_to be written_",
        "status-page",
    ] {
        assert!(
            postmortem.contains(expected),
            "{expected} not in:\n{postmortem}"
        );
    }
    assert!(text(&files, "timeline.md").contains("UTC"));
    assert!(text(&files, "comms.md").contains("INCIDENT"));
    // The open page is sent again with the bundle's link and the latest error lines.
    let link = format!("https://nightshift.example/api/v1/incidents/{id}/bundle");
    let updated = setup.runtime.block_on(setup.pd().wait_for(
        |pd| {
            pd.accepted_triggers().iter().any(|e| {
                e.body["payload"]["custom_details"]
                    .to_string()
                    .contains(&link)
            })
        },
        Duration::from_secs(30),
    ));
    assert!(updated, "{}", setup.daemon.log());
    let page = setup
        .pd()
        .accepted_triggers()
        .into_iter()
        .find(|e| {
            e.body["payload"]["custom_details"]
                .to_string()
                .contains(&link)
        })
        .unwrap();
    let details = page.body["payload"]["custom_details"].to_string();
    assert!(details.contains("retry failed"), "{details}");
    for secret in PLANTED {
        assert!(!details.contains(secret), "{secret} reached PagerDuty");
    }
    // The CLI lists and shows it.
    let listed = setup.daemon.cli(&["bundles", "list"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&id),
        "{listed:?}"
    );
    let shown = setup.daemon.cli(&["bundles", "show", &id]);
    assert!(
        // JSON (`"collectors": [...]`) or the table (`collectors:`): the manifest was read.
        String::from_utf8_lossy(&shown.stdout).contains("collectors"),
        "{shown:?}"
    );

    // It resolves: the bundle is written again with the final timeline, and the status page
    // is asked again.
    let resolved = payload("vastai-server-errors.json")
        .replace("\"status\": \"firing\"", "\"status\": \"resolved\"")
        .replace("0001-01-01T00:00:00Z", "2026-03-14T03:29:31.204Z");
    post(&setup, &resolved);
    let last = bundle(&setup, &id, "final");
    assert!(
        last.contains_key("collectors/status-page/resolve/body"),
        "{:?}",
        last.keys()
    );
    assert!(last.contains_key("collectors/logs/vastai-integration-5d9c-b2/app.log"));
    let postmortem = text(&last, "postmortem.md");
    assert!(postmortem.contains("42m"), "{postmortem}");
    // The night's report names it with its bundle.
    let report = setup.daemon.cli(&["report", "--since", "2000days"]);
    let report = String::from_utf8_lossy(&report.stdout).into_owned();
    assert!(
        report.contains("Vast.ai API server errors (5xx)"),
        "{report}"
    );
    assert!(report.contains(&link), "{report}");
    let json = read_get(&setup, "/api/v1/report?since=2000days").json();
    assert_eq!(
        json["incidents"].as_array().map(Vec::len),
        Some(1),
        "{json:#}"
    );
    setup.kube().journal.assert_no_unexpected();
    setup.pd().assert_no_unexpected();
}

/// One byte that is not UTF-8 used to keep a whole file out of the redactor.
#[test]
fn evidence_that_is_not_utf8_reaches_the_bundle_redacted() {
    let setup = setup("");
    let mut body = b"\xff\xfe upstream answered:\n".to_vec();
    body.extend_from_slice(
        format!(
            "Authorization: Bearer {}\n{{\"db_password\":\"{}\"}}\nVASTAI_API_KEY={}\n",
            PLANTED[0], PLANTED[2], PLANTED[1]
        )
        .as_bytes(),
    );
    setup
        .web()
        .reply(503, &[("content-type", "application/octet-stream")], body);
    post(&setup, &payload("vastai-server-errors.json"));
    let id = only_incident(&setup);
    let files = bundle(&setup, &id, "initial");
    for (name, bytes) in &files {
        let content = String::from_utf8_lossy(bytes);
        for secret in PLANTED {
            assert!(!content.contains(secret), "{secret} leaked into {name}");
        }
    }
    // What is not a secret is kept as it came, bytes that are not UTF-8 included.
    let body = &files["collectors/health/body"];
    assert!(
        body.starts_with(b"\xff\xfe upstream answered:\n"),
        "{body:?}"
    );
    assert!(String::from_utf8_lossy(body).contains("Authorization: <redacted>"));
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    assert_eq!(
        manifest["redactions"]["collectors/health/body"], 3,
        "{manifest:#}"
    );
}

#[test]
fn disruptive_actions_wait_for_the_evidence_and_go_ahead_past_the_bound() {
    for (log_delay, wait, expect_missed) in [
        (Duration::from_millis(1500), "20s", false),
        (Duration::from_secs(6), "1s", true),
    ] {
        let setup = setup(&format!(
            "[actions]\nmode = \"enforce\"\n[bundles]\nbefore_action_wait = \"{wait}\"\n"
        ));
        let log_path = "/api/v1/namespaces/vastai/pods/vastai-integration-5d9c-b2/log";
        setup
            .kube()
            .delay(axum::http::Method::GET, log_path, log_delay);
        let posted = Instant::now();
        post(&setup, &payload("vastai-api-unreachable.json"));
        let seen = |prefix: &str| {
            wait_for(Duration::from_secs(30), || {
                setup
                    .kube()
                    .calls()
                    .iter()
                    .any(|c| c.starts_with(prefix))
                    .then(|| posted.elapsed())
            })
        };
        let logs_asked = seen(&format!("GET {log_path}")).expect("the logs were asked for");
        let restarted =
            seen("PATCH").unwrap_or_else(|| panic!("no restart:\n{}", setup.daemon.log()));
        let waited = restarted.saturating_sub(logs_asked);
        if expect_missed {
            // The bound passed: the restart went ahead, and the bundle says what was missed.
            assert!(waited < log_delay, "{waited:?}");
            let id = only_incident(&setup);
            let files = bundle(&setup, &id, "initial");
            let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
            let missed = manifest["evidence_missed"].to_string();
            assert!(missed.contains("went ahead"), "{manifest:#}");
        } else {
            assert!(
                waited >= log_delay - Duration::from_millis(100),
                "restart after {waited:?}"
            );
        }
    }
}

/// A restart waiting for its evidence holds only its own incident: with one decision slot,
/// the next incident is decided while the first's restart still waits for the logs.
#[test]
fn an_action_waiting_for_evidence_does_not_hold_up_other_decisions() {
    let setup = setup_with(
        "[actions]\nmode = \"enforce\"\n[bundles]\nbefore_action_wait = \"20s\"\n",
        &[("NIGHTSHIFT_RULES__CONCURRENCY", "1")],
    );
    let log_path = "/api/v1/namespaces/vastai/pods/vastai-integration-5d9c-b2/log";
    setup
        .kube()
        .delay(axum::http::Method::GET, log_path, Duration::from_secs(8));
    post(&setup, &payload("vastai-api-unreachable.json"));
    // The first incident is decided and its restart is waiting for the slow logs.
    wait_for(Duration::from_secs(30), || {
        setup
            .kube()
            .calls()
            .iter()
            .any(|c| c.starts_with(&format!("GET {log_path}")))
            .then_some(())
    })
    .expect("the logs were asked for");
    post(&setup, &payload("vastai-metrics-absent.json"));
    let decided = |setup: &Stack| {
        let listed = read_get(setup, "/api/v1/incidents").json();
        listed["incidents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|incident| incident["severity"].as_str().is_some_and(|s| !s.is_empty()))
            .count()
    };
    wait_for(Duration::from_secs(30), || {
        (decided(&setup) == 2).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the second incident was not decided:\n{}",
            setup.daemon.log()
        )
    });
    let calls = setup.kube().calls();
    assert!(
        !calls.iter().any(|c| c.starts_with("PATCH")),
        "the restart ran before the second incident was decided: {calls:?}"
    );
    // The first incident's restart still goes ahead once its evidence is in.
    wait_for(Duration::from_secs(30), || {
        setup
            .kube()
            .calls()
            .iter()
            .any(|c| c.starts_with("PATCH"))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no restart:\n{}", setup.daemon.log()));
}

#[test]
fn a_crash_while_bundles_are_written_leaves_no_partial_archive_and_the_work_resumes() {
    let mut setup = setup("");
    setup.prometheus().set_delay(Duration::from_millis(300));
    let base = payload("vastai-server-errors.json");
    for round in 0..4 {
        for n in 0..5 {
            let body = base
                .replace(
                    "\"cluster\": \"prod-eu-1\"",
                    &format!("\"cluster\": \"prod-{round}-{n}\""),
                )
                .replace("5e1b3a7c9d2f4e60", &format!("00000000000000{round}{n}"));
            post(&setup, &body);
        }
        std::thread::sleep(Duration::from_millis(150 + 100 * round));
        setup.daemon.kill9();
        setup.daemon.spawn();
    }
    // Every incident gets its bundle in the end.
    let ids: Vec<String> = wait_for(Duration::from_secs(30), || {
        let list = read_get(&setup, "/api/v1/incidents?limit=100").json();
        let ids: Vec<String> = list["incidents"]
            .as_array()?
            .iter()
            .filter_map(|i| i["id"].as_str().map(str::to_owned))
            .collect();
        (ids.len() == 20).then_some(ids)
    })
    .expect("20 incidents");
    for id in &ids {
        bundle(&setup, id, "initial");
    }
    // And nothing half-written by a killed daemon is left anywhere. The running one may still
    // be writing (an archive is written as `<name>.<pid>.partial`, then renamed): wait for
    // its own to finish first.
    let bundles = setup.daemon.state_dir().join("bundles");
    let live = format!(".{}.partial", setup.daemon.pid());
    let writing = || {
        std::fs::read_dir(&bundles)
            .unwrap()
            .flat_map(|day| std::fs::read_dir(day.unwrap().path()).unwrap())
            .any(|entry| {
                entry
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(&live)
            })
    };
    assert!(
        wait_for(Duration::from_secs(30), || (!writing()).then_some(())).is_some(),
        "the running daemon never finished writing:\n{}",
        setup.daemon.log()
    );
    let mut archives = 0;
    for day in std::fs::read_dir(setup.daemon.state_dir().join("bundles")).unwrap() {
        for entry in std::fs::read_dir(day.unwrap().path()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.ends_with(".tar.gz"), "left over: {name}");
            let (folder, _) = untar_with_folder(&std::fs::read(&path).unwrap());
            assert_eq!(folder, name.trim_end_matches(".tar.gz"));
            archives += 1;
        }
    }
    assert_eq!(archives, 20);
}

#[test]
fn retention_deletes_closed_incidents_bundles_never_open_ones() {
    let setup = setup("[bundles]\nmax_total_bytes = 1\n");
    let base = payload("vastai-server-errors.json");
    let first = base
        .replace("\"cluster\": \"prod-eu-1\"", "\"cluster\": \"first\"")
        .replace("5e1b3a7c9d2f4e60", "00000000000000a1");
    let second = base
        .replace("\"cluster\": \"prod-eu-1\"", "\"cluster\": \"second\"")
        .replace("5e1b3a7c9d2f4e60", "00000000000000a2")
        .replace("\"groupKey\": \"", "\"groupKey\": \"second-");
    post(&setup, &first);
    let first_id = only_incident(&setup);
    bundle(&setup, &first_id, "initial");
    post(&setup, &second);
    let second_id = wait_for(Duration::from_secs(20), || {
        read_get(&setup, "/api/v1/incidents").json()["incidents"]
            .as_array()?
            .iter()
            .filter_map(|i| i["id"].as_str())
            .find(|id| *id != first_id)
            .map(str::to_owned)
    })
    .unwrap();
    bundle(&setup, &second_id, "initial");
    // Over the cap, but both incidents are open: both kept.
    assert_eq!(
        read_get(&setup, &format!("/api/v1/incidents/{first_id}/bundle")).status,
        200
    );
    // The first closes: once its final bundle is written it is the one deleted.
    let resolved = first
        .replace("\"status\": \"firing\"", "\"status\": \"resolved\"")
        .replace("0001-01-01T00:00:00Z", "2026-03-14T03:29:31.204Z");
    post(&setup, &resolved);
    let gone = wait_for(Duration::from_secs(30), || {
        (read_get(&setup, &format!("/api/v1/incidents/{first_id}/bundle")).status == 404)
            .then_some(())
    });
    assert!(gone.is_some(), "{}", setup.daemon.log());
    assert_eq!(
        read_get(&setup, &format!("/api/v1/incidents/{second_id}/bundle")).status,
        200
    );
    let metrics = client()
        .get(&format!("{}/metrics", setup.daemon.base), &[])
        .body;
    assert!(
        metrics.contains("nightshift_bundles_deleted_total 1"),
        "{metrics}"
    );
}

#[test]
fn a_bundle_unpacks_into_one_folder_named_after_its_incident() {
    let setup = setup("");
    post(&setup, &payload("vastai-server-errors.json"));
    let id = only_incident(&setup);
    bundle(&setup, &id, "initial");
    let response = read_get(&setup, &format!("/api/v1/incidents/{id}/bundle"));
    assert_eq!(response.status, 200);
    let scratch = tempfile::tempdir().unwrap();
    let archive = scratch.path().join("bundle.tar.gz");
    std::fs::write(&archive, response.body_bytes()).unwrap();

    // What `tar -tzf` lists: the folder, then everything under it.
    let listed = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(&archive)
        .output()
        .expect("tar");
    assert!(listed.status.success(), "{listed:?}");
    let names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(names.len() > 2, "{names:?}");
    assert_eq!(names[0], format!("{id}/"));
    for name in &names {
        assert!(name.starts_with(&format!("{id}/")), "{name} in {names:?}");
    }
    assert!(names.contains(&format!("{id}/manifest.json")), "{names:?}");

    // Unpacked by the real tar into an empty directory: exactly one folder, the incident's.
    let into = scratch.path().join("unpacked");
    std::fs::create_dir(&into).unwrap();
    let unpacked = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&into)
        .output()
        .expect("tar");
    assert!(unpacked.status.success(), "{unpacked:?}");
    let top: Vec<_> = std::fs::read_dir(&into)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(top, std::slice::from_ref(&id));
    assert!(into.join(&id).is_dir());
    assert!(into.join(&id).join("manifest.json").is_file());

    // The CLI reads the manifest inside the folder.
    let shown = setup.daemon.cli(&["bundles", "show", &id]);
    let stdout = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{shown:?}");
    assert!(
        stdout.contains(&id) && stdout.contains("alert.json"),
        "{shown:?}"
    );
}
