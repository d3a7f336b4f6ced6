//! The loopback backend: the ranks of a job are threads of one process.
//!
//! Each endpoint owns a bounded crossbeam channel as its inbox; a frame is a
//! copy of header and payload. A full inbox is back-pressure
//! ([`TransportError::WouldBlock`]). Reads of a peer's buffer go through a
//! *window*: the exposing endpoint publishes the buffer's extent under a
//! mutex, readers copy under that mutex, and revocation (when the region
//! leaves its table) clears it under the same mutex — so a reader can never
//! touch memory after its owner's scope ended, whatever the runtime does.
//!
//! Loopback is the reference backend: simple, obviously correct, and used by
//! `hpcomm::threads` so that users can test parallel code under `cargo test`.
//! Its configuration can switch reads off, to exercise the runtime's
//! pipelined rendezvous as a backend without RMA would.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::exchange::Exchange;

use crate::{
    Capabilities, Event, LossCause, PeerId, RegionId, Regions, RemoteKey, Transport, TransportError,
};

/// Largest frame header the loopback backend carries.
pub const MAX_HEADER: usize = 64;

/// Settings of a loopback fabric.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopbackConfig {
    /// Frames each inbox holds before senders see back-pressure.
    pub capacity: usize,
    /// Whether peers may read exposed buffers (single-copy rendezvous).
    pub rma_read: bool,
    /// Largest frame payload.
    pub max_payload: usize,
    /// Eager limit offered to the runtime.
    pub eager_limit: usize,
    /// Inline limit offered to the runtime.
    pub inline_limit: usize,
}

impl Default for LoopbackConfig {
    fn default() -> Self {
        LoopbackConfig {
            capacity: 1024,
            rma_read: true,
            max_payload: 64 * 1024,
            eager_limit: 16 * 1024,
            inline_limit: 256,
        }
    }
}

struct Frame {
    src: PeerId,
    header_len: u8,
    header: [u8; MAX_HEADER],
    payload: Vec<u8>,
}

/// State shared by the endpoints of one fabric.
struct Fabric {
    alive: Vec<AtomicBool>,
    windows: Mutex<HashMap<u64, Arc<Window>>>,
    next_window: AtomicU64,
}

/// A buffer one endpoint exposes to the others.
#[derive(Debug)]
pub(crate) struct Window {
    extent: Mutex<Option<Extent>>,
}

#[derive(Debug)]
struct Extent {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: an `Extent` is only dereferenced by `Loopback::start_read` while the
// window's mutex is held, and its owner clears it under the same mutex before
// the memory can be released (`WindowGuard::revoke`, called when the region
// leaves its table). The pointed-to bytes are only read.
unsafe impl Send for Extent {}

/// The exposing side's handle on a window; revoking it ends every read.
#[derive(Debug)]
pub(crate) struct WindowGuard {
    fabric: Arc<Fabric>,
    key: u64,
    window: Arc<Window>,
}

impl fmt::Debug for Fabric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fabric").field("size", &self.alive.len()).finish()
    }
}

impl crate::region::Exposed for WindowGuard {
    fn revoke(self: Box<Self>) {
        lock(&self.fabric.windows).remove(&self.key);
        // Waits for a read in progress, if any, then forbids new ones.
        *lock(&self.window.extent) = None;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One endpoint of a loopback fabric.
pub struct Loopback {
    me: PeerId,
    caps: Capabilities,
    fabric: Arc<Fabric>,
    inbox: Receiver<Frame>,
    peers: Vec<Sender<Frame>>,
    /// Frames taken off the inbox by `wait`, delivered by the next `poll`.
    stash: VecDeque<Frame>,
    completions: VecDeque<(u64, Result<(), TransportError>)>,
    lost_reported: Vec<bool>,
}

impl fmt::Debug for Loopback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loopback")
            .field("me", &self.me)
            .field("size", &self.peers.len())
            .finish_non_exhaustive()
    }
}

/// Frames delivered per `poll` at most, so that one busy sender cannot keep
/// a receiver inside `poll` forever.
const POLL_BATCH: usize = 256;

/// Fabrics made by [`Loopback::open`]'s rank 0 whose endpoints the other
/// threads have not all taken yet, by name.
static OPENING: Mutex<Vec<(String, Vec<Option<Loopback>>)>> = Mutex::new(Vec::new());

/// Numbers the fabrics [`Loopback::open`] makes in this process.
static NEXT_FABRIC: AtomicU64 = AtomicU64::new(0);

impl Loopback {
    /// Joins a new fabric of `ranks` endpoints as rank `me`, over a job's
    /// exchange: rank 0 makes the fabric and publishes its name, every rank
    /// takes its endpoint. The ranks must be threads of this process; a
    /// rank of another process finds no such fabric, an error.
    pub fn open(
        me: usize,
        ranks: usize,
        exchange: &mut dyn Exchange,
        config: &LoopbackConfig,
    ) -> Result<Loopback, TransportError> {
        let failed = |e: String| TransportError::Setup(format!("loopback: {e}"));
        if me == 0 {
            let name = format!(
                "{}/{}/{}",
                exchange.job_id(),
                std::process::id(),
                NEXT_FABRIC.fetch_add(1, Ordering::Relaxed)
            );
            let fabric = Loopback::fabric(ranks, config.clone()).into_iter().map(Some).collect();
            lock(&OPENING).push((name.clone(), fabric));
            exchange.put("loopback-fabric", name.as_bytes()).map_err(failed)?;
        }
        exchange.fence().map_err(failed)?;
        let name = exchange.get("loopback-fabric").map_err(failed)?;
        let mut opening = lock(&OPENING);
        let at = opening.iter().position(|(n, _)| n.as_bytes() == name).ok_or_else(|| {
            failed("rank 0's fabric is not in this process (loopback joins the threads of one process)".into())
        })?;
        let endpoint = opening[at].1.get_mut(me).and_then(Option::take);
        if opening[at].1.iter().all(Option::is_none) {
            opening.swap_remove(at);
        }
        endpoint.ok_or_else(|| failed(format!("no endpoint {me} of {ranks}, or taken twice")))
    }

    /// Creates the `n` connected endpoints of a new fabric, in rank order.
    pub fn fabric(n: usize, config: LoopbackConfig) -> Vec<Loopback> {
        let caps = Capabilities {
            name: "loopback",
            max_header: MAX_HEADER,
            max_payload: config.max_payload,
            inline_limit: config.inline_limit.min(config.eager_limit),
            eager_limit: config.eager_limit.min(config.max_payload),
            rma_read: config.rma_read,
            max_read: if config.rma_read { 1 << 30 } else { 0 },
            revocable: true,
            reads_from_outside: false,
            rma_write: false,
            ordered: true,
            latency_hint: Duration::from_nanos(300),
            spin_pause: true,
            yield_hint: Duration::from_millis(10),
            bandwidth_hint: 8_000_000_000,
        };
        let fabric = Arc::new(Fabric {
            alive: (0..n).map(|_| AtomicBool::new(true)).collect(),
            windows: Mutex::new(HashMap::new()),
            next_window: AtomicU64::new(1),
        });
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..n).map(|_| crossbeam_channel::bounded::<Frame>(config.capacity.max(1))).unzip();
        receivers
            .into_iter()
            .enumerate()
            .map(|(i, inbox)| Loopback {
                me: PeerId(i as u32),
                caps: caps.clone(),
                fabric: fabric.clone(),
                inbox,
                peers: senders.clone(),
                stash: VecDeque::new(),
                completions: VecDeque::new(),
                lost_reported: vec![false; n],
            })
            .collect()
    }

    fn check_peer(&self, peer: PeerId) -> Result<(), TransportError> {
        if peer.index() >= self.peers.len() {
            return Err(TransportError::InvalidPeer { peer, size: self.peers.len() });
        }
        if !self.fabric.alive[peer.index()].load(Ordering::Acquire) {
            return Err(TransportError::PeerLost(peer));
        }
        Ok(())
    }

    fn read(
        &self,
        regions: &Regions,
        key: RemoteKey,
        src_offset: usize,
        dst: RegionId,
        dst_offset: usize,
        len: usize,
    ) -> Result<(), TransportError> {
        let window = lock(&self.fabric.windows)
            .get(&key.key)
            .cloned()
            .ok_or(TransportError::InvalidRegion)?;
        let extent = lock(&window.extent);
        let extent = extent.as_ref().ok_or(TransportError::InvalidRegion)?;
        let end = src_offset.checked_add(len).ok_or(TransportError::InvalidRegion)?;
        if end > extent.len {
            return Err(TransportError::InvalidRegion);
        }
        // SAFETY: the extent is published only while its region is live in
        // the owner's table (see `Extent`), and we hold the window's mutex, so
        // the owner cannot revoke it and release the memory during this copy.
        // The range was checked against the extent just above.
        let src = unsafe {
            std::slice::from_raw_parts(extent.ptr.as_ptr().add(src_offset).cast_const(), len)
        };
        regions
            .with_mut(dst, |d| match d.get_mut(dst_offset..dst_offset + len) {
                Some(d) => {
                    d.copy_from_slice(src);
                    Ok(())
                }
                None => Err(TransportError::InvalidRegion),
            })
            .unwrap_or(Err(TransportError::InvalidRegion))
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        self.fabric.alive[self.me.index()].store(false, Ordering::Release);
    }
}

impl Transport for Loopback {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn peer_id(&self) -> PeerId {
        self.me
    }

    fn peer_count(&self) -> usize {
        self.peers.len()
    }

    fn try_send(
        &mut self,
        dst: PeerId,
        header: &[u8],
        payload: &[u8],
    ) -> Result<(), TransportError> {
        self.caps.check_frame(header, payload)?;
        self.check_peer(dst)?;
        let channel = &self.peers[dst.index()];
        if channel.is_full() {
            return Err(TransportError::WouldBlock);
        }
        let mut frame = Frame {
            src: self.me,
            header_len: header.len() as u8,
            header: [0; MAX_HEADER],
            payload: payload.to_vec(),
        };
        frame.header[..header.len()].copy_from_slice(header);
        match channel.try_send(frame) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(TransportError::WouldBlock),
            Err(TrySendError::Disconnected(_)) => Err(TransportError::PeerLost(dst)),
        }
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
        // Look at liveness before draining: a peer's frames are all in the
        // inbox before it is marked dead, so after this drain none is left.
        let newly_lost: Vec<usize> = (0..self.peers.len())
            .filter(|&p| !self.lost_reported[p] && !self.fabric.alive[p].load(Ordering::Acquire))
            .collect();
        let mut delivered = 0;
        while delivered < POLL_BATCH {
            let frame = match self.stash.pop_front() {
                Some(frame) => frame,
                None => match self.inbox.try_recv() {
                    Ok(frame) => frame,
                    Err(_) => break,
                },
            };
            sink(Event::Frame {
                src: frame.src,
                header: &frame.header[..frame.header_len as usize],
                payload: &frame.payload,
            });
            delivered += 1;
        }
        events += delivered;
        if delivered < POLL_BATCH {
            for p in newly_lost {
                self.lost_reported[p] = true;
                sink(Event::PeerLost { peer: PeerId(p as u32), cause: LossCause::Ended });
                events += 1;
            }
        }
        Ok(events)
    }

    fn wait(&mut self, timeout: Duration) {
        if !self.stash.is_empty() || !self.completions.is_empty() {
            return;
        }
        match self.inbox.recv_timeout(timeout) {
            Ok(frame) => self.stash.push_back(frame),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
        }
    }

    fn expose(&mut self, regions: &Regions, region: RegionId) -> Result<RemoteKey, TransportError> {
        if !self.caps.rma_read {
            return Err(TransportError::Unsupported("loopback (reads disabled)"));
        }
        let (ptr, len) = regions.exposable(region, self.caps.reads_from_outside)?;
        let key = self.fabric.next_window.fetch_add(1, Ordering::Relaxed);
        let window = Arc::new(Window { extent: Mutex::new(Some(Extent { ptr, len })) });
        lock(&self.fabric.windows).insert(key, window.clone());
        let guard = WindowGuard { fabric: self.fabric.clone(), key, window };
        match regions.attach(region, Box::new(guard)) {
            Ok(()) => Ok(RemoteKey { addr: 0, key }),
            Err(exposure) => {
                // The region vanished between the two calls: undo.
                exposure.revoke();
                Err(TransportError::InvalidRegion)
            }
        }
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
            return Err(TransportError::Unsupported("loopback (reads disabled)"));
        }
        if src.index() >= self.peers.len() {
            return Err(TransportError::InvalidPeer { peer: src, size: self.peers.len() });
        }
        // The copy happens now; its completion is reported by the next poll,
        // as an asynchronous backend (libfabric) would.
        let result = self.read(regions, key, src_offset, dst, dst_offset, len);
        self.completions.push_back((token, result));
        Ok(())
    }
}
