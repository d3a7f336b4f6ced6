//! The requests of an endpoint: a slab of slots, each a request and a
//! generation, so that a stale handle (or a stale id echoed by a peer)
//! finds nothing. A request moves through its [`Stage`]s and ends `Done`
//! with its outcome, which the owner takes.

use hpcomm_transport::{PeerId, RegionId, Regions};

use crate::error::{Error, Result};
use crate::types::ContextId;

/// A request's handle: a slot and its generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReqId {
    index: u32,
    generation: u32,
}

impl ReqId {
    /// The handle as it travels in a frame header (a peer echoes it).
    pub fn to_wire(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    /// A handle echoed by a peer: looked up, it finds nothing unless it is
    /// live.
    pub fn from_wire(w: u64) -> ReqId {
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

/// Where a request is in its protocol.
/// Which way a one-sided transfer moves data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// From the peer's exposed region into the request's.
    Read,
    /// From the request's region into the peer's exposed one.
    Write,
}

#[derive(Debug)]
pub(super) enum Stage {
    /// A receive waiting in its context's matcher.
    Posted,
    /// A rendezvous receive reading the sender's buffer in chunks (`sreq`
    /// the sender's request, told `FIN` at the end), or a one-sided read
    /// of a peer's exposed region or write into it (`sreq` `None`).
    Accessing { dir: Direction, outstanding: usize, sreq: Option<u64>, error: Option<Box<Error>> },
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

/// One request.
#[derive(Debug)]
pub(super) struct Req {
    pub stage: Stage,
    pub region: Option<RegionId>,
    /// The peer the request depends on; `None` for an unmatched any-source
    /// receive.
    pub peer: Option<PeerId>,
    pub info: Completed,
    /// The region is the engine's own and outlives the request (a task's
    /// receive buffer, taken back with the outcome).
    pub keep_region: bool,
    /// The context of the transfer: a collective context fails as a whole
    /// when one of its members is lost.
    pub ctx: ContextId,
    /// The task that started this transfer, told when it finishes.
    pub owner: Option<ReqId>,
    /// For a task: how many of its transfers have finished (wrapping).
    pub wakes: u64,
}

impl Req {
    /// A request at `stage` on `ctx`, holding `region`, depending on `peer`.
    pub fn new(
        stage: Stage,
        ctx: ContextId,
        region: Option<RegionId>,
        peer: Option<PeerId>,
    ) -> Req {
        let info = Completed::default();
        Req { stage, region, peer, info, keep_region: false, ctx, owner: None, wakes: 0 }
    }

    /// Whether it has finished.
    pub fn done(&self) -> bool {
        matches!(self.stage, Stage::Done(_))
    }
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    req: Option<Req>,
}

/// The slab of requests. Slots are reused (a free list), so a steady
/// stream of requests allocates nothing once the slab has grown.
#[derive(Debug, Default)]
pub(super) struct Requests {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

impl Requests {
    /// Stores `req`; its handle.
    pub fn alloc(&mut self, req: Req) -> ReqId {
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

    /// The live request `id` names.
    pub fn get(&self, id: ReqId) -> Option<&Req> {
        let slot = self.slots.get(id.index as usize)?;
        (slot.generation == id.generation).then_some(slot.req.as_ref()).flatten()
    }

    /// The live request `id` names, to change.
    pub fn get_mut(&mut self, id: ReqId) -> Option<&mut Req> {
        let slot = self.slots.get_mut(id.index as usize)?;
        (slot.generation == id.generation).then_some(slot.req.as_mut()).flatten()
    }

    /// Marks transfer `id` as started by task `task`, which is told when it
    /// finishes (at once if it has).
    pub fn adopt(&mut self, id: ReqId, task: ReqId) {
        let done = match self.get_mut(id) {
            Some(req) => {
                req.owner = Some(task);
                req.done()
            }
            None => true,
        };
        if let Some(task) = self.get_mut(task).filter(|_| done) {
            task.wakes = task.wakes.wrapping_add(1);
        }
    }

    /// Ends a request with `result` and releases its region (unless the
    /// engine keeps it). A request ends once: later outcomes are ignored.
    pub fn finish(&mut self, regions: &Regions, id: ReqId, result: Result<Completed>) {
        if let Some(req) = self.get_mut(id) {
            if req.done() {
                return;
            }
            req.stage = Stage::Done(result.map_err(Box::new));
            if !req.keep_region {
                if let Some(region) = req.region.take() {
                    regions.release(region);
                }
            }
            let owner = req.owner;
            if let Some(task) = owner.and_then(|t| self.get_mut(t)) {
                task.wakes = task.wakes.wrapping_add(1);
            }
        }
    }

    /// An eager frame of request `id` was handed to the transport: a
    /// synchronous send now waits for its `ACK`, any other is done.
    pub fn sent(&mut self, regions: &Regions, id: ReqId, await_ack: bool) {
        if await_ack {
            if let Some(req) = self.get_mut(id) {
                req.stage = Stage::AwaitReply;
            }
        } else {
            let info = self.get(id).map(|r| r.info).unwrap_or_default();
            self.finish(regions, id, Ok(info));
        }
    }

    /// Takes the outcome of a finished request and frees its slot; `None`
    /// while it is in flight or when the handle is stale.
    pub fn take(&mut self, id: ReqId) -> Option<Result<Completed>> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation || !slot.req.as_ref()?.done() {
            return None;
        }
        let req = slot.req.take().expect("checked above");
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
        match req.stage {
            Stage::Done(result) => Some(result.map_err(|e| *e)),
            _ => unreachable!("checked above"),
        }
    }

    /// Every live request with its handle.
    pub fn iter(&self) -> impl Iterator<Item = (ReqId, &Req)> {
        self.slots.iter().enumerate().filter_map(|(index, slot)| {
            let id = ReqId { index: index as u32, generation: slot.generation };
            slot.req.as_ref().map(|r| (id, r))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv() -> Req {
        Req::new(Stage::Posted, ContextId(0), None, None)
    }

    #[test]
    fn a_stale_handle_finds_nothing_and_slots_are_reused() {
        let regions = Regions::new();
        let mut reqs = Requests::default();
        let a = reqs.alloc(recv());
        assert!(reqs.take(a).is_none(), "in flight: nothing to take");
        reqs.finish(&regions, a, Ok(Completed { src: 1, tag: 2, bytes: 3 }));
        reqs.finish(&regions, a, Err(Error::InvalidCount("late".into())));
        assert_eq!(reqs.take(a).unwrap().unwrap(), Completed { src: 1, tag: 2, bytes: 3 });
        assert!(reqs.get(a).is_none() && reqs.take(a).is_none(), "taken once");
        let b = reqs.alloc(recv());
        assert_eq!(b.index, a.index, "the slot is reused");
        assert!(reqs.get(a).is_none(), "under a new generation");
        assert_eq!(ReqId::from_wire(b.to_wire()), b);
        assert!(reqs.get(ReqId::from_wire(u64::MAX)).is_none());
        assert_eq!(reqs.iter().map(|(id, _)| id).collect::<Vec<_>>(), vec![b]);
    }

    #[test]
    fn a_synchronous_send_waits_for_its_ack_after_leaving() {
        let regions = Regions::new();
        let mut reqs = Requests::default();
        let sync =
            reqs.alloc(Req::new(Stage::Queued { then_await: true }, ContextId(0), None, None));
        let plain =
            reqs.alloc(Req::new(Stage::Queued { then_await: false }, ContextId(0), None, None));
        reqs.sent(&regions, sync, true);
        reqs.sent(&regions, plain, false);
        assert!(matches!(reqs.get(sync).unwrap().stage, Stage::AwaitReply));
        assert!(reqs.get(plain).unwrap().done());
    }

    #[test]
    fn a_task_is_told_when_its_transfers_finish() {
        let regions = Regions::new();
        let mut reqs = Requests::default();
        let new = || Req::new(Stage::Posted, ContextId(1), None, None);
        let task = reqs.alloc(Req::new(Stage::Task, ContextId(1), None, None));
        let (mine, other) = (reqs.alloc(new()), reqs.alloc(new()));
        reqs.adopt(mine, task);
        let wakes = |reqs: &Requests| reqs.get(task).unwrap().wakes;
        reqs.finish(&regions, other, Ok(Completed::default()));
        assert_eq!(wakes(&reqs), 0, "another transfer finished");
        reqs.finish(&regions, mine, Ok(Completed::default()));
        assert_eq!(wakes(&reqs), 1);
        reqs.finish(&regions, mine, Ok(Completed::default()));
        assert_eq!(wakes(&reqs), 1, "a request ends once");
        // Adopted after it finished (at once, inside the call that started
        // it): counted at adoption.
        let quick = reqs.alloc(new());
        reqs.finish(&regions, quick, Ok(Completed::default()));
        reqs.adopt(quick, task);
        assert_eq!(wakes(&reqs), 2);
    }
}
