//! Linear gather, with a count per rank (also `gather_v`).
//!
//! Every rank sends its block straight to the root, which has a receive
//! posted for each. Cost at the root: `(p−1) α + nβ` for `n` bytes
//! gathered; the other ranks send once. Any `p`, any counts.

use std::ops::Range;

use crate::schedule::{Piece, Schedule};

/// Rank `me` of `n`'s rounds: at the root, `blocks[r]` is where rank `r`'s
/// block goes in the work buffer (its own copied from the input when
/// `input` is set, else in place), every receive posted at once; elsewhere
/// `len` elements sent from the input (or the work buffer).
pub(crate) fn schedule(
    n: usize,
    me: usize,
    root: usize,
    blocks: &[Range<usize>],
    len: usize,
    input: bool,
) -> Schedule {
    let mut s = Schedule::with_capacity(n + 2);
    let mine = if input { Piece::input(0..len) } else { Piece::work(0..len) };
    if me != root {
        s.send(root, mine);
        return s.build();
    }
    for (r, block) in blocks.iter().enumerate() {
        if r != me {
            s.recv(r, Piece::work(block.clone()));
        }
    }
    if input {
        s.copy(mine, Piece::work(blocks[me].clone()));
    }
    s.build()
}
