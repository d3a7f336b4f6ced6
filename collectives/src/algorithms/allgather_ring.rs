//! Ring all-gather, with a count per rank (also `all_gather_v`).
//!
//! In `p − 1` steps each rank passes to its right neighbour the block it
//! received last (its own first). Cost: `(p−1) α + (p−1)/p · nβ` for `n`
//! bytes gathered in all: the least data and no long jumps, the most
//! messages; for long messages. Any `p`, any counts.

use std::ops::Range;

use bytemuck::Pod;
use hpcomm_runtime::Result;

use crate::channel::Channel;
use crate::util::split_pair;

/// `blocks[r]` is where rank `r`'s block lies in `buf`; this rank's own is
/// in place.
pub(crate) fn all_gather<T: Pod>(
    ch: &Channel,
    buf: &mut [T],
    blocks: &[Range<usize>],
) -> Result<()> {
    let (n, me) = (ch.size(), ch.rank());
    let (right, left) = ((me + 1) % n, (me + n - 1) % n);
    for step in 0..n.saturating_sub(1) {
        let out = blocks[(me + n - step) % n].clone();
        let inc = blocks[(me + 2 * n - step - 1) % n].clone();
        let (send, recv) = split_pair(buf, out, inc);
        ch.sendrecv(send, right, recv, left)?;
    }
    Ok(())
}
