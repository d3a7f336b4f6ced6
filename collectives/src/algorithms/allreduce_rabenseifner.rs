//! Rabenseifner's all-reduce: reduce-scatter by recursive halving, then
//! all-gather by recursive doubling.
//!
//! Cost: `2 log₂ p · α + 2 (p−1)/p · nβ + (p−1)/p · nγ` on a power of two;
//! otherwise the first `2(p − 2^⌊log₂ p⌋)` ranks fold in pairs before and
//! unfold after (`+ 2α + 2nβ + nγ`). Each rank combines only its share, so
//! this wins for long vectors with few `α`. Commutative operations only.
//! Every block is combined once and then copied, so all ranks get
//! bitwise-identical results.

use bytemuck::Pod;
use hpcomm_runtime::Result;

use super::halving;
use crate::channel::Channel;
use crate::op::Operation;

/// All-reduce into `acc`, whose contents are this rank's data — or, when
/// `input` is given and the communicator's size is a power of two, are
/// ignored and the data is read from `input` (saving a copy).
pub(crate) fn all_reduce<T: Pod>(
    ch: &Channel,
    input: Option<&[T]>,
    acc: &mut [T],
    op: &impl Operation<T>,
) -> Result<()> {
    let mut input = input;
    if !ch.size().is_power_of_two() {
        if let Some(data) = input.take() {
            acc.copy_from_slice(data);
        }
    }
    let folded = halving::fold(ch, acc, op)?;
    if let Some(newrank) = folded.newrank {
        halving::reduce_scatter(ch, acc, input, op, &folded, newrank)?;
        halving::all_gather(ch, acc, &folded, newrank)?;
    }
    halving::unfold(ch, acc, &folded)
}
