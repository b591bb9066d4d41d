//! actions: carrying out what a decision chose. One file per kind, each a few async functions
//! with every argument already rendered and checked; a kind owns its whole lifecycle (run,
//! read back, revert), `mitigate` only orchestrates it. The governor (`governor`) decides
//! whether an action may run at all, and `mitigate` records it before and after.
//!
//! Invariant: an executor reports exactly what is known about the effect. `NotApplied` only
//! when the change provably did not happen (so retrying is safe); `Unknown` when a request was
//! sent and the answer was lost (settled by reading the target back, else `uncertain`).

pub mod exec;
pub mod http;
pub mod kubernetes;

use serde::Serialize;
use serde_json::Value;

/// The outcome of running one action once.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Applied. `detail` holds what the kind reports: previous values (to revert), exit code
    /// and output, the HTTP status, …
    Done { detail: Value },
    /// Provably not applied: the connection was never made, 409 Conflict, 429, or a
    /// read-back shows the change absent. Safe to retry (with backoff) when `retryable`.
    NotApplied { error: String, retryable: bool },
    /// The request went out and the answer was lost (a timeout or 5xx after sending): the
    /// effect is unknown until the target is read back.
    Unknown { error: String },
    /// Refused for good (403, 404, a validation error, a paused deployment): not retried.
    Failed { error: String },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Done { .. } => "done",
            Outcome::NotApplied { .. } => "not_applied",
            Outcome::Unknown { .. } => "unknown",
            Outcome::Failed { .. } => "failed",
        }
    }
}
