//! Linear scatter, with a count per rank (also `scatter_v`).
//!
//! The root starts a send of each rank's block at once and waits for them
//! all. Cost at the root: `(p−1) α + nβ` for `n` bytes scattered; the
//! other ranks receive once. Any `p`, any counts.

use std::ops::Range;

use crate::schedule::{Piece, Schedule};

/// Rank `me` of `n`'s rounds: at the root, `blocks[r]` is where rank `r`'s
/// block lies in the input (or, without one, the work buffer), every send
/// posted at once and its own copied to the work buffer when there is an
/// input; elsewhere `len` elements received into the work buffer.
pub(crate) fn schedule(
    n: usize,
    me: usize,
    root: usize,
    blocks: &[Range<usize>],
    len: usize,
    input: bool,
) -> Schedule {
    let mut s = Schedule::with_capacity(n + 2);
    if me != root {
        s.recv(root, Piece::work(0..len));
        return s.build();
    }
    let from = |r: Range<usize>| if input { Piece::input(r) } else { Piece::work(r) };
    for (r, block) in blocks.iter().enumerate() {
        if r != me {
            s.send(r, from(block.clone()));
        }
    }
    if input {
        s.copy(from(blocks[me].clone()), Piece::work(0..len));
    }
    s.build()
}
