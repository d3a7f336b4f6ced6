//! Persistent point-to-point requests (`MPI_Send_init`, `MPI_Ssend_init`,
//! `MPI_Recv_init`, `MPI_Start`).
//!
//! A halo exchange sends the same lengths to the same neighbours with the
//! same tags every step. A persistent request checks those arguments and
//! works out where its messages go (the peer, the match pattern) once, when
//! it is made; each [`start`](PersistentSend::start) then only registers
//! the buffer and starts the transfer.
//!
//! The buffer is given at each start rather than at creation, because in
//! safe Rust a request that held it between steps would keep the program
//! from filling it: it is borrowed by the [`Scope`] the request is started
//! in, as an ordinary non-blocking operation's, and must have the length
//! given at creation. A persistent request is *active* from a start until
//! its request completes; starting it again before that is an
//! [`Error::InvalidRequest`], as is starting it in another communicator's
//! scope.
//!
//! ```
//! hpcomm_runtime::threads(2, |comm| {
//!     let peer = 1 - comm.rank();
//!     let send = comm.send_init::<f64>(4, peer, 0).unwrap();
//!     let recv = comm.recv_init::<f64>(4, peer, 0).unwrap();
//!     let mut mine = [0.0; 4];
//!     let mut theirs = [0.0; 4];
//!     for step in 0..3 {
//!         mine.fill(step as f64 + comm.rank() as f64);
//!         comm.scope(|s| {
//!             let r = recv.start(s, &mut theirs)?;
//!             let w = send.start(s, &mine)?;
//!             hpcomm_runtime::wait_all(&mut [r, w]).map(|_| ())
//!         })
//!         .unwrap();
//!         assert_eq!(theirs, [step as f64 + peer as f64; 4]);
//!     }
//! })
//! .unwrap();
//! ```

use std::cell::Cell;
use std::marker::PhantomData;

use bytemuck::Pod;
use hpcomm_transport::PeerId;

use crate::comm::{as_bytes, as_bytes_mut, Communicator, Sent, Started};
use crate::engine::{ReqId, To};
use crate::error::{Error, Result};
use crate::matching::Pattern;
use crate::request::{Request, Scope};
use crate::types::{Rank, Status, Tag};

/// What a persistent request knows between starts: its communicator, its
/// length, and whether (and as which operation) it is active.
#[derive(Debug)]
struct Made<'c> {
    comm: &'c Communicator,
    len: usize,
    what: &'static str,
    active: Cell<Option<ReqId>>,
}

impl<'c> Made<'c> {
    /// Checks a start on `scope` with a buffer of `len` elements.
    fn check(&self, scope: &Scope<'_, '_>, len: usize) -> Result<()> {
        if !scope.comm().same_as(self.comm) {
            return Err(Error::InvalidRequest(format!(
                "{} made on communicator {:?} started in a scope of {:?}",
                self.what,
                self.comm.context(),
                scope.comm().context()
            )));
        }
        if let Some(id) = self.active.get() {
            if self.comm.engine().lock()?.exists(id) {
                return Err(Error::InvalidRequest(format!(
                    "{} started while still active (wait for its request first)",
                    self.what
                )));
            }
        }
        if len != self.len {
            return Err(Error::InvalidCount(format!(
                "{} made for {} elements started with {len}",
                self.what, self.len
            )));
        }
        Ok(())
    }

    /// Records a start that left operation `id` in flight.
    fn activate<'r>(&self, scope: &'r Scope<'_, '_>, id: ReqId, elem: usize) -> Request<'r> {
        self.active.set(Some(id));
        scope.started(id, elem)
    }
}

/// A persistent send (`MPI_Send_init`, or `MPI_Ssend_init` when
/// synchronous), from [`Communicator::send_init`] or
/// [`Communicator::ssend_init`]: its arguments checked once, its buffer
/// given at each [`start`](PersistentSend::start).
#[derive(Debug)]
pub struct PersistentSend<'c, T> {
    made: Made<'c>,
    /// Where the messages go; `None` for the null process.
    to: Option<To>,
    sync: bool,
    _elem: PhantomData<fn(&T)>,
}

/// A persistent receive (`MPI_Recv_init`), from
/// [`Communicator::recv_init`]: its arguments checked once, its buffer
/// given at each [`start`](PersistentRecv::start).
#[derive(Debug)]
pub struct PersistentRecv<'c, T> {
    made: Made<'c>,
    /// What it accepts and the world peer of a specific source; `None` for
    /// the null process.
    pattern: Option<(Pattern, Option<PeerId>)>,
    _elem: PhantomData<fn(&mut T)>,
}

impl Communicator {
    fn persistent_send<T: Pod>(
        &self,
        len: usize,
        dest: Rank,
        tag: Tag,
        sync: bool,
    ) -> Result<PersistentSend<'_, T>> {
        let dst = self.check_dest(dest)?;
        let tag = Communicator::check_send_tag(tag)?;
        let what = if sync { "a persistent synchronous send" } else { "a persistent send" };
        Ok(PersistentSend {
            made: Made { comm: self, len, what, active: Cell::new(None) },
            to: dst.map(|d| self.to(d, tag)),
            sync,
            _elem: PhantomData,
        })
    }

    /// A persistent send of `len` elements to `dest` with `tag`
    /// (`MPI_Send_init`): the arguments are checked now, each
    /// [`start`](PersistentSend::start) sends a buffer of that length.
    pub fn send_init<T: Pod>(
        &self,
        len: usize,
        dest: impl Into<Rank>,
        tag: impl Into<Tag>,
    ) -> Result<PersistentSend<'_, T>> {
        self.persistent_send(len, dest.into(), tag.into(), false)
    }

    /// A persistent synchronous send (`MPI_Ssend_init`): each start's
    /// request completes once the receiver has matched the message.
    pub fn ssend_init<T: Pod>(
        &self,
        len: usize,
        dest: impl Into<Rank>,
        tag: impl Into<Tag>,
    ) -> Result<PersistentSend<'_, T>> {
        self.persistent_send(len, dest.into(), tag.into(), true)
    }

    /// A persistent receive into `len` elements from `src` with `tag`
    /// (`MPI_Recv_init`; wildcards allowed): each
    /// [`start`](PersistentRecv::start) receives into a buffer of that
    /// length, which the message may fill only in part.
    pub fn recv_init<T: Pod>(
        &self,
        len: usize,
        src: impl Into<Rank>,
        tag: impl Into<Tag>,
    ) -> Result<PersistentRecv<'_, T>> {
        Ok(PersistentRecv {
            made: Made { comm: self, len, what: "a persistent receive", active: Cell::new(None) },
            pattern: self.probe_pattern(src.into(), tag.into())?,
            _elem: PhantomData,
        })
    }
}

impl<'c, T: Pod> PersistentSend<'c, T> {
    /// Elements each start sends.
    pub fn len(&self) -> usize {
        self.made.len
    }

    /// Whether each start sends nothing.
    pub fn is_empty(&self) -> bool {
        self.made.len == 0
    }

    /// Starts a send of `buf` (`MPI_Start`), borrowed until `scope` ends.
    pub fn start<'r, 's>(&self, scope: &'r Scope<'s, '_>, buf: &'s [T]) -> Result<Request<'r>> {
        self.made.check(scope, buf.len())?;
        let elem = std::mem::size_of::<T>();
        let Some(to) = self.to else {
            return Ok(scope.ready(Status::EMPTY, elem));
        };
        let bytes = as_bytes(buf)?;
        Ok(match self.made.comm.send_to(scope.regions(), to, bytes, self.sync)? {
            Sent::Now => scope.sent(to, buf.len(), elem),
            Sent::Pending(id) => self.made.activate(scope, id, elem),
        })
    }
}

impl<'c, T: Pod> PersistentRecv<'c, T> {
    /// Elements each start can receive.
    pub fn len(&self) -> usize {
        self.made.len
    }

    /// Whether each start receives an empty message only.
    pub fn is_empty(&self) -> bool {
        self.made.len == 0
    }

    /// Starts a receive into `buf` (`MPI_Start`), borrowed until `scope`
    /// ends.
    pub fn start<'r, 's>(&self, scope: &'r Scope<'s, '_>, buf: &'s mut [T]) -> Result<Request<'r>> {
        self.made.check(scope, buf.len())?;
        let elem = std::mem::size_of::<T>();
        let Some((pattern, peer)) = self.pattern else {
            return Ok(scope.ready(Status::EMPTY, elem));
        };
        let bytes = as_bytes_mut(buf)?;
        let comm = self.made.comm;
        match comm.recv_in(scope.regions(), bytes, pattern, peer)? {
            Started::Pending(id) => Ok(self.made.activate(scope, id, elem)),
            Started::Done(done) => Ok(scope.ready(Communicator::status(done, elem)?, elem)),
            Started::Null => Ok(scope.ready(Status::EMPTY, elem)),
        }
    }
}
