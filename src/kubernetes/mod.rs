//! kubernetes: the one way nightshift talks to the Kubernetes API server, shared by the
//! `kubernetes` probe, the Kubernetes actions and the Kubernetes collectors.
//!
//! - `client` — [`ClientSlot`]: the client, built on first use from `[kubernetes]`.
//! - `names` — the RFC 1123 checks every rendered namespace and object name passes before it
//!   becomes part of an API path.
//! - `workload` — [`Workload`] (a Deployment, StatefulSet or DaemonSet in a namespace) and the
//!   requests on it: get, patch, scale, each bounded by [`REQUEST_TIMEOUT`], and
//!   [`RequestError`], which says whether a failed request was sent at all.
//!
//! What a caller does with an answer (a probe's fields, an action's outcome, a collector's
//! files) stays with the caller.

mod client;
pub mod names;
mod workload;

use std::error::Error as StdError;

pub use client::ClientSlot;
pub use workload::{
    ErrorKind, FIELD_MANAGER, REQUEST_TIMEOUT, RequestError, Workload, WorkloadKind, get_scale,
    get_workload, patch_scale, patch_workload,
};

/// An error in words: an API error as `HTTP 403 Forbidden: <the server's message>`, anything
/// else with each cause not already spelled out by the text before it.
pub fn error_text(error: &(dyn StdError + 'static)) -> String {
    if let Some(kube::Error::Api(status)) = error.downcast_ref::<kube::Error>() {
        return status_text(status.code, &status.reason, &status.message);
    }
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !cause_text.is_empty() && !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `HTTP 403 Forbidden: <message>`; `API error` when the answer carried no code.
fn status_text(code: u16, reason: &str, message: &str) -> String {
    let mut text = if code == 0 {
        "API error".to_owned()
    } else {
        format!("HTTP {code}")
    };
    if !reason.is_empty() {
        text.push(' ');
        text.push_str(reason);
    }
    if !message.is_empty() {
        text.push_str(": ");
        text.push_str(message);
    }
    text
}
