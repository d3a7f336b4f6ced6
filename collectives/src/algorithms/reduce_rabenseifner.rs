//! Rabenseifner's reduction: reduce-scatter by recursive halving, then a
//! binomial gather of the reduced blocks.
//!
//! Cost: `2 log₂ p · α + 2 (p−1)/p · nβ + (p−1)/p · nγ` on a power of two;
//! otherwise the first `2(p − 2^⌊log₂ p⌋)` ranks fold in pairs first
//! (`+ α + nβ + nγ`). The blocks meet at the first folded rank, which
//! passes the result to the root if that is another rank (`+ α + nβ`).
//! Each rank combines only its share of the vector, so this wins for long
//! vectors. Commutative operations only.

use bytemuck::Pod;
use hpcomm_runtime::Result;

use super::halving;
use crate::channel::Channel;
use crate::op::Operation;

pub(crate) fn reduce<T: Pod>(
    ch: &Channel,
    acc: &mut [T],
    op: &impl Operation<T>,
    root: usize,
) -> Result<()> {
    let folded = halving::fold(ch, acc, op)?;
    if let Some(newrank) = folded.newrank {
        halving::reduce_scatter(ch, acc, None, op, &folded, newrank)?;
        halving::gather(ch, acc, &folded, newrank)?;
    }
    let holder = folded.rank_of(0);
    if holder != root {
        if ch.rank() == holder {
            ch.send(acc, root)?;
        } else if ch.rank() == root {
            ch.recv(acc, holder)?;
        }
    }
    Ok(())
}
