//! Rabenseifner's reduction: reduce-scatter by recursive halving, then a
//! binomial gather of the reduced blocks.
//!
//! Cost: `2 log₂ p · α + 2 (p−1)/p · nβ + (p−1)/p · nγ` on a power of two;
//! otherwise the first `2(p − 2^⌊log₂ p⌋)` ranks fold in pairs first
//! (`+ α + nβ + nγ`). The blocks meet at the first folded rank, which
//! passes the result to the root if that is another rank (`+ α + nβ`).
//! Each rank combines only its share of the vector, so this wins for long
//! vectors. Commutative operations only.

use super::halving::Folded;
use crate::schedule::{Piece, Schedule};
use crate::util::log2_ceil;

/// Rank `me` of `n`'s rounds reducing `len` elements into `root`'s work
/// buffer, each rank's contribution read from the input first when
/// `input` is set, else already in its work buffer.
pub(crate) fn schedule(n: usize, me: usize, len: usize, root: usize, input: bool) -> Schedule {
    let mut s = Schedule::with_capacity(8 * log2_ceil(n) + 8);
    if input {
        s.copy(Piece::input(0..len), Piece::work(0..len));
    }
    let folded = Folded::new(n, me);
    folded.fold(&mut s, len);
    if let Some(newrank) = folded.newrank {
        folded.reduce_scatter(&mut s, len, false, newrank);
        folded.gather(&mut s, len, newrank);
    }
    let holder = folded.rank_of(0);
    if holder != root {
        if me == holder {
            s.send(root, Piece::work(0..len)).end_round();
        } else if me == root {
            s.recv(holder, Piece::work(0..len)).end_round();
        }
    }
    s.build()
}
