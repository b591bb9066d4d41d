//! episodes: the middle of the flow, from a stored notification to a decided transition.
//!
//! - [`reconcile`]: pure rules that turn a notification's alerts into episode transitions
//!   (opened, resolved, reopened) and say what Alertmanager's API answer means for open ones.
//! - [`worker`]: the loop that claims undecided transitions from the store and hands each to
//!   `decide` once, then to the act and page stages through the store.
//! - [`decide`]: classify → probe → walk the runbook's tree for one alert, shared by the worker
//!   and `explain`.

pub mod decide;
pub mod reconcile;
pub mod worker;
