//! Kubernetes actions: `rollout_restart`, `set_env` and `scale` on a Deployment, StatefulSet
//! or DaemonSet, plus the read-backs that settle an action whose result was lost (a crash
//! between "started" and "finished", a timeout), and the lifecycle `mitigate` drives: a
//! [`Request`] is run ([`run`]), settled by read-back ([`settle`], [`settle_stored`] after a
//! crash), holds its changed items ([`hold_items`], [`previous_of`]) and reverts them
//! ([`revert`]) when its incident resolves.
//!
//! Every function takes a ready `kube::Client` (the one [`crate::kubernetes::ClientSlot`]
//! builds) and arguments already rendered and allowed (the namespace allowlist is the
//! caller's); [`Workload::parse`] checks the names.
//!
//! # What goes over the wire (protocols.md §6)
//!
//! * `rollout_restart`: `GET …/{deployments|statefulsets|daemonsets}/{name}` (a paused
//!   Deployment is refused, as kubectl does), then one
//!   `PATCH …?fieldManager=nightshift` with `Content-Type: application/strategic-merge-patch+json`
//!   setting the pod template annotations `kubectl.kubernetes.io/restartedAt` (RFC 3339 with
//!   nanoseconds, so two restarts within one second differ; kubectl uses seconds) and
//!   [`ACTION_KEY_ANNOTATION`] (the action's idempotency key, read back by
//!   [`read_restart_key`]). A template that already carries this key is not restarted again.
//! * `set_env`: `GET` the workload, then one strategic merge patch: containers merged by
//!   name, `env` entries by name; a set is `{"name":K,"value":V,"valueFrom":null}` (an existing
//!   `valueFrom` is cleared, else the server refuses the entry), a removal
//!   `{"name":K,"$patch":"delete"}`; `$setElementOrder/env` keeps the existing order and
//!   appends new names (what kubectl's computed patch does, so `$(VAR)` references keep
//!   working); the patch also sets [`ACTION_KEY_ANNOTATION`] and carries the GET's
//!   `metadata.resourceVersion` as a precondition, so the recorded previous values are
//!   exactly the ones replaced (a concurrent change gives 409, retried). Never a JSON merge
//!   patch, which would replace the lists whole.
//! * `scale`: `GET …/scale` (previous replicas), then
//!   `PATCH …/scale` with `Content-Type: application/merge-patch+json` and
//!   `{"spec":{"replicas":N}}` (0 included).
//!
//! A change already in place (the same env values, the same replica count, the same action
//! key on the template) is not sent again: `Done` with `"changed": false` (or
//! `"already_applied": true` for a restart). So running an action twice with one key has the
//! effect of running it once.
//!
//! # Outcomes
//!
//! * nothing was sent (connection refused, DNS, TLS, credentials), 409 Conflict, 429:
//!   `NotApplied { retryable: true }`;
//! * a preliminary GET that failed for a transient reason (5xx, timeout, transport):
//!   `NotApplied { retryable: true }`; nothing was changed;
//! * 400, 401, 403, 404, 415, 422 and other client errors, a paused Deployment, bad
//!   arguments: `Failed`;
//! * a timeout, a 5xx or a broken answer after the PATCH was sent: `Unknown`; settle it with
//!   [`read_restart_key`], [`read_env`] or [`read_replicas`].
//!
//! Each request is bounded by [`crate::kubernetes::REQUEST_TIMEOUT`]. kube's default client
//! retries 429/503/504 by itself, so such an answer reaches this module only after its
//! retries; every patch here sets absolute values, so a re-sent patch changes nothing more.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::Outcome;
use crate::kubernetes::names::is_rfc1123_label;
use crate::kubernetes::{
    ClientSlot, ErrorKind, RequestError, Workload, WorkloadKind, get_scale, get_workload,
    patch_scale, patch_workload,
};
use crate::store::HeldValue;

/// The pod template annotation carrying the idempotency key of the action that last
/// changed the template.
pub const ACTION_KEY_ANNOTATION: &str = "nightshift.io/action-key";

/// The pod template annotation `kubectl rollout restart` sets.
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";

/// The longest idempotency key accepted (annotation values may be larger; keys are short).
const MAX_ACTION_KEY: usize = 1024;

// ---------------------------------------------------------------------------------------
// rollout restart

/// What `kubectl rollout restart` does, plus the action key: GET the workload, refuse a
/// paused Deployment, then one strategic merge patch of the pod template annotations.
/// `Done { detail: {"restarted_at": …} }`. When the template already carries `action_key`,
/// this action has already restarted it: `Done` with `"already_applied": true` and nothing
/// sent. Pass the same `now` when retrying after `NotApplied`: should the first attempt have
/// landed after all, the same patch changes nothing.
pub async fn rollout_restart(
    client: &kube::Client,
    workload: &Workload,
    action_key: &str,
    now: DateTime<Utc>,
) -> Outcome {
    if let Err(error) = check_action_key(action_key) {
        return Outcome::Failed { error };
    }
    let object = match get_workload(client, workload).await {
        Ok(object) => object,
        Err(error) => return outcome_of(&error, Step::Read),
    };
    if workload.kind == WorkloadKind::Deployment && object["spec"]["paused"] == json!(true) {
        return Outcome::Failed {
            error: format!(
                "rollout restart {workload}: can't restart paused deployment (run rollout \
                 resume first)"
            ),
        };
    }
    let annotations = &object["spec"]["template"]["metadata"]["annotations"];
    if annotations[ACTION_KEY_ANNOTATION].as_str() == Some(action_key) {
        return Outcome::Done {
            detail: json!({
                "restarted_at": annotations[RESTARTED_AT_ANNOTATION],
                "already_applied": true
            }),
        };
    }
    let restarted_at = now.to_rfc3339_opts(SecondsFormat::Nanos, true);
    let patch = json!({
        "spec": {"template": {"metadata": {"annotations": {
            RESTARTED_AT_ANNOTATION: restarted_at,
            ACTION_KEY_ANNOTATION: action_key
        }}}}
    });
    match patch_workload(client, workload, patch).await {
        Ok(()) => Outcome::Done {
            detail: json!({"restarted_at": restarted_at}),
        },
        Err(error) => outcome_of(&error.context("rollout restart"), Step::Write),
    }
}

// ---------------------------------------------------------------------------------------
// set env

/// Set and/or remove env vars on chosen containers of a workload's pod template.
///
/// `containers`: container names, or `"*"` for every entry of `spec.template.spec.containers`.
/// Unlike `kubectl set env` (whose default `*` also covers init containers), init containers
/// are changed only when named explicitly. Every named container must exist (in
/// `containers` or `initContainers`), else `Failed` and nothing is sent.
///
/// `set` and `remove` must not share a name (kubectl lets the removal win; here it is an
/// error). Names are env var names as the API accepts them (printable ASCII, no `=`).
///
/// `Done { detail: {"previous": {container: {NAME: value | null (absent) | {"valueFrom": …}}},
/// "changed": bool} }`: the values before, for each chosen container and each name in `set`
/// and `remove`. When every value is already as asked, nothing is sent (`"changed": false`),
/// so the pods are not rolled for nothing.
pub async fn set_env(
    client: &kube::Client,
    workload: &Workload,
    containers: &[String],
    set: &BTreeMap<String, String>,
    remove: &[String],
    action_key: &str,
) -> Outcome {
    if let Err(error) =
        check_action_key(action_key).and_then(|()| check_env_request(containers, set, remove))
    {
        return Outcome::Failed {
            error: format!("set env on {workload}: {error}"),
        };
    }
    let object = match get_workload(client, workload).await {
        Ok(object) => object,
        Err(error) => return outcome_of(&error, Step::Read),
    };
    let chosen = match choose_containers(&object, workload, containers) {
        Ok(chosen) => chosen,
        Err(error) => return Outcome::Failed { error },
    };

    let names: BTreeSet<&str> = set
        .keys()
        .map(String::as_str)
        .chain(remove.iter().map(String::as_str))
        .collect();
    let mut previous = Map::new();
    let mut changed = false;
    let mut by_list: BTreeMap<&'static str, Vec<Value>> = BTreeMap::new();
    for container in &chosen {
        let env = container.value["env"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut before = Map::new();
        for name in &names {
            before.insert((*name).to_owned(), previous_value(&env, name));
        }
        changed |= set
            .iter()
            .any(|(name, value)| before[name.as_str()].as_str() != Some(value.as_str()));
        changed |= remove.iter().any(|name| !before[name.as_str()].is_null());
        previous.insert(container.name.clone(), Value::Object(before));

        // The order kubectl keeps: existing names in place, new ones appended. The patch's
        // entries must follow it (deletions aside), or the server refuses the patch.
        let mut order: Vec<&str> = Vec::new();
        for entry in &env {
            if let Some(name) = entry["name"].as_str()
                && !remove.iter().any(|removed| removed == name)
                && !order.contains(&name)
            {
                order.push(name);
            }
        }
        for name in set.keys() {
            if !order.contains(&name.as_str()) {
                order.push(name);
            }
        }
        let mut entries: Vec<Value> = order
            .iter()
            .filter_map(|name| {
                let value = set.get(*name)?;
                Some(json!({"name": name, "value": value, "valueFrom": null}))
            })
            .collect();
        entries.extend(
            remove
                .iter()
                .map(|name| json!({"name": name, "$patch": "delete"})),
        );
        let order: Vec<Value> = order.iter().map(|name| json!({"name": name})).collect();
        by_list.entry(container.list).or_default().push(json!({
            "name": container.name,
            "env": entries,
            "$setElementOrder/env": order
        }));
    }
    if !changed {
        return Outcome::Done {
            detail: json!({"previous": previous, "changed": false}),
        };
    }

    let mut pod_spec = Map::new();
    for (list, entries) in by_list {
        pod_spec.insert(list.to_owned(), Value::Array(entries));
    }
    let mut patch = json!({
        "spec": {"template": {
            "metadata": {"annotations": {ACTION_KEY_ANNOTATION: action_key}},
            "spec": pod_spec
        }}
    });
    if let Some(version) = object["metadata"]["resourceVersion"].as_str() {
        patch["metadata"] = json!({"resourceVersion": version});
    }
    match patch_workload(client, workload, patch).await {
        Ok(()) => Outcome::Done {
            detail: json!({"previous": previous, "changed": true}),
        },
        Err(error) => outcome_of(&error.context("set env"), Step::Write),
    }
}

fn check_env_request(
    containers: &[String],
    set: &BTreeMap<String, String>,
    remove: &[String],
) -> Result<(), String> {
    if containers.is_empty() {
        return Err("no containers named (use \"*\" for all containers)".to_owned());
    }
    for container in containers {
        if container != "*" && !is_rfc1123_label(container) {
            return Err(format!(
                "{container:?} is not a valid container name (RFC 1123 label)"
            ));
        }
    }
    if set.is_empty() && remove.is_empty() {
        return Err("nothing to set or remove".to_owned());
    }
    for name in set.keys().chain(remove) {
        if !is_env_name(name) {
            return Err(format!(
                "{name:?} is not a valid env var name (printable ASCII without '=')"
            ));
        }
    }
    if let Some(both) = remove.iter().find(|name| set.contains_key(*name)) {
        return Err(format!("{both:?} is both set and removed"));
    }
    Ok(())
}

/// What the API server accepts as an env var name (relaxed validation, Kubernetes ≥ 1.30):
/// printable ASCII except `=`; spaces are refused here too.
fn is_env_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 256 && name.bytes().all(|b| b.is_ascii_graphic() && b != b'=')
}

/// A container chosen for `set_env` / `read_env`.
struct Chosen {
    name: String,
    /// `containers` or `initContainers`.
    list: &'static str,
    value: Value,
}

fn choose_containers(
    object: &Value,
    workload: &Workload,
    containers: &[String],
) -> Result<Vec<Chosen>, String> {
    let pod_spec = &object["spec"]["template"]["spec"];
    let listed = |list: &'static str| -> Vec<Chosen> {
        pod_spec[list]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|container| {
                Some(Chosen {
                    name: container["name"].as_str()?.to_owned(),
                    list,
                    value: container.clone(),
                })
            })
            .collect()
    };
    let regular = listed("containers");
    let init = listed("initContainers");
    let all = containers.iter().any(|name| name == "*");
    let mut missing = Vec::new();
    for name in containers.iter().filter(|name| *name != "*") {
        if !regular.iter().chain(&init).any(|found| &found.name == name) {
            missing.push(name.as_str());
        }
    }
    if !missing.is_empty() {
        let names = |list: &[Chosen]| {
            list.iter()
                .map(|container| container.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(format!(
            "{workload}: no container named {} (containers: {}; init containers: {})",
            missing.join(", "),
            names(&regular),
            if init.is_empty() {
                "none".to_owned()
            } else {
                names(&init)
            }
        ));
    }
    let chosen: Vec<Chosen> = regular
        .into_iter()
        .filter(|container| all || containers.contains(&container.name))
        .chain(
            init.into_iter()
                .filter(|container| containers.contains(&container.name)),
        )
        .collect();
    if chosen.is_empty() {
        return Err(format!("{workload}: the pod template has no containers"));
    }
    Ok(chosen)
}

/// An env var's current setting: its value, `{"valueFrom": …}`, or null when absent. With
/// several entries of one name the last one counts (it is the one the process sees).
fn previous_value(env: &[Value], name: &str) -> Value {
    match env.iter().rev().find(|entry| entry["name"] == name) {
        None => Value::Null,
        Some(entry) if !entry["valueFrom"].is_null() => {
            json!({"valueFrom": entry["valueFrom"]})
        }
        Some(entry) => json!(entry["value"].as_str().unwrap_or_default()),
    }
}

// ---------------------------------------------------------------------------------------
// scale

/// Set the replica count through the scale subresource (a DaemonSet cannot be scaled).
/// `Done { detail: {"previous_replicas": n, "replicas": N, "changed": bool} }`; when the
/// count already is `replicas`, nothing is sent. The scale subresource carries no
/// annotations: `action_key` is only checked and reported; settle with [`read_replicas`].
pub async fn scale(
    client: &kube::Client,
    workload: &Workload,
    replicas: i32,
    action_key: &str,
) -> Outcome {
    if let Err(error) = check_action_key(action_key) {
        return Outcome::Failed { error };
    }
    if workload.kind == WorkloadKind::DaemonSet {
        return Outcome::Failed {
            error: format!("scale {workload}: a daemonset cannot be scaled"),
        };
    }
    if replicas < 0 {
        return Outcome::Failed {
            error: format!("scale {workload}: replicas must be 0 or more, not {replicas}"),
        };
    }
    let previous = match get_scale(client, workload).await {
        Ok(previous) => previous,
        Err(error) => return outcome_of(&error, Step::Read),
    };
    if previous == replicas {
        return Outcome::Done {
            detail: json!({
                "previous_replicas": previous,
                "replicas": replicas,
                "changed": false,
                "action_key": action_key
            }),
        };
    }
    match patch_scale(client, workload, replicas).await {
        Ok(_) => Outcome::Done {
            detail: json!({
                "previous_replicas": previous,
                "replicas": replicas,
                "changed": true,
                "action_key": action_key
            }),
        },
        Err(error) => outcome_of(&error, Step::Write),
    }
}

// ---------------------------------------------------------------------------------------
// Read-back

/// The pod template's [`ACTION_KEY_ANNOTATION`] (`None` when absent): the key of the action
/// that last restarted or re-configured the workload.
pub async fn read_restart_key(
    client: &kube::Client,
    workload: &Workload,
) -> Result<Option<String>, String> {
    let object = get_workload(client, workload)
        .await
        .map_err(|error| error.text())?;
    Ok(
        object["spec"]["template"]["metadata"]["annotations"][ACTION_KEY_ANNOTATION]
            .as_str()
            .map(str::to_owned),
    )
}

/// The current values of env vars `names` in the chosen containers (as [`set_env`] chooses
/// them: `"*"` is every regular container, init containers only by name): container →
/// name → `Some(value)`, or `None` when the var is absent. A var set through `valueFrom` is
/// neither, and is an error naming it (it cannot be compared with a value); so is a named
/// container that does not exist.
pub async fn read_env(
    client: &kube::Client,
    workload: &Workload,
    containers: &[String],
    names: &[String],
) -> Result<BTreeMap<String, BTreeMap<String, Option<String>>>, String> {
    let object = get_workload(client, workload)
        .await
        .map_err(|error| error.text())?;
    let chosen = choose_containers(&object, workload, containers)?;
    let mut found = BTreeMap::new();
    for container in chosen {
        let env = container.value["env"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut values = BTreeMap::new();
        for name in names {
            let value = match previous_value(&env, name) {
                Value::Null => None,
                Value::String(value) => Some(value),
                _ => {
                    return Err(format!(
                        "{workload}: env {name:?} of container {:?} is set from valueFrom, \
                         not a value",
                        container.name
                    ));
                }
            };
            values.insert(name.clone(), value);
        }
        found.insert(container.name, values);
    }
    Ok(found)
}

/// The replica count from the scale subresource (absent `spec.replicas` is 0).
pub async fn read_replicas(client: &kube::Client, workload: &Workload) -> Result<i32, String> {
    if workload.kind == WorkloadKind::DaemonSet {
        return Err(format!("{workload}: a daemonset has no replica count"));
    }
    get_scale(client, workload)
        .await
        .map_err(|error| error.text())
}

// ---------------------------------------------------------------------------------------
// The lifecycle the act stage drives: render, run, read back, hold, revert

/// A Kubernetes action rendered and checked: what `mitigate` runs, settles and holds.
pub struct Request {
    pub workload: Workload,
    pub change: Change,
    /// The arguments as rendered for the record (`env.NAME`, `replicas`): secrets appear as
    /// placeholders here, never as values.
    pub rendered: Value,
}

/// What a Kubernetes action changes.
pub enum Change {
    RolloutRestart,
    /// `set`: the values rendered for use, secrets included; never recorded.
    SetEnv {
        containers: Vec<String>,
        set: BTreeMap<String, String>,
        remove: Vec<String>,
    },
    /// The count is read from `rendered["replicas"]` when the action runs: one that is not a
    /// number fails the action, it does not refuse it.
    Scale,
}

/// The workload an action's rendered arguments name, refused when its namespace is not in
/// `kubernetes.namespaces` (empty allows none).
pub fn target_workload(namespaces: &[String], rendered: &Value) -> Result<Workload, String> {
    let text = |field: &str| {
        rendered[field]
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

/// The value written into [`ACTION_KEY_ANNOTATION`] for an idempotency key: a digest, since
/// annotation values should stay short and free of label text.
pub fn action_key(key: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(key.as_bytes())[..16])
}

/// Run the action once; `key` is its idempotency key.
pub async fn run(slot: &ClientSlot, request: &Request, key: &str, now: DateTime<Utc>) -> Outcome {
    let client = match slot.client().await {
        Ok(client) => client,
        Err(error) => {
            return Outcome::NotApplied {
                error,
                retryable: true,
            };
        }
    };
    let workload = &request.workload;
    match &request.change {
        Change::RolloutRestart => rollout_restart(&client, workload, &action_key(key), now).await,
        Change::SetEnv {
            containers,
            set,
            remove,
        } => set_env(&client, workload, containers, set, remove, &action_key(key)).await,
        Change::Scale => {
            let rendered = &request.rendered;
            let replicas = match &rendered["replicas"] {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            match replicas.and_then(|n| i32::try_from(n).ok()) {
                Some(replicas) => scale(&client, workload, replicas, &action_key(key)).await,
                None => Outcome::Failed {
                    error: format!("replicas {} is not a number", rendered["replicas"]),
                },
            }
        }
    }
}

/// A request went out and the answer was lost: read the workload back.
pub async fn settle(slot: &ClientSlot, request: &Request, key: &str, error: String) -> Outcome {
    let expected = match &request.change {
        Change::RolloutRestart => Expected::Restart,
        Change::Scale => Expected::from_arguments("kubernetes.scale", &request.rendered),
        Change::SetEnv {
            containers,
            set,
            remove,
        } => {
            let mut values: BTreeMap<String, Option<String>> = set
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
    };
    read_back(slot, &request.workload, key, &expected, error).await
}

/// An action of `kind` found started after a crash, settled from the arguments stored with
/// it. A value shown as a secret placeholder cannot be compared.
pub async fn settle_stored(
    slot: &ClientSlot,
    workload: &Workload,
    kind: &str,
    key: &str,
    arguments: &Value,
    error: String,
) -> Outcome {
    let expected = Expected::from_arguments(kind, arguments);
    read_back(slot, workload, key, &expected, error).await
}

/// What a Kubernetes action leaves behind when it took effect.
enum Expected {
    Restart,
    Replicas(i64),
    /// Per name: the value it sets, or `None` for a removal, on these containers.
    Env {
        containers: Vec<String>,
        values: BTreeMap<String, Option<String>>,
    },
    Unknowable,
}

impl Expected {
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
                let mut values = BTreeMap::new();
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

/// Read the target back: the change present → done; absent → not applied (escalated, not
/// retried blindly); anything else stays unknown. Only a rollout restart carries a mark that
/// proves it landed; the others compare values.
async fn read_back(
    slot: &ClientSlot,
    workload: &Workload,
    key: &str,
    expected: &Expected,
    error: String,
) -> Outcome {
    let client = match slot.client().await {
        Ok(client) => client,
        Err(read) => {
            return Outcome::Unknown {
                error: format!("{error}; cannot read back: {read}"),
            };
        }
    };
    let present = match expected {
        Expected::Restart => read_restart_key(&client, workload)
            .await
            .map(|found| Some(found.as_deref() == Some(action_key(key).as_str()))),
        Expected::Replicas(replicas) => read_replicas(&client, workload)
            .await
            .map(|current| Some(i64::from(current) == *replicas)),
        Expected::Env { containers, values } => {
            let names: Vec<String> = values.keys().cloned().collect();
            read_env(&client, workload, containers, &names)
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

/// What the action holds when it is reverted on resolve: (item, the value it sets as JSON).
/// `env:NAME` per variable set or removed, `replicas` for a scale; a restart holds nothing.
pub fn hold_items(request: &Request) -> Vec<HeldValue> {
    let rendered = &request.rendered;
    let held = |item: String, value: String| HeldValue { item, value };
    match &request.change {
        Change::SetEnv { set, remove, .. } => set
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
        Change::Scale => {
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
        Change::RolloutRestart => Vec::new(),
    }
}

/// A held item's value before the change, from the action's `Done` detail.
pub fn previous_of(item: &str, detail: &Value) -> String {
    if item == "replicas" {
        return detail["previous_replicas"].to_string();
    }
    let name = item.trim_start_matches("env:");
    let per_container: Map<String, Value> = detail["previous"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(container, values)| (container.clone(), values[name].clone()))
        .collect();
    Value::Object(per_container).to_string()
}

/// The kind of the action that reverts a held item.
pub fn revert_kind(item: &str) -> &'static str {
    if item == "replicas" {
        "kubernetes.scale"
    } else {
        "kubernetes.set_env"
    }
}

/// How a revert ended.
pub enum Reverted {
    /// The value is no longer the one nightshift set: a human's change wins, nothing is sent.
    /// What was found and what nightshift had set.
    Left(Value),
    /// The revert ran.
    Ran(Outcome),
}

/// Put a held item back to `previous` (JSON as stored), only if it still has the value `ours`
/// (JSON as stored) that nightshift set. `key` is the revert's idempotency key.
pub async fn revert(
    slot: &ClientSlot,
    workload: &Workload,
    item: &str,
    ours: &str,
    previous: &str,
    key: &str,
) -> Result<Reverted, String> {
    let client = slot.client().await?;
    let ours: Value = serde_json::from_str(ours).unwrap_or_default();
    let previous: Value = serde_json::from_str(previous).unwrap_or_default();
    let key = action_key(key);
    if item == "replicas" {
        let current = read_replicas(&client, workload).await?;
        if json!(current) != ours {
            return Ok(Reverted::Left(json!({"current": current, "ours": ours})));
        }
        let replicas = previous
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or("no previous replica count")?;
        return Ok(Reverted::Ran(
            scale(&client, workload, replicas, &key).await,
        ));
    }
    let name = item.trim_start_matches("env:");
    let containers: Vec<String> = previous
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let current = read_env(&client, workload, &containers, &[name.to_owned()]).await?;
    let changed = current.values().any(|values| {
        let now = values.get(name).cloned().flatten();
        json!(now) != ours
    });
    if changed {
        return Ok(Reverted::Left(json!({"current": current, "ours": ours})));
    }
    let mut last = Outcome::Done { detail: json!({}) };
    for (container, before) in previous.as_object().into_iter().flatten() {
        let one = [container.clone()];
        last = match before {
            Value::String(text) => {
                let set = [(name.to_owned(), text.clone())].into();
                set_env(&client, workload, &one, &set, &[], &key).await
            }
            Value::Null => {
                set_env(
                    &client,
                    workload,
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
    Ok(Reverted::Ran(last))
}

// ---------------------------------------------------------------------------------------
// Requests and their errors

fn check_action_key(action_key: &str) -> Result<(), String> {
    if action_key.is_empty() {
        return Err("empty action key".to_owned());
    }
    if action_key.len() > MAX_ACTION_KEY {
        return Err(format!(
            "action key longer than {MAX_ACTION_KEY} bytes ({})",
            action_key.len()
        ));
    }
    Ok(())
}

/// Whether a failed request was a read (nothing changed whatever happened) or a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Read,
    Write,
}

/// What a failed request means for the action: the invariant of [`Outcome`].
fn outcome_of(failed: &RequestError, step: Step) -> Outcome {
    let error = failed.text();
    let transient = |error: String| match step {
        Step::Read => Outcome::NotApplied {
            error,
            retryable: true,
        },
        Step::Write => Outcome::Unknown { error },
    };
    match &failed.kind {
        ErrorKind::Status {
            code: 409 | 429, ..
        } => Outcome::NotApplied {
            error,
            retryable: true,
        },
        // 0: an error answer without a code; treat like a server error.
        ErrorKind::Status { code, .. } if *code >= 500 || *code == 0 => transient(error),
        ErrorKind::Status { .. } => Outcome::Failed { error },
        ErrorKind::NotSent(_) => Outcome::NotApplied {
            error,
            retryable: true,
        },
        ErrorKind::Invalid(_) => Outcome::Failed { error },
        ErrorKind::Lost(_) => transient(error),
        ErrorKind::Answer(_) => match step {
            Step::Read => Outcome::Failed { error },
            Step::Write => Outcome::Unknown { error },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_env_requests() {
        let set = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let names = |names: &[&str]| -> Vec<String> {
            names.iter().map(|name| (*name).to_owned()).collect()
        };
        assert!(check_env_request(&names(&["*"]), &set(&[("A", "1")]), &[]).is_ok());
        assert!(check_env_request(&names(&["app"]), &set(&[]), &names(&["B"])).is_ok());
        assert!(check_env_request(&[], &set(&[("A", "1")]), &[]).is_err());
        assert!(check_env_request(&names(&["*"]), &set(&[]), &[]).is_err());
        assert!(check_env_request(&names(&["App"]), &set(&[("A", "1")]), &[]).is_err());
        assert!(check_env_request(&names(&["*"]), &set(&[("A=B", "1")]), &[]).is_err());
        assert!(check_env_request(&names(&["*"]), &set(&[("A B", "1")]), &[]).is_err());
        assert!(check_env_request(&names(&["*"]), &set(&[("", "1")]), &[]).is_err());
        assert!(check_env_request(&names(&["*"]), &set(&[("A", "1")]), &names(&["A"])).is_err());
    }

    #[test]
    fn previous_values() {
        let env = vec![
            json!({"name": "A", "value": "1"}),
            json!({"name": "E"}),
            json!({"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}),
            json!({"name": "D", "value": "first"}),
            json!({"name": "D", "value": "second"}),
        ];
        assert_eq!(previous_value(&env, "A"), json!("1"));
        assert_eq!(previous_value(&env, "E"), json!(""));
        assert_eq!(
            previous_value(&env, "S"),
            json!({"valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}})
        );
        assert_eq!(previous_value(&env, "D"), json!("second"));
        assert_eq!(previous_value(&env, "X"), Value::Null);
    }

    #[test]
    fn maps_statuses_to_outcomes() {
        let status = |code: u16| RequestError {
            what: "patch".to_owned(),
            kind: ErrorKind::Status {
                code,
                text: format!("HTTP {code}"),
                message: String::new(),
            },
        };
        for code in [409, 429] {
            for step in [Step::Read, Step::Write] {
                assert!(matches!(
                    outcome_of(&status(code), step),
                    Outcome::NotApplied {
                        retryable: true,
                        ..
                    }
                ));
            }
        }
        for code in [400, 401, 403, 404, 415, 422] {
            for step in [Step::Read, Step::Write] {
                assert!(matches!(
                    outcome_of(&status(code), step),
                    Outcome::Failed { .. }
                ));
            }
        }
        for code in [500, 503, 504] {
            assert!(matches!(
                outcome_of(&status(code), Step::Write),
                Outcome::Unknown { .. }
            ));
            assert!(matches!(
                outcome_of(&status(code), Step::Read),
                Outcome::NotApplied {
                    retryable: true,
                    ..
                }
            ));
        }
        let lost = RequestError {
            what: String::new(),
            kind: ErrorKind::Lost("timed out".to_owned()),
        };
        assert!(matches!(
            outcome_of(&lost, Step::Write),
            Outcome::Unknown { .. }
        ));
        let not_sent = RequestError {
            what: String::new(),
            kind: ErrorKind::NotSent("connection refused".to_owned()),
        };
        assert!(matches!(
            outcome_of(&not_sent, Step::Write),
            Outcome::NotApplied {
                retryable: true,
                ..
            }
        ));
    }
}
