//! A bound on whole-index reads served at once (`--max-large-reads`): `GET /api/state` today,
//! and any other endpoint that walks every key (`/api/acks` can take a permit the same way).
//!
//! Each such read serializes the whole index (7.4 MB of JSON at 50k keys), a CPU cost a client
//! causes with one cheap request: 16 at once pushed a Riemann client's reply p99 from milliseconds
//! to 0.5–0.9 s on two cores. Past the limit a read is answered 503 with `Retry-After` at once
//! (counted, logged at most every 10 s) rather than queued: a queue would only move the wait
//! into more open connections. A permit is held until the response body is dropped — sent
//! whole, or the connection ended — so a read counts for as long as it streams.

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use crate::metrics::Counters;
use crate::rate_limited_log::RateLimitedLog;

/// Seconds a refused client is told to wait.
const RETRY_AFTER_SECS: &str = "1";

/// The permits of large reads; cheap to clone (shared).
#[derive(Clone)]
pub(crate) struct LargeReads {
    permits: Arc<Semaphore>,
    limit: usize,
    refusals: Arc<RateLimitedLog>,
}

/// Every slot is taken: answered 503 with `Retry-After`.
#[derive(Debug)]
pub(crate) struct Busy {
    limit: usize,
}

impl IntoResponse for Busy {
    fn into_response(self) -> Response {
        let error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} whole-index reads are in progress (--max-large-reads); retry shortly",
                self.limit
            ),
        );
        ([(header::RETRY_AFTER, RETRY_AFTER_SECS)], error).into_response()
    }
}

/// One large read in progress; dropping it frees the slot.
pub(crate) struct LargeRead {
    _permit: OwnedSemaphorePermit,
}

impl LargeReads {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            refusals: Arc::default(),
        }
    }

    /// A slot for a large read of `path`, or [`Busy`] (the 503) when every slot is taken.
    pub(crate) fn begin(&self, counters: &Counters, path: &str) -> Result<LargeRead, Busy> {
        if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
            return Ok(LargeRead { _permit: permit });
        }
        Counters::add(&counters.large_reads_refused, 1);
        if let Some(skipped) = self.refusals.due() {
            tracing::info!(
                path,
                limit = self.limit,
                not_logged_since_last_line = skipped,
                "whole-index read refused: --max-large-reads reads in progress (503, Retry-After)"
            );
        }
        Err(Busy { limit: self.limit })
    }

    /// Reads in progress, for `/metrics`.
    pub(crate) fn in_progress(&self) -> usize {
        self.limit - self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_limit_a_read_gets_503_with_retry_after_until_one_ends() {
        let reads = LargeReads::new(2);
        let counters = Counters::default();
        let first = reads.begin(&counters, "/api/state").ok().unwrap();
        let _second = reads.begin(&counters, "/api/state").ok().unwrap();
        assert_eq!(reads.in_progress(), 2);
        let busy = reads
            .begin(&counters, "/api/state")
            .err()
            .unwrap()
            .into_response();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[header::RETRY_AFTER], RETRY_AFTER_SECS);
        assert_eq!(Counters::get(&counters.large_reads_refused), 1);
        drop(first);
        assert!(reads.begin(&counters, "/api/state").is_ok());
    }
}
