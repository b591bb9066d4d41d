//! The command line as a person reads it: the real binary against a real daemon, its text read
//! line by line (a pipe, so plain text: no colour, no symbols), its `--json` parsed.

use crate::common::*;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

/// A rule whose probe cannot connect (its error must show once), whose failure branch runs an
/// action (dry-run: the default mode), and whose bundle has one collector that works (with a
/// bearer token in its output, to be redacted) and one that cannot connect.
fn rules(closed_port: u16) -> String {
    format!(
        r#"
[runbook]
name = "cli"

[probe.upstream]
kind = "http"
url = "http://127.0.0.1:{closed_port}/health"
timeout = "2s"

[action.note]
kind = "exec"
target = "note-{{{{ labels.instance }}}}"
argv = ["/bin/echo", "noted"]

[collector.echo]
kind = "exec"
argv = ["/bin/echo", "Authorization: Bearer abcdefghijklmnop0123"]

[collector.dead]
kind = "http"
url = "http://127.0.0.1:{closed_port}/metrics"
timeout = "2s"

[[rule]]
name = "cli-rule"
matchers = ['alertname="CliAlert"']
severity = "P3"
probes = ["upstream"]
collect = ["echo", "dead"]
summary = "cli alert on {{{{ labels.instance }}}}"

[[rule.branch]]
name = "answers"
when = 'probe.upstream.status == 200'
note = "upstream answers"

[rule.on_probe_failure]
actions = ["note"]
note = "could not confirm the upstream"
"#
    )
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The alert's labels: one with a control sequence (alert data is hostile), keys of different
/// lengths.
fn labels() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("alertname", "CliAlert"),
        ("instance", "web-1"),
        ("severity", "warning"),
        ("team", "platform\u{1b}[31m"),
        ("kubernetes_namespace", "shop"),
    ])
}

fn send(daemon: &mut Daemon, status: &str) {
    let ends_at = if status == "firing" {
        "0001-01-01T00:00:00Z"
    } else {
        "2026-11-28T03:30:00Z"
    };
    let body = serde_json::json!({
        "version": "4", "status": status, "receiver": "nightshift", "groupKey": "{}:{alertname=\"CliAlert\"}",
        "alerts": [{"status": status, "labels": labels(),
                    "annotations": {"summary": "web-1 is down\nreally", "runbook_url": "https://runbooks.example/web"},
                    "startsAt": "2026-11-28T03:00:00Z", "endsAt": ends_at}],
    });
    let response = client().post(
        &format!("{}/webhook", daemon.base),
        &[JSON],
        body.to_string().as_bytes(),
    );
    assert_eq!(
        response.status,
        200,
        "{}; daemon exited: {:?}\n{}",
        response.body,
        daemon.try_wait(),
        daemon.log()
    );
}

fn stdout(output: &std::process::Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout.clone()).expect("UTF-8")
}

fn json(output: &std::process::Output) -> Value {
    serde_json::from_str(&stdout(output)).unwrap_or_else(|e| panic!("not JSON ({e}): {output:?}"))
}

/// The lines of the section titled `title:` (up to the next blank line).
fn section<'a>(text: &'a str, title: &str) -> Vec<&'a str> {
    let heading = format!("{title}:");
    text.lines()
        .skip_while(|line| !line.starts_with(&heading))
        .skip(1)
        .take_while(|line| !line.is_empty())
        .collect()
}

/// How many spaces `text` starts with.
fn leading_spaces(text: &str) -> usize {
    text.len() - text.trim_start_matches(' ').len()
}

/// The API's JSON at `path` (with the generated read token), if it answers 200.
fn api(daemon: &Daemon, path: &str) -> Option<Value> {
    let response = client().get(&format!("{}{path}", daemon.base), &[]);
    (response.status == 200).then(|| response.json())
}

/// The version (`initial`, `final`) of the incident's bundle, from its manifest.
fn bundle_version(daemon: &Daemon, id: &str) -> Option<String> {
    let response = client().get(
        &format!("{}/api/v1/incidents/{id}/bundle", daemon.base),
        &[],
    );
    if response.status != 200 {
        return None;
    }
    let files = untar(response.body_bytes());
    let manifest: Value = serde_json::from_slice(files.get("manifest.json")?).ok()?;
    manifest["version"].as_str().map(str::to_owned)
}

/// A daemon that has seen `CliAlert` fire and resolve, with its decision, action and final
/// bundle recorded; the incident's ID. The waits poll the API, so that the CLI runs only for
/// what the tests read.
fn settled_incident() -> (Daemon, String) {
    let port = closed_port();
    let mut daemon = Daemon::prepare("", &[]);
    std::fs::create_dir_all(daemon.path("rules")).unwrap();
    daemon.write_file("rules/cli.toml", &rules(port));
    daemon.spawn();
    send(&mut daemon, "firing");
    let id = wait_for(Duration::from_secs(30), || {
        let list = api(&daemon, "/api/v1/incidents")?;
        let id = list["incidents"].as_array()?.first()?["id"]
            .as_str()?
            .to_owned();
        let detail = api(&daemon, &format!("/api/v1/incidents/{id}"))?;
        let acted = !detail["actions"].as_array()?.is_empty();
        (acted && bundle_version(&daemon, &id).is_some()).then_some(id)
    })
    .unwrap_or_else(|| {
        panic!(
            "no decision, action and bundle; daemon exited: {:?}\n{}",
            daemon.try_wait(),
            daemon.log()
        )
    });
    send(&mut daemon, "resolved");
    wait_for(Duration::from_secs(30), || {
        let detail = api(&daemon, &format!("/api/v1/incidents/{id}"))?;
        let resolved = detail["transitions"].as_array()?.len() >= 2;
        (resolved && bundle_version(&daemon, &id).as_deref() == Some("final")).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the incident did not resolve with a final bundle; daemon exited: {:?}\n{}",
            daemon.try_wait(),
            daemon.log()
        )
    });
    (daemon, id)
}

#[test]
fn incidents_and_bundles_read_as_text_and_parse_as_json() {
    let (daemon, id) = settled_incident();

    // incidents list: a header, then the incident with its status and severity.
    let list = stdout(&daemon.cli(&["incidents", "list"]));
    let header = list.lines().next().unwrap();
    assert!(
        header.starts_with("ID") && header.contains("STATUS"),
        "{list}"
    );
    let row = list
        .lines()
        .find(|line| line.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not listed:\n{list}"));
    let words: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &words[..4],
        [id.as_str(), "resolved", "P3", "CliAlert"],
        "{row}"
    );
    assert_eq!(
        header.find("STATUS"),
        row.find("resolved"),
        "aligned:\n{list}"
    );
    assert!(
        !list.contains('\u{1b}'),
        "no colour through a pipe: {list:?}"
    );

    // incidents show.
    let detail = json(&daemon.cli(&["incidents", "show", &id, "--json"]));
    let shown = stdout(&daemon.cli(&["incidents", "show", &id]));
    assert!(!shown.contains('\u{1b}'), "escaped and plain: {shown:?}");
    assert!(!shown.contains('✓') && !shown.contains('✗'), "{shown}");

    // Labels: one per line, values escaped, all starting in the same column.
    let label_lines = section(&shown, "labels");
    assert_eq!(label_lines.len(), labels().len(), "{shown}");
    let longest = labels().keys().map(|key| key.len()).max().unwrap();
    for (key, value) in labels() {
        let line = label_lines
            .iter()
            .find(|line| line.trim_start().starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no label {key}:\n{shown}"));
        let escaped = value.replace('\u{1b}', "\\u{1b}");
        assert_eq!(*line, format!("  {key:<longest$}  {escaped}"), "{shown}");
    }
    let annotations = section(&shown, "annotations");
    assert!(
        annotations.contains(&"  runbook_url  https://runbooks.example/web"),
        "{shown}"
    );
    assert!(
        annotations.contains(&"  summary      web-1 is down\\nreally"),
        "{shown}"
    );

    // The probe's error once, though the decision, the note and the trace all know it.
    let decision = &detail["decisions"].as_array().unwrap()[0];
    let probe = &decision["trace"]["probes"]["cli/upstream"];
    assert_eq!(probe["ok"], false, "{decision:#}");
    let error = probe["error"].as_str().unwrap();
    assert!(!error.is_empty());
    assert_eq!(shown.matches(error).count(), 1, "{error:?} in\n{shown}");
    let probe_line = shown.lines().find(|line| line.contains(error)).unwrap();
    assert!(
        probe_line.trim_start().starts_with("probe") && probe_line.contains("cli/upstream"),
        "{probe_line}"
    );
    assert!(
        probe_line.contains(&format!("failed: {error}")),
        "{probe_line}"
    );
    // The decision, its reason, the action (dry-run), the page state.
    assert!(
        shown.contains(&format!(
            "decision   rule cli-rule · severity P3 · branch {}",
            decision["branch"].as_str().unwrap()
        )),
        "{shown}"
    );
    assert!(
        shown.contains("note    could not confirm the upstream"),
        "{shown}"
    );
    let action = &detail["actions"][0];
    let action_line = format!(
        "note (exec) on note-web-1: {} → {}",
        action["verdict"].as_str().unwrap(),
        action["state"].as_str().unwrap()
    );
    assert!(shown.contains(&action_line), "{action_line} in\n{shown}");
    assert!(action_line.contains("dry_run"), "{action_line}");
    let page_state = detail["paging"]["page_state"].as_str().unwrap();
    let page_summary = detail["paging"]["summary"].as_str().unwrap();
    assert!(
        shown.contains(&format!("\npage       {page_state} — {page_summary}\n")),
        "{shown}"
    );

    let events = detail["paging"]["events"].as_array().unwrap();
    assert!(!events.is_empty(), "{detail:#}");
    for event in events {
        let line = format!(
            "{} {} → {}",
            event["channel"].as_str().unwrap(),
            event["kind"].as_str().unwrap(),
            event["state"].as_str().unwrap()
        );
        let shown_line = shown
            .lines()
            .find(|l| l.contains(&line) && l.contains(event["created_at"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("no {line:?} in\n{shown}"));
        assert!(
            shown_line.contains(&format!("attempts {}", event["attempts"])),
            "{shown_line}"
        );
    }

    // Transitions: time, kind, detail in aligned columns, one line each, in order.
    let transitions = detail["transitions"].as_array().unwrap();
    let lines = section(&shown, "transitions");
    assert_eq!(lines.len(), transitions.len(), "{shown}");
    let mut kind_columns = Vec::new();
    let mut detail_columns = Vec::new();
    for (line, transition) in lines.iter().zip(transitions) {
        let at = transition["at"].as_str().unwrap();
        chrono::DateTime::parse_from_rfc3339(at).expect("RFC 3339");
        assert!(line.starts_with(&format!("  {at}  ")), "{line}");
        let kind = transition["kind"].as_str().unwrap();
        let kind_column = 2 + at.len() + leading_spaces(&line[2 + at.len()..]);
        assert!(
            line[kind_column..].starts_with(&format!("{kind}  ")),
            "{line}"
        );
        let after_kind = kind_column + kind.len();
        kind_columns.push(kind_column);
        detail_columns.push(after_kind + leading_spaces(&line[after_kind..]));
    }
    let kinds: Vec<&str> = transitions
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"opened") && kinds.contains(&"resolved"),
        "{kinds:?}"
    );
    for columns in [&kind_columns, &detail_columns] {
        assert!(
            columns.windows(2).all(|pair| pair[0] == pair[1]),
            "columns not aligned ({columns:?}):\n{}",
            lines.join("\n")
        );
    }
    assert!(lines[0].contains("alert_status=firing"), "{}", lines[0]);

    // bundles list.
    let rows = json(&daemon.cli(&["bundles", "list", "--json"]));
    let row = &rows[0];
    let listed = stdout(&daemon.cli(&["bundles", "list"]));
    let line = listed
        .lines()
        .find(|line| line.starts_with(&id))
        .unwrap_or_else(|| panic!("{listed}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        words,
        [
            id.as_str(),
            "final",
            "resolved",
            &row["bytes"].to_string(),
            row["path"].as_str().unwrap()
        ],
        "{listed}"
    );

    // bundles show --json: the manifest as it is.
    let manifest = json(&daemon.cli(&["bundles", "show", &id, "--json"]));
    assert_eq!(manifest["incident"], id.as_str(), "{manifest:#}");
    assert!(manifest["collectors"].is_array(), "{manifest:#}");

    // bundles show: the incident, state, path, size, each file with its size, each
    // collector's outcome with an error once, redaction counts.
    let text = stdout(&daemon.cli(&["bundles", "show", &id]));
    assert!(!text.contains('\u{1b}'), "{text:?}");
    let facts = |key: &str| {
        text.lines()
            .find(|line| line.starts_with(&format!("{key} ")))
            .map(|line| line[key.len()..].trim().to_owned())
            .unwrap_or_else(|| panic!("no {key} in\n{text}"))
    };
    assert_eq!(facts("incident"), id);
    assert_eq!(facts("state"), "final");
    assert_eq!(facts("version"), manifest["version"].as_str().unwrap());
    assert_eq!(facts("path"), row["path"].as_str().unwrap());
    assert!(
        facts("size").contains(&format!("({} bytes)", row["bytes"])),
        "{text}"
    );
    let files = manifest["files"].as_array().unwrap();
    let file_lines = section(&text, &format!("files ({})", files.len()));
    assert_eq!(file_lines.len(), files.len(), "{text}");
    for file in files {
        let path = file["path"].as_str().unwrap();
        let line = file_lines
            .iter()
            .find(|line| line.trim_start().starts_with(&format!("{path} ")))
            .unwrap_or_else(|| panic!("no {path} in\n{text}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[1], file["bytes"].to_string(), "{line}");
        if let Some(count) = manifest["redactions"][path].as_u64() {
            assert!(line.ends_with(&format!("{count} redacted")), "{line}");
        }
    }
    let collector_lines = section(&text, "collectors");
    for collector in manifest["collectors"].as_array().unwrap() {
        let name = collector["name"].as_str().unwrap();
        let line = collector_lines
            .iter()
            .find(|line| line.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no collector {name} in\n{text}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[2], collector["status"].as_str().unwrap(), "{line}");
        if let Some(error) = collector["error"].as_str() {
            assert!(line.contains(error), "{line}");
            assert_eq!(text.matches(error).count(), 1, "{error:?} once in\n{text}");
        }
    }
    let statuses: Vec<&str> = manifest["collectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert!(
        statuses.contains(&"ok") && statuses.contains(&"failed"),
        "{manifest:#}"
    );
    let total: u64 = manifest["redactions"]
        .as_object()
        .unwrap()
        .values()
        .map(|count| count.as_u64().unwrap())
        .sum();
    assert!(total > 0, "the bearer token is redacted: {manifest:#}");
    let redactions = text
        .lines()
        .find(|line| line.starts_with("redactions: "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        redactions.starts_with(&format!("redactions: {total} in ")),
        "{redactions}"
    );

    // report --json is --format json (the same incidents and counts; the window moves on).
    let report = json(&daemon.cli(&["report", "--since", "3000d", "--json"]));
    let formatted = json(&daemon.cli(&["report", "--since", "3000d", "--format", "json"]));
    assert_eq!(report["incidents"][0]["id"], id.as_str(), "{report:#}");
    for key in ["incidents", "counts", "needs_a_human"] {
        assert_eq!(report[key], formatted[key], "{key}");
    }
    let markdown = stdout(&daemon.cli(&["report", "--since", "3000d"]));
    assert!(
        serde_json::from_str::<Value>(&markdown).is_err(),
        "{markdown}"
    );
}

#[test]
fn pause_and_resume_say_what_they_did() {
    let daemon = Daemon::start("");
    let before = chrono::Utc::now();
    let paused = stdout(&daemon.cli(&["pause", "--for", "90m", "--reason", "deploy freeze"]));
    let after = chrono::Utc::now();
    let until = paused
        .split("paused until ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{paused}"));
    let until = chrono::DateTime::parse_from_rfc3339(until)
        .unwrap_or_else(|e| panic!("{until}: {e}"))
        .with_timezone(&chrono::Utc);
    let ninety = chrono::Duration::minutes(90);
    assert!(
        until >= before + ninety - chrono::Duration::seconds(1)
            && until <= after + ninety + chrono::Duration::seconds(1),
        "{paused}"
    );
    assert!(paused.contains("reason: deploy freeze"), "{paused}");
    assert!(
        !paused.trim_start().starts_with('{'),
        "text, not JSON: {paused}"
    );

    let answer = json(&daemon.cli(&["pause", "--for", "30m", "--json"]));
    assert_eq!(answer["status"], "paused", "{answer}");
    assert!(answer["until"].is_string(), "{answer}");

    let forever = stdout(&daemon.cli(&["pause", "--reason", "incident review"]));
    assert!(forever.contains("paused until resumed"), "{forever}");
    assert!(forever.contains("reason: incident review"), "{forever}");

    let resumed = stdout(&daemon.cli(&["resume"]));
    assert!(resumed.contains("Automatic actions resumed"), "{resumed}");
    assert!(!resumed.contains('{'), "{resumed}");
    let answer = json(&daemon.cli(&["resume", "--json"]));
    assert_eq!(answer["status"], "resumed", "{answer}");
    let metrics = client().get(&format!("{}/metrics", daemon.base), &[]).body;
    assert!(metrics.contains("nightshift_actions_paused 0"), "{metrics}");
}

#[test]
fn a_bad_duration_is_refused_before_anything_runs() {
    for args in [["pause", "--for", "bogus"], ["report", "--since", "bogus"]] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_nightshift"))
            .args(args)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("expected a duration such as 30m or 1h30m, got `bogus`"),
            "{args:?}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "{args:?}: {output:?}");
    }
}

#[test]
fn help_explains_every_flag() {
    let cases: [(&[&str], &str); 3] = [
        (
            &["incidents", "list", "--help"],
            "Only incidents in this status",
        ),
        (
            &["bundles", "show", "--help"],
            "The incident whose bundle to show",
        ),
        (&["pause", "--help"], "Why, recorded with every action"),
    ];
    for (args, expected) in cases {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_nightshift"))
            .args(args)
            .output()
            .unwrap();
        let text = stdout(&output);
        assert!(text.contains(expected), "{args:?}: {text}");
    }
}

/// The CLI reads the store beside a daemon that is writing it, again and again, and never
/// disturbs it. (A reader that opened and closed the database files itself, to check their
/// permissions, dropped the daemon's own SQLite locks; the next reader then reset the shared
/// memory the daemon had mapped and the daemon died of SIGBUS within a few rounds.)
#[test]
fn reads_beside_a_busy_daemon_never_disturb_it() {
    let mut daemon = Daemon::start("");
    const ROUNDS: usize = 200;
    for round in 0..ROUNDS {
        let body = webhook(
            "Busy",
            &[(
                "Busy",
                &format!("web-{round}"),
                "firing",
                "2026-11-28T03:00:00Z",
            )],
            0,
        );
        let response = client().post(
            &format!("{}/webhook", daemon.base),
            &[JSON],
            body.as_bytes(),
        );
        assert_eq!(
            response.status,
            200,
            "round {round}: {}; daemon exited: {:?}\n{}",
            response.body,
            daemon.try_wait(),
            daemon.log()
        );
        let listed = daemon.cli(&["incidents", "list", "--json"]);
        assert!(listed.status.success(), "round {round}: {listed:?}");
        assert!(
            daemon.try_wait().is_none(),
            "round {round}: the daemon died beside a reader\n{}",
            daemon.log()
        );
    }
    // Every acknowledged alert became an incident, and the readers saw them all.
    let all = wait_for(Duration::from_secs(20), || {
        let listed = json(&daemon.cli(&["incidents", "list", "--json", "--limit", "1000"]));
        (listed.as_array()?.len() == ROUNDS).then_some(())
    });
    assert!(all.is_some(), "{}", daemon.log());
    assert!(daemon.try_wait().is_none(), "{}", daemon.log());
}

/// `check` and `test` give the same outcome as text and as JSON.
#[test]
fn check_and_test_answer_in_json_too() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, format!("[rules]\ndir = \"{root}/rules\"\n")).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_nightshift"))
            .args(args)
            .output()
            .unwrap()
    };
    let text = run(&["check", "--config", good.to_str().unwrap()]);
    assert!(text.status.success(), "{text:?}");
    let said = String::from_utf8(text.stdout).unwrap();
    let json = run(&["check", "--json", "--config", good.to_str().unwrap()]);
    assert!(json.status.success(), "{json:?}");
    let outcome: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(outcome["ok"], true, "{outcome}");
    let rules = outcome["rules"].as_u64().unwrap();
    let files = outcome["files"].as_u64().unwrap();
    assert!(rules > 0 && files > 0, "{outcome}");
    assert!(
        said.contains(&format!("{rules} rules in {files} files OK")),
        "{said} / {outcome}"
    );
    assert_eq!(
        outcome["warnings"].as_array().unwrap().len(),
        String::from_utf8_lossy(&text.stderr)
            .lines()
            .filter(|l| l.starts_with("warning: "))
            .count(),
        "{outcome}"
    );

    // A typo: exit 1 either way, the same file:line error in both.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nlistn = \"127.0.0.1:1\"\n").unwrap();
    let text = run(&["check", "--config", bad.to_str().unwrap()]);
    assert_eq!(text.status.code(), Some(1));
    let json = run(&["check", "--json", "--config", bad.to_str().unwrap()]);
    assert_eq!(json.status.code(), Some(1));
    let outcome: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(outcome["ok"], false);
    let errors: Vec<&str> = outcome["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    let stderr = String::from_utf8(text.stderr).unwrap();
    assert_eq!(stderr.lines().collect::<Vec<_>>(), errors);
    assert!(
        errors[0].starts_with(&format!("{}:2: ", bad.display())),
        "{errors:?}"
    );

    // The runbooks' own [[test]] cases: every file passes, as the text says.
    let rules_dir = format!("{root}/rules");
    let text = run(&["test", &rules_dir]);
    assert!(text.status.success(), "{text:?}");
    let json = run(&["test", "--json", &rules_dir]);
    assert!(json.status.success(), "{json:?}");
    let outcome: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(outcome["passed"], true, "{outcome}");
    let said = String::from_utf8(text.stdout).unwrap();
    let reports = outcome["files"].as_array().unwrap();
    assert_eq!(reports.len(), said.matches("SUCCESS (").count(), "{said}");
    for report in reports {
        let passed = report["passed"].as_u64().unwrap();
        assert!(
            said.contains(&format!("SUCCESS ({passed} tests)")),
            "{report} / {said}"
        );
        assert!(report["failures"].as_array().unwrap().is_empty());
    }
}
