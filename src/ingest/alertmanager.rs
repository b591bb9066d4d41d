//! alertmanager: reads Alertmanager's API (`GET /api/v2/alerts`) so that open episodes that
//! were silenced, inhibited or vanished do not stay open forever. The store decides what the
//! answer means (`reconcile::decide_api`); a failed fetch changes nothing.

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{AlertmanagerConfig, HttpConfig};
use crate::store::Engine;
use crate::store::{ApiAlert, Store};
use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("alertmanager: request failed: {0}")]
    Request(#[from] reqwest::Error),
    #[error("alertmanager: {url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("alertmanager: cannot read credential: {0}")]
    Credential(String),
    #[error("alertmanager: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl SyncError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            SyncError::Request(_) => "request_error",
            SyncError::Status { .. } => "bad_status",
            SyncError::Credential(_) => "credential_error",
            SyncError::Store(_) => "store_error",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GettableAlert {
    fingerprint: String,
    starts_at: String,
    status: AlertStatus,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlertStatus {
    state: String,
    #[serde(default)]
    silenced_by: Vec<String>,
    #[serde(default)]
    inhibited_by: Vec<String>,
}

/// Parse the API's alert list into what the store needs.
pub fn parse_alerts(body: &[u8]) -> Result<Vec<ApiAlert>, serde_json::Error> {
    let alerts: Vec<GettableAlert> = serde_json::from_slice(body)?;
    Ok(alerts
        .into_iter()
        .filter_map(|alert| {
            let starts_at = chrono::DateTime::parse_from_rfc3339(&alert.starts_at).ok()?;
            let suppressed = alert.status.state == "suppressed"
                || !alert.status.silenced_by.is_empty()
                || !alert.status.inhibited_by.is_empty();
            Some(ApiAlert {
                fingerprint: alert.fingerprint.to_ascii_lowercase(),
                starts_at: starts_at.with_timezone(&chrono::Utc),
                suppressed,
            })
        })
        .collect())
}

async fn fetch(
    client: &reqwest::Client,
    config: &AlertmanagerConfig,
    base: &str,
) -> Result<Vec<ApiAlert>, SyncError> {
    let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
    let mut request = client.get(&url).timeout(config.timeout);
    if let Some(path) = &config.token_file {
        let token = std::fs::read_to_string(path)
            .map_err(|e| SyncError::Credential(format!("{}: {e}", path.display())))?;
        request = request.bearer_auth(token.trim());
    }
    if let Some(path) = &config.basic_auth_file {
        let pair = std::fs::read_to_string(path)
            .map_err(|e| SyncError::Credential(format!("{}: {e}", path.display())))?;
        let (user, password) = pair
            .trim_end()
            .split_once(':')
            .unwrap_or((pair.trim_end(), ""));
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().await?;
    if !response.status().is_success() {
        return Err(SyncError::Status {
            url,
            status: response.status().as_u16(),
        });
    }
    let body = response.bytes().await?;
    parse_alerts(&body).map_err(|error| SyncError::Status {
        url: format!("{url} (unreadable body: {error})"),
        status: 200,
    })
}

/// Sync every `sync_interval` while `alertmanager.url` is set; settings come from `settings`
/// so a reload applies at the next round. The client, built once from `[http]`, follows no
/// redirects and reads no proxy from the environment.
pub async fn run(
    store: Store,
    metrics: std::sync::Arc<Metrics>,
    mut settings: watch::Receiver<AlertmanagerConfig>,
    http: HttpConfig,
    shutdown: CancellationToken,
) {
    let client = match crate::http_client::client(&http) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the Alertmanager API client; sync is off");
            return;
        }
    };
    loop {
        let config = settings.borrow_and_update().clone();
        let wait = if let Some(base) = &config.url {
            match sync_once(&client, &store, &config, base).await {
                Ok(summary) => {
                    metrics
                        .alertmanager_sync_total
                        .with_label_values(&["ok"])
                        .inc();
                    if summary.silenced + summary.unsilenced + summary.gone > 0 {
                        tracing::info!(
                            silenced = summary.silenced,
                            unsilenced = summary.unsilenced,
                            gone = summary.gone,
                            "alertmanager sync changed episodes"
                        );
                    }
                }
                Err(error) => {
                    metrics
                        .alertmanager_sync_total
                        .with_label_values(&[error.metric_label()])
                        .inc();
                    tracing::warn!(%error, "alertmanager sync failed; nothing changed");
                }
            }
            config.sync_interval
        } else {
            Duration::from_secs(3600)
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            changed = settings.changed() => if changed.is_err() { return },
        }
    }
}

async fn sync_once(
    client: &reqwest::Client,
    store: &Store,
    config: &AlertmanagerConfig,
    base: &str,
) -> Result<crate::store::SyncSummary, SyncError> {
    let alerts = fetch(client, config, base).await?;
    Ok(store.sync_with_alertmanager(alerts).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_alerts_parse_with_their_suppression() {
        let body = br#"[
          {"annotations":{},"endsAt":"2026-11-28T13:00:00Z","fingerprint":"E6E2702B100D42ED","receivers":[{"name":"x"}],
           "startsAt":"2026-11-28T12:30:55.349673924Z","status":{"inhibitedBy":[],"silencedBy":["a1"],"state":"suppressed"},
           "updatedAt":"2026-11-28T12:31:00Z","labels":{"alertname":"HostDown"}},
          {"fingerprint":"07984c925dc614a2","startsAt":"2026-11-28T12:30:55Z","status":{"inhibitedBy":null,"silencedBy":[],"state":"active"},"labels":{}}
        ]"#;
        let alerts = parse_alerts(body);
        // inhibitedBy: null is not an array; Alertmanager always sends arrays, so this is an error.
        assert!(alerts.is_err());
        let body = br#"[
          {"fingerprint":"E6E2702B100D42ED","startsAt":"2026-11-28T12:30:55.349Z","status":{"inhibitedBy":[],"silencedBy":["a1"],"state":"suppressed"}},
          {"fingerprint":"07984c925dc614a2","startsAt":"2026-11-28T12:30:55Z","status":{"inhibitedBy":[],"silencedBy":[],"state":"active"}}
        ]"#;
        let alerts = parse_alerts(body).unwrap();
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0].fingerprint, "e6e2702b100d42ed");
        assert!(alerts[0].suppressed);
        assert!(!alerts[1].suppressed);
        assert_eq!(alerts[0].starts_at.timestamp_subsec_millis(), 349);
    }
}
