//! Rule engine benchmarks (issue 3): classification throughput and rule-set load time over a
//! generated set of 1,000 rules.
//!
//! Run: `taskset -c 1 cargo bench --bench rules` (results and method in BENCHMARKS.md).
//!
//! The rule set is written at start into a temporary directory as 10 files
//! (`r00.toml` … `r09.toml`) of 100 rules each, loaded in file-name order, so rule `rule-0999`
//! in `r09.toml` is the last of the 1,000. `load/1000_rules_one_file` loads the same rules
//! written as one file (`r00.toml`), to show how load time depends on file size. Rule `i` is:
//!
//! - for `i % 5 != 4` (800 rules): `alertname="AlertKKKK"` with a distinct `KKKK` (0000–0799),
//!   plus `team="team-N"` on every other one;
//! - for `i % 5 == 4` (200 rules, `j` = 0–199): regex matchers on other labels, in four shapes
//!   (`service=~"svc-JJJ-(1|2|3)[0-9]+"` + `instance!~"canary-.*"`;
//!   `namespace=~"ns-AAAA|ns-BBBB"` + `severity!="info"`; `job=~"job-JJJ-.*"` + `env!="dev"`;
//!   `instance=~"host-JJJ\.example\.com:[0-9]+"` + `job=~"node|kubelet"`).
//!
//! Severities cycle P1–P4, and every 100th alertname rule (8 in all) has `continue = true`.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use nightshift::ingest::webhook::LabelSet;
use nightshift::rules::{LoadOptions, RuleSet, load_dir};

const RULES: usize = 1000;
/// The main layout: 10 files of 100 rules.
const FILES: usize = 10;
/// Alerts per measured batch; each benchmark classifies a batch of distinct alerts.
const BATCH: usize = 64;

/// One rule as TOML (an element of `[[rule]]`).
fn rule_toml(index: usize) -> String {
    let severity = ["P1", "P2", "P3", "P4"][index % 4];
    let mut matchers: Vec<String> = Vec::new();
    let mut continue_matching = false;
    if index % 5 == 4 {
        let j = index / 5;
        match j % 4 {
            0 => {
                matchers.push(format!(r#"service=~"svc-{j:03}-(1|2|3)[0-9]+""#));
                matchers.push(r#"instance!~"canary-.*""#.to_owned());
            }
            1 => {
                matchers.push(format!(
                    r#"namespace=~"ns-{:04}|ns-{:04}""#,
                    2 * j,
                    2 * j + 1
                ));
                matchers.push(r#"severity!="info""#.to_owned());
            }
            2 => {
                matchers.push(format!(r#"job=~"job-{j:03}-.*""#));
                matchers.push(r#"env!="dev""#.to_owned());
            }
            _ => {
                // `\\.` in the TOML literal string is the regex's `\.` after matcher unescaping.
                matchers.push(format!(r#"instance=~"host-{j:03}\\.example\\.com:[0-9]+""#));
                matchers.push(r#"job=~"node|kubelet""#.to_owned());
            }
        }
    } else {
        let k = index - index / 5;
        matchers.push(format!(r#"alertname="Alert{k:04}""#));
        if k.is_multiple_of(2) {
            matchers.push(format!(r#"team="team-{}""#, k % 10));
        }
        continue_matching = k % 100 == 50;
    }
    // Matchers go in TOML literal strings ('…'), so their quotes and backslashes stay as is.
    let matchers = matchers
        .iter()
        .map(|m| format!("'{m}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut text = format!(
        "[[rule]]\nname = \"rule-{index:04}\"\ndescription = \"generated rule {index}\"\n\
         matchers = [{matchers}]\nseverity = \"{severity}\"\n"
    );
    if continue_matching {
        text.push_str("continue = true\n");
    }
    text.push('\n');
    text
}

/// Write the generated rules into `dir` as `files` files of equal size.
fn write_rules(dir: &Path, files: usize) {
    let per_file = RULES / files;
    for file in 0..files {
        let mut text = format!("[runbook]\nname = \"generated-{file:02}\"\n\n");
        for index in file * per_file..(file + 1) * per_file {
            text.push_str(&rule_toml(index));
        }
        std::fs::write(dir.join(format!("r{file:02}.toml")), text).expect("write rule file");
    }
}

fn labels(pairs: &[(&str, String)]) -> LabelSet {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// A realistic label set with every label some rule looks at; `n` varies the values.
/// `instance_host` picks which `host-JJJ` rule the instance could match.
fn alert(n: usize, alertname: &str, team: &str, instance_host: &str) -> LabelSet {
    labels(&[
        ("alertname", alertname.to_owned()),
        ("severity", "warning".to_owned()),
        ("team", team.to_owned()),
        ("env", "prod".to_owned()),
        // Close to the regex rules' values but matching none of them.
        ("service", format!("svc-500-{}", 100 + n)),
        ("namespace", format!("ns-{:04}", 500 + n)),
        ("job", "node".to_owned()),
        (
            "instance",
            format!("{instance_host}.example.com:{}", 9100 + n),
        ),
    ])
}

/// Alerts that only the last rule (`rule-0999`: `instance=~"host-199\.example\.com:[0-9]+"`,
/// `job=~"node|kubelet"`) matches.
fn last_rule_alerts() -> Vec<LabelSet> {
    (0..BATCH)
        .map(|n| alert(n, &format!("NodeAlert{n}"), "team-x", "host-199"))
        .collect()
}

/// Alerts that no rule matches: they fall through to the built-in default rule.
fn no_match_alerts() -> Vec<LabelSet> {
    (0..BATCH)
        .map(|n| alert(n, &format!("NodeAlert{n}"), "team-x", "host-500"))
        .collect()
}

/// Alerts that the first rule (`alertname="Alert0000"`, `team="team-0"`) matches.
fn first_rule_alerts() -> Vec<LabelSet> {
    (0..BATCH)
        .map(|n| alert(n, "Alert0000", "team-0", "host-500"))
        .collect()
}

fn load(dir: &Path) -> RuleSet {
    load_dir(dir, &LoadOptions::default()).unwrap_or_else(|errors| {
        for error in &errors {
            eprintln!("{error}");
        }
        panic!("generated rules did not load ({} errors)", errors.len())
    })
}

/// Check that the alerts classify as each benchmark claims before timing anything.
fn check(set: &RuleSet, alerts: &[LabelSet], expected: Option<&str>) {
    let annotations = LabelSet::new();
    for labels in alerts {
        let classification = set.classify(labels, &annotations);
        let matched: Vec<&str> = classification
            .matched
            .iter()
            .map(|m| m.rule.as_str())
            .collect();
        assert_eq!(
            matched,
            expected.into_iter().collect::<Vec<_>>(),
            "{labels:?}"
        );
    }
}

fn benches(c: &mut Criterion) {
    // RULES_BENCH_KEEP=DIR also writes the generated rules there, to time a cold load by the
    // real binary (`nightshift check`), where no regex is cached yet.
    if let Ok(keep) = std::env::var("RULES_BENCH_KEEP") {
        std::fs::create_dir_all(&keep).expect("RULES_BENCH_KEEP directory");
        write_rules(Path::new(&keep), FILES);
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    write_rules(dir.path(), FILES);
    let set = load(dir.path());
    // The same 1,000 rules in one file, for the load benchmark only.
    let one_file = tempfile::tempdir().expect("temporary directory");
    write_rules(one_file.path(), 1);
    assert_eq!(load(one_file.path()).rules.len(), RULES);
    assert_eq!(set.rules.len(), RULES);
    assert_eq!(set.rules.last().map(|r| r.name.as_str()), Some("rule-0999"));

    let cases = [
        ("last_rule", last_rule_alerts(), Some("rule-0999")),
        ("no_match", no_match_alerts(), None),
        ("first_rule", first_rule_alerts(), Some("rule-0000")),
    ];
    let annotations = LabelSet::new();
    let mut group = c.benchmark_group("classify");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, alerts, expected) in &cases {
        check(&set, alerts, *expected);
        group.bench_function(*name, |b| {
            b.iter(|| {
                for labels in alerts {
                    black_box(set.classify(black_box(labels), &annotations));
                }
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("load");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(30);
    group.bench_function("1000_rules", |b| {
        b.iter(|| black_box(load(black_box(dir.path()))))
    });
    group.bench_function("1000_rules_one_file", |b| {
        b.iter(|| black_box(load(black_box(one_file.path()))))
    });
    group.finish();
}

criterion_group! {
    name = rules;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = benches
}
criterion_main!(rules);
