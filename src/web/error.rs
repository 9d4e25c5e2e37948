//! The one shape of every HTTP error answer: a status and `{"ok":false,"error":"…"}`.
//!
//! Handlers and checks return [`ApiError`] and let axum turn it into the response
//! ([`IntoResponse`]), as in axum's error-handling example: the refusal travels as a small value
//! and is rendered once, at the edge. This module depends on nothing else in `web`, so every
//! endpoint and check (`access`, `api`, `index`, `ws`) can use it without importing each other.

use crate::protocol::answers::Failed;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// A refused or failed request: what the client is told, and with which status.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) error: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
        }
    }

    /// 503: the engine or the store cannot answer now (shutting down, a full disk); worth
    /// retrying.
    pub(crate) fn unavailable(error: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(Failed::new(&self.error))).into_response()
    }
}
