//! page: who is told, when, and how.
//!
//! - [`policy`]: when an incident pages, as pure rules over what the store knows.
//! - [`notify`]: the outbox's delivery to PagerDuty and chat notifiers, rendering, rate limits
//!   and the self-page.

pub mod notify;
pub mod policy;
