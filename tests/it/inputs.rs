//! The fuzz targets' invariants (`statecast::invariants`, run coverage-guided by `fuzz/run.sh`)
//! on every `cargo test`, with proptest's inputs: blinder than the fuzzer, but always run.

use proptest::prelude::*;
use statecast::invariants;

/// Bytes that look a little like each input, so proptest gets past the first check more often
/// than with uniform noise.
fn json_like() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        "[{}\\[\\]\":,a-z0-9 .eE+-]{0,120}".prop_map(String::into_bytes),
        (
            "[a-z]{0,6}",
            prop::option::of("[a-z]{0,8}"),
            prop::option::of(-1e9f64..1e9),
            prop::option::of("20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]Z")
        )
            .prop_map(|(host, state, metric, time)| {
                let mut event = serde_json::json!({ "host": host, "custom": "x" });
                if let Some(state) = state {
                    event["state"] = state.into();
                }
                if let Some(metric) = metric {
                    event["metric"] = metric.into();
                }
                if let Some(time) = time {
                    event["time"] = time.into();
                }
                serde_json::to_vec(&event).unwrap_or_default()
            }),
    ]
}

/// Short strings, empty ones and standard field names included: what `settle` looks at.
fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{0,4}",
        Just(String::new()),
        prop::sample::select(vec![
            "host",
            "service",
            "state",
            "description",
            "metric",
            "time",
            "ttl",
            "tags"
        ])
        .prop_map(String::from),
    ]
}

/// Any event the server's type can hold: NaN and infinite floats, empty states, attributes
/// named like standard fields.
fn any_event() -> impl Strategy<Value = statecast::event::Event> {
    use statecast::event::{Event, Metric};
    let metric = prop_oneof![
        any::<i64>().prop_map(Metric::Int),
        any::<f64>().prop_map(Metric::Float),
        prop::sample::select(vec![f64::NAN, f64::INFINITY, -0.0]).prop_map(Metric::Float),
    ];
    (
        (
            prop::option::of(word()),
            prop::option::of(word()),
            prop::option::of(word()),
            prop::option::of(word()),
        ),
        (
            prop::option::of(metric),
            prop::collection::vec(word(), 0..3),
            any::<i64>(),
            prop::option::of(any::<f32>()),
            prop::collection::vec((word(), word()), 0..4),
        ),
    )
        .prop_map(
            |(
                (host, service, state, description),
                (metric, tags, time_micros, ttl, attributes),
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

/// An encoded Riemann `Msg` of events with the fields `settle` looks at (empty states,
/// attributes named like standard fields, every metric field, times in both forms).
fn riemann_msg() -> impl Strategy<Value = Vec<u8>> {
    use prost::Message as _;
    use statecast::proto::{Attribute, Event, Msg};
    let event = (
        (
            prop::option::of(word()),
            prop::option::of(word()),
            prop::option::of(word()),
        ),
        (
            prop::option::of(any::<i64>()),
            prop::option::of(any::<f64>()),
            prop::option::of(any::<f32>()),
            prop::option::of(any::<i64>()),
            prop::option::of(any::<i64>()),
        ),
        prop::collection::vec((word(), prop::option::of(word())), 0..4),
    )
        .prop_map(
            |((host, state, description), (sint, d, f, time, time_micros), attributes)| Event {
                host,
                state,
                description,
                metric_sint64: sint,
                metric_d: d,
                metric_f: f,
                time,
                time_micros,
                attributes: attributes
                    .into_iter()
                    .map(|(key, value)| Attribute { key, value })
                    .collect(),
                ..Default::default()
            },
        );
    prop::collection::vec(event, 0..4).prop_map(|events| {
        Msg {
            events,
            ..Default::default()
        }
        .encode_to_vec()
    })
}

/// Found by `fuzz/run.sh` (target `frame`): a Msg whose event has a NaN `metric_f`; the check
/// compared decoded Msgs with `==`, and NaN is not equal to itself.
#[test]
fn frame_with_a_nan_metric() {
    invariants::frame_stream(&[
        0x08, 0x00, 0x00, 0x00, 0x14, 0xe5, 0x53, 0x00, 0x85, 0xa5, 0xc0, 0x32, 0x0a, 0xc0, 0x50,
        0xff, 0xff, 0x50, 0x7d, 0xda, 0xff, 0xff, 0xff, 0x50, 0x00,
    ]);
}

/// Found by `fuzz/run.sh` (target `cluster`): an LZ4 snapshot payload of 9 bytes announcing
/// 4 GiB decompressed; it was allocated before anything checked it could be true.
#[test]
fn cluster_payload_announcing_more_than_lz4_can_expand() {
    invariants::cluster_message(&[0x01, 0x5b, 0x00, 0x25, 0xf5, 0x31, 0x31, 0x31, 0x31]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn frame_stream(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        invariants::frame_stream(&data);
    }

    #[test]
    fn json_body(data in json_like()) {
        invariants::json_body(&data);
    }

    #[test]
    fn query_text(text in "[a-z0-9 ()=!<>~\"\\\\.%_*+?{}|\\[\\]-]{0,60}") {
        invariants::query_text(text.as_bytes());
    }

    #[test]
    fn change_log(data in prop::collection::vec(any::<u8>(), 0..512)) {
        invariants::change_log(&data);
    }

    #[test]
    fn engine_ops(data in prop::collection::vec(any::<u8>(), 0..400)) {
        invariants::engine_ops(&data);
    }

    #[test]
    fn cluster_message(data in prop::collection::vec(any::<u8>(), 0..1024)) {
        invariants::cluster_message(&data);
    }

    #[test]
    fn published_events_from_riemann_bytes(data in riemann_msg()) {
        invariants::published_events(&data);
    }

    #[test]
    fn published_events_from_json(data in json_like()) {
        invariants::published_events(&data);
    }

    #[test]
    fn any_settled_event_survives_the_stream(event in any_event()) {
        invariants::settled_event(event);
    }
}
