//! `http` probe (being written).
use super::{ProbeKind, ProbeResult};
pub async fn probe(
    _client: &reqwest::Client,
    _method: &str,
    _url: &str,
    _headers: &[(String, String)],
    _capture_headers: &[String],
    _json_fields: &[String],
) -> ProbeResult {
    ProbeResult::failure(ProbeKind::Http, "http probe not built yet")
}
