//! Process-wide counters: what an operator asks "is it working?" with.
//!
//! Plain atomics, written by whichever task sees the event and read by the stats ticker and
//! `/metrics`. Relaxed ordering is enough: these are tallies, never used to synchronise.

mod alerts;
mod cluster;
mod exposition;
mod histogram;
mod process;
mod refusals;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use alerts::{AlertMetrics, AlertmanagerFigures, AlertmanagerStats};
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
    /// `metrics` frames queued for dashboards, and the values they carried.
    pub ws_metrics_frames: AtomicU64,
    pub ws_metrics_values: AtomicU64,
    /// Values left for a later interval after each of those frames (`--metrics-max-bytes`).
    pub ws_metrics_deferred: AtomicU64,
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
    /// Alerting's figures (rendered only with `--alertmanager`).
    pub alerts: AlertMetrics,
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

    /// Prometheus text exposition format: the table of [`exposition::FAMILIES`], in order.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        exposition::render(self, exposition::FAMILIES, &mut out);
        out
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
