//! libfabric, loaded at run time.
//!
//! The library is found the way the AWS EFA installer and distributions
//! place it: `HPCOMM_LIBFABRIC` (a path) if set, else the EFA installer's
//! `/opt/amazon/efa/lib64/libfabric.so.1` (which has the EFA provider this
//! instance needs, where a distribution's may not), else `libfabric.so.1`
//! through the dynamic loader. Before loading it, `FI_EFA_FORK_SAFE=1` and
//! `RDMAV_FORK_SAFE=1` are set unless the user set them: on kernels older
//! than 5.13, rdma-core otherwise lets a child made by `fork` (a program
//! that runs a command) corrupt registered memory of the parent.
//! Its exported functions are looked up with their symbol versions
//! (`fi_getinfo@FABRIC_1.3`, …): the structures in [`super::sys`] have the
//! layout of that ABI version, and a newer libfabric keeps serving it
//! through compatibility symbols. Everything else — domains, endpoints,
//! completion queues, memory registration, sends and reads — goes through
//! the operation tables of libfabric's `fid` structures, exactly as the
//! static inline functions of its headers do.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;

use super::sys::*;

/// Where the AWS EFA installer puts libfabric.
pub const EFA_INSTALLER_PATH: &str = "/opt/amazon/efa/lib64/libfabric.so.1";

/// The newest API version whose behaviour our bindings and code follow:
/// libfabric 2.0 changed the meaning of some bits we use (`mr_mode`,
/// contexts), so the 1.x line's last. The version asked for is this or the
/// library's, whichever is older ([`Api::api_version`]): EFA ignores some
/// options below 1.18.
pub const MAX_API: (u32, u32) = (1, 22);

/// `FI_ADDR_UNSPEC` (a macro the bindings cannot carry).
pub const ADDR_UNSPEC: fi_addr_t = u64::MAX;

type GetInfo = unsafe extern "C" fn(
    u32,
    *const c_char,
    *const c_char,
    u64,
    *const fi_info,
    *mut *mut fi_info,
) -> c_int;
type FreeInfo = unsafe extern "C" fn(*mut fi_info);
type DupInfo = unsafe extern "C" fn(*const fi_info) -> *mut fi_info;
type Fabric = unsafe extern "C" fn(*mut fi_fabric_attr, *mut *mut fid_fabric, *mut c_void) -> c_int;
type StrError = unsafe extern "C" fn(c_int) -> *const c_char;
type Version = unsafe extern "C" fn() -> u32;

/// The loaded library: its exported functions.
#[derive(Debug)]
pub struct Api {
    /// Where it was loaded from.
    pub path: String,
    getinfo: GetInfo,
    freeinfo: FreeInfo,
    dupinfo: DupInfo,
    fabric: Fabric,
    strerror: StrError,
    version: Version,
}

static API: OnceLock<Result<Api, String>> = OnceLock::new();

/// The library, loaded on first use; an error says where it was looked for.
pub fn api() -> Result<&'static Api, String> {
    API.get_or_init(load).as_ref().map_err(Clone::clone)
}

/// Where to look for libfabric, in order, given `HPCOMM_LIBFABRIC`.
pub(crate) fn candidates(configured: Option<&str>) -> Vec<String> {
    match configured {
        Some(path) if !path.is_empty() => vec![path.into()],
        _ => vec![EFA_INSTALLER_PATH.into(), "libfabric.so.1".into()],
    }
}

/// The variables that make rdma-core (under EFA and verbs) safe across
/// `fork`, to set when the user has not.
pub(crate) const FORK_SAFETY: [&str; 2] = ["FI_EFA_FORK_SAFE", "RDMAV_FORK_SAFE"];

fn load() -> Result<Api, String> {
    for var in FORK_SAFETY {
        if std::env::var_os(var).is_none() {
            // Before the library (and rdma-core) is loaded: they read it
            // when their providers initialise. Setting the environment
            // races only with C code reading it on another thread at this
            // moment; hpcomm loads libfabric before starting any.
            std::env::set_var(var, "1");
        }
    }
    let candidates = candidates(std::env::var("HPCOMM_LIBFABRIC").ok().as_deref());
    let mut tried = Vec::new();
    for path in &candidates {
        // SAFETY: loading libfabric runs its constructors, which only set
        // up its provider table; no other code of ours runs meanwhile.
        let lib = match unsafe {
            libloading::os::unix::Library::open(
                Some(path),
                libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL,
            )
        } {
            Ok(lib) => lib,
            Err(e) => {
                tried.push(format!("{path}: {e}"));
                continue;
            }
        };
        // The library stays loaded for the life of the process: endpoints
        // keep pointers into it.
        let handle = lib.into_raw();
        let sym = |name: &str, version: &str| -> Result<*mut c_void, String> {
            let n = CString::new(name).expect("no NUL");
            let v = CString::new(version).expect("no NUL");
            // SAFETY: `handle` is a live dlopen handle; both strings are
            // NUL-terminated.
            let p = unsafe { libc::dlvsym(handle, n.as_ptr(), v.as_ptr()) };
            if p.is_null() {
                Err(format!("{path} has no {name}@{version}"))
            } else {
                Ok(p)
            }
        };
        let found = (|| {
            // SAFETY: each symbol is the libfabric function of that name
            // and ABI version, whose C signature the type spells out.
            unsafe {
                Ok::<_, String>(Api {
                    path: path.clone(),
                    getinfo: std::mem::transmute::<*mut c_void, GetInfo>(sym(
                        "fi_getinfo",
                        "FABRIC_1.3",
                    )?),
                    freeinfo: std::mem::transmute::<*mut c_void, FreeInfo>(sym(
                        "fi_freeinfo",
                        "FABRIC_1.3",
                    )?),
                    dupinfo: std::mem::transmute::<*mut c_void, DupInfo>(sym(
                        "fi_dupinfo",
                        "FABRIC_1.3",
                    )?),
                    fabric: std::mem::transmute::<*mut c_void, Fabric>(sym(
                        "fi_fabric",
                        "FABRIC_1.1",
                    )?),
                    strerror: std::mem::transmute::<*mut c_void, StrError>(sym(
                        "fi_strerror",
                        "FABRIC_1.0",
                    )?),
                    version: std::mem::transmute::<*mut c_void, Version>(sym(
                        "fi_version",
                        "FABRIC_1.0",
                    )?),
                })
            }
        })();
        match found {
            Ok(api) => return Ok(api),
            Err(e) => tried.push(e),
        }
    }
    Err(format!(
        "libfabric not found ({}); install it (Debian: apt-get install libfabric1; AWS: the EFA installer) or set HPCOMM_LIBFABRIC to its path",
        tried.join("; ")
    ))
}

/// A libfabric call's failure: the call and libfabric's message.
pub fn error(api: &Api, what: &str, ret: isize) -> String {
    format!("{what}: {} ({ret})", api.strerror(ret.unsigned_abs() as c_int))
}

impl Api {
    /// `fi_strerror`.
    pub fn strerror(&self, errno: c_int) -> String {
        // SAFETY: fi_strerror returns a static NUL-terminated string.
        unsafe {
            let p = (self.strerror)(errno);
            if p.is_null() {
                format!("error {errno}")
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        }
    }

    /// The library's version as (major, minor).
    pub fn version(&self) -> (u32, u32) {
        // SAFETY: fi_version takes nothing and returns a number.
        let v = unsafe { (self.version)() };
        (v >> 16, v & 0xffff)
    }

    /// The API version hpcomm asks for: the library's, up to [`MAX_API`].
    pub fn api_version(&self) -> (u32, u32) {
        self.version().min(MAX_API)
    }

    /// A zeroed `fi_info` with its attribute structures (`fi_allocinfo`),
    /// to fill in as hints.
    pub fn alloc_info(&self) -> Result<Info<'_>, String> {
        // SAFETY: fi_dupinfo(NULL) allocates a zeroed fi_info with every
        // attribute structure, or returns NULL.
        let p = unsafe { (self.dupinfo)(std::ptr::null()) };
        if p.is_null() {
            return Err("fi_allocinfo: out of memory".into());
        }
        Ok(Info { api: self, head: p })
    }

    /// `fi_getinfo` for `hints`; an empty list is `Ok(None)`.
    pub fn getinfo(&self, hints: &Info<'_>) -> Result<Option<Info<'_>>, String> {
        let mut out = std::ptr::null_mut();
        // SAFETY: `hints` is a live fi_info from this library; `out`
        // receives a list we own and free with fi_freeinfo.
        let ret = unsafe {
            let (major, minor) = self.api_version();
            (self.getinfo)(
                (major << 16) | minor,
                std::ptr::null(),
                std::ptr::null(),
                0,
                hints.head,
                &mut out,
            )
        };
        if ret == -(FI_ENODATA as c_int) || (ret == 0 && out.is_null()) {
            return Ok(None);
        }
        if ret != 0 {
            return Err(error(self, "fi_getinfo", ret as isize));
        }
        Ok(Some(Info { api: self, head: out }))
    }

    /// `fi_fabric` for the fabric attributes of `info`.
    ///
    /// # Safety
    ///
    /// `attr` must point to a live `fi_fabric_attr` from this library.
    pub unsafe fn open_fabric(&self, attr: *mut fi_fabric_attr) -> Result<*mut fid_fabric, String> {
        let mut fabric = std::ptr::null_mut();
        // SAFETY: the caller's pointer is live; `fabric` receives the fid.
        let ret = unsafe { (self.fabric)(attr, &mut fabric, std::ptr::null_mut()) };
        if ret != 0 {
            return Err(error(self, "fi_fabric", ret as isize));
        }
        Ok(fabric)
    }
}

/// An `fi_info` list owned by us, freed with `fi_freeinfo`.
#[derive(Debug)]
pub struct Info<'a> {
    api: &'a Api,
    head: *mut fi_info,
}

// SAFETY: the list is ours alone (no libfabric object refers to it): it is
// read and freed by whichever thread holds it, one at a time.
unsafe impl Send for Info<'_> {}

impl<'a> Info<'a> {
    /// The first entry.
    pub fn first(&self) -> *mut fi_info {
        self.head
    }

    /// Every entry, in libfabric's order of preference.
    pub fn entries(&self) -> Vec<*mut fi_info> {
        let mut all = Vec::new();
        let mut p = self.head;
        while !p.is_null() {
            all.push(p);
            // SAFETY: `p` is an entry of the live list.
            p = unsafe { (*p).next };
        }
        all
    }

    /// A copy of one entry alone (`fi_dupinfo`), to keep after the list
    /// goes.
    ///
    /// # Safety
    ///
    /// `entry` must be an entry of this list.
    pub unsafe fn dup(&self, entry: *const fi_info) -> Result<Info<'a>, String> {
        // SAFETY: the caller passes a live entry.
        let p = unsafe { (self.api.dupinfo)(entry) };
        if p.is_null() {
            return Err("fi_dupinfo: out of memory".into());
        }
        // SAFETY: `p` is ours; a duplicate has no list after it.
        unsafe { (*p).next = std::ptr::null_mut() };
        Ok(Info { api: self.api, head: p })
    }
}

impl Drop for Info<'_> {
    fn drop(&mut self) {
        // SAFETY: the list came from this library and is freed once. Any
        // string placed in it by us was allocated with libc's allocator
        // (`strdup`), as fi_freeinfo expects.
        unsafe { (self.api.freeinfo)(self.head) }
    }
}

/// Reads a C string field (NULL is empty).
///
/// # Safety
///
/// `p` must be NULL or a live NUL-terminated string.
pub unsafe fn c_str(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the caller's contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// A copy of `s` allocated by libc (`strdup`), for a field that
/// `fi_freeinfo` will free.
pub fn strdup(s: &str) -> *mut c_char {
    let c = CString::new(s).unwrap_or_default();
    // SAFETY: `c` is NUL-terminated; strdup copies it.
    unsafe { libc::strdup(c.as_ptr()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_efa_installers_library_comes_before_the_systems() {
        assert_eq!(candidates(None), [EFA_INSTALLER_PATH, "libfabric.so.1"]);
        assert_eq!(candidates(Some("")), [EFA_INSTALLER_PATH, "libfabric.so.1"]);
        assert_eq!(candidates(Some("/opt/lf/lib/libfabric.so")), ["/opt/lf/lib/libfabric.so"]);
    }

    #[test]
    fn loading_sets_fork_safety_unless_the_user_did() {
        // Whatever the test order, once loaded (or tried) both are set, to
        // 1 or to what the user gave.
        let _ = api();
        for var in FORK_SAFETY {
            assert!(std::env::var_os(var).is_some(), "{var} not set");
        }
        if let Ok(api) = api() {
            let v = api.api_version();
            assert!(v <= MAX_API && v <= api.version() && v >= (1, 0), "{v:?}");
        }
    }
}
