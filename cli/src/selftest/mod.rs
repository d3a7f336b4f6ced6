//! The semantic self-test suite: point-to-point and communicator behaviour
//! checked against MPI's rules, on any transport and any number of ranks.
//!
//! Each case is a program for every rank of a communicator. A case panics
//! when the implementation breaks a rule, so a failure ends the rank: under
//! [`threads`](hpcomm::threads) the panic reaches the caller, and under
//! `hpcomm run` the launcher reports the rank and ends the job. Every case
//! runs on a fresh duplicate of the communicator, so that its messages can
//! never meet another case's.
//!
//! The same cases run in `cargo test` (ranks as threads, under several
//! protocol settings) and as processes, through the command
//! `hpcomm run -n N -- hpcomm selftest [CASE…]` — also a way to check an
//! installation on a new cluster.
//!
//! ```
//! hpcomm::threads(3, |comm| hpcomm_cli::selftest::run_all(comm).unwrap()).unwrap();
//! ```

mod collectives;
mod groups;
mod matched;
mod p2p;
mod persistent;
mod rma;
mod threads;

use hpcomm::{Communicator, Result};

/// One case of the suite.
#[derive(Clone, Copy)]
pub struct Case {
    /// Its name, for `hpcomm selftest NAME`.
    pub name: &'static str,
    /// The fewest ranks it needs.
    pub min_ranks: usize,
    body: fn(&Communicator),
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .field("min_ranks", &self.min_ranks)
            .finish()
    }
}

impl Case {
    /// Runs the case on a duplicate of `comm` (collective), unless `comm`
    /// has too few ranks; returns whether it ran. Panics when a check fails.
    pub fn run(&self, comm: &Communicator) -> Result<bool> {
        if comm.size() < self.min_ranks {
            return Ok(false);
        }
        let own = comm.dup()?;
        (self.body)(&own);
        Ok(true)
    }
}

/// Every case, in the order `run_all` runs them.
pub const CASES: &[Case] = &[
    Case { name: "arguments", min_ranks: 1, body: p2p::arguments },
    Case { name: "null-process", min_ranks: 1, body: p2p::null_process },
    Case { name: "self", min_ranks: 1, body: p2p::sends_to_self },
    Case { name: "wait-any", min_ranks: 2, body: p2p::wait_any_thirty },
    Case { name: "probe", min_ranks: 2, body: p2p::probe_sizes },
    Case { name: "short-message", min_ranks: 2, body: p2p::short_message },
    Case { name: "truncation", min_ranks: 2, body: p2p::truncation },
    Case { name: "partial-element", min_ranks: 2, body: p2p::partial_element },
    Case { name: "order", min_ranks: 2, body: p2p::order },
    Case { name: "unexpected", min_ranks: 2, body: p2p::unexpected_100k },
    Case { name: "outstanding", min_ranks: 2, body: p2p::outstanding_10k },
    Case { name: "head-to-head", min_ranks: 2, body: p2p::head_to_head },
    Case { name: "ssend", min_ranks: 2, body: p2p::ssend },
    Case { name: "test-any", min_ranks: 2, body: p2p::test_any },
    Case { name: "forget", min_ranks: 2, body: p2p::forget },
    Case { name: "scope-errors", min_ranks: 2, body: p2p::scope_errors },
    Case { name: "split", min_ranks: 1, body: p2p::split },
    Case { name: "split-shared", min_ranks: 1, body: p2p::split_shared },
    Case { name: "dup", min_ranks: 2, body: p2p::dup_isolation },
    Case { name: "persistent", min_ranks: 2, body: persistent::round_trips },
    Case { name: "persistent-misuse", min_ranks: 2, body: persistent::misuse },
    Case { name: "mprobe", min_ranks: 2, body: matched::matched_probe },
    Case { name: "mprobe-edges", min_ranks: 2, body: matched::matched_edges },
    Case { name: "recv-vec", min_ranks: 2, body: matched::recv_vec },
    Case { name: "groups", min_ranks: 1, body: groups::group_operations },
    Case { name: "create-group", min_ranks: 1, body: groups::create_group },
    Case { name: "endpoints", min_ranks: 1, body: threads::endpoints_at_once },
    Case { name: "busy-endpoint", min_ranks: 2, body: threads::busy_endpoint },
    Case { name: "rma-fence", min_ranks: 1, body: rma::fence_epochs },
    Case { name: "rma-lock", min_ranks: 1, body: rma::lock_counters },
    Case { name: "rma-lock-large", min_ranks: 1, body: rma::lock_large_blocks },
    Case { name: "rma-accumulate", min_ranks: 1, body: rma::accumulate_every_op },
    Case { name: "rma-get-4mib", min_ranks: 1, body: rma::large_get },
    Case { name: "rma-misuse", min_ranks: 1, body: rma::misuse },
    Case { name: "rma-passive", min_ranks: 2, body: rma::passive_access },
    Case { name: "rma-requests", min_ranks: 1, body: rma::requests },
    Case { name: "rma-allocate", min_ranks: 1, body: rma::allocated },
    Case { name: "coll-barrier", min_ranks: 1, body: collectives::barrier },
    Case { name: "coll-bcast", min_ranks: 1, body: collectives::broadcast },
    Case { name: "coll-reduce", min_ranks: 1, body: collectives::reduce },
    Case { name: "coll-allreduce", min_ranks: 1, body: collectives::all_reduce },
    Case { name: "coll-repro", min_ranks: 1, body: collectives::reproducible_sum },
    Case { name: "coll-gather-scatter", min_ranks: 1, body: collectives::gather_scatter },
    Case { name: "coll-allgather", min_ranks: 1, body: collectives::all_gather },
    Case { name: "coll-alltoall", min_ranks: 1, body: collectives::all_to_all },
    Case { name: "coll-reduce-scatter", min_ranks: 1, body: collectives::reduce_scatter },
    Case { name: "coll-scan", min_ranks: 1, body: collectives::scan },
    Case { name: "coll-errors", min_ranks: 1, body: collectives::errors },
    Case { name: "coll-nonblocking", min_ranks: 1, body: collectives::non_blocking },
    Case { name: "coll-persistent", min_ranks: 1, body: collectives::persistent },
    Case { name: "coll-neighbor", min_ranks: 1, body: collectives::neighbor },
];

/// The collective cases that exercise each forceable collective's
/// algorithms (`HPCOMM_<COLLECTIVE>`), by collective.
pub const COLLECTIVE_CASES: &[(&str, &[&str])] = &[
    ("barrier", &["coll-barrier", "coll-nonblocking", "coll-persistent"]),
    ("bcast", &["coll-bcast", "coll-nonblocking", "coll-persistent"]),
    ("reduce", &["coll-reduce", "coll-reduce-scatter", "coll-nonblocking", "coll-persistent"]),
    ("allreduce", &["coll-allreduce", "coll-repro", "coll-nonblocking", "coll-persistent"]),
    ("allgather", &["coll-allgather", "coll-nonblocking", "coll-persistent"]),
    ("gather", &["coll-gather-scatter", "coll-nonblocking", "coll-persistent"]),
    ("alltoall", &["coll-alltoall", "coll-nonblocking"]),
];

/// The case called `name`.
pub fn case(name: &str) -> Option<&'static Case> {
    CASES.iter().find(|c| c.name == name)
}

/// Runs every case that fits the communicator's size; returns the names of
/// those that ran. Collective.
pub fn run_all(comm: &Communicator) -> Result<Vec<&'static str>> {
    let mut ran = Vec::new();
    for case in CASES {
        if case.run(comm)? {
            ran.push(case.name);
        }
    }
    Ok(ran)
}
