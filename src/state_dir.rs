//! state_dir: the daemon's state directory. One process at a time holds it (an exclusive
//! lock on a file inside, held for the process's life), and everything nightshift writes
//! there gets its mode set explicitly, whatever the umask: directories 0750 and files 0640,
//! so that the service's group is how operators read the database, bundles and rejected
//! bodies; `credentials/` is 0700 with 0600 files (see `auth`).

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of every directory nightshift creates in its state directory.
pub const DIR_MODE: u32 = 0o750;
/// Mode of the database, bundles and rejected bodies.
pub const FILE_MODE: u32 = 0o640;
/// The lock file, holding the pid of the process that has the state directory.
pub const LOCK_FILE: &str = "nightshift.lock";

/// Create `path` (and its missing parents) as directories with [`DIR_MODE`], and set that
/// mode on `path` itself even if it existed (an older version, or another umask, may have left
/// it open).
pub fn create_dir(path: &Path) -> std::io::Result<()> {
    create_dirs(path)?;
    std::fs::set_permissions(path, Permissions::from_mode(DIR_MODE))
}

/// Create `dir` and its missing parents, each one created with [`DIR_MODE`] set after `mkdir`
/// (which the umask narrows); directories already there are left as they are. Cheap when
/// `dir` exists, so writers may call it before every file.
pub fn create_dirs(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dirs(parent)?;
    }
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE)),
        // Another writer made it meanwhile, and set its mode.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(error) => Err(error),
    }
}

/// Set [`FILE_MODE`] on a file nightshift wrote, if it exists.
pub fn set_file_mode(path: &Path) -> std::io::Result<()> {
    match std::fs::set_permissions(path, Permissions::from_mode(FILE_MODE)) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Write a new file with [`FILE_MODE`] (refusing to replace one).
pub fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    file.write_all(bytes)
}

/// The exclusive hold on a state directory; released when dropped or when the process ends
/// (however it ends: the kernel drops the lock with the descriptor).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    path: PathBuf,
}

impl StateLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why the state directory could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another nightshift ({holder}) holds {}", dir.display())]
    Held { holder: String, dir: PathBuf },
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Take the state directory for this process: create it, then hold an exclusive `flock` on
/// its lock file, which then records this process's pid. A second daemon on the same
/// directory gets [`LockError::Held`] at once instead of acting beside the first.
pub fn lock(dir: &Path) -> Result<StateLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    create_dir(dir).map_err(io)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(io)?;
    // SAFETY: flock on a descriptor this function owns; no memory is passed.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let holder = match text.trim().parse::<u32>() {
                Ok(pid) => format!("pid {pid}"),
                Err(_) => "a process".to_owned(),
            };
            return Err(LockError::Held {
                holder,
                dir: dir.to_path_buf(),
            });
        }
        return Err(io(error));
    }
    let mut record = || -> std::io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
        file.sync_all()
    };
    record().map_err(io)?;
    Ok(StateLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("var");
        let first = lock(&state).unwrap();
        let error = lock(&state).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "another nightshift (pid {}) holds {}",
                std::process::id(),
                state.display()
            )
        );
        drop(first);
        lock(&state).unwrap();
    }

    #[test]
    fn modes_are_set_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: umask only changes this process's file creation mask; restored below.
        let old = unsafe { libc::umask(0o077) };
        let nested = dir.path().join("a/b");
        let created = create_dir(&nested);
        let file = nested.join("f");
        let written = write_new(&file, b"x");
        unsafe { libc::umask(old) };
        created.unwrap();
        written.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&nested), 0o750);
        assert_eq!(mode(&file), 0o640);
    }
}
