//! act: automatic mitigations within a bounded blast radius.
//!
//! - [`mitigate`]: orchestrates one decided action: asks the governor, records the plan in the
//!   store, runs it through its kind, reads the result back, reverts and verifies.
//! - [`governor`]: the pure judgement (mode, shadow, cooldown, budget, one at a time per
//!   target, escalation instead of repetition).
//! - [`actions`]: one module per action kind (Kubernetes, a local command, an HTTP call), each
//!   owning its lifecycle: run, read back, revert.

pub mod actions;
pub mod governor;
pub mod mitigate;
