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
use hpcomm_transport::{Buffer, RemoteKey};

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
        let comm = self.comm();
        let peer = comm.check_reader(rank)?;
        let elem = std::mem::size_of::<T>();
        let bytes = as_bytes_mut(buf)?;
        let len = bytes.len();
        let mut engine = comm.engine().lock()?;
        let dst = self.regions().register_mut(bytes);
        let id = engine.start_access(
            comm.context(),
            Direction::Read,
            (peer, region.key, offset),
            dst,
            len,
        );
        drop(engine);
        let id = id.inspect_err(|_| self.regions().regions().release(dst))?;
        Ok(self.started(id, elem))
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
        let comm = self.comm();
        let peer = comm.check_writer(rank)?;
        let elem = std::mem::size_of::<T>();
        let bytes = as_bytes(data)?;
        let len = bytes.len();
        let mut engine = comm.engine().lock()?;
        let src = self.regions().register(bytes);
        let id = engine.start_access(
            comm.context(),
            Direction::Write,
            (peer, region.key, offset),
            src,
            len,
        );
        drop(engine);
        let id = id.inspect_err(|_| self.regions().regions().release(src))?;
        Ok(self.started(id, elem))
    }
}

impl Communicator {
    /// The world peer of `rank`, if this rank can read what it exposes.
    fn check_reader(&self, rank: usize) -> Result<hpcomm_transport::PeerId> {
        if rank >= self.size() {
            return Err(Error::InvalidRank {
                rank: i32::try_from(rank).unwrap_or(i32::MAX),
                size: self.size(),
            });
        }
        let peer = self.peer(rank as u32);
        match self.engine().lock()?.can_read(peer) {
            true => Ok(peer),
            false => Err(Error::Transport(hpcomm_transport::TransportError::Unsupported(
                "one-sided reads between these ranks",
            ))),
        }
    }

    /// The world peer of `rank`, if this rank can write into what it
    /// exposes.
    fn check_writer(&self, rank: usize) -> Result<hpcomm_transport::PeerId> {
        let peer = self.check_reader(rank)?;
        match self.engine().lock()?.can_write(peer) {
            true => Ok(peer),
            false => Err(Error::Transport(hpcomm_transport::TransportError::Unsupported(
                "one-sided writes between these ranks",
            ))),
        }
    }

    /// Whether this rank can write into what `rank` exposes (the transport
    /// between them has one-sided writes).
    pub fn can_write(&self, rank: usize) -> bool {
        rank < self.size()
            && self.engine().lock().is_ok_and(|e| e.can_write(self.peer(rank as u32)))
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
        let peer = self.check_writer(rank)?;
        let bytes = as_bytes(data)?;
        let len = bytes.len();
        let engine = self.engine().lock()?;
        self.engine().regions().scope_with(Buffer::Read(bytes), move |_, src| {
            let mut engine = engine;
            let id = engine.start_access(
                self.context(),
                Direction::Write,
                (peer, region.key, offset),
                src,
                len,
            )?;
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

    /// Whether this rank can read what `rank` exposes (the transport
    /// between them has one-sided reads).
    pub fn can_read(&self, rank: usize) -> bool {
        rank < self.size() && self.engine().lock().is_ok_and(|e| e.can_read(self.peer(rank as u32)))
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
        let peer = self.check_reader(rank)?;
        let bytes = as_bytes_mut(buf)?;
        let len = bytes.len();
        let engine = self.engine().lock()?;
        self.engine().regions().scope_with(Buffer::Write(bytes), move |_, dst| {
            let mut engine = engine;
            let id = engine.start_access(
                self.context(),
                Direction::Read,
                (peer, region.key, offset),
                dst,
                len,
            )?;
            self.wait_holding(&mut engine, id).map(|_| ())
        })
    }
}
