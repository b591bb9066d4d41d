//! config::validate: the checks that look at several keys at once or outside the file
//! (addresses, credentials beside open endpoints, files that must exist, names that refer to
//! each other, templates, patterns), each error pointing at the key it concerns.

use std::net::SocketAddr;
use std::time::Duration;

use super::load::Origins;
use super::*;

pub(super) fn validate(config: &Config, origins: &Origins, errors: &mut Vec<ConfigError>) {
    let mut fail = |key: &str, message: String| {
        errors.push(ConfigError {
            origin: origins.of(key),
            key: key.to_owned(),
            message,
        })
    };
    match config.server.listen.parse::<SocketAddr>() {
        Ok(address) => {
            let tls = config.server.tls_cert_file.is_some();
            if !address.ip().is_loopback() && !config.auth.allow_unauthenticated.is_empty() {
                fail(
                    "auth.allow_unauthenticated",
                    format!(
                        "{address} is not a loopback address: every endpoint there needs its \
                         credential; remove auth.allow_unauthenticated or listen on 127.0.0.1"
                    ),
                );
            }
            if !address.ip().is_loopback() && !tls && !config.server.allow_plaintext {
                fail(
                    "server.listen",
                    format!(
                        "{address} is not a loopback address and TLS is off; set \
                         server.tls_cert_file and server.tls_key_file, or \
                         server.allow_plaintext = true if plain HTTP is really meant"
                    ),
                );
            }
        }
        Err(error) => fail(
            "server.listen",
            format!(
                "expected an IP address and port such as 127.0.0.1:9797, got {:?}: {error}",
                config.server.listen
            ),
        ),
    }
    match (&config.server.tls_cert_file, &config.server.tls_key_file) {
        (Some(_), None) => fail(
            "server.tls_key_file",
            "required when server.tls_cert_file is set".to_owned(),
        ),
        (None, Some(_)) => fail(
            "server.tls_cert_file",
            "required when server.tls_key_file is set".to_owned(),
        ),
        _ => {}
    }
    let positive = [
        ("server.max_body_bytes", config.server.max_body_bytes),
        (
            "server.max_connections",
            config.server.max_connections as u64,
        ),
        ("server.commit_queue", config.server.commit_queue as u64),
        ("store.max_unreconciled", config.store.max_unreconciled),
        ("store.max_notifications", config.store.max_notifications),
        ("reconcile.batch_size", config.reconcile.batch_size as u64),
    ];
    for (key, value) in positive {
        if value == 0 {
            fail(key, "must be greater than 0".to_owned());
        }
    }
    let durations = [
        (
            "server.header_read_timeout",
            config.server.header_read_timeout,
        ),
        ("server.body_read_timeout", config.server.body_read_timeout),
        (
            "server.tls_handshake_timeout",
            config.server.tls_handshake_timeout,
        ),
        (
            "store.maintenance_interval",
            config.store.maintenance_interval,
        ),
        (
            "alertmanager.sync_interval",
            config.alertmanager.sync_interval,
        ),
        ("alertmanager.timeout", config.alertmanager.timeout),
    ];
    for (key, value) in durations {
        if value.is_zero() {
            fail(key, "must be longer than 0s".to_owned());
        }
    }
    if let Some(url) = &config.alertmanager.url {
        match reqwest::Url::parse(url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
            Ok(parsed) => fail(
                "alertmanager.url",
                format!(
                    "expected an http or https URL, got scheme {:?}",
                    parsed.scheme()
                ),
            ),
            Err(error) => fail("alertmanager.url", format!("not a URL: {error}")),
        }
    }
    let severity_names = ["P1", "P2", "P3", "P4"];
    for (value, severity) in &config.default_rule.map {
        if !severity_names.contains(&severity.as_str()) {
            fail(
                "default_rule.map",
                format!("{value:?} maps to {severity:?}; expected one of P1, P2, P3, P4"),
            );
        }
    }
    if !severity_names.contains(&config.default_rule.fallback.as_str()) {
        fail(
            "default_rule.fallback",
            format!(
                "expected one of P1, P2, P3, P4, got {:?}",
                config.default_rule.fallback
            ),
        );
    }
    if config.severities.get(1).paging != PagingPolicy::Immediate {
        fail(
            "severities.P1",
            "P1 always pages immediately; paging must be \"immediate\"".to_owned(),
        );
    }
    if config.rules.concurrency == 0 {
        fail("rules.concurrency", "must be greater than 0".to_owned());
    }
    for url in &config.prometheus.urls {
        match reqwest::Url::parse(url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
            _ => fail("prometheus.urls", format!("{url:?} is not an http(s) URL")),
        }
    }
    if let Some(proxy) = &config.http.proxy {
        match reqwest::Url::parse(proxy) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {}
            _ => fail(
                "http.proxy",
                format!("{proxy:?} is not an http(s) URL such as \"http://proxy:3128\""),
            ),
        }
    }
    if let Some(path) = &config.kubernetes.kubeconfig
        && let Err(error) = std::fs::metadata(path)
    {
        fail(
            "kubernetes.kubeconfig",
            format!("cannot read {}: {error}", path.display()),
        );
    }
    for namespace in &config.kubernetes.namespaces {
        if !is_rfc1123_label(namespace) {
            fail(
                "kubernetes.namespaces",
                format!("{namespace:?} is not a valid namespace name (RFC 1123 label)"),
            );
        }
    }
    if let Err(error) = tracing_subscriber::EnvFilter::builder().parse(&config.log.level) {
        fail("log.level", format!("not a valid log filter: {error}"));
    }
    let secret_files = [
        ("server.tls_cert_file", &config.server.tls_cert_file),
        ("server.tls_key_file", &config.server.tls_key_file),
        ("auth.ingest_token_file", &config.auth.ingest_token_file),
        (
            "auth.ingest_basic_auth_file",
            &config.auth.ingest_basic_auth_file,
        ),
        ("auth.read_token_file", &config.auth.read_token_file),
        (
            "auth.read_basic_auth_file",
            &config.auth.read_basic_auth_file,
        ),
        ("auth.admin_token_file", &config.auth.admin_token_file),
        (
            "auth.admin_basic_auth_file",
            &config.auth.admin_basic_auth_file,
        ),
        ("alertmanager.token_file", &config.alertmanager.token_file),
        (
            "alertmanager.basic_auth_file",
            &config.alertmanager.basic_auth_file,
        ),
    ];
    for (key, path) in secret_files {
        if let Some(path) = path
            && let Err(error) = std::fs::metadata(path)
        {
            fail(key, format!("cannot read {}: {error}", path.display()));
        }
    }
    if config.actions.mode == ActionMode::Enforce
        && config
            .auth
            .allow_unauthenticated
            .contains(&OpenEndpoint::Webhook)
    {
        fail(
            "actions.mode",
            "enforce needs a credential on the webhook, but auth.allow_unauthenticated opens \
             it: whoever can post an alert could restart deployments"
                .to_owned(),
        );
    }
    for group in &config.auth.allow_unauthenticated {
        if config.auth.configures(*group) {
            fail(
                "auth.allow_unauthenticated",
                format!(
                    "{} is opened here and also has a credential configured; keep one",
                    group.as_str()
                ),
            );
        }
    }
    validate_paging(config, &mut fail);
}

/// The paging settings refer to each other by name: every name must exist, every key file
/// must hold a key PagerDuty would take, every template must compile.
fn validate_paging(config: &Config, fail: &mut impl FnMut(&str, String)) {
    let pagerduty = &config.pagerduty;
    for (name, path) in &pagerduty.routing_keys {
        let key = format!("pagerduty.routing_keys.{name}");
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().chars().count() == 32 => {}
            Ok(text) => fail(
                &key,
                format!(
                    "{} holds {} characters; a PagerDuty routing key has 32",
                    path.display(),
                    text.trim().chars().count()
                ),
            ),
            Err(error) => fail(&key, format!("cannot read {}: {error}", path.display())),
        }
    }
    let known_key = |name: &Option<String>| {
        name.as_ref()
            .is_none_or(|name| pagerduty.routing_keys.contains_key(name))
    };
    let key_names = || {
        pagerduty
            .routing_keys
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (field, name) in [
        (
            "pagerduty.default_routing_key",
            &pagerduty.default_routing_key,
        ),
        ("pagerduty.self_routing_key", &pagerduty.self_routing_key),
    ] {
        if !known_key(name) {
            fail(
                field,
                format!(
                    "{name:?} is not in pagerduty.routing_keys ({})",
                    key_names()
                ),
            );
        }
    }
    for (rule, name) in &pagerduty.rule_routing_keys {
        if !pagerduty.routing_keys.contains_key(name) {
            fail(
                "pagerduty.rule_routing_keys",
                format!(
                    "rule {rule} names {name:?}, which is not in pagerduty.routing_keys ({})",
                    key_names()
                ),
            );
        }
    }
    if !pagerduty.routing_keys.is_empty() && pagerduty.default_routing_key.is_none() {
        fail(
            "pagerduty.default_routing_key",
            "required when routing keys are configured".to_owned(),
        );
    }
    match reqwest::Url::parse(&pagerduty.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {}
        _ => fail(
            "pagerduty.url",
            format!("{:?} is not an http(s) URL", pagerduty.url),
        ),
    }
    if pagerduty.events_per_minute == 0 || pagerduty.concurrency == 0 {
        fail(
            "pagerduty",
            "events_per_minute and concurrency must be greater than 0".to_owned(),
        );
    }
    for (name, notifier) in &config.notifiers {
        let key = format!("notifiers.{name}");
        if name == "pagerduty" {
            fail(
                &key,
                "\"pagerduty\" names PagerDuty itself; choose another name".to_owned(),
            );
        }
        if let Err(error) = std::fs::metadata(&notifier.url_file) {
            fail(
                &key,
                format!("cannot read {}: {error}", notifier.url_file.display()),
            );
        }
        if let Some(template) = &notifier.template
            && let Err(error) = crate::page::notify::render::check_template(template)
        {
            fail(&key, format!("template: {error}"));
        }
        if notifier.events_per_minute == 0 {
            fail(&key, "events_per_minute must be greater than 0".to_owned());
        }
    }
    let known_notifier = |name: &String| config.notifiers.contains_key(name);
    for name in &config.paging.fallback {
        if !known_notifier(name) {
            fail(
                "paging.fallback",
                format!("{name:?} is not a notifier under [notifiers]"),
            );
        }
    }
    for level in 1..=4u8 {
        let severity = config.severities.get(level);
        let key = format!("severities.P{level}");
        if !known_key(&severity.routing_key) {
            fail(
                &key,
                format!(
                    "routing_key {:?} is not in pagerduty.routing_keys ({})",
                    severity.routing_key,
                    key_names()
                ),
            );
        }
        for name in &severity.notify {
            if !known_notifier(name) {
                fail(
                    &key,
                    format!("notify: {name:?} is not a notifier under [notifiers]"),
                );
            }
        }
    }
    for (key, url) in [
        ("paging.external_url", &config.paging.external_url),
        ("paging.alertmanager_url", &config.paging.alertmanager_url),
    ] {
        if let Some(url) = url
            && !reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            fail(key, format!("{url:?} is not an http(s) URL"));
        }
    }
    if let Err(error) = crate::redact::Patterns::new(&config.bundles.redact) {
        fail("bundles.redact", error);
    }
    if config.bundles.concurrency == 0 {
        fail("bundles.concurrency", "must be greater than 0".to_owned());
    }
    if config.watchdog.enabled && config.watchdog.timeout < Duration::from_secs(1) {
        fail("watchdog.timeout", "must be at least 1s".to_owned());
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_text;

    #[test]
    fn paging_names_must_exist_and_keys_must_be_pagerduty_keys() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short.key");
        std::fs::write(&short, "abc\n").unwrap();
        let good = dir.path().join("good.key");
        std::fs::write(&good, format!("{}\n", "k".repeat(32))).unwrap();
        let url = dir.path().join("slack.url");
        std::fs::write(&url, "https://hooks.slack.invalid/x\n").unwrap();
        let text = format!(
            "[pagerduty]\nrouting_keys = {{ short = {short:?}, good = {good:?} }}\n\
             default_routing_key = \"good\"\nrule_routing_keys = {{ vastai = \"nope\" }}\n\
             [notifiers.ops]\nkind = \"slack\"\nurl_file = {url:?}\ntemplate = \"{{{{ nope( }}}}\"\n\
             [paging]\nfallback = [\"pager\"]\n\
             [severities.P2]\nnotify = [\"ops\", \"missing\"]\nrouting_key = \"good\"\n"
        );
        let errors = load_text(&text, &[]).unwrap_err();
        let all = errors.join("\n");
        assert!(all.contains("pagerduty.routing_keys.short: "), "{all}");
        assert!(
            all.contains("holds 3 characters; a PagerDuty routing key has 32"),
            "{all}"
        );
        assert!(all.contains("rule vastai names \"nope\""), "{all}");
        assert!(all.contains("notifiers.ops: template: "), "{all}");
        assert!(
            all.contains("paging.fallback: \"pager\" is not a notifier"),
            "{all}"
        );
        assert!(
            all.contains("notify: \"missing\" is not a notifier"),
            "{all}"
        );
        // Each error points at its line.
        assert!(errors.iter().all(|e| e.starts_with("F:")), "{errors:?}");
        assert_eq!(errors.len(), 5, "{all}");
        // The same file with the mistakes fixed loads.
        let fixed = text
            .replace("short = ", "other = ")
            .replace(&format!("{short:?}"), &format!("{good:?}"))
            .replace("\"nope\"", "\"good\"")
            .replace("{{ nope( }}", "{{ title }}")
            .replace("\"pager\"", "\"ops\"")
            .replace(", \"missing\"", "");
        let config = load_text(&fixed, &[]).unwrap();
        assert_eq!(config.severities.get(2).notify, vec!["ops".to_owned()]);
        assert_eq!(config.paging.fallback_after, Duration::from_secs(120));
    }

    #[test]
    fn semantic_errors_point_at_the_key() {
        let errors = load_text(
            "[server]\n\nlisten = \"0.0.0.0:9797\"\n[auth]\ningest_token_file = \"/nonexistent/token\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(errors[0].starts_with("F:3: server.listen: 0.0.0.0:9797 is not a loopback"));
        assert!(errors[1].starts_with("F:5: auth.ingest_token_file: cannot read"));
    }

    #[test]
    fn plaintext_on_a_public_address_needs_consent() {
        let config = load_text(
            "[server]\nlisten = \"0.0.0.0:9797\"\nallow_plaintext = true\n",
            &[],
        )
        .unwrap();
        assert!(config.server.allow_plaintext);
    }

    #[test]
    fn opening_an_endpoint_is_refused_off_loopback_and_beside_a_credential() {
        let errors = load_text(
            "[server]\nlisten = \"0.0.0.0:9797\"\nallow_plaintext = true\n\
             [auth]\nallow_unauthenticated = [\"api\"]\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0]
                .starts_with("F:5: auth.allow_unauthenticated: 0.0.0.0:9797 is not a loopback"),
            "{errors:?}"
        );
        let errors = load_text(
            "[auth]\nallow_unauthenticated = [\"admin\"]\n[actions]\nmode = \"enforce\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(errors.actions.mode, ActionMode::Enforce);
        let errors = load_text(
            "[auth]\nadmin_token_file = \"/dev/null\"\nallow_unauthenticated = [\"admin\", \"webhook\"]\n\
             [actions]\nmode = \"enforce\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("actions.mode: enforce needs a credential")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("also has a credential configured")),
            "{errors:?}"
        );
    }
}
