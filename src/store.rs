//! Durable index and transition history, in an embedded redb database.
//!
//! Why redb: pure Rust (no C toolchain or system library), one file, ACID transactions with
//! fsync on commit, and concurrent readers alongside the single writer — which is exactly the
//! engine's shape: one owner writes, HTTP handlers read history.
//!
//! The engine calls [`Store::commit`] once per batch of messages (group commit) *before* it
//! publishes the changes or acknowledges the batch: an acknowledged change is on disk, and a `seq`
//! is never handed out twice, even across `kill -9`. Index updates that are not changes are
//! written by the periodic flush (every second), so a crash can lose at most that second of
//! metric/description updates — never a state.

use std::path::Path;

use prost::Message;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::engine::Change;
use crate::event::Event;
use crate::ingest::convert;
use crate::proto;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Encoded index key → encoded event.
const INDEX: TableDefinition<&[u8], &[u8]> = TableDefinition::new("index");
/// seq → encoded [`StoredChange`].
const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");

/// Page cache of the database file (redb's default is 1 GiB).
const CACHE_BYTES: usize = 64 * 1024 * 1024;

const META_EPOCH: &str = "epoch";
const META_SEQ: &str = "seq";

#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(String);

impl<E: Into<redb::Error>> From<E> for StoreError {
    fn from(e: E) -> Self {
        StoreError(e.into().to_string())
    }
}

/// A change as kept in history.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredChange {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(string, tag = "2")]
    pub previous_state: String,
    #[prost(message, optional, tag = "3")]
    pub event: Option<proto::Event>,
    #[prost(message, optional, tag = "4")]
    pub previous: Option<proto::Event>,
    /// When the change was committed (µs since the epoch): what age-based retention uses.
    #[prost(int64, tag = "5")]
    pub recorded_at: i64,
}

impl StoredChange {
    pub fn event(&self) -> Event {
        convert::from_proto(self.event.clone().unwrap_or_default(), 0)
    }

    pub fn previous(&self) -> Option<Event> {
        self.previous.clone().map(|p| convert::from_proto(p, 0))
    }

    /// Back to the engine's form, to be filtered and framed like a live change.
    pub fn into_change(self) -> Change {
        Change {
            seq: self.seq,
            event: std::sync::Arc::new(self.event()),
            previous: self.previous().map(std::sync::Arc::new),
            previous_state: self.previous_state,
        }
    }
}

/// What a restart recovers.
pub struct Recovered {
    pub epoch: String,
    pub seq: u64,
    pub events: Vec<Event>,
}

/// Bounds on history.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_changes: u64,
    pub max_age_micros: i64,
}

pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the database under `dir`, recovering the index, the last `seq` and the
    /// epoch. A fresh directory gets a fresh epoch: clients holding an old one must reset.
    pub fn open(dir: &Path) -> Result<(Store, Recovered), StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        // redb caches up to 1 GiB of pages by default; bound it like every other buffer.
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(dir.join("statecast.redb"))?;
        let txn = db.begin_write()?;
        let recovered = {
            let mut meta = txn.open_table(META)?;
            let epoch = match meta.get(META_EPOCH)? {
                Some(v) => String::from_utf8_lossy(v.value()).into_owned(),
                None => new_epoch(),
            };
            meta.insert(META_EPOCH, epoch.as_bytes())?;
            let seq = meta
                .get(META_SEQ)?
                .and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes))
                .unwrap_or(0);
            let _ = txn.open_table(HISTORY)?;
            let index = txn.open_table(INDEX)?;
            let mut events = Vec::new();
            for row in index.iter()? {
                let (_, value) = row?;
                match proto::Event::decode(value.value()) {
                    Ok(e) => events.push(convert::from_proto(e, 0)),
                    Err(error) => tracing::warn!(%error, "skipping undecodable index entry"),
                }
            }
            Recovered { epoch, seq, events }
        };
        txn.commit()?;
        Ok((Store { db }, recovered))
    }

    /// One transaction: the batch's changes into history, their events into the index, the
    /// other updated events (`dirty`), and the last `seq`. Fsynced before returning.
    pub fn commit(
        &self,
        changes: &[Change],
        dirty: &[std::sync::Arc<Event>],
        seq: u64,
        now_micros: i64,
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| StoreError(e.to_string()))?;
        {
            let mut history = txn.open_table(HISTORY)?;
            let mut index = txn.open_table(INDEX)?;
            for change in changes {
                let record = StoredChange {
                    seq: change.seq,
                    previous_state: change.previous_state.clone(),
                    event: Some(convert::to_proto(&change.event)),
                    previous: change.previous.as_deref().map(convert::to_proto),
                    recorded_at: now_micros,
                };
                history.insert(change.seq, record.encode_to_vec().as_slice())?;
                put_event(&mut index, &change.event)?;
            }
            for event in dirty {
                put_event(&mut index, event)?;
            }
            let mut meta = txn.open_table(META)?;
            meta.insert(META_SEQ, seq.to_be_bytes().as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Changes with `seq > since`, oldest first, at most `limit`, that `keep` accepts.
    pub fn history(
        &self,
        since: u64,
        limit: usize,
        mut keep: impl FnMut(&StoredChange) -> bool,
    ) -> Result<Vec<StoredChange>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(HISTORY)?;
        let mut out = Vec::new();
        for row in table.range(since.saturating_add(1)..)? {
            if out.len() >= limit {
                break;
            }
            let (_, value) = row?;
            let Ok(change) = StoredChange::decode(value.value()) else {
                continue;
            };
            if keep(&change) {
                out.push(change);
            }
        }
        Ok(out)
    }

    /// The oldest retained `seq`, if any history is kept.
    pub fn oldest_seq(&self) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(HISTORY)?;
        let oldest = table.first()?.map(|(k, _)| k.value());
        Ok(oldest)
    }

    /// Deletes history beyond the retention bounds, at most `budget` rows per call so the engine
    /// is never held up for long. Returns how many rows went.
    pub fn prune(
        &self,
        retention: Retention,
        now_micros: i64,
        budget: usize,
    ) -> Result<usize, StoreError> {
        let txn = self.db.begin_write()?;
        let mut removed = 0;
        {
            let mut history = txn.open_table(HISTORY)?;
            let last = history.last()?.map(|(k, _)| k.value()).unwrap_or(0);
            let min_seq_by_count = last.saturating_sub(retention.max_changes);
            while removed < budget {
                let Some((seq, recorded_at)) = history.first()?.map(|(k, v)| {
                    let at = StoredChange::decode(v.value()).map_or(0, |c| c.recorded_at);
                    (k.value(), at)
                }) else {
                    break;
                };
                let too_many = seq <= min_seq_by_count;
                let too_old = now_micros.saturating_sub(recorded_at) > retention.max_age_micros;
                if !(too_many || too_old) {
                    break;
                }
                history.remove(seq)?;
                removed += 1;
            }
        }
        txn.commit()?;
        Ok(removed)
    }
}

fn put_event(index: &mut redb::Table<&[u8], &[u8]>, event: &Event) -> Result<(), StoreError> {
    let key = encode_key(event);
    index.insert(
        key.as_slice(),
        convert::to_proto(event).encode_to_vec().as_slice(),
    )?;
    Ok(())
}

/// (host, service) as bytes: a presence byte and a length prefix per part, so `(None, "a")`,
/// `(Some(""), "a")` and `("a", None)` never collide.
fn encode_key(event: &Event) -> Vec<u8> {
    let mut key = Vec::new();
    for part in [&event.host, &event.service] {
        match part {
            None => key.push(0),
            Some(s) => {
                key.push(1);
                key.extend_from_slice(&(s.len() as u32).to_be_bytes());
                key.extend_from_slice(s.as_bytes());
            }
        }
    }
    key
}

/// An epoch only has to differ from every earlier one of this data directory: the creation
/// time in nanoseconds, mixed with the process id and std's random hasher seed.
pub fn new_epoch() -> String {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    format!("{:x}-{:016x}", nanos / 1_000_000_000, h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn tmp() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("statecast-store-{}", new_epoch()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn change(seq: u64, host: &str, state: &str) -> Change {
        Change {
            seq,
            previous_state: "ok".into(),
            event: Arc::new(Event {
                host: Some(host.into()),
                state: Some(state.into()),
                time_micros: 5,
                ..Default::default()
            }),
            previous: None,
        }
    }

    #[test]
    fn commit_recover_history_and_prune() {
        let dir = tmp();
        let epoch = {
            let (store, rec) = Store::open(&dir).unwrap();
            assert_eq!((rec.seq, rec.events.len()), (0, 0));
            let changes: Vec<Change> = (1..=5)
                .map(|i| change(i, &format!("h{i}"), "critical"))
                .collect();
            let dirty = vec![Arc::new(Event {
                host: Some("quiet".into()),
                ..Default::default()
            })];
            store.commit(&changes, &dirty, 5, 1_000).unwrap();
            let got = store.history(2, 10, |_| true).unwrap();
            assert_eq!(got.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
            assert_eq!(got[0].event().host.as_deref(), Some("h3"));
            assert_eq!(store.history(0, 2, |_| true).unwrap().len(), 2);
            rec.epoch
        };
        let (store, rec) = Store::open(&dir).unwrap();
        assert_eq!(rec.epoch, epoch, "same directory, same epoch");
        assert_eq!(rec.seq, 5);
        assert_eq!(rec.events.len(), 6);
        let retention = Retention {
            max_changes: 2,
            max_age_micros: i64::MAX,
        };
        assert_eq!(store.prune(retention, 2_000, 100).unwrap(), 3);
        assert_eq!(store.oldest_seq().unwrap(), Some(4));
        let by_age = Retention {
            max_changes: 100,
            max_age_micros: 10,
        };
        assert_eq!(
            store.prune(by_age, 2_000, 1).unwrap(),
            1,
            "budget respected"
        );
        drop(store);
        let other = tmp();
        let (_, fresh) = Store::open(&other).unwrap();
        assert_ne!(fresh.epoch, epoch, "fresh directory, new epoch");
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&other);
    }

    #[test]
    fn keys_do_not_collide() {
        let k = |h: Option<&str>, s: Option<&str>| {
            encode_key(&Event {
                host: h.map(Into::into),
                service: s.map(Into::into),
                ..Default::default()
            })
        };
        assert_ne!(k(None, Some("a")), k(Some(""), Some("a")));
        assert_ne!(k(Some("a"), None), k(None, Some("a")));
        assert_ne!(k(Some("ab"), Some("c")), k(Some("a"), Some("bc")));
    }
}
