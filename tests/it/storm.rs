//! Proof under fire: an alert storm through a REAL Alertmanager (and, for one group, a REAL
//! Prometheus evaluating a real alerting rule), with fakes for PagerDuty, the Kubernetes API,
//! Prometheus's query API (for the collectors), the status page and a health endpoint; and the
//! same storm with `kill -9` of the daemon at random moments.
//!
//! Two tests, `storm` and `crash`, sized by environment variables. Unset, as in CI, they are
//! short; `bench/storm.sh` and `bench/crash.sh` run them in release mode at full size and print
//! the summary:
//!
//!   | variable | meaning | unset: storm / crash | the scripts |
//!   | --- | --- | --- | --- |
//!   | `STORM_ALERTS` | alerts in all | 1000 | 10000 |
//!   | `STORM_GROUPS` | Alertmanager groups (`group_by: [alertname, group]`) | 20 | 100 |
//!   | `STORM_SECONDS` | how long the alerts are pushed for | 8 / 12 | 60 |
//!   | `STORM_ROUNDS` | kill -9 rounds (crash only) | 5 | 20 |
//!   | `STORM_SEED` | the seed of the group layout and the kill moments | time | time |
//!   | `STORM_BUDGET` | `[actions] hourly_budget` | 2 | 12 |
//!   | `STORM_SETTLE_SECS` | how long to wait for everything to settle | 90 | 600 |
//!   | `STORM_KEEP_DIR` | copy the store and the logs there at the end | - | - |
//!
//! Every run prints one summary block (`==== nightshift storm summary ====` … `==== end ====`):
//! figures, and checks marked PASS / FAIL; any FAIL fails the test. The latency targets are
//! checked in a release build only (`bench/storm.sh`, or `cargo test --release --test it storm::`):
//! a debug build shows their figures but does not check them.
//!
//! Alertmanager groups alerts by `alertname` and `group` (group_wait 1s, group_interval 5s,
//! webhook `max_alerts: 0`) and posts to nightshift through a small recording proxy in this
//! test, which gives Alertmanager one address across restarts and notes every webhook the
//! daemon acknowledged (200 with its notification id). The groups are, in a seeded order:
//! critical (default rule: P1), error (P2), warning (P3, nothing to do: paged at once), info
//! (P4, never paged), `VastaiApiUnreachable` (the shipped Vast.ai runbook: P1, status page says
//! all is well, one rollout restart, 30-minute cooldown, six collectors), `StormRestart` (a
//! small rule: P3, one rollout restart per group's deployment, verify window 20 s, three
//! collectors shared by all its incidents), and one group raised by Prometheus (`StormProm`,
//! `storm_value > 0` over an exporter with one series per alert, severity error: P2).
//!
//! Figures come from the store afterwards (read-only), from the fakes and from /proc.

use crate::fakes;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::fakes::kube::{FakeKube, PodFixture};
use crate::fakes::pagerduty::{FakePagerDuty, ROUTING_KEY};
use crate::fakes::prometheus::FakePrometheus;
use crate::fakes::statuspage::FakeStatuspage;
use crate::fakes::web::FakeWeb;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use rusqlite::{Connection, OpenFlags};
use serde_json::{Value, json};

const INGEST_TOKEN: &str = "storm-ingest-token-5b21";
/// PagerDuty's window and nightshift's limit per routing key in it.
const RATE_WINDOW: Duration = Duration::from_secs(60);
const EVENTS_PER_MINUTE: usize = 100;

// ---------------------------------------------------------------------------------------
// Parameters

#[derive(Debug, Clone)]
struct Params {
    alerts: usize,
    groups: usize,
    seconds: f64,
    /// kill -9 rounds; 0 for a plain storm.
    rounds: usize,
    seed: u64,
    budget: u32,
    settle: Duration,
    keep: Option<PathBuf>,
}

impl Params {
    /// The defaults given, each overridden by its `STORM_*` variable when set.
    fn from_env(
        alerts: usize,
        groups: usize,
        seconds: f64,
        rounds: usize,
        budget: u32,
        settle_secs: f64,
    ) -> Self {
        let get = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let number = |name: &str, default: f64| {
            get(name).map_or(default, |v| {
                v.trim()
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
            })
        };
        let seed = get("STORM_SEED").map_or_else(
            || {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    % 1_000_000_007
            },
            |v| v.trim().parse().expect("STORM_SEED is a number"),
        );
        let params = Params {
            alerts: number("STORM_ALERTS", alerts as f64) as usize,
            groups: number("STORM_GROUPS", groups as f64) as usize,
            seconds: number("STORM_SECONDS", seconds),
            rounds: if rounds == 0 {
                0
            } else {
                number("STORM_ROUNDS", rounds as f64) as usize
            },
            seed,
            budget: number("STORM_BUDGET", f64::from(budget)) as u32,
            settle: Duration::from_secs_f64(number("STORM_SETTLE_SECS", settle_secs)),
            keep: get("STORM_KEEP_DIR").map(PathBuf::from),
        };
        assert!(
            params.groups >= 8,
            "STORM_GROUPS must be at least 8 (one per kind)"
        );
        assert!(
            params.alerts >= params.groups,
            "STORM_ALERTS must be at least STORM_GROUPS"
        );
        params
    }
}

/// A small deterministic generator (splitmix64), so a seed replays the same storm.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [low, high).
    fn between(&mut self, low: f64, high: f64) -> f64 {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        low + (high - low) * unit
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The storm's groups

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Critical,
    Error,
    Warning,
    Info,
    Vastai,
    Restart,
    Prom,
}

impl Kind {
    fn alertname(self) -> &'static str {
        match self {
            Kind::Critical => "StormCritical",
            Kind::Error => "StormError",
            Kind::Warning => "StormWarning",
            Kind::Info => "StormInfo",
            Kind::Vastai => "VastaiApiUnreachable",
            Kind::Restart => "StormRestart",
            Kind::Prom => "StormProm",
        }
    }

    fn severity_label(self) -> &'static str {
        match self {
            Kind::Critical | Kind::Vastai => "critical",
            Kind::Error | Kind::Prom => "error",
            Kind::Warning | Kind::Restart => "warning",
            Kind::Info => "info",
        }
    }

    /// What nightshift should classify it as.
    fn severity(self) -> &'static str {
        match self {
            Kind::Critical | Kind::Vastai => "P1",
            Kind::Error | Kind::Prom => "P2",
            Kind::Warning | Kind::Restart => "P3",
            Kind::Info => "P4",
        }
    }

    fn rule(self) -> &'static str {
        match self {
            Kind::Vastai => "vastai-api-unreachable",
            Kind::Restart => "storm-restart",
            _ => "default",
        }
    }

    fn paged(self) -> bool {
        self != Kind::Info
    }
}

#[derive(Debug, Clone)]
struct Group {
    name: String,
    kind: Kind,
    /// Alerts in it (members m0..).
    size: usize,
}

fn layout(params: &Params, rng: &mut Rng) -> Vec<Group> {
    let n = params.groups;
    let counts = [
        (Kind::Critical, (n / 10).max(1)),
        (Kind::Error, (n / 5).max(1)),
        (Kind::Warning, (3 * n / 10).max(1)),
        (Kind::Info, (3 * n / 20).max(1)),
        (Kind::Vastai, (n / 20).max(1)),
        (Kind::Prom, 1),
    ];
    let fixed: usize = counts.iter().map(|(_, c)| c).sum();
    assert!(fixed < n, "too few groups for every kind");
    let mut kinds: Vec<Kind> = counts
        .iter()
        .flat_map(|(kind, count)| std::iter::repeat_n(*kind, *count))
        .collect();
    kinds.extend(std::iter::repeat_n(Kind::Restart, n - fixed));
    rng.shuffle(&mut kinds);
    let base = params.alerts / n;
    let extra = params.alerts % n;
    kinds
        .into_iter()
        .enumerate()
        .map(|(index, kind)| Group {
            name: format!("g{index:03}"),
            kind,
            size: base + usize::from(index < extra),
        })
        .collect()
}

fn labels_of(group: &Group, member: usize) -> Value {
    let mut labels = json!({
        "alertname": group.kind.alertname(),
        "group": group.name,
        "member": format!("m{member}"),
        "severity": group.kind.severity_label(),
    });
    if group.kind == Kind::Vastai {
        labels["namespace"] = json!("vastai");
        labels["service"] = json!("vastai-integration");
    }
    labels
}

// ---------------------------------------------------------------------------------------
// Real Alertmanager and Prometheus

fn binary(env: &str, names: &[&str]) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "none of {names:?} found on PATH (or set {env}); .ci/run installs the Debian packages \
         prometheus-alertmanager and prometheus. This test does not skip without them."
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A child process with its own directory and log, stopped when dropped.
struct Proc {
    _dir: tempfile::TempDir,
    child: Option<Child>,
    base: String,
    log: PathBuf,
}

impl Proc {
    fn spawn(program: &Path, args: &[String], dir: tempfile::TempDir, base: String) -> Proc {
        let log = dir.path().join("process.log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        Proc {
            _dir: dir,
            child: Some(child),
            base,
            log,
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child);
        }
    }
}

fn start_alertmanager(webhook_url: &str, token_file: &Path) -> Proc {
    let program = binary(
        "ALERTMANAGER_BIN",
        &["prometheus-alertmanager", "alertmanager"],
    );
    let quote = |text: &str| serde_json::to_string(text).expect("string");
    let mut failures = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = format!(
            "global:
  resolve_timeout: 1h
route:
  receiver: nightshift
  group_by: ['alertname', 'group']
  group_wait: 1s
  group_interval: 5s
  repeat_interval: 1h
receivers:
  - name: nightshift
    webhook_configs:
      - url: {url}
        send_resolved: true
        max_alerts: 0
        http_config:
          authorization:
            type: Bearer
            credentials_file: {credentials}
",
            url = quote(webhook_url),
            credentials = quote(&token_file.display().to_string()),
        );
        let config_path = dir.path().join("alertmanager.yml");
        std::fs::write(&config_path, config).expect("alertmanager.yml");
        std::fs::create_dir(dir.path().join("data")).expect("data dir");
        let base = format!("http://127.0.0.1:{port}");
        let args = vec![
            format!("--config.file={}", config_path.display()),
            format!("--storage.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            format!("--web.external-url={base}"),
            // No clustering (gossip on 0.0.0.0:9094).
            "--cluster.listen-address=".to_owned(),
            "--log.level=info".to_owned(),
        ];
        let mut am = Proc::spawn(&program, &args, dir, base);
        let ready = wait_for(Duration::from_secs(15), || {
            if am.exited() {
                return Some(false);
            }
            (client().get(&format!("{}/-/ready", am.base), &[]).status == 200).then_some(true)
        });
        if ready == Some(true) {
            return am;
        }
        failures.push(am.log_tail(20));
    }
    panic!(
        "alertmanager did not start in 3 tries:\n{}",
        failures.join("\n---\n")
    );
}

/// A real Prometheus scraping `exporter` (one `storm_value{member}` series per alert) and
/// evaluating `StormProm: storm_value > 0` for `group`, sending to the Alertmanager on
/// `am_base`.
fn start_prometheus(am_base: &str, exporter: &str, group: &str) -> Proc {
    let program = binary("PROMETHEUS_BIN", &["prometheus"]);
    let am_target = am_base.trim_start_matches("http://");
    let exporter_target = exporter.trim_start_matches("http://");
    let exporter_target = exporter_target
        .split_once('/')
        .map_or(exporter_target, |(host, _)| host);
    let mut failures = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let rules = dir.path().join("rules.yml");
        std::fs::write(
            &rules,
            format!(
                "groups:
  - name: storm
    rules:
      - alert: StormProm
        expr: storm_value > 0
        for: 0s
        labels:
          group: {group}
          severity: error
        annotations:
          summary: 'storm_value of {{{{ $labels.member }}}} is {{{{ $value }}}}'
"
            ),
        )
        .expect("rules.yml");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:
  scrape_interval: 1s
  evaluation_interval: 1s
alerting:
  alertmanagers:
    - api_version: v2
      static_configs:
        - targets: ['{am_target}']
rule_files:
  - {rules}
scrape_configs:
  - job_name: storm
    static_configs:
      - targets: ['{exporter_target}']
",
                rules = serde_json::to_string(&rules.display().to_string()).unwrap(),
            ),
        )
        .expect("prometheus.yml");
        let base = format!("http://127.0.0.1:{port}");
        let args = vec![
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            // Alerts evaluated before the notifier discovered Alertmanager are dropped and
            // sent again after this delay (the default, 1m, is too slow here).
            "--rules.alert.resend-delay=2s".to_owned(),
        ];
        let mut prometheus = Proc::spawn(&program, &args, dir, base);
        let ready = wait_for(Duration::from_secs(60), || {
            if prometheus.exited() {
                return Some(false);
            }
            let answer = client().get(&format!("{}/api/v1/alertmanagers", prometheus.base), &[]);
            (answer.status == 200 && answer.body.contains("\"activeAlertmanagers\":[{"))
                .then_some(true)
        });
        if ready == Some(true) {
            return prometheus;
        }
        failures.push(prometheus.log_tail(20));
    }
    panic!(
        "prometheus did not start in 3 tries:\n{}",
        failures.join("\n---\n")
    );
}

fn exporter_body(members: usize, value: u8) -> String {
    let mut body = String::from("# TYPE storm_value gauge\n");
    for member in 0..members {
        body.push_str(&format!("storm_value{{member=\"m{member}\"}} {value}\n"));
    }
    body
}

// ---------------------------------------------------------------------------------------
// The recording proxy between Alertmanager and nightshift

#[derive(Debug, Clone)]
struct Forwarded {
    /// The daemon's answer (0: no answer, the proxy said 502).
    status: u16,
    /// The notification id of a 200.
    notification: Option<i64>,
    /// Why there was no answer.
    error: Option<String>,
}

#[derive(Clone)]
struct Proxy {
    base: Arc<Mutex<String>>,
    log: Arc<Mutex<Vec<Forwarded>>>,
    http: reqwest::Client,
}

impl Proxy {
    fn set_base(&self, base: &str) {
        *self.base.lock().unwrap() = base.to_owned();
    }

    fn log(&self) -> Vec<Forwarded> {
        self.log.lock().unwrap().clone()
    }
}

async fn forward(proxy: Proxy, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 512 * 1024 * 1024).await else {
        return (StatusCode::BAD_REQUEST, "body").into_response();
    };
    let base = proxy.base.lock().unwrap().clone();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut outgoing = proxy
        .http
        .request(parts.method.clone(), format!("{base}{path}"))
        .body(bytes.to_vec());
    for name in ["authorization", "content-type", "user-agent"] {
        if let Some(value) = parts.headers.get(name) {
            outgoing = outgoing.header(name, value.clone());
        }
    }
    // The error's chain, innermost cause last (reqwest's own text says little).
    let describe = |error: &reqwest::Error| {
        let mut text = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    };
    let answer = match outgoing.send().await {
        Ok(answer) => {
            let status = answer.status().as_u16();
            match answer.bytes().await {
                Ok(body) => Ok((status, body)),
                Err(error) => Err(describe(&error)),
            }
        }
        Err(error) => Err(describe(&error)),
    };
    match answer {
        Ok((status, body)) => {
            let notification = (status == 200)
                .then(|| serde_json::from_slice::<Value>(&body).ok())
                .flatten()
                .and_then(|v| v["notification"].as_i64());
            proxy.log.lock().unwrap().push(Forwarded {
                status,
                notification,
                error: None,
            });
            let mut response = Response::new(Body::from(body));
            *response.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            response
        }
        Err(error) => {
            proxy.log.lock().unwrap().push(Forwarded {
                status: 0,
                notification: None,
                error: Some(error),
            });
            (StatusCode::BAD_GATEWAY, "nightshift did not answer").into_response()
        }
    }
}

// ---------------------------------------------------------------------------------------
// Setup

const STORM_RULES: &str = r#"# tests/it/storm.rs: one rollout restart per group's deployment (so the budget shows), and
# evidence every incident of the rule shares.
[runbook]
name = "storm"
description = "storm test: restart the group's deployment"

[action.restart-group]
kind = "kubernetes.rollout_restart"
namespace = "storm"
workload = "deployment/{{ labels.group }}"
cooldown = "30m"
verify_window = "20s"

[collector.storm-logs]
kind = "kubernetes_logs"
namespace = "storm"
workload = "deployment/storm-app"
tail_lines = 200
since = "1h"

[collector.storm-events]
kind = "kubernetes_events"
namespace = "storm"
workload = "deployment/storm-app"

[collector.storm-rate]
kind = "prometheus_range"
query = 'sum(rate(storm_requests_total[5m]))'
look_back = "30m"
step = "1m"

[[rule]]
name = "storm-restart"
description = "a storm group whose deployment a restart may help"
matchers = ['alertname="StormRestart"']
severity = "P3"
collect = ["storm-logs", "storm-events", "storm-rate"]
summary = "storm: {{ labels.group }} needs a restart"

[[rule.branch]]
name = "restart"
otherwise = true
actions = ["restart-group"]
note = "one rollout restart of deployment storm/{{ labels.group }}"
"#;

struct Setup {
    groups: Vec<Group>,
    _runtime: tokio::runtime::Runtime,
    pd: FakePagerDuty,
    kube: FakeKube,
    fake_prometheus: FakePrometheus,
    status: FakeStatuspage,
    health: FakeWeb,
    exporter: FakeWeb,
    proxy: Proxy,
    _proxy_server: fakes::Server,
    // Dropped in this order: Prometheus, Alertmanager, then the daemon.
    prometheus: Proc,
    alertmanager: Proc,
    daemon: Daemon,
    _secrets: tempfile::TempDir,
}

fn add_workload_with_pods(kube: &FakeKube, namespace: &str, name: &str, pods: usize) {
    let labels = [("app", name)];
    let key = kube.put(fakes::kube::workload(
        "Deployment",
        namespace,
        name,
        &labels,
    ));
    let stored = kube.get(&key).unwrap();
    let rs_name = format!("{name}-5d9c");
    let rs_key = kube.put(fakes::kube::replica_set(
        namespace, &rs_name, &stored, &labels,
    ));
    for n in 0..pods {
        let pod = format!("{rs_name}-p{n}");
        let restarts = i32::from(n == 0);
        let fixture = PodFixture::new(namespace, &pod, &labels).container(
            "app",
            restarts,
            (restarts > 0).then_some("2026-11-28T02:58:00Z"),
            None,
        );
        let pod_key = kube.put(fixture.to_json());
        kube.set_log(
            namespace,
            &pod,
            "app",
            false,
            "03:01:10 INFO polling\n03:01:11 ERROR upstream answered 503\n03:01:12 ERROR retry failed\n",
        );
        if restarts > 0 {
            kube.set_log(namespace, &pod, "app", true, "panic: upstream 503\n");
        }
        kube.event_for(
            &pod_key,
            "Warning",
            "BackOff",
            "Back-off restarting failed container",
            "2026-11-28T02:59:00Z",
        );
    }
    kube.event_for(
        &rs_key,
        "Normal",
        "SuccessfulCreate",
        "Created pod",
        "2026-11-28T02:00:00Z",
    );
}

fn setup(params: Params) -> Setup {
    fakes::init();
    let mut rng = Rng(params.seed);
    let groups = layout(&params, &mut rng);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let pd = runtime.block_on(FakePagerDuty::start());
    let kube = runtime.block_on(FakeKube::start());
    add_workload_with_pods(&kube, "vastai", "vastai-integration", 2);
    add_workload_with_pods(&kube, "storm", "storm-app", 3);
    for group in groups.iter().filter(|g| g.kind == Kind::Restart) {
        kube.put(fakes::kube::workload(
            "Deployment",
            "storm",
            &group.name,
            &[("app", group.name.as_str())],
        ));
    }
    if params.rounds > 0 {
        // Each restart's answer comes 1.5 s after the change: a kill in between leaves the
        // action started with the change made, for the recovery to settle by reading back.
        let mut deployments = vec![("vastai", "vastai-integration".to_owned())];
        deployments.extend(
            groups
                .iter()
                .filter(|g| g.kind == Kind::Restart)
                .map(|g| ("storm", g.name.clone())),
        );
        for (namespace, name) in deployments {
            kube.delay_after_apply(
                axum::http::Method::PATCH,
                &fakes::kube::workload_path("deployment", namespace, &name),
                Duration::from_millis(1500),
            );
        }
    }
    let fake_prometheus = runtime.block_on(FakePrometheus::start());
    let status = runtime.block_on(FakeStatuspage::start());
    status.set_indicator("none", "All Systems Operational");
    let health = runtime.block_on(FakeWeb::start("/healthz"));
    health.reply(
        503,
        &[("content-type", "application/json")],
        r#"{"ok":false,"upstream":"vast.ai unreachable"}"#,
    );
    let prom_group = groups
        .iter()
        .find(|g| g.kind == Kind::Prom)
        .expect("a Prometheus group")
        .clone();
    let exporter = runtime.block_on(FakeWeb::start("/metrics"));
    exporter.reply(
        200,
        &[("content-type", "text/plain; version=0.0.4")],
        exporter_body(prom_group.size, 0),
    );

    let proxy = Proxy {
        base: Arc::new(Mutex::new(String::new())),
        log: Arc::new(Mutex::new(Vec::new())),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
    };
    let proxy_server = runtime.block_on(fakes::Server::serve(proxy.clone(), forward));

    let config = format!(
        r#"[rules]
dir = "{{dir}}/rules"
[kubernetes]
kubeconfig = "{{dir}}/kubeconfig"
namespaces = ["vastai", "storm"]
[prometheus]
urls = ["{prometheus}"]
[auth]
ingest_token_file = "{{dir}}/ingest"
[pagerduty]
url = "{pd}"
routing_keys = {{ primary = "{{dir}}/pd-primary" }}
default_routing_key = "primary"
events_per_minute = {EVENTS_PER_MINUTE}
[paging]
external_url = "https://nightshift.example"
{settle}
[actions]
mode = "enforce"
hourly_budget = {budget}
"#,
        prometheus = fake_prometheus.url(),
        pd = pd.url(),
        budget = params.budget,
        // An after_verify incident decided but not acted on when the daemon died pages after
        // settle_within (5 min by default); shortened so that the crash test settles.
        settle = if params.rounds > 0 {
            "settle_within = \"20s\""
        } else {
            ""
        },
    );
    let mut daemon = Daemon::prepare(&config, &[]);
    daemon.write_file("ingest", &format!("{INGEST_TOKEN}\n"));
    daemon.write_file("pd-primary", &format!("{ROUTING_KEY}\n"));
    let kubeconfig = kube.write_kubeconfig(daemon.dir.path());
    std::fs::rename(kubeconfig, daemon.path("kubeconfig")).unwrap();
    install_vastai_runbook(
        &daemon.path("rules"),
        Some(&status.base()),
        Some(&health.url()),
    );
    daemon.write_file("rules/storm.toml", STORM_RULES);
    daemon.spawn();
    proxy.set_base(&daemon.base);

    let secrets = tempfile::tempdir().expect("tempdir");
    let token_file = secrets.path().join("token");
    std::fs::write(&token_file, format!("{INGEST_TOKEN}\n")).unwrap();
    let alertmanager = start_alertmanager(&format!("{}/webhook", proxy_server.url()), &token_file);
    let prometheus = start_prometheus(&alertmanager.base, &exporter.url(), &prom_group.name);
    Setup {
        groups,
        _runtime: runtime,
        pd,
        kube,
        fake_prometheus,
        status,
        health,
        exporter,
        proxy,
        _proxy_server: proxy_server,
        prometheus,
        alertmanager,
        daemon,
        _secrets: secrets,
    }
}

// ---------------------------------------------------------------------------------------
// Pushing the storm

/// What the pusher did.
#[derive(Debug, Default, Clone)]
struct Pushed {
    /// Alerts posted to Alertmanager's API (answered 200).
    alerts: usize,
    posts: usize,
    failed_posts: usize,
    started: Option<chrono::DateTime<chrono::Utc>>,
    duration: Duration,
}

/// Post every group's first alert at once (the storm's onset), then the rest spread evenly
/// over `seconds`, in batches every 250 ms. The Prometheus group is raised by Prometheus.
fn push(am_base: String, groups: Vec<Group>, seconds: f64) -> Pushed {
    let mut queue: Vec<Value> = Vec::new();
    let mut first: Vec<Value> = Vec::new();
    let pushed_groups: Vec<&Group> = groups.iter().filter(|g| g.kind != Kind::Prom).collect();
    let largest = pushed_groups.iter().map(|g| g.size).max().unwrap_or(0);
    for member in 0..largest {
        for group in &pushed_groups {
            if member >= group.size {
                continue;
            }
            let alert = json!({
                "labels": labels_of(group, member),
                "annotations": {
                    "summary": format!("{} {} member {member}", group.kind.alertname(), group.name),
                    "runbook_url": "http://runbooks.invalid/storm",
                },
                "generatorURL": "http://127.0.0.1/storm",
            });
            if member == 0 {
                first.push(alert);
            } else {
                queue.push(alert);
            }
        }
    }
    let ticks = ((seconds / 0.25).round() as usize).max(1);
    let per_tick = queue.len().div_ceil(ticks).max(1);
    let mut pushed = Pushed {
        started: Some(chrono::Utc::now()),
        ..Pushed::default()
    };
    let begin = Instant::now();
    let post = |batch: &[Value], pushed: &mut Pushed| {
        let body = Value::Array(batch.to_vec()).to_string();
        for _ in 0..5 {
            let answer = client().post(
                &format!("{am_base}/api/v2/alerts"),
                &[JSON],
                body.as_bytes(),
            );
            pushed.posts += 1;
            if answer.status == 200 {
                pushed.alerts += batch.len();
                return;
            }
            pushed.failed_posts += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("Alertmanager refused a batch of alerts 5 times");
    };
    post(&first, &mut pushed);
    for (tick, batch) in queue.chunks(per_tick).enumerate() {
        let due = begin + Duration::from_secs_f64(0.25 * (tick + 1) as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        post(batch, &mut pushed);
    }
    pushed.duration = begin.elapsed();
    pushed
}

// ---------------------------------------------------------------------------------------
// The store, read-only

fn open_store(daemon: &Daemon) -> Connection {
    let connection = Connection::open_with_flags(
        daemon.state_dir().join("nightshift.db"),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open the store read-only");
    connection
        .busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    connection
}

fn scalar(db: &Connection, sql: &str) -> i64 {
    db.query_row(sql, [], |row| row.get::<_, Option<i64>>(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or(0)
}

fn column(db: &Connection, sql: &str) -> Vec<i64> {
    let mut statement = db.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    statement
        .query_map([], |row| row.get::<_, i64>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn pairs(db: &Connection, sql: &str) -> Vec<(String, String)> {
    let mut statement = db.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    statement
        .query_map([], |row| Ok((text_of(row.get(0)?), text_of(row.get(1)?))))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Any SQL value as text ("" for NULL).
fn text_of(value: rusqlite::types::Value) -> String {
    match value {
        rusqlite::types::Value::Null => String::new(),
        rusqlite::types::Value::Integer(n) => n.to_string(),
        rusqlite::types::Value::Real(x) => x.to_string(),
        rusqlite::types::Value::Text(text) => text,
        rusqlite::types::Value::Blob(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Nearest-rank percentile of `values` (sorted here), in the values' unit.
fn percentile(values: &[i64], p: f64) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn ms(value: Option<i64>) -> String {
    value.map_or("n/a".to_owned(), |v| format!("{v} ms"))
}

/// The daemon's peak RSS (VmHWM, kB) and CPU time (utime + stime, seconds).
fn proc_figures(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: fields count from after its closing parenthesis.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime 15.
    let ticks = |index: usize| fields.get(index).and_then(|v| v.parse::<u64>().ok());
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = (ticks(11).unwrap_or(0) + ticks(12).unwrap_or(0)) as f64 / hz;
    (hwm, cpu)
}

// ---------------------------------------------------------------------------------------
// Settling

/// Where the pipeline stands, from the store.
#[derive(Debug, Default, Clone)]
struct Progress {
    notifications: i64,
    episodes: i64,
    undecided: i64,
    bundles_done: i64,
    bundles_pending: i64,
    actions_open: i64,
    outbox_pending: i64,
    waiting_pages: i64,
    members: usize,
}

fn progress(setup: &Setup) -> Progress {
    let db = open_store(&setup.daemon);
    let episodes_labels = pairs(&db, "SELECT id, labels FROM episodes");
    let members: BTreeSet<(String, String)> = episodes_labels
        .iter()
        .filter_map(|(_, labels)| {
            let labels: Value = serde_json::from_str(labels).ok()?;
            Some((
                labels["group"].as_str()?.to_owned(),
                labels["member"].as_str()?.to_owned(),
            ))
        })
        .collect();
    Progress {
        notifications: scalar(&db, "SELECT count(*) FROM notifications"),
        episodes: episodes_labels.len() as i64,
        undecided: scalar(
            &db,
            "SELECT count(*) FROM episodes e
             WHERE NOT EXISTS (SELECT 1 FROM decisions d WHERE d.episode_id = e.id)",
        ),
        bundles_done: scalar(
            &db,
            "SELECT count(*) FROM bundles WHERE state IN ('written', 'final')",
        ),
        bundles_pending: scalar(
            &db,
            "SELECT count(*) FROM bundles WHERE state NOT IN ('written', 'final', 'deleted')",
        ),
        actions_open: scalar(
            &db,
            "SELECT count(*) FROM actions WHERE state IN ('planned', 'started')",
        ),
        outbox_pending: scalar(&db, "SELECT count(*) FROM outbox WHERE state = 'pending'"),
        waiting_pages: scalar(
            &db,
            "SELECT count(*) FROM incident_pages WHERE state = 'waiting'",
        ),
        members: members.len(),
    }
}

/// Milestones, in seconds since the storm started.
#[derive(Debug, Default, Clone)]
struct Milestones {
    all_journaled: Option<f64>,
    all_decided: Option<f64>,
    all_bundled: Option<f64>,
    actions_settled: Option<f64>,
    every_group_paged: Option<f64>,
    outbox_drained: Option<f64>,
    last: Progress,
}

fn settle(setup: &Setup, expected: usize, begin: Instant, deadline: Instant) -> Milestones {
    let mut milestones = Milestones::default();
    let paged_groups = setup.groups.iter().filter(|g| g.kind.paged()).count();
    loop {
        let now = begin.elapsed().as_secs_f64();
        let progress = progress(setup);
        let journaled = progress.members >= expected;
        if journaled && milestones.all_journaled.is_none() {
            milestones.all_journaled = Some(now);
        }
        if journaled && progress.undecided == 0 && milestones.all_decided.is_none() {
            milestones.all_decided = Some(now);
        }
        if journaled
            && progress.bundles_pending == 0
            && progress.bundles_done >= progress.episodes
            && milestones.all_bundled.is_none()
        {
            milestones.all_bundled = Some(now);
        }
        if journaled && progress.actions_open == 0 && milestones.actions_settled.is_none() {
            milestones.actions_settled = Some(now);
        }
        let triggered: BTreeSet<String> = setup
            .pd
            .accepted_triggers()
            .into_iter()
            .filter_map(|e| e.dedup_key)
            .collect();
        if triggered.len() >= paged_groups && milestones.every_group_paged.is_none() {
            milestones.every_group_paged = Some(now);
        }
        let drained = journaled
            && milestones.all_decided.is_some()
            && progress.outbox_pending == 0
            && progress.waiting_pages == 0
            && milestones.every_group_paged.is_some();
        if drained && milestones.outbox_drained.is_none() {
            milestones.outbox_drained = Some(now);
        }
        milestones.last = progress;
        let done = milestones.all_decided.is_some()
            && milestones.all_bundled.is_some()
            && milestones.actions_settled.is_some()
            && milestones.outbox_drained.is_some();
        if done || Instant::now() > deadline {
            return milestones;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

// ---------------------------------------------------------------------------------------
// Checks

/// One line of the summary; `ok: None` for a figure that is not a check.
struct Line {
    name: String,
    value: String,
    ok: Option<bool>,
}

#[derive(Default)]
struct Report {
    lines: Vec<Line>,
}

impl Report {
    fn figure(&mut self, name: &str, value: impl Into<String>) {
        self.lines.push(Line {
            name: name.to_owned(),
            value: value.into(),
            ok: None,
        });
    }

    fn check(&mut self, name: &str, ok: bool, value: impl Into<String>) {
        self.lines.push(Line {
            name: name.to_owned(),
            value: value.into(),
            ok: Some(ok),
        });
    }

    /// A latency target: checked in a release build without kills only (a debug build's
    /// figures say nothing about it, and a kill -9 holds up whatever was in flight until the
    /// restart).
    fn check_latency(&mut self, name: &str, ok: bool, value: impl Into<String>, crash: bool) {
        if cfg!(debug_assertions) || crash {
            let why = if crash {
                "kill -9 rounds"
            } else {
                "a debug build"
            };
            self.figure(name, format!("{} (not checked with {why})", value.into()));
        } else {
            self.check(name, ok, value);
        }
    }

    fn failures(&self) -> Vec<String> {
        self.lines
            .iter()
            .filter(|line| line.ok == Some(false))
            .map(|line| format!("{}: {}", line.name, line.value))
            .collect()
    }

    fn print(&self, title: &str) {
        println!("==== {title} ====");
        for line in &self.lines {
            let mark = match line.ok {
                Some(true) => "PASS",
                Some(false) => "FAIL",
                None => "",
            };
            println!("{mark:<5} {:<44} {}", line.name, line.value);
        }
        println!("==== end ====");
    }
}

/// Every file under bundles/: complete tar.gz archives, nothing else. Returns (archives,
/// problems, manifests that name a shared collector).
fn check_bundle_files(state_dir: &Path) -> (usize, Vec<String>, usize) {
    let mut archives = 0;
    let mut problems = Vec::new();
    let mut shared_manifests = 0;
    let root = state_dir.join("bundles");
    let Ok(days) = std::fs::read_dir(&root) else {
        return (0, vec!["no bundles directory".to_owned()], 0);
    };
    for day in days {
        let day = day.unwrap().path();
        if !day.is_dir() {
            problems.push(format!("stray file {}", day.display()));
            continue;
        }
        for entry in std::fs::read_dir(&day).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.ends_with(".tar.gz") {
                problems.push(format!("left over: {name}"));
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
            let mut manifest = None;
            let read = (|| -> std::io::Result<()> {
                for entry in archive.entries()? {
                    let mut entry = entry?;
                    let entry_name = entry.path()?.to_string_lossy().into_owned();
                    let mut content = Vec::new();
                    entry.read_to_end(&mut content)?;
                    // Every entry lives in the incident's folder.
                    if entry_name.split_once('/').map(|(_, rest)| rest) == Some("manifest.json") {
                        manifest = Some(content);
                    }
                }
                Ok(())
            })();
            match (read, manifest) {
                (Ok(()), Some(manifest)) => {
                    archives += 1;
                    let manifest: Value = serde_json::from_slice(&manifest).unwrap_or_default();
                    if manifest["collectors"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c["shared"] == true))
                    {
                        shared_manifests += 1;
                    }
                }
                (Ok(()), None) => problems.push(format!("{name}: no manifest.json")),
                (Err(error), _) => problems.push(format!("{name}: not a complete tar.gz: {error}")),
            }
        }
    }
    (archives, problems, shared_manifests)
}

#[allow(clippy::too_many_lines)]
fn run(params: Params) -> Report {
    // The storms share the machine: one at a time, and none beside a hostile-input test.
    let _serial = heavy();
    let crash = params.rounds > 0;
    let title = if crash { "crash" } else { "storm" };
    println!(
        "{title}: seed {} ({} alerts in {} groups over {} s, {} kill rounds, budget {}); \
         replay with STORM_SEED={}",
        params.seed,
        params.alerts,
        params.groups,
        params.seconds,
        params.rounds,
        params.budget,
        params.seed
    );
    let mut setup = setup(params.clone());
    let mut rng = Rng(params.seed ^ 0xC0FF_EE00);
    let expected = params.alerts;
    let prom_group = setup
        .groups
        .iter()
        .find(|g| g.kind == Kind::Prom)
        .unwrap()
        .clone();

    let (_, cpu_before) = proc_figures(setup.daemon.pid());
    // The storm starts: Prometheus's series go to 1 and the pusher posts to Alertmanager.
    let begin = Instant::now();
    setup.exporter.reply(
        200,
        &[("content-type", "text/plain; version=0.0.4")],
        exporter_body(prom_group.size, 1),
    );
    let pusher = {
        let am = setup.alertmanager.base.clone();
        let groups = setup.groups.clone();
        let seconds = params.seconds;
        std::thread::spawn(move || push(am, groups, seconds))
    };
    // The kill moments (seconds after the storm began) and down times come from the seed
    // alone. The kills spread over about one and a half times the push (the daemon is still
    // busy after the last alert): kill i comes 0.3 s to twice the mean gap after kill i-1 (or
    // as soon as the daemon is back up, if restarting took longer than that); each time it
    // stays down 0-0.5 s.
    let mean_gap = (params.seconds * 1.5).max(5.0) / params.rounds.max(1) as f64;
    let mut schedule = Vec::new();
    let mut moment = 0.0;
    for _ in 0..params.rounds {
        moment += rng.between(0.3, (2.0 * mean_gap - 0.3).max(0.6));
        schedule.push((moment, rng.between(0.0, 0.5)));
    }
    let mut kills: Vec<String> = Vec::new();
    for (round, (moment, down)) in schedule.into_iter().enumerate() {
        let due = begin + Duration::from_secs_f64(moment);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let at = begin.elapsed().as_secs_f64();
        setup.daemon.kill9();
        std::thread::sleep(Duration::from_secs_f64(down));
        setup.daemon.spawn();
        setup.proxy.set_base(&setup.daemon.base);
        kills.push(format!("{at:.2}s"));
        println!(
            "round {}: kill -9 at {at:.2} s (scheduled {moment:.2} s), down {down:.2} s, up again at {:.2} s",
            round + 1,
            begin.elapsed().as_secs_f64()
        );
    }
    let pushed = pusher.join().expect("pusher");
    let expected_alerts = pushed.alerts + prom_group.size;
    assert_eq!(expected_alerts, expected, "alerts pushed");

    let deadline = Instant::now() + params.settle;
    let milestones = settle(&setup, expected, begin, deadline);
    let elapsed = begin.elapsed().as_secs_f64();
    let (hwm_kb, cpu_after) = proc_figures(setup.daemon.pid());
    let db = open_store(&setup.daemon);

    let mut report = Report::default();
    report.figure(
        "seed",
        format!("{} (STORM_SEED={} replays it)", params.seed, params.seed),
    );
    let by_kind: BTreeMap<Kind, usize> = setup.groups.iter().fold(BTreeMap::new(), |mut m, g| {
        *m.entry(g.kind).or_default() += 1;
        m
    });
    report.figure(
        "storm",
        format!(
            "{expected} alerts in {} groups; {} posted to Alertmanager's API in {} posts over {:.1} s, {} raised by a real Prometheus (rule StormProm, group {})",
            params.groups,
            pushed.alerts,
            pushed.posts,
            pushed.duration.as_secs_f64(),
            prom_group.size,
            prom_group.name
        ),
    );
    report.figure(
        "groups by kind",
        by_kind
            .iter()
            .map(|(k, n)| format!("{}={n}", k.alertname()))
            .collect::<Vec<_>>()
            .join(" "),
    );
    if crash {
        report.figure(
            "kill -9 rounds",
            format!("{} at {}", kills.len(), kills.join(" ")),
        );
    }
    let stamp =
        |value: Option<f64>| value.map_or("not reached".to_owned(), |v| format!("{v:.1} s"));
    report.figure(
        "milestones after the storm began",
        format!(
            "journaled {} · decided {} · bundles {} · actions settled {} · every group paged {} · outbox drained {} (run {:.1} s)",
            stamp(milestones.all_journaled),
            stamp(milestones.all_decided),
            stamp(milestones.all_bundled),
            stamp(milestones.actions_settled),
            stamp(milestones.every_group_paged),
            stamp(milestones.outbox_drained),
            elapsed
        ),
    );

    // ---- journaled and classified
    let last = &milestones.last;
    let proxy_log = setup.proxy.log();
    let acked: Vec<i64> = proxy_log.iter().filter_map(|f| f.notification).collect();
    let refused = proxy_log.iter().filter(|f| f.status != 200).count();
    let mut not_ok: BTreeMap<String, usize> = BTreeMap::new();
    for forwarded in proxy_log.iter().filter(|f| f.status != 200) {
        let key = match &forwarded.error {
            Some(error) => format!("no answer ({error})"),
            None => format!("HTTP {}", forwarded.status),
        };
        *not_ok.entry(key).or_default() += 1;
    }
    let notification_ids: BTreeSet<i64> = column(&db, "SELECT id FROM notifications")
        .into_iter()
        .collect();
    let lost: Vec<i64> = acked
        .iter()
        .filter(|id| !notification_ids.contains(id))
        .copied()
        .collect();
    report.check(
        "acknowledged notifications kept",
        lost.is_empty() && !acked.is_empty(),
        format!(
            "{} webhooks answered 200 through the proxy, {} in the store ({} rows), {} lost{}; {} answered otherwise or not at all (Alertmanager retries those): {:?}",
            acked.len(),
            acked.len() - lost.len(),
            last.notifications,
            lost.len(),
            if lost.is_empty() { String::new() } else { format!(" {:?}", &lost[..lost.len().min(10)]) },
            refused,
            not_ok
        ),
    );
    let episode_rows = pairs(&db, "SELECT labels, severity || ' ' || rule FROM episodes");
    let mut members: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut wrong_severity = Vec::new();
    let kind_of: HashMap<&str, Kind> = setup
        .groups
        .iter()
        .map(|g| (g.name.as_str(), g.kind))
        .collect();
    for (labels, severity) in &episode_rows {
        let labels: Value = serde_json::from_str(labels).unwrap_or_default();
        let group = labels["group"].as_str().unwrap_or_default().to_owned();
        let member = labels["member"].as_str().unwrap_or_default().to_owned();
        if let Some(kind) = kind_of.get(group.as_str())
            && *severity != format!("{} {}", kind.severity(), kind.rule())
            && wrong_severity.len() < 5
        {
            wrong_severity.push(format!(
                "{group}/{member}: {severity:?}, expected {} {}",
                kind.severity(),
                kind.rule()
            ));
        }
        *members.entry((group, member)).or_default() += 1;
    }
    let missing: Vec<String> = setup
        .groups
        .iter()
        .flat_map(|g| (0..g.size).map(move |m| (g.name.clone(), format!("m{m}"))))
        .filter(|key| !members.contains_key(key))
        .map(|(g, m)| format!("{g}/{m}"))
        .collect();
    let doubled = members.values().filter(|n| **n > 1).count();
    report.check(
        "every alert journaled as an incident",
        missing.is_empty(),
        format!(
            "{} alerts sent, {} incidents ({} distinct alerts, {} with more than one episode), {} missing{}",
            expected,
            episode_rows.len(),
            members.len(),
            doubled,
            missing.len(),
            if missing.is_empty() { String::new() } else { format!(" e.g. {:?}", &missing[..missing.len().min(5)]) }
        ),
    );
    let decisions = scalar(&db, "SELECT count(*) FROM decisions");
    report.check(
        "every incident classified",
        last.undecided == 0 && wrong_severity.is_empty() && !episode_rows.is_empty(),
        format!(
            "{} decisions for {} incidents, {} without one, {} with an unexpected severity or rule {:?}",
            decisions,
            episode_rows.len(),
            last.undecided,
            wrong_severity.len(),
            wrong_severity
        ),
    );

    // ---- latencies from the store
    let decision_latency = column(
        &db,
        "SELECT (SELECT min(d.at) FROM decisions d WHERE d.episode_id = e.id) - n.received_at
         FROM episodes e JOIN notifications n ON n.id = e.first_notification
         WHERE EXISTS (SELECT 1 FROM decisions d WHERE d.episode_id = e.id)",
    );
    let page_latency = column(
        &db,
        "SELECT p.paged_at - n.received_at FROM incident_pages p
         JOIN episodes e ON e.id = p.episode_id
         JOIN notifications n ON n.id = e.first_notification
         WHERE p.policy = 'immediate' AND p.paged_at IS NOT NULL",
    );
    let outbox_latency = column(
        &db,
        "SELECT o.created_at - n.received_at FROM outbox o
         JOIN episodes e ON e.id = o.episode_id
         JOIN notifications n ON n.id = e.first_notification
         WHERE o.channel = 'pagerduty' AND o.kind = 'trigger'
           AND o.id = (SELECT min(f.id) FROM outbox f WHERE f.dedup_key = o.dedup_key
                       AND f.channel = 'pagerduty' AND f.kind = 'trigger')
           AND EXISTS (SELECT 1 FROM incident_pages p WHERE p.episode_id = e.id
                       AND p.policy = 'immediate')",
    );
    let p99 = |v: &[i64]| percentile(v, 99.0);
    report.check_latency(
        "webhook received → decision recorded",
        p99(&decision_latency).is_some_and(|v| v < 1000),
        format!(
            "p50 {} · p99 {} · max {} over {} incidents (target p99 < 1 s)",
            ms(percentile(&decision_latency, 50.0)),
            ms(p99(&decision_latency)),
            ms(decision_latency.iter().max().copied()),
            decision_latency.len()
        ),
        crash,
    );
    report.check_latency(
        "webhook received → page queued (per incident)",
        p99(&page_latency).is_some_and(|v| v < 1000),
        format!(
            "p50 {} · p99 {} · max {} over {} incidents paging immediately (incident_pages.paged_at; target p99 < 1 s)",
            ms(percentile(&page_latency, 50.0)),
            ms(p99(&page_latency)),
            ms(page_latency.iter().max().copied()),
            page_latency.len()
        ),
        crash,
    );
    report.figure(
        "webhook received → first trigger queued",
        format!(
            "p50 {} · p99 {} over {} pages (outbox.created_at of each page's first trigger)",
            ms(percentile(&outbox_latency, 50.0)),
            ms(p99(&outbox_latency)),
            outbox_latency.len()
        ),
    );
    let first_p1_received = scalar(
        &db,
        "SELECT min(n.received_at) FROM episodes e JOIN notifications n
         ON n.id = e.first_notification WHERE e.severity = 'P1'",
    );
    let first_p1_delivered = scalar(
        &db,
        "SELECT min(delivered_at) FROM outbox WHERE channel = 'pagerduty' AND kind = 'trigger'
         AND priority = 1 AND state = 'delivered'",
    );
    let storm_start_ms = pushed.started.map_or(0, |t| t.timestamp_millis());
    report.figure(
        "first P1 page delivered",
        if first_p1_delivered > 0 {
            format!(
                "{} ms after its first webhook was received, {} ms after the storm's first alert was posted to Alertmanager (group_wait 1 s included)",
                first_p1_delivered - first_p1_received,
                first_p1_delivered - storm_start_ms
            )
        } else {
            "none delivered".to_owned()
        },
    );

    let per_second = column(
        &db,
        "SELECT count(*) FROM decisions WHERE kind = 'initial' GROUP BY at / 1000",
    );
    let busy_seconds = per_second.len().max(1);
    report.figure(
        "decision rate",
        format!(
            "at most {} initial decisions in one second, {:.0}/s on average over the {} seconds that had any",
            per_second.iter().max().copied().unwrap_or(0),
            per_second.iter().sum::<i64>() as f64 / busy_seconds as f64,
            busy_seconds
        ),
    );

    // ---- pages
    let mut statement = db
        .prepare(
            "SELECT g.severity, min(ip.paged_at),
                (SELECT min(o.delivered_at) FROM outbox o WHERE o.dedup_key = g.dedup_key
                 AND o.channel = 'pagerduty' AND o.kind = 'trigger' AND o.state = 'delivered')
             FROM pages g JOIN incident_pages ip ON ip.dedup_key = g.dedup_key
             WHERE ip.paged_at IS NOT NULL GROUP BY g.dedup_key",
        )
        .unwrap();
    let mut waits: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for row in statement
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, Option<i64>>(2)?,
            ))
        })
        .unwrap()
    {
        let (severity, queued, delivered) = row.unwrap();
        if let Some(delivered) = delivered {
            waits.entry(severity).or_default().push(delivered - queued);
        }
    }
    drop(statement);
    report.figure(
        "page queued → first delivered, per page",
        waits
            .iter()
            .map(|(severity, v)| {
                format!(
                    "{severity}: {} pages, p50 {} max {}",
                    v.len(),
                    ms(percentile(v, 50.0)),
                    ms(v.iter().max().copied())
                )
            })
            .collect::<Vec<_>>()
            .join(" · "),
    );
    let update_triggers = scalar(
        &db,
        "SELECT count(*) FROM outbox o WHERE o.channel = 'pagerduty' AND o.kind = 'trigger'
         AND o.id > (SELECT min(f.id) FROM outbox f WHERE f.dedup_key = o.dedup_key
                     AND f.channel = 'pagerduty' AND f.kind = 'trigger')",
    );
    report.figure(
        "triggers per page",
        format!(
            "{} trigger events for {} pages: {update_triggers} are updates of a page already sent (new incidents in the group, bundle links, verify outcomes)",
            scalar(
                &db,
                "SELECT count(*) FROM outbox WHERE channel = 'pagerduty' AND kind = 'trigger'"
            ),
            scalar(&db, "SELECT count(*) FROM pages"),
        ),
    );
    let rate_max = setup.pd.max_in_window_for(ROUTING_KEY, RATE_WINDOW);
    // Every event sent, whatever PagerDuty answered (the fake accepts at most 120 a minute).
    let mut sent: Vec<Instant> = setup
        .pd
        .attempts()
        .iter()
        .filter(|event| event.routing_key == ROUTING_KEY)
        .map(|event| event.received)
        .collect();
    sent.sort();
    let mut sent_max = 0;
    let mut start = 0;
    for end in 0..sent.len() {
        while sent[end].duration_since(sent[start]) >= RATE_WINDOW {
            start += 1;
        }
        sent_max = sent_max.max(end + 1 - start);
    }
    let limited = setup.pd.rate_limited().len();
    let accepted = setup.pd.accepted();
    report.check(
        "pages within the rate limit",
        sent_max <= EVENTS_PER_MINUTE && limited == 0,
        format!(
            "at most {sent_max} events sent and {rate_max} accepted in any 60 s for the routing key (limit {EVENTS_PER_MINUTE}); {} accepted events ({} triggers, {} resolves, {} change events); {limited} answered 429 by PagerDuty (its limit: 120 a minute)",
            accepted.len(),
            accepted.iter().filter(|e| e.is_trigger()).count(),
            accepted.iter().filter(|e| e.is_resolve()).count(),
            accepted.iter().filter(|e| e.is_change()).count(),
        ),
    );
    // Triggers as the outbox delivered them. An update is a trigger of a page PagerDuty
    // already had open (the last event delivered under its dedup key before it was a
    // trigger, no resolve in between): the delivery worker sends it after every first
    // trigger, whatever its priority.
    let mut statement = db
        .prepare(
            "SELECT priority, created_at, delivered_at,
                 coalesce((SELECT d.kind FROM outbox d WHERE d.dedup_key = o.dedup_key
                     AND d.channel = o.channel AND d.state = 'delivered' AND d.id < o.id
                     ORDER BY d.id DESC LIMIT 1) = 'trigger', 0)
             FROM outbox o WHERE channel = 'pagerduty' AND kind = 'trigger'
             AND state = 'delivered' ORDER BY delivered_at, id",
        )
        .unwrap();
    let delivered: Vec<Trigger> = statement
        .query_map([], |row| {
            Ok(Trigger {
                priority: row.get(0)?,
                created: row.get(1)?,
                delivered: row.get(2)?,
                update: row.get(3)?,
            })
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    drop(statement);
    let firsts: Vec<&Trigger> = delivered.iter().filter(|t| !t.update).collect();
    let p1_firsts: Vec<&Trigger> = firsts.iter().filter(|t| t.priority == 1).copied().collect();
    // Ahead of a P1 first trigger: any other trigger queued after it, yet delivered before it.
    // (A trigger queued while a delivery round is under way waits for the next round, so one
    // of the round under way, queued before it, may still go first: that is not counted, but
    // shown as the longest such overlap.)
    let ahead_of_p1: Vec<&Trigger> = delivered
        .iter()
        .filter(|t| t.update || t.priority > 1)
        .filter(|t| {
            p1_firsts
                .iter()
                .any(|p| p.created < t.created && p.delivered > t.delivered)
        })
        .collect();
    let overlap = delivered
        .iter()
        .filter(|t| t.update || t.priority > 1)
        .flat_map(|t| {
            p1_firsts
                .iter()
                .filter(move |p| p.created < t.delivered && p.delivered > t.delivered)
                .map(move |p| t.delivered - p.created)
        })
        .max();
    // The first trigger PagerDuty got need not be P1 (a P2 may be decided before any P1),
    // but none may go while a P1 first trigger queued before it waits.
    let first = delivered.first();
    let p1_queued_before_first = first.is_some_and(|f| {
        (f.update || f.priority > 1)
            && p1_firsts
                .iter()
                .any(|p| p.created < f.created && p.delivered > f.delivered)
    });
    report.check(
        "no trigger sent while a P1 first trigger waits",
        ahead_of_p1.is_empty(),
        format!(
            "{} triggers ({} updates) delivered before a P1 first trigger queued earlier; a trigger of a round under way went out at most {} after a P1 first trigger was queued; the first trigger PagerDuty got was {} ({} P1 first trigger queued before it)",
            ahead_of_p1.len(),
            ahead_of_p1.iter().filter(|t| t.update).count(),
            ms(overlap),
            first.map_or("none".to_owned(), |f| format!(
                "a P{} {}",
                f.priority,
                if f.update { "update" } else { "first trigger" }
            )),
            if p1_queued_before_first { "a" } else { "no" },
        ),
    );
    // A priority inversion: a first trigger queued after a more urgent first trigger, yet
    // delivered before it. Updates are not compared: they go after every first trigger.
    let inversions: Vec<&Trigger> = firsts
        .iter()
        .filter(|t| {
            firsts.iter().any(|u| {
                u.priority < t.priority && u.created < t.created && u.delivered > t.delivered
            })
        })
        .copied()
        .collect();
    let p1_overtaken = inversions
        .iter()
        .filter(|t| {
            p1_firsts
                .iter()
                .any(|p| p.created < t.created && p.delivered > t.delivered)
        })
        .count();
    let last_p1 = p1_firsts.iter().map(|t| t.delivered).max();
    let first_other = firsts.iter().find(|t| t.priority > 1).map(|t| t.delivered);
    report.check(
        "more urgent first triggers first",
        inversions.is_empty(),
        format!(
            "{} P1 first triggers delivered, {} other first triggers, {} updates; {} first triggers delivered before a more urgent one queued earlier ({p1_overtaken} of them before a P1){}",
            p1_firsts.len(),
            firsts.len() - p1_firsts.len(),
            delivered.len() - firsts.len(),
            inversions.len(),
            match (last_p1, first_other) {
                (Some(last_p1), Some(first_other)) => format!(
                    "; last P1 first trigger delivered {} ms {} the first other",
                    (last_p1 - first_other).abs(),
                    if last_p1 <= first_other {
                        "before"
                    } else {
                        "after"
                    }
                ),
                _ => String::new(),
            }
        ),
    );
    let group_keys: HashMap<String, String> =
        pairs(&db, "SELECT DISTINCT e.group_key, e.labels FROM episodes e")
            .into_iter()
            .filter_map(|(key, labels)| {
                let labels: Value = serde_json::from_str(&labels).ok()?;
                Some((key, labels["group"].as_str()?.to_owned()))
            })
            .collect();
    let page_groups: BTreeSet<String> = pairs(
        &db,
        "SELECT p.group_key, o.dedup_key FROM pages p JOIN outbox o ON o.dedup_key = p.dedup_key
         WHERE o.channel = 'pagerduty' AND o.kind = 'trigger' AND o.state = 'delivered'",
    )
    .into_iter()
    .filter_map(|(group_key, _)| group_keys.get(&group_key).cloned())
    .collect();
    let unpaged: Vec<String> = setup
        .groups
        .iter()
        .filter(|g| g.kind.paged() && !page_groups.contains(&g.name))
        .map(|g| format!("{}({})", g.name, g.kind.alertname()))
        .collect();
    let wrongly_paged: Vec<String> = setup
        .groups
        .iter()
        .filter(|g| !g.kind.paged() && page_groups.contains(&g.name))
        .map(|g| g.name.clone())
        .collect();
    report.check(
        "every group that should page paged, P4 never",
        unpaged.is_empty() && wrongly_paged.is_empty(),
        format!(
            "{} of {} groups paged; not paged: {unpaged:?}; P4 groups paged: {wrongly_paged:?}",
            page_groups.len(),
            setup.groups.iter().filter(|g| g.kind.paged()).count()
        ),
    );
    // Accepted events per dedup key and kind against the outbox rows delivered.
    let mut at_fake: BTreeMap<(String, String), i64> = BTreeMap::new();
    for event in &accepted {
        let kind = if event.is_change() {
            "change".to_owned()
        } else {
            event.event_action.clone().unwrap_or_default()
        };
        *at_fake
            .entry((event.dedup_key.clone().unwrap_or_default(), kind))
            .or_default() += 1;
    }
    let mut in_store: BTreeMap<(String, String), i64> = BTreeMap::new();
    for (key, kind) in pairs(
        &db,
        "SELECT dedup_key, kind FROM outbox WHERE channel = 'pagerduty' AND state = 'delivered'",
    ) {
        *in_store.entry((key, kind)).or_default() += 1;
    }
    let resent: i64 = at_fake
        .iter()
        .map(|(key, n)| (n - in_store.get(key).copied().unwrap_or(0)).max(0))
        .sum();
    let unseen: Vec<String> = in_store
        .iter()
        .filter(|(key, n)| at_fake.get(*key).copied().unwrap_or(0) < **n)
        .map(|((key, kind), n)| {
            format!(
                "{kind} {}: {n} delivered in the store, {} at PagerDuty",
                &key[..key.len().min(12)],
                at_fake
                    .get(&(key.clone(), kind.clone()))
                    .copied()
                    .unwrap_or(0)
            )
        })
        .collect();
    let trigger_keys = at_fake.keys().filter(|(_, k)| k == "trigger").count();
    let mut per_key: Vec<i64> = at_fake
        .iter()
        .filter(|((_, kind), _)| kind == "trigger")
        .map(|(_, n)| *n)
        .collect();
    per_key.sort_unstable();
    let resent_keys = at_fake
        .iter()
        .filter(|(key, n)| **n > in_store.get(*key).copied().unwrap_or(0))
        .count();
    report.check(
        "every page delivered once per outbox event",
        unseen.is_empty() && last.outbox_pending == 0,
        format!(
            "{} dedup keys triggered at PagerDuty, {}-{} accepted triggers per key (median {}); {} events accepted beyond the outbox's delivered rows, under {resent_keys} keys (a crash between send and record re-sends under the same key; allowed only with kill -9); {} outbox rows marked delivered that PagerDuty never accepted {:?}; {} still pending",
            trigger_keys,
            per_key.first().copied().unwrap_or(0),
            per_key.last().copied().unwrap_or(0),
            per_key.get(per_key.len() / 2).copied().unwrap_or(0),
            resent,
            unseen.len(),
            &unseen[..unseen.len().min(5)],
            last.outbox_pending
        ),
    );
    if !crash {
        report.check(
            "no duplicate event without a crash",
            resent == 0,
            format!("{resent} events accepted beyond the outbox's delivered rows"),
        );
    }

    // ---- mitigations
    let verdicts = pairs(
        &db,
        "SELECT verdict || '/' || state, count(*) FROM actions GROUP BY 1 ORDER BY 1",
    );
    let runs = scalar(&db, "SELECT count(*) FROM actions WHERE verdict = 'run'");
    let runs_per_target = pairs(
        &db,
        "SELECT target, count(*) FROM actions WHERE verdict = 'run' GROUP BY target HAVING count(*) > 1",
    );
    let duplicate_keys = scalar(
        &db,
        "SELECT count(*) FROM (SELECT key FROM actions GROUP BY key HAVING count(*) > 1)",
    );
    let mut patches: BTreeMap<String, usize> = BTreeMap::new();
    for write in setup.kube.writes() {
        let body: Value = serde_json::from_slice(&write.body).unwrap_or_default();
        let key = body["spec"]["template"]["metadata"]["annotations"]["nightshift.io/action-key"]
            .as_str()
            .unwrap_or("(none)")
            .to_owned();
        *patches.entry(key).or_default() += 1;
    }
    let patched_twice: Vec<&String> = patches
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k)
        .collect();
    let restart_targets = setup
        .groups
        .iter()
        .filter(|g| g.kind == Kind::Restart)
        .count()
        + 1;
    report.check(
        "mitigations bounded by cooldown and budget",
        runs <= i64::from(params.budget)
            && runs_per_target.is_empty()
            && duplicate_keys == 0
            && patched_twice.is_empty()
            && (restart_targets as i64 <= i64::from(params.budget)
                || verdicts.iter().any(|(v, _)| v.starts_with("budget/"))),
        format!(
            "{runs} run (hourly_budget {}, {restart_targets} targets asked for); verdict/state counts: {}; targets run more than once: {runs_per_target:?}; duplicate action keys: {duplicate_keys}; PATCHes at the fake API server: {} for {} action keys, keys patched twice: {patched_twice:?}",
            params.budget,
            verdicts
                .iter()
                .map(|(v, n)| format!("{v}={n}"))
                .collect::<Vec<_>>()
                .join(" "),
            patches.values().sum::<usize>(),
            patches.len()
        ),
    );
    let open_actions = scalar(
        &db,
        "SELECT count(*) FROM actions WHERE state IN ('planned', 'started')",
    );
    let uncertain = scalar(
        &db,
        "SELECT count(*) FROM actions WHERE state = 'uncertain'",
    );
    let uncertain_unpaged = scalar(
        &db,
        "SELECT count(*) FROM actions a WHERE a.state = 'uncertain' AND NOT EXISTS
         (SELECT 1 FROM incident_pages p WHERE p.episode_id = a.episode_id AND p.state = 'paged')",
    );
    let read_back = scalar(
        &db,
        "SELECT count(*) FROM actions WHERE result LIKE '%settled_by_read_back%'
         OR result LIKE '%read-back%'",
    );
    let settled_late = scalar(
        &db,
        "SELECT count(*) FROM incident_pages WHERE reason LIKE '%did not settle in time%'",
    );
    let interrupted = scalar(
        &db,
        "SELECT count(*) FROM incident_pages WHERE reason LIKE '%restart came between%'",
    );
    report.figure(
        "after_verify incidents paged for a slow act stage",
        format!(
            "{settled_late} paged because their act stage had not reported within \
             paging.settle_within (20 s here, 5 min by default); {interrupted} judged at once \
             after a restart cut their act stage before it planned anything"
        ),
    );
    let recovered = setup
        .daemon
        .log()
        .matches("settled an action left started by a crash")
        .count();
    report.check(
        "every started action settled",
        open_actions == 0 && uncertain_unpaged == 0,
        format!(
            "{open_actions} planned/started left; {recovered} settled at restart, {read_back} by reading the target back; {uncertain} uncertain ({uncertain_unpaged} of them not escalated)"
        ),
    );

    // ---- bundles
    let (archives, bundle_problems, shared_manifests) =
        check_bundle_files(&setup.daemon.state_dir());
    let collectors_json = column_text(&db, "SELECT collectors FROM bundles");
    let mut collector_runs = 0;
    let mut collector_shared = 0;
    let mut collector_status: BTreeMap<String, usize> = BTreeMap::new();
    for text in &collectors_json {
        let list: Value = serde_json::from_str(text).unwrap_or_default();
        for collector in list.as_array().into_iter().flatten() {
            collector_runs += 1;
            if collector["shared"] == true {
                collector_shared += 1;
            }
            *collector_status
                .entry(collector["status"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
        }
    }
    let collecting = setup
        .groups
        .iter()
        .filter(|g| matches!(g.kind, Kind::Vastai | Kind::Restart))
        .map(|g| g.size)
        .sum::<usize>();
    let kube_gets = setup
        .kube
        .journal
        .requests()
        .iter()
        .filter(|r| r.method == axum::http::Method::GET)
        .count();
    let prometheus_queries = setup.fake_prometheus.journal.count();
    let status_hits = setup.status.hits();
    let health_hits = setup.health.journal.count();
    report.check(
        "bundles written, complete, evidence shared",
        bundle_problems.is_empty()
            && archives as i64 >= last.episodes
            && collector_shared > 0
            && kube_gets + prometheus_queries < collecting,
        format!(
            "{archives} complete archives for {} incidents, problems: {:?}; {collector_runs} collector outputs, {collector_shared} shared ({shared_manifests} manifests name a shared one), by status {collector_status:?}; requests for {collecting} collecting incidents: fake Kubernetes {kube_gets} GETs, fake Prometheus {prometheus_queries} queries, status page {status_hits} (probe and collector), health {health_hits}",
            last.episodes,
            &bundle_problems[..bundle_problems.len().min(5)],
        ),
    );

    // ---- the process
    if crash {
        report.figure(
            "daemon (last incarnation)",
            format!(
                "peak RSS {:.1} MB, CPU {:.2} s",
                hwm_kb as f64 / 1024.0,
                cpu_after
            ),
        );
    } else {
        let cpu = cpu_after - cpu_before;
        report.check(
            "daemon peak RSS (VmHWM)",
            hwm_kb < 100 * 1024,
            format!("{:.1} MB (target < 100 MB)", hwm_kb as f64 / 1024.0),
        );
        report.figure(
            "daemon CPU (utime+stime)",
            format!(
                "{cpu:.2} s from the storm's start to settled ({:.0} µs per alert, {:.1} % of one core over {elapsed:.1} s)",
                cpu * 1e6 / expected as f64,
                cpu * 100.0 / elapsed
            ),
        );
    }
    report.check(
        "settled in time",
        milestones.all_decided.is_some()
            && milestones.all_bundled.is_some()
            && milestones.actions_settled.is_some()
            && milestones.outbox_drained.is_some(),
        format!(
            "within {} s: decided {}, bundles {}, actions {}, outbox {} (last: {:?})",
            params.settle.as_secs(),
            milestones.all_decided.is_some(),
            milestones.all_bundled.is_some(),
            milestones.actions_settled.is_some(),
            milestones.outbox_drained.is_some(),
            milestones.last
        ),
    );
    setup.pd.assert_no_unexpected();

    if let Some(keep) = &params.keep {
        std::fs::create_dir_all(keep).unwrap();
        let _ = setup.daemon.terminate();
        for name in ["nightshift.db", "nightshift.db-wal", "nightshift.db-shm"] {
            let _ = std::fs::copy(setup.daemon.state_dir().join(name), keep.join(name));
        }
        let _ = std::fs::write(keep.join("daemon.log"), setup.daemon.log());
        let _ = std::fs::copy(&setup.alertmanager.log, keep.join("alertmanager.log"));
        let _ = std::fs::copy(&setup.prometheus.log, keep.join("prometheus.log"));
        println!("kept the store and logs in {}", keep.display());
    }
    report.print(&format!("nightshift {title} summary"));
    if !report.failures().is_empty() {
        let log = setup.daemon.log();
        let all: Vec<&str> = log.lines().collect();
        println!(
            "== daemon log (tail) ==\n{}",
            all[all.len().saturating_sub(40)..].join("\n")
        );
    }
    report
}

/// A PagerDuty trigger as the outbox delivered it (times in ms since the epoch).
struct Trigger {
    priority: i64,
    created: i64,
    delivered: i64,
    /// A trigger of a page PagerDuty already had open.
    update: bool,
}

fn column_text(db: &Connection, sql: &str) -> Vec<String> {
    let mut statement = db.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    statement
        .query_map([], |row| row.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn assert_report(report: &Report) {
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "failed checks:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// The tests

#[test]
fn storm() {
    assert_report(&run(Params::from_env(1000, 20, 8.0, 0, 2, 90.0)));
}

#[test]
fn crash() {
    assert_report(&run(Params::from_env(1000, 20, 12.0, 5, 2, 90.0)));
}
