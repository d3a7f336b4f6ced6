//! Ring all-gather, with a count per rank (also `all_gather_v`).
//!
//! In `p − 1` steps each rank passes to its right neighbour the block it
//! received last (its own first). Cost: `(p−1) α + (p−1)/p · nβ` for `n`
//! bytes gathered in all: the least data and no long jumps, the most
//! messages; for long messages. Any `p`, any counts.

use std::ops::Range;

use crate::schedule::{Piece, Schedule};

/// Rank `me` of `n`'s rounds: `blocks[r]` is where rank `r`'s block lies
/// in the work buffer; this rank's is copied there from the input first
/// when `input` is set, else already in place.
pub(crate) fn schedule(n: usize, me: usize, blocks: &[Range<usize>], input: bool) -> Schedule {
    let mut s = Schedule::with_capacity(3 * n + 1);
    if input {
        s.copy(Piece::input(0..blocks[me].len()), Piece::work(blocks[me].clone())).end_round();
    }
    let (right, left) = ((me + 1) % n, (me + n - 1) % n);
    for step in 0..n.saturating_sub(1) {
        let out = blocks[(me + n - step) % n].clone();
        let inc = blocks[(me + 2 * n - step - 1) % n].clone();
        s.send(right, Piece::work(out)).recv(left, Piece::work(inc)).end_round();
    }
    s.build()
}
