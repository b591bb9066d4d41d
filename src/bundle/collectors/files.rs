//! files: the files of one collector, kept within its `max_bytes` as they are added. While
//! over, the largest file (the last one among equals) is cut: logs keep their end, everything
//! else its start, never inside a UTF-8 character (a cut a few bytes short beats evidence that
//! is no longer text).

use crate::bundle::request::CollectedFile;

/// Which end of a file to keep when it is cut: the start of a document, the end of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keep {
    Head,
    Tail,
}

/// A file's size before it was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Original {
    /// Not cut.
    Whole,
    Bytes(u64),
    /// More than was read (reading stopped at the cap).
    Unknown,
}

struct Entry {
    path: String,
    bytes: Vec<u8>,
    keep: Keep,
    original: Original,
}

/// The files of one collector, kept within `max_bytes` as they are added.
pub(super) struct Files {
    max_bytes: u64,
    entries: Vec<Entry>,
}

impl Files {
    pub(super) fn new(max_bytes: u64) -> Files {
        Files {
            max_bytes,
            entries: Vec::new(),
        }
    }

    pub(super) fn add(&mut self, path: impl Into<String>, bytes: Vec<u8>, keep: Keep) {
        self.add_entry(path.into(), bytes, keep, Original::Whole);
    }

    /// Add a file that is already cut: `original` is its whole size (`None`: unknown).
    pub(super) fn add_cut(
        &mut self,
        path: impl Into<String>,
        bytes: Vec<u8>,
        keep: Keep,
        original: Option<u64>,
    ) {
        let original = original.map_or(Original::Unknown, Original::Bytes);
        self.add_entry(path.into(), bytes, keep, original);
    }

    fn add_entry(&mut self, path: String, bytes: Vec<u8>, keep: Keep, original: Original) {
        self.entries.push(Entry {
            path,
            bytes,
            keep,
            original,
        });
        self.enforce();
    }

    /// How many files there are.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn total(&self) -> u64 {
        self.entries
            .iter()
            .map(|entry| entry.bytes.len() as u64)
            .sum()
    }

    /// Room left under the cap.
    pub(super) fn room(&self) -> u64 {
        self.max_bytes.saturating_sub(self.total())
    }

    /// While over the cap, cut the largest file (the last among equals).
    fn enforce(&mut self) {
        let mut total = self.total();
        while total > self.max_bytes {
            // `max_by_key` returns the last of equal maxima.
            let Some(largest) = self
                .entries
                .iter_mut()
                .max_by_key(|entry| entry.bytes.len())
            else {
                return;
            };
            let length = largest.bytes.len();
            if length == 0 {
                return;
            }
            let cut = usize::try_from(total - self.max_bytes)
                .unwrap_or(usize::MAX)
                .min(length);
            if largest.original == Original::Whole {
                largest.original = Original::Bytes(length as u64);
            }
            let cut = match largest.keep {
                Keep::Head => {
                    let end = char_boundary_at_or_before(&largest.bytes, length - cut);
                    largest.bytes.truncate(end);
                    length - end
                }
                Keep::Tail => {
                    let start = char_boundary_at_or_after(&largest.bytes, cut);
                    largest.bytes.drain(..start);
                    start
                }
            };
            total -= cut as u64;
        }
    }

    /// What was cut, in one line; `None` when nothing was.
    pub(super) fn cut_summary(&self) -> Option<String> {
        let cuts: Vec<String> = self
            .entries
            .iter()
            .filter_map(|entry| {
                let end = match entry.keep {
                    Keep::Head => "first",
                    Keep::Tail => "last",
                };
                let kept = entry.bytes.len();
                match entry.original {
                    Original::Whole => None,
                    Original::Bytes(original) => Some(format!(
                        "{} kept the {end} {kept} of {original} bytes",
                        entry.path
                    )),
                    Original::Unknown => Some(format!(
                        "{} kept the {end} {kept} bytes (more were not read)",
                        entry.path
                    )),
                }
            })
            .collect();
        if cuts.is_empty() {
            return None;
        }
        const SHOWN: usize = 5;
        let mut text = format!("output cut to max_bytes {}: ", self.max_bytes);
        text.push_str(&cuts[..cuts.len().min(SHOWN)].join(", "));
        if cuts.len() > SHOWN {
            text.push_str(&format!(" and {} more files", cuts.len() - SHOWN));
        }
        Some(text)
    }

    pub(super) fn into_files(self) -> Vec<CollectedFile> {
        self.entries
            .into_iter()
            .map(|entry| CollectedFile {
                path: entry.path,
                bytes: entry.bytes.into(),
            })
            .collect()
    }
}

/// A UTF-8 character is at most this many bytes: a lead byte and three continuations.
const MAX_CONTINUATIONS: usize = 3;

fn is_continuation(byte: u8) -> bool {
    byte & 0b1100_0000 == 0b1000_0000
}

/// Where to end bytes cut at `index` so that no character is split: `index`, or the start of
/// the character it falls inside. Bytes that are not UTF-8 there are cut at `index`.
pub(super) fn char_boundary_at_or_before(bytes: &[u8], index: usize) -> usize {
    if index >= bytes.len() {
        return bytes.len();
    }
    (0..=MAX_CONTINUATIONS)
        .map_while(|back| index.checked_sub(back))
        .find(|&at| !is_continuation(bytes[at]))
        .unwrap_or(index)
}

/// Where to start bytes cut at `index` so that no character is split: `index`, or the end of
/// the character it falls inside. Bytes that are not UTF-8 there are cut at `index`.
pub(super) fn char_boundary_at_or_after(bytes: &[u8], index: usize) -> usize {
    (0..=MAX_CONTINUATIONS)
        .map(|forward| index + forward)
        .find(|&at| at >= bytes.len() || !is_continuation(bytes[at]))
        .unwrap_or(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(files: &Files) -> Vec<(String, usize)> {
        files
            .entries
            .iter()
            .map(|entry| (entry.path.clone(), entry.bytes.len()))
            .collect()
    }

    #[test]
    fn the_cap_cuts_the_largest_file_keeping_the_right_end() {
        let mut files = Files::new(100);
        files.add("a.json", vec![b'a'; 30], Keep::Head);
        files.add("b.log", b"0123456789".repeat(7), Keep::Tail);
        assert_eq!(files.total(), 100);
        assert_eq!(files.cut_summary(), None);
        // 30 + 70 + 40 = 140: the log (the largest) gives up 40 bytes from its start.
        files.add("c.json", vec![b'c'; 40], Keep::Head);
        assert_eq!(
            sizes(&files),
            vec![
                ("a.json".to_owned(), 30),
                ("b.log".to_owned(), 30),
                ("c.json".to_owned(), 40)
            ]
        );
        assert_eq!(files.entries[1].bytes, b"0123456789".repeat(3));
        assert_eq!(
            files.cut_summary().unwrap(),
            "output cut to max_bytes 100: b.log kept the last 30 of 70 bytes"
        );
        // Another 60 (160): d.txt, now the largest, gives up 60 from its end.
        files.add("d.txt", vec![b'd'; 60], Keep::Head);
        assert_eq!(files.total(), 100);
        assert_eq!(files.entries[3].bytes.len(), 0);
        // Equal sizes: the last one is cut.
        let mut files = Files::new(50);
        files.add("e", vec![b'e'; 30], Keep::Head);
        files.add("f", vec![b'f'; 30], Keep::Head);
        assert_eq!(
            sizes(&files),
            vec![("e".to_owned(), 30), ("f".to_owned(), 20)]
        );
    }

    #[test]
    fn cuts_never_split_a_character() {
        // 10 bytes: a 3-byte, a 4-byte and a 2-byte character, and a newline.
        let text = "€𝄞é\n".repeat(10);
        for max_bytes in 40..50 {
            for keep in [Keep::Head, Keep::Tail] {
                let mut files = Files::new(max_bytes);
                files.add("a", text.clone().into_bytes(), keep);
                let kept = &files.entries[0].bytes;
                assert!(files.total() <= max_bytes);
                assert!(kept.len() as u64 + 3 >= max_bytes, "{max_bytes} {keep:?}");
                let kept = std::str::from_utf8(kept)
                    .unwrap_or_else(|error| panic!("{max_bytes} {keep:?}: {error}"));
                match keep {
                    Keep::Head => assert!(text.starts_with(kept)),
                    Keep::Tail => assert!(text.ends_with(kept)),
                }
            }
        }
        // Bytes that are not UTF-8 are cut where the cap says.
        let mut files = Files::new(5);
        files.add("b", vec![0x80; 9], Keep::Tail);
        assert_eq!(files.entries[0].bytes.len(), 5);
        assert_eq!(char_boundary_at_or_before(&[0xe2, 0x82, 0xac], 2), 0);
        assert_eq!(char_boundary_at_or_after(&[0xe2, 0x82, 0xac], 1), 3);
        assert_eq!(char_boundary_at_or_after(&[0xe2, 0x82, 0xac], 0), 0);
    }

    #[test]
    fn the_cap_may_empty_files_but_never_exceeds() {
        let mut files = Files::new(0);
        files.add("a", vec![1; 10], Keep::Head);
        files.add_cut("b", vec![2; 5], Keep::Tail, None);
        assert_eq!(files.total(), 0);
        let summary = files.cut_summary().unwrap();
        assert!(
            summary.contains("a kept the first 0 of 10 bytes"),
            "{summary}"
        );
        assert!(
            summary.contains("b kept the last 0 bytes (more were not read)"),
            "{summary}"
        );
    }
}
