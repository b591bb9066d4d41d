//! events: the `kubernetes_events` collector. `events.json` (the matching events as the API
//! gave them, oldest first) and `events.txt` (`time type reason Kind/name message`, one line
//! each); plus `errors.txt` when the replica sets or pods could not be listed. Events are read
//! with one paged list of the namespace ([`EVENT_PAGE_SIZE`] per page, at most
//! [`MAX_EVENT_PAGES`] pages) and matched here: the workload itself, the replica sets it owns,
//! its current pods and pods of those replica sets that are gone (named `{replicaset}-…`; a
//! StatefulSet's `{name}-N`, a DaemonSet's `{name}-xxxxx`): the events of pods a restart
//! replaced are often the evidence.

use std::collections::BTreeSet;

use chrono::DateTime;
use kube::api::ListParams;
use serde_json::Value;

use super::super::files::{Files, Keep};
use super::super::{Collected, Failure, pretty_json};
use super::{PodsOf, api_json, list_items, name_of};
use crate::kubernetes::WorkloadKind;

/// Events asked for per page of the namespace's event list.
pub const EVENT_PAGE_SIZE: u32 = 500;
/// Pages of events read at most (so at most 5000 events are looked at).
pub const MAX_EVENT_PAGES: usize = 10;

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

pub(in crate::bundle::collectors) async fn collect(
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
