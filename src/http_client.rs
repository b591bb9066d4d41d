//! http_client: the one place outbound HTTP clients are built, from `[http]`: probes, `http`
//! actions and collectors, the Alertmanager API, PagerDuty and chat notifiers.
//!
//! Proxies: the proxy environment variables (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`,
//! `NO_PROXY`, in either case) are never read. A variable inherited from a shell or a unit
//! file would otherwise send every probe and action (and the credentials in their headers)
//! through a host nobody configured here; a proxy is used only when `[http] proxy` names one.
//!
//! Redirects are never followed: a redirect could move a request to another host, past the
//! checks its URL passed. An answer in 3xx is returned as it is, for the caller to judge.

use crate::config::HttpConfig;

/// What nightshift says it is, on every request.
pub const USER_AGENT: &str = concat!("nightshift/", env!("CARGO_PKG_VERSION"));

/// A client builder with the settings every outbound client shares; callers add their own
/// timeouts. Fails only on a proxy URL reqwest refuses (`config` validates it at load).
pub fn builder(config: &HttpConfig) -> Result<reqwest::ClientBuilder, String> {
    // `no_proxy` first: it drops the proxy read from the environment, `proxy` adds ours.
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    if let Some(url) = &config.proxy {
        let proxy = reqwest::Proxy::all(url.as_str())
            .map_err(|error| format!("http.proxy {url:?}: {error}"))?;
        builder = builder.proxy(proxy);
    }
    Ok(builder)
}

/// A client with only the shared settings.
pub fn client(config: &HttpConfig) -> Result<reqwest::Client, String> {
    builder(config)?
        .build()
        .map_err(|error| format!("cannot build the HTTP client: {error}"))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Install the crypto provider reqwest needs to build a client, as the daemon does.
    fn init() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }

    /// A server on 127.0.0.1 that answers every request with `status` and `location`, and
    /// keeps each request line.
    async fn recorder(status: &'static str, location: &str) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let record = seen.clone();
        let location = location.to_owned();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buffer = vec![0; 4096];
                let read = stream.read(&mut buffer).await.unwrap_or(0);
                let text = String::from_utf8_lossy(&buffer[..read]).into_owned();
                let line = text.lines().next().unwrap_or_default().to_owned();
                record.lock().unwrap().push(line);
                let answer = format!(
                    "HTTP/1.1 {status}\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        (format!("http://{address}"), seen)
    }

    #[tokio::test]
    async fn the_configured_proxy_is_used() {
        init();
        let (proxy, through_proxy) = recorder("200 OK", "").await;
        let client = client(&HttpConfig {
            proxy: Some(proxy.clone()),
        })
        .unwrap();
        // The proxy answers for the origin, where nothing listens.
        let response = client.get("http://127.0.0.1:1/x").send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            *through_proxy.lock().unwrap(),
            ["GET http://127.0.0.1:1/x HTTP/1.1"]
        );
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        init();
        let (elsewhere, hits) = recorder("200 OK", "").await;
        let (origin, _) = recorder("302 Found", &format!("{elsewhere}/moved")).await;
        let client = client(&HttpConfig::default()).unwrap();
        let response = client.get(format!("{origin}/x")).send().await.unwrap();
        assert_eq!(response.status(), 302);
        assert!(hits.lock().unwrap().is_empty());
    }

    /// Load `text` as a config file: the configuration, or each error with the file as `F`.
    fn load(text: &str) -> Result<crate::config::Config, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.toml");
        std::fs::write(&path, text).unwrap();
        crate::config::load(Some(&path), &[])
            .map(|loaded| loaded.config)
            .map_err(|errors| {
                let file = path.display().to_string();
                errors
                    .0
                    .iter()
                    .map(|error| error.to_string().replace(&file, "F"))
                    .collect()
            })
    }

    #[test]
    fn the_http_section_takes_an_http_proxy_url() {
        let config = load("[http]\nproxy = \"http://proxy.internal:3128\"\n").unwrap();
        assert_eq!(
            config.http.proxy.as_deref(),
            Some("http://proxy.internal:3128")
        );
        assert_eq!(load("").unwrap().http, HttpConfig::default());
        for proxy in ["socks5://proxy:1080", "proxy:3128", "http://"] {
            let errors = load(&format!("[http]\n\nproxy = {proxy:?}\n")).unwrap_err();
            assert_eq!(errors.len(), 1, "{proxy}: {errors:?}");
            assert!(
                errors[0].starts_with("F:3: http.proxy: ") && errors[0].contains("http(s) URL"),
                "{proxy}: {errors:?}"
            );
        }
        let errors = load("[http]\nproxy_url = \"http://proxy:3128\"\n").unwrap_err();
        assert!(
            errors[0].starts_with("F:2: http.proxy_url: unknown field"),
            "{errors:?}"
        );
    }
}
