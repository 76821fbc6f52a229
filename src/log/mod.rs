//! The effect log: a ring of checksummed records in the pool, committed by one 8-byte
//! commit word (`log_tail`, the logical end: bytes ever appended).
//!
//! Commit protocol (invariant 7): records are written past the tail, flushed and fenced;
//! only then is the new tail stored with one untorn 8-byte store, flushed and fenced.
//! So after a crash the commit word names either the old or the new end, and every byte
//! before it is durable. The head (where the records not yet folded into the key space
//! start) is kept by the key space, which moves it in the same atomic batch that folds
//! the records; the space behind it is reused. Opening scans the live records once; any
//! damage (bad commit word, crc/lsn mismatch) puts the log in state `Corrupt`, keeping
//! the valid prefix readable and refusing appends until `repair_truncate`. A media error
//! during an append poisons the log: nothing more is written by this process.
//! Records are opaque payloads here; the effect layer defines what kinds mean. A payload
//! too big for the ring lives in a blob in the heap (`blob`), named by its record.

#![forbid(unsafe_code)]

mod blob;
mod record;

pub use blob::{BlobRef, BlobWriter, BLOB_REF_LEN, FLAG_BLOB};
pub use record::{
    decode_record, encode_header, encode_record, padding, record_crc, record_len, Header, Record,
    RecordRef, HEADER_LEN, MAX_PAYLOAD,
};

use crate::pmem::{Media, MediaError};
use std::fmt;
use std::sync::Arc;

/// Where the log's committed data is damaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// Absolute pool offset of the damage (a record header, or the commit word).
    pub offset: u64,
    /// The lsn the next valid record would have had.
    pub lsn: u64,
    pub reason: String,
    /// Not one live record could be read from the log's head on. The head comes from the
    /// key-space root, so the root may be the damaged part, and a repair would drop
    /// every live record: `repair_truncate` then needs `force`.
    pub at_head: bool,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "corrupt log record at pool offset {} (expected lsn {}): {}",
            self.offset, self.lsn, self.reason
        )?;
        if self.at_head {
            write!(
                f,
                " [at the log's head, which the key-space root names: the root may be the \
                 damaged part; NVM.REPAIR needs FORCE]"
            )?;
        }
        Ok(())
    }
}

/// Whether the log accepts appends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogState {
    Writable,
    /// Damage found at open; appends refused until `repair_truncate`.
    Corrupt(Corruption),
    /// A media error hit an append; appends refused for the life of this `Log`.
    Poisoned(String),
}

/// Errors of log operations.
#[derive(Debug)]
pub enum LogError {
    /// The batch does not fit; nothing was written.
    Full {
        needed: u64,
        free: u64,
    },
    /// A payload above `MAX_PAYLOAD`; nothing was written.
    TooLarge(u64),
    Corrupt(Corruption),
    Poisoned(String),
    Media(MediaError),
    /// `repair_truncate` without `force` where the damage may be the root's.
    RepairRefused(String),
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Full { needed, free } => write!(
                f,
                "log full: the batch needs {needed} bytes but only {free} are free"
            ),
            LogError::TooLarge(n) => write!(
                f,
                "record payload of {n} bytes exceeds the maximum of {MAX_PAYLOAD} bytes"
            ),
            LogError::Corrupt(c) => write!(f, "{c}"),
            LogError::Poisoned(why) => write!(f, "log refuses writes: {why}"),
            LogError::Media(e) => write!(f, "log media error: {e}"),
            LogError::RepairRefused(why) => write!(f, "repair refused: {why}"),
        }
    }
}

impl std::error::Error for LogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogError::Media(e) => Some(e),
            _ => None,
        }
    }
}

impl From<MediaError> for LogError {
    fn from(e: MediaError) -> Self {
        LogError::Media(e)
    }
}

/// Why reading a record failed: damage (a reason for a `Corruption`) or the media itself.
enum ReadError {
    Bad(String),
    Media(MediaError),
}

impl From<MediaError> for ReadError {
    fn from(e: MediaError) -> Self {
        ReadError::Media(e)
    }
}

/// The log inside a pool. See the module documentation for the protocol.
///
/// The log is a ring: positions are logical byte counts that only grow (`head` is where
/// the first record not yet folded into the key space starts, the commit word holds the
/// logical end); a position `pos` lives at pool offset `log_offset + pos % capacity`, and
/// a record may wrap around the end of the region.
pub struct Log {
    media: Arc<dyn Media>,
    /// Pool offset of the commit word.
    tail_word: u64,
    /// Pool offset of the log region.
    log_offset: u64,
    /// Bytes of the ring.
    capacity: u64,
    /// Logical start of the live records and the lsn of the record there.
    head: Cursor,
    /// The commit word as last read or written (may be garbage when `Corrupt`).
    tail: u64,
    /// Logical end of the valid prefix (== `tail` when `Writable`).
    valid_end: u64,
    last_lsn: u64,
    state: LogState,
    /// The encoded batch, reused across appends (no allocation on the write path).
    scratch: Vec<u8>,
    /// The commit word's durable value: below `tail` only after deferred appends
    /// (durability everysec) that no `sync` has committed yet.
    committed: u64,
    /// Lsn of the last record below `committed`.
    committed_lsn: u64,
    /// Where blobs may be (the heap): a reference outside it is damage.
    blob_area: (u64, u64),
    /// The blobs of the live records, as the scan at open found them.
    live_blobs: Vec<BlobRef>,
}

/// Reads records of a log region without owning the log: the replayer thread uses one
/// while the main thread appends (the bytes between the head and the committed tail are
/// never written again until the head has passed them).
#[derive(Clone)]
pub struct LogReader {
    media: Arc<dyn Media>,
    log_offset: u64,
    capacity: u64,
    blob_area: (u64, u64),
}

impl LogReader {
    pub fn new(
        media: Arc<dyn Media>,
        log_offset: u64,
        capacity: u64,
        blob_area: (u64, u64),
    ) -> LogReader {
        LogReader {
            media,
            log_offset,
            capacity,
            blob_area,
        }
    }

    /// The heap grew (the pool did): blobs may now lie up to `end`.
    pub fn grow_blob_area(&mut self, end: u64) {
        self.blob_area.1 = self.blob_area.1.max(end);
    }

    /// Pool offset of logical position `pos`.
    pub fn physical(&self, pos: u64) -> u64 {
        self.log_offset + pos % self.capacity.max(1)
    }

    /// Reads `buf.len()` bytes from logical position `pos`, across the wrap if needed.
    fn read_span(&self, pos: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        let off = pos % self.capacity.max(1);
        let first = (self.capacity - off).min(buf.len() as u64) as usize;
        let (a, b) = buf.split_at_mut(first);
        self.media.read(self.log_offset + off, a)?;
        if !b.is_empty() {
            self.media.read(self.log_offset, b)?;
        }
        Ok(())
    }

    /// Reads and validates the record at logical `pos`, whose bytes must end by `limit`.
    /// The payload is left in `buf`.
    fn read_at(
        &self,
        pos: u64,
        expected_lsn: u64,
        limit: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(Header, u64), ReadError> {
        let room = limit.saturating_sub(pos);
        if room < HEADER_LEN {
            return Err(ReadError::Bad(format!(
                "record header crosses the end of the committed log ({room} bytes left)"
            )));
        }
        let mut raw = [0u8; HEADER_LEN as usize];
        self.read_span(pos, &mut raw)?;
        let h = Header::parse(&raw);
        let total = h.check_len(room).map_err(ReadError::Bad)?;
        // check_len bounded the length by MAX_PAYLOAD, so it fits in memory terms.
        buf.resize(h.payload_len as usize, 0);
        self.read_span(pos + HEADER_LEN, buf)?;
        h.check_body(&raw, buf, expected_lsn)
            .map_err(ReadError::Bad)?;
        Ok((h, total))
    }

    /// Reads the record at `cursor`, which must end by the logical position `limit`;
    /// returns it (a blob record with its blob's bytes) and the cursor after it. Damage,
    /// in the record or in its blob, is `LogError::Corrupt`.
    pub fn read(&self, cursor: Cursor, limit: u64) -> Result<(Record, Cursor), LogError> {
        let mut payload = Vec::new();
        let read = self
            .read_at(cursor.pos, cursor.lsn, limit, &mut payload)
            .and_then(|(h, len)| {
                let blob = if h.flags & FLAG_BLOB != 0 {
                    let r = BlobRef::decode(&payload, self.blob_area).map_err(ReadError::Bad)?;
                    payload = r.read(self.media.as_ref())?.map_err(ReadError::Bad)?;
                    Some(r)
                } else {
                    None
                };
                Ok((h, len, blob))
            });
        match read {
            Ok((h, len, blob)) => Ok((
                Record {
                    lsn: h.lsn,
                    offset: self.physical(cursor.pos),
                    kind: h.kind,
                    db: h.db,
                    payload,
                    blob,
                },
                Cursor {
                    pos: cursor.pos + len,
                    lsn: cursor.lsn + 1,
                },
            )),
            Err(ReadError::Bad(reason)) => Err(LogError::Corrupt(Corruption {
                offset: self.physical(cursor.pos),
                lsn: cursor.lsn,
                reason,
                at_head: false,
            })),
            Err(ReadError::Media(e)) => Err(LogError::Media(e)),
        }
    }
}

impl Log {
    /// Opens the ring log whose commit word is at `tail_word`, region at `log_offset` of
    /// `capacity` bytes, live records starting at `head` (from the key space's root), and
    /// scans it once. Blobs may only be inside `blob_area`. Damage is not an error here
    /// but the `Corrupt` state; only a failing media is an error.
    pub fn open(
        media: Arc<dyn Media>,
        tail_word: u64,
        log_offset: u64,
        capacity: u64,
        head: Cursor,
        blob_area: (u64, u64),
    ) -> Result<Log, MediaError> {
        let tail = media.load_u64(tail_word)?;
        let mut log = Log {
            media,
            tail_word,
            log_offset,
            capacity,
            head,
            tail,
            valid_end: head.pos,
            last_lsn: head.lsn.saturating_sub(1),
            state: LogState::Writable,
            scratch: Vec::new(),
            committed: tail,
            committed_lsn: 0,
            blob_area,
            live_blobs: Vec::new(),
        };
        log.scan()?;
        log.committed_lsn = log.last_lsn;
        Ok(log)
    }

    /// The heap grew (the pool did): blobs may now lie up to `end`.
    pub fn grow_blob_area(&mut self, end: u64) {
        self.blob_area.1 = self.blob_area.1.max(end);
    }

    /// A reader of this log's region (for another thread too).
    pub fn new_reader(&self) -> LogReader {
        LogReader::new(
            Arc::clone(&self.media),
            self.log_offset,
            self.capacity,
            self.blob_area,
        )
    }

    /// The blobs the live records named when the log was opened (the key space keeps
    /// them from being reused until their records are folded).
    pub fn live_blobs(&self) -> &[BlobRef] {
        &self.live_blobs
    }

    /// Finds the end of the valid prefix and sets the state.
    fn scan(&mut self) -> Result<(), MediaError> {
        let head = self.head.pos;
        // The commit word decides what must be valid; when it is itself impossible, scan
        // as far as records parse so that the intact prefix stays readable.
        let bad_word = self.tail < head
            || self.tail - head > self.capacity
            || !self.tail.is_multiple_of(8)
            || !head.is_multiple_of(8);
        let limit = if bad_word {
            head.saturating_add(self.capacity)
        } else {
            self.tail
        };
        let reader = self.new_reader();
        let mut scratch = Vec::new();
        let mut pos = head;
        let mut lsn = self.head.lsn;
        let mut damage = None;
        while pos < limit {
            let read = reader
                .read_at(pos, lsn, limit, &mut scratch)
                .and_then(|(h, len)| {
                    if h.flags & FLAG_BLOB != 0 {
                        let r =
                            BlobRef::decode(&scratch, self.blob_area).map_err(ReadError::Bad)?;
                        self.live_blobs.push(r);
                    }
                    Ok(len)
                });
            match read {
                Ok(len) => {
                    pos += len;
                    lsn += 1;
                }
                Err(ReadError::Media(e)) => return Err(e),
                Err(ReadError::Bad(reason)) => {
                    damage = Some((pos, reason));
                    break;
                }
            }
        }
        self.valid_end = pos;
        self.last_lsn = lsn - 1;
        let at_head = pos == head && (bad_word || self.tail > head);
        let corruption = if bad_word {
            Some(Corruption {
                offset: self.tail_word,
                lsn,
                reason: format!(
                    "commit word says the log ends at {}, impossible for a log of {} bytes \
                     whose live records start at {head}",
                    self.tail, self.capacity
                ),
                at_head,
            })
        } else {
            damage.map(|(p, reason)| Corruption {
                offset: reader.physical(p),
                lsn,
                reason,
                at_head,
            })
        };
        if let Some(c) = corruption {
            self.state = LogState::Corrupt(c);
        }
        Ok(())
    }

    /// Re-reads the live records from the media: the valid prefix, then one
    /// `Err(Corrupt)` if the log is damaged.
    pub fn records(&self) -> Records<'_> {
        self.records_from(self.head)
    }

    /// Like `records`, from a cursor a previous iteration returned.
    pub fn records_from(&self, cursor: Cursor) -> Records<'_> {
        Records {
            log: self,
            reader: self.new_reader(),
            cursor,
            done: false,
        }
    }

    /// Appends `batch` and makes it durable; returns the lsn of its last record (the
    /// current last lsn for an empty batch). Refusals (`Full`, `TooLarge`, `Corrupt`,
    /// `Poisoned`) write nothing. A media error poisons the log.
    pub fn append(&mut self, batch: &[RecordRef<'_>]) -> Result<u64, LogError> {
        self.append_inner(batch, true)
    }

    /// Appends `batch` without making it durable: it becomes durable, and visible after a
    /// crash, at the next `sync` or durable `append` (durability everysec). Refusals and
    /// errors as for `append`.
    pub fn append_deferred(&mut self, batch: &[RecordRef<'_>]) -> Result<u64, LogError> {
        self.append_inner(batch, false)
    }

    /// Makes every deferred append durable and commits it. A media error poisons the log.
    pub fn sync(&mut self) -> Result<(), LogError> {
        if self.committed >= self.tail {
            return Ok(());
        }
        if let LogState::Poisoned(why) = &self.state {
            return Err(LogError::Poisoned(why.clone()));
        }
        let result = self.commit_pending();
        result.map_err(|e| self.poison(e))
    }

    /// Bytes appended but not yet durable (durability everysec).
    pub fn unsynced_bytes(&self) -> u64 {
        self.tail.saturating_sub(self.committed)
    }

    /// Flushes the logical range `[from, to)` of the ring.
    fn flush_span(&self, from: u64, to: u64) -> Result<(), MediaError> {
        self.for_each_piece(from, to - from, |off, len| self.media.flush(off, len))
    }

    /// Calls `f(pool_offset, len)` for the one or two physical pieces of a logical range.
    fn for_each_piece(
        &self,
        pos: u64,
        len: u64,
        mut f: impl FnMut(u64, u64) -> Result<(), MediaError>,
    ) -> Result<(), MediaError> {
        if len == 0 {
            return Ok(());
        }
        let off = pos % self.capacity;
        let first = (self.capacity - off).min(len);
        f(self.log_offset + off, first)?;
        if first < len {
            f(self.log_offset, len - first)?;
        }
        Ok(())
    }

    fn commit_pending(&mut self) -> Result<(), MediaError> {
        self.flush_span(self.committed, self.tail)?;
        self.media.fence()?;
        self.media.store_u64_persistent(self.tail_word, self.tail)?;
        self.media.fence()?;
        self.committed = self.tail;
        self.committed_lsn = self.last_lsn;
        Ok(())
    }

    fn poison(&mut self, e: MediaError) -> LogError {
        self.state = LogState::Poisoned(format!(
            "an append failed ({e}); its outcome on the media is unknown"
        ));
        LogError::Media(e)
    }

    fn append_inner(&mut self, batch: &[RecordRef<'_>], durable: bool) -> Result<u64, LogError> {
        match &self.state {
            LogState::Writable => {}
            LogState::Corrupt(c) => return Err(LogError::Corrupt(c.clone())),
            LogState::Poisoned(why) => return Err(LogError::Poisoned(why.clone())),
        }
        let mut needed = 0u64;
        for r in batch {
            let n = r.payload.len() as u64;
            if n > MAX_PAYLOAD {
                return Err(LogError::TooLarge(n));
            }
            needed += record_len(n);
        }
        if batch.is_empty() {
            return Ok(self.last_lsn);
        }
        let free = self.free_bytes();
        if needed > free {
            return Err(LogError::Full { needed, free });
        }
        match self.write_batch(batch, needed, durable) {
            Ok(()) => Ok(self.last_lsn),
            Err(e) => Err(self.poison(e)),
        }
    }

    fn write_batch(
        &mut self,
        batch: &[RecordRef<'_>],
        needed: u64,
        durable: bool,
    ) -> Result<(), MediaError> {
        let mut lsn = self.last_lsn;
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        for r in batch {
            lsn += 1;
            encode_record(lsn, r, &mut scratch);
        }
        let start = self.tail;
        let new_tail = self.tail + needed;
        let result = self.write_encoded(&scratch, start, new_tail, lsn, durable);
        self.scratch = scratch;
        result?;
        self.tail = new_tail;
        self.valid_end = new_tail;
        self.last_lsn = lsn;
        Ok(())
    }

    fn write_encoded(
        &mut self,
        bytes: &[u8],
        start: u64,
        new_tail: u64,
        lsn: u64,
        durable: bool,
    ) -> Result<(), MediaError> {
        let mut written = 0usize;
        if !durable {
            return self.for_each_piece(start, bytes.len() as u64, |off, len| {
                let piece = &bytes[written..written + len as usize];
                written += len as usize;
                self.media.write(off, piece)
            });
        }
        if self.committed < self.tail {
            // Earlier deferred records are written but not flushed: they go first.
            self.flush_span(self.committed, self.tail)?;
        }
        // Records durable first, so a durable commit word never names unwritten bytes.
        self.for_each_piece(start, bytes.len() as u64, |off, len| {
            let piece = &bytes[written..written + len as usize];
            written += len as usize;
            self.media.write_persistent(off, piece)
        })?;
        self.media.fence()?;
        self.media.store_u64_persistent(self.tail_word, new_tail)?;
        self.media.fence()?;
        self.committed = new_tail;
        self.committed_lsn = lsn;
        Ok(())
    }

    /// Bytes still free for records.
    pub fn free_bytes(&self) -> u64 {
        self.capacity.saturating_sub(self.used_bytes())
    }

    /// Bytes of live records: appended and not yet folded into the key space (the
    /// backlog), capped at the capacity.
    pub fn used_bytes(&self) -> u64 {
        self.tail.saturating_sub(self.head.pos).min(self.capacity)
    }

    /// Bytes the ring holds.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Lsn of the last valid record (the head's lsn - 1 for an empty log).
    pub fn last_lsn(&self) -> u64 {
        self.last_lsn
    }

    /// Number of live records (not yet folded into the key space).
    pub fn record_count(&self) -> u64 {
        (self.last_lsn + 1).saturating_sub(self.head.lsn)
    }

    /// Pool offset of the log region.
    pub fn log_offset(&self) -> u64 {
        self.log_offset
    }

    /// Where the live records start.
    pub fn head(&self) -> Cursor {
        self.head
    }

    /// The end of what is durable: the replayer may fold records up to here.
    pub fn committed_end(&self) -> Cursor {
        Cursor {
            // Never past damage: the valid prefix ends there.
            pos: self.committed.min(self.valid_end),
            lsn: self.committed_lsn + 1,
        }
    }

    /// The key space has durably folded every record before `head`: their space is free.
    /// Ignored unless it moves forward and stays within the durable log.
    pub fn advance_head(&mut self, head: Cursor) {
        if head.pos > self.head.pos && head.pos <= self.committed && head.lsn > self.head.lsn {
            self.head = head;
        }
    }

    pub fn state(&self) -> &LogState {
        &self.state
    }

    /// Drops everything after the valid prefix by durably moving the commit word back to
    /// its end; returns the committed bytes dropped. A no-op on a writable log.
    pub fn repair_truncate(&mut self, force: bool) -> Result<u64, LogError> {
        let at_head = match &self.state {
            LogState::Writable => return Ok(0),
            LogState::Poisoned(why) => return Err(LogError::Poisoned(why.clone())),
            LogState::Corrupt(c) => c.at_head,
        };
        // Committed bytes past the valid prefix (an impossible commit word counts up to
        // the capacity).
        let end = self.tail.min(self.head.pos.saturating_add(self.capacity));
        let dropped = end.saturating_sub(self.valid_end);
        if at_head && dropped > 0 && !force {
            return Err(LogError::RepairRefused(format!(
                "no record can be read at the log's head (position {}, lsn {}), which the key-space \
                 root names: if the root is what is damaged, the {dropped} bytes of live records \
                 are intact and a repair would drop them all. Copy the pool file aside and inspect \
                 it (nvm-tool check); repair with FORCE only if the log itself is damaged",
                self.head.pos, self.head.lsn
            )));
        }
        let res = self
            .media
            .store_u64_atomic(self.tail_word, self.valid_end)
            .and_then(|()| self.media.flush(self.tail_word, 8))
            .and_then(|()| self.media.fence());
        if let Err(e) = res {
            self.state = LogState::Poisoned(format!(
                "repairing the commit word failed ({e}); its outcome on the media is unknown"
            ));
            return Err(LogError::Media(e));
        }
        self.tail = self.valid_end;
        self.committed = self.valid_end;
        self.committed_lsn = self.last_lsn;
        self.state = LogState::Writable;
        Ok(dropped)
    }
}

/// A position in the log: a logical byte position and the lsn of the record there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub pos: u64,
    pub lsn: u64,
}

impl Cursor {
    /// The start of a fresh log.
    pub const START: Cursor = Cursor { pos: 0, lsn: 1 };
}

/// Iterator returned by [`Log::records`].
pub struct Records<'a> {
    log: &'a Log,
    reader: LogReader,
    cursor: Cursor,
    done: bool,
}

impl Records<'_> {
    /// Where the next call to `next` would read.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }
}

impl Iterator for Records<'_> {
    type Item = Result<Record, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let log = self.log;
        if self.cursor.pos >= log.valid_end {
            self.done = true;
            return match &log.state {
                LogState::Corrupt(c) => Some(Err(LogError::Corrupt(c.clone()))),
                _ => None,
            };
        }
        match self.reader.read(self.cursor, log.valid_end) {
            Ok((rec, next)) => {
                self.cursor = next;
                Some(Ok(rec))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
