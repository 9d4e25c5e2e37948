//! The writing half's state: the replies encoded and not yet written, and the transitions that
//! turn each reply slot — once what it waits for has come — into bytes, decided without a
//! socket. The writer task (`super`) waits (flushing what is ready first), writes and closes;
//! which bytes a reply becomes, how many `ok`s a batch is owed and when, and which answers close
//! the connection are decided here and tested below:
//!
//! ```text
//!   Ready ─▶ reply                          Fatal / Foreign ─▶ reply, close
//!   Pending ─▶ wait Applied ─┬─ Done(ok) ─▶ one ok per Msg
//!                            ├─ Done(refused: index full, storage, …) ─▶ one error per Msg, go on
//!                            ├─ Done(other error) / engine gone ─▶ error, close
//!                            └─ Changed ─▶ ok per Msg before the first change ─▶ wait Durable ─▶ the rest
//!   Query ─▶ wait Snapshot ─▶ the matching events (or "too large"); engine gone ─▶ error, close
//! ```

use std::time::Instant;

use bytes::{BufMut, BytesMut};
use tokio::sync::oneshot::{self, error::RecvError};
use tokio::sync::OwnedSemaphorePermit;

use super::{error_msg, ok_msg, MsgSizes, Reply};
use crate::engine::{Ack, Applied, EngineError, Snapshot};
use crate::event::convert;
use crate::ingest::frame;
use crate::query::Query;

/// Replies are written to the socket once this much is buffered, even if more are ready.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// What a reply slot waits for before it can be encoded.
pub(super) enum Wait {
    /// The engine's answer to a batch of these Msgs.
    Applied(oneshot::Receiver<Applied>, MsgSizes, Instant),
    /// The durability of a batch's first change; this many of its Msgs are still owed.
    Durable(oneshot::Receiver<Ack>, usize, Instant),
    /// A query's snapshot.
    Snapshot(oneshot::Receiver<Snapshot>, Query),
}

/// What [`Wait`] got.
pub(super) enum Came {
    Applied(Result<Applied, RecvError>, MsgSizes, Instant),
    Durable(Result<Ack, RecvError>, usize, Instant),
    Snapshot(Result<Snapshot, RecvError>, Query),
}

/// What the writer does after a transition.
#[derive(Debug)]
pub(super) enum Step {
    /// Wait for this (flushing what is buffered first, if it is not there yet), then call
    /// [`ReplyState::came`].
    Wait(Wait),
    /// The reply is buffered; `acked` is when the batch it answers was read (for
    /// `statecast_tcp_ack_seconds`), if it answers one.
    Done { acked: Option<Instant> },
    /// The reply is buffered: write it and close the connection.
    Close { acked: Option<Instant> },
}

impl std::fmt::Debug for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wait::Applied(_, msgs, _) => write!(f, "Applied({} msgs)", msgs.count),
            Wait::Durable(_, owed, _) => write!(f, "Durable({owed} msgs owed)"),
            Wait::Snapshot(..) => write!(f, "Snapshot"),
        }
    }
}

/// One connection's replies not yet written; see the module doc.
pub(super) struct ReplyState {
    out: BytesMut,
    /// `ok`, encoded once: a pipelining client gets thousands.
    ok_frame: BytesMut,
    max_frame_bytes: usize,
}

impl ReplyState {
    pub(super) fn new(max_frame_bytes: usize) -> Self {
        let mut ok_frame = BytesMut::new();
        frame::encode(&ok_msg(), &mut ok_frame);
        Self {
            out: BytesMut::with_capacity(4096),
            ok_frame,
            max_frame_bytes,
        }
    }

    /// The bytes to write.
    pub(super) fn out(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// Whether enough is buffered to write it now, even if more replies are ready.
    pub(super) fn full(&self) -> bool {
        self.out.len() >= WRITE_BATCH_BYTES
    }

    /// Starts answering the next reply slot. A query's permit is handed back: the writer holds
    /// it until the reply is written or buffered.
    pub(super) fn begin(&mut self, reply: Reply) -> (Step, Option<OwnedSemaphorePermit>) {
        let step = match reply {
            Reply::Ready(msg) => {
                frame::encode(&msg, &mut self.out);
                Step::Done { acked: None }
            }
            Reply::Fatal(msg) => {
                frame::encode(&msg, &mut self.out);
                Step::Close { acked: None }
            }
            Reply::Foreign(bytes) => {
                self.out.extend_from_slice(bytes);
                Step::Close { acked: None }
            }
            Reply::Pending(applied, msgs, read_at) => {
                Step::Wait(Wait::Applied(applied, msgs, read_at))
            }
            Reply::Query(snapshot, query, permit) => {
                return (Step::Wait(Wait::Snapshot(snapshot, query)), Some(permit));
            }
        };
        (step, None)
    }

    /// What a reply waited for came.
    pub(super) fn came(&mut self, came: Came) -> Step {
        match came {
            Came::Applied(applied, msgs, read_at) => match applied {
                Err(_) => self.answer(Err(EngineError::Closed), msgs.count, read_at),
                Ok(Applied::Done(ack)) => self.answer(ack, msgs.count, read_at),
                // Only operator actions are answered so; never a batch of events.
                Ok(Applied::Action { .. }) => {
                    self.answer(Err(EngineError::Closed), msgs.count, read_at)
                }
                Ok(Applied::Changed {
                    first_change,
                    durable,
                }) => {
                    // The Msgs before the first change are answered now: the writer sends them
                    // while the change is made durable.
                    let answered = msgs.before(first_change);
                    for _ in 0..answered {
                        self.out.extend_from_slice(&self.ok_frame);
                    }
                    Step::Wait(Wait::Durable(durable, msgs.count - answered, read_at))
                }
            },
            Came::Durable(ack, unanswered, read_at) => {
                self.answer(ack.unwrap_or(Err(EngineError::Closed)), unanswered, read_at)
            }
            Came::Snapshot(Ok(snapshot), query) => {
                // Encoded straight into the output; the snapshot goes right after.
                if let Err(too_large) =
                    encode_query_reply(&snapshot, &query, self.max_frame_bytes, &mut self.out)
                {
                    frame::encode(&error_msg(too_large), &mut self.out);
                }
                Step::Done { acked: None }
            }
            Came::Snapshot(Err(_), _) => {
                frame::encode(&error_msg(EngineError::Closed.to_string()), &mut self.out);
                Step::Close { acked: None }
            }
        }
    }

    /// A batch's answer for the `unanswered` Msgs of it still owed one.
    fn answer(&mut self, ack: Ack, unanswered: usize, read_at: Instant) -> Step {
        let acked = Some(read_at);
        match ack {
            Ok(()) => {
                // One `ok` per Msg of the batch, in order.
                for _ in 0..unanswered.max(1) {
                    self.out.extend_from_slice(&self.ok_frame);
                }
                Step::Done { acked }
            }
            // Nothing of the batch was applied (index full), or it is not stored yet (storage
            // failing): each of its Msgs is told so, and the connection goes on — closing it
            // would only make clients reconnect in a loop while the disk is full.
            Err(
                error @ (EngineError::IndexFull { .. }
                | EngineError::Storage(_)
                | EngineError::NotApplied(_)
                | EngineError::Unconfirmed(_)),
            ) => {
                let refused = error_msg(error.to_string());
                for _ in 0..unanswered.max(1) {
                    frame::encode(&refused, &mut self.out);
                }
                Step::Done { acked }
            }
            Err(error) => {
                frame::encode(&error_msg(error.to_string()), &mut self.out);
                Step::Close { acked }
            }
        }
    }
}

/// Appends Riemann's answer to a query as one frame: `ok` and every matching indexed event,
/// encoded straight from the snapshot (no intermediate `Msg` holding a copy of each event).
/// A result larger than the frame limit is not sent: the error says how large it was.
fn encode_query_reply(
    snapshot: &Snapshot,
    query: &Query,
    max_frame_bytes: usize,
    out: &mut BytesMut,
) -> Result<(), String> {
    use prost::encoding::{bool as pbool, encode_key, encode_varint, encoded_len_varint, WireType};
    let start = out.len();
    out.put_u32(0); // the length, filled in below
    pbool::encode(2, &true, out);
    let mut body_len = out.len() - start - 4;
    let mut event = Vec::new();
    let match_all = query.is_match_all();
    for e in snapshot.events.iter() {
        if !match_all && !query.matches(e) {
            continue;
        }
        event.clear();
        convert::encode_event(e, &mut event);
        body_len += 1 + encoded_len_varint(event.len() as u64) + event.len();
        // Past the limit, keep counting (to say how large) but stop buffering.
        if body_len <= max_frame_bytes {
            encode_key(6, WireType::LengthDelimited, out);
            encode_varint(event.len() as u64, out);
            out.extend_from_slice(&event);
        }
    }
    if body_len > max_frame_bytes {
        out.truncate(start);
        return Err(format!(
            "query result of {body_len} bytes exceeds the {max_frame_bytes}-byte frame limit (--max-frame-bytes); narrow the query"
        ));
    }
    // At most the frame limit, which fits the 4-byte length (the flag is a usize, but the
    // decoder's own frames are never larger than u32::MAX either).
    let len = u32::try_from(body_len).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests;
