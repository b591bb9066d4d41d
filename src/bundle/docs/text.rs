//! text: helpers the document tests (and the report's) use to look inside rendered Markdown.

pub(crate) fn position(text: &str, needle: &str) -> usize {
    text.find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in:\n{text}"))
}

pub(crate) fn assert_in_order(text: &str, needles: &[&str]) {
    let positions: Vec<usize> = needles
        .iter()
        .map(|needle| position(text, needle))
        .collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "{needles:?} out of order in:\n{text}"
    );
}

/// The lines outside fenced blocks where an unescaped `[` or `<` would let the hostile data
/// in them (which always says "evil") make a link, an image, an autolink or HTML.
pub(crate) fn live_markup(text: &str) -> Vec<&str> {
    let mut fenced = false;
    let mut found = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.contains("evil") {
            continue;
        }
        let mut previous = ' ';
        for character in line.chars() {
            if matches!(character, '[' | '<') && previous != '\\' {
                found.push(line);
                break;
            }
            previous = character;
        }
    }
    found
}

/// The text of the section that starts with `heading`, up to the next `## `.
pub(crate) fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = position(text, heading);
    let rest = &text[start + heading.len()..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    &rest[..end]
}
