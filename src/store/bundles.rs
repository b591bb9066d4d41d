//! The store's side of debug bundles: which incidents need one written (or rewritten once
//! they closed), where each is, and what its collectors did.

use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;

use super::{BundleOp, BundleState, Reader, StoreError};
use crate::clock::Millis;

/// A stored notification: (received at, remote address, group key, raw body).
pub type StoredNotification = (Millis, String, String, Vec<u8>);

/// A bundle to write: the incident, its collector plan (JSON), and whether this is the final
/// version (the incident closed).
#[derive(Debug, Clone, PartialEq)]
pub struct BundleWork {
    pub episode_id: String,
    pub plan: String,
    /// `Pending` (never written) or `Written` (written, incident since closed).
    pub state: BundleState,
    pub closed: bool,
    pub path: Option<String>,
}

/// One bundle as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BundleRow {
    pub episode_id: String,
    pub state: BundleState,
    pub closed: bool,
    pub path: Option<String>,
    pub bytes: i64,
    pub collectors: serde_json::Value,
    pub highlights: serde_json::Value,
    pub created_at: Millis,
    pub written_at: Option<Millis>,
    pub final_at: Option<Millis>,
    /// The incident's status now.
    pub status: String,
}

/// A bundle was written: where, how big, what its collectors did.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleWritten {
    pub episode_id: String,
    pub path: String,
    pub bytes: i64,
    pub collectors: String,
    pub highlights: String,
    /// The final version (written after the incident closed).
    pub last: bool,
}

/// With the decision that opens an incident: plan its bundle. A reopened incident's bundle
/// is written again.
pub(super) fn plan(
    transaction: &Transaction<'_>,
    episode_id: &str,
    plan: &str,
    now: Millis,
) -> Result<(), rusqlite::Error> {
    transaction.execute(
        "INSERT INTO bundles(episode_id, plan, state, created_at) VALUES (?1, ?2, 'pending', ?3)
         ON CONFLICT(episode_id) DO UPDATE SET plan = excluded.plan, state = 'pending',
             closed = 0
         WHERE bundles.state IN ('final', 'deleted')",
        params![episode_id, plan, now],
    )?;
    Ok(())
}

pub(super) fn close(
    transaction: &Transaction<'_>,
    episode_id: &str,
) -> Result<(), rusqlite::Error> {
    transaction.execute(
        "UPDATE bundles SET closed = 1 WHERE episode_id = ?1",
        params![episode_id],
    )?;
    Ok(())
}

/// Record a written bundle. When the incident's page is open and PagerDuty has it, the page
/// is sent again (same dedup key) so that it carries the bundle's link.
pub(super) fn written(
    transaction: &Transaction<'_>,
    done: &BundleWritten,
    now: Millis,
) -> Result<bool, rusqlite::Error> {
    let state = if done.last {
        BundleState::Final
    } else {
        BundleState::Written
    };
    transaction.execute(
        "UPDATE bundles SET state = ?2, path = ?3, bytes = ?4, collectors = ?5, highlights = ?6,
             written_at = coalesce(written_at, ?7),
             final_at = CASE WHEN ?2 = 'final' THEN ?7 ELSE final_at END
         WHERE episode_id = ?1",
        params![
            done.episode_id,
            state,
            done.path,
            done.bytes,
            done.collectors,
            done.highlights,
            now
        ],
    )?;
    if done.last {
        return Ok(false);
    }
    super::paging::refresh(
        transaction,
        &done.episode_id,
        "its debug bundle is ready",
        now,
    )
}

pub(super) fn deleted(
    transaction: &Transaction<'_>,
    episode_id: &str,
) -> Result<(), rusqlite::Error> {
    transaction.execute(
        "UPDATE bundles SET state = 'deleted' WHERE episode_id = ?1",
        params![episode_id],
    )?;
    Ok(())
}

fn json(text: String) -> serde_json::Value {
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

const ROW_COLUMNS: &str = "b.episode_id, b.state, b.closed, b.path, b.bytes, b.collectors, \
     b.highlights, b.created_at, b.written_at, b.final_at, coalesce(e.status, 'unknown')";

fn row(row: &rusqlite::Row<'_>) -> rusqlite::Result<BundleRow> {
    Ok(BundleRow {
        episode_id: row.get(0)?,
        state: row.get(1)?,
        closed: row.get(2)?,
        path: row.get(3)?,
        bytes: row.get(4)?,
        collectors: json(row.get(5)?),
        highlights: json(row.get(6)?),
        created_at: row.get(7)?,
        written_at: row.get(8)?,
        final_at: row.get(9)?,
        status: row.get(10)?,
    })
}

impl Reader {
    /// Bundles to write: never written, or written and since closed. Oldest first.
    pub fn bundle_work(&self, limit: usize) -> Result<Vec<BundleWork>, StoreError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT episode_id, plan, state, closed, path FROM bundles
             WHERE state = 'pending' OR (state = 'written' AND closed = 1)
             ORDER BY created_at LIMIT ?1",
        )?;
        let rows = statement
            .query_map(params![limit as i64], |row| {
                Ok(BundleWork {
                    episode_id: row.get(0)?,
                    plan: row.get(1)?,
                    state: row.get(2)?,
                    closed: row.get(3)?,
                    path: row.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Bundles, newest first (`None`: all states but deleted).
    pub fn bundles(&self, limit: usize) -> Result<Vec<BundleRow>, StoreError> {
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM bundles b LEFT JOIN episodes e ON e.id = b.episode_id
             WHERE b.state != 'deleted' ORDER BY b.created_at DESC LIMIT ?1"
        ))?;
        let rows = statement
            .query_map(params![limit as i64], row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn bundle(&self, episode_id: &str) -> Result<Option<BundleRow>, StoreError> {
        Ok(self
            .connection
            .query_row(
                &format!(
                    "SELECT {ROW_COLUMNS} FROM bundles b LEFT JOIN episodes e ON e.id = b.episode_id
                     WHERE b.episode_id = ?1"
                ),
                params![episode_id],
                row,
            )
            .optional()?)
    }

    /// A stored notification: (received at, remote address, group key, raw body); `None` once
    /// pruned.
    pub fn notification(&self, id: i64) -> Result<Option<StoredNotification>, StoreError> {
        Ok(self
            .connection
            .query_row(
                "SELECT n.received_at, n.remote, n.group_key, p.body FROM notifications n
                 JOIN payloads p ON p.hash = n.payload_hash WHERE n.id = ?1",
                params![id],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .optional()?)
    }

    /// IDs of the incidents first seen at or after `since`, or still open, oldest first.
    pub fn incident_ids_since(
        &self,
        since: Millis,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT id FROM episodes WHERE first_seen >= ?1 OR closed_at IS NULL
                 OR closed_at >= ?1
             ORDER BY first_seen LIMIT ?2",
        )?;
        let rows = statement
            .query_map(params![since, limit as i64], |row| row.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(rows)
    }

    /// Bundles on disk, oldest first, for retention.
    pub fn bundles_on_disk(&self) -> Result<Vec<BundleRow>, StoreError> {
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM bundles b LEFT JOIN episodes e ON e.id = b.episode_id
             WHERE b.state IN ('written', 'final') AND b.path IS NOT NULL
             ORDER BY b.created_at"
        ))?;
        let rows = statement
            .query_map([], row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

/// Apply one bundle operation from the bundler.
pub(super) fn apply(
    transaction: &Transaction<'_>,
    op: &BundleOp,
    now: Millis,
) -> rusqlite::Result<bool> {
    let refreshed = match op {
        BundleOp::Written(done) => written(transaction, done, now)?,
        BundleOp::Deleted(episode_id) => {
            deleted(transaction, episode_id)?;
            false
        }
    };
    Ok(refreshed)
}
