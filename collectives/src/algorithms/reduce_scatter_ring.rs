//! Ring reduce-scatter, with a count per rank.
//!
//! In `p − 1` steps each rank passes one rank's block to its right
//! neighbour and combines the one arriving from its left into its copy;
//! the last block it combines is its own. Cost: `(p−1) α + (p−1)/p ·
//! (nβ + nγ)` for a vector of `n`. Commutative operations only. Any `p`,
//! any counts.

use std::ops::Range;

use bytemuck::Pod;
use hpcomm_runtime::Result;

use crate::channel::Channel;
use crate::op::Operation;

/// `work` is a copy of the whole input, combined in place; afterwards
/// `work[blocks[me]]` is this rank's result.
pub(crate) fn reduce_scatter<T: Pod>(
    ch: &Channel,
    work: &mut [T],
    blocks: &[Range<usize>],
    op: &impl Operation<T>,
) -> Result<()> {
    let (n, me) = (ch.size(), ch.rank());
    let (right, left) = ((me + 1) % n, (me + n - 1) % n);
    let most = blocks.iter().map(|b| b.len()).max().unwrap_or(0);
    let mut tmp = vec![T::zeroed(); most];
    for step in 0..n.saturating_sub(1) {
        let out = blocks[(me + 2 * n - step - 1) % n].clone();
        let inc = blocks[(me + 2 * n - step - 2) % n].clone();
        let incoming = &mut tmp[..inc.len()];
        ch.sendrecv(&work[out], right, incoming, left)?;
        op.apply(&mut work[inc], incoming, false);
    }
    Ok(())
}
