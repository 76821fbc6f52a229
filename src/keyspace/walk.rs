//! Walking everything the key space reaches: structure and checksum verification (open,
//! NVM.CHECK, nvm-tool) and the rebuild of free space from what is reachable.
//!
//! Invariants: every reachable block is marked exactly once (a block reached twice is
//! damage); free space is rebuilt only from a walk that found no problem.

use super::layout::*;
use super::store::corrupt;
use super::{CheckReport, KeySpace, Problem, StoreError};
use crate::log::BlobRef;

impl KeySpace {
    /// Walks everything the key space reaches, checking structure (and item checksums
    /// with `verify`). Changes nothing: blobs of unfolded records are not reachable from
    /// the key space, so free space is only rebuilt at open, from the log's live blobs.
    pub fn check(&mut self, verify: bool) -> Result<CheckReport, StoreError> {
        self.walk(verify, None)
    }

    /// The walk; with `live_blobs` (at open) it also marks those and, when nothing is
    /// wrong, rebuilds the free lists from what is marked.
    pub(super) fn walk(
        &mut self,
        verify: bool,
        live_blobs: Option<&[BlobRef]>,
    ) -> Result<CheckReport, StoreError> {
        let walked = self.walk_marking(verify, live_blobs.unwrap_or(&[]), &mut |_, _, _| Ok(()))?;
        if live_blobs.is_some() && walked.report.problems.is_empty() {
            let runs = walked.reachable().collect::<Vec<_>>();
            self.store.rebuild_free(runs.into_iter());
        }
        Ok(walked.report)
    }

    /// Marks every block the key space reaches (and `blobs`), checking structure (and
    /// checksums with `verify`), and calls `on_key(db, key item, inline)` for every key whose
    /// value walked without a problem. A damaged key is reported and skipped; the walk
    /// goes on with the next one.
    pub(super) fn walk_marking(
        &self,
        verify: bool,
        blobs: &[BlobRef],
        on_key: &mut dyn FnMut(u32, u64, Option<Inline>) -> Result<(), StoreError>,
    ) -> Result<Walked, StoreError> {
        let (start, _) = self.store.heap_range();
        let top = self.store.top();
        let grains = ((top - start) / GRAIN) as usize;
        let mut marks = vec![0u64; grains.div_ceil(64)];
        let mut report = CheckReport::default();
        let mut mark = |off: u64, len: u64, report: &mut CheckReport| -> bool {
            if off < start
                || off.checked_add(len).is_none_or(|e| e > top)
                || !off.is_multiple_of(GRAIN)
                || !len.is_multiple_of(GRAIN)
            {
                report.problems.push(Problem {
                    offset: off,
                    what: format!("block of {len} bytes outside the used heap"),
                });
                return false;
            }
            report.blocks += 1;
            report.bytes_reachable += len;
            let first = ((off - start) / GRAIN) as usize;
            if !mark_grains(&mut marks, first, (len / GRAIN) as usize) {
                report.problems.push(Problem {
                    offset: off,
                    what: "block reached twice (overlapping or shared)".into(),
                });
                return false;
            }
            true
        };
        if let Some((dir, len)) = self.db_dir_block()? {
            mark(dir, size_class(len), &mut report);
        }
        let functions = self.store.read_word(self.layout.root + ROOT_FUNCTIONS)?;
        if functions != 0 {
            match self.item_parts(functions, verify) {
                Ok((h, _, _)) => {
                    mark(functions, h.len, &mut report);
                }
                Err(e) => report.problems.push(problem_of(e)?),
            }
        }
        for (db, t) in self.dbs_with_tables()? {
            let mut keys = |item: u64, inline: Option<Inline>| on_key(db, item, inline);
            let res = self.walk_coll(t, VT_KEYS, verify, &mut report, &mut mark, &mut keys);
            if let Err(e) = res {
                report.problems.push(problem_of(e)?);
            }
        }
        for b in blobs {
            mark(b.offset, size_class(b.len), &mut report);
        }
        Ok(Walked {
            report,
            marks,
            grains,
            start,
        })
    }

    pub(super) fn walk_coll(
        &self,
        off: u64,
        expect: u8,
        verify: bool,
        report: &mut CheckReport,
        mark: &mut impl FnMut(u64, u64, &mut CheckReport) -> bool,
        on_key: &mut dyn FnMut(u64, Option<Inline>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let c = self.coll(off)?;
        if c.vtype != expect {
            return Err(corrupt(
                off,
                format!("collection of type {} where {expect} belongs", c.vtype),
            ));
        }
        let slots_len = size_class(c.cap * slot_size(c.vtype));
        if !mark(off, COLL_LEN, report) || !mark(c.slots, slots_len, report) {
            return Ok(());
        }
        if c.vtype == VT_STREAM && c.extra != 0 {
            let h = self.header_at(c.extra)?;
            if verify {
                self.item_parts(c.extra, true)?;
            }
            mark(c.extra, h.len, report);
        }
        if c.vtype == VT_CHUNKS && (c.count != c.extra.div_ceil(CHUNK) || c.aux != 0) {
            return Err(corrupt(
                off,
                format!("chunked string of {} bytes in {} chunks", c.extra, c.count),
            ));
        }
        let is_table = slot_size(c.vtype) == TABLE_SLOT;
        for (slot_hash, item) in self.entries(&c)? {
            if item == EMPTY && c.vtype == VT_CHUNKS {
                continue;
            }
            let problems = report.problems.len();
            let (h, a, b) = match self.item_parts(item, verify) {
                Ok(parts) => parts,
                // A damaged key is one problem; the walk goes on with the next key.
                Err(e) if expect == VT_KEYS => {
                    report.problems.push(problem_of(e)?);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if c.vtype == VT_CHUNKS && a.len() as u64 > CHUNK {
                return Err(corrupt(item, "a string chunk longer than a chunk"));
            }
            if is_table && slot_hash != hash(&a) {
                // Otherwise lookups miss the item.
                report.problems.push(Problem {
                    offset: item,
                    what: "the table slot's hash does not match its item".into(),
                });
            }
            if !mark(item, h.len, report) {
                continue;
            }
            if expect == VT_KEYS {
                report.keys += 1;
                if h.kind != KIND_KEY {
                    report.problems.push(Problem {
                        offset: item,
                        what: "key table slot points at a non-key".into(),
                    });
                    continue;
                }
                if h.vtype != VT_STRING {
                    let coll = self.store.read_word(item + KEY_COLL)?;
                    let mut no_keys = |_: u64, _: Option<Inline>| Ok(());
                    let res = self.walk_coll(coll, h.vtype, verify, report, mark, &mut no_keys);
                    if let Err(e) = res {
                        report.problems.push(problem_of(e)?);
                    }
                }
                if report.problems.len() == problems {
                    // An inline string's parts are read already: hand them over.
                    let inline = (h.vtype == VT_STRING).then_some(Inline { key: a, value: b });
                    on_key(item, inline)?;
                }
            } else {
                report.members += 1;
            }
        }
        Ok(())
    }
}

/// A key item's key and inline string value, as the walk read them.
pub struct Inline {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// What a marking walk found: its report, and the grains it reached.
pub struct Walked {
    pub report: CheckReport,
    marks: Vec<u64>,
    grains: usize,
    start: u64,
}

impl Walked {
    /// The reachable runs of the heap, as sorted (offset, length) pairs.
    pub fn reachable(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        marked_runs(&self.marks, self.grains)
            .map(|(g, n)| (self.start + g as u64 * GRAIN, n as u64 * GRAIN))
    }
}

/// Sets bits `first..first + count` of `marks`, a word at a time; false (and nothing
/// set) if any of them was set already.
pub(super) fn mark_grains(marks: &mut [u64], first: usize, count: usize) -> bool {
    let spans = || {
        let mut g = first;
        let end = first + count;
        std::iter::from_fn(move || {
            if g >= end {
                return None;
            }
            let (w, b) = (g / 64, g % 64);
            let n = (64 - b).min(end - g);
            g += n;
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << b
            };
            Some((w, mask))
        })
    };
    if spans().any(|(w, mask)| marks[w] & mask != 0) {
        return false;
    }
    spans().for_each(|(w, mask)| marks[w] |= mask);
    true
}

/// The runs (first grain, grains) of set bits among the first `grains` bits of `marks`,
/// skipping whole words that are all set or all clear.
pub(super) fn marked_runs(
    marks: &[u64],
    grains: usize,
) -> impl Iterator<Item = (usize, usize)> + '_ {
    let is_set = move |g: usize| g < grains && marks[g / 64] & (1 << (g % 64)) != 0;
    // The first grain at or after `g` whose bit is `set`, or `grains`.
    let next = move |mut g: usize, set: bool| {
        while g < grains {
            let word = if set { marks[g / 64] } else { !marks[g / 64] };
            if g.is_multiple_of(64) && word == 0 {
                g += 64;
            } else if is_set(g) == set {
                return g;
            } else {
                g += 1;
            }
        }
        grains
    };
    let mut g = 0;
    std::iter::from_fn(move || {
        let first = next(g, true);
        if first >= grains {
            return None;
        }
        g = next(first, false);
        Some((first, g - first))
    })
}

pub(super) fn problem_of(e: StoreError) -> Result<Problem, StoreError> {
    match e {
        StoreError::Corrupt { offset, reason } => Ok(Problem {
            offset,
            what: reason,
        }),
        other => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::{mark_grains, marked_runs};
    use proptest::prelude::*;

    /// The runs of set bits, one bit at a time (the reference for `marked_runs`).
    fn runs_bit_by_bit(marks: &[u64], grains: usize) -> Vec<(usize, usize)> {
        let set = |g: usize| marks[g / 64] & (1 << (g % 64)) != 0;
        let mut runs = Vec::new();
        let mut g = 0;
        while g < grains {
            if set(g) {
                let first = g;
                while g < grains && set(g) {
                    g += 1;
                }
                runs.push((first, g - first));
            } else {
                g += 1;
            }
        }
        runs
    }

    proptest! {
        #[test]
        fn marking_matches_bit_by_bit(
            blocks in proptest::collection::vec((0usize..700, 1usize..150), 0..40),
        ) {
            let grains: usize = 900;
            let mut marks = vec![0u64; grains.div_ceil(64)];
            let mut reference = vec![false; grains];
            for (first, count) in blocks {
                let count = count.min(grains - first.min(grains));
                if count == 0 {
                    continue;
                }
                let overlaps = reference[first..first + count].iter().any(|&b| b);
                let before = marks.clone();
                prop_assert_eq!(mark_grains(&mut marks, first, count), !overlaps);
                if overlaps {
                    prop_assert_eq!(&marks, &before, "a refused mark must set nothing");
                } else {
                    reference[first..first + count].iter_mut().for_each(|b| *b = true);
                }
            }
            for (g, &b) in reference.iter().enumerate() {
                prop_assert_eq!(marks[g / 64] & (1 << (g % 64)) != 0, b);
            }
            let runs: Vec<_> = marked_runs(&marks, grains).collect();
            prop_assert_eq!(runs, runs_bit_by_bit(&marks, grains));
        }
    }

    #[test]
    fn runs_across_whole_words() {
        let mut marks = vec![0u64; 4];
        assert!(mark_grains(&mut marks, 10, 180));
        assert!(!mark_grains(&mut marks, 189, 1), "the last grain is taken");
        assert!(mark_grains(&mut marks, 190, 2));
        assert_eq!(marked_runs(&marks, 256).collect::<Vec<_>>(), [(10, 182)]);
        assert_eq!(marked_runs(&marks, 100).collect::<Vec<_>>(), [(10, 90)]);
    }
}
