//! An endpoint's engine, shared by the communicators made over it: it may
//! move between threads, and serves one thread at a time.
//!
//! Two guards keep the rule. The engine's lock is taken for each step of a
//! call (a send's start, a round of progress) and never waits: a step that
//! finds it held fails with [`Error::Busy`]. A *claim* marks the endpoint
//! as one thread's for longer stretches — a scope, a blocking call — so
//! that another thread's call fails as it starts, not halfway through, and
//! the region scopes of an endpoint nest. Claims nest within their thread.
//! Neither guard is a waiting lock: a thread never sleeps on another here;
//! a program that needs communication from several threads at once opens
//! an endpoint per thread ([`crate::Communicator::endpoints`]).
//!
//! Uncontended, a step's lock is one atomic swap and a store, a claim one
//! compare-and-swap and a store: what the single-threaded hot path pays
//! for `Send`.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use hpcomm_transport::Regions;
use try_lock::{Locked, TryLock};

use crate::endpoint::Reopen;
use crate::engine::Engine;
use crate::error::{Error, Result};

/// The engine of one endpoint and who holds it.
#[derive(Debug)]
pub(crate) struct Shared {
    engine: TryLock<Engine>,
    owner: Owner,
    /// The engine's region table (a handle to it), reached without the
    /// engine's lock.
    regions: Regions,
    transport: &'static str,
    eager: usize,
    /// How to open more endpoints like this one.
    reopen: Reopen,
    /// The universe's endpoints, this one among them.
    family: Arc<Family>,
    /// Threads of other endpoints of the family inside a round of
    /// progress on this one ([`Shared::help`]).
    helpers: AtomicU32,
}

/// The endpoints of one universe (its own and those `endpoints` opened):
/// a thread that waits on one of them also progresses the others that no
/// thread is using, so that data one of them still owes its peers leaves
/// even while its threads are done with it or wait elsewhere.
#[derive(Debug, Default)]
pub(crate) struct Family {
    members: Mutex<Vec<Weak<Shared>>>,
}

/// The engine, held for one step.
pub(crate) type EngineGuard<'a> = Locked<'a, Engine>;

impl Shared {
    /// An endpoint's shared engine, a member of `family` (a new one for a
    /// universe's first endpoint).
    pub(crate) fn new(engine: Engine, reopen: Reopen, family: Option<Arc<Family>>) -> Arc<Shared> {
        let regions = engine.regions().clone();
        let (transport, eager) = (engine.transport_name(), engine.limits().eager);
        let family = family.unwrap_or_default();
        let shared = Arc::new(Shared {
            engine: TryLock::new(engine),
            owner: Owner::default(),
            regions,
            transport,
            eager,
            reopen,
            family: family.clone(),
            helpers: AtomicU32::new(0),
        });
        let mut members = family.members.lock().unwrap_or_else(|e| e.into_inner());
        members.retain(|m| m.strong_count() > 0);
        members.push(Arc::downgrade(&shared));
        shared
    }

    /// The engine for one step, unless another thread holds the endpoint.
    #[inline]
    pub(crate) fn lock(&self) -> Result<EngineGuard<'_>> {
        if !self.owner.admits() {
            return Err(busy());
        }
        match self.engine.try_lock() {
            Some(engine) => Ok(engine),
            None => self.lock_after_helpers(),
        }
    }

    /// The engine, once the threads of other endpoints that were helping
    /// it along have let go (one round of progress each); `Busy` if a
    /// thread of its own holds it.
    #[cold]
    fn lock_after_helpers(&self) -> Result<EngineGuard<'_>> {
        loop {
            // A helper lets go of the engine before it says it is done.
            let helped = self.helpers.load(Ordering::Acquire) > 0;
            if let Some(engine) = self.engine.try_lock() {
                return Ok(engine);
            }
            if !helped {
                return Err(busy());
            }
            std::hint::spin_loop();
        }
    }

    /// The universe's endpoints this one belongs with.
    pub(crate) fn family(&self) -> &Arc<Family> {
        &self.family
    }

    /// One round of progress on each other endpoint of the family that no
    /// thread holds: what a thread does while it waits with nothing to do.
    pub(crate) fn help_siblings(&self) {
        let members: Vec<Arc<Shared>> = {
            let Ok(members) = self.family.members.try_lock() else { return };
            members.iter().filter_map(Weak::upgrade).collect()
        };
        for sibling in members.iter().filter(|m| !std::ptr::eq(m.as_ref(), self)) {
            sibling.help();
        }
    }

    /// One round of progress, if no thread holds the endpoint.
    fn help(&self) {
        if self.owner.0.load(Ordering::Acquire) != 0 {
            return;
        }
        self.helpers.fetch_add(1, Ordering::AcqRel);
        if let Some(mut engine) = self.engine.try_lock() {
            if let Err(e) = engine.progress() {
                tracing::debug!("progress of an endpoint no thread holds: {e}");
            }
        }
        self.helpers.fetch_sub(1, Ordering::AcqRel);
    }

    /// Marks the endpoint as this thread's until the claim is dropped.
    #[inline]
    pub(crate) fn claim(&self) -> Result<Claim<'_>> {
        self.owner.claim()
    }

    /// The engine's region table.
    #[inline]
    pub(crate) fn regions(&self) -> &Regions {
        &self.regions
    }

    /// The transport's name.
    pub(crate) fn transport_name(&self) -> &'static str {
        self.transport
    }

    /// How to open more endpoints like this one.
    pub(crate) fn reopen(&self) -> &Reopen {
        &self.reopen
    }

    /// The engine's eager limit (set once, when it starts).
    pub(crate) fn eager_limit(&self) -> usize {
        self.eager
    }
}

/// The thread that claimed an endpoint ([`thread_token`]), 0 if none.
#[derive(Debug, Default)]
struct Owner(AtomicU64);

impl Owner {
    #[inline]
    fn claim(&self) -> Result<Claim<'_>> {
        let me = thread_token();
        match self.0.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => Ok(Claim { owner: Some(&self.0) }),
            Err(owner) if owner == me => Ok(Claim { owner: None }),
            Err(_) => Err(busy()),
        }
    }

    /// Whether the calling thread may use the endpoint: nobody claimed it,
    /// or this thread did.
    #[inline]
    fn admits(&self) -> bool {
        let owner = self.0.load(Ordering::Acquire);
        owner == 0 || owner == thread_token()
    }
}

/// A thread's hold on an endpoint (see [`Shared::claim`]); the outermost
/// one gives it back when dropped.
#[must_use]
pub(crate) struct Claim<'a> {
    /// The owner word to clear, for the outermost claim.
    owner: Option<&'a AtomicU64>,
}

impl Drop for Claim<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(owner) = self.owner {
            owner.store(0, Ordering::Release);
        }
    }
}

#[cold]
fn busy() -> Error {
    Error::Busy
}

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static TOKEN: Cell<u64> = const { Cell::new(0) };
}

/// A number for the calling thread, unique in the process and never 0.
#[inline]
fn thread_token() -> u64 {
    TOKEN.with(|t| match t.get() {
        0 => {
            let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
            t.set(token);
            token
        }
        token => token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Claims nest in their thread, and another thread finds the endpoint
    /// busy until the outermost claim ends.
    #[test]
    fn claims_nest_and_keep_other_threads_out() {
        let owner = Owner::default();
        let elsewhere = |owner: &Owner| {
            std::thread::scope(|s| {
                s.spawn(|| (owner.admits(), owner.claim().map(|_| ()))).join().expect("no panic")
            })
        };
        let outer = owner.claim().expect("free");
        let inner = owner.claim().expect("nested in its thread");
        assert!(owner.admits());
        assert_eq!(elsewhere(&owner), (false, Err(Error::Busy)));
        drop(inner);
        assert_eq!(elsewhere(&owner), (false, Err(Error::Busy)), "the outer claim holds");
        drop(outer);
        assert_eq!(elsewhere(&owner), (true, Ok(())));
        assert_eq!(owner.0.load(Ordering::Relaxed), 0, "the other thread's claim ended too");
    }
}
