//! End to end with a real Alertmanager on 127.0.0.1: alerts posted to Alertmanager's API reach
//! nightshift through Alertmanager's own webhook notifier (bearer token from a credentials
//! file), become incidents, resolve, and are silenced and unsilenced through nightshift's sync
//! with Alertmanager's API. A wrong token is refused and creates nothing.
//!
//! The Alertmanager binary is required: without it these tests fail, they never skip.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

/// How long any single step may take before the test fails.
const STEP: Duration = Duration::from_secs(20);

/// The Alertmanager binary: `$ALERTMANAGER_BIN`, else `prometheus-alertmanager` (Debian's name)
/// or `alertmanager` on `PATH`.
fn alertmanager_binary() -> PathBuf {
    let install = ".ci/run installs it (Debian package prometheus-alertmanager); this \
                   end-to-end test needs a real Alertmanager and does not skip without one";
    if let Some(path) = std::env::var_os("ALERTMANAGER_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "ALERTMANAGER_BIN={} is not a file. {install}",
            path.display()
        );
        return path;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["prometheus-alertmanager", "alertmanager"] {
        for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "no Alertmanager binary: looked for prometheus-alertmanager and alertmanager on PATH \
         and in /usr/bin (or set ALERTMANAGER_BIN). {install}"
    );
}

/// A port that was free a moment ago; the caller retries if someone takes it meanwhile.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

fn time_text(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("not an RFC 3339 time ({e}): {text:?}"))
        .with_timezone(&Utc)
}

/// The sum of every series of `name` whose label text contains `filter` (e.g. `outcome="x"`).
fn metric_sum(exposition: &str, name: &str, filter: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let labels = series.strip_prefix(name)?;
            let labels_ok = (labels.is_empty() && filter.is_empty())
                || (labels.starts_with('{') && labels.contains(filter));
            labels_ok.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// A real Alertmanager process with its own configuration and storage directory.
struct Alertmanager {
    dir: tempfile::TempDir,
    base: String,
    child: Option<Child>,
}

impl Alertmanager {
    /// Start on `port` and wait until `/-/ready`; `Err` with the log if it exits first (the
    /// port was taken meanwhile) so that the caller can retry on another port.
    fn start(
        binary: &Path,
        port: u16,
        webhook_url: &str,
        credentials_file: &Path,
    ) -> Result<Alertmanager, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let quote = |text: &str| serde_json::to_string(text).expect("string");
        // JSON strings are valid YAML double-quoted strings.
        let config = format!(
            "global:
  resolve_timeout: 5m
route:
  receiver: nightshift
  group_by: ['alertname']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: nightshift
    webhook_configs:
      - url: {url}
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: {credentials}
",
            url = quote(webhook_url),
            credentials = quote(&credentials_file.display().to_string()),
        );
        let config_path = dir.path().join("alertmanager.yml");
        std::fs::write(&config_path, config).expect("write alertmanager.yml");
        std::fs::create_dir(dir.path().join("data")).expect("data dir");
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).expect("log file");
        let base = format!("http://127.0.0.1:{port}");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--web.external-url={base}"))
            // An empty address turns clustering (gossip on 0.0.0.0:9094) off.
            .arg("--cluster.listen-address=")
            .arg("--log.level=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        let mut alertmanager = Alertmanager {
            dir,
            base,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = alertmanager
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                alertmanager.child = None;
                return Err(format!(
                    "alertmanager exited with {status}:\n{}",
                    alertmanager.log()
                ));
            }
            let address = format!("127.0.0.1:{port}");
            if TcpStream::connect(&address).is_ok()
                && client()
                    .get(&format!("{}/-/ready", alertmanager.base), &[])
                    .status
                    == 200
            {
                return Ok(alertmanager);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "alertmanager was not ready within 15s:\n{}",
                    alertmanager.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("alertmanager.log")).unwrap_or_default()
    }

    fn post_alerts(&self, alerts: &Value) {
        let response = client().post(
            &format!("{}/api/v2/alerts", self.base),
            &[JSON],
            alerts.to_string().as_bytes(),
        );
        assert_eq!(
            response.status, 200,
            "POST /api/v2/alerts: {}",
            response.body
        );
    }

    /// `GET /api/v2/alerts`: the active, silenced and inhibited alerts.
    fn alerts(&self) -> Vec<Value> {
        let response = client().get(&format!("{}/api/v2/alerts", self.base), &[]);
        assert_eq!(
            response.status, 200,
            "GET /api/v2/alerts: {}",
            response.body
        );
        response.json().as_array().cloned().expect("an array")
    }

    fn create_silence(&self, name: &str, value: &str) -> String {
        let now = Utc::now();
        let silence = json!({
            "matchers": [{"name": name, "value": value, "isRegex": false, "isEqual": true}],
            "startsAt": time_text(now),
            "endsAt": time_text(now + chrono::Duration::hours(1)),
            "createdBy": "nightshift e2e test",
            "comment": "silenced by tests/it/e2e_alertmanager.rs",
        });
        let response = client().post(
            &format!("{}/api/v2/silences", self.base),
            &[JSON],
            silence.to_string().as_bytes(),
        );
        assert_eq!(
            response.status, 200,
            "POST /api/v2/silences: {}",
            response.body
        );
        response.json()["silenceID"]
            .as_str()
            .expect("silenceID")
            .to_owned()
    }

    fn delete_silence(&self, id: &str) {
        let response = client().request(
            "DELETE",
            &format!("{}/api/v2/silence/{id}", self.base),
            &[],
            &[],
        );
        assert_eq!(
            response.status, 200,
            "DELETE /api/v2/silence/{id}: {}",
            response.body
        );
    }

    fn metrics(&self) -> String {
        client().get(&format!("{}/metrics", self.base), &[]).body
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child);
        }
    }
}

/// nightshift and an Alertmanager that sends it webhooks and answers its API sync.
struct Stack {
    // Alertmanager stops first, so it does not log failed deliveries to a stopped daemon.
    alertmanager: Alertmanager,
    daemon: Daemon,
    _secrets: tempfile::TempDir,
}

impl Stack {
    /// nightshift accepts `ingest_token`; Alertmanager sends `sent_token`.
    fn start(ingest_token: &str, sent_token: &str) -> Stack {
        let binary = alertmanager_binary();
        let secrets = tempfile::tempdir().expect("tempdir");
        let ingest_token_file = secrets.path().join("ingest_token");
        write_private(&ingest_token_file, &format!("{ingest_token}\n"));
        let sent_token_file = secrets.path().join("alertmanager_webhook_token");
        write_private(&sent_token_file, &format!("{sent_token}\n"));
        let mut failures = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let daemon = Daemon::start(&format!(
                "[auth]\ningest_token_file = \"{}\"\n\n\
                 [reconcile]\ngone_grace = \"30s\"\n\n\
                 [alertmanager]\nurl = \"http://127.0.0.1:{port}\"\nsync_interval = \"1s\"\ntimeout = \"2s\"\n",
                ingest_token_file.display()
            ));
            let webhook_url = format!("{}/webhook", daemon.base);
            match Alertmanager::start(&binary, port, &webhook_url, &sent_token_file) {
                Ok(alertmanager) => {
                    return Stack {
                        alertmanager,
                        daemon,
                        _secrets: secrets,
                    };
                }
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "alertmanager did not start in 3 tries:\n{}",
            failures.join("\n---\n")
        );
    }

    /// Fail with everything needed to tell why.
    fn fail(&self, message: &str) -> ! {
        let tail = |text: String, lines: usize| {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        };
        let incidents = client()
            .get(
                &format!("{}/api/v1/incidents?limit=1000", self.daemon.base),
                &[],
            )
            .body;
        panic!(
            "{message}\n\n== nightshift incidents ==\n{incidents}\n\n== Alertmanager alerts ==\n{}\n\n\
             == nightshift log (tail) ==\n{}\n\n== Alertmanager log (tail) ==\n{}",
            client()
                .get(&format!("{}/api/v2/alerts", self.alertmanager.base), &[])
                .body,
            tail(self.daemon.log(), 60),
            tail(self.alertmanager.log(), 60),
        );
    }

    fn wait<T>(&self, what: &str, check: impl FnMut() -> Option<T>) -> T {
        wait_for(STEP, check)
            .unwrap_or_else(|| self.fail(&format!("timed out after {STEP:?}: {what}")))
    }

    fn incidents(&self) -> Vec<Value> {
        let response = client().get(
            &format!("{}/api/v1/incidents?limit=1000", self.daemon.base),
            &[],
        );
        if response.status != 200 {
            self.fail(&format!(
                "GET /api/v1/incidents: {} {}",
                response.status, response.body
            ));
        }
        response.json()["incidents"]
            .as_array()
            .cloned()
            .expect("incidents array")
    }

    fn incident_of(&self, fingerprint: &str) -> Option<Value> {
        self.incidents()
            .into_iter()
            .find(|incident| incident["fingerprint"] == fingerprint)
    }

    fn status_of(&self, fingerprint: &str) -> Option<String> {
        self.incident_of(fingerprint)
            .and_then(|incident| incident["status"].as_str().map(str::to_owned))
    }

    fn detail(&self, id: &str) -> Value {
        let response = client().get(&format!("{}/api/v1/incidents/{id}", self.daemon.base), &[]);
        if response.status != 200 {
            self.fail(&format!(
                "GET /api/v1/incidents/{id}: {} {}",
                response.status, response.body
            ));
        }
        response.json()
    }

    fn transition_kinds(&self, id: &str) -> Vec<String> {
        self.detail(id)["transitions"]
            .as_array()
            .expect("transitions")
            .iter()
            .map(|t| t["kind"].as_str().expect("kind").to_owned())
            .collect()
    }

    fn nightshift_metrics(&self) -> String {
        client()
            .get(&format!("{}/metrics", self.daemon.base), &[])
            .body
    }

    fn webhook_requests(&self, outcome: &str) -> f64 {
        metric_sum(
            &self.nightshift_metrics(),
            "nightshift_webhook_requests_total",
            &format!("outcome=\"{outcome}\""),
        )
    }

    fn expect_status(&self, fingerprint: &str, expected: &str, context: &str) {
        let status = self.status_of(fingerprint);
        if status.as_deref() != Some(expected) {
            self.fail(&format!(
                "{context}: incident of {fingerprint} is {status:?}, expected {expected:?}"
            ));
        }
    }
}

/// One alert as posted to Alertmanager's API.
fn api_alert(labels: &[(&str, &str)], starts_at: &str, ends_at: Option<&str>) -> Value {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
        .collect();
    let mut alert = json!({
        "labels": labels,
        "annotations": {
            "summary": format!("e2e {}", labels["alertname"].as_str().unwrap_or_default()),
            "runbook_url": "http://runbooks.invalid/e2e",
        },
        "generatorURL": "http://127.0.0.1/e2e-generator",
    });
    // Without startsAt, Alertmanager stamps the alert itself, to the nanosecond.
    if !starts_at.is_empty() {
        alert["startsAt"] = Value::from(starts_at);
    }
    if let Some(ends_at) = ends_at {
        alert["endsAt"] = Value::from(ends_at);
    }
    alert
}

#[test]
fn alerts_fire_resolve_and_are_silenced_through_a_real_alertmanager() {
    let stack = Stack::start("e2e-ingest-token-7c1d", "e2e-ingest-token-7c1d");
    let am = &stack.alertmanager;

    // Prometheus sends startsAt with millisecond precision, and so do the disk alerts. The latency
    // alert is posted without one, so Alertmanager stamps it to the nanosecond; its API then shows
    // that start in milliseconds while its webhooks carry every digit, and the silence step below
    // proves nightshift still matches the two.
    let starts_at =
        DateTime::from_timestamp_millis(Utc::now().timestamp_millis() - 60_000).expect("time");
    let starts_text = time_text(starts_at);
    let disk_1 = [
        ("alertname", "E2eDiskFull"),
        ("host", "web-1"),
        ("severity", "critical"),
    ];
    let disk_2 = [
        ("alertname", "E2eDiskFull"),
        ("host", "web-2"),
        ("severity", "critical"),
    ];
    let latency = [
        ("alertname", "E2eHighLatency"),
        ("instance", "api-1"),
        ("severity", "warning"),
    ];
    am.post_alerts(&json!([
        api_alert(&disk_1, &starts_text, None),
        api_alert(&disk_2, &starts_text, None),
        api_alert(&latency, "", None),
    ]));

    // Alertmanager's own fingerprints, by the label that tells the alerts apart.
    let alerts = stack.wait("Alertmanager lists the 3 alerts", || {
        let alerts = am.alerts();
        (alerts.len() == 3).then_some(alerts)
    });
    let fingerprint_of = |key: &str, value: &str| -> String {
        let alert = alerts
            .iter()
            .find(|a| a["labels"][key] == value)
            .unwrap_or_else(|| {
                stack.fail(&format!("Alertmanager has no alert with {key}={value}"))
            });
        if key == "host" {
            assert_eq!(
                parse_time(alert["startsAt"].as_str().expect("startsAt")),
                starts_at
            );
        }
        alert["fingerprint"]
            .as_str()
            .expect("fingerprint")
            .to_owned()
    };
    let fp_disk_1 = fingerprint_of("host", "web-1");
    let fp_disk_2 = fingerprint_of("host", "web-2");
    let fp_latency = fingerprint_of("instance", "api-1");
    let all = [&fp_disk_1, &fp_disk_2, &fp_latency];

    // 1. Alertmanager delivers them (with the token) and nightshift opens one incident each.
    stack.wait("nightshift shows 3 firing incidents", || {
        let incidents = stack.incidents();
        all.iter()
            .all(|fp| {
                incidents
                    .iter()
                    .any(|i| i["fingerprint"] == fp.as_str() && i["status"] == "firing")
            })
            .then_some(())
    });
    let incidents = stack.incidents();
    if incidents.len() != 3 {
        stack.fail(&format!(
            "expected exactly 3 incidents, got {}",
            incidents.len()
        ));
    }
    let mut ids = std::collections::HashMap::new();
    for (fp, labels) in [
        (&fp_disk_1, &disk_1),
        (&fp_disk_2, &disk_2),
        (&fp_latency, &latency),
    ] {
        let incident = stack.incident_of(fp).expect("incident");
        let id = incident["id"].as_str().expect("id").to_owned();
        assert!(
            id.starts_with(&format!("{fp}-")),
            "incident id {id} does not start with Alertmanager's fingerprint {fp}"
        );
        if fp != &fp_latency {
            assert_eq!(
                parse_time(incident["starts_at"].as_str().expect("starts_at")),
                starts_at
            );
        }
        for (name, value) in labels {
            assert_eq!(incident["labels"][name], *value, "{id}: label {name}");
        }
        assert_eq!(incident["alertname"], labels[0].1, "{id}");
        let detail = stack.detail(&id);
        assert_eq!(
            detail["generator_url"], "http://127.0.0.1/e2e-generator",
            "{id}"
        );
        assert_eq!(
            detail["annotations"]["runbook_url"], "http://runbooks.invalid/e2e",
            "{id}"
        );
        assert_eq!(stack.transition_kinds(&id), ["opened"], "{id}");
        ids.insert(fp.to_string(), id);
    }
    let metrics = stack.nightshift_metrics();
    let accepted = metric_sum(
        &metrics,
        "nightshift_webhook_requests_total",
        "outcome=\"accepted\"",
    );
    let unauthorized = metric_sum(
        &metrics,
        "nightshift_webhook_requests_total",
        "outcome=\"unauthorized\"",
    );
    assert!(accepted > 0.0, "no accepted webhook in:\n{metrics}");
    assert_eq!(
        unauthorized, 0.0,
        "Alertmanager's token was refused:\n{metrics}"
    );

    // 2. Resolve web-1 in Alertmanager (endsAt in the past); send_resolved delivers it.
    let ended = time_text(Utc::now() - chrono::Duration::seconds(1));
    am.post_alerts(&json!([api_alert(&disk_1, &starts_text, Some(&ended))]));
    stack.wait("the incident of web-1 is resolved", || {
        (stack.status_of(&fp_disk_1).as_deref() == Some("resolved")).then_some(())
    });
    stack.expect_status(&fp_disk_2, "firing", "after resolving web-1");
    stack.expect_status(&fp_latency, "firing", "after resolving web-1");
    assert_eq!(
        stack.transition_kinds(&ids[&fp_disk_1]),
        ["opened", "resolved"]
    );
    let resolved = stack.detail(&ids[&fp_disk_1]);
    assert!(resolved["closed_at"].is_string(), "{resolved}");
    assert_eq!(
        parse_time(resolved["ends_at"].as_str().expect("ends_at")),
        parse_time(&ended)
    );

    // 3. Silence the latency alert: no webhook says so, nightshift learns it from the API sync.
    let silence = am.create_silence("alertname", "E2eHighLatency");
    stack.wait("Alertmanager shows the latency alert suppressed", || {
        am.alerts()
            .iter()
            .any(|a| {
                a["fingerprint"] == fp_latency.as_str() && a["status"]["state"] == "suppressed"
            })
            .then_some(())
    });
    stack.wait("the incident of the latency alert is silenced", || {
        (stack.status_of(&fp_latency).as_deref() == Some("silenced")).then_some(())
    });
    let detail = stack.detail(&ids[&fp_latency]);
    let silenced = detail["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .find(|t| t["kind"] == "silenced")
        .unwrap_or_else(|| stack.fail(&format!("no silenced transition in {detail}")));
    assert_eq!(
        silenced["detail"]["source"], "alertmanager_api",
        "{silenced}"
    );
    stack.expect_status(&fp_disk_2, "firing", "after the silence");
    stack.expect_status(&fp_disk_1, "resolved", "after the silence");

    // 4. Expire the silence: back to firing, recorded as unsilenced.
    am.delete_silence(&silence);
    stack.wait("the incident of the latency alert fires again", || {
        (stack.status_of(&fp_latency).as_deref() == Some("firing")).then_some(())
    });
    assert_eq!(
        stack.transition_kinds(&ids[&fp_latency]),
        ["opened", "silenced", "unsilenced"]
    );
    stack.expect_status(&fp_disk_2, "firing", "after the silence expired");
    stack.expect_status(&fp_disk_1, "resolved", "after the silence expired");
    assert_eq!(stack.transition_kinds(&ids[&fp_disk_2]), ["opened"]);

    // Nothing was duplicated or refused along the way, and the sync kept working.
    let incidents = stack.incidents();
    if incidents.len() != 3 {
        stack.fail(&format!(
            "expected exactly 3 incidents at the end, got {}",
            incidents.len()
        ));
    }
    let metrics = stack.nightshift_metrics();
    assert_eq!(
        metric_sum(
            &metrics,
            "nightshift_webhook_requests_total",
            "outcome=\"unauthorized\""
        ),
        0.0,
        "{metrics}"
    );
    assert!(
        metric_sum(
            &metrics,
            "nightshift_alertmanager_sync_total",
            "outcome=\"ok\""
        ) > 0.0,
        "{metrics}"
    );
}

#[test]
fn alertmanager_with_a_wrong_token_is_refused_and_creates_nothing() {
    let stack = Stack::start("e2e-right-token-41aa", "e2e-wrong-token-0000");
    let am = &stack.alertmanager;
    let starts_at = time_text(
        DateTime::from_timestamp_millis(Utc::now().timestamp_millis() - 60_000).expect("time"),
    );
    am.post_alerts(&json!([
        api_alert(
            &[("alertname", "E2eWrongToken"), ("host", "web-1")],
            &starts_at,
            None
        ),
        api_alert(
            &[("alertname", "E2eWrongToken"), ("host", "web-2")],
            &starts_at,
            None
        ),
    ]));

    // Alertmanager tries, is refused with 401, and tries again at the next group_interval.
    stack.wait("nightshift refuses Alertmanager twice", || {
        (stack.webhook_requests("unauthorized") >= 2.0).then_some(())
    });
    stack.wait("Alertmanager counts its failed webhook deliveries", || {
        let failed = metric_sum(
            &am.metrics(),
            "alertmanager_notifications_failed_total",
            "integration=\"webhook\"",
        );
        (failed >= 1.0).then_some(())
    });
    let metrics = stack.nightshift_metrics();
    assert_eq!(
        metric_sum(
            &metrics,
            "nightshift_webhook_requests_total",
            "outcome=\"accepted\""
        ),
        0.0,
        "{metrics}"
    );
    assert!(
        metric_sum(
            &metrics,
            "nightshift_http_unauthorized_total",
            "credential=\"ingest\""
        ) >= 2.0,
        "{metrics}"
    );
    let incidents = stack.incidents();
    if !incidents.is_empty() {
        stack.fail(&format!(
            "a refused webhook created incidents: {incidents:?}"
        ));
    }
    if !stack.alertmanager.log().contains("401") {
        stack.fail("Alertmanager's log does not mention the 401 it got");
    }
}
