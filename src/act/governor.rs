//! governor: the one gate every automatic action passes before it runs. It bounds the blast
//! radius: dry-run and shadow modes, the pause switch, one action in flight per target, a
//! cooldown per target and kind, an hourly budget, and escalation instead of repetition when
//! a mitigation did not help.
//!
//! The judgement is a pure function of what the store knows (passed in as [`Facts`]) and the
//! injectable clock's time, so every rule is tested without sleeping; the store keeps the
//! facts (actions taken, holds, the pause) so that a restart resets none of them.

use serde::Serialize;

use crate::clock::Millis;

/// How actions are carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Record what would be done; change nothing. The built-in default.
    DryRun,
    /// Carry actions out (only when configured, and only with an ingest credential).
    Enforce,
}

/// Limits, from configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Automatic actions allowed per rolling hour across the daemon.
    pub hourly_budget: u32,
}

impl Mode {
    /// The configuration's spelling: `dry-run` or `enforce`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::DryRun => "dry-run",
            Mode::Enforce => "enforce",
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits { hourly_budget: 12 }
    }
}

/// One action a decision wants to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub incident_id: String,
    /// `kind/namespace/name` for Kubernetes actions; the rendered `target` for others.
    pub target: String,
    /// `kubernetes.rollout_restart`, `exec`, …
    pub kind: String,
    /// The rule runs in shadow mode (dry while the rest enforce).
    pub shadow: bool,
    /// Cooldown of this action (per target and kind).
    pub cooldown: Millis,
    /// The change is already in place and held by another incident (the same env value):
    /// taking it again only adds a hold.
    pub already_held: bool,
}

/// What the store knows that bears on a proposal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Set while automatic actions are paused.
    pub paused: Option<Pause>,
    /// An action on this target is running now.
    pub in_flight: bool,
    /// The last action of this kind on this target actually run: (when, action id).
    pub last_on_target: Option<(Millis, i64)>,
    /// Automatic actions actually run in the last hour.
    pub actions_last_hour: u32,
    /// This incident already ran this action and still fires after its verify window, or
    /// the same alert re-opened within the cooldown: repeating it would not help.
    pub did_not_help: bool,
}

/// The operator's pause of automatic actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    /// Paused until then (`i64::MAX / 2` and above: until resumed).
    pub until: Millis,
    /// Why, in the operator's words.
    pub reason: String,
}

/// Why an action does not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Skip {
    Paused {
        until: Millis,
        why: String,
    },
    InFlight,
    /// The same action ran on this target within its cooldown; this incident shares that
    /// action's outcome (and its verify result) instead of repeating it.
    Cooldown {
        since: Millis,
        shares: i64,
    },
    Budget {
        limit: u32,
    },
    DidNotHelp,
}

impl Skip {
    /// Whether the incident must be paged at once because of this skip (the mitigation it
    /// would have had cannot happen), rather than following the verify outcome of another.
    pub fn escalates(&self) -> bool {
        !matches!(self, Skip::Cooldown { .. } | Skip::InFlight)
    }

    pub fn kind(&self) -> VerdictKind {
        match self {
            Skip::Paused { .. } => VerdictKind::Paused,
            Skip::InFlight => VerdictKind::InFlight,
            Skip::Cooldown { .. } => VerdictKind::Cooldown,
            Skip::Budget { .. } => VerdictKind::Budget,
            Skip::DidNotHelp => VerdictKind::DidNotHelp,
        }
    }

    pub fn label(&self) -> &'static str {
        self.kind().as_str()
    }
}

/// A verdict without its details, as the store records it and the paging rules read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Run,
    Hold,
    DryRun,
    Paused,
    InFlight,
    Cooldown,
    Budget,
    DidNotHelp,
}

impl VerdictKind {
    pub const ALL: [VerdictKind; 8] = [
        VerdictKind::Run,
        VerdictKind::Hold,
        VerdictKind::DryRun,
        VerdictKind::Paused,
        VerdictKind::InFlight,
        VerdictKind::Cooldown,
        VerdictKind::Budget,
        VerdictKind::DidNotHelp,
    ];

    /// Its label: the recorded text and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Run => "run",
            VerdictKind::Hold => "hold",
            VerdictKind::DryRun => "dry_run",
            VerdictKind::Paused => "paused",
            VerdictKind::InFlight => "in_flight",
            VerdictKind::Cooldown => "cooldown",
            VerdictKind::Budget => "budget",
            VerdictKind::DidNotHelp => "did_not_help",
        }
    }
}

/// The governor's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Run,
    /// The change is already in place and held: add a hold, spend no budget.
    Hold,
    /// Dry-run or shadow: record what the verdict would have been, change nothing.
    Dry {
        would: Box<Verdict>,
        why: String,
    },
    Skip(Skip),
}

impl Verdict {
    pub fn kind(&self) -> VerdictKind {
        match self {
            Verdict::Run => VerdictKind::Run,
            Verdict::Hold => VerdictKind::Hold,
            Verdict::Dry { .. } => VerdictKind::DryRun,
            Verdict::Skip(skip) => skip.kind(),
        }
    }

    pub fn label(&self) -> &'static str {
        self.kind().as_str()
    }
}

/// Judge one proposal. Order matters: a paused daemon does nothing whatever else is true; an
/// action already in flight is never doubled; a mitigation that did not help is escalated,
/// not repeated; then the cooldown, then the budget.
pub fn judge(
    proposal: &Proposal,
    facts: &Facts,
    mode: Mode,
    limits: Limits,
    now: Millis,
) -> Verdict {
    let verdict = enforce_verdict(proposal, facts, limits, now);
    match (mode, proposal.shadow) {
        (Mode::Enforce, false) => verdict,
        (Mode::DryRun, _) => Verdict::Dry {
            would: Box::new(verdict),
            why: "dry-run mode".to_owned(),
        },
        (Mode::Enforce, true) => Verdict::Dry {
            would: Box::new(verdict),
            why: "the rule runs in shadow mode".to_owned(),
        },
    }
}

fn enforce_verdict(proposal: &Proposal, facts: &Facts, limits: Limits, now: Millis) -> Verdict {
    if let Some(pause) = &facts.paused
        && pause.until > now
    {
        return Verdict::Skip(Skip::Paused {
            until: pause.until,
            why: pause.reason.clone(),
        });
    }
    if facts.in_flight {
        return Verdict::Skip(Skip::InFlight);
    }
    if facts.did_not_help {
        return Verdict::Skip(Skip::DidNotHelp);
    }
    if proposal.already_held {
        return Verdict::Hold;
    }
    if let Some((at, action)) = facts.last_on_target
        && now.saturating_sub(at) < proposal.cooldown
    {
        return Verdict::Skip(Skip::Cooldown {
            since: at,
            shares: action,
        });
    }
    if facts.actions_last_hour >= limits.hourly_budget {
        return Verdict::Skip(Skip::Budget {
            limit: limits.hourly_budget,
        });
    }
    Verdict::Run
}

/// Whether a held change may be reverted now: the last holder has resolved, the minimum hold
/// has passed since the change was made, and the value is still the one nightshift set (a
/// human who changed it since wins; then the revert is dropped, not deferred).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RevertVerdict {
    Revert,
    /// Not yet: other incidents still hold it, or the minimum hold has not passed.
    Wait,
    /// Someone changed the value since: leave it alone.
    LeaveHumanChange,
}

pub fn judge_revert(
    open_holders: usize,
    changed_at: Millis,
    min_hold: Millis,
    value_is_ours: bool,
    now: Millis,
) -> RevertVerdict {
    if !value_is_ours {
        return RevertVerdict::LeaveHumanChange;
    }
    if open_holders > 0 || now.saturating_sub(changed_at) < min_hold {
        return RevertVerdict::Wait;
    }
    RevertVerdict::Revert
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Millis = 60_000;

    fn proposal() -> Proposal {
        Proposal {
            incident_id: "i".to_owned(),
            target: "deployment/vastai/vastai-integration".to_owned(),
            kind: "kubernetes.rollout_restart".to_owned(),
            shadow: false,
            cooldown: 30 * MINUTE,
            already_held: false,
        }
    }

    #[test]
    fn each_rule_in_order() {
        let now = 1_000 * MINUTE;
        let limits = Limits::default();
        let quiet = Facts::default();
        let cases: Vec<(&str, Proposal, Facts, Verdict)> = vec![
            (
                "nothing in the way",
                proposal(),
                quiet.clone(),
                Verdict::Run,
            ),
            (
                "paused",
                proposal(),
                Facts {
                    paused: Some(Pause {
                        until: now + MINUTE,
                        reason: "deploy freeze".into(),
                    }),
                    in_flight: true,
                    ..quiet.clone()
                },
                Verdict::Skip(Skip::Paused {
                    until: now + MINUTE,
                    why: "deploy freeze".into(),
                }),
            ),
            (
                "a pause that expired",
                proposal(),
                Facts {
                    paused: Some(Pause {
                        until: now - 1,
                        reason: "old".into(),
                    }),
                    ..quiet.clone()
                },
                Verdict::Run,
            ),
            (
                "in flight",
                proposal(),
                Facts {
                    in_flight: true,
                    ..quiet.clone()
                },
                Verdict::Skip(Skip::InFlight),
            ),
            (
                "did not help beats cooldown and budget",
                proposal(),
                Facts {
                    did_not_help: true,
                    last_on_target: Some((now, 7)),
                    actions_last_hour: 99,
                    ..quiet.clone()
                },
                Verdict::Skip(Skip::DidNotHelp),
            ),
            (
                "already held: a hold, no budget",
                Proposal {
                    already_held: true,
                    ..proposal()
                },
                Facts {
                    actions_last_hour: 99,
                    ..quiet.clone()
                },
                Verdict::Hold,
            ),
            (
                "within the cooldown",
                proposal(),
                Facts {
                    last_on_target: Some((now - 29 * MINUTE, 7)),
                    ..quiet.clone()
                },
                Verdict::Skip(Skip::Cooldown {
                    since: now - 29 * MINUTE,
                    shares: 7,
                }),
            ),
            (
                "after the cooldown",
                proposal(),
                Facts {
                    last_on_target: Some((now - 30 * MINUTE, 7)),
                    ..quiet.clone()
                },
                Verdict::Run,
            ),
            (
                "budget spent",
                proposal(),
                Facts {
                    actions_last_hour: 12,
                    ..quiet.clone()
                },
                Verdict::Skip(Skip::Budget { limit: 12 }),
            ),
        ];
        for (name, proposal, facts, expected) in cases {
            assert_eq!(
                judge(&proposal, &facts, Mode::Enforce, limits, now),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn dry_run_and_shadow_record_what_would_have_happened() {
        let now = 1_000 * MINUTE;
        let facts = Facts {
            actions_last_hour: 12,
            ..Facts::default()
        };
        let dry = judge(&proposal(), &facts, Mode::DryRun, Limits::default(), now);
        assert_eq!(
            dry,
            Verdict::Dry {
                would: Box::new(Verdict::Skip(Skip::Budget { limit: 12 })),
                why: "dry-run mode".into()
            }
        );
        let shadow = Proposal {
            shadow: true,
            ..proposal()
        };
        let verdict = judge(
            &shadow,
            &Facts::default(),
            Mode::Enforce,
            Limits::default(),
            now,
        );
        assert_eq!(verdict.label(), "dry_run");
        assert!(matches!(verdict, Verdict::Dry { ref would, .. } if **would == Verdict::Run));
    }

    #[test]
    fn a_storm_for_one_target_runs_once() {
        // 500 incidents ask for the same restart; the store records the first as run.
        let now = 1_000 * MINUTE;
        let mut facts = Facts::default();
        let mut runs = 0;
        for n in 0..500 {
            let proposal = Proposal {
                incident_id: format!("i{n}"),
                ..proposal()
            };
            match judge(&proposal, &facts, Mode::Enforce, Limits::default(), now + n) {
                Verdict::Run => {
                    runs += 1;
                    facts.last_on_target = Some((now + n, 1));
                    facts.actions_last_hour += 1;
                }
                Verdict::Skip(skip) => assert!(!skip.escalates(), "a cooldown shares the outcome"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(runs, 1);
    }

    #[test]
    fn skips_that_escalate() {
        assert!(Skip::Budget { limit: 1 }.escalates());
        assert!(
            Skip::Paused {
                until: 0,
                why: String::new()
            }
            .escalates()
        );
        assert!(Skip::DidNotHelp.escalates());
        assert!(
            !Skip::Cooldown {
                since: 0,
                shares: 1
            }
            .escalates()
        );
    }

    #[test]
    fn reverts_wait_for_the_last_holder_and_the_minimum_hold_and_respect_humans() {
        let hold = 15 * MINUTE;
        let now = 1_000 * MINUTE;
        assert_eq!(
            judge_revert(1, now - hold, hold, true, now),
            RevertVerdict::Wait
        );
        assert_eq!(
            judge_revert(0, now - hold + 1, hold, true, now),
            RevertVerdict::Wait
        );
        assert_eq!(
            judge_revert(0, now - hold, hold, true, now),
            RevertVerdict::Revert
        );
        assert_eq!(
            judge_revert(0, now - hold, hold, false, now),
            RevertVerdict::LeaveHumanChange
        );
    }
}
