//! Blobs: record payloads too big for the ring, written to a block of the key space's
//! heap and named by a small record (flag `FLAG_BLOB`, payload = the blob's reference).
//! So the ring's size never bounds what one write can log, and a big value is copied
//! into the pool once.
//!
//! Protocol (invariant 7 extended): the blob's bytes are written and made durable (flush,
//! fence) before the record that names it is appended; the record's own commit makes
//! the blob part of the log. Until the key space folds the record, the blob is live:
//! opening the pool marks the blobs of live records as used (`Log::live_blobs`), and the
//! batch that folds a record frees its blob. A blob whose record never committed is
//! unreachable, hence free, after a crash.
//!
//! Reference layout (24 bytes, little-endian): offset u64, len u64, crc32c u32 of the
//! blob's bytes, reserved u32 = 0.

use crate::pmem::{Media, MediaError};

/// Record flag: the payload is a `BlobRef`, the effect's bytes are in the blob.
pub const FLAG_BLOB: u8 = 1;
/// Bytes of an encoded `BlobRef`.
pub const BLOB_REF_LEN: usize = 24;

/// Where a blob is and what it must hash to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRef {
    /// Pool offset of the blob's first byte (a heap block).
    pub offset: u64,
    pub len: u64,
    pub crc: u32,
}

impl BlobRef {
    pub fn encode(&self) -> [u8; BLOB_REF_LEN] {
        let mut b = [0u8; BLOB_REF_LEN];
        b[0..8].copy_from_slice(&self.offset.to_le_bytes());
        b[8..16].copy_from_slice(&self.len.to_le_bytes());
        b[16..20].copy_from_slice(&self.crc.to_le_bytes());
        b
    }

    /// Parses a reference and checks that it lies inside `area` (the heap).
    pub fn decode(b: &[u8], area: (u64, u64)) -> Result<BlobRef, String> {
        if b.len() != BLOB_REF_LEN {
            return Err(format!("blob reference of {} bytes", b.len()));
        }
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        let r = BlobRef {
            offset: word(0),
            len: word(8),
            crc: (word(16) & 0xffff_ffff) as u32,
        };
        let reserved = word(16) >> 32;
        let inside = r.offset >= area.0
            && r.offset.checked_add(r.len).is_some_and(|e| e <= area.1)
            && r.offset.is_multiple_of(16);
        if reserved != 0 || !inside {
            return Err(format!(
                "blob reference ({} bytes at pool offset {}) outside the heap",
                r.len, r.offset
            ));
        }
        Ok(r)
    }

    /// Reads the blob and checks its crc.
    pub fn read(&self, media: &dyn Media) -> Result<Result<Vec<u8>, String>, MediaError> {
        let mut buf = vec![0u8; self.len as usize];
        media.read(self.offset, &mut buf)?;
        let crc = crc32c::crc32c(&buf);
        if crc != self.crc {
            return Ok(Err(format!(
                "blob of {} bytes at pool offset {}: crc mismatch (stored {:#010x}, computed {crc:#010x})",
                self.len, self.offset, self.crc
            )));
        }
        Ok(Ok(buf))
    }
}

/// Writes a blob's bytes at `offset` as they come (in pieces of up to `PIECE` bytes, so
/// a big payload never needs a second buffer), then makes them durable.
pub struct BlobWriter<'a> {
    media: &'a dyn Media,
    offset: u64,
    written: u64,
    crc: u32,
    buf: Vec<u8>,
    error: Option<MediaError>,
}

const PIECE: usize = 1 << 20;

impl<'a> BlobWriter<'a> {
    pub fn new(media: &'a dyn Media, offset: u64) -> BlobWriter<'a> {
        BlobWriter {
            media,
            offset,
            written: 0,
            crc: 0,
            buf: Vec::with_capacity(PIECE.min(64 << 10)),
            error: None,
        }
    }

    fn drain(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        self.write_piece(&buf);
        self.buf = buf;
        self.buf.clear();
    }

    fn write_piece(&mut self, piece: &[u8]) {
        if piece.is_empty() || self.error.is_some() {
            return;
        }
        let at = self.offset + self.written;
        match self.media.write_persistent(at, piece) {
            Ok(()) => {
                self.crc = crc32c::crc32c_append(self.crc, piece);
                self.written += piece.len() as u64;
            }
            Err(e) => self.error = Some(e),
        }
    }

    /// Makes everything written durable (fence) and returns the blob's reference.
    pub fn finish(mut self) -> Result<BlobRef, MediaError> {
        self.drain();
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.media.fence()?;
        Ok(BlobRef {
            offset: self.offset,
            len: self.written,
            crc: self.crc,
        })
    }
}

impl crate::effect::Sink for BlobWriter<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.buf.is_empty() && rest.len() >= PIECE {
                // A big slice (a value) goes straight to the pool, not through the buffer.
                let (now, later) = rest.split_at(PIECE);
                self.write_piece(now);
                rest = later;
                continue;
            }
            let room = PIECE - self.buf.len();
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.buf.extend_from_slice(now);
            rest = later;
            if self.buf.len() == PIECE {
                self.drain();
            }
        }
    }
}
