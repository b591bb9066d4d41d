//! Hostile input, as properties: the four parsers that read what others write (the webhook
//! body, label matchers, rule files, templates) never panic, refuse what is wrong with an error
//! that says where, and accept what is right. `fuzz/` drives the same entry points with
//! libFuzzer; every crash either found is kept below as a plain regression test.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use nightshift::ingest::webhook::{self, LabelSet, Status};
use nightshift::rules::load::{self, LoadOptions};
use nightshift::rules::matcher::{self, MatchType};
use nightshift::rules::template::Template;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use regex::Regex;
use serde_json::{Value as Json, json};

fn config() -> ProptestConfig {
    cases(256)
}

/// For the properties whose every case is slow (a whole rule file loaded, a render run to the
/// end of its fuel): fewer cases, so that the file still runs in seconds. `PROPTEST_CASES`
/// overrides every count, for a longer hunt.
fn cases(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        // A failure is reported with its shrunk input; nothing is written next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn repository(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

// ---------------------------------------------------------------------------------------------
// The webhook body

/// Any JSON value, a few levels deep, with keys that are often the webhook's own so that the
/// parser gets past the first field now and then.
fn json_value() -> impl Strategy<Value = Json> {
    let key = prop_oneof![
        3 => prop::sample::select(vec![
            "version", "status", "alerts", "labels", "annotations", "startsAt", "endsAt",
            "fingerprint", "groupKey", "groupLabels", "receiver", "truncatedAlerts",
            "externalURL", "generatorURL",
        ])
        .prop_map(str::to_owned),
        1 => "(?s).{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        any::<f64>().prop_map(Json::from),
        prop::sample::select(vec!["4", "firing", "resolved", "2026-11-28T03:00:00Z", ""])
            .prop_map(Json::from),
        "(?s).{0,16}".prop_map(Json::String),
    ];
    leaf.prop_recursive(5, 96, 8, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Json::Array),
            btree_map(key.clone(), inner, 0..6)
                .prop_map(|map| Json::Object(map.into_iter().collect())),
        ]
    })
}

fn label_name() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_]{0,10}"
}

fn label_set() -> impl Strategy<Value = LabelSet> {
    btree_map(label_name(), "(?s).{0,24}", 0..6)
}

/// A time Alertmanager could send: anywhere from 1970 to 9999, any precision, any offset.
fn time() -> impl Strategy<Value = (DateTime<Utc>, String)> {
    (
        1i64..253_402_214_400,
        0u32..1_000_000_000,
        prop::sample::select(vec![
            SecondsFormat::Secs,
            SecondsFormat::Millis,
            SecondsFormat::Nanos,
            SecondsFormat::AutoSi,
        ]),
        prop::sample::select(vec![0i32, 3600, -5 * 3600 - 1800, 14 * 3600]),
    )
        .prop_map(|(seconds, nanos, format, offset)| {
            let time = DateTime::from_timestamp(seconds, nanos).expect("in range");
            let zone = chrono::FixedOffset::east_opt(offset).expect("valid offset");
            let text = time.with_timezone(&zone).to_rfc3339_opts(format, true);
            // The text is what goes over the wire; compare against what it says.
            let parsed = DateTime::parse_from_rfc3339(&text).expect("chrono reads its own");
            (parsed.with_timezone(&Utc), text)
        })
}

#[derive(Debug, Clone)]
struct GeneratedAlert {
    status: Status,
    labels: LabelSet,
    annotations: LabelSet,
    starts_at: (DateTime<Utc>, String),
    ends_at: (DateTime<Utc>, String),
    fingerprint: Option<String>,
}

fn alert() -> impl Strategy<Value = GeneratedAlert> {
    (
        any::<bool>(),
        label_set(),
        label_set(),
        time(),
        time(),
        prop::option::of("[0-9a-fA-F]{1,64}"),
    )
        .prop_map(
            |(firing, labels, annotations, starts_at, ends_at, fingerprint)| GeneratedAlert {
                status: if firing {
                    Status::Firing
                } else {
                    Status::Resolved
                },
                labels,
                annotations,
                starts_at,
                ends_at,
                fingerprint,
            },
        )
}

/// A webhook body as Alertmanager 0.2x writes it, with the fields it may leave out left out now
/// and then.
fn valid_payload() -> impl Strategy<Value = (Json, Vec<GeneratedAlert>)> {
    (
        vec(alert(), 0..5),
        label_set(),
        any::<bool>(),
        "(?s).{0,12}",
        any::<bool>(),
    )
        .prop_map(|(alerts, group_labels, firing, receiver, complete)| {
            let alert_json: Vec<Json> = alerts
                .iter()
                .map(|alert| {
                    let ends_at = match alert.status {
                        Status::Firing => "0001-01-01T00:00:00Z".to_owned(),
                        Status::Resolved => alert.ends_at.1.clone(),
                    };
                    let mut value = json!({
                        "status": alert.status.as_str(),
                        "labels": alert.labels,
                        "annotations": alert.annotations,
                        "startsAt": alert.starts_at.1,
                        "endsAt": ends_at,
                        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
                    });
                    if let Some(fingerprint) = &alert.fingerprint {
                        value["fingerprint"] = json!(fingerprint);
                    }
                    value
                })
                .collect();
            let mut body = json!({
                "version": "4",
                "status": if firing { "firing" } else { "resolved" },
                "receiver": receiver,
                "alerts": alert_json,
                "groupLabels": group_labels,
            });
            if complete {
                body["groupKey"] = json!("{}:{alertname=\"A\"}");
                body["truncatedAlerts"] = json!(0);
                body["externalURL"] = json!("http://alertmanager:9093");
                body["commonLabels"] = json!({});
            }
            (body, alerts)
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn webhook_arbitrary_bytes_never_panic(body in vec(any::<u8>(), 0..512)) {
        let _ = webhook::parse(&body);
    }

    #[test]
    fn webhook_arbitrary_json_never_panics(value in json_value()) {
        let body = serde_json::to_vec(&value).unwrap();
        if let Err(error) = webhook::parse(&body) {
            // Well-formed JSON is never called a syntax error.
            prop_assert_ne!(error.reason, "invalid_json", "{}", error);
        }
    }

    /// A valid body with one field anywhere replaced by any JSON value: parsed or refused with
    /// the path of a field, never a panic.
    #[test]
    fn webhook_valid_body_with_one_field_replaced_never_panics(
        (body, _) in valid_payload(),
        pick in any::<prop::sample::Index>(),
        replacement in json_value(),
    ) {
        let mut body = body;
        let mut slots = Vec::new();
        collect_pointers(&body, String::new(), &mut slots);
        let pointer = pick.get(&slots).clone();
        if let Some(slot) = body.pointer_mut(&pointer) {
            *slot = replacement;
        }
        let _ = webhook::parse(&serde_json::to_vec(&body).unwrap());
    }

    #[test]
    fn webhook_valid_payloads_parse_and_keep_their_alerts((body, alerts) in valid_payload()) {
        let bytes = serde_json::to_vec(&body).unwrap();
        let notification = webhook::parse(&bytes)
            .map_err(|error| TestCaseError::fail(format!("{error}: {body}")))?;
        prop_assert_eq!(notification.alerts.len(), alerts.len());
        for (parsed, generated) in notification.alerts.iter().zip(&alerts) {
            prop_assert_eq!(&parsed.labels, &generated.labels);
            prop_assert_eq!(&parsed.annotations, &generated.annotations);
            prop_assert_eq!(parsed.status, generated.status);
            prop_assert_eq!(parsed.starts_at, generated.starts_at.0);
            match generated.status {
                Status::Firing => prop_assert_eq!(parsed.ends_at, None),
                Status::Resolved => prop_assert_eq!(parsed.ends_at, Some(generated.ends_at.0)),
            }
            let fingerprint = generated.fingerprint.as_ref().map_or_else(
                || webhook::fingerprint(&generated.labels),
                |given| given.to_ascii_lowercase(),
            );
            prop_assert_eq!(&parsed.fingerprint, &fingerprint);
        }
    }

    /// Invalid UTF-8 inside a label value: refused as JSON, not a panic and not accepted.
    #[test]
    fn webhook_invalid_utf8_is_refused(
        (body, alerts) in valid_payload(),
        bad in prop::sample::select(vec![
            vec![0xffu8],
            vec![0xc3, 0x28],
            vec![0xe2, 0x82],
            vec![0xed, 0xa0, 0x80],
            vec![0xf4, 0x90, 0x80, 0x80],
            vec![0xc0, 0xaf],
        ]),
    ) {
        prop_assume!(alerts.iter().any(|alert| !alert.labels.is_empty()));
        let mut body = body;
        let marker = "\u{1}MARK\u{1}";
        for alert in body["alerts"].as_array_mut().unwrap() {
            if let Some(labels) = alert["labels"].as_object_mut()
                && let Some((_, value)) = labels.iter_mut().next()
            {
                *value = json!(marker);
                break;
            }
        }
        let text = serde_json::to_string(&body).unwrap();
        let escaped_marker = serde_json::to_string(marker).unwrap();
        let escaped_marker = &escaped_marker[1..escaped_marker.len() - 1];
        let at = text.find(escaped_marker).unwrap();
        let mut bytes = text.as_bytes()[..at].to_vec();
        bytes.extend_from_slice(&bad);
        bytes.extend_from_slice(&text.as_bytes()[at + escaped_marker.len()..]);
        let error = webhook::parse(&bytes).unwrap_err();
        prop_assert_eq!(error.reason, "invalid_json", "{}", error);
    }
}

/// JSON pointers to every value in a document, the root included.
fn collect_pointers(value: &Json, at: String, pointers: &mut Vec<String>) {
    match value {
        Json::Object(map) => {
            for (key, child) in map {
                let escaped = key.replace('~', "~0").replace('/', "~1");
                collect_pointers(child, format!("{at}/{escaped}"), pointers);
            }
        }
        Json::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                collect_pointers(child, format!("{at}/{index}"), pointers);
            }
        }
        _ => {}
    }
    pointers.push(at);
}

/// Deep nesting never reaches a recursive descent: nightshift's wire types have no recursive
/// field, so a nested array where a string or a list of alerts belongs is refused at its first
/// level, and serde_json skips an unknown field without recursing (its limit of 128 levels
/// applies only to recursive types, and to nothing here). Run on a 256 KiB stack, where a
/// recursive walk of 100,000 levels would overflow.
#[test]
fn webhook_deep_nesting_is_refused_or_skipped_on_a_small_stack() {
    let depth = 100_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
    let unclosed = "[".repeat(depth);
    let alert = r#"{"status":"firing","labels":{},"startsAt":"2026-11-28T03:00:00Z""#;
    let envelope = r#""version":"4","status":"firing""#;
    let cases: Vec<(String, Result<(), &str>)> = vec![
        (arrays.clone(), Err("[0]")),
        (objects.clone(), Err(".")),
        (unclosed.clone(), Err("[0]")),
        (
            format!("{{{envelope},\"alerts\":{arrays}}}"),
            Err("alerts[0][0]"),
        ),
        (
            format!("{{{envelope},\"alerts\":[{alert},\"annotations\":{arrays}}}]}}"),
            Err("alerts[0].annotations"),
        ),
        (
            format!("{{{envelope},\"alerts\":[],\"extra\":{unclosed}"),
            Err("extra"),
        ),
        // Skipped fields: read to their end, iteratively, and ignored.
        (
            format!("{{{envelope},\"alerts\":[],\"extra\":{arrays}}}"),
            Ok(()),
        ),
        (
            format!("{{{envelope},\"alerts\":[{alert},\"x\":{objects}}}]}}"),
            Ok(()),
        ),
    ];
    let outcomes = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            cases
                .into_iter()
                .map(|(body, expected)| {
                    let outcome = webhook::parse(body.as_bytes())
                        .map(|_| ())
                        .map_err(|e| e.path);
                    (body[..40].to_owned(), outcome, expected)
                })
                .collect::<Vec<_>>()
        })
        .unwrap()
        .join()
        .unwrap();
    for (start, outcome, expected) in outcomes {
        assert_eq!(
            outcome.as_ref().map(|_| ()).map_err(String::as_str),
            expected,
            "{start}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Matchers

/// Text that looks like a matcher more often than random text does.
fn matcher_like() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            prop::sample::select(vec![
                "a", "job", "_x9", "9", "=", "!=", "=~", "!~", "\"", "\\", "\\\"", "\\\\", "\\n",
                "{", "}", ",", " ", "(", ")", "|", ".*", "[", "]", "+", "?", "^", "$", "~", "!",
                "é", "\u{301}", "\t", "\n", "\u{0}",
            ])
            .prop_map(str::to_owned),
            "(?s).{0,3}",
        ],
        0..16,
    )
    .prop_map(|parts| parts.concat())
}

/// A regex from a small grammar: always valid on its own. Words alone (`ab|c-d`) take the
/// matcher's string-set fast path; the rest compile.
fn regex_source() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        "[a-c]{1,3}",
        Just(".".to_owned()),
        Just("[ab]".to_owned()),
        Just("\\d".to_owned()),
        Just("-".to_owned()),
        Just(" ".to_owned()),
        Just("é".to_owned()),
        Just("\\.".to_owned()),
    ];
    atom.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 1..4).prop_map(|parts| parts.concat()),
            vec(inner.clone(), 2..4).prop_map(|parts| parts.join("|")),
            inner.clone().prop_map(|part| format!("(?:{part})*")),
            inner.clone().prop_map(|part| format!("({part})?")),
            inner.prop_map(|part| format!("(?:{part})+")),
        ]
    })
}

fn match_type() -> impl Strategy<Value = MatchType> {
    prop::sample::select(vec![
        MatchType::Equal,
        MatchType::NotEqual,
        MatchType::Regex,
        MatchType::NotRegex,
    ])
}

fn operator(kind: MatchType) -> &'static str {
    match kind {
        MatchType::Equal => "=",
        MatchType::NotEqual => "!=",
        MatchType::Regex => "=~",
        MatchType::NotRegex => "!~",
    }
}

/// A value quoted the way Alertmanager writes one: only `\`, `"` and a newline are escaped.
fn quote(value: &str) -> String {
    let mut quoted = String::from("\"");
    for c in value.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '"' => quoted.push_str("\\\""),
            '\n' => quoted.push_str("\\n"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// What a matcher should say, from its definition: a missing label is the empty string, and a
/// regex must match the whole value.
fn reference_matches(kind: MatchType, name: &str, value: &str, labels: &LabelSet) -> bool {
    let actual = labels.get(name).map_or("", String::as_str);
    let full_match = || {
        Regex::new(&format!(r"\A(?:{value})\z"))
            .expect("the value is a valid regex on its own")
            .is_match(actual)
    };
    match kind {
        MatchType::Equal => actual == value,
        MatchType::NotEqual => actual != value,
        MatchType::Regex => full_match(),
        MatchType::NotRegex => !full_match(),
    }
}

/// A matcher with its value and a label set that hits the matched label now and then.
fn matcher_case() -> impl Strategy<Value = (String, MatchType, String, Vec<LabelSet>)> {
    (label_name(), match_type()).prop_flat_map(|(name, kind)| {
        let value = match kind {
            MatchType::Equal | MatchType::NotEqual => {
                prop_oneof!["(?s).{0,12}", regex_source()].boxed()
            }
            MatchType::Regex | MatchType::NotRegex => regex_source().boxed(),
        };
        (Just(name), Just(kind), value).prop_flat_map(|(name, kind, value)| {
            let label_value = prop_oneof![
                Just(value.clone()),
                "[a-c]{0,4}",
                "[abc\\-é .0-9]{0,6}",
                "(?s).{0,6}",
            ];
            let label_names = prop_oneof![Just(name.clone()), label_name()];
            let labels = vec(btree_map(label_names, label_value, 0..3), 8);
            (Just(name), Just(kind), Just(value), labels)
        })
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn matcher_arbitrary_text_never_panics(text in "(?s).{0,48}") {
        let _ = matcher::parse(&text);
    }

    #[test]
    fn matcher_like_text_never_panics(text in matcher_like()) {
        if let Ok(parsed) = matcher::parse(&text) {
            // Whatever parses prints as something that parses back to it.
            let printed = parsed.to_string();
            prop_assert_eq!(matcher::parse(&printed), Ok(parsed), "{:?} printed as {:?}", text, printed);
        }
    }

    /// A regex matcher is accepted exactly when its value is a regex on its own: the anchors
    /// the matcher adds must not turn an invalid value into a valid one (`a)|(b`), which would
    /// also leave one side of the `|` unanchored.
    #[test]
    fn matcher_regex_accepted_exactly_when_valid_alone(
        value in vec(prop::sample::select(vec!["a", "(", ")", "|", "*", "?:", "\\", "]", "["]), 0..8),
        negated in any::<bool>(),
    ) {
        let value = value.concat();
        let text = format!("x{}{}", if negated { "!~" } else { "=~" }, quote(&value));
        let parsed = matcher::parse(&text);
        let alone = Regex::new(&value);
        prop_assert_eq!(parsed.is_ok(), alone.is_ok(), "{:?}: {:?}", text, parsed);
    }

    #[test]
    fn matcher_round_trips_and_agrees_with_the_reference(
        (name, kind, value, label_sets) in matcher_case(),
        spaced in any::<bool>(),
        braced in any::<bool>(),
    ) {
        let space = if spaced { " " } else { "" };
        let mut text = format!("{name}{space}{}{space}{}", operator(kind), quote(&value));
        if braced {
            text = format!("{{{text}}}");
        }
        let parsed = matcher::parse(&text).map_err(TestCaseError::fail)?;
        prop_assert_eq!(&parsed.name, &name);
        prop_assert_eq!(parsed.kind, kind);
        prop_assert_eq!(&parsed.value, &value);
        let printed = parsed.to_string();
        let reparsed = matcher::parse(&printed);
        prop_assert_eq!(reparsed.as_ref(), Ok(&parsed), "printed as {:?}", printed);
        for labels in &label_sets {
            prop_assert_eq!(
                parsed.matches(labels),
                reference_matches(kind, &name, &value, labels),
                "{} on {:?}", text, labels
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rule files

/// A scratch rules directory with the payloads the repository's rule files refer to, so that
/// a file written into it loads as it would from `rules/`.
struct RulesDir {
    dir: tempfile::TempDir,
}

impl RulesDir {
    fn new() -> RulesDir {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(repository("rules/payloads"), dir.path().join("payloads"))
            .unwrap();
        RulesDir { dir }
    }

    /// Load `text` as the only rule file; every error must name the file and a line.
    fn load(&self, text: &str) -> Result<(), String> {
        let path = self.dir.path().join("fuzz.toml");
        std::fs::write(&path, text).unwrap();
        match load::load_files(std::slice::from_ref(&path), &LoadOptions::default()) {
            Ok(_) => Ok(()),
            Err(errors) => {
                if errors.is_empty() {
                    return Err("refused with no error".to_owned());
                }
                for error in &errors {
                    let line = error.line.ok_or_else(|| format!("no line: {error}"))?;
                    if error.file != path {
                        return Err(format!("wrong file: {error}"));
                    }
                    let lines = text.split('\n').count();
                    if line == 0 || line > lines {
                        return Err(format!("line {line} outside 1..={lines}: {error}"));
                    }
                    let prefix = format!("{}:{line}: ", path.display());
                    if !error.to_string().starts_with(&prefix) {
                        return Err(format!("does not start with {prefix:?}: {error}"));
                    }
                }
                Ok(())
            }
        }
    }
}

/// Lines a rule file is made of, valid and not, for assembling TOML-ish text.
fn rule_file_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        prop::sample::select(vec![
            "[[rule]]",
            "[[rule.branch]]",
            "[rule.on_probe_failure]",
            "[runbook]",
            "[probe.status]",
            "[probe.key]",
            "[action.restart]",
            "[collector.logs]",
            "[[test]]",
            "[test.expect]",
            "[rule]",
            "[[probe]]",
            "name = \"r\"",
            "name = \"\"",
            "severity = \"P1\"",
            "severity = \"P9\"",
            "matchers = ['alertname=\"A\"', 'job=~\"a|b\"']",
            "matchers = ['alertname=~\"(\"']",
            "matchers = [1]",
            "when = 'probe.status.indicator == \"major\"'",
            "when = 'labels.x &&'",
            "otherwise = true",
            "actions = [\"restart\"]",
            "probes = [\"status\"]",
            "collect = [\"logs\"]",
            "summary = \"{{ labels.alertname }}\"",
            "note = \"{% for %}\"",
            "kind = \"statuspage\"",
            "kind = \"kubernetes\"",
            "kind = \"kubernetes.rollout_restart\"",
            "kind = \"kubernetes_logs\"",
            "kind = \"nope\"",
            "url = \"https://status.example/api/v2/status.json\"",
            "url = \"not a url\"",
            "namespace = \"vastai\"",
            "workload = \"deployment/api\"",
            "timeout = \"5s\"",
            "timeout = \"0s\"",
            "timeout = 5",
            "cache = \"forever\"",
            "payload = \"payloads/vastai-api-unreachable.json\"",
            "payload = \"payloads/missing.json\"",
            "labels = { alertname = \"A\" }",
            "expect = { rule = \"r\", severity = \"P1\" }",
            "probes = { status = { indicator = \"major\" } }",
            "reevaluate_every = \"1m\"",
            "x = 1",
            "x = 2",
            "\"quoted key\" = true",
            "a.b.c = 1",
            "= 1",
            "[",
            "]]",
            "'''",
            "\"\"\"",
            "key = \"unterminated",
            "# a comment",
            "",
        ])
        .prop_map(str::to_owned),
        "(?s).{0,12}",
    ];
    vec(line, 0..24).prop_map(|lines| lines.join("\n"))
}

/// Ways to break a working rule file.
#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(prop::sample::Index),
    DuplicateLine(prop::sample::Index),
    SwapLines(prop::sample::Index, prop::sample::Index),
    /// Replace the value of a `key = value` line with a value of another type.
    RetypeValue(prop::sample::Index, &'static str),
    TruncateLine(prop::sample::Index, prop::sample::Index),
    InsertText(prop::sample::Index, prop::sample::Index, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let index = any::<prop::sample::Index>;
    prop_oneof![
        index().prop_map(Mutation::DeleteLine),
        index().prop_map(Mutation::DuplicateLine),
        (index(), index()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (
            index(),
            prop::sample::select(vec![
                "1",
                "-1",
                "true",
                "\"\"",
                "\"x\"",
                "[]",
                "[1, \"a\"]",
                "{}",
                "{ a = 1 }",
                "1979-05-27T07:32:00Z",
                "1e400",
                "\"{{ labels.x }\"",
                "\"P0\"",
            ])
        )
            .prop_map(|(at, value)| Mutation::RetypeValue(at, value)),
        (index(), index()).prop_map(|(a, b)| Mutation::TruncateLine(a, b)),
        (index(), index(), "(?s).{0,8}")
            .prop_map(|(at, position, text)| Mutation::InsertText(at, position, text)),
    ]
}

fn apply(mutation: &Mutation, lines: &mut Vec<String>) {
    match mutation {
        Mutation::DeleteLine(at) => {
            lines.remove(at.index(lines.len()));
        }
        Mutation::DuplicateLine(at) => {
            let at = at.index(lines.len());
            lines.insert(at, lines[at].clone());
        }
        Mutation::SwapLines(a, b) => {
            let (a, b) = (a.index(lines.len()), b.index(lines.len()));
            lines.swap(a, b);
        }
        Mutation::RetypeValue(at, value) => {
            let assignments: Vec<usize> = (0..lines.len())
                .filter(|&i| !lines[i].trim_start().starts_with('#') && lines[i].contains(" = "))
                .collect();
            if !assignments.is_empty() {
                let line = &mut lines[assignments[at.index(assignments.len())]];
                let key = line.split(" = ").next().unwrap_or_default().to_owned();
                *line = format!("{key} = {value}");
            }
        }
        Mutation::TruncateLine(at, cut) => {
            let at = at.index(lines.len());
            let line = &mut lines[at];
            let boundaries: Vec<usize> = line.char_indices().map(|(i, _)| i).collect();
            if !boundaries.is_empty() {
                line.truncate(boundaries[cut.index(boundaries.len())]);
            }
        }
        Mutation::InsertText(at, position, text) => {
            let at = at.index(lines.len());
            let line = &mut lines[at];
            let boundaries: Vec<usize> = line
                .char_indices()
                .map(|(i, _)| i)
                .chain([line.len()])
                .collect();
            line.insert_str(boundaries[position.index(boundaries.len())], text);
        }
    }
}

#[test]
fn the_repositorys_rule_files_load_from_the_scratch_directory() {
    let dir = RulesDir::new();
    for name in ["rules/vastai.toml", "rules/kubernetes.toml"] {
        let text = std::fs::read_to_string(repository(name)).unwrap();
        let path = dir.dir.path().join("fuzz.toml");
        std::fs::write(&path, &text).unwrap();
        if let Err(errors) = load::load_files(&[path], &LoadOptions::default()) {
            panic!("{name}: {errors:?}");
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn rule_file_arbitrary_text_never_panics(text in "(?s).{0,200}") {
        RulesDir::new().load(&text).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn rule_file_toml_like_text_never_panics_and_errors_name_a_line(text in rule_file_text()) {
        RulesDir::new().load(&text).map_err(TestCaseError::fail)?;
    }

}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn rule_file_mutations_load_or_name_a_line(
        mutations in vec(mutation(), 1..4),
        which in prop::sample::select(vec!["rules/vastai.toml", "rules/kubernetes.toml"]),
    ) {
        let text = std::fs::read_to_string(repository(which)).unwrap();
        let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
        for mutation in &mutations {
            apply(mutation, &mut lines);
        }
        let text = lines.join("\n");
        RulesDir::new().load(&text).map_err(TestCaseError::fail)?;
    }
}

/// Pieces of CEL, in any order: conditions that parse, that fail to, and that nest or chain.
fn condition_source() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        prop::sample::select(vec![
            "labels.alertname",
            "labels[\"team\"]",
            "annotations.summary",
            "alert.age_seconds",
            "probe.status.indicator",
            "probe.status.ok",
            "probe.status.items",
            "has(labels.x)",
            " == ",
            " != ",
            " < ",
            " >= ",
            " && ",
            " || ",
            " + ",
            " - ",
            " * ",
            " / ",
            " % ",
            " in ",
            "!",
            "-",
            "(",
            ")",
            "[",
            "]",
            "{",
            "}",
            ":",
            ",",
            ".",
            "?",
            "\"major\"",
            "'x'",
            "1",
            "0",
            "1.5",
            "true",
            "null",
            "b\"x\"",
            "size(",
            "int(",
            "string(",
            ".exists(i, ",
            ".all(i, ",
            ".map(i, ",
            ".filter(i, ",
            "i",
            ".startsWith(",
            ".contains(",
            ".matches(",
            "\"[a-\"",
            "9223372036854775807",
            "1u",
            "duration(\"1h\")",
            "timestamp(\"2026-01-01T00:00:00Z\")",
        ])
        .prop_map(str::to_owned),
        "(?s).{0,3}",
    ];
    vec(piece, 1..24).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(config())]

    /// Compiled, checked against the sample and evaluated against other values: never a
    /// panic, never a stack overflow on a test thread's 2 MiB.
    #[test]
    fn condition_arbitrary_source_never_panics(source in condition_source()) {
        use nightshift::rules::expr::{Condition, Variables};
        let Ok(condition) = Condition::compile(&source) else {
            return Ok(());
        };
        let object = |value: Json| match value {
            Json::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        let variables = Variables {
            labels: object(json!({"alertname": "A", "team": "gpu", "x": ""})),
            annotations: object(json!({"summary": "down"})),
            alert: object(json!({"status": "firing", "age_seconds": 120})),
            probe: object(json!({"status": {"ok": true, "indicator": "major", "items": [1, 2]}})),
        };
        let _ = condition.check(&variables);
        let _ = condition.evaluate(&variables);
        let _ = condition.evaluate(&Variables::default());
    }
}

// ---------------------------------------------------------------------------------------------
// Templates

/// The context templates are rendered with, bounded: a few labels, annotations and a probe.
fn template_context() -> Json {
    json!({
        "labels": {"alertname": "VastaiApiUnreachable", "namespace": "vastai", "team": "gpu"},
        "annotations": {"summary": "the API is down", "description": "5xx everywhere"},
        "alert": {"status": "firing", "fingerprint": "5bf9c395693611e8", "age_seconds": 120},
        "probe": {"status": {"ok": true, "indicator": "major", "latency_ms": 12, "items": [1, 2, 3]}},
        "rule": "vastai-api-unreachable",
        "severity": "P1",
        "incident_id": "5bf9c395693611e8-20261128T030000Z",
    })
}

/// Pieces of template source, well-formed and not, with loops and operators that could make a
/// render long or large.
fn template_source() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        prop::sample::select(vec![
            "{{ labels.alertname }}",
            "{{ labels.missing.deeper }}",
            "{{ probe.status.indicator | upper }}",
            "{{ annotations | tojson }}",
            "{{ labels | dictsort }}",
            "{{ secret(\"api-key\") }}",
            "{{ \"x\" * 1000 }}",
            "{{ \"x\" * 100000000 }}",
            "{{ [1, 2, 3] * 1000000 }}",
            "{{ range(100000) | list | length }}",
            "{{ range(100000) | sort | join(\",\") }}",
            "{% for i in range(100000) %}",
            "{% for i in probe.status.items %}",
            "{% for k, v in labels | items %}",
            "{% endfor %}",
            "{% if alert.age_seconds > 60 %}",
            "{% else %}",
            "{% endif %}",
            "{% set s = \"ab\" %}",
            "{% set s = s ~ s ~ s ~ s %}",
            "{% macro m(n) %}{{ m(n) }}{% endmacro %}",
            "{{ m(1) }}",
            "{% raw %}",
            "{% endraw %}",
            "{{ 1 / 0 }}",
            "{{ 2 ** 64 ** 64 }}",
            "{{ nosuch() }}",
            "{{ x | nosuchfilter }}",
            "{{",
            "}}",
            "{%",
            "%}",
            "{#",
            "#}",
            "{{ (((((( }}",
            "text ",
        ])
        .prop_map(str::to_owned),
        "(?s).{0,6}",
    ];
    vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn template_arbitrary_source_never_panics(source in "(?s).{0,64}") {
        let context = template_context();
        if let Ok(template) = Template::compile(&source, &context) {
            let _ = template.render(&context);
        }
    }

}

proptest! {
    #![proptest_config(cases(128))]

    /// Compiling renders once; neither may panic, loop without end or grow without bound.
    #[test]
    fn template_jinja_like_source_is_bounded(source in template_source()) {
        let context = template_context();
        let started = Instant::now();
        if let Ok(template) = Template::compile(&source, &context) {
            let rendered = template.render(&context);
            if let Ok(text) = rendered {
                prop_assert!(text.len() <= 64 << 20, "{} bytes from {:?}", text.len(), source);
            }
        }
        // Generous for a slow machine: without a bound some of these sources run for hours.
        prop_assert!(started.elapsed() < Duration::from_secs(10), "{:?} took {:?}", source, started.elapsed());
    }
}

// ---------------------------------------------------------------------------------------------
// Regressions: each an input that once crashed, hung or was accepted wrongly.

/// Two nested loops of 100,000 items each ran 10^10 iterations: a rule file with this summary
/// held `nightshift` at load (compile renders once) with no end in sight.
#[test]
fn regression_template_nested_loops_run_out_of_fuel() {
    let context = template_context();
    for source in [
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        "{% for i in range(100000) %}{{ \"x\" * 100000000 }}{% endfor %}",
        "{{ ((range(100000) | list) * 1000) | join(\",\") | length }}",
    ] {
        let started = Instant::now();
        let error = Template::compile(source, &context).unwrap_err();
        assert!(error.contains("fuel"), "{source}: {error}");
        assert!(started.elapsed() < Duration::from_secs(5), "{source}");
    }
    // What real templates do stays well inside the budget.
    let ordinary =
        "{% for k, v in labels | items %}{{ k }}={{ v }} {% endfor %}{{ annotations.summary }}";
    assert!(Template::compile(ordinary, &context).is_ok());
}

/// A macro calling itself stops at minijinja's recursion limit, on a test thread's stack.
#[test]
fn regression_template_recursion_is_an_error() {
    let source = "{% macro m(n) %}{{ m(n) }}{% endmacro %}{{ m(1) }}";
    let error = Template::compile(source, &template_context()).unwrap_err();
    assert!(error.contains("recursion"), "{error}");
}

/// `x=~"a)|(b"` was accepted: wrapped in the anchors it compiled as `^(?:a)|(b)$`, so the
/// value matched anything starting with `a`. Alertmanager refuses it as an invalid regex.
#[test]
fn regression_matcher_regex_cannot_escape_its_anchors() {
    for text in [r#"x=~"a)|(b""#, r#"x!~"a)|(?:b""#, r#"x=~")(""#] {
        let error = matcher::parse(text).unwrap_err();
        assert!(
            error.contains("invalid regular expression"),
            "{text}: {error}"
        );
    }
}

/// A value with a tab or a combining mark printed with Rust's escapes (`\t`, `\u{301}`), which
/// the matcher syntax does not have: the printed matcher parsed as a different value.
#[test]
fn regression_matcher_display_uses_the_matcher_syntax() {
    for value in [
        "a\tb",
        "e\u{301}",
        "\u{0}",
        "\r",
        "new\nline",
        "q\"uote",
        "back\\slash",
    ] {
        let matcher = matcher::Matcher::new("x", MatchType::Equal, value).unwrap();
        let printed = matcher.to_string();
        assert_eq!(
            matcher::parse(&printed),
            Ok(matcher),
            "{value:?} printed as {printed:?}"
        );
    }
}

/// `{"status": null}` is well-formed JSON, but serde_json reports a wrong type for an enum as a
/// syntax error: the body was counted as `invalid_json` rather than `invalid_field`.
#[test]
fn regression_webhook_wrong_type_for_status_is_a_field_error() {
    for (body, path) in [
        (r#"{"version":"4","status":null,"alerts":[]}"#, "status"),
        (r#"{"version":"4","status":1,"alerts":[]}"#, "status"),
        (r#"["4","4",0,null]"#, "[3]"),
        (
            r#"{"version":"4","status":"firing","alerts":[{"status":[],"labels":{},"startsAt":""}]}"#,
            "alerts[0].status",
        ),
    ] {
        let error = webhook::parse(body.as_bytes()).unwrap_err();
        assert_eq!(
            (error.path.as_str(), error.reason),
            (path, "invalid_field"),
            "{body}: {error}"
        );
    }
    // Not JSON at all stays invalid JSON. (Invalid UTF-8 inside a field nightshift does not
    // read is skipped unchecked by serde_json and the body accepted: nothing of it is kept.)
    let error = webhook::parse(br#"{"version":"4","status":nul"#).unwrap_err();
    assert_eq!(error.reason, "invalid_json", "{error}");
    assert!(
        webhook::parse(b"{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[],\"x\":\"\xff\"}")
            .is_ok()
    );
}

/// Runs `check` on a thread with tokio's stack size (2 MiB), where the daemon reloads rules and
/// renders templates: a stack overflow there aborts the whole process.
fn on_a_tokio_sized_stack(check: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(check)
        .unwrap()
        .join()
        .unwrap();
}

/// A condition of 1,600 `+ 1` terms (3 KB) parsed fine, then overflowed the stack when checked
/// at load (and would have at every decision): the CEL interpreter recurses over the tree with
/// no limit. Now the tree's depth is limited, and the source's length.
#[test]
fn regression_deep_condition_is_refused_not_a_stack_overflow() {
    on_a_tokio_sized_stack(|| {
        let dir = RulesDir::new();
        for condition in [
            format!("1{} == 1", " + 1".repeat(2_000)),
            format!("1{} == 41", " + 1".repeat(40)),
            format!("labels.a{}", ".b".repeat(100)),
            format!("{}1{} == 1", "[".repeat(50), "]".repeat(50)),
            format!("1{} == 1", "+1".repeat(100_000)),
        ] {
            let text = format!(
                "[[rule]]\nname = \"r\"\nseverity = \"P1\"\n\n[[rule.branch]]\nname = \"b\"\n\
                 when = '{condition}'\n"
            );
            dir.load(&text).unwrap();
            let path = dir.dir.path().join("fuzz.toml");
            let errors = load::load_files(&[path], &LoadOptions::default()).unwrap_err();
            assert!(
                errors[0].message.contains("levels deep")
                    || errors[0].message.contains("bytes long")
                    || errors[0].message.contains("Recursion limit"),
                "{}: {}",
                &condition[..40],
                errors[0]
            );
        }
        // Brackets nest up to the parser's own limit, on the parser's own stack (a debug build
        // overflowed 2 MiB at 20 parentheses).
        use nightshift::rules::expr::Condition;
        let nested = |depth: usize| format!("{}true{}", "(".repeat(depth), ")".repeat(depth));
        assert!(Condition::compile(&nested(90)).is_ok());
        assert!(
            Condition::compile(&nested(200))
                .unwrap_err()
                .contains("Recursion limit")
        );
        // What a condition reasonably holds still loads; `||` and `&&` chains are balanced.
        let ordinary = format!("labels.a == \"x\"{}", " || labels.a == \"y\"".repeat(200));
        assert!(Condition::compile(&ordinary).is_ok());
    });
}

/// `{{ ------...1 }}` with 8,000 signs (or `1+1+...`, or a long filter chain) overflowed the
/// stack while minijinja compiled it, at load and again at every render: its nesting limit
/// does not cover chains. Now a tag is at most 1 KiB; the text around tags is not limited.
#[test]
fn regression_long_template_tag_is_refused_not_a_stack_overflow() {
    on_a_tokio_sized_stack(|| {
        let context = template_context();
        for body in [
            format!("{}1", "-".repeat(8_000)),
            format!("1{}", "+1".repeat(8_000)),
            format!("1{}", "|e".repeat(16_000)),
            format!("{}1", "not ".repeat(8_000)),
        ] {
            for source in [
                format!("{{{{ {body} }}}}"),
                format!("{{{{ {body}"),
                format!("{{% set x = {body} %}}"),
            ] {
                let error = Template::compile(&source, &context).unwrap_err();
                assert!(error.contains("at most 1024"), "{}: {error}", &source[..20]);
                let template = Template { source };
                assert!(
                    template
                        .render(&context)
                        .unwrap_err()
                        .contains("at most 1024")
                );
            }
        }
        // Long templates are fine as long as each tag is short, and so is a long raw block,
        // a long comment or a long string of text.
        let long_text = format!("{}{{{{ labels.alertname }}}}", "text ".repeat(10_000));
        assert!(Template::compile(&long_text, &context).is_ok());
        let raw = format!("{{% raw %}}{{{{ {} {{% endraw %}}", "x".repeat(5_000));
        assert!(Template::compile(&raw, &context).is_ok());
        let comment = format!("{{# {} #}}ok", "x".repeat(5_000));
        assert_eq!(
            Template::compile(&comment, &context)
                .unwrap()
                .render(&context)
                .unwrap(),
            "ok"
        );
        // A closing delimiter inside a string does not end the tag early.
        let quoted = format!("{{{{ \"}}}}\" ~ {} }}}}", "-".repeat(2_000));
        assert!(Template::compile(&quoted, &context).is_err());
    });
}
