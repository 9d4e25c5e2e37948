//! The one `Event` type every transport decodes into.
//!
//! Nothing downstream of ingest knows protobuf or HTTP: the engine, the query evaluator and the
//! broadcaster all see this type. It also owns Riemann's JSON event form (the shape Riemann's
//! websocket server and riemann-dash use), because that form is a property of the event, not of
//! any one transport.
//!
//! [`convert`] holds the conversion to and from Riemann's protobuf `Event`, which the transports
//! and the store (its on-disk form) share. A leaf: this module depends on [`crate::proto`] only.

pub mod convert;

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

/// Riemann distinguishes integer metrics (`metric_sint64`) from floating ones (`metric_d`/`metric_f`);
/// keeping the distinction lets us encode the event back the way a Riemann client expects.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    Int(i64),
    Float(f64),
}

impl Metric {
    pub fn as_f64(self) -> f64 {
        match self {
            Metric::Int(i) => i as f64,
            Metric::Float(f) => f,
        }
    }

    pub(crate) fn to_json(self) -> Value {
        match self {
            Metric::Int(i) => Value::from(i),
            // NaN and infinities have no JSON form; `null` is what serde_json would emit anyway.
            Metric::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        }
    }
}

/// One monitoring event, as Riemann models it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event {
    pub host: Option<String>,
    pub service: Option<String>,
    /// `None` means "no state": such events are indexed but never count as a change.
    pub state: Option<String>,
    pub description: Option<String>,
    pub metric: Option<Metric>,
    pub tags: Vec<String>,
    /// Microseconds since the Unix epoch: Riemann's finest resolution (`time_micros`).
    pub time_micros: i64,
    /// Seconds the event stays valid; `None` means the server's default TTL.
    pub ttl: Option<f32>,
    /// Custom attributes, in arrival order. Values are always strings, as in Riemann.
    pub attributes: Vec<(String, String)>,
}

/// Keys of Riemann's JSON event form; a custom attribute with one of these names cannot be shown
/// as a top-level key without hiding the real field, so the real field wins.
pub(crate) const STANDARD_FIELDS: [&str; 8] = [
    "host",
    "service",
    "state",
    "description",
    "metric",
    "tags",
    "time",
    "ttl",
];

impl Event {
    /// Folds attributes named like a standard field into the event, as Riemann's codec does
    /// (it merges a decoded event's attributes into the event map): an attribute `description`,
    /// `state`, `host` or `service` sets that field, the last one winning. collectd's
    /// notifications, for one, carry their text only in the attribute `description`.
    /// Attributes named `metric`, `tags`, `time` or `ttl` are dropped: their string values have
    /// no place in those typed fields, and as top-level JSON keys they would hide the real ones.
    pub fn merge_standard_attributes(&mut self) {
        if !self
            .attributes
            .iter()
            .any(|(k, _)| STANDARD_FIELDS.contains(&k.as_str()))
        {
            return;
        }
        let attributes = std::mem::take(&mut self.attributes);
        for (key, value) in attributes {
            match key.as_str() {
                "host" => self.host = Some(value),
                "service" => self.service = Some(value),
                "state" => self.state = Some(value).filter(|s| !s.is_empty()),
                "description" => self.description = Some(value),
                "metric" | "tags" | "time" | "ttl" => {}
                _ => self.attributes.push((key, value)),
            }
        }
    }

    /// The custom attribute `name`, if present (the last one wins when a client sent duplicates).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Time as fractional Unix seconds, as Riemann's query language and JSON see it.
    pub fn time_seconds(&self) -> f64 {
        self.time_micros as f64 / 1e6
    }

    /// Riemann's JSON event form as a JSON object.
    pub fn to_json_value(&self) -> Value {
        let mut map = Map::new();
        let mut put_str = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                map.insert(k.to_owned(), Value::String(v.clone()));
            }
        };
        put_str("host", &self.host);
        put_str("service", &self.service);
        put_str("state", &self.state);
        put_str("description", &self.description);
        if let Some(m) = self.metric {
            map.insert("metric".into(), m.to_json());
        }
        map.insert(
            "tags".into(),
            Value::Array(self.tags.iter().cloned().map(Value::String).collect()),
        );
        map.insert("time".into(), Value::String(format_time(self.time_micros)));
        if let Some(ttl) = self.ttl {
            if let Some(n) = serde_json::Number::from_f64(f64::from(ttl)) {
                map.insert("ttl".into(), Value::Number(n));
            }
        }
        for (k, v) in &self.attributes {
            if !STANDARD_FIELDS.contains(&k.as_str()) {
                map.insert(k.clone(), Value::String(v.clone()));
            }
        }
        Value::Object(map)
    }
}

/// ISO-8601 UTC with milliseconds (`2026-11-23T12:00:00.000Z`), the form riemann-dash parses.
pub(crate) fn format_time(time_micros: i64) -> String {
    match DateTime::<Utc>::from_timestamp_micros(time_micros) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        // Out of chrono's range: still say something truthful rather than fail the whole frame.
        None => {
            let mut s = String::new();
            let _ = write!(s, "{}", time_micros as f64 / 1e6);
            s
        }
    }
}

/// Microseconds since the epoch, now. Ingest stamps events that carry no time with it (once per
/// socket read, not per event); the state machine takes time as data. Straight from
/// `SystemTime`: chrono's `Utc::now` builds a calendar date first, which showed in profiles.
pub fn now_micros() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_micros()).unwrap_or(i64::MAX),
        // A clock set before 1970: say so in the only way an i64 of µs can.
        Err(before) => i64::try_from(before.duration().as_micros()).map_or(i64::MIN, |us| -us),
    }
}

/// Bounds on one decoded message and each of its events, shared by every transport: a small
/// request must not decode into a large one (16 MiB of empty protobuf events once decoded to
/// 3 GiB; one event of 1.4M attributes made every dashboard snapshot 19.6 MB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLimits {
    /// Events in one message (one Riemann `Msg`, one JSON body).
    pub max_events_per_msg: usize,
    /// Custom attributes of one event.
    pub max_attributes_per_event: usize,
    /// Encoded size of one event, in bytes.
    pub max_event_bytes: usize,
}

impl EventLimits {
    /// Real Riemann batches are at most a few thousand events; real events a few KiB with a
    /// handful of attributes (1 MiB leaves room for long check output in `description`).
    pub const DEFAULT: EventLimits = EventLimits {
        max_events_per_msg: 100_000,
        max_attributes_per_event: 256,
        max_event_bytes: 1024 * 1024,
    };
}

impl Default for EventLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a message was refused by [`EventLimits`]; `index` is the event's 0-based position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("message has more than {limit} events (--max-events-per-msg)")]
    TooManyEvents { limit: usize },
    #[error("event {index} has more than {limit} attributes (--max-attributes-per-event)")]
    TooManyAttributes { index: usize, limit: usize },
    #[error("event {index} of {bytes} bytes exceeds the {limit}-byte limit (--max-event-bytes)")]
    EventTooLarge {
        index: usize,
        bytes: usize,
        limit: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_form_has_riemann_keys_and_attributes_at_top_level() {
        let e = Event {
            host: Some("web1".into()),
            service: Some("cpu".into()),
            state: Some("critical".into()),
            description: Some("<b>hot</b>".into()),
            metric: Some(Metric::Float(0.5)),
            tags: vec!["prod".into()],
            time_micros: 1_795_003_200_123_456,
            ttl: Some(30.0),
            attributes: vec![
                ("org".into(), "Production".into()),
                ("host".into(), "x".into()),
            ],
        };
        let v = e.to_json_value();
        assert_eq!(v["host"], "web1");
        assert_eq!(v["metric"], 0.5);
        assert_eq!(v["tags"][0], "prod");
        assert_eq!(v["time"], "2026-11-18T12:00:00.123Z");
        assert_eq!(v["ttl"], 30.0);
        assert_eq!(v["org"], "Production");
        assert!(v.get("state").is_some());
    }

    #[test]
    fn integer_metric_stays_integer_in_json() {
        let e = Event {
            metric: Some(Metric::Int(42)),
            ..Default::default()
        };
        assert_eq!(e.to_json_value()["metric"].to_string(), "42");
    }

    #[test]
    fn attributes_named_like_fields_are_merged_as_riemann_does() {
        let mut e = Event {
            host: Some("web1".into()),
            description: None,
            state: Some("ok".into()),
            attributes: vec![
                ("org".into(), "Production".into()),
                ("description".into(), "disk full".into()),
                ("state".into(), "critical".into()),
                ("metric".into(), "12".into()),
                ("tags".into(), "x".into()),
                ("time".into(), "now".into()),
                ("ttl".into(), "60".into()),
                ("host".into(), "web2".into()),
                ("host".into(), "web3".into()),
            ],
            ..Event::default()
        };
        e.merge_standard_attributes();
        assert_eq!(e.description.as_deref(), Some("disk full"));
        assert_eq!(e.state.as_deref(), Some("critical"));
        assert_eq!(e.host.as_deref(), Some("web3"), "the last one wins");
        assert_eq!(e.metric, None);
        assert!(e.tags.is_empty());
        assert_eq!(e.attributes, vec![("org".into(), "Production".into())]);
        let json = e.to_json_value();
        assert_eq!(json["description"], "disk full");
        assert_eq!(json["org"], "Production");
    }

    #[test]
    fn missing_fields_are_omitted() {
        let v = Event::default().to_json_value();
        assert!(v.get("host").is_none());
        assert!(v.get("metric").is_none());
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
    }
}
