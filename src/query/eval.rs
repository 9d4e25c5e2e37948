//! Evaluates an [`Expr`] against one [`Event`].
//!
//! This module owns the meaning of each operator: how a field is read (absent → `nil`), what
//! `=` means between numbers, strings, booleans and `nil`, and that only numbers order.
//! Evaluation allocates nothing in the common case and never fails: a comparison that makes no
//! sense (a string against a number, a missing field against `<`) is simply false.

use std::cmp::Ordering;

use super::ast::{CmpOp, Expr, Field, Number, Value};
use crate::event::{Event, Metric};

/// An operand after reading it from the event.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Resolved<'a> {
    Nil,
    Bool(bool),
    Num(Number),
    Str(&'a str),
}

pub fn matches(expr: &Expr, event: &Event) -> bool {
    match expr {
        Expr::And(operands) => operands.iter().all(|e| matches(e, event)),
        Expr::Or(operands) => operands.iter().any(|e| matches(e, event)),
        Expr::Not(inner) => !matches(inner, event),
        Expr::Tagged(tag) => event.tags.iter().any(|t| t == tag),
        Expr::Equal { lhs, rhs, negated } => {
            equal(resolve(lhs, event), resolve(rhs, event)) != *negated
        }
        Expr::Compare { lhs, op, rhs } => match resolve(lhs, event) {
            Resolved::Num(n) => match compare_numbers(n, *rhs) {
                Some(ord) => match op {
                    CmpOp::Lt => ord == Ordering::Less,
                    CmpOp::Gt => ord == Ordering::Greater,
                    CmpOp::Le => ord != Ordering::Greater,
                    CmpOp::Ge => ord != Ordering::Less,
                },
                None => false, // NaN
            },
            _ => false,
        },
        Expr::Like { lhs, pattern } | Expr::Regex { lhs, pattern } => match resolve(lhs, event) {
            Resolved::Str(s) => pattern.is_match(s),
            _ => false,
        },
        Expr::Truthy(value) => {
            !matches!(resolve(value, event), Resolved::Nil | Resolved::Bool(false))
        }
    }
}

fn resolve<'a>(value: &'a Value, event: &'a Event) -> Resolved<'a> {
    let opt_str = |s: &'a Option<String>| s.as_deref().map_or(Resolved::Nil, Resolved::Str);
    match value {
        Value::Bool(b) => Resolved::Bool(*b),
        Value::Nil => Resolved::Nil,
        Value::Number(n) => Resolved::Num(*n),
        Value::Str(s) => Resolved::Str(s),
        Value::Field(field) => match field {
            Field::Host => opt_str(&event.host),
            Field::Service => opt_str(&event.service),
            Field::State => opt_str(&event.state),
            Field::Description => opt_str(&event.description),
            Field::Metric => match event.metric {
                Some(Metric::Int(i)) => Resolved::Num(Number::Int(i)),
                Some(Metric::Float(x)) => Resolved::Num(Number::Float(x)),
                None => Resolved::Nil,
            },
            Field::Ttl => event.ttl.map_or(Resolved::Nil, |t| {
                Resolved::Num(Number::Float(ttl_as_f64(t)))
            }),
            Field::Time => Resolved::Num(Number::Float(event.time_seconds())),
            Field::Attribute(name) => event.attribute(name).map_or(Resolved::Nil, Resolved::Str),
        },
    }
}

/// A TTL is an f32 on the wire; widening `0.1f32` gives `0.10000000149…`, which would make
/// `ttl = 0.1` false. Going through the f32's shortest decimal form keeps the value the
/// client meant.
fn ttl_as_f64(ttl: f32) -> f64 {
    if ttl.fract() == 0.0 || !ttl.is_finite() {
        f64::from(ttl)
    } else {
        ttl.to_string().parse().unwrap_or(f64::from(ttl))
    }
}

/// `=`: `nil` equals only `nil`; numbers compare by value whatever their representation;
/// strings and booleans compare with their own kind; anything else is unequal.
fn equal(a: Resolved<'_>, b: Resolved<'_>) -> bool {
    match (a, b) {
        (Resolved::Nil, Resolved::Nil) => true,
        (Resolved::Bool(x), Resolved::Bool(y)) => x == y,
        (Resolved::Num(x), Resolved::Num(y)) => compare_numbers(x, y) == Some(Ordering::Equal),
        (Resolved::Str(x), Resolved::Str(y)) => x == y,
        _ => false,
    }
}

/// Exact numeric comparison, also between an `i64` and an `f64` (no rounding of large
/// integers through f64). `None` only when a NaN is involved.
fn compare_numbers(a: Number, b: Number) -> Option<Ordering> {
    match (a, b) {
        (Number::Int(x), Number::Int(y)) => Some(x.cmp(&y)),
        (Number::Float(x), Number::Float(y)) => x.partial_cmp(&y),
        (Number::Int(i), Number::Float(x)) => compare_int_float(i, x),
        (Number::Float(x), Number::Int(i)) => compare_int_float(i, x).map(Ordering::reverse),
    }
}

fn compare_int_float(i: i64, x: f64) -> Option<Ordering> {
    // 2^63 is exactly representable; i64's range is [-2^63, 2^63).
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if x.is_nan() {
        None
    } else if x >= TWO_63 {
        Some(Ordering::Less)
    } else if x < -TWO_63 {
        Some(Ordering::Greater)
    } else if x.fract() == 0.0 {
        // In range and integral: the conversion is exact.
        Some(i.cmp(&(x as i64)))
    } else {
        // Not integral, so |x| < 2^52: if i is that small it converts exactly, and if it is
        // larger its rounding cannot carry it across x.
        (i as f64).partial_cmp(&x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_float_comparison_is_exact() {
        let big = (1i64 << 53) + 1;
        // Widening `big` to f64 would round it to 2^53 and call these equal.
        assert_eq!(
            compare_numbers(Number::Int(big), Number::Float((1u64 << 53) as f64)),
            Some(Ordering::Greater)
        );
        assert_eq!(
            compare_numbers(Number::Int(i64::MAX), Number::Float(9.3e18)),
            Some(Ordering::Less)
        );
        assert_eq!(
            compare_numbers(Number::Int(i64::MIN), Number::Float(-9.3e18)),
            Some(Ordering::Greater)
        );
        assert_eq!(
            compare_numbers(Number::Float(2.5), Number::Int(2)),
            Some(Ordering::Greater)
        );
        assert_eq!(
            compare_numbers(Number::Int(-3), Number::Float(-2.5)),
            Some(Ordering::Less)
        );
        assert_eq!(
            compare_numbers(Number::Int(1), Number::Float(f64::NAN)),
            None
        );
        assert_eq!(
            compare_numbers(Number::Float(1.0), Number::Int(1)),
            Some(Ordering::Equal)
        );
    }

    #[test]
    fn ttl_keeps_the_decimal_the_client_sent() {
        assert_eq!(ttl_as_f64(0.1), 0.1);
        assert_eq!(ttl_as_f64(30.0), 30.0);
        assert_eq!(ttl_as_f64(2.5), 2.5);
    }
}
