//! The HTTP API's reads: `GET /api/state` (the indexed events), `GET /api/history` (past
//! transitions) and `GET /metrics` (the Prometheus counters). `POST /api/event` is a transport:
//! `ingest::http`.
//!
//! Errors are answered through [`ApiError`]; who may call what is in each handler's signature
//! (`access`).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::access::DashboardRead;
use super::error::ApiError;
use super::large_reads::LargeRead;
use super::{history, AppState, SubscribeParams};
use crate::event::Event;
use crate::metrics::Counters;
use crate::protocol::answers::{Gap, HistoryPage};
use crate::protocol::EventItem;
use crate::query::Query;

/// `GET /api/state?query=Q`: the matching indexed events as a JSON array (default: all).
///
/// Streamed: the array is serialized a chunk at a time as the client reads, from the snapshot's
/// shared events, so a large index costs one chunk of memory per reader, not a copy of itself.
/// At most `--max-large-reads` stream at once; past it, 503 with `Retry-After`.
pub(crate) async fn state(
    State(app): State<AppState>,
    _: DashboardRead,
    route: MatchedPath,
    axum::extract::Query(params): axum::extract::Query<SubscribeParams>,
) -> Result<Response, ApiError> {
    let filter = filter(&params).await?;
    // Taken before the snapshot, held by the body until it is sent whole (or dropped).
    let read = match app.large_reads.begin(&app.counters, route.as_str()) {
        Ok(read) => read,
        Err(busy) => return Ok(busy.into_response()),
    };
    let snapshot = app.engine.snapshot().await.map_err(ApiError::unavailable)?;
    let mut chunks = JsonArrayChunks::new(snapshot.events, filter);
    chunks.read = Some(read);
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        chunks.into_body(),
    )
        .into_response())
}

/// Bytes serialized before a chunk is handed to the connection.
const STATE_CHUNK_BYTES: usize = 64 * 1024;
/// Events looked at per step, so one step's CPU is bounded even when few match.
const STATE_SCAN_PER_STEP: usize = 4096;

/// A JSON array of events, produced a chunk at a time.
struct JsonArrayChunks {
    events: std::vec::IntoIter<Arc<Event>>,
    filter: Option<Query>,
    opened: bool,
    wrote_one: bool,
    /// `]` is written: the next step ends the stream.
    closed: bool,
    /// The `--max-large-reads` slot this read holds while it streams.
    read: Option<LargeRead>,
}

enum Step {
    Chunk(Bytes),
    Scanned,
    Done,
}

impl JsonArrayChunks {
    fn new(events: Vec<Arc<Event>>, filter: Option<Query>) -> Self {
        Self {
            events: events.into_iter(),
            filter,
            opened: false,
            wrote_one: false,
            closed: false,
            read: None,
        }
    }

    /// A response body that asks for the next chunk only when the connection has sent the
    /// previous one (hyper polls a body when it can write).
    fn into_body(self) -> Body {
        Body::from_stream(self.into_stream())
    }

    /// The chunks, each handed out after giving the worker back once.
    fn into_stream(self) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
        futures_util::stream::unfold(self, |mut chunks| async move {
            loop {
                match chunks.step() {
                    Step::Chunk(bytes) => {
                        // A client that reads as fast as we write never makes the socket wait,
                        // so without this the whole response (8.5 MB at 50k keys, 0.1 s of CPU)
                        // was written in one poll, holding a worker while replies queued behind it.
                        tokio::task::yield_now().await;
                        return Some((Ok::<_, Infallible>(bytes), chunks));
                    }
                    // A filter matching little still scans a bounded slice per step: give the
                    // worker back between slices.
                    Step::Scanned => tokio::task::yield_now().await,
                    Step::Done => return None,
                }
            }
        })
    }

    fn step(&mut self) -> Step {
        if self.closed {
            return Step::Done;
        }
        let mut out = Vec::with_capacity(STATE_CHUNK_BYTES + 1024);
        if !self.opened {
            self.opened = true;
            out.push(b'[');
        }
        let mut scanned = 0;
        while out.len() < STATE_CHUNK_BYTES && scanned < STATE_SCAN_PER_STEP {
            let Some(event) = self.events.next() else {
                out.push(b']');
                self.closed = true;
                return Step::Chunk(Bytes::from(out));
            };
            scanned += 1;
            if self.filter.as_ref().is_some_and(|q| !q.matches(&event)) {
                continue;
            }
            if self.wrote_one {
                out.push(b',');
            }
            self.wrote_one = true;
            // Writing an event into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, &EventItem(&event));
        }
        if out.is_empty() {
            Step::Scanned
        } else {
            Step::Chunk(Bytes::from(out))
        }
    }
}

/// A dashboard read's `query` parameter, compiled on a blocking thread (a hostile query's regexes
/// take long to compile); 400 when it is not a query.
pub(crate) async fn filter(params: &SubscribeParams) -> Result<Option<Query>, ApiError> {
    Query::parse_filter(params.query.as_deref())
        .await
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, error))
}

/// Most transitions one `/api/history` request returns.
const MAX_HISTORY_LIMIT: usize = 10_000;

/// `GET /api/history?query=Q&since=SEQ&limit=N`: transitions after `since`, oldest first.
///
/// Answers `{"epoch":E,"oldest_seq":O,"changes":[…],"more":M}` where each change has the
/// websocket change shape; a transition matches when the event before or after it matches Q.
/// When the page reaches a hole in this node's history it stops there and says so:
/// `"gap":{"from":F,"to":T}`. `more` is true when the page stopped at `limit`, at
/// [`history::MAX_READ_BYTES`] or at a hole: continue with `since` = the last change's `seq` (or
/// the hole's `to`).
pub(crate) async fn history(
    State(app): State<AppState>,
    _: DashboardRead,
    axum::extract::Query(params): axum::extract::Query<SubscribeParams>,
) -> Result<Response, ApiError> {
    let filter = filter(&params).await?;
    let Some(store) = app.store.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "history is not kept: the server runs with --data-dir off",
        ));
    };
    let since = params.since.unwrap_or(0);
    let limit = params.limit.unwrap_or(1000).clamp(1, MAX_HISTORY_LIMIT);
    // Changes reach history a few milliseconds after they are published: wait for those applied
    // so far, so a client never misses one it has already seen live.
    if app.engine.sync().await.is_err() {
        return Err(ApiError::unavailable("server is shutting down"));
    }
    let page = history::page(store, since, limit, filter).await?;
    let body = HistoryPage {
        epoch: &app.epoch,
        oldest_seq: page.oldest_seq,
        changes: page.changes.into_iter().flatten().collect(),
        more: page.more,
        // This node never had changes `from..=to`: the page stops before them; go on after `to`.
        gap: page.gap.map(|(from, to)| Gap { from, to }),
    };
    Ok(Json(body).into_response())
}

/// `GET /metrics`: counters in Prometheus text format, with the engine's queue depth.
pub(crate) async fn metrics(State(app): State<AppState>) -> Response {
    let mut body = app.counters.render_prometheus();
    Counters::render_gauge(
        &mut body,
        "statecast_engine_queue",
        "Batches and requests waiting for the engine (bounded by --engine-queue).",
        app.engine.queue_depth() as u64,
    );
    Counters::render_gauge(
        &mut body,
        "statecast_large_reads",
        "Whole-index reads (/api/state) streaming now (bounded by --max-large-reads).",
        app.large_reads.in_progress() as u64,
    );
    if let Some(series) = &app.series {
        series.counters.render(&mut body);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every chunk of the stream, joined.
    fn drain(mut chunks: JsonArrayChunks) -> (String, usize) {
        let mut out = Vec::new();
        let mut steps = 0;
        loop {
            steps += 1;
            match chunks.step() {
                Step::Chunk(bytes) => out.extend_from_slice(&bytes),
                Step::Scanned => {}
                Step::Done => return (String::from_utf8(out).unwrap(), steps),
            }
        }
    }

    fn events(n: usize) -> Vec<Arc<Event>> {
        (0..n)
            .map(|i| {
                Arc::new(Event {
                    host: Some(format!("h{i}")),
                    description: Some("d".repeat(100)),
                    ..Default::default()
                })
            })
            .collect()
    }

    /// A reader as fast as the server never makes a write wait: the stream itself must give the
    /// worker back between chunks, or one response runs whole in a single poll.
    #[test]
    fn the_stream_yields_to_the_scheduler_before_every_chunk() {
        use futures_util::StreamExt;
        let mut stream = std::pin::pin!(JsonArrayChunks::new(events(3000), None).into_stream());
        let waker = futures_util::task::noop_waker();
        let mut context = std::task::Context::from_waker(&waker);
        let mut chunks = 0;
        loop {
            // Pending once (the yield), then the chunk.
            if stream.poll_next_unpin(&mut context).is_ready() {
                break;
            }
            match stream.poll_next_unpin(&mut context) {
                std::task::Poll::Ready(Some(Ok(_))) => chunks += 1,
                other => panic!("expected a chunk after the yield, got {other:?}"),
            }
        }
        assert!(chunks > 4, "{chunks} chunks");
    }

    #[test]
    fn the_streamed_array_is_the_same_json_in_many_chunks() {
        assert_eq!(drain(JsonArrayChunks::new(Vec::new(), None)).0, "[]");
        let all = events(3000);
        let expected: Vec<serde_json::Value> = all.iter().map(|e| e.to_json_value()).collect();
        let (text, steps) = drain(JsonArrayChunks::new(all.clone(), None));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            serde_json::json!(expected)
        );
        assert!(steps > 4, "{steps} steps: chunked");

        let only = Query::parse(r#"host = "h2999""#).unwrap();
        let (text, _) = drain(JsonArrayChunks::new(events(10_000), Some(only)));
        let matched: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(matched.len(), 1);
        assert_eq!(matched[0]["host"], "h2999");
    }
}
