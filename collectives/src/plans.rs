//! The schedule a call runs: the algorithm [`select`](crate::select) picks,
//! asked for this rank's rounds. The blocking, non-blocking and persistent
//! forms of a collective all start here, so they always agree.
//!
//! A schedule depends only on the algorithm, the communicator's size, the
//! rank and the call's shape, so the last one of each kind is kept (per
//! thread, i.e. per rank) and a loop of equal calls builds it once: the
//! short all-reduce then costs what the hand-written loop did.

use std::cell::RefCell;
use std::ops::Deref;

use hpcomm_runtime::{Communicator, Result};

use crate::algorithms::*;
use crate::schedule::Schedule;
use crate::select;

/// The kinds of collective, one kept schedule each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Barrier,
    Bcast,
    Allreduce,
    Reduce,
}
const KINDS: usize = 4;

/// What a schedule was built for: equal keys, equal schedules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    kind: Kind,
    /// The algorithm, as its name.
    algorithm: &'static str,
    n: usize,
    me: usize,
    len: usize,
    /// The root, or whether the input is separate.
    extra: usize,
}

thread_local! {
    static KEPT: RefCell<[Option<(Key, Schedule)>; KINDS]> = const { RefCell::new([None, None, None, None]) };
}

/// A schedule for one call, given back to be kept when dropped (unless
/// [`Planned::into_schedule`] took it for a task).
#[derive(Debug)]
pub(crate) struct Planned {
    key: Key,
    schedule: Option<Schedule>,
}

impl Planned {
    fn get(key: Key, build: impl FnOnce() -> Schedule) -> Planned {
        let kept = KEPT.with(|k| match &mut k.borrow_mut()[key.kind as usize] {
            slot @ Some(_) if slot.as_ref().is_some_and(|(k, _)| *k == key) => slot.take(),
            _ => None,
        });
        let schedule = kept.map(|(_, s)| s).unwrap_or_else(build);
        Planned { key, schedule: Some(schedule) }
    }

    /// The schedule, for a task to own.
    pub(crate) fn into_schedule(mut self) -> Schedule {
        self.schedule.take().unwrap_or_default()
    }
}

impl Deref for Planned {
    type Target = Schedule;
    fn deref(&self) -> &Schedule {
        self.schedule.as_ref().expect("taken only by into_schedule, which consumes")
    }
}

impl Drop for Planned {
    fn drop(&mut self) {
        if let Some(schedule) = self.schedule.take() {
            // A panicking thread's cache may be gone; keeping is optional.
            let _ = KEPT.try_with(|k| {
                if let Ok(mut kept) = k.try_borrow_mut() {
                    kept[self.key.kind as usize] = Some((self.key, schedule));
                }
            });
        }
    }
}

/// A barrier.
pub(crate) fn barrier(comm: &Communicator) -> Result<Planned> {
    let (n, me) = (comm.size(), comm.rank());
    let algorithm = select::barrier(comm)?;
    let key = Key { kind: Kind::Barrier, algorithm: algorithm.name(), n, me, len: 0, extra: 0 };
    Ok(Planned::get(key, || match algorithm {
        select::Barrier::Dissemination => barrier_dissemination::schedule(n, me),
    }))
}

/// A broadcast of `len` elements (`bytes` bytes) from `root`.
pub(crate) fn bcast(comm: &Communicator, len: usize, bytes: usize, root: usize) -> Result<Planned> {
    let (n, me) = (comm.size(), comm.rank());
    let algorithm = select::bcast(comm, bytes)?;
    let key = Key { kind: Kind::Bcast, algorithm: algorithm.name(), n, me, len, extra: root };
    Ok(Planned::get(key, || match algorithm {
        select::Bcast::Binomial => bcast_binomial::schedule(n, me, len, root),
        select::Bcast::ScatterAllgather => bcast_scatter_allgather::schedule(n, me, len, root),
    }))
}

/// An all-reduce of `len` elements (`bytes` bytes), read from the input
/// when `input` is set.
pub(crate) fn allreduce(
    comm: &Communicator,
    len: usize,
    bytes: usize,
    commutative: bool,
    input: bool,
) -> Result<Planned> {
    let (n, me) = (comm.size(), comm.rank());
    let algorithm = select::allreduce(comm, bytes, len, commutative)?;
    let extra = usize::from(input);
    let key = Key { kind: Kind::Allreduce, algorithm: algorithm.name(), n, me, len, extra };
    Ok(Planned::get(key, || match algorithm {
        select::Allreduce::RecursiveDoubling => {
            allreduce_recursive_doubling::schedule(n, me, len, input)
        }
        select::Allreduce::Ring => allreduce_ring::schedule(n, me, len, input),
        select::Allreduce::Rabenseifner => allreduce_rabenseifner::schedule(n, me, len, input),
    }))
}

/// Rabenseifner's reduction of `len` elements to `root` (the binomial
/// reduction is not a schedule yet).
pub(crate) fn reduce_rabenseifner(comm: &Communicator, len: usize, root: usize) -> Planned {
    let (n, me) = (comm.size(), comm.rank());
    let key = Key { kind: Kind::Reduce, algorithm: "rabenseifner", n, me, len, extra: root };
    Planned::get(key, || reduce_rabenseifner::schedule(n, me, len, root))
}
