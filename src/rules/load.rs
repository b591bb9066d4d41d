//! Loading rule files: parse each element of a file on its own (so one mistake does not hide
//! the next), then validate into the compiled types of `rules`. Every error carries the file,
//! the line where one is known, and the rule or key it concerns.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value as Json, json};
use toml::de::{DeTable, DeValue};

use super::action::ActionSpec;
use super::collect::{self, CollectorSpec};
use super::expr::{Condition, Variables};
use super::matcher::{self, MatchType};
use super::template::Template;
use super::testing;
use super::{Branch, ProbeDef, Rule, RuleFile, RuleSet, Severity};
use crate::config::{DefaultRuleConfig, SeveritiesConfig};
use crate::probes::{self, ProbeRequest};

/// One problem in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// The rule, probe, action, collector or test concerned; empty for the file as a whole.
    pub context: String,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.context.is_empty() {
            write!(f, ": {}", self.context)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What loading needs from the daemon's configuration.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub default_rule: DefaultRuleConfig,
    pub severities: SeveritiesConfig,
    /// The Kubernetes namespace allowlist.
    pub namespaces: Vec<String>,
    /// Compile the `[[test]]` cases too, reading their payload files. Only `nightshift test`
    /// needs them: the daemon, `check` and `explain` parse a case's structure but never read
    /// its files, so runbooks copied without their test data still load.
    pub tests: bool,
}

impl LoadOptions {
    pub fn from_config(config: &crate::config::Config) -> LoadOptions {
        LoadOptions {
            default_rule: config.default_rule.clone(),
            severities: config.severities.clone(),
            namespaces: config.kubernetes.namespaces.clone(),
            tests: false,
        }
    }

    /// For `nightshift test`: the rules and their `[[test]]` cases.
    pub fn with_tests(config: &crate::config::Config) -> LoadOptions {
        LoadOptions {
            tests: true,
            ..LoadOptions::from_config(config)
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_cache() -> Duration {
    Duration::from_secs(30)
}

fn default_reevaluate() -> Duration {
    Duration::from_secs(300)
}

fn default_get() -> String {
    "GET".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRunbook {
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    description: String,
    #[serde(default)]
    #[allow(dead_code)]
    owner: String,
    #[serde(default)]
    #[allow(dead_code)]
    url: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    matchers: Vec<String>,
    #[serde(default)]
    annotation_matchers: Vec<String>,
    severity: String,
    #[serde(default, rename = "continue")]
    continue_matching: bool,
    #[serde(default)]
    probes: Vec<String>,
    #[serde(default)]
    collect: Vec<String>,
    summary: Option<String>,
    #[serde(default = "default_reevaluate", with = "crate::duration::text")]
    reevaluate_every: Duration,
    #[serde(default)]
    shadow: bool,
    #[serde(default)]
    branch: Vec<RawBranch>,
    on_probe_failure: Option<RawFailureBranch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBranch {
    name: String,
    when: Option<String>,
    #[serde(default)]
    otherwise: bool,
    #[serde(default)]
    actions: Vec<String>,
    severity: Option<String>,
    note: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFailureBranch {
    #[serde(default)]
    actions: Vec<String>,
    severity: Option<String>,
    note: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum RawProbe {
    Statuspage {
        url: String,
        #[serde(default = "default_timeout", with = "crate::duration::text")]
        timeout: Duration,
        #[serde(default = "default_cache", with = "crate::duration::text")]
        cache: Duration,
    },
    Http {
        url: String,
        #[serde(default = "default_get")]
        method: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        capture_headers: Vec<String>,
        #[serde(default)]
        json_fields: Vec<String>,
        #[serde(default = "default_timeout", with = "crate::duration::text")]
        timeout: Duration,
        #[serde(default = "default_cache", with = "crate::duration::text")]
        cache: Duration,
    },
    Prometheus {
        query: String,
        #[serde(default)]
        urls: Vec<String>,
        #[serde(default = "default_timeout", with = "crate::duration::text")]
        timeout: Duration,
        #[serde(default = "default_cache", with = "crate::duration::text")]
        cache: Duration,
    },
    Kubernetes {
        namespace: String,
        workload: Option<String>,
        object: Option<String>,
        #[serde(default = "default_timeout", with = "crate::duration::text")]
        timeout: Duration,
        #[serde(default = "default_cache", with = "crate::duration::text")]
        cache: Duration,
    },
}

/// Load every `*.toml` in `dir`, in file-name order. A missing directory is an empty set.
pub fn load_dir(dir: &Path, options: &LoadOptions) -> Result<RuleSet, Vec<LoadError>> {
    let error = |message: String| {
        vec![LoadError {
            file: dir.to_path_buf(),
            line: None,
            context: String::new(),
            message,
        }]
    };
    // A configured directory that is missing or empty is an error, not an empty rule set:
    // runbooks that silently went missing (a relative path under systemd, a copy that left
    // them out) would leave every alert to the default rule with nobody told.
    if !dir.is_dir() {
        return Err(error(
            "the rules directory does not exist ([rules] dir; a relative path is relative to \
             the config file)"
                .to_owned(),
        ));
    }
    let files = rule_files(dir).map_err(error)?;
    if files.is_empty() {
        return Err(error(
            "the rules directory holds no rule file (*.toml)".to_owned(),
        ));
    }
    let mut set = load_files(&files, options)?;
    if set.rules.is_empty() {
        return Err(error(format!(
            "the rules directory holds no rule ({} file(s), none with a [[rule]])",
            files.len()
        )));
    }
    set.source = dir.to_path_buf();
    Ok(set)
}

/// The rule files of a directory, sorted by file name; none when it does not exist.
pub fn rule_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let entries =
        std::fs::read_dir(dir).map_err(|error| format!("cannot read rules directory: {error}"))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml") && path.is_file())
        .collect();
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Load the given files in order into one set; every error of every file is returned.
pub fn load_files(paths: &[PathBuf], options: &LoadOptions) -> Result<RuleSet, Vec<LoadError>> {
    let mut set = RuleSet::default_only(options.default_rule.clone(), options.severities.clone());
    set.source = paths
        .first()
        .and_then(|p| p.parent())
        .map_or_else(PathBuf::new, Path::to_path_buf);
    let mut errors = Vec::new();
    let mut names: HashSet<String> = HashSet::new();
    for path in paths {
        let first_error = errors.len();
        let mut warnings = Vec::new();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                load_file(
                    path,
                    &text,
                    options,
                    &mut set,
                    &mut names,
                    &mut errors,
                    &mut warnings,
                );
            }
            Err(error) => errors.push(LoadError {
                file: path.clone(),
                line: None,
                context: String::new(),
                message: format!("cannot read: {error}"),
            }),
        }
        // Each file is checked part by part (probes, then actions, collectors, rules), but
        // people read it top to bottom: report in line order. The sorts are stable, so
        // problems on one line keep the order they were found in.
        errors[first_error..].sort_by_key(|error| error.line);
        warnings.sort_by_key(|warning| warning.line);
        set.warnings
            .extend(warnings.iter().map(ToString::to_string));
    }
    if errors.is_empty() {
        set.index();
        Ok(set)
    } else {
        Err(errors)
    }
}

struct FileContext<'a> {
    path: &'a Path,
    errors: &'a mut Vec<LoadError>,
    /// Things that load but will not work as written, with the same shape as errors.
    warnings: &'a mut Vec<LoadError>,
    /// Offsets of every newline, so a line number is a binary search rather than a count
    /// from the start of the file each time.
    newlines: Vec<usize>,
}

impl FileContext<'_> {
    fn line(&self, offset: usize) -> usize {
        self.newlines.partition_point(|&newline| newline < offset) + 1
    }

    fn error(&mut self, offset: Option<usize>, context: &str, message: impl Into<String>) {
        let line = offset.map(|o| self.line(o));
        self.errors.push(LoadError {
            file: self.path.to_path_buf(),
            line,
            context: context.to_owned(),
            message: message.into(),
        });
    }

    fn warn(&mut self, offset: usize, context: &str, message: impl Into<String>) {
        let line = Some(self.line(offset));
        self.warnings.push(LoadError {
            file: self.path.to_path_buf(),
            line,
            context: context.to_owned(),
            message: message.into(),
        });
    }

    /// Deserialize one element, reporting a failure at the exact place serde points to.
    fn parse<T: for<'de> Deserialize<'de>>(
        &mut self,
        value: &serde_toml_value::Spanned<'_>,
        context: &str,
    ) -> Option<T> {
        match T::deserialize(toml::de::ValueDeserializer::from(value.clone())) {
            Ok(parsed) => Some(parsed),
            Err(error) => {
                let offset = error.span().map(|s| s.start).or(Some(value.span().start));
                self.error(offset, context, error.message().trim().to_owned());
                None
            }
        }
    }
}

impl FileContext<'_> {
    /// As [`FileContext::parse`], for a table deserialized through an internally tagged enum:
    /// serde loses the position of the field then, so an unknown field is pointed at by name.
    fn parse_table<T: for<'de> Deserialize<'de>>(
        &mut self,
        value: &serde_toml_value::Spanned<'_>,
        keys: &BTreeMap<String, usize>,
        context: &str,
    ) -> Option<T> {
        match T::deserialize(toml::de::ValueDeserializer::from(value.clone())) {
            Ok(parsed) => Some(parsed),
            Err(error) => {
                let message = error.message().trim().to_owned();
                let unknown_field = message
                    .strip_prefix("unknown field `")
                    .and_then(|rest| rest.split('`').next())
                    .and_then(|field| keys.get(field).copied());
                // An unknown variant is a value: the key holding that string.
                let unknown_variant = message
                    .strip_prefix("unknown variant `")
                    .and_then(|rest| rest.split('`').next())
                    .and_then(|variant| string_key_offset(value, variant));
                let offset = unknown_field
                    .or(unknown_variant)
                    .or(error.span().map(|s| s.start))
                    .or(Some(value.span().start));
                self.error(offset, context, message);
                None
            }
        }
    }
}

/// Names for the spanned TOML value type.
mod serde_toml_value {
    pub type Spanned<'i> = serde_spanned::Spanned<toml::de::DeValue<'i>>;
}

fn load_file(
    path: &Path,
    text: &str,
    options: &LoadOptions,
    set: &mut RuleSet,
    names: &mut HashSet<String>,
    errors: &mut Vec<LoadError>,
    warnings: &mut Vec<LoadError>,
) {
    let newlines = text
        .bytes()
        .enumerate()
        .filter(|(_, b)| *b == b'\n')
        .map(|(i, _)| i)
        .collect();
    let mut file = FileContext {
        path,
        errors,
        warnings,
        newlines,
    };
    let document = match DeTable::parse(text) {
        Ok(document) => document,
        Err(error) => {
            let offset = error.span().map(|s| s.start);
            file.error(
                offset,
                "",
                format!("invalid TOML: {}", error.message().trim()),
            );
            return;
        }
    };
    let mut runbook = path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let mut raw_rules = Vec::new();
    let mut raw_probes = Vec::new();
    let mut raw_actions = Vec::new();
    let mut raw_collectors = Vec::new();
    // Every collector name written in the file, parsed or not, so that a rule naming a
    // collector with a mistake in it is not also told that it does not exist.
    let mut collector_names = HashSet::new();
    let mut raw_tests = Vec::new();
    for (key, value) in document.get_ref() {
        let offset = key.span().start;
        match (key.get_ref().as_ref(), value.get_ref()) {
            ("runbook", _) => {
                if let Some(parsed) = file.parse::<RawRunbook>(value, "runbook") {
                    runbook = parsed.name;
                }
            }
            ("rule", DeValue::Array(items)) => {
                for item in items.iter() {
                    let context = element_name(item)
                        .map_or_else(|| "rule".to_owned(), |name| format!("rule {name}"));
                    let branch_lines = branch_offsets(item);
                    let keys = key_offsets(item);
                    if let Some(parsed) = file.parse::<RawRule>(item, &context) {
                        raw_rules.push((item.span().start, branch_lines, keys, parsed));
                    }
                }
            }
            ("collector", DeValue::Table(table)) => {
                for (name, item) in table.iter() {
                    let name_text = name.get_ref().to_string();
                    let context = format!("collector {name_text}");
                    collector_names.insert(name_text.clone());
                    if !collect::is_collector_name(&name_text) {
                        file.error(
                            Some(name.span().start),
                            &context,
                            "a collector name must be letters, digits, '-', '_' and '.', \
                             starting with a letter or digit, at most 64 characters \
                             (it names the bundle directory collectors/NAME/)",
                        );
                    }
                    let keys = key_offsets(item);
                    if let Some(parsed) = file.parse_table::<CollectorSpec>(item, &keys, &context) {
                        raw_collectors.push((name.span().start, name_text, parsed));
                    }
                }
            }
            ("probe" | "action", DeValue::Table(table)) => {
                for (name, item) in table.iter() {
                    let name_text = name.get_ref().to_string();
                    if key.get_ref().as_ref() == "probe" {
                        let context = format!("probe {name_text}");
                        if let Some(parsed) = file.parse::<RawProbe>(item, &context) {
                            raw_probes.push((name.span().start, name_text, parsed));
                        }
                    } else {
                        let context = format!("action {name_text}");
                        if let Some(parsed) = file.parse::<ActionSpec>(item, &context) {
                            raw_actions.push((name.span().start, name_text, parsed));
                        }
                    }
                }
            }
            ("test", DeValue::Array(items)) => {
                for item in items.iter() {
                    let context = element_name(item)
                        .map_or_else(|| "test".to_owned(), |name| format!("test {name:?}"));
                    if let Some(parsed) = file.parse::<testing::RawTest>(item, &context) {
                        raw_tests.push((item.span().start, parsed));
                    }
                }
            }
            ("rule" | "test", _) => file.error(
                Some(offset),
                key.get_ref(),
                "expected an array of tables: write [[rule]] / [[test]]",
            ),
            ("probe" | "action" | "collector", _) => file.error(
                Some(offset),
                key.get_ref(),
                "expected tables: write [probe.NAME] / [action.NAME] / [collector.NAME]",
            ),
            (other, _) => file.error(
                Some(offset),
                other,
                "unknown key; a rule file holds runbook, [[rule]], [probe.NAME], [action.NAME], \
                 [collector.NAME] and [[test]]",
            ),
        }
    }

    let file_index = set.files.len();
    if let Some(other) = set.files.iter().find(|f| f.runbook == runbook) {
        file.error(
            Some(0),
            "runbook",
            format!(
                "runbook name {runbook:?} is already used by {}; runbook names must be unique",
                other.path.display()
            ),
        );
    }
    let mut probes = BTreeMap::new();
    for (offset, name, raw) in raw_probes {
        if let Some(mut definition) = compile_probe(&mut file, offset, &name, raw, options) {
            definition.key = format!("{runbook}/{name}");
            probes.insert(name, definition);
        }
    }
    let mut actions = BTreeMap::new();
    for (offset, name, spec) in raw_actions {
        let sample = sample_context(&[], &[]);
        for problem in spec.validate(&sample) {
            file.error(Some(offset), &format!("action {name}"), problem);
        }
        if let Some(namespace) = spec.literal_namespace()
            && !options.namespaces.iter().any(|n| n == namespace)
        {
            file.warn(
                offset,
                &format!("action {name}"),
                format!(
                    "namespace {namespace:?} is not in kubernetes.namespaces; the action will \
                     be refused until it is"
                ),
            );
        }
        actions.insert(name, spec);
    }
    let mut collectors = BTreeMap::new();
    for (offset, name, spec) in raw_collectors {
        let sample = sample_context(&[], &[]);
        for problem in spec.validate(&sample) {
            file.error(Some(offset), &format!("collector {name}"), problem);
        }
        if let Some(namespace) = spec.literal_namespace()
            && super::is_rfc1123_label(namespace)
            && !options.namespaces.iter().any(|n| n == namespace)
        {
            file.warn(
                offset,
                &format!("collector {name}"),
                format!(
                    "namespace {namespace:?} is not in kubernetes.namespaces; the collector \
                     will be refused until it is"
                ),
            );
        }
        collectors.insert(name, spec);
    }
    let mut rules = Vec::new();
    for (offset, branch_offsets, keys, raw) in raw_rules {
        if !names.insert(raw.name.clone()) {
            file.error(
                Some(offset),
                &format!("rule {}", raw.name),
                "a rule with this name already exists; rule names must be unique across files",
            );
            continue;
        }
        if let Some(rule) = compile_rule(
            &mut file,
            offset,
            &branch_offsets,
            &keys,
            raw,
            &probes,
            &actions,
            &collector_names,
            file_index,
        ) {
            rules.push(rule);
        }
    }
    let mut tests = Vec::new();
    for (offset, raw) in raw_tests.into_iter().filter(|_| options.tests) {
        match testing::compile(raw, path, file.line(offset), &probes, &runbook) {
            Ok(test) => tests.push(test),
            Err(message) => file.error(Some(offset), "test", message),
        }
    }
    set.files.push(RuleFile {
        path: path.to_path_buf(),
        runbook,
        probes,
        actions,
        collectors,
        tests,
    });
    set.rules.extend(rules);
}

/// The `name` of a table element, for error context.
fn element_name(item: &serde_toml_value::Spanned<'_>) -> Option<String> {
    let DeValue::Table(table) = item.get_ref() else {
        return None;
    };
    table.iter().find_map(
        |(key, value)| match (key.get_ref().as_ref(), value.get_ref()) {
            ("name", DeValue::String(name)) => Some(name.to_string()),
            _ => None,
        },
    )
}

/// Where each key of a table element is written, to point errors at the key itself.
fn key_offsets(item: &serde_toml_value::Spanned<'_>) -> BTreeMap<String, usize> {
    let DeValue::Table(table) = item.get_ref() else {
        return BTreeMap::new();
    };
    table
        .iter()
        .map(|(key, _)| (key.get_ref().to_string(), key.span().start))
        .collect()
}

/// Where the key of a table element whose value is the string `text` is written.
fn string_key_offset(item: &serde_toml_value::Spanned<'_>, text: &str) -> Option<usize> {
    let DeValue::Table(table) = item.get_ref() else {
        return None;
    };
    table.iter().find_map(|(key, value)| match value.get_ref() {
        DeValue::String(value) if value.as_ref() == text => Some(key.span().start),
        _ => None,
    })
}

/// Where each `[[rule.branch]]` of a rule starts.
fn branch_offsets(item: &serde_toml_value::Spanned<'_>) -> Vec<usize> {
    let DeValue::Table(table) = item.get_ref() else {
        return Vec::new();
    };
    table
        .iter()
        .find_map(
            |(key, value)| match (key.get_ref().as_ref(), value.get_ref()) {
                ("branch", DeValue::Array(items)) => {
                    Some(items.iter().map(|i| i.span().start).collect())
                }
                _ => None,
            },
        )
        .unwrap_or_default()
}

fn compile_probe(
    file: &mut FileContext<'_>,
    offset: usize,
    name: &str,
    raw: RawProbe,
    options: &LoadOptions,
) -> Option<ProbeDef> {
    let context = format!("probe {name}");
    let (request, timeout, cache) = match raw {
        RawProbe::Statuspage {
            url,
            timeout,
            cache,
        } => (ProbeRequest::Statuspage { url }, timeout, cache),
        RawProbe::Http {
            url,
            method,
            headers,
            capture_headers,
            json_fields,
            timeout,
            cache,
        } => {
            if !matches!(method.as_str(), "GET" | "HEAD" | "POST") {
                file.error(
                    Some(offset),
                    &context,
                    format!("method {method:?} must be GET, HEAD or POST"),
                );
            }
            for name in headers.keys() {
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    file.error(
                        Some(offset),
                        &context,
                        format!("headers: {name:?} is not a valid header name"),
                    );
                }
            }
            (
                ProbeRequest::Http {
                    method,
                    url,
                    headers: headers.into_iter().collect(),
                    capture_headers,
                    json_fields,
                },
                timeout,
                cache,
            )
        }
        RawProbe::Prometheus {
            query,
            urls,
            timeout,
            cache,
        } => {
            for url in &urls {
                match reqwest::Url::parse(url) {
                    Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                    _ => file.error(
                        Some(offset),
                        &context,
                        format!("{url:?} is not an http(s) URL"),
                    ),
                }
            }
            (ProbeRequest::Prometheus { query, urls }, timeout, cache)
        }
        RawProbe::Kubernetes {
            namespace,
            workload,
            object,
            timeout,
            cache,
        } => {
            if workload.is_none() && object.is_none() {
                file.error(Some(offset), &context, "needs workload, object, or both");
            }
            // A target written out is checked now, one with templates once rendered (and one
            // without a `/` is reported below).
            fn written(target: &Option<String>) -> Option<&str> {
                target
                    .as_deref()
                    .filter(|target| Template::is_literal(target) && target.contains('/'))
            }
            if let Err(error) =
                probes::kubernetes::check_targets(written(&workload), written(&object))
            {
                file.error(Some(offset), &context, error);
            }
            if Template::is_literal(&namespace) && !options.namespaces.contains(&namespace) {
                file.warn(
                    offset,
                    &context,
                    format!(
                        "namespace {namespace:?} is not in kubernetes.namespaces; the probe \
                         will fail (and its rules take on_probe_failure) until it is"
                    ),
                );
            }
            (
                ProbeRequest::Kubernetes {
                    namespace,
                    workload,
                    object,
                },
                timeout,
                cache,
            )
        }
    };
    if timeout.is_zero() {
        file.error(Some(offset), &context, "timeout must be longer than 0s");
    }
    // Check every templated target against the sample context.
    let definition = ProbeDef {
        name: name.to_owned(),
        key: name.to_owned(),
        line: file.line(offset),
        request,
        timeout,
        cache,
    };
    // Rendering a URL also refuses one whose scheme or host is templated.
    let sample = sample_context(&[], &[]);
    match definition.render(&sample) {
        Ok(
            ProbeRequest::Statuspage { .. }
            | ProbeRequest::Http { .. }
            | ProbeRequest::Prometheus { .. },
        ) => {}
        Ok(ProbeRequest::Kubernetes {
            workload, object, ..
        }) => {
            for target in workload.iter().chain(object.iter()) {
                if !target.contains('/') {
                    file.error(
                        Some(offset),
                        &context,
                        format!(
                            "{target:?} must be KIND/NAME, such as deployment/api or secret/api-key"
                        ),
                    );
                }
            }
        }
        Err(error) => file.error(Some(offset), &context, error),
    }
    Some(definition)
}

fn parse_severity(
    file: &mut FileContext<'_>,
    offset: usize,
    context: &str,
    text: &str,
) -> Option<Severity> {
    let severity = Severity::parse(text);
    if severity.is_none() {
        file.error(
            Some(offset),
            context,
            format!("severity {text:?} must be one of P1, P2, P3, P4"),
        );
    }
    severity
}

#[allow(clippy::too_many_arguments)]
fn compile_rule(
    file: &mut FileContext<'_>,
    offset: usize,
    branch_offsets: &[usize],
    keys: &BTreeMap<String, usize>,
    raw: RawRule,
    probes: &BTreeMap<String, ProbeDef>,
    actions: &BTreeMap<String, ActionSpec>,
    collectors: &HashSet<String>,
    file_index: usize,
) -> Option<Rule> {
    let context = format!("rule {}", raw.name);
    let errors_before = file.errors.len();
    let at = |key: &str| keys.get(key).copied().unwrap_or(offset);
    if raw.name.trim().is_empty() {
        file.error(Some(at("name")), "rule", "name must not be empty");
    }
    let severity = parse_severity(file, at("severity"), &context, &raw.severity);
    let compile_matchers = |list: &[String], key: usize, file: &mut FileContext<'_>| {
        list.iter()
            .filter_map(|text| match matcher::parse(text) {
                Ok(m) => Some(m),
                Err(message) => {
                    file.error(Some(key), &context, format!("matcher {message}"));
                    None
                }
            })
            .collect::<Vec<_>>()
    };
    let matchers = compile_matchers(&raw.matchers, at("matchers"), file);
    let annotation_matchers =
        compile_matchers(&raw.annotation_matchers, at("annotation_matchers"), file);
    for name in &raw.probes {
        if !probes.contains_key(name) {
            file.error(
                Some(at("probes")),
                &context,
                format!("probe {name:?} is not defined in this file ([probe.{name}])"),
            );
        }
    }
    for name in &raw.collect {
        if !collectors.contains(name) {
            file.error(
                Some(at("collect")),
                &context,
                format!("collector {name:?} is not defined in this file ([collector.{name}])"),
            );
        }
    }
    let rule_probes: Vec<&ProbeDef> = raw.probes.iter().filter_map(|n| probes.get(n)).collect();
    let equal_labels: Vec<(String, String)> = matchers
        .iter()
        .filter(|m| m.kind == MatchType::Equal)
        .map(|m| (m.name.clone(), m.value.clone()))
        .collect();
    let variables = sample_variables(&equal_labels, &rule_probes);
    let template_sample = sample_context(&equal_labels, &rule_probes);
    let summary = raw.summary.as_deref().and_then(|source| {
        Template::compile(source, &template_sample)
            .map_err(|error| file.error(Some(at("summary")), &context, format!("summary: {error}")))
            .ok()
    });
    let mut branches = Vec::new();
    let mut seen = HashSet::new();
    let count = raw.branch.len();
    for (index, branch) in raw.branch.into_iter().enumerate() {
        let branch_offset = branch_offsets.get(index).copied().unwrap_or(offset);
        let branch_context = format!("rule {} branch {}", raw.name, branch.name);
        if !seen.insert(branch.name.clone()) {
            file.error(
                Some(branch_offset),
                &branch_context,
                "branch names must be unique within a rule",
            );
        }
        if branch.name == "on_probe_failure" {
            file.error(
                Some(branch_offset),
                &branch_context,
                "on_probe_failure is reserved",
            );
        }
        let when = match (&branch.when, branch.otherwise) {
            (Some(_), true) | (None, false) => {
                file.error(
                    Some(branch_offset),
                    &branch_context,
                    "give exactly one of when = \"<CEL condition>\" or otherwise = true",
                );
                None
            }
            (None, true) => {
                if index + 1 != count {
                    file.error(
                        Some(branch_offset),
                        &branch_context,
                        "an otherwise branch must be the last; branches after it could never be taken",
                    );
                }
                None
            }
            (Some(source), false) => match Condition::compile(source) {
                Ok(condition) => match condition.check(&variables) {
                    Ok(()) => Some(condition),
                    Err(error) => {
                        file.error(
                            Some(branch_offset),
                            &branch_context,
                            format!("when: {error}"),
                        );
                        None
                    }
                },
                Err(error) => {
                    file.error(
                        Some(branch_offset),
                        &branch_context,
                        format!("when: {error}"),
                    );
                    None
                }
            },
        };
        let actions_ok = check_actions(
            file,
            branch_offset,
            &branch_context,
            &branch.actions,
            actions,
        );
        let branch_severity = branch
            .severity
            .as_deref()
            .and_then(|s| parse_severity(file, branch_offset, &branch_context, s));
        let note = compile_note(
            file,
            branch_offset,
            &branch_context,
            branch.note.as_deref(),
            &template_sample,
        );
        let _ = actions_ok;
        branches.push(Branch {
            name: branch.name,
            line: file.line(branch_offset),
            when,
            actions: branch.actions,
            severity: branch_severity,
            note,
        });
    }
    let failure = raw.on_probe_failure.unwrap_or_default();
    let failure_context = format!("rule {} on_probe_failure", raw.name);
    check_actions(file, offset, &failure_context, &failure.actions, actions);
    let on_probe_failure = Branch {
        name: "on_probe_failure".to_owned(),
        line: file.line(offset),
        when: None,
        severity: failure
            .severity
            .as_deref()
            .and_then(|s| parse_severity(file, offset, &failure_context, s)),
        note: compile_note(
            file,
            offset,
            &failure_context,
            failure.note.as_deref(),
            &template_sample,
        ),
        actions: failure.actions,
    };
    if file.errors.len() > errors_before {
        return None;
    }
    Some(Rule {
        name: raw.name,
        file: file.path.to_path_buf(),
        line: file.line(offset),
        description: raw.description,
        matchers,
        annotation_matchers,
        severity: severity?,
        continue_matching: raw.continue_matching,
        probes: raw.probes,
        summary,
        reevaluate_every: raw.reevaluate_every,
        shadow: raw.shadow,
        branches,
        on_probe_failure,
        collect: raw.collect,
        file_index,
    })
}

fn check_actions(
    file: &mut FileContext<'_>,
    offset: usize,
    context: &str,
    names: &[String],
    actions: &BTreeMap<String, ActionSpec>,
) -> bool {
    let mut ok = true;
    for name in names {
        if !actions.contains_key(name) {
            file.error(
                Some(offset),
                context,
                format!("action {name:?} is not defined in this file ([action.{name}])"),
            );
            ok = false;
        }
    }
    ok
}

fn compile_note(
    file: &mut FileContext<'_>,
    offset: usize,
    context: &str,
    source: Option<&str>,
    sample: &Json,
) -> Option<Template> {
    let source = source?;
    match Template::compile(source, sample) {
        Ok(template) => Some(template),
        Err(error) => {
            file.error(Some(offset), context, format!("note: {error}"));
            None
        }
    }
}

/// Sample CEL variables: labels from the rule's equality matchers, and each probe's sample
/// result, so a condition is checked against the types it will see.
fn sample_variables(labels: &[(String, String)], probes: &[&ProbeDef]) -> Variables {
    let object = |value: Json| match value {
        Json::Object(map) => map,
        _ => Map::new(),
    };
    Variables {
        labels: labels
            .iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect(),
        annotations: object(json!({"summary": "", "description": "", "runbook_url": ""})),
        alert: object(json!({
            "status": "firing",
            "fingerprint": "0000000000000000",
            "starts_at": "2026-01-01T00:00:00Z",
            "generator_url": "",
            "age_seconds": 0,
            "incident_id": "0000000000000000-20260101T000000Z",
        })),
        probe: probes
            .iter()
            .map(|definition| {
                (
                    definition.name.clone(),
                    probes::sample_for(&definition.request).to_value(),
                )
            })
            .collect(),
    }
}

/// The template context with sample values.
pub(crate) fn sample_context(labels: &[(String, String)], probes: &[&ProbeDef]) -> Json {
    let variables = sample_variables(labels, probes);
    json!({
        "labels": variables.labels,
        "annotations": variables.annotations,
        "alert": variables.alert,
        "probe": variables.probe,
        "rule": "sample",
        "severity": "P3",
        "incident_id": "0000000000000000-20260101T000000Z",
    })
}

/// Keep a copy of the rule files that loaded, so that a later start with a broken set can
/// fall back to them. Written to a new directory and renamed into place.
pub fn save_last_good(files: &[PathBuf], state_dir: &Path) -> std::io::Result<()> {
    let target = state_dir.join(LAST_GOOD_DIR);
    let staging = state_dir.join(format!("{LAST_GOOD_DIR}.new"));
    let old = state_dir.join(format!("{LAST_GOOD_DIR}.old"));
    let _ = std::fs::remove_dir_all(&staging);
    crate::state_dir::create_dir(&staging)?;
    for file in files {
        if let Some(name) = file.file_name() {
            std::fs::copy(file, staging.join(name))?;
        }
    }
    let _ = std::fs::remove_dir_all(&old);
    if target.exists() {
        std::fs::rename(&target, &old)?;
    }
    std::fs::rename(&staging, &target)?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Where the last good rule files are kept inside the state directory.
pub const LAST_GOOD_DIR: &str = "rules-last-good";

/// The rule set a start (or reload) ends up with, and why it is not the configured one.
pub struct Loaded {
    pub set: RuleSet,
    /// `None` when the configured files loaded; else what went wrong and what is used instead.
    pub degraded: Option<String>,
    pub errors: Vec<LoadError>,
}

/// Load the configured rules; when they are broken, fall back to the last good copy in the
/// state directory, or else to the built-in default rule. A broken rule set never keeps the
/// daemon down. A set that loads is copied as the new last good one.
pub fn load_with_fallback(dir: &Path, state_dir: &Path, options: &LoadOptions) -> Loaded {
    match load_dir(dir, options) {
        Ok(set) => {
            let files = rule_files(dir).unwrap_or_default();
            if let Err(error) = save_last_good(&files, state_dir) {
                tracing::warn!(%error, "cannot keep a copy of the rule files as the last good set");
            }
            Loaded {
                set,
                degraded: None,
                errors: Vec::new(),
            }
        }
        Err(errors) => {
            for error in &errors {
                tracing::error!(%error, "rule file error");
            }
            let last_good = state_dir.join(LAST_GOOD_DIR);
            let (set, fallback) = match load_dir(&last_good, options) {
                Ok(set) if last_good.exists() => {
                    (set, format!("the last good set in {}", last_good.display()))
                }
                _ => (
                    RuleSet::default_only(options.default_rule.clone(), options.severities.clone()),
                    "the built-in default rule only".to_owned(),
                ),
            };
            let degraded = format!(
                "{} has {} error(s), the first: {}; running on {fallback}",
                dir.display(),
                errors.len(),
                errors
                    .first()
                    .map(|e| e.message.as_str())
                    .unwrap_or_default()
            );
            tracing::error!(%degraded, "rules not loaded as configured");
            Loaded {
                set,
                degraded: Some(degraded),
                errors,
            }
        }
    }
}
