//! JSON HTTP endpoints: event ingest and the Prometheus counters.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::access::Denied;
use super::AppState;
use crate::engine::EngineError;
use crate::event::now_micros;
use crate::ingest::json::parse_events;
use crate::metrics::Counters;

/// `POST /api/event`: one event object or an array; all applied, or none.
///
/// Accepted whatever the Content-Type: scripts and Riemann's forwarders are not consistent about
/// it, and the body's shape is what matters. The 200 is sent once the engine has applied the batch.
pub async fn post_event(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(denied) = app.access.check_ingest(&headers) {
        Counters::add(&app.counters.http_rejected, 1);
        return denied.into_response();
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            Counters::add(&app.counters.http_rejected, 1);
            let status = rejection.status();
            let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!("body exceeds the {} byte limit", app.max_body_bytes)
            } else {
                rejection.body_text()
            };
            return error_response(status, error);
        }
    };
    let events = match parse_events(&body, now_micros()) {
        Ok(events) => events,
        Err(error) => {
            Counters::add(&app.counters.http_rejected, 1);
            return error_response(StatusCode::BAD_REQUEST, error.to_string());
        }
    };
    let accepted = events.len();
    match app.engine.apply(events).await {
        Ok(()) => Json(json!({"ok": true, "accepted": accepted})).into_response(),
        // Refused whole, by design: a client error to fix or a limit to raise, not an outage.
        Err(error @ EngineError::IndexFull { .. }) => {
            Counters::add(&app.counters.http_rejected, 1);
            error_response(StatusCode::INSUFFICIENT_STORAGE, error.to_string())
        }
        Err(error) => error_response(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    }
}

/// `GET /api/state?query=Q`: the matching indexed events as a JSON array (default: all).
pub async fn state(
    State(app): State<AppState>,
    axum::extract::Query(params): axum::extract::Query<super::SubscribeParams>,
    headers: HeaderMap,
) -> Response {
    let filter = match dashboard_filter(&app, &headers, &params).await {
        Ok(filter) => filter,
        Err(denied) => return denied.into_response(),
    };
    match app.engine.snapshot().await {
        Ok(snapshot) => {
            let events: Vec<serde_json::Value> = snapshot
                .events
                .iter()
                .filter(|e| filter.as_ref().is_none_or(|q| q.matches(e)))
                .map(|e| e.to_json_value())
                .collect();
            Json(events).into_response()
        }
        Err(error) => error_response(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    }
}

/// The checks every dashboard read starts with: the token, then the `query` parameter.
async fn dashboard_filter(
    app: &AppState,
    headers: &HeaderMap,
    params: &super::SubscribeParams,
) -> Result<Option<crate::query::Query>, Denied> {
    app.access
        .check_dashboard(headers, params.token.as_deref())?;
    super::ws::parse_filter(params.query.as_deref())
        .await
        .map_err(|error| Denied {
            status: StatusCode::BAD_REQUEST,
            error,
        })
}

/// Most transitions one `/api/history` request returns.
const MAX_HISTORY_LIMIT: usize = 10_000;

/// `GET /api/history?query=Q&since=SEQ&limit=N`: transitions after `since`, oldest first.
///
/// Answers `{"epoch":E,"oldest_seq":O,"changes":[…]}` where each change has the websocket change
/// shape; a transition matches when the event before or after it matches Q.
pub async fn history(
    State(app): State<AppState>,
    axum::extract::Query(params): axum::extract::Query<super::SubscribeParams>,
    headers: HeaderMap,
) -> Response {
    let filter = match dashboard_filter(&app, &headers, &params).await {
        Ok(filter) => filter,
        Err(denied) => return denied.into_response(),
    };
    let Some(store) = app.store.clone() else {
        return error_response(
            StatusCode::NOT_FOUND,
            "history is not kept: the server runs with --data-dir off".to_owned(),
        );
    };
    let since = params.since.unwrap_or(0);
    let limit = params.limit.unwrap_or(1000).clamp(1, MAX_HISTORY_LIMIT);
    // Changes reach history a few milliseconds after they are published: wait for those applied
    // so far, so a client never misses one it has already seen live.
    if app.engine.sync().await.is_err() {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "server is shutting down".to_owned(),
        );
    }
    let read = tokio::task::spawn_blocking(move || {
        let wants = |c: &crate::store::StoredChange| match &filter {
            None => true,
            Some(q) => q.matches_transition(&c.event(), c.previous().as_ref()),
        };
        let changes = store.history(since, limit, wants)?;
        Ok::<_, crate::store::StoreError>((store.oldest_seq()?, changes))
    })
    .await;
    match read {
        Ok(Ok((oldest, changes))) => {
            let changes: Vec<serde_json::Value> = changes
                .into_iter()
                .map(|c| crate::broadcast::change_json(&c.into_change()))
                .collect();
            Json(json!({"epoch": app.epoch, "oldest_seq": oldest, "changes": changes}))
                .into_response()
        }
        // Storage failing (a full disk; the database is reopened once it works): temporary.
        Ok(Err(error)) => error_response(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
        Err(error) => error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

/// `GET /metrics`: counters in Prometheus text format.
pub async fn metrics(State(app): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        app.counters.render_prometheus(),
    )
        .into_response()
}

pub fn error_response(status: StatusCode, error: String) -> Response {
    (status, Json(json!({"ok": false, "error": error}))).into_response()
}
