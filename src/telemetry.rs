//! telemetry: the one catalogue of metrics, and log set-up.
//!
//! Names follow `nightshift_<thing>_<unit>[_total]`; labels are bounded (outcome, reason,
//! kind, status), never fingerprints or group keys.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};

pub struct Metrics {
    registry: Registry,
    /// Webhook requests by outcome: accepted, unauthorized, bad_request, payload_too_large,
    /// unsupported_media_type, timeout, overloaded, store_unavailable.
    pub webhook_requests_total: IntCounterVec,
    /// Time from request start to answer, by outcome.
    pub webhook_request_duration_seconds: HistogramVec,
    /// Alerts carried by accepted webhooks.
    pub webhook_alerts_total: IntCounter,
    /// Bodies refused as invalid, by reason.
    pub webhook_rejected_total: IntCounterVec,
    /// Requests refused for a missing or wrong credential, by endpoint kind.
    pub http_unauthorized_total: IntCounterVec,
    /// Webhook values over the size cap, cut and accepted, by kind (label, annotation,
    /// group_label, generator_url).
    pub webhook_values_truncated_total: IntCounterVec,
    /// Connections closed without being served, by reason: unauthenticated_per_peer (over
    /// their peer's limit of connections waiting for a first request, and no request within
    /// the probation).
    pub http_connections_refused_total: IntCounterVec,
    /// Connections served at once: `server.max_connections`, lowered to fit the open-file limit.
    pub http_max_connections: IntGauge,
    /// Notifications committed per store transaction (group commit).
    pub store_commit_batch_size: Histogram,
    /// Time a group commit takes, fsync included.
    pub store_commit_duration_seconds: Histogram,
    /// Store operations that failed, by operation.
    pub store_errors_total: IntCounterVec,
    /// 1 when the last store write succeeded.
    pub store_writable: IntGauge,
    /// Notifications stored and not yet reconciled.
    pub notifications_unreconciled: IntGauge,
    /// Raw notifications pruned after reconciliation.
    pub notifications_pruned_total: IntCounter,
    /// Notifications reconciled.
    pub notifications_reconciled_total: IntCounter,
    /// Episode transitions recorded, by kind.
    pub episode_transitions_total: IntCounterVec,
    /// Snapshot alerts older than what was known (late retries), ignored.
    pub reconcile_stale_alerts_total: IntCounter,
    /// Episodes by status, refreshed by maintenance.
    pub episodes: IntGaugeVec,
    /// Alertmanager API syncs by outcome.
    pub alertmanager_sync_total: IntCounterVec,
    /// Configuration reloads by outcome.
    pub config_reloads_total: IntCounterVec,
    /// 1 when the last reload succeeded.
    pub config_last_reload_successful: IntGauge,
    /// Rejected request bodies kept on disk for forensics.
    pub rejected_bodies_kept_total: IntCounter,
    /// Decisions made, by first matched rule, severity and kind of branch taken.
    pub decisions_total: IntCounterVec,
    /// Time to classify, probe and decide one incident.
    pub decision_duration_seconds: Histogram,
    /// Re-evaluations whose branch differs from the previous decision.
    pub decision_branch_changes_total: IntCounter,
    /// Probe results by outcome: ok, cached, failed.
    pub probe_results_total: IntCounterVec,
    /// Rule set loads by outcome: success, failure.
    pub rules_loads_total: IntCounterVec,
    /// 1 when the configured rule files are the ones in use.
    pub rules_last_load_successful: IntGauge,
    /// Rules in the set in use.
    pub rules_loaded: IntGauge,
    /// Automatic actions by kind and outcome: the governor's verdict (run, dry_run, cooldown,
    /// budget, paused, in_flight, did_not_help), then done, failed, not_applied, uncertain,
    /// or refused (could not be prepared).
    pub actions_total: IntCounterVec,
    /// 1 while actions are carried out (enforce), 0 in dry-run.
    pub actions_enforced: IntGauge,
    /// 1 while automatic actions are paused by an operator.
    pub actions_paused: IntGauge,
    /// Actions judged after their verify window: helped, did_not_help.
    pub actions_verified_total: IntCounterVec,
    /// Delivery attempts by notifier (pagerduty, slack, webhook) and outcome (delivered,
    /// retry, rejected).
    pub notify_events_total: IntCounterVec,
    /// Pages handed to the fallback notifiers because PagerDuty did not take them.
    pub notify_fallbacks_total: IntCounter,
    /// Events waiting in the outbox, by notifier.
    pub outbox_pending: IntGaugeVec,
    /// Age of the oldest undelivered event, in seconds.
    pub outbox_oldest_pending_seconds: IntGauge,
    /// 1 while nightshift pages about itself, by reason (store, watchdog).
    pub self_page_active: IntGaugeVec,
    /// When the last Watchdog heartbeat arrived (unix seconds; 0: none yet).
    pub watchdog_last_seen_timestamp_seconds: IntGauge,
    /// Bundles written, by version (initial, final) or failed.
    pub bundles_written_total: IntCounterVec,
    /// Collector runs by kind and status (ok, truncated, failed, timed_out, skipped).
    pub bundle_collectors_total: IntCounterVec,
    /// Bundles on disk, and their bytes (refreshed by retention).
    pub bundles_on_disk: IntGauge,
    pub bundles_bytes: IntGauge,
    /// Bundles deleted by retention.
    pub bundles_deleted_total: IntCounter,
    /// Values redacted from bundle files.
    pub bundle_redactions_total: IntCounter,
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let metric = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

impl Metrics {
    // The names and labels below are constants; registering them cannot fail.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let webhook_request_duration_seconds = HistogramVec::new(
            HistogramOpts::new(
                "nightshift_webhook_request_duration_seconds",
                "Time from a webhook request's start to its answer, by outcome.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["outcome"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(webhook_request_duration_seconds.clone()))
            .expect("unique metric");
        let episodes = IntGaugeVec::new(
            Opts::new(
                "nightshift_episodes",
                "Alert episodes in the store, by status.",
            ),
            &["status"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(episodes.clone()))
            .expect("unique metric");
        let build_info = IntGaugeVec::new(
            Opts::new("nightshift_build_info", "Always 1; the version as a label."),
            &["version"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(build_info.clone()))
            .expect("unique metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        Self {
            webhook_requests_total: counter_vec(
                r,
                "nightshift_webhook_requests_total",
                "Webhook requests by outcome.",
                &["outcome"],
            ),
            webhook_request_duration_seconds,
            webhook_alerts_total: counter(
                r,
                "nightshift_webhook_alerts_total",
                "Alerts carried by accepted webhooks.",
            ),
            webhook_rejected_total: counter_vec(
                r,
                "nightshift_webhook_rejected_total",
                "Webhook bodies refused as invalid, by reason.",
                &["reason"],
            ),
            http_unauthorized_total: counter_vec(
                r,
                "nightshift_http_unauthorized_total",
                "Requests refused for a missing or wrong credential, by credential.",
                &["credential"],
            ),
            webhook_values_truncated_total: counter_vec(
                r,
                "nightshift_webhook_values_truncated_total",
                "Webhook values over the size cap, cut and accepted, by kind.",
                &["kind"],
            ),
            http_connections_refused_total: counter_vec(
                r,
                "nightshift_http_connections_refused_total",
                "Connections closed without being served, by reason.",
                &["reason"],
            ),
            http_max_connections: gauge(
                r,
                "nightshift_http_max_connections",
                "Connections served at once (server.max_connections, lowered to fit the open-file limit).",
            ),
            store_commit_batch_size: histogram(
                r,
                "nightshift_store_commit_batch_size",
                "Notifications committed per store transaction.",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
            ),
            store_commit_duration_seconds: histogram(
                r,
                "nightshift_store_commit_duration_seconds",
                "Time a group commit takes, fsync included.",
                LATENCY_BUCKETS.to_vec(),
            ),
            store_errors_total: counter_vec(
                r,
                "nightshift_store_errors_total",
                "Store operations that failed, by operation.",
                &["operation"],
            ),
            store_writable: gauge(
                r,
                "nightshift_store_writable",
                "1 when the last store write succeeded, else 0.",
            ),
            notifications_unreconciled: gauge(
                r,
                "nightshift_notifications_unreconciled",
                "Notifications stored and not yet reconciled.",
            ),
            notifications_pruned_total: counter(
                r,
                "nightshift_notifications_pruned_total",
                "Raw notifications pruned after reconciliation.",
            ),
            notifications_reconciled_total: counter(
                r,
                "nightshift_notifications_reconciled_total",
                "Notifications reconciled into episode transitions.",
            ),
            episode_transitions_total: counter_vec(
                r,
                "nightshift_episode_transitions_total",
                "Episode transitions recorded, by kind.",
                &["kind"],
            ),
            reconcile_stale_alerts_total: counter(
                r,
                "nightshift_reconcile_stale_alerts_total",
                "Snapshot alerts older than what was already known, ignored.",
            ),
            episodes,
            alertmanager_sync_total: counter_vec(
                r,
                "nightshift_alertmanager_sync_total",
                "Alertmanager API syncs by outcome.",
                &["outcome"],
            ),
            config_reloads_total: counter_vec(
                r,
                "nightshift_config_reloads_total",
                "Configuration reloads by outcome.",
                &["outcome"],
            ),
            config_last_reload_successful: gauge(
                r,
                "nightshift_config_last_reload_successful",
                "1 when the last configuration reload succeeded, else 0.",
            ),
            decisions_total: counter_vec(
                r,
                "nightshift_decisions_total",
                "Decisions made, by first matched rule, severity and kind of branch taken.",
                &["rule", "severity", "branch_kind"],
            ),
            decision_duration_seconds: histogram(
                r,
                "nightshift_decision_duration_seconds",
                "Time to classify, probe and decide one incident.",
                LATENCY_BUCKETS.to_vec(),
            ),
            decision_branch_changes_total: counter(
                r,
                "nightshift_decision_branch_changes_total",
                "Re-evaluations whose branch differs from the previous decision.",
            ),
            probe_results_total: counter_vec(
                r,
                "nightshift_probe_results_total",
                "Probe results by outcome: ok, cached, failed.",
                &["outcome"],
            ),
            rules_loads_total: counter_vec(
                r,
                "nightshift_rules_loads_total",
                "Rule set loads by outcome: success, failure.",
                &["outcome"],
            ),
            rules_last_load_successful: gauge(
                r,
                "nightshift_rules_last_load_successful",
                "1 when the configured rule files are the ones in use, else 0.",
            ),
            rules_loaded: gauge(r, "nightshift_rules_loaded", "Rules in the set in use."),
            actions_total: counter_vec(
                r,
                "nightshift_actions_total",
                "Automatic actions by kind and outcome.",
                &["kind", "outcome"],
            ),
            actions_verified_total: counter_vec(
                r,
                "nightshift_actions_verified_total",
                "Actions judged once their verify window passed: helped, did_not_help.",
                &["outcome"],
            ),
            actions_paused: gauge(
                r,
                "nightshift_actions_paused",
                "1 while automatic actions are paused by an operator, else 0.",
            ),
            actions_enforced: gauge(
                r,
                "nightshift_actions_enforced",
                "1 while automatic actions are carried out, 0 in dry-run.",
            ),
            rejected_bodies_kept_total: counter(
                r,
                "nightshift_rejected_bodies_kept_total",
                "Rejected request bodies written to the state directory for forensics.",
            ),
            notify_events_total: counter_vec(
                r,
                "nightshift_notify_events_total",
                "Delivery attempts by notifier (pagerduty, slack, webhook) and outcome \
                 (delivered, retry, rejected).",
                &["notifier", "outcome"],
            ),
            notify_fallbacks_total: counter(
                r,
                "nightshift_notify_fallbacks_total",
                "Pages handed to the fallback notifiers because PagerDuty did not take them.",
            ),
            outbox_pending: gauge_vec(
                r,
                "nightshift_outbox_pending",
                "Events waiting in the durable outbox, by notifier.",
                &["notifier"],
            ),
            outbox_oldest_pending_seconds: gauge(
                r,
                "nightshift_outbox_oldest_pending_seconds",
                "Age of the oldest undelivered event in the outbox (0 when none).",
            ),
            self_page_active: gauge_vec(
                r,
                "nightshift_self_page_active",
                "1 while nightshift pages about itself, by reason (store, watchdog).",
                &["reason"],
            ),
            watchdog_last_seen_timestamp_seconds: gauge(
                r,
                "nightshift_watchdog_last_seen_timestamp_seconds",
                "Unix time of the last Watchdog heartbeat alert received (0: none yet).",
            ),
            bundles_written_total: counter_vec(
                r,
                "nightshift_bundles_written_total",
                "Bundles written, by version (initial, final), or failed attempts.",
                &["version"],
            ),
            bundle_collectors_total: counter_vec(
                r,
                "nightshift_bundle_collectors_total",
                "Collector runs by kind and status (ok, truncated, failed, timed_out, skipped).",
                &["kind", "status"],
            ),
            bundles_on_disk: gauge(
                r,
                "nightshift_bundles",
                "Bundles on disk (refreshed by retention).",
            ),
            bundles_bytes: gauge(
                r,
                "nightshift_bundles_bytes",
                "Bytes of the bundles on disk (refreshed by retention).",
            ),
            bundles_deleted_total: counter(
                r,
                "nightshift_bundles_deleted_total",
                "Bundles deleted by retention.",
            ),
            bundle_redactions_total: counter(
                r,
                "nightshift_bundle_redactions_total",
                "Values redacted from bundle files before they were written.",
            ),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut buffer).is_err() {
            return String::new();
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// Handle to change the log filter at runtime (SIGHUP, `/-/reload`).
pub type LogReload = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

/// Install the global subscriber; stderr, human or JSON. Returns the filter reload handle.
pub fn init_logging(config: &LogConfig) -> LogReload {
    let filter = EnvFilter::builder()
        .parse(&config.level)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.format {
        LogFormat::Human => registry
            .with(human_layer(
                std::io::stderr,
                std::io::IsTerminal::is_terminal(&std::io::stderr()),
            ))
            .try_init(),
        LogFormat::Json => registry.with(json_layer(std::io::stderr)).try_init(),
    };
    if let Err(error) = result {
        eprintln!("logging was already initialised: {error}");
    }
    handle
}

/// The human format: tracing-subscriber's, one record per line (`OneLineFields`).
fn human_layer<S, W>(writer: W, ansi: bool) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    W: for<'writer> tracing_subscriber::fmt::MakeWriter<'writer> + 'static,
{
    tracing_subscriber::fmt::layer()
        .fmt_fields(OneLineFields)
        .with_ansi(ansi)
        .with_writer(writer)
}

/// The JSON format: one object per line; JSON escaping keeps every value inside its string.
fn json_layer<S, W>(writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    W: for<'writer> tracing_subscriber::fmt::MakeWriter<'writer> + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_writer(writer)
}

/// The fields of a human log line, laid out as tracing-subscriber does, with control characters
/// in every value, the message's too, escaped (`escape::log_text`). Values carry alert labels:
/// a raw newline would let one forge a second record, an ESC drive the reader's terminal.
struct OneLineFields;

impl<'writer> tracing_subscriber::fmt::FormatFields<'writer> for OneLineFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        use tracing_subscriber::field::VisitOutput;
        let mut visitor = OneLineVisitor(tracing_subscriber::fmt::format::DefaultVisitor::new(
            writer, true,
        ));
        fields.record(&mut visitor);
        visitor.0.finish()
    }
}

/// Hands every value to tracing-subscriber's own visitor, wrapped in `EscapedValue`; the field
/// names and their colours stay its own.
struct OneLineVisitor<'writer>(tracing_subscriber::fmt::format::DefaultVisitor<'writer>);

impl tracing::field::Visit for OneLineVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        // As tracing-subscriber writes them: the message as it is, other strings quoted.
        if field.name() == "message" {
            self.0
                .record_debug(field, &EscapedValue(format_args!("{value}")));
        } else {
            self.0.record_debug(field, &EscapedValue(value));
        }
    }

    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(error) = source {
            text.push_str(": ");
            text.push_str(&error.to_string());
            source = error.source();
        }
        self.0
            .record_debug(field, &EscapedValue(format_args!("{text}")));
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.record_debug(field, &EscapedValue(value));
    }
}

/// A value written through `escape::log_text`.
struct EscapedValue<T>(T);

impl<T: std::fmt::Debug> std::fmt::Debug for EscapedValue<T> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Write::write_fmt(&mut LogTextWriter(formatter), format_args!("{:?}", self.0))
    }
}

struct LogTextWriter<'a, 'b>(&'a mut std::fmt::Formatter<'b>);

impl std::fmt::Write for LogTextWriter<'_, '_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.0.write_str(&crate::escape::log_text(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};

    /// A log writer the tests read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'writer> tracing_subscriber::fmt::MakeWriter<'writer> for Captured {
        type Writer = Captured;

        fn make_writer(&'writer self) -> Captured {
            self.clone()
        }
    }

    /// A label value that would forge a second record and clear the reader's terminal.
    const HOSTILE: &str = "x\nERROR nightshift: forged record\r\u{1b}[2J\u{85}";

    /// One record carrying `HOSTILE` in every kind of value: a span field, the message, a
    /// displayed, a debugged and a string field, and an error.
    fn log_one_hostile_record(subscriber: impl tracing::Subscriber + Send + Sync + 'static) {
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("episode", instance = %HOSTILE);
            let _entered = span.enter();
            let error = io::Error::other(HOSTILE);
            tracing::warn!(
                label = %HOSTILE,
                debugged = ?HOSTILE,
                plain = HOSTILE,
                error = &error as &(dyn std::error::Error + 'static),
                "alert {HOSTILE} fired"
            );
        });
    }

    #[test]
    fn a_human_log_record_is_one_line_whatever_its_values_hold() {
        let escaped = "x\\nERROR nightshift: forged record\\r\\u{1b}[2J\\u{85}";
        for ansi in [false, true] {
            let captured = Captured::default();
            log_one_hostile_record(
                tracing_subscriber::registry().with(human_layer(captured.clone(), ansi)),
            );
            let text = captured.text();
            assert_eq!(text.lines().count(), 1, "{text}");
            assert!(text.ends_with('\n'), "{text:?}");
            assert!(!text.contains(['\r', '\u{85}']), "{text:?}");
            for value in [
                format!("alert {escaped} fired"),
                format!("\"{escaped}\""),
                format!("{escaped} fired"),
            ] {
                assert!(text.contains(&value), "{value:?} not in {text:?}");
            }
            // label=, error= and the span's instance= are written as they display.
            assert!(text.matches(escaped).count() >= 6, "{text:?}");
            // Colours are tracing-subscriber's own escapes, never the data's.
            assert_eq!(text.contains('\u{1b}'), ansi, "{text:?}");
            assert!(!text.contains("\u{1b}[2J"), "{text:?}");
        }
    }

    #[test]
    fn a_json_log_record_is_one_line_too() {
        let captured = Captured::default();
        log_one_hostile_record(tracing_subscriber::registry().with(json_layer(captured.clone())));
        let text = captured.text();
        assert_eq!(text.lines().count(), 1, "{text}");
        let record: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(record["message"], format!("alert {HOSTILE} fired"));
        assert_eq!(record["label"], HOSTILE);
        assert_eq!(record["plain"], HOSTILE);
        assert_eq!(record["span"]["instance"], HOSTILE);
    }

    #[test]
    fn every_metric_is_named_by_the_convention() {
        let metrics = Metrics::new();
        metrics
            .webhook_requests_total
            .with_label_values(&["accepted"])
            .inc();
        let text = metrics.render();
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split_whitespace().nth(2).unwrap();
            assert!(name.starts_with("nightshift_"), "{name}");
            if line.ends_with("counter") {
                assert!(name.ends_with("_total"), "{name}");
            }
        }
        assert!(text.contains("nightshift_webhook_requests_total{outcome=\"accepted\"} 1"));
    }
}
