//! Tests of the whole query module through its public face, plus AST-level checks: grammar
//! tables, error positions, evaluation of every operator, and print/re-parse round trips.

use proptest::prelude::*;

use super::ast::{CmpOp, Expr, Field, Number, Pattern, Value};
use super::parser::like_to_regex;
use super::*;
use crate::event::{Event, Metric};

fn parse(q: &str) -> Expr {
    match Query::parse(q) {
        Ok(query) => query.expr,
        Err(e) => panic!("{q:?} failed to parse: {e}"),
    }
}

fn err(q: &str) -> String {
    match Query::parse(q) {
        Ok(query) => panic!("{q:?} parsed, as {query:?}"),
        Err(e) => e.to_string(),
    }
}

fn field(name: &str) -> Value {
    Value::Field(Field::from_name(name))
}

fn s(text: &str) -> Value {
    Value::Str(text.to_owned())
}

fn eq(lhs: Value, rhs: Value) -> Expr {
    Expr::Equal {
        lhs,
        rhs,
        negated: false,
    }
}

fn truthy(name: &str) -> Expr {
    Expr::Truthy(field(name))
}

// ---------------------------------------------------------------------------------------------
// Grammar

#[test]
fn grammar_table() {
    let cases: Vec<(&str, Expr)> = vec![
        ("true", Expr::Truthy(Value::Bool(true))),
        ("false", Expr::Truthy(Value::Bool(false))),
        ("nil", Expr::Truthy(Value::Nil)),
        ("null", Expr::Truthy(Value::Nil)),
        ("host", truthy("host")),
        ("\"x\"", Expr::Truthy(s("x"))),
        ("1", Expr::Truthy(Value::Number(Number::Int(1)))),
        ("host = \"web1\"", eq(field("host"), s("web1"))),
        ("host=\"web1\"", eq(field("host"), s("web1"))),
        ("\"web1\" = host", eq(s("web1"), field("host"))),
        (
            "state != \"ok\"",
            Expr::Equal {
                lhs: field("state"),
                rhs: s("ok"),
                negated: true,
            },
        ),
        ("host = nil", eq(field("host"), Value::Nil)),
        ("host = null", eq(field("host"), Value::Nil)),
        (
            "metric = 1",
            eq(field("metric"), Value::Number(Number::Int(1))),
        ),
        (
            "metric_f = 1",
            eq(field("metric"), Value::Number(Number::Int(1))),
        ),
        ("ttl = true", eq(field("ttl"), Value::Bool(true))),
        ("time = false", eq(field("time"), Value::Bool(false))),
        (
            "service = description",
            eq(field("service"), field("description")),
        ),
        (
            "metric < 1",
            Expr::Compare {
                lhs: field("metric"),
                op: CmpOp::Lt,
                rhs: Number::Int(1),
            },
        ),
        (
            "metric > -2.5",
            Expr::Compare {
                lhs: field("metric"),
                op: CmpOp::Gt,
                rhs: Number::Float(-2.5),
            },
        ),
        (
            "metric<=1e3",
            Expr::Compare {
                lhs: field("metric"),
                op: CmpOp::Le,
                rhs: Number::Float(1000.0),
            },
        ),
        (
            "ttl >= +7",
            Expr::Compare {
                lhs: field("ttl"),
                op: CmpOp::Ge,
                rhs: Number::Int(7),
            },
        ),
        ("tagged \"prod\"", Expr::Tagged("prod".into())),
        (
            "rack-1.zone_a = \"x\"",
            eq(
                Value::Field(Field::Attribute("rack-1.zone_a".into())),
                s("x"),
            ),
        ),
        (
            "_x",
            Expr::Truthy(Value::Field(Field::Attribute("_x".into()))),
        ),
        (
            "hosts",
            Expr::Truthy(Value::Field(Field::Attribute("hosts".into()))),
        ),
        (
            "android",
            Expr::Truthy(Value::Field(Field::Attribute("android".into()))),
        ),
        ("not host", Expr::Not(Box::new(truthy("host")))),
        (
            "not not host",
            Expr::Not(Box::new(Expr::Not(Box::new(truthy("host"))))),
        ),
        (
            "not host = \"a\"",
            Expr::Not(Box::new(eq(field("host"), s("a")))),
        ),
        ("a and b", Expr::And(vec![truthy("a"), truthy("b")])),
        ("a or b", Expr::Or(vec![truthy("a"), truthy("b")])),
        (
            "a and b and c",
            Expr::And(vec![truthy("a"), truthy("b"), truthy("c")]),
        ),
        (
            "not a and b or c",
            Expr::Or(vec![
                Expr::And(vec![Expr::Not(Box::new(truthy("a"))), truthy("b")]),
                truthy("c"),
            ]),
        ),
        (
            "a or b and c",
            Expr::Or(vec![truthy("a"), Expr::And(vec![truthy("b"), truthy("c")])]),
        ),
        (
            "(a or b) and c",
            Expr::And(vec![Expr::Or(vec![truthy("a"), truthy("b")]), truthy("c")]),
        ),
        (
            "not (a or b)",
            Expr::Not(Box::new(Expr::Or(vec![truthy("a"), truthy("b")]))),
        ),
        ("((host))", truthy("host")),
        (
            "(a and b) and c",
            Expr::And(vec![Expr::And(vec![truthy("a"), truthy("b")]), truthy("c")]),
        ),
        ("  host\t=\n\"x\"  ", eq(field("host"), s("x"))),
        (
            "host = \"a\" and (metric > 3 or tagged \"t\")",
            Expr::And(vec![
                eq(field("host"), s("a")),
                Expr::Or(vec![
                    Expr::Compare {
                        lhs: field("metric"),
                        op: CmpOp::Gt,
                        rhs: Number::Int(3),
                    },
                    Expr::Tagged("t".into()),
                ]),
            ]),
        ),
    ];
    for (q, want) in cases {
        assert_eq!(parse(q), want, "query {q:?}");
    }
}

#[test]
fn like_and_regex_parse_with_their_source() {
    match parse("service =~ \"cpu%\"") {
        Expr::Like { lhs, pattern } => {
            assert_eq!(lhs, field("service"));
            assert_eq!(pattern.source, "cpu%");
            // The compiled form is the LIKE pattern's regex: anchored, `%` spanning anything.
            assert!(pattern.regex.is_match("cpu-total"));
            assert!(!pattern.regex.is_match("a cpu"));
        }
        other => panic!("{other:?}"),
    }
    match parse("service ~= \"^cpu\\\\d+\"") {
        Expr::Regex { lhs, pattern } => {
            assert_eq!(lhs, field("service"));
            assert_eq!(pattern.source, "^cpu\\d+");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn string_escapes() {
    let cases = [
        (r#""a\"b""#, "a\"b"),
        (r#""a\\b""#, "a\\b"),
        (r#""\n\t\r""#, "\n\t\r"),
        (r#""\/\b\f""#, "/\u{8}\u{c}"),
        (r#""\u00e9\u00E9""#, "éé"),
        (r#""\ud83d\ude00""#, "😀"),
        (r#""héllo wörld 😀""#, "héllo wörld 😀"),
        (r#""""#, ""),
        ("\"tab\there\"", "tab\there"),
    ];
    for (q, want) in cases {
        assert_eq!(parse(q), Expr::Truthy(s(want)), "query {q}");
    }
}

#[test]
fn numbers() {
    let cases = [
        ("0", Number::Int(0)),
        ("-1", Number::Int(-1)),
        ("+1", Number::Int(1)),
        ("2.5", Number::Float(2.5)),
        ("-2.5", Number::Float(-2.5)),
        (".5", Number::Float(0.5)),
        ("-.5", Number::Float(-0.5)),
        ("1e3", Number::Float(1000.0)),
        ("1E-3", Number::Float(0.001)),
        ("1.5e+2", Number::Float(150.0)),
        ("9223372036854775807", Number::Int(i64::MAX)),
        ("-9223372036854775808", Number::Int(i64::MIN)),
        // Too big for i64: still a number, as a float.
        (
            "9223372036854775808",
            Number::Float(9_223_372_036_854_775_808.0),
        ),
    ];
    for (q, want) in cases {
        assert_eq!(parse(q), Expr::Truthy(Value::Number(want)), "query {q}");
        let cmp = format!("metric = {q}");
        assert_eq!(
            parse(&cmp),
            eq(field("metric"), Value::Number(want)),
            "query {cmp}"
        );
    }
}

#[test]
fn errors_name_the_column_and_what_was_expected() {
    let cases = [
        ("", "expected a query, got end of input at column 1"),
        ("   ", "expected a query, got end of input at column 4"),
        (
            "service = \"x\" and host =",
            "expected a value after '=' at column 25",
        ),
        (
            "service = \"x\" and h = )",
            "expected a value after '=' at column 23",
        ),
        ("host != and", "expected a value after '!=' at column 9"),
        ("state = \"ok\" foo", "unexpected 'foo' at column 14"),
        ("host)", "unexpected ')' at column 5"),
        ("host = \"web1", "unterminated string starting at column 8"),
        (
            "tagged \"web1\\\"",
            "unterminated string starting at column 8",
        ),
        ("metric < \"x\"", "expected a number after '<' at column 10"),
        (
            "metric >= host",
            "expected a number after '>=' at column 11",
        ),
        ("metric > ", "expected a number after '>' at column 10"),
        ("(host = \"a\" or b", "expected ')' at column 17"),
        ("(host = \"a\" or b foo", "expected ')' at column 18"),
        ("service =~ 1", "'=~' needs a string at column 12"),
        ("service ~= host", "'~=' needs a string at column 12"),
        ("tagged host", "'tagged' needs a string at column 8"),
        ("tagged", "'tagged' needs a string at column 7"),
        ("host and", "expected a query, got end of input at column 9"),
        ("and", "expected a query, got 'and' at column 1"),
        ("()", "expected a query, got ')' at column 2"),
        ("not", "expected a query, got end of input at column 4"),
        (
            "host = \"a\\q\"",
            "invalid escape '\\q' in string (use \\\\ for a backslash) at column 10",
        ),
        (
            "host = \"\\u12\"",
            "invalid unicode escape (expected 4 hex digits after '\\u') at column 9",
        ),
        (
            "host = \"\\ud800\"",
            "invalid unicode escape (unpaired surrogate) at column 9",
        ),
        (
            "host = \"\\udc00\"",
            "invalid unicode escape (unpaired surrogate) at column 9",
        ),
        ("host # 1", "unexpected character '#' at column 6"),
        (
            "host ! 1",
            "unexpected character '!' (did you mean '!='?) at column 6",
        ),
        (
            "host ~ 1",
            "unexpected character '~' (did you mean '~='?) at column 6",
        ),
        ("metric > -x", "unexpected character '-' at column 10"),
        ("metric > 1abc", "invalid number '1abc' at column 10"),
        ("metric > 1.", "invalid number '1.' at column 10"),
        ("metric > 1e", "invalid number '1e' at column 10"),
        (
            "metric > 1e999",
            "number '1e999' is out of range at column 10",
        ),
        // Columns count characters, not bytes.
        ("\"é\" = é =", "unexpected '=' at column 9"),
        // An error late in the text does not hide an earlier one.
        (
            "host = ) \"unterminated",
            "expected a value after '=' at column 8",
        ),
        (
            "service ~= \"(cpu\"",
            "invalid regex at column 12: unclosed group",
        ),
    ];
    for (q, want) in cases {
        assert_eq!(err(q), want, "query {q:?}");
    }
}

#[test]
fn error_fields() {
    let e = Query::parse("state = \"ok\" foo").unwrap_err();
    assert_eq!(e.column, 14);
    assert_eq!(e.message, "unexpected 'foo'");
    let e = Query::parse("service ~= \"[\"").unwrap_err();
    assert_eq!(e.column, 12);
    assert!(e.message.starts_with("invalid regex: "), "{}", e.message);
}

#[test]
fn huge_regex_is_rejected() {
    let q = "service ~= \"\\\\w{1000}\\\\w{1000}\"";
    let e = err(q);
    assert!(e.starts_with("invalid regex at column 12: "), "{e}");
}

#[test]
fn nesting_is_bounded() {
    let ok = format!("{}host{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    assert_eq!(parse(&ok), truthy("host"));
    let ok = format!("{}host", "not ".repeat(MAX_DEPTH));
    assert!(Query::parse(&ok).is_ok());

    let deep = format!(
        "{}host{}",
        "(".repeat(MAX_DEPTH + 1),
        ")".repeat(MAX_DEPTH + 1)
    );
    assert_eq!(
        err(&deep),
        format!(
            "query nests too deeply (more than {MAX_DEPTH} levels of parentheses and 'not') \
             at column {}",
            MAX_DEPTH + 1
        )
    );
    let deep = format!("{}host", "not ".repeat(MAX_DEPTH + 1));
    assert!(err(&deep).starts_with("query nests too deeply"));
    // Mixed, and far past the limit: an error, not a stack overflow.
    let deep = "not (".repeat(10_000);
    assert!(err(&deep).starts_with("query nests too deeply"));
}

#[test]
fn long_chains_are_flat_not_deep() {
    let q = vec!["host"; 6_000].join(" and ");
    match parse(&q) {
        Expr::And(operands) => assert_eq!(operands.len(), 6_000),
        other => panic!("{other:?}"),
    }
    let query = Query::parse(&q).unwrap();
    assert!(query.matches(&Event {
        host: Some("h".into()),
        ..Default::default()
    }));
    assert_eq!(query.to_string(), q);
}

#[test]
fn input_length_is_bounded() {
    let q = format!("host = \"{}\"", "x".repeat(MAX_QUERY_LEN));
    assert_eq!(
        err(&q),
        format!("query is too long (more than {MAX_QUERY_LEN} bytes) at column 1")
    );
    let q = format!("host = \"{}\"", "x".repeat(MAX_QUERY_LEN - 9));
    assert!(Query::parse(&q).is_ok());
}

#[test]
fn from_str_and_match_all() {
    let q: Query = "true".parse().unwrap();
    assert!(q.is_match_all());
    assert!("(true)".parse::<Query>().unwrap().is_match_all());
    assert!(!"false".parse::<Query>().unwrap().is_match_all());
    assert!(!"host".parse::<Query>().unwrap().is_match_all());
    assert!("host =".parse::<Query>().is_err());
}

#[test]
fn a_query_reads_the_key_only_when_it_names_no_field_but_host_and_service() {
    for q in [
        "true",
        r#"host = "a""#,
        r#"service =~ "disk%" and not host ~= "^db" or service = nil"#,
        r#"host = service"#,
        "service",
    ] {
        assert!(q.parse::<Query>().unwrap().reads_key_only(), "{q}");
    }
    for q in [
        r#"service =~ "disk%" and state = "critical""#,
        r#"host = "a" or tagged "x""#,
        "metric > 1",
        r#"not (host = "a" and description =~ "%full%")"#,
        r#"team = "ops""#,
        "ttl",
        r#""a" = state"#,
    ] {
        assert!(!q.parse::<Query>().unwrap().reads_key_only(), "{q}");
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation

fn event() -> Event {
    Event {
        host: Some("web1".into()),
        service: Some("cpu user".into()),
        state: Some("ok".into()),
        description: None,
        metric: Some(Metric::Float(1.0)),
        tags: vec!["prod".into(), "eu".into()],
        time_micros: 1_700_000_000_500_000,
        ttl: Some(0.1),
        attributes: vec![
            ("rack".into(), "r1".into()),
            ("note".into(), "multi\nline".into()),
        ],
    }
}

fn check(cases: &[(&str, bool)], e: &Event) {
    for (q, want) in cases {
        let query = Query::parse(q).unwrap_or_else(|err| panic!("{q:?}: {err}"));
        assert_eq!(query.matches(e), *want, "query {q:?} on {e:?}");
    }
}

#[test]
fn eval_equality() {
    check(
        &[
            ("host = \"web1\"", true),
            ("host = \"web2\"", false),
            ("\"web1\" = host", true),
            ("host != \"web1\"", false),
            ("host != \"web2\"", true),
            ("state = \"ok\"", true),
            ("service = \"cpu user\"", true),
            // Strings are compared exactly.
            ("host = \"WEB1\"", false),
            ("host = \"web\"", false),
            // Missing fields are nil.
            ("description = nil", true),
            ("description = null", true),
            ("description != nil", false),
            ("host = nil", false),
            ("host != nil", true),
            ("description = \"\"", false),
            ("nil = nil", true),
            // Attributes.
            ("rack = \"r1\"", true),
            ("rack = \"r2\"", false),
            ("missing = nil", true),
            ("missing = \"r1\"", false),
            ("rack != nil", true),
            // Literal vs literal.
            ("true = true", true),
            ("true = false", false),
            ("\"a\" = \"a\"", true),
            ("1 = 1.0", true),
            // Kinds never equal across.
            ("host = 1", false),
            ("rack = 1", false),
            ("metric = \"1\"", false),
            ("metric = true", false),
            ("host = true", false),
            ("host != 1", true),
        ],
        &event(),
    );
}

#[test]
fn eval_numbers_compare_by_value() {
    let with_metric = |m| Event {
        metric: Some(m),
        ..event()
    };
    let cases = [
        ("metric = 1", true),
        ("metric = 1.0", true),
        ("metric = 1e0", true),
        ("metric_f = 1", true),
        ("metric = 2", false),
        ("metric != 1", false),
        ("metric < 2", true),
        ("metric < 1", false),
        ("metric <= 1", true),
        ("metric > 0.5", true),
        ("metric > 1", false),
        ("metric >= 1.0", true),
        ("metric >= 1.5", false),
        ("metric > -1", true),
    ];
    check(&cases, &with_metric(Metric::Float(1.0)));
    check(&cases, &with_metric(Metric::Int(1)));
    check(
        &[
            ("metric = 9007199254740993", true),
            ("metric = 9007199254740992", false),
            ("metric > 9007199254740992", true),
        ],
        &with_metric(Metric::Int(9_007_199_254_740_993)),
    );
    // NaN equals nothing and orders with nothing.
    check(
        &[
            ("metric = 1", false),
            ("metric != 1", true),
            ("metric < 1", false),
            ("metric >= 1", false),
            ("metric", true),
        ],
        &with_metric(Metric::Float(f64::NAN)),
    );
}

#[test]
fn eval_ordering_needs_numbers() {
    let no_metric = Event {
        metric: None,
        ttl: None,
        ..event()
    };
    check(
        &[
            ("metric < 5", false),
            ("metric > 5", false),
            ("metric <= 5", false),
            ("metric >= 5", false),
            ("not metric < 5", true),
            ("ttl > 0", false),
            ("metric = nil", true),
            ("host > 1", false),
            ("rack < 1", false),
            ("true > 0", false),
            ("2 > 1", true),
            ("1.5 <= 1", false),
        ],
        &no_metric,
    );
}

#[test]
fn eval_ttl_and_time() {
    check(
        &[
            ("ttl = 0.1", true),
            ("ttl > 0.05", true),
            ("ttl < 1", true),
            ("time = 1700000000.5", true),
            ("time > 1700000000", true),
            ("time < 1700000001", true),
            ("time = 1700000000", false),
        ],
        &event(),
    );
    check(
        &[("time = 1700000000", true), ("ttl = 30", true)],
        &Event {
            time_micros: 1_700_000_000_000_000,
            ttl: Some(30.0),
            ..event()
        },
    );
}

#[test]
fn eval_like() {
    check(
        &[
            ("service =~ \"cpu%\"", true),
            ("service =~ \"%user\"", true),
            ("service =~ \"%pu u%\"", true),
            ("service =~ \"%\"", true),
            ("service =~ \"cpu user\"", true),
            // Anchored at both ends.
            ("service =~ \"cpu\"", false),
            ("service =~ \"pu%\"", false),
            ("service =~ \"%use\"", false),
            // Only `%` is special; regex metacharacters and `_` are literal.
            ("service =~ \"cpu.user\"", false),
            ("service =~ \"cpu_user\"", false),
            ("service =~ \"c.*\"", false),
            ("host =~ \"web[0-9]\"", false),
            // `%` spans newlines.
            ("note =~ \"multi%line\"", true),
            ("rack =~ \"r%\"", true),
            // Missing and non-string values never match.
            ("description =~ \"%\"", false),
            ("missing =~ \"%\"", false),
            ("metric =~ \"%\"", false),
            ("not description =~ \"%\"", true),
            ("\"abc\" =~ \"a%c\"", true),
        ],
        &event(),
    );
    check(
        &[
            ("host =~ \"web[0-9]\"", true),
            ("host =~ \"web_0-9_\"", false),
        ],
        &Event {
            host: Some("web[0-9]".into()),
            ..event()
        },
    );
}

#[test]
fn eval_regex_is_unanchored() {
    check(
        &[
            ("service ~= \"pu u\"", true),
            ("service ~= \"^cpu\"", true),
            ("service ~= \"^pu\"", false),
            ("service ~= \"user$\"", true),
            ("host ~= \"web\\\\d\"", true),
            ("host ~= \"web[2-9]\"", false),
            ("host ~= \"\"", true),
            ("rack ~= \"1\"", true),
            ("description ~= \"\"", false),
            ("missing ~= \"\"", false),
            ("metric ~= \"1\"", false),
        ],
        &event(),
    );
}

#[test]
fn eval_tagged() {
    check(
        &[
            ("tagged \"prod\"", true),
            ("tagged \"eu\"", true),
            ("tagged \"pro\"", false),
            ("tagged \"\"", false),
            ("not tagged \"staging\"", true),
        ],
        &event(),
    );
    check(&[("tagged \"prod\"", false)], &Event::default());
}

#[test]
fn eval_bare_values_are_truthiness() {
    check(
        &[
            ("true", true),
            ("false", false),
            ("nil", false),
            ("null", false),
            ("host", true),
            ("description", false),
            ("metric", true),
            ("rack", true),
            ("missing", false),
            ("\"\"", true),
            ("0", true),
            ("not host", false),
            ("not description", true),
        ],
        &event(),
    );
    check(
        &[("metric", false), ("host", false), ("time", true)],
        &Event::default(),
    );
}

#[test]
fn eval_boolean_operators() {
    check(
        &[
            ("host = \"web1\" and state = \"ok\"", true),
            ("host = \"web1\" and state = \"bad\"", false),
            ("host = \"nope\" or state = \"ok\"", true),
            ("host = \"nope\" or state = \"bad\"", false),
            ("not host = \"nope\"", true),
            // not > and > or
            ("not false and false or true", true),
            ("not true and false or false", false),
            ("not (false or true)", false),
            ("false and false or true", true),
            ("false and (false or true)", false),
            ("true or true and false", true),
            ("(true or true) and false", false),
            ("true and true and true and false", false),
            ("false or false or false or true", true),
        ],
        &event(),
    );
}

// ---------------------------------------------------------------------------------------------
// Printing

#[test]
fn display_is_canonical() {
    let cases = [
        ("host=\"web1\"", "host = \"web1\""),
        ("  ( ( host ) )  ", "host"),
        ("host = null", "host = nil"),
        ("metric_f >= 1e3", "metric >= 1000.0"),
        ("metric = 2.50", "metric = 2.5"),
        ("metric = 1e300", "metric = 1e300"),
        ("metric = +5", "metric = 5"),
        ("not a and b or c", "not a and b or c"),
        ("(not a) and (b or c)", "not a and (b or c)"),
        ("not (a and b)", "not (a and b)"),
        ("a or (b or c)", "a or (b or c)"),
        ("(a and b) and c", "(a and b) and c"),
        ("(a and b) or c", "a and b or c"),
        ("tagged \"x\\u0001\\/\"", "tagged \"x\\u0001/\""),
        ("s ~= \"\\\\d\\\"\"", "s ~= \"\\\\d\\\"\""),
        ("s =~ \"a%\\n\"", "s =~ \"a%\\n\""),
        ("\"é\\t\" != x", "\"é\\t\" != x"),
    ];
    for (q, want) in cases {
        let query = Query::parse(q).unwrap();
        assert_eq!(query.to_string(), want, "query {q:?}");
        assert_eq!(Query::parse(want).unwrap(), query, "query {q:?}");
    }
}

#[test]
fn printing_parsed_queries_round_trips() {
    let queries = [
        "true",
        "host = \"web1\" and (state != \"ok\" or metric > 0.9)",
        "not not tagged \"a\\\"b\" or service =~ \"%x%\" and description ~= \"^a|b$\"",
        "\"x\" = rack-1.zone and nil != ttl and time <= -1.5e-7",
        "(((a or b) and (c or d)) or not (e and f))",
        "metric = 9223372036854775807 or metric = -9223372036854775808 or metric = 1e20",
        "x = \"\\u0000\\u001f\\u007f\\u2028\\ud83d\\ude00\"",
    ];
    for q in queries {
        let parsed = Query::parse(q).unwrap();
        let printed = parsed.to_string();
        assert_eq!(
            Query::parse(&printed).unwrap(),
            parsed,
            "{q:?} printed as {printed:?}"
        );
        // Printing is a fixed point after one round.
        assert_eq!(Query::parse(&printed).unwrap().to_string(), printed);
    }
}

// ---------------------------------------------------------------------------------------------
// Property: any AST prints as text that parses back to it.

const KEYWORDS: [&str; 8] = ["and", "or", "not", "tagged", "true", "false", "nil", "null"];

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z %_.*\\\\\"]{0,8}",
        prop::collection::vec(any::<char>(), 0..6).prop_map(String::from_iter),
    ]
}

fn arb_field() -> impl Strategy<Value = Field> {
    prop_oneof![
        Just(Field::Host),
        Just(Field::Service),
        Just(Field::State),
        Just(Field::Description),
        Just(Field::Metric),
        Just(Field::Ttl),
        Just(Field::Time),
        "[a-zA-Z_][a-zA-Z0-9_.-]{0,8}"
            .prop_filter("a keyword or standard field", |n| {
                !KEYWORDS.contains(&n.as_str())
                    && matches!(Field::from_name(n), Field::Attribute(_))
            })
            .prop_map(Field::Attribute),
    ]
}

fn arb_number() -> impl Strategy<Value = Number> {
    prop_oneof![
        any::<i64>().prop_map(Number::Int),
        prop_oneof![-1000i64..1000].prop_map(Number::Int),
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(Number::Float),
        (-1000.0f64..1000.0).prop_map(Number::Float),
    ]
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Nil),
        arb_number().prop_map(Value::Number),
        arb_string().prop_map(Value::Str),
        arb_field().prop_map(Value::Field),
    ]
}

fn like_pattern(source: String) -> Pattern {
    let regex = regex_automata::meta::Regex::new(&like_to_regex(&source)).unwrap();
    Pattern::new(source, regex)
}

fn regex_pattern() -> impl Strategy<Value = Pattern> {
    prop_oneof![
        arb_string().prop_map(|s| regex::escape(&s)),
        prop::sample::select(vec!["^a.*b$", "\\d+", "(x|y)?z", "[[:alpha:]]", ""])
            .prop_map(str::to_owned),
    ]
    .prop_map(|source| {
        let regex = regex_automata::meta::Regex::new(&source).unwrap();
        Pattern::new(source, regex)
    })
}

fn arb_leaf() -> impl Strategy<Value = Expr> {
    let cmp_op = prop_oneof![
        Just(CmpOp::Lt),
        Just(CmpOp::Gt),
        Just(CmpOp::Le),
        Just(CmpOp::Ge)
    ];
    prop_oneof![
        arb_string().prop_map(Expr::Tagged),
        (arb_value(), arb_value(), any::<bool>()).prop_map(|(lhs, rhs, negated)| Expr::Equal {
            lhs,
            rhs,
            negated
        }),
        (arb_value(), cmp_op, arb_number()).prop_map(|(lhs, op, rhs)| Expr::Compare {
            lhs,
            op,
            rhs
        }),
        (arb_value(), arb_string()).prop_map(|(lhs, s)| Expr::Like {
            lhs,
            pattern: like_pattern(s)
        }),
        (arb_value(), regex_pattern()).prop_map(|(lhs, pattern)| Expr::Regex { lhs, pattern }),
        arb_value().prop_map(Expr::Truthy),
    ]
}

fn arb_expr() -> impl Strategy<Value = Expr> {
    arb_leaf().prop_recursive(6, 48, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            prop::collection::vec(inner, 2..4).prop_map(Expr::Or),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_ast_round_trips_through_display(expr in arb_expr()) {
        let query = Query { expr };
        let printed = query.to_string();
        let reparsed = Query::parse(&printed);
        prop_assert_eq!(reparsed.as_ref(), Ok(&query), "printed: {}", printed);
    }

    #[test]
    fn parsing_arbitrary_text_never_panics(text in "[a-z0-9 ()=!<>~\"\\\\.%_-]{0,40}") {
        if let Ok(query) = Query::parse(&text) {
            let printed = query.to_string();
            prop_assert_eq!(Query::parse(&printed), Ok(query.clone()), "printed: {}", printed);
            query.matches(&event());
        }
    }
}

#[test]
fn regexes_share_one_compile_budget_per_query() {
    // Each copy is under the per-regex limit; together they are far past the query's budget.
    let one = r#"service ~= "\\w{20}""#;
    assert!(Query::parse(one).is_ok());
    let many = vec![one; 800].join(" or ");
    let started = std::time::Instant::now();
    let e = Query::parse(&many).unwrap_err();
    assert!(
        e.message.starts_with(&format!(
            "regexes in this query exceed the {QUERY_REGEX_BUDGET}-byte"
        )),
        "{e}"
    );
    assert!(
        e.column > 1,
        "the column names the pattern past the budget: {e}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    // Small patterns are many times under the budget.
    let small = vec![r#"host =~ "web-%""#; MAX_PATTERNS].join(" or ");
    assert!(Query::parse(&small).is_ok());
}

#[test]
fn patterns_per_query_are_capped() {
    let over = vec![r#"host =~ "web-%""#; MAX_PATTERNS + 1].join(" or ");
    let e = Query::parse(&over).unwrap_err();
    assert_eq!(
        e.message,
        format!("query has more than {MAX_PATTERNS} regex and LIKE patterns")
    );
}

#[tokio::test]
async fn a_filter_that_matches_everything_is_no_filter() {
    for text in [None, Some(""), Some("  "), Some("true"), Some(" (true) ")] {
        assert_eq!(Query::parse_filter(text).await, Ok(None), "{text:?}");
    }
    let some = Query::parse_filter(Some(r#" state = "ok" "#)).await;
    assert_eq!(some, Ok(Some(Query::parse(r#"state = "ok""#).unwrap())));
    let error = Query::parse_filter(Some("metric >")).await.unwrap_err();
    assert!(
        error.starts_with("parse error: expected a number"),
        "{error}"
    );
}

/// The patterns of `expr`, depth first.
fn patterns(expr: &ast::Expr) -> Vec<&Pattern> {
    match expr {
        ast::Expr::And(operands) | ast::Expr::Or(operands) => {
            operands.iter().flat_map(patterns).collect()
        }
        ast::Expr::Not(inner) => patterns(inner),
        ast::Expr::Like { pattern, .. } | ast::Expr::Regex { pattern, .. } => vec![pattern],
        _ => Vec::new(),
    }
}

/// A silence's patterns stay inside what its query charges (issue 20 item 4): after searching
/// values that make lazy DFAs grow (a state per digit position seen, no literal to skip by),
/// each pattern's one cache plus its compiled form is within [`Query::memory`], and a pattern
/// looks at the first [`SILENCE_SCAN_BYTES`] of a value only. A filter's patterns keep the
/// regex's own pool (a dashboard's query lives as long as its subscription).
#[test]
fn a_silence_keeps_its_pattern_caches_inside_what_it_charges() {
    let mut x: u64 = 7;
    let text: String = (0..64 * 1024)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let c = (x >> 33) % 37;
            match c {
                0..=25 => (b'a' + c as u8) as char,
                26..=35 => (b'0' + (c - 26) as u8) as char,
                _ => 'é',
            }
        })
        .collect();
    for source in [
        r#"description ~= "[0-9][a-z0-9]{12}[^a-z0-9é]""#,
        r#"description ~= "[a-f][a-z0-9]{14}[^a-z0-9é]""#,
        r#"description ~= "\\w{1,12}[0-9]Q""#,
        r#"description =~ "%zz9q%""#,
    ] {
        let query = Query::parse_silence(source).unwrap();
        for cut in [text.len(), 4096, 100] {
            let mut end = cut;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let event = Event {
                description: Some(text[..end].to_owned()),
                ..Default::default()
            };
            assert!(!query.matches(&event), "{source}");
        }
        let found = patterns(&query.expr);
        assert_eq!(found.len(), 1);
        let pattern = found[0];
        let bounded = pattern
            .bounded
            .as_ref()
            .expect("a silence's pattern is bounded");
        let cache = bounded.cache.lock().unwrap().memory_usage();
        let held = pattern.regex.memory_usage() + cache;
        assert!(
            held <= query.memory(),
            "{source}: holds {held} bytes, charged {}",
            query.memory()
        );
        assert!(
            Query::parse(source).unwrap().memory() < query.memory(),
            "a filter's charge has no caches"
        );
        assert!(patterns(&Query::parse(source).unwrap().expr)[0]
            .bounded
            .is_none());
    }

    // Only the first 4 KiB of a value is looked at.
    let silence = Query::parse_silence(r#"description ~= "needle""#).unwrap();
    let at = |offset: usize| Event {
        description: Some(format!("{}needle", "é".repeat(offset / 2))),
        ..Default::default()
    };
    assert!(silence.matches(&at(SILENCE_SCAN_BYTES - 100)));
    assert!(!silence.matches(&at(SILENCE_SCAN_BYTES + 100)));
    assert!(Query::parse(r#"description ~= "needle""#)
        .unwrap()
        .matches(&at(SILENCE_SCAN_BYTES + 100)));
}
