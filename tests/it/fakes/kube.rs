//! A fake Kubernetes API server, answering as the real one does for the requests nightshift
//! makes: namespaced objects under `/api/v1/…` and `/apis/{group}/{version}/…`, kept in an
//! in-memory store.
//!
//! * `GET …/namespaces/{ns}/{plural}/{name}`: the object, or only its metadata as
//!   `PartialObjectMetadata` when the `Accept` header asks for it
//!   (`application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1`), or a 404 `Status`.
//! * `GET …/namespaces/{ns}/{plural}?labelSelector=…`: a `{Kind}List` of the matching objects
//!   (equality and set-based selectors).
//! * `PATCH /apis/apps/v1/namespaces/{ns}/{deployments|statefulsets|daemonsets}/{name}`: the
//!   patch is applied with the real semantics of its `Content-Type` by kubectl itself
//!   (`kubectl patch --local --type strategic|merge|json -o json -f <current object> -p
//!   <patch>`), so a strategic merge patch merges `containers` and `env` by name and a JSON
//!   merge patch replaces those lists whole. The result is checked as the API server would
//!   (an env entry with both `value` and `valueFrom`, a container without an image, negative
//!   replicas: 422 `Invalid`) and stored, bumping `metadata.resourceVersion` (and
//!   `metadata.generation` when `spec` changed; a patch that changes nothing bumps nothing).
//!   A `metadata.resourceVersion` in the patch is a precondition (409 `Conflict` when stale).
//!   Any other content type: 415. A JSON merge patch that touches `containers`,
//!   `initContainers` or `env` is applied as the server would, but also noted as unexpected:
//!   nightshift must never send one.
//! * `GET …/namespaces/{ns}/{plural}?fieldSelector=…`: equality (`=`, `==`) and `!=` on
//!   `metadata.name`, `metadata.namespace` and, for events, `involvedObject.{kind,name,
//!   namespace,uid,apiVersion}`, `reason`, `type` (comma-separated, all must hold); another
//!   field is a 400, as the real server answers. `limit` and `continue` page a list.
//! * `GET /api/v1/namespaces/{ns}/pods/{pod}/log?container=…&tailLines=…&previous=…`: the log
//!   registered with [`FakeKube::set_log`] (empty when none), `text/plain`; `tailLines` keeps
//!   the last lines and `limitBytes` the first bytes (`sinceSeconds` is recorded, not
//!   applied). As the real server: 404 for an unknown pod, 400 when `container` is missing
//!   on a pod with several containers or names none of its containers, and 400 for
//!   `previous=true` when the container never restarted or no previous log is registered.
//! * `GET` / `PATCH …/{deployments|statefulsets}/{name}/scale`: the `autoscaling/v1` `Scale`
//!   view of the workload (`spec.replicas` omitted when 0, as Go's `omitempty` does;
//!   `status.selector` as a string); a PATCH (merge, strategic or JSON patch, applied by
//!   kubectl to the `Scale`) sets the workload's `spec.replicas`.
//! * Every request must carry `Authorization: Bearer <token>`, else 401 `Status`.
//! * Every request is recorded in [`FakeKube::journal`] (method, path, query, headers with the
//!   content type, body); [`FakeKube::calls`] summarises them as `"METHOD path [content type]"`.
//!   A request the fake was not built for is noted as unexpected (`assert_no_unexpected`).
//! * Faults for one method and exact path: a status code (answered as a `Status` object with
//!   the matching reason) and/or a delay, before the request is handled ([`FakeKube::fail`],
//!   [`FakeKube::delay`], [`FakeKube::fail_times`]) or after a write took effect, so that the
//!   answer is lost ([`FakeKube::fail_after_apply`], [`FakeKube::delay_after_apply`]).
//!
//! Other write verbs (PUT, POST, DELETE, server-side apply) are not served: they are recorded
//! as unexpected and answered 405 (415 for an apply patch).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{Journal, Recorded, Server, pause};

/// The `Accept` a metadata-only GET sends.
pub const METADATA_ACCEPT: &str = "as=PartialObjectMetadata";

/// Resource kinds the fake knows: (API prefix, plural, Kind).
const KINDS: &[(&str, &str, &str)] = &[
    ("api/v1", "pods", "Pod"),
    ("api/v1", "secrets", "Secret"),
    ("api/v1", "configmaps", "ConfigMap"),
    ("api/v1", "services", "Service"),
    ("api/v1", "serviceaccounts", "ServiceAccount"),
    ("api/v1", "events", "Event"),
    ("apis/apps/v1", "deployments", "Deployment"),
    ("apis/apps/v1", "statefulsets", "StatefulSet"),
    ("apis/apps/v1", "daemonsets", "DaemonSet"),
    ("apis/apps/v1", "replicasets", "ReplicaSet"),
];

/// Where an object lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectKey {
    /// `api/v1` or `apis/{group}/{version}`.
    pub api: String,
    pub plural: String,
    pub namespace: String,
    pub name: String,
}

/// The content types of a PATCH, as the API server names them.
pub const STRATEGIC_MERGE_PATCH: &str = "application/strategic-merge-patch+json";
pub const MERGE_PATCH: &str = "application/merge-patch+json";
pub const JSON_PATCH: &str = "application/json-patch+json";
pub const APPLY_PATCH: &str = "application/apply-patch+yaml";

/// Workload kinds the fake patches, and those with a `scale` subresource.
const PATCHABLE: &[&str] = &["deployments", "statefulsets", "daemonsets"];
const SCALABLE: &[&str] = &["deployments", "statefulsets"];

/// An injected misbehaviour for requests with this method and exact path.
#[derive(Debug, Clone)]
struct Fault {
    method: Method,
    path: String,
    status: Option<u16>,
    delay: Duration,
    /// Handle the request (a write takes effect) first, then misbehave: the answer is lost.
    after: bool,
    /// How many more requests this fault applies to (`None`: all).
    remaining: Option<usize>,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<ObjectKey, Value>,
    faults: Vec<Fault>,
    resource_version: u64,
    /// Requests answered with a Secret's data (a full GET or LIST of secrets).
    secret_data_served: Vec<String>,
    /// Pod logs by (namespace, pod, container, previous).
    logs: BTreeMap<(String, String, String, bool), String>,
}

/// The shared parts a request handler needs.
#[derive(Clone)]
struct Shared {
    journal: Journal,
    state: Arc<Mutex<State>>,
    /// Writes are applied one at a time (a read, kubectl, a store), as etcd serialises them.
    writes: Arc<tokio::sync::Mutex<()>>,
    token: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub struct FakeKube {
    pub journal: Journal,
    pub token: String,
    state: Arc<Mutex<State>>,
    server: Server,
}

impl FakeKube {
    pub async fn start() -> FakeKube {
        Self::start_with_token("fake-token-3f9a").await
    }

    pub async fn start_with_token(token: &str) -> FakeKube {
        let journal = Journal::default();
        let state = Arc::new(Mutex::new(State {
            resource_version: 1000,
            ..State::default()
        }));
        let shared = Shared {
            journal: journal.clone(),
            state: state.clone(),
            writes: Arc::new(tokio::sync::Mutex::new(())),
            token: token.to_owned(),
        };
        let server = Server::serve(shared, handle).await;
        FakeKube {
            journal,
            token: token.to_owned(),
            state,
            server,
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Write a kubeconfig for this server (context `fake`, a user with the token) into
    /// `dir` and return its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            kubeconfig_yaml(&[("fake", &self.url())], "fake", &self.token),
        )
        .expect("write kubeconfig");
        path
    }

    /// Store an object (its `apiVersion`, `kind`, `metadata.namespace` and `metadata.name`
    /// say where), filling `resourceVersion`, `uid` and `creationTimestamp` when missing.
    pub fn put(&self, mut object: Value) -> ObjectKey {
        let api_version = object["apiVersion"]
            .as_str()
            .expect("apiVersion")
            .to_owned();
        let kind = object["kind"].as_str().expect("kind").to_owned();
        let api = if api_version.contains('/') {
            format!("apis/{api_version}")
        } else {
            format!("api/{api_version}")
        };
        let plural = KINDS
            .iter()
            .find(|(prefix, _, known)| *prefix == api && *known == kind)
            .map(|(_, plural, _)| (*plural).to_owned())
            .unwrap_or_else(|| format!("{}s", kind.to_ascii_lowercase()));
        let mut state = self.lock();
        state.resource_version += 1;
        let version = state.resource_version.to_string();
        let metadata = object["metadata"].as_object_mut().expect("metadata");
        let namespace = metadata["namespace"]
            .as_str()
            .expect("namespace")
            .to_owned();
        let name = metadata["name"].as_str().expect("name").to_owned();
        metadata
            .entry("resourceVersion")
            .or_insert_with(|| json!(version));
        metadata
            .entry("uid")
            .or_insert_with(|| json!(format!("00000000-0000-4000-8000-{:012}", version)));
        metadata
            .entry("creationTimestamp")
            .or_insert_with(|| json!("2026-01-01T00:00:00Z"));
        let key = ObjectKey {
            api,
            plural,
            namespace,
            name,
        };
        state.objects.insert(key.clone(), object);
        key
    }

    pub fn get(&self, key: &ObjectKey) -> Option<Value> {
        self.lock().objects.get(key).cloned()
    }

    /// The stored object of a workload (`kind` as `deployment`, `statefulset`, `daemonset`).
    pub fn workload_object(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        self.get(&workload_key(kind, namespace, name))
    }

    fn add_fault(&self, method: Method, path: &str, status: Option<u16>, delay: Duration) {
        self.lock().faults.push(Fault {
            method,
            path: path.to_owned(),
            status,
            delay,
            after: false,
            remaining: None,
        });
    }

    /// Answer `method path` with this HTTP status (as a `Status` object), without handling
    /// the request (a write does not take effect).
    pub fn fail(&self, method: Method, path: &str, status: u16) {
        self.add_fault(method, path, Some(status), Duration::ZERO);
    }

    /// Like [`FakeKube::fail`], for the next `times` such requests only.
    pub fn fail_times(&self, method: Method, path: &str, status: u16, times: usize) {
        self.lock().faults.push(Fault {
            method,
            path: path.to_owned(),
            status: Some(status),
            delay: Duration::ZERO,
            after: false,
            remaining: Some(times),
        });
    }

    /// Wait this long before handling `method path`.
    pub fn delay(&self, method: Method, path: &str, delay: Duration) {
        self.add_fault(method, path, None, delay);
    }

    /// Handle `method path` (a write takes effect), then answer with this HTTP status
    /// instead of the result: the change happened and its answer was lost.
    pub fn fail_after_apply(&self, method: Method, path: &str, status: u16) {
        self.lock().faults.push(Fault {
            method,
            path: path.to_owned(),
            status: Some(status),
            delay: Duration::ZERO,
            after: true,
            remaining: None,
        });
    }

    /// Handle `method path` (a write takes effect), then wait this long before answering.
    pub fn delay_after_apply(&self, method: Method, path: &str, delay: Duration) {
        self.lock().faults.push(Fault {
            method,
            path: path.to_owned(),
            status: None,
            delay,
            after: true,
            remaining: None,
        });
    }

    /// Every request so far as `"METHOD path"`, with ` [content type]` for requests that
    /// carry a body (the query string is left out: see the journal for it).
    pub fn calls(&self) -> Vec<String> {
        self.journal.requests().iter().map(call_line).collect()
    }

    /// The requests other than GETs (the writes).
    pub fn writes(&self) -> Vec<Recorded> {
        self.journal
            .requests()
            .into_iter()
            .filter(|request| request.method != Method::GET)
            .collect()
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Requests that were answered with Secret data (should stay empty for nightshift).
    pub fn secret_data_served(&self) -> Vec<String> {
        self.lock().secret_data_served.clone()
    }

    /// The log of one container of a pod: its current one, or with `previous` the one of
    /// the container that ran before its last restart.
    pub fn set_log(&self, namespace: &str, pod: &str, container: &str, previous: bool, text: &str) {
        self.lock().logs.insert(
            (
                namespace.to_owned(),
                pod.to_owned(),
                container.to_owned(),
                previous,
            ),
            text.to_owned(),
        );
    }

    /// Store an event about the stored object at `key` (its kind, name, namespace and uid
    /// as `involvedObject`), last seen at `time` (RFC 3339).
    pub fn event_for(
        &self,
        key: &ObjectKey,
        event_type: &str,
        reason: &str,
        message: &str,
        time: &str,
    ) -> ObjectKey {
        let object = self.get(key).expect("event_for: no such object");
        // Named as the API server names events: the object's name and a unique suffix.
        let suffix = self.lock().resource_version + 1;
        let name = format!("{}.{suffix:016x}", key.name);
        let mut event = event(
            &key.namespace,
            &name,
            object["kind"].as_str().unwrap_or_default(),
            &key.name,
            event_type,
            reason,
            message,
            time,
        );
        event["involvedObject"]["uid"] = object["metadata"]["uid"].clone();
        event["involvedObject"]["apiVersion"] = object["apiVersion"].clone();
        self.put(event)
    }
}

/// Does this request ask for metadata only?
pub fn is_metadata_only(request: &Recorded) -> bool {
    request.header("accept").contains(METADATA_ACCEPT)
}

/// A request's media type: the `Content-Type` without parameters, lower case ("" if none).
pub fn content_type(request: &Recorded) -> String {
    request
        .header("content-type")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// A request's body as JSON (`Value::Null` when empty or not JSON).
pub fn body_json(request: &Recorded) -> Value {
    serde_json::from_slice(&request.body).unwrap_or(Value::Null)
}

/// `"METHOD path"`, plus ` [content type]` when the request has a body.
pub fn call_line(request: &Recorded) -> String {
    if request.body.is_empty() {
        format!("{} {}", request.method, request.path)
    } else {
        format!(
            "{} {} [{}]",
            request.method,
            request.path,
            content_type(request)
        )
    }
}

/// Where a workload is stored (`kind` as `deployment`, `statefulset` or `daemonset`).
pub fn workload_key(kind: &str, namespace: &str, name: &str) -> ObjectKey {
    ObjectKey {
        api: "apis/apps/v1".to_owned(),
        plural: format!("{}s", kind.to_ascii_lowercase()),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

/// The API path of a workload (`kind` as `deployment`, `statefulset` or `daemonset`).
pub fn workload_path(kind: &str, namespace: &str, name: &str) -> String {
    format!(
        "/apis/apps/v1/namespaces/{namespace}/{}s/{name}",
        kind.to_ascii_lowercase()
    )
}

/// A kubeconfig with one context per `(name, server)`, all using one token user.
pub fn kubeconfig_yaml(contexts: &[(&str, &str)], current: &str, token: &str) -> String {
    let mut clusters = String::new();
    let mut context_list = String::new();
    for (name, server) in contexts {
        clusters.push_str(&format!(
            "- name: {name}\n  cluster:\n    server: {server}\n"
        ));
        context_list.push_str(&format!(
            "- name: {name}\n  context:\n    cluster: {name}\n    user: nightshift\n    namespace: default\n"
        ));
    }
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n{clusters}contexts:\n{context_list}\
         current-context: {current}\npreferences: {{}}\nusers:\n- name: nightshift\n  user:\n    token: {token}\n"
    )
}

// ---------------------------------------------------------------------------------------
// Fixtures in the API's JSON

/// A Deployment, StatefulSet or DaemonSet selecting pods by `labels`.
pub fn workload(kind: &str, namespace: &str, name: &str, labels: &[(&str, &str)]) -> Value {
    let labels: Map<String, Value> = labels
        .iter()
        .map(|(key, value)| ((*key).to_owned(), json!(value)))
        .collect();
    let mut spec = json!({
        "selector": {"matchLabels": labels},
        "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.2.3"}]}
        }
    });
    if kind != "DaemonSet" {
        spec["replicas"] = json!(2);
    }
    if kind == "StatefulSet" {
        spec["serviceName"] = json!(name);
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "generation": 3,
            "labels": labels,
            "annotations": {"deployment.kubernetes.io/revision": "3"}
        },
        "spec": spec,
        "status": {"observedGeneration": 3}
    })
}

/// One container's status in a [`PodFixture`].
#[derive(Debug, Clone)]
pub struct ContainerFixture {
    pub name: String,
    pub restarts: i32,
    /// `lastState.terminated.reason`.
    pub last_terminated: Option<String>,
    /// `state.terminated.reason` (terminated now, not restarted yet); else running.
    pub terminated_now: Option<String>,
}

/// A Pod as the API returns it, built up field by field.
#[derive(Debug, Clone)]
pub struct PodFixture {
    pub namespace: String,
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub ready: bool,
    pub start_time: Option<String>,
    pub containers: Vec<ContainerFixture>,
}

impl PodFixture {
    pub fn new(namespace: &str, name: &str, labels: &[(&str, &str)]) -> PodFixture {
        PodFixture {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            labels: labels
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
            ready: true,
            start_time: Some("2026-03-01T10:00:00Z".to_owned()),
            containers: vec![ContainerFixture {
                name: "app".to_owned(),
                restarts: 0,
                last_terminated: None,
                terminated_now: None,
            }],
        }
    }

    pub fn ready(mut self, ready: bool) -> Self {
        self.ready = ready;
        self
    }

    pub fn started(mut self, start_time: Option<&str>) -> Self {
        self.start_time = start_time.map(str::to_owned);
        self
    }

    /// Add (or, for the default `app`, replace) a container.
    pub fn container(
        mut self,
        name: &str,
        restarts: i32,
        last_terminated: Option<&str>,
        terminated_now: Option<&str>,
    ) -> Self {
        self.containers.retain(|container| container.name != name);
        self.containers.push(ContainerFixture {
            name: name.to_owned(),
            restarts,
            last_terminated: last_terminated.map(str::to_owned),
            terminated_now: terminated_now.map(str::to_owned),
        });
        self
    }

    pub fn to_json(&self) -> Value {
        let labels: Map<String, Value> = self
            .labels
            .iter()
            .map(|(key, value)| (key.clone(), json!(value)))
            .collect();
        let ready = if self.ready { "True" } else { "False" };
        let statuses: Vec<Value> = self
            .containers
            .iter()
            .map(|container| {
                let state = match &container.terminated_now {
                    Some(reason) => json!({"terminated": {
                        "exitCode": 137, "reason": reason,
                        "startedAt": "2026-03-01T10:00:00Z", "finishedAt": "2026-03-01T11:00:00Z",
                        "containerID": "containerd://aaaa"
                    }}),
                    None => json!({"running": {"startedAt": "2026-03-01T10:05:00Z"}}),
                };
                let last_state = match &container.last_terminated {
                    Some(reason) => json!({"terminated": {
                        "exitCode": 137, "reason": reason,
                        "startedAt": "2026-03-01T10:00:00Z", "finishedAt": "2026-03-01T10:04:59Z",
                        "containerID": "containerd://bbbb"
                    }}),
                    None => json!({}),
                };
                json!({
                    "name": container.name,
                    "state": state,
                    "lastState": last_state,
                    "ready": self.ready && container.terminated_now.is_none(),
                    "restartCount": container.restarts,
                    "image": "registry.example/app:1.2.3",
                    "imageID": "registry.example/app@sha256:0123",
                    "containerID": "containerd://cccc",
                    "started": container.terminated_now.is_none()
                })
            })
            .collect();
        let mut status = json!({
            "phase": "Running",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-03-01T10:00:00Z"},
                {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-03-01T10:00:00Z"},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": "2026-03-01T10:00:01Z"},
                {"type": "Ready", "status": ready, "lastTransitionTime": "2026-03-01T10:00:01Z"}
            ],
            "hostIP": "10.0.0.5",
            "podIP": "10.244.1.7",
            "qosClass": "Burstable",
            "containerStatuses": statuses
        });
        if let Some(start) = &self.start_time {
            status["startTime"] = json!(start);
        }
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": labels,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{}-rs", self.name), "uid": "11111111-1111-4111-8111-111111111111", "controller": true}]
            },
            "spec": {
                "containers": self.containers.iter().map(|container| json!({"name": container.name, "image": "registry.example/app:1.2.3"})).collect::<Vec<_>>(),
                "restartPolicy": "Always",
                "nodeName": "node-1"
            },
            "status": status
        })
    }
}

/// A core/v1 Event about `involved_kind/involved_name` (which need not exist any more), seen
/// once at `time`, as the API lists it.
#[allow(clippy::too_many_arguments)]
pub fn event(
    namespace: &str,
    name: &str,
    involved_kind: &str,
    involved_name: &str,
    event_type: &str,
    reason: &str,
    message: &str,
    time: &str,
) -> Value {
    let api_version = match involved_kind {
        "Pod" | "Node" | "Service" | "PersistentVolumeClaim" => "v1",
        _ => "apps/v1",
    };
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": {
            "kind": involved_kind,
            "namespace": namespace,
            "name": involved_name,
            "apiVersion": api_version
        },
        "reason": reason,
        "message": message,
        "source": {"component": "fake-controller"},
        "firstTimestamp": time,
        "lastTimestamp": time,
        "count": 1,
        "type": event_type,
        "eventTime": null,
        "reportingComponent": "fake-controller",
        "reportingInstance": ""
    })
}

/// A ReplicaSet owned by `owner` (a stored Deployment: its name and uid), selecting `labels`.
pub fn replica_set(namespace: &str, name: &str, owner: &Value, labels: &[(&str, &str)]) -> Value {
    let labels: Map<String, Value> = labels
        .iter()
        .map(|(key, value)| ((*key).to_owned(), json!(value)))
        .collect();
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": true,
                "blockOwnerDeletion": true
            }]
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.2.3"}]}
            }
        },
        "status": {"replicas": 2}
    })
}

/// A Secret with data and the given `managedFields` times.
pub fn secret(namespace: &str, name: &str, created: &str, managed_times: &[&str]) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": created,
            "managedFields": managed_fields(managed_times)
        },
        "type": "kubernetes.io/tls",
        // "super-secret-certificate" / "super-secret-key": the fake notes any answer that
        // carries them.
        "data": {"tls.crt": "c3VwZXItc2VjcmV0LWNlcnRpZmljYXRl", "tls.key": "c3VwZXItc2VjcmV0LWtleQ=="}
    })
}

/// A ConfigMap with the given `managedFields` times.
pub fn configmap(namespace: &str, name: &str, created: &str, managed_times: &[&str]) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": created,
            "managedFields": managed_fields(managed_times)
        },
        "data": {"feature_flags": "on"}
    })
}

fn managed_fields(times: &[&str]) -> Value {
    Value::Array(
        times
            .iter()
            .enumerate()
            .map(|(index, time)| {
                json!({
                    "manager": if index == 0 { "kubectl-create" } else { "kubectl-edit" },
                    "operation": if index == 0 { "Update" } else { "Apply" },
                    "apiVersion": "v1",
                    "time": time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:data": {".": {}}}
                })
            })
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------
// Serving

/// A path under `/api/v1` or `/apis/{group}/{version}`, namespaced.
#[derive(Debug)]
struct ResourcePath {
    api: String,
    group: String,
    namespace: String,
    plural: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<ResourcePath> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (api, group, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("api/v1".to_owned(), String::new(), rest),
        ["apis", group, version, rest @ ..] => {
            (format!("apis/{group}/{version}"), (*group).to_owned(), rest)
        }
        _ => return None,
    };
    match rest {
        ["namespaces", namespace, plural, tail @ ..] if tail.len() <= 2 => Some(ResourcePath {
            api,
            group,
            namespace: (*namespace).to_owned(),
            plural: (*plural).to_owned(),
            name: tail.first().map(|name| (*name).to_owned()),
            subresource: tail.get(1).map(|sub| (*sub).to_owned()),
        }),
        _ => None,
    }
}

async fn handle(shared: Shared, request: Request<Body>) -> Response {
    let journal = &shared.journal;
    let request = journal.record(request).await;
    if request.header("authorization") != format!("Bearer {}", shared.token) {
        journal.unexpected(&request);
        return status_response(401, "Unauthorized", "Unauthorized", None);
    }
    let faults = {
        let mut state = shared.lock();
        let mut matching = Vec::new();
        for fault in state.faults.iter_mut() {
            if fault.method != request.method || fault.path != request.path {
                continue;
            }
            match &mut fault.remaining {
                Some(0) => continue,
                Some(remaining) => *remaining -= 1,
                None => {}
            }
            matching.push(fault.clone());
        }
        state.faults.retain(|fault| fault.remaining != Some(0));
        matching
    };
    let (after, before): (Vec<Fault>, Vec<Fault>) =
        faults.into_iter().partition(|fault| fault.after);
    for fault in &before {
        pause(fault.delay).await;
    }
    if let Some(code) = before.iter().find_map(|fault| fault.status) {
        return fault_response(code, &request);
    }
    let response = dispatch(&shared, &request).await;
    for fault in &after {
        pause(fault.delay).await;
    }
    if let Some(code) = after.iter().find_map(|fault| fault.status) {
        return fault_response(code, &request);
    }
    response
}

fn no_such_resource() -> Response {
    status_response(
        404,
        "NotFound",
        "the server could not find the requested resource",
        None,
    )
}

async fn dispatch(shared: &Shared, request: &Recorded) -> Response {
    let journal = &shared.journal;
    let Some(resource) = parse_path(&request.path) else {
        journal.unexpected(request);
        return no_such_resource();
    };
    let Some((_, _, kind)) = KINDS
        .iter()
        .find(|(api, plural, _)| *api == resource.api && *plural == resource.plural)
    else {
        journal.unexpected(request);
        return no_such_resource();
    };
    let workload = resource.api == "apis/apps/v1" && PATCHABLE.contains(&resource.plural.as_str());
    let scalable = resource.api == "apis/apps/v1" && SCALABLE.contains(&resource.plural.as_str());
    match (
        &request.method,
        resource.name.as_deref(),
        resource.subresource.as_deref(),
    ) {
        (&Method::GET, Some(name), None) => get_object(shared, request, &resource, name),
        (&Method::GET, None, None) => list_objects(shared, request, &resource, kind),
        (&Method::GET, Some(name), Some("scale")) if scalable => {
            let state = shared.lock();
            match state.objects.get(&object_key(&resource, name)) {
                Some(object) => json_response(200, scale_of(object)),
                None => not_found(&resource, name),
            }
        }
        (&Method::PATCH, Some(name), None) if workload => {
            patch_workload(shared, request, &resource, name).await
        }
        (&Method::PATCH, Some(name), Some("scale")) if scalable => {
            patch_scale(shared, request, &resource, name).await
        }
        (&Method::GET, Some(name), Some("log")) if resource.plural == "pods" => {
            pod_log(shared, request, &resource, name)
        }
        (_, _, Some(_)) => {
            // Other subresources (status, …), or scale of a daemonset: not served.
            journal.unexpected(request);
            no_such_resource()
        }
        // PUT / POST / DELETE, or PATCH of another kind: not served.
        _ => {
            journal.unexpected(request);
            status_response(
                405,
                "MethodNotAllowed",
                &format!(
                    "{} is not supported on {} by this fake",
                    request.method, resource.plural
                ),
                None,
            )
        }
    }
}

fn object_key(resource: &ResourcePath, name: &str) -> ObjectKey {
    ObjectKey {
        api: resource.api.clone(),
        plural: resource.plural.clone(),
        namespace: resource.namespace.clone(),
        name: name.to_owned(),
    }
}

fn get_object(
    shared: &Shared,
    request: &Recorded,
    resource: &ResourcePath,
    name: &str,
) -> Response {
    let metadata_only = is_metadata_only(request);
    let mut state = shared.lock();
    let Some(object) = state.objects.get(&object_key(resource, name)).cloned() else {
        return not_found(resource, name);
    };
    if metadata_only {
        return json_response(
            200,
            json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object["metadata"]
            }),
        );
    }
    if resource.plural == "secrets" {
        state.secret_data_served.push(request.describe());
    }
    json_response(200, object)
}

fn list_objects(
    shared: &Shared,
    request: &Recorded,
    resource: &ResourcePath,
    kind: &str,
) -> Response {
    let metadata_only = is_metadata_only(request);
    let selector = request.query_param("labelSelector").unwrap_or_default();
    let Some(selector) = Selector::parse(&selector) else {
        return status_response(
            400,
            "BadRequest",
            &format!("unable to parse requirement: invalid label selector {selector:?}"),
            None,
        );
    };
    let fields = request.query_param("fieldSelector").unwrap_or_default();
    let fields = match FieldSelector::parse(&fields, &resource.plural) {
        Ok(fields) => fields,
        Err(message) => return status_response(400, "BadRequest", &message, None),
    };
    let limit = request
        .query_param("limit")
        .and_then(|limit| limit.parse::<usize>().ok())
        .filter(|limit| *limit > 0);
    let offset = match request.query_param("continue") {
        None => 0,
        Some(token) if token.is_empty() => 0,
        Some(token) => match token
            .strip_prefix("fake-continue-")
            .map(str::parse::<usize>)
        {
            Some(Ok(offset)) => offset,
            _ => {
                return status_response(
                    400,
                    "BadRequest",
                    &format!("invalid continue token {token:?}"),
                    None,
                );
            }
        },
    };
    let mut state = shared.lock();
    let matching: Vec<&Value> = state
        .objects
        .iter()
        .filter(|(key, _)| {
            key.api == resource.api
                && key.plural == resource.plural
                && key.namespace == resource.namespace
        })
        .map(|(_, object)| object)
        .filter(|object| selector.matches(&object["metadata"]["labels"]))
        .filter(|object| fields.matches(object))
        .collect();
    let end = limit.map_or(matching.len(), |limit| {
        offset.saturating_add(limit).min(matching.len())
    });
    let continue_token = (end < matching.len()).then(|| format!("fake-continue-{end}"));
    let items: Vec<Value> = matching
        .into_iter()
        .skip(offset)
        .take(end.saturating_sub(offset))
        .map(|object| {
            if metadata_only {
                json!({"metadata": object["metadata"]})
            } else {
                // List items come without kind and apiVersion.
                let mut item = object.clone();
                if let Some(map) = item.as_object_mut() {
                    map.remove("kind");
                    map.remove("apiVersion");
                }
                item
            }
        })
        .collect();
    if resource.plural == "secrets" && !metadata_only && !items.is_empty() {
        state.secret_data_served.push(request.describe());
    }
    let (list_kind, api_version) = if metadata_only {
        (
            "PartialObjectMetadataList".to_owned(),
            "meta.k8s.io/v1".to_owned(),
        )
    } else {
        (
            format!("{kind}List"),
            resource
                .api
                .trim_start_matches("apis/")
                .trim_start_matches("api/")
                .to_owned(),
        )
    };
    let mut metadata = json!({"resourceVersion": state.resource_version.to_string()});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    json_response(
        200,
        json!({
            "kind": list_kind,
            "apiVersion": api_version,
            "metadata": metadata,
            "items": items
        }),
    )
}

/// `GET …/pods/{name}/log`, as the kubelet (through the API server) answers it.
fn pod_log(shared: &Shared, request: &Recorded, resource: &ResourcePath, name: &str) -> Response {
    let state = shared.lock();
    let Some(pod) = state.objects.get(&object_key(resource, name)) else {
        return not_found(resource, name);
    };
    let containers: Vec<String> = ["containers", "initContainers"]
        .iter()
        .flat_map(|list| pod["spec"][*list].as_array().cloned().unwrap_or_default())
        .filter_map(|container| container["name"].as_str().map(str::to_owned))
        .collect();
    let container = match request.query_param("container") {
        Some(container) if !container.is_empty() => container,
        _ if containers.len() == 1 => containers[0].clone(),
        _ => {
            return status_response(
                400,
                "BadRequest",
                &format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    containers.join(" ")
                ),
                None,
            );
        }
    };
    if !containers.contains(&container) {
        return status_response(
            400,
            "BadRequest",
            &format!("container {container} is not valid for pod {name}"),
            None,
        );
    }
    let previous = request.query_param("previous").as_deref() == Some("true");
    let restarts = ["containerStatuses", "initContainerStatuses"]
        .iter()
        .flat_map(|list| pod["status"][*list].as_array().cloned().unwrap_or_default())
        .find(|status| status["name"].as_str() == Some(container.as_str()))
        .and_then(|status| status["restartCount"].as_i64())
        .unwrap_or(0);
    let key = (
        resource.namespace.clone(),
        name.to_owned(),
        container.clone(),
        previous,
    );
    let text = match state.logs.get(&key) {
        Some(text) if !previous || restarts > 0 => text.clone(),
        None if !previous => String::new(),
        _ => {
            return status_response(
                400,
                "BadRequest",
                &format!("previous terminated container {container:?} in pod {name:?} not found"),
                None,
            );
        }
    };
    drop(state);
    let mut text = match request
        .query_param("tailLines")
        .and_then(|lines| lines.parse::<usize>().ok())
    {
        Some(lines) => tail_lines(&text, lines),
        None => text,
    };
    if let Some(limit) = request
        .query_param("limitBytes")
        .and_then(|limit| limit.parse::<usize>().ok())
        && text.len() > limit
    {
        let mut cut = limit;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], text).into_response()
}

/// The last `lines` lines of `text` (each with its newline).
fn tail_lines(text: &str, lines: usize) -> String {
    if lines == 0 {
        return String::new();
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    let start = body
        .rmatch_indices('\n')
        .nth(lines - 1)
        .map_or(0, |(index, _)| index + 1);
    text[start..].to_owned()
}

// ---------------------------------------------------------------------------------------
// Writes

/// A PATCH's kubectl `--type` and document, or the refusal the API server answers: 415 for
/// a content type it does not take, 400 for a body that is not JSON.
fn read_patch(
    journal: &Journal,
    request: &Recorded,
) -> Result<(&'static str, Value), (u16, &'static str, String)> {
    let patch_type = match content_type(request).as_str() {
        STRATEGIC_MERGE_PATCH => "strategic",
        MERGE_PATCH => "merge",
        JSON_PATCH => "json",
        other => {
            // Server-side apply is legal on the real server but not emulated here, and
            // nightshift never sends it; anything else the real server refuses alike.
            journal.unexpected(request);
            let message = if other == APPLY_PATCH {
                "server-side apply is not served by this fake".to_owned()
            } else {
                format!(
                    "the body of the request was in an unknown format - accepted media types \
                     include: {JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}, {STRATEGIC_MERGE_PATCH}"
                )
            };
            return Err((415, "UnsupportedMediaType", message));
        }
    };
    let patch = serde_json::from_slice(&request.body)
        .map_err(|error| (400, "BadRequest", format!("error decoding patch: {error}")))?;
    Ok((patch_type, patch))
}

/// Does a (JSON merge) patch mention a list that only a strategic merge patch merges?
fn touches_merged_lists(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.iter().any(|(key, value)| {
            matches!(key.as_str(), "containers" | "initContainers" | "env")
                || touches_merged_lists(value)
        }),
        Value::Array(items) => items.iter().any(touches_merged_lists),
        _ => false,
    }
}

fn conflict(resource: &ResourcePath, name: &str) -> Response {
    status_response(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please \
             apply your changes to the latest version and try again",
            qualified(resource)
        ),
        Some(json!({"name": name, "group": resource.group, "kind": resource.plural})),
    )
}

/// A `metadata.resourceVersion` in a merge or strategic patch is a precondition.
fn stale_precondition(patch: &Value, current: &Value) -> bool {
    match patch["metadata"]["resourceVersion"].as_str() {
        Some(wanted) => Some(wanted) != current["metadata"]["resourceVersion"].as_str(),
        None => false,
    }
}

async fn patch_workload(
    shared: &Shared,
    request: &Recorded,
    resource: &ResourcePath,
    name: &str,
) -> Response {
    let (patch_type, patch) = match read_patch(&shared.journal, request) {
        Ok(read) => read,
        Err((code, reason, message)) => return status_response(code, reason, &message, None),
    };
    if patch_type == "merge" && touches_merged_lists(&patch) {
        // Legal, and applied as the server would (the lists are replaced whole), but
        // nightshift must never do this.
        shared.journal.unexpected(request);
    }
    let _write = shared.writes.lock().await;
    let key = object_key(resource, name);
    let Some(current) = shared.lock().objects.get(&key).cloned() else {
        return not_found(resource, name);
    };
    if patch_type != "json" && stale_precondition(&patch, &current) {
        return conflict(resource, name);
    }
    let patched = match kubectl_patch(&current, patch_type, &patch).await {
        Ok(patched) => drop_nulls(patched),
        Err(error) => return status_response(400, "BadRequest", &error, None),
    };
    if let Some(response) = validate_workload(resource, name, &current, &patched) {
        return response;
    }
    let stored = store_write(shared, &key, &current, patched);
    json_response(200, stored)
}

async fn patch_scale(
    shared: &Shared,
    request: &Recorded,
    resource: &ResourcePath,
    name: &str,
) -> Response {
    let (patch_type, patch) = match read_patch(&shared.journal, request) {
        Ok(read) => read,
        Err((code, reason, message)) => return status_response(code, reason, &message, None),
    };
    let _write = shared.writes.lock().await;
    let key = object_key(resource, name);
    let Some(current) = shared.lock().objects.get(&key).cloned() else {
        return not_found(resource, name);
    };
    let scale = scale_of(&current);
    if patch_type != "json" && stale_precondition(&patch, &scale) {
        return conflict(resource, name);
    }
    let patched = match kubectl_patch(&scale, patch_type, &patch).await {
        Ok(patched) => patched,
        Err(error) => return status_response(400, "BadRequest", &error, None),
    };
    // Go's ScaleSpec.replicas is omitempty: absent is 0.
    let Some(replicas) = patched["spec"]
        .get("replicas")
        .map_or(Some(0), Value::as_i64)
    else {
        return status_response(
            400,
            "BadRequest",
            "spec.replicas: expected an integer",
            None,
        );
    };
    if replicas < 0 {
        return invalid(
            "Scale",
            "autoscaling",
            name,
            &format!(
                "spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
            ),
        );
    }
    let mut updated = current.clone();
    updated["spec"]["replicas"] = json!(replicas);
    let stored = store_write(shared, &key, &current, updated);
    json_response(200, scale_of(&stored))
}

/// Store a write's result as the API server does: nothing changes for a no-op; else a new
/// `resourceVersion`, and a new `generation` when `spec` changed.
fn store_write(shared: &Shared, key: &ObjectKey, current: &Value, mut updated: Value) -> Value {
    updated["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
    if updated == *current {
        return updated;
    }
    let mut state = shared.lock();
    state.resource_version += 1;
    updated["metadata"]["resourceVersion"] = json!(state.resource_version.to_string());
    if updated["spec"] != current["spec"] {
        let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
        updated["metadata"]["generation"] = json!(generation + 1);
    }
    state.objects.insert(key.clone(), updated.clone());
    updated
}

/// What decoding into the API's Go structs and encoding again does to JSON nulls: a null
/// field is a nil pointer or empty value, and `omitempty` leaves it out.
fn drop_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, value)| !value.is_null())
                .map(|(key, value)| (key, drop_nulls(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(drop_nulls).collect()),
        other => other,
    }
}

/// The `autoscaling/v1` `Scale` view of a workload, as the API server serves it.
pub fn scale_of(object: &Value) -> Value {
    let metadata = &object["metadata"];
    let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
    let selector: Vec<String> = object["spec"]["selector"]["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
        .collect();
    let mut spec = json!({});
    if replicas != 0 {
        spec["replicas"] = json!(replicas);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
            "resourceVersion": metadata["resourceVersion"],
            "creationTimestamp": metadata["creationTimestamp"]
        },
        "spec": spec,
        "status": {
            "replicas": object["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": selector.join(",")
        }
    })
}

fn invalid(kind: &str, group: &str, name: &str, cause: &str) -> Response {
    status_response(
        422,
        "Invalid",
        &format!("{kind}.{group} {name:?} is invalid: {cause}"),
        Some(json!({"name": name, "group": group, "kind": kind})),
    )
}

/// What the API server's validation would refuse in a patched workload (a few rules: the
/// ones a careless patch breaks).
fn validate_workload(
    resource: &ResourcePath,
    name: &str,
    current: &Value,
    patched: &Value,
) -> Option<Response> {
    let kind = current["kind"].as_str().unwrap_or_default().to_owned();
    let refuse = |cause: String| Some(invalid(&kind, &resource.group, name, &cause));
    for field in ["name", "namespace", "uid"] {
        if patched["metadata"][field] != current["metadata"][field] {
            return Some(status_response(
                400,
                "BadRequest",
                &format!("metadata.{field}: the {field} of the object does not match the URL"),
                None,
            ));
        }
    }
    if patched["kind"] != current["kind"] || patched["apiVersion"] != current["apiVersion"] {
        return Some(status_response(
            400,
            "BadRequest",
            "the kind or apiVersion of the object may not change",
            None,
        ));
    }
    if let Some(replicas) = patched["spec"]["replicas"].as_i64()
        && replicas < 0
    {
        return refuse(format!(
            "spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
        ));
    }
    let pod_spec = &patched["spec"]["template"]["spec"];
    for list in ["initContainers", "containers"] {
        for (index, container) in pod_spec[list].as_array().into_iter().flatten().enumerate() {
            let at = format!("spec.template.spec.{list}[{index}]");
            if container["name"].as_str().is_none_or(str::is_empty) {
                return refuse(format!("{at}.name: Required value"));
            }
            if container["image"].as_str().is_none_or(str::is_empty) {
                return refuse(format!("{at}.image: Required value"));
            }
            for (position, env) in container["env"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let at = format!("{at}.env[{position}]");
                if env["name"].as_str().is_none_or(str::is_empty) {
                    return refuse(format!("{at}.name: Required value"));
                }
                let has_value = env["value"].as_str().is_some_and(|value| !value.is_empty());
                if has_value && !env["valueFrom"].is_null() {
                    return refuse(format!(
                        "{at}.valueFrom: Invalid value: \"\": may not be specified when `value` \
                         is not empty"
                    ));
                }
            }
        }
    }
    if pod_spec["containers"]
        .as_array()
        .is_none_or(|containers| containers.is_empty())
    {
        return refuse("spec.template.spec.containers: Required value".to_owned());
    }
    None
}

/// The kubectl binary (`NIGHTSHIFT_TEST_KUBECTL` overrides).
fn kubectl() -> String {
    std::env::var("NIGHTSHIFT_TEST_KUBECTL").unwrap_or_else(|_| {
        if Path::new("/usr/bin/kubectl").exists() {
            "/usr/bin/kubectl".to_owned()
        } else {
            "kubectl".to_owned()
        }
    })
}

/// Apply a patch to an object with kubectl's own patch code (`--local`: no server is
/// contacted). `patch_type` is `strategic`, `merge` or `json`.
pub async fn kubectl_patch(
    object: &Value,
    patch_type: &str,
    patch: &Value,
) -> Result<Value, String> {
    let file = tempfile::Builder::new()
        .prefix("fake-kube-object-")
        .suffix(".json")
        .tempfile()
        .map_err(|error| format!("fake: temp file: {error}"))?;
    std::fs::write(file.path(), object.to_string())
        .map_err(|error| format!("fake: write temp file: {error}"))?;
    let output = tokio::process::Command::new(kubectl())
        .arg("patch")
        .arg("--local")
        .arg("--type")
        .arg(patch_type)
        .arg("-o")
        .arg("json")
        .arg("-f")
        .arg(file.path())
        .arg("-p")
        .arg(patch.to_string())
        // Never a real cluster's configuration.
        .env("KUBECONFIG", "/dev/null")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|error| format!("fake: run kubectl: {error}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr)
            .trim()
            .trim_start_matches("error: ")
            .to_owned());
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|error| format!("fake: kubectl printed no JSON object: {error}"))
}

fn qualified(resource: &ResourcePath) -> String {
    if resource.group.is_empty() {
        resource.plural.clone()
    } else {
        format!("{}.{}", resource.plural, resource.group)
    }
}

fn not_found(resource: &ResourcePath, name: &str) -> Response {
    let mut details = json!({"name": name, "kind": resource.plural});
    if !resource.group.is_empty() {
        details["group"] = json!(resource.group);
    }
    status_response(
        404,
        "NotFound",
        &format!("{} {name:?} not found", qualified(resource)),
        Some(details),
    )
}

/// An injected failure, worded as the API server words it.
fn fault_response(code: u16, request: &Recorded) -> Response {
    let resource = parse_path(&request.path);
    let target = resource
        .as_ref()
        .map(|resource| match &resource.name {
            Some(name) => format!("{} {name:?}", qualified(resource)),
            None => qualified(resource),
        })
        .unwrap_or_else(|| request.path.clone());
    let verb = match (
        &request.method,
        resource.as_ref().and_then(|r| r.name.as_ref()),
    ) {
        (&Method::GET, Some(_)) => "get",
        (&Method::GET, None) => "list",
        (&Method::PATCH, _) => "patch",
        (&Method::PUT, _) => "update",
        (&Method::POST, _) => "create",
        (&Method::DELETE, _) => "delete",
        _ => "access",
    };
    let (reason, message) = match code {
        401 => ("Unauthorized", "Unauthorized".to_owned()),
        403 => {
            let (plural, group, namespace) = resource
                .as_ref()
                .map(|r| (r.plural.clone(), r.group.clone(), r.namespace.clone()))
                .unwrap_or_default();
            (
                "Forbidden",
                format!(
                    "{target} is forbidden: User \"system:serviceaccount:nightshift:nightshift\" \
                     cannot {verb} resource \"{plural}\" in API group \"{group}\" in the \
                     namespace \"{namespace}\""
                ),
            )
        }
        404 => ("NotFound", format!("{target} not found")),
        409 => (
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {target}: the object has been modified; \
                 please apply your changes to the latest version and try again"
            ),
        ),
        429 => (
            "TooManyRequests",
            "Too many requests, please try again later.".to_owned(),
        ),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request".to_owned(),
        ),
        _ => (
            "InternalError",
            "Internal error occurred: etcdserver: request timed out".to_owned(),
        ),
    };
    status_response(code, reason, &message, None)
}

/// A `Status` object, as the API server answers every failure.
pub fn status_body(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code
    });
    if let Some(details) = details {
        body["details"] = details;
    }
    body
}

fn status_response(code: u16, reason: &str, message: &str, details: Option<Value>) -> Response {
    json_response(code, status_body(code, reason, message, details))
}

fn json_response(code: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// Label selectors (the API's query syntax)

#[derive(Debug)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug)]
struct Selector(Vec<Requirement>);

impl Selector {
    fn parse(text: &str) -> Option<Selector> {
        let mut terms = Vec::new();
        let mut depth = 0;
        let mut current = String::new();
        for character in text.chars() {
            match character {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    terms.push(std::mem::take(&mut current));
                    continue;
                }
                _ => {}
            }
            current.push(character);
        }
        if !current.trim().is_empty() {
            terms.push(current);
        }
        let mut requirements = Vec::new();
        for term in terms {
            let term = term.trim();
            let set = |rest: &str| -> Option<Vec<String>> {
                let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
                Some(inner.split(',').map(|v| v.trim().to_owned()).collect())
            };
            let requirement = if let Some((key, value)) = term.split_once("!=") {
                Requirement::NotEquals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some((key, value)) = term.split_once("==") {
                Requirement::Equals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some((key, value)) = term.split_once('=') {
                Requirement::Equals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some((key, rest)) = term.split_once(" notin ") {
                Requirement::NotIn(key.trim().to_owned(), set(rest)?)
            } else if let Some((key, rest)) = term.split_once(" in ") {
                Requirement::In(key.trim().to_owned(), set(rest)?)
            } else if let Some(key) = term.strip_prefix('!') {
                Requirement::NotExists(key.trim().to_owned())
            } else if !term.is_empty() && !term.contains(' ') {
                Requirement::Exists(term.to_owned())
            } else {
                return None;
            };
            requirements.push(requirement);
        }
        Some(Selector(requirements))
    }

    fn matches(&self, labels: &Value) -> bool {
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(key, value) => label(key) == Some(value.as_str()),
            Requirement::NotEquals(key, value) => label(key) != Some(value.as_str()),
            Requirement::In(key, values) => {
                label(key).is_some_and(|found| values.iter().any(|v| v == found))
            }
            Requirement::NotIn(key, values) => {
                !label(key).is_some_and(|found| values.iter().any(|v| v == found))
            }
            Requirement::Exists(key) => label(key).is_some(),
            Requirement::NotExists(key) => label(key).is_none(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Field selectors

/// The fields a list may be filtered on (per resource, as the real server allows them).
fn selectable_fields(plural: &str) -> &'static [&'static str] {
    match plural {
        "events" => &[
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.name",
            "involvedObject.namespace",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "reason",
            "type",
        ],
        _ => &["metadata.name", "metadata.namespace"],
    }
}

#[derive(Debug)]
struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// `a.b=x,c!=y`; a field the resource does not support is refused, as by the server.
    fn parse(text: &str, plural: &str) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        for term in text
            .split(',')
            .map(str::trim)
            .filter(|term| !term.is_empty())
        {
            let (field, equal, value) = if let Some((field, value)) = term.split_once("!=") {
                (field, false, value)
            } else if let Some((field, value)) = term.split_once("==") {
                (field, true, value)
            } else if let Some((field, value)) = term.split_once('=') {
                (field, true, value)
            } else {
                return Err(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                ));
            };
            let field = field.trim();
            if !selectable_fields(plural).contains(&field) {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(FieldSelector(terms))
    }

    fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let found = field
                .split('.')
                .try_fold(object, |value, segment| value.get(segment))
                .and_then(Value::as_str)
                .unwrap_or_default();
            (found == value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_selectors_match_like_the_api() {
        let event = event(
            "apps",
            "e1",
            "Pod",
            "web-1",
            "Warning",
            "BackOff",
            "m",
            "2026-03-01T10:00:00Z",
        );
        let matches = |text: &str| {
            FieldSelector::parse(text, "events")
                .unwrap()
                .matches(&event)
        };
        assert!(matches("involvedObject.kind=Pod,involvedObject.name=web-1"));
        assert!(matches("involvedObject.namespace==apps,type!=Normal"));
        assert!(!matches("involvedObject.name=web-2"));
        assert!(matches(""));
        assert!(FieldSelector::parse("spec.nodeName=x", "events").is_err());
        assert!(FieldSelector::parse("involvedObject.name=x", "pods").is_err());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(tail_lines("a\nb\n", 5), "a\nb\n");
        assert_eq!(tail_lines("a\n", 0), "");
    }

    #[test]
    fn selectors_match_like_the_api() {
        let labels = json!({"app": "web", "tier": "front"});
        let matches = |text: &str| Selector::parse(text).unwrap().matches(&labels);
        assert!(matches("app=web"));
        assert!(matches("app==web,tier=front"));
        assert!(!matches("app=web,tier=back"));
        assert!(matches("tier in (front,back),!legacy"));
        assert!(!matches("tier notin (front)"));
        assert!(matches("app"));
        assert!(matches(""));
    }

    #[test]
    fn parses_api_paths() {
        let path = parse_path("/apis/apps/v1/namespaces/apps/deployments/web").unwrap();
        assert_eq!(
            (
                path.api.as_str(),
                path.plural.as_str(),
                path.name.as_deref()
            ),
            ("apis/apps/v1", "deployments", Some("web"))
        );
        let path = parse_path("/api/v1/namespaces/apps/pods").unwrap();
        assert_eq!((path.api.as_str(), path.name), ("api/v1", None));
        assert!(parse_path("/version").is_none());
    }
}
