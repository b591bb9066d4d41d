//! notify: getting pages to people.
//!
//! - `view` is what a page says; `render` turns it into PagerDuty events and chat messages.
//! - `pagerduty` knows PagerDuty's wire format and limits; `ratelimit` keeps nightshift under
//!   its per-key limit.
//! - `deliver` is the delivery worker over the store's durable outbox, with retries and the
//!   fallback chain.
//! - `selfpage` pages about nightshift itself from memory (store failing, Watchdog silent),
//!   for when the store cannot be trusted to hold the page.

pub mod deliver;
pub mod pagerduty;
pub mod ratelimit;
pub mod render;
pub mod selfpage;
pub mod view;
