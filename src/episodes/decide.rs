//! decide: the classify → probe → decide stage for one alert, shared by the worker (live
//! incidents) and `explain` (a payload on the command line). Classification and the branch
//! walk are pure (`rules`); this module adds the probes, run concurrently.

use std::collections::BTreeMap;

use crate::probes::{ProbeResult, Prober};
use crate::rules::{AlertInput, Decision, RuleSet};

/// Probe results supplied instead of running the probe (explain's `--probe`, tests), keyed
/// like results: `runbook/name`.
pub type GivenProbes = BTreeMap<String, ProbeResult>;

/// Classify `alert`, run the probes its rules read (unless given), and decide.
pub async fn decide(
    rules: &RuleSet,
    alert: &AlertInput,
    prober: &Prober,
    given: &GivenProbes,
) -> Decision {
    let classification = rules.classify(&alert.labels, &alert.annotations);
    let definitions = rules.probes_for(&classification);
    let context = alert.template_context(&BTreeMap::new(), "", classification.severity);
    let runs = definitions.iter().map(|definition| async {
        if let Some(result) = given.get(&definition.key) {
            return (definition.key.clone(), result.clone());
        }
        let result = match definition.render(&context) {
            Ok(request) => {
                prober
                    .probe(&request, definition.timeout, definition.cache)
                    .await
            }
            Err(error) => ProbeResult::failure(
                definition.request.kind(),
                format!("cannot render the probe's target: {error}"),
            ),
        };
        (definition.key.clone(), result)
    });
    let results: BTreeMap<String, ProbeResult> = futures_util::future::join_all(runs)
        .await
        .into_iter()
        .collect();
    rules.decide(&classification, alert, &results)
}
