//! Ring all-reduce: a ring reduce-scatter, then a ring all-gather.
//!
//! The vector is cut into `p` pieces; in `p − 1` steps each rank passes
//! one piece to its right neighbour and combines the one from its left,
//! after which each rank holds one piece fully reduced; `p − 1` more steps
//! pass the reduced pieces round. Cost: `2(p−1) α + 2 (p−1)/p · nβ +
//! (p−1)/p · nγ`: the least data per rank, the most messages; for long
//! vectors. Commutative operations only. Each piece is combined once and
//! then copied, so all ranks get bitwise-identical results.

use crate::schedule::{Piece, Schedule};
use crate::util::piece;

/// Rank `me` of `n`'s rounds for a vector of `len` elements, read from the
/// input first when `input` is set, else already in the work buffer.
pub(crate) fn schedule(n: usize, me: usize, len: usize, input: bool) -> Schedule {
    let mut s = Schedule::with_capacity(8 * n);
    if input {
        s.copy(Piece::input(0..len), Piece::work(0..len));
    }
    let (right, left) = ((me + 1) % n, (me + n - 1) % n);
    s.need_scratch(piece(len, n, n - 1).len());
    for step in 0..n.saturating_sub(1) {
        let out = piece(len, n, (me + n - step) % n);
        let inc = piece(len, n, (me + 2 * n - step - 1) % n);
        let tmp = Piece::scratch(0..inc.len());
        s.send(right, Piece::work(out)).recv(left, tmp.clone());
        s.reduce(Piece::work(inc), tmp, false).end_round();
    }
    for step in 0..n.saturating_sub(1) {
        let out = piece(len, n, (me + 1 + n - step) % n);
        let inc = piece(len, n, (me + n - step) % n);
        s.send(right, Piece::work(out)).recv(left, Piece::work(inc)).end_round();
    }
    s.build()
}
