//! kubernetes: the `kubernetes_logs`, `kubernetes_events` and `kubernetes_object` collectors
//! (one file each) and what they share: capped GETs on the API server and the pods a collector
//! is about. The namespace must be in `kubernetes.namespaces`, as for probes and actions
//! (checked by the caller before a client is handed over).

pub(super) mod events;
pub(super) mod logs;
pub(super) mod object;

use http_body_util::BodyExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ListParams;
use serde_json::Value;

use super::files::char_boundary_at_or_after;
use super::{Failure, MAX_API_BODY};
use crate::kubernetes::{Workload, error_text, get_workload};
use crate::probes::http::snippet;

/// The most of an error answer read, for its message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A GET on the API server: the response when it is a 2xx, else the API's `Status` in words.
async fn api_send(
    client: &kube::Client,
    request: Result<http::Request<Vec<u8>>, kube::core::request::Error>,
) -> Result<http::Response<kube::client::Body>, String> {
    let request = request.map_err(|error| format!("invalid request: {}", error_text(&error)))?;
    let response = client
        .send(request.map(kube::client::Body::from))
        .await
        .map_err(|error| error_text(&error))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let (body, _) = read_head(response.into_body(), MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let mut text = format!("HTTP {}", status.as_u16());
    match serde_json::from_slice::<Value>(&body) {
        Ok(answer) if answer["kind"] == "Status" => {
            for (field, separator) in [("reason", " "), ("message", ": ")] {
                if let Some(value) = answer[field].as_str().filter(|value| !value.is_empty()) {
                    text.push_str(separator);
                    text.push_str(value);
                }
            }
        }
        _ => {
            let detail = snippet(&body, 200);
            if !detail.is_empty() {
                text.push_str(": ");
                text.push_str(&detail);
            }
        }
    }
    Err(text)
}

/// A GET whose answer is one JSON document.
async fn api_json(
    client: &kube::Client,
    request: Result<http::Request<Vec<u8>>, kube::core::request::Error>,
) -> Result<Value, String> {
    let response = api_send(client, request).await?;
    let (body, complete) = read_head(response.into_body(), MAX_API_BODY).await?;
    if !complete {
        return Err(format!("the answer is larger than {MAX_API_BODY} bytes"));
    }
    serde_json::from_slice(&body).map_err(|error| format!("the answer is not JSON: {error}"))
}

/// Read at most `limit` bytes of a body: the bytes, and whether that was all of it.
async fn read_head(mut body: kube::client::Body, limit: usize) -> Result<(Vec<u8>, bool), String> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| format!("reading the answer: {}", error_text(&error)))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
                bytes.extend_from_slice(&data[..limit - bytes.len()]);
                return Ok((bytes, false));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok((bytes, true))
}

/// Read a whole body keeping only its last `keep` bytes: those bytes and the size of all.
async fn read_tail(mut body: kube::client::Body, keep: usize) -> Result<(Vec<u8>, u64), String> {
    let mut bytes = Vec::new();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| format!("reading the log: {}", error_text(&error)))?;
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            bytes.extend_from_slice(&data);
            // Drop the front now and then, not at every chunk.
            if bytes.len() > keep.saturating_mul(2).max(64 * 1024) {
                let start = char_boundary_at_or_after(&bytes, bytes.len() - keep);
                bytes.drain(..start);
            }
        }
    }
    if bytes.len() > keep {
        let start = char_boundary_at_or_after(&bytes, bytes.len() - keep);
        bytes.drain(..start);
    }
    Ok((bytes, total))
}

/// Every object of a namespaced list (`/api/v1/namespaces/{ns}/pods`, …) matching `selector`.
async fn list_items(
    client: &kube::Client,
    path: &str,
    selector: &str,
) -> Result<Vec<Value>, String> {
    let params = ListParams::default().labels(selector);
    let list = api_json(client, kube::core::Request::new(path).list(&params)).await?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}
// ---------------------------------------------------------------------------------------
// Kubernetes: which pods

/// The pods a collector is about: those of a workload (its selector read from the object) or
/// of a label selector (used only when no workload is named).
pub(super) struct PodsOf {
    /// The workload and its object, when one was named.
    workload: Option<(Workload, Value)>,
    /// The label selector, in the API's syntax.
    selector: String,
    /// The pods it selects now, sorted by name.
    pods: Vec<Value>,
}

impl PodsOf {
    pub(super) async fn resolve(
        client: &kube::Client,
        namespace: &str,
        workload: &Option<String>,
        selector: &Option<String>,
    ) -> Result<PodsOf, Failure> {
        let (workload, selector) = match (workload, selector) {
            (Some(reference), _) => {
                let workload = Workload::parse(namespace, reference).map_err(Failure::Failed)?;
                let object = get_workload(client, &workload)
                    .await
                    .map_err(|error| Failure::Failed(error.text()))?;
                let selector = workload_selector(&workload, &object).map_err(Failure::Failed)?;
                (Some((workload, object)), selector)
            }
            (None, Some(selector)) if !selector.trim().is_empty() => {
                (None, selector.trim().to_owned())
            }
            _ => {
                return Err(Failure::Failed(
                    "neither a workload nor a non-empty selector was given: refusing to read \
                     every pod of the namespace"
                        .to_owned(),
                ));
            }
        };
        let path = format!("/api/v1/namespaces/{namespace}/pods");
        let mut pods = list_items(client, &path, &selector)
            .await
            .map_err(|error| {
                Failure::Failed(format!(
                    "list pods in namespace {namespace} with labelSelector {selector:?}: {error}"
                ))
            })?;
        pods.sort_by(|a, b| name_of(a).cmp(name_of(b)));
        Ok(PodsOf {
            workload,
            selector,
            pods,
        })
    }
}

/// A workload's `spec.selector` in the API's query syntax; refused when it selects every pod
/// or uses an operator this code does not know (better than silently widening it).
fn workload_selector(workload: &Workload, object: &Value) -> Result<String, String> {
    let selector: LabelSelector = serde_json::from_value(object["spec"]["selector"].clone())
        .map_err(|error| format!("{workload}: unreadable spec.selector: {error}"))?;
    let selector = kube::core::Selector::try_from(selector)
        .map_err(|error| format!("{workload}: spec.selector: {error}"))?;
    if selector.selects_all() {
        return Err(format!(
            "{workload}: has no pod selector (spec.selector is empty)"
        ));
    }
    Ok(selector.to_string())
}

/// A container's `restartCount` (0 when the pod has no status for it).
fn restart_count(pod: &Value, container: &str) -> i64 {
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|list| pod["status"][*list].as_array())
        .flatten()
        .find(|status| status["name"].as_str() == Some(container))
        .and_then(|status| status["restartCount"].as_i64())
        .unwrap_or(0)
}

/// Pods whose evidence matters most first: restarted or not ready, then by name.
fn pod_priority(pod: &Value) -> (bool, &str) {
    let restarted = pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|status| status["restartCount"].as_i64().unwrap_or(0) > 0);
    let ready = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|condition| condition["type"] == "Ready" && condition["status"] == "True");
    // `false` sorts first: the troubled pods.
    let healthy = !restarted && ready;
    (healthy, name_of(pod))
}
