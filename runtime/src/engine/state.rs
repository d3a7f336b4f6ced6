//! The protocol state of an endpoint, apart from its transport: what the
//! engine knows of requests, contexts, peers and the frames it wants sent.
//!
//! It reacts to transport events ([`State::on_event`]: frames, finished
//! reads, lost peers) and to user calls, and its outputs are the frames it
//! queues in the outbox, the jobs it queues (reads, data pushes) and the
//! requests it finishes. It does no I/O: the engine ([`super::Engine`])
//! hands the outbox and the jobs to the transport, so every rule here is
//! tested by feeding it frames (the tests below).

use std::collections::VecDeque;

use hpcomm_transport::{Event, LossCause, PeerId, RegionId, Regions, RemoteKey, TransportError};

use super::requests::{Completed, Direction, Req, ReqId, Requests, Stage};
use crate::contexts::Contexts;
use crate::error::{Error, Result};
use crate::matching::{Envelope, Matcher, Pattern};
use crate::protocol::{select, Limits, Protocol, Rendezvous};
use crate::types::ContextId;
use crate::wire::{Header, HeaderBuf, MessageHeader, MAX_HEADER};

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

/// A message taken by a matched probe: out of every receive's reach until
/// it is received through its handle or put back.
#[derive(Debug)]
pub(crate) struct Matched {
    ctx: ContextId,
    env: Envelope,
    arrival: u64,
    stored: Stored,
}

impl Matched {
    /// Its source, tag and length.
    pub fn envelope(&self) -> Envelope {
        self.env
    }

    /// The context it arrived on.
    pub fn ctx(&self) -> ContextId {
        self.ctx
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
pub(super) enum Body {
    Empty,
    Owned(Vec<u8>),
    Region { region: RegionId, req: ReqId },
}

#[derive(Debug)]
pub(super) struct Outgoing {
    pub dst: PeerId,
    pub header: HeaderBuf,
    pub header_len: u8,
    pub body: Body,
}

#[derive(Debug)]
pub(super) enum Job {
    /// Read `len` bytes at `base + offset` of the peer's exposed buffer
    /// into `offset` of the request's region, or write them the other way.
    Access {
        req: ReqId,
        dir: Direction,
        peer: PeerId,
        key: RemoteKey,
        base: usize,
        offset: usize,
        len: usize,
    },
    /// Push the request's region from `offset` in `DATA` frames.
    Push { req: ReqId, peer: PeerId, rreq: u64, offset: usize, len: usize },
}

impl Job {
    fn peer(&self) -> PeerId {
        match *self {
            Job::Access { peer, .. } | Job::Push { peer, .. } => peer,
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
    pub(super) peer_limits: PeerLimits,
    ctxs: Contexts<CtxState>,
    pub(super) reqs: Requests,
    /// Frames waiting for the transport, in order.
    pub(super) outbox: VecDeque<Outgoing>,
    /// Reads and data pushes waiting for the transport, in order.
    pub(super) jobs: VecDeque<Job>,
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
    next_ctx: u32,
}

/// The protocol limits towards each peer, kept as one byte per peer into
/// the few distinct sets of limits a job has (shm's and tcp's, say): a
/// table of 16,384 peers is 16 KiB, not 640.
#[derive(Debug)]
pub(super) struct PeerLimits {
    class: Vec<u8>,
    classes: Vec<Limits>,
}

impl PeerLimits {
    pub fn new(each: impl Iterator<Item = Limits>) -> PeerLimits {
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

const POOL_KEEP: usize = 256;

pub(super) fn header_of(h: &Header) -> (HeaderBuf, u8) {
    let mut buf = [0u8; MAX_HEADER];
    let n = h.encode(&mut buf);
    (buf, n as u8)
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

pub(super) fn transport_error(e: TransportError) -> Error {
    match e {
        TransportError::PeerLost(p) => Error::PeerFailed { rank: p.index() },
        e => Error::Transport(e),
    }
}

/// Where a message goes: rank `dst` (world peer `peer`) of context `ctx`,
/// from rank `me`, with `tag`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct To {
    pub ctx: ContextId,
    pub me: u32,
    pub dst: u32,
    pub peer: PeerId,
    pub tag: i32,
}

/// The eager frame of a send: its header; `inline`: small enough to copy
/// when it must wait, instead of holding the user's buffer; `sync`: a
/// synchronous send, which then waits for its `ACK`.
#[derive(Clone, Copy, Debug)]
pub(super) struct EagerFrame {
    pub header: HeaderBuf,
    pub header_len: u8,
    pub inline: bool,
    pub sync: bool,
}

impl EagerFrame {
    /// The header's bytes.
    pub fn header(&self) -> &[u8] {
        &self.header[..self.header_len as usize]
    }
}

/// How a send that [`State::start_send`] began goes on.
#[derive(Debug)]
pub(super) enum SendPlan {
    /// Its eager frame goes out now if the transport takes it, else waits
    /// in the outbox ([`State::eager_attempted`]).
    Eager(EagerFrame),
    /// Its `RTS` goes out once the transport has exposed the buffer, for a
    /// read (`read`), or at once for a pipelined transfer
    /// ([`State::send_rts`]).
    Rendezvous { msg: MessageHeader, read: bool },
}

impl State {
    /// The state of an endpoint among `peers` peers; `limits` hold for
    /// every peer, `each` gives each peer's own.
    pub fn new(limits: Limits, each: impl Iterator<Item = Limits>, peers: usize) -> State {
        State {
            limits,
            peer_limits: PeerLimits::new(each),
            ctxs: Contexts::default(),
            reqs: Requests::default(),
            outbox: VecDeque::new(),
            jobs: VecDeque::new(),
            lost: vec![false; peers],
            silent: vec![false; peers],
            refused: vec![None; peers],
            lost_count: 0,
            released: Vec::new(),
            pool: Vec::new(),
            next_ctx: 2,
        }
    }

    /// Whether `peer` is known to be gone.
    #[inline]
    pub fn is_lost(&self, peer: PeerId) -> bool {
        self.lost[peer.index()]
    }

    /// Whether frames or jobs are waiting for the transport.
    #[inline]
    pub fn has_backlog(&self) -> bool {
        !self.outbox.is_empty() || !self.jobs.is_empty()
    }

    /// The lowest context id this endpoint has not used.
    pub fn next_ctx(&self) -> u32 {
        self.next_ctx
    }

    /// Marks the context pair of `ctx` as used.
    pub fn reserve_ctx(&mut self, ctx: ContextId) {
        self.next_ctx = self.next_ctx.max(ctx.0.saturating_add(2));
    }

    /// The header of a standard-mode eager message of `len` bytes that may
    /// leave at once, straight from the user's buffer and with no request:
    /// `None` when it must take the request path (rendezvous size, or a
    /// backlog to keep order with). Its sequence number is taken now, and
    /// given back by [`State::unspend_seq`] if the transport does not take
    /// the frame (one look-up on the path of every small send).
    #[inline]
    pub fn eager_now(&mut self, to: To, len: usize) -> Result<Option<(HeaderBuf, u8)>> {
        let To { ctx, me, dst, peer, tag } = to;
        let limits = &self.peer_limits[peer.index()];
        if !matches!(select(len, limits), Protocol::Inline | Protocol::Eager)
            || !self.outbox.is_empty()
        {
            return Ok(None);
        }
        if self.is_lost(peer) {
            return Err(self.loss(peer));
        }
        self.check_collective(ctx)?;
        let seq = self.next_seq(ctx, dst);
        let msg = MessageHeader { ctx, src: me, tag, seq };
        Ok(Some(header_of(&Header::Eager { msg, sync: None })))
    }

    /// The frame [`State::eager_now`] prepared did not leave: its sequence
    /// number is given back, for the request path to use.
    #[cold]
    pub fn unspend_seq(&mut self, to: To) {
        let slot = self.seq_slot(to.ctx, to.dst);
        *slot = slot.wrapping_sub(1);
    }

    /// Starts a send of the registered `region` (`len` bytes) `to` a rank:
    /// its request and how it goes on.
    pub fn start_send(
        &mut self,
        to: To,
        region: RegionId,
        len: usize,
        sync: bool,
    ) -> Result<(ReqId, SendPlan)> {
        let To { ctx, me, dst, peer, tag } = to;
        if self.is_lost(peer) {
            return Err(self.loss(peer));
        }
        self.check_collective(ctx)?;
        let seq = self.next_seq(ctx, dst);
        let msg = MessageHeader { ctx, src: me, tag, seq };
        let mut req = Req::new(Stage::AwaitReply, ctx, Some(region), Some(peer));
        req.info = Completed { src: me, tag, bytes: len };
        let id = self.reqs.alloc(req);
        let plan = match select(len, &self.peer_limits[peer.index()]) {
            protocol @ (Protocol::Inline | Protocol::Eager) => {
                let header = Header::Eager { msg, sync: sync.then(|| id.to_wire()) };
                let (header, header_len) = header_of(&header);
                let inline = protocol == Protocol::Inline;
                SendPlan::Eager(EagerFrame { header, header_len, inline, sync })
            }
            Protocol::Rendezvous(mode) => {
                SendPlan::Rendezvous { msg, read: mode == Rendezvous::Read }
            }
        };
        Ok((id, plan))
    }

    /// What became of the eager frame of send `id` that the engine offered
    /// the transport (`WouldBlock` when it did not, to keep order with the
    /// outbox): sent, queued (copied when inline), or failed.
    pub fn eager_attempted(
        &mut self,
        regions: &Regions,
        id: ReqId,
        peer: PeerId,
        frame: EagerFrame,
        outcome: std::result::Result<(), TransportError>,
    ) {
        let EagerFrame { header, header_len, inline, sync } = frame;
        let Some(region) = self.reqs.get(id).and_then(|r| r.region) else { return };
        match outcome {
            Ok(()) => self.reqs.sent(regions, id, sync),
            Err(TransportError::WouldBlock) if inline => {
                let data = regions.with(region, |b| b.to_vec()).unwrap_or_default();
                let body = Body::Owned(data);
                self.outbox.push_back(Outgoing { dst: peer, header, header_len, body });
                self.reqs.sent(regions, id, sync);
            }
            Err(TransportError::WouldBlock) => {
                if let Some(req) = self.reqs.get_mut(id) {
                    req.stage = Stage::Queued { then_await: sync };
                }
                let body = Body::Region { region, req: id };
                self.outbox.push_back(Outgoing { dst: peer, header, header_len, body });
            }
            Err(e) => self.reqs.finish(regions, id, Err(transport_error(e))),
        }
    }

    /// Queues the `RTS` of rendezvous send `id` (`msg`, `len` bytes): with
    /// `key` for a read, or awaiting the receiver's `CTS`.
    pub fn send_rts(
        &mut self,
        id: ReqId,
        peer: PeerId,
        msg: MessageHeader,
        read: bool,
        key: RemoteKey,
    ) {
        let Some(req) = self.reqs.get_mut(id) else { return };
        let len = req.info.bytes as u64;
        if !read {
            req.stage = Stage::AwaitCts;
        }
        self.push_control(peer, &Header::Rts { msg, read, len, sreq: id.to_wire(), key });
    }

    /// Ends request `id` with `error`.
    pub fn fail(&mut self, regions: &Regions, id: ReqId, error: Error) {
        self.reqs.finish(regions, id, Err(error));
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
        let matcher = &mut self.ctx(ctx).matcher;
        if matcher.unexpected_len() == 0 {
            return None;
        }
        let (env, stored) =
            matcher.take_unexpected(pattern, |stored| matches!(stored, Stored::Eager { .. }))?;
        let Stored::Eager { data, from, sync } = stored else { unreachable!("only eager taken") };
        if let Some(sreq) = sync {
            self.push_control(from, &Header::Ack { sreq });
        }
        let result = match buf.get_mut(..data.len()) {
            Some(dst) => {
                dst.copy_from_slice(&data);
                Ok(Completed { src: env.src, tag: env.tag, bytes: data.len() })
            }
            None => Err(Error::Truncated { needed: data.len(), capacity: buf.len() }),
        };
        self.recycle(data);
        Some(result)
    }

    /// Posts a receive into the writable `region` for messages `pattern`
    /// accepts on `ctx`; `peer` is the world peer of a specific source;
    /// `keep_region`: the region is the engine's and stays when the receive
    /// ends (a task's buffer).
    pub fn post_recv(
        &mut self,
        regions: &Regions,
        ctx: ContextId,
        pattern: Pattern,
        peer: Option<PeerId>,
        region: RegionId,
        keep_region: bool,
    ) -> ReqId {
        let mut req = Req::new(Stage::Posted, ctx, Some(region), peer);
        req.keep_region = keep_region;
        let id = self.reqs.alloc(req);
        match self.ctx(ctx).matcher.post(pattern, id) {
            Some((env, stored)) => self.deliver_stored(regions, id, env, stored),
            None => {
                // A receive that depends on a lost peer fails now; so does
                // an any-source receive on a communicator with a lost member
                // (the message it waits for might have been that peer's),
                // and every receive of a collective on such a communicator.
                let lost = match peer {
                    Some(p) if self.lost[p.index()] => Some(p),
                    Some(_) if !ctx.is_collective() => None,
                    _ => self.lost_member(ctx),
                };
                if let Some(p) = lost {
                    self.ctx(ctx).matcher.cancel(|_, r| r == id);
                    let error = self.loss(p);
                    self.reqs.finish(regions, id, Err(error));
                }
            }
        }
        id
    }

    /// The envelope of the earliest unexpected message `pattern` accepts.
    pub fn probe(&mut self, ctx: ContextId, pattern: Pattern) -> Option<Envelope> {
        self.ctx(ctx).matcher.probe(pattern).map(|(env, _)| *env)
    }

    /// Takes the earliest unexpected message `pattern` accepts out of every
    /// receive's reach (a matched probe).
    pub fn take_matched(&mut self, ctx: ContextId, pattern: Pattern) -> Option<Matched> {
        let (env, arrival, stored) = self.ctx(ctx).matcher.take_earliest(pattern)?;
        Some(Matched { ctx, env, arrival, stored })
    }

    /// Receives a matched message into the writable `region`: a request
    /// that completes as a receive that had matched it would. The data of
    /// a rendezvous message whose sender was lost since the probe cannot
    /// come: the receive fails at once, as one posted then would.
    pub fn receive_matched(&mut self, regions: &Regions, m: Matched, region: RegionId) -> ReqId {
        let from = m.stored.from();
        let req = Req::new(Stage::Posted, m.ctx, Some(region), Some(from));
        let id = self.reqs.alloc(req);
        match m.stored {
            Stored::Rts { .. } if self.lost[from.index()] => {
                let error = self.loss(from);
                self.reqs.finish(regions, id, Err(error));
            }
            stored => self.deliver_stored(regions, id, m.env, stored),
        }
        id
    }

    /// Puts back a matched message that was not received: to a receive
    /// posted since that accepts it, or among the unexpected messages in
    /// its arrival order.
    pub fn restore_matched(&mut self, regions: &Regions, m: Matched) {
        let Matched { ctx, env, arrival, stored } = m;
        if let Some((id, stored)) = self.ctx(ctx).matcher.restore(env, arrival, stored) {
            self.deliver_stored(regions, id, env, stored);
        }
    }

    /// Records the group of a communicator this endpoint belongs to. The
    /// messages that arrived for it before are checked against the group
    /// now: one that claims a rank other than its sender's is refused, and
    /// its sender fails (see [`State::on_event`]).
    pub fn open_context(&mut self, regions: &Regions, ctx: ContextId, group: &[PeerId]) {
        let mut liars = Vec::new();
        for c in [ctx, ctx.collective()] {
            let state = self.ctx(c);
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
        self.reserve_ctx(ctx);
        for (peer, claimed, c) in liars {
            if !self.lost[peer.index()] {
                let why = format!("claimed to be rank {claimed} of context {}", c.0);
                self.refused[peer.index()] = Some(why.into_boxed_str());
                self.peer_lost(regions, peer);
            }
        }
    }

    /// Whether this endpoint has no state for the context pair of `ctx`:
    /// never used here, or closed since.
    pub fn context_free(&self, ctx: ContextId) -> bool {
        self.ctxs.get(ctx).is_none() && self.ctxs.get(ctx.collective()).is_none()
    }

    /// Forgets the context pair of a communicator dropped on this rank, so
    /// that its id can be agreed again for a new one — unless something is
    /// still in flight on it (a posted receive, a message nobody received,
    /// a request that has not ended, `tasks_on` it): then it stays, and is
    /// never reused.
    pub fn close_context(&mut self, ctx: ContextId, tasks_on: impl Fn(ContextId) -> bool) {
        let pair = [ContextId(ctx.0 & !1), ctx.collective()];
        let idle = pair.iter().all(|&c| {
            self.ctxs.get(c).is_none_or(|s| s.matcher.is_empty() && s.pending.is_empty())
        });
        let busy = self.reqs.iter().any(|(_, r)| pair.contains(&r.ctx) && !r.done())
            || pair.iter().any(|&c| tasks_on(c));
        if !idle || busy {
            tracing::debug!(ctx = ctx.0, "context closed with traffic in flight: not reused");
            return;
        }
        for c in pair {
            self.ctxs.remove(c);
        }
    }

    /// Counts a collective operation started on `ctx`; returns its number
    /// (the same on every rank, as collectives are called in order).
    pub fn next_collective(&mut self, ctx: ContextId) -> u32 {
        let c = self.ctx(ctx);
        c.collectives = c.collectives.wrapping_add(1);
        c.collectives
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

    #[inline]
    fn next_seq(&mut self, ctx: ContextId, dst: u32) -> u32 {
        let slot = self.seq_slot(ctx, dst);
        let seq = *slot;
        *slot = seq.wrapping_add(1);
        seq
    }

    fn push_control(&mut self, dst: PeerId, header: &Header) {
        let (buf, len) = header_of(header);
        self.outbox.push_back(Outgoing { dst, header: buf, header_len: len, body: Body::Empty });
    }

    pub(super) fn recycle(&mut self, mut data: Vec<u8>) {
        if self.pool.len() < POOL_KEEP && data.capacity() > 0 {
            data.clear();
            self.pool.push(data);
        }
    }

    /// Handles one transport event. A frame that breaks the protocol fails
    /// its sender (every operation that depends on it ends with
    /// [`Error::Protocol`]) and nothing else: the other events of the batch
    /// are handled as usual.
    pub(super) fn on_event(&mut self, regions: &Regions, ev: Event<'_>) {
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
            Event::RmaDone { token } => self.access_done(regions, token, None),
            Event::RmaFailed { token, error } => {
                self.access_done(regions, token, Some(transport_error(error)))
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
                if let Some(req) = self.reqs.get(id) {
                    if req.peer == Some(src)
                        && matches!(req.stage, Stage::AwaitReply | Stage::AwaitCts)
                    {
                        let info = req.info;
                        self.reqs.finish(regions, id, Ok(info));
                    }
                }
            }
            Header::Cts { sreq, rreq } => {
                let id = ReqId::from_wire(sreq);
                if let Some(req) = self.reqs.get_mut(id) {
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
                let Some(req) = self.reqs.get_mut(id) else {
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
                    self.reqs.finish(
                        regions,
                        id,
                        Err(Error::Transport(TransportError::InvalidRegion)),
                    );
                } else if complete {
                    self.reqs.finish(regions, id, Ok(info));
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
        let Some(req) = self.reqs.get_mut(id) else { return };
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
        self.reqs.finish(regions, id, result);
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
        let Some(req) = self.reqs.get_mut(id) else { return };
        req.info = Completed { src: env.src, tag: env.tag, bytes: env.len };
        req.peer = Some(peer);
        let capacity = req.region.and_then(|r| regions.len(r)).unwrap_or(0);
        if env.len > capacity {
            // Refuse the data; the sender completes, the receive reports it.
            self.push_control(peer, &Header::Fin { sreq });
            self.reqs.finish(regions, id, Err(Error::Truncated { needed: env.len, capacity }));
        } else if read {
            // At most the receive buffer's length over the read size: the
            // length was checked against the buffer just above.
            self.start_accesses(id, Direction::Read, (peer, key, 0), env.len, Some(sreq));
        } else {
            req.stage = Stage::Streaming { got: 0, len: env.len };
            self.push_control(peer, &Header::Cts { sreq, rreq: id.to_wire() });
        }
    }

    /// Reads `len` bytes at `base` of `peer`'s region `key` into request
    /// `id`'s region (or writes them from it there), in chunks of the
    /// peer's largest read; `sreq` is the sender's request of a rendezvous
    /// (told `FIN` at the end).
    pub(super) fn start_accesses(
        &mut self,
        id: ReqId,
        dir: Direction,
        (peer, key, base): (PeerId, RemoteKey, usize),
        len: usize,
        sreq: Option<u64>,
    ) {
        let max_read = self.peer_limits[peer.index()].max_read.max(1);
        let Some(req) = self.reqs.get_mut(id) else { return };
        let chunks = len.div_ceil(max_read);
        req.stage = Stage::Accessing { dir, outstanding: chunks, sreq, error: None };
        for c in 0..chunks {
            let offset = c * max_read;
            let len = max_read.min(len - offset);
            self.jobs.push_back(Job::Access { req: id, dir, peer, key, base, offset, len });
        }
    }

    /// Whether a one-sided write of this endpoint is still in flight.
    pub(super) fn writing(&self) -> bool {
        self.reqs
            .iter()
            .any(|(_, r)| matches!(r.stage, Stage::Accessing { dir: Direction::Write, .. }))
    }

    pub(super) fn access_done(&mut self, regions: &Regions, token: u64, error: Option<Error>) {
        let id = ReqId::from_wire(token);
        let Some(req) = self.reqs.get_mut(id) else { return };
        let Stage::Accessing { outstanding, sreq, error: first, .. } = &mut req.stage else {
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
                self.reqs.finish(regions, id, Err(error));
            }
            return;
        }
        let Some(req) = self.reqs.get_mut(id) else { return };
        let Stage::Accessing { error: first, .. } = &mut req.stage else { return };
        let result = match first.take() {
            Some(e) => Err(*e),
            None => Ok(req.info),
        };
        if let (Some(peer), Some(sreq)) = (req.peer, sreq) {
            if !self.lost[peer.index()] {
                self.push_control(peer, &Header::Fin { sreq });
            }
        }
        self.reqs.finish(regions, id, result);
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
    pub(super) fn peer_lost(&mut self, regions: &Regions, peer: PeerId) {
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
        for (id, req) in self.reqs.iter() {
            let depends = req.peer == Some(peer) || broken.contains(&req.ctx);
            if depends && !matches!(req.stage, Stage::Done(_) | Stage::Posted | Stage::Task) {
                failed.push(id);
            }
        }
        for id in failed {
            self.reqs.finish(regions, id, Err(error.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    //! The protocol fed frames by hand: each test is a short exchange with
    //! peers that exist only as the frames they send and the frames this
    //! state queues for them.

    use super::*;

    /// Context 0 (and its collective twin 1) holds every rank; the tests'
    /// peers are world ranks 1 and 2, ranks 1 and 2 of it.
    const CTX: ContextId = ContextId(0);
    const TAG: i32 = 7;

    struct Rig {
        state: State,
        regions: Regions,
    }

    fn limits(rma_read: bool) -> Limits {
        Limits { inline: 8, eager: 64, rma_read, max_payload: 32, max_read: 40 }
    }

    impl Rig {
        fn new(rma_read: bool) -> Rig {
            let l = limits(rma_read);
            let mut state = State::new(l, std::iter::repeat_n(l, 3), 3);
            let regions = Regions::new();
            state.open_context(&regions, CTX, &[PeerId(0), PeerId(1), PeerId(2)]);
            Rig { state, regions }
        }

        fn frame(&mut self, src: u32, header: Header, payload: &[u8]) {
            let (buf, len) = header_of(&header);
            let header = &buf[..len as usize];
            self.state.on_event(&self.regions, Event::Frame { src: PeerId(src), header, payload });
        }

        fn eager(&mut self, src: u32, seq: u32, sync: Option<u64>, payload: &[u8]) {
            let msg = MessageHeader { ctx: CTX, src, tag: TAG, seq };
            self.frame(src, Header::Eager { msg, sync }, payload);
        }

        fn rts(&mut self, src: u32, seq: u32, read: bool, len: u64, sreq: u64) {
            let msg = MessageHeader { ctx: CTX, src, tag: TAG, seq };
            let key = RemoteKey { addr: 0x1000, key: 9 };
            self.frame(src, Header::Rts { msg, read, len, sreq, key }, &[]);
        }

        /// A receive of up to `capacity` bytes into a buffer the test reads
        /// back with [`Rig::data`].
        fn recv(&mut self, src: Option<u32>, capacity: usize) -> (ReqId, RegionId) {
            let region = self.regions.insert_owned(vec![0; capacity]);
            let pattern = Pattern { src, tag: Some(TAG) };
            let peer = src.map(PeerId);
            (self.state.post_recv(&self.regions, CTX, pattern, peer, region, true), region)
        }

        fn data(&self, region: RegionId) -> Vec<u8> {
            self.regions.with(region, |b| b.to_vec()).expect("a live region")
        }

        /// The frames queued for the transport, taken: destination, header
        /// and payload.
        fn sent(&mut self) -> Vec<(u32, Header, Vec<u8>)> {
            self.state
                .outbox
                .drain(..)
                .map(|out| {
                    let h = Header::decode(&out.header[..out.header_len as usize]).expect("valid");
                    let body = match out.body {
                        Body::Empty => Vec::new(),
                        Body::Owned(data) => data,
                        Body::Region { region, .. } => {
                            self.regions.with(region, |b| b.to_vec()).unwrap_or_default()
                        }
                    };
                    (out.dst.0, h, body)
                })
                .collect()
        }

        fn outcome(&mut self, id: ReqId) -> Option<Result<Completed>> {
            self.state.reqs.take(id)
        }
    }

    fn done(src: u32, bytes: usize) -> Completed {
        Completed { src, tag: TAG, bytes }
    }

    #[test]
    fn eager_messages_meet_their_receives_in_either_order() {
        let mut rig = Rig::new(true);
        // Posted first: the frame lands in the buffer.
        let (first, buf) = rig.recv(Some(1), 16);
        rig.eager(1, 0, None, b"early");
        assert_eq!(rig.outcome(first).unwrap().unwrap(), done(1, 5));
        assert_eq!(&rig.data(buf)[..5], b"early");
        // Arrived first: kept, then taken by the late receive, in order.
        rig.eager(1, 1, None, b"one");
        rig.eager(1, 2, None, b"two");
        let mut got = [0u8; 8];
        let pattern = Pattern { src: Some(1), tag: Some(TAG) };
        assert_eq!(rig.state.try_recv_now(CTX, pattern, &mut got).unwrap().unwrap(), done(1, 3));
        assert_eq!(&got[..3], b"one");
        let (second, buf) = rig.recv(Some(1), 16);
        assert_eq!(rig.outcome(second).unwrap().unwrap(), done(1, 3));
        assert_eq!(&rig.data(buf)[..3], b"two");
        // A frame that overtook its predecessor waits for it.
        rig.eager(2, 1, None, b"second");
        let (any, _) = rig.recv(None, 16);
        assert!(rig.outcome(any).is_none(), "seq 1 of rank 2 waits for seq 0");
        rig.eager(2, 0, None, b"first");
        assert_eq!(rig.outcome(any).unwrap().unwrap(), done(2, 5));
        assert!(rig.sent().is_empty(), "standard sends need no answer");
    }

    #[test]
    fn a_synchronous_send_is_acknowledged_when_matched_and_a_short_buffer_is_an_error() {
        let mut rig = Rig::new(true);
        rig.eager(1, 0, Some(77), b"sync");
        assert!(rig.sent().is_empty(), "not matched yet: no ACK");
        let (id, _) = rig.recv(Some(1), 2);
        assert_eq!(rig.sent(), vec![(1, Header::Ack { sreq: 77 }, vec![])]);
        let err = rig.outcome(id).unwrap().unwrap_err();
        assert!(matches!(err, Error::Truncated { needed: 4, capacity: 2 }), "{err}");
    }

    #[test]
    fn a_pipelined_rendezvous_answers_cts_and_takes_data_to_the_end() {
        let mut rig = Rig::new(false);
        let (id, buf) = rig.recv(Some(1), 100);
        rig.rts(1, 0, false, 70, 5);
        let sent = rig.sent();
        let [(1, Header::Cts { sreq: 5, rreq }, _)] = sent[..] else { panic!("{sent:?}") };
        rig.frame(1, Header::Data { rreq, offset: 32 }, &[2; 32]);
        rig.frame(1, Header::Data { rreq, offset: 0 }, &[1; 32]);
        assert!(rig.outcome(id).is_none(), "64 of 70 bytes");
        rig.frame(1, Header::Data { rreq, offset: 64 }, &[3; 6]);
        assert_eq!(rig.outcome(id).unwrap().unwrap(), done(1, 70));
        let data = rig.data(buf);
        assert!(data[..32].iter().all(|&b| b == 1) && data[32..64].iter().all(|&b| b == 2));
        assert_eq!(&data[64..70], &[3; 6]);
        assert!(!rig.state.is_lost(PeerId(1)));
    }

    #[test]
    fn data_past_the_message_end_fails_its_sender() {
        let mut rig = Rig::new(false);
        let (id, _) = rig.recv(Some(1), 100);
        rig.rts(1, 0, false, 40, 5);
        let sent = rig.sent();
        let [(1, Header::Cts { rreq, .. }, _)] = sent[..] else { panic!("{sent:?}") };
        rig.frame(1, Header::Data { rreq, offset: 20 }, &[0; 32]);
        assert!(rig.state.is_lost(PeerId(1)));
        assert!(matches!(rig.outcome(id).unwrap(), Err(Error::Protocol(_))));
    }

    #[test]
    fn a_read_rendezvous_reads_in_chunks_then_sends_fin() {
        let mut rig = Rig::new(true);
        let (id, _) = rig.recv(Some(2), 100);
        rig.rts(2, 0, true, 100, 9);
        let chunks: Vec<(usize, usize)> = rig
            .state
            .jobs
            .iter()
            .map(|job| match *job {
                Job::Access { offset, len, peer, key, .. } => {
                    assert_eq!((peer, key.key), (PeerId(2), 9));
                    (offset, len)
                }
                Job::Push { .. } => panic!("a push on the receiving side"),
            })
            .collect();
        assert_eq!(chunks, vec![(0, 40), (40, 40), (80, 20)], "max_read of 40");
        let token = id.to_wire();
        for _ in 0..3 {
            assert!(rig.outcome(id).is_none());
            rig.state.on_event(&rig.regions, Event::RmaDone { token });
        }
        assert_eq!(rig.outcome(id).unwrap().unwrap(), done(2, 100));
        assert_eq!(rig.sent(), vec![(2, Header::Fin { sreq: 9 }, vec![])]);
    }

    /// A one-sided write goes in chunks of the peer's largest transfer,
    /// completes with its last chunk (no `FIN`: the peer takes no part),
    /// counts as writing until then, and fails when its peer is lost.
    #[test]
    fn a_one_sided_write_writes_in_chunks_and_is_in_flight_until_done() {
        let mut rig = Rig::new(true);
        let key = RemoteKey { addr: 0x2000, key: 5 };
        let write = |rig: &mut Rig| {
            let region = rig.regions.insert_owned(vec![1; 100]);
            let req = Req::new(Stage::Posted, CTX.collective(), Some(region), Some(PeerId(1)));
            let id = rig.state.reqs.alloc(req);
            rig.state.start_accesses(id, Direction::Write, (PeerId(1), key, 16), 100, None);
            id
        };
        let id = write(&mut rig);
        let chunks: Vec<_> = rig
            .state
            .jobs
            .drain(..)
            .map(|job| match job {
                Job::Access { dir, base, offset, len, .. } => (dir, base, offset, len),
                Job::Push { .. } => panic!("a push for a write"),
            })
            .collect();
        let w = Direction::Write;
        assert_eq!(chunks, vec![(w, 16, 0, 40), (w, 16, 40, 40), (w, 16, 80, 20)]);
        let token = id.to_wire();
        for _ in 0..3 {
            assert!(rig.state.writing(), "a write in flight");
            rig.state.on_event(&rig.regions, Event::RmaDone { token });
        }
        assert!(!rig.state.writing());
        assert!(rig.outcome(id).unwrap().is_ok(), "done with its last chunk");
        assert!(rig.sent().is_empty(), "nothing told to the peer");
        let lost = write(&mut rig);
        rig.state
            .on_event(&rig.regions, Event::PeerLost { peer: PeerId(1), cause: LossCause::Silent });
        assert!(rig.outcome(lost).unwrap().is_err());
        assert!(!rig.state.writing(), "a failed write is no longer in flight");
    }

    #[test]
    fn a_rendezvous_too_large_for_its_buffer_is_refused_with_fin() {
        let mut rig = Rig::new(true);
        let (id, _) = rig.recv(Some(1), 50);
        rig.rts(1, 0, true, 100, 3);
        assert_eq!(rig.sent(), vec![(1, Header::Fin { sreq: 3 }, vec![])]);
        assert!(rig.state.jobs.is_empty(), "nothing read");
        let err = rig.outcome(id).unwrap().unwrap_err();
        assert!(matches!(err, Error::Truncated { needed: 100, capacity: 50 }), "{err}");
    }

    #[test]
    fn sends_take_the_protocol_their_size_asks_for() {
        let mut rig = Rig::new(false);
        let region = rig.regions.insert_owned(vec![4; 100]);
        // Eager under back-pressure: queued holding the buffer, done once out.
        let (id, plan) = rig
            .state
            .start_send(
                To { ctx: CTX, me: 0, dst: 1, peer: PeerId(1), tag: TAG },
                region,
                20,
                false,
            )
            .unwrap();
        let SendPlan::Eager(frame @ EagerFrame { inline: false, .. }) = plan else {
            panic!("{plan:?}")
        };
        let blocked = Err(TransportError::WouldBlock);
        rig.state.eager_attempted(&rig.regions, id, PeerId(1), frame, blocked);
        assert!(rig.state.reqs.get(id).is_some_and(|r| !r.done()), "waits in the outbox");
        assert_eq!(rig.state.outbox.len(), 1);
        // Rendezvous (pipelined): RTS, then CTS starts the push.
        let (big, plan) = rig
            .state
            .start_send(
                To { ctx: CTX, me: 0, dst: 1, peer: PeerId(1), tag: TAG },
                region,
                100,
                false,
            )
            .unwrap();
        let SendPlan::Rendezvous { msg, read: false } = plan else { panic!("{plan:?}") };
        assert_eq!(msg.seq, 1, "after the eager message's 0");
        rig.state.send_rts(big, PeerId(1), msg, false, RemoteKey::default());
        let sent = rig.sent();
        assert!(matches!(sent[0], (1, Header::Eager { msg: MessageHeader { seq: 0, .. }, .. }, _)));
        assert!(matches!(sent[1], (1, Header::Rts { len: 100, read: false, .. }, _)), "{sent:?}");
        let sreq = big.to_wire();
        // A CTS from a rank other than the receiver is ignored.
        rig.frame(2, Header::Cts { sreq, rreq: 1 }, &[]);
        assert!(rig.state.jobs.is_empty());
        rig.frame(1, Header::Cts { sreq, rreq: 1 }, &[]);
        assert!(matches!(rig.state.jobs.front(), Some(Job::Push { len: 100, offset: 0, .. })));
    }

    #[test]
    fn a_lost_peer_fails_what_depends_on_it_and_nothing_else() {
        let mut rig = Rig::new(true);
        let (from_one, _) = rig.recv(Some(1), 8);
        let (from_two, _) = rig.recv(Some(2), 8);
        let lost = Event::PeerLost { peer: PeerId(1), cause: LossCause::Silent };
        rig.state.on_event(&rig.regions, lost);
        let err = rig.outcome(from_one).unwrap().unwrap_err();
        assert!(matches!(err, Error::PeerUnresponsive { rank: 1 }), "{err}");
        assert!(rig.outcome(from_two).is_none(), "rank 2 may still send");
        // Any-source receives on its communicator fail at once, as does any
        // transfer on its collective context.
        let (any, _) = rig.recv(None, 8);
        assert!(rig.outcome(any).unwrap().is_err());
        let region = rig.regions.insert_owned(vec![0; 4]);
        let collective = rig.state.start_send(
            To { ctx: CTX.collective(), me: 0, dst: 2, peer: PeerId(2), tag: 1 },
            region,
            4,
            false,
        );
        assert!(collective.is_err(), "the collective context is broken");
        // What rank 2 sends still arrives.
        rig.eager(2, 0, None, b"ok");
        assert_eq!(rig.outcome(from_two).unwrap().unwrap(), done(2, 2));
    }

    #[test]
    fn matched_messages_are_out_of_reach_until_received_or_put_back() {
        let mut rig = Rig::new(true);
        let pattern = Pattern { src: None, tag: Some(TAG) };
        rig.eager(1, 0, Some(5), b"first");
        rig.eager(1, 1, None, b"second");
        let m = rig.state.take_matched(CTX, pattern).expect("the first");
        assert_eq!(m.envelope().len, 5);
        // A receive posted now takes the second; the matched one stays.
        let (other, region) = rig.recv(Some(1), 8);
        assert_eq!(rig.outcome(other).unwrap().unwrap(), done(1, 6));
        assert_eq!(&rig.data(region)[..6], b"second");
        assert!(rig.sent().is_empty(), "no acknowledgement before the receive");
        // (The region is released as the receive ends, as a scope's is;
        // the selftest's `mprobe` case checks the data end to end.)
        let into = rig.regions.insert_owned(vec![0; 8]);
        let id = rig.state.receive_matched(&rig.regions, m, into);
        assert_eq!(rig.outcome(id).unwrap().unwrap(), done(1, 5));
        let acks = rig.sent();
        assert!(matches!(acks[..], [(1, Header::Ack { sreq: 5 }, _)]), "{acks:?}");
        // Put back: to a receive posted meanwhile.
        rig.eager(2, 0, None, b"back");
        let m = rig.state.take_matched(CTX, pattern).expect("rank 2's");
        let (waiting, region) = rig.recv(None, 8);
        rig.state.restore_matched(&rig.regions, m);
        assert_eq!(rig.outcome(waiting).unwrap().unwrap(), done(2, 4));
        assert_eq!(&rig.data(region)[..4], b"back");
    }

    #[test]
    fn a_matched_rendezvous_whose_sender_was_lost_fails_its_receive() {
        let mut rig = Rig::new(true);
        rig.rts(1, 0, true, 100, 3);
        let m = rig.state.take_matched(CTX, Pattern { src: Some(1), tag: None }).expect("rts");
        let lost = Event::PeerLost { peer: PeerId(1), cause: LossCause::Ended };
        rig.state.on_event(&rig.regions, lost);
        let into = rig.regions.insert_owned(vec![0; 100]);
        let id = rig.state.receive_matched(&rig.regions, m, into);
        let err = rig.outcome(id).expect("failed at once").unwrap_err();
        assert!(matches!(err, Error::PeerFailed { rank: 1 }), "{err}");
        assert!(rig.state.jobs.is_empty(), "no read of a lost peer");
    }

    #[test]
    fn stale_and_misdirected_answers_change_nothing() {
        let mut rig = Rig::new(true);
        let region = rig.regions.insert_owned(vec![0; 4]);
        let (id, plan) = rig
            .state
            .start_send(To { ctx: CTX, me: 0, dst: 1, peer: PeerId(1), tag: TAG }, region, 4, true)
            .unwrap();
        let SendPlan::Eager(frame) = plan else { panic!("{plan:?}") };
        rig.state.eager_attempted(&rig.regions, id, PeerId(1), frame, Ok(()));
        let sreq = id.to_wire();
        rig.frame(2, Header::Ack { sreq }, &[]);
        rig.frame(1, Header::Ack { sreq: sreq ^ (1 << 32) }, &[]);
        assert!(rig.state.reqs.get(id).is_some_and(|r| !r.done()), "wrong rank, stale id");
        rig.frame(1, Header::Ack { sreq }, &[]);
        assert_eq!(rig.outcome(id).unwrap().unwrap(), done(0, 4));
        assert!(!rig.state.is_lost(PeerId(1)) && !rig.state.is_lost(PeerId(2)));
    }

    #[test]
    fn messages_that_came_before_their_communicator_are_checked_when_it_opens() {
        let mut rig = Rig::new(true);
        // On context 4, which this rank has not opened: rank 1 claims to be
        // rank 1 of it (it is rank 0 there), rank 2 tells the truth (it is
        // rank 1).
        for (from, says) in [(1, b"lie".as_slice()), (2, b"truth")] {
            let msg = MessageHeader { ctx: ContextId(4), src: 1, tag: 5, seq: 0 };
            rig.frame(from, Header::Eager { msg, sync: None }, says);
        }
        assert!(!rig.state.is_lost(PeerId(1)), "nothing to check it against yet");
        rig.state.open_context(&rig.regions, ContextId(4), &[PeerId(1), PeerId(2)]);
        assert!(rig.state.is_lost(PeerId(1)));
        let why = rig.state.loss(PeerId(1));
        assert!(matches!(&why, Error::Protocol(w) if w.contains("rank 1 of context 4")), "{why}");
        assert!(!rig.state.is_lost(PeerId(2)));
        let env = rig.state.probe(ContextId(4), Pattern { src: None, tag: None }).unwrap();
        assert_eq!((env.src, env.len), (1, 5));
    }
}
