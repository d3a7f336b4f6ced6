//! Broadcast as a binomial scatter followed by a ring all-gather (van de
//! Geijn).
//!
//! The buffer is cut into `p` pieces, one per rank relative to the root.
//! A binomial tree scatters them (each rank gets its subtree's pieces, then
//! keeps its own), and a ring all-gather completes every rank's copy.
//! Cost: `(⌈log₂ p⌉ + p − 1) α + 2 (p−1)/p · nβ`: about half the bandwidth
//! term of the binomial tree, at the price of more messages; for long
//! messages. Any `p`.

use crate::schedule::{Piece, Schedule};
use crate::util::piece;

/// Rank `me` of `n`'s rounds for `len` elements in the work buffer from
/// `root`.
pub(crate) fn schedule(n: usize, me: usize, len: usize, root: usize) -> Schedule {
    let mut s = Schedule::with_capacity(4 * n);
    if n == 1 {
        return s.build();
    }
    // Pieces `a..b` (relative ranks) as a range of elements.
    let span = |a: usize, b: usize| piece(len, n, a).start..piece(len, n, b.min(n) - 1).end;
    let rel = (me + n - root) % n;
    let actual = |r: usize| (r + root) % n;

    // Scatter: receive this subtree's pieces from the parent, then pass
    // each child its subtree's, largest first, one at a time.
    let mut mask = 1;
    while mask < n {
        if rel & mask != 0 {
            s.recv(actual(rel - mask), Piece::work(span(rel, rel + mask))).end_round();
            break;
        }
        mask <<= 1;
    }
    mask >>= 1;
    while mask > 0 {
        if rel + mask < n {
            s.send(actual(rel + mask), Piece::work(span(rel + mask, rel + 2 * mask))).end_round();
        }
        mask >>= 1;
    }

    // Ring all-gather of the pieces, in relative numbering.
    let (right, left) = ((me + 1) % n, (me + n - 1) % n);
    for step in 0..n - 1 {
        let out = piece(len, n, (rel + n - step) % n);
        let inc = piece(len, n, (rel + 2 * n - step - 1) % n);
        s.send(right, Piece::work(out)).recv(left, Piece::work(inc)).end_round();
    }
    s.build()
}
