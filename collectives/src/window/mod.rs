//! One-sided communication (MPI's RMA): a [`Window`] exposes a buffer of
//! every rank to the others, which [`put`](Window::put) into it,
//! [`get`](Window::get) from it and [`accumulate`](Window::accumulate)
//! into it without the owner taking part.
//!
//! Accesses happen in *epochs*, as in MPI: between two
//! [`fence`](Window::fence)s (every rank, active target), or while the
//! origin holds the target's lock ([`lock`](Window::lock) …
//! [`unlock`](Window::unlock), passive target; [`flush`](Window::flush)
//! completes what was issued so far). An access outside an epoch, or
//! outside the target's window, is an error before anything is sent.
//!
//! ```
//! use hpcomm_collectives::op::Sum;
//! use hpcomm_collectives::window::{LockKind, Window};
//!
//! hpcomm_runtime::threads(3, |comm| {
//!     let mut counter = [0u64];
//!     let mut slots = [0u64; 3];
//!     comm.scope(|s| {
//!         let count = Window::create(s, &mut counter)?;
//!         let table = Window::create(s, &mut slots)?;
//!         // Active target: every rank writes its slot of rank 0's table.
//!         table.fence()?;
//!         table.put(&[10 * comm.rank() as u64], 0, comm.rank())?;
//!         table.fence()?;
//!         // Passive target: each rank adds to rank 0's counter alone.
//!         count.lock(LockKind::Exclusive, 0)?;
//!         count.accumulate(&[1], 0, 0, Sum)?;
//!         count.unlock(0)?;
//!         table.free()?;
//!         count.free()
//!     })
//!     .unwrap();
//!     if comm.rank() == 0 {
//!         assert_eq!(slots, [0, 10, 20]);
//!         assert_eq!(counter, [3]);
//!     }
//! })
//! .unwrap();
//! ```
//!
//! [`rget`](Window::rget) and [`rput`](Window::rput) (`MPI_Rget`,
//! `MPI_Rput`) start an access and return a request, with the buffer
//! borrowed by a scope of the window's communicator, so that many are in
//! flight at once (a scope per batch lets a loop reuse its buffers).
//!
//! # How it works, and what it promises
//!
//! A window's memory is borrowed by the scope it was created in, like a
//! request's buffer: the scope does not end before the window is freed, so
//! a window can never outlive its memory, even if its handle is leaked
//! (the scope then ends the window with an error instead of waiting). The
//! owner reaches its own window through the same calls with its own rank as
//! the target.
//!
//! Each rank serves its window with a task of the progress engine (see
//! `server.rs`), which runs whenever the rank is in any communication call:
//! like MPI without a progress thread, a rank that computes for a long time
//! without communicating delays the puts, accumulates and lock requests to
//! its window. Those are *active messages* over the communicator's
//! transport: a small put or accumulate is one message (held until the
//! origin's next window call, so that a flush or unlock right after it
//! travels in the same message), and large data moves by the transport's
//! rendezvous (a single copy over shm). A large get is one-sided where the
//! transport reads peers' memory — shm with single-copy reads
//! (`process_vm_readv`), libfabric with RDMA reads: the origin reads the
//! target's window itself, the target's runtime takes no part
//! ([`Window::reads_directly`]); elsewhere (tcp, threads) the target's
//! server sends the data from where it lies. Likewise a large put is
//! one-sided where the transport writes into peers' memory — shm with
//! single-copy writes (`process_vm_writev`), libfabric with RDMA writes
//! ([`Window::writes_directly`]); accumulates are always served, to be
//! atomic. Calls return when the origin's buffer may be used again: a put
//! or accumulate once its data is sent or copied (a direct put once it
//! has landed), a get once its data has arrived. An unlock, a flush or a
//! fence returns once every operation this rank issued before it is
//! complete at its target; a fence also waits until every operation that
//! targets this rank in the epoch has landed, holds the next epoch's
//! accesses to this rank until then, and — where windows are accessed
//! directly — ends with a barrier, so that no access of the next epoch
//! reaches a window before the last epoch's accesses to it landed.
//!
//! Accumulates with the same operation on the same elements are atomic with
//! respect to each other, as in MPI; a put and a get or another put to the
//! same elements in one epoch are a race whose result is undefined (MPI
//! calls it erroneous), but never unsafe.
//!
//! A window is used by the thread that created it (`Send`, not `Sync`).

mod accumulate;
mod locks;
mod server;
mod wire;

#[cfg(test)]
mod tests;

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hpcomm_runtime::task::OwnedTask;
use hpcomm_runtime::{Communicator, Error, Rank, RemoteRegion, Request, Result, Scope};

pub use accumulate::{Accumulate, OpCode, Replace, WindowOp};
pub use wire::LockKind;

use crate::nonblocking::tag_for;
use crate::op::Operation;
use crate::Collectives;
use server::{Link, Server};
use wire::{decode_status, set_then, Kind, Request as Wire, Tags, Then};
use wire::{HEADER_LEN, INLINE_MAX, STATUS_MAX};

/// Words each rank contributes at creation: its window's bytes, its element
/// size, whether it exposed the window for reads, and where (two words).
const WORDS: usize = 5;

/// A window of one-sided communication (`MPI_Win`) over a buffer of every
/// rank of a communicator; see the [module documentation](self).
pub struct Window<'r, T: Accumulate> {
    /// The window's communicator, on its collective context.
    comm: Communicator,
    tags: Tags,
    /// Each rank's window, in bytes.
    sizes: Vec<usize>,
    /// The windows this rank reads directly (one-sided reads), by rank.
    direct: Vec<Option<RemoteRegion>>,
    /// Of those, the ones it also writes directly (one-sided writes).
    writes: Vec<bool>,
    /// The smallest get read (or put written) directly: below it a request
    /// to the target's server costs less than a read (a system call over
    /// shm), so small accesses are served (see docs/performance.md).
    direct_min: usize,
    /// Whether any rank exposed its window for direct reads and writes:
    /// fences then end with a barrier, so that no direct access of the
    /// next epoch reaches a window before its last epoch's accesses landed.
    reads_anywhere: bool,
    /// The most data a request carries in its own message.
    inline_max: usize,
    /// This rank's server; `None` once freed.
    server: Option<Serving<'r>>,
    epoch: RefCell<Epoch>,
    /// A request's message, built here to allocate nothing per call.
    scratch: RefCell<Vec<u8>>,
    /// The target of the inline put or accumulate held unsent in
    /// `scratch`: a flush or unlock of that target right after it travels
    /// in the same message; anything else sends it first.
    held: Cell<Option<usize>>,
    elem: PhantomData<T>,
}

/// The task serving this rank's window, and whose memory it serves.
#[derive(Debug)]
enum Serving<'r> {
    /// Over a buffer the window's scope borrowed ([`Window::create`]).
    Borrowed(Request<'r>),
    /// Over memory the runtime allocated ([`Window::allocate`]).
    Owned(OwnedTask),
}

impl Serving<'_> {
    /// Waits until the server ends; the memory, if the runtime's.
    fn wait(self) -> Result<Option<Vec<u8>>> {
        match self {
            Serving::Borrowed(request) => request.wait().map(|_| None),
            Serving::Owned(task) => task.wait().map(Some),
        }
    }
}

/// What the origin may access now.
#[derive(Debug)]
struct Epoch {
    /// Between fences: every target.
    fence: bool,
    /// Whether anything was issued since the last fence.
    issued: bool,
    /// The locks this rank holds, by target.
    locks: Vec<Option<LockKind>>,
    /// The targets with puts or accumulates not yet known complete (gets
    /// are complete when they return, and so are puts written directly).
    unfinished: Vec<bool>,
    /// Whether a put written directly by a request (`rput`) may still be
    /// in flight: a flush, unlock or fence first waits until it has landed.
    writing: bool,
    /// Why the window failed, once it has: later accesses fail at once.
    failed: Option<Error>,
}

impl<T: Accumulate> std::fmt::Debug for Window<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window")
            .field("rank", &self.comm.rank())
            .field("sizes", &self.sizes)
            .field("epoch", &self.epoch.borrow())
            .finish()
    }
}

fn sync_error(why: impl Into<String>) -> Error {
    Error::WindowSync(why.into())
}

impl<'r, T: Accumulate> Window<'r, T> {
    /// Creates a window over `buf` on every rank of the scope's
    /// communicator (`MPI_Win_create`); collective. Ranks may expose
    /// windows of different lengths (empty ones too), of the same element
    /// type. `buf` stays borrowed until the scope ends; its contents are
    /// what the window starts with.
    pub fn create<'s>(scope: &'r Scope<'s, '_>, buf: &'s mut [T]) -> Result<Window<'r, T>> {
        let comm = scope.comm();
        let size = std::mem::size_of_val(buf);
        let bytes: &'s mut [u8] = bytemuck::cast_slice_mut(buf);
        Window::open(comm, size, |server| {
            scope.start_task(None, Some(bytes), Box::new(server)).map(Serving::Borrowed)
        })
    }

    /// Creates a window over `len` elements of zeroed memory the runtime
    /// allocates on every rank of `comm` (`MPI_Win_allocate`); collective.
    /// Not tied to a scope, the window can live in a program's state for
    /// as long as it is needed; its memory is reached through the window's
    /// calls (the owner targets its own rank), and
    /// [`into_vec`](Window::into_vec) frees the window and gives the
    /// memory back. Requests (`rget`, `rput`) still borrow their buffers
    /// through a scope of `comm`. A rank whose memory cannot be allocated
    /// fails the creation on every rank.
    ///
    /// ```
    /// use hpcomm_collectives::op::Sum;
    /// use hpcomm_collectives::window::Window;
    ///
    /// /// A solver's state keeps its window from step to step.
    /// struct Solver {
    ///     hits: Window<'static, u64>,
    /// }
    ///
    /// hpcomm_runtime::threads(3, |comm| {
    ///     let solver = Solver { hits: Window::allocate(comm, 1).unwrap() };
    ///     for _step in 0..2 {
    ///         solver.hits.fence().unwrap();
    ///         solver.hits.accumulate(&[1], 0, 0, Sum).unwrap();
    ///     }
    ///     solver.hits.fence().unwrap();
    ///     let hits = solver.hits.into_vec().unwrap();
    ///     assert_eq!(hits, [if comm.rank() == 0 { 6 } else { 0 }]);
    /// })
    /// .unwrap();
    /// ```
    pub fn allocate(comm: &Communicator, len: usize) -> Result<Window<'static, T>> {
        let elem = std::mem::size_of::<T>();
        let memory = len.checked_mul(elem).and_then(|size| {
            let mut memory = Vec::new();
            memory.try_reserve_exact(size).ok()?;
            memory.resize(size, 0u8);
            Some(memory)
        });
        let size = memory.as_ref().map_or(0, Vec::len);
        Window::open(comm, size, |server| match memory {
            Some(memory) => comm.start_owned_task(memory, Box::new(server)).map(Serving::Owned),
            None => Err(Error::InvalidCount(format!(
                "a window of {len} elements of {elem} bytes cannot be allocated"
            ))),
        })
    }

    /// What creating a window of `size` bytes on this rank takes, whoever
    /// owns the memory: `start` starts its server. Collective: every rank
    /// agrees on failure (its own, or another rank's).
    fn open(
        comm: &Communicator,
        size: usize,
        start: impl FnOnce(Server<T>) -> Result<Serving<'r>>,
    ) -> Result<Window<'r, T>> {
        let elem = std::mem::size_of::<T>();
        if elem == 0 {
            // Every rank refuses alike, before anything collective.
            return Err(Error::InvalidCount("a window of zero-sized elements".into()));
        }
        let tags = Tags::from_base(tag_for(comm)?);
        // The server starts first: its first poll (at once) exposes the
        // memory for one-sided access where the transport has it.
        let link = Arc::new(Link::default());
        let server = start(Server::<T>::new(tags, size, comm.size(), link.clone()));
        let region = link.exposed.get().copied().flatten();
        let [addr, key] = region.map_or([0; 2], RemoteRegion::to_words);
        // A rank that could not start its part says so with an element
        // size of 0, so that every rank fails alike.
        let said = if server.is_ok() { elem as u64 } else { 0 };
        let mine = [size as u64, said, u64::from(region.is_some()), addr, key];
        let mut all = vec![0u64; WORDS * comm.size()];
        let agreed = comm.all_gather(&mine, &mut all).and_then(|()| {
            if let Some(rank) = all.chunks(WORDS).position(|r| r[1] == 0) {
                return Err(Error::CollectiveMismatch(format!(
                    "rank {rank} could not create its part of the window"
                )));
            }
            match all.chunks(WORDS).all(|r| r[1] == elem as u64) {
                true => Ok(()),
                false => Err(Error::CollectiveMismatch(
                    "window element sizes differ between ranks".into(),
                )),
            }
        });
        let server = match (server, agreed) {
            (Ok(server), Ok(())) => server,
            // This rank's own failure says more than the others' word of it.
            (Err(own), _) => return Err(own),
            (Ok(server), Err(e)) => {
                // Nothing was sent to any server: each ends by itself.
                link.abandoned.store(true, Ordering::Relaxed);
                let _ = server.wait();
                return Err(e);
            }
        };
        let sizes = all.chunks(WORDS).map(|r| r[0] as usize).collect();
        let exposed: Vec<_> = all
            .chunks(WORDS)
            .map(|r| (r[2] == 1).then(|| RemoteRegion::from_words([r[3], r[4]])))
            .collect();
        // Every rank sees the same list, so all agree on whether fences
        // need their barrier.
        let reads_anywhere = exposed.iter().any(Option::is_some);
        let direct: Vec<_> = exposed
            .into_iter()
            .enumerate()
            .map(|(rank, region)| region.filter(|_| comm.can_read(rank)))
            .collect();
        let writes = direct
            .iter()
            .enumerate()
            .map(|(rank, r)| r.is_some() && comm.can_write(rank))
            .collect();
        Ok(Window {
            comm: comm.collective_comm(),
            tags,
            sizes,
            direct,
            writes,
            direct_min: comm.eager_limit(),
            reads_anywhere,
            inline_max: INLINE_MAX.min(comm.eager_limit().saturating_sub(HEADER_LEN)),
            server: Some(server),
            epoch: RefCell::new(Epoch {
                fence: false,
                issued: false,
                locks: vec![None; comm.size()],
                unfinished: vec![false; comm.size()],
                writing: false,
                failed: None,
            }),
            scratch: RefCell::new(Vec::with_capacity(HEADER_LEN + INLINE_MAX)),
            held: Cell::new(None),
            elem: PhantomData,
        })
    }

    /// The size in elements of `rank`'s window.
    pub fn len_of(&self, rank: usize) -> Option<usize> {
        self.sizes.get(rank).map(|bytes| bytes / std::mem::size_of::<T>().max(1))
    }

    /// Whether this rank's gets from `target` are one-sided reads, which
    /// `target`'s runtime takes no part in (where the transport between
    /// them reads peers' memory from outside the process: shm with
    /// single-copy reads, libfabric's shm provider, EFA's device reads) —
    /// those of at least the eager limit; smaller ones, and every get
    /// elsewhere, are requests the target's server answers.
    pub fn reads_directly(&self, target: usize) -> bool {
        self.direct.get(target).is_some_and(Option::is_some)
    }

    /// Whether this rank's puts to `target` are one-sided writes, which
    /// `target`'s runtime takes no part in (where the transport between
    /// them writes into peers' memory from outside the process: shm with
    /// single-copy writes) — those of at least the eager limit; smaller
    /// ones, every accumulate, and every put elsewhere are requests the
    /// target's server carries out.
    pub fn writes_directly(&self, target: usize) -> bool {
        self.writes.get(target).copied().unwrap_or(false)
    }

    /// Where a put of `len` bytes to `target` is written directly.
    fn direct_write(&self, target: usize, len: usize) -> Option<RemoteRegion> {
        match self.writes[target] && len >= self.direct_min {
            true => self.direct[target],
            false => None,
        }
    }

    /// Waits until every put written directly by a request has landed.
    fn quiet(&self) -> Result<()> {
        if std::mem::take(&mut self.epoch.borrow_mut().writing) {
            self.comm.quiet_writes()?;
        }
        Ok(())
    }

    fn check_open(&self) -> Result<()> {
        match (&self.server, &self.epoch.borrow().failed) {
            (None, _) => Err(sync_error("the window was freed")),
            (_, Some(e)) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    fn check_target(&self, target: usize) -> Result<()> {
        match target < self.sizes.len() {
            true => Ok(()),
            false => Err(Error::InvalidRank {
                rank: i32::try_from(target).unwrap_or(i32::MAX),
                size: self.sizes.len(),
            }),
        }
    }

    /// Checks an access of `count` elements at element `offset` of
    /// `target`'s window: its byte range.
    fn check_access(&self, target: usize, offset: usize, count: usize) -> Result<(u64, usize)> {
        self.check_open()?;
        self.check_target(target)?;
        let epoch = self.epoch.borrow();
        if !epoch.fence && epoch.locks[target].is_none() {
            return Err(sync_error(format!(
                "access to rank {target} outside an access epoch (call fence, or lock it first)"
            )));
        }
        let elem = std::mem::size_of::<T>();
        let size = self.sizes[target];
        let range = offset.checked_mul(elem).zip(count.checked_mul(elem));
        match range {
            Some((at, len)) if at.checked_add(len).is_some_and(|end| end <= size) => {
                Ok((at as u64, len))
            }
            _ => Err(Error::WindowRange {
                target,
                offset: offset.saturating_mul(elem),
                count: count.saturating_mul(elem),
                size,
            }),
        }
    }

    /// Sends the request held unsent, if there is one (see `held`).
    fn release(&self) -> Result<()> {
        match self.held.take() {
            Some(target) => self.comm.send(&self.scratch.borrow()[..], target, self.tags.request),
            None => Ok(()),
        }
    }

    /// Sends the request held for `target` with `then` to follow it there
    /// (a flush or unlock, answered by one status); `false` if none is
    /// held for `target`, which the caller then asks for alone.
    fn release_with(&self, target: usize, then: Then) -> Result<bool> {
        if self.held.get() != Some(target) {
            return Ok(false);
        }
        self.held.set(None);
        let mut msg = self.scratch.borrow_mut();
        set_then(&mut msg, then);
        self.comm.send(&msg[..], target, self.tags.request)?;
        Ok(true)
    }

    /// Sends a request to `target` about `len` bytes at byte `offset`, with
    /// the data of a put or accumulate in the same message when it is
    /// small, else after it; a small put or accumulate is held unsent
    /// until the next call (see `held`), after any request held before.
    fn send(
        &self,
        target: usize,
        kind: Kind,
        (offset, len): (u64, usize),
        data: &[u8],
    ) -> Result<()> {
        if len == 0 && matches!(kind, Kind::Put | Kind::Accumulate(_) | Kind::Get) {
            return Ok(()); // nothing to move, as with a count of 0 in MPI
        }
        self.release()?;
        let inline = !data.is_empty() && data.len() <= self.inline_max;
        let mut msg = self.scratch.borrow_mut();
        Wire { kind, inline, then: Then::Nothing, offset, len: len as u64 }.encode(&mut msg);
        if inline {
            msg.extend_from_slice(data);
            if matches!(kind, Kind::Put | Kind::Accumulate(_)) {
                self.held.set(Some(target));
                return Ok(());
            }
        }
        self.comm.send(&msg[..], target, self.tags.request)?;
        if !inline && !data.is_empty() {
            self.comm.send(data, target, self.tags.data)?;
        }
        Ok(())
    }

    /// Waits for `target`'s status reply.
    fn wait_status(&self, target: usize) -> Result<()> {
        let mut buf = [0u8; STATUS_MAX];
        let status = self.comm.recv(&mut buf, target, self.tags.reply)?;
        decode_status(&buf[..status.count]).inspect_err(|e| {
            self.epoch.borrow_mut().failed.get_or_insert_with(|| e.clone());
        })
    }

    /// Notes a put or accumulate to `target`, which a flush, unlock or
    /// fence completes.
    fn issued(&self, target: usize) {
        let mut epoch = self.epoch.borrow_mut();
        epoch.issued = true;
        epoch.unfinished[target] = true;
    }

    /// Writes `data` into `target`'s window from element `offset` on
    /// (`MPI_Put`). Returns once `data` may be reused; the put is complete
    /// at the target at the next fence, flush or unlock.
    pub fn put(&self, data: &[T], target: usize, offset: usize) -> Result<()> {
        let range = self.check_access(target, offset, data.len())?;
        if let Some(region) = self.direct_write(target, range.1) {
            // One-sided, and complete at the target when it returns.
            self.release()?;
            self.epoch.borrow_mut().issued = true;
            return self.comm.write_remote(target, region, range.0 as usize, data);
        }
        self.send(target, Kind::Put, range, bytemuck::cast_slice(data))?;
        self.issued(target);
        Ok(())
    }

    /// Combines `data` into `target`'s window from element `offset` on with
    /// `op`, as `target = target ∘ data` element by element
    /// (`MPI_Accumulate`); [`Replace`] makes it an atomic put. Accumulates
    /// to the same elements are atomic with respect to each other.
    pub fn accumulate<O: Operation<T> + WindowOp>(
        &self,
        data: &[T],
        target: usize,
        offset: usize,
        op: O,
    ) -> Result<()> {
        let _ = op;
        let range = self.check_access(target, offset, data.len())?;
        if !T::accumulate(O::CODE, &mut [], &[]) {
            return Err(Error::InvalidCount(format!(
                "{:?} is not defined on the window's element type",
                O::CODE
            )));
        }
        self.send(target, Kind::Accumulate(O::CODE), range, bytemuck::cast_slice(data))?;
        self.issued(target);
        Ok(())
    }

    /// Reads `target`'s window from element `offset` on into `dest`
    /// (`MPI_Get`); returns once `dest` holds the data. One-sided where
    /// the transport reads peers' memory ([`Window::reads_directly`]).
    pub fn get(&self, dest: &mut [T], target: usize, offset: usize) -> Result<()> {
        let range = self.check_access(target, offset, dest.len())?;
        self.release()?;
        self.epoch.borrow_mut().issued = true;
        match self.direct[target] {
            // One-sided: the target's runtime takes no part.
            Some(region) if range.1 >= self.direct_min => {
                return self.comm.read_remote(target, region, range.0 as usize, dest);
            }
            _ => {}
        }
        self.send(target, Kind::Get, range, &[])?;
        if dest.is_empty() {
            return Ok(());
        }
        let status = self.comm.recv(dest, target, self.tags.reply)?;
        match status.count == dest.len() {
            true => Ok(()),
            false => Err(Error::Protocol(format!(
                "rank {target} answered a get of {} elements with {}",
                dest.len(),
                status.count
            ))),
        }
    }

    /// Checks that `scope` is one of the window's communicator (whose
    /// engine the request's messages go through).
    fn check_scope(&self, scope: &Scope<'_, '_>) -> Result<()> {
        match scope.comm().collective_comm().same_as(&self.comm) {
            true => Ok(()),
            false => Err(Error::InvalidRequest(
                "a window's request started in a scope of another communicator".into(),
            )),
        }
    }

    /// Starts a get (`MPI_Rget`): as [`get`](Window::get), but returns at
    /// once with a request that completes when `dest` — borrowed by the
    /// scope, one of the window's communicator — holds the data, so that
    /// many gets are in flight at once. A flush, unlock or fence does not
    /// complete it; its request (or the scope's end) does.
    pub fn rget<'a, 's>(
        &self,
        scope: &'a Scope<'s, '_>,
        dest: &'s mut [T],
        target: usize,
        offset: usize,
    ) -> Result<Request<'a>> {
        self.check_scope(scope)?;
        let range = self.check_access(target, offset, dest.len())?;
        self.release()?;
        self.epoch.borrow_mut().issued = true;
        match self.direct[target] {
            Some(region) if range.1 >= self.direct_min => {
                scope.iread_remote(target, region, range.0 as usize, dest)
            }
            // Nothing to move: a request that completes at once.
            _ if range.1 == 0 => scope.irecv_collective(dest, Rank::NULL, self.tags.reply),
            _ => {
                // The answer's receive first: answers come in the order
                // asked, and match receives in the order posted.
                let answer = scope.irecv_collective(dest, target, self.tags.reply)?;
                self.send(target, Kind::Get, range, &[])?;
                Ok(answer)
            }
        }
    }

    /// Starts a put (`MPI_Rput`): as [`put`](Window::put), but the data
    /// goes from `data` — borrowed by the scope, one of the window's
    /// communicator — in a message of its own, so that large puts overlap;
    /// the request completes when `data` may be reused. A flush, unlock or
    /// fence completes the put at its target.
    pub fn rput<'a, 's>(
        &self,
        scope: &'a Scope<'s, '_>,
        data: &'s [T],
        target: usize,
        offset: usize,
    ) -> Result<Request<'a>> {
        self.check_scope(scope)?;
        let range = self.check_access(target, offset, data.len())?;
        self.release()?;
        if range.1 == 0 {
            // Nothing to move: a request that completes at once.
            return scope.isend_collective(data, Rank::NULL, self.tags.data);
        }
        if let Some(region) = self.direct_write(target, range.1) {
            let mut epoch = self.epoch.borrow_mut();
            epoch.issued = true;
            epoch.writing = true;
            drop(epoch);
            return scope.iwrite_remote(target, region, range.0 as usize, data);
        }
        let mut msg = self.scratch.borrow_mut();
        Wire {
            kind: Kind::Put,
            inline: false,
            then: Then::Nothing,
            offset: range.0,
            len: range.1 as u64,
        }
        .encode(&mut msg);
        self.comm.send(&msg[..], target, self.tags.request)?;
        drop(msg);
        self.issued(target);
        scope.isend_collective(data, target, self.tags.data)
    }

    /// Ends an epoch on every rank and starts the next (`MPI_Win_fence`);
    /// collective. Returns once every operation this rank issued is
    /// complete at its target and every operation of the epoch that
    /// targets this rank has landed. Not while locks are held.
    pub fn fence(&self) -> Result<()> {
        if self.server.is_none() {
            return Err(sync_error("the window was freed"));
        }
        if self.epoch.borrow().locks.iter().any(Option::is_some) {
            return Err(sync_error("fence while holding a lock (unlock first)"));
        }
        // A failed window still fences, so that every rank stays in step
        // (the others wait for this rank's fence); the failure is reported
        // after.
        let quiet = self.quiet();
        self.fence_all(false)?;
        quiet?;
        let mut epoch = self.epoch.borrow_mut();
        epoch.fence = true;
        epoch.issued = false;
        epoch.unfinished.fill(false);
        epoch.failed.clone().map_or(Ok(()), Err)
    }

    fn fence_all(&self, last: bool) -> Result<()> {
        let mut first = Ok(());
        for target in 0..self.sizes.len() {
            if let (Err(e), Ok(())) = (self.send(target, Kind::Fence { last }, (0, 0), &[]), &first)
            {
                first = Err(e);
            }
        }
        first?;
        let status = self.wait_status(self.comm.rank());
        if self.reads_anywhere {
            self.comm.barrier()?;
        }
        status
    }

    /// Starts a passive-target epoch on `target` (`MPI_Win_lock`): returns
    /// once this rank holds `target`'s lock, shared with other shared
    /// holders or alone. Not while a fence epoch has unfinished accesses.
    pub fn lock(&self, kind: LockKind, target: usize) -> Result<()> {
        self.check_open()?;
        self.check_target(target)?;
        {
            let epoch = self.epoch.borrow();
            if epoch.locks[target].is_some() {
                return Err(sync_error(format!("rank {target} is locked already")));
            }
            if epoch.fence && epoch.issued {
                return Err(sync_error("lock inside a fence epoch with accesses (fence first)"));
            }
        }
        self.send(target, Kind::Lock(kind), (0, 0), &[])?;
        self.wait_status(target)?;
        let mut epoch = self.epoch.borrow_mut();
        epoch.fence = false;
        epoch.locks[target] = Some(kind);
        Ok(())
    }

    /// Ends the passive-target epoch on `target` (`MPI_Win_unlock`):
    /// returns once every operation issued to it is complete there.
    pub fn unlock(&self, target: usize) -> Result<()> {
        self.check_open()?;
        self.check_target(target)?;
        if self.epoch.borrow().locks[target].is_none() {
            return Err(sync_error(format!("unlock of rank {target}, which is not locked")));
        }
        // The lock is given back even if a write failed, which the next
        // access reports.
        let quiet = self.quiet();
        if !self.release_with(target, Then::Unlock)? {
            self.send(target, Kind::Unlock, (0, 0), &[])?;
        }
        let mut epoch = self.epoch.borrow_mut();
        epoch.locks[target] = None;
        epoch.unfinished[target] = false;
        drop(epoch);
        self.wait_status(target)?;
        quiet
    }

    /// Completes every operation issued to `target` so far, inside its
    /// lock (`MPI_Win_flush`).
    pub fn flush(&self, target: usize) -> Result<()> {
        self.check_open()?;
        self.check_target(target)?;
        if self.epoch.borrow().locks[target].is_none() {
            return Err(sync_error(format!("flush of rank {target}, which is not locked")));
        }
        self.quiet()?;
        // Gets are complete when they return: only puts and accumulates
        // served by the target need its word.
        if !std::mem::take(&mut self.epoch.borrow_mut().unfinished[target]) {
            return Ok(());
        }
        if !self.release_with(target, Then::Flush)? {
            self.send(target, Kind::Flush, (0, 0), &[])?;
        }
        self.wait_status(target)
    }

    /// Takes a shared lock on every rank (`MPI_Win_lock_all`).
    pub fn lock_all(&self) -> Result<()> {
        (0..self.sizes.len()).try_for_each(|t| self.lock(LockKind::Shared, t))
    }

    /// Gives back every lock held (`MPI_Win_unlock_all`), completing every
    /// operation issued.
    pub fn unlock_all(&self) -> Result<()> {
        let held = self.held();
        if held.is_empty() {
            return Err(sync_error("unlock_all without locks"));
        }
        held.into_iter().try_for_each(|t| self.unlock(t))
    }

    /// Completes every operation issued to every locked target
    /// (`MPI_Win_flush_all`).
    pub fn flush_all(&self) -> Result<()> {
        self.held().into_iter().try_for_each(|t| self.flush(t))
    }

    fn held(&self) -> Vec<usize> {
        let epoch = self.epoch.borrow();
        (0..epoch.locks.len()).filter(|&t| epoch.locks[t].is_some()).collect()
    }

    /// Frees the window (`MPI_Win_free`); collective. Every operation
    /// completes first; locks still held are given back, and reported as an
    /// error. Dropping a window frees it too, reporting nothing.
    pub fn free(mut self) -> Result<()> {
        self.close().map(|_| ())
    }

    /// Frees the window as [`free`](Window::free) does, and gives back this
    /// rank's memory of a window the runtime allocated
    /// ([`Window::allocate`]), as it is after every operation completed.
    /// A window over a borrowed buffer is freed and its buffer is the
    /// caller's again when the scope ends: an error here.
    pub fn into_vec(mut self) -> Result<Vec<T>> {
        match self.close()? {
            Some(memory) => Ok(bytemuck::pod_collect_to_vec(&memory)),
            None => Err(Error::InvalidRequest(
                "into_vec of a window over a borrowed buffer (the buffer is the caller's once \
                 its scope ends)"
                    .into(),
            )),
        }
    }

    fn close(&mut self) -> Result<Option<Vec<u8>>> {
        if self.server.is_none() {
            return Ok(None);
        }
        let held = self.held();
        let unlocked = held.iter().map(|&t| self.unlock(t)).find(Result::is_err);
        // No write may land once the targets are told the window ends.
        let quiet = self.quiet();
        let fenced = self.fence_all(true);
        let served = match self.server.take() {
            Some(server) => server.wait(),
            None => Ok(None),
        };
        unlocked.unwrap_or(Ok(()))?;
        quiet?;
        fenced?;
        let memory = served?;
        match held.is_empty() {
            true => Ok(memory),
            false => Err(sync_error(format!("window freed while holding locks on {held:?}"))),
        }
    }
}

impl<T: Accumulate> Drop for Window<'_, T> {
    fn drop(&mut self) {
        if self.server.is_some() && !std::thread::panicking() {
            if let Err(e) = self.close() {
                tracing::warn!("a dropped window failed as it was freed: {e}");
            }
        }
    }
}
