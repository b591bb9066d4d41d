//! names: what a namespace or object name must look like before it goes into an API path.
//! Targets are often templated from alert labels; a value like `..`, `a/../b` or `x?watch=1`
//! would otherwise change the path asked for.

/// A valid Kubernetes name segment (RFC 1123 label): lowercase alphanumerics and `-`, starting
/// and ending alphanumeric, at most 63 characters. Namespaces and container names are labels.
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

/// A namespace as the API accepts it, or why not.
pub fn check_namespace(namespace: &str) -> Result<(), String> {
    if is_rfc1123_label(namespace) {
        return Ok(());
    }
    Err(format!(
        "kubernetes namespace {namespace:?} is not a valid namespace name (RFC 1123 label: \
         lower case letters, digits and '-', at most 63)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_names() {
        for good in ["a", "web-1", "0abc"] {
            assert!(is_rfc1123_label(good), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a.b", "a/b", &"x".repeat(64)] {
            assert!(!is_rfc1123_label(bad), "{bad}");
        }
        assert!(is_rfc1123_name("tls.v2"));
        assert!(!is_rfc1123_name(".."));
        assert!(check_namespace("apps").is_ok());
        assert!(check_namespace("Apps").is_err());
    }
}
