//! Turns query text into tokens, one at a time.
//!
//! The lexer owns everything about spelling: string escapes, number syntax, identifiers and
//! keywords. It is pulled lazily by the parser so that errors come out in input order (a bad
//! token late in the query never hides a grammar error earlier on). Positions are byte offsets;
//! only an error converts one to the 1-based character column users see.

use super::ast::Number;
use super::ParseError;

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    LParen,
    RParen,
    /// `=`
    Eq,
    /// `!=`
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    /// `=~` (SQL LIKE)
    Like,
    /// `~=` (regex)
    Match,
    And,
    Or,
    Not,
    Tagged,
    True,
    False,
    /// `nil` or `null`
    Nil,
    Number(Number),
    Str(String),
    Ident(String),
    Eof,
}

/// A token and where it sits in the input (byte offsets, `start..end`).
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub start: usize,
    pub end: usize,
}

/// The 1-based character column of byte offset `offset` in `input`.
pub fn column(input: &str, offset: usize) -> usize {
    input
        .get(..offset)
        .map_or(input.chars().count(), |s| s.chars().count())
        + 1
}

pub struct Lexer<'a> {
    input: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(input: &'a str) -> Self {
        Lexer { input, pos: 0 }
    }

    fn error(&self, offset: usize, message: String) -> ParseError {
        ParseError {
            column: column(self.input, offset),
            message,
        }
    }

    fn peek_char(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn peek_char_at(&self, ahead: usize) -> Option<char> {
        self.input[self.pos..].chars().nth(ahead)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek_char()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// The next token; `Tok::Eof` (repeatedly) at the end of the input.
    pub fn next_token(&mut self) -> Result<Token, ParseError> {
        while self.peek_char().is_some_and(char::is_whitespace) {
            self.bump();
        }
        let start = self.pos;
        let Some(c) = self.peek_char() else {
            return Ok(Token {
                tok: Tok::Eof,
                start,
                end: start,
            });
        };
        let tok = match c {
            '(' => self.punct(1, Tok::LParen),
            ')' => self.punct(1, Tok::RParen),
            '=' if self.peek_char_at(1) == Some('~') => self.punct(2, Tok::Like),
            '=' => self.punct(1, Tok::Eq),
            '!' if self.peek_char_at(1) == Some('=') => self.punct(2, Tok::Ne),
            '~' if self.peek_char_at(1) == Some('=') => self.punct(2, Tok::Match),
            '<' if self.peek_char_at(1) == Some('=') => self.punct(2, Tok::Le),
            '<' => self.punct(1, Tok::Lt),
            '>' if self.peek_char_at(1) == Some('=') => self.punct(2, Tok::Ge),
            '>' => self.punct(1, Tok::Gt),
            '"' => self.string()?,
            c if c.is_ascii_digit() || self.starts_number(c) => self.number()?,
            c if is_ident_start(c) => self.ident(),
            '!' => {
                return Err(self.error(
                    start,
                    "unexpected character '!' (did you mean '!='?)".into(),
                ))
            }
            '~' => {
                return Err(self.error(
                    start,
                    "unexpected character '~' (did you mean '~='?)".into(),
                ))
            }
            c => return Err(self.error(start, format!("unexpected character {}", quote_char(c)))),
        };
        Ok(Token {
            tok,
            start,
            end: self.pos,
        })
    }

    fn punct(&mut self, len: usize, tok: Tok) -> Tok {
        self.pos += len; // all punctuation is ASCII
        tok
    }

    /// `c` (a sign or a dot) begins a number: `-1`, `+2`, `.5`, `-.5`.
    fn starts_number(&self, c: char) -> bool {
        let digit_at = |i| {
            self.peek_char_at(i)
                .is_some_and(|c: char| c.is_ascii_digit())
        };
        match c {
            '-' | '+' => digit_at(1) || (self.peek_char_at(1) == Some('.') && digit_at(2)),
            '.' => digit_at(1),
            _ => false,
        }
    }

    fn digits(&mut self) -> usize {
        let mut n = 0;
        while self.peek_char().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
            n += 1;
        }
        n
    }

    /// `[+-]? (digits ('.' digits)? | '.' digits) ([eE] [+-]? digits)?`; integer when there is
    /// neither a fraction nor an exponent.
    fn number(&mut self) -> Result<Tok, ParseError> {
        let start = self.pos;
        if matches!(self.peek_char(), Some('-' | '+')) {
            self.bump();
        }
        let mut is_float = false;
        self.digits();
        if self.peek_char() == Some('.') && self.peek_char_at(1).is_some_and(|c| c.is_ascii_digit())
        {
            self.bump();
            self.digits();
            is_float = true;
        }
        if matches!(self.peek_char(), Some('e' | 'E')) {
            let signed = matches!(self.peek_char_at(1), Some('-' | '+'));
            let first_digit = if signed { 2 } else { 1 };
            if self
                .peek_char_at(first_digit)
                .is_some_and(|c| c.is_ascii_digit())
            {
                self.pos += first_digit; // 'e' and the sign are ASCII
                self.digits();
                is_float = true;
            }
        }
        // `1abc`, `1.`, `1e`, `1-2`: one malformed number, not a number and something else.
        if self
            .peek_char()
            .is_some_and(|c| is_ident_continue(c) || c == '+')
        {
            while self
                .peek_char()
                .is_some_and(|c| is_ident_continue(c) || c == '+')
            {
                self.bump();
            }
            let text = &self.input[start..self.pos];
            return Err(self.error(start, format!("invalid number {}", quote(text))));
        }
        let text = &self.input[start..self.pos];
        if !is_float {
            if let Ok(i) = text.parse::<i64>() {
                return Ok(Tok::Number(Number::Int(i)));
            }
        }
        match text.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Tok::Number(Number::Float(x))),
            _ => Err(self.error(start, format!("number {} is out of range", quote(text)))),
        }
    }

    fn ident(&mut self) -> Tok {
        let start = self.pos;
        while self.peek_char().is_some_and(is_ident_continue) {
            self.bump();
        }
        match &self.input[start..self.pos] {
            "and" => Tok::And,
            "or" => Tok::Or,
            "not" => Tok::Not,
            "tagged" => Tok::Tagged,
            "true" => Tok::True,
            "false" => Tok::False,
            "nil" | "null" => Tok::Nil,
            name => Tok::Ident(name.to_owned()),
        }
    }

    /// A double-quoted string with JSON-style escapes.
    fn string(&mut self) -> Result<Tok, ParseError> {
        let open = self.pos;
        self.bump(); // the opening quote
        let mut out = String::new();
        loop {
            let at = self.pos;
            match self.bump() {
                None => {
                    return Err(self.error(open, "unterminated string starting".into()));
                }
                Some('"') => return Ok(Tok::Str(out)),
                Some('\\') => {
                    let escaped = match self.bump() {
                        None => return Err(self.error(open, "unterminated string starting".into())),
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('/') => '/',
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some('b') => '\u{8}',
                        Some('f') => '\u{c}',
                        Some('u') => self.unicode_escape(at)?,
                        Some(c) => {
                            return Err(self.error(
                                at,
                                format!(
                                    "invalid escape '\\{c}' in string (use \\\\ for a backslash)"
                                ),
                            ))
                        }
                    };
                    out.push(escaped);
                }
                Some(c) => out.push(c),
            }
        }
    }

    /// After `\u` (which started at byte `at`): four hex digits, and for a UTF-16 high surrogate
    /// the `\uXXXX` low surrogate that must follow it.
    fn unicode_escape(&mut self, at: usize) -> Result<char, ParseError> {
        let high = self.hex4(at)?;
        let code = match high {
            0xD800..=0xDBFF => {
                if self.input[self.pos..].starts_with("\\u") {
                    let low_at = self.pos;
                    self.pos += 2;
                    let low = self.hex4(low_at)?;
                    if !(0xDC00..=0xDFFF).contains(&low) {
                        return Err(
                            self.error(at, "invalid unicode escape (unpaired surrogate)".into())
                        );
                    }
                    0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                } else {
                    return Err(
                        self.error(at, "invalid unicode escape (unpaired surrogate)".into())
                    );
                }
            }
            0xDC00..=0xDFFF => {
                return Err(self.error(at, "invalid unicode escape (unpaired surrogate)".into()))
            }
            c => c,
        };
        char::from_u32(code).ok_or_else(|| self.error(at, "invalid unicode escape".into()))
    }

    fn hex4(&mut self, at: usize) -> Result<u32, ParseError> {
        let mut code = 0;
        for _ in 0..4 {
            let digit = self.peek_char().and_then(|c| c.to_digit(16));
            let Some(d) = digit else {
                return Err(self.error(
                    at,
                    "invalid unicode escape (expected 4 hex digits after '\\u')".into(),
                ));
            };
            self.bump();
            code = code * 16 + d;
        }
        Ok(code)
    }
}

pub fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

pub fn is_ident_continue(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// `text` in single quotes for an error message, shortened if long.
pub fn quote(text: &str) -> String {
    const MAX: usize = 40;
    if text.chars().count() > MAX {
        let head: String = text.chars().take(MAX).collect();
        format!("'{head}…'")
    } else {
        format!("'{text}'")
    }
}

fn quote_char(c: char) -> String {
    if c.is_control() {
        format!("U+{:04X}", u32::from(c))
    } else {
        format!("'{c}'")
    }
}
