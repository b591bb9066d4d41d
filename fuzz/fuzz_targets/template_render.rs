//! A template's source, compiled (which renders it once against the sample) and rendered
//! against a bounded context. Neither panics; libFuzzer's -timeout and -rss_limit_mb catch a
//! render that does not end or grows without bound.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nightshift::rules::template::Template;
use serde_json::{Value, json};

fn context() -> &'static Value {
    static CONTEXT: OnceLock<Value> = OnceLock::new();
    CONTEXT.get_or_init(|| {
        json!({
            "labels": {"alertname": "VastaiApiUnreachable", "namespace": "vastai", "team": "gpu"},
            "annotations": {"summary": "the API is down", "description": "5xx everywhere"},
            "alert": {"status": "firing", "fingerprint": "5bf9c395693611e8", "age_seconds": 120},
            "probe": {"status": {"ok": true, "indicator": "major", "items": [1, 2, 3]}},
            "rule": "vastai-api-unreachable",
            "severity": "P1",
            "incident_id": "5bf9c395693611e8-20261128T030000Z",
        })
    })
}

/// The daemon renders templates on tokio's threads, with 2 MiB stacks; the sanitizer's frames
/// are about twice as large, hence 4 MiB here. A stack overflow aborts the process, which
/// libFuzzer reports as a crash with the input.
const STACK_BYTES: usize = 4 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let source = source.to_owned();
    std::thread::Builder::new()
        .stack_size(STACK_BYTES)
        .spawn(move || {
            if let Ok(template) = Template::compile(&source, context()) {
                let _ = template.render(context());
            }
        })
        .expect("thread")
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
});
