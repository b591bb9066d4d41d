//! Decisions: one per handled transition or re-evaluation, recorded in the same transaction
//! that marks the transition done, updates the episode, plans its page and its bundle.

use rusqlite::{OptionalExtension, Transaction, params};

use super::{DecisionRecord, Recorded};
use crate::clock::Millis;

pub(super) fn record(
    transaction: &Transaction<'_>,
    record: &DecisionRecord,
    now: Millis,
) -> rusqlite::Result<Recorded> {
    if let Some(seq) = record.transition_seq {
        let pending: Option<i64> = transaction
            .query_row(
                "SELECT seq FROM transitions WHERE seq = ?1 AND done_at IS NULL",
                params![seq],
                |row| row.get(0),
            )
            .optional()?;
        if pending.is_none() {
            return Ok(Recorded::AlreadyDone);
        }
    }
    let previous: Option<String> = transaction
        .query_row(
            "SELECT branch FROM episodes WHERE id = ?1",
            params![record.episode_id],
            |row| row.get(0),
        )
        .optional()?
        .flatten();
    let changed = previous.is_some_and(|branch| branch != record.branch);
    transaction
        .prepare_cached(
            "INSERT INTO decisions(episode_id, at, kind, rule, severity, branch, changed, trace)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            record.episode_id,
            record.at,
            record.kind,
            record.rule,
            record.severity,
            record.branch,
            changed,
            record.trace,
        ])?;
    transaction
        .prepare_cached(
            "UPDATE episodes SET rule = ?2, severity = ?3, branch = ?4,
                 next_evaluation_at = CASE WHEN status = 'firing' THEN ?5 ELSE NULL END
             WHERE id = ?1",
        )?
        .execute(params![
            record.episode_id,
            record.rule,
            record.severity,
            record.branch,
            record.next_evaluation_at,
        ])?;
    if let Some(seq) = record.transition_seq {
        transaction
            .prepare_cached("UPDATE transitions SET done_at = ?2 WHERE seq = ?1")?
            .execute(params![seq, now])?;
    }
    if let Some(page) = &record.page {
        super::paging::on_decision(transaction, &record.episode_id, page, now)?;
    }
    if let Some(plan) = &record.bundle_plan {
        super::bundles::plan(transaction, &record.episode_id, plan, now)?;
    }
    Ok(Recorded::Recorded { changed })
}
