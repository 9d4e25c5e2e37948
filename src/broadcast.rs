//! Fan-out of changes to every dashboard, serialized once.
//!
//! The engine publishes each [`Change`] into a `tokio::sync::broadcast` ring; the broadcaster never
//! waits on a receiver. Each change carries its websocket frame, built lazily by whichever client
//! needs it first and then shared by reference count: 1,000 clients cost one `serde_json` call.
//! A receiver that falls behind the ring gets `Lagged` and is resynchronised by its client task —
//! handled on purpose, never a silent gap.
//!
//! Depends on [`crate::change`] and [`crate::event`] only: the engine publishes into it, it never
//! reaches back into the engine.

use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;
use serde_json::{json, Value};

use crate::action::{keys_json, AckInfo, Silence};
use crate::change::{Change, Snapshot};
use crate::event::Event;

/// A change as published to clients.
#[derive(Debug)]
pub struct Published {
    pub change: Change,
    frame: OnceLock<Utf8Bytes>,
}

impl Published {
    pub fn new(change: Change) -> Arc<Self> {
        Arc::new(Self {
            change,
            frame: OnceLock::new(),
        })
    }

    /// `{"type":"change","seq":N,"previous_state":"ok","event":E}`, serialized once.
    pub fn frame(&self) -> Utf8Bytes {
        self.frame
            .get_or_init(|| change_json(&self.change).to_string().into())
            .clone()
    }
}

/// `{"type":"change","seq":N,"previous_state":"ok","event":E}`: the one definition of a change on
/// the wire, shared by the websocket and `/api/history`. A key that left the index (expired for
/// longer than `--expired-keep`, or cleared: then with `"cleared_by"`) is a change with
/// `"removed":true`, `event` its last event. A change an active silence matched has
/// `"silenced":true`. An operator-action record is its own frame (`ack`, `unack`, `silences`).
pub fn change_json(change: &Change) -> Value {
    if let Some(record) = &change.action {
        return record.to_json(change.seq);
    }
    let mut value = json!({
        "type": "change",
        "seq": change.seq,
        "previous_state": change.previous_state,
        "event": change.event.to_json_value(),
    });
    if change.removed {
        value["removed"] = Value::Bool(true);
    }
    if change.silenced {
        value["silenced"] = Value::Bool(true);
    }
    if let Some(by) = &change.cleared_by {
        value["cleared_by"] = Value::String(by.clone());
    }
    value
}

pub type Receiver = tokio::sync::broadcast::Receiver<Arc<Published>>;
pub type Sender = tokio::sync::broadcast::Sender<Arc<Published>>;

/// `{"type":"snapshot","seq":S,"epoch":E,"reset":R,"events":[…],"acks":[…],"silences":[…],
/// "silenced":[[H,S]…]}` for the events `keep` accepts (acks and silences are all sent: the
/// page decides what to show). `reset` tells a client that asked to resume (or fell behind)
/// that it missed changes and must replace its view.
pub fn snapshot_frame(
    snapshot: &Snapshot,
    epoch: &str,
    reset: bool,
    keep: impl Fn(&Event) -> bool,
) -> Utf8Bytes {
    let events: Vec<Value> = snapshot
        .events
        .iter()
        .filter(|e| keep(e))
        .map(|e| e.to_json_value())
        .collect();
    let actions = &snapshot.actions;
    json!({
        "type": "snapshot",
        "seq": snapshot.seq,
        "epoch": epoch,
        "reset": reset,
        "events": events,
        "acks": actions.acks.iter().map(AckInfo::to_json).collect::<Vec<_>>(),
        "silences": actions.silences.iter().map(Silence::to_json).collect::<Vec<_>>(),
        "silenced": keys_json(&actions.silenced),
    })
    .to_string()
    .into()
}
