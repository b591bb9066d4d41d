//! notify: paging. Only `pagerduty` knows PagerDuty's wire format; `ratelimit` keeps nightshift
//! under PagerDuty's per-key limit. (Issue 5 groundwork: the outbox, the delivery worker and
//! the fallback notifier come next.)

pub mod pagerduty;
pub mod ratelimit;
