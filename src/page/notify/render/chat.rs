//! render::chat: the status update sent to Slack and generic webhooks, a minijinja template
//! (the default follows the runbook's internal status format) rendered against the page; in
//! Slack text every value the template prints is escaped (`escape::slack`), the template's own
//! text is not. Also config's check that an operator's template compiles and renders.

use serde_json::{Value, json};

use super::sentence::one_line;
use super::summary::{nightshift_link, runbook_link, title, what_was_done};
use crate::config::NotifierKind;
use crate::escape;
use crate::page::notify::pagerduty::{SUMMARY_LIMIT, truncate_chars};
use crate::page::notify::view::{ActionLine, IncidentView, PageView};

/// The runbook's internal status update. Rendered against `status_context`.
pub const DEFAULT_STATUS_TEMPLATE: &str = "\
{{ icon }} {{ severity }} INCIDENT: {{ title }}
Status: {{ status }}
Impact: {{ impact }}
Current action: {{ current_action }}
Next update: {{ next_update }}
Incident commander: {{ incident_commander }}
{%- if links %}
Links: {% for link in links %}{{ link.text }}: {{ link.href }}{% if not loop.last %} | {% endif %}{% endfor %}
{%- endif %}";

/// A chat title, like a PagerDuty summary, is one line a human reads at once.
const TITLE_LIMIT: usize = SUMMARY_LIMIT;

/// Slack refuses incoming-webhook text longer than this.
const SLACK_TEXT_LIMIT: usize = 40_000;

/// The context status templates are rendered against: the fields of the default template,
/// `links` (a list of `{text, href}`), and the whole view under `page`.
pub fn status_context(view: &PageView) -> Value {
    let resolved = is_resolved(view);
    let next_update = if resolved {
        "none (resolved)".to_owned()
    } else if view.respond_within.is_empty() {
        "at the next change".to_owned()
    } else {
        format!("in {}", view.respond_within)
    };
    let links: Vec<Value> = status_links(view)
        .into_iter()
        .map(|(href, text)| json!({"text": text, "href": href}))
        .collect();
    json!({
        "icon": icon(view),
        "severity": view.severity,
        "title": title(view, TITLE_LIMIT),
        "status": response_status(view),
        "impact": impact(view),
        "current_action": what_was_done(view),
        "next_update": next_update,
        "incident_commander": view
            .incident_commander
            .as_deref()
            .filter(|name| !name.trim().is_empty())
            .unwrap_or("on-call (not configured)"),
        "links": links,
        "page": serde_json::to_value(view).unwrap_or(Value::Null),
    })
}

/// The message for a notifier of `kind`: `template` (from config) or the default, rendered
/// against `status_context`. For Slack every value the template prints is escaped
/// (`escape::slack`), so alert data cannot mention `<!channel>` or disguise a link; the
/// template's own text is the operator's and stays as written, links and mentions included,
/// and `| safe` prints a value unescaped. A generic webhook's text is plain: its JSON is the
/// only encoding. A wrong template is an error with minijinja's text, never a panic.
pub fn render_chat(
    kind: NotifierKind,
    template: Option<&str>,
    view: &PageView,
) -> Result<String, String> {
    let source = template.unwrap_or(DEFAULT_STATUS_TEMPLATE);
    let context = minijinja::Value::from(minijinja::value::Serde(status_context(view)));
    chat_environment(kind)
        .render_str(source, context)
        .map_err(|error| describe(&error))
}

/// The status update as Slack text (`render_chat` for a Slack notifier). Escaped for Slack
/// whatever the notifier, so that no caller sends unescaped data to Slack by leaving the kind
/// out.
pub fn render_status(template: Option<&str>, view: &PageView) -> Result<String, String> {
    render_chat(NotifierKind::Slack, template, view)
}

/// Config validation: the template parses and renders against a sample page (an unknown
/// filter or function shows only when rendering).
pub fn check_template(source: &str) -> Result<(), String> {
    let environment = crate::rules::template::base_environment();
    environment
        .template_from_str(source)
        .map_err(|error| describe(&error))?;
    render_status(Some(source), &sample_view()).map(|_| ())
}

/// minijinja's auto-escape mode for Slack text.
const SLACK_ESCAPE: &str = "slack";

/// The template environment for a notifier of `kind`.
fn chat_environment(kind: NotifierKind) -> minijinja::Environment<'static> {
    let mut environment = crate::rules::template::base_environment();
    if kind == NotifierKind::Slack {
        // As auto-escaping, minijinja also keeps a captured block (`{% set %}`) from being
        // escaped twice and routes `| e` here. The formatter sees each value a template
        // prints, from whichever path of the context, but never the template's own text.
        environment
            .set_auto_escape_callback(|_| minijinja::AutoEscape::Custom(SLACK_ESCAPE.into()));
        environment.set_formatter(|out, state, value| match state.auto_escape() {
            minijinja::AutoEscape::Custom(name) if name == SLACK_ESCAPE && !value.is_safe() => out
                .write_str(&escape::slack(&value.to_string()))
                .map_err(minijinja::Error::from),
            _ => minijinja::escape_formatter(out, state, value),
        });
    }
    environment
}

/// A Slack incoming-webhook body.
pub fn slack_body(text: &str) -> Value {
    json!({ "text": truncate_chars(text, SLACK_TEXT_LIMIT) })
}

/// A generic webhook body: the rendered text and the whole page. `event` is `trigger` or
/// `resolve`.
pub fn webhook_body(view: &PageView, text: &str, event: &str) -> Value {
    json!({
        "version": "1",
        "event": event,
        "text": text,
        "page": view,
    })
}

/// minijinja's own text: the kind, the detail and where in the template.
fn describe(error: &minijinja::Error) -> String {
    error.to_string()
}

fn sample_view() -> PageView {
    PageView {
        severity: "P1".to_owned(),
        meaning: "complete outage".to_owned(),
        respond_within: "15m".to_owned(),
        pagerduty_severity: "critical".to_owned(),
        status: "triggered".to_owned(),
        incidents: vec![IncidentView {
            id: "sample".to_owned(),
            summary: "sample incident".to_owned(),
            actions: vec![ActionLine {
                kind: "rollout_restart".to_owned(),
                target: "deployment/ns/name".to_owned(),
                verdict: "run".to_owned(),
                state: "done".to_owned(),
                ..ActionLine::default()
            }],
            ..IncidentView::default()
        }],
        ..PageView::default()
    }
}

fn is_resolved(view: &PageView) -> bool {
    view.status == "resolved"
}

/// The status update's links: nightshift's incident page and the runbook, when known.
fn status_links(view: &PageView) -> Vec<(String, String)> {
    let mut links = Vec::new();
    if let Some(first) = view.incidents.first() {
        if let Some(href) = nightshift_link(view, first) {
            links.push((href, "nightshift incident".to_owned()));
        }
        if let Some(href) = runbook_link(first) {
            links.push((href.to_owned(), "runbook".to_owned()));
        }
    }
    links
}

fn icon(view: &PageView) -> &'static str {
    if is_resolved(view) {
        return "✅";
    }
    match view.severity.as_str() {
        "P1" => "🔴",
        "P2" => "🟠",
        "P3" => "🟡",
        "P4" => "🔵",
        _ => "⚪",
    }
}

/// RESOLVED; MITIGATING while an action runs or waits for its verdict; INVESTIGATING when
/// nothing was done, an action failed or its outcome is unknown, or what was done did not help.
fn response_status(view: &PageView) -> &'static str {
    if is_resolved(view) {
        return "RESOLVED";
    }
    let mut mitigating = false;
    for action in view.incidents.iter().flat_map(|incident| &incident.actions) {
        if !matches!(action.verdict.as_str(), "run" | "hold") {
            continue;
        }
        match action.state.as_str() {
            "failed" | "uncertain" => return "INVESTIGATING",
            "started" | "planned" => mitigating = true,
            "done" if action.verified.as_deref() != Some("did_not_help") => mitigating = true,
            _ => {}
        }
    }
    if mitigating {
        "MITIGATING"
    } else {
        "INVESTIGATING"
    }
}

/// What the severity means, and what the alert says the impact is.
fn impact(view: &PageView) -> String {
    let described = view.incidents.first().and_then(|incident| {
        ["description", "impact"]
            .iter()
            .filter_map(|name| incident.annotations.get(*name))
            .map(|text| one_line(text))
            .find(|text| !text.is_empty())
    });
    match (view.meaning.trim(), described) {
        ("", None) => "unknown".to_owned(),
        ("", Some(described)) => described,
        (meaning, None) => meaning.to_owned(),
        (meaning, Some(described)) => format!("{meaning}: {described}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::notify::render::fixtures::{hostile_view, restart, skipped, vastai_view};

    #[test]
    fn the_default_status_update_follows_the_runbook() {
        let view = vastai_view();
        assert_eq!(
            render_status(None, &view).unwrap(),
            "🔴 P1 INCIDENT: Vast.ai API answers 5xx to vastai/vastai-integration\n\
             Status: INVESTIGATING\n\
             Impact: complete outage: More than 5% of Vast.ai API calls answer 5xx\n\
             Current action: restarted deployment vastai/vastai-integration at 03:12:05; still failing after 10m\n\
             Next update: in 15m\n\
             Incident commander: on-call (not configured)\n\
             Links: nightshift incident: https://nightshift.example.com/api/v1/incidents/01JDXK5 | runbook: https://runbooks.example.com/vastai"
        );
    }

    fn status_lines(view: &PageView) -> Vec<String> {
        render_status(None, view)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_status_follows_what_the_actions_did() {
        let mut view = vastai_view();
        view.incidents[0].actions = vec![restart(None)];
        view.incident_commander = Some("Dana (platform)".into());
        view.severity = "P2".into();
        let lines = status_lines(&view);
        assert!(lines[0].starts_with("🟠 P2 INCIDENT: "), "{lines:?}");
        assert_eq!(lines[1], "Status: MITIGATING");
        assert_eq!(lines[5], "Incident commander: Dana (platform)");

        // A failed action is a human's turn even while another is being verified.
        view.incidents[0].actions.push(ActionLine {
            state: "uncertain".into(),
            ..restart(None)
        });
        assert_eq!(status_lines(&view)[1], "Status: INVESTIGATING");

        // Only skips: nothing is being done.
        view.incidents[0].actions = vec![skipped("cooldown", "", Some(3))];
        assert_eq!(status_lines(&view)[1], "Status: INVESTIGATING");

        view.status = "resolved".into();
        let lines = status_lines(&view);
        assert!(lines[0].starts_with("✅ P2 INCIDENT: "), "{lines:?}");
        assert_eq!(lines[1], "Status: RESOLVED");
        assert_eq!(lines[4], "Next update: none (resolved)");

        // No links known: no links line.
        view.external_url = None;
        view.incidents[0].annotations.clear();
        let lines = status_lines(&view);
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[2], "Impact: complete outage");
    }

    #[test]
    fn custom_templates_reach_the_page_and_wrong_ones_are_errors() {
        let view = vastai_view();
        assert_eq!(
            render_status(
                Some(
                    "{{ page.incidents[0].labels.namespace }}/{{ status }}/{{ page.nothing.here }}"
                ),
                &view
            )
            .unwrap(),
            "vastai/INVESTIGATING/"
        );
        let broken = render_status(Some("{{ title "), &view).unwrap_err();
        assert!(broken.contains("syntax"), "{broken}");
        assert!(check_template("{{ title ").unwrap_err().contains("syntax"));
        assert!(
            check_template("{{ title | nosuchfilter }}")
                .unwrap_err()
                .contains("filter")
        );
        assert_eq!(check_template(DEFAULT_STATUS_TEMPLATE), Ok(()));
        // A runtime error (a loop over a number) is an error, not a panic.
        assert!(render_status(Some("{% for x in 3 %}{% endfor %}"), &view).is_err());
    }

    #[test]
    fn slack_text_escapes_alert_data_but_not_the_template() {
        let view = hostile_view();
        let text = render_chat(NotifierKind::Slack, None, &view).unwrap();
        for expected in [
            "🔴 P1 INCIDENT: db down &lt;!channel&gt;\n",
            "Impact: complete outage: &lt;https://evil|Acknowledge&gt; &amp; more\n",
            "runbook: https://evil/?a=1&amp;b=&lt;@U1&gt;",
        ] {
            assert!(text.contains(expected), "{expected:?} not in:\n{text}");
        }
        assert!(!text.contains(['<', '>']), "{text}");
        assert_eq!(render_status(None, &view).unwrap(), text);

        // A user template: its own mention and link stay, every value is escaped, whatever
        // path it was read from, unless the operator marks it safe.
        for (template, expected) in [
            (
                "<!here> {{ page.incidents[0].labels.instance }} \
                 <{{ links[0].href }}|{{ links[0].text }}>",
                "<!here> &lt;!channel&gt; \
                 <https://nightshift.example.com/api/v1/incidents/01JDXK5|nightshift incident>",
            ),
            (
                "{% for name, value in page.incidents[0].annotations|items %}{{ name }}={{ value }};{% endfor %}",
                "description=&lt;https://evil|Acknowledge&gt; &amp; more;\
                 runbook_url=https://evil/?a=1&amp;b=&lt;@U1&gt;;",
            ),
            (
                "{{ page.incidents[0].labels.instance ~ '>' }}",
                "&lt;!channel&gt;&gt;",
            ),
            (
                "{{ page.incidents[0].labels.instance | safe }}",
                "<!channel>",
            ),
            (
                "{{ page.incidents[0].labels.instance | e }}",
                "&lt;!channel&gt;",
            ),
            (
                "{% set said %}<{{ title }}>{% endset %}{{ said }}",
                "<db down &lt;!channel&gt;>",
            ),
            ("{{ nothing }}|{{ none }}|{{ 3 }}", "|None|3"),
        ] {
            assert_eq!(
                render_chat(NotifierKind::Slack, Some(template), &view).as_deref(),
                Ok(expected),
                "{template}"
            );
        }
        let json = render_chat(
            NotifierKind::Slack,
            Some("{{ page.incidents[0].labels | tojson }}"),
            &view,
        )
        .unwrap();
        assert!(!json.contains(['<', '>']), "{json}");

        // A generic webhook's text is plain: JSON is its only encoding.
        let plain = render_chat(NotifierKind::Webhook, None, &view).unwrap();
        assert!(plain.contains("INCIDENT: db down <!channel>\n"), "{plain}");
        assert!(
            plain.contains("<https://evil|Acknowledge> & more"),
            "{plain}"
        );
    }

    #[test]
    fn chat_bodies() {
        let text = "é".repeat(SLACK_TEXT_LIMIT + 10);
        let body = slack_body(&text);
        assert_eq!(
            body["text"].as_str().map(|text| text.chars().count()),
            Some(SLACK_TEXT_LIMIT)
        );
        assert_eq!(slack_body("hi"), json!({"text": "hi"}));
        let view = vastai_view();
        let body = webhook_body(&view, "hello", "resolve");
        assert_eq!(body["version"], "1");
        assert_eq!(body["event"], "resolve");
        assert_eq!(body["text"], "hello");
        assert_eq!(body["page"]["incidents"][0]["id"], "01JDXK5");
        assert_eq!(body["page"]["dedup_key"], "73042dc5");
    }
}
