//! The local action kinds, `exec` and `http`, run for real: commands on this machine and
//! requests to a fake web server on 127.0.0.1. Label values crafted as injections must stay
//! data: never shell code, never options, never other paths or hosts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use nightshift::act::actions::Outcome;
use nightshift::act::actions::exec::{self, ExecRequest};
use nightshift::act::actions::http::{self, HttpActionRequest};
use serde_json::{Value, json};

use crate::fakes;

use crate::fakes::web::FakeWeb;

const INJECTIONS: [&str; 6] = [
    "$(reboot)",
    "; rm -rf /",
    "`id`",
    "--kubeconfig=/x",
    "../../etc",
    "{{ 7*7 }}",
];

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn context(labels: &BTreeMap<String, String>) -> Value {
    json!({
        "labels": labels,
        "annotations": {},
        "rule": "vastai",
        "severity": "critical",
        "incident_id": "inc-1",
    })
}

fn request(argv: Vec<String>) -> ExecRequest {
    ExecRequest {
        argv,
        env: Vec::new(),
        timeout: Duration::from_secs(10),
        max_output_bytes: 64 * 1024,
    }
}

fn done(outcome: Outcome) -> Value {
    match outcome {
        Outcome::Done { detail } => detail,
        other => panic!("expected Done, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------- exec

#[tokio::test]
async fn exec_runs_echo_with_rendered_arguments() {
    let labels = labels(&[("alertname", "VastaiDown"), ("namespace", "vastai")]);
    let argv = exec::render_argv(
        &strings(&[
            "/bin/echo",
            "alert={{ labels.alertname }}",
            "{{ labels.namespace }}",
            "{{ incident_id }}",
        ]),
        &context(&labels),
        false,
    )
    .unwrap();
    assert_eq!(
        argv,
        strings(&["/bin/echo", "alert=VastaiDown", "vastai", "inc-1"])
    );
    let detail = done(exec::run(&request(argv)).await);
    assert_eq!(detail["exit_code"], 0);
    assert_eq!(detail["stdout"], "alert=VastaiDown vastai inc-1\n");
    assert_eq!(detail["stderr"], "");
    assert_eq!(detail["truncated"], false);
    assert!(detail["duration_ms"].is_u64());
}

#[tokio::test]
async fn exec_environment_is_cleared_and_names_never_come_from_labels() {
    let labels = labels(&[
        ("alertname", "A"),
        ("evil;$(id)", "$(reboot)"),
        ("HOME", "/root"),
        ("ld-preload", "/tmp/x.so"),
    ]);
    let env = exec::incident_env("inc-1", "vastai", "critical", &labels);
    let mut request = request(strings(&["/usr/bin/env"]));
    request.env = env.clone();
    let detail = done(exec::run(&request).await);
    let seen: BTreeSet<String> = detail["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let expected: BTreeSet<String> = [
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        "NIGHTSHIFT_INCIDENT_ID=inc-1",
        "NIGHTSHIFT_RULE=vastai",
        "NIGHTSHIFT_SEVERITY=critical",
        "NIGHTSHIFT_LABEL_ALERTNAME=A",
        "NIGHTSHIFT_LABEL_EVIL___ID_=$(reboot)",
        "NIGHTSHIFT_LABEL_HOME=/root",
        "NIGHTSHIFT_LABEL_LD_PRELOAD=/tmp/x.so",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(seen, expected);
    // Whatever the test process has (HOME, NOTIFY_SOCKET, CARGO_*, …) did not leak.
    for name in ["HOME", "NOTIFY_SOCKET", "USER", "LD_PRELOAD", "RUST_LOG"] {
        assert!(
            !seen
                .iter()
                .any(|line| line.starts_with(&format!("{name}="))),
            "{name} leaked into {seen:?}"
        );
    }
    if std::env::var_os("HOME").is_some() {
        assert!(!seen.iter().any(|line| line.starts_with("HOME=")));
    }
}

#[tokio::test]
async fn exec_injections_stay_single_literal_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let shell_probe = format!("$(touch {0}) `touch {0}`; touch {0}", marker.display());
    let mut pairs: Vec<(String, String)> = INJECTIONS
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("v{i}"), (*v).to_owned()))
        .collect();
    pairs.push(("probe".to_owned(), shell_probe.clone()));
    let labels: BTreeMap<String, String> = pairs.into_iter().collect();
    let context = context(&labels);

    // printf's format is literal in the rule; each argument is printed between brackets on
    // its own line, so a split or an expansion would show.
    let mut templates = strings(&["/usr/bin/printf", "[%s]\n"]);
    for i in 0..INJECTIONS.len() {
        templates.push(format!("{{{{ labels.v{i} }}}}"));
    }
    templates.push("{{ labels.probe }}".to_owned());
    templates.push("x={{ labels.v5 }}".to_owned());

    // `--kubeconfig=/x` comes from a template: refused unless the rule allows it.
    let error = exec::render_argv(&templates, &context, false).unwrap_err();
    assert!(error.contains("argv[5]"), "{error}");
    assert!(error.contains("allow_leading_dash"), "{error}");

    let argv = exec::render_argv(&templates, &context, true).unwrap();
    let mut expected = strings(&["/usr/bin/printf", "[%s]\n"]);
    expected.extend(strings(&INJECTIONS));
    expected.push(shell_probe.clone());
    expected.push("x={{ 7*7 }}".to_owned());
    assert_eq!(
        argv, expected,
        "one element per template, label text verbatim"
    );
    assert!(
        !argv.iter().any(|a| a.contains("49")),
        "{{{{ 7*7 }}}} evaluated"
    );

    let detail = done(exec::run(&request(argv)).await);
    let printed: Vec<&str> = detail["stdout"].as_str().unwrap().lines().collect();
    let mut wanted: Vec<String> = INJECTIONS.iter().map(|v| format!("[{v}]")).collect();
    wanted.push(format!("[{shell_probe}]"));
    wanted.push("[x={{ 7*7 }}]".to_owned());
    assert_eq!(printed, wanted);
    assert!(!marker.exists(), "a shell ran the label text");

    // Without allow_leading_dash, a template-made dash is refused even after a literal `-`,
    // while dashes written in the rule file pass.
    let labels = self::labels(&[("k", "-kubeconfig=/x"), ("n", "vastai")]);
    let context = self::context(&labels);
    assert!(
        exec::render_argv(
            &strings(&["/usr/bin/kubectl", "-{{ labels.k }}"]),
            &context,
            false
        )
        .is_err()
    );
    assert_eq!(
        exec::render_argv(
            &strings(&[
                "/usr/bin/kubectl",
                "--namespace={{ labels.n }}",
                "-n",
                "{{ labels.n }}"
            ]),
            &context,
            false
        )
        .unwrap(),
        strings(&["/usr/bin/kubectl", "--namespace=vastai", "-n", "vastai"])
    );
}

#[tokio::test]
async fn exec_program_is_literal_and_absolute() {
    let labels = labels(&[("cmd", "/bin/sh")]);
    let context = context(&labels);
    for templates in [
        strings(&["{{ labels.cmd }}", "-c", "id"]),
        strings(&["sh", "-c", "id"]),
        strings(&[]),
    ] {
        assert!(
            exec::render_argv(&templates, &context, true).is_err(),
            "{templates:?}"
        );
    }
}

/// Whether a process is gone (or a zombie nobody has reaped yet: it runs no more code).
fn is_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            state.starts_with('Z') || state.starts_with('X')
        }
    }
}

#[tokio::test]
async fn exec_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let script = format!(
        "sleep 30 & echo $! > {0}.tmp; echo $$ >> {0}.tmp; mv {0}.tmp {0}; sleep 30",
        pids.display()
    );
    let argv = exec::render_argv(&strings(&["/bin/sh", "-c", &script]), &json!({}), false).unwrap();
    let mut request = request(argv);
    request.timeout = Duration::from_secs(1);
    let started = Instant::now();
    let outcome = exec::run(&request).await;
    let elapsed = started.elapsed();
    match &outcome {
        Outcome::Unknown { error } => {
            assert!(error.contains("timed out after 1s"), "{error}");
            assert!(error.contains("killed its process group"), "{error}");
        }
        other => panic!("expected Unknown, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");

    let text = std::fs::read_to_string(&pids).expect("the script wrote its pids");
    let pids: Vec<i32> = text.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(pids.len(), 2, "{text}");
    let gone = fakes::until(Duration::from_secs(3), || {
        pids.iter().all(|&pid| is_gone(pid))
    })
    .await;
    assert!(
        gone,
        "still running: grandchild {} shell {}",
        pids[0], pids[1]
    );
}

#[tokio::test]
async fn exec_cancelled_run_kills_the_whole_process_group() {
    // The worker may drop the action's future (shutdown); the group must not outlive it.
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let script = format!(
        "sleep 30 & echo $! > {0}.tmp; echo $$ >> {0}.tmp; mv {0}.tmp {0}; sleep 30",
        pids.display()
    );
    let mut request = request(strings(&["/bin/sh", "-c", &script]));
    request.timeout = Duration::from_secs(60);
    let cancelled = tokio::time::timeout(Duration::from_secs(1), exec::run(&request)).await;
    assert!(cancelled.is_err(), "{cancelled:?}");
    let text = std::fs::read_to_string(&pids).expect("the script wrote its pids");
    let pids: Vec<i32> = text.lines().map(|l| l.trim().parse().unwrap()).collect();
    let gone = fakes::until(Duration::from_secs(3), || {
        pids.iter().all(|&pid| is_gone(pid))
    })
    .await;
    assert!(gone, "still running: {pids:?}");
}

#[tokio::test]
async fn exec_output_is_bounded_and_truncation_reported() {
    // A megabyte on stdout (far more than a pipe holds) must not block the command.
    let mut request = request(strings(&[
        "/bin/sh",
        "-c",
        "head -c 1000000 /dev/zero | tr '\\000' a; echo short >&2",
    ]));
    request.max_output_bytes = 100;
    let detail = done(exec::run(&request).await);
    assert_eq!(detail["stdout"], "a".repeat(100));
    assert_eq!(detail["stderr"], "short\n");
    assert_eq!(detail["truncated"], true);

    let mut request = self::request(strings(&["/bin/echo", "fits"]));
    request.max_output_bytes = 5;
    let detail = done(exec::run(&request).await);
    assert_eq!(detail["stdout"], "fits\n");
    assert_eq!(detail["truncated"], false);
}

#[tokio::test]
async fn exec_non_zero_exit_fails() {
    let outcome = exec::run(&request(strings(&[
        "/bin/sh",
        "-c",
        "echo; echo 'boom: disk full' >&2; echo more >&2; exit 3",
    ])))
    .await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            error: "exit code 3: boom: disk full".to_owned()
        }
    );
    let outcome = exec::run(&request(strings(&["/bin/sh", "-c", "exit 1"]))).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            error: "exit code 1".to_owned()
        }
    );
}

#[tokio::test]
async fn exec_program_that_cannot_start_is_not_applied() {
    let outcome = exec::run(&request(strings(&["/nonexistent/nightshift-test-tool"]))).await;
    match outcome {
        Outcome::NotApplied { error, retryable } => {
            assert!(!retryable);
            assert!(
                error.contains("/nonexistent/nightshift-test-tool"),
                "{error}"
            );
        }
        other => panic!("expected NotApplied, got {other:?}"),
    }
    // Not executable (EACCES, even for root: no execute bit at all).
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("tool");
    std::fs::write(&script, "#!/bin/sh\necho ran\n").unwrap();
    let outcome = exec::run(&request(vec![script.display().to_string()])).await;
    assert!(
        matches!(
            outcome,
            Outcome::NotApplied {
                retryable: false,
                ..
            }
        ),
        "{outcome:?}"
    );
}

// ---------------------------------------------------------------------------------- http

const BASE: &str = "https://hooks.example.com";

#[test]
fn http_render_url_encodes_injections_and_keeps_the_host() {
    let template = "https://hooks.example.com/v1/services/{{ labels.service }}/restart?reason={{ labels.reason }}&by=nightshift#{{ labels.frag }}";
    for (value, expected) in [
        (
            "../../etc",
            "https://hooks.example.com/v1/services/..%2F..%2Fetc/restart?reason=..%2F..%2Fetc&by=nightshift#..%2F..%2Fetc",
        ),
        (
            "x?y=1&z=2#",
            "https://hooks.example.com/v1/services/x%3Fy%3D1%26z%3D2%23/restart?reason=x%3Fy%3D1%26z%3D2%23&by=nightshift#x%3Fy%3D1%26z%3D2%23",
        ),
        (
            "@evil.com/",
            "https://hooks.example.com/v1/services/%40evil.com%2F/restart?reason=%40evil.com%2F&by=nightshift#%40evil.com%2F",
        ),
        (
            "%2e%2e",
            "https://hooks.example.com/v1/services/%252e%252e/restart?reason=%252e%252e&by=nightshift#%252e%252e",
        ),
        (
            "$(reboot); rm -rf /",
            "https://hooks.example.com/v1/services/%24%28reboot%29%3B%20rm%20-rf%20%2F/restart?reason=%24%28reboot%29%3B%20rm%20-rf%20%2F&by=nightshift#%24%28reboot%29%3B%20rm%20-rf%20%2F",
        ),
        (
            "{{ 7*7 }}",
            "https://hooks.example.com/v1/services/%7B%7B%207%2A7%20%7D%7D/restart?reason=%7B%7B%207%2A7%20%7D%7D&by=nightshift#%7B%7B%207%2A7%20%7D%7D",
        ),
        (
            "\\\\evil.com\r\nHost: x",
            "https://hooks.example.com/v1/services/%5C%5Cevil.com%0D%0AHost%3A%20x/restart?reason=%5C%5Cevil.com%0D%0AHost%3A%20x&by=nightshift#%5C%5Cevil.com%0D%0AHost%3A%20x",
        ),
    ] {
        let labels = labels(&[("service", value), ("reason", value), ("frag", value)]);
        let url = http::render_url(template, &context(&labels)).unwrap();
        assert_eq!(url.as_str(), expected, "{value}");
        assert_eq!(url.host_str(), Some("hooks.example.com"));
        assert_eq!(url.path_segments().unwrap().count(), 4, "{value}");
        let params: Vec<_> = url.query_pairs().collect();
        assert_eq!(params.len(), 2, "{value}");
        assert_eq!(
            params[0].1, value,
            "the query decodes back to the label text"
        );
    }
}

#[test]
fn http_render_url_refuses_a_moved_host_or_dot_segments() {
    let labels = labels(&[("host", "evil.com"), ("dots", ".."), ("dot", ".")]);
    let context = context(&labels);
    for template in [
        "https://{{ labels.host }}/x",
        "https://hooks.example.com{{ labels.host }}/x",
        "https://hooks.example.com.{{ labels.host }}/x",
        "https://hooks.example.com:{{ labels.host }}/x",
        "https://user@{{ labels.host }}/x",
        "{{ labels.host }}://hooks.example.com/x",
        "http://hooks.example.com/a/{{ labels.dots }}/b",
        "http://hooks.example.com/a/{{ labels.dot }}/b",
        "file:///etc/passwd",
    ] {
        let error = http::render_url(template, &context).unwrap_err();
        assert!(!error.is_empty(), "{template}");
    }
    // A label that would be a dot segment alone is fine inside a larger segment.
    let url = http::render_url(&format!("{BASE}/a/v{{{{ labels.dots }}}}/b"), &context).unwrap();
    assert_eq!(url.as_str(), "https://hooks.example.com/a/v../b");
}

fn action(url: &str) -> HttpActionRequest {
    HttpActionRequest {
        method: "POST".to_owned(),
        url: reqwest::Url::parse(url).unwrap(),
        headers: Vec::new(),
        body: String::new(),
        expect_status: Vec::new(),
        timeout: Duration::from_secs(5),
    }
}

fn client() -> reqwest::Client {
    fakes::init();
    http::client().unwrap()
}

#[tokio::test]
async fn http_sends_the_rendered_request_and_reports_done() {
    let web = FakeWeb::start("/v1/services/..%2F..%2Fetc/restart").await;
    web.reply(
        201,
        &[("content-type", "application/json")],
        r#"{"ok":true}"#,
    );
    let labels = labels(&[("service", "../../etc"), ("reason", "x?y=1&z=2#")]);
    let template = web.url().replace("/v1/services/..%2F..%2Fetc/restart", "")
        + "/v1/services/{{ labels.service }}/restart?reason={{ labels.reason }}";
    let url = http::render_url(&template, &context(&labels)).unwrap();
    let mut request = action(url.as_str());
    request.method = "PUT".to_owned();
    request.headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("x-nightshift-incident".to_owned(), "inc-1".to_owned()),
    ];
    request.body = r#"{"service":"../../etc"}"#.to_owned();
    request.expect_status = vec![201];

    let detail = done(http::run(&client(), &request).await);
    assert_eq!(detail, json!({"status": 201, "body": r#"{"ok":true}"#}));

    web.journal.assert_no_unexpected();
    let sent = web.journal.requests();
    assert_eq!(sent.len(), 1);
    let sent = &sent[0];
    assert_eq!(sent.method, "PUT");
    assert_eq!(sent.path, "/v1/services/..%2F..%2Fetc/restart");
    assert_eq!(sent.query, "reason=x%3Fy%3D1%26z%3D2%23");
    assert_eq!(sent.query_param("reason").as_deref(), Some("x?y=1&z=2#"));
    assert_eq!(sent.header("content-type"), "application/json");
    assert_eq!(sent.header("x-nightshift-incident"), "inc-1");
    assert_eq!(sent.body, br#"{"service":"../../etc"}"#);
}

#[tokio::test]
async fn http_status_decides_the_outcome() {
    let web = FakeWeb::start("/hook").await;
    let client = client();
    let request = action(&web.url());

    for (status, retryable) in [(429, true), (409, true)] {
        web.reply(status, &[], "slow down");
        match http::run(&client, &request).await {
            Outcome::NotApplied {
                error,
                retryable: r,
            } => {
                assert_eq!(r, retryable);
                assert!(error.contains(&status.to_string()), "{error}");
                assert!(error.contains("slow down"), "{error}");
            }
            other => panic!("{status}: expected NotApplied, got {other:?}"),
        }
    }
    for status in [400, 403, 404] {
        web.reply(status, &[], "no such hook");
        let outcome = http::run(&client, &request).await;
        assert!(
            matches!(&outcome, Outcome::Failed { error } if error.contains(&status.to_string())),
            "{status}: {outcome:?}"
        );
    }
    for status in [500, 502, 503] {
        web.reply(status, &[], "");
        let outcome = http::run(&client, &request).await;
        assert!(
            matches!(&outcome, Outcome::Unknown { error } if error.contains(&status.to_string())),
            "{status}: {outcome:?}"
        );
    }
    // Any 2xx when nothing is expected; only the listed codes otherwise.
    web.reply(204, &[], "");
    assert_eq!(
        http::run(&client, &request).await,
        Outcome::Done {
            detail: json!({"status": 204, "body": ""})
        }
    );
    let mut strict = request.clone();
    strict.expect_status = vec![202];
    assert_eq!(http::run(&client, &strict).await.label(), "unknown");
    // A listed 404 (deleting what is already gone) is done.
    strict.expect_status = vec![202, 404];
    web.reply(404, &[], "gone");
    assert_eq!(http::run(&client, &strict).await.label(), "done");

    // The body is kept up to 4 KiB.
    web.reply(200, &[], vec![b'x'; 10_000]);
    let detail = done(http::run(&client, &request).await);
    assert_eq!(detail["body"].as_str().unwrap().len(), 4096);
    web.journal.assert_no_unexpected();
}

#[tokio::test]
async fn http_redirects_are_not_followed() {
    let web = FakeWeb::start("/hook").await;
    let elsewhere = FakeWeb::start("/elsewhere").await;
    web.reply(307, &[("location", &elsewhere.url())], "");
    let outcome = http::run(&client(), &action(&web.url())).await;
    assert_eq!(outcome.label(), "unknown", "{outcome:?}");
    assert_eq!(elsewhere.journal.count(), 0, "followed a redirect");
}

#[tokio::test]
async fn http_slow_server_is_unknown() {
    let web = FakeWeb::start("/hook").await;
    web.set_delay(Duration::from_secs(5));
    let mut request = action(&web.url());
    request.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let outcome = http::run(&client(), &request).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    match outcome {
        Outcome::Unknown { error } => assert!(error.contains("300ms"), "{error}"),
        other => panic!("expected Unknown, got {other:?}"),
    }
    assert_eq!(web.journal.count(), 1, "the request did reach the server");
}

#[tokio::test]
async fn http_closed_port_is_not_applied() {
    let request = action(&format!("{}/hook", fakes::dead_url()));
    match http::run(&client(), &request).await {
        Outcome::NotApplied { error, retryable } => {
            assert!(retryable);
            assert!(error.contains("connect"), "{error}");
        }
        other => panic!("expected NotApplied, got {other:?}"),
    }
}

#[tokio::test]
async fn http_header_injection_is_refused_before_sending() {
    let web = FakeWeb::start("/hook").await;
    let mut request = action(&web.url());
    request.headers = vec![("x-reason".to_owned(), "a\r\nHost: evil.com".to_owned())];
    let outcome = http::run(&client(), &request).await;
    assert_eq!(outcome.label(), "failed", "{outcome:?}");
    assert_eq!(web.journal.count(), 0);
}

#[tokio::test]
async fn exec_background_child_holding_the_output_does_not_hang_the_action() {
    // The command exits at once but leaves a child holding its stdout: the exit code
    // decides, output is given up on after a short grace and marked truncated.
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!("sleep 20 & echo $! > {}; echo started", pid_file.display());
    let started = Instant::now();
    let detail = done(exec::run(&request(strings(&["/bin/sh", "-c", &script]))).await);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(detail["stdout"], "started\n");
    assert_eq!(detail["truncated"], true);
    // Clean up the child the test started.
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) on the pid of the test's own grandchild.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}
