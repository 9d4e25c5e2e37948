//! The access rules as axum extractors: a handler that takes one cannot run unless its rule
//! passed, so an endpoint is safe by its signature (axum's `jwt` example, where the claims are an
//! extractor). The rules themselves are [`AccessConfig`]'s; this module only decides which rules
//! each kind of endpoint needs, in which order, and what a refusal does: it is counted and
//! logged (`statecast_refusals_total{reason}`, labelled with the route the router matched —
//! [`MatchedPath`], never a path literal kept beside the router) and answered as an
//! [`ApiError`].
//!
//! | Extractor         | Rules, in order                                          | Endpoints |
//! | ----------------- | -------------------------------------------------------- | --------- |
//! | [`IngestWrite`]   | not cross-site; ingest token (header)                    | `POST /api/event`, `POST /events` |
//! | [`IngestSocket`]  | ingest token (header or `?token=`); Origin               | websocket `GET /events` |
//! | [`DashboardRead`] | dashboard token (header or `?token=`)                    | `GET /api/state`, `/api/history`, `/api/rates`, `/api/series`, `/api/acks`, `/api/silences` |
//! | [`DashboardWatch`]| dashboard token (header or `?token=`); Origin            | `/ws`, `/index` |
//! | [`OperatorAct`]   | not cross-site; every token that is set (header or `?token=`) | the operator actions |
//!
//! A refused write (`IngestWrite`, `OperatorAct`) also counts in
//! `statecast_http_rejected_total`, as every refused write does.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, MatchedPath, Query as UrlQuery};
use axum::http::request::Parts;
use axum::http::{Extensions, Uri};

use super::AccessConfig;
use crate::metrics::{Counters, Refusal};
use crate::web::error::ApiError;
use crate::web::AppState;

/// What the access extractors need of the server: the rules and where refusals are counted.
/// Its own type rather than [`AppState`], so the extractors can be tested on a router of their
/// own, without an engine.
#[derive(Clone)]
pub(crate) struct Gate {
    pub(crate) access: Arc<AccessConfig>,
    pub(crate) counters: Arc<Counters>,
}

impl FromRef<AppState> for Gate {
    fn from_ref(app: &AppState) -> Self {
        Gate {
            access: Arc::clone(&app.access),
            counters: Arc::clone(&app.counters),
        }
    }
}

impl Gate {
    /// Counts and logs the refusal of the request `parts` (see `metrics::refusals`).
    pub(crate) fn refuse(&self, reason: Refusal, parts: &Parts, denied: ApiError) -> ApiError {
        self.counters.refusals.refuse(
            reason,
            route(&parts.extensions, &parts.uri),
            denied.status.as_u16(),
            &denied.error,
        );
        denied
    }
}

/// The route as the router matched it (`/api/silence/{id}`); the request's path where no route
/// matched (the fallback).
pub(crate) fn route<'a>(extensions: &'a Extensions, uri: &'a Uri) -> &'a str {
    extensions
        .get::<MatchedPath>()
        .map_or_else(|| uri.path(), MatchedPath::as_str)
}

/// One access rule.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// No browser cross-site request: a foreign `Origin` or `Sec-Fetch-Site: cross-site` (CSRF).
    NotCrossSite,
    /// A websocket or stream from a foreign `Origin` (cross-site websocket hijacking).
    Origin,
    /// The ingest token, as `Authorization: Bearer` only.
    IngestHeader,
    /// The ingest token, as the header or `?token=` (browsers cannot set headers on a
    /// websocket).
    Ingest,
    /// The dashboard token, as the header or `?token=`.
    Dashboard,
    /// Every token that is set, each as the header or `?token=` (an operator action).
    Every,
}

/// `?token=` of a request whose other URL parameters are not this module's concern.
#[derive(serde::Deserialize)]
struct UrlToken {
    token: Option<String>,
}

/// The `?token=` of the request, if any (a query string that does not decode has none).
fn url_token(parts: &Parts) -> Option<String> {
    UrlQuery::<UrlToken>::try_from_uri(&parts.uri)
        .ok()
        .and_then(|UrlQuery(params)| params.token)
}

/// Checks `rules` in order; the first that fails is counted and answered.
fn admit(gate: &Gate, parts: &Parts, rules: &[Rule], write: bool) -> Result<(), ApiError> {
    let access = &gate.access;
    let headers = &parts.headers;
    for rule in rules {
        let token = || url_token(parts);
        let (reason, checked) = match rule {
            Rule::NotCrossSite => (Refusal::Origin, access.check_cross_site(headers)),
            Rule::Origin => (Refusal::Origin, access.check_origin(headers)),
            Rule::IngestHeader => (Refusal::Token, access.check_ingest(headers)),
            Rule::Ingest => (
                Refusal::Token,
                access.check_ingest_ws(headers, token().as_deref()),
            ),
            Rule::Dashboard => (
                Refusal::Token,
                access.check_dashboard(headers, token().as_deref()),
            ),
            Rule::Every => (
                Refusal::Token,
                access.check_action(headers, token().as_deref()),
            ),
        };
        if let Err(denied) = checked {
            if write {
                Counters::add(&gate.counters.http_rejected, 1);
            }
            return Err(gate.refuse(reason, parts, denied));
        }
    }
    Ok(())
}

macro_rules! extractor {
    ($(#[$doc:meta])* $name:ident, $rules:expr, write: $write:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub(crate) struct $name;

        impl<S: Send + Sync> FromRequestParts<S> for $name
        where
            Gate: FromRef<S>,
        {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
                admit(&Gate::from_ref(state), parts, &$rules, $write).map(|()| $name)
            }
        }
    };
}

extractor!(
    /// May write events over HTTP: not a browser's cross-site request, and the ingest token
    /// (as `Authorization: Bearer`: scripts and forwarders set headers).
    IngestWrite,
    [Rule::NotCrossSite, Rule::IngestHeader],
    write: true
);

extractor!(
    /// May open an ingest websocket: the ingest token (header or `?token=`), then an allowed
    /// Origin.
    IngestSocket,
    [Rule::Ingest, Rule::Origin],
    write: false
);

extractor!(
    /// May read what the dashboard shows: the dashboard token (header or `?token=`).
    DashboardRead,
    [Rule::Dashboard],
    write: false
);

extractor!(
    /// May watch the dashboard live (a websocket or an event stream): the dashboard token
    /// (header or `?token=`), then an allowed Origin — a browser opens these from any page
    /// without asking, which a plain read's answer does not let that page read.
    DashboardWatch,
    [Rule::Dashboard, Rule::Origin],
    write: false
);

extractor!(
    /// May act as an operator (ack, silence, clear): not a browser's cross-site request, and
    /// every token that is set — the ingest token (an action writes) and the dashboard token
    /// (acting on the dashboard needs at least what reading it needs); see
    /// [`AccessConfig::check_action`].
    OperatorAct,
    [Rule::NotCrossSite, Rule::Every],
    write: true
);

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::{get, post};
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    fn gate(ingest: Option<&str>, dashboard: Option<&str>) -> Gate {
        Gate {
            access: Arc::new(AccessConfig {
                ingest_token: ingest.map(str::to_owned),
                dashboard_token: dashboard.map(str::to_owned),
                ..Default::default()
            }),
            counters: Arc::new(Counters::default()),
        }
    }

    /// A router whose endpoints do nothing but take one extractor each: what passes is 200.
    fn router(gate: Gate) -> Router {
        Router::new()
            .route("/write", post(|_: IngestWrite| async { "ok" }))
            .route("/socket", get(|_: IngestSocket| async { "ok" }))
            .route("/read/{id}", get(|_: DashboardRead| async { "ok" }))
            .route("/watch", get(|_: DashboardWatch| async { "ok" }))
            .route("/act", post(|_: OperatorAct| async { "ok" }))
            .with_state(gate)
    }

    async fn status(gate: &Gate, method: &str, uri: &str, headers: &[(&str, &str)]) -> u16 {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "127.0.0.1:8080");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Body::empty()).expect("a valid request");
        let response = router(gate.clone())
            .oneshot(request)
            .await
            .expect("infallible");
        response.status().as_u16()
    }

    fn count(gate: &Gate, reason: Refusal) -> u64 {
        gate.counters.refusals.count(reason)
    }

    const FOREIGN: (&str, &str) = ("origin", "http://evil.example");
    const SAME: (&str, &str) = ("origin", "http://127.0.0.1:8080");

    #[tokio::test]
    async fn ingest_write_needs_the_ingest_header_and_refuses_cross_site() {
        let gate = gate(Some("in"), Some("view"));
        let bearer = ("authorization", "Bearer in");
        assert_eq!(status(&gate, "POST", "/write", &[bearer]).await, 200);
        assert_eq!(status(&gate, "POST", "/write", &[]).await, 401);
        // The URL is no place for a write token (it ends up in logs).
        assert_eq!(status(&gate, "POST", "/write?token=in", &[]).await, 401);
        assert_eq!(count(&gate, Refusal::Token), 2);
        assert_eq!(
            status(&gate, "POST", "/write", &[bearer, FOREIGN]).await,
            403
        );
        let fetch = ("sec-fetch-site", "cross-site");
        assert_eq!(status(&gate, "POST", "/write", &[bearer, fetch]).await, 403);
        assert_eq!(count(&gate, Refusal::Origin), 2);
        assert_eq!(Counters::get(&gate.counters.http_rejected), 4);
    }

    #[tokio::test]
    async fn ingest_socket_takes_the_token_in_the_url_and_checks_the_origin() {
        let gate = gate(Some("in"), None);
        assert_eq!(status(&gate, "GET", "/socket?token=in", &[SAME]).await, 200);
        assert_eq!(status(&gate, "GET", "/socket?token=no", &[]).await, 401);
        assert_eq!(
            status(&gate, "GET", "/socket?token=in", &[FOREIGN]).await,
            403
        );
        assert_eq!(count(&gate, Refusal::Token), 1);
        assert_eq!(count(&gate, Refusal::Origin), 1);
        assert_eq!(
            Counters::get(&gate.counters.http_rejected),
            0,
            "not a write"
        );
    }

    #[tokio::test]
    async fn dashboard_read_needs_the_dashboard_token_and_not_the_ingest_one() {
        let gate = gate(Some("in"), Some("view"));
        assert_eq!(status(&gate, "GET", "/read/1?token=view", &[]).await, 200);
        let bearer = ("authorization", "Bearer view");
        assert_eq!(status(&gate, "GET", "/read/1", &[bearer]).await, 200);
        assert_eq!(status(&gate, "GET", "/read/1?token=in", &[]).await, 401);
        assert_eq!(status(&gate, "GET", "/read/1", &[]).await, 401);
        assert_eq!(count(&gate, Refusal::Token), 2);
        // A plain read is not a browser's to open unasked: no Origin rule.
        assert_eq!(
            status(&gate, "GET", "/read/1?token=view", &[FOREIGN]).await,
            200
        );
        let open = self::gate(None, None);
        assert_eq!(status(&open, "GET", "/read/1", &[]).await, 200);
    }

    #[tokio::test]
    async fn dashboard_watch_checks_the_token_then_the_origin() {
        let gate = gate(None, Some("view"));
        assert_eq!(
            status(&gate, "GET", "/watch?token=view", &[SAME]).await,
            200
        );
        // Both wrong: the token is checked first, and only one refusal is counted.
        assert_eq!(status(&gate, "GET", "/watch", &[FOREIGN]).await, 401);
        assert_eq!(
            status(&gate, "GET", "/watch?token=view", &[FOREIGN]).await,
            403
        );
        assert_eq!(count(&gate, Refusal::Token), 1);
        assert_eq!(count(&gate, Refusal::Origin), 1);
    }

    #[tokio::test]
    async fn operator_act_needs_every_token_that_is_set() {
        let gate = gate(Some("in"), Some("view"));
        let ingest = ("authorization", "Bearer in");
        assert_eq!(
            status(&gate, "POST", "/act?token=view", &[ingest]).await,
            200
        );
        assert_eq!(status(&gate, "POST", "/act", &[ingest]).await, 401);
        assert_eq!(status(&gate, "POST", "/act?token=view", &[]).await, 401);
        assert_eq!(
            status(&gate, "POST", "/act?token=view", &[ingest, FOREIGN]).await,
            403
        );
        assert_eq!(Counters::get(&gate.counters.http_rejected), 3);
        let one = self::gate(Some("same"), Some("same"));
        assert_eq!(status(&one, "POST", "/act?token=same", &[]).await, 200);
    }

    #[tokio::test]
    async fn a_refusal_is_labelled_with_the_route_the_router_matched() {
        let router: Router = Router::new().route(
            "/api/silence/{id}",
            get(|request: axum::extract::Request| async move {
                route(request.extensions(), request.uri()).to_owned()
            }),
        );
        let request = |uri: &str| {
            Request::builder()
                .uri(uri)
                .body(Body::empty())
                .expect("a valid request")
        };
        let response = router
            .oneshot(request("/api/silence/42?token=x"))
            .await
            .expect("infallible");
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("a body");
        assert_eq!(&body[..], b"/api/silence/{id}");
        let unmatched = request("/static/app.js");
        assert_eq!(
            route(unmatched.extensions(), unmatched.uri()),
            "/static/app.js",
            "no route: the path"
        );
    }
}
