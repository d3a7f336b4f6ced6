//! The schedule a call runs: the algorithm [`select`](crate::select) picks,
//! asked for this rank's rounds. The blocking, non-blocking and persistent
//! forms of a collective all start here, so they always agree.
//!
//! A schedule depends only on the algorithm, the communicator's size, the
//! rank and the call's shape, so the last one of each kind is kept (per
//! thread, i.e. per rank) and a loop of equal calls builds it once: the
//! short all-reduce then costs what the hand-written loop did.

use std::cell::RefCell;
use std::ops::{Deref, Range};

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
    Scan,
    Allgather,
    Alltoall,
}
const KINDS: usize = 7;

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
    static KEPT: RefCell<[Option<(Key, Schedule)>; KINDS]> = const { RefCell::new([None, None, None, None, None, None, None]) };
}

/// A schedule for one call, given back to be kept when dropped (unless
/// [`Planned::into_schedule`] took it for a task).
#[derive(Debug)]
pub(crate) struct Planned {
    /// `None` for a schedule not worth keeping (counts per rank).
    key: Option<Key>,
    schedule: Option<Schedule>,
}

impl Planned {
    fn get(key: Key, build: impl FnOnce() -> Schedule) -> Planned {
        let kept = KEPT.with(|k| match &mut k.borrow_mut()[key.kind as usize] {
            slot @ Some(_) if slot.as_ref().is_some_and(|(k, _)| *k == key) => slot.take(),
            _ => None,
        });
        let schedule = kept.map(|(_, s)| s).unwrap_or_else(build);
        Planned { key: Some(key), schedule: Some(schedule) }
    }

    pub(crate) fn fresh(schedule: Schedule) -> Planned {
        Planned { key: None, schedule: Some(schedule) }
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
        if let (Some(key), Some(schedule)) = (self.key, self.schedule.take()) {
            // A panicking thread's cache may be gone; keeping is optional.
            let _ = KEPT.try_with(|k| {
                if let Ok(mut kept) = k.try_borrow_mut() {
                    kept[key.kind as usize] = Some((key, schedule));
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

/// A reduction of `len` elements (`bytes` bytes) to `root`, each rank's
/// contribution read from the input first when `input` is set.
pub(crate) fn reduce(
    comm: &Communicator,
    len: usize,
    bytes: usize,
    commutative: bool,
    root: usize,
    input: bool,
) -> Result<Planned> {
    let (n, me) = (comm.size(), comm.rank());
    let algorithm = select::reduce(comm, bytes, len, commutative)?;
    // Root and flags in one key field: root < 2^61.
    let extra = root << 2 | usize::from(commutative) << 1 | usize::from(input);
    let key = Key { kind: Kind::Reduce, algorithm: algorithm.name(), n, me, len, extra };
    Ok(Planned::get(key, || match algorithm {
        select::Reduce::Binomial => reduce_binomial::schedule(n, me, len, root, commutative, input),
        select::Reduce::Rabenseifner => reduce_rabenseifner::schedule(n, me, len, root, input),
    }))
}

/// A scan (prefix reduction) of `len` elements, inclusive or not, each
/// rank's contribution read from the input when `input` is set.
pub(crate) fn scan(comm: &Communicator, len: usize, exclusive: bool, input: bool) -> Planned {
    let (n, me) = (comm.size(), comm.rank());
    let extra = usize::from(exclusive) << 1 | usize::from(input);
    let key = Key { kind: Kind::Scan, algorithm: "recursive_doubling", n, me, len, extra };
    Planned::get(key, || scan_recursive_doubling::schedule(n, me, len, exclusive, input))
}

/// The block length when every block is `block` long and they lie packed
/// in rank order.
fn packed_block(blocks: &[Range<usize>]) -> Option<usize> {
    let block = blocks.first().map_or(0, |b| b.len());
    blocks.iter().enumerate().all(|(r, b)| *b == (r * block..(r + 1) * block)).then_some(block)
}

/// An all-gather of rank `r`'s block into `blocks[r]` of the work buffer,
/// this rank's own copied from the input when `input` is set.
pub(crate) fn allgather(
    comm: &Communicator,
    blocks: &[Range<usize>],
    elem: usize,
    input: bool,
) -> Result<Planned> {
    let (n, me) = (comm.size(), comm.rank());
    let packed = packed_block(blocks);
    let total = blocks.iter().map(|b| b.len()).sum::<usize>();
    let algorithm = select::allgather(comm, total * elem, packed.is_some())?;
    let (block, extra) = (packed.unwrap_or(0), usize::from(input));
    let key = Key { kind: Kind::Allgather, algorithm: algorithm.name(), n, me, len: block, extra };
    Ok(match (algorithm, packed) {
        (select::Allgather::Bruck, Some(b)) => {
            Planned::get(key, || allgather_bruck::schedule(n, me, b, input))
        }
        (select::Allgather::RecursiveDoubling, Some(b)) if n.is_power_of_two() => {
            Planned::get(key, || allgather_recursive_doubling::schedule(n, me, b, input))
        }
        (_, Some(_)) => Planned::get(key, || allgather_ring::schedule(n, me, blocks, input)),
        (_, None) => Planned::fresh(allgather_ring::schedule(n, me, blocks, input)),
    })
}

/// A gather of `len` elements per rank into `blocks` of the root's work
/// buffer, read from the input when `input` is set.
pub(crate) fn gather(
    comm: &Communicator,
    root: usize,
    blocks: &[Range<usize>],
    len: usize,
    input: bool,
) -> Planned {
    let (n, me) = (comm.size(), comm.rank());
    Planned::fresh(gather_linear::schedule(n, me, root, blocks, len, input))
}

/// A scatter of `blocks` of the root's input (or work buffer) into `len`
/// elements of every rank's work buffer.
pub(crate) fn scatter(
    comm: &Communicator,
    root: usize,
    blocks: &[Range<usize>],
    len: usize,
    input: bool,
) -> Planned {
    let (n, me) = (comm.size(), comm.rank());
    Planned::fresh(scatter_linear::schedule(n, me, root, blocks, len, input))
}

/// An all-to-all from `sblocks` of the input to `rblocks` of the work
/// buffer.
pub(crate) fn alltoall(
    comm: &Communicator,
    sblocks: &[Range<usize>],
    rblocks: &[Range<usize>],
    elem: usize,
) -> Result<Planned> {
    let (n, me) = (comm.size(), comm.rank());
    let packed = packed_block(sblocks).filter(|&b| packed_block(rblocks) == Some(b));
    let algorithm = select::alltoall(comm, packed.unwrap_or(0) * elem, packed.is_some())?;
    let key = Key {
        kind: Kind::Alltoall,
        algorithm: algorithm.name(),
        n,
        me,
        len: packed.unwrap_or(0),
        extra: 0,
    };
    Ok(match (algorithm, packed) {
        (select::Alltoall::Bruck, Some(b)) => {
            Planned::get(key, || alltoall_bruck::schedule(n, me, b))
        }
        (_, Some(_)) => Planned::get(key, || alltoall_pairwise::schedule(n, me, sblocks, rblocks)),
        (_, None) => Planned::fresh(alltoall_pairwise::schedule(n, me, sblocks, rblocks)),
    })
}

/// A reduce-scatter of the whole vector (`blocks[r]`: rank `r`'s part),
/// read from the input when `input` is set, into the start of the work
/// buffer: the ring for commutative operations, the pairwise exchange
/// (which combines in rank order) for the others.
pub(crate) fn reduce_scatter(
    comm: &Communicator,
    blocks: &[Range<usize>],
    commutative: bool,
    input: bool,
) -> Planned {
    let (n, me) = (comm.size(), comm.rank());
    Planned::fresh(match commutative {
        true => reduce_scatter_ring::schedule(n, me, blocks, input),
        false => reduce_scatter_pairwise::schedule(n, me, blocks, input),
    })
}
