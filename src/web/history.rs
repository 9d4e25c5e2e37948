//! Reading history for the dashboard endpoints: a page of `GET /api/history`, and the replay a
//! reconnecting websocket resumes from. Both go through one function, [`read`].
//!
//! Reading thousands of rows from redb, filtering and serializing them is blocking work (hundreds
//! of milliseconds at the resume limit): it runs on a blocking thread, never on a runtime worker,
//! where it would stall every connection sharing that worker. This module only reads; the engine
//! writes and prunes history (through `store`). Whether a client may read, and what its query
//! is, the endpoints decide before calling here.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use axum::http::StatusCode;
use serde_json::value::RawValue;

use super::error::ApiError;
use crate::broadcast::change_frame;
use crate::engine::{Change, ChangeKind};
use crate::protocol;
use crate::query::Query;
use crate::store::{Store, StoreError, StoredChange, StoredKind};

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HistoryError {
    /// Storage failing (a full disk; the database is reopened once it works): temporary.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking read itself died.
    #[error(transparent)]
    Join(#[from] tokio::task::JoinError),
}

impl From<HistoryError> for ApiError {
    fn from(error: HistoryError) -> Self {
        match error {
            HistoryError::Store(_) => ApiError::unavailable(error),
            HistoryError::Join(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
            }
        }
    }
}

/// Stored bytes one page of `/api/history` returns at most (plus the record that crosses it, so
/// a page always makes progress): it stops there with `"more":true`. Without it one page of 100
/// whole-set silence records (an older version's) was 345 MB.
pub(crate) const MAX_READ_BYTES: usize = 4 << 20;

/// Stored bytes a resuming websocket's replay reads at most; a larger replay gets a snapshot
/// instead. Larger than a page: a replay is not continued by the client, and its count bound
/// (100,000 changes, ~15 MB of ordinary ones) must still fit — only oversized records (an
/// older version's whole-set silences) reach it.
pub(crate) const MAX_REPLAY_BYTES: usize = 64 << 20;

/// `/api/history`'s page: the first `limit` transitions after `since` that match `filter`, at
/// most [`MAX_READ_BYTES`] of them, as change JSON, with the oldest `seq` retained (a client
/// that sees it above `since + 1` knows it missed changes) and whether it stopped at a bound
/// (`more`: continue with `since` = the last `seq`).
pub(crate) async fn page(
    store: Arc<Store>,
    since: u64,
    limit: usize,
    filter: Option<Query>,
) -> Result<Read<Option<Box<RawValue>>>, HistoryError> {
    read(store, since, Span::FirstMatching(limit), filter, |change| {
        protocol::answers::raw_frame(&protocol::change_frame(&change))
    })
    .await
}

/// A resuming websocket's replay: the change frames of the transitions in (`since`,
/// `since + count`] that match `filter`, or `None` when history does not hold all `count` of
/// them (pruned, or not written yet: changes reach history a few milliseconds after they are
/// published).
pub(crate) async fn replay(
    store: Arc<Store>,
    since: u64,
    count: usize,
    filter: Option<Query>,
) -> Result<Option<Vec<Utf8Bytes>>, HistoryError> {
    let read = read(store, since, Span::Next(count), filter, |change| {
        super::text_frame(change_frame(&change))
    })
    .await?;
    // Whole: history reaches back to `since + 1` with no hole after it, and the rows read are
    // exactly `since + 1 ..= since + count` (seqs are unique and increasing). A read cut short by
    // bytes has fewer rows: incomplete, so the client gets a snapshot instead.
    let complete = read.oldest_seq.is_some_and(|oldest| oldest <= since + 1)
        && read.gap.is_none()
        && read.rows == count
        && read.last_row == Some(since + count as u64);
    Ok(complete.then_some(read.changes))
}

/// Which transitions after `since` a read looks at.
#[derive(Debug, Clone, Copy)]
enum Span {
    /// Up to this many of those that match the filter.
    FirstMatching(usize),
    /// The next this many rows, matching or not; those that match are returned.
    Next(usize),
}

impl Span {
    /// Stored bytes the read returns at most (plus the record that crosses it).
    fn max_bytes(self) -> usize {
        match self {
            Span::FirstMatching(_) => MAX_READ_BYTES,
            Span::Next(_) => MAX_REPLAY_BYTES,
        }
    }
}

/// What one read found.
pub(crate) struct Read<T> {
    /// The oldest `seq` retained, read after the rows: a prune between the two then shows as a
    /// gap instead of hiding one.
    pub(crate) oldest_seq: Option<u64>,
    /// The matching transitions, oldest first, rendered.
    pub(crate) changes: Vec<T>,
    /// Rows read, matching or not, before the first hole after `since`.
    rows: usize,
    /// The `seq` of the last of those rows.
    last_row: Option<u64>,
    /// The first hole after `since` (`from..=to`: changes this node never had), when the read
    /// reached it: its rows stop there, and the reader goes on after `to` knowing it missed them.
    pub(crate) gap: Option<(u64, u64)>,
    /// The read stopped at its count, at [`MAX_READ_BYTES`] or at a hole: more may follow (after
    /// the last row, or after the hole's `to`).
    pub(crate) more: bool,
}

/// Reads transitions after `since` on a blocking thread, keeps those that concern a watcher of
/// `filter` (the event before or after matches, as for live changes) and renders each there.
async fn read<T: Send + 'static>(
    store: Arc<Store>,
    since: u64,
    span: Span,
    filter: Option<Query>,
    render: fn(Change) -> T,
) -> Result<Read<T>, HistoryError> {
    let read = tokio::task::spawn_blocking(move || {
        let hole = store.gap_after(since)?;
        let wanted = match span {
            Span::FirstMatching(limit) | Span::Next(limit) => limit,
        };
        let mut stored = match span {
            Span::FirstMatching(limit) => {
                let keep = |c: &StoredChange| match c.kind() {
                    StoredKind::State => filter
                        .as_ref()
                        .is_none_or(|q| q.matches_transition(&c.event(), c.previous().as_ref())),
                    // Operator-action records concern every watcher.
                    StoredKind::Action(_) => true,
                    StoredKind::Undecodable => false,
                };
                store.history_within(since, limit, span.max_bytes(), keep)?
            }
            Span::Next(count) => store.history_within(since, count, span.max_bytes(), |_| true)?,
        };
        let bytes: usize = stored.iter().map(prost::Message::encoded_len).sum();
        let cut_by_bytes = bytes >= span.max_bytes();
        // The read reached the hole when it went past it, or ran out of rows before its limit
        // (a read cut short by bytes stopped before the hole, not at it).
        let gap = hole.filter(|(from, _)| {
            stored.last().is_some_and(|c| c.seq >= *from)
                || (stored.len() < wanted && !cut_by_bytes)
        });
        if let Some((from, _)) = gap {
            stored.retain(|c| c.seq < from);
        }
        let rows = stored.len();
        let last_row = stored.last().map(|c| c.seq);
        let more = gap.is_some() || rows >= wanted || cut_by_bytes;
        let changes = stored
            .into_iter()
            .filter_map(StoredChange::into_change)
            .filter(|change| match span {
                // Filtered while reading.
                Span::FirstMatching(_) => true,
                Span::Next(_) => shown_to(filter.as_ref(), change),
            })
            .map(render)
            .collect();
        Ok::<_, StoreError>(Read {
            oldest_seq: store.oldest_seq()?,
            changes,
            rows,
            last_row,
            gap,
            more,
        })
    })
    .await?;
    Ok(read?)
}

/// Whether a watcher of `filter` (`None`: everything) is shown `change`, live or from history: a
/// state change when the event before *or* after it matches, so a watcher also sees a service
/// leave its slice; an operator-action record always (the page decides what to show).
pub(crate) fn shown_to(filter: Option<&Query>, change: &Change) -> bool {
    match &change.kind {
        ChangeKind::State(state) => {
            filter.is_none_or(|q| q.matches_transition(&state.event, state.previous.as_deref()))
        }
        ChangeKind::Action(_) => true,
    }
}
