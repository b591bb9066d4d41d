//! Rejected webhook bodies, kept in `<state dir>/rejected/` for forensics. Bounded: only the
//! newest `store.rejected_keep` files stay. Nothing else about the daemon changes.

use std::path::{Path, PathBuf};

use crate::clock::{Millis, millis_to_datetime};

pub const DIRECTORY: &str = "rejected";

/// Write one rejected body and drop the oldest beyond `keep`. Returns the file written.
pub fn keep(
    state_dir: &Path,
    received_at: Millis,
    reason: &str,
    body: &[u8],
    keep: usize,
) -> std::io::Result<PathBuf> {
    let dir = state_dir.join(DIRECTORY);
    crate::state_dir::create_dir(&dir)?;
    let stamp = millis_to_datetime(received_at).format("%Y%m%dT%H%M%S%.3fZ");
    let mut path = dir.join(format!("{stamp}-{reason}.body"));
    let mut counter = 1;
    while path.exists() {
        path = dir.join(format!("{stamp}-{reason}-{counter}.body"));
        counter += 1;
    }
    crate::state_dir::write_new(&path, body)?;
    prune(&dir, keep)?;
    Ok(path)
}

fn prune(dir: &Path, keep: usize) -> std::io::Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "body"))
        .collect();
    if files.len() <= keep {
        return Ok(());
    }
    // Names start with the UTC receipt time, so name order is age order.
    files.sort();
    for old in &files[..files.len() - keep] {
        std::fs::remove_file(old)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_newest_bodies_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5 {
            keep(
                dir.path(),
                1_700_000_000_000 + i * 1000,
                "invalid_json",
                b"{",
                3,
            )
            .unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join(DIRECTORY))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3);
        assert!(names[0].starts_with("20231114T221322"), "{names:?}");
    }
}
