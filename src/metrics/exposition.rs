//! What `/metrics` shows, as one table: each family's name, type and help next to where its
//! value is read, rendered by one loop.
//!
//! Why a table: adding a metric is one entry, and the `# HELP` / `# TYPE` lines cannot drift
//! from the value they describe (they used to be written by hand, a `writeln!` per family).
//! The order of the table is the order of the output.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;

use super::{process, Counters, ForeignProtocol, Histogram, Refusal, TcpTimeout};

/// A family's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Where a family's samples come from.
pub(super) enum Read {
    /// One unlabelled sample: an atomic of [`Counters`].
    Atomic(fn(&Counters) -> &AtomicU64),
    /// One sample per value of `label`: (label value, sample) in output order.
    Labelled {
        label: &'static str,
        samples: fn(&Counters) -> Vec<(&'static str, u64)>,
    },
    /// An info metric: constant labels (written as they stand), the value 1.
    Info(&'static str),
    /// A latency histogram (its buckets, sum and count).
    Histogram(fn(&Counters) -> &Histogram),
}

/// One entry of the table.
pub(super) enum Row {
    /// A family described here.
    Family {
        name: &'static str,
        kind: Kind,
        help: &'static str,
        read: Read,
    },
    /// Families a submodule renders whole, with their own help (cluster mode's, which shows
    /// only in cluster mode, and the process's, read from `/proc`), in this place.
    Section(fn(&Counters, &mut String)),
}

use Kind::{Counter, Gauge};
use Read::Atomic;

/// A family with one unlabelled sample.
const fn one(
    name: &'static str,
    kind: Kind,
    help: &'static str,
    value: fn(&Counters) -> &AtomicU64,
) -> Row {
    Row::Family {
        name,
        kind,
        help,
        read: Atomic(value),
    }
}

/// A family with a sample per label value.
const fn labelled(
    name: &'static str,
    kind: Kind,
    help: &'static str,
    label: &'static str,
    samples: fn(&Counters) -> Vec<(&'static str, u64)>,
) -> Row {
    Row::Family {
        name,
        kind,
        help,
        read: Read::Labelled { label, samples },
    }
}

/// A latency histogram family.
const fn histogram(
    name: &'static str,
    help: &'static str,
    value: fn(&Counters) -> &Histogram,
) -> Row {
    Row::Family {
        name,
        kind: Kind::Histogram,
        help,
        read: Read::Histogram(value),
    }
}

/// The labels of `statecast_build_info`, fixed at compile time.
const BUILD_LABELS: &str = concat!(
    "version=\"",
    env!("CARGO_PKG_VERSION"),
    "\",rustc=\"",
    env!("STATECAST_RUSTC_VERSION"),
    "\""
);

/// Everything `/metrics` renders from [`Counters`], in output order. Kept one family to a line
/// (not rustfmt's six): it is read, and added to, as a table.
#[rustfmt::skip]
pub(super) static FAMILIES: &[Row] = &[
    one("statecast_events_total", Counter, "Events accepted by the engine.", |c| &c.events),
    one("statecast_events_refused_total", Counter, "Events refused because they would have added keys past --max-keys.", |c| &c.events_refused),
    one("statecast_changes_total", Counter, "State changes detected.", |c| &c.changes),
    one("statecast_tcp_connections_total", Counter, "Riemann TCP connections accepted.", |c| &c.tcp_connections),
    one("statecast_tcp_refused_total", Counter, "Riemann TCP connections refused at the connection limit.", |c| &c.tcp_refused),
    one("statecast_tcp_bad_frames_total", Counter, "Riemann TCP frames rejected (oversize or undecodable).", |c| &c.tcp_bad_frames),
    one("statecast_udp_datagrams_total", Counter, "Riemann UDP datagrams received.", |c| &c.udp_datagrams),
    one("statecast_udp_malformed_total", Counter, "Riemann UDP datagrams dropped as oversize or undecodable.", |c| &c.udp_malformed),
    one("statecast_http_rejected_total", Counter, "JSON event posts rejected.", |c| &c.http_rejected),
    one("statecast_ws_clients", Gauge, "Connected dashboard websockets.", |c| &c.ws_clients),
    one("statecast_ws_resyncs_total", Counter, "Dashboards resynchronised with a fresh snapshot after falling behind.", |c| &c.ws_resyncs),
    one("statecast_ws_metrics_frames_total", Counter, "Live-value (metrics) frames queued for dashboards, at most one per dashboard and --metrics-interval.", |c| &c.ws_metrics_frames),
    one("statecast_ws_metrics_values_total", Counter, "Values carried by those metrics frames.", |c| &c.ws_metrics_values),
    one("statecast_ws_metrics_deferred_total", Counter, "Live values left for a later interval after each metrics frame (past --metrics-max-bytes), summed over dashboards.", |c| &c.ws_metrics_deferred),
    one("statecast_ws_slow_closed_total", Counter, "Dashboards closed as slow consumers.", |c| &c.ws_slow_closed),
    one("statecast_http_refused_total", Counter, "HTTP connections refused at the connection limit.", |c| &c.http_refused),
    one("statecast_store_log_replayed", Gauge, "Changes the start replayed from the change log (acknowledged after the last checkpoint).", |c| &c.log_replayed),
    one("statecast_store_log_skipped", Gauge, "Damaged stretches the start skipped in the change log, valid records after them (the acknowledged changes they held are lost).", |c| &c.log_skipped),
    one("statecast_store_log_damaged_tail", Gauge, "1 if the change log ended with a whole record whose checksum fails (a write cut short by a crash, or damage); 0 after a clean stop.", |c| &c.log_damaged_tail),
    Row::Family {
        name: "statecast_build_info",
        kind: Gauge,
        help: "The running build: version and compiler.",
        read: Read::Info(BUILD_LABELS),
    },
    one("statecast_index_keys", Gauge, "(host, service) keys in the index.", |c| &c.index_keys),
    labelled("statecast_dashboards", Gauge, "Connected dashboards per endpoint (/ws, /index websocket, /index server-sent events).", "endpoint", |c| {
        vec![
            ("ws", Counters::get(&c.ws_clients)),
            ("index-ws", Counters::get(&c.index_ws_clients)),
            ("sse", Counters::get(&c.sse_clients)),
        ]
    }),
    labelled("statecast_refusals_total", Counter, "Requests refused: foreign origin, missing or wrong token, dashboard connection limit, Host not allowed.", "reason", |c| {
        Refusal::ALL.iter().map(|&reason| (reason.label(), c.refusals.count(reason))).collect()
    }),
    histogram("statecast_commit_seconds", "Change-log writes of the committer (one synchronous write per group commit).", |c| &c.commit_seconds),
    histogram("statecast_tcp_ack_seconds", "Riemann TCP: from the read bringing Msgs to their answer (ok once applied, or once durable with a change).", |c| &c.tcp_ack_seconds),
    Row::Section(|c, out| c.cluster.render(out)),
    Row::Section(|c, out| c.alerts.render(out)),
    labelled("statecast_tcp_timeouts_total", Counter, "Riemann TCP connections closed by a deadline: no first frame (--tcp-first-frame-timeout), a frame left unfinished (--tcp-frame-timeout), idle (--tcp-idle-timeout).", "reason", |c| {
        TcpTimeout::ALL.iter().zip(&c.tcp_timeouts).map(|(reason, value)| (reason.label(), Counters::get(value))).collect()
    }),
    labelled("statecast_tcp_foreign_protocol_total", Counter, "Riemann TCP connections closed for speaking another protocol (TLS, HTTP) on the plain protobuf port.", "protocol", |c| {
        ForeignProtocol::ALL.iter().zip(&c.tcp_foreign).map(|(protocol, value)| (protocol.label(), Counters::get(value))).collect()
    }),
    one("statecast_fd_budget_exceeded", Gauge, "1 if the connection limits plus 64 reserved descriptors exceed the open-file limit (process_max_fds): the start warned once.", |c| &c.fd_budget_exceeded),
    one("statecast_tcp_write_timeouts_total", Counter, "Riemann TCP clients dropped for not reading their replies within --tcp-write-timeout.", |c| &c.tcp_write_timeouts),
    one("statecast_tls_handshakes_failed_total", Counter, "Riemann TLS handshakes that failed (a client certificate refused, a timeout, not TLS).", |c| &c.tls_handshakes_failed),
    one("statecast_tls_reload_failures_total", Counter, "SIGHUPs whose TLS certificate reload failed (the previous certificate keeps serving).", |c| &c.tls_reload_failures),
    one("statecast_sighups_total", Counter, "SIGHUPs handled (TLS certificates reloaded when TLS is on; the server keeps serving).", |c| &c.sighups),
    one("statecast_tls_handshakes_refused_total", Counter, "Riemann TLS connections refused because --max-tls-handshakes handshakes were in progress.", |c| &c.tls_handshakes_refused),
    one("statecast_large_reads_refused_total", Counter, "Whole-index reads (/api/state) answered 503 past --max-large-reads.", |c| &c.large_reads_refused),
    Row::Section(|_, out| process::render(out)),
];

/// Appends `rows` in Prometheus text format: each family's `# HELP` and `# TYPE`, then its
/// samples.
pub(super) fn render(counters: &Counters, rows: &[Row], out: &mut String) {
    for row in rows {
        match row {
            Row::Family {
                name,
                kind,
                help,
                read,
            } => {
                let kind = kind.name();
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                render_samples(counters, name, read, out);
            }
            Row::Section(render) => render(counters, out),
        }
    }
}

/// The sample lines of the family `name`.
fn render_samples(counters: &Counters, name: &str, read: &Read, out: &mut String) {
    match read {
        Read::Atomic(value) => {
            let _ = writeln!(out, "{name} {}", Counters::get(value(counters)));
        }
        Read::Labelled { label, samples } => {
            for (value, sample) in samples(counters) {
                let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {sample}");
            }
        }
        Read::Info(labels) => {
            let _ = writeln!(out, "{name}{{{labels}}} 1");
        }
        Read::Histogram(histogram) => histogram(counters).render_samples(out, name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prometheus' naming rules the table keeps: counters end in `_total`, nothing else does,
    /// and every family is named once.
    #[test]
    fn counters_and_only_counters_end_in_total_and_names_are_unique() {
        let mut names = std::collections::BTreeSet::new();
        for row in FAMILIES {
            let Row::Family { name, kind, .. } = row else {
                continue;
            };
            assert!(name.starts_with("statecast_"), "{name}");
            assert_eq!(name.ends_with("_total"), *kind == Counter, "{name}");
            assert!(names.insert(*name), "{name} twice");
        }
    }

    /// Each family's header is followed by its own samples, whatever the read.
    #[test]
    fn a_family_renders_its_header_then_its_samples() {
        let counters = Counters::default();
        Counters::add(&counters.events, 3);
        Counters::add(&counters.sse_clients, 2);
        let rows = [
            one("statecast_events_total", Counter, "Events.", |c| &c.events),
            labelled(
                "statecast_dashboards",
                Gauge,
                "Dashboards.",
                "endpoint",
                |c| vec![("sse", Counters::get(&c.sse_clients))],
            ),
            Row::Family {
                name: "statecast_build_info",
                kind: Gauge,
                help: "Build.",
                read: Read::Info("version=\"1\""),
            },
        ];
        let mut out = String::new();
        render(&counters, &rows, &mut out);
        assert_eq!(
            out,
            "# HELP statecast_events_total Events.\n# TYPE statecast_events_total counter\n\
             statecast_events_total 3\n\
             # HELP statecast_dashboards Dashboards.\n# TYPE statecast_dashboards gauge\n\
             statecast_dashboards{endpoint=\"sse\"} 2\n\
             # HELP statecast_build_info Build.\n# TYPE statecast_build_info gauge\n\
             statecast_build_info{version=\"1\"} 1\n"
        );
    }
}
