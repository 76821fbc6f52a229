//! The effect log: an append-only sequence of checksummed records in the pool, committed
//! by one 8-byte commit word (`log_tail`, the number of committed bytes).
//!
//! Commit protocol (invariant 7): records are written past the tail, flushed and fenced;
//! only then is the new tail stored with one untorn 8-byte store, flushed and fenced.
//! So after a crash the commit word names either the old or the new end, and every byte
//! before it is durable. Opening scans the committed bytes once; any damage (bad commit
//! word, truncated file, crc/lsn mismatch) puts the log in state `Corrupt`, keeping the
//! valid prefix readable and refusing appends until `repair_truncate`. A media error
//! during an append poisons the log: nothing more is written by this process.
//! Records are opaque payloads here; the effect layer defines what kinds mean.

#![forbid(unsafe_code)]

mod record;

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
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "corrupt log record at pool offset {} (expected lsn {}): {}",
            self.offset, self.lsn, self.reason
        )
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
pub struct Log {
    media: Arc<dyn Media>,
    /// Pool offset of the commit word.
    tail_word: u64,
    /// Pool offset of the first record.
    log_offset: u64,
    /// Bytes records may occupy: the superblock's capacity, cut to what the media holds.
    capacity: u64,
    /// The superblock's capacity (what a full-size file holds).
    sb_capacity: u64,
    /// The commit word as last read or written (may be garbage when `Corrupt`).
    tail: u64,
    /// Bytes of the valid prefix (== `tail` when `Writable`).
    valid_end: u64,
    last_lsn: u64,
    count: u64,
    state: LogState,
    /// The encoded batch, reused across appends (no allocation on the write path).
    scratch: Vec<u8>,
    /// The commit word's durable value: below `tail` only after deferred appends
    /// (durability everysec) that no `sync` has committed yet.
    committed: u64,
}

impl Log {
    /// Opens the log whose commit word is at `tail_word`, records at `log_offset`, with
    /// room for `capacity` bytes (per the superblock), and scans it once. Damage is not
    /// an error here but the `Corrupt` state; only a failing media is an error.
    pub fn open(
        media: Arc<dyn Media>,
        tail_word: u64,
        log_offset: u64,
        capacity: u64,
    ) -> Result<Log, MediaError> {
        let tail = media.load_u64(tail_word)?;
        // A file cut short (or a media shorter than the superblock says) holds less.
        let present = media.len().saturating_sub(log_offset);
        let usable = capacity.min(present - present % 8);
        let mut log = Log {
            media,
            tail_word,
            log_offset,
            capacity: usable,
            sb_capacity: capacity,
            tail,
            valid_end: 0,
            last_lsn: 0,
            count: 0,
            state: LogState::Writable,
            scratch: Vec::new(),
            committed: tail,
        };
        log.scan(capacity, present)?;
        Ok(log)
    }

    /// Finds the end of the valid prefix and sets the state.
    fn scan(&mut self, sb_capacity: u64, present: u64) -> Result<(), MediaError> {
        // The commit word decides what must be valid; when it is itself impossible, scan
        // as far as records parse so that the intact prefix stays readable.
        let (limit, bad_word) = if self.tail > sb_capacity || !self.tail.is_multiple_of(8) {
            (self.capacity, true)
        } else {
            (self.tail.min(present), false)
        };
        let mut scratch = Vec::new();
        let mut pos = 0u64;
        let mut lsn = 1u64;
        let mut damage = None;
        while pos < limit {
            match self.read_at(pos, lsn, limit, &mut scratch) {
                Ok((_, len)) => {
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
        self.count = lsn - 1;
        let corruption = if bad_word {
            Some(Corruption {
                offset: self.tail_word,
                lsn,
                reason: format!(
                    "commit word says {} bytes committed, impossible for a log of {} bytes",
                    self.tail, sb_capacity
                ),
            })
        } else if self.tail > present {
            let end = self.log_offset + present;
            let where_ = damage.map_or(pos, |(p, _)| p);
            Some(Corruption {
                offset: self.log_offset + where_,
                lsn,
                reason: format!(
                    "pool file truncated: it ends at pool offset {end}, but the committed log \
                     ends at {}",
                    self.log_offset + self.tail
                ),
            })
        } else {
            damage.map(|(p, reason)| Corruption {
                offset: self.log_offset + p,
                lsn,
                reason,
            })
        };
        if let Some(c) = corruption {
            self.state = LogState::Corrupt(c);
        }
        Ok(())
    }

    /// Reads and validates the record at log position `pos` (relative to `log_offset`),
    /// whose bytes must end by `limit`. The payload is left in `buf`.
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
        let at = self.log_offset + pos;
        let mut raw = [0u8; HEADER_LEN as usize];
        self.media.read(at, &mut raw)?;
        let h = Header::parse(&raw);
        let total = h.check_len(room).map_err(ReadError::Bad)?;
        // check_len bounded the length by MAX_PAYLOAD, so it fits in memory terms.
        buf.resize(h.payload_len as usize, 0);
        self.media.read(at + HEADER_LEN, buf)?;
        h.check_body(&raw, buf, expected_lsn)
            .map_err(ReadError::Bad)?;
        Ok((h, total))
    }

    /// Re-reads the log from the media: the valid prefix, then one `Err(Corrupt)` if the
    /// log is (or has since become) damaged.
    pub fn records(&self) -> Records<'_> {
        self.records_from(Cursor::START)
    }

    /// Like `records`, from a cursor a previous iteration returned.
    pub fn records_from(&self, cursor: Cursor) -> Records<'_> {
        Records {
            log: self,
            pos: cursor.pos,
            lsn: cursor.lsn,
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

    fn commit_pending(&mut self) -> Result<(), MediaError> {
        let from = self.log_offset + self.committed;
        self.media.flush(from, self.tail - self.committed)?;
        self.media.fence()?;
        self.media.store_u64_persistent(self.tail_word, self.tail)?;
        self.media.fence()?;
        self.committed = self.tail;
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
        let start = self.log_offset + self.tail;
        let mut lsn = self.last_lsn;
        self.scratch.clear();
        for r in batch {
            lsn += 1;
            let len = r.payload.len() as u64;
            self.scratch
                .extend_from_slice(&encode_header(lsn, r.kind, r.db, r.payload));
            self.scratch.extend_from_slice(r.payload);
            let pad = padding(len) as usize;
            self.scratch.extend_from_slice(&[0u8; 8][..pad.min(8)]);
        }
        let new_tail = self.tail + needed;
        if !durable {
            self.media.write(start, &self.scratch)?;
            self.tail = new_tail;
            self.valid_end = new_tail;
            self.last_lsn = lsn;
            self.count += batch.len() as u64;
            return Ok(());
        }
        if self.committed < self.tail {
            // Earlier deferred records are written but not flushed: they go first.
            self.media
                .flush(self.log_offset + self.committed, self.tail - self.committed)?;
        }
        // Records durable first, so a durable commit word never names unwritten bytes.
        self.media.write_persistent(start, &self.scratch)?;
        self.media.fence()?;
        self.media.store_u64_persistent(self.tail_word, new_tail)?;
        self.media.fence()?;
        self.tail = new_tail;
        self.committed = new_tail;
        self.valid_end = new_tail;
        self.last_lsn = lsn;
        self.count += batch.len() as u64;
        Ok(())
    }

    /// Bytes still free for records.
    pub fn free_bytes(&self) -> u64 {
        self.capacity.saturating_sub(self.used_bytes())
    }

    /// Bytes committed (per the commit word, capped at capacity).
    pub fn used_bytes(&self) -> u64 {
        self.tail.min(self.capacity)
    }

    /// Bytes the log can hold on this media.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Lsn of the last valid record (0 for an empty log).
    pub fn last_lsn(&self) -> u64 {
        self.last_lsn
    }

    /// Number of valid records.
    pub fn record_count(&self) -> u64 {
        self.count
    }

    /// Pool offset of the first record.
    pub fn log_offset(&self) -> u64 {
        self.log_offset
    }

    pub fn state(&self) -> &LogState {
        &self.state
    }

    /// Drops everything after the valid prefix by durably moving the commit word back to
    /// its end; returns the committed bytes dropped. A no-op on a writable log.
    pub fn repair_truncate(&mut self) -> Result<u64, LogError> {
        match &self.state {
            LogState::Writable => return Ok(0),
            LogState::Poisoned(why) => return Err(LogError::Poisoned(why.clone())),
            LogState::Corrupt(_) => {}
        }
        // Committed bytes past the valid prefix, even those a truncated file no longer holds
        // (an impossible commit word counts up to the capacity).
        let dropped = self
            .tail
            .min(self.sb_capacity)
            .saturating_sub(self.valid_end);
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
        self.state = LogState::Writable;
        Ok(dropped)
    }
}

/// Where a [`Records`] iteration stands, to resume it later (e.g. after releasing a lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pos: u64,
    lsn: u64,
}

impl Cursor {
    /// The start of the log.
    pub const START: Cursor = Cursor { pos: 0, lsn: 1 };
}

/// Iterator returned by [`Log::records`].
pub struct Records<'a> {
    log: &'a Log,
    pos: u64,
    lsn: u64,
    done: bool,
}

impl Records<'_> {
    /// Where the next call to `next` would read.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            pos: self.pos,
            lsn: self.lsn,
        }
    }
}

impl Iterator for Records<'_> {
    type Item = Result<Record, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let log = self.log;
        if self.pos >= log.valid_end {
            self.done = true;
            return match &log.state {
                LogState::Corrupt(c) => Some(Err(LogError::Corrupt(c.clone()))),
                _ => None,
            };
        }
        let mut payload = Vec::new();
        match log.read_at(self.pos, self.lsn, log.valid_end, &mut payload) {
            Ok((h, len)) => {
                let rec = Record {
                    lsn: h.lsn,
                    offset: log.log_offset + self.pos,
                    kind: h.kind,
                    db: h.db,
                    payload,
                };
                self.pos += len;
                self.lsn += 1;
                Some(Ok(rec))
            }
            Err(ReadError::Bad(reason)) => {
                self.done = true;
                Some(Err(LogError::Corrupt(Corruption {
                    offset: log.log_offset + self.pos,
                    lsn: self.lsn,
                    reason,
                })))
            }
            Err(ReadError::Media(e)) => {
                self.done = true;
                Some(Err(LogError::Media(e)))
            }
        }
    }
}
