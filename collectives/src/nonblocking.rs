//! Non-blocking collectives (MPI-3's `MPI_I…`): every collective of
//! [`Collectives`](crate::Collectives), and the in-place variants of the
//! reductions, gathers, scatters and scans (`MPI_IN_PLACE`), started in a
//! [`Scope`] and completed like any other request.
//!
//! Each runs the schedule of the algorithm the blocking form would choose
//! ([`select`](crate::select), the same files in `algorithms/`) as a task
//! that the progress engine advances whenever the rank is in any
//! communication call, as MPI requires, so that a rank that waits on
//! something else still does its part. Buffers stay borrowed by the scope
//! until the operation completes: the input is read where it lies, the
//! result is built in the output. Messages carry a tag derived from the
//! operation's number on its communicator
//! ([`Communicator::next_collective`]), so operations in flight together
//! never take each other's messages.
//!
//! ```
//! use hpcomm_collectives::{op::Sum, NonBlocking};
//!
//! hpcomm_runtime::threads(3, |comm| {
//!     // Both buffers stay borrowed until the scope ends.
//!     let (mine, mut total) = ([comm.rank() as u64 + 1], [0u64]);
//!     comm.scope(|s| {
//!         let r = s.iall_reduce(&mine, &mut total, Sum)?;
//!         // ... overlap other work here ...
//!         r.wait()?;
//!         Ok(())
//!     })
//!     .unwrap();
//!     assert_eq!(total, [6]);
//! })
//! .unwrap();
//! ```

use std::sync::Arc;

use bytemuck::Pod;
use hpcomm_runtime::{Communicator, Request, Result, Scope};

use crate::calls::{self, Call};
use crate::op::Operation;
use crate::schedule::task::{no_reduce, reduce_of, Reduce, ScheduleTask};
use crate::schedule::{Schedule, LANES};

/// The first tag of the next non-blocking collective on `comm`: above the
/// blocking ones, [`LANES`] per operation number (modulo 2²⁴).
pub(crate) fn tag_for(comm: &Communicator) -> Result<i32> {
    Ok(1024 + (comm.next_collective()? & 0xff_ffff) as i32 * i32::from(LANES))
}

/// Starts a checked call as a task of the scope's progress engine.
pub(crate) fn start<'r, 's, T: Pod>(
    scope: &'r Scope<'s, '_>,
    call: Call,
    input: &'s [T],
    output: &'s mut [T],
    reduce: Reduce,
) -> Result<Request<'r>> {
    let schedule = Arc::new(call.plan.into_schedule());
    launch(scope, schedule, (call.own_work, call.mismatch), input, output, reduce)
}

/// Starts `schedule` as a task: with a work buffer of its own of `own`
/// elements (else the output), reporting `mismatch` at its end.
pub(crate) fn launch<'r, 's, T: Pod>(
    scope: &'r Scope<'s, '_>,
    schedule: Arc<Schedule>,
    (own, mismatch): (Option<usize>, Option<String>),
    input: &'s [T],
    output: &'s mut [T],
    reduce: Reduce,
) -> Result<Request<'r>> {
    let comm = scope.comm();
    let elem = std::mem::size_of::<T>();
    let task = ScheduleTask::new(schedule, tag_for(comm)?, elem, reduce).with_mismatch(mismatch);
    let (task, output) = match own {
        Some(len) => (task.with_own_work(len), None),
        None => (task, Some(bytemuck::cast_slice_mut(output))),
    };
    scope.start_task(Some(bytemuck::cast_slice(input)), output, Box::new(task))
}

fn elem<T>() -> usize {
    std::mem::size_of::<T>()
}

/// The non-blocking collectives, started in a [`Scope`]. Each takes the
/// arguments of its blocking form in [`Collectives`](crate::Collectives),
/// with the buffers borrowed until the scope ends: inputs are read in place
/// (never copied as a whole), results are built in the outputs. Buffers a
/// rank does not use (a gather's receive buffer off the root) may be empty.
pub trait NonBlocking<'s> {
    /// Starts a barrier (`MPI_Ibarrier`): completes once every rank has
    /// started it.
    fn ibarrier(&self) -> Result<Request<'_>>;

    /// Starts a broadcast of the root's `buf` into every other rank's
    /// (`MPI_Ibcast`).
    fn ibroadcast<T: Pod>(&self, buf: &'s mut [T], root: usize) -> Result<Request<'_>>;

    /// Starts a reduction of every rank's `send` into the root's `recv`
    /// (`MPI_Ireduce`).
    fn ireduce<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        send: &'s [T],
        recv: &'s mut [T],
        op: O,
        root: usize,
    ) -> Result<Request<'_>>;

    /// Starts an all-reduce of every rank's `send` into `recv`
    /// (`MPI_Iallreduce`); `op` is kept until the operation completes.
    fn iall_reduce<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        send: &'s [T],
        recv: &'s mut [T],
        op: O,
    ) -> Result<Request<'_>>;

    /// Starts a gather of equal blocks into the root's `recv`
    /// (`MPI_Igather`).
    fn igather<T: Pod>(&self, send: &'s [T], recv: &'s mut [T], root: usize)
        -> Result<Request<'_>>;

    /// Starts a gather with a count and displacement per rank
    /// (`MPI_Igatherv`).
    fn igather_v<T: Pod>(
        &self,
        send: &'s [T],
        recv: &'s mut [T],
        counts: &[usize],
        displs: &[usize],
        root: usize,
    ) -> Result<Request<'_>>;

    /// Starts a scatter of the root's `send` in equal blocks
    /// (`MPI_Iscatter`).
    fn iscatter<T: Pod>(
        &self,
        send: &'s [T],
        recv: &'s mut [T],
        root: usize,
    ) -> Result<Request<'_>>;

    /// Starts a scatter with a count and displacement per rank
    /// (`MPI_Iscatterv`).
    fn iscatter_v<T: Pod>(
        &self,
        send: &'s [T],
        counts: &[usize],
        displs: &[usize],
        recv: &'s mut [T],
        root: usize,
    ) -> Result<Request<'_>>;

    /// Starts an all-gather of equal blocks (`MPI_Iallgather`).
    fn iall_gather<T: Pod>(&self, send: &'s [T], recv: &'s mut [T]) -> Result<Request<'_>>;

    /// Starts an all-gather with a count and displacement per rank
    /// (`MPI_Iallgatherv`).
    fn iall_gather_v<T: Pod>(
        &self,
        send: &'s [T],
        recv: &'s mut [T],
        counts: &[usize],
        displs: &[usize],
    ) -> Result<Request<'_>>;

    /// Starts an all-to-all of equal blocks (`MPI_Ialltoall`).
    fn iall_to_all<T: Pod>(&self, send: &'s [T], recv: &'s mut [T]) -> Result<Request<'_>>;

    /// Starts an all-to-all with counts and displacements on both sides
    /// (`MPI_Ialltoallv`).
    #[allow(clippy::too_many_arguments)]
    fn iall_to_all_v<T: Pod>(
        &self,
        send: &'s [T],
        send_counts: &[usize],
        send_displs: &[usize],
        recv: &'s mut [T],
        recv_counts: &[usize],
        recv_displs: &[usize],
    ) -> Result<Request<'_>>;

    /// Starts a reduce-scatter of equal blocks
    /// (`MPI_Ireduce_scatter_block`).
    fn ireduce_scatter_block<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        send: &'s [T],
        recv: &'s mut [T],
        op: O,
    ) -> Result<Request<'_>>;

    /// Starts a reduce-scatter with a count per rank
    /// (`MPI_Ireduce_scatter`).
    fn ireduce_scatter<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        send: &'s [T],
        recv: &'s mut [T],
        counts: &[usize],
        op: O,
    ) -> Result<Request<'_>>;

    /// Starts an inclusive scan (`MPI_Iscan`): rank `r`'s `recv` gets the
    /// combination of ranks `0..=r`'s `send`, in rank order.
    fn iscan<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        send: &'s [T],
        recv: &'s mut [T],
        op: O,
    ) -> Result<Request<'_>>;

    /// Starts an exclusive scan (`MPI_Iexscan`): rank `r`'s `recv` gets the
    /// combination of ranks `0..r`'s `send`; rank 0's is not written.
    fn iexscan<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        send: &'s [T],
        recv: &'s mut [T],
        op: O,
    ) -> Result<Request<'_>>;

    /// [`iall_reduce`](NonBlocking::iall_reduce) with each rank's input in
    /// `buf`, replaced by the result (`MPI_IN_PLACE`).
    fn iall_reduce_in_place<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        buf: &'s mut [T],
        op: O,
    ) -> Result<Request<'_>>;

    /// [`ireduce`](NonBlocking::ireduce) with each rank's input in `buf`;
    /// the root's is replaced by the result, the others' left as they were.
    fn ireduce_in_place<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        buf: &'s mut [T],
        op: O,
        root: usize,
    ) -> Result<Request<'_>>;

    /// [`igather`](NonBlocking::igather) in place: the root's own block
    /// already lies in its place in `buf`; elsewhere `buf` is the block
    /// sent.
    fn igather_in_place<T: Pod>(&self, buf: &'s mut [T], root: usize) -> Result<Request<'_>>;

    /// [`iscatter`](NonBlocking::iscatter) in place: the root's `buf` holds
    /// every block and keeps its own where it is; elsewhere `buf` receives.
    fn iscatter_in_place<T: Pod>(&self, buf: &'s mut [T], root: usize) -> Result<Request<'_>>;

    /// [`iall_gather`](NonBlocking::iall_gather) with each rank's own block
    /// already in its place in `buf`.
    fn iall_gather_in_place<T: Pod>(&self, buf: &'s mut [T]) -> Result<Request<'_>>;

    /// [`iscan`](NonBlocking::iscan) with each rank's input in `buf`,
    /// replaced by its result.
    fn iscan_in_place<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        buf: &'s mut [T],
        op: O,
    ) -> Result<Request<'_>>;

    /// [`iexscan`](NonBlocking::iexscan) with each rank's input in `buf`,
    /// replaced by its result (rank 0's left as it was).
    fn iexscan_in_place<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        buf: &'s mut [T],
        op: O,
    ) -> Result<Request<'_>>;
}

impl<'s, 'env> NonBlocking<'s> for Scope<'s, 'env> {
    fn ibarrier(&self) -> Result<Request<'_>> {
        let call = calls::barrier(self.comm())?;
        start::<u8>(self, call, &[], &mut [], no_reduce())
    }

    fn ibroadcast<T: Pod>(&self, buf: &'s mut [T], root: usize) -> Result<Request<'_>> {
        let call = calls::bcast(self.comm(), buf.len(), elem::<T>(), root)?;
        start(self, call, &[], buf, no_reduce())
    }

    fn ireduce<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        send: &'s [T],
        recv: &'s mut [T],
        op: O,
        root: usize,
    ) -> Result<Request<'_>> {
        let (s, r, c) = (send.len(), recv.len(), op.commutative());
        let call = calls::reduce(self.comm(), s, r, elem::<T>(), c, root, false)?;
        start(self, call, send, recv, reduce_of(op))
    }

    fn iall_reduce<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        send: &'s [T],
        recv: &'s mut [T],
        op: O,
    ) -> Result<Request<'_>> {
        let c = op.commutative();
        let call = calls::all_reduce(self.comm(), Some(send.len()), recv.len(), elem::<T>(), c)?;
        start(self, call, send, recv, reduce_of(op))
    }

    fn igather<T: Pod>(
        &self,
        send: &'s [T],
        recv: &'s mut [T],
        root: usize,
    ) -> Result<Request<'_>> {
        let call = calls::gather(self.comm(), Some(send.len()), recv.len(), None, root)?;
        start(self, call, send, recv, no_reduce())
    }

    fn igather_v<T: Pod>(
        &self,
        send: &'s [T],
        recv: &'s mut [T],
        counts: &[usize],
        displs: &[usize],
        root: usize,
    ) -> Result<Request<'_>> {
        let shape = Some((counts, displs));
        let call = calls::gather(self.comm(), Some(send.len()), recv.len(), shape, root)?;
        start(self, call, send, recv, no_reduce())
    }

    fn iscatter<T: Pod>(
        &self,
        send: &'s [T],
        recv: &'s mut [T],
        root: usize,
    ) -> Result<Request<'_>> {
        let call = calls::scatter(self.comm(), Some(send.len()), recv.len(), None, root)?;
        start(self, call, send, recv, no_reduce())
    }

    fn iscatter_v<T: Pod>(
        &self,
        send: &'s [T],
        counts: &[usize],
        displs: &[usize],
        recv: &'s mut [T],
        root: usize,
    ) -> Result<Request<'_>> {
        let shape = Some((counts, displs));
        let call = calls::scatter(self.comm(), Some(send.len()), recv.len(), shape, root)?;
        start(self, call, send, recv, no_reduce())
    }

    fn iall_gather<T: Pod>(&self, send: &'s [T], recv: &'s mut [T]) -> Result<Request<'_>> {
        let call = calls::all_gather(self.comm(), Some(send.len()), recv.len(), None, elem::<T>())?;
        start(self, call, send, recv, no_reduce())
    }

    fn iall_gather_v<T: Pod>(
        &self,
        send: &'s [T],
        recv: &'s mut [T],
        counts: &[usize],
        displs: &[usize],
    ) -> Result<Request<'_>> {
        let shape = Some((counts, displs));
        let call =
            calls::all_gather(self.comm(), Some(send.len()), recv.len(), shape, elem::<T>())?;
        start(self, call, send, recv, no_reduce())
    }

    fn iall_to_all<T: Pod>(&self, send: &'s [T], recv: &'s mut [T]) -> Result<Request<'_>> {
        let call = calls::all_to_all(self.comm(), send.len(), recv.len(), None, elem::<T>())?;
        start(self, call, send, recv, no_reduce())
    }

    fn iall_to_all_v<T: Pod>(
        &self,
        send: &'s [T],
        send_counts: &[usize],
        send_displs: &[usize],
        recv: &'s mut [T],
        recv_counts: &[usize],
        recv_displs: &[usize],
    ) -> Result<Request<'_>> {
        let shape = Some([(send_counts, send_displs), (recv_counts, recv_displs)]);
        let call = calls::all_to_all(self.comm(), send.len(), recv.len(), shape, elem::<T>())?;
        start(self, call, send, recv, no_reduce())
    }

    fn ireduce_scatter_block<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        send: &'s [T],
        recv: &'s mut [T],
        op: O,
    ) -> Result<Request<'_>> {
        let n = self.comm().size();
        if send.len() != n * recv.len() {
            return Err(crate::channel::bad_count(format!(
                "ireduce_scatter_block: the input has {} elements, {n} ranks × {} expected",
                send.len(),
                recv.len()
            )));
        }
        self.ireduce_scatter(send, recv, &vec![recv.len(); n], op)
    }

    fn ireduce_scatter<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        send: &'s [T],
        recv: &'s mut [T],
        counts: &[usize],
        op: O,
    ) -> Result<Request<'_>> {
        let (s, r, c) = (send.len(), recv.len(), op.commutative());
        let call = calls::reduce_scatter(self.comm(), Some(s), r, counts, c)?;
        start(self, call, send, recv, reduce_of(op))
    }

    fn iscan<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        send: &'s [T],
        recv: &'s mut [T],
        op: O,
    ) -> Result<Request<'_>> {
        let call = calls::scan(self.comm(), Some(send.len()), recv.len(), false)?;
        start(self, call, send, recv, reduce_of(op))
    }

    fn iexscan<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        send: &'s [T],
        recv: &'s mut [T],
        op: O,
    ) -> Result<Request<'_>> {
        let call = calls::scan(self.comm(), Some(send.len()), recv.len(), true)?;
        start(self, call, send, recv, reduce_of(op))
    }

    fn iall_reduce_in_place<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        buf: &'s mut [T],
        op: O,
    ) -> Result<Request<'_>> {
        let c = op.commutative();
        let call = calls::all_reduce(self.comm(), None, buf.len(), elem::<T>(), c)?;
        start(self, call, &[], buf, reduce_of(op))
    }

    fn ireduce_in_place<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        buf: &'s mut [T],
        op: O,
        root: usize,
    ) -> Result<Request<'_>> {
        let (len, c) = (buf.len(), op.commutative());
        let call = calls::reduce(self.comm(), len, len, elem::<T>(), c, root, true)?;
        match self.comm().rank() == root {
            true => start(self, call, &[], buf, reduce_of(op)),
            // Elsewhere the buffer is only the input.
            false => start(self, call, buf, &mut [], reduce_of(op)),
        }
    }

    fn igather_in_place<T: Pod>(&self, buf: &'s mut [T], root: usize) -> Result<Request<'_>> {
        let call = calls::gather(self.comm(), None, buf.len(), None, root)?;
        start(self, call, &[], buf, no_reduce())
    }

    fn iscatter_in_place<T: Pod>(&self, buf: &'s mut [T], root: usize) -> Result<Request<'_>> {
        let call = calls::scatter(self.comm(), None, buf.len(), None, root)?;
        start(self, call, &[], buf, no_reduce())
    }

    fn iall_gather_in_place<T: Pod>(&self, buf: &'s mut [T]) -> Result<Request<'_>> {
        let call = calls::all_gather(self.comm(), None, buf.len(), None, elem::<T>())?;
        start(self, call, &[], buf, no_reduce())
    }

    fn iscan_in_place<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        buf: &'s mut [T],
        op: O,
    ) -> Result<Request<'_>> {
        let call = calls::scan(self.comm(), None, buf.len(), false)?;
        start(self, call, &[], buf, reduce_of(op))
    }

    fn iexscan_in_place<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        buf: &'s mut [T],
        op: O,
    ) -> Result<Request<'_>> {
        let call = calls::scan(self.comm(), None, buf.len(), true)?;
        start(self, call, &[], buf, reduce_of(op))
    }
}
