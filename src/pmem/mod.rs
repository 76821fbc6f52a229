//! Persistence primitives: the one small trait ([`Media`]) that the log and the pool
//! write through, and its implementations — a memory-mapped file ([`MappedFile`]) and a
//! crash simulator for tests ([`CrashSim`]).
//!
//! Contract shared by every implementation: `write` and `store_u64_atomic` are plain
//! stores that are NOT durable; a range becomes durable only after `flush` of that range
//! followed by `fence`. `store_u64_atomic` is never torn (invariant 7).
//! This module is the only place in the storage core allowed to contain `unsafe`.

mod crash_sim;
mod mapped;
mod os;

pub use crash_sim::CrashSim;
pub use mapped::MappedFile;
pub use os::allocate_file;

use std::fmt;
use std::str::FromStr;

/// Cache-line size assumed by every flush loop (true of every x86_64 CPU with clwb).
pub const CACHE_LINE: u64 = 64;

/// The instruction used to write a cache line back to memory, chosen once from CPUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheFlush {
    /// Writes the line back and may keep it cached: the cheapest.
    Clwb,
    /// Writes back and evicts, weakly ordered (needs the sfence we issue anyway).
    Clflushopt,
    /// Writes back and evicts, strongly ordered: the slow fallback every x86_64 has.
    Clflush,
}

impl CacheFlush {
    /// The best flush instruction this CPU supports, or `None` when it has none
    /// (non-x86_64 targets): then only msync durability is possible.
    pub fn detect() -> Option<CacheFlush> {
        detect_flush()
    }
}

#[cfg(target_arch = "x86_64")]
fn detect_flush() -> Option<CacheFlush> {
    use core::arch::x86_64::__cpuid_count;
    let max_leaf = __cpuid_count(0, 0).eax;
    if max_leaf >= 7 {
        let ebx = __cpuid_count(7, 0).ebx;
        if ebx & (1 << 24) != 0 {
            return Some(CacheFlush::Clwb);
        }
        if ebx & (1 << 23) != 0 {
            return Some(CacheFlush::Clflushopt);
        }
    }
    if __cpuid_count(1, 0).edx & (1 << 19) != 0 {
        return Some(CacheFlush::Clflush);
    }
    None
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_flush() -> Option<CacheFlush> {
    None
}

impl fmt::Display for CacheFlush {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CacheFlush::Clwb => "clwb",
            CacheFlush::Clflushopt => "clflushopt",
            CacheFlush::Clflush => "clflush",
        })
    }
}

/// The durability mode the user asked for (`nvm.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequestedMode {
    /// Real persistent memory if the kernel grants MAP_SYNC, else msync.
    #[default]
    Auto,
    /// Real persistent memory or nothing.
    Dax,
    /// Treat a plain mapping as persistent memory (development/benchmarks only).
    Emulate,
    /// A normal file made durable with msync.
    Msync,
}

impl FromStr for RequestedMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(RequestedMode::Auto),
            "dax" => Ok(RequestedMode::Dax),
            "emulate" => Ok(RequestedMode::Emulate),
            "msync" => Ok(RequestedMode::Msync),
            _ => Err(format!(
                "unknown mode '{s}' (expected auto, dax, emulate or msync)"
            )),
        }
    }
}

impl fmt::Display for RequestedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RequestedMode::Auto => "auto",
            RequestedMode::Dax => "dax",
            RequestedMode::Emulate => "emulate",
            RequestedMode::Msync => "msync",
        })
    }
}

/// The durability mode actually in effect for a [`Media`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaMode {
    /// MAP_SYNC mapping on a DAX filesystem: flush = cache-line write-back.
    Dax(CacheFlush),
    /// Plain mapping treated as persistent memory; `delay_ns` is busy-waited once per
    /// fence that follows at least one flush, to model NVM write latency.
    Emulate { flush: CacheFlush, delay_ns: u64 },
    /// Plain mapping; flush = msync(MS_SYNC).
    Msync,
    /// The test crash simulator.
    CrashSim,
}

impl fmt::Display for MediaMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MediaMode::Dax(flush) => write!(f, "dax ({flush})"),
            MediaMode::Emulate { flush, delay_ns } => {
                write!(f, "emulate ({flush}, delay {delay_ns} ns)")
            }
            MediaMode::Msync => f.write_str("msync"),
            MediaMode::CrashSim => f.write_str("crash-sim"),
        }
    }
}

/// Errors of a [`Media`] operation.
#[derive(Debug)]
pub enum MediaError {
    /// A system call failed; `op` names it (and usually the file).
    Io {
        op: &'static str,
        source: std::io::Error,
    },
    /// The access `[offset, offset+len)` does not fit in the media.
    OutOfRange {
        offset: u64,
        len: u64,
        media_len: u64,
    },
    /// The crash simulator has crashed: nothing further happens.
    Crashed,
    /// The requested mode or operation is not possible here; the text says why.
    Unsupported(String),
}

impl fmt::Display for MediaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MediaError::Io { op, source } => write!(f, "{op} failed: {source}"),
            MediaError::OutOfRange {
                offset,
                len,
                media_len,
            } => write!(
                f,
                "access of {len} bytes at offset {offset} is outside the media ({media_len} bytes)"
            ),
            MediaError::Crashed => f.write_str("simulated crash: media no longer accessible"),
            MediaError::Unsupported(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for MediaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MediaError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Byte-addressable storage whose durability is controlled by explicit flush + fence.
pub trait Media: Send + Sync {
    /// Bytes addressable through this media.
    fn len(&self) -> u64;
    /// True when the media has no bytes at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The durability mode in effect.
    fn mode(&self) -> MediaMode;
    /// Copies `buf.len()` bytes at `offset` into `buf`.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), MediaError>;
    /// Plain stores: NOT durable until the range is flushed and then fenced.
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), MediaError>;
    /// One untorn, 8-byte aligned store (Release ordering); durable after flush + fence.
    fn store_u64_atomic(&self, offset: u64, value: u64) -> Result<(), MediaError>;
    /// Loads the little-endian u64 at an 8-aligned `offset` (Acquire ordering).
    fn load_u64(&self, offset: u64) -> Result<u64, MediaError>;
    /// Starts write-back of every cache line overlapping `[offset, offset+len)`.
    fn flush(&self, offset: u64, len: u64) -> Result<(), MediaError>;
    /// Orders all earlier flushes: after it returns they are durable.
    fn fence(&self) -> Result<(), MediaError>;

    /// Makes the media `new_len` bytes long (the backing file already is), keeping every
    /// address of the bytes it has: what another thread reads stays valid. Unsupported
    /// where it cannot grow in place.
    fn grow(&self, new_len: u64) -> Result<(), MediaError> {
        Err(MediaError::Unsupported(format!(
            "this media cannot grow to {new_len} bytes"
        )))
    }

    /// Emulation mode only: changes the busy-wait modelled per fence (`nvm.emulate-flush-
    /// delay-ns`, settable at run time). False where there is nothing to change.
    fn set_emulated_delay_ns(&self, _ns: u64) -> bool {
        false
    }

    /// Writes `data` so that it is durable after the next `fence`: the same contract as
    /// `write` + `flush`. On persistent memory this uses non-temporal stores, which skip
    /// the read-for-ownership and the later write-back of each line (as PMDK's
    /// `pmem_memcpy` does); measured here at ~60% of the cost of store + clwb.
    fn write_persistent(&self, offset: u64, data: &[u8]) -> Result<(), MediaError> {
        self.write(offset, data)?;
        self.flush(offset, data.len() as u64)
    }

    /// One untorn, 8-byte aligned store that is durable after the next `fence`: the same
    /// contract as `store_u64_atomic` + `flush` (invariant 7 holds for both).
    fn store_u64_persistent(&self, offset: u64, value: u64) -> Result<(), MediaError> {
        self.store_u64_atomic(offset, value)?;
        self.flush(offset, 8)
    }
}

/// Checks that `[offset, offset+len)` lies inside a media of `media_len` bytes, without
/// overflow, and returns the range start as usize.
pub(crate) fn check_range(offset: u64, len: u64, media_len: u64) -> Result<usize, MediaError> {
    let out = MediaError::OutOfRange {
        offset,
        len,
        media_len,
    };
    match offset.checked_add(len) {
        Some(end) if end <= media_len => usize::try_from(offset).map_err(|_| out),
        _ => Err(out),
    }
}

/// Checks an 8-byte atomic access: in range and 8-aligned.
pub(crate) fn check_word(offset: u64, media_len: u64) -> Result<usize, MediaError> {
    if !offset.is_multiple_of(8) {
        return Err(MediaError::Unsupported(format!(
            "8-byte atomic access at offset {offset} is not 8-aligned"
        )));
    }
    check_range(offset, 8, media_len)
}
