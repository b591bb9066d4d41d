//! redact: the one redactor. Action arguments may call `secret("name")` in their templates;
//! the value is read from a secret file when the action runs, and everywhere a rendered value
//! is recorded or shown (store, logs, API, explain, notifier bodies, bundles) it appears as
//! `<secret:name>`. Rendering produces both forms at once ([`render`]); anything else that
//! may echo a secret (a command's output, an error message) goes through [`Redactor::redact`].
//! Collected evidence (bundle files, a page's log lines) goes through [`scrub_evidence`]:
//! the known secrets and the [`Patterns`] of secrets never read, over bytes, UTF-8 or not.
//! Routing keys are shown by [`mask_key`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Where secret files live: systemd's credentials directory (only `action.<name>`), or
/// `<state dir>/secrets`, or `actions.secrets_dir`. API credentials are never secrets for
/// actions: a file that `[auth]` names, or one under `<state dir>/credentials/`, is refused
/// even when a secret's name leads to it (through a symbolic link, say).
#[derive(Debug, Clone)]
pub struct SecretFiles {
    dir: PathBuf,
    prefix: &'static str,
    /// Canonical paths of credential files, and directories of them, never read as secrets.
    refused: Vec<PathBuf>,
}

impl SecretFiles {
    /// Secrets read from `dir` by their plain name, with nothing refused (tests, tools).
    pub fn new(dir: impl Into<PathBuf>) -> SecretFiles {
        SecretFiles {
            dir: dir.into(),
            prefix: "",
            refused: Vec::new(),
        }
    }

    /// The daemon's secrets: from where the configuration says, never an API credential.
    pub fn from_config(config: &crate::config::Config) -> SecretFiles {
        let source = config.actions.secrets_source(&config.store.dir);
        let refused = config
            .auth
            .files()
            .into_iter()
            .map(Path::to_path_buf)
            .chain([config.store.dir.join(crate::auth::CREDENTIALS_DIR)])
            .map(|path| std::fs::canonicalize(&path).unwrap_or(path))
            .collect();
        SecretFiles {
            dir: source.dir,
            prefix: source.prefix,
            refused,
        }
    }

    /// Read one secret; the name is a plain file name, never a path.
    pub fn read(&self, name: &str) -> Result<String, String> {
        let plain = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            && !name.starts_with('.');
        if !plain {
            return Err(format!("secret name {name:?} must be a plain file name"));
        }
        let path = self.dir.join(format!("{}{name}", self.prefix));
        let real = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if self.refused.iter().any(|refused| real.starts_with(refused)) {
            return Err(format!(
                "secret {name}: {} is an API credential of nightshift's own ([auth]), never \
                 a secret for actions",
                path.display()
            ));
        }
        std::fs::read_to_string(&path)
            .map(|text| text.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|error| format!("secret {name}: cannot read {}: {error}", path.display()))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Replaces every secret value it has seen with `<secret:name>`, in the forms it takes in
/// text: as read, and as a JSON string holds it (a `"` or `\` in a secret is escaped there,
/// and the raw value would never match).
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// (value, name), longest value first so that a secret containing another is replaced
    /// whole.
    known: Vec<(String, String)>,
    /// Every form of every known secret with its name, longest first.
    forms: Vec<(Vec<u8>, String)>,
    /// The forms as one search, in the same order (at one position the longest form wins);
    /// `None` when nothing is known, or when the search could not be built (then each form
    /// is searched for in turn).
    search: Option<regex::bytes::Regex>,
}

impl Redactor {
    pub fn learn(&mut self, name: &str, value: &str) {
        // Very short values would redact ordinary text; they are refused at read time by
        // policy elsewhere, and never learned here.
        if value.len() < 4 || self.known.iter().any(|(v, _)| v == value) {
            return;
        }
        self.known.push((value.to_owned(), name.to_owned()));
        self.known
            .sort_by_key(|(value, _)| std::cmp::Reverse(value.len()));
        let mut forms: Vec<(Vec<u8>, String)> = Vec::new();
        for (value, name) in &self.known {
            for form in secret_forms(value) {
                if !forms.iter().any(|(known, _)| *known == form) {
                    forms.push((form, name.clone()));
                }
            }
        }
        forms.sort_by_key(|(form, _)| std::cmp::Reverse(form.len()));
        let alternation = forms
            .iter()
            .map(|(form, _)| regex::escape(&String::from_utf8_lossy(form)))
            .collect::<Vec<_>>()
            .join("|");
        self.search = regex::bytes::RegexBuilder::new(&alternation)
            .size_limit(64 * 1024 * 1024)
            .build()
            .ok();
        self.forms = forms;
    }

    /// The text with every known secret replaced, and how many replacements were made.
    pub fn redact(&self, text: &str) -> (String, usize) {
        let (bytes, count) = self.redact_bytes(text.as_bytes());
        // Whole UTF-8 forms replaced by ASCII in UTF-8 text leave it UTF-8.
        let text = String::from_utf8(bytes)
            .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned());
        (text, count)
    }

    /// [`Redactor::redact`] for bytes that need not be UTF-8.
    pub fn redact_bytes(&self, bytes: &[u8]) -> (Vec<u8>, usize) {
        if self.forms.is_empty() {
            return (bytes.to_vec(), 0);
        }
        let name_of = |found: &[u8]| {
            self.forms
                .iter()
                .find(|(form, _)| form == found)
                .map_or("", |(_, name)| name.as_str())
        };
        let mut count = 0;
        let Some(search) = &self.search else {
            let mut out = bytes.to_vec();
            for (form, name) in &self.forms {
                let (replaced, found) = replace_all(&out, form, secret_mark(name).as_bytes());
                out = replaced;
                count += found;
            }
            return (out, count);
        };
        let out = search.replace_all(bytes, |found: &regex::bytes::Captures<'_>| {
            count += 1;
            secret_mark(name_of(&found[0])).into_bytes()
        });
        (out.into_owned(), count)
    }
}

fn secret_mark(name: &str) -> String {
    format!("<secret:{name}>")
}

/// The forms a secret takes in evidence: as read; inside a JSON string (`"` → `\"`, `\` →
/// `\\`, control characters escaped), once and twice (JSON holding JSON as a string); and as
/// Go's encoder writes it (`<`, `>`, `&` as `\u003c`, `\u003e`, `\u0026`).
fn secret_forms(value: &str) -> Vec<Vec<u8>> {
    let json = |text: &str| {
        let quoted = serde_json::to_string(text).unwrap_or_default();
        quoted
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or(text)
            .to_owned()
    };
    let once = json(value);
    let twice = json(&once);
    let go = once
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    let mut forms: Vec<Vec<u8>> = Vec::new();
    for form in [value.to_owned(), once, twice, go] {
        if !forms.iter().any(|known| *known == form.as_bytes()) {
            forms.push(form.into_bytes());
        }
    }
    forms
}

/// Every occurrence of `needle` replaced, left to right, and how many there were.
fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(haystack.len());
    let mut count = 0;
    let mut at = 0;
    while at < haystack.len() {
        if !needle.is_empty() && haystack[at..].starts_with(needle) {
            out.extend_from_slice(with);
            at += needle.len();
            count += 1;
        } else {
            out.push(haystack[at]);
            at += 1;
        }
    }
    (out, count)
}

/// Patterns of secrets nightshift never saw being read: what collected evidence (logs, env
/// dumps, HTTP answers, Kubernetes objects) may carry. Built in, plus the operator's regexes.
/// Each built-in pattern keeps its key (`Authorization: `, `?token=`, `"password": "`) and
/// replaces only the value, so the evidence still says what was there. They match bytes, so
/// evidence that is not UTF-8 is scrubbed too; where a value is taken up to a delimiter, any
/// byte that is not one counts as part of it (`(?-u:…)`), so an invalid byte inside a secret
/// does not end it early.
#[derive(Debug, Clone)]
pub struct Patterns {
    /// (pattern, whether it has groups to keep: a prefix (group 1), and with three groups a
    /// suffix (group 3) around the secret (group 2))
    list: Vec<(regex::bytes::Regex, bool)>,
}

const BUILTIN_PATTERNS: &[&str] = &[
    // Private key blocks, whole; one cut by a size cap, from its start to the end.
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?s-u:.)*?(?:-----END [A-Z ]*PRIVATE KEY-----|\z)",
    // The end of one whose start a log's cap cut off: from the file's start.
    r"\A(?s-u:.)*?-----END [A-Z ]*PRIVATE KEY-----",
    // Authorization headers, whatever the scheme.
    r#"(?i)((?:proxy-)?authorization["']?\s*[:=]\s*["']?)(?:(?:bearer|basic|token|digest)\s+)?(?-u:[^\s"',;])+"#,
    // Bearer tokens anywhere else.
    r"(?i)(\bbearer\s+)[A-Za-z0-9\-._~+/]+=*",
    // PagerDuty routing keys and integration keys in JSON or forms.
    r#"(?i)("?(?:routing_key|integration_key|service_key)"?\s*[:=]\s*"?)[A-Za-z0-9]{20,}"#,
    // Credentials in URLs: user:password@ and secret query parameters.
    r"(?i)(\b[a-z][a-z0-9+.\-]*://[^/\s:@]+:)((?-u:[^@\s/])+)(@)",
    r#"(?i)([?&](?:api[_-]?key|apikey|key|token|access[_-]?token|auth|secret|password|passwd|pwd|signature|sig|client[_-]?secret)=)(?-u:[^&\s"'#])+"#,
    // JSON fields that hold secrets; an escaped quote (`\"`) does not end the value.
    r#"(?i)("[a-z0-9_\-]*(?:password|passwd|secret|token|api[_-]?key|apikey|private[_-]?key|credential)[a-z0-9_\-]*"\s*:\s*")(?-u:[^"\\]|\\.)*"#,
    // Environment dumps: NAME=value where the name says key, token, secret, password.
    r"(?im)^(\s*(?:export\s+)?[a-z0-9_]*(?:key|token|secret|password|passwd|credential)[a-z0-9_]*\s*[=:]\s*)(?-u:\S)(?-u:.)*$",
];

impl Patterns {
    /// The built-in patterns and `extra` (regexes from the configuration; each whole match is
    /// replaced).
    pub fn new(extra: &[String]) -> Result<Patterns, String> {
        let mut list = Vec::new();
        for pattern in BUILTIN_PATTERNS {
            let regex = regex::bytes::Regex::new(pattern).map_err(|e| e.to_string())?;
            let keeps = regex.captures_len() > 1;
            list.push((regex, keeps));
        }
        for pattern in extra {
            let regex = regex::bytes::Regex::new(pattern)
                .map_err(|error| format!("redaction pattern {pattern:?}: {error}"))?;
            list.push((regex, false));
        }
        Ok(Patterns { list })
    }

    /// The bytes with every match replaced by `<redacted>`, and how many there were.
    pub fn scrub(&self, bytes: &[u8]) -> (Vec<u8>, usize) {
        let mut out = bytes.to_vec();
        let mut count = 0;
        for (regex, keeps) in &self.list {
            if !regex.is_match(&out) {
                continue;
            }
            let replaced = regex.replace_all(&out, |found: &regex::bytes::Captures<'_>| {
                count += 1;
                let group = |n: usize| found.get(n).map_or(&b""[..], |m| m.as_bytes());
                let mut with = Vec::new();
                if *keeps {
                    with.extend_from_slice(group(1));
                }
                with.extend_from_slice(REDACTED.as_bytes());
                if *keeps && found.len() == 4 {
                    // prefix, secret, suffix
                    with.extend_from_slice(group(3));
                }
                with
            });
            out = replaced.into_owned();
        }
        (out, count)
    }
}

/// What a pattern's match is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Evidence on its way into a bundle or a page: every known secret (in every form), then the
/// patterns, over the bytes as they are, UTF-8 or not. The one function evidence goes
/// through; returns the redacted bytes and how many replacements were made.
pub fn scrub_evidence(known: &Redactor, patterns: &Patterns, bytes: &[u8]) -> (Vec<u8>, usize) {
    let (bytes, secrets) = known.redact_bytes(bytes);
    let (bytes, matched) = patterns.scrub(&bytes);
    (bytes, secrets + matched)
}

/// [`scrub_evidence`] for text (a page's log line): the result is text, whatever was cut.
pub fn scrub_evidence_text(known: &Redactor, patterns: &Patterns, text: &str) -> String {
    let (bytes, _) = scrub_evidence(known, patterns, text.as_bytes());
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A routing key as records and logs show it: its last four characters, or nothing of a key
/// so short that four characters would give most of it away.
pub fn mask_key(key: &str) -> String {
    let count = key.chars().count();
    if count < 16 {
        return "…".to_owned();
    }
    let tail: String = key.chars().skip(count - 4).collect();
    format!("…{tail}")
}

/// A template rendered twice: the value to use, and the value to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub value: String,
    pub shown: String,
}

/// Render `source` with `secret("name")` available. The secrets read are taught to
/// `redactor`, so later output that echoes them is redacted too.
pub fn render(
    source: &str,
    context: &impl Serialize,
    secrets: &SecretFiles,
    redactor: &mut Redactor,
) -> Result<Rendered, String> {
    let read: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let value = {
        let mut environment = environment();
        let secrets = secrets.clone();
        let read = read.clone();
        environment.add_function("secret", move |name: String| {
            let value = secrets
                .read(&name)
                .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e))?;
            if let Ok(mut read) = read.lock() {
                read.push((name, value.clone()));
            }
            Ok(value)
        });
        render_in(&environment, source, context)?
    };
    let shown = {
        let mut environment = environment();
        environment.add_function("secret", |name: String| format!("<secret:{name}>"));
        render_in(&environment, source, context)?
    };
    if let Ok(read) = read.lock() {
        for (name, value) in read.iter() {
            redactor.learn(name, value);
        }
    }
    // A secret that reached the value some other way (a label carrying it) is redacted too.
    let (shown, _) = redactor.redact(&shown);
    Ok(Rendered { value, shown })
}

fn environment() -> minijinja::Environment<'static> {
    crate::rules::template::base_environment()
}

fn render_in(
    environment: &minijinja::Environment<'static>,
    source: &str,
    context: &impl Serialize,
) -> Result<String, String> {
    let value = minijinja::Value::from(minijinja::value::Serde(context));
    environment
        .render_str(source, value)
        .map_err(|error| format!("template error: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> (tempfile::TempDir, SecretFiles) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vastai_api_key"), "sk-live-0123456789\n").unwrap();
        let files = SecretFiles::new(dir.path());
        (dir, files)
    }

    #[test]
    fn api_credentials_are_never_secrets_for_actions() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("var");
        let secrets = dir.path().join("secrets");
        std::fs::create_dir_all(state.join("credentials")).unwrap();
        std::fs::create_dir_all(&secrets).unwrap();
        std::fs::write(state.join("credentials/admin"), "generated-admin\n").unwrap();
        std::fs::write(dir.path().join("ingest"), "configured-ingest\n").unwrap();
        std::fs::write(secrets.join("api-key"), "sk-live-0123456789\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("ingest"), secrets.join("ingest")).unwrap();
        std::os::unix::fs::symlink(state.join("credentials/admin"), secrets.join("admin")).unwrap();
        let mut config = crate::config::Config::default();
        config.store.dir = state;
        config.actions.secrets_dir = Some(secrets);
        config.auth.ingest_token_file = Some(dir.path().join("ingest"));
        let files = SecretFiles::from_config(&config);
        assert_eq!(files.read("api-key").unwrap(), "sk-live-0123456789");
        for name in ["ingest", "admin"] {
            let error = files.read(name).unwrap_err();
            assert!(error.contains("API credential"), "{name}: {error}");
        }
    }

    #[test]
    fn the_value_is_used_and_never_shown() {
        let (_dir, files) = secrets();
        let mut redactor = Redactor::default();
        let context = serde_json::json!({"labels": {"alertname": "A"}});
        let rendered = render(
            "Bearer {{ secret('vastai_api_key') }} for {{ labels.alertname }}",
            &context,
            &files,
            &mut redactor,
        )
        .unwrap();
        assert_eq!(rendered.value, "Bearer sk-live-0123456789 for A");
        assert_eq!(rendered.shown, "Bearer <secret:vastai_api_key> for A");
        // Anything that echoes it later is redacted too.
        let (text, count) =
            redactor.redact("curl: 401 with key sk-live-0123456789 (sk-live-0123456789)");
        assert_eq!(
            text,
            "curl: 401 with key <secret:vastai_api_key> (<secret:vastai_api_key>)"
        );
        assert_eq!(count, 2);
    }

    #[test]
    fn a_label_carrying_a_known_secret_is_redacted_in_what_is_shown() {
        let (_dir, files) = secrets();
        let mut redactor = Redactor::default();
        redactor.learn("vastai_api_key", "sk-live-0123456789");
        let context = serde_json::json!({"labels": {"leak": "sk-live-0123456789"}});
        let rendered = render("{{ labels.leak }}", &context, &files, &mut redactor).unwrap();
        assert_eq!(rendered.shown, "<secret:vastai_api_key>");
    }

    #[test]
    fn evidence_patterns_keep_the_key_and_drop_the_value() {
        let patterns = Patterns::new(&["acct-[0-9]{6}".to_owned()]).unwrap();
        let cases = [
            (
                "Authorization: Bearer abc.def-123",
                "Authorization: <redacted>",
            ),
            (
                "curl -H 'authorization: Basic dXNlcjpwdw=='",
                "curl -H 'authorization: <redacted>'",
            ),
            (
                "token was bearer eyJhbGciOi.x",
                "token was bearer <redacted>",
            ),
            (
                r#"{"routing_key":"R0UT1NGKEY0123456789abcdef012345"}"#,
                r#"{"routing_key":"<redacted>"}"#,
            ),
            (
                "GET /v1/x?api_key=sk-live-1&n=2 HTTP/1.1",
                "GET /v1/x?api_key=<redacted>&n=2 HTTP/1.1",
            ),
            (
                "postgres://app:hunter2@db:5432/x",
                "postgres://app:<redacted>@db:5432/x",
            ),
            (
                r#"{"db_password": "hunter2", "user": "app"}"#,
                r#"{"db_password": "<redacted>", "user": "app"}"#,
            ),
            (
                "VASTAI_API_KEY=sk-live-0123\nPATH=/usr/bin",
                "VASTAI_API_KEY=<redacted>\nPATH=/usr/bin",
            ),
            (
                "account acct-123456 over quota",
                "account <redacted> over quota",
            ),
        ];
        let scrub = |text: &str| {
            let (bytes, count) = patterns.scrub(text.as_bytes());
            (String::from_utf8(bytes).unwrap(), count)
        };
        for (text, expected) in cases {
            let (scrubbed, count) = scrub(text);
            assert_eq!(scrubbed, expected, "{text}");
            assert!(count >= 1, "{text}");
        }
        let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----";
        assert_eq!(scrub(key).0, "<redacted>");
        // Ordinary evidence is left alone.
        let plain = "2026-11-28T03:02:11Z ERROR vast.ai answered 503 for /api/v0/instances";
        assert_eq!(scrub(plain), (plain.to_owned(), 0));
        assert!(
            Patterns::new(&["(".to_owned()])
                .unwrap_err()
                .contains("redaction pattern")
        );
    }

    #[test]
    fn secret_names_are_file_names_not_paths() {
        let (_dir, files) = secrets();
        for name in ["../etc/passwd", "/etc/passwd", ".hidden", "", "a/b"] {
            assert!(files.read(name).is_err(), "{name}");
        }
        let mut redactor = Redactor::default();
        let error = render(
            "{{ secret('../x') }}",
            &serde_json::json!({}),
            &files,
            &mut redactor,
        )
        .unwrap_err();
        assert!(error.contains("plain file name"), "{error}");
        assert!(files.read("missing").unwrap_err().contains("cannot read"));
    }

    #[test]
    fn evidence_that_is_not_utf8_is_redacted_too() {
        let patterns = Patterns::new(&[]).unwrap();
        let mut known = Redactor::default();
        known.learn("vastai_api_key", "sk-live-0123456789");
        let mut log = b"\xff\xfe binary prefix\n".to_vec();
        log.extend_from_slice(b"03:01 ERROR Authorization: Bearer tok-\xffabc123 failed\n");
        log.extend_from_slice(b"VASTAI_TOKEN=\xffsecret-after-a-bad-byte\n");
        log.extend_from_slice(b"{\"db_password\": \"hun\xffter2\"}\n");
        log.extend_from_slice(b"curl https://app:pass\xffword@db/x?token=t\xffk&n=1\n");
        log.extend_from_slice(b"key sk-live-0123456789 echoed\n");
        let (scrubbed, count) = scrub_evidence(&known, &patterns, &log);
        let text = String::from_utf8_lossy(&scrubbed);
        for leaked in [
            "tok-",
            "abc123",
            "secret-after",
            "hun",
            "ter2",
            "pass\u{fffd}",
            "\u{fffd}word",
            "t\u{fffd}k",
            "sk-live",
        ] {
            assert!(!text.contains(leaked), "{leaked} in {text}");
        }
        assert_eq!(count, 6, "{text}");
        // The bytes around what was redacted are kept as they were.
        assert!(scrubbed.starts_with(b"\xff\xfe binary prefix\n"));
        assert!(
            text.contains("key <secret:vastai_api_key> echoed"),
            "{text}"
        );
    }

    #[test]
    fn a_known_secret_is_found_in_its_json_escaped_forms() {
        let secret = r#"pa"ss\w<o>rd&1"#;
        let mut known = Redactor::default();
        known.learn("db", secret);
        let once = serde_json::to_string(&serde_json::json!({ "x": secret })).unwrap();
        let twice = serde_json::to_string(&serde_json::json!({ "y": once })).unwrap();
        let go = once
            .replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026");
        for text in [secret.to_owned(), once, twice, go] {
            let (redacted, count) = known.redact(&text);
            assert_eq!(count, 1, "{text} → {redacted}");
            assert!(redacted.contains("<secret:db>"), "{redacted}");
            for piece in ["pa", "ss", "rd&1", "rd\\u0026"] {
                assert!(!redacted.contains(piece), "{piece} in {redacted}");
            }
        }
        // The pattern for secret JSON fields does not stop at an escaped quote either.
        let patterns = Patterns::new(&[]).unwrap();
        let (scrubbed, _) = patterns.scrub(br#"{"password": "ab\"cd\\ef", "user": "app"}"#);
        assert_eq!(
            String::from_utf8(scrubbed).unwrap(),
            r#"{"password": "<redacted>", "user": "app"}"#
        );
    }

    #[test]
    fn a_private_key_cut_by_a_size_cap_is_redacted_from_either_end() {
        let patterns = Patterns::new(&[]).unwrap();
        let head = b"log start\n-----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN";
        assert_eq!(patterns.scrub(head).0, b"log start\n<redacted>");
        let tail = b"BgkqhkiG9w0BAQEF\n-----END PRIVATE KEY-----\nlog end";
        assert_eq!(patterns.scrub(tail).0, b"<redacted>\nlog end");
    }

    #[test]
    fn routing_keys_are_masked() {
        assert_eq!(mask_key("0123456789abcdef0123456789abcdef"), "…cdef");
        assert_eq!(mask_key("R0UT1NGKEY0123456789abcdef01234é"), "…234é");
        // Four characters of a short key would be most of it.
        assert_eq!(mask_key("abcdef"), "…");
    }
}
