//! Linear scatter, with a count per rank (also `scatter_v`).
//!
//! The root starts a send of each rank's block at once and waits for them
//! all. Cost at the root: `(p−1) α + nβ` for `n` bytes scattered; the
//! other ranks receive once. Any `p`, any counts.

use std::ops::Range;

use bytemuck::Pod;
use hpcomm_runtime::{wait_all, Result};

use crate::channel::Channel;

pub(crate) fn scatter_root<T: Pod>(ch: &Channel, buf: &[T], blocks: &[Range<usize>]) -> Result<()> {
    let me = ch.rank();
    ch.comm().scope(|s| {
        let mut reqs = Vec::with_capacity(blocks.len());
        for (r, block) in blocks.iter().enumerate() {
            if r != me {
                reqs.push(s.isend(&buf[block.clone()], r, ch.tag())?);
            }
        }
        wait_all(&mut reqs)?;
        Ok(())
    })
}

pub(crate) fn scatter_leaf<T: Pod>(ch: &Channel, mine: &mut [T], root: usize) -> Result<()> {
    ch.recv(mine, root)
}
