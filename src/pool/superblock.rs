//! The superblock codec (pool offset 0, layout v1): every field little-endian at a fixed
//! offset, protected by a crc32c over bytes 0..64. Decoding checks, in order, the magic
//! (is this a pool at all?), the version (can we read it?), the crc (is it intact?) and
//! the layout (do the fields make sense together?).

use std::fmt::Write as _;

pub const MAGIC: [u8; 8] = *b"RNVMPOOL";
pub const FORMAT_VERSION: u32 = 1;
/// Bytes covered by the superblock crc; the crc itself sits right after them.
pub const SUPERBLOCK_CRC_LEN: usize = 64;
/// The superblock area (the rest of it is zero).
pub const BLOCK_LEN: u64 = 4096;
/// The log's commit word: committed bytes of log from `LOG_OFFSET`. Own cache line.
pub const LOG_TAIL_OFFSET: u64 = 4096;
/// Reserved for a future `log_head` (zero in v1). Own cache line.
pub const LOG_HEAD_OFFSET: u64 = 4160;
/// First byte of the log.
pub const LOG_OFFSET: u64 = 8192;
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
    /// A superblock for a new pool of (about) `size` bytes: rounded down to 4 KiB, at
    /// least `MIN_POOL_SIZE`.
    pub fn new(size: u64, uuid: [u8; 16], created_unix_ms: u64) -> Result<Self, SuperblockError> {
        if size < MIN_POOL_SIZE {
            return Err(SuperblockError::TooSmall {
                size,
                min: MIN_POOL_SIZE,
            });
        }
        let pool_size = size - size % SIZE_ALIGN;
        Ok(Superblock {
            format_version: FORMAT_VERSION,
            flags: 0,
            uuid,
            pool_size,
            log_offset: LOG_OFFSET,
            log_capacity: pool_size - LOG_OFFSET,
            created_unix_ms,
        })
    }

    /// The 68 encoded bytes: fields, then the crc of bytes 0..64.
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
        let crc = crc32c::crc32c(&b[..SUPERBLOCK_CRC_LEN]);
        b[64..68].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// The whole 4 KiB superblock area: the encoding, then zeros.
    pub fn encode_block(&self) -> Vec<u8> {
        let mut block = vec![0u8; BLOCK_LEN as usize];
        let enc = self.encode();
        block[..enc.len()].copy_from_slice(&enc);
        block
    }

    /// Decodes and validates the first 68 bytes of a pool.
    pub fn decode(b: &[u8; SUPERBLOCK_CRC_LEN + 4]) -> Result<Self, SuperblockError> {
        if b.get(0..8) != Some(&MAGIC[..]) {
            return Err(SuperblockError::BadMagic);
        }
        let format_version = u32_at(b, 8);
        if format_version != FORMAT_VERSION {
            return Err(SuperblockError::UnsupportedVersion(format_version));
        }
        let stored = u32_at(b, 64);
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
        };
        sb.check_layout()?;
        Ok(sb)
    }

    fn check_layout(&self) -> Result<(), SuperblockError> {
        let bad = |why: String| Err(SuperblockError::Layout(why));
        if self.flags != 0 {
            return bad(format!("unknown flags {:#x}", self.flags));
        }
        if self.log_offset != LOG_OFFSET {
            return bad(format!(
                "log offset {} (layout v1 puts the log at {LOG_OFFSET})",
                self.log_offset
            ));
        }
        if self.pool_size < MIN_POOL_SIZE {
            return bad(format!(
                "pool size {} is below the minimum {MIN_POOL_SIZE}",
                self.pool_size
            ));
        }
        if !self.log_capacity.is_multiple_of(8)
            || self.log_capacity > self.pool_size - self.log_offset
        {
            return bad(format!(
                "log capacity {} does not fit a pool of {} bytes",
                self.log_capacity, self.pool_size
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
