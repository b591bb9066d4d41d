//! config: the daemon's settings, read from one TOML file and `NIGHTSHIFT_<SECTION>__<KEY>`
//! environment overrides, layered with the `config` crate.
//!
//! Loading reports every problem at once: each key of the file is checked on its own against
//! its section's schema, so one wrong key does not hide the next, and each error names the
//! file, the line and the key path. The name of each environment override is checked the same
//! way, and its errors name the variable. An unknown section or key comes with the nearest
//! valid one ("did you mean `listen`?") when one is a few edits away. Nothing else in the crate reads environment variables
//! (systemd's own notify variables aside, which belong to `systemd`).
//!
//! The work is split by job: `schema` (every section, key and default), `load` (the file, the
//! environment overrides, layering and relative paths), `keys` (each key checked on its own
//! against the schema, with did-you-mean suggestions), `validate` (the checks across keys),
//! `error` (what a problem says and where) and `names` (Kubernetes name rules, which config,
//! rules, probes and actions share).

mod error;
mod keys;
mod load;
mod names;
mod schema;
mod validate;

pub use error::{ConfigError, ConfigErrors};
pub use load::{ENV_PREFIX, Loaded, Origins, env_overrides, load};
pub use names::{is_rfc1123_label, is_rfc1123_name};
pub use schema::*;

/// Load `text` as a config file with `env` overrides: the configuration, or every error with
/// the file's path shown as `F`.
#[cfg(test)]
fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Config, Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.toml");
    std::fs::write(&path, text).unwrap();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    load(Some(&path), &env)
        .map(|loaded| loaded.config)
        .map_err(|errors| {
            errors
                .0
                .iter()
                .map(|e| e.to_string().replace(&path.display().to_string(), "F"))
                .collect()
        })
}
