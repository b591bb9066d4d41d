//! The collector schema: what a rule file asks to be gathered into an incident's debug bundle
//! (`[collector.NAME]`, listed by a rule's `collect = [...]`), validated at load so that
//! `check` refuses a broken collector and `explain` can show the bundle plan. Rendering turns
//! a declaration into a [`CollectorRequest`] for one incident; running it is the bundle's job
//! (`crate::bundle::collect`). Nothing here has side effects.
//!
//! Collectors follow the actions' rules for inputs: every string that is a template is
//! rendered from the incident's context (labels, annotations, probe results, severity,
//! incident id); Kubernetes names are checked after rendering; an `http` collector's scheme
//! and host are written out in the file ([`crate::act::actions::http::render_url`]); an `exec`
//! collector's argv follows [`crate::act::actions::exec::render_argv`] and runs with
//! [`crate::act::actions::exec::incident_env`]. `secret()` is refused in every collector template:
//! a [`CollectorRequest`] carries rendered values only, and those are shown by `explain` and
//! kept in the bundle's manifest.
//!
//! By job: `spec` (the schema, its defaults and the settings every kind shares), `validate`
//! (the load-time checks), `render` (a declaration filled in for one incident, and the query
//! window) and `describe` (one line per rendered collector, for `explain`).

mod describe;
mod render;
mod spec;
mod validate;

#[cfg(test)]
mod fixtures;

pub use describe::describe;
pub use render::{RenderInput, range_window, rfc3339};
pub use spec::{
    At, CollectorCommon, CollectorSpec, DEFAULT_MAX_BYTES, MAX_MAX_BYTES, MAX_POINTS, MAX_TIMEOUT,
    is_collector_name,
};
