//! The store's side of paging: incident pages, pages (dedup keys with their routing key) and
//! the durable outbox. Write functions run inside the writer's transactions, so a page is
//! queued in the same transaction as the decision, verify or resolve that causes it; read
//! functions serve the delivery worker, which builds each event from the latest facts.

use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;

use super::{IncidentPageState, OutboxKind, PageStatus, PagingDone, PagingOp, Reader, StoreError};
use crate::clock::Millis;
use crate::episodes::reconcile::EpisodeStatus;
use crate::page::policy::{self, ActionFacts, Judgement, Settle};

/// What a decision implies for paging; recorded with the decision.
#[derive(Debug, Clone, PartialEq)]
pub struct PageRequest {
    pub dedup_key: String,
    pub group_key: String,
    pub rule: String,
    pub severity: String,
    /// `immediate`, `after_verify` or `never`.
    pub policy: String,
    /// Extra channels of the severity ("slack:ops").
    pub channels: Vec<String>,
}

/// Priority of an outbox row: triggers by severity first, then resolves, then change events.
fn priority(kind: OutboxKind, severity: &str) -> i64 {
    match kind {
        OutboxKind::Trigger => policy::rank(severity).min(4),
        OutboxKind::Resolve => 5,
        OutboxKind::Change => 6,
    }
}

/// Record (or update) the paging of an incident after a decision.
pub(super) fn on_decision(
    transaction: &Transaction<'_>,
    episode_id: &str,
    request: &PageRequest,
    now: Millis,
) -> Result<(), rusqlite::Error> {
    let status: Option<EpisodeStatus> = transaction
        .query_row(
            "SELECT status FROM episodes WHERE id = ?1",
            params![episode_id],
            |row| row.get(0),
        )
        .optional()?;
    if status != Some(EpisodeStatus::Firing) {
        return Ok(());
    }
    let existing: Option<(IncidentPageState, String)> = transaction
        .query_row(
            "SELECT state, severity FROM incident_pages WHERE episode_id = ?1",
            params![episode_id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let channels = serde_json::to_string(&request.channels).unwrap_or_else(|_| "[]".to_owned());
    match existing {
        None => {
            let (state, reason) = match request.policy.as_str() {
                "immediate" => (
                    IncidentPageState::Paged,
                    format!("{} pages immediately", request.severity),
                ),
                "after_verify" => (
                    IncidentPageState::Waiting,
                    format!(
                        "{} pages only if its mitigation does not help",
                        request.severity
                    ),
                ),
                _ => (
                    IncidentPageState::NotPaged,
                    format!("{} is recorded and reported, never paged", request.severity),
                ),
            };
            transaction.execute(
                "INSERT INTO incident_pages(episode_id, dedup_key, group_key, rule, severity,
                     policy, state, reason, channels, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'not_paged', ?7, ?8, ?9)",
                params![
                    episode_id,
                    request.dedup_key,
                    request.group_key,
                    request.rule,
                    request.severity,
                    request.policy,
                    reason,
                    channels,
                    now
                ],
            )?;
            match state {
                IncidentPageState::Paged => page_incident(transaction, episode_id, &reason, now)?,
                IncidentPageState::Waiting => {
                    transaction.execute(
                        "UPDATE incident_pages SET state = 'waiting' WHERE episode_id = ?1",
                        params![episode_id],
                    )?;
                }
                _ => {}
            }
        }
        Some((state, severity)) => {
            let more_severe = policy::rank(&request.severity) < policy::rank(&severity);
            if more_severe {
                transaction.execute(
                    "UPDATE incident_pages SET severity = ?2, policy = ?3, channels = ?4
                     WHERE episode_id = ?1",
                    params![episode_id, request.severity, request.policy, channels],
                )?;
            }
            match state {
                // `resolved` here means a gone episode seen firing again (reopened).
                IncidentPageState::Waiting
                | IncidentPageState::NotPaged
                | IncidentPageState::Resolved
                    if request.policy == "immediate" =>
                {
                    let reason = format!(
                        "re-evaluated as {}, which pages immediately",
                        request.severity
                    );
                    page_incident(transaction, episode_id, &reason, now)?;
                }
                IncidentPageState::Resolved if request.policy == "after_verify" => {
                    transaction.execute(
                        "UPDATE incident_pages SET state = 'waiting', acted = 0, created_at = ?2,
                             closed_at = NULL
                         WHERE episode_id = ?1",
                        params![episode_id, now],
                    )?;
                }
                IncidentPageState::NotPaged if request.policy == "after_verify" && more_severe => {
                    transaction.execute(
                        "UPDATE incident_pages SET state = 'waiting', acted = 0, created_at = ?2
                         WHERE episode_id = ?1",
                        params![episode_id, now],
                    )?;
                }
                IncidentPageState::Paged if more_severe => {
                    let reason = format!("re-evaluated as {}", request.severity);
                    page_incident(transaction, episode_id, &reason, now)?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Page an incident: mark it, open (or raise) its page, queue the trigger on PagerDuty and
/// on its severity's extra channels. Triggers of one page waiting in the outbox are coalesced.
pub(super) fn page_incident(
    transaction: &Transaction<'_>,
    episode_id: &str,
    reason: &str,
    now: Millis,
) -> Result<(), rusqlite::Error> {
    let Some((dedup_key, group_key, rule, severity, channels)) = transaction
        .query_row(
            "SELECT dedup_key, group_key, rule, severity, channels FROM incident_pages
             WHERE episode_id = ?1",
            params![episode_id],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                ))
            },
        )
        .optional()?
    else {
        return Ok(());
    };
    transaction.execute(
        "UPDATE incident_pages SET state = 'paged', reason = ?2, paged_at = ?3, closed_at = NULL
         WHERE episode_id = ?1",
        params![episode_id, reason, now],
    )?;
    let page: Option<(PageStatus, String)> = transaction
        .query_row(
            "SELECT status, severity FROM pages WHERE dedup_key = ?1",
            params![dedup_key],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let page_severity = match page {
        None => {
            transaction.execute(
                "INSERT INTO pages(dedup_key, group_key, rule, severity, status, triggered_at)
                 VALUES (?1, ?2, ?3, ?4, 'triggered', ?5)",
                params![dedup_key, group_key, rule, severity, now],
            )?;
            severity
        }
        Some((status, current)) => {
            let highest = if status == PageStatus::Resolved
                || policy::rank(&severity) < policy::rank(&current)
            {
                severity
            } else {
                current
            };
            transaction.execute(
                "UPDATE pages SET status = 'triggered', severity = ?2, resolved_at = NULL
                 WHERE dedup_key = ?1",
                params![dedup_key, highest],
            )?;
            highest
        }
    };
    let priority = priority(OutboxKind::Trigger, &page_severity);
    enqueue(
        transaction,
        "pagerduty",
        OutboxKind::Trigger,
        &dedup_key,
        episode_id,
        priority,
        reason,
        now,
    )?;
    let channels: Vec<String> = serde_json::from_str(&channels).unwrap_or_default();
    for channel in channels {
        enqueue(
            transaction,
            &channel,
            OutboxKind::Trigger,
            &dedup_key,
            episode_id,
            priority,
            reason,
            now,
        )?;
    }
    Ok(())
}

/// Queue an event for a page. A trigger joins a trigger of the same page and channel still
/// waiting (its content is built when sent), taking the higher priority.
#[allow(clippy::too_many_arguments)]
fn enqueue(
    transaction: &Transaction<'_>,
    channel: &str,
    kind: OutboxKind,
    dedup_key: &str,
    episode_id: &str,
    priority: i64,
    reason: &str,
    now: Millis,
) -> Result<(), rusqlite::Error> {
    if kind == OutboxKind::Trigger {
        let waiting: Option<(i64, OutboxKind)> = transaction
            .query_row(
                "SELECT id, kind FROM outbox WHERE channel = ?1 AND dedup_key = ?2
                 AND state = 'pending' ORDER BY id DESC LIMIT 1",
                params![channel, dedup_key],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        if let Some((id, waiting_kind)) = waiting
            && waiting_kind == OutboxKind::Trigger
        {
            transaction.execute(
                "UPDATE outbox SET priority = min(priority, ?2) WHERE id = ?1",
                params![id, priority],
            )?;
            return Ok(());
        }
    }
    transaction
        .prepare_cached(
            "INSERT INTO outbox(channel, kind, dedup_key, episode_id, priority, state, reason,
                 created_at, next_attempt_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?7)",
        )?
        .execute(params![
            channel, kind, dedup_key, episode_id, priority, reason, now
        ])?;
    Ok(())
}

/// The act stage finished with an incident's decision.
pub(super) fn mark_acted(
    transaction: &Transaction<'_>,
    episode_id: &str,
) -> Result<(), rusqlite::Error> {
    transaction.execute(
        "UPDATE incident_pages SET acted = 1 WHERE episode_id = ?1",
        params![episode_id],
    )?;
    Ok(())
}

/// Judge incidents waiting under `after_verify` (one, or all that are due) and page those
/// whose mitigation could not or did not help. Returns how many were paged. `settle` bounds
/// the wait for the act stage.
pub(super) fn evaluate_waiting(
    transaction: &Transaction<'_>,
    only: Option<&str>,
    now: Millis,
    settle: Settle,
) -> Result<usize, rusqlite::Error> {
    let waiting: Vec<(String, bool, Millis, bool, EpisodeStatus)> = {
        let mut statement = transaction.prepare_cached(
            "SELECT p.episode_id, p.acted, p.created_at,
                 EXISTS (SELECT 1 FROM actions a WHERE a.episode_id = p.episode_id
                     AND a.created_at >= p.created_at),
                 e.status
             FROM incident_pages p
             JOIN episodes e ON e.id = p.episode_id
             WHERE p.state = 'waiting' AND (?1 IS NULL OR p.episode_id = ?1)
             ORDER BY p.created_at LIMIT 512",
        )?;
        let rows = statement.query_map(params![only], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let mut paged = 0;
    for (episode_id, acted, created_at, planned, status) in waiting {
        let actions = action_facts(transaction, "episode_id = ?1", &episode_id)?;
        let shared = |id: i64| {
            action_facts(transaction, "id = ?1", &id.to_string())
                .ok()
                .and_then(|mut list| list.pop())
        };
        let stage = settle.act_stage(acted, planned, created_at, now);
        match policy::judge_waiting(status, stage, &actions, &shared) {
            Judgement::Wait => {}
            Judgement::Page(reason) => {
                page_incident(transaction, &episode_id, &reason, now)?;
                paged += 1;
            }
            Judgement::Quiet(reason) => {
                transaction.execute(
                    "UPDATE incident_pages SET state = 'not_paged', reason = ?2 WHERE episode_id = ?1",
                    params![episode_id, reason],
                )?;
            }
        }
    }
    Ok(paged)
}

fn action_facts(
    transaction: &Transaction<'_>,
    filter: &str,
    value: &str,
) -> Result<Vec<ActionFacts>, rusqlite::Error> {
    let mut statement = transaction.prepare_cached(&format!(
        "SELECT id, action, target, verdict, state, verified, verdict_detail FROM actions
         WHERE {filter} ORDER BY id"
    ))?;
    let rows = statement.query_map(params![value], |row| {
        let detail: String = row.get(6)?;
        let shares = serde_json::from_str::<serde_json::Value>(&detail)
            .ok()
            .and_then(|d| d["shares"].as_i64());
        Ok(ActionFacts {
            id: row.get(0)?,
            action: row.get(1)?,
            target: row.get(2)?,
            verdict: row.get(3)?,
            state: row.get(4)?,
            verified: row.get(5)?,
            shares,
        })
    })?;
    rows.collect()
}

/// An incident closed (resolved or gone): it no longer pages. When it was the last paged
/// incident of its page, the page resolves on every channel its trigger went to.
pub(super) fn on_close(
    transaction: &Transaction<'_>,
    episode_id: &str,
    now: Millis,
) -> Result<bool, rusqlite::Error> {
    let row: Option<(IncidentPageState, String)> = transaction
        .query_row(
            "SELECT state, dedup_key FROM incident_pages WHERE episode_id = ?1",
            params![episode_id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    super::bundles::close(transaction, episode_id)?;
    let Some((state, dedup_key)) = row else {
        return Ok(false);
    };
    match state {
        IncidentPageState::Waiting => {
            transaction.execute(
                "UPDATE incident_pages SET state = 'not_paged', closed_at = ?2,
                     reason = 'stopped firing before its mitigation''s verify window ended'
                 WHERE episode_id = ?1",
                params![episode_id, now],
            )?;
            return Ok(false);
        }
        IncidentPageState::Paged => {
            transaction.execute(
                "UPDATE incident_pages SET state = 'resolved', closed_at = ?2 WHERE episode_id = ?1",
                params![episode_id, now],
            )?;
        }
        IncidentPageState::NotPaged | IncidentPageState::Resolved => {
            transaction.execute(
                "UPDATE incident_pages SET closed_at = coalesce(closed_at, ?2) WHERE episode_id = ?1",
                params![episode_id, now],
            )?;
            return Ok(false);
        }
    }
    let still_paged: bool = transaction.query_row(
        "SELECT EXISTS (SELECT 1 FROM incident_pages WHERE dedup_key = ?1 AND state = 'paged')",
        params![dedup_key],
        |row| row.get(0),
    )?;
    if still_paged {
        return Ok(false);
    }
    transaction.execute(
        "UPDATE pages SET status = 'resolved', resolved_at = ?2 WHERE dedup_key = ?1",
        params![dedup_key, now],
    )?;
    let channels: Vec<String> = {
        let mut statement = transaction.prepare_cached(
            "SELECT DISTINCT channel FROM outbox WHERE dedup_key = ?1 AND kind = 'trigger'
             AND state IN ('pending', 'delivered') ORDER BY channel",
        )?;
        let rows = statement.query_map(params![dedup_key], |row| row.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for channel in channels {
        enqueue(
            transaction,
            &channel,
            OutboxKind::Resolve,
            &dedup_key,
            episode_id,
            priority(OutboxKind::Resolve, ""),
            "the last paged incident of the page resolved",
            now,
        )?;
    }
    Ok(true)
}

/// A change event after an automatic action finished.
pub(super) fn on_action_finished(
    transaction: &Transaction<'_>,
    action_id: i64,
    now: Millis,
) -> Result<(), rusqlite::Error> {
    let episode: Option<String> = transaction
        .query_row(
            "SELECT episode_id FROM actions WHERE id = ?1 AND verdict = 'run'",
            params![action_id],
            |row| row.get(0),
        )
        .optional()?;
    let Some(episode_id) = episode else {
        return Ok(());
    };
    let exists: bool = transaction.query_row(
        "SELECT EXISTS (SELECT 1 FROM outbox WHERE kind = 'change' AND action_id = ?1)",
        params![action_id],
        |row| row.get(0),
    )?;
    if exists {
        return Ok(());
    }
    transaction
        .prepare_cached(
            "INSERT INTO outbox(channel, kind, episode_id, action_id, priority, state, reason,
                 created_at, next_attempt_at)
             VALUES ('pagerduty', 'change', ?1, ?2, 6, 'pending',
                 'an automatic action finished', ?3, ?3)",
        )?
        .execute(params![episode_id, action_id, now])?;
    Ok(())
}

/// Send an open page again (same dedup key) because what it says changed, e.g. its bundle
/// is ready; only when PagerDuty already has the page, else the news goes with the first
/// trigger anyway. Returns whether a trigger was queued.
pub(super) fn refresh(
    transaction: &Transaction<'_>,
    episode_id: &str,
    reason: &str,
    now: Millis,
) -> Result<bool, rusqlite::Error> {
    let found: Option<(String, String)> = transaction
        .query_row(
            "SELECT p.dedup_key, g.severity FROM incident_pages p
             JOIN pages g ON g.dedup_key = p.dedup_key
             WHERE p.episode_id = ?1 AND p.state = 'paged' AND g.status = 'triggered'
               AND EXISTS (SELECT 1 FROM outbox o WHERE o.dedup_key = p.dedup_key
                   AND o.channel = 'pagerduty' AND o.kind = 'trigger' AND o.state = 'delivered')",
            params![episode_id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let Some((dedup_key, severity)) = found else {
        return Ok(false);
    };
    enqueue(
        transaction,
        "pagerduty",
        OutboxKind::Trigger,
        &dedup_key,
        episode_id,
        priority(OutboxKind::Trigger, &severity),
        reason,
        now,
    )?;
    Ok(true)
}

/// An action's outcome is unknown: its incident goes to a human whatever its paging policy
/// (a page already open is sent again with the news).
pub(super) fn on_action_uncertain(
    transaction: &Transaction<'_>,
    action_id: i64,
    now: Millis,
) -> Result<(), rusqlite::Error> {
    let found: Option<(String, String, String)> = transaction
        .query_row(
            "SELECT a.episode_id, a.action, a.target FROM actions a
             JOIN incident_pages p ON p.episode_id = a.episode_id WHERE a.id = ?1",
            params![action_id],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()?;
    if let Some((episode_id, action, target)) = found {
        let reason = format!("{action} on {target}: outcome unknown; escalated, not retried");
        page_incident(transaction, &episode_id, &reason, now)?;
    }
    Ok(())
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Delivered {
        sent: String,
    },
    /// Not accepted; try again at `next_at`. `failure` is false when nightshift's own rate
    /// limiter held it back (that time does not count towards the fallback).
    Retry {
        error: String,
        next_at: Millis,
        failure: bool,
    },
    Rejected {
        error: String,
        sent: String,
    },
}

pub(super) fn record_attempt(
    transaction: &Transaction<'_>,
    id: i64,
    attempt: &Attempt,
    now: Millis,
) -> Result<(), rusqlite::Error> {
    match attempt {
        Attempt::Delivered { sent } => transaction.execute(
            "UPDATE outbox SET state = 'delivered', delivered_at = ?2, attempts = attempts + 1,
                 sent = ?3 WHERE id = ?1",
            params![id, now, sent],
        )?,
        Attempt::Retry {
            error,
            next_at,
            failure: true,
        } => transaction.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3,
                 first_failure_at = coalesce(first_failure_at, ?4) WHERE id = ?1",
            params![id, error, next_at, now],
        )?,
        Attempt::Retry { next_at, .. } => transaction.execute(
            "UPDATE outbox SET next_attempt_at = ?2 WHERE id = ?1",
            params![id, next_at],
        )?,
        Attempt::Rejected { error, sent } => transaction.execute(
            "UPDATE outbox SET state = 'rejected', attempts = attempts + 1, last_error = ?2,
                 first_failure_at = coalesce(first_failure_at, ?3), sent = ?4 WHERE id = ?1",
            params![id, error, now, sent],
        )?,
    };
    Ok(())
}

/// Mark outbox rows as being sent from `now` (write-ahead of one delivery round); returns how
/// many rows were marked. A row settled meanwhile is left as it is.
pub(super) fn mark_sending(
    transaction: &Transaction<'_>,
    ids: &[i64],
    now: Millis,
) -> Result<usize, rusqlite::Error> {
    let mut statement = transaction
        .prepare_cached("UPDATE outbox SET sending_at = ?2 WHERE id = ?1 AND state = 'pending'")?;
    let mut marked = 0;
    for id in ids {
        marked += statement.execute(params![id, now])?;
    }
    Ok(marked)
}

/// Hand an event to the fallback channels (once).
pub(super) fn fall_back(
    transaction: &Transaction<'_>,
    id: i64,
    channels: &[String],
    reason: &str,
    now: Millis,
) -> Result<usize, rusqlite::Error> {
    let row: Option<(OutboxKind, Option<String>, Option<String>, i64)> = transaction
        .query_row(
            "SELECT kind, dedup_key, episode_id, priority FROM outbox
             WHERE id = ?1 AND fallback_at IS NULL",
            params![id],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .optional()?;
    let Some((kind, dedup_key, episode_id, priority)) = row else {
        return Ok(0);
    };
    transaction.execute(
        "UPDATE outbox SET fallback_at = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    let (Some(dedup_key), Some(episode_id)) = (dedup_key, episode_id) else {
        return Ok(0);
    };
    let mut queued = 0;
    for channel in channels {
        enqueue(
            transaction,
            channel,
            kind,
            &dedup_key,
            &episode_id,
            priority,
            &format!("fallback: {reason}"),
            now,
        )?;
        queued += 1;
    }
    Ok(queued)
}

/// Fix the routing key of a page at its first trigger; returns the one to use.
pub(super) fn fix_routing_key(
    transaction: &Transaction<'_>,
    dedup_key: &str,
    routing_key: &str,
) -> Result<String, rusqlite::Error> {
    transaction.execute(
        "UPDATE pages SET routing_key = ?2 WHERE dedup_key = ?1 AND routing_key IS NULL",
        params![dedup_key, routing_key],
    )?;
    Ok(transaction
        .query_row(
            "SELECT routing_key FROM pages WHERE dedup_key = ?1",
            params![dedup_key],
            |row| row.get::<_, Option<String>>(0),
        )
        .optional()?
        .flatten()
        .unwrap_or_else(|| routing_key.to_owned()))
}

/// One outbox row due for delivery.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub channel: String,
    pub kind: OutboxKind,
    pub dedup_key: Option<String>,
    pub episode_id: Option<String>,
    pub action_id: Option<i64>,
    pub priority: i64,
    pub reason: String,
    pub created_at: Millis,
    pub attempts: i64,
    pub first_failure_at: Option<Millis>,
    pub last_error: Option<String>,
    pub fallback_at: Option<Millis>,
    /// A trigger of a page its channel already has open (the last event delivered there was
    /// a trigger): an update, which waits for every first trigger.
    pub update: bool,
}

/// An event that went out (or may have: attempted whatever the answer, or marked as being
/// sent by a round a crash may have cut off), for seeding the rate limiter after a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct SentEvent {
    /// When it was sent: the later of when its last round marked it as being sent and when
    /// its last attempt was recorded (delivered, rejected or failed).
    pub at: Millis,
    pub channel: String,
    /// Its page's routing key; `None` for a change event, routed by rule and severity.
    pub routing_key: Option<String>,
    pub rule: String,
    pub severity: String,
}

/// A page's facts as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageFacts {
    pub group_key: String,
    pub rule: String,
    /// The highest severity of its incidents.
    pub severity: String,
    /// Fixed at its first trigger; `None` before.
    pub routing_key: Option<String>,
    pub status: PageStatus,
}

/// An incident of a page, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagedIncident {
    pub episode_id: String,
    pub severity: String,
    pub state: IncidentPageState,
    /// Why it was paged (or not).
    pub reason: String,
}

/// The paged incidents of a page, as many as asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagedIncidents {
    pub incidents: Vec<PagedIncident>,
    /// How many more there are beyond those.
    pub more: usize,
}

/// Pending outbox rows of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelBacklog {
    pub channel: String,
    pub pending: i64,
}

/// What waits in the outbox, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxBacklog {
    pub channels: Vec<ChannelBacklog>,
    /// Age of the oldest pending row (0 when none).
    pub oldest_age: Millis,
}

/// An episode's rule and severity as last decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpisodeRouting {
    pub rule: String,
    pub severity: String,
}

/// Everything paging did for an incident, and the page state it shows.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentPaging {
    /// Its paging state and every outbox row, as the API shows them.
    pub view: serde_json::Value,
    /// `None`: no paging recorded.
    pub state: Option<policy::PageState>,
}

/// One action with its episode.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionWithEpisode {
    pub episode_id: String,
    /// The action's facts as JSON, like [`Reader::actions`].
    pub action: serde_json::Value,
}

impl Reader {
    /// Pending outbox rows whose time has come, most urgent first: first triggers by
    /// priority, then updates of pages already open (by priority), then resolves, then change
    /// events; oldest first within each. A row waits while an older one of the same page and
    /// channel is pending, so a resolve never overtakes its trigger.
    pub fn due_outbox(&self, now: Millis, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT id, channel, kind, dedup_key, episode_id, action_id, priority, reason,
                 created_at, attempts, first_failure_at, last_error, fallback_at,
                 kind = 'trigger' AND coalesce((SELECT d.kind FROM outbox d
                     WHERE d.dedup_key = o.dedup_key AND d.channel = o.channel
                       AND d.state = 'delivered'
                     ORDER BY d.id DESC LIMIT 1) = 'trigger', 0) AS is_update
             FROM outbox o
             WHERE state = 'pending' AND next_attempt_at <= ?1
               AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.state = 'pending'
                   AND p.channel = o.channel AND p.dedup_key = o.dedup_key AND p.id < o.id)
             ORDER BY kind <> 'trigger', is_update, priority, id LIMIT ?2",
        )?;
        let rows = statement
            .query_map(params![now, limit as i64], |row| {
                Ok(OutboxRow {
                    id: row.get(0)?,
                    channel: row.get(1)?,
                    kind: row.get(2)?,
                    dedup_key: row.get(3)?,
                    episode_id: row.get(4)?,
                    action_id: row.get(5)?,
                    priority: row.get(6)?,
                    reason: row.get(7)?,
                    created_at: row.get(8)?,
                    attempts: row.get(9)?,
                    first_failure_at: row.get(10)?,
                    last_error: row.get(11)?,
                    fallback_at: row.get(12)?,
                    update: row.get(13)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Pending rows per channel and the age of the oldest, for metrics.
    pub fn outbox_backlog(&self, now: Millis) -> Result<OutboxBacklog, StoreError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT channel, count(*), min(created_at) FROM outbox WHERE state = 'pending'
             GROUP BY channel",
        )?;
        let mut oldest = now;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut channels = Vec::new();
        for (channel, pending, first) in rows {
            oldest = oldest.min(first);
            channels.push(ChannelBacklog { channel, pending });
        }
        Ok(OutboxBacklog {
            channels,
            oldest_age: now - oldest,
        })
    }

    /// Every event sent (or attempted) at `since` or later, oldest first, with what routes
    /// it, for seeding the rate limiter after a restart. An event is counted once, at the
    /// later of its last `sending_at` (written before a round sends, so a round cut off by a
    /// crash before its answers were recorded still counts) and its delivery or last attempt
    /// (a retry records the time it failed as its next attempt); rows settled without sending
    /// anything (never marked sending, no event body recorded) are left out.
    pub fn outbox_sent_since(&self, since: Millis) -> Result<Vec<SentEvent>, StoreError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT sent_at, channel, routing_key, rule, severity FROM (
                 SELECT max(coalesce(o.sending_at, 0), CASE
                         WHEN o.attempts = 0 OR (o.state IN ('delivered', 'rejected')
                             AND coalesce(o.sent, '') NOT LIKE '{%') THEN 0
                         WHEN o.state = 'delivered' THEN coalesce(o.delivered_at, 0)
                         ELSE max(o.next_attempt_at, coalesce(o.first_failure_at, 0))
                     END) AS sent_at,
                     o.channel, g.routing_key,
                     coalesce(g.rule, e.rule, 'default') AS rule,
                     coalesce(g.severity, e.severity, 'P3') AS severity
                 FROM outbox o
                 LEFT JOIN pages g ON g.dedup_key = o.dedup_key AND o.kind <> 'change'
                 LEFT JOIN episodes e ON e.id = o.episode_id AND o.kind = 'change'
                 WHERE o.attempts > 0 OR o.sending_at IS NOT NULL)
             WHERE sent_at > 0 AND sent_at >= ?1 ORDER BY sent_at",
        )?;
        let rows = statement
            .query_map(params![since], |row| {
                Ok(SentEvent {
                    at: row.get(0)?,
                    channel: row.get(1)?,
                    routing_key: row.get(2)?,
                    rule: row.get(3)?,
                    severity: row.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn page(&self, dedup_key: &str) -> Result<Option<PageFacts>, StoreError> {
        Ok(self
            .connection
            .query_row(
                "SELECT group_key, rule, severity, routing_key, status FROM pages
                 WHERE dedup_key = ?1",
                params![dedup_key],
                |row| {
                    Ok(PageFacts {
                        group_key: row.get(0)?,
                        rule: row.get(1)?,
                        severity: row.get(2)?,
                        routing_key: row.get(3)?,
                        status: row.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    /// The paged (or once paged) incidents of a page, most severe and oldest first.
    pub fn paged_incidents(
        &self,
        dedup_key: &str,
        limit: usize,
    ) -> Result<PagedIncidents, StoreError> {
        let total: i64 = self.connection.query_row(
            "SELECT count(*) FROM incident_pages WHERE dedup_key = ?1
             AND state IN ('paged', 'resolved')",
            params![dedup_key],
            |row| row.get(0),
        )?;
        let mut statement = self.connection.prepare_cached(
            "SELECT episode_id, severity, state, reason FROM incident_pages
             WHERE dedup_key = ?1 AND state IN ('paged', 'resolved')
             ORDER BY state = 'resolved', severity, paged_at LIMIT ?2",
        )?;
        let rows = statement
            .query_map(params![dedup_key, limit as i64], |row| {
                Ok(PagedIncident {
                    episode_id: row.get(0)?,
                    severity: row.get(1)?,
                    state: row.get(2)?,
                    reason: row.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let more = (total as usize).saturating_sub(rows.len());
        Ok(PagedIncidents {
            incidents: rows,
            more,
        })
    }

    /// The latest decision trace of an episode.
    pub fn latest_trace(&self, episode_id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self
            .connection
            .query_row(
                "SELECT trace FROM decisions WHERE episode_id = ?1 ORDER BY seq DESC LIMIT 1",
                params![episode_id],
                |row| row.get::<_, String>(0),
            )
            .optional()?
            .and_then(|text| serde_json::from_str(&text).ok()))
    }

    /// An episode's rule and severity as last decided (for routing its change events).
    pub fn episode_facts(&self, episode_id: &str) -> Result<EpisodeRouting, StoreError> {
        Ok(self
            .connection
            .query_row(
                "SELECT coalesce(rule, 'default'), coalesce(severity, 'P3') FROM episodes
                 WHERE id = ?1",
                params![episode_id],
                |row| {
                    Ok(EpisodeRouting {
                        rule: row.get(0)?,
                        severity: row.get(1)?,
                    })
                },
            )
            .optional()?
            .unwrap_or_else(|| EpisodeRouting {
                rule: "default".to_owned(),
                severity: "P3".to_owned(),
            }))
    }

    /// Everything paging did for an incident: its paging state and every outbox row.
    pub fn incident_paging(&self, episode_id: &str) -> Result<serde_json::Value, StoreError> {
        Ok(self.incident_page_state(episode_id)?.view)
    }

    /// [`Reader::incident_paging`] with the page state it shows (`None`: no paging recorded).
    pub fn incident_page_state(&self, episode_id: &str) -> Result<IncidentPaging, StoreError> {
        let page = self
            .connection
            .query_row(
                "SELECT dedup_key, severity, policy, state, reason, paged_at, closed_at
                 FROM incident_pages WHERE episode_id = ?1",
                params![episode_id],
                |row| {
                    Ok(serde_json::json!({
                        "dedup_key": row.get::<_, String>(0)?,
                        "severity": row.get::<_, String>(1)?,
                        "policy": row.get::<_, String>(2)?,
                        "state": row.get::<_, String>(3)?,
                        "reason": row.get::<_, String>(4)?,
                        "paged_at": row.get::<_, Option<i64>>(5)?.map(super::reader::time_text),
                        "closed_at": row.get::<_, Option<i64>>(6)?.map(super::reader::time_text),
                    }))
                },
            )
            .optional()?;
        let Some(mut page) = page else {
            return Ok(IncidentPaging {
                view: serde_json::Value::Null,
                state: None,
            });
        };
        let dedup_key = page["dedup_key"].as_str().unwrap_or_default().to_owned();
        let mut statement = self.connection.prepare_cached(
            "SELECT id, channel, kind, state, reason, attempts, last_error, created_at,
                 delivered_at, fallback_at
             FROM outbox WHERE dedup_key = ?1 OR episode_id = ?2 ORDER BY id LIMIT 200",
        )?;
        let events = statement
            .query_map(params![dedup_key, episode_id], |row| {
                Ok(serde_json::json!({
                    "id": row.get::<_, i64>(0)?,
                    "channel": row.get::<_, String>(1)?,
                    "kind": row.get::<_, String>(2)?,
                    "state": row.get::<_, String>(3)?,
                    "reason": row.get::<_, String>(4)?,
                    "attempts": row.get::<_, i64>(5)?,
                    "last_error": row.get::<_, Option<String>>(6)?,
                    "created_at": super::reader::time_text(row.get(7)?),
                    "delivered_at": row.get::<_, Option<i64>>(8)?.map(super::reader::time_text),
                    "fallback_at": row.get::<_, Option<i64>>(9)?.map(super::reader::time_text),
                }))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let decision = page["state"].as_str().unwrap_or_default().to_owned();
        let reason = page["reason"].as_str().unwrap_or_default().to_owned();
        let facts: Vec<policy::PageEvent<'_>> = events
            .iter()
            .map(|event| policy::PageEvent {
                channel: event["channel"].as_str().unwrap_or_default(),
                kind: event["kind"].as_str().unwrap_or_default(),
                state: event["state"].as_str().unwrap_or_default(),
                error: event["last_error"].as_str(),
                delivered_at: event["delivered_at"].as_str(),
            })
            .collect();
        let state = policy::page_state(&decision, &reason, &facts);
        // `state` stays the paging decision (clients compare it); `page_state` is what reached
        // people, from the one function every view uses. `paged_at` was when the page was
        // queued: that is `queued_at` now, and `paged_at` is set only once a trigger was
        // delivered, so nobody reads a rejected page as a page.
        page["queued_at"] = page["paged_at"].clone();
        page["paged_at"] = match &state {
            policy::PageState::Delivered { at, .. } => at.clone().into(),
            _ => serde_json::Value::Null,
        };
        page["page_state"] = state.as_str().into();
        page["summary"] = state.sentence().into();
        page["events"] = serde_json::Value::Array(events);
        Ok(IncidentPaging {
            view: page,
            state: Some(state),
        })
    }

    /// One action row with its episode, for a change event.
    pub fn action(&self, id: i64) -> Result<Option<ActionWithEpisode>, StoreError> {
        let episode: Option<String> = self
            .connection
            .query_row(
                "SELECT episode_id FROM actions WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )
            .optional()?;
        let Some(episode) = episode else {
            return Ok(None);
        };
        let found = self
            .actions(&episode)?
            .into_iter()
            .find(|a| a["id"].as_i64() == Some(id));
        Ok(found.map(|action| ActionWithEpisode {
            episode_id: episode,
            action,
        }))
    }
}

/// Apply one paging operation from the outbox worker or the act stage.
pub(super) fn apply(
    transaction: &Transaction<'_>,
    op: &PagingOp,
    now: Millis,
) -> rusqlite::Result<PagingDone> {
    let mut done = PagingDone::default();
    match op {
        PagingOp::Acted(episode_id) => {
            mark_acted(transaction, episode_id)?;
            // Marked acted: how long it waited for the act stage no longer matters.
            let settle = crate::page::policy::Settle::from(Millis::MAX);
            done.count = evaluate_waiting(transaction, Some(episode_id), now, settle)?;
        }
        PagingOp::Evaluate { settle } => {
            done.count = evaluate_waiting(transaction, None, now, *settle)?;
        }
        PagingOp::Close(episodes) => {
            for episode_id in episodes {
                done.count += usize::from(on_close(transaction, episode_id, now)?);
            }
        }
        PagingOp::Attempt(id, attempt) => {
            record_attempt(transaction, *id, attempt, now)?;
        }
        PagingOp::Sending(ids) => {
            done.count = mark_sending(transaction, ids, now)?;
        }
        PagingOp::FallBack {
            id,
            channels,
            reason,
        } => {
            done.count = fall_back(transaction, *id, channels, reason, now)?;
        }
        PagingOp::FixRoutingKey {
            dedup_key,
            routing_key,
        } => {
            done.routing_key = Some(fix_routing_key(transaction, dedup_key, routing_key)?);
        }
    }
    Ok(done)
}

#[cfg(test)]
#[path = "paging_tests.rs"]
mod tests;
