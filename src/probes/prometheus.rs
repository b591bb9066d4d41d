//! `prometheus` probe (being written).
use super::{ProbeKind, ProbeResult};
pub async fn probe(
    _client: &reqwest::Client,
    _query: &str,
    _urls: &[String],
    _timeout: std::time::Duration,
) -> ProbeResult {
    ProbeResult::failure(ProbeKind::Prometheus, "prometheus probe not built yet")
}
