//! Shared helpers for the integration tests: a server on ephemeral loopback ports (in process,
//! or the real `statecast` binary), and real clients for each of its protocols, one module each.
//! Everything is re-exported here, so a test module says `use crate::common::*`.
//!
//! Every wait has a timeout and every missing tool is a failure, never a skip: `scripts/test`
//! installs `riemann-client` (riemann-c-client) and `ruby-riemann-client`.

#![allow(dead_code, unused_imports)]

mod alertmanager;
mod http;
mod nats;
mod prometheus;
mod riemann;
mod server;
mod tmpfs;
mod ws;

pub use alertmanager::*;
pub use http::*;
pub use nats::*;
pub use prometheus::*;
pub use riemann::*;
pub use server::*;
pub use tmpfs::*;
pub use ws::*;

use std::time::Duration;

/// How long any single expected thing (a reply, a frame, a process exit) may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A loopback TCP port for a helper process that must be told its port before it starts (NATS
/// servers and their routes, nginx), and that may need it again after a restart.
///
/// Why not "bind port 0, read it, release it": that port is in the kernel's ephemeral range, and
/// any connection opened meanwhile — by another test in this process, which runs tests in
/// parallel, or by anything else on the machine — may be given it as its local port before the
/// helper binds it ("address already in use": a cluster test failed so). Ports below the
/// ephemeral range are never handed out implicitly; each is checked free by binding it, and no
/// two calls in this process return the same one. Processes start at a pid-derived offset, so
/// concurrent test processes rarely probe the same ports.
pub fn reserved_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral_low.saturating_sub(LOW).max(1_000);
    let start = (std::process::id() % 64) * (span / 64);
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let Ok(port) = u16::try_from(LOW + (start + n) % span) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below the ephemeral range ({LOW}..{ephemeral_low})");
}
