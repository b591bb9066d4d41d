//! Bundle archives on disk: `tar.gz`, written to a temporary name in the same directory,
//! fsync'd and renamed, so a reader (or a crash) never sees a partial archive under the
//! final name. Leftover temporary files from a crash are removed at start. Modes are set
//! explicitly, whatever the process's umask: directories [`DIR_MODE`], archives
//! [`FILE_MODE`], so the service's group (operators) can read bundles and nobody else can.
//!
//! Every entry lives under one top folder named after the archive (`<incident>.tar.gz` holds
//! `<incident>/manifest.json`, ...), so unpacking a bundle makes one folder, not a heap of
//! files. Readers see names inside that folder, and read archives written before it existed
//! (entries at the top level) the same way.

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
        let folder = folder_name(name);
        // The folder's own entry comes first: it gives the folder a mode when unpacked, and
        // tells `read` the archive has one.
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(0o755);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Directory);
        builder.append_data(&mut header, format!("{folder}/"), std::io::empty())?;
        for (inner, bytes) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(mtime);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut header, format!("{folder}/{inner}"), bytes.as_slice())?;
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

/// The top folder of the archive named `file_name`: the name without `.tar.gz` (the
/// incident's id, already safe for a path), with anything else made safe all the same.
fn folder_name(file_name: &str) -> String {
    let stem = file_name.strip_suffix(".tar.gz").unwrap_or(file_name);
    let safe: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() || safe.chars().all(|c| c == '.') {
        "bundle".to_owned()
    } else {
        safe
    }
}

/// Every file of an archive, in order, named inside its top folder (`manifest.json`, not
/// `<incident>/manifest.json`); archives written before the folder read the same.
pub fn read(path: &Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let file = std::fs::File::open(path)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut files = Vec::new();
    // Set by a leading directory entry: the folder every other entry is under.
    let mut folder: Option<String> = None;
    for (index, entry) in archive.entries()?.enumerate() {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if index == 0 && entry.header().entry_type() == tar::EntryType::Directory {
            folder = Some(format!("{}/", name.trim_end_matches('/')));
            continue;
        }
        let name = match folder.as_deref().and_then(|f| name.strip_prefix(f)) {
            Some(inner) => inner.to_owned(),
            None => name,
        };
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
    fn entries_live_in_one_folder_named_after_the_incident() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir
            .path()
            .join("2026-11-28/c626d2275ab0f610-20260822T140311.482Z.tar.gz");
        let files = vec![
            ("manifest.json".to_owned(), b"{}".to_vec()),
            ("collectors/logs/app.log".to_owned(), b"line".to_vec()),
        ];
        write_atomic(&path, &files, 0).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "c626d2275ab0f610-20260822T140311.482Z/",
                "c626d2275ab0f610-20260822T140311.482Z/manifest.json",
                "c626d2275ab0f610-20260822T140311.482Z/collectors/logs/app.log",
            ]
        );
        assert_eq!(read(&path).unwrap(), files);
    }

    #[test]
    fn archives_from_before_the_folder_are_read_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.tar.gz");
        let file = std::fs::File::create(&path).unwrap();
        let encoder = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        let mut builder = tar::Builder::new(encoder);
        for (name, bytes) in [("manifest.json", &b"{}"[..]), ("collectors/a/b.log", b"x")] {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut header, name, bytes).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap();
        assert_eq!(
            read_one(&path, "manifest.json").unwrap(),
            Some(b"{}".to_vec())
        );
        assert_eq!(read(&path).unwrap()[1].0, "collectors/a/b.log");
    }

    #[test]
    fn folder_names_are_safe_for_a_path() {
        assert_eq!(folder_name("abc-1.tar.gz"), "abc-1");
        assert_eq!(folder_name("a/../b c.tar.gz"), "a_.._b_c");
        assert_eq!(folder_name("...tar.gz"), "bundle");
        assert_eq!(folder_name(".tar.gz"), "bundle");
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
