//! The pool file (layout v4, see docs/format.md): a superblock, the commit words, the key
//! space's root and redo journal, the ring log, then the key space's heap. All integers
//! little-endian at explicit offsets.
//!
//! Opening a pool is recovery: check the superblock, redo a key-space batch that was
//! committed but not yet copied into place (the journal), then scan the log from the
//! head the key space names. The key space itself is opened separately
//! (`keyspace::KeySpace::open`), by whoever will own it (the replayer thread).
//!
//! Invariants: a pool file at its final path always has a valid superblock (a new pool
//! is formatted under a temporary name and linked into place only once durable; a grow
//! makes the file's new length durable before any superblock names it, and rewrites the
//! superblock through its grow copy, see `superblock`); the process that opened a pool
//! holds an exclusive flock on it for the `Pool`'s lifetime; an existing pool keeps its
//! log size, and its size unless asked for a larger one (pools grow, never shrink).

#![forbid(unsafe_code)]

mod superblock;

pub use superblock::{
    Superblock, SuperblockError, BLOCK_LEN, DEFAULT_LOG_SIZE, FIXED_LEN, FORMAT_VERSION,
    GROW_COPY_OFFSET, JOURNAL_OFFSET, JOURNAL_WORD_OFFSET, LOG_TAIL_OFFSET, MAGIC, MIN_LOG_SIZE,
    MIN_POOL_SIZE, ROOT_LEN, ROOT_OFFSET, SUPERBLOCK_CRC_LEN, SUPERBLOCK_LEN,
};

use crate::keyspace::{self, JournalOutcome, StoreError};
use crate::log::{Cursor, Log};
use crate::pmem::{allocate_file, MappedFile, Media, MediaError, MediaMode, RequestedMode};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// How to open or create a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOptions {
    pub path: PathBuf,
    /// Size of a new pool in bytes (rounded down to 4 KiB, to 2 MiB from 8 MiB on); an
    /// existing pool smaller than this grows to it (its heap takes the new space), a
    /// larger one keeps its size.
    pub size: u64,
    /// Ring log size of a new pool; ignored for an existing pool.
    pub log_size: u64,
    pub mode: RequestedMode,
    /// Emulate mode only: busy-wait per fence that follows a flush.
    pub emulate_flush_delay_ns: u64,
}

/// What an open pool is, for logs and `NVM.INFO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolInfo {
    pub path: PathBuf,
    /// This open created the pool.
    pub created: bool,
    /// Hyphenated hex.
    pub uuid: String,
    /// The pool's size per its superblock.
    pub size: u64,
    pub mode: MediaMode,
    /// One sentence: why this mode.
    pub mode_reason: String,
    pub created_unix_ms: u64,
    /// What recovery did with the key space's journal.
    pub journal: JournalOutcome,
    /// The size this open grew the pool from (or finished growing it from, after a
    /// crash during a grow: then the size is unknown and this is 0).
    pub grown_from: Option<u64>,
}

/// Errors opening or creating a pool. Each displays as one line naming the path.
#[derive(Debug)]
pub enum PoolError {
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    /// The directory that should hold the pool does not exist (we never create it).
    MissingDir(PathBuf),
    Media {
        path: PathBuf,
        source: MediaError,
    },
    /// Another process (or another open in this one) holds the pool's lock.
    Locked(PathBuf),
    BadMagic {
        path: PathBuf,
    },
    UnsupportedVersion {
        path: PathBuf,
        version: u32,
    },
    SuperblockChecksum {
        path: PathBuf,
    },
    /// The superblock's fields are inconsistent with layout v1.
    BadLayout {
        path: PathBuf,
        reason: String,
    },
    /// A requested size below the 1 MiB minimum.
    TooSmall {
        path: PathBuf,
        size: u64,
        min: u64,
    },
    /// The file is too short to hold even the superblock and the commit word.
    Truncated {
        path: PathBuf,
        file_len: u64,
        need: u64,
    },
    /// A repair could not be carried out (the log said why).
    Repair {
        path: PathBuf,
        reason: String,
    },
    /// The key space's journal or root is damaged.
    KeySpace {
        path: PathBuf,
        source: StoreError,
    },
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::Io { path, op, source } => {
                write!(f, "pool {}: {op} failed: {source}", path.display())
            }
            PoolError::MissingDir(dir) => write!(
                f,
                "pool directory {} does not exist (create it first)",
                dir.display()
            ),
            PoolError::Media { path, source } => write!(f, "pool {}: {source}", path.display()),
            PoolError::Locked(path) => write!(
                f,
                "pool {} is locked by another process (is another server using it?)",
                path.display()
            ),
            PoolError::BadMagic { path } => write!(
                f,
                "{} is not a redis-nvm pool (bad magic in the superblock)",
                path.display()
            ),
            PoolError::UnsupportedVersion { path, version } => write!(
                f,
                "pool {} has format version {version}; this build reads versions 3 and {FORMAT_VERSION} only. \
                 To migrate a version 2 pool: run the previous build on it, SAVE, stop the server, move \
                 the pool file aside and start this build (a new pool imports dump.rdb); version 1 \
                 pools came from development builds",
                path.display()
            ),
            PoolError::SuperblockChecksum { path } => write!(
                f,
                "pool {}: superblock checksum mismatch (the pool header is corrupt)",
                path.display()
            ),
            PoolError::BadLayout { path, reason } => {
                write!(f, "pool {}: bad superblock: {reason}", path.display())
            }
            PoolError::TooSmall { path, size, min } => write!(
                f,
                "pool {}: size {size} bytes is below the minimum of {min} bytes",
                path.display()
            ),
            PoolError::Repair { path, reason } => {
                write!(f, "repairing pool {} failed: {reason}", path.display())
            }
            PoolError::KeySpace { path, source } => {
                write!(f, "pool {}: {source}", path.display())
            }
            PoolError::Truncated {
                path,
                file_len,
                need,
            } => write!(
                f,
                "pool {} is only {file_len} bytes, but its header says {need} (the file was cut short)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for PoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PoolError::Io { source, .. } => Some(source),
            PoolError::Media { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// An open pool: its media, superblock and log.
pub struct Pool {
    media: Arc<dyn Media>,
    superblock: Superblock,
    log: Log,
    info: PoolInfo,
    /// Holds the flock for the pool's lifetime (None for caller-supplied media).
    _lock: Option<File>,
}

/// The path reported for media that does not come from a file.
const MEDIA_PATH: &str = "<caller-supplied media>";

impl Pool {
    /// Opens the pool at `opts.path`, creating it (size `opts.size`) if the file does not
    /// exist. The parent directory must exist.
    pub fn open_or_create(opts: &PoolOptions) -> Result<Pool, PoolError> {
        let path = opts.path.as_path();
        let dir = parent_dir(path);
        if !dir.is_dir() {
            return Err(PoolError::MissingDir(dir.to_path_buf()));
        }
        let (file, created) = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => {
                lock(&file, path, true)?;
                (file, false)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (create_pool_file(opts)?, true),
            Err(e) => return Err(io_error(path, "open", e)),
        };
        let (mut sb, grow_pending) = read_superblock_from_file(&file, path)?;
        let grown = sb.grown(opts.size).ok();
        if let Some(grown) = &grown {
            // The new length is durable before any superblock names it.
            allocate_file(&file, grown.pool_size)
                .and_then(|()| file.sync_all())
                .map_err(|e| io_error(path, "extend the pool file", e))?;
        }
        let map_len = grown.as_ref().map_or(sb.pool_size, |g| g.pool_size);
        let (media, reason) =
            MappedFile::open(path, map_len, opts.mode, opts.emulate_flush_delay_ns)
                .map_err(|source| media_error(path, source))?;
        let mut grown_from = None;
        if let Some(grown) = grown {
            commit_grow(&media, &grown).map_err(|source| media_error(path, source))?;
            grown_from = Some(sb.pool_size);
            sb = grown;
        } else if grow_pending {
            commit_grow(&media, &sb).map_err(|source| media_error(path, source))?;
            grown_from = Some(0);
        }
        let mut pool =
            Pool::assemble(Arc::new(media), sb, path, created, reason, Some(file), true)?;
        pool.info.grown_from = grown_from;
        Ok(pool)
    }

    /// Repairs a damaged log: durably drops everything after its valid prefix. Returns
    /// the committed bytes dropped. Damage at the log's head needs `force` (see
    /// `Log::repair_truncate`).
    pub fn repair(&mut self, force: bool) -> Result<u64, PoolError> {
        let path = self.info.path.clone();
        self.log
            .repair_truncate(force)
            .map_err(|e| PoolError::Repair {
                path,
                reason: e.to_string(),
            })
    }

    /// Opens an existing pool for inspection: read-only mapping, shared lock (so it fails
    /// with `Locked` while a server has the pool), never writes. Appends fail.
    pub fn open_readonly(path: &Path) -> Result<Pool, PoolError> {
        let file = File::open(path).map_err(|e| io_error(path, "open", e))?;
        lock(&file, path, false)?;
        let (sb, _) = read_superblock_from_file(&file, path)?;
        let media = MappedFile::open_readonly(path, sb.pool_size)
            .map_err(|source| media_error(path, source))?;
        let reason = "opened read-only for inspection".to_string();
        Pool::assemble(Arc::new(media), sb, path, false, reason, Some(file), false)
    }

    /// Opens a pool on caller-supplied media (tests use `CrashSim`). `create` formats a
    /// fresh superblock (log of `DEFAULT_LOG_SIZE`, at most half the space) first.
    pub fn from_media(media: Box<dyn Media>, create: bool) -> Result<Pool, PoolError> {
        Pool::from_media_with_log(media, create, DEFAULT_LOG_SIZE)
    }

    /// `from_media` with the ring log size of a new pool.
    pub fn from_media_with_log(
        media: Box<dyn Media>,
        create: bool,
        log_size: u64,
    ) -> Result<Pool, PoolError> {
        let media: Arc<dyn Media> = Arc::from(media);
        let path = Path::new(MEDIA_PATH);
        let sb = if create {
            let sb = Superblock::new(media.len(), log_size, random_uuid(), now_unix_ms())
                .map_err(|e| sb_error(path, e))?;
            format_media(media.as_ref(), &sb).map_err(|source| media_error(path, source))?;
            sb
        } else {
            let need = FIXED_LEN;
            if media.len() < need {
                return Err(PoolError::Truncated {
                    path: path.to_path_buf(),
                    file_len: media.len(),
                    need,
                });
            }
            let (sb, grow_pending) = read_superblock_from_media(media.as_ref(), path)?;
            if grow_pending {
                commit_grow(media.as_ref(), &sb).map_err(|source| media_error(path, source))?;
            }
            sb
        };
        let reason = "media supplied by the caller".to_string();
        Pool::assemble(media, sb, path, create, reason, None, true)
    }

    fn assemble(
        media: Arc<dyn Media>,
        sb: Superblock,
        path: &Path,
        created: bool,
        mode_reason: String,
        lock: Option<File>,
        writable: bool,
    ) -> Result<Pool, PoolError> {
        let layout = keyspace::Layout::of(&sb);
        // A read-only open leaves a pending batch alone: the committed state before it,
        // with the log from the old head, is consistent by itself.
        let journal = if writable {
            keyspace::recover_journal(media.as_ref(), layout.journal, |o| {
                layout.journal_may_write(o)
            })
            .map_err(|source| PoolError::KeySpace {
                path: path.to_path_buf(),
                source,
            })?
        } else {
            JournalOutcome::Clean
        };
        let root_word = |at: u64| {
            media
                .load_u64(ROOT_OFFSET + at)
                .map_err(|source| media_error(path, source))
        };
        let head = Cursor {
            pos: root_word(keyspace::layout::ROOT_LOG_HEAD)?,
            lsn: root_word(keyspace::layout::ROOT_APPLIED_LSN)?.saturating_add(1),
        };
        let log = Log::open(
            Arc::clone(&media),
            LOG_TAIL_OFFSET,
            sb.log_offset,
            sb.log_capacity,
            head,
            (layout.heap_start, layout.heap_end),
        )
        .map_err(|source| media_error(path, source))?;
        let info = PoolInfo {
            path: path.to_path_buf(),
            created,
            uuid: sb.uuid_string(),
            size: sb.pool_size,
            mode: media.mode(),
            mode_reason,
            created_unix_ms: sb.created_unix_ms,
            journal,
            grown_from: None,
        };
        Ok(Pool {
            media,
            superblock: sb,
            log,
            info,
            _lock: lock,
        })
    }

    /// Opens the key space of this pool (walks it to rebuild free space; see
    /// `KeySpace::open`). Its owner must be the only writer of the key space.
    pub fn open_keyspace(&self) -> Result<keyspace::KeySpace, PoolError> {
        keyspace::KeySpace::open(
            Arc::clone(&self.media),
            keyspace::Layout::of(&self.superblock),
            self.log.live_blobs(),
        )
        .map_err(|source| PoolError::KeySpace {
            path: self.info.path.clone(),
            source,
        })
    }

    /// Opens the key space of this pool without walking it (instant restart: see
    /// `KeySpace::open_unwalked`). Its owner must be the only writer of the key space.
    pub fn open_keyspace_unwalked(&self) -> Result<keyspace::KeySpace, PoolError> {
        keyspace::KeySpace::open_unwalked(
            Arc::clone(&self.media),
            keyspace::Layout::of(&self.superblock),
            self.log.live_blobs(),
        )
        .map_err(|source| PoolError::KeySpace {
            path: self.info.path.clone(),
            source,
        })
    }

    /// Grows this open pool to `size` bytes while it is in use: the file is extended and
    /// that made durable, the mapping extended in place (no address changes), the
    /// superblock rewritten through its grow copy (crash-safe at every step, as at
    /// start-up). Returns the heap's new end: the key space's owner raises its heap to it
    /// (`Replayer::grow_heap`); until then nothing is allocated in the new space.
    pub fn grow(&mut self, size: u64) -> Result<u64, PoolError> {
        let path = self.info.path.clone();
        let grown = self
            .superblock
            .grown(size)
            .map_err(|e| sb_error(&path, e))?;
        if let Some(file) = &self._lock {
            allocate_file(file, grown.pool_size)
                .and_then(|()| file.sync_all())
                .map_err(|e| io_error(&path, "extend the pool file", e))?;
        }
        self.media
            .grow(grown.pool_size)
            .map_err(|source| media_error(&path, source))?;
        commit_grow(self.media.as_ref(), &grown).map_err(|source| media_error(&path, source))?;
        let heap_end = grown.heap_offset + grown.heap_size;
        self.info.grown_from = Some(self.superblock.pool_size);
        self.info.size = grown.pool_size;
        self.superblock = grown;
        self.log.grow_blob_area(heap_end);
        Ok(heap_end)
    }

    /// A shared handle on the media (for the replayer thread).
    pub fn media_arc(&self) -> Arc<dyn Media> {
        Arc::clone(&self.media)
    }

    pub fn info(&self) -> &PoolInfo {
        &self.info
    }

    pub fn superblock(&self) -> &Superblock {
        &self.superblock
    }

    /// The media under the pool (for layers that will store more than the log).
    pub fn media(&self) -> &dyn Media {
        self.media.as_ref()
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    pub fn log_mut(&mut self) -> &mut Log {
        &mut self.log
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn io_error(path: &Path, op: &'static str, source: io::Error) -> PoolError {
    PoolError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

fn media_error(path: &Path, source: MediaError) -> PoolError {
    PoolError::Media {
        path: path.to_path_buf(),
        source,
    }
}

fn sb_error(path: &Path, e: SuperblockError) -> PoolError {
    let path = path.to_path_buf();
    match e {
        SuperblockError::BadMagic => PoolError::BadMagic { path },
        SuperblockError::UnsupportedVersion(version) => {
            PoolError::UnsupportedVersion { path, version }
        }
        SuperblockError::Checksum => PoolError::SuperblockChecksum { path },
        SuperblockError::Layout(reason) => PoolError::BadLayout { path, reason },
        SuperblockError::TooSmall { size, min } => PoolError::TooSmall { path, size, min },
    }
}

/// flock(LOCK_EX|LOCK_NB) (or LOCK_SH for readers) held until `file` is closed.
fn lock(file: &File, path: &Path, exclusive: bool) -> Result<(), PoolError> {
    let res = if exclusive {
        file.try_lock()
    } else {
        file.try_lock_shared()
    };
    match res {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(PoolError::Locked(path.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(io_error(path, "flock", e)),
    }
}

/// Grows the pool on `media` (already as long as the new size) to `to` bytes: the heap
/// takes the new space. Crash-safe at every flush and fence (`commit_grow`). For pools
/// on caller-supplied media (tests); files grow through `PoolOptions::size`.
pub fn grow_media(media: &dyn Media, to: u64) -> Result<Superblock, PoolError> {
    let path = Path::new(MEDIA_PATH);
    let (sb, _) = read_superblock_from_media(media, path)?;
    let grown = sb.grown(to).map_err(|e| sb_error(path, e))?;
    if media.len() < grown.pool_size {
        return Err(PoolError::Truncated {
            path: path.to_path_buf(),
            file_len: media.len(),
            need: grown.pool_size,
        });
    }
    commit_grow(media, &grown).map_err(|source| media_error(path, source))?;
    Ok(grown)
}

/// Makes `sb` the pool's superblock through the grow copy: copy durable, primary
/// durable, copy cleared. A crash before the copy is durable leaves the old superblock;
/// after, the copy is the superblock of record until the primary holds it.
fn commit_grow(media: &dyn Media, sb: &Superblock) -> Result<(), MediaError> {
    let enc = sb.encode();
    media.write(GROW_COPY_OFFSET, &enc)?;
    media.flush(GROW_COPY_OFFSET, enc.len() as u64)?;
    media.fence()?;
    media.write(0, &enc)?;
    media.flush(0, enc.len() as u64)?;
    media.fence()?;
    media.write(GROW_COPY_OFFSET, &[0u8; SUPERBLOCK_LEN])?;
    media.flush(GROW_COPY_OFFSET, SUPERBLOCK_LEN as u64)?;
    media.fence()
}

/// The superblock of record on `media` and whether a grow is to be finished (see
/// `superblock`); media shorter than the pool it holds is refused.
fn read_superblock_from_media(
    media: &dyn Media,
    path: &Path,
) -> Result<(Superblock, bool), PoolError> {
    let (mut primary, mut copy) = ([0u8; SUPERBLOCK_LEN], [0u8; SUPERBLOCK_LEN]);
    media
        .read(0, &mut primary)
        .and_then(|()| media.read(GROW_COPY_OFFSET, &mut copy))
        .map_err(|source| media_error(path, source))?;
    let (sb, grow_pending) = Superblock::choose(&primary, &copy).map_err(|e| sb_error(path, e))?;
    if media.len() < sb.pool_size {
        return Err(PoolError::Truncated {
            path: path.to_path_buf(),
            file_len: media.len(),
            need: sb.pool_size,
        });
    }
    Ok((sb, grow_pending))
}

/// The superblock of record and whether a grow is to be finished (see `superblock`).
fn read_superblock_from_file(file: &File, path: &Path) -> Result<(Superblock, bool), PoolError> {
    let file_len = file
        .metadata()
        .map_err(|e| io_error(path, "stat", e))?
        .len();
    if file_len < FIXED_LEN {
        return Err(PoolError::Truncated {
            path: path.to_path_buf(),
            file_len,
            need: FIXED_LEN,
        });
    }
    let (mut primary, mut copy) = ([0u8; SUPERBLOCK_LEN], [0u8; SUPERBLOCK_LEN]);
    file.read_exact_at(&mut primary, 0)
        .and_then(|()| file.read_exact_at(&mut copy, GROW_COPY_OFFSET))
        .map_err(|e| io_error(path, "read superblock", e))?;
    let (sb, grow_pending) = Superblock::choose(&primary, &copy).map_err(|e| sb_error(path, e))?;
    if file_len < sb.pool_size {
        return Err(PoolError::Truncated {
            path: path.to_path_buf(),
            file_len,
            need: sb.pool_size,
        });
    }
    Ok((sb, grow_pending))
}

/// Creates a new pool file: formatted and made durable under a temporary name, then
/// hard-linked into place, so that the final path never names a half-made pool. The
/// returned file is locked.
fn create_pool_file(opts: &PoolOptions) -> Result<File, PoolError> {
    let path = opts.path.as_path();
    let sb = Superblock::new(opts.size, opts.log_size, random_uuid(), now_unix_ms())
        .map_err(|e| sb_error(path, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pool".to_string());
    let tmp = parent_dir(path).join(format!(".{name}.creating-{}", std::process::id()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| io_error(&tmp, "create", e))?;
    let result = format_new_file(&file, &tmp, path, &sb);
    // The temporary name goes in every case: on success the pool lives on under `path`.
    let _ = std::fs::remove_file(&tmp);
    result?;
    // Make the new directory entry itself durable.
    File::open(parent_dir(path))
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(parent_dir(path), "fsync directory", e))?;
    Ok(file)
}

fn format_new_file(file: &File, tmp: &Path, path: &Path, sb: &Superblock) -> Result<(), PoolError> {
    lock(file, tmp, true)?;
    allocate_file(file, sb.pool_size).map_err(|e| io_error(path, "posix_fallocate", e))?;
    // fallocate zero-fills, so the commit words and the root (0 = empty) need no write.
    file.write_all_at(&sb.encode_block(), 0)
        .map_err(|e| io_error(tmp, "write superblock", e))?;
    file.sync_all().map_err(|e| io_error(tmp, "fsync", e))?;
    match std::fs::hard_link(tmp, path) {
        Ok(()) => Ok(()),
        // Another process created the pool meanwhile: it holds the lock on that file.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(PoolError::Locked(path.to_path_buf()))
        }
        Err(e) => Err(io_error(path, "link new pool file", e)),
    }
}

/// Writes the superblock, zero commit words and an empty root through the media, durably.
fn format_media(media: &dyn Media, sb: &Superblock) -> Result<(), MediaError> {
    media.write(0, &sb.encode_block())?;
    media.write(
        LOG_TAIL_OFFSET,
        &vec![0u8; (FIXED_LEN - LOG_TAIL_OFFSET) as usize],
    )?;
    media.flush(0, FIXED_LEN)?;
    media.fence()
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A random (version 4) uuid from /dev/urandom; falls back to clock and pid mixing,
/// which is unique enough for telling pools apart.
fn random_uuid() -> [u8; 16] {
    let mut u = [0u8; 16];
    let ok = File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut u))
        .is_ok();
    if !ok {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        u[..8].copy_from_slice(&(nanos as u64).to_le_bytes());
        u[8..12].copy_from_slice(&std::process::id().to_le_bytes());
        u[12..16].copy_from_slice(&((nanos >> 64) as u32).to_le_bytes());
    }
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}
