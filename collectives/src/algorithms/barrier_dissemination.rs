//! Dissemination barrier (Hensgen, Finkel and Manber).
//!
//! In round `k` (`k = 1, 2, 4, …`) rank `r` signals `r + k` and waits for
//! `r − k` (modulo `p`). After `⌈log₂ p⌉` rounds every rank has heard,
//! directly or not, from every other. Cost: `⌈log₂ p⌉ α`. Any `p`.

use crate::schedule::{Piece, Schedule};
use crate::util::log2_ceil;

/// Rank `me` of `n`'s rounds: an empty message each way.
pub(crate) fn schedule(n: usize, me: usize) -> Schedule {
    let mut s = Schedule::with_capacity(3 * log2_ceil(n));
    let mut k = 1;
    while k < n {
        s.send((me + k) % n, Piece::work(0..0)).recv((me + n - k) % n, Piece::work(0..0));
        s.end_round();
        k <<= 1;
    }
    s.build()
}
