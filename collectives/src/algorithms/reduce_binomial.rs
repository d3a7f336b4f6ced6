//! Binomial-tree reduction.
//!
//! Rank `r` combines the partial results of its subtree (`r + 2^j` for the
//! powers of two below its lowest set bit) and sends the total to its
//! parent. For a commutative operation the tree is rooted at the root; for
//! one that is not, it is rooted at rank 0 so that every combination joins
//! two contiguous runs of ranks in order, and rank 0 sends the result to
//! the root. Cost: `⌈log₂ p⌉ (α + nβ + nγ)` (plus `α + nβ` for a
//! non-commutative operation with a root other than 0). Any `p`, any
//! operation.

use crate::schedule::{Buf, Piece, Schedule};
use crate::util::log2_ceil;

/// Rank `me` of `n`'s rounds reducing `len` elements into `root`'s work
/// buffer. With `input`, each rank's contribution is read from the input:
/// a leaf sends it from there, and a rank with children receives its
/// first child's total into its work buffer and combines its input into
/// that — no copy of the input. Without, the contribution is already in
/// the work buffer (which every rank with children needs, to combine its
/// subtree's). The tree is rooted at 0 unless `commutative`.
pub(crate) fn schedule(
    n: usize,
    me: usize,
    len: usize,
    root: usize,
    commutative: bool,
    input: bool,
) -> Schedule {
    let mut s = Schedule::with_capacity(2 * log2_ceil(n) + 4);
    let tree_root = if commutative { root } else { 0 };
    let rel = (me + n - tree_root) % n;
    // Where this rank's partial result lies: the input until a child's
    // total has been combined with it.
    let mut mine = if input { Piece::input(0..len) } else { Piece::work(0..len) };
    let mut mask = 1;
    while mask < n {
        if rel & mask != 0 {
            s.send((rel - mask + tree_root) % n, mine.clone()).end_round();
            break;
        }
        if rel + mask < n {
            let child = (rel + mask + tree_root) % n;
            if mine.buf == Buf::Input {
                // The child's run of ranks follows this rank's: the input
                // goes on the left.
                s.recv(child, Piece::work(0..len));
                s.reduce(Piece::work(0..len), mine, false).end_round();
                mine = Piece::work(0..len);
            } else {
                s.need_scratch(len).recv(child, Piece::scratch(0..len));
                s.reduce(Piece::work(0..len), Piece::scratch(0..len), true).end_round();
            }
        }
        mask <<= 1;
    }
    if me == tree_root && mine.buf == Buf::Input {
        // No children (one rank): the result is the input.
        s.copy(mine, Piece::work(0..len)).end_round();
    }
    if tree_root != root {
        if me == tree_root {
            s.send(root, Piece::work(0..len)).end_round();
        } else if me == root {
            s.recv(tree_root, Piece::work(0..len)).end_round();
        }
    }
    s.build()
}
