//! worker: takes episode transitions from the store's durable queue and runs the decision
//! stage on them, and re-evaluates firing episodes on their rule's schedule.
//!
//! Per episode, transitions are handled strictly in order, one at a time. A decision is
//! recorded together with marking its transition done, so a crash in between (probes are
//! side-effect free) only means the decision is made again after the restart.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::clock::{Millis, SharedClock, duration_millis};
use crate::episodes::decide;
use crate::episodes::reconcile::{EpisodeStatus, TransitionKind};
use crate::probes::Prober;
use crate::rules::{AlertInput, Decision, RuleSet};
use crate::store::{DecisionKind, DecisionRecord, Engine, EpisodeRow, Recorded, Store};
use crate::telemetry::Metrics;

/// The rule set in use; swapped whole on reload.
pub type SharedRules = Arc<RwLock<Arc<RuleSet>>>;

pub fn current(rules: &SharedRules) -> Arc<RuleSet> {
    rules
        .read()
        .map_or_else(|p| p.into_inner().clone(), |r| r.clone())
}

/// How long the loop rests when there is nothing to do.
const IDLE: Duration = Duration::from_millis(250);
/// Act stages allowed at once, per decision slot.
const ACT_SLOTS_PER_SLOT: usize = 4;

/// A recorded decision the act stage still has to carry out.
struct Act {
    episode_id: String,
    firing: bool,
    rules: Arc<RuleSet>,
    input: AlertInput,
    decision: Decision,
}

/// Which episodes may not be dispatched now: those with a decision in flight, and those whose
/// decision finished while the work queue was being read. That read may predate the
/// decision's commit, so its transition can still look pending; deciding it again would be
/// wasted (and, with probes, ask the world twice). A transition is dispatched once.
#[derive(Debug, Default)]
struct InFlight {
    busy: HashSet<String>,
    /// Episode → the dispatch round current when its decision finished.
    finished: HashMap<String, u64>,
    round: u64,
}

impl InFlight {
    /// Start a dispatch round, before the work queue is read. Decisions that finished before
    /// this point are committed, so the coming read shows them: forget them.
    fn begin_round(&mut self) {
        self.round += 1;
        let round = self.round;
        self.finished.retain(|_, finished_in| *finished_in >= round);
    }

    /// Whether `episode` may be dispatched in this round.
    fn blocked(&self, episode: &str) -> bool {
        self.busy.contains(episode) || self.finished.contains_key(episode)
    }

    /// `episode`'s decision (and act stage) is done: committed before this call.
    fn finish(&mut self, episode: &str) {
        self.busy.remove(episode);
        self.finished.insert(episode.to_owned(), self.round);
    }
}

type SharedInFlight = Arc<Mutex<InFlight>>;

fn lock(in_flight: &SharedInFlight) -> std::sync::MutexGuard<'_, InFlight> {
    in_flight.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Worker {
    pub store: Store,
    pub rules: SharedRules,
    pub prober: Arc<Prober>,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    pub concurrency: usize,
    /// The act stage; `None` records decisions only.
    pub mitigator: Option<Arc<crate::act::mitigate::Mitigator>>,
    /// How pages are keyed.
    pub dedup: crate::page::policy::DedupMode,
    /// How long an `after_verify` incident waits for its actions to be planned.
    pub settle_within: Duration,
    /// When waiting incidents were last judged.
    pub last_page_check: Mutex<Millis>,
    /// When this process started: an incident decided before it whose act stage never ran
    /// (a crash came in between) is judged at once instead of after `settle_within`.
    pub started_at: Millis,
    /// Writes a bundle for every incident that opens; `None` when bundles are off.
    pub bundler: Option<Arc<crate::bundle::bundler::Bundler>>,
    /// Namespaces Kubernetes collectors may read (`kubernetes.namespaces`).
    pub namespaces: Vec<String>,
}

impl Worker {
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.concurrency.max(1)));
        // The act stage runs after its decision's slot is freed, under its own, wider cap: a
        // restart waiting for its evidence (up to `before_action_wait`) or verify must not
        // stall the decisions of every other incident in a storm.
        let act_slots = Arc::new(Semaphore::new(self.concurrency.max(1) * ACT_SLOTS_PER_SLOT));
        // Episodes with a decision in flight (never two at once for one episode), or one
        // that finished while the work queue was read.
        let busy: SharedInFlight = Arc::default();
        loop {
            let dispatched = match self.dispatch(&slots, &act_slots, &busy, &shutdown).await {
                Ok(count) => count,
                Err(error) => {
                    tracing::error!(%error, "cannot read the work queue");
                    0
                }
            };
            if dispatched == 0 && slots.available_permits() == 0 {
                // Every slot is busy: go again as soon as one frees, not after a rest (a
                // storm would otherwise start at most `concurrency` decisions per rest).
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = slots.acquire() => {}
                    _ = tokio::time::sleep(IDLE) => {}
                }
            } else if dispatched == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = self.store.work_queued() => {}
                    _ = tokio::time::sleep(IDLE) => {}
                }
            } else if shutdown.is_cancelled() {
                break;
            }
        }
        // Let decisions in flight finish (each is short: probes have timeouts).
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            let _decisions = slots.acquire_many(self.concurrency.max(1) as u32).await;
            let _acts = act_slots
                .acquire_many((self.concurrency.max(1) * ACT_SLOTS_PER_SLOT) as u32)
                .await;
        })
        .await;
    }

    /// Start work for pending transitions and due re-evaluations; returns how many started.
    async fn dispatch(
        self: &Arc<Self>,
        slots: &Arc<Semaphore>,
        act_slots: &Arc<Semaphore>,
        busy: &SharedInFlight,
        shutdown: &CancellationToken,
    ) -> Result<usize, String> {
        let now = self.clock.now_millis();
        lock(busy).begin_round();
        let crate::store::PendingWork {
            transitions: pending,
            due,
            reverts,
        } = self
            .store
            .pending_work(now)
            .await
            .map_err(|e| e.to_string())?;
        let mut started = 0;
        let mut closing = Vec::new();
        let mut closing_episodes = Vec::new();
        let mut seen_in_batch = HashSet::new();
        for transition in pending {
            // Only the oldest pending transition of an episode, and only when none is in
            // flight for it.
            if !seen_in_batch.insert(transition.episode_id.clone()) {
                continue;
            }
            if lock(busy).blocked(&transition.episode_id) {
                continue;
            }
            match transition.kind {
                TransitionKind::Opened | TransitionKind::Reopened | TransitionKind::Unsilenced => {
                    if shutdown.is_cancelled() {
                        break;
                    }
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        break;
                    };
                    lock(busy).busy.insert(transition.episode_id.clone());
                    let worker = self.clone();
                    let busy = busy.clone();
                    let act_slots = act_slots.clone();
                    tokio::spawn(async move {
                        let act = worker
                            .decide_episode(
                                &transition.episode_id,
                                Some(transition.seq),
                                DecisionKind::Initial,
                            )
                            .await;
                        drop(permit);
                        worker.act_stage(act, &act_slots).await;
                        lock(&busy).finish(&transition.episode_id);
                    });
                    started += 1;
                }
                // Resolved, gone and silenced need no decision here; later stages (reverts,
                // page resolves, final bundles) hang their work on the same transitions.
                kind => {
                    if matches!(kind, TransitionKind::Resolved | TransitionKind::Gone) {
                        closing_episodes.push(transition.episode_id.clone());
                    }
                    closing.push(transition.seq);
                }
            }
        }
        if !closing.is_empty() {
            started += closing.len();
            // A closed incident pages no more; the last of a page resolves it. Idempotent, so
            // a crash before the transitions are marked done only does it again.
            if !closing_episodes.is_empty()
                && let Err(error) = self
                    .store
                    .paging(crate::store::PagingOp::Close(closing_episodes.clone()))
                    .await
            {
                tracing::error!(%error, "cannot resolve pages; the transitions stay pending");
                return Ok(started);
            }
            // A resolved or gone episode holds nothing any more.
            if let Some(mitigator) = &self.mitigator {
                for episode_id in &closing_episodes {
                    if let Err(error) = self
                        .store
                        .release_holds(episode_id, duration_millis(mitigator.min_hold))
                        .await
                    {
                        tracing::error!(%error, "cannot release holds");
                    }
                }
            }
            if let Err(error) = self.store.complete_transitions(closing).await {
                tracing::error!(%error, "cannot mark transitions done");
            }
        }
        if let Some(mitigator) = &self.mitigator {
            mitigator.revert(reverts).await;
            mitigator.verify_due().await;
        }
        self.judge_waiting_pages(now).await;
        for episode_id in due {
            if shutdown.is_cancelled() || seen_in_batch.contains(&episode_id) {
                break;
            }
            if lock(busy).blocked(&episode_id) {
                continue;
            }
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                break;
            };
            lock(busy).busy.insert(episode_id.clone());
            let worker = self.clone();
            let busy = busy.clone();
            let act_slots = act_slots.clone();
            tokio::spawn(async move {
                let act = worker
                    .decide_episode(&episode_id, None, DecisionKind::Reevaluation)
                    .await;
                drop(permit);
                worker.act_stage(act, &act_slots).await;
                lock(&busy).finish(&episode_id);
            });
            started += 1;
        }
        Ok(started)
    }

    /// Page the `after_verify` incidents whose mitigation could not or did not help; at
    /// most once a second.
    ///
    /// The first judgement of this process (`last_page_check` still at its start, 0) also
    /// tells the store when the process started: `now` was read before this round started
    /// any decision, so an incident waiting from before it was decided by a process that is
    /// gone, and an act stage that planned nothing then never comes (it is not run again).
    async fn judge_waiting_pages(&self, now: Millis) {
        {
            let mut last = self
                .last_page_check
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if now - *last < 1000 {
                return;
            }
            *last = now;
        }
        let op = crate::store::PagingOp::Evaluate {
            settle: crate::page::policy::Settle {
                within: duration_millis(self.settle_within),
                started_at: Some(self.started_at),
            },
        };
        match self.store.paging(op).await {
            Ok(done) if done.count > 0 => {
                tracing::info!(paged = done.count, "incidents paged after their mitigation")
            }
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "cannot judge incidents waiting to page"),
        }
    }

    /// The incident's collectors rendered as a bundle plan (JSON); a Kubernetes collector
    /// outside `kubernetes.namespaces` is refused like an action would be.
    fn bundle_plan(
        &self,
        rules: &RuleSet,
        decision: &Decision,
        input: &AlertInput,
        now: Millis,
    ) -> String {
        use crate::bundle::request::RequestKind;
        let mut plan = crate::bundle::bundler::BundlePlan::default();
        for rendered in rules.collector_requests(decision, input, now) {
            match rendered {
                // Two rules joined by `continue` may name the same collector: the bundle has
                // one directory per name.
                Ok(request) if plan.requests.iter().any(|r| r.name == request.name) => {
                    plan.errors.push((
                        request.name.clone(),
                        format!(
                            "collector name also used by an earlier rule; rule {}'s is skipped",
                            request.rule
                        ),
                    ));
                }
                Ok(request) => {
                    let namespace = match &request.kind {
                        RequestKind::KubernetesLogs { namespace, .. }
                        | RequestKind::KubernetesEvents { namespace, .. }
                        | RequestKind::KubernetesObject { namespace, .. } => Some(namespace),
                        _ => None,
                    };
                    match namespace {
                        Some(namespace) if !self.namespaces.contains(namespace) => {
                            plan.errors.push((
                                request.name.clone(),
                                format!("namespace {namespace:?} is not in kubernetes.namespaces"),
                            ));
                        }
                        _ => plan.requests.push(request),
                    }
                }
                Err(error) => plan.errors.push(error),
            }
        }
        serde_json::to_string(&plan).unwrap_or_else(|_| "{}".to_owned())
    }

    /// Classify, probe and decide one episode, and record the decision; returns what the act
    /// stage has to do about it, if anything.
    async fn decide_episode(
        &self,
        episode_id: &str,
        transition_seq: Option<i64>,
        kind: DecisionKind,
    ) -> Option<Act> {
        use tracing::Instrument;
        // Instrumented, not entered: an entered span held across an await leaks into
        // whichever task runs next on the thread.
        let span = tracing::info_span!("episode", episode = episode_id, kind = kind.as_str());
        self.decide_episode_in_span(episode_id, transition_seq, kind)
            .instrument(span)
            .await
    }

    async fn decide_episode_in_span(
        &self,
        episode_id: &str,
        transition_seq: Option<i64>,
        kind: DecisionKind,
    ) -> Option<Act> {
        let started = Instant::now();
        let row = match self.store.episode(episode_id).await {
            Ok(Some(row)) => row,
            Ok(None) => {
                tracing::error!("episode vanished from the store; transition left pending");
                return None;
            }
            Err(error) => {
                tracing::error!(%error, "cannot read the episode");
                return None;
            }
        };
        let rules = current(&self.rules);
        let now = self.clock.now_millis();
        let input = alert_input(&row, now);
        let decision = decide::decide(&rules, &input, &self.prober, &Default::default()).await;
        self.observe(&decision, started);
        let rule_name = decision
            .classification
            .matched
            .first()
            .map_or_else(|| "default".to_owned(), |m| m.rule.clone());
        let next = next_evaluation(&rules, &decision, now);
        let record = DecisionRecord {
            episode_id: episode_id.to_owned(),
            transition_seq,
            kind,
            rule: rule_name.clone(),
            severity: decision.severity.as_str().to_owned(),
            branch: decision.branch.clone(),
            trace: serde_json::to_string(&decision).unwrap_or_else(|_| "{}".to_owned()),
            at: now,
            next_evaluation_at: next,
            bundle_plan: (kind == DecisionKind::Initial && self.bundler.is_some())
                .then(|| self.bundle_plan(&rules, &decision, &input, now)),
            page: Some(crate::store::PageRequest {
                dedup_key: crate::page::policy::dedup_key(self.dedup, &row.group_key, &row.id),
                group_key: row.group_key.clone(),
                rule: rule_name.clone(),
                severity: decision.severity.as_str().to_owned(),
                policy: decision.page.policy.clone(),
                channels: rules.severities.get(decision.severity.level()).notify,
            }),
        };
        let plan = record.bundle_plan.clone();
        match self.store.record_decision(record).await {
            Ok(Recorded::Recorded { changed }) => {
                self.count_recorded(&decision);
                // Evidence collection starts before any action, which may wait for it.
                if let (Some(bundler), Some(plan)) = (&self.bundler, &plan) {
                    bundler.start(episode_id, plan);
                }
                if changed {
                    self.metrics.decision_branch_changes_total.inc();
                }
                tracing::info!(
                    rule = %rule_name,
                    severity = decision.severity.as_str(),
                    branch = %decision.branch,
                    changed,
                    actions = decision.actions.len(),
                    "decision recorded"
                );
                // Act on the first decision, and on a re-evaluation that changed branch.
                (kind == DecisionKind::Initial || changed).then(|| Act {
                    episode_id: episode_id.to_owned(),
                    // A silenced episode takes no new action (it is not re-evaluated either).
                    firing: row.status == EpisodeStatus::Firing,
                    rules,
                    input,
                    decision,
                })
            }
            Ok(Recorded::AlreadyDone) => {
                tracing::debug!("transition already handled");
                None
            }
            Err(error) => {
                tracing::error!(%error, "cannot record the decision; it will be made again");
                None
            }
        }
    }

    /// Run the decision's actions, then judge its incident's page: an `after_verify`
    /// incident whose mitigation could not run pages now. The episode stays busy meanwhile,
    /// so its next transition waits for this.
    async fn act_stage(&self, act: Option<Act>, act_slots: &Semaphore) {
        use tracing::Instrument;
        let Some(act) = act else { return };
        let Ok(_permit) = act_slots.acquire().await else {
            return;
        };
        let span = tracing::info_span!("episode", episode = %act.episode_id, stage = "act");
        async {
            if act.firing
                && let Some(mitigator) = &self.mitigator
            {
                mitigator
                    .act(
                        &act.rules,
                        &act.input,
                        &act.decision.probes,
                        &act.decision.actions,
                        act.decision.severity,
                    )
                    .await;
            }
            if let Err(error) = self
                .store
                .paging(crate::store::PagingOp::Acted(act.episode_id.clone()))
                .await
            {
                tracing::error!(%error, "cannot judge the incident's page; it pages once settle_within passes");
            }
        }
        .instrument(span)
        .await
    }

    /// Count a decision that was recorded (one that found its transition already handled
    /// is not a decision of this incident).
    fn count_recorded(&self, decision: &Decision) {
        let rule = decision
            .classification
            .matched
            .first()
            .map_or("default", |m| m.rule.as_str());
        let branch_kind = decision
            .rules
            .first()
            .map_or("default", |r| r.branch_kind.as_str());
        self.metrics
            .decisions_total
            .with_label_values(&[rule, decision.severity.as_str(), branch_kind])
            .inc();
    }

    fn observe(&self, decision: &Decision, started: Instant) {
        self.metrics
            .decision_duration_seconds
            .observe(started.elapsed().as_secs_f64());
        for (name, result) in &decision.probes {
            if !result.ok {
                tracing::warn!(probe = %name, error = %result.error, cached = result.cached, "probe failed");
            }
            let outcome = match (result.ok, result.cached) {
                (false, _) => "failed",
                (true, true) => "cached",
                (true, false) => "ok",
            };
            self.metrics
                .probe_results_total
                .with_label_values(&[outcome])
                .inc();
        }
    }
}

/// The next re-evaluation: the first matched rule's interval; never for the default rule or
/// an interval of zero.
fn next_evaluation(rules: &RuleSet, decision: &Decision, now: Millis) -> Option<Millis> {
    let first = decision.classification.matched.first()?;
    let interval = rules.rules.get(first.index)?.reevaluate_every;
    (!interval.is_zero()).then(|| now + duration_millis(interval))
}

pub fn alert_input(row: &EpisodeRow, now: Millis) -> AlertInput {
    let starts = chrono::DateTime::parse_from_rfc3339(&row.starts_at)
        .map(|t| t.timestamp_millis())
        .unwrap_or(now);
    AlertInput {
        labels: row.labels.clone(),
        annotations: row.annotations.clone(),
        status: row.status.as_str().to_owned(),
        fingerprint: row.fingerprint.clone(),
        starts_at: row.starts_at.clone(),
        generator_url: row.generator_url.clone(),
        age_seconds: ((now - starts) / 1000).max(0),
        incident_id: row.id.clone(),
    }
}
