//! Runs a schedule as a progress-engine task: the non-blocking form of
//! every collective built from one.
//!
//! Each poll finishes what it can of the current round (collects the
//! transfers that completed; once all have, lands the received pieces and
//! applies the round's local steps) and posts the next round, until the
//! schedule ends. The input and output are the caller's buffers, borrowed
//! by the scope and reached through the task's context: the input is never
//! copied as a whole, the result is built in the output itself. Pieces of
//! the input and output are sent from where they lie and received straight
//! into their place (windows of the scope's regions,
//! [`TaskCx::send_in_place`], [`TaskCx::recv_in_place`]). What is copied:
//! pieces of scratch (which later rounds change) and of a work buffer of
//! the task's own, into a message buffer the engine owns, and pieces
//! received into scratch, out of one.
//!
//! Those message buffers come back when their transfers end and are kept,
//! per thread (per rank), for the next rounds and the next collectives
//! ([`Pool`]): allocated fresh each time, a large buffer is returned to the
//! kernel when freed and faulted in page by page when touched again, which
//! made a 1 MiB non-blocking all-reduce three times slower than reusing.

use std::cell::RefCell;
use std::ops::Range;
use std::sync::Arc;

use bytemuck::Pod;
use hpcomm_runtime::task::{Task, TaskCx, Transfer};
use hpcomm_runtime::{Error, Result};

use super::{Buf, Piece, Schedule, Step};
use crate::op::Operation;

/// Combines byte buffers as elements of one type (shared by the starts of a
/// persistent collective).
pub(crate) type Reduce = Arc<dyn Fn(&mut [u8], &[u8], bool) + Send + Sync>;

/// The byte-level combination of `op` on elements of `T`.
pub(crate) fn reduce_of<T: Pod, O: Operation<T> + Send + Sync + 'static>(op: O) -> Reduce {
    Arc::new(move |acc: &mut [u8], other: &[u8], acc_left: bool| {
        reduce_bytes(&op, acc, other, acc_left)
    })
}

/// The combination of a schedule that combines nothing.
pub(crate) fn no_reduce() -> Reduce {
    Arc::new(|_: &mut [u8], _: &[u8], _: bool| {
        debug_assert!(false, "a schedule without an operation combined pieces")
    })
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

/// The message buffers a rank keeps between transfers: at most
/// [`Pool::BUFFERS`] buffers and [`Pool::BYTES`] bytes, the smallest let go
/// first.
struct Pool;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

impl Pool {
    const BUFFERS: usize = 16;
    const BYTES: usize = 64 << 20;

    /// A buffer with room for `len` bytes (its contents are stale), the
    /// smallest kept one that fits, else a new one.
    fn take(len: usize) -> Vec<u8> {
        let kept = POOL.try_with(|pool| {
            let mut pool = pool.try_borrow_mut().ok()?;
            let best = (0..pool.len())
                .filter(|&i| pool[i].capacity() >= len)
                .min_by_key(|&i| pool[i].capacity())?;
            Some(pool.swap_remove(best))
        });
        kept.ok().flatten().unwrap_or_else(|| Vec::with_capacity(len))
    }

    /// Keeps a buffer whose transfer ended.
    fn give(buf: Vec<u8>) {
        if buf.capacity() == 0 {
            return;
        }
        let _ = POOL.try_with(|pool| {
            let Ok(mut pool) = pool.try_borrow_mut() else { return };
            pool.push(buf);
            while pool.len() > Pool::BUFFERS
                || pool.iter().map(Vec::capacity).sum::<usize>() > Pool::BYTES
            {
                let smallest = (0..pool.len()).min_by_key(|&i| pool[i].capacity());
                match smallest {
                    Some(i) => drop(pool.swap_remove(i)),
                    None => break,
                }
            }
        });
    }

    /// A buffer of exactly `len` bytes for a receive: a kept one shortened
    /// or lengthened (only new bytes are zeroed).
    fn take_len(len: usize) -> Vec<u8> {
        let mut buf = Pool::take(len);
        buf.resize(len, 0);
        buf
    }
}

/// A schedule in progress; see the module documentation.
pub(crate) struct ScheduleTask {
    schedule: Arc<Schedule>,
    rounds: Vec<Range<usize>>,
    /// The round in progress (posted) or next to post.
    at: usize,
    posted: bool,
    tag: i32,
    /// Bytes per element.
    elem: usize,
    reduce: Reduce,
    scratch: Vec<u8>,
    /// The work buffer when the task has no output (a reduction's
    /// non-root ranks, which still combine their subtree's data).
    own_work: Option<Vec<u8>>,
    sends: Vec<Transfer>,
    /// Receives in flight: into a buffer (`false`), or straight into the
    /// output (`true`).
    recvs: Vec<(Transfer, Piece, bool)>,
    arrived: Vec<(Piece, Vec<u8>)>,
    mismatch: Option<String>,
}

impl ScheduleTask {
    /// A task running `schedule` with messages tagged from `tag` (one per
    /// lane), on elements of
    /// `elem` bytes, combining with `reduce`.
    pub(crate) fn new(
        schedule: Arc<Schedule>,
        tag: i32,
        elem: usize,
        reduce: Reduce,
    ) -> ScheduleTask {
        ScheduleTask {
            rounds: schedule.round_ranges(),
            scratch: Pool::take_len(schedule.scratch * elem),
            own_work: None,
            schedule,
            at: 0,
            posted: false,
            tag,
            elem,
            reduce,
            sends: Vec::new(),
            recvs: Vec::new(),
            arrived: Vec::new(),
            mismatch: None,
        }
    }

    /// Reports `mismatch` at the end, after the schedule ran (a disagreement
    /// the caller's checks found that concerns the peers too).
    pub(crate) fn with_mismatch(mut self, mismatch: Option<String>) -> ScheduleTask {
        self.mismatch = mismatch;
        self
    }

    /// Works in a buffer of its own of at most `len` elements (as many as
    /// the schedule names) instead of an output.
    pub(crate) fn with_own_work(mut self, len: usize) -> ScheduleTask {
        self.own_work = Some(Pool::take_len(self.schedule.work.min(len) * self.elem));
        self
    }

    fn bytes(&self, p: &Piece) -> Range<usize> {
        p.range.start * self.elem..p.range.end * self.elem
    }

    /// A copy of a piece, in a kept buffer.
    fn read(&self, cx: &mut TaskCx<'_>, p: &Piece) -> Result<Vec<u8>> {
        let r = self.bytes(p);
        if r.is_empty() {
            return Ok(Vec::new());
        }
        let mut buf = Pool::take(r.len());
        buf.clear();
        let mut copy = |b: &[u8]| b.get(r.clone()).map(|piece| buf.extend_from_slice(piece));
        match (p.buf, &self.own_work) {
            (Buf::Input, _) => cx.read_input(copy)?,
            (Buf::Work, Some(work)) => copy(work),
            (Buf::Work, None) => cx.write_output(|b| copy(b))?,
            (Buf::Scratch, _) => copy(&self.scratch),
        }
        .ok_or_else(outside)?;
        Ok(buf)
    }

    /// Runs `f` on the bytes of a writable piece.
    fn write<R>(
        &mut self,
        cx: &mut TaskCx<'_>,
        p: &Piece,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R> {
        let r = self.bytes(p);
        match (p.buf, &mut self.own_work) {
            (Buf::Input, _) => Err(Error::Protocol("a collective schedule wrote its input".into())),
            (Buf::Work, _) if r.is_empty() => Ok(f(&mut [])),
            (Buf::Work, Some(work)) => work.get_mut(r).map(f).ok_or_else(outside),
            (Buf::Work, None) => cx.write_output(|b| b.get_mut(r).map(f))?.ok_or_else(outside),
            (Buf::Scratch, _) => self.scratch.get_mut(r).map(f).ok_or_else(outside),
        }
    }

    fn post(&mut self, cx: &mut TaskCx<'_>) -> Result<()> {
        let range = self.rounds[self.at].clone();
        for i in range {
            match &self.schedule.steps[i] {
                Step::Send { to, piece, lane } => {
                    let (to, piece, tag) = (*to, piece.clone(), self.tag + i32::from(*lane));
                    // From the caller's buffers where they lie; a copy of
                    // scratch (which the next rounds change) or of a
                    // work buffer of the task's own.
                    let sent = match (piece.buf, &self.own_work) {
                        (Buf::Input, _) => cx.send_in_place(to, tag, false, self.bytes(&piece))?,
                        (Buf::Work, None) => cx.send_in_place(to, tag, true, self.bytes(&piece))?,
                        _ => None,
                    };
                    let sent = match sent {
                        Some(t) => t,
                        None => {
                            let data = self.read(cx, &piece)?;
                            cx.send(to, tag, data)?
                        }
                    };
                    self.sends.push(sent);
                }
                Step::Recv { from, piece, lane } => {
                    let len = piece.len() * self.elem;
                    let (from, piece, tag) = (*from, piece.clone(), self.tag + i32::from(*lane));
                    let direct = match (piece.buf, &self.own_work) {
                        (Buf::Work, None) => cx.recv_in_place(from, tag, self.bytes(&piece))?,
                        _ => None,
                    };
                    match direct {
                        Some(t) => self.recvs.push((t, piece, true)),
                        None => {
                            let t = cx.recv_into(from, tag, Pool::take_len(len))?;
                            self.recvs.push((t, piece, false));
                        }
                    }
                }
                _ => break,
            }
        }
        self.posted = true;
        Ok(())
    }

    /// Collects finished transfers; whether all of the round's have.
    fn collect(&mut self, cx: &mut TaskCx<'_>) -> Result<bool> {
        let mut failure = None;
        self.sends.retain(|&t| match cx.test(t) {
            None => true,
            Some(Ok(buf)) => {
                Pool::give(buf);
                false
            }
            Some(Err(e)) => {
                failure.get_or_insert(e);
                false
            }
        });
        let mut i = 0;
        while i < self.recvs.len() {
            let (t, ref piece, direct) = self.recvs[i];
            let len = piece.len() * self.elem;
            if direct {
                let Some(outcome) = cx.received(t) else {
                    i += 1;
                    continue;
                };
                self.recvs.swap_remove(i);
                match outcome {
                    Ok(bytes) if bytes != len => {
                        self.mismatch.get_or_insert(format!(
                            "{bytes} bytes arrived where {len} were expected"
                        ));
                    }
                    Ok(_) => {}
                    Err(Error::Truncated { needed, capacity }) => {
                        self.mismatch.get_or_insert(format!(
                            "{needed} bytes arrived where {capacity} were expected"
                        ));
                    }
                    Err(e) => {
                        failure.get_or_insert(e);
                    }
                }
                continue;
            }
            let Some(outcome) = cx.test(t) else {
                i += 1;
                continue;
            };
            let (_, piece, _) = self.recvs.swap_remove(i);
            match outcome {
                Ok(mut data) => {
                    if data.len() != len {
                        self.mismatch.get_or_insert(format!(
                            "{} bytes arrived where {len} were expected",
                            data.len()
                        ));
                        data.resize(len, 0);
                    }
                    self.arrived.push((piece, data));
                }
                Err(Error::Truncated { needed, capacity }) => {
                    self.mismatch.get_or_insert(format!(
                        "{needed} bytes arrived where {capacity} were expected"
                    ));
                    self.arrived.push((piece, vec![0; len]));
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(self.sends.is_empty() && self.recvs.is_empty())
    }

    /// Lands the received pieces and applies the round's local steps.
    fn complete(&mut self, cx: &mut TaskCx<'_>) -> Result<()> {
        for (piece, data) in std::mem::take(&mut self.arrived) {
            self.write(cx, &piece, |b| b.copy_from_slice(&data))?;
            Pool::give(data);
        }
        let range = self.rounds[self.at].clone();
        for i in range {
            match self.schedule.steps[i].clone() {
                Step::Reduce { into, operand, into_left }
                    if operand.buf == Buf::Scratch && into.buf == Buf::Work =>
                {
                    // The common case, combined in place: what arrived in
                    // scratch into the result.
                    let scratch = std::mem::take(&mut self.scratch);
                    let other = scratch.get(self.bytes(&operand)).ok_or_else(outside);
                    let reduce = self.reduce.clone();
                    let done =
                        other.and_then(|o| self.write(cx, &into, |b| reduce(b, o, into_left)));
                    self.scratch = scratch;
                    done?;
                }
                Step::Reduce { into, operand, into_left } => {
                    let other = self.read(cx, &operand)?;
                    let reduce = self.reduce.clone();
                    self.write(cx, &into, |b| reduce(b, &other, into_left))?;
                    Pool::give(other);
                }
                Step::Copy { from, to } => {
                    let data = self.read(cx, &from)?;
                    self.write(cx, &to, |b| b.copy_from_slice(&data))?;
                    Pool::give(data);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl Drop for ScheduleTask {
    fn drop(&mut self) {
        Pool::give(std::mem::take(&mut self.scratch));
        if let Some(work) = self.own_work.take() {
            Pool::give(work);
        }
        for (_, data) in self.arrived.drain(..) {
            Pool::give(data);
        }
    }
}

fn outside() -> Error {
    Error::Protocol("a collective schedule named a piece outside its buffer".into())
}

impl Task for ScheduleTask {
    fn poll(&mut self, cx: &mut TaskCx<'_>) -> Result<bool> {
        loop {
            if self.posted {
                if !self.collect(cx)? {
                    return Ok(false);
                }
                self.complete(cx)?;
                self.at += 1;
                self.posted = false;
            }
            if self.at == self.rounds.len() {
                return match self.mismatch.take() {
                    Some(m) => Err(Error::CollectiveMismatch(m)),
                    None => Ok(true),
                };
            }
            self.post(cx)?;
        }
    }
}
