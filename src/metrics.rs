//! Process-wide counters: what an operator asks "is it working?" with.
//!
//! Plain atomics, written by whichever task sees the event and read by the stats ticker and
//! `/metrics`. Relaxed ordering is enough: these are tallies, never used to synchronise.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counters {
    /// Events accepted by the engine, from every transport.
    pub events: AtomicU64,
    /// Events refused because they would have added keys past `--max-keys`.
    pub events_refused: AtomicU64,
    /// State changes detected (equals the last `seq`).
    pub changes: AtomicU64,
    pub tcp_connections: AtomicU64,
    pub tcp_refused: AtomicU64,
    pub tcp_bad_frames: AtomicU64,
    pub udp_datagrams: AtomicU64,
    pub udp_malformed: AtomicU64,
    pub http_rejected: AtomicU64,
    pub ws_clients: AtomicU64,
    pub ws_resyncs: AtomicU64,
    pub ws_slow_closed: AtomicU64,
    /// HTTP connections refused at `--max-http-connections`.
    pub http_refused: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Prometheus text exposition format.
    pub fn render_prometheus(&self) -> String {
        let rows: [(&str, &str, &str, &AtomicU64); 13] = [
            (
                "statecast_events_total",
                "counter",
                "Events accepted by the engine.",
                &self.events,
            ),
            (
                "statecast_events_refused_total",
                "counter",
                "Events refused because they would have added keys past --max-keys.",
                &self.events_refused,
            ),
            (
                "statecast_changes_total",
                "counter",
                "State changes detected.",
                &self.changes,
            ),
            (
                "statecast_tcp_connections_total",
                "counter",
                "Riemann TCP connections accepted.",
                &self.tcp_connections,
            ),
            (
                "statecast_tcp_refused_total",
                "counter",
                "Riemann TCP connections refused at the connection limit.",
                &self.tcp_refused,
            ),
            (
                "statecast_tcp_bad_frames_total",
                "counter",
                "Riemann TCP frames rejected (oversize or undecodable).",
                &self.tcp_bad_frames,
            ),
            (
                "statecast_udp_datagrams_total",
                "counter",
                "Riemann UDP datagrams received.",
                &self.udp_datagrams,
            ),
            (
                "statecast_udp_malformed_total",
                "counter",
                "Riemann UDP datagrams dropped as oversize or undecodable.",
                &self.udp_malformed,
            ),
            (
                "statecast_http_rejected_total",
                "counter",
                "JSON event posts rejected.",
                &self.http_rejected,
            ),
            (
                "statecast_ws_clients",
                "gauge",
                "Connected dashboard websockets.",
                &self.ws_clients,
            ),
            (
                "statecast_ws_resyncs_total",
                "counter",
                "Dashboards resynchronised with a fresh snapshot after falling behind.",
                &self.ws_resyncs,
            ),
            (
                "statecast_ws_slow_closed_total",
                "counter",
                "Dashboards closed as slow consumers.",
                &self.ws_slow_closed,
            ),
            (
                "statecast_http_refused_total",
                "counter",
                "HTTP connections refused at the connection limit.",
                &self.http_refused,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                Self::get(value)
            );
        }
        out
    }
}
