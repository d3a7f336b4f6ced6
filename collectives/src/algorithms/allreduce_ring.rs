//! Ring all-reduce: a ring reduce-scatter, then a ring all-gather.
//!
//! The vector is cut into `p` pieces; in `p − 1` steps each rank passes
//! one piece to its right neighbour and combines the one from its left,
//! after which each rank holds one piece fully reduced; `p − 1` more steps
//! pass the reduced pieces round. Cost: `2(p−1) α + 2 (p−1)/p · nβ +
//! (p−1)/p · nγ`: the least data per rank, the most messages; for long
//! vectors. Commutative operations only. Each piece is combined once and
//! then copied, so all ranks get bitwise-identical results.

use bytemuck::Pod;
use hpcomm_runtime::Result;

use crate::channel::Channel;
use crate::op::Operation;
use crate::util::{piece, split_pair};

pub(crate) fn all_reduce<T: Pod>(
    ch: &Channel,
    acc: &mut [T],
    op: &impl Operation<T>,
) -> Result<()> {
    let (n, me) = (ch.size(), ch.rank());
    let len = acc.len();
    let (right, left) = ((me + 1) % n, (me + n - 1) % n);
    let mut tmp = vec![T::zeroed(); piece(len, n, n - 1).len()];
    for step in 0..n.saturating_sub(1) {
        let out = piece(len, n, (me + n - step) % n);
        let inc = piece(len, n, (me + 2 * n - step - 1) % n);
        let incoming = &mut tmp[..inc.len()];
        ch.sendrecv(&acc[out], right, incoming, left)?;
        op.apply(&mut acc[inc], incoming, false);
    }
    for step in 0..n.saturating_sub(1) {
        let out = piece(len, n, (me + 1 + n - step) % n);
        let inc = piece(len, n, (me + n - step) % n);
        let (send, recv) = split_pair(acc, out, inc);
        ch.sendrecv(send, right, recv, left)?;
    }
    Ok(())
}
