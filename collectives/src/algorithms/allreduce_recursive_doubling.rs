//! Recursive-doubling all-reduce.
//!
//! In round `k` rank `r` exchanges its whole partial result with `r ⊕ 2^k`
//! and combines, the lower run of ranks on the left, so the operation may
//! be non-commutative; both partners compute the same operands in the same
//! order, so every rank ends with bitwise-identical results. When `p` is
//! not a power of two, the first `2(p − 2^⌊log₂ p⌋)` ranks fold in pairs
//! before and unfold after. Cost: `⌈log₂ p⌉ (α + nβ + nγ)` (`+ 2α + 2nβ +
//! nγ` off powers of two). Best for short vectors. Any `p`, any operation.

use bytemuck::Pod;
use hpcomm_runtime::Result;

use super::halving;
use crate::channel::Channel;
use crate::op::Operation;

pub(crate) fn all_reduce<T: Pod>(
    ch: &Channel,
    acc: &mut [T],
    op: &impl Operation<T>,
) -> Result<()> {
    let folded = halving::fold(ch, acc, op)?;
    if let Some(newrank) = folded.newrank {
        let mut tmp = vec![T::zeroed(); acc.len()];
        let mut mask = 1;
        while mask < folded.pof2 {
            let partner = newrank ^ mask;
            let peer = folded.rank_of(partner);
            ch.sendrecv(acc, peer, &mut tmp, peer)?;
            op.apply(acc, &tmp, newrank < partner);
            mask <<= 1;
        }
    }
    halving::unfold(ch, acc, &folded)
}
