//! `GET /api/prometheus?query=Q`: the current metric of every matching key in Prometheus's text
//! exposition format, so a Prometheus server can scrape statecast and keep the history that
//! statecast itself does not (statecast keeps transitions, not metric values).
//!
//! One sample per key: `statecast_metric{host="…",service="…",state="…"} VALUE TIMESTAMP_MS`,
//! the timestamp being the event's own time (Prometheus then records when the value was
//! measured, not when it was scraped). What is left out, and why:
//! - keys without a metric (nothing to record);
//! - expired keys: their value is the last one a source sent before it went silent, already
//!   exported under its state while it was fresh; repeating it under `state="expired"` would
//!   draw a line where no data came. Absence is what Prometheus understands as "no data".
//!
//! NaN and infinite metrics (Riemann's protobuf can carry them, JSON cannot) are written as the
//! format spells them: `NaN`, `+Inf`, `-Inf`. An absent host or service is written as an empty
//! label, which Prometheus treats as no label.
//!
//! Bounded: at most `--prometheus-max-keys` samples, the first in (host, service) order, so
//! every scrape (and every cluster node) keeps the same keys; the number left out is the gauge
//! `statecast_prometheus_keys_omitted`, in every answer, for an alerting rule to watch. The answer
//! is streamed a chunk at a time, and holds a `--max-large-reads` slot (it walks the index)
//! until it is sent whole. The walk, filter and order run on a blocking thread.
//!
//! Same access rule as the dashboard's other reads ([`DashboardRead`]): Prometheus sends the
//! dashboard token as `Authorization: Bearer` (its scrape config's `authorization`).

use std::cmp::Ordering;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::access::DashboardRead;
use super::error::ApiError;
use super::large_reads::LargeRead;
use super::{AppState, SubscribeParams};
use crate::event::{Event, Metric};
use crate::query::Query;

/// The Prometheus text format, version 0.0.4 (what Prometheus asks for and what `/metrics` says).
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Bytes rendered before a chunk is handed to the connection.
const CHUNK_BYTES: usize = 64 * 1024;
/// The one family of key values.
const METRIC: &str = "statecast_metric";
/// Keys matched but left out past the cap.
const OMITTED: &str = "statecast_prometheus_keys_omitted";

/// `GET /api/prometheus?query=Q`: see the module's documentation.
pub(crate) async fn prometheus(
    State(app): State<AppState>,
    _: DashboardRead,
    route: MatchedPath,
    axum::extract::Query(params): axum::extract::Query<SubscribeParams>,
) -> Result<Response, ApiError> {
    let filter = super::api::filter(&params).await?;
    // Taken before the snapshot, held by the body until it is sent whole (or dropped).
    let read = match app.large_reads.begin(&app.counters, route.as_str()) {
        Ok(read) => read,
        Err(busy) => return Ok(busy.into_response()),
    };
    let snapshot = app.engine.snapshot().await.map_err(ApiError::unavailable)?;
    let max_keys = app.prometheus_max_keys;
    let selection = tokio::task::spawn_blocking(move || {
        Selection::choose(snapshot.events, filter.as_ref(), max_keys)
    })
    .await
    .map_err(|_| ApiError::unavailable("the index walk for /api/prometheus failed"))?;
    let exposition = Exposition::new(selection, read);
    Ok((
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        exposition.into_body(),
    )
        .into_response())
}

/// The keys an answer holds, in (host, service) order, and how many matched past the cap.
struct Selection {
    kept: Vec<Arc<Event>>,
    omitted: usize,
}

impl Selection {
    /// The exportable events `filter` matches: the first `max_keys` by (host, service).
    fn choose(events: Vec<Arc<Event>>, filter: Option<&Query>, max_keys: usize) -> Self {
        let mut kept: Vec<Arc<Event>> = events
            .into_iter()
            .filter(|event| exportable(event) && filter.is_none_or(|q| q.matches(event)))
            .collect();
        let mut omitted = 0;
        if kept.len() > max_keys {
            omitted = kept.len() - max_keys;
            // Linear selection of the first `max_keys`, then order only those.
            kept.select_nth_unstable_by(max_keys, by_key);
            kept.truncate(max_keys);
        }
        kept.sort_unstable_by(by_key);
        Self { kept, omitted }
    }
}

/// Whether an event has a current value to export (see the module's documentation).
fn exportable(event: &Event) -> bool {
    event.metric.is_some() && event.state.as_deref() != Some("expired")
}

/// (host, service) order; an absent part sorts first.
fn by_key(a: &Arc<Event>, b: &Arc<Event>) -> Ordering {
    (a.host.as_deref(), a.service.as_deref()).cmp(&(b.host.as_deref(), b.service.as_deref()))
}

/// The answer, rendered a chunk at a time.
struct Exposition {
    events: std::vec::IntoIter<Arc<Event>>,
    omitted: usize,
    /// The header is written.
    opened: bool,
    /// The omitted-keys family is written: the next step ends the stream.
    closed: bool,
    /// The `--max-large-reads` slot this read holds while it streams.
    _read: LargeRead,
}

impl Exposition {
    fn new(selection: Selection, read: LargeRead) -> Self {
        Self {
            events: selection.kept.into_iter(),
            omitted: selection.omitted,
            opened: false,
            closed: false,
            _read: read,
        }
    }

    /// A response body that asks for the next chunk only once the connection has sent the
    /// previous one, giving the worker back before each (as `/api/state` does).
    fn into_body(self) -> Body {
        Body::from_stream(futures_util::stream::unfold(self, |mut this| async move {
            let chunk = this.step()?;
            tokio::task::yield_now().await;
            Some((Ok::<_, Infallible>(chunk), this))
        }))
    }

    /// The next chunk, or `None` once everything is written.
    fn step(&mut self) -> Option<Bytes> {
        if self.closed {
            return None;
        }
        let mut out = String::with_capacity(CHUNK_BYTES + 1024);
        if !self.opened {
            self.opened = true;
            write_header(
                &mut out,
                METRIC,
                "The metric of each (host, service) key statecast indexes, at the event's time.",
            );
        }
        while out.len() < CHUNK_BYTES {
            let Some(event) = self.events.next() else {
                write_header(
                    &mut out,
                    OMITTED,
                    "Keys this query matched that the answer left out, past --prometheus-max-keys.",
                );
                let _ = writeln!(out, "{OMITTED} {}", self.omitted);
                self.closed = true;
                break;
            };
            write_sample(&mut out, &event);
        }
        Some(Bytes::from(out))
    }
}

fn write_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

/// One sample line of an exportable event.
fn write_sample(out: &mut String, event: &Event) {
    let Some(metric) = event.metric else { return };
    out.push_str(METRIC);
    out.push_str("{host=\"");
    escape_label_value(out, event.host.as_deref().unwrap_or(""));
    out.push_str("\",service=\"");
    escape_label_value(out, event.service.as_deref().unwrap_or(""));
    out.push_str("\",state=\"");
    escape_label_value(out, event.state.as_deref().unwrap_or(""));
    out.push_str("\"} ");
    write_value(out, metric);
    // An event always has a time once indexed; a zero (or earlier) one is left to the scrape's.
    if event.time_micros > 0 {
        let _ = write!(out, " {}", event.time_micros.div_euclid(1000));
    }
    out.push('\n');
}

/// A label value as the text format wants it: backslash, double quote and line feed escaped
/// (`\\`, `\"`, `\n`); everything else, any UTF-8, as it is.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A value as the text format spells it: integers exactly, floats in Rust's shortest
/// round-trip form (`0.97`, `1e300`), and `NaN`, `+Inf`, `-Inf`.
fn write_value(out: &mut String, metric: Metric) {
    let _ = match metric {
        Metric::Int(i) => write!(out, "{i}"),
        Metric::Float(f) if f.is_nan() => write!(out, "NaN"),
        Metric::Float(f) if f == f64::INFINITY => write!(out, "+Inf"),
        Metric::Float(f) if f == f64::NEG_INFINITY => write!(out, "-Inf"),
        Metric::Float(f) => write!(out, "{f:?}"),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(host: Option<&str>, service: &str, state: &str, metric: Option<Metric>) -> Arc<Event> {
        Arc::new(Event {
            host: host.map(str::to_owned),
            service: Some(service.to_owned()),
            state: Some(state.to_owned()),
            metric,
            time_micros: 1_795_435_200_123_456,
            ..Default::default()
        })
    }

    fn line(event: &Event) -> String {
        let mut out = String::new();
        write_sample(&mut out, event);
        out
    }

    #[test]
    fn label_values_escape_backslash_quote_and_newline_only() {
        let hostile = event(Some("a\\b\"c\nd\té"), "s", "ok", Some(Metric::Int(1)));
        assert_eq!(
            line(&hostile),
            "statecast_metric{host=\"a\\\\b\\\"c\\nd\té\",service=\"s\",state=\"ok\"} 1 1795435200123\n"
        );
        let no_host = event(None, "s", "ok", Some(Metric::Int(-3)));
        assert!(line(&no_host).starts_with("statecast_metric{host=\"\",service=\"s\""));
    }

    #[test]
    fn values_are_spelled_as_the_format_wants() {
        let value = |m| {
            let mut out = String::new();
            write_value(&mut out, m);
            out
        };
        assert_eq!(value(Metric::Int(i64::MIN)), "-9223372036854775808");
        assert_eq!(value(Metric::Float(0.97)), "0.97");
        assert_eq!(value(Metric::Float(1e300)), "1e300");
        assert_eq!(value(Metric::Float(f64::NAN)), "NaN");
        assert_eq!(value(Metric::Float(f64::INFINITY)), "+Inf");
        assert_eq!(value(Metric::Float(f64::NEG_INFINITY)), "-Inf");
    }

    #[test]
    fn the_cap_keeps_the_first_keys_in_order_and_counts_the_rest() {
        let events: Vec<Arc<Event>> = (0..100)
            .rev()
            .map(|i| event(Some(&format!("h{i:03}")), "s", "ok", Some(Metric::Int(i))))
            .chain([
                event(Some("none"), "s", "ok", None),
                event(Some("gone"), "s", "expired", Some(Metric::Int(1))),
            ])
            .collect();
        let chosen = Selection::choose(events.clone(), None, 10);
        let hosts: Vec<_> = chosen
            .kept
            .iter()
            .map(|e| e.host.clone().unwrap())
            .collect();
        let expected: Vec<_> = (0..10).map(|i| format!("h{i:03}")).collect();
        assert_eq!(hosts, expected);
        assert_eq!(chosen.omitted, 90, "no metric and expired are not counted");
        let all = Selection::choose(events, None, 1000);
        assert_eq!((all.kept.len(), all.omitted), (100, 0));
    }
}
