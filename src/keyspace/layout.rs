//! The byte layout of the key space's blocks in the heap (docs/format.md, "Key space").
//!
//! Every integer is little-endian at a fixed offset; every block starts 16-aligned and
//! is a multiple of 16 bytes long. Items (keys, members) are immutable once written,
//! except a key's expiry word; collection headers are mutable words. Slot arrays have no
//! header: their owner records their capacity.

use xxhash_rust::xxh3::xxh3_64;

/// Heap blocks are aligned to and sized in multiples of this.
pub const GRAIN: u64 = 16;

/// Block kinds (header byte 4).
pub const KIND_KEY: u8 = 1;
pub const KIND_COLL: u8 = 2;
pub const KIND_MEMBER: u8 = 4;

/// Value types (header byte 5 of a key item and of a collection header).
pub const VT_STRING: u8 = 0;
pub const VT_KEYS: u8 = 1;
pub const VT_LIST: u8 = 2;
pub const VT_HASH: u8 = 3;
pub const VT_SET: u8 = 4;
pub const VT_ZSET: u8 = 5;
pub const VT_STREAM: u8 = 6;
/// A string longer than `INLINE_STRING_MAX`: a deque of chunk members (`CHUNK` bytes
/// each, the last one shorter; a 0 slot is a chunk of zeros), the total length in the
/// collection's `COLL_EXTRA` word.
pub const VT_CHUNKS: u8 = 7;

/// Bytes of a string chunk: a chunk member is then exactly 4096 bytes.
pub const CHUNK: u64 = 4096 - MEMBER_DATA;
/// The longest string kept inside its key item.
pub const INLINE_STRING_MAX: u64 = CHUNK;

/// Key item: header, key_len u32, val_len u32, expire_at i64 (mutable), coll u64,
/// crc u32, pad u32, key bytes, string bytes.
pub const KEY_LENS: u64 = 8;
pub const KEY_EXPIRE: u64 = 16;
pub const KEY_COLL: u64 = 24;
pub const KEY_CRC: u64 = 32;
pub const KEY_DATA: u64 = 40;

/// Collection header (48 bytes): header, count, slots, cap, aux (tables: used slots
/// incl. tombstones; deques: head index), extra (streams: member holding the DUMP, or 0;
/// chunked strings: the string's length in bytes).
pub const COLL_COUNT: u64 = 8;
pub const COLL_SLOTS: u64 = 16;
pub const COLL_CAP: u64 = 24;
pub const COLL_AUX: u64 = 32;
pub const COLL_EXTRA: u64 = 40;
pub const COLL_LEN: u64 = 48;

/// Member item: header, a_len u32, b_len u32, crc u32, pad u32, a bytes, b bytes.
pub const MEMBER_LENS: u64 = 8;
pub const MEMBER_CRC: u64 = 16;
pub const MEMBER_DATA: u64 = 24;

/// Table slots: hash u64, item u64 (0 empty, 1 tombstone). Deque slots: item u64.
pub const TABLE_SLOT: u64 = 16;
pub const DEQUE_SLOT: u64 = 8;
pub const EMPTY: u64 = 0;
pub const TOMBSTONE: u64 = 1;

/// Root block words (relative to the root's offset).
pub const ROOT_APPLIED_LSN: u64 = 0;
pub const ROOT_LOG_HEAD: u64 = 8;
pub const ROOT_HEAP_TOP: u64 = 16;
/// The db directory (slots of key-table pointers) and its slot count.
pub const ROOT_DB_DIR: u64 = 24;
pub const ROOT_DB_SLOTS: u64 = 32;
/// The member item holding the function libraries' dump (0: none logged).
pub const ROOT_FUNCTIONS: u64 = 40;
/// Root words a journal entry may name.
pub const ROOT_WORDS: u64 = 48;
/// Bytes per db directory slot.
pub const DB_SLOT: u64 = 8;

/// The hash stored in table slots: XXH3-64, seed 0, of the key or member bytes.
pub fn hash(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// A block header word: length in grains (u32), kind, value type.
pub fn header(len: u64, kind: u8, vtype: u8) -> u64 {
    (len / GRAIN) | (u64::from(kind) << 32) | (u64::from(vtype) << 40)
}

/// A decoded block header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    pub len: u64,
    pub kind: u8,
    pub vtype: u8,
    /// Bits that must be zero.
    pub reserved: u64,
}

pub fn parse_header(word: u64) -> BlockHeader {
    BlockHeader {
        len: (word & 0xffff_ffff) * GRAIN,
        kind: ((word >> 32) & 0xff) as u8,
        vtype: ((word >> 40) & 0xff) as u8,
        reserved: word >> 48,
    }
}

/// Rounds `n` up to the allocation class that serves it: multiples of 16 up to 256,
/// then four classes per power of two (at most 25% slack, 12% on average).
pub fn size_class(n: u64) -> u64 {
    let n = n.max(GRAIN).div_ceil(GRAIN) * GRAIN;
    if n <= 256 {
        return n;
    }
    let pow = 1u64 << (63 - (n - 1).leading_zeros());
    let step = pow / 4;
    n.div_ceil(step) * step
}

/// The largest class not above `n` (for carving free gaps), `n` a multiple of 16.
pub fn class_at_most(n: u64) -> u64 {
    if n <= 256 {
        return n - n % GRAIN;
    }
    let pow = 1u64 << (63 - n.leading_zeros());
    let step = (pow / 4).max(GRAIN);
    n - n % step
}

/// Encoded key item bytes (without the block padding).
pub fn encode_key(vtype: u8, key: &[u8], string: &[u8], expire_at: i64, coll: u64) -> Vec<u8> {
    let len = size_class(KEY_DATA + key.len() as u64 + string.len() as u64);
    let mut b = Vec::with_capacity(len as usize);
    b.extend_from_slice(&header(len, KIND_KEY, vtype).to_le_bytes());
    b.extend_from_slice(&(key.len() as u32).to_le_bytes());
    b.extend_from_slice(&(string.len() as u32).to_le_bytes());
    b.extend_from_slice(&expire_at.to_le_bytes());
    b.extend_from_slice(&coll.to_le_bytes());
    let crc = key_crc(&b[8..16], coll, key, string);
    b.extend_from_slice(&crc.to_le_bytes());
    b.extend_from_slice(&[0u8; 4]);
    b.extend_from_slice(key);
    b.extend_from_slice(string);
    b
}

/// crc32c over a key item's immutable parts: its lengths, collection pointer, key and
/// string bytes (the expiry word is mutable and not covered).
pub fn key_crc(lens: &[u8], coll: u64, key: &[u8], string: &[u8]) -> u32 {
    let mut crc = crc32c::crc32c(lens);
    crc = crc32c::crc32c_append(crc, &coll.to_le_bytes());
    crc = crc32c::crc32c_append(crc, key);
    crc32c::crc32c_append(crc, string)
}

/// Encoded member item bytes (without the block padding).
pub fn encode_member(a: &[u8], b_part: &[u8]) -> Vec<u8> {
    let len = size_class(MEMBER_DATA + a.len() as u64 + b_part.len() as u64);
    let mut b = Vec::with_capacity(len as usize);
    b.extend_from_slice(&header(len, KIND_MEMBER, 0).to_le_bytes());
    b.extend_from_slice(&(a.len() as u32).to_le_bytes());
    b.extend_from_slice(&(b_part.len() as u32).to_le_bytes());
    let crc = member_crc(&b[8..16], a, b_part);
    b.extend_from_slice(&crc.to_le_bytes());
    b.extend_from_slice(&[0u8; 4]);
    b.extend_from_slice(a);
    b.extend_from_slice(b_part);
    b
}

pub fn member_crc(lens: &[u8], a: &[u8], b: &[u8]) -> u32 {
    let crc = crc32c::crc32c(lens);
    crc32c::crc32c_append(crc32c::crc32c_append(crc, a), b)
}

/// Encoded collection header.
pub fn encode_coll(vtype: u8, count: u64, slots: u64, cap: u64, aux: u64, dump: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(COLL_LEN as usize);
    b.extend_from_slice(&header(COLL_LEN, KIND_COLL, vtype).to_le_bytes());
    for w in [count, slots, cap, aux, dump] {
        b.extend_from_slice(&w.to_le_bytes());
    }
    b
}

/// Bytes per slot of a collection of `vtype`: deques (lists, stream effects) hold an item
/// pointer, hash tables a hash and an item pointer.
pub fn slot_size(vtype: u8) -> u64 {
    if is_deque(vtype) {
        DEQUE_SLOT
    } else {
        TABLE_SLOT
    }
}

/// Whether collections of `vtype` are deques (else hash tables).
pub fn is_deque(vtype: u8) -> bool {
    matches!(vtype, VT_LIST | VT_STREAM | VT_CHUNKS)
}

/// The smallest power of two >= n (and >= 8): table and deque capacities.
pub fn capacity_for(n: u64) -> u64 {
    n.max(8).next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_and_bound_slack() {
        for n in 1..100_000u64 {
            let c = size_class(n);
            assert!(c >= n && c.is_multiple_of(GRAIN));
            assert!(c <= 256 || c * 4 <= n * 5 + 4 * 256, "{n} -> {c}");
            assert_eq!(size_class(c), c);
        }
        for n in (16..100_000u64).step_by(16) {
            let c = class_at_most(n);
            assert!((16..=n).contains(&c) && size_class(c) == c, "{n} -> {c}");
        }
    }
}
