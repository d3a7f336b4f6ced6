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

use hpcomm_runtime::{Communicator, NodeLayout, Result};

use crate::algorithms::hierarchical::{self, Tiers};
use crate::algorithms::*;
use crate::model::Machine;
use crate::schedule::{Piece, Schedule};
use crate::select::{self, Allreduce, Barrier, Bcast, Reduce};

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
    /// The node layout and byte count a hierarchical schedule was built
    /// for (its phases' algorithms depend on both); zeros for the flat
    /// ones, whose algorithm says all.
    layout: (u64, usize),
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

/// What a hierarchical schedule needs: the rank's tiers, the machine the
/// leaders choose their algorithm by, and the layout's id for the key.
fn tiers(comm: &Communicator, root: usize) -> Option<(Tiers, Machine, u64)> {
    let layout = comm.nodes()?;
    let m = select::machine(comm)?;
    Some((Tiers::new(layout, comm.rank(), root), m.leaders(), layout.id()))
}

/// A barrier.
pub(crate) fn barrier(comm: &Communicator) -> Result<Planned> {
    let (n, me) = (comm.size(), comm.rank());
    let mut algorithm = select::barrier(comm)?;
    let hier = match algorithm {
        Barrier::Hierarchical => tiers(comm, 0),
        _ => None,
    };
    if hier.is_none() {
        algorithm = Barrier::Dissemination;
    }
    let layout = hier.as_ref().map_or((0, 0), |h| (h.2, 0));
    let key =
        Key { kind: Kind::Barrier, algorithm: algorithm.name(), n, me, len: 0, extra: 0, layout };
    Ok(Planned::get(key, || match hier {
        Some((t, _, _)) => hier_barrier(&t),
        None => barrier_dissemination::schedule(n, me),
    }))
}

/// The hierarchical barrier's schedule.
pub(crate) fn hier_barrier(t: &Tiers) -> Schedule {
    hierarchical::allreduce(
        t,
        None,
        hierarchical::fan_in,
        barrier_dissemination::schedule,
        |r, me, leader| bcast_binomial::schedule(r, me, 0, leader),
    )
}

/// A flat broadcast's schedule.
fn bcast_flat(a: Bcast, n: usize, me: usize, len: usize, root: usize) -> Schedule {
    match a {
        Bcast::ScatterAllgather => bcast_scatter_allgather::schedule(n, me, len, root),
        Bcast::Binomial | Bcast::Hierarchical => bcast_binomial::schedule(n, me, len, root),
    }
}

/// A broadcast of `len` elements (`bytes` bytes) from `root`.
pub(crate) fn bcast(comm: &Communicator, len: usize, bytes: usize, root: usize) -> Result<Planned> {
    let (n, me) = (comm.size(), comm.rank());
    let algorithm = select::bcast(comm, bytes)?;
    let hier = match algorithm {
        Bcast::Hierarchical => tiers(comm, root),
        _ => None,
    };
    let layout = hier.as_ref().map_or((0, 0), |h| (h.2, bytes));
    let key =
        Key { kind: Kind::Bcast, algorithm: algorithm.name(), n, me, len, extra: root, layout };
    Ok(Planned::get(key, || match hier {
        Some((t, leaders, _)) => {
            let root_node = comm.nodes().map_or(0, |l| l.node_of(root));
            hier_bcast(&t, &leaders, len, bytes, root_node)
        }
        None => bcast_flat(algorithm, n, me, len, root),
    }))
}

/// The hierarchical broadcast's schedule: the leaders (of machine
/// `leaders`) choose among the flat algorithms by the model, each node by
/// the measured rules.
pub(crate) fn hier_bcast(
    t: &Tiers,
    leaders: &Machine,
    len: usize,
    bytes: usize,
    root_node: usize,
) -> Schedule {
    let across = Bcast::flat(leaders, t.nodes(), bytes);
    let within = Bcast::auto(t.local_size(), bytes);
    hierarchical::bcast(
        t,
        root_node,
        |m, node, root| bcast_flat(across, m, node, len, root),
        |r, me, leader| bcast_flat(within, r, me, len, leader),
    )
}

/// A flat all-reduce's schedule.
fn allreduce_flat(a: Allreduce, n: usize, me: usize, len: usize, input: bool) -> Schedule {
    match a {
        Allreduce::Ring => allreduce_ring::schedule(n, me, len, input),
        Allreduce::Rabenseifner => allreduce_rabenseifner::schedule(n, me, len, input),
        Allreduce::RecursiveDoubling | Allreduce::Hierarchical => {
            allreduce_recursive_doubling::schedule(n, me, len, input)
        }
    }
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
    let hier = match algorithm {
        Allreduce::Hierarchical => tiers(comm, 0),
        _ => None,
    };
    let (extra, layout) = (usize::from(input), hier.as_ref().map_or((0, 0), |h| (h.2, bytes)));
    let key = Key { kind: Kind::Allreduce, algorithm: algorithm.name(), n, me, len, extra, layout };
    Ok(Planned::get(key, || match hier {
        Some((t, leaders, _)) => hier_allreduce(&t, &leaders, len, bytes, input),
        None => allreduce_flat(algorithm, n, me, len, input),
    }))
}

/// The hierarchical all-reduce's schedule (a commutative operation).
pub(crate) fn hier_allreduce(
    t: &Tiers,
    leaders: &Machine,
    len: usize,
    bytes: usize,
    input: bool,
) -> Schedule {
    let across = Allreduce::flat(leaders, t.nodes(), bytes);
    let r = t.local_size();
    let (down, up) = (Reduce::auto(r, bytes, len, true), Bcast::auto(r, bytes));
    hierarchical::allreduce(
        t,
        input.then_some(len),
        |r, me, leader| reduce_flat(down, r, me, len, leader, true, input),
        |m, node| allreduce_flat(across, m, node, len, false),
        |r, me, leader| bcast_flat(up, r, me, len, leader),
    )
}

/// A flat reduction's schedule.
fn reduce_flat(
    a: Reduce,
    n: usize,
    me: usize,
    len: usize,
    root: usize,
    commutative: bool,
    input: bool,
) -> Schedule {
    match a {
        Reduce::Rabenseifner => reduce_rabenseifner::schedule(n, me, len, root, input),
        Reduce::Binomial | Reduce::Hierarchical => {
            reduce_binomial::schedule(n, me, len, root, commutative, input)
        }
    }
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
    let hier = match algorithm {
        Reduce::Hierarchical => tiers(comm, root),
        _ => None,
    };
    // Root and flags in one key field: root < 2^61.
    let extra = root << 2 | usize::from(commutative) << 1 | usize::from(input);
    let layout = hier.as_ref().map_or((0, 0), |h| (h.2, bytes));
    let key = Key { kind: Kind::Reduce, algorithm: algorithm.name(), n, me, len, extra, layout };
    Ok(Planned::get(key, || match hier {
        Some((t, leaders, _)) => {
            let root_node = comm.nodes().map_or(0, |l| l.node_of(root));
            hier_reduce(&t, &leaders, len, bytes, root_node, input)
        }
        None => reduce_flat(algorithm, n, me, len, root, commutative, input),
    }))
}

/// The hierarchical reduction's schedule (a commutative operation).
pub(crate) fn hier_reduce(
    t: &Tiers,
    leaders: &Machine,
    len: usize,
    bytes: usize,
    root_node: usize,
    input: bool,
) -> Schedule {
    let across = Reduce::flat(leaders, t.nodes(), bytes);
    let within = Reduce::auto(t.local_size(), bytes, len, true);
    hierarchical::reduce(
        t,
        input.then_some(len),
        root_node,
        |r, me, leader| reduce_flat(within, r, me, len, leader, true, input),
        |m, node, root| reduce_flat(across, m, node, len, root, true, false),
    )
}

/// A scan (prefix reduction) of `len` elements, inclusive or not, each
/// rank's contribution read from the input when `input` is set.
pub(crate) fn scan(comm: &Communicator, len: usize, exclusive: bool, input: bool) -> Planned {
    let (n, me) = (comm.size(), comm.rank());
    let extra = usize::from(exclusive) << 1 | usize::from(input);
    let key = Key {
        kind: Kind::Scan,
        algorithm: "recursive_doubling",
        n,
        me,
        len,
        extra,
        layout: (0, 0),
    };
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
    let hier = match (algorithm, packed) {
        (select::Allgather::Hierarchical, Some(_)) => tiers(comm, 0),
        _ => None,
    };
    let layout = hier.as_ref().map_or((0, 0), |h| (h.2, total * elem));
    let key = Key {
        kind: Kind::Allgather,
        algorithm: algorithm.name(),
        n,
        me,
        len: block,
        extra,
        layout,
    };
    if let (Some((t, leaders, _)), Some(layout)) = (hier, comm.nodes()) {
        return Ok(Planned::get(key, || {
            hier_allgather(&t, &leaders, layout, blocks, total * elem, input)
        }));
    }
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

/// A flat all-gather's schedule for `blocks`: Bruck and recursive
/// doubling for equal packed blocks (the latter on a power of two), the
/// ring otherwise.
fn allgather_flat(
    a: select::Allgather,
    n: usize,
    me: usize,
    blocks: &[Range<usize>],
    input: bool,
) -> Schedule {
    match (a, packed_block(blocks)) {
        (select::Allgather::Bruck, Some(b)) => allgather_bruck::schedule(n, me, b, input),
        (select::Allgather::RecursiveDoubling, Some(b)) if n.is_power_of_two() => {
            allgather_recursive_doubling::schedule(n, me, b, input)
        }
        _ => allgather_ring::schedule(n, me, blocks, input),
    }
}

/// The hierarchical all-gather's schedule (`bytes` in all): the layout is
/// blocked, so each node's blocks are one piece of the work buffer.
pub(crate) fn hier_allgather(
    t: &Tiers,
    leaders: &Machine,
    layout: &NodeLayout,
    blocks: &[Range<usize>],
    bytes: usize,
    input: bool,
) -> Schedule {
    let pieces: Vec<Range<usize>> = (0..layout.count())
        .map(|node| {
            let (first, last) = (layout.ranks_of(node).next(), layout.ranks_of(node).last());
            match (first, last) {
                (Some(a), Some(b)) => blocks[a].start..blocks[b].end.max(blocks[a].start),
                _ => 0..0,
            }
        })
        .collect();
    let total = blocks.iter().map(|b| b.end).max().unwrap_or(0);
    let across = select::Allgather::flat(leaders, t.nodes(), bytes);
    let within = Bcast::auto(t.local_size(), bytes);
    hierarchical::allgather(
        t,
        blocks,
        &pieces,
        |r, me, leader, landing| {
            let mine = match input {
                true => Piece::input(0..landing[me].len()),
                false => landing[me].clone(),
            };
            hierarchical::gather_within(r, me, leader, landing, mine)
        },
        |m, node, pieces| allgather_flat(across, m, node, pieces, false),
        |r, me, leader| bcast_flat(within, r, me, total, leader),
        input,
    )
}

/// A gather of `len` elements per rank into `blocks` of the root's work
/// buffer (known at the root only: elsewhere empty), read from the input
/// when `input` is set; `equal`: a gather of equal blocks (not a
/// `gather_v`), which every rank knows.
pub(crate) fn gather(
    comm: &Communicator,
    root: usize,
    blocks: &[Range<usize>],
    len: usize,
    input: bool,
    equal: bool,
) -> Result<Planned> {
    let (n, me) = (comm.size(), comm.rank());
    let algorithm = select::gather(comm, len, equal)?;
    if let (select::Gather::Hierarchical, Some((t, _, _)), Some(layout)) =
        (algorithm, tiers(comm, root), comm.nodes())
    {
        return Ok(Planned::fresh(hier_gather(&t, layout, root, len, input)));
    }
    Ok(Planned::fresh(gather_linear::schedule(n, me, root, blocks, len, input)))
}

/// The hierarchical gather's schedule: equal blocks of `len`, the layout
/// blocked.
pub(crate) fn hier_gather(
    t: &Tiers,
    layout: &NodeLayout,
    root: usize,
    len: usize,
    input: bool,
) -> Schedule {
    let pieces: Vec<Range<usize>> = (0..layout.count())
        .map(|node| {
            let first = layout.ranks_of(node).next().unwrap_or(0);
            let count = layout.ranks_of(node).count();
            first * len..(first + count) * len
        })
        .collect();
    hierarchical::gather(t, root, len, &pieces, input)
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
        layout: (0, 0),
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
