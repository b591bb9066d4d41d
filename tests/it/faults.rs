//! Proof under fire: each dependency fails in turn while alerts flow. nightshift must keep
//! ingesting (200 for every webhook, an incident for every alert), keep the rest working,
//! say what is wrong (the metric lines, a log line, `/readyz` where it matters) and recover by
//! itself when the fault clears, delivering what it owes once.
//!
//! The faults: PagerDuty unreachable, 500, 429 and slow; the Kubernetes API 500, 403 and slow;
//! Prometheus down; the status page timing out; the store's disk full (`store.max_size_bytes`,
//! a real full tmpfs) and read-only (`chattr +i`); a rule reload with a broken file.
//!
//! Every test runs the real binary against the fakes of `tests/it/fakes` with short timeouts
//! (PagerDuty 1 s, probes 1 s, collectors 2 s) so that slowness shows quickly; each test
//! keeps under ~30 s.

use crate::fakes;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::fakes::kube::{FakeKube, PodFixture};
use crate::fakes::pagerduty::{FakePagerDuty, Mode};
use crate::fakes::statuspage::FakeStatuspage;
use axum::http::Method;
use serde_json::Value;
use sha2::{Digest, Sha256};

const TOKEN: &str = crate::common::stack::INGEST;

/// One runbook exercising every dependency: the status page (`provider-down`), Kubernetes
/// (`pods-down`, and every restart), Prometheus (`errors-high`), an `after_verify` rule whose
/// page depends on its action (`worker-stuck`), and a collector per dependency. Probes are
/// never cached, so a cleared fault shows at the next alert.
const RULES: &str = r#"
[runbook]
name = "faults"

[probe.status]
kind = "statuspage"
url = "STATUS_URL"
timeout = "1s"
cache = "0s"

[probe.pods]
kind = "kubernetes"
namespace = "shop"
workload = "deployment/api"
timeout = "1s"
cache = "0s"

[probe.errors]
kind = "prometheus"
query = 'sum(rate(http_requests_total{code=~"5.."}[5m]))'
timeout = "1s"
cache = "0s"

[action.restart]
kind = "kubernetes.rollout_restart"
namespace = "shop"
workload = "deployment/api"
cooldown = "1s"

[collector.error-rate]
kind = "prometheus_range"
query = 'sum(rate(http_requests_total{code=~"5.."}[5m]))'
look_back = "10m"
timeout = "2s"

[collector.logs]
kind = "kubernetes_logs"
namespace = "shop"
workload = "deployment/api"
timeout = "2s"

[collector.status-page]
kind = "http"
url = "STATUS_URL"
timeout = "2s"

[[rule]]
name = "provider-down"
matchers = ['alertname="ProviderDown"']
severity = "P1"
probes = ["status"]
collect = ["status-page", "error-rate"]
summary = "provider down on {{ labels.instance }}"

[[rule.branch]]
name = "our-side"
when = 'probe.status.indicator == "none"'
actions = ["restart"]
note = "status page says all is well: restart"

[[rule.branch]]
name = "provider-incident"
otherwise = true
note = "provider incident {{ probe.status.indicator }}"

[rule.on_probe_failure]
note = "could not confirm: status page probe failed ({{ probe.status.error }})"

[[rule]]
name = "pods-down"
matchers = ['alertname="PodsDown"']
severity = "P1"
probes = ["pods"]
collect = ["logs"]
summary = "pods down on {{ labels.instance }}"

[[rule.branch]]
name = "not-ready"
when = 'probe.pods.ready < probe.pods.total'
actions = ["restart"]
note = "{{ probe.pods.ready }}/{{ probe.pods.total }} ready: restart"

[[rule.branch]]
name = "all-ready"
otherwise = true
note = "all pods ready"

[rule.on_probe_failure]
note = "could not confirm: Kubernetes probe failed ({{ probe.pods.error }})"

[[rule]]
name = "errors-high"
matchers = ['alertname="ErrorsHigh"']
severity = "P2"
probes = ["errors"]
collect = ["error-rate"]
summary = "errors high on {{ labels.instance }}"

[[rule.branch]]
name = "measured"
otherwise = true
note = "error rate {{ probe.errors.value }}"

[rule.on_probe_failure]
note = "could not confirm: Prometheus probe failed ({{ probe.errors.error }})"

[[rule]]
name = "worker-stuck"
matchers = ['alertname="WorkerStuck"']
severity = "P3"
summary = "worker stuck on {{ labels.instance }}"

[[rule.branch]]
name = "kick"
otherwise = true
actions = ["restart"]
note = "restart the API"
"#;

// ---------------------------------------------------------------------------------------------
// A switch in front of a fake: up, it relays TCP to the fake; down, it closes every connection
// (new and established) at once, as a dependency that went away.

struct Switch {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    changed: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Switch {
    async fn start(upstream: &str) -> Switch {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("upstream address");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let down = Arc::new(AtomicBool::new(false));
        let (changed, _) = tokio::sync::watch::channel(false);
        let task = {
            let down = down.clone();
            let changed = changed.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if down.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let mut went_down = changed.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await
                        else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = went_down.wait_for(|down| *down) => {}
                        }
                    });
                }
            })
        };
        Switch {
            addr,
            down,
            changed,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        self.changed.send_replace(down);
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon with every dependency faked.

/// Undoes a file-system fault (immutable flags, a mount) before the state directory is
/// removed: declared before the daemon in [`Setup`], so it is dropped first.
struct FsGuard(Box<dyn FnMut() + Send + Sync>);

impl Drop for FsGuard {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// The common stack, with the two switches and the file-system fault it may carry.
struct Setup {
    guard: Option<FsGuard>,
    stack: Stack,
    pd_switch: Switch,
    prom_switch: Switch,
}

impl std::ops::Deref for Setup {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        &self.stack
    }
}

impl std::ops::DerefMut for Setup {
    fn deref_mut(&mut self) -> &mut Stack {
        &mut self.stack
    }
}

/// The daemon with the runbook above, in enforce mode, paging the fake PagerDuty (behind a
/// switch) with a Slack fallback, Prometheus behind a switch, a fake API server holding
/// deployment shop/api (two pods, one not ready), and `extra` appended to `[paging]`.
fn setup(extra: &str) -> Setup {
    setup_with(extra, &[], |_| None)
}

/// As [`setup`], with environment overrides, and `before_spawn` run on the prepared state
/// before the daemon starts (to mount a file system on the state directory).
fn setup_with(
    extra: &str,
    env: &[(&str, &str)],
    before_spawn: impl FnOnce(&Daemon) -> Option<FsGuard>,
) -> Setup {
    let mut builder = Stack::builder()
        .kubernetes(&["shop"])
        .prometheus()
        .statuspage()
        .pagerduty()
        .slack_fallback()
        .ingest_token(true)
        .rules("faults.toml", RULES)
        .extra(&format!(
            "{extra}[actions]\nmode = \"enforce\"\nhourly_budget = 1000\n\
             [bundles]\nbefore_action_wait = \"3s\"\nshare_for = \"0s\"\n"
        ))
        // Deliveries give up quickly, so that a dead PagerDuty shows within the tests' bounds.
        .env("NIGHTSHIFT_PAGERDUTY__TIMEOUT", "1s")
        .env("NIGHTSHIFT_NOTIFIERS__OPS__TIMEOUT", "1s");
    for (key, value) in env {
        builder = builder.env(key, value);
    }
    let mut stack = builder.prepare();
    // PagerDuty and Prometheus are reached through switches the tests turn off.
    let pd_switch = stack.runtime.block_on(Switch::start(&stack.pd().url()));
    let prom_switch = stack
        .runtime
        .block_on(Switch::start(&stack.prometheus().url()));
    let config = std::fs::read_to_string(&stack.daemon.config)
        .unwrap()
        .replace(&stack.pd().url(), &pd_switch.url())
        .replace(&stack.prometheus().url(), &prom_switch.url());
    std::fs::write(&stack.daemon.config, config).unwrap();
    let deployment = stack.kube().put(fakes::kube::workload(
        "Deployment",
        "shop",
        "api",
        &[("app", "api")],
    ));
    let stored = stack.kube().get(&deployment).unwrap();
    stack.kube().put(fakes::kube::replica_set(
        "shop",
        "api-7d4f",
        &stored,
        &[("app", "api")],
    ));
    for (pod, ready) in [("api-7d4f-a", true), ("api-7d4f-b", false)] {
        stack.kube().put(
            PodFixture::new("shop", pod, &[("app", "api")])
                .ready(ready)
                .to_json(),
        );
        stack
            .kube()
            .set_log("shop", pod, "app", false, "12:00:01 ERROR upstream 503\n");
    }
    let guard = before_spawn(&stack.daemon);
    stack.daemon.spawn();
    Setup {
        guard,
        stack,
        pd_switch,
        prom_switch,
    }
}

fn rules_text(status: &FakeStatuspage) -> String {
    RULES.replace("STATUS_URL", &status.url())
}

impl Setup {
    fn post(&self, body: &str) -> http_client::Response {
        client().post(
            &format!("{}/webhook", self.daemon.base),
            &[JSON, ("Authorization", TOKEN)],
            body.as_bytes(),
        )
    }

    /// Post one alert `name` in its own Alertmanager group; it must be acknowledged.
    fn alert(&self, name: &str, group: &str) {
        let response = self.post(&alert_body(name, group));
        assert_eq!(
            response.status,
            200,
            "{group}: {}\n{}",
            response.body,
            self.daemon.log()
        );
    }

    fn get(&self, path: &str) -> http_client::Response {
        client().get(&format!("{}{path}", self.daemon.base), &[])
    }

    fn metrics(&self) -> String {
        self.get("/metrics").body
    }

    /// The value of one series (`name{labels}` exactly as exposed), `None` when absent.
    fn metric(&self, series: &str) -> Option<f64> {
        metric_in(&self.metrics(), series)
    }

    /// Wait (bounded) until the series (0 while absent) satisfies `check`; fail with the
    /// exposition.
    fn wait_metric(&self, series: &str, seconds: u64, check: impl Fn(f64) -> bool) -> f64 {
        wait_for(Duration::from_secs(seconds), || {
            Some(self.metric(series).unwrap_or(0.0)).filter(|value| check(*value))
        })
        .unwrap_or_else(|| {
            panic!(
                "{series} never as expected:\n{}\n--- log ---\n{}",
                self.metrics(),
                self.daemon.log()
            )
        })
    }

    /// Every incident, in full, keyed by its Alertmanager group name.
    fn incidents(&self) -> BTreeMap<String, Value> {
        let list = self.get("/api/v1/incidents?limit=1000").json();
        let mut all = BTreeMap::new();
        for summary in list["incidents"].as_array().cloned().unwrap_or_default() {
            let id = summary["id"].as_str().unwrap();
            let detail = self.get(&format!("/api/v1/incidents/{id}")).json();
            let group = detail["group_key"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches("{}:{alertname=\"")
                .trim_end_matches("\"}")
                .to_owned();
            all.insert(group, detail);
        }
        all
    }

    /// Wait until the incident of each group exists and satisfies `check`.
    fn wait_incidents(
        &self,
        groups: &[String],
        seconds: u64,
        check: impl Fn(&Value) -> bool,
    ) -> BTreeMap<String, Value> {
        let mut last = BTreeMap::new();
        let found = wait_for(Duration::from_secs(seconds), || {
            last = self.incidents();
            groups
                .iter()
                .all(|group| last.get(group).is_some_and(&check))
                .then(|| last.clone())
        });
        found.unwrap_or_else(|| {
            panic!(
                "incidents of {groups:?} never as expected:\n{last:#?}\n--- log ---\n{}",
                self.daemon.log()
            )
        })
    }

    /// The incident's bundle manifest, once its initial bundle is written.
    fn manifest(&self, id: &str, seconds: u64) -> Value {
        wait_for(Duration::from_secs(seconds), || {
            let response = self.get(&format!("/api/v1/incidents/{id}/bundle"));
            if response.status != 200 {
                return None;
            }
            let files = untar(response.body_bytes());
            serde_json::from_slice(files.get("manifest.json")?).ok()
        })
        .unwrap_or_else(|| panic!("no bundle for {id}:\n{}", self.daemon.log()))
    }

    fn wait_pd(&self, seconds: u64, check: impl Fn(&FakePagerDuty) -> bool) -> bool {
        self.runtime
            .block_on(self.pd().wait_for(check, Duration::from_secs(seconds)))
    }

    /// Each group's page reached PagerDuty once: one accepted trigger, or two when the bundle
    /// was written after the page went out (the page is then sent again, same dedup key, with
    /// the bundle's link).
    /// Wait (bounded) until no incident has an event left in the outbox (each one answered
    /// or given up): the positive sign that nothing more will be sent, before a test asserts
    /// how often something was.
    fn wait_outbox_empty(&self, seconds: u64) {
        let mut last = BTreeMap::new();
        let empty = wait_for(Duration::from_secs(seconds), || {
            last = self.incidents();
            last.values()
                .all(|incident| {
                    incident["paging"]["events"]
                        .as_array()
                        .is_none_or(|events| events.iter().all(|e| e["state"] != "pending"))
                })
                .then_some(())
        });
        assert!(
            empty.is_some(),
            "events still pending:\n{last:#?}\n--- log ---\n{}",
            self.daemon.log()
        );
    }

    fn assert_paged_once(&self, groups: &[String]) {
        for group in groups {
            let triggers: Vec<bool> = self
                .pd()
                .accepted_for(&dedup(group))
                .into_iter()
                .filter(|event| event.is_trigger())
                .map(|event| {
                    event.body["payload"]["custom_details"]
                        .to_string()
                        .contains("/bundle")
                })
                .collect();
            let plain = triggers.iter().filter(|link| !**link).count();
            let with_link = triggers.len() - plain;
            assert!(
                (plain == 1 && with_link <= 1) || (plain == 0 && with_link == 1),
                "{group}: accepted triggers (with the bundle link?) {triggers:?}\n{}",
                self.daemon.log()
            );
        }
    }

    fn log_has(&self, needle: &str) -> bool {
        self.daemon.log().contains(needle)
    }

    /// The log lines holding every one of `needles`.
    fn log_lines(&self, needles: &[&str]) -> Vec<String> {
        self.daemon
            .log()
            .lines()
            .filter(|line| needles.iter().all(|needle| line.contains(needle)))
            .map(str::to_owned)
            .collect()
    }

    fn assert_log(&self, needles: &[&str]) {
        assert!(
            !self.log_lines(needles).is_empty(),
            "no log line with {needles:?}:\n{}",
            self.daemon.log()
        );
    }

    fn readyz(&self) -> http_client::Response {
        self.get("/readyz")
    }

    /// Rewrite the config with `extra` appended and reload it through `/-/reload`.
    fn reload_with(&self, config: &str, extra: &str) -> http_client::Response {
        std::fs::write(&self.daemon.config, format!("{config}{extra}")).unwrap();
        client().post(
            &format!("{}/-/reload", self.daemon.base),
            &[("Authorization", ADMIN)],
            b"",
        )
    }
}

fn metric_in(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    })
}

fn alert_body(name: &str, group: &str) -> String {
    webhook(
        group,
        &[(
            name,
            &format!("{group}:9100"),
            "firing",
            "2026-11-28T03:00:00Z",
        )],
        0,
    )
}

/// A webhook whose body cannot fit in a store that may not grow (a 200 KB description).
fn big_alert_body(group: &str) -> String {
    serde_json::json!({
        "version": "4", "status": "firing", "receiver": "nightshift",
        "groupKey": format!("{{}}:{{alertname=\"{group}\"}}"),
        "alerts": [{"status": "firing",
                    "labels": {"alertname": "ErrorsHigh", "instance": format!("{group}:9100"), "severity": "critical"},
                    "annotations": {"description": "x".repeat(200_000)},
                    "startsAt": "2026-11-28T03:00:00Z"}],
    })
    .to_string()
}

fn dedup(group: &str) -> String {
    hex::encode(Sha256::digest(
        format!("{{}}:{{alertname=\"{group}\"}}").as_bytes(),
    ))
}

fn groups(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|n| format!("{prefix}{n}")).collect()
}

/// The manifest's entry for one collector.
fn collector<'a>(manifest: &'a Value, name: &str) -> &'a Value {
    manifest["collectors"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no collector {name} in {manifest:#}"))
}

fn latest_decision(incident: &Value) -> &Value {
    incident["decisions"]
        .as_array()
        .and_then(|d| d.last())
        .unwrap_or(&Value::Null)
}

fn decided(incident: &Value) -> bool {
    !latest_decision(incident).is_null()
}

fn note_of(incident: &Value) -> String {
    latest_decision(incident)["trace"]["note"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn paged_and_delivered(incident: &Value) -> bool {
    incident["paging"]["state"] == "paged"
        && incident["paging"]["events"]
            .as_array()
            .is_some_and(|events| {
                events
                    .iter()
                    .any(|e| e["channel"] == "pagerduty" && e["kind"] == "trigger")
                    && events
                        .iter()
                        .filter(|e| e["channel"] == "pagerduty" && e["kind"] == "trigger")
                        .all(|e| e["state"] == "delivered")
            })
}

/// Decided, every action its decision chose recorded, and none of them still running.
fn settled_actions(incident: &Value) -> bool {
    let chosen = latest_decision(incident)["trace"]["actions"]
        .as_array()
        .map_or(0, Vec::len);
    decided(incident)
        && incident["actions"].as_array().is_some_and(|actions| {
            actions.len() >= chosen
                && actions.iter().all(|a| {
                    a["state"] != "planned"
                        && a["state"] != "started"
                        && a["state"] != "not_applied"
                })
        })
}

fn action_states(incident: &Value) -> Vec<String> {
    incident["actions"]
        .as_array()
        .map(|actions| {
            actions
                .iter()
                .map(|a| {
                    format!(
                        "{}/{}",
                        a["verdict"].as_str().unwrap_or(""),
                        a["state"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// PagerDuty

/// PagerDuty misbehaves (`fault` turns it on, `clear` off) while alerts flow: ingest, decisions,
/// actions and bundles go on; the pages wait in the outbox (metrics, log, the incident's page
/// events), go to the fallback after `fallback_after`, and each reaches PagerDuty once when it
/// is back. Returns the setup for fault-specific checks.
fn pagerduty_fault(
    fault: impl Fn(&Setup),
    clear: impl Fn(&Setup),
    error: &str,
    exactly_once: bool,
) {
    let setup = setup("fallback_after = \"3s\"\n");
    // Before: paged at once, its bundle written.
    let before = groups("PdBefore", 1);
    setup.alert("ProviderDown", &before[0]);
    let seen = setup.wait_incidents(&before, 20, |i| {
        paged_and_delivered(i) && settled_actions(i)
    });
    setup.manifest(seen[&before[0]]["id"].as_str().unwrap(), 20);
    assert!(setup.wait_pd(10, |pd| !pd.accepted_for(&dedup(&before[0])).is_empty()));
    setup.wait_metric(
        "nightshift_outbox_pending{notifier=\"pagerduty\"}",
        10,
        |v| v == 0.0,
    );
    let before_triggers = setup.pd().accepted_for(&dedup(&before[0])).len();

    fault(&setup);
    let during = groups("PdDuring", 3);
    for group in &during {
        // One restart each: past the action's 1 s cooldown.
        std::thread::sleep(Duration::from_millis(1500));
        setup.alert("ProviderDown", group);
    }
    // The rest works: every alert decided, its restart done, its bundle written.
    let seen = setup.wait_incidents(&during, 20, |i| decided(i) && settled_actions(i));
    for group in &during {
        let incident = &seen[group];
        assert_eq!(
            latest_decision(incident)["branch"],
            "our-side",
            "{incident:#}"
        );
        assert_eq!(
            action_states(incident),
            ["run/done"],
            "{group}: {incident:#}"
        );
        let manifest = setup.manifest(incident["id"].as_str().unwrap(), 20);
        assert_eq!(
            collector(&manifest, "status-page")["status"],
            "ok",
            "{manifest:#}"
        );
    }
    // It says what is wrong: each page pending on the incident (while PagerDuty fails one event
    // at a time probes it, carrying its answer; the others wait behind it), retries counted,
    // the outbox's backlog and its age, a log line with PagerDuty's answer; the fallback took
    // the pages, saying why.
    let pending_trigger = |e: &Value| {
        e["channel"] == "pagerduty" && e["kind"] == "trigger" && e["state"] == "pending"
    };
    let seen = setup.wait_incidents(&during, 20, |i| {
        i["paging"]["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(pending_trigger))
    });
    let errors: Vec<String> = seen
        .values()
        .flat_map(|i| {
            i["paging"]["events"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|e| e["last_error"].as_str().map(str::to_owned))
        .collect();
    assert!(
        errors.iter().any(|text| text.contains(error)),
        "no page event says {error:?}: {errors:?}"
    );
    setup.wait_metric(
        "nightshift_notify_events_total{notifier=\"pagerduty\",outcome=\"retry\"}",
        10,
        |v| v >= 1.0,
    );
    setup.wait_metric(
        "nightshift_outbox_pending{notifier=\"pagerduty\"}",
        10,
        |v| v >= during.len() as f64,
    );
    setup.wait_metric("nightshift_outbox_oldest_pending_seconds", 10, |v| v >= 1.0);
    setup.assert_log(&[
        "event not delivered; will retry",
        "channel=pagerduty",
        error,
    ]);
    setup.wait_metric("nightshift_notify_fallbacks_total", 15, |v| {
        v >= during.len() as f64
    });
    let fell_back = setup.runtime.block_on(setup.chat().wait_for(
        |chat| {
            during.iter().all(|g| {
                chat.texts()
                    .iter()
                    .any(|t| t.contains(&format!("provider down on {g}:9100")))
            })
        },
        Duration::from_secs(10),
    ));
    assert!(
        fell_back,
        "{:?}\n{}",
        setup.chat().texts(),
        setup.daemon.log()
    );
    setup.assert_log(&["page handed to the fallback notifiers"]);
    // Ready: nightshift itself works; PagerDuty's trouble is for the alerts above.
    let ready = setup.readyz();
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(
        setup.metric("nightshift_store_writable"),
        Some(1.0),
        "the store is not the problem"
    );

    // Recovery: every pending page reaches PagerDuty by itself, once.
    clear(&setup);
    let delivered = setup.wait_pd(25, |pd| {
        during
            .iter()
            .all(|g| pd.accepted_for(&dedup(g)).iter().any(|e| e.is_trigger()))
    });
    assert!(delivered, "{}", setup.daemon.log());
    setup.wait_metric(
        "nightshift_outbox_pending{notifier=\"pagerduty\"}",
        15,
        |v| v == 0.0,
    );
    assert_eq!(
        setup.metric("nightshift_outbox_oldest_pending_seconds"),
        Some(0.0)
    );
    setup.wait_incidents(&during, 10, paged_and_delivered);
    // The change events of the restarts arrive too, one per restart.
    assert!(setup.wait_pd(10, |pd| pd.accepted_changes().len() > during.len()));
    setup.wait_outbox_empty(20);
    if exactly_once {
        assert_eq!(setup.pd().accepted_changes().len(), 1 + during.len());
        setup.assert_paged_once(&during);
    }
    assert_eq!(
        setup.pd().accepted_for(&dedup(&before[0])).len(),
        before_triggers,
        "the page sent before the fault is not sent again"
    );
    setup.pd().assert_no_unexpected();
}

#[test]
fn pagerduty_unreachable_pages_wait_in_the_outbox_go_to_the_fallback_and_are_delivered_once() {
    pagerduty_fault(
        |s| s.pd_switch.set_down(true),
        |s| s.pd_switch.set_down(false),
        "cannot reach pagerduty",
        true,
    );
}

#[test]
fn pagerduty_500_pages_wait_in_the_outbox_go_to_the_fallback_and_are_delivered_once() {
    pagerduty_fault(
        |s| s.pd().set_mode(Mode::Error500),
        |s| s.pd().set_mode(Mode::Accept),
        "PagerDuty error 500",
        true,
    );
}

#[test]
fn pagerduty_429_pages_wait_in_the_outbox_go_to_the_fallback_and_are_delivered_once() {
    pagerduty_fault(
        |s| s.pd().set_mode(Mode::RateLimit429),
        |s| s.pd().set_mode(Mode::Accept),
        "PagerDuty rate limit (429)",
        true,
    );
}

#[test]
fn pagerduty_hanging_past_the_timeout_pages_wait_in_the_outbox_and_are_delivered_once() {
    pagerduty_fault(
        |s| s.pd().set_mode(Mode::Hang),
        |s| s.pd().set_mode(Mode::Accept),
        "no answer within 1s",
        true,
    );
}

/// Slow but answering: PagerDuty keeps what it received after nightshift gave up, so a page may
/// arrive more than once under its dedup key (which PagerDuty folds into one alert).
#[test]
fn pagerduty_slow_past_the_timeout_pages_are_retried_and_delivered() {
    pagerduty_fault(
        |s| s.pd().set_mode(Mode::Slow(Duration::from_millis(2500))),
        |s| s.pd().set_mode(Mode::Accept),
        "no answer within 1s",
        false,
    );
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

/// Every path nightshift asks the API server for deployment shop/api: the probe and the
/// restart (the deployment, its pods), the logs collector (the pods' logs), the restart's patch.
fn kube_paths() -> Vec<(Method, String)> {
    let deployment = fakes::kube::workload_path("Deployment", "shop", "api");
    vec![
        (Method::GET, deployment.clone()),
        (Method::PATCH, deployment),
        (Method::GET, "/api/v1/namespaces/shop/pods".to_owned()),
        (
            Method::GET,
            "/api/v1/namespaces/shop/pods/api-7d4f-a/log".to_owned(),
        ),
        (
            Method::GET,
            "/api/v1/namespaces/shop/pods/api-7d4f-b/log".to_owned(),
        ),
    ]
}

struct KubeFault {
    /// In the Kubernetes probe's error (and so in the decision's note).
    probe_error: &'static str,
    /// The logs collector's status in the bundle's manifest and in its metric.
    collector_status: &'static str,
    /// The restarts' states while the API server fails.
    action_state: &'static [&'static str],
}

/// The Kubernetes API server misbehaves while alerts flow: ingest and pages go on (P1 at once,
/// a P3 whose restart failed at once too), probes fail into `on_probe_failure`, restarts fail
/// without blocking anything, bundles note the failed collector; all of it in metrics and the
/// log; once the API server is back, the next alert is probed, acted on and collected normally.
fn kubernetes_fault(fault: impl Fn(&FakeKube), expect: KubeFault) {
    let setup = setup("");
    let before = groups("KubeBefore", 1);
    setup.alert("PodsDown", &before[0]);
    let seen = setup.wait_incidents(&before, 20, |i| {
        paged_and_delivered(i) && settled_actions(i)
    });
    assert_eq!(action_states(&seen[&before[0]]), ["run/done"]);
    let manifest = setup.manifest(seen[&before[0]]["id"].as_str().unwrap(), 20);
    assert_eq!(collector(&manifest, "logs")["status"], "ok", "{manifest:#}");

    fault(setup.kube());
    let probed = groups("KubeProbe", 2);
    let acted = groups("KubeAct", 1);
    let later = groups("KubeLater", 2);
    let posted = Instant::now();
    for group in &probed {
        setup.alert("PodsDown", group);
    }
    // Past the restart's cooldown: this one runs.
    std::thread::sleep(Duration::from_millis(1500));
    setup.alert("ProviderDown", &acted[0]);
    std::thread::sleep(Duration::from_millis(1500));
    // Two at once: the second's restart is skipped (in flight or cooldown), sharing the
    // first's outcome.
    for group in &later {
        setup.alert("WorkerStuck", group);
    }
    // Pages go at once, whatever the API server does.
    let all: Vec<String> = [probed.clone(), acted.clone()].concat();
    setup.wait_incidents(&all, 10, paged_and_delivered);
    assert!(
        posted.elapsed() < Duration::from_secs(12),
        "pages waited for the API server: {:?}",
        posted.elapsed()
    );
    // The probe failed: no guess, the rule's on_probe_failure, saying why.
    let seen = setup.wait_incidents(&probed, 20, decided);
    for group in &probed {
        let incident = &seen[group];
        assert_eq!(
            latest_decision(incident)["branch"],
            "on_probe_failure",
            "{incident:#}"
        );
        let note = note_of(incident);
        assert!(
            note.starts_with("could not confirm: Kubernetes probe failed (")
                && note.contains(expect.probe_error),
            "{note}"
        );
        assert!(incident["actions"].as_array().is_some_and(Vec::is_empty));
        let manifest = setup.manifest(incident["id"].as_str().unwrap(), 20);
        let logs = collector(&manifest, "logs");
        assert_eq!(logs["status"], expect.collector_status, "{manifest:#}");
        assert!(
            logs["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{logs:#}"
        );
    }
    // The restart asked for by a healthy probe: it ends as the API server lets it.
    let seen = setup.wait_incidents(&acted, 20, settled_actions);
    let states = action_states(&seen[&acted[0]]);
    assert!(
        states.len() == 1
            && expect
                .action_state
                .iter()
                .any(|s| states[0] == format!("run/{s}")),
        "{states:?}: {:#}",
        seen[&acted[0]]
    );
    // A P3 whose restart did not work pages at once, saying so; so does the one that shared
    // its outcome.
    if !expect.action_state.contains(&"done") {
        let seen = setup.wait_incidents(&later, 20, paged_and_delivered);
        for group in &later {
            let reason = seen[group]["paging"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(
                reason.contains("restart on deployment/shop/api"),
                "{group}: {reason}"
            );
        }
    }
    // Said: in the metrics and the log.
    let metrics = setup.metrics();
    for (series, at_least) in [
        ("nightshift_probe_results_total{outcome=\"failed\"}", 2.0),
        (
            "nightshift_decisions_total{branch_kind=\"on_probe_failure\",rule=\"pods-down\",severity=\"P1\"}",
            2.0,
        ),
        (
            &format!(
                "nightshift_bundle_collectors_total{{kind=\"kubernetes_logs\",status=\"{}\"}}",
                expect.collector_status
            ),
            2.0,
        ),
    ] {
        assert!(
            metric_in(&metrics, series).is_some_and(|v| v >= at_least),
            "{series} < {at_least}:\n{metrics}"
        );
    }
    if !expect.action_state.contains(&"done") {
        let failed: f64 = expect
            .action_state
            .iter()
            .filter_map(|state| {
                metric_in(
                    &metrics,
                    &format!(
                        "nightshift_actions_total{{kind=\"kubernetes.rollout_restart\",outcome=\"{state}\"}}"
                    ),
                )
            })
            .sum();
        assert!(failed >= 2.0, "the restart and the P3's:\n{metrics}");
    }
    setup.assert_log(&["collector did not finish cleanly", "collector=logs"]);
    setup.assert_log(&[
        "decision recorded",
        "rule=pods-down",
        "branch=on_probe_failure",
    ]);
    let ready = setup.readyz();
    assert_eq!(ready.status, 200, "{}", ready.body);

    // Recovery: the next alert is probed, acted on and collected as before.
    setup.kube().clear_faults();
    std::thread::sleep(Duration::from_millis(1500));
    let after = groups("KubeAfter", 1);
    setup.alert("PodsDown", &after[0]);
    let seen = setup.wait_incidents(&after, 30, |i| paged_and_delivered(i) && settled_actions(i));
    assert_eq!(latest_decision(&seen[&after[0]])["branch"], "not-ready");
    assert_eq!(
        action_states(&seen[&after[0]]),
        ["run/done"],
        "{:#}",
        seen[&after[0]]
    );
    let manifest = setup.manifest(seen[&after[0]]["id"].as_str().unwrap(), 20);
    assert_eq!(collector(&manifest, "logs")["status"], "ok", "{manifest:#}");
    setup.wait_outbox_empty(20);
    setup.assert_paged_once(&[before, probed, acted, after].concat());
    setup.pd().assert_no_unexpected();
}

#[test]
fn kubernetes_api_500_probes_fail_safe_restarts_fail_and_pages_still_go() {
    kubernetes_fault(
        |kube| {
            for (method, path) in kube_paths() {
                kube.fail(method, &path, 500);
            }
        },
        KubeFault {
            probe_error: "500",
            collector_status: "failed",
            action_state: &["failed", "uncertain"],
        },
    );
}

#[test]
fn kubernetes_api_403_probes_fail_safe_restarts_fail_and_pages_still_go() {
    kubernetes_fault(
        |kube| {
            for (method, path) in kube_paths() {
                kube.fail(method, &path, 403);
            }
        },
        KubeFault {
            probe_error: "403",
            collector_status: "failed",
            action_state: &["failed"],
        },
    );
}

#[test]
fn kubernetes_api_slow_probes_time_out_and_pages_do_not_wait() {
    kubernetes_fault(
        |kube| {
            for (method, path) in kube_paths() {
                kube.delay(method, &path, Duration::from_secs(3));
            }
        },
        KubeFault {
            probe_error: "timed out after 1s",
            collector_status: "timed_out",
            action_state: &["done"],
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Prometheus, the status page

#[test]
fn prometheus_down_probes_fail_safe_bundles_note_the_failed_collector_and_it_recovers() {
    let setup = setup("");
    let before = groups("PromBefore", 1);
    setup.alert("ErrorsHigh", &before[0]);
    let seen = setup.wait_incidents(&before, 20, paged_and_delivered);
    assert_eq!(latest_decision(&seen[&before[0]])["branch"], "measured");
    let manifest = setup.manifest(seen[&before[0]]["id"].as_str().unwrap(), 20);
    assert_eq!(
        collector(&manifest, "error-rate")["status"],
        "ok",
        "{manifest:#}"
    );

    setup.prom_switch.set_down(true);
    let probed = groups("PromProbe", 2);
    let acted = groups("PromAct", 1);
    for group in &probed {
        setup.alert("ErrorsHigh", group);
    }
    setup.alert("ProviderDown", &acted[0]);
    // Pages go, the decision takes on_probe_failure and says why, the restart asked for by a
    // healthy status page runs; every bundle is written, noting the failed collector.
    let all: Vec<String> = [probed.clone(), acted.clone()].concat();
    let seen = setup.wait_incidents(&all, 20, |i| paged_and_delivered(i) && settled_actions(i));
    for group in &probed {
        let incident = &seen[group];
        assert_eq!(
            latest_decision(incident)["branch"],
            "on_probe_failure",
            "{incident:#}"
        );
        let note = note_of(incident);
        assert!(
            note.starts_with("could not confirm: Prometheus probe failed (")
                && !note.contains("()"),
            "{note}"
        );
    }
    assert_eq!(latest_decision(&seen[&acted[0]])["branch"], "our-side");
    assert_eq!(action_states(&seen[&acted[0]]), ["run/done"]);
    for group in &all {
        let manifest = setup.manifest(seen[group]["id"].as_str().unwrap(), 20);
        let rate = collector(&manifest, "error-rate");
        assert_eq!(rate["status"], "failed", "{manifest:#}");
        assert!(
            rate["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{rate:#}"
        );
        if group == &acted[0] {
            assert_eq!(
                collector(&manifest, "status-page")["status"],
                "ok",
                "{manifest:#}"
            );
        }
    }
    // Said: metrics, log; ready.
    let metrics = setup.metrics();
    for (series, at_least) in [
        ("nightshift_probe_results_total{outcome=\"failed\"}", 2.0),
        (
            "nightshift_decisions_total{branch_kind=\"on_probe_failure\",rule=\"errors-high\",severity=\"P2\"}",
            2.0,
        ),
        (
            "nightshift_bundle_collectors_total{kind=\"prometheus_range\",status=\"failed\"}",
            3.0,
        ),
    ] {
        assert!(
            metric_in(&metrics, series).is_some_and(|v| v >= at_least),
            "{series} < {at_least}:\n{metrics}"
        );
    }
    setup.assert_log(&[
        "collector did not finish cleanly",
        "collector=error-rate",
        "failed",
    ]);
    setup.assert_log(&[
        "decision recorded",
        "rule=errors-high",
        "branch=on_probe_failure",
    ]);
    let ready = setup.readyz();
    assert_eq!(ready.status, 200, "{}", ready.body);

    // Back: the next alert is measured and its evidence collected.
    setup.prom_switch.set_down(false);
    let after = groups("PromAfter", 1);
    setup.alert("ErrorsHigh", &after[0]);
    let seen = setup.wait_incidents(&after, 20, paged_and_delivered);
    assert_eq!(latest_decision(&seen[&after[0]])["branch"], "measured");
    let manifest = setup.manifest(seen[&after[0]]["id"].as_str().unwrap(), 20);
    assert_eq!(
        collector(&manifest, "error-rate")["status"],
        "ok",
        "{manifest:#}"
    );
    setup.wait_outbox_empty(20);
    setup.assert_paged_once(&[before, all, after].concat());
    setup.pd().assert_no_unexpected();
}

#[test]
fn a_status_page_timing_out_means_no_action_pages_at_once_and_it_recovers() {
    let setup = setup("");
    let before = groups("StatusBefore", 1);
    setup.alert("ProviderDown", &before[0]);
    let seen = setup.wait_incidents(&before, 20, |i| {
        paged_and_delivered(i) && settled_actions(i)
    });
    assert_eq!(action_states(&seen[&before[0]]), ["run/done"]);

    setup.status().set_delay(Duration::from_secs(3));
    let during = groups("StatusSlow", 3);
    let posted = Instant::now();
    for group in &during {
        setup.alert("ProviderDown", group);
    }
    // P1: paged at once (the probe's 1 s timeout, not the page's 3 s), no restart on a guess.
    let seen = setup.wait_incidents(&during, 10, |i| {
        paged_and_delivered(i) && settled_actions(i)
    });
    assert!(
        posted.elapsed() < Duration::from_secs(8),
        "pages waited for the status page: {:?}",
        posted.elapsed()
    );
    for group in &during {
        let incident = &seen[group];
        assert_eq!(
            latest_decision(incident)["branch"],
            "on_probe_failure",
            "{incident:#}"
        );
        assert_eq!(
            note_of(incident),
            "could not confirm: status page probe failed (timed out after 1s)"
        );
        assert!(incident["actions"].as_array().is_some_and(Vec::is_empty));
        let manifest = setup.manifest(incident["id"].as_str().unwrap(), 20);
        let page = collector(&manifest, "status-page");
        assert_eq!(page["status"], "timed_out", "{manifest:#}");
        assert_eq!(
            collector(&manifest, "error-rate")["status"],
            "ok",
            "{manifest:#}"
        );
    }
    assert_eq!(
        setup.kube().writes().len(),
        1,
        "only the restart from before the fault"
    );
    let metrics = setup.metrics();
    for (series, at_least) in [
        ("nightshift_probe_results_total{outcome=\"failed\"}", 3.0),
        (
            "nightshift_decisions_total{branch_kind=\"on_probe_failure\",rule=\"provider-down\",severity=\"P1\"}",
            3.0,
        ),
        (
            "nightshift_bundle_collectors_total{kind=\"http\",status=\"timed_out\"}",
            3.0,
        ),
    ] {
        assert!(
            metric_in(&metrics, series).is_some_and(|v| v >= at_least),
            "{series} < {at_least}:\n{metrics}"
        );
    }
    setup.assert_log(&[
        "collector did not finish cleanly",
        "collector=status-page",
        "timed_out",
    ]);
    setup.assert_log(&[
        "decision recorded",
        "rule=provider-down",
        "branch=on_probe_failure",
    ]);
    let ready = setup.readyz();
    assert_eq!(ready.status, 200, "{}", ready.body);

    // Back: the next alert is confirmed and acted on.
    setup.status().set_delay(Duration::ZERO);
    let after = groups("StatusAfter", 1);
    setup.alert("ProviderDown", &after[0]);
    let seen = setup.wait_incidents(&after, 20, |i| paged_and_delivered(i) && settled_actions(i));
    assert_eq!(latest_decision(&seen[&after[0]])["branch"], "our-side");
    assert_eq!(action_states(&seen[&after[0]]), ["run/done"]);
    let manifest = setup.manifest(seen[&after[0]]["id"].as_str().unwrap(), 20);
    assert_eq!(
        collector(&manifest, "status-page")["status"],
        "ok",
        "{manifest:#}"
    );
    setup.wait_outbox_empty(20);
    setup.assert_paged_once(&[before, during, after].concat());
    setup.pd().assert_no_unexpected();
}

// ---------------------------------------------------------------------------------------------
// The store

const STORE_PAGE: &str = "nightshift/self/store";

/// Post a refused body once more (as Alertmanager does) and ask /readyz right after.
fn refused_then_readyz(
    setup: &Setup,
    body: &str,
) -> (http_client::Response, http_client::Response) {
    let response = setup.post(body);
    (response, setup.readyz())
}

/// The store fails (`fail`) after some alerts were acknowledged, and comes back (`restore`).
/// Meanwhile ingest answers 503 with Retry-After (what Alertmanager retries), /readyz says why,
/// the metrics and the log say so, and reads go on. Once it is back, Alertmanager's retries are
/// taken, nothing acknowledged before is lost, and every page goes out once.
fn store_fault(
    setup: &Setup,
    fail: impl FnOnce(),
    restore: impl FnOnce(),
    body: fn(&str) -> String,
    reason: &str,
    kind: &str,
) {
    let before = groups("StoreBefore", 4);
    for group in &before {
        setup.alert("ErrorsHigh", group);
    }
    setup.wait_incidents(&before, 20, paged_and_delivered);
    assert_eq!(setup.readyz().status, 200);

    fail();
    let refused = groups("StoreFull", 3);
    for group in &refused {
        let response = setup.post(&body(group));
        assert_eq!(
            response.status,
            503,
            "{group}: {}\n{}",
            response.body,
            setup.daemon.log()
        );
        assert_eq!(response.header("Retry-After"), Some("1"));
        assert_eq!(
            response.json()["error"],
            "store unavailable",
            "{}",
            response.body
        );
        assert!(
            response.json()["message"]
                .as_str()
                .is_some_and(|m| m.contains(reason))
        );
        assert_eq!(response.json()["kind"], kind, "{}", response.body);
    }
    // Said: /readyz with the reason (asked right after a refusal), the metrics, the log.
    let mut last = None;
    let said = wait_for(Duration::from_secs(10), || {
        let (response, ready) = refused_then_readyz(setup, &body(&refused[0]));
        assert_eq!(response.status, 503, "{}", response.body);
        let told = ready.status == 503
            && ready.body.starts_with("not ready: store is not writable: ")
            && ready.body.contains(reason);
        last = Some(ready.body);
        told.then_some(())
    });
    assert!(said.is_some(), "/readyz: {last:?}");
    let metrics = setup.metrics();
    assert!(
        metric_in(
            &metrics,
            "nightshift_webhook_requests_total{outcome=\"store_unavailable\"}"
        )
        .is_some_and(|v| v >= refused.len() as f64),
        "{metrics}"
    );
    assert!(
        metric_in(
            &metrics,
            "nightshift_store_errors_total{operation=\"ingest\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "{metrics}"
    );
    let zero = wait_for(Duration::from_secs(10), || {
        let _ = setup.post(&body(&refused[0]));
        (setup.metric("nightshift_store_writable") == Some(0.0)).then_some(())
    });
    assert!(
        zero.is_some(),
        "nightshift_store_writable never 0:\n{}",
        setup.metrics()
    );
    setup.assert_log(&["store write failed", "operation=\"ingest\"", reason]);
    // Reads go on: what was acknowledged is there to see.
    let listed = setup.get("/api/v1/incidents?limit=1000");
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(
        listed.json()["incidents"].as_array().map(Vec::len),
        Some(before.len())
    );

    // Space comes back: Alertmanager's retries of the refused webhooks are taken.
    restore();
    for group in &refused {
        let taken = wait_for(Duration::from_secs(15), || {
            (setup.post(&body(group)).status == 200).then_some(())
        });
        assert!(
            taken.is_some(),
            "{group} refused still:\n{}",
            setup.daemon.log()
        );
    }
    let ready = setup.readyz();
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    setup.wait_metric("nightshift_store_writable", 10, |v| v == 1.0);
    setup.assert_log(&["store is writable again"]);
    // Nothing acknowledged is lost; everything is decided and paged, once.
    let all: Vec<String> = [before, refused].concat();
    setup.wait_incidents(&all, 30, |i| decided(i) && paged_and_delivered(i));
    assert_eq!(setup.incidents().len(), all.len());
    setup.wait_outbox_empty(20);
    setup.assert_paged_once(&all);
    setup.pd().assert_no_unexpected();
}

/// While the store stays failing, /readyz stays 503, `nightshift_store_writable` stays 0, the
/// log does not call it writable, and nightshift pages about itself after
/// `store_failing_after` (1 s here); when it is back, the page resolves.
fn store_stays_failing(
    setup: &Setup,
    fail: impl FnOnce(),
    restore: impl FnOnce(),
    body: fn(&str) -> String,
    kind: &str,
) {
    setup.alert("ErrorsHigh", "SteadyBefore");
    setup.wait_incidents(&["SteadyBefore".to_owned()], 20, paged_and_delivered);
    fail();
    let response = setup.post(&body("SteadyFull"));
    assert_eq!(response.status, 503, "{}", response.body);
    let failed_at = Instant::now();
    let mut answers = Vec::new();
    while failed_at.elapsed() < Duration::from_secs(4) {
        let ready = setup.readyz();
        answers.push((
            failed_at.elapsed().as_millis(),
            ready.status,
            ready.body.trim().to_owned(),
            setup.metric("nightshift_store_writable"),
        ));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        answers
            .iter()
            .all(|(_, status, _, writable)| *status == 503 && *writable == Some(0.0)),
        "the store still fails, yet: {answers:#?}\n{}",
        setup.daemon.log()
    );
    assert!(
        !setup.log_has("store is writable again"),
        "{}",
        setup.daemon.log()
    );
    assert!(
        setup.wait_pd(10, |pd| !pd.accepted_for(STORE_PAGE).is_empty()),
        "no self-page:\n{}",
        setup.daemon.log()
    );
    assert_eq!(
        setup.metric("nightshift_self_page_active{reason=\"store\"}"),
        Some(1.0)
    );
    let triggers: Vec<_> = setup
        .pd()
        .accepted_for(STORE_PAGE)
        .into_iter()
        .filter(|e| e.is_trigger())
        .collect();
    assert!(
        !triggers.is_empty()
            && triggers
                .iter()
                .all(|e| e.body["payload"]["custom_details"]["store_error"] == kind),
        "the self-page names the kind {kind}: {triggers:#?}"
    );
    restore();
    let taken = wait_for(Duration::from_secs(15), || {
        (setup.post(&body("SteadyFull")).status == 200).then_some(())
    });
    assert!(taken.is_some(), "{}", setup.daemon.log());
    assert!(setup.wait_pd(20, |pd| {
        pd.accepted_for(STORE_PAGE).iter().any(|e| e.is_resolve())
    }));
}

/// Reload `[store] max_size_bytes` and wait until the store writer applied it.
fn cap_store(setup: &Setup, config: &str, max_bytes: u64) {
    let applied = if max_bytes == 0 {
        "store size not capped max_bytes=0".to_owned()
    } else {
        format!("store size cap applied max_bytes={max_bytes} ")
    };
    let count = |log: &str| log.matches(&applied).count();
    // Counted before the reload: the writer may apply the cap before the reload answers.
    let before = count(&setup.daemon.log());
    let response = setup.reload_with(config, &format!("[store]\nmax_size_bytes = {max_bytes}\n"));
    assert_eq!(response.status, 200, "{}", response.body);
    let seen = wait_for(Duration::from_secs(10), || {
        (count(&setup.daemon.log()) > before).then_some(())
    });
    assert!(seen.is_some(), "{}", setup.daemon.log());
}

fn store_config(setup: &Setup) -> String {
    std::fs::read_to_string(&setup.daemon.config).unwrap()
}

#[test]
fn a_full_store_max_size_bytes_refuses_with_503_loses_nothing_and_recovers_by_itself() {
    let setup = setup("store_failing_after = \"1s\"\n");
    let config = store_config(&setup);
    store_fault(
        &setup,
        || cap_store(&setup, &config, 4096),
        || cap_store(&setup, &config, 0),
        big_alert_body,
        "database or disk is full",
        "full",
    );
}

#[test]
fn a_store_that_stays_full_stays_not_ready_and_pages_about_itself() {
    let setup = setup("store_failing_after = \"1s\"\n");
    let config = store_config(&setup);
    store_stays_failing(
        &setup,
        || cap_store(&setup, &config, 4096),
        || cap_store(&setup, &config, 0),
        big_alert_body,
        "full",
    );
}

/// Whether `chattr +i` works here (root with CAP_LINUX_IMMUTABLE, on ext4/xfs/btrfs).
fn immutable_flags_work(dir: &Path) -> bool {
    let probe = dir.join("chattr-probe");
    std::fs::write(&probe, "x").unwrap();
    let set = Command::new("chattr").arg("+i").arg(&probe).status();
    let worked = set.is_ok_and(|s| s.success()) && std::fs::write(&probe, "y").is_err();
    let _ = Command::new("chattr").arg("-i").arg(&probe).status();
    let _ = std::fs::remove_file(&probe);
    worked
}

fn chattr(flag: &str, dir: &Path) {
    let status = Command::new("chattr")
        .args(["-R", flag])
        .arg(dir)
        .status()
        .expect("chattr");
    assert!(status.success(), "chattr -R {flag} {}", dir.display());
}

/// Turns a fault on or off.
type Fault = Box<dyn FnOnce()>;

/// Make the state directory read-only for root: every file and directory in it immutable
/// (`chattr -R +i`; a read-only remount is refused while the database is open for writing).
/// `None` (the test is skipped) where immutable flags do not work.
fn read_only_fault(setup: &mut Setup) -> Option<(Fault, Fault)> {
    if !immutable_flags_work(setup.daemon.dir.path()) {
        eprintln!("skipped: chattr +i does not work here (needs root and ext4/xfs/btrfs)");
        return None;
    }
    let state = setup.daemon.state_dir();
    setup.guard = Some(FsGuard(Box::new({
        let state = state.clone();
        move || {
            let _ = Command::new("chattr")
                .args(["-R", "-i"])
                .arg(&state)
                .status();
        }
    })));
    let again = state.clone();
    Some((
        Box::new(move || chattr("+i", &state)),
        Box::new(move || chattr("-i", &again)),
    ))
}

#[test]
fn a_read_only_store_refuses_with_503_loses_nothing_and_recovers_by_itself() {
    let mut setup = setup("store_failing_after = \"1s\"\n");
    let Some((fail, restore)) = read_only_fault(&mut setup) else {
        return;
    };
    store_fault(
        &setup,
        fail,
        restore,
        |group| alert_body("ErrorsHigh", group),
        "disk I/O error",
        "io",
    );
}

#[test]
fn a_read_only_store_stays_not_ready_and_pages_about_itself() {
    let mut setup = setup("store_failing_after = \"1s\"\n");
    let Some((fail, restore)) = read_only_fault(&mut setup) else {
        return;
    };
    store_stays_failing(
        &setup,
        fail,
        restore,
        |group| alert_body("ErrorsHigh", group),
        "io",
    );
}

/// A real full disk: the state directory on a 16 MiB tmpfs, filled up by another file, then
/// freed.
#[test]
fn a_store_on_a_full_disk_refuses_with_503_loses_nothing_and_recovers_by_itself() {
    let mut mounted = false;
    let setup = setup_with("store_failing_after = \"1s\"\n", &[], |daemon| {
        let state = daemon.state_dir();
        std::fs::create_dir_all(&state).unwrap();
        let mount = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "nightshift-faults"])
            .arg(&state)
            .output();
        mounted = mount.is_ok_and(|m| m.status.success());
        mounted.then(|| {
            FsGuard(Box::new(move || {
                let _ = Command::new("umount").arg("-l").arg(&state).status();
            }))
        })
    });
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    let filler = setup.daemon.state_dir().join("filler");
    store_fault(
        &setup,
        || {
            use std::io::Write;
            let mut file = std::fs::File::create(&filler).unwrap();
            let chunk = vec![0u8; 64 * 1024];
            while file
                .write_all(&chunk)
                .and_then(|()| file.sync_data())
                .is_ok()
            {}
        },
        || std::fs::remove_file(&filler).unwrap(),
        big_alert_body,
        "database or disk is full",
        "full",
    );
}

// ---------------------------------------------------------------------------------------------
// A rule reload with a broken file

/// The runbook with a typo in a condition (`probe.status.indicatr`), and the line its error is
/// reported at: the `[[rule.branch]]` holding it (two lines above the `when`).
fn broken_rules(setup: &Setup) -> (String, usize) {
    let good = rules_text(setup.status());
    let broken = good.replace(
        "when = 'probe.status.indicator == \"none\"'",
        "when = 'probe.status.indicatr == \"none\"'",
    );
    let lines: Vec<&str> = broken.lines().collect();
    let when = lines
        .iter()
        .position(|l| l.contains("indicatr"))
        .expect("the broken line");
    let branch = lines[..when]
        .iter()
        .rposition(|l| *l == "[[rule.branch]]")
        .expect("its branch");
    (broken, branch + 1)
}

fn reload(setup: &Setup) -> http_client::Response {
    client().post(
        &format!("{}/-/reload", setup.daemon.base),
        &[("Authorization", ADMIN)],
        b"",
    )
}

#[test]
fn a_broken_rule_file_on_reload_keeps_the_running_rules_and_says_where() {
    let mut setup = setup("");
    let before = groups("RulesBefore", 1);
    setup.alert("ProviderDown", &before[0]);
    let seen = setup.wait_incidents(&before, 20, settled_actions);
    assert_eq!(latest_decision(&seen[&before[0]])["rule"], "provider-down");

    let (broken, line) = broken_rules(&setup);
    setup.daemon.write_file("rules/faults.toml", &broken);
    // /-/reload: 400 with every error as file:line, nothing changed.
    let response = reload(&setup);
    assert_eq!(response.status, 400, "{}", response.body);
    let answer = response.json();
    assert_eq!(
        answer["error"],
        "reload failed; the running configuration is kept"
    );
    let located = format!("faults.toml:{line}");
    let errors: Vec<String> = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains(&located) && e.contains("indicatr")),
        "{located} not in {errors:#?}"
    );
    // Said: the reload metrics and an ERROR line with the location.
    let metrics = setup.metrics();
    for (series, value) in [
        ("nightshift_config_last_reload_successful", 0.0),
        ("nightshift_config_reloads_total{outcome=\"failure\"}", 1.0),
        ("nightshift_rules_loads_total{outcome=\"failure\"}", 1.0),
        ("nightshift_rules_loaded", 4.0),
    ] {
        assert_eq!(
            metric_in(&metrics, series),
            Some(value),
            "{series}:\n{metrics}"
        );
    }
    setup.assert_log(&[
        "ERROR",
        "configuration reload failed; keeping the running configuration",
        &located,
    ]);
    // SIGHUP does the same.
    setup.daemon.signal(libc::SIGHUP);
    setup.wait_metric(
        "nightshift_config_reloads_total{outcome=\"failure\"}",
        10,
        |v| v == 2.0,
    );
    assert_eq!(
        setup.metric("nightshift_config_last_reload_successful"),
        Some(0.0)
    );
    // The running rules keep working: the next alert is decided by them, not the default rule.
    let during = groups("RulesDuring", 1);
    std::thread::sleep(Duration::from_millis(1100));
    setup.alert("ProviderDown", &during[0]);
    let seen = setup.wait_incidents(&during, 20, |i| {
        settled_actions(i) && paged_and_delivered(i)
    });
    assert_eq!(latest_decision(&seen[&during[0]])["rule"], "provider-down");
    assert_eq!(latest_decision(&seen[&during[0]])["branch"], "our-side");
    assert_eq!(action_states(&seen[&during[0]]), ["run/done"]);
    let ready = setup.readyz();
    assert_eq!(ready.status, 200, "{}", ready.body);

    // A restart with the broken file starts on the last good rules, degraded, and says so.
    setup.daemon.kill9();
    setup.daemon.spawn();
    let ready = setup.readyz();
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(
        ready.body.starts_with("ready (degraded: "),
        "{}",
        ready.body
    );
    assert_eq!(
        setup.metric("nightshift_rules_last_load_successful"),
        Some(0.0)
    );
    setup.assert_log(&["ERROR", "rule file error", &located]);
    let restarted = groups("RulesRestarted", 1);
    std::thread::sleep(Duration::from_millis(1100));
    setup.alert("ProviderDown", &restarted[0]);
    let seen = setup.wait_incidents(&restarted, 20, settled_actions);
    assert_eq!(
        latest_decision(&seen[&restarted[0]])["rule"],
        "provider-down"
    );

    // Fixed: the reload succeeds and every signal clears.
    setup
        .daemon
        .write_file("rules/faults.toml", &rules_text(setup.status()));
    let response = reload(&setup);
    assert_eq!(response.status, 200, "{}", response.body);
    let metrics = setup.metrics();
    for (series, value) in [
        ("nightshift_config_last_reload_successful", 1.0),
        ("nightshift_rules_last_load_successful", 1.0),
        ("nightshift_rules_loaded", 4.0),
    ] {
        assert_eq!(
            metric_in(&metrics, series),
            Some(value),
            "{series}:\n{metrics}"
        );
    }
    let ready = setup.readyz();
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
}

#[test]
fn after_a_refused_rule_reload_the_rules_metric_and_readyz_say_the_files_are_not_in_use() {
    let setup = setup("");
    let (broken, line) = broken_rules(&setup);
    setup.daemon.write_file("rules/faults.toml", &broken);
    assert_eq!(reload(&setup).status, 400);
    assert_eq!(
        setup.metric("nightshift_rules_last_load_successful"),
        Some(0.0),
        "{}",
        setup.metrics()
    );
    let ready = setup.readyz();
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(
        ready.body.starts_with("ready (degraded: ")
            && ready.body.contains(&format!("faults.toml:{line}")),
        "{}",
        ready.body
    );
}

// ---------------------------------------------------------------------------------------------
// What the log and the metrics must say, and do not yet

#[test]
fn a_restart_the_api_server_refuses_is_logged_with_its_error() {
    let setup = setup("");
    for (method, path) in kube_paths() {
        setup.kube().fail(method, &path, 403);
    }
    let group = groups("LogAct", 1);
    setup.alert("ProviderDown", &group[0]);
    let seen = setup.wait_incidents(&group, 20, settled_actions);
    assert_eq!(action_states(&seen[&group[0]]), ["run/failed"]);
    let lines = setup.log_lines(&["restart", "deployment/shop/api", "403"]);
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" ERROR ") || l.contains(" WARN ")),
        "no log line says the restart failed:\n{}",
        setup.daemon.log()
    );
}

#[test]
fn a_failed_probe_says_which_dependency_failed_and_why() {
    let setup = setup("");
    setup.status().set_delay(Duration::from_secs(3));
    let group = groups("ProbeLog", 1);
    setup.alert("ProviderDown", &group[0]);
    setup.wait_incidents(&group, 20, decided);
    assert!(
        !setup
            .log_lines(&["faults/status", "timed out after 1s"])
            .is_empty(),
        "no log line names the failed probe:\n{}",
        setup.daemon.log()
    );
    // The metric counts failures; the log line says which probe and why.
    assert_eq!(
        setup.metric("nightshift_probe_results_total{outcome=\"failed\"}"),
        Some(1.0),
        "{}",
        setup.metrics()
    );
}

#[test]
fn log_lines_name_the_incident_they_are_about() {
    let setup = setup("");
    let alerts = [
        ("ProviderDown", "provider-down"),
        ("PodsDown", "pods-down"),
        ("ErrorsHigh", "errors-high"),
        ("WorkerStuck", "worker-stuck"),
    ];
    let all = groups("Spans", alerts.len());
    std::thread::scope(|scope| {
        for ((name, _), group) in alerts.iter().zip(&all) {
            let setup = &setup;
            scope.spawn(move || setup.alert(name, group));
        }
    });
    let seen = setup.wait_incidents(&all, 30, settled_actions);
    let mut wrong = Vec::new();
    for ((_, rule), group) in alerts.iter().zip(&all) {
        let id = seen[group]["id"].as_str().unwrap();
        for line in setup.log_lines(&["decision recorded", &format!("rule={rule} severity=")]) {
            let own = format!("episode{{episode=\"{id}\"");
            if !line.contains(&own) || line.matches("episode{").count() != 1 {
                wrong.push(format!("{id}: {line}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "lines about another incident or none:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn evidence_is_collected_again_once_the_api_server_is_back() {
    let setup = setup_with("", &[("NIGHTSHIFT_BUNDLES__SHARE_FOR", "5m")], |_| None);
    for (method, path) in kube_paths() {
        setup.kube().fail(method, &path, 500);
    }
    let during = groups("ShareDuring", 1);
    setup.alert("PodsDown", &during[0]);
    let seen = setup.wait_incidents(&during, 20, decided);
    let manifest = setup.manifest(seen[&during[0]]["id"].as_str().unwrap(), 20);
    assert_eq!(
        collector(&manifest, "logs")["status"],
        "failed",
        "{manifest:#}"
    );

    setup.kube().clear_faults();
    let after = groups("ShareAfter", 1);
    setup.alert("PodsDown", &after[0]);
    let seen = setup.wait_incidents(&after, 20, decided);
    assert_eq!(latest_decision(&seen[&after[0]])["branch"], "not-ready");
    let manifest = setup.manifest(seen[&after[0]]["id"].as_str().unwrap(), 20);
    assert_eq!(collector(&manifest, "logs")["status"], "ok", "{manifest:#}");
}
