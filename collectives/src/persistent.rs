//! Persistent collectives (MPI-4's `MPI_Allreduce_init` and the rest):
//! the arguments checked and the algorithm's schedule built once, then
//! started as often as the program likes.
//!
//! An `*_init` method takes the arguments of its blocking form — buffers
//! only for their lengths — and returns a [`Persistent`]. Each
//! [`Persistent::start`] borrows the buffers for one operation in a
//! [`Scope`], as any non-blocking call does, checks only that their lengths
//! are those given at init, and runs the kept schedule as a task: no
//! argument checks, no selection, no planning on the hot path. Like MPI,
//! every rank must start its persistent collectives in the same order (and
//! in the same order as its other collectives on the communicator).
//!
//! The `*_init_in_place` forms (`MPI_IN_PLACE`) take one buffer, and
//! start with [`Persistent::start_in_place`].
//!
//! ```
//! use hpcomm_collectives::{op::Sum, PersistentCollectives};
//!
//! hpcomm_runtime::threads(3, |comm| {
//!     let mut mine = [0u64];
//!     let mut total = [0u64];
//!     let sum = comm.all_reduce_init(&mine, &total, Sum).unwrap();
//!     for step in 1..=4u64 {
//!         mine[0] = step * (comm.rank() as u64 + 1);
//!         comm.scope(|s| sum.start(s, &mine, &mut total)?.wait().map(|_| ())).unwrap();
//!         assert_eq!(total, [6 * step]);
//!     }
//! })
//! .unwrap();
//! ```

use std::marker::PhantomData;
use std::sync::Arc;

use bytemuck::Pod;
use hpcomm_runtime::{Communicator, ContextId, Error, Request, Result, Scope};

use crate::calls::{self, Call};
use crate::op::Operation;
use crate::schedule::task::{no_reduce, reduce_of, Reduce};
use crate::schedule::Schedule;

/// A collective set up once and started many times; see the module
/// documentation. Made by the [`PersistentCollectives`] methods.
pub struct Persistent<T> {
    ctx: ContextId,
    schedule: Arc<Schedule>,
    own_work: Option<usize>,
    mismatch: Option<String>,
    reduce: Reduce,
    /// The lengths of the buffers given at init.
    send: usize,
    recv: usize,
    what: &'static str,
    /// For an in-place collective, what its one buffer is to this rank.
    in_place: Option<Role>,
    _elem: PhantomData<fn(T) -> T>,
}

/// What the one buffer of an in-place collective is to a rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Read and written: the result lands in it.
    Output,
    /// Only read (a reduction's non-root ranks).
    Input,
}

impl<T> std::fmt::Debug for Persistent<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persistent")
            .field("what", &self.what)
            .field("send", &self.send)
            .field("recv", &self.recv)
            .finish()
    }
}

impl<T: Pod> Persistent<T> {
    pub(crate) fn new(
        comm: &Communicator,
        what: &'static str,
        call: Call,
        lens: (usize, usize),
        reduce: Reduce,
    ) -> Self {
        Persistent {
            ctx: comm.context(),
            schedule: Arc::new(call.plan.into_schedule()),
            own_work: call.own_work,
            mismatch: call.mismatch,
            reduce,
            send: lens.0,
            recv: lens.1,
            what,
            in_place: None,
            _elem: PhantomData,
        }
    }

    /// An in-place collective whose one buffer is, to this rank, the
    /// output (`output`) or only the input.
    fn in_place(mut self, output: bool) -> Self {
        self.in_place = Some(if output { Role::Output } else { Role::Input });
        self
    }

    fn check_comm(&self, comm: &Communicator) -> Result<()> {
        if comm.context() != self.ctx {
            return Err(Error::InvalidCount(format!(
                "{}: started on another communicator than the one it was made on",
                self.what
            )));
        }
        Ok(())
    }

    /// Starts one operation of an in-place collective (made by an
    /// `*_init_in_place` method) with its buffer, of the length given at
    /// init, on the scope's communicator.
    pub fn start_in_place<'r, 's>(
        &self,
        scope: &'r Scope<'s, '_>,
        buf: &'s mut [T],
    ) -> Result<Request<'r>> {
        self.check_comm(scope.comm())?;
        let Some(role) = self.in_place else {
            return Err(Error::InvalidCount(format!(
                "{}: not made in place; start it with its send and receive buffers",
                self.what
            )));
        };
        let want = self.send.max(self.recv);
        if buf.len() != want {
            return Err(Error::InvalidCount(format!(
                "{}: started with a buffer of {} elements, made for {want}",
                self.what,
                buf.len()
            )));
        }
        let state = (self.own_work, self.mismatch.clone());
        let (schedule, reduce) = (self.schedule.clone(), self.reduce.clone());
        match role {
            Role::Output => crate::nonblocking::launch(scope, schedule, state, &[], buf, reduce),
            Role::Input => crate::nonblocking::launch(scope, schedule, state, buf, &mut [], reduce),
        }
    }

    /// Starts one operation with `send` and `recv` (of the lengths given
    /// at init; for a barrier both empty, for a broadcast `send` empty and
    /// `recv` the buffer), on the scope's communicator, which must be the
    /// one the collective was made on.
    pub fn start<'r, 's>(
        &self,
        scope: &'r Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
    ) -> Result<Request<'r>> {
        self.check_comm(scope.comm())?;
        if self.in_place.is_some() {
            return Err(Error::InvalidCount(format!(
                "{}: made in place; start it with start_in_place",
                self.what
            )));
        }
        if send.len() != self.send || recv.len() != self.recv {
            return Err(Error::InvalidCount(format!(
                "{}: started with buffers of {} and {} elements, made for {} and {}",
                self.what,
                send.len(),
                recv.len(),
                self.send,
                self.recv
            )));
        }
        let state = (self.own_work, self.mismatch.clone());
        let reduce = self.reduce.clone();
        crate::nonblocking::launch(scope, self.schedule.clone(), state, send, recv, reduce)
    }
}

fn elem<T>() -> usize {
    std::mem::size_of::<T>()
}

/// The persistent collectives, as methods of [`Communicator`]: each takes
/// the arguments of its blocking form in
/// [`Collectives`](crate::Collectives) (buffers for their lengths only)
/// and checks them as it does.
pub trait PersistentCollectives {
    /// A barrier (`MPI_Barrier_init`); start it with two empty buffers.
    fn barrier_init(&self) -> Result<Persistent<u8>>;

    /// A broadcast (`MPI_Bcast_init`); start it with an empty `send` and the
    /// buffer as `recv`.
    fn broadcast_init<T: Pod>(&self, buf: &[T], root: usize) -> Result<Persistent<T>>;

    /// A reduction (`MPI_Reduce_init`).
    fn reduce_init<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        send: &[T],
        recv: &[T],
        op: O,
        root: usize,
    ) -> Result<Persistent<T>>;

    /// An all-reduce (`MPI_Allreduce_init`).
    fn all_reduce_init<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        send: &[T],
        recv: &[T],
        op: O,
    ) -> Result<Persistent<T>>;

    /// A gather of equal blocks (`MPI_Gather_init`).
    fn gather_init<T: Pod>(&self, send: &[T], recv: &[T], root: usize) -> Result<Persistent<T>>;

    /// A gather with counts (`MPI_Gatherv_init`).
    fn gather_v_init<T: Pod>(
        &self,
        send: &[T],
        recv: &[T],
        counts: &[usize],
        displs: &[usize],
        root: usize,
    ) -> Result<Persistent<T>>;

    /// A scatter of equal blocks (`MPI_Scatter_init`).
    fn scatter_init<T: Pod>(&self, send: &[T], recv: &[T], root: usize) -> Result<Persistent<T>>;

    /// A scatter with counts (`MPI_Scatterv_init`).
    fn scatter_v_init<T: Pod>(
        &self,
        send: &[T],
        counts: &[usize],
        displs: &[usize],
        recv: &[T],
        root: usize,
    ) -> Result<Persistent<T>>;

    /// An all-gather of equal blocks (`MPI_Allgather_init`).
    fn all_gather_init<T: Pod>(&self, send: &[T], recv: &[T]) -> Result<Persistent<T>>;

    /// An all-gather with counts (`MPI_Allgatherv_init`).
    fn all_gather_v_init<T: Pod>(
        &self,
        send: &[T],
        recv: &[T],
        counts: &[usize],
        displs: &[usize],
    ) -> Result<Persistent<T>>;

    /// An all-to-all of equal blocks (`MPI_Alltoall_init`).
    fn all_to_all_init<T: Pod>(&self, send: &[T], recv: &[T]) -> Result<Persistent<T>>;

    /// An all-to-all with counts (`MPI_Alltoallv_init`).
    #[allow(clippy::too_many_arguments)]
    fn all_to_all_v_init<T: Pod>(
        &self,
        send: &[T],
        send_counts: &[usize],
        send_displs: &[usize],
        recv: &[T],
        recv_counts: &[usize],
        recv_displs: &[usize],
    ) -> Result<Persistent<T>>;

    /// A reduce-scatter with a count per rank (`MPI_Reduce_scatter_init`).
    fn reduce_scatter_init<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        send: &[T],
        recv: &[T],
        counts: &[usize],
        op: O,
    ) -> Result<Persistent<T>>;

    /// An inclusive scan (`MPI_Scan_init`).
    fn scan_init<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        send: &[T],
        recv: &[T],
        op: O,
    ) -> Result<Persistent<T>>;

    /// An exclusive scan (`MPI_Exscan_init`).
    fn exscan_init<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        send: &[T],
        recv: &[T],
        op: O,
    ) -> Result<Persistent<T>>;

    /// An in-place all-reduce (`MPI_Allreduce_init` with `MPI_IN_PLACE`):
    /// each rank's input in `buf`, replaced by the result.
    fn all_reduce_init_in_place<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        buf: &[T],
        op: O,
    ) -> Result<Persistent<T>>;

    /// An in-place reduction: the root's `buf` replaced by the result, the
    /// others' only read.
    fn reduce_init_in_place<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        buf: &[T],
        op: O,
        root: usize,
    ) -> Result<Persistent<T>>;

    /// An in-place gather of equal blocks: the root's own block already in
    /// its place in `buf`; elsewhere `buf` is the block sent.
    fn gather_init_in_place<T: Pod>(&self, buf: &[T], root: usize) -> Result<Persistent<T>>;

    /// An in-place scatter of equal blocks: the root's `buf` holds every
    /// block and keeps its own; elsewhere `buf` receives.
    fn scatter_init_in_place<T: Pod>(&self, buf: &[T], root: usize) -> Result<Persistent<T>>;

    /// An in-place all-gather: each rank's own block already in its place.
    fn all_gather_init_in_place<T: Pod>(&self, buf: &[T]) -> Result<Persistent<T>>;

    /// An in-place inclusive scan: each rank's input replaced by its
    /// result.
    fn scan_init_in_place<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        buf: &[T],
        op: O,
    ) -> Result<Persistent<T>>;

    /// An in-place exclusive scan (rank 0's buffer left as it was).
    fn exscan_init_in_place<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        buf: &[T],
        op: O,
    ) -> Result<Persistent<T>>;
}

impl PersistentCollectives for Communicator {
    fn barrier_init(&self) -> Result<Persistent<u8>> {
        let call = calls::barrier(self)?;
        Ok(Persistent::new(self, "barrier_init", call, (0, 0), no_reduce()))
    }

    fn broadcast_init<T: Pod>(&self, buf: &[T], root: usize) -> Result<Persistent<T>> {
        let call = calls::bcast(self, buf.len(), elem::<T>(), root)?;
        Ok(Persistent::new(self, "broadcast_init", call, (0, buf.len()), no_reduce()))
    }

    fn reduce_init<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        send: &[T],
        recv: &[T],
        op: O,
        root: usize,
    ) -> Result<Persistent<T>> {
        let (s, r, c) = (send.len(), recv.len(), op.commutative());
        let call = calls::reduce(self, s, r, elem::<T>(), c, root, false)?;
        Ok(Persistent::new(self, "reduce_init", call, (s, r), reduce_of(op)))
    }

    fn all_reduce_init<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        send: &[T],
        recv: &[T],
        op: O,
    ) -> Result<Persistent<T>> {
        let (s, r, c) = (send.len(), recv.len(), op.commutative());
        let call = calls::all_reduce(self, Some(s), r, elem::<T>(), c)?;
        Ok(Persistent::new(self, "all_reduce_init", call, (s, r), reduce_of(op)))
    }

    fn gather_init<T: Pod>(&self, send: &[T], recv: &[T], root: usize) -> Result<Persistent<T>> {
        let (s, r) = (send.len(), recv.len());
        let call = calls::gather(self, Some(s), r, None, root)?;
        Ok(Persistent::new(self, "gather_init", call, (s, r), no_reduce()))
    }

    fn gather_v_init<T: Pod>(
        &self,
        send: &[T],
        recv: &[T],
        counts: &[usize],
        displs: &[usize],
        root: usize,
    ) -> Result<Persistent<T>> {
        let (s, r) = (send.len(), recv.len());
        let call = calls::gather(self, Some(s), r, Some((counts, displs)), root)?;
        Ok(Persistent::new(self, "gather_v_init", call, (s, r), no_reduce()))
    }

    fn scatter_init<T: Pod>(&self, send: &[T], recv: &[T], root: usize) -> Result<Persistent<T>> {
        let (s, r) = (send.len(), recv.len());
        let call = calls::scatter(self, Some(s), r, None, root)?;
        Ok(Persistent::new(self, "scatter_init", call, (s, r), no_reduce()))
    }

    fn scatter_v_init<T: Pod>(
        &self,
        send: &[T],
        counts: &[usize],
        displs: &[usize],
        recv: &[T],
        root: usize,
    ) -> Result<Persistent<T>> {
        let (s, r) = (send.len(), recv.len());
        let call = calls::scatter(self, Some(s), r, Some((counts, displs)), root)?;
        Ok(Persistent::new(self, "scatter_v_init", call, (s, r), no_reduce()))
    }

    fn all_gather_init<T: Pod>(&self, send: &[T], recv: &[T]) -> Result<Persistent<T>> {
        let (s, r) = (send.len(), recv.len());
        let call = calls::all_gather(self, Some(s), r, None, elem::<T>())?;
        Ok(Persistent::new(self, "all_gather_init", call, (s, r), no_reduce()))
    }

    fn all_gather_v_init<T: Pod>(
        &self,
        send: &[T],
        recv: &[T],
        counts: &[usize],
        displs: &[usize],
    ) -> Result<Persistent<T>> {
        let (s, r) = (send.len(), recv.len());
        let call = calls::all_gather(self, Some(s), r, Some((counts, displs)), elem::<T>())?;
        Ok(Persistent::new(self, "all_gather_v_init", call, (s, r), no_reduce()))
    }

    fn all_to_all_init<T: Pod>(&self, send: &[T], recv: &[T]) -> Result<Persistent<T>> {
        let (s, r) = (send.len(), recv.len());
        let call = calls::all_to_all(self, s, r, None, elem::<T>())?;
        Ok(Persistent::new(self, "all_to_all_init", call, (s, r), no_reduce()))
    }

    fn all_to_all_v_init<T: Pod>(
        &self,
        send: &[T],
        send_counts: &[usize],
        send_displs: &[usize],
        recv: &[T],
        recv_counts: &[usize],
        recv_displs: &[usize],
    ) -> Result<Persistent<T>> {
        let (s, r) = (send.len(), recv.len());
        let shape = Some([(send_counts, send_displs), (recv_counts, recv_displs)]);
        let call = calls::all_to_all(self, s, r, shape, elem::<T>())?;
        Ok(Persistent::new(self, "all_to_all_v_init", call, (s, r), no_reduce()))
    }

    fn reduce_scatter_init<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        send: &[T],
        recv: &[T],
        counts: &[usize],
        op: O,
    ) -> Result<Persistent<T>> {
        let (s, r, c) = (send.len(), recv.len(), op.commutative());
        let call = calls::reduce_scatter(self, Some(s), r, counts, c)?;
        Ok(Persistent::new(self, "reduce_scatter_init", call, (s, r), reduce_of(op)))
    }

    fn scan_init<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        send: &[T],
        recv: &[T],
        op: O,
    ) -> Result<Persistent<T>> {
        let (s, r) = (send.len(), recv.len());
        let call = calls::scan(self, Some(s), r, false)?;
        Ok(Persistent::new(self, "scan_init", call, (s, r), reduce_of(op)))
    }

    fn exscan_init<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        send: &[T],
        recv: &[T],
        op: O,
    ) -> Result<Persistent<T>> {
        let (s, r) = (send.len(), recv.len());
        let call = calls::scan(self, Some(s), r, true)?;
        Ok(Persistent::new(self, "exscan_init", call, (s, r), reduce_of(op)))
    }

    fn all_reduce_init_in_place<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        buf: &[T],
        op: O,
    ) -> Result<Persistent<T>> {
        let (n, c) = (buf.len(), op.commutative());
        let call = calls::all_reduce(self, None, n, elem::<T>(), c)?;
        let what = "all_reduce_init_in_place";
        Ok(Persistent::new(self, what, call, (0, n), reduce_of(op)).in_place(true))
    }

    fn reduce_init_in_place<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        buf: &[T],
        op: O,
        root: usize,
    ) -> Result<Persistent<T>> {
        let (n, c) = (buf.len(), op.commutative());
        let call = calls::reduce(self, n, n, elem::<T>(), c, root, true)?;
        let what = "reduce_init_in_place";
        Ok(match self.rank() == root {
            true => Persistent::new(self, what, call, (0, n), reduce_of(op)).in_place(true),
            false => Persistent::new(self, what, call, (n, 0), reduce_of(op)).in_place(false),
        })
    }

    fn gather_init_in_place<T: Pod>(&self, buf: &[T], root: usize) -> Result<Persistent<T>> {
        let call = calls::gather(self, None, buf.len(), None, root)?;
        let what = "gather_init_in_place";
        Ok(Persistent::new(self, what, call, (0, buf.len()), no_reduce()).in_place(true))
    }

    fn scatter_init_in_place<T: Pod>(&self, buf: &[T], root: usize) -> Result<Persistent<T>> {
        let call = calls::scatter(self, None, buf.len(), None, root)?;
        let what = "scatter_init_in_place";
        Ok(Persistent::new(self, what, call, (0, buf.len()), no_reduce()).in_place(true))
    }

    fn all_gather_init_in_place<T: Pod>(&self, buf: &[T]) -> Result<Persistent<T>> {
        let call = calls::all_gather(self, None, buf.len(), None, elem::<T>())?;
        let what = "all_gather_init_in_place";
        Ok(Persistent::new(self, what, call, (0, buf.len()), no_reduce()).in_place(true))
    }

    fn scan_init_in_place<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        buf: &[T],
        op: O,
    ) -> Result<Persistent<T>> {
        let call = calls::scan(self, None, buf.len(), false)?;
        let what = "scan_init_in_place";
        Ok(Persistent::new(self, what, call, (0, buf.len()), reduce_of(op)).in_place(true))
    }

    fn exscan_init_in_place<T: Pod, O: Operation<T> + Send + Sync + 'static>(
        &self,
        buf: &[T],
        op: O,
    ) -> Result<Persistent<T>> {
        let call = calls::scan(self, None, buf.len(), true)?;
        let what = "exscan_init_in_place";
        Ok(Persistent::new(self, what, call, (0, buf.len()), reduce_of(op)).in_place(true))
    }
}
