//! Whether the change log beside an existing database can still hold every change acknowledged
//! since the database's last checkpoint: what a start checks before it replays the log.
//!
//! The database knows two things about its log, both written durably with every checkpoint: how
//! long the file was (it never shrinks: it is preallocated, or grown, and then overwritten in
//! place), and whether the last stop was clean (its final checkpoint left nothing in the log
//! that the database lacks). A log that is missing or empty, shorter than that, or that does
//! not start like a change log (a record, a torn record, or zeros) has lost what it held —
//! which is nothing after a clean stop, and anything acknowledged since the last checkpoint
//! otherwise. This module only says what it found; the store decides what to do with it.
//!
//! What it cannot see: damage that leaves the file's length and first record intact (a flipped
//! bit in the middle is found by the reader, [`super::wal`]), and a log cut back inside a round
//! that had grown the file past its recorded length.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use redb::{Database, ReadableDatabase, TableError};

use super::{wal, StoreError, META, META_CLEAN_STOP, META_LOG_BYTES, META_SEQ};

/// What is wrong with the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LogProblem {
    Missing,
    Empty,
    Truncated { len: u64, expected: u64 },
    NotALog,
}

impl std::fmt::Display for LogProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogProblem::Missing => f.write_str("is missing"),
            LogProblem::Empty => f.write_str("is empty"),
            LogProblem::Truncated { len, expected } => write!(
                f,
                "was cut to {len} bytes (it had {expected} at the last checkpoint)"
            ),
            LogProblem::NotALog => {
                f.write_str("does not start with a change-log record (replaced or overwritten?)")
            }
        }
    }
}

/// What the database says about its log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Expected {
    /// The database's `seq` (its last checkpoint, after a crash). A database at 0 may still
    /// lack changes its log held: only a clean stop says the log held nothing.
    pub seq: u64,
    /// The log file's length at the last checkpoint (0 for a database from before it was kept).
    pub log_bytes: u64,
    /// Whether the last stop was clean at `seq`: the log held nothing beyond it.
    pub clean: bool,
}

impl Expected {
    /// Reads it from the database's meta table (all zero for a database that has none yet).
    pub fn read(db: &Database) -> Result<Expected, StoreError> {
        let txn = db.begin_read()?;
        let meta = match txn.open_table(META) {
            Ok(meta) => meta,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Expected::default()),
            Err(error) => return Err(error.into()),
        };
        let number = |key: &str| -> Result<Option<u64>, StoreError> {
            Ok(meta
                .get(key)?
                .and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes)))
        };
        let seq = number(META_SEQ)?.unwrap_or(0);
        Ok(Expected {
            seq,
            log_bytes: number(META_LOG_BYTES)?.unwrap_or(0),
            clean: number(META_CLEAN_STOP)? == Some(seq),
        })
    }
}

/// What is wrong with the log at `path`, if anything, given what the database expects.
pub(super) fn check(path: &Path, expected: &Expected) -> std::io::Result<Option<LogProblem>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Some(LogProblem::Missing))
        }
        Err(error) => return Err(error),
    };
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(Some(LogProblem::Empty));
    }
    if len < expected.log_bytes {
        return Ok(Some(LogProblem::Truncated {
            len,
            expected: expected.log_bytes,
        }));
    }
    if !wal::starts_like_a_log(&first_record(file, len)?) {
        return Ok(Some(LogProblem::NotALog));
    }
    Ok(None)
}

/// The bytes of the log's first record as its header announces it (fewer when the file is
/// shorter, or the length is beyond any record the log takes: then that is all it takes to see
/// it is no record).
fn first_record(file: File, len: u64) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; 8];
    let mut reader = file.take(len);
    let got = read_up_to(&mut reader, &mut header)?;
    let announced = u64::from(u32::from_be_bytes([
        header[0], header[1], header[2], header[3],
    ]));
    let mut bytes = header[..got].to_vec();
    if got == header.len() && announced <= len.min(wal::MAX_LOG_BYTES) {
        reader.take(announced).read_to_end(&mut bytes)?;
    }
    Ok(bytes)
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}
