//! The daemon's life: crash and restart, graceful stop, systemd notify, reload, metrics,
//! `check`, TLS and connection bounds.

use crate::common::*;

use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn open_db(daemon: &Daemon) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        daemon.state_dir().join("nightshift.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap()
}

#[test]
fn kill_9_after_a_burst_loses_no_acknowledged_notification() {
    let mut daemon = Daemon::start("");
    let base = daemon.base.clone();
    // 8 senders x 40 webhooks, each with its own alert, all in flight together.
    let acknowledged: Arc<Mutex<Vec<(i64, String)>>> = Arc::default();
    let threads: Vec<_> = (0..8)
        .map(|sender| {
            let base = base.clone();
            let acknowledged = acknowledged.clone();
            std::thread::spawn(move || {
                for n in 0..40 {
                    let instance = format!("s{sender}-n{n}");
                    let body = webhook(
                        &format!("Burst{sender}"),
                        &[("Burst", &instance, "firing", "2026-11-28T03:00:00Z")],
                        0,
                    );
                    let response =
                        client().post(&format!("{base}/webhook"), &[JSON], body.as_bytes());
                    if response.status == 200 {
                        let id = response.json()["notification"].as_i64().unwrap();
                        acknowledged.lock().unwrap().push((id, instance));
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    // No grace: SIGKILL right after the last acknowledgement.
    daemon.kill9();
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert_eq!(acknowledged.len(), 320, "every webhook was acknowledged");

    daemon.spawn();
    let connection = open_db(&daemon);
    for (id, _) in &acknowledged {
        let found: i64 = connection
            .query_row(
                "SELECT count(*) FROM notifications WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(found, 1, "acknowledged notification {id} is in the store");
    }
    // Reconcile resumes after the restart: every acknowledged alert has its episode.
    let instances = wait_for(Duration::from_secs(20), || {
        let list = client()
            .get(&format!("{}/api/v1/incidents?limit=1000", daemon.base), &[])
            .json();
        let instances: Vec<String> = list["incidents"]
            .as_array()?
            .iter()
            .map(|i| i["labels"]["instance"].as_str().unwrap().to_owned())
            .collect();
        (instances.len() >= acknowledged.len()).then_some(instances)
    })
    .expect("all episodes after restart");
    for (_, instance) in &acknowledged {
        assert!(instances.contains(instance), "episode for {instance}");
    }
    let opened: i64 = connection
        .query_row(
            "SELECT count(*) FROM transitions WHERE kind = 'opened'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        opened, 320,
        "each episode opened exactly once across the crash"
    );
}

#[test]
fn sigterm_stops_gracefully_and_systemd_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut daemon = Daemon::start_with_env(
        "",
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let receive = || {
        let mut buffer = [0u8; 512];
        let n = socket.recv(&mut buffer).expect("a notify datagram");
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    };
    let ready = receive();
    assert!(
        ready.starts_with("READY=1\nSTATUS=listening on http://127.0.0.1:"),
        "{ready}"
    );
    // The listener is bound when READY=1 arrives.
    assert_eq!(
        client().get(&format!("{}/readyz", daemon.base), &[]).status,
        200
    );
    // Watchdog pings come at half the interval while the store writer goes round.
    assert_eq!(receive(), "WATCHDOG=1");
    assert_eq!(receive(), "WATCHDOG=1");
    let status = daemon.terminate();
    assert!(status.success(), "{status:?}");
    let mut rest = Vec::new();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buffer = [0u8; 512];
    while let Ok(n) = socket.recv(&mut buffer) {
        rest.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
    }
    assert!(rest.iter().any(|m| m.starts_with("STOPPING=1")), "{rest:?}");
    assert!(daemon.log().contains("stopped cleanly"), "{}", daemon.log());
}

#[test]
fn reload_applies_new_credentials_and_keeps_running_state_on_a_broken_file() {
    let mut daemon = Daemon::prepare(
        "[auth]\ningest_token_file = \"{dir}/token\"\nadmin_token_file = \"{dir}/admin\"\n",
        &[],
    );
    daemon.write_file("token", "one\n");
    daemon.write_file("admin", "adm\n");
    daemon.spawn();
    let post = |token: &str| {
        let auth = format!("Bearer {token}");
        client()
            .post(
                &format!("{}/webhook", daemon.base),
                &[JSON, ("Authorization", &auth)],
                fixture("firing-single.json").as_bytes(),
            )
            .status
    };
    assert_eq!(post("one"), 200);
    // Rotate the token and reload over HTTP.
    daemon.write_file("token", "two\n");
    let reload = || {
        client().post(
            &format!("{}/-/reload", daemon.base),
            &[("Authorization", "Bearer adm")],
            b"",
        )
    };
    let response = reload();
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(post("one"), 401);
    assert_eq!(post("two"), 200);
    // A broken file: the reload is refused with the reason, the running state stays.
    let good = std::fs::read_to_string(&daemon.config).unwrap();
    std::fs::write(
        &daemon.config,
        format!("{good}\n[server]\nlisten = 5\nbogus = true\n"),
    )
    .unwrap();
    let response = reload();
    assert_eq!(response.status, 400);
    let errors = response.json()["errors"].as_array().unwrap().clone();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].as_str().unwrap().contains("nightshift.toml:"),
        "{errors:?}"
    );
    assert_eq!(post("two"), 200);
    // SIGHUP does the same.
    daemon.signal(libc::SIGHUP);
    let failures = wait_for(Duration::from_secs(5), || {
        let text = client().get(&format!("{}/metrics", daemon.base), &[]).body;
        text.contains("nightshift_config_reloads_total{outcome=\"failure\"} 2")
            .then_some(())
    });
    assert!(failures.is_some());
    assert!(
        daemon.log().contains("trigger=\"SIGHUP\""),
        "{}",
        daemon.log()
    );
    std::fs::write(&daemon.config, good).unwrap();
    daemon.signal(libc::SIGHUP);
    let ok = wait_for(Duration::from_secs(5), || {
        let text = client().get(&format!("{}/metrics", daemon.base), &[]).body;
        text.contains("nightshift_config_last_reload_successful 1")
            .then_some(())
    });
    assert!(ok.is_some());
    assert!(daemon.try_wait().is_none(), "still running");
}

#[test]
fn metrics_pass_promtool() {
    let daemon = Daemon::start("");
    client().post(
        &format!("{}/webhook", daemon.base),
        &[JSON],
        fixture("firing-group.json").as_bytes(),
    );
    client().post(&format!("{}/webhook", daemon.base), &[JSON], b"{");
    let text = client().get(&format!("{}/metrics", daemon.base), &[]).body;
    assert!(
        text.contains("nightshift_webhook_requests_total{outcome=\"accepted\"} 1"),
        "{text}"
    );
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; .ci/run installs it)");
    promtool
        .stdin
        .as_ref()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && complaints.trim().is_empty(),
        "promtool: {complaints}"
    );
}

#[test]
fn check_reports_every_error_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nlisten = \"0.0.0.0:9797\"\nmax_body_bytes = -1\n\n[auth]\nread_token_file = \"/nonexistent\"\nwhat = 1\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_nightshift"))
        .args(["check", "--config-only", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let shown = path.display().to_string();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("{shown}:3: server.max_body_bytes: invalid value")),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!("{shown}:7: auth.what: unknown field")),
        "{stderr}"
    );

    std::fs::write(&path, "[server]\nlisten = \"0.0.0.0:9797\"\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_nightshift"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(":2: server.listen: 0.0.0.0:9797 is not a loopback address and TLS is off"),
        "{stderr}"
    );

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/nightshift.toml");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_nightshift"))
        .args(["check", "--config-only", "--config", example])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn a_public_address_without_tls_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_nightshift"))
        .arg("run")
        .env("NIGHTSHIFT_SERVER__LISTEN", "0.0.0.0:0")
        .env("NIGHTSHIFT_STORE__DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("environment NIGHTSHIFT_SERVER__LISTEN: server.listen"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("nightshift.db").exists(),
        "nothing was created"
    );
}

#[test]
fn a_slow_client_is_cut_off_while_others_are_served() {
    let daemon =
        Daemon::start("[server]\nheader_read_timeout = \"1s\"\nbody_read_timeout = \"1s\"\n");
    let address = daemon.base.trim_start_matches("http://").to_owned();
    // Headers that never finish.
    let mut slow_headers = std::net::TcpStream::connect(&address).unwrap();
    slow_headers
        .write_all(b"POST /webhook HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // A body that never finishes, from a client with the credential.
    let token = daemon.generated_token("ingest").unwrap();
    let mut slow_body = std::net::TcpStream::connect(&address).unwrap();
    slow_body
        .write_all(format!("POST /webhook HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{").as_bytes())
        .unwrap();
    // Meanwhile other clients are served.
    assert_eq!(
        client()
            .get(&format!("{}/healthz", daemon.base), &[])
            .status,
        200
    );
    for stream in [&mut slow_headers, &mut slow_body] {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
    }
    let mut buffer = Vec::new();
    let _ = slow_headers.read_to_end(&mut buffer);
    let text = String::from_utf8_lossy(&buffer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    let response = http_client::read_response(&mut slow_body);
    assert_eq!(response.status, 408, "{}", response.body);
}

#[test]
fn tls_serves_webhooks_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = certified.cert.pem();
    std::fs::write(dir.path().join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(
        dir.path().join("key.pem"),
        certified.signing_key.serialize_pem(),
    )
    .unwrap();
    let root = dir.path().display();
    let daemon = Daemon::start(&format!(
        "[server]\ntls_cert_file = \"{root}/cert.pem\"\ntls_key_file = \"{root}/key.pem\"\n"
    ));
    assert!(
        daemon.base.starts_with("https://127.0.0.1:"),
        "{}",
        daemon.base
    );
    let address = daemon.base.trim_start_matches("https://").to_owned();

    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut cert_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(&address).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    let body = fixture("firing-single.json");
    let token = daemon.generated_token("ingest").unwrap();
    write!(tls, "POST /webhook HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");

    // Plain HTTP to the TLS port gets nothing useful.
    let mut plain = std::net::TcpStream::connect(&address).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let _ = plain.read_to_end(&mut raw);
    assert!(!String::from_utf8_lossy(&raw).contains("200 OK"));
}

#[test]
fn relative_paths_follow_the_config_file_and_missing_runbooks_are_loud() {
    // Under systemd the working directory is `/`: `[rules] dir = "rules"` must still mean the
    // rules beside the config file, and no rules at all must never pass as "0 rules OK".
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(etc.join("rules")).unwrap();
    let runbook = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/vastai.toml"),
    )
    .unwrap();
    // The runbook alone, without its test payloads: the daemon and check do not need them.
    std::fs::write(etc.join("rules/vastai.toml"), &runbook).unwrap();
    let config = etc.join("nightshift.toml");
    std::fs::write(&config, "[rules]\ndir = \"rules\"\n").unwrap();
    let check = |config: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_nightshift"))
            .args(["check", "--config"])
            .arg(config)
            .current_dir("/")
            .env_remove("NIGHTSHIFT_RULES__DIR")
            .output()
            .unwrap()
    };
    let output = check(&config);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout.contains(&format!("{}: ", etc.join("rules").display()))
            && !stdout.contains(" 0 rules"),
        "{stdout}"
    );
    // `nightshift test` still wants the payloads and says which one is missing.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_nightshift"))
        .args(["test", "--config"])
        .arg(&config)
        .current_dir("/")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("payloads/"),
        "{output:?}"
    );
    // A missing and an empty rules directory are errors for check.
    for rules in ["missing", "empty"] {
        if rules == "empty" {
            std::fs::create_dir_all(etc.join("empty")).unwrap();
        }
        let other = etc.join(format!("{rules}.toml"));
        std::fs::write(&other, format!("[rules]\ndir = \"{rules}\"\n")).unwrap();
        let output = check(&other);
        assert_eq!(output.status.code(), Some(1), "{rules}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&etc.join(rules).display().to_string()),
            "{rules}: {stderr}"
        );
        assert!(
            stderr.starts_with(&format!("{}:2: rules.dir: ", other.display())),
            "{rules}: {stderr}"
        );
    }
    // The daemon on an empty rules directory runs (webhooks are still accepted) but says so
    // loudly: ERROR in the log, the metric at 0, /readyz degraded yet 200.
    let mut daemon = Daemon::prepare("[rules]\ndir = \"{dir}/no-rules\"\n", &[]);
    std::fs::create_dir_all(daemon.path("no-rules")).unwrap();
    daemon.spawn();
    let ready = client().get(&format!("{}/readyz", daemon.base), &[]);
    assert_eq!(ready.status, 200);
    assert!(
        ready.body.starts_with("ready (degraded: "),
        "{}",
        ready.body
    );
    assert!(ready.body.contains("no rule file"), "{}", ready.body);
    let metrics = client().get(&format!("{}/metrics", daemon.base), &[]).body;
    assert!(
        metrics.contains("nightshift_rules_last_load_successful 0"),
        "{metrics}"
    );
    assert!(
        daemon
            .log()
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("no rule file")),
        "{}",
        daemon.log()
    );
}

#[test]
fn first_start_generates_credentials_and_nothing_is_open() {
    use std::os::unix::fs::PermissionsExt;
    // Modes are set explicitly: under the unit's UMask=0077 files would otherwise be 0600,
    // and under a lax umask credentials would be readable by all.
    let mut daemon = Daemon::prepare("", &[]);
    daemon.umask = Some(0o077);
    daemon.spawn();
    let mode = |path: std::path::PathBuf| {
        std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let credentials = daemon.state_dir().join("credentials");
    assert_eq!(mode(credentials.clone()), 0o700);
    let mut tokens = Vec::new();
    for role in ["ingest", "read", "admin"] {
        assert_eq!(mode(credentials.join(role)), 0o600, "{role}");
        let token = daemon.generated_token(role).unwrap();
        assert_eq!(token.len(), 64, "{role}: 32 random bytes, hex");
        tokens.push(token);
    }
    assert_eq!(mode(daemon.state_dir()), 0o750);
    assert_eq!(mode(daemon.state_dir().join("nightshift.db")), 0o640);
    let log = daemon.log();
    assert_eq!(log.matches("generated credentials").count(), 1, "{log}");
    assert!(log.contains(&credentials.join("ingest").display().to_string()));
    for token in &tokens {
        assert!(!log.contains(token.as_str()), "a token was logged");
    }

    // Nothing answers without its credential but the health checks (and /metrics by default).
    let url = |path: &str| format!("{}{path}", daemon.base);
    let none = ("Authorization", "");
    let body = fixture("firing-single.json");
    let post = client().post(&url("/webhook"), &[JSON, none], body.as_bytes());
    assert_eq!(post.status, 401, "{}", post.body);
    let read_with_ingest = format!("Bearer {}", tokens[0]);
    for (method, path) in [
        ("GET", "/api/v1/incidents"),
        ("GET", "/api/v1/report"),
        ("GET", "/api/v1/incidents/x/bundle"),
        ("POST", "/-/reload"),
        ("POST", "/-/pause"),
        ("POST", "/-/resume"),
    ] {
        let response = client().request(method, &url(path), &[none], b"");
        assert_eq!(response.status, 401, "{method} {path}");
        // One credential never opens another's endpoints.
        let response = client().request(
            method,
            &url(path),
            &[("Authorization", &read_with_ingest)],
            b"",
        );
        assert_eq!(
            response.status, 401,
            "{method} {path} with the ingest token"
        );
    }
    assert_eq!(client().get(&url("/healthz"), &[none]).status, 200);
    assert_eq!(client().get(&url("/metrics"), &[none]).status, 200);
    let ready = client().get(&url("/readyz"), &[none]);
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    // With its credential, each works.
    let post = client().post(&url("/webhook"), &[JSON], body.as_bytes());
    assert_eq!(post.status, 200, "{}", post.body);
    assert_eq!(client().get(&url("/api/v1/incidents"), &[]).status, 200);
    let post = client().post(&url("/webhook"), &[JSON], b"{");
    assert_eq!(post.status, 400, "{}", post.body);
    let rejected = wait_for(Duration::from_secs(10), || {
        std::fs::read_dir(daemon.state_dir().join("rejected"))
            .ok()?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| path.extension().is_some_and(|e| e == "body"))
    })
    .expect("the rejected body is kept");
    assert_eq!(mode(rejected), 0o640);
    assert_eq!(mode(daemon.state_dir().join("rejected")), 0o750);
    assert_eq!(mode(daemon.state_dir().join("bundles")), 0o750);
    // The CLI finds the generated admin token by itself.
    let output = daemon.cli(&["pause", "--for", "5m", "--reason", "test"]);
    assert!(output.status.success(), "{output:?}");
    let output = daemon.cli(&["resume"]);
    assert!(output.status.success(), "{output:?}");

    // Kept across restarts, and not announced again.
    daemon.terminate();
    daemon.spawn();
    for (role, token) in ["ingest", "read", "admin"].iter().zip(&tokens) {
        assert_eq!(daemon.generated_token(role).as_ref(), Some(token));
    }
    assert_eq!(daemon.log().matches("generated credentials").count(), 1);
    let post = client().post(
        &format!("{}/webhook", daemon.base),
        &[JSON],
        body.as_bytes(),
    );
    assert_eq!(post.status, 200);
}

#[test]
fn opening_an_endpoint_is_explicit_and_metrics_can_need_the_read_credential() {
    let daemon =
        Daemon::start("[auth]\nallow_unauthenticated = [\"webhook\"]\nmetrics = \"read\"\n");
    let url = |path: &str| format!("{}{path}", daemon.base);
    let none = ("Authorization", "");
    let body = fixture("firing-single.json");
    assert_eq!(
        client()
            .post(&url("/webhook"), &[JSON, none], body.as_bytes())
            .status,
        200
    );
    assert!(daemon.generated_token("ingest").is_none());
    assert_eq!(client().get(&url("/api/v1/incidents"), &[none]).status, 401);
    assert_eq!(client().get(&url("/metrics"), &[none]).status, 401);
    let metrics = client().get(&url("/metrics"), &[]);
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("nightshift_webhook_requests_total"));
    assert!(
        daemon.log().contains("opened without a credential"),
        "{}",
        daemon.log()
    );
}

#[test]
fn a_second_daemon_on_the_same_state_directory_exits_at_once() {
    let daemon = Daemon::start("");
    let pid = daemon.pid();
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_nightshift"))
        .args(["run", "--config"])
        .arg(&daemon.config)
        .envs(daemon.env.iter().map(|(k, v)| (k, v)))
        .env_remove("NOTIFY_SOCKET")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for(Duration::from_secs(20), || second.try_wait().unwrap());
    let Some(status) = status else {
        let _ = second.kill();
        panic!("the second daemon kept running");
    };
    let output = second.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "another nightshift (pid {pid}) holds {}",
            daemon.state_dir().display()
        )),
        "{stderr}"
    );
    // The first is untouched, and read commands still work beside it.
    let post = client().post(
        &format!("{}/webhook", daemon.base),
        &[JSON],
        fixture("firing-single.json").as_bytes(),
    );
    assert_eq!(post.status, 200);
    for args in [
        &["incidents", "list"][..],
        &["report", "--since", "1h"],
        &["bundles", "list"],
        &["check", "--config-only"],
    ] {
        let output = daemon.cli(args);
        assert!(output.status.success(), "{args:?}: {output:?}");
    }
}

#[test]
fn reload_switches_the_action_mode_and_never_leaves_enforce_with_open_ingest() {
    let marker = tempfile::tempdir().unwrap();
    let rules = format!(
        r#"
[[rule]]
name = "touch"
matchers = ['alertname="Touch"']
severity = "P3"
[[rule.branch]]
name = "act"
otherwise = true
actions = ["touch"]

[action.touch]
kind = "exec"
target = "touch-{{{{ labels.n }}}}"
argv = ["/usr/bin/touch", "{}/ran-{{{{ labels.n }}}}"]
"#,
        marker.path().display()
    );
    let enforce = "[rules]\ndir = \"{dir}/rules\"\n[actions]\nmode = \"enforce\"\n";
    let mut daemon = Daemon::prepare(enforce, &[]);
    std::fs::create_dir_all(daemon.path("rules")).unwrap();
    daemon.write_file("rules/touch.toml", &rules);
    daemon.spawn();
    let root = daemon.path("").display().to_string();
    let root = root.trim_end_matches('/');
    let write_config = |text: &str| {
        std::fs::write(&daemon.config, text.replace("{dir}", root)).unwrap();
    };
    let reload = || client().post(&format!("{}/-/reload", daemon.base), &[], b"");
    let fire = |n: u32| {
        let body = serde_json::json!({
            "version": "4", "status": "firing", "groupKey": format!("g{n}"),
            "alerts": [{"status": "firing", "labels": {"alertname": "Touch", "n": n.to_string()},
                        "startsAt": "2026-11-28T03:00:00Z"}],
        });
        let response = client().post(
            &format!("{}/webhook", daemon.base),
            &[JSON],
            body.to_string().as_bytes(),
        );
        assert_eq!(response.status, 200);
    };
    // The action of incident n, once it has settled.
    let settled = |n: u32| {
        wait_for(Duration::from_secs(30), || {
            let list = client()
                .get(&format!("{}/api/v1/incidents?limit=100", daemon.base), &[])
                .json();
            let incident = list["incidents"]
                .as_array()?
                .iter()
                .find(|i| i["labels"]["n"].as_str() == Some(n.to_string().as_str()))?
                .clone();
            let id = incident["id"].as_str()?;
            let detail = client()
                .get(&format!("{}/api/v1/incidents/{id}", daemon.base), &[])
                .json();
            let action = detail["actions"].as_array()?.first()?.clone();
            (action["state"] != "planned" && action["state"] != "started").then_some(action)
        })
        .unwrap_or_else(|| panic!("incident {n} did not settle:\n{}", daemon.log()))
    };
    let enforced = || {
        client()
            .get(&format!("{}/metrics", daemon.base), &[])
            .body
            .lines()
            .find(|l| l.starts_with("nightshift_actions_enforced "))
            .map(str::to_owned)
    };
    fire(1);
    let action = settled(1);
    assert_eq!(action["verdict"], "run", "{action:#}");
    assert!(marker.path().join("ran-1").exists());

    // Switch to dry-run: no new effect; the answer says what happens to running ones.
    write_config("[rules]\ndir = \"{dir}/rules\"\n[actions]\nmode = \"dry-run\"\n");
    let response = reload();
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(
        response.body.contains("actions.mode is now dry-run"),
        "{}",
        response.body
    );
    assert_eq!(enforced().as_deref(), Some("nightshift_actions_enforced 0"));
    fire(2);
    let action = settled(2);
    assert_eq!(action["verdict"], "dry_run", "{action:#}");
    assert!(!marker.path().join("ran-2").exists());

    // Enforce with the webhook open is refused whole; the running mode stays.
    write_config(
        "[rules]\ndir = \"{dir}/rules\"\n[auth]\nallow_unauthenticated = [\"webhook\"]\n\
         [actions]\nmode = \"enforce\"\n",
    );
    let response = reload();
    assert_eq!(response.status, 400, "{}", response.body);
    assert!(response.body.contains("actions.mode"), "{}", response.body);
    let none = ("Authorization", "");
    let post = client().post(&format!("{}/webhook", daemon.base), &[JSON, none], b"{}");
    assert_eq!(post.status, 401, "the webhook stays closed");

    // And back to enforce; a key that needs a restart is named.
    write_config(
        "[rules]\ndir = \"{dir}/rules\"\n[actions]\nmode = \"enforce\"\n[bundles]\nconcurrency = 3\n",
    );
    let response = reload();
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(
        response.body.contains("actions.mode is now enforce"),
        "{}",
        response.body
    );
    assert!(
        response
            .body
            .contains("changed, needs a restart: bundles.concurrency"),
        "{}",
        response.body
    );
    assert_eq!(enforced().as_deref(), Some("nightshift_actions_enforced 1"));
    fire(3);
    let action = settled(3);
    assert_eq!(action["verdict"], "run", "{action:#}");
    assert!(marker.path().join("ran-3").exists());
}

/// The Debian package (`cargo deb`, configured in Cargo.toml): what it holds, its maintainer
/// scripts, and that the unpacked binary checks the unpacked config and finds the unpacked
/// runbooks. Builds the package (a release build) unless NIGHTSHIFT_TEST_DEB names one.
#[test]
fn package_installs_binary_unit_config_and_runbooks() {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    // The release build takes both CPUs for minutes: not beside a storm or a hostile test.
    let _heavy = heavy();

    fn run(command: &mut Command) -> String {
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("{command:?}: {e}"));
        assert!(
            output.status.success(),
            "{command:?}: {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    let scratch = tempfile::tempdir().unwrap();
    let deb: PathBuf = match std::env::var_os("NIGHTSHIFT_TEST_DEB") {
        Some(deb) => deb.into(),
        None => {
            let deb = scratch.path().join("nightshift.deb");
            run(Command::new(env!("CARGO"))
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .args(["deb", "--output"])
                .arg(&deb));
            deb
        }
    };

    // Contents, with modes.
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let entry = |path: &str| {
        listing
            .lines()
            .find(|line| line.ends_with(&format!(" .{path}")))
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{listing}"))
    };
    assert!(entry("/usr/bin/nightshift").starts_with("-rwxr-xr-x"));
    for path in [
        "/usr/lib/systemd/system/nightshift.service",
        "/usr/lib/sysusers.d/nightshift.conf",
        "/usr/lib/tmpfiles.d/nightshift.conf",
        "/etc/nightshift/rules/vastai.toml",
        "/etc/nightshift/rules/kubernetes.toml",
        "/usr/share/nightshift/prometheus/nightshift-alerts.yml",
        "/usr/share/nightshift/prometheus/vastai-alerts.yml",
        "/usr/share/doc/nightshift/README.md",
        "/usr/share/doc/nightshift/rules/README.md",
    ] {
        assert!(entry(path).starts_with("-rw-r--r--"), "{}", entry(path));
    }
    assert!(entry("/etc/nightshift/nightshift.toml").starts_with("-rw-r-----"));
    for left_out in [
        "payloads",
        ".test.yml",
        "/usr/share/doc/nightshift/nightshift.toml",
    ] {
        assert!(
            !listing.contains(left_out),
            "{left_out} is packaged:\n{listing}"
        );
    }

    // Control fields.
    let fields = run(Command::new("dpkg-deb").arg("-f").arg(&deb).args([
        "Package",
        "Version",
        "Architecture",
        "Depends",
    ]));
    assert!(fields.contains("Package: nightshift\n"), "{fields}");
    assert!(
        fields.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "{fields}"
    );
    assert!(fields.contains("Depends: "), "{fields}");

    // Maintainer scripts and conffiles.
    let control = scratch.path().join("DEBIAN");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let read = |name: &str| {
        std::fs::read_to_string(control.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let conffiles = read("conffiles");
    assert!(
        conffiles
            .lines()
            .any(|l| l == "/etc/nightshift/nightshift.toml"),
        "{conffiles}"
    );
    let postinst = read("postinst");
    for needle in [
        "systemd-sysusers nightshift.conf",
        "systemd-tmpfiles --create nightshift.conf",
        "chown root:nightshift /etc/nightshift",
        "deb-systemd-helper enable nightshift.service",
        "[ -d /run/systemd/system ]",
        "systemctl start nightshift.service",
    ] {
        assert!(
            postinst.contains(needle),
            "postinst lacks {needle}:\n{postinst}"
        );
    }
    let prerm = read("prerm");
    assert!(
        prerm.contains("systemctl stop nightshift.service"),
        "{prerm}"
    );
    let postrm = read("postrm");
    assert!(postrm.contains("rm -rf /var/lib/nightshift"), "{postrm}");
    let purge_only = postrm.split("if [ \"$1\" = \"purge\" ]; then").nth(1);
    assert!(
        purge_only.is_some_and(|purge| purge.contains("rm -rf /var/lib/nightshift")),
        "postrm deletes the state outside purge:\n{postrm}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        run(Command::new("sh").arg("-n").arg(control.join(script)));
    }

    // Unpacked: the conffile's settings, then `check` from elsewhere finds the runbooks.
    let root = scratch.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let config_path = root.join("etc/nightshift/nightshift.toml");
    let config: toml::Table = std::fs::read_to_string(&config_path)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(config["store"]["dir"].as_str(), Some("/var/lib/nightshift"));
    assert_eq!(config["rules"]["dir"].as_str(), Some("rules"));
    assert_eq!(config["server"]["listen"].as_str(), Some("127.0.0.1:9797"));
    assert_eq!(config["actions"]["mode"].as_str(), Some("dry-run"));
    assert!(
        config
            .get("auth")
            .and_then(|a| a.as_table())
            .is_none_or(|a| a.is_empty()),
        "credentials are left to be generated: {config:?}"
    );
    let mut check = Command::new(root.join("usr/bin/nightshift"));
    check
        .current_dir(Path::new("/"))
        .args(["check", "--config"])
        .arg(&config_path);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("NIGHTSHIFT_") {
            check.env_remove(key);
        }
    }
    let output = check.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{}: {text}", output.status);
    let rules: usize = regex::Regex::new(r"(\d+) rules? in \d+ files?")
        .unwrap()
        .captures(&text)
        .unwrap_or_else(|| panic!("no rule count in: {text}"))[1]
        .parse()
        .unwrap();
    assert!(rules > 0, "{text}");
    assert!(
        text.contains(&root.join("etc/nightshift/rules").display().to_string()),
        "{text}"
    );
}

/// The daemon's and the operators' ids in `operators_in_the_state_directory_group_read_*`:
/// spare numeric ids with no account, so the test needs no `/etc/passwd` entry.
const DAEMON_ID: u32 = 64123;
const OPERATOR_ID: u32 = 64124;
const OUTSIDER_ID: u32 = 64125;

/// `nightshift` (or any program) run through `setpriv` as `uid`, with `uid` as its group and
/// `group` as its only supplementary group.
fn as_user(uid: u32, group: Option<u32>, program: &str) -> std::process::Command {
    let mut command = std::process::Command::new("setpriv");
    command.arg(format!("--reuid={uid}"));
    command.arg(format!("--regid={uid}"));
    match group {
        Some(group) => command.arg(format!("--groups={group}")),
        None => command.arg("--clear-groups"),
    };
    command.arg(program);
    command
}

/// A daemon started by hand as another user; killed if the test ends without stopping it.
struct AsUserDaemon(Option<std::process::Child>);

impl AsUserDaemon {
    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.0.take().expect("running");
        // SAFETY: signalling our own child process (setpriv exec'd nightshift in place).
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let status = wait_for(Duration::from_secs(15), || child.try_wait().ok().flatten());
        status.unwrap_or_else(|| {
            let _ = child.kill();
            panic!("nightshift did not stop after SIGTERM");
        })
    }
}

impl Drop for AsUserDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn operators_in_the_state_directory_group_read_the_store_running_or_stopped() {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid only reads this process's credentials.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: running the daemon and the CLI as other users needs root");
        return;
    }
    let binary = env!("CARGO_BIN_EXE_nightshift");
    let mode = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    // Everything the daemon and the operators read lives under a directory all may enter.
    let root = tempfile::tempdir().unwrap();
    mode(root.path(), 0o755);
    let config = root.path().join("nightshift.toml");
    std::fs::write(&config, "").unwrap();
    mode(&config, 0o644);
    let rules = root.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    mode(&rules, 0o755);
    let rule = rules.join("placeholder.toml");
    std::fs::write(
        &rule,
        "[[rule]]\nname = \"placeholder\"\n\
         matchers = ['alertname=\"__matches_nothing__\"']\nseverity = \"P4\"\n",
    )
    .unwrap();
    mode(&rule, 0o644);
    // The state directory as the package's tmpfiles entry makes it: the daemon's, 0750.
    let state = root.path().join("var");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(DAEMON_ID), Some(DAEMON_ID)).unwrap();
    mode(&state, 0o750);
    let env = [
        ("NIGHTSHIFT_SERVER__LISTEN", "127.0.0.1:0".to_owned()),
        ("NIGHTSHIFT_STORE__DIR", state.display().to_string()),
        ("NIGHTSHIFT_RULES__DIR", rules.display().to_string()),
        ("NIGHTSHIFT_SERVER__SHUTDOWN_TIMEOUT", "5s".to_owned()),
    ];

    let log_path = root.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = as_user(DAEMON_ID, None, binary)
        .args(["run", "--config"])
        .arg(&config)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("setpriv");
    let mut daemon = AsUserDaemon(Some(child));
    let daemon_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let base = wait_for(Duration::from_secs(20), || {
        let text = std::fs::read_to_string(state.join("nightshift.addr")).ok()?;
        text.ends_with('\n').then(|| text.trim().to_owned())
    })
    .unwrap_or_else(|| panic!("nightshift did not start:\n{}", daemon_log()));
    let credential = |role: &str| {
        std::fs::read_to_string(state.join("credentials").join(role))
            .ok()
            .map(|text| text.trim().to_owned())
    };
    http_client::remember(
        base.trim_start_matches("http://"),
        http_client::Tokens {
            ingest: credential("ingest"),
            read: credential("read"),
            admin: credential("admin"),
        },
    );
    let body = webhook(
        "GroupRead",
        &[("GroupRead", "db-1", "firing", "2026-11-28T03:00:00Z")],
        0,
    );
    let response = client().post(&format!("{base}/webhook"), &[JSON], body.as_bytes());
    assert_eq!(response.status, 200, "{}", daemon_log());
    let id = wait_for(Duration::from_secs(20), || {
        let list = client()
            .get(&format!("{base}/api/v1/incidents"), &[])
            .json();
        list["incidents"].as_array()?.first()?["id"]
            .as_str()
            .map(str::to_owned)
    })
    .expect("an incident");

    let cli = |uid: u32, group: Option<u32>, args: &[&str]| {
        as_user(uid, group, binary)
            .args(args)
            .arg("--config")
            .arg(&config)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("setpriv")
    };
    let operator_reads = |when: &str| {
        let reads: [&[&str]; 4] = [
            &["incidents", "list"],
            &["incidents", "show", &id],
            &["bundles", "list"],
            &["report", "--since", "2000days"],
        ];
        for args in reads {
            let output = cli(OPERATOR_ID, Some(DAEMON_ID), args);
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "{args:?} as an operator, {when}: {}{stdout}",
                String::from_utf8_lossy(&output.stderr)
            );
            if args[0] == "incidents" {
                assert!(stdout.contains(&id), "{args:?}, {when}: {stdout}");
            }
        }
    };
    let outsider_is_told = |when: &str| {
        let output = cli(OUTSIDER_ID, None, &["incidents", "list"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{when}: {stderr}");
        let expected = format!(
            "cannot read {}: permission denied — are you in the group that owns {} (gid {DAEMON_ID})?",
            state.join("nightshift.db").display(),
            state.display()
        );
        assert!(stderr.contains(&expected), "{when}: {stderr}");
    };

    operator_reads("daemon running");
    outsider_is_told("daemon running");
    let credentials = as_user(OPERATOR_ID, Some(DAEMON_ID), "cat")
        .arg(state.join("credentials").join("admin"))
        .output()
        .unwrap();
    assert!(!credentials.status.success());
    assert!(
        String::from_utf8_lossy(&credentials.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&credentials.stderr)
    );

    let status = daemon.terminate();
    assert!(status.success(), "{status}:\n{}", daemon_log());
    // The daemon kept the write-ahead log's files, which operators cannot create.
    assert!(state.join("nightshift.db-shm").exists());
    assert!(state.join("nightshift.db-wal").exists());
    operator_reads("daemon stopped");
    outsider_is_told("daemon stopped");

    // A store last closed by an older nightshift has neither file: its SQLite checkpointed
    // and deleted them, as a plain connection closing last does. Still readable by the group.
    let plain = rusqlite::Connection::open(state.join("nightshift.db")).unwrap();
    let _: i64 = plain
        .query_row("SELECT count(*) FROM episodes", [], |row| row.get(0))
        .unwrap();
    plain.close().unwrap();
    assert!(!state.join("nightshift.db-shm").exists());
    assert!(!state.join("nightshift.db-wal").exists());
    operator_reads("daemon stopped, no -wal and -shm");
}
