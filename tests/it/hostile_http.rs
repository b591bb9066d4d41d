//! Hostile input over HTTP, against the real binary on 127.0.0.1:0: huge bodies, deep nesting,
//! a million labels, invalid UTF-8, slowloris, many connections, wrong methods and paths,
//! header floods. For each: the exact answer, another client's normal webhook still served, and
//! the daemon's memory (VmRSS / VmHWM from /proc) within a stated bound.
//!
//! The figures are printed (`cargo test --test it hostile_http:: -- --nocapture`) as table rows.

use crate::common::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;

/// Hostile bodies must reach the parser to show it holds: these daemons take webhooks without
/// a credential, an explicit choice on a loopback listener (`[auth] allow_unauthenticated`).
/// The 401 path is tested on its own (`a_401_answer_closes_the_connection`, tests/it/ingest.rs).
const OPEN_WEBHOOK: &str = "[auth]\nallow_unauthenticated = [\"webhook\"]\n";

/// One hostile test at a time, and none beside a storm: each runs its own daemon, and the
/// memory and time figures mean something only without the other tests' load on the same CPUs.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    heavy()
}

/// The daemon's resident memory now and its peak since start, in KiB.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss_kib: u64,
    hwm_kib: u64,
}

impl Memory {
    fn of(daemon: &Daemon) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid()))
            .expect("/proc/<pid>/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} in /proc/<pid>/status"))
        };
        Memory {
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
        }
    }

    fn mib(kib: u64) -> f64 {
        kib as f64 / 1024.0
    }
}

/// Print the memory row and check the peak against `bound_mib`.
fn check_memory(case: &str, daemon: &Daemon, before: Memory, bound_mib: u64) -> Memory {
    let after = Memory::of(daemon);
    println!(
        "| memory: {case} | RSS before {:.1} MiB | peak (VmHWM) {:.1} MiB | RSS after {:.1} MiB | bound {bound_mib} MiB |",
        Memory::mib(before.rss_kib),
        Memory::mib(after.hwm_kib),
        Memory::mib(after.rss_kib),
    );
    assert!(
        after.hwm_kib < bound_mib * 1024,
        "{case}: peak RSS {:.1} MiB over the {bound_mib} MiB bound",
        Memory::mib(after.hwm_kib)
    );
    after
}

/// The daemon's open sockets (listener and connections; SQLite opens files as it goes).
fn open_sockets(daemon: &Daemon) -> usize {
    fd_targets(daemon)
        .iter()
        .filter(|target| target.contains("socket:"))
        .count()
}

/// What the daemon's descriptors point at, for a failure message.
fn fd_targets(daemon: &Daemon) -> Vec<String> {
    let mut targets: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
        .expect("/proc/<pid>/fd")
        .filter_map(Result::ok)
        .map(|entry| {
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            format!(
                "{}->{}",
                entry.file_name().to_string_lossy(),
                target.display()
            )
        })
        .collect();
    targets.sort();
    targets
}

fn address_of(daemon: &Daemon) -> String {
    daemon.base.trim_start_matches("http://").to_owned()
}

fn connect(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// Send `request` as is (ignoring a reset while writing: the server may answer early) and read
/// the answer until the server closes. Status 0: closed without an answer.
fn send_raw(address: &str, request: &[u8]) -> (http_client::Response, Duration) {
    let started = Instant::now();
    let mut stream = connect(address);
    let _ = stream.write_all(request);
    let response = http_client::read_response(&mut stream);
    (response, started.elapsed())
}

/// Like `send_raw`, but the request is written from another thread while the answer is read,
/// so that an early answer to a large request is seen before the server's reset.
fn send_raw_streaming(
    address: &str,
    head: Vec<u8>,
    body: Vec<u8>,
) -> (http_client::Response, Duration) {
    let started = Instant::now();
    let mut stream = connect(address);
    let mut writer = stream.try_clone().unwrap();
    let thread = std::thread::spawn(move || {
        let _ = writer.write_all(&head);
        let _ = writer.write_all(&body);
    });
    let response = http_client::read_response(&mut stream);
    let elapsed = started.elapsed();
    let _ = stream.shutdown(std::net::Shutdown::Both);
    thread.join().unwrap();
    (response, elapsed)
}

/// Another client's normal webhook (a real Alertmanager payload): 200, and how long it took.
fn normal_webhook(daemon: &Daemon) -> Duration {
    let started = Instant::now();
    let response = client().post(
        &format!("{}/webhook", daemon.base),
        &[JSON],
        fixture("firing-single.json").as_bytes(),
    );
    let elapsed = started.elapsed();
    assert_eq!(
        response.status,
        200,
        "a normal webhook is still served: {}\n{}",
        response.body,
        daemon.log()
    );
    elapsed
}

fn row(case: &str, status: impl std::fmt::Display, took: Duration, normal: Duration) {
    println!(
        "| {case} | {status} | {} ms | normal webhook meanwhile/after: 200 in {} ms |",
        took.as_millis(),
        normal.as_millis()
    );
}

fn post_head(length: usize, extra: &str) -> Vec<u8> {
    format!(
        "POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n{extra}Connection: close\r\n\r\n"
    )
    .into_bytes()
}

fn assert_alive(daemon: &mut Daemon) {
    assert!(
        daemon.try_wait().is_none(),
        "the daemon is still running:\n{}",
        daemon.log()
    );
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}

/// A valid webhook (the firing-single fixture) padded with an ignored field to `size` bytes.
fn padded_webhook(size: usize, group: &str) -> Vec<u8> {
    let base = fixture("firing-single.json");
    let base = base.trim_end().trim_end_matches('}');
    let base = base.replace("\"groupKey\": \"", &format!("\"groupKey\": \"{group}"));
    let mut body = format!("{base}, \"padding\": \"");
    let fill = size.saturating_sub(body.len() + 2);
    body.push_str(&"x".repeat(fill));
    body.push_str("\"}");
    body.into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Huge bodies

#[test]
fn bodies_over_the_limit_get_413_without_being_read() {
    let _serial = serial();
    let mut daemon = Daemon::start(OPEN_WEBHOOK);
    let address = address_of(&daemon);
    let before = Memory::of(&daemon);

    // Content-Length over the limit, no body sent at all: the answer comes before any body.
    for length in [8 * MIB + 1, 1 << 40] {
        let (response, took) = send_raw(&address, &post_head(length, ""));
        assert_eq!(response.status, 413, "{length}: {}", response.body);
        assert!(
            response.json()["message"]
                .as_str()
                .unwrap()
                .contains("max_body_bytes")
        );
        row(
            &format!("Content-Length {length}, no body sent"),
            413,
            took,
            normal_webhook(&daemon),
        );
    }
    // Content-Length values hyper cannot take.
    for (case, head) in [
        (
            "Content-Length beyond u64",
            "Content-Length: 99999999999999999999999\r\n",
        ),
        ("Content-Length -1", "Content-Length: -1\r\n"),
        (
            "two different Content-Lengths",
            "Content-Length: 10\r\nContent-Length: 20\r\n",
        ),
        ("chunk size beyond u64", "Transfer-Encoding: chunked\r\n"),
    ] {
        let mut request = format!(
            "POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{head}\r\n"
        )
        .into_bytes();
        if head.contains("chunked") {
            request.extend_from_slice(b"fffffffffffffffff0\r\nxx\r\n0\r\n\r\n");
        }
        let (response, took) = send_raw(&address, &request);
        assert_eq!(response.status, 400, "{case}: {}", response.body);
        row(case, 400, took, normal_webhook(&daemon));
    }

    // Chunked, growing past the limit: refused once past it, and the connection is cut (the
    // sender cannot go on writing for ever).
    let mut stream = connect(&address);
    stream
        .write_all(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let started = Instant::now();
    let sender = std::thread::spawn(move || {
        let chunk = vec![b' '; 64 * 1024];
        let mut sent = 0usize;
        // Up to 256 MiB; the server must stop it well before.
        while sent < 256 * MIB {
            let head = format!("{:x}\r\n", chunk.len());
            if writer.write_all(head.as_bytes()).is_err()
                || writer.write_all(&chunk).is_err()
                || writer.write_all(b"\r\n").is_err()
            {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let response = http_client::read_response(&mut stream);
    let took = started.elapsed();
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let sent = sender.join().unwrap();
    assert_eq!(response.status, 413, "{}", response.body);
    assert!(
        sent < 128 * MIB,
        "the connection is cut after the limit ({sent} bytes sent)"
    );
    row(
        &format!(
            "chunked body growing past 8 MiB (client managed to send {:.1} MiB)",
            sent as f64 / MIB as f64
        ),
        413,
        took,
        normal_webhook(&daemon),
    );

    // A chunk size far beyond the limit, announced up front.
    let (response, took) = send_raw_streaming(
        &address,
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffffff\r\n".to_vec(),
        vec![b' '; 9 * MIB],
    );
    assert_eq!(response.status, 413, "{}", response.body);
    row(
        "one chunk announcing 128 TiB",
        413,
        took,
        normal_webhook(&daemon),
    );

    assert_alive(&mut daemon);
    // Nothing here is buffered beyond the 8 MiB limit: one body and its parse, with room.
    check_memory("bodies over the limit", &daemon, before, 100);
}

/// 100 clients each sending a valid webhook just under the 8 MiB limit, all at once: without a
/// bound on the bodies held at once this is `clients x max_body_bytes` (800 MiB) of buffers.
/// Each gets 200 or 503 with Retry-After (Alertmanager retries 5xx); memory stays within the
/// in-flight budget plus the daemon's own.
#[test]
fn concurrent_near_limit_bodies_stay_within_the_inflight_budget() {
    let _serial = serial();
    let mut daemon = Daemon::start(OPEN_WEBHOOK);
    let address = address_of(&daemon);
    let before = Memory::of(&daemon);
    let body = std::sync::Arc::new(padded_webhook(8 * MIB - 4096, "big"));
    let started = Instant::now();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(100));
    let threads: Vec<_> = (0..100)
        .map(|_| {
            let address = address.clone();
            let body = body.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let (response, took) =
                    send_raw_streaming(&address, post_head(body.len(), ""), body.to_vec());
                (response, took)
            })
        })
        .collect();
    // Meanwhile, a normal client.
    std::thread::sleep(Duration::from_millis(200));
    let normal = normal_webhook(&daemon);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut slowest = Duration::ZERO;
    for thread in threads {
        let (response, took) = thread.join().unwrap();
        slowest = slowest.max(took);
        *statuses.entry(response.status).or_default() += 1;
        match response.status {
            200 => {}
            503 => {
                assert_eq!(response.header("Retry-After"), Some("1"));
                assert!(
                    response.body.contains("max_inflight_body_bytes"),
                    "{}",
                    response.body
                );
            }
            other => panic!("unexpected {other} after {took:?}: {}", response.body),
        }
    }
    assert!(
        statuses.get(&200).copied().unwrap_or(0) >= 1,
        "{statuses:?}"
    );
    row(
        &format!("100 concurrent valid 8 MiB bodies: {statuses:?}"),
        "200/503",
        slowest,
        normal,
    );
    println!("| (all 100 done in {} ms) |", started.elapsed().as_millis());
    assert_alive(&mut daemon);
    // The default budget (64 MiB of bodies held at once) plus ~40 MiB of daemon and some
    // parse and SQLite overhead.
    check_memory("100 concurrent near-limit bodies", &daemon, before, 150);
}

/// The budget itself, small: bodies held by slow senders fill it, the next webhook gets 503
/// with Retry-After at once (without its body being read), and once they are answered there is
/// room again. A budget below max_body_bytes still lets one maximum-size body in.
#[test]
fn the_inflight_budget_answers_503_and_recovers() {
    let _serial = serial();
    let daemon = Daemon::start(
        "[auth]\nallow_unauthenticated = [\"webhook\"]\n[server]\nmax_body_bytes = 1048576\nmax_inflight_body_bytes = 2097152\nbody_read_timeout = \"20s\"\n",
    );
    let address = address_of(&daemon);
    let body = padded_webhook(MIB - 100, "budget");
    // Two senders declare 1 MiB each and send half: the budget (2 MiB) is taken.
    let mut slow: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = connect(&address);
            stream.write_all(&post_head(body.len(), "")).unwrap();
            stream.write_all(&body[..body.len() / 2]).unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let (response, took) = send_raw(&address, &post_head(body.len(), ""));
    assert_eq!(response.status, 503, "{}", response.body);
    assert_eq!(response.header("Retry-After"), Some("1"));
    assert!(
        response
            .body
            .contains("server.max_inflight_body_bytes (2097152 bytes)"),
        "{}",
        response.body
    );
    row(
        "webhook while the budget is held by two slow 1 MiB bodies",
        503,
        took,
        Duration::ZERO,
    );
    // Even a small webhook does not fit while the budget is full: 503, which Alertmanager retries.
    let (response, _) = post_json(&daemon, fixture("firing-single.json").as_bytes());
    assert_eq!(response.status, 503, "{}", response.body);
    // A chunked body (no Content-Length) is refused as soon as it does not fit.
    let (response, _) = send_raw_streaming(
        &address,
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec(),
        [format!("{:x}\r\n", body.len()).as_bytes(), &body, b"\r\n0\r\n\r\n"].concat(),
    );
    assert_eq!(response.status, 503, "{}", response.body);
    // The slow senders finish: both stored, and the budget is free again.
    for stream in &mut slow {
        stream.write_all(&body[body.len() / 2..]).unwrap();
        let response = http_client::read_response(stream);
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let normal = normal_webhook(&daemon);
    let (response, _) = send_raw_streaming(&address, post_head(body.len(), ""), body.clone());
    assert_eq!(response.status, 200, "{}", response.body);
    row(
        "the same once the slow bodies are answered",
        200,
        started.elapsed(),
        normal,
    );
    // Rejected bodies count until they are written out for forensics; then room again.
    let mut invalid = body.clone();
    invalid[0] = b'[';
    for _ in 0..5 {
        let (response, _) =
            send_raw_streaming(&address, post_head(invalid.len(), ""), invalid.clone());
        assert_eq!(response.status, 400, "{}", response.body);
    }
    normal_webhook(&daemon);
    let metrics = client().get(&format!("{}/metrics", daemon.base), &[]).body;
    assert!(
        metrics.contains("nightshift_webhook_requests_total{outcome=\"overloaded\"} 3"),
        "{metrics}"
    );

    // A budget below the body limit is raised to it: one maximum-size body always fits.
    let small = Daemon::start(
        "[auth]\nallow_unauthenticated = [\"webhook\"]\n[server]\nmax_body_bytes = 1048576\nmax_inflight_body_bytes = 1000\n",
    );
    let (response, _) =
        send_raw_streaming(&address_of(&small), post_head(body.len(), ""), body.clone());
    assert_eq!(response.status, 200, "{}", response.body);
}

// ---------------------------------------------------------------------------------------------
// Deep nesting

fn post_json(daemon: &Daemon, body: &[u8]) -> (http_client::Response, Duration) {
    let started = Instant::now();
    let response = client().post(&format!("{}/webhook", daemon.base), &[JSON], body);
    (response, started.elapsed())
}

#[test]
fn deeply_nested_bodies_get_400_with_a_clear_message() {
    let _serial = serial();
    let mut daemon = Daemon::start(OPEN_WEBHOOK);
    let before = Memory::of(&daemon);
    let depth = MIB / 5;
    let nested_objects = {
        let mut body = "{\"a\":".repeat(depth);
        body.push('1');
        body.push_str(&"}".repeat(depth));
        body.into_bytes()
    };
    let valid_start = r#"{"version":"4","status":"firing","groupKey":"{}:{}","alerts":[],"extra":"#;
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("1 MiB of [[[[", vec![b'['; MIB], "[0]", "invalid type: sequence, expected a string"),
        // serde_json skips an unknown field without recursion (no depth limit, no stack), so
        // the answer names what is really wrong with it.
        ("1 MiB of {\"a\":{\"a\":...}}", nested_objects, ".", "missing field `version`"),
        (
            "[[[[ never closed, in an ignored field",
            [valid_start.as_bytes(), &vec![b'['; MIB]].concat(),
            "extra",
            "EOF while parsing a list",
        ),
        (
            "[[[[ as a label value",
            [
                br#"{"version":"4","status":"firing","alerts":[{"status":"firing","startsAt":"2026-11-28T03:00:00Z","labels":{"a":"#.as_slice(),
                &vec![b'['; MIB],
            ]
            .concat(),
            "alerts[0].labels.a",
            "expected a string",
        ),
    ];
    for (case, body, path, message) in cases {
        let (response, took) = post_json(&daemon, &body);
        assert_eq!(response.status, 400, "{case}: {}", response.body);
        let json = response.json();
        assert_eq!(json["path"], path, "{case}: {json}");
        assert!(
            json["message"].as_str().unwrap().contains(message),
            "{case}: {json}"
        );
        row(
            &format!("{case} ({} bytes): {}", body.len(), json["message"]),
            400,
            took,
            normal_webhook(&daemon),
        );
    }
    // Closed, in a field nightshift ignores, the nesting is harmless: skipped without recursion,
    // like any field a newer Alertmanager may add; the notification itself is valid.
    let closed = [
        valid_start.as_bytes(),
        &vec![b'['; MIB / 2],
        &vec![b']'; MIB / 2],
        b"}",
    ]
    .concat();
    let (response, took) = post_json(&daemon, &closed);
    assert_eq!(response.status, 200, "{}", response.body);
    row(
        "1 MiB [[[[...]]]] closed, in an ignored field of a valid webhook",
        200,
        took,
        normal_webhook(&daemon),
    );
    assert_alive(&mut daemon);
    check_memory("deep nesting", &daemon, before, 100);
}

// ---------------------------------------------------------------------------------------------
// A million labels

#[test]
fn an_alert_with_a_million_labels_gets_400_and_memory_stays_bounded() {
    let _serial = serial();
    let mut daemon = Daemon::start(OPEN_WEBHOOK);
    let before = Memory::of(&daemon);
    // As many labels as fit in the 8 MiB limit (~866,000: a million do not fit), then the same
    // as annotations; three of each at once, with a normal client meanwhile.
    for field in ["labels", "annotations"] {
        let body = std::sync::Arc::new(label_bomb(8 * MIB - 1024, field));
        let senders: Vec<_> = (0..3)
            .map(|_| {
                let body = body.clone();
                let url = format!("{}/webhook", daemon.base);
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let response = client().post(&url, &[JSON], &body);
                    (response, started.elapsed())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let normal = normal_webhook(&daemon);
        for sender in senders {
            let (response, took) = sender.join().unwrap();
            assert_eq!(response.status, 400, "{field}: {}", response.body);
            let json = response.json();
            assert_eq!(json["path"], format!("alerts[0].{field}"), "{json}");
            let message = json["message"].as_str().unwrap();
            assert!(
                message.contains(&format!("{field}; at most 1000 are accepted")),
                "{json}"
            );
            row(
                &format!("one alert with {message} ({} bytes), 3 at once", body.len()),
                400,
                took,
                normal,
            );
        }
    }
    // Three more whose senders hang up once sent: their parses still take turns (the turn
    // goes with the parse, not with the request that left), as a fourth one's answer shows.
    let bomb = label_bomb(8 * MIB - 1024, "labels");
    let hung_up: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = connect(&address_of(&daemon));
            stream.write_all(&post_head(bomb.len(), "")).unwrap();
            stream.write_all(&bomb).unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    drop(hung_up);
    let (response, took) = post_json(&daemon, &bomb);
    assert_eq!(response.status, 400, "{}", response.body);
    row(
        "a 4th label bomb after 3 whose senders hung up",
        400,
        took,
        normal_webhook(&daemon),
    );

    // The cap itself: 1000 labels pass, 1001 do not.
    for (labels, status) in [(1000, 200), (1001, 400)] {
        let body = many_alerts(1, labels - 2, "v");
        let (response, took) = post_json(&daemon, &body);
        assert_eq!(response.status, status, "{labels}: {}", response.body);
        row(
            &format!("one alert with {labels} labels"),
            status,
            took,
            normal_webhook(&daemon),
        );
    }
    // Real Alertmanager payloads are far from the caps.
    for name in [
        "firing-group.json",
        "firing-single.json",
        "group-partially-resolved.json",
        "prometheus-rule-firing.json",
        "prometheus-rule-resolved.json",
        "prometheus-rule-vector1.json",
        "resolved-single.json",
    ] {
        let (response, _) = post_json(&daemon, fixture(name).as_bytes());
        assert_eq!(response.status, 200, "{name}: {}", response.body);
    }
    let metrics = client().get(&format!("{}/metrics", daemon.base), &[]).body;
    assert!(
        metrics.contains("nightshift_webhook_rejected_total{reason=\"too_many_labels\"} 8"),
        "{metrics}"
    );
    assert_alive(&mut daemon);
    // The daemon's own ~40 MiB, the three 8 MiB bodies held, and one bomb parsed at a time
    // (~100 MiB: a map entry per label) before it is refused, never stored: ~170 MiB. Two
    // parses at once (as when a parse's turn ended with its request) reach ~245 MiB.
    let after = check_memory("a million labels", &daemon, before, 200);
    // And the memory of those parses is given back (glibc kept ~100 MiB per arena used).
    assert!(
        after.rss_kib < before.rss_kib + 60 * 1024,
        "RSS after {:.1} MiB",
        Memory::mib(after.rss_kib)
    );
}

/// What the largest notifications nightshift accepts cost downstream (reconcile, rules, the
/// incident API): a group of 10,000 alerts, and 700 alerts of 1,000 labels each. Each is
/// reconciled and listed, and the daemon stays under 512 MiB (a notification is parsed whole).
/// The figures are printed for RELIABILITY.md.
#[test]
fn the_largest_accepted_notifications_are_reconciled_within_bounded_memory() {
    let _serial = serial();
    for (alerts, labels, value) in [(10_000usize, 10usize, "some-value-1234"), (700, 998, "")] {
        let daemon = Daemon::start(OPEN_WEBHOOK);
        let before = Memory::of(&daemon);
        let body = many_alerts(alerts, labels, value);
        let (response, took) = post_json(&daemon, &body);
        assert_eq!(response.status, 200, "{}", response.body);
        let reconciled = wait_for(Duration::from_secs(120), || {
            let text = client().get(&format!("{}/metrics", daemon.base), &[]).body;
            text.contains("nightshift_notifications_unreconciled 0")
                .then_some(())
        });
        assert!(
            reconciled.is_some(),
            "{alerts} alerts not reconciled in 120 s"
        );
        let started = Instant::now();
        let listed = client().get(&format!("{}/api/v1/incidents", daemon.base), &[]);
        assert_eq!(listed.status, 200, "{}", listed.body);
        let after = Memory::of(&daemon);
        println!(
            "| {alerts} alerts x {} labels, body {:.1} MiB | 200 in {} ms | RSS before {:.1} MiB, peak {:.1} MiB after reconcile and GET /api/v1/incidents ({} in {} ms) |",
            labels + 2,
            body.len() as f64 / MIB as f64,
            took.as_millis(),
            Memory::mib(before.rss_kib),
            Memory::mib(after.hwm_kib),
            listed.status,
            started.elapsed().as_millis(),
        );
        assert!(
            Memory::mib(after.hwm_kib) < 512.0,
            "{alerts} alerts: peak RSS {:.1} MiB",
            Memory::mib(after.hwm_kib)
        );
    }
}

/// Short distinct label names from a 64-character alphabet: a, b, ..., aa, ab, ...
fn label_name(mut n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:";
    let mut name = Vec::new();
    loop {
        name.push(ALPHABET[n % 64]);
        n /= 64;
        if n == 0 {
            break;
        }
        n -= 1;
    }
    String::from_utf8(name).unwrap()
}

/// One alert whose `field` ("labels" or "annotations") holds as many entries as fit in `size`.
fn label_bomb(size: usize, field: &str) -> Vec<u8> {
    let head = r#"{"version":"4","status":"firing","groupKey":"{}:{alertname=\"Bomb\"}","alerts":[{"status":"firing","startsAt":"2026-11-28T03:00:00Z","#;
    let mut body = String::with_capacity(size);
    body.push_str(head);
    if field == "annotations" {
        body.push_str(r#""labels":{"alertname":"Bomb"},"#);
    }
    body.push_str(&format!("\"{field}\":{{\"alertname\":\"Bomb\""));
    let tail = "}}]}";
    let mut n = 0;
    loop {
        let entry = format!(",\"{}\":\"\"", label_name(n));
        if body.len() + entry.len() + tail.len() > size {
            break;
        }
        body.push_str(&entry);
        n += 1;
    }
    body.push_str(tail);
    body.into_bytes()
}

fn many_alerts(alerts: usize, labels: usize, value: &str) -> Vec<u8> {
    let mut list = Vec::new();
    for a in 0..alerts {
        let mut l = serde_json::Map::new();
        l.insert("alertname".into(), "Many".into());
        l.insert("instance".into(), format!("node-{a}").into());
        for n in 0..labels {
            l.insert(label_name(n + 100), value.into());
        }
        list.push(serde_json::json!({"status":"firing","labels":l,"annotations":{"summary":"x"},"startsAt":"2026-11-28T03:00:00Z"}));
    }
    serde_json::json!({"version":"4","status":"firing","groupKey":"{}:{alertname=\"Many\"}","alerts":list}).to_string().into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Invalid UTF-8

#[test]
fn invalid_utf8_in_body_headers_and_path_gets_a_4xx_never_a_5xx() {
    let _serial = serial();
    let mut daemon = Daemon::start(OPEN_WEBHOOK);
    let address = address_of(&daemon);
    let before = Memory::of(&daemon);
    let alert = |labels: &[u8]| {
        [
            br#"{"version":"4","status":"firing","alerts":[{"status":"firing","startsAt":"2026-11-28T03:00:00Z","labels":"#.as_slice(),
            labels,
            b"}]}",
        ]
        .concat()
    };
    // Body: in a label name, in a value, as a bare byte, as an unpaired surrogate escape.
    for (case, body, message) in [
        (
            "a label name",
            alert(b"{\"\xffname\":\"v\"}"),
            "invalid unicode",
        ),
        (
            "a label value",
            alert(b"{\"name\":\"v\xc3\x28\"}"),
            "invalid unicode",
        ),
        (
            "a bare byte between tokens",
            alert(b"{\"name\":\"v\"\xff}"),
            "expected",
        ),
        (
            "an unpaired surrogate escape",
            alert(br#"{"name":"\ud800"}"#),
            "hex escape",
        ),
        (
            "overlong encoding of '/'",
            alert(b"{\"name\":\"\xc0\xaf\"}"),
            "invalid unicode",
        ),
    ] {
        let (response, took) = post_json(&daemon, &body);
        assert_eq!(response.status, 400, "{case}: {}", response.body);
        let json = response.json();
        assert!(
            json["message"].as_str().unwrap().contains(message),
            "{case}: {json}"
        );
        row(
            &format!("invalid UTF-8 in the body, {case}: {}", json["message"]),
            400,
            took,
            normal_webhook(&daemon),
        );
    }

    // Header values: bytes 0x80-0xFF are legal "obs-text" in HTTP; where nightshift reads the
    // header they are refused with the answer for a wrong value, elsewhere ignored.
    let body = fixture("firing-single.json");
    for (case, header, status) in [
        (
            "Content-Type",
            b"Content-Type: application/json\xff\r\n".as_slice(),
            415,
        ),
        (
            "Content-Type, only the byte",
            b"Content-Type: \xff\r\n",
            415,
        ),
        (
            "an unrelated header",
            b"Content-Type: application/json\r\nX-Note: caf\xe9\r\n",
            200,
        ),
        (
            "Authorization (no credential configured)",
            b"Content-Type: application/json\r\nAuthorization: Bearer \xff\xfe\r\n",
            200,
        ),
        (
            "Content-Length",
            b"Content-Type: application/json\r\nContent-Length: 1\xff\r\n",
            400,
        ),
        (
            "a header name",
            b"Content-Type: application/json\r\nX-\xff: 1\r\n",
            400,
        ),
    ] {
        let mut request = b"POST /webhook HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_vec();
        request.extend_from_slice(header);
        if !case.starts_with("Content-Length") {
            request.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(body.as_bytes());
        let (response, took) = send_raw(&address, &request);
        assert_eq!(response.status, status, "{case}: {}", response.body);
        row(
            &format!("invalid UTF-8 in a header value: {case}"),
            status,
            took,
            normal_webhook(&daemon),
        );
    }
    // With an ingest credential, a non-UTF-8 Authorization is simply a wrong credential.
    let mut guarded = Daemon::prepare("[auth]\ningest_token_file = \"{dir}/token\"\n", &[]);
    guarded.write_file("token", "secret\n");
    guarded.spawn();
    let request = [
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nAuthorization: Bearer secr\xe9t\r\n".as_slice(),
        format!("Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes(),
    ]
    .concat();
    let (response, took) = send_raw(&address_of(&guarded), &request);
    assert_eq!(response.status, 401, "{}", response.body);
    row(
        "invalid UTF-8 in Authorization, credential configured",
        401,
        took,
        normal_webhook(&daemon),
    );

    // The path: raw bytes in the request target, and percent-encoded invalid UTF-8 where a
    // handler decodes it.
    for (case, target, status) in [
        ("raw 0xFF in the path", b"/webhook\xff".as_slice(), 400),
        (
            "raw 0xFF in the query",
            b"/api/v1/incidents?status=\xff",
            400,
        ),
        ("%FF in a path parameter", b"/api/v1/incidents/%FF%FE", 400),
        (
            "%FF in a query parameter",
            b"/api/v1/incidents?status=%FF",
            400,
        ),
        (
            "%FF in the report's query",
            b"/api/v1/report?since=%FF",
            400,
        ),
        (
            "%C0%AF (overlong '/') in a path parameter",
            b"/api/v1/incidents/..%C0%AF..%C0%AFetc",
            400,
        ),
    ] {
        let read = daemon
            .generated_token("read")
            .expect("a generated read token");
        let request = [
            b"GET ".as_slice(),
            target,
            format!(
                " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {read}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        ]
        .concat();
        let (response, took) = send_raw(&address, &request);
        assert_eq!(response.status, status, "{case}: {}", response.body);
        row(
            &format!("invalid UTF-8 in the request target: {case}"),
            status,
            took,
            normal_webhook(&daemon),
        );
    }
    assert_alive(&mut daemon);
    check_memory("invalid UTF-8", &daemon, before, 100);
}

// ---------------------------------------------------------------------------------------------
// Wrong methods and paths

#[test]
fn wrong_methods_and_paths_get_405_or_404() {
    let _serial = serial();
    let mut daemon = Daemon::start(
        "[auth]\nallow_unauthenticated = [\"webhook\"]\n[server]\nheader_read_timeout = \"2s\"\n",
    );
    let address = address_of(&daemon);
    let before = Memory::of(&daemon);
    let body = fixture("firing-single.json");
    let with_body = |method: &str, target: &str, version: &str| {
        format!(
            "{method} {target} {version}\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let bare = |method: &str, target: &str| {
        format!("{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
    };
    let long_path = format!("/{}", "a".repeat(100 * 1024));
    let cases: Vec<(String, Vec<u8>, u16, Option<&str>)> = vec![
        (
            "GET /webhook".into(),
            bare("GET", "/webhook"),
            405,
            Some("POST"),
        ),
        (
            "HEAD /webhook".into(),
            bare("HEAD", "/webhook"),
            405,
            Some("POST"),
        ),
        (
            "PUT /webhook".into(),
            with_body("PUT", "/webhook", "HTTP/1.1"),
            405,
            Some("POST"),
        ),
        (
            "DELETE /webhook".into(),
            bare("DELETE", "/webhook"),
            405,
            Some("POST"),
        ),
        (
            "PATCH /webhook".into(),
            with_body("PATCH", "/webhook", "HTTP/1.1"),
            405,
            Some("POST"),
        ),
        (
            "OPTIONS /webhook".into(),
            bare("OPTIONS", "/webhook"),
            405,
            Some("POST"),
        ),
        (
            "TRACE /webhook".into(),
            bare("TRACE", "/webhook"),
            405,
            Some("POST"),
        ),
        (
            "an invented method FOO /webhook".into(),
            bare("FOO", "/webhook"),
            405,
            Some("POST"),
        ),
        (
            "POST /healthz".into(),
            with_body("POST", "/healthz", "HTTP/1.1"),
            405,
            Some("GET,HEAD"),
        ),
        (
            "GET /-/reload".into(),
            bare("GET", "/-/reload"),
            405,
            Some("POST"),
        ),
        ("TRACE /".into(), bare("TRACE", "/"), 404, None),
        ("OPTIONS *".into(), bare("OPTIONS", "*"), 404, None),
        ("GET /nope".into(), bare("GET", "/nope"), 404, None),
        (
            "POST /webhook/".into(),
            with_body("POST", "/webhook/", "HTTP/1.1"),
            404,
            None,
        ),
        (
            "POST /WEBHOOK".into(),
            with_body("POST", "/WEBHOOK", "HTTP/1.1"),
            404,
            None,
        ),
        (
            "POST //webhook".into(),
            with_body("POST", "//webhook", "HTTP/1.1"),
            404,
            None,
        ),
        (
            "POST /webhook/../webhook".into(),
            with_body("POST", "/webhook/../webhook", "HTTP/1.1"),
            404,
            None,
        ),
        (
            "GET /api/v1/incidents/../../etc/passwd".into(),
            bare("GET", "/api/v1/incidents/../../etc/passwd"),
            404,
            None,
        ),
        (
            "POST /webhook HTTP/1.0".into(),
            with_body("POST", "/webhook", "HTTP/1.0"),
            200,
            None,
        ),
        (
            "POST /webhook, absolute-form".into(),
            with_body("POST", &format!("http://{address}/webhook"), "HTTP/1.1"),
            200,
            None,
        ),
        (
            "POST /webhook?x=1".into(),
            with_body("POST", "/webhook?x=1", "HTTP/1.1"),
            200,
            None,
        ),
        (
            "GET absolute-form, another host".into(),
            bare("GET", "http://example.invalid/healthz"),
            200,
            None,
        ),
        (
            "CONNECT authority-form".into(),
            bare("CONNECT", "example.invalid:443"),
            404,
            None,
        ),
        (
            "HTTP/2.0 in an HTTP/1 request line".into(),
            with_body("POST", "/webhook", "HTTP/2.0"),
            400,
            None,
        ),
        (
            "HTTP/9.9".into(),
            with_body("POST", "/webhook", "HTTP/9.9"),
            400,
            None,
        ),
        // Over the 64 KiB request-head buffer before the URI limit (64 KiB too).
        ("a 100 KiB path".into(), bare("GET", &long_path), 431, None),
        (
            "a 100 KiB query on POST /webhook".into(),
            with_body(
                "POST",
                &format!("/webhook?{}", "a".repeat(100 * 1024)),
                "HTTP/1.1",
            ),
            431,
            None,
        ),
        (
            "garbage request line".into(),
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello\r\n\r\n".to_vec(),
            400,
            None,
        ),
        (
            "no request line, just CRLFs".into(),
            b"\r\n\r\n\r\n\r\n".to_vec(),
            0,
            None,
        ),
    ];
    for (case, request, status, allow) in cases {
        let (response, took) = send_raw(&address, &request);
        assert_eq!(
            response.status, status,
            "{case}: {:?} {}",
            response.headers, response.body
        );
        if let Some(allow) = allow {
            assert_eq!(
                response.header("Allow"),
                Some(allow),
                "{case}: {:?}",
                response.headers
            );
        }
        row(&case, status, took, normal_webhook(&daemon));
    }
    assert_alive(&mut daemon);
    check_memory("wrong methods and paths", &daemon, before, 100);
}

// ---------------------------------------------------------------------------------------------
// Header floods

#[test]
fn header_floods_get_431_and_cannot_pile_up_memory() {
    let _serial = serial();
    let mut daemon = Daemon::start(OPEN_WEBHOOK);
    let address = address_of(&daemon);
    let before = Memory::of(&daemon);
    let headers = |count: usize, size: usize| {
        let mut head = b"POST /webhook HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 2\r\n".to_vec();
        for n in 0..count {
            head.extend_from_slice(format!("X-Flood-{n}: {}\r\n", "v".repeat(size)).as_bytes());
        }
        head.extend_from_slice(b"\r\n{}");
        head
    };
    for (case, request, expected) in [
        ("96 headers (100 in all)", headers(96, 8), [400, 400]),
        ("97 headers (101 in all)", headers(97, 8), [431, 431]),
        ("10,000 headers", headers(10_000, 8), [431, 0]),
        ("one 1 MiB header", headers(1, MIB), [431, 0]),
        ("one 60 KiB header", headers(1, 60 * 1024), [400, 400]),
        ("one 70 KiB header", headers(1, 70 * 1024), [431, 400]),
        ("1000 headers of 1 KiB", headers(1000, 1024), [431, 0]),
        ("60 headers of 1 KiB", headers(60, 1024), [400, 400]),
        ("70 headers of 1 KiB", headers(70, 1024), [431, 400]),
    ] {
        let (response, took) = send_raw_streaming(&address, request, Vec::new());
        // 0: the connection was closed (reset) before the client could read the 431.
        assert!(
            expected.contains(&response.status),
            "{case}: {} {}",
            response.status,
            response.body
        );
        row(case, response.status, took, normal_webhook(&daemon));
    }

    // Many connections each sending unfinished headers and holding: what one may cost is
    // bounded by the header buffer (64 KiB; hyper's default is ~400 KiB), so at most
    // max_connections x 64 KiB. Just under the limit, the connections are held; over it,
    // refused with 431 as soon as the buffer is full. (From several addresses: see
    // `hostile_source`.)
    for (size, held_expected) in [(59 * 1024, true), (390 * 1024, false)] {
        let partial = {
            let mut head = b"POST /webhook HTTP/1.1\r\nHost: x\r\n".to_vec();
            let mut n = 0;
            while head.len() + 1024 < size {
                head.extend_from_slice(format!("X-Fill-{n}: {}\r\n", "v".repeat(1000)).as_bytes());
                n += 1;
            }
            head
        };
        let started = Instant::now();
        let mut held: Vec<TcpStream> = (0..500)
            .map(|n| {
                let mut stream = connect_from(&hostile_source(n), &address);
                let _ = stream.write_all(&partial);
                stream
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let during = Memory::of(&daemon);
        let normal = normal_webhook(&daemon);
        // Which are still open (nothing to read yet) and which were answered and closed.
        let mut open = 0;
        for stream in &mut held {
            stream.set_nonblocking(true).unwrap();
            let mut buffer = [0u8; 64];
            match stream.read(&mut buffer) {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => open += 1,
                Ok(n) if n > 0 => assert!(
                    buffer.starts_with(b"HTTP/1.1 431"),
                    "{}",
                    String::from_utf8_lossy(&buffer)
                ),
                _ => {}
            }
        }
        row(
            &format!(
                "500 connections each sending {} KiB of unfinished headers: {open} held open (RSS then {:.1} MiB)",
                partial.len() / 1024,
                Memory::mib(during.rss_kib)
            ),
            if held_expected { "held" } else { "431" },
            started.elapsed(),
            normal,
        );
        assert_eq!(open, if held_expected { 500 } else { 0 }, "{size}");
        for stream in &mut held {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
    assert_alive(&mut daemon);
    check_memory("header floods", &daemon, before, 100);
}

// ---------------------------------------------------------------------------------------------
// Slowloris and many connections

/// A connection to `address` from `source`, another loopback address (Linux routes all of
/// 127.0.0.0/8 to the loopback interface): to the daemon, each source is another peer.
fn connect_from(source: &str, address: &str) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        let source = format!("{source}:0").parse().expect("source address");
        socket.bind(source).expect("bind to the source address");
        let stream = socket
            .connect(address.parse().expect("address"))
            .await
            .expect("connect");
        stream.into_std().expect("a std stream")
    });
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// The source address of the `n`th of many hostile connections: 50 to an address, under the
/// daemon's limit of 64 connections per peer waiting for a first request, so that what a test
/// sees is the timeouts, not that limit.
fn hostile_source(n: usize) -> String {
    format!("127.0.1.{}", 1 + n / 50)
}

/// How many of `streams` the server has closed (read end of stream or a reset).
fn count_closed(streams: &mut [TcpStream]) -> usize {
    let mut closed = 0;
    for stream in streams {
        stream.set_nonblocking(true).unwrap();
        let mut buffer = [0u8; 1024];
        closed += usize::from(match stream.read(&mut buffer) {
            Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
            Ok(n) => n == 0,
        });
        stream.set_nonblocking(false).unwrap();
    }
    closed
}

/// Everything the server sends on `stream` until it closes it; `None` if it has not closed it
/// within the stream's read timeout.
fn read_until_closed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return Some(received),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(received);
            }
            Err(_) => return None,
        }
    }
}

/// A daemon with its credentials configured (`ingest-secret`, `read-secret`,
/// `admin-secret`), and `server` settings.
fn daemon_with_credentials(server: &str) -> Daemon {
    let mut daemon = Daemon::prepare(
        &format!(
            "[server]\n{server}[auth]\ningest_token_file = \"{{dir}}/ingest\"\n\
             read_token_file = \"{{dir}}/read\"\nadmin_token_file = \"{{dir}}/admin\"\n"
        ),
        &[],
    );
    for role in ["ingest", "read", "admin"] {
        daemon.write_file(role, &format!("{role}-secret\n"));
    }
    daemon.spawn();
    daemon
}

/// Poll `streams` (non-blocking) until each is closed by the server or `deadline` passes;
/// returns when each closed, measured from `started` (None: still open at the deadline).
fn wait_closed(
    streams: &mut [TcpStream],
    started: Instant,
    deadline: Duration,
) -> Vec<Option<Duration>> {
    let mut closed = vec![None; streams.len()];
    for stream in streams.iter() {
        stream.set_nonblocking(true).unwrap();
    }
    while started.elapsed() < deadline && closed.iter().any(Option::is_none) {
        for (stream, closed) in streams.iter_mut().zip(closed.iter_mut()) {
            if closed.is_some() {
                continue;
            }
            let mut buffer = [0u8; 1024];
            match stream.read(&mut buffer) {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                // An answer (408) is fine; the connection closes right after it.
                Ok(n) if n > 0 => {}
                _ => *closed = Some(started.elapsed()),
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    closed
}

fn spread(times: &[Option<Duration>]) -> String {
    let times: Vec<u128> = times.iter().flatten().map(Duration::as_millis).collect();
    format!(
        "{} cut, after {}..{} ms",
        times.len(),
        times.iter().min().unwrap_or(&0),
        times.iter().max().unwrap_or(&0)
    )
}

/// 200 connections each sending one header byte per second, 200 that send nothing at all, 50
/// whose body trickles in: all are cut at the timeouts, while other clients are served.
/// (They come from several loopback addresses, 50 each, so that the per-peer limit on
/// connections waiting for a first request does not cut them first.)
#[test]
fn slowloris_connections_are_cut_at_the_timeouts_while_others_are_served() {
    let _serial = serial();
    let mut daemon = Daemon::start(
        "[auth]\nallow_unauthenticated = [\"webhook\"]\n[server]\nheader_read_timeout = \"2s\"\nbody_read_timeout = \"2s\"\n",
    );
    let address = address_of(&daemon);
    normal_webhook(&daemon);
    let before = Memory::of(&daemon);
    let fds_before = open_sockets(&daemon);
    let fd_list = fd_targets(&daemon);

    // One header byte per second.
    let request =
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Slow: 1\r\n";
    let started = Instant::now();
    let mut trickling: Vec<TcpStream> = (0..200)
        .map(|n| connect_from(&hostile_source(n), &address))
        .collect();
    let writer = {
        let mut streams: Vec<TcpStream> =
            trickling.iter().map(|s| s.try_clone().unwrap()).collect();
        std::thread::spawn(move || {
            for byte in request.iter().take(10) {
                for stream in &mut streams {
                    let _ = stream.write_all(&[*byte]);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    // Connected, and then nothing.
    let mut silent: Vec<TcpStream> = (200..400)
        .map(|n| connect_from(&hostile_source(n), &address))
        .collect();
    // A body that trickles: headers complete, then one byte per second.
    let mut slow_bodies: Vec<TcpStream> = (400..450)
        .map(|n| {
            let mut stream = connect_from(&hostile_source(n), &address);
            stream.write_all(&post_head(1000, "")).unwrap();
            stream.write_all(b"{").unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let normal = normal_webhook(&daemon);
    let health = client().get(&format!("{}/healthz", daemon.base), &[]);
    assert_eq!(health.status, 200);

    let trickled = wait_closed(&mut trickling, started, Duration::from_secs(8));
    let quiet = wait_closed(&mut silent, started, Duration::from_secs(8));
    assert!(
        trickled.iter().all(Option::is_some),
        "trickling headers: {}",
        spread(&trickled)
    );
    assert!(
        quiet.iter().all(Option::is_some),
        "silent connections: {}",
        spread(&quiet)
    );
    row(
        &format!(
            "200 connections sending a header byte per second: {}",
            spread(&trickled)
        ),
        "closed (408)",
        started.elapsed(),
        normal,
    );
    row(
        &format!("200 connections sending nothing: {}", spread(&quiet)),
        "closed",
        started.elapsed(),
        normal,
    );
    for stream in &mut slow_bodies {
        stream.set_nonblocking(false).unwrap();
        let response = http_client::read_response(stream);
        assert_eq!(response.status, 408, "{}", response.body);
    }
    row(
        "50 slow bodies (1 byte, then nothing)",
        408,
        started.elapsed(),
        normal,
    );
    writer.join().unwrap();
    drop((trickling, silent, slow_bodies));
    assert_alive(&mut daemon);
    normal_webhook(&daemon);
    let fds_after = wait_for(Duration::from_secs(5), || {
        let n = open_sockets(&daemon);
        (n <= fds_before).then_some(n)
    });
    println!("| open sockets: before {fds_before}, after {fds_after:?} |");
    assert!(
        fds_after.is_some(),
        "sockets: before {fd_list:?}, now {:?}",
        fd_targets(&daemon)
    );
    check_memory("slowloris", &daemon, before, 100);
}

/// The HTTP/2 connection preface and an empty SETTINGS frame: an h2c client that then idles.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// More connections than `max_connections`, opened and held (HTTP/1 silent, HTTP/1 idle after a
/// request, HTTP/2 idle after its preface, a partial preface): the extra ones wait in the
/// backlog, every held one is cut at the header timeout, a normal client is served once slots
/// free, and no descriptor leaks.
#[test]
fn connections_beyond_max_connections_wait_and_slots_free_up() {
    let _serial = serial();
    let mut daemon = Daemon::start(
        "[server]\nmax_connections = 32\nheader_read_timeout = \"2s\"\nbody_read_timeout = \"2s\"\n",
    );
    let address = address_of(&daemon);
    normal_webhook(&daemon);
    let before = Memory::of(&daemon);
    let fds_before = open_sockets(&daemon);
    let fd_list = fd_targets(&daemon);
    for (case, opening) in [
        ("silent", b"".as_slice()),
        (
            "HTTP/1.1 keep-alive, idle after one request",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        ("HTTP/2 (h2c) idle after its preface", H2_PREFACE),
        ("half an HTTP/2 preface", b"PRI * HTTP/2.0\r\n"),
    ] {
        let started = Instant::now();
        let mut held: Vec<TcpStream> = (0..100)
            .map(|_| {
                let mut stream = connect(&address);
                stream.write_all(opening).unwrap();
                stream
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        // The 33rd and later wait in the kernel's backlog: connected, but not served yet; so
        // does the normal client, behind them, until slots free up.
        let url = format!("{}/webhook", daemon.base);
        let normal = std::thread::spawn(move || {
            let started = Instant::now();
            let response = client().post(&url, &[JSON], fixture("firing-single.json").as_bytes());
            (response.status, started.elapsed())
        });
        let closed = wait_closed(&mut held, started, Duration::from_secs(15));
        let (status, normal) = normal.join().unwrap();
        assert_eq!(
            status, 200,
            "{case}: the normal client is served once slots free"
        );
        assert!(
            closed.iter().all(Option::is_some),
            "{case}: {}",
            spread(&closed)
        );
        row(
            &format!(
                "100 connections held ({case}) with max_connections = 32: {}",
                spread(&closed)
            ),
            "closed",
            normal,
            normal,
        );
        drop(held);
    }
    assert_alive(&mut daemon);
    let fds_after = wait_for(Duration::from_secs(5), || {
        let n = open_sockets(&daemon);
        (n <= fds_before).then_some(n)
    });
    println!("| open sockets: before {fds_before}, after {fds_after:?} |");
    assert!(
        fds_after.is_some(),
        "sockets: before {fd_list:?}, now {:?}",
        fd_targets(&daemon)
    );
    check_memory("many connections", &daemon, before, 100);
}

/// One peer holds connections that never authenticate: 150 that send nothing, from one
/// address, and 50 from another that each send a request without a credential, while
/// `max_connections` is 100. The silent ones beyond the peer's limit of 64 are closed without an
/// answer; the refused requests are answered 401 and closed; so slots stay free and another
/// client's authenticated webhook is served, as is one from the crowding peer itself that
/// sends its request at once. Before the limit, the silent connections held every slot until
/// the header timeout (60 s here), and a 401 kept its connection open.
#[test]
fn one_peer_cannot_take_every_slot_with_connections_that_never_authenticate() {
    let _serial = serial();
    let mut daemon =
        daemon_with_credentials("max_connections = 100\nheader_read_timeout = \"60s\"\n");
    let address = address_of(&daemon);
    let started = Instant::now();
    let mut silent: Vec<TcpStream> = (0..150)
        .map(|_| connect_from("127.0.0.2", &address))
        .collect();
    let beyond_limit = 150 - 64;
    let closed = wait_for(Duration::from_secs(20), || {
        let closed = count_closed(&mut silent);
        (closed >= beyond_limit).then_some(closed)
    });
    assert_eq!(
        closed,
        Some(beyond_limit),
        "silent connections beyond the peer's limit are closed\n{}",
        daemon.log()
    );
    row(
        "150 silent connections from one peer, max_connections = 100",
        format!("{beyond_limit} closed, 64 held"),
        started.elapsed(),
        Duration::ZERO,
    );
    let refused: Vec<_> = (0..50)
        .map(|_| {
            let mut stream = connect_from("127.0.0.3", &address);
            stream
                .write_all(b"GET /api/v1/incidents HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            stream
        })
        .collect();
    for mut stream in refused {
        let answer = read_until_closed(&mut stream).expect("closed after the 401");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    }
    let response = client().post(
        &format!("{}/webhook", daemon.base),
        &[JSON, ("Authorization", "Bearer ingest-secret")],
        fixture("firing-single.json").as_bytes(),
    );
    assert_eq!(response.status, 200, "{}\n{}", response.body, daemon.log());
    // The crowding peer's own client, sending its request at once, is served too.
    let body = fixture("firing-single.json");
    let mut stream = connect_from("127.0.0.2", &address);
    let head = format!(
        "POST /webhook HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ingest-secret\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let response = http_client::read_response(&mut stream);
    assert_eq!(response.status, 200, "{}", response.body);
    row(
        "authenticated webhooks meanwhile (another peer; the crowding one)",
        200,
        started.elapsed(),
        Duration::ZERO,
    );
    drop(silent);
    assert_alive(&mut daemon);
}

/// An HTTP/2 (prior knowledge) GET of `path` without a credential, from a client that
/// acknowledges the server's SETTINGS and PINGs (hyper's graceful GOAWAY waits for a PING's
/// answer): the frames the server sent, as (type, stream), until it closed the connection;
/// `None` if it did not close it within 20 s.
fn http2_get_until_closed(address: &str, path: &str) -> Option<Vec<(u8, u32)>> {
    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    const ACK: u8 = 0x1;
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        frame.extend_from_slice(&[kind, flags]);
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    };
    // Header block: :method GET and :scheme http from the static table, then :path and
    // :authority as literals without indexing (name indices 4 and 1).
    let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 0x01, b'x']);
    let mut request = H2_PREFACE.to_vec();
    // HEADERS with END_STREAM and END_HEADERS, stream 1.
    request.extend_from_slice(&frame(0x1, 0x5, 1, &block));
    let mut stream = connect(address);
    stream.write_all(&request).unwrap();
    let mut frames = Vec::new();
    let mut received = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return Some(frames),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(frames);
            }
            Err(_) => return None,
        }
        while received.len() >= 9 {
            let length = u32::from_be_bytes([0, received[0], received[1], received[2]]) as usize;
            if received.len() < 9 + length {
                break;
            }
            let (kind, flags) = (received[3], received[4]);
            let id = u32::from_be_bytes([received[5], received[6], received[7], received[8]]);
            let payload = received[9..9 + length].to_vec();
            received.drain(..9 + length);
            frames.push((kind, id & 0x7fff_ffff));
            let answer = match kind {
                SETTINGS if flags & ACK == 0 => frame(SETTINGS, ACK, 0, &[]),
                PING if flags & ACK == 0 => frame(PING, ACK, 0, &payload),
                _ => continue,
            };
            // The server may close first.
            let _ = stream.write_all(&answer);
        }
    }
}

/// A request answered 401 closes its connection: over HTTP/1 with `Connection: close` (a
/// request sent right behind it is not answered), over HTTP/2 with GOAWAY. Otherwise a client
/// could hold a connection, and its slot, with a stream of cheap refused requests.
#[test]
fn a_401_answer_closes_the_connection() {
    let _serial = serial();
    let mut daemon = daemon_with_credentials("header_read_timeout = \"60s\"\n");
    let address = address_of(&daemon);
    let mut stream = connect(&address);
    stream
        .write_all(
            b"GET /api/v1/incidents HTTP/1.1\r\nHost: x\r\n\r\n\
              POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        )
        .unwrap();
    let answer = read_until_closed(&mut stream).expect("the server closes the connection");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{text}"
    );
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "one answer: {text}");

    let frames = http2_get_until_closed(&address, "/api/v1/incidents")
        .expect("the server closes the HTTP/2 connection");
    const HEADERS: u8 = 0x1;
    const GOAWAY: u8 = 0x7;
    assert!(frames.contains(&(HEADERS, 1)), "the answer: {frames:?}");
    assert!(frames.contains(&(GOAWAY, 0)), "GOAWAY: {frames:?}");
    assert_alive(&mut daemon);
}

/// A backlog of large unreconciled notifications at start (after a crash in a storm of large
/// bodies): a reconcile batch is bounded by the bytes of its bodies (32 MiB) as well as by
/// count, so the restarted daemon works through 60 bodies of 8 MiB a few at a time. Bounded by
/// count alone (512 notifications), it loaded them all at once: ~470 MiB here, 4 GiB for 512.
#[test]
fn reconcile_after_a_restart_holds_a_bounded_batch_of_bodies() {
    let _serial = serial();
    // A budget high enough to let 60 large bodies in at once, so that they pile up.
    let mut daemon = Daemon::start(
        "[auth]\nallow_unauthenticated = [\"webhook\"]\n[server]\nmax_inflight_body_bytes = 2147483648\n",
    );
    let address = address_of(&daemon);
    let senders: Vec<_> = (0..60)
        .map(|n| {
            let address = address.clone();
            std::thread::spawn(move || {
                let body = padded_webhook(8 * MIB - 4096, &format!("g{n}"));
                // The debug build commits an 8 MiB body in ~0.4 s: allow for the queue.
                let mut stream = connect(&address);
                stream
                    .set_read_timeout(Some(Duration::from_secs(120)))
                    .unwrap();
                stream.write_all(&post_head(body.len(), "")).unwrap();
                stream.write_all(&body).unwrap();
                http_client::read_response(&mut stream).status
            })
        })
        .collect();
    let stored = senders
        .into_iter()
        .map(|sender| sender.join().unwrap())
        .filter(|status| *status == 200)
        .count();
    assert!(stored >= 50, "{stored} stored");
    daemon.kill9();
    daemon.spawn();
    let before = Memory::of(&daemon);
    let reconciled = wait_for(Duration::from_secs(120), || {
        let text = client().get(&format!("{}/metrics", daemon.base), &[]).body;
        text.contains("nightshift_notifications_unreconciled 0")
            .then_some(())
    });
    assert!(reconciled.is_some());
    check_memory(
        "reconcile of 60 x 8 MiB after a restart",
        &daemon,
        before,
        200,
    );
}
