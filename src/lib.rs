//! nightshift: the first responder for Alertmanager alerts when nobody is awake.
//!
//! See ARCHITECTURE.md for the flow and a map of these modules.

pub mod act;
pub mod auth;
pub mod bundle;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod duration;
pub mod episodes;
pub mod escape;
pub mod explain;
pub mod http_client;
pub mod ingest;
pub mod kubernetes;
pub mod page;
pub mod probes;
pub mod redact;
pub mod report;
pub mod rules;
pub mod server;
pub mod state_dir;
pub mod store;
pub mod systemd;
pub mod telemetry;
