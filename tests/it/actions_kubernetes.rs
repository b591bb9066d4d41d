//! Kubernetes actions against the fake API server, which applies every patch with kubectl's
//! own strategic-merge code: the tests assert on the resulting workload as well as on the
//! requests (method, path, content type, body).

use crate::fakes;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::http::Method;
use chrono::{DateTime, TimeZone, Utc};
use nightshift::act::actions::Outcome;
use nightshift::act::actions::kubernetes::{
    ACTION_KEY_ANNOTATION, RESTARTED_AT_ANNOTATION, read_env, read_replicas, read_restart_key,
    rollout_restart, scale, set_env,
};
use nightshift::config::KubernetesConfig;
use nightshift::kubernetes::{ClientSlot, Workload, WorkloadKind};
use serde_json::{Value, json};

use crate::fakes::kube::{
    FakeKube, JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, body_json, content_type,
    workload_path,
};

const NS: &str = "apps";
const KEY: &str = "incident-7/rule-vastai/restart/deployment/apps/web";

struct Kube {
    fake: FakeKube,
    client: kube::Client,
    dir: tempfile::TempDir,
}

/// The fake, and a client built by `ClientSlot` from the kubeconfig the fake wrote.
async fn kube() -> Kube {
    fakes::init();
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    let slot = ClientSlot::new(&KubernetesConfig {
        kubeconfig: Some(kubeconfig),
        context: None,
        namespaces: vec![NS.to_owned()],
    });
    let client = slot.client().await.expect("client");
    Kube { fake, client, dir }
}

/// A client for the fake with kube's own retries off and a read timeout.
async fn tuned_client(kube: &Kube, read_timeout: Option<Duration>) -> kube::Client {
    let path = kube.dir.path().join("kubeconfig");
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    config.default_retry = false;
    config.read_timeout = read_timeout;
    kube::Client::try_from(config).expect("client")
}

/// A client for a kubeconfig with this cluster entry (server URL and options).
async fn client_for(cluster: &str, token: &str) -> (kube::Client, tempfile::TempDir) {
    fakes::init();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n{cluster}\
             contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n\
             current-context: c\nusers:\n- name: u\n  user:\n    token: {token}\n"
        ),
    )
    .unwrap();
    let slot = ClientSlot::new(&KubernetesConfig {
        kubeconfig: Some(path),
        context: None,
        namespaces: vec![NS.to_owned()],
    });
    (slot.client().await.expect("client"), dir)
}

fn secret_ref() -> Value {
    json!({"secretKeyRef": {"name": "vastai", "key": "api-key"}})
}

/// A workload with two containers and an init container, each with env vars.
fn rich(kind: &str, name: &str) -> Value {
    let mut object = fakes::kube::workload(kind, NS, name, &[("app", name)]);
    object["spec"]["template"]["metadata"]["annotations"] = json!({"team": "gpu"});
    object["spec"]["template"]["spec"] = json!({
        "initContainers": [{
            "name": "migrate",
            "image": "registry.example/migrate:1",
            "env": [{"name": "MODE", "value": "init"}]
        }],
        "containers": [
            {
                "name": "app",
                "image": "registry.example/app:1.2.3",
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "env": [
                    {"name": "A", "value": "1"},
                    {"name": "VASTAI_KEY", "valueFrom": secret_ref()},
                    {"name": "Z", "value": "z"}
                ]
            },
            {
                "name": "sidecar",
                "image": "registry.example/proxy:2",
                "env": [{"name": "A", "value": "side"}]
            }
        ]
    });
    object
}

fn web_path() -> String {
    workload_path("deployment", NS, "web")
}

fn stored(kube: &Kube, kind: &str, name: &str) -> Value {
    kube.fake
        .workload_object(kind, NS, name)
        .expect("stored workload")
}

fn container<'a>(object: &'a Value, list: &str, name: &str) -> &'a Value {
    object["spec"]["template"]["spec"][list]
        .as_array()
        .unwrap()
        .iter()
        .find(|container| container["name"] == name)
        .unwrap_or_else(|| panic!("no {list} {name}"))
}

fn names(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

fn at(seconds: i64, nanos: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(1_787_400_000 + seconds, nanos).unwrap()
}

fn web() -> Workload {
    Workload::parse(NS, "deployment/web").unwrap()
}

#[track_caller]
fn assert_done(outcome: &Outcome) -> Value {
    match outcome {
        Outcome::Done { detail } => detail.clone(),
        other => panic!("expected Done, got {other:?}"),
    }
}

#[track_caller]
fn assert_not_applied(outcome: &Outcome, needles: &[&str]) {
    match outcome {
        Outcome::NotApplied {
            error,
            retryable: true,
        } => assert_contains(error, needles),
        other => panic!("expected NotApplied (retryable), got {other:?}"),
    }
}

#[track_caller]
fn assert_failed(outcome: &Outcome, needles: &[&str]) {
    match outcome {
        Outcome::Failed { error } => assert_contains(error, needles),
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[track_caller]
fn assert_unknown(outcome: &Outcome, needles: &[&str]) {
    match outcome {
        Outcome::Unknown { error } => assert_contains(error, needles),
        other => panic!("expected Unknown, got {other:?}"),
    }
}

#[track_caller]
fn assert_contains(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            text.contains(needle),
            "{text:?} does not contain {needle:?}"
        );
    }
}

/// Every PATCH so far was a strategic merge patch or a scale merge patch with these bodies.
#[track_caller]
fn assert_no_merge_patch_of_workloads(kube: &Kube) {
    for request in kube.fake.writes() {
        assert_eq!(request.method, Method::PATCH, "{}", request.describe());
        if request.path.ends_with("/scale") {
            assert_eq!(content_type(&request), MERGE_PATCH);
        } else {
            assert_eq!(
                content_type(&request),
                STRATEGIC_MERGE_PATCH,
                "{}",
                request.describe()
            );
        }
        assert_eq!(
            request.query_param("fieldManager").as_deref(),
            Some("nightshift")
        );
    }
}

// =======================================================================================
// Workload

#[test]
fn workload_names_are_checked() {
    let workload = Workload::parse(NS, "statefulset/db").unwrap();
    assert_eq!(workload.kind, WorkloadKind::StatefulSet);
    assert_eq!(workload.target(), "statefulset/apps/db");
    for (namespace, reference) in [
        (NS, "deployment/$(reboot)"),
        (NS, "deployment/web; rm -rf /"),
        (NS, "deployment/--kubeconfig=/x"),
        (NS, "deployment/../../etc"),
        (NS, "deployment/{{ labels.x }}"),
        ("../kube-system", "deployment/web"),
        (NS, "secret/web"),
    ] {
        assert!(
            Workload::parse(namespace, reference).is_err(),
            "{reference}"
        );
    }
}

// =======================================================================================
// rollout restart

#[tokio::test]
async fn rollout_restart_sets_both_annotations_in_one_strategic_patch() {
    let kube = kube().await;
    kube.fake.put(rich("Deployment", "web"));
    let before = stored(&kube, "deployment", "web");

    let outcome = rollout_restart(&kube.client, &web(), KEY, at(0, 123_456_789)).await;
    let detail = assert_done(&outcome);
    let restarted_at = "2026-08-22T12:00:00.123456789Z";
    assert_eq!(detail, json!({"restarted_at": restarted_at}));

    // On the wire: GET, then one strategic merge patch with exactly the two annotations.
    assert_eq!(
        kube.fake.calls(),
        vec![
            format!("GET {}", web_path()),
            format!("PATCH {} [{STRATEGIC_MERGE_PATCH}]", web_path()),
        ]
    );
    let patch = &kube.fake.writes()[0];
    assert_eq!(
        body_json(patch),
        json!({"spec": {"template": {"metadata": {"annotations": {
            RESTARTED_AT_ANNOTATION: restarted_at,
            ACTION_KEY_ANNOTATION: KEY
        }}}}})
    );
    assert_no_merge_patch_of_workloads(&kube);

    // The stored workload: both annotations added, the rest of the template kept, a new
    // generation and resourceVersion.
    let after = stored(&kube, "deployment", "web");
    assert_eq!(
        after["spec"]["template"]["metadata"]["annotations"],
        json!({"team": "gpu", RESTARTED_AT_ANNOTATION: restarted_at, ACTION_KEY_ANNOTATION: KEY})
    );
    assert_eq!(
        after["spec"]["template"]["spec"],
        before["spec"]["template"]["spec"]
    );
    assert_eq!(after["metadata"]["generation"], json!(4));
    assert_ne!(
        after["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
    assert_eq!(
        read_restart_key(&kube.client, &web()).await,
        Ok(Some(KEY.to_owned()))
    );
    kube.fake.journal.assert_no_unexpected();
}

#[tokio::test]
async fn two_restarts_within_a_second_differ_and_one_key_restarts_once() {
    let kube = kube().await;
    kube.fake.put(rich("Deployment", "web"));

    let first = assert_done(&rollout_restart(&kube.client, &web(), "key-1", at(5, 1_000)).await);
    let second =
        assert_done(&rollout_restart(&kube.client, &web(), "key-2", at(5, 900_000_000)).await);
    assert_ne!(first["restarted_at"], second["restarted_at"]);
    let annotations =
        stored(&kube, "deployment", "web")["spec"]["template"]["metadata"]["annotations"].clone();
    assert_eq!(annotations[RESTARTED_AT_ANNOTATION], second["restarted_at"]);
    assert_eq!(annotations[ACTION_KEY_ANNOTATION], json!("key-2"));
    assert_eq!(
        stored(&kube, "deployment", "web")["metadata"]["generation"],
        json!(5),
        "two template changes, two rollouts"
    );

    // The same key again (a blind re-run): nothing is sent, the restart is reported done.
    kube.fake.journal.clear();
    let again = assert_done(&rollout_restart(&kube.client, &web(), "key-2", at(9, 0)).await);
    assert_eq!(
        again,
        json!({"restarted_at": second["restarted_at"], "already_applied": true})
    );
    assert_eq!(kube.fake.calls(), vec![format!("GET {}", web_path())]);
    kube.fake.journal.assert_no_unexpected();
}

#[tokio::test]
async fn rollout_restart_of_statefulsets_and_daemonsets() {
    let kube = kube().await;
    kube.fake.put(rich("StatefulSet", "db"));
    kube.fake.put(rich("DaemonSet", "agent"));
    for (reference, kind, name) in [
        ("sts/db", "statefulset", "db"),
        ("daemonset/agent", "daemonset", "agent"),
    ] {
        let workload = Workload::parse(NS, reference).unwrap();
        assert_done(&rollout_restart(&kube.client, &workload, KEY, at(1, 0)).await);
        let annotations = &stored(&kube, kind, name)["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations[ACTION_KEY_ANNOTATION], json!(KEY));
        assert_eq!(
            annotations[RESTARTED_AT_ANNOTATION],
            json!("2026-08-22T12:00:01.000000000Z")
        );
    }
    let paths: Vec<String> = kube.fake.writes().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        vec![
            workload_path("statefulset", NS, "db"),
            workload_path("daemonset", NS, "agent")
        ]
    );
    assert_no_merge_patch_of_workloads(&kube);
    kube.fake.journal.assert_no_unexpected();
}

#[tokio::test]
async fn paused_deployment_is_refused_and_nothing_is_patched() {
    let kube = kube().await;
    let mut object = rich("Deployment", "web");
    object["spec"]["paused"] = json!(true);
    kube.fake.put(object);
    let before = stored(&kube, "deployment", "web");

    let outcome = rollout_restart(&kube.client, &web(), KEY, at(0, 0)).await;
    assert_failed(
        &outcome,
        &["deployment/web", "can't restart paused deployment"],
    );
    assert_eq!(kube.fake.calls(), vec![format!("GET {}", web_path())]);
    assert!(kube.fake.writes().is_empty());
    assert_eq!(stored(&kube, "deployment", "web"), before);
    assert_eq!(read_restart_key(&kube.client, &web()).await, Ok(None));
}

// =======================================================================================
// set env

#[tokio::test]
async fn set_env_sets_replaces_value_from_and_removes_with_real_smp_semantics() {
    let kube = kube().await;
    kube.fake.put(rich("Deployment", "web"));
    let before = stored(&kube, "deployment", "web");

    let outcome = set_env(
        &kube.client,
        &web(),
        &names(&["app"]),
        &vars(&[("VASTAI_FALLBACK", "1"), ("VASTAI_KEY", "literal")]),
        &names(&["Z"]),
        KEY,
    )
    .await;
    let detail = assert_done(&outcome);
    // The previous values, exactly: absent, valueFrom, plain value.
    assert_eq!(
        detail,
        json!({
            "previous": {"app": {
                "VASTAI_FALLBACK": null,
                "VASTAI_KEY": {"valueFrom": secret_ref()},
                "Z": "z"
            }},
            "changed": true
        })
    );

    // One strategic merge patch, by container name and env name.
    assert_eq!(
        kube.fake.calls(),
        vec![
            format!("GET {}", web_path()),
            format!("PATCH {} [{STRATEGIC_MERGE_PATCH}]", web_path()),
        ]
    );
    let body = body_json(&kube.fake.writes()[0]);
    assert_eq!(
        body,
        json!({
            "metadata": {"resourceVersion": before["metadata"]["resourceVersion"]},
            "spec": {"template": {
                "metadata": {"annotations": {ACTION_KEY_ANNOTATION: KEY}},
                "spec": {"containers": [{
                    "name": "app",
                    "env": [
                        {"name": "VASTAI_KEY", "value": "literal", "valueFrom": null},
                        {"name": "VASTAI_FALLBACK", "value": "1", "valueFrom": null},
                        {"name": "Z", "$patch": "delete"}
                    ],
                    "$setElementOrder/env": [
                        {"name": "A"}, {"name": "VASTAI_KEY"}, {"name": "VASTAI_FALLBACK"}
                    ]
                }]}
            }}
        })
    );
    assert_no_merge_patch_of_workloads(&kube);

    // The resulting workload: the app's env merged (order kept, new name appended, the
    // valueFrom gone), everything else untouched.
    let after = stored(&kube, "deployment", "web");
    assert_eq!(
        container(&after, "containers", "app")["env"],
        json!([
            {"name": "A", "value": "1"},
            {"name": "VASTAI_KEY", "value": "literal"},
            {"name": "VASTAI_FALLBACK", "value": "1"}
        ])
    );
    assert_eq!(
        container(&after, "containers", "app")["ports"],
        container(&before, "containers", "app")["ports"]
    );
    assert_eq!(
        container(&after, "containers", "app")["image"],
        json!("registry.example/app:1.2.3")
    );
    assert_eq!(
        container(&after, "containers", "sidecar"),
        container(&before, "containers", "sidecar")
    );
    assert_eq!(
        container(&after, "initContainers", "migrate"),
        container(&before, "initContainers", "migrate")
    );
    assert_eq!(
        after["spec"]["template"]["metadata"]["annotations"],
        json!({"team": "gpu", ACTION_KEY_ANNOTATION: KEY})
    );
    assert_eq!(after["spec"]["replicas"], before["spec"]["replicas"]);
    assert_eq!(after["metadata"]["generation"], json!(4));

    // Read back.
    let read = read_env(
        &kube.client,
        &web(),
        &names(&["app"]),
        &names(&["VASTAI_FALLBACK", "VASTAI_KEY", "Z", "A"]),
    )
    .await
    .unwrap();
    assert_eq!(
        read,
        BTreeMap::from([(
            "app".to_owned(),
            BTreeMap::from([
                ("A".to_owned(), Some("1".to_owned())),
                ("VASTAI_FALLBACK".to_owned(), Some("1".to_owned())),
                ("VASTAI_KEY".to_owned(), Some("literal".to_owned())),
                ("Z".to_owned(), None),
            ])
        )])
    );
    assert_eq!(
        read_restart_key(&kube.client, &web()).await,
        Ok(Some(KEY.to_owned()))
    );
    kube.fake.journal.assert_no_unexpected();
}

#[tokio::test]
async fn set_env_star_means_every_container_but_not_init_containers() {
    let kube = kube().await;
    kube.fake.put(rich("Deployment", "web"));
    let before = stored(&kube, "deployment", "web");

    let detail = assert_done(
        &set_env(
            &kube.client,
            &web(),
            &names(&["*"]),
            &vars(&[("A", "2")]),
            &[],
            KEY,
        )
        .await,
    );
    assert_eq!(
        detail["previous"],
        json!({"app": {"A": "1"}, "sidecar": {"A": "side"}})
    );
    let after = stored(&kube, "deployment", "web");
    assert_eq!(
        container(&after, "containers", "app")["env"][0],
        json!({"name": "A", "value": "2"})
    );
    assert_eq!(
        container(&after, "containers", "app")["env"][1]["valueFrom"],
        secret_ref(),
        "other entries untouched"
    );
    assert_eq!(
        container(&after, "containers", "sidecar")["env"],
        json!([{"name": "A", "value": "2"}])
    );
    assert_eq!(
        container(&after, "initContainers", "migrate"),
        container(&before, "initContainers", "migrate")
    );

    // An init container named explicitly is changed (and only it).
    let detail = assert_done(
        &set_env(
            &kube.client,
            &web(),
            &names(&["migrate"]),
            &vars(&[("MODE", "fallback")]),
            &[],
            "key-init",
        )
        .await,
    );
    assert_eq!(detail["previous"], json!({"migrate": {"MODE": "init"}}));
    let last = kube.fake.writes().pop().unwrap();
    assert_eq!(
        body_json(&last)["spec"]["template"]["spec"],
        json!({"initContainers": [{
            "name": "migrate",
            "env": [{"name": "MODE", "value": "fallback", "valueFrom": null}],
            "$setElementOrder/env": [{"name": "MODE"}]
        }]})
    );
    let final_object = stored(&kube, "deployment", "web");
    assert_eq!(
        container(&final_object, "initContainers", "migrate")["env"],
        json!([{"name": "MODE", "value": "fallback"}])
    );
    assert_eq!(
        container(&final_object, "containers", "app"),
        container(&after, "containers", "app")
    );
    assert_no_merge_patch_of_workloads(&kube);
    kube.fake.journal.assert_no_unexpected();
}

#[tokio::test]
async fn set_env_refuses_unknown_containers_and_bad_requests_without_patching() {
    let kube = kube().await;
    kube.fake.put(rich("Deployment", "web"));
    let before = stored(&kube, "deployment", "web");

    for containers in [names(&["worker"]), names(&["app", "worker"])] {
        let outcome = set_env(
            &kube.client,
            &web(),
            &containers,
            &vars(&[("A", "2")]),
            &[],
            KEY,
        )
        .await;
        assert_failed(
            &outcome,
            &[
                "no container named worker",
                "containers: app, sidecar",
                "migrate",
            ],
        );
    }
    assert_eq!(kube.fake.writes().len(), 0);
    assert_eq!(kube.fake.journal.count(), 2, "one GET each");

    // Bad arguments: nothing is sent at all.
    kube.fake.journal.clear();
    for (containers, set, remove) in [
        (names(&[]), vars(&[("A", "1")]), names(&[])),
        (names(&["app"]), vars(&[]), names(&[])),
        (names(&["app"]), vars(&[("A", "1")]), names(&["A"])),
        (names(&["app"]), vars(&[("A=B", "1")]), names(&[])),
        (names(&["App"]), vars(&[("A", "1")]), names(&[])),
    ] {
        let outcome = set_env(&kube.client, &web(), &containers, &set, &remove, KEY).await;
        assert_failed(&outcome, &["set env on deployment/web"]);
    }
    assert_failed(
        &set_env(
            &kube.client,
            &web(),
            &names(&["app"]),
            &vars(&[("A", "1")]),
            &[],
            "",
        )
        .await,
        &["empty action key"],
    );
    assert_eq!(kube.fake.journal.count(), 0);
    assert_eq!(stored(&kube, "deployment", "web"), before);
}

#[tokio::test]
async fn set_env_already_in_place_sends_no_patch() {
    let kube = kube().await;
    kube.fake.put(rich("Deployment", "web"));
    let outcome = set_env(
        &kube.client,
        &web(),
        &names(&["app"]),
        &vars(&[("A", "1")]),
        &names(&["NOT_THERE"]),
        KEY,
    )
    .await;
    assert_eq!(
        assert_done(&outcome),
        json!({"previous": {"app": {"A": "1", "NOT_THERE": null}}, "changed": false})
    );
    assert_eq!(kube.fake.calls(), vec![format!("GET {}", web_path())]);
    // The key was not written: no template change, no rollout.
    assert_eq!(read_restart_key(&kube.client, &web()).await, Ok(None));
}

#[tokio::test]
async fn set_env_loses_to_a_concurrent_change() {
    let kube = kube().await;
    kube.fake.put(rich("Deployment", "web"));
    // The GET is answered late; meanwhile a human changes A.
    kube.fake
        .delay_after_apply(Method::GET, &web_path(), Duration::from_millis(300));
    let client = kube.client.clone();
    let action = tokio::spawn(async move {
        set_env(
            &client,
            &web(),
            &names(&["app"]),
            &vars(&[("A", "nightshift")]),
            &[],
            KEY,
        )
        .await
    });
    // The GET has reached the API server (which holds its answer back): only then does the
    // human change A.
    let asked = fakes::until(Duration::from_secs(10), || {
        kube.fake.calls().iter().any(|call| call.starts_with("GET"))
    })
    .await;
    assert!(asked, "{:?}", kube.fake.calls());
    let mut human = stored(&kube, "deployment", "web");
    human["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = json!("human");
    human["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    kube.fake.put(human);

    let outcome = action.await.unwrap();
    assert_not_applied(
        &outcome,
        &["HTTP 409 Conflict", "the object has been modified"],
    );
    assert_eq!(
        container(&stored(&kube, "deployment", "web"), "containers", "app")["env"][0],
        json!({"name": "A", "value": "human"}),
        "the human's change stands"
    );

    // Retried, the action sees (and records) the human's value.
    kube.fake.clear_faults();
    let detail = assert_done(
        &set_env(
            &kube.client,
            &web(),
            &names(&["app"]),
            &vars(&[("A", "nightshift")]),
            &[],
            KEY,
        )
        .await,
    );
    assert_eq!(detail["previous"], json!({"app": {"A": "human"}}));
    kube.fake.journal.assert_no_unexpected();
}

/// The fake answers as the real API server: what nightshift must avoid fails there too.
#[tokio::test]
async fn fake_applies_patches_as_the_api_server_does() {
    let kube = kube().await;
    kube.fake.put(rich("Deployment", "web"));
    let send = |content_type: &'static str, body: Value| {
        let client = kube.client.clone();
        async move {
            let request = http::Request::patch(web_path())
                .header("content-type", content_type)
                .body(body.to_string().into_bytes())
                .unwrap();
            client.request_text(request).await
        }
    };
    let api_code = |result: Result<String, kube::Error>| match result {
        Err(kube::Error::Api(status)) => (status.code, status.message),
        other => panic!("expected an API error, got {other:?}"),
    };

    // A strategic patch that sets a value but leaves the valueFrom: refused (422).
    let (code, message) = api_code(
        send(
            STRATEGIC_MERGE_PATCH,
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "env": [{"name": "VASTAI_KEY", "value": "x"}]}
            ]}}}}),
        )
        .await,
    );
    assert_eq!(code, 422);
    assert_contains(&message, &["valueFrom", "may not be specified"]);

    // A JSON merge patch replaces the containers list whole: the image is gone (422), and
    // the fake notes the request as one nightshift must never send.
    let (code, message) = api_code(
        send(
            MERGE_PATCH,
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "env": [{"name": "A", "value": "2"}]}
            ]}}}}),
        )
        .await,
    );
    assert_eq!(code, 422);
    assert_contains(&message, &["containers[0].image: Required value"]);
    let (code, _) = api_code(send("application/json", json!({})).await);
    assert_eq!(code, 415);

    // A JSON patch is applied too.
    let answer = send(
        JSON_PATCH,
        json!([{"op": "replace", "path": "/spec/replicas", "value": 5}]),
    )
    .await
    .expect("json patch");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["spec"]["replicas"], json!(5));
    assert_eq!(
        stored(&kube, "deployment", "web")["spec"]["replicas"],
        json!(5)
    );

    let unexpected = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        kube.fake.journal.assert_no_unexpected()
    }));
    assert!(unexpected.is_err(), "merge patch of containers is flagged");
}

// =======================================================================================
// scale

#[tokio::test]
async fn scale_records_previous_replicas_and_sends_zero() {
    let kube = kube().await;
    kube.fake.put(rich("Deployment", "web"));
    let scale_path = format!("{}/scale", web_path());

    let detail = assert_done(&scale(&kube.client, &web(), 0, KEY).await);
    assert_eq!(
        detail,
        json!({"previous_replicas": 2, "replicas": 0, "changed": true, "action_key": KEY})
    );
    assert_eq!(
        kube.fake.calls(),
        vec![
            format!("GET {scale_path}"),
            format!("PATCH {scale_path} [{MERGE_PATCH}]"),
        ]
    );
    assert_eq!(
        body_json(&kube.fake.writes()[0]),
        json!({"spec": {"replicas": 0}})
    );
    let after = stored(&kube, "deployment", "web");
    assert_eq!(after["spec"]["replicas"], json!(0));
    assert_eq!(after["metadata"]["generation"], json!(4));
    // The Scale of a workload at 0 has no spec.replicas (omitempty): still read as 0.
    assert_eq!(read_replicas(&kube.client, &web()).await, Ok(0));

    // Back up: previous is 0.
    let detail = assert_done(&scale(&kube.client, &web(), 3, KEY).await);
    assert_eq!(detail["previous_replicas"], json!(0));
    assert_eq!(
        stored(&kube, "deployment", "web")["spec"]["replicas"],
        json!(3)
    );

    // Already there: nothing sent.
    kube.fake.journal.clear();
    let detail = assert_done(&scale(&kube.client, &web(), 3, KEY).await);
    assert_eq!(detail["changed"], json!(false));
    assert_eq!(kube.fake.calls(), vec![format!("GET {scale_path}")]);
    assert_no_merge_patch_of_workloads(&kube);
    kube.fake.journal.assert_no_unexpected();
}

#[tokio::test]
async fn scale_statefulsets_but_not_daemonsets() {
    let kube = kube().await;
    kube.fake.put(rich("StatefulSet", "db"));
    kube.fake.put(rich("DaemonSet", "agent"));
    let db = Workload::parse(NS, "statefulset/db").unwrap();
    assert_done(&scale(&kube.client, &db, 1, KEY).await);
    assert_eq!(
        stored(&kube, "statefulset", "db")["spec"]["replicas"],
        json!(1)
    );
    assert_eq!(read_replicas(&kube.client, &db).await, Ok(1));
    assert_eq!(
        kube.fake.writes()[0].path,
        format!("{}/scale", workload_path("statefulset", NS, "db"))
    );

    kube.fake.journal.clear();
    let agent = Workload::parse(NS, "daemonset/agent").unwrap();
    assert_failed(
        &scale(&kube.client, &agent, 1, KEY).await,
        &["daemonset cannot be scaled"],
    );
    assert!(read_replicas(&kube.client, &agent).await.is_err());
    assert_failed(&scale(&kube.client, &db, -1, KEY).await, &["0 or more"]);
    assert_eq!(kube.fake.journal.count(), 0);
}

// =======================================================================================
// read-back

#[tokio::test]
async fn read_back_functions() {
    let kube = kube().await;
    kube.fake.put(rich("Deployment", "web"));
    assert_eq!(read_restart_key(&kube.client, &web()).await, Ok(None));
    assert_eq!(read_replicas(&kube.client, &web()).await, Ok(2));
    let read = read_env(
        &kube.client,
        &web(),
        &names(&["*", "migrate"]),
        &names(&["A", "MODE"]),
    )
    .await
    .unwrap();
    assert_eq!(
        read,
        BTreeMap::from([
            (
                "app".to_owned(),
                BTreeMap::from([
                    ("A".to_owned(), Some("1".to_owned())),
                    ("MODE".to_owned(), None)
                ])
            ),
            (
                "migrate".to_owned(),
                BTreeMap::from([
                    ("A".to_owned(), None),
                    ("MODE".to_owned(), Some("init".to_owned()))
                ])
            ),
            (
                "sidecar".to_owned(),
                BTreeMap::from([
                    ("A".to_owned(), Some("side".to_owned())),
                    ("MODE".to_owned(), None)
                ])
            ),
        ])
    );
    // A valueFrom is not a value: it cannot settle anything.
    let error = read_env(
        &kube.client,
        &web(),
        &names(&["app"]),
        &names(&["VASTAI_KEY"]),
    )
    .await
    .unwrap_err();
    assert_contains(&error, &["VASTAI_KEY", "valueFrom"]);
    let error = read_env(&kube.client, &web(), &names(&["nope"]), &names(&["A"]))
        .await
        .unwrap_err();
    assert_contains(&error, &["no container named nope"]);

    let missing = Workload::parse(NS, "deployment/gone").unwrap();
    for error in [
        read_restart_key(&kube.client, &missing).await.unwrap_err(),
        read_env(&kube.client, &missing, &names(&["*"]), &names(&["A"]))
            .await
            .unwrap_err(),
        read_replicas(&kube.client, &missing).await.unwrap_err(),
    ] {
        assert_contains(
            &error,
            &["deployment/gone in namespace apps", "HTTP 404 NotFound"],
        );
    }
    assert!(kube.fake.writes().is_empty());
    kube.fake.journal.assert_no_unexpected();
}

/// A PATCH that took effect but whose answer was lost is `Unknown`, and reading back
/// settles it.
#[tokio::test]
async fn lost_answers_are_unknown_and_settled_by_read_back() {
    let kube = kube().await;
    kube.fake.put(rich("Deployment", "web"));
    kube.fake.fail_after_apply(Method::PATCH, &web_path(), 500);
    assert_unknown(
        &rollout_restart(&kube.client, &web(), KEY, at(0, 0)).await,
        &["rollout restart", "HTTP 500"],
    );
    assert_eq!(
        read_restart_key(&kube.client, &web()).await,
        Ok(Some(KEY.to_owned())),
        "it did happen"
    );

    assert_unknown(
        &set_env(
            &kube.client,
            &web(),
            &names(&["app"]),
            &vars(&[("A", "9")]),
            &[],
            "key-env",
        )
        .await,
        &["set env", "HTTP 500"],
    );
    let read = read_env(&kube.client, &web(), &names(&["app"]), &names(&["A"]))
        .await
        .unwrap();
    assert_eq!(read["app"]["A"].as_deref(), Some("9"));

    let scale_path = format!("{}/scale", web_path());
    let slow = tuned_client(&kube, Some(Duration::from_millis(300))).await;
    kube.fake
        .delay_after_apply(Method::PATCH, &scale_path, Duration::from_secs(5));
    let started = Instant::now();
    assert_unknown(
        &scale(&slow, &web(), 7, KEY).await,
        &["scale deployment/web"],
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(read_replicas(&kube.client, &web()).await, Ok(7));

    // A PATCH refused before it took effect reads back as absent.
    kube.fake.clear_faults();
    kube.fake.fail(Method::PATCH, &web_path(), 500);
    assert_unknown(
        &rollout_restart(&kube.client, &web(), "key-later", at(1, 0)).await,
        &["HTTP 500"],
    );
    assert_eq!(
        read_restart_key(&kube.client, &web()).await,
        Ok(Some("key-env".to_owned())),
        "not applied: the key is the last one that was"
    );
}

// =======================================================================================
// errors → outcomes

#[tokio::test]
async fn refusals_and_missing_objects_fail_without_patching() {
    let kube = kube().await;
    kube.fake.put(rich("Deployment", "web"));
    let before = stored(&kube, "deployment", "web");

    // The preliminary GET refused or missing: Failed, nothing patched.
    let missing = Workload::parse(NS, "deployment/gone").unwrap();
    assert_failed(
        &rollout_restart(&kube.client, &missing, KEY, at(0, 0)).await,
        &[
            "get deployment/gone in namespace apps",
            "HTTP 404 NotFound",
            "not found",
        ],
    );
    assert_failed(
        &scale(&kube.client, &missing, 1, KEY).await,
        &["get scale of deployment/gone", "HTTP 404"],
    );
    kube.fake.fail(Method::GET, &web_path(), 403);
    assert_failed(
        &rollout_restart(&kube.client, &web(), KEY, at(0, 0)).await,
        &["HTTP 403 Forbidden", "cannot get resource \"deployments\""],
    );
    assert_failed(
        &set_env(
            &kube.client,
            &web(),
            &names(&["app"]),
            &vars(&[("A", "2")]),
            &[],
            KEY,
        )
        .await,
        &["HTTP 403 Forbidden"],
    );
    assert!(kube.fake.writes().is_empty());
    kube.fake.clear_faults();

    // The PATCH refused: Failed.
    for code in [403, 404, 422, 400] {
        kube.fake.clear_faults();
        kube.fake.fail(Method::PATCH, &web_path(), code);
        assert_failed(
            &rollout_restart(&kube.client, &web(), KEY, at(0, 0)).await,
            &[&format!("HTTP {code}")],
        );
    }
    kube.fake.clear_faults();
    kube.fake
        .fail(Method::PATCH, &format!("{}/scale", web_path()), 403);
    assert_failed(
        &scale(&kube.client, &web(), 0, KEY).await,
        &["HTTP 403", "cannot patch resource"],
    );
    assert_eq!(stored(&kube, "deployment", "web"), before);
}

#[tokio::test]
async fn conflicts_and_throttling_are_not_applied_and_retryable() {
    let kube = kube().await;
    kube.fake.put(rich("Deployment", "web"));
    let before = stored(&kube, "deployment", "web");
    kube.fake.fail(Method::PATCH, &web_path(), 409);
    assert_not_applied(
        &rollout_restart(&kube.client, &web(), KEY, at(0, 0)).await,
        &["HTTP 409 Conflict"],
    );
    assert_not_applied(
        &set_env(
            &kube.client,
            &web(),
            &names(&["app"]),
            &vars(&[("A", "2")]),
            &[],
            KEY,
        )
        .await,
        &["HTTP 409"],
    );

    // 429 reaches the action only with kube's own retries off (they re-send it first).
    let no_retry = tuned_client(&kube, None).await;
    kube.fake.clear_faults();
    kube.fake.fail(Method::PATCH, &web_path(), 429);
    assert_not_applied(
        &rollout_restart(&no_retry, &web(), KEY, at(0, 0)).await,
        &["HTTP 429"],
    );
    assert_eq!(stored(&kube, "deployment", "web"), before);

    // With them on (the default client), one 429 is re-sent by kube: done, two PATCHes.
    kube.fake.clear_faults();
    kube.fake.journal.clear();
    kube.fake.fail_times(Method::PATCH, &web_path(), 429, 1);
    assert_done(&rollout_restart(&kube.client, &web(), KEY, at(0, 0)).await);
    assert_eq!(kube.fake.writes().len(), 2);
    assert_eq!(
        read_restart_key(&kube.client, &web()).await,
        Ok(Some(KEY.to_owned()))
    );
}

#[tokio::test]
async fn server_errors_and_timeouts() {
    let kube = kube().await;
    kube.fake.put(rich("Deployment", "web"));
    let before = stored(&kube, "deployment", "web");

    // A 5xx on the preliminary GET: nothing changed, retryable.
    kube.fake.fail(Method::GET, &web_path(), 500);
    assert_not_applied(
        &rollout_restart(&kube.client, &web(), KEY, at(0, 0)).await,
        &["get deployment/web", "HTTP 500"],
    );
    kube.fake.clear_faults();
    // A 5xx on the PATCH: unknown.
    kube.fake.fail(Method::PATCH, &web_path(), 500);
    assert_unknown(
        &set_env(
            &kube.client,
            &web(),
            &names(&["app"]),
            &vars(&[("A", "2")]),
            &[],
            KEY,
        )
        .await,
        &["HTTP 500 InternalError"],
    );
    kube.fake.clear_faults();

    // Slow: the client's read timeout fires. On the GET: not applied; on the PATCH: unknown.
    let slow = tuned_client(&kube, Some(Duration::from_millis(300))).await;
    kube.fake
        .delay(Method::GET, &web_path(), Duration::from_secs(5));
    let started = Instant::now();
    assert_not_applied(
        &rollout_restart(&slow, &web(), KEY, at(0, 0)).await,
        &["get deployment/web", "no answer"],
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    kube.fake.clear_faults();
    kube.fake
        .delay(Method::PATCH, &web_path(), Duration::from_secs(5));
    let started = Instant::now();
    assert_unknown(
        &rollout_restart(&slow, &web(), KEY, at(0, 0)).await,
        &["rollout restart", "no answer"],
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    kube.fake.clear_faults();
    let scale_path = format!("{}/scale", web_path());
    kube.fake
        .delay(Method::GET, &scale_path, Duration::from_secs(5));
    assert_not_applied(&scale(&slow, &web(), 0, KEY).await, &["get scale"]);
    assert!(read_replicas(&slow, &web()).await.is_err());
    drop(before);
}

#[tokio::test]
async fn unreachable_api_server_is_not_applied() {
    // Connection refused.
    let (client, _dir) = client_for(&format!("    server: {}\n", fakes::dead_url()), "token").await;
    assert_not_applied(
        &rollout_restart(&client, &web(), KEY, at(0, 0)).await,
        &["get deployment/web", "not sent"],
    );
    assert_not_applied(
        &set_env(
            &client,
            &web(),
            &names(&["app"]),
            &vars(&[("A", "1")]),
            &[],
            KEY,
        )
        .await,
        &["not sent"],
    );
    assert_not_applied(&scale(&client, &web(), 0, KEY).await, &["not sent"]);
    assert!(read_restart_key(&client, &web()).await.is_err());
    assert!(read_replicas(&client, &web()).await.is_err());

    // A TLS handshake that fails (the fake speaks plain HTTP).
    let fake = FakeKube::start().await;
    let https = fake.url().replace("http://", "https://");
    let (client, _dir) = client_for(
        &format!("    server: {https}\n    insecure-skip-tls-verify: true\n"),
        &fake.token,
    )
    .await;
    assert_not_applied(
        &rollout_restart(&client, &web(), KEY, at(0, 0)).await,
        &["not sent"],
    );
    assert_eq!(fake.journal.count(), 0);

    // A name that does not resolve.
    let (client, _dir) = client_for(
        "    server: https://nightshift-test.invalid:6443\n",
        "token",
    )
    .await;
    assert_not_applied(&scale(&client, &web(), 0, KEY).await, &["not sent"]);
}

#[tokio::test]
async fn bad_credentials_fail() {
    let fake = FakeKube::start().await;
    fake.put(rich("Deployment", "web"));
    let (client, _dir) = client_for(&format!("    server: {}\n", fake.url()), "wrong").await;
    assert_failed(
        &rollout_restart(&client, &web(), KEY, at(0, 0)).await,
        &["HTTP 401 Unauthorized"],
    );
}
