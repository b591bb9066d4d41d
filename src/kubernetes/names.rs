//! names: what a namespace or object name must look like before it goes into an API path.
//! Targets are often templated from alert labels; a value like `..`, `a/../b` or `x?watch=1`
//! would otherwise change the path asked for.

pub use crate::config::{is_rfc1123_label, is_rfc1123_name};

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
