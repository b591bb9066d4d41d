//! reconcile: the pure decisions that turn group snapshots into episode transitions.
//!
//! A notification is a snapshot of one Alertmanager group and arrives many times (retries,
//! repeats, HA peers). The unit of work is the alert *episode*, `(fingerprint, startsAt)`.
//! These functions decide, from what the store knows about an episode and what a snapshot or
//! Alertmanager's API says, which transition (if any) happens. They do no I/O; `store` applies
//! what they decide inside one transaction.
//!
//! Invariant: transitions only move forward. `resolved` is final for an episode (a fingerprint
//! that fires again has a new `startsAt`, so a new episode); an older snapshot arriving after a
//! newer one never re-opens anything.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::ingest::webhook::Status as AlertStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EpisodeStatus {
    /// Open and firing.
    Firing,
    /// Closed: Alertmanager said it resolved.
    Resolved,
    /// Closed: it vanished (missing from a later, complete snapshot of its group, or from
    /// Alertmanager's API). Later stages treat it exactly like `resolved`.
    Gone,
    /// Open, but silenced or inhibited in Alertmanager; no new action while it stays so.
    Silenced,
}

impl EpisodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EpisodeStatus::Firing => "firing",
            EpisodeStatus::Resolved => "resolved",
            EpisodeStatus::Gone => "gone",
            EpisodeStatus::Silenced => "silenced",
        }
    }

    /// `None` for text that names no status (the store's typed error says which).
    pub fn parse(text: &str) -> Option<Self> {
        [
            EpisodeStatus::Firing,
            EpisodeStatus::Resolved,
            EpisodeStatus::Gone,
            EpisodeStatus::Silenced,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }

    pub fn is_open(self) -> bool {
        matches!(self, EpisodeStatus::Firing | EpisodeStatus::Silenced)
    }
}

/// What happened to an episode; the durable queue of work for later stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransitionKind {
    /// First seen firing.
    Opened,
    /// First seen resolved (possibly never seen firing).
    Resolved,
    /// Vanished without a resolve.
    Gone,
    /// Silenced or inhibited in Alertmanager.
    Silenced,
    /// No longer silenced; firing again.
    Unsilenced,
    /// Seen firing again, well after it was called gone.
    Reopened,
}

impl TransitionKind {
    pub const ALL: [TransitionKind; 6] = [
        TransitionKind::Opened,
        TransitionKind::Resolved,
        TransitionKind::Gone,
        TransitionKind::Silenced,
        TransitionKind::Unsilenced,
        TransitionKind::Reopened,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TransitionKind::Opened => "opened",
            TransitionKind::Resolved => "resolved",
            TransitionKind::Gone => "gone",
            TransitionKind::Silenced => "silenced",
            TransitionKind::Unsilenced => "unsilenced",
            TransitionKind::Reopened => "reopened",
        }
    }

    /// The status an episode has after this transition.
    pub fn status_after(self) -> EpisodeStatus {
        match self {
            TransitionKind::Opened | TransitionKind::Unsilenced | TransitionKind::Reopened => {
                EpisodeStatus::Firing
            }
            TransitionKind::Resolved => EpisodeStatus::Resolved,
            TransitionKind::Gone => EpisodeStatus::Gone,
            TransitionKind::Silenced => EpisodeStatus::Silenced,
        }
    }
}

/// What the store knows about an episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    pub status: EpisodeStatus,
    /// When the current status began.
    pub status_changed_at: Millis,
}

/// The outcome of one alert of a snapshot for its episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotOutcome {
    /// A state change; record it.
    Transition(TransitionKind),
    /// Nothing new; only the last-seen time moves.
    Repeat,
    /// The snapshot is older than what is known (a late retry); nothing changes but last-seen.
    Stale,
}

/// Decide what one alert of a snapshot received at `received_at` means for its episode.
pub fn decide_alert(
    known: Option<Known>,
    alert: AlertStatus,
    received_at: Millis,
    gone_grace: Millis,
) -> SnapshotOutcome {
    use EpisodeStatus as E;
    use SnapshotOutcome::*;
    match (known.map(|k| k.status), alert) {
        (None, AlertStatus::Firing) => Transition(TransitionKind::Opened),
        (None, AlertStatus::Resolved) => Transition(TransitionKind::Resolved),
        (Some(E::Firing | E::Silenced), AlertStatus::Firing) => Repeat,
        (Some(E::Firing | E::Silenced), AlertStatus::Resolved) => {
            Transition(TransitionKind::Resolved)
        }
        (Some(E::Resolved), AlertStatus::Firing) => Stale,
        (Some(E::Resolved), AlertStatus::Resolved) => Repeat,
        (Some(E::Gone), AlertStatus::Firing) => {
            // Called gone on inference; if it is still reported firing long after, the
            // inference was wrong (for example an inhibition that lifted), and an alert that
            // fires must not stay closed. Inside the grace window it is just a late retry.
            let gone_at = known.map_or(0, |k| k.status_changed_at);
            if received_at.saturating_sub(gone_at) > gone_grace {
                Transition(TransitionKind::Reopened)
            } else {
                Stale
            }
        }
        (Some(E::Gone), AlertStatus::Resolved) => Repeat,
    }
}

/// An open episode that a complete snapshot of its group does not contain is gone only if it
/// has been in that group longer than the grace window: an older snapshot retried late may
/// predate it. Silenced episodes are expected to be missing (Alertmanager mutes them).
pub fn absent_from_snapshot_is_gone(
    status: EpisodeStatus,
    first_seen_in_group: Millis,
    received_at: Millis,
    gone_grace: Millis,
) -> bool {
    status == EpisodeStatus::Firing && received_at.saturating_sub(first_seen_in_group) > gone_grace
}

/// How Alertmanager's API (`/api/v2/alerts`) currently sees an episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiView {
    Active,
    /// Silenced or inhibited.
    Suppressed,
    /// Not in the API with this fingerprint and start time.
    Absent,
}

/// The outcome of an API check for one open episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiOutcome {
    Transition(TransitionKind),
    /// Absent, but not long enough to call it gone: remember since when.
    MarkAbsent,
    /// Present again (or still present): forget any absence.
    ClearAbsent,
}

pub fn decide_api(
    status: EpisodeStatus,
    view: ApiView,
    absent_since: Option<Millis>,
    now: Millis,
    gone_grace: Millis,
) -> ApiOutcome {
    match (status, view) {
        (EpisodeStatus::Firing, ApiView::Suppressed) => {
            ApiOutcome::Transition(TransitionKind::Silenced)
        }
        (EpisodeStatus::Silenced, ApiView::Active) => {
            ApiOutcome::Transition(TransitionKind::Unsilenced)
        }
        (_, ApiView::Absent) => match absent_since {
            // A resolved alert leaves the API at once while its resolve webhook can take up to
            // a group_interval; wait out the grace so that the resolve wins when it comes.
            Some(since) if now.saturating_sub(since) > gone_grace => {
                ApiOutcome::Transition(TransitionKind::Gone)
            }
            Some(_) => ApiOutcome::MarkAbsent,
            None => ApiOutcome::MarkAbsent,
        },
        _ => ApiOutcome::ClearAbsent,
    }
}

/// The incident ID of an episode: URL-safe, derived only from `(fingerprint, startsAt)`, so
/// the same after a restart and across re-deliveries.
/// `c626d2275ab0f610-20260822T140311.482Z`
pub fn episode_id(fingerprint: &str, starts_at: DateTime<Utc>) -> String {
    let base = starts_at.format("%Y%m%dT%H%M%S");
    let nanos = starts_at.timestamp_subsec_nanos();
    if nanos == 0 {
        format!("{fingerprint}-{base}Z")
    } else {
        let fraction = format!("{nanos:09}");
        format!("{fingerprint}-{base}.{}Z", fraction.trim_end_matches('0'))
    }
}

/// `startsAt` as stored: RFC 3339 UTC with as many fractional digits as needed.
pub fn canonical_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const GRACE: Millis = 600_000;

    fn known(status: EpisodeStatus, at: Millis) -> Option<Known> {
        Some(Known {
            status,
            status_changed_at: at,
        })
    }

    #[test]
    fn snapshot_decisions() {
        use AlertStatus::{Firing as F, Resolved as R};
        use EpisodeStatus as E;
        use SnapshotOutcome::*;
        use TransitionKind as T;
        let now = 10_000_000;
        let cases: Vec<(Option<Known>, AlertStatus, SnapshotOutcome)> = vec![
            (None, F, Transition(T::Opened)),
            (None, R, Transition(T::Resolved)),
            (known(E::Firing, 0), F, Repeat),
            (known(E::Firing, 0), R, Transition(T::Resolved)),
            (known(E::Silenced, 0), F, Repeat),
            (known(E::Silenced, 0), R, Transition(T::Resolved)),
            (known(E::Resolved, 0), F, Stale),
            (known(E::Resolved, 0), R, Repeat),
            (known(E::Gone, now - 1000), F, Stale),
            (known(E::Gone, now - GRACE - 1), F, Transition(T::Reopened)),
            (known(E::Gone, 0), R, Repeat),
        ];
        for (known, alert, expected) in cases {
            assert_eq!(
                decide_alert(known, alert, now, GRACE),
                expected,
                "{known:?} + {alert:?}"
            );
        }
    }

    #[test]
    fn absence_needs_the_grace_window() {
        let now = 10_000_000;
        assert!(!absent_from_snapshot_is_gone(
            EpisodeStatus::Firing,
            now - 1000,
            now,
            GRACE
        ));
        assert!(absent_from_snapshot_is_gone(
            EpisodeStatus::Firing,
            now - GRACE - 1,
            now,
            GRACE
        ));
        assert!(!absent_from_snapshot_is_gone(
            EpisodeStatus::Silenced,
            0,
            now,
            GRACE
        ));
        assert!(!absent_from_snapshot_is_gone(
            EpisodeStatus::Resolved,
            0,
            now,
            GRACE
        ));
    }

    #[test]
    fn api_decisions() {
        use ApiOutcome::*;
        use EpisodeStatus as E;
        let now = 10_000_000;
        let cases = [
            (E::Firing, ApiView::Active, None, ClearAbsent),
            (
                E::Firing,
                ApiView::Suppressed,
                None,
                Transition(TransitionKind::Silenced),
            ),
            (E::Silenced, ApiView::Suppressed, None, ClearAbsent),
            (
                E::Silenced,
                ApiView::Active,
                None,
                Transition(TransitionKind::Unsilenced),
            ),
            (E::Firing, ApiView::Absent, None, MarkAbsent),
            (E::Firing, ApiView::Absent, Some(now - 1000), MarkAbsent),
            (
                E::Silenced,
                ApiView::Absent,
                Some(now - GRACE - 1),
                Transition(TransitionKind::Gone),
            ),
        ];
        for (status, view, absent_since, expected) in cases {
            assert_eq!(
                decide_api(status, view, absent_since, now, GRACE),
                expected,
                "{status:?} {view:?} {absent_since:?}"
            );
        }
    }

    #[test]
    fn episode_ids_are_url_safe_and_stable() {
        let start = Utc.with_ymd_and_hms(2026, 8, 22, 14, 3, 11).unwrap()
            + chrono::Duration::milliseconds(482);
        assert_eq!(
            episode_id("c626d2275ab0f610", start),
            "c626d2275ab0f610-20260822T140311.482Z"
        );
        let whole = Utc.with_ymd_and_hms(2026, 8, 22, 14, 3, 11).unwrap();
        assert_eq!(
            episode_id("c626d2275ab0f610", whole),
            "c626d2275ab0f610-20260822T140311Z"
        );
        let nanos = whole + chrono::Duration::nanoseconds(349_673_924);
        let id = episode_id("e6e2702b100d42ed", nanos);
        assert_eq!(id, "e6e2702b100d42ed-20260822T140311.349673924Z");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        );
        assert_eq!(canonical_time(nanos), "2026-08-22T14:03:11.349673924Z");
    }
}
