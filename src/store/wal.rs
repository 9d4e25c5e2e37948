//! The write-ahead log of changes: what makes a group of changes durable with one synchronous
//! write (`O_DSYNC`, the same guarantee as write + `fdatasync`).
//!
//! Why not just a durable redb commit per group: redb's durable commit rewrites the touched B-tree
//! pages and its header and fsyncs them (≈1 ms here, a dozen writes), and every message that
//! changed a state waits for it. One synchronous write of the encoded changes costs a fraction
//! of that. redb still holds the index and the history (written without fsync a few milliseconds
//! later, for readers); a periodic durable redb commit — the *checkpoint* — makes all of
//! that durable, after which the log is emptied. After a crash, the records with a `seq` above the
//! one redb has are replayed into it.
//!
//! On disk: records of `[length: u32 BE][crc32 of payload: u32 BE][payload]`, the payload an encoded
//! `StoredChange`. The log ends at the first record that is empty, torn (short, oversized, bad
//! checksum) or out of order: the end of what was written since the last checkpoint, or a write
//! that never completed (so its changes were never acknowledged) — ignored quietly. But a damaged
//! record in the *middle* (a flipped bit on disk) must not hide the acknowledged records behind
//! it: reading looks past every bad stretch for a further valid record (checksum, decodes, `seq`
//! above the last one read). If one is found, the bad stretch is skipped, counted
//! ([`ReadReport`]) and reading goes on; only a bad stretch with nothing valid after it is a torn
//! tail.
//!
//! The file is preallocated and reused, never truncated: after a checkpoint the next record is
//! written at offset 0 over the old ones. Overwriting blocks the file already has lets the sync
//! skip the file-system journal (measured with write + `fdatasync`: ≈110 µs here instead of
//! ≈160 µs for an append). What is left of
//! the previous round after the new records is harmless: those records all have a `seq` at or
//! below the checkpoint's, so reading stops at them (out of order) or skips them (already in
//! redb).
//!
//! Writes bypass the page cache (`O_DIRECT`) where the file system allows it: the data goes
//! straight from our buffer to the device, which skips the page-cache bookkeeping and measured
//! ≈110 µs per synchronous 4 KiB write here against ≈140 µs through the cache. Direct I/O moves
//! whole aligned blocks, so each write starts at the block holding the end of the log (its
//! bytes so far are kept in memory) and is padded with zeros to a block boundary; zeros read back
//! as an empty record, the end of the log. Where `O_DIRECT` is refused (tmpfs, some network file
//! systems), the log writes through the page cache instead, with the same guarantee.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use prost::Message;

use super::encoding::StoredChange;
use super::error::StoreError;

const HEADER_BYTES: usize = 8;
/// Written as zeros when the log is created, so that ordinary appends overwrite allocated blocks.
/// Less (or none) when the file system has no room for it: the log then grows as it is written.
const PREALLOCATE_BYTES: u64 = 4 * 1024 * 1024;
/// Bytes the log may hold since the last checkpoint. Checkpoints normally keep it near
/// `CHECKPOINT_LOG_BYTES` (16 MiB); when they fail (redb cannot write), appends past this are
/// refused, so a failing database cannot make the log eat the disk. An empty log takes any group.
pub const MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;
/// Alignment of direct writes: offset, length and buffer address. 4 KiB covers the logical
/// block size of every common device (512 or 4096 bytes).
const BLOCK: usize = 4096;

pub struct Wal {
    file: File,
    path: PathBuf,
    /// Whether `file` was opened with `O_DIRECT` (writes must be whole aligned blocks).
    direct: bool,
    /// Where the next record goes: bytes of records since the last checkpoint.
    len: u64,
    /// The bytes of the log's last, partly filled block (`len` rounded down to a block up to
    /// `len`): a direct write rewrites that block whole.
    tail: Vec<u8>,
    /// Encoding buffer, reused between appends.
    buf: Vec<u8>,
    /// Block-aligned staging for direct writes, reused between appends.
    staging: AlignedBuf,
}

/// A byte buffer whose start is block-aligned, as direct I/O requires of the memory it writes
/// from. Over-allocates one block and starts at the first aligned address inside.
#[derive(Default)]
struct AlignedBuf {
    bytes: Vec<u8>,
    start: usize,
}

impl AlignedBuf {
    /// An aligned slice of `len` bytes (a multiple of [`BLOCK`]), holding whatever the last
    /// write left: the caller fills all of it.
    fn aligned(&mut self, len: usize) -> &mut [u8] {
        if self.bytes.len() < len + BLOCK {
            self.bytes = vec![0u8; len + BLOCK];
            let address = self.bytes.as_ptr() as usize;
            self.start = (BLOCK - address % BLOCK) % BLOCK;
        }
        &mut self.bytes[self.start..self.start + len]
    }

    /// Gives back a burst's memory.
    fn shrink(&mut self, keep: usize) {
        if self.bytes.len() > keep {
            *self = AlignedBuf::default();
        }
    }
}

/// Opens the log for writing: `O_DSYNC` (each write returns once its data is on stable
/// storage — one system call per group commit instead of write + fdatasync), with `O_DIRECT`
/// when `direct` is asked for.
fn open_for_writing(path: &Path, direct: bool) -> std::io::Result<File> {
    let flags = if direct {
        libc::O_DSYNC | libc::O_DIRECT
    } else {
        libc::O_DSYNC
    };
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(flags)
        .open(path)
}

impl Wal {
    /// Opens (or creates) the log at `path` and returns the intact records in it with a `seq`
    /// above `floor` (what the database already holds), oldest first, and what reading found.
    /// The caller must make them durable elsewhere, then [`Wal::clear`] the log.
    pub fn open(
        path: &Path,
        floor: u64,
    ) -> Result<(Wal, Vec<StoredChange>, ReadReport), StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_owned(),
            source,
        };
        // Reading and preallocating go through the page cache (direct reads would need aligned
        // buffers too); both are done and synced before the first direct write.
        let file = open_for_writing(path, false).map_err(io)?;
        let bytes = read_all(&file).map_err(io)?;
        let (records, report) = parse_records(&bytes, floor);
        let good_len = report.end;
        drop(bytes);
        preallocate(&file, path);
        let block_start = good_len - good_len % BLOCK as u64;
        let mut tail = vec![0u8; (good_len - block_start) as usize];
        file.read_exact_at(&mut tail, block_start).map_err(io)?;
        let (file, direct) = match open_for_writing(path, true) {
            Ok(direct_file) => (direct_file, true),
            Err(error) => {
                tracing::info!(path = %path.display(), %error, "direct I/O refused; the change log writes through the page cache");
                (file, false)
            }
        };
        let wal = Wal {
            file,
            path: path.to_owned(),
            direct,
            len: good_len,
            tail,
            buf: Vec::new(),
            staging: AlignedBuf::default(),
        };
        Ok((wal, records, report))
    }

    /// The records written since the last [`Wal::clear`] with a `seq` above `floor`, read back
    /// from the file: what a reopened database lacks.
    pub fn read_back(&self, floor: u64) -> Result<(Vec<StoredChange>, ReadReport), StoreError> {
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        // A plain descriptor: direct reads would need aligned buffers.
        let file = File::open(&self.path).map_err(io)?;
        let mut bytes = vec![0u8; self.len as usize];
        file.read_exact_at(&mut bytes, 0).map_err(io)?;
        Ok(parse_records(&bytes, floor))
    }

    /// Whether the file holds any record with an intact checksum, current or from an earlier
    /// round: evidence that this directory held data before.
    pub fn holds_any_record(path: &Path) -> std::io::Result<bool> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(error) => return Err(error),
        };
        let (records, _) = parse_records(&read_all(&file)?, 0);
        Ok(!records.is_empty())
    }

    /// Appends `records` and waits until they are on disk.
    pub fn append<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), StoreError> {
        self.buf.clear();
        for payload in records {
            encode_record(payload, &mut self.buf);
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        if self.len > 0 && self.len + self.buf.len() as u64 > MAX_LOG_BYTES {
            return Err(StoreError::LogFull {
                path: self.path.clone(),
                len: self.len,
                limit: MAX_LOG_BYTES,
            });
        }
        if let Err(error) = self.write_records() {
            // Whatever part was written is not acknowledged: the next append overwrites it, and a
            // restart cuts it off (its checksum or order is wrong, or it is followed by nothing).
            return Err(StoreError::Io {
                path: self.path.clone(),
                source: error,
            });
        }
        self.len += self.buf.len() as u64;
        // Don't keep a burst's buffers forever.
        if self.buf.capacity() > 1024 * 1024 {
            self.buf = Vec::new();
        }
        self.staging.shrink(1024 * 1024 + BLOCK);
        Ok(())
    }

    /// Writes `buf` at the end of the log and updates `tail`; `len` is the caller's to move.
    fn write_records(&mut self) -> std::io::Result<()> {
        if !self.direct {
            self.file.write_all_at(&self.buf, self.len)?;
        } else {
            let block_start = self.len - self.tail.len() as u64;
            let used = self.tail.len() + self.buf.len();
            let padded = used.div_ceil(BLOCK) * BLOCK;
            let staging = self.staging.aligned(padded);
            staging[..self.tail.len()].copy_from_slice(&self.tail);
            staging[self.tail.len()..used].copy_from_slice(&self.buf);
            staging[used..].fill(0);
            match self.file.write_all_at(staging, block_start) {
                Ok(()) => {}
                // The device wants a larger alignment than ours, or the file system changed its
                // mind: write through the page cache from now on.
                Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::warn!(path = %self.path.display(), %error, "direct write refused; the change log writes through the page cache from now on");
                    self.file = open_for_writing(&self.path, false)?;
                    self.direct = false;
                    self.file.write_all_at(&self.buf, self.len)?;
                }
                Err(error) => return Err(error),
            }
        }
        let end = self.len + self.buf.len() as u64;
        let end_block = end - end % BLOCK as u64;
        let from_buf = (end - end_block) as usize;
        if end_block >= self.len {
            // The new tail lies wholly in what was just written.
            self.tail.clear();
            self.tail
                .extend_from_slice(&self.buf[self.buf.len() - from_buf..]);
        } else {
            self.tail.extend_from_slice(&self.buf);
        }
        Ok(())
    }

    /// Empties the file itself, not just the position ([`Wal::clear`]): for a new database beside
    /// an old log, whose records (with `seq`s the new numbering will pass again) must not be
    /// read as current after the next crash.
    pub fn erase(&mut self) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        // A descriptor through the page cache: the zeros need no alignment.
        let file = open_for_writing(&self.path, false).map_err(io)?;
        file.set_len(0).and_then(|()| file.sync_all()).map_err(io)?;
        preallocate(&file, &self.path);
        self.clear();
        Ok(())
    }

    /// The length of the file (preallocated, or grown past that): what a later start checks
    /// it against. `None` if it cannot be read (nothing is recorded then).
    pub fn file_len(&self) -> Option<u64> {
        self.file.metadata().map(|m| m.len()).ok()
    }

    /// Bytes of records since the last [`Wal::clear`].
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Starts the log over: call only once everything in it is durable elsewhere (the
    /// checkpoint). Nothing is written: the next records overwrite these from offset 0.
    pub fn clear(&mut self) {
        self.len = 0;
        self.tail.clear();
    }
}

/// Writes zeros up to [`PREALLOCATE_BYTES`] so that appends overwrite allocated blocks. On a
/// file system without room for that, it settles for less (a quarter at a time) or nothing: the
/// log then grows as it is written, and a small data directory still starts.
fn preallocate(file: &File, path: &Path) {
    let Ok(file_len) = file.metadata().map(|m| m.len()) else {
        return;
    };
    let mut want = PREALLOCATE_BYTES;
    while want > file_len {
        let zeros = vec![0u8; (want - file_len) as usize];
        match file
            .write_all_at(&zeros, file_len)
            .and_then(|()| file.sync_all())
        {
            Ok(()) => return,
            Err(error) => {
                // Give back what a partial write took: it is needed more elsewhere.
                let _ = file.set_len(file_len);
                want /= 4;
                tracing::warn!(path = %path.display(), %error, preallocate_bytes = want, "could not preallocate the change log; trying less");
                if want < BLOCK as u64 * 4 {
                    tracing::warn!(path = %path.display(), "the change log is not preallocated: it grows as it is written");
                    return;
                }
            }
        }
    }
}

/// Whether `bytes`, the start of a file, start like a change log: zeros (an empty round), a
/// whole record (of this round or an earlier one), or a record whose checksum fails (torn by a
/// crash, or damaged: the reader says so). Anything else was never written by the log.
pub fn starts_like_a_log(bytes: &[u8]) -> bool {
    let Some(header) = bytes.get(..HEADER_BYTES) else {
        return false;
    };
    header.iter().all(|&b| b == 0) || record_at(bytes, 0, 0).is_some() || looks_damaged(bytes, 0)
}

/// Appends one record (header and `payload`, an encoded `StoredChange`) to `buf`.
pub fn encode_record(payload: &[u8], buf: &mut Vec<u8>) {
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    buf.extend_from_slice(payload);
}

fn read_all(file: &File) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    BufReader::new(file).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// What reading the log found besides its records.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadReport {
    /// Damaged stretches with valid records after them: skipped. Each held at least one
    /// acknowledged change that is lost.
    pub skipped: usize,
    /// Bytes in those stretches.
    pub bytes_ignored: u64,
    /// Where the last valid record ends: the end of the log.
    pub end: u64,
    /// The log ends with a whole record (its length fits, its payload starts like one) whose
    /// checksum fails: a write cut short by a crash (never acknowledged) looks like that, but so
    /// does damage to the last acknowledged record. Nothing tells the two apart; it is said.
    /// (A stale record from an earlier round, checksum intact, is no damage: see
    /// `looks_damaged`.)
    pub damaged_tail: bool,
}

/// The valid record at `at` with a `seq` above `after_seq`, and the bytes it spans; `None` for
/// zeros, a torn or damaged record, or a stale one (from before the last checkpoint).
fn record_at(bytes: &[u8], at: usize, after_seq: u64) -> Option<(StoredChange, usize)> {
    let header = bytes.get(at..at + HEADER_BYTES)?;
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    // A damaged length field cannot make us read (or allocate) past the file.
    let payload = bytes.get(at + HEADER_BYTES..at + HEADER_BYTES + len)?;
    // Every record starts with its seq (field 1, a varint: tag byte 0x08), never 0: a cheap
    // test that skips almost every offset of a damaged stretch before the checksum.
    if len == 0 || payload[0] != 0x08 || crc32fast::hash(payload) != crc {
        return None;
    }
    let record = StoredChange::decode(payload).ok()?;
    (record.seq > after_seq).then_some((record, HEADER_BYTES + len))
}

/// The valid records of the log with a `seq` above `floor`, in order. Reading does not stop at
/// the first bad record: it looks at every later offset for a valid one (see the module doc).
///
/// The round's first records may be at or below `floor`: a durable commit other than a
/// checkpoint (a reopened database's replay) can bring the database past records the log still
/// holds. Read in order from the start, they are no damage, only not returned; past a bad
/// stretch, only a record above both `floor` and the last one read counts as a valid one.
pub fn parse_records(bytes: &[u8], floor: u64) -> (Vec<StoredChange>, ReadReport) {
    let mut records: Vec<StoredChange> = Vec::new();
    let mut report = ReadReport::default();
    // The last record read in order; the round starts wherever the first valid record is.
    let mut last_seq = 0;
    let mut at = 0;
    // Where the bad stretch being looked past began.
    let mut bad_since: Option<usize> = None;
    while at + HEADER_BYTES <= bytes.len() {
        let after = if bad_since.is_some() {
            last_seq.max(floor)
        } else {
            last_seq
        };
        match record_at(bytes, at, after) {
            Some((record, len)) => {
                if let Some(since) = bad_since.take() {
                    report.skipped += 1;
                    report.bytes_ignored += (at - since) as u64;
                }
                last_seq = record.seq;
                if record.seq > floor {
                    records.push(record);
                }
                at += len;
                report.end = at as u64;
            }
            None => {
                bad_since.get_or_insert(at);
                at += 1;
            }
        }
    }
    if let Some(since) = bad_since {
        report.damaged_tail = looks_damaged(bytes, since);
    }
    (records, report)
}

/// Whether `at` holds a record header whose length fits and whose payload starts like a record,
/// but whose checksum fails: a damaged (or torn) record.
///
/// A whole record whose checksum holds is not damage, whatever its `seq`: it is from an earlier
/// round (at or below the checkpoint), the end of this one. That is what a clean stop leaves at
/// offset 0 — its last checkpoint starts the log over without writing — and what follows the
/// new records wherever they end on an old record's boundary.
fn looks_damaged(bytes: &[u8], at: usize) -> bool {
    let Some(header) = bytes.get(at..at + HEADER_BYTES) else {
        return false;
    };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    len > 0
        && bytes
            .get(at + HEADER_BYTES..at + HEADER_BYTES + len)
            .is_some_and(|payload| payload[0] == 0x08 && crc32fast::hash(payload) != crc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64) -> Vec<u8> {
        StoredChange {
            seq,
            previous_state: "ok".into(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("statecast-wal-{}", super::super::new_epoch()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn seqs(records: &[StoredChange]) -> Vec<u64> {
        records.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn appends_survive_reopen_and_clear_empties() {
        let path = tmp("a.log");
        {
            let (mut wal, old, _) = Wal::open(&path, 0).unwrap();
            assert!(old.is_empty());
            let (r1, r2, r3) = (record(1), record(2), record(3));
            wal.append([r1.as_slice(), r2.as_slice()]).unwrap();
            wal.append([r3.as_slice()]).unwrap();
        }
        let (mut wal, records, _) = Wal::open(&path, 0).unwrap();
        assert_eq!(seqs(&records), vec![1, 2, 3]);
        assert!(
            std::fs::metadata(&path).unwrap().len() >= PREALLOCATE_BYTES,
            "preallocated"
        );
        // After a checkpoint the log starts over, physically over the old records: reading
        // stops where the new ones end.
        wal.clear();
        let r4 = record(4);
        wal.append([r4.as_slice()]).unwrap();
        drop(wal);
        let (_, records, _) = Wal::open(&path, 0).unwrap();
        assert_eq!(seqs(&records), vec![4]);
    }

    #[test]
    fn appends_of_any_size_across_block_boundaries_read_back_whole() {
        appends_read_back_whole(true);
    }

    /// The same through the page cache: what the log does where direct I/O is refused.
    #[test]
    fn appends_read_back_whole_without_direct_io() {
        appends_read_back_whole(false);
    }

    fn appends_read_back_whole(direct: bool) {
        let path = tmp("c.log");
        let open = |path: &Path| {
            let (mut wal, records, _) = Wal::open(path, 0).unwrap();
            if !direct {
                wal.file = open_for_writing(path, false).unwrap();
                wal.direct = false;
            }
            (wal, records)
        };
        let payload = |seq: u64| {
            StoredChange {
                seq,
                // From a few bytes to more than a block, so records start and end anywhere in a
                // block and some span several.
                previous_state: "x".repeat((seq as usize * 397) % 9000),
                ..Default::default()
            }
            .encode_to_vec()
        };
        let mut expected = Vec::new();
        {
            let (mut wal, _) = open(&path);
            let mut seq = 0;
            for group in 1..=40u64 {
                let records: Vec<Vec<u8>> = (0..group % 4 + 1)
                    .map(|_| {
                        seq += 1;
                        expected.push(seq);
                        payload(seq)
                    })
                    .collect();
                wal.append(records.iter().map(Vec::as_slice)).unwrap();
            }
        }
        let (mut wal, records) = open(&path);
        assert_eq!(seqs(&records), expected);
        for (record, seq) in records.iter().zip(1..) {
            assert_eq!(record.encode_to_vec(), payload(seq));
        }
        // Reopened mid-block, appending goes on after the last record.
        let next = payload(expected.len() as u64 + 1);
        wal.append([next.as_slice()]).unwrap();
        drop(wal);
        let (_, records) = open(&path);
        assert_eq!(records.len(), expected.len() + 1);
    }

    #[test]
    fn torn_or_corrupt_tails_end_the_log() {
        let path = tmp("b.log");
        let (mut wal, _, _) = Wal::open(&path, 0).unwrap();
        let (r1, r2) = (record(1), record(2));
        wal.append([r1.as_slice(), r2.as_slice()]).unwrap();
        let good = wal.len();
        drop(wal);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(good as usize); // the rest is preallocated zeros

        // A half-written third record.
        let mut torn = bytes.clone();
        torn.extend_from_slice(&[0, 0, 0, 9, 1, 2]);
        std::fs::write(&path, &torn).unwrap();
        let (wal, records, report) = Wal::open(&path, 0).unwrap();
        assert_eq!((seqs(&records), wal.len()), (vec![1, 2], good));
        assert_eq!(report.skipped, 0, "a torn tail is no corruption");
        assert!(!report.damaged_tail, "an incomplete record is quietly torn");
        drop(wal);

        // A flipped bit in the second record's payload: only the first survives.
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        std::fs::write(&path, &flipped).unwrap();
        let (_, records, report) = Wal::open(&path, 0).unwrap();
        assert_eq!(seqs(&records), vec![1]);
        assert!(
            report.damaged_tail,
            "a whole last record with a bad checksum is said"
        );

        // A length field announcing 4 GiB: stops, allocates nothing of that size.
        let mut huge = bytes.clone();
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        std::fs::write(&path, &huge).unwrap();
        assert_eq!(seqs(&Wal::open(&path, 0).unwrap().1), vec![1, 2]);

        // A stale record out of order (seq not increasing) ends the log.
        let mut stale = bytes;
        let r1_again = record(1);
        stale.extend_from_slice(&(r1_again.len() as u32).to_be_bytes());
        stale.extend_from_slice(&crc32fast::hash(&r1_again).to_be_bytes());
        stale.extend_from_slice(&r1_again);
        std::fs::write(&path, &stale).unwrap();
        let (_, records, report) = Wal::open(&path, 0).unwrap();
        assert_eq!(seqs(&records), vec![1, 2]);
        assert!(!report.damaged_tail, "a stale whole record is no damage");
    }

    /// Records 1..=n appended one per write; returns the log's bytes (without the preallocated
    /// zeros) and where each record starts.
    fn log_of(path: &Path, n: u64) -> (Vec<u8>, Vec<usize>) {
        let (mut wal, _, _) = Wal::open(path, 0).unwrap();
        let mut starts = Vec::new();
        for seq in 1..=n {
            starts.push(wal.len() as usize);
            let r = record(seq);
            wal.append([r.as_slice()]).unwrap();
        }
        let good = wal.len() as usize;
        drop(wal);
        let mut bytes = std::fs::read(path).unwrap();
        bytes.truncate(good);
        (bytes, starts)
    }

    #[test]
    fn a_damaged_record_in_the_middle_is_skipped_and_counted() {
        let path = tmp("m.log");
        let (bytes, starts) = log_of(&path, 5);
        let first_len = starts[1] - starts[0];

        // A flipped byte in the first record's payload: the four after it are all read.
        let mut flipped = bytes.clone();
        flipped[starts[1] - 1] ^= 0x40;
        std::fs::write(&path, &flipped).unwrap();
        let (_, records, report) = Wal::open(&path, 0).unwrap();
        assert_eq!(seqs(&records), vec![2, 3, 4, 5]);
        assert_eq!(
            (report.skipped, report.bytes_ignored, report.end),
            (1, first_len as u64, bytes.len() as u64)
        );

        // A damaged length field (announcing far more than the file holds) in the second.
        let mut long = bytes.clone();
        long[starts[1]] = 0x7f;
        std::fs::write(&path, &long).unwrap();
        let (_, records, report) = Wal::open(&path, 0).unwrap();
        assert_eq!(seqs(&records), vec![1, 3, 4, 5]);
        assert_eq!(report.skipped, 1);

        // A damaged length field announcing less: the rest of the record is looked past.
        let mut short = bytes.clone();
        short[starts[2] + 3] = 3;
        std::fs::write(&path, &short).unwrap();
        let (_, records, report) = Wal::open(&path, 0).unwrap();
        assert_eq!(seqs(&records), vec![1, 2, 4, 5]);
        assert_eq!(report.skipped, 1);

        // Two damaged stretches: both counted.
        let mut two = flipped;
        two[starts[3] + 9] ^= 0x01;
        std::fs::write(&path, &two).unwrap();
        let (_, records, report) = Wal::open(&path, 0).unwrap();
        assert_eq!(seqs(&records), vec![2, 3, 5]);
        assert_eq!(report.skipped, 2);
    }

    #[test]
    fn records_at_or_below_the_floor_are_stale() {
        let path = tmp("f.log");
        let (mut wal, _, _) = Wal::open(&path, 0).unwrap();
        let old: Vec<Vec<u8>> = (1..=5).map(record).collect();
        wal.append(old.iter().map(Vec::as_slice)).unwrap();
        // A checkpoint: the next round overwrites from offset 0, the old tail stays behind it.
        wal.clear();
        let new: Vec<Vec<u8>> = (6..=7).map(record).collect();
        wal.append(new.iter().map(Vec::as_slice)).unwrap();
        drop(wal);
        let (wal, records, report) = Wal::open(&path, 5).unwrap();
        assert_eq!(seqs(&records), vec![6, 7]);
        assert_eq!(report.skipped, 0, "stale records are no corruption");
        assert_eq!(seqs(&wal.read_back(6).unwrap().0), vec![7]);
        assert!(Wal::holds_any_record(&path).unwrap());
        assert!(!Wal::holds_any_record(&tmp("none.log")).unwrap());
    }

    /// A reopened database's replay is a durable commit the log does not follow at once: its
    /// round then starts with records at or below the database's `seq`. They are no damage.
    #[test]
    fn records_at_or_below_the_floor_at_the_start_of_the_round_are_no_damage() {
        let path = tmp("r.log");
        let (mut wal, _, _) = Wal::open(&path, 0).unwrap();
        let all: Vec<Vec<u8>> = (1..=6).map(record).collect();
        wal.append(all.iter().map(Vec::as_slice)).unwrap();
        drop(wal);
        let (_, records, report) = Wal::open(&path, 4).unwrap();
        assert_eq!(seqs(&records), vec![5, 6]);
        assert_eq!((report.skipped, report.damaged_tail), (0, false));
        // Past a damaged stretch, a record at or below the floor is not taken for a valid one.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8 + 1] ^= 0x40; // the first record's payload
        std::fs::write(&path, &bytes).unwrap();
        let (_, records, report) = Wal::open(&path, 4).unwrap();
        assert_eq!(seqs(&records), vec![5, 6]);
        assert_eq!(report.skipped, 1);
    }

    #[test]
    fn appends_past_the_limit_are_refused_until_a_clear() {
        let path = tmp("l.log");
        let (mut wal, _, _) = Wal::open(&path, 0).unwrap();
        let big = vec![7u8; (MAX_LOG_BYTES / 2) as usize];
        wal.append([big.as_slice()]).unwrap();
        wal.append([big.as_slice()]).unwrap_err();
        wal.clear();
        wal.append([big.as_slice()]).unwrap();
        let _ = std::fs::remove_file(&path);
    }
}
