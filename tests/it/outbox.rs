//! The paging pipeline end to end through the library API: webhooks into a real store, decisions
//! that page, and the delivery worker sending the durable outbox to a fake PagerDuty (and a fake
//! chat webhook as the fallback) over 127.0.0.1. Time is a hand-moved clock: every test drives
//! the worker tick by tick, moving the clock between ticks, and never sleeps for real beyond a
//! few milliseconds.

use crate::fakes;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::TimeZone;
use nightshift::clock::{Clock, ManualClock, Millis};
use nightshift::config::{NotifierKind, ReconcileConfig, SeveritiesConfig, StoreConfig};
use nightshift::page::notify::deliver::{Deliverer, DeliverySettings, NotifierTarget};
use nightshift::page::policy::{DedupMode, dedup_key};
use nightshift::store::Engine;
use nightshift::store::{
    DecisionRecord, IngestRecord, PageRequest, PagingOp, Store, StoreSettings, WriterThread,
};
use nightshift::telemetry::Metrics;

use crate::fakes::pagerduty::{FakeChat, FakePagerDuty, Mode, PdEvent, ROUTING_KEY};

/// A second routing key of the right length.
const OTHER_KEY: &str = "S3C0NDKEY0123456789abcdef0123456";
const T0: &str = "2026-11-28T02:59:00Z";

struct Pipeline {
    _dir: tempfile::TempDir,
    store: Store,
    writer: Option<WriterThread>,
    clock: Arc<ManualClock>,
    deliverer: Deliverer,
    pd: FakePagerDuty,
    chat: FakeChat,
    metrics: Arc<Metrics>,
}

fn settings(pd: &FakePagerDuty, chat: &FakeChat, default_key: &str) -> DeliverySettings {
    let routing_keys: BTreeMap<String, String> = [
        ("primary".to_owned(), ROUTING_KEY.to_owned()),
        ("secondary".to_owned(), OTHER_KEY.to_owned()),
    ]
    .into_iter()
    .collect();
    let notifiers: BTreeMap<String, NotifierTarget> = [(
        "ops".to_owned(),
        NotifierTarget {
            kind: NotifierKind::Slack,
            url: chat.url(),
            template: None,
            events_per_minute: 600,
            timeout: Duration::from_secs(2),
        },
    )]
    .into_iter()
    .collect();
    DeliverySettings {
        pagerduty_url: pd.url(),
        routing_keys,
        default_routing_key: Some(default_key.to_owned()),
        rule_routing_keys: BTreeMap::new(),
        self_routing_key: None,
        events_per_minute: 100,
        timeout: Duration::from_secs(2),
        change_events: true,
        concurrency: 8,
        notifiers,
        fallback: vec!["ops".to_owned()],
        fallback_after: 120_000,
        external_url: None,
        alertmanager_url: None,
        max_incidents: 20,
        severities: SeveritiesConfig::default(),
        state_dir: std::path::PathBuf::from("/var/lib/nightshift"),
    }
}

impl Pipeline {
    async fn start() -> Pipeline {
        fakes::init();
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(
            chrono::Utc.with_ymd_and_hms(2026, 11, 28, 3, 0, 0).unwrap(),
        ));
        let store_settings = StoreSettings {
            store: StoreConfig {
                dir: dir.path().join("var"),
                ..StoreConfig::default()
            },
            reconcile: ReconcileConfig::default(),
            heartbeat_alertname: Some("Watchdog".to_owned()),
        };
        let metrics = Arc::new(Metrics::new());
        let (store, writer) =
            Store::open(store_settings, 256, clock.clone(), metrics.clone()).unwrap();
        let pd = FakePagerDuty::start().await;
        let chat = FakeChat::start_slack("/services/T000/B000/ops").await;
        let deliverer = Deliverer::new(
            store.clone(),
            clock.clone(),
            metrics.clone(),
            settings(&pd, &chat, "primary"),
        )
        .unwrap();
        Pipeline {
            _dir: dir,
            store,
            writer: Some(writer),
            clock,
            deliverer,
            pd,
            chat,
            metrics,
        }
    }

    fn now(&self) -> Millis {
        self.clock.now_millis()
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// A webhook of `group` with `(instance, status)` alerts, durable and reconciled.
    async fn send(&self, group: &str, alerts: &[(String, &str)]) {
        self.submit(group, alerts).await;
        self.reconciled().await;
    }

    /// A webhook, durable (not waiting for reconcile).
    async fn submit(&self, group: &str, alerts: &[(String, &str)]) {
        let list: Vec<serde_json::Value> = alerts
            .iter()
            .map(|(instance, status)| {
                serde_json::json!({
                    "status": status,
                    "labels": {"alertname": group, "instance": instance, "job": "api"},
                    "annotations": {},
                    "startsAt": T0,
                    "endsAt": "0001-01-01T00:00:00Z",
                })
            })
            .collect();
        let body = serde_json::json!({
            "version": "4", "status": "firing", "groupKey": group, "truncatedAlerts": 0,
            "receiver": "nightshift", "alerts": list,
        })
        .to_string();
        let record = IngestRecord {
            received_at: self.now(),
            remote: "127.0.0.1".to_owned(),
            group_key: group.to_owned(),
            alert_count: alerts.len(),
            body: Bytes::from(body),
        };
        self.store
            .try_submit(record)
            .unwrap()
            .await
            .unwrap()
            .unwrap();
    }

    async fn reconciled(&self) {
        let done = fakes::until(Duration::from_secs(10), || self.store.unreconciled() == 0).await;
        assert!(done, "not reconciled");
    }

    /// Episode ids by (group, instance).
    fn episodes(&self) -> HashMap<(String, String), String> {
        self.store
            .reader()
            .unwrap()
            .incidents(None, 100_000)
            .unwrap()
            .into_iter()
            .map(|i| {
                let label = |name: &str| i.labels[name].as_str().unwrap().to_owned();
                ((label("alertname"), label("instance")), i.id)
            })
            .collect()
    }

    /// Record a decision that pages the episode immediately; returns its dedup key.
    async fn page(
        &self,
        episode_id: &str,
        group: &str,
        severity: &str,
        mode: DedupMode,
        summary: &str,
    ) -> String {
        let key = dedup_key(mode, group, episode_id);
        self.store
            .record_decision(DecisionRecord {
                episode_id: episode_id.to_owned(),
                transition_seq: None,
                kind: nightshift::store::DecisionKind::Initial,
                rule: "api-down".to_owned(),
                severity: severity.to_owned(),
                branch: "page".to_owned(),
                trace: serde_json::json!({"summary": summary, "branch": "page"}).to_string(),
                at: self.now(),
                next_evaluation_at: None,
                bundle_plan: None,
                page: Some(PageRequest {
                    dedup_key: key.clone(),
                    group_key: group.to_owned(),
                    rule: "api-down".to_owned(),
                    severity: severity.to_owned(),
                    policy: "immediate".to_owned(),
                    channels: Vec::new(),
                }),
            })
            .await
            .unwrap();
        key
    }

    /// A new deliverer on the same store, as after a restart of the daemon: its rate limiter
    /// knows only what the store recorded.
    fn restart_deliverer(&mut self) {
        self.deliverer = Deliverer::new(
            self.store.clone(),
            self.clock.clone(),
            Arc::new(Metrics::new()),
            settings(&self.pd, &self.chat, "primary"),
        )
        .unwrap();
    }

    /// `count` groups named `<prefix>-NNN` of one firing incident each, durable and
    /// reconciled; returns their episode ids in order.
    async fn groups(&self, prefix: &str, count: usize) -> Vec<(String, String)> {
        for g in 0..count {
            self.submit(&format!("{prefix}-{g:03}"), &instances(1, "firing"))
                .await;
        }
        self.reconciled().await;
        let episodes = self.episodes();
        (0..count)
            .map(|g| {
                let group = format!("{prefix}-{g:03}");
                let id = episodes[&(group.clone(), "host-0".to_owned())].clone();
                (group, id)
            })
            .collect()
    }

    /// One round, then the clock moves by `step`; returns the manual time of each event
    /// PagerDuty accepted in the round.
    async fn round(&self, step: Duration) -> Vec<Millis> {
        let before = self.pd.accepted().len();
        self.deliverer.tick().await;
        let sent = self.pd.accepted().len() - before;
        let times = vec![self.now(); sent];
        self.advance(step);
        times
    }

    /// Outbox rows still pending (whether due or not).
    fn pending(&self) -> i64 {
        let backlog = self
            .store
            .reader()
            .unwrap()
            .outbox_backlog(self.now())
            .unwrap();
        backlog.channels.iter().map(|channel| channel.pending).sum()
    }

    /// Tick, then move the clock by `step`, until nothing is pending (at most `max_ticks`).
    /// Returns the manual time of each accepted PagerDuty event, in the fake's order.
    async fn drain(&self, step: Duration, max_ticks: usize) -> Vec<Millis> {
        let mut times = Vec::new();
        for _ in 0..max_ticks {
            self.deliverer.tick().await;
            let accepted = self.pd.accepted().len();
            while times.len() < accepted {
                times.push(self.now());
            }
            if self.pending() == 0 {
                return times;
            }
            self.advance(step);
        }
        panic!(
            "the outbox did not drain in {max_ticks} ticks: {} pending",
            self.pending()
        );
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.store.shutdown();
        if let Some(writer) = self.writer.take() {
            writer.join_within(Duration::from_secs(5));
        }
    }
}

fn instances(n: usize, status: &'static str) -> Vec<(String, &'static str)> {
    (0..n).map(|i| (format!("host-{i}"), status)).collect()
}

/// The most instants within any window of `window` ms (half open).
fn max_in_window(times: &[Millis], window: Millis) -> usize {
    let mut times = times.to_vec();
    times.sort_unstable();
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

fn is_p1(event: &PdEvent, p1_keys: &[String]) -> bool {
    p1_keys
        .iter()
        .any(|k| Some(k.as_str()) == event.dedup_key.as_deref())
}

/// The position of the last P1 trigger and of the first other trigger among the accepted.
fn p1_order(accepted: &[PdEvent], p1_keys: &[String]) -> (usize, usize) {
    let triggers: Vec<&PdEvent> = accepted.iter().filter(|e| e.is_trigger()).collect();
    let last_p1 = triggers
        .iter()
        .rposition(|e| is_p1(e, p1_keys))
        .expect("a P1 trigger");
    let first_other = triggers
        .iter()
        .position(|e| !is_p1(e, p1_keys))
        .expect("another trigger");
    (last_p1, first_other)
}

/// 30 incidents in 10 groups, one page each (dedup per incident), 9 of them P1, recorded while
/// PagerDuty answers 500 for ten minutes.
async fn outage(check_p1_first: bool) {
    let p = Pipeline::start().await;
    // The fake's own limit counts real time, which hardly passes here; nightshift's limiter
    // (manual time) is what is under test.
    p.pd.set_rate_limit(1_000_000);
    p.pd.set_mode(Mode::Error500);
    for g in 0..10 {
        p.send(&format!("outage-{g}"), &instances(3, "firing"))
            .await;
    }
    let episodes = p.episodes();
    assert_eq!(episodes.len(), 30);
    let mut keys = Vec::new();
    let mut p1_keys = Vec::new();
    for g in 0..10 {
        let group = format!("outage-{g}");
        let severity = match g {
            0..=2 => "P1",
            3..=6 => "P2",
            _ => "P3",
        };
        for i in 0..3 {
            let id = &episodes[&(group.clone(), format!("host-{i}"))];
            let summary = format!("{group} host-{i} is down");
            let key = p
                .page(id, &group, severity, DedupMode::Incident, &summary)
                .await;
            if severity == "P1" {
                p1_keys.push(key.clone());
            }
            keys.push(key);
        }
    }
    assert_eq!(p.pending(), 30);

    // Ten minutes of 500s, one tick every 5 s.
    let ticks = 120;
    for _ in 0..ticks {
        p.deliverer.tick().await;
        p.advance(Duration::from_secs(5));
    }
    assert!(p.pd.accepted().is_empty());
    // The first round sends the nine P1 pages (nothing is known yet) and holds the rest back
    // once they fail; then one event at a time probes PagerDuty, after a backoff from 1 s
    // doubling to a minute with jitter: about fifteen probes in ten minutes, not thirty
    // events per tick.
    let attempts = p.pd.attempts().len();
    assert!(
        (9 + 5..=9 + 20).contains(&attempts),
        "{attempts} attempts in {ticks} ticks"
    );
    // The probe is always the most urgent page.
    assert!(
        p.pd.attempts()
            .iter()
            .all(|e| p1_keys.contains(e.dedup_key.as_ref().unwrap())),
        "probes: {:?}",
        p.pd.attempts()
            .iter()
            .map(|e| e.summary().to_owned())
            .collect::<Vec<_>>()
    );
    // Failing for longer than fallback_after: every page went to the fallback, once.
    let texts = p.chat.texts();
    assert_eq!(texts.len(), 30, "{texts:#?}");
    for g in 0..10 {
        for i in 0..3 {
            let summary = format!("outage-{g} host-{i} is down");
            let found = texts.iter().filter(|t| t.contains(&summary)).count();
            assert_eq!(found, 1, "{summary}: {texts:#?}");
        }
    }
    assert!(texts.iter().all(|t| t.contains("fallback")), "{texts:#?}");

    // PagerDuty is back.
    p.pd.set_mode(Mode::Accept);
    let times = p.drain(Duration::from_secs(5), 200).await;
    let drained_after = times.last().copied().unwrap_or_default() - times[0];
    println!(
        "outage: {} events accepted in {} s of simulated time after PagerDuty came back",
        times.len(),
        drained_after / 1000
    );
    let accepted = p.pd.accepted();
    assert_eq!(accepted.len(), 30, "only the triggers");
    for key in &keys {
        let events = p.pd.accepted_for(key);
        assert_eq!(events.len(), 1, "{key}");
        assert!(events[0].is_trigger());
        assert_eq!(events[0].routing_key, ROUTING_KEY);
    }
    if check_p1_first {
        let (last_p1, first_other) = p1_order(&accepted, &p1_keys);
        assert!(
            last_p1 < first_other,
            "P1 triggers up to #{last_p1}, another already at #{first_other}: {:?}",
            accepted
                .iter()
                .map(|e| e.summary().to_owned())
                .collect::<Vec<_>>()
        );
    }
    // Nothing more for the fallback once PagerDuty took them.
    assert_eq!(p.chat.texts().len(), 30);
    p.pd.assert_no_unexpected();
    p.chat.assert_no_unexpected();
}

#[tokio::test]
async fn a_ten_minute_pagerduty_outage_delivers_every_page_afterwards_p1_first_each_once() {
    outage(true).await;
}

/// 2000 incidents in 200 groups (20 P1 groups), one page per group.
async fn storm() {
    let p = Pipeline::start().await;
    p.pd.set_rate_limit(1_000_000);
    for g in 0..200 {
        p.submit(&format!("storm-{g:03}"), &instances(10, "firing"))
            .await;
    }
    p.reconciled().await;
    let episodes = p.episodes();
    assert_eq!(episodes.len(), 2000);
    let mut group_keys = Vec::new();
    let mut p1_keys = Vec::new();
    let mut decisions = tokio::task::JoinSet::new();
    for g in 0..200 {
        let group = format!("storm-{g:03}");
        let severity = match g % 10 {
            0 => "P1",
            1..=5 => "P2",
            _ => "P3",
        };
        let key = dedup_key(DedupMode::Group, &group, "");
        if severity == "P1" {
            p1_keys.push(key.clone());
        }
        group_keys.push(key.clone());
        for i in 0..10 {
            let id = episodes[&(group.clone(), format!("host-{i}"))].clone();
            let store = p.store.clone();
            let at = p.now();
            let group = group.clone();
            let key = key.clone();
            decisions.spawn(async move {
                store
                    .record_decision(DecisionRecord {
                        episode_id: id.clone(),
                        transition_seq: None,
                        kind: nightshift::store::DecisionKind::Initial,
                        rule: "api-down".to_owned(),
                        severity: severity.to_owned(),
                        branch: "page".to_owned(),
                        trace: serde_json::json!({"summary": format!("{group} host-{i} is down")})
                            .to_string(),
                        at,
                        next_evaluation_at: None,
                        bundle_plan: None,
                        page: Some(PageRequest {
                            dedup_key: key,
                            group_key: group,
                            rule: "api-down".to_owned(),
                            severity: severity.to_owned(),
                            policy: "immediate".to_owned(),
                            channels: Vec::new(),
                        }),
                    })
                    .await
                    .unwrap()
            });
        }
    }
    while let Some(done) = decisions.join_next().await {
        done.unwrap();
    }
    assert_eq!(p1_keys.len(), 20);
    assert_eq!(p.pending(), 200, "one trigger per group, not per incident");

    let times = p.drain(Duration::from_secs(1), 20 * 60).await;
    let accepted = p.pd.accepted();
    let triggers: Vec<&PdEvent> = accepted.iter().filter(|e| e.is_trigger()).collect();
    let last = *times.last().unwrap() - times[0];
    let busiest = max_in_window(&times, 60_000);
    println!(
        "storm: {} triggers accepted; the last {} s (simulated) after the first; at most {} \
         in any 60 s window",
        triggers.len(),
        last / 1000,
        busiest
    );
    assert_eq!(accepted.len(), 200);
    assert_eq!(triggers.len(), 200);
    for key in &group_keys {
        assert_eq!(p.pd.accepted_for(key).len(), 1, "{key}");
    }
    let (last_p1, first_other) = p1_order(&accepted, &p1_keys);
    assert!(
        last_p1 < first_other,
        "P1 up to #{last_p1}, another at #{first_other}"
    );
    assert_eq!(last_p1, 19);
    assert!(
        busiest <= 100,
        "{busiest} events within 60 s of manual time; the limit is 100 a minute"
    );
    assert!(p.chat.messages().is_empty(), "no fallback");
    assert!(p.pd.rate_limited().is_empty());
    p.pd.assert_no_unexpected();
    p.chat.assert_no_unexpected();
}

#[tokio::test]
async fn a_storm_of_2000_incidents_in_200_groups_stays_within_the_rate_limit_p1_first_without_fallback()
 {
    storm().await;
}

#[tokio::test]
async fn a_400_goes_to_the_fallback_and_is_shown() {
    let p = Pipeline::start().await;
    let error = "Length of 'routing_key' is incorrect";
    p.pd.set_mode(Mode::Reject400(vec![error.to_owned()]));
    p.send("checkout", &instances(1, "firing")).await;
    let id = p.episodes()[&("checkout".to_owned(), "host-0".to_owned())].clone();
    let summary = "checkout is returning 502s";
    let key = p
        .page(&id, "checkout", "P2", DedupMode::Group, summary)
        .await;

    assert_eq!(p.deliverer.tick().await, 1);
    assert_eq!(p.pd.attempts_for(&key), 1);
    assert!(p.pd.accepted().is_empty());
    // The fallback row is queued by that answer and sent on the next round.
    for _ in 0..10 {
        p.advance(Duration::from_secs(1));
        p.deliverer.tick().await;
    }
    let texts = p.chat.texts();
    assert_eq!(texts.len(), 1, "{texts:#?}");
    assert!(texts[0].contains(summary), "{}", texts[0]);
    assert!(texts[0].contains("fallback"), "{}", texts[0]);
    assert!(texts[0].contains(error), "{}", texts[0]);
    // Never retried.
    assert_eq!(p.pd.attempts_for(&key), 1);
    assert_eq!(p.pending(), 0);

    let paging = p.store.reader().unwrap().incident_paging(&id).unwrap();
    assert_eq!(paging["state"], "paged");
    let events = paging["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{paging:#}");
    let trigger = events.iter().find(|e| e["channel"] == "pagerduty").unwrap();
    assert_eq!(trigger["kind"], "trigger");
    assert_eq!(trigger["state"], "rejected");
    assert_eq!(trigger["attempts"], 1);
    assert!(
        trigger["last_error"].as_str().unwrap().contains(error),
        "{trigger:#}"
    );
    assert!(trigger["fallback_at"].is_string());
    assert_eq!(p.metrics.notify_fallbacks_total.get(), 1);
    let fallback = events.iter().find(|e| e["channel"] == "ops").unwrap();
    assert_eq!(fallback["state"], "delivered");
    assert!(
        fallback["reason"]
            .as_str()
            .unwrap()
            .starts_with("fallback: PagerDuty rejected the page"),
        "{fallback:#}"
    );
    p.pd.assert_no_unexpected();
    p.chat.assert_no_unexpected();
}

#[tokio::test]
async fn with_no_fallback_notifier_nothing_counts_as_handed_to_one() {
    // The shipped "fallback used" alert must not fire on a default install, where the
    // fallback list is empty.
    let p = Pipeline::start().await;
    if let Ok(mut slot) = p.deliverer.settings.write() {
        let mut settings = (**slot).clone();
        settings.fallback.clear();
        *slot = Arc::new(settings);
    }
    p.pd.set_mode(Mode::Reject400(vec!["bad routing key".to_owned()]));
    p.send("checkout", &instances(1, "firing")).await;
    let id = p.episodes()[&("checkout".to_owned(), "host-0".to_owned())].clone();
    p.page(&id, "checkout", "P2", DedupMode::Group, "checkout down")
        .await;
    assert_eq!(p.deliverer.tick().await, 1);
    // Proof the rejection was processed: the trigger is marked as fallen back (to nobody).
    let paging = p.store.reader().unwrap().incident_paging(&id).unwrap();
    let events = paging["events"].as_array().unwrap();
    let trigger = events.iter().find(|e| e["channel"] == "pagerduty").unwrap();
    assert_eq!(trigger["state"], "rejected", "{paging:#}");
    assert!(trigger["fallback_at"].is_string(), "{paging:#}");
    assert_eq!(events.len(), 1, "nothing queued for a fallback: {paging:#}");
    assert_eq!(p.metrics.notify_fallbacks_total.get(), 0);
    assert!(p.chat.messages().is_empty());
    p.pd.assert_no_unexpected();
}

#[tokio::test]
async fn trigger_then_resolve_use_the_same_dedup_and_routing_key() {
    let p = Pipeline::start().await;
    p.send("payments", &instances(1, "firing")).await;
    let id = p.episodes()[&("payments".to_owned(), "host-0".to_owned())].clone();
    let key = p
        .page(&id, "payments", "P1", DedupMode::Group, "payments are down")
        .await;
    p.drain(Duration::from_secs(1), 10).await;
    let triggers = p.pd.accepted_triggers();
    assert_eq!(triggers.len(), 1);
    assert_eq!(triggers[0].routing_key, ROUTING_KEY);
    assert_eq!(triggers[0].dedup_key.as_deref(), Some(key.as_str()));

    // The configuration changes: P1 (and the default) now route to another integration.
    let mut changed = settings(&p.pd, &p.chat, "secondary");
    changed.severities.p1.routing_key = Some("secondary".to_owned());
    *p.deliverer.settings.write().unwrap() = Arc::new(changed);

    // A new page takes the new key...
    p.send("search", &instances(1, "firing")).await;
    let other = p.episodes()[&("search".to_owned(), "host-0".to_owned())].clone();
    let other_key = p
        .page(&other, "search", "P1", DedupMode::Group, "search is down")
        .await;
    // ...while the open page resolves where it was triggered.
    p.advance(Duration::from_secs(60));
    p.send("payments", &instances(1, "resolved")).await;
    let closed = p
        .store
        .paging(PagingOp::Close(vec![id.clone()]))
        .await
        .unwrap();
    assert_eq!(closed.count, 1);
    p.drain(Duration::from_secs(1), 10).await;

    let events = p.pd.accepted_for(&key);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[0].is_trigger());
    assert!(events[1].is_resolve());
    assert_eq!(events[1].routing_key, ROUTING_KEY);
    assert_eq!(events[1].dedup_key.as_deref(), Some(key.as_str()));
    let new = p.pd.accepted_for(&other_key);
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].routing_key, OTHER_KEY);
    assert_eq!(
        p.store
            .reader()
            .unwrap()
            .page(&key)
            .unwrap()
            .unwrap()
            .routing_key
            .as_deref(),
        Some(ROUTING_KEY)
    );
    assert!(p.chat.messages().is_empty());
    p.pd.assert_no_unexpected();
    p.chat.assert_no_unexpected();
}

#[tokio::test]
async fn a_failing_pagerduty_is_probed_by_one_event_at_a_time_and_reopens_for_all() {
    let p = Pipeline::start().await;
    p.pd.set_rate_limit(1_000_000);
    p.pd.set_mode(Mode::Error500);
    let mut keys = Vec::new();
    for g in 0..10 {
        let group = format!("probe-{g}");
        p.send(&group, &instances(1, "firing")).await;
        let id = p.episodes()[&(group.clone(), "host-0".to_owned())].clone();
        keys.push(p.page(&id, &group, "P2", DedupMode::Group, "down").await);
    }
    // Three minutes, a tick a second.
    // The first round does not know yet: it sends what is due, as far as the rate limit
    // lets P2 pages go (half the burst; the rest is kept for P1).
    p.deliverer.tick().await;
    assert_eq!(p.pd.attempts().len(), 5);
    p.advance(Duration::from_secs(1));
    let mut rounds_with_attempts = 0;
    for _ in 0..180 {
        let before = p.pd.attempts().len();
        p.deliverer.tick().await;
        let sent = p.pd.attempts().len() - before;
        assert!(
            sent <= 1,
            "{sent} events sent to a failing PagerDuty in one round"
        );
        rounds_with_attempts += sent;
        p.advance(Duration::from_secs(1));
    }
    // Backoff 1, 2, 4, … up to 60 s: a handful of probes, not 180.
    assert!(
        (4..=12).contains(&rounds_with_attempts),
        "{rounds_with_attempts} probes in 180 s"
    );
    // It comes back: the next probe succeeds and everything goes in the following rounds.
    p.pd.set_mode(Mode::Accept);
    p.drain(Duration::from_secs(1), 120).await;
    for key in &keys {
        assert_eq!(p.pd.accepted_for(key).len(), 1, "{key}");
    }
    p.pd.assert_no_unexpected();
}

#[tokio::test]
async fn a_restart_within_a_minute_keeps_every_minute_within_the_rate_limit() {
    let mut p = Pipeline::start().await;
    p.pd.set_rate_limit(1_000_000);
    // 200 P1 pages: each may take the whole burst.
    for (group, id) in p.groups("restart", 200).await {
        p.page(&id, &group, "P1", DedupMode::Group, "down").await;
    }
    let mut times = Vec::new();
    for _ in 0..30 {
        times.extend(p.round(Duration::from_secs(1)).await);
    }
    assert!(
        (50..=60).contains(&times.len()),
        "a burst of 10 and 1.5 a second: {}",
        times.len()
    );
    // The daemon restarts 30 s into the storm; a fresh bucket would let a second burst of
    // 10 through within the same minute.
    p.restart_deliverer();
    let before = times.len();
    for _ in 0..90 {
        times.extend(p.round(Duration::from_secs(1)).await);
    }
    let busiest = max_in_window(&times, 60_000);
    assert!(
        busiest <= 100,
        "{busiest} events within 60 s of manual time across the restart; the limit is 100"
    );
    // And the limit is still used after the restart: 1.5 a second from where the bucket
    // stood, with nothing held back for events queued before the start.
    let after = times.len() - before;
    assert!(after >= 130, "{after} in the 90 s after the restart");
    p.drain(Duration::from_secs(1), 120).await;
    assert_eq!(p.pd.accepted().len(), 200);

    // A restart after a quiet minute loses nothing: a whole burst goes at once.
    p.advance(Duration::from_secs(61));
    p.restart_deliverer();
    for (group, id) in p.groups("quiet", 10).await {
        p.page(&id, &group, "P1", DedupMode::Group, "down").await;
    }
    assert_eq!(p.round(Duration::from_secs(1)).await.len(), 10);
    assert!(p.pd.rate_limited().is_empty());
    p.pd.assert_no_unexpected();
}

#[tokio::test]
async fn a_round_cut_off_after_it_was_marked_sending_counts_against_the_limit_after_a_restart() {
    let mut p = Pipeline::start().await;
    p.pd.set_rate_limit(1_000_000);
    for (group, id) in p.groups("cut", 200).await {
        p.page(&id, &group, "P1", DedupMode::Group, "down").await;
    }
    // The first round takes its burst of 10 and marks them as being sent, and the daemon is
    // killed before any answer is recorded: for all anyone knows, all 10 reached PagerDuty.
    let due: Vec<i64> = p
        .store
        .reader()
        .unwrap()
        .due_outbox(p.now(), 10)
        .unwrap()
        .iter()
        .map(|row| row.id)
        .collect();
    let marked = p.store.paging(PagingOp::Sending(due)).await.unwrap();
    assert_eq!(marked.count, 10);
    let mut times = vec![p.now(); 10];
    p.advance(Duration::from_millis(500));
    p.restart_deliverer();
    // The restarted deliverer counts them: the burst is spent, so nothing goes yet...
    assert!(p.round(Duration::from_millis(500)).await.is_empty());
    // ...and then 1.5 a second; no minute sees more than the limit, counting the cut round
    // (a fresh bucket would send 10 more at once: 110 in the first minute).
    for _ in 0..90 {
        times.extend(p.round(Duration::from_secs(1)).await);
    }
    let busiest = max_in_window(&times, 60_000);
    assert!(
        busiest <= 100,
        "{busiest} events within 60 s of manual time, the cut round included; the limit is 100"
    );
    assert!(
        times.len() - 10 >= 130,
        "{} after the restart",
        times.len() - 10
    );
    // The cut round's events were never answered: they are sent again (same dedup keys) and
    // every page reaches PagerDuty.
    p.drain(Duration::from_secs(1), 120).await;
    assert_eq!(p.pd.accepted().len(), 200);
    assert!(p.pd.rate_limited().is_empty());
    p.pd.assert_no_unexpected();
}

#[tokio::test]
async fn a_restart_with_a_backlog_after_a_quiet_minute_sends_a_full_burst_at_once() {
    let mut p = Pipeline::start().await;
    p.pd.set_rate_limit(1_000_000);
    for (group, id) in p.groups("backlog", 40).await {
        p.page(&id, &group, "P1", DedupMode::Group, "down").await;
    }
    let mut times = Vec::new();
    for _ in 0..5 {
        times.extend(p.round(Duration::from_secs(1)).await);
    }
    assert!((15..=17).contains(&times.len()), "{}", times.len());
    // The last round is cut off after it was marked, and the daemon stays down for over a
    // minute with the rest of the backlog pending.
    let due: Vec<i64> = p
        .store
        .reader()
        .unwrap()
        .due_outbox(p.now(), 1)
        .unwrap()
        .iter()
        .map(|row| row.id)
        .collect();
    assert_eq!(
        p.store.paging(PagingOp::Sending(due)).await.unwrap().count,
        1
    );
    times.push(p.now());
    p.advance(Duration::from_secs(61));
    p.restart_deliverer();
    assert!(p.pending() > 20, "{} pending", p.pending());
    // Nothing went out in the last minute: a whole burst goes at once, none of it held back
    // for the events queued before the start.
    let burst = p.round(Duration::from_secs(1)).await;
    assert_eq!(burst.len(), 10);
    times.extend(burst);
    for _ in 0..60 {
        times.extend(p.round(Duration::from_secs(1)).await);
    }
    assert_eq!(p.pd.accepted().len(), 40);
    assert_eq!(p.pending(), 0);
    assert!(max_in_window(&times, 60_000) <= 100);
    p.pd.assert_no_unexpected();
}

#[tokio::test]
async fn first_triggers_go_before_updates_of_pages_already_open() {
    let p = Pipeline::start().await;
    p.pd.set_rate_limit(1_000_000);
    // Five P1 pages, delivered.
    let mut open = Vec::new();
    for g in 0..5 {
        let group = format!("open-{g}");
        p.send(&group, &instances(2, "firing")).await;
        let episodes = p.episodes();
        let first = &episodes[&(group.clone(), "host-0".to_owned())];
        open.push(p.page(first, &group, "P1", DedupMode::Group, "down").await);
    }
    p.drain(Duration::from_secs(1), 10).await;
    assert_eq!(p.pd.accepted_triggers().len(), 5);
    p.advance(Duration::from_secs(60));
    // A second incident in each: the open pages are sent again (updates, at P1). Then five
    // new P3 pages: their first triggers go before the updates.
    for (g, key) in open.iter().enumerate() {
        let group = format!("open-{g}");
        let second = &p.episodes()[&(group.clone(), "host-1".to_owned())];
        assert_eq!(
            &p.page(second, &group, "P1", DedupMode::Group, "down").await,
            key
        );
    }
    let mut new = Vec::new();
    for (group, id) in p.groups("new", 5).await {
        new.push(p.page(&id, &group, "P3", DedupMode::Group, "slow").await);
    }
    p.drain(Duration::from_secs(1), 60).await;
    let order: Vec<String> = p.pd.accepted_triggers()[5..]
        .iter()
        .map(|e| e.dedup_key.clone().unwrap())
        .collect();
    assert_eq!(order.len(), 10);
    assert!(
        order[..5].iter().all(|key| new.contains(key)),
        "the new pages' first triggers first: {order:?}"
    );
    assert!(order[5..].iter().all(|key| open.contains(key)), "{order:?}");
    p.pd.assert_no_unexpected();
}

#[tokio::test]
async fn a_p1_decided_just_after_a_burst_of_other_pages_goes_at_once() {
    let p = Pipeline::start().await;
    p.pd.set_rate_limit(1_000_000);
    let others = p.groups("p2", 20).await;
    let p1 = p.groups("p1", 3).await;
    for (group, id) in &others {
        p.page(id, group, "P2", DedupMode::Group, "degraded").await;
    }
    // The P2 pages take only the half of the burst that is not kept for P1.
    let mut times = p.round(Duration::from_millis(100)).await;
    assert_eq!(times.len(), 5);
    // P1 pages decided a moment later still go at once.
    let mut p1_keys = Vec::new();
    for (group, id) in &p1 {
        p1_keys.push(p.page(id, group, "P1", DedupMode::Group, "down").await);
    }
    times.extend(p.round(Duration::from_secs(1)).await);
    let accepted = p.pd.accepted_triggers();
    assert_eq!(accepted.len(), 8, "the three P1 pages in the next round");
    assert!(
        accepted[5..]
            .iter()
            .all(|e| p1_keys.contains(e.dedup_key.as_ref().unwrap())),
        "{accepted:?}"
    );
    // Everything else follows within the limit.
    for _ in 0..60 {
        times.extend(p.round(Duration::from_secs(1)).await);
    }
    assert_eq!(p.pd.accepted_triggers().len(), 23);
    assert!(max_in_window(&times, 60_000) <= 100);
    p.pd.assert_no_unexpected();
}
