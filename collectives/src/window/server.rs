//! A window's target side: a task of the progress engine that serves every
//! origin's requests on the window's memory (the task's output buffer, so
//! the memory stays borrowed until the task ends).
//!
//! Each origin's requests are served one after another in the order it
//! sent them, which is what makes an unlock, a flush or a fence mean "all
//! my earlier operations are done here". An origin that reached a fence is
//! held there until every origin has, so that no access of the next epoch
//! lands before the last of this one. An origin that sends something
//! malformed, or is lost, is no longer served: the window fails, and the
//! next fence, lock, unlock or flush at this rank says so — a hostile peer
//! can fail the window, never corrupt memory outside it or leave a rank
//! waiting.

use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use hpcomm_runtime::task::{Task, TaskCx, Transfer};
use hpcomm_runtime::{Error, RemoteRegion, Result};

use super::accumulate::{Accumulate, OpCode};
use super::locks::Locks;
use super::wire::{encode_status, Kind, Request, Tags, Then, HEADER_LEN, INLINE_MAX};

/// Where one origin's stream of requests stands.
#[derive(Debug)]
enum Step {
    /// Nothing posted: the next request's receive is to be posted.
    Idle,
    /// Waiting for the next request.
    Request(Transfer),
    /// A large put's data landing in the window, `len` bytes.
    PutInPlace { t: Transfer, len: usize },
    /// A large put's (`op` `None`) or accumulate's data landing in a
    /// buffer, to copy or combine into `range`.
    Landing { t: Transfer, range: Range<usize>, op: Option<OpCode> },
    /// A get's data on its way from the window: the origin's next request
    /// waits until it has left, so that an unlock or fence behind the get
    /// never lets another origin's write reach the data first.
    Answering(Transfer),
    /// In the lock's queue.
    LockWait,
    /// At the fence, until every origin is.
    Fenced,
    /// No longer served.
    Failed,
}

/// What a window's origin side shares with its server.
#[derive(Debug, Default)]
pub(crate) struct Link {
    /// Where the window's memory is exposed for one-sided reads and
    /// writes, set in the server's first poll (`None` inside when the
    /// transport has none).
    pub(crate) exposed: OnceLock<Option<RemoteRegion>>,
    /// Set when the window's creation failed on some rank: the server ends
    /// at its next poll, and no origin sends it anything.
    pub(crate) abandoned: AtomicBool,
}

pub(crate) struct Server<T> {
    tags: Tags,
    /// The window's size in bytes.
    size: usize,
    origins: Vec<Step>,
    locks: Locks,
    /// Replies in flight.
    replies: Vec<Transfer>,
    /// Buffers of finished receives and replies, used again.
    spare: Vec<Vec<u8>>,
    /// Whether the fence in progress is the window's last (its free).
    last: Option<bool>,
    /// Why the window failed, once it has.
    failure: Option<String>,
    /// The last fence passed: the task ends once its replies are out.
    ending: bool,
    link: Arc<Link>,
    /// The count of this server's finished transfers at the start of its
    /// last full poll.
    seen: u64,
    /// Whether that poll left every origin waiting for a transfer.
    settled: bool,
    elem: PhantomData<fn() -> T>,
}

impl<T: Accumulate> Server<T> {
    pub(crate) fn new(tags: Tags, size: usize, origins: usize, link: Arc<Link>) -> Server<T> {
        Server {
            tags,
            size,
            origins: (0..origins).map(|_| Step::Idle).collect(),
            locks: Locks::new(origins),
            replies: Vec::new(),
            spare: Vec::new(),
            last: None,
            failure: None,
            ending: false,
            link,
            seen: 0,
            settled: false,
            elem: PhantomData,
        }
    }

    fn buffer(&mut self, len: usize) -> Vec<u8> {
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.resize(len, 0);
        buf
    }

    /// Stops serving `origin`, which sent something malformed or is gone;
    /// the window has failed.
    fn fail(&mut self, cx: &mut TaskCx<'_>, origin: usize, why: String) -> Step {
        // The queue is emptied first, so that giving up the origin's lock
        // grants nobody anything.
        self.set_failure(cx, format!("rank {origin}: {why}"));
        let _ = self.locks.forget(origin);
        Step::Failed
    }

    /// The window has failed (the first reason is kept). It grants no more
    /// locks: whoever waits for one hears of the failure instead, and so
    /// does every later request.
    fn set_failure(&mut self, cx: &mut TaskCx<'_>, why: String) {
        self.failure.get_or_insert(why);
        let waiting = self.locks.refuse_waiting();
        self.grant(cx, &waiting);
    }

    /// Sends `to` the window's status.
    fn reply(&mut self, cx: &mut TaskCx<'_>, to: usize) {
        let mut buf = self.spare.pop().unwrap_or_default();
        encode_status(self.failure.as_deref(), &mut buf);
        // A reply that cannot start goes to an origin that is gone, whose
        // own receive fails: nothing is waiting for it.
        if let Ok(t) = cx.send(to, self.tags.reply, buf) {
            self.replies.push(t);
        }
    }

    /// Tells origins waiting in the lock's queue that they hold it now (or,
    /// once the window failed, that they never will).
    fn grant(&mut self, cx: &mut TaskCx<'_>, granted: &[usize]) {
        for &origin in granted {
            self.reply(cx, origin);
            if let Some(step @ Step::LockWait) = self.origins.get_mut(origin) {
                *step = Step::Idle;
            }
        }
    }

    /// The bytes a put, accumulate or get touches, if they lie in the
    /// window and are whole elements.
    fn range(&self, r: &Request) -> std::result::Result<Range<usize>, String> {
        let elem = std::mem::size_of::<T>() as u64;
        let end = r.offset.checked_add(r.len).filter(|&end| end <= self.size as u64);
        match end {
            Some(end) if r.offset % elem == 0 && r.len % elem == 0 => {
                Ok(r.offset as usize..end as usize)
            }
            _ => Err(format!(
                "access of {} bytes at byte {} of a window of {} bytes of {elem}-byte elements",
                r.len, r.offset, self.size
            )),
        }
    }

    /// Combines `data` into `range` of the window with `op`.
    fn accumulate(cx: &mut TaskCx<'_>, range: Range<usize>, op: OpCode, data: &[u8]) -> Result<()> {
        cx.write_output(|window| {
            let window = &mut window[range];
            // Data behind a header is not always aligned for `T`, nor is a
            // window the runtime allocated (bytes; a user's `&mut [T]` is).
            let origin: std::borrow::Cow<'_, [T]> = match bytemuck::try_cast_slice(data) {
                Ok(origin) => origin.into(),
                Err(_) => bytemuck::pod_collect_to_vec(data).into(),
            };
            match bytemuck::try_cast_slice_mut::<u8, T>(window) {
                Ok(target) => {
                    T::accumulate(op, target, &origin);
                }
                Err(_) => {
                    let mut target: Vec<T> = bytemuck::pod_collect_to_vec(window);
                    T::accumulate(op, &mut target, &origin);
                    window.copy_from_slice(bytemuck::cast_slice(&target));
                }
            }
            Ok(())
        })?
    }

    /// Serves one request of `origin`: the step it leads to.
    fn serve(&mut self, cx: &mut TaskCx<'_>, origin: usize, bytes: &[u8]) -> Step {
        let (request, data) = match Request::decode(bytes) {
            Ok(r) => r,
            Err(e) => return self.fail(cx, origin, e.to_string()),
        };
        let tags = self.tags;
        let range = match request.kind {
            Kind::Put | Kind::Accumulate(_) | Kind::Get => match self.range(&request) {
                Ok(range) => range,
                Err(why) => return self.fail(cx, origin, why),
            },
            _ => 0..0,
        };
        if request.then == Then::Unlock && !self.locks.holds(origin) {
            // Refused before the put or accumulate it follows is applied.
            return self.fail(
                cx,
                origin,
                format!("rank {origin} gave back a lock it did not hold"),
            );
        }
        let step = match request.kind {
            Kind::Put if request.inline => {
                cx.write_output(|window| window[range].copy_from_slice(data)).map(|()| Step::Idle)
            }
            Kind::Put => match cx.recv_in_place(origin, tags.data, range.clone()) {
                Ok(Some(t)) => Ok(Step::PutInPlace { t, len: range.len() }),
                Ok(None) => {
                    let buf = self.buffer(range.len());
                    let landing = |t| Step::Landing { t, range, op: None };
                    cx.recv_into(origin, tags.data, buf).map(landing)
                }
                Err(e) => Err(e),
            },
            Kind::Accumulate(op) if !T::accumulate(op, &mut [], &[]) => {
                return self.fail(cx, origin, format!("{op:?} on an element type without it"));
            }
            Kind::Accumulate(op) if request.inline => {
                Self::accumulate(cx, range, op, data).map(|()| Step::Idle)
            }
            Kind::Accumulate(op) => {
                let buf = self.buffer(range.len());
                let landing = |t| Step::Landing { t, range, op: Some(op) };
                cx.recv_into(origin, tags.data, buf).map(landing)
            }
            // A small answer is a copy, which no later request can change:
            // this origin's next request is served at once, without waiting
            // for the answer to leave (a window of small gets is served in
            // one round of progress, not one round per get).
            Kind::Get if range.len() <= INLINE_MAX => {
                let mut buf = self.spare.pop().unwrap_or_default();
                cx.write_output(|window| {
                    buf.clear();
                    buf.extend_from_slice(&window[range]);
                })
                .and_then(|()| cx.send(origin, tags.reply, buf))
                .map(|t| {
                    self.replies.push(t);
                    Step::Idle
                })
            }
            Kind::Get => match cx.send_in_place(origin, tags.reply, true, range.clone()) {
                Ok(Some(t)) => Ok(t),
                Ok(None) => {
                    let mut buf = self.spare.pop().unwrap_or_default();
                    cx.write_output(|window| {
                        buf.clear();
                        buf.extend_from_slice(&window[range]);
                    })
                    .and_then(|()| cx.send(origin, tags.reply, buf))
                }
                Err(e) => Err(e),
            }
            .map(Step::Answering),
            Kind::Lock(_) if self.failure.is_some() => {
                self.reply(cx, origin);
                Ok(Step::Idle)
            }
            Kind::Lock(kind) => match self.locks.acquire(origin, kind) {
                Ok(true) => {
                    self.reply(cx, origin);
                    Ok(Step::Idle)
                }
                Ok(false) => Ok(Step::LockWait),
                Err(why) => return self.fail(cx, origin, why),
            },
            Kind::Unlock => return self.follow(cx, origin, Then::Unlock),
            Kind::Flush => return self.follow(cx, origin, Then::Flush),
            Kind::Fence { last } => {
                if self.last.is_some_and(|l| l != last) {
                    let why = "ranks disagree whether the window is freed (some freed it, others \
                               fenced)";
                    self.set_failure(cx, why.into());
                }
                self.last = Some(self.last.unwrap_or(false) | last);
                Ok(Step::Fenced)
            }
        };
        match step {
            Ok(Step::Idle) => self.follow(cx, origin, request.then),
            Ok(step) => step,
            Err(e) => self.fail(cx, origin, e.to_string()),
        }
    }

    /// Does what a flush or unlock asks (`then`), on its own or after an
    /// inline put or accumulate that carried it: the next step.
    fn follow(&mut self, cx: &mut TaskCx<'_>, origin: usize, then: Then) -> Step {
        match then {
            Then::Nothing => Step::Idle,
            Then::Flush => {
                self.reply(cx, origin);
                Step::Idle
            }
            Then::Unlock => match self.locks.release(origin) {
                Ok(granted) => {
                    self.reply(cx, origin);
                    self.grant(cx, &granted);
                    Step::Idle
                }
                Err(why) => self.fail(cx, origin, why),
            },
        }
    }

    /// Advances `origin`'s requests as far as they go without waiting.
    fn advance(&mut self, cx: &mut TaskCx<'_>, origin: usize) {
        loop {
            let step = std::mem::replace(&mut self.origins[origin], Step::Idle);
            let (next, moved) = self.step(cx, origin, step);
            self.origins[origin] = next;
            if !moved {
                return;
            }
        }
    }

    /// One step of `origin`'s requests: the next, and whether it moved.
    fn step(&mut self, cx: &mut TaskCx<'_>, origin: usize, step: Step) -> (Step, bool) {
        let next = match step {
            Step::Idle => {
                let buf = self.buffer(HEADER_LEN + INLINE_MAX);
                match cx.recv_into(origin, self.tags.request, buf) {
                    Ok(t) => Step::Request(t),
                    Err(e) => self.fail(cx, origin, e.to_string()),
                }
            }
            Step::Request(t) => match cx.test(t) {
                None => return (Step::Request(t), false),
                Some(Ok(bytes)) => {
                    let next = self.serve(cx, origin, &bytes);
                    self.spare.push(bytes);
                    next
                }
                Some(Err(e)) => self.fail(cx, origin, e.to_string()),
            },
            Step::PutInPlace { t, len } => match cx.received(t) {
                None => return (Step::PutInPlace { t, len }, false),
                Some(Ok(n)) if n == len => Step::Idle,
                Some(Ok(n)) => self.fail(cx, origin, format!("put of {len} bytes sent {n}")),
                Some(Err(e)) => self.fail(cx, origin, e.to_string()),
            },
            Step::Landing { t, range, op } => match cx.test(t) {
                None => return (Step::Landing { t, range, op }, false),
                Some(Ok(data)) if data.len() == range.len() => {
                    let landed = match op {
                        None => cx.write_output(|window| window[range].copy_from_slice(&data)),
                        Some(op) => Self::accumulate(cx, range, op, &data),
                    };
                    self.spare.push(data);
                    match landed {
                        Ok(()) => Step::Idle,
                        Err(e) => self.fail(cx, origin, e.to_string()),
                    }
                }
                Some(Ok(_)) => {
                    self.fail(cx, origin, "data of another length than announced".into())
                }
                Some(Err(e)) => self.fail(cx, origin, e.to_string()),
            },
            Step::Answering(t) => match cx.test(t) {
                None => return (Step::Answering(t), false),
                Some(sent) => {
                    if let Ok(buf) = sent {
                        if buf.capacity() > 0 {
                            self.spare.push(buf);
                        }
                    }
                    // A send that failed went to an origin that is gone: its
                    // next receive fails, and so is it failed here.
                    Step::Idle
                }
            },
            waiting @ (Step::LockWait | Step::Fenced | Step::Failed) => return (waiting, false),
        };
        (next, true)
    }

    /// Passes the fence once every origin has reached it (or failed): this
    /// rank's own origin hears of it.
    fn pass_fence(&mut self, cx: &mut TaskCx<'_>) {
        let arrived = |s: &Step| matches!(s, Step::Fenced | Step::Failed);
        if self.last.is_none() || !self.origins.iter().all(arrived) {
            return;
        }
        self.reply(cx, cx.rank());
        if self.last.take() == Some(true) {
            self.ending = true;
            return;
        }
        for step in &mut self.origins {
            if matches!(step, Step::Fenced) {
                *step = Step::Idle;
            }
        }
    }

    /// Takes back the replies that went out.
    fn reap(&mut self, cx: &mut TaskCx<'_>) {
        let mut i = 0;
        while i < self.replies.len() {
            match cx.test(self.replies[i]) {
                None => i += 1,
                Some(sent) => {
                    self.replies.swap_remove(i);
                    if let Ok(buf) = sent {
                        if buf.capacity() > 0 {
                            self.spare.push(buf);
                        }
                    }
                }
            }
        }
    }
}

impl<T: Accumulate> Task for Server<T> {
    fn poll(&mut self, cx: &mut TaskCx<'_>) -> Result<bool> {
        if self.link.abandoned.load(Ordering::Relaxed) {
            return Err(Error::WindowSync("the window's creation failed".into()));
        }
        if self.link.exposed.get().is_none() {
            let _ = self.link.exposed.set(cx.expose_output());
        }
        // Every step of a settled server waits for one of its transfers:
        // while none has finished since its last full poll, there is
        // nothing to do (an endpoint with many windows serves each only
        // when its own traffic moved).
        let finished = cx.finished();
        if self.settled && finished == self.seen {
            return Ok(false);
        }
        self.seen = finished;
        if !self.ending {
            for origin in 0..self.origins.len() {
                self.advance(cx, origin);
            }
            self.pass_fence(cx);
        }
        self.reap(cx);
        // An origin left idle (granted a lock, or past a fence, after its
        // turn in this pass) still has to post its next receive.
        self.settled = !self.ending && !self.origins.iter().any(|s| matches!(s, Step::Idle));
        Ok(self.ending && self.replies.is_empty())
    }

    fn scope_ends(&mut self) -> Option<Error> {
        (!self.ending).then(|| {
            Error::WindowSync(
                "a window's scope ended before the window was freed (its handle was leaked, or \
                 dropped while unwinding)"
                    .into(),
            )
        })
    }
}
