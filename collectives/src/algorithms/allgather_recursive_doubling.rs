//! Recursive-doubling all-gather (equal blocks, `p` a power of two).
//!
//! In round `k` rank `r` exchanges with `r ⊕ 2^k` the `2^k` blocks it has
//! gathered so far, which lie next to each other in the buffer, so no
//! copies are needed. Cost: `log₂ p · α + (p−1)/p · nβ`. Only for `p` a
//! power of two; selection and forcing fall back to Bruck's otherwise.

use crate::schedule::{Piece, Schedule};
use crate::util::log2_ceil;

/// Rank `me` of `n`'s rounds for `n` blocks of `block` elements in the work
/// buffer; this rank's is copied there from the input first when `input`
/// is set, else already in place.
pub(crate) fn schedule(n: usize, me: usize, block: usize, input: bool) -> Schedule {
    debug_assert!(n.is_power_of_two());
    let mut s = Schedule::with_capacity(3 * log2_ceil(n) + 2);
    if input {
        s.copy(Piece::input(0..block), Piece::work(me * block..(me + 1) * block)).end_round();
    }
    let mut mask = 1;
    while mask < n {
        let partner = me ^ mask;
        let mine = (me & !(mask - 1)) * block;
        let theirs = (partner & !(mask - 1)) * block;
        s.send(partner, Piece::work(mine..mine + mask * block));
        s.recv(partner, Piece::work(theirs..theirs + mask * block)).end_round();
        mask <<= 1;
    }
    s.build()
}
