//! What one-sided layers (`hpcomm-collectives`' windows) need from the
//! runtime beyond messages: a task exposing its output buffer to peers'
//! reads and writes
//! ([`TaskCx::expose_output`](crate::task::TaskCx::expose_output)), and
//! reading what a peer exposed, or writing into it, without the peer's
//! runtime taking part ([`Communicator::read_remote`],
//! [`Communicator::write_remote`]) — a single copy by the kernel over shm
//! (`process_vm_readv`, `process_vm_writev`), an RDMA read or write over
//! libfabric (`fi_read`, `fi_write`).

use bytemuck::Pod;
use hpcomm_transport::{Buffer, RemoteKey, TransportError};

use crate::comm::{as_bytes, as_bytes_mut, Communicator};
use crate::engine::Direction;
use crate::error::{Error, Result};
use crate::request::{Request, Scope};

/// A buffer a peer exposed for one-sided reads: what its owner sends the
/// others (as two words, [`RemoteRegion::to_words`]) so that they can read
/// it. Untrusted when it comes from a peer: a read through a forged one
/// fails, or reads the forger's own memory, and lands only in the reader's
/// buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteRegion {
    key: RemoteKey,
}

impl RemoteRegion {
    pub(crate) fn new(key: RemoteKey) -> RemoteRegion {
        RemoteRegion { key }
    }

    /// The region as two words, to send to peers.
    pub fn to_words(self) -> [u64; 2] {
        [self.key.addr, self.key.key]
    }

    /// A region from the two words a peer sent.
    pub fn from_words([addr, key]: [u64; 2]) -> RemoteRegion {
        RemoteRegion { key: RemoteKey { addr, key } }
    }
}

impl<'s> Scope<'s, '_> {
    /// Starts reading `buf.len()` elements at byte `offset` of the region
    /// `rank` exposed into `buf`, borrowed by the scope: the non-blocking
    /// [`Communicator::read_remote`].
    pub fn iread_remote<T: Pod>(
        &self,
        rank: usize,
        region: RemoteRegion,
        offset: usize,
        buf: &'s mut [T],
    ) -> Result<Request<'_>> {
        let elem = std::mem::size_of::<T>();
        self.start_remote(rank, (region, offset), Buffer::Write(as_bytes_mut(buf)?), elem)
    }

    /// Starts writing `data`, borrowed by the scope, at byte `offset` of
    /// the region `rank` exposed: the non-blocking
    /// [`Communicator::write_remote`]. The request completes once the bytes
    /// are in `rank`'s memory.
    pub fn iwrite_remote<T: Pod>(
        &self,
        rank: usize,
        region: RemoteRegion,
        offset: usize,
        data: &'s [T],
    ) -> Result<Request<'_>> {
        let elem = std::mem::size_of::<T>();
        self.start_remote(rank, (region, offset), Buffer::Read(as_bytes(data)?), elem)
    }

    /// Starts a one-sided access of `rank`'s region at `offset`: a read
    /// into a writable `local`, a write from a read-only one.
    fn start_remote(
        &self,
        rank: usize,
        (region, offset): (RemoteRegion, usize),
        local: Buffer<'s>,
        elem: usize,
    ) -> Result<Request<'_>> {
        let comm = self.comm();
        let dir = direction(&local);
        let peer = comm.check_peer(rank, dir)?;
        let mut engine = comm.engine().lock()?;
        let (local, len) = match local {
            Buffer::Read(bytes) => (self.regions().register(bytes), bytes.len()),
            Buffer::Write(bytes) => {
                let len = bytes.len();
                (self.regions().register_mut(bytes), len)
            }
        };
        let id = engine.start_access(comm.context(), dir, (peer, region.key, offset), local, len);
        drop(engine);
        let id = id.inspect_err(|_| self.regions().regions().release(local))?;
        Ok(self.started(id, elem))
    }
}

/// Which way an access with `local` as its buffer goes: a writable one is
/// read into, a read-only one written from.
fn direction(local: &Buffer<'_>) -> Direction {
    match local {
        Buffer::Read(_) => Direction::Write,
        Buffer::Write(_) => Direction::Read,
    }
}

impl Communicator {
    /// The world peer of `rank`, if this rank can access what it exposes
    /// in direction `dir` (a write needs reads too).
    fn check_peer(&self, rank: usize, dir: Direction) -> Result<hpcomm_transport::PeerId> {
        if rank >= self.size() {
            return Err(Error::InvalidRank {
                rank: i32::try_from(rank).unwrap_or(i32::MAX),
                size: self.size(),
            });
        }
        let peer = self.peer(rank as u32);
        let engine = self.engine().lock()?;
        let unsupported = |what| Err(Error::Transport(TransportError::Unsupported(what)));
        if !engine.can_read(peer) {
            return unsupported("one-sided reads between these ranks");
        }
        if dir == Direction::Write && !engine.can_write(peer) {
            return unsupported("one-sided writes between these ranks");
        }
        Ok(peer)
    }

    /// Whether this rank can read what `rank` exposes (the transport
    /// between them has one-sided reads).
    pub fn can_read(&self, rank: usize) -> bool {
        rank < self.size() && self.engine().lock().is_ok_and(|e| e.can_read(self.peer(rank as u32)))
    }

    /// Whether this rank can write into what `rank` exposes (the transport
    /// between them has one-sided writes).
    pub fn can_write(&self, rank: usize) -> bool {
        rank < self.size()
            && self.engine().lock().is_ok_and(|e| e.can_write(self.peer(rank as u32)))
    }

    /// Reads `buf.len()` elements at byte `offset` of the region `rank`
    /// exposed, into `buf`, without `rank`'s runtime taking part; returns
    /// once `buf` holds them. The caller keeps the offset within the
    /// region: the transport refuses reads outside it where it can tell
    /// (libfabric, loopback), and where it cannot (shm) reads whatever the
    /// peer's memory holds there, into `buf` only.
    pub fn read_remote<T: Pod>(
        &self,
        rank: usize,
        region: RemoteRegion,
        offset: usize,
        buf: &mut [T],
    ) -> Result<()> {
        self.access_remote(rank, (region, offset), Buffer::Write(as_bytes_mut(buf)?))
    }

    /// Writes `data` at byte `offset` of the region `rank` exposed, without
    /// `rank`'s runtime taking part; returns once the bytes are in `rank`'s
    /// memory. The caller keeps the range within the region, as for
    /// [`read_remote`](Communicator::read_remote): where the transport
    /// cannot tell (shm), a write past it lands in whatever `rank`'s
    /// memory holds there — a rank only ever writes where its peer told it.
    pub fn write_remote<T: Pod>(
        &self,
        rank: usize,
        region: RemoteRegion,
        offset: usize,
        data: &[T],
    ) -> Result<()> {
        self.access_remote(rank, (region, offset), Buffer::Read(as_bytes(data)?))
    }

    /// A blocking one-sided access of `rank`'s region at `offset`: a read
    /// into a writable `local`, a write from a read-only one.
    fn access_remote(
        &self,
        rank: usize,
        (region, offset): (RemoteRegion, usize),
        local: Buffer<'_>,
    ) -> Result<()> {
        let dir = direction(&local);
        let peer = self.check_peer(rank, dir)?;
        let len = match &local {
            Buffer::Read(bytes) => bytes.len(),
            Buffer::Write(bytes) => bytes.len(),
        };
        let engine = self.engine().lock()?;
        self.engine().regions().scope_with(local, move |_, local| {
            let mut engine = engine;
            let id =
                engine.start_access(self.context(), dir, (peer, region.key, offset), local, len)?;
            self.wait_holding(&mut engine, id).map(|_| ())
        })
    }

    /// Waits until no one-sided write this rank started (on any
    /// communicator of its endpoint) is still in flight: each has landed in
    /// its peer's memory or failed.
    pub fn quiet_writes(&self) -> Result<()> {
        let mut engine = self.engine().lock()?;
        if !engine.writing() {
            return Ok(());
        }
        self.block_holding(&mut engine, |e| !e.writing())
    }
}
