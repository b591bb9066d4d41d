//! Actions, holds and the pause: planning under the governor (the idempotency key, the facts
//! the governor judges, and the row, in one transaction), their lifecycle, holds on changed
//! settings, verification, and the operator's pause.

use rusqlite::{OptionalExtension, Transaction, params};

use super::{
    ActionPlan, ActionState, HoldFinish, HoldRequest, PlannedAction, Verification, Verified,
};
use crate::act::governor::{self, Facts, Pause, Proposal, Verdict};
use crate::clock::Millis;
use crate::episodes::reconcile::EpisodeStatus;

pub(super) fn plan(
    transaction: &Transaction<'_>,
    plan: &ActionPlan,
    now: Millis,
) -> rusqlite::Result<PlannedAction> {
    let existing = transaction
        .query_row(
            "SELECT id, verdict, verdict_detail, state FROM actions WHERE key = ?1",
            params![plan.key],
            |row| {
                Ok(PlannedAction {
                    id: row.get(0)?,
                    verdict: row.get(1)?,
                    verdict_detail: serde_json::from_str(&row.get::<_, String>(2)?)
                        .unwrap_or_default(),
                    state: row.get(3)?,
                    new: false,
                })
            },
        )
        .optional()?;
    if let Some(existing) = existing {
        return Ok(existing);
    }
    let paused = transaction
        .query_row(
            "SELECT until_at, reason FROM pause WHERE id = 1",
            [],
            |row| {
                Ok(Pause {
                    until: row.get(0)?,
                    reason: row.get(1)?,
                })
            },
        )
        .optional()?;
    let in_flight: bool = transaction.query_row(
        "SELECT EXISTS (SELECT 1 FROM actions WHERE target = ?1
         AND state IN ('planned', 'started'))",
        params![plan.target],
        |row| row.get(0),
    )?;
    let last_on_target = transaction
        .query_row(
            "SELECT created_at, id FROM actions WHERE target = ?1 AND kind = ?2
             AND verdict = 'run' ORDER BY id DESC LIMIT 1",
            params![plan.target, plan.kind],
            |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
        )
        .optional()?;
    let actions_last_hour: i64 = transaction.query_row(
        "SELECT count(*) FROM actions WHERE verdict = 'run' AND created_at > ?1",
        params![now - 3_600_000],
        |row| row.get(0),
    )?;
    // This incident's earlier run of the action was judged not to have helped, or the
    // same alert re-opened (a new episode of the same fingerprint) within the cooldown
    // after this action ran for it: repeating would not help.
    let judged_useless: bool = transaction.query_row(
        "SELECT EXISTS (SELECT 1 FROM actions WHERE episode_id = ?1 AND action = ?2
         AND verified = 'did_not_help')",
        params![plan.episode_id, plan.action],
        |row| row.get(0),
    )?;
    let did_not_help: bool = transaction.query_row(
        "SELECT EXISTS (SELECT 1 FROM actions WHERE episode_id LIKE ?1 || '-%'
         AND episode_id != ?2 AND action = ?3 AND verdict = 'run' AND created_at > ?4)",
        params![
            plan.fingerprint,
            plan.episode_id,
            plan.action,
            now - plan.cooldown
        ],
        |row| row.get(0),
    )?;
    let facts = Facts {
        paused,
        in_flight,
        last_on_target,
        actions_last_hour: u32::try_from(actions_last_hour).unwrap_or(u32::MAX),
        did_not_help: did_not_help || judged_useless,
    };
    // The change is in place and held by another incident with the same value: this
    // incident only joins the hold.
    let mut held_ids = Vec::new();
    for held in &plan.hold_items {
        let id: Option<i64> = transaction
            .query_row(
                "SELECT id FROM holds WHERE target = ?1 AND item = ?2 AND value = ?3
                 AND state IN ('held', 'releasing')",
                params![plan.target, held.item, held.value],
                |row| row.get(0),
            )
            .optional()?;
        held_ids.push(id);
    }
    let already_held = !held_ids.is_empty() && held_ids.iter().all(Option::is_some);
    let proposal = Proposal {
        incident_id: plan.episode_id.clone(),
        target: plan.target.clone(),
        kind: plan.kind.clone(),
        shadow: plan.shadow,
        cooldown: plan.cooldown,
        already_held,
    };
    let verdict = governor::judge(&proposal, &facts, plan.mode, plan.limits, now);
    let in_flight_deferred =
        plan.defer_in_flight && verdict == Verdict::Skip(governor::Skip::InFlight);
    if (plan.defer_on_skip && matches!(verdict, Verdict::Skip(_))) || in_flight_deferred {
        // A revert is deferred by a pause, the budget or a cooldown, never dropped; an
        // action waiting for one in flight plans again. No row: the caller retries.
        return Ok(PlannedAction {
            id: 0,
            verdict: verdict.kind(),
            verdict_detail: serde_json::to_value(&verdict).unwrap_or_default(),
            state: ActionState::Deferred,
            new: false,
        });
    }
    if verdict == Verdict::Hold {
        for id in held_ids.into_iter().flatten() {
            transaction.execute(
                "INSERT OR IGNORE INTO hold_owners(hold_id, episode_id) VALUES (?1, ?2)",
                params![id, plan.episode_id],
            )?;
            // A new holder stops a release in waiting.
            transaction.execute(
                "UPDATE holds SET state = 'held', release_after = NULL WHERE id = ?1",
                params![id],
            )?;
        }
    }
    let state = match verdict {
        Verdict::Run => ActionState::Planned,
        Verdict::Hold => ActionState::Done,
        _ => ActionState::Skipped,
    };
    let detail = serde_json::to_value(&verdict).unwrap_or_default();
    transaction
        .prepare_cached(
            "INSERT INTO actions(key, episode_id, rule, action, kind, target, verdict,
                 verdict_detail, arguments, state, created_at, verify_window)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?
        .execute(params![
            plan.key,
            plan.episode_id,
            plan.rule,
            plan.action,
            plan.kind,
            plan.target,
            verdict.kind(),
            detail.to_string(),
            plan.arguments,
            state,
            now,
            plan.verify_window,
        ])?;
    let id = transaction.last_insert_rowid();
    Ok(PlannedAction {
        id,
        verdict: verdict.kind(),
        verdict_detail: detail,
        state,
        new: true,
    })
}

pub(super) fn update(
    transaction: &Transaction<'_>,
    id: i64,
    state: ActionState,
    result: Option<&str>,
    now: Millis,
) -> rusqlite::Result<bool> {
    let changed = if state == ActionState::Started {
        transaction.execute(
            "UPDATE actions SET state = 'started', started_at = ?2, attempts = attempts + 1
             WHERE id = ?1 AND state IN ('planned', 'not_applied')",
            params![id, now],
        )?
    } else {
        // A finished action is judged once its verify window has passed; one that ran
        // goes on the service's PagerDuty timeline as a change event.
        let changed = transaction.execute(
            "UPDATE actions SET state = ?2, finished_at = ?3, result = ?4,
                 verify_at = CASE WHEN ?2 = 'done' AND episode_id != ''
                     THEN ?3 + verify_window ELSE NULL END
             WHERE id = ?1",
            params![id, state, now, result],
        )?;
        if state.is_finished() {
            super::paging::on_action_finished(transaction, id, now)?;
        }
        if state == ActionState::Uncertain {
            super::paging::on_action_uncertain(transaction, id, now)?;
        }
        changed
    };
    Ok(changed == 1)
}

pub(super) fn add_holds(
    transaction: &Transaction<'_>,
    request: &HoldRequest,
    now: Millis,
) -> rusqlite::Result<()> {
    for held in &request.items {
        transaction.execute(
            "INSERT INTO holds(target, item, value, previous, action_id, changed_at, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'held')
             ON CONFLICT DO NOTHING",
            params![
                request.target,
                held.item,
                held.value,
                held.previous,
                request.action_id,
                now
            ],
        )?;
        transaction.execute(
            "INSERT OR IGNORE INTO hold_owners(hold_id, episode_id)
             SELECT id, ?3 FROM holds WHERE target = ?1 AND item = ?2
             AND state IN ('held', 'releasing')",
            params![request.target, held.item, request.episode_id],
        )?;
    }
    Ok(())
}

/// The episode resolved: it no longer holds anything. A hold with no holder left is
/// released once the minimum hold has passed since the change.
pub(super) fn release_holds(
    transaction: &Transaction<'_>,
    episode_id: &str,
    min_hold: Millis,
    now: Millis,
) -> rusqlite::Result<usize> {
    transaction.execute(
        "DELETE FROM hold_owners WHERE episode_id = ?1",
        params![episode_id],
    )?;
    let released = transaction.execute(
        "UPDATE holds SET state = 'releasing', release_after = max(?1, changed_at + ?2)
         WHERE state = 'held'
         AND NOT EXISTS (SELECT 1 FROM hold_owners WHERE hold_id = holds.id)",
        params![now, min_hold],
    )?;
    Ok(released)
}

pub(super) fn finish_hold(
    transaction: &Transaction<'_>,
    id: i64,
    finish: HoldFinish,
    result: Option<&str>,
    now: Millis,
) -> rusqlite::Result<()> {
    match finish {
        HoldFinish::Defer => {
            transaction.execute(
                "UPDATE holds SET release_after = ?2 WHERE id = ?1",
                params![id, now + 60_000],
            )?;
        }
        HoldFinish::Settled(state) => {
            transaction.execute(
                "UPDATE holds SET state = ?2, result = ?3 WHERE id = ?1",
                params![id, state, result],
            )?;
        }
    }
    Ok(())
}

/// Judge every finished action whose verify window has passed: did its incident stop
/// firing? Returns each action judged.
pub(super) fn verify(
    transaction: &Transaction<'_>,
    now: Millis,
) -> rusqlite::Result<Vec<Verified>> {
    let due: Vec<(i64, String, String, EpisodeStatus)> = {
        let mut statement = transaction.prepare_cached(
            "SELECT a.id, a.episode_id, a.action, e.status FROM actions a
             JOIN episodes e ON e.id = a.episode_id
             WHERE a.verify_at IS NOT NULL AND a.verify_at <= ?1 AND a.verified IS NULL
             LIMIT 256",
        )?;
        let rows = statement.query_map(params![now], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let mut judged = Vec::new();
    for (id, episode, action, status) in due {
        let helped = !status.is_open();
        transaction.execute(
            "UPDATE actions SET verified = ?2 WHERE id = ?1",
            params![id, Verification::of(helped)],
        )?;
        judged.push(Verified {
            action_id: id,
            episode_id: episode,
            action,
            helped,
        });
    }
    Ok(judged)
}

pub(super) fn set_pause(
    transaction: &Transaction<'_>,
    pause: Option<Pause>,
    now: Millis,
) -> rusqlite::Result<()> {
    match pause {
        Some(Pause { until, reason }) => transaction.execute(
            "INSERT INTO pause(id, until_at, reason, at) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET until_at = excluded.until_at,
                 reason = excluded.reason, at = excluded.at",
            params![until, reason, now],
        )?,
        None => transaction.execute("DELETE FROM pause", [])?,
    };
    Ok(())
}
