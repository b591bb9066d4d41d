//! The bundler: for every incident that opens, run its collectors and write its bundle; when
//! it closes, write it again with the final timeline and the `on_resolve` collectors. The work
//! is owed durably (a `bundles` row written with the decision that opens the incident), so a
//! crash only delays it. Disruptive actions wait for the incident's `before_action` evidence
//! ([`Bundler::evidence_ready`]), up to a bound.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::background::Background;
use super::collectors::Collectors;
use super::facts::{
    BundleFacts, CollectorFacts, DecisionFacts, IncidentFacts, PageEventFacts, TransitionFacts,
};
use super::request::{CollectorOutput, CollectorRequest, CollectorStatus, RequestKind};
use super::{archive, docs};
use crate::clock::{Millis, SharedClock, millis_to_datetime};
use crate::config::{BundlesConfig, SeveritiesConfig};
use crate::redact::{Patterns, Redactor, scrub_evidence, scrub_evidence_text};
use crate::store::{
    BundleOp, BundleRow, BundleWork, BundleWritten, Engine, IncidentDetail, Reader, Store,
    StoreError, StoredNotification,
};
use crate::telemetry::Metrics;

/// What a bundle is to collect, rendered when the incident opened.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BundlePlan {
    pub requests: Vec<CollectorRequest>,
    /// Collectors that could not be rendered: (name, why).
    pub errors: Vec<(String, String)>,
}

/// Where bundles live under the state directory.
pub const BUNDLES_DIR: &str = "bundles";

pub struct Bundler {
    pub store: Store,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    pub collectors: Collectors,
    pub state_dir: PathBuf,
    pub settings: BundlesConfig,
    pub patterns: Patterns,
    /// The one redactor: every secret an action read is scrubbed from bundles too.
    pub redactor: Arc<Mutex<Redactor>>,
    pub severities: SeveritiesConfig,
    pub external_url: Option<String>,
    /// Incidents whose bundle is being written (with their evidence gate), and those whose
    /// bundle was written while the queue was being read.
    jobs: Mutex<Jobs>,
    /// Disruptive actions that went ahead before the evidence was in: incident → notes.
    missed: Mutex<HashMap<String, Vec<String>>>,
    last_retention: Mutex<Option<Instant>>,
    /// A final bundle was written since the last retention pass.
    retention_wanted: AtomicBool,
    /// Bundles gathered and written at once: in a storm thousands are owed, and each reads the
    /// store, compresses and fsyncs.
    writing: tokio::sync::Semaphore,
    /// Where bundles are rendered and compressed, below the daemon's CPU priority.
    background: Background,
}

/// A bundle written: where, how big, and what its manifest says for the store.
struct Built {
    path: String,
    bytes: u64,
    collectors: String,
    highlights: Vec<String>,
    total_redactions: usize,
}

/// Bundles gathered and written at once.
const WRITERS: usize = 4;
/// Bundle jobs held in memory at once (collecting, or waiting for a writer). Each holds its
/// collected evidence; a backlog of 100,000 incidents opened at once, each spawned as it was
/// decided, took the daemon past 180 MB with 60,000 jobs waiting.
const MAX_JOBS: usize = 256;
/// Retention runs this often, and at most this soon after a final bundle made one deletable.
const RETENTION_EVERY: Duration = Duration::from_secs(600);
const RETENTION_SOON: Duration = Duration::from_secs(5);

impl Bundler {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        collectors: Collectors,
        state_dir: PathBuf,
        settings: BundlesConfig,
        redactor: Arc<Mutex<Redactor>>,
        severities: SeveritiesConfig,
        external_url: Option<String>,
    ) -> Result<Bundler, String> {
        let patterns = Patterns::new(&settings.redact)?;
        let root = state_dir.join(BUNDLES_DIR);
        if let Err(error) = archive::create_root(&root) {
            // Writing a bundle creates it again, and says so if it cannot.
            tracing::warn!(path = %root.display(), %error, "cannot create the bundles directory");
        }
        for removed in archive::remove_partials(&root) {
            tracing::warn!(path = %removed.display(), "removed a bundle left half-written by a crash");
        }
        Ok(Bundler {
            store,
            clock,
            metrics,
            collectors,
            state_dir,
            settings,
            patterns,
            redactor,
            severities,
            external_url,
            jobs: Mutex::default(),
            missed: Mutex::default(),
            last_retention: Mutex::default(),
            retention_wanted: AtomicBool::new(false),
            writing: tokio::sync::Semaphore::new(WRITERS),
            background: Background::start(WRITERS, "bundle"),
        })
    }

    /// The link to an incident's bundle: under `paging.external_url` when set, else its path.
    pub fn link(&self, episode_id: &str, path: &str) -> String {
        bundle_link(
            self.external_url.as_deref(),
            &self.state_dir,
            episode_id,
            path,
        )
    }

    /// Poll for owed bundles (after a restart, or closed incidents) and keep retention.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut rest = Duration::from_millis(500);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(rest) => {}
            }
            rest = Duration::from_millis(500);
            // Before the read: a bundle written from here on is seen as written by it.
            let round = self.jobs().begin_round();
            let running = self.jobs().running.len();
            let room = MAX_JOBS.saturating_sub(running);
            // The oldest owed, past those running (they are listed too).
            let limit = running + room;
            let read = async {
                if room == 0 {
                    // Full: nothing could start; look again soon.
                    return Ok(Vec::new());
                }
                self.store.bundle_work(limit).await
            };
            if room == 0 {
                rest = Duration::from_millis(200);
            }
            match read.await {
                Ok(work) => {
                    let mut started = 0;
                    for item in work {
                        if started >= room {
                            break;
                        }
                        started += usize::from(self.spawn(item, Some(round)));
                    }
                    // A backlog of owed bundles (more than MAX_JOBS opened at once): keep
                    // them coming as jobs end, not 64 per rest.
                    if started > 0 {
                        rest = Duration::from_millis(200);
                    }
                }
                Err(error) => tracing::error!(%error, "cannot read the bundle queue"),
            }
            let due = {
                let mut last = self
                    .last_retention
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let wanted = self.retention_wanted.load(Ordering::Relaxed);
                let due = last.is_none_or(|at| {
                    at.elapsed() >= RETENTION_EVERY || (wanted && at.elapsed() >= RETENTION_SOON)
                });
                if due {
                    self.retention_wanted.store(false, Ordering::Relaxed);
                    *last = Some(Instant::now());
                }
                due
            };
            if due {
                self.retention().await;
            }
        }
    }

    /// Start the bundle of an incident that has just opened (the worker calls this right after
    /// recording the decision, before acting, so evidence collection starts first).
    ///
    /// At most [`MAX_JOBS`] jobs are held in memory: past that (a backlog of thousands of
    /// incidents opened at once), the bundle stays owed in the store and the poll starts it
    /// as others end, oldest first. Except one with `before_action` collectors: a disruptive
    /// action waits for that evidence, so its collection starts now.
    pub fn start(self: &Arc<Self>, episode_id: &str, plan: &str) {
        if self.jobs().running.len() >= MAX_JOBS {
            let evidence_first = serde_json::from_str::<BundlePlan>(plan)
                .is_ok_and(|plan| plan.requests.iter().any(|r| r.before_action));
            if !evidence_first {
                return;
            }
        }
        self.spawn(
            BundleWork {
                episode_id: episode_id.to_owned(),
                plan: plan.to_owned(),
                state: crate::store::BundleState::Pending,
                closed: false,
                path: None,
            },
            None,
        );
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start a bundle job: `polled` is the round of the queue read it comes from (`None`: from
    /// the decision just recorded, which is never stale).
    /// Returns whether a job was started.
    fn spawn(self: &Arc<Self>, work: BundleWork, polled: Option<u64>) -> bool {
        let (ready, gate) = watch::channel(false);
        if !self.jobs().begin(&work.episode_id, polled, gate) {
            return false;
        }
        let bundler = self.clone();
        tokio::spawn(async move {
            let episode_id = work.episode_id.clone();
            if let Err(error) = bundler.job(work, ready).await {
                tracing::error!(episode = %episode_id, %error, "cannot write the bundle; retried");
                bundler
                    .metrics
                    .bundles_written_total
                    .with_label_values(&["failed"])
                    .inc();
            }
            bundler.jobs().finish(&episode_id);
        });
        true
    }

    /// Wait, at most `bound`, for the incident's `before_action` collectors. Returns the
    /// collectors still running when the bound passed (empty: the evidence is in, or none was
    /// asked for). The action goes ahead either way; what was missed goes in the manifest.
    pub async fn evidence_ready(&self, episode_id: &str, action: &str, bound: Duration) -> bool {
        let gate = self.jobs().running.get(episode_id).cloned();
        let Some(mut gate) = gate else {
            return true;
        };
        let waited = tokio::time::timeout(bound, gate.wait_for(|ready| *ready)).await;
        let ready = matches!(waited, Ok(Ok(_)));
        if !ready {
            let note = format!(
                "{action} went ahead at {} before the before_action collectors finished (waited {})",
                crate::episodes::reconcile::canonical_time(millis_to_datetime(
                    self.clock.now_millis()
                )),
                crate::duration::Shown(bound)
            );
            tracing::warn!(episode = episode_id, %note, "evidence before disruption: bound reached");
            self.missed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(episode_id.to_owned())
                .or_default()
                .push(note);
        }
        ready
    }

    async fn job(
        self: &Arc<Self>,
        work: BundleWork,
        ready: watch::Sender<bool>,
    ) -> Result<(), String> {
        let plan: BundlePlan = serde_json::from_str(&work.plan).unwrap_or_default();
        let episode_id = work.episode_id.clone();
        let first = work.state == crate::store::BundleState::Pending;
        // Shared with other incidents' bundles until written (a storm shares its evidence).
        let mut files: Vec<(String, bytes::Bytes)> = Vec::new();
        let mut collected: Vec<CollectorFacts> = Vec::new();
        if first {
            // Evidence that disruption would destroy comes first; the rest at the same time.
            let (before, rest): (Vec<_>, Vec<_>) =
                plan.requests.iter().cloned().partition(|r| r.before_action);
            let before_run = async {
                let outputs = self.collectors.run_all(&before).await;
                let _ = ready.send(true);
                outputs
            };
            let (before, rest) = tokio::join!(before_run, self.collectors.run_all(&rest));
            for output in before.into_iter().chain(rest) {
                self.take(output, "open", &mut files, &mut collected);
            }
        } else {
            let _ = ready.send(true);
            // The incident closed: keep what was collected at open, add the on_resolve ones.
            let path = work.path.clone().unwrap_or_default();
            // Unpacking the archive is blocking: on a bundle thread.
            let archive_path = self.state_dir.join(&path);
            let previous = self
                .background
                .run(move || {
                    archive::read(&archive_path)
                        .map_err(|error| format!("cannot read {path}: {error}"))
                })
                .await??;
            let row = self
                .store
                .bundle_row(&episode_id)
                .await
                .map_err(|e| e.to_string())?;
            files.extend(
                previous
                    .into_iter()
                    .filter(|(name, _)| name.starts_with("collectors/"))
                    .map(|(name, bytes)| (name, bytes::Bytes::from(bytes))),
            );
            if let Some(row) = row {
                collected = serde_json::from_value(row.collectors).unwrap_or_default();
            }
            // Asked again now: a query's window ends (or its instant is) at the resolve.
            let now = self.clock.now_millis();
            let again: Vec<CollectorRequest> = plan
                .requests
                .iter()
                .filter(|r| r.on_resolve)
                .cloned()
                .map(|mut request| {
                    match &mut request.kind {
                        RequestKind::PrometheusRange {
                            start, end, step, ..
                        } => {
                            let step = crate::clock::duration_millis(*step).max(1);
                            *end = (now / step) * step;
                            // Within Prometheus' 11,000 points however long it lasted.
                            *start = (*start).max(*end - 10_000 * step);
                        }
                        RequestKind::PrometheusQuery { at, .. } => *at = now,
                        _ => {}
                    }
                    request
                })
                .collect();
            for output in self.collectors.run_all(&again).await {
                self.take(output, "resolve", &mut files, &mut collected);
            }
        }
        let last = work.closed;
        // Collection is bounded by the collectors' own cap; writing by this one.
        let _slot = self
            .writing
            .acquire()
            .await
            .map_err(|_| "the bundler is shutting down".to_owned())?;
        // Rendering, scrubbing and compressing are CPU work: on the nicer bundle threads.
        // The incident and the notification it came in, read before the blocking build.
        let detail = self
            .store
            .incident(&episode_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("incident {episode_id} is not in the store"))?;
        let notification = self
            .store
            .notification(detail.first_notification)
            .await
            .map_err(|e| e.to_string())?;
        let bundler = self.clone();
        let work_path = work.path.clone();
        let plan_errors = plan.errors.clone();
        let built = self
            .background
            .run(move || {
                bundler.build(
                    detail,
                    notification,
                    work_path,
                    collected,
                    files,
                    &plan_errors,
                    last,
                )
            })
            .await??;
        let Built {
            path,
            bytes,
            collectors,
            highlights,
            total_redactions,
        } = built;
        let refreshed = self
            .store
            .bundle(BundleOp::Written(BundleWritten {
                episode_id: episode_id.clone(),
                path: path.clone(),
                bytes: bytes as i64,
                collectors,
                highlights: serde_json::to_string(&highlights).unwrap_or_else(|_| "[]".to_owned()),
                last,
            }))
            .await
            .map_err(|e| e.to_string())?;
        self.metrics
            .bundles_written_total
            .with_label_values(&[if last { "final" } else { "initial" }])
            .inc();
        self.metrics
            .bundle_redactions_total
            .inc_by(total_redactions as u64);
        if last {
            self.missed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&episode_id);
        }
        // A final bundle just became deletable, and any bundle may have taken the total over
        // the cap: retention runs soon (not once per bundle: it reads every bundle's row, and
        // a storm writes and resolves thousands at once).
        self.retention_wanted.store(true, Ordering::Relaxed);
        tracing::info!(episode = %episode_id, %path, bytes, last, page_updated = refreshed, "bundle written");
        Ok(())
    }

    /// Gather the facts, render the documents, scrub everything and write the archive; runs on
    /// a bundle thread.
    #[allow(clippy::too_many_arguments)]
    fn build(
        &self,
        detail: IncidentDetail,
        notification: Option<StoredNotification>,
        work_path: Option<String>,
        collected: Vec<CollectorFacts>,
        files: Vec<(String, bytes::Bytes)>,
        plan_errors: &[(String, String)],
        last: bool,
    ) -> Result<Built, String> {
        let episode_id = detail.summary.id.clone();
        let path = match &work_path {
            Some(path) => path.clone(),
            None => bundle_path(
                &episode_id,
                &detail.summary.starts_at,
                self.clock.now_millis(),
            ),
        };
        let facts = incident_facts(
            &detail,
            &self.severities,
            self.external_url.as_deref(),
            &collected,
            Some(&path),
            self.clock.now_millis(),
            |path| self.link(&episode_id, path),
        );
        let alert = json!({
            "incident": facts.incident,
            "notification": notification.map(|(received_at, remote, group_key, body)| json!({
                "received_at": crate::episodes::reconcile::canonical_time(millis_to_datetime(received_at)),
                "remote": remote,
                "group_key": group_key,
                "body": serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
            })),
        });
        let pretty = |value: &Value| serde_json::to_vec_pretty(value).unwrap_or_default();
        let documents = vec![
            ("alert.json".to_owned(), pretty(&alert)),
            (
                "decision.json".to_owned(),
                pretty(&docs::decision_json(&facts)),
            ),
            (
                "actions.json".to_owned(),
                pretty(&docs::actions_json(&facts)),
            ),
            ("pages.json".to_owned(), pretty(&docs::pages_json(&facts))),
            (
                "timeline.md".to_owned(),
                docs::timeline(&facts).into_bytes(),
            ),
            ("comms.md".to_owned(), docs::comms(&facts).into_bytes()),
            (
                "postmortem.md".to_owned(),
                docs::postmortem(&facts).into_bytes(),
            ),
        ];
        // Redact everything before it is written: known secrets, then the patterns, over
        // the bytes whether they are UTF-8 or not. A copy of the known secrets: an action
        // learning one is not held up while a large bundle is scrubbed.
        let known = self
            .redactor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut redactions = BTreeMap::new();
        let mut total_redactions = 0;
        let redacted: Vec<(String, Vec<u8>)> = documents
            .into_iter()
            .map(|(name, bytes)| (name, bytes::Bytes::from(bytes)))
            .chain(files)
            .map(|(name, bytes)| {
                let (bytes, count) = scrub_evidence(&known, &self.patterns, &bytes);
                if count > 0 {
                    redactions.insert(name.clone(), count);
                    total_redactions += count;
                }
                (name, bytes)
            })
            .collect();
        // The lines go with the page: through the redactor again, as lines of text.
        let highlights = highlights(&redacted, |line| {
            scrub_evidence_text(&known, &self.patterns, line)
        });
        let missed = self
            .missed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&episode_id)
            .cloned()
            .unwrap_or_default();
        let manifest = json!({
            "incident": episode_id,
            "version": if last { "final" } else { "initial" },
            "generated_at": facts.generated_at,
            "files": redacted.iter().map(|(name, bytes)| json!({
                "path": name,
                "bytes": bytes.len(),
                "sha256": hex::encode(Sha256::digest(bytes)),
            })).collect::<Vec<_>>(),
            "collectors": collected,
            "plan_errors": plan_errors.iter().map(|(name, error)| json!({"collector": name, "error": error})).collect::<Vec<_>>(),
            "evidence_missed": missed,
            "redactions": redactions,
            "highlights": highlights,
        });
        let mut all = redacted;
        all.push(("manifest.json".to_owned(), pretty(&manifest)));
        let mtime = (self.clock.now_millis() / 1000).max(0) as u64;
        let absolute = self.state_dir.join(&path);
        let bytes = archive::write_atomic(&absolute, &all, mtime)
            .map_err(|error| format!("cannot write {path}: {error}"))?;
        Ok(Built {
            path,
            bytes,
            collectors: serde_json::to_string(&collected).unwrap_or_else(|_| "[]".to_owned()),
            highlights,
            total_redactions,
        })
    }

    /// File a collector's output under `collectors/NAME/` (`collectors/NAME/resolve/` when run
    /// again at resolve) and note its outcome.
    fn take(
        &self,
        output: CollectorOutput,
        phase: &str,
        files: &mut Vec<(String, bytes::Bytes)>,
        collected: &mut Vec<CollectorFacts>,
    ) {
        let base = if phase == "resolve" {
            format!("collectors/{}/resolve", output.name)
        } else {
            format!("collectors/{}", output.name)
        };
        let status = serde_json::to_value(output.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.metrics
            .bundle_collectors_total
            .with_label_values(&[output.kind.as_str(), status.as_str()])
            .inc();
        let mut names = Vec::new();
        for file in output.files {
            let name = format!("{base}/{}", file.path.trim_start_matches('/'));
            names.push(name.clone());
            files.push((name, file.bytes));
        }
        if output.status != CollectorStatus::Ok {
            tracing::warn!(
                collector = %output.name,
                status,
                error = %crate::escape::log_text(output.error.as_deref().unwrap_or("")),
                "collector did not finish cleanly"
            );
        }
        collected.push(CollectorFacts {
            name: output.name,
            kind: output.kind,
            status,
            error: output.error,
            duration_ms: output.duration_ms,
            files: names,
            shared: output.shared,
            phase: phase.to_owned(),
        });
    }

    /// Apply [`retention_plan`]: delete the files it picks, then record each as `deleted` in
    /// the store (a deleted bundle's row never points to a missing file for long: the API, the
    /// page and the report show only `written` and `final` bundles). Reading the rows and
    /// deleting the files happen on a bundle thread.
    pub async fn retention(self: &Arc<Self>) {
        let rows = match self.store.bundles_on_disk().await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::error!(%error, "cannot read the bundles on disk");
                return;
            }
        };
        let bundler = self.clone();
        let Ok(sweep) = self.background.run(move || bundler.sweep(rows)).await else {
            return;
        };
        for (episode_id, path, reason) in sweep.deleted {
            if let Err(error) = self
                .store
                .bundle(BundleOp::Deleted(episode_id.clone()))
                .await
            {
                tracing::error!(%error, "cannot record a deleted bundle");
            }
            self.metrics.bundles_deleted_total.inc();
            if reason == Deletion::OpenOverSize {
                tracing::warn!(episode = %episode_id, %path, reason = reason.label(), "bundle of an open incident deleted by retention: bundles.max_total_bytes is exceeded even without any closed incident's");
            } else {
                tracing::info!(episode = %episode_id, %path, reason = reason.label(), "bundle deleted by retention");
            }
        }
        self.metrics.bundles_on_disk.set(sweep.kept);
        self.metrics.bundles_bytes.set(sweep.total.max(0));
    }

    /// The blocking half of [`Bundler::retention`].
    fn sweep(&self, rows: Vec<BundleRow>) -> Sweep {
        let busy = |episode_id: &str| self.jobs().running.contains_key(episode_id);
        let on_disk: Vec<OnDisk> = rows
            .iter()
            .map(|row| OnDisk {
                open: crate::episodes::reconcile::EpisodeStatus::parse(&row.status)
                    .is_some_and(|status| status.is_open())
                    || !row.closed,
                busy: busy(&row.episode_id),
                bytes: row.bytes,
                created_at: row.created_at,
            })
            .collect();
        let plan = retention_plan(
            &on_disk,
            self.clock.now_millis(),
            crate::clock::duration_millis(self.settings.max_age),
            self.settings.max_total_bytes,
            OPEN_BUNDLES_KEPT,
        );
        let mut sweep = Sweep {
            total: rows.iter().map(|r| r.bytes).sum(),
            ..Sweep::default()
        };
        for (row, verdict) in rows.iter().zip(plan) {
            let (Some(reason), Some(path)) = (verdict, &row.path) else {
                sweep.kept += 1;
                continue;
            };
            // Checked again with the file's removal under the lock: a bundle being rewritten
            // now (its incident just closed) reads this file, and is left alone.
            let jobs = self.jobs();
            if jobs.running.contains_key(&row.episode_id) {
                sweep.kept += 1;
                continue;
            }
            let removed = std::fs::remove_file(self.state_dir.join(path));
            drop(jobs);
            match removed {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::error!(%path, %error, "cannot delete a bundle");
                    sweep.kept += 1;
                    continue;
                }
            }
            sweep.total -= row.bytes;
            sweep
                .deleted
                .push((row.episode_id.clone(), path.clone(), reason));
        }
        sweep
    }
}

/// The bundle jobs of this process: which are running, and which finished while the queue
/// was being read.
///
/// The queue read that polls for owed bundles may predate a job's commit: a bundle written
/// meanwhile still looks owed in it, and starting it again would write it twice (101,201
/// initial bundles for 100,000 incidents in a backlog, and a live `.partial` long after
/// every bundle was in). So a job that finishes is remembered with the poll round current
/// then, and a polled item is not started if its job finished in or after the round of the
/// read it came from. Rounds begin before their read, so a job finished in an earlier round
/// was committed before the read began, and the read shows it written.
#[derive(Debug, Default)]
struct Jobs {
    /// Incidents whose bundle is being written, with their evidence gate (true once every
    /// `before_action` collector finished).
    running: HashMap<String, watch::Receiver<bool>>,
    /// Incident → the round current when its job finished.
    finished: HashMap<String, u64>,
    round: u64,
}

impl Jobs {
    /// Start a poll round, before the queue is read; returns its number. Jobs that finished
    /// before it are committed, so its read shows them: forget them.
    fn begin_round(&mut self) -> u64 {
        self.round += 1;
        let round = self.round;
        self.finished.retain(|_, finished_in| *finished_in >= round);
        round
    }

    /// Whether a job for `episode_id` may start now, and if so note it running. `polled`:
    /// the round of the queue read the work comes from, `None` for work handed over with
    /// the decision just committed.
    fn begin(
        &mut self,
        episode_id: &str,
        polled: Option<u64>,
        gate: watch::Receiver<bool>,
    ) -> bool {
        if self.running.contains_key(episode_id) {
            return false;
        }
        if let Some(read_in) = polled
            && self
                .finished
                .get(episode_id)
                .is_some_and(|finished_in| *finished_in >= read_in)
        {
            return false;
        }
        self.running.insert(episode_id.to_owned(), gate);
        true
    }

    /// The job of `episode_id` ended (its outcome committed, or failed).
    fn finish(&mut self, episode_id: &str) {
        self.running.remove(episode_id);
        self.finished.insert(episode_id.to_owned(), self.round);
    }
}

/// What a retention pass did: (incident, path, why) per deleted bundle, how many are kept,
/// and their bytes.
#[derive(Default)]
struct Sweep {
    deleted: Vec<(String, String, Deletion)>,
    kept: i64,
    total: i64,
}

/// The bundles of this many open incidents, the newest, are never deleted, whatever the
/// total: retention may then exceed `bundles.max_total_bytes` by at most their size.
pub const OPEN_BUNDLES_KEPT: usize = 10;

/// One bundle on disk, as retention judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OnDisk {
    /// Its incident is firing or silenced, or has not closed.
    open: bool,
    /// Being written or rewritten right now.
    busy: bool,
    bytes: i64,
    created_at: Millis,
}

/// Why retention deletes a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deletion {
    /// A closed incident's, older than `bundles.max_age`.
    Age,
    /// A closed incident's, the oldest while the total exceeds `bundles.max_total_bytes`.
    Size,
    /// An open incident's: the total still exceeds the cap with no closed incident's left.
    OpenOverSize,
}

impl Deletion {
    fn label(self) -> &'static str {
        match self {
            Deletion::Age => "age",
            Deletion::Size => "size",
            Deletion::OpenOverSize => "size, open incident",
        }
    }
}

/// The retention policy, pure: for bundles listed oldest first, which to delete and why.
///
/// 1. Closed incidents' bundles older than `max_age`.
/// 2. While the total exceeds `max_total_bytes`: closed incidents' bundles, oldest first.
/// 3. While it still does: open incidents' bundles, oldest first, except those of the
///    `keep_open` ([`OPEN_BUNDLES_KEPT`]) newest open incidents. An open incident has one
///    bundle (the initial one, rewritten in place when it closes), so this deletes the
///    evidence of the incidents open longest, whose page has carried its link the longest,
///    and bounds a storm that never resolves; the newest, still being worked on, keep theirs.
///    Age alone never deletes an open incident's bundle.
///
/// A bundle being written is never deleted. An open incident whose bundle was deleted gets no
/// final bundle when it closes (there is nothing to rewrite); if it fires again, a new one.
fn retention_plan(
    bundles: &[OnDisk],
    now: Millis,
    max_age: Millis,
    max_total_bytes: u64,
    keep_open: usize,
) -> Vec<Option<Deletion>> {
    let mut verdicts: Vec<Option<Deletion>> = vec![None; bundles.len()];
    let mut total: i64 = bundles.iter().map(|b| b.bytes).sum();
    let over = |total: i64| u64::try_from(total).unwrap_or(0) > max_total_bytes;
    for (verdict, bundle) in verdicts.iter_mut().zip(bundles) {
        if !bundle.open && !bundle.busy && now - bundle.created_at > max_age {
            *verdict = Some(Deletion::Age);
            total -= bundle.bytes;
        }
    }
    let newest_open: Vec<usize> = bundles
        .iter()
        .enumerate()
        .filter(|(_, bundle)| bundle.open)
        .map(|(index, _)| index)
        .rev()
        .take(keep_open)
        .collect();
    for (open, reason) in [(false, Deletion::Size), (true, Deletion::OpenOverSize)] {
        for (index, bundle) in bundles.iter().enumerate() {
            if !over(total) {
                return verdicts;
            }
            let candidate = verdicts[index].is_none()
                && bundle.open == open
                && !bundle.busy
                && !newest_open.contains(&index);
            if candidate {
                verdicts[index] = Some(reason);
                total -= bundle.bytes;
            }
        }
    }
    verdicts
}

/// Where a person finds an incident's bundle: under `paging.external_url` when set, else its
/// path on the host.
pub fn bundle_link(
    external_url: Option<&str>,
    state_dir: &Path,
    episode_id: &str,
    path: &str,
) -> String {
    match external_url {
        Some(base) => format!(
            "{}/api/v1/incidents/{episode_id}/bundle",
            base.trim_end_matches('/')
        ),
        None => state_dir.join(path).display().to_string(),
    }
}

/// `bundles/YYYY-MM-DD/<incident>.tar.gz`, dated by the incident's start.
fn bundle_path(episode_id: &str, starts_at: &str, now: Millis) -> String {
    let day = chrono::DateTime::parse_from_rfc3339(starts_at)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|_| millis_to_datetime(now))
        .format("%Y-%m-%d");
    format!("{BUNDLES_DIR}/{day}/{episode_id}.tar.gz")
}

/// The most recent lines of the collected logs that look like errors (at most five), each
/// through `redact` before it is cut to length.
fn highlights(files: &[(String, Vec<u8>)], redact: impl Fn(&str) -> String) -> Vec<String> {
    static ERROR_LINE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?i)\b(error|fatal|panic|exception|failed|5\d\d)\b")
            .expect("valid regex")
    });
    let pattern = &*ERROR_LINE;
    let mut lines = Vec::new();
    for (name, bytes) in files {
        if !name.ends_with(".log") {
            continue;
        }
        let text = String::from_utf8_lossy(bytes);
        for line in text.lines().filter(|l| pattern.is_match(l)) {
            let line = redact(line.trim());
            lines.push(crate::page::notify::pagerduty::truncate_chars(&line, 200).to_owned());
        }
    }
    let skip = lines.len().saturating_sub(5);
    lines.into_iter().skip(skip).collect()
}

/// The store's incident detail as bundle facts.
pub fn incident_facts(
    detail: &crate::store::IncidentDetail,
    severities: &SeveritiesConfig,
    external_url: Option<&str>,
    collected: &[CollectorFacts],
    bundle_path: Option<&str>,
    now: Millis,
    link: impl Fn(&str) -> String,
) -> BundleFacts {
    let summary = &detail.summary;
    let latest = detail.decisions.last();
    let severity = summary.severity.clone().unwrap_or_default();
    let level = crate::page::policy::rank(&severity).clamp(1, 4) as u8;
    let config = severities.get(level);
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    let map = |value: &Value| -> BTreeMap<String, String> {
        value
            .as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), text(v))).collect())
            .unwrap_or_default()
    };
    // Alertmanager's endsAt when it resolved; when it was seen gone, the time nightshift saw it.
    let ended_at = detail
        .ends_at
        .clone()
        .filter(|end| !end.starts_with("0001-"))
        .or_else(|| {
            detail
                .transitions
                .iter()
                .rev()
                .find(|t| {
                    matches!(
                        t.kind,
                        crate::episodes::reconcile::TransitionKind::Resolved
                            | crate::episodes::reconcile::TransitionKind::Gone
                    )
                })
                .map(|t| t.at.clone())
        })
        .filter(|_| !summary.status.is_open());
    let duration = ended_at.as_ref().and_then(|end| {
        let start = chrono::DateTime::parse_from_rfc3339(&summary.starts_at).ok()?;
        let end = chrono::DateTime::parse_from_rfc3339(end).ok()?;
        let seconds = (end - start).num_seconds().max(0) as u64;
        Some(crate::duration::format(Duration::from_secs(seconds)))
    });
    let incident = IncidentFacts {
        id: summary.id.clone(),
        alertname: summary.alertname.clone().unwrap_or_default(),
        summary: latest
            .map(|d| text(&d.trace["summary"]))
            .unwrap_or_default(),
        status: summary.status.as_str().to_owned(),
        severity: severity.clone(),
        meaning: config.meaning.clone(),
        respond_within: crate::duration::format(config.respond_within),
        rule: summary.rule.clone().unwrap_or_default(),
        branch: summary.branch.clone().unwrap_or_default(),
        note: latest.map(|d| text(&d.trace["note"])).unwrap_or_default(),
        labels: map(&summary.labels),
        annotations: map(&detail.annotations),
        generator_url: detail.generator_url.clone(),
        starts_at: summary.starts_at.clone(),
        ended_at,
        duration,
        paging_state: text(&detail.paging["state"]),
        paging_reason: text(&detail.paging["reason"]),
        incident_commander: config.incident_commander.clone(),
        url: external_url.map(|base| {
            format!(
                "{}/api/v1/incidents/{}",
                base.trim_end_matches('/'),
                summary.id
            )
        }),
    };
    let decisions = detail
        .decisions
        .iter()
        .map(|d| DecisionFacts {
            at: d.at.clone(),
            kind: d.kind.as_str().to_owned(),
            rule: d.rule.clone(),
            severity: d.severity.clone(),
            branch: d.branch.clone(),
            changed: d.changed,
            note: text(&d.trace["note"]),
            why: text(&d.trace["classification"]["reason"]),
            probes: d.trace["probes"]
                .as_object()
                .map(|probes| {
                    probes
                        .iter()
                        .map(|(name, result)| {
                            let line = if result["ok"].as_bool().unwrap_or(false) {
                                format!("ok: {}", result["fields"])
                            } else {
                                format!("failed: {}", text(&result["error"]))
                            };
                            (name.clone(), line)
                        })
                        .collect()
                })
                .unwrap_or_default(),
            trace: d.trace.clone(),
        })
        .collect();
    let pages = detail.paging["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| PageEventFacts {
                    at: text(&e["created_at"]),
                    channel: text(&e["channel"]),
                    kind: text(&e["kind"]),
                    state: text(&e["state"]),
                    reason: text(&e["reason"]),
                    attempts: e["attempts"].as_i64().unwrap_or_default(),
                    delivered_at: e["delivered_at"].as_str().map(str::to_owned),
                    error: e["last_error"].as_str().map(str::to_owned),
                })
                .collect()
        })
        .unwrap_or_default();
    BundleFacts {
        incident,
        decisions,
        actions: detail
            .actions
            .iter()
            .map(crate::page::notify::view::action_line)
            .collect(),
        pages,
        transitions: detail
            .transitions
            .iter()
            .map(|t| TransitionFacts {
                at: t.at.clone(),
                kind: t.kind.as_str().to_owned(),
            })
            .collect(),
        collectors: collected.to_vec(),
        generated_at: crate::episodes::reconcile::canonical_time(millis_to_datetime(now)),
        bundle_path: bundle_path.unwrap_or_default().to_owned(),
        bundle_url: bundle_path.map(link),
    }
}

/// What the night report needs besides the store.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    pub severities: SeveritiesConfig,
    pub external_url: Option<String>,
    pub state_dir: PathBuf,
}

/// Incidents seen, open or closed between `since` and `until` (at most 2,000), for the report.
pub fn report_facts(
    reader: &Reader,
    options: &ReportOptions,
    since: Millis,
    until: Millis,
) -> Result<crate::report::ReportFacts, StoreError> {
    let time = |millis| crate::episodes::reconcile::canonical_time(millis_to_datetime(millis));
    let mut incidents = Vec::new();
    for id in reader.incident_ids_since(since, 2_000)? {
        let Some(detail) = reader.incident(&id)? else {
            continue;
        };
        let bundle = reader
            .bundle(&id)?
            .filter(|b| {
                matches!(
                    b.state,
                    crate::store::BundleState::Written | crate::store::BundleState::Final
                )
            })
            .and_then(|b| b.path);
        let link = |path: &str| {
            bundle_link(
                options.external_url.as_deref(),
                &options.state_dir,
                &id,
                path,
            )
        };
        let facts = incident_facts(
            &detail,
            &options.severities,
            options.external_url.as_deref(),
            &[],
            bundle.as_deref(),
            until,
            link,
        );
        let incident = facts.incident;
        incidents.push(crate::report::ReportIncident {
            id: incident.id,
            summary: incident.summary,
            alertname: incident.alertname,
            severity: incident.severity,
            meaning: incident.meaning,
            respond_within: incident.respond_within,
            status: incident.status,
            started_at: incident.starts_at,
            ended_at: incident.ended_at,
            duration: incident.duration,
            rule: incident.rule,
            branch: incident.branch,
            actions: facts.actions,
            paging_state: incident.paging_state,
            paging_reason: incident.paging_reason,
            pages: facts.pages,
            bundle: facts.bundle_url,
        });
    }
    Ok(crate::report::ReportFacts {
        since: time(since),
        until: time(until),
        incidents,
    })
}

/// The path of a bundle's file under the state directory, refusing anything that would leave
/// the bundles directory.
pub fn resolve_path(state_dir: &Path, relative: &str) -> Option<PathBuf> {
    let inside = relative.starts_with(&format!("{BUNDLES_DIR}/"))
        && !relative
            .split('/')
            .any(|part| part == ".." || part.is_empty());
    inside.then(|| state_dir.join(relative))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_are_dated_by_the_incident_start() {
        assert_eq!(
            bundle_path("abc-1", "2026-11-28T03:00:00Z", 0),
            "bundles/2026-11-28/abc-1.tar.gz"
        );
        assert!(resolve_path(Path::new("/var"), "bundles/2026-11-28/a.tar.gz").is_some());
        assert!(resolve_path(Path::new("/var"), "bundles/../etc/passwd").is_none());
        assert!(resolve_path(Path::new("/var"), "/etc/passwd").is_none());
    }

    /// The interleaving that wrote 101,201 initial bundles for 100,000 incidents: the poll
    /// reads the queue while an incident's job is still writing, the job commits and ends,
    /// and only then does the poll get to the item it read. Judged on `running` alone (as
    /// before), the item started a second job.
    #[test]
    fn a_bundle_written_while_the_queue_was_read_is_not_started_again() {
        let gate = || watch::channel(false).1;
        let mut jobs = Jobs::default();
        // The decision hands the work over: the job starts.
        assert!(jobs.begin("a", None, gate()));
        // A poll round begins and reads the queue: "a" still looks owed (not yet committed).
        let round = jobs.begin_round();
        // Meanwhile the job commits and ends.
        jobs.finish("a");
        // The poll gets to the item it read: stale, not started again.
        assert!(!jobs.begin("a", Some(round), gate()));
        // A job that ended before the next round's read is committed before it: that read
        // does not list it, and if it does (a failed job), it is started again.
        let next = jobs.begin_round();
        assert!(jobs.begin("a", Some(next), gate()));
        // Never two jobs for one incident at once, polled or handed over.
        assert!(!jobs.begin("a", None, gate()));
        assert!(!jobs.begin("a", Some(next), gate()));
        jobs.finish("a");
        // A reopened incident's new decision starts its bundle again at once.
        assert!(jobs.begin("a", None, gate()));
        // And what finished long ago is forgotten.
        jobs.finish("a");
        jobs.begin_round();
        jobs.begin_round();
        assert!(jobs.finished.is_empty());
    }

    #[test]
    fn highlights_are_the_last_error_lines_of_the_logs() {
        let log = (0..10)
            .map(|n| format!("line {n} ok\nline {n} ERROR upstream answered 503"))
            .collect::<Vec<_>>()
            .join("\n");
        let files = vec![
            ("collectors/logs/p/app.log".to_owned(), log.into_bytes()),
            (
                "collectors/status/body".to_owned(),
                b"error everywhere".to_vec(),
            ),
        ];
        let lines = highlights(&files, str::to_owned);
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[4], "line 9 ERROR upstream answered 503");
    }

    #[test]
    fn highlights_are_redacted_even_from_logs_that_are_not_utf8() {
        let patterns = Patterns::new(&[]).unwrap();
        let mut known = Redactor::default();
        known.learn("api_key", "sk-known-0123456789");
        let mut log = b"\xff\xfe\n".to_vec();
        log.extend_from_slice(
            b"ERROR 401 with Authorization: Bearer tok-\xff123 and sk-known-0123456789\n",
        );
        let files = vec![("collectors/logs/p/app.log".to_owned(), log)];
        let lines = highlights(&files, |line| scrub_evidence_text(&known, &patterns, line));
        assert_eq!(
            lines,
            ["ERROR 401 with Authorization: <redacted> and <secret:api_key>"]
        );
    }

    /// Sizes in bytes, ages in days; `open`, `busy` as [`OnDisk`] says.
    #[test]
    fn retention_deletes_closed_bundles_first_then_the_oldest_open_ones_past_the_cap() {
        const DAY: Millis = 86_400_000;
        let now = 100 * DAY;
        let bundle = |open: bool, busy: bool, bytes: i64, age_days: i64| OnDisk {
            open,
            busy,
            bytes,
            created_at: now - age_days * DAY,
        };
        use Deletion::{Age, OpenOverSize, Size};
        // (bundles oldest first, cap, verdicts); max_age is 30 days, the newest open one kept.
        let cases: Vec<(Vec<OnDisk>, u64, Vec<Option<Deletion>>)> = vec![
            // Under the cap: only age deletes, and only a closed incident's.
            (
                vec![
                    bundle(false, false, 10, 40),
                    bundle(true, false, 10, 40),
                    bundle(false, false, 10, 1),
                ],
                1_000,
                vec![Some(Age), None, None],
            ),
            // Over it: closed ones oldest first, just enough.
            (
                vec![
                    bundle(false, false, 10, 3),
                    bundle(true, false, 10, 2),
                    bundle(false, false, 10, 2),
                    bundle(false, false, 10, 1),
                ],
                25,
                vec![Some(Size), None, Some(Size), None],
            ),
            // Closed ones exhausted: the oldest open ones go, a busy one never.
            (
                vec![
                    bundle(true, false, 10, 5),
                    bundle(true, true, 10, 4),
                    bundle(false, false, 10, 3),
                    bundle(true, false, 10, 2),
                    bundle(true, false, 10, 1),
                ],
                15,
                vec![
                    Some(OpenOverSize),
                    None,
                    Some(Size),
                    Some(OpenOverSize),
                    None,
                ],
            ),
        ];
        for (bundles, cap, expected) in cases {
            assert_eq!(
                retention_plan(&bundles, now, 30 * DAY, cap, 1),
                expected,
                "{bundles:?} cap {cap}"
            );
        }
        // The newest open incidents keep theirs, however far over the cap.
        let open: Vec<OnDisk> = (0..OPEN_BUNDLES_KEPT + 3)
            .map(|n| bundle(true, false, 1_000, 100 - n as i64))
            .collect();
        let verdicts = retention_plan(&open, now, 30 * DAY, 0, OPEN_BUNDLES_KEPT);
        assert_eq!(verdicts.iter().filter(|v| v.is_some()).count(), 3);
        assert!(verdicts[..3].iter().all(|v| *v == Some(OpenOverSize)));
        assert!(verdicts[3..].iter().all(Option::is_none));
    }
}
