//! Rabenseifner's all-reduce: reduce-scatter by recursive halving, then
//! all-gather by recursive doubling.
//!
//! Cost: `2 log₂ p · α + 2 (p−1)/p · nβ + (p−1)/p · nγ` on a power of two;
//! otherwise the first `2(p − 2^⌊log₂ p⌋)` ranks fold in pairs before and
//! unfold after (`+ 2α + 2nβ + nγ`). Each rank combines only its share, so
//! this wins for long vectors with few `α`. Commutative operations only.
//! Every block is combined once and then copied, so all ranks get
//! bitwise-identical results.

use super::halving::Folded;
use crate::schedule::{Piece, Schedule};
use crate::util::log2_ceil;

/// Rank `me` of `n`'s rounds for a vector of `len` elements, read from the
/// input when `input` is set (on a power of two the first exchange reads
/// it in place, saving a copy), else already in the work buffer.
pub(crate) fn schedule(n: usize, me: usize, len: usize, input: bool) -> Schedule {
    let mut s = Schedule::with_capacity(8 * log2_ceil(n) + 8);
    let folded = Folded::new(n, me);
    let mut input = input;
    if input && !n.is_power_of_two() {
        s.copy(Piece::input(0..len), Piece::work(0..len));
        input = false;
    }
    folded.fold(&mut s, len);
    if let Some(newrank) = folded.newrank {
        folded.reduce_scatter(&mut s, len, input, newrank);
        folded.all_gather(&mut s, len, newrank);
    }
    folded.unfold(&mut s, len);
    s.build()
}
