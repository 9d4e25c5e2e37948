//! HTTP: the dashboard page, the dashboard websocket, JSON ingest and metrics, on one port.
//!
//! This module routes, and holds what the endpoints share: [`AppState`], the subscription URL
//! parameters, and the settings and limits of every websocket accepted (`/ws` and `/index`).
//! Each endpoint's behaviour lives in its own file (the README's Layout says which), and
//! endpoints do not import each other: what they share is here, so a new endpoint needs this
//! module and its access extractor, nothing of its neighbours.
//!
//! HTTP ingest (`POST /api/event`, `/events`) is a transport: it lives in `ingest::http`, which
//! uses this module's plumbing; the server hands its routes to [`router`], and `web` never names
//! ingest.

pub mod access;
mod acks;
mod actions;
mod api;
mod assets;
pub(crate) mod body;
pub(crate) mod error;
mod health;
mod history;
pub mod http_server;
mod index;
pub(crate) mod large_reads;
mod prometheus;
pub mod proxy;
pub(crate) mod rates;
mod series;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Utf8Bytes, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::error::ApiError;
use crate::engine::EngineHandle;
use crate::metrics::{Counters, Refusal};
use crate::protocol::{Frame, Stats};

/// tungstenite reads into a 128 KiB buffer by default; dashboards send almost nothing, so a small
/// one keeps thousands of idle screens cheap.
pub(crate) const WS_READ_BUFFER: usize = 4 * 1024;
/// Frames collected before tungstenite writes without waiting for the session's flush.
pub(crate) const WS_WRITE_BUFFER: usize = 16 * 1024;
/// Largest message a dashboard may send (subscriptions are short); larger closes with 1009.
const WS_MAX_MESSAGE: usize = 64 * 1024;

/// Everything a request handler may need; cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) engine: EngineHandle,
    pub(crate) counters: Arc<Counters>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
    pub(crate) stats: watch::Receiver<Utf8Bytes>,
    pub(crate) ws_permits: Arc<Semaphore>,
    pub(crate) ws: ws::WsConfig,
    pub(crate) access: Arc<access::AccessConfig>,
    pub(crate) max_body_bytes: usize,
    /// History, when persistence is on.
    pub(crate) store: Option<Arc<crate::store::Store>>,
    /// Changes when history is lost (fresh data directory, or no store and a restart).
    pub(crate) epoch: String,
    /// What one POST /api/event body may decode to.
    /// Per-event limits, with `max_events_per_msg` meaning events per request body.
    pub(crate) json_limits: crate::event::EventLimits,
    /// Time a request body has to arrive in full.
    pub(crate) body_timeout: Duration,
    /// The last hour of stats samples, filled by [`stats_ticker`], read by `GET /api/rates`.
    pub(crate) rates: Arc<rates::RateRing>,
    /// Whole-index reads served at once (`/api/state`).
    pub(crate) large_reads: large_reads::LargeReads,
    /// Metric series (`--series on`), for `GET /api/series`.
    pub(crate) series: Option<crate::series::SeriesReader>,
    /// Samples one `GET /api/prometheus` answer holds at most (`--prometheus-max-keys`).
    pub(crate) prometheus_max_keys: usize,
}

/// Every route: this module's, and `ingest` (the HTTP ingest routes, from `ingest::http`), all
/// behind the Host rule.
pub(crate) fn router(app: AppState, ingest: Router<AppState>) -> Router {
    let host_check = axum::middleware::from_fn_with_state(app.clone(), check_host);
    Router::new()
        .route("/ws", get(ws::upgrade))
        .merge(ingest)
        .route("/api/state", get(api::state))
        .merge(action_routes())
        .route("/api/history", get(api::history))
        .route("/api/rates", get(rates::rates))
        .route("/api/series", get(series::series))
        .route("/api/prometheus", get(prometheus::prometheus))
        .route("/index", get(index::index))
        .route("/metrics", get(api::metrics))
        .fallback(get(assets::serve))
        // Every route, the page included: a rebinding attacker's page must not load either.
        .layer(host_check)
        // Added after the layer, so outside it: probes address the server by IP (see `health`).
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .with_state(app)
}

/// The operator-action endpoints (each body bounded by its extractor, `actions::ActionBody`).
fn action_routes() -> Router<AppState> {
    Router::new()
        .route("/api/ack", post(actions::ack).delete(actions::delete_ack))
        .route("/api/unack", post(actions::post_unack))
        .route("/api/acks", get(actions::acks))
        .route("/api/silence", post(actions::create_silence))
        .route(
            "/api/silence/{id}",
            axum::routing::put(actions::edit_silence).delete(actions::delete_silence),
        )
        .route("/api/silences", get(actions::silences))
        .route("/api/clear", post(actions::clear))
}

/// Refuses requests addressed to a Host name that is not allowed (DNS rebinding, see `access`).
/// First, a trusted proxy's `X-Forwarded-Host` replaces Host, so every later check (this one,
/// the Origin rule) compares against the name the browser used.
async fn check_host(
    State(app): State<AppState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0);
    if let Some(host) = app.access.forwarded_host(peer, request.headers()) {
        request.headers_mut().insert(header::HOST, host);
    }
    match app.access.check_host(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(denied) => {
            let route = access::route(request.extensions(), request.uri());
            app.refused(Refusal::Host, route, denied).into_response()
        }
    }
}

/// URL parameters shared by the subscription endpoints (`?token=` is the access extractors').
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct SubscribeParams {
    pub(crate) query: Option<String>,
    pub(crate) subscribe: Option<String>,
    /// Resume after this `seq` (with `epoch`) instead of starting from a snapshot.
    pub(crate) since: Option<u64>,
    pub(crate) epoch: Option<String>,
    pub(crate) limit: Option<usize>,
    /// `/ws` only: view frames queued together leave as one `batch` message.
    pub(crate) batch: Option<bool>,
}

impl AppState {
    /// Counts a refusal for `/metrics` and logs it (see `metrics::refusals`): the operator learns
    /// that and why requests are turned away, without a scanner flooding the log. `route` is the
    /// route as the router matched it ([`access::route`]). The access extractors do the same
    /// through their `Gate`; this is for the refusals outside them (Host, the connection
    /// limit).
    pub(crate) fn refused(&self, reason: Refusal, route: &str, denied: ApiError) -> ApiError {
        let status = denied.status.as_u16();
        self.counters
            .refusals
            .refuse(reason, route, status, &denied.error);
        denied
    }
}

/// A websocket slot, or the 503 that tells the client to come back later.
pub(crate) fn ws_permit(app: &AppState) -> Option<tokio::sync::OwnedSemaphorePermit> {
    Arc::clone(&app.ws_permits).try_acquire_owned().ok()
}

/// The answer to an upgrade (or stream) on `route` past the dashboard connection limit.
pub(crate) fn too_many_websockets(app: &AppState, route: &str) -> Response {
    let error = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many dashboard connections",
    );
    let error = app.refused(Refusal::Limit, route, error);
    ([(header::RETRY_AFTER, "5")], error).into_response()
}

/// Small buffers and bounded messages for every websocket we accept.
fn configure(upgrade: WebSocketUpgrade) -> WebSocketUpgrade {
    upgrade
        .read_buffer_size(WS_READ_BUFFER)
        // The session feeds every frame it has queued and then flushes once; tungstenite collects
        // them here and writes them with one send (earlier only past this size). With 0 each
        // frame was its own send: most of the server's time at 1,000 clients.
        .write_buffer_size(WS_WRITE_BUFFER)
        // The session bounds what it queues in bytes (--ws-queue-bytes); tungstenite itself must
        // accept any single frame, or a snapshot larger than its buffer would fail (axum cannot
        // send a message in fragments). The one thing that reaches this buffer unasked, the pong
        // tungstenite queues per ping read, is bounded by the session's outbox
        // (`MAX_UNSENT_PONG_BYTES`).
        .max_write_buffer_size(usize::MAX)
        .max_message_size(WS_MAX_MESSAGE)
        .max_frame_size(WS_MAX_MESSAGE)
}

/// Whether a read failed because a text message was not valid UTF-8 (close code 1007).
fn is_invalid_utf8(error: &axum::Error) -> bool {
    matches!(tungstenite_error(error), Some(WsError::Utf8(_)))
}

/// A frame from [`crate::protocol`] (through `broadcast` or `history`) as a websocket text
/// message. Frames are UTF-8 by construction (serde_json writes nothing else); axum checks it
/// again, one pass over the bytes, and an impossible failure sends an empty text rather than
/// panic.
pub(crate) fn text_frame(frame: bytes::Bytes) -> Utf8Bytes {
    Utf8Bytes::try_from(frame).unwrap_or_default()
}

/// Whether a read failed because the client's message exceeded the size limit (close code 1009).
fn is_too_big(error: &axum::Error) -> bool {
    matches!(tungstenite_error(error), Some(WsError::Capacity(_)))
}

/// The websocket library's error behind axum's.
fn tungstenite_error(error: &axum::Error) -> Option<&WsError> {
    use std::error::Error as _;
    error.source().and_then(|e| e.downcast_ref::<WsError>())
}

/// The stats channel's value before the ticker's first frame: the counters at start (zeros).
pub(crate) fn first_stats_frame(interval: Duration) -> Utf8Bytes {
    let frame = Frame::Stats(Stats {
        time: rates::unix_ms(std::time::SystemTime::now()),
        interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
        clients: 0,
        events: 0,
        changes: 0,
    });
    frame.to_text().into()
}

/// Publishes `{"type":"stats",…}` every `interval`, serialized once for every client. Each frame
/// carries when it was built (`time`, unix ms) and `interval_ms`: a page rates the counters by
/// those, not by when frames arrive (a new connection's first frames can arrive together).
pub(crate) async fn stats_ticker(
    counters: Arc<Counters>,
    interval: Duration,
    tx: watch::Sender<Utf8Bytes>,
    rates: Arc<rates::RateRing>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let (events, changes) = (
            Counters::get(&counters.events),
            Counters::get(&counters.changes),
        );
        rates.record(events, changes);
        let frame = Frame::Stats(Stats {
            time: rates::unix_ms(std::time::SystemTime::now()),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            clients: Counters::get(&counters.ws_clients),
            events,
            changes,
        });
        tx.send_replace(frame.to_text().into());
    }
}

#[cfg(test)]
mod tests;
