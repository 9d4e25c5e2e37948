//! Conversion between Riemann's protobuf `Event` and the server's one [`Event`] type.
//!
//! The decoding rules are Riemann's own: metric is `metric_sint64`, else `metric_d`, else
//! `metric_f`; time is `time_micros` if set, else `time` (seconds), else the time of arrival;
//! attributes named like a standard field are merged into it ([`Event::merge_standard_attributes`]).
//! Encoding back (for query replies) follows Riemann too: `metric_f` always, plus `metric_sint64`
//! for integer metrics or `metric_d` otherwise, and both `time` and `time_micros`.
//!
//! Why here and not in `ingest`: the store keeps events in this same protobuf form, and it must
//! not depend on the transports (nor on the engine) to read them back.

use crate::event::{Event, EventLimits, LimitError, Metric};
use crate::proto;

/// An empty state is what collectd's `write_riemann` sends for "no state": treat it as absent so
/// it is never mistaken for a transition.
pub(crate) fn state_or_none(state: Option<String>) -> Option<String> {
    state.filter(|s| !s.is_empty())
}

/// Widens an `f32` through its shortest decimal form, so a client that sent `0.1` as `metric_f`
/// is seen (and queried) as 0.1, not as 0.100000001490116.
fn widen(f: f32) -> f64 {
    f.to_string().parse().unwrap_or(f64::from(f))
}

/// Decodes the events of one `Msg`, all stamped with the same arrival time where they carry none
/// (every transport decodes a whole message at once).
pub fn events_from_proto(
    events: Vec<proto::Event>,
    now_micros: i64,
) -> impl Iterator<Item = Event> {
    events.into_iter().map(move |e| from_proto(e, now_micros))
}

/// Decodes one wire event. `now_micros` is used only when the event carries no time at all.
pub fn from_proto(e: proto::Event, now_micros: i64) -> Event {
    let metric = if let Some(i) = e.metric_sint64 {
        Some(Metric::Int(i))
    } else if let Some(d) = e.metric_d {
        Some(Metric::Float(d))
    } else {
        e.metric_f.map(|f| Metric::Float(widen(f)))
    };
    let time_micros = match (e.time_micros, e.time) {
        (Some(us), _) => us,
        (None, Some(s)) => s.saturating_mul(1_000_000),
        (None, None) => now_micros,
    };
    let mut event = Event {
        host: e.host,
        service: e.service,
        state: state_or_none(e.state),
        description: e.description,
        metric,
        tags: e.tags,
        time_micros,
        ttl: e.ttl,
        attributes: e
            .attributes
            .into_iter()
            .map(|a| (a.key, a.value.unwrap_or_default()))
            .collect(),
    };
    event.merge_standard_attributes();
    event
}

/// Encodes an event the way Riemann answers a query, through prost's own types: the reference
/// [`encode_event`] (what the server uses) is tested against.
#[cfg(test)]
pub(crate) fn to_proto(e: &Event) -> proto::Event {
    let (metric_sint64, metric_d) = wire_metric(e);
    proto::Event {
        time: Some(e.time_micros.div_euclid(1_000_000)),
        time_micros: Some(e.time_micros),
        state: e.state.clone(),
        service: e.service.clone(),
        host: e.host.clone(),
        description: e.description.clone(),
        tags: e.tags.clone(),
        ttl: e.ttl,
        attributes: e
            .attributes
            .iter()
            .map(|(k, v)| proto::Attribute {
                key: k.clone(),
                value: Some(v.clone()),
            })
            .collect(),
        metric_sint64,
        metric_d,
        metric_f: e.metric.map(|m| m.as_f64() as f32),
    }
}

/// Encodes an event exactly as `to_proto` followed by prost's encoding would, without building
/// the intermediate `proto::Event` (which clones every string): the store encodes each change's
/// events, and under load that copying was most of its work.
pub(crate) fn encode_event(e: &Event, buf: &mut Vec<u8>) {
    use prost::encoding::{double, float, int64, sint64, string};
    let (metric_sint64, metric_d) = wire_metric(e);
    int64::encode(1, &e.time_micros.div_euclid(1_000_000), buf);
    for (tag, field) in [
        (2, &e.state),
        (3, &e.service),
        (4, &e.host),
        (5, &e.description),
    ] {
        if let Some(value) = field {
            string::encode(tag, value, buf);
        }
    }
    string::encode_repeated(7, &e.tags, buf);
    if let Some(ttl) = &e.ttl {
        float::encode(8, ttl, buf);
    }
    for (key, value) in &e.attributes {
        prost::encoding::encode_key(9, prost::encoding::WireType::LengthDelimited, buf);
        prost::encoding::encode_varint(attribute_len(key, value) as u64, buf);
        string::encode(1, key, buf);
        string::encode(2, value, buf);
    }
    int64::encode(10, &e.time_micros, buf);
    if let Some(i) = &metric_sint64 {
        sint64::encode(13, i, buf);
    }
    if let Some(d) = &metric_d {
        double::encode(14, d, buf);
    }
    if let Some(f) = &e.metric.map(|m| m.as_f64() as f32) {
        float::encode(15, f, buf);
    }
}

fn attribute_len(key: &String, value: &String) -> usize {
    prost::encoding::string::encoded_len(1, key) + prost::encoding::string::encoded_len(2, value)
}

/// Riemann's metric fields for an event: `metric_sint64` for integers, `metric_d` otherwise.
fn wire_metric(e: &Event) -> (Option<i64>, Option<f64>) {
    match e.metric {
        Some(Metric::Int(i)) => (Some(i), None),
        Some(Metric::Float(f)) => (None, Some(f)),
        None => (None, None),
    }
}

/// Checks an encoded `Msg` against `limits` before it is decoded, reading only field keys and
/// lengths (nothing is allocated): decoding is where 16 MiB of empty events became 3 GiB.
/// Counts top-level `events` and `states` together against the events limit, and for each
/// event its encoded size and its `attributes`. A malformed body passes: decoding reports it.
pub(crate) fn check_limits(body: &[u8], limits: &EventLimits) -> Result<(), LimitError> {
    const STATES: u64 = 4;
    const EVENTS: u64 = 6;
    const ATTRIBUTES: u64 = 9;
    let mut items = 0usize;
    let mut index = 0usize;
    for_each_field(body, |tag, value| {
        if tag != EVENTS && tag != STATES {
            return Ok(());
        }
        items += 1;
        if items > limits.max_events_per_msg {
            return Err(LimitError::TooManyEvents {
                limit: limits.max_events_per_msg,
            });
        }
        if tag == STATES {
            return Ok(());
        }
        let event = index;
        index += 1;
        if value.len() > limits.max_event_bytes {
            return Err(LimitError::EventTooLarge {
                index: event,
                bytes: value.len(),
                limit: limits.max_event_bytes,
            });
        }
        let mut attributes = 0usize;
        for_each_field(value, |tag, _| {
            if tag == ATTRIBUTES {
                attributes += 1;
                if attributes > limits.max_attributes_per_event {
                    return Err(LimitError::TooManyAttributes {
                        index: event,
                        limit: limits.max_attributes_per_event,
                    });
                }
            }
            Ok(())
        })
    })
}

/// Calls `each(tag, bytes)` for every length-delimited field at the top level of an encoded
/// message, skipping every other field (groups included, as prost does for unknown fields).
/// Stops quietly at malformed input: the real decoder rejects it.
fn for_each_field(
    mut buf: &[u8],
    mut each: impl FnMut(u64, &[u8]) -> Result<(), LimitError>,
) -> Result<(), LimitError> {
    use prost::encoding::decode_varint;
    // Nesting of groups (wire types 3 and 4): fields inside a group are not top-level.
    let mut group_depth = 0usize;
    while !buf.is_empty() {
        let Ok(key) = decode_varint(&mut buf) else {
            return Ok(());
        };
        let tag = key >> 3;
        let skip = match key & 7 {
            0 => match decode_varint(&mut buf) {
                Ok(_) => 0,
                Err(_) => return Ok(()),
            },
            1 => 8,
            2 => {
                let Ok(len) = decode_varint(&mut buf) else {
                    return Ok(());
                };
                let Some(len) = usize::try_from(len).ok().filter(|&len| len <= buf.len()) else {
                    return Ok(());
                };
                let (value, rest) = buf.split_at(len);
                if group_depth == 0 {
                    each(tag, value)?;
                }
                buf = rest;
                0
            }
            3 => {
                group_depth += 1;
                0
            }
            4 => match group_depth.checked_sub(1) {
                Some(depth) => {
                    group_depth = depth;
                    0
                }
                None => return Ok(()),
            },
            5 => 4,
            _ => return Ok(()),
        };
        if skip > buf.len() {
            return Ok(());
        }
        buf = &buf[skip..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000_000;

    #[test]
    fn metric_precedence_is_sint64_then_double_then_float() {
        let all = proto::Event {
            metric_sint64: Some(7),
            metric_d: Some(2.5),
            metric_f: Some(1.5),
            ..Default::default()
        };
        assert_eq!(from_proto(all, NOW).metric, Some(Metric::Int(7)));
        let d_f = proto::Event {
            metric_d: Some(2.5),
            metric_f: Some(1.5),
            ..Default::default()
        };
        assert_eq!(from_proto(d_f, NOW).metric, Some(Metric::Float(2.5)));
        let f = proto::Event {
            metric_f: Some(1.5),
            ..Default::default()
        };
        assert_eq!(from_proto(f, NOW).metric, Some(Metric::Float(1.5)));
        assert_eq!(from_proto(proto::Event::default(), NOW).metric, None);
    }

    #[test]
    fn time_precedence_is_micros_then_seconds_then_now() {
        let both = proto::Event {
            time: Some(100),
            time_micros: Some(100_250_000),
            ..Default::default()
        };
        assert_eq!(from_proto(both, NOW).time_micros, 100_250_000);
        let secs = proto::Event {
            time: Some(100),
            ..Default::default()
        };
        assert_eq!(from_proto(secs, NOW).time_micros, 100_000_000);
        assert_eq!(from_proto(proto::Event::default(), NOW).time_micros, NOW);
    }

    #[test]
    fn empty_state_is_no_state_and_attributes_are_kept() {
        let e = proto::Event {
            state: Some(String::new()),
            attributes: vec![
                proto::Attribute {
                    key: "org".into(),
                    value: Some("Production".into()),
                },
                proto::Attribute {
                    key: "bare".into(),
                    value: None,
                },
            ],
            ..Default::default()
        };
        let e = from_proto(e, NOW);
        assert_eq!(e.state, None);
        assert_eq!(e.attribute("org"), Some("Production"));
        assert_eq!(e.attribute("bare"), Some(""));
    }

    #[test]
    fn encoding_back_sets_metric_f_and_the_exact_metric() {
        let e = Event {
            metric: Some(Metric::Int(3)),
            time_micros: 1_500_000,
            ..Default::default()
        };
        let p = to_proto(&e);
        assert_eq!(
            (p.metric_sint64, p.metric_d, p.metric_f),
            (Some(3), None, Some(3.0))
        );
        assert_eq!((p.time, p.time_micros), (Some(1), Some(1_500_000)));
        let e = Event {
            metric: Some(Metric::Float(0.25)),
            ..Default::default()
        };
        let p = to_proto(&e);
        assert_eq!(
            (p.metric_sint64, p.metric_d, p.metric_f),
            (None, Some(0.25), Some(0.25))
        );
        assert_eq!(from_proto(to_proto(&e), NOW), e);
    }
}

#[cfg(test)]
mod encode_tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message;

    fn text() -> impl Strategy<Value = String> {
        // Empty, ASCII, and multi-byte text (lengths over 127 need two length bytes).
        prop_oneof![Just(String::new()), "[a-z0-9 ._-]{1,12}", "\\PC{0,200}",]
    }

    fn event() -> impl Strategy<Value = Event> {
        (
            (
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of(text()),
            ),
            prop_oneof![
                Just(None),
                any::<i64>().prop_map(|i| Some(Metric::Int(i))),
                any::<f64>().prop_map(|f| Some(Metric::Float(f))),
            ],
            proptest::collection::vec(text(), 0..4),
            any::<i64>(),
            proptest::option::of(any::<f32>()),
            proptest::collection::vec((text(), text()), 0..4),
        )
            .prop_map(
                |(
                    (host, service, state, description),
                    metric,
                    tags,
                    time_micros,
                    ttl,
                    attributes,
                )| {
                    Event {
                        host,
                        service,
                        state,
                        description,
                        metric,
                        tags,
                        time_micros,
                        ttl,
                        attributes,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The direct encoding is byte for byte what `to_proto` + prost produce.
        #[test]
        fn direct_encoding_matches_prost(e in event()) {
            let mut direct = Vec::new();
            encode_event(&e, &mut direct);
            prop_assert_eq!(&direct, &to_proto(&e).encode_to_vec());
        }
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;
    use prost::Message;

    const LIMITS: EventLimits = EventLimits {
        max_events_per_msg: 3,
        max_attributes_per_event: 2,
        max_event_bytes: 64,
    };

    fn msg(events: Vec<proto::Event>) -> Vec<u8> {
        proto::Msg {
            events,
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn attrs(n: usize) -> proto::Event {
        proto::Event {
            attributes: (0..n)
                .map(|i| proto::Attribute {
                    key: format!("k{i}"),
                    value: None,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn counts_are_checked_on_the_wire() {
        assert_eq!(
            check_limits(&msg(vec![Default::default(); 3]), &LIMITS),
            Ok(())
        );
        assert_eq!(
            check_limits(&msg(vec![Default::default(); 4]), &LIMITS),
            Err(LimitError::TooManyEvents { limit: 3 })
        );
        let states = proto::Msg {
            states: vec![Default::default(); 2],
            events: vec![Default::default(); 2],
            ..Default::default()
        };
        assert_eq!(
            check_limits(&states.encode_to_vec(), &LIMITS),
            Err(LimitError::TooManyEvents { limit: 3 })
        );
        assert_eq!(check_limits(&msg(vec![attrs(2)]), &LIMITS), Ok(()));
        assert_eq!(
            check_limits(&msg(vec![attrs(0), attrs(3)]), &LIMITS),
            Err(LimitError::TooManyAttributes { index: 1, limit: 2 })
        );
        let big = proto::Event {
            description: Some("x".repeat(80)),
            ..Default::default()
        };
        assert!(matches!(
            check_limits(&msg(vec![big]), &LIMITS),
            Err(LimitError::EventTooLarge {
                index: 0,
                limit: 64,
                ..
            })
        ));
    }

    #[test]
    fn a_group_does_not_hide_the_events_after_it() {
        // Unknown field 15 as a group holding a nested field 6, then four real events.
        let mut body = vec![(15 << 3) | 3, (6 << 3) | 2, 0, (15 << 3) | 4];
        body.extend(msg(vec![Default::default(); 4]));
        assert!(proto::Msg::decode(body.as_slice()).is_ok());
        assert_eq!(
            check_limits(&body, &LIMITS),
            Err(LimitError::TooManyEvents { limit: 3 })
        );
        // Malformed input is left to the decoder.
        assert_eq!(check_limits(&[0x32, 0x7f], &LIMITS), Ok(()));
    }
}
