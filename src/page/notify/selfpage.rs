//! Pages about nightshift itself, sent from memory: the store may be the thing that is broken,
//! so these never go through the outbox. Two conditions page, each under a fixed dedup key,
//! and resolve when they clear:
//!
//! - the store has failed for `store_failing_after` ("nightshift store failing: <error>; N
//!   webhooks refused with 503");
//! - the Watchdog heartbeat has not arrived for `watchdog.timeout` ("alerting pipeline is
//!   down: no Watchdog from Alertmanager since 02:10").
//!
//! Each goes to PagerDuty (the self routing key) and to every fallback notifier, and is sent
//! again until taken. State lives in memory: after a restart a condition that still holds pages
//! again under the same key, which PagerDuty folds into the open alert.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, json};
use tokio_util::sync::CancellationToken;

use super::deliver::Deliverer;
use super::pagerduty::{self, Delivery, Trigger};
use crate::clock::{Millis, duration_millis, millis_to_datetime};
use crate::config::NotifierKind;
use crate::store::Store;

/// The Watchdog heartbeat: when one last arrived.
#[derive(Debug)]
pub struct Heartbeat {
    pub alertname: String,
    last_seen: AtomicI64,
    seen_any: std::sync::atomic::AtomicBool,
}

impl Heartbeat {
    /// `started` counts as the first sign of life, so a fresh start waits a full timeout.
    pub fn new(alertname: &str, started: Millis) -> Heartbeat {
        Heartbeat {
            alertname: alertname.to_owned(),
            last_seen: AtomicI64::new(started),
            seen_any: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Note the heartbeats among a webhook's alerts (repeats count too).
    pub fn observe(
        &self,
        notification: &crate::ingest::webhook::Notification,
        now: Millis,
    ) -> bool {
        if self.alertname.is_empty() {
            return false;
        }
        let beating = notification.alerts.iter().any(|alert| {
            alert.status == crate::ingest::webhook::Status::Firing
                && alert.labels.get("alertname") == Some(&self.alertname)
        });
        if beating {
            self.last_seen.fetch_max(now, Ordering::Relaxed);
            self.seen_any.store(true, Ordering::Relaxed);
        }
        beating
    }

    pub fn last_seen(&self) -> (Millis, bool) {
        (
            self.last_seen.load(Ordering::Relaxed),
            self.seen_any.load(Ordering::Relaxed),
        )
    }
}

/// What the self pager watches and how.
pub struct SelfPager {
    pub deliverer: Arc<Deliverer>,
    pub store: Store,
    pub heartbeat: Arc<Heartbeat>,
    /// `None`: the Watchdog is not expected.
    pub watchdog_timeout: Option<Duration>,
    pub store_failing_after: Duration,
    state: Mutex<SelfState>,
}

#[derive(Default)]
struct SelfState {
    store_failing_since: Option<(Millis, u64)>,
    /// Per condition: the summary wanted (None: resolved) and whether PagerDuty and the
    /// fallback notifiers have it.
    conditions: BTreeMap<&'static str, Condition>,
}

#[derive(Default, Clone)]
struct Condition {
    want: Option<String>,
    /// The state PagerDuty last took: Some(true) triggered, Some(false) resolved.
    pagerduty: Option<bool>,
    notifiers: Option<bool>,
}

impl SelfPager {
    pub fn new(
        deliverer: Arc<Deliverer>,
        store: Store,
        heartbeat: Arc<Heartbeat>,
        watchdog_timeout: Option<Duration>,
        store_failing_after: Duration,
    ) -> SelfPager {
        SelfPager {
            deliverer,
            store,
            heartbeat,
            watchdog_timeout,
            store_failing_after,
            state: Mutex::default(),
        }
    }

    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            self.tick().await;
        }
    }

    /// The dedup key of a condition.
    pub fn dedup_key(reason: &str) -> String {
        format!("nightshift/self/{reason}")
    }

    /// Look at the conditions and send what changed.
    pub async fn tick(&self) {
        let now = self.deliverer.clock.now_millis();
        let refused = self
            .deliverer
            .metrics
            .webhook_requests_total
            .with_label_values(&["store_unavailable"])
            .get();
        let store_want = match self.store.health() {
            Err(error) => {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let (since, refused_before) =
                    *state.store_failing_since.get_or_insert((now, refused));
                (now - since >= duration_millis(self.store_failing_after)).then(|| {
                    format!(
                        "nightshift store failing: {error}; {} webhooks refused with 503",
                        refused.saturating_sub(refused_before)
                    )
                })
            }
            Ok(()) => {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                state.store_failing_since = None;
                None
            }
        };
        let watchdog_want = self.watchdog_timeout.and_then(|timeout| {
            let (last, seen) = self.heartbeat.last_seen();
            self.deliverer
                .metrics
                .watchdog_last_seen_timestamp_seconds
                .set(if seen { last / 1000 } else { 0 });
            (now - last > duration_millis(timeout)).then(|| {
                let since = millis_to_datetime(last).format("%H:%M UTC on %Y-%m-%d");
                if seen {
                    format!("alerting pipeline is down: no {} from Alertmanager since {since}", self.heartbeat.alertname)
                } else {
                    format!(
                        "alerting pipeline is down: no {} from Alertmanager since nightshift started at {since}",
                        self.heartbeat.alertname
                    )
                }
            })
        });
        for (reason, want) in [("store", store_want), ("watchdog", watchdog_want)] {
            self.deliverer
                .metrics
                .self_page_active
                .with_label_values(&[reason])
                .set(i64::from(want.is_some()));
            let condition = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let condition = state.conditions.entry(reason).or_default();
                // The text is kept from the trigger: only a change of state is news.
                if want.is_some() != condition.want.is_some() {
                    condition.want = want;
                }
                condition.clone()
            };
            let triggered = condition.want.is_some();
            // Nothing was ever triggered: there is nothing to resolve.
            if condition.pagerduty.is_none() && !triggered {
                continue;
            }
            if condition.pagerduty != Some(triggered) {
                let taken = self.send_pagerduty(reason, condition.want.as_deref()).await;
                if taken {
                    self.set(reason, |c| c.pagerduty = Some(triggered));
                }
            }
            if condition.notifiers != Some(triggered) {
                let taken = self.send_notifiers(reason, condition.want.as_deref()).await;
                if taken {
                    self.set(reason, |c| c.notifiers = Some(triggered));
                }
            }
        }
    }

    fn set(&self, reason: &'static str, change: impl FnOnce(&mut Condition)) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        change(state.conditions.entry(reason).or_default());
    }

    /// Send the trigger (or resolve) to PagerDuty; true once it was taken, or when PagerDuty
    /// is not configured.
    async fn send_pagerduty(&self, reason: &str, want: Option<&str>) -> bool {
        let settings = self.deliverer.settings();
        let Some(key) = settings.self_routing_key() else {
            return true;
        };
        let dedup_key = Self::dedup_key(reason);
        let event = match want {
            Some(summary) => {
                let mut details = Map::new();
                details.insert("condition".to_owned(), json!(reason));
                details.insert(
                    "what to do".to_owned(),
                    json!(match reason {
                        "store" =>
                            "check the state directory's disk (space, read-only mount) and \
                                    journalctl -u nightshift; Alertmanager keeps retrying refused \
                                    webhooks, nothing acknowledged is lost",
                        _ =>
                            "check Prometheus and Alertmanager are up and that Alertmanager's \
                              Watchdog route reaches nightshift",
                    }),
                );
                // What kind of failure (full, read_only, io, ...), so the one paged knows
                // whether to free space, remount, or restore the store before reading logs.
                if reason == "store"
                    && let Some(error) = self.store.last_write_error()
                {
                    details.insert("store_error".to_owned(), json!(error.kind().label()));
                }
                pagerduty::trigger_event(
                    &key,
                    &dedup_key,
                    &Trigger {
                        summary: summary.to_owned(),
                        source: "nightshift".to_owned(),
                        severity: "critical".to_owned(),
                        class: Some(format!("nightshift-{reason}")),
                        component: Some("nightshift".to_owned()),
                        custom_details: details,
                        ..Trigger::default()
                    },
                )
            }
            None => pagerduty::resolve_event(&key, &dedup_key),
        };
        let url = format!("{}/v2/enqueue", settings.pagerduty_url);
        let delivery = super::deliver::post_json(
            &self.deliverer.http,
            &url,
            &event,
            settings.timeout,
            "pagerduty",
        )
        .await;
        self.record("pagerduty", &delivery);
        match delivery {
            Delivery::Accepted => true,
            Delivery::Retry(error) => {
                tracing::error!(reason, %error, "self-page not delivered; retrying");
                false
            }
            Delivery::Rejected(errors) => {
                tracing::error!(
                    reason,
                    errors = %errors.join("; "),
                    "PagerDuty rejected a self-page; not retried"
                );
                true
            }
        }
    }

    /// Send the message to every fallback notifier; true once all took it.
    async fn send_notifiers(&self, reason: &str, want: Option<&str>) -> bool {
        let settings = self.deliverer.settings();
        let text = match want {
            Some(summary) => format!("🔴 nightshift self-page: {summary}"),
            None => format!("✅ nightshift self-page resolved: {reason} is healthy again"),
        };
        let mut all = true;
        for name in &settings.fallback {
            let Some(notifier) = settings.notifiers.get(name) else {
                continue;
            };
            let body = match notifier.kind {
                NotifierKind::Slack => super::render::slack_body(&text),
                NotifierKind::Webhook => json!({
                    "version": "1",
                    "event": if want.is_some() { "trigger" } else { "resolve" },
                    "text": text,
                    "self_page": reason,
                }),
            };
            let delivery = super::deliver::post_json(
                &self.deliverer.http,
                &notifier.url,
                &body,
                notifier.timeout,
                notifier.kind.as_str(),
            )
            .await;
            self.record(notifier.kind.as_str(), &delivery);
            if let Delivery::Retry(error) = delivery {
                tracing::error!(reason, notifier = %name, %error, "self-page not delivered to a notifier; retrying");
                all = false;
            }
        }
        all
    }

    fn record(&self, notifier: &str, delivery: &Delivery) {
        let outcome = match delivery {
            Delivery::Accepted => "delivered",
            Delivery::Retry(_) => "retry",
            Delivery::Rejected(_) => "rejected",
        };
        self.deliverer
            .metrics
            .notify_events_total
            .with_label_values(&[notifier, outcome])
            .inc();
    }
}
