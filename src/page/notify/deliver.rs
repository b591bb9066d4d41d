//! The delivery worker: takes due events from the store's outbox, most urgent first, builds
//! each from the latest facts, and sends it within the rate limit of its destination.
//!
//! - PagerDuty events are retried on 429, 5xx, timeouts and connection errors with exponential
//!   backoff and jitter; a 400 (or another permanent answer) is recorded with PagerDuty's
//!   `errors[]` and never retried.
//! - A trigger PagerDuty has not taken for `fallback_after` of failures (not of waiting on the
//!   rate limiter), or rejected, also goes to the fallback notifiers.
//! - A page's routing key is fixed when its first trigger is sent and stored with its dedup
//!   key, so its resolve goes to the same integration.
//! - The send is write-ahead: before a round sends anything, one store command marks every
//!   outbox row of the round as being sent now (`sending_at`); if that fails, the round sends
//!   nothing. The row is marked delivered after the answer: a crash in between sends it again,
//!   as the same dedup key, which PagerDuty folds into the same alert.
//! - Order: first triggers by severity, then updates of pages already open, then resolves and
//!   change events; each destination's rate limit keeps a reserve for P1 first triggers, and
//!   is seeded at start with what the outbox says was sent in the minute before, counting a
//!   round a `kill -9` cut off from when it was marked (see [`Limiter`]), so a restart does
//!   not start with a full burst, and does not lose one either.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::pagerduty::{self, Delivery};
use super::ratelimit::{TokenBuckets, WINDOW};
use super::render;
use super::view::{IncidentView, PageView, action_line, probe_line};
use crate::clock::{Millis, SharedClock, duration_millis, millis_to_datetime};
use crate::config::{Config, NotifierKind, SeveritiesConfig};
use crate::store::{
    Attempt, BundleState, Engine, OutboxKind, OutboxRow, PagedIncident, PagingOp, Store, StoreError,
};
use crate::telemetry::Metrics;

/// A notifier with its URL read.
#[derive(Debug, Clone)]
pub struct NotifierTarget {
    pub kind: NotifierKind,
    pub url: String,
    pub template: Option<String>,
    pub events_per_minute: u32,
    pub timeout: Duration,
}

/// Everything delivery needs from the configuration, secrets read.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub pagerduty_url: String,
    /// Routing keys by name.
    pub routing_keys: BTreeMap<String, String>,
    pub default_routing_key: Option<String>,
    pub rule_routing_keys: BTreeMap<String, String>,
    pub self_routing_key: Option<String>,
    pub events_per_minute: u32,
    pub timeout: Duration,
    pub change_events: bool,
    pub concurrency: usize,
    pub notifiers: BTreeMap<String, NotifierTarget>,
    pub fallback: Vec<String>,
    pub fallback_after: Millis,
    pub external_url: Option<String>,
    pub alertmanager_url: Option<String>,
    pub max_incidents: usize,
    pub severities: SeveritiesConfig,
    /// Where bundles are, for their links when there is no `external_url`.
    pub state_dir: std::path::PathBuf,
}

impl DeliverySettings {
    /// Read the routing keys and notifier URLs the configuration names.
    pub fn from_config(config: &Config) -> Result<DeliverySettings, String> {
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path)
                .map(|text| text.trim().to_owned())
                .map_err(|error| format!("cannot read {}: {error}", path.display()))
        };
        let mut routing_keys = BTreeMap::new();
        for (name, path) in &config.pagerduty.routing_keys {
            routing_keys.insert(name.clone(), read(path)?);
        }
        let mut notifiers = BTreeMap::new();
        for (name, notifier) in &config.notifiers {
            notifiers.insert(
                name.clone(),
                NotifierTarget {
                    kind: notifier.kind,
                    url: read(&notifier.url_file)?,
                    template: notifier.template.clone(),
                    events_per_minute: notifier.events_per_minute,
                    timeout: notifier.timeout,
                },
            );
        }
        Ok(DeliverySettings {
            pagerduty_url: config.pagerduty.url.trim_end_matches('/').to_owned(),
            routing_keys,
            default_routing_key: config.pagerduty.default_routing_key.clone(),
            rule_routing_keys: config.pagerduty.rule_routing_keys.clone(),
            self_routing_key: config.pagerduty.self_routing_key.clone(),
            events_per_minute: config.pagerduty.events_per_minute,
            timeout: config.pagerduty.timeout,
            change_events: config.pagerduty.change_events,
            concurrency: config.pagerduty.concurrency.max(1),
            notifiers,
            fallback: config.paging.fallback.clone(),
            fallback_after: duration_millis(config.paging.fallback_after),
            external_url: config.paging.external_url.clone(),
            alertmanager_url: config
                .paging
                .alertmanager_url
                .clone()
                .or_else(|| config.alertmanager.url.clone()),
            max_incidents: config.paging.max_incidents_per_page.max(1),
            severities: config.severities.clone(),
            state_dir: config.store.dir.clone(),
        })
    }

    /// The routing key for a page of `rule` at `severity`: the rule's, else the severity's,
    /// else the default. `None` when PagerDuty is not configured.
    pub fn routing_key_for(&self, rule: &str, severity: &str) -> Option<String> {
        let level = crate::page::policy::rank(severity).clamp(1, 4) as u8;
        let name = self
            .rule_routing_keys
            .get(rule)
            .cloned()
            .or_else(|| self.severities.get(level).routing_key)
            .or_else(|| self.default_routing_key.clone())?;
        self.routing_keys.get(&name).cloned()
    }

    /// The routing key for nightshift's pages about itself.
    pub fn self_routing_key(&self) -> Option<String> {
        let name = self
            .self_routing_key
            .as_ref()
            .or(self.default_routing_key.as_ref())?;
        self.routing_keys.get(name).cloned()
    }
}

/// An event ready to send.
struct Outgoing {
    row: OutboxRow,
    url: String,
    body: Value,
    notifier: &'static str,
    timeout: Duration,
    /// For the record: the body with the routing key masked.
    shown: String,
}

pub struct Deliverer {
    pub store: Store,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    pub http: reqwest::Client,
    pub settings: RwLock<Arc<DeliverySettings>>,
    limiter: Mutex<Limiter>,
    /// Per channel: whether its destination is failing, and when to try it again.
    health: Mutex<HashMap<String, Health>>,
}

/// The rate limits: a token bucket per destination (a routing key, or `notifier:<name>`).
/// A bucket starts, on first use, as if it had run through the minute before this process
/// started, from what the store says went out then. Every event a round sends is marked in
/// the store before it goes, so that includes a round a `kill -9` cut off before its answers
/// were recorded: no margin for events in doubt is needed.
#[derive(Default)]
struct Limiter {
    buckets: HashMap<String, TokenBuckets>,
    /// What went out before this process started, by bucket: when each event was sent
    /// (marked as being sent, or last attempted, whichever is later), within the minute
    /// before the first round. Read from the store at the first round; `None` until then.
    before: Option<HashMap<String, Vec<Millis>>>,
}

/// A destination's health. While it fails, one event at a time (the most urgent) is sent as a
/// probe, after a backoff that grows with each failed round; the first success opens it again,
/// so after an outage the most urgent pages go first.
#[derive(Debug, Clone, Copy, Default)]
struct Health {
    failures: u32,
    failing_since: Option<Millis>,
    next_at: Millis,
}

/// How long to wait before attempt `attempts + 1`: exponential from 1 s, at most a minute,
/// with jitter (backon), so a PagerDuty outage is followed closely.
fn backoff(attempts: i64) -> Millis {
    use backon::BackoffBuilder;
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .with_max_times(usize::MAX)
        .build();
    let delay = delays
        .nth(attempts.clamp(0, 30) as usize)
        .unwrap_or(Duration::from_secs(60));
    duration_millis(delay).max(1)
}

impl Deliverer {
    /// A deliverer that sends with no proxy at all.
    pub fn new(
        store: Store,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        settings: DeliverySettings,
    ) -> Result<Deliverer, String> {
        Deliverer::with_http(
            store,
            clock,
            metrics,
            settings,
            &crate::config::HttpConfig::default(),
        )
    }

    /// A deliverer that sends through the `[http]` proxy, if one is set. Its client follows no
    /// redirects and reads no proxy from the environment ([`crate::http_client`]).
    pub fn with_http(
        store: Store,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        settings: DeliverySettings,
        http: &crate::config::HttpConfig,
    ) -> Result<Deliverer, String> {
        let http = crate::http_client::builder(http)?
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Deliverer {
            store,
            clock,
            metrics,
            http,
            settings: RwLock::new(Arc::new(settings)),
            limiter: Mutex::default(),
            health: Mutex::default(),
        })
    }

    pub fn settings(&self) -> Arc<DeliverySettings> {
        self.settings
            .read()
            .map_or_else(|p| p.into_inner().clone(), |s| s.clone())
    }

    /// Deliver until shutdown; on shutdown, what is in flight finishes (each send is bounded
    /// by its timeout) and the rest stays in the outbox for the next start.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let sent = self.tick().await;
            if sent == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            } else if shutdown.is_cancelled() {
                return;
            }
        }
    }

    /// Read what went out before this process started, once, before anything is sent.
    async fn learn_history(
        &self,
        settings: &DeliverySettings,
        now: Millis,
    ) -> Result<(), StoreError> {
        if self
            .limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .before
            .is_some()
        {
            return Ok(());
        }
        let events = self.store.outbox_sent_since(now - WINDOW).await?;
        let mut sent: HashMap<String, Vec<Millis>> = HashMap::new();
        for event in events {
            let bucket = if event.channel == "pagerduty" {
                event
                    .routing_key
                    .or_else(|| settings.routing_key_for(&event.rule, &event.severity))
            } else {
                Some(format!("notifier:{}", event.channel))
            };
            if let Some(bucket) = bucket {
                sent.entry(bucket).or_default().push(event.at);
            }
        }
        self.limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .before = Some(sent);
        Ok(())
    }

    /// Take a token from `bucket` if its rate limit allows; only an `urgent` event may take
    /// the last tokens.
    fn take_token(&self, bucket: &str, per_minute: u32, urgent: bool, now: Millis) -> bool {
        let mut limiter = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        let Limiter { buckets, before } = &mut *limiter;
        buckets
            .entry(bucket.to_owned())
            .or_insert_with(|| {
                let mut fresh = TokenBuckets::new(per_minute);
                if let Some(sent) = before.as_ref().and_then(|before| before.get(bucket)) {
                    fresh.seed(bucket, sent, now);
                }
                fresh
            })
            .try_take(bucket, now, urgent)
    }

    fn health(&self, channel: &str) -> Health {
        let health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        health.get(channel).copied().unwrap_or_default()
    }

    /// One round: send what is due and allowed, most urgent first, and record the answers.
    /// Returns how many events were sent (answered or not).
    pub async fn tick(&self) -> usize {
        let now = self.clock.now_millis();
        let settings = self.settings();
        let rows = match self.store.due_outbox(now, 1024).await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::error!(%error, "cannot read the outbox");
                return 0;
            }
        };
        self.observe_backlog(now).await;
        if let Err(error) = self.learn_history(&settings, now).await {
            // Without it a restart could exceed the rate limit: send nothing yet.
            tracing::error!(%error, "cannot read what was sent before the start");
            return 0;
        }
        let mut outgoing = Vec::new();
        let mut exhausted: HashSet<String> = HashSet::new();
        let mut probing: HashSet<String> = HashSet::new();
        for row in rows {
            if outgoing.len() >= settings.concurrency * 4 {
                break;
            }
            let health = self.health(&row.channel);
            if health.failures > 0 {
                // A failing destination gets one probe at a time; the rest wait, and a trigger
                // waiting too long also goes to the fallback.
                if now < health.next_at || !probing.insert(row.channel.clone()) {
                    self.maybe_fall_back(&settings, &row, &health, None, now)
                        .await;
                    continue;
                }
            }
            // Where it goes decides its rate limit; the event itself is built only once a
            // token is taken, so a storm waiting on the limiter costs one lookup per row.
            let routed = match self.route(&settings, &row).await {
                Ok(Some(bucket)) => Ok(bucket),
                Ok(None) => continue,
                Err(error) => Err(error),
            };
            let prepared = match routed {
                Ok(bucket) if exhausted.contains(&bucket) => continue,
                Ok(bucket) => {
                    let per_minute = if row.channel == "pagerduty" {
                        settings.events_per_minute
                    } else {
                        settings
                            .notifiers
                            .get(&row.channel)
                            .map_or(30, |n| n.events_per_minute)
                    };
                    // Only a P1 page's first trigger may take the reserve; the rows come in
                    // that order, so once a bucket refuses one, it refuses the rest.
                    let urgent =
                        row.kind == OutboxKind::Trigger && row.priority == 1 && !row.update;
                    if !self.take_token(&bucket, per_minute, urgent, now) {
                        // Waiting on our own limiter is not a failure; the row stays due.
                        exhausted.insert(bucket);
                        continue;
                    }
                    self.prepare(&settings, &row, &bucket).await
                }
                Err(error) => Err(error),
            };
            match prepared {
                Ok(prepared) => outgoing.push(prepared),
                Err(error) => {
                    // Nothing can ever send it (PagerDuty not configured, a notifier
                    // removed): record it as rejected, so the fallback takes it.
                    let kind = notifier_kind(&settings, &row.channel);
                    let delivery = Delivery::Rejected(vec![error]);
                    self.finish(&settings, &row, &delivery, String::new(), kind, now)
                        .await;
                }
            }
        }
        let count = outgoing.len();
        // Write-ahead: every event of the round is marked as being sent, in one command,
        // before any goes, so a crash before the answers are recorded still leaves them
        // counted against the rate limit at the next start. Not marked, not sent: the rows
        // stay due for a later round (the tokens they took stay spent, erring low). Events a
        // failing destination holds back later in the round stay marked, like their tokens.
        if count > 0 {
            let ids = outgoing.iter().map(|event| event.row.id).collect();
            if let Err(error) = self.store.paging(PagingOp::Sending(ids)).await {
                tracing::error!(%error, "cannot record that events are being sent; sending nothing this round");
                return 0;
            }
        }
        // One priority at a time (first triggers, then updates), so PagerDuty receives P1
        // pages before any other; within a priority, up to `concurrency` at once.
        let mut round: BTreeMap<String, (bool, bool)> = BTreeMap::new();
        while !outgoing.is_empty() {
            // A destination that only failed at a more urgent level gets nothing less urgent
            // in this round: those events wait for it to recover, in their order.
            outgoing.retain(|event| {
                round
                    .get(&event.row.channel)
                    .is_none_or(|(answered, failed)| *answered || !*failed)
            });
            if outgoing.is_empty() {
                break;
            }
            let rank = |event: &Outgoing| (event.row.update, event.row.priority);
            let first = rank(&outgoing[0]);
            let split = outgoing
                .iter()
                .position(|event| rank(event) != first)
                .unwrap_or(outgoing.len());
            let level: Vec<Outgoing> = outgoing.drain(..split).collect();
            let mut tasks = tokio::task::JoinSet::new();
            let limit = Arc::new(tokio::sync::Semaphore::new(settings.concurrency));
            for event in level {
                let http = self.http.clone();
                let limit = limit.clone();
                tasks.spawn(async move {
                    let _permit = limit.acquire_owned().await;
                    let delivery = send(&http, &event).await;
                    (event, delivery)
                });
            }
            while let Some(joined) = tasks.join_next().await {
                let Ok((event, delivery)) = joined else {
                    continue;
                };
                let entry = round.entry(event.row.channel.clone()).or_default();
                match delivery {
                    Delivery::Retry(_) => entry.1 = true,
                    _ => entry.0 = true,
                }
                let now = self.clock.now_millis();
                self.finish(
                    &settings,
                    &event.row,
                    &delivery,
                    event.shown,
                    event.notifier,
                    now,
                )
                .await;
            }
        }
        // A destination that answered anything but "try again" is up; one that only failed
        // backs off as a whole (one step per round, however many events failed in it).
        let now = self.clock.now_millis();
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        for (channel, (answered, failed)) in round {
            let entry = health.entry(channel).or_default();
            if answered {
                *entry = Health::default();
            } else if failed {
                entry.failures += 1;
                entry.failing_since.get_or_insert(now);
                entry.next_at = now + backoff(i64::from(entry.failures) - 1);
            }
        }
        count
    }

    /// Record an answer, and hand a trigger PagerDuty did not take to the fallback.
    async fn finish(
        &self,
        settings: &DeliverySettings,
        row: &OutboxRow,
        delivery: &Delivery,
        shown: String,
        notifier: &str,
        now: Millis,
    ) {
        let (attempt, outcome) = match delivery {
            Delivery::Accepted => (Attempt::Delivered { sent: shown }, "delivered"),
            Delivery::Retry(error) => (
                Attempt::Retry {
                    error: error.clone(),
                    // The channel's backoff decides when it is tried again.
                    next_at: now,
                    failure: true,
                },
                "retry",
            ),
            Delivery::Rejected(errors) => (
                Attempt::Rejected {
                    error: errors.join("; "),
                    sent: shown,
                },
                "rejected",
            ),
        };
        self.metrics
            .notify_events_total
            .with_label_values(&[notifier, outcome])
            .inc();
        match delivery {
            Delivery::Accepted => {
                tracing::info!(id = row.id, channel = %row.channel, kind = %row.kind, "event delivered")
            }
            Delivery::Retry(error) => {
                tracing::warn!(id = row.id, channel = %row.channel, kind = %row.kind, %error, attempts = row.attempts + 1, "event not delivered; will retry")
            }
            Delivery::Rejected(errors) => {
                tracing::error!(id = row.id, incident = row.episode_id.as_deref().unwrap_or(""), dedup_key = row.dedup_key.as_deref().unwrap_or(""), channel = %row.channel, kind = %row.kind, errors = %errors.join("; "), "event rejected permanently")
            }
        }
        if let Err(error) = self.store.paging(PagingOp::Attempt(row.id, attempt)).await {
            tracing::error!(%error, "cannot record a delivery attempt; it may be sent again");
        }
        if !matches!(delivery, Delivery::Accepted) {
            let mut health = self.health(&row.channel);
            health.failing_since.get_or_insert(now);
            self.maybe_fall_back(settings, row, &health, Some(delivery), now)
                .await;
        }
    }

    /// Hand a PagerDuty trigger to the fallback notifiers once PagerDuty rejected it, or has
    /// been failing for `fallback_after` since the page was queued (time spent waiting on
    /// nightshift's own rate limiter is not failing).
    async fn maybe_fall_back(
        &self,
        settings: &DeliverySettings,
        row: &OutboxRow,
        health: &Health,
        delivery: Option<&Delivery>,
        now: Millis,
    ) {
        if row.channel != "pagerduty"
            || row.kind != OutboxKind::Trigger
            || row.fallback_at.is_some()
        {
            return;
        }
        let failing_since = match (row.first_failure_at, health.failing_since) {
            (Some(row_failed), _) => row_failed,
            (None, Some(since)) => since.max(row.created_at),
            (None, None) => now,
        };
        let reason = match delivery {
            Some(Delivery::Rejected(errors)) => {
                format!("PagerDuty rejected the page: {}", errors.join("; "))
            }
            _ if now - failing_since >= settings.fallback_after => format!(
                "PagerDuty has not taken the page for {}s: {}",
                (now - failing_since) / 1000,
                match delivery {
                    Some(Delivery::Retry(error)) => error.as_str(),
                    _ => row.last_error.as_deref().unwrap_or("PagerDuty is failing"),
                }
            ),
            _ => return,
        };
        let op = PagingOp::FallBack {
            id: row.id,
            channels: settings.fallback.clone(),
            reason: reason.clone(),
        };
        match self.store.paging(op).await {
            // Counted only when a notifier took it: with no fallback configured the metric
            // (and the alert on it) would otherwise fire for a page nobody else received.
            Ok(done) if done.count > 0 => {
                self.metrics.notify_fallbacks_total.inc();
                tracing::error!(id = row.id, queued = done.count, %reason, "page handed to the fallback notifiers");
            }
            Ok(_) => {
                tracing::error!(id = row.id, incident = row.episode_id.as_deref().unwrap_or(""), dedup_key = row.dedup_key.as_deref().unwrap_or(""), %reason, "PagerDuty did not take the page and no fallback notifier is configured ([paging] fallback)");
            }
            Err(error) => tracing::error!(%error, "cannot hand a page to the fallback"),
        }
    }

    async fn observe_backlog(&self, now: Millis) {
        let Ok(backlog) = self.store.outbox_backlog(now).await else {
            return;
        };
        let settings = self.settings();
        let mut per_kind: BTreeMap<&str, i64> = [("pagerduty", 0), ("slack", 0), ("webhook", 0)]
            .into_iter()
            .collect();
        for channel in backlog.channels {
            *per_kind
                .entry(notifier_kind(&settings, &channel.channel))
                .or_default() += channel.pending;
        }
        for (kind, count) in per_kind {
            self.metrics
                .outbox_pending
                .with_label_values(&[kind])
                .set(count);
        }
        self.metrics
            .outbox_oldest_pending_seconds
            .set(backlog.oldest_age.max(0) / 1000);
    }

    /// Build the event for a row. `Ok(None)`: nothing to send (change events off); `Err`: it
    /// can never be sent.
    /// The rate-limit bucket of a row: its page's routing key (fixed now if this is the
    /// page's first event), or `notifier:<name>`. `Ok(None)`: nothing to send (change events
    /// off); `Err`: it can never be sent.
    async fn route(
        &self,
        settings: &DeliverySettings,
        row: &OutboxRow,
    ) -> Result<Option<String>, String> {
        if row.channel != "pagerduty" {
            if !settings.notifiers.contains_key(&row.channel) {
                return Err(format!(
                    "notifier {:?} is no longer configured",
                    row.channel
                ));
            }
            return Ok(Some(format!("notifier:{}", row.channel)));
        }
        if settings.routing_keys.is_empty() {
            return Err("PagerDuty is not configured (no pagerduty.routing_keys)".to_owned());
        }
        if row.kind == OutboxKind::Change {
            if !settings.change_events {
                // Not wanted: settle it so it does not wait forever.
                let sent = "change events are off".to_owned();
                let _ = self
                    .store
                    .paging(PagingOp::Attempt(row.id, Attempt::Delivered { sent }))
                    .await;
                return Ok(None);
            }
            let episode = row.episode_id.clone().unwrap_or_default();
            let routing = self
                .store
                .episode_facts(&episode)
                .await
                .map_err(|e| e.to_string())?;
            return settings
                .routing_key_for(&routing.rule, &routing.severity)
                .map(Some)
                .ok_or_else(|| "no routing key".to_owned());
        }
        let dedup_key = row.dedup_key.clone().unwrap_or_default();
        let page = self
            .store
            .page(&dedup_key)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("page {dedup_key} is gone"))?;
        if let Some(key) = page.routing_key {
            return Ok(Some(key));
        }
        let chosen = settings
            .routing_key_for(&page.rule, &page.severity)
            .ok_or("no routing key for this page")?;
        let fixed = self
            .store
            .paging(PagingOp::FixRoutingKey {
                dedup_key,
                routing_key: chosen.clone(),
            })
            .await
            .map_err(|e| e.to_string())?
            .routing_key
            .unwrap_or(chosen);
        Ok(Some(fixed))
    }

    /// Build the event for a row, for `bucket` from [`Deliverer::route`].
    async fn prepare(
        &self,
        settings: &Arc<DeliverySettings>,
        row: &OutboxRow,
        bucket: &str,
    ) -> Result<Outgoing, String> {
        if row.channel == "pagerduty" {
            return self.prepare_pagerduty(settings, row, bucket).await;
        }
        let Some(notifier) = settings.notifiers.get(&row.channel) else {
            return Err(format!(
                "notifier {:?} is no longer configured",
                row.channel
            ));
        };
        let dedup_key = row.dedup_key.clone().unwrap_or_default();
        let mut view = page_view(&self.store, settings, &dedup_key)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("page {dedup_key} is gone"))?;
        if row.kind == OutboxKind::Resolve {
            view.status = "resolved".to_owned();
        }
        let text = render::render_chat(notifier.kind, notifier.template.as_deref(), &view)
            .or_else(|error| {
                tracing::error!(notifier = %row.channel, %error, "notifier template failed; using the default");
                render::render_chat(notifier.kind, None, &view)
            })?;
        let text = if row.reason.starts_with("fallback:") {
            // The reason carries PagerDuty's error text, which may echo alert data back.
            let reason = row.reason.trim_start_matches("fallback: ");
            let reason = match notifier.kind {
                NotifierKind::Slack => crate::escape::slack(reason).into_owned(),
                NotifierKind::Webhook => reason.to_owned(),
            };
            format!("{text}\n(nightshift fallback: {reason})")
        } else {
            text
        };
        let body = match notifier.kind {
            NotifierKind::Slack => render::slack_body(&text),
            NotifierKind::Webhook => render::webhook_body(&view, &text, row.kind.as_str()),
        };
        Ok(Outgoing {
            row: row.clone(),
            url: notifier.url.clone(),
            shown: body.to_string(),
            body,
            notifier: notifier.kind.as_str(),
            timeout: notifier.timeout,
        })
    }

    async fn prepare_pagerduty(
        &self,
        settings: &Arc<DeliverySettings>,
        row: &OutboxRow,
        key: &str,
    ) -> Result<Outgoing, String> {
        let (path, body) = if row.kind == OutboxKind::Change {
            let action_id = row.action_id.unwrap_or_default();
            let found = self
                .store
                .action(action_id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("action {action_id} is gone"))?;
            let episode = found.episode_id;
            let line = action_line(&found.action);
            let (summary, details) = render::change_summary(&line, &episode);
            let at = line.at.clone().unwrap_or_else(|| {
                crate::episodes::reconcile::canonical_time(millis_to_datetime(row.created_at))
            });
            let mut body = pagerduty::change_event(key, &summary, &at, details);
            if let Some(base) = &settings.external_url {
                body["links"] = json!([{
                    "href": format!("{}/api/v1/incidents/{episode}", base.trim_end_matches('/')),
                    "text": format!("nightshift incident {episode}"),
                }]);
            }
            ("/v2/change/enqueue", body)
        } else {
            let dedup_key = row.dedup_key.clone().unwrap_or_default();
            let body = if row.kind == OutboxKind::Resolve {
                pagerduty::resolve_event(key, &dedup_key)
            } else {
                let view = page_view(&self.store, settings, &dedup_key)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("page {dedup_key} is gone"))?;
                pagerduty::trigger_event(key, &dedup_key, &render::trigger(&view))
            };
            ("/v2/enqueue", body)
        };
        let mut shown = body.clone();
        shown["routing_key"] = Value::String(crate::redact::mask_key(key));
        Ok(Outgoing {
            row: row.clone(),
            url: format!("{}{path}", settings.pagerduty_url),
            body,
            notifier: "pagerduty",
            timeout: settings.timeout,
            shown: shown.to_string(),
        })
    }
}

/// The notifier label of a channel: `pagerduty`, `slack` or `webhook`.
fn notifier_kind(settings: &DeliverySettings, channel: &str) -> &'static str {
    if channel == "pagerduty" {
        "pagerduty"
    } else {
        settings
            .notifiers
            .get(channel)
            .map_or("webhook", |n| n.kind.as_str())
    }
}

/// POST one event and read the answer as PagerDuty's (notifiers answer in the same terms:
/// 2xx taken, 429/5xx/no answer retried, other 4xx refused).
async fn send(http: &reqwest::Client, event: &Outgoing) -> Delivery {
    post_json(http, &event.url, &event.body, event.timeout, event.notifier).await
}

/// POST a JSON body and read the answer in PagerDuty's terms (notifiers answer in the same:
/// 2xx taken, 429/5xx/no answer retried, other 4xx refused). `destination` names it in errors.
pub(crate) async fn post_json(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    timeout: Duration,
    destination: &str,
) -> Delivery {
    match http.post(url).json(body).timeout(timeout).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            pagerduty::interpret(status, &body)
        }
        Err(error) if error.is_timeout() => Delivery::Retry(format!(
            "no answer within {}",
            crate::duration::Shown(timeout)
        )),
        Err(error) => Delivery::Retry(format!(
            "cannot reach {destination}: {}",
            root_cause(&error)
        )),
    }
}

fn root_cause(error: &dyn std::error::Error) -> String {
    let mut source = error;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

/// A page as it reads now: its paged incidents with their probes and actions.
pub async fn page_view(
    store: &impl Engine,
    settings: &DeliverySettings,
    dedup_key: &str,
) -> Result<Option<PageView>, StoreError> {
    let Some(page) = store.page(dedup_key).await? else {
        return Ok(None);
    };
    let (group_key, severity) = (page.group_key, page.severity);
    let status = page.status.as_str().to_owned();
    let paged = store
        .paged_incidents(dedup_key, settings.max_incidents)
        .await?;
    let (incidents, more) = (paged.incidents, paged.more);
    let level = crate::page::policy::rank(&severity).clamp(1, 4) as u8;
    let config = settings.severities.get(level);
    let mut view = PageView {
        dedup_key: dedup_key.to_owned(),
        group_key,
        severity: severity.clone(),
        meaning: config.meaning.clone(),
        respond_within: crate::duration::format(config.respond_within),
        pagerduty_severity: config.pagerduty_severity.as_str().to_owned(),
        status,
        incident_commander: config.incident_commander.clone(),
        external_url: settings.external_url.clone(),
        alertmanager_url: settings.alertmanager_url.clone(),
        incidents: Vec::new(),
        more_incidents: more,
    };
    for PagedIncident {
        episode_id,
        severity,
        reason,
        ..
    } in incidents
    {
        let Some(row) = store.episode(&episode_id).await? else {
            continue;
        };
        let trace = store
            .latest_trace(&episode_id)
            .await?
            .unwrap_or(Value::Null);
        let probes = trace["probes"]
            .as_object()
            .map(|probes| {
                probes
                    .iter()
                    .map(|(name, result)| probe_line(name, result))
                    .collect()
            })
            .unwrap_or_default();
        let actions = store
            .actions(&episode_id)
            .await?
            .iter()
            .map(action_line)
            .collect();
        let bundle = store
            .bundle_row(&episode_id)
            .await?
            .filter(|b| matches!(b.state, BundleState::Written | BundleState::Final));
        let recent_errors = bundle
            .as_ref()
            .and_then(|b| serde_json::from_value(b.highlights.clone()).ok())
            .unwrap_or_default();
        let bundle = bundle.and_then(|b| b.path).map(|path| {
            crate::bundle::bundler::bundle_link(
                settings.external_url.as_deref(),
                &settings.state_dir,
                &episode_id,
                &path,
            )
        });
        view.incidents.push(IncidentView {
            id: episode_id.clone(),
            rule: trace["classification"]["matched"][0]["rule"]
                .as_str()
                .unwrap_or("default")
                .to_owned(),
            severity,
            branch: trace["branch"].as_str().unwrap_or_default().to_owned(),
            note: trace["note"].as_str().unwrap_or_default().to_owned(),
            summary: trace["summary"].as_str().unwrap_or_default().to_owned(),
            status: row.status.as_str().to_owned(),
            starts_at: row.starts_at.clone(),
            labels: row.labels.clone().into_iter().collect(),
            annotations: row.annotations.clone().into_iter().collect(),
            generator_url: row.generator_url.clone(),
            page_reason: reason,
            probes,
            actions,
            bundle,
            recent_errors,
        });
    }
    Ok(Some(view))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        let first = backoff(0);
        assert!((1..=2_000).contains(&first), "{first}");
        let later = backoff(20);
        assert!((30_000..=120_000).contains(&later), "{later}");
    }

    #[test]
    fn an_action_row_reads_as_a_line() {
        let row = json!({
            "id": 3, "action": "restart", "kind": "rollout_restart",
            "target": "deployment/vastai/api", "verdict": "cooldown",
            "verdict_detail": {"verdict": "skip", "reason": "cooldown", "since": 1, "shares": 2},
            "state": "skipped", "created_at": "2026-11-28T03:12:05Z", "verified": null,
            "verify_window_ms": 600000,
        });
        let line = action_line(&row);
        assert_eq!(line.shares, Some(2));
        assert_eq!(line.verify_window, "10m");
        assert_eq!(line.detail, "cooldown");
        assert_eq!(line.at.as_deref(), Some("2026-11-28T03:12:05Z"));
    }
}
