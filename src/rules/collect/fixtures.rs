//! rules::collect::fixtures: what the collector tests share: a collector parsed from TOML,
//! its load-time problems, an alert, and a collector rendered for it.

use std::collections::BTreeMap;

use super::{CollectorSpec, RenderInput};
use crate::bundle::request::CollectorRequest;
use crate::clock::Millis;
use crate::rules::{AlertInput, Severity};

pub(super) fn parse(text: &str) -> CollectorSpec {
    toml::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

pub(super) fn problems(text: &str) -> Vec<String> {
    let sample = serde_json::json!({"labels": {"namespace": "vastai"}});
    parse(text).validate(&sample)
}

pub(super) fn render(
    text: &str,
    alert: &AlertInput,
    now: Millis,
) -> Result<CollectorRequest, String> {
    let context = alert.template_context(&BTreeMap::new(), "r", Severity::P2);
    parse(text).render(
        "c",
        &RenderInput {
            context: &context,
            alert,
            rule: "r",
            severity: Severity::P2,
            now,
        },
    )
}

pub(super) fn alert(labels: &[(&str, &str)]) -> AlertInput {
    AlertInput {
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        starts_at: "2026-03-14T02:47:31.204Z".to_owned(),
        incident_id: "abc-20260314T024731Z".to_owned(),
        ..AlertInput::default()
    }
}
