//! How the CLI writes for a person: colour and symbols only on a terminal (and never under
//! `NO_COLOR`), keys and columns aligned, and every value that came from an alert, a probe or a
//! collector escaped before it reaches the terminal.
//!
//! Renderers build a `String` from facts and a [`Style`]; they do no I/O, so their tests read
//! exactly what a person would.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::Value;

/// Whether output carries colour and symbols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    decorated: bool,
}

impl Style {
    /// Plain text: what a pipe, a file or a test sees.
    pub const PLAIN: Style = Style { decorated: false };
    /// Colour and symbols.
    pub const DECORATED: Style = Style { decorated: true };

    /// Colour and symbols only when standard output is a terminal and `NO_COLOR` is unset or
    /// empty (<https://no-color.org>: any non-empty value turns colour off).
    pub fn decide(is_terminal: bool, no_color: Option<&str>) -> Style {
        Style {
            decorated: is_terminal && no_color.is_none_or(str::is_empty),
        }
    }

    /// `text` in `tone`; unchanged when plain.
    pub fn paint(self, text: &str, tone: Tone) -> String {
        if self.decorated && !text.is_empty() {
            format!("\x1b[{}m{text}\x1b[0m", tone.code())
        } else {
            text.to_owned()
        }
    }

    /// A mark before an outcome (`✓ ` or `✗ `, coloured); nothing when plain, where the
    /// outcome's word says it.
    pub fn mark(self, ok: bool) -> String {
        match (self.decorated, ok) {
            (false, _) => String::new(),
            (true, true) => format!("{} ", self.paint("✓", Tone::Good)),
            (true, false) => format!("{} ", self.paint("✗", Tone::Bad)),
        }
    }
}

/// What a coloured word means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Good,
    Bad,
    Warn,
    Muted,
    Strong,
}

impl Tone {
    fn code(self) -> &'static str {
        match self {
            Tone::Good => "32",
            Tone::Bad => "31",
            Tone::Warn => "33",
            Tone::Muted => "2",
            Tone::Strong => "1",
        }
    }

    /// An incident's status.
    pub fn of_status(status: &str) -> Tone {
        match status {
            "firing" => Tone::Bad,
            "resolved" => Tone::Good,
            _ => Tone::Muted,
        }
    }

    /// A severity: P1 and P2 wake people, P3 waits for the day.
    pub fn of_severity(severity: &str) -> Tone {
        match severity {
            "P1" | "P2" => Tone::Bad,
            "P3" => Tone::Warn,
            _ => Tone::Muted,
        }
    }

    /// A page state (`paging::PageState::as_str`).
    pub fn of_page_state(state: &str) -> Tone {
        match state {
            "delivered" => Tone::Good,
            "pending" => Tone::Warn,
            "rejected" | "no_destination" => Tone::Bad,
            _ => Tone::Muted,
        }
    }

    /// A collector's or an action's outcome word.
    pub fn of_outcome(outcome: &str) -> Tone {
        match outcome {
            "ok" | "done" | "written" | "final" => Tone::Good,
            "failed" | "timed_out" | "unknown" | "rejected" => Tone::Bad,
            "truncated" | "skipped" | "dry_run" | "paused" | "not_applied" => Tone::Warn,
            _ => Tone::Muted,
        }
    }
}

/// Text from outside nightshift (labels, annotations, probe answers, rendered templates) as it
/// may be shown: control characters escaped, so it cannot drive the terminal or fake a line.
pub fn text(value: &str) -> Cow<'_, str> {
    crate::escape::log_text(value)
}

/// A JSON value on one line for a person: an object as `key=value` pairs, a string as itself,
/// anything else as compact JSON; escaped as [`text`].
pub fn pairs(value: &Value) -> String {
    let shown = match value {
        Value::Null => String::new(),
        Value::String(string) => string.clone(),
        Value::Object(map) => map
            .iter()
            .map(|(key, value)| format!("{key}={}", scalar(value)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    };
    text(&shown).into_owned()
}

/// One value of a `key=value` pair: a plain word as itself, anything a reader could misread
/// (spaces, `=`, quotes, nothing at all) quoted as JSON.
fn scalar(value: &Value) -> String {
    match value {
        Value::String(string)
            if !string.is_empty()
                && !string
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '"' | '=')) =>
        {
            string.clone()
        }
        other => other.to_string(),
    }
}

/// One cell of a table: its text (already escaped) and how to colour it.
#[derive(Debug, Clone)]
pub struct Cell {
    text: String,
    tone: Option<Tone>,
    /// Padded on the left (numbers).
    right: bool,
}

impl Cell {
    pub fn plain(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            tone: None,
            right: false,
        }
    }

    /// A number, right-aligned in its column.
    pub fn number(value: impl ToString) -> Cell {
        Cell {
            text: value.to_string(),
            tone: None,
            right: true,
        }
    }

    pub fn toned(text: impl Into<String>, tone: Tone) -> Cell {
        Cell {
            text: text.into(),
            tone: Some(tone),
            right: false,
        }
    }

    /// What shows on screen: colour sequences (only ever nightshift's own: alert text has its
    /// escape characters escaped) take no room.
    /// The cell as shown, unpadded.
    pub fn render(&self, style: Style) -> String {
        match self.tone {
            Some(tone) => style.paint(&self.text, tone),
            None => self.text.clone(),
        }
    }

    fn width(&self) -> usize {
        let mut width = 0;
        let mut in_sequence = false;
        for character in self.text.chars() {
            match (in_sequence, character) {
                (false, '\x1b') => in_sequence = true,
                (false, _) => width += 1,
                (true, 'm') => in_sequence = false,
                (true, _) => {}
            }
        }
        width
    }
}

/// Rows as aligned columns, each line starting with `indent`; columns are separated by two
/// spaces and padded to their widest cell (padding is measured before colour is added, so
/// columns line up on a terminal too). The last cell of a row is not padded unless it is a
/// number.
pub fn table(style: Style, indent: &str, rows: &[Vec<Cell>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(Cell::width)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::from(indent);
        for (column, cell) in row.iter().enumerate() {
            let last = column + 1 == row.len();
            let padding = widths[column].saturating_sub(cell.width());
            let painted = cell.render(style);
            if cell.right {
                line.push_str(&" ".repeat(padding));
                line.push_str(&painted);
            } else {
                line.push_str(&painted);
                if !last {
                    line.push_str(&" ".repeat(padding));
                }
            }
            if !last {
                line.push_str("  ");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// `key  value` lines for a JSON object of strings (labels, annotations), keys padded to the
/// longest, both escaped; `(none)` for an empty or missing object.
pub fn key_values(style: Style, indent: &str, object: &Value) -> String {
    let rows: Vec<Vec<Cell>> = object
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| {
            vec![
                Cell::toned(text(key), Tone::Strong),
                Cell::plain(pairs(value)),
            ]
        })
        .collect();
    if rows.is_empty() {
        return format!("{indent}(none)\n");
    }
    table(style, indent, &rows)
}

/// A byte count for a person: exact below 1 KiB, else one decimal in KiB or MiB.
pub fn size(bytes: i64) -> String {
    const KIB: f64 = 1024.0;
    let value = bytes as f64;
    if bytes.abs() < 1024 {
        format!("{bytes} B")
    } else if value.abs() < KIB * KIB {
        format!("{:.1} KiB", value / KIB)
    } else {
        format!("{:.1} MiB", value / (KIB * KIB))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        let cases = [
            (true, None, Style::DECORATED),
            (true, Some(""), Style::DECORATED),
            (true, Some("1"), Style::PLAIN),
            (true, Some("false"), Style::PLAIN),
            (false, None, Style::PLAIN),
            (false, Some(""), Style::PLAIN),
            (false, Some("1"), Style::PLAIN),
        ];
        for (is_terminal, no_color, expected) in cases {
            assert_eq!(
                Style::decide(is_terminal, no_color),
                expected,
                "is_terminal={is_terminal} NO_COLOR={no_color:?}"
            );
        }
    }

    #[test]
    fn plain_text_has_no_escape_codes_or_symbols() {
        assert_eq!(Style::PLAIN.paint("firing", Tone::Bad), "firing");
        assert_eq!(Style::PLAIN.mark(true), "");
        assert_eq!(
            Style::DECORATED.paint("firing", Tone::Bad),
            "\x1b[31mfiring\x1b[0m"
        );
        assert!(Style::DECORATED.mark(false).contains('✗'));
        assert!(Style::DECORATED.mark(true).contains('✓'));
    }

    #[test]
    fn tables_align_before_colour() {
        let rows = vec![
            vec![
                Cell::plain("a"),
                Cell::toned("firing", Tone::Bad),
                Cell::plain("x"),
            ],
            vec![Cell::plain("long-key"), Cell::plain("ok"), Cell::plain("y")],
        ];
        assert_eq!(
            table(Style::PLAIN, "  ", &rows),
            "  a         firing  x\n  long-key  ok      y\n"
        );
        let decorated = table(Style::DECORATED, "", &rows);
        assert!(
            decorated.starts_with("a         \x1b[31mfiring\x1b[0m  x\n"),
            "{decorated:?}"
        );
    }

    #[test]
    fn key_values_pad_keys_and_escape_values() {
        let labels = json!({"alertname": "Disk", "team": "ops\x1b[31m", "n": "a\nb"});
        assert_eq!(
            key_values(Style::PLAIN, "  ", &labels),
            "  alertname  Disk\n  n          a\\nb\n  team       ops\\u{1b}[31m\n"
        );
        assert_eq!(key_values(Style::PLAIN, "  ", &json!({})), "  (none)\n");
    }

    #[test]
    fn pairs_read_as_key_value() {
        let cases = [
            (
                json!({"a": "x", "b": true, "c": "two words"}),
                r#"a=x b=true c="two words""#,
            ),
            (json!("plain"), "plain"),
            (json!(null), ""),
            (json!([1, 2]), "[1,2]"),
            (json!({"e": ""}), r#"e="""#),
            (json!({"k": "\u{1b}[2J"}), "k=\\u{1b}[2J"),
        ];
        for (value, expected) in cases {
            assert_eq!(pairs(&value), expected, "{value}");
        }
    }

    #[test]
    fn sizes_read_as_units() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(5344), "5.2 KiB");
        assert_eq!(size(3 * 1024 * 1024), "3.0 MiB");
    }
}
