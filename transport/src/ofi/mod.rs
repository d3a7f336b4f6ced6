//! The libfabric backend: reliable-datagram (`FI_EP_RDM`) endpoints, for
//! AWS EFA (`efa`) and every RDM provider libfabric offers (`tcp;ofi_rxm`,
//! `shm`, `udp;ofi_rxd`, …).
//!
//! # Layout
//!
//! As libfabric itself: one file per object — [`fabric`] (fabric and
//! domain), [`av`] (address vector), [`cq`] (completion queue), [`mr`]
//! (memory registration), [`ep`] (the endpoint and the memory its
//! operations use) — each an RAII wrapper that holds its parent, so that
//! objects close child first; every `unsafe` of the backend is in those
//! files, [`api`] (the loader) and [`choose`] (the entry to use). This
//! file is the protocol: frames, progress, reads, lost peers, closing.
//!
//! # Set-up
//!
//! libfabric is loaded at run time ([`api`]: `HPCOMM_LIBFABRIC`, else the
//! EFA installer's, else the system's); without it, `ofi` is unavailable
//! with a message that says where it was looked for, and every other
//! backend works. hpcomm asks for the library's API version up to 1.22.
//! The provider is `HPCOMM_OFI_PROVIDER` (or libfabric's own `FI_PROVIDER`)
//! if set, else `efa` when present, else the first RDM provider in
//! libfabric's order of preference other than `shm` (which cannot leave
//! the host) — never EFA's `efa-direct` fabric, whose messages are limited
//! to one MTU. Each rank opens, per NIC, fabric, domain, an address vector
//! of type `FI_AV_TABLE`, one completion queue and an endpoint; publishes
//! its endpoint names through the [`Exchange`]; and inserts every rank's
//! names into the address vectors (a name that cannot be inserted, or a
//! list that does not parse, is a set-up error naming the rank).
//!
//! # NICs
//!
//! An endpoint has one rail — fabric, domain, endpoint, buffers — per NIC
//! it uses ([`nics`], [`rail`]): by default one — for EFA a device near
//! the process (NUMA), the ranks taking the near devices in turn, as MPI
//! libraries place one process per NIC; for other providers the first
//! entry's — or what `HPCOMM_OFI_NICS` says (`all`, a count, or domain
//! names). Each rank
//! publishes every rail's name; rail `k` of one rank talks to rail `k` of
//! another, over the rails both have. Small frames, keep-alives and
//! goodbyes take rail 0; frames of 16 KiB and more take the shared rails
//! in turn (the runtime restores order, as over tcp stripes). With
//! several rails the rendezvous streams instead of reading, so that its
//! frames take every rail: a read is one operation on one NIC, and a
//! region's key is one NIC's.
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
//! EFA's mode. A region's registration is made the first time it is
//! exposed or read into, lives as long as the region (it is closed when
//! the region leaves its table, which revokes peers' reads; it holds its
//! domain, so it may outlive the endpoint), and serves every later use of
//! that region; the send and receive buffers are registered once. Keeping
//! registrations beyond their region's life would need a memory monitor to
//! stay correct when memory is freed and reused, which the providers' own
//! caches have (EFA's, with its memory hooks).
//!
//! # Rendezvous
//!
//! With `FI_RMA` the receiver of a large message reads the sender's
//! registered buffer with `fi_read` (single copy); without it the runtime
//! streams the data in frames after a clear-to-send. The EFA provider
//! offers `FI_RMA` also on devices that cannot read, emulating reads with
//! messages; when it says so (`FI_OPT_EFA_EMULATED_READ`) the backend
//! streams instead, as `hpcomm info` shows.
//!
//! # Lost peers and closing
//!
//! An RDM endpoint has no connection to lose. An endpoint that closes
//! tells every peer, with the number of frames it sent to it; a peer
//! reports it lost once it has delivered that many. A send that completes
//! with an error (a peer whose process is gone, over `tcp;ofi_rxm`) makes
//! that peer lost too. Closing is a step the runtime polls at finalize
//! ([`Transport::close`]): goodbyes, then the sends in flight, each step
//! returning at once; an endpoint dropped without it does the same
//! within a bound.

// The raw bindings and the loader stay inside the crate: everything they
// offer is unsafe to call, and users reach libfabric only through `Ofi`
// (`library`, `providers` and `OfiConfig` describe and choose it). The
// `compile_fail` test on `library` keeps it so.
pub(crate) mod api;
pub(crate) mod av;
pub(crate) mod choose;
pub(crate) mod cq;
pub(crate) mod ep;
pub(crate) mod fabric;
pub(crate) mod mr;
pub(crate) mod nics;
pub use nics::Nics;
pub(crate) mod rail;
#[rustfmt::skip]
#[allow(dead_code, unreachable_pub)]
pub(crate) mod sys;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ep::{Completion, Endpoint, Rma, Slots};
use rail::{Rail, NO_ADDR, STRIPE_AT};
use sys::{fi_addr_t, FI_EAGAIN, FI_ECANCELED, FI_MR_ALLOCATED, FI_MR_ENDPOINT, FI_MR_LOCAL};
use sys::{FI_DELIVERY_COMPLETE, FI_MR_PROV_KEY, FI_MR_VIRT_ADDR};

use crate::exchange::Exchange;
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
const KIND_PING: u8 = 4;
/// Reads in flight at once.
const MAX_RMA: usize = 256;
/// Receive buffers that may wait for an idle poll before they are posted
/// again (of at least 8).
const REPOST_AT: usize = 4;
/// The `mr_mode` bits the EFA provider asks for.
pub const EFA_MR_MODE: u64 =
    (FI_MR_LOCAL | FI_MR_ALLOCATED | FI_MR_PROV_KEY | FI_MR_VIRT_ADDR) as u64;
/// The `mr_mode` bits this backend supports.
const SUPPORTED_MR_MODE: u64 = EFA_MR_MODE | FI_MR_ENDPOINT as u64;
/// Idle polls between two looks at the clock for keep-alives.
const IDLE_POLLS_PER_CLOCK: u32 = 256;
/// How long closing may take in all.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);
/// How long closing waits for sends when none completes.
const CLOSE_QUIET: Duration = Duration::from_millis(200);
/// Progress made after the sends, for providers that complete injected
/// sends only with it.
const CLOSE_SETTLE: Duration = Duration::from_millis(50);

/// Settings of the ofi backend.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// Largest frame payload (at most the provider's message size;
    /// `HPCOMM_OFI_FRAME`). Every rail keeps `rx_buffers + tx_buffers`
    /// registered buffers of this size.
    pub max_payload: usize,
    /// Whether to use the provider's RMA reads for the single-copy
    /// rendezvous (where it offers them); without, large messages are
    /// pipelined in frames, as on a provider without `FI_RMA`.
    pub reads: bool,
    /// Receive buffers posted.
    pub rx_buffers: usize,
    /// Send buffers.
    pub tx_buffers: usize,
    /// A peer to which a send has stayed unfinished this long is lost
    /// (`Silent`): its host or process is gone, or the link is cut. To
    /// know, an endpoint that waits sends the peers it has talked to a
    /// small frame that needs no answer every tenth of it (from 100 ms to
    /// 5 s): a live peer's provider or device takes it whether or not the
    /// peer polls; a dead one's never does, or the send fails at once.
    /// Zero: never.
    pub peer_timeout: Duration,
    /// Which NICs to open a rail on (`HPCOMM_OFI_NICS`).
    pub nics: nics::Nics,
}

impl OfiConfig {
    /// Applies the `HPCOMM_OFI_*` variables found through `lookup`.
    pub fn read_vars(&mut self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
        if let Some(v) = lookup("HPCOMM_OFI_PROVIDER") {
            let v = v.trim();
            self.provider = (!v.is_empty()).then(|| v.to_string());
        }
        if let Some(v) = lookup("HPCOMM_OFI_MR_MODE") {
            self.efa_mr_mode = match v.trim() {
                "efa" => true,
                "" | "provider" => false,
                other => {
                    return Err(format!(
                        "HPCOMM_OFI_MR_MODE={other:?}: use efa (ask for EFA's mr_mode bits) or provider"
                    ))
                }
            };
        }
        if let Some(v) = crate::backend::parse::<u8>(lookup, "HPCOMM_OFI_READS")? {
            self.reads = v != 0;
        }
        if let Some(v) = crate::backend::parse::<usize>(lookup, "HPCOMM_OFI_FRAME")? {
            if !(4096..=16 << 20).contains(&v) {
                return Err(format!("HPCOMM_OFI_FRAME={v}: use 4096 to 16777216 bytes"));
            }
            self.max_payload = v;
        }
        if let Some(v) = lookup("HPCOMM_OFI_NICS") {
            self.nics = nics::Nics::parse(&v)?;
        }
        if let Some(v) = crate::backend::parse::<u64>(lookup, "HPCOMM_PEER_TIMEOUT")? {
            self.peer_timeout = Duration::from_secs(v);
        }
        Ok(())
    }
}

/// How many keep-alive intervals make the peer timeout.
fn ticks_for(timeout: Duration) -> u32 {
    match keepalive_for(timeout) {
        d if d.is_zero() => u32::MAX,
        d => (timeout.as_nanos() / d.as_nanos()).max(1) as u32,
    }
}

/// The keep-alive interval for a peer timeout: a tenth of it, from 100 ms
/// to 5 s (zero: none). Sends are judged once an interval, so a dead peer
/// is found within the timeout plus one interval.
pub fn keepalive_for(timeout: Duration) -> Duration {
    if timeout.is_zero() {
        return Duration::ZERO;
    }
    (timeout / 10).clamp(Duration::from_millis(100), Duration::from_secs(5))
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
            peer_timeout: Duration::from_secs(30),
            nics: nics::Nics::Default,
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

/// The libfabric library this process would use: its version, the API
/// version hpcomm asks it for, and where it was loaded from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Library {
    /// `(major, minor)` of the library.
    pub version: (u32, u32),
    /// `(major, minor)` of the API hpcomm asks for: the library's, up to
    /// the newest whose behaviour hpcomm follows (1.22).
    pub api: (u32, u32),
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
    Ok(Library { version: api.version(), api: api.api_version(), path: api.path.clone() })
}

/// Every RDM provider libfabric offers here, in its order of preference
/// (those with reads first).
pub fn providers() -> Result<Vec<ProviderInfo>, String> {
    choose::providers(api::api()?)
}

/// The providers that bypass the kernel: where one is present,
/// `--transport auto` uses ofi between nodes.
pub const KERNEL_BYPASS: [&str; 6] = ["efa", "verbs;ofi_rxm", "cxi", "psm3", "opx", "psm2"];

/// Whether libfabric loads here and offers a kernel-bypass provider
/// ([`KERNEL_BYPASS`]; never EFA's direct fabric alone).
pub fn kernel_bypass_present() -> bool {
    providers().is_ok_and(|list| {
        list.iter().any(|p| KERNEL_BYPASS.contains(&p.name.as_str()) && p.fabric != "efa-direct")
    })
}

/// What `hpcomm info` shows of the ofi backend: the library, its RDM
/// providers, and the endpoint `config` would open.
pub(crate) fn probe(config: &OfiConfig) -> crate::backend::Probe {
    let mut notes = Vec::new();
    let library = match library() {
        Ok(library) => library,
        Err(e) => return crate::backend::Probe { status: Err(e), notes },
    };
    let ((major, minor), (api_major, api_minor)) = (library.version, library.api);
    notes.push(format!(
        "libfabric {major}.{minor} from {} (API {api_major}.{api_minor} asked for; HPCOMM_LIBFABRIC to change)",
        library.path
    ));
    let fork: Vec<String> = api::FORK_SAFETY
        .iter()
        .map(|v| format!("{v}={}", std::env::var(v).unwrap_or_default()))
        .collect();
    notes.push(format!("fork safety    {}", fork.join(" ")));
    match providers() {
        Ok(list) if list.is_empty() => notes.push("no RDM provider found".into()),
        Ok(list) => {
            notes.push("RDM providers (libfabric's order of preference):".into());
            for p in list {
                let max = match p.max_msg_size {
                    m if m >= 1 << 48 => "any size".to_string(),
                    m => format!("up to {m} B"),
                };
                notes.push(format!(
                    "  {:<14} {:<16} {:<6} inject {:>6} B, messages {max}, reads {}, mr_mode {:#x}",
                    p.name,
                    p.fabric,
                    p.domain,
                    p.inject_size,
                    if p.rma { "yes" } else { "no" },
                    p.mr_mode
                ));
            }
        }
        Err(e) => notes.push(format!("cannot list providers: {e}")),
    }
    let status = match Ofi::local_job(1, config) {
        Ok(job) => {
            notes.push(format!(
                "chosen: {}, mr_mode {:#x} (HPCOMM_OFI_PROVIDER or FI_PROVIDER to change)",
                job[0].provider(),
                job[0].mr_mode()
            ));
            let nics: Vec<String> = job[0]
                .nics()
                .iter()
                .map(|d| match nics::nic_node(d) {
                    Some(n) => format!("{d} (NUMA node {n})"),
                    None => d.to_string(),
                })
                .collect();
            let here = nics::my_node().map_or("unbound".to_string(), |n| format!("node {n}"));
            notes.push(format!(
                "NICs           {} — this process: {here} (HPCOMM_OFI_NICS to change)",
                nics.join(", ")
            ));
            let reads = match job[0].emulated_reads() {
                _ if job[0].nics().len() > 1 => {
                    "not used: with several NICs the rendezvous streams over all of them"
                }
                Some(true) => "emulated by the provider (no RDMA read on this device): not used",
                Some(false) => "by the device",
                None => "as the provider offers them (it does not say whether they are emulated)",
            };
            notes.push(format!("reads          {reads}"));
            Ok(job[0].capabilities().clone())
        }
        Err(e) => Err(format!("unusable: {e}")),
    };
    crate::backend::Probe { status, notes }
}

/// A read or write waiting for the provider to take it.
struct PendingRma {
    slot: usize,
    dir: Rma,
    /// The local region and offset: a read's destination, a write's source.
    local: RegionId,
    local_offset: usize,
    len: usize,
    peer: fi_addr_t,
    addr: u64,
    key: u64,
}

/// Where closing is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closing {
    /// Not started.
    Open,
    /// Telling peers, from this one on.
    Goodbyes { next: usize, since: Instant },
    /// Waiting for the sends in flight.
    Flushing { since: Instant, free: usize, moved: Instant },
    /// Progress for a moment more.
    Settling { until: Instant },
    /// Nothing left to do.
    Closed,
}

/// An endpoint of the ofi backend.
pub struct Ofi {
    me: PeerId,
    ranks: usize,
    /// The ranks this endpoint talks to (the others another way:
    /// [`crate::hybrid`]).
    reach: Vec<bool>,
    caps: Capabilities,
    provider: String,
    mr_mode: u64,
    emulated_reads: Option<bool>,
    /// One endpoint per NIC, rail 0 first (reads, keep-alives, small
    /// frames).
    rails: Vec<Rail>,
    /// How many rails this endpoint shares with each rank.
    peer_rails: Vec<u8>,
    /// The rail the last striped frame took.
    next_rail: usize,
    completions: [Completion; cq::BATCH],
    /// Reads the provider could not take yet.
    unposted_rma: VecDeque<PendingRma>,
    rma_free: Vec<usize>,
    rma_token: Vec<u64>,
    done_rma: VecDeque<(u64, Option<TransportError>, Option<RegionId>)>,
    scratch: Vec<u8>,
    /// Frames to this endpoint itself.
    own: VecDeque<Vec<u8>>,
    sent: Vec<u64>,
    received: Vec<u64>,
    bye: Vec<Option<u64>>,
    lost: Vec<bool>,
    /// Why each lost peer is lost.
    cause: Vec<LossCause>,
    reported: Vec<bool>,
    /// Whether some lost peer has not been reported yet.
    unreported: bool,
    closing: Closing,
    /// See [`OfiConfig::peer_timeout`]: the interval of keep-alives, and
    /// how many intervals a send may stay unfinished.
    keepalive: Duration,
    timeout_ticks: u32,
    next_probe: Instant,
    /// Keep-alive intervals so far, and the one in which each keep-alive
    /// still unfinished was sent (`None`: free, or a frame of data: a send
    /// of data may wait for a peer that computes, a keep-alive, taken by the
    /// peer's provider or device, does not).
    tick: u32,
    idle_polls: u32,
    /// For endpoints of one process's in-process job: where their
    /// endpoints wait to be closed together.
    group: Option<Arc<Mutex<Parked>>>,
}

/// The endpoints of in-process ranks that have been dropped, closed when
/// the group itself goes — when the last endpoint of the job and the
/// set-up that made them are gone, whether set-up succeeded or failed half
/// way: libfabric's shm provider shares state between the endpoints of one
/// process, and progress (or a goodbye) on one after another has closed
/// can touch freed memory.
#[derive(Default)]
struct Parked {
    endpoints: Vec<Endpoint>,
}

impl std::fmt::Debug for Ofi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ofi")
            .field("me", &self.me)
            .field("ranks", &self.ranks)
            .field("provider", &self.provider)
            .field("rails", &self.rails.len())
            .finish()
    }
}

/// Why a peer is lost, from the error of a send to it: no answer within
/// the provider's time (a dead host, a cut link) is `Silent`; anything
/// else (a reset or refused connection, an endpoint gone) `Ended`.
fn cause_of(err: i32) -> LossCause {
    let silent = [sys::FI_ETIMEDOUT, sys::FI_EHOSTUNREACH, sys::FI_ENETUNREACH];
    if silent.iter().any(|&e| e as i32 == err.abs()) {
        LossCause::Silent
    } else {
        LossCause::Ended
    }
}

/// Whether a provider's reads of a writable region (a one-sided window),
/// or writes into one, are copies from outside this process that complete
/// without the owner's progress: the shm provider's (the kernel's
/// cross-memory copy; the self-test's passive get and put check it) and
/// EFA's device RDMA reads and writes. Not where the provider emulates
/// them with messages its owner's progress must answer (`ofi_rxm`: a
/// window read there waited for an owner that made no call; `ofi_rxd`;
/// EFA without device reads or writes): windows there are served by their
/// owner, as over tcp. `emulated` is what EFA says of the operation.
fn from_outside(provider: &str, emulated: Option<bool>) -> bool {
    match provider {
        "shm" => true,
        "efa" => emulated == Some(false),
        _ => false,
    }
}

/// The flags of a window's write: complete once the bytes are in the
/// peer's memory. The shm provider's writes are the origin's own
/// cross-memory copy, in the peer's memory when the write completes
/// (asking it for `FI_DELIVERY_COMPLETE` instead makes the write wait for
/// the peer's progress, which a one-sided write must not); elsewhere
/// (EFA's device writes) `FI_DELIVERY_COMPLETE` says so.
fn write_flags(provider: &str) -> u64 {
    match provider {
        "shm" => 0,
        _ => FI_DELIVERY_COMPLETE as u64,
    }
}

/// Whether the rendezvous reads: the provider offers reads, the settings
/// allow them, and they are not emulated with messages (EFA on a device
/// without RDMA read, where the pipelined copy is faster).
fn use_reads(offered: bool, allowed: bool, emulated: Option<bool>) -> bool {
    offered && allowed && emulated != Some(true)
}

/// What a rank publishes: how many rails it has, then each rail's
/// endpoint name with its length.
fn encode_names(names: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![names.len() as u8];
    for name in names {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name);
    }
    out
}

/// The rail names a peer published, checked: one to [`nics::MAX_RAILS`],
/// and each that this endpoint will use (the first `lens.len()`) of the
/// length of its own rail's names.
fn decode_names<'a>(bytes: &'a [u8], lens: &[usize]) -> Result<Vec<&'a [u8]>, String> {
    let (&count, mut rest) = bytes.split_first().ok_or("published no address")?;
    let count = count as usize;
    if count == 0 || count > nics::MAX_RAILS {
        return Err(format!("published {count} NICs"));
    }
    let mut names = Vec::with_capacity(count);
    for k in 0..count {
        let Some((len, tail)) = rest.split_first_chunk::<2>() else {
            return Err("published a truncated address list".into());
        };
        let len = u16::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err("published a truncated address list".into());
        }
        if let Some(&mine) = lens.get(k) {
            if len != mine {
                return Err(format!(
                    "published an address of {len} bytes for NIC {k}, this provider's are {mine}"
                ));
            }
        }
        names.push(&tail[..len]);
        rest = &tail[len..];
    }
    if !rest.is_empty() {
        return Err("published bytes after its addresses".into());
    }
    Ok(names)
}

impl Ofi {
    /// Joins the job as rank `me` of `ranks` over libfabric.
    pub fn open(
        me: usize,
        ranks: usize,
        exchange: &mut dyn Exchange,
        config: &OfiConfig,
    ) -> Result<Ofi, TransportError> {
        Ofi::open_in(me, ranks, &vec![true; ranks], exchange, config, None)
    }

    /// [`open`](Ofi::open), talking only to the peers `p` with `reach[p]`
    /// (the others are reached another way: [`crate::hybrid`]). Every rank
    /// must pass a `reach` that agrees with the others'.
    pub fn open_among(
        me: usize,
        ranks: usize,
        reach: &[bool],
        exchange: &mut dyn Exchange,
        config: &OfiConfig,
    ) -> Result<Ofi, TransportError> {
        if reach.len() != ranks || me >= ranks {
            return Err(setup("the reach mask must have one entry per rank"));
        }
        Ofi::open_in(me, ranks, reach, exchange, config, None)
    }

    /// [`open`](Ofi::open), parking the endpoint in `group` when it is
    /// dropped — also when set-up fails after the endpoint exists.
    fn open_in(
        me: usize,
        ranks: usize,
        reach: &[bool],
        exchange: &mut dyn Exchange,
        config: &OfiConfig,
        group: Option<Arc<Mutex<Parked>>>,
    ) -> Result<Ofi, TransportError> {
        let api = api::api().map_err(setup)?;
        let infos = choose::choose(api, config, me)?;
        let described: Vec<ProviderInfo> = infos.iter().map(choose::describe_first).collect();
        let prov = described[0].name.clone();

        // Limits: the smallest of the rails'.
        let max_msg_size = described.iter().map(|d| d.max_msg_size).min().unwrap_or(0);
        let max_payload = config.max_payload.min(max_msg_size.saturating_sub(PREFIX + MAX_HEADER));
        if max_payload < 1024 {
            return Err(setup(format!(
                "provider {prov}: messages of {max_msg_size} bytes are too small"
            )));
        }
        let slots = Slots {
            rx: config.rx_buffers.max(8),
            tx: config.tx_buffers.max(8),
            rma: MAX_RMA,
            frame: PREFIX + MAX_HEADER + max_payload,
        };
        let mut rails = Vec::with_capacity(infos.len());
        for (info, d) in infos.into_iter().zip(&described) {
            let fabric = fabric::Fabric::open(api, &info).map_err(setup)?;
            let domain = fabric::Domain::open(&fabric, &info).map_err(setup)?;
            let endpoint = Endpoint::open(&domain, &info, ranks, d.mr_mode, slots)
                .map_err(|e| setup(format!("{e} (NIC {})", d.domain)))?;
            // Under back-pressure, 64 of 1,088 frames injected over
            // ofi_rxd (1.17) never arrived; from registered send buffers
            // every one does.
            let inject_size = if prov.contains("ofi_rxd") { 0 } else { d.inject_size };
            rails.push(Rail::new(endpoint, info, d.domain.clone(), inject_size, slots.tx));
        }
        let emulated_reads = (prov == "efa")
            .then(|| rails[0].ep_ref().option_bool(ep::FI_OPT_EFA_EMULATED_READ))
            .flatten();
        let emulated_writes = (prov == "efa")
            .then(|| rails[0].ep_ref().option_bool(ep::FI_OPT_EFA_EMULATED_WRITE))
            .flatten();
        // With several rails the rendezvous streams, so that its frames
        // take every rail; a read is one operation on one rail.
        let rma = use_reads(
            described[0].rma && rails[0].ep_ref().has_read(),
            config.reads && rails.len() == 1,
            emulated_reads,
        );
        let reads_from_outside = rma && from_outside(&prov, emulated_reads);
        let rma_write = reads_from_outside
            && rails[0].ep_ref().has_write()
            && from_outside(&prov, emulated_writes);
        let eager_limit = config.eager_limit.min(max_payload);
        let mut ofi = Ofi {
            me: PeerId(me as u32),
            ranks,
            reach: reach.to_vec(),
            caps: Capabilities {
                name: "ofi",
                max_header: MAX_HEADER,
                max_payload,
                inline_limit: 1024.min(eager_limit),
                eager_limit,
                rma_read: rma,
                max_read: if rma { max_msg_size.min(1 << 30) } else { 0 },
                // Closing a registration makes later reads fail on some
                // providers and never complete on others (udp;ofi_rxd):
                // the runtime's rule (a sender keeps its buffer until
                // `FIN`) is what protects data.
                revocable: false,
                reads_from_outside,
                rma_write,
                ordered: false,
                latency_hint: Duration::from_micros(5),
                spin_pause: false,
                yield_hint: Duration::from_micros(300),
                bandwidth_hint: 10_000_000_000,
            },
            provider: prov.clone(),
            mr_mode: described[0].mr_mode,
            emulated_reads,
            rails,
            peer_rails: vec![0; ranks],
            next_rail: 0,
            completions: [Completion::Unknown { err: 0 }; cq::BATCH],
            unposted_rma: VecDeque::new(),
            rma_free: (0..MAX_RMA).rev().collect(),
            rma_token: vec![0; MAX_RMA],
            done_rma: VecDeque::new(),
            scratch: Vec::new(),
            own: VecDeque::new(),
            sent: vec![0; ranks],
            received: vec![0; ranks],
            bye: vec![None; ranks],
            lost: vec![false; ranks],
            cause: vec![LossCause::Ended; ranks],
            reported: vec![false; ranks],
            unreported: false,
            closing: Closing::Open,
            keepalive: keepalive_for(config.peer_timeout),
            timeout_ticks: ticks_for(config.peer_timeout),
            next_probe: Instant::now() + keepalive_for(config.peer_timeout),
            tick: 0,
            idle_polls: 0,
            group,
        };
        ofi.caps.validate().map_err(setup)?;
        for r in 0..ofi.rails.len() {
            for b in 0..slots.rx {
                ofi.post_recv(r, b)?;
            }
        }

        // Addresses: every rank publishes the names of its rails.
        let names: Vec<&[u8]> = ofi.rails.iter().map(|r| r.ep_ref().name()).collect();
        let published =
            exchange.allgather(me, ranks, "ofi", &encode_names(&names)).map_err(setup)?;
        let lens: Vec<usize> = names.iter().map(|n| n.len()).collect();
        let mut addrs = vec![vec![NO_ADDR; ranks]; ofi.rails.len()];
        for (r, peer) in published.iter().enumerate() {
            let theirs = decode_names(peer, &lens).map_err(|e| setup(format!("rank {r} {e}")))?;
            ofi.peer_rails[r] = theirs.len().min(ofi.rails.len()) as u8;
            for (k, name) in theirs.iter().enumerate().take(ofi.rails.len()) {
                addrs[k][r] = ofi.rails[k].ep().insert(name).map_err(|e| {
                    setup(format!(
                        "cannot insert the address of rank {r} (NIC {k}) into the address vector: {e}"
                    ))
                })?;
            }
        }
        // Only now does the endpoint talk to peers (and say goodbye).
        for (rail, addrs) in ofi.rails.iter_mut().zip(addrs) {
            rail.addrs = addrs;
        }
        exchange.fence().map_err(setup)?;
        if prov.contains("ofi_rxm") || prov.contains("ofi_rxd") || prov == "shm" {
            ofi.connect_all()?;
            exchange.fence().map_err(setup)?;
        }
        let nics: Vec<&str> = ofi.rails.iter().map(|r| r.domain.as_str()).collect();
        tracing::debug!(provider = %prov, ?nics, rma, ?emulated_reads, max_payload, "ofi endpoint ready");
        Ok(ofi)
    }

    /// Sets up the per-peer state of the utility providers and shm —
    /// `ofi_rxm`'s connections, `ofi_rxd`'s handshake, shm's mapping of the
    /// peer's region — with every peer now, on every rail the two share,
    /// by exchanging a hello: both need the two sides to make progress,
    /// and a peer that does not (a rank busy computing, or one that is
    /// leaving) would otherwise hold up the first frame to it. EFA's
    /// handshake is cheap and its jobs large, so it stays lazy there.
    fn connect_all(&mut self) -> Result<(), TransportError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let prefix = self.prefix(KIND_HELLO, 0);
        let me = self.me.index();
        let skip = |p: usize| p == me || !self.reach[p];
        // Hellos to send on each rail, and to hear from each peer (one per
        // shared rail).
        let mut greeted: Vec<Vec<bool>> = (0..self.rails.len())
            .map(|k| (0..self.ranks).map(|p| skip(p) || self.peer_rails[p] as usize <= k).collect())
            .collect();
        let mut missing: Vec<usize> = (0..self.ranks)
            .map(|p| if skip(p) { 0 } else { self.peer_rails[p] as usize })
            .collect();
        while greeted.iter().flatten().any(|&g| !g)
            || missing.iter().any(|&m| m > 0)
            || self.rails.iter().any(|r| !r.flushed())
        {
            if Instant::now() > deadline {
                let silent: Vec<usize> = (0..self.ranks).filter(|&r| missing[r] > 0).collect();
                return Err(setup(format!("no hello from ranks {silent:?} within 60 s")));
            }
            for (k, greeted) in greeted.iter_mut().enumerate() {
                for (peer, greeted) in greeted.iter_mut().enumerate().filter(|(_, g)| !**g) {
                    match self.send_on(k, peer, [&prefix, &[], &[]]) {
                        Ok(()) => *greeted = true,
                        Err(TransportError::WouldBlock) => {}
                        Err(e) => return Err(setup(format!("hello to rank {peer}: {e}"))),
                    }
                }
            }
            self.post_sends_all();
            self.reap(None);
            for r in 0..self.rails.len() {
                while let Some((b, len)) = self.rails[r].ready.pop_front() {
                    match self.rails[r].ep_ref().rx_frame(b, len) {
                        Some(frame) if frame.len() >= PREFIX && frame[6] == KIND_HELLO => {
                            let src = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
                            if let Some(m) = missing.get_mut(src as usize) {
                                *m = m.saturating_sub(1);
                            }
                        }
                        _ => tracing::warn!("ofi: a frame before set-up ended"),
                    }
                    self.post_recv(r, b)?;
                }
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
        let group = Arc::new(Mutex::new(Parked::default()));
        crate::exchange::local_job(ranks, |me, exchange| {
            Ofi::open_in(me, ranks, &vec![true; ranks], exchange, config, Some(group.clone()))
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

    /// Whether the provider emulates reads with messages (EFA on a device
    /// without RDMA read; the rendezvous then streams instead); `None`
    /// when the provider does not say.
    pub fn emulated_reads(&self) -> Option<bool> {
        self.emulated_reads
    }

    /// The NICs (libfabric domains) of this endpoint's rails, rail 0
    /// first.
    pub fn nics(&self) -> Vec<&str> {
        self.rails.iter().map(|r| r.domain.as_str()).collect()
    }

    /// How many frames (of every kind) each rail has sent, rail 0 first.
    pub fn frames_per_nic(&self) -> Vec<u64> {
        self.rails.iter().map(|r| r.frames).collect()
    }

    /// Whether `poll` has something to report without waiting (for the
    /// hybrid backend, which sleeps in one backend at a time).
    pub fn has_work(&mut self) -> bool {
        let ready = |ofi: &Ofi| ofi.rails.iter().any(|r| !r.ready.is_empty());
        if !self.own.is_empty() || ready(self) || !self.done_rma.is_empty() {
            return true;
        }
        self.reap(None);
        ready(self) || !self.done_rma.is_empty() || self.unreported
    }

    /// The 8-byte prefix of a frame of `kind` with a header of `hlen`.
    fn prefix(&self, kind: u8, hlen: usize) -> [u8; PREFIX] {
        let mut prefix = [0u8; PREFIX];
        prefix[0..4].copy_from_slice(&self.me.0.to_le_bytes());
        prefix[4..6].copy_from_slice(&(hlen as u16).to_le_bytes());
        prefix[6] = kind;
        prefix
    }

    /// Posts receive buffer `b` of rail `r`, making room by progress while
    /// the provider pushes back (at most 5 s).
    fn post_recv(&mut self, r: usize, b: usize) -> Result<(), TransportError> {
        let start = Instant::now();
        loop {
            match self.rails[r].ep().post_recv(b) {
                0 => return Ok(()),
                ret if ret == -(FI_EAGAIN as isize) && start.elapsed() < Duration::from_secs(5) => {
                    // Progress, keeping completed receives for later.
                    self.reap(None);
                }
                ret => return Err(setup(self.error("fi_recv", ret))),
            }
        }
    }

    fn error(&self, what: &str, ret: isize) -> String {
        api::api().map_or_else(|_| format!("{what}: {ret}"), |api| api::error(api, what, ret))
    }

    /// Reads every rail's completion queue once. Receives go to `sink`
    /// when given, else to their rail's `ready`; sends free their buffers;
    /// reads are recorded. Returns how many frames went to `sink`.
    fn reap(&mut self, mut sink: Option<&mut dyn FnMut(Event<'_>)>) -> usize {
        let mut delivered = 0;
        for r in 0..self.rails.len() {
            delivered += self.reap_rail(r, &mut sink);
        }
        delivered
    }

    /// [`reap`](Ofi::reap) for rail `r`.
    fn reap_rail(&mut self, r: usize, sink: &mut Option<&mut dyn FnMut(Event<'_>)>) -> usize {
        let Ofi { rails, completions, .. } = self;
        let n = rails[r].ep().reap(completions);
        let mut delivered = 0;
        for i in 0..n {
            match self.completions[i] {
                Completion::Recv { buf, len } => match sink.as_deref_mut() {
                    Some(sink) => delivered += self.deliver(r, buf, len, sink),
                    None => self.rails[r].ready.push_back((buf, len)),
                },
                Completion::Sent { slot } => self.rails[r].free_tx(slot),
                Completion::Rma { slot, region } => {
                    self.rma_free.push(slot);
                    self.done_rma.push_back((self.rma_token[slot], None, region));
                }
                Completion::SendFailed { slot, err } => {
                    self.rails[r].free_tx(slot);
                    let peer = self.rails[r].tx_peer[slot] as usize;
                    let why = self.error("send", err as isize);
                    tracing::debug!("ofi: a send to rank {peer} failed ({why}); it is lost");
                    self.cause[peer] = cause_of(err);
                    self.mark_lost(peer);
                }
                Completion::RecvFailed { buf, err } => {
                    if err != FI_ECANCELED as i32 {
                        tracing::warn!("ofi: {}; reposting", self.error("a receive", err as isize));
                        let _ = self.post_recv(r, buf);
                    }
                }
                Completion::RmaFailed { slot, region, err } => {
                    tracing::debug!("ofi: {}", self.error("a read or write", err as isize));
                    self.rma_free.push(slot);
                    self.done_rma.push_back((
                        self.rma_token[slot],
                        Some(TransportError::InvalidRegion),
                        region,
                    ));
                }
                Completion::Unknown { err } => {
                    tracing::warn!("ofi: a completion with an unknown context (error {err})")
                }
            }
        }
        delivered
    }

    /// Hands the frame in receive buffer `b` of rail `r` to `sink`, then
    /// reposts it.
    fn deliver(
        &mut self,
        r: usize,
        b: usize,
        len: usize,
        sink: &mut dyn FnMut(Event<'_>),
    ) -> usize {
        let mut delivered = 0;
        let ranks = self.ranks;
        let Ofi { rails, received, bye, .. } = self;
        let mut src_done = None;
        if let Some(frame) = rails[r].ep_ref().rx_frame(b, len).filter(|f| f.len() >= PREFIX) {
            let src = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
            let hlen = u16::from_le_bytes([frame[4], frame[5]]) as usize;
            let kind = frame[6];
            if src < ranks && PREFIX + hlen <= frame.len() {
                match kind {
                    KIND_FRAME => {
                        received[src] += 1;
                        sink(Event::Frame {
                            src: PeerId(src as u32),
                            header: &frame[PREFIX..PREFIX + hlen],
                            payload: &frame[PREFIX + hlen..],
                        });
                        delivered = 1;
                    }
                    KIND_HELLO | KIND_PING => {}
                    KIND_BYE if frame.len() >= PREFIX + 8 => {
                        let mut n = [0u8; 8];
                        n.copy_from_slice(&frame[PREFIX..PREFIX + 8]);
                        bye[src] = Some(u64::from_le_bytes(n));
                    }
                    _ => tracing::warn!("ofi: a malformed frame from rank {src}"),
                }
                // Frames sent before the goodbye may still come on other
                // rails: the peer is lost once all of them have.
                if bye[src].is_some_and(|n| received[src] >= n) {
                    src_done = Some(src);
                }
            }
        }
        if let Some(src) = src_done {
            self.mark_lost(src);
        }
        // Reposting costs a call into the provider (and its locks): it is
        // left for an idle poll, off the path of the next message, unless
        // few buffers remain posted.
        self.rails[r].to_repost.push(b);
        if self.rails[r].to_repost.len() > REPOST_AT {
            self.repost(r);
        }
        delivered
    }

    /// Posts the receive buffers of rail `r` the runtime has finished with.
    fn repost(&mut self, r: usize) {
        while let Some(b) = self.rails[r].to_repost.pop() {
            if let Err(e) = self.post_recv(r, b) {
                tracing::warn!("ofi: {e}");
            }
        }
    }

    /// The rail a frame of `total` bytes to `dst` takes: rail 0, or the
    /// rails the pair shares in turn for frames of [`STRIPE_AT`] and more.
    fn rail_for(&mut self, dst: usize, total: usize) -> usize {
        let shared = self.peer_rails[dst] as usize;
        if shared < 2 || total < STRIPE_AT {
            return 0;
        }
        self.next_rail = self.next_rail.wrapping_add(1);
        self.next_rail % shared
    }

    /// Sends one message of `parts` to `dst` on the rail it takes
    /// ([`rail_for`](Ofi::rail_for)).
    fn send_parts(&mut self, dst: usize, parts: [&[u8]; 3]) -> Result<(), TransportError> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let r = self.rail_for(dst, total);
        self.send_on(r, dst, parts)
    }

    /// Sends one message of `parts` to `dst` on rail `r`: by inject when
    /// it fits, else from a send buffer. A message the provider cannot
    /// take now (`-FI_EAGAIN` after one round of progress) waits in its
    /// send buffer and is posted by a later `poll`; `WouldBlock` only when
    /// every send buffer is taken.
    fn send_on(&mut self, r: usize, dst: usize, parts: [&[u8]; 3]) -> Result<(), TransportError> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total <= self.rails[r].inject_size && self.rails[r].unposted.is_empty() {
            self.scratch.clear();
            for p in parts {
                self.scratch.extend_from_slice(p);
            }
            for attempt in 0..2 {
                if attempt == 1 {
                    self.reap(None);
                }
                let Ofi { rails, scratch, .. } = self;
                let addr = rails[r].addrs[dst];
                match rails[r].ep().inject(scratch, addr) {
                    0 => {
                        rails[r].frames += 1;
                        return Ok(());
                    }
                    ret if ret == -(FI_EAGAIN as isize) => {}
                    ret => return Err(self.send_error(dst, ret)),
                }
            }
        }
        self.send_buffered(r, dst, parts).map(|_| ())
    }

    /// Sends one message of `parts` to `dst` from a send buffer of rail
    /// `r`, whose completion (or error) comes back through the queue —
    /// unlike an injected send's, which some providers never report.
    /// Returns the buffer's slot.
    fn send_buffered(
        &mut self,
        r: usize,
        dst: usize,
        parts: [&[u8]; 3],
    ) -> Result<usize, TransportError> {
        let slot = match self.rails[r].fill(dst, parts) {
            Some(slot) => slot,
            None => {
                self.reap(None);
                self.rails[r].fill(dst, parts).ok_or(TransportError::WouldBlock)?
            }
        };
        self.rails[r].frames += 1;
        self.post_sends(r);
        Ok(slot)
    }

    /// Posts every rail's send buffers waiting for the provider.
    fn post_sends_all(&mut self) {
        for r in 0..self.rails.len() {
            if !self.rails[r].unposted.is_empty() {
                self.post_sends(r);
            }
        }
    }

    /// Posts the send buffers of rail `r` waiting for the provider, in
    /// order, until it pushes back (after one round of progress).
    fn post_sends(&mut self, r: usize) {
        let mut progressed = false;
        while let Some(&slot) = self.rails[r].unposted.front() {
            let rail = &mut self.rails[r];
            let dst = rail.tx_peer[slot] as usize;
            if self.lost[dst] {
                rail.unposted.pop_front();
                rail.free_tx(slot);
                continue;
            }
            let (len, addr) = (rail.tx_len[slot], rail.addrs[dst]);
            match rail.ep().send(slot, len, addr) {
                0 => {
                    rail.unposted.pop_front();
                }
                ret if ret == -(FI_EAGAIN as isize) => {
                    if progressed {
                        return;
                    }
                    progressed = true;
                    self.reap(None);
                }
                ret => {
                    rail.unposted.pop_front();
                    rail.free_tx(slot);
                    let _ = self.send_error(dst, ret);
                }
            }
        }
    }

    /// Sends a keep-alive frame to every peer this endpoint has talked to
    /// and still reaches, from a send buffer (an injected send's failure
    /// is never reported): it needs no answer (a peer busy computing need
    /// not poll), but the send to a peer whose process or host is gone
    /// fails or never finishes (`ofi_rxm` retries a refused connection for
    /// ever; EFA's device gets no acknowledgement), and the peer is lost.
    /// A peer with a keep-alive still unfinished gets no other. They go
    /// over rail 0.
    fn probe_peers(&mut self) {
        let prefix = self.prefix(KIND_PING, 0);
        for peer in 0..self.ranks {
            let talked = self.sent[peer] > 0 || self.received[peer] > 0;
            let pending = self.rails[0].keepalive_pending(peer);
            if peer != self.me.index() && self.reach[peer] && !self.lost[peer] && talked && !pending
            {
                // Not injected: the send's error is what tells. A full set of
                // send buffers skips the probe until the next interval.
                let sent = self.send_buffered(0, peer, [&prefix, &[], &[]]);
                tracing::trace!(peer, ?sent, "ofi: keep-alive");
                if let Ok(slot) = sent {
                    // Unfinished (a peer that was lost meanwhile freed it).
                    let rail = &mut self.rails[0];
                    if !rail.tx_free.contains(&slot) {
                        rail.tx_since[slot] = Some(self.tick);
                    }
                }
            }
        }
    }

    /// Once a keep-alive interval: loses the peers a keep-alive has waited
    /// on for the peer timeout, then probes the others.
    fn maybe_probe(&mut self) {
        if self.keepalive.is_zero() || self.closing != Closing::Open {
            return;
        }
        let now = Instant::now();
        if now < self.next_probe {
            return;
        }
        self.next_probe = now + self.keepalive;
        self.tick = self.tick.wrapping_add(1);
        for slot in 0..self.rails[0].ntx {
            let Some(since) = self.rails[0].tx_since[slot] else { continue };
            let peer = self.rails[0].tx_peer[slot] as usize;
            if self.tick.wrapping_sub(since) > self.timeout_ticks && !self.lost[peer] {
                let after = self.keepalive * self.timeout_ticks;
                tracing::debug!(
                    "ofi: a keep-alive to rank {peer} unfinished after {after:?}: lost"
                );
                self.cause[peer] = LossCause::Silent;
                self.mark_lost(peer);
            }
        }
        self.probe_peers();
    }

    fn mark_lost(&mut self, peer: usize) {
        self.lost[peer] = true;
        self.unreported = true;
    }

    fn send_error(&mut self, dst: usize, ret: isize) -> TransportError {
        tracing::debug!("ofi: {}", self.error("send", ret));
        self.cause[dst] = cause_of(ret.unsigned_abs() as i32);
        self.mark_lost(dst);
        TransportError::PeerLost(PeerId(dst as u32))
    }

    /// Posts the reads and writes waiting for the provider, in order, until
    /// it pushes back (after one round of progress).
    fn post_rma(&mut self, regions: &Regions) {
        let mut progressed = false;
        while let Some(read) = self.unposted_rma.front() {
            let PendingRma { slot, dir, local, local_offset, len, peer, addr, key } = *read;
            let posted = self.rails[0].ep().rma(
                regions,
                slot,
                dir,
                (local, local_offset),
                len,
                peer,
                (addr, key),
            );
            match posted {
                Ok(0) => {
                    self.unposted_rma.pop_front();
                }
                Ok(r) if r == -(FI_EAGAIN as isize) => {
                    if progressed {
                        return;
                    }
                    progressed = true;
                    self.reap(None);
                }
                failed => {
                    self.unposted_rma.pop_front();
                    self.rma_free.push(slot);
                    let error = match failed {
                        Err(e) => e,
                        Ok(r) => setup(
                            self.error(if dir == Rma::Read { "fi_read" } else { "fi_writemsg" }, r),
                        ),
                    };
                    // Not pinned (the endpoint pins only what it posted).
                    self.done_rma.push_back((self.rma_token[slot], Some(error), None));
                }
            }
        }
    }

    /// Free send buffers on all rails.
    fn tx_free(&self) -> usize {
        self.rails.iter().map(|r| r.tx_free.len()).sum()
    }

    /// One step of closing (see [`Transport::close`]).
    fn close_step(&mut self) -> bool {
        let now = Instant::now();
        if self.rails[0].addrs.len() != self.ranks {
            // Set-up did not finish: no peer knows this endpoint.
            self.closing = Closing::Closed;
        }
        loop {
            match self.closing {
                Closing::Open => {
                    // First learn which peers have left already (their
                    // goodbyes may be queued): sending to a peer whose
                    // endpoint is closed is not safe on every provider
                    // (shm within one process).
                    for _ in 0..4 {
                        self.reap(None);
                    }
                    for r in 0..self.rails.len() {
                        while let Some((b, len)) = self.rails[r].ready.pop_front() {
                            self.deliver(r, b, len, &mut |_| {});
                        }
                    }
                    self.closing = Closing::Goodbyes { next: 0, since: now };
                }
                Closing::Goodbyes { next, since } => {
                    if next == self.ranks {
                        self.closing =
                            Closing::Flushing { since, free: self.tx_free(), moved: now };
                        continue;
                    }
                    if next != self.me.index() && self.reach[next] && !self.lost[next] {
                        let prefix = self.prefix(KIND_BYE, 0);
                        let count = self.sent[next].to_le_bytes();
                        match self.send_on(0, next, [&prefix, &count, &[]]) {
                            Err(TransportError::WouldBlock) if now - since < CLOSE_WITHIN => {
                                self.reap(None);
                                return false;
                            }
                            _ => {}
                        }
                    }
                    self.closing = Closing::Goodbyes { next: next + 1, since };
                }
                Closing::Flushing { since, free, moved } => {
                    // Wait for the sends to complete: at most CLOSE_WITHIN
                    // in all, and no longer than CLOSE_QUIET without one
                    // completing (a peer that is itself closing will not
                    // acknowledge what is left; everything has been handed
                    // to the provider by then).
                    self.post_sends_all();
                    self.reap(None);
                    let free_now = self.tx_free();
                    let unposted = self.rails.iter().any(|r| !r.unposted.is_empty());
                    let stalled = !unposted && now - moved > CLOSE_QUIET;
                    let flushed = self.rails.iter().all(Rail::flushed);
                    if flushed || stalled || now - since > CLOSE_WITHIN {
                        self.closing = Closing::Settling { until: now + CLOSE_SETTLE };
                        continue;
                    }
                    let moved = if free_now != free { now } else { moved };
                    self.closing = Closing::Flushing { since, free: free_now, moved };
                    return false;
                }
                Closing::Settling { until } => {
                    // Some providers complete injected sends only with
                    // progress.
                    self.reap(None);
                    if now < until {
                        return false;
                    }
                    self.closing = Closing::Closed;
                }
                Closing::Closed => return true,
            }
        }
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
        if !self.reach[d] && dst != self.me {
            return Err(TransportError::Unsupported("ofi (this peer is reached another way)"));
        }
        if self.closing != Closing::Open {
            return Err(TransportError::Setup("ofi: the endpoint is closing".into()));
        }
        let prefix = self.prefix(KIND_FRAME, header.len());
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
        self.post_sends_all();
        if !self.unposted_rma.is_empty() {
            self.post_rma(regions);
        }
        for r in 0..self.rails.len() {
            while let Some((b, len)) = self.rails[r].ready.pop_front() {
                events += self.deliver(r, b, len, sink);
            }
        }
        events += self.reap(Some(sink));
        if events == 0 {
            for r in 0..self.rails.len() {
                if !self.rails[r].to_repost.is_empty() {
                    self.repost(r);
                }
            }
            // A rank that polls without sleeping (spinning, or inside the
            // hybrid backend, which sleeps in shm) still probes: the clock
            // is read once in IDLE_POLLS_PER_CLOCK idle polls.
            self.idle_polls = self.idle_polls.wrapping_add(1);
            if self.idle_polls % IDLE_POLLS_PER_CLOCK == 0 {
                self.maybe_probe();
            }
        }
        while let Some((token, error, region)) = self.done_rma.pop_front() {
            // The provider is done with the memory: it may go now.
            if let Some(region) = region {
                regions.unpin(region);
            }
            sink(match error {
                None => Event::RmaDone { token },
                Some(error) => Event::RmaFailed { token, error },
            });
            events += 1;
        }
        if self.unreported {
            self.unreported = false;
            for peer in 0..self.ranks {
                if self.lost[peer] && !self.reported[peer] {
                    self.reported[peer] = true;
                    sink(Event::PeerLost { peer: PeerId(peer as u32), cause: self.cause[peer] });
                    events += 1;
                }
            }
        }
        Ok(events)
    }

    fn wait(&mut self, timeout: Duration) {
        // The completion queue has no wait object (EFA offers none), so an
        // idle rank naps briefly instead; a rank that waits long probes
        // the peers it talks to (see `probe_peers`).
        for r in 0..self.rails.len() {
            self.repost(r);
        }
        self.maybe_probe();
        let ready = self.rails.iter().any(|r| !r.ready.is_empty());
        if self.own.is_empty() && !ready && self.done_rma.is_empty() {
            std::thread::sleep(timeout.min(Duration::from_micros(50)));
        }
    }

    fn close(&mut self) -> bool {
        self.close_step()
    }

    fn expose(&mut self, regions: &Regions, region: RegionId) -> Result<RemoteKey, TransportError> {
        if !self.caps.rma_read {
            return Err(TransportError::Unsupported("ofi (this provider offers no reads)"));
        }
        let (ptr, _) = regions.exposable(region, self.caps.reads_from_outside)?;
        let (_, key) = self.rails[0].ep().region_mr(regions, region, true)?;
        let addr = if self.mr_mode & FI_MR_VIRT_ADDR as u64 != 0 { ptr.as_ptr() as u64 } else { 0 };
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
        self.start_rma(regions, Rma::Read, (dst, dst_offset), (src, key, src_offset), len, token)
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
            return Err(TransportError::Unsupported("ofi (this provider's writes need the peer)"));
        }
        let dir = Rma::Write { flags: write_flags(&self.provider) };
        self.start_rma(regions, dir, (src, src_offset), (dst, key, dst_offset), len, token)
    }
}

impl Ofi {
    /// Queues a read into, or write from, `local` at its offset, of `len`
    /// bytes at the offset of `peer`'s region `key`, and posts what the
    /// provider takes.
    fn start_rma(
        &mut self,
        regions: &Regions,
        dir: Rma,
        (local, local_offset): (RegionId, usize),
        (peer, key, offset): (PeerId, RemoteKey, usize),
        len: usize,
        token: u64,
    ) -> Result<(), TransportError> {
        let p = peer.index();
        if p >= self.ranks {
            return Err(TransportError::InvalidPeer { peer, size: self.ranks });
        }
        if self.lost[p] {
            return Err(TransportError::PeerLost(peer));
        }
        let (_, rlen, writable) = regions.raw(local).ok_or(TransportError::InvalidRegion)?;
        let fits = local_offset.checked_add(len).is_some_and(|end| end <= rlen);
        if !fits || (dir == Rma::Read && !writable) {
            return Err(TransportError::InvalidRegion);
        }
        // Registered now, so that a region that cannot be is an error of
        // this call.
        self.rails[0].ep().region_mr(regions, local, false)?;
        let Some(slot) = self.rma_free.pop() else {
            self.reap(None);
            return Err(TransportError::WouldBlock);
        };
        self.rma_token[slot] = token;
        self.unposted_rma.push_back(PendingRma {
            slot,
            dir,
            local,
            local_offset,
            len,
            peer: self.rails[0].addrs[p],
            addr: key.addr.wrapping_add(offset as u64),
            key: key.key,
        });
        self.post_rma(regions);
        Ok(())
    }
}

impl Drop for Ofi {
    fn drop(&mut self) {
        // Tell every live peer how many frames to expect and let the sends
        // finish, unless the runtime has closed the endpoint already; each
        // step is bounded (CLOSE_WITHIN in all).
        while !self.close_step() {
            std::thread::yield_now();
        }
        for rail in &mut self.rails {
            let Some(ep) = rail.take_endpoint() else { continue };
            match &self.group {
                None => drop(ep),
                // Closed when the group goes (see `Parked`).
                Some(group) => group.lock().unwrap_or_else(|e| e.into_inner()).endpoints.push(ep),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalives_follow_the_peer_timeout() {
        assert_eq!(keepalive_for(Duration::from_secs(30)), Duration::from_secs(3));
        assert_eq!(keepalive_for(Duration::from_secs(1)), Duration::from_millis(100));
        assert_eq!(keepalive_for(Duration::from_secs(600)), Duration::from_secs(5));
        assert_eq!(keepalive_for(Duration::ZERO), Duration::ZERO);
        assert_eq!(ticks_for(Duration::from_secs(30)), 10);
        assert_eq!(ticks_for(Duration::from_secs(600)), 120);
        assert_eq!(ticks_for(Duration::from_millis(500)), 5);
        assert_eq!(cause_of(-(sys::FI_ETIMEDOUT as i32)), LossCause::Silent);
        assert_eq!(cause_of(sys::FI_ECONNRESET as i32), LossCause::Ended);
    }

    #[test]
    fn emulated_reads_stream_instead() {
        assert!(use_reads(true, true, None), "tcp;ofi_rxm: no such option, real reads");
        assert!(use_reads(true, true, Some(false)), "EFA with RDMA read");
        assert!(!use_reads(true, true, Some(true)), "EFA emulating reads");
        assert!(!use_reads(true, false, Some(false)), "HPCOMM_OFI_READS=0");
        assert!(!use_reads(false, true, None), "no FI_RMA");
    }
}
