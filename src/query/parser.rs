//! Recursive-descent parser from tokens to [`Expr`].
//!
//! It owns the grammar (precedence `not` > `and` > `or`, what may follow each operator), the
//! limits that keep untrusted input cheap (nesting depth; regex size), and compiling patterns
//! once, here, so evaluation never compiles anything. Recursion happens only through `not` and
//! parentheses, both counted against [`MAX_DEPTH`], so no input can overflow the stack.

use regex_automata::meta::{self, Regex};
use regex_automata::util::syntax;

use super::ast::{
    Bounded, CmpOp, Expr, Field, Pattern, Value, SILENCE_DFA_CACHE, SILENCE_SCAN_BYTES,
};
use super::lexer::{column, quote, Lexer, Tok, Token};
use super::ParseError;

/// Deepest nesting of parentheses and `not` a query may use.
pub const MAX_DEPTH: usize = 64;

/// Compiled-size limit for one regex (and for the DFA cache behind it).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiled size all the regexes of one query may use together. Without it a 64 KiB query of
/// 800 patterns each just under [`REGEX_SIZE_LIMIT`] took 24 s and 1 GB to compile; ordinary
/// patterns (`"web-%"`, `"^db[0-9]+$"`) compile to a few KiB, so this leaves room for hundreds.
pub const QUERY_REGEX_BUDGET: usize = 4 << 20;

/// Regex and LIKE patterns one query may hold: each keeps a lazily grown DFA cache of up to
/// [`REGEX_SIZE_LIMIT`] while it is evaluated, which the compile budget does not count.
pub const MAX_PATTERNS: usize = 64;

/// How the patterns of a query are compiled: a dashboard's filter (lives as long as its
/// subscription; the regex's own cache pool) or a silence (kept by the engine, up to 1,000 of
/// them: small caches, one per pattern, and a bounded scan, all charged to the query's memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Filter,
    Silence,
}

/// Parses a whole query: one predicate, then the end of the input.
pub fn parse(input: &str, profile: Profile) -> Result<Expr, ParseError> {
    let mut lexer = Lexer::new(input);
    let current = lexer.next_token()?;
    let mut parser = Parser {
        input,
        lexer,
        current,
        regex_budget: QUERY_REGEX_BUDGET,
        patterns: 0,
        profile,
    };
    let expr = parser.or(0)?;
    if parser.current.tok != Tok::Eof {
        return Err(parser.error_here(format!("unexpected {}", parser.describe())));
    }
    Ok(expr)
}

struct Parser<'a> {
    input: &'a str,
    lexer: Lexer<'a>,
    /// The next token, not yet consumed.
    current: Token,
    /// Compiled bytes the query's remaining patterns may still use.
    regex_budget: usize,
    /// Patterns compiled so far.
    patterns: usize,
    profile: Profile,
}

impl Parser<'_> {
    /// Consumes the current token and returns it.
    fn advance(&mut self) -> Result<Token, ParseError> {
        let next = self.lexer.next_token()?;
        Ok(std::mem::replace(&mut self.current, next))
    }

    fn eat(&mut self, tok: &Tok) -> Result<bool, ParseError> {
        if self.current.tok == *tok {
            self.advance()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn error_at(&self, offset: usize, message: String) -> ParseError {
        ParseError {
            column: column(self.input, offset),
            message,
        }
    }

    fn error_here(&self, message: String) -> ParseError {
        self.error_at(self.current.start, message)
    }

    /// The current token as an error message names it.
    fn describe(&self) -> String {
        match self.current.tok {
            Tok::Eof => "end of input".to_owned(),
            _ => quote(&self.input[self.current.start..self.current.end]),
        }
    }

    fn check_depth(&self, depth: usize) -> Result<(), ParseError> {
        if depth > MAX_DEPTH {
            Err(self.error_here(format!(
                "query nests too deeply (more than {MAX_DEPTH} levels of parentheses and 'not')"
            )))
        } else {
            Ok(())
        }
    }

    /// `and_expr ('or' and_expr)*`
    fn or(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let first = self.and(depth)?;
        if self.current.tok != Tok::Or {
            return Ok(first);
        }
        let mut operands = vec![first];
        while self.eat(&Tok::Or)? {
            operands.push(self.and(depth)?);
        }
        Ok(Expr::Or(operands))
    }

    /// `unary ('and' unary)*`
    fn and(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let first = self.unary(depth)?;
        if self.current.tok != Tok::And {
            return Ok(first);
        }
        let mut operands = vec![first];
        while self.eat(&Tok::And)? {
            operands.push(self.unary(depth)?);
        }
        Ok(Expr::And(operands))
    }

    /// `'not' unary | primary`
    fn unary(&mut self, depth: usize) -> Result<Expr, ParseError> {
        if self.current.tok == Tok::Not {
            self.check_depth(depth + 1)?;
            self.advance()?;
            return Ok(Expr::Not(Box::new(self.unary(depth + 1)?)));
        }
        self.primary(depth)
    }

    /// `'(' or_expr ')' | simple`
    fn primary(&mut self, depth: usize) -> Result<Expr, ParseError> {
        if self.current.tok != Tok::LParen {
            return self.simple();
        }
        self.check_depth(depth + 1)?;
        self.advance()?;
        let inner = self.or(depth + 1)?;
        if self.current.tok != Tok::RParen {
            return Err(self.error_here("expected ')'".to_owned()));
        }
        self.advance()?;
        Ok(inner)
    }

    /// `tagged STRING | value (op operand)?`
    fn simple(&mut self) -> Result<Expr, ParseError> {
        if self.current.tok == Tok::Tagged {
            self.advance()?;
            let (tag, _) = self.string_operand("'tagged' needs a string")?;
            return Ok(Expr::Tagged(tag));
        }
        let Some(lhs) = self.value()? else {
            return Err(self.error_here(format!("expected a query, got {}", self.describe())));
        };
        let expr = match self.current.tok {
            Tok::Eq | Tok::Ne => {
                let negated = self.current.tok == Tok::Ne;
                let op = if negated { "!=" } else { "=" };
                self.advance()?;
                let Some(rhs) = self.value()? else {
                    return Err(self.error_here(format!("expected a value after '{op}'")));
                };
                Expr::Equal { lhs, rhs, negated }
            }
            Tok::Lt | Tok::Gt | Tok::Le | Tok::Ge => {
                let op = match self.current.tok {
                    Tok::Lt => CmpOp::Lt,
                    Tok::Gt => CmpOp::Gt,
                    Tok::Le => CmpOp::Le,
                    _ => CmpOp::Ge,
                };
                self.advance()?;
                let Tok::Number(rhs) = self.current.tok else {
                    return Err(
                        self.error_here(format!("expected a number after '{}'", op.symbol()))
                    );
                };
                self.advance()?;
                Expr::Compare { lhs, op, rhs }
            }
            Tok::Like => {
                self.advance()?;
                let (source, at) = self.string_operand("'=~' needs a string")?;
                let regex = self.compile(&like_to_regex(&source), at, "invalid pattern")?;
                Expr::Like {
                    lhs,
                    pattern: self.pattern(source, regex),
                }
            }
            Tok::Match => {
                self.advance()?;
                let (source, at) = self.string_operand("'~=' needs a string")?;
                let regex = self.compile(&source, at, "invalid regex")?;
                Expr::Regex {
                    lhs,
                    pattern: self.pattern(source, regex),
                }
            }
            _ => Expr::Truthy(lhs),
        };
        Ok(expr)
    }

    /// Compiles the pattern at byte `at`, charging its compiled size to the query's budget.
    /// The remaining budget is also the compiler's size limit, so a pattern past it stops
    /// compiling as soon as it outgrows it rather than after the work is done.
    fn compile(&mut self, pattern: &str, at: usize, what: &str) -> Result<Regex, ParseError> {
        if self.patterns == MAX_PATTERNS {
            return Err(self.error_at(
                at,
                format!("query has more than {MAX_PATTERNS} regex and LIKE patterns"),
            ));
        }
        self.patterns += 1;
        let over_budget = |parser: &Self| {
            parser.error_at(
                at,
                format!(
                    "regexes in this query exceed the {QUERY_REGEX_BUDGET}-byte compile budget"
                ),
            )
        };
        let limit = REGEX_SIZE_LIMIT.min(self.regex_budget);
        let regex = match compile(pattern, limit, self.profile) {
            Ok(regex) => regex,
            Err(CompileError::TooBig) if limit < REGEX_SIZE_LIMIT => return Err(over_budget(self)),
            Err(CompileError::TooBig) => {
                return Err(self.error_at(
                    at,
                    format!(
                        "{what}: pattern is too large (compiled size would exceed {REGEX_SIZE_LIMIT} bytes)"
                    ),
                ))
            }
            Err(CompileError::Invalid(detail)) => {
                return Err(self.error_at(at, format!("{what}: {detail}")))
            }
        };
        // What the compiled forms hold on the heap, and the text they were compiled from.
        let cost = regex.memory_usage() + pattern.len();
        match self.regex_budget.checked_sub(cost) {
            Some(left) => self.regex_budget = left,
            None => return Err(over_budget(self)),
        }
        Ok(regex)
    }

    /// The compiled pattern as this profile keeps it.
    fn pattern(&self, source: String, regex: Regex) -> Pattern {
        match self.profile {
            Profile::Filter => Pattern::new(source, regex),
            Profile::Silence => {
                let cache = std::sync::Arc::new(std::sync::Mutex::new(regex.create_cache()));
                Pattern {
                    source,
                    regex,
                    bounded: Some(Bounded {
                        scan_limit: SILENCE_SCAN_BYTES,
                        cache,
                    }),
                }
            }
        }
    }

    /// Consumes a value token if the current token is one.
    fn value(&mut self) -> Result<Option<Value>, ParseError> {
        let value = match &self.current.tok {
            Tok::True => Value::Bool(true),
            Tok::False => Value::Bool(false),
            Tok::Nil => Value::Nil,
            Tok::Number(n) => Value::Number(*n),
            Tok::Str(s) => Value::Str(s.clone()),
            Tok::Ident(name) => Value::Field(Field::from_name(name)),
            _ => return Ok(None),
        };
        self.advance()?;
        Ok(Some(value))
    }

    /// Consumes a string literal, returning it and its byte offset; otherwise fails with
    /// `message` at the current token.
    fn string_operand(&mut self, message: &str) -> Result<(String, usize), ParseError> {
        let Tok::Str(s) = &self.current.tok else {
            return Err(self.error_here(message.to_owned()));
        };
        let s = s.clone();
        let at = self.advance()?.start;
        Ok((s, at))
    }
}

/// SQL LIKE as a regex: `%` is any run of characters, everything else literal, anchored at both
/// ends. `(?s)` so that `%` also spans newlines.
pub fn like_to_regex(pattern: &str) -> String {
    let body: Vec<String> = pattern.split('%').map(regex::escape).collect();
    format!(r"(?s)\A{}\z", body.join(".*"))
}

enum CompileError {
    /// The compiled form would exceed the size limit it was given.
    TooBig,
    /// Not a valid pattern: a one-line human description.
    Invalid(String),
}

/// Compiles with bounded size, exactly as `regex::Regex::new` would (same engine, same
/// options) but through `regex_automata` so that the compiled size can be charged.
fn compile(pattern: &str, size_limit: usize, profile: Profile) -> Result<Regex, CompileError> {
    let (cache, backtrack) = match profile {
        Profile::Filter => (REGEX_SIZE_LIMIT, true),
        Profile::Silence => (SILENCE_DFA_CACHE, false),
    };
    let config = meta::Config::new()
        .nfa_size_limit(Some(size_limit))
        .hybrid_cache_capacity(cache)
        .backtrack(backtrack)
        .match_kind(regex_automata::MatchKind::LeftmostFirst)
        .utf8_empty(true);
    meta::Builder::new()
        .configure(config)
        .syntax(syntax::Config::new().utf8(true))
        .build(pattern)
        .map_err(|e| {
            if e.size_limit().is_some() {
                return CompileError::TooBig;
            }
            // A syntax error renders as several lines (the pattern, a caret line, then
            // `error: ...`); the last line is the part a person needs.
            let text = match e.syntax_error() {
                Some(syntax) => syntax.to_string(),
                None => e.to_string(),
            };
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            CompileError::Invalid(last.trim().trim_start_matches("error: ").to_owned())
        })
}
