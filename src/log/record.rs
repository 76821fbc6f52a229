//! The log record codec: a 24-byte little-endian header, the payload, zero padding to a
//! multiple of 8 (so every header, and the commit word's arithmetic, stays 8-aligned).
//!
//! Header (format v3): `payload_len u32 | kind u8 | flags u8 | reserved u16 (0) |
//! lsn u64 | db u32 | crc32c u32 (header bytes 0..20, then the payload)`.
//! Decoding never panics on arbitrary bytes: every failure is a reason string that the
//! log turns into a typed `Corruption`.

/// Bytes of a record header.
pub const HEADER_LEN: u64 = 24;
/// Largest payload accepted by `append` (and believed by the scanner).
pub const MAX_PAYLOAD: u64 = 1 << 30;

/// Header flags this format knows (the rest must be zero).
pub const KNOWN_FLAGS: u8 = super::blob::FLAG_BLOB;

/// A record to append: the log treats `payload` as opaque bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub kind: u8,
    pub db: u32,
    /// 0, or `FLAG_BLOB` when `payload` is a blob reference.
    pub flags: u8,
    pub payload: &'a [u8],
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub lsn: u64,
    /// Absolute pool offset of the record header.
    pub offset: u64,
    pub kind: u8,
    pub db: u32,
    /// The effect's bytes (read from the blob for a blob record).
    pub payload: Vec<u8>,
    /// The blob the payload came from, if any.
    pub blob: Option<super::BlobRef>,
}

/// A decoded (not yet validated) header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub payload_len: u32,
    pub kind: u8,
    pub flags: u8,
    pub reserved: u16,
    pub lsn: u64,
    pub db: u32,
    pub crc: u32,
}

/// Zero bytes needed after a payload of `len` bytes to reach a multiple of 8.
pub fn padding(len: u64) -> u64 {
    (8 - len % 8) % 8
}

/// Total bytes a record with a payload of `payload_len` bytes occupies in the log.
pub fn record_len(payload_len: u64) -> u64 {
    HEADER_LEN + payload_len + padding(payload_len)
}

/// Encodes the header of a record, crc included. `r.payload.len()` must be <=
/// MAX_PAYLOAD (the caller checks; a longer payload would not fit the u32 length field).
pub fn encode_header(lsn: u64, r: &RecordRef<'_>) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    let len = u32::try_from(r.payload.len()).unwrap_or(u32::MAX);
    h[0..4].copy_from_slice(&len.to_le_bytes());
    h[4] = r.kind;
    h[5] = r.flags;
    // bytes 6..8: reserved, zero.
    h[8..16].copy_from_slice(&lsn.to_le_bytes());
    h[16..20].copy_from_slice(&r.db.to_le_bytes());
    let crc = record_crc(&h, r.payload);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The crc32c of a record: header bytes 0..20 (everything before the crc), then payload.
pub fn record_crc(header: &[u8; HEADER_LEN as usize], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&header[0..20]), payload)
}

impl Header {
    /// Splits the 24 header bytes into fields (no validation).
    pub fn parse(h: &[u8; HEADER_LEN as usize]) -> Header {
        let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        Header {
            payload_len: u32_at(0),
            kind: h[4],
            flags: h[5],
            reserved: u16::from_le_bytes([h[6], h[7]]),
            lsn: u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]),
            db: u32_at(16),
            crc: u32_at(20),
        }
    }

    /// Checks the length field against the bytes available (`room`, counted from the
    /// header's start) and returns the record's total length.
    pub fn check_len(&self, room: u64) -> Result<u64, String> {
        let len = u64::from(self.payload_len);
        if len > MAX_PAYLOAD {
            return Err(format!(
                "payload length {len} exceeds the maximum of {MAX_PAYLOAD} bytes"
            ));
        }
        let total = record_len(len);
        if total > room {
            return Err(format!(
                "record of {total} bytes crosses the end of the committed log ({room} bytes left)"
            ));
        }
        Ok(total)
    }

    /// Checks everything that needs the payload: crc, then lsn, then the reserved bits.
    /// The crc goes first so that a damaged lsn reads as damage, and a gap is reported
    /// only for a record that is intact but out of sequence.
    pub fn check_body(
        &self,
        raw: &[u8; HEADER_LEN as usize],
        payload: &[u8],
        expected_lsn: u64,
    ) -> Result<(), String> {
        let crc = record_crc(raw, payload);
        if crc != self.crc {
            return Err(format!(
                "crc mismatch (stored {:#010x}, computed {crc:#010x})",
                self.crc
            ));
        }
        if self.lsn != expected_lsn {
            return Err(format!("lsn gap: found lsn {}", self.lsn));
        }
        if self.flags & !KNOWN_FLAGS != 0 || self.reserved != 0 {
            return Err(format!(
                "unknown header flags {:#x} / reserved {:#x} (format v3 requires zero)",
                self.flags, self.reserved
            ));
        }
        Ok(())
    }
}

/// Appends the full encoding of `r` (header, payload, padding) to `out`.
pub fn encode_record(lsn: u64, r: &RecordRef<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(&encode_header(lsn, r));
    out.extend_from_slice(r.payload);
    let pad = padding(r.payload.len() as u64) as usize;
    out.extend_from_slice(&[0u8; 8][..pad]);
}

/// Decodes one record from the start of `buf`, which must hold its header, payload and
/// padding. `offset` is the pool offset of `buf[0]` (recorded in the result). Returns the
/// record and the bytes it occupies. A blob record's payload is left as its reference
/// (`blob` is None): resolving it needs the media.
pub fn decode_record(buf: &[u8], offset: u64, expected_lsn: u64) -> Result<(Record, u64), String> {
    let mut raw = [0u8; HEADER_LEN as usize];
    let head = buf.get(..HEADER_LEN as usize).ok_or_else(|| {
        format!(
            "record header crosses the end of the data ({} bytes)",
            buf.len()
        )
    })?;
    raw.copy_from_slice(head);
    let h = Header::parse(&raw);
    let total = h.check_len(buf.len() as u64)?;
    let payload = buf
        .get(HEADER_LEN as usize..HEADER_LEN as usize + h.payload_len as usize)
        .ok_or_else(|| "payload crosses the end of the data".to_string())?;
    h.check_body(&raw, payload, expected_lsn)?;
    Ok((
        Record {
            lsn: h.lsn,
            offset,
            kind: h.kind,
            db: h.db,
            payload: payload.to_vec(),
            blob: None,
        },
        total,
    ))
}
