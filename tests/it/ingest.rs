//! The real binary on 127.0.0.1:0: credentials, bad input, and what each answer leaves behind.

use crate::common::*;

use std::time::Duration;

const INGEST: &str = "Bearer ingest-secret";
const READ: &str = "Bearer read-secret";
const ADMIN: &str = "Bearer admin-secret";

fn daemon_with_credentials() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.keep();
    write_private(&root.join("ingest"), "ingest-secret\n");
    write_private(&root.join("read"), "read-secret\n");
    write_private(&root.join("admin"), "admin-secret\n");
    write_private(&root.join("ingest_basic"), "alertmanager:pa:ss\n");
    let root = root.display();
    Daemon::start(&format!(
        "[auth]\ningest_token_file = \"{root}/ingest\"\ningest_basic_auth_file = \"{root}/ingest_basic\"\n\
         read_token_file = \"{root}/read\"\nadmin_token_file = \"{root}/admin\"\n\
         [store]\nrejected_keep = 3\n"
    ))
}

fn post_webhook(daemon: &Daemon, auth: Option<&str>, body: &str) -> http_client::Response {
    let mut headers = vec![JSON];
    if let Some(auth) = auth {
        headers.push(("Authorization", auth));
    }
    client().post(
        &format!("{}/webhook", daemon.base),
        &headers,
        body.as_bytes(),
    )
}

fn incident_count(daemon: &Daemon) -> usize {
    // A daemon that generated its read credential gets it from the test client.
    let configured = [("Authorization", READ)];
    let headers: &[(&str, &str)] = if daemon.generated_token("read").is_some() {
        &[]
    } else {
        &configured
    };
    let response = client().get(&format!("{}/api/v1/incidents", daemon.base), headers);
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()["incidents"].as_array().unwrap().len()
}

fn metric(daemon: &Daemon, series: &str) -> f64 {
    let text = client().get(&format!("{}/metrics", daemon.base), &[]).body;
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

fn stored_notifications(daemon: &Daemon) -> i64 {
    let connection = rusqlite::Connection::open_with_flags(
        daemon.state_dir().join("nightshift.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    connection
        .query_row("SELECT count(*) FROM notifications", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn each_credential_opens_only_its_own_endpoints() {
    let daemon = daemon_with_credentials();
    let body = fixture("firing-single.json");
    let basic = format!("Basic {}", base64_encode("alertmanager:pa:ss"));
    // Webhook: none, wrong, another role's, right (bearer and basic).
    for (auth, expected) in [
        (None, 401),
        (Some("Bearer nope"), 401),
        (Some(READ), 401),
        (Some(ADMIN), 401),
        (Some("Basic YWxlcnRtYW5hZ2VyOndyb25n"), 401),
        (Some(INGEST), 200),
        (Some(basic.as_str()), 200),
    ] {
        let response = post_webhook(&daemon, auth, &body);
        assert_eq!(response.status, expected, "{auth:?}: {}", response.body);
        if expected == 401 {
            assert!(response.header("WWW-Authenticate").is_some());
            assert_eq!(response.json()["error"], "unauthorized");
        }
    }
    assert_eq!(
        stored_notifications(&daemon),
        2,
        "refused requests store nothing"
    );
    // The first refusal is logged with the peer; the next ones within the minute only counted
    // (the line after a minute says how many).
    let log = daemon.log();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("request refused: missing or wrong credential (401)"))
        .collect();
    assert_eq!(refusals.len(), 1, "{log}");
    assert!(refusals[0].contains("peer=127.0.0.1:"), "{}", refusals[0]);
    assert!(refusals[0].contains("path=\"/webhook\""), "{}", refusals[0]);
    // Incident API: read only.
    let url = format!("{}/api/v1/incidents", daemon.base);
    for (auth, expected) in [
        (None, 401),
        (Some(INGEST), 401),
        (Some(ADMIN), 401),
        (Some(READ), 200),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
        assert_eq!(client().get(&url, &headers).status, expected, "{auth:?}");
    }
    // Reload: admin only.
    let url = format!("{}/-/reload", daemon.base);
    for (auth, expected) in [
        (None, 401),
        (Some(INGEST), 401),
        (Some(READ), 401),
        (Some(ADMIN), 200),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
        assert_eq!(
            client().post(&url, &headers, b"").status,
            expected,
            "{auth:?}"
        );
    }
    assert_eq!(
        metric(
            &daemon,
            "nightshift_http_unauthorized_total{credential=\"ingest\"}"
        ),
        5.0
    );
    // Health, readiness and metrics need no credential.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            client().get(&format!("{}{path}", daemon.base), &[]).status,
            200,
            "{path}"
        );
    }
}

fn base64_encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn bad_input_gets_a_precise_answer_and_changes_nothing() {
    let daemon = Daemon::start("");
    let url = format!("{}/webhook", daemon.base);
    // (name, headers, body, status, expected (path, message part) of a 400)
    type Case<'a> = (
        &'a str,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
        u16,
        Option<(&'a str, &'a str)>,
    );
    let cases: Vec<Case> = vec![
        ("not json", vec![JSON], b"{\"version\":".to_vec(), 400, Some(("version", "EOF while parsing"))),
        ("invalid utf-8", vec![JSON], b"{\"version\":\"\xff\xfe\"}".to_vec(), 400, Some(("version", "invalid unicode"))),
        ("missing alerts", vec![JSON], br#"{"version":"4","status":"firing"}"#.to_vec(), 400, Some((".", "missing field `alerts`"))),
        ("unknown status", vec![JSON], br#"{"version":"4","status":"flapping","alerts":[]}"#.to_vec(), 400, Some(("status", "unknown variant `flapping`"))),
        ("version 3", vec![JSON], br#"{"version":"3","status":"firing","alerts":[]}"#.to_vec(), 400, Some(("version", "expected \"4\""))),
        ("wrong type", vec![JSON], br#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":[],"startsAt":"2026-11-28T03:00:00Z"}]}"#.to_vec(), 400, Some(("alerts[0].labels", "expected a map"))),
        ("bad time", vec![JSON], br#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{},"startsAt":"3am"}]}"#.to_vec(), 400, Some(("alerts[0].startsAt", "RFC 3339"))),
        ("text/plain", vec![("Content-Type", "text/plain")], fixture("firing-single.json").into_bytes(), 415, None),
        ("no content type", vec![], fixture("firing-single.json").into_bytes(), 415, None),
        ("too large", vec![JSON], vec![b' '; 9 * 1024 * 1024], 413, None),
    ];
    for (name, headers, body, status, problem) in &cases {
        let response = client().post(&url, headers, body);
        assert_eq!(response.status, *status, "{name}: {}", response.body);
        let json = response.json();
        if let Some((path, message)) = problem {
            assert_eq!(json["path"], *path, "{name}: {json}");
            assert!(
                json["message"].as_str().unwrap().contains(message),
                "{name}: {json}"
            );
        } else {
            assert!(
                json["message"].as_str().unwrap().len() > 10,
                "{name}: {json}"
            );
        }
    }
    // Wrong method and unknown path.
    assert_eq!(client().get(&url, &[]).status, 405);
    assert_eq!(
        client().get(&format!("{}/nope", daemon.base), &[]).status,
        404
    );
    assert_eq!(stored_notifications(&daemon), 0);
    assert_eq!(incident_count(&daemon), 0);
    assert_eq!(
        metric(
            &daemon,
            "nightshift_webhook_requests_total{outcome=\"bad_request\"}"
        ),
        7.0
    );
    assert_eq!(
        metric(
            &daemon,
            "nightshift_webhook_requests_total{outcome=\"unsupported_media_type\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &daemon,
            "nightshift_webhook_requests_total{outcome=\"payload_too_large\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &daemon,
            "nightshift_webhook_rejected_total{reason=\"invalid_field\"}"
        ),
        4.0
    );
    // The seven invalid bodies are kept for forensics (the default keeps 100).
    let kept = wait_for(Duration::from_secs(5), || {
        let n = std::fs::read_dir(daemon.state_dir().join("rejected"))
            .ok()?
            .count();
        (n == 7).then_some(n)
    });
    assert_eq!(kept, Some(7));
}

#[test]
fn a_body_over_the_limit_without_content_length_is_refused() {
    let daemon = Daemon::start("[server]\nmax_body_bytes = 1000\n");
    // Chunked: the limit is enforced while reading, not only from Content-Length.
    use std::io::Write;
    let address = daemon.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let chunk = vec![b' '; 4000];
    let token = daemon.generated_token("ingest").unwrap();
    write!(stream, "POST /webhook HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n", chunk.len()).unwrap();
    let _ = stream.write_all(&chunk);
    let _ = stream.write_all(b"\r\n0\r\n\r\n");
    let response = http_client::read_response(&mut stream);
    assert_eq!(response.status, 413, "{}", response.body);
    assert_eq!(stored_notifications(&daemon), 0);
}

#[test]
fn accepted_webhooks_become_incidents_readable_by_api_and_cli() {
    let daemon = Daemon::start("");
    let response = post_webhook(&daemon, None, &fixture("group-partially-resolved.json"));
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["status"], "stored");
    let incidents = wait_for(Duration::from_secs(10), || {
        let response = client().get(&format!("{}/api/v1/incidents", daemon.base), &[]);
        let list = response.json()["incidents"].as_array().cloned()?;
        (list.len() == 4).then_some(list)
    })
    .expect("four incidents");
    let firing: Vec<&serde_json::Value> = incidents
        .iter()
        .filter(|i| i["status"] == "firing")
        .collect();
    assert_eq!(firing.len(), 3);
    let id = "e6e2702b100d42ed-20261128T123055.349673924Z";
    let detail = client()
        .get(&format!("{}/api/v1/incidents/{id}", daemon.base), &[])
        .json();
    assert_eq!(detail["status"], "firing");
    assert_eq!(detail["labels"]["instance"], "node-1");
    assert_eq!(detail["transitions"][0]["kind"], "opened");
    let filtered = client()
        .get(
            &format!("{}/api/v1/incidents?status=resolved", daemon.base),
            &[],
        )
        .json();
    assert_eq!(filtered["incidents"].as_array().unwrap().len(), 1);
    assert_eq!(
        client()
            .get(
                &format!("{}/api/v1/incidents?status=bogus", daemon.base),
                &[]
            )
            .status,
        400
    );
    assert_eq!(
        client()
            .get(&format!("{}/api/v1/incidents/nope", daemon.base), &[])
            .status,
        404
    );

    let list = daemon.cli(&["incidents", "list", "--status", "firing"]);
    assert!(list.status.success(), "{list:?}");
    let text = String::from_utf8_lossy(&list.stdout);
    assert_eq!(text.lines().count(), 4, "header and three firing:\n{text}");
    assert!(text.contains(id));
    let json = daemon.cli(&["incidents", "list", "--json"]);
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(parsed.as_array().unwrap().len(), 4);
    let show = daemon.cli(&["incidents", "show", id, "--json"]);
    let parsed: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(parsed["id"], id);
    let missing = daemon.cli(&["incidents", "show", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no incident nope"));
}

#[test]
fn duplicate_out_of_order_and_vanished_snapshots() {
    let daemon = Daemon::start("[reconcile]\ngone_grace = \"1s\"\n");
    let send = |alerts: &[(&str, &str, &str, &str)]| {
        let response = post_webhook(&daemon, None, &webhook("Vast", alerts, 0));
        assert_eq!(response.status, 200, "{}", response.body);
    };
    let t0 = "2026-11-28T03:00:00Z";
    let firing = [("Vast", "a", "firing", t0), ("Vast", "b", "firing", t0)];
    // The same snapshot three times (retries, HA peers): opened once each.
    for _ in 0..3 {
        send(&firing);
    }
    // a resolves; then the older firing snapshot arrives late: a stays resolved.
    send(&[("Vast", "a", "resolved", t0), ("Vast", "b", "firing", t0)]);
    send(&firing);
    // After the grace window, a complete snapshot without b: b is gone.
    std::thread::sleep(Duration::from_millis(1300));
    send(&[("Vast", "c", "firing", t0)]);
    let statuses = wait_for(Duration::from_secs(10), || {
        let list = client()
            .get(&format!("{}/api/v1/incidents", daemon.base), &[])
            .json();
        let mut statuses: Vec<(String, String)> = list["incidents"]
            .as_array()?
            .iter()
            .map(|i| {
                (
                    i["labels"]["instance"].as_str().unwrap().to_owned(),
                    i["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        statuses.sort();
        (statuses.len() == 3).then_some(statuses)
    })
    .expect("three incidents");
    let expected: Vec<(String, String)> = [("a", "resolved"), ("b", "gone"), ("c", "firing")]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    assert_eq!(statuses, expected);
    assert_eq!(
        metric(
            &daemon,
            "nightshift_episode_transitions_total{kind=\"opened\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(
            &daemon,
            "nightshift_episode_transitions_total{kind=\"resolved\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &daemon,
            "nightshift_episode_transitions_total{kind=\"gone\"}"
        ),
        1.0
    );
    assert!(metric(&daemon, "nightshift_reconcile_stale_alerts_total") >= 1.0);
}

/// One annotation of 1 MiB beside a P1 alert in the same notification: answered 200 (a 4xx
/// would make Alertmanager drop the whole group, the P1 with it), both alerts become
/// incidents, and the big value is cut to 16 KiB with a marker, counted, and logged by name,
/// never by value.
#[test]
fn an_oversized_value_is_truncated_and_its_notification_accepted() {
    let daemon = daemon_with_credentials();
    let huge = "y".repeat(1 << 20);
    let alert = |name: &str, severity: &str, annotations: serde_json::Value| {
        serde_json::json!({
            "status": "firing",
            "labels": {"alertname": name, "instance": "gpu-7", "severity": severity},
            "annotations": annotations,
            "startsAt": "2026-11-28T03:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.invalid/graph",
            "fingerprint": "",
        })
    };
    let body = serde_json::json!({
        "version": "4",
        "status": "firing",
        "receiver": "nightshift",
        "groupKey": "{}:{instance=\"gpu-7\"}",
        "groupLabels": {"instance": "gpu-7"},
        "externalURL": "http://alertmanager.invalid",
        "truncatedAlerts": 0,
        "alerts": [
            alert("KernelLogDump", "warning", serde_json::json!({"description": huge, "summary": "dmesg"})),
            alert("GpuHostDown", "critical", serde_json::json!({"summary": "gpu-7 is down"})),
        ],
    })
    .to_string();
    let response = post_webhook(&daemon, Some(INGEST), &body);
    assert_eq!(response.status, 200, "{}", response.body);

    let read = [("Authorization", READ)];
    let incidents = wait_for(Duration::from_secs(10), || {
        let list = client()
            .get(&format!("{}/api/v1/incidents", daemon.base), &read)
            .json();
        let list = list["incidents"].as_array()?.clone();
        (list.len() == 2).then_some(list)
    })
    .expect("both alerts become incidents");
    let detail = |name: &str| {
        let id = incidents
            .iter()
            .find(|incident| incident["labels"]["alertname"] == name)
            .and_then(|incident| incident["id"].as_str())
            .unwrap_or_else(|| panic!("no incident for {name}: {incidents:?}"));
        let response = client().get(&format!("{}/api/v1/incidents/{id}", daemon.base), &read);
        assert_eq!(response.status, 200, "{}", response.body);
        response.json()
    };
    let dump = detail("KernelLogDump");
    let description = dump["annotations"]["description"].as_str().unwrap();
    let marker = "…[truncated: 1048576 bytes]";
    assert!(description.len() <= 16 * 1024, "{}", description.len());
    assert!(
        description.ends_with(marker),
        "{}",
        &description[description.len() - 60..]
    );
    assert!(description.starts_with(&"y".repeat(1000)));
    assert_eq!(dump["annotations"]["summary"], "dmesg");
    let p1 = detail("GpuHostDown");
    assert_eq!(p1["labels"]["severity"], "critical");
    assert_eq!(p1["annotations"]["summary"], "gpu-7 is down");

    let metrics = client()
        .get(&format!("{}/metrics", daemon.base), &read)
        .body;
    assert!(
        metrics
            .lines()
            .any(|line| line == "nightshift_webhook_values_truncated_total{kind=\"annotation\"} 1"),
        "{metrics}"
    );
    let log = daemon.log();
    let warning = log
        .lines()
        .find(|line| line.contains("truncated") && line.contains("KernelLogDump"))
        .unwrap_or_else(|| panic!("a warning names the alert:\n{log}"));
    assert!(warning.contains("description"), "{warning}");
    assert!(!log.contains(&"y".repeat(100)), "the value is never logged");
}

/// One line of an `strace -f` log: the thread, and the rest.
fn traced(line: &str) -> Option<(&str, &str)> {
    line.split_once(' ')
        .map(|(thread, call)| (thread, call.trim_start()))
}

/// Whether `call` is a call of one of `names`, whole (`recvfrom(…`) or resumed after strace
/// split it between threads (`<... recvfrom resumed>…`): the resumed half carries the data.
fn is_call(call: &str, names: &[&str]) -> bool {
    names.iter().any(|name| {
        call.starts_with(&format!("{name}(")) || call.starts_with(&format!("<... {name} resumed>"))
    })
}

/// Whether `call` is a synchronisation (fsync or fdatasync) of the store's write-ahead log.
fn syncs_the_wal(call: &str) -> bool {
    (call.starts_with("fsync(") || call.starts_with("fdatasync("))
        && call.contains("nightshift.db-wal>")
}

/// The webhook's 200 leaves only after the write-ahead log holding it reached the disk: the
/// daemon runs under strace, which logs every fsync/fdatasync and every read and write of the
/// daemon's threads in the order the kernel saw them, and between the read of the POST and
/// the write of `HTTP/1.1 200` there must be a completed sync of `nightshift.db-wal`. Observed,
/// not inferred from the PRAGMAs the store sets.
#[test]
fn a_webhook_is_answered_200_only_after_its_write_ahead_log_is_synced() {
    let version = std::process::Command::new("strace").arg("-V").output();
    assert!(
        version.is_ok_and(|output| output.status.success()),
        "no strace (Debian package strace; scripts/test.sh installs it)"
    );
    let mut daemon = Daemon::prepare("", &[]);
    let trace = daemon.path("strace.log");
    daemon.wrapper = [
        "strace",
        "-f",
        "-qq",
        "-yy",
        "-s",
        "48",
        "-e",
        "trace=fsync,fdatasync,read,recvfrom,recvmsg,write,writev,sendto,sendmsg",
        "-o",
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .chain([trace.display().to_string()])
    .collect();
    daemon.spawn();
    let body = webhook(
        "Durable",
        &[("Durable", "d-1", "firing", "2026-11-28T03:00:00Z")],
        0,
    );
    let response = client().post(
        &format!("{}/webhook", daemon.base),
        &[JSON],
        body.as_bytes(),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    // Stop the daemon (strace follows it out and flushes its log).
    let pid = daemon.wrapped_pid().expect("the daemon under strace");
    // SAFETY: signalling our own child's child, the daemon.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let exited = wait_for(Duration::from_secs(20), || daemon.try_wait());
    assert!(exited.is_some(), "strace did not exit:\n{}", daemon.log());
    let log = std::fs::read_to_string(&trace).expect("strace's log");
    let lines: Vec<&str> = log.lines().collect();

    let request = lines
        .iter()
        .position(|line| {
            traced(line).is_some_and(|(_, call)| {
                is_call(call, &["read", "recvfrom", "recvmsg"]) && call.contains("\"POST /webhook")
            })
        })
        .unwrap_or_else(|| panic!("the POST was never read:\n{log}"));
    let answer = lines
        .iter()
        .enumerate()
        .skip(request)
        .find(|(_, line)| {
            traced(line).is_some_and(|(_, call)| {
                is_call(call, &["write", "writev", "sendto", "sendmsg"])
                    && call.contains("HTTP/1.1 200")
            })
        })
        .map(|(index, _)| index)
        .unwrap_or_else(|| panic!("the 200 was never written:\n{log}"));
    // Syncs of the WAL that completed between the two: a sync is complete on its own line
    // (`fdatasync(7</…/nightshift.db-wal>) = 0`) or where strace resumes it for its thread.
    let mut pending: Vec<&str> = Vec::new();
    let mut synced = 0;
    for line in &lines[request..answer] {
        let Some((thread, call)) = traced(line) else {
            continue;
        };
        if syncs_the_wal(call) {
            if call.ends_with("<unfinished ...>") {
                pending.push(thread);
            } else if call.ends_with("= 0") {
                synced += 1;
            }
        } else if (call.starts_with("<... fsync resumed>")
            || call.starts_with("<... fdatasync resumed>"))
            && call.ends_with("= 0")
            && let Some(index) = pending.iter().position(|t| *t == thread)
        {
            pending.remove(index);
            synced += 1;
        }
    }
    assert!(
        synced >= 1,
        "the 200 (line {answer}) was written with no completed sync of the WAL since the \
         POST was read (line {request}):\n{}",
        lines[request..=answer].join("\n")
    );
    // The notification is in the store that was synced.
    let mut daemon = daemon;
    daemon.wrapper.clear();
    daemon.spawn();
    assert_eq!(stored_notifications(&daemon), 1);
}
