//! collectors: the collector executors, one file per kind (`prometheus`, `kubernetes` logs,
//! events and object, `http`, `exec`) beside what they share here: dispatch, the global
//! concurrency cap, sharing, timeouts and the size cap (`files`). Each [`CollectorRequest`]
//! becomes one [`CollectorOutput`]: files (relative to the collector's directory; the bundle
//! writer puts them under `collectors/NAME/`), a status and one line saying what went wrong or
//! was cut. [`Collectors::run`] never fails and never panics: every failure is in the output.
//!
//! Limits: the whole collector runs under `tokio::time::timeout(request.timeout)` from the
//! moment it has a slot (on timeout the files already complete are kept, status
//! `timed_out`); all files together are at most `max_bytes`: while over, the largest file
//! (the last one among equals) is cut, logs keeping their end and everything else its start,
//! never inside a UTF-8 character (a cut a few bytes short beats evidence that is no longer
//! text); status `truncated`, `error` naming what was cut. Kubernetes namespaces must be in
//! `kubernetes.namespaces`, as for probes and actions.
//!
//! Sharing: requests with one [`CollectorRequest::share_key`] are made once. A later one
//! waits for the one in flight, or takes a result finished less than `share_for` ago; it gets
//! that output with its own `name` and `shared = true`. Only the request that runs takes a
//! concurrency slot, so a storm of identical collectors costs one slot and one fetch.

mod exec;
mod files;
mod http;
mod kubernetes;
mod prometheus;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{OnceCell, Semaphore};

use self::files::Files;
use self::kubernetes::PodsOf;
use self::prometheus::{duration_seconds, unix_seconds};
use super::request::{CollectorOutput, CollectorRequest, CollectorStatus, RequestKind};
use crate::kubernetes::names::is_rfc1123_label;
use crate::kubernetes::{ClientSlot, Workload};

pub use self::kubernetes::events::{EVENT_PAGE_SIZE, MAX_EVENT_PAGES};
pub use self::kubernetes::logs::MAX_LOG_PODS;

/// The largest Prometheus answer or Kubernetes list/object read, whatever `max_bytes` is: the
/// CSV is made from the whole answer, so it must be read whole before it is cut.
const MAX_API_BODY: usize = 64 * 1024 * 1024;
/// Results remembered for sharing; beyond it, finished ones are forgotten oldest first.
const MAX_SHARED_RESULTS: usize = 1024;
/// Bytes kept for sharing, all results together: past it, the oldest finished are forgotten
/// (whoever holds one keeps it; only the cache lets go).
const MAX_SHARED_BYTES: usize = 128 * 1024 * 1024;
/// The longest `error` line of an output.
const MAX_ERROR_CHARS: usize = 2000;

/// What the collectors talk to.
pub struct CollectEnv {
    /// Tried in order by the Prometheus collectors.
    pub prometheus_urls: Vec<String>,
    /// The client for Prometheus and `http` collectors (see [`Collectors::new`]).
    pub http: reqwest::Client,
    pub kubernetes: ClientSlot,
}

/// Runs collectors under a global concurrency cap, sharing identical requests.
pub struct Collectors {
    env: CollectEnv,
    /// For `http` collectors: redirects are not followed.
    direct_http: Result<reqwest::Client, String>,
    slots: Semaphore,
    share_for: Duration,
    results: Mutex<HashMap<String, SharedResult>>,
    fetched: AtomicU64,
}

/// One request's result, in flight (empty) or finished.
type SharedResult = Arc<OnceCell<Finished>>;

struct Finished {
    at: Instant,
    output: CollectorOutput,
}

impl Collectors {
    /// `concurrency`: collectors running at once across all incidents (at least 1);
    /// `share_for`: how long a finished result is reused for an identical request (zero:
    /// only requests in flight are shared). `http` collectors use `env.http` too, which must
    /// come from [`crate::act::actions::http::client_for`]: it never follows redirects (reqwest
    /// sets that per client, not per request).
    pub fn new(env: CollectEnv, concurrency: usize, share_for: Duration) -> Collectors {
        // Built by `http_client` like every outbound client (redirects never followed, no
        // proxy but `[http] proxy`, connecting bounded): the same one serves `http` collectors.
        let direct_http = Ok(env.http.clone());
        Collectors {
            env,
            direct_http,
            slots: Semaphore::new(concurrency.max(1)),
            share_for,
            results: Mutex::new(HashMap::new()),
            fetched: AtomicU64::new(0),
        }
    }

    /// Run one collector (waiting for a slot), bounded by its timeout and size cap; never
    /// panics, never returns an error: failures are in the output. An identical request
    /// (same `share_key()`) in flight or finished within `share_for` is not made again: its
    /// output is reused (with `shared = true`, `name` set to this request's name).
    pub async fn run(&self, request: &CollectorRequest) -> CollectorOutput {
        let Some(result) = self.shared_result(&request.share_key()) else {
            // Too many different requests in flight to remember one more: run it unshared.
            return self.fetch(request).await;
        };
        let mut made_here = false;
        let made = &mut made_here;
        let finished = result
            .get_or_init(|| async move {
                *made = true;
                let output = self.fetch(request).await;
                Finished {
                    at: Instant::now(),
                    output,
                }
            })
            .await;
        let mut output = finished.output.clone();
        output.name.clone_from(&request.name);
        output.shared = !made_here;
        output
    }

    /// Run several at once (each still under the global cap); outputs in the order given.
    pub async fn run_all(&self, requests: &[CollectorRequest]) -> Vec<CollectorOutput> {
        futures_util::future::join_all(requests.iter().map(|request| self.run(request))).await
    }

    /// Requests actually made (not shared), for metrics and tests.
    pub fn fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// The result to wait for or reuse for `key`, a new empty one if there is none fresh;
    /// `None` when the map is full of requests in flight.
    fn shared_result(&self, key: &str) -> Option<SharedResult> {
        let mut results = self
            .results
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // A failure is shared only with those that waited for it in flight: a later incident
        // asks again, since the dependency may be back.
        let stale = |result: &SharedResult| {
            result.get().is_some_and(|finished| {
                finished.at.elapsed() >= self.share_for
                    || matches!(
                        finished.output.status,
                        CollectorStatus::Failed | CollectorStatus::TimedOut
                    )
            })
        };
        if let Some(result) = results.get(key)
            && !stale(result)
        {
            return Some(result.clone());
        }
        // Forget what is stale, and results in flight that nobody waits for any more (their
        // request was dropped before it finished).
        results.retain(|_, result| {
            !stale(result) && (result.initialized() || Arc::strong_count(result) > 1)
        });
        let size = |result: &SharedResult| {
            result.get().map_or(0, |done| {
                done.output
                    .files
                    .iter()
                    .map(|f| f.bytes.len())
                    .sum::<usize>()
            })
        };
        let mut total: usize = results.values().map(size).sum();
        if total > MAX_SHARED_BYTES {
            let mut finished: Vec<(Instant, String, usize)> = results
                .iter()
                .filter_map(|(key, result)| {
                    result
                        .get()
                        .map(|done| (done.at, key.clone(), size(result)))
                })
                .collect();
            finished.sort();
            for (_, key, bytes) in finished {
                if total <= MAX_SHARED_BYTES {
                    break;
                }
                results.remove(&key);
                total -= bytes;
            }
        }
        if results.len() >= MAX_SHARED_RESULTS {
            let mut finished: Vec<(Instant, String)> = results
                .iter()
                .filter_map(|(key, result)| result.get().map(|done| (done.at, key.clone())))
                .collect();
            finished.sort();
            let excess = results.len() + 1 - MAX_SHARED_RESULTS;
            for (_, key) in finished.into_iter().take(excess) {
                results.remove(&key);
            }
            if results.len() >= MAX_SHARED_RESULTS {
                return None;
            }
        }
        let result = SharedResult::default();
        results.insert(key.to_owned(), result.clone());
        Some(result)
    }

    /// Make the request: wait for a slot, then collect under the timeout and the size cap.
    async fn fetch(&self, request: &CollectorRequest) -> CollectorOutput {
        // The semaphore is never closed; were it, running without a slot beats not running.
        let _slot = self.slots.acquire().await.ok();
        self.fetched.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let budget = Budget {
            started,
            timeout: request.timeout,
        };
        let mut files = Files::new(request.max_bytes);
        let ended = tokio::time::timeout(
            request.timeout,
            self.collect(&request.kind, request.max_bytes, budget, &mut files),
        )
        .await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status, error) = match ended {
            Err(_) => {
                let kept = if files.len() == 0 {
                    String::new()
                } else {
                    format!("; kept the {} files already complete", files.len())
                };
                (
                    CollectorStatus::TimedOut,
                    Some(format!("timed out after {}{kept}", human(request.timeout))),
                )
            }
            Ok(Err(Failure::TimedOut(error))) => (CollectorStatus::TimedOut, Some(error)),
            Ok(Err(Failure::Failed(error))) => (CollectorStatus::Failed, Some(error)),
            Ok(Ok(note)) => match files.cut_summary() {
                Some(cut) => (
                    CollectorStatus::Truncated,
                    Some(match note {
                        Some(note) => format!("{cut}; {note}"),
                        None => cut,
                    }),
                ),
                None => (CollectorStatus::Ok, note),
            },
        };
        CollectorOutput {
            name: request.name.clone(),
            kind: request.kind.label().to_owned(),
            status,
            error: error.map(|error| one_line(&error)),
            duration_ms,
            files: files.into_files(),
            shared: false,
        }
    }

    async fn collect(
        &self,
        kind: &RequestKind,
        max_bytes: u64,
        budget: Budget,
        files: &mut Files,
    ) -> Collected {
        match kind {
            RequestKind::PrometheusRange {
                query,
                start,
                end,
                step,
            } => {
                let params = vec![
                    ("query", query.clone()),
                    ("start", unix_seconds(*start)),
                    ("end", unix_seconds(*end)),
                    ("step", duration_seconds(*step)),
                ];
                let urls = &self.env.prometheus_urls;
                prometheus::collect(
                    &self.env.http,
                    urls,
                    "query_range",
                    "range",
                    params,
                    budget,
                    files,
                )
                .await
            }
            RequestKind::PrometheusQuery { query, at } => {
                let params = vec![("query", query.clone()), ("time", unix_seconds(*at))];
                let urls = &self.env.prometheus_urls;
                prometheus::collect(
                    &self.env.http,
                    urls,
                    "query",
                    "query",
                    params,
                    budget,
                    files,
                )
                .await
            }
            RequestKind::KubernetesLogs {
                namespace,
                workload,
                selector,
                containers,
                tail_lines,
                since,
                previous,
            } => {
                let client = self.kube_client(namespace).await?;
                let pods = PodsOf::resolve(&client, namespace, workload, selector).await?;
                let options = kubernetes::logs::LogOptions {
                    containers,
                    tail_lines: *tail_lines,
                    since: *since,
                    previous: *previous,
                    max_bytes,
                };
                kubernetes::logs::collect(&client, namespace, &pods, &options, files).await
            }
            RequestKind::KubernetesEvents {
                namespace,
                workload,
                selector,
            } => {
                let client = self.kube_client(namespace).await?;
                let pods = PodsOf::resolve(&client, namespace, workload, selector).await?;
                kubernetes::events::collect(&client, namespace, &pods, files).await
            }
            RequestKind::KubernetesObject {
                namespace,
                workload,
            } => {
                let workload = Workload::parse(namespace, workload).map_err(Failure::Failed)?;
                let client = self.kube_client(namespace).await?;
                kubernetes::object::collect(&client, &workload, files).await
            }
            RequestKind::Http { url, headers } => {
                let client = self
                    .direct_http
                    .as_ref()
                    .map_err(|error| Failure::Failed(format!("GET {url}: {error}")))?;
                http::collect(client, url, headers, files).await
            }
            RequestKind::Exec { argv, env } => {
                exec::collect(argv, env, budget.left(), max_bytes, files).await
            }
        }
    }

    async fn kube_client(&self, namespace: &str) -> Result<kube::Client, Failure> {
        if !is_rfc1123_label(namespace) {
            return Err(Failure::Failed(format!(
                "kubernetes namespace {namespace:?} is not a valid namespace name"
            )));
        }
        if !self
            .env
            .kubernetes
            .config()
            .namespaces
            .iter()
            .any(|allowed| allowed == namespace)
        {
            return Err(Failure::Failed(format!(
                "namespace {namespace:?} is not in kubernetes.namespaces"
            )));
        }
        self.env.kubernetes.client().await.map_err(Failure::Failed)
    }
}

/// How a collector ended when it did not finish normally.
#[derive(Debug)]
enum Failure {
    Failed(String),
    /// Its own time bound (an exec timeout, a Prometheus that never answered) ran out.
    TimedOut(String),
}

/// What a collector brought: `Ok` with an optional note (some part failed, e.g. one pod's
/// log), or the failure.
type Collected = Result<Option<String>, Failure>;

/// The collector's time, for collectors that share it among several requests.
#[derive(Debug, Clone, Copy)]
struct Budget {
    started: Instant,
    timeout: Duration,
}

impl Budget {
    fn left(&self) -> Duration {
        self.timeout.saturating_sub(self.started.elapsed())
    }
}

fn pretty_json(value: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// One line, bounded: an error text as `CollectorOutput::error` holds it.
fn one_line(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > MAX_ERROR_CHARS {
        let mut cut: String = line.chars().take(MAX_ERROR_CHARS).collect();
        cut.push('…');
        return cut;
    }
    line
}

fn human(duration: Duration) -> String {
    crate::duration::format(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_bounded_line() {
        assert_eq!(one_line("a\nb\t c"), "a b c");
        assert_eq!(
            one_line(&"x".repeat(3000)).chars().count(),
            MAX_ERROR_CHARS + 1
        );
    }
}
