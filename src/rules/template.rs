//! Templates (minijinja) for summaries, notes, probe targets and action arguments, all
//! rendered with the same context: `labels`, `annotations`, `alert`, `probe`, `rule`,
//! `severity`, `incident_id`. Templates are parsed at load and rendered once against the
//! sample context, so a syntax error or an unknown filter is a load error.

use minijinja::Environment;
use serde::Serialize;

/// A template's source, checked at load. Rendering parses again, which keeps the type free of
/// lifetimes; templates are short and render only when a decision is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Template {
    pub source: String,
}

/// The most work one render may do, in minijinja's fuel: one per instruction, one per 64 bytes
/// a template produces. Real templates use a few hundred; without a bound, two nested
/// `range(100000)` loops in a summary ran for hours (and held the rule load that renders it).
/// This stops a runaway template within about 0.1 s and 16 MB.
const FUEL: u64 = 250_000;

/// The settings every nightshift template environment shares: a missing label renders as an
/// empty string, as in Alertmanager's own templates (a typo in a filter or a syntax error is
/// still caught at load), nothing is HTML-escaped, and a render has a bounded budget.
pub(crate) fn base_environment() -> Environment<'static> {
    let mut environment = Environment::new();
    environment.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    environment.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    environment.set_fuel(Some(FUEL));
    environment
}

fn environment() -> Environment<'static> {
    let mut environment = base_environment();
    // Wherever a template is rendered to be recorded or shown (decisions, explain, stored
    // action arguments), a secret appears as its name only. The real value is rendered
    // separately, at the moment an action runs (`redact::render`).
    environment.add_function("secret", |name: String| format!("<secret:{name}>"));
    environment
}

thread_local! {
    static ENVIRONMENT: Environment<'static> = environment();
}

impl Template {
    /// Parse, and render once against `sample`.
    pub fn compile(source: &str, sample: &impl Serialize) -> Result<Template, String> {
        let template = Template {
            source: source.to_owned(),
        };
        check_tags(source)?;
        ENVIRONMENT.with(|environment| {
            environment
                .template_from_str(source)
                .map_err(|error| describe(&error))?;
            Ok::<(), String>(())
        })?;
        template.render(sample)?;
        Ok(template)
    }

    /// Whether the source contains template syntax at all.
    pub fn is_literal(source: &str) -> bool {
        !source.contains("{{") && !source.contains("{%") && !source.contains("{#")
    }

    pub fn render(&self, context: &impl Serialize) -> Result<String, String> {
        if Self::is_literal(&self.source) {
            return Ok(self.source.clone());
        }
        check_tags(&self.source)?;
        let value = minijinja::Value::from(minijinja::value::Serde(context));
        ENVIRONMENT.with(|environment| {
            environment
                .render_str(&self.source, value)
                .map_err(|error| describe(&error))
        })
    }
}

/// The longest `{{ ... }}` or `{% ... %}` tag accepted, in bytes. minijinja limits how deeply
/// brackets and blocks nest, but not a chain such as `1+1+...+1` or `------1`, whose tree it
/// compiles (and drops) by recursion: 8,000 links overflowed a 2 MiB thread (tokio's, where
/// reloads and decisions render) and aborted the daemon. Real tags are under 100 bytes; whole
/// templates may be long, since the text between tags costs nothing.
const MAX_TAG_BYTES: usize = 1024;

/// Refuse a template with a tag longer than [`MAX_TAG_BYTES`], measured from its opening to its
/// closing delimiter (or to the end, if it is not closed), over quoted strings as minijinja's
/// lexer reads them. The content of `{% raw %}` blocks and comments is not a tag.
fn check_tags(source: &str) -> Result<(), String> {
    let bytes = source.as_bytes();
    let mut at = 0;
    while at + 1 < bytes.len() {
        let close: &[u8] = match (bytes[at], bytes[at + 1]) {
            (b'{', b'{') => b"}}",
            (b'{', b'%') => b"%}",
            (b'{', b'#') => b"#}",
            _ => {
                at += 1;
                continue;
            }
        };
        let start = at;
        at += 2;
        let mut quote = None;
        let mut closed = false;
        while at < bytes.len() {
            match (quote, bytes[at]) {
                (Some(_), b'\\') => at += 1,
                (Some(open), byte) if byte == open => quote = None,
                (Some(_), _) => {}
                (None, _) if bytes[at..].starts_with(close) => {
                    closed = true;
                    break;
                }
                (None, byte @ (b'"' | b'\'')) if close != b"#}" => quote = Some(byte),
                (None, _) => {}
            }
            at += 1;
        }
        let inner_end = at.min(bytes.len());
        at = if closed {
            at + close.len()
        } else {
            bytes.len()
        };
        if close == b"#}" {
            continue;
        }
        if at - start > MAX_TAG_BYTES {
            return Err(format!(
                "template error: a tag of {} bytes at byte {start}; at most {MAX_TAG_BYTES} are \
                 accepted (split the expression with {{% set %}})",
                at - start
            ));
        }
        let inner = source[start + 2..inner_end]
            .trim_matches(|c: char| c.is_whitespace() || matches!(c, '-' | '+' | '~'));
        if closed && close == b"%}" && inner == "raw" {
            // Up to the end of the raw block: what it holds is text, whatever it looks like.
            at = source[at..]
                .find("endraw")
                .map_or(bytes.len(), |offset| at + offset);
        }
    }
    Ok(())
}

fn describe(error: &minijinja::Error) -> String {
    let mut message = format!("template error: {}", error.kind());
    if let Some(detail) = error.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_with_the_decision_context() {
        let context = json!({"labels": {"alertname": "A", "namespace": "vastai"}, "probe": {"s": {"indicator": "major"}}});
        let template = Template::compile(
            "{{ labels.alertname }} in {{ labels.namespace }}: status page says {{ probe.s.indicator }}",
            &context,
        )
        .unwrap();
        assert_eq!(
            template.render(&context).unwrap(),
            "A in vastai: status page says major"
        );
        // A missing label renders empty.
        let template = Template::compile("team={{ labels.team }}", &context).unwrap();
        assert_eq!(template.render(&context).unwrap(), "team=");
        assert_eq!(
            Template::compile("plain", &context)
                .unwrap()
                .render(&context)
                .unwrap(),
            "plain"
        );
    }

    #[test]
    fn syntax_errors_and_unknown_filters_fail_at_load() {
        let context = json!({"labels": {}});
        assert!(
            Template::compile("{{ labels.a ", &context)
                .unwrap_err()
                .contains("syntax")
        );
        assert!(
            Template::compile("{{ labels.a | nosuchfilter }}", &context)
                .unwrap_err()
                .contains("filter")
        );
    }
}
