//! [`CrashSim`]: an in-memory [`Media`] that models what survives a power cut.
//!
//! It keeps a live image (what the CPU sees) and a durable image (what the NVM holds).
//! `flush` snapshots the flushed cache lines; `fence` moves those snapshots to the
//! durable image — so a store made after a line's flush is NOT covered by that flush,
//! as on real hardware. Every flush and every fence is one "event"; with `with_crash_at(n)`
//! event n+1 crashes: it has no effect, returns `Crashed`, and so does every later call.
//! With `with_torn_words(seed)`, at the crash every dirty aligned 8-byte word
//! independently persists or not (cache evictions, flushed-but-unfenced lines).
//! Clones share one state, so a test can keep a handle after boxing one into a pool.

use super::{check_range, check_word, Media, MediaError, MediaMode, CACHE_LINE};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

const LINE: usize = CACHE_LINE as usize;

/// Crash-simulating media; see the module documentation.
#[derive(Clone)]
pub struct CrashSim {
    /// Bytes (grows with `Media::grow`, shared by clones).
    len: Arc<AtomicU64>,
    inner: Arc<Mutex<State>>,
}

struct State {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Snapshots taken by `flush`, applied to `durable` by the next `fence`.
    pending: Vec<(usize, [u8; LINE])>,
    /// Lines that may differ between live and durable (candidates for torn persistence).
    dirty: Vec<bool>,
    dirty_list: Vec<usize>,
    events: u64,
    crash_at: Option<u64>,
    torn_seed: Option<u64>,
    crashed: bool,
}

impl CrashSim {
    /// A zero-filled media of `len` bytes, nothing flushed yet.
    pub fn new(len: u64) -> CrashSim {
        CrashSim::from_image(vec![0; usize::try_from(len).unwrap_or(0)])
    }

    /// A media whose live and durable images both start as `image` (e.g. the durable
    /// image of a crashed run: "the machine restarted").
    pub fn from_image(image: Vec<u8>) -> CrashSim {
        let lines = image.len().div_ceil(LINE);
        CrashSim {
            len: Arc::new(AtomicU64::new(image.len() as u64)),
            inner: Arc::new(Mutex::new(State {
                durable: image.clone(),
                live: image,
                pending: Vec::new(),
                dirty: vec![false; lines],
                dirty_list: Vec::new(),
                events: 0,
                crash_at: None,
                torn_seed: None,
                crashed: false,
            })),
        }
    }

    /// Allows `n` flush/fence calls; call number n+1 crashes.
    pub fn with_crash_at(self, n: u64) -> CrashSim {
        self.state().crash_at = Some(n);
        self
    }

    /// At the crash, each dirty 8-byte word persists or not, decided by a seeded RNG.
    pub fn with_torn_words(self, seed: u64) -> CrashSim {
        self.state().torn_seed = Some(seed);
        self
    }

    /// Flush and fence calls so far (the crashing call is not counted).
    pub fn events(&self) -> u64 {
        self.state().events
    }

    /// The image after the crash, or the fenced state if no crash happened yet.
    pub fn durable_image(&self) -> Vec<u8> {
        self.state().durable.clone()
    }

    /// True once the simulated crash has happened.
    pub fn crashed(&self) -> bool {
        self.state().crashed
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock (in a test) must not hide the image.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn alive(&self) -> Result<(), MediaError> {
        if self.crashed {
            Err(MediaError::Crashed)
        } else {
            Ok(())
        }
    }

    /// Counts one flush/fence event, crashing instead if the budget is spent.
    fn event(&mut self) -> Result<(), MediaError> {
        self.alive()?;
        if self.crash_at.is_some_and(|n| self.events >= n) {
            self.crash();
            return Err(MediaError::Crashed);
        }
        self.events += 1;
        Ok(())
    }

    fn crash(&mut self) {
        self.crashed = true;
        self.pending.clear();
        let Some(seed) = self.torn_seed else { return };
        let mut rng = SplitMix64(seed);
        for &line in &self.dirty_list {
            let start = line * LINE;
            let end = (start + LINE).min(self.live.len());
            for w in (start..end).step_by(8) {
                let we = (w + 8).min(end);
                let (Some(l), Some(d)) = (self.live.get(w..we), self.durable.get_mut(w..we)) else {
                    continue;
                };
                if l != d && rng.next() & 1 == 1 {
                    d.copy_from_slice(l);
                }
            }
        }
    }

    fn mark_dirty(&mut self, start: usize, len: usize) {
        if len == 0 {
            return;
        }
        for line in start / LINE..=(start + len - 1) / LINE {
            if let Some(flag) = self.dirty.get_mut(line) {
                if !*flag {
                    *flag = true;
                    self.dirty_list.push(line);
                }
            }
        }
    }
}

/// A tiny deterministic RNG (the library cannot depend on `rand`).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Media for CrashSim {
    fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    fn grow(&self, new_len: u64) -> Result<(), MediaError> {
        let mut st = self.state();
        st.alive()?;
        let len =
            usize::try_from(new_len).map_err(|_| MediaError::Unsupported("too long".into()))?;
        if len <= st.live.len() {
            return Err(MediaError::Unsupported(format!(
                "cannot grow to {new_len} bytes"
            )));
        }
        // The extension is zeros on both sides, as a file's new length is.
        st.live.resize(len, 0);
        st.durable.resize(len, 0);
        let lines = len.div_ceil(LINE);
        st.dirty.resize(lines, false);
        self.len.store(new_len, Ordering::Release);
        Ok(())
    }

    fn mode(&self) -> MediaMode {
        MediaMode::CrashSim
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        let st = self.state();
        st.alive()?;
        let start = check_range(offset, buf.len() as u64, self.len())?;
        let src = st
            .live
            .get(start..start + buf.len())
            .ok_or(MediaError::OutOfRange {
                offset,
                len: buf.len() as u64,
                media_len: self.len(),
            })?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), MediaError> {
        let mut st = self.state();
        st.alive()?;
        let start = check_range(offset, data.len() as u64, self.len())?;
        let dst = st
            .live
            .get_mut(start..start + data.len())
            .ok_or(MediaError::OutOfRange {
                offset,
                len: data.len() as u64,
                media_len: self.len(),
            })?;
        dst.copy_from_slice(data);
        st.mark_dirty(start, data.len());
        Ok(())
    }

    fn store_u64_atomic(&self, offset: u64, value: u64) -> Result<(), MediaError> {
        check_word(offset, self.len())?;
        // Under the lock the 8 bytes change together, and torn persistence works on
        // whole aligned words, so this store can never be torn.
        self.write(offset, &value.to_le_bytes())
    }

    fn load_u64(&self, offset: u64) -> Result<u64, MediaError> {
        check_word(offset, self.len())?;
        let mut b = [0u8; 8];
        self.read(offset, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn flush(&self, offset: u64, len: u64) -> Result<(), MediaError> {
        let mut st = self.state();
        let start = check_range(offset, len, self.len())?;
        st.event()?;
        if len == 0 {
            return Ok(());
        }
        let end = start + len as usize;
        for line in start / LINE..=(end - 1) / LINE {
            let ls = line * LINE;
            let mut snap = [0u8; LINE];
            let le = (ls + LINE).min(st.live.len());
            if let (Some(dst), Some(src)) = (snap.get_mut(..le - ls), st.live.get(ls..le)) {
                dst.copy_from_slice(src);
            }
            st.pending.push((line, snap));
        }
        Ok(())
    }

    fn fence(&self) -> Result<(), MediaError> {
        let mut st = self.state();
        st.event()?;
        let pending = std::mem::take(&mut st.pending);
        for (line, snap) in &pending {
            let ls = line * LINE;
            let le = (ls + LINE).min(st.durable.len());
            if let (Some(dst), Some(src)) = (st.durable.get_mut(ls..le), snap.get(..le - ls)) {
                dst.copy_from_slice(src);
            }
        }
        // Reuse the allocation for the next round of flushes.
        st.pending = pending;
        st.pending.clear();
        Ok(())
    }
}
