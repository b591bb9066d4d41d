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
    /// What happened, from the store.
    Incidents {
        #[command(subcommand)]
        command: IncidentsCommand,
    },
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
        Command::Incidents { command } => incidents(cli.config, &env, command).map(|()| 0),
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
    if let Err(errors) = crate::auth::Credentials::load(&loaded.config.auth) {
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
                eprintln!("{error}");
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
    let options = crate::rules::LoadOptions::from_config(&loaded.config);
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

fn open_reader(path: Option<PathBuf>, env: &[(String, String)]) -> anyhow::Result<Reader> {
    let loaded = config::load(path.as_deref(), env)
        .map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}"))?;
    let database = store::database_path(&loaded.config.store.dir);
    Reader::open(&database).context("cannot open the store")
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
