//! What a websocket-ingest client has sent but not yet finished: watched on the bytes as they
//! are read, below the websocket library, which keeps an unfinished message to itself.
//!
//! [`Inbound`] wraps the connection's socket and follows the client's frames (their headers
//! only, never the payload): it knows when a data message started and how many of its bytes
//! have arrived. Two rules follow from that, and nothing else here:
//!
//! - A message must be complete within `--http-body-timeout` of its first byte, whatever else
//!   arrives meanwhile: pings (answered by the library) keep the connection alive, not a message
//!   left half-sent (200 connections holding 4 MiB each held 1.15 GiB for as long as they
//!   pinged).
//! - The bytes of unfinished messages of every connection together are bounded by one
//!   [`UnfinishedBudget`]; a read that would pass it fails the connection.
//!
//! Either failure is a read error carrying [`Refused`], which the reader turns into a close
//! frame. A connection closing lingers through [`Inbound::discard_input`], which reads below
//! the library and keeps nothing.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Why the watcher failed a connection's read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub(crate) enum Refused {
    #[error("message not completed within {0:?} of its first byte (--http-body-timeout)")]
    TooSlow(Duration),
    #[error("unfinished messages of all connections exceed {0} bytes; try again later")]
    OverBudget(usize),
}

impl Refused {
    /// The close code: 1008 (policy) for a slow message, 1013 (try again later) for a full
    /// budget, which is not this client's fault alone.
    pub(crate) fn close_code(&self) -> u16 {
        match self {
            Refused::TooSlow(_) => 1008,
            Refused::OverBudget(_) => 1013,
        }
    }

    /// The [`Refused`] behind a read error, if the watcher made it.
    pub(crate) fn of(error: &io::Error) -> Option<&Refused> {
        error.get_ref()?.downcast_ref::<Refused>()
    }
}

/// Bytes of unfinished websocket-ingest messages, all connections together, and their bound.
#[derive(Debug)]
pub(crate) struct UnfinishedBudget {
    held: AtomicUsize,
    limit: usize,
}

impl UnfinishedBudget {
    /// Sixteen messages of the largest size (`--max-body-bytes`; 64 MiB by default): room for
    /// many large batches arriving at once, a bound far below what unfinished messages could
    /// otherwise pin.
    pub(crate) fn for_max_message(max_message: usize) -> Arc<Self> {
        Arc::new(Self {
            held: AtomicUsize::new(0),
            limit: max_message.saturating_mul(16),
        })
    }

    /// A budget of exactly `limit` bytes (tests).
    #[cfg(test)]
    fn with_limit(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            held: AtomicUsize::new(0),
            limit,
        })
    }

    fn take(&self, bytes: usize) -> bool {
        let before = self.held.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes > self.limit {
            self.held.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn give(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// The client's socket, watched (see the module doc).
pub(crate) struct Inbound<S> {
    io: S,
    frames: FrameWatch,
    budget: Arc<UnfinishedBudget>,
    /// Of the budget, what this connection holds: the unfinished message's bytes.
    counted: usize,
    timeout: Duration,
    /// Armed while a message is unfinished: when it must be complete.
    deadline: Option<Pin<Box<Sleep>>>,
    refused: Option<Refused>,
}

impl<S> Inbound<S> {
    pub(crate) fn new(io: S, budget: Arc<UnfinishedBudget>, timeout: Duration) -> Self {
        Self {
            io,
            frames: FrameWatch::default(),
            budget,
            counted: 0,
            timeout,
            deadline: None,
            refused: None,
        }
    }

    fn refuse(&mut self, why: Refused) -> io::Error {
        self.refused = Some(why.clone());
        io::Error::other(why)
    }

    /// Follows the bytes just read: the budget and the deadline follow the unfinished message.
    fn watch(&mut self, read: &[u8]) -> io::Result<()> {
        let finished = self.frames.feed(read);
        let unfinished = usize::try_from(self.frames.message).unwrap_or(usize::MAX);
        if unfinished > self.counted {
            if !self.budget.take(unfinished - self.counted) {
                return Err(self.refuse(Refused::OverBudget(self.budget.limit)));
            }
        } else {
            self.budget.give(self.counted - unfinished);
        }
        self.counted = unfinished;
        if unfinished == 0 {
            self.deadline = None;
        } else if finished || self.deadline.is_none() {
            // A message began (after any that finished in this read): its own deadline.
            self.deadline = Some(Box::pin(tokio::time::sleep(self.timeout)));
        }
        Ok(())
    }
}

impl<S> Drop for Inbound<S> {
    fn drop(&mut self) {
        self.budget.give(self.counted);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Inbound<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(why) = this.refused.clone() {
            return Poll::Ready(Err(io::Error::other(why)));
        }
        // Polled first, so a client that sends nothing more is still woken for its deadline.
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(this.refuse(Refused::TooSlow(this.timeout))));
            }
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        this.watch(&buf.filled()[before..])?;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> Inbound<S> {
    /// Reads and drops what the client sends until it ends (EOF or an error): a closing
    /// connection's linger, which buffers nothing.
    pub(crate) async fn discard_input(&mut self) {
        use tokio::io::AsyncReadExt;
        let mut scratch = [0u8; 4096];
        while matches!(self.io.read(&mut scratch).await, Ok(n) if n > 0) {}
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Inbound<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Follows client frames (RFC 6455 §5.2) through their headers; payloads are only counted.
/// Malformed frames are the websocket library's to refuse; this only must not misbehave on them.
#[derive(Default)]
struct FrameWatch {
    header: [u8; 14],
    /// Header bytes collected of the current frame.
    have: usize,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// The current frame is a data frame (text, binary, continuation), not a control frame.
    data: bool,
    /// The current frame ends its message.
    fin: bool,
    /// Bytes (headers and payloads) of the unfinished data message; 0 when none is.
    message: u64,
}

impl FrameWatch {
    /// Follows `bytes`; true when a data message was completed in them.
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        let mut finished = false;
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len() as u64);
                if self.data {
                    self.message += n;
                }
                self.payload_left -= n;
                bytes = &bytes[n as usize..];
                if self.payload_left == 0 {
                    finished |= self.frame_done();
                }
                continue;
            }
            self.header[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if self.have >= 2 && self.have == self.header_len() {
                self.start_frame();
                if self.payload_left == 0 {
                    finished |= self.frame_done();
                }
            }
        }
        finished
    }

    /// The length of the header being collected (at least its first two bytes are in).
    fn header_len(&self) -> usize {
        let extended = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        2 + extended + mask
    }

    fn start_frame(&mut self) {
        let h = &self.header;
        self.fin = h[0] & 0x80 != 0;
        self.data = h[0] & 0x0f < 0x8;
        self.payload_left = match h[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
            n => u64::from(n),
        };
        if self.data {
            self.message += self.have as u64;
        }
        self.have = 0;
    }

    /// The current frame is complete; true when it completed a data message.
    fn frame_done(&mut self) -> bool {
        if self.data && self.fin {
            self.message = 0;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: usize) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload {
            0..=125 => out.push(0x80 | payload as u8),
            126..=65535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(payload as u16).to_be_bytes());
            }
            _ => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(payload as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&[1, 2, 3, 4]);
        out.extend(std::iter::repeat_n(b'x', payload));
        out
    }

    #[test]
    fn a_fragmented_message_is_unfinished_until_its_last_frame_whatever_pings_come_between() {
        let mut watch = FrameWatch::default();
        let first = frame(false, 0x1, 300);
        assert!(!watch.feed(&first[..3]), "a split header");
        assert!(!watch.feed(&first[3..]));
        assert_eq!(watch.message, first.len() as u64);
        assert!(
            !watch.feed(&frame(true, 0x9, 125)),
            "a ping is not a data message"
        );
        assert_eq!(watch.message, first.len() as u64);
        let last = frame(true, 0x0, 70_000);
        assert!(watch.feed(&last));
        assert_eq!(watch.message, 0);
        // Whole messages one after another, in one read, end finished.
        let mut two = frame(true, 0x2, 10);
        two.extend(frame(true, 0x1, 0));
        assert!(watch.feed(&two));
        assert_eq!(watch.message, 0);
    }

    #[tokio::test]
    async fn the_budget_is_shared_and_returned_and_the_deadline_is_not_extended_by_pings() {
        let budget = UnfinishedBudget::with_limit(1000);
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut a = Inbound::new(server, Arc::clone(&budget), Duration::from_secs(3600));
        let mut buf = vec![0u8; 1 << 16];
        use tokio::io::AsyncWriteExt;
        client.write_all(&frame(false, 0x1, 600)).await.unwrap();
        assert!(a.read(&mut buf).await.is_ok());
        assert_eq!(
            budget.held.load(Ordering::Relaxed),
            608,
            "header and payload"
        );
        let (mut client_b, server_b) = tokio::io::duplex(1 << 20);
        let mut b = Inbound::new(server_b, Arc::clone(&budget), Duration::from_secs(3600));
        client_b.write_all(&frame(false, 0x1, 600)).await.unwrap();
        let error = b.read(&mut buf).await.unwrap_err();
        assert_eq!(Refused::of(&error), Some(&Refused::OverBudget(1000)));
        drop(b);
        drop(a);
        assert_eq!(budget.held.load(Ordering::Relaxed), 0, "returned on drop");

        tokio::time::pause();
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut c = Inbound::new(server, Arc::clone(&budget), Duration::from_secs(30));
        client.write_all(&frame(false, 0x1, 10)).await.unwrap();
        assert!(c.read(&mut buf).await.is_ok());
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(5)).await;
            client.write_all(&frame(true, 0x9, 4)).await.unwrap();
            match c.read(&mut buf).await {
                Ok(_) => continue,
                Err(error) => {
                    assert_eq!(
                        Refused::of(&error),
                        Some(&Refused::TooSlow(Duration::from_secs(30)))
                    );
                    return;
                }
            }
        }
        panic!("pings kept an unfinished message alive past its deadline");
    }
}
