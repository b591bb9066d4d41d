//! mitigate: the act stage. For each action a decision chose, build the exact request
//! (rendered, checked), pass it through the governor (inside the store's transaction), mark it
//! started durably, run it, settle an unknown outcome by reading the target back, and record
//! the result. Every action carries an idempotency key (incident, rule, action, target): one
//! that was planned before is never planned again, and one found `started` after a crash is
//! settled by read-back or marked `uncertain`, never run again.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::act::actions::kubernetes::{self as kube_actions, Workload};
use crate::act::actions::{Outcome, exec, http};
use crate::act::governor::VerdictKind;
use crate::act::governor::{Limits, Mode};
use crate::clock::{SharedClock, duration_millis};
use crate::probes::kubernetes::ClientSlot;
use crate::rules::action::{ActionSpec, Common};
use crate::rules::{AlertInput, ChosenAction, RuleSet};
use crate::store::{ActionPlan, ActionState, HeldValue, HoldFinish, HoldState, Store};
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

/// An action ready to run: its target and the request for its executor.
enum Prepared {
    Kubernetes {
        workload: Workload,
        spec: ActionSpec,
        rendered: Value,
        /// set_env values, rendered for use (secrets included); never recorded.
        env_values: std::collections::BTreeMap<String, String>,
    },
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
        let hold_items = if common.revert_on_resolve {
            hold_items(&spec, &chosen.rendered)
        } else {
            Vec::new()
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
        if let (Prepared::Kubernetes { .. }, Some(evidence)) = (&prepared, &self.evidence) {
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
                        previous: previous_of(&held.item, detail),
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
        let text = |field: &str| {
            chosen.rendered[field]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{field} did not render"))
        };
        let namespace = text("namespace")?;
        if !namespaces.contains(&namespace) {
            let allowed = if namespaces.is_empty() {
                "it is empty, which allows none".to_owned()
            } else {
                format!("it allows {namespaces:?}")
            };
            return Err(format!(
                "namespace {namespace:?} is not in kubernetes.namespaces ({allowed})"
            ));
        }
        Workload::parse(&namespace, &text("workload")?)
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
            ActionSpec::RolloutRestart { .. }
            | ActionSpec::SetEnv { .. }
            | ActionSpec::Scale { .. } => {
                let workload = Self::kubernetes_workload(&self.namespaces, chosen)?;
                let mut env_values = std::collections::BTreeMap::new();
                if let ActionSpec::SetEnv { env, .. } = spec {
                    for (name, source) in env {
                        env_values.insert(name.clone(), self.render_secret(source, context)?);
                    }
                }
                Ok((
                    workload.target(),
                    Prepared::Kubernetes {
                        workload,
                        spec: spec.clone(),
                        rendered: chosen.rendered.clone(),
                        env_values,
                    },
                ))
            }
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
            Prepared::Kubernetes {
                workload,
                spec,
                rendered,
                env_values,
            } => {
                let client = match self.kubernetes.client().await {
                    Ok(client) => client,
                    Err(error) => {
                        return Outcome::NotApplied {
                            error,
                            retryable: true,
                        };
                    }
                };
                match spec {
                    ActionSpec::RolloutRestart { .. } => {
                        kube_actions::rollout_restart(
                            &client,
                            workload,
                            &action_key(key),
                            self.clock.now(),
                        )
                        .await
                    }
                    ActionSpec::SetEnv {
                        containers, remove, ..
                    } => {
                        let set = env_values.clone();
                        kube_actions::set_env(
                            &client,
                            workload,
                            containers,
                            &set,
                            remove,
                            &action_key(key),
                        )
                        .await
                    }
                    ActionSpec::Scale { .. } => {
                        let replicas = match &rendered["replicas"] {
                            Value::Number(n) => n.as_i64(),
                            Value::String(s) => s.trim().parse().ok(),
                            _ => None,
                        };
                        match replicas.and_then(|n| i32::try_from(n).ok()) {
                            Some(replicas) => {
                                kube_actions::scale(&client, workload, replicas, &action_key(key))
                                    .await
                            }
                            None => Outcome::Failed {
                                error: format!("replicas {} is not a number", rendered["replicas"]),
                            },
                        }
                    }
                    _ => Outcome::Failed {
                        error: "not a Kubernetes action".to_owned(),
                    },
                }
            }
        }
    }

    /// A request went out and the answer was lost: read the target back. Only a rollout
    /// restart carries a mark that proves it landed; anything else stays `uncertain`.
    async fn settle(&self, prepared: &Prepared, key: &str, error: String) -> Outcome {
        let Prepared::Kubernetes {
            workload,
            spec,
            rendered,
            env_values,
        } = prepared
        else {
            return Outcome::Unknown { error };
        };
        let expected = Expected::of(spec, rendered, env_values);
        self.settle_kubernetes(workload, key, &expected, error)
            .await
    }

    /// Read the target back: the change present → done; absent → not applied (escalated,
    /// not retried blindly); anything else stays unknown.
    async fn settle_kubernetes(
        &self,
        workload: &Workload,
        key: &str,
        expected: &Expected,
        error: String,
    ) -> Outcome {
        let client = match self.kubernetes.client().await {
            Ok(client) => client,
            Err(read) => {
                return Outcome::Unknown {
                    error: format!("{error}; cannot read back: {read}"),
                };
            }
        };
        let present = match expected {
            Expected::Restart => kube_actions::read_restart_key(&client, workload)
                .await
                .map(|found| Some(found.as_deref() == Some(action_key(key).as_str()))),
            Expected::Replicas(replicas) => kube_actions::read_replicas(&client, workload)
                .await
                .map(|current| Some(i64::from(current) == *replicas)),
            Expected::Env { containers, values } => {
                let names: Vec<String> = values.keys().cloned().collect();
                kube_actions::read_env(&client, workload, containers, &names)
                    .await
                    .map(|current| {
                        let matches: Vec<bool> = current
                            .values()
                            .flat_map(|found| {
                                values.iter().map(move |(name, want)| {
                                    found.get(name).cloned().flatten() == *want
                                })
                            })
                            .collect();
                        if matches.iter().all(|m| *m) {
                            Some(true)
                        } else if matches.iter().all(|m| !*m) {
                            Some(false)
                        } else {
                            None
                        }
                    })
            }
            Expected::Unknowable => Ok(None),
        };
        match present {
            Ok(Some(true)) => Outcome::Done {
                detail: json!({"settled_by_read_back": true, "lost_answer": error}),
            },
            Ok(Some(false)) => Outcome::NotApplied {
                error: format!("{error}; read-back shows the change absent"),
                retryable: false,
            },
            Ok(None) => Outcome::Unknown {
                error: format!("{error}; read-back cannot tell"),
            },
            Err(read) => Outcome::Unknown {
                error: format!("{error}; read-back failed: {read}"),
            },
        }
    }
}

/// What a Kubernetes action leaves behind when it took effect.
enum Expected {
    Restart,
    Replicas(i64),
    /// Per name: the value it sets, or `None` for a removal, on these containers.
    Env {
        containers: Vec<String>,
        values: std::collections::BTreeMap<String, Option<String>>,
    },
    Unknowable,
}

impl Expected {
    fn of(
        spec: &ActionSpec,
        rendered: &Value,
        env_values: &std::collections::BTreeMap<String, String>,
    ) -> Expected {
        match spec {
            ActionSpec::RolloutRestart { .. } => Expected::Restart,
            ActionSpec::Scale { .. } => Self::from_arguments("kubernetes.scale", rendered),
            ActionSpec::SetEnv {
                containers, remove, ..
            } => {
                let mut values: std::collections::BTreeMap<String, Option<String>> = env_values
                    .iter()
                    .map(|(k, v)| (k.clone(), Some(v.clone())))
                    .collect();
                for name in remove {
                    values.insert(name.clone(), None);
                }
                Expected::Env {
                    containers: containers.clone(),
                    values,
                }
            }
            _ => Expected::Unknowable,
        }
    }

    /// From the arguments stored with an action (after a crash). A value shown as a secret
    /// placeholder cannot be compared.
    fn from_arguments(kind: &str, arguments: &Value) -> Expected {
        match kind {
            "kubernetes.rollout_restart" => Expected::Restart,
            "kubernetes.scale" => match &arguments["replicas"] {
                Value::Number(n) => n.as_i64().map_or(Expected::Unknowable, Expected::Replicas),
                Value::String(text) => text
                    .trim()
                    .parse()
                    .map_or(Expected::Unknowable, Expected::Replicas),
                _ => Expected::Unknowable,
            },
            "kubernetes.set_env" => {
                let mut values = std::collections::BTreeMap::new();
                for (field, value) in arguments.as_object().into_iter().flatten() {
                    if let Some(name) = field.strip_prefix("env.") {
                        match value.as_str() {
                            Some(text) if !text.contains("<secret:") => {
                                values.insert(name.to_owned(), Some(text.to_owned()));
                            }
                            _ => return Expected::Unknowable,
                        }
                    }
                }
                for name in arguments["remove"].as_array().into_iter().flatten() {
                    if let Some(name) = name.as_str() {
                        values.insert(name.to_owned(), None);
                    }
                }
                if values.is_empty() {
                    // Nothing to compare (a revert records what it restores differently).
                    return Expected::Unknowable;
                }
                let containers = arguments["containers"]
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .filter_map(|c| c.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_else(|| vec!["*".to_owned()]);
                Expected::Env { containers, values }
            }
            _ => Expected::Unknowable,
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
        let workload = workload_of(target)?;
        let kind = if item == "replicas" {
            "kubernetes.scale"
        } else {
            "kubernetes.set_env"
        };
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
        let client = self.kubernetes.client().await?;
        let ours: Value = serde_json::from_str(value).unwrap_or_default();
        let previous: Value = serde_json::from_str(previous).unwrap_or_default();
        let key = action_key(&format!("revert|{id}"));
        let outcome = if item == "replicas" {
            let current = kube_actions::read_replicas(&client, &workload).await?;
            if json!(current) != ours {
                self.store
                    .update_action(
                        planned.id,
                        ActionState::Skipped,
                        Some(json!({"left": "changed since"}).to_string()),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(Some((
                    HoldState::Left,
                    json!({"current": current, "ours": ours}),
                )));
            }
            let replicas = previous
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or("no previous replica count")?;
            kube_actions::scale(&client, &workload, replicas, &key).await
        } else {
            let name = item.trim_start_matches("env:");
            let containers: Vec<String> = previous
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            let current =
                kube_actions::read_env(&client, &workload, &containers, &[name.to_owned()]).await?;
            let changed = current.values().any(|values| {
                let now = values.get(name).cloned().flatten();
                json!(now) != ours
            });
            if changed {
                self.store
                    .update_action(
                        planned.id,
                        ActionState::Skipped,
                        Some(json!({"left": "changed since"}).to_string()),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(Some((
                    HoldState::Left,
                    json!({"current": current, "ours": ours}),
                )));
            }
            let mut last = Outcome::Done { detail: json!({}) };
            for (container, before) in previous.as_object().into_iter().flatten() {
                let one = [container.clone()];
                last = match before {
                    Value::String(text) => {
                        let set = [(name.to_owned(), text.clone())].into();
                        kube_actions::set_env(&client, &workload, &one, &set, &[], &key).await
                    }
                    Value::Null => {
                        kube_actions::set_env(
                            &client,
                            &workload,
                            &one,
                            &Default::default(),
                            &[name.to_owned()],
                            &key,
                        )
                        .await
                    }
                    other => Outcome::Failed {
                        error: format!(
                            "{name} came from {other} before; it cannot be restored automatically"
                        ),
                    },
                };
                if !matches!(last, Outcome::Done { .. }) {
                    break;
                }
            }
            last
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
        let store = self.store.clone();
        let open =
            match tokio::task::spawn_blocking(move || store.reader()?.started_actions()).await {
                Ok(Ok(open)) => open,
                Ok(Err(error)) => {
                    tracing::error!(%error, "cannot read actions left started");
                    return;
                }
                Err(_) => return,
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
            let outcome = match workload_of(&target) {
                // Planned but never started: nothing ran. Recorded as not applied (the
                // incident is escalated), so the target is not left "in flight" forever.
                _ if state == ActionState::Planned => Outcome::NotApplied {
                    error: "nightshift stopped before the action started; it did not run"
                        .to_owned(),
                    retryable: false,
                },
                Ok(workload) if kind.starts_with("kubernetes.") => {
                    let expected = Expected::from_arguments(&kind, &arguments);
                    self.settle_kubernetes(&workload, &key, &expected, lost)
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

/// What an action reverted on resolve holds: each item and the value it sets as JSON.
fn hold_items(spec: &ActionSpec, rendered: &Value) -> Vec<HeldValue> {
    let held = |item: String, value: String| HeldValue { item, value };
    match spec {
        ActionSpec::SetEnv { env, remove, .. } => env
            .keys()
            .map(|name| {
                let value = rendered[format!("env.{name}")].clone();
                held(format!("env:{name}"), value.to_string())
            })
            .chain(
                remove
                    .iter()
                    .map(|name| held(format!("env:{name}"), "null".to_owned())),
            )
            .collect(),
        ActionSpec::Scale { .. } => {
            let replicas = match &rendered["replicas"] {
                Value::String(text) => text
                    .trim()
                    .parse::<i64>()
                    .map(|n| json!(n))
                    .unwrap_or(Value::Null),
                other => other.clone(),
            };
            vec![held("replicas".to_owned(), replicas.to_string())]
        }
        _ => Vec::new(),
    }
}

/// The value before the change, from an executor's `Done` detail.
fn previous_of(item: &str, detail: &Value) -> String {
    if item == "replicas" {
        return detail["previous_replicas"].to_string();
    }
    let name = item.trim_start_matches("env:");
    let per_container: serde_json::Map<String, Value> = detail["previous"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(container, values)| (container.clone(), values[name].clone()))
        .collect();
    Value::Object(per_container).to_string()
}

/// `deployment/NAMESPACE/NAME` back to a workload.
fn workload_of(target: &str) -> Result<Workload, String> {
    let mut parts = target.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(kind), Some(namespace), Some(name)) => {
            Workload::parse(namespace, &format!("{kind}/{name}"))
        }
        _ => Err(format!("unreadable target {target}")),
    }
}

/// The value written into `nightshift.io/action-key`: a digest of the idempotency key, since
/// annotation values should stay short and free of label text.
pub fn action_key(key: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(key.as_bytes())[..16])
}
