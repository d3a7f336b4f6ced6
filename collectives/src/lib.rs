//! Collective operations for hpcomm: the full MPI set, several algorithms
//! for each, and the function that picks one.
//!
//! Every operation is a method of the [`Collectives`] trait, implemented
//! for [`Communicator`]; bring it into scope (`use hpcomm::Collectives`)
//! and call it on any communicator:
//!
//! ```
//! use hpcomm_collectives::{op::Sum, Collectives};
//!
//! let totals = hpcomm_runtime::threads(4, |comm| {
//!     let mine = [comm.rank() as u64, 1];
//!     let mut total = [0u64; 2];
//!     comm.all_reduce(&mine, &mut total, Sum).unwrap();
//!     total
//! })
//! .unwrap();
//! assert!(totals.iter().all(|t| *t == [0 + 1 + 2 + 3, 4]));
//! ```
//!
//! # How it is built
//!
//! Collectives run on the runtime's point-to-point operations in each
//! communicator's *collective context*
//! ([`Communicator::collective_comm`]), so their messages never match a
//! user's receive, with one tag per kind of collective. Like MPI, every
//! rank must call the same collectives in the same order.
//!
//! The algorithms live in `algorithms/`, one per file, each with its cost
//! in α-β-γ terms and its restrictions. More and more of them are written
//! as *schedules* (`schedule/`): rounds of sends and receives followed by
//! local combinations, which one executor runs blocking and another as a
//! task of the progress engine, so the blocking and non-blocking forms of a
//! collective run the same algorithm. [`select`] picks one per call by
//! message size, communicator size and the operation's commutativity, and
//! `HPCOMM_<COLLECTIVE>=<name>` forces one. Reductions keep MPI's order
//! rule — a lower rank's contribution is the left operand — so a
//! non-commutative [`Operation`](op::Operation) gives the rank-order result
//! for every root and algorithm, and every rank of an all-reduce receives
//! bitwise-identical results (each algorithm either combines in the same
//! order on both partners or combines once and copies). For sums that must
//! not depend on the number of ranks or the algorithm at all, see
//! [`Collectives::all_reduce_sum_reproducible`] and [`repro`].
//!
//! Non-blocking variants of barrier, broadcast, all-reduce and all-to-all
//! with counts are started in a [`Scope`](hpcomm_runtime::Scope) through
//! the [`NonBlocking`] trait and complete like any other request; the
//! progress engine advances them whenever the rank communicates. The first
//! three run the algorithm the blocking form would choose.
//!
//! # Errors
//!
//! Arguments a rank can check alone (a root outside the communicator,
//! count arrays of the wrong length, buffers that do not fit the counts)
//! are reported before anything is sent. A length that disagrees with a
//! peer's shows when its message arrives: the algorithm still runs to its
//! end on every rank, so none is left waiting, and the call returns
//! [`Error::CollectiveMismatch`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod algorithms;
mod channel;
pub mod model;
mod nonblocking;
pub mod op;
mod plans;
pub mod repro;
mod schedule;
pub mod select;
mod util;

use bytemuck::Pod;
pub use hpcomm_runtime::Communicator;
#[cfg(doc)]
use hpcomm_runtime::Error;
use hpcomm_runtime::Result;
pub use nonblocking::NonBlocking;

use algorithms::*;
use channel::{bad_count, blocks, check_root, packed, Channel, CollTag};
use op::Operation;
use schedule::blocking::NoReduce;
use util::disjoint;

/// The collective operations, as methods of [`Communicator`].
///
/// Buffers are slices of any [`Pod`] element type. "In place" variants
/// (`MPI_IN_PLACE`) take one buffer where the plain ones take two; each
/// says which rank's data it reads from where. Counts and displacements
/// are in elements.
pub trait Collectives {
    /// Waits until every rank has entered the barrier (`MPI_Barrier`).
    fn barrier(&self) -> Result<()>;

    /// Copies the root's `buf` to every rank's `buf` (`MPI_Bcast`).
    fn broadcast<T: Pod>(&self, buf: &mut [T], root: usize) -> Result<()>;

    /// Combines every rank's `send` with `op` into the root's `recv`
    /// (`MPI_Reduce`); `recv` is not touched on other ranks.
    fn reduce<T: Pod>(
        &self,
        send: &[T],
        recv: &mut [T],
        op: impl Operation<T>,
        root: usize,
    ) -> Result<()>;

    /// [`reduce`](Collectives::reduce) with the root's input taken from
    /// `buf`, where the result goes; other ranks' `buf` is their input and
    /// is left as it was.
    fn reduce_in_place<T: Pod>(
        &self,
        buf: &mut [T],
        op: impl Operation<T>,
        root: usize,
    ) -> Result<()>;

    /// Combines every rank's `send` with `op` into every rank's `recv`
    /// (`MPI_Allreduce`).
    fn all_reduce<T: Pod>(&self, send: &[T], recv: &mut [T], op: impl Operation<T>) -> Result<()>;

    /// [`all_reduce`](Collectives::all_reduce) with each rank's input in
    /// `buf`, where the result goes.
    fn all_reduce_in_place<T: Pod>(&self, buf: &mut [T], op: impl Operation<T>) -> Result<()>;

    /// The correctly rounded sum of every rank's `send`, element by element,
    /// into `recv`: the same bits whatever the number of ranks or the
    /// algorithm (see [`repro`]).
    fn all_reduce_sum_reproducible(&self, send: &[f64], recv: &mut [f64]) -> Result<()>;

    /// Gathers every rank's `send`, in rank order, into the root's `recv`,
    /// which holds `size × send.len()` elements (`MPI_Gather`).
    fn gather<T: Pod>(&self, send: &[T], recv: &mut [T], root: usize) -> Result<()>;

    /// [`gather`](Collectives::gather) where the root's own block is
    /// already in place in `buf` (the whole receive buffer); on other ranks
    /// `buf` is the block sent.
    fn gather_in_place<T: Pod>(&self, buf: &mut [T], root: usize) -> Result<()>;

    /// Gathers rank `r`'s `send` into `recv[displs[r]..][..counts[r]]` at
    /// the root (`MPI_Gatherv`); `counts` and `displs` matter at the root
    /// only.
    fn gather_v<T: Pod>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
        displs: &[usize],
        root: usize,
    ) -> Result<()>;

    /// [`gather_v`](Collectives::gather_v) with the root's block already
    /// in place in `buf`; on other ranks `buf` is the block sent.
    fn gather_v_in_place<T: Pod>(
        &self,
        buf: &mut [T],
        counts: &[usize],
        displs: &[usize],
        root: usize,
    ) -> Result<()>;

    /// Sends block `r` of the root's `send` (`size × recv.len()` elements)
    /// to rank `r`'s `recv` (`MPI_Scatter`).
    fn scatter<T: Pod>(&self, send: &[T], recv: &mut [T], root: usize) -> Result<()>;

    /// [`scatter`](Collectives::scatter) where the root's `buf` is the whole
    /// send buffer and its own block stays in place; on other ranks `buf`
    /// receives the block.
    fn scatter_in_place<T: Pod>(&self, buf: &mut [T], root: usize) -> Result<()>;

    /// Sends `send[displs[r]..][..counts[r]]` of the root to rank `r`'s
    /// `recv` (`MPI_Scatterv`); `counts` and `displs` matter at the root
    /// only.
    fn scatter_v<T: Pod>(
        &self,
        send: &[T],
        counts: &[usize],
        displs: &[usize],
        recv: &mut [T],
        root: usize,
    ) -> Result<()>;

    /// [`scatter_v`](Collectives::scatter_v) where the root's `buf` is the
    /// whole send buffer and its own block stays in place; on other ranks
    /// `buf` receives the block.
    fn scatter_v_in_place<T: Pod>(
        &self,
        buf: &mut [T],
        counts: &[usize],
        displs: &[usize],
        root: usize,
    ) -> Result<()>;

    /// Gathers every rank's `send`, in rank order, into every rank's
    /// `recv` (`size × send.len()` elements; `MPI_Allgather`).
    fn all_gather<T: Pod>(&self, send: &[T], recv: &mut [T]) -> Result<()>;

    /// [`all_gather`](Collectives::all_gather) where each rank's block is
    /// already in place in `buf`.
    fn all_gather_in_place<T: Pod>(&self, buf: &mut [T]) -> Result<()>;

    /// Gathers rank `r`'s `send` into `recv[displs[r]..][..counts[r]]` on
    /// every rank (`MPI_Allgatherv`).
    fn all_gather_v<T: Pod>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
        displs: &[usize],
    ) -> Result<()>;

    /// [`all_gather_v`](Collectives::all_gather_v) where each rank's block
    /// is already in place in `buf`.
    fn all_gather_v_in_place<T: Pod>(
        &self,
        buf: &mut [T],
        counts: &[usize],
        displs: &[usize],
    ) -> Result<()>;

    /// Sends block `j` of `send` to rank `j`, which stores it as block `i`
    /// of its `recv` (`i` the sender); both hold `size` equal blocks
    /// (`MPI_Alltoall`).
    fn all_to_all<T: Pod>(&self, send: &[T], recv: &mut [T]) -> Result<()>;

    /// [`all_to_all`](Collectives::all_to_all) with the blocks sent and
    /// received in the same buffer.
    fn all_to_all_in_place<T: Pod>(&self, buf: &mut [T]) -> Result<()>;

    /// All-to-all with a count and displacement per rank on both sides
    /// (`MPI_Alltoallv`).
    #[allow(clippy::too_many_arguments)]
    fn all_to_all_v<T: Pod>(
        &self,
        send: &[T],
        send_counts: &[usize],
        send_displs: &[usize],
        recv: &mut [T],
        recv_counts: &[usize],
        recv_displs: &[usize],
    ) -> Result<()>;

    /// [`all_to_all_v`](Collectives::all_to_all_v) with the blocks sent and
    /// received in `buf`: rank `j` is sent `counts[j]` elements from
    /// `displs[j]`, and its block for this rank replaces them.
    fn all_to_all_v_in_place<T: Pod>(
        &self,
        buf: &mut [T],
        counts: &[usize],
        displs: &[usize],
    ) -> Result<()>;

    /// Combines every rank's `send` (`size × recv.len()` elements) with
    /// `op` and leaves block `r` of the result in rank `r`'s `recv`
    /// (`MPI_Reduce_scatter_block`).
    fn reduce_scatter_block<T: Pod>(
        &self,
        send: &[T],
        recv: &mut [T],
        op: impl Operation<T>,
    ) -> Result<()>;

    /// [`reduce_scatter_block`](Collectives::reduce_scatter_block) with the
    /// input in `buf`; the rank's block of the result is left at its start.
    fn reduce_scatter_block_in_place<T: Pod>(
        &self,
        buf: &mut [T],
        op: impl Operation<T>,
    ) -> Result<()>;

    /// Combines every rank's `send` (`Σ counts` elements) with `op` and
    /// leaves the `counts[r]` elements of rank `r`'s part in its `recv`
    /// (`MPI_Reduce_scatter`).
    fn reduce_scatter<T: Pod>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
        op: impl Operation<T>,
    ) -> Result<()>;

    /// [`reduce_scatter`](Collectives::reduce_scatter) with the input in
    /// `buf`; the rank's part of the result is left at its start.
    fn reduce_scatter_in_place<T: Pod>(
        &self,
        buf: &mut [T],
        counts: &[usize],
        op: impl Operation<T>,
    ) -> Result<()>;

    /// Rank `r`'s `recv` receives the combination of ranks `0..=r`'s `send`
    /// (`MPI_Scan`).
    fn scan<T: Pod>(&self, send: &[T], recv: &mut [T], op: impl Operation<T>) -> Result<()>;

    /// [`scan`](Collectives::scan) with each rank's input in `buf`.
    fn scan_in_place<T: Pod>(&self, buf: &mut [T], op: impl Operation<T>) -> Result<()>;

    /// Rank `r > 0`'s `recv` receives the combination of ranks `0..r`'s
    /// `send` (`MPI_Exscan`); rank 0's `recv` is not touched.
    fn exscan<T: Pod>(&self, send: &[T], recv: &mut [T], op: impl Operation<T>) -> Result<()>;

    /// [`exscan`](Collectives::exscan) with each rank's input in `buf`
    /// (rank 0's is left as it was).
    fn exscan_in_place<T: Pod>(&self, buf: &mut [T], op: impl Operation<T>) -> Result<()>;
}

fn same_len(what: &str, a: usize, b: usize) -> Result<()> {
    if a != b {
        return Err(bad_count(format!("{what}: send has {a} elements, receive {b}")));
    }
    Ok(())
}

/// The block length when `len` elements split into `n` equal blocks.
fn equal_blocks(what: &str, len: usize, n: usize) -> Result<usize> {
    if len % n != 0 {
        return Err(bad_count(format!("{what}: {len} elements do not split into {n} blocks")));
    }
    Ok(len / n)
}

fn bytes<T>(count: usize) -> usize {
    count * std::mem::size_of::<T>()
}

/// All-reduce into `buf`, of this rank's data in `input` or, without one,
/// in `buf`.
fn run_all_reduce<T: Pod>(
    comm: &Communicator,
    input: Option<&[T]>,
    buf: &mut [T],
    op: &impl Operation<T>,
) -> Result<()> {
    let copy_in = |buf: &mut [T]| {
        if let Some(data) = input {
            buf.copy_from_slice(data);
        }
    };
    if comm.size() == 1 {
        copy_in(buf);
        return Ok(());
    }
    let len = buf.len();
    let schedule = plans::allreduce(comm, len, bytes::<T>(len), op.commutative(), input.is_some())?;
    let ch = Channel::new(comm, CollTag::Allreduce);
    schedule::blocking::run(&ch, &schedule, input.unwrap_or(&[]), buf, op)?;
    ch.finish()
}

/// Reduces `acc` to the root (the result lands in the root's `acc`).
fn run_reduce<T: Pod>(
    comm: &Communicator,
    acc: &mut [T],
    op: &impl Operation<T>,
    root: usize,
) -> Result<()> {
    let ch = Channel::new(comm, CollTag::Reduce);
    match select::reduce(comm, bytes::<T>(acc.len()), acc.len(), op.commutative())? {
        select::Reduce::Binomial => reduce_binomial::reduce(&ch, acc, op, root)?,
        select::Reduce::Rabenseifner => {
            let schedule = plans::reduce_rabenseifner(comm, acc.len(), root);
            schedule::blocking::run(&ch, &schedule, &[], acc, op)?
        }
    }
    ch.finish()
}

fn run_all_gather<T: Pod>(
    comm: &Communicator,
    buf: &mut [T],
    counts: &[usize],
    displs: &[usize],
) -> Result<()> {
    let n = comm.size();
    let ranges = blocks(counts, displs, n, buf.len(), "all_gather_v")?;
    if !disjoint(&ranges) {
        return Err(bad_count("all_gather_v: the receive blocks overlap"));
    }
    let block = counts[0];
    let equal = counts.iter().all(|&c| c == block) && displs == packed(counts);
    let ch = Channel::new(comm, CollTag::Allgather);
    match select::allgather(comm, bytes::<T>(buf.len()), equal)? {
        select::Allgather::Ring => allgather_ring::all_gather(&ch, buf, &ranges)?,
        select::Allgather::Bruck => allgather_bruck::all_gather(&ch, buf, block)?,
        select::Allgather::RecursiveDoubling => {
            allgather_recursive_doubling::all_gather(&ch, buf, block)?
        }
    }
    ch.finish()
}

#[allow(clippy::too_many_arguments)]
fn run_all_to_all<T: Pod>(
    comm: &Communicator,
    send: &[T],
    scounts: &[usize],
    sdispls: &[usize],
    recv: &mut [T],
    rcounts: &[usize],
    rdispls: &[usize],
) -> Result<()> {
    let n = comm.size();
    let sblocks = blocks(scounts, sdispls, n, send.len(), "all_to_all_v (send)")?;
    let rblocks = blocks(rcounts, rdispls, n, recv.len(), "all_to_all_v (receive)")?;
    if !disjoint(&rblocks) {
        return Err(bad_count("all_to_all_v: the receive blocks overlap"));
    }
    let block = scounts[0];
    let equal = scounts.iter().chain(rcounts).all(|&c| c == block)
        && sdispls == packed(scounts)
        && rdispls == packed(rcounts);
    let ch = Channel::new(comm, CollTag::Alltoall);
    match select::alltoall(comm, bytes::<T>(block), equal)? {
        select::Alltoall::Pairwise => {
            alltoall_pairwise::all_to_all(&ch, send, &sblocks, recv, &rblocks)?
        }
        select::Alltoall::Bruck => alltoall_bruck::all_to_all(&ch, send, recv, block)?,
    }
    ch.finish()
}

fn gather_at_root<T: Pod>(
    comm: &Communicator,
    buf: &mut [T],
    counts: &[usize],
    displs: &[usize],
) -> Result<()> {
    let ranges = blocks(counts, displs, comm.size(), buf.len(), "gather_v")?;
    if !disjoint(&ranges) {
        return Err(bad_count("gather_v: the receive blocks overlap"));
    }
    let ch = Channel::new(comm, CollTag::Gather);
    gather_linear::gather_root(&ch, buf, &ranges)?;
    ch.finish()
}

fn gather_from_leaf<T: Pod>(comm: &Communicator, send: &[T], root: usize) -> Result<()> {
    let ch = Channel::new(comm, CollTag::Gather);
    gather_linear::gather_leaf(&ch, send, root)?;
    ch.finish()
}

fn scatter_from_root<T: Pod>(
    comm: &Communicator,
    buf: &[T],
    counts: &[usize],
    displs: &[usize],
) -> Result<()> {
    let ranges = blocks(counts, displs, comm.size(), buf.len(), "scatter_v")?;
    let ch = Channel::new(comm, CollTag::Scatter);
    scatter_linear::scatter_root(&ch, buf, &ranges)?;
    ch.finish()
}

fn scatter_to_leaf<T: Pod>(comm: &Communicator, recv: &mut [T], root: usize) -> Result<()> {
    let ch = Channel::new(comm, CollTag::Scatter);
    scatter_linear::scatter_leaf(&ch, recv, root)?;
    ch.finish()
}

fn equal_counts(n: usize, block: usize) -> (Vec<usize>, Vec<usize>) {
    let counts = vec![block; n];
    let displs = packed(&counts);
    (counts, displs)
}

/// Reduce-scatter of `work` (the whole input, overwritten); rank `r`'s
/// part of the result is left in `work[blocks[r]]`.
fn run_reduce_scatter<T: Pod>(
    comm: &Communicator,
    work: &mut [T],
    counts: &[usize],
    op: &impl Operation<T>,
) -> Result<std::ops::Range<usize>> {
    let n = comm.size();
    if counts.len() != n {
        return Err(bad_count(format!("reduce_scatter: {} counts for {n} ranks", counts.len())));
    }
    let total: usize = counts.iter().sum();
    if work.len() != total {
        return Err(bad_count(format!(
            "reduce_scatter: the input has {} elements, the counts add up to {total}",
            work.len()
        )));
    }
    let displs = packed(counts);
    let ranges = blocks(counts, &displs, n, total, "reduce_scatter")?;
    let me = comm.rank();
    if op.commutative() {
        let ch = Channel::new(comm, CollTag::ReduceScatter);
        reduce_scatter_ring::reduce_scatter(&ch, work, &ranges, op)?;
        ch.finish()?;
    } else {
        // In rank order: reduce everything to rank 0, then scatter.
        run_reduce(comm, work, op, 0)?;
        if me == 0 {
            scatter_from_root(comm, work, counts, &displs)?;
        } else {
            scatter_to_leaf(comm, &mut work[ranges[me].clone()], 0)?;
        }
    }
    Ok(ranges[me].clone())
}

fn run_scan<T: Pod>(
    comm: &Communicator,
    buf: &mut [T],
    op: &impl Operation<T>,
    exclusive: bool,
) -> Result<()> {
    let ch = Channel::new(comm, CollTag::Scan);
    scan_recursive_doubling::scan(&ch, buf, op, exclusive)?;
    ch.finish()
}

impl Collectives for Communicator {
    fn barrier(&self) -> Result<()> {
        let ch = Channel::new(self, CollTag::Barrier);
        let schedule = plans::barrier(self)?;
        schedule::blocking::run::<u8>(&ch, &schedule, &[], &mut [], &NoReduce)?;
        ch.finish()
    }

    fn broadcast<T: Pod>(&self, buf: &mut [T], root: usize) -> Result<()> {
        check_root(root, self.size())?;
        if self.size() == 1 {
            return Ok(());
        }
        let ch = Channel::new(self, CollTag::Bcast);
        let schedule = plans::bcast(self, buf.len(), bytes::<T>(buf.len()), root)?;
        schedule::blocking::run(&ch, &schedule, &[], buf, &NoReduce)?;
        ch.finish()
    }

    fn reduce<T: Pod>(
        &self,
        send: &[T],
        recv: &mut [T],
        op: impl Operation<T>,
        root: usize,
    ) -> Result<()> {
        check_root(root, self.size())?;
        if self.rank() == root {
            same_len("reduce", send.len(), recv.len())?;
            recv.copy_from_slice(send);
            run_reduce(self, recv, &op, root)
        } else {
            run_reduce(self, &mut send.to_vec(), &op, root)
        }
    }

    fn reduce_in_place<T: Pod>(
        &self,
        buf: &mut [T],
        op: impl Operation<T>,
        root: usize,
    ) -> Result<()> {
        check_root(root, self.size())?;
        if self.rank() == root {
            run_reduce(self, buf, &op, root)
        } else {
            run_reduce(self, &mut buf.to_vec(), &op, root)
        }
    }

    fn all_reduce<T: Pod>(&self, send: &[T], recv: &mut [T], op: impl Operation<T>) -> Result<()> {
        same_len("all_reduce", send.len(), recv.len())?;
        run_all_reduce(self, Some(send), recv, &op)
    }

    fn all_reduce_in_place<T: Pod>(&self, buf: &mut [T], op: impl Operation<T>) -> Result<()> {
        run_all_reduce(self, None, buf, &op)
    }

    fn all_reduce_sum_reproducible(&self, send: &[f64], recv: &mut [f64]) -> Result<()> {
        same_len("all_reduce_sum_reproducible", send.len(), recv.len())?;
        let mut exact: Vec<repro::Exact> =
            send.iter().map(|&x| repro::Exact::from_f64(x)).collect();
        run_all_reduce(self, None, &mut exact, &repro::ExactSum)?;
        for (r, e) in recv.iter_mut().zip(&exact) {
            *r = e.to_f64();
        }
        Ok(())
    }

    fn gather<T: Pod>(&self, send: &[T], recv: &mut [T], root: usize) -> Result<()> {
        let n = self.size();
        check_root(root, n)?;
        if self.rank() != root {
            return gather_from_leaf(self, send, root);
        }
        if recv.len() != n * send.len() {
            return Err(bad_count(format!(
                "gather: the root's receive buffer has {} elements, {n} ranks × {} expected",
                recv.len(),
                send.len()
            )));
        }
        let b = send.len();
        recv[root * b..(root + 1) * b].copy_from_slice(send);
        let (counts, displs) = equal_counts(n, b);
        gather_at_root(self, recv, &counts, &displs)
    }

    fn gather_in_place<T: Pod>(&self, buf: &mut [T], root: usize) -> Result<()> {
        let n = self.size();
        check_root(root, n)?;
        if self.rank() != root {
            return gather_from_leaf(self, buf, root);
        }
        let block = equal_blocks("gather_in_place", buf.len(), n)?;
        let (counts, displs) = equal_counts(n, block);
        gather_at_root(self, buf, &counts, &displs)
    }

    fn gather_v<T: Pod>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
        displs: &[usize],
        root: usize,
    ) -> Result<()> {
        check_root(root, self.size())?;
        if self.rank() != root {
            return gather_from_leaf(self, send, root);
        }
        let ranges = blocks(counts, displs, self.size(), recv.len(), "gather_v")?;
        same_len("gather_v (the root's own block)", send.len(), ranges[root].len())?;
        recv[ranges[root].clone()].copy_from_slice(send);
        gather_at_root(self, recv, counts, displs)
    }

    fn gather_v_in_place<T: Pod>(
        &self,
        buf: &mut [T],
        counts: &[usize],
        displs: &[usize],
        root: usize,
    ) -> Result<()> {
        check_root(root, self.size())?;
        if self.rank() != root {
            return gather_from_leaf(self, buf, root);
        }
        gather_at_root(self, buf, counts, displs)
    }

    fn scatter<T: Pod>(&self, send: &[T], recv: &mut [T], root: usize) -> Result<()> {
        let n = self.size();
        check_root(root, n)?;
        if self.rank() != root {
            return scatter_to_leaf(self, recv, root);
        }
        if send.len() != n * recv.len() {
            return Err(bad_count(format!(
                "scatter: the root's send buffer has {} elements, {n} ranks × {} expected",
                send.len(),
                recv.len()
            )));
        }
        let b = recv.len();
        recv.copy_from_slice(&send[root * b..(root + 1) * b]);
        let (counts, displs) = equal_counts(n, b);
        scatter_from_root(self, send, &counts, &displs)
    }

    fn scatter_in_place<T: Pod>(&self, buf: &mut [T], root: usize) -> Result<()> {
        let n = self.size();
        check_root(root, n)?;
        if self.rank() != root {
            return scatter_to_leaf(self, buf, root);
        }
        let block = equal_blocks("scatter_in_place", buf.len(), n)?;
        let (counts, displs) = equal_counts(n, block);
        scatter_from_root(self, buf, &counts, &displs)
    }

    fn scatter_v<T: Pod>(
        &self,
        send: &[T],
        counts: &[usize],
        displs: &[usize],
        recv: &mut [T],
        root: usize,
    ) -> Result<()> {
        check_root(root, self.size())?;
        if self.rank() != root {
            return scatter_to_leaf(self, recv, root);
        }
        let ranges = blocks(counts, displs, self.size(), send.len(), "scatter_v")?;
        same_len("scatter_v (the root's own block)", ranges[root].len(), recv.len())?;
        recv.copy_from_slice(&send[ranges[root].clone()]);
        scatter_from_root(self, send, counts, displs)
    }

    fn scatter_v_in_place<T: Pod>(
        &self,
        buf: &mut [T],
        counts: &[usize],
        displs: &[usize],
        root: usize,
    ) -> Result<()> {
        check_root(root, self.size())?;
        if self.rank() != root {
            return scatter_to_leaf(self, buf, root);
        }
        scatter_from_root(self, buf, counts, displs)
    }

    fn all_gather<T: Pod>(&self, send: &[T], recv: &mut [T]) -> Result<()> {
        let (n, me, b) = (self.size(), self.rank(), send.len());
        if recv.len() != n * b {
            return Err(bad_count(format!(
                "all_gather: the receive buffer has {} elements, {n} ranks × {b} expected",
                recv.len()
            )));
        }
        recv[me * b..(me + 1) * b].copy_from_slice(send);
        let (counts, displs) = equal_counts(n, b);
        run_all_gather(self, recv, &counts, &displs)
    }

    fn all_gather_in_place<T: Pod>(&self, buf: &mut [T]) -> Result<()> {
        let n = self.size();
        let block = equal_blocks("all_gather_in_place", buf.len(), n)?;
        let (counts, displs) = equal_counts(n, block);
        run_all_gather(self, buf, &counts, &displs)
    }

    fn all_gather_v<T: Pod>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
        displs: &[usize],
    ) -> Result<()> {
        let ranges = blocks(counts, displs, self.size(), recv.len(), "all_gather_v")?;
        let mine = ranges[self.rank()].clone();
        same_len("all_gather_v (this rank's block)", send.len(), mine.len())?;
        recv[mine].copy_from_slice(send);
        run_all_gather(self, recv, counts, displs)
    }

    fn all_gather_v_in_place<T: Pod>(
        &self,
        buf: &mut [T],
        counts: &[usize],
        displs: &[usize],
    ) -> Result<()> {
        run_all_gather(self, buf, counts, displs)
    }

    fn all_to_all<T: Pod>(&self, send: &[T], recv: &mut [T]) -> Result<()> {
        let n = self.size();
        same_len("all_to_all", send.len(), recv.len())?;
        let block = equal_blocks("all_to_all", send.len(), n)?;
        let (counts, displs) = equal_counts(n, block);
        run_all_to_all(self, send, &counts, &displs, recv, &counts, &displs)
    }

    fn all_to_all_in_place<T: Pod>(&self, buf: &mut [T]) -> Result<()> {
        let send = buf.to_vec();
        self.all_to_all(&send, buf)
    }

    fn all_to_all_v<T: Pod>(
        &self,
        send: &[T],
        send_counts: &[usize],
        send_displs: &[usize],
        recv: &mut [T],
        recv_counts: &[usize],
        recv_displs: &[usize],
    ) -> Result<()> {
        run_all_to_all(self, send, send_counts, send_displs, recv, recv_counts, recv_displs)
    }

    fn all_to_all_v_in_place<T: Pod>(
        &self,
        buf: &mut [T],
        counts: &[usize],
        displs: &[usize],
    ) -> Result<()> {
        let send = buf.to_vec();
        run_all_to_all(self, &send, counts, displs, buf, counts, displs)
    }

    fn reduce_scatter_block<T: Pod>(
        &self,
        send: &[T],
        recv: &mut [T],
        op: impl Operation<T>,
    ) -> Result<()> {
        let n = self.size();
        if send.len() != n * recv.len() {
            return Err(bad_count(format!(
                "reduce_scatter_block: the input has {} elements, {n} ranks × {} expected",
                send.len(),
                recv.len()
            )));
        }
        let mut work = send.to_vec();
        let (counts, _) = equal_counts(n, recv.len());
        let mine = run_reduce_scatter(self, &mut work, &counts, &op)?;
        recv.copy_from_slice(&work[mine]);
        Ok(())
    }

    fn reduce_scatter_block_in_place<T: Pod>(
        &self,
        buf: &mut [T],
        op: impl Operation<T>,
    ) -> Result<()> {
        let n = self.size();
        let block = equal_blocks("reduce_scatter_block_in_place", buf.len(), n)?;
        let (counts, _) = equal_counts(n, block);
        let mine = run_reduce_scatter(self, buf, &counts, &op)?;
        buf.copy_within(mine, 0);
        Ok(())
    }

    fn reduce_scatter<T: Pod>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
        op: impl Operation<T>,
    ) -> Result<()> {
        if let Some(&c) = counts.get(self.rank()) {
            same_len("reduce_scatter (this rank's count)", c, recv.len())?;
        }
        let mut work = send.to_vec();
        let mine = run_reduce_scatter(self, &mut work, counts, &op)?;
        recv.copy_from_slice(&work[mine]);
        Ok(())
    }

    fn reduce_scatter_in_place<T: Pod>(
        &self,
        buf: &mut [T],
        counts: &[usize],
        op: impl Operation<T>,
    ) -> Result<()> {
        let mine = run_reduce_scatter(self, buf, counts, &op)?;
        buf.copy_within(mine, 0);
        Ok(())
    }

    fn scan<T: Pod>(&self, send: &[T], recv: &mut [T], op: impl Operation<T>) -> Result<()> {
        same_len("scan", send.len(), recv.len())?;
        recv.copy_from_slice(send);
        run_scan(self, recv, &op, false)
    }

    fn scan_in_place<T: Pod>(&self, buf: &mut [T], op: impl Operation<T>) -> Result<()> {
        run_scan(self, buf, &op, false)
    }

    fn exscan<T: Pod>(&self, send: &[T], recv: &mut [T], op: impl Operation<T>) -> Result<()> {
        same_len("exscan", send.len(), recv.len())?;
        // The input travels in a copy: rank 0's `recv` must stay untouched.
        let mut work = send.to_vec();
        run_scan(self, &mut work, &op, true)?;
        if self.rank() > 0 {
            recv.copy_from_slice(&work);
        }
        Ok(())
    }

    fn exscan_in_place<T: Pod>(&self, buf: &mut [T], op: impl Operation<T>) -> Result<()> {
        run_scan(self, buf, &op, true)
    }
}
