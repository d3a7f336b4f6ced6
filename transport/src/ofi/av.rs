//! The address vector (`fi_av_open`, `FI_AV_TABLE`): peers' endpoint names
//! turned into the addresses that sends and reads take.

use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::Arc;

use super::api;
use super::fabric::{close_logged, need, Domain};
use super::sys::*;

type InsertFn = unsafe extern "C" fn(
    *mut fid_av,
    *const c_void,
    usize,
    *mut fi_addr_t,
    u64,
    *mut c_void,
) -> i32;

/// An open address vector; holds its domain.
pub(super) struct AddressVector {
    raw: NonNull<fid_av>,
    insert: InsertFn,
    domain: Arc<Domain>,
}

impl AddressVector {
    /// Opens a table of `count` addresses on `domain`.
    pub(super) fn open(domain: &Arc<Domain>, count: usize) -> Result<AddressVector, String> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: plain data; zero is the default of every field.
        let mut attr: fi_av_attr = unsafe { std::mem::zeroed() };
        attr.type_ = FI_AV_TABLE;
        attr.count = count;
        // SAFETY: the domain is live; `attr` and `raw` are ours.
        let ret = unsafe {
            let open = need((*domain.raw()).ops.as_ref().and_then(|o| o.av_open), "fi_av_open")?;
            open(domain.raw(), &mut attr, &mut raw, std::ptr::null_mut())
        };
        if ret != 0 {
            return Err(api::error(domain.api, "fi_av_open", ret as isize));
        }
        let raw = NonNull::new(raw).ok_or("fi_av_open returned no address vector")?;
        // SAFETY: the address vector is live; its table is the provider's.
        let insert = unsafe { (*raw.as_ptr()).ops.as_ref().and_then(|o| o.insert) };
        let Some(insert) = insert else {
            // SAFETY: just opened, used by nothing.
            unsafe { close_logged(domain.api, "address vector", &mut (*raw.as_ptr()).fid) };
            return Err(need(None::<()>, "fi_av_insert").unwrap_err());
        };
        Ok(AddressVector { raw, insert, domain: domain.clone() })
    }

    /// The raw address vector, for binding to an endpoint.
    pub(super) fn raw(&self) -> *mut fid_av {
        self.raw.as_ptr()
    }

    /// Inserts one endpoint name; the provider's error, or a short count.
    ///
    /// # Safety
    ///
    /// `name` must hold one whole address of this provider's format (the
    /// provider reads as many bytes as its addresses have).
    pub(super) unsafe fn insert(&self, name: &[u8]) -> Result<fi_addr_t, String> {
        let mut addr: fi_addr_t = 0;
        // SAFETY: the caller's contract for `name`; one `fi_addr_t` out.
        let n = unsafe {
            (self.insert)(self.raw(), name.as_ptr().cast(), 1, &mut addr, 0, std::ptr::null_mut())
        };
        match n {
            1 => Ok(addr),
            n if n < 0 => Err(self.domain.api.strerror(-n)),
            _ => Err("not inserted".into()),
        }
    }
}

impl Drop for AddressVector {
    fn drop(&mut self) {
        // SAFETY: live, closed once; its endpoint (which is bound to it) was
        // closed first (see `Endpoint`).
        unsafe { close_logged(self.domain.api, "address vector", &mut (*self.raw.as_ptr()).fid) };
    }
}
