//! The webhook body, as it arrives: any bytes. A body that parses makes sense.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nightshift::ingest::webhook;

fuzz_target!(|body: &[u8]| {
    let Ok(notification) = webhook::parse(body) else {
        return;
    };
    for alert in &notification.alerts {
        assert!(alert.fingerprint.len() <= 64, "{}", alert.fingerprint);
        assert!(
            alert.fingerprint.bytes().all(|b| b.is_ascii_hexdigit()),
            "{}",
            alert.fingerprint
        );
        // Go's zero time, and anything before 1970, means "not ended".
        assert!(alert.ends_at.is_none_or(|time| time.timestamp() > 0));
    }
    // What is stored and shown is serialized again.
    serde_json::to_vec(&notification).expect("a notification serializes");
});
