//! `nightshift incidents list|show`: what happened, from the store, for a person or as JSON.

use std::fmt::Write as _;

use serde_json::Value;

use super::IncidentsCommand;
use super::output::{Cell, Style, Tone, key_values, pairs, table, text};
use crate::store::{IncidentDetail, IncidentSummary, Reader};

pub(super) fn run(reader: &Reader, command: IncidentsCommand, style: Style) -> anyhow::Result<()> {
    match command {
        IncidentsCommand::List {
            status,
            limit,
            json,
        } => {
            let incidents = reader.incidents(status.map(Into::into), limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&incidents)?);
            } else {
                print!("{}", render_list(&incidents, style));
            }
        }
        IncidentsCommand::Show { id, json } => {
            let Some(incident) = reader.incident(&id)? else {
                anyhow::bail!("no incident {}", text(&id));
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&incident)?);
            } else {
                print!("{}", render_show(&incident, style));
            }
        }
    }
    Ok(())
}

/// One line per incident under a header.
pub fn render_list(incidents: &[IncidentSummary], style: Style) -> String {
    if incidents.is_empty() {
        return "no incidents\n".to_owned();
    }
    let header = [
        "ID",
        "STATUS",
        "SEV",
        "ALERTNAME",
        "FIRST SEEN",
        "LAST SEEN",
    ]
    .map(|title| Cell::toned(title, Tone::Strong))
    .to_vec();
    let mut rows = vec![header];
    for incident in incidents {
        let severity = incident.severity.as_deref().unwrap_or("-");
        rows.push(vec![
            Cell::plain(text(&incident.id)),
            Cell::toned(
                incident.status.as_str(),
                Tone::of_status(incident.status.as_str()),
            ),
            Cell::toned(text(severity), Tone::of_severity(severity)),
            Cell::plain(text(incident.alertname.as_deref().unwrap_or("-"))),
            Cell::plain(&incident.first_seen),
            Cell::plain(&incident.last_seen),
        ]);
    }
    table(style, "", &rows)
}

/// Everything known about one incident: what fired, what was decided and why, what the probes
/// answered, what was done, whether and how people were paged, and every transition.
pub fn render_show(incident: &IncidentDetail, style: Style) -> String {
    let mut out = String::new();
    let summary = &incident.summary;
    let mut facts = vec![
        ("incident", Cell::toned(text(&summary.id), Tone::Strong)),
        (
            "status",
            Cell::toned(
                summary.status.as_str(),
                Tone::of_status(summary.status.as_str()),
            ),
        ),
        (
            "alert",
            Cell::plain(text(summary.alertname.as_deref().unwrap_or("-"))),
        ),
        ("starts at", Cell::plain(text(&summary.starts_at))),
        ("first seen", Cell::plain(&summary.first_seen)),
        ("last seen", Cell::plain(&summary.last_seen)),
    ];
    if let Some(closed) = &summary.closed_at {
        facts.push(("closed at", Cell::plain(closed)));
    }
    facts.push(("group", Cell::plain(text(&incident.group_key))));
    for (key, value) in facts {
        fact(&mut out, key, &value.render(style));
    }

    section(&mut out, style, "labels");
    out.push_str(&key_values(style, "  ", &summary.labels));
    section(&mut out, style, "annotations");
    out.push_str(&key_values(style, "  ", &incident.annotations));

    decision(&mut out, incident, style);
    actions(&mut out, &incident.actions, style);
    paging(&mut out, &incident.paging, style);

    section(&mut out, style, "transitions");
    let rows: Vec<Vec<Cell>> = incident
        .transitions
        .iter()
        .map(|transition| {
            vec![
                Cell::plain(&transition.at),
                Cell::plain(transition.kind.as_str()),
                Cell::plain(pairs(&transition.detail)),
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("  (none)\n");
    }
    out.push_str(&table(style, "  ", &rows));
    out
}

/// A top-level `key value` line; keys are padded to the longest (`first seen`), so the
/// values of the incident's facts, its decision and its page line up.
fn fact(out: &mut String, key: &str, value: &str) {
    let _ = writeln!(out, "{key:<10} {value}");
}

fn section(out: &mut String, style: Style, title: &str) {
    let _ = writeln!(out, "\n{}", style.paint(&format!("{title}:"), Tone::Strong));
}

/// A string field of a JSON object, escaped; empty when absent.
fn field<'a>(value: &'a Value, key: &str) -> std::borrow::Cow<'a, str> {
    text(value[key].as_str().unwrap_or(""))
}

/// The latest decision in full (why, probes, actions, note, page), then every decision in
/// order.
fn decision(out: &mut String, incident: &IncidentDetail, style: Style) {
    out.push('\n');
    let Some(latest) = incident.decisions.last() else {
        fact(out, "decision", "none yet");
        return;
    };
    let count = incident.decisions.len();
    let heading = format!(
        "rule {} · severity {} · branch {} ({count} decision{})",
        text(&latest.rule),
        style.paint(&text(&latest.severity), Tone::of_severity(&latest.severity)),
        text(&latest.branch),
        if count == 1 { "" } else { "s" }
    );
    fact(out, "decision", &heading);
    let trace = &latest.trace;
    let mut rows: Vec<Vec<Cell>> = Vec::new();
    if let Some(reason) = trace["classification"]["reason"].as_str() {
        rows.push(vec![Cell::plain("why"), Cell::plain(text(reason))]);
    }
    for (name, result) in trace["probes"].as_object().into_iter().flatten() {
        rows.push(vec![
            Cell::plain("probe"),
            Cell::plain(probe_line(name, result, style)),
        ]);
    }
    for action in trace["actions"].as_array().into_iter().flatten() {
        let name = action["name"]
            .as_str()
            .map_or_else(|| pairs(&action["name"]), |n| text(n).into_owned());
        rows.push(vec![
            Cell::plain("action"),
            Cell::plain(format!("{name}  {}", pairs(&action["rendered"]))),
        ]);
    }
    if let Some(note) = trace["note"].as_str().filter(|note| !note.is_empty()) {
        rows.push(vec![Cell::plain("note"), Cell::plain(text(note))]);
    }
    if let Some(page) = trace["page"].as_object() {
        let page = Value::Object(page.clone());
        rows.push(vec![
            Cell::plain("page"),
            Cell::plain(format!(
                "{} {} ({})",
                field(&page, "severity"),
                field(&page, "pagerduty_severity"),
                field(&page, "policy")
            )),
        ]);
    }
    out.push_str(&table(style, "  ", &rows));
    let history: Vec<Vec<Cell>> = incident
        .decisions
        .iter()
        .map(|earlier| {
            vec![
                Cell::plain(&earlier.at),
                Cell::plain(earlier.kind.as_str()),
                Cell::plain(text(&earlier.rule)),
                Cell::toned(
                    text(&earlier.severity),
                    Tone::of_severity(&earlier.severity),
                ),
                Cell::plain(format!(
                    "{}{}",
                    text(&earlier.branch),
                    if earlier.changed { " (changed)" } else { "" }
                )),
            ]
        })
        .collect();
    out.push_str("  every decision:\n");
    out.push_str(&table(style, "    ", &history));
}

/// A probe's outcome on one line: its answer when it answered, its error (once) when not.
fn probe_line(name: &str, result: &Value, style: Style) -> String {
    let ok = result["ok"] == true;
    let mut line = format!("{}{}  ", style.mark(ok), text(name));
    if ok {
        line.push_str(&style.paint("ok", Tone::Good));
        let fields = pairs(&result["fields"]);
        if !fields.is_empty() {
            let _ = write!(line, "  {fields}");
        }
    } else {
        let _ = write!(
            line,
            "{}: {}",
            style.paint("failed", Tone::Bad),
            field(result, "error")
        );
    }
    let mut notes = Vec::new();
    if let Some(latency) = result["latency_ms"].as_u64() {
        notes.push(format!("{latency} ms"));
    }
    if result["cached"] == true {
        notes.push("cached".to_owned());
    }
    if !notes.is_empty() {
        let _ = write!(line, "  ({})", notes.join(", "));
    }
    line
}

/// Every automatic action with the governor's verdict, its state and its result.
fn actions(out: &mut String, actions: &[Value], style: Style) {
    if actions.is_empty() {
        return;
    }
    section(out, style, "actions");
    for action in actions {
        let verdict = action["verdict"].as_str().unwrap_or("");
        let state = action["state"].as_str().unwrap_or("");
        let _ = writeln!(
            out,
            "  {}  {} ({}) on {}: {} → {}",
            field(action, "created_at"),
            field(action, "action"),
            field(action, "kind"),
            field(action, "target"),
            style.paint(&text(verdict), Tone::of_outcome(verdict)),
            style.paint(&text(state), Tone::of_outcome(state)),
        );
        if !action["result"].is_null() {
            let _ = writeln!(out, "      result  {}", pairs(&action["result"]));
        }
    }
}

/// The page state every view shows, then the decision that asked for it and every event sent.
fn paging(out: &mut String, paging: &Value, style: Style) {
    if paging.is_null() {
        return;
    }
    // What reached people first (the one page state every view shows), then the decision
    // that asked for it and every event sent.
    out.push('\n');
    let page_state = paging["page_state"].as_str().unwrap_or("");
    let page = format!(
        "{} — {}",
        style.paint(&text(page_state), Tone::of_page_state(page_state)),
        field(paging, "summary")
    );
    fact(out, "page", &page);
    let decided = format!(
        "decided {} ({} policy {}): {}",
        field(paging, "state"),
        field(paging, "severity"),
        field(paging, "policy"),
        field(paging, "reason")
    );
    fact(out, "paging", &decided);
    let rows: Vec<Vec<Cell>> = paging["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|event| {
            let state = event["state"].as_str().unwrap_or("");
            let error = event["last_error"]
                .as_str()
                .map(|error| format!(": {}", text(error)))
                .unwrap_or_default();
            vec![
                Cell::plain(field(event, "created_at")),
                Cell::plain(format!(
                    "{} {} → {}",
                    field(event, "channel"),
                    field(event, "kind"),
                    style.paint(&text(state), Tone::of_outcome(state))
                )),
                Cell::plain(format!("attempts {}{error}", event["attempts"])),
            ]
        })
        .collect();
    out.push_str(&table(style, "  ", &rows));
}
