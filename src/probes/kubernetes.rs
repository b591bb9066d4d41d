//! `kubernetes` probe (being written).
use super::{ProbeKind, ProbeResult};
use crate::config::KubernetesConfig;

/// The Kubernetes client, built on first use from `[kubernetes]`.
pub struct ClientSlot {
    _config: KubernetesConfig,
}

impl ClientSlot {
    pub fn new(config: &KubernetesConfig) -> ClientSlot {
        ClientSlot {
            _config: config.clone(),
        }
    }
}

pub async fn probe(
    _slot: &ClientSlot,
    _namespace: &str,
    _workload: Option<&str>,
    _object: Option<&str>,
) -> ProbeResult {
    ProbeResult::failure(ProbeKind::Kubernetes, "kubernetes probe not built yet")
}
