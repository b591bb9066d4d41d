//! Alertmanager label matchers: `name="value"`, `name!="value"`, `name=~"regex"`,
//! `name!~"regex"`, with Alertmanager's semantics: regexes are fully anchored, and a label that
//! is missing equals the empty string (so `team=""` matches alerts without a `team` label).

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::Mutex;

use regex::Regex;

use crate::ingest::webhook::LabelSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchType {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl MatchType {
    fn operator(self) -> &'static str {
        match self {
            MatchType::Equal => "=",
            MatchType::NotEqual => "!=",
            MatchType::Regex => "=~",
            MatchType::NotRegex => "!~",
        }
    }
}

/// One compiled matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub kind: MatchType,
    pub value: String,
    /// How a regex matcher is evaluated.
    pattern: Pattern,
}

/// A regex whose alternatives are all plain words (`critical|page`, `ns-0042|ns-0043`) is a set
/// of strings: comparing is several times cheaper than running the regex, and nothing needs
/// compiling. Anything else is compiled, anchored.
#[derive(Debug, Clone)]
enum Pattern {
    None,
    Literals(Vec<String>),
    Regex(Regex),
}

/// Compiled regexes by pattern, shared by every load so that a reload (or a rule set that
/// repeats a pattern) does not compile the same one again.
static REGEX_CACHE: Mutex<Option<HashMap<String, Regex>>> = Mutex::new(None);

fn compile_anchored(value: &str) -> Result<Regex, String> {
    let mut cache = REGEX_CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(regex) = cache.get(value) {
        return Ok(regex.clone());
    }
    let invalid = |error: regex::Error| format!("invalid regular expression {value:?}: {error}");
    // The value must be a regex on its own: wrapped in the anchors, `a)|(b` would compile as
    // `^(?:a)|(b)$`, one alternative no longer anchored at its end. Alertmanager refuses it.
    Regex::new(value).map_err(invalid)?;
    let regex = Regex::new(&format!("^(?:{value})$")).map_err(invalid)?;
    if cache.len() >= 10_000 {
        cache.clear();
    }
    cache.insert(value.to_owned(), regex.clone());
    Ok(regex)
}

/// The alternatives of a pattern made only of literal words and `|`, if it is one.
fn literal_alternatives(value: &str) -> Option<Vec<String>> {
    let words: Vec<&str> = value.split('|').collect();
    let literal = |word: &&str| {
        !word.is_empty()
            && word.chars().all(|c| {
                c.is_alphanumeric() || matches!(c, '-' | '_' | ':' | '/' | ' ' | '@' | ',')
            })
    };
    words
        .iter()
        .all(literal)
        .then(|| words.iter().map(|w| (*w).to_owned()).collect())
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.kind == other.kind && self.value == other.value
    }
}

impl fmt::Display for Matcher {
    /// Quoted as Alertmanager quotes: only `\`, `"` and a newline are escaped, which is exactly
    /// what [`parse`] reads back (Rust's `{:?}` would escape a tab as `\t`, which it does not).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}\"", self.name, self.kind.operator())?;
        for c in self.value.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

impl Matcher {
    pub fn new(name: &str, kind: MatchType, value: &str) -> Result<Matcher, String> {
        let pattern = match kind {
            MatchType::Regex | MatchType::NotRegex => match literal_alternatives(value) {
                Some(words) => Pattern::Literals(words),
                None => Pattern::Regex(compile_anchored(value)?),
            },
            MatchType::Equal | MatchType::NotEqual => Pattern::None,
        };
        Ok(Matcher {
            name: name.to_owned(),
            kind,
            value: value.to_owned(),
            pattern,
        })
    }

    fn regex_matches(&self, value: &str) -> bool {
        match &self.pattern {
            Pattern::Literals(words) => words.iter().any(|w| w == value),
            Pattern::Regex(regex) => regex.is_match(value),
            Pattern::None => false,
        }
    }

    /// Does this matcher accept `value` (the empty string when the label is missing)?
    pub fn matches_value(&self, value: &str) -> bool {
        match self.kind {
            MatchType::Equal => value == self.value,
            MatchType::NotEqual => value != self.value,
            MatchType::Regex => self.regex_matches(value),
            MatchType::NotRegex => !self.regex_matches(value),
        }
    }

    pub fn matches(&self, labels: &LabelSet) -> bool {
        self.matches_value(labels.get(&self.name).map_or("", String::as_str))
    }
}

/// Parse one matcher in Alertmanager's syntax. The value may be double-quoted (with `\"`,
/// `\\` and `\n` escapes) or bare; surrounding braces of a one-matcher list are accepted.
pub fn parse(input: &str) -> Result<Matcher, String> {
    let text = input.trim();
    let text = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .map_or(text, str::trim);
    let name_end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    let name = &text[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "{input:?}: expected a label name ([a-zA-Z_][a-zA-Z0-9_]*) followed by =, !=, =~ or !~"
        ));
    }
    let rest = text[name_end..].trim_start();
    let (kind, rest) = if let Some(rest) = rest.strip_prefix("=~") {
        (MatchType::Regex, rest)
    } else if let Some(rest) = rest.strip_prefix("!~") {
        (MatchType::NotRegex, rest)
    } else if let Some(rest) = rest.strip_prefix("!=") {
        (MatchType::NotEqual, rest)
    } else if let Some(rest) = rest.strip_prefix('=') {
        (MatchType::Equal, rest)
    } else {
        return Err(format!(
            "{input:?}: expected one of =, !=, =~, !~ after the label name {name:?}"
        ));
    };
    let value = parse_value(rest.trim()).map_err(|message| format!("{input:?}: {message}"))?;
    Matcher::new(name, kind, &value).map_err(|message| format!("{input:?}: {message}"))
}

fn parse_value(text: &str) -> Result<String, String> {
    let Some(quoted) = text.strip_prefix('"') else {
        if text.contains(['"', ',', '{', '}', '=', '~']) {
            return Err(
                "a bare value cannot contain quotes, commas, braces, = or ~; quote it".to_owned(),
            );
        }
        return Ok(text.to_owned());
    };
    let mut value = String::new();
    let mut chars = quoted.chars();
    loop {
        match chars.next() {
            None => return Err("unterminated quoted value".to_owned()),
            Some('"') => break,
            Some('\\') => match chars.next() {
                Some('"') => value.push('"'),
                Some('\\') => value.push('\\'),
                Some('n') => value.push('\n'),
                Some(other) => {
                    // Regex escapes such as \d pass through unchanged.
                    value.push('\\');
                    value.push(other);
                }
                None => return Err("unterminated escape".to_owned()),
            },
            Some(c) => value.push(c),
        }
    }
    if !chars.as_str().trim().is_empty() {
        return Err(format!(
            "unexpected {:?} after the quoted value",
            chars.as_str().trim()
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// (matcher, labels, expected)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);

    fn check(cases: &[Case]) {
        for (text, pairs, expected) in cases {
            let matcher = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                matcher.matches(&labels(pairs)),
                *expected,
                "{text} on {pairs:?}"
            );
        }
    }

    #[test]
    fn alertmanager_semantics() {
        check(&[
            (r#"alertname="A""#, &[("alertname", "A")], true),
            (r#"alertname="A""#, &[("alertname", "AB")], false),
            (r#"alertname!="A""#, &[("alertname", "B")], true),
            (r#"alertname!="A""#, &[], true),
            // A missing label equals the empty string.
            (r#"team="""#, &[], true),
            (r#"team="""#, &[("team", "x")], false),
            (r#"team!="""#, &[], false),
            (r#"team=~".*""#, &[], true),
            (r#"team=~".+""#, &[], false),
            (r#"team!~".+""#, &[], true),
            // Regexes are anchored at both ends.
            (r#"job=~"api""#, &[("job", "api-server")], false),
            (r#"job=~"api.*""#, &[("job", "api-server")], true),
            (r#"job=~"a|b""#, &[("job", "b")], true),
            (r#"job=~"a|b""#, &[("job", "ab")], false),
            (r#"job!~"a|b""#, &[("job", "ab")], true),
            // Word alternatives are compared as a set: same semantics, no regex.
            (
                r#"severity=~"critical|page""#,
                &[("severity", "critical")],
                true,
            ),
            (
                r#"severity=~"critical|page""#,
                &[("severity", "critical2")],
                false,
            ),
            (r#"severity=~"critical|page""#, &[], false),
            (r#"ns!~"ns-0042|ns-0043""#, &[("ns", "ns-0042")], false),
            (r#"ns!~"ns-0042|ns-0043""#, &[], true),
            (r#"a=~"x||y""#, &[], true),
            (r#"code=~"5\d\d""#, &[("code", "503")], true),
            // Bare values and spacing.
            (
                "alertname = VastaiApiUnreachable",
                &[("alertname", "VastaiApiUnreachable")],
                true,
            ),
            (
                r#"{severity=~"critical|page"}"#,
                &[("severity", "page")],
                true,
            ),
            // Escapes in quoted values.
            (
                r#"summary="say \"hi\"""#,
                &[("summary", "say \"hi\"")],
                true,
            ),
        ]);
    }

    #[test]
    fn malformed_matchers_are_refused_with_a_reason() {
        for (text, message) in [
            ("", "expected a label name"),
            ("=x", "expected a label name"),
            ("9a=x", "expected a label name"),
            ("a", "expected one of"),
            ("a==x", "bare value cannot contain"),
            (r#"a="x"#, "unterminated"),
            (r#"a="x" b"#, "unexpected"),
            (r#"a=~"(""#, "invalid regular expression"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(message), "{text:?}: {error}");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in [r#"a="x""#, r#"a!="x""#, r#"a=~"x|y""#, r#"a!~"5\\d""#] {
            let matcher = parse(text).unwrap();
            assert_eq!(parse(&matcher.to_string()).unwrap(), matcher, "{text}");
        }
    }
}
