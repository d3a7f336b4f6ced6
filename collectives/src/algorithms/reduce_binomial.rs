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

use crate::schedule::{Piece, Schedule};
use crate::util::log2_ceil;

/// Rank `me` of `n`'s rounds reducing `len` elements into `root`'s work
/// buffer, each rank's contribution read from the input first when
/// `input` is set, else already in its work buffer (which every rank needs,
/// to combine its subtree's). The tree is rooted at 0 unless `commutative`.
pub(crate) fn schedule(
    n: usize,
    me: usize,
    len: usize,
    root: usize,
    commutative: bool,
    input: bool,
) -> Schedule {
    let mut s = Schedule::with_capacity(2 * log2_ceil(n) + 4);
    if input {
        s.copy(Piece::input(0..len), Piece::work(0..len));
    }
    let tree_root = if commutative { root } else { 0 };
    let rel = (me + n - tree_root) % n;
    let mut mask = 1;
    while mask < n {
        if rel & mask != 0 {
            s.send((rel - mask + tree_root) % n, Piece::work(0..len)).end_round();
            break;
        }
        if rel + mask < n {
            s.need_scratch(len).recv((rel + mask + tree_root) % n, Piece::scratch(0..len));
            // The child's run of ranks follows this rank's.
            s.reduce(Piece::work(0..len), Piece::scratch(0..len), true).end_round();
        }
        mask <<= 1;
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
