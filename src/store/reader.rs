//! Read-only queries for the incident API and the CLI.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::{ActionState, DecisionKind, StoreError};
use crate::clock::{Millis, millis_to_datetime};
use crate::episodes::reconcile::{EpisodeStatus, TransitionKind};
use crate::page::policy::PageState;

pub struct Reader {
    pub(super) connection: Connection,
}

/// One incident (alert episode) as listed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IncidentSummary {
    pub id: String,
    pub fingerprint: String,
    pub starts_at: String,
    pub status: EpisodeStatus,
    pub alertname: Option<String>,
    pub labels: serde_json::Value,
    pub first_seen: String,
    pub last_seen: String,
    pub closed_at: Option<String>,
    /// The latest decision: matched rule (`default` for the built-in rule), severity, branch.
    pub rule: Option<String>,
    pub severity: Option<String>,
    pub branch: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TransitionRecord {
    pub seq: i64,
    pub kind: TransitionKind,
    pub at: String,
    pub notification_id: Option<i64>,
    pub detail: serde_json::Value,
    pub done_at: Option<String>,
}

/// One incident with everything known about it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IncidentDetail {
    #[serde(flatten)]
    pub summary: IncidentSummary,
    pub group_key: String,
    pub annotations: serde_json::Value,
    pub generator_url: String,
    pub ends_at: Option<String>,
    pub first_notification: i64,
    pub transitions: Vec<TransitionRecord>,
    /// Every decision, oldest first, each with its full trace.
    pub decisions: Vec<DecisionEntry>,
    /// Every automatic action with the governor's verdict and its result.
    pub actions: Vec<serde_json::Value>,
    /// Whether and why it was paged, and every event sent about it (with errors such as
    /// PagerDuty's `errors[]`); null before its first decision.
    pub paging: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DecisionEntry {
    pub seq: i64,
    pub at: String,
    pub kind: DecisionKind,
    pub rule: String,
    pub severity: String,
    pub branch: String,
    /// The branch differs from the previous decision's.
    pub changed: bool,
    pub trace: serde_json::Value,
}

/// An action left planned or started by a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedAction {
    pub id: i64,
    /// `kubernetes.rollout_restart`, `exec`, …
    pub kind: String,
    pub target: String,
    /// The idempotency key.
    pub key: String,
    /// The rendered arguments as they may be shown, JSON.
    pub arguments: String,
    pub state: ActionState,
}

/// A held change due to be reverted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueRevert {
    pub hold_id: i64,
    pub target: String,
    /// What was changed on the target: `env:NAME` or `replicas`.
    pub item: String,
    /// The value nightshift set, JSON.
    pub value: String,
    /// The value before, JSON: what the revert restores.
    pub previous: String,
}

/// An open P1 incident nothing was configured to page about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpagedIncident {
    pub episode_id: String,
    /// Why it could not be paged.
    pub why: String,
}

/// How many notifications the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotificationCounts {
    pub total: u64,
    /// Not reconciled into episode transitions yet.
    pub unreconciled: u64,
}

/// What the decision stage needs of an episode.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeRow {
    pub id: String,
    pub fingerprint: String,
    pub starts_at: String,
    pub status: EpisodeStatus,
    pub labels: crate::ingest::webhook::LabelSet,
    pub annotations: crate::ingest::webhook::LabelSet,
    pub generator_url: String,
    pub group_key: String,
}

/// A transition that later stages have not handled yet.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PendingTransition {
    pub seq: i64,
    pub episode_id: String,
    pub kind: TransitionKind,
    pub at: Millis,
}

pub(super) fn time_text(millis: Millis) -> String {
    crate::episodes::reconcile::canonical_time(millis_to_datetime(millis))
}

fn json(text: String) -> serde_json::Value {
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

const SUMMARY_COLUMNS: &str = "id, fingerprint, starts_at, status, labels, first_seen, last_seen, \
     closed_at, rule, severity, branch";

fn summary(row: &rusqlite::Row<'_>) -> rusqlite::Result<IncidentSummary> {
    let labels = json(row.get(4)?);
    Ok(IncidentSummary {
        id: row.get(0)?,
        fingerprint: row.get(1)?,
        starts_at: row.get(2)?,
        status: row.get(3)?,
        alertname: labels
            .get("alertname")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        labels,
        first_seen: time_text(row.get(5)?),
        last_seen: time_text(row.get(6)?),
        closed_at: row.get::<_, Option<i64>>(7)?.map(time_text),
        rule: row.get(8)?,
        severity: row.get(9)?,
        branch: row.get(10)?,
    })
}

impl Reader {
    /// Open P1 incidents nothing was configured to page about (page state `no_destination`),
    /// with why, oldest first. Read by `/readyz`.
    pub fn unpaged_p1_incidents(&self) -> Result<Vec<UnpagedIncident>, StoreError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT episode_id FROM incident_pages
             WHERE severity = 'P1' AND closed_at IS NULL ORDER BY created_at LIMIT 100",
        )?;
        let open: Vec<String> = statement
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        let mut unpaged = Vec::new();
        for episode_id in open {
            if let Some(PageState::NoDestination { why }) =
                self.incident_page_state(&episode_id)?.state
            {
                unpaged.push(UnpagedIncident { episode_id, why });
            }
        }
        Ok(unpaged)
    }

    /// A read-only connection; works for anyone who may read the state directory's files,
    /// whether or not the daemon runs (see `access`).
    pub fn open(database: &Path) -> Result<Reader, StoreError> {
        Ok(Reader {
            connection: super::access::open_read_only(database)?,
        })
    }

    /// Incidents, newest first.
    pub fn incidents(
        &self,
        status: Option<EpisodeStatus>,
        limit: usize,
    ) -> Result<Vec<IncidentSummary>, StoreError> {
        let limit = limit as i64;
        let rows = match status {
            Some(status) => {
                let mut statement = self.connection.prepare_cached(&format!(
                    "SELECT {SUMMARY_COLUMNS} FROM episodes WHERE status = ?1
                     ORDER BY first_seen DESC, id LIMIT ?2"
                ))?;
                statement
                    .query_map(params![status.as_str(), limit], summary)?
                    .collect::<Result<Vec<_>, _>>()?
            }
            None => {
                let mut statement = self.connection.prepare_cached(&format!(
                    "SELECT {SUMMARY_COLUMNS} FROM episodes ORDER BY first_seen DESC, id LIMIT ?1"
                ))?;
                statement
                    .query_map(params![limit], summary)?
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        Ok(rows)
    }

    pub fn incident(&self, id: &str) -> Result<Option<IncidentDetail>, StoreError> {
        let found = self
            .connection
            .query_row(
                &format!(
                    "SELECT {SUMMARY_COLUMNS}, group_key, annotations, generator_url, ends_at,
                         first_notification FROM episodes WHERE id = ?1"
                ),
                params![id],
                |row| {
                    Ok(IncidentDetail {
                        summary: summary(row)?,
                        group_key: row.get(11)?,
                        annotations: json(row.get(12)?),
                        generator_url: row.get(13)?,
                        ends_at: row.get(14)?,
                        first_notification: row.get(15)?,
                        transitions: Vec::new(),
                        decisions: Vec::new(),
                        actions: Vec::new(),
                        paging: serde_json::Value::Null,
                    })
                },
            )
            .optional()?;
        let Some(mut detail) = found else {
            return Ok(None);
        };
        let mut statement = self.connection.prepare_cached(
            "SELECT seq, kind, at, notification_id, detail, done_at FROM transitions
             WHERE episode_id = ?1 ORDER BY seq",
        )?;
        detail.transitions = statement
            .query_map(params![id], |row| {
                Ok(TransitionRecord {
                    seq: row.get(0)?,
                    kind: row.get(1)?,
                    at: time_text(row.get(2)?),
                    notification_id: row.get(3)?,
                    detail: json(row.get(4)?),
                    done_at: row.get::<_, Option<i64>>(5)?.map(time_text),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut statement = self.connection.prepare_cached(
            "SELECT seq, at, kind, rule, severity, branch, changed, trace FROM decisions
             WHERE episode_id = ?1 ORDER BY seq",
        )?;
        detail.decisions = statement
            .query_map(params![id], |row| {
                Ok(DecisionEntry {
                    seq: row.get(0)?,
                    at: time_text(row.get(1)?),
                    kind: row.get(2)?,
                    rule: row.get(3)?,
                    severity: row.get(4)?,
                    branch: row.get(5)?,
                    changed: row.get(6)?,
                    trace: json(row.get(7)?),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        detail.actions = self.actions(id)?;
        detail.paging = self.incident_paging(id)?;
        Ok(Some(detail))
    }

    /// An episode as the decision stage needs it.
    pub fn episode(&self, id: &str) -> Result<Option<EpisodeRow>, StoreError> {
        let parse = |text: String| serde_json::from_str(&text).unwrap_or_default();
        Ok(self
            .connection
            .query_row(
                "SELECT id, fingerprint, starts_at, status, labels, annotations, generator_url,
                     group_key
                 FROM episodes WHERE id = ?1",
                params![id],
                |row| {
                    Ok(EpisodeRow {
                        id: row.get(0)?,
                        fingerprint: row.get(1)?,
                        starts_at: row.get(2)?,
                        status: row.get(3)?,
                        labels: parse(row.get(4)?),
                        annotations: parse(row.get(5)?),
                        generator_url: row.get(6)?,
                        group_key: row.get(7)?,
                    })
                },
            )
            .optional()?)
    }

    /// Holds whose last holder resolved and whose release time has come.
    pub fn due_reverts(&self, now: Millis) -> Result<Vec<DueRevert>, StoreError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT id, target, item, value, previous FROM holds
             WHERE state = 'releasing' AND release_after <= ?1 ORDER BY id LIMIT 64",
        )?;
        let rows = statement
            .query_map(params![now], |row| {
                Ok(DueRevert {
                    hold_id: row.get(0)?,
                    target: row.get(1)?,
                    item: row.get(2)?,
                    value: row.get(3)?,
                    previous: row.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Actions marked started with no result: left by a crash.
    pub fn started_actions(&self) -> Result<Vec<StartedAction>, StoreError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT id, kind, target, key, arguments, state FROM actions
             WHERE state IN ('planned', 'started') ORDER BY id",
        )?;
        let rows = statement
            .query_map([], |row| {
                Ok(StartedAction {
                    id: row.get(0)?,
                    kind: row.get(1)?,
                    target: row.get(2)?,
                    key: row.get(3)?,
                    arguments: row.get(4)?,
                    state: row.get(5)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Every action of an episode, oldest first.
    pub fn actions(&self, episode_id: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT id, rule, action, kind, target, verdict, verdict_detail, arguments, state,
                 attempts, created_at, started_at, finished_at, result, verified, verify_window
             FROM actions WHERE episode_id = ?1 ORDER BY id",
        )?;
        let rows = statement
            .query_map(params![episode_id], |row| {
                Ok(serde_json::json!({
                    "id": row.get::<_, i64>(0)?,
                    "rule": row.get::<_, String>(1)?,
                    "action": row.get::<_, String>(2)?,
                    "kind": row.get::<_, String>(3)?,
                    "target": row.get::<_, String>(4)?,
                    "verdict": row.get::<_, String>(5)?,
                    "verdict_detail": json(row.get(6)?),
                    "arguments": json(row.get(7)?),
                    "state": row.get::<_, String>(8)?,
                    "attempts": row.get::<_, i64>(9)?,
                    "created_at": time_text(row.get(10)?),
                    "started_at": row.get::<_, Option<i64>>(11)?.map(time_text),
                    "finished_at": row.get::<_, Option<i64>>(12)?.map(time_text),
                    "result": row.get::<_, Option<String>>(13)?.map(json),
                    "verified": row.get::<_, Option<String>>(14)?,
                    "verify_window_ms": row.get::<_, i64>(15)?,
                }))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Firing episodes whose re-evaluation time has come, soonest first.
    pub fn due_for_evaluation(&self, now: Millis, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut statement = self.connection.prepare_cached(
            // `+status`: the status index would read every firing episode and sort them
            // (139 ms with 100,000 firing, on every dispatch round of the worker); the
            // partial index on the due time reads only those due.
            "SELECT id FROM episodes WHERE next_evaluation_at IS NOT NULL
             AND next_evaluation_at <= ?1 AND +status = 'firing'
             ORDER BY next_evaluation_at LIMIT ?2",
        )?;
        let rows = statement
            .query_map(params![now, limit as i64], |row| row.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(rows)
    }

    /// The oldest transitions not yet handled by later stages, in order.
    pub fn pending_transitions(&self, limit: usize) -> Result<Vec<PendingTransition>, StoreError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT seq, episode_id, kind, at FROM transitions WHERE done_at IS NULL
             ORDER BY seq LIMIT ?1",
        )?;
        let rows = statement
            .query_map(params![limit as i64], |row| {
                Ok(PendingTransition {
                    seq: row.get(0)?,
                    episode_id: row.get(1)?,
                    kind: row.get(2)?,
                    at: row.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Stored notifications, all and unreconciled.
    pub fn notification_counts(&self) -> Result<NotificationCounts, StoreError> {
        Ok(self.connection.query_row(
            "SELECT count(*), count(*) FILTER (WHERE reconciled_at IS NULL) FROM notifications",
            [],
            |row| {
                Ok(NotificationCounts {
                    total: row.get::<_, i64>(0)? as u64,
                    unreconciled: row.get::<_, i64>(1)? as u64,
                })
            },
        )?)
    }
}
