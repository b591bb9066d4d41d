//! workload: a Deployment, StatefulSet or DaemonSet in a namespace, and the requests nightshift
//! makes on one (get, strategic merge patch, the scale subresource). Each request is bounded by
//! [`REQUEST_TIMEOUT`] (the client's own `read_timeout`, when shorter, applies first) and fails
//! with a [`RequestError`] that keeps apart an answer of the API server, a request provably
//! never sent, and one sent whose answer was lost: what an action's outcome depends on.
//!
//! Note: kube's default client retries 429/503/504 by itself (`Config::default_retry`), so
//! such an answer reaches a caller only after its retries.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Api, ApiResource, DynamicObject, GetParams, Patch, PatchParams};
use serde_json::Value;

use super::names::{check_namespace, is_rfc1123_name};
use super::{error_text, status_text};

/// The `fieldManager` of every write.
pub const FIELD_MANAGER: &str = "nightshift";

/// The longest any one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl WorkloadKind {
    /// The kind as kubectl spells it in `kind/name`: `deployment`, `statefulset`, `daemonset`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployment",
            WorkloadKind::StatefulSet => "statefulset",
            WorkloadKind::DaemonSet => "daemonset",
        }
    }

    /// The kind as kubectl accepts it: singular, plural or short name, any case.
    pub fn parse(kind: &str) -> Option<WorkloadKind> {
        match kind.to_ascii_lowercase().as_str() {
            "deployment" | "deployments" | "deploy" => Some(WorkloadKind::Deployment),
            "statefulset" | "statefulsets" | "sts" => Some(WorkloadKind::StatefulSet),
            "daemonset" | "daemonsets" | "ds" => Some(WorkloadKind::DaemonSet),
            _ => None,
        }
    }

    fn api_resource(self) -> ApiResource {
        match self {
            WorkloadKind::Deployment => ApiResource::erase::<Deployment>(&()),
            WorkloadKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
            WorkloadKind::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A Deployment, StatefulSet or DaemonSet in a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

impl Workload {
    /// `namespace` and `deployment/NAME` (or `statefulset/…`, `daemonset/…`, kubectl's
    /// plural and short kind names too). The namespace must be an RFC 1123 label and the
    /// name an RFC 1123 subdomain: nothing is trimmed, decoded or otherwise repaired.
    pub fn parse(namespace: &str, reference: &str) -> Result<Workload, String> {
        let Some((kind, name)) = reference.split_once('/') else {
            return Err(format!(
                "kubernetes workload {reference:?}: expected KIND/NAME, e.g. deployment/web"
            ));
        };
        let kind = WorkloadKind::parse(kind).ok_or_else(|| {
            format!(
                "kubernetes workload {reference:?}: kind {kind:?} is not one of deployment, \
                 statefulset, daemonset"
            )
        })?;
        if !is_rfc1123_name(name) {
            return Err(format!(
                "kubernetes workload {reference:?}: {name:?} is not a valid object name \
                 (RFC 1123: lower case letters, digits, '-' and '.', at most 253)"
            ));
        }
        check_namespace(namespace)?;
        Ok(Workload {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    /// `kind/namespace/name`: the target for cooldowns and holds.
    pub fn target(&self) -> String {
        format!("{}/{}/{}", self.kind.as_str(), self.namespace, self.name)
    }

    /// `kind/namespace/name` (a [`Workload::target`]) back to a workload.
    pub fn from_target(target: &str) -> Result<Workload, String> {
        let mut parts = target.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(kind), Some(namespace), Some(name)) => {
                Workload::parse(namespace, &format!("{kind}/{name}"))
            }
            _ => Err(format!("unreadable target {target}")),
        }
    }

    fn api(&self, client: &kube::Client) -> Api<DynamicObject> {
        Api::namespaced_with(client.clone(), &self.namespace, &self.kind.api_resource())
    }

    /// `/apis/apps/v1/namespaces/{namespace}/{deployments|statefulsets|daemonsets}`.
    fn collection_path(&self) -> String {
        // The kind's name and an s.
        format!(
            "/apis/apps/v1/namespaces/{}/{}s",
            self.namespace,
            self.kind.as_str()
        )
    }
}

impl fmt::Display for Workload {
    /// `deployment/web in namespace apps`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}/{} in namespace {}",
            self.kind.as_str(),
            self.name,
            self.namespace
        )
    }
}

// ---------------------------------------------------------------------------------------
// Requests

/// The workload exactly as the API serves it (`apiVersion`, `kind`, `metadata`, `spec`,
/// `status`): one `GET …/{deployments|statefulsets|daemonsets}/{name}`.
pub async fn get_workload(
    client: &kube::Client,
    workload: &Workload,
) -> Result<Value, RequestError> {
    let what = format!("get {workload}");
    let request = kube::core::Request::new(workload.collection_path())
        .get(&workload.name, &GetParams::default())
        .map_err(|error| RequestError {
            what: what.clone(),
            kind: ErrorKind::Invalid(error_text(&error)),
        })?;
    bounded(client.request::<Value>(request))
        .await
        .map_err(|error| error.context(&what))
}

/// One strategic merge patch of the workload, as [`FIELD_MANAGER`].
pub async fn patch_workload(
    client: &kube::Client,
    workload: &Workload,
    patch: Value,
) -> Result<(), RequestError> {
    bounded(
        workload
            .api(client)
            .patch(&workload.name, &patch_params(), &Patch::Strategic(patch)),
    )
    .await
    .map(|_| ())
    .map_err(|error| error.context(&workload.to_string()))
}

/// The replica count from the scale subresource (absent `spec.replicas` is 0).
pub async fn get_scale(client: &kube::Client, workload: &Workload) -> Result<i32, RequestError> {
    let scale = bounded(workload.api(client).get_scale(&workload.name))
        .await
        .map_err(|error| error.context(&format!("get scale of {workload}")))?;
    Ok(scale.spec.and_then(|spec| spec.replicas).unwrap_or(0))
}

/// Set the replica count through the scale subresource: a JSON merge patch
/// `{"spec":{"replicas":N}}`.
pub async fn patch_scale(
    client: &kube::Client,
    workload: &Workload,
    replicas: i32,
) -> Result<(), RequestError> {
    let patch = Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}}));
    bounded(
        workload
            .api(client)
            .patch_scale(&workload.name, &patch_params(), &patch),
    )
    .await
    .map(|_| ())
    .map_err(|error| error.context(&format!("scale {workload}")))
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

// ---------------------------------------------------------------------------------------
// Errors

#[derive(Debug)]
pub enum ErrorKind {
    /// The API server answered with this status: `text` in words, `message` the server's own.
    Status {
        code: u16,
        text: String,
        message: String,
    },
    /// Provably never sent: no connection (refused, DNS, TLS), no credentials, a request
    /// that could not be built.
    NotSent(String),
    /// The request could not be built: a bug, not worth retrying.
    Invalid(String),
    /// Sent, and no usable answer came back (transport failure after sending, timeout).
    Lost(String),
    /// A 2xx answer that could not be read.
    Answer(String),
}

/// A failed request: what was asked (`get deployment/web in namespace apps`) and how it failed.
#[derive(Debug)]
pub struct RequestError {
    pub what: String,
    pub kind: ErrorKind,
}

impl RequestError {
    /// Say what was being done: `set env: deployment/web in namespace apps: …`.
    pub fn context(mut self, what: &str) -> RequestError {
        if self.what.is_empty() {
            self.what = what.to_owned();
        } else {
            self.what = format!("{what}: {}", self.what);
        }
        self
    }

    pub fn text(&self) -> String {
        let detail = match &self.kind {
            ErrorKind::Status { text, .. } => text.clone(),
            ErrorKind::NotSent(text) => format!("not sent: {text}"),
            ErrorKind::Invalid(text) => format!("invalid request: {text}"),
            ErrorKind::Lost(text) => format!("no answer: {text}"),
            ErrorKind::Answer(text) => format!("unreadable answer: {text}"),
        };
        if self.what.is_empty() {
            detail
        } else {
            format!("{}: {detail}", self.what)
        }
    }
}

/// Run one request within [`REQUEST_TIMEOUT`], classifying its error.
async fn bounded<T>(
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, RequestError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(RequestError {
            what: String::new(),
            kind: classify(&error),
        }),
        Err(_) => Err(RequestError {
            what: String::new(),
            kind: ErrorKind::Lost(format!("timed out after {}s", REQUEST_TIMEOUT.as_secs())),
        }),
    }
}

fn classify(error: &kube::Error) -> ErrorKind {
    match error {
        kube::Error::Api(status) => ErrorKind::Status {
            code: status.code,
            text: status_text(status.code, &status.reason, &status.message),
            message: status.message.clone(),
        },
        kube::Error::Auth(_)
        | kube::Error::TlsRequired
        | kube::Error::ProxyProtocolUnsupported { .. }
        | kube::Error::ProxyProtocolDisabled { .. } => ErrorKind::NotSent(error_text(error)),
        kube::Error::BuildRequest(_) | kube::Error::HttpError(_) => {
            ErrorKind::Invalid(error_text(error))
        }
        kube::Error::SerdeError(_) | kube::Error::FromUtf8(_) => {
            ErrorKind::Answer(error_text(error))
        }
        _ if never_connected(error) => ErrorKind::NotSent(error_text(error)),
        _ => ErrorKind::Lost(error_text(error)),
    }
}

/// Did the request fail while connecting (TCP connect, DNS, TLS handshake, proxy), so that
/// not a byte of it reached the API server? hyper-util's client (the one kube uses) says so
/// with `is_connect()`; its pool re-sends by itself a request that was never written on a
/// reused connection. Anything else (a read timeout, a reset after sending) may have been
/// received.
fn never_connected(error: &kube::Error) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(cause) = current {
        if let Some(client_error) = cause.downcast_ref::<hyper_util::client::legacy::Error>() {
            return client_error.is_connect();
        }
        current = cause.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_workloads() {
        let workload = Workload::parse("apps", "deployment/web").unwrap();
        assert_eq!(workload.kind, WorkloadKind::Deployment);
        assert_eq!(workload.target(), "deployment/apps/web");
        assert_eq!(workload.to_string(), "deployment/web in namespace apps");
        assert_eq!(
            Workload::parse("apps", "STS/db-0.x").unwrap().target(),
            "statefulset/apps/db-0.x"
        );
        assert_eq!(
            Workload::parse("apps", "ds/agent").unwrap().kind,
            WorkloadKind::DaemonSet
        );
        for (namespace, reference) in [
            ("apps", "web"),
            ("apps", "pod/web"),
            ("apps", "deployment/"),
            ("apps", "deployment/Web"),
            ("apps", "deployment/web/x"),
            ("apps", "deployment/ web"),
            ("apps", "deployment/../../etc"),
            ("apps", "deployment/$(reboot)"),
            ("apps", "deployment/--kubeconfig=/x"),
            ("a.b", "deployment/web"),
            ("", "deployment/web"),
            ("Apps", "deployment/web"),
            ("apps;rm", "deployment/web"),
        ] {
            assert!(
                Workload::parse(namespace, reference).is_err(),
                "{namespace:?} {reference:?}"
            );
        }
    }
}
