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

/// The settings every nightshift template environment shares: a missing label renders as an
/// empty string, as in Alertmanager's own templates (a typo in a filter or a syntax error is
/// still caught at load), and nothing is HTML-escaped.
pub(crate) fn base_environment() -> Environment<'static> {
    let mut environment = Environment::new();
    environment.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    environment.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
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
        !source.contains("{{") && !source.contains("{%")
    }

    pub fn render(&self, context: &impl Serialize) -> Result<String, String> {
        if Self::is_literal(&self.source) {
            return Ok(self.source.clone());
        }
        let value = minijinja::Value::from(minijinja::value::Serde(context));
        ENVIRONMENT.with(|environment| {
            environment
                .render_str(&self.source, value)
                .map_err(|error| describe(&error))
        })
    }
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
