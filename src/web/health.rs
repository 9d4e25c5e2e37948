//! `GET /healthz` (alive) and `GET /readyz` (ready to take traffic), for load balancers,
//! orchestrators and supervisors.
//!
//! Both are cheap — atomics only, no index walk, no disk — so they can be polled every second,
//! and open to anyone: no token, no origin check, and no Host rule either. Why not the Host rule:
//! probes address the server by IP (a kubelet sends the pod's IP as `Host`, a load balancer the
//! backend's), which `--allowed-host` would refuse, and what these two answer is of no use to a
//! DNS-rebinding page (no monitoring data: a yes/no and, when not ready, why).

use crate::protocol::answers::{Alive, Readiness};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::AppState;

/// `GET /healthz`: 200 `{"ok":true}` whenever the process answers HTTP at all. A supervisor
/// restarts on this one failing; nothing that could recover by itself (a full disk) fails it.
pub(crate) async fn healthz() -> Response {
    Json(Alive { ok: true }).into_response()
}

/// `GET /readyz`: 200 `{"ready":true}` when the server takes events; otherwise 503
/// `{"ready":false,"reasons":[…]}`, which a load balancer answers by sending traffic elsewhere.
pub(crate) async fn readyz(State(app): State<AppState>) -> Response {
    let reasons = not_ready(&app);
    if reasons.is_empty() {
        Json(Readiness {
            ready: true,
            reasons: Vec::new(),
        })
        .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                ready: false,
                reasons,
            }),
        )
            .into_response()
    }
}

/// Everything that keeps the server from taking traffic now.
///
/// Listeners need no check: `server::start` binds every one of them before HTTP serves its
/// first request, so a server answering this is listening everywhere it was told to. The store
/// was opened then too; what can go wrong later is writing to it, which the engine reports
/// (the committer's storage flag: while set, every batch is refused). A check that this node
/// has caught up with its cluster goes here, as one more reason.
fn not_ready(app: &AppState) -> Vec<String> {
    let mut reasons = Vec::new();
    if app.shutdown.is_cancelled() {
        reasons.push("shutting down".to_owned());
    }
    if let Some(reason) = app.engine.unavailable() {
        reasons.push(reason);
    }
    reasons
}
