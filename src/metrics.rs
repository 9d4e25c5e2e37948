//! Process-wide counters: what an operator asks "is it working?" with.
//!
//! Plain atomics, written by whichever task sees the event and read by the stats ticker and
//! `/metrics`. Relaxed ordering is enough: these are tallies, never used to synchronise.

mod cluster;
mod histogram;
mod process;
mod refusals;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use cluster::ClusterMetrics;
pub use histogram::Histogram;
pub use refusals::{Refusal, Refusals, LOG_INTERVAL as REFUSAL_LOG_INTERVAL};

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
    /// Riemann-style `/index` websocket streams open (dashboards of the `/ws` kind are
    /// `ws_clients`).
    pub index_ws_clients: AtomicU64,
    /// `/index` server-sent event streams open.
    pub sse_clients: AtomicU64,
    /// (host, service) keys in the index, set by the engine after each batch and sweep.
    pub index_keys: AtomicU64,
    /// The committer's change-log writes (one `O_DSYNC` write per group commit).
    pub commit_seconds: Histogram,
    /// Riemann TCP: from the read that brought a batch of Msgs to its answer being ready to
    /// write (with a change: once it is durable).
    pub tcp_ack_seconds: Histogram,
    /// Requests refused by the access rules and the dashboard connection limit.
    pub refusals: Refusals,
    /// Cluster mode's figures (rendered only in cluster mode).
    pub cluster: ClusterMetrics,
    /// Changes the start replayed from the change log, damaged stretches it skipped there, and
    /// 1 if the log ended with a damaged record.
    pub log_replayed: AtomicU64,
    pub log_skipped: AtomicU64,
    pub log_damaged_tail: AtomicU64,
    /// SIGHUPs handled (each reloads what is reloadable; none stops the server).
    pub sighups: AtomicU64,
    /// Riemann TCP connections closed by a read deadline, by [`TcpTimeout`].
    pub tcp_timeouts: [AtomicU64; 3],
    /// Riemann TLS connections refused because `--max-tls-handshakes` were in progress.
    pub tls_handshakes_refused: AtomicU64,
    /// Whole-index reads (`/api/state`) answered 503 past `--max-large-reads`.
    pub large_reads_refused: AtomicU64,
    /// Riemann TCP clients dropped for not reading their replies (`--tcp-write-timeout`).
    pub tcp_write_timeouts: AtomicU64,
    /// Riemann TCP connections closed for speaking another protocol, by [`ForeignProtocol`].
    pub tcp_foreign: [AtomicU64; 2],
    /// Riemann TLS handshakes that failed (a refused client certificate, a timeout, not TLS).
    pub tls_handshakes_failed: AtomicU64,
    /// SIGHUPs whose TLS certificate reload failed (the previous certificate keeps serving).
    pub tls_reload_failures: AtomicU64,
    /// 1 when the connection limits do not fit in the open-file limit (the start warned).
    pub fd_budget_exceeded: AtomicU64,
}

/// The protocol a client spoke on the Riemann TCP port instead of protobuf: the `protocol`
/// label (the discriminant indexes `Counters::tcp_foreign`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignProtocol {
    Tls,
    Http,
}

impl ForeignProtocol {
    pub const ALL: [ForeignProtocol; 2] = [ForeignProtocol::Tls, ForeignProtocol::Http];

    pub fn label(self) -> &'static str {
        match self {
            ForeignProtocol::Tls => "tls",
            ForeignProtocol::Http => "http",
        }
    }
}

/// Why a Riemann TCP connection was closed by a deadline: the `reason` label (the discriminant
/// indexes `Counters::tcp_timeouts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpTimeout {
    /// No complete frame within `--tcp-first-frame-timeout` of the connection (or handshake).
    FirstFrame,
    /// A started frame not completed within `--tcp-frame-timeout`.
    Frame,
    /// No frame at all within `--tcp-idle-timeout` between messages.
    Idle,
}

impl TcpTimeout {
    pub const ALL: [TcpTimeout; 3] = [TcpTimeout::FirstFrame, TcpTimeout::Frame, TcpTimeout::Idle];

    pub fn label(self) -> &'static str {
        match self {
            TcpTimeout::FirstFrame => "first-frame",
            TcpTimeout::Frame => "frame",
            TcpTimeout::Idle => "idle",
        }
    }
}

/// Which dashboard endpoint a connection is counted under.
#[derive(Debug, Clone, Copy)]
pub enum Dashboard {
    IndexWebsocket,
    Sse,
}

/// Counts a dashboard connection while it lives: the gauge is right however it ends.
#[derive(Debug)]
pub struct Connected {
    counters: Arc<Counters>,
    which: Dashboard,
}

impl Connected {
    pub fn new(counters: &Arc<Counters>, which: Dashboard) -> Self {
        Counters::add(counters.gauge(which), 1);
        Self {
            counters: Arc::clone(counters),
            which,
        }
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.counters
            .gauge(self.which)
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn gauge(&self, which: Dashboard) -> &AtomicU64 {
        match which {
            Dashboard::IndexWebsocket => &self.index_ws_clients,
            Dashboard::Sse => &self.sse_clients,
        }
    }

    /// Prometheus text exposition format.
    pub fn render_prometheus(&self) -> String {
        let rows: [(&str, &str, &str, &AtomicU64); 16] = [
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
            (
                "statecast_store_log_replayed",
                "gauge",
                "Changes the start replayed from the change log (acknowledged after the last checkpoint).",
                &self.log_replayed,
            ),
            (
                "statecast_store_log_skipped",
                "gauge",
                "Damaged stretches the start skipped in the change log, valid records after them (the acknowledged changes they held are lost).",
                &self.log_skipped,
            ),
            (
                "statecast_store_log_damaged_tail",
                "gauge",
                "1 if the change log ended with a whole record whose checksum fails (a write cut short by a crash, or damage); 0 after a clean stop.",
                &self.log_damaged_tail,
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
        self.render_operability(&mut out);
        out
    }

    /// Build information, gauges with labels, histograms and process metrics.
    fn render_operability(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP statecast_build_info The running build: version and compiler.\n\
             # TYPE statecast_build_info gauge\n\
             statecast_build_info{{version=\"{}\",rustc=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            env!("STATECAST_RUSTC_VERSION"),
        );
        let _ = writeln!(
            out,
            "# HELP statecast_index_keys (host, service) keys in the index.\n\
             # TYPE statecast_index_keys gauge\n\
             statecast_index_keys {}",
            Self::get(&self.index_keys)
        );
        let _ = writeln!(
            out,
            "# HELP statecast_dashboards Connected dashboards per endpoint (/ws, /index websocket, /index server-sent events).\n\
             # TYPE statecast_dashboards gauge"
        );
        for (endpoint, value) in [
            ("ws", &self.ws_clients),
            ("index-ws", &self.index_ws_clients),
            ("sse", &self.sse_clients),
        ] {
            let _ = writeln!(
                out,
                "statecast_dashboards{{endpoint=\"{endpoint}\"}} {}",
                Self::get(value)
            );
        }
        let _ = writeln!(
            out,
            "# HELP statecast_refusals_total Requests refused: foreign origin, missing or wrong token, dashboard connection limit, Host not allowed.\n\
             # TYPE statecast_refusals_total counter"
        );
        for reason in Refusal::ALL {
            let _ = writeln!(
                out,
                "statecast_refusals_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.refusals.count(reason)
            );
        }
        self.commit_seconds.render(
            out,
            "statecast_commit_seconds",
            "Change-log writes of the committer (one synchronous write per group commit).",
        );
        self.tcp_ack_seconds.render(
            out,
            "statecast_tcp_ack_seconds",
            "Riemann TCP: from the read bringing Msgs to their answer (ok once applied, or once durable with a change).",
        );
        self.cluster.render(out);
        self.render_limits(out);
        process::render(out);
    }

    /// Signals handled and connections or reads turned away by a time or concurrency bound.
    fn render_limits(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP statecast_tcp_timeouts_total Riemann TCP connections closed by a deadline: no first frame (--tcp-first-frame-timeout), a frame left unfinished (--tcp-frame-timeout), idle (--tcp-idle-timeout).\n\
             # TYPE statecast_tcp_timeouts_total counter"
        );
        for (reason, value) in TcpTimeout::ALL.iter().zip(&self.tcp_timeouts) {
            let _ = writeln!(
                out,
                "statecast_tcp_timeouts_total{{reason=\"{}\"}} {}",
                reason.label(),
                Self::get(value)
            );
        }
        let _ = writeln!(
            out,
            "# HELP statecast_tcp_foreign_protocol_total Riemann TCP connections closed for speaking another protocol (TLS, HTTP) on the plain protobuf port.\n\
             # TYPE statecast_tcp_foreign_protocol_total counter"
        );
        for (protocol, value) in ForeignProtocol::ALL.iter().zip(&self.tcp_foreign) {
            let _ = writeln!(
                out,
                "statecast_tcp_foreign_protocol_total{{protocol=\"{}\"}} {}",
                protocol.label(),
                Self::get(value)
            );
        }
        Self::render_gauge(
            out,
            "statecast_fd_budget_exceeded",
            "1 if the connection limits plus 64 reserved descriptors exceed the open-file limit (process_max_fds): the start warned once.",
            Self::get(&self.fd_budget_exceeded),
        );
        for (name, help, value) in [
            (
                "statecast_tcp_write_timeouts_total",
                "Riemann TCP clients dropped for not reading their replies within --tcp-write-timeout.",
                &self.tcp_write_timeouts,
            ),
            (
                "statecast_tls_handshakes_failed_total",
                "Riemann TLS handshakes that failed (a client certificate refused, a timeout, not TLS).",
                &self.tls_handshakes_failed,
            ),
            (
                "statecast_tls_reload_failures_total",
                "SIGHUPs whose TLS certificate reload failed (the previous certificate keeps serving).",
                &self.tls_reload_failures,
            ),
            (
                "statecast_sighups_total",
                "SIGHUPs handled (TLS certificates reloaded when TLS is on; the server keeps serving).",
                &self.sighups,
            ),
            (
                "statecast_tls_handshakes_refused_total",
                "Riemann TLS connections refused because --max-tls-handshakes handshakes were in progress.",
                &self.tls_handshakes_refused,
            ),
            (
                "statecast_large_reads_refused_total",
                "Whole-index reads (/api/state) answered 503 past --max-large-reads.",
                &self.large_reads_refused,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                Self::get(value)
            );
        }
    }

    /// Counts a Riemann TCP connection closed for speaking `protocol`.
    pub fn tcp_foreign(&self, protocol: ForeignProtocol) {
        Self::add(&self.tcp_foreign[protocol as usize], 1);
    }

    /// Counts a Riemann TCP connection closed by `timeout`.
    pub fn tcp_timeout(&self, timeout: TcpTimeout) {
        Self::add(&self.tcp_timeouts[timeout as usize], 1);
    }

    /// One gauge line (with its HELP and TYPE) for values kept outside the counters.
    pub fn render_gauge(out: &mut String, name: &str, help: &str, value: u64) {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
}
