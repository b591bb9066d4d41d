//! The store engine's interface: the named operations the stages ask of the store, each
//! async. Today one engine implements it, SQLite (`Store`): one writer thread applies every
//! write in the order it arrives, and reads run on a pool of read-only connections. A second
//! engine (PostgreSQL, several instances at once) implements the same operations.
//!
//! Each write below says what it relies on from the SQLite engine's single writer, because a
//! second engine must provide that explicitly (a transaction isolation level, a row lock, a
//! unique constraint, a claim). Reads rely on nothing but a consistent snapshot per call.
//!
//! Callers name the trait (`use crate::store::Engine`) to call these; nothing outside
//! `store/` sees a connection, a statement or SQL.

use std::future::Future;

use serde_json::Value;

use super::{
    ActionPlan, ApiAlert, BundleOp, BundleRow, BundleWork, DecisionRecord, DueRevert, Durability,
    EpisodeRow, HoldRequest, IncidentDetail, IncidentSummary, OutboxRow, PageFacts, PagingDone,
    PagingOp, PendingTransition, PlannedAction, Recorded, StartedAction, StoreError, SyncSummary,
    Verified,
};
use super::{
    ActionState, ActionWithEpisode, Command, EpisodeRouting, HoldFinish, OutboxBacklog,
    PagedIncidents, Pause, SentEvent, Store, StoredNotification, UnpagedIncident,
};
use crate::clock::Millis;
use crate::episodes::reconcile::EpisodeStatus;

/// What the worker has to start now: undecided transitions (oldest first), episodes due for
/// re-evaluation, and holds due for revert.
#[derive(Debug, Default)]
pub struct PendingWork {
    pub transitions: Vec<PendingTransition>,
    pub due: Vec<String>,
    pub reverts: Vec<DueRevert>,
}

/// The store's operations. Every error is a typed [`StoreError`]: a write that failed says
/// whether the store is full, read-only, busy, corrupt or stopped.
pub trait Engine: Clone + Send + Sync + 'static {
    // ---- writes -------------------------------------------------------------------------

    /// Check open episodes against Alertmanager's API view, opening `silenced`, `unsilenced`
    /// and `gone` transitions. Relies on: no reconcile of a webhook running at the same time
    /// (the single writer serialises them), so an episode's status is read and changed in one
    /// step.
    fn sync_with_alertmanager(
        &self,
        alerts: Vec<ApiAlert>,
    ) -> impl Future<Output = Result<SyncSummary, StoreError>> + Send;

    /// Put an action through the governor and record it, once per idempotency key. Relies on:
    /// read-then-insert of the key being atomic (no second plan for the same key), and the
    /// governor's facts (pause, in flight on the target, cooldown, the hourly budget) read and
    /// spent in the same step, so two incidents asking for one target, or for the last unit of
    /// the budget, see each other.
    fn plan_action(
        &self,
        plan: ActionPlan,
    ) -> impl Future<Output = Result<PlannedAction, StoreError>> + Send;

    /// Mark an action `started` (durably, before it runs; false unless it was `planned` or
    /// `not_applied`), or give its final state and result, queueing its change event and, for
    /// an uncertain one, its page. Relies on: the state check and change being one step, so
    /// an action starts at most once.
    fn update_action(
        &self,
        id: i64,
        state: ActionState,
        result: Option<String>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Judge the actions whose verify window has passed: did their incident stop firing?
    /// Relies on: each action judged once (read and marked in one step).
    fn verify_actions(
        &self,
        now: Millis,
    ) -> impl Future<Output = Result<Vec<Verified>, StoreError>> + Send;

    /// Record what an action changed that its incident holds. Relies on: one hold per
    /// (target, item) while it is held, joined rather than duplicated.
    fn add_holds(
        &self,
        request: HoldRequest,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// An episode closed: it stops holding; holds with no holder left start releasing after
    /// the minimum hold. Relies on: the holder count read and the release marked in one step.
    fn release_holds(
        &self,
        episode_id: &str,
        min_hold: Millis,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// `reverted` or `left` with a result, or `defer` to try again in a minute.
    fn finish_hold(
        &self,
        id: i64,
        finish: HoldFinish,
        result: Option<String>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Pause automatic actions until a time, with a reason; `None` resumes. Relies on: plans
    /// after this answer see the pause (plans read it in their own step).
    fn set_pause(
        &self,
        pause: Option<Pause>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Record a decision, mark its transition done, plan its page and its bundle, in one
    /// transaction; `AlreadyDone` when the transition was handled already. Relies on: the
    /// transition's pending check and its marking being one step (a transition is recorded
    /// once, whoever decided it).
    fn record_decision(
        &self,
        record: DecisionRecord,
    ) -> impl Future<Output = Result<Recorded, StoreError>> + Send;

    /// One bundle step; `Written` says whether the incident's page was queued again with the
    /// bundle's link.
    fn bundle(&self, op: BundleOp) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// One paging step. Relies on: a page's state read and advanced in one step (one page per
    /// incident, one trigger per page), and `Sending` claiming outbox rows so only one sender
    /// has them.
    fn paging(&self, op: PagingOp) -> impl Future<Output = Result<PagingDone, StoreError>> + Send;

    /// Mark transitions handled by the later stages; returns how many were still pending.
    fn complete_transitions(
        &self,
        seqs: Vec<i64>,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// The durability settings the last ingest commit ran with.
    fn durability(&self) -> impl Future<Output = Result<Durability, StoreError>> + Send;

    // ---- reads --------------------------------------------------------------------------

    /// Undecided transitions (up to 512), episodes due for re-evaluation (up to 256) and
    /// holds due for revert, as of `now`.
    fn pending_work(
        &self,
        now: Millis,
    ) -> impl Future<Output = Result<PendingWork, StoreError>> + Send;

    /// One episode as the decide stage reads it.
    fn episode(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<EpisodeRow>, StoreError>> + Send;

    /// Actions left `started` (by a crash), for recovery.
    fn started_actions(
        &self,
    ) -> impl Future<Output = Result<Vec<StartedAction>, StoreError>> + Send;

    /// Actions of an episode, oldest first, as the API shows them.
    fn actions(
        &self,
        episode_id: &str,
    ) -> impl Future<Output = Result<Vec<Value>, StoreError>> + Send;

    /// The decision trace of an episode's latest decision.
    fn latest_trace(
        &self,
        episode_id: &str,
    ) -> impl Future<Output = Result<Option<Value>, StoreError>> + Send;

    /// Incidents, newest first.
    fn incidents(
        &self,
        status: Option<EpisodeStatus>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<IncidentSummary>, StoreError>> + Send;

    /// One incident with its transitions, decisions and actions.
    fn incident(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<IncidentDetail>, StoreError>> + Send;

    /// P1 incidents nothing was configured to page about: (incident, why).
    fn unpaged_p1_incidents(
        &self,
    ) -> impl Future<Output = Result<Vec<UnpagedIncident>, StoreError>> + Send;

    /// Outbox rows due to be sent, most urgent first.
    fn due_outbox(
        &self,
        now: Millis,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<OutboxRow>, StoreError>> + Send;

    /// Pending outbox rows per channel, and the oldest one's age.
    fn outbox_backlog(
        &self,
        now: Millis,
    ) -> impl Future<Output = Result<OutboxBacklog, StoreError>> + Send;

    /// Events sent since a time (the rate limiter's memory across a restart).
    fn outbox_sent_since(
        &self,
        since: Millis,
    ) -> impl Future<Output = Result<Vec<SentEvent>, StoreError>> + Send;

    /// A page by its dedup key.
    fn page(
        &self,
        dedup_key: &str,
    ) -> impl Future<Output = Result<Option<PageFacts>, StoreError>> + Send;

    /// The incidents a page covers (up to `limit`), and how many more there are.
    fn paged_incidents(
        &self,
        dedup_key: &str,
        limit: usize,
    ) -> impl Future<Output = Result<PagedIncidents, StoreError>> + Send;

    /// An episode's rule and severity.
    fn episode_facts(
        &self,
        episode_id: &str,
    ) -> impl Future<Output = Result<EpisodeRouting, StoreError>> + Send;

    /// An action by id, with its episode.
    fn action(
        &self,
        id: i64,
    ) -> impl Future<Output = Result<Option<ActionWithEpisode>, StoreError>> + Send;

    /// Bundles owed (initial, refresh, final), up to `limit`.
    fn bundle_work(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<BundleWork>, StoreError>> + Send;

    /// An incident's bundle row.
    fn bundle_row(
        &self,
        episode_id: &str,
    ) -> impl Future<Output = Result<Option<BundleRow>, StoreError>> + Send;

    /// Every bundle on disk, for retention.
    fn bundles_on_disk(&self) -> impl Future<Output = Result<Vec<BundleRow>, StoreError>> + Send;

    /// A journaled notification (the one an incident came in).
    fn notification(
        &self,
        id: i64,
    ) -> impl Future<Output = Result<Option<StoredNotification>, StoreError>> + Send;
}

impl Engine for Store {
    async fn sync_with_alertmanager(
        &self,
        alerts: Vec<ApiAlert>,
    ) -> Result<SyncSummary, StoreError> {
        self.ask(|reply| Command::ApiSync(alerts, reply)).await
    }

    async fn plan_action(&self, plan: ActionPlan) -> Result<PlannedAction, StoreError> {
        self.ask(|reply| Command::PlanAction(Box::new(plan), reply))
            .await
    }

    async fn update_action(
        &self,
        id: i64,
        state: ActionState,
        result: Option<String>,
    ) -> Result<bool, StoreError> {
        self.ask(|reply| Command::UpdateAction(id, state, result, reply))
            .await
    }

    async fn verify_actions(&self, now: Millis) -> Result<Vec<Verified>, StoreError> {
        self.ask(|reply| Command::Verify(now, reply)).await
    }

    async fn add_holds(&self, request: HoldRequest) -> Result<(), StoreError> {
        self.ask(|reply| Command::AddHolds(Box::new(request), reply))
            .await
    }

    async fn release_holds(&self, episode_id: &str, min_hold: Millis) -> Result<usize, StoreError> {
        let episode_id = episode_id.to_owned();
        self.ask(|reply| Command::ReleaseHolds(episode_id, min_hold, reply))
            .await
    }

    async fn finish_hold(
        &self,
        id: i64,
        finish: HoldFinish,
        result: Option<String>,
    ) -> Result<(), StoreError> {
        self.ask(|reply| Command::FinishHold(id, finish, result, reply))
            .await
    }

    async fn set_pause(&self, pause: Option<Pause>) -> Result<(), StoreError> {
        self.ask(|reply| Command::SetPause(pause, reply)).await
    }

    async fn record_decision(&self, record: DecisionRecord) -> Result<Recorded, StoreError> {
        self.ask(|reply| Command::RecordDecision(Box::new(record), reply))
            .await
    }

    async fn bundle(&self, op: BundleOp) -> Result<bool, StoreError> {
        self.ask(|reply| Command::Bundle(op, reply)).await
    }

    async fn paging(&self, op: PagingOp) -> Result<PagingDone, StoreError> {
        self.ask(|reply| Command::Paging(op, reply)).await
    }

    async fn complete_transitions(&self, seqs: Vec<i64>) -> Result<usize, StoreError> {
        self.ask(|reply| Command::CompleteTransitions(seqs, reply))
            .await
    }

    async fn durability(&self) -> Result<Durability, StoreError> {
        self.ask(Command::Inspect).await
    }

    async fn pending_work(&self, now: Millis) -> Result<PendingWork, StoreError> {
        self.read(move |r| {
            Ok(PendingWork {
                transitions: r.pending_transitions(512)?,
                due: r.due_for_evaluation(now, 256)?,
                reverts: r.due_reverts(now)?,
            })
        })
        .await
    }

    async fn episode(&self, id: &str) -> Result<Option<EpisodeRow>, StoreError> {
        let id = id.to_owned();
        self.read(move |r| r.episode(&id)).await
    }

    async fn started_actions(&self) -> Result<Vec<StartedAction>, StoreError> {
        self.read(|r| r.started_actions()).await
    }

    async fn actions(&self, episode_id: &str) -> Result<Vec<Value>, StoreError> {
        let id = episode_id.to_owned();
        self.read(move |r| r.actions(&id)).await
    }

    async fn latest_trace(&self, episode_id: &str) -> Result<Option<Value>, StoreError> {
        let id = episode_id.to_owned();
        self.read(move |r| r.latest_trace(&id)).await
    }

    async fn incidents(
        &self,
        status: Option<EpisodeStatus>,
        limit: usize,
    ) -> Result<Vec<IncidentSummary>, StoreError> {
        self.read(move |r| r.incidents(status, limit)).await
    }

    async fn incident(&self, id: &str) -> Result<Option<IncidentDetail>, StoreError> {
        let id = id.to_owned();
        self.read(move |r| r.incident(&id)).await
    }

    async fn unpaged_p1_incidents(&self) -> Result<Vec<UnpagedIncident>, StoreError> {
        self.read(|r| r.unpaged_p1_incidents()).await
    }

    async fn due_outbox(&self, now: Millis, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        self.read(move |r| r.due_outbox(now, limit)).await
    }

    async fn outbox_backlog(&self, now: Millis) -> Result<OutboxBacklog, StoreError> {
        self.read(move |r| r.outbox_backlog(now)).await
    }

    async fn outbox_sent_since(&self, since: Millis) -> Result<Vec<SentEvent>, StoreError> {
        self.read(move |r| r.outbox_sent_since(since)).await
    }

    async fn page(&self, dedup_key: &str) -> Result<Option<PageFacts>, StoreError> {
        let key = dedup_key.to_owned();
        self.read(move |r| r.page(&key)).await
    }

    async fn paged_incidents(
        &self,
        dedup_key: &str,
        limit: usize,
    ) -> Result<PagedIncidents, StoreError> {
        let key = dedup_key.to_owned();
        self.read(move |r| r.paged_incidents(&key, limit)).await
    }

    async fn episode_facts(&self, episode_id: &str) -> Result<EpisodeRouting, StoreError> {
        let id = episode_id.to_owned();
        self.read(move |r| r.episode_facts(&id)).await
    }

    async fn action(&self, id: i64) -> Result<Option<ActionWithEpisode>, StoreError> {
        self.read(move |r| r.action(id)).await
    }

    async fn bundle_work(&self, limit: usize) -> Result<Vec<BundleWork>, StoreError> {
        self.read(move |r| r.bundle_work(limit)).await
    }

    async fn bundle_row(&self, episode_id: &str) -> Result<Option<BundleRow>, StoreError> {
        let id = episode_id.to_owned();
        self.read(move |r| r.bundle(&id)).await
    }

    async fn bundles_on_disk(&self) -> Result<Vec<BundleRow>, StoreError> {
        self.read(|r| r.bundles_on_disk()).await
    }

    async fn notification(&self, id: i64) -> Result<Option<StoredNotification>, StoreError> {
        self.read(move |r| r.notification(id)).await
    }
}
