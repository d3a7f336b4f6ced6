//! The algorithms, one per file, each with its cost in α-β-γ terms (α: the
//! latency of a message, β: the time per byte, γ: the time per byte
//! combined) and its restrictions in its doc comment. Each builds one
//! rank's [`Schedule`](crate::schedule::Schedule), which the executors in
//! `schedule/` run blocking or as a task; `plans.rs` asks
//! [`select`](crate::select) which one a call runs, and the public API in
//! `lib.rs` and `nonblocking.rs` checks the arguments first.

pub(crate) mod allgather_bruck;
pub(crate) mod allgather_recursive_doubling;
pub(crate) mod allgather_ring;
pub(crate) mod allreduce_rabenseifner;
pub(crate) mod allreduce_recursive_doubling;
pub(crate) mod allreduce_ring;
pub(crate) mod alltoall_bruck;
pub(crate) mod alltoall_pairwise;
pub(crate) mod barrier_dissemination;
pub(crate) mod bcast_binomial;
pub(crate) mod bcast_scatter_allgather;
pub(crate) mod gather_linear;
pub(crate) mod halving;
pub(crate) mod hierarchical;
pub(crate) mod neighbor_exchange;
pub(crate) mod reduce_binomial;
pub(crate) mod reduce_rabenseifner;
pub(crate) mod reduce_scatter_pairwise;
pub(crate) mod reduce_scatter_ring;
pub(crate) mod scan_recursive_doubling;
pub(crate) mod scatter_linear;
