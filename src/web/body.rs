//! The one way a handler takes a request body: whole, within a byte limit (413) and within
//! `--http-body-timeout` of the request (408, and the connection closes): a client trickling its
//! body holds its connection and buffer only that long, and never more than the limit.
//!
//! [`BoundedBody<L>`] is an extractor; `L` names the limit ([`BodyLimit`]), so the bound of an
//! endpoint's body is in its signature, not in a layer beside the router that could disagree
//! with the message.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::StatusCode;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::error::ApiError;
use super::AppState;
use crate::metrics::Counters;

/// What reading a body needs of the server.
#[derive(Clone)]
pub(crate) struct BodyRules {
    /// `--http-body-timeout`.
    pub(crate) timeout: Duration,
    /// `--max-body-bytes`.
    pub(crate) max_body_bytes: usize,
    /// A refused body counts in `statecast_http_rejected_total` (only writes take bodies).
    pub(crate) counters: Arc<Counters>,
}

impl FromRef<AppState> for BodyRules {
    fn from_ref(app: &AppState) -> Self {
        BodyRules {
            timeout: app.body_timeout,
            max_body_bytes: app.max_body_bytes,
            counters: Arc::clone(&app.counters),
        }
    }
}

/// How large one kind of body may be.
pub(crate) trait BodyLimit {
    /// The limit, in bytes.
    fn max_bytes(rules: &BodyRules) -> usize;
    /// Ends the 413's message after "body exceeds the N byte limit" (e.g. " of an action").
    const OF: &'static str = "";
}

/// A request body read whole within `L`'s limit and the body timeout.
pub(crate) struct BoundedBody<L>(pub(crate) Bytes, pub(crate) PhantomData<fn() -> L>);

impl<S, L> FromRequest<S> for BoundedBody<L>
where
    S: Send + Sync,
    L: BodyLimit,
    BodyRules: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let rules = BodyRules::from_ref(state);
        let route = super::access::route(request.extensions(), request.uri()).to_owned();
        read::<L>(&rules, request).await.inspect_err(|refused| {
            Counters::add(&rules.counters.http_rejected, 1);
            tracing::debug!(
                path = route,
                status = refused.status.as_u16(),
                error = %refused.error,
                "body refused"
            );
        })
    }
}

/// The body, or why not.
async fn read<L: BodyLimit>(
    rules: &BodyRules,
    request: Request,
) -> Result<BoundedBody<L>, ApiError> {
    let max = L::max_bytes(rules);
    let collected = Limited::new(request.into_body(), max).collect();
    match tokio::time::timeout(rules.timeout, collected).await {
        Ok(Ok(body)) => Ok(BoundedBody(body.to_bytes(), PhantomData)),
        Ok(Err(error)) if error.is::<LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body exceeds the {max} byte limit{}", L::OF),
        )),
        Ok(Err(error)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("Failed to buffer the request body: {error}"),
        )),
        // The rest of the body may still come: the connection cannot carry another request.
        Err(_elapsed) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within {:?} (--http-body-timeout)",
                rules.timeout
            ),
        )
        .closing()),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{header, Request};
    use axum::routing::post;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    struct Small;

    impl BodyLimit for Small {
        fn max_bytes(_: &BodyRules) -> usize {
            8
        }
        const OF: &'static str = " of a test";
    }

    fn rules() -> BodyRules {
        BodyRules {
            timeout: Duration::from_millis(100),
            max_body_bytes: 0,
            counters: Arc::new(Counters::default()),
        }
    }

    async fn post_body(rules: &BodyRules, body: Body) -> (StatusCode, Option<String>, String) {
        let router = Router::new()
            .route(
                "/small",
                post(|BoundedBody(bytes, _): BoundedBody<Small>| async move { bytes }),
            )
            .with_state(rules.clone());
        let request = Request::post("/small").body(body).expect("a valid request");
        let response = router.oneshot(request).await.expect("infallible");
        let status = response.status();
        let connection = response
            .headers()
            .get(header::CONNECTION)
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .expect("a body");
        (
            status,
            connection,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_read_whole() {
        let rules = rules();
        let (status, _, body) = post_body(&rules, Body::from("12345678")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "12345678"));
        assert_eq!(Counters::get(&rules.counters.http_rejected), 0);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_413_naming_it() {
        let rules = rules();
        let (status, _, body) = post_body(&rules, Body::from("123456789")).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            body.contains("body exceeds the 8 byte limit of a test"),
            "{body}"
        );
        assert_eq!(Counters::get(&rules.counters.http_rejected), 1);
    }

    /// A body that never finishes: 408 once the timeout passed, and the connection closes.
    #[tokio::test]
    async fn a_body_that_does_not_arrive_in_time_is_408_and_closes() {
        let rules = rules();
        let first = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from("12"))]);
        let never = futures_util::stream::pending();
        let slow = Body::from_stream(futures_util::StreamExt::chain(first, never));
        let (status, connection, body) = post_body(&rules, slow).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(connection.as_deref(), Some("close"));
        assert!(body.contains("--http-body-timeout"), "{body}");
        assert_eq!(Counters::get(&rules.counters.http_rejected), 1);
    }
}
