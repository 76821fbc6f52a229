//! The superblock codec (pool offset 0, layout v4): every field little-endian at a fixed
//! offset, protected by a crc32c over bytes 0..96. Decoding checks, in order, the magic
//! (is this a pool at all?), the version (can we read it?), the crc (is it intact?) and
//! the layout (do the fields make sense together?).
//!
//! Growing a pool rewrites the superblock, which spans two cache lines and so can tear:
//! the new superblock is first made durable at `GROW_COPY_OFFSET`, then written over
//! the primary, then the copy is cleared. A valid copy therefore means a grow that may
//! not have finished: it is the superblock of record (`Superblock::choose`), and opening
//! the pool finishes the grow.

use std::fmt::Write as _;

pub const MAGIC: [u8; 8] = *b"RNVMPOOL";
pub const FORMAT_VERSION: u32 = 4;
/// Version 3 differs only in having no grow copy (its bytes are zero, which reads as
/// "no grow"): read as is, written as version 4 by its first grow.
pub const UPGRADABLE_VERSION: u32 = 3;
/// Where a grow makes its new superblock durable first (in the superblock area).
pub const GROW_COPY_OFFSET: u64 = 2048;
/// Encoded superblock bytes (fields and crc).
pub const SUPERBLOCK_LEN: usize = SUPERBLOCK_CRC_LEN + 4;
/// Bytes covered by the superblock crc; the crc itself sits right after them.
pub const SUPERBLOCK_CRC_LEN: usize = 96;
/// The superblock area (the rest of it is zero).
pub const BLOCK_LEN: u64 = 4096;
/// The log's commit word: committed bytes of log from `LOG_OFFSET`. Own cache line.
pub const LOG_TAIL_OFFSET: u64 = 4096;
/// The key space's journal commit word (0: no batch to redo). Own cache line.
pub const JOURNAL_WORD_OFFSET: u64 = 4160;
/// The key space's root block (applied lsn, log head, heap top, db tables).
pub const ROOT_OFFSET: u64 = 8192;
pub const ROOT_LEN: u64 = 4096;
/// The key space's redo journal.
pub const JOURNAL_OFFSET: u64 = 12288;
/// What a pool needs before its journal: superblock, commit words, root.
pub const FIXED_LEN: u64 = JOURNAL_OFFSET;
/// Default ring log size (`nvm.log-size`).
pub const DEFAULT_LOG_SIZE: u64 = 64 << 20;
/// Smallest ring log the format allows (the module's config asks for at least 64 KiB;
/// tests use tiny logs to wrap often).
pub const MIN_LOG_SIZE: u64 = 4096;
/// Smallest pool accepted at creation.
pub const MIN_POOL_SIZE: u64 = 1 << 20;
/// Pool sizes are rounded down to this.
const SIZE_ALIGN: u64 = 4096;

/// The decoded superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub format_version: u32,
    pub flags: u32,
    pub uuid: [u8; 16],
    pub pool_size: u64,
    pub log_offset: u64,
    pub log_capacity: u64,
    pub created_unix_ms: u64,
    pub journal_offset: u64,
    pub journal_size: u64,
    pub heap_offset: u64,
    pub heap_size: u64,
}

/// Why a superblock was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuperblockError {
    BadMagic,
    UnsupportedVersion(u32),
    Checksum,
    Layout(String),
    TooSmall { size: u64, min: u64 },
}

fn align_down(v: u64) -> u64 {
    v - v % SIZE_ALIGN
}

/// Pools of at least this size are a whole number of 2 MiB pages (persistent memory is
/// mapped with 2 MiB pages only where the mapping covers whole ones; see `pmem::mapped`).
const HUGE_PAGE_POOLS: u64 = 8 << 20;
const HUGE_PAGE: u64 = 2 << 20;

/// A requested pool size as the pool will have it.
fn pool_size_for(size: u64) -> u64 {
    if size >= HUGE_PAGE_POOLS {
        size - size % HUGE_PAGE
    } else {
        align_down(size)
    }
}

fn u32_at(b: &[u8; SUPERBLOCK_CRC_LEN + 4], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8; SUPERBLOCK_CRC_LEN + 4], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

impl Superblock {
    /// A superblock for a new pool of (about) `size` bytes, rounded down to 4 KiB (to
    /// 2 MiB from 8 MiB on), at least `MIN_POOL_SIZE`, with a ring log of (at most) `log_size` bytes: the journal
    /// takes 1/64 of the pool (64 KiB..4 MiB), the log at most half of what remains, the
    /// key space's heap the rest.
    pub fn new(
        size: u64,
        log_size: u64,
        uuid: [u8; 16],
        created_unix_ms: u64,
    ) -> Result<Self, SuperblockError> {
        if size < MIN_POOL_SIZE {
            return Err(SuperblockError::TooSmall {
                size,
                min: MIN_POOL_SIZE,
            });
        }
        let pool_size = pool_size_for(size);
        let journal_size = align_down((pool_size / 64).clamp(64 << 10, 4 << 20));
        let journal_end = JOURNAL_OFFSET + journal_size;
        let space = pool_size - journal_end;
        let log_capacity = align_down(log_size.max(MIN_LOG_SIZE).min(space / 2)).max(SIZE_ALIGN);
        let heap_offset = journal_end + log_capacity;
        Ok(Superblock {
            format_version: FORMAT_VERSION,
            flags: 0,
            uuid,
            pool_size,
            log_offset: journal_end,
            log_capacity,
            created_unix_ms,
            journal_offset: JOURNAL_OFFSET,
            journal_size,
            heap_offset,
            heap_size: pool_size - heap_offset,
        })
    }

    /// The 100 encoded bytes: fields, then the crc of bytes 0..96.
    pub fn encode(&self) -> [u8; SUPERBLOCK_CRC_LEN + 4] {
        let mut b = [0u8; SUPERBLOCK_CRC_LEN + 4];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.format_version.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..32].copy_from_slice(&self.uuid);
        b[32..40].copy_from_slice(&self.pool_size.to_le_bytes());
        b[40..48].copy_from_slice(&self.log_offset.to_le_bytes());
        b[48..56].copy_from_slice(&self.log_capacity.to_le_bytes());
        b[56..64].copy_from_slice(&self.created_unix_ms.to_le_bytes());
        b[64..72].copy_from_slice(&self.journal_offset.to_le_bytes());
        b[72..80].copy_from_slice(&self.journal_size.to_le_bytes());
        b[80..88].copy_from_slice(&self.heap_offset.to_le_bytes());
        b[88..96].copy_from_slice(&self.heap_size.to_le_bytes());
        let crc = crc32c::crc32c(&b[..SUPERBLOCK_CRC_LEN]);
        b[96..100].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// The whole 4 KiB superblock area: the encoding, then zeros.
    pub fn encode_block(&self) -> Vec<u8> {
        let mut block = vec![0u8; BLOCK_LEN as usize];
        let enc = self.encode();
        block[..enc.len()].copy_from_slice(&enc);
        block
    }

    /// Decodes and validates the first 100 bytes of a pool.
    pub fn decode(b: &[u8; SUPERBLOCK_CRC_LEN + 4]) -> Result<Self, SuperblockError> {
        if b.get(0..8) != Some(&MAGIC[..]) {
            return Err(SuperblockError::BadMagic);
        }
        let format_version = u32_at(b, 8);
        if format_version != FORMAT_VERSION && format_version != UPGRADABLE_VERSION {
            return Err(SuperblockError::UnsupportedVersion(format_version));
        }
        let stored = u32_at(b, SUPERBLOCK_CRC_LEN);
        let computed = crc32c::crc32c(b.get(..SUPERBLOCK_CRC_LEN).unwrap_or(&[]));
        if stored != computed {
            return Err(SuperblockError::Checksum);
        }
        let mut uuid = [0u8; 16];
        if let Some(s) = b.get(16..32) {
            uuid.copy_from_slice(s);
        }
        let sb = Superblock {
            format_version,
            flags: u32_at(b, 12),
            uuid,
            pool_size: u64_at(b, 32),
            log_offset: u64_at(b, 40),
            log_capacity: u64_at(b, 48),
            created_unix_ms: u64_at(b, 56),
            journal_offset: u64_at(b, 64),
            journal_size: u64_at(b, 72),
            heap_offset: u64_at(b, 80),
            heap_size: u64_at(b, 88),
        };
        sb.check_layout()?;
        Ok(sb)
    }

    /// The superblock of record, from the primary and the grow copy's bytes, and
    /// whether a grow is to be finished: a valid copy of the same pool wins (its grow
    /// may have torn the primary); an all-zero or torn copy is ignored.
    pub fn choose(
        primary: &[u8; SUPERBLOCK_LEN],
        copy: &[u8; SUPERBLOCK_LEN],
    ) -> Result<(Superblock, bool), SuperblockError> {
        let primary = Superblock::decode(primary);
        if copy.iter().any(|&b| b != 0) {
            if let Ok(grown) = Superblock::decode(copy) {
                match &primary {
                    Ok(p) if p.uuid != grown.uuid => {}
                    _ => return Ok((grown, true)),
                }
            }
        }
        primary.map(|p| (p, false))
    }

    /// This pool grown to `size` bytes (rounded down like a new pool's size): the heap
    /// takes the new space; every other region stays where it is.
    pub fn grown(&self, size: u64) -> Result<Superblock, SuperblockError> {
        let pool_size = pool_size_for(size);
        if pool_size <= self.pool_size {
            return Err(SuperblockError::Layout(format!(
                "a pool of {} bytes cannot grow to {pool_size}",
                self.pool_size
            )));
        }
        let sb = Superblock {
            format_version: FORMAT_VERSION,
            pool_size,
            heap_size: pool_size - self.heap_offset,
            ..self.clone()
        };
        sb.check_layout()?;
        Ok(sb)
    }

    fn check_layout(&self) -> Result<(), SuperblockError> {
        let bad = |why: String| Err(SuperblockError::Layout(why));
        if self.flags != 0 {
            return bad(format!("unknown flags {:#x}", self.flags));
        }
        if self.pool_size < MIN_POOL_SIZE {
            return bad(format!(
                "pool size {} is below the minimum {MIN_POOL_SIZE}",
                self.pool_size
            ));
        }
        let aligned = |v: u64| v.is_multiple_of(SIZE_ALIGN);
        let regions = [
            ("journal", self.journal_offset, self.journal_size),
            ("log", self.log_offset, self.log_capacity),
            ("heap", self.heap_offset, self.heap_size),
        ];
        let mut at = JOURNAL_OFFSET;
        for (name, offset, len) in regions {
            if offset != at || !aligned(offset) || !aligned(len) || len == 0 {
                return bad(format!(
                    "{name} region at {offset} of {len} bytes does not follow the layout \
                     (expected at {at}, 4 KiB aligned, not empty)"
                ));
            }
            at = offset.saturating_add(len);
        }
        if at != self.pool_size {
            return bad(format!(
                "regions end at {at}, but the pool is {} bytes",
                self.pool_size
            ));
        }
        Ok(())
    }

    /// The uuid as hyphenated lowercase hex (8-4-4-4-12).
    pub fn uuid_string(&self) -> String {
        let mut s = String::with_capacity(36);
        for (i, byte) in self.uuid.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                s.push('-');
            }
            let _ = write!(s, "{byte:02x}");
        }
        s
    }
}
