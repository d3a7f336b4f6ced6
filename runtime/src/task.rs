//! Tasks: state machines the progress engine advances by itself, such as
//! non-blocking collectives.
//!
//! MPI requires a non-blocking collective to make progress while its rank
//! is inside *any* communication call, not only when its own request is
//! tested: a rank waiting for a point-to-point message must still forward
//! its part of a broadcast, or its peers could wait forever. So a task is
//! handed to the engine ([`Scope::start_task`](crate::Scope::start_task)),
//! which polls it after every round of transport progress until it says it
//! is done; its [`Request`](crate::Request) then completes.
//!
//! A task talks through a [`TaskCx`]: sends and receives of buffers the
//! engine owns (so nothing a task starts can outlive memory it borrowed),
//! on the collective context of the communicator it was started on, and
//! reads of the input buffer and writes into the output buffer its scope
//! registered.

use std::ops::Range;
use std::sync::Arc;

use hpcomm_transport::{PeerId, RegionId};

use crate::comm::Communicator;
use crate::engine::{Engine, ReqId, To};
use crate::error::{Error, Result};
use crate::types::ContextId;

/// A state machine advanced by the progress engine. It moves with its
/// endpoint between threads (`Send`).
pub trait Task: Send {
    /// Advances as far as possible without waiting; `Ok(true)` once
    /// finished. An error ends the task and its request with it.
    fn poll(&mut self, cx: &mut TaskCx<'_>) -> Result<bool>;

    /// Called when the scope that started the task ends while the task is
    /// still running, before the scope waits for it. A task that runs to
    /// its end by itself (a collective) returns `None` and is waited for; a
    /// task that only its owner's handle can end (a window's server, whose
    /// handle was leaked) returns the error that ends it now, so that the
    /// scope does not wait forever.
    fn scope_ends(&mut self) -> Option<Error> {
        None
    }
}

/// A task started on a communicator with memory of its own as its output
/// buffer ([`Communicator::start_owned_task`]), not tied to a scope: it
/// runs until it ends by itself, and [`OwnedTask::wait`] gives the memory
/// back. A one-sided window allocated by the runtime (`MPI_Win_allocate`)
/// is served by one. Leaked (never waited for), the task keeps running and
/// its memory stays with the engine until the endpoint closes: nothing
/// borrowed can be freed under it.
#[derive(Debug)]
pub struct OwnedTask {
    comm: Communicator,
    id: ReqId,
    output: RegionId,
}

impl Communicator {
    /// Starts `task` with `output` as its output buffer, owned by the
    /// engine while the task runs (see [`OwnedTask`]).
    pub fn start_owned_task(&self, output: Vec<u8>, task: Box<dyn Task>) -> Result<OwnedTask> {
        let regions = self.engine().regions().clone();
        let region = regions.insert_owned(output);
        match self.start_task((None, Some(region)), task, true) {
            Ok(id) => Ok(OwnedTask { comm: self.collective_view(), id, output: region }),
            Err(e) => {
                regions.release(region);
                Err(e)
            }
        }
    }
}

impl OwnedTask {
    /// Waits until the task ends, and gives its output memory back with
    /// the task's outcome: `Err` if it failed (the memory is then
    /// released).
    pub fn wait(self) -> Result<Vec<u8>> {
        let outcome = self.comm.wait_id(self.id);
        let regions = self.comm.engine().regions();
        let memory = regions.take_owned(self.output);
        outcome?;
        memory.ok_or_else(|| Error::Protocol("a task's output memory is gone".into()))
    }
}

/// A send or receive a task started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    id: ReqId,
    /// The receive buffer, for receives.
    region: Option<RegionId>,
}

/// What a task may do: transfers on its communicator's collective
/// context, and writing its output.
pub struct TaskCx<'a> {
    engine: &'a mut Engine,
    ctx: ContextId,
    rank: u32,
    group: &'a Arc<[PeerId]>,
    id: ReqId,
    input: Option<RegionId>,
    active: bool,
}

impl std::fmt::Debug for TaskCx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskCx").field("ctx", &self.ctx).field("rank", &self.rank).finish()
    }
}

impl<'a> TaskCx<'a> {
    pub(crate) fn new(
        engine: &'a mut Engine,
        ctx: ContextId,
        rank: u32,
        group: &'a Arc<[PeerId]>,
        id: ReqId,
    ) -> Self {
        TaskCx { engine, ctx, rank, group, id, input: None, active: false }
    }

    pub(crate) fn with_input(mut self, input: Option<RegionId>) -> Self {
        self.input = input;
        self
    }

    /// Whether the task started or finished a transfer in this poll.
    pub(crate) fn active(&self) -> bool {
        self.active
    }

    /// This rank in the task's communicator.
    pub fn rank(&self) -> usize {
        self.rank as usize
    }

    /// The size of the task's communicator.
    pub fn size(&self) -> usize {
        self.group.len()
    }

    fn peer(&self, rank: usize) -> Result<PeerId> {
        self.group
            .get(rank)
            .copied()
            .ok_or(Error::InvalidRank { rank: rank as i32, size: self.group.len() })
    }

    /// Starts sending `data` to `to` with `tag` (not below 16). The buffer
    /// comes back from [`TaskCx::test`] when the send ends, to be used
    /// again.
    pub fn send(&mut self, to: usize, tag: i32, data: Vec<u8>) -> Result<Transfer> {
        let peer = self.peer(to)?;
        let len = data.len();
        let region = self.engine.regions().insert_owned_read_only(data);
        let to = To { ctx: self.ctx, me: self.rank, dst: to as u32, peer, tag };
        let started = self.engine.task_send(to, region, len);
        self.begun(started, region, true)
    }

    /// Starts receiving up to `len` bytes from `from` with `tag`.
    pub fn recv(&mut self, from: usize, tag: i32, len: usize) -> Result<Transfer> {
        self.recv_into(from, tag, vec![0; len])
    }

    /// Starts receiving up to `buf.len()` bytes from `from` with `tag` into
    /// `buf` (a buffer used before: no allocation, no page faults).
    pub fn recv_into(&mut self, from: usize, tag: i32, buf: Vec<u8>) -> Result<Transfer> {
        let peer = self.peer(from)?;
        let region = self.engine.regions().insert_owned(buf);
        let started = self.engine.task_recv(self.ctx, (from as u32, peer, tag), region, true);
        self.begun(started, region, true)
    }

    /// A transfer the engine started on `region` — kept for the task to
    /// take back when `kept` — or, when it did not start, the region given
    /// up and the error.
    fn begun(&mut self, started: Result<ReqId>, region: RegionId, kept: bool) -> Result<Transfer> {
        match started {
            Ok(id) => {
                self.active = true;
                self.engine.adopt(id, self.id);
                Ok(Transfer { id, region: kept.then_some(region) })
            }
            Err(e) => {
                self.engine.regions().release(region);
                Err(e)
            }
        }
    }

    /// The window `range` of the task's input (`output` false) or output,
    /// writable if asked; `None` when it cannot be made (see
    /// `Regions::window`): the caller copies instead.
    fn window(&mut self, output: bool, range: Range<usize>, writable: bool) -> Option<RegionId> {
        let parent = if output { self.engine.output_of(self.id)? } else { self.input? };
        self.engine.regions().window(parent, range, writable)
    }

    /// Starts sending bytes `range` of the task's input (`output` false) or
    /// output to `to` with `tag`, where they lie: no copy. `Ok(None)` when
    /// that is not possible here; the caller sends a copy instead. Its
    /// [`test`](TaskCx::test) gives back an empty buffer.
    pub fn send_in_place(
        &mut self,
        to: usize,
        tag: i32,
        output: bool,
        range: Range<usize>,
    ) -> Result<Option<Transfer>> {
        let peer = self.peer(to)?;
        let len = range.len();
        let Some(region) = self.window(output, range, false) else { return Ok(None) };
        let to = To { ctx: self.ctx, me: self.rank, dst: to as u32, peer, tag };
        let started = self.engine.start_send(to, region, len, false);
        self.begun(started, region, false).map(Some)
    }

    /// Starts receiving from `from` with `tag` straight into bytes `range`
    /// of the task's output. `Ok(None)` when that is not possible here; the
    /// caller receives into a buffer instead. Its [`test`](TaskCx::test)
    /// gives back an empty buffer; [`TaskCx::received`] the byte count.
    pub fn recv_in_place(
        &mut self,
        from: usize,
        tag: i32,
        range: Range<usize>,
    ) -> Result<Option<Transfer>> {
        let peer = self.peer(from)?;
        let Some(region) = self.window(true, range, true) else { return Ok(None) };
        let started = self.engine.task_recv(self.ctx, (from as u32, peer, tag), region, false);
        self.begun(started, region, false).map(Some)
    }

    /// A count that changes whenever one of this task's transfers
    /// finishes. A task whose every step waits for one of its transfers
    /// may skip its work in a poll while the count is what it was at the
    /// start of its last full poll — read it first thing, so that nothing
    /// finishing during that poll goes unseen. (An endpoint with many
    /// windows then polls only the servers whose transfers moved.)
    pub fn finished(&self) -> u64 {
        self.engine.wakes(self.id)
    }

    /// The outcome of a finished in-place receive, once: the bytes that
    /// arrived (a longer message is [`Error::Truncated`]). `None` while it
    /// is in flight.
    pub fn received(&mut self, t: Transfer) -> Option<Result<usize>> {
        let outcome = self.engine.take(t.id)?;
        self.active = true;
        Some(outcome.map(|done| done.bytes))
    }

    /// The outcome of a finished transfer, once: for a receive, the bytes
    /// received (as many as the sender sent, up to the length asked for;
    /// a longer message is [`Error::Truncated`]); for a send, the buffer
    /// sent, given back (empty if the transport still holds it). `None`
    /// while it is in flight.
    pub fn test(&mut self, t: Transfer) -> Option<Result<Vec<u8>>> {
        let outcome = self.engine.take(t.id)?;
        self.active = true;
        let data = t.region.and_then(|r| self.engine.regions().take_owned(r)).unwrap_or_default();
        Some(outcome.map(|done| {
            let mut data = data;
            data.truncate(done.bytes);
            data
        }))
    }

    /// Calls `f` with the task's output buffer (registered when the task
    /// was started, and borrowed until its scope ends); an error if it has
    /// none.
    pub fn write_output<R>(&mut self, f: impl FnOnce(&mut [u8]) -> R) -> Result<R> {
        let region = self.engine.output_of(self.id).ok_or_else(|| {
            Error::Protocol("a task without an output buffer tried to write one".into())
        })?;
        self.engine
            .regions()
            .with_mut(region, f)
            .ok_or(Error::Transport(hpcomm_transport::TransportError::InvalidRegion))
    }

    /// Exposes the task's output buffer for peers' one-sided reads
    /// ([`Communicator::read_remote`](crate::Communicator::read_remote))
    /// until the task ends: what they need to read it, or `None` where the
    /// transport has no one-sided reads (or the task no output).
    pub fn expose_output(&mut self) -> Option<crate::RemoteRegion> {
        let region = self.engine.output_of(self.id)?;
        self.engine.expose(region).map(crate::RemoteRegion::new)
    }

    /// Calls `f` with the task's input buffer (registered when the task was
    /// started, and borrowed until its scope ends); an error if it has
    /// none.
    pub fn read_input<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let region = self.input.ok_or_else(|| {
            Error::Protocol("a task without an input buffer tried to read one".into())
        })?;
        self.engine
            .regions()
            .with(region, f)
            .ok_or(Error::Transport(hpcomm_transport::TransportError::InvalidRegion))
    }
}
