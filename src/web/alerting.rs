//! `GET /api/alerting`: whether notifications reach Alertmanager (`--alertmanager`), for the
//! page's header indicator: each Alertmanager's last success and failure, the failures in a row
//! and why the last one failed, what waits and what was dropped. Atomics only (no index walk), so
//! a page may poll it; read access as the dashboard's (the figures say nothing `/metrics` does
//! not, but the errors name hosts).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::access::DashboardRead;
use super::AppState;
use crate::event::format_time;
use crate::metrics::AlertmanagerFigures;
use crate::protocol::answers::{Alerting, AlertmanagerHealth};

/// `{"enabled":false}`, or `{"enabled":true,"firing":N,"alertmanagers":[…]}`.
pub(crate) async fn alerting(State(app): State<AppState>, _: DashboardRead) -> Response {
    let metrics = &app.counters.alerts;
    let answer = match metrics.figures() {
        None => Alerting {
            enabled: false,
            firing: None,
            alertmanagers: Vec::new(),
        },
        Some(figures) => Alerting {
            enabled: true,
            firing: Some(metrics.firing.load(Ordering::Relaxed)),
            alertmanagers: figures.into_iter().map(health).collect(),
        },
    };
    Json(answer).into_response()
}

fn health(figures: AlertmanagerFigures) -> AlertmanagerHealth {
    let time = |unix_ms: u64| {
        (unix_ms > 0)
            .then(|| format_time(i64::try_from(unix_ms.saturating_mul(1000)).unwrap_or(i64::MAX)))
    };
    AlertmanagerHealth {
        last_success: time(figures.last_success_ms),
        last_failure: time(figures.last_failure_ms),
        last_error: (!figures.last_error.is_empty()).then_some(figures.last_error),
        url: figures.url,
        sent: figures.sent,
        failed: figures.failed,
        dropped: figures.dropped,
        queue: figures.queue,
        failing: figures.failing,
    }
}
