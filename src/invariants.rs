//! Invariants of everything that reads untrusted input, as functions of arbitrary bytes.
//!
//! Each function panics when an invariant is broken and returns quietly otherwise. The fuzz
//! targets under `fuzz/` (cargo-fuzz, coverage-guided) and the proptests in `tests/it/inputs.rs`
//! (the normal suite) call the same functions, so what the fuzzer checks is also checked on
//! every `cargo test`, only with fewer and blinder inputs.

use std::collections::HashMap;

use bytes::BytesMut;
use prost::Message as _;

use crate::engine::state::Engine;
use crate::event::convert;
use crate::event::Event;
use crate::ingest::{frame, json};
use crate::proto::Msg;
use crate::query::Query;

/// Splits `data` into pieces whose lengths come from the data itself, so a fuzzer can steer
/// where reads end.
fn pieces(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let len = (usize::from(rest[0]) % 64 + 1).min(rest.len());
        let (piece, tail) = rest.split_at(len);
        out.push(piece);
        rest = tail;
    }
    out
}

/// Frames come out the same whether the stream arrives at once or in arbitrary reads; an
/// oversize announced length is an error before its body arrives; every decodable `Msg`
/// converts to events without panicking, and re-framed it decodes to the same bytes.
pub fn frame_stream(data: &[u8]) {
    let Some((&limit_byte, stream)) = data.split_first() else {
        return;
    };
    let decoder = frame::FrameDecoder::new(usize::from(limit_byte) * 64 + 16);

    let whole = decode_all(&decoder, &[stream]);
    let split = decode_all(&decoder, &pieces(stream));
    assert_eq!(whole, split, "framing depends on how the bytes were read");

    for body in whole.0 {
        let Ok(msg) = Msg::decode(body.as_slice()) else {
            continue;
        };
        for event in msg.events.iter().cloned() {
            let _ = convert::from_proto(event, 0);
        }
        let mut framed = BytesMut::new();
        frame::encode(&msg, &mut framed);
        let again = decoder.decode(&mut framed);
        if let Ok(Some(bytes)) = again {
            // Compared as bytes: a NaN metric is not equal to itself.
            assert_eq!(
                Msg::decode(bytes).ok().map(|m| m.encode_to_vec()),
                Some(msg.encode_to_vec()),
                "re-framed Msg decodes differently"
            );
        }
    }
}

/// The frame bodies (and whether the stream ended in an error) from feeding `reads` in order.
fn decode_all(decoder: &frame::FrameDecoder, reads: &[&[u8]]) -> (Vec<Vec<u8>>, bool) {
    let mut buf = BytesMut::new();
    let mut bodies = Vec::new();
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(body)) => bodies.push(body.to_vec()),
                Ok(None) => break,
                Err(_) => return (bodies, true),
            }
        }
    }
    (bodies, false)
}

/// Any body either parses or is refused with an error (never a panic), and what parses is
/// stable once written out in Riemann's JSON form: parse(json(e)) written again is the same.
pub fn json_body(data: &[u8]) {
    let Ok(events) = json::parse_events(data, 1_700_000_000_000_000, &Default::default()) else {
        return;
    };
    let once = render(&events);
    let reparsed = json::parse_events(once.as_bytes(), 0, &Default::default())
        .unwrap_or_else(|e| panic!("our own JSON form does not parse back: {e}: {once}"));
    assert_eq!(render(&reparsed), once, "JSON form is not stable");
}

fn render(events: &[Event]) -> String {
    let values: Vec<_> = events.iter().map(Event::to_json_value).collect();
    serde_json::Value::Array(values).to_string()
}

/// Any text either parses or gets a parse error; a parsed query prints to text that parses
/// back to the same query, and evaluating it on assorted events never panics.
pub fn query_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(query) = Query::parse(&text) else {
        return;
    };
    let printed = query.to_string();
    assert_eq!(
        Query::parse(&printed).as_ref(),
        Ok(&query),
        "printed form {printed:?} does not parse back"
    );
    for event in sample_events() {
        let _ = query.matches(&event);
    }
}

fn sample_events() -> Vec<Event> {
    vec![
        Event::default(),
        Event {
            host: Some("web1".into()),
            service: Some("cpu".into()),
            state: Some("critical".into()),
            description: Some("load 12".into()),
            metric: Some(crate::event::Metric::Float(0.97)),
            tags: vec!["prod".into()],
            time_micros: 1_700_000_000_000_000,
            ttl: Some(60.0),
            attributes: vec![("org".into(), "Production".into())],
        },
        Event {
            metric: Some(crate::event::Metric::Int(i64::MIN)),
            ttl: Some(f32::NAN),
            ..Event::default()
        },
    ]
}

const HOSTS: [&str; 3] = ["a", "b", "c"];
const SERVICES: [&str; 2] = ["x", "y"];
const STATES: [Option<&str>; 4] = [None, Some("ok"), Some("warning"), Some("critical")];

/// Drives the engine with batches and clock ticks taken from the bytes. Checks: `seq`s are
/// consecutive from 1; a change always moves a key to a different state (or removes it); the
/// snapshot holds each key once, at the engine's `seq`; and, while no tick has expired
/// anything, each key's state is what a plain map of "last state seen, from `ok`" says.
pub fn engine_ops(data: &[u8]) {
    let mut engine = Engine::new("ok", 10.0);
    engine.set_expired_keep(Some(std::time::Duration::from_secs(5)));
    let mut model: HashMap<(String, String), String> = HashMap::new();
    let mut expired_any = false;
    let mut now = 1_700_000_000_000_000i64;
    let mut next_seq = 1;
    let mut changes = Vec::new();
    for op in data.chunks(4) {
        let [kind, a, b, c] = [0, 1, 2, 3].map(|i| op.get(i).copied().unwrap_or(0));
        changes.clear();
        if kind % 4 == 3 {
            now += i64::from(a) * 250_000;
            if engine.expire(now, &mut changes) > 0 {
                expired_any = true;
            }
        } else {
            let batch: Vec<Event> = (0..=(kind % 4))
                .map(|i| {
                    let pick = usize::from(a.wrapping_add(b.wrapping_mul(i)));
                    Event {
                        host: Some(HOSTS[pick % HOSTS.len()].into()),
                        service: Some(SERVICES[(pick / 3) % SERVICES.len()].into()),
                        state: STATES[usize::from(c.wrapping_add(i)) % STATES.len()]
                            .map(str::to_owned),
                        time_micros: now,
                        ..Event::default()
                    }
                })
                .collect();
            for event in &batch {
                if let (Some(h), Some(s), Some(state)) = (&event.host, &event.service, &event.state)
                {
                    model.insert((h.clone(), s.clone()), state.clone());
                }
            }
            engine
                .apply(batch, &mut changes, None)
                .expect("no key limit is set");
        }
        for change in &changes {
            assert_eq!(change.seq, next_seq, "seqs are consecutive");
            next_seq += 1;
            match &change.kind {
                crate::change::ChangeKind::State(state) => assert!(
                    state.removed || state.event.state.as_deref() != Some(&state.previous_state),
                    "a change that changes nothing: {change:?}"
                ),
                crate::change::ChangeKind::Action(_) => {}
            }
        }
        let snapshot = engine.snapshot();
        assert_eq!(snapshot.seq, engine.seq());
        assert_eq!(snapshot.seq, next_seq - 1);
        let mut keys: Vec<_> = snapshot
            .events
            .iter()
            .map(|e| (e.host.clone(), e.service.clone()))
            .collect();
        let len = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), len, "a key twice in the snapshot");
        if !expired_any {
            for event in &snapshot.events {
                let key = (
                    event.host.clone().unwrap_or_default(),
                    event.service.clone().unwrap_or_default(),
                );
                assert_eq!(event.state.as_ref(), model.get(&key), "state of {key:?}");
            }
        }
    }
}

/// The change-log reader: any bytes give records in increasing `seq` order above the floor
/// (never a panic, never a read past the end); and in a log written by us, one damaged byte
/// loses at most the record it lands in — every other record is still read.
pub fn change_log(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let floor = u64::from(first % 8);
    let (records, report) = crate::store::parse_log(rest, floor);
    let mut last = floor;
    for record in &records {
        assert!(record.seq > last, "seq {} after {last}", record.seq);
        last = record.seq;
    }
    assert!(report.end as usize <= rest.len());

    // A log of our own: as many records as the input has bytes up to 64, with payloads from it.
    let count = rest.len().min(64);
    let mut log = Vec::new();
    let mut spans = Vec::new();
    for (i, byte) in rest.iter().take(count).enumerate() {
        let change = crate::store::StoredChange {
            seq: i as u64 + 1,
            previous_state: "x".repeat(usize::from(*byte) % 7),
            ..Default::default()
        };
        let start = log.len();
        crate::store::encode_log_record(&change.encode_to_vec(), &mut log);
        spans.push(start..log.len());
    }
    if log.is_empty() {
        return;
    }
    let (all, report) = crate::store::parse_log(&log, 0);
    assert_eq!(all.len(), count, "a clean log reads back whole");
    assert_eq!(report.skipped, 0);

    let at = usize::from(first) * 7919 % log.len();
    log[at] ^= 1 << (first % 8);
    let (read, _) = crate::store::parse_log(&log, 0);
    let hit = spans.iter().position(|span| span.contains(&at));
    let expected: Vec<u64> = (1..=count as u64)
        .filter(|seq| Some(*seq as usize - 1) != hit)
        .collect();
    let seqs: Vec<u64> = read.iter().map(|r| r.seq).collect();
    // The damaged record itself is lost (its checksum fails); only the others are required.
    let missing: Vec<u64> = expected
        .iter()
        .copied()
        .filter(|s| !seqs.contains(s))
        .collect();
    assert!(
        missing.is_empty(),
        "one flipped byte at {at} lost records {missing:?} beyond the one it hit"
    );
}

/// A cluster stream message or snapshot object, whatever its bytes: decoding never panics, and
/// what decodes re-encodes to an input that decodes the same — every node reads a message alike.
pub fn cluster_message(data: &[u8]) {
    if let Ok(input) = crate::cluster::decode_input(data) {
        let again = crate::cluster::encode_input(&input);
        let back = crate::cluster::decode_input(&again).expect("our own encoding decodes");
        // Compared through their encodings: a NaN metric is not equal to itself.
        assert_eq!(crate::cluster::encode_input(&back), again);
    }
    // With the publisher's header (deadline, origin): what the order filter decides from.
    if let Ok((input, header)) = crate::cluster::decode_published(data) {
        let again = crate::cluster::encode_published(&input, &header);
        let (back, back_header) =
            crate::cluster::decode_published(&again).expect("our own encoding decodes");
        assert_eq!(back_header, header);
        assert_eq!(crate::cluster::encode_published(&back, &back_header), again);
    }
    // As a message of several inputs: each one read re-encodes to one that reads the same, in
    // the same place.
    if let Ok(inputs) = crate::cluster::decode_message(data) {
        let again: Vec<_> = inputs
            .iter()
            .flatten()
            .map(|(input, header)| crate::cluster::encode_published(input, header))
            .collect();
        let message = crate::cluster::encode_message(&again);
        let back = crate::cluster::decode_message(&message).expect("our own encoding splits");
        assert_eq!(back.len(), again.len());
        for (read, encoded) in back.iter().zip(&again) {
            let (input, header) = read.as_ref().expect("our own encoding decodes");
            assert_eq!(&crate::cluster::encode_published(input, header), encoded);
        }
    }
    let _ = crate::cluster::decode_image(data);
}

/// Events from every ingest path — a Riemann `Msg` (TCP, UDP, TLS) and a JSON body (POST
/// `/api/event`, `/events`, websocket ingest), read from the same bytes — are already in their
/// stream form: [`crate::cluster::settle`] leaves them as they are, and the stream gives them
/// back exactly. That is what lets a publishing node apply its own inputs without decoding
/// them while every other node decodes the bytes: both compute the same state.
pub fn published_events(data: &[u8]) {
    let limits = Default::default();
    let mut paths: Vec<Vec<Event>> = Vec::new();
    if let Ok(msg) = Msg::decode(data) {
        paths.push(convert::events_from_proto(msg.events, 1_700_000_000_000_000).collect());
    }
    paths.extend(json::parse_events(data, 1_700_000_000_000_000, &limits).ok());
    paths.extend(json::parse_ndjson(data, 1_700_000_000_000_000, &limits).ok());
    for events in paths {
        let input = crate::cluster::Input::Events(events);
        let mut settled = input.clone();
        crate::cluster::settle(&mut settled);
        assert_same(
            &settled,
            &input,
            "an ingest path made an event settle changes",
        );
        published_round_trip(input);
    }
}

/// Any event at all, once settled ([`crate::cluster::settle`]), comes back from the stream
/// exactly as it is: the publisher's own copy and everyone else's decoded one are the same.
pub fn settled_event(event: Event) {
    let mut input = crate::cluster::Input::Events(vec![event]);
    crate::cluster::settle(&mut input);
    published_round_trip(input);
}

/// `input` decodes from its stream form as itself (with its header).
fn published_round_trip(input: crate::cluster::Input) {
    let header = crate::cluster::Header {
        origin: Some(("n-1-2".into(), 3)),
        deadline_micros: Some(4),
    };
    let bytes = crate::cluster::encode_published(&input, &header);
    let (back, back_header) =
        crate::cluster::decode_published(&bytes).expect("our own encoding decodes");
    assert_eq!(back_header, header);
    assert_same(
        &back,
        &input,
        "an event changed on its way through the stream",
    );
}

/// `a == b`, with floats compared by their bits (a NaN metric is not equal to itself, yet
/// every node holds the same one).
fn assert_same(a: &crate::cluster::Input, b: &crate::cluster::Input, what: &str) {
    use crate::cluster::Input;
    fn bits(e: &Event) -> impl PartialEq + std::fmt::Debug + '_ {
        let metric = e.metric.map(|m| match m {
            crate::event::Metric::Int(i) => (0, i as u64),
            crate::event::Metric::Float(f) => (1, f.to_bits()),
        });
        (
            (&e.host, &e.service, &e.state, &e.description),
            (metric, &e.tags, e.time_micros, e.ttl.map(f32::to_bits)),
            &e.attributes,
        )
    }
    match (a, b) {
        (Input::Events(a), Input::Events(b)) => {
            let a: Vec<_> = a.iter().map(bits).collect();
            let b: Vec<_> = b.iter().map(bits).collect();
            assert_eq!(a, b, "{what}");
        }
        _ => assert_eq!(a, b, "{what}"),
    }
}
