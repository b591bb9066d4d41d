//! Store tests with a hand-moved clock: snapshots in, transitions out.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;

use super::*;
use crate::act::governor::VerdictKind;
use crate::clock::{Clock, ManualClock};
use crate::config::{ReconcileConfig, StoreConfig};
use crate::episodes::reconcile::EpisodeStatus;
use crate::store::ActionPlan;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    writer: Option<WriterThread>,
    clock: Arc<ManualClock>,
}

impl Fixture {
    fn new(max_unreconciled: u64) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(
            chrono::Utc.with_ymd_and_hms(2026, 11, 28, 3, 0, 0).unwrap(),
        ));
        let settings = StoreSettings {
            store: StoreConfig {
                dir: dir.path().join("var"),
                max_unreconciled,
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

    /// Submit a snapshot and wait until it is durable and reconciled.
    async fn send(&self, group: &str, alerts: &[(&str, &str, &str)]) -> i64 {
        self.send_truncated(group, alerts, 0).await
    }

    async fn send_truncated(
        &self,
        group: &str,
        alerts: &[(&str, &str, &str)],
        truncated: u64,
    ) -> i64 {
        let body = body(group, alerts, truncated);
        let record = IngestRecord {
            received_at: self.clock.now_millis(),
            remote: "test".to_owned(),
            group_key: group.to_owned(),
            alert_count: alerts.len(),
            body: Bytes::from(body),
        };
        let id = self
            .store
            .try_submit(record)
            .unwrap()
            .await
            .unwrap()
            .unwrap();
        for _ in 0..500 {
            if self.store.unreconciled() == 0 {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("not reconciled");
    }

    /// `(instance, status)` of every incident, sorted.
    fn statuses(&self) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = self
            .store
            .reader()
            .unwrap()
            .incidents(None, 1000)
            .unwrap()
            .into_iter()
            .map(|i| {
                (
                    i.labels["instance"].as_str().unwrap().to_owned(),
                    i.status.as_str().to_owned(),
                )
            })
            .collect();
        all.sort();
        all
    }

    fn transitions(&self) -> Vec<(String, String)> {
        let reader = self.store.reader().unwrap();
        reader
            .pending_transitions(1000)
            .unwrap()
            .into_iter()
            .map(|t| {
                let incident = reader.incident(&t.episode_id).unwrap().unwrap();
                let instance = incident.summary.labels["instance"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                (instance, t.kind.as_str().to_owned())
            })
            .collect()
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

const T0: &str = "2026-11-28T02:59:00Z";
const T1: &str = "2026-11-28T03:20:00Z";
/// A start time with sub-millisecond digits, as Alertmanager stamps alerts pushed without one.
const T_NANOS: &str = "2026-11-28T02:59:00.123456789Z";

/// `(instance, status, startsAt)` alerts of group `group`, as a webhook body.
fn body(group: &str, alerts: &[(&str, &str, &str)], truncated: u64) -> String {
    let alerts: Vec<serde_json::Value> = alerts
        .iter()
        .map(|(instance, status, starts_at)| {
            serde_json::json!({
                "status": status,
                "labels": {"alertname": group, "instance": instance},
                "annotations": {},
                "startsAt": starts_at,
                "endsAt": "0001-01-01T00:00:00Z",
            })
        })
        .collect();
    serde_json::json!({
        "version": "4", "status": "firing", "groupKey": group, "truncatedAlerts": truncated,
        "alerts": alerts,
    })
    .to_string()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test]
async fn repeats_are_not_new_work() {
    let f = Fixture::new(1000);
    f.send("g", &[("a", "firing", T0), ("b", "firing", T0)])
        .await;
    f.clock.advance(Duration::from_secs(30));
    f.send("g", &[("a", "firing", T0), ("b", "firing", T0)])
        .await;
    f.send("g", &[("a", "firing", T0), ("b", "firing", T0)])
        .await;
    assert_eq!(f.transitions(), pairs(&[("a", "opened"), ("b", "opened")]));
    let incident = f
        .store
        .reader()
        .unwrap()
        .incidents(None, 10)
        .unwrap()
        .remove(0);
    assert_ne!(
        incident.first_seen, incident.last_seen,
        "each arrival moves last-seen"
    );
}

#[tokio::test]
async fn resolve_then_late_firing_retry_does_not_reopen() {
    let f = Fixture::new(1000);
    f.send("g", &[("a", "firing", T0)]).await;
    f.clock.advance(Duration::from_secs(60));
    f.send("g", &[("a", "resolved", T0)]).await;
    // An older snapshot, retried late, still says firing.
    f.clock.advance(Duration::from_secs(5));
    f.send("g", &[("a", "firing", T0)]).await;
    assert_eq!(f.statuses(), pairs(&[("a", "resolved")]));
    assert_eq!(
        f.transitions(),
        pairs(&[("a", "opened"), ("a", "resolved")])
    );
}

#[tokio::test]
async fn resolve_for_an_episode_never_seen_firing() {
    let f = Fixture::new(1000);
    f.send("g", &[("a", "resolved", T0)]).await;
    assert_eq!(f.statuses(), pairs(&[("a", "resolved")]));
    let reader = f.store.reader().unwrap();
    let id = &reader.pending_transitions(10).unwrap()[0].episode_id;
    let detail = reader.incident(id).unwrap().unwrap();
    assert_eq!(detail.transitions[0].detail["seen_firing"], false);
}

#[tokio::test]
async fn the_same_fingerprint_firing_again_is_a_new_episode() {
    let f = Fixture::new(1000);
    f.send("g", &[("a", "firing", T0)]).await;
    f.send("g", &[("a", "resolved", T0)]).await;
    f.send("g", &[("a", "firing", T1)]).await;
    assert_eq!(f.statuses(), pairs(&[("a", "firing"), ("a", "resolved")]));
    assert_eq!(
        f.transitions(),
        pairs(&[("a", "opened"), ("a", "resolved"), ("a", "opened")])
    );
}

#[tokio::test]
async fn an_episode_missing_from_a_later_snapshot_is_gone_after_the_grace() {
    let f = Fixture::new(1000);
    f.send("g", &[("a", "firing", T0), ("b", "firing", T0)])
        .await;
    // Within the grace window a snapshot without b may be an older one retried late.
    f.clock.advance(Duration::from_secs(60));
    f.send("g", &[("a", "firing", T0)]).await;
    assert_eq!(f.statuses(), pairs(&[("a", "firing"), ("b", "firing")]));
    // A truncated snapshot proves nothing.
    f.clock.advance(Duration::from_secs(600));
    f.send_truncated("g", &[("a", "firing", T0)], 1).await;
    assert_eq!(f.statuses(), pairs(&[("a", "firing"), ("b", "firing")]));
    // A complete one, well after b was first seen: b vanished.
    f.send("g", &[("a", "firing", T0)]).await;
    assert_eq!(f.statuses(), pairs(&[("a", "firing"), ("b", "gone")]));
    // Another group's snapshot never touches this group's episodes.
    f.send("h", &[("c", "firing", T0)]).await;
    assert_eq!(
        f.transitions().last().unwrap(),
        &("c".to_owned(), "opened".to_owned())
    );
    // A gone episode seen firing long after is reopened, not lost.
    f.clock.advance(Duration::from_secs(700));
    f.send("g", &[("a", "firing", T0), ("b", "firing", T0)])
        .await;
    assert_eq!(
        f.statuses(),
        pairs(&[("a", "firing"), ("b", "firing"), ("c", "firing")])
    );
    assert_eq!(
        f.transitions().last().unwrap(),
        &("b".to_owned(), "reopened".to_owned())
    );
}

#[tokio::test]
async fn alertmanager_api_silences_unsilences_and_closes_vanished_episodes() {
    let f = Fixture::new(1000);
    f.send("g", &[("a", "firing", T_NANOS), ("b", "firing", T0)])
        .await;
    let reader = f.store.reader().unwrap();
    let ids: Vec<(String, String)> = reader
        .incidents(None, 10)
        .unwrap()
        .into_iter()
        .map(|i| {
            (
                i.labels["instance"].as_str().unwrap().to_owned(),
                i.fingerprint,
            )
        })
        .collect();
    let fingerprint = |instance: &str| ids.iter().find(|(i, _)| i == instance).unwrap().1.clone();
    // The API reports startsAt to the millisecond only; a's webhook start had nanoseconds.
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-28T02:59:00.123Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let api = |a_suppressed: bool| {
        vec![ApiAlert {
            fingerprint: fingerprint("a"),
            starts_at: start,
            suppressed: a_suppressed,
        }]
    };
    let summary = f.store.sync_with_alertmanager(api(true)).await.unwrap();
    assert_eq!((summary.checked, summary.silenced, summary.gone), (2, 1, 0));
    assert_eq!(f.statuses(), pairs(&[("a", "silenced"), ("b", "firing")]));
    // b is absent from the API, but only for less than the grace so far.
    f.clock.advance(Duration::from_secs(601));
    let summary = f.store.sync_with_alertmanager(api(false)).await.unwrap();
    assert_eq!((summary.unsilenced, summary.gone), (1, 1));
    assert_eq!(f.statuses(), pairs(&[("a", "firing"), ("b", "gone")]));
    let mut transitions = f.transitions();
    // The last sync's two transitions come in episode order; compare them as a set.
    transitions[3..].sort();
    assert_eq!(
        transitions,
        pairs(&[
            ("a", "opened"),
            ("b", "opened"),
            ("a", "silenced"),
            ("a", "unsilenced"),
            ("b", "gone")
        ])
    );
}

#[tokio::test]
async fn transitions_form_a_durable_queue() {
    let f = Fixture::new(1000);
    f.send("g", &[("a", "firing", T0), ("b", "firing", T0)])
        .await;
    let reader = f.store.reader().unwrap();
    let pending = reader.pending_transitions(10).unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(
        f.store
            .complete_transitions(vec![pending[0].seq])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        f.store
            .complete_transitions(vec![pending[0].seq])
            .await
            .unwrap(),
        0
    );
    let left = reader.pending_transitions(10).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].seq, pending[1].seq);
}

#[tokio::test]
async fn ingest_commits_are_fsynced_in_wal_mode() {
    let f = Fixture::new(1000);
    f.send("g", &[("a", "firing", T0)]).await;
    let durability = f.store.durability().await.unwrap();
    assert_eq!(durability.journal_mode, "wal");
    assert_eq!(
        durability.synchronous_during_ingest, 2,
        "2 is synchronous=FULL"
    );
}

#[tokio::test]
async fn a_full_backlog_refuses_instead_of_dropping() {
    let f = Fixture::new(1);
    // Hold the writer busy reconciling nothing: with a cap of one, a second submit made
    // before the first is reconciled is refused.
    let record = |n: u8| IngestRecord {
        received_at: 0,
        remote: "t".to_owned(),
        group_key: "g".to_owned(),
        alert_count: 0,
        body: Bytes::from(format!(
            "{{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[],\"groupKey\":\"g{n}\"}}"
        )),
    };
    let first = f.store.try_submit(record(1)).unwrap();
    let second = f.store.try_submit(record(2));
    assert_eq!(second.unwrap_err(), Rejected::Backlog);
    assert!(first.await.unwrap().is_ok());
}

#[tokio::test]
async fn restart_resumes_unreconciled_work() {
    let dir = tempfile::tempdir().unwrap();
    let settings = StoreSettings {
        store: StoreConfig {
            dir: dir.path().to_path_buf(),
            ..StoreConfig::default()
        },
        reconcile: ReconcileConfig::default(),
        heartbeat_alertname: None,
    };
    let clock: SharedClock = Arc::new(crate::clock::SystemClock);
    // Journal directly as a crashed run would have left it: stored, not reconciled.
    {
        let connection = connect(&database_path(dir.path()), false).unwrap();
        schema::prepare(&connection).unwrap();
        let body = body("g", &[("a", "firing", T0)], 0);
        let hash = <sha2::Sha256 as sha2::Digest>::digest(body.as_bytes());
        connection
            .execute(
                "INSERT INTO payloads(hash, body) VALUES (?1, ?2)",
                rusqlite::params![hash.as_slice(), body.as_bytes()],
            )
            .unwrap();
        connection
            .execute(
                "INSERT INTO notifications(received_at, remote, group_key, payload_hash, alert_count) VALUES (1, 'x', 'g', ?1, 1)",
                rusqlite::params![hash.as_slice()],
            )
            .unwrap();
    }
    let (store, writer) = Store::open(settings, 8, clock, Arc::new(Metrics::new())).unwrap();
    for _ in 0..500 {
        if store.unreconciled() == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(store.unreconciled(), 0);
    assert_eq!(
        store.reader().unwrap().incidents(None, 10).unwrap().len(),
        1
    );
    store.shutdown();
    assert!(writer.join_within(Duration::from_secs(5)));
}

fn plan(f: &Fixture, n: usize, target: &str, mode: crate::act::governor::Mode) -> ActionPlan {
    let _ = f;
    ActionPlan {
        key: format!("incident-{n}|restart-rule|restart|{target}"),
        episode_id: format!("{n:016x}-20261128T030000Z"),
        fingerprint: format!("{n:016x}"),
        rule: "restart-rule".to_owned(),
        action: "restart".to_owned(),
        kind: "kubernetes.rollout_restart".to_owned(),
        target: target.to_owned(),
        shadow: false,
        cooldown: 30 * 60_000,
        arguments: "{}".to_owned(),
        mode,
        limits: crate::act::governor::Limits { hourly_budget: 3 },
        hold_items: Vec::new(),
        defer_on_skip: false,
        defer_in_flight: false,
        verify_window: 600_000,
    }
}

#[tokio::test]
async fn a_storm_for_one_deployment_plans_exactly_one_restart() {
    use crate::act::governor::Mode;
    let f = Fixture::new(1000);
    let target = "deployment/vastai/vastai-integration";
    let mut handles = Vec::new();
    for n in 0..500 {
        let store = f.store.clone();
        let plan = plan(&f, n, target, Mode::Enforce);
        handles.push(tokio::spawn(async move {
            store.plan_action(plan).await.unwrap()
        }));
    }
    let mut verdicts = std::collections::HashMap::new();
    for handle in handles {
        *verdicts.entry(handle.await.unwrap().verdict).or_insert(0) += 1;
    }
    assert_eq!(verdicts.get(&VerdictKind::Run), Some(&1), "{verdicts:?}");
    // The others see it planned (in flight) or done (cooldown): either way they share its
    // outcome instead of repeating it.
    let shared = verdicts.get(&VerdictKind::Cooldown).unwrap_or(&0)
        + verdicts.get(&VerdictKind::InFlight).unwrap_or(&0);
    assert_eq!(shared, 499, "{verdicts:?}");
    // The same key again is the same action: nothing new.
    let again = f
        .store
        .plan_action(plan(&f, 0, target, Mode::Enforce))
        .await
        .unwrap();
    assert!(!again.new);
}

#[tokio::test]
async fn the_budget_pause_and_dry_run_are_enforced_from_the_store() {
    use crate::act::governor::Mode;
    let f = Fixture::new(1000);
    // Three targets run; the fourth is over the hourly budget of three.
    for n in 0..3 {
        let planned = f
            .store
            .plan_action(plan(
                &f,
                n,
                &format!("deployment/vastai/d{n}"),
                Mode::Enforce,
            ))
            .await
            .unwrap();
        assert_eq!(planned.verdict, VerdictKind::Run);
        assert_eq!(planned.state, ActionState::Planned);
    }
    let over = f
        .store
        .plan_action(plan(&f, 3, "deployment/vastai/d3", Mode::Enforce))
        .await
        .unwrap();
    assert_eq!(over.verdict, VerdictKind::Budget);
    assert_eq!(over.state, ActionState::Skipped);
    // An hour later the budget is back; but a pause stops everything.
    f.clock.advance(Duration::from_secs(3601));
    let until = f.clock.now_millis() + 600_000;
    f.store
        .set_pause(Some(Pause {
            until,
            reason: "deploy freeze".to_owned(),
        }))
        .await
        .unwrap();
    let paused = f
        .store
        .plan_action(plan(&f, 4, "deployment/vastai/d4", Mode::Enforce))
        .await
        .unwrap();
    assert_eq!(paused.verdict, VerdictKind::Paused);
    assert_eq!(paused.verdict_detail["why"], "deploy freeze");
    f.store.set_pause(None).await.unwrap();
    // Dry-run records what would have happened and starts no cooldown.
    let dry = f
        .store
        .plan_action(plan(&f, 5, "deployment/vastai/d5", Mode::DryRun))
        .await
        .unwrap();
    assert_eq!(dry.verdict, VerdictKind::DryRun);
    assert_eq!(dry.verdict_detail["would"]["verdict"], "run");
    let real = f
        .store
        .plan_action(plan(&f, 6, "deployment/vastai/d5", Mode::Enforce))
        .await
        .unwrap();
    assert_eq!(
        real.verdict,
        VerdictKind::Run,
        "a dry run does not start a cooldown"
    );
    // Started and finished; a second start of the same action is refused.
    assert!(
        f.store
            .update_action(real.id, ActionState::Started, None)
            .await
            .unwrap()
    );
    assert!(
        !f.store
            .update_action(real.id, ActionState::Started, None)
            .await
            .unwrap()
    );
    let busy = f
        .store
        .plan_action(plan(&f, 7, "deployment/vastai/d5", Mode::Enforce))
        .await
        .unwrap();
    assert_eq!(busy.verdict, VerdictKind::InFlight);
    assert!(
        f.store
            .update_action(real.id, ActionState::Done, Some("{}".to_owned()))
            .await
            .unwrap()
    );
}

fn decision_for(episode: &str) -> DecisionRecord {
    DecisionRecord {
        episode_id: episode.to_owned(),
        transition_seq: None,
        kind: DecisionKind::Initial,
        rule: "r".to_owned(),
        severity: "P3".to_owned(),
        branch: "b".to_owned(),
        trace: "{}".to_owned(),
        at: 0,
        next_evaluation_at: None,
        page: None,
        bundle_plan: None,
    }
}

/// Commands that queue up while the writer is busy are made durable by one fsync'd commit,
/// and each is answered, with its own result, only after it.
#[test]
fn commands_queued_together_share_one_synced_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, commands) = bare_writer(&dir.path().join("group.db"), manual_clock(), 0);
    let mut answers = Vec::new();
    for n in 0..20 {
        let (reply, answer) = tokio::sync::oneshot::channel();
        commands
            .send(Command::RecordDecision(
                Box::new(decision_for(&format!("e{n}"))),
                reply,
            ))
            .unwrap();
        answers.push(answer);
    }
    commands.send(Command::Shutdown).unwrap();
    // Everything is queued before the writer starts, so it takes the lot as one group.
    writer.run();
    for mut answer in answers {
        assert!(matches!(
            answer.try_recv(),
            Ok(Ok(Recorded::Recorded { changed: false }))
        ));
    }
    let check = connect(&dir.path().join("group.db"), true).unwrap();
    let decisions: i64 = check
        .query_row("SELECT count(*) FROM decisions", [], |row| row.get(0))
        .unwrap();
    let synced: String = check
        .query_row(
            "SELECT value FROM meta WHERE key = 'group_commits'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(decisions, 20);
    assert_eq!(synced, "1", "one synced commit for the group of 20");
}

/// After a restart with a backlog of large notifications, one reconcile batch loads at most
/// 32 MiB of bodies (so memory stays bounded however big the backlog), folds identical
/// consecutive snapshots of a group without counting their bodies again, stays a prefix of the
/// backlog in receipt order, and still takes a single body over the bound on its own.
#[test]
fn a_reconcile_batch_is_bounded_by_the_bytes_of_its_bodies() {
    const MIB: usize = 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let path = dir.path().join("bytes.db");
    let connection = connect(&path, false).unwrap();
    schema::prepare(&connection).unwrap();
    // A firing snapshot of one alert, padded out to about `size` bytes.
    let padded = |group: &str, size: usize| {
        let snapshot = body(group, &[("a", "firing", T0)], 0);
        format!("{{\"padding\":\"{}\",{}", "x".repeat(size), &snapshot[1..])
    };
    let payloads = [
        ("A", padded("g1", 12 * MIB)),
        ("B", padded("g2", 12 * MIB)),
        ("C", padded("g3", 12 * MIB)),
        // Over the bound on its own.
        ("D", padded("g4", 33 * MIB)),
    ];
    for (hash, payload) in &payloads {
        connection
            .execute(
                "INSERT INTO payloads(hash, body) VALUES (?1, ?2)",
                rusqlite::params![hash.as_bytes(), payload.as_bytes()],
            )
            .unwrap();
    }
    // Receipt order: three identical snapshots of g1, then g2, g3 and g4.
    let journal = [
        ("g1", "A"),
        ("g1", "A"),
        ("g1", "A"),
        ("g2", "B"),
        ("g3", "C"),
        ("g4", "D"),
    ];
    let now = clock.now_millis();
    for (n, (group, hash)) in journal.iter().enumerate() {
        connection
            .execute(
                "INSERT INTO notifications(received_at, remote, group_key, payload_hash, alert_count)
                 VALUES (?1, 'test', ?2, ?3, 1)",
                rusqlite::params![now - 1000 + n as i64, group, hash.as_bytes()],
            )
            .unwrap();
    }
    drop(connection);
    let (mut writer, _commands) = bare_writer(&path, clock, journal.len() as u64);
    let check = connect(&path, true).unwrap();
    let unreconciled = || -> Vec<i64> {
        let mut statement = check
            .prepare("SELECT id FROM notifications WHERE reconciled_at IS NULL ORDER BY id")
            .unwrap();
        let ids = statement.query_map([], |row| row.get(0)).unwrap();
        ids.collect::<Result<_, _>>().unwrap()
    };

    // A (12 MiB, folding its two repeats) and B (12 MiB); C would take it to 36 MiB.
    assert_eq!(writer.reconcile_inner().unwrap(), 4, "first batch");
    assert_eq!(unreconciled(), vec![5, 6]);
    // C (12 MiB); D would take it to 45 MiB.
    assert_eq!(writer.reconcile_inner().unwrap(), 1, "second batch");
    assert_eq!(unreconciled(), vec![6]);
    // D alone, over the bound, still goes through.
    assert_eq!(writer.reconcile_inner().unwrap(), 1, "third batch");
    assert_eq!(unreconciled(), Vec::<i64>::new());
    assert_eq!(writer.reconcile_inner().unwrap(), 0, "nothing left");

    let firing: i64 = check
        .query_row(
            "SELECT count(*) FROM episodes WHERE status = 'firing'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(firing, 4, "one firing episode per group");
}

/// The worker hears of new transitions from the writer instead of waiting for its next poll.
#[tokio::test]
async fn a_reconcile_that_queues_work_signals_the_worker() {
    let f = Fixture::new(1000);
    let quiet = tokio::time::timeout(Duration::from_millis(100), f.store.work_queued()).await;
    assert!(quiet.is_err(), "no work, no signal");
    f.send("g", &[("a", "firing", T0)]).await;
    let signalled = tokio::time::timeout(Duration::from_secs(10), f.store.work_queued()).await;
    assert!(signalled.is_ok(), "the reconcile signalled its work");
}

fn manual_clock() -> SharedClock {
    Arc::new(ManualClock::new(
        chrono::Utc.with_ymd_and_hms(2026, 11, 28, 3, 0, 0).unwrap(),
    ))
}

/// A writer over the store at `path` (created if new), not running: the test drives it, or
/// queues commands before calling `run`. `unreconciled` is how many notifications it owes.
fn bare_writer(
    path: &Path,
    clock: SharedClock,
    unreconciled: u64,
) -> (writer::Writer, std::sync::mpsc::SyncSender<Command>) {
    let connection = connect(path, false).unwrap();
    schema::prepare(&connection).unwrap();
    let settings = StoreSettings {
        store: StoreConfig {
            dir: path.parent().unwrap().to_owned(),
            ..StoreConfig::default()
        },
        reconcile: ReconcileConfig::default(),
        heartbeat_alertname: None,
    };
    let shared = Arc::new(Shared {
        unreconciled: AtomicU64::new(unreconciled),
        queued: AtomicU64::new(0),
        last_error: Mutex::new(None),
        heartbeat: AtomicI64::new(0),
        settings: RwLock::new(settings),
        work: tokio::sync::Notify::new(),
    });
    let (commands, receiver) = std::sync::mpsc::sync_channel(64);
    let writer = writer::Writer::new(
        connection,
        receiver,
        shared,
        clock,
        Arc::new(Metrics::new()),
    );
    (writer, commands)
}

/// A store capped by `[store] max_size_bytes` refuses writes as full, not as corrupt: the
/// ingest answer and a decision's error carry kind `Full`, the error's metric label says
/// `full`, and the failures are counted under their operation as before.
#[tokio::test]
async fn a_size_capped_store_refuses_writes_as_full() {
    let dir = tempfile::tempdir().unwrap();
    let settings = StoreSettings {
        store: StoreConfig {
            dir: dir.path().join("var"),
            max_size_bytes: 4096,
            ..StoreConfig::default()
        },
        reconcile: ReconcileConfig::default(),
        heartbeat_alertname: None,
    };
    let metrics = Arc::new(Metrics::new());
    let (store, writer) = Store::open(settings, 64, manual_clock(), metrics.clone()).unwrap();
    // Larger than any free page the schema leaves, so every write needs new pages.
    let padding = "x".repeat(256 * 1024);
    let record = || IngestRecord {
        received_at: 0,
        remote: "test".to_owned(),
        group_key: "g".to_owned(),
        alert_count: 1,
        body: Bytes::from(format!("{{\"padding\":\"{padding}\"}}")),
    };
    // The writer applies the cap on its first round; a write before that may still go in.
    let mut refused = None;
    for _ in 0..100 {
        match store.try_submit(record()).unwrap().await.unwrap() {
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
    }
    let refused = refused.expect("the capped store refused an ingest");
    assert_eq!(refused.kind(), WriteErrorKind::Full, "{refused}");
    assert_eq!(refused.message(), "database or disk is full");
    assert_eq!(
        store.last_write_error().map(|e| e.kind()),
        Some(WriteErrorKind::Full)
    );
    let health = store.health();
    assert!(
        matches!(&health, Err(Unhealthy::NotWritable(e)) if e.kind() == WriteErrorKind::Full),
        "{health:?}"
    );
    assert_eq!(
        health.unwrap_err().to_string(),
        "store is not writable: database or disk is full"
    );

    let mut decision = decision_for("e1");
    decision.trace = format!("{{\"padding\":\"{padding}\"}}");
    let error = store.record_decision(decision).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Write(write) if write.kind() == WriteErrorKind::Full),
        "{error:?}"
    );
    assert_eq!(error.metric_label(), "full");
    assert_eq!(error.to_string(), "store: database or disk is full");
    for operation in ["ingest", "record_decision"] {
        let counted = metrics
            .store_errors_total
            .with_label_values(&[operation])
            .get();
        assert!(counted >= 1, "{operation}: {counted}");
    }

    store.shutdown();
    writer.join_within(Duration::from_secs(5));
}

/// Reads run on blocking threads, each on a connection of its own: four reads that wait for
/// one another all finish on a runtime with a single async thread (a read on that thread, or
/// four sharing one connection, would never let the others in), and their connections are kept
/// for reuse. A read that fails gives its connection up.
#[tokio::test(flavor = "current_thread")]
async fn reads_run_side_by_side_off_the_async_thread_and_a_failed_one_drops_its_connection() {
    let f = Fixture::new(1_000);
    f.send("g1", &[("fp1", "firing", "2026-11-28T02:00:00Z")])
        .await;
    // Each read counts itself in, then waits (bounded) until all four are in at once.
    let arrived = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reads: Vec<_> = (0..4)
        .map(|_| {
            let (store, arrived) = (f.store.clone(), arrived.clone());
            tokio::spawn(async move {
                store
                    .read(move |r| {
                        arrived.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let deadline = std::time::Instant::now() + Duration::from_secs(10);
                        while arrived.load(std::sync::atomic::Ordering::SeqCst) < 4 {
                            if std::time::Instant::now() > deadline {
                                return Err(StoreError::Stopped);
                            }
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        r.incidents(None, 10)
                    })
                    .await
            })
        })
        .collect();
    for read in futures_util::future::join_all(reads).await {
        let incidents = read.unwrap().expect("all four reads were in at once");
        assert_eq!(incidents.len(), 1, "each read saw the incident");
    }
    assert_eq!(
        f.store.reads.idle(),
        4,
        "each read had its own connection, kept for reuse"
    );
    let failed: Result<(), StoreError> = f.store.read(|_| Err(StoreError::Stopped)).await;
    assert!(matches!(failed, Err(StoreError::Stopped)));
    assert_eq!(
        f.store.reads.idle(),
        3,
        "the failed read's connection was dropped"
    );
}

#[tokio::test]
async fn stored_text_a_newer_version_wrote_is_a_typed_error() {
    use crate::act::governor::Mode;
    let f = Fixture::new(1000);
    f.send("g", &[("a", "firing", T0)]).await;
    let target = "deployment/vastai/api";
    let planned = f
        .store
        .plan_action(plan(&f, 0, target, Mode::Enforce))
        .await
        .unwrap();
    assert_eq!(planned.state, ActionState::Planned);
    let reader = f.store.reader().unwrap();
    let id = reader.incidents(None, 10).unwrap().remove(0).id;
    assert_eq!(
        reader.episode(&id).unwrap().unwrap().status,
        EpisodeStatus::Firing
    );

    // Another version's words, written behind this one's back.
    let raw = rusqlite::Connection::open(f.store.database()).unwrap();
    raw.busy_timeout(Duration::from_secs(5)).unwrap();
    raw.execute(
        "UPDATE episodes SET status = 'archived' WHERE id = ?1",
        [&id],
    )
    .unwrap();
    raw.execute("UPDATE transitions SET kind = 'merged'", [])
        .unwrap();
    raw.execute("UPDATE actions SET state = 'paused-forever'", [])
        .unwrap();

    let unrecognised = |what: &'static str, text: &str| StoreError::Unrecognised {
        what,
        text: text.to_owned(),
    };
    let error = reader.episode(&id).unwrap_err();
    assert_eq!(
        error.to_string(),
        unrecognised("episode status", "archived").to_string()
    );
    assert!(
        matches!(&error, StoreError::Unrecognised { what: "episode status", text } if text == "archived"),
        "{error:?}"
    );
    assert_eq!(error.metric_label(), "unrecognised");
    let error = reader.incidents(None, 10).unwrap_err();
    assert!(
        matches!(
            &error,
            StoreError::Unrecognised {
                what: "episode status",
                ..
            }
        ),
        "{error:?}"
    );
    let error = reader.pending_transitions(10).unwrap_err();
    assert!(
        matches!(&error, StoreError::Unrecognised { what: "transition kind", text } if text == "merged"),
        "{error:?}"
    );
    // The writer reads the action back for the same key: its reply says why it failed, and
    // it is neither corrupt nor full.
    let error = f
        .store
        .plan_action(plan(&f, 0, target, Mode::Enforce))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Write(write) if write.kind() == WriteErrorKind::Unrecognised),
        "{error:?}"
    );
    assert_eq!(error.metric_label(), "unrecognised");
}
