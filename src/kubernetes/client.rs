//! client: the Kubernetes client, built on first use from `[kubernetes]`: the named kubeconfig
//! file (and context), or else the usual inference (in-cluster service account,
//! `$KUBECONFIG`, `~/.kube/config`). A client that cannot be built is an error for that use
//! only: the next use tries again.

use kube::config::{KubeConfigOptions, Kubeconfig};

use super::error_text;
use crate::config::KubernetesConfig;

/// The Kubernetes client, built on first use from `[kubernetes]`.
pub struct ClientSlot {
    config: KubernetesConfig,
    client: tokio::sync::OnceCell<kube::Client>,
}

impl ClientSlot {
    pub fn new(config: &KubernetesConfig) -> ClientSlot {
        ClientSlot {
            config: config.clone(),
            client: tokio::sync::OnceCell::new(),
        }
    }

    /// The configuration the client is (or will be) built from.
    pub fn config(&self) -> &KubernetesConfig {
        &self.config
    }

    /// The client, built now if this is the first use. Concurrent first uses build it once;
    /// a failure is not remembered, so the next call tries again (a kubeconfig written late,
    /// an API server that was not resolvable yet).
    pub async fn client(&self) -> Result<kube::Client, String> {
        self.client
            .get_or_try_init(|| build_client(&self.config))
            .await
            .cloned()
    }
}

async fn build_client(config: &KubernetesConfig) -> Result<kube::Client, String> {
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            // The error names the file.
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|error| format!("Kubernetes client: {}", error_text(&error)))?;
            let options = KubeConfigOptions {
                context: config.context.clone(),
                ..KubeConfigOptions::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|error| {
                    let context = config
                        .context
                        .as_deref()
                        .map(|context| format!(" (context {context:?})"))
                        .unwrap_or_default();
                    format!(
                        "Kubernetes client: kubeconfig {}{context}: {}",
                        path.display(),
                        error_text(&error)
                    )
                })?
        }
        None if config.context.is_some() => {
            // A context without a file: the default kubeconfig, that context.
            let options = KubeConfigOptions {
                context: config.context.clone(),
                ..KubeConfigOptions::default()
            };
            kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|error| {
                    format!(
                        "Kubernetes client: default kubeconfig (context {:?}): {}",
                        config.context.as_deref().unwrap_or_default(),
                        error_text(&error)
                    )
                })?
        }
        None => kube::Config::infer().await.map_err(|error| {
            format!(
                "Kubernetes client: no kubeconfig configured and none could be inferred: {}",
                error_text(&error)
            )
        })?,
    };
    let mut kube_config = kube_config;
    // kube-client takes HTTPS_PROXY from the environment when the kubeconfig names no proxy;
    // nightshift uses no proxy from the environment (see `http_client`), so only the
    // kubeconfig's own `proxy-url` stays.
    let named = match &config.kubeconfig {
        Some(path) => Kubeconfig::read_from(path).ok(),
        None => Kubeconfig::read().ok(),
    }
    .is_some_and(|kubeconfig| {
        kubeconfig.clusters.iter().any(|named| {
            named
                .cluster
                .as_ref()
                .and_then(|cluster| cluster.proxy_url.as_deref())
                .is_some_and(|url| !url.is_empty())
        })
    });
    if !named {
        kube_config.proxy_url = None;
    }
    kube::Client::try_from(kube_config)
        .map_err(|error| format!("Kubernetes client: {}", error_text(&error)))
}
