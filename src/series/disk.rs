//! Closed buckets on disk: `series.redb` in the data directory, apart from the index and history
//! (`statecast.redb`), so series writes never share a transaction — or a failure — with the
//! store that acknowledgements wait on.
//!
//! Tables: `series_keys` (id → `[host, service]` as JSON) and `series_buckets` ((id, tier, start
//! ms) → the bucket's 48 bytes). Keyed by id first, so one series' range is one range read.
//! Each write is one durable transaction (redb's fsync): a closed bucket the series task wrote
//! survives kill -9; open buckets live in memory only.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError};

use super::bucket::{Bucket, ENCODED_BYTES};
use super::closed::{ClosedBuckets, StoreFailed};
use super::key::{KeyName, SeriesKey, Slot};

const KEYS: TableDefinition<u64, &str> = TableDefinition::new("series_keys");
const BUCKETS: TableDefinition<(u64, u8, i64), [u8; ENCODED_BYTES]> =
    TableDefinition::new("series_buckets");

/// The file, in the data directory.
pub const FILE: &str = "series.redb";
/// redb's page cache, bounded like the main store's.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// See the module doc.
pub struct DiskBuckets {
    path: PathBuf,
    /// Replaced by [`DiskBuckets::reopen`] after a failure; `None` while that has not succeeded.
    db: RwLock<Option<Arc<Database>>>,
}

fn open(path: &Path) -> Result<Database, StoreFailed> {
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(StoreFailed::from)
}

impl DiskBuckets {
    /// Opens (or creates) `series.redb` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreFailed> {
        let path = dir.join(FILE);
        let db = open(&path)?;
        Ok(Self {
            path,
            db: RwLock::new(Some(Arc::new(db))),
        })
    }

    fn db(&self) -> Result<Arc<Database>, StoreFailed> {
        let slot = self
            .db
            .read()
            .map_err(|_| StoreFailed("series database lock poisoned".into()))?;
        slot.clone()
            .ok_or_else(|| StoreFailed("series database closed after a failure; reopening".into()))
    }

    /// Opens the file again after a failed write (redb refuses every transaction after an I/O
    /// error). redb opens a file once per process, so the failed handle is dropped first; a
    /// reader still holding it makes this fail, and the next retry tries again. The open repairs
    /// the file, reading all of it: no lock is held meanwhile, so a reader gets "reopening" at
    /// once instead of waiting for the repair.
    pub fn reopen(&self) -> Result<(), StoreFailed> {
        let slot = || {
            self.db
                .write()
                .map_err(|_| StoreFailed("series database lock poisoned".into()))
        };
        *slot()? = None;
        let db = open(&self.path)?;
        *slot()? = Some(Arc::new(db));
        Ok(())
    }
}

fn decode_key(id: u64, text: &str) -> Option<SeriesKey> {
    let (host, service): (Option<String>, Option<String>) = serde_json::from_str(text).ok()?;
    Some(SeriesKey {
        id,
        name: KeyName { host, service },
    })
}

impl ClosedBuckets for DiskBuckets {
    fn keys(&self) -> Result<Vec<SeriesKey>, StoreFailed> {
        let txn = self.db()?.begin_read().map_err(StoreFailed::from)?;
        let table = match txn.open_table(KEYS) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(StoreFailed::from(error)),
        };
        let mut keys = Vec::new();
        for row in table.iter().map_err(StoreFailed::from)? {
            let (id, text) = row.map_err(StoreFailed::from)?;
            // A row that does not decode (never written so) is skipped, not fatal.
            keys.extend(decode_key(id.value(), text.value()));
        }
        Ok(keys)
    }

    fn get(&self, slot: Slot) -> Result<Option<Bucket>, StoreFailed> {
        let txn = self.db()?.begin_read().map_err(StoreFailed::from)?;
        let table = match txn.open_table(BUCKETS) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(StoreFailed::from(error)),
        };
        let value = table.get(slot).map_err(StoreFailed::from)?;
        Ok(value.map(|v| Bucket::decode(&v.value())))
    }

    fn write(
        &self,
        keys: &[Arc<SeriesKey>],
        buckets: &[(Slot, Bucket)],
        forget: &[u64],
    ) -> Result<(), StoreFailed> {
        let mut txn = self.db()?.begin_write().map_err(StoreFailed::from)?;
        txn.set_durability(Durability::Immediate)
            .map_err(StoreFailed::from)?;
        {
            let mut key_table = txn.open_table(KEYS).map_err(StoreFailed::from)?;
            for key in keys {
                let text = serde_json::to_string(&(&key.name.host, &key.name.service))
                    .map_err(StoreFailed::from)?;
                key_table
                    .insert(key.id, text.as_str())
                    .map_err(StoreFailed::from)?;
            }
            let mut table = txn.open_table(BUCKETS).map_err(StoreFailed::from)?;
            for (slot, bucket) in buckets {
                table
                    .insert(*slot, bucket.encode())
                    .map_err(StoreFailed::from)?;
            }
            for id in forget {
                key_table.remove(*id).map_err(StoreFailed::from)?;
                table
                    .retain_in((*id, 0, i64::MIN)..=(*id, u8::MAX, i64::MAX), |_, _| false)
                    .map_err(StoreFailed::from)?;
            }
        }
        txn.commit().map_err(StoreFailed::from)
    }

    fn read(
        &self,
        id: u64,
        tier: u8,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, Bucket)>, StoreFailed> {
        let txn = self.db()?.begin_read().map_err(StoreFailed::from)?;
        let table = match txn.open_table(BUCKETS) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(StoreFailed::from(error)),
        };
        let mut out = Vec::new();
        for row in table
            .range((id, tier, from_ms)..=(id, tier, to_ms))
            .map_err(StoreFailed::from)?
        {
            let (slot, value) = row.map_err(StoreFailed::from)?;
            out.push((slot.value().2, Bucket::decode(&value.value())));
        }
        Ok(out)
    }

    fn prune(&self, ids: &[u64], tier: u8, before_ms: i64) -> Result<(), StoreFailed> {
        let mut txn = self.db()?.begin_write().map_err(StoreFailed::from)?;
        // Losing a prune to a crash only keeps old buckets a little longer.
        txn.set_durability(Durability::None)
            .map_err(StoreFailed::from)?;
        {
            let mut table = txn.open_table(BUCKETS).map_err(StoreFailed::from)?;
            for id in ids {
                table
                    .retain_in((*id, tier, i64::MIN)..(*id, tier, before_ms), |_, _| false)
                    .map_err(StoreFailed::from)?;
            }
        }
        txn.commit().map_err(StoreFailed::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_keys_are_read_back_after_reopening_the_file() {
        let dir = std::env::temp_dir().join(format!(
            "statecast-series-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let key = Arc::new(SeriesKey {
            id: 7,
            name: KeyName {
                host: Some("web1".into()),
                service: None,
            },
        });
        {
            let disk = DiskBuckets::open(&dir).unwrap();
            assert!(disk.keys().unwrap().is_empty());
            assert!(disk.read(7, 0, 0, i64::MAX).unwrap().is_empty());
            let buckets: Vec<(Slot, Bucket)> = (0..4)
                .map(|i| ((7, 0, i * 10_000), Bucket::of(i * 10_000_000, i as f64)))
                .collect();
            disk.write(&[Arc::clone(&key)], &buckets, &[]).unwrap();
            disk.prune(&[7], 0, 10_000).unwrap();
        }
        let disk = DiskBuckets::open(&dir).unwrap();
        let keys = disk.keys().unwrap();
        assert_eq!(
            keys,
            vec![SeriesKey {
                id: 7,
                name: key.name.clone()
            }]
        );
        let read = disk.read(7, 0, 10_000, 20_000).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[1].1.last, 2.0);
        assert_eq!(disk.get((7, 0, 30_000)).unwrap().map(|b| b.count), Some(1));
        assert!(disk.get((7, 0, 0)).unwrap().is_none(), "pruned");
        disk.write(&[], &[], &[7]).unwrap();
        assert!(disk.keys().unwrap().is_empty());
        assert!(disk.read(7, 0, 0, i64::MAX).unwrap().is_empty());
        disk.reopen().unwrap();
        assert!(disk.keys().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
