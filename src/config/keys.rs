//! config::keys: each key of the file, and the name of each environment override, checked on
//! its own against its section's schema, so that one wrong key does not hide the next; an
//! unknown section or key comes with the nearest valid one ("did you mean `listen`?").

use std::collections::BTreeMap;

use serde::Deserialize;

use super::load::{ENV_PREFIX, Origins};
use super::*;

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&byte| byte == b'\n')
        .count()
        + 1
}

/// Check each key of the file on its own against its section's schema.
pub(super) fn check_file(
    file: &str,
    text: &str,
    origins: &mut Origins,
    errors: &mut Vec<ConfigError>,
) {
    use toml::de::{DeTable, DeValue};

    let document = match DeTable::parse(text) {
        Ok(document) => document,
        Err(error) => {
            let line = error.span().map_or(1, |span| line_of(text, span.start));
            errors.push(ConfigError {
                origin: format!("{file}:{line}"),
                key: String::new(),
                message: format!("invalid TOML: {}", error.message().trim()),
            });
            return;
        }
    };
    // The parsed table is ordered by key; report in file order.
    let first_new = errors.len();
    for (section_key, section_value) in document.get_ref() {
        let section = section_key.get_ref().to_string();
        let section_line = line_of(text, section_key.span().start);
        let DeValue::Table(table) = section_value.get_ref() else {
            errors.push(ConfigError {
                origin: format!("{file}:{section_line}"),
                key: section.clone(),
                message: "expected a table such as [server]".to_owned(),
            });
            continue;
        };
        let Some(check) = section_schema(&section) else {
            errors.push(ConfigError {
                origin: format!("{file}:{section_line}"),
                key: section.clone(),
                message: unknown_section_message(&section),
            });
            continue;
        };
        origins.lines.insert(section.clone(), section_line);
        for (key, value) in table {
            let path = format!("{section}.{}", key.get_ref());
            let line = line_of(text, key.span().start);
            origins.lines.insert(path.clone(), line);
            let mut single = DeTable::new();
            single.insert(key.clone(), value.clone());
            let span = key.span().start..value.span().end;
            let single = serde_spanned::Spanned::new(span, DeValue::Table(single));
            if let Err(error) = check(toml::de::ValueDeserializer::from(single)) {
                errors.push(ConfigError {
                    origin: format!("{file}:{line}"),
                    key: path,
                    message: suggest_key(error.message().trim()),
                });
            }
        }
    }
    errors[first_new..].sort_by_key(|error| origin_line(&error.origin));
}

fn origin_line(origin: &str) -> usize {
    origin
        .rsplit_once(':')
        .and_then(|(_, line)| line.parse().ok())
        .unwrap_or(0)
}

/// The top-level sections of the file, in the order of [`Config`]'s fields (a test holds
/// the two equal).
const SECTIONS: &[&str] = &[
    "server",
    "auth",
    "store",
    "reconcile",
    "alertmanager",
    "log",
    "rules",
    "severities",
    "default_rule",
    "prometheus",
    "kubernetes",
    "actions",
    "paging",
    "pagerduty",
    "notifiers",
    "watchdog",
    "bundles",
    "http",
];

/// Deserializes one section's table only to find what is wrong with it.
type SectionCheck = fn(toml::de::ValueDeserializer<'_>) -> Result<(), toml::de::Error>;

/// The schema of the section named `section`; `None` when there is no such section.
fn section_schema(section: &str) -> Option<SectionCheck> {
    let check: SectionCheck = match section {
        "server" => |d| ServerConfig::deserialize(d).map(drop),
        "auth" => |d| AuthConfig::deserialize(d).map(drop),
        "store" => |d| StoreConfig::deserialize(d).map(drop),
        "reconcile" => |d| ReconcileConfig::deserialize(d).map(drop),
        "alertmanager" => |d| AlertmanagerConfig::deserialize(d).map(drop),
        "log" => |d| LogConfig::deserialize(d).map(drop),
        "rules" => |d| RulesConfig::deserialize(d).map(drop),
        "severities" => |d| SeveritiesConfig::deserialize(d).map(drop),
        "default_rule" => |d| DefaultRuleConfig::deserialize(d).map(drop),
        "prometheus" => |d| PrometheusConfig::deserialize(d).map(drop),
        "kubernetes" => |d| KubernetesConfig::deserialize(d).map(drop),
        "actions" => |d| ActionsConfig::deserialize(d).map(drop),
        "paging" => |d| PagingConfig::deserialize(d).map(drop),
        "pagerduty" => |d| PagerDutyConfig::deserialize(d).map(drop),
        "notifiers" => |d| BTreeMap::<String, NotifierConfig>::deserialize(d).map(drop),
        "watchdog" => |d| WatchdogConfig::deserialize(d).map(drop),
        "bundles" => |d| BundlesConfig::deserialize(d).map(drop),
        "http" => |d| HttpConfig::deserialize(d).map(drop),
        _ => return None,
    };
    Some(check)
}

/// Check the name of each environment override against the schema, so that an error names
/// the variable and a misspelt section or key comes with the nearest valid one.
pub(super) fn check_environment(env: &[(String, String)], errors: &mut Vec<ConfigError>) {
    // In name order, whatever order the process environment happens to hold them in.
    let mut names: Vec<&String> = env.iter().map(|(name, _)| name).collect();
    names.sort();
    for name in names {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let lowered = rest.to_lowercase();
        let mut parts = lowered.split("__");
        let section = parts.next().unwrap_or_default();
        let key = parts.next().unwrap_or_default();
        let origin = format!("environment {name}");
        let Some(check) = section_schema(section) else {
            errors.push(ConfigError {
                origin,
                key: section.to_owned(),
                message: unknown_section_message(section),
            });
            continue;
        };
        if let Some(message) = unknown_key_in(check, key) {
            errors.push(ConfigError {
                origin,
                key: format!("{section}.{key}"),
                message: suggest_key(&message),
            });
        }
    }
}

/// Serde's message when the section `check` reads rejects `key` as unknown; `None` when it
/// takes it. Only the name is looked at: serde rejects an unknown key before reading its
/// value, so a placeholder value stands in for the real one (whose type the layering checks).
fn unknown_key_in(check: SectionCheck, key: &str) -> Option<String> {
    if key.is_empty() {
        return None;
    }
    let quoted = key.replace('\\', "\\\\").replace('"', "\\\"");
    let text = format!("\"{quoted}\" = 0");
    let table = toml::de::DeTable::parse(&text).ok()?.into_inner();
    let spanned = serde_spanned::Spanned::new(0..text.len(), toml::de::DeValue::Table(table));
    let error = check(toml::de::ValueDeserializer::from(spanned)).err()?;
    let message = error.message().trim();
    parse_unknown_field(message).map(|_| message.to_owned())
}

/// Serde's "unknown field `x`, expected one of `a`, `b`" (or "expected `a`", "`a` or `b`",
/// "there are no fields") taken apart into the field and the fields expected.
fn parse_unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.trim().strip_prefix("unknown field `")?;
    let (field, expected) = rest.split_once("`, expected ")?;
    let expected = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Some((field.to_owned(), expected))
}

/// Serde's "unknown field `listn`, expected one of `listen`, ..." as "unknown field `listn`;
/// did you mean `listen`?" when one expected key is close enough; any other message, or one
/// with nothing close, as it is (the list of keys then helps more than a guess).
fn suggest_key(message: &str) -> String {
    let suggestion = parse_unknown_field(message).and_then(|(field, expected)| {
        nearest(&field, expected.iter().map(String::as_str))
            .map(|nearest| format!("unknown field `{field}`; did you mean `{nearest}`?"))
    });
    suggestion.unwrap_or_else(|| message.to_owned())
}

/// "unknown section; did you mean [server]?", or the list of sections when none is close.
fn unknown_section_message(section: &str) -> String {
    match nearest(section, SECTIONS.iter().copied()) {
        Some(nearest) => format!("unknown section; did you mean [{nearest}]?"),
        None => format!("unknown section; expected one of {}", SECTIONS.join(", ")),
    }
}

/// The candidate closest to `typed`, if it is close enough to be what was meant: at most a
/// third of the typed length away, and at least one edit is always allowed. The first of
/// equally close candidates wins.
fn nearest<'a>(typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let allowed = (typed.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(typed, candidate), candidate))
        .filter(|(distance, _)| *distance <= allowed)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Edits (insert, delete, substitute, or swap two neighbours) from `a` to `b`: the optimal
/// string alignment distance, so that `listne` is one edit from `listen`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j]: edits from a[..i] to b[..j].
    let mut rows = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let substitution = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + substitution);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_text;

    #[test]
    fn every_error_is_reported_with_its_line_and_key() {
        let errors = load_text(
            "[server]\nlisten = \"127.0.0.1:1\"\nmax_body_bytes = \"big\"\nlistne = 1\n\n[stor]\nx = 1\n[log]\nformat = \"xml\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert!(
            errors[0].starts_with("F:3: server.max_body_bytes: invalid type"),
            "{errors:#?}"
        );
        assert_eq!(
            errors[1],
            "F:4: server.listne: unknown field `listne`; did you mean `listen`?"
        );
        assert_eq!(
            errors[2],
            "F:6: stor: unknown section; did you mean [store]?"
        );
        assert!(
            errors[3].starts_with("F:9: log.format: unknown variant `xml`"),
            "{errors:#?}"
        );
    }

    #[test]
    fn an_unknown_key_in_the_file_keeps_its_line_and_suggests_the_nearest() {
        let errors = load_text(
            "[server]\nlisten = \"127.0.0.1:1\"\nlistn = \"127.0.0.1:2\"\n\
             [log]\nbanana = 1\n\
             [notifiers.ops]\nkind = \"slack\"\nurl_fle = \"/dev/null\"\n\
             [servr]\nlisten = 1\n[zzzzzz]\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "F:3: server.listn: unknown field `listn`; did you mean `listen`?",
                // Nothing close: the keys the section takes are listed instead.
                "F:5: log.banana: unknown field `banana`, expected `format` or `level`",
                // A key inside a named table: the path names the table.
                "F:6: notifiers.ops: unknown field `url_fle`; did you mean `url_file`?",
                "F:9: servr: unknown section; did you mean [server]?",
                "F:11: zzzzzz: unknown section; expected one of server, auth, store, \
                 reconcile, alertmanager, log, rules, severities, default_rule, prometheus, \
                 kubernetes, actions, paging, pagerduty, notifiers, watchdog, bundles, http",
            ],
        );
    }

    #[test]
    fn an_unknown_environment_override_names_the_variable_and_suggests_the_nearest() {
        let errors = load_text(
            "[server]\nlistne = \"127.0.0.1:1\"\n",
            &[
                ("NIGHTSHIFT_SERVER__LISTN", "127.0.0.1:9"),
                ("NIGHTSHIFT_SERVR__LISTEN", "127.0.0.1:9"),
                ("NIGHTSHIFT_STORE__MAX_UNRECONCILED", "7"),
                ("NIGHTSHIFT_SEVERITIES__P1__PAGING", "never"),
                ("NIGHTSHIFT_NOTIFIERS__OPS__KIND", "slack"),
                ("NIGHTSHIFT_LOG__COLOUR", "yes"),
            ],
        )
        .unwrap_err();
        // The file's mistakes and the environment's are reported together, the variables in
        // name order.
        assert_eq!(
            errors,
            [
                "F:2: server.listne: unknown field `listne`; did you mean `listen`?",
                "environment NIGHTSHIFT_LOG__COLOUR: log.colour: unknown field `colour`, \
                 expected `format` or `level`",
                "environment NIGHTSHIFT_SERVER__LISTN: server.listn: unknown field `listn`; \
                 did you mean `listen`?",
                "environment NIGHTSHIFT_SERVR__LISTEN: servr: unknown section; did you mean \
                 [server]?",
                // Environment names are lowercased; the severities are written P1..P4.
                "environment NIGHTSHIFT_SEVERITIES__P1__PAGING: severities.p1: unknown field \
                 `p1`; did you mean `P1`?",
            ],
        );
    }

    #[test]
    fn the_section_list_is_the_schema() {
        let message =
            unknown_key_in(|d| Config::deserialize(d).map(drop), "no such section").unwrap();
        let (field, expected) = parse_unknown_field(&message).unwrap();
        assert_eq!(field, "no such section");
        assert_eq!(expected, SECTIONS);
        assert!(
            SECTIONS
                .iter()
                .all(|section| section_schema(section).is_some())
        );
        // An open table (notifiers by name) has no unknown key.
        assert_eq!(
            unknown_key_in(section_schema("notifiers").unwrap(), "x"),
            None
        );
    }

    #[test]
    fn the_nearest_key_is_a_few_edits_away_at_most() {
        let keys = [
            "listen",
            "allow_plaintext",
            "max_body_bytes",
            "format",
            "dir",
        ];
        for (typed, want) in [
            ("listen", Some("listen")),
            ("listn", Some("listen")),
            // A swap of neighbours is one edit.
            ("listne", Some("listen")),
            ("lsitne", Some("listen")),
            ("max_bdy_byte", Some("max_body_bytes")),
            ("allow_plain_text", Some("allow_plaintext")),
            ("dri", Some("dir")),
            ("fmt", None),
            ("ls", None),
            ("xyz", None),
            ("", None),
        ] {
            assert_eq!(nearest(typed, keys), want, "{typed}");
        }
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("ab", "ba"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn broken_toml_names_the_line() {
        let errors = load_text("[server]\nlisten = \n", &[]).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("F:2: invalid TOML"), "{errors:?}");
    }
}
