//! Pairwise-exchange reduce-scatter, with a count per rank, for any
//! operation.
//!
//! In step `s` (`1 ≤ s < p`) rank `r` sends its contribution to rank
//! `r + s`'s block and receives rank `r − s`'s contribution to its own;
//! once all have arrived it combines them in rank order, so the operation
//! may be non-commutative. Cost: `(p−1) α + (p−1)/p · nβ + (p−1)/p · nγ`
//! for a vector of `n` — the ring's, with the combining done at the end
//! and scratch for `p` copies of this rank's block. Any `p`, any counts.

use std::ops::Range;

use crate::schedule::{Piece, Schedule};

/// Rank `me` of `n`'s rounds: `blocks[r]` is rank `r`'s part of the whole
/// vector, read from the input when `input` is set, else from the work
/// buffer; this rank's part of the result goes to the start of the work
/// buffer.
pub(crate) fn schedule(n: usize, me: usize, blocks: &[Range<usize>], input: bool) -> Schedule {
    let m = blocks[me].len();
    let slot = |q: usize| Piece::scratch(q * m..(q + 1) * m);
    let whole = |r: Range<usize>| if input { Piece::input(r) } else { Piece::work(r) };
    let mut s = Schedule::with_capacity(4 * n + 2);
    s.need_scratch(n * m).copy(whole(blocks[me].clone()), slot(me)).end_round();
    for step in 1..n {
        let to = (me + step) % n;
        let from = (me + n - step) % n;
        s.send(to, whole(blocks[to].clone())).recv(from, slot(from)).end_round();
    }
    // In rank order: the lower ranks' contributions on the left.
    s.copy(slot(0), Piece::work(0..m));
    for q in 1..n {
        s.reduce(Piece::work(0..m), slot(q), true);
    }
    s.build()
}
