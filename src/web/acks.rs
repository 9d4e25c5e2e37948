//! The body of `GET /api/acks`: the acks a reader's filter can see, streamed.
//!
//! Only the acks of keys whose indexed event (with a state) the `query` matches are sent — a
//! filter that matches nothing gets none, as on the websocket snapshot. The answer is written a
//! chunk at a time as the client reads, from the snapshot's acks: 50,000 acks cost one chunk of
//! memory per reader, not a JSON tree of them (8 concurrent readers held 1.78 GiB that way).

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::action::AckInfo;
use crate::broadcast::{is_visible, visible_keys};
use crate::change::Snapshot;
use crate::protocol::Ack;
use crate::query::Query;

/// Bytes serialized before a chunk is handed to the connection.
const CHUNK_BYTES: usize = 64 * 1024;

/// `{"acks":[ACK…]}` of the acks `filter` can see (`None`: all), streamed.
pub(crate) fn response(snapshot: Snapshot, filter: Option<Query>) -> Response {
    let Snapshot {
        events, actions, ..
    } = snapshot;
    let mut acks = actions.acks;
    if let Some(query) = &filter {
        let visible = visible_keys(&events, |e| e.state.is_some() && query.matches(e));
        acks.retain(|ack| is_visible(Some(&visible), &ack.host, &ack.service));
    }
    drop(events);
    ([(header::CONTENT_TYPE, "application/json")], body(acks)).into_response()
}

/// A body that serializes the next chunk only when the connection has sent the previous one.
fn body(acks: Vec<AckInfo>) -> Body {
    let chunks = futures_util::stream::unfold(Some(Chunks::new(acks)), |chunks| async move {
        let mut chunks = chunks?;
        let (bytes, done) = chunks.next_chunk();
        Some((Ok::<_, Infallible>(bytes), (!done).then_some(chunks)))
    });
    Body::from_stream(chunks)
}

/// `{"acks":[…]}` a chunk at a time.
struct Chunks {
    acks: std::vec::IntoIter<AckInfo>,
    opened: bool,
    wrote_one: bool,
}

impl Chunks {
    fn new(acks: Vec<AckInfo>) -> Self {
        Self {
            acks: acks.into_iter(),
            opened: false,
            wrote_one: false,
        }
    }

    /// The next chunk, and whether it is the last.
    fn next_chunk(&mut self) -> (Bytes, bool) {
        let mut out = Vec::with_capacity(CHUNK_BYTES + 2048);
        if !self.opened {
            self.opened = true;
            out.extend_from_slice(b"{\"acks\":[");
        }
        while out.len() < CHUNK_BYTES {
            let Some(ack) = self.acks.next() else {
                out.extend_from_slice(b"]}");
                return (Bytes::from(out), true);
            };
            if self.wrote_one {
                out.push(b',');
            }
            self.wrote_one = true;
            // Writing a `Value` into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, &Ack(&ack));
        }
        (Bytes::from(out), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acks(n: usize) -> Vec<AckInfo> {
        (0..n)
            .map(|i| AckInfo {
                host: Some(format!("h{i}")),
                service: None,
                note: "n".repeat(200),
                by: "ann".into(),
                at: 0,
                expires_at: None,
            })
            .collect()
    }

    fn drain(mut chunks: Chunks) -> (serde_json::Value, usize) {
        let mut out = Vec::new();
        let mut count = 0;
        loop {
            count += 1;
            let (bytes, done) = chunks.next_chunk();
            out.extend_from_slice(&bytes);
            if done {
                return (serde_json::from_slice(&out).expect("valid JSON"), count);
            }
        }
    }

    #[test]
    fn the_acks_are_one_json_object_in_many_chunks() {
        assert_eq!(
            drain(Chunks::new(Vec::new())).0,
            serde_json::json!({"acks": []})
        );
        let all = acks(2000);
        let expected: Vec<_> = all
            .iter()
            .map(|a| serde_json::to_value(Ack(a)).unwrap())
            .collect();
        let (value, chunks) = drain(Chunks::new(all));
        assert_eq!(value, serde_json::json!({ "acks": expected }));
        assert!(chunks > 4, "{chunks} chunks");
    }
}
