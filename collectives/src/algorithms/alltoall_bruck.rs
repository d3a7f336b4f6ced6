//! Bruck's all-to-all (equal blocks).
//!
//! Blocks are rotated so that block `i` is the one for rank `r + i`; in
//! round `k` (`k = 1, 2, 4, …`) every block whose index has bit `k` set
//! travels `k` ranks on, packed into one message; a final rotation puts
//! the arrived blocks in rank order. Cost: `⌈log₂ p⌉ (α + n/2 · β)` plus
//! packing: far fewer messages than the pairwise exchange, more data; for
//! short blocks on many ranks. Any `p`.

use crate::schedule::{Piece, Schedule};

/// Rank `me` of `n`'s rounds for `n` blocks of `block` elements from the
/// input to the work buffer. Scratch holds the rotated blocks, then the
/// packed outgoing message, then the incoming one.
pub(crate) fn schedule(n: usize, me: usize, block: usize) -> Schedule {
    let b = |i: usize| i * block..(i + 1) * block;
    let half = n.div_ceil(2) * block;
    let (out, inc) = (n * block, n * block + half);
    let mut s = Schedule::with_capacity(6 * n);
    s.need_scratch(n * block + 2 * half);
    // Scratch block i: the block bound for rank me + i.
    for i in 0..n {
        s.copy(Piece::input(b((me + i) % n)), Piece::scratch(b(i)));
    }
    s.end_round();
    let mut k = 1;
    while k < n {
        let moving: Vec<usize> = (0..n).filter(|i| i & k != 0).collect();
        for (j, &i) in moving.iter().enumerate() {
            s.copy(Piece::scratch(b(i)), Piece::scratch(out + j * block..out + (j + 1) * block));
        }
        let len = moving.len() * block;
        s.end_round();
        s.send((me + k) % n, Piece::scratch(out..out + len));
        s.recv((me + n - k) % n, Piece::scratch(inc..inc + len));
        for (j, &i) in moving.iter().enumerate() {
            s.copy(Piece::scratch(inc + j * block..inc + (j + 1) * block), Piece::scratch(b(i)));
        }
        s.end_round();
        k <<= 1;
    }
    // Scratch block i came from rank me − i.
    for i in 0..n {
        s.copy(Piece::scratch(b(i)), Piece::work(b((me + n - i) % n)));
    }
    s.build()
}
