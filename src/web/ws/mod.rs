//! The dashboard websocket `/ws`: snapshot, then changes, then stats — without ever slowing
//! anyone else.
//!
//! This module upgrades the connection ([`upgrade`]) and holds what the session is configured
//! with; `session` is the connection's task (reading, pinging, taking changes, writing) and
//! `outbox` its bounded queue of frames. Resume replays come from `web::history`.
//!
//! Each client is one task that owns both halves of its socket. What it decides to send goes into
//! a small local outbox (bounded in bytes by `--ws-queue-bytes`); whenever the socket can take
//! data, every queued frame is fed to the socket and flushed once.
//!
//! Why one task and not a session plus a writer: at a thousand clients a change costs a wake-up
//! per client, and with two tasks it cost two (session → channel → writer) plus an atomic byte
//! counter, a `Notify` and a split-lock hand-off per frame; profiles of the fan-out showed that
//! hand-off, not serialization, as the per-delivery cost. One task is also ~2 KiB less memory
//! per idle connection. Each change is still serialized once (`Published::frame`) and shared by
//! reference count. Whether the frames fed together become one `send` or one per frame is
//! tungstenite's write buffer (`write_buffer_size` in `web::configure`): with 0 every frame is
//! written as it is fed, and at 1,000 clients those per-frame system calls are most of the
//! server's time.
//!
//! Never slowing anyone else: the broadcaster never waits on a client. When a client falls behind
//! (outbox over its byte limit, or its broadcast receiver lagged), the session stops queueing
//! changes, lets the outbox drain and then sends a fresh snapshot marked `reset`: the client is
//! resynchronised, never silently deaf. A client that needs that too often is closed with 1008
//! "slow consumer"; one whose socket takes no data for `--ws-write-timeout` is dropped.

mod live_values;
mod outbox;
mod session;

use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{MatchedPath, Query as UrlQuery, State};
use axum::response::{IntoResponse, Response};

use super::access::DashboardWatch;
use super::{AppState, SubscribeParams};

/// Changes taken from the broadcast receiver per wake-up before the socket gets a turn, so a
/// client that is behind writes in batches instead of first pulling its whole byte budget. With
/// the session's 2 ms rest after a write, at most this many changes per window per client:
/// 128,000 a second. The outbox keeps room for this many once drained.
const DRAIN_BATCH: usize = 256;

/// What every dashboard session is configured with (from the `--ws-*` flags).
#[derive(Debug, Clone)]
pub struct WsConfig {
    pub queue_bytes: usize,
    pub max_resyncs: u32,
    pub write_timeout: Duration,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
}

/// `/ws?since=SEQ&epoch=E`: a reconnecting client's position.
#[derive(Debug, Clone)]
struct Resume {
    since: u64,
    epoch: String,
}

/// `GET /ws?query=Q`: upgrade to a dashboard session, within the connection limit.
///
/// Every check runs before the upgrade is required: a browser only sees a refused upgrade as a
/// failed connection, so the page asks the same URL with a plain GET to learn why (401 token,
/// 400 query, 503 full) and says so instead of reconnecting for ever. A plain GET that passes
/// them all gets the upgrade's own refusal (426), and never a session.
pub(crate) async fn upgrade(
    State(app): State<AppState>,
    _: DashboardWatch,
    route: MatchedPath,
    UrlQuery(params): UrlQuery<SubscribeParams>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let filter = match super::api::filter(&params).await {
        Ok(filter) => filter,
        Err(error) => return error.into_response(),
    };
    let Some(permit) = super::ws_permit(&app) else {
        return super::too_many_websockets(&app, route.as_str());
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(not_an_upgrade) => return not_an_upgrade.into_response(),
    };
    let tasks = app.tasks.clone();
    let resume = params.since.map(|since| Resume {
        since,
        epoch: params.epoch.clone().unwrap_or_default(),
    });
    let batch = params.batch.unwrap_or(false);
    super::configure(upgrade).on_upgrade(move |socket| {
        tasks.track_future(session::run(socket, app, filter, resume, batch, permit))
    })
}
