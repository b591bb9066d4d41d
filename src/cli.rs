//! cli: the command line (clap). `anyhow` is used here and in `daemon` only.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config;
use crate::reconcile::EpisodeStatus;
use crate::store::{self, Reader};

#[derive(Debug, Parser)]
#[command(
    name = "nightshift",
    version,
    about = "First responder for Alertmanager alerts"
)]
pub struct Cli {
    /// Configuration file (TOML). Without it, the built-in defaults apply.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Run,
    /// Validate the configuration (and rules); every error at once, exit 1 on any.
    Check {
        /// Check only the configuration file and the files it names, not the rules.
        #[arg(long)]
        config_only: bool,
    },
    /// Run the `[[test]]` cases of rule files (default: the configured rules directory).
    Test {
        /// Rule files or directories.
        files: Vec<PathBuf>,
    },
    /// What would happen to a webhook payload: rule, matchers, probes, branch, actions, page.
    /// No side effects: actions are rendered, not run.
    Explain {
        /// A webhook body as Alertmanager sends it.
        #[arg(long)]
        payload: PathBuf,
        /// Use this result instead of running the probe: NAME=JSON, e.g.
        /// status='{"indicator":"major"}' or status='{"ok":false,"error":"timeout"}'.
        #[arg(long = "probe", value_name = "NAME=JSON")]
        probes: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Stop every automatic action (pages still go) until `resume` or the time runs out.
    /// Talks to the running daemon with the admin credential.
    Pause {
        /// How long, e.g. 30m or 1h30m; without it, until resumed.
        #[arg(long = "for", value_name = "DURATION", value_parser = crate::duration::parse)]
        duration: Option<std::time::Duration>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Let automatic actions run again.
    Resume,
    /// What happened, from the store.
    Incidents {
        #[command(subcommand)]
        command: IncidentsCommand,
    },
    /// Debug bundles, from the store.
    Bundles {
        #[command(subcommand)]
        command: BundlesCommand,
    },
    /// The night in one report: incidents by severity, what was done and whether it helped,
    /// who was paged, what waits for the next business day.
    Report {
        /// How far back, e.g. 24h or 3d.
        #[arg(long, default_value = "24h", value_parser = crate::duration::parse)]
        since: std::time::Duration,
        #[arg(long, value_enum, default_value_t = ReportFormat::Md)]
        format: ReportFormat,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ReportFormat {
    Md,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum BundlesCommand {
    /// List bundles, newest first.
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Show a bundle's manifest: its files, each collector's outcome, redactions.
    Show { id: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusFilter {
    Firing,
    Resolved,
    Gone,
    Silenced,
}

impl From<StatusFilter> for EpisodeStatus {
    fn from(filter: StatusFilter) -> Self {
        match filter {
            StatusFilter::Firing => EpisodeStatus::Firing,
            StatusFilter::Resolved => EpisodeStatus::Resolved,
            StatusFilter::Gone => EpisodeStatus::Gone,
            StatusFilter::Silenced => EpisodeStatus::Silenced,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum IncidentsCommand {
    /// List incidents, newest first.
    List {
        #[arg(long, value_enum)]
        status: Option<StatusFilter>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Show one incident with its transitions.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

/// Parse the command line and run; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let env = config::env_overrides(std::env::vars());
    let result = match cli.command {
        Command::Run => crate::daemon::run(crate::daemon::RunOptions {
            config_path: cli.config,
            env,
        })
        .map(|()| 0),
        Command::Check { config_only } => Ok(check(cli.config, &env, config_only)),
        Command::Test { files } => test_rules(cli.config, &env, files),
        Command::Explain {
            payload,
            probes,
            json,
        } => crate::explain::run(cli.config, &env, &payload, &probes, json),
        Command::Pause { duration, reason } => {
            let mut query = Vec::new();
            if let Some(duration) = duration {
                query.push(("for", crate::duration::format(duration)));
            }
            if let Some(reason) = reason {
                query.push(("reason", reason));
            }
            admin_call(cli.config, &env, "/-/pause", &query).map(|()| 0)
        }
        Command::Resume => admin_call(cli.config, &env, "/-/resume", &[]).map(|()| 0),
        Command::Incidents { command } => incidents(cli.config, &env, command).map(|()| 0),
        Command::Bundles { command } => bundles(cli.config, &env, command).map(|()| 0),
        Command::Report { since, format } => report(cli.config, &env, since, format).map(|()| 0),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("nightshift: {error:#}");
            1
        }
    }
}

fn check(path: Option<PathBuf>, env: &[(String, String)], config_only: bool) -> i32 {
    let loaded = match config::load(path.as_deref(), env) {
        Ok(loaded) => loaded,
        Err(errors) => {
            for error in &errors.0 {
                eprintln!("{error}");
            }
            return 1;
        }
    };
    let mut failed = false;
    if let Err(errors) =
        crate::auth::Credentials::load(&loaded.config.auth, crate::auth::Missing::CheckOnly)
    {
        for error in errors {
            eprintln!("{}: {error}", loaded.origins.of(""));
        }
        failed = true;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Err(error) = crate::server::load_tls(&loaded.config.server) {
        eprintln!("{}: {error}", loaded.origins.of("server.tls_cert_file"));
        failed = true;
    }
    if failed {
        return 1;
    }
    let shown = path.map_or_else(
        || "built-in defaults".to_owned(),
        |p| p.display().to_string(),
    );
    if config_only {
        println!("{shown}: configuration OK");
        return 0;
    }
    let options = crate::rules::LoadOptions::from_config(&loaded.config);
    match crate::rules::load_dir(&loaded.config.rules.dir, &options) {
        Ok(set) => {
            for warning in &set.warnings {
                eprintln!("warning: {warning}");
            }
            println!(
                "{shown}: configuration OK; {}: {} rules in {} files OK",
                loaded.config.rules.dir.display(),
                set.rules.len(),
                set.files.len()
            );
            0
        }
        Err(errors) => {
            for error in errors {
                if error.file == loaded.config.rules.dir && error.line.is_none() {
                    // The directory itself is wrong: point at the key that names it.
                    eprintln!("{}: rules.dir: {error}", loaded.origins.of("rules.dir"));
                } else {
                    eprintln!("{error}");
                }
            }
            1
        }
    }
}

fn test_rules(
    path: Option<PathBuf>,
    env: &[(String, String)],
    files: Vec<PathBuf>,
) -> anyhow::Result<i32> {
    let loaded = config::load(path.as_deref(), env)
        .map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}"))?;
    let options = crate::rules::LoadOptions::with_tests(&loaded.config);
    let files = if files.is_empty() {
        vec![loaded.config.rules.dir.clone()]
    } else {
        files
    };
    let mut paths = Vec::new();
    for file in files {
        if file.is_dir() {
            paths.extend(crate::rules::load::rule_files(&file).map_err(|e| anyhow::anyhow!(e))?);
        } else {
            paths.push(file);
        }
    }
    let set = match crate::rules::load_files(&paths, &options) {
        Ok(set) => set,
        Err(errors) => {
            for error in errors {
                eprintln!("{error}");
            }
            return Ok(1);
        }
    };
    let reports = crate::rules::testing::run(&set);
    let (text, passed) = crate::rules::testing::render(&reports);
    print!("{text}");
    Ok(if passed { 0 } else { 1 })
}

/// POST to the running daemon's admin endpoint, found through the address file in the state
/// directory, with the admin credential from the configuration.
fn admin_call(
    path: Option<PathBuf>,
    env: &[(String, String)],
    endpoint: &str,
    query: &[(&str, String)],
) -> anyhow::Result<()> {
    let loaded = config::load(path.as_deref(), env)
        .map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}"))?;
    let config = loaded.config;
    let address_file = config.store.dir.join(crate::daemon::ADDRESS_FILE);
    let base = std::fs::read_to_string(&address_file).with_context(|| {
        format!(
            "is nightshift running? cannot read {}",
            address_file.display()
        )
    })?;
    let mut url = reqwest::Url::parse(&format!("{}{endpoint}", base.trim()))
        .context("the address file does not hold a URL")?;
    for (key, value) in query {
        url.query_pairs_mut().append_pair(key, value);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let body = runtime.block_on(async {
        // The daemon's own address: never through a proxy, whatever the environment says.
        let client = crate::http_client::client(&config::HttpConfig::default())
            .map_err(|error| anyhow::anyhow!(error))?;
        let mut request = client.post(url.clone());
        if let Some(file) = &config.auth.admin_token_file {
            let token = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            request = request.bearer_auth(token.trim());
        } else if config.auth.admin_basic_auth_file.is_none()
            && let Some(token) = crate::auth::generated_admin_token(&config.store.dir)
        {
            // The daemon generated the admin credential: whoever may read it may use it.
            request = request.bearer_auth(token);
        } else if let Some(file) = &config.auth.admin_basic_auth_file {
            let pair = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let (user, password) = pair
                .trim_end()
                .split_once(':')
                .unwrap_or((pair.trim_end(), ""));
            request = request.basic_auth(user, Some(password));
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            anyhow::bail!("POST {url}: {status}: {text}");
        }
        Ok::<String, anyhow::Error>(text)
    })?;
    println!("{body}");
    Ok(())
}

fn open_reader(path: Option<PathBuf>, env: &[(String, String)]) -> anyhow::Result<Reader> {
    let loaded = config::load(path.as_deref(), env)
        .map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}"))?;
    let database = store::database_path(&loaded.config.store.dir);
    Reader::open(&database).context("cannot open the store")
}

fn bundles(
    path: Option<PathBuf>,
    env: &[(String, String)],
    command: BundlesCommand,
) -> anyhow::Result<()> {
    let loaded = config::load(path.as_deref(), env)
        .map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}"))?;
    let state_dir = loaded.config.store.dir.clone();
    let reader = open_reader(path, env)?;
    match command {
        BundlesCommand::List { limit, json } => {
            let rows = reader.bundles(limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            println!(
                "{:<48} {:<8} {:<9} {:>10}  PATH",
                "INCIDENT", "STATE", "STATUS", "BYTES"
            );
            for row in rows {
                println!(
                    "{:<48} {:<8} {:<9} {:>10}  {}",
                    row.episode_id,
                    row.state,
                    row.status,
                    row.bytes,
                    row.path.unwrap_or_default()
                );
            }
        }
        BundlesCommand::Show { id } => {
            let row = reader
                .bundle(&id)?
                .with_context(|| format!("no bundle for incident {id}"))?;
            let path = row
                .path
                .filter(|_| matches!(row.state.as_str(), "written" | "final"))
                .with_context(|| format!("the bundle of {id} is {}", row.state))?;
            let file =
                crate::bundle::bundler::resolve_path(&state_dir, &path).with_context(|| {
                    format!("bundle path {path:?} is outside the bundles directory")
                })?;
            let manifest = crate::bundle::archive::read_one(&file, "manifest.json")
                .with_context(|| format!("cannot read {}", file.display()))?
                .with_context(|| format!("{} has no manifest.json", file.display()))?;
            println!("{}", String::from_utf8_lossy(&manifest));
        }
    }
    Ok(())
}

fn report(
    path: Option<PathBuf>,
    env: &[(String, String)],
    since: std::time::Duration,
    format: ReportFormat,
) -> anyhow::Result<()> {
    let loaded = config::load(path.as_deref(), env)
        .map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}"))?;
    let options = crate::bundle::bundler::ReportOptions {
        severities: loaded.config.severities.clone(),
        external_url: loaded.config.paging.external_url.clone(),
        state_dir: loaded.config.store.dir.clone(),
    };
    let reader = open_reader(path, env)?;
    let now = chrono::Utc::now().timestamp_millis();
    let facts = crate::bundle::bundler::report_facts(
        &reader,
        &options,
        now - crate::clock::duration_millis(since),
        now,
    )?;
    match format {
        ReportFormat::Md => print!("{}", crate::report::markdown(&facts)),
        ReportFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&crate::report::json(&facts))?
        ),
    }
    Ok(())
}

fn incidents(
    path: Option<PathBuf>,
    env: &[(String, String)],
    command: IncidentsCommand,
) -> anyhow::Result<()> {
    let reader = open_reader(path, env)?;
    match command {
        IncidentsCommand::List {
            status,
            limit,
            json,
        } => {
            let incidents = reader.incidents(status.map(Into::into), limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&incidents)?);
                return Ok(());
            }
            println!(
                "{:<48} {:<9} {:<4} {:<28} {:<24} LAST SEEN",
                "ID", "STATUS", "SEV", "ALERTNAME", "FIRST SEEN"
            );
            for incident in incidents {
                println!(
                    "{:<48} {:<9} {:<4} {:<28} {:<24} {}",
                    incident.id,
                    incident.status,
                    incident.severity.as_deref().unwrap_or("-"),
                    incident.alertname.as_deref().unwrap_or("-"),
                    incident.first_seen,
                    incident.last_seen
                );
            }
        }
        IncidentsCommand::Show { id, json } => {
            let Some(incident) = reader.incident(&id)? else {
                anyhow::bail!("no incident {id}");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&incident)?);
                return Ok(());
            }
            let s = &incident.summary;
            println!("incident   {}", s.id);
            println!("status     {}", s.status);
            println!("alert      {}", s.alertname.as_deref().unwrap_or("-"));
            println!("labels     {}", s.labels);
            println!("annotations {}", incident.annotations);
            println!("starts at  {}", s.starts_at);
            println!("first seen {}", s.first_seen);
            println!("last seen  {}", s.last_seen);
            if let Some(closed) = &s.closed_at {
                println!("closed at  {closed}");
            }
            println!("group      {}", incident.group_key);
            if let Some(decision) = incident.decisions.last() {
                let trace = &decision.trace;
                println!(
                    "decision   rule {} · severity {} · branch {} ({} decision(s))",
                    decision.rule,
                    decision.severity,
                    decision.branch,
                    incident.decisions.len()
                );
                if let Some(reason) = trace["classification"]["reason"].as_str() {
                    println!("  why      {reason}");
                }
                if let Some(probes) = trace["probes"].as_object() {
                    for (name, result) in probes {
                        let state = if result["ok"] == true {
                            "ok".to_owned()
                        } else {
                            format!("failed: {}", result["error"].as_str().unwrap_or(""))
                        };
                        println!("  probe    {name}: {state} {}", result);
                    }
                }
                if let Some(actions) = trace["actions"].as_array() {
                    for action in actions {
                        println!("  action   {} {}", action["name"], action["rendered"]);
                    }
                }
                if let Some(note) = trace["note"].as_str().filter(|n| !n.is_empty()) {
                    println!("  note     {note}");
                }
                if let Some(page) = trace["page"].as_object() {
                    println!(
                        "  page     {} {} ({})",
                        page["severity"].as_str().unwrap_or(""),
                        page["pagerduty_severity"].as_str().unwrap_or(""),
                        page["policy"].as_str().unwrap_or("")
                    );
                }
                for earlier in &incident.decisions {
                    println!(
                        "  {}  {:<12} {} {} {}{}",
                        earlier.at,
                        earlier.kind,
                        earlier.rule,
                        earlier.severity,
                        earlier.branch,
                        if earlier.changed { " (changed)" } else { "" }
                    );
                }
            }
            if !incident.actions.is_empty() {
                println!("actions:");
                for action in &incident.actions {
                    println!(
                        "  {}  {} ({}) on {}: {} → {}",
                        action["created_at"].as_str().unwrap_or(""),
                        action["action"].as_str().unwrap_or(""),
                        action["kind"].as_str().unwrap_or(""),
                        action["target"].as_str().unwrap_or(""),
                        action["verdict"].as_str().unwrap_or(""),
                        action["state"].as_str().unwrap_or("")
                    );
                    if !action["result"].is_null() {
                        println!("      result {}", action["result"]);
                    }
                }
            }
            let paging = &incident.paging;
            if !paging.is_null() {
                // What reached people first (the one page state every view shows), then
                // the decision that asked for it.
                println!(
                    "page       {} — {}",
                    paging["page_state"].as_str().unwrap_or(""),
                    paging["summary"].as_str().unwrap_or("")
                );
                println!(
                    "paging: decided {} ({} policy {}): {}",
                    paging["state"].as_str().unwrap_or(""),
                    paging["severity"].as_str().unwrap_or(""),
                    paging["policy"].as_str().unwrap_or(""),
                    paging["reason"].as_str().unwrap_or("")
                );
                for event in paging["events"].as_array().into_iter().flatten() {
                    println!(
                        "  {}  {} {} → {} (attempts {}){}",
                        event["created_at"].as_str().unwrap_or(""),
                        event["channel"].as_str().unwrap_or(""),
                        event["kind"].as_str().unwrap_or(""),
                        event["state"].as_str().unwrap_or(""),
                        event["attempts"],
                        event["last_error"]
                            .as_str()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    );
                }
            }
            println!("transitions:");
            for transition in &incident.transitions {
                println!(
                    "  {}  {:<10} {}",
                    transition.at, transition.kind, transition.detail
                );
            }
        }
    }
    Ok(())
}
