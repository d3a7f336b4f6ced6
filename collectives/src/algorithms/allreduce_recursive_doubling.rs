//! Recursive-doubling all-reduce.
//!
//! In round `k` rank `r` exchanges its whole partial result with `r ⊕ 2^k`
//! and combines, the lower run of ranks on the left, so the operation may
//! be non-commutative; both partners compute the same operands in the same
//! order, so every rank ends with bitwise-identical results. When `p` is
//! not a power of two, the first `2(p − 2^⌊log₂ p⌋)` ranks fold in pairs
//! before and unfold after. Cost: `⌈log₂ p⌉ (α + nβ + nγ)` (`+ 2α + 2nβ +
//! nγ` off powers of two). Best for short vectors. Any `p`, any operation.

use super::halving::Folded;
use crate::schedule::{Piece, Schedule};
use crate::util::log2_ceil;

/// Rank `me` of `n`'s rounds for a vector of `len` elements, read from the
/// input first when `input` is set, else already in the work buffer.
pub(crate) fn schedule(n: usize, me: usize, len: usize, input: bool) -> Schedule {
    let mut s = Schedule::with_capacity(4 * log2_ceil(n) + 8);
    if input {
        s.copy(Piece::input(0..len), Piece::work(0..len));
    }
    let folded = Folded::new(n, me);
    folded.fold(&mut s, len);
    if let Some(newrank) = folded.newrank {
        s.need_scratch(len);
        let mut mask = 1;
        while mask < folded.pof2 {
            let partner = newrank ^ mask;
            let peer = folded.rank_of(partner);
            s.send(peer, Piece::work(0..len)).recv(peer, Piece::scratch(0..len));
            s.reduce(Piece::work(0..len), Piece::scratch(0..len), newrank < partner).end_round();
            mask <<= 1;
        }
    }
    folded.unfold(&mut s, len);
    s.build()
}
