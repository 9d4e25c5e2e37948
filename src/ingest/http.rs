//! HTTP ingest, beside the TCP and UDP transports: `POST /api/event` (one JSON event or an
//! array), `POST /events` (newline-delimited JSON, as Riemann's HTTP server takes it) and the
//! websocket `GET /events` (`socket`: batches in, one reply each).
//!
//! These routes share the dashboard's HTTP port, its connection handling and its access rules,
//! so this module uses `web`'s plumbing (`AppState`, the access extractors, `ApiError`) while
//! `web` never names ingest: the server hands [`routes`] to `web::router`, which puts them behind
//! the same Host rule as every other route. Decoding is `json`'s; who may write is in each
//! handler's signature ([`IngestWrite`], [`IngestSocket`]).

mod socket;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::json;

use super::json::{parse_events, parse_ndjson, JsonError};
use crate::engine::EngineError;
use crate::event::{now_micros, Event, EventLimits};
use crate::metrics::Counters;
use crate::web::access::IngestWrite;
use crate::web::body::{BodyLimit, BodyRules, BoundedBody};
use crate::web::error::ApiError;
use crate::web::AppState;

/// Bodies up to this size are decoded on the request's own task; larger ones on a blocking
/// thread, so a 4 MiB batch does not stall the other connections on the same worker.
const DECODE_INLINE_BYTES: usize = 64 * 1024;

/// The ingest routes, for `web::router` to serve (behind its Host rule).
pub(crate) fn routes(app: &AppState) -> Router<AppState> {
    let unfinished = socket::UnfinishedBudget::for_max_message(app.max_body_bytes);
    Router::new()
        .route("/api/event", post(post_event))
        .route("/events", get(socket::upgrade).post(post_ndjson))
        .layer(Extension(unfinished))
}

/// A body of events: at most `--max-body-bytes`.
pub(crate) struct EventsBody;

impl BodyLimit for EventsBody {
    fn max_bytes(rules: &BodyRules) -> usize {
        rules.max_body_bytes
    }
}

/// `POST /api/event`: one event object or an array; all applied, or none.
///
/// Accepted whatever the Content-Type: scripts and Riemann's forwarders are not consistent about
/// it, and the body's shape is what matters. The 200 is sent once the engine has applied the batch.
/// A browser's cross-site POST is refused before anything is read (CSRF; see `web::access`).
async fn post_event(
    State(app): State<AppState>,
    _: IngestWrite,
    BoundedBody(body, _): BoundedBody<EventsBody>,
) -> Response {
    ingest(app, body, parse_events).await
}

/// `POST /events`: newline-delimited JSON, one event per line, as Riemann's HTTP server takes it;
/// the same checks, limits, all-or-nothing rule and answer as `POST /api/event`.
async fn post_ndjson(
    State(app): State<AppState>,
    _: IngestWrite,
    BoundedBody(body, _): BoundedBody<EventsBody>,
) -> Response {
    ingest(app, body, parse_ndjson).await
}

/// How a body becomes events.
type Parser = fn(&[u8], i64, &EventLimits) -> Result<Vec<Event>, JsonError>;

/// Decodes the body and waits for the engine to apply it.
async fn ingest(app: AppState, body: Bytes, parse: Parser) -> Response {
    let events = match decode(body, app.json_limits, parse).await {
        Ok(events) => events,
        Err(refused) => {
            Counters::add(&app.counters.http_rejected, 1);
            return refused.into_response();
        }
    };
    let accepted = events.len();
    match app.engine.apply(events).await {
        Ok(()) => Json(json!({"ok": true, "accepted": accepted})).into_response(),
        // Refused whole, by design: a client error to fix or a limit to raise, not an outage.
        Err(error @ EngineError::IndexFull { .. }) => {
            Counters::add(&app.counters.http_rejected, 1);
            ApiError::new(StatusCode::INSUFFICIENT_STORAGE, error.to_string()).into_response()
        }
        Err(error) => ApiError::unavailable(error).into_response(),
    }
}

/// Decodes a body within the JSON limits (off the async workers when it is large): 413 past the
/// event count, 400 for anything else wrong.
async fn decode(body: Bytes, limits: EventLimits, parse: Parser) -> Result<Vec<Event>, ApiError> {
    let now = now_micros();
    let decoded = if body.len() <= DECODE_INLINE_BYTES {
        parse(&body, now, &limits)
    } else {
        match tokio::task::spawn_blocking(move || parse(&body, now, &limits)).await {
            Ok(decoded) => decoded,
            Err(join_error) => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("decoding failed: {join_error}"),
                ))
            }
        }
    };
    decoded.map_err(|error| {
        let status = match error {
            JsonError::TooManyEvents { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, error.to_string())
    })
}
