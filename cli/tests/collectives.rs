//! The collective cases of the self-test suite (`hpcomm_cli::selftest`, names
//! `coll-*`) with ranks as threads over loopback: on 1, 2, 3, 4, 7 and 8
//! ranks, under every protocol setting with the automatic choice of
//! algorithm, and with each algorithm forced in turn; and with the threads
//! on pretended nodes of 3 ranks, where the choice is the cost model's and
//! the hierarchical algorithms run (forced ones on nodes of 2 and of 3).
//! `tests/launcher.rs` runs the same cases as processes over shm.

#[path = "../../tests/common/mod.rs"]
mod common;

use hpcomm::select;
use hpcomm::ThreadsConfig;

use common::{settings, watchdog};

const RANKS: [usize; 6] = [1, 2, 3, 4, 7, 8];

fn run(name: &'static str, config: &ThreadsConfig, label: &str) {
    let case = hpcomm_cli::selftest::case(name).expect("known case");
    for n in RANKS {
        hpcomm::threads_with(n, config, |comm| case.run(comm).unwrap())
            .unwrap_or_else(|e| panic!("{name} on {n} ranks ({label}): {e}"));
    }
}

/// Runs a case under every protocol setting, algorithms chosen
/// automatically.
fn automatic(name: &'static str) {
    watchdog(600, name, move || {
        for (setting, config) in settings() {
            run(name, &config, setting);
        }
        let nodes = ThreadsConfig { ranks_per_node: Some(3), ..ThreadsConfig::default() };
        run(name, &nodes, "nodes of 3 ranks");
    });
}

/// Runs the cases of `collective` with each of its algorithms forced.
fn forced(collective: &'static str, algorithms: Vec<&'static str>) {
    watchdog(900, collective, move || {
        let (_, cases) = hpcomm_cli::selftest::COLLECTIVE_CASES
            .iter()
            .find(|(c, _)| *c == collective)
            .expect("known collective");
        for algorithm in algorithms {
            // A node-aware algorithm needs nodes: pretend some.
            let layouts = match algorithm {
                "hierarchical" => vec![Some(2), Some(3)],
                _ => vec![None],
            };
            for ranks_per_node in layouts {
                let mut config = ThreadsConfig { ranks_per_node, ..ThreadsConfig::default() };
                config.runtime.algorithms.insert(collective.into(), algorithm.into());
                for name in *cases {
                    run(name, &config, &format!("{collective}={algorithm}, {ranks_per_node:?}"));
                }
            }
        }
    });
}

macro_rules! automatic {
    ($($test:ident: $name:literal;)*) => {
        $(
            #[test]
            fn $test() {
                automatic($name);
            }
        )*
        /// Every collective case has a test here.
        #[test]
        fn every_collective_case_is_tested() {
            let tested = [$($name),*];
            for case in hpcomm_cli::selftest::CASES.iter().filter(|c| c.name.starts_with("coll-")) {
                assert!(tested.contains(&case.name), "case {} has no test", case.name);
            }
        }
    };
}

automatic! {
    barrier_waits_for_every_rank: "coll-barrier";
    broadcast_from_every_root_1_byte_to_4_mib: "coll-bcast";
    reduce_every_root_type_and_operation: "coll-reduce";
    all_reduce_every_type_and_operation_bitwise_identical: "coll-allreduce";
    reproducible_sum_is_the_correctly_rounded_sum: "coll-repro";
    gather_and_scatter_with_skewed_and_zero_counts: "coll-gather-scatter";
    all_gather_with_skewed_and_zero_counts: "coll-allgather";
    all_to_all_with_counts_and_displacements: "coll-alltoall";
    reduce_scatter_commutative_or_not: "coll-reduce-scatter";
    scan_and_exscan_in_rank_order: "coll-scan";
    bad_arguments_and_mismatches_are_errors_not_hangs: "coll-errors";
    non_blocking_collectives_in_flight_together_and_progressing: "coll-nonblocking";
    persistent_collectives_started_again_and_again: "coll-persistent";
    neighborhood_exchanges_on_grids_periodic_or_not: "coll-neighbor";
}

fn names<A: Copy>(all: &[A], name: fn(A) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|&a| name(a)).collect()
}

#[test]
fn every_barrier_algorithm() {
    forced("barrier", names(select::Barrier::ALL, select::Barrier::name));
}

#[test]
fn every_broadcast_algorithm() {
    forced("bcast", names(select::Bcast::ALL, select::Bcast::name));
}

#[test]
fn every_reduce_algorithm() {
    forced("reduce", names(select::Reduce::ALL, select::Reduce::name));
}

#[test]
fn every_all_reduce_algorithm() {
    forced("allreduce", names(select::Allreduce::ALL, select::Allreduce::name));
}

#[test]
fn every_all_gather_algorithm() {
    forced("allgather", names(select::Allgather::ALL, select::Allgather::name));
}

#[test]
fn every_gather_algorithm() {
    forced("gather", names(select::Gather::ALL, select::Gather::name));
}

#[test]
fn every_all_to_all_algorithm() {
    forced("alltoall", names(select::Alltoall::ALL, select::Alltoall::name));
}

/// Every collective key the selection reads is one the configuration
/// parses, and unknown algorithm names are errors.
#[test]
fn unknown_algorithm_names_are_errors() {
    let keys: Vec<&str> = hpcomm_cli::selftest::COLLECTIVE_CASES.iter().map(|(c, _)| *c).collect();
    assert_eq!(keys, hpcomm::config::FORCEABLE_COLLECTIVES);
    let mut config = ThreadsConfig::default();
    config.runtime.algorithms.insert("allreduce".into(), "fastest".into());
    let out = hpcomm::threads_with(2, &config, |comm| {
        use hpcomm::Collectives;
        comm.all_reduce(&[1u8], &mut [0], hpcomm::op::Sum)
    })
    .unwrap();
    for e in out {
        let e = e.unwrap_err().to_string();
        assert!(e.contains("HPCOMM_ALLREDUCE") && e.contains("recursive_doubling"), "{e}");
    }
}

/// The machine selection costs a communicator on: none within one node;
/// across (pretended) nodes the layout's widest node, and the network's
/// figures as `HPCOMM_NET_*` set them.
#[test]
fn the_modelled_machine_follows_the_layout_and_the_network_figures() {
    watchdog(60, "machine", || {
        let mut config = ThreadsConfig { ranks_per_node: Some(2), ..ThreadsConfig::default() };
        config.runtime.network = (Some(std::time::Duration::from_micros(7)), Some(3_000_000_000));
        let machines = hpcomm::threads_with(5, &config, |c| {
            (select::machine(c), select::machine(&c.split_shared().unwrap()))
        })
        .unwrap();
        for (r, (machine, shared)) in machines.into_iter().enumerate() {
            let m = machine.unwrap_or_else(|| panic!("rank {r}: 3 nodes, no machine"));
            assert_eq!(m.ranks_per_node, 2, "rank {r}");
            assert!((m.inter.latency - 7e-6).abs() < 1e-12, "rank {r}: {m:?}");
            assert_eq!(m.inter.bandwidth, 3e9, "rank {r}");
            assert_eq!(shared, None, "rank {r}: one node");
        }
        let flat = hpcomm::threads(3, select::machine).unwrap();
        assert_eq!(flat, [None, None, None]);
    });
}
