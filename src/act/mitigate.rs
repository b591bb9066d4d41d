//! mitigate: the act stage's orchestration. For each action a decision chose: have its kind
//! build the exact request (rendered, checked), pass it through the governor (inside the
//! store's transaction), mark it started durably, have the kind run it and, when the answer was
//! lost, read it back; record the result, holds and reverts. What each kind does (its requests,
//! read-back, the items it holds and how it reverts them) lives in its module under `actions`.
//! Every action carries an idempotency key (incident, rule, action, target): one that was
//! planned before is never planned again, and one found `started` after a crash is settled by
//! read-back or marked `uncertain`, never run again.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::act::actions::kubernetes::{self as kube_actions, Change};
use crate::act::actions::{Outcome, exec, http};
use crate::act::governor::VerdictKind;
use crate::act::governor::{Limits, Mode};
use crate::clock::{SharedClock, duration_millis};
use crate::kubernetes::{ClientSlot, Workload};
use crate::rules::action::{ActionSpec, Common};
use crate::rules::{AlertInput, ChosenAction, RuleSet};
use crate::store::{ActionPlan, ActionState, Engine, HoldFinish, HoldState, Store};
use crate::telemetry::Metrics;

/// What the act stage needs; built once by the daemon.
pub struct Mitigator {
    pub store: Store,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    pub kubernetes: ClientSlot,
    pub http: reqwest::Client,
    /// The effective mode: `Enforce` only when configured and an ingest credential exists;
    /// switched by a reload.
    pub mode: Arc<ModeSwitch>,
    pub limits: Limits,
    pub namespaces: Vec<String>,
    pub max_attempts: u32,
    /// Minimum hold of a change reverted on resolve (and the revert's cooldown).
    pub min_hold: Duration,
    /// Where `secret("name")` reads from.
    pub secrets: crate::redact::SecretFiles,
    /// Learns every secret read, and scrubs results before they are stored or logged.
    pub redactor: Arc<std::sync::Mutex<crate::redact::Redactor>>,
    /// When actions were last verified.
    pub last_verify: std::sync::Mutex<crate::clock::Millis>,
    /// The bundler's evidence gate: a disruptive action waits for its incident's
    /// `before_action` collectors, up to `evidence_wait`.
    pub evidence: Option<Arc<crate::bundle::bundler::Bundler>>,
    pub evidence_wait: Duration,
}

/// The effective action mode, shared by the act stage and the reloader: `[actions] mode` is
/// the switch a human reaches for at 3 a.m., so it applies on reload in both directions.
/// Switching to dry-run stops new effects at once; an action already started finishes and is
/// verified.
#[derive(Debug)]
pub struct ModeSwitch(std::sync::atomic::AtomicBool);

impl ModeSwitch {
    pub fn new(mode: Mode) -> ModeSwitch {
        ModeSwitch(std::sync::atomic::AtomicBool::new(mode == Mode::Enforce))
    }

    pub fn get(&self) -> Mode {
        if self.0.load(std::sync::atomic::Ordering::SeqCst) {
            Mode::Enforce
        } else {
            Mode::DryRun
        }
    }

    /// Set the mode; returns the previous one.
    pub fn set(&self, mode: Mode) -> Mode {
        let was = self
            .0
            .swap(mode == Mode::Enforce, std::sync::atomic::Ordering::SeqCst);
        if was { Mode::Enforce } else { Mode::DryRun }
    }
}

/// An action ready to run: the request for its kind, which runs it, reads it back and
/// reverts it.
enum Prepared {
    Kubernetes(kube_actions::Request),
    Exec(exec::ExecRequest),
    Http(http::HttpActionRequest),
}

impl Mitigator {
    /// Act on every action of a decision, in order.
    pub async fn act(
        &self,
        rules: &RuleSet,
        alert: &AlertInput,
        probes: &std::collections::BTreeMap<String, crate::probes::ProbeResult>,
        actions: &[ChosenAction],
        severity: crate::rules::Severity,
    ) {
        for chosen in actions {
            let context = rules.action_context(&chosen.rule, alert, probes, severity);
            let severity = severity.as_str();
            if let Err(error) = self.act_one(rules, alert, &context, chosen, severity).await {
                self.metrics
                    .actions_total
                    .with_label_values(&[chosen.kind.as_str(), "refused"])
                    .inc();
                tracing::error!(action = %chosen.name, rule = %chosen.rule, %error, "action refused");
            }
        }
    }

    async fn act_one(
        &self,
        rules: &RuleSet,
        alert: &AlertInput,
        context: &Value,
        chosen: &ChosenAction,
        severity: &str,
    ) -> Result<(), String> {
        let rule = rules
            .rules
            .iter()
            .find(|r| r.name == chosen.rule)
            .ok_or_else(|| format!("rule {} is no longer loaded", chosen.rule))?;
        let spec = rules
            .file_of(rule)
            .actions
            .get(&chosen.name)
            .ok_or_else(|| format!("action {} is no longer defined", chosen.name))?
            .clone();
        let (target, prepared) =
            self.prepare(&chosen.name, &spec, chosen, alert, context, severity)?;
        let common = Common::of(&spec);
        let key = format!(
            "{}|{}|{}|{}",
            alert.incident_id, rule.name, chosen.name, target
        );
        let hold_items = match &prepared {
            Prepared::Kubernetes(request) if common.revert_on_resolve => {
                kube_actions::hold_items(request)
            }
            _ => Vec::new(),
        };
        let plan = ActionPlan {
            key: key.clone(),
            episode_id: alert.incident_id.clone(),
            fingerprint: alert.fingerprint.clone(),
            rule: rule.name.clone(),
            action: chosen.name.clone(),
            kind: spec.kind().to_owned(),
            target: target.clone(),
            shadow: rule.shadow,
            cooldown: duration_millis(common.cooldown),
            arguments: chosen.rendered.to_string(),
            mode: self.mode.get(),
            limits: self.limits,
            hold_items: hold_items.clone(),
            defer_on_skip: false,
            defer_in_flight: !hold_items.is_empty(),
            verify_window: duration_millis(common.verify_window),
        };
        // A change that another incident is making right now may end up held by both: wait
        // for it (bounded), then plan again; past the bound the in-flight skip is recorded.
        let mut planned = self
            .store
            .plan_action(plan.clone())
            .await
            .map_err(|e| e.to_string())?;
        for _ in 0..60 {
            if planned.state != ActionState::Deferred {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            planned = self
                .store
                .plan_action(plan.clone())
                .await
                .map_err(|e| e.to_string())?;
        }
        if planned.state == ActionState::Deferred {
            let plan = ActionPlan {
                defer_in_flight: false,
                ..plan
            };
            planned = self
                .store
                .plan_action(plan)
                .await
                .map_err(|e| e.to_string())?;
        }
        if !planned.new {
            return Ok(());
        }
        self.metrics
            .actions_total
            .with_label_values(&[spec.kind(), planned.verdict.as_str()])
            .inc();
        tracing::info!(action = %chosen.name, %target, verdict = %planned.verdict, "action judged");
        if planned.verdict != VerdictKind::Run {
            return Ok(());
        }
        // Evidence before disruption: logs and events of pods about to be restarted, scaled or
        // re-configured are collected first (bounded; what was missed goes in the bundle).
        if let (Prepared::Kubernetes(_), Some(evidence)) = (&prepared, &self.evidence) {
            let action = format!("{} on {target}", chosen.name);
            evidence
                .evidence_ready(&alert.incident_id, &action, self.evidence_wait)
                .await;
        }
        // A reload may have switched to dry-run while this action was judged or waited for
        // evidence: no new effect starts after the switch. Recorded as failed (nothing was
        // done), so that its incident pages as when nothing could be done.
        if self.mode.get() == Mode::DryRun {
            let result = json!({"error": "actions.mode was switched to dry-run before this action started; not run"});
            tracing::warn!(action = %chosen.name, %target, "switched to dry-run before the action started; not run");
            self.store
                .update_action(planned.id, ActionState::Failed, Some(result.to_string()))
                .await
                .map_err(|e| e.to_string())?;
            return Ok(());
        }
        // Retries only for what provably did not take effect: exponential backoff with jitter
        // from backon (the design card's `backoff` crate is unmaintained, RUSTSEC-2025-0012).
        let mut delays = {
            use backon::BackoffBuilder;
            backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_secs(1))
                .with_max_delay(Duration::from_secs(30))
                .with_jitter()
                .with_max_times(self.max_attempts.saturating_sub(1) as usize)
                .build()
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            if !self
                .store
                .update_action(planned.id, ActionState::Started, None)
                .await
                .map_err(|e| e.to_string())?
            {
                return Ok(());
            }
            let outcome = self.run(&prepared, &key).await;
            let outcome = match outcome {
                Outcome::Unknown { error } => self.settle(&prepared, &key, error).await,
                other => other,
            };
            let retry = matches!(
                outcome,
                Outcome::NotApplied {
                    retryable: true,
                    ..
                }
            ) && attempt < self.max_attempts;
            let state = match (&outcome, retry) {
                (Outcome::Done { .. }, _) => ActionState::Done,
                (Outcome::NotApplied { .. }, true) => ActionState::NotApplied,
                (Outcome::NotApplied { .. }, false) | (Outcome::Failed { .. }, _) => {
                    ActionState::Failed
                }
                (Outcome::Unknown { .. }, _) => ActionState::Uncertain,
            };
            if let Outcome::Done { detail } = &outcome
                && !hold_items.is_empty()
                && detail["changed"] != json!(false)
            {
                let items = hold_items
                    .iter()
                    .map(|held| crate::store::HoldItem {
                        item: held.item.clone(),
                        value: held.value.clone(),
                        previous: kube_actions::previous_of(&held.item, detail),
                    })
                    .collect();
                self.store
                    .add_holds(crate::store::HoldRequest {
                        target: target.clone(),
                        episode_id: alert.incident_id.clone(),
                        action_id: planned.id,
                        items,
                    })
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let result = self.scrub(&serde_json::to_string(&outcome).unwrap_or_default());
            self.store
                .update_action(planned.id, state, Some(result))
                .await
                .map_err(|e| e.to_string())?;
            self.metrics
                .actions_total
                .with_label_values(&[spec.kind(), state.as_str()])
                .inc();
            match (state, &outcome) {
                (ActionState::Uncertain, _) => {
                    tracing::error!(action = %chosen.name, %target, "action outcome unknown; escalating, not retrying")
                }
                (
                    ActionState::Failed,
                    Outcome::Failed { error } | Outcome::NotApplied { error, .. },
                ) => {
                    tracing::error!(action = %chosen.name, %target, attempt, error = %self.scrub(error), "action failed")
                }
                (ActionState::NotApplied, Outcome::NotApplied { error, .. }) => {
                    tracing::warn!(action = %chosen.name, %target, attempt, error = %self.scrub(error), "action not applied; retrying with backoff")
                }
                _ => {}
            }
            if !retry {
                return Ok(());
            }
            // Provably not applied: back off and try again.
            match delays.next() {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Ok(()),
            }
        }
    }

    /// The workload a Kubernetes action would change, refused when its namespace is not in
    /// `kubernetes.namespaces` (empty allows none); `explain` asks the same question.
    pub fn kubernetes_workload(
        namespaces: &[String],
        chosen: &ChosenAction,
    ) -> Result<Workload, String> {
        kube_actions::target_workload(namespaces, &chosen.rendered)
    }

    fn prepare(
        &self,
        name: &str,
        spec: &ActionSpec,
        chosen: &ChosenAction,
        alert: &AlertInput,
        context: &Value,
        severity: &str,
    ) -> Result<(String, Prepared), String> {
        match spec {
            ActionSpec::RolloutRestart { .. } => {
                self.kubernetes(chosen, |_| Ok(Change::RolloutRestart))
            }
            ActionSpec::SetEnv {
                containers,
                env,
                remove,
                ..
            } => self.kubernetes(chosen, |this| {
                let mut set = std::collections::BTreeMap::new();
                for (name, source) in env {
                    set.insert(name.clone(), this.render_secret(source, context)?);
                }
                Ok(Change::SetEnv {
                    containers: containers.clone(),
                    set,
                    remove: remove.clone(),
                })
            }),
            ActionSpec::Scale { .. } => self.kubernetes(chosen, |_| Ok(Change::Scale)),
            ActionSpec::Exec {
                argv,
                timeout,
                allow_leading_dash,
                max_output_bytes,
                ..
            } => {
                let argv = exec::render_argv(argv, context, *allow_leading_dash)?;
                let target = chosen.rendered["target"]
                    .as_str()
                    .unwrap_or(name)
                    .to_owned();
                let env =
                    exec::incident_env(&alert.incident_id, &chosen.rule, severity, &alert.labels);
                Ok((
                    target,
                    Prepared::Exec(exec::ExecRequest {
                        argv,
                        env,
                        timeout: *timeout,
                        max_output_bytes: *max_output_bytes,
                    }),
                ))
            }
            ActionSpec::Http {
                method,
                url,
                headers,
                body,
                expect_status,
                timeout,
                ..
            } => {
                let url = http::render_url(url, context)?;
                let target = chosen.rendered["target"]
                    .as_str()
                    .unwrap_or(name)
                    .to_owned();
                let render = |source: &str| self.render_secret(source, context);
                let headers = headers
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), render(v)?)))
                    .collect::<Result<Vec<_>, String>>()?;
                Ok((
                    target,
                    Prepared::Http(http::HttpActionRequest {
                        method: method.clone(),
                        url,
                        headers,
                        body: render(body)?,
                        expect_status: expect_status.clone(),
                        timeout: *timeout,
                    }),
                ))
            }
        }
    }

    /// A Kubernetes action: the workload (its namespace allowed) first, then the change.
    fn kubernetes(
        &self,
        chosen: &ChosenAction,
        change: impl FnOnce(&Self) -> Result<Change, String>,
    ) -> Result<(String, Prepared), String> {
        let workload = Self::kubernetes_workload(&self.namespaces, chosen)?;
        let change = change(self)?;
        Ok((
            workload.target(),
            Prepared::Kubernetes(kube_actions::Request {
                workload,
                change,
                rendered: chosen.rendered.clone(),
            }),
        ))
    }

    /// Render a template for use: `secret("name")` gives the secret itself, which the
    /// redactor learns so that no output that echoes it is stored or logged as is.
    fn render_secret(&self, source: &str, context: &Value) -> Result<String, String> {
        let mut redactor = self.redactor.lock().unwrap_or_else(|p| p.into_inner());
        crate::redact::render(source, context, &self.secrets, &mut redactor).map(|r| r.value)
    }

    /// Scrub known secrets from text about to be stored or logged.
    fn scrub(&self, text: &str) -> String {
        let redactor = self.redactor.lock().unwrap_or_else(|p| p.into_inner());
        redactor.redact(text).0
    }

    async fn run(&self, prepared: &Prepared, key: &str) -> Outcome {
        match prepared {
            Prepared::Exec(request) => exec::run(request).await,
            Prepared::Http(request) => http::run(&self.http, request).await,
            Prepared::Kubernetes(request) => {
                kube_actions::run(&self.kubernetes, request, key, self.clock.now()).await
            }
        }
    }

    /// A request went out and the answer was lost: the kind reads its target back. Only
    /// Kubernetes actions can be read back; anything else stays `uncertain`.
    async fn settle(&self, prepared: &Prepared, key: &str, error: String) -> Outcome {
        match prepared {
            Prepared::Kubernetes(request) => {
                kube_actions::settle(&self.kubernetes, request, key, error).await
            }
            Prepared::Exec(_) | Prepared::Http(_) => Outcome::Unknown { error },
        }
    }
}

impl Mitigator {
    /// Revert the held changes whose last holder resolved and whose minimum hold passed:
    /// through the governor (a pause, the budget or a cooldown defers a revert, never drops
    /// it), and only if the value is still the one nightshift set; a human's change wins.
    pub async fn revert(&self, due: Vec<crate::store::DueRevert>) {
        for crate::store::DueRevert {
            hold_id: id,
            target,
            item,
            value,
            previous,
        } in due
        {
            let outcome = self.revert_one(id, &target, &item, &value, &previous).await;
            let (state, result) = match outcome {
                Ok(None) => (HoldFinish::Defer, None),
                Ok(Some((state, result))) => (HoldFinish::Settled(state), Some(result.to_string())),
                Err(error) => {
                    tracing::error!(hold = id, %target, %item, %error, "revert failed; escalate");
                    (
                        HoldFinish::Settled(HoldState::Failed),
                        Some(json!({"error": error}).to_string()),
                    )
                }
            };
            if state != HoldFinish::Defer {
                tracing::info!(hold = id, %target, %item, state = state.as_str(), "held change settled");
                self.metrics
                    .actions_total
                    .with_label_values(&["revert", state.as_str()])
                    .inc();
            }
            if let Err(error) = self.store.finish_hold(id, state, result).await {
                tracing::error!(%error, "cannot record the revert");
            }
        }
    }

    /// Judge actions whose verify window has passed; a mitigation that did not help is
    /// not repeated for its incident and is said so (log, metric) for the page. At most once a
    /// second: it goes through the store's writer.
    pub async fn verify_due(&self) {
        let now = self.clock.now_millis();
        {
            let mut last = self.last_verify.lock().unwrap_or_else(|p| p.into_inner());
            if now.saturating_sub(*last) < 1000 {
                return;
            }
            *last = now;
        }
        match self.store.verify_actions(now).await {
            Ok(judged) => {
                for crate::store::Verified {
                    action_id: id,
                    episode_id: episode,
                    action,
                    helped,
                } in judged
                {
                    let outcome = if helped { "helped" } else { "did_not_help" };
                    self.metrics
                        .actions_verified_total
                        .with_label_values(&[outcome])
                        .inc();
                    if helped {
                        tracing::info!(action_id = id, %episode, %action, "mitigation helped");
                    } else {
                        tracing::warn!(action_id = id, %episode, %action, "mitigation did not help; escalate, do not repeat");
                    }
                }
            }
            Err(error) => tracing::error!(%error, "cannot verify actions"),
        }
    }

    /// `Ok(None)`: deferred. `Ok(Some((state, result)))`: reverted or left alone.
    async fn revert_one(
        &self,
        id: i64,
        target: &str,
        item: &str,
        value: &str,
        previous: &str,
    ) -> Result<Option<(HoldState, Value)>, String> {
        let workload = Workload::from_target(target)?;
        let kind = kube_actions::revert_kind(item);
        let planned = self
            .store
            .plan_action(ActionPlan {
                key: format!("revert|{id}"),
                episode_id: String::new(),
                fingerprint: String::new(),
                rule: "(revert on resolve)".to_owned(),
                action: format!("revert {item}"),
                kind: kind.to_owned(),
                target: target.to_owned(),
                shadow: false,
                cooldown: duration_millis(self.min_hold),
                arguments: json!({"item": item, "restore": serde_json::from_str::<Value>(previous).unwrap_or_default()}).to_string(),
                // A hold exists only because its change was made for real: undoing it is
                // not a new effect, so it goes ahead after a switch to dry-run too (a pause,
                // the budget or a cooldown still defer it).
                mode: Mode::Enforce,
                limits: self.limits,
                hold_items: Vec::new(),
                defer_on_skip: true,
                defer_in_flight: false,
                verify_window: 0,
            })
            .await
            .map_err(|e| e.to_string())?;
        if planned.state == ActionState::Deferred {
            return Ok(None);
        }
        if planned.verdict != VerdictKind::Run {
            // Dry-run: recorded as what would have been reverted.
            return Ok(Some((HoldState::Reverted, json!({"dry_run": true}))));
        }
        if !self
            .store
            .update_action(planned.id, ActionState::Started, None)
            .await
            .map_err(|e| e.to_string())?
        {
            return Ok(Some((
                HoldState::Failed,
                json!({"error": "the revert was already started"}),
            )));
        }
        let reverted = kube_actions::revert(
            &self.kubernetes,
            &workload,
            item,
            value,
            previous,
            &format!("revert|{id}"),
        )
        .await?;
        let outcome = match reverted {
            kube_actions::Reverted::Ran(outcome) => outcome,
            kube_actions::Reverted::Left(found) => {
                self.store
                    .update_action(
                        planned.id,
                        ActionState::Skipped,
                        Some(json!({"left": "changed since"}).to_string()),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(Some((HoldState::Left, found)));
            }
        };
        let state = match &outcome {
            Outcome::Done { .. } => ActionState::Done,
            Outcome::Unknown { .. } => ActionState::Uncertain,
            _ => ActionState::Failed,
        };
        let result = serde_json::to_value(&outcome).unwrap_or_default();
        self.store
            .update_action(planned.id, state, Some(result.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        Ok(Some((
            if state == ActionState::Done {
                HoldState::Reverted
            } else {
                HoldState::Failed
            },
            result,
        )))
    }

    /// After a restart: actions marked started with no recorded result are settled by
    /// reading their target back, or marked `uncertain`; none is run again.
    pub async fn recover(&self) {
        let open = match self.store.started_actions().await {
            Ok(open) => open,
            Err(error) => {
                tracing::error!(%error, "cannot read actions left started");
                return;
            }
        };
        for crate::store::StartedAction {
            id,
            kind,
            target,
            key,
            arguments,
            state,
        } in open
        {
            let arguments: Value = serde_json::from_str(&arguments).unwrap_or_default();
            let lost = "nightshift stopped while it ran".to_owned();
            let outcome = match Workload::from_target(&target) {
                // Planned but never started: nothing ran. Recorded as not applied (the
                // incident is escalated), so the target is not left "in flight" forever.
                _ if state == ActionState::Planned => Outcome::NotApplied {
                    error: "nightshift stopped before the action started; it did not run"
                        .to_owned(),
                    retryable: false,
                },
                Ok(workload) if kind.starts_with("kubernetes.") => {
                    kube_actions::settle_stored(
                        &self.kubernetes,
                        &workload,
                        &kind,
                        &key,
                        &arguments,
                        lost,
                    )
                    .await
                }
                _ => Outcome::Unknown {
                    error: format!("{lost}; the outcome of a {kind} action cannot be read back"),
                },
            };
            let state = match &outcome {
                Outcome::Done { .. } => ActionState::Done,
                Outcome::NotApplied { .. } | Outcome::Failed { .. } => ActionState::Failed,
                Outcome::Unknown { .. } => ActionState::Uncertain,
            };
            tracing::warn!(action_id = id, %target, state = state.as_str(), "settled an action left started by a crash");
            let result = serde_json::to_string(&outcome).unwrap_or_default();
            if let Err(error) = self.store.update_action(id, state, Some(result)).await {
                tracing::error!(%error, "cannot record the settled action");
            }
            self.metrics
                .actions_total
                .with_label_values(&[kind.as_str(), state.as_str()])
                .inc();
        }
    }
}
