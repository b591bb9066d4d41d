//! The writer thread: the loop, group commit, the error bookkeeping and maintenance. It owns
//! the only write connection. What each command writes lives with its domain (`journal`,
//! `episodes`, `decisions`, `actions`, `paging`, `bundles`), each a `fn(&Transaction, …)`;
//! this file decides only when a transaction runs and how durable its commit is.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction, params};

use super::{
    Command, Durability, IngestRecord, Prepared, Shared, StoreSettings, WriteError, actions,
    bundles, decisions, episodes, journal, paging,
};
use crate::clock::{Millis, SharedClock, duration_millis};
use crate::telemetry::Metrics;

/// Most notifications committed in one transaction.
const MAX_BATCH: usize = 512;
/// How long the loop sleeps when there is nothing to do.
const IDLE_TICK: Duration = Duration::from_millis(200);

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
    /// Notifications parsed by ingest, kept for reconcile (bounded).
    parsed: episodes::Parsed,
}

/// A notification to journal: the record, what ingest prepared, and who waits for its id.
type IngestItem = (
    IngestRecord,
    Prepared,
    tokio::sync::oneshot::Sender<Result<i64, WriteError>>,
);

/// Sends one held-back answer; given the error if the group could not be made durable.
type Reply = Box<dyn FnOnce(Option<&WriteError>) + Send>;

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
            parsed: episodes::Parsed::default(),
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
                            Command::Ingest(submitted, reply) => {
                                let (record, prepared) = *submitted;
                                ingest.push((record, prepared, reply));
                            }
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
                let result = self.transact("plan_action", |tx, now| actions::plan(tx, &plan, now));
                self.answer(reply, result);
            }
            Command::UpdateAction(id, state, result, reply) => {
                let outcome = self.transact("update_action", |tx, now| {
                    actions::update(tx, id, state, result.as_deref(), now)
                });
                self.answer(reply, outcome);
            }
            Command::AddHolds(request, reply) => {
                let result =
                    self.transact("holds", |tx, now| actions::add_holds(tx, &request, now));
                self.answer(reply, result);
            }
            Command::ReleaseHolds(episode_id, min_hold, reply) => {
                let result = self.transact("holds", |tx, now| {
                    actions::release_holds(tx, &episode_id, min_hold, now)
                });
                self.answer(reply, result);
            }
            Command::FinishHold(id, finish, result, reply) => {
                let outcome = self.transact("holds", |tx, now| {
                    actions::finish_hold(tx, id, finish, result.as_deref(), now)
                });
                self.answer(reply, outcome);
            }
            Command::Verify(now, reply) => {
                let result = self.transact("verify", |tx, _| actions::verify(tx, now));
                self.answer(reply, result);
            }
            Command::SetPause(pause, reply) => {
                let result = self.transact("pause", |tx, now| actions::set_pause(tx, pause, now));
                self.answer(reply, result);
            }
            Command::RecordDecision(record, reply) => {
                let result = self.transact("record_decision", |tx, now| {
                    decisions::record(tx, &record, now)
                });
                self.answer(reply, result);
            }
            Command::ApiSync(alerts, reply) => {
                let grace = duration_millis(self.settings().reconcile.gone_grace);
                let metrics = self.metrics.clone();
                let result = self.transact("api_sync", |tx, now| {
                    episodes::api_sync(tx, &alerts, grace, now, &metrics)
                });
                self.answer(reply, result);
            }
            Command::Bundle(op, reply) => {
                let result = self.transact("bundle", |tx, now| bundles::apply(tx, &op, now));
                self.answer(reply, result);
            }
            Command::Paging(op, reply) => {
                let result = self.transact("paging", |tx, now| paging::apply(tx, &op, now));
                self.answer(reply, result);
            }
            Command::CompleteTransitions(seqs, reply) => {
                let result = self.transact("complete_transitions", |tx, now| {
                    episodes::complete_transitions(tx, &seqs, now)
                });
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

    /// One command's transaction: `synchronous=FULL` (made `NORMAL` inside a group, whose last
    /// commit syncs them all), the domain's work, the commit. A failure is sorted into a
    /// `WriteError`, counted under `operation` and rolls back only this transaction.
    fn transact<T>(
        &mut self,
        operation: &'static str,
        work: impl FnOnce(&Transaction<'_>, Millis) -> rusqlite::Result<T>,
    ) -> Result<T, WriteError> {
        let now = self.clock.now_millis();
        let result = self.set_synchronous("FULL").and_then(|()| {
            let transaction = self.connection.transaction()?;
            let value = work(&transaction, now)?;
            transaction.commit()?;
            Ok(value)
        });
        match result {
            Ok(value) => {
                self.succeeded();
                Ok(value)
            }
            Err(error) => Err(self.failed(operation, error)),
        }
    }

    /// The settings in force, as the last reload left them.
    fn settings(&self) -> StoreSettings {
        let settings = self.shared.settings.read().map(|s| s.clone());
        settings.unwrap_or_else(|p| p.into_inner().clone())
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
    fn commit_ingest(&mut self, batch: Vec<IngestItem>) {
        let started = Instant::now();
        let count = batch.len();
        let result =
            self.insert_notifications(batch.iter().map(|(record, prepared, _)| (record, prepared)));
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
                for ((record, prepared, reply), id) in batch.into_iter().zip(ids) {
                    if let Some(notification) = prepared.notification {
                        self.parsed
                            .keep(prepared.hash, notification, record.body.len());
                    }
                    let _ = reply.send(Ok(id));
                }
            }
            Err(error) => {
                let error = self.failed("ingest", error);
                for (_, _, reply) in batch {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// Journal a batch with `synchronous=FULL` and, on the first commit, read back the
    /// settings it ran with (`durability`, for the readiness check's report).
    fn insert_notifications<'a>(
        &mut self,
        records: impl Iterator<Item = (&'a IngestRecord, &'a Prepared)>,
    ) -> Result<Vec<i64>, rusqlite::Error> {
        self.set_synchronous("FULL")?;
        let transaction = self.connection.transaction()?;
        let ids = journal::insert(&transaction, records)?;
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

    /// One reconcile transaction (see `episodes::reconcile`); returns how many notifications
    /// it covered. (`pub(super)` for the store's tests, which drive batches one at a time.)
    pub(super) fn reconcile_inner(&mut self) -> Result<usize, rusqlite::Error> {
        let settings = self.settings();
        let now = self.clock.now_millis();
        let transaction = self.connection.transaction()?;
        let count = episodes::reconcile(
            &transaction,
            &settings,
            now,
            &self.metrics,
            &mut self.parsed,
        )?;
        transaction.commit()?;
        Ok(count)
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
