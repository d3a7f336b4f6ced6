//! Checked calls: each collective's argument checks and its schedule, in
//! one place for the blocking, non-blocking and persistent forms.
//!
//! A function here takes a call's shape — buffer lengths, counts, root,
//! whether the operation commutes — checks everything a rank can check
//! alone (so that an error comes before anything is sent, on this rank),
//! and returns a [`Call`]: the schedule of the algorithm
//! [`select`](crate::select) picks, which buffers it reads, and whether it
//! needs a work buffer of its own. [`Call::run`] runs it blocking;
//! `nonblocking.rs` starts it as a task.

use std::ops::Range;

use bytemuck::Pod;
use hpcomm_runtime::{Cartesian, Communicator, Result};

use crate::algorithms::neighbor_exchange;
use crate::channel::{bad_count, blocks, check_root, packed, Channel, CollTag};
use crate::op::Operation;
use crate::plans::{self, Planned};
use crate::schedule::{blocking, LANES};
use crate::util::disjoint;

/// A checked call, ready to run.
#[derive(Debug)]
pub(crate) struct Call {
    pub plan: Planned,
    pub tag: CollTag,
    /// The schedule's work buffer is one of its own, not the caller's
    /// output (a reduction's non-root ranks), of at most this many elements
    /// (as many as the schedule names: none for a leaf of a tree). The
    /// schedule reads the input itself.
    pub own_work: Option<usize>,
    /// A disagreement found while checking that concerns the peers too (an
    /// all-to-all's own block): reported at the end, after the schedule ran
    /// everywhere.
    pub mismatch: Option<String>,
}

impl Call {
    fn new(plan: Planned, tag: CollTag) -> Call {
        Call { plan, tag, own_work: None, mismatch: None }
    }

    /// Runs the call to its end with `input` (empty when the schedule reads
    /// none) and `output`.
    pub(crate) fn run<T: Pod>(
        self,
        comm: &Communicator,
        input: &[T],
        output: &mut [T],
        op: &impl Operation<T>,
    ) -> Result<()> {
        let ch = Channel::new(comm, self.tag);
        match self.own_work {
            Some(len) => {
                let mut work = vec![T::zeroed(); self.plan.work.min(len)];
                blocking::run(&ch, &self.plan, input, &mut work, op)?
            }
            None => blocking::run(&ch, &self.plan, input, output, op)?,
        }
        if let Some(m) = self.mismatch {
            ch.mismatch(m);
        }
        ch.finish()
    }
}

/// Checks that two lengths that must agree do.
pub(crate) fn same_len(what: &str, a: usize, b: usize) -> Result<()> {
    if a != b {
        return Err(bad_count(format!("{what}: send has {a} elements, receive {b}")));
    }
    Ok(())
}

/// The block length when `len` elements split into `n` equal blocks.
pub(crate) fn equal_blocks(what: &str, len: usize, n: usize) -> Result<usize> {
    if len % n != 0 {
        return Err(bad_count(format!("{what}: {len} elements do not split into {n} blocks")));
    }
    Ok(len / n)
}

/// The equal blocks of a buffer of `whole` elements (named `buffer` in
/// errors): of `block` elements each when a rank's block is given, else
/// `whole / n` (in place).
fn equal_layout(
    what: &str,
    buffer: &str,
    whole: usize,
    block: Option<usize>,
    n: usize,
) -> Result<Vec<Range<usize>>> {
    let block = match block {
        Some(b) if b.checked_mul(n) == Some(whole) => b,
        Some(b) => {
            return Err(bad_count(format!(
                "{what}: {buffer} has {whole} elements, {n} ranks × {b} expected"
            )))
        }
        None => equal_blocks(&format!("{what}_in_place"), whole, n)?,
    };
    Ok(equal_ranges(n, block))
}

/// `n` blocks of `block` elements, packed in rank order.
pub(crate) fn equal_ranges(n: usize, block: usize) -> Vec<Range<usize>> {
    (0..n).map(|r| r * block..(r + 1) * block).collect()
}

/// The blocks of `counts` and `displs` in a buffer of `len`, which must
/// not overlap (they are written).
fn receive_blocks(
    counts: &[usize],
    displs: &[usize],
    n: usize,
    len: usize,
    what: &str,
) -> Result<Vec<Range<usize>>> {
    let ranges = blocks(counts, displs, n, len, what)?;
    if !disjoint(&ranges) {
        return Err(bad_count(format!("{what}: the receive blocks overlap")));
    }
    Ok(ranges)
}

/// A barrier.
pub(crate) fn barrier(comm: &Communicator) -> Result<Call> {
    Ok(Call::new(plans::barrier(comm)?, CollTag::Barrier))
}

/// A broadcast of `len` elements of `elem` bytes from `root`.
pub(crate) fn bcast(comm: &Communicator, len: usize, elem: usize, root: usize) -> Result<Call> {
    check_root(root, comm.size())?;
    Ok(Call::new(plans::bcast(comm, len, len * elem, root)?, CollTag::Bcast))
}

/// A reduction to `root`: `send` elements (of `elem` bytes) from every
/// rank, or, `in_place`, the root's output is its input. Elsewhere the
/// output is not used, and the rank combines in a work buffer of its own.
pub(crate) fn reduce(
    comm: &Communicator,
    send: usize,
    recv: usize,
    elem: usize,
    commutative: bool,
    root: usize,
    in_place: bool,
) -> Result<Call> {
    check_root(root, comm.size())?;
    let at_root = comm.rank() == root;
    if at_root && !in_place {
        same_len("reduce", send, recv)?;
    }
    let len = if at_root { recv } else { send };
    // Every rank reads its input but an in-place root, whose contribution
    // is in its output; the others work in a buffer of their own (see
    // `Call::own_work`).
    let input = !(at_root && in_place);
    let plan = plans::reduce(comm, len, len * elem, commutative, root, input)?;
    let mut call = Call::new(plan, CollTag::Reduce);
    call.own_work = (!at_root).then_some(len);
    Ok(call)
}

/// An all-reduce of `len` elements, read from the input unless `in_place`.
pub(crate) fn all_reduce(
    comm: &Communicator,
    send: Option<usize>,
    recv: usize,
    elem: usize,
    commutative: bool,
) -> Result<Call> {
    if let Some(send) = send {
        same_len("all_reduce", send, recv)?;
    }
    let plan = plans::allreduce(comm, recv, recv * elem, commutative, send.is_some())?;
    Ok(Call::new(plan, CollTag::Allreduce))
}

/// A gather to `root` of each rank's `send` elements (or, without, its
/// output's, in place) into `recv` at the blocks of `counts`/`displs` (or,
/// without, equal blocks).
pub(crate) fn gather(
    comm: &Communicator,
    send: Option<usize>,
    recv: usize,
    counts: Option<(&[usize], &[usize])>,
    root: usize,
) -> Result<Call> {
    let (n, me) = (comm.size(), comm.rank());
    check_root(root, n)?;
    if me != root {
        let len = send.unwrap_or(recv);
        let plan = plans::gather(comm, root, &[], len, send.is_some(), counts.is_none())?;
        return Ok(Call::new(plan, CollTag::Gather));
    }
    let ranges = match counts {
        Some((counts, displs)) => receive_blocks(counts, displs, n, recv, "gather_v")?,
        None => equal_layout("gather", "the root's receive buffer", recv, send, n)?,
    };
    if let Some(send) = send {
        same_len("gather (the root's own block)", send, ranges[root].len())?;
    }
    let len = ranges[root].len();
    let plan = plans::gather(comm, root, &ranges, len, send.is_some(), counts.is_none())?;
    Ok(Call::new(plan, CollTag::Gather))
}

/// A scatter from `root`'s `send` (or, without, its output, in place) at
/// the blocks of `counts`/`displs` (or equal blocks) into each rank's
/// `recv` elements.
pub(crate) fn scatter(
    comm: &Communicator,
    send: Option<usize>,
    recv: usize,
    counts: Option<(&[usize], &[usize])>,
    root: usize,
) -> Result<Call> {
    let (n, me) = (comm.size(), comm.rank());
    check_root(root, n)?;
    if me != root {
        return Ok(Call::new(plans::scatter(comm, root, &[], recv, false), CollTag::Scatter));
    }
    let source = send.unwrap_or(recv);
    let ranges = match counts {
        Some((counts, displs)) => blocks(counts, displs, n, source, "scatter_v")?,
        None => {
            let block = send.map(|_| recv);
            equal_layout("scatter", "the root's send buffer", source, block, n)?
        }
    };
    if send.is_some() {
        same_len("scatter (the root's own block)", ranges[root].len(), recv)?;
    }
    let len = if send.is_some() { recv } else { ranges[root].len() };
    Ok(Call::new(plans::scatter(comm, root, &ranges, len, send.is_some()), CollTag::Scatter))
}

/// An all-gather of each rank's `send` elements (or, without, its block of
/// the output, in place) into `recv` at the blocks of `counts`/`displs`
/// (or equal blocks).
pub(crate) fn all_gather(
    comm: &Communicator,
    send: Option<usize>,
    recv: usize,
    counts: Option<(&[usize], &[usize])>,
    elem: usize,
) -> Result<Call> {
    let (n, me) = (comm.size(), comm.rank());
    let ranges = match counts {
        Some((counts, displs)) => receive_blocks(counts, displs, n, recv, "all_gather_v")?,
        None => equal_layout("all_gather", "the receive buffer", recv, send, n)?,
    };
    if let Some(send) = send {
        same_len("all_gather_v (this rank's block)", send, ranges[me].len())?;
    }
    Ok(Call::new(plans::allgather(comm, &ranges, elem, send.is_some())?, CollTag::Allgather))
}

/// An all-to-all from `send` elements to `recv` elements, at the blocks of
/// the counts and displacements (or equal blocks).
pub(crate) fn all_to_all(
    comm: &Communicator,
    send: usize,
    recv: usize,
    counts: Option<[(&[usize], &[usize]); 2]>,
    elem: usize,
) -> Result<Call> {
    let (n, me) = (comm.size(), comm.rank());
    let (sblocks, rblocks) = match counts {
        Some([(sc, sd), (rc, rd)]) => (
            blocks(sc, sd, n, send, "all_to_all_v (send)")?,
            receive_blocks(rc, rd, n, recv, "all_to_all_v (receive)")?,
        ),
        None => {
            same_len("all_to_all", send, recv)?;
            let block = equal_blocks("all_to_all", send, n)?;
            (equal_ranges(n, block), equal_ranges(n, block))
        }
    };
    let mut call = Call::new(plans::alltoall(comm, &sblocks, &rblocks, elem)?, CollTag::Alltoall);
    let (own_s, own_r) = (sblocks[me].len(), rblocks[me].len());
    if own_s != own_r {
        call.mismatch =
            Some(format!("rank {me} sends itself {own_s} elements where {own_r} were expected"));
    }
    Ok(call)
}

/// A reduce-scatter of `send` elements (or, without, the output's, in
/// place) whose rank-`r` part is `counts[r]` long, into the first
/// `counts[me]` elements of the output.
pub(crate) fn reduce_scatter(
    comm: &Communicator,
    send: Option<usize>,
    recv: usize,
    counts: &[usize],
    commutative: bool,
) -> Result<Call> {
    let (n, me) = (comm.size(), comm.rank());
    if counts.len() != n {
        return Err(bad_count(format!("reduce_scatter: {} counts for {n} ranks", counts.len())));
    }
    let total: usize = counts.iter().sum();
    let whole = send.unwrap_or(recv);
    if whole != total {
        return Err(bad_count(format!(
            "reduce_scatter: the input has {whole} elements, the counts add up to {total}"
        )));
    }
    if send.is_some() {
        same_len("reduce_scatter (this rank's count)", counts[me], recv)?;
    }
    let ranges = blocks(counts, &packed(counts), n, total, "reduce_scatter")?;
    let plan = plans::reduce_scatter(comm, &ranges, commutative, send.is_some());
    Ok(Call::new(plan, CollTag::ReduceScatter))
}

/// A scan (inclusive or not) of `len` elements, read from the input unless
/// `in_place`.
pub(crate) fn scan(
    comm: &Communicator,
    send: Option<usize>,
    recv: usize,
    exclusive: bool,
) -> Result<Call> {
    if let Some(send) = send {
        same_len(if exclusive { "exscan" } else { "scan" }, send, recv)?;
    }
    Ok(Call::new(plans::scan(comm, recv, exclusive, send.is_some()), CollTag::Scan))
}

/// A neighbourhood exchange on `grid`: block `k` of the send blocks to
/// neighbour `k` and block `k` of the receive blocks from it; `all_gather`
/// sends the whole input to every neighbour.
pub(crate) fn neighbor(
    grid: &Cartesian,
    send: usize,
    recv: usize,
    counts: Option<[(&[usize], &[usize]); 2]>,
    all_gather: bool,
) -> Result<Call> {
    let dims = grid.dims().len();
    let k = 2 * dims;
    if k > usize::from(LANES) {
        return Err(bad_count(format!(
            "neighbourhood collectives: a grid of {dims} dimensions (at most {})",
            LANES / 2
        )));
    }
    let mut neighbors = Vec::with_capacity(k);
    for d in 0..dims {
        let (before, after) = grid.shift(d, 1)?;
        neighbors.extend([before, after].map(|r| r.index()));
    }
    let what = if all_gather { "neighbor_all_gather" } else { "neighbor_all_to_all" };
    let (sblocks, rblocks) = match counts {
        Some([(sc, sd), (rc, rd)]) => (
            blocks(sc, sd, k, send, "neighbor_all_to_all_v (send)")?,
            receive_blocks(rc, rd, k, recv, "neighbor_all_to_all_v (receive)")?,
        ),
        None if all_gather => {
            if recv != k * send {
                return Err(bad_count(format!(
                    "{what}: the receive buffer has {recv} elements, {k} neighbours × {send} expected"
                )));
            }
            (vec![0..send; k], equal_ranges(k, send))
        }
        None => {
            same_len(what, send, recv)?;
            let block = equal_blocks(what, send, k)?;
            (equal_ranges(k, block), equal_ranges(k, block))
        }
    };
    let plan = Planned::fresh(neighbor_exchange::schedule(&neighbors, &sblocks, &rblocks));
    Ok(Call::new(plan, CollTag::Neighbor))
}
