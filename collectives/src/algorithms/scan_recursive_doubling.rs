//! Recursive-doubling scan and exclusive scan.
//!
//! Each rank keeps the combination of its aligned group of ranks so far
//! (`partial`) and its own prefix (`result`). In round `k` it exchanges
//! `partial` with `r ⊕ 2^k`; what comes from a lower rank is joined on the
//! left of both, what comes from a higher one on the right of `partial`
//! only. Runs stay contiguous, so the operation may be non-commutative.
//! Cost: `⌈log₂ p⌉ (α + nβ + 2nγ)`. Any `p`, any operation.

use crate::schedule::{Piece, Schedule};
use crate::util::log2_ceil;

/// Rank `me` of `n`'s rounds for a prefix of `len` elements into the work
/// buffer: inclusive of this rank's contribution or, for `exclusive`, of
/// the ranks before it only (rank 0's work buffer is then never written).
/// The contribution is read from the input when `input` is set, else from
/// the work buffer. Scratch holds the running total of this rank's run of
/// ranks and the incoming one.
pub(crate) fn schedule(n: usize, me: usize, len: usize, exclusive: bool, input: bool) -> Schedule {
    let mut s = Schedule::with_capacity(3 * log2_ceil(n) + 3);
    let (partial, incoming) = (Piece::scratch(0..len), Piece::scratch(len..2 * len));
    let (mine, work) =
        (if input { Piece::input(0..len) } else { Piece::work(0..len) }, Piece::work(0..len));
    s.need_scratch(2 * len).copy(mine.clone(), partial.clone());
    if input && !exclusive {
        s.copy(mine, work.clone());
    }
    s.end_round();
    // For the exclusive scan, whether the work buffer holds a prefix yet.
    let mut have = !exclusive;
    let mut mask = 1;
    while mask < n {
        let partner = me ^ mask;
        if partner < n {
            s.send(partner, partial.clone()).recv(partner, incoming.clone());
            if partner < me {
                s.reduce(partial.clone(), incoming.clone(), false);
                if have {
                    s.reduce(work.clone(), incoming.clone(), false);
                } else {
                    s.copy(incoming.clone(), work.clone());
                    have = true;
                }
            } else {
                s.reduce(partial.clone(), incoming.clone(), true);
            }
            s.end_round();
        }
        mask <<= 1;
    }
    s.build()
}
