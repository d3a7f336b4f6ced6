//! The semantic self-test suite (`hpcomm_cli::selftest`) with ranks as threads
//! over loopback, under every protocol setting (see `common`), on 1 to 8
//! ranks. `tests/launcher.rs` runs the same cases as processes over shm.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{settings, watchdog};

/// Runs one case under every setting, on each rank count it fits.
fn run_case(name: &'static str, ranks: &'static [usize]) {
    watchdog(300, name, move || {
        let case = hpcomm_cli::selftest::case(name).expect("known case");
        for (setting, config) in settings() {
            for &n in ranks.iter().filter(|&&n| n >= case.min_ranks) {
                let ran = hpcomm::threads_with(n, &config, |comm| case.run(comm).unwrap())
                    .unwrap_or_else(|e| panic!("{name} on {n} ranks ({setting}): {e}"));
                assert!(ran.iter().all(|&r| r), "{name} did not run on {n} ranks");
            }
        }
    });
}

const MOST: &[usize] = &[1, 2, 3, 8];
const FEW: &[usize] = &[2, 3];

macro_rules! cases {
    ($($test:ident: $name:literal on $ranks:expr;)*) => {
        $(
            #[test]
            fn $test() {
                run_case($name, $ranks);
            }
        )*
        /// Every case of the suite has a test here.
        #[test]
        fn every_case_is_tested() {
            let tested = [$($name),*];
            // The collective cases are tested in `tests/collectives.rs`.
            for case in hpcomm_cli::selftest::CASES.iter().filter(|c| !c.name.starts_with("coll-")) {
                assert!(tested.contains(&case.name), "case {} has no test", case.name);
            }
        }
    };
}

cases! {
    invalid_arguments_are_errors_and_the_communicator_survives: "arguments" on MOST;
    null_process_operations_complete_at_once: "null-process" on MOST;
    sends_to_oneself: "self" on MOST;
    thirty_preposted_wildcard_receives_complete_with_wait_any: "wait-any" on &[2, 3, 5, 8];
    probe_waits_for_messages_from_1_byte_to_4_mib: "probe" on FEW;
    short_message_into_long_buffer_leaves_the_rest_untouched: "short-message" on FEW;
    truncation_is_reported_and_the_communicator_stays_usable: "truncation" on FEW;
    partial_elements_are_an_error: "partial-element" on FEW;
    messages_do_not_overtake: "order" on FEW;
    hundred_thousand_unexpected_messages_drain_in_order: "unexpected" on &[2];
    ten_thousand_outstanding_requests: "outstanding" on &[2];
    head_to_head_large_sends_do_not_deadlock: "head-to-head" on &[2, 5, 8];
    synchronous_send_waits_for_the_match: "ssend" on FEW;
    test_and_wait_any_follow_mpi: "test-any" on FEW;
    forgotten_requests_are_completed_by_their_scope: "forget" on FEW;
    scope_reports_errors_of_unwaited_requests: "scope-errors" on FEW;
    split_orders_by_key_then_rank_and_handles_the_undefined_colour: "split" on &[1, 2, 3, 4, 5, 6, 7, 8];
    dup_and_split_isolate_their_messages: "dup" on &[2, 3, 8];
    split_shared_groups_the_ranks_of_a_node: "split-shared" on &[1, 2, 5];
    persistent_requests_restart_with_new_data: "persistent" on &[2, 3, 8];
    persistent_request_misuse_is_an_error: "persistent-misuse" on FEW;
    matched_probes_hide_their_message_from_other_receives: "mprobe" on FEW;
    matched_probe_edges: "mprobe-edges" on FEW;
    recv_vec_receives_exactly_the_message: "recv-vec" on FEW;
    group_operations_keep_mpi_orders: "groups" on MOST;
    create_group_is_collective_over_the_group_only: "create-group" on &[1, 2, 3, 5, 8];
    four_threads_per_rank_exchange_at_once_on_their_endpoints: "endpoints" on &[1, 2, 4];
    an_endpoint_used_from_a_second_thread_is_busy: "busy-endpoint" on &[2, 3];
    window_fence_epochs_put_and_get_at_every_size: "rma-fence" on &[1, 2, 3, 5];
    window_locks_guard_a_counter_every_rank_increments_1000_times: "rma-lock" on &[1, 2, 4];
    window_locks_guard_large_blocks_read_and_written_in_turn: "rma-lock-large" on &[1, 2, 4];
    window_accumulate_applies_every_operation: "rma-accumulate" on &[1, 2, 3, 8];
    window_get_of_4_mib: "rma-get-4mib" on &[1, 2, 3];
    window_misuse_is_an_error_and_the_window_survives: "rma-misuse" on &[1, 2, 3, 5];
    window_accesses_need_nothing_of_the_target_where_the_transport_reads: "rma-passive" on FEW;
    window_requests_keep_many_gets_and_puts_in_flight: "rma-requests" on &[1, 2, 3];
    windows_the_runtime_allocates_outlive_scopes_and_give_their_memory_back: "rma-allocate" on &[1, 2, 3];
}
