//! What a collector is asked to fetch, rendered from its rule-file declaration for one
//! incident, and what it brought back.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Millis;

/// One collector, rendered for one incident: every template filled in, every time resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectorRequest {
    /// The collector's name in the rule file (`[collector.NAME]`); files it writes go under
    /// `collectors/NAME/` in the bundle.
    pub name: String,
    /// The rule that declared it.
    pub rule: String,
    pub kind: RequestKind,
    /// The whole collector (every request it makes) must finish within this.
    #[serde(with = "crate::duration::text")]
    pub timeout: Duration,
    /// The bytes it may bring back, all files together; beyond it, output is cut and the
    /// collector marked truncated.
    pub max_bytes: u64,
    /// Runs before any disruptive action of the same incident (the action waits for it, up to
    /// a bound). Default: true for `kubernetes_logs` and `kubernetes_events`.
    pub before_action: bool,
    /// Runs again when the incident resolves, for the final bundle.
    pub on_resolve: bool,
}

/// The request itself, per kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RequestKind {
    /// `GET /api/v1/query_range` from `start` to `end` (unix milliseconds) every `step`; saved
    /// as the API's JSON and as CSV.
    PrometheusRange {
        query: String,
        start: Millis,
        end: Millis,
        #[serde(with = "crate::duration::text")]
        step: Duration,
    },
    /// `GET /api/v1/query` at `at` (unix milliseconds); saved as JSON and CSV.
    PrometheusQuery { query: String, at: Millis },
    /// Logs of the pods of a workload (`kind/name`, e.g. `deployment/api`; its selector is
    /// read from the object) or of a label selector, per container; the previous container's
    /// logs too for restarted containers when `previous`.
    KubernetesLogs {
        namespace: String,
        workload: Option<String>,
        selector: Option<String>,
        /// Only these containers (all when empty).
        containers: Vec<String>,
        tail_lines: Option<u64>,
        #[serde(with = "crate::duration::text_option")]
        since: Option<Duration>,
        previous: bool,
    },
    /// Events of the workload, its replica sets and its pods (or of the pods a selector
    /// picks).
    KubernetesEvents {
        namespace: String,
        workload: Option<String>,
        selector: Option<String>,
    },
    /// The workload's spec and status (never Secret data).
    KubernetesObject { namespace: String, workload: String },
    /// A GET of a health or status endpoint: status, headers and body.
    Http {
        url: String,
        headers: BTreeMap<String, String>,
    },
    /// A local diagnostic command: argv (no shell), the incident's environment, bounded
    /// output, its process group killed on timeout (the same safety as `exec` actions).
    Exec {
        argv: Vec<String>,
        env: Vec<(String, String)>,
    },
}

impl RequestKind {
    pub fn label(&self) -> &'static str {
        match self {
            RequestKind::PrometheusRange { .. } => "prometheus_range",
            RequestKind::PrometheusQuery { .. } => "prometheus_query",
            RequestKind::KubernetesLogs { .. } => "kubernetes_logs",
            RequestKind::KubernetesEvents { .. } => "kubernetes_events",
            RequestKind::KubernetesObject { .. } => "kubernetes_object",
            RequestKind::Http { .. } => "http",
            RequestKind::Exec { .. } => "exec",
        }
    }
}

impl CollectorRequest {
    /// Requests with the same key fetch the same thing (same query, same workload, same
    /// window), so in a storm they are made once and shared. The name, the rule and the
    /// incident's own environment do not take part.
    pub fn share_key(&self) -> String {
        let kind = match &self.kind {
            // The incident's own variables differ per incident; the command is what counts.
            RequestKind::Exec { argv, .. } => serde_json::json!({"kind": "exec", "argv": argv}),
            other => serde_json::to_value(other).unwrap_or_default(),
        };
        format!("{kind}|{}|{}", self.max_bytes, self.timeout.as_millis())
    }
}

/// How a collector ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectorStatus {
    Ok,
    /// Finished, but output was cut at `max_bytes`.
    Truncated,
    Failed,
    TimedOut,
    /// Not run: the bundle was written before it (e.g. a disruptive action went ahead).
    Skipped,
}

/// One file a collector brought back, relative to `collectors/NAME/` in the bundle.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CollectedFile {
    pub path: String,
    /// Shared, not copied, when a storm's incidents share one request's output.
    #[serde(skip)]
    pub bytes: bytes::Bytes,
}

/// What one collector brought back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CollectorOutput {
    pub name: String,
    pub kind: String,
    pub status: CollectorStatus,
    /// What went wrong (failed, timed out), or what was cut; one line.
    pub error: Option<String>,
    pub duration_ms: u64,
    pub files: Vec<CollectedFile>,
    /// The result came from an identical request made for another incident.
    pub shared: bool,
}
