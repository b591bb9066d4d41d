//! The collector executors against fakes on 127.0.0.1: the files each kind writes, the size
//! cap, the timeout, Prometheus fallback, the global concurrency cap and the sharing of
//! identical requests.

use crate::fakes;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::Method;
use nightshift::bundle::collectors::{CollectEnv, Collectors};
use nightshift::bundle::request::{
    CollectorOutput, CollectorRequest, CollectorStatus, RequestKind,
};
use nightshift::config::KubernetesConfig;
use nightshift::kubernetes::ClientSlot;
use serde_json::{Value, json};

use crate::fakes::kube::{FakeKube, PodFixture, event, replica_set, secret, workload};
use crate::fakes::prometheus::{FakePrometheus, sample, series};
use crate::fakes::web::FakeWeb;

const NS: &str = "apps";
const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Helpers

fn request(name: &str, kind: RequestKind) -> CollectorRequest {
    CollectorRequest {
        name: name.to_owned(),
        rule: "test-rule".to_owned(),
        kind,
        timeout: Duration::from_secs(10),
        max_bytes: MIB,
        before_action: false,
        on_resolve: false,
    }
}

fn env(prometheus_urls: Vec<String>, kubernetes: ClientSlot) -> CollectEnv {
    fakes::init();
    CollectEnv {
        prometheus_urls,
        http: nightshift::act::actions::http::client().unwrap(),
        kubernetes,
    }
}

/// Collectors with no Kubernetes configured.
fn collectors(prometheus_urls: Vec<String>) -> Collectors {
    let slot = ClientSlot::new(&KubernetesConfig::default());
    Collectors::new(env(prometheus_urls, slot), 4, Duration::from_secs(60))
}

/// The fake API server and collectors whose client talks to it (namespace `apps` allowed).
struct Kube {
    fake: FakeKube,
    collectors: Collectors,
    _dir: tempfile::TempDir,
}

async fn kube() -> Kube {
    fakes::init();
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let slot = ClientSlot::new(&KubernetesConfig {
        kubeconfig: Some(fake.write_kubeconfig(dir.path())),
        context: None,
        namespaces: vec![NS.to_owned()],
    });
    let collectors = Collectors::new(env(Vec::new(), slot), 4, Duration::ZERO);
    Kube {
        fake,
        collectors,
        _dir: dir,
    }
}

fn paths(output: &CollectorOutput) -> Vec<&str> {
    output.files.iter().map(|file| file.path.as_str()).collect()
}

fn file<'a>(output: &'a CollectorOutput, path: &str) -> &'a [u8] {
    &output
        .files
        .iter()
        .find(|file| file.path == path)
        .unwrap_or_else(|| panic!("no file {path} in {:?}", paths(output)))
        .bytes
}

fn text(output: &CollectorOutput, path: &str) -> String {
    String::from_utf8(file(output, path).to_vec()).expect("utf-8")
}

fn json_file(output: &CollectorOutput, path: &str) -> Value {
    serde_json::from_slice(file(output, path)).expect("json")
}

fn total_bytes(output: &CollectorOutput) -> u64 {
    output
        .files
        .iter()
        .map(|file| file.bytes.len() as u64)
        .sum()
}

fn range(query: &str, start: i64, end: i64) -> RequestKind {
    RequestKind::PrometheusRange {
        query: query.to_owned(),
        start,
        end,
        step: Duration::from_secs(15),
    }
}

fn logs(workload: Option<&str>, selector: Option<&str>, previous: bool) -> RequestKind {
    RequestKind::KubernetesLogs {
        namespace: NS.to_owned(),
        workload: workload.map(str::to_owned),
        selector: selector.map(str::to_owned),
        containers: Vec::new(),
        tail_lines: None,
        since: None,
        previous,
    }
}

fn exec(argv: &[&str]) -> RequestKind {
    RequestKind::Exec {
        argv: argv.iter().map(|arg| (*arg).to_owned()).collect(),
        env: vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())],
    }
}

fn http(url: &str) -> RequestKind {
    RequestKind::Http {
        url: url.to_owned(),
        headers: BTreeMap::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Prometheus

#[tokio::test]
async fn prometheus_range_saves_the_answer_and_a_csv_row_per_sample() {
    let prometheus = FakePrometheus::start().await;
    let matrix = json!([
        series(
            json!({"__name__": "http_errors", "job": "api"}),
            &[(1_700_000_000.0, "1"), (1_700_000_015.0, "2.5")]
        ),
        series(json!({"job": "web"}), &[(1_700_000_000.0, "NaN")]),
    ]);
    prometheus.set_range_result("rate(http_errors[5m])", matrix.clone());
    let collectors = collectors(vec![prometheus.url()]);

    let output = collectors
        .run(&request(
            "errors",
            range(
                "rate(http_errors[5m])",
                1_700_000_000_000,
                1_700_000_060_500,
            ),
        ))
        .await;

    assert_eq!(output.status, CollectorStatus::Ok, "{:?}", output.error);
    assert_eq!(output.error, None);
    assert_eq!(
        (output.name.as_str(), output.kind.as_str()),
        ("errors", "prometheus_range")
    );
    assert!(!output.shared);
    assert_eq!(paths(&output), ["range.json", "range.csv"]);
    assert_eq!(
        json_file(&output, "range.json"),
        json!({"status": "success", "data": {"resultType": "matrix", "result": matrix}})
    );
    assert_eq!(
        text(&output, "range.csv"),
        "series,timestamp,value\n\
         \"{__name__=\"\"http_errors\"\",job=\"\"api\"\"}\",2023-11-14T22:13:20.000Z,1\n\
         \"{__name__=\"\"http_errors\"\",job=\"\"api\"\"}\",2023-11-14T22:13:35.000Z,2.5\n\
         \"{job=\"\"web\"\"}\",2023-11-14T22:13:20.000Z,NaN\n"
    );
    let params = prometheus.range_params();
    assert_eq!(params.len(), 1);
    assert_eq!(params[0]["query"], "rate(http_errors[5m])");
    assert_eq!(params[0]["start"], "1700000000.000");
    assert_eq!(params[0]["end"], "1700000060.500");
    assert_eq!(params[0]["step"], "15");
    assert_eq!(collectors.fetched(), 1);
    prometheus.journal.assert_no_unexpected();
}

#[tokio::test]
async fn prometheus_query_handles_vectors_and_scalars_and_reports_api_errors() {
    let prometheus = FakePrometheus::start().await;
    prometheus.set_result(
        "up",
        "vector",
        json!([sample(json!({"job": "a", "instance": "h:1"}), "1")]),
    );
    prometheus.set_result("scalar(1)", "scalar", json!([1_435_781_451.781, "1"]));
    let collectors = collectors(vec![prometheus.url()]);
    let query = |query: &str| RequestKind::PrometheusQuery {
        query: query.to_owned(),
        at: 1_435_781_451_781,
    };

    let output = collectors.run(&request("up", query("up"))).await;
    assert_eq!(output.status, CollectorStatus::Ok, "{:?}", output.error);
    assert_eq!(paths(&output), ["query.json", "query.csv"]);
    assert_eq!(
        json_file(&output, "query.json")["data"]["resultType"],
        "vector"
    );
    assert_eq!(
        text(&output, "query.csv"),
        "series,timestamp,value\n\"{instance=\"\"h:1\"\",job=\"\"a\"\"}\",2015-07-01T20:10:51.781Z,1\n"
    );
    let asked = &prometheus.journal.requests()[0];
    assert_eq!(asked.path, "/api/v1/query");
    assert_eq!(asked.query_param("time").as_deref(), Some("1435781451.781"));

    let output = collectors.run(&request("scalar", query("scalar(1)"))).await;
    assert_eq!(
        text(&output, "query.csv"),
        "series,timestamp,value\n,2015-07-01T20:10:51.781Z,1\n"
    );

    prometheus.set_api_error(400, "bad_data", "1:5: parse error: unexpected end of input");
    let output = collectors.run(&request("broken", query("sum("))).await;
    assert_eq!(output.status, CollectorStatus::Failed);
    let error = output.error.as_deref().unwrap();
    assert!(
        error.contains("bad_data: 1:5: parse error: unexpected end of input"),
        "{error}"
    );
    // The API's answer is the evidence even so.
    assert_eq!(json_file(&output, "query.json")["errorType"], "bad_data");
    assert_eq!(paths(&output), ["query.json"]);
}

#[tokio::test]
async fn a_dead_first_prometheus_url_falls_back_to_the_second() {
    let prometheus = FakePrometheus::start().await;
    prometheus.set_range_result("up", json!([series(json!({}), &[(1.0, "1")])]));
    let dead = fakes::dead_url();
    let collectors = collectors(vec![dead.clone(), prometheus.url()]);

    let output = collectors.run(&request("up", range("up", 0, 60_000))).await;

    assert_eq!(output.status, CollectorStatus::Ok, "{:?}", output.error);
    assert_eq!(
        text(&output, "range.csv"),
        "series,timestamp,value\n{},1970-01-01T00:00:01.000Z,1\n"
    );
    assert_eq!(prometheus.range_params().len(), 1);

    // Both failing (a proxy's 502 page on the second): failed, naming each URL.
    prometheus.set_raw_error(502, "<html>Bad Gateway</html>");
    let output = collectors
        .run(&request("up", range("up", 0, 120_000)))
        .await;
    assert_eq!(output.status, CollectorStatus::Failed);
    let error = output.error.unwrap();
    assert!(
        error.contains(&format!("{dead}: connection failed")),
        "{error}"
    );
    assert!(
        error.contains(&format!(
            "{}: HTTP 502: <html>Bad Gateway</html>",
            prometheus.url()
        )),
        "{error}"
    );
    assert!(output.files.is_empty());
}

#[tokio::test]
async fn a_slow_prometheus_times_out_at_the_collector_timeout() {
    let prometheus = FakePrometheus::start().await;
    prometheus.set_delay(Duration::from_secs(5));
    let collectors = collectors(vec![prometheus.url()]);
    let mut slow = request("slow", range("up", 0, 60_000));
    slow.timeout = Duration::from_millis(300);

    let started = Instant::now();
    let output = collectors.run(&slow).await;

    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(output.status, CollectorStatus::TimedOut);
    assert_eq!(output.error.as_deref(), Some("timed out after 300ms"));
    assert!(output.files.is_empty());
    assert!(
        output.duration_ms >= 300 && output.duration_ms < 1000,
        "{}",
        output.duration_ms
    );
}

// ---------------------------------------------------------------------------------------
// Kubernetes logs

/// `deployment/web` (pods `app=web`), and a pod of another app.
fn web_with_pods(kube: &Kube) {
    kube.fake
        .put(workload("Deployment", NS, "web", &[("app", "web")]));
    kube.fake.put(
        PodFixture::new(NS, "web-b", &[("app", "web")])
            .container("sidecar", 0, None, None)
            .to_json(),
    );
    kube.fake.put(
        PodFixture::new(NS, "web-a", &[("app", "web")])
            .container("app", 2, Some("OOMKilled"), None)
            .container("sidecar", 0, None, None)
            .to_json(),
    );
    kube.fake
        .put(PodFixture::new(NS, "api-x", &[("app", "api")]).to_json());
    for (pod, container) in [
        ("web-a", "app"),
        ("web-a", "sidecar"),
        ("web-b", "app"),
        ("web-b", "sidecar"),
        ("api-x", "app"),
    ] {
        kube.fake.set_log(
            NS,
            pod,
            container,
            false,
            &format!(
                "{pod}/{container} line 1\n{pod}/{container} line 2\n{pod}/{container} line 3\n"
            ),
        );
    }
    kube.fake
        .set_log(NS, "web-a", "app", true, "before the OOM kill\nkilled\n");
}

#[tokio::test]
async fn logs_of_each_container_and_the_previous_log_of_the_restarted_one() {
    let kube = kube().await;
    web_with_pods(&kube);
    let mut kind = logs(Some("deployment/web"), None, true);
    if let RequestKind::KubernetesLogs {
        tail_lines, since, ..
    } = &mut kind
    {
        *tail_lines = Some(2);
        *since = Some(Duration::from_secs(600));
    }

    let output = kube.collectors.run(&request("logs", kind)).await;

    assert_eq!(output.status, CollectorStatus::Ok, "{:?}", output.error);
    assert_eq!(output.error, None);
    // The restarted pod first; the previous log right after the current one.
    assert_eq!(
        paths(&output),
        [
            "web-a/app.log",
            "web-a/app.previous.log",
            "web-a/sidecar.log",
            "web-b/app.log",
            "web-b/sidecar.log"
        ]
    );
    assert_eq!(
        text(&output, "web-a/app.log"),
        "web-a/app line 2\nweb-a/app line 3\n"
    );
    assert_eq!(
        text(&output, "web-a/app.previous.log"),
        "before the OOM kill\nkilled\n"
    );
    assert_eq!(
        text(&output, "web-b/sidecar.log"),
        "web-b/sidecar line 2\nweb-b/sidecar line 3\n"
    );

    let requests = kube.fake.journal.requests();
    let list = requests
        .iter()
        .find(|request| request.path == "/api/v1/namespaces/apps/pods")
        .expect("a pod list");
    assert_eq!(
        list.query_param("labelSelector").as_deref(),
        Some("app=web")
    );
    let log_requests: Vec<_> = requests
        .iter()
        .filter(|request| request.path.ends_with("/log"))
        .collect();
    assert_eq!(log_requests.len(), 5);
    for log in &log_requests {
        assert_eq!(log.query_param("tailLines").as_deref(), Some("2"));
        assert_eq!(log.query_param("sinceSeconds").as_deref(), Some("600"));
        assert!(log.query_param("container").is_some());
    }
    let previous: Vec<String> = log_requests
        .iter()
        .filter(|log| log.query_param("previous").as_deref() == Some("true"))
        .map(|log| format!("{} {}", log.path, log.query_param("container").unwrap()))
        .collect();
    assert_eq!(previous, ["/api/v1/namespaces/apps/pods/web-a/log app"]);
    assert!(
        !requests
            .iter()
            .any(|request| request.path.contains("api-x"))
    );
    kube.fake.journal.assert_no_unexpected();
}

#[tokio::test]
async fn logs_of_the_listed_containers_of_a_selector() {
    let kube = kube().await;
    web_with_pods(&kube);
    let mut kind = logs(None, Some("app in (web)"), false);
    if let RequestKind::KubernetesLogs { containers, .. } = &mut kind {
        *containers = vec!["sidecar".to_owned()];
    }

    let output = kube.collectors.run(&request("logs", kind)).await;

    assert_eq!(output.status, CollectorStatus::Ok, "{:?}", output.error);
    assert_eq!(paths(&output), ["web-a/sidecar.log", "web-b/sidecar.log"]);
    assert_eq!(
        text(&output, "web-b/sidecar.log"),
        "web-b/sidecar line 1\nweb-b/sidecar line 2\nweb-b/sidecar line 3\n"
    );
}

#[tokio::test]
async fn a_failed_log_fetch_is_noted_and_only_all_failing_fails() {
    let kube = kube().await;
    web_with_pods(&kube);
    // A restarted container whose previous log is gone (the real API answers 400), and a
    // pod whose logs cannot be read at all.
    kube.fake.put(
        PodFixture::new(NS, "web-c", &[("app", "web")])
            .container("app", 1, Some("Error"), None)
            .to_json(),
    );
    kube.fake
        .fail(Method::GET, "/api/v1/namespaces/apps/pods/web-b/log", 500);

    let output = kube
        .collectors
        .run(&request("logs", logs(Some("deployment/web"), None, true)))
        .await;

    assert_eq!(output.status, CollectorStatus::Ok, "{:?}", output.error);
    assert_eq!(
        output.error.as_deref(),
        Some("3 of 7 log fetches failed (see errors.txt)")
    );
    assert_eq!(
        paths(&output),
        [
            "web-a/app.log",
            "web-a/app.previous.log",
            "web-a/sidecar.log",
            "web-c/app.log",
            "errors.txt"
        ]
    );
    let errors = text(&output, "errors.txt");
    assert!(
        errors.contains(
            "web-c/app (previous): HTTP 400 BadRequest: previous terminated container \"app\" in pod \"web-c\" not found"
        ),
        "{errors}"
    );
    assert!(
        errors.contains("web-b/app: HTTP 500 InternalError"),
        "{errors}"
    );
    assert!(errors.contains("web-b/sidecar: HTTP 500"), "{errors}");

    // Nothing readable at all: failed, and errors.txt still says why.
    for pod in ["web-a", "web-c"] {
        kube.fake.fail(
            Method::GET,
            &format!("/api/v1/namespaces/apps/pods/{pod}/log"),
            403,
        );
    }
    let output = kube
        .collectors
        .run(&request("logs", logs(Some("deployment/web"), None, false)))
        .await;
    assert_eq!(output.status, CollectorStatus::Failed);
    assert!(
        output
            .error
            .as_deref()
            .unwrap()
            .starts_with("no log could be fetched: "),
        "{:?}",
        output.error
    );
    assert_eq!(paths(&output), ["errors.txt"]);

    // No such workload: failed, naming it.
    let output = kube
        .collectors
        .run(&request("logs", logs(Some("deployment/gone"), None, false)))
        .await;
    assert_eq!(output.status, CollectorStatus::Failed);
    assert!(
        output
            .error
            .as_deref()
            .unwrap()
            .contains("get deployment/gone in namespace apps: HTTP 404 NotFound"),
        "{:?}",
        output.error
    );
}

#[tokio::test]
async fn logs_of_at_most_twenty_pods() {
    let kube = kube().await;
    kube.fake
        .put(workload("Deployment", NS, "web", &[("app", "web")]));
    for index in 0..25 {
        kube.fake
            .put(PodFixture::new(NS, &format!("web-{index:02}"), &[("app", "web")]).to_json());
    }

    let output = kube
        .collectors
        .run(&request("logs", logs(Some("deployment/web"), None, false)))
        .await;

    assert_eq!(output.status, CollectorStatus::Ok, "{:?}", output.error);
    assert_eq!(output.files.len(), 21);
    assert_eq!(paths(&output)[0], "web-00/app.log");
    assert_eq!(paths(&output)[19], "web-19/app.log");
    assert_eq!(
        text(&output, "errors.txt"),
        "25 pods match; logs of 20 fetched, left out: web-20, web-21, web-22, web-23, web-24\n"
    );
    let log_requests = kube
        .fake
        .journal
        .requests()
        .iter()
        .filter(|request| request.path.ends_with("/log"))
        .count();
    assert_eq!(log_requests, 20);
}

#[tokio::test]
async fn a_huge_log_is_cut_to_max_bytes_keeping_its_end() {
    let kube = kube().await;
    kube.fake
        .put(workload("Deployment", NS, "web", &[("app", "web")]));
    kube.fake
        .put(PodFixture::new(NS, "web-a", &[("app", "web")]).to_json());
    let mut log = String::new();
    let mut line = 0;
    while log.len() < 5 * 1024 * 1024 {
        log.push_str(&format!("line {line:08} of a chatty service\n"));
        line += 1;
    }
    kube.fake.set_log(NS, "web-a", "app", false, &log);
    let mut capped = request("logs", logs(Some("deployment/web"), None, false));
    capped.max_bytes = 64 * 1024;

    let output = kube.collectors.run(&capped).await;

    assert_eq!(
        output.status,
        CollectorStatus::Truncated,
        "{:?}",
        output.error
    );
    assert!(total_bytes(&output) <= 64 * 1024);
    assert_eq!(total_bytes(&output), 64 * 1024);
    let kept = text(&output, "web-a/app.log");
    assert!(kept.ends_with(&format!("line {:08} of a chatty service\n", line - 1)));
    assert_eq!(
        output.error.as_deref(),
        Some(
            format!(
                "output cut to max_bytes 65536: web-a/app.log kept the last 65536 of {} bytes",
                log.len()
            )
            .as_str()
        )
    );
}

// ---------------------------------------------------------------------------------------
// Kubernetes events and objects

#[tokio::test]
async fn events_of_the_deployment_its_replica_sets_and_pods_only() {
    let kube = kube().await;
    let fake = &kube.fake;
    let web_key = fake.put(workload("Deployment", NS, "web", &[("app", "web")]));
    let web = fake.get(&web_key).unwrap();
    // A canary deployment whose pods carry the same label: its replica set is not web's.
    let canary_key = fake.put(workload("Deployment", NS, "web-canary", &[("app", "web")]));
    let canary = fake.get(&canary_key).unwrap();
    let api_key = fake.put(workload("Deployment", NS, "api", &[("app", "api")]));
    let api = fake.get(&api_key).unwrap();
    let rs_key = fake.put(replica_set(NS, "web-5d8c7b9f4", &web, &[("app", "web")]));
    fake.put(replica_set(
        NS,
        "web-canary-6f9",
        &canary,
        &[("app", "web")],
    ));
    fake.put(replica_set(NS, "api-77f", &api, &[("app", "api")]));
    let pod_key = fake.put(PodFixture::new(NS, "web-5d8c7b9f4-aaaaa", &[("app", "web")]).to_json());

    fake.event_for(
        &pod_key,
        "Warning",
        "BackOff",
        "Back-off restarting failed container",
        "2026-03-01T10:04:00Z",
    );
    fake.event_for(
        &web_key,
        "Normal",
        "ScalingReplicaSet",
        "Scaled up replica set web-5d8c7b9f4 to 2",
        "2026-03-01T10:00:00Z",
    );
    fake.event_for(
        &rs_key,
        "Normal",
        "SuccessfulCreate",
        "Created pod: web-5d8c7b9f4-aaaaa",
        "2026-03-01T10:01:00Z",
    );
    // A pod of web's replica set that is gone (replaced by a restart).
    fake.put(event(
        NS,
        "gone.1",
        "Pod",
        "web-5d8c7b9f4-zzzzz",
        "Normal",
        "Killing",
        "Stopping container app",
        "2026-03-01T10:02:00Z",
    ));
    // Not web's: the other deployments, their replica sets and pods, another namespace.
    fake.event_for(
        &api_key,
        "Normal",
        "ScalingReplicaSet",
        "Scaled up replica set api-77f to 1",
        "2026-03-01T10:03:00Z",
    );
    fake.event_for(
        &canary_key,
        "Normal",
        "ScalingReplicaSet",
        "Scaled up",
        "2026-03-01T10:03:00Z",
    );
    fake.put(event(
        NS,
        "c.1",
        "ReplicaSet",
        "web-canary-6f9",
        "Normal",
        "SuccessfulCreate",
        "Created pod: web-canary-6f9-bbbbb",
        "2026-03-01T10:03:00Z",
    ));
    fake.put(event(
        NS,
        "c.2",
        "Pod",
        "web-canary-6f9-bbbbb",
        "Warning",
        "BackOff",
        "Back-off",
        "2026-03-01T10:03:00Z",
    ));
    fake.put(event(
        NS,
        "a.1",
        "Pod",
        "api-77f-ccccc",
        "Warning",
        "Unhealthy",
        "Readiness probe failed",
        "2026-03-01T10:03:00Z",
    ));
    fake.put(event(
        "other",
        "o.1",
        "Deployment",
        "web",
        "Normal",
        "ScalingReplicaSet",
        "elsewhere",
        "2026-03-01T10:03:00Z",
    ));

    let output = kube
        .collectors
        .run(&request(
            "events",
            RequestKind::KubernetesEvents {
                namespace: NS.to_owned(),
                workload: Some("deployment/web".to_owned()),
                selector: None,
            },
        ))
        .await;

    assert_eq!(output.status, CollectorStatus::Ok, "{:?}", output.error);
    assert_eq!(paths(&output), ["events.json", "events.txt"]);
    let events = json_file(&output, "events.json");
    let reasons: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "ScalingReplicaSet",
            "SuccessfulCreate",
            "Killing",
            "BackOff"
        ]
    );
    // As the API gave them.
    assert_eq!(events[0]["involvedObject"]["uid"], web["metadata"]["uid"]);
    assert_eq!(events[0]["source"]["component"], "fake-controller");
    assert_eq!(
        text(&output, "events.txt"),
        "2026-03-01T10:00:00Z Normal ScalingReplicaSet Deployment/web Scaled up replica set web-5d8c7b9f4 to 2\n\
         2026-03-01T10:01:00Z Normal SuccessfulCreate ReplicaSet/web-5d8c7b9f4 Created pod: web-5d8c7b9f4-aaaaa\n\
         2026-03-01T10:02:00Z Normal Killing Pod/web-5d8c7b9f4-zzzzz Stopping container app\n\
         2026-03-01T10:04:00Z Warning BackOff Pod/web-5d8c7b9f4-aaaaa Back-off restarting failed container\n"
    );
    let event_lists: Vec<_> = fake
        .journal
        .requests()
        .into_iter()
        .filter(|request| request.path == "/api/v1/namespaces/apps/events")
        .collect();
    assert_eq!(event_lists.len(), 1);
    assert_eq!(event_lists[0].query_param("limit").as_deref(), Some("500"));
    fake.journal.assert_no_unexpected();
}

#[tokio::test]
async fn events_are_read_page_by_page() {
    let kube = kube().await;
    let fake = &kube.fake;
    fake.put(PodFixture::new(NS, "job-1", &[("app", "batch")]).to_json());
    for index in 0..1100 {
        fake.put(event(
            NS,
            &format!("e.{index:05}"),
            "Pod",
            "noise",
            "Normal",
            "Pulled",
            "x",
            "2026-03-01T09:00:00Z",
        ));
    }
    fake.put(event(
        NS,
        "z.1",
        "Pod",
        "job-1",
        "Warning",
        "Failed",
        "Error: ImagePullBackOff",
        "2026-03-01T10:00:00Z",
    ));

    let output = kube
        .collectors
        .run(&request(
            "events",
            RequestKind::KubernetesEvents {
                namespace: NS.to_owned(),
                workload: None,
                selector: Some("app=batch".to_owned()),
            },
        ))
        .await;

    assert_eq!(output.status, CollectorStatus::Ok, "{:?}", output.error);
    assert_eq!(
        text(&output, "events.txt"),
        "2026-03-01T10:00:00Z Warning Failed Pod/job-1 Error: ImagePullBackOff\n"
    );
    let pages = fake
        .journal
        .requests()
        .iter()
        .filter(|request| request.path == "/api/v1/namespaces/apps/events")
        .count();
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn the_object_without_managed_fields_and_never_a_secret() {
    let kube = kube().await;
    let mut deployment = workload("Deployment", NS, "web", &[("app", "web")]);
    deployment["metadata"]["managedFields"] =
        json!([{"manager": "kubectl", "operation": "Update"}]);
    let key = kube.fake.put(deployment);
    kube.fake
        .put(secret(NS, "web", "2026-01-01T00:00:00Z", &[]));
    let object = |namespace: &str, workload: &str| {
        request(
            "object",
            RequestKind::KubernetesObject {
                namespace: namespace.to_owned(),
                workload: workload.to_owned(),
            },
        )
    };

    let output = kube.collectors.run(&object(NS, "deployment/web")).await;

    assert_eq!(output.status, CollectorStatus::Ok, "{:?}", output.error);
    assert_eq!(paths(&output), ["deployment-web.json"]);
    let mut expected = kube.fake.get(&key).unwrap();
    expected["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    let saved = json_file(&output, "deployment-web.json");
    assert_eq!(saved, expected);
    assert!(saved["metadata"].get("managedFields").is_none());
    assert_eq!(
        kube.fake.calls(),
        ["GET /apis/apps/v1/namespaces/apps/deployments/web"]
    );

    // Not a workload kind, or a namespace not allowed: refused before anything is sent.
    for (namespace, reference, error) in [
        (
            NS,
            "secret/web",
            "is not one of deployment, statefulset, daemonset",
        ),
        (
            "kube-system",
            "deployment/web",
            "namespace \"kube-system\" is not in kubernetes.namespaces",
        ),
    ] {
        let output = kube.collectors.run(&object(namespace, reference)).await;
        assert_eq!(output.status, CollectorStatus::Failed);
        assert!(
            output.error.as_deref().unwrap().contains(error),
            "{:?}",
            output.error
        );
    }
    assert_eq!(kube.fake.journal.count(), 1);
    assert!(kube.fake.secret_data_served().is_empty());
}

#[tokio::test]
async fn the_object_keeps_no_literal_env_value_nor_the_last_applied_annotation() {
    let kube = kube().await;
    let mut deployment = workload("Deployment", NS, "web", &[("app", "web")]);
    let env = json!([
        {"name": "DB_PASSWORD", "value": "hunter2-literal"},
        {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
    ]);
    deployment["spec"]["template"]["spec"]["containers"][0]["env"] = env.clone();
    deployment["spec"]["template"]["spec"]["initContainers"] =
        json!([{"name": "migrate", "image": "registry.example/migrate:1", "env": env}]);
    let applied = deployment.to_string();
    deployment["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
        json!(applied);
    kube.fake.put(deployment);
    let request = request(
        "object",
        RequestKind::KubernetesObject {
            namespace: NS.to_owned(),
            workload: "deployment/web".to_owned(),
        },
    );

    let output = kube.collectors.run(&request).await;

    assert_eq!(output.status, CollectorStatus::Ok, "{:?}", output.error);
    let saved_text = text(&output, "deployment-web.json");
    assert!(!saved_text.contains("hunter2"), "{saved_text}");
    let saved = json_file(&output, "deployment-web.json");
    assert_eq!(
        saved["metadata"]["annotations"],
        json!({"deployment.kubernetes.io/revision": "3"})
    );
    for list in ["containers", "initContainers"] {
        let env = &saved["spec"]["template"]["spec"][list][0]["env"];
        assert_eq!(
            env[0],
            json!({"name": "DB_PASSWORD", "value": "<redacted>"})
        );
        // A reference to a Secret is not the secret: kept, it says where the value lives.
        assert_eq!(env[1]["valueFrom"]["secretKeyRef"]["name"], "db");
    }
}

#[tokio::test]
async fn logs_and_bodies_are_cut_between_characters() {
    let kube = kube().await;
    kube.fake
        .put(workload("Deployment", NS, "web", &[("app", "web")]));
    kube.fake
        .put(PodFixture::new(NS, "web-a", &[("app", "web")]).to_json());
    // 10 bytes a line: a 3-byte, a 4-byte and a 2-byte character.
    let log = "€𝄞é\n".repeat(20_000);
    kube.fake.set_log(NS, "web-a", "app", false, &log);
    let web = FakeWeb::start("/body").await;
    web.reply(200, &[], "€𝄞é\n".repeat(5_000));
    let collectors = collectors(Vec::new());
    // Each cap falls inside a character at least once among four consecutive ones.
    for max_bytes in 65_536..65_540 {
        let mut capped = request("logs", logs(Some("deployment/web"), None, false));
        capped.max_bytes = max_bytes;
        let output = kube.collectors.run(&capped).await;
        assert_eq!(output.status, CollectorStatus::Truncated);
        assert!(total_bytes(&output) <= max_bytes);
        let kept = text(&output, "web-a/app.log");
        assert!(
            kept.len() as u64 + 3 >= max_bytes,
            "{max_bytes}: {}",
            kept.len()
        );
        assert!(log.ends_with(&kept));

        let mut capped = request("body", http(&format!("{}?{max_bytes}", web.url())));
        capped.max_bytes = max_bytes - 40_000;
        let output = collectors.run(&capped).await;
        assert_eq!(output.status, CollectorStatus::Truncated);
        assert!(total_bytes(&output) <= capped.max_bytes);
        let body = String::from_utf8(file(&output, "body").to_vec())
            .unwrap_or_else(|error| panic!("{max_bytes}: {error}"));
        assert!(
            body.len() as u64 + 3 + file(&output, "response.json").len() as u64 >= capped.max_bytes
        );
        assert!(log.starts_with(&body));
    }
}

// ---------------------------------------------------------------------------------------
// HTTP

#[tokio::test]
async fn http_saves_status_headers_and_body_whatever_the_status() {
    let web = FakeWeb::start("/healthz").await;
    web.reply(
        503,
        &[("x-trace", "abc"), ("content-type", "application/json")],
        &b"{\"ok\":false}\n"[..],
    );
    let collectors = collectors(Vec::new());
    let mut kind = http(&web.url());
    if let RequestKind::Http { headers, .. } = &mut kind {
        headers.insert("X-Probe".to_owned(), "nightshift".to_owned());
    }

    let output = collectors.run(&request("health", kind)).await;

    assert_eq!(output.status, CollectorStatus::Ok, "{:?}", output.error);
    assert_eq!(paths(&output), ["response.json", "body"]);
    let response = json_file(&output, "response.json");
    assert_eq!(response["status"], 503);
    assert_eq!(response["headers"]["x-trace"], "abc");
    assert_eq!(response["headers"]["content-type"], "application/json");
    assert_eq!(file(&output, "body"), b"{\"ok\":false}\n");
    assert_eq!(web.journal.requests()[0].header("x-probe"), "nightshift");
    assert_eq!(web.journal.requests()[0].method, Method::GET);

    // A redirect is the answer, not followed.
    web.reply(302, &[("location", "/elsewhere")], "");
    let output = collectors
        .run(&request("moved", http(&format!("{}?again", web.url()))))
        .await;
    assert_eq!(output.status, CollectorStatus::Ok);
    assert_eq!(json_file(&output, "response.json")["status"], 302);
    assert_eq!(
        json_file(&output, "response.json")["headers"]["location"],
        "/elsewhere"
    );
    assert_eq!(web.journal.count(), 2);
    web.journal.assert_no_unexpected();
}

#[tokio::test]
async fn http_body_is_capped_and_transport_failures_fail() {
    let web = FakeWeb::start("/big").await;
    web.reply(200, &[], vec![b'x'; 200_000]);
    let collectors = collectors(Vec::new());
    let mut capped = request("big", http(&web.url()));
    capped.max_bytes = 10_000;

    let output = collectors.run(&capped).await;

    assert_eq!(output.status, CollectorStatus::Truncated);
    assert!(total_bytes(&output) <= 10_000);
    assert_eq!(
        file(&output, "body").len() as u64,
        10_000 - file(&output, "response.json").len() as u64
    );
    assert!(
        output
            .error
            .as_deref()
            .unwrap()
            .contains("body kept the first"),
        "{:?}",
        output.error
    );

    let output = collectors
        .run(&request("dead", http(&fakes::dead_url())))
        .await;
    assert_eq!(output.status, CollectorStatus::Failed);
    assert!(
        output
            .error
            .as_deref()
            .unwrap()
            .contains("connection failed"),
        "{:?}",
        output.error
    );

    web.set_delay(Duration::from_secs(5));
    let mut slow = request("slow", http(&format!("{}?slow", web.url())));
    slow.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let output = collectors.run(&slow).await;
    assert_eq!(output.status, CollectorStatus::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(1));
}

// ---------------------------------------------------------------------------------------
// exec

#[tokio::test]
async fn exec_saves_output_and_exit_code() {
    let collectors = collectors(Vec::new());

    let output = collectors
        .run(&request(
            "uptime",
            exec(&["/bin/sh", "-c", "echo load is fine; echo a warning >&2"]),
        ))
        .await;
    assert_eq!(output.status, CollectorStatus::Ok, "{:?}", output.error);
    assert_eq!(paths(&output), ["stdout.txt", "stderr.txt", "exit.json"]);
    assert_eq!(text(&output, "stdout.txt"), "load is fine\n");
    assert_eq!(text(&output, "stderr.txt"), "a warning\n");
    let exit = json_file(&output, "exit.json");
    assert_eq!(exit["exit_code"], 0);
    assert!(exit["duration_ms"].is_u64());

    // A diagnostic that exits non-zero is evidence, not a failure.
    let output = collectors
        .run(&request(
            "check",
            exec(&["/bin/sh", "-c", "echo sda1 94%; echo bad disk >&2; exit 3"]),
        ))
        .await;
    assert_eq!(output.status, CollectorStatus::Ok, "{:?}", output.error);
    assert_eq!(paths(&output), ["stdout.txt", "stderr.txt", "exit.json"]);
    assert_eq!(text(&output, "stdout.txt"), "sda1 94%\n");
    assert_eq!(text(&output, "stderr.txt"), "bad disk\n");
    let exit = json_file(&output, "exit.json");
    assert_eq!(exit["exit_code"], 3);
    assert_eq!(output.error.as_deref(), Some("exit code 3"));

    let output = collectors
        .run(&request("missing", exec(&["/nonexistent/tool"])))
        .await;
    assert_eq!(output.status, CollectorStatus::Failed);
    assert!(output.files.is_empty());

    let mut slow = request("slow", exec(&["/bin/sleep", "5"]));
    slow.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let output = collectors.run(&slow).await;
    assert_eq!(output.status, CollectorStatus::TimedOut);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn exec_output_is_capped() {
    let collectors = collectors(Vec::new());
    let mut chatty = request(
        "chatty",
        exec(&["/bin/sh", "-c", "head -c 100000 /dev/zero | tr '\\0' 'y'"]),
    );
    chatty.max_bytes = 4096;

    let output = collectors.run(&chatty).await;

    assert_eq!(
        output.status,
        CollectorStatus::Truncated,
        "{:?}",
        output.error
    );
    assert!(total_bytes(&output) <= 4096);
    assert!(text(&output, "stdout.txt").bytes().all(|b| b == b'y'));
    assert_eq!(json_file(&output, "exit.json")["exit_code"], 0);
}

// ---------------------------------------------------------------------------------------
// Concurrency, sharing, independence

#[tokio::test]
async fn never_more_collectors_at_once_than_the_cap() {
    fakes::init();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    // A slow server: each answer takes 150 ms, so requests the cap lets through overlap.
    let server = fakes::Server::serve(
        (in_flight.clone(), most.clone()),
        |(in_flight, most), _request| async move {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            fakes::pause(Duration::from_millis(150)).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            axum::response::IntoResponse::into_response("slow")
        },
    )
    .await;
    let slot = ClientSlot::new(&KubernetesConfig::default());
    let collectors = Arc::new(Collectors::new(
        env(Vec::new(), slot),
        2,
        Duration::from_secs(60),
    ));

    // From separate tasks, as separate incidents would.
    let tasks: Vec<_> = (0..10)
        .map(|index| {
            let collectors = collectors.clone();
            let url = format!("{}/slow?n={index}", server.url());
            tokio::spawn(async move { collectors.run(&request("slow", http(&url))).await })
        })
        .collect();
    for task in tasks {
        let output = task.await.expect("task");
        assert_eq!(output.status, CollectorStatus::Ok, "{:?}", output.error);
        assert_eq!(file(&output, "body"), b"slow");
    }

    assert_eq!(most.load(Ordering::SeqCst), 2);
    assert_eq!(collectors.fetched(), 10);
}

#[tokio::test]
async fn identical_requests_in_a_storm_are_made_once() {
    let prometheus = FakePrometheus::start().await;
    prometheus.set_range_result("up", json!([series(json!({"job": "a"}), &[(1.0, "1")])]));
    prometheus.set_delay(Duration::from_millis(200));
    let collectors = collectors(vec![prometheus.url()]);
    let requests: Vec<CollectorRequest> = (0..50)
        .map(|index| {
            let mut request = request(&format!("incident-{index}"), range("up", 0, 60_000));
            request.rule = format!("rule-{index}");
            request
        })
        .collect();

    let outputs = futures_util::future::join_all(requests.iter().map(|r| collectors.run(r))).await;

    assert_eq!(collectors.fetched(), 1);
    assert_eq!(prometheus.range_params().len(), 1);
    assert_eq!(outputs.iter().filter(|output| output.shared).count(), 49);
    for (index, output) in outputs.iter().enumerate() {
        assert_eq!(output.name, format!("incident-{index}"));
        assert_eq!(output.status, CollectorStatus::Ok);
        assert_eq!(paths(output), ["range.json", "range.csv"]);
        assert_eq!(output.files, outputs[0].files);
    }

    // Finished within share_for: still shared.
    let again = collectors
        .run(&request("later", range("up", 0, 60_000)))
        .await;
    assert!(again.shared);
    assert_eq!(again.name, "later");
    assert_eq!(collectors.fetched(), 1);

    // Another window is another request.
    let other = collectors
        .run(&request("other", range("up", 0, 120_000)))
        .await;
    assert!(!other.shared);
    assert_eq!(other.status, CollectorStatus::Ok);
    assert_eq!(collectors.fetched(), 2);
    assert_eq!(prometheus.range_params().len(), 2);
    assert_eq!(prometheus.range_params()[1]["end"], "120.000");
}

#[tokio::test]
async fn a_finished_result_is_not_reused_after_share_for() {
    let prometheus = FakePrometheus::start().await;
    let slot = ClientSlot::new(&KubernetesConfig::default());
    let collectors = Collectors::new(env(vec![prometheus.url()], slot), 4, Duration::ZERO);

    let first = collectors.run(&request("a", range("up", 0, 60_000))).await;
    let second = collectors.run(&request("b", range("up", 0, 60_000))).await;

    assert!(!first.shared && !second.shared);
    assert_eq!(collectors.fetched(), 2);
    assert_eq!(prometheus.range_params().len(), 2);
}

#[tokio::test]
async fn a_failed_collector_does_not_affect_the_others() {
    let prometheus = FakePrometheus::start().await;
    prometheus.set_range_result("up", json!([series(json!({}), &[(1.0, "1")])]));
    let collectors = collectors(vec![prometheus.url()]);
    let requests = [
        request("first", range("up", 0, 60_000)),
        request("broken", http(&fakes::dead_url())),
        request("k8s", logs(Some("deployment/web"), None, false)),
        request("last", exec(&["/bin/echo", "hello"])),
    ];

    let outputs = collectors.run_all(&requests).await;

    let summary: Vec<(&str, CollectorStatus)> = outputs
        .iter()
        .map(|output| (output.name.as_str(), output.status))
        .collect();
    assert_eq!(
        summary,
        [
            ("first", CollectorStatus::Ok),
            ("broken", CollectorStatus::Failed),
            ("k8s", CollectorStatus::Failed),
            ("last", CollectorStatus::Ok),
        ]
    );
    // No namespace allowed without [kubernetes] namespaces.
    assert_eq!(
        outputs[2].error.as_deref(),
        Some("namespace \"apps\" is not in kubernetes.namespaces")
    );
    assert_eq!(text(&outputs[3], "stdout.txt"), "hello\n");
    assert_eq!(paths(&outputs[0]), ["range.json", "range.csv"]);
}
