//! Cluster-mode figures for `/metrics`: how far this node is behind the shared stream, and how
//! long a publish takes. A leaf, so the cluster module writes them and `/metrics` reads them
//! without either knowing the other.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use super::Histogram;

/// A counter family with one label: name, help, label name, (label value, counter) pairs.
type Labelled<'a> = (
    &'static str,
    &'static str,
    &'static str,
    [(&'static str, &'a AtomicU64); 2],
);

#[derive(Debug, Default)]
pub struct ClusterMetrics {
    /// `(node id, stream name)` once cluster mode starts; nothing is rendered before.
    identity: OnceLock<(String, String)>,
    /// The last stream sequence this node has seen exist (from publish acks, stream info and
    /// delivered messages).
    pub stream_seq: AtomicU64,
    /// The last stream sequence the local engine has been handed, in order.
    pub applied_seq: AtomicU64,
    /// Snapshots this node wrote to the cluster's snapshot bucket.
    pub snapshots_written: AtomicU64,
    /// The stream position of the snapshot this node's engine started from (0: none, the
    /// stream from its beginning).
    pub start_position: AtomicU64,
    /// Publishes that failed (NATS away, timeout): each one answered with an error.
    pub publish_failures: AtomicU64,
    /// Stream messages this node published, and the inputs they carried (several inputs
    /// waiting at once share one message): their ratio is the coalescing achieved.
    pub messages_published: AtomicU64,
    pub inputs_published: AtomicU64,
    /// From publishing an input to the stream's acknowledgement of it.
    pub publish_seconds: Histogram,
    /// Stream inputs no node applies: stored after their deadline (`late`) …
    pub dropped_late: AtomicU64,
    /// … or after a later input of their connection (`overtaken`).
    pub dropped_overtaken: AtomicU64,
    /// Inputs answered at the bound with what was known: stored in the stream but not yet
    /// applied here …
    pub unconfirmed_stored: AtomicU64,
    /// … or not acknowledged by the stream, and not seen in it either.
    pub unconfirmed_unacknowledged: AtomicU64,
}

impl ClusterMetrics {
    pub fn enable(&self, node: &str, stream: &str) {
        let _ = self.identity.set((node.to_owned(), stream.to_owned()));
    }

    /// Raises `counter` to `value` if it is behind (sequences only grow).
    pub fn raise(counter: &AtomicU64, value: u64) {
        counter.fetch_max(value, Ordering::Relaxed);
    }

    /// Stream messages this node has not applied yet.
    pub fn lag(&self) -> u64 {
        self.stream_seq
            .load(Ordering::Relaxed)
            .saturating_sub(self.applied_seq.load(Ordering::Relaxed))
    }

    /// Appends this node's cluster figures (nothing before cluster mode starts). The families
    /// are tables ([`Self::gauges`], [`Self::counters`], [`Self::labelled`]): adding one is a row.
    pub fn render(&self, out: &mut String) {
        let Some((node, stream)) = self.identity.get() else {
            return;
        };
        let node = node.replace(['"', '\\', '\n'], "_");
        let stream = stream.replace(['"', '\\', '\n'], "_");
        let _ = writeln!(
            out,
            "# HELP statecast_cluster_info This node in cluster mode: its id and the stream it follows.\n\
             # TYPE statecast_cluster_info gauge\n\
             statecast_cluster_info{{node=\"{node}\",stream=\"{stream}\"}} 1"
        );
        for (name, help, value) in self.gauges() {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        for (name, help, value) in self.counters() {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        for (name, help, label, values) in self.labelled() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (value, counter) in values {
                let _ = writeln!(
                    out,
                    "{name}{{{label}=\"{value}\"}} {}",
                    counter.load(Ordering::Relaxed)
                );
            }
        }
        self.publish_seconds.render(
            out,
            "statecast_cluster_publish_seconds",
            "From publishing an input to the stream's acknowledgement (stored with its replicas).",
        );
    }

    /// Gauges: name, help, value now.
    fn gauges(&self) -> [(&'static str, &'static str, u64); 4] {
        [
            (
                "statecast_cluster_stream_seq",
                "The last stream sequence this node knows to exist.",
                self.stream_seq.load(Ordering::Relaxed),
            ),
            (
                "statecast_cluster_applied_seq",
                "The last stream sequence applied by this node's engine.",
                self.applied_seq.load(Ordering::Relaxed),
            ),
            (
                "statecast_cluster_start_position",
                "The stream position of the snapshot this node started from (0: it replayed the stream from its beginning).",
                self.start_position.load(Ordering::Relaxed),
            ),
            (
                "statecast_cluster_lag",
                "Stream messages this node has not applied yet (stream_seq - applied_seq).",
                self.lag(),
            ),
        ]
    }

    /// Counters: name, help, the counter.
    fn counters(&self) -> [(&'static str, &'static str, &AtomicU64); 4] {
        [
            (
                "statecast_cluster_snapshots_written_total",
                "Snapshots this node wrote to the cluster's snapshot bucket.",
                &self.snapshots_written,
            ),
            (
                "statecast_cluster_messages_published_total",
                "Stream messages this node published (each holds the inputs waiting at that moment).",
                &self.messages_published,
            ),
            (
                "statecast_cluster_inputs_published_total",
                "Inputs this node published to the stream, in statecast_cluster_messages_published_total messages.",
                &self.inputs_published,
            ),
            (
                "statecast_cluster_publish_failures_total",
                "Inputs that could not be published to the stream (answered with an error).",
                &self.publish_failures,
            ),
        ]
    }

    /// Counters with one label: name, help, label, (label value, counter) pairs.
    fn labelled(&self) -> [Labelled<'_>; 2] {
        [
            (
                "statecast_cluster_inputs_dropped_total",
                "Stream inputs this node did not apply (as no node does): stored after their deadline (late), or after a later input of their connection (overtaken).",
                "reason",
                [("late", &self.dropped_late), ("overtaken", &self.dropped_overtaken)],
            ),
            (
                "statecast_cluster_unconfirmed_total",
                "Inputs answered with an error at the --cluster-timeout bound, saying what was known: stored in the stream but not yet applied here (stored), or no acknowledgement from the stream (unacknowledged).",
                "known",
                [
                    ("stored", &self.unconfirmed_stored),
                    ("unacknowledged", &self.unconfirmed_unacknowledged),
                ],
            ),
        ]
    }
}
