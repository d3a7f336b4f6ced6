//! The schedule a call runs: the algorithm [`select`](crate::select) picks,
//! asked for this rank's rounds. The blocking, non-blocking and persistent
//! forms of a collective all start here, so they always agree.

use hpcomm_runtime::{Communicator, Result};

use crate::algorithms::*;
use crate::schedule::Schedule;
use crate::select;

/// A barrier.
pub(crate) fn barrier(comm: &Communicator) -> Result<Schedule> {
    Ok(match select::barrier(comm)? {
        select::Barrier::Dissemination => barrier_dissemination::schedule(comm.size(), comm.rank()),
    })
}

/// A broadcast of `len` elements (`bytes` bytes) from `root`.
pub(crate) fn bcast(
    comm: &Communicator,
    len: usize,
    bytes: usize,
    root: usize,
) -> Result<Schedule> {
    let (n, me) = (comm.size(), comm.rank());
    Ok(match select::bcast(comm, bytes)? {
        select::Bcast::Binomial => bcast_binomial::schedule(n, me, len, root),
        select::Bcast::ScatterAllgather => bcast_scatter_allgather::schedule(n, me, len, root),
    })
}

/// An all-reduce of `len` elements (`bytes` bytes), read from the input
/// when `input` is set.
pub(crate) fn allreduce(
    comm: &Communicator,
    len: usize,
    bytes: usize,
    commutative: bool,
    input: bool,
) -> Result<Schedule> {
    let (n, me) = (comm.size(), comm.rank());
    Ok(match select::allreduce(comm, bytes, len, commutative)? {
        select::Allreduce::RecursiveDoubling => {
            allreduce_recursive_doubling::schedule(n, me, len, input)
        }
        select::Allreduce::Ring => allreduce_ring::schedule(n, me, len, input),
        select::Allreduce::Rabenseifner => allreduce_rabenseifner::schedule(n, me, len, input),
    })
}
