//! Pairwise-exchange all-to-all, with counts and displacements per rank
//! (also `all_to_all_v`).
//!
//! In step `s` (`1 ≤ s < p`) rank `r` sends its block for `r + s` and
//! receives the block from `r − s`; step 0 is a local copy. One exchange
//! at a time keeps the network free of contention. Cost: `(p−1) α + nβ`
//! for `n` bytes sent per rank. Any `p`, any counts; for medium and long
//! blocks.

use std::ops::Range;

use crate::schedule::{Piece, Schedule};

/// Rank `me` of `n`'s rounds: `sblocks[r]` is what goes to rank `r` from
/// the input, `rblocks[r]` where rank `r`'s block lands in the work buffer.
/// Its own block is copied when both lengths agree (the caller reports the
/// mismatch otherwise).
pub(crate) fn schedule(
    n: usize,
    me: usize,
    sblocks: &[Range<usize>],
    rblocks: &[Range<usize>],
) -> Schedule {
    let mut s = Schedule::with_capacity(3 * n + 1);
    if sblocks[me].len() == rblocks[me].len() {
        s.copy(Piece::input(sblocks[me].clone()), Piece::work(rblocks[me].clone())).end_round();
    }
    for step in 1..n {
        let to = (me + step) % n;
        let from = (me + n - step) % n;
        s.send(to, Piece::input(sblocks[to].clone()));
        s.recv(from, Piece::work(rblocks[from].clone())).end_round();
    }
    s.build()
}
