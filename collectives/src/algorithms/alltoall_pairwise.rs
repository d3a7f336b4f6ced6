//! Pairwise-exchange all-to-all, with counts and displacements per rank
//! (also `all_to_all_v`).
//!
//! In step `s` (`1 ≤ s < p`) rank `r` sends its block for `r + s` and
//! receives the block from `r − s`; step 0 is a local copy. One exchange
//! at a time keeps the network free of contention. Cost: `(p−1) α + nβ`
//! for `n` bytes sent per rank. Any `p`, any counts; for medium and long
//! blocks.

use std::ops::Range;

use bytemuck::Pod;
use hpcomm_runtime::Result;

use crate::channel::Channel;

pub(crate) fn all_to_all<T: Pod>(
    ch: &Channel,
    send: &[T],
    sblocks: &[Range<usize>],
    recv: &mut [T],
    rblocks: &[Range<usize>],
) -> Result<()> {
    let (n, me) = (ch.size(), ch.rank());
    let (own_s, own_r) = (sblocks[me].clone(), rblocks[me].clone());
    if own_s.len() == own_r.len() {
        recv[own_r].copy_from_slice(&send[own_s]);
    } else {
        ch.check(Ok(own_s.len()), own_r.len(), me)?;
    }
    for step in 1..n {
        let to = (me + step) % n;
        let from = (me + n - step) % n;
        ch.sendrecv(&send[sblocks[to].clone()], to, &mut recv[rblocks[from].clone()], from)?;
    }
    Ok(())
}
