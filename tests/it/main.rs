//! The integration tests, as one test binary (`cargo test --test it`; one module's tests:
//! `cargo test --test it faults::`). Each former `tests/<name>.rs` is the module `<name>`:
//! one binary links the whole crate once instead of twenty times, which is most of the build
//! time and of the disk the tests take.
//!
//! The modules share one process, so none may assume it is alone in its binary: process-wide
//! state is set up in `common`, once, the same way for all (the rustls crypto provider; the
//! lock the heavy tests take), never per module.

mod common;
mod fakes;

mod actions_kubernetes;
mod actions_local;
mod bundles;
mod cli;
mod collectors;
mod decisions;
mod e2e_alertmanager;
mod e2e_prometheus;
mod faults;
mod hostile_http;
mod ingest;
mod lifecycle;
mod mitigations;
mod outbox;
mod paging;
mod probes;
mod properties;
mod runbooks;
mod self_monitoring;
mod storm;
