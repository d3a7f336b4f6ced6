//! The shared-memory backend: the processes of a job on one host.
//!
//! One segment per job holds a header, a block per rank (pid, state, futex
//! doorbell) and a ring per ordered pair of ranks (self included). Rank 0
//! creates the segment in `/dev/shm` with mode 0600 and unlinks it as soon as
//! every rank has attached, so nothing is left behind after a normal exit or
//! a `kill -9` once the job has started; the launcher removes a segment
//! left by a job that died while starting.
//!
//! - Small frames: one copy of header and payload into the pair's ring and
//!   one release store ([`ring`]); the receiver reads them in place.
//! - Large messages: the runtime's rendezvous reads the sender's buffer with
//!   `process_vm_readv` — a single copy. Whether the kernel permits it
//!   (ptrace scope) is probed at start-up by every rank; if any may not, all
//!   fall back to the pipelined rendezvous through the rings, and rank 0 logs
//!   it once. It is never an error.
//! - Waiting: an idle rank sleeps on the process-shared futex in its block;
//!   a sender that finds the receiver asleep rings it.

pub mod ring;

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use memmap2::MmapRaw;
use rustix::thread::futex;

use crate::region::Regions;
use crate::{
    Capabilities, Event, Exchange, LossCause, PeerId, RegionId, RemoteKey, Transport,
    TransportError,
};
use ring::{Consumer, Corrupt, CtlRef, Data, Line, Producer, RingCtl, RECORD_HEADER};

/// Largest frame header.
pub const MAX_HEADER: usize = 64;

const MAGIC: u64 = u64::from_le_bytes(*b"hpcomm\x01\x00");
const VERSION: u32 = 1;
const STATE_ATTACHED: u32 = 1;
const STATE_DEPARTED: u32 = 2;
const CMA_OK: u32 = 1;
const CMA_DENIED: u32 = 2;
const PAGE: usize = 4096;
/// Frames taken from one ring per poll, so that one busy sender cannot
/// starve the others.
const POLL_BATCH: usize = 64;

/// A word whose address every rank publishes, so that peers can test
/// whether `process_vm_readv` into this process is allowed.
static CMA_PROBE: AtomicU64 = AtomicU64::new(0x6870_636f_6d6d_5052);

/// Settings of the shm backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShmConfig {
    /// Bytes of each pair's ring (a power of two, at least 16 KiB). `None`:
    /// 256 KiB up to 16 ranks, 64 KiB beyond.
    pub ring_bytes: Option<usize>,
    /// Whether to use `process_vm_readv` for large messages where allowed.
    pub cma: bool,
    /// Eager limit offered to the runtime. 8 KiB: above it, one
    /// `process_vm_readv` beats two copies through a ring on the machines
    /// measured (`docs/performance.md`).
    pub eager_limit: usize,
}

impl Default for ShmConfig {
    fn default() -> Self {
        ShmConfig { ring_bytes: None, cma: true, eager_limit: 8 * 1024 }
    }
}

#[repr(C)]
struct SegmentHeader {
    magic: AtomicU64,
    version: AtomicU32,
    ranks: AtomicU32,
    ring_bytes: AtomicU64,
}

#[repr(C)]
struct RankBlock {
    pid: AtomicU32,
    state: AtomicU32,
    cma: AtomicU32,
    probe_addr: AtomicU64,
    doorbell: Line<AtomicU32>,
    sleeping: Line<AtomicU32>,
}

/// Where everything is in a segment for `ranks` ranks.
#[derive(Clone, Copy, Debug)]
struct Layout {
    ranks: usize,
    ring_bytes: usize,
    blocks: usize,
    ctls: usize,
    data: usize,
    total: usize,
}

impl Layout {
    fn new(ranks: usize, ring_bytes: usize) -> Layout {
        let blocks = PAGE;
        let ctls = (blocks + ranks * std::mem::size_of::<RankBlock>()).next_multiple_of(PAGE);
        let data = (ctls + ranks * ranks * std::mem::size_of::<RingCtl>()).next_multiple_of(PAGE);
        let total = data + ranks * ranks * ring_bytes;
        Layout { ranks, ring_bytes, blocks, ctls, data, total }
    }

    fn ring(&self, src: usize, dst: usize) -> usize {
        src * self.ranks + dst
    }
}

/// A mapped segment; rings and blocks hold it alive.
#[derive(Debug)]
struct Segment {
    map: MmapRaw,
    layout: Layout,
}

// SAFETY: the mapping is shared memory accessed only through atomics (header,
// blocks, ring control) and through the ring protocol (ring data); the raw
// pointer inside `MmapRaw` is valid for the life of the value.
unsafe impl Send for Segment {}
// SAFETY: as above: every shared access is atomic or ordered by the rings.
unsafe impl Sync for Segment {}

impl Segment {
    fn at<T>(&self, offset: usize) -> &T {
        assert!(offset + std::mem::size_of::<T>() <= self.map.len());
        let ptr = self.map.as_ptr().wrapping_add(offset);
        assert_eq!(ptr as usize % std::mem::align_of::<T>(), 0, "misaligned segment field");
        // SAFETY: in bounds and aligned (checked above); the mapping lives as
        // long as `self`; the types placed here (`SegmentHeader`,
        // `RankBlock`, `RingCtl`) consist of atomics, for which all-zero
        // bytes are valid values and shared references are the right access.
        unsafe { &*ptr.cast::<T>() }
    }

    fn header(&self) -> &SegmentHeader {
        self.at(0)
    }

    fn block(&self, rank: usize) -> &RankBlock {
        self.at(self.layout.blocks + rank * std::mem::size_of::<RankBlock>())
    }

    fn data(&self, ring: usize) -> Data {
        let offset = self.layout.data + ring * self.layout.ring_bytes;
        assert!(offset + self.layout.ring_bytes <= self.map.len());
        let ptr = NonNull::new(self.map.as_mut_ptr().wrapping_add(offset)).expect("mapped");
        // SAFETY: the range is inside the mapping (checked), which the ring
        // keeps alive through its `SegmentCtl`; each ring's data area is used
        // by one producer and one consumer only.
        unsafe { Data::new(ptr, self.layout.ring_bytes) }
    }
}

/// A ring's control block, holding the segment alive.
#[derive(Debug)]
struct SegmentCtl {
    segment: Arc<Segment>,
    offset: usize,
}

impl CtlRef for SegmentCtl {
    fn ctl(&self) -> &RingCtl {
        self.segment.at(self.offset)
    }
}

/// One endpoint of a shared-memory job.
#[derive(Debug)]
pub struct Shm {
    me: PeerId,
    ranks: usize,
    caps: Capabilities,
    segment: Arc<Segment>,
    producers: Vec<Producer<SegmentCtl>>,
    consumers: Vec<Consumer<SegmentCtl>>,
    pids: Vec<i32>,
    completions: VecDeque<(u64, Result<(), TransportError>)>,
    /// Peers seen to have left, not yet reported (their rings are drained
    /// first).
    leaving: Vec<bool>,
    lost: Vec<bool>,
    /// Peers whose rings hold what cannot be true: lost as soon as seen.
    corrupt: Vec<bool>,
    next_ring: usize,
    polls: u32,
    /// Peers sent to whose doorbell has not been checked since.
    doorbells: Vec<bool>,
    doorbells_pending: usize,
}

fn setup(what: impl std::fmt::Display) -> TransportError {
    TransportError::Setup(what.to_string())
}

/// Removes a segment's name when dropped while it holds one.
struct Unlink(Option<String>);

impl Drop for Unlink {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Reads `dst.len()` bytes at `addr` in process `pid`.
fn read_remote(pid: i32, addr: u64, dst: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < dst.len() {
        let rest = &mut dst[done..];
        let local = libc::iovec { iov_base: rest.as_mut_ptr().cast(), iov_len: rest.len() };
        let remote = libc::iovec {
            iov_base: (addr as usize).wrapping_add(done) as *mut libc::c_void,
            iov_len: rest.len(),
        };
        // SAFETY: `local` describes the writable slice `rest`, which lives
        // across the call; `remote` names memory of another process, which
        // the kernel checks (EFAULT) and which is never dereferenced here.
        let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read nothing"));
        }
        done += n as usize;
    }
    Ok(())
}

impl Shm {
    /// Creates (rank 0) or attaches to (the others) the job's segment, using
    /// `exchange` to publish its name and to wait for the other ranks.
    pub fn open(
        me: usize,
        ranks: usize,
        exchange: &mut dyn Exchange,
        config: &ShmConfig,
    ) -> Result<Shm, TransportError> {
        if me >= ranks {
            return Err(TransportError::Setup(format!("rank {me} is outside a job of {ranks}")));
        }
        let ring_bytes = config
            .ring_bytes
            .unwrap_or(if ranks <= 16 { 256 << 10 } else { 64 << 10 })
            .max(16 << 10)
            .next_power_of_two();
        let layout = Layout::new(ranks, ring_bytes);
        let file = if me == 0 {
            let path = format!(
                "/dev/shm/hpcomm-{}-{}",
                exchange.job_id(),
                rustix::process::getpid().as_raw_nonzero()
            );
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| {
                    setup(format!("cannot create the shared-memory segment {path}: {e}"))
                })?;
            if let Err(e) = rustix::fs::fallocate(
                &file,
                rustix::fs::FallocateFlags::empty(),
                0,
                layout.total as u64,
            ) {
                let _ = std::fs::remove_file(&path);
                return Err(setup(if e == rustix::io::Errno::NOSPC {
                    format!(
                        "/dev/shm is full: the shared-memory segment for {ranks} ranks needs {} bytes \
                         ({:.1} MiB, rings of {} KiB); free space in /dev/shm or lower HPCOMM_SHM_RING_BYTES",
                        layout.total,
                        layout.total as f64 / (1 << 20) as f64,
                        ring_bytes >> 10
                    )
                } else {
                    format!(
                        "cannot size the shared-memory segment {path} to {} bytes: {e}",
                        layout.total
                    )
                }));
            }
            (file, path)
        } else {
            // Attached after rank 0 has published the name: a fence
            // apart (a PMI server shows values only after one).
            exchange.fence().map_err(setup)?;
            let path = String::from_utf8(exchange.get("shm.path").map_err(setup)?)
                .map_err(|_| setup("the segment name is not UTF-8"))?;
            let file =
                OpenOptions::new().read(true).write(true).open(&path).map_err(|e| {
                    setup(format!("cannot open the shared-memory segment {path}: {e}"))
                })?;
            (file, path)
        };
        let (file, path) = file;
        // Until every rank has attached, an error on rank 0 must not leave
        // the segment's name behind.
        let mut name_guard = Unlink((me == 0).then(|| path.clone()));
        let map = MmapRaw::map_raw(&file).map_err(|e| setup(format!("cannot map {path}: {e}")))?;
        if map.len() < layout.total {
            return Err(setup(format!(
                "segment {path} is {} bytes, expected {}",
                map.len(),
                layout.total
            )));
        }
        let segment = Arc::new(Segment { map, layout });
        let header = segment.header();
        if me == 0 {
            header.version.store(VERSION, Ordering::Relaxed);
            header.ranks.store(ranks as u32, Ordering::Relaxed);
            header.ring_bytes.store(ring_bytes as u64, Ordering::Relaxed);
            header.magic.store(MAGIC, Ordering::Release);
            // Only now may the others attach.
            exchange.put("shm.path", path.as_bytes()).map_err(setup)?;
            exchange.fence().map_err(setup)?;
        } else if header.magic.load(Ordering::Acquire) != MAGIC
            || header.version.load(Ordering::Relaxed) != VERSION
            || header.ranks.load(Ordering::Relaxed) != ranks as u32
            || header.ring_bytes.load(Ordering::Relaxed) != ring_bytes as u64
        {
            return Err(setup(format!("segment {path} was made for another job or version")));
        }
        let pid = rustix::process::getpid().as_raw_nonzero().get();
        let mine = segment.block(me);
        mine.pid.store(pid as u32, Ordering::Relaxed);
        mine.probe_addr.store(&CMA_PROBE as *const AtomicU64 as u64, Ordering::Relaxed);
        mine.state.store(STATE_ATTACHED, Ordering::Release);
        exchange.fence().map_err(setup)?;
        if me == 0 {
            // Everyone has the segment mapped: the name is no longer needed.
            name_guard.0 = None;
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!("could not unlink {path}: {e}");
            }
        }

        // Probe single-copy reads on the next rank.
        let probe_peer = segment.block((me + 1) % ranks);
        let peer_pid = probe_peer.pid.load(Ordering::Acquire) as i32;
        let peer_addr = probe_peer.probe_addr.load(Ordering::Acquire);
        let mut word = [0u8; 8];
        let cma = config.cma
            && read_remote(peer_pid, peer_addr, &mut word).is_ok()
            && u64::from_ne_bytes(word) == CMA_PROBE.load(Ordering::Relaxed);
        mine.cma.store(if cma { CMA_OK } else { CMA_DENIED }, Ordering::Release);
        exchange.fence().map_err(setup)?;
        let rma_read = (0..ranks).all(|r| segment.block(r).cma.load(Ordering::Acquire) == CMA_OK);
        if !rma_read && me == 0 {
            if config.cma {
                tracing::info!(
                    "process_vm_readv is not permitted between the ranks (ptrace scope): \
                     large messages use the pipelined copy through the segment"
                );
            } else {
                tracing::info!("single-copy reads disabled: large messages use the pipelined copy");
            }
        }

        let ctl = |ring: usize| SegmentCtl {
            segment: segment.clone(),
            offset: layout.ctls + ring * std::mem::size_of::<RingCtl>(),
        };
        let producers = (0..ranks)
            .map(|dst| Producer::new(ctl(layout.ring(me, dst)), segment.data(layout.ring(me, dst))))
            .collect::<Vec<_>>();
        let consumers = (0..ranks)
            .map(|src| Consumer::new(ctl(layout.ring(src, me)), segment.data(layout.ring(src, me))))
            .collect();
        let pids =
            (0..ranks).map(|r| segment.block(r).pid.load(Ordering::Acquire) as i32).collect();
        let max_payload = (ring_bytes / 4 - RECORD_HEADER - MAX_HEADER)
            .min(producers[0].max_frame() - MAX_HEADER);
        let eager_limit = config.eager_limit.min(max_payload);
        let caps = Capabilities {
            name: "shm",
            max_header: MAX_HEADER,
            max_payload,
            inline_limit: 1024.min(eager_limit),
            eager_limit,
            rma_read,
            max_read: if rma_read { 1 << 30 } else { 0 },
            revocable: false,
            ordered: true,
            latency_hint: Duration::from_nanos(200),
            spin_pause: true,
            bandwidth_hint: 10_000_000_000,
        };
        Ok(Shm {
            me: PeerId(me as u32),
            ranks,
            caps,
            segment,
            producers,
            consumers,
            pids,
            completions: VecDeque::new(),
            leaving: vec![false; ranks],
            lost: vec![false; ranks],
            corrupt: vec![false; ranks],
            next_ring: 0,
            polls: 0,
            doorbells: vec![false; ranks],
            doorbells_pending: 0,
        })
    }

    /// The endpoints of a job whose ranks are threads of this process (for
    /// tests and in-process jobs), set up concurrently, in rank order.
    pub fn local_job(ranks: usize, config: &ShmConfig) -> Result<Vec<Shm>, TransportError> {
        crate::exchange::local_job(ranks, |me, exchange| Shm::open(me, ranks, exchange, config))
    }

    /// Whether `poll` would find something now (a finished read, a frame
    /// in a ring), without waiting.
    pub fn has_work(&self) -> bool {
        !self.completions.is_empty() || self.consumers.iter().any(|c| c.has_data())
    }

    /// Wakes `dst` at once if it is visibly asleep; otherwise remembers to
    /// check again, with the store-load fence that makes the check exact, at
    /// the next `poll` or `wait` (once per round, not once per frame).
    #[inline]
    fn ring_doorbell(&mut self, dst: usize) {
        if self.segment.block(dst).sleeping.0.load(Ordering::Relaxed) != 0 {
            self.wake(dst);
        } else if !self.doorbells[dst] {
            self.doorbells[dst] = true;
            self.doorbells_pending += 1;
        }
    }

    fn wake(&self, dst: usize) {
        let block = self.segment.block(dst);
        block.doorbell.0.fetch_add(1, Ordering::Release);
        let _ = futex::wake(&block.doorbell.0, futex::Flags::empty(), u32::MAX);
    }

    /// Checks every peer sent to since the last call: pairs with the fence
    /// in `wait`, so that either the sleeper sees our frames when it
    /// re-checks its rings, or we see it asleep here and wake it.
    fn ring_pending_doorbells(&mut self) {
        if self.doorbells_pending == 0 {
            return;
        }
        fence(Ordering::SeqCst);
        for dst in 0..self.ranks {
            if std::mem::take(&mut self.doorbells[dst])
                && self.segment.block(dst).sleeping.0.load(Ordering::Relaxed) != 0
            {
                self.wake(dst);
            }
        }
        self.doorbells_pending = 0;
    }

    /// Rank `src`'s ring holds what cannot be true: the peer is lost (the
    /// next poll reports it), and its ring is never read again.
    #[cold]
    fn ring_broken(&mut self, src: usize, why: &str) {
        if !self.corrupt[src] {
            tracing::warn!("shm: rank {src} wrote {why}; treating it as lost");
        }
        self.corrupt[src] = true;
        self.leaving[src] = true;
        self.consumers[src].close();
    }

    /// Notes peers that have left (cleanly, or whose process is gone).
    fn check_peers(&mut self, with_pids: bool) {
        for r in 0..self.ranks {
            if self.lost[r] || self.leaving[r] || r == self.me.index() {
                continue;
            }
            let departed = self.segment.block(r).state.load(Ordering::Acquire) == STATE_DEPARTED;
            let dead = with_pids
                && rustix::process::Pid::from_raw(self.pids[r]).is_some_and(|pid| {
                    rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH)
                });
            if departed || dead {
                self.leaving[r] = true;
            }
        }
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        self.segment.block(self.me.index()).state.store(STATE_DEPARTED, Ordering::Release);
        for r in 0..self.ranks {
            if r != self.me.index() {
                let block = self.segment.block(r);
                block.doorbell.0.fetch_add(1, Ordering::Release);
                let _ = futex::wake(&block.doorbell.0, futex::Flags::empty(), u32::MAX);
            }
        }
    }
}

impl Transport for Shm {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn peer_id(&self) -> PeerId {
        self.me
    }

    fn peer_count(&self) -> usize {
        self.ranks
    }

    #[inline]
    fn try_send(
        &mut self,
        dst: PeerId,
        header: &[u8],
        payload: &[u8],
    ) -> Result<(), TransportError> {
        let d = self.caps.check_send(dst, self.ranks, header, payload)?;
        if self.lost[d] || self.leaving[d] {
            return Err(TransportError::PeerLost(dst));
        }
        match self.producers[d].try_push(header, payload) {
            Ok(true) => {}
            Ok(false) => return Err(TransportError::WouldBlock),
            Err(Corrupt(why)) => {
                self.ring_broken(d, &format!("moved its ring's head ({why})"));
                return Err(TransportError::PeerLost(dst));
            }
        }
        self.ring_doorbell(d);
        Ok(())
    }

    fn poll(
        &mut self,
        _regions: &Regions,
        sink: &mut dyn FnMut(Event<'_>),
    ) -> Result<usize, TransportError> {
        let mut events = 0;
        while let Some((token, result)) = self.completions.pop_front() {
            match result {
                Ok(()) => sink(Event::ReadDone { token }),
                Err(error) => sink(Event::ReadFailed { token, error }),
            }
            events += 1;
        }
        self.polls = self.polls.wrapping_add(1);
        if self.polls % 256 == 0 {
            self.check_peers(false);
        }
        for k in 0..self.ranks {
            let src = (self.next_ring + k) % self.ranks;
            let leaving = self.leaving[src];
            let batch = if leaving { usize::MAX } else { POLL_BATCH };
            let peer = PeerId(src as u32);
            let polled = self.consumers[src]
                .poll(batch, |header, payload| sink(Event::Frame { src: peer, header, payload }));
            match polled {
                Ok(n) => events += n,
                Err(Corrupt(why)) => self.ring_broken(src, &why),
            }
            if leaving && !self.lost[src] {
                // Its ring is drained (or cannot be read): everything it sent
                // has been delivered.
                self.lost[src] = true;
                let cause = if self.corrupt[src] { LossCause::Protocol } else { LossCause::Ended };
                sink(Event::PeerLost { peer, cause });
                events += 1;
            }
        }
        self.next_ring = (self.next_ring + 1) % self.ranks;
        Ok(events)
    }

    fn wait(&mut self, timeout: Duration) {
        self.ring_pending_doorbells();
        if !self.completions.is_empty() {
            return;
        }
        let block = self.segment.block(self.me.index());
        let seen = block.doorbell.0.load(Ordering::Acquire);
        block.sleeping.0.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if !self.consumers.iter().any(|c| c.has_data()) {
            let ts = futex::Timespec {
                tv_sec: timeout.as_secs() as _,
                tv_nsec: timeout.subsec_nanos() as _,
            };
            let _ = futex::wait(&block.doorbell.0, futex::Flags::empty(), seen, Some(&ts));
        }
        block.sleeping.0.store(0, Ordering::Relaxed);
        self.check_peers(true);
    }

    fn expose(&mut self, regions: &Regions, region: RegionId) -> Result<RemoteKey, TransportError> {
        if !self.caps.rma_read {
            return Err(TransportError::Unsupported("shm (single-copy reads not permitted)"));
        }
        let (ptr, _) = regions.exposable(region)?;
        Ok(RemoteKey { addr: ptr.as_ptr() as u64, key: 0 })
    }

    fn start_read(
        &mut self,
        regions: &Regions,
        src: PeerId,
        key: RemoteKey,
        src_offset: usize,
        dst: RegionId,
        dst_offset: usize,
        len: usize,
        token: u64,
    ) -> Result<(), TransportError> {
        if !self.caps.rma_read {
            return Err(TransportError::Unsupported("shm (single-copy reads not permitted)"));
        }
        if src.index() >= self.ranks {
            return Err(TransportError::InvalidPeer { peer: src, size: self.ranks });
        }
        // The process is the one this rank knows the peer by, never one the
        // key names: a peer may only have this rank read its own memory.
        let pid = self.pids[src.index()];
        let range = dst_offset..dst_offset.checked_add(len).ok_or(TransportError::InvalidRegion)?;
        let result = regions
            .with_mut(dst, |d| match d.get_mut(range) {
                Some(d) => {
                    read_remote(pid, key.addr.wrapping_add(src_offset as u64), d).map_err(|e| {
                        tracing::debug!("process_vm_readv from rank {src}: {e}");
                        TransportError::InvalidRegion
                    })
                }
                None => Err(TransportError::InvalidRegion),
            })
            .unwrap_or(Err(TransportError::InvalidRegion));
        self.completions.push_back((token, result));
        Ok(())
    }
}
