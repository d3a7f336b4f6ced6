//! Neighbourhood exchange on a Cartesian grid (`MPI_Neighbor_alltoall`
//! and its relatives).
//!
//! Every transfer to and from the grid's neighbours is posted at once, in
//! one round. The neighbours come in MPI's order — along each dimension
//! the one before, then the one after — and a rank past a non-periodic
//! edge has none there (that block is neither sent nor written). Block `k`
//! goes to neighbour `k` on lane `k`; block `k` of the result comes from
//! neighbour `k`, which sent it the other way, on lane `k ⊕ 1`. The lanes
//! keep the directions apart where one rank is a neighbour twice (a
//! periodic dimension of two ranks) or its own (of one). Cost: `α + mβ`
//! for `m` bytes sent by a rank, its `2d` messages in flight together.

use std::ops::Range;

use crate::schedule::{Piece, Schedule};

/// This rank's round: `neighbors[k]` (`None` past an edge), the input's
/// block `sblocks[k]` to it and its block into `rblocks[k]` of the work
/// buffer.
pub(crate) fn schedule(
    neighbors: &[Option<usize>],
    sblocks: &[Range<usize>],
    rblocks: &[Range<usize>],
) -> Schedule {
    let mut s = Schedule::with_capacity(2 * neighbors.len() + 1);
    for (k, nb) in neighbors.iter().enumerate() {
        if let Some(from) = *nb {
            s.recv_on(from, Piece::work(rblocks[k].clone()), (k ^ 1) as u16);
        }
    }
    for (k, nb) in neighbors.iter().enumerate() {
        if let Some(to) = *nb {
            s.send_on(to, Piece::input(sblocks[k].clone()), k as u16);
        }
    }
    s.build()
}
