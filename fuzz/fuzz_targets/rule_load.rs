//! A rule file's text, loaded as the only file of a rules directory. Loading never panics, and
//! a file that is refused is refused with errors that each name the file and a line in it.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nightshift::rules::load::{self, LoadOptions};

/// A scratch directory per fuzzing process, with the repository's payloads beside the file so
/// that `[[test]]` cases refer to them as they do from `rules/`.
fn rule_file() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("nightshift-fuzz-rules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let payloads = dir.join("payloads");
        if !payloads.exists() {
            let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules/payloads");
            std::os::unix::fs::symlink(source, payloads).expect("payloads link");
        }
        dir.join("fuzz.toml")
    })
}

/// The daemon loads rules and renders templates on tokio's threads, with 2 MiB stacks; the
/// sanitizer's frames are about twice as large, hence 4 MiB here. A stack overflow aborts the
/// process, which libFuzzer reports as a crash with the input.
const STACK_BYTES: usize = 4 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let text = text.to_owned();
    std::thread::Builder::new()
        .stack_size(STACK_BYTES)
        .spawn(move || load(&text))
        .expect("thread")
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
});

fn load(text: &str) {
    let path = rule_file();
    std::fs::write(path, text).expect("scratch file");
    let Err(errors) = load::load_files(std::slice::from_ref(path), &LoadOptions::default()) else {
        return;
    };
    assert!(!errors.is_empty(), "refused with no error");
    let lines = text.split('\n').count();
    for error in &errors {
        assert_eq!(&error.file, path, "{error}");
        let line = error.line.unwrap_or_else(|| panic!("no line: {error}"));
        assert!(
            (1..=lines).contains(&line),
            "line {line} of {lines}: {error}"
        );
    }
}
