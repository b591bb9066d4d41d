//! auth: the three credentials (*ingest*, *read*, *admin*) and how a request proves one.
//!
//! Credentials are read from files only: a bearer token file and/or a basic-auth file holding
//! `user:password`. One the configuration does not name is generated on first start under
//! `<state dir>/credentials/` (32 random bytes from the OS, hex, mode 0600), so nothing is
//! open by default; only `[auth] allow_unauthenticated` opens an endpoint group. A credential
//! file that others may read is refused, as ssh refuses such a key. Comparison is in constant
//! time over SHA-256 digests, so neither the content nor the length of a secret leaks through
//! timing.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AuthConfig, MetricsAccess, OpenEndpoint};

/// The directory under the state directory that holds generated credentials.
pub const CREDENTIALS_DIR: &str = "credentials";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Ingest,
    Read,
    Admin,
}

impl Role {
    /// The credential that guards an endpoint group.
    pub fn of(group: OpenEndpoint) -> Role {
        match group {
            OpenEndpoint::Webhook => Role::Ingest,
            OpenEndpoint::Api => Role::Read,
            OpenEndpoint::Admin => Role::Admin,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

/// One credential: any of its accepted secrets opens it. Secrets are kept only as digests.
#[derive(Clone, Default)]
pub struct Credential {
    bearer: Option<[u8; 32]>,
    basic: Option<[u8; 32]>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("bearer", &self.bearer.is_some())
            .field("basic", &self.basic.is_some())
            .finish()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Refuse a credential file that users other than its owner and group may read or change.
fn check_private(key: &str, path: &Path) -> Result<(), String> {
    let metadata = std::fs::metadata(path)
        .map_err(|error| format!("{key}: cannot read {}: {error}", path.display()))?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o007 != 0 {
        return Err(format!(
            "{key}: {} is accessible by other users (mode {mode:04o}); a credential must not \
             be: chmod 600 it (or 640 with the service's group)",
            path.display()
        ));
    }
    Ok(())
}

fn read_secret(key: &str, path: &Path) -> Result<String, String> {
    check_private(key, path)?;
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("{key}: cannot read {}: {error}", path.display()))?;
    let secret = text.trim_end_matches(['\n', '\r']).to_owned();
    if secret.trim().is_empty() {
        return Err(format!("{key}: {} is empty", path.display()));
    }
    Ok(secret)
}

impl Credential {
    fn load(
        token_key: &str,
        token_file: Option<&Path>,
        basic_key: &str,
        basic_file: Option<&Path>,
        errors: &mut Vec<String>,
    ) -> Credential {
        let mut credential = Credential::default();
        if let Some(path) = token_file {
            match read_secret(token_key, path) {
                Ok(token) => credential.bearer = Some(digest(token.trim().as_bytes())),
                Err(error) => errors.push(error),
            }
        }
        if let Some(path) = basic_file {
            match read_secret(basic_key, path) {
                Ok(pair) if pair.contains(':') => credential.basic = Some(digest(pair.as_bytes())),
                Ok(_) => errors.push(format!(
                    "{basic_key}: {} must hold user:password on one line",
                    path.display()
                )),
                Err(error) => errors.push(error),
            }
        }
        credential
    }

    pub fn is_required(&self) -> bool {
        self.bearer.is_some() || self.basic.is_some()
    }

    /// Does this `Authorization` header value open the credential? An unset credential is open.
    pub fn permits(&self, authorization: Option<&[u8]>) -> bool {
        !self.is_required() || Presented::parse(authorization).is_some_and(|p| self.accepts(&p))
    }

    /// Whether a parsed, digested secret is this credential's (constant time).
    fn accepts(&self, presented: &Presented) -> bool {
        match (presented, &self.bearer, &self.basic) {
            (Presented::Bearer(given), Some(expected), _)
            | (Presented::Basic(given), _, Some(expected)) => bool::from(given.ct_eq(expected)),
            _ => false,
        }
    }
}

/// The secret an `Authorization` header presents, digested once however many credentials it is
/// compared with.
enum Presented {
    Bearer([u8; 32]),
    Basic([u8; 32]),
}

impl Presented {
    fn parse(authorization: Option<&[u8]>) -> Option<Presented> {
        let header = std::str::from_utf8(authorization?).ok()?;
        let (scheme, value) = header.split_once(' ').unwrap_or((header, ""));
        let value = value.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            Some(Presented::Bearer(digest(value.as_bytes())))
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value)
                .ok()?;
            Some(Presented::Basic(digest(&decoded)))
        } else {
            None
        }
    }
}

/// The three credentials, loaded from their files, and who may scrape `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub ingest: Credential,
    pub read: Credential,
    pub admin: Credential,
    pub metrics: MetricsAccess,
}

/// What [`Credentials::load`] may do about a credential that is neither configured nor opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing<'a> {
    /// Read it from the state directory, creating it there on first use (the daemon).
    Generate(&'a Path),
    /// Leave it open: only the configured files are checked (`check`, which changes nothing).
    CheckOnly,
}

impl Credentials {
    /// Read every configured secret file and, for the daemon, the generated ones; every
    /// problem is reported. Returns the credentials and the generated files created now.
    pub fn load(
        config: &AuthConfig,
        missing: Missing<'_>,
    ) -> Result<(Credentials, Vec<PathBuf>), Vec<String>> {
        let mut errors = Vec::new();
        let mut credentials = Credentials::load_configured(config, &mut errors);
        let mut created = Vec::new();
        if let Missing::Generate(state_dir) = missing {
            for group in [
                OpenEndpoint::Webhook,
                OpenEndpoint::Api,
                OpenEndpoint::Admin,
            ] {
                if config.configures(group) || config.allow_unauthenticated.contains(&group) {
                    continue;
                }
                let role = Role::of(group);
                match generated(state_dir, role) {
                    Ok((token, new)) => {
                        if let Some(path) = new {
                            created.push(path);
                        }
                        let slot = match role {
                            Role::Ingest => &mut credentials.ingest,
                            Role::Read => &mut credentials.read,
                            Role::Admin => &mut credentials.admin,
                        };
                        slot.bearer = Some(digest(token.as_bytes()));
                    }
                    Err(error) => errors.push(error),
                }
            }
        }
        if errors.is_empty() {
            Ok((credentials, created))
        } else {
            Err(errors)
        }
    }

    fn load_configured(config: &AuthConfig, errors: &mut Vec<String>) -> Credentials {
        Credentials {
            ingest: Credential::load(
                "auth.ingest_token_file",
                config.ingest_token_file.as_deref(),
                "auth.ingest_basic_auth_file",
                config.ingest_basic_auth_file.as_deref(),
                errors,
            ),
            read: Credential::load(
                "auth.read_token_file",
                config.read_token_file.as_deref(),
                "auth.read_basic_auth_file",
                config.read_basic_auth_file.as_deref(),
                errors,
            ),
            admin: Credential::load(
                "auth.admin_token_file",
                config.admin_token_file.as_deref(),
                "auth.admin_basic_auth_file",
                config.admin_basic_auth_file.as_deref(),
                errors,
            ),
            metrics: config.metrics,
        }
    }

    /// Whether this `Authorization` header value opens any credential that is required: the
    /// request comes from someone nightshift knows, whatever the endpoint.
    pub fn any_permits(&self, authorization: Option<&[u8]>) -> bool {
        let Some(presented) = Presented::parse(authorization) else {
            return false;
        };
        [&self.ingest, &self.read, &self.admin]
            .into_iter()
            .any(|credential| credential.is_required() && credential.accepts(&presented))
    }

    pub fn for_role(&self, role: Role) -> &Credential {
        match role {
            Role::Ingest => &self.ingest,
            Role::Read => &self.read,
            Role::Admin => &self.admin,
        }
    }
}

/// Where the generated credential of `role` lives.
pub fn generated_path(state_dir: &Path, role: Role) -> PathBuf {
    state_dir.join(CREDENTIALS_DIR).join(role.as_str())
}

/// The generated token of `role`, created (0600, in a 0700 directory) if it does not exist
/// yet; the path is returned when it was created now.
fn generated(state_dir: &Path, role: Role) -> Result<(String, Option<PathBuf>), String> {
    let dir = state_dir.join(CREDENTIALS_DIR);
    let key = format!("generated {} credential", role.as_str());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|error| format!("{key}: cannot create {}: {error}", dir.display()))?;
    // Whatever the umask or an older version left: the directory is the owner's alone.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|error| format!("{key}: cannot set the mode of {}: {error}", dir.display()))?;
    let path = generated_path(state_dir, role);
    if path.exists() {
        return read_secret(&key, &path).map(|token| (token.trim().to_owned(), None));
    }
    let token = hex::encode(random_bytes::<32>().map_err(|error| format!("{key}: {error}"))?);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(format!("{token}\n").as_bytes())?;
        file.sync_all()?;
        std::fs::File::open(&dir)?.sync_all()
    };
    write().map_err(|error| format!("{key}: cannot write {}: {error}", path.display()))?;
    Ok((token, Some(path)))
}

/// `N` bytes from the kernel's random source (getrandom(2), which blocks only until the pool
/// is first initialised at boot).
fn random_bytes<const N: usize>() -> Result<[u8; N], String> {
    let mut bytes = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: the pointer and length describe the unfilled tail of `bytes`.
        let got = unsafe {
            libc::getrandom(
                bytes[filled..].as_mut_ptr().cast::<libc::c_void>(),
                N - filled,
                0,
            )
        };
        if got < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("cannot read random bytes: {error}"));
        }
        filled += got.unsigned_abs();
    }
    Ok(bytes)
}

/// The admin token a CLI command sends when the configuration names no admin credential: the
/// generated one, if the daemon created it.
pub fn generated_admin_token(state_dir: &Path) -> Option<String> {
    let path = generated_path(state_dir, Role::Admin);
    read_secret("generated admin credential", &path)
        .ok()
        .map(|token| token.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(token: Option<&str>, basic: Option<&str>) -> Credential {
        Credential {
            bearer: token.map(|t| digest(t.as_bytes())),
            basic: basic.map(|b| digest(b.as_bytes())),
        }
    }

    #[test]
    fn authorization_headers() {
        let basic = |pair: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        };
        let both = credential(Some("s3cret"), Some("am:pw"));
        let cases: Vec<(&Credential, Option<String>, bool)> = vec![
            (&both, None, false),
            (&both, Some("Bearer s3cret".into()), true),
            (&both, Some("bearer s3cret".into()), true),
            (&both, Some("Bearer s3cret2".into()), false),
            (&both, Some("Bearer ".into()), false),
            (&both, Some("s3cret".into()), false),
            (&both, Some(basic("am:pw")), true),
            (&both, Some(basic("am:wrong")), false),
            (&both, Some("Basic !!!".into()), false),
        ];
        for (credential, header, expected) in cases {
            assert_eq!(
                credential.permits(header.as_deref().map(str::as_bytes)),
                expected,
                "{header:?}"
            );
        }
        let open = Credential::default();
        assert!(open.permits(None));
        let token_only = credential(Some("t"), None);
        assert!(!token_only.permits(Some(basic("t:t").as_bytes())));
    }

    fn write_private(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn unconfigured_credentials_are_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("var");
        let configured = dir.path().join("read");
        write_private(&configured, "mine\n");
        let config = AuthConfig {
            read_token_file: Some(configured),
            ..AuthConfig::default()
        };
        let (first, created) = Credentials::load(&config, Missing::Generate(&state)).unwrap();
        assert_eq!(
            created,
            vec![
                generated_path(&state, Role::Ingest),
                generated_path(&state, Role::Admin)
            ]
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state.join(CREDENTIALS_DIR)), 0o700);
        let ingest = std::fs::read_to_string(&created[0]).unwrap();
        let ingest = ingest.trim();
        assert_eq!(ingest.len(), 64, "32 bytes, hex");
        assert_eq!(mode(&created[0]), 0o600);
        assert!(first.ingest.permits(Some(bearer(ingest).as_bytes())));
        assert!(!first.ingest.permits(None));
        assert!(first.read.permits(Some(b"Bearer mine")));
        assert!(!generated_path(&state, Role::Read).exists());
        // Kept across restarts: the second start reads what the first wrote.
        let (second, created) = Credentials::load(&config, Missing::Generate(&state)).unwrap();
        assert!(created.is_empty());
        assert!(second.ingest.permits(Some(bearer(ingest).as_bytes())));
        let admin = std::fs::read_to_string(generated_path(&state, Role::Admin)).unwrap();
        assert_ne!(admin.trim(), ingest, "each credential is its own");
        assert_eq!(generated_admin_token(&state).as_deref(), Some(admin.trim()));
    }

    #[test]
    fn an_opened_endpoint_gets_no_credential() {
        let dir = tempfile::tempdir().unwrap();
        let config = AuthConfig {
            allow_unauthenticated: vec![OpenEndpoint::Webhook],
            ..AuthConfig::default()
        };
        let (credentials, created) =
            Credentials::load(&config, Missing::Generate(dir.path())).unwrap();
        assert_eq!(created.len(), 2);
        assert!(credentials.ingest.permits(None));
        assert!(!credentials.read.permits(None));
        assert!(!credentials.admin.permits(None));
    }

    #[test]
    fn a_credential_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "abc\n").unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
        let config = AuthConfig {
            admin_token_file: Some(token.clone()),
            ..AuthConfig::default()
        };
        let errors = Credentials::load(&config, Missing::CheckOnly).unwrap_err();
        assert_eq!(
            errors,
            vec![format!(
                "auth.admin_token_file: {} is accessible by other users (mode 0644); a \
                 credential must not be: chmod 600 it (or 640 with the service's group)",
                token.display()
            )]
        );
        // A generated one that was opened up since is refused the same way.
        let state = dir.path().join("var");
        Credentials::load(&AuthConfig::default(), Missing::Generate(&state)).unwrap();
        let ingest = generated_path(&state, Role::Ingest);
        std::fs::set_permissions(&ingest, std::fs::Permissions::from_mode(0o604)).unwrap();
        let errors =
            Credentials::load(&AuthConfig::default(), Missing::Generate(&state)).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("accessible by other users"),
            "{errors:?}"
        );
    }

    #[test]
    fn secrets_come_from_files_and_trailing_newlines_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        write_private(&token, "abc\n");
        let empty = dir.path().join("empty");
        write_private(&empty, "\n");
        let config = AuthConfig {
            ingest_token_file: Some(token),
            read_token_file: Some(empty),
            admin_basic_auth_file: Some(dir.path().join("missing")),
            ..AuthConfig::default()
        };
        let errors = Credentials::load(&config, Missing::CheckOnly).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("auth.read_token_file:"), "{errors:?}");
        assert!(
            errors[1].starts_with("auth.admin_basic_auth_file: cannot read"),
            "{errors:?}"
        );
    }
}
