//! Why a store write failed, as a kind callers can act on and SQLite's words for people.
//!
//! The writer thread answers every command with a [`WriteError`] instead of a string, so a
//! full disk reads as full (not "corrupt") on the far side of the command channel, and
//! nothing outside the store needs rusqlite to tell the cases apart.

use rusqlite::ErrorCode;

/// What kind of failure a store write met; each has a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteErrorKind {
    /// No room: the disk is full, or the database reached `[store] max_size_bytes`
    /// (SQLite's `max_page_count`, which it reports as full too).
    Full,
    /// The database or its filesystem may not be written.
    ReadOnly,
    /// Another connection holds a lock longer than the busy timeout.
    Busy,
    /// The database file is damaged or is not a database.
    Corrupt,
    /// The operating system failed a read, write, sync or open.
    Io,
    /// The store refused the command itself as wrong (a constraint, a value out of range).
    Invalid,
    /// A row holds a kind or state this version does not know (a newer one wrote it).
    Unrecognised,
    Other,
}

impl WriteErrorKind {
    pub fn label(self) -> &'static str {
        match self {
            WriteErrorKind::Full => "full",
            WriteErrorKind::ReadOnly => "read_only",
            WriteErrorKind::Busy => "busy",
            WriteErrorKind::Corrupt => "corrupt",
            WriteErrorKind::Io => "io",
            WriteErrorKind::Invalid => "invalid",
            WriteErrorKind::Unrecognised => "unrecognised",
            WriteErrorKind::Other => "other",
        }
    }

    /// The one place a SQLite failure is sorted. `system_errno` is the operating system's
    /// error behind the last failed call, when known: SQLite reports a write refused by a
    /// read-only filesystem (EROFS) as a plain I/O error.
    pub(super) fn of(error: &rusqlite::Error, system_errno: Option<i32>) -> WriteErrorKind {
        if super::values::unrecognised_in(error).is_some() {
            return WriteErrorKind::Unrecognised;
        }
        let rusqlite::Error::SqliteFailure(failure, _) = error else {
            return match error {
                rusqlite::Error::ToSqlConversionFailure(_)
                | rusqlite::Error::InvalidParameterCount(..)
                | rusqlite::Error::InvalidParameterName(_) => WriteErrorKind::Invalid,
                _ => WriteErrorKind::Other,
            };
        };
        let kind = match failure.code {
            ErrorCode::DiskFull => WriteErrorKind::Full,
            ErrorCode::ReadOnly => WriteErrorKind::ReadOnly,
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => WriteErrorKind::Busy,
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => WriteErrorKind::Corrupt,
            ErrorCode::SystemIoFailure | ErrorCode::CannotOpen => WriteErrorKind::Io,
            ErrorCode::ConstraintViolation
            | ErrorCode::TooBig
            | ErrorCode::TypeMismatch
            | ErrorCode::ParameterOutOfRange => WriteErrorKind::Invalid,
            _ => WriteErrorKind::Other,
        };
        if kind == WriteErrorKind::Io && system_errno == Some(libc::EROFS) {
            return WriteErrorKind::ReadOnly;
        }
        kind
    }
}

/// A failed store write: its kind, and SQLite's (or the writer's) message. Clone, because a
/// group commit's one failed fsync answers every command of the group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WriteError {
    kind: WriteErrorKind,
    message: String,
}

impl WriteError {
    /// The store refused a command as wrong, in the writer's own words.
    pub fn invalid(message: impl Into<String>) -> WriteError {
        WriteError {
            kind: WriteErrorKind::Invalid,
            message: message.into(),
        }
    }

    pub(super) fn from_sqlite(error: &rusqlite::Error, system_errno: Option<i32>) -> WriteError {
        WriteError {
            kind: WriteErrorKind::of(error, system_errno),
            message: error.to_string(),
        }
    }

    pub fn kind(&self) -> WriteErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::ffi;

    fn failure(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(code), None)
    }

    fn check(code: std::ffi::c_int, expected: WriteErrorKind) {
        let got = WriteErrorKind::of(&failure(code), None);
        assert_eq!(got, expected, "code {code}");
    }

    #[test]
    fn each_sqlite_family_is_its_kind() {
        for (code, expected) in [
            (ffi::SQLITE_FULL, WriteErrorKind::Full),
            (ffi::SQLITE_READONLY, WriteErrorKind::ReadOnly),
            (ffi::SQLITE_READONLY_DBMOVED, WriteErrorKind::ReadOnly),
            (ffi::SQLITE_READONLY_DIRECTORY, WriteErrorKind::ReadOnly),
            (ffi::SQLITE_READONLY_RECOVERY, WriteErrorKind::ReadOnly),
            (ffi::SQLITE_BUSY, WriteErrorKind::Busy),
            (ffi::SQLITE_BUSY_SNAPSHOT, WriteErrorKind::Busy),
            (ffi::SQLITE_LOCKED, WriteErrorKind::Busy),
            (ffi::SQLITE_CORRUPT, WriteErrorKind::Corrupt),
            (ffi::SQLITE_CORRUPT_INDEX, WriteErrorKind::Corrupt),
            (ffi::SQLITE_NOTADB, WriteErrorKind::Corrupt),
            (ffi::SQLITE_IOERR, WriteErrorKind::Io),
            (ffi::SQLITE_IOERR_FSYNC, WriteErrorKind::Io),
            (ffi::SQLITE_IOERR_WRITE, WriteErrorKind::Io),
            (ffi::SQLITE_IOERR_SHMMAP, WriteErrorKind::Io),
            (ffi::SQLITE_CANTOPEN, WriteErrorKind::Io),
            (ffi::SQLITE_CONSTRAINT, WriteErrorKind::Invalid),
            (ffi::SQLITE_CONSTRAINT_UNIQUE, WriteErrorKind::Invalid),
            (ffi::SQLITE_TOOBIG, WriteErrorKind::Invalid),
            (ffi::SQLITE_MISMATCH, WriteErrorKind::Invalid),
            (ffi::SQLITE_ERROR, WriteErrorKind::Other),
            (ffi::SQLITE_NOMEM, WriteErrorKind::Other),
            (ffi::SQLITE_INTERNAL, WriteErrorKind::Other),
        ] {
            check(code, expected);
        }
    }

    #[test]
    fn an_io_error_on_a_read_only_filesystem_is_read_only() {
        let io = failure(ffi::SQLITE_IOERR_WRITE);
        assert_eq!(
            WriteErrorKind::of(&io, Some(libc::EROFS)),
            WriteErrorKind::ReadOnly
        );
        assert_eq!(
            WriteErrorKind::of(&io, Some(libc::ENOSPC)),
            WriteErrorKind::Io
        );
        // Only an I/O error is reread by errno: a stale errno does not turn a full disk or
        // a corrupt file into a read-only one.
        for code in [ffi::SQLITE_FULL, ffi::SQLITE_CORRUPT] {
            assert_ne!(
                WriteErrorKind::of(&failure(code), Some(libc::EROFS)),
                WriteErrorKind::ReadOnly
            );
        }
    }

    #[test]
    fn errors_that_are_not_sqlite_failures() {
        let refused = rusqlite::Error::ToSqlConversionFailure("too large".into());
        assert_eq!(WriteErrorKind::of(&refused, None), WriteErrorKind::Invalid);
        let none = rusqlite::Error::QueryReturnedNoRows;
        assert_eq!(WriteErrorKind::of(&none, None), WriteErrorKind::Other);
        let newer = rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            Box::new(super::super::values::Unrecognised {
                what: "action state",
                text: "paused-forever".to_owned(),
            }),
        );
        assert_eq!(
            WriteErrorKind::of(&newer, None),
            WriteErrorKind::Unrecognised
        );
    }

    #[test]
    fn the_message_is_sqlites_and_the_label_the_kinds() {
        let full = rusqlite::Error::SqliteFailure(
            ffi::Error::new(ffi::SQLITE_FULL),
            Some("database or disk is full".to_owned()),
        );
        let error = WriteError::from_sqlite(&full, None);
        assert_eq!(error.kind(), WriteErrorKind::Full);
        assert_eq!(error.to_string(), "database or disk is full");
        assert_eq!(error.message(), "database or disk is full");
        assert_eq!(error.kind().label(), "full");
        let invalid = WriteError::invalid("no ingest commit has happened yet");
        assert_eq!(invalid.kind().label(), "invalid");
        assert_eq!(invalid.to_string(), "no ingest commit has happened yet");
    }

    #[test]
    fn labels_are_distinct() {
        let kinds = [
            WriteErrorKind::Full,
            WriteErrorKind::ReadOnly,
            WriteErrorKind::Busy,
            WriteErrorKind::Corrupt,
            WriteErrorKind::Io,
            WriteErrorKind::Invalid,
            WriteErrorKind::Unrecognised,
            WriteErrorKind::Other,
        ];
        let labels: std::collections::HashSet<_> = kinds.iter().map(|k| k.label()).collect();
        assert_eq!(labels.len(), kinds.len());
    }
}
