//! config::schema: every section and key of the configuration file, with its default, as
//! serde types that refuse unknown keys. Defaults sit beside the type they belong to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

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

/// How pages are keyed.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DedupMode {
    /// One page per Alertmanager group, keyed like Alertmanager's own PagerDuty integration.
    #[default]
    Group,
    /// One page per incident.
    Incident,
}

/// How incidents page: dedup keys, links, the fallback chain.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PagingConfig {
    /// `group` (one page per Alertmanager group, keyed like Alertmanager's own PagerDuty
    /// integration) or `incident`.
    pub dedup: DedupMode,
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
            dedup: DedupMode::Group,
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
