//! `GET /api/series?query=Q&from=F&to=T&step=S`: the metric series of the keys Q matches, as
//! `{"from":F,"to":T,"step":S,"series":[{"host","service","points":[[t_ms,min,max,avg,last,count],…]},…]}`.
//!
//! A query naming only `host` and `service` is answered by the series' keys; one that reads more
//! of an event (`state = "critical"`, `tagged`, `metric > 90`, attributes) by each key's current
//! event, from a snapshot of the index taken for the answer (a key no longer in the index is
//! matched by its host and service alone).
//!
//! The access rule is `/api/history`'s (dashboard token). The window is checked and the tier
//! and step chosen (`series::read`) from counts known before reading — keys matched × buckets in
//! the range — so a request past the caps gets a 400 sentence before any work; then the answer is
//! streamed, a few series per chunk read on a blocking thread, holding a `--max-large-reads` slot
//! (it walks every key with a series) until it is sent. The first chunk is read before the
//! status is sent, so a series store that fails (a full disk) gets a 503 with a sentence.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::access::DashboardRead;
use super::error::ApiError;
use super::large_reads::LargeRead;
use super::AppState;
use crate::event::Event;
use crate::protocol::answers::{SeriesAnswer, SeriesItem, SeriesPoint};
use crate::query::Query;
use crate::series::read::{plan, Plan, Window, MAX_SERIES};
use crate::series::{SeriesKey, SeriesReader};

/// Series read and serialized per chunk of the answer.
const SERIES_PER_CHUNK: usize = 32;

/// The request's parameters, as text: each gets its own sentence when it is not a number.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct SeriesParams {
    query: Option<String>,
    from: Option<String>,
    to: Option<String>,
    step: Option<String>,
}

fn bad_request(error: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, error)
}

/// See the module doc.
pub(crate) async fn series(
    State(app): State<AppState>,
    _: DashboardRead,
    route: MatchedPath,
    axum::extract::Query(params): axum::extract::Query<SeriesParams>,
) -> Result<Response, ApiError> {
    let Some(reader) = app.series.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "series are not kept: the server runs with --series off",
        ));
    };
    let now_ms = crate::event::now_micros() / 1000;
    let window = Window::parse(
        params.from.as_deref(),
        params.to.as_deref(),
        params.step.as_deref(),
        now_ms,
    )
    .map_err(bad_request)?;
    let filter = Query::parse_filter(params.query.as_deref())
        .await
        .map_err(bad_request)?;
    let read = match app.large_reads.begin(&app.counters, route.as_str()) {
        Ok(read) => read,
        Err(busy) => return Ok(busy.into_response()),
    };
    // A query that reads more than a key (state, metric, tags, attributes…) is answered by
    // each key's current event in the index.
    let index = match &filter {
        Some(query) if !query.reads_key_only() => {
            let snapshot = app.engine.snapshot().await.map_err(ApiError::unavailable)?;
            Some(snapshot.events)
        }
        _ => None,
    };
    let matcher = reader.clone();
    let (keys, plan) = tokio::task::spawn_blocking(move || {
        let keys = matching(&matcher, filter.as_ref(), index.as_deref())?;
        let plan = plan(&window, keys.len(), &matcher.settings.tiers, now_ms)?;
        Ok::<_, String>((keys, plan))
    })
    .await
    .map_err(|_| ApiError::unavailable("the series read stopped"))?
    .map_err(bad_request)?;
    // Before any stored bucket is read (see `SeriesReader::held`).
    let ids: Vec<u64> = keys.iter().map(|k| k.id).collect();
    let held = reader.held(&ids, &plan, window.to_ms);
    let answer = Streamed {
        reader,
        plan,
        to_ms: window.to_ms,
        keys: keys.into_iter().zip(held).collect(),
        at: 0,
        wrote_one: false,
        _read: read,
    };
    // The first chunk is read before the status is sent: a failing store (a full disk) gets a
    // 503 with a sentence, not a 200 whose JSON stops short.
    let (first, answer) = tokio::task::spawn_blocking(move || {
        let mut answer = answer;
        (answer.next_chunk(), answer)
    })
    .await
    .map_err(|_| ApiError::unavailable("the series read stopped"))?;
    let first = first.map_err(|error| {
        ApiError::unavailable(format!(
            "{error}: series cannot be read until the series store works again (ingest is not affected)"
        ))
    })?;
    let mut head = SeriesAnswer::opening(window.from_ms, window.to_ms, plan.step_ms);
    head.extend_from_slice(&first);
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        answer.into_body(head),
    )
        .into_response())
}

/// The keys `filter` matches, sorted by (host, service) so every node answers alike; a
/// sentence past [`MAX_SERIES`]. A key is matched as its current event in `index` when it is
/// given and holds the key, else as an event of its host and service alone (a key no longer in
/// the index has no state, tags or metric to match).
fn matching(
    reader: &SeriesReader,
    filter: Option<&Query>,
    index: Option<&[Arc<Event>]>,
) -> Result<Vec<Arc<SeriesKey>>, String> {
    let current: HashMap<(Option<&str>, Option<&str>), &Event> = index
        .unwrap_or_default()
        .iter()
        .map(|event| ((event.host.as_deref(), event.service.as_deref()), &**event))
        .collect();
    let mut keys: Vec<Arc<SeriesKey>> = reader
        .keys()
        .into_iter()
        .filter(|key| {
            filter.is_none_or(|q| {
                let name = (key.name.host.as_deref(), key.name.service.as_deref());
                match current.get(&name) {
                    Some(event) => q.matches(event),
                    None => q.matches(&Event {
                        host: key.name.host.clone(),
                        service: key.name.service.clone(),
                        ..Event::default()
                    }),
                }
            })
        })
        .collect();
    if keys.len() > MAX_SERIES {
        return Err(format!(
            "the query matches {} series, more than the {MAX_SERIES} one answer holds: narrow the `query`",
            keys.len()
        ));
    }
    keys.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(keys)
}

type HeldBuckets = Vec<(i64, crate::series::bucket::Bucket)>;

/// The answer's series, read and serialized a chunk at a time.
struct Streamed {
    reader: SeriesReader,
    plan: Plan,
    to_ms: i64,
    keys: Vec<(Arc<SeriesKey>, HeldBuckets)>,
    at: usize,
    wrote_one: bool,
    /// The `--max-large-reads` slot, held until the answer is sent.
    _read: LargeRead,
}

impl Streamed {
    /// The answer: `head` (the opening and the first chunk), then the rest as it is read.
    fn into_body(self, mut head: Vec<u8>) -> Body {
        if self.at >= self.keys.len() {
            head.extend_from_slice(SeriesAnswer::CLOSING);
            return Body::from(head);
        }
        let first =
            futures_util::stream::once(async move { Ok::<_, Infallible>(Bytes::from(head)) });
        let rest = futures_util::stream::unfold(Some(self), |state| async move {
            let mut streamed = state?;
            let (chunk, more) = tokio::task::spawn_blocking(move || {
                let chunk = streamed.next_chunk();
                (chunk, streamed)
            })
            .await
            .ok()?;
            let last = more.at >= more.keys.len();
            let next = if last { None } else { Some(more) };
            match chunk {
                Ok(mut bytes) => {
                    if last {
                        bytes.extend_from_slice(SeriesAnswer::CLOSING);
                    }
                    Some((Ok(Bytes::from(bytes)), next))
                }
                // The status is sent: a store failing mid-answer ends it short (the client sees
                // JSON that does not close), and says why in the log.
                Err(error) => {
                    tracing::warn!(%error, "series answer ended early: the series store failed");
                    None
                }
            }
        });
        Body::from_stream(futures_util::StreamExt::chain(first, rest))
    }

    /// The next few series, serialized; empty ones are left out.
    fn next_chunk(&mut self) -> Result<Vec<u8>, crate::series::closed::StoreFailed> {
        let mut out = Vec::new();
        let end = (self.at + SERIES_PER_CHUNK).min(self.keys.len());
        for (key, held) in &self.keys[self.at..end] {
            let buckets = self.reader.read(key.id, &self.plan, self.to_ms, held)?;
            if buckets.is_empty() {
                continue;
            }
            let item = SeriesItem {
                host: key.name.host.as_deref(),
                service: key.name.service.as_deref(),
                points: buckets
                    .iter()
                    .map(|(t, b)| SeriesPoint(*t, b.min, b.max, b.avg(), b.last, b.count))
                    .collect(),
            };
            if self.wrote_one {
                out.push(b',');
            }
            self.wrote_one = true;
            // Writing into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, &item);
        }
        self.at = end;
        Ok(out)
    }
}
