//! End to end with a real Prometheus (Debian package `prometheus`, installed by `.ci/run`):
//! a rule's prometheus probe asks a dead Prometheus first and the real one second, and the
//! decision follows the real answer.

use crate::fakes;

use crate::common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus() -> Prometheus {
    let binary =
        std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "/usr/bin/prometheus".to_owned());
    assert!(
        std::path::Path::new(&binary).exists(),
        "{binary} is missing: .ci/run installs the Debian package prometheus"
    );
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let child = Command::new(&binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    let url = format!("http://127.0.0.1:{port}");
    let prometheus = Prometheus {
        child,
        url,
        _dir: dir,
    };
    // Ready once it has scraped itself: `up` has a sample.
    let ready = wait_for(Duration::from_secs(60), || {
        let response = client().get(&format!("{}/api/v1/query?query=up", prometheus.url), &[]);
        (response.status == 200 && response.body.contains("\"value\"")).then_some(())
    });
    assert!(ready.is_some(), "prometheus did not become ready");
    prometheus
}

const RULES: &str = r#"
[runbook]
name = "selfwatch"

[[rule]]
name = "prometheus-down"
matchers = ['alertname="PrometheusDown"']
severity = "P2"
probes = ["up"]

[[rule.branch]]
name = "it-is-up"
when = "probe.up.value == 1.0"
note = "Prometheus at {{ probe.up.url }} answers up=1"

[[rule.branch]]
name = "it-is-down"
otherwise = true

[probe.up]
kind = "prometheus"
query = 'up{job="prometheus"}'
timeout = "5s"
cache = "0s"
"#;

#[test]
fn the_probe_skips_a_dead_prometheus_and_decides_on_the_real_one() {
    let prometheus = start_prometheus();
    let dead = fakes::dead_url();
    let mut daemon = Daemon::prepare(
        &format!(
            "[rules]\ndir = \"{{dir}}/rules\"\n[prometheus]\nurls = [\"{dead}\", \"{}\"]\n",
            prometheus.url
        ),
        &[],
    );
    std::fs::create_dir_all(daemon.path("rules")).unwrap();
    daemon.write_file("rules/selfwatch.toml", RULES);
    daemon.spawn();
    let body = webhook(
        "g",
        &[("PrometheusDown", "p", "firing", "2026-11-28T03:00:00Z")],
        0,
    );
    let response = client().post(
        &format!("{}/webhook", daemon.base),
        &[JSON],
        body.as_bytes(),
    );
    assert_eq!(response.status, 200);
    let decision = wait_for(Duration::from_secs(20), || {
        let list = client()
            .get(&format!("{}/api/v1/incidents", daemon.base), &[])
            .json();
        let id = list["incidents"].as_array()?.first()?["id"]
            .as_str()?
            .to_owned();
        let detail = client()
            .get(&format!("{}/api/v1/incidents/{id}", daemon.base), &[])
            .json();
        detail["decisions"].as_array()?.first().cloned()
    })
    .unwrap_or_else(|| panic!("no decision:\n{}", daemon.log()));
    let probe = &decision["trace"]["probes"]["selfwatch/up"];
    assert_eq!(probe["ok"], true, "{probe}");
    assert_eq!(
        probe["fields"]["url"],
        prometheus.url.as_str(),
        "the live one answered"
    );
    assert_eq!(probe["fields"]["value"], 1.0);
    assert_eq!(decision["branch"], "it-is-up");
    assert_eq!(
        decision["trace"]["note"],
        format!("Prometheus at {} answers up=1", prometheus.url)
    );
}

const COLLECTING_RULES: &str = r#"
[[rule]]
name = "prometheus-down"
matchers = ['alertname="PrometheusDown"']
severity = "P2"
collect = ["up-graph", "up-now"]

[collector.up-graph]
kind = "prometheus_range"
query = 'up{job="prometheus"}'
look_back = "10m"
step = "1s"

[collector.up-now]
kind = "prometheus_query"
query = 'up{job="prometheus"}'
at = "now"
"#;

#[test]
fn a_bundle_holds_a_real_series_from_a_real_prometheus() {
    let prometheus = start_prometheus();
    // It has scraped itself a few times (every second): three samples of up.
    let sampled = wait_for(Duration::from_secs(30), || {
        let answer = client()
            .get(
                &format!(
                    "{}/api/v1/query?query=count_over_time(up%7Bjob%3D%22prometheus%22%7D%5B5m%5D)",
                    prometheus.url
                ),
                &[],
            )
            .json();
        let samples: f64 = answer["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()?;
        (samples >= 3.0).then_some(())
    });
    assert!(sampled.is_some(), "Prometheus gathered no samples");
    let mut daemon = Daemon::prepare(
        &format!(
            "[rules]\ndir = \"{{dir}}/rules\"\n[prometheus]\nurls = [\"{}\"]\n",
            prometheus.url
        ),
        &[],
    );
    std::fs::create_dir_all(daemon.path("rules")).unwrap();
    daemon.write_file("rules/selfwatch.toml", COLLECTING_RULES);
    daemon.spawn();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let body = webhook("g", &[("PrometheusDown", "p", "firing", &now)], 0);
    let response = client().post(
        &format!("{}/webhook", daemon.base),
        &[JSON],
        body.as_bytes(),
    );
    assert_eq!(response.status, 200);
    let files = wait_for(Duration::from_secs(30), || {
        let list = client()
            .get(&format!("{}/api/v1/incidents", daemon.base), &[])
            .json();
        let id = list["incidents"].as_array()?.first()?["id"]
            .as_str()?
            .to_owned();
        let response = client().get(
            &format!("{}/api/v1/incidents/{id}/bundle", daemon.base),
            &[],
        );
        (response.status == 200).then(|| {
            untar(response.body_bytes())
                .into_iter()
                .map(|(name, bytes)| (name, String::from_utf8(bytes).unwrap()))
                .collect::<std::collections::BTreeMap<_, _>>()
        })
    })
    .unwrap_or_else(|| panic!("no bundle:\n{}", daemon.log()));
    // The range as Prometheus returned it, and as CSV: several samples of up = 1.
    let range: serde_json::Value =
        serde_json::from_str(&files["collectors/up-graph/range.json"]).unwrap();
    assert_eq!(range["status"], "success", "{range}");
    let csv = &files["collectors/up-graph/range.csv"];
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert!(rows.len() >= 2, "{csv}");
    // CSV quotes the label set, doubling its quotes.
    assert!(
        rows.iter()
            .all(|row| row.contains("job=\"\"prometheus\"\"") && row.ends_with(",1")),
        "{csv}"
    );
    assert!(
        files["collectors/up-now/query.csv"].contains(",1"),
        "{files:?}"
    );
    let manifest: serde_json::Value = serde_json::from_str(&files["manifest.json"]).unwrap();
    for collector in manifest["collectors"].as_array().unwrap() {
        assert_eq!(collector["status"], "ok", "{collector}");
    }
}
