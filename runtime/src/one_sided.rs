//! What one-sided layers (`hpcomm-collectives`' windows) need from the
//! runtime beyond messages: a task exposing its output buffer to peers'
//! reads ([`TaskCx::expose_output`](crate::task::TaskCx::expose_output)),
//! and reading what a peer exposed without the peer's runtime taking part
//! ([`Communicator::read_remote`]) — a single copy by the kernel over shm
//! (`process_vm_readv`), an RDMA read over libfabric (`fi_read`).

use bytemuck::Pod;
use hpcomm_transport::{Buffer, RemoteKey};

use crate::comm::{as_bytes_mut, Communicator};
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
        let id = engine.start_read(comm.context(), (peer, region.key, offset), dst, len);
        drop(engine);
        let id = id.inspect_err(|_| self.regions().regions().release(dst))?;
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
            let id = engine.start_read(self.context(), (peer, region.key, offset), dst, len)?;
            self.wait_holding(&mut engine, id).map(|_| ())
        })
    }
}
