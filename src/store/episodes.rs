//! Episodes and their transitions: reconcile applies each journaled snapshot (`reconcile`),
//! Alertmanager's API view closes what webhooks cannot (`api_sync`), and the worker marks
//! transitions handled (`complete_transitions`). The rules they apply are pure
//! (`episodes::reconcile`); this file only reads and writes the rows.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rusqlite::{OptionalExtension, Transaction, params};

use super::{ApiAlert, StoreSettings, SyncSummary};
use crate::clock::{Millis, duration_millis};
use crate::episodes::reconcile::{
    self, ApiOutcome, ApiView, EpisodeStatus, Known, SnapshotOutcome, TransitionKind,
};
use crate::ingest::webhook::{self, Alert, Notification};
use crate::telemetry::Metrics;

/// One stored notification waiting for reconciliation; identical consecutive snapshots of a
/// group are folded into one entry with the latest receipt time.
struct Pending {
    last_id: i64,
    received_at: Millis,
    group_key: String,
    hash: Vec<u8>,
    body: Vec<u8>,
}

/// Notifications ingest parsed, by body hash, kept from their commit until reconcile applies
/// them so that a body is parsed once. Bounded: past [`PARSED_BODY_BYTES`] of bodies (a
/// parse takes several times its body) nothing more is kept, and reconcile parses the stored
/// body as it does after a restart.
#[derive(Default)]
pub(super) struct Parsed {
    notifications: HashMap<[u8; 32], (Arc<Notification>, usize)>,
    bytes: usize,
}

/// Body bytes whose parses [`Parsed`] keeps at most.
const PARSED_BODY_BYTES: usize = 2 << 20;

impl Parsed {
    pub(super) fn keep(&mut self, hash: [u8; 32], notification: Arc<Notification>, bytes: usize) {
        if self.notifications.contains_key(&hash) || self.bytes + bytes > PARSED_BODY_BYTES {
            return;
        }
        self.bytes += bytes;
        self.notifications.insert(hash, (notification, bytes));
    }

    fn get(&self, hash: &[u8]) -> Option<Arc<Notification>> {
        let hash: [u8; 32] = hash.try_into().ok()?;
        self.notifications.get(&hash).map(|(n, _)| n.clone())
    }

    fn forget(&mut self, hash: &[u8]) {
        let Ok(hash) = <[u8; 32]>::try_from(hash) else {
            return;
        };
        if let Some((_, bytes)) = self.notifications.remove(&hash) {
            self.bytes -= bytes;
        }
    }
}

/// Reconcile the oldest unreconciled notifications, bounded by `reconcile.batch_size` and by
/// `MAX_BATCH_BODY_BYTES` of bodies, in one transaction; returns how many it covered.
pub(super) fn reconcile(
    transaction: &Transaction<'_>,
    settings: &StoreSettings,
    now: Millis,
    metrics: &Metrics,
    parsed: &mut Parsed,
) -> rusqlite::Result<usize> {
    let grace = duration_millis(settings.reconcile.gone_grace);
    let (pending, count, max_id) = load_pending(
        transaction,
        settings.reconcile.batch_size,
        MAX_BATCH_BODY_BYTES,
        parsed,
    )?;
    let mut applied = Vec::with_capacity(pending.len());
    for mut entry in pending {
        // Parsed by ingest, or else now. Each body is let go once parsed: only the batch's
        // unparsed bodies stay loaded.
        let notification = match parsed.get(&entry.hash) {
            Some(notification) => Ok(notification),
            None => {
                let body = std::mem::take(&mut entry.body);
                webhook::parse(&body).map(Arc::new)
            }
        };
        match notification {
            Ok(mut notification) => {
                // The pipeline's heartbeat is a sign of life, never an incident.
                if let Some(name) = &settings.heartbeat_alertname
                    && notification
                        .alerts
                        .iter()
                        .any(|alert| alert.labels.get("alertname") == Some(name))
                {
                    Arc::make_mut(&mut notification)
                        .alerts
                        .retain(|alert| alert.labels.get("alertname") != Some(name));
                }
                apply_snapshot(transaction, &entry, &notification, grace, metrics)?;
            }
            Err(error) => {
                // Only bodies that parsed are journaled, so this means a parser change
                // made an old body invalid. Record it and move on rather than wedge.
                tracing::error!(notification = entry.last_id, %error, hash = %hex::encode(&entry.hash),
                    "stored notification no longer parses; skipped");
            }
        }
        applied.push(entry.hash);
    }
    // Only now: an entry later in the batch may share a hash, and its body was not loaded.
    for hash in applied {
        parsed.forget(&hash);
    }
    if let Some(max_id) = max_id {
        transaction
            .prepare_cached(
                "UPDATE notifications SET reconciled_at = ?1 WHERE reconciled_at IS NULL AND id <= ?2",
            )?
            .execute(params![now, max_id])?;
    }
    Ok(count)
}

pub(super) fn api_sync(
    transaction: &Transaction<'_>,
    alerts: &[ApiAlert],
    grace: Millis,
    now: Millis,
    metrics: &Metrics,
) -> rusqlite::Result<SyncSummary> {
    // Alertmanager's API gives startsAt to the millisecond while its webhooks carry the full
    // precision, so episodes are matched on (fingerprint, start in whole milliseconds).
    let views: HashMap<(String, i64), bool> = alerts
        .iter()
        .map(|alert| {
            (
                (
                    alert.fingerprint.clone(),
                    alert.starts_at.timestamp_millis(),
                ),
                alert.suppressed,
            )
        })
        .collect();
    let mut summary = SyncSummary::default();
    type OpenEpisode = (String, String, String, String, Option<i64>);
    let open: Vec<OpenEpisode> = {
        let mut statement = transaction.prepare(
            "SELECT id, fingerprint, starts_at, status, api_absent_since FROM episodes
             WHERE status IN ('firing', 'silenced')",
        )?;
        let rows = statement.query_map([], |row| {
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
    for (id, fingerprint, starts_at, status, absent_since) in open {
        let Some(status) = EpisodeStatus::parse(&status) else {
            continue;
        };
        let Ok(starts_at) = chrono::DateTime::parse_from_rfc3339(&starts_at) else {
            continue;
        };
        summary.checked += 1;
        let view = match views.get(&(fingerprint, starts_at.timestamp_millis())) {
            Some(true) => ApiView::Suppressed,
            Some(false) => ApiView::Active,
            None => ApiView::Absent,
        };
        match reconcile::decide_api(status, view, absent_since, now, grace) {
            ApiOutcome::Transition(kind) => {
                let detail = serde_json::json!({ "source": "alertmanager_api" });
                record_transition(transaction, &id, kind, now, None, &detail, metrics)?;
                match kind {
                    TransitionKind::Silenced => summary.silenced += 1,
                    TransitionKind::Unsilenced => summary.unsilenced += 1,
                    TransitionKind::Gone => summary.gone += 1,
                    _ => {}
                }
            }
            ApiOutcome::MarkAbsent => {
                transaction.execute(
                    "UPDATE episodes SET api_absent_since = ?2 WHERE id = ?1 AND api_absent_since IS NULL",
                    params![id, now],
                )?;
            }
            ApiOutcome::ClearAbsent => {
                if absent_since.is_some() {
                    transaction.execute(
                        "UPDATE episodes SET api_absent_since = NULL WHERE id = ?1",
                        params![id],
                    )?;
                }
            }
        }
    }
    Ok(summary)
}

pub(super) fn complete_transitions(
    transaction: &Transaction<'_>,
    seqs: &[i64],
    now: Millis,
) -> rusqlite::Result<usize> {
    let mut done = 0;
    {
        let mut statement = transaction.prepare_cached(
            "UPDATE transitions SET done_at = ?2 WHERE seq = ?1 AND done_at IS NULL",
        )?;
        for seq in seqs {
            done += statement.execute(params![seq, now])?;
        }
    }
    Ok(done)
}

/// Most body bytes one reconcile batch loads into memory. Alertmanager sends a group's full
/// snapshot every time, so after a restart with a backlog of large notifications a batch bounded
/// only by count could hold hundreds of MiB of bodies at once. A batch always takes at least one
/// notification, so a single body over this still makes progress.
const MAX_BATCH_BODY_BYTES: u64 = 32 * 1024 * 1024;

/// Load up to `limit` unreconciled notifications in receipt order, folding consecutive
/// identical snapshots of a group into one, and stopping before the bodies to load would pass
/// `max_bytes` (but always taking the first). Returns the entries, how many notifications they
/// cover, and the highest id covered: every unreconciled notification up to that id is covered,
/// so the batch is a prefix of the backlog in receipt order.
fn load_pending(
    transaction: &Transaction<'_>,
    limit: usize,
    max_bytes: u64,
    parsed: &Parsed,
) -> Result<(Vec<Pending>, usize, Option<i64>), rusqlite::Error> {
    // The limit is written into the SQL: SQLite re-plans a statement with a bound LIMIT on
    // every run, which showed up in the ingest benchmark's profile. `length()` of a BLOB is
    // read from the record header, without loading the body (or its overflow pages).
    let mut statement = transaction.prepare_cached(&format!(
        "SELECT n.id, n.received_at, n.group_key, n.payload_hash, length(p.body)
         FROM notifications n LEFT JOIN payloads p ON p.hash = n.payload_hash
         WHERE n.reconciled_at IS NULL ORDER BY n.id LIMIT {}",
        limit.max(1)
    ))?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, Vec<u8>>(3)?,
            row.get::<_, Option<i64>>(4)?,
        ))
    })?;
    let mut pending: Vec<Pending> = Vec::new();
    let mut last_of_group: HashMap<String, usize> = HashMap::new();
    let mut count = 0;
    let mut max_id = None;
    let mut bytes: u64 = 0;
    for row in rows {
        let (id, received_at, group_key, hash, size) = row?;
        if let Some(&index) = last_of_group.get(&group_key)
            && pending[index].hash == hash
        {
            // Folded into an entry already in the batch: no body of its own to load.
            count += 1;
            max_id = Some(id);
            let entry = &mut pending[index];
            entry.last_id = id;
            entry.received_at = entry.received_at.max(received_at);
            continue;
        }
        // A body parsed by ingest is not loaded.
        let size = match parsed.get(&hash) {
            Some(_) => 0,
            None => size.map_or(0, |size| size.max(0) as u64),
        };
        if !pending.is_empty() && bytes.saturating_add(size) > max_bytes {
            // The rest waits for the next batch; stopping here keeps the batch a prefix.
            break;
        }
        bytes = bytes.saturating_add(size);
        count += 1;
        max_id = Some(id);
        last_of_group.insert(group_key.clone(), pending.len());
        pending.push(Pending {
            last_id: id,
            received_at,
            group_key,
            hash,
            body: Vec::new(),
        });
    }
    drop(statement);
    let mut body_statement =
        transaction.prepare_cached("SELECT body FROM payloads WHERE hash = ?1")?;
    for entry in pending.iter_mut().filter(|e| parsed.get(&e.hash).is_none()) {
        entry.body = body_statement
            .query_row(params![entry.hash], |row| row.get(0))
            .optional()?
            .unwrap_or_default();
    }
    Ok((pending, count, max_id))
}

fn labels_json(labels: &webhook::LabelSet) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".to_owned())
}

/// Apply one snapshot of a group: per-alert transitions, then absences.
fn apply_snapshot(
    transaction: &Transaction<'_>,
    entry: &Pending,
    notification: &Notification,
    grace: Millis,
    metrics: &Metrics,
) -> Result<(), rusqlite::Error> {
    let received_at = entry.received_at;
    let mut present = HashSet::with_capacity(notification.alerts.len());
    for alert in &notification.alerts {
        let id = reconcile::episode_id(&alert.fingerprint, alert.starts_at);
        present.insert(id.clone());
        let known: Option<Known> = transaction
            .prepare_cached("SELECT status, status_changed_at FROM episodes WHERE id = ?1")?
            .query_row(params![id], |row| {
                let status: String = row.get(0)?;
                Ok(EpisodeStatus::parse(&status).map(|status| Known {
                    status,
                    status_changed_at: row.get(1).unwrap_or(0),
                }))
            })
            .optional()?
            .flatten();
        let outcome = reconcile::decide_alert(known, alert.status, received_at, grace);
        match (known, outcome) {
            (None, SnapshotOutcome::Transition(kind)) => {
                insert_episode(
                    transaction,
                    &id,
                    alert,
                    &entry.group_key,
                    entry.last_id,
                    received_at,
                    kind,
                )?;
                let detail = serde_json::json!({
                    "alert_status": alert.status.as_str(),
                    "seen_firing": kind == TransitionKind::Opened,
                    "group_key": entry.group_key,
                });
                insert_transition(
                    transaction,
                    &id,
                    kind,
                    received_at,
                    Some(entry.last_id),
                    &detail,
                    metrics,
                )?;
            }
            (Some(_), SnapshotOutcome::Transition(kind)) => {
                touch_episode(transaction, &id, alert, received_at)?;
                let detail = serde_json::json!({
                    "alert_status": alert.status.as_str(),
                    "group_key": entry.group_key,
                });
                record_transition(
                    transaction,
                    &id,
                    kind,
                    received_at,
                    Some(entry.last_id),
                    &detail,
                    metrics,
                )?;
            }
            (_, SnapshotOutcome::Repeat) => touch_episode(transaction, &id, alert, received_at)?,
            (_, SnapshotOutcome::Stale) => {
                metrics.reconcile_stale_alerts_total.inc();
                transaction
                    .prepare_cached(
                        "UPDATE episodes SET last_seen = max(last_seen, ?2) WHERE id = ?1",
                    )?
                    .execute(params![id, received_at])?;
            }
        }
        if outcome_leaves_open(known, outcome) {
            transaction
                .prepare_cached(
                    "INSERT OR IGNORE INTO episode_groups(group_key, episode_id, first_seen) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![entry.group_key, id, received_at])?;
        }
    }
    if notification.truncated_alerts > 0 {
        // A truncated snapshot does not list every alert; absence proves nothing.
        return Ok(());
    }
    let members: Vec<(String, i64, String)> = {
        let mut statement = transaction.prepare_cached(
            "SELECT g.episode_id, g.first_seen, e.status FROM episode_groups g
             JOIN episodes e ON e.id = g.episode_id WHERE g.group_key = ?1",
        )?;
        let rows = statement.query_map(params![entry.group_key], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    for (id, first_seen, status) in members {
        if present.contains(&id) {
            continue;
        }
        let Some(status) = EpisodeStatus::parse(&status) else {
            continue;
        };
        if reconcile::absent_from_snapshot_is_gone(status, first_seen, received_at, grace) {
            let detail = serde_json::json!({
                "reason": "absent from a later complete snapshot of its group",
                "group_key": entry.group_key,
            });
            record_transition(
                transaction,
                &id,
                TransitionKind::Gone,
                received_at,
                Some(entry.last_id),
                &detail,
                metrics,
            )?;
        }
    }
    Ok(())
}

fn outcome_leaves_open(known: Option<Known>, outcome: SnapshotOutcome) -> bool {
    match outcome {
        SnapshotOutcome::Transition(kind) => kind.status_after().is_open(),
        SnapshotOutcome::Repeat | SnapshotOutcome::Stale => {
            known.is_some_and(|k| k.status.is_open())
        }
    }
}

fn insert_episode(
    transaction: &Transaction<'_>,
    id: &str,
    alert: &Alert,
    group_key: &str,
    notification_id: i64,
    received_at: Millis,
    kind: TransitionKind,
) -> Result<(), rusqlite::Error> {
    let status = kind.status_after();
    let closed_at = (!status.is_open()).then_some(received_at);
    transaction
        .prepare_cached(
            "INSERT INTO episodes(id, fingerprint, starts_at, group_key, status, labels, annotations,
                 generator_url, ends_at, first_seen, last_seen, status_changed_at, closed_at,
                 first_notification)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?10, ?11, ?12)",
        )?
        .execute(params![
            id,
            alert.fingerprint,
            reconcile::canonical_time(alert.starts_at),
            group_key,
            status.as_str(),
            labels_json(&alert.labels),
            labels_json(&alert.annotations),
            alert.generator_url,
            alert.ends_at.map(reconcile::canonical_time),
            received_at,
            closed_at,
            notification_id,
        ])?;
    Ok(())
}

/// Refresh what a later snapshot may have changed: last-seen, annotations, the end time.
fn touch_episode(
    transaction: &Transaction<'_>,
    id: &str,
    alert: &Alert,
    received_at: Millis,
) -> Result<(), rusqlite::Error> {
    transaction
        .prepare_cached(
            "UPDATE episodes SET last_seen = max(last_seen, ?2), annotations = ?3,
                 ends_at = coalesce(?4, ends_at)
             WHERE id = ?1",
        )?
        .execute(params![
            id,
            received_at,
            labels_json(&alert.annotations),
            alert.ends_at.map(reconcile::canonical_time),
        ])?;
    Ok(())
}

/// Move an existing episode to the status `kind` leads to and record the transition.
fn record_transition(
    transaction: &Transaction<'_>,
    id: &str,
    kind: TransitionKind,
    at: Millis,
    notification_id: Option<i64>,
    detail: &serde_json::Value,
    metrics: &Metrics,
) -> Result<(), rusqlite::Error> {
    let status = kind.status_after();
    if status.is_open() {
        transaction
            .prepare_cached(
                "UPDATE episodes SET status = ?2, status_changed_at = ?3, closed_at = NULL,
                     api_absent_since = NULL WHERE id = ?1",
            )?
            .execute(params![id, status.as_str(), at])?;
    } else {
        transaction
            .prepare_cached(
                "UPDATE episodes SET status = ?2, status_changed_at = ?3, closed_at = ?3 WHERE id = ?1",
            )?
            .execute(params![id, status.as_str(), at])?;
        transaction
            .prepare_cached("DELETE FROM episode_groups WHERE episode_id = ?1")?
            .execute(params![id])?;
    }
    insert_transition(transaction, id, kind, at, notification_id, detail, metrics)
}

fn insert_transition(
    transaction: &Transaction<'_>,
    id: &str,
    kind: TransitionKind,
    at: Millis,
    notification_id: Option<i64>,
    detail: &serde_json::Value,
    metrics: &Metrics,
) -> Result<(), rusqlite::Error> {
    transaction
        .prepare_cached(
            "INSERT INTO transitions(episode_id, kind, at, notification_id, detail)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            id,
            kind.as_str(),
            at,
            notification_id,
            detail.to_string()
        ])?;
    metrics
        .episode_transitions_total
        .with_label_values(&[kind.as_str()])
        .inc();
    tracing::info!(
        episode = id,
        transition = kind.as_str(),
        "episode transition"
    );
    Ok(())
}
