//! One matcher, as written in a rule file. What parses prints as something that parses back
//! to it, and matching a label set never panics.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use nightshift::rules::matcher;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first line is the matcher; the rest are label values to try it on.
    let mut lines = text.split('\n');
    let source = lines.next().unwrap_or_default();
    let Ok(parsed) = matcher::parse(source) else {
        return;
    };
    let printed = parsed.to_string();
    assert_eq!(
        matcher::parse(&printed).as_ref(),
        Ok(&parsed),
        "{source:?} printed as {printed:?}"
    );
    let mut labels = BTreeMap::new();
    let _ = parsed.matches(&labels);
    for value in lines {
        labels.insert(parsed.name.clone(), value.to_owned());
        let _ = parsed.matches(&labels);
    }
});
