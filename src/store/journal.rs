//! The notification journal: every accepted webhook body, stored once per content hash, with
//! one row per notification until reconcile has applied it and maintenance prunes it.

use rusqlite::{Connection, Transaction, params};

use super::{IngestRecord, Prepared};

/// Journal notifications (their bodies stored once per content hash); returns their ids.
/// The body's hash comes prepared: SHA-256 runs in the ingest handler, not on the writer.
pub(super) fn insert<'a>(
    transaction: &Transaction<'_>,
    records: impl Iterator<Item = (&'a IngestRecord, &'a Prepared)>,
) -> rusqlite::Result<Vec<i64>> {
    let mut ids = Vec::new();
    {
        let mut insert_payload = transaction
            .prepare_cached("INSERT OR IGNORE INTO payloads(hash, body) VALUES (?1, ?2)")?;
        let mut insert_notification = transaction.prepare_cached(
            "INSERT INTO notifications(received_at, remote, group_key, payload_hash, alert_count)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (record, prepared) in records {
            let hash = &prepared.hash;
            insert_payload.execute(params![hash.as_slice(), record.body.as_ref()])?;
            insert_notification.execute(params![
                record.received_at,
                record.remote,
                record.group_key,
                hash.as_slice(),
                record.alert_count as i64,
            ])?;
            ids.push(transaction.last_insert_rowid());
        }
    }
    Ok(ids)
}

pub(super) fn count_unreconciled(connection: &Connection) -> Result<u64, rusqlite::Error> {
    connection.query_row(
        "SELECT count(*) FROM notifications WHERE reconciled_at IS NULL",
        [],
        |row| row.get::<_, i64>(0).map(|n| n as u64),
    )
}
