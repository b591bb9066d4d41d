//! config::load: reading the file, layering the `NIGHTSHIFT_<SECTION>__<KEY>` environment
//! overrides over it with the `config` crate, resolving relative paths against the file, and
//! remembering where each key was set; then the key checks (`keys`) and the checks across
//! keys (`validate`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::keys::{check_environment, check_file};
use super::validate::validate;
use super::{Config, ConfigError, ConfigErrors};

/// The prefix of environment overrides: `NIGHTSHIFT_SERVER__LISTEN=0.0.0.0:9797`.
pub const ENV_PREFIX: &str = "NIGHTSHIFT_";

/// Where each key was set, so that later checks can point at it.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    pub(super) file: Option<String>,
    pub(super) lines: BTreeMap<String, usize>,
    pub(super) env: BTreeMap<String, String>,
}

impl Origins {
    pub fn of(&self, key: &str) -> String {
        if let Some(variable) = self.env.get(key) {
            return format!("environment {variable}");
        }
        match (&self.file, self.lines.get(key)) {
            (Some(file), Some(line)) => format!("{file}:{line}"),
            (Some(file), None) => file.clone(),
            (None, _) => "built-in defaults".to_owned(),
        }
    }
}

/// A loaded configuration together with where its keys came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub origins: Origins,
    pub path: Option<PathBuf>,
}

/// Relative paths resolve against the config file's directory, as in most daemons' configs:
/// under systemd the working directory is `/`, and `[rules] dir = "rules"` must not silently
/// mean `/rules`. This holds for the built-in defaults too (`rules`, `./var`) once there is a
/// config file. A path given by an environment override stays relative to the working
/// directory, as a shell user who typed it expects; without a config file everything does.
fn resolve_relative_paths(config: &mut Config, file: &Path, origins: &Origins) {
    let base = file.parent().unwrap_or(Path::new(""));
    let resolve = |key: &str, path: &mut PathBuf| {
        if path.is_relative() && !path.as_os_str().is_empty() && !origins.env.contains_key(key) {
            *path = base.join(&*path);
        }
    };
    let optional = |key: &str, path: &mut Option<PathBuf>| {
        if let Some(path) = path {
            resolve(key, path);
        }
    };
    optional("server.tls_cert_file", &mut config.server.tls_cert_file);
    optional("server.tls_key_file", &mut config.server.tls_key_file);
    optional("auth.ingest_token_file", &mut config.auth.ingest_token_file);
    optional(
        "auth.ingest_basic_auth_file",
        &mut config.auth.ingest_basic_auth_file,
    );
    optional("auth.read_token_file", &mut config.auth.read_token_file);
    optional(
        "auth.read_basic_auth_file",
        &mut config.auth.read_basic_auth_file,
    );
    optional("auth.admin_token_file", &mut config.auth.admin_token_file);
    optional(
        "auth.admin_basic_auth_file",
        &mut config.auth.admin_basic_auth_file,
    );
    resolve("store.dir", &mut config.store.dir);
    optional(
        "alertmanager.token_file",
        &mut config.alertmanager.token_file,
    );
    optional(
        "alertmanager.basic_auth_file",
        &mut config.alertmanager.basic_auth_file,
    );
    resolve("rules.dir", &mut config.rules.dir);
    optional("kubernetes.kubeconfig", &mut config.kubernetes.kubeconfig);
    optional("actions.secrets_dir", &mut config.actions.secrets_dir);
    for (name, path) in &mut config.pagerduty.routing_keys {
        resolve(&format!("pagerduty.routing_keys.{name}"), path);
    }
    for (name, notifier) in &mut config.notifiers {
        resolve(
            &format!("notifiers.{name}.url_file"),
            &mut notifier.url_file,
        );
    }
}

/// The environment overrides among `variables`: `NIGHTSHIFT_<SECTION>__<KEY>` only, so that
/// variables such as those nightshift sets for its own child processes are never mistaken
/// for settings.
pub fn env_overrides(
    variables: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    variables
        .into_iter()
        .filter(|(name, _)| {
            name.strip_prefix(ENV_PREFIX)
                .is_some_and(|rest| rest.contains("__"))
        })
        .collect()
}

/// Load the file at `path` (or the built-in defaults), apply `env` overrides, validate.
pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Loaded, ConfigErrors> {
    let mut origins = Origins::default();
    let mut errors = Vec::new();
    let text = match path {
        Some(path) => {
            let shown = path.display().to_string();
            origins.file = Some(shown.clone());
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    check_file(&shown, &text, &mut origins, &mut errors);
                    text
                }
                Err(error) => {
                    return Err(ConfigErrors(vec![ConfigError {
                        origin: shown,
                        key: String::new(),
                        message: format!("cannot read config file: {error}"),
                    }]));
                }
            }
        }
        None => String::new(),
    };
    // A misspelt variable would otherwise be a setting silently not applied, or an error
    // from the layering below that does not say which variable it came from.
    check_environment(env, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }

    let mut environment = std::collections::HashMap::new();
    for (name, value) in env {
        let key = name[ENV_PREFIX.len()..].to_lowercase().replace("__", ".");
        origins.env.insert(key, name.clone());
        environment.insert(name.clone(), value.clone());
    }
    let built = ::config::Config::builder()
        .add_source(::config::File::from_str(&text, ::config::FileFormat::Toml))
        .add_source(
            ::config::Environment::with_prefix("NIGHTSHIFT")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(environment)),
        )
        .build()
        .and_then(|layered| layered.try_deserialize::<Config>());
    let config = match built {
        Ok(config) => config,
        Err(error) => {
            return Err(ConfigErrors(vec![ConfigError {
                origin: if env.is_empty() {
                    origins.of("")
                } else {
                    "environment".to_owned()
                },
                key: String::new(),
                message: error.to_string(),
            }]));
        }
    };
    let mut config = config;
    if let Some(path) = path {
        resolve_relative_paths(&mut config, path, &origins);
    }
    validate(&config, &origins, &mut errors);
    if errors.is_empty() {
        Ok(Loaded {
            config,
            origins,
            path: path.map(Path::to_path_buf),
        })
    } else {
        Err(ConfigErrors(errors))
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_text;
    use std::time::Duration;

    #[test]
    fn defaults_apply_without_a_file() {
        let loaded = load(None, &[]).unwrap();
        assert_eq!(loaded.config, Config::default());
        assert_eq!(loaded.config.server.listen, "127.0.0.1:9797");
        assert_eq!(loaded.config.store.dir, PathBuf::from("./var"));
    }

    #[test]
    fn environment_overrides_the_file() {
        let config = load_text(
            "[server]\nlisten = \"127.0.0.1:1\"\n[reconcile]\ngone_grace = \"1m\"\n",
            &[
                ("NIGHTSHIFT_SERVER__LISTEN", "127.0.0.1:2"),
                ("NIGHTSHIFT_STORE__MAX_UNRECONCILED", "7"),
                ("NIGHTSHIFT_RECONCILE__GONE_GRACE", "2s"),
            ],
        )
        .unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:2");
        assert_eq!(config.store.max_unreconciled, 7);
        assert_eq!(config.reconcile.gone_grace, Duration::from_secs(2));
    }

    #[test]
    fn environment_errors_name_the_variable() {
        let errors = load_text("", &[("NIGHTSHIFT_SERVER__LISTEN", "0.0.0.0:1")]).unwrap_err();
        assert!(
            errors[0].starts_with("environment NIGHTSHIFT_SERVER__LISTEN: server.listen"),
            "{errors:?}"
        );
        let errors = load_text("", &[("NIGHTSHIFT_SERVER__NOPE", "1")]).unwrap_err();
        assert!(errors[0].contains("nope"), "{errors:?}");
    }

    #[test]
    fn only_double_underscore_variables_are_overrides() {
        let found = env_overrides([
            ("NIGHTSHIFT_INCIDENT_ID".to_owned(), "x".to_owned()),
            ("NIGHTSHIFT_LOG__LEVEL".to_owned(), "debug".to_owned()),
            ("HOME".to_owned(), "/root".to_owned()),
        ]);
        assert_eq!(
            found,
            vec![("NIGHTSHIFT_LOG__LEVEL".to_owned(), "debug".to_owned())]
        );
    }

    #[test]
    fn the_documented_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/nightshift.toml");
        let loaded = load(Some(&path), &[]).unwrap();
        assert_eq!(loaded.config.server.listen, "127.0.0.1:9797");
    }
}
