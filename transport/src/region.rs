//! Memory regions: user buffers that a transport may read or write while an
//! operation is in flight.
//!
//! A non-blocking receive must be able to land data in the user's buffer
//! whenever the progress engine runs, and a rendezvous send must leave its
//! buffer readable by the peer until the peer says it is done. Both need the
//! buffer to outlive the operation, and safe Rust must not be able to break
//! that even with `std::mem::forget`.
//!
//! The answer is the same as `std::thread::scope`'s: memory enters a
//! [`Regions`] table only through a [`RegionScope`], which exists only inside
//! [`Regions::scope`]; the scope's lifetime `'s` is invariant and every
//! registered borrow must outlive it; and when `scope` returns — normally or
//! by unwinding — every region registered in it is removed and its exposure
//! to peers revoked. Forgetting a request or a handle therefore leaks, at
//! worst, a table entry until the scope ends; it never leaves a dangling
//! pointer behind.
//!
//! The table is per endpoint. It moves with its endpoint to another thread
//! (`Send`) and is used by one thread at a time: a short lock guards each
//! access (only two threads misusing one endpoint ever contend for it,
//! and the runtime refuses that at its own lock first). What a peer may
//! touch is only the revocable exposure that a backend attaches.
//!
//! # Pins
//!
//! A backend that hands a region's memory to someone who uses it after the
//! call returns — libfabric writing a read's data into it whenever the
//! provider progresses — *pins* the region for that operation and unpins it
//! when the operation's completion (or its cancellation's) has been seen.
//! A pinned region that is released (its request ended early: a peer was
//! lost, a scope unwound) disappears for everyone else at once, but its
//! memory and registration stay until the last unpin. A scope never ends
//! while a region registered in it is pinned: its close drives progress
//! through the table's [drain hook](Regions::set_drain) until the backend
//! has seen every completion. The runtime installs the hook; a table
//! without one whose scope closes on a pinned region aborts the process,
//! since neither returning (the memory would be written after it is freed)
//! nor waiting (nothing would ever complete) is sound.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;

/// A handle to a registered region. Stale handles (the region was removed)
/// are detected by a generation count and find nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegionId {
    index: u32,
    generation: u32,
}

/// What a peer needs to read an exposed region: an address-like value and a
/// key, whose meaning is the backend's (a libfabric MR key and virtual
/// address; a process id and address for shm; a window number for loopback).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RemoteKey {
    /// An address or base offset, backend-defined.
    pub addr: u64,
    /// A key, backend-defined.
    pub key: u64,
}

/// A backend's handle on an exposed region (a registration, a window),
/// revoked when the region leaves the table. The backend that attached it
/// finds its own type again by downcasting.
pub(crate) trait Exposed: std::any::Any + std::fmt::Debug + Send {
    /// Ends peers' access to the region: a read in progress completes
    /// first or fails, later ones fail.
    fn revoke(self: Box<Self>);
}

/// What a region's table keeps of its exposure.
pub(crate) type Exposure = Box<dyn Exposed>;

#[derive(Debug)]
struct Slot {
    generation: u32,
    entry: Option<Entry>,
}

#[derive(Debug)]
struct Entry {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
    exposure: Option<Exposure>,
    /// The memory itself, for a region the table owns (`ptr` points into
    /// it; moving the vector does not move its contents, and it is never
    /// resized while owned here).
    owned: Option<Vec<u8>>,
    /// Transport operations in flight on this memory.
    pins: u32,
    /// Released while pinned: gone for everyone but the pinning backend,
    /// removed at the last unpin.
    released: bool,
    /// The nesting depth of the scope that registered it (`None`: owned).
    depth: Option<usize>,
}

#[derive(Debug, Default)]
struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Regions registered by each open scope, innermost last. Scopes of one
    /// table nest (each `scope` call returns before its caller's does); the
    /// vectors are kept for reuse, `open` of them are in use.
    scopes: Vec<Vec<RegionId>>,
    open: usize,
    /// Released regions still pinned.
    doomed: usize,
    /// What a closing scope calls while its regions are pinned (taken out
    /// while it runs, so that it may use the table).
    drain: Option<DrainHook>,
}

// SAFETY: the table's raw pointers are to memory it owns (a vector in the
// entry) or that a live `RegionScope` borrowed for `'s`, as `&'s [u8]` or
// `&'s mut [u8]` — both `Send` for bytes. The table dereferences them only
// under its lock (`Regions::with`, `with_mut`), and a scope's regions leave
// the table, under the lock, before its borrows end, whichever thread holds
// the table then. The exposures are `Send` by their trait's bound.
unsafe impl Send for Table {}

impl Table {
    /// A live region. A released one is gone for every lookup: releasing
    /// a pinned region advances its slot's generation at once (the entry
    /// stays, found only by [`Table::doomed`], until its last unpin), so the
    /// generation check is the only one on the hot path.
    #[inline]
    fn entry(&self, id: RegionId) -> Option<&Entry> {
        let slot = self.slots.get(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.entry.as_ref()
    }

    #[inline]
    fn entry_mut(&mut self, id: RegionId) -> Option<&mut Entry> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.entry.as_mut()
    }

    /// The slot of region `id` if it was released while pinned and is still
    /// pinned.
    fn doomed(&mut self, id: RegionId) -> Option<&mut Slot> {
        let slot = self.slots.get_mut(id.index as usize)?;
        let doomed = slot.generation == id.generation.wrapping_add(1)
            && slot.entry.as_ref().is_some_and(|e| e.released);
        doomed.then_some(slot)
    }

    /// Removes a live region in place and returns its exposure, to be
    /// revoked once the table is no longer borrowed (revoking may wait for
    /// a peer's read in progress). A pinned region is released instead: gone
    /// for every lookup at once, removed at its last unpin. This is on the
    /// path of every request, so the entry is dropped where it lies.
    #[inline]
    fn release(&mut self, id: RegionId) -> Option<Exposure> {
        let slot = self.slots.get_mut(id.index as usize)?;
        let entry = slot.entry.as_mut().filter(|_| slot.generation == id.generation)?;
        if entry.pins > 0 {
            entry.released = true;
            slot.generation = slot.generation.wrapping_add(1);
            self.doomed += 1;
            return None;
        }
        let exposure = entry.exposure.take();
        slot.entry = None;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
        exposure
    }

    #[inline]
    fn insert(&mut self, entry: Entry) -> RegionId {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(Slot { generation: 0, entry: None });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.entry = Some(entry);
        RegionId { index, generation: slot.generation }
    }

    /// Registers borrowed memory in the open scope of `depth`.
    fn insert_scoped(
        &mut self,
        depth: usize,
        ptr: NonNull<u8>,
        len: usize,
        writable: bool,
    ) -> RegionId {
        let entry = Entry {
            ptr,
            len,
            writable,
            exposure: None,
            owned: None,
            pins: 0,
            released: false,
            depth: Some(depth),
        };
        let id = self.insert(entry);
        self.scopes[depth].push(id);
        id
    }
}

/// An endpoint's table of registered memory. Cloning gives another handle to
/// the same table.
#[derive(Clone, Debug, Default)]
pub struct Regions {
    table: Arc<try_lock::TryLock<Table>>,
}

/// One round of progress of the transport that pins a table's regions.
struct DrainHook(Box<dyn FnMut() + Send>);

impl std::fmt::Debug for DrainHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DrainHook")
    }
}

impl Regions {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The table, for one short access. Held only for the length of a
    /// lookup or a copy (never across a callback that may use the table),
    /// so a holder is always about to let go: waiting yields the core.
    #[inline]
    fn lock(&self) -> try_lock::Locked<'_, Table> {
        loop {
            if let Some(table) = self.table.try_lock() {
                return table;
            }
            std::thread::yield_now();
        }
    }

    /// Runs `f` with a scope in which buffers can be registered; removes every
    /// region registered in it before returning (also when `f` panics).
    pub fn scope<'env, R>(&self, f: impl for<'s> FnOnce(&'s RegionScope<'s, 'env>) -> R) -> R {
        let (depth, _) = self.open(None);
        // Declared before `scope`, so dropped after it: removes the regions
        // once `f` is done with them (also when it unwinds), and before the
        // borrows they came from can end.
        let _close = CloseOnDrop { regions: self, depth };
        let scope =
            RegionScope { regions: self, depth, _invariant: PhantomData, _env: PhantomData };
        f(&scope)
    }

    /// [`scope`](Self::scope) with `buffer` registered in it as it opens
    /// (one access to the table, not two): a blocking call's.
    pub fn scope_with<'env, R>(
        &self,
        buffer: Buffer<'env>,
        f: impl for<'s> FnOnce(&'s RegionScope<'s, 'env>, RegionId) -> R,
    ) -> R {
        let (ptr, len, writable) = match buffer {
            Buffer::Read(bytes) => (NonNull::from(bytes).cast::<u8>(), bytes.len(), false),
            Buffer::Write(bytes) => {
                let len = bytes.len();
                (NonNull::from(bytes).cast::<u8>(), len, true)
            }
        };
        let (depth, id) = self.open(Some((ptr, len, writable)));
        let _close = CloseOnDrop { regions: self, depth };
        let scope =
            RegionScope { regions: self, depth, _invariant: PhantomData, _env: PhantomData };
        f(&scope, id.expect("registered as the scope opened"))
    }

    /// Opens a scope, with a first region in it if given: its depth and
    /// that region.
    fn open(&self, first: Option<(NonNull<u8>, usize, bool)>) -> (usize, Option<RegionId>) {
        let mut table = self.lock();
        if table.scopes.len() == table.open {
            table.scopes.push(Vec::new());
        }
        table.open += 1;
        let depth = table.open - 1;
        let id = first.map(|(ptr, len, writable)| table.insert_scoped(depth, ptr, len, writable));
        (depth, id)
    }

    /// The length of a live region.
    #[inline]
    pub fn len(&self, id: RegionId) -> Option<usize> {
        self.lock().entry(id).map(|e| e.len)
    }

    /// Whether the table holds no live region.
    pub fn is_empty(&self) -> bool {
        self.lock().slots.iter().all(|s| s.entry.is_none())
    }

    /// Calls `f` with the bytes of a live region.
    #[inline]
    pub fn with<R>(&self, id: RegionId, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let table = self.lock();
        let entry = table.entry(id)?;
        // SAFETY: the entry was made from a `&'s [u8]` or `&'s mut [u8]` by a
        // `RegionScope<'s>` that is still alive (it removes its entries when
        // dropped, and `'s` outlives it), or from a vector the entry owns
        // (freed only when the entry is removed), so the memory is valid for
        // `len` bytes. The table's lock is held while `f` runs, and every
        // other access to the memory (`with_mut`) takes it too.
        let bytes = unsafe { std::slice::from_raw_parts(entry.ptr.as_ptr(), entry.len) };
        Some(f(bytes))
    }

    /// Calls `f` with the bytes of a live region registered as writable.
    #[inline]
    pub fn with_mut<R>(&self, id: RegionId, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        let mut table = self.lock();
        let entry = table.entry_mut(id)?;
        if !entry.writable {
            return None;
        }
        // SAFETY: the entry was made from a `&'s mut [u8]` by a live
        // `RegionScope<'s>` (see `with`), so the user gave up access to it
        // for `'s` — or from a vector the entry owns, which nobody else can
        // reach. The table's lock, held while `f` runs, makes this the only
        // reference made from it now.
        let bytes = unsafe { std::slice::from_raw_parts_mut(entry.ptr.as_ptr(), entry.len) };
        Some(f(bytes))
    }

    /// Registers a window of `range` into a live region that a scope
    /// registered (not one the table owns), in the parent's scope: an
    /// operation can then send from or land in part of a buffer without
    /// copying it. Writable if asked and the parent is. `None` for a stale
    /// parent, an owned one or a range outside it.
    ///
    /// The window never outlives the parent's memory: the parent's scope
    /// is open (or its entry would be gone), and removes the window when it
    /// ends. Not the innermost scope: an operation on the window may
    /// outlive a scope nested later (a blocking call's, during which the
    /// engine advances it).
    pub fn window(
        &self,
        parent: RegionId,
        range: std::ops::Range<usize>,
        writable: bool,
    ) -> Option<RegionId> {
        let (ptr, depth) = {
            let table = self.lock();
            let entry = table.entry(parent)?;
            let depth = entry.depth.filter(|&d| d < table.open)?;
            if entry.owned.is_some() || (writable && !entry.writable) {
                return None;
            }
            if range.start > range.end || range.end > entry.len {
                return None;
            }
            // SAFETY: `range.start <= entry.len`, so the offset stays within
            // (or one past the end of) the parent's allocation.
            let ptr = unsafe { entry.ptr.as_ptr().add(range.start) };
            (NonNull::new(ptr)?, depth)
        };
        Some(self.insert(depth, ptr, range.len(), writable))
    }

    /// Registers memory the table takes ownership of: a writable region
    /// outside any scope, for buffers the engine itself sends from or
    /// receives into. It lives until [`take_owned`](Regions::take_owned)
    /// or [`release`](Regions::release) removes it.
    pub fn insert_owned(&self, bytes: Vec<u8>) -> RegionId {
        self.insert_vec(bytes, true)
    }

    /// Registers memory the table takes ownership of as a read-only region
    /// (data to send): unlike a writable one, it can be exposed to peers.
    /// Removed as [`insert_owned`](Regions::insert_owned)'s are.
    pub fn insert_owned_read_only(&self, bytes: Vec<u8>) -> RegionId {
        self.insert_vec(bytes, false)
    }

    fn insert_vec(&self, bytes: Vec<u8>, writable: bool) -> RegionId {
        let mut owned = bytes;
        let len = owned.len();
        let ptr = NonNull::from(owned.as_mut_slice()).cast::<u8>();
        let entry = Entry {
            ptr,
            len,
            writable,
            exposure: None,
            owned: Some(owned),
            pins: 0,
            released: false,
            depth: None,
        };
        self.lock().insert(entry)
    }

    /// Removes an owned region and gives its memory back; `None` (and
    /// nothing removed) for a stale id or a region the table does not own.
    /// A pinned region is released instead (its memory is freed at the last
    /// unpin) and `None` is returned.
    pub fn take_owned(&self, id: RegionId) -> Option<Vec<u8>> {
        let (owned, exposure) = {
            let mut table = self.lock();
            let entry = table.entry_mut(id)?;
            entry.owned.as_ref()?;
            // A pinned region keeps its memory until the last unpin.
            let owned = if entry.pins == 0 { entry.owned.take() } else { None };
            (owned, table.release(id))
        };
        if let Some(exposure) = exposure {
            exposure.revoke();
        }
        owned
    }

    /// Removes a region before its scope ends (for example when its request
    /// completes), revoking any exposure. Removing early is always safe.
    /// A pinned region is removed at its last unpin.
    #[inline]
    pub fn release(&self, id: RegionId) {
        let exposure = self.lock().release(id);
        if let Some(exposure) = exposure {
            exposure.revoke();
        }
    }

    /// Pins a live region for a transport operation that uses its memory
    /// after the call that starts it returns; `false` when it is gone.
    pub(crate) fn pin(&self, id: RegionId) -> bool {
        match self.lock().entry_mut(id) {
            Some(entry) => {
                entry.pins += 1;
                true
            }
            None => false,
        }
    }

    /// Ends one pin of a region, whose operation's completion has been seen;
    /// removes it when it was released meanwhile and this was its last pin.
    pub(crate) fn unpin(&self, id: RegionId) {
        let entry = {
            let mut table = self.lock();
            if let Some(entry) = table.entry_mut(id) {
                entry.pins = entry.pins.saturating_sub(1);
                return;
            }
            let Some(slot) = table.doomed(id) else { return };
            let entry = slot.entry.as_mut().expect("a doomed slot has its entry");
            entry.pins = entry.pins.saturating_sub(1);
            if entry.pins > 0 {
                return;
            }
            let entry = slot.entry.take();
            slot.generation = slot.generation.wrapping_add(1);
            table.doomed -= 1;
            table.free.push(id.index);
            entry
        };
        if let Some(Entry { exposure: Some(exposure), .. }) = entry {
            exposure.revoke();
        }
    }

    /// Whether any released region is still pinned by an operation in flight.
    pub fn has_pinned(&self) -> bool {
        self.lock().doomed > 0
    }

    /// Installs the drain hook: one round of progress of the transport that
    /// pins this table's regions, which a closing scope calls until none of
    /// its regions is pinned (see the module documentation). The hook must
    /// not open or close a scope of this table.
    pub fn set_drain(&self, hook: Box<dyn FnMut() + Send>) {
        self.lock().drain = Some(DrainHook(hook));
    }

    /// The raw extent of a live region and whether it is writable, for a
    /// backend that lands data in it.
    pub(crate) fn raw(&self, id: RegionId) -> Option<(NonNull<u8>, usize, bool)> {
        self.lock().entry(id).map(|e| (e.ptr, e.len, e.writable))
    }

    /// The raw extent of a live region that peers may read: a read-only
    /// one, or (see `outside`) a writable one read from outside the
    /// process. Read in-process, a writable region could be written (`with_mut`, a
    /// read landing in it) while a peer reads it, a data race; and a rank
    /// reading its own exposed region into itself would alias `&` and
    /// `&mut`. Every backend's `expose` starts here.
    ///
    /// `outside` (the backend's `Capabilities::reads_from_outside`): peers
    /// read from outside this process (the kernel's `process_vm_readv`, a
    /// NIC's RDMA read), so that a writable region may be exposed too — a
    /// write here while a peer reads is no data race inside this process
    /// (the reader may see a mix of old and new bytes, which is the
    /// program's race, not memory unsafety). A backend that reads from
    /// inside the process (loopback: another thread's copy) exposes only
    /// read-only regions, which nothing here writes while they are
    /// registered.
    pub(crate) fn exposable(
        &self,
        id: RegionId,
        outside: bool,
    ) -> Result<(NonNull<u8>, usize), crate::TransportError> {
        match self.lock().entry(id) {
            Some(e) if !e.writable || outside => Ok((e.ptr, e.len)),
            _ => Err(crate::TransportError::InvalidRegion),
        }
    }

    /// Runs `f` on the exposure attached to a live region (`None` when it
    /// has none); `None` when the region is gone.
    pub(crate) fn with_exposure<R>(
        &self,
        id: RegionId,
        f: impl FnOnce(Option<&Exposure>) -> R,
    ) -> Option<R> {
        self.lock().entry(id).map(|e| f(e.exposure.as_ref()))
    }

    /// Attaches a backend's exposure to a live region; it is revoked when the
    /// region goes. Returns the exposure back when the region is gone.
    pub(crate) fn attach(&self, id: RegionId, exposure: Exposure) -> Result<(), Exposure> {
        let mut table = self.lock();
        match table.entry_mut(id) {
            Some(entry) => {
                if let Some(old) = entry.exposure.replace(exposure) {
                    drop(table);
                    old.revoke();
                }
                Ok(())
            }
            None => Err(exposure),
        }
    }

    #[inline]
    fn insert(&self, depth: usize, ptr: NonNull<u8>, len: usize, writable: bool) -> RegionId {
        self.lock().insert_scoped(depth, ptr, len, writable)
    }
}

/// Closes the innermost scope of a table: removes its regions.
struct CloseOnDrop<'a> {
    regions: &'a Regions,
    depth: usize,
}

impl CloseOnDrop<'_> {
    /// Drives the transport through the drain hook until none of `ids` is
    /// pinned (see the module documentation).
    #[cold]
    #[inline(never)]
    fn wait_unpinned(&self, ids: &[RegionId]) {
        let pinned = || {
            let mut table = self.regions.lock();
            ids.iter().any(|&id| table.doomed(id).is_some())
        };
        let mut spins = 0u32;
        while pinned() {
            let hook = self.regions.lock().drain.take();
            match hook {
                Some(mut drain) => {
                    (drain.0)();
                    let mut table = self.regions.lock();
                    table.drain.get_or_insert(drain);
                }
                None => {
                    eprintln!(
                        "hpcomm: a region scope closed while a transport operation still \
                         uses its memory, and nothing can drive the transport: aborting"
                    );
                    std::process::abort();
                }
            }
            spins += 1;
            if spins > 64 {
                std::thread::yield_now();
            }
        }
    }
}

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        // One lock on the common path: the scope's regions leave, and its
        // (emptied) list goes back for reuse. Exposures are revoked after
        // it (revoking may wait for a reader).
        let mut revoked = Vec::new();
        let mut table = self.regions.lock();
        // Scopes of one thread nest. Scopes of two threads over one table
        // need not (the runtime refuses that, a user of the table alone
        // may not): a scope that closes under another still open takes
        // every region of its depth — sooner gone than a scope's end, never
        // later — and leaves what was registered at its depth meanwhile to
        // the next to close there.
        table.open = table.open.min(self.depth);
        let mut ids = std::mem::take(&mut table.scopes[self.depth]);
        revoked.extend(ids.iter().filter_map(|&id| table.release(id)));
        // Borrowed memory must not outlive the scope in any operation: wait
        // for the pinned ones' completions (nothing is pinned unless some
        // released region is: one load on the common path).
        let pinned = table.doomed > 0;
        if pinned {
            drop(table);
            revoke(std::mem::take(&mut revoked));
            self.wait_unpinned(&ids);
            table = self.regions.lock();
        }
        ids.clear();
        if table.scopes[self.depth].is_empty() {
            table.scopes[self.depth] = ids;
        }
        drop(table);
        revoke(revoked);
    }
}

/// Ends peers' access to regions that have left their table.
fn revoke(exposures: Vec<Exposure>) {
    for exposure in exposures {
        exposure.revoke();
    }
}

/// A buffer registered as a scope opens ([`Regions::scope_with`]).
#[derive(Debug)]
pub enum Buffer<'a> {
    /// Data to send: read-only.
    Read(&'a [u8]),
    /// A receive buffer: the engine may write it.
    Write(&'a mut [u8]),
}

/// The registration handle inside [`Regions::scope`]. Buffers registered
/// here must outlive the scope; they are removed from the table when it ends.
///
/// As with `std::thread::scope`, `'env` is the lifetime of everything the
/// scope may borrow, and `'s` the scope's own: `&'s RegionScope<'s, 'env>`
/// implies `'env: 's`.
#[derive(Debug)]
pub struct RegionScope<'s, 'env: 's> {
    regions: &'s Regions,
    depth: usize,
    // Invariant in 's: a scope must not be usable as one with a shorter
    // lifetime, or a shorter borrow could be registered (as thread::scope).
    _invariant: PhantomData<&'s mut &'s ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

impl<'s> RegionScope<'s, '_> {
    /// Registers a buffer that peers and the engine may read.
    #[inline]
    pub fn register(&self, bytes: &'s [u8]) -> RegionId {
        let ptr = NonNull::from(bytes).cast::<u8>();
        self.regions.insert(self.depth, ptr, bytes.len(), false)
    }

    /// Registers a buffer that the engine may write (a receive buffer).
    #[inline]
    pub fn register_mut(&self, bytes: &'s mut [u8]) -> RegionId {
        let len = bytes.len();
        let ptr = NonNull::from(bytes).cast::<u8>();
        self.regions.insert(self.depth, ptr, len, true)
    }

    /// The table this scope registers into.
    pub fn regions(&self) -> &Regions {
        self.regions
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

    use super::*;

    /// Scopes of two threads over one table need not nest: the outer one
    /// may close first. Every region still leaves the table by the end of
    /// its own scope (sooner is allowed), also one registered after the
    /// other scope closed.
    #[test]
    fn scopes_of_two_threads_that_do_not_nest_leave_nothing_behind() {
        let regions = Regions::new();
        let step = Barrier::new(2);
        let (a, b, c) = ([1u8; 4], [2u8; 4], [3u8; 4]);
        std::thread::scope(|t| {
            t.spawn(|| {
                regions.scope(|s| {
                    let id = s.register(&a);
                    step.wait(); // 1: both scopes open, this one outermost
                    step.wait(); // 2: the other has registered
                    assert_eq!(regions.len(id), Some(4));
                });
                step.wait(); // 3: closed first
            });
            t.spawn(|| {
                step.wait(); // 1
                let (kept, late) = regions.scope(|s| {
                    let kept = s.register(&b);
                    step.wait(); // 2
                    step.wait(); // 3: the outer scope has closed
                    let late = s.register(&c);
                    assert_eq!(regions.len(late), Some(4), "registered after the other closed");
                    (kept, late)
                });
                assert_eq!((regions.len(kept), regions.len(late)), (None, None));
            });
        });
        assert!(regions.is_empty(), "a region outlived its scope");
        // The table is sound again for nested use.
        regions.scope(|s| {
            let id = s.register(&a);
            regions.scope(|inner| assert_eq!(regions.len(inner.register(&b)), Some(4)));
            assert_eq!(regions.len(id), Some(4));
        });
        assert!(regions.is_empty());
    }

    #[test]
    fn owned_regions_hold_their_memory_until_taken() {
        let regions = Regions::new();
        let id = regions.insert_owned(vec![1, 2, 3]);
        regions.with_mut(id, |b| b[1] = 9).unwrap();
        assert_eq!(regions.with(id, |b| b.to_vec()), Some(vec![1, 9, 3]));
        // Scopes do not touch it.
        regions.scope(|_| ());
        assert_eq!(regions.len(id), Some(3));
        assert_eq!(regions.take_owned(id), Some(vec![1, 9, 3]));
        assert_eq!(regions.take_owned(id), None);
        assert!(regions.is_empty());
        // A borrowed region is not given away.
        let data = [5u8; 2];
        regions.scope(|scope| {
            let b = scope.register(&data);
            assert_eq!(regions.take_owned(b), None);
            assert_eq!(regions.len(b), Some(2));
        });
    }

    #[test]
    fn windows_reach_into_their_parent_and_end_with_its_scope() {
        let regions = Regions::new();
        let mut out = [0u8; 8];
        let input = [1u8, 2, 3, 4];
        let (w, r) = regions.scope(|s| {
            let parent = s.register_mut(&mut out);
            let read_only = s.register(&input);
            let w = regions.window(parent, 2..5, true).expect("a window");
            assert_eq!(regions.len(w), Some(3));
            regions.with_mut(w, |b| b.copy_from_slice(&[7, 8, 9])).unwrap();
            let r = regions.window(read_only, 1..3, false).expect("a read-only window");
            assert_eq!(regions.with(r, |b| b.to_vec()), Some(vec![2, 3]));
            // Not writable through a read-only parent, nor past the end.
            assert_eq!(regions.window(read_only, 0..1, true), None);
            assert_eq!(regions.window(parent, 4..9, false), None);
            let owned = regions.insert_owned(vec![0; 4]);
            assert_eq!(regions.window(owned, 0..1, false), None);
            regions.release(owned);
            // A window made while a later scope is open belongs to its
            // parent's scope: it outlives the nested one.
            let inner = regions.scope(|_| regions.window(parent, 0..1, true).expect("a window"));
            assert_eq!(regions.len(inner), Some(1), "kept past the nested scope");
            (w, r)
        });
        assert_eq!(out, [0, 0, 7, 8, 9, 0, 0, 0]);
        assert_eq!(regions.len(w), None, "gone with the scope");
        assert_eq!(regions.len(r), None, "gone with the scope");
        assert!(regions.is_empty());
    }

    #[test]
    fn regions_are_removed_when_the_scope_ends() {
        let regions = Regions::new();
        let mut recv = vec![0u8; 8];
        let send = [7u8; 4];
        let (r, s) = regions.scope(|scope| {
            let r = scope.register_mut(&mut recv);
            let s = scope.register(&send);
            regions.with_mut(r, |b| b.copy_from_slice(&[1; 8])).unwrap();
            assert_eq!(regions.with(s, |b| b.to_vec()), Some(vec![7; 4]));
            assert!(regions.with_mut(s, |_| ()).is_none(), "read-only region written");
            (r, s)
        });
        assert!(regions.with(r, |_| ()).is_none());
        assert!(regions.with(s, |_| ()).is_none());
        assert!(regions.is_empty());
        assert_eq!(recv, vec![1; 8]);
    }

    #[test]
    fn pinned_regions_stay_until_their_last_unpin_and_hold_their_scope() {
        let regions = Regions::new();
        // Owned: released while pinned twice, removed at the second unpin.
        let id = regions.insert_owned(vec![1; 4]);
        assert!(regions.pin(id) && regions.pin(id));
        regions.release(id);
        assert_eq!(regions.len(id), None);
        assert!(!regions.pin(id), "a released region was pinned again");
        assert!(regions.has_pinned() && !regions.is_empty());
        regions.unpin(id);
        assert!(regions.has_pinned());
        regions.unpin(id);
        assert!(!regions.has_pinned() && regions.is_empty());
        // Borrowed: the scope's close drives the drain hook until unpinned.
        let calls = Arc::new(AtomicUsize::new(0));
        let pinned = Arc::new(std::sync::Mutex::new(None));
        let (c, p, r) = (calls.clone(), pinned.clone(), regions.clone());
        regions.set_drain(Box::new(move || {
            if c.fetch_add(1, Ordering::Relaxed) + 1 == 3 {
                r.unpin(p.lock().unwrap().expect("pinned"));
            }
        }));
        let mut buf = [0u8; 8];
        regions.scope(|s| {
            let id = s.register_mut(&mut buf);
            assert!(regions.pin(id));
            *pinned.lock().unwrap() = Some(id);
        });
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        assert!(regions.is_empty() && !regions.has_pinned());
    }

    #[test]
    fn stale_handles_find_nothing_after_reuse() {
        let regions = Regions::new();
        let a = [1u8; 2];
        let b = [2u8; 3];
        regions.scope(|scope| {
            let first = scope.register(&a);
            regions.release(first);
            let second = scope.register(&b);
            assert_eq!(regions.len(first), None);
            assert_eq!(regions.len(second), Some(3));
        });
    }

    #[test]
    fn regions_are_removed_when_the_scope_unwinds() {
        let regions = Regions::new();
        let buf = [0u8; 16];
        let leaked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            regions.scope(|scope| {
                let id = scope.register(&buf);
                std::panic::panic_any(id);
            })
        }))
        .unwrap_err();
        let id = *leaked.downcast::<RegionId>().unwrap();
        assert!(regions.with(id, |_| ()).is_none());
    }
}
