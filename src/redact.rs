//! redact: the one redactor. Action arguments may call `secret("name")` in their templates;
//! the value is read from a secret file when the action runs, and everywhere a rendered value
//! is recorded or shown (store, logs, API, explain, notifier bodies, bundles) it appears as
//! `<secret:name>`. Rendering produces both forms at once ([`render`]); anything else that
//! may echo a secret (a command's output, an error message) goes through [`Redactor::redact`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Where secret files live: systemd's credentials directory, or `<state dir>/secrets`.
#[derive(Debug, Clone)]
pub struct SecretFiles {
    dir: PathBuf,
}

impl SecretFiles {
    pub fn new(dir: impl Into<PathBuf>) -> SecretFiles {
        SecretFiles { dir: dir.into() }
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
        let path = self.dir.join(name);
        std::fs::read_to_string(&path)
            .map(|text| text.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|error| format!("secret {name}: cannot read {}: {error}", path.display()))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Replaces every secret value it has seen with `<secret:name>`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// (value, name), longest value first so that a secret containing another is replaced
    /// whole.
    known: Vec<(String, String)>,
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
    }

    /// The text with every known secret replaced, and how many replacements were made.
    pub fn redact(&self, text: &str) -> (String, usize) {
        let mut out = text.to_owned();
        let mut count = 0;
        for (value, name) in &self.known {
            let found = out.matches(value.as_str()).count();
            if found > 0 {
                count += found;
                out = out.replace(value.as_str(), &format!("<secret:{name}>"));
            }
        }
        (out, count)
    }
}

/// Patterns of secrets nightshift never saw being read: what collected evidence (logs, env
/// dumps, HTTP answers, Kubernetes objects) may carry. Built in, plus the operator's regexes.
/// Each built-in pattern keeps its key (`Authorization: `, `?token=`, `"password": "`) and
/// replaces only the value, so the evidence still says what was there.
#[derive(Debug, Clone)]
pub struct Patterns {
    /// (pattern, whether it has groups to keep: a prefix (group 1), and with three groups a
    /// suffix (group 3) around the secret (group 2))
    list: Vec<(regex::Regex, bool)>,
}

const BUILTIN_PATTERNS: &[&str] = &[
    // Private key blocks, whole.
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
    // Authorization headers, whatever the scheme.
    r#"(?i)((?:proxy-)?authorization["']?\s*[:=]\s*["']?)(?:(?:bearer|basic|token|digest)\s+)?[^\s"',;]+"#,
    // Bearer tokens anywhere else.
    r"(?i)(\bbearer\s+)[A-Za-z0-9\-._~+/]+=*",
    // PagerDuty routing keys and integration keys in JSON or forms.
    r#"(?i)("?(?:routing_key|integration_key|service_key)"?\s*[:=]\s*"?)[A-Za-z0-9]{20,}"#,
    // Credentials in URLs: user:password@ and secret query parameters.
    r"(?i)(\b[a-z][a-z0-9+.\-]*://[^/\s:@]+:)([^@\s/]+)(@)",
    r#"(?i)([?&](?:api[_-]?key|apikey|key|token|access[_-]?token|auth|secret|password|passwd|pwd|signature|sig|client[_-]?secret)=)[^&\s"'#]+"#,
    // JSON fields that hold secrets.
    r#"(?i)("[a-z0-9_\-]*(?:password|passwd|secret|token|api[_-]?key|apikey|private[_-]?key|credential)[a-z0-9_\-]*"\s*:\s*")[^"]*"#,
    // Environment dumps: NAME=value where the name says key, token, secret, password.
    r"(?im)^(\s*(?:export\s+)?[a-z0-9_]*(?:key|token|secret|password|passwd|credential)[a-z0-9_]*\s*[=:]\s*)\S.*$",
];

impl Patterns {
    /// The built-in patterns and `extra` (regexes from the configuration; each whole match is
    /// replaced).
    pub fn new(extra: &[String]) -> Result<Patterns, String> {
        let mut list = Vec::new();
        for pattern in BUILTIN_PATTERNS {
            let regex = regex::Regex::new(pattern).map_err(|e| e.to_string())?;
            let keeps = regex.captures_len() > 1;
            list.push((regex, keeps));
        }
        for pattern in extra {
            let regex = regex::Regex::new(pattern)
                .map_err(|error| format!("redaction pattern {pattern:?}: {error}"))?;
            list.push((regex, false));
        }
        Ok(Patterns { list })
    }

    /// The text with every match replaced by `<redacted>`, and how many there were.
    pub fn scrub(&self, text: &str) -> (String, usize) {
        let mut out = text.to_owned();
        let mut count = 0;
        for (regex, keeps) in &self.list {
            let found = regex.find_iter(&out).count();
            if found == 0 {
                continue;
            }
            count += found;
            out = if *keeps && regex.captures_len() == 4 {
                // prefix, secret, suffix
                regex.replace_all(&out, "${1}<redacted>${3}").into_owned()
            } else if *keeps {
                regex.replace_all(&out, "${1}<redacted>").into_owned()
            } else {
                regex.replace_all(&out, "<redacted>").into_owned()
            };
        }
        (out, count)
    }
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
        for (text, expected) in cases {
            let (scrubbed, count) = patterns.scrub(text);
            assert_eq!(scrubbed, expected, "{text}");
            assert!(count >= 1, "{text}");
        }
        let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----";
        assert_eq!(patterns.scrub(key).0, "<redacted>");
        // Ordinary evidence is left alone.
        let plain = "2026-11-28T03:02:11Z ERROR vast.ai answered 503 for /api/v0/instances";
        assert_eq!(patterns.scrub(plain), (plain.to_owned(), 0));
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
}
