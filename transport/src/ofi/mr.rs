//! Memory registration (`fi_mr_reg`): a registration holds its domain, and
//! a slab is memory we own together with its registration.

use std::ffi::{c_int, c_void};
use std::ptr::NonNull;
use std::sync::Arc;

use super::api;
use super::fabric::{close_logged, Domain};
use super::sys::*;

/// A registration of some memory with a domain; closed when dropped,
/// which revokes peers' access.
pub(crate) struct MemoryRegion {
    raw: NonNull<fid_mr>,
    domain: Arc<Domain>,
}

impl std::fmt::Debug for MemoryRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRegion").field("key", &self.key()).finish()
    }
}

// SAFETY: a registration is used (its descriptor and key read, then
// closed) by the thread that uses its endpoint, one at a time; it holds
// its domain, so closing it on any thread is closing a live object.
unsafe impl Send for MemoryRegion {}

impl MemoryRegion {
    /// Registers `len` bytes at `ptr` for `access` with `key` (ignored under
    /// `FI_MR_PROV_KEY`); the provider's return code on failure. Under
    /// `FI_MR_ENDPOINT` the registration is bound to `bind` and enabled.
    ///
    /// # Safety
    ///
    /// The memory must stay allocated, and not be moved, until the
    /// registration is dropped and every operation that used it has
    /// completed.
    pub(super) unsafe fn register(
        domain: &Arc<Domain>,
        ptr: *const u8,
        len: usize,
        access: u64,
        key: u64,
        bind: Option<*mut fid_ep>,
    ) -> Result<MemoryRegion, (c_int, &'static str)> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: the domain is live; the memory is the caller's promise.
        let ret = unsafe {
            (domain.reg)(
                &mut (*domain.raw()).fid,
                ptr.cast(),
                len.max(1),
                access,
                0,
                key,
                0,
                &mut raw,
                std::ptr::null_mut(),
            )
        };
        if ret != 0 {
            return Err((ret, "fi_mr_reg"));
        }
        let raw = NonNull::new(raw).ok_or((-(FI_ENOMEM as c_int), "fi_mr_reg"))?;
        let mr = MemoryRegion { raw, domain: domain.clone() };
        if let Some(ep) = bind {
            // SAFETY: the registration was just made and `ep` is live.
            let ret = unsafe {
                let f = &mut (*raw.as_ptr()).fid as *mut fid;
                let ops = &*(*f).ops;
                match (ops.bind, ops.control) {
                    (Some(bind), Some(control)) => match bind(f, &mut (*ep).fid, 0) {
                        0 => control(f, FI_ENABLE as c_int, std::ptr::null_mut()),
                        r => r,
                    },
                    _ => -(FI_ENOSYS as c_int),
                }
            };
            if ret != 0 {
                return Err((ret, "fi_mr_bind/fi_mr_enable"));
            }
        }
        Ok(mr)
    }

    /// The descriptor local operations on this memory pass.
    pub(crate) fn desc(&self) -> *mut c_void {
        // SAFETY: the registration is live while `self` is.
        unsafe { (*self.raw.as_ptr()).mem_desc }
    }

    /// The key peers use to reach this memory.
    pub(crate) fn key(&self) -> u64 {
        // SAFETY: the registration is live while `self` is.
        unsafe { (*self.raw.as_ptr()).key }
    }
}

impl crate::region::Exposed for MemoryRegion {
    /// Closes the registration (peers' later reads fail).
    fn revoke(self: Box<Self>) {
        drop(self);
    }
}

impl Drop for MemoryRegion {
    fn drop(&mut self) {
        // SAFETY: the registration is live and closed once, here; it holds
        // its domain.
        unsafe {
            close_logged(self.domain.api, "memory registration", &mut (*self.raw.as_ptr()).fid)
        };
    }
}

/// Memory the backend owns with its registration: the send or the receive
/// buffers. The registration is dropped first.
pub(super) struct Slab {
    mr: MemoryRegion,
    mem: Box<[u8]>,
}

impl Slab {
    /// `len` zeroed bytes registered for `access`.
    pub(super) fn new(
        domain: &Arc<Domain>,
        len: usize,
        access: u64,
        mr_mode: u64,
        bind: Option<*mut fid_ep>,
    ) -> Result<Slab, String> {
        let mem = vec![0u8; len].into_boxed_slice();
        // SAFETY: the memory is a heap allocation owned by the slab, which
        // drops the registration before it (field order) and is itself
        // dropped only after its endpoint has been closed.
        let mr = unsafe { register(domain, mr_mode, mem.as_ptr(), len, access, bind) }?;
        Ok(Slab { mr, mem })
    }

    pub(super) fn desc(&self) -> *mut c_void {
        self.mr.desc()
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.mem
    }

    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.mem
    }

    pub(super) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.mem.as_mut_ptr()
    }
}

/// Registers `len` bytes at `ptr` with a key the provider accepts: its own
/// under `FI_MR_PROV_KEY`, else a random one (so that a peer cannot guess
/// the key of a buffer it was not given), drawn again on a clash.
///
/// # Safety
///
/// As [`MemoryRegion::register`].
pub(super) unsafe fn register(
    domain: &Arc<Domain>,
    mr_mode: u64,
    ptr: *const u8,
    len: usize,
    access: u64,
    bind: Option<*mut fid_ep>,
) -> Result<MemoryRegion, String> {
    for _ in 0..8 {
        let key = random_u64() & domain.key_mask;
        // SAFETY: the caller's contract.
        match unsafe { MemoryRegion::register(domain, ptr, len, access, key, bind) } {
            Ok(mr) => return Ok(mr),
            Err((ret, _))
                if ret == -(FI_ENOKEY as c_int) && mr_mode & FI_MR_PROV_KEY as u64 == 0 => {}
            Err((ret, what)) => return Err(api::error(domain.api, what, ret as isize)),
        }
    }
    Err("fi_mr_reg: no free key after 8 draws".into())
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
