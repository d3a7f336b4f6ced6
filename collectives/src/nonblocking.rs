//! Non-blocking collectives: `ibarrier`, `ibroadcast`, `iall_reduce` and
//! `iall_to_all_v`, started in a [`Scope`] and completed like any other
//! request.
//!
//! Each is a [`Task`] that the progress engine advances whenever the rank
//! is in any communication call, as MPI requires, so that a rank that
//! waits on something else still does its part. Inputs are copied when the
//! operation starts (the send buffer may be reused at once); results are
//! written into the receive buffer, which stays borrowed by the scope,
//! when the operation completes. Messages carry a tag derived from the
//! operation's number on its communicator
//! ([`Communicator::next_collective`]), so operations in flight together
//! never take each other's messages.
//!
//! The algorithms are the short-message ones — dissemination barrier,
//! binomial broadcast, recursive-doubling all-reduce (any operation,
//! folding onto a power of two), and an all-to-all that posts every
//! transfer at once — whose costs are given in `algorithms/`.
//!
//! ```
//! use hpcomm_collectives::{op::Sum, NonBlocking};
//!
//! hpcomm_runtime::threads(3, |comm| {
//!     let mut total = [0u64];
//!     comm.scope(|s| {
//!         let r = s.iall_reduce(&[comm.rank() as u64 + 1], &mut total, Sum)?;
//!         // ... overlap other work here ...
//!         r.wait()?;
//!         Ok(())
//!     })
//!     .unwrap();
//!     assert_eq!(total, [6]);
//! })
//! .unwrap();
//! ```

use bytemuck::Pod;
use hpcomm_runtime::task::{Task, TaskCx, Transfer};
use hpcomm_runtime::{Error, Request, Result, Scope};

#[cfg(doc)]
use hpcomm_runtime::Communicator;

use crate::channel::{blocks, check_root};
use crate::op::Operation;
use crate::util::{disjoint, pof2_below};

/// Tags of non-blocking collectives: above the blocking ones, one per
/// operation number (modulo 2²⁴).
fn tag_for(sequence: u32) -> i32 {
    1024 + (sequence & 0xff_ffff) as i32
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
    /// (`MPI_Iallreduce`); `op` is kept until the operation completes.
    fn iall_reduce<T: Pod, O: Operation<T> + 'static>(
        &self,
        send: &[T],
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
        let tag = tag_for(self.comm().next_collective());
        Ok(self.start_task(None, Box::new(Barrier { tag, k: 1, round: Round::default() })))
    }

    fn ibroadcast<T: Pod>(&self, buf: &'s mut [T], root: usize) -> Result<Request<'_>> {
        let comm = self.comm();
        check_root(root, comm.size())?;
        let tag = tag_for(comm.next_collective());
        let bytes: &'s mut [u8] = bytemuck::cast_slice_mut(buf);
        let task = Bcast {
            tag,
            root,
            len: bytes.len(),
            data: if comm.rank() == root { Some(bytes.to_vec()) } else { None },
            phase: BcastPhase::Start,
            round: Round::default(),
        };
        let output = (comm.rank() != root).then_some(bytes);
        Ok(self.start_task(output, Box::new(task)))
    }

    fn iall_reduce<T: Pod, O: Operation<T> + 'static>(
        &self,
        send: &[T],
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
        let tag = tag_for(comm.next_collective());
        let task = Allreduce {
            tag,
            acc: bytemuck::cast_slice(send).to_vec(),
            plan: allreduce_plan(comm.rank(), comm.size()),
            step: 0,
            started: false,
            round: Round::default(),
            reduce: Box::new(move |acc: &mut [u8], other: &[u8], acc_left: bool| {
                reduce_bytes(&op, acc, other, acc_left)
            }),
        };
        Ok(self.start_task(Some(bytemuck::cast_slice_mut(recv)), Box::new(task)))
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
        let tag = tag_for(comm.next_collective());
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
        Ok(self.start_task(Some(bytemuck::cast_slice_mut(recv)), Box::new(task)))
    }
}

/// Combines byte buffers as elements of `T`; works on aligned copies when
/// the bytes are not aligned for `T`.
fn reduce_bytes<T: Pod>(op: &impl Operation<T>, acc: &mut [u8], other: &[u8], acc_left: bool) {
    match (bytemuck::try_cast_slice_mut::<u8, T>(acc), bytemuck::try_cast_slice::<u8, T>(other)) {
        (Ok(a), Ok(b)) => op.apply(a, b, acc_left),
        _ => {
            let n = acc.len() / std::mem::size_of::<T>();
            let mut a = vec![T::zeroed(); n];
            let mut b = vec![T::zeroed(); n];
            bytemuck::cast_slice_mut(&mut a).copy_from_slice(acc);
            bytemuck::cast_slice_mut(&mut b).copy_from_slice(other);
            op.apply(&mut a, &b, acc_left);
            acc.copy_from_slice(bytemuck::cast_slice(&a));
        }
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

/// Dissemination barrier, one round at a time.
struct Barrier {
    tag: i32,
    k: usize,
    round: Round,
}

impl Task for Barrier {
    fn poll(&mut self, cx: &mut TaskCx<'_>) -> Result<bool> {
        let (n, me) = (cx.size(), cx.rank());
        loop {
            if !self.round.poll(cx)? {
                return Ok(false);
            }
            self.round.arrived.clear();
            if self.k >= n {
                return self.round.finish().map(|()| true);
            }
            self.round.recv(cx, (me + n - self.k) % n, self.tag, 0, 0)?;
            self.round.send(cx, (me + self.k) % n, self.tag, Vec::new())?;
            self.k <<= 1;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BcastPhase {
    Start,
    Receiving,
    Forwarding,
}

/// Binomial broadcast: receive from the parent, then send to every child
/// at once.
struct Bcast {
    tag: i32,
    root: usize,
    len: usize,
    data: Option<Vec<u8>>,
    phase: BcastPhase,
    round: Round,
}

impl Task for Bcast {
    fn poll(&mut self, cx: &mut TaskCx<'_>) -> Result<bool> {
        let (n, me) = (cx.size(), cx.rank());
        let rel = (me + n - self.root) % n;
        // The parent is rel minus its lowest set bit; children are rel plus
        // each smaller power of two.
        let low = if rel == 0 { n.next_power_of_two() } else { 1 << rel.trailing_zeros() };
        loop {
            match self.phase {
                BcastPhase::Start => {
                    if rel != 0 {
                        let parent = (rel - low + self.root) % n;
                        self.round.recv(cx, parent, self.tag, self.len, 0)?;
                    }
                    self.phase = BcastPhase::Receiving;
                }
                BcastPhase::Receiving => {
                    if !self.round.poll(cx)? {
                        return Ok(false);
                    }
                    if let Some((_, data)) = self.round.arrived.pop() {
                        self.data = Some(data);
                    }
                    let data = self.data.as_ref().expect("the root's data or the parent's");
                    let mut mask = low >> 1;
                    while mask > 0 {
                        if rel + mask < n {
                            let child = (rel + mask + self.root) % n;
                            self.round.send(cx, child, self.tag, data.clone())?;
                        }
                        mask >>= 1;
                    }
                    self.phase = BcastPhase::Forwarding;
                }
                BcastPhase::Forwarding => {
                    if !self.round.poll(cx)? {
                        return Ok(false);
                    }
                    if rel != 0 {
                        let data = self.data.take().unwrap_or_default();
                        cx.write_output(|out| out.copy_from_slice(&data))?;
                    }
                    return self.round.finish().map(|()| true);
                }
            }
        }
    }
}

/// One step of the recursive-doubling all-reduce.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Hand everything to the partner (a folded-out rank).
    Give(usize),
    /// Combine the partner's data in, its run of ranks on the given side.
    Take(usize, bool),
    /// Exchange and combine.
    Exchange(usize, bool),
    /// Send the result to a folded-out rank.
    GiveResult(usize),
    /// Receive the result.
    TakeResult(usize),
}

/// The steps of rank `me` of `n`: fold onto a power of two, recursive
/// doubling, unfold (as `algorithms/allreduce_recursive_doubling.rs`).
fn allreduce_plan(me: usize, n: usize) -> Vec<Step> {
    let pof2 = pof2_below(n);
    let rem = n - pof2;
    let rank_of = |nr: usize| if nr < rem { 2 * nr + 1 } else { nr + rem };
    let mut plan = Vec::new();
    let newrank = if me < 2 * rem {
        if me % 2 == 0 {
            plan.push(Step::Give(me + 1));
            plan.push(Step::TakeResult(me + 1));
            return plan;
        }
        plan.push(Step::Take(me - 1, false));
        me / 2
    } else {
        me - rem
    };
    let mut mask = 1;
    while mask < pof2 {
        let partner = newrank ^ mask;
        plan.push(Step::Exchange(rank_of(partner), newrank < partner));
        mask <<= 1;
    }
    if me < 2 * rem {
        plan.push(Step::GiveResult(me - 1));
    }
    plan
}

type Reduce = Box<dyn Fn(&mut [u8], &[u8], bool)>;

struct Allreduce {
    tag: i32,
    acc: Vec<u8>,
    plan: Vec<Step>,
    step: usize,
    started: bool,
    round: Round,
    reduce: Reduce,
}

impl Task for Allreduce {
    fn poll(&mut self, cx: &mut TaskCx<'_>) -> Result<bool> {
        let len = self.acc.len();
        loop {
            if self.started {
                if !self.round.poll(cx)? {
                    return Ok(false);
                }
                let arrived = self.round.arrived.pop().map(|(_, d)| d);
                match (self.plan[self.step], arrived) {
                    (Step::Take(_, left) | Step::Exchange(_, left), Some(data)) => {
                        (self.reduce)(&mut self.acc, &data, left)
                    }
                    (Step::TakeResult(_), Some(data)) => self.acc = data,
                    _ => {}
                }
                self.step += 1;
                self.started = false;
            }
            let Some(&step) = self.plan.get(self.step) else {
                let acc = std::mem::take(&mut self.acc);
                cx.write_output(|out| out.copy_from_slice(&acc))?;
                return self.round.finish().map(|()| true);
            };
            match step {
                Step::Give(to) | Step::GiveResult(to) => {
                    self.round.send(cx, to, self.tag, self.acc.clone())?
                }
                Step::Take(from, _) | Step::TakeResult(from) => {
                    self.round.recv(cx, from, self.tag, len, 0)?
                }
                Step::Exchange(peer, _) => {
                    self.round.recv(cx, peer, self.tag, len, 0)?;
                    self.round.send(cx, peer, self.tag, self.acc.clone())?;
                }
            }
            self.started = true;
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
