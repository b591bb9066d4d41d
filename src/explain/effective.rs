//! What would actually happen with the running configuration, beside what the rules ask for:
//! each action as the act stage would treat it (refused for its namespace, dry-run, shadow, or
//! run), and where the page would go. The judgements are the daemon's own: the governor's
//! [`governor::judge`] and delivery's [`DeliverySettings::routing_key_for`]; explain only
//! supplies the facts it can know without the store (no pause, nothing in flight, no cooldown
//! or budget spent).

use serde::Serialize;

use crate::act::governor::{self, Facts, Limits, Mode, Proposal, Verdict};
use crate::clock::duration_millis;
use crate::config::{Config, OpenEndpoint, PagingPolicy};
use crate::page::notify::deliver::DeliverySettings;
use crate::rules::action::{ActionSpec, Common};
use crate::rules::{ChosenAction, Decision, RuleSet};

/// The configuration as the act and paging stages would use it.
pub struct Effective {
    mode: Mode,
    /// Why the configured mode is overruled, if it is.
    mode_note: Option<String>,
    limits: Limits,
    namespaces: Vec<String>,
    delivery: DeliverySettings,
}

/// What would happen to one action.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionEffect {
    /// `refused`, `dry_run`, `shadow`, `run`, or the governor's skip (`budget`, …).
    pub state: &'static str,
    pub sentence: String,
    /// The target as the governor would see it (`deployment/NAMESPACE/NAME`, or the action's).
    pub target: Option<String>,
    /// The governor's verdict; absent when the act stage refuses the action before judging.
    pub verdict: Option<Verdict>,
}

/// Where the page would go.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PageEffect {
    /// `not_paged`, `pagerduty`, `fallback` or `no_destination`.
    pub state: &'static str,
    pub sentence: String,
    /// The PagerDuty routing key's name (never the key).
    pub routing_key: Option<String>,
    /// `[paging] fallback` notifiers, which get a page PagerDuty does not take.
    pub fallback: Vec<String>,
    /// The severity's `notify` notifiers, which get its pages besides PagerDuty.
    pub notify: Vec<String>,
}

impl Effective {
    /// Read the settings that bear on actions and pages. Delivery's settings read the routing
    /// key and notifier URL files the configuration names (`config::load` has checked them);
    /// only names are ever shown.
    pub fn from_config(config: &Config) -> Result<Effective, String> {
        let (mode, mode_note) = mode_of(config);
        Ok(Effective {
            mode,
            mode_note,
            limits: Limits {
                hourly_budget: config.actions.hourly_budget,
            },
            namespaces: config.kubernetes.namespaces.clone(),
            delivery: DeliverySettings::from_config(config)?,
        })
    }

    /// The effective mode in words, with why it differs from the configuration.
    pub fn mode(&self) -> (Mode, Option<&str>) {
        (self.mode, self.mode_note.as_deref())
    }

    /// What the act stage would do with `chosen` if the incident opened now.
    pub fn action(&self, set: &RuleSet, incident_id: &str, chosen: &ChosenAction) -> ActionEffect {
        let refused = |why: String| ActionEffect {
            state: "refused",
            sentence: format!("refused: {why}; the daemon refuses it whatever the mode"),
            target: None,
            verdict: None,
        };
        let Some(rule) = set.rules.iter().find(|rule| rule.name == chosen.rule) else {
            return refused(format!("rule {} is not loaded", chosen.rule));
        };
        let Some(spec) = set.file_of(rule).actions.get(&chosen.name) else {
            return refused(format!("action {} is not defined", chosen.name));
        };
        let target = match self.target(spec, chosen) {
            Ok(target) => target,
            Err(why) => return refused(why),
        };
        let proposal = Proposal {
            incident_id: incident_id.to_owned(),
            target: target.clone(),
            kind: spec.kind().to_owned(),
            shadow: rule.shadow,
            cooldown: duration_millis(Common::of(spec).cooldown),
            already_held: false,
        };
        let now = chrono::Utc::now().timestamp_millis();
        let verdict = governor::judge(&proposal, &Facts::default(), self.mode, self.limits, now);
        let (state, sentence) = match &verdict {
            Verdict::Dry { .. } if self.mode == Mode::DryRun => (
                "dry_run",
                match &self.mode_note {
                    Some(note) => format!("dry-run: would not run; {note}"),
                    None => {
                        "dry-run: would not run; set [actions] mode = \"enforce\" to act".to_owned()
                    }
                },
            ),
            Verdict::Dry { why, .. } => (
                "shadow",
                format!(
                    "shadow: would not run ({why}); remove `shadow = true` from rule {} to act",
                    rule.name
                ),
            ),
            Verdict::Run => (
                "run",
                format!(
                    "would run on {target} (enforce mode); the pause, in-flight, cooldown and \
                     hourly budget checks are made against the store when it happens"
                ),
            ),
            Verdict::Hold => ("hold", format!("would add a hold on {target}")),
            Verdict::Skip(skip) => (
                skip.label(),
                format!("would not run: the governor skips it ({})", skip.label()),
            ),
        };
        ActionEffect {
            state,
            sentence,
            target: Some(target),
            verdict: Some(verdict),
        }
    }

    /// The target as the act stage builds it, refusing what it refuses before judging.
    fn target(&self, spec: &ActionSpec, chosen: &ChosenAction) -> Result<String, String> {
        match spec {
            ActionSpec::RolloutRestart { .. }
            | ActionSpec::SetEnv { .. }
            | ActionSpec::Scale { .. } => {
                // The act stage's own check.
                Ok(
                    crate::act::mitigate::Mitigator::kubernetes_workload(&self.namespaces, chosen)?
                        .target(),
                )
            }
            ActionSpec::Exec { .. } | ActionSpec::Http { .. } => Ok(chosen.rendered["target"]
                .as_str()
                .unwrap_or(&chosen.name)
                .to_owned()),
        }
    }

    /// Where the page of `decision` would go: its rule's or severity's PagerDuty routing key,
    /// the severity's extra notifiers, and the fallback for a page PagerDuty does not take.
    pub fn page(&self, set: &RuleSet, decision: &Decision) -> PageEffect {
        let severity = decision.severity;
        let settings = set.severities.get(severity.level());
        let notify = settings.notify.clone();
        let fallback = self.delivery.fallback.clone();
        if settings.paging == PagingPolicy::Never {
            return PageEffect {
                state: "not_paged",
                sentence: format!(
                    "not paged: {}'s paging is never (recorded and reported only)",
                    severity.as_str()
                ),
                routing_key: None,
                fallback,
                notify,
            };
        }
        let rule = decision
            .classification
            .matched
            .first()
            .map_or("default", |matched| matched.rule.as_str());
        let key = self.delivery.routing_key_for(rule, severity.as_str());
        // The key's name, for people: the key itself is a secret.
        let routing_key = key.and_then(|key| {
            self.delivery
                .routing_keys
                .iter()
                .find(|(_, value)| **value == key)
                .map(|(name, _)| name.clone())
        });
        let also = if notify.is_empty() {
            String::new()
        } else {
            format!("; also to notifier(s) {}", notify.join(", "))
        };
        let (state, sentence) = match (&routing_key, fallback.is_empty(), notify.is_empty()) {
            (Some(name), _, _) => (
                "pagerduty",
                format!("would go to PagerDuty with routing key {name:?}{also}"),
            ),
            (None, false, _) => (
                "fallback",
                format!(
                    "no routing key: PagerDuty cannot take it, so it goes to the fallback \
                     notifier(s) {}{also}",
                    fallback.join(", ")
                ),
            ),
            (None, true, false) => (
                "fallback",
                format!(
                    "no routing key: PagerDuty cannot take it; only notifier(s) {} get it",
                    notify.join(", ")
                ),
            ),
            (None, true, true) => (
                "no_destination",
                "no routing key: this page would reach nobody (set pagerduty.routing_keys and \
                 pagerduty.default_routing_key, or [paging] fallback)"
                    .to_owned(),
            ),
        };
        PageEffect {
            state,
            sentence,
            routing_key,
            fallback,
            notify,
        }
    }
}

/// The mode actions run in: the daemon enforces only when configured to and the webhook has a
/// credential (it generates one unless `auth.allow_unauthenticated` opens the webhook), as in
/// `daemon::effective_mode`.
fn mode_of(config: &Config) -> (Mode, Option<String>) {
    let ingest_credential = config.auth.configures(OpenEndpoint::Webhook)
        || !config
            .auth
            .allow_unauthenticated
            .contains(&OpenEndpoint::Webhook);
    crate::daemon::mode_for(config.actions.mode, ingest_credential)
}
