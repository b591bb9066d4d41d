//! The kinds and states the store keeps as text, each an enum that converts to and from its
//! stored text in one place: its `as_str`. Parsing, SQL parameters and columns all go through
//! it, so a row read back is typed at the boundary, and text this version does not know (one
//! a newer nightshift wrote) is an [`Unrecognised`] error, never a panic or a silent default.
//! Where the domain already has the enum (`EpisodeStatus`, `TransitionKind`, the governor's
//! verdict), the store uses it; the rest live here.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::act::governor::VerdictKind;
use crate::episodes::reconcile::{EpisodeStatus, TransitionKind};

/// Stored text this version does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unrecognised {what} {text:?} (written by a newer nightshift?)")]
pub struct Unrecognised {
    /// What the text should have named: `action state`, `outbox kind`, …
    pub what: &'static str,
    pub text: String,
}

/// An enum kept as text in the store.
pub trait StoredText: Copy + Sized + 'static {
    /// What it is, in words, for errors.
    const WHAT: &'static str;
    /// Every value.
    const ALL: &'static [Self];
    /// Its stored text: the one place the mapping is written.
    fn as_str(self) -> &'static str;

    /// The value whose stored text is `text`.
    fn parse(text: &str) -> Result<Self, Unrecognised> {
        Self::ALL
            .iter()
            .copied()
            .find(|value| value.as_str() == text)
            .ok_or_else(|| Unrecognised {
                what: Self::WHAT,
                text: text.to_owned(),
            })
    }
}

/// The `Unrecognised` behind a failed column read, if that is why it failed.
pub(super) fn unrecognised_in(error: &rusqlite::Error) -> Option<&Unrecognised> {
    match error {
        rusqlite::Error::FromSqlConversionFailure(_, _, source) => source.downcast_ref(),
        _ => None,
    }
}

/// SQL parameter and column, `FromStr` and `Display`, all through [`StoredText`].
macro_rules! stored_text_impls {
    ($($name:ty),+ $(,)?) => {$(
        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                <$name as StoredText>::parse(text).map_err(|e| FromSqlError::Other(Box::new(e)))
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(StoredText::as_str(*self)))
            }
        }

        impl std::str::FromStr for $name {
            type Err = Unrecognised;
            fn from_str(text: &str) -> Result<Self, Unrecognised> {
                <$name as StoredText>::parse(text)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str(StoredText::as_str(*self))
            }
        }
    )+};
}

/// An enum of the store's own: its variants with their stored text, serialized to the API
/// as the same text.
macro_rules! stored_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal {
            $($(#[$variant_meta:meta])* $variant:ident => $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$variant_meta])* #[serde(rename = $text)] $variant,)+
        }

        impl StoredText for $name {
            const WHAT: &'static str = $what;
            const ALL: &'static [Self] = &[$($name::$variant),+];
            fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl $name {
            /// Its stored text.
            pub fn as_str(self) -> &'static str {
                StoredText::as_str(self)
            }
        }

        stored_text_impls!($name);
    };
}

stored_enum! {
    /// Where an automatic action is in its life (`actions.state`).
    ActionState, "action state" {
        /// Passed the governor; not started.
        Planned => "planned",
        /// Marked started, durably, before it runs.
        Started => "started",
        Done => "done",
        Failed => "failed",
        /// Its outcome is unknown: escalated, never retried.
        Uncertain => "uncertain",
        /// The governor did not let it run.
        Skipped => "skipped",
        /// Not recorded: a skipped revert (or an action waiting for one in flight) is tried
        /// again later. Never stored; only a planning answer.
        Deferred => "deferred",
        /// Provably not applied; retried with backoff.
        NotApplied => "not_applied",
    }
}

impl ActionState {
    /// Finished with a result (a change event goes on the timeline).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            ActionState::Done | ActionState::Failed | ActionState::Uncertain
        )
    }
}

stored_enum! {
    /// What the verify window showed (`actions.verified`).
    Verification, "verification" {
        /// Its incident stopped firing.
        Helped => "helped",
        DidNotHelp => "did_not_help",
    }
}

impl Verification {
    pub fn of(helped: bool) -> Verification {
        if helped {
            Verification::Helped
        } else {
            Verification::DidNotHelp
        }
    }
}

stored_enum! {
    /// A held change (`holds.state`).
    HoldState, "hold state" {
        /// Some open incident holds it.
        Held => "held",
        /// No holder left; reverted once `release_after` comes.
        Releasing => "releasing",
        Reverted => "reverted",
        /// A human changed it since: left alone.
        Left => "left",
        Failed => "failed",
    }
}

/// How a due revert ended, as the act stage reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldFinish {
    /// Settled: the hold ends in this state.
    Settled(HoldState),
    /// Not now (a pause, the budget, a cooldown): try again in a minute.
    Defer,
}

impl HoldFinish {
    /// The label logs and metrics use: the final state, or `defer`.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldFinish::Settled(state) => state.as_str(),
            HoldFinish::Defer => "defer",
        }
    }
}

stored_enum! {
    /// Whether an incident pages (`incident_pages.state`).
    IncidentPageState, "incident page state" {
        NotPaged => "not_paged",
        /// Under `after_verify`, waiting for its mitigation's outcome.
        Waiting => "waiting",
        Paged => "paged",
        /// Was paged; closed since (or gone, and may reopen).
        Resolved => "resolved",
    }
}

stored_enum! {
    /// A page as PagerDuty should have it (`pages.status`).
    PageStatus, "page status" {
        Triggered => "triggered",
        Resolved => "resolved",
    }
}

stored_enum! {
    /// What an outbox row sends (`outbox.kind`).
    OutboxKind, "outbox kind" {
        Trigger => "trigger",
        Resolve => "resolve",
        /// A change event: an automatic action finished.
        Change => "change",
    }
}

stored_enum! {
    /// Where an outbox row is (`outbox.state`).
    OutboxState, "outbox state" {
        Pending => "pending",
        Delivered => "delivered",
        Rejected => "rejected",
    }
}

stored_enum! {
    /// Why a decision was made (`decisions.kind`).
    DecisionKind, "decision kind" {
        /// On an opened, reopened or unsilenced transition.
        Initial => "initial",
        /// On the rule's schedule while the episode fires.
        Reevaluation => "reevaluation",
    }
}

stored_enum! {
    /// Where an incident's debug bundle is (`bundles.state`).
    BundleState, "bundle state" {
        /// Owed: to be written.
        Pending => "pending",
        Written => "written",
        /// Rewritten at close; done.
        Final => "final",
        /// Removed by retention.
        Deleted => "deleted",
    }
}

impl StoredText for EpisodeStatus {
    const WHAT: &'static str = "episode status";
    const ALL: &'static [Self] = &[
        EpisodeStatus::Firing,
        EpisodeStatus::Resolved,
        EpisodeStatus::Gone,
        EpisodeStatus::Silenced,
    ];
    fn as_str(self) -> &'static str {
        EpisodeStatus::as_str(self)
    }
}

impl StoredText for TransitionKind {
    const WHAT: &'static str = "transition kind";
    const ALL: &'static [Self] = &TransitionKind::ALL;
    fn as_str(self) -> &'static str {
        TransitionKind::as_str(self)
    }
}

impl StoredText for VerdictKind {
    const WHAT: &'static str = "action verdict";
    const ALL: &'static [Self] = &VerdictKind::ALL;
    fn as_str(self) -> &'static str {
        VerdictKind::as_str(self)
    }
}

stored_text_impls!(EpisodeStatus, TransitionKind, VerdictKind);

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value reads back from its own text, the text is what serde writes, and text
    /// nobody wrote is refused with what it should have been.
    fn round_trips<T>()
    where
        T: StoredText + std::fmt::Debug + PartialEq + serde::Serialize,
    {
        let mut texts = std::collections::HashSet::new();
        for &value in T::ALL {
            let text = value.as_str();
            assert!(texts.insert(text), "{text} twice in {}", T::WHAT);
            assert_eq!(T::parse(text), Ok(value));
            assert_eq!(
                serde_json::to_value(value).unwrap(),
                serde_json::json!(text)
            );
        }
        assert_eq!(
            T::parse("from-the-future"),
            Err(Unrecognised {
                what: T::WHAT,
                text: "from-the-future".to_owned()
            })
        );
    }

    #[test]
    fn each_enum_round_trips_through_its_text() {
        round_trips::<ActionState>();
        round_trips::<Verification>();
        round_trips::<HoldState>();
        round_trips::<IncidentPageState>();
        round_trips::<PageStatus>();
        round_trips::<OutboxKind>();
        round_trips::<OutboxState>();
        round_trips::<DecisionKind>();
        round_trips::<BundleState>();
        round_trips::<EpisodeStatus>();
        round_trips::<TransitionKind>();
        round_trips::<VerdictKind>();
    }

    #[test]
    fn the_stored_text_is_the_one_written_before() {
        // The schema's values: a rename here would strand every row already stored.
        let check = |pairs: &[(&str, &str)]| {
            for (got, want) in pairs {
                assert_eq!(got, want);
            }
        };
        check(&[
            (ActionState::NotApplied.as_str(), "not_applied"),
            (ActionState::Uncertain.as_str(), "uncertain"),
            (Verification::DidNotHelp.as_str(), "did_not_help"),
            (IncidentPageState::NotPaged.as_str(), "not_paged"),
            (VerdictKind::DryRun.as_str(), "dry_run"),
            (VerdictKind::InFlight.as_str(), "in_flight"),
            (DecisionKind::Reevaluation.as_str(), "reevaluation"),
            (HoldFinish::Defer.as_str(), "defer"),
        ]);
    }

    #[test]
    fn a_column_of_unknown_text_is_a_typed_error() {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        let read = |text: &str| {
            connection.query_row("SELECT ?1", [text], |row| row.get::<_, ActionState>(0))
        };
        assert_eq!(read("uncertain").unwrap(), ActionState::Uncertain);
        let error = read("paused-forever").unwrap_err();
        assert_eq!(
            unrecognised_in(&error),
            Some(&Unrecognised {
                what: "action state",
                text: "paused-forever".to_owned()
            })
        );
    }
}
