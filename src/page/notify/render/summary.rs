//! render::summary: what every document says about the page as a whole: its title, what
//! was done across its incidents, and the links to nightshift and the runbook.

use std::collections::HashSet;

use super::sentence::{action_sentence, cut, one_line};
use crate::page::notify::view::{IncidentView, PageView};

/// `what_was_done` (and the status update's current action) stays readable at this size; the
/// full list is in the incidents.
pub(super) const WHAT_WAS_DONE_LIMIT: usize = 4000;

const NOTHING_DONE: &str = "nothing was done automatically";

fn incident_title(incident: &IncidentView) -> &str {
    [
        incident.summary.as_str(),
        incident.labels.get("alertname").map_or("", String::as_str),
        incident.rule.as_str(),
        incident.id.as_str(),
    ]
    .into_iter()
    .find(|text| !text.trim().is_empty())
    .unwrap_or("incident")
}

/// The first incident's summary and how many more there are, within `limit` characters; the
/// summary is cut rather than the count.
pub(super) fn title(view: &PageView, limit: usize) -> String {
    let more = view.incidents.len().saturating_sub(1) + view.more_incidents;
    let Some(first) = view.incidents.first() else {
        return cut(&format!("{more} incidents"), limit);
    };
    let summary = one_line(incident_title(first));
    if more == 0 {
        return cut(&summary, limit);
    }
    let suffix = format!(" (+{more} more)");
    let room = limit.saturating_sub(suffix.chars().count());
    format!("{}{suffix}", cut(&summary, room))
}

/// Every incident's action sentences joined, identical ones once, within
/// `WHAT_WAS_DONE_LIMIT`.
pub(super) fn what_was_done(view: &PageView) -> String {
    let mut seen = HashSet::new();
    let sentences: Vec<String> = view
        .incidents
        .iter()
        .flat_map(|incident| &incident.actions)
        .map(action_sentence)
        .filter(|sentence| seen.insert(sentence.clone()))
        .collect();
    if sentences.is_empty() {
        return NOTHING_DONE.to_owned();
    }
    let mut text = String::new();
    let mut length = 0;
    let mut shown = 0;
    for sentence in &sentences {
        let separator = if shown == 0 { "" } else { "; " };
        let added = separator.len() + sentence.chars().count();
        if length + added > WHAT_WAS_DONE_LIMIT {
            break;
        }
        text.push_str(separator);
        text.push_str(sentence);
        length += added;
        shown += 1;
    }
    let left = sentences.len() - shown;
    if left > 0 {
        text.push_str(&format!("; and {left} more (see the incidents)"));
    }
    text
}

pub(super) fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// nightshift's own page for an incident, when nightshift knows its external URL.
pub(super) fn nightshift_link(view: &PageView, incident: &IncidentView) -> Option<String> {
    view.external_url
        .as_deref()
        .map(str::trim)
        .filter(|base| crate::escape::is_web(base))
        .map(|base| join_url(base, &format!("api/v1/incidents/{}", incident.id)))
}

pub(super) fn runbook_link(incident: &IncidentView) -> Option<&str> {
    incident
        .annotations
        .get("runbook_url")
        .map(|href| href.trim())
        .filter(|href| crate::escape::is_web(href))
}
