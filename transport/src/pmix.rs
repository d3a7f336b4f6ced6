//! The PMIx client library, loaded at run time (as libfabric is): what the
//! runtime's PMIx bootstrap needs of it, behind a safe interface.
//!
//! Only the few calls below are bound, by hand: `PMIx_Init`, `PMIx_Put`,
//! `PMIx_Commit`, `PMIx_Fence` (collecting the data), `PMIx_Get`,
//! `PMIx_Value_free` (PMIx 5; before it, `PMIx_Value_destruct` and `free`,
//! as PMIx 4's `PMIX_VALUE_RELEASE` does), `PMIx_Abort` and `PMIx_Finalize`. The structures they
//! take are laid out as PMIx 3 to 5 define them (`pmix_common.h`): a
//! process name is 256 bytes of namespace and a 32-bit rank; a value is a
//! 16-bit type and, at offset 8, a union of 24 bytes or more; an info is a
//! 512-byte key, 32-bit flags and a value at offset 520.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;

use libloading::Library;

/// `PMIX_MAX_NSLEN + 1`.
const NSPACE_BYTES: usize = 256;
/// `PMIX_MAX_KEYLEN + 1`.
const INFO_KEY_BYTES: usize = 512;
/// `PMIX_SUCCESS`.
const SUCCESS: c_int = 0;
/// `PMIX_RANK_WILDCARD`: job-level information.
pub const RANK_WILDCARD: u32 = u32::MAX - 1;
/// `PMIX_GLOBAL`: a value every process of the job may read.
const SCOPE_GLOBAL: u8 = 3;

// pmix_data_type_t values.
const TYPE_BOOL: u16 = 1;
const TYPE_STRING: u16 = 3;
const TYPE_UINT16: u16 = 13;
const TYPE_UINT32: u16 = 14;
const TYPE_BYTE_OBJECT: u16 = 27;

/// `pmix_proc_t`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Proc {
    nspace: [c_char; NSPACE_BYTES],
    rank: u32,
}

/// `pmix_value_t`: the type, and the union as eight-byte words (the
/// largest member, `pmix_envar_t`, is 24 bytes).
#[repr(C)]
struct Value {
    kind: u16,
    data: [u64; 3],
}

/// `pmix_info_t`.
#[repr(C)]
struct Info {
    key: [c_char; INFO_KEY_BYTES],
    flags: u32,
    value: Value,
}

type InitFn = unsafe extern "C" fn(*mut Proc, *mut Info, usize) -> c_int;
type PutFn = unsafe extern "C" fn(u8, *const c_char, *mut Value) -> c_int;
type CommitFn = unsafe extern "C" fn() -> c_int;
type FenceFn = unsafe extern "C" fn(*const Proc, usize, *const Info, usize) -> c_int;
type GetFn =
    unsafe extern "C" fn(*const Proc, *const c_char, *const Info, usize, *mut *mut Value) -> c_int;
type ValueFreeFn = unsafe extern "C" fn(*mut Value, usize);
type ValueDestructFn = unsafe extern "C" fn(*mut Value);
type AbortFn = unsafe extern "C" fn(c_int, *const c_char, *mut Proc, usize) -> c_int;
type FinalizeFn = unsafe extern "C" fn(*const Info, usize) -> c_int;

struct Api {
    _library: Library,
    path: String,
    init: InitFn,
    put: PutFn,
    commit: CommitFn,
    fence: FenceFn,
    get: GetFn,
    /// How a value `PMIx_Get` returned is released.
    release: Release,
    abort: AbortFn,
    finalize: FinalizeFn,
}

/// `PMIx_Value_free` where the library has it, else its two halves.
#[derive(Clone, Copy)]
enum Release {
    Free(ValueFreeFn),
    DestructThenFree(ValueDestructFn),
}

static API: OnceLock<Result<Api, String>> = OnceLock::new();

fn load(explicit: Option<&str>) -> Result<Api, String> {
    let candidates: Vec<&str> = match explicit {
        Some(path) => vec![path],
        None => vec!["libpmix.so.2", "libpmix.so"],
    };
    let mut tried = Vec::new();
    for path in candidates {
        // SAFETY: loading libpmix runs its constructors, which set up its
        // own state only; no other code of ours runs in them.
        let library = match unsafe { Library::new(path) } {
            Ok(library) => library,
            Err(e) => {
                tried.push(format!("{path}: {e}"));
                continue;
            }
        };
        // SAFETY: each symbol is a PMIx function with the C signature of
        // its type above (PMIx 3 to 5); the pointers stay valid while
        // `_library` is loaded, which is for the life of the process (the
        // `Api` lives in a static).
        let api = unsafe {
            let symbol = |name: &[u8]| -> Result<*const c_void, String> {
                library.get::<*const c_void>(name).map(|s| *s).map_err(|e| format!("{path}: {e}"))
            };
            Api {
                path: path.to_string(),
                init: std::mem::transmute::<*const c_void, InitFn>(symbol(b"PMIx_Init\0")?),
                put: std::mem::transmute::<*const c_void, PutFn>(symbol(b"PMIx_Put\0")?),
                commit: std::mem::transmute::<*const c_void, CommitFn>(symbol(b"PMIx_Commit\0")?),
                fence: std::mem::transmute::<*const c_void, FenceFn>(symbol(b"PMIx_Fence\0")?),
                get: std::mem::transmute::<*const c_void, GetFn>(symbol(b"PMIx_Get\0")?),
                release: match symbol(b"PMIx_Value_free\0") {
                    Ok(f) => Release::Free(std::mem::transmute::<*const c_void, ValueFreeFn>(f)),
                    Err(_) => Release::DestructThenFree(std::mem::transmute::<
                        *const c_void,
                        ValueDestructFn,
                    >(symbol(
                        b"PMIx_Value_destruct\0",
                    )?)),
                },
                abort: std::mem::transmute::<*const c_void, AbortFn>(symbol(b"PMIx_Abort\0")?),
                finalize: std::mem::transmute::<*const c_void, FinalizeFn>(symbol(
                    b"PMIx_Finalize\0",
                )?),
                _library: library,
            }
        };
        return Ok(api);
    }
    Err(format!("cannot load the PMIx client library ({})", tried.join("; ")))
}

/// Loads the PMIx client library (without initializing a client); its
/// path, or why it cannot be loaded.
pub fn probe() -> Result<String, String> {
    let library = std::env::var("HPCOMM_PMIX_LIBRARY").ok().filter(|l| !l.trim().is_empty());
    API.get_or_init(|| load(library.as_deref()))
        .as_ref()
        .map(|api| api.path.clone())
        .map_err(Clone::clone)
}

/// This process's PMIx client: initialized once, finalized when dropped.
pub struct Client {
    api: &'static Api,
    me: Proc,
    finalized: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("library", &self.api.path)
            .field("rank", &self.me.rank)
            .finish()
    }
}

fn key(name: &str) -> Result<CString, String> {
    if name.len() >= INFO_KEY_BYTES {
        return Err(format!("PMIx key {name:?} is too long"));
    }
    CString::new(name).map_err(|_| format!("PMIx key {name:?} holds a zero byte"))
}

fn status(call: &str, rc: c_int) -> Result<(), String> {
    if rc == SUCCESS {
        Ok(())
    } else {
        Err(format!("{call} failed (PMIx status {rc})"))
    }
}

/// What `PMIx_Get` returned, copied out of the library's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Got {
    /// Bytes (`PMIX_BYTE_OBJECT`).
    Bytes(Vec<u8>),
    /// A string.
    Text(String),
    /// An unsigned number (`PMIX_UINT16`, `PMIX_UINT32`).
    Number(u64),
    /// A value of another type.
    Other(u16),
}

impl Client {
    /// Loads the library (from `library`, or where the system finds
    /// `libpmix.so.2`) and initializes the client: the launcher's server
    /// must have started this process.
    pub fn init(library: Option<&str>) -> Result<Client, String> {
        let api = API.get_or_init(|| load(library)).as_ref().map_err(Clone::clone)?;
        let mut me = Proc { nspace: [0; NSPACE_BYTES], rank: 0 };
        // SAFETY: `me` is a writable pmix_proc_t; no info is passed.
        let rc = unsafe { (api.init)(&mut me, std::ptr::null_mut(), 0) };
        status("PMIx_Init", rc)?;
        me.nspace[NSPACE_BYTES - 1] = 0;
        Ok(Client { api, me, finalized: false })
    }

    /// The library's path.
    pub fn library(&self) -> &str {
        &self.api.path
    }

    /// This process's namespace (the job).
    pub fn namespace(&self) -> String {
        // SAFETY: the array is zero-terminated (its last byte is set to 0
        // in `init`).
        unsafe { CStr::from_ptr(self.me.nspace.as_ptr()) }.to_string_lossy().into_owned()
    }

    /// This process's rank.
    pub fn rank(&self) -> u32 {
        self.me.rank
    }

    /// Publishes `value` under `name` for every process of the job.
    pub fn put(&self, name: &str, value: &[u8]) -> Result<(), String> {
        let name = key(name)?;
        let mut v =
            Value { kind: TYPE_BYTE_OBJECT, data: [value.as_ptr() as u64, value.len() as u64, 0] };
        // SAFETY: `v` is a byte object pointing at `value`, which outlives
        // the call; PMIx copies what it keeps.
        let rc = unsafe { (self.api.put)(SCOPE_GLOBAL, name.as_ptr(), &mut v) };
        status("PMIx_Put", rc)
    }

    /// Pushes what was put to the server.
    pub fn commit(&self) -> Result<(), String> {
        // SAFETY: no arguments.
        status("PMIx_Commit", unsafe { (self.api.commit)() })
    }

    /// Waits for every process of the job, collecting what each committed
    /// so that reads after it are served locally.
    pub fn fence(&self) -> Result<(), String> {
        // SAFETY: an all-zero Info is a valid pmix_info_t (empty key, no
        // flags, an undefined value) that the key and value below fill in.
        let mut collect: Info = unsafe { std::mem::zeroed() };
        for (slot, byte) in collect.key.iter_mut().zip(b"pmix.collect\0") {
            *slot = *byte as c_char;
        }
        collect.value.kind = TYPE_BOOL;
        collect.value.data[0] = 1;
        // SAFETY: no process list (every process of this namespace); one
        // info that lives through the call.
        let rc = unsafe { (self.api.fence)(std::ptr::null(), 0, &collect, 1) };
        status("PMIx_Fence", rc)
    }

    /// Reads `name` as published by `rank` of this job (or job-level
    /// information, with [`RANK_WILDCARD`]).
    pub fn get(&self, rank: u32, name: &str) -> Result<Got, String> {
        let name = key(name)?;
        let proc = Proc { nspace: self.me.nspace, rank };
        let mut out: *mut Value = std::ptr::null_mut();
        // SAFETY: `proc` and `name` live through the call; `out` receives a
        // value the library allocated (or stays null on failure).
        let rc = unsafe { (self.api.get)(&proc, name.as_ptr(), std::ptr::null(), 0, &mut out) };
        status("PMIx_Get", rc)?;
        if out.is_null() {
            return Err("PMIx_Get returned no value".into());
        }
        // SAFETY: `out` is the library's value, read as its type says and
        // freed exactly once, below.
        let got = unsafe {
            let v = &*out;
            match v.kind {
                TYPE_BYTE_OBJECT => {
                    let (ptr, len) = (v.data[0] as *const u8, v.data[1] as usize);
                    Got::Bytes(if ptr.is_null() || len == 0 {
                        Vec::new()
                    } else {
                        std::slice::from_raw_parts(ptr, len).to_vec()
                    })
                }
                TYPE_STRING => {
                    let ptr = v.data[0] as *const c_char;
                    Got::Text(if ptr.is_null() {
                        String::new()
                    } else {
                        CStr::from_ptr(ptr).to_string_lossy().into_owned()
                    })
                }
                TYPE_UINT16 => Got::Number(u64::from(v.data[0] as u16)),
                TYPE_UINT32 => Got::Number(u64::from(v.data[0] as u32)),
                other => Got::Other(other),
            }
        };
        // SAFETY: `out` came from PMIx_Get, which allocates it with malloc
        // (PMIX_VALUE_CREATE), and is released once, as the library's own
        // PMIX_VALUE_RELEASE does.
        unsafe {
            match self.api.release {
                Release::Free(free) => free(out, 1),
                Release::DestructThenFree(destruct) => {
                    destruct(out);
                    libc::free(out.cast());
                }
            }
        }
        Ok(got)
    }

    /// Asks the launcher to end the job.
    pub fn abort(&self, code: i32, message: &str) {
        let message = CString::new(message.replace('\0', " ")).unwrap_or_default();
        // SAFETY: a null process list means the whole job; `message` lives
        // through the call.
        let _ = unsafe { (self.api.abort)(code, message.as_ptr(), std::ptr::null_mut(), 0) };
    }

    /// Tells the launcher this process has ended normally.
    pub fn finalize(&mut self) -> Result<(), String> {
        if self.finalized {
            return Ok(());
        }
        self.finalized = true;
        // SAFETY: no info.
        status("PMIx_Finalize", unsafe { (self.api.finalize)(std::ptr::null(), 0) })
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.finalize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structures_have_pmix_layout() {
        assert_eq!(std::mem::size_of::<Proc>(), 260);
        assert_eq!(std::mem::size_of::<Value>(), 32);
        assert_eq!(std::mem::offset_of!(Info, flags), 512);
        assert_eq!(std::mem::offset_of!(Info, value), 520);
        assert_eq!(std::mem::offset_of!(Value, data), 8);
    }
}
