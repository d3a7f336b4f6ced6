//! The fabric and the domain: the roots every other libfabric object of an
//! endpoint hangs from.
//!
//! Each libfabric object is an RAII wrapper that holds its parent (a domain
//! its fabric, an address vector or completion queue its domain), so that
//! a parent is closed only after its last child: the types enforce the
//! close order that `fi_close` requires. Operations are looked up in the
//! object's operation table once, when it is opened; a provider whose table
//! lacks one that we use fails set-up with a message naming it, instead of
//! panicking on first use.

use std::ffi::c_int;
use std::ptr::NonNull;
use std::sync::Arc;

use super::api::{self, Api, Info};
use super::sys::*;

/// An operation-table entry, or a set-up error naming it.
pub(super) fn need<T>(entry: Option<T>, what: &str) -> Result<T, String> {
    entry.ok_or_else(|| format!("the provider implements no {what}"))
}

/// `fi_close` on a live object, once; the provider's error if it refuses
/// (an object still in use keeps its memory, which is safe).
///
/// # Safety
///
/// `fid` must be a live libfabric object that nothing uses afterwards.
pub(super) unsafe fn close(fid: *mut fid) -> c_int {
    // SAFETY: the caller's contract: `fid` and its operation table are live.
    unsafe {
        match (*(*fid).ops).close {
            Some(close) => close(fid),
            None => -(FI_ENOSYS as c_int),
        }
    }
}

/// Closes `fid`, logging a refusal.
///
/// # Safety
///
/// As [`close`].
pub(super) unsafe fn close_logged(api: &Api, what: &str, fid: *mut fid) {
    // SAFETY: the caller's contract.
    let ret = unsafe { close(fid) };
    if ret != 0 {
        tracing::debug!("ofi: {}", api::error(api, &format!("fi_close ({what})"), ret as isize));
    }
}

/// An open fabric (`fi_fabric`).
pub(super) struct Fabric {
    raw: NonNull<fid_fabric>,
    api: &'static Api,
}

// SAFETY: the fabric is only used to open domains and to be closed; both
// happen on whichever thread holds the last reference, one at a time
// (`FI_THREAD_DOMAIN`: the objects of one endpoint are used by one thread
// at a time).
unsafe impl Send for Fabric {}
// SAFETY: as for `Send`; no method mutates through `&self`.
unsafe impl Sync for Fabric {}

impl Fabric {
    /// Opens the fabric of the chosen entry.
    pub(super) fn open(api: &'static Api, info: &Info<'_>) -> Result<Arc<Fabric>, String> {
        // SAFETY: `info` is a live list of this library; its first entry's
        // fabric attributes are set.
        let raw = unsafe { api.open_fabric((*info.first()).fabric_attr)? };
        let raw = NonNull::new(raw).ok_or("fi_fabric returned no fabric")?;
        Ok(Arc::new(Fabric { raw, api }))
    }

    /// The library it came from.
    pub(super) fn api(&self) -> &'static Api {
        self.api
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        // SAFETY: the fabric is live; its domains hold it, so every one of
        // them has been closed.
        unsafe { close_logged(self.api, "fabric", &mut (*self.raw.as_ptr()).fid) };
    }
}

type RegFn = unsafe extern "C" fn(
    *mut fid,
    *const std::ffi::c_void,
    usize,
    u64,
    u64,
    u64,
    u64,
    *mut *mut fid_mr,
    *mut std::ffi::c_void,
) -> c_int;

/// An open domain (`fi_domain`): one NIC's resources.
pub(super) struct Domain {
    raw: NonNull<fid_domain>,
    pub(super) api: &'static Api,
    pub(super) reg: RegFn,
    /// The bits a registration key may use (the domain's `mr_key_size`).
    pub(super) key_mask: u64,
    _fabric: Arc<Fabric>,
}

// SAFETY: as for `Fabric`: the domain's users (its endpoint, address
// vector, completion queue and registrations) belong to one endpoint,
// used by one thread at a time; the last reference closes it.
unsafe impl Send for Domain {}
// SAFETY: as for `Send`; no method mutates through `&self`.
unsafe impl Sync for Domain {}

impl Domain {
    /// Opens the domain of the chosen entry on `fabric`.
    pub(super) fn open(fabric: &Arc<Fabric>, info: &Info<'_>) -> Result<Arc<Domain>, String> {
        let api = fabric.api();
        let i = info.first();
        let mut raw = std::ptr::null_mut();
        // SAFETY: the fabric and `i` are live; `raw` receives the domain.
        let ret = unsafe {
            let open =
                need((*fabric.raw.as_ptr()).ops.as_ref().and_then(|o| o.domain), "fi_domain")?;
            open(fabric.raw.as_ptr(), i, &mut raw, std::ptr::null_mut())
        };
        if ret != 0 {
            return Err(api::error(api, "fi_domain", ret as isize));
        }
        let raw = NonNull::new(raw).ok_or("fi_domain returned no domain")?;
        // SAFETY: the domain is live; its tables are the provider's, and
        // `i`'s attributes are set.
        let (reg, key_size) = unsafe {
            ((*raw.as_ptr()).mr.as_ref().and_then(|m| m.reg), (*(*i).domain_attr).mr_key_size)
        };
        let Some(reg) = reg else {
            // SAFETY: the domain was just opened and nothing uses it.
            unsafe { close_logged(api, "domain", &mut (*raw.as_ptr()).fid) };
            return Err(need(None::<()>, "fi_mr_reg").unwrap_err());
        };
        let key_mask = match key_size {
            n @ 1..=7 => (1u64 << (8 * n)) - 1,
            _ => u64::MAX,
        };
        let domain = Domain { raw, api, reg, key_mask, _fabric: fabric.clone() };
        Ok(Arc::new(domain))
    }

    /// The raw domain, for opening its children.
    pub(super) fn raw(&self) -> *mut fid_domain {
        self.raw.as_ptr()
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        // SAFETY: the domain is live; its children hold it, so each has
        // been closed.
        unsafe { close_logged(self.api, "domain", &mut (*self.raw.as_ptr()).fid) };
    }
}
