//! `statuspage` probe (being written).
use super::{ProbeKind, ProbeResult};
pub async fn probe(_client: &reqwest::Client, _url: &str) -> ProbeResult {
    ProbeResult::failure(ProbeKind::Statuspage, "statuspage probe not built yet")
}
