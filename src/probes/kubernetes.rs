//! `kubernetes` probe: a workload's pods (`workload = "deployment/NAME"`, `statefulset/…`,
//! `daemonset/…`) and/or one object's metadata (`object = "secret/NAME"`, `configmap/…`, a
//! workload, …). Object lookups are metadata-only requests (`Accept:
//! application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1`), so a Secret's data is
//! never asked for, let alone read. A missing object is an answer (`object_exists = false`);
//! a missing workload, a refusal (403), a server error or an unreachable API server is a
//! failure naming the status and reason.
//!
//! Targets are often templated from alert labels, so a rendered name must be a valid object
//! name (RFC 1123 subdomain, as for actions) and the namespace a valid namespace name: a
//! value like `..`, `a/../b` or `x?watch=1` would otherwise change the API path asked for.
//!
//! The client is built on first use from `[kubernetes]`: the named kubeconfig file (and
//! context), or else the usual inference (in-cluster service account, `$KUBECONFIG`,
//! `~/.kube/config`). A client that cannot be built is a failure, and the next probe tries
//! again.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::{ProbeKind, ProbeResult};
use crate::config::{KubernetesConfig, is_rfc1123_label, is_rfc1123_name};

/// The Kubernetes client, built on first use from `[kubernetes]`.
pub struct ClientSlot {
    config: KubernetesConfig,
    client: tokio::sync::OnceCell<kube::Client>,
}

impl ClientSlot {
    pub fn new(config: &KubernetesConfig) -> ClientSlot {
        ClientSlot {
            config: config.clone(),
            client: tokio::sync::OnceCell::new(),
        }
    }

    /// The configuration the client is (or will be) built from.
    pub fn config(&self) -> &KubernetesConfig {
        &self.config
    }

    /// The client, built now if this is the first use. Concurrent first uses build it once;
    /// a failure is not remembered, so the next call tries again (a kubeconfig written late,
    /// an API server that was not resolvable yet).
    pub async fn client(&self) -> Result<kube::Client, String> {
        self.client
            .get_or_try_init(|| build_client(&self.config))
            .await
            .cloned()
    }
}

async fn build_client(config: &KubernetesConfig) -> Result<kube::Client, String> {
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            // The error names the file.
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|error| format!("Kubernetes client: {}", error_text(&error)))?;
            let options = KubeConfigOptions {
                context: config.context.clone(),
                ..KubeConfigOptions::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|error| {
                    let context = config
                        .context
                        .as_deref()
                        .map(|context| format!(" (context {context:?})"))
                        .unwrap_or_default();
                    format!(
                        "Kubernetes client: kubeconfig {}{context}: {}",
                        path.display(),
                        error_text(&error)
                    )
                })?
        }
        None if config.context.is_some() => {
            // A context without a file: the default kubeconfig, that context.
            let options = KubeConfigOptions {
                context: config.context.clone(),
                ..KubeConfigOptions::default()
            };
            kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|error| {
                    format!(
                        "Kubernetes client: default kubeconfig (context {:?}): {}",
                        config.context.as_deref().unwrap_or_default(),
                        error_text(&error)
                    )
                })?
        }
        None => kube::Config::infer().await.map_err(|error| {
            format!(
                "Kubernetes client: no kubeconfig configured and none could be inferred: {}",
                error_text(&error)
            )
        })?,
    };
    let mut kube_config = kube_config;
    // kube-client takes HTTPS_PROXY from the environment when the kubeconfig names no proxy;
    // nightshift uses no proxy from the environment (see `http_client`), so only the
    // kubeconfig's own `proxy-url` stays.
    let named = match &config.kubeconfig {
        Some(path) => Kubeconfig::read_from(path).ok(),
        None => Kubeconfig::read().ok(),
    }
    .is_some_and(|kubeconfig| {
        kubeconfig.clusters.iter().any(|named| {
            named
                .cluster
                .as_ref()
                .and_then(|cluster| cluster.proxy_url.as_deref())
                .is_some_and(|url| !url.is_empty())
        })
    });
    if !named {
        kube_config.proxy_url = None;
    }
    kube::Client::try_from(kube_config)
        .map_err(|error| format!("Kubernetes client: {}", error_text(&error)))
}

pub async fn probe(
    slot: &ClientSlot,
    namespace: &str,
    workload: Option<&str>,
    object: Option<&str>,
) -> ProbeResult {
    let fail = |message: String| ProbeResult::failure(ProbeKind::Kubernetes, message);
    // Check what was asked before building a client or sending anything.
    let workload = match workload.map(parse_workload).transpose() {
        Ok(workload) => workload,
        Err(error) => return fail(error),
    };
    let object = match object.map(parse_object).transpose() {
        Ok(object) => object,
        Err(error) => return fail(error),
    };
    if !is_rfc1123_label(namespace) {
        return fail(format!(
            "kubernetes namespace {namespace:?} is not a valid namespace name (RFC 1123 label: \
             lower case letters, digits and '-', at most 63)"
        ));
    }
    let client = match slot.client().await {
        Ok(client) => client,
        Err(error) => return fail(error),
    };

    let workload_part = async {
        match &workload {
            Some((kind, name)) => pods_of_workload(&client, namespace, *kind, name)
                .await
                .map(Some),
            None => Ok(None),
        }
    };
    let object_part = async {
        match &object {
            Some((kind, name)) => object_metadata(&client, namespace, *kind, name)
                .await
                .map(Some),
            None => Ok(None),
        }
    };
    let (workload_fields, object_fields) = tokio::join!(workload_part, object_part);

    let mut fields = super::sample_fields(ProbeKind::Kubernetes);
    match workload_fields {
        Ok(Some(found)) => fields.extend(found),
        Ok(None) => {}
        Err(error) => return fail(error),
    }
    match object_fields {
        Ok(Some(found)) => fields.extend(found),
        Ok(None) => {}
        Err(error) => return fail(error),
    }
    ProbeResult::success(fields)
}

// ---------------------------------------------------------------------------------------
// What was asked

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl WorkloadKind {
    fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployment",
            WorkloadKind::StatefulSet => "statefulset",
            WorkloadKind::DaemonSet => "daemonset",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectKind {
    Workload(WorkloadKind),
    Secret,
    ConfigMap,
    Pod,
    Service,
    ServiceAccount,
    PersistentVolumeClaim,
    ReplicaSet,
    Job,
    CronJob,
    Ingress,
}

impl ObjectKind {
    fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Workload(kind) => kind.as_str(),
            ObjectKind::Secret => "secret",
            ObjectKind::ConfigMap => "configmap",
            ObjectKind::Pod => "pod",
            ObjectKind::Service => "service",
            ObjectKind::ServiceAccount => "serviceaccount",
            ObjectKind::PersistentVolumeClaim => "persistentvolumeclaim",
            ObjectKind::ReplicaSet => "replicaset",
            ObjectKind::Job => "job",
            ObjectKind::CronJob => "cronjob",
            ObjectKind::Ingress => "ingress",
        }
    }
}

/// `kind/name`, the kind as kubectl accepts it (singular, plural or short name, any case).
fn split_reference<'a>(what: &str, reference: &'a str) -> Result<(String, &'a str), String> {
    let Some((kind, name)) = reference.trim().split_once('/') else {
        return Err(format!(
            "kubernetes {what} {reference:?}: expected KIND/NAME, e.g. deployment/web"
        ));
    };
    if name.is_empty() || name.contains('/') {
        return Err(format!(
            "kubernetes {what} {reference:?}: expected KIND/NAME, e.g. deployment/web"
        ));
    }
    let name = name.trim();
    if !is_rfc1123_name(name) {
        return Err(format!(
            "kubernetes {what} {reference:?}: {name:?} is not a valid object name (RFC 1123: \
             lower case letters, digits, '-' and '.', at most 253)"
        ));
    }
    Ok((kind.trim().to_ascii_lowercase(), name))
}

/// Check a probe's targets as they would be asked for (see [`probe`]), sending nothing.
pub fn check_targets(workload: Option<&str>, object: Option<&str>) -> Result<(), String> {
    workload.map(parse_workload).transpose()?;
    object.map(parse_object).transpose()?;
    Ok(())
}

fn workload_kind(kind: &str) -> Option<WorkloadKind> {
    match kind {
        "deployment" | "deployments" | "deploy" => Some(WorkloadKind::Deployment),
        "statefulset" | "statefulsets" | "sts" => Some(WorkloadKind::StatefulSet),
        "daemonset" | "daemonsets" | "ds" => Some(WorkloadKind::DaemonSet),
        _ => None,
    }
}

fn parse_workload(reference: &str) -> Result<(WorkloadKind, String), String> {
    let (kind, name) = split_reference("workload", reference)?;
    let kind = workload_kind(&kind).ok_or_else(|| {
        format!(
            "kubernetes workload {reference:?}: kind {kind:?} is not one of deployment, \
             statefulset, daemonset"
        )
    })?;
    Ok((kind, name.to_owned()))
}

fn parse_object(reference: &str) -> Result<(ObjectKind, String), String> {
    let (kind, name) = split_reference("object", reference)?;
    let object_kind = match kind.as_str() {
        "secret" | "secrets" => ObjectKind::Secret,
        "configmap" | "configmaps" | "cm" => ObjectKind::ConfigMap,
        "pod" | "pods" | "po" => ObjectKind::Pod,
        "service" | "services" | "svc" => ObjectKind::Service,
        "serviceaccount" | "serviceaccounts" | "sa" => ObjectKind::ServiceAccount,
        "persistentvolumeclaim" | "persistentvolumeclaims" | "pvc" => {
            ObjectKind::PersistentVolumeClaim
        }
        "replicaset" | "replicasets" | "rs" => ObjectKind::ReplicaSet,
        "job" | "jobs" => ObjectKind::Job,
        "cronjob" | "cronjobs" | "cj" => ObjectKind::CronJob,
        "ingress" | "ingresses" | "ing" => ObjectKind::Ingress,
        other => match workload_kind(other) {
            Some(workload) => ObjectKind::Workload(workload),
            None => {
                return Err(format!(
                    "kubernetes object {reference:?}: unsupported kind {kind:?} (secret, \
                     configmap, deployment, statefulset, daemonset, replicaset, pod, service, \
                     serviceaccount, persistentvolumeclaim, job, cronjob, ingress)"
                ));
            }
        },
    };
    Ok((object_kind, name.to_owned()))
}

// ---------------------------------------------------------------------------------------
// Workload → pods

async fn pods_of_workload(
    client: &kube::Client,
    namespace: &str,
    kind: WorkloadKind,
    name: &str,
) -> Result<Map<String, Value>, String> {
    let what = format!("{}/{name} in namespace {namespace}", kind.as_str());
    let selector = match kind {
        WorkloadKind::Deployment => get_workload::<Deployment>(client, namespace, name, &what)
            .await?
            .spec
            .map(|spec| spec.selector),
        WorkloadKind::StatefulSet => get_workload::<StatefulSet>(client, namespace, name, &what)
            .await?
            .spec
            .map(|spec| spec.selector),
        WorkloadKind::DaemonSet => get_workload::<DaemonSet>(client, namespace, name, &what)
            .await?
            .spec
            .map(|spec| spec.selector),
    };
    let selector = selector.as_ref().map(selector_string).unwrap_or_default();
    if selector.is_empty() {
        return Err(format!(
            "{what}: has no pod selector (spec.selector.matchLabels is empty)"
        ));
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|error| {
            format!(
                "list pods in namespace {namespace} with labelSelector {selector:?} (for {}/{name}): {}",
                kind.as_str(),
                kube_error_text(&error)
            )
        })?;

    let mut summaries: Vec<PodSummary> = list.items.iter().map(PodSummary::of).collect();
    summaries.sort_by(|a, b| a.name.cmp(&b.name));
    let total = summaries.len();
    let ready = summaries.iter().filter(|pod| pod.ready).count();
    let restarts: i64 = summaries.iter().map(|pod| pod.restarts).sum();
    let oom_killed = summaries.iter().any(|pod| pod.oom_killed);
    // Pods not started yet (pending, no startTime) do not make the workload look new.
    let oldest = summaries
        .iter()
        .map(|pod| pod.started_at)
        .filter(|started| *started > 0)
        .min()
        .unwrap_or(0);

    let mut fields = Map::new();
    fields.insert(
        "pods".to_owned(),
        Value::Array(summaries.iter().map(PodSummary::to_value).collect()),
    );
    fields.insert("total".to_owned(), json!(total));
    fields.insert("ready".to_owned(), json!(ready));
    fields.insert("restarts".to_owned(), json!(restarts));
    fields.insert("oom_killed".to_owned(), json!(oom_killed));
    fields.insert("oldest_pod_started_at".to_owned(), json!(oldest));
    Ok(fields)
}

async fn get_workload<K>(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    what: &str,
) -> Result<K, String>
where
    K: kube::Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.get(name).await {
        Ok(object) => Ok(object),
        Err(kube::Error::Api(status)) if status.is_not_found() => Err(format!(
            "get {what}: not found (HTTP 404{})",
            if status.message.is_empty() {
                String::new()
            } else {
                format!(": {}", status.message)
            }
        )),
        Err(error) => Err(format!("get {what}: {}", kube_error_text(&error))),
    }
}

/// A label selector in the API's query syntax: `app=web,tier in (a,b),!legacy`.
fn selector_string(selector: &LabelSelector) -> String {
    let mut terms: Vec<String> = selector
        .match_labels
        .iter()
        .flat_map(BTreeMap::iter)
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    for expression in selector.match_expressions.iter().flatten() {
        let values = expression
            .values
            .as_ref()
            .map(|values| values.join(","))
            .unwrap_or_default();
        let key = &expression.key;
        terms.push(match expression.operator.as_str() {
            "In" => format!("{key} in ({values})"),
            "NotIn" => format!("{key} notin ({values})"),
            "Exists" => key.clone(),
            "DoesNotExist" => format!("!{key}"),
            // An operator this code does not know: selecting nothing is safer than
            // silently widening the selection.
            other => format!("{key} in (__unknown_operator_{other}__)"),
        });
    }
    terms.join(",")
}

struct PodSummary {
    name: String,
    ready: bool,
    restarts: i64,
    last_termination_reason: String,
    oom_killed: bool,
    started_at: i64,
}

impl PodSummary {
    fn of(pod: &Pod) -> PodSummary {
        let status = pod.status.as_ref();
        let ready = status
            .and_then(|status| status.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|condition| condition.type_ == "Ready" && condition.status == "True");
        let containers = status
            .and_then(|status| status.container_statuses.as_deref())
            .unwrap_or_default();
        let restarts = containers
            .iter()
            .map(|container| i64::from(container.restart_count))
            .sum();
        // Each container's latest termination: the current one when it is terminated now
        // (not restarted yet), else the previous one.
        let reasons: Vec<&str> = containers
            .iter()
            .filter_map(|container| {
                let current = container
                    .state
                    .as_ref()
                    .and_then(|state| state.terminated.as_ref());
                let last = container
                    .last_state
                    .as_ref()
                    .and_then(|state| state.terminated.as_ref());
                current
                    .and_then(|terminated| terminated.reason.as_deref())
                    .filter(|reason| !reason.is_empty())
                    .or_else(|| {
                        last.and_then(|terminated| terminated.reason.as_deref())
                            .filter(|reason| !reason.is_empty())
                    })
            })
            .collect();
        let oom_killed = reasons.contains(&"OOMKilled");
        let last_termination_reason = if oom_killed {
            "OOMKilled".to_owned()
        } else {
            reasons
                .first()
                .map(|reason| (*reason).to_owned())
                .unwrap_or_default()
        };
        PodSummary {
            name: pod.metadata.name.clone().unwrap_or_default(),
            ready,
            restarts,
            last_termination_reason,
            oom_killed,
            started_at: status
                .and_then(|status| status.start_time.as_ref())
                .map(unix_seconds)
                .unwrap_or(0),
        }
    }

    fn to_value(&self) -> Value {
        json!({
            "name": self.name,
            "ready": self.ready,
            "restarts": self.restarts,
            "last_termination_reason": self.last_termination_reason,
            "started_at": self.started_at,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Object → metadata

async fn object_metadata(
    client: &kube::Client,
    namespace: &str,
    kind: ObjectKind,
    name: &str,
) -> Result<Map<String, Value>, String> {
    let found = match kind {
        ObjectKind::Secret => metadata_of::<Secret>(client, namespace, name).await,
        ObjectKind::ConfigMap => metadata_of::<ConfigMap>(client, namespace, name).await,
        ObjectKind::Pod => metadata_of::<Pod>(client, namespace, name).await,
        ObjectKind::Service => metadata_of::<Service>(client, namespace, name).await,
        ObjectKind::ServiceAccount => metadata_of::<ServiceAccount>(client, namespace, name).await,
        ObjectKind::PersistentVolumeClaim => {
            metadata_of::<PersistentVolumeClaim>(client, namespace, name).await
        }
        ObjectKind::ReplicaSet => metadata_of::<ReplicaSet>(client, namespace, name).await,
        ObjectKind::Job => metadata_of::<Job>(client, namespace, name).await,
        ObjectKind::CronJob => metadata_of::<CronJob>(client, namespace, name).await,
        ObjectKind::Ingress => metadata_of::<Ingress>(client, namespace, name).await,
        ObjectKind::Workload(WorkloadKind::Deployment) => {
            metadata_of::<Deployment>(client, namespace, name).await
        }
        ObjectKind::Workload(WorkloadKind::StatefulSet) => {
            metadata_of::<StatefulSet>(client, namespace, name).await
        }
        ObjectKind::Workload(WorkloadKind::DaemonSet) => {
            metadata_of::<DaemonSet>(client, namespace, name).await
        }
    }
    .map_err(|error| {
        format!(
            "get metadata of {}/{name} in namespace {namespace}: {}",
            kind.as_str(),
            kube_error_text(&error)
        )
    })?;

    let mut fields = Map::new();
    match found {
        None => {
            fields.insert("object_exists".to_owned(), json!(false));
            fields.insert("object_last_change".to_owned(), json!(0));
            fields.insert("object_resource_version".to_owned(), json!(""));
        }
        Some(metadata) => {
            let created = metadata.creation_timestamp.as_ref().map(unix_seconds);
            let last_change = metadata
                .managed_fields
                .iter()
                .flatten()
                .filter_map(|entry| entry.time.as_ref().map(unix_seconds))
                .chain(created)
                .max()
                .unwrap_or(0);
            fields.insert("object_exists".to_owned(), json!(true));
            fields.insert("object_last_change".to_owned(), json!(last_change));
            fields.insert(
                "object_resource_version".to_owned(),
                json!(metadata.resource_version.unwrap_or_default()),
            );
        }
    }
    Ok(fields)
}

/// A metadata-only GET (`as=PartialObjectMetadata`): `None` when the object does not exist.
async fn metadata_of<K>(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<ObjectMeta>, kube::Error>
where
    K: kube::Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    Ok(api
        .get_metadata_opt(name)
        .await?
        .map(|partial| partial.metadata))
}

// ---------------------------------------------------------------------------------------
// Helpers

fn unix_seconds(time: &Time) -> i64 {
    time.0.as_second()
}

/// An API error as `HTTP 403 Forbidden: <the server's message>`; any other error with its
/// causes.
fn kube_error_text(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            let mut text = if status.code == 0 {
                "API error".to_owned()
            } else {
                format!("HTTP {}", status.code)
            };
            if !status.reason.is_empty() {
                text.push(' ');
                text.push_str(&status.reason);
            }
            if !status.message.is_empty() {
                text.push_str(": ");
                text.push_str(&status.message);
            }
            text
        }
        other => error_text(other),
    }
}

/// An error and each cause not already spelled out by the text before it.
pub(crate) fn error_text(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !cause_text.is_empty() && !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn parses_references() {
        assert_eq!(
            parse_workload("Deployment/web").unwrap(),
            (WorkloadKind::Deployment, "web".to_owned())
        );
        assert_eq!(
            parse_workload("sts/db").unwrap(),
            (WorkloadKind::StatefulSet, "db".to_owned())
        );
        assert!(parse_workload("secret/x").is_err());
        assert!(parse_workload("deployment/").is_err());
        assert!(parse_workload("web").is_err());
        assert_eq!(
            parse_object("secret/tls").unwrap(),
            (ObjectKind::Secret, "tls".to_owned())
        );
        assert_eq!(
            parse_object("daemonset/agent").unwrap(),
            (
                ObjectKind::Workload(WorkloadKind::DaemonSet),
                "agent".to_owned()
            )
        );
        assert!(parse_object("node/x").is_err());
    }

    #[test]
    fn names_must_be_rfc_1123() {
        for name in [
            "UPPER",
            "..",
            ".",
            "a/../b",
            "a?watch=1",
            "a%2Fb",
            "-a",
            "a b",
            "",
        ] {
            let reference = format!("deployment/{name}");
            assert!(parse_workload(&reference).is_err(), "{reference}");
            let reference = format!("secret/{name}");
            assert!(parse_object(&reference).is_err(), "{reference}");
            assert!(
                check_targets(None, Some(&reference)).is_err(),
                "{reference}"
            );
        }
        assert!(check_targets(Some("deployment/web-1"), Some("secret/tls.v2")).is_ok());
    }

    #[test]
    fn builds_selectors() {
        let selector = LabelSelector {
            match_labels: Some(BTreeMap::from([
                ("app".to_owned(), "web".to_owned()),
                ("tier".to_owned(), "front".to_owned()),
            ])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "track".to_owned(),
                    operator: "In".to_owned(),
                    values: Some(vec!["stable".to_owned(), "canary".to_owned()]),
                },
                LabelSelectorRequirement {
                    key: "legacy".to_owned(),
                    operator: "DoesNotExist".to_owned(),
                    values: None,
                },
            ]),
        };
        assert_eq!(
            selector_string(&selector),
            "app=web,tier=front,track in (stable,canary),!legacy"
        );
        assert_eq!(selector_string(&LabelSelector::default()), "");
    }
}
