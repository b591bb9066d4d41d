//! Helpers shared by the integration tests: start the real `nightshift` binary on
//! 127.0.0.1:0 with a temporary state directory, talk to it, kill and restart it.

pub mod stack;

pub use stack::{ADMIN, Stack, install_vastai_runbook, transition_done};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Install the rustls crypto provider (ring) for the whole test process, before anything builds
/// a TLS config. Every integration test runs in one process (`tests/it`): the fakes and the
/// TLS client of `lifecycle` both come here, so the process gets one provider, set one way.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// One heavy test at a time, across the whole test binary: the storms (a real Alertmanager and
/// Prometheus and thousands of alerts), the hostile-input tests (their memory and time figures
/// mean something only without another heavy test's load on the same CPUs) and the package
/// test (a release build). When each file was its own test binary, the storms and the hostile
/// tests each had their own lock and never met, as cargo runs test binaries one after another;
/// in one binary they share this one.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/alertmanager");

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(FIXTURES).join(name)).expect("fixture")
}

/// A running daemon and its state directory.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub base: String,
    child: Option<Child>,
    pub env: Vec<(String, String)>,
    /// The file-creation mask the daemon starts with, when not inherited.
    pub umask: Option<u32>,
    /// A program (with its arguments) the daemon runs under, such as `strace -f -o …`; the
    /// daemon's command line follows them. Empty: the daemon runs directly.
    pub wrapper: Vec<String>,
}

impl Daemon {
    /// Start with `extra` TOML appended after the `[server]`/`[store]` essentials. `extra` may
    /// use `{dir}` for the state directory's parent (where token files go).
    pub fn start(extra: &str) -> Daemon {
        Self::start_with_env(extra, &[])
    }

    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> Daemon {
        let mut daemon = Self::prepare(extra, env);
        daemon.spawn();
        daemon
    }

    /// Write the config but do not start yet (to place files the config names first).
    pub fn prepare(extra: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("nightshift.toml");
        let root = dir.path().display().to_string();
        let text = extra.replace("{dir}", &root);
        // Listen address and state directory come from environment overrides, so that `extra`
        // may hold any section (and the layering is exercised on every test).
        let mut all_env = vec![
            (
                "NIGHTSHIFT_SERVER__LISTEN".to_owned(),
                "127.0.0.1:0".to_owned(),
            ),
            ("NIGHTSHIFT_STORE__DIR".to_owned(), format!("{root}/var")),
        ];
        // Rules come from the test's own directory, never the repository's runbooks (whose
        // probes would reach out to real status pages).
        if !text.contains("[rules]") {
            all_env.push(("NIGHTSHIFT_RULES__DIR".to_owned(), format!("{root}/rules")));
        }
        if !text.contains("shutdown_timeout") {
            all_env.push((
                "NIGHTSHIFT_SERVER__SHUTDOWN_TIMEOUT".to_owned(),
                "5s".to_owned(),
            ));
        }
        all_env.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        std::fs::write(&config, text).expect("write config");
        Daemon {
            dir,
            config,
            base: String::new(),
            child: None,
            env: all_env,
            umask: None,
            wrapper: Vec::new(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("var")
    }

    /// Write a file beside the config, readable by its owner only (nightshift refuses a
    /// credential file that others may read).
    pub fn write_file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path(name);
        write_private(&path, content);
        path
    }

    /// nightshift refuses an empty rules directory (runbooks that went missing must be loud):
    /// a test that brings no rules of its own into the harness's directory gets one rule that
    /// matches nothing, so every alert still goes to the default rule.
    fn ensure_a_rule(&self) {
        let harness_dir = format!("{}/rules", self.dir.path().display());
        let uses_harness_dir = self
            .env
            .iter()
            .any(|(k, v)| k == "NIGHTSHIFT_RULES__DIR" && *v == harness_dir);
        if !uses_harness_dir {
            return;
        }
        let dir = std::path::Path::new(&harness_dir);
        let has_rules = std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| e.path().extension().is_some_and(|x| x == "toml"))
        });
        if !has_rules {
            std::fs::create_dir_all(dir).expect("rules dir");
            std::fs::write(
                dir.join("harness.toml"),
                "# Written by the test harness: the daemon refuses an empty rules directory.\n\
                 [[rule]]\nname = \"harness-placeholder\"\n\
                 matchers = ['alertname=\"__matches_nothing__\"']\nseverity = \"P4\"\n",
            )
            .expect("placeholder rule");
        }
    }

    /// The token nightshift generated for `role` (`ingest`, `read`, `admin`), if it did.
    pub fn generated_token(&self, role: &str) -> Option<String> {
        std::fs::read_to_string(self.state_dir().join("credentials").join(role))
            .ok()
            .map(|text| text.trim().to_owned())
    }

    /// Let the test client send the generated credentials to this daemon, the way Alertmanager,
    /// Prometheus and an operator are given them; credentials a test configured itself are its
    /// own business.
    fn remember_generated_credentials(&self) {
        let host = self.base.trim_start_matches("http://").to_owned();
        http_client::remember(
            &host,
            http_client::Tokens {
                ingest: self.generated_token("ingest"),
                read: self.generated_token("read"),
                admin: self.generated_token("admin"),
            },
        );
    }

    fn address_file(&self) -> PathBuf {
        self.state_dir().join("nightshift.addr")
    }

    /// Start the binary (again) on the same state directory and wait until it listens.
    pub fn spawn(&mut self) {
        self.ensure_a_rule();
        let _ = std::fs::remove_file(self.address_file());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("daemon.log"))
            .expect("log file");
        let binary = env!("CARGO_BIN_EXE_nightshift");
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .args(["run", "--config"])
            .arg(&self.config)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        if let Some(mask) = self.umask {
            use std::os::unix::process::CommandExt;
            // SAFETY: umask is async-signal-safe and touches only the child's own state.
            unsafe {
                command.pre_exec(move || {
                    libc::umask(mask as libc::mode_t);
                    Ok(())
                });
            }
        }
        let child = command.spawn().expect("spawn nightshift");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(self.address_file())
                && text.ends_with('\n')
            {
                self.base = text.trim().to_owned();
                self.remember_generated_credentials();
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "nightshift exited with {status} before listening:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "nightshift did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The daemon's own process when it runs under a [`Daemon::wrapper`] (the wrapper's
    /// child), once it has been started.
    pub fn wrapped_pid(&self) -> Option<i32> {
        let pid = self.child.as_ref()?.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// SIGKILL: no chance to flush or clean up (the daemon first, when it runs under a
    /// wrapper, so that it is never left running on its own).
    pub fn kill9(&mut self) {
        if let Some(pid) = self.wrapped_pid() {
            // SAFETY: signalling our own child's child, the daemon.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn signal(&self, signal: i32) {
        let pid = self.pid() as i32;
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// SIGTERM and wait (bounded) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("nightshift did not stop after SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Run a nightshift CLI command against this daemon's config.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_nightshift"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run nightshift")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A blocking HTTP client for tests; every call has a timeout.
/// A bundle's files (a `tar.gz` as downloaded), by path inside the one folder every entry
/// lives in (named after the incident); a file outside it fails the test.
pub fn untar(bytes: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    untar_with_folder(bytes).1
}

/// The folder a bundle's entries live in, and its files by path inside it.
pub fn untar_with_folder(bytes: &[u8]) -> (String, std::collections::BTreeMap<String, Vec<u8>>) {
    use std::io::Read;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut files = std::collections::BTreeMap::new();
    let mut folder: Option<String> = None;
    for entry in archive.entries().expect("a tar.gz") {
        let mut entry = entry.expect("an entry");
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let (top, rest) = name.split_once('/').unwrap_or((name.as_str(), ""));
        let top = top.to_owned();
        let rest = rest.to_owned();
        match &folder {
            None => folder = Some(top),
            Some(seen) => assert_eq!(seen, &top, "{name} is outside the bundle's folder"),
        }
        if rest.is_empty() {
            assert!(
                entry.header().entry_type().is_dir(),
                "{name} is not in a folder"
            );
            continue;
        }
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        files.insert(rest, content);
    }
    (folder.expect("an empty archive"), files)
}

/// Stop a helper process (Alertmanager, Prometheus): SIGTERM, up to 5 s to exit, then SIGKILL.
pub fn stop_child(mut child: Child) {
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Write a file readable by its owner only.
pub fn write_private(path: &std::path::Path, content: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .expect("write file");
    file.write_all(content.as_bytes()).expect("write file");
}

pub fn client() -> http_client::Client {
    http_client::Client::new()
}

/// A very small blocking HTTP/1.1 client over std's TcpStream, so tests need no extra crate
/// and can also send what a normal client would refuse to.
pub mod http_client {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    pub struct Client;

    /// The credentials a daemon generated, sent by [`Client`] to that daemon's endpoints when a
    /// request names no `authorization` (an empty one sends none).
    #[derive(Debug, Clone, Default)]
    pub struct Tokens {
        pub ingest: Option<String>,
        pub read: Option<String>,
        pub admin: Option<String>,
    }

    static TOKENS: std::sync::Mutex<Vec<(String, Tokens)>> = std::sync::Mutex::new(Vec::new());

    pub fn remember(host: &str, tokens: Tokens) {
        let mut all = TOKENS.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|(h, _)| h != host);
        all.push((host.to_owned(), tokens));
    }

    fn token_for(host: &str, path: &str) -> Option<String> {
        let all = TOKENS.lock().unwrap_or_else(|p| p.into_inner());
        let tokens = &all.iter().find(|(h, _)| h == host)?.1;
        if path.starts_with("/webhook") {
            tokens.ingest.clone()
        } else if path.starts_with("/-/") {
            tokens.admin.clone()
        } else if path.starts_with("/api/")
            || path.starts_with("/readyz")
            || path.starts_with("/metrics")
        {
            tokens.read.clone()
        } else {
            None
        }
    }

    #[derive(Debug)]
    pub struct Response {
        pub status: u16,
        pub headers: Vec<(String, String)>,
        pub body: String,
        /// The body as received (after de-chunking), for binary answers.
        pub bytes: Vec<u8>,
    }

    impl Response {
        pub fn body_bytes(&self) -> &[u8] {
            &self.bytes
        }

        pub fn json(&self) -> serde_json::Value {
            serde_json::from_str(&self.body)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
        }

        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    impl Client {
        pub fn new() -> Client {
            Client
        }

        pub fn get(&self, url: &str, headers: &[(&str, &str)]) -> Response {
            self.request("GET", url, headers, &[])
        }

        pub fn post(&self, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
            self.request("POST", url, headers, body)
        }

        pub fn request(
            &self,
            method: &str,
            url: &str,
            headers: &[(&str, &str)],
            body: &[u8],
        ) -> Response {
            let rest = url.strip_prefix("http://").expect("http URL");
            let (host, path) = rest
                .split_once('/')
                .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
            // A refused connection is an answer too (status 0), for polling servers that are
            // still starting.
            let mut stream = match TcpStream::connect(host) {
                Ok(stream) => stream,
                Err(error) => {
                    return Response {
                        status: 0,
                        headers: Vec::new(),
                        body: error.to_string(),
                        bytes: Vec::new(),
                    };
                }
            };
            // Generous: a debug build parsing several 8 MiB bodies in turn on a loaded 2-core
            // machine has taken more than 20 s; only a hung server should hit this.
            stream
                .set_read_timeout(Some(Duration::from_secs(90)))
                .unwrap();
            let mut request = format!(
                "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
                body.len()
            );
            let mut authorization = false;
            for (name, value) in headers {
                if name.eq_ignore_ascii_case("authorization") {
                    authorization = true;
                    if value.is_empty() {
                        continue;
                    }
                }
                request.push_str(&format!("{name}: {value}\r\n"));
            }
            if !authorization && let Some(token) = token_for(host, &path) {
                request.push_str(&format!("Authorization: Bearer {token}\r\n"));
            }
            request.push_str("\r\n");
            stream.write_all(request.as_bytes()).expect("write");
            // The server may answer (413) before reading a large body; ignore a reset then.
            let _ = stream.write_all(body);
            read_response(&mut stream)
        }
    }

    pub fn read_response(stream: &mut TcpStream) -> Response {
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(raw.len());
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let body = raw.get(split + 4..).unwrap_or_default();
        let mut lines = head.lines();
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
        let bytes = if chunked {
            dechunk(body)
        } else {
            body.to_vec()
        };
        Response {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            bytes,
        }
    }

    fn dechunk(mut body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") {
            let size = String::from_utf8_lossy(&body[..line_end]).trim().to_owned();
            let Ok(size) = usize::from_str_radix(&size, 16) else {
                break;
            };
            let rest = &body[line_end + 2..];
            if size == 0 || rest.len() < size {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            body = rest[size..].strip_prefix(b"\r\n").unwrap_or(&rest[size..]);
        }
        out
    }
}

pub const JSON: (&str, &str) = ("Content-Type", "application/json");

/// Poll `check` until it returns Some, for at most `timeout`.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A webhook body for one group with the given alerts `(name, instance, status, startsAt)`.
pub fn webhook(group: &str, alerts: &[(&str, &str, &str, &str)], truncated: u64) -> String {
    let alerts: Vec<serde_json::Value> = alerts
        .iter()
        .map(|(name, instance, status, starts_at)| {
            serde_json::json!({
                "status": status,
                "labels": {"alertname": name, "instance": instance, "severity": "critical"},
                "annotations": {"summary": format!("{name} on {instance}")},
                "startsAt": starts_at,
                "endsAt": if *status == "firing" { "0001-01-01T00:00:00Z".to_owned() } else { "2026-11-28T03:30:00Z".to_owned() },
                "generatorURL": "http://prometheus.invalid/graph",
                "fingerprint": "",
            })
        })
        .collect();
    let any_firing = alerts.iter().any(|a| a["status"] == "firing");
    serde_json::json!({
        "receiver": "nightshift",
        "status": if any_firing { "firing" } else { "resolved" },
        "alerts": alerts,
        "groupLabels": {"alertname": group},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.invalid",
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{group}\"}}"),
        "truncatedAlerts": truncated,
    })
    .to_string()
}
