//! The one shape of every HTTP error answer: a status and `{"ok":false,"error":"…"}`.
//!
//! Handlers, checks and extractors return [`ApiError`] and let axum turn it into the response
//! ([`IntoResponse`]), as in axum's error-handling example: the refusal travels as a small value
//! and is rendered once, at the edge. This module depends on nothing else in `web`, so every
//! endpoint and check (`access`, `body`, `api`, `index`, `ws`, `ingest::http`) can use it without
//! importing each other.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// A refused or failed request: what the client is told, and with which status.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) error: String,
    /// The answer ends the connection (`Connection: close`): the request's body may still be
    /// arriving, so the connection cannot carry another request.
    close: bool,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            close: false,
        }
    }

    /// 503: the engine or the store cannot answer now (shutting down, a full disk); worth
    /// retrying.
    pub(crate) fn unavailable(error: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
    }

    /// This answer, and then the connection closes (see the `close` field).
    pub(crate) fn closing(mut self) -> Self {
        self.close = true;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, Json(json!({"ok": false, "error": self.error}))).into_response();
        if self.close {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
