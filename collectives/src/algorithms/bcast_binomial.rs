//! Binomial-tree broadcast.
//!
//! Ranks are numbered relative to the root; rank `r` receives from `r`
//! minus its lowest set bit, then forwards to `r + 2^j` for each smaller
//! power of two, largest subtree first and one at a time (sent together,
//! long messages would share the bandwidth and delay the subtree that
//! has the most forwarding left). Cost: `⌈log₂ p⌉ (α + nβ)`. Best for short
//! messages and small communicators. Any `p`.

use crate::schedule::{Piece, Schedule};
use crate::util::log2_ceil;

/// Rank `me` of `n`'s rounds for `len` elements in the work buffer from
/// `root`.
pub(crate) fn schedule(n: usize, me: usize, len: usize, root: usize) -> Schedule {
    let mut s = Schedule::with_capacity(2 * log2_ceil(n) + 2);
    let rel = (me + n - root) % n;
    let mut mask = 1;
    while mask < n {
        if rel & mask != 0 {
            s.recv((rel - mask + root) % n, Piece::work(0..len)).end_round();
            break;
        }
        mask <<= 1;
    }
    mask >>= 1;
    while mask > 0 {
        if rel + mask < n {
            s.send((rel + mask + root) % n, Piece::work(0..len)).end_round();
        }
        mask >>= 1;
    }
    s.build()
}
