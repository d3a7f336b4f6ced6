//! The completion queue (`fi_cq_open`, `FI_CQ_FORMAT_MSG`, no wait object:
//! EFA offers none).

use std::ffi::{c_int, c_void};
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::Arc;

use super::api;
use super::fabric::{close_logged, need, Domain};
use super::sys::*;

type ReadFn = unsafe extern "C" fn(*mut fid_cq, *mut c_void, usize) -> isize;
type ReadErrFn = unsafe extern "C" fn(*mut fid_cq, *mut fi_cq_err_entry, u64) -> isize;

/// Completions read at a time.
pub(super) const BATCH: usize = 16;

/// What one read of the queue found.
pub(super) enum Read<'a> {
    /// Nothing completed.
    Empty,
    /// Completions, oldest first.
    Done(&'a [fi_cq_msg_entry]),
    /// An operation failed: its context and libfabric's error number.
    Failed { context: *mut c_void, err: c_int },
}

/// An open completion queue; holds its domain.
pub(super) struct CompletionQueue {
    raw: NonNull<fid_cq>,
    read: ReadFn,
    readerr: ReadErrFn,
    entries: [MaybeUninit<fi_cq_msg_entry>; BATCH],
    domain: Arc<Domain>,
}

impl CompletionQueue {
    /// Opens a queue of `size` entries on `domain`.
    pub(super) fn open(domain: &Arc<Domain>, size: usize) -> Result<CompletionQueue, String> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: plain data; zero is the default of every field.
        let mut attr: fi_cq_attr = unsafe { std::mem::zeroed() };
        attr.format = FI_CQ_FORMAT_MSG;
        attr.wait_obj = FI_WAIT_NONE;
        attr.size = size;
        // SAFETY: the domain is live; `attr` and `raw` are ours.
        let ret = unsafe {
            let open = need((*domain.raw()).ops.as_ref().and_then(|o| o.cq_open), "fi_cq_open")?;
            open(domain.raw(), &mut attr, &mut raw, std::ptr::null_mut())
        };
        if ret != 0 {
            return Err(api::error(domain.api, "fi_cq_open", ret as isize));
        }
        let raw = NonNull::new(raw).ok_or("fi_cq_open returned no queue")?;
        // SAFETY: the queue is live; its table is the provider's.
        let ops = unsafe { (*raw.as_ptr()).ops.as_ref().map(|o| (o.read, o.readerr)) };
        let (Some(read), Some(readerr)) = ops.unwrap_or((None, None)) else {
            // SAFETY: just opened, used by nothing.
            unsafe { close_logged(domain.api, "completion queue", &mut (*raw.as_ptr()).fid) };
            return Err(need(None::<()>, "fi_cq_read and fi_cq_readerr").unwrap_err());
        };
        Ok(CompletionQueue {
            raw,
            read,
            readerr,
            entries: [const { MaybeUninit::uninit() }; BATCH],
            domain: domain.clone(),
        })
    }

    /// The raw queue, for binding to an endpoint.
    pub(super) fn raw(&self) -> *mut fid_cq {
        self.raw.as_ptr()
    }

    /// Reads up to [`BATCH`] completions, or the first error.
    pub(super) fn read(&mut self) -> Read<'_> {
        // SAFETY: the queue is live; `entries` has room for BATCH. Not
        // zeroed: this runs on every poll, and the provider writes the
        // entries it returns.
        let n = unsafe { (self.read)(self.raw(), self.entries.as_mut_ptr().cast(), BATCH) };
        if n == -(FI_EAVAIL as isize) {
            // SAFETY: plain data; zero is valid (err_data_size 0: the
            // provider keeps its own error data).
            let mut err: fi_cq_err_entry = unsafe { std::mem::zeroed() };
            // SAFETY: the queue is live; `err` is one entry.
            if unsafe { (self.readerr)(self.raw(), &mut err, 0) } == 1 {
                return Read::Failed { context: err.op_context, err: err.err };
            }
            return Read::Empty;
        }
        if n <= 0 {
            return Read::Empty;
        }
        let n = (n as usize).min(BATCH);
        // SAFETY: the provider wrote the first `n` entries; MaybeUninit<T>
        // has T's layout.
        Read::Done(unsafe { std::slice::from_raw_parts(self.entries.as_ptr().cast(), n) })
    }
}

impl Drop for CompletionQueue {
    fn drop(&mut self) {
        // SAFETY: live, closed once; its endpoint was closed first.
        unsafe { close_logged(self.domain.api, "completion queue", &mut (*self.raw.as_ptr()).fid) };
    }
}
