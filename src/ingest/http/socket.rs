//! Websocket ingest, in the shape of Riemann's `/events`: `GET /events` upgrades, the client
//! sends batches and gets one reply per batch, in order, once the engine applied it. (A reply is
//! the transport's receipt for a batch; "ack" is reserved for an operator's acknowledgement.)
//!
//! A batch is a text frame (a JSON array of events, one event object, or
//! `{"id":…,"events":[…]}` to carry a request id) or a binary frame (a Riemann protobuf `Msg`).
//! The answer is `{"id":…,"ok":true,"accepted":N}` or `{"id":…,"ok":false,"error":"…"}`; the
//! `ok` carries the same promise as a TCP `ok` or a POST's 200 (applied, and durable when a store
//! is used). A batch is all or nothing, as on `POST /api/event`; a refused batch does not end the
//! connection.
//!
//! Two tasks per connection: the reader decodes and submits, the writer waits for each
//! reply in turn and sends it. Between them a queue of [`MAX_IN_FLIGHT`] batches: when
//! it is full the reader stops reading the socket (TCP flow control then stops the client), so a
//! client that never reads its replies holds at most that many batches' answers, never a growing
//! list.
//!
//! What a client can make the server hold without reading is bounded too: the pongs answering
//! its pings ([`MAX_UNSENT_PONG_BYTES`], like `/ws`), the id echoed with each reply
//! ([`MAX_ID_BYTES`]), and a message it leaves unfinished (`inbound`: a deadline and a budget
//! shared by every connection). That last rule needs the bytes below the websocket library, so
//! this endpoint upgrades the connection itself and runs tungstenite on a watched socket.

mod inbound;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream, StreamExt};
use futures_util::SinkExt;
use hyper_util::rt::TokioIo;
use prost::Message as _;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::decode;
use crate::engine::{Applied, EngineError};
use crate::event::{convert, now_micros, Event};
use crate::ingest::json::parse_events;
use crate::proto::Msg;
use crate::web::access::IngestSocket;
use crate::web::error::ApiError;
use crate::web::{self, AppState};

/// Batches read and submitted whose reply is not yet sent, per connection. Past it the
/// reader stops reading the socket until the writer catches up.
pub(crate) const MAX_IN_FLIGHT: usize = 64;

/// Longest batch id, as JSON text (quotes included): it is kept until the batch is answered
/// and echoed then, so 64 waiting ids of 4 MiB held 256 MiB per connection. A request id fits
/// many times over; a longer one refuses its batch (nothing applied) and is answered as `null`.
pub(crate) const MAX_ID_BYTES: usize = 1024;

/// Pong bytes the library may hold for a client that pings without reading, as on `/ws`: past
/// it the connection is closed with 1008 "too many pings" (4 such clients held 1.87 GiB).
const MAX_UNSENT_PONG_BYTES: usize = 64 * 1024;

pub(crate) use inbound::UnfinishedBudget;

/// The socket a session runs on: the upgraded connection, watched for unfinished messages.
type Socket = WebSocketStream<inbound::Inbound<TokioIo<hyper::upgrade::Upgraded>>>;

/// `GET /events`: the ingest token (header or `?token=`) and Origin rules ([`IngestSocket`]),
/// then the websocket connection limit shared with dashboards.
pub(super) async fn upgrade(
    State(app): State<AppState>,
    _: IngestSocket,
    route: MatchedPath,
    Extension(unfinished): Extension<Arc<UnfinishedBudget>>,
    headers: HeaderMap,
    mut request: Request,
) -> Response {
    let Some(permit) = web::ws_permit(&app) else {
        return web::too_many_websockets(&app, route.as_str());
    };
    let (accept, on_upgrade) = match handshake(&headers, &mut request) {
        Ok(found) => found,
        Err(refused) => return refused.into_response(),
    };
    let tasks = app.tasks.clone();
    tasks.spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let io = inbound::Inbound::new(TokioIo::new(upgraded), unfinished, app.body_timeout);
        let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config(&app))).await;
        run(socket, app, permit).await;
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    response_headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    response_headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// Checks the request is a websocket upgrade (RFC 6455 §4.2.1) and takes what answers it:
/// the accept key and the connection once upgraded.
fn handshake(
    headers: &HeaderMap,
    request: &mut Request,
) -> Result<(HeaderValue, hyper::upgrade::OnUpgrade), ApiError> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .unwrap_or_default()
                .split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "GET /events is a websocket: send Connection: upgrade, Upgrade: websocket",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Version must be 13",
        ));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key is missing",
        ));
    };
    let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad Sec-WebSocket-Key"))?;
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "this connection cannot be upgraded",
        ));
    };
    Ok((accept, on_upgrade))
}

/// The dashboards' buffer sizes (`web::configure`); a batch may be as large as a POST body.
fn config(app: &AppState) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(web::WS_READ_BUFFER)
        .write_buffer_size(web::WS_WRITE_BUFFER)
        .max_write_buffer_size(usize::MAX)
        .max_message_size(Some(app.max_body_bytes))
        .max_frame_size(Some(app.max_body_bytes))
}

/// Pong bytes tungstenite may hold unsent for this client, counted by the reader (each ping it
/// reads queues a pong) and paid by the writer (each completed flush sends them).
#[derive(Default)]
struct PongDebt {
    bytes: AtomicUsize,
    /// Tells the writer to flush: a pong is waiting.
    flush: Notify,
}

impl PongDebt {
    /// A ping of `payload` bytes was read; false when past [`MAX_UNSENT_PONG_BYTES`].
    fn owe(&self, payload: usize) -> bool {
        // A server's control frame has a 2-byte header.
        let owed = self.bytes.fetch_add(2 + payload, Ordering::Relaxed) + 2 + payload;
        self.flush.notify_one();
        owed <= MAX_UNSENT_PONG_BYTES
    }

    /// A flush that began when `owed` bytes were owed has completed.
    fn paid(&self, owed: usize) {
        self.bytes.fetch_sub(owed, Ordering::Relaxed);
    }
}

/// What the reader hands the writer, in the order of the client's messages.
enum Item {
    Batch(InFlight),
    /// The reader stopped on a message it cannot take: close with this code once every earlier
    /// batch is answered.
    Close(CloseFrame),
}

/// One batch on its way: its id, and its answer or the engine's receipt for it.
struct InFlight {
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

/// How long a connection closed for what it sent keeps reading (and discarding) its input.
const LINGER: Duration = Duration::from_secs(1);

/// Serves one connection until it closes.
async fn run(socket: Socket, mut app: AppState, _permit: OwnedSemaphorePermit) {
    // Its own handle: its batches take effect in the order it sent them (cluster mode).
    app.engine = app.engine.for_connection();
    let (sink, mut stream) = socket.split();
    let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
    // Milliseconds since `start` at which the client last sent anything (pongs included).
    let start = Instant::now();
    let heard = Arc::new(AtomicU64::new(0));
    let pongs = Arc::new(PongDebt::default());
    let reader = read(
        &mut stream,
        app.clone(),
        tx,
        Arc::clone(&heard),
        Arc::clone(&pongs),
        start,
    );
    let writer = write(sink, app, rx, heard, pongs, start);
    // The writer ends when the reader has ended and every reply is sent, or on a write failure
    // (then the reader is dropped with it).
    let mut linger = false;
    let sink = tokio::select! {
        sink = writer => sink,
        () = async { linger = reader.await; std::future::pending::<()>().await } => None,
    };
    // Closing a socket with unread input sends RST, which can destroy the close frame before
    // the client reads it: read on for a moment, discarding below the websocket library (so
    // nothing more is buffered, and no pong queued).
    if let (true, Some(sink)) = (linger, sink) {
        if let Ok(mut socket) = stream.reunite(sink) {
            let _ = tokio::time::timeout(LINGER, socket.get_mut().discard_input()).await;
        }
    }
}

/// Reads batches until the client closes or sends what ends the connection; true when it
/// queued a close frame for the writer (the connection then lingers).
async fn read(
    stream: &mut SplitStream<Socket>,
    app: AppState,
    tx: mpsc::Sender<Item>,
    heard: Arc<AtomicU64>,
    pongs: Arc<PongDebt>,
    start: Instant,
) -> bool {
    loop {
        // Waits for queue space first: with MAX_IN_FLIGHT replies waiting, the socket is not read.
        let Ok(slot) = tx.reserve().await else {
            return false;
        };
        let message = tokio::select! {
            _ = app.shutdown.cancelled() => return false,
            message = stream.next() => message,
        };
        heard.store(elapsed_ms(start), Ordering::Relaxed);
        let in_flight = match message {
            Some(Ok(Message::Text(text))) => text_batch(&app, Bytes::from(text)).await,
            Some(Ok(Message::Binary(body))) => binary_batch(&app, body).await,
            Some(Ok(Message::Ping(payload))) => {
                if pongs.owe(payload.len()) {
                    continue;
                }
                // No more reading: each ping read queues another pong.
                slot.send(close(1008, "too many pings".into()));
                return true;
            }
            Some(Ok(Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Err(WsError::Io(error))) if inbound::Refused::of(&error).is_some() => {
                if let Some(why) = inbound::Refused::of(&error) {
                    slot.send(close(why.close_code(), why.to_string()));
                }
                return true;
            }
            Some(Err(WsError::Capacity(_))) => {
                let reason = format!(
                    "message exceeds {} bytes (--max-body-bytes)",
                    app.max_body_bytes
                );
                slot.send(close(1009, reason));
                return true;
            }
            Some(Err(WsError::Utf8(_))) => {
                slot.send(close(1007, "text message is not valid UTF-8".into()));
                return true;
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return false,
        };
        let closed = matches!(
            &in_flight.outcome,
            Outcome::Refused(error) if error == &EngineError::Closed.to_string()
        );
        slot.send(Item::Batch(in_flight));
        if closed {
            return false;
        }
    }
}

/// The close frame that ends the connection once earlier batches are answered.
fn close(code: u16, reason: String) -> Item {
    Item::Close(CloseFrame {
        code: code.into(),
        reason: reason.into(),
    })
}

/// A JSON batch: the envelope `{"id":…,"events":[…]}`, or events as `POST /api/event` takes them.
async fn text_batch(app: &AppState, body: Bytes) -> InFlight {
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
        #[serde(borrow)]
        events: Option<&'a RawValue>,
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let (id, events) = match first {
        Some(b'{') => match serde_json::from_slice::<Envelope>(&body) {
            Ok(Envelope {
                id: Some(id),
                events: Some(_),
            }) if id.get().len() > MAX_ID_BYTES => {
                let error = format!(
                    "batch id of {} bytes exceeds the {MAX_ID_BYTES}-byte limit; nothing applied",
                    id.get().len()
                );
                return refused(None, error);
            }
            Ok(Envelope {
                id,
                events: Some(events),
            }) => (
                id.map(RawValue::to_owned),
                body.slice_ref(events.get().as_bytes()),
            ),
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
async fn binary_batch(app: &AppState, body: Bytes) -> InFlight {
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
async fn submit(app: &AppState, id: Option<Box<RawValue>>, events: Vec<Event>) -> InFlight {
    let accepted = events.len();
    if accepted == 0 {
        return InFlight {
            id,
            outcome: Outcome::Accepted(0),
        };
    }
    let outcome = match app.engine.submit(events).await {
        Ok(applied) => Outcome::Submitted { accepted, applied },
        Err(error) => Outcome::Refused(error.to_string()),
    };
    InFlight { id, outcome }
}

fn refused(id: Option<Box<RawValue>>, error: String) -> InFlight {
    InFlight {
        id,
        outcome: Outcome::Refused(error),
    }
}

async fn write(
    mut sink: SplitSink<Socket, Message>,
    app: AppState,
    mut rx: mpsc::Receiver<Item>,
    heard: Arc<AtomicU64>,
    pongs: Arc<PongDebt>,
    start: Instant,
) -> Option<SplitSink<Socket, Message>> {
    let ping_every = app.ws.ping_interval;
    let silence_limit = ping_every + app.ws.pong_timeout;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut close = None;
    loop {
        let frame = tokio::select! {
            item = rx.recv() => match item {
                Some(Item::Batch(in_flight)) => Message::Text(answer(in_flight).await.into()),
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
            // Pongs tungstenite queued for pings read: send them now.
            () = pongs.flush.notified() => {
                let owed = pongs.bytes.load(Ordering::Relaxed);
                match tokio::time::timeout(app.ws.write_timeout, sink.flush()).await {
                    Ok(Ok(())) => pongs.paid(owed),
                    Ok(Err(_)) | Err(_) => return None,
                }
                continue;
            }
        };
        let owed = pongs.bytes.load(Ordering::Relaxed);
        match tokio::time::timeout(app.ws.write_timeout, sink.send(frame)).await {
            Ok(Ok(())) => pongs.paid(owed),
            Ok(Err(_)) | Err(_) => return None,
        }
    }
    let sent = tokio::time::timeout(app.ws.write_timeout, sink.send(Message::Close(close))).await;
    if matches!(sent, Ok(Err(_))) {
        // The client closed first: tungstenite refuses a Close of ours and has queued its reply
        // to the client's (RFC 6455 §5.5.1), which leaves with a flush.
        let _ = tokio::time::timeout(app.ws.write_timeout, sink.flush()).await;
        return None;
    }
    matches!(sent, Ok(Ok(()))).then_some(sink)
}

/// Waits for the engine's receipt for the batch and renders the reply frame.
async fn answer(in_flight: InFlight) -> String {
    let result = match in_flight.outcome {
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
    let id = in_flight.id.as_deref().map_or("null", RawValue::get);
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
