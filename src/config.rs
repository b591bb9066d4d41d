//! config: the daemon's settings, read from one TOML file and `NIGHTSHIFT_<SECTION>__<KEY>`
//! environment overrides, layered with the `config` crate.
//!
//! Loading reports every problem at once: each key of the file is checked on its own against
//! its section's schema, so one wrong key does not hide the next, and each error names the
//! file, the line and the key path. The name of each environment override is checked the same
//! way, and its errors name the variable. An unknown section or key comes with the nearest
//! valid one ("did you mean `listen`?") when one is a few edits away. Nothing else in the crate reads environment variables
//! (systemd's own notify variables aside, which belong to `systemd`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The prefix of environment overrides: `NIGHTSHIFT_SERVER__LISTEN=0.0.0.0:9797`.
pub const ENV_PREFIX: &str = "NIGHTSHIFT_";

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub store: StoreConfig,
    pub reconcile: ReconcileConfig,
    pub alertmanager: AlertmanagerConfig,
    pub log: LogConfig,
    pub rules: RulesConfig,
    pub severities: SeveritiesConfig,
    pub default_rule: DefaultRuleConfig,
    pub prometheus: PrometheusConfig,
    pub kubernetes: KubernetesConfig,
    pub actions: ActionsConfig,
    pub paging: PagingConfig,
    pub pagerduty: PagerDutyConfig,
    pub notifiers: BTreeMap<String, NotifierConfig>,
    pub watchdog: WatchdogConfig,
    pub bundles: BundlesConfig,
    pub http: HttpConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub listen: String,
    /// Allow plain HTTP on a non-loopback address.
    pub allow_plaintext: bool,
    /// PEM certificate chain; with `tls_key_file` it turns TLS on.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Largest accepted request body.
    pub max_body_bytes: u64,
    /// Webhook body bytes held at once across all requests (read, parsed, waiting for their
    /// commit); beyond it ingest answers 503 with Retry-After, which Alertmanager retries.
    /// Never less than `max_body_bytes` in effect.
    pub max_inflight_body_bytes: u64,
    /// How long a client may take to send its request headers.
    #[serde(with = "crate::duration::text")]
    pub header_read_timeout: Duration,
    /// How long a client may take to send its request body.
    #[serde(with = "crate::duration::text")]
    pub body_read_timeout: Duration,
    /// How long a TLS handshake may take.
    #[serde(with = "crate::duration::text")]
    pub tls_handshake_timeout: Duration,
    /// Connections served at once; further ones wait in the kernel's backlog. Lowered at start
    /// (with a warning) so that connections leave a quarter of the open-file limit
    /// (RLIMIT_NOFILE, at least 256 descriptors) to the store, clients, bundles and commands.
    pub max_connections: usize,
    /// Webhooks waiting to be committed; when full, ingest answers 503.
    pub commit_queue: usize,
    /// How long a graceful shutdown may take before the process exits anyway.
    #[serde(with = "crate::duration::text")]
    pub shutdown_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9797".to_owned(),
            allow_plaintext: false,
            tls_cert_file: None,
            tls_key_file: None,
            max_body_bytes: 8 * 1024 * 1024,
            max_inflight_body_bytes: 64 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            max_connections: 1024,
            commit_queue: 4096,
            shutdown_timeout: Duration::from_secs(20),
        }
    }
}

/// Three credentials: *ingest* for `POST /webhook`, *read* for the incident API, the report
/// and bundles, *admin* for `/-/reload`, `/-/pause` and `/-/resume`. Each may be a bearer
/// token file, a basic-auth file (`user:password` on one line), or both. One that is not
/// configured is generated on first start under `<store.dir>/credentials/`, unless its
/// endpoints are opened explicitly with `allow_unauthenticated`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub ingest_token_file: Option<PathBuf>,
    pub ingest_basic_auth_file: Option<PathBuf>,
    pub read_token_file: Option<PathBuf>,
    pub read_basic_auth_file: Option<PathBuf>,
    pub admin_token_file: Option<PathBuf>,
    pub admin_basic_auth_file: Option<PathBuf>,
    /// Endpoint groups that answer without a credential. Refused on a non-loopback listener.
    pub allow_unauthenticated: Vec<OpenEndpoint>,
    /// Whether `/metrics` needs the *read* credential.
    pub metrics: MetricsAccess,
}

impl AuthConfig {
    /// Whether any credential file is configured for the endpoints of `group`.
    pub fn configures(&self, group: OpenEndpoint) -> bool {
        let (token, basic) = match group {
            OpenEndpoint::Webhook => (&self.ingest_token_file, &self.ingest_basic_auth_file),
            OpenEndpoint::Api => (&self.read_token_file, &self.read_basic_auth_file),
            OpenEndpoint::Admin => (&self.admin_token_file, &self.admin_basic_auth_file),
        };
        token.is_some() || basic.is_some()
    }

    /// Every credential file the configuration names: none of them may be read as an
    /// action's secret.
    pub fn files(&self) -> Vec<&Path> {
        [
            &self.ingest_token_file,
            &self.ingest_basic_auth_file,
            &self.read_token_file,
            &self.read_basic_auth_file,
            &self.admin_token_file,
            &self.admin_basic_auth_file,
        ]
        .into_iter()
        .filter_map(|path| path.as_deref())
        .collect()
    }
}

/// The endpoint groups `[auth] allow_unauthenticated` can open, one per credential.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OpenEndpoint {
    /// `POST /webhook` (the *ingest* credential).
    Webhook,
    /// `/api/v1/...` (the *read* credential).
    Api,
    /// `/-/reload`, `/-/pause`, `/-/resume` (the *admin* credential).
    Admin,
}

impl OpenEndpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            OpenEndpoint::Webhook => "webhook",
            OpenEndpoint::Api => "api",
            OpenEndpoint::Admin => "admin",
        }
    }
}

/// Who may scrape `/metrics`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MetricsAccess {
    /// Anyone who can reach the listener (the metrics carry no alert data).
    #[default]
    Open,
    /// The *read* credential, sent by Prometheus with `authorization`.
    Read,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// State directory: the SQLite store and rejected bodies live here.
    pub dir: PathBuf,
    /// Notifications stored but not yet reconciled; at this many, ingest answers 503.
    pub max_unreconciled: u64,
    /// Reconciled raw notifications older than this are pruned.
    #[serde(with = "crate::duration::text")]
    pub retention: Duration,
    /// Reconciled raw notifications beyond this many are pruned, oldest first.
    pub max_notifications: u64,
    /// How many rejected request bodies are kept for forensics.
    pub rejected_keep: usize,
    /// How often pruning and the readiness self-check run.
    #[serde(with = "crate::duration::text")]
    pub maintenance_interval: Duration,
    /// Largest size of the database file; 0 for no cap beyond the disk. When it is reached,
    /// ingest answers 503 (Alertmanager retries) and nightshift pages about it, as on a full
    /// disk; raising it (reload) recovers without a restart.
    pub max_size_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("./var"),
            max_unreconciled: 100_000,
            retention: Duration::from_secs(7 * 24 * 3600),
            max_notifications: 1_000_000,
            rejected_keep: 100,
            maintenance_interval: Duration::from_secs(60),
            max_size_bytes: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcileConfig {
    /// An episode missing from a later snapshot of its group is called `gone` only once it has
    /// been known this long: a retried old snapshot may arrive up to a group_interval late.
    #[serde(with = "crate::duration::text")]
    pub gone_grace: Duration,
    /// Notifications reconciled per store transaction.
    pub batch_size: usize,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            gone_grace: Duration::from_secs(10 * 60),
            batch_size: 512,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Alertmanager's base URL; when set, open episodes are checked against `/api/v2/alerts`.
    pub url: Option<String>,
    #[serde(with = "crate::duration::text")]
    pub sync_interval: Duration,
    #[serde(with = "crate::duration::text")]
    pub timeout: Duration,
    pub token_file: Option<PathBuf>,
    pub basic_auth_file: Option<PathBuf>,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        Self {
            url: None,
            sync_interval: Duration::from_secs(180),
            timeout: Duration::from_secs(10),
            token_file: None,
            basic_auth_file: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter directive such as `info` or `info,nightshift::store=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    /// Directory of rule files (`*.toml`, loaded in file-name order).
    pub dir: PathBuf,
    /// Incident decisions made at once (each may wait on probes).
    pub concurrency: usize,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("rules"),
            // A decision mostly waits: on probes (cached, single flight) and on the store's
            // group commit. At 16 a 10,000-alert storm peaked at ~800 decisions/s and
            // webhook→decision p99 was 1.0 s; at 64, 0.56 s.
            concurrency: 64,
        }
    }
}

/// How a severity pages.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PagingPolicy {
    /// Page as soon as the decision is made.
    Immediate,
    /// Page only if the incident still fires once its mitigation's verify window has passed;
    /// at once when no action actually ran.
    AfterVerify,
    /// Record and report only.
    Never,
}

impl PagingPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PagingPolicy::Immediate => "immediate",
            PagingPolicy::AfterVerify => "after_verify",
            PagingPolicy::Never => "never",
        }
    }
}

/// PagerDuty's four event severities.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PagerDutySeverity {
    Critical,
    Error,
    Warning,
    Info,
}

impl PagerDutySeverity {
    pub fn as_str(self) -> &'static str {
        match self {
            PagerDutySeverity::Critical => "critical",
            PagerDutySeverity::Error => "error",
            PagerDutySeverity::Warning => "warning",
            PagerDutySeverity::Info => "info",
        }
    }
}

/// One severity's settings as used at runtime.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SeverityConfig {
    pub meaning: String,
    #[serde(with = "crate::duration::text")]
    pub respond_within: Duration,
    pub pagerduty_severity: PagerDutySeverity,
    pub paging: PagingPolicy,
    /// The PagerDuty routing key name for this severity (else the default).
    pub routing_key: Option<String>,
    /// Notifiers that get this severity's pages besides PagerDuty.
    pub notify: Vec<String>,
    /// Who leads the response (shown in status messages).
    pub incident_commander: Option<String>,
}

/// One severity's table in the file; every key optional, defaulting per severity.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SeverityOverrides {
    pub meaning: Option<String>,
    #[serde(with = "crate::duration::text_option")]
    pub respond_within: Option<Duration>,
    pub pagerduty_severity: Option<PagerDutySeverity>,
    pub paging: Option<PagingPolicy>,
    pub routing_key: Option<String>,
    pub notify: Option<Vec<String>>,
    pub incident_commander: Option<String>,
}

/// The meaning, response target and paging of P1–P4.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SeveritiesConfig {
    #[serde(rename = "P1")]
    pub p1: SeverityOverrides,
    #[serde(rename = "P2")]
    pub p2: SeverityOverrides,
    #[serde(rename = "P3")]
    pub p3: SeverityOverrides,
    #[serde(rename = "P4")]
    pub p4: SeverityOverrides,
}

impl SeveritiesConfig {
    /// The effective settings of severity `level` (1–4), built-in defaults filled in.
    pub fn get(&self, level: u8) -> SeverityConfig {
        let (overrides, meaning, minutes, pagerduty, paging) = match level {
            1 => (
                &self.p1,
                "complete outage",
                15,
                PagerDutySeverity::Critical,
                PagingPolicy::Immediate,
            ),
            2 => (
                &self.p2,
                "degraded service",
                60,
                PagerDutySeverity::Error,
                PagingPolicy::Immediate,
            ),
            3 => (
                &self.p3,
                "minor problem",
                240,
                PagerDutySeverity::Warning,
                PagingPolicy::AfterVerify,
            ),
            _ => (
                &self.p4,
                "no user impact; next business day",
                24 * 60,
                PagerDutySeverity::Info,
                PagingPolicy::Never,
            ),
        };
        SeverityConfig {
            meaning: overrides
                .meaning
                .clone()
                .unwrap_or_else(|| meaning.to_owned()),
            respond_within: overrides
                .respond_within
                .unwrap_or(Duration::from_secs(minutes * 60)),
            pagerduty_severity: overrides.pagerduty_severity.unwrap_or(pagerduty),
            paging: overrides.paging.unwrap_or(paging),
            routing_key: overrides.routing_key.clone(),
            notify: overrides.notify.clone().unwrap_or_default(),
            incident_commander: overrides.incident_commander.clone(),
        }
    }
}

/// How the built-in default rule classifies alerts no rule matched.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DefaultRuleConfig {
    /// The alert label whose value picks the severity.
    pub severity_label: String,
    /// Label value (compared case-insensitively) to severity.
    pub map: BTreeMap<String, String>,
    /// Severity when the label is missing or not in the map.
    pub fallback: String,
}

impl Default for DefaultRuleConfig {
    fn default() -> Self {
        let map = [
            ("critical", "P1"),
            ("page", "P1"),
            ("error", "P2"),
            ("high", "P2"),
            ("warning", "P3"),
            ("warn", "P3"),
            ("info", "P4"),
            ("none", "P4"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Self {
            severity_label: "severity".to_owned(),
            map,
            fallback: "P3".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PrometheusConfig {
    /// Prometheus base URLs for probes and collectors, tried in order (a backup after the
    /// primary).
    pub urls: Vec<String>,
}

/// Outbound HTTP, for every client nightshift builds (probes, actions, collectors, the
/// Alertmanager API, PagerDuty and notifiers). The proxy environment variables (`HTTP_PROXY`
/// and the like) are never read: a proxy is used only when set here.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// An `http://` or `https://` proxy every outbound request goes through; unset, none.
    pub proxy: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// A kubeconfig file; unset means in-cluster configuration when running in a pod, else
    /// `$KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context; unset means its current context.
    pub context: Option<String>,
    /// Namespaces probes and actions may touch; empty allows none.
    pub namespaces: Vec<String>,
}

/// How automatic actions are carried out.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ActionMode {
    /// Record what would be done; change nothing.
    #[default]
    DryRun,
    /// Carry actions out. Refused (falls back to dry-run) while the ingest endpoint has no
    /// credential: whoever can post a webhook could otherwise restart deployments.
    Enforce,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ActionsConfig {
    pub mode: ActionMode,
    /// Automatic actions allowed per rolling hour across the daemon.
    pub hourly_budget: u32,
    /// Attempts for an action that provably did not take effect (connection refused, 409,
    /// 429), with exponential backoff between them.
    pub max_attempts: u32,
    /// A change reverted on resolve is held at least this long, so a flapping alert does not
    /// roll the pods every few minutes; also the revert's own cooldown on its target.
    #[serde(with = "crate::duration::text")]
    pub min_hold: Duration,
    /// Where `secret("name")` reads `name` from. Unset: systemd's credentials directory
    /// (`$CREDENTIALS_DIRECTORY`, from `LoadCredential=`), where only the credentials named
    /// `action.<name>` are read, when there is one; else `<store.dir>/secrets`.
    pub secrets_dir: Option<PathBuf>,
}

/// Where `secret("name")` reads from, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretsSource {
    pub dir: PathBuf,
    /// Prefixed to a secret's name to find its file: `action.` in systemd's credentials
    /// directory, which also holds the API credentials that actions must never read.
    pub prefix: &'static str,
}

/// The prefix of the systemd credentials meant for actions.
pub const ACTION_CREDENTIAL_PREFIX: &str = "action.";

impl ActionsConfig {
    /// Where `secret("name")` reads from.
    pub fn secrets_source(&self, state_dir: &Path) -> SecretsSource {
        if let Some(dir) = &self.secrets_dir {
            return SecretsSource {
                dir: dir.clone(),
                prefix: "",
            };
        }
        match std::env::var_os("CREDENTIALS_DIRECTORY") {
            Some(dir) if !dir.is_empty() => SecretsSource {
                dir: PathBuf::from(dir),
                prefix: ACTION_CREDENTIAL_PREFIX,
            },
            _ => SecretsSource {
                dir: state_dir.join("secrets"),
                prefix: "",
            },
        }
    }
}

/// How incidents page: dedup keys, links, the fallback chain.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PagingConfig {
    /// `group` (one page per Alertmanager group, keyed like Alertmanager's own PagerDuty
    /// integration) or `incident`.
    pub dedup: crate::page::policy::DedupMode,
    /// nightshift's own URL as people reach it; pages link to the incident under it.
    pub external_url: Option<String>,
    /// Alertmanager's URL for links in pages; defaults to `alertmanager.url`.
    pub alertmanager_url: Option<String>,
    /// Notifiers (names under `[notifiers]`) that get a page PagerDuty did not take.
    pub fallback: Vec<String>,
    /// How long PagerDuty may fail to take a page before it also goes to the fallback; time
    /// held back by nightshift's own rate limiter does not count.
    #[serde(with = "crate::duration::text")]
    pub fallback_after: Duration,
    /// How long an `after_verify` incident waits for its actions to be planned before it
    /// pages anyway (a crash between deciding and acting).
    #[serde(with = "crate::duration::text")]
    pub settle_within: Duration,
    /// Incidents listed in one page's details (a group of thousands is summarised).
    pub max_incidents_per_page: usize,
    /// How long the store may fail before nightshift pages about it (from memory).
    #[serde(with = "crate::duration::text")]
    pub store_failing_after: Duration,
}

impl Default for PagingConfig {
    fn default() -> Self {
        Self {
            dedup: crate::page::policy::DedupMode::Group,
            external_url: None,
            alertmanager_url: None,
            fallback: Vec::new(),
            fallback_after: Duration::from_secs(120),
            settle_within: Duration::from_secs(300),
            max_incidents_per_page: 20,
            store_failing_after: Duration::from_secs(30),
        }
    }
}

/// PagerDuty Events API v2.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// Events API base: `/v2/enqueue` and `/v2/change/enqueue` are under it.
    pub url: String,
    /// Routing (integration) keys by name, each read from a file.
    pub routing_keys: BTreeMap<String, PathBuf>,
    /// The key used when neither the rule nor the severity names one.
    pub default_routing_key: Option<String>,
    /// Per rule: rule name to routing key name.
    pub rule_routing_keys: BTreeMap<String, String>,
    /// The key for nightshift's pages about itself; defaults to the default key.
    pub self_routing_key: Option<String>,
    /// Events sent per routing key per minute at most (PagerDuty drops beyond ~120).
    pub events_per_minute: u32,
    #[serde(with = "crate::duration::text")]
    pub timeout: Duration,
    /// Send a change event after each automatic action.
    pub change_events: bool,
    /// Deliveries in flight at once.
    pub concurrency: usize,
}

impl Default for PagerDutyConfig {
    fn default() -> Self {
        Self {
            url: "https://events.pagerduty.com".to_owned(),
            routing_keys: BTreeMap::new(),
            default_routing_key: None,
            rule_routing_keys: BTreeMap::new(),
            self_routing_key: None,
            events_per_minute: 100,
            timeout: Duration::from_secs(10),
            change_events: true,
            concurrency: 8,
        }
    }
}

/// A chat or webhook notifier, as a fallback or an extra channel of a severity.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NotifierConfig {
    pub kind: NotifierKind,
    /// The URL (a Slack incoming-webhook URL is a secret), read from a file.
    pub url_file: PathBuf,
    /// A minijinja template for the message; the runbook's internal status update when unset.
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default = "default_notifier_rate")]
    pub events_per_minute: u32,
    #[serde(default = "default_notifier_timeout", with = "crate::duration::text")]
    pub timeout: Duration,
}

fn default_notifier_rate() -> u32 {
    30
}

fn default_notifier_timeout() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NotifierKind {
    Slack,
    Webhook,
}

impl NotifierKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifierKind::Slack => "slack",
            NotifierKind::Webhook => "webhook",
        }
    }
}

/// Debug bundles: one archive per incident under `<store.dir>/bundles/`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BundlesConfig {
    pub enabled: bool,
    /// Collectors running at once, across all incidents.
    pub concurrency: usize,
    /// An identical collector request (same query, workload and window) within this long
    /// reuses the first one's result: a storm does not mean thousands of log downloads.
    #[serde(with = "crate::duration::text")]
    pub share_for: Duration,
    /// How long a disruptive action (restart, scale, set env) waits for its incident's
    /// `before_action` collectors before it goes ahead anyway.
    #[serde(with = "crate::duration::text")]
    pub before_action_wait: Duration,
    /// Bundles of closed incidents older than this are deleted.
    #[serde(with = "crate::duration::text")]
    pub max_age: Duration,
    /// Past this many bytes in all, the oldest bundles of closed incidents are deleted, then
    /// (only if that is not enough) those of the incidents open longest, keeping the newest.
    pub max_total_bytes: u64,
    /// Regexes whose matches are redacted from every file, besides the built-in patterns.
    pub redact: Vec<String>,
}

impl Default for BundlesConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            concurrency: 8,
            share_for: Duration::from_secs(300),
            before_action_wait: Duration::from_secs(20),
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_total_bytes: 10 * 1024 * 1024 * 1024,
            redact: Vec::new(),
        }
    }
}

/// The always-firing heartbeat alert of the alerting pipeline.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WatchdogConfig {
    /// Expect the heartbeat; page when it stops.
    pub enabled: bool,
    /// Its `alertname`; such alerts are heartbeats only, never incidents.
    pub alertname: String,
    /// Page when none has arrived for this long.
    #[serde(with = "crate::duration::text")]
    pub timeout: Duration,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            alertname: "Watchdog".to_owned(),
            timeout: Duration::from_secs(600),
        }
    }
}

impl Default for ActionsConfig {
    fn default() -> Self {
        Self {
            mode: ActionMode::DryRun,
            hourly_budget: 12,
            max_attempts: 3,
            min_hold: Duration::from_secs(15 * 60),
            secrets_dir: None,
        }
    }
}

/// One problem found while loading configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `file:line`, the environment variable, or the file alone when no line applies.
    pub origin: String,
    /// Dotted key path, empty when the whole file is concerned.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.key, self.message)
        }
    }
}

/// Every problem found, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Where each key was set, so that later checks can point at it.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    file: Option<String>,
    lines: BTreeMap<String, usize>,
    env: BTreeMap<String, String>,
}

impl Origins {
    pub fn of(&self, key: &str) -> String {
        if let Some(variable) = self.env.get(key) {
            return format!("environment {variable}");
        }
        match (&self.file, self.lines.get(key)) {
            (Some(file), Some(line)) => format!("{file}:{line}"),
            (Some(file), None) => file.clone(),
            (None, _) => "built-in defaults".to_owned(),
        }
    }
}

/// A loaded configuration together with where its keys came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub origins: Origins,
    pub path: Option<PathBuf>,
}

/// Relative paths resolve against the config file's directory, as in most daemons' configs:
/// under systemd the working directory is `/`, and `[rules] dir = "rules"` must not silently
/// mean `/rules`. This holds for the built-in defaults too (`rules`, `./var`) once there is a
/// config file. A path given by an environment override stays relative to the working
/// directory, as a shell user who typed it expects; without a config file everything does.
fn resolve_relative_paths(config: &mut Config, file: &Path, origins: &Origins) {
    let base = file.parent().unwrap_or(Path::new(""));
    let resolve = |key: &str, path: &mut PathBuf| {
        if path.is_relative() && !path.as_os_str().is_empty() && !origins.env.contains_key(key) {
            *path = base.join(&*path);
        }
    };
    let optional = |key: &str, path: &mut Option<PathBuf>| {
        if let Some(path) = path {
            resolve(key, path);
        }
    };
    optional("server.tls_cert_file", &mut config.server.tls_cert_file);
    optional("server.tls_key_file", &mut config.server.tls_key_file);
    optional("auth.ingest_token_file", &mut config.auth.ingest_token_file);
    optional(
        "auth.ingest_basic_auth_file",
        &mut config.auth.ingest_basic_auth_file,
    );
    optional("auth.read_token_file", &mut config.auth.read_token_file);
    optional(
        "auth.read_basic_auth_file",
        &mut config.auth.read_basic_auth_file,
    );
    optional("auth.admin_token_file", &mut config.auth.admin_token_file);
    optional(
        "auth.admin_basic_auth_file",
        &mut config.auth.admin_basic_auth_file,
    );
    resolve("store.dir", &mut config.store.dir);
    optional(
        "alertmanager.token_file",
        &mut config.alertmanager.token_file,
    );
    optional(
        "alertmanager.basic_auth_file",
        &mut config.alertmanager.basic_auth_file,
    );
    resolve("rules.dir", &mut config.rules.dir);
    optional("kubernetes.kubeconfig", &mut config.kubernetes.kubeconfig);
    optional("actions.secrets_dir", &mut config.actions.secrets_dir);
    for (name, path) in &mut config.pagerduty.routing_keys {
        resolve(&format!("pagerduty.routing_keys.{name}"), path);
    }
    for (name, notifier) in &mut config.notifiers {
        resolve(
            &format!("notifiers.{name}.url_file"),
            &mut notifier.url_file,
        );
    }
}

/// The environment overrides among `variables`: `NIGHTSHIFT_<SECTION>__<KEY>` only, so that
/// variables such as those nightshift sets for its own child processes are never mistaken
/// for settings.
pub fn env_overrides(
    variables: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    variables
        .into_iter()
        .filter(|(name, _)| {
            name.strip_prefix(ENV_PREFIX)
                .is_some_and(|rest| rest.contains("__"))
        })
        .collect()
}

/// Load the file at `path` (or the built-in defaults), apply `env` overrides, validate.
pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Loaded, ConfigErrors> {
    let mut origins = Origins::default();
    let mut errors = Vec::new();
    let text = match path {
        Some(path) => {
            let shown = path.display().to_string();
            origins.file = Some(shown.clone());
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    check_file(&shown, &text, &mut origins, &mut errors);
                    text
                }
                Err(error) => {
                    return Err(ConfigErrors(vec![ConfigError {
                        origin: shown,
                        key: String::new(),
                        message: format!("cannot read config file: {error}"),
                    }]));
                }
            }
        }
        None => String::new(),
    };
    // A misspelt variable would otherwise be a setting silently not applied, or an error
    // from the layering below that does not say which variable it came from.
    check_environment(env, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }

    let mut environment = std::collections::HashMap::new();
    for (name, value) in env {
        let key = name[ENV_PREFIX.len()..].to_lowercase().replace("__", ".");
        origins.env.insert(key, name.clone());
        environment.insert(name.clone(), value.clone());
    }
    let built = ::config::Config::builder()
        .add_source(::config::File::from_str(&text, ::config::FileFormat::Toml))
        .add_source(
            ::config::Environment::with_prefix("NIGHTSHIFT")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(environment)),
        )
        .build()
        .and_then(|layered| layered.try_deserialize::<Config>());
    let config = match built {
        Ok(config) => config,
        Err(error) => {
            return Err(ConfigErrors(vec![ConfigError {
                origin: if env.is_empty() {
                    origins.of("")
                } else {
                    "environment".to_owned()
                },
                key: String::new(),
                message: error.to_string(),
            }]));
        }
    };
    let mut config = config;
    if let Some(path) = path {
        resolve_relative_paths(&mut config, path, &origins);
    }
    validate(&config, &origins, &mut errors);
    if errors.is_empty() {
        Ok(Loaded {
            config,
            origins,
            path: path.map(Path::to_path_buf),
        })
    } else {
        Err(ConfigErrors(errors))
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&byte| byte == b'\n')
        .count()
        + 1
}

/// Check each key of the file on its own against its section's schema.
fn check_file(file: &str, text: &str, origins: &mut Origins, errors: &mut Vec<ConfigError>) {
    use toml::de::{DeTable, DeValue};

    let document = match DeTable::parse(text) {
        Ok(document) => document,
        Err(error) => {
            let line = error.span().map_or(1, |span| line_of(text, span.start));
            errors.push(ConfigError {
                origin: format!("{file}:{line}"),
                key: String::new(),
                message: format!("invalid TOML: {}", error.message().trim()),
            });
            return;
        }
    };
    // The parsed table is ordered by key; report in file order.
    let first_new = errors.len();
    for (section_key, section_value) in document.get_ref() {
        let section = section_key.get_ref().to_string();
        let section_line = line_of(text, section_key.span().start);
        let DeValue::Table(table) = section_value.get_ref() else {
            errors.push(ConfigError {
                origin: format!("{file}:{section_line}"),
                key: section.clone(),
                message: "expected a table such as [server]".to_owned(),
            });
            continue;
        };
        let Some(check) = section_schema(&section) else {
            errors.push(ConfigError {
                origin: format!("{file}:{section_line}"),
                key: section.clone(),
                message: unknown_section_message(&section),
            });
            continue;
        };
        origins.lines.insert(section.clone(), section_line);
        for (key, value) in table {
            let path = format!("{section}.{}", key.get_ref());
            let line = line_of(text, key.span().start);
            origins.lines.insert(path.clone(), line);
            let mut single = DeTable::new();
            single.insert(key.clone(), value.clone());
            let span = key.span().start..value.span().end;
            let single = serde_spanned::Spanned::new(span, DeValue::Table(single));
            if let Err(error) = check(toml::de::ValueDeserializer::from(single)) {
                errors.push(ConfigError {
                    origin: format!("{file}:{line}"),
                    key: path,
                    message: suggest_key(error.message().trim()),
                });
            }
        }
    }
    errors[first_new..].sort_by_key(|error| origin_line(&error.origin));
}

fn origin_line(origin: &str) -> usize {
    origin
        .rsplit_once(':')
        .and_then(|(_, line)| line.parse().ok())
        .unwrap_or(0)
}

/// The top-level sections of the file, in the order of [`Config`]'s fields (a test holds
/// the two equal).
const SECTIONS: &[&str] = &[
    "server",
    "auth",
    "store",
    "reconcile",
    "alertmanager",
    "log",
    "rules",
    "severities",
    "default_rule",
    "prometheus",
    "kubernetes",
    "actions",
    "paging",
    "pagerduty",
    "notifiers",
    "watchdog",
    "bundles",
    "http",
];

/// Deserializes one section's table only to find what is wrong with it.
type SectionCheck = fn(toml::de::ValueDeserializer<'_>) -> Result<(), toml::de::Error>;

/// The schema of the section named `section`; `None` when there is no such section.
fn section_schema(section: &str) -> Option<SectionCheck> {
    let check: SectionCheck = match section {
        "server" => |d| ServerConfig::deserialize(d).map(drop),
        "auth" => |d| AuthConfig::deserialize(d).map(drop),
        "store" => |d| StoreConfig::deserialize(d).map(drop),
        "reconcile" => |d| ReconcileConfig::deserialize(d).map(drop),
        "alertmanager" => |d| AlertmanagerConfig::deserialize(d).map(drop),
        "log" => |d| LogConfig::deserialize(d).map(drop),
        "rules" => |d| RulesConfig::deserialize(d).map(drop),
        "severities" => |d| SeveritiesConfig::deserialize(d).map(drop),
        "default_rule" => |d| DefaultRuleConfig::deserialize(d).map(drop),
        "prometheus" => |d| PrometheusConfig::deserialize(d).map(drop),
        "kubernetes" => |d| KubernetesConfig::deserialize(d).map(drop),
        "actions" => |d| ActionsConfig::deserialize(d).map(drop),
        "paging" => |d| PagingConfig::deserialize(d).map(drop),
        "pagerduty" => |d| PagerDutyConfig::deserialize(d).map(drop),
        "notifiers" => |d| BTreeMap::<String, NotifierConfig>::deserialize(d).map(drop),
        "watchdog" => |d| WatchdogConfig::deserialize(d).map(drop),
        "bundles" => |d| BundlesConfig::deserialize(d).map(drop),
        "http" => |d| HttpConfig::deserialize(d).map(drop),
        _ => return None,
    };
    Some(check)
}

/// Check the name of each environment override against the schema, so that an error names
/// the variable and a misspelt section or key comes with the nearest valid one.
fn check_environment(env: &[(String, String)], errors: &mut Vec<ConfigError>) {
    // In name order, whatever order the process environment happens to hold them in.
    let mut names: Vec<&String> = env.iter().map(|(name, _)| name).collect();
    names.sort();
    for name in names {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let lowered = rest.to_lowercase();
        let mut parts = lowered.split("__");
        let section = parts.next().unwrap_or_default();
        let key = parts.next().unwrap_or_default();
        let origin = format!("environment {name}");
        let Some(check) = section_schema(section) else {
            errors.push(ConfigError {
                origin,
                key: section.to_owned(),
                message: unknown_section_message(section),
            });
            continue;
        };
        if let Some(message) = unknown_key_in(check, key) {
            errors.push(ConfigError {
                origin,
                key: format!("{section}.{key}"),
                message: suggest_key(&message),
            });
        }
    }
}

/// Serde's message when the section `check` reads rejects `key` as unknown; `None` when it
/// takes it. Only the name is looked at: serde rejects an unknown key before reading its
/// value, so a placeholder value stands in for the real one (whose type the layering checks).
fn unknown_key_in(check: SectionCheck, key: &str) -> Option<String> {
    if key.is_empty() {
        return None;
    }
    let quoted = key.replace('\\', "\\\\").replace('"', "\\\"");
    let text = format!("\"{quoted}\" = 0");
    let table = toml::de::DeTable::parse(&text).ok()?.into_inner();
    let spanned = serde_spanned::Spanned::new(0..text.len(), toml::de::DeValue::Table(table));
    let error = check(toml::de::ValueDeserializer::from(spanned)).err()?;
    let message = error.message().trim();
    parse_unknown_field(message).map(|_| message.to_owned())
}

/// Serde's "unknown field `x`, expected one of `a`, `b`" (or "expected `a`", "`a` or `b`",
/// "there are no fields") taken apart into the field and the fields expected.
fn parse_unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.trim().strip_prefix("unknown field `")?;
    let (field, expected) = rest.split_once("`, expected ")?;
    let expected = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Some((field.to_owned(), expected))
}

/// Serde's "unknown field `listn`, expected one of `listen`, ..." as "unknown field `listn`;
/// did you mean `listen`?" when one expected key is close enough; any other message, or one
/// with nothing close, as it is (the list of keys then helps more than a guess).
fn suggest_key(message: &str) -> String {
    let suggestion = parse_unknown_field(message).and_then(|(field, expected)| {
        nearest(&field, expected.iter().map(String::as_str))
            .map(|nearest| format!("unknown field `{field}`; did you mean `{nearest}`?"))
    });
    suggestion.unwrap_or_else(|| message.to_owned())
}

/// "unknown section; did you mean [server]?", or the list of sections when none is close.
fn unknown_section_message(section: &str) -> String {
    match nearest(section, SECTIONS.iter().copied()) {
        Some(nearest) => format!("unknown section; did you mean [{nearest}]?"),
        None => format!("unknown section; expected one of {}", SECTIONS.join(", ")),
    }
}

/// The candidate closest to `typed`, if it is close enough to be what was meant: at most a
/// third of the typed length away, and at least one edit is always allowed. The first of
/// equally close candidates wins.
fn nearest<'a>(typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let allowed = (typed.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(typed, candidate), candidate))
        .filter(|(distance, _)| *distance <= allowed)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Edits (insert, delete, substitute, or swap two neighbours) from `a` to `b`: the optimal
/// string alignment distance, so that `listne` is one edit from `listen`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j]: edits from a[..i] to b[..j].
    let mut rows = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let substitution = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + substitution);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

fn validate(config: &Config, origins: &Origins, errors: &mut Vec<ConfigError>) {
    let mut fail = |key: &str, message: String| {
        errors.push(ConfigError {
            origin: origins.of(key),
            key: key.to_owned(),
            message,
        })
    };
    match config.server.listen.parse::<SocketAddr>() {
        Ok(address) => {
            let tls = config.server.tls_cert_file.is_some();
            if !address.ip().is_loopback() && !config.auth.allow_unauthenticated.is_empty() {
                fail(
                    "auth.allow_unauthenticated",
                    format!(
                        "{address} is not a loopback address: every endpoint there needs its \
                         credential; remove auth.allow_unauthenticated or listen on 127.0.0.1"
                    ),
                );
            }
            if !address.ip().is_loopback() && !tls && !config.server.allow_plaintext {
                fail(
                    "server.listen",
                    format!(
                        "{address} is not a loopback address and TLS is off; set \
                         server.tls_cert_file and server.tls_key_file, or \
                         server.allow_plaintext = true if plain HTTP is really meant"
                    ),
                );
            }
        }
        Err(error) => fail(
            "server.listen",
            format!(
                "expected an IP address and port such as 127.0.0.1:9797, got {:?}: {error}",
                config.server.listen
            ),
        ),
    }
    match (&config.server.tls_cert_file, &config.server.tls_key_file) {
        (Some(_), None) => fail(
            "server.tls_key_file",
            "required when server.tls_cert_file is set".to_owned(),
        ),
        (None, Some(_)) => fail(
            "server.tls_cert_file",
            "required when server.tls_key_file is set".to_owned(),
        ),
        _ => {}
    }
    let positive = [
        ("server.max_body_bytes", config.server.max_body_bytes),
        (
            "server.max_connections",
            config.server.max_connections as u64,
        ),
        ("server.commit_queue", config.server.commit_queue as u64),
        ("store.max_unreconciled", config.store.max_unreconciled),
        ("store.max_notifications", config.store.max_notifications),
        ("reconcile.batch_size", config.reconcile.batch_size as u64),
    ];
    for (key, value) in positive {
        if value == 0 {
            fail(key, "must be greater than 0".to_owned());
        }
    }
    let durations = [
        (
            "server.header_read_timeout",
            config.server.header_read_timeout,
        ),
        ("server.body_read_timeout", config.server.body_read_timeout),
        (
            "server.tls_handshake_timeout",
            config.server.tls_handshake_timeout,
        ),
        (
            "store.maintenance_interval",
            config.store.maintenance_interval,
        ),
        (
            "alertmanager.sync_interval",
            config.alertmanager.sync_interval,
        ),
        ("alertmanager.timeout", config.alertmanager.timeout),
    ];
    for (key, value) in durations {
        if value.is_zero() {
            fail(key, "must be longer than 0s".to_owned());
        }
    }
    if let Some(url) = &config.alertmanager.url {
        match reqwest::Url::parse(url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
            Ok(parsed) => fail(
                "alertmanager.url",
                format!(
                    "expected an http or https URL, got scheme {:?}",
                    parsed.scheme()
                ),
            ),
            Err(error) => fail("alertmanager.url", format!("not a URL: {error}")),
        }
    }
    let severity_names = ["P1", "P2", "P3", "P4"];
    for (value, severity) in &config.default_rule.map {
        if !severity_names.contains(&severity.as_str()) {
            fail(
                "default_rule.map",
                format!("{value:?} maps to {severity:?}; expected one of P1, P2, P3, P4"),
            );
        }
    }
    if !severity_names.contains(&config.default_rule.fallback.as_str()) {
        fail(
            "default_rule.fallback",
            format!(
                "expected one of P1, P2, P3, P4, got {:?}",
                config.default_rule.fallback
            ),
        );
    }
    if config.severities.get(1).paging != PagingPolicy::Immediate {
        fail(
            "severities.P1",
            "P1 always pages immediately; paging must be \"immediate\"".to_owned(),
        );
    }
    if config.rules.concurrency == 0 {
        fail("rules.concurrency", "must be greater than 0".to_owned());
    }
    for url in &config.prometheus.urls {
        match reqwest::Url::parse(url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
            _ => fail("prometheus.urls", format!("{url:?} is not an http(s) URL")),
        }
    }
    if let Some(proxy) = &config.http.proxy {
        match reqwest::Url::parse(proxy) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {}
            _ => fail(
                "http.proxy",
                format!("{proxy:?} is not an http(s) URL such as \"http://proxy:3128\""),
            ),
        }
    }
    if let Some(path) = &config.kubernetes.kubeconfig
        && let Err(error) = std::fs::metadata(path)
    {
        fail(
            "kubernetes.kubeconfig",
            format!("cannot read {}: {error}", path.display()),
        );
    }
    for namespace in &config.kubernetes.namespaces {
        if !crate::rules::is_rfc1123_label(namespace) {
            fail(
                "kubernetes.namespaces",
                format!("{namespace:?} is not a valid namespace name (RFC 1123 label)"),
            );
        }
    }
    if let Err(error) = tracing_subscriber::EnvFilter::builder().parse(&config.log.level) {
        fail("log.level", format!("not a valid log filter: {error}"));
    }
    let secret_files = [
        ("server.tls_cert_file", &config.server.tls_cert_file),
        ("server.tls_key_file", &config.server.tls_key_file),
        ("auth.ingest_token_file", &config.auth.ingest_token_file),
        (
            "auth.ingest_basic_auth_file",
            &config.auth.ingest_basic_auth_file,
        ),
        ("auth.read_token_file", &config.auth.read_token_file),
        (
            "auth.read_basic_auth_file",
            &config.auth.read_basic_auth_file,
        ),
        ("auth.admin_token_file", &config.auth.admin_token_file),
        (
            "auth.admin_basic_auth_file",
            &config.auth.admin_basic_auth_file,
        ),
        ("alertmanager.token_file", &config.alertmanager.token_file),
        (
            "alertmanager.basic_auth_file",
            &config.alertmanager.basic_auth_file,
        ),
    ];
    for (key, path) in secret_files {
        if let Some(path) = path
            && let Err(error) = std::fs::metadata(path)
        {
            fail(key, format!("cannot read {}: {error}", path.display()));
        }
    }
    if config.actions.mode == ActionMode::Enforce
        && config
            .auth
            .allow_unauthenticated
            .contains(&OpenEndpoint::Webhook)
    {
        fail(
            "actions.mode",
            "enforce needs a credential on the webhook, but auth.allow_unauthenticated opens \
             it: whoever can post an alert could restart deployments"
                .to_owned(),
        );
    }
    for group in &config.auth.allow_unauthenticated {
        if config.auth.configures(*group) {
            fail(
                "auth.allow_unauthenticated",
                format!(
                    "{} is opened here and also has a credential configured; keep one",
                    group.as_str()
                ),
            );
        }
    }
    validate_paging(config, &mut fail);
}

/// The paging settings refer to each other by name: every name must exist, every key file
/// must hold a key PagerDuty would take, every template must compile.
fn validate_paging(config: &Config, fail: &mut impl FnMut(&str, String)) {
    let pagerduty = &config.pagerduty;
    for (name, path) in &pagerduty.routing_keys {
        let key = format!("pagerduty.routing_keys.{name}");
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().chars().count() == 32 => {}
            Ok(text) => fail(
                &key,
                format!(
                    "{} holds {} characters; a PagerDuty routing key has 32",
                    path.display(),
                    text.trim().chars().count()
                ),
            ),
            Err(error) => fail(&key, format!("cannot read {}: {error}", path.display())),
        }
    }
    let known_key = |name: &Option<String>| {
        name.as_ref()
            .is_none_or(|name| pagerduty.routing_keys.contains_key(name))
    };
    let key_names = || {
        pagerduty
            .routing_keys
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (field, name) in [
        (
            "pagerduty.default_routing_key",
            &pagerduty.default_routing_key,
        ),
        ("pagerduty.self_routing_key", &pagerduty.self_routing_key),
    ] {
        if !known_key(name) {
            fail(
                field,
                format!(
                    "{name:?} is not in pagerduty.routing_keys ({})",
                    key_names()
                ),
            );
        }
    }
    for (rule, name) in &pagerduty.rule_routing_keys {
        if !pagerduty.routing_keys.contains_key(name) {
            fail(
                "pagerduty.rule_routing_keys",
                format!(
                    "rule {rule} names {name:?}, which is not in pagerduty.routing_keys ({})",
                    key_names()
                ),
            );
        }
    }
    if !pagerduty.routing_keys.is_empty() && pagerduty.default_routing_key.is_none() {
        fail(
            "pagerduty.default_routing_key",
            "required when routing keys are configured".to_owned(),
        );
    }
    match reqwest::Url::parse(&pagerduty.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {}
        _ => fail(
            "pagerduty.url",
            format!("{:?} is not an http(s) URL", pagerduty.url),
        ),
    }
    if pagerduty.events_per_minute == 0 || pagerduty.concurrency == 0 {
        fail(
            "pagerduty",
            "events_per_minute and concurrency must be greater than 0".to_owned(),
        );
    }
    for (name, notifier) in &config.notifiers {
        let key = format!("notifiers.{name}");
        if name == "pagerduty" {
            fail(
                &key,
                "\"pagerduty\" names PagerDuty itself; choose another name".to_owned(),
            );
        }
        if let Err(error) = std::fs::metadata(&notifier.url_file) {
            fail(
                &key,
                format!("cannot read {}: {error}", notifier.url_file.display()),
            );
        }
        if let Some(template) = &notifier.template
            && let Err(error) = crate::page::notify::render::check_template(template)
        {
            fail(&key, format!("template: {error}"));
        }
        if notifier.events_per_minute == 0 {
            fail(&key, "events_per_minute must be greater than 0".to_owned());
        }
    }
    let known_notifier = |name: &String| config.notifiers.contains_key(name);
    for name in &config.paging.fallback {
        if !known_notifier(name) {
            fail(
                "paging.fallback",
                format!("{name:?} is not a notifier under [notifiers]"),
            );
        }
    }
    for level in 1..=4u8 {
        let severity = config.severities.get(level);
        let key = format!("severities.P{level}");
        if !known_key(&severity.routing_key) {
            fail(
                &key,
                format!(
                    "routing_key {:?} is not in pagerduty.routing_keys ({})",
                    severity.routing_key,
                    key_names()
                ),
            );
        }
        for name in &severity.notify {
            if !known_notifier(name) {
                fail(
                    &key,
                    format!("notify: {name:?} is not a notifier under [notifiers]"),
                );
            }
        }
    }
    for (key, url) in [
        ("paging.external_url", &config.paging.external_url),
        ("paging.alertmanager_url", &config.paging.alertmanager_url),
    ] {
        if let Some(url) = url
            && !reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            fail(key, format!("{url:?} is not an http(s) URL"));
        }
    }
    if let Err(error) = crate::redact::Patterns::new(&config.bundles.redact) {
        fail("bundles.redact", error);
    }
    if config.bundles.concurrency == 0 {
        fail("bundles.concurrency", "must be greater than 0".to_owned());
    }
    if config.watchdog.enabled && config.watchdog.timeout < Duration::from_secs(1) {
        fail("watchdog.timeout", "must be at least 1s".to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Config, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.toml");
        std::fs::write(&path, text).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        load(Some(&path), &env)
            .map(|loaded| loaded.config)
            .map_err(|errors| {
                errors
                    .0
                    .iter()
                    .map(|e| e.to_string().replace(&path.display().to_string(), "F"))
                    .collect()
            })
    }

    #[test]
    fn paging_names_must_exist_and_keys_must_be_pagerduty_keys() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short.key");
        std::fs::write(&short, "abc\n").unwrap();
        let good = dir.path().join("good.key");
        std::fs::write(&good, format!("{}\n", "k".repeat(32))).unwrap();
        let url = dir.path().join("slack.url");
        std::fs::write(&url, "https://hooks.slack.invalid/x\n").unwrap();
        let text = format!(
            "[pagerduty]\nrouting_keys = {{ short = {short:?}, good = {good:?} }}\n\
             default_routing_key = \"good\"\nrule_routing_keys = {{ vastai = \"nope\" }}\n\
             [notifiers.ops]\nkind = \"slack\"\nurl_file = {url:?}\ntemplate = \"{{{{ nope( }}}}\"\n\
             [paging]\nfallback = [\"pager\"]\n\
             [severities.P2]\nnotify = [\"ops\", \"missing\"]\nrouting_key = \"good\"\n"
        );
        let errors = load_text(&text, &[]).unwrap_err();
        let all = errors.join("\n");
        assert!(all.contains("pagerduty.routing_keys.short: "), "{all}");
        assert!(
            all.contains("holds 3 characters; a PagerDuty routing key has 32"),
            "{all}"
        );
        assert!(all.contains("rule vastai names \"nope\""), "{all}");
        assert!(all.contains("notifiers.ops: template: "), "{all}");
        assert!(
            all.contains("paging.fallback: \"pager\" is not a notifier"),
            "{all}"
        );
        assert!(
            all.contains("notify: \"missing\" is not a notifier"),
            "{all}"
        );
        // Each error points at its line.
        assert!(errors.iter().all(|e| e.starts_with("F:")), "{errors:?}");
        assert_eq!(errors.len(), 5, "{all}");
        // The same file with the mistakes fixed loads.
        let fixed = text
            .replace("short = ", "other = ")
            .replace(&format!("{short:?}"), &format!("{good:?}"))
            .replace("\"nope\"", "\"good\"")
            .replace("{{ nope( }}", "{{ title }}")
            .replace("\"pager\"", "\"ops\"")
            .replace(", \"missing\"", "");
        let config = load_text(&fixed, &[]).unwrap();
        assert_eq!(config.severities.get(2).notify, vec!["ops".to_owned()]);
        assert_eq!(config.paging.fallback_after, Duration::from_secs(120));
    }

    #[test]
    fn defaults_apply_without_a_file() {
        let loaded = load(None, &[]).unwrap();
        assert_eq!(loaded.config, Config::default());
        assert_eq!(loaded.config.server.listen, "127.0.0.1:9797");
        assert_eq!(loaded.config.store.dir, PathBuf::from("./var"));
    }

    #[test]
    fn every_error_is_reported_with_its_line_and_key() {
        let errors = load_text(
            "[server]\nlisten = \"127.0.0.1:1\"\nmax_body_bytes = \"big\"\nlistne = 1\n\n[stor]\nx = 1\n[log]\nformat = \"xml\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert!(
            errors[0].starts_with("F:3: server.max_body_bytes: invalid type"),
            "{errors:#?}"
        );
        assert_eq!(
            errors[1],
            "F:4: server.listne: unknown field `listne`; did you mean `listen`?"
        );
        assert_eq!(
            errors[2],
            "F:6: stor: unknown section; did you mean [store]?"
        );
        assert!(
            errors[3].starts_with("F:9: log.format: unknown variant `xml`"),
            "{errors:#?}"
        );
    }

    #[test]
    fn an_unknown_key_in_the_file_keeps_its_line_and_suggests_the_nearest() {
        let errors = load_text(
            "[server]\nlisten = \"127.0.0.1:1\"\nlistn = \"127.0.0.1:2\"\n\
             [log]\nbanana = 1\n\
             [notifiers.ops]\nkind = \"slack\"\nurl_fle = \"/dev/null\"\n\
             [servr]\nlisten = 1\n[zzzzzz]\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "F:3: server.listn: unknown field `listn`; did you mean `listen`?",
                // Nothing close: the keys the section takes are listed instead.
                "F:5: log.banana: unknown field `banana`, expected `format` or `level`",
                // A key inside a named table: the path names the table.
                "F:6: notifiers.ops: unknown field `url_fle`; did you mean `url_file`?",
                "F:9: servr: unknown section; did you mean [server]?",
                "F:11: zzzzzz: unknown section; expected one of server, auth, store, \
                 reconcile, alertmanager, log, rules, severities, default_rule, prometheus, \
                 kubernetes, actions, paging, pagerduty, notifiers, watchdog, bundles, http",
            ],
        );
    }

    #[test]
    fn an_unknown_environment_override_names_the_variable_and_suggests_the_nearest() {
        let errors = load_text(
            "[server]\nlistne = \"127.0.0.1:1\"\n",
            &[
                ("NIGHTSHIFT_SERVER__LISTN", "127.0.0.1:9"),
                ("NIGHTSHIFT_SERVR__LISTEN", "127.0.0.1:9"),
                ("NIGHTSHIFT_STORE__MAX_UNRECONCILED", "7"),
                ("NIGHTSHIFT_SEVERITIES__P1__PAGING", "never"),
                ("NIGHTSHIFT_NOTIFIERS__OPS__KIND", "slack"),
                ("NIGHTSHIFT_LOG__COLOUR", "yes"),
            ],
        )
        .unwrap_err();
        // The file's mistakes and the environment's are reported together, the variables in
        // name order.
        assert_eq!(
            errors,
            [
                "F:2: server.listne: unknown field `listne`; did you mean `listen`?",
                "environment NIGHTSHIFT_LOG__COLOUR: log.colour: unknown field `colour`, \
                 expected `format` or `level`",
                "environment NIGHTSHIFT_SERVER__LISTN: server.listn: unknown field `listn`; \
                 did you mean `listen`?",
                "environment NIGHTSHIFT_SERVR__LISTEN: servr: unknown section; did you mean \
                 [server]?",
                // Environment names are lowercased; the severities are written P1..P4.
                "environment NIGHTSHIFT_SEVERITIES__P1__PAGING: severities.p1: unknown field \
                 `p1`; did you mean `P1`?",
            ],
        );
    }

    #[test]
    fn the_section_list_is_the_schema() {
        let message =
            unknown_key_in(|d| Config::deserialize(d).map(drop), "no such section").unwrap();
        let (field, expected) = parse_unknown_field(&message).unwrap();
        assert_eq!(field, "no such section");
        assert_eq!(expected, SECTIONS);
        assert!(
            SECTIONS
                .iter()
                .all(|section| section_schema(section).is_some())
        );
        // An open table (notifiers by name) has no unknown key.
        assert_eq!(
            unknown_key_in(section_schema("notifiers").unwrap(), "x"),
            None
        );
    }

    #[test]
    fn the_nearest_key_is_a_few_edits_away_at_most() {
        let keys = [
            "listen",
            "allow_plaintext",
            "max_body_bytes",
            "format",
            "dir",
        ];
        for (typed, want) in [
            ("listen", Some("listen")),
            ("listn", Some("listen")),
            // A swap of neighbours is one edit.
            ("listne", Some("listen")),
            ("lsitne", Some("listen")),
            ("max_bdy_byte", Some("max_body_bytes")),
            ("allow_plain_text", Some("allow_plaintext")),
            ("dri", Some("dir")),
            ("fmt", None),
            ("ls", None),
            ("xyz", None),
            ("", None),
        ] {
            assert_eq!(nearest(typed, keys), want, "{typed}");
        }
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("ab", "ba"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn broken_toml_names_the_line() {
        let errors = load_text("[server]\nlisten = \n", &[]).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("F:2: invalid TOML"), "{errors:?}");
    }

    #[test]
    fn semantic_errors_point_at_the_key() {
        let errors = load_text(
            "[server]\n\nlisten = \"0.0.0.0:9797\"\n[auth]\ningest_token_file = \"/nonexistent/token\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(errors[0].starts_with("F:3: server.listen: 0.0.0.0:9797 is not a loopback"));
        assert!(errors[1].starts_with("F:5: auth.ingest_token_file: cannot read"));
    }

    #[test]
    fn plaintext_on_a_public_address_needs_consent() {
        let config = load_text(
            "[server]\nlisten = \"0.0.0.0:9797\"\nallow_plaintext = true\n",
            &[],
        )
        .unwrap();
        assert!(config.server.allow_plaintext);
    }

    #[test]
    fn opening_an_endpoint_is_refused_off_loopback_and_beside_a_credential() {
        let errors = load_text(
            "[server]\nlisten = \"0.0.0.0:9797\"\nallow_plaintext = true\n\
             [auth]\nallow_unauthenticated = [\"api\"]\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0]
                .starts_with("F:5: auth.allow_unauthenticated: 0.0.0.0:9797 is not a loopback"),
            "{errors:?}"
        );
        let errors = load_text(
            "[auth]\nallow_unauthenticated = [\"admin\"]\n[actions]\nmode = \"enforce\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(errors.actions.mode, ActionMode::Enforce);
        let errors = load_text(
            "[auth]\nadmin_token_file = \"/dev/null\"\nallow_unauthenticated = [\"admin\", \"webhook\"]\n\
             [actions]\nmode = \"enforce\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("actions.mode: enforce needs a credential")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("also has a credential configured")),
            "{errors:?}"
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let config = load_text(
            "[server]\nlisten = \"127.0.0.1:1\"\n[reconcile]\ngone_grace = \"1m\"\n",
            &[
                ("NIGHTSHIFT_SERVER__LISTEN", "127.0.0.1:2"),
                ("NIGHTSHIFT_STORE__MAX_UNRECONCILED", "7"),
                ("NIGHTSHIFT_RECONCILE__GONE_GRACE", "2s"),
            ],
        )
        .unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:2");
        assert_eq!(config.store.max_unreconciled, 7);
        assert_eq!(config.reconcile.gone_grace, Duration::from_secs(2));
    }

    #[test]
    fn environment_errors_name_the_variable() {
        let errors = load_text("", &[("NIGHTSHIFT_SERVER__LISTEN", "0.0.0.0:1")]).unwrap_err();
        assert!(
            errors[0].starts_with("environment NIGHTSHIFT_SERVER__LISTEN: server.listen"),
            "{errors:?}"
        );
        let errors = load_text("", &[("NIGHTSHIFT_SERVER__NOPE", "1")]).unwrap_err();
        assert!(errors[0].contains("nope"), "{errors:?}");
    }

    #[test]
    fn only_double_underscore_variables_are_overrides() {
        let found = env_overrides([
            ("NIGHTSHIFT_INCIDENT_ID".to_owned(), "x".to_owned()),
            ("NIGHTSHIFT_LOG__LEVEL".to_owned(), "debug".to_owned()),
            ("HOME".to_owned(), "/root".to_owned()),
        ]);
        assert_eq!(
            found,
            vec![("NIGHTSHIFT_LOG__LEVEL".to_owned(), "debug".to_owned())]
        );
    }

    #[test]
    fn the_documented_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/nightshift.toml");
        let loaded = load(Some(&path), &[]).unwrap();
        assert_eq!(loaded.config.server.listen, "127.0.0.1:9797");
    }
}
