//! [`MappedFile`]: a [`Media`] over a shared memory mapping of a file.
//!
//! Invariants: the mapping covers exactly `len` bytes and is unmapped on drop; `len`
//! only grows (`Media::grow` maps the file's extension right after the mapping, inside
//! address space reserved at open, so no address ever changes while other threads use
//! the media); every access is bounds-checked against `len` before any pointer
//! arithmetic; the flush strategy (cache-line write-back or msync) is fixed at open time
//! and reported with a one-sentence reason so the user knows what "durable" means here.

use super::{check_range, check_word, CacheFlush, Media, MediaError, MediaMode, RequestedMode};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A file mapped with MAP_SHARED (plus MAP_SYNC in dax mode).
pub struct MappedFile {
    ptr: *mut u8,
    /// Bytes mapped (grows, never shrinks).
    len: AtomicU64,
    /// Address space reserved from `ptr` for the mapping to grow into (0: none, the
    /// mapping cannot grow).
    reserved: usize,
    /// The file and the mmap flags its extensions are mapped with.
    file: Option<std::fs::File>,
    map_flags: libc::c_int,
    /// Serializes grows.
    growing: std::sync::Mutex<()>,
    mode: MediaMode,
    writable: bool,
    page_size: usize,
    /// Emulate mode: a flush happened since the last fence, so the next fence pays the
    /// modelled NVM write latency.
    flushed_since_fence: AtomicBool,
    /// Emulate mode: the modelled latency per fence, in ns (changeable at run time).
    delay_ns: AtomicU64,
    path: PathBuf,
}

// SAFETY: the mapping is plain shared memory owned by this value; every access goes
// through bounds-checked copies or atomics, so sharing the pointer across threads is sound
// (callers that write concurrently to one range get torn data, never memory unsafety).
unsafe impl Send for MappedFile {}
// SAFETY: see `Send` above: `&self` methods only copy bytes or use atomics.
unsafe impl Sync for MappedFile {}

fn io_err(path: &Path, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

impl MappedFile {
    /// Maps an existing file read-write and resolves `requested` into the mode in effect.
    ///
    /// `len_hint`: 0 maps the whole file; otherwise at most `len_hint` bytes are mapped
    /// (never more than the file holds, so a store can never SIGBUS past its end).
    /// Returns the media and one sentence saying why this mode was chosen.
    pub fn open(
        path: &Path,
        len_hint: u64,
        requested: RequestedMode,
        emulate_delay_ns: u64,
    ) -> Result<(MappedFile, String), MediaError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| MediaError::Io {
                op: "open",
                source: io_err(path, "open", e),
            })?;
        let len = map_len(&file, path, len_hint)?;
        let flush = CacheFlush::detect();
        let (at, reserved) = reserve_for(len);
        let result = map_in_mode(&file, len, at, requested, flush, path, emulate_delay_ns);
        let (ptr, mode, reason) = match result {
            Ok(mapped) => mapped,
            Err(e) => {
                release(at, reserved);
                return Err(e);
            }
        };
        let map_flags = match mode {
            MediaMode::Dax(_) => libc::MAP_SHARED_VALIDATE | libc::MAP_SYNC,
            _ => libc::MAP_SHARED,
        };
        Ok((
            MappedFile {
                ptr,
                len: AtomicU64::new(len),
                reserved,
                file: Some(file),
                map_flags,
                growing: std::sync::Mutex::new(()),
                mode,
                writable: true,
                page_size: page_size(),
                flushed_since_fence: AtomicBool::new(false),
                delay_ns: AtomicU64::new(emulate_delay_ns),
                path: path.to_path_buf(),
            },
            reason,
        ))
    }
}

/// Maps `len` bytes of `file` at `at` (reserved, or null: anywhere) in the mode that
/// `requested` resolves to; the mapping, its mode and why.
fn map_in_mode(
    file: &std::fs::File,
    len: u64,
    at: *mut u8,
    requested: RequestedMode,
    flush: Option<CacheFlush>,
    path: &Path,
    emulate_delay_ns: u64,
) -> Result<(*mut u8, MediaMode, String), MediaError> {
    let shared = libc::PROT_READ | libc::PROT_WRITE;
    let p = path.display();
    let map_sync = |file: &std::fs::File, len: u64| map_sync(file, len, at);
    let map_plain = |file: &std::fs::File, len: u64, prot: libc::c_int, path: &Path| {
        map_plain(file, len, prot, path, at)
    };
    Ok(match (requested, flush) {
        (RequestedMode::Dax, Some(flush)) => match map_sync(file, len) {
            Ok(ptr) => (
                ptr,
                MediaMode::Dax(flush),
                format!("dax mode requested and MAP_SYNC granted by {p}: flushing with {flush}"),
            ),
            Err(e) => {
                return Err(MediaError::Unsupported(format!(
                    "MAP_SYNC refused by {p}: {e}; not a DAX filesystem"
                )))
            }
        },
        (RequestedMode::Auto, Some(flush)) => match map_sync(file, len) {
            Ok(ptr) => (
                ptr,
                MediaMode::Dax(flush),
                format!("MAP_SYNC granted by {p}: persistent memory, flushing with {flush}"),
            ),
            Err(e) => (
                map_plain(file, len, shared, path)?,
                MediaMode::Msync,
                format!("MAP_SYNC refused ({e}): {p} is not on a DAX filesystem, using msync"),
            ),
        },
        (RequestedMode::Auto, None) => (
            map_plain(file, len, shared, path)?,
            MediaMode::Msync,
            "this CPU has no cache-line flush instruction, using msync".to_string(),
        ),
        (RequestedMode::Emulate, Some(flush)) => (
            map_plain(file, len, shared, path)?,
            MediaMode::Emulate {
                flush,
                delay_ns: emulate_delay_ns,
            },
            format!(
                "emulate mode requested: treating a plain mapping of {p} as persistent memory \
                     ({flush} + sfence, delay {emulate_delay_ns} ns) - NOT power-loss safe"
            ),
        ),
        (RequestedMode::Dax | RequestedMode::Emulate, None) => {
            return Err(MediaError::Unsupported(format!(
                "{requested} mode needs cache-line flush instructions, which this CPU lacks"
            )))
        }
        (RequestedMode::Msync, _) => (
            map_plain(file, len, shared, path)?,
            MediaMode::Msync,
            format!("msync mode requested: every flush of {p} is an msync(MS_SYNC)"),
        ),
    })
}

impl MappedFile {
    /// Maps an existing file read-only (PROT_READ) for inspection tools: every write,
    /// store or flush fails with `Unsupported`. Mode reported: msync.
    pub fn open_readonly(path: &Path, len_hint: u64) -> Result<MappedFile, MediaError> {
        let file = OpenOptions::new()
            .read(true)
            .open(path)
            .map_err(|e| MediaError::Io {
                op: "open",
                source: io_err(path, "open", e),
            })?;
        let len = map_len(&file, path, len_hint)?;
        let ptr = map_plain(&file, len, libc::PROT_READ, path, std::ptr::null_mut())?;
        Ok(MappedFile {
            ptr,
            len: AtomicU64::new(len),
            reserved: 0,
            file: None,
            map_flags: libc::MAP_SHARED,
            growing: std::sync::Mutex::new(()),
            mode: MediaMode::Msync,
            writable: false,
            page_size: page_size(),
            flushed_since_fence: AtomicBool::new(false),
            delay_ns: AtomicU64::new(0),
            path: path.to_path_buf(),
        })
    }

    /// The mapped file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_writable(&self) -> Result<(), MediaError> {
        if self.writable {
            Ok(())
        } else {
            Err(MediaError::Unsupported(format!(
                "{} is mapped read-only",
                self.path.display()
            )))
        }
    }
}

/// How many bytes to map: the file's length, capped by `len_hint` when non-zero.
fn map_len(file: &std::fs::File, path: &Path, len_hint: u64) -> Result<u64, MediaError> {
    let file_len = file
        .metadata()
        .map_err(|e| MediaError::Io {
            op: "stat",
            source: io_err(path, "stat", e),
        })?
        .len();
    let len = if len_hint == 0 {
        file_len
    } else {
        file_len.min(len_hint)
    };
    if len == 0 {
        return Err(MediaError::Unsupported(format!(
            "cannot map {}: the file is empty",
            path.display()
        )));
    }
    if usize::try_from(len).is_err() {
        return Err(MediaError::Unsupported(format!(
            "cannot map {}: {len} bytes exceed the address space",
            path.display()
        )));
    }
    Ok(len)
}

fn page_size() -> usize {
    // SAFETY: sysconf only reads a constant system parameter.
    let sz = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(sz).ok().filter(|s| *s > 0).unwrap_or(4096)
}

/// mmap(MAP_SHARED_VALIDATE | MAP_SYNC): succeeds only on a DAX filesystem, where stores
/// flushed from the CPU caches are durable without any call into the kernel.
#[cfg(target_os = "linux")]
fn map_sync(file: &std::fs::File, len: u64, at: *mut u8) -> Result<*mut u8, io::Error> {
    map_file(
        file,
        at,
        len,
        0,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED_VALIDATE | libc::MAP_SYNC,
    )
}

#[cfg(not(target_os = "linux"))]
fn map_sync(_file: &std::fs::File, _len: u64, _at: *mut u8) -> Result<*mut u8, io::Error> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Maps `len` bytes of `file` from `offset`: at `at` (MAP_FIXED, which must lie in this
/// value's own reservation) or, with `at` null, at a kernel-chosen address.
fn map_file(
    file: &std::fs::File,
    at: *mut u8,
    len: u64,
    offset: u64,
    prot: libc::c_int,
    flags: libc::c_int,
) -> Result<*mut u8, io::Error> {
    let bad = || io::Error::from(io::ErrorKind::InvalidInput);
    let len = usize::try_from(len).map_err(|_| bad())?;
    let offset = libc::off_t::try_from(offset).map_err(|_| bad())?;
    let flags = if at.is_null() {
        flags
    } else {
        flags | libc::MAP_FIXED
    };
    // SAFETY: either a fresh mapping at a kernel-chosen address, or MAP_FIXED over
    // address space this value reserved (PROT_NONE, never handed out to anything else), so
    // no existing memory is affected; the fd is valid for the call; the result is checked.
    let ptr = unsafe { libc::mmap(at.cast(), len, prot, flags, file.as_raw_fd(), offset) };
    if ptr == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(ptr.cast::<u8>())
    }
}

/// Persistent memory is fast only when mapped with 2 MiB pages, which the kernel uses for
/// a DAX file only where the virtual address (and the file offset, 0 here) is 2 MiB
/// aligned (PMDK aligns its mappings the same way).
pub const HUGE_PAGE: usize = 2 << 20;

/// Address space a writable mapping of `len` bytes may grow into: at least 1 TiB (or
/// twice `len`), starting on a `HUGE_PAGE` boundary, PROT_NONE and unbacked, so it costs
/// no memory. (null, 0) when the system refuses (an address-space limit): the mapping
/// then cannot grow online (and lands wherever the kernel puts it).
fn reserve_for(len: u64) -> (*mut u8, usize) {
    let Ok(size) = usize::try_from(len.saturating_mul(2).max(1 << 40)) else {
        return (std::ptr::null_mut(), 0);
    };
    let Some(padded) = size.checked_add(HUGE_PAGE) else {
        return (std::ptr::null_mut(), 0);
    };
    // SAFETY: a fresh anonymous PROT_NONE mapping at a kernel-chosen address; nothing
    // existing is affected; the result is checked.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            padded,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return (std::ptr::null_mut(), 0);
    }
    let raw = raw.cast::<u8>();
    let head = (HUGE_PAGE - (raw as usize) % HUGE_PAGE) % HUGE_PAGE;
    let tail = HUGE_PAGE - head;
    // SAFETY: `head + size + tail == padded`: the aligned start and the two trimmed ends
    // all lie inside the reservation just made, which nothing else references.
    unsafe {
        let aligned = raw.add(head);
        if head > 0 {
            libc::munmap(raw.cast(), head);
        }
        if tail > 0 {
            libc::munmap(aligned.add(size).cast(), tail);
        }
        (aligned, size)
    }
}

/// Gives back a reservation that no mapping used.
fn release(at: *mut u8, reserved: usize) {
    if !at.is_null() {
        // SAFETY: [at, at+reserved) is a reservation made by `reserve_for` that nothing
        // else references.
        unsafe { libc::munmap(at.cast(), reserved) };
    }
}

fn map_plain(
    file: &std::fs::File,
    len: u64,
    prot: libc::c_int,
    path: &Path,
    at: *mut u8,
) -> Result<*mut u8, MediaError> {
    usize::try_from(len).map_err(|_| {
        MediaError::Unsupported(format!("cannot map {} bytes of {}", len, path.display()))
    })?;
    map_file(file, at, len, 0, prot, libc::MAP_SHARED).map_err(|e| MediaError::Io {
        op: "mmap",
        source: io_err(path, "mmap", e),
    })
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // `len` was checked to fit in usize when mapped; a reservation covers the mapping.
        let len = match self.reserved {
            0 => usize::try_from(self.len.load(Ordering::Acquire)).unwrap_or(0),
            reserved => reserved,
        };
        // SAFETY: `ptr`/`len` describe the mapping created at open; it is unmapped exactly
        // once, here, and no reference into it can outlive `self`.
        unsafe {
            libc::munmap(self.ptr.cast::<libc::c_void>(), len);
        }
    }
}

impl Media for MappedFile {
    fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    fn grow(&self, new_len: u64) -> Result<(), MediaError> {
        self.check_writable()?;
        let _one_at_a_time = self.growing.lock().unwrap_or_else(|p| p.into_inner());
        let len = self.len.load(Ordering::Acquire);
        let room = u64::try_from(self.reserved).unwrap_or(0);
        let page = self.page_size as u64;
        let unsupported = |why: String| Err(MediaError::Unsupported(why));
        if new_len <= len {
            return unsupported(format!("cannot grow a mapping of {len} bytes to {new_len}"));
        }
        if new_len > room || !len.is_multiple_of(page) {
            return unsupported(format!(
                "the mapping of {} cannot grow in place (no address space reserved for {new_len} bytes); \
                 restart with the larger size",
                self.path.display()
            ));
        }
        let (Some(file), Ok(at)) = (self.file.as_ref(), usize::try_from(len)) else {
            return unsupported("no file to grow".into());
        };
        // SAFETY: `len` < `reserved`, so `ptr + len` stays inside the reservation.
        let at = unsafe { self.ptr.add(at) };
        map_file(
            file,
            at,
            new_len - len,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            self.map_flags,
        )
        .map_err(|e| MediaError::Io {
            op: "mmap",
            source: io_err(&self.path, "mmap the grown part of", e),
        })?;
        self.len.store(new_len, Ordering::Release);
        Ok(())
    }

    fn mode(&self) -> MediaMode {
        match self.mode {
            MediaMode::Emulate { flush, .. } => MediaMode::Emulate {
                flush,
                delay_ns: self.delay_ns.load(Ordering::Relaxed),
            },
            other => other,
        }
    }

    fn set_emulated_delay_ns(&self, ns: u64) -> bool {
        if !matches!(self.mode, MediaMode::Emulate { .. }) {
            return false;
        }
        self.delay_ns.store(ns, Ordering::Relaxed);
        true
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        let start = check_range(offset, buf.len() as u64, self.len())?;
        // SAFETY: [start, start+buf.len()) lies inside the mapping (checked above) and
        // `buf` is a distinct Rust allocation, so the ranges cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.add(start), buf.as_mut_ptr(), buf.len());
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), MediaError> {
        self.check_writable()?;
        let start = check_range(offset, data.len() as u64, self.len())?;
        // SAFETY: [start, start+data.len()) lies inside the writable mapping (checked
        // above) and `data` is a distinct Rust allocation, so the ranges cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(start), data.len());
        }
        Ok(())
    }

    fn store_u64_atomic(&self, offset: u64, value: u64) -> Result<(), MediaError> {
        self.check_writable()?;
        let start = check_word(offset, self.len())?;
        // SAFETY: the word is inside the writable mapping and 8-aligned (checked above;
        // the mapping itself is page-aligned), which is all AtomicU64 requires; a single
        // aligned 8-byte store cannot be torn (invariant 7).
        let word = unsafe { AtomicU64::from_ptr(self.ptr.add(start).cast::<u64>()) };
        word.store(value.to_le(), Ordering::Release);
        Ok(())
    }

    fn load_u64(&self, offset: u64) -> Result<u64, MediaError> {
        let start = check_word(offset, self.len())?;
        // SAFETY: the word is inside the mapping and 8-aligned (checked above).
        let word = unsafe { AtomicU64::from_ptr(self.ptr.add(start).cast::<u64>()) };
        Ok(u64::from_le(word.load(Ordering::Acquire)))
    }

    fn flush(&self, offset: u64, len: u64) -> Result<(), MediaError> {
        self.check_writable()?;
        let start = check_range(offset, len, self.len())?;
        if len == 0 {
            return Ok(());
        }
        // `offset + len <= self.len()`, which was checked to fit in usize when mapped.
        let end = start + len as usize;
        match self.mode {
            MediaMode::Dax(kind) | MediaMode::Emulate { flush: kind, .. } => {
                let first = start - start % super::CACHE_LINE as usize;
                // SAFETY: [first, end) is inside the mapping: `first` only rounds `start`
                // down to a line boundary inside the same page, and the mapping is
                // page-aligned.
                unsafe { flush_lines(kind, self.ptr.add(first), end - first) };
                self.flushed_since_fence.store(true, Ordering::Relaxed);
                Ok(())
            }
            MediaMode::Msync | MediaMode::CrashSim => {
                // msync wants a page-aligned start: round down and widen the length.
                let page_start = start - start % self.page_size;
                // SAFETY: [page_start, end) is inside the mapping (the page start is at or
                // after the page-aligned mapping start) and msync does not write memory.
                let rc = unsafe {
                    libc::msync(
                        self.ptr.add(page_start).cast::<libc::c_void>(),
                        end - page_start,
                        libc::MS_SYNC,
                    )
                };
                if rc == 0 {
                    Ok(())
                } else {
                    Err(MediaError::Io {
                        op: "msync",
                        source: io_err(&self.path, "msync", io::Error::last_os_error()),
                    })
                }
            }
        }
    }

    fn write_persistent(&self, offset: u64, data: &[u8]) -> Result<(), MediaError> {
        if !self.uses_cache_flushes() {
            self.write(offset, data)?;
            return self.flush(offset, data.len() as u64);
        }
        self.check_writable()?;
        let start = check_range(offset, data.len() as u64, self.len())?;
        // Non-temporal stores need 8-byte alignment: the unaligned edges (none for log
        // records, which are 8-aligned and padded) take the store + flush path.
        let head = (8 - start % 8) % 8;
        let head = head.min(data.len());
        let body = (data.len() - head) / 8 * 8;
        if head > 0 {
            self.write(offset, &data[..head])?;
            self.flush(offset, head as u64)?;
        }
        // SAFETY: [start+head, start+head+body) is inside the writable mapping (checked
        // above), 8-aligned, and `data` is a distinct allocation.
        unsafe { stream_copy(self.ptr.add(start + head), &data[head..head + body]) };
        let tail = head + body;
        if tail < data.len() {
            self.write(offset + tail as u64, &data[tail..])?;
            self.flush(offset + tail as u64, (data.len() - tail) as u64)?;
        }
        self.flushed_since_fence.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn store_u64_persistent(&self, offset: u64, value: u64) -> Result<(), MediaError> {
        if !self.uses_cache_flushes() {
            self.store_u64_atomic(offset, value)?;
            return self.flush(offset, 8);
        }
        self.check_writable()?;
        let start = check_word(offset, self.len())?;
        // SAFETY: the word is inside the writable mapping and 8-aligned (checked above);
        // one aligned 8-byte non-temporal store cannot be torn (invariant 7).
        unsafe { stream_word(self.ptr.add(start), value.to_le()) };
        self.flushed_since_fence.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn fence(&self) -> Result<(), MediaError> {
        match self.mode {
            MediaMode::Dax(_) => {
                sfence();
                Ok(())
            }
            MediaMode::Emulate { .. } => {
                sfence();
                let delay_ns = self.delay_ns.load(Ordering::Relaxed);
                if delay_ns > 0 && self.flushed_since_fence.swap(false, Ordering::Relaxed) {
                    spin_for(Duration::from_nanos(delay_ns));
                }
                Ok(())
            }
            // msync(MS_SYNC) has already waited for the write-back.
            MediaMode::Msync | MediaMode::CrashSim => Ok(()),
        }
    }
}

impl MappedFile {
    /// True when durability comes from cache-line flushes (DAX, emulation), not msync.
    fn uses_cache_flushes(&self) -> bool {
        matches!(self.mode, MediaMode::Dax(_) | MediaMode::Emulate { .. })
    }
}

/// Copies `src` to `dst` with 8-byte non-temporal stores.
///
/// # Safety
/// `dst` must be 8-aligned and `[dst, dst+src.len())` inside one live writable mapping;
/// `src.len()` must be a multiple of 8.
#[cfg(target_arch = "x86_64")]
unsafe fn stream_copy(dst: *mut u8, src: &[u8]) {
    for (i, chunk) in src.chunks_exact(8).enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        // SAFETY: dst+8i is 8-aligned and inside the mapping (caller's contract).
        unsafe { stream_word(dst.add(i * 8), u64::from_ne_bytes(word)) };
    }
}

/// One 8-byte non-temporal store (`movnti`).
///
/// # Safety
/// `dst` must be 8-aligned and inside a live writable mapping.
#[cfg(target_arch = "x86_64")]
unsafe fn stream_word(dst: *mut u8, value: u64) {
    // SAFETY: the caller guarantees an aligned, writable destination; movnti is SSE2,
    // which every x86_64 CPU has.
    unsafe { std::arch::x86_64::_mm_stream_si64(dst.cast::<i64>(), value as i64) };
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn stream_copy(dst: *mut u8, src: &[u8]) {
    // SAFETY: caller's contract; plain stores (only msync mode exists off x86_64).
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn stream_word(dst: *mut u8, value: u64) {
    // SAFETY: caller's contract.
    unsafe { std::ptr::write_volatile(dst.cast::<u64>(), value) };
}

/// Busy-waits: sleeping would cost far more than the few hundred ns being modelled.
fn spin_for(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// Writes back every 64-byte line in `[p, p+len)`.
///
/// # Safety
/// `[p, p+len)` must lie inside one live mapping.
#[cfg(target_arch = "x86_64")]
unsafe fn flush_lines(kind: CacheFlush, p: *mut u8, len: usize) {
    use std::arch::asm;
    let step = super::CACHE_LINE as usize;
    let lines = len.div_ceil(step);
    // No `nomem` option: the asm blocks are compiler barriers, so earlier stores to these
    // lines are emitted before the write-back instruction.
    match kind {
        CacheFlush::Clwb => {
            for i in 0..lines {
                // SAFETY: the line is inside the mapping (caller's contract).
                unsafe {
                    asm!("clwb [{0}]", in(reg) p.add(i * step), options(nostack, preserves_flags))
                };
            }
        }
        CacheFlush::Clflushopt => {
            for i in 0..lines {
                // SAFETY: the line is inside the mapping (caller's contract).
                unsafe {
                    asm!("clflushopt [{0}]", in(reg) p.add(i * step), options(nostack, preserves_flags))
                };
            }
        }
        CacheFlush::Clflush => {
            for i in 0..lines {
                // SAFETY: the line is inside the mapping (caller's contract).
                unsafe {
                    asm!("clflush [{0}]", in(reg) p.add(i * step), options(nostack, preserves_flags))
                };
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn flush_lines(_kind: CacheFlush, _p: *mut u8, _len: usize) {
    // Unreachable: Dax/Emulate modes are refused at open on non-x86_64 targets.
}

#[cfg(target_arch = "x86_64")]
fn sfence() {
    // SAFETY: sfence only orders stores and flushes; it touches no memory.
    unsafe { std::arch::asm!("sfence", options(nostack, preserves_flags)) };
}

#[cfg(not(target_arch = "x86_64"))]
fn sfence() {}
