//! explain: what nightshift would do with a webhook payload, with no side effects. Probes run
//! live unless a result is given with `--probe NAME=JSON`; actions are rendered, never run.
//! Beside what the rules ask for, it says what the running configuration would make of it
//! (`effective`): dry-run, shadow or refused actions, and where the page would go. The payload
//! is a webhook body, a bundle's `alert.json`, or `nightshift incidents show ID --json`
//! (`payload`).

mod effective;
mod payload;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

use crate::bundle::request::CollectorRequest;
use crate::episodes::decide::{self, GivenProbes};
use crate::kubernetes::ClientSlot;
use crate::probes::{ProbeSettings, Prober};
use crate::rules::{self, AlertInput, Decision, LoadOptions, RuleSet};

/// A decision's bundle plan: the rendered collectors, and those that could not be rendered
/// (name, why).
type Plan = Vec<Result<CollectorRequest, (String, String)>>;

/// One alert explained: the decision, its bundle plan, and what the configuration makes of it.
struct Explained {
    input: AlertInput,
    decision: Decision,
    plan: Plan,
    /// One per `decision.actions`, in order.
    actions: Vec<effective::ActionEffect>,
    page: effective::PageEffect,
}

/// `config` is loaded by the CLI (`cli::load`), as for every other subcommand.
pub fn run(
    config: crate::config::Config,
    payload: &Path,
    probe_args: &[String],
    json: bool,
) -> anyhow::Result<i32> {
    let options = LoadOptions::from_config(&config);
    let set = match rules::load_dir(&config.rules.dir, &options) {
        Ok(set) => set,
        Err(errors) => {
            for error in errors {
                eprintln!("{error}");
            }
            return Ok(1);
        }
    };
    let body =
        std::fs::read(payload).with_context(|| format!("cannot read {}", payload.display()))?;
    let (shape, notification) =
        payload::read(&body).map_err(|error| anyhow::anyhow!("{}: {error}", payload.display()))?;
    let effective = effective::Effective::from_config(&config)
        .map_err(|error| anyhow::anyhow!("cannot read the paging configuration: {error}"))?;
    let given = given_probes(&set, probe_args)?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let prober = Prober::with_http(
        ProbeSettings {
            prometheus_urls: config.prometheus.urls.clone(),
            kubernetes_namespaces: config.kubernetes.namespaces.clone(),
        },
        ClientSlot::new(&config.kubernetes),
        &config.http,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let now = chrono::Utc::now();
    let mut explained = Vec::new();
    for alert in notification.alerts {
        let input = AlertInput {
            incident_id: crate::episodes::reconcile::episode_id(
                &alert.fingerprint,
                alert.starts_at,
            ),
            age_seconds: (now - alert.starts_at).num_seconds().max(0),
            status: alert.status.as_str().to_owned(),
            starts_at: crate::episodes::reconcile::canonical_time(alert.starts_at),
            fingerprint: alert.fingerprint,
            generator_url: alert.generator_url,
            labels: alert.labels,
            annotations: alert.annotations,
        };
        let decision = runtime.block_on(decide::decide(&set, &input, &prober, &given));
        // The bundle plan as if the incident opened now.
        let plan = set.collector_requests(&decision, &input, chrono::Utc::now().timestamp_millis());
        let actions: Vec<effective::ActionEffect> = decision
            .actions
            .iter()
            .map(|chosen| effective.action(&set, &input.incident_id, chosen))
            .collect();
        let page = effective.page(&set, &decision);
        explained.push(Explained {
            input,
            decision,
            plan,
            actions,
            page,
        });
    }
    let (mode, mode_note) = effective.mode();
    if json {
        let out: Vec<serde_json::Value> = explained
            .iter()
            .map(|explained| {
                let Explained {
                    input,
                    decision,
                    plan,
                    actions,
                    page,
                } = explained;
                let bundle: Vec<&CollectorRequest> =
                    plan.iter().filter_map(|r| r.as_ref().ok()).collect();
                let errors: Vec<serde_json::Value> = plan
                    .iter()
                    .filter_map(|r| r.as_ref().err())
                    .map(|(name, error)| serde_json::json!({"name": name, "error": error}))
                    .collect();
                serde_json::json!({
                    "incident_id": input.incident_id,
                    "labels": input.labels,
                    "decision": decision,
                    "given_probes": given.keys().collect::<Vec<_>>(),
                    "bundle": bundle,
                    "bundle_errors": errors,
                    "payload_shape": shape,
                    "effective": {
                        "mode": mode,
                        "mode_note": mode_note,
                        "actions": decision.actions.iter().zip(actions).map(|(chosen, effect)| {
                            serde_json::json!({
                                "name": chosen.name,
                                "rule": chosen.rule,
                                "kind": chosen.kind,
                                "effective": effect,
                            })
                        }).collect::<Vec<_>>(),
                        "page": {"effective": page},
                    },
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("payload   {} ({})", payload.display(), shape.describe());
        let mode = match (mode, mode_note) {
            (crate::act::governor::Mode::Enforce, _) => {
                "enforce: actions the governor allows are carried out".to_owned()
            }
            (crate::act::governor::Mode::DryRun, Some(note)) => format!("dry-run ({note})"),
            (crate::act::governor::Mode::DryRun, None) => "dry-run: nothing is changed".to_owned(),
        };
        println!("mode      {mode}\n");
        for explained in &explained {
            print!("{}", render(&set, explained, &given));
        }
    }
    Ok(0)
}

/// `NAME=JSON` arguments as probe results, over each probe kind's sample.
fn given_probes(set: &RuleSet, args: &[String]) -> anyhow::Result<GivenProbes> {
    let mut given = BTreeMap::new();
    for arg in args {
        let (name, text) = arg
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--probe {arg:?}: expected NAME=JSON"))?;
        // NAME is a probe's name in any file, or runbook/name for one file's.
        let definitions: Vec<_> = set
            .files
            .iter()
            .flat_map(|file| file.probes.values())
            .filter(|definition| definition.key == name || definition.name == name)
            .collect();
        if definitions.is_empty() {
            anyhow::bail!("--probe {name}: no rule file defines a probe {name:?}");
        }
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|error| anyhow::anyhow!("--probe {name}: invalid JSON: {error}"))?;
        for definition in definitions {
            let result = rules::testing::result_from(&definition.request, value.clone())
                .map_err(|error| anyhow::anyhow!("--probe {name}: {error}"))?;
            given.insert(definition.key.clone(), result);
        }
    }
    Ok(given)
}

fn render(set: &RuleSet, explained: &Explained, given: &GivenProbes) -> String {
    let Explained {
        input,
        decision,
        plan,
        actions,
        page: page_effect,
    } = explained;
    let mut out = String::new();
    let labels: Vec<String> = input
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    let _ = writeln!(out, "alert {{{}}}", labels.join(", "));
    let _ = writeln!(out, "  incident  {}", input.incident_id);
    if decision.classification.matched.is_empty() {
        let _ = writeln!(out, "  rule      (built-in default rule)");
    }
    for matched in &decision.classification.matched {
        let line = set.rules[matched.index].line;
        let _ = writeln!(
            out,
            "  rule      {} ({}:{line})",
            matched.rule, matched.file
        );
        for evidence in &matched.evidence {
            let _ = writeln!(
                out,
                "    matched {} (value {:?})",
                evidence.matcher, evidence.value
            );
        }
    }
    let _ = writeln!(
        out,
        "  severity  {} ({})",
        decision.severity.as_str(),
        decision.classification.reason
    );
    for (name, result) in &decision.probes {
        let origin = if given.contains_key(name) {
            "given"
        } else {
            "live"
        };
        let state = if result.ok {
            let fields: Vec<String> = result
                .fields
                .iter()
                .filter(|(_, v)| !v.is_array() && !v.is_object())
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!("ok {}", fields.join(" "))
        } else {
            format!("FAILED: {}", result.error)
        };
        let _ = writeln!(
            out,
            "  probe     {name}: {state} ({origin}, {} ms)",
            result.latency_ms
        );
    }
    for rule in &decision.rules {
        for evaluation in &rule.evaluations {
            let _ = writeln!(
                out,
                "    when    {} → {} ({})",
                evaluation.when, evaluation.result, evaluation.branch
            );
        }
        let _ = writeln!(
            out,
            "  branch    {} ({}, rule {})",
            rule.branch, rule.branch_kind, rule.rule
        );
    }
    if decision.actions.is_empty() {
        let _ = writeln!(out, "  actions   none");
    }
    for (action, effect) in decision.actions.iter().zip(actions) {
        let _ = writeln!(
            out,
            "  action    {} ({}): {}",
            action.name, action.kind, action.rendered
        );
        let _ = writeln!(out, "    effective {}", effect.sentence);
    }
    if !decision.note.is_empty() {
        let _ = writeln!(out, "  note      {}", decision.note);
    }
    let _ = writeln!(out, "  summary   {}", decision.summary);
    let page = &decision.page;
    let _ = writeln!(
        out,
        "  page      {} {} ({}; {}, respond within {})",
        page.severity.as_str(),
        page.pagerduty_severity,
        page.meaning,
        page.policy,
        page.respond_within
    );
    let _ = writeln!(out, "    effective {}", page_effect.sentence);
    render_plan(&mut out, plan);
    out.push('\n');
    out
}

/// The bundle section: what every bundle holds, then each collector with its rendered request.
fn render_plan(out: &mut String, plan: &Plan) {
    if plan.is_empty() {
        let _ = writeln!(
            out,
            "  bundle    alert, decision trace and timeline; no collectors"
        );
        return;
    }
    let _ = writeln!(
        out,
        "  bundle    alert, decision trace, timeline and {} collector(s) under collectors/NAME/:",
        plan.len()
    );
    for entry in plan {
        match entry {
            Ok(request) => {
                let mut flags = vec![request.kind.label().to_owned()];
                if request.before_action {
                    flags.push("before_action".to_owned());
                }
                if request.on_resolve {
                    flags.push("on_resolve".to_owned());
                }
                flags.push(format!(
                    "timeout {}",
                    crate::duration::Shown(request.timeout)
                ));
                flags.push(format!("max {} bytes", request.max_bytes));
                let _ = writeln!(
                    out,
                    "    collector {} ({}; rule {}): {}",
                    request.name,
                    flags.join(", "),
                    request.rule,
                    rules::collect::describe(request)
                );
            }
            Err((name, error)) => {
                let _ = writeln!(out, "    collector {name}: CANNOT RENDER: {error}");
            }
        }
    }
}
