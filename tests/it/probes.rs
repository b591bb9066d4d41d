//! Probes against local fakes of what they ask (no network beyond 127.0.0.1): the Statuspage,
//! HTTP, Prometheus and Kubernetes probes, the Prober's timeout, cache and single flight, and
//! what alert labels and answers can make a probe ask (templated URLs, redirects, proxies).

use crate::common;
use crate::fakes;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Method;
use nightshift::clock::ManualClock;
use nightshift::config::{HttpConfig, KubernetesConfig};
use nightshift::kubernetes::ClientSlot;
use nightshift::probes::{
    ProbeKind, ProbeRequest, ProbeResult, ProbeSettings, Prober, sample_fields,
};
use nightshift::rules::{LoadOptions, ProbeDef, load_files};
use serde_json::{Value, json};

use crate::fakes::kube::{FakeKube, PodFixture, is_metadata_only};
use crate::fakes::prometheus::{FakePrometheus, sample};
use crate::fakes::statuspage::FakeStatuspage;
use crate::fakes::web::FakeWeb;

const NO_CACHE: Duration = Duration::ZERO;
const TIMEOUT: Duration = Duration::from_secs(10);

fn prober(settings: ProbeSettings) -> Prober {
    fakes::init();
    Prober::new(settings, ClientSlot::new(&KubernetesConfig::default()))
}

fn plain_prober() -> Prober {
    prober(ProbeSettings::default())
}

fn statuspage(url: &str) -> ProbeRequest {
    ProbeRequest::Statuspage {
        url: url.to_owned(),
    }
}

fn unix(time: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(time)
        .expect("RFC 3339")
        .timestamp()
}

/// A failure: not ok, the kind's default fields, and an error containing every `needle`.
#[track_caller]
fn assert_failure(result: &ProbeResult, kind: ProbeKind, needles: &[&str]) {
    assert!(!result.ok, "expected a failure, got {result:?}");
    assert_eq!(
        result.fields,
        sample_fields(kind),
        "failure fields: {result:?}"
    );
    for needle in needles {
        assert!(
            result.error.contains(needle),
            "error {:?} does not contain {needle:?}",
            result.error
        );
    }
}

// =======================================================================================
// statuspage

#[tokio::test]
async fn statuspage_reports_indicator_and_description() {
    let page = FakeStatuspage::start().await;
    let prober = plain_prober();
    for (indicator, description, expected) in [
        ("none", "All Systems Operational", "none"),
        ("minor", "Partially Degraded Service", "minor"),
        ("major", "Partial System Outage", "major"),
        ("critical", "Major Service Outage", "critical"),
        ("maintenance", "Service Under Maintenance", "maintenance"),
        ("degraded", "Something new", "unknown"),
    ] {
        page.set_indicator(indicator, description);
        let result = prober
            .probe(&statuspage(&page.url()), TIMEOUT, NO_CACHE)
            .await;
        assert!(result.ok, "{indicator}: {result:?}");
        assert_eq!(result.error, "");
        assert!(!result.cached);
        assert_eq!(result.fields["indicator"], json!(expected), "{indicator}");
        assert_eq!(result.fields["description"], json!(description));
        let value = result.to_value();
        assert_eq!(value["ok"], json!(true));
        assert_eq!(value["indicator"], json!(expected));
    }
    let requests = page.journal.requests();
    assert_eq!(requests.len(), 6);
    for request in &requests {
        assert_eq!(request.method, Method::GET);
        assert_eq!(request.path, "/api/v2/status.json");
        assert!(
            request.header("user-agent").starts_with("nightshift/"),
            "user agent {:?}",
            request.header("user-agent")
        );
    }
    page.journal.assert_no_unexpected();
}

#[tokio::test]
async fn statuspage_http_error_is_a_failure() {
    let page = FakeStatuspage::start().await;
    page.set_status(503);
    let result = plain_prober()
        .probe(&statuspage(&page.url()), TIMEOUT, NO_CACHE)
        .await;
    assert_failure(&result, ProbeKind::Statuspage, &[]);
    assert!(
        result
            .error
            .starts_with(&format!("GET {}: HTTP 503", page.url())),
        "{}",
        result.error
    );
    assert_eq!(result.fields["indicator"], json!("unknown"));
    page.journal.assert_no_unexpected();
}

#[tokio::test]
async fn statuspage_unparsable_body_is_a_failure() {
    let page = FakeStatuspage::start().await;
    let prober = plain_prober();
    for body in [
        "<html>Bad gateway</html>",
        r#"{"page": {"id": "x"}}"#,
        r#"{"page": {}, "status": "none"}"#,
    ] {
        page.set_raw_body(Some(body));
        let result = prober
            .probe(&statuspage(&page.url()), TIMEOUT, NO_CACHE)
            .await;
        assert_failure(
            &result,
            ProbeKind::Statuspage,
            &[
                &format!("GET {}: ", page.url()),
                "not a Statuspage status document",
            ],
        );
    }
    // A status without an indicator is an unknown one, not a broken document.
    page.set_raw_body(Some(r#"{"page": {}, "status": {"description": "Hmm"}}"#));
    let result = prober
        .probe(&statuspage(&page.url()), TIMEOUT, NO_CACHE)
        .await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.fields["indicator"], json!("unknown"));
    assert_eq!(result.fields["description"], json!("Hmm"));
}

#[tokio::test]
async fn statuspage_unreachable_is_a_failure() {
    let url = format!("{}/api/v2/status.json", fakes::dead_url());
    let result = plain_prober()
        .probe(&statuspage(&url), TIMEOUT, NO_CACHE)
        .await;
    assert_failure(
        &result,
        ProbeKind::Statuspage,
        &[&format!("GET {url}: connection failed")],
    );
}

// =======================================================================================
// http

fn http_request(
    method: &str,
    url: &str,
    capture_headers: &[&str],
    json_fields: &[&str],
) -> ProbeRequest {
    ProbeRequest::Http {
        method: method.to_owned(),
        url: url.to_owned(),
        headers: vec![
            ("Authorization".to_owned(), "Bearer probe-token".to_owned()),
            ("X-Probe".to_owned(), "nightshift".to_owned()),
        ],
        capture_headers: capture_headers.iter().map(|h| (*h).to_owned()).collect(),
        json_fields: json_fields.iter().map(|f| (*f).to_owned()).collect(),
    }
}

#[tokio::test]
async fn http_captures_status_headers_and_json_fields() {
    let web = FakeWeb::start("/v1/limits").await;
    web.reply(
        429,
        &[
            ("X-RateLimit-Remaining", "0"),
            ("content-type", "application/json"),
            ("Retry-After", "30"),
        ],
        json!({
            "data": {
                "status": "throttled",
                "items": [{"name": "first"}, {"name": "second", "count": 2}],
                "nested": {"flag": true}
            }
        })
        .to_string(),
    );
    let request = http_request(
        "post",
        &web.url(),
        &["X-RATELIMIT-remaining", "retry-after", "X-Missing"],
        &[
            "data.status",
            "data.items.1.name",
            "data.items.1",
            "data.nested",
            "data.items.5.name",
            "data.status.deeper",
            "absent",
        ],
    );
    let result = plain_prober().probe(&request, TIMEOUT, NO_CACHE).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.fields["status"], json!(429));
    assert_eq!(
        result.fields["headers"],
        json!({"x-ratelimit-remaining": "0", "retry-after": "30", "x-missing": ""})
    );
    assert_eq!(
        result.fields["json"],
        json!({
            "data.status": "throttled",
            "data.items.1.name": "second",
            "data.items.1": {"name": "second", "count": 2},
            "data.nested": {"flag": true},
            "data.items.5.name": null,
            "data.status.deeper": null,
            "absent": null
        })
    );
    // What was sent: the method and headers asked for.
    let requests = web.journal.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, Method::POST);
    assert_eq!(requests[0].header("authorization"), "Bearer probe-token");
    assert_eq!(requests[0].header("x-probe"), "nightshift");
    web.journal.assert_no_unexpected();
}

#[tokio::test]
async fn http_non_json_body_gives_null_fields() {
    let web = FakeWeb::start("/healthz").await;
    web.reply(503, &[("content-type", "text/html")], "<h1>down</h1>");
    let request = http_request("GET", &web.url(), &["content-type"], &["status", "a.b"]);
    let result = plain_prober().probe(&request, TIMEOUT, NO_CACHE).await;
    assert!(result.ok, "any status is an answer: {result:?}");
    assert_eq!(result.fields["status"], json!(503));
    assert_eq!(
        result.fields["headers"],
        json!({"content-type": "text/html"})
    );
    assert_eq!(result.fields["json"], json!({"status": null, "a.b": null}));
}

#[tokio::test]
async fn http_body_over_the_limit_is_not_read() {
    let web = FakeWeb::start("/big").await;
    // Valid JSON, but larger than the 1 MiB read limit.
    let big = format!(
        "{{\"pad\": \"{}\", \"ok\": true}}",
        "x".repeat(2 * 1024 * 1024)
    );
    web.reply(200, &[("content-type", "application/json")], big);
    let request = http_request("GET", &web.url(), &[], &["ok"]);
    let result = plain_prober().probe(&request, TIMEOUT, NO_CACHE).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.fields["status"], json!(200));
    assert_eq!(result.fields["json"], json!({"ok": null}));
}

#[tokio::test]
async fn http_transport_errors_are_failures() {
    let prober = plain_prober();
    let url = format!("{}/x", fakes::dead_url());
    let result = prober
        .probe(&http_request("GET", &url, &[], &[]), TIMEOUT, NO_CACHE)
        .await;
    assert_failure(
        &result,
        ProbeKind::Http,
        &[&format!("GET {url}: connection failed")],
    );

    let web = FakeWeb::start("/x").await;
    let result = prober
        .probe(
            &http_request("BAD METHOD", &web.url(), &[], &[]),
            TIMEOUT,
            NO_CACHE,
        )
        .await;
    assert_failure(&result, ProbeKind::Http, &["invalid HTTP method"]);

    let mut request = http_request("GET", &web.url(), &[], &[]);
    if let ProbeRequest::Http { headers, .. } = &mut request {
        headers.push(("Bad Header".to_owned(), "x".to_owned()));
    }
    let result = prober.probe(&request, TIMEOUT, NO_CACHE).await;
    assert_failure(&result, ProbeKind::Http, &["invalid request header name"]);
    assert_eq!(web.journal.count(), 0, "nothing is sent for a bad request");
}

// =======================================================================================
// prometheus

fn prometheus(query: &str, urls: &[String]) -> ProbeRequest {
    ProbeRequest::Prometheus {
        query: query.to_owned(),
        urls: urls.to_vec(),
    }
}

#[tokio::test]
async fn prometheus_falls_back_to_the_next_url() {
    let live = FakePrometheus::start().await;
    let query = r#"sum(rate(http_requests_total{job="api", code=~"5.."}[5m])) > 0.5"#;
    live.set_result(
        query,
        "vector",
        json!([sample(json!({"job": "api"}), "0.75")]),
    );
    let dead = fakes::dead_url();
    let result = plain_prober()
        .probe(&prometheus(query, &[dead, live.url()]), TIMEOUT, NO_CACHE)
        .await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.fields["url"], json!(live.url()));
    assert_eq!(result.fields["value"], json!(0.75));
    assert_eq!(result.fields["empty"], json!(false));
    assert_eq!(
        result.fields["vector"],
        json!([{"labels": {"job": "api"}, "value": 0.75}])
    );
    // The query arrived intact (URL-encoded on the wire).
    let requests = live.journal.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, Method::GET);
    assert_eq!(requests[0].path, "/api/v1/query");
    assert_eq!(requests[0].query_param("query").as_deref(), Some(query));
    live.journal.assert_no_unexpected();
}

#[tokio::test]
async fn prometheus_moves_on_after_5xx_and_api_errors() {
    let overloaded = FakePrometheus::start().await;
    overloaded.set_api_error(503, "timeout", "query timed out in expression evaluation");
    let proxy = FakePrometheus::start().await;
    proxy.set_raw_error(502, "<html><body>Bad Gateway</body></html>");
    let live = FakePrometheus::start().await;
    live.set_result("up", "scalar", json!([1_700_000_000.0, "3"]));
    let urls = [overloaded.url(), proxy.url(), format!("{}/", live.url())];
    let result = plain_prober()
        .probe(&prometheus("up", &urls), TIMEOUT, NO_CACHE)
        .await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.fields["url"], json!(urls[2]));
    assert_eq!(result.fields["value"], json!(3.0));
    assert_eq!(result.fields["empty"], json!(false));
    assert_eq!(result.fields["vector"], json!([]));
    assert_eq!(overloaded.journal.count(), 1);
    assert_eq!(proxy.journal.count(), 1);
    // The trailing slash did not make a `//api` path.
    assert_eq!(live.journal.requests()[0].path, "/api/v1/query");
}

#[tokio::test]
async fn prometheus_all_failing_names_every_url() {
    let dead = fakes::dead_url();
    let broken = FakePrometheus::start().await;
    broken.set_api_error(
        400,
        "bad_data",
        "invalid parameter \"query\": 1:5: parse error: unexpected end of input",
    );
    let result = plain_prober()
        .probe(
            &prometheus("sum(", &[dead.clone(), broken.url()]),
            TIMEOUT,
            NO_CACHE,
        )
        .await;
    assert_failure(
        &result,
        ProbeKind::Prometheus,
        &[
            &format!("{dead}: connection failed"),
            &format!("{}: HTTP 400: bad_data: invalid parameter", broken.url()),
        ],
    );
    assert_eq!(result.fields["url"], json!(""));

    // A 200 with "status": "error" is an error too.
    let odd = FakePrometheus::start().await;
    odd.set_api_error(200, "execution", "many-to-many matching not allowed");
    let result = plain_prober()
        .probe(&prometheus("a / b", &[odd.url()]), TIMEOUT, NO_CACHE)
        .await;
    assert_failure(
        &result,
        ProbeKind::Prometheus,
        &["status \"error\": execution: many-to-many matching not allowed"],
    );
}

#[tokio::test]
async fn prometheus_parses_vectors_scalars_and_specials() {
    let server = FakePrometheus::start().await;
    let urls = [server.url()];
    let prober = plain_prober();
    server.set_result(
        "up",
        "vector",
        json!([
            sample(
                json!({"__name__": "up", "job": "node", "instance": "a:9100"}),
                "1"
            ),
            sample(
                json!({"__name__": "up", "job": "node", "instance": "b:9100"}),
                "0"
            )
        ]),
    );
    server.set_result("absent_metric", "vector", json!([]));
    server.set_result("1/0", "scalar", json!([1_700_000_000.0, "+Inf"]));
    server.set_result("-1/0", "scalar", json!([1_700_000_000.0, "-Inf"]));
    server.set_result("0/0", "scalar", json!([1_700_000_000.0, "NaN"]));
    server.set_result(
        "nan_vector",
        "vector",
        json!([
            sample(json!({"job": "x"}), "NaN"),
            sample(json!({}), "2.5e3")
        ]),
    );
    server.set_result("\"text\"", "string", json!([1_700_000_000.0, "text"]));
    server.set_result("\"42\"", "string", json!([1_700_000_000.0, "42"]));
    server.set_result(
        "up[5m]",
        "matrix",
        json!([{"metric": {"job": "node"}, "values": [[1.0, "1"], [2.0, "1"]]}]),
    );

    let result = prober
        .probe(&prometheus("up", &urls), TIMEOUT, NO_CACHE)
        .await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.fields["value"], json!(1.0));
    assert_eq!(result.fields["empty"], json!(false));
    assert_eq!(
        result.fields["vector"],
        json!([
            {"labels": {"__name__": "up", "job": "node", "instance": "a:9100"}, "value": 1.0},
            {"labels": {"__name__": "up", "job": "node", "instance": "b:9100"}, "value": 0.0}
        ])
    );

    let result = prober
        .probe(&prometheus("absent_metric", &urls), TIMEOUT, NO_CACHE)
        .await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.fields["value"], json!(0.0));
    assert_eq!(result.fields["empty"], json!(true));
    assert_eq!(result.fields["vector"], json!([]));

    let result = prober
        .probe(&prometheus("1/0", &urls), TIMEOUT, NO_CACHE)
        .await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.fields["value"], json!(f64::MAX));
    let result = prober
        .probe(&prometheus("-1/0", &urls), TIMEOUT, NO_CACHE)
        .await;
    assert_eq!(result.fields["value"], json!(f64::MIN));
    let result = prober
        .probe(&prometheus("0/0", &urls), TIMEOUT, NO_CACHE)
        .await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.fields["value"], Value::Null);

    let result = prober
        .probe(&prometheus("nan_vector", &urls), TIMEOUT, NO_CACHE)
        .await;
    assert!(result.ok, "{result:?}");
    assert_eq!(
        result.fields["vector"],
        json!([{"labels": {"job": "x"}, "value": null}, {"labels": {}, "value": 2500.0}])
    );

    let result = prober
        .probe(&prometheus("\"42\"", &urls), TIMEOUT, NO_CACHE)
        .await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.fields["value"], json!(42.0));
    let result = prober
        .probe(&prometheus("\"text\"", &urls), TIMEOUT, NO_CACHE)
        .await;
    assert_failure(&result, ProbeKind::Prometheus, &["a string, not a number"]);
    let result = prober
        .probe(&prometheus("up[5m]", &urls), TIMEOUT, NO_CACHE)
        .await;
    assert_failure(&result, ProbeKind::Prometheus, &["matrix"]);
    server.journal.assert_no_unexpected();
}

#[tokio::test]
async fn prometheus_uses_configured_urls_and_survives_a_hung_first_url() {
    let hung = FakePrometheus::start().await;
    hung.set_delay(Duration::from_secs(30));
    let live = FakePrometheus::start().await;
    live.set_result("up", "vector", json!([sample(json!({}), "1")]));
    let prober = prober(ProbeSettings {
        prometheus_urls: vec![hung.url(), live.url()],
        ..ProbeSettings::default()
    });
    let started = Instant::now();
    // No URLs in the request: the configured ones, in order.
    let result = prober
        .probe(&prometheus("up", &[]), Duration::from_secs(2), NO_CACHE)
        .await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.fields["url"], json!(live.url()));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(hung.journal.count(), 1);

    // Every URL hung: each is named with its timeout, within the caller's timeout.
    live.set_delay(Duration::from_secs(30));
    let result = prober
        .probe(&prometheus("up", &[]), Duration::from_secs(1), NO_CACHE)
        .await;
    assert_failure(
        &result,
        ProbeKind::Prometheus,
        &[
            &format!("{}: timed out", hung.url()),
            &format!("{}: timed out", live.url()),
        ],
    );

    // None configured and none named.
    let result = plain_prober()
        .probe(&prometheus("up", &[]), TIMEOUT, NO_CACHE)
        .await;
    assert_failure(&result, ProbeKind::Prometheus, &["no Prometheus URL"]);
}

// =======================================================================================
// Prober: timeout, cache, single flight

#[tokio::test]
async fn prober_times_out() {
    let page = FakeStatuspage::start().await;
    page.set_delay(Duration::from_secs(5));
    let started = Instant::now();
    let result = plain_prober()
        .probe(
            &statuspage(&page.url()),
            Duration::from_millis(200),
            NO_CACHE,
        )
        .await;
    assert_failure(&result, ProbeKind::Statuspage, &["timed out"]);
    assert!(result.latency_ms >= 200, "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn prober_caches_within_cache_for_and_asks_again_after() {
    let page = FakeStatuspage::start().await;
    // The cache ages on the prober's clock: moved by hand, so nothing here sleeps.
    let clock = Arc::new(ManualClock::new(
        chrono::DateTime::parse_from_rfc3339("2026-11-28T03:00:00Z")
            .unwrap()
            .to_utc(),
    ));
    let prober = plain_prober().with_clock(clock.clone());
    let request = statuspage(&page.url());
    let cache_for = Duration::from_secs(60);

    let first = prober.probe(&request, TIMEOUT, cache_for).await;
    assert!(first.ok && !first.cached, "{first:?}");
    page.set_indicator("major", "Partial System Outage");
    let second = prober.probe(&request, TIMEOUT, cache_for).await;
    assert!(second.ok && second.cached, "{second:?}");
    assert_eq!(
        second.fields["indicator"],
        json!("none"),
        "answered from the cache"
    );
    assert_eq!(page.hits(), 1);

    // A different request is a different entry.
    let other = statuspage(&format!("{}?other", page.url()));
    let third = prober.probe(&other, TIMEOUT, cache_for).await;
    assert!(!third.cached);
    assert_eq!(page.hits(), 2);

    // One millisecond short of cache_for the entry still answers.
    clock.advance(cache_for - Duration::from_millis(1));
    let still = prober.probe(&request, TIMEOUT, cache_for).await;
    assert!(still.ok && still.cached, "{still:?}");
    assert_eq!(still.fields["indicator"], json!("none"));
    assert_eq!(page.hits(), 2);

    clock.advance(Duration::from_millis(1));
    let after = prober.probe(&request, TIMEOUT, cache_for).await;
    assert!(after.ok && !after.cached, "{after:?}");
    assert_eq!(after.fields["indicator"], json!("major"));
    assert_eq!(page.hits(), 3);

    // cache_for zero never answers from the cache.
    let fresh = prober.probe(&request, TIMEOUT, NO_CACHE).await;
    assert!(!fresh.cached);
    assert_eq!(page.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prober_single_flight() {
    let page = FakeStatuspage::start().await;
    page.set_delay(Duration::from_millis(300));
    let prober = Arc::new(plain_prober());
    let request = statuspage(&page.url());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let prober = prober.clone();
        let request = request.clone();
        tasks.spawn(async move {
            prober
                .probe(&request, TIMEOUT, Duration::from_secs(60))
                .await
        });
    }
    let mut results = Vec::new();
    while let Some(result) = tasks.join_next().await {
        results.push(result.expect("task"));
    }
    assert_eq!(results.len(), 20);
    assert!(results.iter().all(|result| result.ok), "{results:?}");
    assert_eq!(
        page.hits(),
        1,
        "20 concurrent identical probes, one request"
    );
    assert_eq!(results.iter().filter(|result| !result.cached).count(), 1);
}

// =======================================================================================
// kubernetes

const NS: &str = "apps";

struct Kube {
    fake: FakeKube,
    prober: Prober,
    _dir: tempfile::TempDir,
}

async fn kube() -> Kube {
    fakes::init();
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    let config = KubernetesConfig {
        kubeconfig: Some(kubeconfig),
        context: None,
        namespaces: vec![NS.to_owned()],
    };
    let prober = Prober::new(
        ProbeSettings {
            kubernetes_namespaces: config.namespaces.clone(),
            ..ProbeSettings::default()
        },
        ClientSlot::new(&config),
    );
    Kube {
        fake,
        prober,
        _dir: dir,
    }
}

fn kubernetes(namespace: &str, workload: Option<&str>, object: Option<&str>) -> ProbeRequest {
    ProbeRequest::Kubernetes {
        namespace: namespace.to_owned(),
        workload: workload.map(str::to_owned),
        object: object.map(str::to_owned),
    }
}

/// The `web` Deployment (app=web), two of its pods and a pod of another app.
fn seed_web(fake: &FakeKube) {
    fake.put(fakes::kube::workload(
        "Deployment",
        NS,
        "web",
        &[("app", "web")],
    ));
    fake.put(
        PodFixture::new(
            NS,
            "web-7d9f-a",
            &[("app", "web"), ("pod-template-hash", "7d9f")],
        )
        .started(Some("2026-03-01T10:00:00Z"))
        .container("app", 2, Some("Error"), None)
        .container("sidecar", 1, None, None)
        .to_json(),
    );
    fake.put(
        PodFixture::new(
            NS,
            "web-7d9f-b",
            &[("app", "web"), ("pod-template-hash", "7d9f")],
        )
        .ready(false)
        .started(Some("2026-03-02T08:30:00Z"))
        .container("app", 5, Some("OOMKilled"), None)
        .to_json(),
    );
    fake.put(
        PodFixture::new(NS, "api-1", &[("app", "api")])
            .container("app", 9, Some("OOMKilled"), None)
            .to_json(),
    );
}

#[tokio::test]
async fn kubernetes_workload_pods() {
    let kube = kube().await;
    seed_web(&kube.fake);
    let result = kube
        .prober
        .probe(
            &kubernetes(NS, Some("deployment/web"), None),
            TIMEOUT,
            NO_CACHE,
        )
        .await;
    assert!(result.ok, "{result:?}");
    let fields = &result.fields;
    assert_eq!(
        fields["pods"],
        json!([
            {"name": "web-7d9f-a", "ready": true, "restarts": 3,
             "last_termination_reason": "Error", "started_at": unix("2026-03-01T10:00:00Z")},
            {"name": "web-7d9f-b", "ready": false, "restarts": 5,
             "last_termination_reason": "OOMKilled", "started_at": unix("2026-03-02T08:30:00Z")}
        ])
    );
    assert_eq!(fields["total"], json!(2));
    assert_eq!(fields["ready"], json!(1));
    assert_eq!(fields["restarts"], json!(8));
    assert_eq!(fields["oom_killed"], json!(true));
    assert_eq!(
        fields["oldest_pod_started_at"],
        json!(unix("2026-03-01T10:00:00Z"))
    );
    // Object fields keep their defaults when no object was asked for.
    assert_eq!(fields["object_exists"], json!(false));
    assert_eq!(fields["object_resource_version"], json!(""));

    let requests = kube.fake.journal.requests();
    let described: Vec<String> = requests.iter().map(|r| r.describe()).collect();
    assert_eq!(requests.len(), 2, "{described:?}");
    assert_eq!(requests[0].method, Method::GET);
    assert_eq!(
        requests[0].path,
        "/apis/apps/v1/namespaces/apps/deployments/web"
    );
    assert_eq!(requests[1].method, Method::GET);
    assert_eq!(requests[1].path, "/api/v1/namespaces/apps/pods");
    assert_eq!(
        requests[1].query_param("labelSelector").as_deref(),
        Some("app=web")
    );
    for request in &requests {
        assert_eq!(
            request.header("authorization"),
            format!("Bearer {}", kube.fake.token)
        );
    }
    kube.fake.journal.assert_no_unexpected();
}

#[tokio::test]
async fn kubernetes_statefulset_and_daemonset() {
    let kube = kube().await;
    kube.fake.put(fakes::kube::workload(
        "StatefulSet",
        NS,
        "db",
        &[("app", "db"), ("role", "primary")],
    ));
    kube.fake.put(
        PodFixture::new(NS, "db-0", &[("app", "db"), ("role", "primary")])
            .container("postgres", 1, None, Some("OOMKilled"))
            .ready(false)
            .to_json(),
    );
    kube.fake.put(fakes::kube::workload(
        "DaemonSet",
        NS,
        "agent",
        &[("app", "agent")],
    ));
    kube.fake.put(
        PodFixture::new(NS, "agent-x", &[("app", "agent")])
            .started(None)
            .to_json(),
    );

    let result = kube
        .prober
        .probe(
            &kubernetes(NS, Some("statefulset/db"), None),
            TIMEOUT,
            NO_CACHE,
        )
        .await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.fields["total"], json!(1));
    assert_eq!(result.fields["ready"], json!(0));
    assert_eq!(
        result.fields["oom_killed"],
        json!(true),
        "terminated now counts"
    );
    assert_eq!(
        result.fields["pods"][0]["last_termination_reason"],
        json!("OOMKilled")
    );

    let result = kube
        .prober
        .probe(
            &kubernetes(NS, Some("daemonset/agent"), None),
            TIMEOUT,
            NO_CACHE,
        )
        .await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.fields["total"], json!(1));
    assert_eq!(result.fields["pods"][0]["started_at"], json!(0));
    assert_eq!(
        result.fields["pods"][0]["last_termination_reason"],
        json!("")
    );
    assert_eq!(result.fields["oom_killed"], json!(false));
    assert_eq!(
        result.fields["oldest_pod_started_at"],
        json!(0),
        "a pod that has not started does not count"
    );

    // (kube writes `pods?&labelSelector=…`, hence the decoded comparison.)
    let sent: Vec<(String, String, Option<String>)> = kube
        .fake
        .journal
        .requests()
        .iter()
        .map(|r| {
            (
                r.method.to_string(),
                r.path.clone(),
                r.query_param("labelSelector"),
            )
        })
        .collect();
    let expect = |path: &str, selector: Option<&str>| {
        (
            "GET".to_owned(),
            path.to_owned(),
            selector.map(str::to_owned),
        )
    };
    assert_eq!(
        sent,
        [
            expect("/apis/apps/v1/namespaces/apps/statefulsets/db", None),
            expect("/api/v1/namespaces/apps/pods", Some("app=db,role=primary")),
            expect("/apis/apps/v1/namespaces/apps/daemonsets/agent", None),
            expect("/api/v1/namespaces/apps/pods", Some("app=agent")),
        ]
    );
    kube.fake.journal.assert_no_unexpected();
}

#[tokio::test]
async fn kubernetes_workload_without_pods() {
    let kube = kube().await;
    kube.fake.put(fakes::kube::workload(
        "Deployment",
        NS,
        "idle",
        &[("app", "idle")],
    ));
    let result = kube
        .prober
        .probe(
            &kubernetes(NS, Some("deployment/idle"), None),
            TIMEOUT,
            NO_CACHE,
        )
        .await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.fields["pods"], json!([]));
    assert_eq!(result.fields["total"], json!(0));
    assert_eq!(result.fields["oldest_pod_started_at"], json!(0));
}

#[tokio::test]
async fn kubernetes_secret_metadata_only() {
    let kube = kube().await;
    kube.fake.put(fakes::kube::secret(
        NS,
        "tls",
        "2026-01-10T00:00:00Z",
        &[
            "2026-01-10T00:00:00Z",
            "2026-02-20T13:45:10Z",
            "2026-02-01T00:00:00Z",
        ],
    ));
    let result = kube
        .prober
        .probe(&kubernetes(NS, None, Some("secret/tls")), TIMEOUT, NO_CACHE)
        .await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.fields["object_exists"], json!(true));
    assert_eq!(
        result.fields["object_last_change"],
        json!(unix("2026-02-20T13:45:10Z"))
    );
    let version = result.fields["object_resource_version"]
        .as_str()
        .expect("string");
    assert!(!version.is_empty());
    assert_eq!(result.fields["total"], json!(0));
    assert!(
        !result.to_value().to_string().contains("c3VwZXI"),
        "no secret data in the result"
    );

    let requests = kube.fake.journal.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/api/v1/namespaces/apps/secrets/tls");
    assert!(
        is_metadata_only(&requests[0]),
        "Accept: {}",
        requests[0].header("accept")
    );
    assert_eq!(
        requests[0].header("accept"),
        "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
    );
    assert!(kube.fake.secret_data_served().is_empty());
    kube.fake.journal.assert_no_unexpected();
}

#[tokio::test]
async fn kubernetes_object_last_change_falls_back_to_creation() {
    let kube = kube().await;
    kube.fake.put(fakes::kube::configmap(
        NS,
        "flags",
        "2026-04-01T12:00:00Z",
        &[],
    ));
    let result = kube
        .prober
        .probe(
            &kubernetes(NS, None, Some("configmap/flags")),
            TIMEOUT,
            NO_CACHE,
        )
        .await;
    assert!(result.ok, "{result:?}");
    assert_eq!(
        result.fields["object_last_change"],
        json!(unix("2026-04-01T12:00:00Z"))
    );
    assert!(is_metadata_only(&kube.fake.journal.requests()[0]));
}

#[tokio::test]
async fn kubernetes_missing_object_is_an_answer() {
    let kube = kube().await;
    let result = kube
        .prober
        .probe(
            &kubernetes(NS, None, Some("secret/absent")),
            TIMEOUT,
            NO_CACHE,
        )
        .await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.error, "");
    assert_eq!(result.fields["object_exists"], json!(false));
    assert_eq!(result.fields["object_last_change"], json!(0));
    assert_eq!(result.fields["object_resource_version"], json!(""));
    kube.fake.journal.assert_no_unexpected();
}

#[tokio::test]
async fn kubernetes_workload_and_object_together() {
    let kube = kube().await;
    seed_web(&kube.fake);
    kube.fake.put(fakes::kube::secret(
        NS,
        "tls",
        "2026-01-10T00:00:00Z",
        &["2026-01-11T00:00:00Z"],
    ));
    let result = kube
        .prober
        .probe(
            &kubernetes(NS, Some("deployment/web"), Some("secret/tls")),
            TIMEOUT,
            NO_CACHE,
        )
        .await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.fields["total"], json!(2));
    assert_eq!(result.fields["object_exists"], json!(true));
    assert_eq!(
        result.fields["object_last_change"],
        json!(unix("2026-01-11T00:00:00Z"))
    );
    assert_eq!(kube.fake.journal.count(), 3);
    assert!(kube.fake.secret_data_served().is_empty());

    // A workload as the object: metadata of the Deployment itself.
    let result = kube
        .prober
        .probe(
            &kubernetes(NS, None, Some("deployment/web")),
            TIMEOUT,
            NO_CACHE,
        )
        .await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.fields["object_exists"], json!(true));
    let last = kube.fake.journal.requests().pop().unwrap();
    assert_eq!(last.path, "/apis/apps/v1/namespaces/apps/deployments/web");
    assert!(is_metadata_only(&last));
    kube.fake.journal.assert_no_unexpected();
}

#[tokio::test]
async fn kubernetes_api_errors_are_failures() {
    let kube = kube().await;
    seed_web(&kube.fake);
    let deployment = "/apis/apps/v1/namespaces/apps/deployments/web";
    let pods = "/api/v1/namespaces/apps/pods";
    let secret = "/api/v1/namespaces/apps/secrets/tls";
    let probe = async |workload: Option<&str>, object: Option<&str>| {
        kube.prober
            .probe(&kubernetes(NS, workload, object), TIMEOUT, NO_CACHE)
            .await
    };

    kube.fake.fail(Method::GET, deployment, 403);
    let result = probe(Some("deployment/web"), None).await;
    assert_failure(
        &result,
        ProbeKind::Kubernetes,
        &[
            "get deployment/web in namespace apps",
            "HTTP 403 Forbidden",
            "cannot get resource \"deployments\"",
        ],
    );
    kube.fake.clear_faults();

    kube.fake.fail(Method::GET, pods, 500);
    let result = probe(Some("deployment/web"), None).await;
    assert_failure(
        &result,
        ProbeKind::Kubernetes,
        &["list pods in namespace apps", "HTTP 500 InternalError"],
    );
    kube.fake.clear_faults();

    kube.fake.fail(Method::GET, secret, 403);
    let result = probe(None, Some("secret/tls")).await;
    assert_failure(
        &result,
        ProbeKind::Kubernetes,
        &[
            "get metadata of secret/tls in namespace apps",
            "HTTP 403 Forbidden",
        ],
    );
    // With both asked, one failing part fails the probe.
    let result = probe(Some("deployment/web"), Some("secret/tls")).await;
    assert_failure(&result, ProbeKind::Kubernetes, &["HTTP 403 Forbidden"]);
    kube.fake.clear_faults();

    // A workload that does not exist is a failure (unlike an object).
    let result = probe(Some("deployment/nope"), None).await;
    assert_failure(
        &result,
        ProbeKind::Kubernetes,
        &["deployment/nope in namespace apps", "not found", "404"],
    );

    // What was asked, checked before anything is sent.
    let before = kube.fake.journal.count();
    let result = probe(Some("cronjob/x"), None).await;
    assert_failure(&result, ProbeKind::Kubernetes, &["not one of deployment"]);
    let result = probe(None, Some("node/x")).await;
    assert_failure(&result, ProbeKind::Kubernetes, &["unsupported kind"]);
    let result = probe(Some("web"), None).await;
    assert_failure(&result, ProbeKind::Kubernetes, &["expected KIND/NAME"]);
    assert_eq!(kube.fake.journal.count(), before);
    kube.fake.journal.assert_no_unexpected();
}

#[tokio::test]
async fn kubernetes_slow_api_times_out() {
    let kube = kube().await;
    seed_web(&kube.fake);
    kube.fake.delay(
        Method::GET,
        "/api/v1/namespaces/apps/pods",
        Duration::from_secs(10),
    );
    let started = Instant::now();
    let result = kube
        .prober
        .probe(
            &kubernetes(NS, Some("deployment/web"), None),
            Duration::from_millis(500),
            NO_CACHE,
        )
        .await;
    assert_failure(&result, ProbeKind::Kubernetes, &["timed out"]);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn kubernetes_namespace_outside_the_allowlist_sends_nothing() {
    let kube = kube().await;
    seed_web(&kube.fake);
    let result = kube
        .prober
        .probe(
            &kubernetes("kube-system", Some("deployment/web"), Some("secret/tls")),
            TIMEOUT,
            NO_CACHE,
        )
        .await;
    assert_failure(
        &result,
        ProbeKind::Kubernetes,
        &["\"kube-system\"", "not in"],
    );
    assert_eq!(kube.fake.journal.count(), 0);
}

#[tokio::test]
async fn kubernetes_client_errors_and_retry() {
    fakes::init();
    let fake = FakeKube::start().await;
    seed_web(&fake);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("late-kubeconfig");
    let config = KubernetesConfig {
        kubeconfig: Some(path.clone()),
        context: None,
        namespaces: vec![NS.to_owned()],
    };
    let prober = Prober::new(
        ProbeSettings {
            kubernetes_namespaces: vec![NS.to_owned()],
            ..ProbeSettings::default()
        },
        ClientSlot::new(&config),
    );
    let request = kubernetes(NS, Some("deployment/web"), None);

    // No kubeconfig yet: a failure naming the file.
    let result = prober.probe(&request, TIMEOUT, NO_CACHE).await;
    assert_failure(
        &result,
        ProbeKind::Kubernetes,
        &["failed to read kubeconfig", "late-kubeconfig"],
    );
    // The file appears: the next probe builds the client.
    std::fs::write(
        &path,
        fakes::kube::kubeconfig_yaml(&[("fake", &fake.url())], "fake", &fake.token),
    )
    .unwrap();
    let result = prober.probe(&request, TIMEOUT, NO_CACHE).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.fields["total"], json!(2));
}

#[tokio::test]
async fn kubernetes_context_and_unreachable_server() {
    fakes::init();
    let fake = FakeKube::start().await;
    seed_web(&fake);
    let dead = fakes::dead_url();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    // The current context points at nothing; the "staging" context at the fake.
    std::fs::write(
        &path,
        fakes::kube::kubeconfig_yaml(
            &[("prod", &dead), ("staging", &fake.url())],
            "prod",
            &fake.token,
        ),
    )
    .unwrap();
    let settings = ProbeSettings {
        kubernetes_namespaces: vec![NS.to_owned()],
        ..ProbeSettings::default()
    };
    let request = kubernetes(NS, Some("deployment/web"), None);

    let current = Prober::new(
        settings.clone(),
        ClientSlot::new(&KubernetesConfig {
            kubeconfig: Some(path.clone()),
            context: None,
            namespaces: vec![NS.to_owned()],
        }),
    );
    let result = current.probe(&request, TIMEOUT, NO_CACHE).await;
    assert_failure(
        &result,
        ProbeKind::Kubernetes,
        &["get deployment/web in namespace apps"],
    );
    assert_eq!(fake.journal.count(), 0);

    let staging = Prober::new(
        settings.clone(),
        ClientSlot::new(&KubernetesConfig {
            kubeconfig: Some(path.clone()),
            context: Some("staging".to_owned()),
            namespaces: vec![NS.to_owned()],
        }),
    );
    let result = staging.probe(&request, TIMEOUT, NO_CACHE).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(fake.journal.count(), 2);

    let missing = Prober::new(
        settings,
        ClientSlot::new(&KubernetesConfig {
            kubeconfig: Some(path),
            context: Some("nope".to_owned()),
            namespaces: vec![NS.to_owned()],
        }),
    );
    let result = missing.probe(&request, TIMEOUT, NO_CACHE).await;
    assert_failure(&result, ProbeKind::Kubernetes, &["context \"nope\""]);
}

#[tokio::test]
async fn kubernetes_bad_token_is_a_failure() {
    fakes::init();
    let fake = FakeKube::start().await;
    seed_web(&fake);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(
        &path,
        fakes::kube::kubeconfig_yaml(&[("fake", &fake.url())], "fake", "wrong-token"),
    )
    .unwrap();
    let prober = Prober::new(
        ProbeSettings {
            kubernetes_namespaces: vec![NS.to_owned()],
            ..ProbeSettings::default()
        },
        ClientSlot::new(&KubernetesConfig {
            kubeconfig: Some(path),
            context: None,
            namespaces: vec![NS.to_owned()],
        }),
    );
    let result = prober
        .probe(
            &kubernetes(NS, Some("deployment/web"), None),
            TIMEOUT,
            NO_CACHE,
        )
        .await;
    assert_failure(&result, ProbeKind::Kubernetes, &["HTTP 401 Unauthorized"]);
}

// =======================================================================================
// What alert labels and answers can make a probe ask (SSRF): URLs rendered as `http`
// actions' are, no redirects, no proxy from the environment, valid Kubernetes names.

/// The probe `name` of a rule file holding `text`, loaded as the daemon loads rules.
fn probe_from_rules(text: &str, name: &str) -> ProbeDef {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("t.toml"), text).expect("write rules");
    // One file of probes alone: loaded as a file (a directory must hold a rule).
    let set = load_files(&[dir.path().join("t.toml")], &LoadOptions::default())
        .unwrap_or_else(|errors| panic!("rules refused: {errors:?}"));
    set.files[0].probes[name].clone()
}

/// The load errors of a rule file holding `text`, each as `t.toml:LINE: …`.
fn rule_errors(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.toml");
    std::fs::write(&path, text).expect("write rules");
    let Err(errors) = load_files(std::slice::from_ref(&path), &LoadOptions::default()) else {
        panic!("the rules loaded");
    };
    let shown = path.display().to_string();
    errors
        .iter()
        .map(|error| error.to_string().replace(&shown, "t.toml"))
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Value {
    let labels: serde_json::Map<String, Value> = pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), json!(value)))
        .collect();
    json!({ "labels": labels })
}

/// Render `probe` for an alert with `service = value` and run it, as the decision stage does.
async fn render_and_probe(prober: &Prober, probe: &ProbeDef, value: &str) -> ProbeResult {
    match probe.render(&labels(&[("service", value)])) {
        Ok(request) => prober.probe(&request, TIMEOUT, NO_CACHE).await,
        Err(error) => ProbeResult::failure(probe.request.kind(), error),
    }
}

#[tokio::test]
async fn templated_url_values_stay_in_their_path_segment_on_the_rule_host() {
    let prober = plain_prober();
    for (value, segment) in [
        ("@evil:1/", "%40evil%3A1%2F"),
        ("../", "..%2F"),
        ("../../admin", "..%2F..%2Fadmin"),
        ("?x=", "%3Fx%3D"),
        ("#", "%23"),
        (
            "a@127.0.0.1:1/#?x=../",
            "a%40127.0.0.1%3A1%2F%23%3Fx%3D..%2F",
        ),
    ] {
        let path = format!("/api/{segment}/status");
        let web = FakeWeb::start(&path).await;
        let base = web.url().replace(&path, "");
        let probe = probe_from_rules(
            &format!(
                "[probe.web]\nkind = \"http\"\nurl = \"{base}/api/{{{{ labels.service }}}}/status?s={{{{ labels.service }}}}\"\n"
            ),
            "web",
        );
        let result = render_and_probe(&prober, &probe, value).await;
        assert!(result.ok, "{value}: {result:?}");
        let requests = web.journal.requests();
        assert_eq!(requests.len(), 1, "{value}");
        assert_eq!(requests[0].query, format!("s={segment}"), "{value}");
        web.journal.assert_no_unexpected();
    }
    // `..` alone cannot be encoded away (the URL parser reads `%2E%2E` as `..`): refused.
    let web = FakeWeb::start("/api/status").await;
    let base = web.url().replace("/api/status", "");
    let probe = probe_from_rules(
        &format!(
            "[probe.page]\nkind = \"statuspage\"\nurl = \"{base}/api/{{{{ labels.service }}}}/status\"\n"
        ),
        "page",
    );
    let result = render_and_probe(&prober, &probe, "..").await;
    assert_failure(&result, ProbeKind::Statuspage, &["resolved away"]);
    assert_eq!(web.journal.count(), 0);
}

#[test]
fn a_probe_url_that_templates_the_scheme_or_host_is_refused_at_load() {
    let errors = rule_errors(
        r#"[probe.host]
kind = "http"
url = "http://{{ labels.host }}/x"

[probe.port]
kind = "http"
url = "http://127.0.0.1:{{ labels.port }}/x"

[probe.userinfo]
kind = "statuspage"
url = "http://{{ labels.user }}@127.0.0.1/api/v2/status.json"

[probe.whole]
kind = "statuspage"
url = "{{ labels.url }}"

[probe.scheme]
kind = "http"
url = "{{ labels.scheme }}://127.0.0.1/x"

[probe.ok]
kind = "http"
url = "http://127.0.0.1:8080/x/{{ labels.host }}?h={{ labels.host }}"
"#,
    );
    let expected = [
        "t.toml:1: probe host: url \"http://{{ labels.host }}/x\": the host must be written out",
        "t.toml:5: probe port: url \"http://127.0.0.1:{{ labels.port }}/x\": the host must be written out",
        "t.toml:9: probe userinfo: url \"http://{{ labels.user }}@127.0.0.1/api/v2/status.json\": the host must be written out",
        "t.toml:13: probe whole: url \"{{ labels.url }}\" must start with http:// or https://",
        "t.toml:17: probe scheme: url scheme \"{{ labels.scheme }}\" must be http or https",
    ];
    for want in expected {
        assert!(
            errors.iter().any(|error| error.starts_with(want)),
            "missing {want:?} in\n{}",
            errors.join("\n")
        );
    }
    assert_eq!(errors.len(), expected.len(), "{}", errors.join("\n"));
}

#[tokio::test]
async fn a_header_value_with_a_control_character_is_a_failed_probe() {
    let web = FakeWeb::start("/x").await;
    let probe = probe_from_rules(
        &format!(
            "[probe.web]\nkind = \"http\"\nurl = \"{}\"\nheaders = {{ X-Service = \"{{{{ labels.service }}}}\" }}\n",
            web.url()
        ),
        "web",
    );
    let prober = plain_prober();
    // U+0085 (a C1 control) is the one a header value accepts as bytes; CR and LF are
    // refused whatever builds the request.
    for value in ["a\u{85}b", "a\r\nX-Injected: 1", "a\nb", "a\u{7f}"] {
        let result = render_and_probe(&prober, &probe, value).await;
        assert_failure(
            &result,
            ProbeKind::Http,
            &["X-Service", "control character"],
        );
    }
    assert_eq!(web.journal.count(), 0, "nothing is sent");
    let result = render_and_probe(&prober, &probe, "api-1 (eu)").await;
    assert!(result.ok, "{result:?}");
    assert_eq!(web.journal.requests()[0].header("x-service"), "api-1 (eu)");
}

#[tokio::test]
async fn redirects_are_failures_and_never_followed() {
    let elsewhere = FakeWeb::start("/landing").await;
    let prober = plain_prober();
    for (status, kind, path) in [
        (302, ProbeKind::Http, "/moved"),
        (308, ProbeKind::Http, "/moved"),
        (301, ProbeKind::Statuspage, "/api/v2/status.json"),
        (307, ProbeKind::Prometheus, "/api/v1/query"),
    ] {
        let web = FakeWeb::start(path).await;
        web.reply(status, &[("location", &elsewhere.url())], "");
        let request = match kind {
            ProbeKind::Http => http_request("GET", &web.url(), &[], &[]),
            ProbeKind::Statuspage => statuspage(&web.url()),
            _ => prometheus("up", &[web.url().replace(path, "")]),
        };
        let result = prober.probe(&request, TIMEOUT, NO_CACHE).await;
        assert_failure(
            &result,
            kind,
            &[
                &format!("HTTP {status} redirects to {:?}", elsewhere.url()),
                "redirects are not followed",
            ],
        );
        assert_eq!(web.journal.count(), 1);
    }
    assert_eq!(elsewhere.journal.count(), 0, "a redirect was followed");
}

#[tokio::test]
async fn not_modified_is_an_answer_not_a_redirect() {
    let web = FakeWeb::start("/x").await;
    web.reply(304, &[], "");
    let result = plain_prober()
        .probe(
            &http_request("GET", &web.url(), &[], &[]),
            TIMEOUT,
            NO_CACHE,
        )
        .await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.fields["status"], json!(304));
}

#[tokio::test]
async fn probes_go_through_the_configured_proxy() {
    fakes::init();
    // The proxy answers for the origin, where nothing listens.
    let proxy = FakeWeb::start("/x").await;
    let proxy_url = proxy.url().replace("/x", "");
    let prober = Prober::with_http(
        ProbeSettings::default(),
        ClientSlot::new(&KubernetesConfig::default()),
        &HttpConfig {
            proxy: Some(proxy_url),
        },
    );
    let origin = format!("{}/x", fakes::dead_url());
    let result = prober
        .probe(&http_request("GET", &origin, &[], &[]), TIMEOUT, NO_CACHE)
        .await;
    assert!(result.ok, "{result:?}");
    assert_eq!(proxy.journal.count(), 1);
}

/// The real binary, with every proxy variable pointing at a recorder: `explain` runs the
/// probe, which must go straight to its host.
#[test]
fn proxy_environment_variables_are_ignored() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let web = runtime.block_on(FakeWeb::start("/healthz"));
    let proxy = runtime.block_on(FakeWeb::start("/"));
    let proxy_url = proxy.url();
    let mut env: Vec<(&str, &str)> = vec![("NO_PROXY", ""), ("no_proxy", "")];
    for name in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        env.push((name, &proxy_url));
    }
    let daemon = common::Daemon::prepare("", &env);
    std::fs::create_dir_all(daemon.path("rules")).expect("rules dir");
    daemon.write_file(
        "rules/proxy.toml",
        &format!(
            r#"[[rule]]
name = "proxy-check"
matchers = ['alertname="ProxyCheck"']
severity = "P3"
probes = ["web"]

[[rule.branch]]
name = "up"
when = 'probe.web.status == 200'

[[rule.branch]]
name = "other"
otherwise = true

[probe.web]
kind = "http"
url = "{}"
timeout = "5s"
cache = "0s"
"#,
            web.url()
        ),
    );
    let payload = daemon.write_file(
        "payload.json",
        &common::webhook(
            "g",
            &[("ProxyCheck", "a", "firing", "2026-03-14T02:47:31Z")],
            0,
        ),
    );
    let output = daemon.cli(&[
        "explain",
        "--payload",
        payload.to_str().expect("UTF-8 path"),
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert_eq!(proxy.journal.count(), 0, "a probe went through the proxy");
    assert_eq!(web.journal.count(), 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("\"up\""), "{stdout}");
}

#[tokio::test]
async fn kubernetes_names_must_be_valid_object_names() {
    let kube = kube().await;
    seed_web(&kube.fake);
    for (workload, object) in [
        (Some("deployment/UPPER"), None),
        (Some("deployment/a/../b"), None),
        (Some("deployment/.."), None),
        (None, Some("secret/..")),
        (None, Some("secret/x?watch=true")),
        (None, Some("configmap/a%2F..%2Fb")),
        (Some("deployment/web"), Some("secret/Tls")),
    ] {
        let result = kube
            .prober
            .probe(&kubernetes(NS, workload, object), TIMEOUT, NO_CACHE)
            .await;
        assert_failure(&result, ProbeKind::Kubernetes, &["kubernetes "]);
        assert!(
            result.error.contains("not a valid object name")
                || result.error.contains("expected KIND/NAME"),
            "{workload:?} {object:?}: {}",
            result.error
        );
    }
    assert_eq!(kube.fake.journal.count(), 0, "nothing is asked");
    // Written out in a rule file, such a name is a load error.
    let errors = rule_errors(
        "[probe.kube]\nkind = \"kubernetes\"\nnamespace = \"apps\"\nobject = \"secret/UPPER\"\n",
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("t.toml:1: probe kube: kubernetes object \"secret/UPPER\""),
        "{errors:?}"
    );
}
