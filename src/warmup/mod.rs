//! Warm-up bookkeeping: which keys of a frozen key space may still be brought into DRAM,
//! and into which db. Knows nothing of Redis; the glue asks it before every insert.
//!
//! After a restart the server starts empty and the key space is frozen (see
//! `keyspace::KeySpace::freeze`). A key reaches DRAM either by the background warm-up
//! or by a fault-in, when a command names it. The rules that keep DRAM exact:
//! - a fault-in settles a key *name* in every db at once (on Redis 7.0 the command
//!   filter cannot know the client's db, and MULTI or a script may SELECT): every frozen
//!   copy of that name is brought in (or, expired, dropped) before the command runs, and
//!   from then on the warm-up leaves the name alone, whatever clients do with it;
//! - FLUSHDB, FLUSHALL and SWAPDB move or drop whole frozen dbs: `place` says where a
//!   frozen db's keys belong now, or that they are gone;
//! - a key whose absolute expiry has passed is never brought in.
//!
//! Invariant: a key is inserted only if it is not settled and its frozen db still has a
//! place; everything that changes either happens on the main thread before the next
//! insert (the glue's callbacks), so an insert never races a client's command.
//!
//! The same "key lives in NVM, not (yet) in DRAM" question is what tiering asks for cold
//! values; this is where its bookkeeping will live.

#![forbid(unsafe_code)]

use rustc_hash::{FxHashMap, FxHashSet};

/// Where frozen dbs' keys are now, and which key names are settled.
#[derive(Debug, Default)]
pub struct WarmUp {
    settled: FxHashSet<Vec<u8>>,
    /// Frozen db -> the db its keys are in now (`None`: flushed). Absent: the same db.
    now_in: FxHashMap<u32, Option<u32>>,
    /// Db -> the frozen db whose keys it holds (`None`: none). Absent: the same db.
    holds: FxHashMap<u32, Option<u32>>,
    all_flushed: bool,
    /// Keys the warm-up has brought in, fault-ins have brought in, and keys dropped
    /// (expired, settled or flushed before their turn).
    pub loaded: u64,
    pub faulted: u64,
    pub dropped: u64,
}

impl WarmUp {
    pub fn new() -> WarmUp {
        WarmUp::default()
    }

    /// The db the keys of frozen db `frozen` are in now, or `None` if they were flushed.
    pub fn place(&self, frozen: u32) -> Option<u32> {
        if self.all_flushed {
            return None;
        }
        match self.now_in.get(&frozen) {
            Some(&now) => now,
            None => Some(frozen),
        }
    }

    fn held_by(&self, db: u32) -> Option<u32> {
        match self.holds.get(&db) {
            Some(&frozen) => frozen,
            None => Some(db),
        }
    }

    /// Whether any frozen key may still be brought in.
    pub fn anything_left(&self) -> bool {
        !self.all_flushed
    }

    /// A command names `key`: true the first time (the caller then brings in every
    /// frozen copy of it), false once settled.
    pub fn claim(&mut self, key: &[u8]) -> bool {
        if self.all_flushed || self.settled.contains(key) {
            return false;
        }
        self.settled.insert(key.to_vec());
        true
    }

    pub fn is_settled(&self, key: &[u8]) -> bool {
        self.settled.contains(key)
    }

    /// Key names settled so far (their DRAM cost is about their length plus 40 bytes).
    pub fn settled_count(&self) -> usize {
        self.settled.len()
    }

    /// SWAPDB a b ran.
    pub fn swapped(&mut self, a: u32, b: u32) {
        if a == b || self.all_flushed {
            return;
        }
        let (in_a, in_b) = (self.held_by(a), self.held_by(b));
        self.holds.insert(a, in_b);
        self.holds.insert(b, in_a);
        if let Some(f) = in_a {
            self.now_in.insert(f, Some(b));
        }
        if let Some(f) = in_b {
            self.now_in.insert(f, Some(a));
        }
    }

    /// FLUSHDB ran in `db`.
    pub fn flushed(&mut self, db: u32) {
        if let Some(f) = self.held_by(db) {
            self.now_in.insert(f, None);
        }
        self.holds.insert(db, None);
    }

    /// FLUSHALL ran (or a full sync emptied the server).
    pub fn flushed_all(&mut self) {
        self.all_flushed = true;
        self.settled = FxHashSet::default();
    }
}

/// Whether an absolute expiry (unix ms, negative: none) has passed at `now_ms`.
pub fn expired(expire_at_ms: i64, now_ms: i64) -> bool {
    expire_at_ms >= 0 && expire_at_ms <= now_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Swap(u32, u32),
        Flush(u32),
        FlushAll,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u32..6, 0u32..6).prop_map(|(a, b)| Op::Swap(a, b)),
            2 => (0u32..6).prop_map(Op::Flush),
            1 => Just(Op::FlushAll),
        ]
    }

    proptest! {
        /// `place` agrees with moving labelled dbs around one by one.
        #[test]
        fn place_follows_swaps_and_flushes(ops in proptest::collection::vec(op(), 0..40)) {
            // contents[db] = the frozen db whose keys db holds now.
            let mut contents: Vec<Option<u32>> = (0..6).map(Some).collect();
            let mut w = WarmUp::new();
            for op in &ops {
                match *op {
                    Op::Swap(a, b) => {
                        contents.swap(a as usize, b as usize);
                        w.swapped(a, b);
                    }
                    Op::Flush(d) => {
                        contents[d as usize] = None;
                        w.flushed(d);
                    }
                    Op::FlushAll => {
                        contents.iter_mut().for_each(|c| *c = None);
                        w.flushed_all();
                    }
                }
            }
            for frozen in 0..6u32 {
                let expected = contents.iter().position(|&c| c == Some(frozen)).map(|d| d as u32);
                prop_assert_eq!(w.place(frozen), expected, "frozen db {} after {:?}", frozen, ops);
            }
        }
    }

    #[test]
    fn a_name_is_claimed_once_in_all_dbs() {
        let mut w = WarmUp::new();
        assert!(w.claim(b"k"));
        assert!(!w.claim(b"k"));
        assert!(w.is_settled(b"k"));
        assert!(!w.is_settled(b"other"));
        w.flushed_all();
        assert!(
            !w.claim(b"other"),
            "nothing is left to bring in after FLUSHALL"
        );
        assert!(!w.anything_left());
    }

    #[test]
    fn expiry_is_absolute() {
        assert!(!expired(-1, 1_000));
        assert!(expired(1_000, 1_000));
        assert!(!expired(1_001, 1_000));
    }
}
