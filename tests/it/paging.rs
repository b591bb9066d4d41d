//! Paging end to end through the daemon binary: webhooks in, PagerDuty events out (to a fake
//! that checks every event against the Events v2 schema), with the fallback notifier, the
//! Watchdog heartbeat and a failing store.

use std::time::Duration;

use crate::common::*;
use crate::fakes::pagerduty::{Mode, ROUTING_KEY};
use sha2::{Digest, Sha256};

/// The daemon paging the fake PagerDuty, with a Slack fallback (`ops`), an ingest and an
/// admin token, `rules` (TOML) as its only rule file, and `extra` config.
fn setup(extra: &str, rules: &str) -> Stack {
    setup_with(extra, rules, None)
}

/// `setup`, and with `custom_template` a second Slack notifier, `custom`, that renders it.
fn setup_with(extra: &str, rules: &str, custom_template: Option<&str>) -> Stack {
    let mut builder = Stack::builder()
        .pagerduty()
        .slack_fallback()
        .ingest_token(true)
        .rules("test.toml", rules)
        .extra(extra);
    if let Some(template) = custom_template {
        builder = builder.slack_notifier("custom", "/services/T0/B1/y", Some(template));
    }
    builder.start()
}

fn post(setup: &Stack, body: &str) -> http_client::Response {
    setup.try_post_webhook(body)
}

fn group_key(group: &str) -> String {
    format!("{{}}:{{alertname=\"{group}\"}}")
}

fn dedup(group: &str) -> String {
    hex::encode(Sha256::digest(group_key(group).as_bytes()))
}

/// Only the built-in default rule decides: this rule matches nothing (an empty rules directory
/// is refused).
const NO_RULES: &str = "[[rule]]\nname = \"placeholder\"\nmatchers = ['alertname=\"__matches_nothing__\"']\nseverity = \"P4\"\n";

#[test]
fn a_group_page_triggers_once_per_change_and_resolves_with_its_last_incident() {
    let setup = setup("", NO_RULES);
    let start = "2026-11-28T03:00:00Z";
    let firing = webhook(
        "ApiDown",
        &[
            ("ApiDown", "a:9100", "firing", start),
            ("ApiDown", "b:9100", "firing", start),
        ],
        0,
    );
    assert_eq!(post(&setup, &firing).status, 200);
    let key = dedup("ApiDown");
    assert!(
        setup.wait_pd(20, |pd| !pd.accepted_for(&key).is_empty()),
        "{}",
        setup.daemon.log()
    );
    let trigger = setup.pd().accepted_for(&key)[0].clone();
    assert!(trigger.is_trigger());
    assert_eq!(trigger.routing_key, ROUTING_KEY);
    assert!(
        trigger.summary().starts_with("[P1] "),
        "{}",
        trigger.summary()
    );
    assert_eq!(trigger.severity(), "critical");
    let body = &trigger.body;
    assert!(
        body["payload"]["custom_details"]["severity"]
            .as_str()
            .unwrap()
            .contains("P1"),
        "{body:#}"
    );
    let links: Vec<&str> = body["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["href"].as_str())
        .collect();
    assert!(
        links.contains(&"http://prometheus.invalid/graph"),
        "{links:?}"
    );
    assert!(
        links
            .iter()
            .any(|l| l.starts_with("https://nightshift.example/api/v1/incidents/")),
        "{links:?}"
    );
    // One incident resolves: the page stays open.
    let half = webhook(
        "ApiDown",
        &[
            ("ApiDown", "a:9100", "resolved", start),
            ("ApiDown", "b:9100", "firing", start),
        ],
        0,
    );
    assert_eq!(post(&setup, &half).status, 200);
    // Once the half resolve is processed, no resolve was queued (a resolve is queued in the
    // same transaction as the close that causes it) and none reached PagerDuty.
    setup.wait_settled(2);
    for summary in setup.incidents() {
        let detail = setup.incident(summary["id"].as_str().unwrap());
        let queued_resolves = detail["paging"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["kind"] == "resolve")
            .count();
        assert_eq!(queued_resolves, 0, "resolved too early: {detail:#}");
    }
    assert!(
        setup.pd().accepted_resolves().is_empty(),
        "resolved too early"
    );
    // The last one resolves: one resolve, same dedup key and routing key.
    let all = webhook(
        "ApiDown",
        &[
            ("ApiDown", "a:9100", "resolved", start),
            ("ApiDown", "b:9100", "resolved", start),
        ],
        0,
    );
    assert_eq!(post(&setup, &all).status, 200);
    assert!(
        setup.wait_pd(20, |pd| !pd.accepted_resolves().is_empty()),
        "{}",
        setup.daemon.log()
    );
    let resolves = setup.pd().accepted_resolves();
    assert_eq!(resolves.len(), 1);
    assert_eq!(resolves[0].dedup_key.as_deref(), Some(key.as_str()));
    assert_eq!(resolves[0].routing_key, ROUTING_KEY);
    // Both incidents were paged under one key; each trigger of the page came before the
    // resolve, and nothing went to the fallback.
    let events = setup.pd().accepted_for(&key);
    assert!(events.last().unwrap().is_resolve());
    assert!(setup.chat().messages().is_empty());
    let list = setup.incidents();
    assert_eq!(list.len(), 2);
    for summary in list {
        let detail = setup.incident(summary["id"].as_str().unwrap());
        assert_eq!(detail["paging"]["state"], "resolved", "{detail:#}");
        assert_eq!(detail["paging"]["dedup_key"], key.as_str());
    }
    setup.pd().assert_no_unexpected();
}

const FLAKY_RULES: &str = r#"
[[rule]]
name = "flaky"
matchers = ['alertname="Flaky"']
severity = "P3"
summary = "flaky service on {{ labels.instance }}"
[[rule.branch]]
name = "kick"
otherwise = true
actions = ["kick"]

[action.kick]
kind = "exec"
target = "kick-{{ labels.instance }}"
argv = ["/bin/true"]
cooldown = "1h"
verify_window = "1s"
"#;

#[test]
fn after_verify_pages_only_when_the_mitigation_did_not_help() {
    let setup = setup("[actions]\nmode = \"enforce\"\n", FLAKY_RULES);
    let start = "2026-11-28T03:00:00Z";
    // Two incidents, each in its own group; both are mitigated.
    for group in ["FlakyA", "FlakyB"] {
        let body = serde_json::json!({
            "version": "4", "status": "firing", "groupKey": group_key(group),
            "receiver": "nightshift",
            "alerts": [{"status": "firing", "labels": {"alertname": "Flaky", "instance": group},
                        "startsAt": start, "generatorURL": "http://prometheus.invalid/graph"}],
        });
        assert_eq!(post(&setup, &body.to_string()).status, 200);
    }
    // B stops firing at once: its mitigation helped, nobody is woken.
    let resolved = serde_json::json!({
        "version": "4", "status": "resolved", "groupKey": group_key("FlakyB"),
        "receiver": "nightshift",
        "alerts": [{"status": "resolved", "labels": {"alertname": "Flaky", "instance": "FlakyB"},
                    "startsAt": start, "endsAt": "2026-11-28T03:01:00Z"}],
    });
    let ran = wait_for(Duration::from_secs(20), || {
        let done = setup
            .incidents()
            .iter()
            .all(|i| setup.incident(i["id"].as_str().unwrap())["actions"][0]["state"] == "done");
        (done && setup.incidents().len() == 2).then_some(())
    });
    assert!(ran.is_some(), "{}", setup.daemon.log());
    assert_eq!(post(&setup, &resolved.to_string()).status, 200);
    // A still fires once its window has passed: paged, saying what was tried.
    let key_a = dedup("FlakyA");
    assert!(
        setup.wait_pd(20, |pd| !pd.accepted_for(&key_a).is_empty()),
        "{}",
        setup.daemon.log()
    );
    let page = setup.pd().accepted_for(&key_a)[0].clone();
    assert!(
        page.summary().starts_with("[P3] flaky service on FlakyA"),
        "{}",
        page.summary()
    );
    let done = page.body["payload"]["custom_details"]["what_was_done"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(done.contains("still failing after 1s"), "{done}");
    let reason = page.body["payload"]["custom_details"]["page_reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("did not help"), "{reason}");
    // B was never paged, and says why: once its mitigation is judged (helped), nothing was
    // queued for it and nothing reached PagerDuty.
    let judged = setup.wait_incident("FlakyB", 20, |detail| {
        detail["actions"][0]["verified"] == "helped"
    });
    assert!(
        judged["paging"]["events"]
            .as_array()
            .is_none_or(|events| events.iter().all(|e| e["kind"] != "trigger")),
        "{judged:#}"
    );
    assert!(setup.pd().accepted_for(&dedup("FlakyB")).is_empty());
    let b = setup
        .incidents()
        .into_iter()
        .find(|i| i["labels"]["instance"] == "FlakyB")
        .unwrap();
    let b = setup.incident(b["id"].as_str().unwrap());
    assert_eq!(b["paging"]["state"], "not_paged", "{b:#}");
    // Each action that ran is on the service's timeline as a change event.
    assert!(setup.wait_pd(10, |pd| pd.accepted_changes().len() == 2));
    assert!(
        setup.pd().accepted_changes()[0]
            .summary()
            .starts_with("nightshift: ran kick-Flaky"),
        "{}",
        setup.pd().accepted_changes()[0].summary()
    );
    setup.pd().assert_no_unexpected();
}

#[test]
fn a_page_pagerduty_rejects_goes_to_the_fallback_and_is_shown() {
    let setup = setup("", NO_RULES);
    setup.pd().set_mode(Mode::Reject400(vec![
        "Length of 'routing_key' is incorrect".to_owned(),
    ]));
    let body = webhook(
        "Rejected",
        &[("Rejected", "a:1", "firing", "2026-11-28T03:00:00Z")],
        0,
    );
    assert_eq!(post(&setup, &body).status, 200);
    let delivered = setup.runtime.block_on(
        setup
            .chat()
            .wait_for(|c| !c.messages().is_empty(), Duration::from_secs(20)),
    );
    assert!(delivered, "{}", setup.daemon.log());
    let text = setup.chat().texts()[0].clone();
    assert!(text.contains("P1 INCIDENT"), "{text}");
    assert!(text.contains("fallback"), "{text}");
    assert!(
        text.contains("Length of 'routing_key' is incorrect"),
        "{text}"
    );
    // Shown: in the API and in `incidents show`, with PagerDuty's errors.
    let id = setup.incidents()[0]["id"].as_str().unwrap().to_owned();
    let detail = setup.incident(&id);
    let events = detail["paging"]["events"].as_array().unwrap().clone();
    let rejected = events
        .iter()
        .find(|e| e["channel"] == "pagerduty" && e["kind"] == "trigger")
        .unwrap();
    assert_eq!(rejected["state"], "rejected", "{detail:#}");
    assert!(
        rejected["last_error"]
            .as_str()
            .unwrap()
            .contains("Length of 'routing_key' is incorrect")
    );
    let shown = setup.daemon.cli(&["incidents", "show", &id]);
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(shown.contains("pagerduty trigger → rejected"), "{shown}");
    // The fallback woke somebody: that is the page state, not PagerDuty's refusal.
    let detail = wait_for(Duration::from_secs(10), || {
        let detail = setup.incident(&id);
        (detail["paging"]["page_state"] == "delivered").then_some(detail)
    })
    .unwrap_or_else(|| {
        panic!(
            "not delivered through the fallback: {:#}",
            setup.incident(&id)
        )
    });
    assert!(detail["paging"]["paged_at"].is_string(), "{detail:#}");
    // Never retried: nothing about it is left in the outbox, and PagerDuty saw one attempt.
    let done = wait_for(Duration::from_secs(20), || {
        let detail = setup.incident(&id);
        detail["paging"]["events"]
            .as_array()?
            .iter()
            .all(|e| e["state"] != "pending")
            .then_some(())
    });
    assert!(done.is_some(), "{:#}", setup.incident(&id));
    assert_eq!(setup.pd().attempts_for(&dedup("Rejected")), 1);
    assert_eq!(setup.chat().messages().len(), 1);
}

/// Labels and annotations are whatever the alert's sender wrote. In Slack they must not mention
/// `@channel` or show a link that says one thing and leads elsewhere: every value from the
/// alert reaches Slack escaped, in the default status update and in an operator's template,
/// while what the template itself writes (a link to nightshift) stays Slack markup.
#[test]
fn alert_data_reaches_slack_escaped_and_the_templates_own_links_stay_links() {
    let setup = setup_with(
        "[severities.P1]\nnotify = [\"ops\", \"custom\"]\n",
        NO_RULES,
        Some(
            "{{ page.incidents[0].labels.instance }} says {{ impact }} \
             <{{ links[0].href }}|open in nightshift>",
        ),
    );
    let body = serde_json::json!({
        "version": "4", "status": "firing", "groupKey": group_key("Hostile"),
        "receiver": "nightshift",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "Hostile", "instance": "<!channel>", "severity": "critical"},
            "annotations": {
                "summary": "db down, ask <!channel>",
                "description": "<https://evil|Acknowledge> & <!here>",
                "runbook_url": "https://runbooks.example/db?a=1&b=2",
            },
            "startsAt": "2026-11-28T03:00:00Z",
            "generatorURL": "http://prometheus.invalid/graph",
        }],
    });
    assert_eq!(post(&setup, &body.to_string()).status, 200);
    let custom = setup.notifier("custom");
    let heard = setup.runtime.block_on(async {
        setup
            .chat()
            .wait_for(|chat| !chat.messages().is_empty(), Duration::from_secs(20))
            .await
            && custom
                .wait_for(|chat| !chat.messages().is_empty(), Duration::from_secs(20))
                .await
    });
    assert!(heard, "{}", setup.daemon.log());

    let text = setup.chat().texts()[0].clone();
    for expected in [
        "P1 INCIDENT: Hostile: db down, ask &lt;!channel&gt;\n",
        "Impact: complete outage: &lt;https://evil|Acknowledge&gt; &amp; &lt;!here&gt;\n",
        "runbook: https://runbooks.example/db?a=1&amp;b=2",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    assert!(!text.contains(['<', '>']), "{text}");

    let text = custom.texts()[0].clone();
    assert!(
        text.starts_with(
            "&lt;!channel&gt; says complete outage: &lt;https://evil|Acknowledge&gt; &amp; \
             &lt;!here&gt; <https://nightshift.example/api/v1/incidents/"
        ),
        "{text}"
    );
    assert!(text.ends_with("|open in nightshift>"), "{text}");
    for raw in ["<!channel>", "<!here>", "<https://evil"] {
        assert!(!text.contains(raw), "{raw:?} in {text}");
    }
    setup.chat().assert_no_unexpected();
    custom.assert_no_unexpected();
    setup.pd().assert_no_unexpected();
}

#[test]
fn pages_in_the_outbox_survive_kill_9_and_are_delivered_once() {
    let mut setup = setup("", NO_RULES);
    setup.pd().set_mode(Mode::Error500);
    let groups: Vec<String> = (0..5).map(|n| format!("Crash{n}")).collect();
    for group in &groups {
        let body = webhook(
            group,
            &[(group, "a:1", "firing", "2026-11-28T03:00:00Z")],
            0,
        );
        assert_eq!(post(&setup, &body).status, 200);
    }
    // PagerDuty refused what was tried; every page waits in the outbox.
    assert!(
        setup.wait_pd(20, |pd| !pd.attempts().is_empty()),
        "{}",
        setup.daemon.log()
    );
    let queued = wait_for(Duration::from_secs(20), || {
        let list = setup.incidents();
        (list.len() == groups.len()
            && list.iter().all(|i| {
                let detail = setup.incident(i["id"].as_str().unwrap());
                detail["paging"]["state"] == "paged"
                    && detail["paging"]["events"]
                        .as_array()
                        .is_some_and(|events| events.iter().any(|e| e["state"] == "pending"))
            }))
        .then_some(())
    });
    assert!(queued.is_some(), "{}", setup.daemon.log());
    assert!(setup.pd().accepted().is_empty());
    setup.daemon.kill9();
    setup.pd().set_mode(Mode::Accept);
    setup.daemon.spawn();
    assert!(
        setup.wait_pd(30, |pd| pd.accepted_triggers().len() >= groups.len()),
        "{}",
        setup.daemon.log()
    );
    // Every event the outbox held is answered: any duplicate would have been sent by now.
    let delivered = wait_for(Duration::from_secs(20), || {
        setup
            .incidents()
            .iter()
            .all(|i| {
                setup.incident(i["id"].as_str().unwrap())["paging"]["events"]
                    .as_array()
                    .is_some_and(|events| events.iter().all(|e| e["state"] == "delivered"))
            })
            .then_some(())
    });
    assert!(delivered.is_some(), "{}", setup.daemon.log());
    for group in &groups {
        assert_eq!(setup.pd().accepted_for(&dedup(group)).len(), 1, "{group}");
    }
    setup.pd().assert_no_unexpected();
}

#[test]
fn watchdog_silence_pages_and_its_return_resolves() {
    // Beats come a second apart; the timeout leaves room for a slow machine to see each one
    // (a beat is posted only once the previous one shows in the metrics).
    let setup = setup("[watchdog]\nenabled = true\ntimeout = \"5s\"\n", NO_RULES);
    let beat = || {
        let body = serde_json::json!({
            "version": "4", "status": "firing", "groupKey": "{}:{alertname=\"Watchdog\"}",
            "receiver": "nightshift",
            "alerts": [{"status": "firing", "labels": {"alertname": "Watchdog", "severity": "none"},
                        "startsAt": "2026-11-28T00:00:00Z"}],
        });
        assert_eq!(post(&setup, &body.to_string()).status, 200);
    };
    // Beats one second apart (the heartbeat's own rhythm, not a wait for the daemon), each
    // seen by the daemon before the next.
    let last_seen = || {
        setup
            .metrics()
            .lines()
            .find_map(|line| {
                line.strip_prefix("nightshift_watchdog_last_seen_timestamp_seconds ")?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    let mut seen = 0.0;
    for round in 0..3 {
        if round > 0 {
            std::thread::sleep(Duration::from_millis(1000));
        }
        beat();
        let newer = wait_for(Duration::from_secs(10), || {
            let now = last_seen();
            (now > seen).then_some(now)
        });
        seen = newer.unwrap_or_else(|| panic!("beat {round} not seen:\n{}", setup.metrics()));
    }
    // Beating within the timeout: nothing.
    assert!(setup.pd().accepted().is_empty());
    let key = "nightshift/self/watchdog";
    assert!(
        setup.wait_pd(15, |pd| !pd.accepted_for(key).is_empty()),
        "{}",
        setup.daemon.log()
    );
    let page = setup.pd().accepted_for(key)[0].clone();
    assert!(
        page.summary()
            .starts_with("alerting pipeline is down: no Watchdog from Alertmanager since "),
        "{}",
        page.summary()
    );
    let metrics = client()
        .get(&format!("{}/metrics", setup.daemon.base), &[])
        .body;
    assert!(
        metrics.contains("nightshift_self_page_active{reason=\"watchdog\"} 1"),
        "{metrics}"
    );
    beat();
    assert!(setup.wait_pd(15, |pd| pd.accepted_for(key).iter().any(|e| e.is_resolve())));
    // The heartbeat is never an incident.
    assert!(setup.incidents().is_empty());
    setup.pd().assert_no_unexpected();
}

#[test]
fn a_failing_store_still_pages_from_memory_and_recovers_by_itself() {
    // Extra keys land in [paging].
    let setup = setup("store_failing_after = \"1s\"\n", NO_RULES);
    let config = std::fs::read_to_string(&setup.daemon.config).unwrap();
    let reload = |extra: &str| {
        std::fs::write(&setup.daemon.config, format!("{config}{extra}")).unwrap();
        let response = client().post(
            &format!("{}/-/reload", setup.daemon.base),
            &[("Authorization", ADMIN)],
            b"",
        );
        assert_eq!(response.status, 200, "{}", response.body);
    };
    // The store may not grow any more: a full disk, as far as SQLite can tell.
    reload("[store]\nmax_size_bytes = 4096\n");
    let big = "x".repeat(200_000);
    let body = |n: usize| {
        serde_json::json!({
            "version": "4", "status": "firing", "groupKey": format!("{{}}:{{alertname=\"Full{n}\"}}"),
            "receiver": "nightshift",
            "alerts": [{"status": "firing", "labels": {"alertname": format!("Full{n}"), "severity": "critical"},
                        "annotations": {"description": big}, "startsAt": "2026-11-28T03:00:00Z"}],
        })
        .to_string()
    };
    let refused = wait_for(Duration::from_secs(10), || {
        (post(&setup, &body(0)).status == 503).then_some(())
    });
    assert!(refused.is_some(), "{}", setup.daemon.log());
    for n in 1..4 {
        assert_eq!(post(&setup, &body(n)).status, 503);
    }
    let key = "nightshift/self/store";
    assert!(
        setup.wait_pd(60, |pd| !pd.accepted_for(key).is_empty()),
        "{}",
        setup.daemon.log()
    );
    let page = setup.pd().accepted_for(key)[0].clone();
    assert!(
        page.summary().starts_with("nightshift store failing: "),
        "{}",
        page.summary()
    );
    assert!(
        page.summary().contains("webhooks refused with 503"),
        "{}",
        page.summary()
    );
    // The fallback channel hears of it too (sent right after PagerDuty).
    let heard = setup.runtime.block_on(setup.chat().wait_for(
        |chat| {
            chat.texts()
                .iter()
                .any(|t| t.contains("nightshift store failing"))
        },
        Duration::from_secs(10),
    ));
    assert!(heard, "{:?}", setup.chat().texts());
    // Space comes back: Alertmanager's retry goes through, and the page resolves.
    reload("[store]\nmax_size_bytes = 0\n");
    let accepted = wait_for(Duration::from_secs(10), || {
        (post(&setup, &body(0)).status == 200).then_some(())
    });
    assert!(accepted.is_some(), "{}", setup.daemon.log());
    assert!(
        setup.wait_pd(20, |pd| pd.accepted_for(key).iter().any(|e| e.is_resolve())),
        "{}",
        setup.daemon.log()
    );
}

/// With no PagerDuty routing key and no fallback notifier, a P1's only page is rejected: every
/// view says the same (it could not be paged), never "paged", and it is said loudly.
#[test]
fn a_p1_nothing_can_page_is_shown_the_same_everywhere_and_said_loudly() {
    let mut daemon = Daemon::prepare(
        "[paging]\nexternal_url = \"https://nightshift.example\"\n",
        &[],
    );
    std::fs::create_dir_all(daemon.path("rules")).unwrap();
    daemon.write_file("rules/test.toml", NO_RULES);
    daemon.spawn();
    let body = webhook(
        "Unpageable",
        &[("Unpageable", "a:1", "firing", "2026-11-28T03:00:00Z")],
        0,
    );
    let response = client().post(
        &format!("{}/webhook", daemon.base),
        &[JSON],
        body.as_bytes(),
    );
    assert_eq!(response.status, 200);
    let get = |path: &str| client().get(&format!("{}{path}", daemon.base), &[]);
    // The API: the trigger was rejected, so no `paged_at`, and the one page state.
    let (id, detail) = wait_for(Duration::from_secs(20), || {
        let id = get("/api/v1/incidents").json()["incidents"][0]["id"]
            .as_str()?
            .to_owned();
        let detail = get(&format!("/api/v1/incidents/{id}")).json();
        (detail["paging"]["page_state"] == "no_destination").then_some((id, detail))
    })
    .unwrap_or_else(|| panic!("no unpaged P1:\n{}", daemon.log()));
    let paging = &detail["paging"];
    let sentence = "could not be paged: no PagerDuty routing key and no fallback notifier";
    assert_eq!(paging["summary"], sentence, "{detail:#}");
    assert!(paging["paged_at"].is_null(), "{detail:#}");
    assert!(!paging["queued_at"].is_null(), "{detail:#}");
    // `incidents show`.
    let shown = daemon.cli(&["incidents", "show", &id]);
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        shown.contains(&format!("page       no_destination — {sentence}")),
        "{shown}"
    );
    // The report, Markdown and JSON: nobody paged, and its first line says why.
    let report = daemon.cli(&["report", "--since", "2000days", "--format", "md"]);
    let report = String::from_utf8_lossy(&report.stdout).into_owned();
    let first = report.lines().next().unwrap_or_default();
    assert!(
        first.contains(
            "1 P1 incident could not be paged: no PagerDuty routing key and no fallback notifier"
        ),
        "{report}"
    );
    assert!(report.contains("0 paged"), "{report}");
    assert!(
        report.contains("- Could not be paged: no PagerDuty routing key and no fallback notifier"),
        "{report}"
    );
    let json = get("/api/v1/report?since=2000days").json();
    assert_eq!(json["counts"]["paged"], 0, "{json:#}");
    assert_eq!(json["counts"]["could_not_be_paged"], 1, "{json:#}");
    assert_eq!(
        json["incidents"][0]["page_state"], "no_destination",
        "{json:#}"
    );
    assert_eq!(json["incidents"][0]["page"], sentence, "{json:#}");
    // Loud: /readyz (with the read credential) names it, still ready; the log has an ERROR.
    let ready = get("/readyz");
    assert_eq!(ready.status, 200);
    let ready = String::from_utf8_lossy(ready.body_bytes()).into_owned();
    assert!(
        ready.contains(&format!("ready (degraded: 1 P1 incident could not be paged: no PagerDuty routing key and no fallback notifier ({id})")),
        "{ready}"
    );
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|line| line.contains("ERROR") && line.contains("no fallback notifier")),
        "{log}"
    );
    // The postmortem: the bundle written at open predates the page's answer, the final one
    // (written at resolve) says what the other views say.
    let body = webhook(
        "Unpageable",
        &[("Unpageable", "a:1", "resolved", "2026-11-28T03:00:00Z")],
        0,
    );
    let response = client().post(
        &format!("{}/webhook", daemon.base),
        &[JSON],
        body.as_bytes(),
    );
    assert_eq!(response.status, 200);
    let postmortem = wait_for(Duration::from_secs(30), || {
        let response = get(&format!("/api/v1/incidents/{id}/bundle"));
        if response.status != 200 {
            return None;
        }
        let files = untar(response.body_bytes());
        let postmortem = String::from_utf8_lossy(files.get("postmortem.md")?).into_owned();
        postmortem.contains("no_destination").then_some(postmortem)
    })
    .unwrap_or_else(|| panic!("no postmortem saying no_destination:\n{}", daemon.log()));
    assert!(
        postmortem.contains(&format!("Page state: `no_destination` — {sentence}")),
        "{postmortem}"
    );
    assert!(
        !postmortem.contains("the on-call engineer was paged"),
        "{postmortem}"
    );
}

/// The custom details of the newest accepted trigger under `key`.
fn latest_trigger_details(setup: &Stack, key: &str) -> serde_json::Value {
    setup
        .pd()
        .accepted_for(key)
        .iter()
        .rev()
        .find(|event| event.is_trigger())
        .map(|event| event.body["payload"]["custom_details"].clone())
        .unwrap_or_else(|| panic!("no trigger under {key}:\n{}", setup.daemon.log()))
}

/// An exec action that never finishes in its time: killed at its timeout, its outcome
/// unknown. Its verify window is an hour, so only the unknown outcome can page it.
fn stuck_rules(marks: &std::path::Path) -> String {
    format!(
        r#"
[[rule]]
name = "stuck"
matchers = ['alertname="Stuck"']
severity = "P3"
[[rule.branch]]
name = "kick"
otherwise = true
actions = ["kick"]

[action.kick]
kind = "exec"
target = "kick"
argv = ["/bin/sh", "-c", "echo ran >> {marks}; exec /bin/sleep 30"]
timeout = "1s"
cooldown = "1h"
verify_window = "1h"
"#,
        marks = marks.display()
    )
}

#[test]
fn an_action_whose_outcome_is_unknown_pages_at_once_and_is_not_retried() {
    let marks = tempfile::tempdir().unwrap();
    let ran = marks.path().join("ran");
    let setup = setup("[actions]\nmode = \"enforce\"\n", &stuck_rules(&ran));
    let body = webhook(
        "Stuck",
        &[("Stuck", "w-1", "firing", "2026-11-28T03:00:00Z")],
        0,
    );
    assert_eq!(post(&setup, &body).status, 200);
    let key = dedup("Stuck");
    assert!(
        setup.wait_pd(30, |pd| !pd.accepted_for(&key).is_empty()),
        "an uncertain action was not paged:\n{}",
        setup.daemon.log()
    );
    let details = latest_trigger_details(&setup, &key);
    let reason = details["page_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("kick on kick: outcome unknown; escalated, not retried"),
        "{details:#}"
    );
    let done = details["what_was_done"].as_str().unwrap_or_default();
    assert!(done.contains("outcome UNKNOWN"), "{done}");
    // Recorded as uncertain, and run exactly once.
    let incident = setup.wait_incident("w-1", 10, |detail| {
        detail["actions"][0]["state"] == "uncertain"
    });
    assert_eq!(
        incident["actions"].as_array().unwrap().len(),
        1,
        "{incident:#}"
    );
    assert_eq!(incident["paging"]["state"], "paged", "{incident:#}");
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "ran\n");
    setup.pd().assert_no_unexpected();
}

/// `FLAKY_RULES` with each run of the action leaving a line in `marks`.
fn counted_flaky_rules(marks: &std::path::Path) -> String {
    FLAKY_RULES.replace(
        r#"argv = ["/bin/true"]"#,
        &format!(
            r#"argv = ["/bin/sh", "-c", "echo ran >> {}"]"#,
            marks.display()
        ),
    )
}

#[test]
fn a_mitigation_that_did_not_help_is_not_repeated_when_the_alert_comes_back_and_pages() {
    let marks = tempfile::tempdir().unwrap();
    let ran = marks.path().join("ran");
    let rules = counted_flaky_rules(&ran);
    assert!(rules.contains("echo ran"), "{rules}");
    let setup = setup("[actions]\nmode = \"enforce\"\n", &rules);
    let alert = |status: &str, starts_at: &str| {
        serde_json::json!({
            "version": "4", "status": status, "groupKey": group_key("FlakyA"),
            "receiver": "nightshift",
            "alerts": [{"status": status, "labels": {"alertname": "Flaky", "instance": "FlakyA"},
                        "startsAt": starts_at, "endsAt": if status == "firing" { "0001-01-01T00:00:00Z" } else { "2026-11-28T03:05:00Z" },
                        "generatorURL": "http://prometheus.invalid/graph"}],
        })
        .to_string()
    };
    // The first time: run, still firing after its window, judged "did not help", paged.
    assert_eq!(
        post(&setup, &alert("firing", "2026-11-28T03:00:00Z")).status,
        200
    );
    let key = dedup("FlakyA");
    assert!(
        setup.wait_pd(20, |pd| !pd.accepted_for(&key).is_empty()),
        "{}",
        setup.daemon.log()
    );
    let first = latest_trigger_details(&setup, &key);
    assert!(
        first["page_reason"]
            .as_str()
            .is_some_and(|r| r.contains("did not help")),
        "{first:#}"
    );
    // It resolves, then the same alert fires again (a new episode of the same fingerprint)
    // well within the action's cooldown.
    assert_eq!(
        post(&setup, &alert("resolved", "2026-11-28T03:00:00Z")).status,
        200
    );
    let incidents_before = setup.incidents().len();
    assert_eq!(incidents_before, 1);
    let resolved = wait_for(Duration::from_secs(20), || {
        let id = setup.incidents()[0]["id"].as_str()?.to_owned();
        transition_done(&setup.incident(&id), "resolved").then_some(())
    });
    assert!(resolved.is_some(), "{}", setup.daemon.log());
    assert_eq!(
        post(&setup, &alert("firing", "2026-11-28T03:10:00Z")).status,
        200
    );
    // The governor refuses to repeat it, and that refusal pages.
    let again = wait_for(Duration::from_secs(20), || {
        let list = setup.incidents();
        let newest = list
            .iter()
            .map(|i| setup.incident(i["id"].as_str().unwrap()))
            .find(|d| {
                d["starts_at"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("2026-11-28T03:10"))
            })?;
        (newest["actions"][0]["verdict"] == "did_not_help").then_some(newest)
    })
    .unwrap_or_else(|| panic!("no did_not_help verdict:\n{}", setup.daemon.log()));
    assert_eq!(again["actions"].as_array().unwrap().len(), 1, "{again:#}");
    assert!(
        setup.wait_pd(20, |pd| pd.accepted_for(&key).iter().any(|event| {
            event.is_trigger()
                && event.body["payload"]["custom_details"]["page_reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("did not help before; not repeated"))
        })),
        "{:#?}\n{}",
        setup.pd().accepted_for(&key),
        setup.daemon.log()
    );
    // The command ran once, for the first episode only.
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "ran\n");
    setup.pd().assert_no_unexpected();
}

/// A rule whose status probe cannot be reached, with no note of its own on the failure
/// branch: nightshift writes one.
fn unconfirmed_rules(status_url: &str) -> String {
    format!(
        r#"
[[rule]]
name = "upstream"
matchers = ['alertname="UpstreamDown"']
severity = "P1"
probes = ["status"]
[[rule.branch]]
name = "provider-outage"
when = 'probe.status.indicator != "none"'
[[rule.branch]]
name = "our-side"
otherwise = true

[probe.status]
kind = "statuspage"
url = "{status_url}"
timeout = "2s"
cache = "0s"
"#
    )
}

#[test]
fn the_page_says_what_could_not_be_confirmed_when_a_probe_failed() {
    let status_url = format!("{}/api/v2/status.json", crate::fakes::dead_url());
    let setup = setup("", &unconfirmed_rules(&status_url));
    let body = webhook(
        "UpstreamDown",
        &[("UpstreamDown", "u-1", "firing", "2026-11-28T03:00:00Z")],
        0,
    );
    assert_eq!(post(&setup, &body).status, 200);
    let key = dedup("UpstreamDown");
    assert!(
        setup.wait_pd(20, |pd| !pd.accepted_for(&key).is_empty()),
        "{}",
        setup.daemon.log()
    );
    let details = latest_trigger_details(&setup, &key);
    let incident = &details["incidents"][0];
    assert_eq!(incident["branch"], "on_probe_failure", "{details:#}");
    // The note names the probe and says why it failed, as the probe itself reported.
    let probe = incident["probes"]["test/status"]
        .as_str()
        .unwrap_or_default();
    let error = probe
        .strip_prefix("failed: ")
        .unwrap_or_else(|| panic!("{details:#}"));
    assert!(error.contains("Connection refused"), "{details:#}");
    assert_eq!(
        incident["note"].as_str().unwrap_or_default(),
        format!("could not confirm: status {error}"),
        "{details:#}"
    );
    setup.pd().assert_no_unexpected();
}

const DEGRADED_RULES: &str = r#"
[[rule]]
name = "degraded"
matchers = ['alertname="Degraded"']
severity = "P2"
summary = "degraded on {{ labels.instance }}"
"#;

#[test]
fn a_severitys_notify_list_sends_its_pages_to_a_webhook_notifier_as_well() {
    let setup = Stack::builder()
        .pagerduty()
        .ingest_token(true)
        .webhook_notifier("hook", "/hooks/nightshift")
        .rules("test.toml", DEGRADED_RULES)
        .extra("[severities.P2]\nnotify = [\"hook\"]\n")
        .start();
    // A P2 (whose severity notifies `hook`) and a P1 (whose severity does not).
    for (name, instance) in [("Degraded", "web-1"), ("ApiDown", "api-1")] {
        let body = webhook(
            name,
            &[(name, instance, "firing", "2026-11-28T03:00:00Z")],
            0,
        );
        assert_eq!(post(&setup, &body).status, 200);
    }
    let hook = setup.notifier("hook");
    let heard = setup
        .runtime
        .block_on(hook.wait_for(|hook| !hook.messages().is_empty(), Duration::from_secs(20)));
    assert!(heard, "{}", setup.daemon.log());
    assert!(
        setup.wait_pd(20, |pd| {
            !pd.accepted_for(&dedup("Degraded")).is_empty()
                && !pd.accepted_for(&dedup("ApiDown")).is_empty()
        }),
        "{}",
        setup.daemon.log()
    );
    // Both pages are settled: every event each incident queued has been answered.
    let settled = wait_for(Duration::from_secs(20), || {
        let details: Vec<serde_json::Value> = setup
            .incidents()
            .iter()
            .map(|i| setup.incident(i["id"].as_str().unwrap()))
            .collect();
        let all_sent = details.len() == 2
            && details.iter().all(|d| {
                d["paging"]["events"]
                    .as_array()
                    .is_some_and(|events| events.iter().all(|e| e["state"] == "delivered"))
            });
        all_sent.then_some(details)
    })
    .unwrap_or_else(|| panic!("pages never settled:\n{}", setup.daemon.log()));
    for detail in &settled {
        let to_hook = detail["paging"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["channel"] == "hook")
            .count();
        let expected = usize::from(detail["severity"] == "P2");
        assert_eq!(to_hook, expected, "{detail:#}");
    }
    // The webhook got the one P2 page, as the generic JSON document.
    let messages = hook.messages();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let message = &messages[0];
    assert_eq!(message["version"], "1", "{message:#}");
    assert_eq!(message["event"], "trigger", "{message:#}");
    assert!(
        message["text"]
            .as_str()
            .is_some_and(|t| t.contains("P2") && t.contains("degraded on web-1")),
        "{message:#}"
    );
    assert_eq!(message["page"]["severity"], "P2", "{message:#}");
    assert_eq!(
        message["page"]["incidents"][0]["labels"]["instance"], "web-1",
        "{message:#}"
    );
    for request in hook.journal.requests() {
        assert_eq!(request.method, axum::http::Method::POST);
        assert!(
            request
                .header("content-type")
                .starts_with("application/json")
        );
    }
    hook.assert_no_unexpected();
    setup.pd().assert_no_unexpected();
}
