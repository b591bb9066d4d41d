//! cli: the command line (clap). `anyhow` is used here and in `daemon` only.
//!
//! Every command writes for a person by default (colour and symbols only on a terminal, see
//! [`output`]) and JSON with `--json`. The commands that read the store live in [`incidents`]
//! and [`bundles`]; the calls to the running daemon in [`admin`].

mod admin;
mod bundles;
mod incidents;
pub mod output;

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use self::output::Style;

use crate::config;
use crate::episodes::reconcile::EpisodeStatus;
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
        /// Print the outcome as JSON (ok, errors, warnings, rules and files counted) on
        /// standard output instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the `[[test]]` cases of rule files (default: the configured rules directory).
    Test {
        /// Rule files or directories.
        files: Vec<PathBuf>,
        /// Print each file's passed count and failures as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// What would happen to a webhook payload: rule, matchers, probes, branch, actions, page.
    /// No side effects: actions are rendered, not run.
    Explain {
        /// The alert to explain: a webhook body as Alertmanager sends it, a bundle's
        /// alert.json, or the output of `incidents show ID --json`.
        #[arg(long)]
        payload: PathBuf,
        /// Use this result instead of running the probe: NAME=JSON, e.g.
        /// status='{"indicator":"major"}' or status='{"ok":false,"error":"timeout"}'.
        #[arg(long = "probe", value_name = "NAME=JSON")]
        probes: Vec<String>,
        /// Print the explanation as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop every automatic action (pages still go) until `resume` or the time runs out.
    /// Talks to the running daemon with the admin credential.
    Pause {
        /// How long, e.g. 30m or 1h30m; without it, until resumed.
        #[arg(long = "for", value_name = "DURATION", value_parser = crate::duration::parse)]
        duration: Option<std::time::Duration>,
        /// Why, recorded with every action the pause holds back (default: "paused by an
        /// operator").
        #[arg(long)]
        reason: Option<String>,
        /// Print the daemon's answer as JSON instead of a sentence.
        #[arg(long)]
        json: bool,
    },
    /// Let automatic actions run again.
    Resume {
        /// Print the daemon's answer as JSON instead of a sentence.
        #[arg(long)]
        json: bool,
    },
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
        /// Markdown for people, or JSON.
        #[arg(long, value_enum, default_value_t = ReportFormat::Md)]
        format: ReportFormat,
        /// The same as `--format json`.
        #[arg(long, conflicts_with = "format")]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Markdown.
    Md,
    /// JSON, as the API's `/api/v1/report` answers.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum BundlesCommand {
    /// List bundles, newest first.
    List {
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print the store's rows as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a bundle's manifest: its files, each collector's outcome, redactions.
    Show {
        /// The incident whose bundle to show (an ID from `incidents list` or `bundles list`).
        id: String,
        /// Print the bundle's manifest.json as it is instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusFilter {
    /// Still firing.
    Firing,
    /// Resolved by Alertmanager.
    Resolved,
    /// No longer sent by Alertmanager without being resolved.
    Gone,
    /// Silenced in Alertmanager.
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
        /// Only incidents in this status.
        #[arg(long, value_enum)]
        status: Option<StatusFilter>,
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print the incidents as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one incident: labels, decision, probes, actions, paging and transitions.
    Show {
        /// The incident's ID, as `incidents list` shows it.
        id: String,
        /// Print everything known about the incident as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Parse the command line and run; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let variables: Vec<(String, String)> = std::env::vars().collect();
    // The CLI's one reading of the environment besides configuration overrides: whether
    // people want colour (https://no-color.org).
    let no_color = variables
        .iter()
        .find(|(name, _)| name == "NO_COLOR")
        .map(|(_, value)| value.clone());
    let style = Style::decide(std::io::stdout().is_terminal(), no_color.as_deref());
    let env = config::env_overrides(variables);
    let result = match cli.command {
        Command::Run => crate::daemon::run(crate::daemon::RunOptions {
            config_path: cli.config,
            env,
        })
        .map(|()| 0),
        Command::Check { config_only, json } => Ok(check(cli.config, &env, config_only, json)),
        Command::Test { files, json } => test_rules(cli.config, &env, files, json),
        Command::Explain {
            payload,
            probes,
            json,
        } => load(cli.config.as_deref(), &env)
            .and_then(|config| crate::explain::run(config, &payload, &probes, json)),
        Command::Pause {
            duration,
            reason,
            json,
        } => {
            let mut query = Vec::new();
            if let Some(duration) = duration {
                query.push(("for", crate::duration::format(duration)));
            }
            if let Some(reason) = reason {
                query.push(("reason", reason));
            }
            admin::run(cli.config, &env, "/-/pause", &query, json, style).map(|()| 0)
        }
        Command::Resume { json } => {
            admin::run(cli.config, &env, "/-/resume", &[], json, style).map(|()| 0)
        }
        Command::Incidents { command } => open_reader(cli.config, &env)
            .and_then(|reader| incidents::run(&reader, command, style))
            .map(|()| 0),
        Command::Bundles { command } => {
            let state_dir = load(cli.config.as_deref(), &env).map(|c| c.store.dir);
            state_dir
                .and_then(|dir| {
                    let reader = open_reader(cli.config, &env)?;
                    bundles::run(&reader, &dir, command, style)
                })
                .map(|()| 0)
        }
        Command::Report {
            since,
            format,
            json,
        } => {
            let format = if json { ReportFormat::Json } else { format };
            report(cli.config, &env, since, format).map(|()| 0)
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("nightshift: {error:#}");
            1
        }
    }
}

/// What `check` found: every error and warning, and what loaded.
#[derive(Debug, Default, serde::Serialize)]
struct CheckOutcome {
    ok: bool,
    /// The configuration checked: its file, or the built-in defaults.
    config: String,
    errors: Vec<String>,
    warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rules_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rules: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<usize>,
}

fn check(path: Option<PathBuf>, env: &[(String, String)], config_only: bool, json: bool) -> i32 {
    let outcome = check_outcome(path, env, config_only);
    if json {
        match serde_json::to_string_pretty(&outcome) {
            Ok(text) => println!("{text}"),
            Err(error) => {
                eprintln!("nightshift: {error}");
                return 1;
            }
        }
    } else {
        for error in &outcome.errors {
            eprintln!("{error}");
        }
        for warning in &outcome.warnings {
            eprintln!("warning: {warning}");
        }
        if outcome.ok {
            match (&outcome.rules_dir, outcome.rules, outcome.files) {
                (Some(dir), Some(rules), Some(files)) => println!(
                    "{}: configuration OK; {}: {rules} rules in {files} files OK",
                    outcome.config,
                    dir.display()
                ),
                _ => println!("{}: configuration OK", outcome.config),
            }
        }
    }
    if outcome.ok { 0 } else { 1 }
}

fn check_outcome(
    path: Option<PathBuf>,
    env: &[(String, String)],
    config_only: bool,
) -> CheckOutcome {
    let mut outcome = CheckOutcome {
        config: path.as_ref().map_or_else(
            || "built-in defaults".to_owned(),
            |p| p.display().to_string(),
        ),
        ..CheckOutcome::default()
    };
    let loaded = match config::load(path.as_deref(), env) {
        Ok(loaded) => loaded,
        Err(errors) => {
            outcome.errors = errors.0.iter().map(ToString::to_string).collect();
            return outcome;
        }
    };
    if let Err(errors) =
        crate::auth::Credentials::load(&loaded.config.auth, crate::auth::Missing::CheckOnly)
    {
        let origin = loaded.origins.of("");
        outcome
            .errors
            .extend(errors.into_iter().map(|error| format!("{origin}: {error}")));
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Err(error) = crate::server::load_tls(&loaded.config.server) {
        outcome.errors.push(format!(
            "{}: {error}",
            loaded.origins.of("server.tls_cert_file")
        ));
    }
    if !outcome.errors.is_empty() {
        return outcome;
    }
    if config_only {
        outcome.ok = true;
        return outcome;
    }
    let options = crate::rules::LoadOptions::from_config(&loaded.config);
    match crate::rules::load_dir(&loaded.config.rules.dir, &options) {
        Ok(set) => {
            outcome.ok = true;
            outcome.warnings = set.warnings.iter().map(ToString::to_string).collect();
            outcome.rules_dir = Some(loaded.config.rules.dir.clone());
            outcome.rules = Some(set.rules.len());
            outcome.files = Some(set.files.len());
        }
        Err(errors) => {
            for error in errors {
                outcome.errors.push(
                    if error.file == loaded.config.rules.dir && error.line.is_none() {
                        // The directory itself is wrong: point at the key that names it.
                        format!("{}: rules.dir: {error}", loaded.origins.of("rules.dir"))
                    } else {
                        error.to_string()
                    },
                );
            }
        }
    }
    outcome
}

fn test_rules(
    path: Option<PathBuf>,
    env: &[(String, String)],
    files: Vec<PathBuf>,
    json: bool,
) -> anyhow::Result<i32> {
    let config = load(path.as_deref(), env)?;
    let options = crate::rules::LoadOptions::with_tests(&config);
    let files = if files.is_empty() {
        vec![config.rules.dir.clone()]
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
            if json {
                let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"passed": false, "errors": errors, "files": []})
                    )?
                );
            } else {
                for error in errors {
                    eprintln!("{error}");
                }
            }
            return Ok(1);
        }
    };
    let reports = crate::rules::testing::run(&set);
    let (text, passed) = crate::rules::testing::render(&reports);
    if json {
        let files: Vec<serde_json::Value> = reports
            .iter()
            .map(|report| {
                serde_json::json!({
                    "file": report.file,
                    "passed": report.passed,
                    "failures": report.failures,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"passed": passed, "errors": [], "files": files})
            )?
        );
    } else {
        print!("{text}");
    }
    Ok(if passed { 0 } else { 1 })
}

/// The configuration, or every error in it.
pub(crate) fn load(
    path: Option<&std::path::Path>,
    env: &[(String, String)],
) -> anyhow::Result<config::Config> {
    config::load(path, env)
        .map(|loaded| loaded.config)
        .map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}"))
}

fn open_reader(path: Option<PathBuf>, env: &[(String, String)]) -> anyhow::Result<Reader> {
    let config = load(path.as_deref(), env)?;
    let database = store::database_path(&config.store.dir);
    Reader::open(&database).context("cannot open the store")
}

fn report(
    path: Option<PathBuf>,
    env: &[(String, String)],
    since: std::time::Duration,
    format: ReportFormat,
) -> anyhow::Result<()> {
    let config = load(path.as_deref(), env)?;
    let options = crate::bundle::bundler::ReportOptions {
        severities: config.severities.clone(),
        external_url: config.paging.external_url.clone(),
        state_dir: config.store.dir.clone(),
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every argument of `command` and its subcommands without help text, as `path --arg`.
    fn without_help(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
        let path = format!("{path} {}", command.get_name()).trim().to_owned();
        for argument in command.get_arguments() {
            let id = argument.get_id().as_str();
            // clap's own flags explain themselves.
            if matches!(id, "help" | "version") {
                continue;
            }
            if argument.get_help().is_none() && argument.get_long_help().is_none() {
                let shown = argument
                    .get_long()
                    .map_or_else(|| format!("<{id}>"), |long| format!("--{long}"));
                missing.push(format!("{path} {shown}"));
            }
        }
        for subcommand in command.get_subcommands() {
            if subcommand.get_about().is_none() {
                missing.push(format!("{path} {} (the command)", subcommand.get_name()));
            }
            without_help(subcommand, &path, missing);
        }
    }

    #[test]
    fn every_argument_has_a_help_line() {
        let mut missing = Vec::new();
        without_help(&Cli::command(), "", &mut missing);
        assert!(
            missing.is_empty(),
            "without help text:\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn the_help_walk_finds_an_argument_without_help() {
        let command = clap::Command::new("t").subcommand(
            clap::Command::new("sub")
                .about("a subcommand")
                .arg(clap::Arg::new("bare").long("bare")),
        );
        let mut missing = Vec::new();
        without_help(&command, "", &mut missing);
        assert_eq!(missing, ["t sub --bare"]);
    }

    #[test]
    fn report_json_is_format_json() {
        let cli = Cli::try_parse_from(["nightshift", "report", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Report {
                json: true,
                format: ReportFormat::Md,
                ..
            }
        ));
        assert!(Cli::try_parse_from(["nightshift", "report", "--json", "--format", "md"]).is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
