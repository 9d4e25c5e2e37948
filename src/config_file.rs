//! The optional TOML configuration file (`--config FILE` or `STATECAST_CONFIG`).
//!
//! The file is flat: every key is a flag's long name (`max-frame-bytes = "16MiB"`, `tcp =
//! "127.0.0.1:5555"`; `_` may stand for `-`), with the same values the flag takes. It is applied
//! by turning each key into the default value of its flag before clap parses, so the precedence
//! falls out of clap itself — flag > environment > file > built-in default — and every flag gets
//! a key without a line here (this module walks clap's `Command`, it knows no flag by name).
//!
//! Values are checked here, with the flag's own value parser, so that a bad one is reported
//! naming the key, the value and the file rather than as if it had been typed on the command line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command, CommandFactory, FromArgMatches};

use crate::config::Config;
use crate::startup_file::{cut, shorten};

/// The flag (and environment variable) naming the file.
const FLAG: &str = "config";
const ENV: &str = "STATECAST_CONFIG";

/// Why the configuration could not be built.
#[derive(Debug)]
pub enum LoadError {
    /// The command line or the environment (clap's own error, including `--help`/`--version`).
    Args(clap::Error),
    /// The configuration file: one line naming the file (and the key, when there is one).
    File(String),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Args(error) => write!(f, "{error}"),
            LoadError::File(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for LoadError {}

/// clap's error in one line: its first line, and its "tip:" lines (the "did you mean" of a
/// mistyped flag) appended; the usage and `--help` lines are left out, and a long invalid value
/// is shown cut.
pub fn one_line(error: &clap::Error) -> String {
    let rendered = error.to_string();
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut line = lines.next().unwrap_or("invalid arguments").to_owned();
    for tip in lines.filter(|l| l.starts_with("tip:")) {
        line.push_str("; ");
        line.push_str(tip);
    }
    match error.get(clap::error::ContextKind::InvalidValue) {
        Some(clap::error::ContextValue::String(value)) => shorten(&line, value),
        _ => line,
    }
}

impl Config {
    /// The configuration from the process's arguments, environment and configuration file.
    pub fn load() -> Result<Config, LoadError> {
        Config::load_from(std::env::args_os())
    }

    /// The configuration from `args` (the first is the program name), the process's environment
    /// and the configuration file named by `--config` or `STATECAST_CONFIG`.
    pub fn load_from<I, T>(args: I) -> Result<Config, LoadError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let mut command = Config::command();
        if let Some(path) = config_path(&args) {
            command = apply_file(command, &path)?;
        }
        let mut matches = command
            .try_get_matches_from(args)
            .map_err(LoadError::Args)?;
        Config::from_arg_matches_mut(&mut matches).map_err(LoadError::Args)
    }
}

/// The file named on the command line (`--config F` or `--config=F`), else by the environment.
/// Read before clap parses, because the file changes what clap parses with.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let flag = format!("--{FLAG}");
    let with_value = format!("--{FLAG}=");
    let mut found = None;
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        if arg == "--" {
            break;
        }
        if *arg == *flag {
            found = rest.next().map(PathBuf::from);
        } else if let Some(value) = arg.to_str().and_then(|a| a.strip_prefix(&with_value)) {
            found = Some(PathBuf::from(value));
        }
    }
    found.or_else(|| {
        std::env::var_os(ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

/// Reads the file and makes each of its keys the default value of the matching flag.
fn apply_file(mut command: Command, path: &Path) -> Result<Command, LoadError> {
    let file = path.display();
    let cannot =
        |why: String| LoadError::File(format!("cannot read the config file {file}: {why}"));
    let bytes = crate::startup_file::read(path).map_err(cannot)?;
    let text = String::from_utf8(bytes).map_err(|e| cannot(format!("not UTF-8 text ({e})")))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e
            .span()
            .map(|span| format!(" (line {})", line_of(&text, span.start)))
            .unwrap_or_default();
        LoadError::File(format!(
            "config file {file}{line}: {}",
            e.message().trim_end().replace('\n', "; ")
        ))
    })?;
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let Some(arg) = settable_args(&command).find(|a| a.get_long() == Some(long.as_str()))
        else {
            return Err(LoadError::File(format!(
                "config file {file}: unknown key `{key}`{}",
                hint(&command, &long)
            )));
        };
        // A long value is shown cut: the message stays one short line.
        let shown = cut(&value.to_string());
        let values = values_of(arg, value).map_err(|why| {
            LoadError::File(format!("config file {file}: key `{key}` = {shown}: {why}"))
        })?;
        for v in &values {
            if let Err(error) = check(arg, &long, v) {
                let why = shorten(&first_line(&error.to_string()), v);
                return Err(LoadError::File(format!(
                    "config file {file}: key `{key}` = {shown}: {why}"
                )));
            }
        }
        // `--help` shows defaults, so it would show the file's secrets: not for flags whose
        // environment values are hidden (the tokens).
        let secret = arg.is_hide_env_values_set();
        let id = arg.get_id().clone();
        command = command.mut_arg(id, |a| a.default_values(values).hide_default_value(secret));
    }
    Ok(command)
}

/// Runs `value` through the flag's own value parser (range, units, address resolution), alone:
/// a command of that one flag, taking one value, without its environment variable.
fn check(arg: &Arg, long: &str, value: &str) -> Result<(), clap::Error> {
    let alone = arg
        .clone()
        .action(ArgAction::Set)
        .num_args(1)
        .value_delimiter(None)
        .env(None)
        .required(false);
    Command::new("statecast")
        .no_binary_name(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(alone)
        .try_get_matches_from([format!("--{long}={value}")])
        .map(drop)
}

/// Flags a file may set: every long flag but `--config` itself, `--help` and `--version`.
fn settable_args(command: &Command) -> impl Iterator<Item = &Arg> {
    command.get_arguments().filter(|a| {
        a.get_long().is_some()
            && a.get_id() != FLAG
            && !matches!(a.get_action(), ArgAction::Help | ArgAction::Version)
    })
}

/// The flag values a TOML value stands for: scalars as text (`true`, `5`, `0.5`, "16MiB"), and
/// arrays only for repeatable flags (`allowed-host = ["a", "b"]`).
fn values_of(arg: &Arg, value: &toml::Value) -> Result<Vec<String>, String> {
    fn scalar(value: &toml::Value) -> Option<String> {
        match value {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(i) => Some(i.to_string()),
            toml::Value::Float(f) => Some(f.to_string()),
            toml::Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        }
    }
    let repeatable = matches!(arg.get_action(), ArgAction::Append);
    match value {
        toml::Value::Array(items) if repeatable => items
            .iter()
            .map(|item| scalar(item).ok_or_else(|| "array items must be strings or numbers".into()))
            .collect(),
        toml::Value::Array(_) => Err("this flag takes one value, not an array".into()),
        toml::Value::Table(_) => Err("tables are not used: the file is flat".into()),
        other => scalar(other)
            .map(|v| vec![v])
            .ok_or_else(|| "dates are not used (give durations like \"25s\")".into()),
    }
}

/// ", did you mean `x`?" when a key is close to a flag's name (a typo), else nothing.
fn hint(command: &Command, long: &str) -> String {
    settable_args(command)
        .filter_map(|a| a.get_long())
        .map(|name| (edit_distance(long, name), name))
        .filter(|(distance, name)| *distance <= 2.max(name.len() / 4))
        .min()
        .map(|(_, name)| format!(" (did you mean `{name}`?)"))
        .unwrap_or_default()
}

/// Levenshtein distance: flag names are short, so the quadratic table costs nothing.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .unwrap_or(text)
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// clap's first line without its `error: ` prefix.
fn first_line(rendered: &str) -> String {
    let line = rendered.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("tcp", "tcp"), 0);
        assert_eq!(edit_distance("tpc", "tcp"), 2);
        assert_eq!(edit_distance("max-frame-byte", "max-frame-bytes"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn config_path_reads_both_spellings_and_stops_at_double_dash() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            config_path(&args(&["s", "--config", "a.toml"])),
            Some(PathBuf::from("a.toml"))
        );
        assert_eq!(
            config_path(&args(&["s", "--config=b.toml"])),
            Some(PathBuf::from("b.toml"))
        );
        assert_eq!(
            config_path(&args(&["s", "--", "--config=c.toml"])),
            std::env::var_os(ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        );
    }
}
