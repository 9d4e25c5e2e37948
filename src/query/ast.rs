//! The query AST and its canonical printed form.
//!
//! This module owns the shape of a parsed query and `Display`, because the two must agree: every
//! AST prints as text that the parser turns back into an equal AST (the proptest in `mod.rs`
//! holds us to that). Aliases are normalised at parse time (`null` → `nil`, `metric_f` →
//! `metric`), so the AST has one spelling for each meaning and printing is unambiguous.
//!
//! `and`/`or` are n-ary: a chain `a and b and c` is one node with three operands, so a long
//! chain does not make a deep tree (evaluation, printing and dropping stay shallow). An operand
//! that is itself an `and`/`or` node came from parentheses, and printing keeps those parentheses.

use std::fmt;

use std::sync::{Arc, Mutex};

use regex_automata::meta::{Cache, Regex};
use regex_automata::Input;

/// Lazy-DFA cache of one silence pattern, each direction (forward, reverse). A pattern whose DFA
/// needs more at its start (large Unicode classes) goes without one (the PikeVM, slower, over at
/// most [`SILENCE_SCAN_BYTES`]). A filter's patterns get [`super::REGEX_SIZE_LIMIT`].
pub const SILENCE_DFA_CACHE: usize = 32 * 1024;

/// Bytes of a value a silence's pattern looks at: the first 4 KiB (cut at a character
/// boundary). Bounds the work of every silence on every change whatever the descriptions hold.
pub const SILENCE_SCAN_BYTES: usize = 4 * 1024;

/// The most a silence's pattern holds: its compiled form and text, its lazy-DFA caches (forward
/// and reverse, each at most [`SILENCE_DFA_CACHE`]) and the PikeVM's cache, which grows with the
/// compiled NFA (about a quarter of it, measured; charged at its whole size). The bounded
/// backtracker (up to 256 KiB of visited set) is off for silences.
pub fn silence_pattern_memory(regex: &Regex, pattern: &str) -> usize {
    2 * regex.memory_usage() + pattern.len() + 2 * SILENCE_DFA_CACHE
}

/// A predicate over one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Every operand holds (always two or more operands).
    And(Vec<Expr>),
    /// Some operand holds (always two or more operands).
    Or(Vec<Expr>),
    Not(Box<Expr>),
    /// `tagged "x"`: the event's tags contain `x`.
    Tagged(String),
    /// `lhs = rhs`, or `lhs != rhs` when `negated`.
    Equal {
        lhs: Value,
        rhs: Value,
        negated: bool,
    },
    /// `lhs < n` and friends: only numbers order.
    Compare {
        lhs: Value,
        op: CmpOp,
        rhs: Number,
    },
    /// `lhs =~ "pat%"`: SQL LIKE, `%` the only wildcard, anchored at both ends.
    Like {
        lhs: Value,
        pattern: Pattern,
    },
    /// `lhs ~= "re"`: a regex found anywhere in the value.
    Regex {
        lhs: Value,
        pattern: Pattern,
    },
    /// A bare value used as a predicate: holds when the value is present and not `false`.
    Truthy(Value),
}

/// The ordering operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Lt,
    Gt,
    Le,
    Ge,
}

impl CmpOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Lt => "<",
            CmpOp::Gt => ">",
            CmpOp::Le => "<=",
            CmpOp::Ge => ">=",
        }
    }
}

/// An operand: a literal or a field of the event.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    /// `nil` (or `null`): an absent field.
    Nil,
    Number(Number),
    Str(String),
    Field(Field),
}

/// A number literal. Integers stay integers so that comparing with an integer metric is exact;
/// a float is always finite (the parser rejects literals that overflow to infinity).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Int(i64),
    Float(f64),
}

/// An event field a query can name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Host,
    Service,
    State,
    Description,
    /// `metric`, also spelled `metric_f`.
    Metric,
    Ttl,
    /// Event time in fractional Unix seconds.
    Time,
    /// Any other identifier: a custom attribute (its values are strings).
    Attribute(String),
}

impl Field {
    /// The field an identifier names. Keywords never reach here (the lexer takes them first).
    pub fn from_name(name: &str) -> Field {
        match name {
            "host" => Field::Host,
            "service" => Field::Service,
            "state" => Field::State,
            "description" => Field::Description,
            "metric" | "metric_f" => Field::Metric,
            "ttl" => Field::Ttl,
            "time" => Field::Time,
            other => Field::Attribute(other.to_owned()),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Field::Host => "host",
            Field::Service => "service",
            Field::State => "state",
            Field::Description => "description",
            Field::Metric => "metric",
            Field::Ttl => "ttl",
            Field::Time => "time",
            Field::Attribute(name) => name,
        }
    }
}

/// A pattern compiled once at parse time. Two patterns are equal when their source text is (the
/// compiled form is derived from it).
#[derive(Clone)]
pub struct Pattern {
    /// The string literal as the user wrote it (after unescaping).
    pub source: String,
    pub regex: Regex,
    /// How a silence's pattern is bounded (`None`: a filter's, unbounded here).
    pub bounded: Option<Bounded>,
}

/// A pattern whose memory and work are bounded, for the patterns a server keeps for long (a
/// silence's): it scans at most `scan_limit` bytes of a value, and searches with its one cache
/// (the regex's own pool would keep a cache per thread that ever evaluated it).
#[derive(Clone)]
pub struct Bounded {
    pub scan_limit: usize,
    pub cache: Arc<Mutex<Cache>>,
}

impl Expr {
    /// The most its patterns hold in memory (see [`Pattern::memory`]).
    pub fn pattern_memory(&self) -> usize {
        match self {
            Expr::And(operands) | Expr::Or(operands) => {
                operands.iter().map(Expr::pattern_memory).sum()
            }
            Expr::Not(inner) => inner.pattern_memory(),
            Expr::Like { pattern, .. } | Expr::Regex { pattern, .. } => pattern.memory(),
            Expr::Tagged(_) | Expr::Equal { .. } | Expr::Compare { .. } | Expr::Truthy(_) => 0,
        }
    }

    /// Whether it reads nothing of an event but its host and service.
    pub fn reads_key_only(&self) -> bool {
        match self {
            Expr::And(operands) | Expr::Or(operands) => operands.iter().all(Expr::reads_key_only),
            Expr::Not(inner) => inner.reads_key_only(),
            Expr::Tagged(_) => false,
            Expr::Equal { lhs, rhs, .. } => lhs.is_key_only() && rhs.is_key_only(),
            Expr::Compare { lhs, .. }
            | Expr::Like { lhs, .. }
            | Expr::Regex { lhs, .. }
            | Expr::Truthy(lhs) => lhs.is_key_only(),
        }
    }
}

impl Value {
    /// A literal, or the host or the service.
    fn is_key_only(&self) -> bool {
        match self {
            Value::Field(field) => matches!(field, Field::Host | Field::Service),
            Value::Bool(_) | Value::Nil | Value::Number(_) | Value::Str(_) => true,
        }
    }
}

impl Pattern {
    /// The most it holds in memory: a filter's compiled form and text (its caches live in the
    /// regex's pool, per thread); a bounded pattern's with its cache at its bounds
    /// ([`silence_pattern_memory`]).
    pub fn memory(&self) -> usize {
        match &self.bounded {
            None => self.regex.memory_usage() + self.source.len(),
            Some(_) => silence_pattern_memory(&self.regex, &self.source),
        }
    }

    /// A filter's pattern: the regex's own cache pool, the whole value scanned.
    pub fn new(source: String, regex: Regex) -> Pattern {
        Pattern {
            source,
            regex,
            bounded: None,
        }
    }

    /// Whether the pattern is found in `value` (for a bounded pattern: in its first
    /// `scan_limit` bytes, cut at a character boundary).
    pub fn is_match(&self, value: &str) -> bool {
        let Some(bounded) = &self.bounded else {
            return self.regex.is_match(value);
        };
        let mut end = value.len().min(bounded.scan_limit);
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        // A panic while the lock was held leaves the cache as valid as any: keep using it.
        let mut cache = bounded
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.regex
            .is_match_with(&mut cache, &Input::new(&value[..end]))
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pattern").field(&self.source).finish()
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::And(operands) => write_chain(f, operands, " and ", |e| {
                matches!(e, Expr::And(_) | Expr::Or(_))
            }),
            Expr::Or(operands) => write_chain(f, operands, " or ", |e| matches!(e, Expr::Or(_))),
            Expr::Not(inner) => {
                f.write_str("not ")?;
                write_operand(f, inner, matches!(**inner, Expr::And(_) | Expr::Or(_)))
            }
            Expr::Tagged(tag) => {
                f.write_str("tagged ")?;
                write_string(f, tag)
            }
            Expr::Equal { lhs, rhs, negated } => {
                let op = if *negated { "!=" } else { "=" };
                write!(f, "{lhs} {op} {rhs}")
            }
            Expr::Compare { lhs, op, rhs } => write!(f, "{lhs} {} {rhs}", op.symbol()),
            Expr::Like { lhs, pattern } => {
                write!(f, "{lhs} =~ ")?;
                write_string(f, &pattern.source)
            }
            Expr::Regex { lhs, pattern } => {
                write!(f, "{lhs} ~= ")?;
                write_string(f, &pattern.source)
            }
            Expr::Truthy(value) => write!(f, "{value}"),
        }
    }
}

/// Operands joined by `sep`; an operand for which `needs_parens` holds is parenthesised (it
/// came from parentheses, or binds more loosely than the chain).
fn write_chain(
    f: &mut fmt::Formatter<'_>,
    operands: &[Expr],
    sep: &str,
    needs_parens: impl Fn(&Expr) -> bool,
) -> fmt::Result {
    for (i, operand) in operands.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        write_operand(f, operand, needs_parens(operand))?;
    }
    Ok(())
}

fn write_operand(f: &mut fmt::Formatter<'_>, e: &Expr, parens: bool) -> fmt::Result {
    if parens {
        write!(f, "({e})")
    } else {
        write!(f, "{e}")
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(true) => f.write_str("true"),
            Value::Bool(false) => f.write_str("false"),
            Value::Nil => f.write_str("nil"),
            Value::Number(n) => write!(f, "{n}"),
            Value::Str(s) => write_string(f, s),
            Value::Field(field) => f.write_str(field.name()),
        }
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::Int(i) => write!(f, "{i}"),
            // `Debug` is the shortest text that parses back to the same f64, and it always has a
            // `.` or an exponent (`1.0`, `1e300`), so it re-lexes as a float, not an integer.
            Number::Float(x) => write!(f, "{x:?}"),
        }
    }
}

/// A string literal with the escapes the lexer understands; other characters are written as is.
pub fn write_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            '\r' => f.write_str("\\r")?,
            '\u{8}' => f.write_str("\\b")?,
            '\u{c}' => f.write_str("\\f")?,
            c if c.is_control() => write!(f, "\\u{:04x}", u32::from(c))?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}
