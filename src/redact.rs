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
