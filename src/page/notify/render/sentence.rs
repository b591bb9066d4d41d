//! render::sentence: one human sentence about an action, taken or skipped, with whether it
//! helped; short enough to read on a phone, whatever the action's detail or target.

use crate::page::notify::pagerduty::truncate_chars;
use crate::page::notify::view::ActionLine;

/// A sentence about one action is read on a phone: keep it to this many characters.
const SENTENCE_LIMIT: usize = 300;
/// A target longer than this (a templated exec target, say) is cut in sentences.
const TARGET_LIMIT: usize = 160;

/// One human sentence about an action, taken or skipped, with whether it helped.
pub fn action_sentence(action: &ActionLine) -> String {
    sentence(action, true)
}

pub(super) fn sentence(action: &ActionLine, with_verify: bool) -> String {
    let kind = short_kind(&action.kind);
    let (past, infinitive) = verbs(kind);
    let target = display_target(&action.target);
    let at = action
        .at
        .as_deref()
        .and_then(clock_time)
        .map(|time| format!(" at {time}"))
        .unwrap_or_default();
    let detail = one_line(&action.detail);
    match action.verdict.as_str() {
        "dry_run" | "shadow" => fit(&detail, |detail| {
            if detail.is_empty() {
                format!("would have {past} {target} (dry-run)")
            } else {
                format!("would have {past} {target} (dry-run: {detail})")
            }
        }),
        "cooldown" => match action.shares {
            Some(shares) => format!(
                "did not {infinitive} {target} again: in cooldown, sharing action #{shares}"
            ),
            None => format!("did not {infinitive} {target} again: in cooldown"),
        },
        "in_flight" => {
            format!("did not {infinitive} {target}: another incident's action was in flight")
        }
        "budget" => format!("did not {infinitive} {target}: hourly action budget spent"),
        "paused" => fit(&detail, |detail| {
            if detail.is_empty() {
                format!("did not {infinitive} {target}: automatic actions are paused")
            } else {
                format!("did not {infinitive} {target}: automatic actions are paused ({detail})")
            }
        }),
        "did_not_help" => format!(
            "did not repeat {} on {target}: it did not help before",
            if kind.is_empty() { "the action" } else { kind }
        ),
        _ => match action.state.as_str() {
            "done" => {
                let verify = if with_verify {
                    verify_part(action)
                } else {
                    String::new()
                };
                fit("", |_| format!("{past} {target}{at}{verify}"))
            }
            "failed" => fit(&detail, |detail| {
                format!("tried to {infinitive} {target}{at}: failed: {detail}")
            }),
            "uncertain" => fit(&detail, |detail| {
                format!(
                    "{infinitive} {target}: outcome UNKNOWN ({detail}); not retried, check by hand"
                )
            }),
            "not_applied" => fit(&detail, |detail| {
                format!("tried to {infinitive} {target}{at}: not applied ({detail})")
            }),
            "started" | "planned" => fit("", |_| {
                format!(
                    "{} {target} in progress",
                    if kind.is_empty() { "action" } else { kind }
                )
            }),
            state => fit(&detail, |detail| {
                if detail.is_empty() {
                    format!("{infinitive} {target}: {state}")
                } else {
                    format!("{infinitive} {target}: {state} ({detail})")
                }
            }),
        },
    }
}

fn verify_part(action: &ActionLine) -> String {
    match action.verified.as_deref() {
        Some("did_not_help") if action.verify_window.is_empty() => {
            "; still failing after its verify window".to_owned()
        }
        Some("did_not_help") => format!("; still failing after {}", action.verify_window),
        Some("helped") => "; it helped".to_owned(),
        None | Some("") => "; checking whether it helped".to_owned(),
        Some(other) => format!("; verified: {other}"),
    }
}

/// A sentence within `SENTENCE_LIMIT`: the detail is cut first, then, should the rest be too
/// long (a huge target), the sentence itself.
fn fit(detail: &str, build: impl Fn(&str) -> String) -> String {
    let full = build(detail);
    if full.chars().count() <= SENTENCE_LIMIT {
        return full;
    }
    let fixed = build("").chars().count();
    let room = SENTENCE_LIMIT.saturating_sub(fixed + 1);
    let shorter = if room == 0 || detail.is_empty() {
        build(detail)
    } else {
        build(&format!("{}…", truncate_chars(detail, room)))
    };
    cut(&shorter, SENTENCE_LIMIT)
}

/// `text` within `limit` characters, marked with an ellipsis when cut.
pub(super) fn cut(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        text.to_owned()
    } else {
        format!("{}…", truncate_chars(text, limit.saturating_sub(1)))
    }
}

/// Details come from command output and HTTP answers: one line, single spaces.
pub(super) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The kind as the rule file's action spec names it, without the `kubernetes.` family.
fn short_kind(kind: &str) -> &str {
    kind.strip_prefix("kubernetes.").unwrap_or(kind)
}

/// (past tense, infinitive) of what an action of this kind does to its target.
fn verbs(kind: &str) -> (String, String) {
    let (past, infinitive) = match kind {
        "rollout_restart" => ("restarted", "restart"),
        "scale" => ("scaled", "scale"),
        "set_env" => ("set env on", "set env on"),
        "exec" => ("ran", "run"),
        "http" => ("called", "call"),
        "" => ("ran an action on", "run an action on"),
        other => return (format!("ran {other} on"), format!("run {other} on")),
    };
    (past.to_owned(), infinitive.to_owned())
}

/// `deployment/ns/name` reads as `deployment ns/name`; other targets as they are.
fn display_target(target: &str) -> String {
    let mut parts = target.splitn(3, '/');
    let shown = match (parts.next(), parts.next(), parts.next()) {
        (Some(kind), Some(namespace), Some(name))
            if !kind.is_empty()
                && kind.bytes().all(|byte| byte.is_ascii_lowercase())
                && !namespace.is_empty()
                && !name.is_empty()
                && !name.contains('/') =>
        {
            format!("{kind} {namespace}/{name}")
        }
        _ => target.to_owned(),
    };
    cut(&shown, TARGET_LIMIT)
}

/// `HH:MM:SS` in UTC of an RFC 3339 time.
fn clock_time(at: &str) -> Option<String> {
    chrono::DateTime::parse_from_rfc3339(at).ok().map(|time| {
        time.with_timezone(&chrono::Utc)
            .format("%H:%M:%S")
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::notify::render::fixtures::{restart, skipped};

    fn check_sentence(action: ActionLine, expected: &str) {
        assert_eq!(action_sentence(&action), expected, "{action:?}");
    }

    #[test]
    fn done_actions_say_what_was_done_when_and_whether_it_helped() {
        check_sentence(
            restart(Some("did_not_help")),
            "restarted deployment vastai/vastai-integration at 03:12:05; still failing after 10m",
        );
        check_sentence(
            restart(Some("helped")),
            "restarted deployment vastai/vastai-integration at 03:12:05; it helped",
        );
        check_sentence(
            restart(None),
            "restarted deployment vastai/vastai-integration at 03:12:05; checking whether it helped",
        );
        // An offset time is shown in UTC.
        check_sentence(
            ActionLine {
                kind: "set_env".into(),
                verdict: "hold".into(),
                at: Some("2026-11-28T05:12:05+02:00".into()),
                ..restart(Some("helped"))
            },
            "set env on deployment vastai/vastai-integration at 03:12:05; it helped",
        );
        check_sentence(
            ActionLine {
                kind: "exec".into(),
                target: "collect-logs".into(),
                at: None,
                ..restart(Some("helped"))
            },
            "ran collect-logs; it helped",
        );
    }

    #[test]
    fn failed_uncertain_and_running_actions() {
        check_sentence(
            ActionLine {
                state: "failed".into(),
                detail: "403\nForbidden".into(),
                ..restart(None)
            },
            "tried to restart deployment vastai/vastai-integration at 03:12:05: failed: 403 Forbidden",
        );
        check_sentence(
            ActionLine {
                state: "uncertain".into(),
                detail: "timeout after 10s".into(),
                ..restart(None)
            },
            "restart deployment vastai/vastai-integration: outcome UNKNOWN (timeout after 10s); not retried, check by hand",
        );
        check_sentence(
            ActionLine {
                state: "started".into(),
                ..restart(None)
            },
            "rollout_restart deployment vastai/vastai-integration in progress",
        );
        check_sentence(
            ActionLine {
                kind: "http".into(),
                target: "https://hooks.example.com".into(),
                state: "planned".into(),
                ..restart(None)
            },
            "http https://hooks.example.com in progress",
        );
    }

    #[test]
    fn skipped_and_dry_run_actions_say_why_nothing_changed() {
        check_sentence(
            skipped("cooldown", "", Some(12)),
            "did not restart deployment vastai/vastai-integration again: in cooldown, sharing action #12",
        );
        check_sentence(
            skipped("in_flight", "", Some(12)),
            "did not restart deployment vastai/vastai-integration: another incident's action was in flight",
        );
        check_sentence(
            skipped("budget", "10 actions in the last hour", None),
            "did not restart deployment vastai/vastai-integration: hourly action budget spent",
        );
        check_sentence(
            skipped("paused", "paused by alice until 04:00", None),
            "did not restart deployment vastai/vastai-integration: automatic actions are paused (paused by alice until 04:00)",
        );
        check_sentence(
            skipped("did_not_help", "", None),
            "did not repeat rollout_restart on deployment vastai/vastai-integration: it did not help before",
        );
        check_sentence(
            skipped("dry_run", "dry-run mode", None),
            "would have restarted deployment vastai/vastai-integration (dry-run: dry-run mode)",
        );
        check_sentence(
            ActionLine {
                kind: "scale".into(),
                ..skipped("shadow", "the rule runs in shadow mode", None)
            },
            "would have scaled deployment vastai/vastai-integration (dry-run: the rule runs in shadow mode)",
        );
    }

    #[test]
    fn sentences_stay_short_and_cut_on_a_character_boundary() {
        let long = ActionLine {
            state: "failed".into(),
            detail: "é".repeat(5000),
            ..restart(None)
        };
        let sentence = action_sentence(&long);
        assert_eq!(sentence.chars().count(), SENTENCE_LIMIT);
        assert!(sentence.starts_with(
            "tried to restart deployment vastai/vastai-integration at 03:12:05: failed: éé"
        ));
        assert!(sentence.ends_with("é…"));
        let huge_target = ActionLine {
            kind: "exec".into(),
            target: "x".repeat(10_000),
            ..skipped("paused", &"y".repeat(10_000), None)
        };
        assert!(action_sentence(&huge_target).chars().count() <= SENTENCE_LIMIT);
    }
}
