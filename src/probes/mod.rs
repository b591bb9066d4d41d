//! probes: what a rule asks the world before it decides. Each probe kind is one file with one
//! async function; this module owns what they share: the result shape, the timeout, and a
//! cache with single flight, so a storm of alerts asks a status page once per cache lifetime.
//! The cache ages on the injectable [`Clock`], so tests move time instead of sleeping.
//!
//! Invariant: a probe never fails with an error; a failure is a value, `ok = false` with the
//! error text, and the rule's `on_probe_failure` branch decides what that means.

pub mod http;
pub mod kubernetes;
pub mod prometheus;
pub mod statuspage;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::clock::{Millis, SharedClock, SystemClock, duration_millis};
use crate::config::HttpConfig;

/// The kinds of probe a rule file can declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    Statuspage,
    Http,
    Prometheus,
    Kubernetes,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Statuspage => "statuspage",
            ProbeKind::Http => "http",
            ProbeKind::Prometheus => "prometheus",
            ProbeKind::Kubernetes => "kubernetes",
        }
    }
}

/// A probe with every template already rendered: exactly what will be asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ProbeRequest {
    /// GET an Atlassian Statuspage `/api/v2/status.json`.
    Statuspage { url: String },
    Http {
        method: String,
        url: String,
        /// Request headers to send.
        headers: Vec<(String, String)>,
        /// Response headers to capture (matched case-insensitively; reported lowercased).
        capture_headers: Vec<String>,
        /// Dotted paths into a JSON response body to capture (`data.status`, `items.0.name`).
        json_fields: Vec<String>,
    },
    /// An instant query, tried against each URL in order until one answers.
    Prometheus { query: String, urls: Vec<String> },
    /// A workload's pods and/or an object's metadata (never a Secret's data).
    Kubernetes {
        namespace: String,
        /// `deployment/NAME`, `statefulset/NAME` or `daemonset/NAME`.
        workload: Option<String>,
        /// `secret/NAME`, `configmap/NAME`, or a workload as above: metadata only.
        object: Option<String>,
    },
}

impl ProbeRequest {
    pub fn kind(&self) -> ProbeKind {
        match self {
            ProbeRequest::Statuspage { .. } => ProbeKind::Statuspage,
            ProbeRequest::Http { .. } => ProbeKind::Http,
            ProbeRequest::Prometheus { .. } => ProbeKind::Prometheus,
            ProbeRequest::Kubernetes { .. } => ProbeKind::Kubernetes,
        }
    }

    /// Identical requests share one cache entry.
    fn cache_key(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What a probe found. `fields` holds the kind's own fields (see [`sample_fields`]); the
/// common ones are kept apart so that every result has them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeResult {
    pub ok: bool,
    pub error: String,
    pub latency_ms: u64,
    pub cached: bool,
    pub fields: Map<String, Value>,
}

impl ProbeResult {
    pub fn success(fields: Map<String, Value>) -> ProbeResult {
        ProbeResult {
            ok: true,
            error: String::new(),
            latency_ms: 0,
            cached: false,
            fields,
        }
    }

    pub fn failure(kind: ProbeKind, error: impl Into<String>) -> ProbeResult {
        ProbeResult {
            ok: false,
            error: error.into(),
            latency_ms: 0,
            cached: false,
            fields: sample_fields(kind),
        }
    }

    /// The value rules see as `probe.<name>`: the kind's fields plus `ok`, `error`,
    /// `latency_ms` and `cached`.
    pub fn to_value(&self) -> Value {
        let mut object = self.fields.clone();
        object.insert("ok".to_owned(), Value::Bool(self.ok));
        object.insert("error".to_owned(), Value::String(self.error.clone()));
        object.insert("latency_ms".to_owned(), json!(self.latency_ms));
        object.insert("cached".to_owned(), Value::Bool(self.cached));
        Value::Object(object)
    }
}

/// Every field a kind reports, with a value of the right type. Failed probes report these
/// defaults, and rules are type-checked against them at load, so a rule that reads a field a
/// kind does not have is refused before it can run. For `http`, the `headers` and `json` maps
/// also get one entry per captured header / JSON field (see [`sample_for`]).
pub fn sample_fields(kind: ProbeKind) -> Map<String, Value> {
    let value = match kind {
        ProbeKind::Statuspage => json!({
            "indicator": "unknown",
            "description": "",
        }),
        ProbeKind::Http => json!({
            "status": 0,
            "headers": {},
            "json": {},
        }),
        ProbeKind::Prometheus => json!({
            "value": 0.0,
            "empty": true,
            "vector": [],
            "url": "",
        }),
        ProbeKind::Kubernetes => json!({
            "pods": [],
            "total": 0,
            "ready": 0,
            "restarts": 0,
            "oom_killed": false,
            "oldest_pod_started_at": 0,
            "object_exists": false,
            "object_last_change": 0,
            "object_resource_version": "",
        }),
    };
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The sample result for a request: [`sample_fields`] plus, for `http`, an empty string for
/// each captured header and a null for each captured JSON field.
pub fn sample_for(request: &ProbeRequest) -> ProbeResult {
    let mut result = ProbeResult::failure(request.kind(), "");
    result.ok = true;
    if let ProbeRequest::Http {
        capture_headers,
        json_fields,
        ..
    } = request
    {
        let headers: Map<String, Value> = capture_headers
            .iter()
            .map(|name| (name.to_ascii_lowercase(), Value::String(String::new())))
            .collect();
        let fields: Map<String, Value> = json_fields
            .iter()
            .map(|path| (path.clone(), Value::Null))
            .collect();
        result
            .fields
            .insert("headers".to_owned(), Value::Object(headers));
        result
            .fields
            .insert("json".to_owned(), Value::Object(fields));
    }
    result
}

/// Settings probes need from the daemon's configuration.
#[derive(Debug, Clone, Default)]
pub struct ProbeSettings {
    /// Prometheus URLs for `prometheus` probes that name none, tried in order.
    pub prometheus_urls: Vec<String>,
    /// Namespaces Kubernetes probes (and actions) may touch; empty allows none.
    pub kubernetes_namespaces: Vec<String>,
}

/// When a result was stored (on the prober's clock) and the result.
type CacheEntry = Arc<tokio::sync::Mutex<Option<(Millis, ProbeResult)>>>;

/// Runs probes with timeouts, caching and single flight.
pub struct Prober {
    /// Follows no redirects and reads no proxy from the environment
    /// ([`crate::http_client`]); a client that could not be built fails each HTTP probe.
    http: Result<reqwest::Client, String>,
    kubernetes: crate::kubernetes::ClientSlot,
    settings: ProbeSettings,
    cache: Mutex<HashMap<String, CacheEntry>>,
    /// What the cache's ages are measured on.
    clock: SharedClock,
}

impl Prober {
    /// A prober whose HTTP probes use no proxy at all.
    pub fn new(settings: ProbeSettings, kubernetes: crate::kubernetes::ClientSlot) -> Prober {
        Prober::with_http(settings, kubernetes, &HttpConfig::default())
    }

    /// A prober whose HTTP probes go through the `[http]` proxy, if one is set.
    pub fn with_http(
        settings: ProbeSettings,
        kubernetes: crate::kubernetes::ClientSlot,
        http: &HttpConfig,
    ) -> Prober {
        Prober {
            http: crate::http_client::client(http),
            kubernetes,
            settings,
            cache: Mutex::new(HashMap::new()),
            clock: Arc::new(SystemClock),
        }
    }

    /// The same prober, its cache aging on `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Prober {
        self.clock = clock;
        self
    }

    pub fn settings(&self) -> &ProbeSettings {
        &self.settings
    }

    /// Ask, or answer from the cache when an identical request was answered less than
    /// `cache_for` ago. Concurrent identical requests wait for the one in flight.
    pub async fn probe(
        &self,
        request: &ProbeRequest,
        timeout: Duration,
        cache_for: Duration,
    ) -> ProbeResult {
        let entry = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            // Keep the map bounded: drop entries nobody holds that have expired.
            if cache.len() > 10_000 {
                cache.retain(|_, entry| Arc::strong_count(entry) > 1);
            }
            cache.entry(request.cache_key()).or_default().clone()
        };
        let mut slot = entry.lock().await;
        if let Some((at, result)) = slot.as_ref()
            && self.clock.now_millis().saturating_sub(*at) < duration_millis(cache_for)
        {
            let mut result = result.clone();
            result.cached = true;
            return result;
        }
        let started = Instant::now();
        let mut result = match tokio::time::timeout(timeout, self.run(request, timeout)).await {
            Ok(result) => result,
            Err(_) => ProbeResult::failure(
                request.kind(),
                format!("timed out after {}", crate::duration::Shown(timeout)),
            ),
        };
        result.latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        result.cached = false;
        if !cache_for.is_zero() {
            *slot = Some((self.clock.now_millis(), result.clone()));
        }
        result
    }

    async fn run(&self, request: &ProbeRequest, timeout: Duration) -> ProbeResult {
        let http = self.http.as_ref().map_err(|error| {
            ProbeResult::failure(request.kind(), format!("no HTTP client: {error}"))
        });
        match (request, http) {
            (
                ProbeRequest::Kubernetes {
                    namespace,
                    workload,
                    object,
                },
                _,
            ) => {
                if !self
                    .settings
                    .kubernetes_namespaces
                    .iter()
                    .any(|allowed| allowed == namespace)
                {
                    return ProbeResult::failure(
                        ProbeKind::Kubernetes,
                        format!("namespace {namespace:?} is not in kubernetes.namespaces"),
                    );
                }
                kubernetes::probe(
                    &self.kubernetes,
                    namespace,
                    workload.as_deref(),
                    object.as_deref(),
                )
                .await
            }
            (_, Err(failure)) => failure,
            (ProbeRequest::Statuspage { url }, Ok(client)) => statuspage::probe(client, url).await,
            (
                ProbeRequest::Http {
                    method,
                    url,
                    headers,
                    capture_headers,
                    json_fields,
                },
                Ok(client),
            ) => http::probe(client, method, url, headers, capture_headers, json_fields).await,
            (ProbeRequest::Prometheus { query, urls }, Ok(client)) => {
                let urls = if urls.is_empty() {
                    &self.settings.prometheus_urls
                } else {
                    urls
                };
                prometheus::probe(client, query, urls, timeout).await
            }
        }
    }
}
