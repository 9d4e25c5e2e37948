//! Websocket ingest, in the shape of Riemann's `/events`: `GET /events` upgrades, the client
//! sends batches and gets one acknowledgement per batch, in order, once the engine applied it.
//!
//! A batch is a text frame (a JSON array of events, one event object, or
//! `{"id":…,"events":[…]}` to carry a request id) or a binary frame (a Riemann protobuf `Msg`).
//! The answer is `{"id":…,"ok":true,"accepted":N}` or `{"id":…,"ok":false,"error":"…"}`; the
//! `ok` carries the same promise as a TCP `ok` or a POST's 200 (applied, and durable when a store
//! is used). A batch is all or nothing, as on `POST /api/event`; a refused batch does not end the
//! connection.
//!
//! Two tasks per connection: the reader decodes and submits, the writer waits for each
//! acknowledgement in turn and sends it. Between them a queue of [`MAX_IN_FLIGHT`] batches: when
//! it is full the reader stops reading the socket (TCP flow control then stops the client), so a
//! client that never reads its acks holds at most that many batches' answers, never a growing
//! list.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query as UrlQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream, StreamExt};
use futures_util::SinkExt;
use prost::Message as _;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use super::api::decode;
use super::AppState;
use crate::engine::{Applied, EngineError};
use crate::event::{convert, now_micros, Event};
use crate::ingest::json::parse_events;
use crate::metrics::Refusal;
use crate::proto::Msg;

/// Batches read and submitted whose acknowledgement is not yet sent, per connection. Past it the
/// reader stops reading the socket until the writer catches up.
pub(crate) const MAX_IN_FLIGHT: usize = 64;

/// `?token=` for clients that cannot set headers on a websocket (browsers).
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct EventsParams {
    token: Option<String>,
}

/// `GET /events`: the ingest token and Origin rules of `POST /api/event`, then the websocket
/// connection limit shared with dashboards.
pub(crate) async fn upgrade(
    State(app): State<AppState>,
    UrlQuery(params): UrlQuery<EventsParams>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let admitted = app
        .access
        .check_ingest_ws(&headers, params.token.as_deref())
        .map_err(|denied| app.refused(Refusal::Token, "/events", denied))
        .and_then(|()| {
            app.access
                .check_origin(&headers)
                .map_err(|denied| app.refused(Refusal::Origin, "/events", denied))
        });
    if let Err(denied) = admitted {
        return denied.into_response();
    }
    let Some(permit) = super::ws_permit(&app) else {
        return super::too_many_websockets(&app, "/events");
    };
    let tasks = app.tasks.clone();
    // A batch may be as large as a POST body.
    let max = app.max_body_bytes;
    super::configure(upgrade)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| tasks.track_future(run(socket, app, permit)))
}

/// What the reader hands the writer, in the order of the client's messages.
enum Item {
    Batch(Pending),
    /// The reader stopped on a message it cannot take: close with this code once every earlier
    /// batch is acknowledged.
    Close(CloseFrame),
}

/// One batch on its way: its id, and its answer or the engine's receipt for it.
struct Pending {
    id: Option<Box<RawValue>>,
    outcome: Outcome,
}

enum Outcome {
    Accepted(usize),
    Refused(String),
    Submitted {
        accepted: usize,
        applied: oneshot::Receiver<Applied>,
    },
}

async fn run(socket: WebSocket, mut app: AppState, _permit: OwnedSemaphorePermit) {
    // Its own handle: its batches take effect in the order it sent them (cluster mode).
    app.engine = app.engine.for_connection();
    let (sink, stream) = socket.split();
    let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
    // Milliseconds since `start` at which the client last sent anything (pongs included).
    let start = Instant::now();
    let heard = Arc::new(AtomicU64::new(0));
    let reader = read(stream, app.clone(), tx, Arc::clone(&heard), start);
    let writer = write(sink, app, rx, heard, start);
    // The writer ends when the reader has ended and every ack is sent, or on a write failure
    // (then the reader is dropped with it).
    tokio::select! {
        () = writer => {}
        () = async { reader.await; std::future::pending::<()>().await } => {}
    }
}

async fn read(
    mut stream: SplitStream<WebSocket>,
    app: AppState,
    tx: mpsc::Sender<Item>,
    heard: Arc<AtomicU64>,
    start: Instant,
) {
    loop {
        // Waits for queue space first: with MAX_IN_FLIGHT answers pending, the socket is not read.
        let Ok(slot) = tx.reserve().await else { return };
        let message = tokio::select! {
            _ = app.shutdown.cancelled() => return,
            message = stream.next() => message,
        };
        heard.store(elapsed_ms(start), Ordering::Relaxed);
        let pending = match message {
            Some(Ok(Message::Text(text))) => text_batch(&app, Bytes::from(text)).await,
            Some(Ok(Message::Binary(body))) => binary_batch(&app, body).await,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Err(error)) if super::is_too_big(&error) => {
                let reason = format!(
                    "message exceeds {} bytes (--max-body-bytes)",
                    app.max_body_bytes
                );
                slot.send(Item::Close(CloseFrame {
                    code: 1009,
                    reason: reason.into(),
                }));
                return;
            }
            Some(Err(error)) if super::is_invalid_utf8(&error) => {
                slot.send(Item::Close(CloseFrame {
                    code: 1007,
                    reason: "text message is not valid UTF-8".into(),
                }));
                return;
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
        };
        let closed = matches!(
            &pending.outcome,
            Outcome::Refused(error) if error == &EngineError::Closed.to_string()
        );
        slot.send(Item::Batch(pending));
        if closed {
            return;
        }
    }
}

/// A JSON batch: the envelope `{"id":…,"events":[…]}`, or events as `POST /api/event` takes them.
async fn text_batch(app: &AppState, body: Bytes) -> Pending {
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        id: Option<Box<RawValue>>,
        #[serde(borrow)]
        events: Option<&'a RawValue>,
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let (id, events) = match first {
        Some(b'{') => match serde_json::from_slice::<Envelope>(&body) {
            Ok(Envelope {
                id,
                events: Some(events),
            }) => (id, body.slice_ref(events.get().as_bytes())),
            // No `events` key: a single event object (decoding says what is wrong with it).
            _ => (None, body.clone()),
        },
        _ => (None, body.clone()),
    };
    match decode(events, app.json_limits, parse_events).await {
        Ok(events) => submit(app, id, events).await,
        Err(error) => refused(id, error.error),
    }
}

/// A Riemann protobuf `Msg` holding events, checked against the limits before it is decoded.
async fn binary_batch(app: &AppState, body: Bytes) -> Pending {
    if let Err(error) = convert::check_limits(&body, &app.json_limits) {
        return refused(None, error.to_string());
    }
    let msg = match Msg::decode(body) {
        Ok(msg) => msg,
        Err(error) => return refused(None, format!("invalid protobuf Msg: {error}")),
    };
    if msg.query.is_some() {
        return refused(None, "queries are not answered on /events".into());
    }
    let now = now_micros();
    let events = convert::events_from_proto(msg.events, now).collect();
    submit(app, None, events).await
}

/// Hands the batch to the engine (waiting for queue space: backpressure).
async fn submit(app: &AppState, id: Option<Box<RawValue>>, events: Vec<Event>) -> Pending {
    let accepted = events.len();
    if accepted == 0 {
        return Pending {
            id,
            outcome: Outcome::Accepted(0),
        };
    }
    let outcome = match app.engine.submit(events).await {
        Ok(applied) => Outcome::Submitted { accepted, applied },
        Err(error) => Outcome::Refused(error.to_string()),
    };
    Pending { id, outcome }
}

fn refused(id: Option<Box<RawValue>>, error: String) -> Pending {
    Pending {
        id,
        outcome: Outcome::Refused(error),
    }
}

async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    app: AppState,
    mut rx: mpsc::Receiver<Item>,
    heard: Arc<AtomicU64>,
    start: Instant,
) {
    let ping_every = app.ws.ping_interval;
    let silence_limit = ping_every + app.ws.pong_timeout;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut close = None;
    loop {
        let frame = tokio::select! {
            item = rx.recv() => match item {
                Some(Item::Batch(pending)) => Message::Text(answer(pending).await.into()),
                Some(Item::Close(frame)) => {
                    close = Some(frame);
                    break;
                }
                None => break,
            },
            _ = ping.tick() => {
                let silent = elapsed_ms(start).saturating_sub(heard.load(Ordering::Relaxed));
                if Duration::from_millis(silent) > silence_limit {
                    tracing::debug!("/events client silent past --ws-pong-timeout; closing");
                    break;
                }
                Message::Ping(Bytes::new())
            }
        };
        match tokio::time::timeout(app.ws.write_timeout, sink.send(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
    let _ = tokio::time::timeout(app.ws.write_timeout, sink.send(Message::Close(close))).await;
}

/// Waits for the batch's acknowledgement and renders the ack frame.
async fn answer(pending: Pending) -> String {
    let result = match pending.outcome {
        Outcome::Accepted(n) => Ok(n),
        Outcome::Refused(error) => Err(error),
        Outcome::Submitted { accepted, applied } => match applied.await {
            Ok(applied) => applied
                .finished()
                .await
                .map(|()| accepted)
                .map_err(|e| e.to_string()),
            Err(_) => Err(EngineError::Closed.to_string()),
        },
    };
    let id = pending.id.as_deref().map_or("null", RawValue::get);
    match result {
        Ok(n) => format!(r#"{{"id":{id},"ok":true,"accepted":{n}}}"#),
        Err(error) => format!(
            r#"{{"id":{id},"ok":false,"error":{}}}"#,
            serde_json::Value::String(error)
        ),
    }
}

fn elapsed_ms(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}
