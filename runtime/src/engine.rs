//! The progress engine of one endpoint: requests, protocols and the glue
//! between the transport and the matching engine.
//!
//! `Engine` owns the transport, the region table and the [`State`]. The
//! state machine reacts to transport events (`State::on_event`) and queues
//! what it wants sent (the outbox) or started (jobs: reads, data pushes);
//! `Engine::flush` hands those to the transport as room allows. Nothing here
//! blocks: the communicator's wait loop calls [`Engine::progress`] and backs
//! off when nothing happens.

use std::collections::VecDeque;

use hpcomm_transport::{
    Backend, Capabilities, Event, LossCause, PeerId, RegionId, Regions, RemoteKey, Transport,
    TransportError,
};

use crate::contexts::Contexts;
use crate::error::{Error, Result};
use crate::matching::{Envelope, Matcher, Pattern};
use crate::protocol::{select, Limits, Protocol, Rendezvous};
use crate::task::{Task, TaskCx};
use crate::types::ContextId;
use crate::wire::{Header, HeaderBuf, MessageHeader, MAX_HEADER};

/// A request's handle: a slot and its generation, so that a stale handle
/// (or a stale id echoed by a peer) finds nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReqId {
    index: u32,
    generation: u32,
}

impl ReqId {
    fn to_wire(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    fn from_wire(w: u64) -> ReqId {
        ReqId { index: w as u32, generation: (w >> 32) as u32 }
    }
}

/// What a finished operation reports: the matched envelope, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Completed {
    pub src: u32,
    pub tag: i32,
    pub bytes: usize,
}

#[derive(Debug)]
enum Stage {
    /// A receive waiting in its context's matcher.
    Posted,
    /// A rendezvous receive reading the sender's buffer in chunks.
    Reading { outstanding: usize, sreq: u64, error: Option<Box<Error>> },
    /// A rendezvous receive taking `DATA` frames.
    Streaming { got: usize, len: usize },
    /// An eager send whose frame waits in the outbox (holding its region).
    Queued { then_await: bool },
    /// A send waiting for `ACK` (synchronous eager) or `FIN` (rendezvous).
    AwaitReply,
    /// A pipelined send waiting for `CTS`.
    AwaitCts,
    /// A pipelined send whose data a job is pushing.
    Pushing,
    /// A task the engine advances (see [`crate::task`]).
    Task,
    /// Finished; the error is boxed to keep every request slot small.
    Done(Result<Completed, Box<Error>>),
}

#[derive(Debug)]
struct Req {
    stage: Stage,
    region: Option<RegionId>,
    /// The peer the request depends on; `None` for an unmatched any-source
    /// receive.
    peer: Option<PeerId>,
    info: Completed,
    /// The region is the engine's own and outlives the request (a task's
    /// receive buffer, taken back with the outcome).
    keep_region: bool,
    /// The context of the transfer: a collective context fails as a whole
    /// when one of its members is lost.
    ctx: ContextId,
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    req: Option<Req>,
}

/// What is kept of a message that arrived before its receive.
#[derive(Debug)]
enum Stored {
    Eager { data: Vec<u8>, from: PeerId, sync: Option<u64> },
    Rts { peer: PeerId, sreq: u64, key: RemoteKey, read: bool },
}

impl Stored {
    /// The peer the message came from, as the transport reported it.
    fn from(&self) -> PeerId {
        match *self {
            Stored::Eager { from, .. } | Stored::Rts { peer: from, .. } => from,
        }
    }
}

#[derive(Debug, Default)]
struct CtxState {
    matcher: Matcher<Stored, ReqId>,
    /// Next sequence number per destination rank.
    send_seq: Vec<u32>,
    /// World peer of each rank, once this endpoint has the communicator.
    group: Option<Vec<PeerId>>,
    /// Collective operations started on this context, for their tags.
    collectives: u32,
    /// Messages that arrived before this endpoint had the communicator, in
    /// arrival order: they are matched once its group can vouch for their
    /// senders ([`Engine::open_context`]).
    pending: Vec<(MessageHeader, Envelope, Stored)>,
}

#[derive(Debug)]
enum Body {
    Empty,
    Owned(Vec<u8>),
    Region { region: RegionId, req: ReqId },
}

#[derive(Debug)]
struct Outgoing {
    dst: PeerId,
    header: HeaderBuf,
    header_len: u8,
    body: Body,
}

#[derive(Debug)]
enum Job {
    /// Read `len` bytes at `offset` of the peer's exposed buffer into the
    /// same offset of the request's region.
    Read { req: ReqId, peer: PeerId, key: RemoteKey, offset: usize, len: usize },
    /// Push the request's region from `offset` in `DATA` frames.
    Push { req: ReqId, peer: PeerId, rreq: u64, offset: usize, len: usize },
}

impl Job {
    fn peer(&self) -> PeerId {
        match *self {
            Job::Read { peer, .. } | Job::Push { peer, .. } => peer,
        }
    }
}

/// The protocol state of an endpoint, apart from its transport.
#[derive(Debug)]
pub(crate) struct State {
    /// The limits that hold for every peer.
    limits: Limits,
    /// The limits towards each peer (they differ when the transport
    /// reaches some peers through shared memory and others over a network).
    peer_limits: PeerLimits,
    ctxs: Contexts<CtxState>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    outbox: VecDeque<Outgoing>,
    jobs: VecDeque<Job>,
    lost: Vec<bool>,
    /// Lost peers that went silent (timed out) rather than ended.
    silent: Vec<bool>,
    /// Lost peers that sent a frame this rank refused, and why.
    refused: Vec<Option<Box<str>>>,
    lost_count: usize,
    released: Vec<(ReqId, Envelope, Stored)>,
    /// Recycled buffers for unexpected eager payloads.
    pool: Vec<Vec<u8>>,
    /// The lowest context id this endpoint has not used.
    pub next_ctx: u32,
}

/// The protocol limits towards each peer, kept as one byte per peer into
/// the few distinct sets of limits a job has (shm's and tcp's, say): a
/// table of 16,384 peers is 16 KiB, not 640.
#[derive(Debug)]
struct PeerLimits {
    class: Vec<u8>,
    classes: Vec<Limits>,
}

impl PeerLimits {
    fn new(each: impl Iterator<Item = Limits>) -> PeerLimits {
        let mut classes: Vec<Limits> = Vec::new();
        let class = each
            .map(|l| match classes.iter().position(|c| *c == l) {
                Some(i) => i as u8,
                None => {
                    assert!(classes.len() < 256, "more than 256 kinds of peer");
                    classes.push(l);
                    (classes.len() - 1) as u8
                }
            })
            .collect();
        PeerLimits { class, classes }
    }
}

impl std::ops::Index<usize> for PeerLimits {
    type Output = Limits;

    #[inline]
    fn index(&self, peer: usize) -> &Limits {
        &self.classes[self.class[peer] as usize]
    }
}

/// An endpoint: transport, registered memory and protocol state.
#[derive(Debug)]
pub(crate) struct Engine {
    pub transport: Backend,
    pub regions: Regions,
    pub state: State,
    pub caps: Capabilities,
    /// Tasks in progress, advanced by every round of progress.
    pub tasks: Vec<TaskEntry>,
}

/// A task and what it runs on.
pub(crate) struct TaskEntry {
    pub id: ReqId,
    pub ctx: ContextId,
    pub rank: u32,
    pub group: std::rc::Rc<[PeerId]>,
    pub task: Box<dyn Task>,
}

impl std::fmt::Debug for TaskEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskEntry").field("id", &self.id).field("ctx", &self.ctx).finish()
    }
}

const POOL_KEEP: usize = 256;

fn header_of(h: &Header) -> (HeaderBuf, u8) {
    let mut buf = [0u8; MAX_HEADER];
    let n = h.encode(&mut buf);
    (buf, n as u8)
}

impl Engine {
    /// An engine over `transport`, with the eager threshold overridden when
    /// configured.
    pub fn new(transport: Backend, eager_override: Option<usize>) -> Engine {
        let caps = transport.capabilities().clone();
        let limits = Limits::new(&caps, eager_override);
        let n = transport.peer_count();
        let peer_limits = PeerLimits::new(
            (0..n as u32)
                .map(|p| Limits::new(transport.peer_capabilities(PeerId(p)), eager_override)),
        );
        Engine {
            transport,
            regions: Regions::new(),
            caps,
            tasks: Vec::new(),
            state: State {
                limits,
                peer_limits,
                ctxs: Contexts::default(),
                slots: Vec::new(),
                free: Vec::new(),
                outbox: VecDeque::new(),
                jobs: VecDeque::new(),
                lost: vec![false; n],
                silent: vec![false; n],
                refused: vec![None; n],
                lost_count: 0,
                released: Vec::new(),
                pool: Vec::new(),
                next_ctx: 2,
            },
        }
    }

    /// Whether `peer` is known to be gone.
    pub fn is_lost(&self, peer: PeerId) -> bool {
        self.state.lost[peer.index()]
    }

    /// Sends a standard-mode message of eager size at once, straight from
    /// `bytes`, with no request: the fast path of every small send. Returns
    /// `false` (and sends nothing) when the message must take the request
    /// path: rendezvous size, a backlog to keep order with, or no room.
    #[allow(clippy::too_many_arguments)]
    pub fn try_send_now(
        &mut self,
        ctx: ContextId,
        me: u32,
        dst: u32,
        peer: PeerId,
        tag: i32,
        bytes: &[u8],
    ) -> Result<bool> {
        let limits = &self.state.peer_limits[peer.index()];
        if !matches!(select(bytes.len(), limits), Protocol::Inline | Protocol::Eager)
            || !self.state.outbox.is_empty()
        {
            return Ok(false);
        }
        if self.is_lost(peer) {
            return Err(self.state.loss(peer));
        }
        self.state.check_collective(ctx)?;
        let Engine { transport, state, .. } = self;
        let slot = state.seq_slot(ctx, dst);
        let seq = *slot;
        let (hbuf, hlen) =
            header_of(&Header::Eager { msg: MessageHeader { ctx, src: me, tag, seq }, sync: None });
        match transport.try_send(peer, &hbuf[..hlen as usize], bytes) {
            Ok(()) => {
                // The sequence number is spent only once the frame is out.
                *slot = seq.wrapping_add(1);
                Ok(true)
            }
            Err(TransportError::WouldBlock) => Ok(false),
            Err(e) => Err(transport_error(e)),
        }
    }

    /// Starts a send of the registered `region` (`len` bytes) from rank `me`
    /// to rank `dst` (world `peer`) of context `ctx`.
    #[allow(clippy::too_many_arguments)]
    pub fn start_send(
        &mut self,
        ctx: ContextId,
        me: u32,
        dst: u32,
        peer: PeerId,
        tag: i32,
        region: RegionId,
        len: usize,
        sync: bool,
    ) -> Result<ReqId> {
        if self.is_lost(peer) {
            return Err(self.state.loss(peer));
        }
        self.state.check_collective(ctx)?;
        let seq = self.state.next_seq(ctx, dst);
        let msg = MessageHeader { ctx, src: me, tag, seq };
        let info = Completed { src: me, tag, bytes: len };
        let id = self.state.alloc(Req {
            stage: Stage::AwaitReply,
            region: Some(region),
            peer: Some(peer),
            info,
            keep_region: false,
            ctx,
        });
        match select(len, &self.state.peer_limits[peer.index()]) {
            protocol @ (Protocol::Inline | Protocol::Eager) => {
                let header = Header::Eager { msg, sync: sync.then(|| id.to_wire()) };
                let (hbuf, hlen) = header_of(&header);
                let sent = if self.state.outbox.is_empty() {
                    let transport = &mut self.transport;
                    self.regions
                        .with(region, |b| transport.try_send(peer, &hbuf[..hlen as usize], b))
                        .unwrap_or(Err(TransportError::InvalidRegion))
                } else {
                    Err(TransportError::WouldBlock)
                };
                match sent {
                    Ok(()) => self.state.sent(&self.regions, id, sync),
                    Err(TransportError::WouldBlock) if protocol == Protocol::Inline => {
                        let data = self.regions.with(region, |b| b.to_vec()).unwrap_or_default();
                        self.state.outbox.push_back(Outgoing {
                            dst: peer,
                            header: hbuf,
                            header_len: hlen,
                            body: Body::Owned(data),
                        });
                        self.state.sent(&self.regions, id, sync);
                    }
                    Err(TransportError::WouldBlock) => {
                        self.state.slot(id).expect("just allocated").stage =
                            Stage::Queued { then_await: sync };
                        self.state.outbox.push_back(Outgoing {
                            dst: peer,
                            header: hbuf,
                            header_len: hlen,
                            body: Body::Region { region, req: id },
                        });
                    }
                    Err(e) => self.state.finish(&self.regions, id, Err(transport_error(e))),
                }
            }
            Protocol::Rendezvous(mode) => {
                let read = mode == Rendezvous::Read;
                let key = if read {
                    match self.transport.expose(&self.regions, region) {
                        Ok(key) => key,
                        Err(e) => {
                            self.state.finish(&self.regions, id, Err(transport_error(e)));
                            return Ok(id);
                        }
                    }
                } else {
                    RemoteKey::default()
                };
                if !read {
                    self.state.slot(id).expect("just allocated").stage = Stage::AwaitCts;
                }
                let header = Header::Rts { msg, read, len: len as u64, sreq: id.to_wire(), key };
                self.state.push_control(peer, &header);
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
    pub fn try_recv_now(
        &mut self,
        ctx: ContextId,
        pattern: Pattern,
        buf: &mut [u8],
    ) -> Option<Result<Completed>> {
        let state = &mut self.state;
        let matcher = &mut state.ctx(ctx).matcher;
        if matcher.unexpected_len() == 0 {
            return None;
        }
        let (env, stored) =
            matcher.take_unexpected(pattern, |stored| matches!(stored, Stored::Eager { .. }))?;
        let Stored::Eager { data, from, sync } = stored else { unreachable!("only eager taken") };
        if let Some(sreq) = sync {
            state.push_control(from, &Header::Ack { sreq });
        }
        let result = match buf.get_mut(..data.len()) {
            Some(dst) => {
                dst.copy_from_slice(&data);
                Ok(Completed { src: env.src, tag: env.tag, bytes: data.len() })
            }
            None => Err(Error::Truncated { needed: data.len(), capacity: buf.len() }),
        };
        state.recycle(data);
        Some(result)
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
        let id = self.state.alloc(Req {
            stage: Stage::Posted,
            region: Some(region),
            peer,
            info: Completed::default(),
            keep_region,
            ctx,
        });
        let state = &mut self.state;
        match state.ctx(ctx).matcher.post(pattern, id) {
            Some((env, stored)) => state.deliver_stored(&self.regions, id, env, stored),
            None => {
                // A receive that depends on a lost peer fails now; so does
                // an any-source receive on a communicator with a lost member
                // (the message it waits for might have been that peer's),
                // and every receive of a collective on such a communicator.
                let lost = match peer {
                    Some(p) if state.lost[p.index()] => Some(p),
                    Some(_) if !ctx.is_collective() => None,
                    _ => state.lost_member(ctx),
                };
                if let Some(p) = lost {
                    state.ctx(ctx).matcher.cancel(|_, r| r == id);
                    let error = state.loss(p);
                    state.finish(&self.regions, id, Err(error));
                }
            }
        }
        if self.has_backlog() {
            self.flush()?;
        }
        Ok(id)
    }

    /// The envelope of the earliest unexpected message `pattern` accepts.
    pub fn probe(&mut self, ctx: ContextId, pattern: Pattern) -> Option<Envelope> {
        self.state.ctx(ctx).matcher.probe(pattern).map(|(env, _)| *env)
    }

    /// Records the group of a communicator this endpoint belongs to. The
    /// messages that arrived for it before are checked against the group
    /// now: one that claims a rank other than its sender's is refused, and
    /// its sender fails (see [`State::on_event`]).
    pub fn open_context(&mut self, ctx: ContextId, group: &[PeerId]) {
        let mut liars = Vec::new();
        for c in [ctx, ctx.collective()] {
            let state = self.state.ctx(c);
            state.group = Some(group.to_vec());
            for (msg, env, stored) in std::mem::take(&mut state.pending) {
                let from = stored.from();
                if group.get(msg.src as usize) != Some(&from) {
                    liars.push((from, msg.src, c));
                    continue;
                }
                // No receive can be posted yet on a context being opened.
                let matched = state.matcher.arrive(env, msg.seq, || stored, &mut Vec::new());
                debug_assert!(matched.is_none());
            }
        }
        self.state.next_ctx = self.state.next_ctx.max(ctx.0.saturating_add(2));
        for (peer, claimed, c) in liars {
            if !self.state.lost[peer.index()] {
                let why = format!("claimed to be rank {claimed} of context {}", c.0);
                self.state.refused[peer.index()] = Some(why.into_boxed_str());
                self.state.peer_lost(&self.regions, peer);
            }
        }
    }

    /// Whether this endpoint has no state for the context pair of `ctx`:
    /// never used here, or closed since.
    pub fn context_free(&self, ctx: ContextId) -> bool {
        self.state.ctxs.get(ctx).is_none() && self.state.ctxs.get(ctx.collective()).is_none()
    }

    /// Forgets the context pair of a communicator dropped on this rank, so
    /// that its id can be agreed again for a new one — unless something is
    /// still in flight on it (a posted receive, a message nobody received,
    /// a request that has not ended): then it stays, and is never reused.
    pub fn close_context(&mut self, ctx: ContextId) {
        let pair = [ContextId(ctx.0 & !1), ctx.collective()];
        let idle = pair.iter().all(|&c| {
            self.state.ctxs.get(c).is_none_or(|s| s.matcher.is_empty() && s.pending.is_empty())
        });
        let busy = self.state.slots.iter().any(|slot| {
            slot.req
                .as_ref()
                .is_some_and(|r| pair.contains(&r.ctx) && !matches!(r.stage, Stage::Done(_)))
        }) || self.tasks.iter().any(|t| pair.contains(&t.ctx));
        if !idle || busy {
            tracing::debug!(ctx = ctx.0, "context closed with traffic in flight: not reused");
            return;
        }
        for c in pair {
            self.state.ctxs.remove(c);
        }
    }

    /// Counts a collective operation started on `ctx`; returns its number
    /// (the same on every rank, as collectives are called in order).
    pub fn next_collective(&mut self, ctx: ContextId) -> u32 {
        let c = self.state.ctx(ctx);
        c.collectives = c.collectives.wrapping_add(1);
        c.collectives
    }

    /// The region a request holds (a task's output buffer).
    pub(crate) fn output_of(&self, id: ReqId) -> Option<RegionId> {
        self.state.get(id).and_then(|r| r.region)
    }

    /// Whether the request has finished (or is unknown).
    pub fn is_done(&self, id: ReqId) -> bool {
        match self.state.get(id) {
            Some(req) => matches!(req.stage, Stage::Done(_)),
            None => true,
        }
    }

    /// Takes the outcome of a finished request and frees it; `None` while it
    /// is still in flight or when the handle is stale.
    pub fn take(&mut self, id: ReqId) -> Option<Result<Completed>> {
        let slot = self.state.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation || !matches!(slot.req.as_ref()?.stage, Stage::Done(_)) {
            return None;
        }
        let req = slot.req.take().expect("checked above");
        slot.generation = slot.generation.wrapping_add(1);
        self.state.free.push(id.index);
        match req.stage {
            Stage::Done(result) => Some(result.map_err(|e| *e)),
            _ => unreachable!("checked above"),
        }
    }

    /// Whether the request exists (not yet taken).
    pub fn exists(&self, id: ReqId) -> bool {
        self.state.get(id).is_some()
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
    /// it once. Its request finishes when the task does; `output`, if any,
    /// is released then.
    pub fn start_task(
        &mut self,
        ctx: ContextId,
        rank: u32,
        group: std::rc::Rc<[PeerId]>,
        output: Option<RegionId>,
        task: Box<dyn Task>,
    ) -> ReqId {
        let id = self.state.alloc(Req {
            stage: Stage::Task,
            region: output,
            peer: None,
            info: Completed::default(),
            keep_region: false,
            ctx,
        });
        self.tasks.push(TaskEntry { id, ctx, rank, group, task });
        self.poll_tasks();
        id
    }

    /// Advances every task once; returns whether any did something.
    fn poll_tasks(&mut self) -> bool {
        let mut tasks = std::mem::take(&mut self.tasks);
        let mut busy = false;
        tasks.retain_mut(|entry| {
            let (outcome, active) = {
                let mut cx = TaskCx::new(self, entry.ctx, entry.rank, &entry.group, entry.id);
                let outcome = entry.task.poll(&mut cx);
                (outcome, cx.active())
            };
            busy |= active;
            match outcome {
                Ok(false) => true,
                Ok(true) => {
                    self.state.finish(&self.regions, entry.id, Ok(Completed::default()));
                    busy = true;
                    false
                }
                Err(e) => {
                    self.state.finish(&self.regions, entry.id, Err(e));
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

    /// Posts a receive into the engine-owned `region` for a task; the
    /// region stays when the receive finishes, for the task to take.
    pub(crate) fn task_recv(
        &mut self,
        ctx: ContextId,
        src: u32,
        peer: PeerId,
        tag: i32,
        region: RegionId,
    ) -> Result<ReqId> {
        self.post_recv(ctx, Pattern { src: Some(src), tag: Some(tag) }, Some(peer), region, true)
    }

    /// Whether frames or jobs are still waiting for the transport.
    pub fn has_backlog(&self) -> bool {
        !self.state.outbox.is_empty() || !self.state.jobs.is_empty()
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
                        state.get(req).map(|r| &r.stage),
                        Some(Stage::Queued { then_await: true })
                    );
                    state.sent(regions, req, then_await);
                }
                (Body::Owned(data), Ok(())) => state.recycle(data),
                (Body::Empty, Ok(())) => {}
                (Body::Region { req, .. }, Err(e)) => {
                    state.finish(regions, req, Err(transport_error(e)))
                }
                (_, Err(TransportError::PeerLost(p))) => state.peer_lost(regions, p),
                (_, Err(e)) => return Err(Error::Transport(e)),
            }
        }
        while let Some(job) = state.jobs.pop_front() {
            match job {
                Job::Read { req, peer, key, offset, len } => {
                    let Some(dst) = state.get(req).and_then(|r| r.region) else {
                        continue;
                    };
                    let token = req.to_wire();
                    match transport.start_read(regions, peer, key, offset, dst, offset, len, token)
                    {
                        Ok(()) => {}
                        Err(TransportError::WouldBlock) => {
                            state.jobs.push_front(job);
                            break;
                        }
                        Err(e) => state.read_done(regions, token, Some(transport_error(e))),
                    }
                    busy = true;
                }
                Job::Push { req, peer, rreq, mut offset, len } => {
                    let Some(src) = state.get(req).and_then(|r| r.region) else {
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
                        Err(e) => state.finish(regions, req, Err(transport_error(e))),
                        Ok(()) => {
                            let info = state.get(req).map(|r| r.info).unwrap_or_default();
                            state.finish(regions, req, Ok(info));
                        }
                    }
                }
            }
        }
        Ok(busy)
    }
}

/// Checks that a message comes from the rank it claims: `src` is the peer
/// the transport reports, `group` the world peers of the context's
/// communicator when this rank has it (its messages are checked again when
/// it opens it, see [`Engine::open_context`]), `world` the job's size.
#[inline]
fn check_sender(
    msg: &MessageHeader,
    src: PeerId,
    group: Option<&[PeerId]>,
    world: usize,
) -> std::result::Result<(), String> {
    let ok = match group {
        Some(group) => group.get(msg.src as usize) == Some(&src),
        None => (msg.src as usize) < world,
    };
    if ok {
        return Ok(());
    }
    Err(format!("claims to be rank {} of context {}", msg.src, msg.ctx.0))
}

fn transport_error(e: TransportError) -> Error {
    match e {
        TransportError::PeerLost(p) => Error::PeerFailed { rank: p.index() },
        e => Error::Transport(e),
    }
}

impl State {
    /// The thresholds in force towards every peer.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    #[inline]
    fn ctx(&mut self, ctx: ContextId) -> &mut CtxState {
        self.ctxs.local(ctx)
    }

    /// The next sequence number for messages to `dst` on `ctx`.
    #[inline]
    fn seq_slot(&mut self, ctx: ContextId, dst: u32) -> &mut u32 {
        let seqs = &mut self.ctx(ctx).send_seq;
        if dst as usize >= seqs.len() {
            seqs.resize(dst as usize + 1, 0);
        }
        &mut seqs[dst as usize]
    }

    fn next_seq(&mut self, ctx: ContextId, dst: u32) -> u32 {
        let slot = self.seq_slot(ctx, dst);
        let seq = *slot;
        *slot = seq.wrapping_add(1);
        seq
    }

    fn alloc(&mut self, req: Req) -> ReqId {
        match self.free.pop() {
            Some(index) => {
                let slot = &mut self.slots[index as usize];
                slot.req = Some(req);
                ReqId { index, generation: slot.generation }
            }
            None => {
                self.slots.push(Slot { generation: 0, req: Some(req) });
                ReqId { index: (self.slots.len() - 1) as u32, generation: 0 }
            }
        }
    }

    fn get(&self, id: ReqId) -> Option<&Req> {
        let slot = self.slots.get(id.index as usize)?;
        (slot.generation == id.generation).then_some(slot.req.as_ref()).flatten()
    }

    fn slot(&mut self, id: ReqId) -> Option<&mut Req> {
        let slot = self.slots.get_mut(id.index as usize)?;
        (slot.generation == id.generation).then_some(slot.req.as_mut()).flatten()
    }

    /// Ends a request with `result` and releases its region.
    fn finish(&mut self, regions: &Regions, id: ReqId, result: Result<Completed>) {
        if let Some(req) = self.slot(id) {
            if matches!(req.stage, Stage::Done(_)) {
                return;
            }
            req.stage = Stage::Done(result.map_err(Box::new));
            if !req.keep_region {
                if let Some(region) = req.region.take() {
                    regions.release(region);
                }
            }
        }
    }

    /// An eager frame of request `id` was handed to the transport.
    fn sent(&mut self, regions: &Regions, id: ReqId, await_ack: bool) {
        if await_ack {
            if let Some(req) = self.slot(id) {
                req.stage = Stage::AwaitReply;
            }
        } else {
            let info = self.get(id).map(|r| r.info).unwrap_or_default();
            self.finish(regions, id, Ok(info));
        }
    }

    fn push_control(&mut self, dst: PeerId, header: &Header) {
        let (buf, len) = header_of(header);
        self.outbox.push_back(Outgoing { dst, header: buf, header_len: len, body: Body::Empty });
    }

    fn recycle(&mut self, mut data: Vec<u8>) {
        if self.pool.len() < POOL_KEEP && data.capacity() > 0 {
            data.clear();
            self.pool.push(data);
        }
    }

    /// Handles one transport event. A frame that breaks the protocol fails
    /// its sender (every operation that depends on it ends with
    /// [`Error::Protocol`]) and nothing else: the other events of the batch
    /// are handled as usual.
    fn on_event(&mut self, regions: &Regions, ev: Event<'_>) {
        match ev {
            Event::Frame { src, header, payload } => {
                if src.index() >= self.lost.len() || self.lost[src.index()] {
                    // From outside the job (a backend bug), or from a peer
                    // already given up: nothing it says is used.
                    return;
                }
                if let Err(why) = self.on_frame(regions, src, header, payload) {
                    tracing::warn!(peer = src.index(), "refusing peer: {why}");
                    self.refused[src.index()] = Some(why.into_boxed_str());
                    self.peer_lost(regions, src);
                }
            }
            Event::ReadDone { token } => self.read_done(regions, token, None),
            Event::ReadFailed { token, error } => {
                self.read_done(regions, token, Some(transport_error(error)))
            }
            Event::PeerLost { peer, cause } => {
                if peer.index() < self.lost.len() {
                    self.silent[peer.index()] |= cause == LossCause::Silent;
                    if cause == LossCause::Protocol && self.refused[peer.index()].is_none() {
                        let why = "broke the transport's framing".into();
                        self.refused[peer.index()] = Some(why);
                    }
                    self.peer_lost(regions, peer);
                }
            }
        }
    }

    fn on_frame(
        &mut self,
        regions: &Regions,
        src: PeerId,
        header: &[u8],
        payload: &[u8],
    ) -> std::result::Result<(), String> {
        match Header::decode(header)? {
            Header::Eager { msg, sync } => {
                let env = Envelope { src: msg.src, tag: msg.tag, len: payload.len() };
                let pool = &mut self.pool;
                let keep = || {
                    let mut data = pool.pop().unwrap_or_default();
                    data.extend_from_slice(payload);
                    Stored::Eager { data, from: src, sync }
                };
                let ctx = self.ctxs.admit(msg.ctx, self.next_ctx)?;
                check_sender(&msg, src, ctx.group.as_deref(), self.lost.len())?;
                if ctx.group.is_none() {
                    let stored = Stored::Eager { data: payload.to_vec(), from: src, sync };
                    ctx.pending.push((msg, env, stored));
                    return Ok(());
                }
                if let Some(id) = ctx.matcher.arrive(env, msg.seq, keep, &mut self.released) {
                    self.deliver_eager(regions, id, env, payload, sync.map(|s| (src, s)));
                }
                if !self.released.is_empty() {
                    self.deliver_released(regions);
                }
            }
            Header::Rts { msg, read, len, sreq, key } => {
                let len = usize::try_from(len).map_err(|_| format!("announced {len} bytes"))?;
                if read && !self.peer_limits[src.index()].rma_read {
                    return Err("asked for a read rendezvous, which this rank cannot do".into());
                }
                if !read && len <= self.peer_limits[src.index()].eager {
                    // Harmless, but no sender of this version does it.
                    tracing::debug!(peer = src.index(), len, "rendezvous below the eager limit");
                }
                let env = Envelope { src: msg.src, tag: msg.tag, len };
                let keep = || Stored::Rts { peer: src, sreq, key, read };
                let ctx = self.ctxs.admit(msg.ctx, self.next_ctx)?;
                check_sender(&msg, src, ctx.group.as_deref(), self.lost.len())?;
                if ctx.group.is_none() {
                    ctx.pending.push((msg, env, keep()));
                    return Ok(());
                }
                if let Some(id) = ctx.matcher.arrive(env, msg.seq, keep, &mut self.released) {
                    self.start_rendezvous(regions, id, env, src, sreq, key, read);
                }
                if !self.released.is_empty() {
                    self.deliver_released(regions);
                }
            }
            Header::Ack { sreq } | Header::Fin { sreq } => {
                let id = ReqId::from_wire(sreq);
                if let Some(req) = self.get(id) {
                    if req.peer == Some(src)
                        && matches!(req.stage, Stage::AwaitReply | Stage::AwaitCts)
                    {
                        let info = req.info;
                        self.finish(regions, id, Ok(info));
                    }
                }
            }
            Header::Cts { sreq, rreq } => {
                let id = ReqId::from_wire(sreq);
                if let Some(req) = self.slot(id) {
                    if req.peer == Some(src) && matches!(req.stage, Stage::AwaitCts) {
                        req.stage = Stage::Pushing;
                        let len = req.info.bytes;
                        self.jobs.push_back(Job::Push { req: id, peer: src, rreq, offset: 0, len });
                    }
                }
            }
            Header::Data { rreq, offset } => {
                let id = ReqId::from_wire(rreq);
                // Data for a receive that already ended (it failed, and may
                // have been taken) is dropped: its error was reported.
                let Some(req) = self.slot(id) else {
                    return Ok(());
                };
                if req.peer != Some(src) {
                    return Err("sent data for a receive that another rank matched".into());
                }
                let Stage::Streaming { got, len } = &mut req.stage else {
                    return Ok(());
                };
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                let end = start
                    .checked_add(payload.len())
                    .filter(|&e| e <= *len && *got + payload.len() <= *len)
                    .ok_or("sent data past the message end")?;
                *got += payload.len();
                let complete = *got == *len;
                let region = req.region;
                let info = req.info;
                let written = region
                    .and_then(|r| regions.with_mut(r, |b| b[start..end].copy_from_slice(payload)));
                if written.is_none() {
                    self.finish(regions, id, Err(Error::Transport(TransportError::InvalidRegion)));
                } else if complete {
                    self.finish(regions, id, Ok(info));
                }
            }
        }
        Ok(())
    }

    fn deliver_released(&mut self, regions: &Regions) {
        let mut released = std::mem::take(&mut self.released);
        for (id, env, stored) in released.drain(..) {
            self.deliver_stored(regions, id, env, stored);
        }
        self.released = released;
    }

    /// A stored (unexpected or early) message meets its receive.
    fn deliver_stored(&mut self, regions: &Regions, id: ReqId, env: Envelope, stored: Stored) {
        match stored {
            Stored::Eager { data, from, sync } => {
                self.deliver_eager(regions, id, env, &data, sync.map(|s| (from, s)));
                self.recycle(data);
            }
            Stored::Rts { peer, sreq, key, read } => {
                self.start_rendezvous(regions, id, env, peer, sreq, key, read)
            }
        }
    }

    fn deliver_eager(
        &mut self,
        regions: &Regions,
        id: ReqId,
        env: Envelope,
        data: &[u8],
        sync: Option<(PeerId, u64)>,
    ) {
        if let Some((peer, sreq)) = sync {
            self.push_control(peer, &Header::Ack { sreq });
        }
        let Some(req) = self.slot(id) else { return };
        let info = Completed { src: env.src, tag: env.tag, bytes: data.len() };
        req.info = info;
        let result = match req.region.and_then(|r| {
            regions.with_mut(r, |buf| match buf.get_mut(..data.len()) {
                Some(dst) => {
                    dst.copy_from_slice(data);
                    Ok(info)
                }
                None => Err(Error::Truncated { needed: data.len(), capacity: buf.len() }),
            })
        }) {
            Some(result) => result,
            None => Err(Error::Transport(TransportError::InvalidRegion)),
        };
        self.finish(regions, id, result);
    }

    #[allow(clippy::too_many_arguments)]
    fn start_rendezvous(
        &mut self,
        regions: &Regions,
        id: ReqId,
        env: Envelope,
        peer: PeerId,
        sreq: u64,
        key: RemoteKey,
        read: bool,
    ) {
        let max_read = self.peer_limits[peer.index()].max_read;
        let Some(req) = self.slot(id) else { return };
        req.info = Completed { src: env.src, tag: env.tag, bytes: env.len };
        req.peer = Some(peer);
        let capacity = req.region.and_then(|r| regions.len(r)).unwrap_or(0);
        if env.len > capacity {
            // Refuse the data; the sender completes, the receive reports it.
            self.push_control(peer, &Header::Fin { sreq });
            self.finish(regions, id, Err(Error::Truncated { needed: env.len, capacity }));
        } else if read {
            // At most the receive buffer's length over the read size: the
            // length was checked against the buffer just above.
            let chunks = env.len.div_ceil(max_read);
            req.stage = Stage::Reading { outstanding: chunks, sreq, error: None };
            for c in 0..chunks {
                let offset = c * max_read;
                let len = max_read.min(env.len - offset);
                self.jobs.push_back(Job::Read { req: id, peer, key, offset, len });
            }
        } else {
            req.stage = Stage::Streaming { got: 0, len: env.len };
            self.push_control(peer, &Header::Cts { sreq, rreq: id.to_wire() });
        }
    }

    fn read_done(&mut self, regions: &Regions, token: u64, error: Option<Error>) {
        let id = ReqId::from_wire(token);
        let Some(req) = self.slot(id) else { return };
        let Stage::Reading { outstanding, sreq, error: first } = &mut req.stage else {
            return;
        };
        *outstanding = outstanding.saturating_sub(1);
        if first.is_none() {
            *first = error.map(Box::new);
        }
        if *outstanding > 0 {
            return;
        }
        let sreq = *sreq;
        let ctx = req.ctx;
        if ctx.is_collective()
            && matches!(first.as_deref(), Some(Error::Transport(TransportError::InvalidRegion)))
        {
            // The sender withdrew its buffer: its collective has failed
            // because a member was lost, which this rank will also notice
            // soon. Until then the receive waits, so that it ends with the
            // loss (from `peer_lost`) rather than a stray region error.
            if let Some(p) = self.lost_member(ctx) {
                let error = self.loss(p);
                self.finish(regions, id, Err(error));
            }
            return;
        }
        let Some(req) = self.slot(id) else { return };
        let Stage::Reading { error: first, .. } = &mut req.stage else { return };
        let result = match first.take() {
            Some(e) => Err(*e),
            None => Ok(req.info),
        };
        if let Some(peer) = req.peer {
            if !self.lost[peer.index()] {
                self.push_control(peer, &Header::Fin { sreq });
            }
        }
        self.finish(regions, id, result);
    }

    /// The error for an operation that depends on the lost `peer`.
    pub(crate) fn loss(&self, peer: PeerId) -> Error {
        if let Some(why) = &self.refused[peer.index()] {
            return Error::Protocol(format!("rank {peer} (world) {why}"));
        }
        match self.silent[peer.index()] {
            true => Error::PeerUnresponsive { rank: peer.index() },
            false => Error::PeerFailed { rank: peer.index() },
        }
    }

    /// A lost member of `ctx`'s communicator, if it has one.
    fn lost_member(&self, ctx: ContextId) -> Option<PeerId> {
        if self.lost_count == 0 {
            return None;
        }
        let group = self.ctxs.get(ctx)?.group.as_ref()?;
        group.iter().copied().find(|p| self.lost[p.index()])
    }

    /// Fails a new transfer on a collective context whose communicator has
    /// lost a member: the collective cannot complete, and a rank that went
    /// on could leave its partners waiting for ever.
    #[inline]
    fn check_collective(&self, ctx: ContextId) -> Result<()> {
        if self.lost_count == 0 || !ctx.is_collective() {
            return Ok(());
        }
        match self.lost_member(ctx) {
            Some(p) => Err(self.loss(p)),
            None => Ok(()),
        }
    }

    /// `peer` is gone: every operation that depends on it fails, and so does
    /// every any-source receive on a communicator that contains it. On the
    /// collective context of such a communicator every transfer fails, with
    /// live partners too (ULFM's rule that a collective on a communicator
    /// with a failed process raises the failure): each survivor's collective
    /// then ends with the error instead of waiting for a partner that has
    /// itself given up.
    fn peer_lost(&mut self, regions: &Regions, peer: PeerId) {
        if std::mem::replace(&mut self.lost[peer.index()], true) {
            return;
        }
        self.lost_count += 1;
        tracing::debug!(peer = peer.index(), "peer lost");
        let error = self.loss(peer);
        let mut failed = Vec::new();
        let mut broken = Vec::new();
        for (id, ctx) in self.ctxs.iter_mut() {
            let Some(group) = ctx.group.as_ref() else {
                continue;
            };
            if !group.contains(&peer) {
                continue;
            }
            let collective = id.is_collective();
            if collective {
                broken.push(id);
            }
            failed.extend(ctx.matcher.cancel(|src, _| match src {
                Some(s) => collective || group.get(s as usize) == Some(&peer),
                None => true,
            }));
        }
        self.outbox.retain(|out| {
            if out.dst != peer {
                return true;
            }
            if let Body::Region { req, .. } = out.body {
                failed.push(req);
            }
            false
        });
        self.jobs.retain(|job| job.peer() != peer);
        for (index, slot) in self.slots.iter().enumerate() {
            if let Some(req) = &slot.req {
                let depends = req.peer == Some(peer) || broken.contains(&req.ctx);
                if depends && !matches!(req.stage, Stage::Done(_) | Stage::Posted | Stage::Task) {
                    failed.push(ReqId { index: index as u32, generation: slot.generation });
                }
            }
        }
        for id in failed {
            self.finish(regions, id, Err(error.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use hpcomm_transport::loopback::Loopback;

    use super::*;

    fn eager(ctx: u32, src: u32, seq: u32) -> Vec<u8> {
        let msg = MessageHeader { ctx: ContextId(ctx), src, tag: 5, seq };
        header_of(&Header::Eager { msg, sync: None }).0[..24].to_vec()
    }

    #[test]
    fn messages_that_came_before_their_communicator_are_checked_when_it_opens() {
        let mut eps = Loopback::fabric(3, Default::default());
        let (mut two, mut one) = (eps.pop().unwrap(), eps.pop().unwrap());
        let mut engine = Engine::new(Backend::Loopback(eps.pop().unwrap()), None);
        // On context 4, which rank 0 has not opened: rank 1 claims to be rank
        // 1 of it (it is rank 0 there), rank 2 tells the truth (it is rank 1).
        one.try_send(PeerId(0), &eager(4, 1, 0), b"lie").unwrap();
        two.try_send(PeerId(0), &eager(4, 1, 0), b"truth").unwrap();
        while engine.state.ctxs.get(ContextId(4)).map_or(0, |c| c.pending.len()) < 2 {
            engine.progress().unwrap();
        }
        engine.open_context(ContextId(4), &[PeerId(1), PeerId(2)]);
        assert!(engine.is_lost(PeerId(1)));
        assert!(
            matches!(engine.state.loss(PeerId(1)), Error::Protocol(why) if why.contains("rank 1 of context 4"))
        );
        assert!(!engine.is_lost(PeerId(2)));
        let ctx = engine.state.ctx(ContextId(4));
        assert_eq!(ctx.matcher.unexpected_len(), 1);
        let (env, _) = ctx.matcher.probe(Pattern { src: None, tag: None }).unwrap();
        assert_eq!(env.src, 1);
    }
}
