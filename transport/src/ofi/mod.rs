//! The libfabric backend: reliable-datagram (`FI_EP_RDM`) endpoints, for
//! AWS EFA (`efa`) and every RDM provider libfabric offers (`tcp;ofi_rxm`,
//! `shm`, `udp;ofi_rxd`, …).
//!
//! # Set-up
//!
//! libfabric is loaded at run time ([`api`]); without it, `ofi` is
//! unavailable with a message that says where it was looked for, and every
//! other backend works. The provider is `HPCOMM_OFI_PROVIDER` (or
//! libfabric's own `FI_PROVIDER`) if set, else `efa` when present, else the
//! first RDM provider in libfabric's order of preference other than `shm`
//! (which cannot leave the host). Each rank opens fabric, domain, an
//! address vector of type `FI_AV_TABLE`, one completion queue and an
//! endpoint; publishes its endpoint name through the [`Exchange`]; and
//! inserts every rank's name into the address vector (a name that cannot
//! be inserted is a set-up error naming the rank).
//!
//! # Frames
//!
//! One frame is one message: an 8-byte prefix (sender rank, header length,
//! kind), the header and the payload. Up to the provider's `inject_size` a
//! frame goes with `fi_inject` (complete at once); larger ones are copied
//! into a registered send buffer and go with `fi_send`, the buffer coming
//! back with the completion. Receives are posted into registered buffers of
//! the largest frame and reposted once the runtime has taken the frame.
//! `-FI_EAGAIN` makes the backend read its completion queue (progress) and
//! try once more before it returns `WouldBlock`.
//!
//! # Memory registration
//!
//! Registration honours the provider's `mr_mode`: local buffers always
//! carry their descriptors (`FI_MR_LOCAL`), keys are always the ones the
//! provider reports (`FI_MR_PROV_KEY`), remote addresses are virtual
//! addresses under `FI_MR_VIRT_ADDR` and offsets otherwise, every buffer is
//! allocated memory (`FI_MR_ALLOCATED`), and under `FI_MR_ENDPOINT` a
//! registration is bound to the endpoint and enabled. With
//! [`OfiConfig::efa_mr_mode`] (`HPCOMM_OFI_MR_MODE=efa`) the backend asks
//! for exactly EFA's bits, so that any provider that accepts them runs in
//! EFA's mode. A region's
//! registration is made the first time it is exposed or read into, lives as
//! long as the region (it is closed when the region leaves its table, which
//! revokes peers' reads), and serves every later use of that region; the
//! send and receive buffers are registered once. Keeping registrations
//! beyond their region's life would need a memory monitor to stay correct
//! when memory is freed and reused, which the providers' own caches have
//! (EFA's, with its memory hooks).
//!
//! # Rendezvous
//!
//! With `FI_RMA` the receiver of a large message reads the sender's
//! registered buffer with `fi_read` (single copy); without it the runtime
//! streams the data in frames after a clear-to-send.
//!
//! # Lost peers
//!
//! An RDM endpoint has no connection to lose. An endpoint that closes
//! tells every peer, with the number of frames it sent to it; a peer
//! reports it lost once it has delivered that many. A send that completes
//! with an error (a peer whose process is gone, over `tcp;ofi_rxm`) makes
//! that peer lost too.

// The raw bindings and the loader stay inside the crate: everything they
// offer is unsafe to call, and users reach libfabric only through `Ofi`
// (`library`, `providers` and `OfiConfig` describe and choose it). The
// `compile_fail` test on `library` keeps it so.
pub(crate) mod api;
#[rustfmt::skip]
#[allow(dead_code, unreachable_pub)]
pub(crate) mod sys;

use std::collections::VecDeque;
use std::ffi::{c_int, c_void};
use std::time::{Duration, Instant};

use api::{Api, Info};
use sys::*;

use crate::exchange::Exchange;
use crate::region::Exposure;
use crate::{
    Capabilities, Event, LossCause, PeerId, RegionId, Regions, RemoteKey, Transport, TransportError,
};

/// Bytes before the header of every frame.
const PREFIX: usize = 8;
/// The largest header.
const MAX_HEADER: usize = 64;
/// Frame kinds.
const KIND_FRAME: u8 = 1;
const KIND_BYE: u8 = 2;
const KIND_HELLO: u8 = 3;
/// Completions read at a time.
const CQ_BATCH: usize = 16;
/// Reads in flight at once.
const MAX_READS: usize = 256;
/// Receive buffers that may wait for an idle poll before they are posted
/// again (of at least 8).
const REPOST_AT: usize = 4;
/// The `mr_mode` bits the EFA provider asks for.
pub const EFA_MR_MODE: u64 =
    (FI_MR_LOCAL | FI_MR_ALLOCATED | FI_MR_PROV_KEY | FI_MR_VIRT_ADDR) as u64;
/// The `mr_mode` bits this backend supports.
const SUPPORTED_MR_MODE: u64 = EFA_MR_MODE | FI_MR_ENDPOINT as u64;

/// Settings of the ofi backend.
#[derive(Clone, Debug)]
pub struct OfiConfig {
    /// The provider (`efa`, `tcp;ofi_rxm`, `shm`, `udp;ofi_rxd`, …); `None`:
    /// `efa` when present, else the first other than `shm`.
    pub provider: Option<String>,
    /// Ask the provider for exactly EFA's `mr_mode` bits (`FI_MR_LOCAL |
    /// FI_MR_ALLOCATED | FI_MR_PROV_KEY | FI_MR_VIRT_ADDR`), as the EFA
    /// provider requires them: a provider that accepts works in that mode.
    pub efa_mr_mode: bool,
    /// Largest message sent eagerly.
    pub eager_limit: usize,
    /// Largest frame payload (at most the provider's message size).
    pub max_payload: usize,
    /// Whether to use the provider's RMA reads for the single-copy
    /// rendezvous (where it offers them); without, large messages are
    /// pipelined in frames, as on a provider without `FI_RMA`.
    pub reads: bool,
    /// Receive buffers posted.
    pub rx_buffers: usize,
    /// Send buffers.
    pub tx_buffers: usize,
}

impl Default for OfiConfig {
    fn default() -> Self {
        OfiConfig {
            provider: None,
            efa_mr_mode: false,
            eager_limit: 16 << 10,
            max_payload: 64 << 10,
            reads: true,
            rx_buffers: 64,
            tx_buffers: 64,
        }
    }
}

/// What `hpcomm info` shows of a provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderInfo {
    /// The provider's name (`tcp;ofi_rxm`).
    pub name: String,
    /// Its fabric and domain (`127.0.0.1/32`, `lo`).
    pub fabric: String,
    /// Its domain.
    pub domain: String,
    /// Largest injected message.
    pub inject_size: usize,
    /// Largest message.
    pub max_msg_size: usize,
    /// The `mr_mode` bits it asks for.
    pub mr_mode: u64,
    /// Whether it offers RMA reads.
    pub rma: bool,
}

fn setup(what: impl Into<String>) -> TransportError {
    TransportError::Setup(what.into())
}

/// The hints every query starts from: RDM, messages (and reads when
/// `rma`), contexts we supply, the `mr_mode` bits we support.
fn hints<'a>(
    api: &'a Api,
    provider: Option<&str>,
    rma: bool,
    mr_mode: u64,
) -> Result<Info<'a>, String> {
    let hints = api.alloc_info()?;
    let h = hints.first();
    // SAFETY: `h` and its attribute structures were allocated by
    // fi_allocinfo and are ours until the hints are freed; the provider
    // name is strdup'd, as fi_freeinfo frees it.
    unsafe {
        (*h).caps =
            FI_MSG as u64 | if rma { (FI_RMA | FI_READ | FI_REMOTE_READ) as u64 } else { 0 };
        (*h).mode = FI_CONTEXT | FI_CONTEXT2;
        (*(*h).ep_attr).type_ = FI_EP_RDM;
        (*(*h).domain_attr).mr_mode = mr_mode as c_int;
        (*(*h).domain_attr).av_type = FI_AV_TABLE;
        (*(*h).domain_attr).threading = FI_THREAD_DOMAIN;
        if let Some(name) = provider {
            (*(*h).fabric_attr).prov_name = api::strdup(name);
        }
    }
    Ok(hints)
}

/// Describes one `fi_info` entry.
///
/// # Safety
///
/// `e` must be a live entry of an `fi_info` list.
unsafe fn describe(e: *const fi_info) -> ProviderInfo {
    // SAFETY: the caller's contract; the attribute pointers of a returned
    // entry are set.
    unsafe {
        ProviderInfo {
            name: api::c_str((*(*e).fabric_attr).prov_name),
            fabric: api::c_str((*(*e).fabric_attr).name),
            domain: api::c_str((*(*e).domain_attr).name),
            inject_size: (*(*e).tx_attr).inject_size,
            max_msg_size: (*(*e).ep_attr).max_msg_size,
            mr_mode: (*(*e).domain_attr).mr_mode as u64,
            rma: (*e).caps & FI_RMA as u64 != 0,
        }
    }
}

/// The libfabric library this process would use: its API version and where
/// it was loaded from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Library {
    /// `(major, minor)` of libfabric's API.
    pub version: (u32, u32),
    /// The file it was loaded from.
    pub path: String,
}

/// Loads libfabric (once per process) and describes it; why not when it
/// cannot be loaded. The raw bindings are not reachable from outside:
///
/// ```compile_fail
/// use hpcomm_transport::ofi::sys::fi_info;
/// ```
///
/// ```compile_fail
/// let _ = unsafe { hpcomm_transport::ofi::api::c_str(std::ptr::null()) };
/// ```
pub fn library() -> Result<Library, String> {
    let api = api::api()?;
    Ok(Library { version: api.version(), path: api.path.clone() })
}

/// Every RDM provider libfabric offers here, in its order of preference
/// (those with reads first).
pub fn providers() -> Result<Vec<ProviderInfo>, String> {
    let api = api::api()?;
    let mut found: Vec<ProviderInfo> = Vec::new();
    for rma in [true, false] {
        let hints = hints(api, None, rma, SUPPORTED_MR_MODE)?;
        if let Some(list) = api.getinfo(&hints)? {
            for e in list.entries() {
                // SAFETY: `e` is an entry of the live list.
                let p = unsafe { describe(e) };
                if !found.iter().any(|f| f.name == p.name && f.domain == p.domain) {
                    found.push(p);
                }
            }
        }
    }
    Ok(found)
}

/// The entry the backend will use: the requested provider (with reads if
/// it offers them), else efa, else the first other than shm.
fn choose<'a>(api: &'a Api, config: &OfiConfig) -> Result<Info<'a>, TransportError> {
    let env = std::env::var("FI_PROVIDER").ok().filter(|s| !s.is_empty());
    let requested = config.provider.clone().or(env);
    for rma in [true, false] {
        let mr_mode = if config.efa_mr_mode { EFA_MR_MODE } else { SUPPORTED_MR_MODE };
        let hints = hints(api, requested.as_deref(), rma, mr_mode).map_err(setup)?;
        let Some(list) = api.getinfo(&hints).map_err(setup)? else { continue };
        let entries = list.entries();
        // SAFETY (both closures): entries of the live list.
        let name = |e: *mut fi_info| unsafe { api::c_str((*(*e).fabric_attr).prov_name) };
        let pick = match &requested {
            Some(_) => entries.first().copied(),
            None => entries
                .iter()
                .copied()
                .find(|&e| name(e) == "efa")
                .or_else(|| entries.iter().copied().find(|&e| !name(e).starts_with("shm"))),
        };
        if let Some(e) = pick {
            // SAFETY: `e` is an entry of `list`.
            return unsafe { list.dup(e) }.map_err(setup);
        }
    }
    Err(setup(match requested {
        Some(p) => format!(
            "libfabric has no RDM provider {p:?} here (see `fi_info -l`, or `hpcomm info` for the usable ones)"
        ),
        None => "libfabric offers no RDM provider here".into(),
    }))
}

/// Registered memory the backend owns: the send or receive buffers.
struct Slab {
    mem: Vec<u8>,
    mr: *mut fid_mr,
    desc: *mut c_void,
}

/// A region's registration, closed when the region leaves its table.
#[derive(Debug)]
pub(crate) struct MrGuard {
    mr: *mut fid_mr,
}

impl MrGuard {
    pub(crate) fn revoke(self) {
        // SAFETY: `mr` is a live registration of ours, closed once.
        unsafe { close(&mut (*self.mr).fid) };
    }

    fn desc(&self) -> *mut c_void {
        // SAFETY: `mr` is live while the guard is.
        unsafe { (*self.mr).mem_desc }
    }
}

/// `fi_close`.
///
/// # Safety
///
/// `fid` must be a live libfabric object, closed once.
unsafe fn close(fid: *mut fid) -> c_int {
    // SAFETY: the caller's contract; every fid has an ops table with close.
    unsafe { ((*(*fid).ops).close.expect("close"))(fid) }
}

/// 64 random bits from the kernel (`getrandom`); the clock's if that fails.
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    match rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()) {
        Ok(8) => u64::from_le_bytes(bytes),
        _ => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.map_or(0, |d| d.as_nanos() as u64).rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15
        }
    }
}

/// A read waiting for the provider to take it.
struct PendingRead {
    slot: usize,
    buf: *mut u8,
    len: usize,
    desc: *mut c_void,
    src: fi_addr_t,
    addr: u64,
    key: u64,
}

/// What a completion's context index refers to.
enum Op {
    Recv(usize),
    Send(usize),
    Read(usize),
}

/// An endpoint of the ofi backend.
pub struct Ofi {
    me: PeerId,
    ranks: usize,
    caps: Capabilities,
    api: &'static Api,
    provider: String,
    /// The chosen provider entry, kept for the endpoint's life.
    _info: Info<'static>,
    fabric: *mut fid_fabric,
    domain: *mut fid_domain,
    av: *mut fid_av,
    cq: *mut fid_cq,
    ep: *mut fid_ep,
    addrs: Vec<fi_addr_t>,
    mr_mode: u64,
    inject_size: usize,
    frame_size: usize,
    /// Receive and send buffers (and their context slots, in that order).
    nrx: usize,
    ntx: usize,
    /// The bits a registration key may use (the domain's `mr_key_size`).
    key_mask: u64,
    /// One context per operation slot: receives, then sends, then reads.
    contexts: Box<[fi_context2]>,
    rx: Slab,
    /// Receives completed while sending, not yet handed up: (buffer, length).
    ready: VecDeque<(usize, usize)>,
    /// Receive buffers handed up, to post again.
    to_repost: Vec<usize>,
    tx: Slab,
    tx_free: Vec<usize>,
    tx_peer: Vec<u32>,
    tx_len: Vec<usize>,
    /// Send buffers filled but not yet taken by the provider, in order.
    unposted: VecDeque<usize>,
    /// Reads the provider could not take yet.
    unposted_reads: VecDeque<PendingRead>,
    reads_free: Vec<usize>,
    read_token: Vec<u64>,
    /// The destination of each read slot's read, pinned until its
    /// completion has been handed up (see `crate::region`'s pins).
    read_region: Vec<Option<RegionId>>,
    done_reads: VecDeque<(u64, Option<TransportError>, Option<RegionId>)>,
    scratch: Vec<u8>,
    /// Frames to this endpoint itself.
    own: VecDeque<Vec<u8>>,
    sent: Vec<u64>,
    received: Vec<u64>,
    bye: Vec<Option<u64>>,
    lost: Vec<bool>,
    reported: Vec<bool>,
    /// Whether some lost peer has not been reported yet.
    unreported: bool,
    /// For endpoints of one process's in-process job: where their
    /// libfabric objects wait to be closed together.
    group: Option<std::sync::Arc<std::sync::Mutex<Parked>>>,
}

/// The libfabric objects of in-process endpoints that have been dropped,
/// closed when the group itself goes — when the last endpoint of the job
/// and the set-up that made them are gone, whether set-up succeeded or
/// failed half way: libfabric's shm provider shares state between the
/// endpoints of one process, and progress (or a goodbye) on one after
/// another has closed can touch freed memory.
#[derive(Default)]
struct Parked {
    objects: Vec<[*mut fid; 7]>,
}

// SAFETY: the parked objects are only closed once, by whichever thread
// drops the last reference to the group.
unsafe impl Send for Parked {}

impl Drop for Parked {
    fn drop(&mut self) {
        for objects in self.objects.drain(..) {
            // SAFETY: each object is live (or null, when set-up stopped
            // early), parked once and closed once, here, endpoint before
            // what it is bound to.
            unsafe { close_all(objects) };
        }
    }
}

/// Closes an endpoint's objects in order.
///
/// # Safety
///
/// Each pointer is null or a live libfabric object, closed nowhere else.
unsafe fn close_all(objects: [*mut fid; 7]) {
    for f in objects {
        if !f.is_null() {
            // SAFETY: the caller's contract.
            unsafe { close(f) };
        }
    }
}

impl std::fmt::Debug for Ofi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ofi")
            .field("me", &self.me)
            .field("ranks", &self.ranks)
            .field("provider", &self.provider)
            .finish()
    }
}

// SAFETY: an endpoint and every libfabric object it holds are used by one
// thread at a time (`FI_THREAD_DOMAIN`); moving it to another thread
// between uses is allowed.
unsafe impl Send for Ofi {}

impl Ofi {
    /// Joins the job as rank `me` of `ranks` over libfabric.
    pub fn open(
        me: usize,
        ranks: usize,
        exchange: &mut dyn Exchange,
        config: &OfiConfig,
    ) -> Result<Ofi, TransportError> {
        Ofi::open_in(me, ranks, exchange, config, None)
    }

    /// [`open`](Ofi::open), parking the endpoint's objects in `group` when
    /// it is dropped — also when set-up fails after the endpoint exists.
    fn open_in(
        me: usize,
        ranks: usize,
        exchange: &mut dyn Exchange,
        config: &OfiConfig,
        group: Option<std::sync::Arc<std::sync::Mutex<Parked>>>,
    ) -> Result<Ofi, TransportError> {
        let api = api::api().map_err(setup)?;
        let info = choose(api, config)?;
        let i = info.first();
        // SAFETY: `i` is our own copy of the chosen entry.
        let described = unsafe { describe(i) };
        let mr_mode = described.mr_mode;
        let fail = |what: &str, ret: c_int| setup(api::error(api, what, ret as isize));
        let prov = described.name.clone();

        // Fabric, domain, address vector, completion queue, endpoint.
        // SAFETY: every pointer passed is either ours (attributes, out
        // parameters) or a live object just opened; each op is called
        // through the table of the object it belongs to.
        let mut ofi = unsafe {
            let fabric = api.open_fabric((*i).fabric_attr).map_err(setup)?;
            let mut domain = std::ptr::null_mut();
            let ret = ((*(*fabric).ops).domain.expect("domain"))(
                fabric,
                i,
                &mut domain,
                std::ptr::null_mut(),
            );
            if ret != 0 {
                close(&mut (*fabric).fid);
                return Err(fail("fi_domain", ret));
            }
            let mut ofi = Ofi {
                me: PeerId(me as u32),
                ranks,
                caps: Capabilities {
                    name: "ofi",
                    max_header: MAX_HEADER,
                    max_payload: 1,
                    inline_limit: 0,
                    eager_limit: 1,
                    rma_read: false,
                    max_read: 0,
                    // Closing a registration makes later reads fail on some
                    // providers and never complete on others (udp;ofi_rxd):
                    // the runtime's rule (a sender keeps its buffer until
                    // `FIN`) is what protects data.
                    revocable: false,
                    ordered: false,
                    latency_hint: Duration::from_micros(5),
                    spin_pause: false,
                    bandwidth_hint: 10_000_000_000,
                },
                api,
                provider: prov.clone(),
                _info: info,
                fabric,
                domain,
                av: std::ptr::null_mut(),
                cq: std::ptr::null_mut(),
                ep: std::ptr::null_mut(),
                addrs: Vec::new(),
                mr_mode,
                // Under back-pressure, 64 of 1,088 frames injected over
                // ofi_rxd (1.17) never arrived; from registered send buffers
                // every one does.
                inject_size: if prov.contains("ofi_rxd") { 0 } else { described.inject_size },
                frame_size: 0,
                nrx: 0,
                ntx: 0,
                key_mask: match (*(*i).domain_attr).mr_key_size {
                    n @ 1..=7 => (1u64 << (8 * n)) - 1,
                    _ => u64::MAX,
                },
                contexts: Box::new([]),
                rx: Slab { mem: Vec::new(), mr: std::ptr::null_mut(), desc: std::ptr::null_mut() },
                ready: VecDeque::new(),
                to_repost: Vec::new(),
                tx: Slab { mem: Vec::new(), mr: std::ptr::null_mut(), desc: std::ptr::null_mut() },
                tx_free: Vec::new(),
                tx_peer: Vec::new(),
                tx_len: Vec::new(),
                unposted: VecDeque::new(),
                unposted_reads: VecDeque::new(),
                reads_free: Vec::new(),
                read_token: vec![0; MAX_READS],
                read_region: vec![None; MAX_READS],
                done_reads: VecDeque::new(),
                scratch: Vec::new(),
                own: VecDeque::new(),
                sent: vec![0; ranks],
                received: vec![0; ranks],
                bye: vec![None; ranks],
                lost: vec![false; ranks],
                reported: vec![false; ranks],
                unreported: false,
                group,
            };
            let mut av_attr: fi_av_attr = std::mem::zeroed();
            av_attr.type_ = FI_AV_TABLE;
            av_attr.count = ranks;
            let ret = ((*(*domain).ops).av_open.expect("av_open"))(
                domain,
                &mut av_attr,
                &mut ofi.av,
                std::ptr::null_mut(),
            );
            if ret != 0 {
                return Err(fail("fi_av_open", ret));
            }
            let mut cq_attr: fi_cq_attr = std::mem::zeroed();
            cq_attr.format = FI_CQ_FORMAT_MSG;
            cq_attr.wait_obj = FI_WAIT_NONE;
            cq_attr.size = (config.rx_buffers + config.tx_buffers + MAX_READS) * 2;
            let ret = ((*(*domain).ops).cq_open.expect("cq_open"))(
                domain,
                &mut cq_attr,
                &mut ofi.cq,
                std::ptr::null_mut(),
            );
            if ret != 0 {
                return Err(fail("fi_cq_open", ret));
            }
            let ret = ((*(*domain).ops).endpoint.expect("endpoint"))(
                domain,
                i,
                &mut ofi.ep,
                std::ptr::null_mut(),
            );
            if ret != 0 {
                return Err(fail("fi_endpoint", ret));
            }
            let ep_fid = &mut (*ofi.ep).fid as *mut fid;
            let bind = (*(*ep_fid).ops).bind.expect("bind");
            let ret = bind(ep_fid, &mut (*ofi.av).fid, 0);
            if ret != 0 {
                return Err(fail("fi_ep_bind (address vector)", ret));
            }
            let ret = bind(ep_fid, &mut (*ofi.cq).fid, (FI_TRANSMIT | FI_RECV) as u64);
            if ret != 0 {
                return Err(fail("fi_ep_bind (completion queue)", ret));
            }
            let ret = ((*(*ep_fid).ops).control.expect("control"))(
                ep_fid,
                FI_ENABLE as c_int,
                std::ptr::null_mut(),
            );
            if ret != 0 {
                return Err(fail("fi_enable", ret));
            }
            ofi
        };

        // Limits.
        let max_payload =
            config.max_payload.min(described.max_msg_size.saturating_sub(PREFIX + MAX_HEADER));
        if max_payload < 1024 {
            return Err(setup(format!(
                "provider {prov}: messages of {} bytes are too small",
                described.max_msg_size
            )));
        }
        let eager_limit = config.eager_limit.min(max_payload);
        let rma = described.rma && config.reads;
        ofi.frame_size = PREFIX + MAX_HEADER + max_payload;
        ofi.caps.max_payload = max_payload;
        ofi.caps.eager_limit = eager_limit;
        ofi.caps.inline_limit = 1024.min(eager_limit);
        ofi.caps.rma_read = rma;
        ofi.caps.max_read = if rma { described.max_msg_size.min(1 << 30) } else { 0 };
        ofi.caps.validate().map_err(setup)?;

        // Buffers and their contexts.
        let (nrx, ntx) = (config.rx_buffers.max(8), config.tx_buffers.max(8));
        // SAFETY: fi_context2 is plain data; zero is its initial state.
        ofi.contexts = (0..nrx + ntx + MAX_READS).map(|_| unsafe { std::mem::zeroed() }).collect();
        ofi.rx = ofi.slab(nrx * ofi.frame_size, FI_RECV as u64)?;
        ofi.tx = ofi.slab(ntx * ofi.frame_size, FI_SEND as u64)?;
        (ofi.nrx, ofi.ntx) = (nrx, ntx);
        ofi.tx_free = (0..ntx).rev().collect();
        ofi.tx_peer = vec![0; ntx];
        ofi.tx_len = vec![0; ntx];
        ofi.reads_free = (0..MAX_READS).rev().collect();
        for b in 0..nrx {
            ofi.post_recv(b)?;
        }

        // Addresses.
        let mut name = vec![0u8; 256];
        let mut len = name.len();
        // SAFETY: `name` has `len` bytes for the endpoint's name.
        let ret = unsafe {
            ((*(*ofi.ep).cm).getname.expect("getname"))(
                &mut (*ofi.ep).fid,
                name.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if ret != 0 {
            return Err(fail("fi_getname", ret));
        }
        name.truncate(len);
        let published = exchange.allgather(me, ranks, "ofi", &name).map_err(setup)?;
        let mut addrs = vec![0; ranks];
        for (r, (slot, peer)) in addrs.iter_mut().zip(&published).enumerate() {
            if peer.len() != len {
                return Err(setup(format!(
                    "rank {r} published an address of {} bytes, this provider's are {len}",
                    peer.len()
                )));
            }
            // SAFETY: `peer` holds one address of this provider's format;
            // the av writes one fi_addr_t.
            let n = unsafe {
                ((*(*ofi.av).ops).insert.expect("av insert"))(
                    ofi.av,
                    peer.as_ptr().cast(),
                    1,
                    slot,
                    0,
                    std::ptr::null_mut(),
                )
            };
            if n != 1 {
                return Err(setup(format!(
                    "cannot insert the address of rank {r} into the address vector: {}",
                    if n < 0 { api.strerror(-n) } else { "not inserted".into() }
                )));
            }
        }
        // Only now does the endpoint talk to peers (and say goodbye).
        ofi.addrs = addrs;
        exchange.fence().map_err(setup)?;
        if prov.contains("ofi_rxm") || prov.contains("ofi_rxd") || prov == "shm" {
            ofi.connect_all()?;
            exchange.fence().map_err(setup)?;
        }
        tracing::debug!(provider = %prov, rma, max_payload, "ofi endpoint ready");
        Ok(ofi)
    }

    /// Sets up the per-peer state of the utility providers and shm —
    /// `ofi_rxm`'s connections, `ofi_rxd`'s handshake, shm's mapping of the
    /// peer's region — with every peer now, by
    /// exchanging a hello: both need the two sides to make progress, and a
    /// peer that does not (a rank busy computing, or one that is leaving)
    /// would otherwise hold up the first frame to it. EFA's handshake is
    /// cheap and its jobs large, so it stays lazy there.
    fn connect_all(&mut self) -> Result<(), TransportError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut prefix = [0u8; PREFIX];
        prefix[0..4].copy_from_slice(&self.me.0.to_le_bytes());
        prefix[6] = KIND_HELLO;
        let mut greeted = vec![false; self.ranks];
        greeted[self.me.index()] = true;
        let mut heard = greeted.clone();
        let ntx = self.tx_free.len();
        while greeted.iter().chain(&heard).any(|&g| !g)
            || !self.unposted.is_empty()
            || self.tx_free.len() < ntx
        {
            if Instant::now() > deadline {
                let missing: Vec<usize> = (0..self.ranks).filter(|&r| !heard[r]).collect();
                return Err(setup(format!("no hello from ranks {missing:?} within 60 s")));
            }
            for (peer, greeted) in greeted.iter_mut().enumerate().filter(|(_, g)| !**g) {
                match self.send_parts(peer, [&prefix, &[], &[]]) {
                    Ok(()) => *greeted = true,
                    Err(TransportError::WouldBlock) => {}
                    Err(e) => return Err(setup(format!("hello to rank {peer}: {e}"))),
                }
            }
            self.post_sends();
            self.reap(None);
            while let Some((b, len)) = self.ready.pop_front() {
                let at = b * self.frame_size;
                let frame = &self.rx.mem[at..at + len.min(self.frame_size)];
                if len >= PREFIX && frame[6] == KIND_HELLO {
                    let src = u32::from_le_bytes(frame[0..4].try_into().expect("4")) as usize;
                    if let Some(h) = heard.get_mut(src) {
                        *h = true;
                    }
                } else {
                    tracing::warn!("ofi: a frame before set-up ended");
                }
                self.post_recv(b)?;
            }
            std::thread::yield_now();
        }
        // Let the last acknowledgements out before the fence stops this
        // rank's progress for a while.
        let settle = Instant::now() + Duration::from_millis(20);
        while Instant::now() < settle {
            self.reap(None);
            std::thread::yield_now();
        }
        Ok(())
    }

    /// A job of `ranks` endpoints in this process (for tests).
    pub fn local_job(ranks: usize, config: &OfiConfig) -> Result<Vec<Ofi>, TransportError> {
        // Every endpoint is in the group from its first moment, so that one
        // dropped because another's set-up failed is parked, not closed.
        let group = std::sync::Arc::new(std::sync::Mutex::new(Parked::default()));
        crate::exchange::local_job(ranks, |me, exchange| {
            Ofi::open_in(me, ranks, exchange, config, Some(group.clone()))
        })
    }

    /// The provider in use.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The `mr_mode` bits the provider works with.
    pub fn mr_mode(&self) -> u64 {
        self.mr_mode
    }

    /// Whether the provider (or the configuration) asks for `bit` of
    /// `mr_mode`.
    fn mr(&self, bit: u32) -> bool {
        self.mr_mode & bit as u64 != 0
    }

    /// Registers `len` bytes at `ptr` with `access`, honouring `mr_mode`.
    fn register(
        &mut self,
        ptr: *const u8,
        len: usize,
        access: u64,
    ) -> Result<*mut fid_mr, TransportError> {
        // Keys are random where we choose them (without FI_MR_PROV_KEY), so
        // that a peer cannot guess the key of a buffer it was not given;
        // a clash with a key in use is drawn again.
        let mut mr = std::ptr::null_mut();
        for _ in 0..8 {
            let key = random_u64() & self.key_mask;
            match self.register_with_key(ptr, len, access, key, &mut mr) {
                Err(ret) if ret == -(FI_ENOKEY as c_int) && !self.mr(FI_MR_PROV_KEY) => continue,
                Err(ret) => {
                    return Err(TransportError::Setup(api::error(
                        self.api,
                        "fi_mr_reg",
                        ret as isize,
                    )))
                }
                Ok(()) => break,
            }
        }
        if mr.is_null() {
            return Err(TransportError::Setup("fi_mr_reg: no free key after 8 draws".into()));
        }
        if self.mr(FI_MR_ENDPOINT) {
            // SAFETY: `mr` was just registered and the endpoint is live;
            // a registration that cannot be bound is closed once, here.
            unsafe {
                let mr_fid = &mut (*mr).fid as *mut fid;
                let ret = ((*(*mr_fid).ops).bind.expect("bind"))(mr_fid, &mut (*self.ep).fid, 0);
                let ret = if ret == 0 {
                    ((*(*mr_fid).ops).control.expect("control"))(
                        mr_fid,
                        FI_ENABLE as c_int,
                        std::ptr::null_mut(),
                    )
                } else {
                    ret
                };
                if ret != 0 {
                    close(mr_fid);
                    return Err(TransportError::Setup(api::error(
                        self.api,
                        "fi_mr_bind/fi_mr_enable",
                        ret as isize,
                    )));
                }
            }
        }
        Ok(mr)
    }

    /// `fi_mr_reg` with the requested `key`; the provider's return code on
    /// failure.
    fn register_with_key(
        &mut self,
        ptr: *const u8,
        len: usize,
        access: u64,
        key: u64,
        mr: &mut *mut fid_mr,
    ) -> Result<(), c_int> {
        // SAFETY: `ptr..ptr+len` is memory that outlives the registration
        // (a slab of ours, or a region whose registration is closed when it
        // leaves its table); the domain is live.
        let ret = unsafe {
            ((*(*self.domain).mr).reg.expect("mr reg"))(
                &mut (*self.domain).fid,
                ptr.cast(),
                len.max(1),
                access,
                0,
                key,
                0,
                mr,
                std::ptr::null_mut(),
            )
        };
        match ret {
            0 => Ok(()),
            r => Err(r),
        }
    }

    fn slab(&mut self, len: usize, access: u64) -> Result<Slab, TransportError> {
        let mem = vec![0u8; len];
        let mr = self.register(mem.as_ptr(), len, access)?;
        // SAFETY: `mr` is live.
        let desc = unsafe { (*mr).mem_desc };
        Ok(Slab { mem, mr, desc })
    }

    fn ctx(&mut self, index: usize) -> *mut c_void {
        (&mut self.contexts[index] as *mut fi_context2).cast()
    }

    fn op_of(&self, context: *mut c_void) -> Option<Op> {
        let base = self.contexts.as_ptr() as usize;
        let at = (context as usize).checked_sub(base)? / std::mem::size_of::<fi_context2>();
        let (nrx, ntx) = (self.nrx, self.ntx);
        match at {
            a if a < nrx => Some(Op::Recv(a)),
            a if a < nrx + ntx => Some(Op::Send(a - nrx)),
            a if a < nrx + ntx + MAX_READS => Some(Op::Read(a - nrx - ntx)),
            _ => None,
        }
    }

    /// Posts receive buffer `b`.
    fn post_recv(&mut self, b: usize) -> Result<(), TransportError> {
        let ctx = self.ctx(b);
        let start = Instant::now();
        loop {
            // SAFETY: buffer `b` of the receive slab is ours until its
            // completion; its context slot is reserved for it.
            let ret = unsafe {
                ((*(*self.ep).msg).recv.expect("recv"))(
                    self.ep,
                    self.rx.mem.as_mut_ptr().add(b * self.frame_size).cast(),
                    self.frame_size,
                    self.rx.desc,
                    api::ADDR_UNSPEC,
                    ctx,
                )
            };
            if ret == 0 {
                return Ok(());
            }
            if ret != -(FI_EAGAIN as isize) || start.elapsed() > Duration::from_secs(5) {
                return Err(TransportError::Setup(api::error(self.api, "fi_recv", ret)));
            }
            // Make room: progress, keeping completed receives for later.
            self.reap(None);
        }
    }

    /// Reads the completion queue once. Receives go to `sink` when given,
    /// else to `ready`; sends free their buffers; reads are recorded.
    /// Returns how many frames went to `sink`.
    fn reap(&mut self, mut sink: Option<&mut dyn FnMut(Event<'_>)>) -> usize {
        // Not zeroed: this runs on every poll, and the provider writes the
        // entries it returns.
        let mut entries = [const { std::mem::MaybeUninit::<fi_cq_msg_entry>::uninit() }; CQ_BATCH];
        // SAFETY: the queue is live; `entries` has room for CQ_BATCH.
        let n = unsafe {
            ((*(*self.cq).ops).read.expect("cq read"))(
                self.cq,
                entries.as_mut_ptr().cast(),
                CQ_BATCH,
            )
        };
        let mut delivered = 0;
        if n == -(FI_EAVAIL as isize) {
            self.reap_error();
            return 0;
        }
        if n <= 0 {
            return 0;
        }
        for e in &entries[..n as usize] {
            // SAFETY: the provider wrote the first `n` entries.
            let e = unsafe { e.assume_init_ref() };
            match self.op_of(e.op_context) {
                Some(Op::Recv(b)) => match sink.as_deref_mut() {
                    Some(sink) => delivered += self.deliver(b, e.len, sink),
                    None => self.ready.push_back((b, e.len)),
                },
                Some(Op::Send(s)) => self.tx_free.push(s),
                Some(Op::Read(r)) => {
                    self.reads_free.push(r);
                    self.done_reads.push_back((
                        self.read_token[r],
                        None,
                        self.read_region[r].take(),
                    ));
                }
                None => tracing::warn!("ofi: a completion with an unknown context"),
            }
        }
        delivered
    }

    fn reap_error(&mut self) {
        // SAFETY: plain data; zero is valid (err_data_size 0: the provider
        // keeps its own error data).
        let mut err: fi_cq_err_entry = unsafe { std::mem::zeroed() };
        // SAFETY: the queue is live; `err` is one entry.
        let ret = unsafe { ((*(*self.cq).ops).readerr.expect("readerr"))(self.cq, &mut err, 0) };
        if ret != 1 {
            return;
        }
        let why = self.api.strerror(err.err);
        match self.op_of(err.op_context) {
            Some(Op::Send(s)) => {
                self.tx_free.push(s);
                let peer = self.tx_peer[s] as usize;
                tracing::debug!("ofi: a send to rank {peer} failed ({why}); it is lost");
                self.mark_lost(peer);
            }
            Some(Op::Recv(b)) => {
                if err.err != FI_ECANCELED as c_int {
                    tracing::warn!("ofi: a receive failed ({why}); reposting");
                    let _ = self.post_recv(b);
                }
            }
            Some(Op::Read(r)) => {
                self.reads_free.push(r);
                self.done_reads.push_back((
                    self.read_token[r],
                    Some(TransportError::InvalidRegion),
                    self.read_region[r].take(),
                ));
            }
            None => tracing::warn!("ofi: an error completion with an unknown context ({why})"),
        }
    }

    /// Hands the frame in receive buffer `b` to `sink`, then reposts it.
    fn deliver(&mut self, b: usize, len: usize, sink: &mut dyn FnMut(Event<'_>)) -> usize {
        let at = b * self.frame_size;
        let mut delivered = 0;
        let frame = &self.rx.mem[at..at + len.min(self.frame_size)];
        if frame.len() >= PREFIX {
            let src = u32::from_le_bytes(frame[0..4].try_into().expect("4")) as usize;
            let hlen = u16::from_le_bytes([frame[4], frame[5]]) as usize;
            let kind = frame[6];
            if src < self.ranks && PREFIX + hlen <= frame.len() {
                match kind {
                    KIND_FRAME => {
                        self.received[src] += 1;
                        sink(Event::Frame {
                            src: PeerId(src as u32),
                            header: &frame[PREFIX..PREFIX + hlen],
                            payload: &frame[PREFIX + hlen..],
                        });
                        delivered = 1;
                    }
                    KIND_HELLO => {}
                    KIND_BYE if frame.len() >= PREFIX + 8 => {
                        let n =
                            u64::from_le_bytes(frame[PREFIX..PREFIX + 8].try_into().expect("8"));
                        self.bye[src] = Some(n);
                    }
                    _ => tracing::warn!("ofi: a malformed frame from rank {src}"),
                }
                if self.bye[src].is_some_and(|n| self.received[src] >= n) {
                    self.mark_lost(src);
                }
            }
        }
        // Reposting costs a call into the provider (and its locks): it is
        // left for an idle poll, off the path of the next message, unless
        // few buffers remain posted.
        self.to_repost.push(b);
        if self.to_repost.len() > REPOST_AT {
            self.repost();
        }
        delivered
    }

    /// Posts the receive buffers the runtime has finished with.
    fn repost(&mut self) {
        while let Some(b) = self.to_repost.pop() {
            if let Err(e) = self.post_recv(b) {
                tracing::warn!("ofi: {e}");
            }
        }
    }

    /// Sends one message of `parts` to `dst`: by inject when it fits,
    /// else from a send buffer. A message the provider cannot take now
    /// (`-FI_EAGAIN` after one round of progress) waits in its send buffer
    /// and is posted by a later `poll`; `WouldBlock` only when every send
    /// buffer is taken.
    fn send_parts(&mut self, dst: usize, parts: [&[u8]; 3]) -> Result<(), TransportError> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total <= self.inject_size && self.unposted.is_empty() {
            self.scratch.clear();
            for p in parts {
                self.scratch.extend_from_slice(p);
            }
            for attempt in 0..2 {
                if attempt == 1 {
                    self.reap(None);
                }
                // SAFETY: `scratch` holds `total` bytes; inject copies them.
                let ret = unsafe {
                    ((*(*self.ep).msg).inject.expect("inject"))(
                        self.ep,
                        self.scratch.as_ptr().cast(),
                        total,
                        self.addrs[dst],
                    )
                };
                match ret {
                    0 => return Ok(()),
                    r if r == -(FI_EAGAIN as isize) => {}
                    r => return Err(self.send_error(dst, r)),
                }
            }
        }
        let slot = match self.tx_free.pop() {
            Some(slot) => slot,
            None => {
                self.reap(None);
                self.tx_free.pop().ok_or(TransportError::WouldBlock)?
            }
        };
        let at = slot * self.frame_size;
        let mut end = at;
        for p in parts {
            self.tx.mem[end..end + p.len()].copy_from_slice(p);
            end += p.len();
        }
        self.tx_peer[slot] = dst as u32;
        self.tx_len[slot] = total;
        self.unposted.push_back(slot);
        self.post_sends();
        Ok(())
    }

    /// Posts the send buffers waiting for the provider, in order, until it
    /// pushes back (after one round of progress).
    fn post_sends(&mut self) {
        let mut progressed = false;
        while let Some(&slot) = self.unposted.front() {
            let dst = self.tx_peer[slot] as usize;
            if self.lost[dst] {
                self.unposted.pop_front();
                self.tx_free.push(slot);
                continue;
            }
            let ctx = self.ctx(self.nrx + slot);
            // SAFETY: send buffer `slot` is ours until its completion,
            // which gives it back; its context slot is reserved for it.
            let ret = unsafe {
                ((*(*self.ep).msg).send.expect("send"))(
                    self.ep,
                    self.tx.mem.as_ptr().add(slot * self.frame_size).cast(),
                    self.tx_len[slot],
                    self.tx.desc,
                    self.addrs[dst],
                    ctx,
                )
            };
            match ret {
                0 => {
                    self.unposted.pop_front();
                }
                r if r == -(FI_EAGAIN as isize) => {
                    if progressed {
                        return;
                    }
                    progressed = true;
                    self.reap(None);
                }
                r => {
                    self.unposted.pop_front();
                    self.tx_free.push(slot);
                    let _ = self.send_error(dst, r);
                }
            }
        }
    }

    fn mark_lost(&mut self, peer: usize) {
        self.lost[peer] = true;
        self.unreported = true;
    }

    fn send_error(&mut self, dst: usize, ret: isize) -> TransportError {
        tracing::debug!("ofi: {}", api::error(self.api, "send", ret));
        self.mark_lost(dst);
        TransportError::PeerLost(PeerId(dst as u32))
    }

    /// The registration of a region, made on first use.
    fn region_mr(
        &mut self,
        regions: &Regions,
        region: RegionId,
    ) -> Result<*mut c_void, TransportError> {
        if let Some(desc) = regions
            .with_exposure(region, |e| match e {
                Some(Exposure::Ofi(g)) => Some(g.desc()),
                _ => None,
            })
            .flatten()
        {
            return Ok(desc);
        }
        // Exposed (read-only) regions are read by peers; writable ones are
        // only the local destination of this rank's reads: no peer may
        // touch them.
        let (ptr, len, writable) = regions.raw(region).ok_or(TransportError::InvalidRegion)?;
        let access = if writable { FI_READ } else { FI_REMOTE_READ };
        let mr = self.register(ptr.as_ptr(), len, access as u64)?;
        let guard = MrGuard { mr };
        let desc = guard.desc();
        regions.attach(region, Exposure::Ofi(guard)).map_err(|e| {
            e.revoke();
            TransportError::InvalidRegion
        })?;
        Ok(desc)
    }
}

impl Transport for Ofi {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn peer_id(&self) -> PeerId {
        self.me
    }

    fn peer_count(&self) -> usize {
        self.ranks
    }

    fn try_send(
        &mut self,
        dst: PeerId,
        header: &[u8],
        payload: &[u8],
    ) -> Result<(), TransportError> {
        let d = self.caps.check_send(dst, self.ranks, header, payload)?;
        if self.lost[d] {
            return Err(TransportError::PeerLost(dst));
        }
        let mut prefix = [0u8; PREFIX];
        prefix[0..4].copy_from_slice(&self.me.0.to_le_bytes());
        prefix[4..6].copy_from_slice(&(header.len() as u16).to_le_bytes());
        prefix[6] = KIND_FRAME;
        if dst == self.me {
            let mut frame = Vec::with_capacity(PREFIX + header.len() + payload.len());
            frame.extend_from_slice(&prefix);
            frame.extend_from_slice(header);
            frame.extend_from_slice(payload);
            self.own.push_back(frame);
            return Ok(());
        }
        self.send_parts(d, [&prefix, header, payload])?;
        self.sent[d] += 1;
        Ok(())
    }

    fn poll(
        &mut self,
        regions: &Regions,
        sink: &mut dyn FnMut(Event<'_>),
    ) -> Result<usize, TransportError> {
        let mut events = 0;
        while let Some(frame) = self.own.pop_front() {
            let hlen = u16::from_le_bytes([frame[4], frame[5]]) as usize;
            sink(Event::Frame {
                src: self.me,
                header: &frame[PREFIX..PREFIX + hlen],
                payload: &frame[PREFIX + hlen..],
            });
            events += 1;
        }
        if !self.unposted.is_empty() {
            self.post_sends();
        }
        if !self.unposted_reads.is_empty() {
            self.post_reads()?;
        }
        while let Some((b, len)) = self.ready.pop_front() {
            events += self.deliver(b, len, sink);
        }
        events += self.reap(Some(sink));
        if events == 0 && !self.to_repost.is_empty() {
            self.repost();
        }
        while let Some((token, error, region)) = self.done_reads.pop_front() {
            // The provider is done with the memory: it may go now.
            if let Some(region) = region {
                regions.unpin(region);
            }
            sink(match error {
                None => Event::ReadDone { token },
                Some(error) => Event::ReadFailed { token, error },
            });
            events += 1;
        }
        if self.unreported {
            self.unreported = false;
            for peer in 0..self.ranks {
                if self.lost[peer] && !self.reported[peer] {
                    self.reported[peer] = true;
                    sink(Event::PeerLost { peer: PeerId(peer as u32), cause: LossCause::Ended });
                    events += 1;
                }
            }
        }
        Ok(events)
    }

    fn wait(&mut self, timeout: Duration) {
        // The completion queue has no wait object (EFA offers none), so an
        // idle rank naps briefly instead.
        self.repost();
        if self.own.is_empty() && self.ready.is_empty() && self.done_reads.is_empty() {
            std::thread::sleep(timeout.min(Duration::from_micros(50)));
        }
    }

    fn expose(&mut self, regions: &Regions, region: RegionId) -> Result<RemoteKey, TransportError> {
        if !self.caps.rma_read {
            return Err(TransportError::Unsupported("ofi (this provider offers no reads)"));
        }
        let (ptr, _) = regions.exposable(region)?;
        self.region_mr(regions, region)?;
        let key = regions
            .with_exposure(region, |e| match e {
                // SAFETY: the registration is live while attached.
                Some(Exposure::Ofi(g)) => Some(unsafe { (*g.mr).key }),
                _ => None,
            })
            .flatten()
            .ok_or(TransportError::InvalidRegion)?;
        let addr = if self.mr(FI_MR_VIRT_ADDR) { ptr.as_ptr() as u64 } else { 0 };
        Ok(RemoteKey { addr, key })
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
            return Err(TransportError::Unsupported("ofi (this provider offers no reads)"));
        }
        let s = src.index();
        if s >= self.ranks {
            return Err(TransportError::InvalidPeer { peer: src, size: self.ranks });
        }
        if self.lost[s] {
            return Err(TransportError::PeerLost(src));
        }
        let (ptr, rlen, writable) = regions.raw(dst).ok_or(TransportError::InvalidRegion)?;
        if !writable || dst_offset.checked_add(len).is_none_or(|end| end > rlen) {
            return Err(TransportError::InvalidRegion);
        }
        let desc = self.region_mr(regions, dst)?;
        let Some(r) = self.reads_free.pop() else {
            self.reap(None);
            return Err(TransportError::WouldBlock);
        };
        // Pinned until the completion is handed up: the region's memory
        // must outlive the provider's use of it, whatever the runtime does
        // with the request meanwhile.
        if !regions.pin(dst) {
            self.reads_free.push(r);
            return Err(TransportError::InvalidRegion);
        }
        self.read_token[r] = token;
        self.read_region[r] = Some(dst);
        self.unposted_reads.push_back(PendingRead {
            slot: r,
            // SAFETY: inside the region, checked above.
            buf: unsafe { ptr.as_ptr().add(dst_offset) },
            len,
            desc,
            src: self.addrs[s],
            addr: key.addr + src_offset as u64,
            key: key.key,
        });
        self.post_reads()
    }
}

impl Ofi {
    /// Posts the reads waiting for the provider, in order, until it pushes
    /// back (after one round of progress).
    fn post_reads(&mut self) -> Result<(), TransportError> {
        let mut progressed = false;
        while let Some(read) = self.unposted_reads.front() {
            let (nrx, ntx) = (self.nrx, self.ntx);
            let ctx = (&mut self.contexts[nrx + ntx + read.slot] as *mut fi_context2).cast();
            // SAFETY: the destination lies inside a writable region that
            // `start_read` pinned: the table keeps its memory (and its
            // registration) until `poll` hands up this read's completion and
            // unpins it, whatever happens to the request meanwhile, and a
            // scope never ends over a pinned region. The context slot is
            // reserved for this read.
            let ret = unsafe {
                ((*(*self.ep).rma).read.expect("read"))(
                    self.ep,
                    read.buf.cast(),
                    read.len,
                    read.desc,
                    read.src,
                    read.addr,
                    read.key,
                    ctx,
                )
            };
            match ret {
                0 => {
                    self.unposted_reads.pop_front();
                }
                r if r == -(FI_EAGAIN as isize) => {
                    if progressed {
                        return Ok(());
                    }
                    progressed = true;
                    self.reap(None);
                }
                r => {
                    let read = self.unposted_reads.pop_front().expect("front");
                    self.reads_free.push(read.slot);
                    self.done_reads.push_back((
                        self.read_token[read.slot],
                        Some(TransportError::Setup(api::error(self.api, "fi_read", r))),
                        self.read_region[read.slot].take(),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Drop for Ofi {
    fn drop(&mut self) {
        // Tell every live peer how many frames to expect, then let the
        // sends finish (bounded), then close everything in order.
        if self.addrs.len() == self.ranks {
            // First learn which peers have left already (their goodbyes may
            // be queued): sending to a peer whose endpoint is closed is not
            // safe on every provider (shm within one process).
            for _ in 0..4 {
                self.reap(None);
            }
            while let Some((b, len)) = self.ready.pop_front() {
                let mut sink = |_: Event<'_>| {};
                self.deliver(b, len, &mut sink);
            }
            // One deadline for every goodbye, not one per peer: a job of
            // many ranks whose peers are gone must not take seconds each.
            let deadline = Instant::now() + Duration::from_secs(2);
            for peer in 0..self.ranks {
                if peer == self.me.index() || self.lost[peer] {
                    continue;
                }
                let mut prefix = [0u8; PREFIX];
                prefix[0..4].copy_from_slice(&self.me.0.to_le_bytes());
                prefix[6] = KIND_BYE;
                let count = self.sent[peer].to_le_bytes();
                while let Err(TransportError::WouldBlock) =
                    self.send_parts(peer, [&prefix, &count, &[]])
                {
                    if Instant::now() > deadline {
                        break;
                    }
                    self.reap(None);
                    std::thread::yield_now();
                }
            }
            let ntx = self.ntx;
            // Wait for the sends to complete: at most 2 s, and no longer
            // than 200 ms without one completing (a peer that is itself
            // closing will not acknowledge what is left; everything has been
            // handed to the provider by then).
            let deadline = Instant::now() + Duration::from_secs(2);
            let (mut free, mut moved) = (self.tx_free.len(), Instant::now());
            while self.tx_free.len() < ntx && Instant::now() < deadline {
                self.post_sends();
                self.reap(None);
                if self.tx_free.len() != free {
                    (free, moved) = (self.tx_free.len(), Instant::now());
                } else if self.unposted.is_empty() && moved.elapsed() > Duration::from_millis(200) {
                    break;
                }
                std::thread::yield_now();
            }
            // Some providers complete injected sends only with progress.
            let settle = Instant::now() + Duration::from_millis(50);
            while Instant::now() < settle {
                self.reap(None);
                std::thread::yield_now();
            }
        }
        let objects = [
            self.ep.cast::<fid>(),
            self.rx.mr.cast(),
            self.tx.mr.cast(),
            self.cq.cast(),
            self.av.cast(),
            self.domain.cast(),
            self.fabric.cast(),
        ];
        match &self.group {
            // SAFETY: each object is live (or null, when set-up stopped
            // early) and closed once, here.
            None => unsafe { close_all(objects) },
            // Closed when the group goes (see `Parked`).
            Some(group) => group.lock().unwrap_or_else(|e| e.into_inner()).objects.push(objects),
        }
    }
}
