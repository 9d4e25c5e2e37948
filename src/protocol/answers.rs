//! HTTP answers (and the `/events` websocket's acks): one type per shape, so that a handler
//! says which answer it gives by the type it builds.

use serde::Serialize;
use serde_json::value::RawValue;

use super::{Items, SilenceItem};
use crate::action::KeyName;

/// `{"ok":true,"accepted":N}`: a batch of events applied (`POST /api/event`, `POST /events`).
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub ok: bool,
    pub accepted: usize,
}

impl Accepted {
    pub fn new(accepted: usize) -> Self {
        Accepted { ok: true, accepted }
    }
}

/// `{"ok":false,"error":"…"}`: any refused request, with the status that says why.
#[derive(Debug, Serialize)]
pub struct Failed<'a> {
    pub ok: bool,
    pub error: &'a str,
}

impl<'a> Failed<'a> {
    pub fn new(error: &'a str) -> Self {
        Failed { ok: false, error }
    }
}

/// The `/events` websocket's answer to one batch: `{"id":ID,"ok":true,"accepted":N}` or
/// `{"id":ID,"ok":false,"error":"…"}`, the batch's `id` echoed as given (`null` when absent).
#[derive(Debug, Serialize)]
pub struct BatchAnswer<'a> {
    pub id: Option<&'a RawValue>,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

impl<'a> BatchAnswer<'a> {
    pub fn new(id: Option<&'a RawValue>, result: Result<usize, &'a str>) -> Self {
        let (accepted, error) = match result {
            Ok(n) => (Some(n), None),
            Err(error) => (None, Some(error)),
        };
        BatchAnswer {
            id,
            ok: error.is_none(),
            accepted,
            error,
        }
    }

    /// As JSON text (serializing plain data cannot fail).
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// An operator action applied (and durable): `{"ok":true,"seq":N}`.
#[derive(Debug, Serialize)]
pub struct ActionDone {
    pub ok: bool,
    pub seq: u64,
}

impl ActionDone {
    pub fn new(seq: u64) -> Self {
        ActionDone { ok: true, seq }
    }
}

/// A silence created or replaced: `{"ok":true,"seq":N,"id":"I"}` (`id` as in `SILENCE`).
#[derive(Debug, Serialize)]
pub struct SilenceDone {
    pub ok: bool,
    pub seq: u64,
    #[serde(serialize_with = "super::as_string")]
    pub id: u64,
}

impl SilenceDone {
    pub fn new(seq: u64, id: u64) -> Self {
        SilenceDone { ok: true, seq, id }
    }
}

/// `GET /api/silences`: `{"silences":[SILENCE…],"silenced":[[H,S]…]}`.
#[derive(Serialize)]
pub struct SilenceList<'a> {
    pub silences: Items<'a, SilenceItem<'a>>,
    pub silenced: &'a [KeyName],
}

/// `GET /api/history`: `{"epoch":E,"oldest_seq":O,"changes":[…],"more":M,"gap"?:{…}}`, each
/// change in its websocket frame's shape (serialized once, as the frame).
#[derive(Debug, Serialize)]
pub struct HistoryPage<'a> {
    pub epoch: &'a str,
    pub oldest_seq: Option<u64>,
    pub changes: Vec<Box<RawValue>>,
    pub more: bool,
    /// A hole in this node's history (`from..=to`): the page stops before it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gap: Option<Gap>,
}

#[derive(Debug, Serialize)]
pub struct Gap {
    pub from: u64,
    pub to: u64,
}

/// `GET /api/rates`: `{"interval_ms":I,"stride":K,"samples":[[unix_ms,events,changes]…]}`.
#[derive(Debug, Serialize)]
pub struct Rates {
    pub interval_ms: u64,
    pub stride: u64,
    pub samples: Vec<(u64, u64, u64)>,
}

/// `GET /healthz`: `{"ok":true}`.
#[derive(Debug, Serialize)]
pub struct Alive {
    pub ok: bool,
}

/// `GET /readyz`: `{"ready":true}`, or `{"ready":false,"reasons":[…]}`.
#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// A change as it stands in a history page: its frame, serialized once. `None` never happens
/// (plain data always serializes), but a page leaves such a change out rather than panic.
pub fn raw_frame(frame: &super::Frame<'_>) -> Option<Box<RawValue>> {
    serde_json::value::to_raw_value(frame).ok()
}

/// One series of `GET /api/series`: `{"host":H,"service":S,"points":[[t_ms,min,max,avg,last,count],…]}`,
/// points sorted by their bucket's start (unix ms), only buckets that hold points.
#[derive(Debug, Serialize)]
pub struct SeriesItem<'a> {
    pub host: Option<&'a str>,
    pub service: Option<&'a str>,
    pub points: Vec<SeriesPoint>,
}

/// `[t_ms, min, max, avg, last, count]`: one bucket of a series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SeriesPoint(pub i64, pub f64, pub f64, pub f64, pub f64, pub u64);

/// `GET /api/series`: `{"from":F,"to":T,"step":S,"series":[SERIES…]}` (unix ms; `step` the one
/// used). Streamed: [`SeriesAnswer::opening`], then each series, then `]}`.
#[derive(Debug, Serialize)]
pub struct SeriesAnswer<'a> {
    pub from: i64,
    pub to: i64,
    pub step: i64,
    pub series: &'a [SeriesItem<'a>],
}

impl SeriesAnswer<'_> {
    /// The answer's first bytes, up to and with the `[` that opens `series`.
    pub fn opening(from: i64, to: i64, step: i64) -> Vec<u8> {
        let mut out = serde_json::to_vec(&SeriesAnswer {
            from,
            to,
            step,
            series: &[],
        })
        .unwrap_or_default();
        // `…"series":[]}` without its `]}`.
        out.truncate(out.len().saturating_sub(2));
        out
    }

    /// The answer's last bytes.
    pub const CLOSING: &'static [u8] = b"]}";
}
