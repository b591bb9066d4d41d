//! `exec` actions: a local command, given as an argv list and run without a shell.
//!
//! Inputs are data, never code:
//! * every argv template renders to exactly one argument, which is never split or handed to a
//!   shell, so `$(reboot)`, `; rm -rf /` or `` `id` `` in a label stay literal text;
//! * label values are data to minijinja: `{{ 7*7 }}` inside a label is not evaluated;
//! * the program (`argv[0]`) is a literal absolute path, never a template;
//! * a rendered argument whose leading `-` comes from a template is refused unless the rule
//!   sets `allow_leading_dash` (a `--flag` written out in the rule file is fine);
//! * the environment is cleared: the command sees only a fixed `PATH` and `NIGHTSHIFT_*`
//!   variables whose names are built from sanitised label names, never raw label text.
//!
//! The command runs in its own process group; on timeout the whole group is killed, so a
//! grandchild it started does not outlive it. Output is captured up to a bound per stream;
//! the rest is read and discarded so that the command never blocks on a full pipe.
//!
//! Known limits: the group kill does not reach a process that left the group (`setsid`,
//! daemonising); a background process the command leaves behind after exiting normally is
//! not killed (only its hold on the output pipes is given up on, after a short grace, and the
//! output marked truncated). Dropping the future of [`run`] before the command has been
//! reaped kills the group too.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::Outcome;
use crate::rules::template::Template;

/// The `PATH` every command gets; nothing else is inherited from the daemon.
pub const FIXED_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// How long to wait for the output pipes to close once the command has exited (or has been
/// killed). A process that escaped the group, or a background child left running after a
/// normal exit, may hold them open; its output is then given up on and the capture is marked
/// truncated.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// A command ready to run: every argument rendered and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// Rendered, one element per template; `argv[0]` is the absolute path of the program.
    pub argv: Vec<String>,
    /// The complete environment of the command (see [`incident_env`]).
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    /// The bound on the captured bytes of stdout, and separately of stderr.
    pub max_output_bytes: usize,
}

/// The template text before its first template tag: what the rule file wrote out literally at
/// the start of the argument.
fn literal_prefix(source: &str) -> &str {
    let end = [source.find("{{"), source.find("{%")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(source.len());
    &source[..end]
}

fn leading_dashes(text: &str) -> usize {
    text.bytes().take_while(|&b| b == b'-').count()
}

/// Render each argv template to exactly one argument.
///
/// Refused: an empty argv; a program that is templated or not an absolute path; a NUL byte in
/// any argument; an argument (after the program) whose leading dashes were not all written
/// out literally at the start of its template, unless `allow_leading_dash`. So `--flag={{ x }}`
/// is fine whatever `x` is, `{{ x }}` rendering to `-rf` is refused, and so is `-{{ x }}`
/// rendering to `--kubeconfig=/x` (the template turned the rule's `-` into `--`).
pub fn render_argv(
    templates: &[String],
    context: &impl Serialize,
    allow_leading_dash: bool,
) -> Result<Vec<String>, String> {
    let Some(program) = templates.first() else {
        return Err("argv is empty".to_owned());
    };
    if !Template::is_literal(program) {
        return Err("argv[0], the program, must not be a template".to_owned());
    }
    if !program.starts_with('/') {
        return Err(format!(
            "argv[0] {program:?} must be an absolute path (no PATH lookup)"
        ));
    }
    let mut argv = Vec::with_capacity(templates.len());
    for (index, source) in templates.iter().enumerate() {
        let template = Template {
            source: source.clone(),
        };
        let value = template
            .render(context)
            .map_err(|error| format!("argv[{index}]: {error}"))?;
        if value.contains('\0') {
            return Err(format!(
                "argv[{index}]: the rendered value holds a NUL byte"
            ));
        }
        if index > 0
            && !allow_leading_dash
            && leading_dashes(&value) > leading_dashes(literal_prefix(source))
        {
            return Err(format!(
                "argv[{index}]: the rendered value {value:?} starts with '-' from a template; \
                 set allow_leading_dash = true on the action to permit it"
            ));
        }
        argv.push(value);
    }
    Ok(argv)
}

/// The name of the variable carrying label `name`: `NIGHTSHIFT_LABEL_` and the name
/// upper-cased, with every character outside `[A-Z0-9_]` replaced by `_`.
pub fn label_env_name(name: &str) -> String {
    let mut out = String::from("NIGHTSHIFT_LABEL_");
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    out
}

/// A NUL byte cannot be passed in an environment value; it is replaced (U+FFFD) rather than
/// letting one odd label stop the action.
fn env_value(value: &str) -> String {
    value.replace('\0', "\u{FFFD}")
}

/// The whole environment of an `exec` command: a fixed `PATH`, `NIGHTSHIFT_INCIDENT_ID`,
/// `NIGHTSHIFT_RULE`, `NIGHTSHIFT_SEVERITY` and one `NIGHTSHIFT_LABEL_<NAME>` per label (see
/// [`label_env_name`]). When two label names map to one variable (`a-b` and `a_b`), the first
/// in sorted order wins.
pub fn incident_env(
    incident_id: &str,
    rule: &str,
    severity: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_owned(), FIXED_PATH.to_owned()),
        ("NIGHTSHIFT_INCIDENT_ID".to_owned(), env_value(incident_id)),
        ("NIGHTSHIFT_RULE".to_owned(), env_value(rule)),
        ("NIGHTSHIFT_SEVERITY".to_owned(), env_value(severity)),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (name, value) in labels {
        let key = label_env_name(name);
        if seen.insert(key.clone()) {
            env.push((key, env_value(value)));
        }
    }
    env
}

/// What was read from one output stream.
#[derive(Debug, Default)]
struct Capture {
    kept: Vec<u8>,
    /// More bytes arrived than were kept.
    truncated: bool,
    /// The stream reached its end (all writers closed it).
    closed: bool,
}

type SharedCapture = Arc<Mutex<Capture>>;

/// Read `stream` to its end, keeping at most `max` bytes and discarding the rest.
fn drain(
    mut stream: impl AsyncRead + Unpin + Send + 'static,
    max: usize,
) -> (SharedCapture, tokio::task::JoinHandle<()>) {
    let capture: SharedCapture = Arc::default();
    let shared = capture.clone();
    let task = tokio::spawn(async move {
        let mut buffer = vec![0u8; 8192];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) => break,
                Ok(n) => {
                    let mut capture = shared.lock().unwrap_or_else(|p| p.into_inner());
                    let room = max.saturating_sub(capture.kept.len());
                    if n > room {
                        capture.truncated = true;
                    }
                    let keep = n.min(room);
                    capture.kept.extend_from_slice(&buffer[..keep]);
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        shared.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
    });
    (capture, task)
}

/// Wait (briefly) for the readers, then take what they captured. A stream still open after
/// the grace counts as truncated.
async fn collect(
    readers: Vec<(SharedCapture, tokio::task::JoinHandle<()>)>,
) -> Vec<(String, bool)> {
    let deadline = tokio::time::Instant::now() + DRAIN_GRACE;
    let mut out = Vec::new();
    for (capture, mut task) in readers {
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            task.abort();
        }
        let capture = capture.lock().unwrap_or_else(|p| p.into_inner());
        out.push((
            String::from_utf8_lossy(&capture.kept).into_owned(),
            capture.truncated || !capture.closed,
        ));
    }
    out
}

fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("")
}

fn human(duration: Duration) -> String {
    crate::duration::format(duration)
}

/// Run the command once.
///
/// * exit 0 → `Done { exit_code, stdout, stderr, truncated, duration_ms }`;
/// * another exit code, or death by a signal → `Failed` (it ran; not retried);
/// * the program could not be started (missing, not executable) → `NotApplied`, not
///   retryable (nothing ran, and running it again will not help);
/// * the timeout passed → its process group is killed and the child reaped; `Unknown`, since
///   it may have done part of its work.
pub async fn run(request: &ExecRequest) -> Outcome {
    match run_to_end(request).await {
        Ok(ran) => ran.outcome(),
        Err(outcome) => outcome,
    }
}

/// How a command that ran ended, with what it printed, whatever its exit code.
#[derive(Debug, Clone, PartialEq)]
pub struct Ran {
    /// `None` when a signal killed it.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
    pub duration_ms: u64,
}

impl Ran {
    /// As an action's outcome: exit 0 is done, anything else failed (it ran; not retried).
    pub fn outcome(self) -> Outcome {
        match self.exit_code {
            Some(0) => Outcome::Done {
                detail: json!({
                    "exit_code": 0,
                    "stdout": self.stdout,
                    "stderr": self.stderr,
                    "truncated": self.truncated,
                    "duration_ms": self.duration_ms,
                }),
            },
            Some(code) => Outcome::Failed {
                error: with_line(format!("exit code {code}"), &self.stderr),
            },
            None => Outcome::Failed {
                error: with_line(
                    format!("killed by signal {}", self.signal.unwrap_or_default()),
                    &self.stderr,
                ),
            },
        }
    }
}

/// Run the command once and keep its output whatever its exit code (diagnostic commands,
/// which often exit non-zero with the evidence on stdout). `Err` holds the outcome when it did
/// not run to an exit: not started (`NotApplied`), timed out or lost (`Unknown`).
pub async fn run_to_end(request: &ExecRequest) -> Result<Ran, Outcome> {
    let Some(program) = request.argv.first() else {
        return Err(Outcome::NotApplied {
            error: "argv is empty".to_owned(),
            retryable: false,
        });
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(&request.argv[1..])
        .env_clear()
        .envs(request.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            return Err(Outcome::NotApplied {
                error: format!("could not start {program}: {error}"),
                retryable: false,
            });
        }
    };
    // With process_group(0) the child leads a new group whose id is its pid. The pid stays
    // ours (running or a zombie) until `wait` reaps it, so the group id cannot be reused
    // before then; the guard is disarmed as soon as the child is reaped. If this future is
    // dropped before that (the worker cancelled), the guard kills the whole group.
    let mut group = GroupGuard {
        pgid: child.id().and_then(|p| libc::pid_t::try_from(p).ok()),
    };
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        readers.push(drain(stdout, request.max_output_bytes));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(drain(stderr, request.max_output_bytes));
    }

    let status = match tokio::time::timeout(request.timeout, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            group.kill();
            let _ = child.start_kill();
            let _ = child.wait().await;
            group.disarm();
            let _ = collect(readers).await;
            return Err(Outcome::Unknown {
                error: format!(
                    "timed out after {}; killed its process group",
                    human(request.timeout)
                ),
            });
        }
    };
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let status = match status {
        Ok(status) => {
            group.disarm();
            status
        }
        Err(error) => {
            // The child was started; what it did is not known. Stop whatever is left of it.
            group.kill();
            let _ = collect(readers).await;
            return Err(Outcome::Unknown {
                error: format!("waiting for {program} failed: {error}"),
            });
        }
    };
    let mut captured = collect(readers).await.into_iter();
    let (stdout, stdout_truncated) = captured.next().unwrap_or_default();
    let (stderr, stderr_truncated) = captured.next().unwrap_or_default();
    Ok(Ran {
        exit_code: status.code(),
        signal: status.signal(),
        stdout,
        stderr,
        truncated: stdout_truncated || stderr_truncated,
        duration_ms,
    })
}

/// Kills the command's process group when dropped while armed (the child not reaped yet).
struct GroupGuard {
    pgid: Option<libc::pid_t>,
}

impl GroupGuard {
    fn kill(&self) {
        if let Some(pgid) = self.pgid {
            // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names the
            // process group created for the child, whose leader is not reaped yet.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }

    /// The child has been reaped: its pid, and so the group id, may be reused from now on.
    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

fn with_line(mut message: String, stderr: &str) -> String {
    let line = first_line(stderr);
    if !line.is_empty() {
        message.push_str(": ");
        message.push_str(line);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn argv(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn each_template_is_one_argument_and_labels_are_data() {
        let context =
            json!({"labels": {"a": "$(reboot); rm -rf / `id`", "b": "{{ 7*7 }}", "c": "x y"}});
        let rendered = render_argv(
            &argv(&[
                "/bin/echo",
                "{{ labels.a }}",
                "{{ labels.b }}",
                "{{ labels.c }}",
            ]),
            &context,
            false,
        )
        .unwrap();
        assert_eq!(
            rendered,
            argv(&["/bin/echo", "$(reboot); rm -rf / `id`", "{{ 7*7 }}", "x y"])
        );
    }

    #[test]
    fn program_must_be_literal_and_absolute() {
        let context = json!({"labels": {"p": "/bin/sh"}});
        assert!(render_argv(&[], &context, false).is_err());
        assert!(
            render_argv(&argv(&["{{ labels.p }}"]), &context, false)
                .unwrap_err()
                .contains("must not be a template")
        );
        assert!(
            render_argv(&argv(&["echo", "x"]), &context, false)
                .unwrap_err()
                .contains("absolute")
        );
    }

    #[test]
    fn leading_dash_from_a_template_is_refused_unless_allowed() {
        let context =
            json!({"labels": {"k": "--kubeconfig=/x", "s": "-kubeconfig=/x", "ok": "-1"}});
        for source in ["{{ labels.k }}", "-{{ labels.s }}", " {{- labels.k }}"] {
            let templates = argv(&["/bin/echo", source]);
            assert!(
                render_argv(&templates, &context, false)
                    .unwrap_err()
                    .contains("allow_leading_dash"),
                "{source}"
            );
            assert!(render_argv(&templates, &context, true).is_ok(), "{source}");
        }
        // Dashes written in the rule file are fine, whatever the template adds after them.
        let rendered = render_argv(
            &argv(&[
                "/bin/echo",
                "--literal",
                "--value={{ labels.k }}",
                "-n{{ labels.ok }}",
                "x{{ labels.k }}",
            ]),
            &context,
            false,
        )
        .unwrap();
        assert_eq!(
            rendered[1..],
            argv(&[
                "--literal",
                "--value=--kubeconfig=/x",
                "-n-1",
                "x--kubeconfig=/x"
            ])
        );
    }

    #[test]
    fn nul_bytes_are_refused() {
        let context = json!({"labels": {"n": "a\u{0}b"}});
        assert!(
            render_argv(&argv(&["/bin/echo", "{{ labels.n }}"]), &context, true)
                .unwrap_err()
                .contains("NUL")
        );
    }

    #[test]
    fn env_names_are_sanitised() {
        let labels: BTreeMap<String, String> = [
            ("alertname", "A"),
            ("a-b", "first"),
            ("a_b", "second"),
            ("x;$(id)", "v"),
            ("ünï", "u"),
            ("nul", "a\u{0}b"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let env = incident_env("inc-1", "rule", "critical", &labels);
        let map: BTreeMap<_, _> = env.iter().cloned().collect();
        assert_eq!(map.len(), env.len(), "no duplicate names: {env:?}");
        assert_eq!(map["PATH"], FIXED_PATH);
        assert_eq!(map["NIGHTSHIFT_INCIDENT_ID"], "inc-1");
        assert_eq!(map["NIGHTSHIFT_RULE"], "rule");
        assert_eq!(map["NIGHTSHIFT_SEVERITY"], "critical");
        assert_eq!(map["NIGHTSHIFT_LABEL_ALERTNAME"], "A");
        assert_eq!(map["NIGHTSHIFT_LABEL_A_B"], "first");
        assert_eq!(map["NIGHTSHIFT_LABEL_X___ID_"], "v");
        assert_eq!(map["NIGHTSHIFT_LABEL__N_"], "u");
        assert_eq!(map["NIGHTSHIFT_LABEL_NUL"], "a\u{FFFD}b");
        for (name, _) in &env {
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn runs_and_reports() {
        let outcome = run(&ExecRequest {
            argv: argv(&["/bin/echo", "hello"]),
            env: vec![],
            timeout: Duration::from_secs(10),
            max_output_bytes: 1024,
        })
        .await;
        let Outcome::Done { detail } = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(detail["exit_code"], 0);
        assert_eq!(detail["stdout"], "hello\n");
        assert_eq!(detail["truncated"], false);
    }
}
