//! outcome: what an action came to, as a reader needs to know it; shared by the documents and
//! the night report.

use super::{cut, one_line, shown};
use crate::page::notify::render::change_summary;
use crate::page::notify::view::ActionLine;

/// What an action came to, as a reader needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ActionOutcome {
    /// It ran and the alert stopped within its verify window.
    Helped,
    /// It ran and the alert still fired after its verify window.
    DidNotHelp,
    /// It ran; its verify window has not passed.
    Unjudged,
    Failed,
    /// Started, and nobody knows whether it finished: check by hand.
    Uncertain,
    NotApplied,
    InProgress,
    /// The governor did not run it (cooldown, in flight, budget, paused, did not help before).
    Skipped,
    /// Dry-run or shadow: recorded, nothing changed.
    DryRun,
    Other,
}

impl ActionOutcome {
    pub(crate) fn of(action: &ActionLine) -> Self {
        match action.verdict.as_str() {
            "dry_run" | "shadow" => return ActionOutcome::DryRun,
            "cooldown" | "in_flight" | "budget" | "paused" | "did_not_help" => {
                return ActionOutcome::Skipped;
            }
            _ => {}
        }
        match action.state.as_str() {
            "done" => match action.verified.as_deref() {
                Some("helped") => ActionOutcome::Helped,
                Some("did_not_help") => ActionOutcome::DidNotHelp,
                _ => ActionOutcome::Unjudged,
            },
            "failed" => ActionOutcome::Failed,
            "uncertain" => ActionOutcome::Uncertain,
            "not_applied" => ActionOutcome::NotApplied,
            "started" | "planned" => ActionOutcome::InProgress,
            "skipped" => ActionOutcome::Skipped,
            _ => ActionOutcome::Other,
        }
    }

    /// A person has to look: the target's state is unknown, or the action broke.
    pub(crate) fn needs_a_human(self) -> bool {
        matches!(self, ActionOutcome::Failed | ActionOutcome::Uncertain)
    }

    /// It changed something (or was meant to and did).
    pub(crate) fn ran(self) -> bool {
        matches!(
            self,
            ActionOutcome::Helped | ActionOutcome::DidNotHelp | ActionOutcome::Unjudged
        )
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            ActionOutcome::Helped => "helped",
            ActionOutcome::DidNotHelp => "did_not_help",
            ActionOutcome::Unjudged => "not_judged_yet",
            ActionOutcome::Failed => "failed",
            ActionOutcome::Uncertain => "uncertain",
            ActionOutcome::NotApplied => "not_applied",
            ActionOutcome::InProgress => "in_progress",
            ActionOutcome::Skipped => "skipped",
            ActionOutcome::DryRun => "dry_run",
            ActionOutcome::Other => "other",
        }
    }

    /// Whether it helped, as the postmortem says it.
    pub(crate) fn verdict_text(self) -> &'static str {
        match self {
            ActionOutcome::Helped => "**Helped.**",
            ActionOutcome::DidNotHelp => "**Did not help.**",
            ActionOutcome::Unjudged => "Not judged: its verify window had not passed.",
            ActionOutcome::Failed => "⚠️ **Failed**: nothing changed.",
            ActionOutcome::Uncertain => "⚠️ **Outcome unknown**: check the target's state by hand.",
            ActionOutcome::NotApplied => "Not applied: nothing changed.",
            ActionOutcome::InProgress => "Still in progress when this was written.",
            ActionOutcome::Skipped => "Skipped by the governor: nothing changed.",
            ActionOutcome::DryRun => "Dry-run: recorded, nothing changed.",
            ActionOutcome::Other => "Outcome not recorded.",
        }
    }
}

/// What an action did, without whether it helped (the timeline says that when it was judged).
pub(super) fn plain_sentence(action: &ActionLine) -> String {
    let (summary, _) = change_summary(action, "");
    summary
        .strip_prefix("nightshift: ")
        .unwrap_or(&summary)
        .to_owned()
}

pub(super) fn action_name(action: &ActionLine) -> String {
    let name = if action.name.trim().is_empty() {
        action.kind.as_str()
    } else {
        action.name.as_str()
    };
    let name = shown(name, "the action");
    let target = one_line(&action.target);
    if target.is_empty() {
        name
    } else {
        format!("{name} on {}", cut(&target, 160))
    }
}
