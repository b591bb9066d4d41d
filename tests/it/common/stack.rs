//! A running stack for a test: the daemon binary with its runbook installed and the fakes it
//! talks to started, built in one place instead of one `Setup` per test module.
//!
//! ```ignore
//! let stack = Stack::builder()
//!     .vastai_runbook()
//!     .kubernetes(&["vastai"])
//!     .pagerduty()
//!     .ingest_token(true)
//!     .extra("[actions]\nmode = \"enforce\"\n")
//!     .start();
//! stack.post_webhook(&body);
//! ```
//!
//! Rule text given to [`StackBuilder::rules`] may name the fakes: `STATUS_URL` (the status
//! page's `status.json`), `STATUS_BASE` (its base URL), `WEB_URL` (the web fake's path) and
//! `PROMETHEUS_URL`, each replaced once the fakes listen.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use super::{Daemon, JSON, client, http_client, wait_for};
use crate::fakes::kube::FakeKube;
use crate::fakes::pagerduty::{FakeChat, FakePagerDuty, ROUTING_KEY};
use crate::fakes::prometheus::FakePrometheus;
use crate::fakes::statuspage::FakeStatuspage;
use crate::fakes::web::FakeWeb;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The credentials a stack configures when asked to (files beside the config).
pub const INGEST: &str = "Bearer e2e-ingest";
pub const ADMIN: &str = "Bearer e2e-admin";
pub const READ: &str = "Bearer e2e-read";

/// Copy the shipped Vast.ai runbook (`rules/vastai.toml`) and the payloads its `[[test]]`
/// cases name into `rules_dir`, its status page pointed at `status_base` and its health
/// probe at `health_url` when given (the shipped ones would reach out to the world).
pub fn install_vastai_runbook(
    rules_dir: &Path,
    status_base: Option<&str>,
    health_url: Option<&str>,
) {
    let mut runbook = std::fs::read_to_string(Path::new(ROOT).join("rules/vastai.toml"))
        .expect("the shipped runbook");
    if let Some(base) = status_base {
        runbook = runbook.replace("https://status.vast.ai", base);
    }
    if let Some(url) = health_url {
        runbook = runbook.replace("http://vastai-integration.vastai.svc:8080/healthz", url);
    }
    std::fs::create_dir_all(rules_dir.join("payloads")).expect("rules dir");
    std::fs::write(rules_dir.join("vastai.toml"), runbook).expect("write runbook");
    for entry in std::fs::read_dir(Path::new(ROOT).join("rules/payloads")).expect("payloads") {
        let entry = entry.expect("payload");
        std::fs::copy(
            entry.path(),
            rules_dir.join("payloads").join(entry.file_name()),
        )
        .expect("copy payload");
    }
}

/// A notifier of the config and the fake that receives its messages.
struct Notifier {
    name: String,
    slack: bool,
    path: String,
    template: Option<String>,
}

/// What to start; see [`Stack::builder`].
#[derive(Default)]
pub struct StackBuilder {
    vastai: bool,
    rules: Vec<(String, String)>,
    kubernetes: Option<Vec<String>>,
    pagerduty: bool,
    slack_fallback: bool,
    notifiers: Vec<Notifier>,
    statuspage: bool,
    prometheus: bool,
    web: Option<String>,
    ingest_token: bool,
    read_token: bool,
    extra: String,
    env: Vec<(String, String)>,
}

impl StackBuilder {
    /// The shipped Vast.ai runbook (and its payloads), its status page a fake (started) and
    /// its health probe the web fake when one is started.
    pub fn vastai_runbook(mut self) -> Self {
        self.vastai = true;
        self.statuspage = true;
        self
    }

    /// A rule file `rules/<name>` with this text (placeholders: see the module docs).
    pub fn rules(mut self, name: &str, text: &str) -> Self {
        self.rules.push((name.to_owned(), text.to_owned()));
        self
    }

    /// A fake Kubernetes API server, the daemon's kubeconfig pointing at it, and these
    /// namespaces allowed.
    pub fn kubernetes(mut self, namespaces: &[&str]) -> Self {
        self.kubernetes = Some(namespaces.iter().map(|n| (*n).to_owned()).collect());
        self
    }

    /// A fake PagerDuty with one routing key (`primary`, the default), and
    /// `[paging] external_url`.
    pub fn pagerduty(mut self) -> Self {
        self.pagerduty = true;
        self
    }

    /// A fake Slack webhook as the notifier `ops`, the `[paging] fallback`.
    pub fn slack_fallback(mut self) -> Self {
        self.slack_fallback = true;
        self.slack_notifier("ops", "/services/T0/B0/x", None)
    }

    /// A fake Slack webhook at `path` as the notifier `name` (`kind = "slack"`), with this
    /// template when given; the test names it where it wants it (a severity's `notify`).
    pub fn slack_notifier(mut self, name: &str, path: &str, template: Option<&str>) -> Self {
        self.notifiers.push(Notifier {
            name: name.to_owned(),
            slack: true,
            path: path.to_owned(),
            template: template.map(str::to_owned),
        });
        self
    }

    /// A generic JSON webhook receiver at `path` as the notifier `name` (`kind = "webhook"`);
    /// the test names it where it wants it (a severity's `notify`, a fallback).
    pub fn webhook_notifier(mut self, name: &str, path: &str) -> Self {
        self.notifiers.push(Notifier {
            name: name.to_owned(),
            slack: false,
            path: path.to_owned(),
            template: None,
        });
        self
    }

    /// A fake status page (implied by the Vast.ai runbook).
    pub fn statuspage(mut self) -> Self {
        self.statuspage = true;
        self
    }

    /// A fake Prometheus, `[prometheus] urls` pointing at it.
    pub fn prometheus(mut self) -> Self {
        self.prometheus = true;
        self
    }

    /// A fake web server answering `path` (200 until told otherwise).
    pub fn web(mut self, path: &str) -> Self {
        self.web = Some(path.to_owned());
        self
    }

    /// With `true`, the ingest and admin credentials are configured ([`INGEST`], [`ADMIN`]);
    /// with `false` the daemon generates them (and runs in dry-run whatever `[actions]` says).
    pub fn ingest_token(mut self, configured: bool) -> Self {
        self.ingest_token = configured;
        self
    }

    /// The read credential configured too ([`READ`]).
    pub fn read_token(mut self) -> Self {
        self.read_token = true;
        self
    }

    /// TOML appended last, after `[paging]` (so bare keys at its start are `[paging]` keys).
    /// `{dir}` is the state directory's parent.
    pub fn extra(mut self, extra: &str) -> Self {
        self.extra.push_str(extra);
        self
    }

    /// An environment override for the daemon.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Start the fakes, write the config, the credentials and the rules, start the daemon
    /// and wait until it listens.
    pub fn start(self) -> Stack {
        let mut stack = self.prepare();
        stack.daemon.spawn();
        stack
    }

    /// As [`StackBuilder::start`] but the daemon is not started: the test changes what it
    /// must first (puts a fault in front of a fake, mounts a file system), then calls
    /// `stack.daemon.spawn()`.
    pub fn prepare(self) -> Stack {
        crate::fakes::init();
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let kube = self
            .kubernetes
            .as_ref()
            .map(|_| runtime.block_on(FakeKube::start()));
        let pd = self
            .pagerduty
            .then(|| runtime.block_on(FakePagerDuty::start()));
        let receivers: Vec<(String, FakeChat)> = self
            .notifiers
            .iter()
            .map(|notifier| {
                let receiver = if notifier.slack {
                    runtime.block_on(FakeChat::start_slack(&notifier.path))
                } else {
                    runtime.block_on(FakeChat::start(&notifier.path))
                };
                (notifier.name.clone(), receiver)
            })
            .collect();
        let status = self
            .statuspage
            .then(|| runtime.block_on(FakeStatuspage::start()));
        let prometheus = self
            .prometheus
            .then(|| runtime.block_on(FakePrometheus::start()));
        let web = self
            .web
            .as_deref()
            .map(|path| runtime.block_on(FakeWeb::start(path)));

        let mut config = String::from("[rules]\ndir = \"{dir}/rules\"\n");
        if let Some(namespaces) = &self.kubernetes {
            config.push_str(&format!(
                "[kubernetes]\nkubeconfig = \"{{dir}}/kubeconfig\"\nnamespaces = {namespaces:?}\n"
            ));
        }
        if let Some(prometheus) = &prometheus {
            config.push_str(&format!(
                "[prometheus]\nurls = [\"{}\"]\n",
                prometheus.url()
            ));
        }
        let mut auth = String::new();
        if self.ingest_token {
            auth.push_str(
                "ingest_token_file = \"{dir}/ingest\"\nadmin_token_file = \"{dir}/admin\"\n",
            );
        }
        if self.read_token {
            auth.push_str("read_token_file = \"{dir}/read\"\n");
        }
        if !auth.is_empty() {
            config.push_str(&format!("[auth]\n{auth}"));
        }
        if let Some(pd) = &pd {
            config.push_str(&format!(
                "[pagerduty]\nurl = \"{}\"\nrouting_keys = {{ primary = \"{{dir}}/pd-primary\" }}\n\
                 default_routing_key = \"primary\"\n",
                pd.url()
            ));
        }
        for notifier in &self.notifiers {
            let kind = if notifier.slack { "slack" } else { "webhook" };
            config.push_str(&format!(
                "[notifiers.{name}]\nkind = \"{kind}\"\nurl_file = \"{{dir}}/{name}-url\"\n",
                name = notifier.name
            ));
            if let Some(template) = &notifier.template {
                // A TOML basic string: Rust's escapes for ASCII are TOML's.
                config.push_str(&format!("template = {template:?}\n"));
            }
        }
        config.push_str("[paging]\nexternal_url = \"https://nightshift.example\"\n");
        if self.slack_fallback {
            config.push_str("fallback = [\"ops\"]\n");
        }
        config.push_str(&self.extra);

        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let daemon = Daemon::prepare(&config, &env);
        daemon.write_file("ingest", "e2e-ingest\n");
        daemon.write_file("admin", "e2e-admin\n");
        daemon.write_file("read", "e2e-read\n");
        daemon.write_file("pd-primary", &format!("{ROUTING_KEY}\n"));
        for (name, receiver) in &receivers {
            daemon.write_file(&format!("{name}-url"), &format!("{}\n", receiver.url()));
        }
        if let Some(kube) = &kube {
            let kubeconfig = kube.write_kubeconfig(daemon.dir.path());
            std::fs::rename(kubeconfig, daemon.path("kubeconfig")).expect("kubeconfig");
        }
        std::fs::create_dir_all(daemon.path("rules")).expect("rules dir");
        let status_base = status.as_ref().map(FakeStatuspage::base);
        let web_url = web.as_ref().map(FakeWeb::url);
        if self.vastai {
            install_vastai_runbook(
                &daemon.path("rules"),
                status_base.as_deref(),
                web_url.as_deref(),
            );
        }
        for (name, text) in &self.rules {
            let mut text = text.clone();
            if let Some(status) = &status {
                text = text
                    .replace("STATUS_URL", &status.url())
                    .replace("STATUS_BASE", &status.base());
            }
            if let Some(url) = &web_url {
                text = text.replace("WEB_URL", url);
            }
            if let Some(prometheus) = &prometheus {
                text = text.replace("PROMETHEUS_URL", &prometheus.url());
            }
            daemon.write_file(&format!("rules/{name}"), &text);
        }
        Stack {
            daemon,
            runtime,
            ingest_token: self.ingest_token,
            kube,
            pd,
            receivers,
            status,
            prometheus,
            web,
        }
    }
}

/// A daemon and the fakes it talks to; everything stops when dropped (the daemon first).
pub struct Stack {
    pub daemon: Daemon,
    pub runtime: tokio::runtime::Runtime,
    ingest_token: bool,
    kube: Option<FakeKube>,
    pd: Option<FakePagerDuty>,
    receivers: Vec<(String, FakeChat)>,
    status: Option<FakeStatuspage>,
    prometheus: Option<FakePrometheus>,
    web: Option<FakeWeb>,
}

fn started<'a, T>(fake: &'a Option<T>, what: &str) -> &'a T {
    fake.as_ref()
        .unwrap_or_else(|| panic!("the stack was built without {what}"))
}

impl Stack {
    pub fn builder() -> StackBuilder {
        StackBuilder::default()
    }

    pub fn kube(&self) -> &FakeKube {
        started(&self.kube, "kubernetes()")
    }

    pub fn pd(&self) -> &FakePagerDuty {
        started(&self.pd, "pagerduty()")
    }

    /// The Slack fallback `ops`.
    pub fn chat(&self) -> &FakeChat {
        self.notifier("ops")
    }

    /// The fake receiving the messages of the notifier `name`.
    pub fn notifier(&self, name: &str) -> &FakeChat {
        self.receivers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, receiver)| receiver)
            .unwrap_or_else(|| panic!("the stack has no notifier {name:?}"))
    }

    pub fn status(&self) -> &FakeStatuspage {
        started(&self.status, "statuspage()")
    }

    pub fn prometheus(&self) -> &FakePrometheus {
        started(&self.prometheus, "prometheus()")
    }

    pub fn web(&self) -> &FakeWeb {
        started(&self.web, "web()")
    }

    /// POST a webhook body with the ingest credential; the answer as it came.
    pub fn try_post_webhook(&self, body: &str) -> http_client::Response {
        let mut headers = vec![JSON];
        if self.ingest_token {
            headers.push(("Authorization", INGEST));
        }
        client().post(
            &format!("{}/webhook", self.daemon.base),
            &headers,
            body.as_bytes(),
        )
    }

    /// POST a webhook body; it must be acknowledged (200).
    pub fn post_webhook(&self, body: &str) {
        let response = self.try_post_webhook(body);
        assert_eq!(
            response.status,
            200,
            "{}\n{}",
            response.body,
            self.daemon.log()
        );
    }

    /// GET with the read credential (configured or generated).
    pub fn get(&self, path: &str) -> http_client::Response {
        let mut headers = Vec::new();
        if self.daemon.generated_token("read").is_none() {
            headers.push(("Authorization", READ));
        }
        client().get(&format!("{}{path}", self.daemon.base), &headers)
    }

    pub fn metrics(&self) -> String {
        self.get("/metrics").body
    }

    /// Every incident's summary (up to 1000).
    pub fn incidents(&self) -> Vec<serde_json::Value> {
        self.get("/api/v1/incidents?limit=1000").json()["incidents"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn incident(&self, id: &str) -> serde_json::Value {
        self.get(&format!("/api/v1/incidents/{id}")).json()
    }

    /// [`wait_settled`] for this stack's daemon.
    pub fn wait_settled(&self, notifications: u64) {
        wait_settled(|path| self.get(path), notifications, || self.daemon.log());
    }

    /// Wait (bounded) until `check` holds for the fake PagerDuty.
    pub fn wait_pd(&self, seconds: u64, check: impl Fn(&FakePagerDuty) -> bool) -> bool {
        self.runtime
            .block_on(self.pd().wait_for(check, Duration::from_secs(seconds)))
    }

    /// The incident whose labels have `instance`, once `check` holds for its detail; fails
    /// the test (with the daemon's log) after `seconds`.
    pub fn wait_incident(
        &self,
        instance: &str,
        seconds: u64,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        wait_for(Duration::from_secs(seconds), || {
            let id = self
                .incidents()
                .into_iter()
                .find(|i| i["labels"]["instance"] == instance)?["id"]
                .as_str()?
                .to_owned();
            let detail = self.incident(&id);
            check(&detail).then_some(detail)
        })
        .unwrap_or_else(|| {
            panic!(
                "the incident of {instance} never as expected:\n{}",
                self.daemon.log()
            )
        })
    }
}

/// Wait (bounded) until a daemon has processed what it was sent, asking through `get` (a
/// request to its API with the read credential): `notifications` webhooks reconciled by this
/// process (`nightshift_notifications_reconciled_total`), every transition of every incident
/// marked done, and no action still planned or started. This is the positive sign a test
/// waits for before it asserts that something did *not* happen; without it, a check that
/// nothing changed passes when the daemon has simply not got there yet.
pub fn wait_settled(
    get: impl Fn(&str) -> http_client::Response,
    notifications: u64,
    log: impl Fn() -> String,
) {
    let mut last = String::new();
    let settled = wait_for(Duration::from_secs(30), || {
        let metrics = get("/metrics").body;
        let reconciled = metrics
            .lines()
            .find_map(|line| {
                line.strip_prefix("nightshift_notifications_reconciled_total ")?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0);
        if reconciled < notifications as f64 {
            last = format!("{reconciled} of {notifications} notifications reconciled");
            return None;
        }
        let list = get("/api/v1/incidents?limit=1000").json();
        for summary in list["incidents"].as_array()? {
            let id = summary["id"].as_str()?;
            let detail = get(&format!("/api/v1/incidents/{id}")).json();
            let pending_transition = detail["transitions"]
                .as_array()?
                .iter()
                .any(|t| !t["done_at"].is_string());
            let pending_action = detail["actions"]
                .as_array()?
                .iter()
                .any(|a| a["state"] == "planned" || a["state"] == "started");
            if pending_transition || pending_action {
                last = format!("{detail:#}");
                return None;
            }
        }
        Some(())
    });
    assert!(
        settled.is_some(),
        "the daemon never settled: {last}\n{}",
        log()
    );
}

/// Whether the incident `detail` has a transition of `kind` marked done: the positive sign
/// that the daemon processed that event (and wrote, in the same transaction, whatever it
/// causes), before a test asserts that something did not happen.
pub fn transition_done(detail: &serde_json::Value, kind: &str) -> bool {
    detail["transitions"].as_array().is_some_and(|transitions| {
        transitions
            .iter()
            .any(|t| t["kind"] == kind && t["done_at"].is_string())
    })
}
