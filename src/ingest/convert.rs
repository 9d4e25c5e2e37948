//! Conversion between Riemann's protobuf `Event` and the server's one [`Event`] type.
//!
//! The decoding rules are Riemann's own: metric is `metric_sint64`, else `metric_d`, else
//! `metric_f`; time is `time_micros` if set, else `time` (seconds), else the time of arrival.
//! Encoding back (for query replies) follows Riemann too: `metric_f` always, plus `metric_sint64`
//! for integer metrics or `metric_d` otherwise, and both `time` and `time_micros`.

use crate::event::{Event, Metric};
use crate::proto;

/// An empty state is what collectd's `write_riemann` sends for "no state": treat it as absent so
/// it is never mistaken for a transition.
pub fn state_or_none(state: Option<String>) -> Option<String> {
    state.filter(|s| !s.is_empty())
}

/// Widens an `f32` through its shortest decimal form, so a client that sent `0.1` as `metric_f`
/// is seen (and queried) as 0.1, not as 0.100000001490116.
fn widen(f: f32) -> f64 {
    f.to_string().parse().unwrap_or(f64::from(f))
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
    Event {
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
    }
}

/// Encodes an event the way Riemann answers a query.
pub fn to_proto(e: &Event) -> proto::Event {
    let (metric_sint64, metric_d) = match e.metric {
        Some(Metric::Int(i)) => (Some(i), None),
        Some(Metric::Float(f)) => (None, Some(f)),
        None => (None, None),
    };
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
