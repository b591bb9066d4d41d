//! rules::collect::describe: one line saying what a rendered collector will fetch, for
//! `explain`.

use super::render::rfc3339;
use super::validate::human;
use crate::bundle::request::{CollectorRequest, RequestKind};

/// One line saying what a rendered collector will fetch, for `explain`.
pub fn describe(request: &CollectorRequest) -> String {
    let target = |workload: &Option<String>, selector: &Option<String>| match (workload, selector) {
        (Some(workload), _) => workload.clone(),
        (None, Some(selector)) => format!("pods with {selector}"),
        (None, None) => "?".to_owned(),
    };
    match &request.kind {
        RequestKind::PrometheusRange {
            query,
            start,
            end,
            step,
        } => format!(
            "{query} from {} to {} every {}",
            rfc3339(*start),
            rfc3339(*end),
            human(*step)
        ),
        RequestKind::PrometheusQuery { query, at } => format!("{query} at {}", rfc3339(*at)),
        RequestKind::KubernetesLogs {
            namespace,
            workload,
            selector,
            containers,
            tail_lines,
            since,
            previous,
        } => {
            let mut out = format!("logs of {} in {namespace}", target(workload, selector));
            if containers.is_empty() {
                out.push_str(", every container");
            } else {
                out.push_str(&format!(", containers {}", containers.join(", ")));
            }
            match (tail_lines, since) {
                (Some(lines), Some(since)) => out.push_str(&format!(
                    ", the last {lines} lines of the last {}",
                    human(*since)
                )),
                (Some(lines), None) => out.push_str(&format!(", the last {lines} lines")),
                (None, Some(since)) => out.push_str(&format!(", the last {}", human(*since))),
                (None, None) => {}
            }
            if *previous {
                out.push_str(", previous containers too");
            }
            out
        }
        RequestKind::KubernetesEvents {
            namespace,
            workload,
            selector,
        } => format!("events of {} in {namespace}", target(workload, selector)),
        RequestKind::KubernetesObject {
            namespace,
            workload,
        } => format!("{workload} in {namespace} (spec and status)"),
        RequestKind::Http { url, headers } => {
            if headers.is_empty() {
                format!("GET {url}")
            } else {
                let names: Vec<&str> = headers.keys().map(String::as_str).collect();
                format!("GET {url} (headers {})", names.join(", "))
            }
        }
        RequestKind::Exec { argv, .. } => {
            serde_json::to_string(argv).unwrap_or_else(|_| argv.join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::collect::fixtures::{alert, render};

    #[test]
    fn describe_says_what_is_fetched() {
        let now = 1_773_457_000_000;
        let range = render(
            "kind = \"prometheus_range\"\nquery = 'rate(x{ns=\"{{ labels.ns }}\"}[5m])'",
            &alert(&[("ns", "vastai")]),
            now,
        )
        .unwrap();
        assert_eq!(
            describe(&range),
            "rate(x{ns=\"vastai\"}[5m]) from 2026-03-14T00:47:00Z to 2026-03-14T02:56:00Z every 1m"
        );
        let logs = render(
            "kind = \"kubernetes_logs\"\nnamespace = \"vastai\"\nselector = \"app=api\"\ncontainers = [\"app\", \"proxy\"]",
            &alert(&[]),
            now,
        )
        .unwrap();
        assert_eq!(
            describe(&logs),
            "logs of pods with app=api in vastai, containers app, proxy, the last 500 lines of \
             the last 1h, previous containers too"
        );
    }
}
