//! How inputs and snapshots are laid out in NATS: protobuf, with events in Riemann's own `Event`
//! message (the form the store keeps them in too), so a batch costs about what it cost on the
//! wire it arrived by.
//!
//! Events are published with their time already set (the ingesting node stamps events that
//! carry none on arrival), so every node decodes exactly the same events.

use std::sync::Arc;

use prost::Message;

use crate::change::Snapshot;
use crate::engine::order::{OrderTable, OriginEntry};
use crate::engine::{Image, Input};
use crate::event::{convert, Event};
use crate::proto;

/// One stream message: one engine input, and what the consumers need to decide whether it
/// takes effect (see [`crate::engine::order`]).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamInput {
    #[prost(oneof = "Body", tags = "1, 2, 3")]
    pub body: Option<Body>,
    /// The connection it came from (node id, process start, connection id); empty: none.
    #[prost(string, tag = "4")]
    pub origin: String,
    /// Its number among that connection's inputs (from 1).
    #[prost(uint64, tag = "5")]
    pub origin_seq: u64,
    /// Stored after this (µs since the epoch), it is not applied; 0: no deadline.
    #[prost(int64, tag = "6")]
    pub deadline_micros: i64,
}

/// What a publisher says of an input besides the input itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// `(origin, number)`: the connection whose send order must be kept.
    pub origin: Option<(String, u64)>,
    pub deadline_micros: Option<i64>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Body {
    #[prost(message, tag = "1")]
    Events(EventBatch),
    /// A clock tick: `now` in µs since the epoch.
    #[prost(int64, tag = "2")]
    TickMicros(i64),
    /// An operator action, as JSON of [`crate::action::Action`] (rare and small: readable
    /// beats compact here).
    #[prost(bytes = "vec", tag = "3")]
    Action(Vec<u8>),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EventBatch {
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<proto::Event>,
}

/// A snapshot object: everything [`Image`] holds.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredImage {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// The last stream sequence the snapshot covers.
    #[prost(uint64, tag = "2")]
    pub position: u64,
    #[prost(message, repeated, tag = "3")]
    pub events: Vec<proto::Event>,
    /// Acks and silences (JSON of [`crate::action::Actions`]); absent: none.
    #[prost(bytes = "vec", tag = "4")]
    pub actions: Vec<u8>,
    /// The stream time the order table has seen (see [`crate::engine::order`]).
    #[prost(int64, tag = "5")]
    pub stream_micros: i64,
    /// Origins the order table remembers.
    #[prost(message, repeated, tag = "6")]
    pub origins: Vec<StoredOrigin>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredOrigin {
    #[prost(string, tag = "1")]
    pub origin: String,
    #[prost(uint64, tag = "2")]
    pub last: u64,
    #[prost(int64, tag = "3")]
    pub deadline_micros: i64,
}

/// Why a stream message could not be read (every node reads it the same way, so every node
/// skips it alike).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("undecodable stream message: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("stream message without a body")]
    Empty,
    #[error("undecodable operator action: {0}")]
    Action(#[from] serde_json::Error),
    #[error("unknown payload format {0}")]
    Format(u8),
    #[error("compressed payload announces {0} bytes, more than the {1} read")]
    TooLarge(usize, usize),
    #[error("stream message of more than {0} inputs")]
    TooManyInputs(usize),
    #[error("stream message with an unknown field {0} among its inputs")]
    Field(u32),
    #[error("stream message's input announces {0} bytes, {1} left")]
    Truncated(u64, usize),
    #[error("undecompressable payload: {0}")]
    Decompress(#[from] lz4_flex::block::DecompressError),
}

/// First byte of every payload: how the protobuf after it is stored.
const PLAIN: u8 = 0;
/// LZ4 block, its decompressed size prepended (little-endian u32).
const LZ4: u8 = 1;

/// LZ4's largest expansion: every 255 output bytes take at least one input byte.
const LZ4_MAX_RATIO: usize = 255;

/// Payloads smaller than this are sent as they are (ticks, actions, single events): compressing
/// them saves nothing.
const COMPRESS_FROM: usize = 512;

/// A decompressed stream input may announce at most this many bytes: the size is checked before
/// anything is allocated for it (a stream is shared, its contents are not trusted). Inputs are
/// bounded long before by NATS's `max_payload` (1 MiB by default) and LZ4's best ratio (255:1).
pub const MAX_INPUT_BYTES: usize = 256 * 1024 * 1024;

/// The same for a snapshot (its object is bounded the same way, see `snapshot`).
pub const MAX_IMAGE_BYTES: usize = u32::MAX as usize;

/// Wraps an encoded protobuf for the stream or the bucket: LZ4-compressed when that pays.
///
/// Why compress: monitoring events repeat the same hosts, services, states and tags, so a batch
/// shrinks several times, and bytes are what the NATS server spends its time on (storing,
/// replicating and delivering every input to every node); LZ4 costs the nodes far less.
fn frame(protobuf: Vec<u8>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(protobuf.len() + 1);
    buf.push(0);
    buf.extend_from_slice(&protobuf);
    frame_at(buf, 1).into()
}

/// [`frame`] for a protobuf already in `buf` from `start` on, with a spare byte before it: a
/// plain payload is framed where it lies (no copy), a compressed one written once.
fn frame_at(mut buf: Vec<u8>, start: usize) -> bytes::Bytes {
    let protobuf = &buf[start..];
    if protobuf.len() < COMPRESS_FROM {
        buf[start - 1] = PLAIN;
        return bytes::Bytes::from(buf).slice(start - 1..);
    }
    let max = lz4_flex::block::get_maximum_output_size(protobuf.len());
    let mut out = vec![0; 5 + max];
    out[0] = LZ4;
    // Bounded by NATS's max_payload long before u32 (inputs past it are refused unsent).
    out[1..5].copy_from_slice(
        &u32::try_from(protobuf.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    match lz4_flex::block::compress_into(protobuf, &mut out[5..]) {
        Ok(written) => out.truncate(5 + written),
        // Cannot happen (the output has LZ4's worst-case size): sent plain instead.
        Err(_) => {
            buf[start - 1] = PLAIN;
            return bytes::Bytes::from(buf).slice(start - 1..);
        }
    }
    if out.capacity() > 2 * out.len() {
        // Kept until the input is applied (see `pending::Kept`): not at its worst-case size.
        out.shrink_to_fit();
    }
    bytes::Bytes::from(out)
}

/// The protobuf inside a payload made by [`frame`].
fn unframe(payload: &[u8], limit: usize) -> Result<std::borrow::Cow<'_, [u8]>, WireError> {
    let Some((&format, rest)) = payload.split_first() else {
        return Err(WireError::Empty);
    };
    match format {
        PLAIN => Ok(std::borrow::Cow::Borrowed(rest)),
        LZ4 => {
            let (size, compressed) = lz4_flex::block::uncompressed_size(rest)?;
            // LZ4 expands at most 255-fold: an announced size beyond that is a lie, and the
            // limit bounds what even a true one may cost.
            let possible = compressed
                .len()
                .saturating_mul(LZ4_MAX_RATIO)
                .saturating_add(16);
            if size > limit.min(possible) {
                return Err(WireError::TooLarge(size, limit.min(possible)));
            }
            let mut out = vec![0; size];
            let written = lz4_flex::block::decompress_into(compressed, &mut out)?;
            out.truncate(written);
            Ok(std::borrow::Cow::Owned(out))
        }
        other => Err(WireError::Format(other)),
    }
}

/// Appends `event` as a length-delimited field `tag` of the message being built in `out`.
fn encode_event_field(tag: u32, event: &Event, scratch: &mut Vec<u8>, out: &mut Vec<u8>) {
    scratch.clear();
    convert::encode_event(event, scratch);
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(scratch.len() as u64, out);
    out.extend_from_slice(scratch);
}

/// Encodes one input for the stream.
pub fn encode_input(input: &Input) -> bytes::Bytes {
    encode_published(input, &Header::default())
}

/// Encodes one input for the stream with its publisher's `header`.
pub fn encode_published(input: &Input, header: &Header) -> bytes::Bytes {
    let (mut buf, start) = encode_body(input);
    if let Some((origin, number)) = &header.origin {
        prost::encoding::string::encode(4, origin, &mut buf);
        prost::encoding::uint64::encode(5, number, &mut buf);
    }
    if let Some(deadline) = header.deadline_micros {
        prost::encoding::int64::encode(6, &deadline, &mut buf);
    }
    frame_at(buf, start)
}

/// Room before a batch's events for the frame's byte and the batch's field key and length
/// (1 + 1 + at most 10): filled in once the length is known, so the events, written once, never
/// move (copying batches was a fifth of a cluster node's time).
const ROOM: usize = 12;

/// The protobuf of `input`'s body in a buffer, from the offset returned on, with a spare byte
/// before it (for [`frame_at`]).
fn encode_body(input: &Input) -> (Vec<u8>, usize) {
    let message = match input {
        Input::Events(events) => {
            // Field 1 of StreamInput holds an EventBatch whose field 1 repeats events: build the
            // batch straight from the events (no intermediate protobuf structs), then wrap it.
            let mut scratch = Vec::new();
            let mut buf = Vec::with_capacity(ROOM + events.len() * 128 + 64);
            buf.resize(ROOM, 0);
            for event in events {
                encode_event_field(1, event, &mut scratch, &mut buf);
            }
            let mut key = Vec::with_capacity(ROOM);
            prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut key);
            prost::encoding::encode_varint((buf.len() - ROOM) as u64, &mut key);
            let start = ROOM - key.len();
            buf[start..ROOM].copy_from_slice(&key);
            return (buf, start);
        }
        Input::Tick { now_micros } => StreamInput {
            body: Some(Body::TickMicros(*now_micros)),
            ..Default::default()
        },
        Input::Action(action) => StreamInput {
            // Serializing plain data into a Vec cannot fail.
            body: Some(Body::Action(
                serde_json::to_vec(&**action).unwrap_or_default(),
            )),
            ..Default::default()
        },
    };
    let mut buf = vec![0];
    // Encoding into a Vec cannot fail (it grows).
    let _ = message.encode(&mut buf);
    (buf, 1)
}

/// Puts `input`'s events in the form they have after a trip through the stream: an empty
/// state is no state, and attributes named like a standard field are merged into it (what
/// [`convert::from_proto`] does on the way back). Every ingest path already produces events in
/// this form (the proptests in `tests/it/inputs.rs` hold them to it); settling them once more is
/// what lets a publishing node apply its own inputs without decoding them back — identical to
/// what every other node decodes, whatever path a future event takes in.
pub fn settle(input: &mut Input) {
    if let Input::Events(events) = input {
        for event in events {
            if event.state.as_deref() == Some("") {
                event.state = None;
            }
            event.merge_standard_attributes();
        }
    }
}

/// Decodes one stream message back into the input it was published as.
pub fn decode_input(payload: &[u8]) -> Result<Input, WireError> {
    decode_published(payload).map(|(input, _)| input)
}

/// Decodes one stream message back into the input and header it was published with.
pub fn decode_published(payload: &[u8]) -> Result<(Input, Header), WireError> {
    let mut budget = MAX_INPUT_BYTES;
    decode_entry(payload, &mut budget)
}

/// Decodes one input (as [`encode_published`] made it) whose decompressed form may take at most
/// `budget` bytes, and takes what it took from `budget`: the inputs of one message share one.
pub(super) fn decode_entry(
    payload: &[u8],
    budget: &mut usize,
) -> Result<(Input, Header), WireError> {
    let bytes = unframe(payload, *budget)?;
    *budget = budget.saturating_sub(bytes.len());
    let message = StreamInput::decode(&*bytes)?;
    let header = Header {
        origin: (!message.origin.is_empty()).then_some((message.origin, message.origin_seq)),
        deadline_micros: (message.deadline_micros != 0).then_some(message.deadline_micros),
    };
    let input = match message.body.ok_or(WireError::Empty)? {
        Body::Events(batch) => Input::Events(
            // Times were set by the publishing node: 0 is never used.
            convert::events_from_proto(batch.events, 0).collect(),
        ),
        Body::TickMicros(now_micros) => Input::Tick { now_micros },
        Body::Action(json) => Input::Action(Box::new(serde_json::from_slice(&json)?)),
    };
    Ok((input, header))
}

/// First byte of a stream message holding several inputs: a protobuf whose field 1 repeats
/// them, each as [`encode_published`] made it (its own first byte, compressed or not).
///
/// Why several inputs in one message: every stream message costs the NATS server and both ends
/// a round of work (store, acknowledge, deliver, the wake-ups between them) whatever it holds, so
/// a node's publisher (the cluster's sequencer module) puts whatever inputs are waiting into one.
/// Each keeps its own origin, number and deadline, so the order filter decides each alone, as
/// before. Inputs are framed (compressed) one by one, by the connection that sent them, so that
/// work stays spread over the connections' tasks; the message is only their concatenation.
const BUNDLE: u8 = 2;

/// Inputs one stream message may hold, read (a publisher puts at most its sequencer's
/// `MAX_MESSAGE_INPUTS` in one): past it the message is unreadable, skipped by every node alike,
/// and what reading it may allocate stays bounded whatever the NATS server's `max_payload`.
pub const MAX_READ_INPUTS: usize = 65_536;

/// Bytes an input of `len` encoded bytes takes in a message of several ([`encode_message`]).
pub fn message_cost(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// One stream message holding `inputs` (each as [`encode_published`] made it), in order. One
/// input is a message by itself (no copy, no extra byte): what ticks and tools publish too.
pub fn encode_message(inputs: &[bytes::Bytes]) -> bytes::Bytes {
    if let [one] = inputs {
        return one.clone();
    }
    let size = 1 + inputs.iter().map(|i| message_cost(i.len())).sum::<usize>();
    let mut buf = Vec::with_capacity(size);
    buf.push(BUNDLE);
    for input in inputs {
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut buf);
        prost::encoding::encode_varint(input.len() as u64, &mut buf);
        buf.extend_from_slice(input);
    }
    buf.into()
}

/// The inputs of one stream message, each still encoded, in order: a message that is a single
/// input (ticks, markers, tools) is that one.
pub fn split_message(payload: &[u8]) -> Result<Vec<&[u8]>, WireError> {
    let Some((&BUNDLE, mut rest)) = payload.split_first() else {
        return Ok(vec![payload]);
    };
    let mut inputs = Vec::new();
    while !rest.is_empty() {
        if inputs.len() == MAX_READ_INPUTS {
            return Err(WireError::TooManyInputs(MAX_READ_INPUTS));
        }
        let (tag, wire_type) = prost::encoding::decode_key(&mut rest)?;
        if tag != 1 || wire_type != prost::encoding::WireType::LengthDelimited {
            return Err(WireError::Field(tag));
        }
        let len = prost::encoding::decode_varint(&mut rest)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|len| *len <= rest.len())
            .ok_or(WireError::Truncated(len, rest.len()))?;
        let (input, after) = rest.split_at(len);
        inputs.push(input);
        rest = after;
    }
    Ok(inputs)
}

/// One input of a stream message as read: the input and its header, or why it cannot be read.
pub type ReadInput = Result<(Input, Header), WireError>;

/// Decodes every input of one stream message, in order: an input that cannot be read is an
/// error in its place (the others still count), a message that cannot be split one as a whole.
/// Together its inputs may take [`MAX_INPUT_BYTES`] decompressed.
pub fn decode_message(payload: &[u8]) -> Result<Vec<ReadInput>, WireError> {
    let mut budget = MAX_INPUT_BYTES;
    Ok(split_message(payload)?
        .into_iter()
        .map(|input| decode_entry(input, &mut budget))
        .collect())
}

pub fn encode_image(image: &Image) -> Vec<u8> {
    let mut scratch = Vec::new();
    let mut out = Vec::with_capacity(image.snapshot.events.len() * 128 + 32);
    prost::encoding::uint64::encode(1, &image.snapshot.seq, &mut out);
    prost::encoding::uint64::encode(2, &image.position, &mut out);
    for event in &image.snapshot.events {
        encode_event_field(3, event, &mut scratch, &mut out);
    }
    if image.snapshot.actions != crate::action::Actions::default() {
        let actions = serde_json::to_vec(&image.snapshot.actions).unwrap_or_default();
        prost::encoding::bytes::encode(4, &actions, &mut out);
    }
    prost::encoding::int64::encode(5, &image.order.stream_micros(), &mut out);
    for entry in image.order.entries() {
        let origin = StoredOrigin {
            origin: entry.origin,
            last: entry.last,
            deadline_micros: entry.deadline_micros,
        };
        prost::encoding::message::encode(6, &origin, &mut out);
    }
    frame(out)
}

pub fn decode_image(payload: &[u8]) -> Result<Image, WireError> {
    let bytes = unframe(payload, MAX_IMAGE_BYTES)?;
    let stored = StoredImage::decode(&*bytes)?;
    let actions = if stored.actions.is_empty() {
        crate::action::Actions::default()
    } else {
        serde_json::from_slice(&stored.actions)?
    };
    Ok(Image {
        snapshot: Snapshot {
            seq: stored.seq,
            events: convert::events_from_proto(stored.events, 0)
                .map(Arc::new)
                .collect(),
            actions,
        },
        position: stored.position,
        order: OrderTable::restore(
            stored.stream_micros,
            stored.origins.into_iter().map(|o| OriginEntry {
                origin: o.origin,
                last: o.last,
                deadline_micros: o.deadline_micros,
            }),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Metric;

    fn event(host: &str, state: Option<&str>) -> Event {
        Event {
            host: Some(host.into()),
            service: Some("cpu".into()),
            state: state.map(Into::into),
            description: Some("a <b>".into()),
            metric: Some(Metric::Float(0.25)),
            tags: vec!["t".into()],
            time_micros: 1_764_590_000_123_456,
            ttl: Some(30.0),
            attributes: vec![("team".into(), "ops".into())].into_iter().collect(),
        }
    }

    #[test]
    fn inputs_survive_the_stream_unchanged() {
        for input in [
            Input::Events(vec![event("a", Some("critical")), event("b", None)]),
            Input::Events(vec![]),
            Input::Tick {
                now_micros: 1_764_590_001_000_000,
            },
            Input::Action(Box::new(crate::action::Action {
                at_micros: 1_764_590_001_000_000,
                by: "ann".into(),
                kind: crate::action::ActionKind::Ack {
                    host: Some("a".into()),
                    service: None,
                    note: "on it".into(),
                    expires_at: Some(1_764_590_061_000_000),
                },
            })),
        ] {
            let bytes = encode_input(&input);
            assert_eq!(decode_input(&bytes).unwrap(), input);
        }
    }

    #[test]
    fn images_survive_the_bucket_unchanged() {
        let image = Image {
            snapshot: Snapshot {
                seq: 42,
                events: vec![Arc::new(event("a", Some("ok"))), Arc::new(event("b", None))],
                actions: crate::action::Actions {
                    acks: vec![crate::action::AckInfo {
                        host: Some("a".into()),
                        service: Some("cpu".into()),
                        note: String::new(),
                        by: "ann".into(),
                        at: 1,
                        expires_at: None,
                    }],
                    silenced: vec![(Some("a".into()), Some("cpu".into()))],
                    clock: 7,
                    ..Default::default()
                },
            },
            position: 1234,
            order: {
                let mut order = OrderTable::default();
                order.admit(&crate::engine::order::Stamp {
                    stored_micros: 10,
                    deadline_micros: Some(100),
                    origin: Some(("b-1-7".into(), 3)),
                });
                order
            },
        };
        let back = decode_image(&encode_image(&image)).unwrap();
        assert_eq!(back.order, image.order);
        assert_eq!(back.order.len(), 1);
        assert_eq!(back.position, 1234);
        assert_eq!(back.snapshot.seq, 42);
        assert_eq!(back.snapshot.events, image.snapshot.events);
        assert_eq!(back.snapshot.actions, image.snapshot.actions);
    }

    #[test]
    fn headers_survive_the_stream_unchanged() {
        let header = Header {
            origin: Some(("b-18eedfb66c48fa65-12".into(), 42)),
            deadline_micros: Some(1_764_590_005_000_000),
        };
        for input in [
            Input::Events(vec![event("a", Some("ok"))]),
            Input::Events((0..100).map(|_| event("web-1", Some("ok"))).collect()),
        ] {
            let (back, back_header) = decode_published(&encode_published(&input, &header)).unwrap();
            assert_eq!((back, back_header), (input.clone(), header.clone()));
            // Inputs published without one (ticks, older nodes) decode with none.
            assert_eq!(
                decode_published(&encode_input(&input)).unwrap().1,
                Header::default()
            );
        }
    }

    #[test]
    fn large_inputs_are_compressed_small_ones_are_not() {
        let small = encode_input(&Input::Tick { now_micros: 1 });
        assert_eq!(small[0], PLAIN);
        let batch = Input::Events((0..100).map(|_| event("web-1", Some("ok"))).collect());
        let plain = {
            let (buf, start) = encode_body(&batch);
            buf.len() - start
        };
        let framed = encode_input(&batch);
        assert_eq!(framed[0], LZ4);
        assert!(framed.len() * 4 < plain, "{} of {plain}", framed.len());
        assert_eq!(decode_input(&framed).unwrap(), batch);
    }

    #[test]
    fn an_announced_size_past_the_limit_is_refused_before_allocating() {
        // Past the limit, however long the payload.
        let mut payload = vec![LZ4];
        payload.extend_from_slice(&u32::MAX.to_le_bytes());
        payload.extend_from_slice(&vec![0; 2 << 20]);
        assert!(matches!(
            decode_input(&payload),
            Err(WireError::TooLarge(size, MAX_INPUT_BYTES)) if size == u32::MAX as usize
        ));
        // More than 8 compressed bytes can expand to: refused for images too (the fuzzer's
        // find: a 4 GiB allocation from an 11-byte snapshot).
        let mut payload = vec![LZ4];
        payload.extend_from_slice(&4_112_842_843u32.to_le_bytes());
        payload.extend_from_slice(&[0; 8]);
        assert!(matches!(
            decode_image(&payload),
            Err(WireError::TooLarge(4_112_842_843, allowed)) if allowed == 8 * 255 + 16
        ));
    }

    fn numbered(n: u64) -> Header {
        Header {
            origin: Some((format!("b-18eedfb66c48fa65-{}", n % 3), n)),
            deadline_micros: Some(1_764_590_005_000_000 + n as i64),
        }
    }

    #[test]
    fn a_message_of_several_inputs_gives_back_each_with_its_header_in_order() {
        let published: Vec<(Input, Header)> = (0..5)
            .map(|n| {
                let input = match n {
                    // Large enough to be compressed on its own.
                    2 => Input::Events((0..100).map(|_| event("web-1", Some("ok"))).collect()),
                    3 => Input::Tick { now_micros: 7 },
                    _ => Input::Events(vec![event(&format!("h{n}"), Some("critical"))]),
                };
                (input, numbered(n))
            })
            .collect();
        let encoded: Vec<bytes::Bytes> = published
            .iter()
            .map(|(input, header)| encode_published(input, header))
            .collect();
        assert_eq!(encoded[2][0], LZ4, "each input framed on its own");
        let message = encode_message(&encoded);
        assert_eq!(message[0], BUNDLE);
        assert_eq!(
            message.len(),
            1 + encoded.iter().map(|e| message_cost(e.len())).sum::<usize>()
        );
        let split = split_message(&message).unwrap();
        assert_eq!(split, encoded.iter().map(|e| &e[..]).collect::<Vec<_>>());
        let back: Vec<(Input, Header)> = decode_message(&message)
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(back, published);
        // A single input is its own message: what ticks and tools publish, read the same way.
        let one = encode_message(&encoded[..1]);
        assert_eq!(one, encoded[0]);
        assert_eq!(decode_message(&one).unwrap().len(), 1);
        assert_eq!(decode_published(&one).unwrap(), published[0]);
        // No inputs: a message that applies nothing.
        assert!(decode_message(&encode_message(&[])).unwrap().is_empty());
    }

    #[test]
    fn a_bad_input_is_an_error_in_its_place_a_bad_message_as_a_whole() {
        let good = encode_published(&Input::Events(vec![event("a", Some("ok"))]), &numbered(1));
        let message = encode_message(&[good.clone(), bytes::Bytes::from_static(&[0xff, 1]), good]);
        let read = decode_message(&message).unwrap();
        assert_eq!(read.len(), 3);
        assert!(read[0].is_ok() && read[2].is_ok());
        assert!(matches!(read[1], Err(WireError::Format(0xff))));
        // An input announcing more bytes than the message has left.
        let mut truncated = message.to_vec();
        truncated.truncate(message.len() - 1);
        assert!(matches!(
            decode_message(&truncated),
            Err(WireError::Truncated(_, _))
        ));
        // A field other than the inputs'.
        assert!(matches!(
            decode_message(&[BUNDLE, 0x12, 0x01, 0x00]),
            Err(WireError::Field(2))
        ));
        // More inputs than a message may hold, however small: refused before they are listed.
        let mut many = vec![BUNDLE];
        for _ in 0..=MAX_READ_INPUTS {
            many.extend_from_slice(&[0x0a, 0x00]);
        }
        assert!(matches!(
            split_message(&many),
            Err(WireError::TooManyInputs(MAX_READ_INPUTS))
        ));
        many.truncate(many.len() - 2);
        assert_eq!(split_message(&many).unwrap().len(), MAX_READ_INPUTS);
    }

    #[test]
    fn the_inputs_of_a_message_share_one_decompression_budget() {
        let batch = Input::Events((0..100).map(|_| event("web-1", Some("ok"))).collect());
        let framed = encode_published(&batch, &numbered(1));
        assert_eq!(framed[0], LZ4);
        let size = {
            let (buf, start) = encode_body(&batch);
            buf.len() - start
        };
        // Each input takes what it decompresses to from the budget …
        let mut budget = 2 * size + size / 2;
        decode_entry(&framed, &mut budget).unwrap();
        assert!(budget < 2 * size && budget >= size, "{budget} of {size}");
        decode_entry(&framed, &mut budget).unwrap();
        // … and one past what is left is refused before anything is allocated for it.
        assert!(matches!(
            decode_entry(&framed, &mut budget),
            Err(WireError::TooLarge(_, _))
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_input(&[0xff, 0xff, 0xff]).is_err());
        assert!(decode_input(&[]).is_err());
        assert!(decode_image(&[0x0a, 0xff]).is_err());
    }
}
