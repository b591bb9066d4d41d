//! Bundle archives on disk: `tar.gz`, written to a temporary name in the same directory,
//! fsync'd and renamed, so a reader (or a crash) never sees a partial archive under the
//! final name. Leftover temporary files from a crash are removed at start.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The suffix of an archive being written.
const PARTIAL: &str = ".partial";

/// Write `files` (path inside the archive, bytes) as `path`, atomically; returns its size.
pub fn write_atomic(path: &Path, files: &[(String, Vec<u8>)], mtime: u64) -> std::io::Result<u64> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("an archive path needs a directory"))?;
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| std::io::Error::other("an archive path needs a file name"))?;
    let temporary = dir.join(format!("{name}.{}{PARTIAL}", std::process::id()));
    let result = (|| {
        let file = std::fs::File::create(&temporary)?;
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
}
