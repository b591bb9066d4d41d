//! The writer thread: group commit, reconcile, maintenance. It owns the only write connection.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use sha2::{Digest, Sha256};

use super::{
    ActionPlan, ApiAlert, Command, DecisionRecord, Durability, IngestRecord, PlannedAction,
    Recorded, Shared, SyncSummary, Verified, WriteError,
};
use crate::act::governor::{self, Facts, Proposal, Verdict};
use crate::clock::{Millis, SharedClock, duration_millis};
use crate::episodes::reconcile::{
    self, ApiOutcome, ApiView, EpisodeStatus, Known, SnapshotOutcome, TransitionKind,
};
use crate::ingest::webhook::{self, Alert, Notification};
use crate::telemetry::Metrics;

const SCHEMA: &str = include_str!("schema.sql");
/// Migrations from the previous version, applied in order; the index is the version it
/// migrates from, minus one.
const MIGRATIONS: [&str; 7] = [
    include_str!("migrate_v2.sql"),
    include_str!("migrate_v3.sql"),
    include_str!("migrate_v4.sql"),
    include_str!("migrate_v5.sql"),
    include_str!("migrate_v6.sql"),
    include_str!("migrate_v7.sql"),
    include_str!("migrate_v8.sql"),
];
const SCHEMA_VERSION: &str = "8";

/// Most notifications committed in one transaction.
const MAX_BATCH: usize = 512;
/// How long the loop sleeps when there is nothing to do.
const IDLE_TICK: Duration = Duration::from_millis(200);

/// Pragmas, each for a reason:
/// - WAL: readers never block the writer, and a commit appends to one file.
/// - synchronous=FULL: a commit returns only after the WAL is fsync'd, so a 200 survives
///   power loss. (Reconcile transactions relax this; see `reconcile_batch`.)
/// - foreign_keys stays off: the journal must accept a notification even if a later stage's
///   row it might reference is gone.
pub(super) fn prepare(connection: &Connection) -> Result<(), rusqlite::Error> {
    let mode: String = connection.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "journal_mode stayed {mode}; WAL is required"
        )));
    }
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.execute_batch(SCHEMA)?;
    let version: Option<String> = connection
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    // A new store starts at version 1 (schema.sql) and is migrated like an old one.
    let mut current: usize = match version.as_deref() {
        None => 1,
        Some(text) => text.parse().map_err(|_| {
            rusqlite::Error::InvalidParameterName(format!(
                "store schema version {text:?} is unreadable"
            ))
        })?,
    };
    let latest: usize = SCHEMA_VERSION.parse().unwrap_or(1);
    if current > latest {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "store schema version {current} is newer than this build understands ({latest}); \
             run the newer nightshift"
        )));
    }
    while current < latest {
        let transaction = connection.unchecked_transaction()?;
        transaction.execute_batch(MIGRATIONS[current - 1])?;
        current += 1;
        transaction.execute(
            "INSERT INTO meta(key, value) VALUES ('schema_version', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [current.to_string()],
        )?;
        transaction.commit()?;
    }
    if version.is_none() {
        connection.execute(
            "INSERT INTO meta(key, value) VALUES ('schema_version', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [SCHEMA_VERSION],
        )?;
    }
    Ok(())
}

pub(super) fn count_unreconciled(connection: &Connection) -> Result<u64, rusqlite::Error> {
    connection.query_row(
        "SELECT count(*) FROM notifications WHERE reconciled_at IS NULL",
        [],
        |row| row.get::<_, i64>(0).map(|n| n as u64),
    )
}

pub(super) struct Writer {
    connection: Connection,
    receiver: Receiver<Command>,
    shared: Arc<Shared>,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    last_maintenance: Option<Instant>,
    durability: Option<Durability>,
    /// The size cap in force (`store.max_size_bytes`), once applied.
    size_cap: Option<u64>,
    /// SQLite's count of rows changed, as of the last commit or failure.
    changes_seen: std::cell::Cell<u64>,
    /// True while a group of commands is handled: their transactions commit without fsync,
    /// and one fsync'd commit at the end makes the whole group durable.
    grouping: bool,
    /// Answers held back until the group is durable.
    replies: Vec<Reply>,
}

/// Sends one held-back answer; given the error if the group could not be made durable.
type Reply = Box<dyn FnOnce(Option<&WriteError>) + Send>;

/// One stored notification waiting for reconciliation; identical consecutive snapshots of a
/// group are folded into one entry with the latest receipt time.
struct Pending {
    last_id: i64,
    received_at: Millis,
    group_key: String,
    hash: Vec<u8>,
    body: Vec<u8>,
}

impl Writer {
    pub(super) fn new(
        connection: Connection,
        receiver: Receiver<Command>,
        shared: Arc<Shared>,
        clock: SharedClock,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            connection,
            receiver,
            shared,
            clock,
            metrics,
            last_maintenance: None,
            durability: None,
            size_cap: None,
            changes_seen: std::cell::Cell::new(0),
            grouping: false,
            replies: Vec::new(),
        }
    }

    pub(super) fn run(mut self) {
        let mut stopping = false;
        loop {
            self.shared
                .heartbeat
                .store(self.clock.now_millis(), Ordering::Relaxed);
            let backlog = self.shared.unreconciled.load(Ordering::Relaxed) > 0;
            let wait = if backlog || stopping {
                Duration::ZERO
            } else {
                IDLE_TICK
            };
            match self.receiver.recv_timeout(wait) {
                Ok(first) => {
                    let mut ingest = Vec::new();
                    let mut others = Vec::new();
                    let mut next = Some(first);
                    while let Some(command) = next.take() {
                        match command {
                            Command::Ingest(record, reply) => ingest.push((record, reply)),
                            Command::Shutdown => stopping = true,
                            other => others.push(other),
                        }
                        if ingest.len() < MAX_BATCH {
                            next = self.receiver.try_recv().ok();
                        }
                    }
                    if !ingest.is_empty() {
                        self.commit_ingest(ingest);
                    }
                    self.handle_group(others);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if stopping {
                        break;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.shared.unreconciled.load(Ordering::Relaxed) > 0 && !stopping {
                self.reconcile_batch();
            }
            self.maybe_maintain();
        }
        tracing::info!(
            unreconciled = self.shared.unreconciled.load(Ordering::Relaxed),
            "store writer stopped; unreconciled notifications resume at the next start"
        );
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::PlanAction(plan, reply) => {
                let result = self
                    .plan_action(&plan)
                    .map_err(|e| self.failed("plan_action", e));
                self.answer(reply, result);
            }
            Command::UpdateAction(id, state, result, reply) => {
                let outcome = self
                    .update_action(id, &state, result.as_deref())
                    .map_err(|e| self.failed("update_action", e));
                self.answer(reply, outcome);
            }
            Command::AddHolds(request, reply) => {
                let result = self
                    .add_holds(&request)
                    .map_err(|e| self.failed("holds", e));
                self.answer(reply, result);
            }
            Command::ReleaseHolds(episode_id, min_hold, reply) => {
                let result = self
                    .release_holds(&episode_id, min_hold)
                    .map_err(|e| self.failed("holds", e));
                self.answer(reply, result);
            }
            Command::FinishHold(id, state, result, reply) => {
                let outcome = self
                    .finish_hold(id, &state, result.as_deref())
                    .map_err(|e| self.failed("holds", e));
                self.answer(reply, outcome);
            }
            Command::Verify(now, reply) => {
                let result = self.verify(now).map_err(|e| self.failed("verify", e));
                self.answer(reply, result);
            }
            Command::SetPause(pause, reply) => {
                let result = self.set_pause(pause).map_err(|e| self.failed("pause", e));
                self.answer(reply, result);
            }
            Command::RecordDecision(record, reply) => {
                let result = self
                    .record_decision(&record)
                    .map_err(|e| self.failed("record_decision", e));
                self.answer(reply, result);
            }
            Command::ApiSync(alerts, reply) => {
                let result = self
                    .api_sync(&alerts)
                    .map_err(|e| self.failed("api_sync", e));
                self.answer(reply, result);
            }
            Command::Bundle(op, reply) => {
                let result = self.bundle(&op).map_err(|e| self.failed("bundle", e));
                self.answer(reply, result);
            }
            Command::Paging(op, reply) => {
                let result = self.paging(&op).map_err(|e| self.failed("paging", e));
                self.answer(reply, result);
            }
            Command::CompleteTransitions(seqs, reply) => {
                let result = self
                    .complete_transitions(&seqs)
                    .map_err(|e| self.failed("complete_transitions", e));
                self.answer(reply, result);
            }
            Command::Inspect(reply) => {
                let result = match &self.durability {
                    Some(durability) => Ok(durability.clone()),
                    None => Err(WriteError::invalid("no ingest commit has happened yet")),
                };
                self.answer(reply, result);
            }
            Command::Ingest(..) | Command::Shutdown => {}
        }
    }

    fn failed(&self, operation: &'static str, error: rusqlite::Error) -> WriteError {
        let error = WriteError::from_sqlite(&error, self.system_errno());
        self.metrics
            .store_errors_total
            .with_label_values(&[operation])
            .inc();
        self.metrics.store_writable.set(0);
        // Rows of the failed transaction do not count as proof of writing later.
        self.changes_seen.set(self.connection.total_changes());
        tracing::error!(
            operation,
            kind = error.kind().label(),
            error = %error,
            "store write failed"
        );
        if let Ok(mut last) = self.shared.last_error.lock() {
            *last = Some(error.clone());
        }
        error
    }

    /// The operating system's error behind the connection's last failed call, if any.
    fn system_errno(&self) -> Option<i32> {
        // SAFETY: the handle is this connection's own, open for the writer's lifetime, and
        // sqlite3_system_errno only reads a field of it; the writer thread is its only user.
        let errno = unsafe { rusqlite::ffi::sqlite3_system_errno(self.connection.handle()) };
        (errno != 0).then_some(errno)
    }

    /// A commit went through. Only one that wrote something proves the store writable again:
    /// a transaction that changed nothing (a sweep that found no work) commits even on a full
    /// or read-only disk.
    fn succeeded(&self) {
        let total = self.connection.total_changes();
        let wrote = total != self.changes_seen.replace(total);
        let Ok(mut last) = self.shared.last_error.lock() else {
            return;
        };
        if last.is_some() && !wrote {
            return;
        }
        if last.take().is_some() {
            tracing::info!("store is writable again");
        }
        self.metrics.store_writable.set(1);
    }

    fn set_synchronous(&self, mode: &str) -> Result<(), rusqlite::Error> {
        let mode = if self.grouping && mode == "FULL" {
            "NORMAL"
        } else {
            mode
        };
        self.connection.pragma_update(None, "synchronous", mode)
    }

    /// Answer a command: at once, or, in a group, once the group is durable.
    fn answer<T: Send + 'static>(
        &mut self,
        reply: tokio::sync::oneshot::Sender<Result<T, WriteError>>,
        result: Result<T, WriteError>,
    ) {
        if !self.grouping {
            let _ = reply.send(result);
            return;
        }
        self.replies
            .push(Box::new(move |sync_error: Option<&WriteError>| {
                let result = match (result, sync_error) {
                    (Ok(_), Some(error)) => Err(error.clone()),
                    (result, _) => result,
                };
                let _ = reply.send(result);
            }));
    }

    /// Handle the commands that queued up together with one fsync instead of one each (group
    /// commit). Each command keeps its own transaction, so one failing rolls back only
    /// itself; they commit with `synchronous=NORMAL`, which in WAL mode appends to the log
    /// without syncing it, and a last `synchronous=FULL` commit syncs the log, and with it
    /// every commit before it. Nobody hears back before that, so an answer still means
    /// durable. A storm's decisions, pages and action updates take one fsync per group
    /// rather than one each.
    fn handle_group(&mut self, commands: Vec<Command>) {
        if commands.len() < 2 {
            for command in commands {
                self.handle(command);
            }
            return;
        }
        let changes_before = self.connection.total_changes();
        self.grouping = true;
        for command in commands {
            self.handle(command);
        }
        self.grouping = false;
        let wrote = self.connection.total_changes() != changes_before;
        let sync_error = if wrote {
            self.sync_group()
                .err()
                .map(|e| self.failed("group_commit", e))
        } else {
            None
        };
        for reply in std::mem::take(&mut self.replies) {
            reply(sync_error.as_ref());
        }
    }

    /// A small synchronous=FULL commit: its fsync of the log covers every commit before it.
    fn sync_group(&mut self) -> Result<(), rusqlite::Error> {
        self.set_synchronous("FULL")?;
        let transaction = self.connection.transaction()?;
        transaction.execute(
            "INSERT INTO meta(key, value) VALUES ('group_commits', '1')
             ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
            [],
        )?;
        transaction.commit()
    }

    /// Journal a batch in one transaction and answer each request after the fsync.
    fn commit_ingest(
        &mut self,
        batch: Vec<(
            IngestRecord,
            tokio::sync::oneshot::Sender<Result<i64, WriteError>>,
        )>,
    ) {
        let started = Instant::now();
        let count = batch.len();
        let result = self.insert_notifications(batch.iter().map(|(record, _)| record));
        self.shared
            .queued
            .fetch_sub(count as u64, Ordering::Relaxed);
        self.metrics
            .store_commit_duration_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.store_commit_batch_size.observe(count as f64);
        match result {
            Ok(ids) => {
                self.succeeded();
                self.shared
                    .unreconciled
                    .fetch_add(count as u64, Ordering::Relaxed);
                self.metrics.notifications_unreconciled.add(count as i64);
                for ((_, reply), id) in batch.into_iter().zip(ids) {
                    let _ = reply.send(Ok(id));
                }
            }
            Err(error) => {
                let error = self.failed("ingest", error);
                for (_, reply) in batch {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    fn insert_notifications<'a>(
        &mut self,
        records: impl Iterator<Item = &'a IngestRecord>,
    ) -> Result<Vec<i64>, rusqlite::Error> {
        self.set_synchronous("FULL")?;
        let transaction = self.connection.transaction()?;
        let mut ids = Vec::new();
        {
            let mut insert_payload = transaction
                .prepare_cached("INSERT OR IGNORE INTO payloads(hash, body) VALUES (?1, ?2)")?;
            let mut insert_notification = transaction.prepare_cached(
                "INSERT INTO notifications(received_at, remote, group_key, payload_hash, alert_count)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for record in records {
                let hash = Sha256::digest(&record.body);
                insert_payload.execute(params![hash.as_slice(), record.body.as_ref()])?;
                insert_notification.execute(params![
                    record.received_at,
                    record.remote,
                    record.group_key,
                    hash.as_slice(),
                    record.alert_count as i64,
                ])?;
                ids.push(transaction.last_insert_rowid());
            }
        }
        if self.durability.is_none() {
            let journal_mode: String =
                transaction.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
            let synchronous: i64 =
                transaction.query_row("PRAGMA synchronous", [], |row| row.get(0))?;
            self.durability = Some(Durability {
                journal_mode,
                synchronous_during_ingest: synchronous,
            });
        }
        transaction.commit()?;
        Ok(ids)
    }

    /// Reconcile the oldest unreconciled notifications.
    ///
    /// This transaction runs with `synchronous=NORMAL`: if power fails before the next FULL
    /// commit syncs the WAL, the reconcile is lost together with its `reconciled_at` marks
    /// (they are in the same transaction), and the notifications are reconciled again at the
    /// next start. Reconciling is idempotent, so nothing is lost or doubled, and ingest keeps
    /// the disk's fsyncs to itself.
    fn reconcile_batch(&mut self) {
        let result = self
            .set_synchronous("NORMAL")
            .and_then(|()| self.reconcile_inner());
        match result {
            Ok(done) => {
                self.succeeded();
                self.shared
                    .unreconciled
                    .fetch_sub(done as u64, Ordering::Relaxed);
                self.metrics.notifications_unreconciled.sub(done as i64);
                self.metrics
                    .notifications_reconciled_total
                    .inc_by(done as u64);
                if done > 0 {
                    self.shared.work.notify_one();
                }
            }
            Err(error) => {
                self.failed("reconcile", error);
                // Do not spin on a failing store; ingest keeps answering 503 meanwhile.
                std::thread::sleep(IDLE_TICK);
            }
        }
    }

    /// One reconcile transaction over the oldest unreconciled notifications, bounded by
    /// `reconcile.batch_size` and by `MAX_BATCH_BODY_BYTES` of bodies; returns how many it
    /// covered. (`pub(super)` for the store's tests, which drive batches one at a time.)
    pub(super) fn reconcile_inner(&mut self) -> Result<usize, rusqlite::Error> {
        let settings = self.shared.settings.read().map(|s| s.clone());
        let settings = settings.unwrap_or_else(|p| p.into_inner().clone());
        let grace = duration_millis(settings.reconcile.gone_grace);
        let now = self.clock.now_millis();
        let metrics = self.metrics.clone();
        let transaction = self.connection.transaction()?;
        let (pending, count, max_id) = load_pending(
            &transaction,
            settings.reconcile.batch_size,
            MAX_BATCH_BODY_BYTES,
        )?;
        for mut entry in pending {
            // Each body is let go once parsed: only the batch's unparsed bodies stay loaded.
            let body = std::mem::take(&mut entry.body);
            let parsed = webhook::parse(&body);
            drop(body);
            match parsed {
                Ok(mut notification) => {
                    // The pipeline's heartbeat is a sign of life, never an incident.
                    if let Some(name) = &settings.heartbeat_alertname {
                        notification
                            .alerts
                            .retain(|alert| alert.labels.get("alertname") != Some(name));
                    }
                    apply_snapshot(&transaction, &entry, &notification, grace, &metrics)?;
                }
                Err(error) => {
                    // Only bodies that parsed are journaled, so this means a parser change
                    // made an old body invalid. Record it and move on rather than wedge.
                    tracing::error!(notification = entry.last_id, %error, hash = %hex::encode(&entry.hash),
                        "stored notification no longer parses; skipped");
                }
            }
        }
        if let Some(max_id) = max_id {
            transaction
                .prepare_cached(
                    "UPDATE notifications SET reconciled_at = ?1 WHERE reconciled_at IS NULL AND id <= ?2",
                )?
                .execute(params![now, max_id])?;
        }
        transaction.commit()?;
        Ok(count)
    }

    fn api_sync(&mut self, alerts: &[ApiAlert]) -> Result<SyncSummary, rusqlite::Error> {
        let settings = self.shared.settings.read().map(|s| s.clone());
        let settings = settings.unwrap_or_else(|p| p.into_inner().clone());
        let grace = duration_millis(settings.reconcile.gone_grace);
        let now = self.clock.now_millis();
        // Alertmanager's API gives startsAt to the millisecond while its webhooks carry the full
        // precision, so episodes are matched on (fingerprint, start in whole milliseconds).
        let views: HashMap<(String, i64), bool> = alerts
            .iter()
            .map(|alert| {
                (
                    (
                        alert.fingerprint.clone(),
                        alert.starts_at.timestamp_millis(),
                    ),
                    alert.suppressed,
                )
            })
            .collect();
        self.set_synchronous("FULL")?;
        let transaction = self.connection.transaction()?;
        let mut summary = SyncSummary::default();
        type OpenEpisode = (String, String, String, String, Option<i64>);
        let open: Vec<OpenEpisode> = {
            let mut statement = transaction.prepare(
                "SELECT id, fingerprint, starts_at, status, api_absent_since FROM episodes
                 WHERE status IN ('firing', 'silenced')",
            )?;
            let rows = statement.query_map([], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        for (id, fingerprint, starts_at, status, absent_since) in open {
            let Some(status) = EpisodeStatus::parse(&status) else {
                continue;
            };
            let Ok(starts_at) = chrono::DateTime::parse_from_rfc3339(&starts_at) else {
                continue;
            };
            summary.checked += 1;
            let view = match views.get(&(fingerprint, starts_at.timestamp_millis())) {
                Some(true) => ApiView::Suppressed,
                Some(false) => ApiView::Active,
                None => ApiView::Absent,
            };
            match reconcile::decide_api(status, view, absent_since, now, grace) {
                ApiOutcome::Transition(kind) => {
                    let detail = serde_json::json!({ "source": "alertmanager_api" });
                    record_transition(&transaction, &id, kind, now, None, &detail, &self.metrics)?;
                    match kind {
                        TransitionKind::Silenced => summary.silenced += 1,
                        TransitionKind::Unsilenced => summary.unsilenced += 1,
                        TransitionKind::Gone => summary.gone += 1,
                        _ => {}
                    }
                }
                ApiOutcome::MarkAbsent => {
                    transaction.execute(
                        "UPDATE episodes SET api_absent_since = ?2 WHERE id = ?1 AND api_absent_since IS NULL",
                        params![id, now],
                    )?;
                }
                ApiOutcome::ClearAbsent => {
                    if absent_since.is_some() {
                        transaction.execute(
                            "UPDATE episodes SET api_absent_since = NULL WHERE id = ?1",
                            params![id],
                        )?;
                    }
                }
            }
        }
        transaction.commit()?;
        self.succeeded();
        Ok(summary)
    }

    fn plan_action(&mut self, plan: &ActionPlan) -> Result<PlannedAction, rusqlite::Error> {
        let now = self.clock.now_millis();
        self.set_synchronous("FULL")?;
        let transaction = self.connection.transaction()?;
        let existing = transaction
            .query_row(
                "SELECT id, verdict, verdict_detail, state FROM actions WHERE key = ?1",
                params![plan.key],
                |row| {
                    Ok(PlannedAction {
                        id: row.get(0)?,
                        verdict: row.get(1)?,
                        verdict_detail: serde_json::from_str(&row.get::<_, String>(2)?)
                            .unwrap_or_default(),
                        state: row.get(3)?,
                        new: false,
                    })
                },
            )
            .optional()?;
        if let Some(existing) = existing {
            return Ok(existing);
        }
        let paused = transaction
            .query_row(
                "SELECT until_at, reason FROM pause WHERE id = 1",
                [],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)),
            )
            .optional()?;
        let in_flight: bool = transaction.query_row(
            "SELECT EXISTS (SELECT 1 FROM actions WHERE target = ?1
             AND state IN ('planned', 'started'))",
            params![plan.target],
            |row| row.get(0),
        )?;
        let last_on_target = transaction
            .query_row(
                "SELECT created_at, id FROM actions WHERE target = ?1 AND kind = ?2
                 AND verdict = 'run' ORDER BY id DESC LIMIT 1",
                params![plan.target, plan.kind],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
            )
            .optional()?;
        let actions_last_hour: i64 = transaction.query_row(
            "SELECT count(*) FROM actions WHERE verdict = 'run' AND created_at > ?1",
            params![now - 3_600_000],
            |row| row.get(0),
        )?;
        // This incident's earlier run of the action was judged not to have helped, or the
        // same alert re-opened (a new episode of the same fingerprint) within the cooldown
        // after this action ran for it: repeating would not help.
        let judged_useless: bool = transaction.query_row(
            "SELECT EXISTS (SELECT 1 FROM actions WHERE episode_id = ?1 AND action = ?2
             AND verified = 'did_not_help')",
            params![plan.episode_id, plan.action],
            |row| row.get(0),
        )?;
        let did_not_help: bool = transaction.query_row(
            "SELECT EXISTS (SELECT 1 FROM actions WHERE episode_id LIKE ?1 || '-%'
             AND episode_id != ?2 AND action = ?3 AND verdict = 'run' AND created_at > ?4)",
            params![
                plan.fingerprint,
                plan.episode_id,
                plan.action,
                now - plan.cooldown
            ],
            |row| row.get(0),
        )?;
        let facts = Facts {
            paused,
            in_flight,
            last_on_target,
            actions_last_hour: u32::try_from(actions_last_hour).unwrap_or(u32::MAX),
            did_not_help: did_not_help || judged_useless,
        };
        // The change is in place and held by another incident with the same value: this
        // incident only joins the hold.
        let mut held_ids = Vec::new();
        for (item, value) in &plan.hold_items {
            let id: Option<i64> = transaction
                .query_row(
                    "SELECT id FROM holds WHERE target = ?1 AND item = ?2 AND value = ?3
                     AND state IN ('held', 'releasing')",
                    params![plan.target, item, value],
                    |row| row.get(0),
                )
                .optional()?;
            held_ids.push(id);
        }
        let already_held = !held_ids.is_empty() && held_ids.iter().all(Option::is_some);
        let proposal = Proposal {
            incident_id: plan.episode_id.clone(),
            target: plan.target.clone(),
            kind: plan.kind.clone(),
            shadow: plan.shadow,
            cooldown: plan.cooldown,
            already_held,
        };
        let verdict = governor::judge(&proposal, &facts, plan.mode, plan.limits, now);
        let in_flight_deferred =
            plan.defer_in_flight && verdict == Verdict::Skip(governor::Skip::InFlight);
        if (plan.defer_on_skip && matches!(verdict, Verdict::Skip(_))) || in_flight_deferred {
            // A revert is deferred by a pause, the budget or a cooldown, never dropped; an
            // action waiting for one in flight plans again. No row: the caller retries.
            return Ok(PlannedAction {
                id: 0,
                verdict: verdict.label().to_owned(),
                verdict_detail: serde_json::to_value(&verdict).unwrap_or_default(),
                state: "deferred".to_owned(),
                new: false,
            });
        }
        if verdict == Verdict::Hold {
            for id in held_ids.into_iter().flatten() {
                transaction.execute(
                    "INSERT OR IGNORE INTO hold_owners(hold_id, episode_id) VALUES (?1, ?2)",
                    params![id, plan.episode_id],
                )?;
                // A new holder stops a release in waiting.
                transaction.execute(
                    "UPDATE holds SET state = 'held', release_after = NULL WHERE id = ?1",
                    params![id],
                )?;
            }
        }
        let state = match verdict {
            Verdict::Run => "planned",
            Verdict::Hold => "done",
            _ => "skipped",
        };
        let detail = serde_json::to_value(&verdict).unwrap_or_default();
        transaction
            .prepare_cached(
                "INSERT INTO actions(key, episode_id, rule, action, kind, target, verdict,
                     verdict_detail, arguments, state, created_at, verify_window)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                plan.key,
                plan.episode_id,
                plan.rule,
                plan.action,
                plan.kind,
                plan.target,
                verdict.label(),
                detail.to_string(),
                plan.arguments,
                state,
                now,
                plan.verify_window,
            ])?;
        let id = transaction.last_insert_rowid();
        transaction.commit()?;
        self.succeeded();
        Ok(PlannedAction {
            id,
            verdict: verdict.label().to_owned(),
            verdict_detail: detail,
            state: state.to_owned(),
            new: true,
        })
    }

    fn update_action(
        &mut self,
        id: i64,
        state: &str,
        result: Option<&str>,
    ) -> Result<bool, rusqlite::Error> {
        let now = self.clock.now_millis();
        self.set_synchronous("FULL")?;
        let changed = if state == "started" {
            self.connection.execute(
                "UPDATE actions SET state = 'started', started_at = ?2, attempts = attempts + 1
                 WHERE id = ?1 AND state IN ('planned', 'not_applied')",
                params![id, now],
            )?
        } else {
            // A finished action is judged once its verify window has passed; one that ran
            // goes on the service's PagerDuty timeline as a change event.
            let transaction = self.connection.transaction()?;
            let changed = transaction.execute(
                "UPDATE actions SET state = ?2, finished_at = ?3, result = ?4,
                     verify_at = CASE WHEN ?2 = 'done' AND episode_id != ''
                         THEN ?3 + verify_window ELSE NULL END
                 WHERE id = ?1",
                params![id, state, now, result],
            )?;
            if matches!(state, "done" | "failed" | "uncertain") {
                super::paging::on_action_finished(&transaction, id, now)?;
            }
            if state == "uncertain" {
                super::paging::on_action_uncertain(&transaction, id, now)?;
            }
            transaction.commit()?;
            changed
        };
        self.succeeded();
        Ok(changed == 1)
    }

    fn add_holds(&mut self, request: &super::HoldRequest) -> Result<(), rusqlite::Error> {
        let now = self.clock.now_millis();
        self.set_synchronous("FULL")?;
        let transaction = self.connection.transaction()?;
        for (item, value, previous) in &request.items {
            transaction.execute(
                "INSERT INTO holds(target, item, value, previous, action_id, changed_at, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'held')
                 ON CONFLICT DO NOTHING",
                params![
                    request.target,
                    item,
                    value,
                    previous,
                    request.action_id,
                    now
                ],
            )?;
            transaction.execute(
                "INSERT OR IGNORE INTO hold_owners(hold_id, episode_id)
                 SELECT id, ?3 FROM holds WHERE target = ?1 AND item = ?2
                 AND state IN ('held', 'releasing')",
                params![request.target, item, request.episode_id],
            )?;
        }
        transaction.commit()?;
        self.succeeded();
        Ok(())
    }

    /// The episode resolved: it no longer holds anything. A hold with no holder left is
    /// released once the minimum hold has passed since the change.
    fn release_holds(
        &mut self,
        episode_id: &str,
        min_hold: Millis,
    ) -> Result<usize, rusqlite::Error> {
        let now = self.clock.now_millis();
        self.set_synchronous("FULL")?;
        let transaction = self.connection.transaction()?;
        transaction.execute(
            "DELETE FROM hold_owners WHERE episode_id = ?1",
            params![episode_id],
        )?;
        let released = transaction.execute(
            "UPDATE holds SET state = 'releasing', release_after = max(?1, changed_at + ?2)
             WHERE state = 'held'
             AND NOT EXISTS (SELECT 1 FROM hold_owners WHERE hold_id = holds.id)",
            params![now, min_hold],
        )?;
        transaction.commit()?;
        self.succeeded();
        Ok(released)
    }

    fn finish_hold(
        &mut self,
        id: i64,
        state: &str,
        result: Option<&str>,
    ) -> Result<(), rusqlite::Error> {
        let now = self.clock.now_millis();
        self.set_synchronous("FULL")?;
        if state == "defer" {
            self.connection.execute(
                "UPDATE holds SET release_after = ?2 WHERE id = ?1",
                params![id, now + 60_000],
            )?;
        } else {
            self.connection.execute(
                "UPDATE holds SET state = ?2, result = ?3 WHERE id = ?1",
                params![id, state, result],
            )?;
        }
        self.succeeded();
        Ok(())
    }

    /// Judge every finished action whose verify window has passed: did its incident stop
    /// firing? Returns (action id, episode, action, helped) for each judged.
    fn verify(&mut self, now: Millis) -> Result<Vec<Verified>, rusqlite::Error> {
        self.set_synchronous("FULL")?;
        let transaction = self.connection.transaction()?;
        let due: Vec<(i64, String, String, String)> = {
            let mut statement = transaction.prepare_cached(
                "SELECT a.id, a.episode_id, a.action, e.status FROM actions a
                 JOIN episodes e ON e.id = a.episode_id
                 WHERE a.verify_at IS NOT NULL AND a.verify_at <= ?1 AND a.verified IS NULL
                 LIMIT 256",
            )?;
            let rows = statement.query_map(params![now], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let mut judged = Vec::new();
        for (id, episode, action, status) in due {
            let helped = !matches!(status.as_str(), "firing" | "silenced");
            transaction.execute(
                "UPDATE actions SET verified = ?2 WHERE id = ?1",
                params![id, if helped { "helped" } else { "did_not_help" }],
            )?;
            judged.push((id, episode, action, helped));
        }
        transaction.commit()?;
        self.succeeded();
        Ok(judged)
    }

    fn set_pause(&mut self, pause: Option<(Millis, String)>) -> Result<(), rusqlite::Error> {
        let now = self.clock.now_millis();
        self.set_synchronous("FULL")?;
        match pause {
            Some((until, reason)) => self.connection.execute(
                "INSERT INTO pause(id, until_at, reason, at) VALUES (1, ?1, ?2, ?3)
                 ON CONFLICT(id) DO UPDATE SET until_at = excluded.until_at,
                     reason = excluded.reason, at = excluded.at",
                params![until, reason, now],
            )?,
            None => self.connection.execute("DELETE FROM pause", [])?,
        };
        self.succeeded();
        Ok(())
    }

    fn record_decision(&mut self, record: &DecisionRecord) -> Result<Recorded, rusqlite::Error> {
        let now = self.clock.now_millis();
        self.set_synchronous("FULL")?;
        let transaction = self.connection.transaction()?;
        if let Some(seq) = record.transition_seq {
            let pending: Option<i64> = transaction
                .query_row(
                    "SELECT seq FROM transitions WHERE seq = ?1 AND done_at IS NULL",
                    params![seq],
                    |row| row.get(0),
                )
                .optional()?;
            if pending.is_none() {
                return Ok(Recorded::AlreadyDone);
            }
        }
        let previous: Option<String> = transaction
            .query_row(
                "SELECT branch FROM episodes WHERE id = ?1",
                params![record.episode_id],
                |row| row.get(0),
            )
            .optional()?
            .flatten();
        let changed = previous.is_some_and(|branch| branch != record.branch);
        transaction
            .prepare_cached(
                "INSERT INTO decisions(episode_id, at, kind, rule, severity, branch, changed, trace)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                record.episode_id,
                record.at,
                record.kind,
                record.rule,
                record.severity,
                record.branch,
                changed,
                record.trace,
            ])?;
        transaction
            .prepare_cached(
                "UPDATE episodes SET rule = ?2, severity = ?3, branch = ?4,
                     next_evaluation_at = CASE WHEN status = 'firing' THEN ?5 ELSE NULL END
                 WHERE id = ?1",
            )?
            .execute(params![
                record.episode_id,
                record.rule,
                record.severity,
                record.branch,
                record.next_evaluation_at,
            ])?;
        if let Some(seq) = record.transition_seq {
            transaction
                .prepare_cached("UPDATE transitions SET done_at = ?2 WHERE seq = ?1")?
                .execute(params![seq, now])?;
        }
        if let Some(page) = &record.page {
            super::paging::on_decision(&transaction, &record.episode_id, page, now)?;
        }
        if let Some(plan) = &record.bundle_plan {
            super::bundles::plan(&transaction, &record.episode_id, plan, now)?;
        }
        transaction.commit()?;
        self.succeeded();
        Ok(Recorded::Recorded { changed })
    }

    fn bundle(&mut self, op: &super::BundleOp) -> Result<bool, rusqlite::Error> {
        let now = self.clock.now_millis();
        self.set_synchronous("FULL")?;
        let transaction = self.connection.transaction()?;
        let refreshed = match op {
            super::BundleOp::Written(done) => super::bundles::written(&transaction, done, now)?,
            super::BundleOp::Deleted(episode_id) => {
                super::bundles::deleted(&transaction, episode_id)?;
                false
            }
        };
        transaction.commit()?;
        self.succeeded();
        Ok(refreshed)
    }

    fn paging(&mut self, op: &super::PagingOp) -> Result<super::PagingDone, rusqlite::Error> {
        use super::PagingOp;
        let now = self.clock.now_millis();
        self.set_synchronous("FULL")?;
        let transaction = self.connection.transaction()?;
        let mut done = super::PagingDone::default();
        match op {
            PagingOp::Acted(episode_id) => {
                super::paging::mark_acted(&transaction, episode_id)?;
                // Marked acted: how long it waited for the act stage no longer matters.
                let settle = crate::page::policy::Settle::from(Millis::MAX);
                done.count =
                    super::paging::evaluate_waiting(&transaction, Some(episode_id), now, settle)?;
            }
            PagingOp::Evaluate { settle } => {
                done.count = super::paging::evaluate_waiting(&transaction, None, now, *settle)?;
            }
            PagingOp::Close(episodes) => {
                for episode_id in episodes {
                    done.count +=
                        usize::from(super::paging::on_close(&transaction, episode_id, now)?);
                }
            }
            PagingOp::Attempt(id, attempt) => {
                super::paging::record_attempt(&transaction, *id, attempt, now)?;
            }
            PagingOp::Sending(ids) => {
                done.count = super::paging::mark_sending(&transaction, ids, now)?;
            }
            PagingOp::FallBack {
                id,
                channels,
                reason,
            } => {
                done.count = super::paging::fall_back(&transaction, *id, channels, reason, now)?;
            }
            PagingOp::FixRoutingKey {
                dedup_key,
                routing_key,
            } => {
                done.routing_key = Some(super::paging::fix_routing_key(
                    &transaction,
                    dedup_key,
                    routing_key,
                )?);
            }
        }
        transaction.commit()?;
        self.succeeded();
        Ok(done)
    }

    fn complete_transitions(&mut self, seqs: &[i64]) -> Result<usize, rusqlite::Error> {
        let now = self.clock.now_millis();
        self.set_synchronous("FULL")?;
        let transaction = self.connection.transaction()?;
        let mut done = 0;
        {
            let mut statement = transaction.prepare_cached(
                "UPDATE transitions SET done_at = ?2 WHERE seq = ?1 AND done_at IS NULL",
            )?;
            for seq in seqs {
                done += statement.execute(params![seq, now])?;
            }
        }
        transaction.commit()?;
        self.succeeded();
        Ok(done)
    }

    fn maybe_maintain(&mut self) {
        let settings = self.shared.settings.read().map(|s| s.clone());
        let settings = settings.unwrap_or_else(|p| p.into_inner().clone());
        if self.size_cap != Some(settings.store.max_size_bytes) {
            match self.apply_size_cap(settings.store.max_size_bytes) {
                Ok(()) => self.size_cap = Some(settings.store.max_size_bytes),
                Err(error) => {
                    self.failed("size_cap", error);
                }
            }
        }
        let due = self
            .last_maintenance
            .is_none_or(|at| at.elapsed() >= settings.store.maintenance_interval);
        if !due {
            return;
        }
        self.last_maintenance = Some(Instant::now());
        match self.maintain(&settings.store) {
            Ok(()) => self.succeeded(),
            Err(error) => {
                self.failed("maintenance", error);
            }
        }
    }

    /// Prune reconciled notifications by age and count, drop bodies nothing refers to, refresh
    /// gauges, and prove the store is writable (the readiness check depends on it).
    /// Cap the database file (SQLite's `max_page_count`); 0 lifts the cap. A cap below the
    /// current size makes every write that needs a new page fail as "full", as a full disk
    /// would: ingest answers 503 until space is given back.
    fn apply_size_cap(&self, max_bytes: u64) -> Result<(), rusqlite::Error> {
        let page_size: i64 = self
            .connection
            .query_row("PRAGMA page_size", [], |row| row.get(0))?;
        let pages = if max_bytes == 0 {
            // SQLite's own maximum.
            4_294_967_294
        } else {
            (max_bytes as i64 / page_size.max(512)).max(1)
        };
        let applied: i64 =
            self.connection
                .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |row| {
                    row.get(0)
                })?;
        if max_bytes == 0 {
            tracing::info!(max_bytes, "store size not capped");
        } else {
            tracing::info!(
                max_bytes,
                pages = applied,
                page_size,
                "store size cap applied"
            );
        }
        Ok(())
    }

    fn maintain(&mut self, settings: &crate::config::StoreConfig) -> Result<(), rusqlite::Error> {
        let now = self.clock.now_millis();
        let cutoff = now - duration_millis(settings.retention);
        self.set_synchronous("FULL")?;
        let transaction = self.connection.transaction()?;
        let mut pruned = transaction.execute(
            "DELETE FROM notifications WHERE reconciled_at IS NOT NULL AND received_at < ?1",
            params![cutoff],
        )?;
        pruned += transaction.execute(
            "DELETE FROM notifications WHERE reconciled_at IS NOT NULL AND id <= (
                 SELECT id FROM notifications WHERE reconciled_at IS NOT NULL
                 ORDER BY id DESC LIMIT 1 OFFSET ?1)",
            params![settings.max_notifications as i64],
        )?;
        if pruned > 0 {
            transaction.execute(
                "DELETE FROM payloads WHERE NOT EXISTS (
                     SELECT 1 FROM notifications WHERE payload_hash = payloads.hash)",
                [],
            )?;
        }
        transaction.execute(
            "INSERT INTO meta(key, value) VALUES ('last_maintenance', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![now.to_string()],
        )?;
        let counts: Vec<(String, i64)> = {
            let mut statement =
                transaction.prepare("SELECT status, count(*) FROM episodes GROUP BY status")?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        transaction.commit()?;
        self.metrics
            .notifications_pruned_total
            .inc_by(pruned as u64);
        for status in ["firing", "resolved", "gone", "silenced"] {
            let count = counts
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| *n);
            self.metrics
                .episodes
                .with_label_values(&[status])
                .set(count);
        }
        if pruned > 0 {
            tracing::debug!(pruned, "pruned reconciled notifications");
        }
        Ok(())
    }
}

/// Most body bytes one reconcile batch loads into memory. Alertmanager sends a group's full
/// snapshot every time, so after a restart with a backlog of large notifications a batch bounded
/// only by count could hold hundreds of MiB of bodies at once. A batch always takes at least one
/// notification, so a single body over this still makes progress.
const MAX_BATCH_BODY_BYTES: u64 = 32 * 1024 * 1024;

/// Load up to `limit` unreconciled notifications in receipt order, folding consecutive
/// identical snapshots of a group into one, and stopping before the bodies to load would pass
/// `max_bytes` (but always taking the first). Returns the entries, how many notifications they
/// cover, and the highest id covered: every unreconciled notification up to that id is covered,
/// so the batch is a prefix of the backlog in receipt order.
fn load_pending(
    transaction: &Transaction<'_>,
    limit: usize,
    max_bytes: u64,
) -> Result<(Vec<Pending>, usize, Option<i64>), rusqlite::Error> {
    // The limit is written into the SQL: SQLite re-plans a statement with a bound LIMIT on
    // every run, which showed up in the ingest benchmark's profile. `length()` of a BLOB is
    // read from the record header, without loading the body (or its overflow pages).
    let mut statement = transaction.prepare_cached(&format!(
        "SELECT n.id, n.received_at, n.group_key, n.payload_hash, length(p.body)
         FROM notifications n LEFT JOIN payloads p ON p.hash = n.payload_hash
         WHERE n.reconciled_at IS NULL ORDER BY n.id LIMIT {}",
        limit.max(1)
    ))?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, Vec<u8>>(3)?,
            row.get::<_, Option<i64>>(4)?,
        ))
    })?;
    let mut pending: Vec<Pending> = Vec::new();
    let mut last_of_group: HashMap<String, usize> = HashMap::new();
    let mut count = 0;
    let mut max_id = None;
    let mut bytes: u64 = 0;
    for row in rows {
        let (id, received_at, group_key, hash, size) = row?;
        if let Some(&index) = last_of_group.get(&group_key)
            && pending[index].hash == hash
        {
            // Folded into an entry already in the batch: no body of its own to load.
            count += 1;
            max_id = Some(id);
            let entry = &mut pending[index];
            entry.last_id = id;
            entry.received_at = entry.received_at.max(received_at);
            continue;
        }
        let size = size.map_or(0, |size| size.max(0) as u64);
        if !pending.is_empty() && bytes.saturating_add(size) > max_bytes {
            // The rest waits for the next batch; stopping here keeps the batch a prefix.
            break;
        }
        bytes = bytes.saturating_add(size);
        count += 1;
        max_id = Some(id);
        last_of_group.insert(group_key.clone(), pending.len());
        pending.push(Pending {
            last_id: id,
            received_at,
            group_key,
            hash,
            body: Vec::new(),
        });
    }
    drop(statement);
    let mut body_statement =
        transaction.prepare_cached("SELECT body FROM payloads WHERE hash = ?1")?;
    for entry in &mut pending {
        entry.body = body_statement
            .query_row(params![entry.hash], |row| row.get(0))
            .optional()?
            .unwrap_or_default();
    }
    Ok((pending, count, max_id))
}

fn labels_json(labels: &webhook::LabelSet) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".to_owned())
}

/// Apply one snapshot of a group: per-alert transitions, then absences.
fn apply_snapshot(
    transaction: &Transaction<'_>,
    entry: &Pending,
    notification: &Notification,
    grace: Millis,
    metrics: &Metrics,
) -> Result<(), rusqlite::Error> {
    let received_at = entry.received_at;
    let mut present = HashSet::with_capacity(notification.alerts.len());
    for alert in &notification.alerts {
        let id = reconcile::episode_id(&alert.fingerprint, alert.starts_at);
        present.insert(id.clone());
        let known: Option<Known> = transaction
            .prepare_cached("SELECT status, status_changed_at FROM episodes WHERE id = ?1")?
            .query_row(params![id], |row| {
                let status: String = row.get(0)?;
                Ok(EpisodeStatus::parse(&status).map(|status| Known {
                    status,
                    status_changed_at: row.get(1).unwrap_or(0),
                }))
            })
            .optional()?
            .flatten();
        let outcome = reconcile::decide_alert(known, alert.status, received_at, grace);
        match (known, outcome) {
            (None, SnapshotOutcome::Transition(kind)) => {
                insert_episode(
                    transaction,
                    &id,
                    alert,
                    &entry.group_key,
                    entry.last_id,
                    received_at,
                    kind,
                )?;
                let detail = serde_json::json!({
                    "alert_status": alert.status.as_str(),
                    "seen_firing": kind == TransitionKind::Opened,
                    "group_key": entry.group_key,
                });
                insert_transition(
                    transaction,
                    &id,
                    kind,
                    received_at,
                    Some(entry.last_id),
                    &detail,
                    metrics,
                )?;
            }
            (Some(_), SnapshotOutcome::Transition(kind)) => {
                touch_episode(transaction, &id, alert, received_at)?;
                let detail = serde_json::json!({
                    "alert_status": alert.status.as_str(),
                    "group_key": entry.group_key,
                });
                record_transition(
                    transaction,
                    &id,
                    kind,
                    received_at,
                    Some(entry.last_id),
                    &detail,
                    metrics,
                )?;
            }
            (_, SnapshotOutcome::Repeat) => touch_episode(transaction, &id, alert, received_at)?,
            (_, SnapshotOutcome::Stale) => {
                metrics.reconcile_stale_alerts_total.inc();
                transaction
                    .prepare_cached(
                        "UPDATE episodes SET last_seen = max(last_seen, ?2) WHERE id = ?1",
                    )?
                    .execute(params![id, received_at])?;
            }
        }
        if outcome_leaves_open(known, outcome) {
            transaction
                .prepare_cached(
                    "INSERT OR IGNORE INTO episode_groups(group_key, episode_id, first_seen) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![entry.group_key, id, received_at])?;
        }
    }
    if notification.truncated_alerts > 0 {
        // A truncated snapshot does not list every alert; absence proves nothing.
        return Ok(());
    }
    let members: Vec<(String, i64, String)> = {
        let mut statement = transaction.prepare_cached(
            "SELECT g.episode_id, g.first_seen, e.status FROM episode_groups g
             JOIN episodes e ON e.id = g.episode_id WHERE g.group_key = ?1",
        )?;
        let rows = statement.query_map(params![entry.group_key], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    for (id, first_seen, status) in members {
        if present.contains(&id) {
            continue;
        }
        let Some(status) = EpisodeStatus::parse(&status) else {
            continue;
        };
        if reconcile::absent_from_snapshot_is_gone(status, first_seen, received_at, grace) {
            let detail = serde_json::json!({
                "reason": "absent from a later complete snapshot of its group",
                "group_key": entry.group_key,
            });
            record_transition(
                transaction,
                &id,
                TransitionKind::Gone,
                received_at,
                Some(entry.last_id),
                &detail,
                metrics,
            )?;
        }
    }
    Ok(())
}

fn outcome_leaves_open(known: Option<Known>, outcome: SnapshotOutcome) -> bool {
    match outcome {
        SnapshotOutcome::Transition(kind) => kind.status_after().is_open(),
        SnapshotOutcome::Repeat | SnapshotOutcome::Stale => {
            known.is_some_and(|k| k.status.is_open())
        }
    }
}

fn insert_episode(
    transaction: &Transaction<'_>,
    id: &str,
    alert: &Alert,
    group_key: &str,
    notification_id: i64,
    received_at: Millis,
    kind: TransitionKind,
) -> Result<(), rusqlite::Error> {
    let status = kind.status_after();
    let closed_at = (!status.is_open()).then_some(received_at);
    transaction
        .prepare_cached(
            "INSERT INTO episodes(id, fingerprint, starts_at, group_key, status, labels, annotations,
                 generator_url, ends_at, first_seen, last_seen, status_changed_at, closed_at,
                 first_notification)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?10, ?11, ?12)",
        )?
        .execute(params![
            id,
            alert.fingerprint,
            reconcile::canonical_time(alert.starts_at),
            group_key,
            status.as_str(),
            labels_json(&alert.labels),
            labels_json(&alert.annotations),
            alert.generator_url,
            alert.ends_at.map(reconcile::canonical_time),
            received_at,
            closed_at,
            notification_id,
        ])?;
    Ok(())
}

/// Refresh what a later snapshot may have changed: last-seen, annotations, the end time.
fn touch_episode(
    transaction: &Transaction<'_>,
    id: &str,
    alert: &Alert,
    received_at: Millis,
) -> Result<(), rusqlite::Error> {
    transaction
        .prepare_cached(
            "UPDATE episodes SET last_seen = max(last_seen, ?2), annotations = ?3,
                 ends_at = coalesce(?4, ends_at)
             WHERE id = ?1",
        )?
        .execute(params![
            id,
            received_at,
            labels_json(&alert.annotations),
            alert.ends_at.map(reconcile::canonical_time),
        ])?;
    Ok(())
}

/// Move an existing episode to the status `kind` leads to and record the transition.
fn record_transition(
    transaction: &Transaction<'_>,
    id: &str,
    kind: TransitionKind,
    at: Millis,
    notification_id: Option<i64>,
    detail: &serde_json::Value,
    metrics: &Metrics,
) -> Result<(), rusqlite::Error> {
    let status = kind.status_after();
    if status.is_open() {
        transaction
            .prepare_cached(
                "UPDATE episodes SET status = ?2, status_changed_at = ?3, closed_at = NULL,
                     api_absent_since = NULL WHERE id = ?1",
            )?
            .execute(params![id, status.as_str(), at])?;
    } else {
        transaction
            .prepare_cached(
                "UPDATE episodes SET status = ?2, status_changed_at = ?3, closed_at = ?3 WHERE id = ?1",
            )?
            .execute(params![id, status.as_str(), at])?;
        transaction
            .prepare_cached("DELETE FROM episode_groups WHERE episode_id = ?1")?
            .execute(params![id])?;
    }
    insert_transition(transaction, id, kind, at, notification_id, detail, metrics)
}

fn insert_transition(
    transaction: &Transaction<'_>,
    id: &str,
    kind: TransitionKind,
    at: Millis,
    notification_id: Option<i64>,
    detail: &serde_json::Value,
    metrics: &Metrics,
) -> Result<(), rusqlite::Error> {
    transaction
        .prepare_cached(
            "INSERT INTO transitions(episode_id, kind, at, notification_id, detail)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            id,
            kind.as_str(),
            at,
            notification_id,
            detail.to_string()
        ])?;
    metrics
        .episode_transitions_total
        .with_label_values(&[kind.as_str()])
        .inc();
    tracing::info!(
        episode = id,
        transition = kind.as_str(),
        "episode transition"
    );
    Ok(())
}
