//! Operator actions — acknowledge, silence, clear — as data: what an API call asks the engine
//! to do ([`Action`]), the state it keeps for them ([`AckInfo`], [`Silence`], [`Actions`]), the
//! records it hands out for them ([`ActionRecord`]: each gets a `seq` like a change, is
//! published, stored in history and framed for dashboards) and why one is refused ([`ActionRefusal`]).
//!
//! Why a leaf of plain, serde-derived data: an action is an input of the deterministic engine,
//! so in cluster mode it travels through the shared stream and every node applies it; the
//! engine, the store, the broadcaster and the API all name these types without depending on one
//! another. Times are µs since the epoch, set by whoever made the action (the API handler's
//! clock): the engine never reads a clock. The serde forms here are the stored and cluster ones
//! (µs, numeric ids); what dashboards and the API see is the `protocol` module's.

use serde::{Deserialize, Serialize};

use crate::query::Query;

/// (host, service) of an index key, as events carry them (either may be absent).
pub type KeyName = (Option<String>, Option<String>);

/// Silences kept at once: each is evaluated against every change of state.
pub const MAX_SILENCES: usize = 1_000;
/// Memory the patterns of all silences together may hold at most ([`Query::memory`] of each:
/// compiled forms and caches at their bounds). A silence of one simple pattern costs about
/// 70 KiB, so 1,000 of those fit; a silence past the budget is refused (409), whatever the count.
pub const SILENCES_MEMORY: usize = 128 << 20;
/// Longest silence query, in bytes (it is compiled on every node, and kept and sent whole).
pub const MAX_SILENCE_QUERY: usize = 4 * 1024;
/// Longest ack note or silence comment, in bytes.
pub const MAX_NOTE: usize = 1024;
/// Longest "by" (who acted), in bytes.
pub const MAX_BY: usize = 128;

/// One operator action, with when and by whom it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// When the API took it (µs since the epoch): the engine's notion of "now" for it.
    pub at_micros: i64,
    pub by: String,
    pub kind: ActionKind,
}

impl Action {
    /// An action taken now (the API's clock is the engine's "now" for it).
    pub fn now(by: String, kind: ActionKind) -> Self {
        Action {
            at_micros: crate::event::now_micros(),
            by,
            kind,
        }
    }

    /// Compiles a silence's query if it is not compiled yet (an action that arrived over the
    /// wire). Regex compilation is bounded (see [`crate::query`]) but can take milliseconds:
    /// whoever hands such actions to the engine should call this first, on a blocking thread,
    /// so the engine's task does not. A query that does not compile is left for the engine to
    /// refuse.
    pub fn compile(&mut self) {
        if let ActionKind::Silence {
            query, compiled, ..
        } = &mut self.kind
        {
            if compiled.is_none() {
                *compiled = Query::parse_silence(query).ok();
            }
        }
    }
}

/// What the action does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ActionKind {
    /// Acknowledge the key's problem (replacing an earlier ack of it).
    Ack {
        host: Option<String>,
        service: Option<String>,
        note: String,
        expires_at: Option<i64>,
    },
    /// End the key's ack now.
    Unack {
        host: Option<String>,
        service: Option<String>,
    },
    /// Create a silence (`id` `None`: its id is the action's `seq`) or replace silence `id`.
    Silence {
        id: Option<u64>,
        query: String,
        comment: String,
        starts_at: i64,
        ends_at: i64,
        /// The query, compiled already by whoever made the action (off the async workers);
        /// not carried over the wire: a node that receives the action compiles the text.
        #[serde(skip)]
        compiled: Option<Query>,
    },
    /// End silence `id` now.
    Unsilence { id: u64 },
    /// Remove the key from the index now.
    Clear {
        host: Option<String>,
        service: Option<String>,
    },
}

/// An acknowledgement of one key's problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckInfo {
    pub host: Option<String>,
    pub service: Option<String>,
    pub note: String,
    pub by: String,
    pub at: i64,
    pub expires_at: Option<i64>,
}

impl AckInfo {
    pub fn key(&self) -> KeyName {
        (self.host.clone(), self.service.clone())
    }
}

/// A silence: keys whose event its query matches are "silenced" between `starts_at` and
/// `ends_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    /// The `seq` of the action that created it.
    pub id: u64,
    pub query: String,
    pub comment: String,
    pub by: String,
    pub created_at: i64,
    pub starts_at: i64,
    pub ends_at: i64,
    /// It has started (the engine's time passed `starts_at`); it is dropped once it ends.
    pub active: bool,
}

/// Why an ack ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnackReason {
    /// The key returned to ok.
    Resolved,
    /// Its `expires_at` passed.
    Expired,
    /// The key left the index (cleared, or removed after `--expired-keep`).
    Removed,
    /// An operator ended it.
    Deleted,
}

/// What an action (or the clock, for expiries and silence windows) changed: one record with
/// its own `seq`, published and kept in history like a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ActionRecord {
    /// An ack was set or replaced.
    Ack(AckInfo),
    /// An ack ended.
    Unack {
        host: Option<String>,
        service: Option<String>,
        reason: UnackReason,
        by: Option<String>,
    },
    /// One silence changed, with the silenced keys that changed with it: what a silence change
    /// costs to store, log and send is what changed, not the whole set.
    Silence {
        id: u64,
        change: SilenceChange,
        /// The silence after the change; `None` once it is gone (deleted, ended).
        silence: Option<Silence>,
        /// Problem keys silenced by this change that were not before.
        silenced: Vec<KeyName>,
        /// Keys silenced before this change that are not any more.
        unsilenced: Vec<KeyName>,
    },
    /// The whole silence set and silenced keys after a change: what servers before deltas
    /// recorded for every silence change. Never made now; still read (a change log or history
    /// written by an older version) and framed as it was.
    Silences {
        silences: Vec<Silence>,
        silenced: Vec<KeyName>,
    },
}

/// What happened to a silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SilenceChange {
    /// An operator created it.
    Created,
    /// An operator replaced it (same id and creation time).
    Edited,
    /// Its `starts_at` passed (a tick).
    Started,
    /// An operator ended it.
    Deleted,
    /// Its `ends_at` passed (a tick).
    Ended,
}

impl ActionRecord {
    /// What this record does to a silence set kept by id (a store replaying its log): a delta
    /// puts or removes its silence, a whole set replaces the set; acks leave it alone.
    pub fn apply_to_silences(&self, set: &mut std::collections::BTreeMap<u64, Silence>) {
        match self {
            ActionRecord::Silence { id, silence, .. } => match silence {
                Some(silence) => {
                    set.insert(*id, silence.clone());
                }
                None => {
                    set.remove(id);
                }
            },
            ActionRecord::Silences { silences, .. } => {
                *set = silences.iter().map(|s| (s.id, s.clone())).collect();
            }
            ActionRecord::Ack(_) | ActionRecord::Unack { .. } => {}
        }
    }
}

/// The operator state a snapshot carries: every ack, every silence (started or not) and the
/// indexed keys an active silence matches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actions {
    pub acks: Vec<AckInfo>,
    pub silences: Vec<Silence>,
    pub silenced: Vec<KeyName>,
    /// The latest time the engine's input has shown (ticks, actions), µs: what a silence
    /// created with a start at or before it is active from.
    #[serde(default)]
    pub clock: i64,
}

/// Why the engine refused an action (nothing of it applied). Decided from the engine's state,
/// in input order: every node refuses the same actions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionRefusal {
    /// The key or silence does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The state does not allow it: nothing to acknowledge, or a limit reached (409).
    #[error("{0}")]
    Conflict(String),
    /// The action itself is wrong (400).
    #[error("{0}")]
    Invalid(String),
}
