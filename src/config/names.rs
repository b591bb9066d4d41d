//! config::names: what Kubernetes accepts as a namespace, container or object name. The
//! configuration checks its namespace allow-list with these, and rules, probes, actions and
//! collectors check the names they are given with the same rules; they live here, at the
//! bottom, so that none of those has to import another to share them.

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

/// A valid Kubernetes object name (RFC 1123 subdomain): labels joined by dots, at most 253.
pub fn is_rfc1123_name(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_rfc1123_label)
}
