//! The operator-action API: acknowledge, silence, clear (`POST /api/ack`, `DELETE /api/ack`,
//! `POST /api/unack`, `GET /api/acks`, `POST /api/silence`, `PUT`/`DELETE /api/silence/{id}`,
//! `GET /api/silences`, `POST /api/clear`).
//!
//! A handler checks what it can alone — who may call (in its signature: [`OperatorAct`] for
//! writes, [`DashboardRead`] for reads), the body's size ([`ActionBody`]) and shape, the lengths,
//! the times, the query's syntax (compiled off the async workers) — then hands the engine an
//! [`Action`] stamped with this server's clock and waits for its answer. Whether the key exists,
//! is a problem, or the silence exists is the engine's to decide, in input order (in a cluster
//! every node decides the same); a refusal means nothing was applied. The 200 comes once the
//! action's records are out (durable, with a store), with the `seq` of its first record.

use axum::extract::{MatchedPath, Path, Query as UrlQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::access::{DashboardRead, OperatorAct};
use super::body::{BodyLimit, BodyRules, BoundedBody};
use super::error::ApiError;
use super::{AppState, SubscribeParams};
use crate::action::{Action, ActionKind, ActionRefusal, MAX_BY, MAX_NOTE, MAX_SILENCE_QUERY};
use crate::engine::{ActionApplied, EngineError};
use crate::event::now_micros;
use crate::metrics::Counters;
use crate::protocol::answers::{ActionDone, SilenceDone, SilenceList};
use crate::protocol::{Items, SilenceItem};
use crate::query::Query;

/// Largest action body: a query, a note and names fit with room to spare.
pub(crate) const MAX_ACTION_BODY: usize = 16 * 1024;

/// The body of an action: at most [`MAX_ACTION_BODY`].
pub(crate) struct ActionBody;

impl BodyLimit for ActionBody {
    fn max_bytes(_: &BodyRules) -> usize {
        MAX_ACTION_BODY
    }
    const OF: &'static str = " of an action";
}

/// An action's body, read within its bounds by [`BoundedBody`].
type Body = BoundedBody<ActionBody>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    host: Option<String>,
    service: Option<String>,
    #[serde(default)]
    note: String,
    by: String,
    expires_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyParams {
    host: Option<String>,
    service: Option<String>,
    by: Option<String>,
    /// A token (ingest or dashboard), as browsers pass it elsewhere: allowed here, read by
    /// [`OperatorAct`].
    #[serde(rename = "token")]
    _token: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnackBody {
    host: Option<String>,
    service: Option<String>,
    by: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceBody {
    query: String,
    #[serde(default)]
    comment: String,
    by: String,
    starts_at: Option<String>,
    ends_at: Option<String>,
    duration: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClearBody {
    host: Option<String>,
    service: Option<String>,
    by: String,
}

/// `POST /api/ack`.
pub(crate) async fn ack(
    State(app): State<AppState>,
    _: OperatorAct,
    route: MatchedPath,
    BoundedBody(body, _): Body,
) -> Response {
    respond(&app, &route, async {
        let body: AckBody = json(&body)?;
        let at = now_micros();
        let by = check_by(body.by)?;
        check_len("note", &body.note, MAX_NOTE)?;
        let expires_at = body
            .expires_at
            .as_deref()
            .map(|t| future_time("expires_at", t, at))
            .transpose()?;
        let kind = ActionKind::Ack {
            host: body.host,
            service: body.service,
            note: body.note,
            expires_at,
        };
        submit(
            &app,
            Action {
                at_micros: at,
                by,
                kind,
            },
        )
        .await
    })
    .await
}

/// `DELETE /api/ack?host=H&service=S&by=B`.
pub(crate) async fn delete_ack(
    State(app): State<AppState>,
    _: OperatorAct,
    route: MatchedPath,
    params: Result<UrlQuery<KeyParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    respond(&app, &route, async {
        let UrlQuery(params) = params.map_err(|e| bad(e.body_text()))?;
        unack(&app, params.host, params.service, params.by).await
    })
    .await
}

/// `POST /api/unack`.
pub(crate) async fn post_unack(
    State(app): State<AppState>,
    _: OperatorAct,
    route: MatchedPath,
    BoundedBody(body, _): Body,
) -> Response {
    respond(&app, &route, async {
        let body: UnackBody = json(&body)?;
        unack(&app, body.host, body.service, body.by).await
    })
    .await
}

async fn unack(
    app: &AppState,
    host: Option<String>,
    service: Option<String>,
    by: Option<String>,
) -> Result<ActionDone, ApiError> {
    let by = by.map(check_by).transpose()?.unwrap_or_default();
    submit(app, Action::now(by, ActionKind::Unack { host, service })).await
}

/// `POST /api/silence`: a new silence; its id is the `seq` of the action.
pub(crate) async fn create_silence(
    State(app): State<AppState>,
    _: OperatorAct,
    route: MatchedPath,
    BoundedBody(body, _): Body,
) -> Response {
    respond(&app, &route, async {
        let body: SilenceBody = json(&body)?;
        let action = silence_action(body, None).await?;
        let ActionDone { seq, .. } = submit(&app, action).await?;
        // A new silence's id is its action's seq.
        Ok(SilenceDone::new(seq, seq))
    })
    .await
}

/// `PUT /api/silence/{id}`: replaces silence `id` (same id, same creation time).
pub(crate) async fn edit_silence(
    State(app): State<AppState>,
    _: OperatorAct,
    route: MatchedPath,
    Path(id): Path<String>,
    BoundedBody(body, _): Body,
) -> Response {
    respond(&app, &route, async {
        let body: SilenceBody = json(&body)?;
        let id = silence_id(&id)?;
        let action = silence_action(body, Some(id)).await?;
        let ActionDone { seq, .. } = submit(&app, action).await?;
        Ok(SilenceDone::new(seq, id))
    })
    .await
}

/// `DELETE /api/silence/{id}?by=B`: ends it now.
pub(crate) async fn delete_silence(
    State(app): State<AppState>,
    _: OperatorAct,
    route: MatchedPath,
    Path(id): Path<String>,
    params: Result<UrlQuery<KeyParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    respond(&app, &route, async {
        let UrlQuery(params) = params.map_err(|e| bad(e.body_text()))?;
        let id = silence_id(&id)?;
        let by = params.by.map(check_by).transpose()?.unwrap_or_default();
        submit(&app, Action::now(by, ActionKind::Unsilence { id })).await
    })
    .await
}

/// `POST /api/clear`: removes the key from the index now.
pub(crate) async fn clear(
    State(app): State<AppState>,
    _: OperatorAct,
    route: MatchedPath,
    BoundedBody(body, _): Body,
) -> Response {
    respond(&app, &route, async {
        let body: ClearBody = json(&body)?;
        let by = check_by(body.by)?;
        let kind = ActionKind::Clear {
            host: body.host,
            service: body.service,
        };
        submit(&app, Action::now(by, kind)).await
    })
    .await
}

/// `GET /api/acks?query=Q`: `{"acks":[ACK…]}`, the acks of the keys Q matches (default: all),
/// streamed (see `web::acks`).
pub(crate) async fn acks(
    State(app): State<AppState>,
    _: DashboardRead,
    UrlQuery(params): UrlQuery<SubscribeParams>,
) -> Result<Response, ApiError> {
    let filter = super::api::filter(&params).await?;
    let snapshot = app.engine.snapshot().await.map_err(ApiError::unavailable)?;
    Ok(super::acks::response(snapshot, filter))
}

/// `GET /api/silences`: `{"silences":[SILENCE…],"silenced":[[H,S]…]}`.
pub(crate) async fn silences(
    State(app): State<AppState>,
    _: DashboardRead,
) -> Result<Response, ApiError> {
    let snapshot = app.engine.snapshot().await.map_err(ApiError::unavailable)?;
    let actions = &snapshot.actions;
    Ok(Json(SilenceList {
        silences: Items::new(actions.silences.iter().map(SilenceItem)),
        silenced: &actions.silenced,
    })
    .into_response())
}

/// Runs a write handler's work and renders its answer (an [`ActionDone`], or a [`SilenceDone`]
/// for a silence made); a refusal is counted (those of the access and body extractors are, by
/// them).
async fn respond<T: serde::Serialize>(
    app: &AppState,
    route: &MatchedPath,
    work: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Response {
    let path = route.as_str();
    match work.await {
        Ok(answer) => Json(answer).into_response(),
        Err(error) => {
            if error.status.is_client_error() {
                Counters::add(&app.counters.http_rejected, 1);
                tracing::debug!(path, status = error.status.as_u16(), error = %error.error, "action refused");
            }
            error.into_response()
        }
    }
}

/// An action's body decoded as `T` (unknown fields refused): 400 when it is not.
fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| bad(format!("cannot read the body: {error}")))
}

fn bad(error: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, error)
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.len() > max {
        return Err(bad(format!("{field} is longer than {max} bytes")));
    }
    Ok(())
}

/// Who acts: required, not blank, at most [`MAX_BY`] bytes.
fn check_by(by: String) -> Result<String, ApiError> {
    check_len("by", &by, MAX_BY)?;
    let by = by.trim().to_owned();
    if by.is_empty() {
        return Err(bad("by (who acts) must not be empty"));
    }
    Ok(by)
}

/// An RFC 3339 time as µs since the epoch.
fn parse_time(field: &str, text: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_micros())
        .map_err(|error| {
            bad(format!(
                "{field} is not an RFC 3339 time like 2026-12-01T13:00:00.000Z: {error}"
            ))
        })
}

/// An RFC 3339 time that must be later than `now`.
fn future_time(field: &str, text: &str, now: i64) -> Result<i64, ApiError> {
    let at = parse_time(field, text)?;
    if at <= now {
        return Err(bad(format!("{field} is in the past")));
    }
    Ok(at)
}

fn silence_id(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("there is no silence {text:?}"),
        )
    })
}

/// A silence body checked and its query compiled (on a blocking thread).
async fn silence_action(body: SilenceBody, id: Option<u64>) -> Result<Action, ApiError> {
    let at = now_micros();
    let by = check_by(body.by)?;
    check_len("comment", &body.comment, MAX_NOTE)?;
    check_len("query", &body.query, MAX_SILENCE_QUERY)?;
    let text = body.query.trim().to_owned();
    if text.is_empty() {
        return Err(bad("query must not be empty"));
    }
    let starts_at = body
        .starts_at
        .as_deref()
        .map(|t| parse_time("starts_at", t))
        .transpose()?
        .unwrap_or(at);
    let ends_at = match (body.ends_at.as_deref(), body.duration.as_deref()) {
        (Some(t), None) => future_time("ends_at", t, at)?,
        (None, Some(d)) => {
            let duration = crate::units::parse_duration(d)
                .map_err(|error| bad(format!("duration: {error}")))?;
            let micros = i64::try_from(duration.as_micros()).unwrap_or(i64::MAX);
            if micros == 0 {
                return Err(bad("duration must be more than zero"));
            }
            starts_at.saturating_add(micros)
        }
        _ => return Err(bad("give either ends_at or duration (one of them)")),
    };
    if ends_at <= starts_at || ends_at <= at {
        return Err(bad("ends_at must be later than now and than starts_at"));
    }
    let compiled = Query::parse_silence_off_thread(text.clone())
        .await
        .map_err(|error| bad(format!("bad query: {error}")))?;
    Ok(Action {
        at_micros: at,
        by,
        kind: ActionKind::Silence {
            id,
            query: text,
            comment: body.comment,
            starts_at,
            ends_at,
            compiled: Some(compiled),
        },
    })
}

/// Orders the action and waits for the engine's answer: `{"ok":true,"seq":N}` once its records
/// are out, or the refusal.
async fn submit(app: &AppState, action: Action) -> Result<ActionDone, ApiError> {
    let ActionApplied { seq, durable } = app.engine.act(action).await.map_err(engine_error)?;
    durable
        .await
        .unwrap_or(Err(EngineError::Closed))
        .map_err(engine_error)?;
    Ok(ActionDone::new(seq))
}

fn engine_error(error: EngineError) -> ApiError {
    match error {
        EngineError::Refused(refusal) => {
            let status = match refusal {
                ActionRefusal::NotFound(_) => StatusCode::NOT_FOUND,
                ActionRefusal::Conflict(_) => StatusCode::CONFLICT,
                ActionRefusal::Invalid(_) => StatusCode::BAD_REQUEST,
            };
            ApiError::new(status, refusal.to_string())
        }
        other => ApiError::unavailable(other),
    }
}
