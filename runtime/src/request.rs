//! Non-blocking operations: scopes and requests.
//!
//! # Why a scope
//!
//! A non-blocking receive lands data in the user's buffer whenever progress
//! runs, and a rendezvous send leaves its buffer for the peer to read until
//! the peer is done. In safe Rust the buffer must therefore stay borrowed for
//! as long as the operation may touch it — and `std::mem::forget` on a
//! request handle must not end that borrow early.
//!
//! hpcomm answers as `std::thread::scope` does. Requests are started inside
//! [`Communicator::scope`]; their buffers are borrowed for the whole scope
//! (`'s`); and the scope does not return before every request it started has
//! completed, whether the handle was waited on, dropped or forgotten. The
//! buffers themselves are registered in the transport's region table, which
//! removes them when the scope ends even by unwinding, so no path leaves the
//! engine holding a dangling buffer.
//!
//! The alternative — buffers moved into the request and handed back on
//! completion — would force users to copy halos and sub-slices into owned
//! vectors first, which is exactly the copy a runtime should save them.
//!
//! ```
//! hpcomm_runtime::threads(2, |comm| {
//!     let peer = 1 - comm.rank();
//!     let mine = [comm.rank() as u64; 4];
//!     let mut theirs = [0u64; 4];
//!     comm.scope(|s| {
//!         let r = s.irecv(&mut theirs, peer, 7)?;
//!         let w = s.isend(&mine, peer, 7)?;
//!         hpcomm_runtime::wait_all(&mut [r, w])?;
//!         Ok(())
//!     })
//!     .unwrap();
//!     assert_eq!(theirs, [peer as u64; 4]);
//! })
//! .unwrap();
//! ```

use std::cell::RefCell;

use bytemuck::Pod;
use hpcomm_transport::RegionScope;

use crate::comm::{Communicator, Sent, Started};
use crate::engine::{Engine, ReqId, To};
use crate::error::Result;
use crate::task::Task;
use crate::types::{Rank, Status, Tag};

/// The handle for starting non-blocking operations; see
/// [`Communicator::scope`]. Buffers passed in stay borrowed until the scope
/// ends.
///
/// The borrow checker enforces it. A buffer that does not outlive the scope
/// cannot be given to a request:
///
/// ```compile_fail,E0597
/// hpcomm_runtime::threads(1, |comm| {
///     comm.scope(|s| {
///         let mut short_lived = [0u8; 4];
///         let _r = s.irecv(&mut short_lived, 0, 0)?;
///         Ok(())
///     })
/// });
/// ```
///
/// and a receive buffer cannot be touched while the scope may still write
/// it, even after its request was forgotten:
///
/// ```compile_fail,E0503
/// hpcomm_runtime::threads(1, |comm| {
///     let mut buf = [0u8; 4];
///     comm.scope(|s| {
///         std::mem::forget(s.irecv(&mut buf, 0, 0)?);
///         let peek = buf[0];
///         Ok(peek)
///     })
/// });
/// ```
pub struct Scope<'s, 'env: 's> {
    comm: &'env Communicator,
    regions: &'s RegionScope<'s, 'env>,
    /// Every request started here, for the final wait.
    started: RefCell<Vec<ReqId>>,
}

impl std::fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope").field("started", &self.started.borrow().len()).finish()
    }
}

/// An operation in flight (`MPI_Request`). Complete it with
/// [`wait`](Request::wait), [`test`](Request::test) or the `wait_*`/`test_*`
/// functions; a request that is dropped is still completed by its scope.
#[derive(Debug)]
#[must_use = "a request does nothing until waited or tested (its scope waits for it at the end)"]
pub struct Request<'a> {
    comm: &'a Communicator,
    state: State,
    elem: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active(ReqId),
    /// Completed at start (the null process): reports this status once.
    Ready(Status),
    /// Completed and reported.
    Inactive,
}

/// Requests kept by a scope before it prunes completed ones.
const PRUNE_AT: usize = 1024;

impl<'s, 'env> Scope<'s, 'env> {
    pub(crate) fn new(
        comm: &'env Communicator,
        regions: &'s RegionScope<'s, 'env>,
    ) -> Result<Self> {
        // The list comes from the engine's spares: a scope per window of
        // messages allocates nothing once the first has grown its list.
        let started = comm.engine().lock()?.id_list();
        Ok(Scope { comm, regions, started: RefCell::new(started) })
    }

    /// The communicator the scope's operations use.
    pub fn comm(&self) -> &'env Communicator {
        self.comm
    }

    /// The scope's region table, for requests started from other modules.
    pub(crate) fn regions(&self) -> &'s RegionScope<'s, 'env> {
        self.regions
    }

    /// A request for operation `id`, on elements of `elem` bytes, which the
    /// scope waits for at its end.
    pub(crate) fn started(&self, id: ReqId, elem: usize) -> Request<'_> {
        self.request(Some(id), elem)
    }

    /// A request that completed as it started, reporting `status` once.
    pub(crate) fn ready(&self, status: Status, elem: usize) -> Request<'_> {
        Request { comm: self.comm, state: State::Ready(status), elem }
    }

    fn track(&self, id: ReqId) {
        let mut started = self.started.borrow_mut();
        if started.len() >= PRUNE_AT && started.len().is_power_of_two() {
            if let Ok(engine) = self.comm.engine().lock() {
                started.retain(|&id| engine.exists(id));
            }
        }
        started.push(id);
    }

    fn request(&self, started: Option<ReqId>, elem: usize) -> Request<'_> {
        let state = match started {
            Some(id) => {
                self.track(id);
                State::Active(id)
            }
            None => State::Ready(Status::EMPTY),
        };
        Request { comm: self.comm, state, elem }
    }

    fn isend_mode<T: Pod>(
        &self,
        buf: &'s [T],
        dest: Rank,
        tag: Tag,
        sync: bool,
    ) -> Result<Request<'_>> {
        self.isend_via(self.comm, buf, dest, tag, sync)
    }

    /// A send from this scope on `comm`: the scope's communicator or its
    /// collective view (the same endpoint and group).
    fn isend_via<T: Pod>(
        &self,
        comm: &Communicator,
        buf: &'s [T],
        dest: Rank,
        tag: Tag,
        sync: bool,
    ) -> Result<Request<'_>> {
        let elem = std::mem::size_of::<T>();
        let Some((to, bytes)) = comm.send_target(buf, dest, tag)? else {
            return Ok(self.request(None, elem));
        };
        Ok(match comm.send_to(self.regions, to, bytes, sync)? {
            Sent::Now => self.sent(to, buf.len(), elem),
            Sent::Pending(id) => self.request(Some(id), elem),
        })
    }

    /// A request for a send that completed as it started: its status.
    pub(crate) fn sent(&self, to: To, count: usize, elem: usize) -> Request<'_> {
        let status = Status { source: Rank(self.comm.rank() as i32), tag: Tag(to.tag), count };
        self.ready(status, elem)
    }

    /// Starts a send (`MPI_Isend`).
    pub fn isend<T: Pod>(
        &self,
        buf: &'s [T],
        dest: impl Into<Rank>,
        tag: impl Into<Tag>,
    ) -> Result<Request<'_>> {
        self.isend_mode(buf, dest.into(), tag.into(), false)
    }

    /// Starts a synchronous send (`MPI_Issend`): it completes once the
    /// receiver has matched it.
    pub fn issend<T: Pod>(
        &self,
        buf: &'s [T],
        dest: impl Into<Rank>,
        tag: impl Into<Tag>,
    ) -> Result<Request<'_>> {
        self.isend_mode(buf, dest.into(), tag.into(), true)
    }

    /// Starts `task`, which the progress engine then advances by itself,
    /// on the collective context of the scope's communicator; `input` and
    /// `output`, if given, are the buffers the task may read and write
    /// (borrowed until the scope ends, so the task never copies them to be
    /// safe). The request completes when the task does. This is how
    /// collective layers build non-blocking collectives.
    pub fn start_task(
        &self,
        input: Option<&'s [u8]>,
        output: Option<&'s mut [u8]>,
        task: Box<dyn Task>,
    ) -> Result<Request<'_>> {
        let input = input.map(|i| self.regions.register(i));
        let output = output.map(|o| self.regions.register_mut(o));
        let id = self.comm.start_task((input, output), task, false)?;
        Ok(self.request(Some(id), 1))
    }

    /// Starts a receive (`MPI_Irecv`).
    pub fn irecv<T: Pod>(
        &self,
        buf: &'s mut [T],
        src: impl Into<Rank>,
        tag: impl Into<Tag>,
    ) -> Result<Request<'_>> {
        self.irecv_via(self.comm, buf, src.into(), tag.into())
    }

    /// A receive in this scope on `comm`: the scope's communicator or its
    /// collective view (the same endpoint and group).
    fn irecv_via<T: Pod>(
        &self,
        comm: &Communicator,
        buf: &'s mut [T],
        src: Rank,
        tag: Tag,
    ) -> Result<Request<'_>> {
        let elem = std::mem::size_of::<T>();
        Ok(match comm.start_recv_in(self.regions, buf, src, tag)? {
            Started::Pending(id) => self.request(Some(id), elem),
            Started::Done(completed) => {
                let status = Communicator::status(completed, elem)?;
                Request { comm: self.comm, state: State::Ready(status), elem }
            }
            Started::Null => self.request(None, elem),
        })
    }

    /// Starts a send on the collective context of the scope's communicator
    /// ([`Communicator::collective_comm`]), with `buf` borrowed by the
    /// scope: for collective and one-sided layers, whose messages must
    /// never match a user's receive. Tags below 16 are the runtime's.
    pub fn isend_collective<T: Pod>(
        &self,
        buf: &'s [T],
        dest: impl Into<Rank>,
        tag: impl Into<Tag>,
    ) -> Result<Request<'_>> {
        self.isend_via(&self.comm.collective_view(), buf, dest.into(), tag.into(), false)
    }

    /// Starts a receive on the collective context of the scope's
    /// communicator, as [`Scope::isend_collective`].
    pub fn irecv_collective<T: Pod>(
        &self,
        buf: &'s mut [T],
        src: impl Into<Rank>,
        tag: impl Into<Tag>,
    ) -> Result<Request<'_>> {
        self.irecv_via(&self.comm.collective_view(), buf, src.into(), tag.into())
    }

    /// Waits for every request started in this scope that is still in
    /// flight; returns the first error among them.
    pub(crate) fn complete_all(&self) -> Result<()> {
        let mut started = std::mem::take(&mut *self.started.borrow_mut());
        if let Ok(mut engine) = self.comm.engine().lock() {
            engine.scope_ends(&started);
        }
        let mut first = Ok(());
        for &id in &started {
            if !self.comm.engine().lock().is_ok_and(|e| e.exists(id)) {
                continue;
            }
            let outcome = self.comm.wait_id(id);
            if let (Err(e), Ok(())) = (outcome, &first) {
                first = Err(e);
            }
        }
        started.clear();
        if let Ok(mut engine) = self.comm.engine().lock() {
            engine.recycle_id_list(started);
        }
        first
    }
}

impl Request<'_> {
    /// Whether the request still has an outcome to report.
    pub fn is_active(&self) -> bool {
        self.state != State::Inactive
    }

    /// Takes the outcome if the request has completed.
    fn poll_done(&mut self, engine: &mut Engine) -> Option<Result<Status>> {
        match self.state {
            State::Inactive => Some(Ok(Status::EMPTY)),
            State::Ready(status) => {
                self.state = State::Inactive;
                Some(Ok(status))
            }
            State::Active(id) => {
                let outcome = engine.take(id)?;
                self.state = State::Inactive;
                Some(outcome.and_then(|c| Communicator::status(c, self.elem)))
            }
        }
    }

    /// Waits for completion (`MPI_Wait`). For a receive, the status says
    /// who sent how much; an inactive request returns the empty status.
    pub fn wait(mut self) -> Result<Status> {
        let mut outcome = None;
        let comm = self.comm;
        comm.block_until(|engine| {
            outcome = self.poll_done(engine);
            outcome.is_some()
        })?;
        outcome.expect("block_until returned after completion")
    }

    /// Completes the request if it can without waiting (`MPI_Test`).
    /// After it returned a status once, the request is inactive.
    pub fn test(&mut self) -> Result<Option<Status>> {
        let mut engine = self.comm.engine().lock()?;
        if let Some(outcome) = self.poll_done(&mut engine) {
            return outcome.map(Some);
        }
        engine.progress()?;
        self.poll_done(&mut engine).transpose()
    }
}

/// Waits for all requests (`MPI_Waitall`); all complete even when one fails,
/// and the first error is returned.
pub fn wait_all(requests: &mut [Request<'_>]) -> Result<Vec<Status>> {
    let mut statuses = Vec::with_capacity(requests.len());
    let mut first_error = None;
    if let Some(first) = requests.first() {
        // Requests mostly complete in order: take them from a cursor that
        // stops at the first one still in flight, so that a round of
        // progress costs O(1) here, not a sweep of every request. One that
        // completes early waits, done, in the engine until the cursor comes.
        let comm = first.comm;
        comm.block_until(|engine| {
            while let Some(request) = requests.get_mut(statuses.len()) {
                match request.poll_done(engine) {
                    Some(Ok(status)) => statuses.push(status),
                    Some(Err(e)) => {
                        statuses.push(Status::EMPTY);
                        first_error.get_or_insert(e);
                    }
                    None => return false,
                }
            }
            true
        })?;
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(statuses),
    }
}

/// Waits until one active request completes and returns its index and
/// status (`MPI_Waitany`); `None` when no request is active.
pub fn wait_any(requests: &mut [Request<'_>]) -> Result<Option<(usize, Status)>> {
    let Some(first) = requests.iter().find(|r| r.is_active()) else {
        return Ok(None);
    };
    let comm = first.comm;
    let mut found = None;
    comm.block_until(|engine| {
        found = take_any(engine, requests);
        found.is_some()
    })?;
    let (index, outcome) = found.expect("completed");
    outcome.map(|status| Some((index, status)))
}

/// Completes one active request if any has finished, without waiting
/// (`MPI_Testany`); `None` when none has (or none is active).
pub fn test_any(requests: &mut [Request<'_>]) -> Result<Option<(usize, Status)>> {
    let Some(first) = requests.iter().find(|r| r.is_active()) else {
        return Ok(None);
    };
    let mut engine = first.comm.engine().lock()?;
    engine.progress()?;
    match take_any(&mut engine, requests) {
        Some((index, outcome)) => outcome.map(|status| Some((index, status))),
        None => Ok(None),
    }
}

fn take_any(engine: &mut Engine, requests: &mut [Request<'_>]) -> Option<(usize, Result<Status>)> {
    requests
        .iter_mut()
        .enumerate()
        .filter(|(_, r)| r.is_active())
        .find_map(|(i, r)| r.poll_done(engine).map(|outcome| (i, outcome)))
}
