//! Non-blocking collectives: `ibarrier`, `ibroadcast`, `iall_reduce` and
//! `iall_to_all_v`, started in a [`Scope`] and completed like any other
//! request.
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

use std::mem::size_of;

use bytemuck::Pod;
use hpcomm_runtime::task::{Task, TaskCx, Transfer};
use hpcomm_runtime::{Communicator, Error, Request, Result, Scope};

use crate::channel::{blocks, check_root};
use crate::op::Operation;
use crate::plans;
use crate::schedule::task::{no_reduce, reduce_of, ScheduleTask};
use crate::util::disjoint;

/// The tag of the next non-blocking collective on `comm`: above the
/// blocking ones, one per operation number (modulo 2²⁴).
fn tag_for(comm: &Communicator) -> i32 {
    1024 + (comm.next_collective() & 0xff_ffff) as i32
}

/// The non-blocking collectives, started in a [`Scope`].
pub trait NonBlocking<'s> {
    /// Starts a barrier (`MPI_Ibarrier`): completes once every rank has
    /// started it.
    fn ibarrier(&self) -> Result<Request<'_>>;

    /// Starts a broadcast of the root's `buf` into every other rank's
    /// (`MPI_Ibcast`).
    fn ibroadcast<T: Pod>(&self, buf: &'s mut [T], root: usize) -> Result<Request<'_>>;

    /// Starts an all-reduce of every rank's `send` into `recv`
    /// (`MPI_Iallreduce`); both stay borrowed until the scope ends (`send`
    /// is read in place, not copied), and `op` is kept until the operation
    /// completes.
    fn iall_reduce<T: Pod, O: Operation<T> + 'static>(
        &self,
        send: &'s [T],
        recv: &'s mut [T],
        op: O,
    ) -> Result<Request<'_>>;

    /// Starts an all-to-all with counts and displacements on both sides
    /// (`MPI_Ialltoallv`).
    #[allow(clippy::too_many_arguments)]
    fn iall_to_all_v<T: Pod>(
        &self,
        send: &[T],
        send_counts: &[usize],
        send_displs: &[usize],
        recv: &'s mut [T],
        recv_counts: &[usize],
        recv_displs: &[usize],
    ) -> Result<Request<'_>>;
}

impl<'s, 'env> NonBlocking<'s> for Scope<'s, 'env> {
    fn ibarrier(&self) -> Result<Request<'_>> {
        let comm = self.comm();
        let task =
            ScheduleTask::new(plans::barrier(comm)?.into_schedule(), tag_for(comm), 1, no_reduce());
        Ok(self.start_task(None, None, Box::new(task)))
    }

    fn ibroadcast<T: Pod>(&self, buf: &'s mut [T], root: usize) -> Result<Request<'_>> {
        let comm = self.comm();
        check_root(root, comm.size())?;
        let len = buf.len();
        let schedule = plans::bcast(comm, len, std::mem::size_of_val(buf), root)?.into_schedule();
        let task = ScheduleTask::new(schedule, tag_for(comm), size_of::<T>(), no_reduce());
        Ok(self.start_task(None, Some(bytemuck::cast_slice_mut(buf)), Box::new(task)))
    }

    fn iall_reduce<T: Pod, O: Operation<T> + 'static>(
        &self,
        send: &'s [T],
        recv: &'s mut [T],
        op: O,
    ) -> Result<Request<'_>> {
        if send.len() != recv.len() {
            return Err(Error::InvalidCount(format!(
                "iall_reduce: send has {} elements, receive {}",
                send.len(),
                recv.len()
            )));
        }
        let comm = self.comm();
        let len = send.len();
        let bytes = std::mem::size_of_val(send);
        let schedule = plans::allreduce(comm, len, bytes, op.commutative(), true)?.into_schedule();
        let task = ScheduleTask::new(schedule, tag_for(comm), size_of::<T>(), reduce_of(op));
        let (input, output) = (bytemuck::cast_slice(send), bytemuck::cast_slice_mut(recv));
        Ok(self.start_task(Some(input), Some(output), Box::new(task)))
    }

    fn iall_to_all_v<T: Pod>(
        &self,
        send: &[T],
        send_counts: &[usize],
        send_displs: &[usize],
        recv: &'s mut [T],
        recv_counts: &[usize],
        recv_displs: &[usize],
    ) -> Result<Request<'_>> {
        let comm = self.comm();
        let n = comm.size();
        let sblocks = blocks(send_counts, send_displs, n, send.len(), "iall_to_all_v (send)")?;
        let rblocks = blocks(recv_counts, recv_displs, n, recv.len(), "iall_to_all_v (receive)")?;
        if !disjoint(&rblocks) {
            return Err(Error::InvalidCount("iall_to_all_v: the receive blocks overlap".into()));
        }
        let size = std::mem::size_of::<T>();
        let bytes = |b: &std::ops::Range<usize>| b.start * size..b.end * size;
        let tag = tag_for(comm);
        let task = Alltoallv {
            tag,
            outgoing: sblocks
                .iter()
                .map(|b| bytemuck::cast_slice(&send[b.clone()]).to_vec())
                .collect(),
            incoming: rblocks.iter().map(bytes).collect(),
            started: false,
            round: Round::default(),
        };
        Ok(self.start_task(None, Some(bytemuck::cast_slice_mut(recv)), Box::new(task)))
    }
}

/// The transfers of one step, and what arrived.
#[derive(Default)]
struct Round {
    sends: Vec<Transfer>,
    /// Receives: transfer, bytes expected, and a key for the caller.
    recvs: Vec<(Transfer, usize, usize)>,
    arrived: Vec<(usize, Vec<u8>)>,
    mismatch: Option<String>,
}

impl Round {
    fn send(&mut self, cx: &mut TaskCx<'_>, to: usize, tag: i32, data: Vec<u8>) -> Result<()> {
        self.sends.push(cx.send(to, tag, data)?);
        Ok(())
    }

    fn recv(
        &mut self,
        cx: &mut TaskCx<'_>,
        from: usize,
        tag: i32,
        len: usize,
        key: usize,
    ) -> Result<()> {
        self.recvs.push((cx.recv(from, tag, len)?, len, key));
        Ok(())
    }

    /// Collects finished transfers; whether all have finished.
    fn poll(&mut self, cx: &mut TaskCx<'_>) -> Result<bool> {
        let mut failure = None;
        self.sends.retain(|&t| match cx.test(t) {
            None => true,
            Some(Ok(_)) => false,
            Some(Err(e)) => {
                failure.get_or_insert(e);
                false
            }
        });
        let mut still = Vec::with_capacity(self.recvs.len());
        for (t, len, key) in self.recvs.drain(..) {
            match cx.test(t) {
                None => still.push((t, len, key)),
                Some(Ok(data)) => {
                    if data.len() != len {
                        self.mismatch.get_or_insert(format!(
                            "{} bytes arrived where {len} were expected",
                            data.len()
                        ));
                    }
                    let mut data = data;
                    data.resize(len, 0);
                    self.arrived.push((key, data));
                }
                Some(Err(Error::Truncated { needed, capacity })) => {
                    self.mismatch.get_or_insert(format!(
                        "{needed} bytes arrived where {capacity} were expected"
                    ));
                    self.arrived.push((key, vec![0; len]));
                }
                Some(Err(e)) => {
                    failure.get_or_insert(e);
                }
            }
        }
        self.recvs = still;
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(self.sends.is_empty() && self.recvs.is_empty())
    }

    /// The outcome at the end: the first mismatch seen, if any.
    fn finish(&self) -> Result<()> {
        match &self.mismatch {
            Some(m) => Err(Error::CollectiveMismatch(m.clone())),
            None => Ok(()),
        }
    }
}

/// All-to-all with counts: every transfer posted at once.
struct Alltoallv {
    tag: i32,
    outgoing: Vec<Vec<u8>>,
    /// Where each rank's block goes in the output, in bytes.
    incoming: Vec<std::ops::Range<usize>>,
    started: bool,
    round: Round,
}

impl Task for Alltoallv {
    fn poll(&mut self, cx: &mut TaskCx<'_>) -> Result<bool> {
        let (n, me) = (cx.size(), cx.rank());
        if !self.started {
            self.started = true;
            for step in 1..n {
                let from = (me + n - step) % n;
                self.round.recv(cx, from, self.tag, self.incoming[from].len(), from)?;
            }
            for step in 1..n {
                let to = (me + step) % n;
                let data = std::mem::take(&mut self.outgoing[to]);
                self.round.send(cx, to, self.tag, data)?;
            }
            let own = std::mem::take(&mut self.outgoing[me]);
            if own.len() != self.incoming[me].len() {
                self.round.mismatch.get_or_insert(format!(
                    "this rank sends itself {} bytes but expects {}",
                    own.len(),
                    self.incoming[me].len()
                ));
            } else {
                self.round.arrived.push((me, own));
            }
        }
        if !self.round.poll(cx)? {
            return Ok(false);
        }
        let arrived = std::mem::take(&mut self.round.arrived);
        let incoming = &self.incoming;
        cx.write_output(|out| {
            for (from, data) in &arrived {
                out[incoming[*from].clone()].copy_from_slice(data);
            }
        })?;
        self.round.finish().map(|()| true)
    }
}
