//! What a page says, rendered from a `PageView`: the PagerDuty trigger (summary, fields,
//! details and links), the change event after an automatic action, the one-line sentence that
//! tells a human what an action did, and the chat status update (a minijinja template, the
//! default one following the runbook's internal status format). In a Slack message every value
//! a template prints is escaped for Slack (`escape::slack`); the template's own text is not.
//!
//! Everything here is pure and cannot panic on its input: summaries, sentences and link lists
//! are bounded so that even a group of thousands of incidents makes an event PagerDuty takes.
//!
//! One file per document: `event` (the PagerDuty trigger and change events), `chat` (the
//! status update for Slack and generic webhooks, and config's check of its template),
//! `sentence` (what one action did, in one sentence) and `summary` (what every document says
//! about the page as a whole: its title, what was done, its links).

mod chat;
mod event;
mod sentence;
mod summary;

#[cfg(test)]
mod fixtures;

pub use chat::{
    DEFAULT_STATUS_TEMPLATE, check_template, render_chat, render_status, slack_body,
    status_context, webhook_body,
};
pub use event::{change_summary, trigger};
pub use sentence::action_sentence;
