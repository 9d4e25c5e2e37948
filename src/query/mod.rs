//! Riemann's query language: parse once, then test events against the result.
//!
//! This module owns the public face ([`Query`], [`ParseError`]) and the input limits; the
//! pieces behind it are `lexer` (spelling), `parser` (grammar, compiled patterns), `ast` (the
//! tree and its canonical printed form) and `eval` (what each operator means for an event).
//!
//! # The language
//!
//! ```text
//! predicate := primary | 'not' predicate | predicate 'and' predicate | predicate 'or' predicate
//! primary   := '(' predicate ')' | simple
//! simple    := 'tagged' STRING | value '=' value | value '!=' value
//!            | value ('<' | '>' | '<=' | '>=') NUMBER
//!            | value '=~' STRING | value '~=' STRING | value
//! value     := true | false | nil | null | NUMBER | STRING | field
//! ```
//!
//! Precedence is `not` > `and` > `or`. Fields are `host service state description metric
//! metric_f ttl time`; any other identifier (letters, digits, `_ - .`, starting with a letter or
//! `_`) names a custom attribute, whose values are strings. `nil`/`null` is an absent field.
//!
//! Where this differs from Riemann, on purpose: numbers compare by value (`metric = 1` matches
//! an integer or a float metric), trailing input is an error rather than ignored, `~=` uses Rust
//! `regex` syntax (no look-around or backreferences), and `=~`/`~=` are false for anything but a
//! string value.
//!
//! The query arrives from the network, so parsing is bounded: at most [`MAX_QUERY_LEN`] bytes,
//! at most [`MAX_DEPTH`] levels of parentheses and `not`, each regex at most
//! [`REGEX_SIZE_LIMIT`] bytes compiled, all of a query's regexes together at most
//! [`QUERY_REGEX_BUDGET`] bytes compiled, and at most [`MAX_PATTERNS`] regex and LIKE patterns.
//! The network call sites parse with [`Query::parse_off_thread`], so even a query at those
//! limits never holds an async worker.

mod ast;
mod eval;
mod lexer;
mod parser;

use std::fmt;
use std::str::FromStr;

use crate::event::Event;

pub use ast::{SILENCE_DFA_CACHE, SILENCE_SCAN_BYTES};
pub use parser::{MAX_DEPTH, MAX_PATTERNS, QUERY_REGEX_BUDGET, REGEX_SIZE_LIMIT};

/// Longest query text accepted, in bytes.
pub const MAX_QUERY_LEN: usize = 64 * 1024;

/// A parsed query, ready to test events. Cheap to clone (compiled regexes are shared).
#[derive(Debug, Clone)]
pub struct Query {
    expr: ast::Expr,
}

/// Why a query did not parse, and where.
///
/// Displays as `<message> at column <column>`, e.g. `expected a value after '=' at column 14`;
/// for an invalid pattern the detail follows the column: `invalid regex at column 9: unclosed
/// group`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(&self.message, self.column))]
pub struct ParseError {
    /// 1-based character position in the query text of the offending token (the end of the
    /// input counts as one past the last character).
    pub column: usize,
    pub message: String,
}

/// Messages that carry a detail (`invalid regex: <detail>`) put the column before the detail.
fn render(message: &str, column: usize) -> String {
    for head in ["invalid regex", "invalid pattern"] {
        if let Some(detail) = message
            .strip_prefix(head)
            .and_then(|rest| rest.strip_prefix(": "))
        {
            return format!("{head} at column {column}: {detail}");
        }
    }
    format!("{message} at column {column}")
}

/// Two queries are equal when their trees are (however their patterns were compiled).
impl PartialEq for Query {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

impl Query {
    /// Parses query text. See the module docs for the language and the limits.
    pub fn parse(input: &str) -> Result<Query, ParseError> {
        Query::parse_as(input, parser::Profile::Filter)
    }

    /// Parses a silence's query: its patterns get small caches of their own (one each, not one
    /// per thread), scan at most [`SILENCE_SCAN_BYTES`] of a value, and [`Query::memory`]
    /// counts their caches, so the engine can hold the silences it keeps to one budget.
    pub fn parse_silence(input: &str) -> Result<Query, ParseError> {
        Query::parse_as(input, parser::Profile::Silence)
    }

    fn parse_as(input: &str, profile: parser::Profile) -> Result<Query, ParseError> {
        if input.len() > MAX_QUERY_LEN {
            return Err(ParseError {
                column: 1,
                message: format!("query is too long (more than {MAX_QUERY_LEN} bytes)"),
            });
        }
        parser::parse(input, profile).map(|expr| Query { expr })
    }

    /// The most its patterns hold in memory: their compiled forms and text, and for a
    /// silence's query ([`Query::parse_silence`]) their caches at their bounds. 0 without
    /// patterns.
    pub fn memory(&self) -> usize {
        self.expr.pattern_memory()
    }

    /// Parses on a blocking thread. Compiling a query's regexes is CPU work bounded by
    /// [`QUERY_REGEX_BUDGET`] but still long enough (milliseconds to seconds for hostile input)
    /// that it must not run on an async worker, where it would stall every connection sharing it.
    pub async fn parse_off_thread(input: String) -> Result<Query, ParseError> {
        match tokio::task::spawn_blocking(move || Query::parse(&input)).await {
            Ok(parsed) => parsed,
            Err(join_error) => Err(ParseError {
                column: 1,
                message: format!("query could not be compiled: {join_error}"),
            }),
        }
    }

    /// [`Query::parse_silence`] on a blocking thread (see [`Query::parse_off_thread`]).
    pub async fn parse_silence_off_thread(input: String) -> Result<Query, ParseError> {
        match tokio::task::spawn_blocking(move || Query::parse_silence(&input)).await {
            Ok(parsed) => parsed,
            Err(join_error) => Err(ParseError {
                column: 1,
                message: format!("query could not be compiled: {join_error}"),
            }),
        }
    }

    /// Parses a subscription filter as the network endpoints take it: absent, blank or `true`
    /// is "no filter" (`None`, so callers skip evaluation). Compiles on a blocking thread
    /// ([`Query::parse_off_thread`]): the text comes from the network. The error is the text the
    /// endpoints answer with (`parse error: …`).
    pub async fn parse_filter(text: Option<&str>) -> Result<Option<Query>, String> {
        match text.map(str::trim) {
            None | Some("") => Ok(None),
            Some(text) => match Query::parse_off_thread(text.to_owned()).await {
                Ok(q) if q.is_match_all() => Ok(None),
                Ok(q) => Ok(Some(q)),
                Err(error) => Err(format!("parse error: {error}")),
            },
        }
    }

    /// Whether `event` satisfies the query.
    pub fn matches(&self, event: &Event) -> bool {
        eval::matches(&self.expr, event)
    }

    /// Whether a transition from `previous` to `event` concerns a watcher of this query: either
    /// side matching counts, so a watcher also sees a service leave its slice.
    pub fn matches_transition(&self, event: &Event, previous: Option<&Event>) -> bool {
        self.matches(event) || previous.is_some_and(|p| self.matches(p))
    }

    /// Whether the query reads nothing of an event but its host and service, so a key alone
    /// (a metric series' key) answers it; `state = "critical"`, `tagged "x"` or `metric > 1`
    /// need the key's event.
    pub fn reads_key_only(&self) -> bool {
        self.expr.reads_key_only()
    }

    /// True for the query `true` (also written `(true)`), which matches every event; callers
    /// can skip evaluation for it.
    pub fn is_match_all(&self) -> bool {
        matches!(self.expr, ast::Expr::Truthy(ast::Value::Bool(true)))
    }
}

impl FromStr for Query {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Query::parse(s)
    }
}

/// The canonical form: single spaces, `nil` for `null`, `metric` for `metric_f`, strings
/// re-escaped, parentheses only where the tree has them. It parses back to an equal query.
impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.expr)
    }
}

#[cfg(test)]
mod tests;
