//! How a read-only connection gets at the store when the reader may not write the state
//! directory (an operator in its group running the CLI), with the daemon running or stopped.
//!
//! SQLite reads a WAL database read-only only through its `-shm` file; it cannot create one in
//! a directory it may not write. The writer keeps `-wal` and `-shm` when it closes (see
//! `connect`), so they are normally there. When `-shm` is missing anyway (a store last closed
//! by an older nightshift, which let SQLite delete both) the reader opens the database
//! `immutable`, without locks or `-shm`. That is only correct when no commit lives in `-wal`
//! alone and nobody writes. A missing `-shm` already says nobody has the store open (every
//! WAL connection maps it, and the writer keeps it), so the reader asks only that `-wal` be
//! empty or missing; otherwise it gets a precise error instead.
//!
//! Invariant: a reader never writes a file, takes no lock, and never reads a database whose
//! `-wal` it ignores.

use std::ffi::CString;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::{StoreError, connect};

/// Open `database` read-only, the way this process's permissions allow.
pub(super) fn open_read_only(database: &Path) -> Result<Connection, StoreError> {
    let dir = database
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let denied = |path: &Path| StoreError::PermissionDenied {
        path: path.to_path_buf(),
        dir: dir.to_path_buf(),
        group: owning_group(dir),
    };
    // Asked with access(2), never by opening: closing any descriptor of a database file
    // drops every POSIX lock this process's SQLite connections hold on it (the daemon's own
    // readers come through here too), and a connection that then believes itself alone
    // resets `-shm` under a writer that has it mapped.
    match may(database, libc::R_OK) {
        Ok(()) => {}
        Err(error) if error.kind() == ErrorKind::PermissionDenied => return Err(denied(database)),
        Err(error) if error.kind() == ErrorKind::NotFound => {
            return Err(StoreError::Missing(database.to_path_buf()));
        }
        // Anything else SQLite reports on its own.
        Err(_) => {}
    }
    let wal = sibling(database, "-wal");
    let shm = sibling(database, "-shm");
    for file in [&wal, &shm] {
        if may(file, libc::R_OK).is_err_and(|error| error.kind() == ErrorKind::PermissionDenied) {
            return Err(denied(file));
        }
    }
    if shm.exists() || may(dir, libc::W_OK).is_ok() {
        return Ok(connect(database, true)?);
    }
    let wal_holds_commits = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
    if wal_holds_commits {
        return Err(StoreError::NoSharedMemory { shm, wal });
    }
    Ok(connect_immutable(database)?)
}

/// `database` with `suffix` appended to its file name, as SQLite names its companions.
fn sibling(database: &Path, suffix: &str) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Whether this process may access `path` as `mode` (`R_OK`, `W_OK`) by its effective ids,
/// asked with access(2), without opening it.
fn may(path: &Path, mode: libc::c_int) -> std::io::Result<()> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))?;
    // SAFETY: faccessat reads the NUL-terminated path only.
    let status = unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), mode, libc::AT_EACCESS) };
    if status == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A read-only connection that takes no locks and ignores `-wal`/`-shm`: only for a database
/// nobody writes whose commits are all in the main file.
fn connect_immutable(database: &Path) -> Result<Connection, rusqlite::Error> {
    let uri = format!("file:{}?immutable=1", uri_path(database));
    Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

/// The path part of a `file:` URI: bytes outside the unreserved set and `/` percent-encoded.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for &byte in path.as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The name of the group that owns `dir` (its gid when the name is unknown), for an error
/// that tells an operator which group to join.
fn owning_group(dir: &Path) -> String {
    let Ok(metadata) = std::fs::metadata(dir) else {
        return "its group".to_owned();
    };
    let gid = metadata.gid();
    group_name(gid).unwrap_or_else(|| format!("gid {gid}"))
}

fn group_name(gid: u32) -> Option<String> {
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: all-zero is a valid `group` (null pointers, zero gid); getgrgid_r fills it.
    let mut group: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: the buffer and its length match, and `group` outlives the call; the strings it
    // points to live in `buffer`, read before `buffer` is dropped.
    let status = unsafe {
        libc::getgrgid_r(
            gid,
            &mut group,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    if status != 0 || found.is_null() || group.gr_name.is_null() {
        return None;
    }
    // SAFETY: getgrgid_r succeeded, so gr_name is a NUL-terminated string inside `buffer`.
    let name = unsafe { std::ffi::CStr::from_ptr(group.gr_name) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_paths_escape_what_a_uri_would_read_as_syntax() {
        assert_eq!(
            uri_path(Path::new("/var/lib/night shift/a?b#c%.db")),
            "/var/lib/night%20shift/a%3Fb%23c%25.db"
        );
    }

    #[test]
    fn a_store_whose_shared_memory_is_gone_is_read_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("nightshift.db");
        {
            let connection = Connection::open(&database).unwrap();
            connection
                .execute_batch(
                    "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (7);",
                )
                .unwrap();
        }
        // The connection closed without persisting the WAL: SQLite deleted -wal and -shm.
        assert!(!sibling(&database, "-shm").exists());
        let connection = connect_immutable(&database).unwrap();
        let x: i64 = connection
            .query_row("SELECT x FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(x, 7);
    }

    #[test]
    fn the_write_ahead_log_outlives_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("nightshift.db");
        {
            let connection = connect(&database, false).unwrap();
            connection
                .execute_batch(
                    "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (7);",
                )
                .unwrap();
        }
        assert!(sibling(&database, "-wal").exists());
        assert!(sibling(&database, "-shm").exists());
    }
}
