//! `nightshift pause|resume`: calls to the running daemon's admin endpoints, and their answers
//! put in words.

use std::path::PathBuf;

use anyhow::Context;
use serde::Deserialize;

use super::output::{Style, Tone, text};
use crate::config;

/// The daemon's answer to `POST /-/pause` and `POST /-/resume`.
#[derive(Debug, Deserialize)]
pub struct PauseAnswer {
    pub status: String,
    /// RFC 3339; `None` for until resumed.
    #[serde(default)]
    pub until: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Pause (`query` holds `for` and `reason` as given) or resume, then say what the daemon did.
pub(super) fn run(
    path: Option<PathBuf>,
    env: &[(String, String)],
    endpoint: &str,
    query: &[(&str, String)],
    json: bool,
    style: Style,
) -> anyhow::Result<()> {
    let body = call(path, env, endpoint, query)?;
    if json {
        println!("{}", body.trim_end());
        return Ok(());
    }
    let answer: PauseAnswer = serde_json::from_str(&body)
        .with_context(|| format!("unexpected answer from the daemon: {}", text(&body)))?;
    print!("{}", render(&answer, style));
    Ok(())
}

/// What the pause or the resume means, in a sentence or two.
pub fn render(answer: &PauseAnswer, style: Style) -> String {
    match answer.status.as_str() {
        "paused" => {
            let until = answer.until.as_deref().map_or_else(
                || "until resumed".to_owned(),
                |at| format!("until {}", text(at)),
            );
            let reason = answer
                .reason
                .as_deref()
                .map(|reason| format!(" — reason: {}", text(reason)))
                .unwrap_or_default();
            format!(
                "Automatic actions {} {until}{reason}\n\
                 Pages still go out. `nightshift resume` lets actions run again.\n",
                style.paint("paused", Tone::Warn)
            )
        }
        "resumed" => format!(
            "Automatic actions {}; pages were never paused.\n",
            style.paint("resumed", Tone::Good)
        ),
        other => format!("The daemon answered: {}\n", text(other)),
    }
}

/// POST to the running daemon's admin endpoint, found through the address file in the state
/// directory, with the admin credential from the configuration; the answer's body.
fn call(
    path: Option<PathBuf>,
    env: &[(String, String)],
    endpoint: &str,
    query: &[(&str, String)],
) -> anyhow::Result<String> {
    let config = super::load(path.as_deref(), env)?;
    let address_file = config.store.dir.join(crate::daemon::ADDRESS_FILE);
    let base = std::fs::read_to_string(&address_file).with_context(|| {
        format!(
            "is nightshift running? cannot read {}",
            address_file.display()
        )
    })?;
    let mut url = reqwest::Url::parse(&format!("{}{endpoint}", base.trim()))
        .context("the address file does not hold a URL")?;
    for (key, value) in query {
        url.query_pairs_mut().append_pair(key, value);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // The daemon's own address: never through a proxy, whatever the environment says.
        let client = crate::http_client::client(&config::HttpConfig::default())
            .map_err(|error| anyhow::anyhow!(error))?;
        let mut request = client.post(url.clone());
        if let Some(file) = &config.auth.admin_token_file {
            let token = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            request = request.bearer_auth(token.trim());
        } else if config.auth.admin_basic_auth_file.is_none()
            && let Some(token) = crate::auth::generated_admin_token(&config.store.dir)
        {
            // The daemon generated the admin credential: whoever may read it may use it.
            request = request.bearer_auth(token);
        } else if let Some(file) = &config.auth.admin_basic_auth_file {
            let pair = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let (user, password) = pair
                .trim_end()
                .split_once(':')
                .unwrap_or((pair.trim_end(), ""));
            request = request.basic_auth(user, Some(password));
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if !status.is_success() {
            anyhow::bail!("POST {url}: {status}: {}", text(&body));
        }
        Ok(body)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &str) -> PauseAnswer {
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn pause_and_resume_read_as_sentences() {
        let cases = [
            (
                r#"{"status":"paused","until":"2026-12-08T04:00:00Z","reason":"deploy freeze"}"#,
                "Automatic actions paused until 2026-12-08T04:00:00Z — reason: deploy freeze\n",
            ),
            (
                r#"{"status":"paused","until":null,"reason":"paused by an operator"}"#,
                "Automatic actions paused until resumed — reason: paused by an operator\n",
            ),
            (
                r#"{"status":"paused","until":null,"reason":"evil\u001b[2J"}"#,
                "Automatic actions paused until resumed — reason: evil\\u{1b}[2J\n",
            ),
            (
                r#"{"status":"resumed"}"#,
                "Automatic actions resumed; pages were never paused.\n",
            ),
        ];
        for (body, first_line) in cases {
            let shown = render(&answer(body), Style::PLAIN);
            assert!(shown.starts_with(first_line), "{body}: {shown:?}");
        }
    }
}
