//! collect: the collector executors. Each [`CollectorRequest`] becomes one
//! [`CollectorOutput`]: files (relative to the collector's directory; the bundle writer puts
//! them under `collectors/NAME/`), a status and one line saying what went wrong or was cut.
//! [`Collectors::run`] never fails and never panics: every failure is in the output.
//!
//! Files per kind:
//! * `prometheus_range`: `range.json` (the API's body as it came) and `range.csv`;
//!   `prometheus_query`: `query.json` and `query.csv`. CSV columns `series,timestamp,value`,
//!   one row per sample: `series` is the labels as `{a="b",…}` (sorted, `__name__` included,
//!   escaped as PromQL does), `timestamp` RFC 3339 in UTC with milliseconds, `value` the
//!   sample text as Prometheus gave it (`NaN`, `+Inf` kept; a native histogram's observation
//!   count). URLs are tried in order: a connection error, a 5xx, or an answer that is not the
//!   API's envelope moves on to the next; the API's own error (`"status": "error"` with a 4xx)
//!   is the answer, and the collector `failed` with its `errorType: error`.
//! * `kubernetes_logs`: `{pod}/{container}.log` per pod and container (the listed containers,
//!   else every container of `spec.containers`), `{pod}/{container}.previous.log` when
//!   `previous` and the container has restarted, and `errors.txt` naming every fetch that
//!   failed and the pods left out (at most [`MAX_LOG_PODS`] pods: those with restarts or not
//!   ready first, then by name). `failed` only when no log at all could be fetched.
//! * `kubernetes_events`: `events.json` (the matching events as the API gave them, oldest
//!   first) and `events.txt` (`time type reason Kind/name message`, one line each); plus
//!   `errors.txt` when the replica sets or pods could not be listed. Events are read with one
//!   paged list of the namespace ([`EVENT_PAGE_SIZE`] per page, at most [`MAX_EVENT_PAGES`]
//!   pages) and matched here: the workload itself, the replica sets it owns, its current pods
//!   and pods of those replica sets that are gone (named `{replicaset}-…`; a StatefulSet's
//!   `{name}-N`, a DaemonSet's `{name}-xxxxx`): the events of pods a restart replaced are often
//!   the evidence.
//! * `kubernetes_object`: `{kind}-{name}.json`, the workload without `metadata.managedFields`
//!   and without the `kubectl.kubernetes.io/last-applied-configuration` annotation (a copy of
//!   the object as applied, env values and all); every literal `env[].value` of its
//!   containers is `<redacted>` (a `valueFrom` only names where a value lives, and is kept).
//!   Only Deployments, StatefulSets and DaemonSets are read ([`Workload::parse`]): never a
//!   Secret.
//! * `http`: `response.json` (`{"status": N, "headers": {...}}`, repeated headers joined with
//!   ", ") and `body` (the bytes as received). Redirects are not followed, and any status is
//!   `ok`: the answer is the evidence.
//! * `exec`: `stdout.txt`, `stderr.txt` and `exit.json` (`{"exit_code", "signal",
//!   "duration_ms"}`), whatever the exit code: a diagnostic that exits non-zero is evidence
//!   too, so the collector is still `ok` (its `error` notes the exit). A command that could not
//!   start is `failed`; one that ran out of time is `timed_out`.
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ListParams, LogParams};
use serde_json::{Map, Value, json};
use tokio::sync::{OnceCell, Semaphore};

use super::request::{
    CollectedFile, CollectorOutput, CollectorRequest, CollectorStatus, RequestKind,
};
use crate::act::actions::Outcome;
use crate::act::actions::exec::{self, ExecRequest};
use crate::clock::Millis;
use crate::kubernetes::names::is_rfc1123_label;
use crate::kubernetes::{ClientSlot, Workload, WorkloadKind, error_text, get_workload};
use crate::probes::http::{describe_error, read_body, snippet};

/// At most this many pods have their logs fetched per collector.
pub const MAX_LOG_PODS: usize = 20;
/// Log requests of one collector in flight at once.
const LOG_FETCHES_AT_ONCE: usize = 4;
/// Events asked for per page of the namespace's event list.
pub const EVENT_PAGE_SIZE: u32 = 500;
/// Pages of events read at most (so at most 5000 events are looked at).
pub const MAX_EVENT_PAGES: usize = 10;
/// The largest Prometheus answer or Kubernetes list/object read, whatever `max_bytes` is: the
/// CSV is made from the whole answer, so it must be read whole before it is cut.
const MAX_API_BODY: usize = 64 * 1024 * 1024;
/// The most of an error answer read, for its message.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Results remembered for sharing; beyond it, finished ones are forgotten oldest first.
const MAX_SHARED_RESULTS: usize = 1024;
/// Bytes kept for sharing, all results together: past it, the oldest finished are forgotten
/// (whoever holds one keeps it; only the cache lets go).
const MAX_SHARED_BYTES: usize = 128 * 1024 * 1024;
/// Prometheus URLs after the first get at least this long each, however little is left.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);
/// What `exit.json` may need, kept out of the output bound of an exec collector.
const EXIT_JSON_RESERVE: u64 = 256;
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
                let kept = if files.entries.is_empty() {
                    String::new()
                } else {
                    format!("; kept the {} files already complete", files.entries.len())
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
                self.prometheus("query_range", "range", params, budget, files)
                    .await
            }
            RequestKind::PrometheusQuery { query, at } => {
                let params = vec![("query", query.clone()), ("time", unix_seconds(*at))];
                self.prometheus("query", "query", params, budget, files)
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
                let options = LogOptions {
                    containers,
                    tail_lines: *tail_lines,
                    since: *since,
                    previous: *previous,
                    max_bytes,
                };
                kubernetes_logs(&client, namespace, &pods, &options, files).await
            }
            RequestKind::KubernetesEvents {
                namespace,
                workload,
                selector,
            } => {
                let client = self.kube_client(namespace).await?;
                let pods = PodsOf::resolve(&client, namespace, workload, selector).await?;
                kubernetes_events(&client, namespace, &pods, files).await
            }
            RequestKind::KubernetesObject {
                namespace,
                workload,
            } => {
                let workload = Workload::parse(namespace, workload).map_err(Failure::Failed)?;
                let client = self.kube_client(namespace).await?;
                kubernetes_object(&client, &workload, files).await
            }
            RequestKind::Http { url, headers } => {
                let client = self
                    .direct_http
                    .as_ref()
                    .map_err(|error| Failure::Failed(format!("GET {url}: {error}")))?;
                http_get(client, url, headers, files).await
            }
            RequestKind::Exec { argv, env } => {
                run_exec(argv, env, budget.left(), max_bytes, files).await
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

// ---------------------------------------------------------------------------------------
// Files and the size cap

/// Which end of a file to keep when it is cut: the start of a document, the end of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Head,
    Tail,
}

/// A file's size before it was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Original {
    /// Not cut.
    Whole,
    Bytes(u64),
    /// More than was read (reading stopped at the cap).
    Unknown,
}

struct Entry {
    path: String,
    bytes: Vec<u8>,
    keep: Keep,
    original: Original,
}

/// The files of one collector, kept within `max_bytes` as they are added.
struct Files {
    max_bytes: u64,
    entries: Vec<Entry>,
}

impl Files {
    fn new(max_bytes: u64) -> Files {
        Files {
            max_bytes,
            entries: Vec::new(),
        }
    }

    fn add(&mut self, path: impl Into<String>, bytes: Vec<u8>, keep: Keep) {
        self.add_entry(path.into(), bytes, keep, Original::Whole);
    }

    /// Add a file that is already cut: `original` is its whole size (`None`: unknown).
    fn add_cut(
        &mut self,
        path: impl Into<String>,
        bytes: Vec<u8>,
        keep: Keep,
        original: Option<u64>,
    ) {
        let original = original.map_or(Original::Unknown, Original::Bytes);
        self.add_entry(path.into(), bytes, keep, original);
    }

    fn add_entry(&mut self, path: String, bytes: Vec<u8>, keep: Keep, original: Original) {
        self.entries.push(Entry {
            path,
            bytes,
            keep,
            original,
        });
        self.enforce();
    }

    fn total(&self) -> u64 {
        self.entries
            .iter()
            .map(|entry| entry.bytes.len() as u64)
            .sum()
    }

    /// Room left under the cap.
    fn room(&self) -> u64 {
        self.max_bytes.saturating_sub(self.total())
    }

    /// While over the cap, cut the largest file (the last among equals).
    fn enforce(&mut self) {
        let mut total = self.total();
        while total > self.max_bytes {
            // `max_by_key` returns the last of equal maxima.
            let Some(largest) = self
                .entries
                .iter_mut()
                .max_by_key(|entry| entry.bytes.len())
            else {
                return;
            };
            let length = largest.bytes.len();
            if length == 0 {
                return;
            }
            let cut = usize::try_from(total - self.max_bytes)
                .unwrap_or(usize::MAX)
                .min(length);
            if largest.original == Original::Whole {
                largest.original = Original::Bytes(length as u64);
            }
            let cut = match largest.keep {
                Keep::Head => {
                    let end = char_boundary_at_or_before(&largest.bytes, length - cut);
                    largest.bytes.truncate(end);
                    length - end
                }
                Keep::Tail => {
                    let start = char_boundary_at_or_after(&largest.bytes, cut);
                    largest.bytes.drain(..start);
                    start
                }
            };
            total -= cut as u64;
        }
    }

    /// What was cut, in one line; `None` when nothing was.
    fn cut_summary(&self) -> Option<String> {
        let cuts: Vec<String> = self
            .entries
            .iter()
            .filter_map(|entry| {
                let end = match entry.keep {
                    Keep::Head => "first",
                    Keep::Tail => "last",
                };
                let kept = entry.bytes.len();
                match entry.original {
                    Original::Whole => None,
                    Original::Bytes(original) => Some(format!(
                        "{} kept the {end} {kept} of {original} bytes",
                        entry.path
                    )),
                    Original::Unknown => Some(format!(
                        "{} kept the {end} {kept} bytes (more were not read)",
                        entry.path
                    )),
                }
            })
            .collect();
        if cuts.is_empty() {
            return None;
        }
        const SHOWN: usize = 5;
        let mut text = format!("output cut to max_bytes {}: ", self.max_bytes);
        text.push_str(&cuts[..cuts.len().min(SHOWN)].join(", "));
        if cuts.len() > SHOWN {
            text.push_str(&format!(" and {} more files", cuts.len() - SHOWN));
        }
        Some(text)
    }

    fn into_files(self) -> Vec<CollectedFile> {
        self.entries
            .into_iter()
            .map(|entry| CollectedFile {
                path: entry.path,
                bytes: entry.bytes.into(),
            })
            .collect()
    }
}

/// A UTF-8 character is at most this many bytes: a lead byte and three continuations.
const MAX_CONTINUATIONS: usize = 3;

fn is_continuation(byte: u8) -> bool {
    byte & 0b1100_0000 == 0b1000_0000
}

/// Where to end bytes cut at `index` so that no character is split: `index`, or the start of
/// the character it falls inside. Bytes that are not UTF-8 there are cut at `index`.
fn char_boundary_at_or_before(bytes: &[u8], index: usize) -> usize {
    if index >= bytes.len() {
        return bytes.len();
    }
    (0..=MAX_CONTINUATIONS)
        .map_while(|back| index.checked_sub(back))
        .find(|&at| !is_continuation(bytes[at]))
        .unwrap_or(index)
}

/// Where to start bytes cut at `index` so that no character is split: `index`, or the end of
/// the character it falls inside. Bytes that are not UTF-8 there are cut at `index`.
fn char_boundary_at_or_after(bytes: &[u8], index: usize) -> usize {
    (0..=MAX_CONTINUATIONS)
        .map(|forward| index + forward)
        .find(|&at| at >= bytes.len() || !is_continuation(bytes[at]))
        .unwrap_or(index)
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

// ---------------------------------------------------------------------------------------
// Prometheus

impl Collectors {
    /// `GET {url}/api/v1/{endpoint}` against each URL in turn; `{stem}.json` and `{stem}.csv`.
    async fn prometheus(
        &self,
        endpoint: &str,
        stem: &str,
        params: Vec<(&str, String)>,
        budget: Budget,
        files: &mut Files,
    ) -> Collected {
        let urls = &self.env.prometheus_urls;
        if urls.is_empty() {
            return Err(Failure::Failed(
                "no Prometheus URL: [prometheus] urls is empty".to_owned(),
            ));
        }
        let mut errors = Vec::new();
        for (index, base) in urls.iter().enumerate() {
            let last = index + 1 == urls.len();
            // Share what is left among the URLs not tried yet, so that one that hangs cannot
            // use up the time of the others; the last one has whatever is left (the
            // collector's own timeout bounds it).
            let attempt = if last {
                None
            } else {
                let remaining = u32::try_from(urls.len() - index).unwrap_or(u32::MAX);
                Some((budget.left() / remaining).max(MIN_ATTEMPT))
            };
            match prometheus_attempt(&self.env.http, base, endpoint, &params, attempt, budget).await
            {
                Attempt::Answer(body) => {
                    return prometheus_files(base, stem, body, files);
                }
                Attempt::NextUrl(error) => errors.push(format!("{base}: {error}")),
            }
        }
        let query = params
            .iter()
            .find(|(name, _)| *name == "query")
            .map(|(_, query)| query.as_str())
            .unwrap_or_default();
        Err(Failure::Failed(format!(
            "{endpoint} {query:?} failed on every Prometheus URL: {}",
            errors.join("; ")
        )))
    }
}

enum Attempt {
    /// The API answered (a success, or its own error for the query): no other URL is tried.
    Answer(Vec<u8>),
    /// This URL could not answer; try the next.
    NextUrl(String),
}

async fn prometheus_attempt(
    client: &reqwest::Client,
    base: &str,
    endpoint: &str,
    params: &[(&str, String)],
    attempt: Option<Duration>,
    budget: Budget,
) -> Attempt {
    let address = format!("{}/api/v1/{endpoint}", base.trim_end_matches('/'));
    let mut url = match reqwest::Url::parse(&address) {
        Ok(url) => url,
        Err(error) => return Attempt::NextUrl(format!("invalid URL: {error}")),
    };
    {
        let mut pairs = url.query_pairs_mut();
        for (name, value) in params {
            pairs.append_pair(name, value);
        }
        // Let Prometheus give up on the query when this collector does.
        let timeout = attempt.unwrap_or_else(|| budget.left()).max(MIN_ATTEMPT);
        pairs.append_pair("timeout", &format!("{:.3}", timeout.as_secs_f64()));
    }
    let mut builder = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json");
    if let Some(attempt) = attempt {
        builder = builder.timeout(attempt);
    }
    let response = match builder.send().await {
        Ok(response) => response,
        Err(error) => return Attempt::NextUrl(describe_error(&error)),
    };
    let status = response.status();
    let body = match read_body(response, MAX_API_BODY).await {
        Ok(body) => body,
        Err(error) if status.is_success() => return Attempt::NextUrl(error),
        Err(_) => Vec::new(),
    };
    let envelope = serde_json::from_slice::<Value>(&body)
        .ok()
        .filter(|envelope| envelope.get("status").and_then(Value::as_str).is_some());
    if status.is_server_error() || envelope.is_none() {
        let detail = match &envelope {
            Some(envelope) => api_error(envelope),
            None => snippet(&body, 200),
        };
        let code = status.as_u16();
        return Attempt::NextUrl(match (status.is_success(), detail.is_empty()) {
            (true, _) => format!("not a Prometheus API response: {detail}"),
            (false, true) => format!("HTTP {code}"),
            (false, false) => format!("HTTP {code}: {detail}"),
        });
    }
    Attempt::Answer(body)
}

fn api_error(envelope: &Value) -> String {
    let text = |name: &str| envelope.get(name).and_then(Value::as_str).unwrap_or("");
    match (text("errorType"), text("error")) {
        ("", "") => String::new(),
        (kind, "") => kind.to_owned(),
        ("", error) => error.to_owned(),
        (kind, error) => format!("{kind}: {error}"),
    }
}

/// `{stem}.json` as the API gave it, then `{stem}.csv`; failed when the API said `error`.
fn prometheus_files(base: &str, stem: &str, body: Vec<u8>, files: &mut Files) -> Collected {
    let envelope: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    files.add(format!("{stem}.json"), body, Keep::Head);
    if envelope["status"] != "success" {
        return Err(Failure::Failed(format!(
            "{base}: status {}: {}",
            envelope["status"],
            api_error(&envelope)
        )));
    }
    let data = &envelope["data"];
    let result_type = data["resultType"].as_str().unwrap_or_default();
    let csv = result_csv(result_type, &data["result"])
        .map_err(|error| Failure::Failed(format!("{base}: {error}")))?;
    files.add(format!("{stem}.csv"), csv, Keep::Head);
    Ok(None)
}

/// A query's result as CSV: `series,timestamp,value`, one row per sample.
fn result_csv(result_type: &str, result: &Value) -> Result<Vec<u8>, String> {
    let mut csv = String::from("series,timestamp,value\n");
    let mut row = |series: &str, pair: &Value| -> Result<(), String> {
        let (timestamp, value) = sample_text(pair)?;
        csv.push_str(&csv_field(series));
        csv.push(',');
        csv.push_str(&timestamp);
        csv.push(',');
        csv.push_str(&csv_field(&value));
        csv.push('\n');
        Ok(())
    };
    let series_list = || {
        result
            .as_array()
            .ok_or_else(|| format!("{result_type} result is not a list"))
    };
    match result_type {
        "matrix" => {
            for series in series_list()? {
                let name = series_name(&series["metric"]);
                let samples = series["values"].as_array().into_iter().flatten();
                let histograms = series["histograms"].as_array().into_iter().flatten();
                for pair in samples.chain(histograms) {
                    row(&name, pair)?;
                }
            }
        }
        "vector" => {
            for series in series_list()? {
                let name = series_name(&series["metric"]);
                match (series.get("value"), series.get("histogram")) {
                    (Some(pair), _) | (None, Some(pair)) => row(&name, pair)?,
                    (None, None) => {
                        return Err("vector sample has neither value nor histogram".to_owned());
                    }
                }
            }
        }
        "scalar" | "string" => row("", result)?,
        other => return Err(format!("unknown resultType {other:?}")),
    }
    Ok(csv.into_bytes())
}

/// `[<unix seconds>, "<value>"]` (or a native histogram, `[ts, {"count": …}]`) → the time in
/// RFC 3339 and the value as written.
fn sample_text(pair: &Value) -> Result<(String, String), String> {
    let malformed = || {
        format!(
            "malformed sample {}",
            snippet(pair.to_string().as_bytes(), 100)
        )
    };
    let seconds = pair.get(0).and_then(Value::as_f64).ok_or_else(malformed)?;
    let value = match pair.get(1) {
        Some(Value::String(value)) => value.clone(),
        Some(histogram @ Value::Object(_)) => histogram
            .get("count")
            .and_then(Value::as_str)
            .ok_or_else(malformed)?
            .to_owned(),
        _ => return Err(malformed()),
    };
    // Float seconds with millisecond precision, as Prometheus writes them.
    #[allow(clippy::cast_possible_truncation)]
    let millis = (seconds * 1000.0).round() as i64;
    let time = DateTime::<Utc>::from_timestamp_millis(millis).ok_or_else(malformed)?;
    Ok((time.to_rfc3339_opts(SecondsFormat::Millis, true), value))
}

/// `{a="b",c="d"}`, sorted, values escaped as in PromQL; `{}` for no labels.
fn series_name(metric: &Value) -> String {
    let labels: BTreeMap<&str, &str> = metric
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, value)| (name.as_str(), value.as_str().unwrap_or_default()))
        .collect();
    let inner: Vec<String> = labels
        .iter()
        .map(|(name, value)| {
            let escaped = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{name}=\"{escaped}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// A CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Unix milliseconds as the seconds Prometheus takes: `1700000000.123`.
fn unix_seconds(millis: Millis) -> String {
    format!("{}.{:03}", millis.div_euclid(1000), millis.rem_euclid(1000))
}

/// A step as float seconds: `15`, `0.5`.
fn duration_seconds(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        duration.as_secs().to_string()
    } else {
        format!("{}.{:03}", duration.as_secs(), duration.subsec_millis())
    }
}

// ---------------------------------------------------------------------------------------
// Kubernetes: requests

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
struct PodsOf {
    /// The workload and its object, when one was named.
    workload: Option<(Workload, Value)>,
    /// The label selector, in the API's syntax.
    selector: String,
    /// The pods it selects now, sorted by name.
    pods: Vec<Value>,
}

impl PodsOf {
    async fn resolve(
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

// ---------------------------------------------------------------------------------------
// Kubernetes: logs

struct LogOptions<'a> {
    containers: &'a [String],
    tail_lines: Option<u64>,
    since: Option<Duration>,
    previous: bool,
    max_bytes: u64,
}

/// One log to fetch.
struct LogFetch {
    pod: String,
    container: String,
    previous: bool,
}

impl LogFetch {
    fn path(&self) -> String {
        if self.previous {
            format!("{}/{}.previous.log", self.pod, self.container)
        } else {
            format!("{}/{}.log", self.pod, self.container)
        }
    }
}

async fn kubernetes_logs(
    client: &kube::Client,
    namespace: &str,
    pods: &PodsOf,
    options: &LogOptions<'_>,
    files: &mut Files,
) -> Collected {
    let mut errors: Vec<String> = Vec::new();
    if pods.pods.is_empty() {
        let error = format!(
            "no pods in namespace {namespace} match labelSelector {:?}",
            pods.selector
        );
        files.add("errors.txt", format!("{error}\n").into_bytes(), Keep::Head);
        return Err(Failure::Failed(error));
    }
    let mut chosen: Vec<&Value> = pods.pods.iter().collect();
    chosen.sort_by(|a, b| pod_priority(a).cmp(&pod_priority(b)));
    if chosen.len() > MAX_LOG_PODS {
        let left_out: Vec<&str> = chosen[MAX_LOG_PODS..]
            .iter()
            .map(|pod| name_of(pod))
            .collect();
        errors.push(format!(
            "{} pods match; logs of {MAX_LOG_PODS} fetched, left out: {}",
            chosen.len(),
            left_out.join(", ")
        ));
        chosen.truncate(MAX_LOG_PODS);
    }

    let mut plan = Vec::new();
    for pod in chosen {
        let pod_name = name_of(pod);
        let in_spec = |list: &str| -> Vec<String> {
            pod["spec"][list]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|container| container["name"].as_str().map(str::to_owned))
                .collect()
        };
        let containers = if options.containers.is_empty() {
            in_spec("containers")
        } else {
            let mut known = in_spec("containers");
            known.extend(in_spec("initContainers"));
            options
                .containers
                .iter()
                .filter(|wanted| {
                    let found = known.contains(wanted);
                    if !found {
                        errors.push(format!("{pod_name}: has no container {wanted:?}"));
                    }
                    found
                })
                .cloned()
                .collect()
        };
        for container in containers {
            let restarted = restart_count(pod, &container) > 0;
            plan.push(LogFetch {
                pod: pod_name.to_owned(),
                container: container.clone(),
                previous: false,
            });
            if options.previous && restarted {
                plan.push(LogFetch {
                    pod: pod_name.to_owned(),
                    container,
                    previous: true,
                });
            }
        }
    }

    let path = format!("/api/v1/namespaces/{namespace}/pods");
    // Each log alone may fill the cap; the cap then cuts the largest as files are added.
    let keep = usize::try_from(options.max_bytes).unwrap_or(usize::MAX);
    let attempted = plan.len();
    let mut fetched = 0usize;
    // A window of fetches in flight, answers taken in the plan's order. (Not
    // `stream::iter().map().buffered()`: its closure over borrowed data makes the future of
    // `Collectors::run` fail to be `Send` for every lifetime, so it could not be spawned.)
    let mut waiting = plan.iter();
    let mut in_flight = futures_util::stream::FuturesOrdered::new();
    for fetch in waiting.by_ref().take(LOG_FETCHES_AT_ONCE) {
        in_flight.push_back(fetch_log(client, &path, fetch, options, keep));
    }
    while let Some((fetch, result)) = in_flight.next().await {
        if let Some(next) = waiting.next() {
            in_flight.push_back(fetch_log(client, &path, next, options, keep));
        }
        match result {
            Ok((bytes, total)) => {
                fetched += 1;
                if total > bytes.len() as u64 {
                    files.add_cut(fetch.path(), bytes, Keep::Tail, Some(total));
                } else {
                    files.add(fetch.path(), bytes, Keep::Tail);
                }
            }
            Err(error) => {
                let what = if fetch.previous { " (previous)" } else { "" };
                errors.push(format!("{}/{}{what}: {error}", fetch.pod, fetch.container));
            }
        }
    }

    let failed = attempted - fetched;
    if !errors.is_empty() {
        let mut text = errors.join("\n");
        text.push('\n');
        files.add("errors.txt", text.into_bytes(), Keep::Head);
    }
    if fetched == 0 {
        return Err(Failure::Failed(format!(
            "no log could be fetched: {}",
            errors
                .first()
                .map(String::as_str)
                .unwrap_or("no container to read")
        )));
    }
    Ok(
        (failed > 0)
            .then(|| format!("{failed} of {attempted} log fetches failed (see errors.txt)")),
    )
}

/// `GET …/pods/{pod}/log?container=…`: the last `keep` bytes and the size of the whole log.
async fn fetch_log<'a>(
    client: &kube::Client,
    path: &str,
    fetch: &'a LogFetch,
    options: &LogOptions<'_>,
    keep: usize,
) -> (&'a LogFetch, Result<(Vec<u8>, u64), String>) {
    let params = LogParams {
        container: Some(fetch.container.clone()),
        tail_lines: options
            .tail_lines
            .map(|lines| i64::try_from(lines).unwrap_or(i64::MAX)),
        // The API takes whole seconds (at least 1).
        since_seconds: options
            .since
            .map(|since| i64::try_from(since.as_secs().max(1)).unwrap_or(i64::MAX)),
        previous: fetch.previous,
        ..LogParams::default()
    };
    let request = kube::core::Request::new(path).logs(&fetch.pod, &params);
    let result = async {
        let response = api_send(client, request).await?;
        read_tail(response.into_body(), keep).await
    }
    .await;
    (fetch, result)
}

// ---------------------------------------------------------------------------------------
// Kubernetes: events

/// Which `involvedObject`s belong to the workload or selector.
#[derive(Default)]
struct EventMatcher {
    /// `(kind, name)` pairs named outright.
    objects: BTreeSet<(String, String)>,
    /// Pod name prefixes of owned replica sets (`{replicaset}-`).
    pod_prefixes: Vec<String>,
    /// A StatefulSet's pods: `{name}-N`; a DaemonSet's: `{name}-xxxxx`.
    workload_pods: Option<(WorkloadKind, String)>,
}

impl EventMatcher {
    fn matches(&self, kind: &str, name: &str) -> bool {
        if self.objects.contains(&(kind.to_owned(), name.to_owned())) {
            return true;
        }
        if kind != "Pod" {
            return false;
        }
        if self.pod_prefixes.iter().any(|prefix| {
            name.strip_prefix(prefix.as_str())
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('-'))
        }) {
            return true;
        }
        match &self.workload_pods {
            Some((kind, workload)) => {
                let Some(rest) = name
                    .strip_prefix(workload.as_str())
                    .and_then(|rest| rest.strip_prefix('-'))
                else {
                    return false;
                };
                match kind {
                    WorkloadKind::StatefulSet => {
                        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
                    }
                    WorkloadKind::DaemonSet => {
                        rest.len() == 5
                            && rest
                                .bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                    }
                    WorkloadKind::Deployment => false,
                }
            }
            None => false,
        }
    }
}

async fn kubernetes_events(
    client: &kube::Client,
    namespace: &str,
    pods: &PodsOf,
    files: &mut Files,
) -> Collected {
    let mut errors = Vec::new();
    let mut matcher = EventMatcher::default();
    for pod in &pods.pods {
        matcher
            .objects
            .insert(("Pod".to_owned(), name_of(pod).to_owned()));
    }
    if let Some((workload, object)) = &pods.workload {
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        matcher.objects.insert((kind, workload.name.clone()));
        match workload.kind {
            WorkloadKind::Deployment => {
                let uid = object["metadata"]["uid"].as_str().unwrap_or_default();
                let path = format!("/apis/apps/v1/namespaces/{namespace}/replicasets");
                match list_items(client, &path, &pods.selector).await {
                    Ok(replica_sets) => {
                        for replica_set in &replica_sets {
                            let owned = replica_set["metadata"]["ownerReferences"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .any(|owner| {
                                    owner["kind"] == "Deployment"
                                        && owner["name"].as_str() == Some(workload.name.as_str())
                                        && (uid.is_empty() || owner["uid"].as_str() == Some(uid))
                                });
                            if owned {
                                let name = name_of(replica_set);
                                matcher
                                    .objects
                                    .insert(("ReplicaSet".to_owned(), name.to_owned()));
                                matcher.pod_prefixes.push(format!("{name}-"));
                            }
                        }
                    }
                    Err(error) => errors.push(format!(
                        "list replica sets of {workload}: {error}; their events are left out"
                    )),
                }
            }
            WorkloadKind::StatefulSet | WorkloadKind::DaemonSet => {
                matcher.workload_pods = Some((workload.kind, workload.name.clone()));
            }
        }
    }

    let path = format!("/api/v1/namespaces/{namespace}/events");
    let mut events: Vec<Value> = Vec::new();
    let mut continue_token: Option<String> = None;
    for page in 0.. {
        if page == MAX_EVENT_PAGES {
            errors.push(format!(
                "namespace {namespace} has more than {} events; only the first {} were looked at",
                MAX_EVENT_PAGES as u64 * u64::from(EVENT_PAGE_SIZE),
                MAX_EVENT_PAGES as u64 * u64::from(EVENT_PAGE_SIZE),
            ));
            break;
        }
        let params = ListParams {
            limit: Some(EVENT_PAGE_SIZE),
            continue_token: continue_token.take(),
            ..ListParams::default()
        };
        let list = match api_json(client, kube::core::Request::new(&path).list(&params)).await {
            Ok(list) => list,
            Err(error) if page == 0 => {
                return Err(Failure::Failed(format!(
                    "list events in namespace {namespace}: {error}"
                )));
            }
            Err(error) => {
                // A later page (its continue token expired, say): keep what was read.
                errors.push(format!(
                    "list events in namespace {namespace}, page {}: {error}; later events were not looked at",
                    page + 1
                ));
                break;
            }
        };
        for event in list["items"].as_array().into_iter().flatten() {
            let involved = &event["involvedObject"];
            let kind = involved["kind"].as_str().unwrap_or_default();
            let name = involved["name"].as_str().unwrap_or_default();
            let same_namespace = involved["namespace"]
                .as_str()
                .is_none_or(|found| found.is_empty() || found == namespace);
            if same_namespace && matcher.matches(kind, name) {
                events.push(event.clone());
            }
        }
        continue_token = list["metadata"]["continue"]
            .as_str()
            .filter(|token| !token.is_empty())
            .map(str::to_owned);
        if continue_token.is_none() {
            break;
        }
    }

    // A stable sort: events of one instant stay in the API's order.
    events.sort_by_cached_key(|event| event_time(event).1);
    let text: String = events.iter().map(event_line).collect();
    files.add(
        "events.json",
        pretty_json(&Value::Array(events)),
        Keep::Head,
    );
    files.add("events.txt", text.into_bytes(), Keep::Head);
    if errors.is_empty() {
        return Ok(None);
    }
    let note = format!("{} (see errors.txt)", errors[0]);
    let mut text = errors.join("\n");
    text.push('\n');
    files.add("errors.txt", text.into_bytes(), Keep::Head);
    Ok(Some(note))
}

/// When an event last happened, as written and as nanoseconds for sorting: `lastTimestamp`,
/// else (events.k8s.io writers leave it empty) `series.lastObservedTime`, else `eventTime`,
/// else `firstTimestamp`, else `metadata.creationTimestamp`.
fn event_time(event: &Value) -> (String, i64) {
    let candidates = [
        &event["lastTimestamp"],
        &event["series"]["lastObservedTime"],
        &event["eventTime"],
        &event["firstTimestamp"],
        &event["metadata"]["creationTimestamp"],
    ];
    for candidate in candidates {
        if let Some(text) = candidate.as_str().filter(|text| !text.is_empty())
            && let Ok(time) = DateTime::parse_from_rfc3339(text)
        {
            let nanos = time
                .timestamp_nanos_opt()
                .unwrap_or(time.timestamp() * 1_000_000_000);
            return (text.to_owned(), nanos);
        }
    }
    ("-".to_owned(), i64::MIN)
}

/// `time type reason Kind/name message (xN)`.
fn event_line(event: &Value) -> String {
    let text = |value: &Value| {
        value
            .as_str()
            .filter(|text| !text.is_empty())
            .unwrap_or("-")
            .to_owned()
    };
    let involved = &event["involvedObject"];
    let message = event["message"]
        .as_str()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let count = event["count"]
        .as_i64()
        .or_else(|| event["series"]["count"].as_i64())
        .unwrap_or(1);
    let repeated = if count > 1 {
        format!(" (x{count})")
    } else {
        String::new()
    };
    format!(
        "{} {} {} {}/{} {message}{repeated}\n",
        event_time(event).0,
        text(&event["type"]),
        text(&event["reason"]),
        text(&involved["kind"]),
        text(&involved["name"]),
    )
}

// ---------------------------------------------------------------------------------------
// Kubernetes: the workload object

async fn kubernetes_object(
    client: &kube::Client,
    workload: &Workload,
    files: &mut Files,
) -> Collected {
    let mut object = get_workload(client, workload)
        .await
        .map_err(|error| Failure::Failed(error.text()))?;
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    mask_object(&mut object);
    files.add(
        format!("{}-{}.json", workload.kind.as_str(), workload.name),
        pretty_json(&object),
        Keep::Head,
    );
    Ok(None)
}

/// The annotation `kubectl apply` keeps: the whole object as last applied, env values and
/// all.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drop what in a workload may hold secrets the patterns cannot know: every literal
/// `env[].value` (wherever a container list has one: containers, init and ephemeral
/// containers) becomes `<redacted>`, and the last-applied annotation goes. A `valueFrom` only
/// names a Secret or ConfigMap key, and is kept; an empty value says nothing, and is kept.
fn mask_object(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(annotations)) = map.get_mut("annotations") {
                annotations.remove(LAST_APPLIED);
            }
            if let Some(Value::Array(variables)) = map.get_mut("env") {
                for variable in variables.iter_mut() {
                    if let Some(literal) = variable.get_mut("value")
                        && !literal.is_null()
                        && literal.as_str() != Some("")
                    {
                        *literal = Value::String(crate::redact::REDACTED.to_owned());
                    }
                }
            }
            for child in map.values_mut() {
                mask_object(child);
            }
        }
        Value::Array(items) => {
            for item in items {
                mask_object(item);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// HTTP

async fn http_get(
    client: &reqwest::Client,
    url: &str,
    headers: &BTreeMap<String, String>,
    files: &mut Files,
) -> Collected {
    let fail = |error: String| Failure::Failed(format!("GET {url}: {error}"));
    let mut request_headers = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        let name = reqwest::header::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| fail(format!("invalid request header name {name:?}")))?;
        let value = reqwest::header::HeaderValue::from_str(value)
            .map_err(|_| fail(format!("invalid value for request header {name:?}")))?;
        request_headers.append(name, value);
    }
    let mut response = match client.get(url).headers(request_headers).send().await {
        Ok(response) => response,
        Err(error) if error.is_timeout() => {
            return Err(Failure::TimedOut(format!(
                "GET {url}: {}",
                describe_error(&error)
            )));
        }
        Err(error) => return Err(fail(describe_error(&error))),
    };
    let mut answer_headers = Map::new();
    for name in response.headers().keys() {
        let values: Vec<String> = response
            .headers()
            .get_all(name)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect();
        answer_headers.insert(name.as_str().to_owned(), json!(values.join(", ")));
    }
    let status = response.status().as_u16();
    let length = response.content_length();
    files.add(
        "response.json",
        pretty_json(&json!({"status": status, "headers": answer_headers})),
        Keep::Head,
    );

    // Read no more than fits; one byte beyond tells that there was more.
    let room = usize::try_from(files.room()).unwrap_or(usize::MAX);
    let mut body = Vec::new();
    let mut more = false;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > room {
                    // One byte past the room tells whether the cut splits a character.
                    body.extend_from_slice(&chunk[..=room - body.len()]);
                    let end = char_boundary_at_or_before(&body, room);
                    body.truncate(end);
                    more = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(error) if error.is_timeout() => {
                return Err(Failure::TimedOut(format!(
                    "GET {url}: reading the body: {}",
                    describe_error(&error)
                )));
            }
            Err(error) => {
                return Err(fail(format!(
                    "reading the body: {}",
                    describe_error(&error)
                )));
            }
        }
    }
    if more {
        files.add_cut("body", body, Keep::Head, length);
    } else {
        files.add("body", body, Keep::Head);
    }
    Ok(None)
}

// ---------------------------------------------------------------------------------------
// exec

async fn run_exec(
    argv: &[String],
    env: &[(String, String)],
    left: Duration,
    max_bytes: u64,
    files: &mut Files,
) -> Collected {
    // Each stream may take all the room; the cap then cuts the larger.
    let bound = usize::try_from(max_bytes.saturating_sub(EXIT_JSON_RESERVE)).unwrap_or(usize::MAX);
    let request = ExecRequest {
        argv: argv.to_vec(),
        env: env.to_vec(),
        timeout: left,
        max_output_bytes: bound,
    };
    let ran = match exec::run_to_end(&request).await {
        Ok(ran) => ran,
        Err(Outcome::Unknown { error }) if error.starts_with("timed out") => {
            return Err(Failure::TimedOut(error));
        }
        Err(Outcome::NotApplied { error, .. } | Outcome::Unknown { error })
        | Err(Outcome::Failed { error }) => return Err(Failure::Failed(error)),
        Err(Outcome::Done { .. }) => return Err(Failure::Failed("no output".to_owned())),
    };
    let mut note = None;
    for (path, text) in [("stdout.txt", &ran.stdout), ("stderr.txt", &ran.stderr)] {
        let bytes = text.as_bytes().to_vec();
        if ran.truncated && bytes.len() >= bound {
            files.add_cut(path, bytes, Keep::Head, None);
        } else {
            files.add(path, bytes, Keep::Head);
        }
    }
    if ran.truncated && files.cut_summary().is_none() {
        note = Some(
            "output may be incomplete: a process kept the output open after the command exited"
                .to_owned(),
        );
    }
    // A diagnostic that exits non-zero is evidence too; the manifest says how it ended.
    match (ran.exit_code, ran.signal) {
        (Some(0), _) => {}
        (Some(code), _) => note = Some(format!("exit code {code}")),
        (None, signal) => note = Some(format!("killed by signal {}", signal.unwrap_or_default())),
    }
    files.add(
        "exit.json",
        pretty_json(&json!({
            "exit_code": ran.exit_code,
            "signal": ran.signal,
            "duration_ms": ran.duration_ms,
        })),
        Keep::Head,
    );
    Ok(note)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(files: &Files) -> Vec<(String, usize)> {
        files
            .entries
            .iter()
            .map(|entry| (entry.path.clone(), entry.bytes.len()))
            .collect()
    }

    #[test]
    fn the_cap_cuts_the_largest_file_keeping_the_right_end() {
        let mut files = Files::new(100);
        files.add("a.json", vec![b'a'; 30], Keep::Head);
        files.add("b.log", b"0123456789".repeat(7), Keep::Tail);
        assert_eq!(files.total(), 100);
        assert_eq!(files.cut_summary(), None);
        // 30 + 70 + 40 = 140: the log (the largest) gives up 40 bytes from its start.
        files.add("c.json", vec![b'c'; 40], Keep::Head);
        assert_eq!(
            sizes(&files),
            vec![
                ("a.json".to_owned(), 30),
                ("b.log".to_owned(), 30),
                ("c.json".to_owned(), 40)
            ]
        );
        assert_eq!(files.entries[1].bytes, b"0123456789".repeat(3));
        assert_eq!(
            files.cut_summary().unwrap(),
            "output cut to max_bytes 100: b.log kept the last 30 of 70 bytes"
        );
        // Another 60 (160): d.txt, now the largest, gives up 60 from its end.
        files.add("d.txt", vec![b'd'; 60], Keep::Head);
        assert_eq!(files.total(), 100);
        assert_eq!(files.entries[3].bytes.len(), 0);
        // Equal sizes: the last one is cut.
        let mut files = Files::new(50);
        files.add("e", vec![b'e'; 30], Keep::Head);
        files.add("f", vec![b'f'; 30], Keep::Head);
        assert_eq!(
            sizes(&files),
            vec![("e".to_owned(), 30), ("f".to_owned(), 20)]
        );
    }

    #[test]
    fn cuts_never_split_a_character() {
        // 10 bytes: a 3-byte, a 4-byte and a 2-byte character, and a newline.
        let text = "€𝄞é\n".repeat(10);
        for max_bytes in 40..50 {
            for keep in [Keep::Head, Keep::Tail] {
                let mut files = Files::new(max_bytes);
                files.add("a", text.clone().into_bytes(), keep);
                let kept = &files.entries[0].bytes;
                assert!(files.total() <= max_bytes);
                assert!(kept.len() as u64 + 3 >= max_bytes, "{max_bytes} {keep:?}");
                let kept = std::str::from_utf8(kept)
                    .unwrap_or_else(|error| panic!("{max_bytes} {keep:?}: {error}"));
                match keep {
                    Keep::Head => assert!(text.starts_with(kept)),
                    Keep::Tail => assert!(text.ends_with(kept)),
                }
            }
        }
        // Bytes that are not UTF-8 are cut where the cap says.
        let mut files = Files::new(5);
        files.add("b", vec![0x80; 9], Keep::Tail);
        assert_eq!(files.entries[0].bytes.len(), 5);
        assert_eq!(char_boundary_at_or_before(&[0xe2, 0x82, 0xac], 2), 0);
        assert_eq!(char_boundary_at_or_after(&[0xe2, 0x82, 0xac], 1), 3);
        assert_eq!(char_boundary_at_or_after(&[0xe2, 0x82, 0xac], 0), 0);
    }

    #[test]
    fn an_object_keeps_no_literal_env_value_nor_its_last_applied_copy() {
        let containers = json!([{
            "name": "app",
            "env": [
                {"name": "DB_PASSWORD", "value": "hunter2-literal"},
                {"name": "EMPTY", "value": ""},
                {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}
            ]
        }]);
        let mut object = json!({
            "metadata": {"annotations": {
                LAST_APPLIED: "{\"env\":[{\"name\":\"DB_PASSWORD\",\"value\":\"hunter2-literal\"}]}",
                "deployment.kubernetes.io/revision": "3"
            }},
            "spec": {"template": {"spec": {"containers": containers, "initContainers": containers}}}
        });
        mask_object(&mut object);
        assert!(!object.to_string().contains("hunter2"), "{object:#}");
        assert_eq!(
            object["metadata"]["annotations"],
            json!({"deployment.kubernetes.io/revision": "3"})
        );
        for list in ["containers", "initContainers"] {
            let env = &object["spec"]["template"]["spec"][list][0]["env"];
            assert_eq!(
                env[0],
                json!({"name": "DB_PASSWORD", "value": "<redacted>"})
            );
            assert_eq!(env[1], json!({"name": "EMPTY", "value": ""}));
            assert_eq!(env[2]["valueFrom"]["secretKeyRef"]["key"], "pw");
        }
    }

    #[test]
    fn the_cap_may_empty_files_but_never_exceeds() {
        let mut files = Files::new(0);
        files.add("a", vec![1; 10], Keep::Head);
        files.add_cut("b", vec![2; 5], Keep::Tail, None);
        assert_eq!(files.total(), 0);
        let summary = files.cut_summary().unwrap();
        assert!(
            summary.contains("a kept the first 0 of 10 bytes"),
            "{summary}"
        );
        assert!(
            summary.contains("b kept the last 0 bytes (more were not read)"),
            "{summary}"
        );
    }

    #[test]
    fn csv_of_each_result_type() {
        let matrix = json!([
            {"metric": {"job": "a", "__name__": "up"}, "values": [[1700000000, "1"], [1700000015.5, "NaN"]]},
            {"metric": {"le": "a\"b,c"}, "histograms": [[1700000000, {"count": "7", "sum": "3"}]]}
        ]);
        assert_eq!(
            String::from_utf8(result_csv("matrix", &matrix).unwrap()).unwrap(),
            "series,timestamp,value\n\
             \"{__name__=\"\"up\"\",job=\"\"a\"\"}\",2023-11-14T22:13:20.000Z,1\n\
             \"{__name__=\"\"up\"\",job=\"\"a\"\"}\",2023-11-14T22:13:35.500Z,NaN\n\
             \"{le=\"\"a\\\"\"b,c\"\"}\",2023-11-14T22:13:20.000Z,7\n"
        );
        let vector = json!([{"metric": {}, "value": [1700000000.25, "+Inf"]}]);
        assert_eq!(
            String::from_utf8(result_csv("vector", &vector).unwrap()).unwrap(),
            "series,timestamp,value\n{},2023-11-14T22:13:20.250Z,+Inf\n"
        );
        assert_eq!(
            String::from_utf8(result_csv("scalar", &json!([1700000000, "2"])).unwrap()).unwrap(),
            "series,timestamp,value\n,2023-11-14T22:13:20.000Z,2\n"
        );
        assert!(result_csv("vector", &json!([{"metric": {}}])).is_err());
        assert!(result_csv("matrix", &json!({})).is_err());
        assert!(result_csv("other", &json!([])).is_err());
    }

    #[test]
    fn times_as_prometheus_takes_them() {
        assert_eq!(unix_seconds(1_700_000_000_123), "1700000000.123");
        assert_eq!(unix_seconds(5), "0.005");
        assert_eq!(unix_seconds(-1), "-1.999");
        assert_eq!(duration_seconds(Duration::from_secs(15)), "15");
        assert_eq!(duration_seconds(Duration::from_millis(500)), "0.500");
    }

    #[test]
    fn events_match_the_workload_its_replica_sets_and_their_pods() {
        let mut matcher = EventMatcher::default();
        matcher
            .objects
            .insert(("Deployment".to_owned(), "web".to_owned()));
        matcher.pod_prefixes.push("web-5d8c7b9f4-".to_owned());
        assert!(matcher.matches("Deployment", "web"));
        assert!(matcher.matches("Pod", "web-5d8c7b9f4-x2x9z"));
        assert!(!matcher.matches("Pod", "web-5d8c7b9f4-"));
        assert!(!matcher.matches("Pod", "web-5d8c7b9f4-a-b"));
        assert!(!matcher.matches("Deployment", "web-2"));
        assert!(!matcher.matches("ReplicaSet", "web-5d8c7b9f4-x2x9z"));

        let statefulset = EventMatcher {
            workload_pods: Some((WorkloadKind::StatefulSet, "db".to_owned())),
            ..EventMatcher::default()
        };
        assert!(statefulset.matches("Pod", "db-12"));
        assert!(!statefulset.matches("Pod", "db-x"));
        assert!(!statefulset.matches("Pod", "dbx-1"));
        let daemonset = EventMatcher {
            workload_pods: Some((WorkloadKind::DaemonSet, "agent".to_owned())),
            ..EventMatcher::default()
        };
        assert!(daemonset.matches("Pod", "agent-x2x9z"));
        assert!(!daemonset.matches("Pod", "agent-extra-x2x9z"));
    }

    #[test]
    fn event_lines_and_times() {
        let event = json!({
            "involvedObject": {"kind": "Pod", "name": "web-1"},
            "type": "Warning", "reason": "BackOff", "message": "Back-off\nrestarting",
            "count": 5, "lastTimestamp": "2026-03-01T10:00:00Z",
            "eventTime": "2026-03-01T09:00:00.000001Z"
        });
        assert_eq!(
            event_line(&event),
            "2026-03-01T10:00:00Z Warning BackOff Pod/web-1 Back-off restarting (x5)\n"
        );
        let new_style = json!({"eventTime": "2026-03-01T09:00:00.000001Z"});
        assert_eq!(event_time(&new_style).0, "2026-03-01T09:00:00.000001Z");
        assert!(event_time(&new_style).1 < event_time(&event).1);
        assert_eq!(event_time(&json!({})), ("-".to_owned(), i64::MIN));
    }

    #[test]
    fn errors_are_one_bounded_line() {
        assert_eq!(one_line("a\nb\t c"), "a b c");
        assert_eq!(
            one_line(&"x".repeat(3000)).chars().count(),
            MAX_ERROR_CHARS + 1
        );
    }
}
