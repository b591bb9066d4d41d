//! bundle: one archive per incident with the evidence, the timeline and a drafted postmortem.
//!
//! - `request` — what a collector is asked to fetch (rendered from the rule file) and what it
//!   brings back.
//! - `collectors` — the collector executors, one file per kind (Prometheus, Kubernetes
//!   logs/events/object, HTTP, exec), and what they share in `mod.rs`: dispatch, timeouts,
//!   size caps, a global concurrency cap and sharing of identical requests in a storm.
//! - `facts` — everything known about an incident, as the documents need it.
//! - `docs` — one file per document (`timeline.md`, `comms.md`, `postmortem.md`, the JSON
//!   files), rendered from the facts.
//! - `archive` — `tar.gz` written atomically (temporary name, fsync, rename).
//! - `background` — the low-priority threads that render, scrub and compress bundles.
//! - `bundler` — the work: collect, gather the facts, redact, write, rewrite at close,
//!   retention, and the evidence gate disruptive actions wait on.

pub mod archive;
pub mod background;
pub mod bundler;
pub mod collectors;
pub mod docs;
pub mod facts;
pub mod request;
