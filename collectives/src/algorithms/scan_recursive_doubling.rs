//! Recursive-doubling scan and exclusive scan.
//!
//! Each rank keeps the combination of its aligned group of ranks so far
//! (`partial`) and its own prefix (`result`). In round `k` it exchanges
//! `partial` with `r ⊕ 2^k`; what comes from a lower rank is joined on the
//! left of both, what comes from a higher one on the right of `partial`
//! only. Runs stay contiguous, so the operation may be non-commutative.
//! Cost: `⌈log₂ p⌉ (α + nβ + 2nγ)`. Any `p`, any operation.

use bytemuck::Pod;
use hpcomm_runtime::Result;

use crate::channel::Channel;
use crate::op::Operation;

/// `buf` holds this rank's contribution and receives its prefix: inclusive
/// of its own contribution or, for `exclusive`, of the ranks before it
/// (rank 0's buffer is then left as it was).
pub(crate) fn scan<T: Pod>(
    ch: &Channel,
    buf: &mut [T],
    op: &impl Operation<T>,
    exclusive: bool,
) -> Result<()> {
    let (n, me) = (ch.size(), ch.rank());
    let mut partial = buf.to_vec();
    let mut tmp = vec![T::zeroed(); buf.len()];
    // For the exclusive scan, whether `buf` holds a prefix yet.
    let mut have = !exclusive;
    let mut mask = 1;
    while mask < n {
        let partner = me ^ mask;
        if partner < n {
            ch.sendrecv(&partial, partner, &mut tmp, partner)?;
            if partner < me {
                op.apply(&mut partial, &tmp, false);
                if have {
                    op.apply(buf, &tmp, false);
                } else {
                    buf.copy_from_slice(&tmp);
                    have = true;
                }
            } else {
                op.apply(&mut partial, &tmp, true);
            }
        }
        mask <<= 1;
    }
    Ok(())
}
