//! Ring reduce-scatter, with a count per rank.
//!
//! In `p − 1` steps each rank passes one rank's block to its right
//! neighbour and combines the one arriving from its left into its copy;
//! the last block it combines is its own. Cost: `(p−1) α + (p−1)/p ·
//! (nβ + nγ)` for a vector of `n`. Commutative operations only. Any `p`,
//! any counts.

use std::ops::Range;

use crate::schedule::{Piece, Schedule};

/// Rank `me` of `n`'s rounds: `blocks[r]` is rank `r`'s part of the whole
/// vector of `total` elements, read from the input when `input` is set,
/// else from the work buffer; the vector is combined in scratch, and this
/// rank's part of the result is copied to the start of the work buffer.
pub(crate) fn schedule(n: usize, me: usize, blocks: &[Range<usize>], input: bool) -> Schedule {
    let total = blocks.iter().map(|b| b.end).max().unwrap_or(0);
    let most = blocks.iter().map(|b| b.len()).max().unwrap_or(0);
    let mut s = Schedule::with_capacity(4 * n + 2);
    let whole = if input { Piece::input(0..total) } else { Piece::work(0..total) };
    s.need_scratch(total + most).copy(whole, Piece::scratch(0..total)).end_round();
    let (right, left) = ((me + 1) % n, (me + n - 1) % n);
    for step in 0..n.saturating_sub(1) {
        let out = blocks[(me + 2 * n - step - 1) % n].clone();
        let inc = blocks[(me + 2 * n - step - 2) % n].clone();
        let tmp = Piece::scratch(total..total + inc.len());
        s.send(right, Piece::scratch(out)).recv(left, tmp.clone());
        s.reduce(Piece::scratch(inc), tmp, false).end_round();
    }
    let mine = blocks[me].clone();
    s.copy(Piece::scratch(mine.clone()), Piece::work(0..mine.len()));
    s.build()
}
