//! Riemann protobuf over UDP: one `Msg` per datagram, no reply.
//!
//! UDP has no way to say "no": malformed, oversize or over-limit datagrams are dropped and
//! counted, never
//! fatal. When the engine queue is full this task waits, and the kernel's socket buffer absorbs
//! (or drops) what arrives meanwhile — that is UDP's contract, and it is what Riemann does too.

use prost::Message;
use tokio::net::UdpSocket;

use crate::engine::EngineHandle;
use crate::event::convert;
use crate::event::{now_micros, EventLimits};
use crate::lifecycle::Lifecycle;
use crate::metrics::Counters;
use crate::proto::Msg;

/// Receives datagrams until shutdown.
pub(crate) async fn serve(
    socket: UdpSocket,
    max_datagram_bytes: usize,
    limits: EventLimits,
    engine: EngineHandle,
    life: Lifecycle,
) {
    let counters = life.counters();
    // One byte more than the limit, so an oversize datagram is seen as such instead of being
    // silently truncated into something that might decode.
    let mut buf = vec![0u8; max_datagram_bytes + 1];
    loop {
        let received = tokio::select! {
            _ = life.shutdown().cancelled() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        let (len, peer) = match received {
            Ok(pair) => pair,
            Err(error) => {
                // ICMP errors and the like surface here; they are about one peer, not the socket.
                tracing::debug!(%error, "riemann udp receive failed");
                continue;
            }
        };
        Counters::add(&counters.udp_datagrams, 1);
        if len > max_datagram_bytes {
            Counters::add(&counters.udp_malformed, 1);
            tracing::debug!(%peer, limit = max_datagram_bytes, "dropping oversize riemann udp datagram");
            continue;
        }
        // The same per-Msg and per-event limits as TCP: a datagram is small, but one event with
        // thousands of attributes would still ride in every dashboard snapshot.
        if let Err(error) = convert::check_limits(&buf[..len], &limits) {
            Counters::add(&counters.udp_malformed, 1);
            tracing::debug!(%peer, %error, "dropping riemann udp datagram over a limit");
            continue;
        }
        let msg = match Msg::decode(&buf[..len]) {
            Ok(msg) => msg,
            Err(error) => {
                Counters::add(&counters.udp_malformed, 1);
                tracing::debug!(%peer, %error, "dropping undecodable riemann udp datagram");
                continue;
            }
        };
        if msg.events.is_empty() {
            continue;
        }
        let now = now_micros();
        let events = convert::events_from_proto(msg.events, now).collect();
        if engine.submit_unacknowledged(events).await.is_err() {
            return;
        }
    }
}
