//! `nightshift bundles list|show`: debug bundles, from the store and the bundle's own manifest.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use super::BundlesCommand;
use super::output::{Cell, Style, Tone, pairs, size, table, text};
use crate::store::Reader;
use crate::store::{BundleRow, BundleState};

pub(super) fn run(
    reader: &Reader,
    state_dir: &Path,
    command: BundlesCommand,
    style: Style,
) -> anyhow::Result<()> {
    match command {
        BundlesCommand::List { limit, json } => {
            let rows = reader.bundles(limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", render_list(&rows, style));
            }
        }
        BundlesCommand::Show { id, json } => {
            let shown_id = text(&id).into_owned();
            let row = reader
                .bundle(&id)?
                .with_context(|| format!("no bundle for incident {shown_id}"))?;
            let path = row
                .path
                .clone()
                .filter(|_| matches!(row.state, BundleState::Written | BundleState::Final))
                .with_context(|| format!("the bundle of {shown_id} is {}", row.state))?;
            let file =
                crate::bundle::bundler::resolve_path(state_dir, &path).with_context(|| {
                    format!("bundle path {path:?} is outside the bundles directory")
                })?;
            let manifest = crate::bundle::archive::read_one(&file, "manifest.json")
                .with_context(|| format!("cannot read {}", file.display()))?
                .with_context(|| format!("{} has no manifest.json", file.display()))?;
            if json {
                println!("{}", String::from_utf8_lossy(&manifest));
                return Ok(());
            }
            let manifest: Value = serde_json::from_slice(&manifest)
                .with_context(|| format!("the manifest.json of {} is not JSON", file.display()))?;
            print!("{}", render_show(&row, &manifest, style));
        }
    }
    Ok(())
}

/// One line per bundle under a header.
pub fn render_list(rows: &[BundleRow], style: Style) -> String {
    if rows.is_empty() {
        return "no bundles\n".to_owned();
    }
    let header = ["INCIDENT", "STATE", "STATUS", "BYTES", "PATH"]
        .map(|title| Cell::toned(title, Tone::Strong))
        .to_vec();
    let mut table_rows = vec![header];
    for row in rows {
        table_rows.push(vec![
            Cell::plain(text(&row.episode_id)),
            Cell::toned(row.state.as_str(), Tone::of_outcome(row.state.as_str())),
            Cell::toned(&row.status, Tone::of_status(&row.status)),
            Cell::number(row.bytes),
            Cell::plain(text(row.path.as_deref().unwrap_or("-"))),
        ]);
    }
    table(style, "", &table_rows)
}

/// A bundle for a person: whose it is, where, how big, each file, each collector's outcome
/// (an error once), what could not be gathered, and how much was redacted.
pub fn render_show(row: &BundleRow, manifest: &Value, style: Style) -> String {
    let mut out = String::new();
    let mut facts = vec![
        ("incident", Cell::toned(text(&row.episode_id), Tone::Strong)),
        (
            "version",
            Cell::plain(text(manifest["version"].as_str().unwrap_or("-"))),
        ),
        (
            "state",
            Cell::toned(row.state.as_str(), Tone::of_outcome(row.state.as_str())),
        ),
        (
            "incident now",
            Cell::toned(&row.status, Tone::of_status(&row.status)),
        ),
        (
            "path",
            Cell::plain(text(row.path.as_deref().unwrap_or("-"))),
        ),
        (
            "size",
            Cell::plain(format!("{} ({} bytes)", size(row.bytes), row.bytes)),
        ),
    ];
    if let Some(generated) = manifest["generated_at"].as_str() {
        facts.push(("generated at", Cell::plain(text(generated))));
    }
    if let Some(written) = row.written_at {
        facts.push((
            "written at",
            Cell::plain(crate::duration::rfc3339_millis(written)),
        ));
    }
    if let Some(final_at) = row.final_at {
        facts.push((
            "final at",
            Cell::plain(crate::duration::rfc3339_millis(final_at)),
        ));
    }
    let rows: Vec<Vec<Cell>> = facts
        .into_iter()
        .map(|(key, value)| vec![Cell::plain(key), value])
        .collect();
    out.push_str(&table(style, "", &rows));

    let files = manifest["files"].as_array().map_or(&[][..], Vec::as_slice);
    section(&mut out, style, &format!("files ({})", files.len()));
    let redactions = &manifest["redactions"];
    let rows: Vec<Vec<Cell>> = files
        .iter()
        .map(|file| {
            let path = file["path"].as_str().unwrap_or("");
            let mut row = vec![
                Cell::plain(text(path)),
                Cell::number(file["bytes"].as_u64().unwrap_or(0)),
            ];
            if let Some(count) = redactions[path].as_u64() {
                row.push(Cell::toned(format!("{count} redacted"), Tone::Warn));
            }
            row
        })
        .collect();
    if rows.is_empty() {
        out.push_str("  (none)\n");
    }
    out.push_str(&table(style, "  ", &rows));

    section(&mut out, style, "collectors");
    let collectors = manifest["collectors"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let rows: Vec<Vec<Cell>> = collectors.iter().map(|c| collector_row(c, style)).collect();
    if rows.is_empty() {
        out.push_str("  (none)\n");
    }
    out.push_str(&table(style, "  ", &rows));

    let plan_errors = manifest["plan_errors"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    if !plan_errors.is_empty() {
        section(&mut out, style, "could not be planned");
        let rows: Vec<Vec<Cell>> = plan_errors
            .iter()
            .map(|error| {
                vec![
                    Cell::plain(text(error["collector"].as_str().unwrap_or(""))),
                    Cell::plain(text(error["error"].as_str().unwrap_or(""))),
                ]
            })
            .collect();
        out.push_str(&table(style, "  ", &rows));
    }
    let missed = manifest["evidence_missed"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    if !missed.is_empty() {
        section(&mut out, style, "evidence missed");
        for entry in missed {
            let _ = writeln!(out, "  {}", pairs(entry));
        }
    }

    let total: u64 = redactions
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, count)| count.as_u64())
        .sum();
    let files_redacted = redactions.as_object().map_or(0, serde_json::Map::len);
    let _ = writeln!(
        out,
        "\nredactions: {}",
        if total == 0 {
            "none".to_owned()
        } else {
            format!(
                "{total} in {files_redacted} file{}",
                if files_redacted == 1 { "" } else { "s" }
            )
        }
    );

    let highlights = manifest["highlights"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    if !highlights.is_empty() {
        section(&mut out, style, "highlights");
        for line in highlights {
            let _ = writeln!(out, "  {}", pairs(line));
        }
    }
    out
}

fn section(out: &mut String, style: Style, title: &str) {
    let _ = writeln!(out, "\n{}", style.paint(&format!("{title}:"), Tone::Strong));
}

/// One collector: its outcome, kind, phase, time taken, and its files or its error (once).
fn collector_row(collector: &Value, style: Style) -> Vec<Cell> {
    let status = collector["status"].as_str().unwrap_or("");
    let files = collector["files"].as_array().map_or(0, Vec::len);
    let mut detail = format!("{files} file{}", if files == 1 { "" } else { "s" });
    if let Some(error) = collector["error"].as_str() {
        let _ = write!(detail, ": {}", text(error));
    }
    let mut phase = text(collector["phase"].as_str().unwrap_or("")).into_owned();
    if collector["shared"] == true {
        phase.push_str(", shared");
    }
    vec![
        Cell::plain(format!(
            "{}{}",
            style.mark(status == "ok"),
            text(collector["name"].as_str().unwrap_or(""))
        )),
        Cell::plain(text(collector["kind"].as_str().unwrap_or(""))),
        Cell::toned(text(status), Tone::of_outcome(status)),
        Cell::plain(phase),
        Cell::number(format!(
            "{} ms",
            collector["duration_ms"].as_u64().unwrap_or(0)
        )),
        Cell::plain(detail),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn collectors_show_marks_only_when_decorated() {
        let ok = json!({"name": "logs", "kind": "exec", "status": "ok", "phase": "open",
                        "duration_ms": 3, "files": ["a", "b"], "error": null});
        let failed = json!({"name": "dead", "kind": "http", "status": "failed", "phase": "open",
                            "duration_ms": 0, "files": [], "error": "refused\u{1b}[2J"});
        let rows = |style| {
            table(
                style,
                "  ",
                &[collector_row(&ok, style), collector_row(&failed, style)],
            )
        };
        assert_eq!(
            rows(Style::PLAIN),
            "  logs  exec  ok      open  3 ms  2 files\n  \
             dead  http  failed  open  0 ms  0 files: refused\\u{1b}[2J\n"
        );
        let decorated = rows(Style::DECORATED);
        assert!(
            decorated.contains('✓') && decorated.contains('✗'),
            "{decorated}"
        );
        assert!(decorated.contains("\x1b[31mfailed\x1b[0m"), "{decorated:?}");
    }
}
