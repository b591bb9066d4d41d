//! The store's schema: `schema.sql` for a new store, then the `migrate_v*.sql` steps in order,
//! and the connection settings the writer relies on.

use rusqlite::{Connection, OptionalExtension};

const SCHEMA: &str = include_str!("schema.sql");
/// Migrations from the previous version, applied in order; the index is the version it
/// migrates from, minus one.
const MIGRATIONS: [&str; 7] = [
    include_str!("migrate_v2.sql"),
    include_str!("migrate_v3.sql"),
    include_str!("migrate_v4.sql"),
    include_str!("migrate_v5.sql"),
    include_str!("migrate_v6.sql"),
    include_str!("migrate_v7.sql"),
    include_str!("migrate_v8.sql"),
];
const SCHEMA_VERSION: &str = "8";

/// Pragmas, each for a reason:
/// - WAL: readers never block the writer, and a commit appends to one file.
/// - synchronous=FULL: a commit returns only after the WAL is fsync'd, so a 200 survives
///   power loss. (Reconcile transactions relax this; see `reconcile_batch`.)
/// - foreign_keys stays off: the journal must accept a notification even if a later stage's
///   row it might reference is gone.
pub(super) fn prepare(connection: &Connection) -> Result<(), rusqlite::Error> {
    let mode: String = connection.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "journal_mode stayed {mode}; WAL is required"
        )));
    }
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.execute_batch(SCHEMA)?;
    let version: Option<String> = connection
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    // A new store starts at version 1 (schema.sql) and is migrated like an old one.
    let mut current: usize = match version.as_deref() {
        None => 1,
        Some(text) => text.parse().map_err(|_| {
            rusqlite::Error::InvalidParameterName(format!(
                "store schema version {text:?} is unreadable"
            ))
        })?,
    };
    let latest: usize = SCHEMA_VERSION.parse().unwrap_or(1);
    if current > latest {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "store schema version {current} is newer than this build understands ({latest}); \
             run the newer nightshift"
        )));
    }
    while current < latest {
        let transaction = connection.unchecked_transaction()?;
        transaction.execute_batch(MIGRATIONS[current - 1])?;
        current += 1;
        transaction.execute(
            "INSERT INTO meta(key, value) VALUES ('schema_version', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [current.to_string()],
        )?;
        transaction.commit()?;
    }
    if version.is_none() {
        connection.execute(
            "INSERT INTO meta(key, value) VALUES ('schema_version', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [SCHEMA_VERSION],
        )?;
    }
    Ok(())
}
