//! Sorted-set order and the ranges of ZREMRANGEBYRANK / BYSCORE / BYLEX, as the server
//! defines them, shared by the reference model and the key space so both replay a range
//! effect identically.
//!
//! Order: by score (as doubles compare: -0.0 equals 0.0), then by member bytes (memcmp,
//! then length: the server's `sdscmp`). Rank indexes count in that order; negative ones
//! count from the end. A lex range selects the members whose bytes fall within its
//! bounds: the server's own lex commands assume every score is equal (with mixed scores
//! their result is unspecified), so the capture logs a lex range only when that set
//! semantics is provably what the server did.

use std::cmp::Ordering;

/// One end of a score range: `(1.5` is `exclusive`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreBound {
    pub value: f64,
    pub exclusive: bool,
}

/// One end of a lex range: `-`, `+`, `[member` or `(member`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LexBound {
    NegInf,
    PosInf,
    Inclusive(Vec<u8>),
    Exclusive(Vec<u8>),
}

/// The range of a ZREMRANGEBY* command.
#[derive(Debug, Clone, PartialEq)]
pub enum ZRange {
    Rank { start: i64, stop: i64 },
    Score { min: ScoreBound, max: ScoreBound },
    Lex { min: LexBound, max: LexBound },
}

/// The server's order of two zset elements.
pub fn zset_order(a: (f64, &[u8]), b: (f64, &[u8])) -> Ordering {
    a.0.partial_cmp(&b.0)
        .unwrap_or(Ordering::Equal)
        .then_with(|| a.1.cmp(b.1))
}

impl ScoreBound {
    fn admits_above(&self, score: f64) -> bool {
        if self.exclusive {
            score > self.value
        } else {
            score >= self.value
        }
    }

    fn admits_below(&self, score: f64) -> bool {
        if self.exclusive {
            score < self.value
        } else {
            score <= self.value
        }
    }
}

impl LexBound {
    fn admits_above(&self, member: &[u8]) -> bool {
        match self {
            LexBound::NegInf => true,
            LexBound::PosInf => false,
            LexBound::Inclusive(m) => member >= m.as_slice(),
            LexBound::Exclusive(m) => member > m.as_slice(),
        }
    }

    fn admits_below(&self, member: &[u8]) -> bool {
        match self {
            LexBound::NegInf => false,
            LexBound::PosInf => true,
            LexBound::Inclusive(m) => member <= m.as_slice(),
            LexBound::Exclusive(m) => member < m.as_slice(),
        }
    }
}

impl ZRange {
    /// Which of `sorted` (elements in `zset_order`) the range selects: a mask of the
    /// same length.
    pub fn select(&self, sorted: &[(f64, &[u8])]) -> Vec<bool> {
        let len = sorted.len();
        match self {
            ZRange::Rank { start, stop } => {
                let (from, to) = rank_span(len, *start, *stop);
                (0..len).map(|i| i >= from && i < to).collect()
            }
            ZRange::Score { min, max } => sorted
                .iter()
                .map(|&(s, _)| min.admits_above(s) && max.admits_below(s))
                .collect(),
            ZRange::Lex { min, max } => sorted
                .iter()
                .map(|&(_, m)| min.admits_above(m) && max.admits_below(m))
                .collect(),
        }
    }
}

/// ZREMRANGEBYRANK's index arithmetic: the half-open span of ranks removed.
fn rank_span(len: usize, start: i64, stop: i64) -> (usize, usize) {
    let len_i = i64::try_from(len).unwrap_or(i64::MAX);
    let mut start = if start < 0 { start + len_i } else { start };
    let mut stop = if stop < 0 { stop + len_i } else { stop };
    if start < 0 {
        start = 0;
    }
    if start > stop || start >= len_i {
        return (0, 0);
    }
    if stop >= len_i {
        stop = len_i - 1;
    }
    (start as usize, (stop + 1) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted<'a>(items: &'a [(f64, &'a str)]) -> Vec<(f64, &'a [u8])> {
        let mut v: Vec<(f64, &[u8])> = items.iter().map(|(s, m)| (*s, m.as_bytes())).collect();
        v.sort_by(|a, b| zset_order(*a, *b));
        v
    }

    fn picked(range: &ZRange, items: &[(f64, &str)]) -> Vec<String> {
        let s = sorted(items);
        range
            .select(&s)
            .into_iter()
            .zip(&s)
            .filter(|(keep, _)| *keep)
            .map(|(_, (_, m))| String::from_utf8_lossy(m).into_owned())
            .collect()
    }

    #[test]
    fn ranks_follow_the_server() {
        let z = [(1.0, "a"), (2.0, "b"), (2.0, "a2"), (3.0, "c")];
        let r = |start, stop| picked(&ZRange::Rank { start, stop }, &z);
        assert_eq!(r(0, 0), ["a"]);
        assert_eq!(r(-1, -1), ["c"]);
        assert_eq!(r(1, 2), ["a2", "b"], "equal scores order by member");
        assert_eq!(r(-100, 1), ["a", "a2"]);
        assert_eq!(r(2, 1), Vec::<String>::new());
        assert_eq!(r(10, 20), Vec::<String>::new());
        assert_eq!(r(0, 100), ["a", "a2", "b", "c"]);
    }

    #[test]
    fn scores_and_lex_bounds() {
        let z = [(1.0, "a"), (2.0, "b"), (3.0, "c"), (-0.0, "z"), (0.0, "y")];
        let b = |value, exclusive| ScoreBound { value, exclusive };
        let s = |min, max| picked(&ZRange::Score { min, max }, &z);
        assert_eq!(s(b(1.0, true), b(3.0, false)), ["b", "c"]);
        assert_eq!(
            s(b(f64::NEG_INFINITY, false), b(0.0, false)),
            ["y", "z"],
            "-0.0 equals 0.0; then member order"
        );
        assert_eq!(s(b(2.0, true), b(2.0, true)), Vec::<String>::new());
        let same = [(0.0, "a"), (0.0, "b"), (0.0, "c"), (0.0, "cc")];
        let l = |min, max| picked(&ZRange::Lex { min, max }, &same);
        assert_eq!(
            l(LexBound::Inclusive(b"b".to_vec()), LexBound::PosInf),
            ["b", "c", "cc"]
        );
        assert_eq!(
            l(LexBound::NegInf, LexBound::Exclusive(b"c".to_vec())),
            ["a", "b"]
        );
        assert_eq!(
            l(
                LexBound::Exclusive(b"c".to_vec()),
                LexBound::Inclusive(b"cc".to_vec())
            ),
            ["cc"]
        );
        assert_eq!(l(LexBound::PosInf, LexBound::NegInf), Vec::<String>::new());
    }
}
