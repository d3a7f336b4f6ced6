//! Bruck's all-gather (equal blocks).
//!
//! Blocks are kept rotated so that this rank's own comes first; in round
//! `k` (`k = 1, 2, 4, …`) rank `r` sends its first `min(k, p − k)` blocks
//! to `r − k` and appends those of `r + k`. A final rotation puts them in
//! rank order. Cost: `⌈log₂ p⌉ α + (p−1)/p · nβ` plus a local copy of `n`:
//! the fewest messages for any `p`; for short and medium messages.

use bytemuck::Pod;
use hpcomm_runtime::Result;

use crate::channel::Channel;

/// `buf` holds `p` blocks of `block` elements; this rank's is in place.
pub(crate) fn all_gather<T: Pod>(ch: &Channel, buf: &mut [T], block: usize) -> Result<()> {
    let (n, me) = (ch.size(), ch.rank());
    let mut tmp = vec![T::zeroed(); n * block];
    tmp[..block].copy_from_slice(&buf[me * block..(me + 1) * block]);
    let mut k = 1;
    while k < n {
        let count = k.min(n - k);
        let (have, incoming) = tmp.split_at_mut(k * block);
        ch.sendrecv(
            &have[..count * block],
            (me + n - k) % n,
            &mut incoming[..count * block],
            (me + k) % n,
        )?;
        k <<= 1;
    }
    // tmp[i] is rank (me + i)'s block.
    for i in 0..n {
        let r = (me + i) % n;
        buf[r * block..(r + 1) * block].copy_from_slice(&tmp[i * block..(i + 1) * block]);
    }
    Ok(())
}
