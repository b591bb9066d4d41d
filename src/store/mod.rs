//! store: the embedded SQLite store, the only module that speaks SQL.
//!
//! One writer thread owns the write connection. Ingest hands it notifications through a
//! bounded queue; the writer commits everything queued in one transaction (group commit) and
//! answers each request only after that commit is on disk (WAL, `synchronous=FULL`). Between
//! commits it reconciles stored notifications into episode transitions and does maintenance.
//! Readers (API, CLI) open their own read-only connections; WAL lets them run beside the writer,
//! and `access` lets an operator who may only read the state directory open one, the daemon
//! running or stopped.
//!
//! Invariant: an `Ok` from [`Store::try_submit`]'s receiver means the notification is durable.

mod access;
mod actions;
mod bundles;
mod decisions;
mod engine;
mod episodes;
mod journal;
mod paging;
mod pool;
mod reader;
mod schema;
pub mod values;
mod write_error;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use rusqlite::Connection;
use tokio::sync::oneshot;

pub use bundles::StoredNotification;
pub use bundles::{BundleRow, BundleWork, BundleWritten};
pub use engine::{Engine, PendingWork};
pub use paging::{
    ActionWithEpisode, Attempt, ChannelBacklog, EpisodeRouting, IncidentPaging, OutboxBacklog,
    OutboxRow, PageFacts, PageRequest, PagedIncident, PagedIncidents, SentEvent,
};
pub use reader::{
    DecisionEntry, DueRevert, EpisodeRow, IncidentDetail, IncidentSummary, NotificationCounts,
    PendingTransition, Reader, StartedAction, TransitionRecord, UnpagedIncident,
};
pub use values::{
    ActionState, BundleState, DecisionKind, HoldFinish, HoldState, IncidentPageState, OutboxKind,
    OutboxState, PageStatus, StoredText, Unrecognised, Verification,
};
pub use write_error::{WriteError, WriteErrorKind};

pub use crate::act::governor::Pause;
use crate::clock::{Millis, SharedClock};
use crate::config::{ReconcileConfig, StoreConfig};
use crate::telemetry::Metrics;

/// The store file inside the state directory.
pub const DATABASE_FILE: &str = "nightshift.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sqlite(rusqlite::Error),
    /// A row holds a kind or state this version does not know: a newer nightshift wrote it.
    #[error(
        "store: {what} {text:?} is not one this version knows (written by a newer nightshift?)"
    )]
    Unrecognised { what: &'static str, text: String },
    #[error("store: cannot create state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store: the writer has stopped")]
    Stopped,
    /// The writer could not carry out a command; the kind says why (full, read-only, ...).
    #[error("store: {0}")]
    Write(WriteError),
    /// No database file where one was expected (a reader before the daemon's first start).
    #[error(
        "store: no store at {} (has nightshift run with this state directory?)",
        .0.display()
    )]
    Missing(PathBuf),
    #[error("store: cannot start writer thread: {0}")]
    WriterThread(std::io::Error),
    /// The reader may not read a store file: the one way an operator outside the state
    /// directory's group fails, told in words that say what to do.
    #[error(
        "cannot read {}: permission denied — are you in the group that owns {} ({group})?",
        path.display(),
        dir.display()
    )]
    PermissionDenied {
        path: PathBuf,
        dir: PathBuf,
        group: String,
    },
    /// A reader that may not create `-shm` cannot read the store without it.
    #[error(
        "store: {} is missing and this user may not create it, and {} holds commits, so \
         the store cannot be read without it: run this as root or as nightshift's user",
        shm.display(),
        wal.display()
    )]
    NoSharedMemory { shm: PathBuf, wal: PathBuf },
}

impl StoreError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            StoreError::Sqlite(_) => "sqlite",
            StoreError::Unrecognised { .. } => "unrecognised",
            StoreError::StateDir { .. } => "state_dir",
            StoreError::Stopped => "stopped",
            StoreError::Write(error) => error.kind().label(),
            StoreError::Missing(_) => "missing",
            StoreError::WriterThread(_) => "writer_thread",
            StoreError::PermissionDenied { .. } => "permission_denied",
            StoreError::NoSharedMemory { .. } => "no_shared_memory",
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    /// A column of unknown kind or state text is told apart from SQLite's own failures.
    fn from(error: rusqlite::Error) -> StoreError {
        match values::unrecognised_in(&error) {
            Some(unrecognised) => StoreError::Unrecognised {
                what: unrecognised.what,
                text: unrecognised.text.clone(),
            },
            None => StoreError::Sqlite(error),
        }
    }
}

/// Why the store is not healthy; /readyz and the self-page say it in these words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unhealthy {
    /// The last write failed, and none has succeeded since.
    #[error("store is not writable: {0}")]
    NotWritable(WriteError),
    /// The writer loop has not gone round for this many milliseconds.
    #[error("store writer has not gone round for {0} ms")]
    Stalled(Millis),
}

/// Why a notification was not even queued; each maps to a 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("the commit queue is full")]
    QueueFull,
    #[error("too many notifications are waiting to be reconciled")]
    Backlog,
    #[error("the store is shutting down")]
    Stopped,
}

/// A webhook ready to be journaled.
#[derive(Debug, Clone)]
pub struct IngestRecord {
    pub received_at: Millis,
    pub remote: String,
    pub group_key: String,
    pub alert_count: usize,
    pub body: Bytes,
}

/// What ingest prepared off the writer thread: the body's SHA-256 (its key in the journal)
/// and, for a body of ordinary size, its parse, which reconcile uses instead of parsing the
/// stored body again (it still does after a restart, or when many wait; see
/// `episodes::Parsed`).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub hash: [u8; 32],
    pub notification: Option<Arc<crate::ingest::webhook::Notification>>,
}

/// A body's key in the journal: its SHA-256 (identical snapshots are stored once).
pub fn payload_hash(body: &[u8]) -> [u8; 32] {
    <sha2::Sha256 as sha2::Digest>::digest(body).into()
}

impl Prepared {
    /// Only the hash, computed here.
    pub fn hash_only(body: &[u8]) -> Prepared {
        Prepared {
            hash: payload_hash(body),
            notification: None,
        }
    }
}

/// Settings the writer reads on every use, so that a reload takes effect at once.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub store: StoreConfig,
    pub reconcile: ReconcileConfig,
    /// Alerts with this `alertname` are heartbeats (the Watchdog): never episodes.
    pub heartbeat_alertname: Option<String>,
}

impl StoreSettings {
    pub fn from_config(config: &crate::config::Config) -> StoreSettings {
        StoreSettings {
            store: config.store.clone(),
            reconcile: config.reconcile.clone(),
            heartbeat_alertname: Some(config.watchdog.alertname.clone())
                .filter(|name| !name.is_empty()),
        }
    }
}

/// One alert as Alertmanager's API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiAlert {
    pub fingerprint: String,
    pub starts_at: chrono::DateTime<chrono::Utc>,
    pub suppressed: bool,
}

/// What one sync with Alertmanager's API changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncSummary {
    pub checked: usize,
    pub silenced: usize,
    pub unsilenced: usize,
    pub gone: usize,
}

/// How the writer's connection is set up, as read back from SQLite during an ingest commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    pub journal_mode: String,
    /// SQLite's number: 2 is FULL, 3 is EXTRA.
    pub synchronous_during_ingest: i64,
}

/// A decision to record: its trace, and what it changes on the episode.
#[derive(Debug, Clone)]
pub struct DecisionRecord {
    pub episode_id: String,
    /// The transition this decision handles; it is marked done in the same transaction.
    pub transition_seq: Option<i64>,
    pub kind: DecisionKind,
    pub rule: String,
    pub severity: String,
    pub branch: String,
    /// The whole decision as JSON.
    pub trace: String,
    pub at: Millis,
    /// When to evaluate again while the episode fires; `None` for never.
    pub next_evaluation_at: Option<Millis>,
    /// What the decision means for paging, recorded in the same transaction.
    pub page: Option<PageRequest>,
    /// The incident's bundle plan (its rendered collectors, JSON), on the decision that opens
    /// it; the bundle is then owed, even across a crash.
    pub bundle_plan: Option<String>,
}

/// A bundle step for the writer.
#[derive(Debug, Clone)]
pub enum BundleOp {
    Written(BundleWritten),
    /// Retention removed its file.
    Deleted(String),
}

/// A paging step for the writer; each runs in one transaction.
#[derive(Debug, Clone)]
pub enum PagingOp {
    /// The act stage finished with this episode's decision: judge it if it waits.
    Acted(String),
    /// Judge every incident waiting under `after_verify`; `settle` bounds how long one waits
    /// for its actions to be planned, and says when this process started (an act stage cut
    /// off by a restart is not waited for).
    Evaluate {
        settle: crate::page::policy::Settle,
    },
    /// These episodes closed.
    Close(Vec<String>),
    Attempt(i64, Attempt),
    /// These outbox rows are about to be sent (one round of the delivery worker): record
    /// when, before anything goes, so events a crash cuts off before their answers are
    /// recorded still count against the rate limit at the next start. `count`: rows marked.
    Sending(Vec<i64>),
    FallBack {
        id: i64,
        channels: Vec<String>,
        reason: String,
    },
    FixRoutingKey {
        dedup_key: String,
        routing_key: String,
    },
}

/// What a paging step did: how many incidents were paged (or events queued), and the routing
/// key for `FixRoutingKey`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PagingDone {
    pub count: usize,
    pub routing_key: Option<String>,
}

/// What recording a decision did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded; `changed` says whether the branch differs from the previous decision.
    Recorded { changed: bool },
    /// The transition had already been handled (a retry after a crash); nothing written.
    AlreadyDone,
}

/// An action a decision chose, ready for the governor.
#[derive(Debug, Clone)]
pub struct ActionPlan {
    /// The idempotency key: incident, rule, action, target.
    pub key: String,
    pub episode_id: String,
    pub fingerprint: String,
    pub rule: String,
    pub action: String,
    pub kind: String,
    pub target: String,
    pub shadow: bool,
    pub cooldown: Millis,
    /// The rendered arguments as they may be shown (secrets redacted), JSON.
    pub arguments: String,
    pub mode: crate::act::governor::Mode,
    pub limits: crate::act::governor::Limits,
    /// What the action would hold if it changes something reverted on resolve. An active
    /// hold of the same value makes it a mere hold.
    pub hold_items: Vec<HeldValue>,
    /// A skip (pause, budget, cooldown, in flight) records nothing: the caller tries again
    /// later. Used for reverts, which are deferred, never dropped.
    pub defer_on_skip: bool,
    /// How long after it finishes the incident must have stopped firing for the action to
    /// count as having helped.
    pub verify_window: Millis,
    /// An in-flight skip records nothing: the caller waits for the action in flight and
    /// plans again, so a change it makes can be joined as a hold.
    pub defer_in_flight: bool,
}

/// An action judged after its verify window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub action_id: i64,
    pub episode_id: String,
    /// The action's name in its rule.
    pub action: String,
    /// Its incident stopped firing within the verify window.
    pub helped: bool,
}

/// A value an action would set and hold until its incident resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldValue {
    /// What it changes on the target: `env:NAME` or `replicas`.
    pub item: String,
    /// The value it sets, as JSON.
    pub value: String,
}

/// One change an action made that its incident holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldItem {
    /// What it changed on the target: `env:NAME` or `replicas`.
    pub item: String,
    /// The value set, as JSON.
    pub value: String,
    /// The value before, as JSON; a revert restores it.
    pub previous: String,
}

/// Changes an action made that its incident holds until it resolves.
#[derive(Debug, Clone)]
pub struct HoldRequest {
    pub target: String,
    pub episode_id: String,
    pub action_id: i64,
    pub items: Vec<HoldItem>,
}

/// An action as planned: its row id, the governor's verdict, and whether this call planned
/// it (false: the key existed, nothing new happened).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedAction {
    pub id: i64,
    pub verdict: crate::act::governor::VerdictKind,
    pub verdict_detail: serde_json::Value,
    pub state: ActionState,
    pub new: bool,
}

enum Command {
    PlanAction(
        Box<ActionPlan>,
        oneshot::Sender<Result<PlannedAction, WriteError>>,
    ),
    /// Mark an action started (before it runs) or finished (after): id, state, result.
    UpdateAction(
        i64,
        ActionState,
        Option<String>,
        oneshot::Sender<Result<bool, WriteError>>,
    ),
    SetPause(Option<Pause>, oneshot::Sender<Result<(), WriteError>>),
    AddHolds(Box<HoldRequest>, oneshot::Sender<Result<(), WriteError>>),
    Verify(Millis, oneshot::Sender<Result<Vec<Verified>, WriteError>>),
    ReleaseHolds(String, Millis, oneshot::Sender<Result<usize, WriteError>>),
    FinishHold(
        i64,
        HoldFinish,
        Option<String>,
        oneshot::Sender<Result<(), WriteError>>,
    ),
    RecordDecision(
        Box<DecisionRecord>,
        oneshot::Sender<Result<Recorded, WriteError>>,
    ),
    Paging(PagingOp, oneshot::Sender<Result<PagingDone, WriteError>>),
    Bundle(BundleOp, oneshot::Sender<Result<bool, WriteError>>),
    Ingest(
        Box<(IngestRecord, Prepared)>,
        oneshot::Sender<Result<i64, WriteError>>,
    ),
    ApiSync(
        Vec<ApiAlert>,
        oneshot::Sender<Result<SyncSummary, WriteError>>,
    ),
    CompleteTransitions(Vec<i64>, oneshot::Sender<Result<usize, WriteError>>),
    Inspect(oneshot::Sender<Result<Durability, WriteError>>),
    Shutdown,
}

struct Shared {
    unreconciled: AtomicU64,
    queued: AtomicU64,
    /// Last store write failure, cleared by the next success.
    last_error: Mutex<Option<WriteError>>,
    /// When the writer loop last went round; read by the watchdog.
    heartbeat: AtomicI64,
    settings: RwLock<StoreSettings>,
    /// Raised by the writer when a reconcile queued new transitions, so the worker starts on
    /// them at once instead of at its next poll.
    work: tokio::sync::Notify,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    commands: SyncSender<Command>,
    shared: Arc<Shared>,
    database: PathBuf,
    clock: SharedClock,
    reads: Arc<pool::ReadPool>,
}

/// The writer thread; join it after [`Store::shutdown`].
pub struct WriterThread(JoinHandle<()>);

impl WriterThread {
    /// Wait for the writer to finish what it was given, up to `deadline`.
    pub fn join_within(self, deadline: Duration) -> bool {
        let start = std::time::Instant::now();
        while !self.0.is_finished() {
            if start.elapsed() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.0.join().is_ok()
    }
}

pub fn database_path(state_dir: &Path) -> PathBuf {
    state_dir.join(DATABASE_FILE)
}

/// Open a connection with the settings every nightshift connection uses.
fn connect(path: &Path, read_only: bool) -> Result<Connection, rusqlite::Error> {
    use rusqlite::OpenFlags;
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let connection = Connection::open_with_flags(path, flags)?;
    if !read_only {
        // Keep `-wal` and `-shm` when the last connection closes instead of letting SQLite
        // delete them: a reader who may not write the state directory (an operator in its
        // group) cannot create `-shm` again, and SQLite needs it to read a WAL database
        // read-only. `journal_size_limit` alone would not do: it bounds the log, it still
        // deletes both files at close.
        let mut persist: std::ffi::c_int = 1;
        connection.file_control(
            Some("main"),
            rusqlite::FileControl::PersistWal(&mut persist),
        )?;
    }
    // Wait briefly instead of failing when the writer holds a lock (checkpoints).
    connection.busy_timeout(Duration::from_secs(5))?;
    Ok(connection)
}

impl Store {
    /// Open (creating if needed) the store in `settings.store.dir` and start the writer.
    pub fn open(
        settings: StoreSettings,
        queue_capacity: usize,
        clock: SharedClock,
        metrics: Arc<Metrics>,
    ) -> Result<(Store, WriterThread), StoreError> {
        let dir = settings.store.dir.clone();
        let state_dir_error = |source| StoreError::StateDir {
            path: dir.clone(),
            source,
        };
        crate::state_dir::create_dir(&dir).map_err(state_dir_error)?;
        let database = database_path(&dir);
        // Created with its mode before SQLite opens it: SQLite gives the write-ahead log and
        // shared-memory files the database's mode.
        if !database.exists() {
            crate::state_dir::write_new(&database, b"").map_err(state_dir_error)?;
        }
        let connection = connect(&database, false)?;
        for suffix in ["", "-wal", "-shm"] {
            let mut name = database.clone().into_os_string();
            name.push(suffix);
            crate::state_dir::set_file_mode(Path::new(&name)).map_err(state_dir_error)?;
        }
        schema::prepare(&connection)?;
        let unreconciled = journal::count_unreconciled(&connection)?;
        metrics.notifications_unreconciled.set(unreconciled as i64);
        metrics.store_writable.set(1);
        let shared = Arc::new(Shared {
            unreconciled: AtomicU64::new(unreconciled),
            queued: AtomicU64::new(0),
            last_error: Mutex::new(None),
            heartbeat: AtomicI64::new(clock.now_millis()),
            settings: RwLock::new(settings.clone()),
            work: tokio::sync::Notify::new(),
        });
        let (commands, receiver) = sync_channel(queue_capacity.max(1));
        let writer =
            writer::Writer::new(connection, receiver, shared.clone(), clock.clone(), metrics);
        let handle = std::thread::Builder::new()
            .name("store-writer".to_owned())
            .spawn(move || writer.run())
            .map_err(StoreError::WriterThread)?;
        Ok((
            Store {
                commands,
                shared,
                reads: pool::ReadPool::new(database.clone()),
                database,
                clock,
            },
            WriterThread(handle),
        ))
    }

    /// Queue a notification for the next group commit. The receiver yields the notification's
    /// id once it is durable, or the store error that kept it from being stored.
    pub fn try_submit(
        &self,
        record: IngestRecord,
    ) -> Result<oneshot::Receiver<Result<i64, WriteError>>, Rejected> {
        let prepared = Prepared::hash_only(&record.body);
        self.try_submit_prepared(record, prepared)
    }

    /// [`Store::try_submit`] with the hash (and the parse) done by the caller, off the writer
    /// thread.
    pub fn try_submit_prepared(
        &self,
        record: IngestRecord,
        prepared: Prepared,
    ) -> Result<oneshot::Receiver<Result<i64, WriteError>>, Rejected> {
        let cap = self.settings().store.max_unreconciled;
        let waiting = self.shared.unreconciled.load(Ordering::Relaxed)
            + self.shared.queued.load(Ordering::Relaxed);
        if waiting >= cap {
            return Err(Rejected::Backlog);
        }
        let (reply, receiver) = oneshot::channel();
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        match self
            .commands
            .try_send(Command::Ingest(Box::new((record, prepared)), reply))
        {
            Ok(()) => Ok(receiver),
            Err(error) => {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                Err(match error {
                    TrySendError::Full(_) => Rejected::QueueFull,
                    TrySendError::Disconnected(_) => Rejected::Stopped,
                })
            }
        }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, WriteError>>) -> Command,
    ) -> Result<T, StoreError> {
        let (reply, receiver) = oneshot::channel();
        let commands = self.commands.clone();
        let command = make(reply);
        // A full queue blocks; do that off the async runtime.
        tokio::task::spawn_blocking(move || commands.send(command))
            .await
            .map_err(|_| StoreError::Stopped)?
            .map_err(|_| StoreError::Stopped)?;
        receiver
            .await
            .map_err(|_| StoreError::Stopped)?
            .map_err(StoreError::Write)
    }

    /// Ask the writer to finish what is queued and stop.
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
    }

    /// `Err(why)` when the last write failed or the writer stopped going round.
    pub fn health(&self) -> Result<(), Unhealthy> {
        if let Some(error) = self.last_write_error() {
            return Err(Unhealthy::NotWritable(error));
        }
        let stalled_for = self.clock.now_millis() - self.heartbeat();
        if stalled_for > 30_000 {
            return Err(Unhealthy::Stalled(stalled_for));
        }
        Ok(())
    }

    /// The last store write failure, until a write succeeds again.
    pub fn last_write_error(&self) -> Option<WriteError> {
        self.shared.last_error.lock().map_or(None, |e| e.clone())
    }

    /// Resolves when a reconcile has queued work since the last call (at once if it has
    /// already); the worker polls as well, so a missed signal only costs a poll interval.
    pub async fn work_queued(&self) {
        self.shared.work.notified().await
    }

    /// When the writer loop last went round.
    pub fn heartbeat(&self) -> Millis {
        self.shared.heartbeat.load(Ordering::Relaxed)
    }

    pub fn unreconciled(&self) -> u64 {
        self.shared.unreconciled.load(Ordering::Relaxed)
    }

    pub fn settings(&self) -> StoreSettings {
        self.shared
            .settings
            .read()
            .map_or_else(|poisoned| poisoned.into_inner().clone(), |s| s.clone())
    }

    /// Apply reloaded settings (the state directory itself cannot change at runtime).
    pub fn update_settings(&self, mut settings: StoreSettings) {
        if let Ok(mut current) = self.shared.settings.write() {
            settings.store.dir = current.store.dir.clone();
            *current = settings;
        }
    }

    pub fn database(&self) -> &Path {
        &self.database
    }

    /// A read-only connection of the caller's own, outside the pool: for tests and tools that
    /// hold one across several reads. The daemon reads through [`Store::read`].
    pub fn reader(&self) -> Result<Reader, StoreError> {
        Reader::open(&self.database)
    }

    /// Run a read on the store's pool of read-only connections, on a blocking thread (never
    /// SQLite on an async worker thread). The SQLite engine's named reads ([`Engine`]) are
    /// built on it; outside `store/` only the night report still composes its reads on a
    /// `Reader` (shared with the CLI), through [`Store::read_blocking`].
    pub async fn read<T, Q>(&self, query: Q) -> Result<T, StoreError>
    where
        T: Send + 'static,
        Q: FnOnce(&Reader) -> Result<T, StoreError> + Send + 'static,
    {
        self.reads.read(query).await
    }

    /// The same read, for code already on a blocking thread (a collector, a test).
    pub fn read_blocking<T>(
        &self,
        query: impl FnOnce(&Reader) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.reads.read_blocking(query)
    }
}

#[cfg(test)]
mod tests;
