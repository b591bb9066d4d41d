//! logs: the `kubernetes_logs` collector. `{pod}/{container}.log` per pod and container (the
//! listed containers, else every container of `spec.containers`),
//! `{pod}/{container}.previous.log` when `previous` and the container has restarted, and
//! `errors.txt` naming every fetch that failed and the pods left out (at most
//! [`MAX_LOG_PODS`] pods: those with restarts or not ready first, then by name). `failed` only
//! when no log at all could be fetched.

use std::time::Duration;

use futures_util::StreamExt;
use kube::api::LogParams;
use serde_json::Value;

use super::super::files::{Files, Keep};
use super::super::{Collected, Failure};
use super::{PodsOf, api_send, name_of, pod_priority, read_tail, restart_count};

/// At most this many pods have their logs fetched per collector.
pub const MAX_LOG_PODS: usize = 20;
/// Log requests of one collector in flight at once.
const LOG_FETCHES_AT_ONCE: usize = 4;

pub(in crate::bundle::collectors) struct LogOptions<'a> {
    pub(in crate::bundle::collectors) containers: &'a [String],
    pub(in crate::bundle::collectors) tail_lines: Option<u64>,
    pub(in crate::bundle::collectors) since: Option<Duration>,
    pub(in crate::bundle::collectors) previous: bool,
    pub(in crate::bundle::collectors) max_bytes: u64,
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

pub(in crate::bundle::collectors) async fn collect(
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
