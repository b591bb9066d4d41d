//! auth: the three credentials (*ingest*, *read*, *admin*) and how a request proves one.
//!
//! Each credential is optional and read from files only: a bearer token file and/or a
//! basic-auth file holding `user:password`. Comparison is in constant time over SHA-256
//! digests, so neither the content nor the length of a secret leaks through timing.

use std::path::Path;

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::AuthConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Ingest,
    Read,
    Admin,
}

impl Role {
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

fn read_secret(key: &str, path: &Path) -> Result<String, String> {
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
        if !self.is_required() {
            return true;
        }
        let Some(header) = authorization else {
            return false;
        };
        let Ok(header) = std::str::from_utf8(header) else {
            return false;
        };
        let (scheme, value) = header.split_once(' ').unwrap_or((header, ""));
        let value = value.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            if let Some(expected) = &self.bearer {
                return bool::from(digest(value.as_bytes()).ct_eq(expected));
            }
        } else if scheme.eq_ignore_ascii_case("basic")
            && let Some(expected) = &self.basic
            && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(value)
        {
            return bool::from(digest(&decoded).ct_eq(expected));
        }
        false
    }
}

/// The three credentials, loaded from their files.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub ingest: Credential,
    pub read: Credential,
    pub admin: Credential,
}

impl Credentials {
    /// Read every configured secret file; every problem is reported.
    pub fn load(config: &AuthConfig) -> Result<Credentials, Vec<String>> {
        let mut errors = Vec::new();
        let credentials = Credentials {
            ingest: Credential::load(
                "auth.ingest_token_file",
                config.ingest_token_file.as_deref(),
                "auth.ingest_basic_auth_file",
                config.ingest_basic_auth_file.as_deref(),
                &mut errors,
            ),
            read: Credential::load(
                "auth.read_token_file",
                config.read_token_file.as_deref(),
                "auth.read_basic_auth_file",
                config.read_basic_auth_file.as_deref(),
                &mut errors,
            ),
            admin: Credential::load(
                "auth.admin_token_file",
                config.admin_token_file.as_deref(),
                "auth.admin_basic_auth_file",
                config.admin_basic_auth_file.as_deref(),
                &mut errors,
            ),
        };
        if errors.is_empty() {
            Ok(credentials)
        } else {
            Err(errors)
        }
    }

    pub fn for_role(&self, role: Role) -> &Credential {
        match role {
            Role::Ingest => &self.ingest,
            Role::Read => &self.read,
            Role::Admin => &self.admin,
        }
    }
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

    #[test]
    fn secrets_come_from_files_and_trailing_newlines_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "abc\n").unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let config = AuthConfig {
            ingest_token_file: Some(token),
            read_token_file: Some(empty),
            admin_basic_auth_file: Some(dir.path().join("missing")),
            ..AuthConfig::default()
        };
        let errors = Credentials::load(&config).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("auth.read_token_file:"), "{errors:?}");
        assert!(
            errors[1].starts_with("auth.admin_basic_auth_file: cannot read"),
            "{errors:?}"
        );
    }
}
