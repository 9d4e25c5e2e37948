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

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;
use serde_json::{json, Value};

use crate::action::{AckInfo, Silence};
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

/// The (host, service) of an event or an ack, borrowed.
type KeyRef<'a> = (Option<&'a str>, Option<&'a str>);

/// The keys of the events `keep` accepts: what a subscriber with a filter can see, to pick
/// the acks and silenced keys that belong in its view.
pub fn visible_keys<'a>(
    events: &'a [Arc<Event>],
    keep: impl Fn(&Event) -> bool,
) -> HashSet<KeyRef<'a>> {
    events
        .iter()
        .filter(|e| keep(e))
        .map(|e| (e.host.as_deref(), e.service.as_deref()))
        .collect()
}

/// Whether an ack (or a silenced key) is of a key in `visible`; `None` sees everything.
pub fn is_visible(
    visible: Option<&HashSet<KeyRef<'_>>>,
    host: &Option<String>,
    service: &Option<String>,
) -> bool {
    visible.is_none_or(|keys| keys.contains(&(host.as_deref(), service.as_deref())))
}

/// `{"type":"snapshot","seq":S,"epoch":E,"reset":R,"events":[…],"acks":[…],"silences":[…],
/// "silenced":[[H,S]…]}`: the events with a state that `filter` accepts (`None`: all of them),
/// and the acks and silenced keys of those events only — a subscriber sees what its filter
/// sees, and a filter that matches nothing gets no acks. Silences are all sent: there are at
/// most 1,000, and the page manages them from any view. `reset` tells a client that asked to
/// resume (or fell behind) that it missed changes and must replace its view.
///
/// Written straight into one string, an item at a time: the frame is as large as the index,
/// and a JSON tree of it first cost several times that.
pub fn snapshot_frame(
    snapshot: &Snapshot,
    epoch: &str,
    reset: bool,
    filter: Option<impl Fn(&Event) -> bool>,
) -> Utf8Bytes {
    let with_state = |e: &Event| e.state.is_some() && filter.as_ref().is_none_or(|f| f(e));
    let actions = &snapshot.actions;
    let narrowed = filter.is_some() && !(actions.acks.is_empty() && actions.silenced.is_empty());
    let visible = narrowed.then(|| visible_keys(&snapshot.events, with_state));
    let visible = visible.as_ref();

    let mut out = Vec::new();
    // Writing into a Vec cannot fail, and every value written here is valid JSON.
    let head = json!({"type": "snapshot", "seq": snapshot.seq, "epoch": epoch, "reset": reset});
    let _ = serde_json::to_writer(&mut out, &head);
    out.pop(); // the head's closing brace: the arrays follow
    out.extend_from_slice(b",\"events\":");
    write_array(
        &mut out,
        snapshot.events.iter().filter(|e| with_state(e)),
        |e| e.to_json_value(),
    );
    out.extend_from_slice(b",\"acks\":");
    let acks = actions
        .acks
        .iter()
        .filter(|a| is_visible(visible, &a.host, &a.service));
    write_array(&mut out, acks, AckInfo::to_json);
    out.extend_from_slice(b",\"silences\":");
    write_array(&mut out, actions.silences.iter(), Silence::to_json);
    out.extend_from_slice(b",\"silenced\":");
    let silenced = actions
        .silenced
        .iter()
        .filter(|(h, s)| is_visible(visible, h, s));
    write_array(&mut out, silenced, |(h, s)| json!([h, s]));
    out.push(b'}');
    // serde_json writes UTF-8 only.
    String::from_utf8(out).unwrap_or_default().into()
}

/// Appends `[item, …]`, each item made a JSON value and written on its own.
fn write_array<T>(out: &mut Vec<u8>, items: impl Iterator<Item = T>, to_json: impl Fn(T) -> Value) {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, &to_json(item));
    }
    out.push(b']');
}
