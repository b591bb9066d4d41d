//! Bundle archives on disk: `tar.gz`, written to a temporary name in the same directory,
//! fsync'd and renamed, so a reader (or a crash) never sees a partial archive under the
//! final name. Leftover temporary files from a crash are removed at start. Modes are set
//! explicitly, whatever the process's umask: directories [`DIR_MODE`], archives
//! [`FILE_MODE`], so the service's group (operators) can read bundles and nobody else can.

use std::fs::{OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The suffix of an archive being written.
const PARTIAL: &str = ".partial";
/// The mode of the bundles directory and of the directories under it.
pub const DIR_MODE: u32 = crate::state_dir::DIR_MODE;
/// The mode of an archive.
pub const FILE_MODE: u32 = crate::state_dir::FILE_MODE;

/// Create the bundles directory if it is missing, and give it [`DIR_MODE`] even if it was
/// there (an older version, or another umask, may have left it open to everyone).
pub fn create_root(root: &Path) -> std::io::Result<()> {
    crate::state_dir::create_dir(root)
}

/// Write `files` (path inside the archive, bytes) as `path`, atomically; returns its size.
pub fn write_atomic(path: &Path, files: &[(String, Vec<u8>)], mtime: u64) -> std::io::Result<u64> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("an archive path needs a directory"))?;
    crate::state_dir::create_dirs(dir)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| std::io::Error::other("an archive path needs a file name"))?;
    let temporary = dir.join(format!("{name}.{}{PARTIAL}", std::process::id()));
    let result = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&temporary)?;
        // The umask narrowed the mode at creation; a file left by a crash had its own.
        file.set_permissions(Permissions::from_mode(FILE_MODE))?;
        // The fastest level: in a storm thousands of bundles are owed at once, and on JSON,
        // logs and Markdown level 1 costs a little size for a fraction of level 6's CPU.
        let encoder = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        let mut builder = tar::Builder::new(encoder);
        for (inner, bytes) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(mtime);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut header, inner, bytes.as_slice())?;
        }
        let encoder = builder.into_inner()?;
        let mut file = encoder.finish()?;
        file.flush()?;
        file.sync_all()?;
        Ok::<_, std::io::Error>(())
    })();
    if let Err(error) = result {
        let _ = std::fs::remove_file(&temporary);
        return Err(error);
    }
    std::fs::rename(&temporary, path)?;
    // The rename is durable once the directory is.
    std::fs::File::open(dir)?.sync_all()?;
    Ok(std::fs::metadata(path)?.len())
}

/// Every file of an archive, in order.
pub fn read(path: &Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let file = std::fs::File::open(path)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut files = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        files.push((name, bytes));
    }
    Ok(files)
}

/// One file of an archive, if it is there.
pub fn read_one(path: &Path, inner: &str) -> std::io::Result<Option<Vec<u8>>> {
    Ok(read(path)?
        .into_iter()
        .find(|(name, _)| name == inner)
        .map(|(_, bytes)| bytes))
}

/// Remove archives left half-written by a crash, under `root`; returns what was removed.
pub fn remove_partials(root: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(days) = std::fs::read_dir(root) else {
        return removed;
    };
    for day in days.flatten() {
        let Ok(entries) = std::fs::read_dir(day.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(PARTIAL))
                && std::fs::remove_file(&path).is_ok()
            {
                removed.push(path);
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_is_written_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2026-11-28/abc.tar.gz");
        let files = vec![
            ("manifest.json".to_owned(), b"{}".to_vec()),
            (
                "collectors/logs/pod/app.log".to_owned(),
                vec![b'x'; 100_000],
            ),
        ];
        let size = write_atomic(&path, &files, 1_764_298_800).unwrap();
        assert!(size > 0 && size < 100_000, "{size}: compressed");
        assert_eq!(read(&path).unwrap(), files);
        assert_eq!(
            read_one(&path, "manifest.json").unwrap(),
            Some(b"{}".to_vec())
        );
        // Rewriting replaces it whole.
        write_atomic(&path, &files[..1], 1_764_298_800).unwrap();
        assert_eq!(read(&path).unwrap().len(), 1);
        // Nothing but the archive is left in the directory.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn partial_archives_left_by_a_crash_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let day = dir.path().join("2026-11-28");
        std::fs::create_dir_all(&day).unwrap();
        std::fs::write(day.join("abc.tar.gz.4242.partial"), b"half").unwrap();
        std::fs::write(day.join("def.tar.gz"), b"whole").unwrap();
        let removed = remove_partials(dir.path());
        assert_eq!(removed.len(), 1);
        assert!(day.join("def.tar.gz").exists());
        assert!(!day.join("abc.tar.gz.4242.partial").exists());
    }

    #[test]
    fn modes_are_set_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("bundles");
        let path = root.join("2026-11-28/abc.tar.gz");
        let files = vec![("manifest.json".to_owned(), b"{}".to_vec())];
        // SAFETY: umask only changes this process's file creation mask; restored below.
        let old = unsafe { libc::umask(0o077) };
        let written = write_atomic(&path, &files, 0);
        unsafe { libc::umask(old) };
        written.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o750);
        assert_eq!(mode(&root.join("2026-11-28")), 0o750);
        assert_eq!(mode(&path), 0o640);
        // An existing root open to everyone is narrowed; the state directory is not touched.
        std::fs::set_permissions(&root, Permissions::from_mode(0o777)).unwrap();
        let state_mode = mode(dir.path());
        create_root(&root).unwrap();
        assert_eq!(mode(&root), 0o750);
        assert_eq!(mode(dir.path()), state_mode);
    }
}
