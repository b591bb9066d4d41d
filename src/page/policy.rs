//! paging: when an incident pages, as pure rules over what the store knows. The store applies
//! them inside its transactions (`store::paging`); the outbox and its delivery live in
//! `notify`.
//!
//! - `immediate` pages when the decision is recorded; P1 is always immediate.
//! - `after_verify` waits for the incident's mitigation: it pages at once when nothing could
//!   be done (no action, dry-run, paused, budget spent, failed, outcome unknown), waits while
//!   an action runs or its verify window is open, pages when it did not help, and stays quiet
//!   when the incident stopped firing. A cooldown skip follows the verify outcome of the action
//!   it shares. The act stage itself is waited for at most `settle_within`, and not at all
//!   when a restart came between the decision and its act stage (which is not run again).
//! - `never` records and reports only.

use crate::act::governor::VerdictKind;
use crate::clock::Millis;
use crate::episodes::reconcile::EpisodeStatus;
use crate::store::values::{ActionState, Verification};

/// How pages are keyed: a configuration setting (`[paging] dedup`), defined with the schema.
pub use crate::config::DedupMode;

/// The dedup key of an incident's page.
pub fn dedup_key(mode: DedupMode, group_key: &str, incident_id: &str) -> String {
    match mode {
        DedupMode::Group => crate::page::notify::pagerduty::group_dedup_key(group_key),
        DedupMode::Incident => crate::page::notify::pagerduty::incident_dedup_key(incident_id),
    }
}

/// `P1` ranks 1; anything unknown ranks after P4.
pub fn rank(severity: &str) -> i64 {
    match severity {
        "P1" => 1,
        "P2" => 2,
        "P3" => 3,
        "P4" => 4,
        _ => 5,
    }
}

/// What one action of the incident tells the paging stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionFacts {
    pub id: i64,
    pub action: String,
    pub target: String,
    /// The governor's verdict.
    pub verdict: VerdictKind,
    pub state: ActionState,
    /// Set once judged.
    pub verified: Option<Verification>,
    /// A cooldown or in-flight skip: the action whose outcome this one shares.
    pub shares: Option<i64>,
}

/// What to do with an incident waiting under `after_verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    Page(String),
    Wait,
    Quiet(String),
}

/// How long an `after_verify` incident waits for its act stage to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settle {
    /// At most this long after its decision (`paging.settle_within`): the process may have
    /// died between deciding and acting.
    pub within: Millis,
    /// When this process started, if known. The act stage of an incident decided before it
    /// will never report (it is not run again after a restart), so such an incident waits no
    /// longer: it is judged on the actions it planned, which the start settled (done, or not
    /// applied, or uncertain), or as interrupted if it planned none.
    pub started_at: Option<Millis>,
}

impl From<Millis> for Settle {
    fn from(within: Millis) -> Settle {
        Settle {
            within,
            started_at: None,
        }
    }
}

impl Settle {
    /// Where the act stage of an incident decided at `decided_at` stands at `now`: `acted`
    /// says it finished, `planned` that it planned an action since the decision.
    pub fn act_stage(
        &self,
        acted: bool,
        planned: bool,
        decided_at: Millis,
        now: Millis,
    ) -> ActStage {
        if acted {
            ActStage::Finished
        } else if self.started_at.is_some_and(|started| decided_at < started) {
            if planned {
                ActStage::Finished
            } else {
                ActStage::Interrupted
            }
        } else if now.saturating_sub(decided_at) >= self.within {
            ActStage::Late
        } else {
            ActStage::Pending
        }
    }
}

/// Where the act stage of an incident's decision stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActStage {
    /// Still to come, or running.
    Pending,
    /// Finished with the decision.
    Finished,
    /// Not finished within `settle_within`.
    Late,
    /// A restart came after the decision, before the act stage planned anything.
    Interrupted,
}

/// Judge an incident waiting under `after_verify`. `status` is the episode's; `stage` where
/// its act stage stands. `shared` looks up a shared action.
pub fn judge_waiting(
    status: EpisodeStatus,
    stage: ActStage,
    actions: &[ActionFacts],
    shared: &dyn Fn(i64) -> Option<ActionFacts>,
) -> Judgement {
    match status {
        EpisodeStatus::Firing => {}
        EpisodeStatus::Silenced => {
            return Judgement::Quiet("silenced before it was paged".to_owned());
        }
        EpisodeStatus::Resolved | EpisodeStatus::Gone => {
            return Judgement::Quiet(
                "stopped firing before its mitigation's verify window ended".to_owned(),
            );
        }
    }
    match stage {
        ActStage::Finished => {}
        ActStage::Pending => return Judgement::Wait,
        ActStage::Late => {
            return Judgement::Page(
                "its actions did not settle in time; paging rather than waiting".to_owned(),
            );
        }
        ActStage::Interrupted => {
            return Judgement::Page(
                "a restart came between its decision and its actions; nothing was done".to_owned(),
            );
        }
    }
    if actions.is_empty() {
        return Judgement::Page("no automatic action applies; a human is needed".to_owned());
    }
    let mut waiting = false;
    let mut helped = Vec::new();
    for action in actions {
        let name = format!("{} on {}", action.action, action.target);
        match (action.verdict, action.state) {
            (_, ActionState::Uncertain) => {
                return Judgement::Page(format!("{name}: outcome unknown; escalated, not retried"));
            }
            (_, ActionState::Failed) => return Judgement::Page(format!("{name} failed")),
            (VerdictKind::DryRun, _) => {
                return Judgement::Page(format!("{name} ran dry only (dry-run or shadow)"));
            }
            (VerdictKind::Paused, _) => {
                return Judgement::Page(format!("{name} skipped: automatic actions are paused"));
            }
            (VerdictKind::Budget, _) => {
                return Judgement::Page(format!("{name} skipped: the hourly budget is spent"));
            }
            (VerdictKind::DidNotHelp, _) => {
                return Judgement::Page(format!("{name} did not help before; not repeated"));
            }
            (VerdictKind::Cooldown | VerdictKind::InFlight, _) => {
                let Some(other) = action.shares.and_then(shared) else {
                    return Judgement::Page(format!(
                        "{name} skipped ({}) with no action to follow",
                        action.verdict
                    ));
                };
                match follow(&other) {
                    Follow::Helped => helped.push(name),
                    Follow::Wait => waiting = true,
                    Follow::Page(why) => {
                        return Judgement::Page(format!(
                            "{name} skipped ({}); the action it shares (#{}) {why}",
                            action.verdict, other.id
                        ));
                    }
                }
            }
            _ => match follow(action) {
                Follow::Helped => helped.push(name),
                Follow::Wait => waiting = true,
                Follow::Page(why) => return Judgement::Page(format!("{name} {why}")),
            },
        }
    }
    if waiting {
        Judgement::Wait
    } else {
        Judgement::Quiet(format!("mitigation helped: {}", helped.join(", ")))
    }
}

enum Follow {
    Helped,
    Wait,
    Page(String),
}

/// The outcome of an action that was (or is being) carried out.
fn follow(action: &ActionFacts) -> Follow {
    match (action.state, action.verified) {
        (_, Some(Verification::DidNotHelp)) => Follow::Page("did not help".to_owned()),
        (_, Some(Verification::Helped)) => Follow::Helped,
        (ActionState::Done, None)
        | (ActionState::Planned | ActionState::Started | ActionState::NotApplied, _) => {
            Follow::Wait
        }
        (ActionState::Uncertain, _) => Follow::Page("has an unknown outcome".to_owned()),
        (ActionState::Failed, _) => Follow::Page("failed".to_owned()),
        (state @ (ActionState::Skipped | ActionState::Deferred), _) => {
            Follow::Page(format!("ended {state}"))
        }
    }
}

/// One event of an incident's page as the outbox recorded it: the facts its page state is
/// read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageEvent<'a> {
    /// `pagerduty`, or a notifier's name.
    pub channel: &'a str,
    /// `trigger`, `resolve`, `change`.
    pub kind: &'a str,
    /// `pending`, `delivered`, `rejected`.
    pub state: &'a str,
    pub error: Option<&'a str>,
    pub delivered_at: Option<&'a str>,
}

/// Whether anybody was woken about an incident: the one answer every view shows (the API,
/// `incidents show`, the report, the postmortem).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageState {
    /// No page was sent, by policy or because it is still waiting; `why` says which.
    NotPaged { why: String },
    /// A trigger is queued and not answered yet (`why`: the last failure, if any).
    Pending { why: Option<String> },
    /// A trigger reached someone.
    Delivered { at: Option<String>, channel: String },
    /// Every trigger was refused by its destination.
    Rejected { why: String },
    /// Nothing is configured to receive the page: no routing key, no fallback notifier.
    NoDestination { why: String },
}

/// The words `notify::deliver` records for a page nothing is configured to receive (its
/// routing finds no routing key, or the notifier is gone), as opposed to a destination
/// refusing it.
const NO_DESTINATION: [&str; 3] = [
    "no routing key",
    "pagerduty is not configured",
    "is no longer configured",
];

impl PageState {
    pub fn as_str(&self) -> &'static str {
        match self {
            PageState::NotPaged { .. } => "not_paged",
            PageState::Pending { .. } => "pending",
            PageState::Delivered { .. } => "delivered",
            PageState::Rejected { .. } => "rejected",
            PageState::NoDestination { .. } => "no_destination",
        }
    }

    /// Somebody was woken.
    pub fn delivered(&self) -> bool {
        matches!(self, PageState::Delivered { .. })
    }

    /// A page was wanted and did not (or not yet) reach anyone.
    pub fn undelivered(&self) -> bool {
        matches!(
            self,
            PageState::Pending { .. }
                | PageState::Rejected { .. }
                | PageState::NoDestination { .. }
        )
    }

    /// The state in one sentence, for people ("page not delivered: PagerDuty rejected it").
    pub fn sentence(&self) -> String {
        match self {
            PageState::NotPaged { why } => format!("not paged: {why}"),
            PageState::Pending { why: None } => "page pending (not delivered yet)".to_owned(),
            PageState::Pending { why: Some(why) } => {
                format!("page pending (not delivered yet; last failure: {why})")
            }
            PageState::Delivered {
                at: Some(at),
                channel,
            } => {
                format!("paged: delivered through {channel} at {at}")
            }
            PageState::Delivered { at: None, channel } => {
                format!("paged: delivered through {channel}")
            }
            PageState::Rejected { why } => format!("page not delivered: rejected ({why})"),
            PageState::NoDestination { why } => format!("could not be paged: {why}"),
        }
    }
}

/// The page state of an incident from its paging decision (`paged`, `waiting`, `not_paged`,
/// `resolved`; empty when none was recorded), that decision's reason, and its page events.
/// Only triggers wake people: resolves and change events do not count.
pub fn page_state(decision: &str, reason: &str, events: &[PageEvent<'_>]) -> PageState {
    let triggers: Vec<&PageEvent<'_>> = events.iter().filter(|e| e.kind == "trigger").collect();
    if let Some(delivered) = triggers.iter().find(|e| e.state == "delivered") {
        return PageState::Delivered {
            at: delivered.delivered_at.map(str::to_owned),
            channel: delivered.channel.to_owned(),
        };
    }
    if triggers.iter().any(|e| e.state == "pending") {
        return PageState::Pending {
            why: triggers
                .iter()
                .rev()
                .find_map(|e| e.error)
                .map(str::to_owned),
        };
    }
    if !triggers.is_empty() {
        let errors: Vec<&str> = triggers.iter().filter_map(|e| e.error).collect();
        let unroutable = |error: &&str| {
            let error = error.to_lowercase();
            NO_DESTINATION.iter().any(|words| error.contains(words))
        };
        // Every trigger refused, and only for want of somewhere to send it: with a fallback
        // notifier configured a fallback trigger would have been queued (and answered).
        if !errors.is_empty() && errors.iter().all(unroutable) {
            let pagerduty = triggers.iter().any(|e| e.channel == "pagerduty");
            let why = if pagerduty {
                "no PagerDuty routing key and no fallback notifier".to_owned()
            } else {
                format!("no notifier configured ({})", errors.join("; "))
            };
            return PageState::NoDestination { why };
        }
        let why = errors
            .last()
            .map_or_else(|| "no reason recorded".to_owned(), |e| (*e).to_owned());
        return PageState::Rejected { why };
    }
    let reason = reason.trim();
    let why = match decision {
        // Paged, but its trigger is not in the outbox yet (or was pruned).
        "paged" => return PageState::Pending { why: None },
        "waiting" if reason.is_empty() => "waiting".to_owned(),
        "waiting" => format!("waiting ({reason})"),
        "resolved" => "resolved before paging".to_owned(),
        "" => "no paging recorded".to_owned(),
        _ if reason.is_empty() => "no reason recorded".to_owned(),
        _ => reason.to_owned(),
    };
    PageState::NotPaged { why }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(verdict: &str, state: &str, verified: Option<&str>) -> ActionFacts {
        ActionFacts {
            id: 1,
            action: "restart".to_owned(),
            target: "deployment/vastai/api".to_owned(),
            verdict: crate::store::values::StoredText::parse(verdict).unwrap(),
            state: state.parse().unwrap(),
            verified: verified.map(|text| text.parse().unwrap()),
            shares: None,
        }
    }

    fn none(_: i64) -> Option<ActionFacts> {
        None
    }

    fn is_page(judgement: &Judgement) -> bool {
        matches!(judgement, Judgement::Page(_))
    }

    #[test]
    fn a_mitigation_that_helps_lets_people_sleep() {
        let running = [action("run", "done", None)];
        assert_eq!(
            judge_waiting(EpisodeStatus::Firing, ActStage::Finished, &running, &none),
            Judgement::Wait
        );
        let helped = [action("run", "done", Some("helped"))];
        assert!(matches!(
            judge_waiting(EpisodeStatus::Firing, ActStage::Finished, &helped, &none),
            Judgement::Quiet(_)
        ));
        assert!(matches!(
            judge_waiting(EpisodeStatus::Resolved, ActStage::Finished, &running, &none),
            Judgement::Quiet(_)
        ));
        let failed = [action("run", "done", Some("did_not_help"))];
        let judgement = judge_waiting(EpisodeStatus::Firing, ActStage::Finished, &failed, &none);
        assert_eq!(
            judgement,
            Judgement::Page("restart on deployment/vastai/api did not help".to_owned())
        );
    }

    #[test]
    fn nothing_done_pages_at_once() {
        assert!(is_page(&judge_waiting(
            EpisodeStatus::Firing,
            ActStage::Finished,
            &[],
            &none
        )));
        for (verdict, state) in [
            ("dry_run", "skipped"),
            ("paused", "skipped"),
            ("budget", "skipped"),
            ("did_not_help", "skipped"),
            ("run", "failed"),
            ("run", "uncertain"),
        ] {
            let judgement = judge_waiting(
                EpisodeStatus::Firing,
                ActStage::Finished,
                &[action(verdict, state, None)],
                &none,
            );
            assert!(is_page(&judgement), "{verdict}/{state}: {judgement:?}");
        }
    }

    #[test]
    fn waiting_for_the_act_stage_is_bounded() {
        assert_eq!(
            judge_waiting(EpisodeStatus::Firing, ActStage::Pending, &[], &none),
            Judgement::Wait
        );
        assert!(is_page(&judge_waiting(
            EpisodeStatus::Firing,
            ActStage::Late,
            &[],
            &none
        )));
        let interrupted = judge_waiting(EpisodeStatus::Firing, ActStage::Interrupted, &[], &none);
        assert!(
            matches!(&interrupted, Judgement::Page(reason) if reason.contains("restart")),
            "{interrupted:?}"
        );
        // An incident that stopped firing stays quiet however its act stage went.
        assert!(matches!(
            judge_waiting(EpisodeStatus::Resolved, ActStage::Interrupted, &[], &none),
            Judgement::Quiet(_)
        ));
    }

    #[test]
    fn a_decision_from_before_the_start_waits_for_no_act_stage() {
        let started = 1_000_000;
        let settle = Settle {
            within: 300_000,
            started_at: Some(started),
        };
        // (acted, planned, decided at, now) → stage.
        let cases = [
            ((false, false, started - 1, started), ActStage::Interrupted),
            // Its actions were settled when this process started: judged on them.
            ((false, true, started - 1, started), ActStage::Finished),
            (
                (false, true, started - 300_000, started),
                ActStage::Finished,
            ),
            ((true, false, started - 1, started), ActStage::Finished),
            ((false, false, started, started + 1), ActStage::Pending),
            ((false, false, started, started + 300_000), ActStage::Late),
        ];
        for ((acted, planned, decided_at, now), expected) in cases {
            assert_eq!(
                settle.act_stage(acted, planned, decided_at, now),
                expected,
                "{acted} {planned} {decided_at} {now}"
            );
        }
        // Without a start known, only the time bound counts.
        let bare = Settle::from(300_000);
        assert_eq!(
            bare.act_stage(false, false, started - 1, started),
            ActStage::Pending
        );
    }

    #[test]
    fn a_cooldown_follows_the_action_it_shares() {
        let skip = ActionFacts {
            shares: Some(7),
            ..action("cooldown", "skipped", None)
        };
        let other = |verified: Option<&'static str>| {
            move |id: i64| {
                Some(ActionFacts {
                    id,
                    ..action("run", "done", verified)
                })
            }
        };
        assert_eq!(
            judge_waiting(
                EpisodeStatus::Firing,
                ActStage::Finished,
                std::slice::from_ref(&skip),
                &other(None)
            ),
            Judgement::Wait
        );
        assert!(is_page(&judge_waiting(
            EpisodeStatus::Firing,
            ActStage::Finished,
            std::slice::from_ref(&skip),
            &other(Some("did_not_help"))
        )));
        assert!(matches!(
            judge_waiting(
                EpisodeStatus::Firing,
                ActStage::Finished,
                std::slice::from_ref(&skip),
                &other(Some("helped"))
            ),
            Judgement::Quiet(_)
        ));
        // Nothing to follow: page rather than wait forever.
        assert!(is_page(&judge_waiting(
            EpisodeStatus::Firing,
            ActStage::Finished,
            &[skip],
            &none
        )));
    }

    #[test]
    fn group_keys_match_alertmanager_and_incident_keys_fit() {
        assert_eq!(
            dedup_key(
                DedupMode::Group,
                "{}/{severity=\"critical\"}:{alertname=\"HighLatency\"}",
                "x"
            ),
            "73042dc50d9d7d783a3772aae2a313acab072425608782aea59917e35ef8ec46"
        );
        let id = "a".repeat(400);
        assert!(dedup_key(DedupMode::Incident, "g", &id).chars().count() <= 255);
        assert!(rank("P1") < rank("P4"));
    }

    #[test]
    fn page_state_from_the_page_facts() {
        fn event<'a>(
            channel: &'a str,
            kind: &'a str,
            state: &'a str,
            error: Option<&'a str>,
        ) -> PageEvent<'a> {
            PageEvent {
                channel,
                kind,
                state,
                error,
                delivered_at: (state == "delivered").then_some("2026-01-01T00:00:00Z"),
            }
        }
        let no_key = Some("no routing key for this page");
        let cases: Vec<(&str, &str, Vec<PageEvent<'_>>, &str, &str)> = vec![
            (
                "paged",
                "P1 pages immediately",
                vec![event("pagerduty", "trigger", "rejected", no_key)],
                "no_destination",
                "could not be paged: no PagerDuty routing key and no fallback notifier",
            ),
            (
                "paged",
                "P1 pages immediately",
                vec![event(
                    "pagerduty",
                    "trigger",
                    "rejected",
                    Some("PagerDuty is not configured (no pagerduty.routing_keys)"),
                )],
                "no_destination",
                "could not be paged: no PagerDuty routing key and no fallback notifier",
            ),
            // The fallback took it: somebody was woken.
            (
                "paged",
                "",
                vec![
                    event("pagerduty", "trigger", "rejected", no_key),
                    event("slack", "trigger", "delivered", None),
                ],
                "delivered",
                "paged: delivered through slack at 2026-01-01T00:00:00Z",
            ),
            (
                "paged",
                "",
                vec![
                    event("pagerduty", "trigger", "rejected", no_key),
                    event("slack", "trigger", "pending", None),
                ],
                "pending",
                "page pending (not delivered yet; last failure: no routing key for this page)",
            ),
            (
                "paged",
                "",
                vec![event(
                    "pagerduty",
                    "trigger",
                    "rejected",
                    Some("Invalid routing key"),
                )],
                "rejected",
                "page not delivered: rejected (Invalid routing key)",
            ),
            (
                "paged",
                "",
                vec![event("pagerduty", "trigger", "pending", Some("HTTP 503"))],
                "pending",
                "page pending (not delivered yet; last failure: HTTP 503)",
            ),
            (
                "paged",
                "",
                vec![],
                "pending",
                "page pending (not delivered yet)",
            ),
            // A delivered resolve or change event wakes nobody.
            (
                "paged",
                "",
                vec![
                    event("pagerduty", "change", "delivered", None),
                    event("pagerduty", "trigger", "rejected", no_key),
                ],
                "no_destination",
                "could not be paged: no PagerDuty routing key and no fallback notifier",
            ),
            (
                "not_paged",
                "P4 waits for business hours",
                vec![],
                "not_paged",
                "not paged: P4 waits for business hours",
            ),
            (
                "waiting",
                "verify window open",
                vec![],
                "not_paged",
                "not paged: waiting (verify window open)",
            ),
            (
                "resolved",
                "",
                vec![],
                "not_paged",
                "not paged: resolved before paging",
            ),
            ("", "", vec![], "not_paged", "not paged: no paging recorded"),
        ];
        for (decision, reason, events, state, sentence) in cases {
            let got = page_state(decision, reason, &events);
            assert_eq!(
                (got.as_str(), got.sentence().as_str()),
                (state, sentence),
                "{decision} {events:?}"
            );
        }
    }
}
