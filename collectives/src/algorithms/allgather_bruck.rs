//! Bruck's all-gather (equal blocks).
//!
//! Blocks are kept rotated so that this rank's own comes first; in round
//! `k` (`k = 1, 2, 4, …`) rank `r` sends its first `min(k, p − k)` blocks
//! to `r − k` and appends those of `r + k`. A final rotation puts them in
//! rank order. Cost: `⌈log₂ p⌉ α + (p−1)/p · nβ` plus a local copy of `n`:
//! the fewest messages for any `p`; for short and medium messages.

use crate::schedule::{Piece, Schedule};
use crate::util::log2_ceil;

/// Rank `me` of `n`'s rounds for `n` blocks of `block` elements in the work
/// buffer; this rank's is read from the input when `input` is set, else
/// from its place. The rotated blocks gather in scratch.
pub(crate) fn schedule(n: usize, me: usize, block: usize, input: bool) -> Schedule {
    let mut s = Schedule::with_capacity(3 * log2_ceil(n) + n + 2);
    let b = |i: usize| i * block..(i + 1) * block;
    let mine = if input { Piece::input(0..block) } else { Piece::work(b(me)) };
    s.need_scratch(n * block).copy(mine, Piece::scratch(b(0))).end_round();
    let mut k = 1;
    while k < n {
        let count = k.min(n - k);
        s.send((me + n - k) % n, Piece::scratch(0..count * block));
        s.recv((me + k) % n, Piece::scratch(k * block..(k + count) * block)).end_round();
        k <<= 1;
    }
    // Scratch block i is rank (me + i)'s.
    for i in 0..n {
        s.copy(Piece::scratch(b(i)), Piece::work(b((me + i) % n)));
    }
    s.build()
}
