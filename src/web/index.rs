//! Riemann-compatible `/index`: what riemann-dash and Riemann's websocket clients speak.
//!
//! `GET /index?subscribe=true&query=Q` as a websocket sends every matching indexed event as one
//! JSON text frame each, then every later matching index update (not only changes). Without
//! `subscribe=true` it closes after the snapshot. As a plain GET it is a server-sent event stream
//! (`data: <json>\n\n`), snapshot then live. The subscription is taken together with the snapshot,
//! so nothing falls between them (Riemann itself has a race there).
//!
//! Both forms hold a slot of `--max-ws-connections` for their lifetime (past it: 503 +
//! `Retry-After`). A browser's `EventSource` from another origin needs CORS: an `Origin` that
//! passes the dashboard origin check (same-origin or `--allowed-origin`) is echoed in
//! `Access-Control-Allow-Origin`; a foreign one gets 403, as on the websocket.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, MatchedPath, Query as UrlQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, Stream};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::OwnedSemaphorePermit;

use super::access::DashboardWatch;
use super::error::ApiError;
use super::{AppState, SubscribeParams};
use crate::event::Event;
use crate::metrics::{Connected, Dashboard};
use crate::protocol::EventItem;
use crate::query::Query;

pub(crate) async fn index(
    State(app): State<AppState>,
    _: DashboardWatch,
    route: MatchedPath,
    UrlQuery(params): UrlQuery<SubscribeParams>,
    request: Request,
) -> Response {
    let subscribe = params.subscribe.as_deref() == Some("true");
    let (mut parts, _body) = request.into_parts();
    let filter = match super::api::filter(&params).await {
        Ok(filter) => filter,
        Err(error) => return error.into_response(),
    };
    let is_upgrade = parts
        .headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if !is_upgrade {
        let mut response = sse(app, filter, &route).await;
        allow_origin(&parts.headers, response.headers_mut());
        return response;
    }
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &app).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let Some(permit) = super::ws_permit(&app) else {
        return super::too_many_websockets(&app, route.as_str());
    };
    let tasks = app.tasks.clone();
    super::configure(upgrade).on_upgrade(move |socket| {
        tasks.track_future(async move {
            stream_websocket(socket, app, filter, subscribe).await;
            drop(permit);
        })
    })
}

fn keep(filter: &Option<Query>, event: &Event) -> bool {
    filter.as_ref().is_none_or(|q| q.matches(event))
}

/// The `/index` websocket: the matching index, then (when subscribed) its updates — the index
/// again after falling behind — until either side ends it.
async fn stream_websocket(
    mut socket: WebSocket,
    app: AppState,
    filter: Option<Query>,
    subscribe: bool,
) {
    let _connected = Connected::new(&app.counters, Dashboard::IndexWebsocket);
    let Ok(mut sub) = app.engine.subscribe_updates().await else {
        return;
    };
    let timeout = app.ws.write_timeout;
    loop {
        if !send_snapshot(&mut socket, &sub.snapshot.events, &filter, timeout).await {
            return;
        }
        if !subscribe {
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
        if stream_live(&mut socket, &mut sub.updates, &filter, &app).await == Live::Ended {
            return;
        }
        match app.engine.subscribe_updates().await {
            Ok(fresh) => sub = fresh,
            Err(_) => return,
        }
    }
}

/// Sends the matching events of a snapshot, one text frame each, and flushes them; false when
/// the client did not take them within `timeout` (or went away).
async fn send_snapshot(
    socket: &mut WebSocket,
    events: &[Arc<Event>],
    filter: &Option<Query>,
    timeout: Duration,
) -> bool {
    for event in events.iter().filter(|e| keep(filter, e)) {
        let frame = Message::Text(EventItem(event).to_text().into());
        if !matches!(
            tokio::time::timeout(timeout, socket.feed(frame)).await,
            Ok(Ok(()))
        ) {
            return false;
        }
    }
    flushed(socket, timeout).await
}

/// How a live stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Live {
    /// The client fell behind the updates: it is resent the index, which Riemann clients treat
    /// as updates (like a `/ws` dashboard's resync).
    Resync,
    /// The client went, the server stops, or a write timed out: the connection is over.
    Ended,
}

/// Live updates until the client goes, the server stops, or the client falls behind.
async fn stream_live(
    socket: &mut WebSocket,
    updates: &mut tokio::sync::broadcast::Receiver<Arc<Event>>,
    filter: &Option<Query>,
    app: &AppState,
) -> Live {
    let timeout = app.ws.write_timeout;
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => {
                close(socket, 1001, "server shutting down", timeout).await;
                return Live::Ended;
            }
            incoming = socket.recv() => match answer(&incoming) {
                Incoming::Ignore => {}
                Incoming::FlushPong => {
                    if !flushed(socket, timeout).await {
                        return Live::Ended;
                    }
                }
                Incoming::FlushClose => {
                    let _ = tokio::time::timeout(timeout, socket.flush()).await;
                    return Live::Ended;
                }
                Incoming::CloseInvalidUtf8 => {
                    close(socket, 1007, "text message is not valid UTF-8", timeout).await;
                    return Live::Ended;
                }
                Incoming::Gone => return Live::Ended,
            },
            update = updates.recv() => match update {
                Ok(event) => {
                    if keep(filter, &event) {
                        let frame = Message::Text(EventItem(&event).to_text().into());
                        if !matches!(tokio::time::timeout(timeout, socket.send(frame)).await, Ok(Ok(()))) {
                            return Live::Ended;
                        }
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    crate::metrics::Counters::add(&app.counters.ws_resyncs, 1);
                    return Live::Resync;
                }
                Err(RecvError::Closed) => return Live::Ended,
            },
        }
    }
}

/// What the `/index` websocket does with what the client sent (it reads only to answer
/// control frames and notice the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Incoming {
    /// A data frame: nothing to do.
    Ignore,
    /// A ping: tungstenite queued a pong, which leaves with a flush before the next read — so
    /// a client that pings without reading holds one pong, not one per ping, until the write
    /// timeout drops it.
    FlushPong,
    /// The client's Close: tungstenite queued the reply, which leaves with a flush (RFC 6455
    /// §5.5.1), not when the socket is dropped; then the connection is over.
    FlushClose,
    /// A text message that is not UTF-8: closed with 1007.
    CloseInvalidUtf8,
    /// A read error or the end of the stream.
    Gone,
}

/// The decision for one read of the client's side (see [`Incoming`]).
fn answer(incoming: &Option<Result<Message, axum::Error>>) -> Incoming {
    match incoming {
        Some(Err(error)) if super::is_invalid_utf8(error) => Incoming::CloseInvalidUtf8,
        Some(Ok(Message::Close(_))) => Incoming::FlushClose,
        Some(Err(_)) | None => Incoming::Gone,
        Some(Ok(Message::Ping(_))) => Incoming::FlushPong,
        Some(Ok(_)) => Incoming::Ignore,
    }
}

/// Whether what is queued on `socket` left within `timeout`.
async fn flushed(socket: &mut WebSocket, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, socket.flush()).await,
        Ok(Ok(()))
    )
}

/// Sends a Close frame with `code` and `reason`, waiting at most `timeout` (the connection ends
/// either way).
async fn close(socket: &mut WebSocket, code: u16, reason: &'static str, timeout: Duration) {
    let close = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(timeout, socket.send(Message::Close(Some(close)))).await;
}

/// CORS for the event stream: echoes an `Origin` the dashboard check already accepted (a
/// foreign one never gets here), so a browser on another allowed origin may read the stream.
fn allow_origin(request: &HeaderMap, response: &mut HeaderMap) {
    // The answer depends on Origin: caches must not serve one origin's answer to another.
    response.append(header::VARY, HeaderValue::from_static("origin"));
    if let Some(origin) = request.get(header::ORIGIN) {
        response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
}

/// The event stream, holding a connection slot as long as it lives.
async fn sse(app: AppState, filter: Option<Query>, route: &MatchedPath) -> Response {
    let Some(permit) = super::ws_permit(&app) else {
        return super::too_many_websockets(&app, route.as_str());
    };
    let sub = match app.engine.subscribe_updates().await {
        Ok(sub) => sub,
        Err(error) => return ApiError::unavailable(error).into_response(),
    };
    let filter = Arc::new(filter);
    let shutdown = app.shutdown.clone();
    let snapshot: Vec<Arc<Event>> = sub
        .snapshot
        .events
        .into_iter()
        .filter(|e| keep(&filter, e))
        .collect();
    let connected = Connected::new(&app.counters, Dashboard::Sse);
    let stream = sse_stream(snapshot, sub.updates, filter, shutdown, (permit, connected));
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn sse_stream(
    snapshot: Vec<Arc<Event>>,
    updates: tokio::sync::broadcast::Receiver<Arc<Event>>,
    filter: Arc<Option<Query>>,
    shutdown: tokio_util::sync::CancellationToken,
    permit: (OwnedSemaphorePermit, Connected),
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let snapshot = futures_util::stream::iter(snapshot);
    // The permit (and the count of open streams) lives in the stream's state: it is released
    // when the stream ends or the response body is dropped (the client went away).
    let live = futures_util::stream::unfold(
        (updates, filter, shutdown, permit),
        |(mut updates, filter, shutdown, permit)| async move {
            loop {
                let update = tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    update = updates.recv() => update,
                };
                match update {
                    Ok(event) if keep(&filter, &event) => {
                        return Some((event, (updates, filter, shutdown, permit)))
                    }
                    Ok(_) => {}
                    // A stream has no resync message: the client reconnects and gets the index.
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return None,
                }
            }
        },
    );
    futures_util::StreamExt::map(futures_util::StreamExt::chain(snapshot, live), |event| {
        Ok(SseEvent::default().data(EventItem(&event).to_text()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `/index` websocket's answers to what a client sends (the invalid UTF-8 case needs a
    /// real connection: `tests/it`'s hardening_ws covers it).
    #[test]
    fn pings_are_flushed_a_close_is_answered_and_data_is_ignored() {
        assert_eq!(
            answer(&Some(Ok(Message::Ping(Default::default())))),
            Incoming::FlushPong
        );
        assert_eq!(
            answer(&Some(Ok(Message::Close(None)))),
            Incoming::FlushClose
        );
        assert_eq!(
            answer(&Some(Ok(Message::Text("x".into())))),
            Incoming::Ignore
        );
        assert_eq!(
            answer(&Some(Ok(Message::Pong(Default::default())))),
            Incoming::Ignore
        );
        assert_eq!(answer(&None), Incoming::Gone);
        let error = axum::Error::new(std::io::Error::other("reset"));
        assert_eq!(answer(&Some(Err(error))), Incoming::Gone);
    }
}
