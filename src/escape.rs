//! Escaping for the channels where alert data meets people: Slack text, Markdown (bundle
//! documents, the night report) and human log lines.
//!
//! Labels, annotations, probe answers and command output are hostile data: whoever can shape an
//! alert can write `<!channel>` or `[Acknowledge](https://evil)` into them. Each value is
//! escaped here, once, where it enters text of one kind; nightshift's own markup (its links,
//! emphasis, code spans) is written around the escaped value, never through it.

use std::borrow::Cow;

// ---------------------------------------------------------------------------------------------
// Slack

/// Slack `text` (mrkdwn): `&`, `<` and `>` are all Slack reads as markup (`<!channel>`,
/// `<@U123>`, `<https://x|label>`); as entities they show as themselves.
pub fn slack(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>']) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            other => escaped.push(other),
        }
    }
    Cow::Owned(escaped)
}

// ---------------------------------------------------------------------------------------------
// Markdown

/// Characters that are markup anywhere in a line: links and images (`[`, `]`), autolinks and
/// HTML (`<`, `>`), code (`` ` ``), emphasis (`*`, `_`, `~`), table cells (`|`), and the
/// backslash itself, so that data cannot cancel an escape. `(`, `)` and `!` are left alone:
/// without an unescaped `[` they cannot form a link or an image, and summaries are full of
/// parentheses.
const MARKDOWN_INLINE: &[char] = &['\\', '`', '*', '_', '~', '[', ']', '<', '>', '|'];

/// A value as inline Markdown text: on one line (line breaks and control characters become
/// single spaces, so a value cannot start a block of its own), with every markup character
/// backslash-escaped. The rendered text reads exactly as the value.
pub fn markdown(text: &str) -> String {
    let line = one_line(text);
    let marker = block_marker(&line);
    let mut escaped = String::with_capacity(line.len() + 8);
    for (index, character) in line.char_indices() {
        if MARKDOWN_INLINE.contains(&character) || marker == Some(index) {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

/// Where a value placed at the start of a line would open a block (a heading, a list item, a
/// setext underline): the byte index of the character to escape.
fn block_marker(line: &str) -> Option<usize> {
    if line.starts_with(['#', '-', '+', '=']) {
        return Some(0);
    }
    // An ordered list item: up to nine digits, then `.` or `)`.
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    match line.as_bytes().get(digits) {
        Some(b'.' | b')') if (1..=9).contains(&digits) => Some(digits),
        _ => None,
    }
}

/// A value as a code span: shown exactly, whatever backticks it holds (the fence is longer than
/// any run of them inside), on one line.
pub fn markdown_code(text: &str) -> String {
    let line = one_line(text);
    if line.is_empty() {
        return String::new();
    }
    let fence = "`".repeat(longest_run(&line, '`') + 1);
    // CommonMark strips one space from each side, which keeps an edge backtick off the fence.
    let pad = if line.starts_with('`') || line.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{line}{pad}{fence}")
}

/// A fenced block shown as it is, whatever it holds: the fence is longer than any run of
/// backticks inside, so no line of `text` can close it.
pub fn markdown_fenced(text: &str, info: &str) -> String {
    let fence = "`".repeat(longest_run(text, '`').max(2) + 1);
    format!("{fence}{info}\n{text}\n{fence}\n")
}

/// A URL the reader should see whole (nightshift's incident and bundle pages, the Prometheus
/// graph): an autolink, whose text is its own target, so it cannot pose as something else.
/// Anything but a plain http(s) URL is shown as escaped text.
pub fn markdown_url(href: &str) -> String {
    let href = href.trim();
    let plain = is_web(href)
        && !href
            .chars()
            .any(|character| character.is_whitespace() || character.is_control())
        && !href.contains(['<', '>']);
    if plain {
        format!("<{href}>")
    } else {
        markdown(href)
    }
}

// ---------------------------------------------------------------------------------------------
// Logs

/// A value in a human log line: control characters (C0, DEL, C1) and Unicode line separators
/// written as escapes (`\n`, `\r`, `\t`, `\u{1b}`), so one record is one line and a value
/// cannot forge a second record or drive the terminal.
pub fn log_text(text: &str) -> Cow<'_, str> {
    if !text.chars().any(breaks_a_log_line) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for character in text.chars() {
        match character {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            other if breaks_a_log_line(other) => {
                escaped.push_str(&format!("\\u{{{:x}}}", u32::from(other)));
            }
            other => escaped.push(other),
        }
    }
    Cow::Owned(escaped)
}

fn breaks_a_log_line(character: char) -> bool {
    character.is_control() || matches!(character, '\u{2028}' | '\u{2029}')
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Words joined by single spaces; control characters count as spaces.
fn one_line(text: &str) -> String {
    text.split(|character: char| character.is_whitespace() || character.is_control())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn longest_run(text: &str, wanted: char) -> usize {
    let mut longest = 0;
    let mut run = 0;
    for character in text.chars() {
        if character == wanted {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    longest
}

/// Whether `href` is an http(s) URL (case-insensitive scheme): the only links nightshift writes
/// as links.
pub(crate) fn is_web(href: &str) -> bool {
    let start: String = href
        .chars()
        .take(8)
        .collect::<String>()
        .to_ascii_lowercase();
    start.starts_with("http://") || start.starts_with("https://")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(escape: impl Fn(&str) -> String, cases: &[(&str, &str)]) {
        for (input, expected) in cases {
            assert_eq!(escape(input), *expected, "{input:?}");
        }
    }

    #[test]
    fn slack_escapes_only_its_three_characters() {
        check(
            |text| slack(text).into_owned(),
            &[
                ("plain text, *bold* _it_", "plain text, *bold* _it_"),
                ("<!channel>", "&lt;!channel&gt;"),
                ("<!here> <@U123>", "&lt;!here&gt; &lt;@U123&gt;"),
                (
                    "<https://evil|Acknowledge>",
                    "&lt;https://evil|Acknowledge&gt;",
                ),
                // An entity in the data stays what it says, not the character it names.
                ("&lt; & &amp;", "&amp;lt; &amp; &amp;amp;"),
                ("", ""),
            ],
        );
        assert!(matches!(slack("nothing to do"), Cow::Borrowed(_)));
    }

    #[test]
    fn markdown_neutralises_links_images_html_and_blocks() {
        check(
            markdown,
            &[
                (
                    "Vast.ai API (5xx) in vastai!",
                    "Vast.ai API (5xx) in vastai!",
                ),
                (
                    "[Acknowledge](https://evil)",
                    "\\[Acknowledge\\](https://evil)",
                ),
                (
                    "![x](https://evil/track.png)",
                    "!\\[x\\](https://evil/track.png)",
                ),
                ("[ref]: https://evil", "\\[ref\\]: https://evil"),
                ("<https://evil>", "\\<https://evil\\>"),
                (
                    "<img src=https://evil/t.png>",
                    "\\<img src=https://evil/t.png\\>",
                ),
                ("*a* _b_ ~~c~~ `d`", "\\*a\\* \\_b\\_ \\~\\~c\\~\\~ \\`d\\`"),
                ("a | b", "a \\| b"),
                // A backslash in the data cannot cancel the escape that follows it.
                ("\\[x](y)", "\\\\\\[x\\](y)"),
                // Line breaks and control characters: one line, single spaces.
                ("one\ntwo\r\n\n# three", "one two # three"),
                ("a\u{1b}[31mb\u{0}c", "a \\[31mb c"),
                ("  padded  ", "padded"),
                // At the start of a line these would open a block.
                ("# heading", "\\# heading"),
                ("- item", "\\- item"),
                ("+ item", "\\+ item"),
                ("===", "\\==="),
                ("1. first", "1\\. first"),
                ("12) twelfth", "12\\) twelfth"),
                ("> quote", "\\> quote"),
                ("2026 was fine. 5xx", "2026 was fine. 5xx"),
                ("", ""),
            ],
        );
    }

    #[test]
    fn code_spans_and_fences_hold_any_backticks() {
        check(
            markdown_code,
            &[
                ("id-1", "`id-1`"),
                ("a`b", "``a`b``"),
                ("a``b", "```a``b```"),
                ("`edge", "`` `edge ``"),
                ("two\nlines", "`two lines`"),
                ("", ""),
            ],
        );
        assert_eq!(markdown_fenced("text", "text"), "```text\ntext\n```\n");
        assert_eq!(
            markdown_fenced("a\n`````\nb", ""),
            "``````\na\n`````\nb\n``````\n"
        );
    }

    #[test]
    fn urls_are_autolinks_only_when_plain_http() {
        check(
            markdown_url,
            &[
                (
                    " https://nightshift.example/api/v1/incidents/a_b ",
                    "<https://nightshift.example/api/v1/incidents/a_b>",
                ),
                ("HTTP://x/?a=1&b=2", "<HTTP://x/?a=1&b=2>"),
                ("javascript:alert(1)", "javascript:alert(1)"),
                (
                    "https://x/> [a](https://evil)",
                    "https://x/\\> \\[a\\](https://evil)",
                ),
                ("https://x/\nb", "https://x/ b"),
                ("bundles/c6_1.tar.gz", "bundles/c6\\_1.tar.gz"),
            ],
        );
    }

    #[test]
    fn log_text_keeps_a_record_on_one_line() {
        check(
            |text| log_text(text).into_owned(),
            &[
                ("plain é ✅", "plain é ✅"),
                ("x\nERROR forged record", "x\\nERROR forged record"),
                ("a\r\nb\tc", "a\\r\\nb\\tc"),
                ("\u{1b}[2J", "\\u{1b}[2J"),
                ("\u{0}\u{7f}\u{85}\u{9b}", "\\u{0}\\u{7f}\\u{85}\\u{9b}"),
                ("a\u{2028}b", "a\\u{2028}b"),
                // A backslash is not a control character: it stays as it is.
                ("C:\\temp", "C:\\temp"),
            ],
        );
        assert!(matches!(log_text("nothing to do"), Cow::Borrowed(_)));
    }
}
