//! Binomial-tree reduction.
//!
//! Rank `r` combines the partial results of its subtree (`r + 2^j` for the
//! powers of two below its lowest set bit) and sends the total to its
//! parent. For a commutative operation the tree is rooted at the root; for
//! one that is not, it is rooted at rank 0 so that every combination joins
//! two contiguous runs of ranks in order, and rank 0 sends the result to
//! the root. Cost: `⌈log₂ p⌉ (α + nβ + nγ)` (plus `α + nβ` for a
//! non-commutative operation with a root other than 0). Any `p`, any
//! operation.

use bytemuck::Pod;
use hpcomm_runtime::Result;

use crate::channel::Channel;
use crate::op::Operation;

/// Reduces `acc` (this rank's contribution; the result at the root).
pub(crate) fn reduce<T: Pod>(
    ch: &Channel,
    acc: &mut [T],
    op: &impl Operation<T>,
    root: usize,
) -> Result<()> {
    let (n, me) = (ch.size(), ch.rank());
    let tree_root = if op.commutative() { root } else { 0 };
    let rel = (me + n - tree_root) % n;
    let mut tmp = vec![T::zeroed(); acc.len()];
    let mut mask = 1;
    while mask < n {
        if rel & mask != 0 {
            ch.send(acc, (rel - mask + tree_root) % n)?;
            break;
        }
        if rel + mask < n {
            ch.recv(&mut tmp, (rel + mask + tree_root) % n)?;
            // The child's run of ranks follows this rank's.
            op.apply(acc, &tmp, true);
        }
        mask <<= 1;
    }
    if tree_root != root {
        if me == tree_root {
            ch.send(acc, root)?;
        } else if me == root {
            ch.recv(acc, tree_root)?;
        }
    }
    Ok(())
}
