//! Events as JSON, in the shape of a Riemann event map as Riemann's HTTP forwarders post it.
//!
//! Known keys have known types; every other key is a custom attribute whose value is kept as a
//! string; `null` means "absent". A request is all or nothing: the first invalid part rejects the
//! whole body with an error naming what was wrong and at which index, so a script never has half a
//! batch applied behind its back.
//!
//! Decoding is bounded by [`EventLimits`]: an array is walked element by element (never built as
//! one `serde_json::Value` tree, which cost ~120 bytes per byte of `[{},{},…]`), each element is
//! first seen as its raw JSON text, checked against the per-event byte limit, and only then
//! decoded. So a request costs at most `max_events_per_msg` compact events plus one bounded event in
//! decoding, whatever its shape.

use std::fmt;

use chrono::DateTime;
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::event::convert::state_or_none;
use crate::event::{Event, EventLimits, Metric};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JsonError {
    #[error("body is not valid JSON: {0}")]
    Syntax(String),
    #[error("body must be a JSON object or an array of objects, got {0}")]
    NotObjectOrArray(&'static str),
    #[error("event at index {index}: {problem}")]
    Event { index: usize, problem: String },
    #[error("more than {limit} events in one request (--max-events-per-request); split the batch")]
    TooManyEvents { limit: usize },
}

/// Parses a request body into events. `now_micros` stamps events that carry no `time`.
pub fn parse_events(
    body: &[u8],
    now_micros: i64,
    limits: &EventLimits,
) -> Result<Vec<Event>, JsonError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    match first {
        Some(b'[') => parse_array(body, now_micros, limits),
        Some(b'{') => {
            let raw: &RawValue =
                serde_json::from_slice(body).map_err(|e| JsonError::Syntax(e.to_string()))?;
            Ok(vec![decode_element(raw, 0, now_micros, limits)?])
        }
        // Not an event: say what it is (a scalar costs no more than its text to decode).
        _ => match serde_json::from_slice::<Value>(body) {
            Ok(other) => Err(JsonError::NotObjectOrArray(kind(&other))),
            Err(e) => Err(JsonError::Syntax(e.to_string())),
        },
    }
}

/// Parses newline-delimited JSON (Riemann's `POST /events`): one event object per line, blank
/// lines skipped, the same per-event and per-request limits and the same all-or-nothing rule as
/// [`parse_events`]. The index in an error is the event's (non-blank line's) position.
pub fn parse_ndjson(
    body: &[u8],
    now_micros: i64,
    limits: &EventLimits,
) -> Result<Vec<Event>, JsonError> {
    let mut events = Vec::new();
    for line in body.split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let index = events.len();
        if index >= limits.max_events_per_msg {
            return Err(JsonError::TooManyEvents {
                limit: limits.max_events_per_msg,
            });
        }
        let problem = |problem: String| JsonError::Event { index, problem };
        // Size first (cheap), so a huge line is refused before it is even scanned.
        if line.len() > limits.max_event_bytes.saturating_add(64) {
            return Err(problem(format!(
                "a line of {} bytes exceeds the limit of {} bytes per event (--max-event-bytes)",
                line.len(),
                limits.max_event_bytes
            )));
        }
        let raw: &RawValue = serde_json::from_slice(line).map_err(|e| problem(e.to_string()))?;
        events.push(decode_element(raw, index, now_micros, limits)?);
    }
    Ok(events)
}

/// Walks a top-level array one element at a time, decoding each as it comes.
fn parse_array(
    body: &[u8],
    now_micros: i64,
    limits: &EventLimits,
) -> Result<Vec<Event>, JsonError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let mut failure = None;
    let seed = ArraySeed {
        now_micros,
        limits,
        failure: &mut failure,
    };
    let decoded = seed.deserialize(&mut deserializer);
    // An event error stops the walk through a placeholder serde error; report the real one.
    if let Some(error) = failure {
        return Err(error);
    }
    let events = decoded.map_err(|e| JsonError::Syntax(e.to_string()))?;
    deserializer
        .end()
        .map_err(|e| JsonError::Syntax(e.to_string()))?;
    Ok(events)
}

struct ArraySeed<'a> {
    now_micros: i64,
    limits: &'a EventLimits,
    failure: &'a mut Option<JsonError>,
}

impl<'de> DeserializeSeed<'de> for ArraySeed<'_> {
    type Value = Vec<Event>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Vec<Event>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ArraySeed<'_> {
    type Value = Vec<Event>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of event objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Event>, A::Error> {
        let mut events = Vec::new();
        // Borrowed: the element's text is a slice of the body, nothing is copied or built yet.
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            let index = events.len();
            if index >= self.limits.max_events_per_msg {
                *self.failure = Some(JsonError::TooManyEvents {
                    limit: self.limits.max_events_per_msg,
                });
                return Err(de::Error::custom("too many events"));
            }
            match decode_element(raw, index, self.now_micros, self.limits) {
                Ok(event) => events.push(event),
                Err(error) => {
                    *self.failure = Some(error);
                    return Err(de::Error::custom("invalid event"));
                }
            }
        }
        Ok(events)
    }
}

/// One element, from its raw text: size first, then shape, then fields.
fn decode_element(
    raw: &RawValue,
    index: usize,
    now_micros: i64,
    limits: &EventLimits,
) -> Result<Event, JsonError> {
    let problem = |problem: String| JsonError::Event { index, problem };
    let text = raw.get();
    if text.len() > limits.max_event_bytes {
        return Err(problem(format!(
            "{} bytes of JSON exceed the limit of {} bytes per event (--max-event-bytes)",
            text.len(),
            limits.max_event_bytes
        )));
    }
    // Bounded by the check above: at most one event's worth of `Value`s exists at a time.
    let value: Value = serde_json::from_str(text).map_err(|e| problem(e.to_string()))?;
    match value {
        Value::Object(map) => {
            let attributes = map
                .iter()
                .filter(|(key, value)| !value.is_null() && !is_standard_key(key))
                .count();
            if attributes > limits.max_attributes_per_event {
                return Err(problem(format!(
                    "{attributes} attributes exceed the limit of {} per event \
                     (--max-attributes-per-event)",
                    limits.max_attributes_per_event
                )));
            }
            event_from_map(map, now_micros).map_err(problem)
        }
        other => Err(problem(format!("expected an object, got {}", kind(&other)))),
    }
}

/// The keys `event_from_map` reads as fields rather than custom attributes.
fn is_standard_key(key: &str) -> bool {
    matches!(
        key,
        "host" | "service" | "state" | "description" | "metric" | "time" | "ttl" | "tags"
    )
}

fn event_from_map(map: Map<String, Value>, now_micros: i64) -> Result<Event, String> {
    let mut event = Event {
        time_micros: now_micros,
        ..Default::default()
    };
    for (key, value) in map {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "host" => event.host = Some(string(&key, value)?),
            "service" => event.service = Some(string(&key, value)?),
            "state" => event.state = state_or_none(Some(string(&key, value)?)),
            "description" => event.description = Some(string(&key, value)?),
            "metric" => event.metric = Some(metric(&value)?),
            "time" => event.time_micros = time(&value)?,
            "ttl" => event.ttl = Some(ttl(&value)?),
            "tags" => event.tags = tags(value)?,
            _ => {
                let text = match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                event.attributes.push((key, text));
            }
        }
    }
    Ok(event)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn string(key: &str, v: Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(format!("\"{key}\" must be a string, got {}", kind(&other))),
    }
}

fn metric(v: &Value) -> Result<Metric, String> {
    match v {
        Value::Number(n) => Ok(match n.as_i64() {
            Some(i) => Metric::Int(i),
            // as_f64 is always Some for a number without arbitrary precision.
            None => Metric::Float(n.as_f64().unwrap_or(f64::NAN)),
        }),
        other => Err(format!("\"metric\" must be a number, got {}", kind(other))),
    }
}

fn ttl(v: &Value) -> Result<f32, String> {
    match v.as_f64() {
        Some(t) if t.is_finite() && t >= 0.0 => Ok(t as f32),
        Some(_) => Err("\"ttl\" must be a non-negative number".to_owned()),
        None => Err(format!("\"ttl\" must be a number, got {}", kind(v))),
    }
}

/// Unix seconds (fractions kept to the microsecond) or an ISO-8601 / RFC 3339 string.
fn time(v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => {
            let secs = n.as_f64().unwrap_or(f64::NAN);
            let micros = (secs * 1e6).round();
            // Beyond ±2^53 µs (~285 years) the value is a mistake, not a timestamp.
            if micros.is_finite() && micros.abs() < 9.0e15 {
                Ok(micros as i64)
            } else {
                Err(format!("\"time\" {n} is out of range"))
            }
        }
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_micros())
            .map_err(|e| format!("\"time\" {s:?} is not an ISO-8601 time: {e}")),
        other => Err(format!(
            "\"time\" must be a number of seconds or an ISO-8601 string, got {}",
            kind(other)
        )),
    }
}

fn tags(v: Value) -> Result<Vec<String>, String> {
    match v {
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, t)| match t {
                Value::String(s) => Ok(s),
                other => Err(format!(
                    "\"tags\"[{i}] must be a string, got {}",
                    kind(&other)
                )),
            })
            .collect(),
        other => Err(format!(
            "\"tags\" must be an array of strings, got {}",
            kind(&other)
        )),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn ndjson_one_event_per_line_all_or_nothing() {
        let limits = EventLimits::DEFAULT;
        let body = b"{\"host\":\"a\",\"service\":\"x\",\"metric\":1}\n\n{\"host\":\"b\"}\r\n";
        let events = parse_ndjson(body, 0, &limits).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].host.as_deref(), Some("b"));
        let bad = b"{\"host\":\"a\"}\n{\"host\":\n";
        match parse_ndjson(bad, 0, &limits) {
            Err(JsonError::Event { index: 1, .. }) => {}
            other => panic!("{other:?}"),
        }
        let few = EventLimits {
            max_events_per_msg: 1,
            ..limits
        };
        assert_eq!(
            parse_ndjson(b"{}\n{}\n", 0, &few),
            Err(JsonError::TooManyEvents { limit: 1 })
        );
        assert!(parse_ndjson(b"", 0, &limits).unwrap().is_empty());
    }
    use super::*;

    const NOW: i64 = 1_700_000_000_000_000;

    fn parse(s: &str) -> Result<Vec<Event>, JsonError> {
        parse_events(s.as_bytes(), NOW, &EventLimits::default())
    }

    #[test]
    fn every_field_and_custom_keys() {
        let events = parse(
            r#"{"host":"web1","service":"cpu","state":"critical","description":"hot",
                "metric":0.5,"time":1700000001.25,"ttl":30,"tags":["a","b"],
                "org":"Production","rack":7,"flag":true}"#,
        )
        .unwrap();
        let e = &events[0];
        assert_eq!(e.host.as_deref(), Some("web1"));
        assert_eq!(e.service.as_deref(), Some("cpu"));
        assert_eq!(e.state.as_deref(), Some("critical"));
        assert_eq!(e.description.as_deref(), Some("hot"));
        assert_eq!(e.metric, Some(Metric::Float(0.5)));
        assert_eq!(e.time_micros, 1_700_000_001_250_000);
        assert_eq!(e.ttl, Some(30.0));
        assert_eq!(e.tags, vec!["a", "b"]);
        assert_eq!(e.attribute("org"), Some("Production"));
        assert_eq!(e.attribute("rack"), Some("7"));
        assert_eq!(e.attribute("flag"), Some("true"));
    }

    #[test]
    fn integer_metric_iso_time_and_array() {
        let events =
            parse(r#"[{"host":"a","metric":3,"time":"2026-11-23T12:00:00.500Z"},{"host":"b"}]"#)
                .unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].metric, Some(Metric::Int(3)));
        assert_eq!(events[0].time_micros, 1_795_435_200_500_000);
        assert_eq!(events[1].time_micros, NOW, "no time means now");
    }

    #[test]
    fn nulls_are_ignored_and_empty_state_is_no_state() {
        let e = &parse(r#"{"host":null,"metric":null,"state":"","org":null}"#).unwrap()[0];
        assert_eq!(
            e,
            &Event {
                time_micros: NOW,
                ..Default::default()
            }
        );
    }

    #[test]
    fn each_error_names_the_problem_and_index() {
        let cases = [
            ("nope", "body is not valid JSON"),
            (
                "42",
                "body must be a JSON object or an array of objects, got a number",
            ),
            (
                r#"[{}, 1]"#,
                "event at index 1: expected an object, got a number",
            ),
            (
                r#"[{}, {"host": 1}]"#,
                "event at index 1: \"host\" must be a string, got a number",
            ),
            (
                r#"{"service": []}"#,
                "event at index 0: \"service\" must be a string",
            ),
            (
                r#"{"state": false}"#,
                "event at index 0: \"state\" must be a string",
            ),
            (
                r#"{"description": {}}"#,
                "event at index 0: \"description\" must be a string",
            ),
            (
                r#"{"metric": "1"}"#,
                "event at index 0: \"metric\" must be a number, got a string",
            ),
            (
                r#"{"ttl": "1"}"#,
                "event at index 0: \"ttl\" must be a number",
            ),
            (
                r#"{"ttl": -1}"#,
                "event at index 0: \"ttl\" must be a non-negative number",
            ),
            (
                r#"{"time": "yesterday"}"#,
                "event at index 0: \"time\" \"yesterday\" is not an ISO-8601 time",
            ),
            (
                r#"{"time": true}"#,
                "event at index 0: \"time\" must be a number of seconds or an ISO-8601 string",
            ),
            (
                r#"{"time": 1e300}"#,
                "event at index 0: \"time\" 1e+300 is out of range",
            ),
            (
                r#"{"tags": "a"}"#,
                "event at index 0: \"tags\" must be an array of strings",
            ),
            (
                r#"{"tags": ["a", 2]}"#,
                "event at index 0: \"tags\"[1] must be a string, got a number",
            ),
        ];
        for (body, expected) in cases {
            let err = parse(body).expect_err(body).to_string();
            assert!(
                err.starts_with(expected),
                "{body}: got {err:?}, expected {expected:?}"
            );
        }
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000_000;
    const LIMITS: EventLimits = EventLimits {
        max_events_per_msg: 3,
        max_attributes_per_event: 2,
        max_event_bytes: 64,
    };

    fn parse(s: &str) -> Result<Vec<Event>, JsonError> {
        parse_events(s.as_bytes(), NOW, &LIMITS)
    }

    #[test]
    fn events_past_the_count_limit_refuse_the_whole_body() {
        assert_eq!(parse("[{},{},{}]").map(|e| e.len()), Ok(3));
        assert_eq!(
            parse("[{},{},{},{}]"),
            Err(JsonError::TooManyEvents { limit: 3 })
        );
        // The count is checked before the rest is even read: trailing garbage does not matter.
        assert_eq!(
            parse("[{},{},{},{}, nonsense"),
            Err(JsonError::TooManyEvents { limit: 3 })
        );
    }

    #[test]
    fn attributes_and_bytes_per_event_are_bounded_with_the_index() {
        assert!(parse(r#"{"host":"h","a":"1","b":"2","c":null}"#).is_ok());
        let err = parse(r#"[{}, {"host":"h","a":"1","b":"2","c":"3"}]"#).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("event at index 1: 3 attributes exceed the limit of 2"),
            "{err}"
        );
        let big = format!(r#"[{{"host":"{}"}}]"#, "x".repeat(64));
        let err = parse(&big).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("event at index 0: 75 bytes of JSON exceed the limit of 64"),
            "{err}"
        );
    }

    #[test]
    fn trailing_garbage_after_the_array_is_a_syntax_error() {
        assert!(matches!(parse("[{}] x"), Err(JsonError::Syntax(_))));
        assert!(matches!(parse("[{}"), Err(JsonError::Syntax(_))));
        assert!(matches!(parse("{} {}"), Err(JsonError::Syntax(_))));
    }

    #[test]
    fn non_string_attributes_keep_their_compact_json_text() {
        let e = &parse(r#"{"rack": 7, "obj": {"a": [1, 2]}}"#).unwrap()[0];
        assert_eq!(e.attribute("rack"), Some("7"));
        assert_eq!(e.attribute("obj"), Some(r#"{"a":[1,2]}"#));
    }
}

#[cfg(test)]
mod equivalence {
    //! The bounded decoder answers exactly as the original whole-`Value` decoder did, whenever
    //! the input is within the limits.
    use proptest::prelude::*;

    use super::*;

    /// The decoder before the limits: the whole body as one `Value`, then each element.
    fn unbounded(body: &[u8], now_micros: i64) -> Result<Vec<Event>, JsonError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| JsonError::Syntax(e.to_string()))?;
        let items = match value {
            Value::Array(items) => items,
            obj @ Value::Object(_) => vec![obj],
            other => return Err(JsonError::NotObjectOrArray(kind(&other))),
        };
        items
            .into_iter()
            .enumerate()
            .map(|(index, item)| match item {
                Value::Object(map) => event_from_map(map, now_micros)
                    .map_err(|problem| JsonError::Event { index, problem }),
                other => Err(JsonError::Event {
                    index,
                    problem: format!("expected an object, got {}", kind(&other)),
                }),
            })
            .collect()
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            (-1e10f64..1e10).prop_map(Value::from),
            "[a-z\"\\\\ ]{0,6}".prop_map(Value::from),
            Just(Value::from("2026-11-23T12:00:00.500Z")),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop_oneof![
                            Just("host".to_owned()),
                            Just("service".to_owned()),
                            Just("state".to_owned()),
                            Just("metric".to_owned()),
                            Just("time".to_owned()),
                            Just("ttl".to_owned()),
                            Just("tags".to_owned()),
                            Just("description".to_owned()),
                            "[a-z]{1,3}",
                        ],
                        inner
                    ),
                    0..5
                )
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn bounded_and_unbounded_decoders_agree(value in json_value(), pretty in any::<bool>()) {
            let body = if pretty {
                serde_json::to_vec_pretty(&value).unwrap()
            } else {
                serde_json::to_vec(&value).unwrap()
            };
            let limits = EventLimits::default();
            prop_assert_eq!(
                parse_events(&body, 7, &limits),
                unbounded(&body, 7)
            );
        }
    }
}
