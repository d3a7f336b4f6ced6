//! Linear gather, with a count per rank (also `gather_v`).
//!
//! Every rank sends its block straight to the root, which has a receive
//! posted for each. Cost at the root: `(p−1) α + nβ` for `n` bytes
//! gathered; the other ranks send once. Any `p`, any counts.

use std::ops::Range;

use bytemuck::Pod;
use hpcomm_runtime::Result;

use crate::channel::Channel;

/// At the root, `buf` is the whole receive buffer with its own block in
/// place and `blocks` says where each rank's goes; elsewhere `mine` is sent.
pub(crate) fn gather_root<T: Pod>(
    ch: &Channel,
    buf: &mut [T],
    blocks: &[Range<usize>],
) -> Result<()> {
    let me = ch.rank();
    let outcomes = ch.comm().scope(|s| {
        let mut rest: &mut [T] = buf;
        let mut consumed = 0;
        let mut order: Vec<usize> = (0..blocks.len()).filter(|&r| r != me).collect();
        order.sort_by_key(|&r| blocks[r].start);
        let mut reqs = Vec::with_capacity(order.len());
        let mut who = Vec::with_capacity(order.len());
        for r in order {
            let block = &blocks[r];
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(block.start - consumed);
            let (target, tail) = tail.split_at_mut(block.len());
            rest = tail;
            consumed = block.end;
            who.push((r, block.len()));
            reqs.push(s.irecv(target, r, ch.tag())?);
        }
        let mut outcomes = Vec::with_capacity(reqs.len());
        for (req, (r, len)) in reqs.into_iter().zip(who) {
            outcomes.push((req.wait().map(|st| st.count), len, r));
        }
        Ok(outcomes)
    })?;
    for (outcome, len, r) in outcomes {
        ch.check(outcome, len, r)?;
    }
    Ok(())
}

pub(crate) fn gather_leaf<T: Pod>(ch: &Channel, mine: &[T], root: usize) -> Result<()> {
    ch.send(mine, root)
}
