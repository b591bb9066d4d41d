//! rules: classify every alert into P1–P4 and walk the runbook's decision tree.

pub mod matcher;

/// A valid Kubernetes name segment (RFC 1123 label): lowercase alphanumerics and `-`, starting
/// and ending alphanumeric, at most 63 characters.
pub fn is_rfc1123_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}
