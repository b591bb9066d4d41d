//! Tests of the store's paging steps with a hand-moved clock: decisions in, incident pages,
//! pages and outbox rows out. No network: delivery is simulated by recording attempts.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::TimeZone;

use super::{Attempt, OutboxRow, PageRequest};
use crate::act::governor::{Limits, Mode, VerdictKind};
use crate::clock::{Clock, ManualClock, Millis};
use crate::config::{ReconcileConfig, StoreConfig};
use crate::page::policy::DedupMode;
use crate::store::Engine;
use crate::store::{
    ActionPlan, DecisionRecord, IngestRecord, PagingDone, PagingOp, Reader, Store, StoreSettings,
    Verified, WriterThread,
};
use crate::store::{ActionState, DecisionKind, OutboxKind, PageStatus};
use crate::telemetry::Metrics;

const T0: &str = "2026-11-28T02:59:00Z";

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    writer: Option<WriterThread>,
    clock: Arc<ManualClock>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(
            chrono::Utc.with_ymd_and_hms(2026, 11, 28, 3, 0, 0).unwrap(),
        ));
        let settings = StoreSettings {
            store: StoreConfig {
                dir: dir.path().join("var"),
                max_unreconciled: 1000,
                ..StoreConfig::default()
            },
            reconcile: ReconcileConfig {
                gone_grace: Duration::from_secs(600),
                ..ReconcileConfig::default()
            },
            heartbeat_alertname: Some("Watchdog".to_owned()),
        };
        let (store, writer) =
            Store::open(settings, 64, clock.clone(), Arc::new(Metrics::new())).unwrap();
        Fixture {
            _dir: dir,
            store,
            writer: Some(writer),
            clock,
        }
    }

    fn now(&self) -> Millis {
        self.clock.now_millis()
    }

    fn reader(&self) -> Reader {
        self.store.reader().unwrap()
    }

    /// Submit a snapshot of `(instance, status)` alerts of `group` and wait until it is
    /// durable and reconciled.
    async fn send(&self, group: &str, alerts: &[(&str, &str)]) {
        let alerts: Vec<serde_json::Value> = alerts
            .iter()
            .map(|(instance, status)| {
                serde_json::json!({
                    "status": status,
                    "labels": {"alertname": group, "instance": instance},
                    "annotations": {},
                    "startsAt": T0,
                    "endsAt": "0001-01-01T00:00:00Z",
                })
            })
            .collect();
        let count = alerts.len();
        let body = serde_json::json!({
            "version": "4", "status": "firing", "groupKey": group, "truncatedAlerts": 0,
            "alerts": alerts,
        })
        .to_string();
        let record = IngestRecord {
            received_at: self.now(),
            remote: "test".to_owned(),
            group_key: group.to_owned(),
            alert_count: count,
            body: Bytes::from(body),
        };
        self.store
            .try_submit(record)
            .unwrap()
            .await
            .unwrap()
            .unwrap();
        for _ in 0..1000 {
            if self.store.unreconciled() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("not reconciled");
    }

    /// The episode id of `instance` in `group` (the latest one).
    fn episode(&self, group: &str, instance: &str) -> String {
        self.reader()
            .incidents(None, 1000)
            .unwrap()
            .into_iter()
            .find(|i| {
                i.labels["alertname"].as_str() == Some(group)
                    && i.labels["instance"].as_str() == Some(instance)
            })
            .unwrap_or_else(|| panic!("no incident {group}/{instance}"))
            .id
    }

    /// Record a decision for the episode of `instance` in `group`, with its page request.
    async fn decide(&self, group: &str, instance: &str, severity: &str, policy: &str) -> String {
        let id = self.episode(group, instance);
        let request = PageRequest {
            dedup_key: crate::page::policy::dedup_key(DedupMode::Group, group, &id),
            group_key: group.to_owned(),
            rule: "rule-a".to_owned(),
            severity: severity.to_owned(),
            policy: policy.to_owned(),
            channels: Vec::new(),
        };
        self.store
            .record_decision(DecisionRecord {
                episode_id: id.clone(),
                transition_seq: None,
                kind: DecisionKind::Initial,
                rule: "rule-a".to_owned(),
                severity: severity.to_owned(),
                branch: "b".to_owned(),
                trace: serde_json::json!({"summary": format!("{group} {instance} is down")})
                    .to_string(),
                at: self.now(),
                next_evaluation_at: None,
                bundle_plan: None,
                page: Some(request),
            })
            .await
            .unwrap();
        id
    }

    async fn paging(&self, op: PagingOp) -> PagingDone {
        self.store.paging(op).await.unwrap()
    }

    fn due(&self) -> Vec<OutboxRow> {
        self.reader().due_outbox(self.now(), 1000).unwrap()
    }

    /// `(channel, kind, state)` of every outbox row of the incident's page, oldest first.
    fn events(&self, episode_id: &str) -> Vec<(String, String, String)> {
        let paging = self.reader().incident_paging(episode_id).unwrap();
        paging["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["channel"].as_str().unwrap().to_owned(),
                    e["kind"].as_str().unwrap().to_owned(),
                    e["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    fn paging_state(&self, episode_id: &str) -> (String, String) {
        let paging = self.reader().incident_paging(episode_id).unwrap();
        (
            paging["state"].as_str().unwrap().to_owned(),
            paging["reason"].as_str().unwrap().to_owned(),
        )
    }

    /// Plan an action on the episode and carry it out to `final_state` (`None`: leave it
    /// planned). Returns the action id.
    async fn act(
        &self,
        episode_id: &str,
        target: &str,
        mode: Mode,
        final_state: Option<&str>,
    ) -> (i64, VerdictKind) {
        let planned = self
            .store
            .plan_action(ActionPlan {
                key: format!("{episode_id}|restart-rule|restart|{target}"),
                episode_id: episode_id.to_owned(),
                fingerprint: "f".to_owned(),
                rule: "restart-rule".to_owned(),
                action: "restart".to_owned(),
                kind: "kubernetes.rollout_restart".to_owned(),
                target: target.to_owned(),
                shadow: false,
                cooldown: 30 * 60_000,
                arguments: "{}".to_owned(),
                mode,
                limits: Limits { hourly_budget: 10 },
                hold_items: Vec::new(),
                defer_on_skip: false,
                defer_in_flight: false,
                verify_window: VERIFY_WINDOW,
            })
            .await
            .unwrap();
        if let Some(state) = final_state {
            let state: ActionState = state.parse().unwrap();
            if planned.verdict == VerdictKind::Run {
                assert!(
                    self.store
                        .update_action(planned.id, ActionState::Started, None)
                        .await
                        .unwrap()
                );
            }
            assert!(
                self.store
                    .update_action(planned.id, state, Some("{}".to_owned()))
                    .await
                    .unwrap()
            );
        }
        (planned.id, planned.verdict)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.store.shutdown();
        if let Some(writer) = self.writer.take() {
            writer.join_within(Duration::from_secs(5));
        }
    }
}

const VERIFY_WINDOW: Millis = 600_000;

fn group_key(group: &str) -> String {
    crate::page::policy::dedup_key(DedupMode::Group, group, "")
}

fn triggers(rows: &[OutboxRow]) -> Vec<&OutboxRow> {
    rows.iter()
        .filter(|r| r.channel == "pagerduty" && r.kind == OutboxKind::Trigger)
        .collect()
}

#[tokio::test]
async fn immediate_pages_coalesce_per_group_and_order_by_severity() {
    let f = Fixture::new();
    f.send("g1", &[("a", "firing"), ("b", "firing")]).await;
    f.send("g2", &[("c", "firing")]).await;
    f.send("g3", &[("d", "firing"), ("e", "firing")]).await;

    let a = f.decide("g1", "a", "P1", "immediate").await;
    let due = f.due();
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(
        (
            due[0].channel.as_str(),
            due[0].kind.as_str(),
            due[0].priority
        ),
        ("pagerduty", "trigger", 1)
    );
    assert_eq!(due[0].dedup_key.as_deref(), Some(group_key("g1").as_str()));
    assert_eq!(due[0].episode_id.as_deref(), Some(a.as_str()));
    assert_eq!(f.paging_state(&a).0, "paged");

    // A second incident of the group joins the waiting trigger; the page keeps its P1.
    let b = f.decide("g1", "b", "P2", "immediate").await;
    let due = f.due();
    assert_eq!(due.len(), 1, "coalesced: {due:?}");
    assert_eq!(due[0].priority, 1);
    assert_eq!(f.paging_state(&b).0, "paged");
    let page = f.reader().page(&group_key("g1")).unwrap().unwrap();
    assert_eq!(
        (page.rule.as_str(), page.severity.as_str()),
        ("rule-a", "P1")
    );
    assert_eq!(
        page.routing_key, None,
        "no routing key before the first send"
    );
    assert_eq!(page.status, PageStatus::Triggered);
    let paged = f.reader().paged_incidents(&group_key("g1"), 10).unwrap();
    assert_eq!(paged.more, 0);
    assert_eq!(
        paged
            .incidents
            .iter()
            .map(|p| p.episode_id.clone())
            .collect::<Vec<_>>(),
        vec![a.clone(), b.clone()],
        "most severe first"
    );

    // A P3 group pages at priority 3.
    f.decide("g2", "c", "P3", "immediate").await;
    // A P2 page raised by a P1 incident takes the higher priority and severity.
    f.decide("g3", "d", "P2", "immediate").await;
    let g3 = group_key("g3");
    let due = f.due();
    let row = due
        .iter()
        .find(|r| r.dedup_key.as_deref() == Some(g3.as_str()))
        .unwrap();
    assert_eq!(row.priority, 2);
    f.decide("g3", "e", "P1", "immediate").await;
    assert_eq!(f.reader().page(&g3).unwrap().unwrap().severity, "P1");

    let due = f.due();
    assert_eq!(triggers(&due).len(), 3, "{due:?}");
    assert_eq!(due.len(), 3);
    let order: Vec<(String, i64)> = due
        .iter()
        .map(|r| (r.dedup_key.clone().unwrap(), r.priority))
        .collect();
    assert_eq!(
        order,
        vec![
            (group_key("g1"), 1),
            (group_key("g3"), 1),
            (group_key("g2"), 3)
        ],
        "P1 first, then by age"
    );
    // One outbox row per page, whatever number of incidents.
    assert_eq!(f.events(&a).len(), 1);
    assert_eq!(f.events(&b), f.events(&a));
}

#[tokio::test]
async fn first_triggers_go_before_updates_of_open_pages_whatever_their_priority() {
    let f = Fixture::new();
    f.send("open", &[("a", "firing"), ("b", "firing")]).await;
    f.send("new", &[("c", "firing")]).await;
    f.send("done", &[("d", "firing")]).await;
    f.decide("open", "a", "P1", "immediate").await;
    let d = f.decide("done", "d", "P2", "immediate").await;
    let first = f.due();
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|r| !r.update), "{first:?}");
    for row in first {
        let sent = "{}".to_owned();
        f.paging(PagingOp::Attempt(row.id, Attempt::Delivered { sent }))
            .await;
    }

    // A second incident of the open P1 page: an update. Then a new P3 page, and the other
    // page resolves.
    f.decide("open", "b", "P1", "immediate").await;
    f.clock.advance(Duration::from_secs(1));
    f.decide("new", "c", "P3", "immediate").await;
    f.send("done", &[("d", "resolved")]).await;
    assert_eq!(f.paging(PagingOp::Close(vec![d])).await.count, 1);
    let due = f.due();
    let order: Vec<(String, String, i64, bool)> = due
        .iter()
        .map(|r| {
            (
                r.dedup_key.clone().unwrap(),
                r.kind.as_str().to_owned(),
                r.priority,
                r.update,
            )
        })
        .collect();
    assert_eq!(
        order,
        vec![
            (group_key("new"), "trigger".to_owned(), 3, false),
            (group_key("open"), "trigger".to_owned(), 1, true),
            (group_key("done"), "resolve".to_owned(), 5, false),
        ],
        "a first trigger, even P3, before the update of an open P1 page; resolves last"
    );
}

#[tokio::test]
async fn never_records_but_does_not_page() {
    let f = Fixture::new();
    f.send("g", &[("a", "firing")]).await;
    let a = f.decide("g", "a", "P4", "never").await;
    assert!(f.due().is_empty());
    let (state, reason) = f.paging_state(&a);
    assert_eq!(state, "not_paged");
    assert!(reason.contains("never paged"), "{reason}");
    assert!(f.events(&a).is_empty());
    assert_eq!(f.reader().page(&group_key("g")).unwrap(), None);
    // Nothing to resolve either.
    f.send("g", &[("a", "resolved")]).await;
    assert_eq!(f.paging(PagingOp::Close(vec![a.clone()])).await.count, 0);
    assert!(f.due().is_empty());
    assert_eq!(f.paging_state(&a).0, "not_paged");
}

#[tokio::test]
async fn after_verify_waits_for_the_mitigation() {
    let f = Fixture::new();
    f.send(
        "g",
        &[
            ("none", "firing"),
            ("fixed", "firing"),
            ("helped", "firing"),
        ],
    )
    .await;
    let none = f.decide("g", "none", "P2", "after_verify").await;
    let failing = f.decide("g", "fixed", "P2", "after_verify").await;
    let helped = f.decide("g", "helped", "P2", "after_verify").await;
    for id in [&none, &failing, &helped] {
        let (state, reason) = f.paging_state(id);
        assert_eq!(state, "waiting");
        assert!(
            reason.contains("only if its mitigation does not help"),
            "{reason}"
        );
    }
    assert!(f.due().is_empty(), "nothing pages while waiting");

    // Nothing to do for the first: it pages as soon as the act stage is done.
    assert_eq!(f.paging(PagingOp::Acted(none.clone())).await.count, 1);
    let (state, reason) = f.paging_state(&none);
    assert_eq!(state, "paged");
    assert!(reason.contains("no automatic action"), "{reason}");
    assert_eq!(triggers(&f.due()).len(), 1);

    // The others ran an action that is done but not yet judged: they wait.
    let (action, verdict) = f
        .act(
            &failing,
            "deployment/vastai/one",
            Mode::Enforce,
            Some("done"),
        )
        .await;
    assert_eq!(verdict, VerdictKind::Run);
    let (_, verdict) = f
        .act(
            &helped,
            "deployment/vastai/two",
            Mode::Enforce,
            Some("done"),
        )
        .await;
    assert_eq!(verdict, VerdictKind::Run);
    assert_eq!(f.paging(PagingOp::Acted(failing.clone())).await.count, 0);
    assert_eq!(f.paging(PagingOp::Acted(helped.clone())).await.count, 0);
    assert_eq!(
        f.paging(PagingOp::Evaluate {
            settle: 60_000.into(),
        })
        .await
        .count,
        0
    );
    assert_eq!(f.paging_state(&failing).0, "waiting");
    assert_eq!(f.paging_state(&helped).0, "waiting");

    // Before the verify window ends nothing is judged.
    f.clock
        .advance(Duration::from_millis(VERIFY_WINDOW as u64 - 1000));
    assert!(f.store.verify_actions(f.now()).await.unwrap().is_empty());

    // The third stops firing; the window passes while the second still fires.
    f.send(
        "g",
        &[
            ("none", "firing"),
            ("fixed", "firing"),
            ("helped", "resolved"),
        ],
    )
    .await;
    f.clock.advance(Duration::from_secs(2));
    let verified = f.store.verify_actions(f.now()).await.unwrap();
    assert_eq!(verified.len(), 2, "{verified:?}");
    assert!(verified.contains(&Verified {
        action_id: action,
        episode_id: failing.clone(),
        action: "restart".to_owned(),
        helped: false
    }));
    let done = f
        .paging(PagingOp::Evaluate {
            settle: 60_000.into(),
        })
        .await;
    assert_eq!(done.count, 1, "only the one whose mitigation did not help");
    let (state, reason) = f.paging_state(&failing);
    assert_eq!(state, "paged");
    assert!(reason.contains("did not help"), "{reason}");
    let (state, reason) = f.paging_state(&helped);
    assert_eq!(state, "not_paged");
    assert!(reason.contains("stopped firing"), "{reason}");
    // Both paged incidents are in the group's one waiting trigger.
    let due = f.due();
    assert_eq!(triggers(&due).len(), 1, "{due:?}");
    // Besides it, only the two actions' change events.
    assert_eq!(due.len(), 3, "{due:?}");
    assert_eq!(
        due.iter().filter(|r| r.kind == OutboxKind::Change).count(),
        2
    );
    let paged = f.reader().paged_incidents(&group_key("g"), 10).unwrap();
    assert_eq!(paged.incidents.len(), 2);
    // Judged once: evaluating again changes nothing.
    assert_eq!(
        f.paging(PagingOp::Evaluate {
            settle: 60_000.into(),
        })
        .await
        .count,
        0
    );
}

#[tokio::test]
async fn after_verify_pages_when_the_act_stage_never_reports() {
    let f = Fixture::new();
    f.send("g", &[("a", "firing")]).await;
    let a = f.decide("g", "a", "P2", "after_verify").await;
    assert_eq!(
        f.paging(PagingOp::Evaluate {
            settle: 60_000.into(),
        })
        .await
        .count,
        0
    );
    f.clock.advance(Duration::from_secs(61));
    assert_eq!(
        f.paging(PagingOp::Evaluate {
            settle: 60_000.into(),
        })
        .await
        .count,
        1
    );
    let (state, reason) = f.paging_state(&a);
    assert_eq!(state, "paged");
    assert!(reason.contains("did not settle"), "{reason}");
}

#[tokio::test]
async fn after_verify_decided_before_a_restart_is_judged_at_once_on_what_the_start_settled() {
    let f = Fixture::new();
    f.send(
        "g",
        &[
            ("cut", "firing"),
            ("planned", "firing"),
            ("later", "firing"),
        ],
    )
    .await;
    // Decided by the process before, which died before its act stage planned anything for
    // the first; for the second it had planned an action.
    let cut = f.decide("g", "cut", "P2", "after_verify").await;
    let planned = f.decide("g", "planned", "P2", "after_verify").await;
    let (action, _) = f
        .act(&planned, "deployment/vastai/api", Mode::Enforce, None)
        .await;
    // The new process starts two seconds later, well within settle_within, and settles the
    // action left planned as it does at every start (`Mitigator::recover`): it never ran.
    f.clock.advance(Duration::from_secs(2));
    let started_at = f.now();
    assert!(
        f.store
            .update_action(
                action,
                ActionState::Failed,
                Some(r#"{"outcome":"not_applied"}"#.to_owned())
            )
            .await
            .unwrap()
    );
    let settle = crate::page::policy::Settle {
        within: 300_000,
        started_at: Some(started_at),
    };
    // Decided by the new process: its act stage is still to come.
    let later = f.decide("g", "later", "P2", "after_verify").await;
    assert_eq!(f.paging(PagingOp::Evaluate { settle }).await.count, 2);
    let (state, reason) = f.paging_state(&cut);
    assert_eq!(state, "paged");
    assert!(reason.contains("restart"), "{reason}");
    let (state, reason) = f.paging_state(&planned);
    assert_eq!(state, "paged");
    assert!(reason.contains("failed"), "{reason}");
    assert_eq!(f.paging_state(&later).0, "waiting");
    // Judged once; the new process's own decision still waits for its act stage, up to
    // settle_within.
    f.clock.advance(Duration::from_secs(10));
    assert_eq!(f.paging(PagingOp::Evaluate { settle }).await.count, 0);
    f.clock.advance(Duration::from_secs(300));
    assert_eq!(f.paging(PagingOp::Evaluate { settle }).await.count, 1);
}

#[tokio::test]
async fn the_last_paged_incident_of_a_group_resolves_its_page_after_the_trigger() {
    let f = Fixture::new();
    f.send("g", &[("a", "firing"), ("b", "firing")]).await;
    let a = f.decide("g", "a", "P1", "immediate").await;
    let b = f.decide("g", "b", "P1", "immediate").await;
    let key = group_key("g");

    // One of two closes: the page stays open.
    f.send("g", &[("a", "resolved"), ("b", "firing")]).await;
    assert_eq!(f.paging(PagingOp::Close(vec![a.clone()])).await.count, 0);
    assert_eq!(f.paging_state(&a).0, "resolved");
    assert_eq!(
        f.events(&a),
        vec![(
            "pagerduty".to_owned(),
            "trigger".to_owned(),
            "pending".to_owned()
        )]
    );
    assert_eq!(
        f.reader().page(&key).unwrap().unwrap().status,
        PageStatus::Triggered
    );

    // The last one closes: exactly one resolve, once.
    f.send("g", &[("a", "resolved"), ("b", "resolved")]).await;
    assert_eq!(f.paging(PagingOp::Close(vec![b.clone()])).await.count, 1);
    assert_eq!(f.paging(PagingOp::Close(vec![b.clone()])).await.count, 0);
    assert_eq!(
        f.reader().page(&key).unwrap().unwrap().status,
        PageStatus::Resolved
    );
    let kinds: Vec<String> = f.events(&b).into_iter().map(|e| e.1).collect();
    assert_eq!(kinds, vec!["trigger", "resolve"]);

    // The resolve waits for its trigger.
    let due = f.due();
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(due[0].kind, OutboxKind::Trigger);
    f.paging(PagingOp::Attempt(
        due[0].id,
        Attempt::Delivered {
            sent: "{}".to_owned(),
        },
    ))
    .await;
    let due = f.due();
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(
        (due[0].kind.as_str(), due[0].priority),
        ("resolve", 5),
        "{due:?}"
    );
    assert_eq!(due[0].dedup_key.as_deref(), Some(key.as_str()));
}

#[tokio::test]
async fn a_resolve_also_waits_for_a_trigger_in_backoff() {
    let f = Fixture::new();
    f.send("g", &[("a", "firing")]).await;
    let a = f.decide("g", "a", "P2", "immediate").await;
    let trigger = f.due().remove(0);
    let next_at = f.now() + 30_000;
    f.paging(PagingOp::Attempt(
        trigger.id,
        Attempt::Retry {
            error: "PagerDuty error 500".to_owned(),
            next_at,
            failure: true,
        },
    ))
    .await;
    f.send("g", &[("a", "resolved")]).await;
    assert_eq!(f.paging(PagingOp::Close(vec![a.clone()])).await.count, 1);
    // Neither is due: the trigger backs off, the resolve waits behind it.
    assert!(f.due().is_empty(), "{:?}", f.due());
    f.clock.advance(Duration::from_secs(30));
    let due = f.due();
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!((due[0].kind.as_str(), due[0].attempts), ("trigger", 1));
    assert_eq!(due[0].last_error.as_deref(), Some("PagerDuty error 500"));
}

#[tokio::test]
async fn the_first_routing_key_fixed_for_a_page_stays() {
    let f = Fixture::new();
    f.send("g", &[("a", "firing")]).await;
    f.decide("g", "a", "P1", "immediate").await;
    let key = group_key("g");
    let first = f
        .paging(PagingOp::FixRoutingKey {
            dedup_key: key.clone(),
            routing_key: "key-one".to_owned(),
        })
        .await;
    assert_eq!(first.routing_key.as_deref(), Some("key-one"));
    let second = f
        .paging(PagingOp::FixRoutingKey {
            dedup_key: key.clone(),
            routing_key: "key-two".to_owned(),
        })
        .await;
    assert_eq!(second.routing_key.as_deref(), Some("key-one"));
    assert_eq!(
        f.reader()
            .page(&key)
            .unwrap()
            .unwrap()
            .routing_key
            .as_deref(),
        Some("key-one")
    );
}

#[tokio::test]
async fn a_fallback_is_queued_once_on_each_channel() {
    let f = Fixture::new();
    f.send("g", &[("a", "firing")]).await;
    let a = f.decide("g", "a", "P2", "immediate").await;
    let trigger = f.due().remove(0);
    let channels = vec!["ops".to_owned(), "oncall".to_owned()];
    let done = f
        .paging(PagingOp::FallBack {
            id: trigger.id,
            channels: channels.clone(),
            reason: "PagerDuty rejected the page".to_owned(),
        })
        .await;
    assert_eq!(done.count, 2);
    let again = f
        .paging(PagingOp::FallBack {
            id: trigger.id,
            channels,
            reason: "PagerDuty rejected the page".to_owned(),
        })
        .await;
    assert_eq!(again.count, 0);
    let due = f.due();
    assert_eq!(due.len(), 3, "{due:?}");
    let mut fallbacks: Vec<(String, String, i64, String)> = due
        .iter()
        .filter(|r| r.channel != "pagerduty")
        .map(|r| {
            (
                r.channel.clone(),
                r.kind.as_str().to_owned(),
                r.priority,
                r.reason.clone(),
            )
        })
        .collect();
    fallbacks.sort();
    let reason = "fallback: PagerDuty rejected the page".to_owned();
    assert_eq!(
        fallbacks,
        vec![
            ("oncall".to_owned(), "trigger".to_owned(), 2, reason.clone()),
            ("ops".to_owned(), "trigger".to_owned(), 2, reason),
        ]
    );
    let row = due.iter().find(|r| r.channel == "pagerduty").unwrap();
    assert!(row.fallback_at.is_some());
    assert_eq!(f.events(&a).len(), 3);
}

#[tokio::test]
async fn an_action_that_ran_goes_on_the_timeline_once_and_a_dry_run_does_not() {
    let f = Fixture::new();
    f.send("g", &[("a", "firing"), ("b", "firing")]).await;
    let a = f.episode("g", "a");
    let b = f.episode("g", "b");
    let changes = |f: &Fixture| -> Vec<OutboxRow> {
        f.due()
            .into_iter()
            .filter(|r| r.kind == OutboxKind::Change)
            .collect()
    };

    let (planned, verdict) = f
        .act(&a, "deployment/vastai/api", Mode::Enforce, None)
        .await;
    assert_eq!(verdict, VerdictKind::Run);
    assert!(
        f.store
            .update_action(planned, ActionState::Started, None)
            .await
            .unwrap()
    );
    assert!(changes(&f).is_empty(), "nothing before it finished");
    assert!(
        f.store
            .update_action(planned, ActionState::Done, Some("{}".to_owned()))
            .await
            .unwrap()
    );
    let rows = changes(&f);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (
            rows[0].channel.as_str(),
            rows[0].action_id,
            rows[0].episode_id.as_deref(),
            rows[0].priority,
            rows[0].dedup_key.as_deref(),
        ),
        ("pagerduty", Some(planned), Some(a.as_str()), 6, None)
    );
    // Recording the end again does not queue it twice.
    f.store
        .update_action(planned, ActionState::Done, Some("{}".to_owned()))
        .await
        .unwrap();
    assert_eq!(changes(&f).len(), 1);

    let (dry, verdict) = f
        .act(&b, "deployment/vastai/web", Mode::DryRun, Some("done"))
        .await;
    assert_eq!(verdict, VerdictKind::DryRun);
    let rows = changes(&f);
    assert_eq!(rows.len(), 1, "a dry run changed nothing: {rows:?}");
    assert_ne!(rows[0].action_id, Some(dry));
}

#[tokio::test]
async fn rows_marked_sending_count_as_sent_from_then_until_a_later_attempt_is_recorded() {
    let f = Fixture::new();
    for g in ["g1", "g2", "g3", "g4"] {
        f.send(g, &[("a", "firing")]).await;
        f.decide(g, "a", "P2", "immediate").await;
    }
    let due: Vec<i64> = triggers(&f.due()).iter().map(|r| r.id).collect();
    assert_eq!(due.len(), 4);
    let (delivered, retried, cut, settled) = (due[0], due[1], due[2], due[3]);
    let t0 = f.now();
    let sent_since = |since: Millis| -> Vec<(Millis, String)> {
        f.reader()
            .outbox_sent_since(since)
            .unwrap()
            .into_iter()
            .map(|e| (e.at, format!("{}/{}/{}", e.channel, e.rule, e.severity)))
            .collect()
    };
    // Nothing went out yet.
    assert!(sent_since(t0 - 60_000).is_empty());
    // A round of three is about to go: marked first, in one command.
    let done = f
        .paging(PagingOp::Sending(vec![delivered, retried, cut]))
        .await;
    assert_eq!(done.count, 3);
    let sent = sent_since(t0 - 60_000);
    assert_eq!(sent, vec![(t0, "pagerduty/rule-a/P2".to_owned()); 3]);
    // Two answers are recorded 2 s later; the third never is (the process is killed).
    f.clock.advance(Duration::from_secs(2));
    f.paging(PagingOp::Attempt(
        delivered,
        Attempt::Delivered {
            sent: "{}".to_owned(),
        },
    ))
    .await;
    f.paging(PagingOp::Attempt(
        retried,
        Attempt::Retry {
            error: "PagerDuty error 500".to_owned(),
            next_at: f.now(),
            failure: true,
        },
    ))
    .await;
    // A row settled without sending anything (change events off, say) never counts, and a
    // settled row is not marked again.
    f.paging(PagingOp::Attempt(
        settled,
        Attempt::Delivered {
            sent: "change events are off".to_owned(),
        },
    ))
    .await;
    assert_eq!(f.paging(PagingOp::Sending(vec![delivered])).await.count, 0);
    // The retry goes again in a later round: counted once, from then.
    f.clock.advance(Duration::from_secs(3));
    assert_eq!(f.paging(PagingOp::Sending(vec![retried])).await.count, 1);
    let times: Vec<Millis> = sent_since(t0 - 60_000).iter().map(|e| e.0).collect();
    assert_eq!(times, vec![t0, t0 + 2_000, t0 + 5_000]);
    // A minute after the mark, the cut round's event no longer counts; the others do, from
    // their later times.
    f.clock.advance(Duration::from_secs(56));
    let times: Vec<Millis> = sent_since(f.now() - 60_000).iter().map(|e| e.0).collect();
    assert_eq!(times, vec![t0 + 2_000, t0 + 5_000]);
}
