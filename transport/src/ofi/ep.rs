//! The endpoint (`fi_endpoint`, `FI_EP_RDM`) with everything its
//! operations touch: its address vector and completion queue, the
//! registered send and receive buffers, one context per operation slot,
//! and the regions its reads land in.
//!
//! The endpoint owns the memory the provider writes to or reads from
//! asynchronously and tracks which slot is in flight, so that its methods
//! are safe: a receive buffer is readable only while it is not posted, a
//! send buffer writable only while no send uses it, and a read pins its
//! destination region until its completion has been seen. Closing the
//! endpoint comes before freeing any of that memory (`Drop`, then the
//! fields in order).

use std::ffi::{c_int, c_void};
use std::ptr::NonNull;
use std::sync::Arc;

use super::api::{self, Info};
use super::av::AddressVector;
use super::cq::{self, CompletionQueue};
use super::fabric::{close_logged, need, Domain};
use super::mr::{register, MemoryRegion, Slab};
use super::sys::*;
use crate::{RegionId, Regions, TransportError};

type SendFn = unsafe extern "C" fn(
    *mut fid_ep,
    *const c_void,
    usize,
    *mut c_void,
    fi_addr_t,
    *mut c_void,
) -> isize;
type RecvFn = unsafe extern "C" fn(
    *mut fid_ep,
    *mut c_void,
    usize,
    *mut c_void,
    fi_addr_t,
    *mut c_void,
) -> isize;
type InjectFn = unsafe extern "C" fn(*mut fid_ep, *const c_void, usize, fi_addr_t) -> isize;
type ReadFn = unsafe extern "C" fn(
    *mut fid_ep,
    *mut c_void,
    usize,
    *mut c_void,
    fi_addr_t,
    u64,
    u64,
    *mut c_void,
) -> isize;
type WriteMsgFn = unsafe extern "C" fn(*mut fid_ep, *const fi_msg_rma, u64) -> isize;
type GetOptFn = unsafe extern "C" fn(*mut fid, c_int, c_int, *mut c_void, *mut usize) -> c_int;

/// `FI_OPT_EFA_EMULATED_READ` (`fi_ext_efa.h`, a provider-specific option
/// our bindings do not carry): whether the EFA provider emulates reads
/// with messages because the device cannot do them.
pub(super) const FI_OPT_EFA_EMULATED_READ: c_int = -(0xefa << 16) + 1;

/// `FI_OPT_EFA_EMULATED_WRITE` (the next option of `fi_ext_efa.h`):
/// whether the EFA provider emulates writes with messages.
pub(super) const FI_OPT_EFA_EMULATED_WRITE: c_int = -(0xefa << 16) + 2;

/// A provider's one-sided operation.
enum Op {
    Read(ReadFn),
    Write(WriteMsgFn, u64),
}

/// Which way a one-sided transfer moves data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Rma {
    /// From a peer's exposed region into a local one (`fi_read`).
    Read,
    /// From a local region into a peer's exposed one (`fi_writemsg`),
    /// with these flags.
    Write { flags: u64 },
}

/// The sizes of an endpoint's slots.
#[derive(Clone, Copy, Debug)]
pub(super) struct Slots {
    /// Receive buffers.
    pub rx: usize,
    /// Send buffers.
    pub tx: usize,
    /// Reads and writes in flight at once.
    pub rma: usize,
    /// Bytes of every buffer.
    pub frame: usize,
}

/// One finished operation.
#[derive(Clone, Copy, Debug)]
pub(super) enum Completion {
    /// Receive buffer `buf` holds a message of `len` bytes.
    Recv { buf: usize, len: usize },
    /// Send buffer `slot` is free again.
    Sent { slot: usize },
    /// Read or write `slot` is complete; its local `region` is to be
    /// unpinned.
    Rma { slot: usize, region: Option<RegionId> },
    /// Receive buffer `buf` failed (and is no longer posted).
    RecvFailed { buf: usize, err: c_int },
    /// The send from buffer `slot` failed; the buffer is free.
    SendFailed { slot: usize, err: c_int },
    /// Read or write `slot` failed; `region` is to be unpinned.
    RmaFailed { slot: usize, region: Option<RegionId>, err: c_int },
    /// A completion of no operation of ours.
    Unknown { err: c_int },
}

/// An enabled RDM endpoint and everything its operations use.
pub(super) struct Endpoint {
    raw: NonNull<fid_ep>,
    send: SendFn,
    recv: RecvFn,
    inject: InjectFn,
    read: Option<ReadFn>,
    write: Option<WriteMsgFn>,
    getopt: Option<GetOptFn>,
    name: Vec<u8>,
    slots: Slots,
    mr_mode: u64,
    /// One per slot: receives, then sends, then reads.
    contexts: Box<[fi_context2]>,
    rx_posted: Vec<bool>,
    tx_busy: Vec<bool>,
    /// The local region of each read or write in flight, pinned.
    rma_region: Vec<Option<RegionId>>,
    rma_busy: Vec<bool>,
    // Dropped after the endpoint is closed, in this order.
    rx: Slab,
    tx: Slab,
    cq: CompletionQueue,
    av: AddressVector,
    domain: Arc<Domain>,
}

// SAFETY: an endpoint and every libfabric object it holds are used by one
// thread at a time (`FI_THREAD_DOMAIN`); moving it to another thread
// between uses is allowed.
unsafe impl Send for Endpoint {}

impl Endpoint {
    /// Opens the endpoint of the chosen entry on `domain` with an address
    /// vector of `ranks` and a completion queue for every slot, binds and
    /// enables it, and registers its buffers.
    pub(super) fn open(
        domain: &Arc<Domain>,
        info: &Info<'_>,
        ranks: usize,
        mr_mode: u64,
        slots: Slots,
    ) -> Result<Endpoint, String> {
        let api = domain.api;
        let av = AddressVector::open(domain, ranks)?;
        let mut cq = CompletionQueue::open(domain, (slots.rx + slots.tx + slots.rma) * 2)?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: the domain and the entry are live; `raw` receives the
        // endpoint.
        let ret = unsafe {
            let open = need((*domain.raw()).ops.as_ref().and_then(|o| o.endpoint), "fi_endpoint")?;
            open(domain.raw(), info.first(), &mut raw, std::ptr::null_mut())
        };
        if ret != 0 {
            return Err(api::error(api, "fi_endpoint", ret as isize));
        }
        let raw = NonNull::new(raw).ok_or("fi_endpoint returned no endpoint")?;
        // SAFETY: the endpoint is live; each table is the provider's. Any
        // failure closes it (once) before its address vector and queue go.
        let ops = unsafe { bind_enable_and_look_up(raw.as_ptr(), &av, &mut cq) };
        let (send, recv, inject, (read, write), getopt, name) = match ops {
            Ok(ops) => ops,
            Err((what, ret)) => {
                // SAFETY: opened above, used by nothing else.
                unsafe { close_logged(api, "endpoint", &mut (*raw.as_ptr()).fid) };
                return Err(match ret {
                    Some(ret) => api::error(api, what, ret as isize),
                    None => need(None::<()>, what).unwrap_err(),
                });
            }
        };
        let bind = (mr_mode & FI_MR_ENDPOINT as u64 != 0).then_some(raw.as_ptr());
        let slab = |n: usize, access: u32| {
            Slab::new(domain, n * slots.frame, access as u64, mr_mode, bind)
        };
        let (rx, tx) = match (slab(slots.rx, FI_RECV), slab(slots.tx, FI_SEND)) {
            (Ok(rx), Ok(tx)) => (rx, tx),
            (Err(e), _) | (_, Err(e)) => {
                // SAFETY: as above; the slabs made are dropped after.
                unsafe { close_logged(api, "endpoint", &mut (*raw.as_ptr()).fid) };
                return Err(e);
            }
        };
        let total = slots.rx + slots.tx + slots.rma;
        Ok(Endpoint {
            raw,
            send,
            recv,
            inject,
            read,
            write,
            getopt,
            name,
            slots,
            mr_mode,
            // SAFETY: fi_context2 is plain data; zero is its initial state.
            contexts: (0..total).map(|_| unsafe { std::mem::zeroed() }).collect(),
            rx_posted: vec![false; slots.rx],
            tx_busy: vec![false; slots.tx],
            rma_region: vec![None; slots.rma],
            rma_busy: vec![false; slots.rma],
            rx,
            tx,
            cq,
            av,
            domain: domain.clone(),
        })
    }

    /// This endpoint's name, for peers' address vectors.
    pub(super) fn name(&self) -> &[u8] {
        &self.name
    }

    /// Inserts a peer's name into the address vector.
    pub(super) fn insert(&self, name: &[u8]) -> Result<fi_addr_t, String> {
        if name.len() != self.name.len() {
            return Err(format!(
                "an address of {} bytes, this provider's are {}",
                name.len(),
                self.name.len()
            ));
        }
        // SAFETY: `name` has exactly the length of this provider's
        // addresses (our own name's).
        unsafe { self.av.insert(name) }
    }

    /// Reads a boolean endpoint option (`fi_getopt`); `None` when the
    /// provider does not know it.
    pub(super) fn option_bool(&self, name: c_int) -> Option<bool> {
        let getopt = self.getopt?;
        let mut value = 0u8;
        let mut len = 1usize;
        // SAFETY: the endpoint is live; `value` has `len` bytes (a C
        // `bool`).
        let ret = unsafe {
            getopt(
                &mut (*self.raw.as_ptr()).fid,
                FI_OPT_ENDPOINT as c_int,
                name,
                (&mut value as *mut u8).cast(),
                &mut len,
            )
        };
        (ret == 0 && len == 1).then_some(value != 0)
    }

    /// Whether the provider offers reads (`fi_read` in its table).
    pub(super) fn has_read(&self) -> bool {
        self.read.is_some()
    }

    /// Whether the provider offers writes (`fi_writemsg` in its table).
    pub(super) fn has_write(&self) -> bool {
        self.write.is_some()
    }

    /// Posts receive buffer `b` (no-op if it is posted); the provider's
    /// return code.
    pub(super) fn post_recv(&mut self, b: usize) -> isize {
        if self.rx_posted[b] {
            return 0;
        }
        let frame = self.slots.frame;
        let ctx = (&mut self.contexts[b] as *mut fi_context2).cast();
        // SAFETY: buffer `b` lies in the receive slab, which outlives the
        // endpoint's use of it; it is not posted, so nothing else writes or
        // reads it until its completion; its context slot is its own.
        let ret = unsafe {
            (self.recv)(
                self.raw.as_ptr(),
                self.rx.as_mut_ptr().add(b * frame).cast(),
                frame,
                self.rx.desc(),
                api::ADDR_UNSPEC,
                ctx,
            )
        };
        if ret == 0 {
            self.rx_posted[b] = true;
        }
        ret
    }

    /// The `len` bytes received into buffer `b`; `None` while it is posted.
    pub(super) fn rx_frame(&self, b: usize, len: usize) -> Option<&[u8]> {
        if self.rx_posted[b] {
            return None;
        }
        let at = b * self.slots.frame;
        Some(&self.rx.bytes()[at..at + len.min(self.slots.frame)])
    }

    /// Send buffer `slot`, to fill; `None` while a send uses it.
    pub(super) fn tx_buf(&mut self, slot: usize) -> Option<&mut [u8]> {
        if self.tx_busy[slot] {
            return None;
        }
        let at = slot * self.slots.frame;
        Some(&mut self.tx.bytes_mut()[at..at + self.slots.frame])
    }

    /// Sends the first `len` bytes of buffer `slot` to `dest`; the
    /// provider's return code (`-FI_EBUSY` if the buffer is in use).
    pub(super) fn send(&mut self, slot: usize, len: usize, dest: fi_addr_t) -> isize {
        if self.tx_busy[slot] || len > self.slots.frame {
            return -(FI_EBUSY as isize);
        }
        let ctx = (&mut self.contexts[self.slots.rx + slot] as *mut fi_context2).cast();
        // SAFETY: buffer `slot` lies in the send slab, which outlives the
        // endpoint's use of it, and is not written until its completion
        // (`tx_buf` refuses while busy); its context slot is its own.
        let ret = unsafe {
            (self.send)(
                self.raw.as_ptr(),
                self.tx.bytes().as_ptr().add(slot * self.slots.frame).cast(),
                len,
                self.tx.desc(),
                dest,
                ctx,
            )
        };
        if ret == 0 {
            self.tx_busy[slot] = true;
        }
        ret
    }

    /// Sends `bytes` at once (`fi_inject`, which copies them).
    pub(super) fn inject(&mut self, bytes: &[u8], dest: fi_addr_t) -> isize {
        // SAFETY: the provider copies `bytes` before returning.
        unsafe { (self.inject)(self.raw.as_ptr(), bytes.as_ptr().cast(), bytes.len(), dest) }
    }

    /// Registers a region of `regions` for this endpoint's reads into it
    /// (writable) and writes from it and, when `exposed`, peers' reads
    /// from it and writes into it (writable), once: the registration is
    /// attached to the region and closed when it leaves its table. Returns
    /// its descriptor and key.
    pub(super) fn region_mr(
        &mut self,
        regions: &Regions,
        region: RegionId,
        exposed: bool,
    ) -> Result<(*mut c_void, u64), TransportError> {
        let found = regions
            .with_exposure(region, |e| {
                let mr = (&**e? as &dyn std::any::Any).downcast_ref::<MemoryRegion>()?;
                Some((mr.desc(), mr.key()))
            })
            .flatten();
        if let Some(found) = found {
            return Ok(found);
        }
        // Exposed regions are read by peers, and written where writable (a
        // window); writable ones are the local destination of this rank's
        // reads; any is the source of its writes.
        let (ptr, len, writable) = regions.raw(region).ok_or(TransportError::InvalidRegion)?;
        let remote = match (exposed, writable) {
            (false, _) => 0,
            (true, false) => FI_REMOTE_READ,
            (true, true) => FI_REMOTE_READ | FI_REMOTE_WRITE,
        };
        let access = (remote | FI_WRITE | if writable { FI_READ } else { 0 }) as u64;
        let bind = (self.mr_mode & FI_MR_ENDPOINT as u64 != 0).then_some(self.raw.as_ptr());
        // SAFETY: a region's memory outlives its registration: the
        // registration is attached to the region below and closed when the
        // region leaves its table, which happens only once no operation
        // pins it.
        let mr = unsafe { register(&self.domain, self.mr_mode, ptr.as_ptr(), len, access, bind) }
            .map_err(TransportError::Setup)?;
        let found = (mr.desc(), mr.key());
        regions.attach(region, Box::new(mr)).map_err(|e| {
            e.revoke();
            TransportError::InvalidRegion
        })?;
        Ok(found)
    }

    /// Starts one-sided transfer `slot`: `len` bytes between `local` at
    /// `local_offset` and `addr` (key `key`) of peer `peer` — read into
    /// `local` or written from it, as `dir` says; `local` is pinned until
    /// the completion. A write's flags make it complete once its bytes are
    /// in the peer's memory, so that a message sent after it tells the
    /// peer they are there. The provider's return code, or a region error.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn rma(
        &mut self,
        regions: &Regions,
        slot: usize,
        dir: Rma,
        (local, local_offset): (RegionId, usize),
        len: usize,
        peer: fi_addr_t,
        (addr, key): (u64, u64),
    ) -> Result<isize, TransportError> {
        if self.rma_busy[slot] {
            return Ok(-(FI_EBUSY as isize));
        }
        let (desc, _) = self.region_mr(regions, local, false)?;
        let (ptr, rlen, writable) = regions.raw(local).ok_or(TransportError::InvalidRegion)?;
        let fits = local_offset.checked_add(len).is_some_and(|end| end <= rlen);
        if !fits || (dir == Rma::Read && !writable) {
            return Err(TransportError::InvalidRegion);
        }
        let op = match dir {
            Rma::Read => self.read.map(Op::Read).ok_or("ofi (no fi_read)"),
            Rma::Write { flags } => {
                self.write.map(|w| Op::Write(w, flags)).ok_or("ofi (no fi_writemsg)")
            }
        };
        let op = op.map_err(TransportError::Unsupported)?;
        if !regions.pin(local) {
            return Err(TransportError::InvalidRegion);
        }
        let ctx =
            (&mut self.contexts[self.slots.rx + self.slots.tx + slot] as *mut fi_context2).cast();
        // SAFETY: the local range lies inside its region (checked above;
        // writable for a read) that is pinned: its table keeps the memory
        // and its registration until the completion is handed up and
        // unpinned, whatever happens to the request meanwhile. The context
        // slot is this transfer's own. A write's message and its arrays
        // live across the call, which copies what it needs of them.
        let ret = unsafe {
            let at = ptr.as_ptr().add(local_offset).cast::<c_void>();
            match op {
                Op::Read(read) => read(self.raw.as_ptr(), at, len, desc, peer, addr, key, ctx),
                Op::Write(write, flags) => {
                    let iov = iovec { iov_base: at, iov_len: len };
                    let mut descs = [desc];
                    let remote = fi_rma_iov { addr, len, key };
                    let msg = fi_msg_rma {
                        msg_iov: &iov,
                        desc: descs.as_mut_ptr(),
                        iov_count: 1,
                        addr: peer,
                        rma_iov: &remote,
                        rma_iov_count: 1,
                        context: ctx,
                        data: 0,
                    };
                    write(self.raw.as_ptr(), &msg, flags | FI_COMPLETION as u64)
                }
            }
        };
        if ret == 0 {
            self.rma_busy[slot] = true;
            self.rma_region[slot] = Some(local);
        } else {
            regions.unpin(local);
        }
        Ok(ret)
    }

    /// Reads the completion queue once into `out`; how many.
    pub(super) fn reap(&mut self, out: &mut [Completion; cq::BATCH]) -> usize {
        let base = self.contexts.as_ptr() as usize;
        let slots = self.slots;
        let slot_of = |context: *mut c_void| -> Option<usize> {
            let at = (context as usize).checked_sub(base)? / std::mem::size_of::<fi_context2>();
            (at < slots.rx + slots.tx + slots.rma).then_some(at)
        };
        let mut n = 0;
        match self.cq.read() {
            cq::Read::Empty => {}
            cq::Read::Done(entries) => {
                for e in entries {
                    out[n] = match slot_of(e.op_context) {
                        Some(a) if a < slots.rx => {
                            self.rx_posted[a] = false;
                            Completion::Recv { buf: a, len: e.len }
                        }
                        Some(a) if a < slots.rx + slots.tx => {
                            self.tx_busy[a - slots.rx] = false;
                            Completion::Sent { slot: a - slots.rx }
                        }
                        Some(a) => {
                            let slot = a - slots.rx - slots.tx;
                            self.rma_busy[slot] = false;
                            Completion::Rma { slot, region: self.rma_region[slot].take() }
                        }
                        None => Completion::Unknown { err: 0 },
                    };
                    n += 1;
                }
            }
            cq::Read::Failed { context, err } => {
                out[0] = match slot_of(context) {
                    Some(a) if a < slots.rx => {
                        self.rx_posted[a] = false;
                        Completion::RecvFailed { buf: a, err }
                    }
                    Some(a) if a < slots.rx + slots.tx => {
                        self.tx_busy[a - slots.rx] = false;
                        Completion::SendFailed { slot: a - slots.rx, err }
                    }
                    Some(a) => {
                        let slot = a - slots.rx - slots.tx;
                        self.rma_busy[slot] = false;
                        Completion::RmaFailed { slot, region: self.rma_region[slot].take(), err }
                    }
                    None => Completion::Unknown { err },
                };
                n = 1;
            }
        }
        n
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // SAFETY: the endpoint is live and closed once, here, before the
        // buffers, queue and address vector it uses (the fields, dropped
        // after this).
        unsafe { close_logged(self.domain.api, "endpoint", &mut (*self.raw.as_ptr()).fid) };
    }
}

/// Binds the address vector and the queue to a new endpoint, enables it,
/// looks up the operations we use and reads its name. The failing call
/// and its return code (`None`: an operation the provider lacks).
///
/// # Safety
///
/// `ep` must be a live endpoint, `av` and `cq` live objects of its domain.
#[allow(clippy::type_complexity)]
unsafe fn bind_enable_and_look_up(
    ep: *mut fid_ep,
    av: &AddressVector,
    cq: &mut CompletionQueue,
) -> Result<
    (SendFn, RecvFn, InjectFn, (Option<ReadFn>, Option<WriteMsgFn>), Option<GetOptFn>, Vec<u8>),
    (&'static str, Option<c_int>),
> {
    // SAFETY: the caller's contract; every table pointer of a live object
    // is the provider's (null tables are treated as lacking the operation).
    unsafe {
        let f = &mut (*ep).fid as *mut fid;
        let ops = (*f).ops.as_ref().ok_or(("fi_ep_bind", None))?;
        let bind = ops.bind.ok_or(("fi_ep_bind", None))?;
        let control = ops.control.ok_or(("fi_enable", None))?;
        let ret = bind(f, &mut (*av.raw()).fid, 0);
        if ret != 0 {
            return Err(("fi_ep_bind (address vector)", Some(ret)));
        }
        let ret = bind(f, &mut (*cq.raw()).fid, (FI_TRANSMIT | FI_RECV) as u64);
        if ret != 0 {
            return Err(("fi_ep_bind (completion queue)", Some(ret)));
        }
        let ret = control(f, FI_ENABLE as c_int, std::ptr::null_mut());
        if ret != 0 {
            return Err(("fi_enable", Some(ret)));
        }
        let msg = (*ep).msg.as_ref().ok_or(("fi_send", None))?;
        let send = msg.send.ok_or(("fi_send", None))?;
        let recv = msg.recv.ok_or(("fi_recv", None))?;
        let inject = msg.inject.ok_or(("fi_inject", None))?;
        let read = (*ep).rma.as_ref().and_then(|r| r.read);
        let write = (*ep).rma.as_ref().and_then(|r| r.writemsg);
        let getopt = (*ep).ops.as_ref().and_then(|o| o.getopt);
        let getname = (*ep).cm.as_ref().and_then(|c| c.getname).ok_or(("fi_getname", None))?;
        let mut name = vec![0u8; 256];
        let mut len = name.len();
        let ret = getname(f, name.as_mut_ptr().cast(), &mut len);
        if ret != 0 || len > name.len() {
            return Err((
                "fi_getname",
                Some(if ret != 0 { ret } else { -(FI_ETOOSMALL as c_int) }),
            ));
        }
        name.truncate(len);
        Ok((send, recv, inject, (read, write), getopt, name))
    }
}
