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
//! in α-β-γ terms and its restrictions. Each is written as a *schedule*
//! (`schedule/`): rounds of sends and receives followed by local
//! combinations, which one executor runs blocking and another as a task of
//! the progress engine, so the blocking, non-blocking and persistent forms
//! of a collective run the same algorithm. [`select`] picks one per call by
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
//! Every collective has a non-blocking form, started in a
//! [`Scope`](hpcomm_runtime::Scope) through the [`NonBlocking`] trait and
//! completed like any other request (the progress engine advances it
//! whenever the rank communicates), and a persistent one
//! ([`PersistentCollectives`]: set up once, started again and again).
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
mod calls;
mod channel;
pub mod model;
mod neighbor;
mod nonblocking;
pub mod op;
mod persistent;
mod plans;
pub mod repro;
mod schedule;
pub mod select;
mod util;
pub mod window;

use bytemuck::Pod;
pub use hpcomm_runtime::Communicator;
#[cfg(doc)]
use hpcomm_runtime::Error;
use hpcomm_runtime::Result;
pub use neighbor::Neighborhood;
pub use nonblocking::NonBlocking;
pub use persistent::{Persistent, PersistentCollectives};

use channel::bad_count;
use op::Operation;
use schedule::blocking::NoReduce;

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

fn elem<T>() -> usize {
    std::mem::size_of::<T>()
}

impl Collectives for Communicator {
    fn barrier(&self) -> Result<()> {
        calls::barrier(self)?.run::<u8>(self, &[], &mut [], &NoReduce)
    }

    fn broadcast<T: Pod>(&self, buf: &mut [T], root: usize) -> Result<()> {
        calls::bcast(self, buf.len(), elem::<T>(), root)?.run(self, &[], buf, &NoReduce)
    }

    fn reduce<T: Pod>(
        &self,
        send: &[T],
        recv: &mut [T],
        op: impl Operation<T>,
        root: usize,
    ) -> Result<()> {
        let (s, r, c) = (send.len(), recv.len(), op.commutative());
        calls::reduce(self, s, r, elem::<T>(), c, root, false)?.run(self, send, recv, &op)
    }

    fn reduce_in_place<T: Pod>(
        &self,
        buf: &mut [T],
        op: impl Operation<T>,
        root: usize,
    ) -> Result<()> {
        let (len, c) = (buf.len(), op.commutative());
        let call = calls::reduce(self, len, len, elem::<T>(), c, root, true)?;
        if self.rank() == root {
            call.run(self, &[], buf, &op)
        } else {
            // Elsewhere the buffer is only the input.
            call.run(self, buf, &mut [], &op)
        }
    }

    fn all_reduce<T: Pod>(&self, send: &[T], recv: &mut [T], op: impl Operation<T>) -> Result<()> {
        let c = op.commutative();
        calls::all_reduce(self, Some(send.len()), recv.len(), elem::<T>(), c)?
            .run(self, send, recv, &op)
    }

    fn all_reduce_in_place<T: Pod>(&self, buf: &mut [T], op: impl Operation<T>) -> Result<()> {
        let c = op.commutative();
        calls::all_reduce(self, None, buf.len(), elem::<T>(), c)?.run(self, &[], buf, &op)
    }

    fn all_reduce_sum_reproducible(&self, send: &[f64], recv: &mut [f64]) -> Result<()> {
        calls::same_len("all_reduce_sum_reproducible", send.len(), recv.len())?;
        let mut exact: Vec<repro::Exact> =
            send.iter().map(|&x| repro::Exact::from_f64(x)).collect();
        self.all_reduce_in_place(&mut exact, repro::ExactSum)?;
        for (r, e) in recv.iter_mut().zip(&exact) {
            *r = e.to_f64();
        }
        Ok(())
    }

    fn gather<T: Pod>(&self, send: &[T], recv: &mut [T], root: usize) -> Result<()> {
        calls::gather(self, Some(send.len()), recv.len(), None, root)?
            .run(self, send, recv, &NoReduce)
    }

    fn gather_in_place<T: Pod>(&self, buf: &mut [T], root: usize) -> Result<()> {
        calls::gather(self, None, buf.len(), None, root)?.run(self, &[], buf, &NoReduce)
    }

    fn gather_v<T: Pod>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
        displs: &[usize],
        root: usize,
    ) -> Result<()> {
        calls::gather(self, Some(send.len()), recv.len(), Some((counts, displs)), root)?
            .run(self, send, recv, &NoReduce)
    }

    fn gather_v_in_place<T: Pod>(
        &self,
        buf: &mut [T],
        counts: &[usize],
        displs: &[usize],
        root: usize,
    ) -> Result<()> {
        calls::gather(self, None, buf.len(), Some((counts, displs)), root)?.run(
            self,
            &[],
            buf,
            &NoReduce,
        )
    }

    fn scatter<T: Pod>(&self, send: &[T], recv: &mut [T], root: usize) -> Result<()> {
        calls::scatter(self, Some(send.len()), recv.len(), None, root)?
            .run(self, send, recv, &NoReduce)
    }

    fn scatter_in_place<T: Pod>(&self, buf: &mut [T], root: usize) -> Result<()> {
        calls::scatter(self, None, buf.len(), None, root)?.run(self, &[], buf, &NoReduce)
    }

    fn scatter_v<T: Pod>(
        &self,
        send: &[T],
        counts: &[usize],
        displs: &[usize],
        recv: &mut [T],
        root: usize,
    ) -> Result<()> {
        calls::scatter(self, Some(send.len()), recv.len(), Some((counts, displs)), root)?
            .run(self, send, recv, &NoReduce)
    }

    fn scatter_v_in_place<T: Pod>(
        &self,
        buf: &mut [T],
        counts: &[usize],
        displs: &[usize],
        root: usize,
    ) -> Result<()> {
        calls::scatter(self, None, buf.len(), Some((counts, displs)), root)?.run(
            self,
            &[],
            buf,
            &NoReduce,
        )
    }

    fn all_gather<T: Pod>(&self, send: &[T], recv: &mut [T]) -> Result<()> {
        calls::all_gather(self, Some(send.len()), recv.len(), None, elem::<T>())?
            .run(self, send, recv, &NoReduce)
    }

    fn all_gather_in_place<T: Pod>(&self, buf: &mut [T]) -> Result<()> {
        calls::all_gather(self, None, buf.len(), None, elem::<T>())?.run(self, &[], buf, &NoReduce)
    }

    fn all_gather_v<T: Pod>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
        displs: &[usize],
    ) -> Result<()> {
        let shape = Some((counts, displs));
        calls::all_gather(self, Some(send.len()), recv.len(), shape, elem::<T>())?
            .run(self, send, recv, &NoReduce)
    }

    fn all_gather_v_in_place<T: Pod>(
        &self,
        buf: &mut [T],
        counts: &[usize],
        displs: &[usize],
    ) -> Result<()> {
        calls::all_gather(self, None, buf.len(), Some((counts, displs)), elem::<T>())?.run(
            self,
            &[],
            buf,
            &NoReduce,
        )
    }

    fn all_to_all<T: Pod>(&self, send: &[T], recv: &mut [T]) -> Result<()> {
        calls::all_to_all(self, send.len(), recv.len(), None, elem::<T>())?
            .run(self, send, recv, &NoReduce)
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
        let shape = Some([(send_counts, send_displs), (recv_counts, recv_displs)]);
        calls::all_to_all(self, send.len(), recv.len(), shape, elem::<T>())?
            .run(self, send, recv, &NoReduce)
    }

    fn all_to_all_v_in_place<T: Pod>(
        &self,
        buf: &mut [T],
        counts: &[usize],
        displs: &[usize],
    ) -> Result<()> {
        let send = buf.to_vec();
        self.all_to_all_v(&send, counts, displs, buf, counts, displs)
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
        self.reduce_scatter(send, recv, &vec![recv.len(); n], op)
    }

    fn reduce_scatter_block_in_place<T: Pod>(
        &self,
        buf: &mut [T],
        op: impl Operation<T>,
    ) -> Result<()> {
        let n = self.size();
        let block = calls::equal_blocks("reduce_scatter_block_in_place", buf.len(), n)?;
        self.reduce_scatter_in_place(buf, &vec![block; n], op)
    }

    fn reduce_scatter<T: Pod>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
        op: impl Operation<T>,
    ) -> Result<()> {
        let c = op.commutative();
        calls::reduce_scatter(self, Some(send.len()), recv.len(), counts, c)?
            .run(self, send, recv, &op)
    }

    fn reduce_scatter_in_place<T: Pod>(
        &self,
        buf: &mut [T],
        counts: &[usize],
        op: impl Operation<T>,
    ) -> Result<()> {
        let c = op.commutative();
        calls::reduce_scatter(self, None, buf.len(), counts, c)?.run(self, &[], buf, &op)
    }

    fn scan<T: Pod>(&self, send: &[T], recv: &mut [T], op: impl Operation<T>) -> Result<()> {
        calls::scan(self, Some(send.len()), recv.len(), false)?.run(self, send, recv, &op)
    }

    fn scan_in_place<T: Pod>(&self, buf: &mut [T], op: impl Operation<T>) -> Result<()> {
        calls::scan(self, None, buf.len(), false)?.run(self, &[], buf, &op)
    }

    fn exscan<T: Pod>(&self, send: &[T], recv: &mut [T], op: impl Operation<T>) -> Result<()> {
        // Rank 0's `recv` stays untouched: the schedule never writes it.
        calls::scan(self, Some(send.len()), recv.len(), true)?.run(self, send, recv, &op)
    }

    fn exscan_in_place<T: Pod>(&self, buf: &mut [T], op: impl Operation<T>) -> Result<()> {
        calls::scan(self, None, buf.len(), true)?.run(self, &[], buf, &op)
    }
}
