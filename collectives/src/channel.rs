//! The point-to-point channel every algorithm talks through: the
//! communicator's collective context, one tag per collective, and the
//! bookkeeping that turns mismatched arguments into an error instead of a
//! hang.
//!
//! When a message is shorter or longer than the receiving rank expected,
//! the algorithm does not stop there: ranks further down a tree or ring
//! would then wait forever. The channel records the first such mismatch
//! and lets the algorithm run to its end; [`Channel::finish`] reports it.

use std::cell::RefCell;

use bytemuck::Pod;
use hpcomm_runtime::{Communicator, Error, Result};

use crate::schedule::LANES;

/// The kinds of blocking collective, each with its own tags on the
/// collective context: [`LANES`] of them from `16 + 64·kind` (the runtime
/// keeps the tags below 16; the non-blocking ones start at 1024).
#[derive(Clone, Copy, Debug)]
#[repr(i32)]
pub(crate) enum CollTag {
    Barrier,
    Bcast,
    Reduce,
    Allreduce,
    Gather,
    Scatter,
    Allgather,
    Alltoall,
    ReduceScatter,
    Scan,
    Neighbor,
}

impl CollTag {
    /// The first tag of the kind.
    fn base(self) -> i32 {
        16 + (self as i32) * i32::from(LANES)
    }
}

pub(crate) struct Channel {
    comm: Communicator,
    tag: i32,
    mismatch: RefCell<Option<Error>>,
}

impl Channel {
    pub(crate) fn new(comm: &Communicator, tag: CollTag) -> Channel {
        Channel { comm: comm.collective_comm(), tag: tag.base(), mismatch: RefCell::new(None) }
    }

    pub(crate) fn size(&self) -> usize {
        self.comm.size()
    }

    /// The communicator on the collective context, for algorithms that keep
    /// several requests in flight.
    pub(crate) fn comm(&self) -> &Communicator {
        &self.comm
    }

    /// The tag of a lane (below [`LANES`]).
    pub(crate) fn tag(&self, lane: u16) -> i32 {
        self.tag + i32::from(lane)
    }

    pub(crate) fn send<T: Pod>(&self, buf: &[T], to: usize, lane: u16) -> Result<()> {
        self.comm.send(buf, to, self.tag(lane))
    }

    pub(crate) fn recv<T: Pod>(&self, buf: &mut [T], from: usize, lane: u16) -> Result<()> {
        let outcome = self.comm.recv(buf, from, self.tag(lane));
        self.check(outcome.map(|s| s.count), buf.len(), from)
    }

    /// A send to `to` and a receive from `from`, on lanes.
    pub(crate) fn sendrecv<T: Pod>(
        &self,
        (send, to, out_lane): (&[T], usize, u16),
        (recv, from, in_lane): (&mut [T], usize, u16),
    ) -> Result<()> {
        let (out, inc) = (self.tag(out_lane), self.tag(in_lane));
        let outcome = self.comm.sendrecv(send, to, out, recv, from, inc);
        self.check(outcome.map(|s| s.count), recv.len(), from)
    }

    /// Checks a completed receive of `expected` elements from `from`:
    /// mismatches are recorded, other errors returned.
    pub(crate) fn check(&self, outcome: Result<usize>, expected: usize, from: usize) -> Result<()> {
        let problem = match outcome {
            Ok(count) if count == expected => return Ok(()),
            Ok(count) => {
                format!("rank {from} sent {count} elements where {expected} were expected")
            }
            Err(Error::Truncated { needed, capacity }) => {
                format!("rank {from} sent {needed} bytes where {capacity} were expected")
            }
            Err(Error::PartialElement { bytes, elem_size }) => {
                format!("rank {from} sent {bytes} bytes, not a whole number of {elem_size}-byte elements")
            }
            Err(e) => return Err(e),
        };
        self.mismatch.borrow_mut().get_or_insert(Error::CollectiveMismatch(problem));
        Ok(())
    }

    /// Records a mismatch found by other means (the caller's own checks).
    pub(crate) fn mismatch(&self, problem: String) {
        self.mismatch.borrow_mut().get_or_insert(Error::CollectiveMismatch(problem));
    }

    /// Ends the operation: the first mismatch seen, if any.
    pub(crate) fn finish(self) -> Result<()> {
        match self.mismatch.into_inner() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Checks a root argument.
pub(crate) fn check_root(root: usize, size: usize) -> Result<()> {
    if root >= size {
        return Err(Error::InvalidRoot { root: i32::try_from(root).unwrap_or(i32::MAX), size });
    }
    Ok(())
}

/// An argument error about lengths or counts.
pub(crate) fn bad_count(what: impl Into<String>) -> Error {
    Error::InvalidCount(what.into())
}

/// Checks that `counts` and `displs` have one entry per rank and that every
/// block lies inside a buffer of `len` elements; returns the blocks as
/// ranges.
pub(crate) fn blocks(
    counts: &[usize],
    displs: &[usize],
    size: usize,
    len: usize,
    what: &str,
) -> Result<Vec<std::ops::Range<usize>>> {
    if counts.len() != size || displs.len() != size {
        return Err(bad_count(format!(
            "{what}: {} counts and {} displacements for {size} ranks",
            counts.len(),
            displs.len()
        )));
    }
    counts
        .iter()
        .zip(displs)
        .enumerate()
        .map(|(r, (&c, &d))| match d.checked_add(c) {
            Some(end) if end <= len => Ok(d..end),
            _ => Err(bad_count(format!(
                "{what}: rank {r}'s block ({c} elements at {d}) lies outside the {len}-element buffer"
            ))),
        })
        .collect()
}

/// Contiguous displacements for `counts`.
pub(crate) fn packed(counts: &[usize]) -> Vec<usize> {
    counts
        .iter()
        .scan(0, |at, &c| {
            let d = *at;
            *at += c;
            Some(d)
        })
        .collect()
}
