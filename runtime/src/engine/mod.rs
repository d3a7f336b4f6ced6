//! The progress engine of one endpoint: the driver between the transport
//! and the protocol state.
//!
//! - [`requests`]: the slab of requests and their stages;
//! - [`state`]: the protocol as a state machine with no I/O — frames,
//!   finished reads and lost peers in; frames and jobs queued, requests
//!   finished out — tested by feeding it frames;
//! - this file: `Engine`, which owns the transport, the region table, the
//!   state and the tasks, hands the state's outbox and jobs to the
//!   transport (`flush`) and its events to the state (`progress`). The
//!   small-message paths try the transport at once and queue only when it
//!   pushes back; that is the one place an eager frame leaves
//!   ([`eager_now`]).
//!
//! Nothing here blocks: the communicator's wait loop calls
//! [`Engine::progress`] and backs off when nothing happens.

mod requests;
mod state;

use hpcomm_transport::backend::Flavor;
use hpcomm_transport::{
    Backend, Capabilities, PeerId, RegionId, Regions, RemoteKey, Transport, TransportError,
};

pub(crate) use requests::{Completed, Direction, ReqId};
use requests::{Req, Stage};
use state::{header_of, transport_error, Body, Job, SendPlan, State};
pub(crate) use state::{Matched, To};

use crate::error::{Error, Result};
use crate::matching::{Envelope, Pattern};
use crate::protocol::Limits;
use crate::task::{Task, TaskCx};
use crate::types::ContextId;
use crate::wire::Header;

/// An endpoint: transport, registered memory and protocol state.
#[derive(Debug)]
pub(crate) struct Engine {
    transport: Backend,
    regions: Regions,
    state: State,
    caps: Capabilities,
    /// Tasks in progress, advanced by every round of progress.
    tasks: Vec<TaskEntry>,
    /// Empty lists of request handles, kept for the next scopes.
    id_lists: Vec<Vec<ReqId>>,
}

/// Spare lists of request handles kept (one per nesting level of scopes in
/// use, in practice).
const ID_LISTS_KEPT: usize = 8;

/// A task and what it runs on.
struct TaskEntry {
    id: ReqId,
    ctx: ContextId,
    rank: u32,
    group: std::sync::Arc<[PeerId]>,
    /// The buffer the task reads, released when it ends.
    input: Option<RegionId>,
    task: Box<dyn Task>,
}

impl std::fmt::Debug for TaskEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskEntry").field("id", &self.id).field("ctx", &self.ctx).finish()
    }
}

/// The bytes of an eager frame: the user's slice, or a registered region.
enum Bytes<'a> {
    Slice(&'a [u8]),
    Region(RegionId),
}

/// Offers an eager frame to the transport now, unless frames wait ahead of
/// it in the outbox (then `WouldBlock`, to keep order): the one way an
/// eager message leaves without being queued.
#[inline]
fn eager_now(
    transport: &mut Backend,
    regions: &Regions,
    state: &State,
    peer: PeerId,
    header: &[u8],
    bytes: Bytes<'_>,
) -> std::result::Result<(), TransportError> {
    if !state.outbox.is_empty() {
        return Err(TransportError::WouldBlock);
    }
    match bytes {
        Bytes::Slice(b) => transport.try_send(peer, header, b),
        Bytes::Region(r) => regions
            .with(r, |b| transport.try_send(peer, header, b))
            .unwrap_or(Err(TransportError::InvalidRegion)),
    }
}

impl Engine {
    /// An engine over `transport`, with the eager threshold overridden when
    /// configured.
    pub fn new(transport: Backend, eager_override: Option<usize>) -> Engine {
        let caps = transport.capabilities().clone();
        let n = transport.peer_count();
        let each = (0..n as u32)
            .map(|p| Limits::new(transport.peer_capabilities(PeerId(p)), eager_override));
        let state = State::new(Limits::new(&caps, eager_override), each, n);
        let (regions, tasks, id_lists) = (Regions::new(), Vec::new(), Vec::new());
        Engine { transport, regions, caps, tasks, id_lists, state }
    }

    /// An empty list for a scope's request handles, with the room an
    /// earlier scope grew.
    #[inline]
    pub fn id_list(&mut self) -> Vec<ReqId> {
        self.id_lists.pop().unwrap_or_default()
    }

    /// Keeps an emptied list of [`Engine::id_list`] for the next scope.
    #[inline]
    pub fn recycle_id_list(&mut self, list: Vec<ReqId>) {
        debug_assert!(list.is_empty());
        if self.id_lists.len() < ID_LISTS_KEPT && list.capacity() > 0 {
            self.id_lists.push(list);
        }
    }

    /// The table of registered memory.
    pub fn regions(&self) -> &Regions {
        &self.regions
    }

    /// The thresholds in force towards every peer.
    pub fn limits(&self) -> &Limits {
        self.state.limits()
    }

    /// The transport's name.
    pub fn transport_name(&self) -> &'static str {
        self.caps.name
    }

    /// Which backend the transport is.
    pub fn flavor(&self) -> Flavor {
        Flavor::of(&self.transport)
    }

    /// Whether a waiting loop should spin with a pause hint (the transport
    /// is polled memory) rather than plain spinning.
    pub fn spin_pause(&self) -> bool {
        self.caps.spin_pause
    }

    /// Waits up to `timeout` for the transport to have something.
    pub fn wait(&mut self, timeout: std::time::Duration) {
        self.transport.wait(timeout);
    }

    /// One step of the transport's leaving; `true` once it has left.
    pub fn close(&mut self) -> bool {
        self.transport.close()
    }

    /// Whether `peer` is known to be gone.
    pub fn is_lost(&self, peer: PeerId) -> bool {
        self.state.is_lost(peer)
    }

    /// The error for an operation that depends on the lost `peer`.
    pub fn loss(&self, peer: PeerId) -> Error {
        self.state.loss(peer)
    }

    /// The lowest context id this endpoint has not used.
    pub fn next_ctx(&self) -> u32 {
        self.state.next_ctx()
    }

    /// Marks the context pair of `ctx` as used.
    pub fn reserve_ctx(&mut self, ctx: ContextId) {
        self.state.reserve_ctx(ctx);
    }

    /// Sends a standard-mode message of eager size at once, straight from
    /// `bytes`, with no request: the fast path of every small send. Returns
    /// `false` (and sends nothing) when the message must take the request
    /// path: rendezvous size, a backlog to keep order with, or no room.
    #[inline]
    pub fn try_send_now(&mut self, to: To, bytes: &[u8]) -> Result<bool> {
        let Some((header, len)) = self.state.eager_now(to, bytes.len())? else {
            return Ok(false);
        };
        let Engine { transport, regions, state, .. } = self;
        let header = &header[..len as usize];
        match eager_now(transport, regions, state, to.peer, header, Bytes::Slice(bytes)) {
            Ok(()) => Ok(true),
            // The sequence number is spent only once the frame is out.
            Err(TransportError::WouldBlock) => {
                self.state.unspend_seq(to);
                Ok(false)
            }
            Err(e) => {
                self.state.unspend_seq(to);
                Err(transport_error(e))
            }
        }
    }

    /// Starts a send of the registered `region` (`len` bytes) `to` a rank;
    /// `sync`: synchronous (`MPI_Ssend`).
    pub fn start_send(
        &mut self,
        to: To,
        region: RegionId,
        len: usize,
        sync: bool,
    ) -> Result<ReqId> {
        self.send_region(to, region, len, sync, false)
    }

    /// Starts a task's send of the engine-owned `region`, which stays when
    /// the send ends, for the task to take back and use again.
    pub(crate) fn task_send(&mut self, to: To, region: RegionId, len: usize) -> Result<ReqId> {
        self.send_region(to, region, len, false, true)
    }

    fn send_region(
        &mut self,
        to: To,
        region: RegionId,
        len: usize,
        sync: bool,
        keep_region: bool,
    ) -> Result<ReqId> {
        let (id, plan) = self.state.start_send(to, region, len, sync)?;
        if keep_region {
            if let Some(req) = self.state.reqs.get_mut(id) {
                req.keep_region = true;
            }
        }
        let peer = to.peer;
        let Engine { transport, regions, state, .. } = self;
        match plan {
            SendPlan::Eager(frame) => {
                let bytes = Bytes::Region(region);
                let outcome = eager_now(transport, regions, state, peer, frame.header(), bytes);
                state.eager_attempted(regions, id, peer, frame, outcome);
            }
            SendPlan::Rendezvous { msg, read } => {
                let key = match read {
                    true => transport.expose(regions, region),
                    false => Ok(RemoteKey::default()),
                };
                match key {
                    Ok(key) => state.send_rts(id, peer, msg, read, key),
                    Err(e) => {
                        state.fail(regions, id, transport_error(e));
                        return Ok(id);
                    }
                }
            }
        }
        if self.has_backlog() {
            self.flush()?;
        }
        Ok(id)
    }

    /// Receives at once, straight into `buf`, an eager message that has
    /// already arrived: the fast path of a receive that comes late. `None`
    /// when no such message is waiting (the request path must be taken).
    #[inline]
    pub fn try_recv_now(
        &mut self,
        ctx: ContextId,
        pattern: Pattern,
        buf: &mut [u8],
    ) -> Option<Result<Completed>> {
        self.state.try_recv_now(ctx, pattern, buf)
    }

    /// Posts a receive into the writable `region` for messages `pattern`
    /// accepts on `ctx`. `peer` is the world peer of a specific source.
    pub fn start_recv(
        &mut self,
        ctx: ContextId,
        pattern: Pattern,
        peer: Option<PeerId>,
        region: RegionId,
    ) -> Result<ReqId> {
        self.post_recv(ctx, pattern, peer, region, false)
    }

    fn post_recv(
        &mut self,
        ctx: ContextId,
        pattern: Pattern,
        peer: Option<PeerId>,
        region: RegionId,
        keep_region: bool,
    ) -> Result<ReqId> {
        let id = self.state.post_recv(&self.regions, ctx, pattern, peer, region, keep_region);
        if self.has_backlog() {
            self.flush()?;
        }
        Ok(id)
    }

    /// The envelope of the earliest unexpected message `pattern` accepts.
    pub fn probe(&mut self, ctx: ContextId, pattern: Pattern) -> Option<Envelope> {
        self.state.probe(ctx, pattern)
    }

    /// Takes the earliest unexpected message `pattern` accepts out of every
    /// receive's reach (see [`State::take_matched`]).
    pub fn take_matched(&mut self, ctx: ContextId, pattern: Pattern) -> Option<Matched> {
        self.state.take_matched(ctx, pattern)
    }

    /// Receives a matched message into the writable `region`.
    pub fn receive_matched(&mut self, m: Matched, region: RegionId) -> Result<ReqId> {
        let id = self.state.receive_matched(&self.regions, m, region);
        if self.has_backlog() {
            self.flush()?;
        }
        Ok(id)
    }

    /// Puts back a matched message that was not received.
    pub fn restore_matched(&mut self, m: Matched) {
        self.state.restore_matched(&self.regions, m);
    }

    /// Records the group of a communicator this endpoint belongs to (see
    /// [`State::open_context`]).
    pub fn open_context(&mut self, ctx: ContextId, group: &[PeerId]) {
        self.state.open_context(&self.regions, ctx, group);
    }

    /// Whether this endpoint has no state for the context pair of `ctx`.
    pub fn context_free(&self, ctx: ContextId) -> bool {
        self.state.context_free(ctx)
    }

    /// Forgets the context pair of a dropped communicator when nothing is
    /// in flight on it (see [`State::close_context`]).
    pub fn close_context(&mut self, ctx: ContextId) {
        let tasks = &self.tasks;
        self.state.close_context(ctx, |c| tasks.iter().any(|t| t.ctx == c));
    }

    /// Counts a collective operation started on `ctx`; returns its number.
    pub fn next_collective(&mut self, ctx: ContextId) -> u32 {
        self.state.next_collective(ctx)
    }

    /// The region a request holds (a task's output buffer).
    pub(crate) fn output_of(&self, id: ReqId) -> Option<RegionId> {
        self.state.reqs.get(id).and_then(|r| r.region)
    }

    /// Marks transfer `id` as task `task`'s (see `Requests::adopt`).
    pub(crate) fn adopt(&mut self, id: ReqId, task: ReqId) {
        self.state.reqs.adopt(id, task);
    }

    /// How many of task `task`'s transfers have finished (wrapping).
    pub(crate) fn wakes(&self, task: ReqId) -> u64 {
        self.state.reqs.get(task).map_or(0, |r| r.wakes)
    }

    /// Whether the request has finished (or is unknown).
    pub fn is_done(&self, id: ReqId) -> bool {
        self.state.reqs.get(id).is_none_or(Req::done)
    }

    /// Takes the outcome of a finished request and frees it; `None` while it
    /// is still in flight or when the handle is stale.
    pub fn take(&mut self, id: ReqId) -> Option<Result<Completed>> {
        self.state.reqs.take(id)
    }

    /// Whether the request exists (not yet taken).
    pub fn exists(&self, id: ReqId) -> bool {
        self.state.reqs.get(id).is_some()
    }

    /// One round of progress: flush, poll, flush. Returns whether anything
    /// happened.
    pub fn progress(&mut self) -> Result<bool> {
        let mut busy = self.has_backlog() && self.flush()?;
        let Engine { transport, regions, state, .. } = self;
        let events = transport.poll(regions, &mut |ev| state.on_event(regions, ev))?;
        busy |= events > 0;
        if !self.tasks.is_empty() {
            busy |= self.poll_tasks();
        }
        if self.has_backlog() {
            busy |= self.flush()?;
        }
        Ok(busy)
    }

    /// Starts `task` on context `ctx` (as `rank` of `group`) and advances
    /// it once. Its request finishes when the task does; `input` and
    /// `output`, if any, are released then.
    pub fn start_task(
        &mut self,
        ctx: ContextId,
        rank: u32,
        group: std::sync::Arc<[PeerId]>,
        (input, output): (Option<RegionId>, Option<RegionId>),
        task: Box<dyn Task>,
        keep_output: bool,
    ) -> ReqId {
        let mut req = Req::new(Stage::Task, ctx, output, None);
        // An owned output stays in the table when the task ends, for its
        // owner to take back.
        req.keep_region = keep_output;
        let id = self.state.reqs.alloc(req);
        self.tasks.push(TaskEntry { id, ctx, rank, group, input, task });
        self.poll_tasks();
        id
    }

    /// Advances every task once; returns whether any did something.
    fn poll_tasks(&mut self) -> bool {
        let mut tasks = std::mem::take(&mut self.tasks);
        let mut busy = false;
        tasks.retain_mut(|entry| {
            let (outcome, active) = {
                let mut cx = TaskCx::new(self, entry.ctx, entry.rank, &entry.group, entry.id)
                    .with_input(entry.input);
                let outcome = entry.task.poll(&mut cx);
                (outcome, cx.active())
            };
            busy |= active;
            match outcome {
                Ok(false) => true,
                Ok(true) => {
                    self.end_task(entry, Ok(()));
                    busy = true;
                    false
                }
                Err(e) => {
                    self.end_task(entry, Err(e));
                    busy = true;
                    false
                }
            }
        });
        // Tasks started while these ran (none today) come after them.
        tasks.append(&mut self.tasks);
        self.tasks = tasks;
        busy
    }

    /// Finishes a task's request with `outcome` and releases its input.
    fn end_task(&mut self, entry: &TaskEntry, outcome: Result<()>) {
        if let Some(input) = entry.input {
            self.regions.release(input);
        }
        let outcome = outcome.map(|()| Completed::default());
        self.state.reqs.finish(&self.regions, entry.id, outcome);
    }

    /// Tells the running tasks among `ids` that their scope ends; those that
    /// answer with an error end with it (see [`Task::scope_ends`]).
    pub(crate) fn scope_ends(&mut self, ids: &[ReqId]) {
        if self.tasks.is_empty() {
            return;
        }
        let mut tasks = std::mem::take(&mut self.tasks);
        tasks.retain_mut(|entry| {
            if !ids.contains(&entry.id) {
                return true;
            }
            match entry.task.scope_ends() {
                None => true,
                Some(e) => {
                    self.end_task(entry, Err(e));
                    false
                }
            }
        });
        tasks.append(&mut self.tasks);
        self.tasks = tasks;
    }

    /// Posts a receive for a task into `region`: an engine-owned buffer
    /// that stays when the receive finishes, for the task to take
    /// (`keep_region`), or a window of its output, released then.
    pub(crate) fn task_recv(
        &mut self,
        ctx: ContextId,
        (src, peer, tag): (u32, PeerId, i32),
        region: RegionId,
        keep_region: bool,
    ) -> Result<ReqId> {
        let pattern = Pattern { src: Some(src), tag: Some(tag) };
        self.post_recv(ctx, pattern, Some(peer), region, keep_region)
    }

    /// Exposes `region` for peers' one-sided reads: the key they need, or
    /// `None` where the transport cannot serve them.
    pub(crate) fn expose(&mut self, region: RegionId) -> Option<RemoteKey> {
        // Asked of the transport itself: a mixed one (shm and tcp) exposes
        // for the peers that can read (`can_read`).
        self.transport.expose(&self.regions, region).ok()
    }

    /// Whether this endpoint can read what `peer` exposes.
    pub(crate) fn can_read(&self, peer: PeerId) -> bool {
        self.transport.peer_capabilities(peer).rma_read
    }

    /// Whether this endpoint can write into what `peer` exposes.
    pub(crate) fn can_write(&self, peer: PeerId) -> bool {
        self.transport.peer_capabilities(peer).rma_write
    }

    /// Starts a one-sided access of `len` bytes at `offset` of the region
    /// `key` that `peer` exposed, which the peer's runtime takes no part
    /// in: a read into `local` or a write from it (at least `len` bytes
    /// long), as `dir` says. A write is complete once the bytes are in the
    /// peer's memory.
    pub(crate) fn start_access(
        &mut self,
        ctx: ContextId,
        dir: Direction,
        (peer, key, offset): (PeerId, RemoteKey, usize),
        local: RegionId,
        len: usize,
    ) -> Result<ReqId> {
        if self.is_lost(peer) {
            return Err(self.loss(peer));
        }
        let id = self.state.reqs.alloc(Req::new(Stage::Posted, ctx, Some(local), Some(peer)));
        if let Some(req) = self.state.reqs.get_mut(id) {
            req.info.bytes = len;
        }
        if len == 0 {
            self.state.reqs.finish(
                &self.regions,
                id,
                Ok(Completed { bytes: 0, ..Completed::default() }),
            );
            return Ok(id);
        }
        self.state.start_accesses(id, dir, (peer, key, offset), len, None);
        self.flush()?;
        Ok(id)
    }

    /// Whether a one-sided write of this endpoint is still in flight (a
    /// window's flush and fence wait until none is).
    pub(crate) fn writing(&self) -> bool {
        self.state.writing()
    }

    /// Whether frames or jobs are still waiting for the transport.
    pub fn has_backlog(&self) -> bool {
        self.state.has_backlog()
    }

    /// Hands queued frames and jobs to the transport while it has room.
    fn flush(&mut self) -> Result<bool> {
        let mut busy = false;
        let Engine { transport, regions, state, .. } = self;
        while let Some(out) = state.outbox.front() {
            let header = &out.header[..out.header_len as usize];
            let result = match &out.body {
                Body::Empty => transport.try_send(out.dst, header, &[]),
                Body::Owned(data) => transport.try_send(out.dst, header, data),
                Body::Region { region, .. } => regions
                    .with(*region, |b| transport.try_send(out.dst, header, b))
                    .unwrap_or(Err(TransportError::InvalidRegion)),
            };
            if result == Err(TransportError::WouldBlock) {
                break;
            }
            busy = true;
            let out = state.outbox.pop_front().expect("front exists");
            match (out.body, result) {
                (Body::Region { req, .. }, Ok(())) => {
                    let then_await = matches!(
                        state.reqs.get(req).map(|r| &r.stage),
                        Some(Stage::Queued { then_await: true })
                    );
                    state.reqs.sent(regions, req, then_await);
                }
                (Body::Owned(data), Ok(())) => state.recycle(data),
                (Body::Empty, Ok(())) => {}
                (Body::Region { req, .. }, Err(e)) => {
                    state.reqs.finish(regions, req, Err(transport_error(e)))
                }
                (_, Err(TransportError::PeerLost(p))) => state.peer_lost(regions, p),
                (_, Err(e)) => return Err(Error::Transport(e)),
            }
        }
        while let Some(job) = state.jobs.pop_front() {
            match job {
                Job::Access { req, dir, peer, key, base, offset, len } => {
                    let Some(local) = state.reqs.get(req).and_then(|r| r.region) else {
                        continue;
                    };
                    let token = req.to_wire();
                    let remote = base + offset;
                    let started = match dir {
                        Direction::Read => transport
                            .start_read(regions, peer, key, remote, local, offset, len, token),
                        Direction::Write => transport
                            .start_write(regions, local, offset, peer, key, remote, len, token),
                    };
                    match started {
                        Ok(()) => {}
                        Err(TransportError::WouldBlock) => {
                            state.jobs.push_front(job);
                            break;
                        }
                        Err(e) => state.access_done(regions, token, Some(transport_error(e))),
                    }
                    busy = true;
                }
                Job::Push { req, peer, rreq, mut offset, len } => {
                    let Some(src) = state.reqs.get(req).and_then(|r| r.region) else {
                        continue;
                    };
                    let chunk = state.peer_limits[peer.index()].max_payload;
                    let mut outcome = Ok(());
                    while offset < len {
                        let end = (offset + chunk).min(len);
                        let (hbuf, hlen) = header_of(&Header::Data { rreq, offset: offset as u64 });
                        outcome = regions
                            .with(src, |b| {
                                transport.try_send(peer, &hbuf[..hlen as usize], &b[offset..end])
                            })
                            .unwrap_or(Err(TransportError::InvalidRegion));
                        if outcome.is_err() {
                            break;
                        }
                        busy = true;
                        offset = end;
                    }
                    match outcome {
                        Err(TransportError::WouldBlock) => {
                            state.jobs.push_front(Job::Push { req, peer, rreq, offset, len });
                            break;
                        }
                        Err(e) => state.reqs.finish(regions, req, Err(transport_error(e))),
                        Ok(()) => {
                            let info = state.reqs.get(req).map(|r| r.info).unwrap_or_default();
                            state.reqs.finish(regions, req, Ok(info));
                        }
                    }
                }
            }
        }
        Ok(busy)
    }
}
