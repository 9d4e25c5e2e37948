//! Recursive-descent parser from tokens to [`Expr`].
//!
//! It owns the grammar (precedence `not` > `and` > `or`, what may follow each operator), the
//! limits that keep untrusted input cheap (nesting depth; regex size), and compiling patterns
//! once, here, so evaluation never compiles anything. Recursion happens only through `not` and
//! parentheses, both counted against [`MAX_DEPTH`], so no input can overflow the stack.

use regex::{Regex, RegexBuilder};

use super::ast::{CmpOp, Expr, Field, Pattern, Value};
use super::lexer::{column, quote, Lexer, Tok, Token};
use super::ParseError;

/// Deepest nesting of parentheses and `not` a query may use.
pub const MAX_DEPTH: usize = 64;

/// Compiled-size limit for one regex (and for the DFA cache behind it).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Parses a whole query: one predicate, then the end of the input.
pub fn parse(input: &str) -> Result<Expr, ParseError> {
    let mut lexer = Lexer::new(input);
    let current = lexer.next_token()?;
    let mut parser = Parser {
        input,
        lexer,
        current,
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
                let regex = compile(&like_to_regex(&source))
                    .map_err(|detail| self.error_at(at, format!("invalid pattern: {detail}")))?;
                Expr::Like {
                    lhs,
                    pattern: Pattern { source, regex },
                }
            }
            Tok::Match => {
                self.advance()?;
                let (source, at) = self.string_operand("'~=' needs a string")?;
                let regex = compile(&source)
                    .map_err(|detail| self.error_at(at, format!("invalid regex: {detail}")))?;
                Expr::Regex {
                    lhs,
                    pattern: Pattern { source, regex },
                }
            }
            _ => Expr::Truthy(lhs),
        };
        Ok(expr)
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

/// Compiles with bounded size; the error is a one-line human description.
fn compile(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => {
                format!("pattern is too large (compiled size would exceed {limit} bytes)")
            }
            // A syntax error renders as several lines (the pattern, a caret line, then
            // `error: ...`); the last line is the part a person needs.
            other => {
                let text = other.to_string();
                let last = text
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                last.trim().trim_start_matches("error: ").to_owned()
            }
        })
}
