//! daemon: the one wiring function that starts every part (store, server, Alertmanager sync,
//! watchdog, signals), reloads what can change at runtime, and shuts down in order.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::act::governor::Mode;
use crate::act::mitigate::ModeSwitch;
use crate::auth::{Credentials, Missing};
use crate::clock::{SharedClock, SystemClock};
use crate::config::{self, ActionMode, AlertmanagerConfig, Config};
use crate::episodes::worker::{SharedRules, Worker};
use crate::probes::{ProbeSettings, Prober};
use crate::rules::LoadOptions;
use crate::server::{self, AppState};
use crate::store::{Store, StoreSettings};
use crate::systemd::Notifier;
use crate::telemetry::{self, LogReload, Metrics};

/// The file in the state directory that holds the address actually bound (useful with port 0).
pub const ADDRESS_FILE: &str = "nightshift.addr";

/// Re-reads the config file on SIGHUP or `POST /-/reload` and applies what can change at
/// runtime: credentials, log level, store retention and caps, reconcile and Alertmanager
/// settings. An invalid file keeps the running state and says why.
pub struct Reloader {
    path: Option<PathBuf>,
    env: Vec<(String, String)>,
    current: Mutex<Config>,
    credentials: Arc<RwLock<Arc<Credentials>>>,
    store: Store,
    log: Option<LogReload>,
    alertmanager: watch::Sender<AlertmanagerConfig>,
    metrics: Arc<Metrics>,
    notifier: Notifier,
    rules: SharedRules,
    /// Why the rules in use are not the configured ones, if they are not; shown by /readyz.
    rules_degraded: Arc<RwLock<Option<String>>>,
    /// Routing keys, notifiers and the fallback chain; swapped whole on reload.
    delivery: Arc<crate::page::notify::deliver::Deliverer>,
    /// The act stage's mode, switched by `[actions] mode`.
    mode: Arc<ModeSwitch>,
    /// Why actions run dry against the configuration, if they do; shown by /readyz.
    actions_note: Arc<RwLock<Option<String>>>,
}

/// How a changed config key takes effect on reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnReload {
    Applies,
    /// Applies to what the daemon decides from now on; the rest after a restart.
    Partly(&'static str),
    NeedsRestart,
}

/// Keys (or whole sections) that a reload applies, by prefix; every other key needs a
/// restart and is named as such, so that no change is ever silently ignored.
const RELOADABLE: &[(&str, OnReload)] = &[
    ("auth", OnReload::Applies),
    ("log.level", OnReload::Applies),
    ("store.dir", OnReload::NeedsRestart),
    ("store", OnReload::Applies),
    ("reconcile", OnReload::Applies),
    ("alertmanager", OnReload::Applies),
    ("rules.dir", OnReload::Applies),
    (
        "severities",
        OnReload::Partly("decisions and pages use it now; bundles and the report after a restart"),
    ),
    ("default_rule", OnReload::Applies),
    ("actions.mode", OnReload::Applies),
    ("pagerduty", OnReload::Applies),
    ("notifiers", OnReload::Applies),
    ("paging.fallback", OnReload::Applies),
    ("paging.fallback_after", OnReload::Applies),
    ("paging.alertmanager_url", OnReload::Applies),
    ("paging.max_incidents_per_page", OnReload::Applies),
    (
        "paging.external_url",
        OnReload::Partly("pages use it now; bundles and the report after a restart"),
    ),
    (
        "watchdog.alertname",
        OnReload::Partly("ingest counts the new name now; the self-page after a restart"),
    ),
];

fn on_reload(key: &str) -> OnReload {
    RELOADABLE
        .iter()
        .filter(|(prefix, _)| {
            key == *prefix
                || key
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('.'))
        })
        .max_by_key(|(prefix, _)| prefix.len())
        .map_or(OnReload::NeedsRestart, |(_, how)| *how)
}

/// Every leaf key whose value differs between two configurations, as a dotted path.
fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    fn walk(path: &str, old: &serde_json::Value, new: &serde_json::Value, out: &mut Vec<String>) {
        use serde_json::Value;
        match (old, new) {
            (Value::Object(a), Value::Object(b)) => {
                let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for key in keys {
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(
                        &child,
                        a.get(key).unwrap_or(&Value::Null),
                        b.get(key).unwrap_or(&Value::Null),
                        out,
                    );
                }
            }
            (a, b) if a != b => out.push(path.to_owned()),
            _ => {}
        }
    }
    let (Ok(old), Ok(new)) = (serde_json::to_value(old), serde_json::to_value(new)) else {
        return vec!["(configuration)".to_owned()];
    };
    let mut out = Vec::new();
    walk("", &old, &new, &mut out);
    out
}

/// The mode actions run in: enforce only when configured and the ingest endpoint has a
/// credential, with the reason when the configuration is overruled.
fn effective_mode(config: &Config, credentials: &Credentials) -> (Mode, Option<String>) {
    mode_for(config.actions.mode, credentials.ingest.is_required())
}

/// The mode actions run in: enforce only when configured to and the webhook takes a
/// credential (an unauthenticated sender must not be able to drive changes); `explain` shows
/// the same.
pub fn mode_for(configured: ActionMode, ingest_credential: bool) -> (Mode, Option<String>) {
    match (configured, ingest_credential) {
        (ActionMode::Enforce, true) => (Mode::Enforce, None),
        (ActionMode::Enforce, false) => (
            Mode::DryRun,
            Some(
                "actions.mode is enforce but the ingest endpoint has no credential; running in \
                 dry-run"
                    .to_owned(),
            ),
        ),
        (ActionMode::DryRun, _) => (Mode::DryRun, None),
    }
}

impl Reloader {
    /// Returns notes on what changed, or every error (and nothing is applied).
    pub fn reload(&self, trigger: &str) -> Result<Vec<String>, Vec<String>> {
        self.notifier.reloading();
        let result = self.try_reload();
        self.notifier.ready("reloaded");
        match &result {
            Ok(notes) => {
                self.metrics
                    .config_reloads_total
                    .with_label_values(&["success"])
                    .inc();
                self.metrics.config_last_reload_successful.set(1);
                tracing::info!(trigger, notes = %notes.join("; "), "configuration reloaded");
            }
            Err(errors) => {
                self.metrics
                    .config_reloads_total
                    .with_label_values(&["failure"])
                    .inc();
                self.metrics.config_last_reload_successful.set(0);
                tracing::error!(
                    trigger,
                    errors = %errors.join("; "),
                    "configuration reload failed; keeping the running configuration"
                );
            }
        }
        result
    }

    fn try_reload(&self) -> Result<Vec<String>, Vec<String>> {
        let loaded = config::load(self.path.as_deref(), &self.env)
            .map_err(|errors| errors.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        let state_dir = self
            .current
            .lock()
            .map_err(|_| vec!["reload state poisoned".to_owned()])?
            .store
            .dir
            .clone();
        let (credentials, created) =
            Credentials::load(&loaded.config.auth, Missing::Generate(&state_dir))?;
        let new = loaded.config;
        // `config::load` already refused enforce with the webhook open (the rule lives there);
        // this is the same safety net as at start: never enforcing without an ingest credential.
        let (mode, mode_note) = effective_mode(&new, &credentials);
        let delivery = crate::page::notify::deliver::DeliverySettings::from_config(&new)
            .map_err(|error| vec![error])?;
        let options = LoadOptions::from_config(&new);
        let rules = crate::rules::load_dir(&new.rules.dir, &options).map_err(|errors| {
            self.metrics
                .rules_loads_total
                .with_label_values(&["failure"])
                .inc();
            let errors = errors.iter().map(ToString::to_string).collect::<Vec<_>>();
            // The files on disk are not the rules in use any more: say so until fixed.
            self.metrics.rules_last_load_successful.set(0);
            if let Ok(mut degraded) = self.rules_degraded.write() {
                *degraded = Some(format!(
                    "rule files do not load; running the previous set: {}",
                    errors.first().cloned().unwrap_or_default()
                ));
            }
            errors
        })?;
        let mut current = self
            .current
            .lock()
            .map_err(|_| vec!["reload state poisoned".to_owned()])?;
        let mut notes = Vec::new();
        let mut restart = Vec::new();
        for key in changed_keys(&current, &new) {
            match on_reload(&key) {
                OnReload::Applies => {}
                OnReload::Partly(how) => notes.push(format!("{key} changed: {how}")),
                OnReload::NeedsRestart => restart.push(key),
            }
        }
        if !restart.is_empty() {
            notes.push(format!("changed, needs a restart: {}", restart.join(", ")));
        }
        for path in &created {
            notes.push(format!("generated a credential in {}", path.display()));
        }
        if let Ok(mut slot) = self.credentials.write() {
            *slot = Arc::new(credentials);
        }
        let was = self.mode.set(mode);
        if was != mode {
            notes.push(match mode {
                Mode::Enforce => "actions.mode is now enforce: actions are carried out".to_owned(),
                Mode::DryRun => "actions.mode is now dry-run: no new action starts; actions \
                                 already started finish and are verified, and held changes are \
                                 still reverted"
                    .to_owned(),
            });
            tracing::warn!(mode = mode.as_str(), "action mode switched by reload");
        }
        self.metrics
            .actions_enforced
            .set(i64::from(mode == Mode::Enforce));
        if let Some(note) = &mode_note {
            tracing::error!("{note}");
        }
        if let Ok(mut slot) = self.actions_note.write() {
            *slot = mode_note;
        }
        self.store.update_settings(StoreSettings::from_config(&new));
        if let Ok(mut slot) = self.delivery.settings.write() {
            *slot = Arc::new(delivery);
        }
        if new.log.level != current.log.level
            && let Some(handle) = &self.log
        {
            match tracing_subscriber::EnvFilter::builder().parse(&new.log.level) {
                Ok(filter) => {
                    let _ = handle.reload(filter);
                    notes.push(format!("log level is now {}", new.log.level));
                }
                Err(error) => notes.push(format!("log level kept: {error}")),
            }
        }
        self.alertmanager.send_replace(new.alertmanager.clone());
        let files = crate::rules::load::rule_files(&new.rules.dir).unwrap_or_default();
        if let Err(error) = crate::rules::load::save_last_good(&files, &current.store.dir) {
            notes.push(format!(
                "cannot keep the rules as the last good set: {error}"
            ));
        }
        notes.push(format!(
            "{} rules loaded from {}",
            rules.rules.len(),
            new.rules.dir.display()
        ));
        for warning in &rules.warnings {
            notes.push(format!("warning: {warning}"));
        }
        self.metrics
            .rules_loads_total
            .with_label_values(&["success"])
            .inc();
        self.metrics.rules_last_load_successful.set(1);
        self.metrics.rules_loaded.set(rules.rules.len() as i64);
        if let Ok(mut slot) = self.rules.write() {
            *slot = Arc::new(rules);
        }
        if let Ok(mut degraded) = self.rules_degraded.write() {
            *degraded = None;
        }
        *current = new;
        Ok(notes)
    }
}

/// Everything `run` needs from the command line.
pub struct RunOptions {
    pub config_path: Option<PathBuf>,
    pub env: Vec<(String, String)>,
}

/// Run the daemon until SIGTERM/SIGINT. Errors here are start-up failures.
pub fn run(options: RunOptions) -> anyhow::Result<()> {
    let loaded = config::load(options.config_path.as_deref(), &options.env)
        .map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}"))?;
    let config = loaded.config;
    let log = telemetry::init_logging(&config.log);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("nightshift")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(config, options, Some(log)))
}

async fn run_async(
    config: Config,
    options: RunOptions,
    log: Option<LogReload>,
) -> anyhow::Result<()> {
    // First of all: one process per state directory, or two daemons would both act.
    let state_lock = crate::state_dir::lock(&config.store.dir)?;
    let clock: SharedClock = Arc::new(SystemClock);
    let metrics = Arc::new(Metrics::new());
    let notifier = Notifier::from_env();
    let (credentials, created) =
        Credentials::load(&config.auth, Missing::Generate(&config.store.dir))
            .map_err(|errors| anyhow::anyhow!("cannot load credentials:\n{}", errors.join("\n")))?;
    log_credentials(&config, &created);
    let tls = server::load_tls(&config.server).map_err(|e| anyhow::anyhow!(e))?;
    let delivery_settings = crate::page::notify::deliver::DeliverySettings::from_config(&config)
        .map_err(|error| anyhow::anyhow!("cannot load paging settings: {error}"))?;
    if delivery_settings.routing_keys.is_empty() {
        tracing::warn!(
            fallback = %if delivery_settings.fallback.is_empty() {
                "none".to_owned()
            } else {
                delivery_settings.fallback.join(", ")
            },
            "no PagerDuty routing keys ([pagerduty] routing_keys): pages are recorded and go \
             only to the fallback notifiers, if any"
        );
    }
    let (store, writer) = Store::open(
        StoreSettings::from_config(&config),
        config.server.commit_queue,
        clock.clone(),
        metrics.clone(),
    )
    .context("cannot open the store")?;
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let address = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let scheme = if tls.is_some() { "https" } else { "http" };

    let boot = crate::rules::load::load_with_fallback(
        &config.rules.dir,
        &config.store.dir,
        &LoadOptions::from_config(&config),
    );
    metrics
        .rules_loads_total
        .with_label_values(&[if boot.degraded.is_none() {
            "success"
        } else {
            "failure"
        }])
        .inc();
    metrics
        .rules_last_load_successful
        .set(i64::from(boot.degraded.is_none()));
    metrics.rules_loaded.set(boot.set.rules.len() as i64);
    for warning in &boot.set.warnings {
        tracing::warn!(%warning, "rule set warning");
    }
    tracing::info!(rules = boot.set.rules.len(), source = %boot.set.source.display(), "rules loaded");
    let rules: SharedRules = Arc::new(RwLock::new(Arc::new(boot.set)));
    let rules_degraded = Arc::new(RwLock::new(boot.degraded));
    let prober = Arc::new(
        Prober::with_http(
            ProbeSettings {
                prometheus_urls: config.prometheus.urls.clone(),
                kubernetes_namespaces: config.kubernetes.namespaces.clone(),
            },
            crate::kubernetes::ClientSlot::new(&config.kubernetes),
            &config.http,
        )
        .with_clock(clock.clone()),
    );

    let shutdown = CancellationToken::new();
    // Enforce only when configured, and never while anyone can post a webhook.
    let (mode, mode_note) = effective_mode(&config, &credentials);
    if let Some(note) = &mode_note {
        tracing::error!("{note}");
    }
    let mode = Arc::new(ModeSwitch::new(mode));
    let credentials = Arc::new(RwLock::new(Arc::new(credentials)));
    let actions_note: Arc<RwLock<Option<String>>> = Arc::new(RwLock::new(mode_note));
    let (alertmanager_settings, alertmanager_receiver) =
        watch::channel(config.alertmanager.clone());
    let deliverer = Arc::new(
        crate::page::notify::deliver::Deliverer::with_http(
            store.clone(),
            clock.clone(),
            metrics.clone(),
            delivery_settings,
            &config.http,
        )
        .map_err(|error| anyhow::anyhow!("cannot build the HTTP client for paging: {error}"))?,
    );
    let heartbeat = Arc::new(crate::page::notify::selfpage::Heartbeat::new(
        &config.watchdog.alertname,
        clock.now_millis(),
    ));
    let reloader = Arc::new(Reloader {
        delivery: deliverer.clone(),
        path: options.config_path.clone(),
        env: options.env.clone(),
        current: Mutex::new(config.clone()),
        credentials: credentials.clone(),
        store: store.clone(),
        log,
        alertmanager: alertmanager_settings,
        metrics: metrics.clone(),
        notifier: notifier.clone(),
        rules: rules.clone(),
        rules_degraded: rules_degraded.clone(),
        mode: mode.clone(),
        actions_note: actions_note.clone(),
    });
    let server_config = Arc::new(config.server.clone());
    let state = AppState {
        store: store.clone(),
        metrics: metrics.clone(),
        clock: clock.clone(),
        server: server_config.clone(),
        credentials: credentials.clone(),
        state_dir: config.store.dir.clone(),
        reloader: {
            let reloader = reloader.clone();
            Arc::new(move |trigger: &str| reloader.reload(trigger))
        },
        shutdown: shutdown.clone(),
        rules_degraded,
        actions_note: actions_note.clone(),
        heartbeat: heartbeat.clone(),
        report: Arc::new(crate::bundle::bundler::ReportOptions {
            severities: config.severities.clone(),
            external_url: config.paging.external_url.clone(),
            state_dir: config.store.dir.clone(),
        }),
    };
    let deadline = config.server.shutdown_timeout;
    let server_task = tokio::spawn(server::serve(
        listener,
        server::Serving {
            tls,
            router: server::router(state, crate::ingest::route(&server_config)),
            config: server_config,
            metrics: metrics.clone(),
            credentials: credentials.clone(),
        },
        shutdown.clone(),
        deadline,
    ));
    let sync_task = tokio::spawn(crate::ingest::alertmanager::run(
        store.clone(),
        metrics.clone(),
        alertmanager_receiver,
        config.http.clone(),
        shutdown.clone(),
    ));
    metrics
        .actions_enforced
        .set(i64::from(mode.get() == Mode::Enforce));
    let redactor: Arc<std::sync::Mutex<crate::redact::Redactor>> = Arc::default();
    let bundler = if config.bundles.enabled {
        let collectors = crate::bundle::collectors::Collectors::new(
            crate::bundle::collectors::CollectEnv {
                prometheus_urls: config.prometheus.urls.clone(),
                http: crate::act::actions::http::client_for(&config.http)
                    .map_err(|e| anyhow::anyhow!(e))?,
                kubernetes: crate::kubernetes::ClientSlot::new(&config.kubernetes),
            },
            config.bundles.concurrency,
            config.bundles.share_for,
        );
        let bundler = crate::bundle::bundler::Bundler::new(
            store.clone(),
            clock.clone(),
            metrics.clone(),
            collectors,
            config.store.dir.clone(),
            config.bundles.clone(),
            redactor.clone(),
            config.severities.clone(),
            config.paging.external_url.clone(),
        )
        .map_err(|error| anyhow::anyhow!("cannot start the bundler: {error}"))?;
        Some(Arc::new(bundler))
    } else {
        None
    };
    let mitigator = Arc::new(crate::act::mitigate::Mitigator {
        store: store.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
        kubernetes: crate::kubernetes::ClientSlot::new(&config.kubernetes),
        http: crate::act::actions::http::client_for(&config.http)
            .map_err(|e| anyhow::anyhow!(e))?,
        mode: mode.clone(),
        limits: crate::act::governor::Limits {
            hourly_budget: config.actions.hourly_budget,
        },
        namespaces: config.kubernetes.namespaces.clone(),
        max_attempts: config.actions.max_attempts.max(1),
        min_hold: config.actions.min_hold,
        secrets: crate::redact::SecretFiles::from_config(&config),
        redactor: redactor.clone(),
        last_verify: std::sync::Mutex::default(),
        evidence: bundler.clone(),
        evidence_wait: config.bundles.before_action_wait,
    });
    mitigator.recover().await;
    let worker = Arc::new(Worker {
        mitigator: Some(mitigator),
        store: store.clone(),
        rules,
        prober,
        clock: clock.clone(),
        metrics: metrics.clone(),
        concurrency: config.rules.concurrency,
        dedup: config.paging.dedup,
        settle_within: config.paging.settle_within,
        last_page_check: Mutex::default(),
        started_at: clock.now_millis(),
        bundler: bundler.clone(),
        namespaces: config.kubernetes.namespaces.clone(),
    });
    let worker_task = tokio::spawn(worker.run(shutdown.clone()));
    let delivery_task = tokio::spawn(deliverer.clone().run(shutdown.clone()));
    if let Some(bundler) = &bundler {
        tokio::spawn(bundler.clone().run(shutdown.clone()));
    }
    let self_pager = Arc::new(crate::page::notify::selfpage::SelfPager::new(
        deliverer.clone(),
        store.clone(),
        heartbeat,
        config.watchdog.enabled.then_some(config.watchdog.timeout),
        config.paging.store_failing_after,
    ));
    tokio::spawn(self_pager.run(shutdown.clone()));
    if let Some(timeout) = notifier.watchdog() {
        tokio::spawn(watchdog(
            store.clone(),
            clock.clone(),
            notifier.clone(),
            timeout,
            shutdown.clone(),
        ));
    }
    tokio::spawn(signals(
        shutdown.clone(),
        reloader.clone(),
        notifier.clone(),
    ));

    // Written once everything is up, like READY=1: scripts and tests wait for it.
    let address_file = config.store.dir.join(ADDRESS_FILE);
    std::fs::write(&address_file, format!("{scheme}://{address}\n"))
        .and_then(|()| crate::state_dir::set_file_mode(&address_file))
        .context("cannot write the address file in the state directory")?;
    tracing::info!(%address, scheme, state_dir = %config.store.dir.display(), "listening");
    notifier.ready(&format!("listening on {scheme}://{address}"));

    shutdown.cancelled().await;
    let started = Instant::now();
    tracing::info!(
        deadline = %crate::duration::Shown(deadline),
        "shutting down: no new connections; finishing commits in flight"
    );
    let _ = tokio::time::timeout(deadline, server_task).await;
    sync_task.abort();
    let _ = tokio::time::timeout(deadline.saturating_sub(started.elapsed()), worker_task).await;
    let _ = tokio::time::timeout(deadline.saturating_sub(started.elapsed()), delivery_task).await;
    store.shutdown();
    let _state_lock = state_lock;
    let left = deadline
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(100));
    let finished = tokio::task::spawn_blocking(move || writer.join_within(left))
        .await
        .unwrap_or(false);
    if finished {
        tracing::info!(elapsed = %crate::duration::Shown(started.elapsed()), "stopped cleanly");
    } else {
        tracing::warn!(
            "store writer did not finish before the deadline; unreconciled work resumes at the next start"
        );
    }
    Ok(())
}

/// Say once where generated credentials are (never what they are): Alertmanager needs the
/// ingest token, the CLI reads the admin one.
fn log_credentials(config: &Config, created: &[PathBuf]) {
    let dir = config.store.dir.join(crate::auth::CREDENTIALS_DIR);
    if !created.is_empty() {
        let files: Vec<String> = created.iter().map(|p| p.display().to_string()).collect();
        tracing::info!(
            files = %files.join(", "),
            "generated credentials (mode 0600): give Alertmanager a copy of the ingest token; \
             the read token opens the API, the admin token reload and pause (the CLI reads it \
             from here)"
        );
    } else if dir.exists() {
        tracing::debug!(dir = %dir.display(), "generated credentials in use where not configured");
    }
    for group in &config.auth.allow_unauthenticated {
        tracing::warn!(
            endpoints = group.as_str(),
            "opened without a credential by auth.allow_unauthenticated"
        );
    }
}

/// Ping systemd's watchdog only while the store writer is going round: a wedged writer must
/// get the daemon restarted, not kept alive by a free-running timer.
async fn watchdog(
    store: Store,
    clock: SharedClock,
    notifier: Notifier,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    let period = timeout / 2;
    let stale_after = crate::clock::duration_millis(period).max(1000);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let age = clock.now_millis() - store.heartbeat();
        if age <= stale_after {
            notifier.watchdog_ping();
        } else {
            tracing::error!(
                behind = %crate::duration::Shown(std::time::Duration::from_millis(
                    u64::try_from(age).unwrap_or(0)
                )),
                "store writer is not going round; withholding the watchdog ping"
            );
        }
    }
}

async fn signals(shutdown: CancellationToken, reloader: Arc<Reloader>, notifier: Notifier) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt), Ok(mut hangup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
            _ = hangup.recv() => {
                let reloader = reloader.clone();
                let _ = tokio::task::spawn_blocking(move || reloader.reload("SIGHUP")).await;
                continue;
            }
        }
        if shutdown.is_cancelled() {
            tracing::warn!("second stop signal; exiting at once");
            std::process::exit(130);
        }
        notifier.stopping();
        shutdown.cancel();
    }
}
