//! The shared-memory backend: the processes of a job on one host.
//!
//! One segment per job holds a header, a block per rank (pid, state, futex
//! doorbell), a queue per rank that every rank may write to ([`queue`]),
//! and a fixed pool of rings ([`ring`]) handed to the pairs that talk
//! most: memory grows with the ranks, not with their pairs. Rank 0 creates
//! the segment in `/dev/shm` with mode 0600 and unlinks it as soon as every
//! rank has attached, so nothing is left behind after a normal exit or a
//! `kill -9` once the job has started; the launcher removes a segment left
//! by a job that died while starting. The pool's rings take memory only
//! when a pair takes one.
//!
//! - Small frames: a pair's first frames go through the receiver's queue (a
//!   compare-and-swap to reserve, one copy, one release store to commit).
//!   After [`ShmConfig::ring_after`] frames the sender takes a ring from the
//!   pool, announces it through the queue, and sends on it from then on:
//!   one copy and one release store, no atomic read-modify-write; the
//!   receiver reads frames in place from both. A frame never changes path
//!   behind an earlier one, so each pair stays in order. When the pool is
//!   empty the pair stays on the queue.
//! - Large messages: the runtime's rendezvous reads the sender's buffer with
//!   `process_vm_readv` — a single copy. Whether the kernel permits it
//!   (ptrace scope) is probed at start-up by every rank; if any may not, all
//!   fall back to the pipelined rendezvous through the rings, and rank 0 logs
//!   it once. It is never an error.
//! - One-sided windows: with the same permission, a peer's exposed window is
//!   read with `process_vm_readv` and written with `process_vm_writev`
//!   ([`Transport::start_write`]), without the peer taking part.
//! - Waiting: an idle rank sleeps on the process-shared futex in its block;
//!   a sender that finds the receiver asleep rings it.

pub mod queue;
pub mod ring;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memmap2::MmapRaw;
use rustix::thread::futex;

use crate::region::Regions;
use crate::{
    Capabilities, Event, Exchange, LossCause, PeerId, RegionId, RemoteKey, Transport,
    TransportError,
};
use queue::{Commit, QueueConsumer, QueueCtl, QueueMem, KIND_CONTROL, KIND_FRAME};
use ring::{Consumer, Corrupt, CtlRef, Data, Line, Producer, RingCtl, RECORD_HEADER};

/// Largest frame header.
pub const MAX_HEADER: usize = 64;

const MAGIC: u64 = u64::from_le_bytes(*b"hpcomm\x01\x00");
const VERSION: u32 = 2;
const STATE_ATTACHED: u32 = 1;
const STATE_DEPARTED: u32 = 2;
const CMA_OK: u32 = 1;
const CMA_DENIED: u32 = 2;
const PAGE: usize = 4096;
/// Frames taken from one ring per poll, so that one busy sender cannot
/// starve the others.
const POLL_BATCH: usize = 64;
/// A control record announcing the pool ring a sender now uses.
const CONTROL_RING: u8 = 1;
/// How long a queue may wait on a record reserved by a rank that died
/// before it is given up.
const STALL_LIMIT: Duration = Duration::from_secs(1);
/// How often an idle rank checks whether its peers' processes still exist.
const PID_CHECK: Duration = Duration::from_millis(50);

/// A word whose address every rank publishes, so that peers can test
/// whether `process_vm_readv` into this process is allowed.
static CMA_PROBE: AtomicU64 = AtomicU64::new(0x6870_636f_6d6d_5052);

/// Settings of the shm backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShmConfig {
    /// Bytes of each rank's queue and of each ring of the pool (a power of
    /// two, at least 16 KiB). `None`: 256 KiB up to 16 ranks, 64 KiB
    /// beyond.
    pub ring_bytes: Option<usize>,
    /// Bytes of the pool of pair rings: at most this many bytes of rings,
    /// and never more rings than pairs. Rings take memory only once taken.
    pub pool_bytes: usize,
    /// Frames a pair sends through the receiver's queue before it takes a
    /// ring from the pool (0: at once; `u32::MAX`: never).
    pub ring_after: u32,
    /// Whether to use `process_vm_readv` for large messages where allowed.
    pub cma: bool,
    /// Eager limit offered to the runtime. 8 KiB: above it, one
    /// `process_vm_readv` beats two copies through a ring on the machines
    /// measured (`docs/performance.md`).
    pub eager_limit: usize,
}

impl ShmConfig {
    /// Applies the `HPCOMM_SHM_*` variables found through `lookup`.
    pub fn read_vars(&mut self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
        use crate::backend::parse;
        if let Some(v) = parse::<usize>(lookup, "HPCOMM_SHM_RING_BYTES")? {
            if v < 16 << 10 || !v.is_power_of_two() {
                return Err(format!(
                    "HPCOMM_SHM_RING_BYTES={v} must be a power of two of at least 16384"
                ));
            }
            self.ring_bytes = Some(v);
        }
        if let Some(v) = parse::<usize>(lookup, "HPCOMM_SHM_POOL_BYTES")? {
            self.pool_bytes = v;
        }
        if let Some(v) = parse::<u8>(lookup, "HPCOMM_SHM_CMA")? {
            self.cma = v != 0;
        }
        Ok(())
    }
}

/// The path every shm segment of job `job` starts with.
fn segment_prefix(job: &str) -> String {
    format!("/dev/shm/hpcomm-{job}-")
}

/// Removes the shm segments of job `job` that its ranks could not unlink
/// (the job ended while starting).
pub fn cleanup(job: &str) {
    let prefix = segment_prefix(job);
    let Some((dir, name)) = prefix.rsplit_once('/') else { return };
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// `kernel.yama.ptrace_scope`, which decides whether single-copy reads
/// (`process_vm_readv`) work between ranks.
pub fn ptrace_scope() -> String {
    match std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope") {
        Ok(v) => v.trim().to_string(),
        Err(_) => "not present (no Yama)".into(),
    }
}

impl Default for ShmConfig {
    fn default() -> Self {
        ShmConfig {
            ring_bytes: None,
            pool_bytes: 64 << 20,
            ring_after: 16,
            cma: true,
            eager_limit: 8 * 1024,
        }
    }
}

#[repr(C)]
struct SegmentHeader {
    magic: AtomicU64,
    version: AtomicU32,
    ranks: AtomicU32,
    ring_bytes: AtomicU64,
    pool: AtomicU64,
    /// Rings of the pool handed out so far (may run past `pool`: each
    /// sender tries once per pair).
    rings_taken: AtomicU64,
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

impl RankBlock {
    /// Rings the doorbell: a `wait` about to sleep on its old value returns
    /// at once, and one asleep on it is woken.
    fn ring(&self) {
        self.doorbell.0.fetch_add(1, Ordering::Release);
        let _ = futex::wake(&self.doorbell.0, futex::Flags::empty(), u32::MAX);
    }
}

/// Where everything is in a segment for `ranks` ranks.
#[derive(Clone, Copy, Debug)]
struct Layout {
    ring_bytes: usize,
    /// Rings in the pool.
    pool: usize,
    blocks: usize,
    /// Rank `r`'s queue starts at `queues + r * queue_stride`: its control
    /// block, then its commit words at `QUEUE_COMMITS`, then its data at
    /// `queue_data`.
    queues: usize,
    queue_stride: usize,
    queue_data: usize,
    ring_ctls: usize,
    rings: usize,
    /// The part made at once (everything but the pool's ring data).
    fixed: usize,
    total: usize,
}

/// Where a queue's commit words start, after its control block.
const QUEUE_COMMITS: usize = 512;

impl Layout {
    fn new(ranks: usize, ring_bytes: usize, pool_bytes: usize) -> Layout {
        let pool = (pool_bytes / ring_bytes).min(ranks * ranks);
        let blocks = PAGE;
        let queues = (blocks + ranks * std::mem::size_of::<RankBlock>()).next_multiple_of(PAGE);
        let queue_data = (QUEUE_COMMITS + queue::commit_bytes(ring_bytes)).next_multiple_of(PAGE);
        let queue_stride = queue_data + ring_bytes;
        let ring_ctls = queues + ranks * queue_stride;
        let rings = (ring_ctls + pool * std::mem::size_of::<RingCtl>()).next_multiple_of(PAGE);
        let total = rings + pool * ring_bytes;
        Layout {
            ring_bytes,
            pool,
            blocks,
            queues,
            queue_stride,
            queue_data,
            ring_ctls,
            rings,
            fixed: rings,
            total,
        }
    }
}

/// A mapped segment; rings and blocks hold it alive.
#[derive(Debug)]
struct Segment {
    map: MmapRaw,
    layout: Layout,
    /// The segment's file (unlinked once every rank has attached): the
    /// pool's rings are allocated in it when taken.
    file: File,
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

    /// Data area of `len` bytes at `offset`.
    fn bytes(&self, offset: usize, len: usize) -> Data {
        assert!(offset + len <= self.map.len());
        let ptr = NonNull::new(self.map.as_mut_ptr().wrapping_add(offset)).expect("mapped");
        // SAFETY: the range is inside the mapping (checked), which the ring
        // or queue keeps alive through its `Arc<Segment>` or borrow; each
        // data area is used by the protocol of its ring or queue only.
        unsafe { Data::new(ptr, len) }
    }

    /// The data of the pool's ring `ring`.
    fn ring_data(&self, ring: usize) -> Data {
        self.bytes(self.layout.rings + ring * self.layout.ring_bytes, self.layout.ring_bytes)
    }

    fn ring_ctl(&self, ring: usize) -> usize {
        self.layout.ring_ctls + ring * std::mem::size_of::<RingCtl>()
    }

    fn queue_at(&self, rank: usize) -> usize {
        self.layout.queues + rank * self.layout.queue_stride
    }

    fn queue_commits(&self, rank: usize) -> &[Commit] {
        let offset = self.queue_at(rank) + QUEUE_COMMITS;
        let n = self.layout.ring_bytes / ring::ALIGN;
        assert!(offset + n * 4 <= self.map.len());
        let ptr = self.map.as_ptr().wrapping_add(offset);
        assert_eq!(ptr as usize % std::mem::align_of::<Commit>(), 0);
        // SAFETY: in bounds and aligned (checked); the mapping lives as long
        // as `self`; all-zero bytes are valid `AtomicU32`s, and the words
        // are only ever accessed atomically.
        unsafe { std::slice::from_raw_parts(ptr.cast::<Commit>(), n) }
    }

    /// Rank `rank`'s queue, borrowed (for a send).
    fn queue(&self, rank: usize) -> QueueAt<'_> {
        let at = self.queue_at(rank);
        QueueAt {
            ctl: self.at(at),
            commits: self.queue_commits(rank),
            data: self.bytes(at + self.layout.queue_data, self.layout.ring_bytes),
        }
    }

    /// Makes the memory of the pool's ring `ring` (taken by this rank).
    fn allocate_ring(&self, ring: usize) -> io::Result<()> {
        let offset = self.layout.rings + ring * self.layout.ring_bytes;
        rustix::fs::fallocate(
            &self.file,
            rustix::fs::FallocateFlags::empty(),
            offset as u64,
            self.layout.ring_bytes as u64,
        )
        .map_err(io::Error::from)
    }
}

/// A rank's queue, borrowed from the segment.
struct QueueAt<'a> {
    ctl: &'a QueueCtl,
    commits: &'a [Commit],
    data: Data,
}

impl QueueMem for QueueAt<'_> {
    type Data = Data;
    fn ctl(&self) -> &QueueCtl {
        self.ctl
    }
    fn commits(&self) -> &[Commit] {
        self.commits
    }
    fn data(&self) -> &Data {
        &self.data
    }
}

/// This rank's own queue, holding the segment alive.
#[derive(Debug)]
struct Inbox {
    segment: Arc<Segment>,
    rank: usize,
    data: Data,
}

impl QueueMem for Inbox {
    type Data = Data;
    fn ctl(&self) -> &QueueCtl {
        self.segment.at(self.segment.queue_at(self.rank))
    }
    fn commits(&self) -> &[Commit] {
        self.segment.queue_commits(self.rank)
    }
    fn data(&self) -> &Data {
        &self.data
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

/// How frames to one peer travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// Through the peer's queue; this many so far.
    Queue { sent: u32 },
    /// The pool's ring `ring` is this pair's, and its announcement waits
    /// for room in the peer's queue.
    Announcing { ring: u32 },
    /// On `producers[at]`.
    Ring { at: u32 },
    /// Through the queue for good (the pool was empty).
    QueueOnly,
}

/// One endpoint of a shared-memory job.
#[derive(Debug)]
pub struct Shm {
    me: PeerId,
    ranks: usize,
    caps: Capabilities,
    segment: Arc<Segment>,
    ring_after: u32,
    /// How frames to each peer travel.
    paths: Vec<Path>,
    /// The rings this rank sends on.
    producers: Vec<Producer<SegmentCtl>>,
    /// This rank's queue.
    inbox: QueueConsumer<Inbox>,
    /// The rings other ranks send to this rank on, and whose.
    rings_in: Vec<(u32, Consumer<SegmentCtl>)>,
    /// Rings announced in the last poll of the queue.
    announced: Vec<(u32, u32)>,
    pids: Vec<i32>,
    completions: VecDeque<(u64, Result<(), TransportError>)>,
    /// Peers seen to have left, not yet reported, with how far this rank's
    /// queue had been written when they were seen to leave (what they sent
    /// is before that): reported once it is read that far.
    leaving: Vec<Option<u64>>,
    lost: Vec<bool>,
    /// Peers that wrote what cannot be true: lost as soon as seen.
    corrupt: Vec<bool>,
    /// Peers whose process is gone (not a clean exit).
    dead: Vec<bool>,
    /// Since when the queue has waited on a reservation while a dead
    /// peer's report was pending, and where.
    stalled: Option<(Instant, u64)>,
    next_ring: usize,
    polls: u32,
    pids_checked: Instant,
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
        let remote = remote_iovec(addr, done, rest.len());
        // SAFETY: `local` describes the writable slice `rest`, which lives
        // across the call; `remote` names memory of another process, which
        // the kernel checks (EFAULT) and which is never dereferenced here.
        let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
        done += moved(n)?;
    }
    Ok(())
}

/// Writes `src` at `addr` in process `pid`.
fn write_remote(pid: i32, addr: u64, src: &[u8]) -> io::Result<()> {
    let mut done = 0;
    while done < src.len() {
        let rest = &src[done..];
        let local =
            libc::iovec { iov_base: rest.as_ptr() as *mut libc::c_void, iov_len: rest.len() };
        let remote = remote_iovec(addr, done, rest.len());
        // SAFETY: `local` describes the slice `rest`, which lives across the
        // call and which the kernel only reads; `remote` names memory of
        // another process, which the kernel checks (EFAULT) and which is
        // never dereferenced here.
        let n = unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) };
        done += moved(n)?;
    }
    Ok(())
}

/// The `len` bytes at `addr + done` of another process.
fn remote_iovec(addr: u64, done: usize, len: usize) -> libc::iovec {
    libc::iovec { iov_base: (addr as usize).wrapping_add(done) as *mut libc::c_void, iov_len: len }
}

/// The bytes a `process_vm_readv` or `process_vm_writev` moved.
fn moved(n: isize) -> io::Result<usize> {
    match n {
        n if n < 0 => Err(io::Error::last_os_error()),
        0 => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "moved nothing")),
        n => Ok(n as usize),
    }
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
        let layout = Layout::new(ranks, ring_bytes, config.pool_bytes);
        let file = if me == 0 {
            let path = format!(
                "{}{}",
                segment_prefix(exchange.job_id()),
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
            // The whole size, sparse; the fixed part made now (a full
            // /dev/shm is an error here, not a SIGBUS later). The pool's
            // rings are made when taken.
            let made = file
                .set_len(layout.total as u64)
                .map_err(|e| rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO));
            if let Err(e) = made.and_then(|()| {
                rustix::fs::fallocate(
                    &file,
                    rustix::fs::FallocateFlags::empty(),
                    0,
                    layout.fixed as u64,
                )
            }) {
                let _ = std::fs::remove_file(&path);
                return Err(setup(if e == rustix::io::Errno::NOSPC {
                    format!(
                        "/dev/shm is full: the shared-memory segment for {ranks} ranks needs {} bytes \
                         ({:.1} MiB, queues of {} KiB); free space in /dev/shm or lower HPCOMM_SHM_RING_BYTES",
                        layout.fixed,
                        layout.fixed as f64 / (1 << 20) as f64,
                        ring_bytes >> 10
                    )
                } else {
                    format!(
                        "cannot size the shared-memory segment {path} to {} bytes: {e}",
                        layout.fixed
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
        let file: File = file;
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
        let segment = Arc::new(Segment { map, layout, file });
        let header = segment.header();
        if me == 0 {
            header.version.store(VERSION, Ordering::Relaxed);
            header.ranks.store(ranks as u32, Ordering::Relaxed);
            header.ring_bytes.store(ring_bytes as u64, Ordering::Relaxed);
            header.pool.store(layout.pool as u64, Ordering::Relaxed);
            header.magic.store(MAGIC, Ordering::Release);
            // Only now may the others attach.
            exchange.put("shm.path", path.as_bytes()).map_err(setup)?;
            exchange.fence().map_err(setup)?;
        } else if header.magic.load(Ordering::Acquire) != MAGIC
            || header.version.load(Ordering::Relaxed) != VERSION
            || header.ranks.load(Ordering::Relaxed) != ranks as u32
            || header.ring_bytes.load(Ordering::Relaxed) != ring_bytes as u64
            || header.pool.load(Ordering::Relaxed) != layout.pool as u64
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
        // Said once per process (a job's further endpoints find the same).
        static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !rma_read && me == 0 && !SAID.swap(true, Ordering::Relaxed) {
            if config.cma {
                tracing::info!(
                    "process_vm_readv is not permitted between the ranks (ptrace scope): \
                     large messages use the pipelined copy through the segment"
                );
            } else {
                tracing::info!("single-copy reads disabled: large messages use the pipelined copy");
            }
        }

        let pids =
            (0..ranks).map(|r| segment.block(r).pid.load(Ordering::Acquire) as i32).collect();
        let inbox_data = segment.bytes(segment.queue_at(me) + layout.queue_data, layout.ring_bytes);
        let inbox =
            QueueConsumer::new(Inbox { segment: segment.clone(), rank: me, data: inbox_data });
        // A record (queue or ring) may take at most half the ring; a
        // quarter leaves room for two in flight.
        let max_payload = ring_bytes / 4 - RECORD_HEADER - MAX_HEADER;
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
            reads_from_outside: true,
            rma_write: rma_read,
            ordered: true,
            latency_hint: Duration::from_nanos(200),
            spin_pause: true,
            yield_hint: Duration::from_millis(10),
            bandwidth_hint: 10_000_000_000,
        };
        let first =
            if config.ring_after == u32::MAX { Path::QueueOnly } else { Path::Queue { sent: 0 } };
        Ok(Shm {
            me: PeerId(me as u32),
            ranks,
            caps,
            segment,
            ring_after: config.ring_after,
            paths: vec![first; ranks],
            producers: Vec::new(),
            inbox,
            rings_in: Vec::new(),
            announced: Vec::new(),
            pids,
            completions: VecDeque::new(),
            leaving: vec![None; ranks],
            lost: vec![false; ranks],
            corrupt: vec![false; ranks],
            dead: vec![false; ranks],
            stalled: None,
            next_ring: 0,
            polls: 0,
            pids_checked: Instant::now(),
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
    /// in the queue or a ring), without waiting.
    pub fn has_work(&self) -> bool {
        !self.completions.is_empty() || self.has_frames()
    }

    fn has_frames(&self) -> bool {
        self.inbox.has_data() || self.rings_in.iter().any(|(_, c)| c.has_data())
    }

    /// Bytes of the segment's pool rings taken so far, and in all (for
    /// tests and `hpcomm info`): `(taken, pool)` in rings.
    pub fn pool_use(&self) -> (usize, usize) {
        let taken = self.segment.header().rings_taken.load(Ordering::Relaxed) as usize;
        (taken.min(self.segment.layout.pool), self.segment.layout.pool)
    }

    /// The rings this rank sends on (for tests).
    pub fn rings_out(&self) -> usize {
        self.producers.len()
    }

    /// Takes a ring from the pool for frames to `dst`: its memory is made,
    /// and its announcement waits in `paths[dst]`. `QueueOnly` when the
    /// pool is empty or its memory cannot be had.
    fn take_ring(&mut self, dst: usize) -> Path {
        let layout = self.segment.layout;
        let ring = self.segment.header().rings_taken.fetch_add(1, Ordering::Relaxed) as usize;
        if ring >= layout.pool {
            return Path::QueueOnly;
        }
        if let Err(e) = self.segment.allocate_ring(ring) {
            tracing::debug!("shm: no memory for a ring to rank {dst} ({e}): it stays on the queue");
            return Path::QueueOnly;
        }
        Path::Announcing { ring: ring as u32 }
    }

    /// Pushes one record into `dst`'s queue.
    fn push_queue(
        &mut self,
        dst: usize,
        kind: u16,
        header: &[u8],
        payload: &[u8],
    ) -> Result<(), TransportError> {
        let me = self.me.index() as u32;
        match queue::push(&self.segment.queue(dst), me, kind, header, payload) {
            Ok(true) => Ok(()),
            Ok(false) => Err(TransportError::WouldBlock),
            Err(Corrupt(why)) => {
                self.ring_broken(dst, &format!("its queue ({why})"));
                Err(TransportError::PeerLost(PeerId(dst as u32)))
            }
        }
    }

    /// Moves frames to `dst` onto a ring once the pair has sent enough
    /// through the queue: takes one, announces it (in order, behind every
    /// frame queued before), and from then on sends on it.
    fn promote(&mut self, dst: usize) -> Result<(), TransportError> {
        loop {
            match self.paths[dst] {
                Path::Queue { sent } if sent >= self.ring_after => {
                    self.paths[dst] = self.take_ring(dst);
                }
                Path::Announcing { ring } => {
                    let mut note = [0u8; 8];
                    note[0] = CONTROL_RING;
                    note[4..8].copy_from_slice(&ring.to_le_bytes());
                    self.push_queue(dst, KIND_CONTROL, &note, &[])?;
                    let ring = ring as usize;
                    let ctl = SegmentCtl {
                        segment: self.segment.clone(),
                        offset: self.segment.ring_ctl(ring),
                    };
                    let producer = Producer::new(ctl, self.segment.ring_data(ring));
                    self.paths[dst] = Path::Ring { at: self.producers.len() as u32 };
                    self.producers.push(producer);
                    return Ok(());
                }
                _ => return Ok(()),
            }
        }
    }

    /// Wakes `dst` at once if it is visibly asleep; otherwise remembers to
    /// check again, with the store-load fence that makes the check exact, at
    /// the next `poll` or `wait` (once per round, not once per frame).
    #[inline]
    fn ring_doorbell(&mut self, dst: usize) {
        if !self.wake(dst) && !self.doorbells[dst] {
            self.doorbells[dst] = true;
            self.doorbells_pending += 1;
        }
    }

    /// Wakes `dst` if no one has since it fell asleep: the first waker
    /// takes its `sleeping` mark, so a burst of frames to a sleeper costs
    /// one system call, not one per frame while the sleeper's core comes
    /// back (on a VM, an inter-processor interrupt of tens of µs: 118 k
    /// wakes for 134 k rendezvous messages before this, see
    /// docs/performance.md). A frame whose sender finds the mark already
    /// taken is seen by the sleeper's next poll, or by the check in its
    /// next `wait` (the fences there and in `ring_pending_doorbells`).
    fn wake(&self, dst: usize) -> bool {
        let block = self.segment.block(dst);
        // A plain load first: the swap would take the line from its owner
        // on every round in which the peer is awake.
        if block.sleeping.0.load(Ordering::Relaxed) == 0
            || block.sleeping.0.swap(0, Ordering::AcqRel) == 0
        {
            return false;
        }
        block.ring();
        true
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
            if std::mem::take(&mut self.doorbells[dst]) {
                self.wake(dst);
            }
        }
        self.doorbells_pending = 0;
    }

    /// Rank `src` wrote what cannot be true (in its ring, or in the
    /// indices of a queue): the peer is lost (the next poll reports it),
    /// and its ring is never read again.
    #[cold]
    fn ring_broken(&mut self, src: usize, why: &str) {
        if !self.corrupt[src] {
            tracing::warn!("shm: rank {src} wrote {why}; treating it as lost");
        }
        self.corrupt[src] = true;
        self.leaving[src] = Some(0);
        for (from, ring) in &mut self.rings_in {
            if *from as usize == src {
                ring.close();
            }
        }
    }

    /// This rank's queue holds what cannot be true, or waits for ever on a
    /// rank that died while writing to it: it is given up (senders are
    /// told), and every peer not yet lost is lost with it — nobody can
    /// tell whose frames are missing.
    #[cold]
    fn inbox_broken(&mut self, why: &str) {
        tracing::warn!("shm: this rank's queue {why}; every peer is treated as lost");
        self.inbox.close();
        for r in 0..self.ranks {
            if !self.lost[r] && r != self.me.index() {
                self.corrupt[r] = true;
                self.leaving[r] = Some(0);
            }
        }
    }

    /// Notes peers that have left (cleanly, or whose process is gone).
    fn check_peers(&mut self, with_pids: bool) {
        let (_, written) = self.inbox.positions();
        for r in 0..self.ranks {
            if self.lost[r] || self.leaving[r].is_some() || r == self.me.index() {
                continue;
            }
            let departed = self.segment.block(r).state.load(Ordering::Acquire) == STATE_DEPARTED;
            let dead = with_pids
                && rustix::process::Pid::from_raw(self.pids[r]).is_some_and(|pid| {
                    rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH)
                });
            if departed || dead {
                // All it sent is in the queue below what is written now.
                self.leaving[r] = Some(written);
                self.dead[r] = dead && !departed;
            }
        }
    }

    /// Reads this rank's queue: frames to `sink`, ring announcements kept.
    fn poll_inbox(&mut self, sink: &mut dyn FnMut(Event<'_>)) -> usize {
        let ranks = self.ranks as u32;
        let mut bad = None;
        let announced = &mut self.announced;
        let polled = self.inbox.poll(POLL_BATCH, |src, kind, header, payload| {
            if src >= ranks {
                bad.get_or_insert(format!("holds a record from rank {src}"));
                return;
            }
            if kind == KIND_FRAME {
                sink(Event::Frame { src: PeerId(src), header, payload });
            } else if header.len() == 8 && header[0] == CONTROL_RING {
                let ring = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
                announced.push((src, ring));
            } else {
                bad.get_or_insert(format!("holds an unknown control record from rank {src}"));
            }
        });
        let frames = match polled {
            Ok(n) => n,
            Err(Corrupt(why)) => {
                bad.get_or_insert(format!("holds {why}"));
                0
            }
        };
        if let Some(why) = bad {
            self.inbox_broken(&why);
        }
        for i in 0..self.announced.len() {
            let (src, ring) = self.announced[i];
            let taken = self.rings_in.iter().any(|&(from, _)| from == src);
            if ring as usize >= self.segment.layout.pool || taken {
                self.ring_broken(
                    src as usize,
                    &format!("announced ring {ring}, which cannot be its"),
                );
                continue;
            }
            let ring = ring as usize;
            let ctl =
                SegmentCtl { segment: self.segment.clone(), offset: self.segment.ring_ctl(ring) };
            self.rings_in.push((src, Consumer::new(ctl, self.segment.ring_data(ring))));
        }
        self.announced.clear();
        frames
    }

    /// Reports the peers that left once everything they sent is read; gives
    /// the queue up if it waits on a rank that died while writing to it.
    fn report_departures(&mut self, sink: &mut dyn FnMut(Event<'_>)) -> usize {
        let (read, _) = self.inbox.positions();
        let mut events = 0;
        let mut blocked_by_dead = false;
        for src in 0..self.ranks {
            let Some(mark) = self.leaving[src] else { continue };
            if self.lost[src] {
                continue;
            }
            if read < mark && !self.corrupt[src] {
                blocked_by_dead |= self.dead[src];
                continue;
            }
            // Its ring, if it had one, is drained first.
            let peer = PeerId(src as u32);
            for (from, ring) in &mut self.rings_in {
                if *from as usize == src {
                    let _ = ring.poll(usize::MAX, |header, payload| {
                        sink(Event::Frame { src: peer, header, payload })
                    });
                    ring.close();
                }
            }
            self.lost[src] = true;
            let cause = if self.corrupt[src] { LossCause::Protocol } else { LossCause::Ended };
            sink(Event::PeerLost { peer, cause });
            events += 1;
        }
        if blocked_by_dead && self.inbox.waiting() {
            let (read, _) = self.inbox.positions();
            match self.stalled {
                Some((since, at)) if at == read => {
                    if since.elapsed() > STALL_LIMIT {
                        self.stalled = None;
                        self.inbox_broken("waits on a record a rank that died never finished");
                    }
                }
                _ => self.stalled = Some((Instant::now(), read)),
            }
        } else {
            self.stalled = None;
        }
        events
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        self.segment.block(self.me.index()).state.store(STATE_DEPARTED, Ordering::Release);
        for r in 0..self.ranks {
            if r != self.me.index() {
                self.segment.block(r).ring();
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
        if self.lost[d] || self.leaving[d].is_some() {
            return Err(TransportError::PeerLost(dst));
        }
        loop {
            match self.paths[d] {
                Path::Ring { at } => match self.producers[at as usize].try_push(header, payload) {
                    Ok(true) => break,
                    Ok(false) => return Err(TransportError::WouldBlock),
                    Err(Corrupt(why)) => {
                        self.ring_broken(d, &format!("moved its ring's head ({why})"));
                        return Err(TransportError::PeerLost(dst));
                    }
                },
                Path::Queue { sent } if sent < self.ring_after => {
                    self.push_queue(d, KIND_FRAME, header, payload)?;
                    self.paths[d] = Path::Queue { sent: sent + 1 };
                    break;
                }
                Path::QueueOnly => {
                    self.push_queue(d, KIND_FRAME, header, payload)?;
                    break;
                }
                Path::Queue { .. } | Path::Announcing { .. } => self.promote(d)?,
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
                Ok(()) => sink(Event::RmaDone { token }),
                Err(error) => sink(Event::RmaFailed { token, error }),
            }
            events += 1;
        }
        self.polls = self.polls.wrapping_add(1);
        if self.polls % 256 == 0 {
            self.check_peers(false);
        }
        events += self.poll_inbox(sink);
        let n = self.rings_in.len();
        for k in 0..n {
            let i = (self.next_ring + k) % n;
            let (src, ring) = &mut self.rings_in[i];
            let peer = PeerId(*src);
            let polled = ring.poll(POLL_BATCH, |header, payload| {
                sink(Event::Frame { src: peer, header, payload })
            });
            match polled {
                Ok(n) => events += n,
                Err(Corrupt(why)) => self.ring_broken(peer.index(), &why),
            }
        }
        if n > 0 {
            self.next_ring = (self.next_ring + 1) % n;
        }
        if self.leaving.iter().any(Option::is_some) {
            events += self.report_departures(sink);
        }
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
        if !self.has_frames() {
            let ts = futex::Timespec {
                tv_sec: timeout.as_secs() as _,
                tv_nsec: timeout.subsec_nanos() as _,
            };
            let _ = futex::wait(&block.doorbell.0, futex::Flags::empty(), seen, Some(&ts));
        }
        block.sleeping.0.store(0, Ordering::Relaxed);
        // Whether peers' processes still exist: a system call per peer, so
        // not on every wait.
        if self.pids_checked.elapsed() >= PID_CHECK {
            self.pids_checked = Instant::now();
            self.check_peers(true);
        } else {
            self.check_peers(false);
        }
    }

    fn expose(&mut self, regions: &Regions, region: RegionId) -> Result<RemoteKey, TransportError> {
        if !self.caps.rma_read {
            return Err(TransportError::Unsupported("shm (single-copy reads not permitted)"));
        }
        let (ptr, _) = regions.exposable(region, self.caps.reads_from_outside)?;
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

    fn start_write(
        &mut self,
        regions: &Regions,
        src: RegionId,
        src_offset: usize,
        dst: PeerId,
        key: RemoteKey,
        dst_offset: usize,
        len: usize,
        token: u64,
    ) -> Result<(), TransportError> {
        if !self.caps.rma_write {
            return Err(TransportError::Unsupported("shm (single-copy writes not permitted)"));
        }
        if dst.index() >= self.ranks {
            return Err(TransportError::InvalidPeer { peer: dst, size: self.ranks });
        }
        // As for reads: the process is the one this rank knows the peer by,
        // so that a key can only name memory of the peer that sent it.
        let pid = self.pids[dst.index()];
        let range = src_offset..src_offset.checked_add(len).ok_or(TransportError::InvalidRegion)?;
        let result = regions
            .with(src, |s| match s.get(range) {
                Some(s) => {
                    write_remote(pid, key.addr.wrapping_add(dst_offset as u64), s).map_err(|e| {
                        tracing::debug!("process_vm_writev to rank {dst}: {e}");
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of frames to a sleeping rank rings it once: the first sender
    /// takes its mark, the others leave it be, and the sleeper still finds
    /// every frame — woken by the first, or at its next wait's check.
    #[test]
    fn a_sleeper_is_woken_once_per_sleep() {
        let mut eps = Shm::local_job(2, &ShmConfig::default()).expect("shm job");
        let (sender, sleeper) = eps.split_at_mut(1);
        let (sender, sleeper) = (&mut sender[0], &mut sleeper[0]);
        let segment = sender.segment.clone();
        let block = segment.block(1);
        // Rank 1 as `wait` leaves it just before the futex call.
        block.sleeping.0.store(1, Ordering::SeqCst);
        let rung = block.doorbell.0.load(Ordering::SeqCst);
        for i in 0..5u8 {
            sender.try_send(PeerId(1), &[i; 8], &[]).expect("room for five frames");
        }
        sender.ring_pending_doorbells();
        assert_eq!(block.doorbell.0.load(Ordering::SeqCst), rung + 1, "one ring for five frames");
        assert_eq!(block.sleeping.0.load(Ordering::SeqCst), 0, "the waker takes the mark");
        // Asleep again: the next frame rings again.
        block.sleeping.0.store(1, Ordering::SeqCst);
        sender.try_send(PeerId(1), &[5; 8], &[]).expect("room");
        assert_eq!(block.doorbell.0.load(Ordering::SeqCst), rung + 2);
        block.sleeping.0.store(0, Ordering::SeqCst);
        // Every frame arrives, in order, and a wait with frames pending
        // returns at once.
        let started = Instant::now();
        sleeper.wait(Duration::from_secs(5));
        assert!(started.elapsed() < Duration::from_secs(2), "waited with frames pending");
        let regions = Regions::new();
        let mut got = Vec::new();
        while got.len() < 6 && started.elapsed() < Duration::from_secs(10) {
            sleeper
                .poll(&regions, &mut |ev| {
                    if let Event::Frame { header, .. } = ev {
                        got.push(header[0]);
                    }
                })
                .expect("poll");
        }
        assert_eq!(got, [0, 1, 2, 3, 4, 5]);
    }

    /// A rank really asleep in `wait` is woken by a frame long before its
    /// timeout.
    #[test]
    fn a_frame_wakes_a_rank_asleep_in_wait() {
        let mut eps = Shm::local_job(2, &ShmConfig::default()).expect("shm job");
        let mut sleeper = eps.pop().expect("rank 1");
        let mut sender = eps.pop().expect("rank 0");
        let started = Instant::now();
        let waiter = std::thread::spawn(move || {
            sleeper.wait(Duration::from_secs(20));
            started.elapsed()
        });
        let segment = sender.segment.clone();
        let block = segment.block(1);
        while block.sleeping.0.load(Ordering::SeqCst) == 0 {
            assert!(started.elapsed() < Duration::from_secs(10), "rank 1 never slept");
            std::thread::sleep(Duration::from_millis(1));
        }
        sender.try_send(PeerId(1), &[1; 8], &[]).expect("room");
        let slept = waiter.join().expect("waiter");
        assert!(slept < Duration::from_secs(10), "woken after {slept:?}");
    }

    /// The segment grows with the ranks, not their pairs: at 512 ranks its
    /// fixed part (blocks and queues) is under 40 MiB, and the pool of
    /// rings, made only as pairs take them, is bounded by its budget.
    #[test]
    fn segments_are_linear_in_the_ranks() {
        let budget = 64 << 20;
        let small = Layout::new(8, 256 << 10, budget);
        assert_eq!(small.pool, 64, "every pair of a small job can have a ring");
        let big = Layout::new(512, 64 << 10, budget);
        assert!(big.fixed < 40 << 20, "fixed part {} bytes", big.fixed);
        assert_eq!(big.pool, budget / (64 << 10));
        assert!(big.total - big.fixed <= budget);
        // Doubling the ranks doubles the fixed part, give or take a page
        // per rank.
        let bigger = Layout::new(1024, 64 << 10, budget);
        assert!(bigger.fixed <= 2 * big.fixed + 1024 * PAGE);
    }
}
