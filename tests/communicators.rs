//! Failures and the in-process job runner: what only ranks-as-threads can
//! show. The semantic cases are in `hpcomm_cli::selftest` (run by `p2p.rs` and
//! `launcher.rs`).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use common::{run, watchdog};
use hpcomm::op::Sum;
use hpcomm::{Collectives, Error, NonBlocking, Rank};

/// A rank that panics is seen by the others as a failed peer: their pending
/// receive from it returns `PeerFailed` instead of hanging, and `threads`
/// re-raises the panic.
#[test]
fn a_panicking_rank_fails_its_peers_operations() {
    watchdog(60, "panic", || {
        let errors = Mutex::new(Vec::new());
        let outcome = std::panic::catch_unwind(|| {
            hpcomm::threads(3, |comm| {
                if comm.rank() == 2 {
                    panic!("rank 2 gives up");
                }
                let mut buf = [0u8];
                let specific = comm.recv(&mut buf, 2, 0);
                let any = comm.recv(&mut buf, Rank::ANY, 0);
                errors.lock().unwrap().push((comm.rank(), specific, any));
            })
        });
        let payload = outcome.expect_err("the panic must propagate");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"rank 2 gives up"));
        let mut errors = errors.into_inner().unwrap();
        errors.sort_by_key(|e| e.0);
        assert_eq!(errors.len(), 2);
        for (me, specific, any) in errors {
            assert_eq!(specific, Err(Error::PeerFailed { rank: 2 }));
            // The any-source receive fails because a member is gone: rank 2,
            // or the other survivor if it already left after its own failed
            // receives.
            assert!(
                matches!(any, Err(Error::PeerFailed { rank }) if rank != me),
                "any-source receive of rank {me} gave {any:?}"
            );
        }
    });
}

/// A rank lost in the middle of a sequence of all_reduce calls: every
/// survivor's collective returns `PeerFailed` instead of hanging — also the
/// survivors whose partners in the algorithm are all alive, since a
/// collective on a communicator with a lost member fails as a whole.
#[test]
fn a_rank_lost_during_all_reduce_fails_every_survivors_collective() {
    for ranks in [4, 7] {
        watchdog(120, "lost during all_reduce", move || {
            let outcomes = Mutex::new(Vec::new());
            let caught = std::panic::catch_unwind(|| {
                hpcomm::threads(ranks, |comm| {
                    let send = vec![1.0f64; 1 << 16];
                    let mut recv = vec![0.0f64; 1 << 16];
                    let mut done = 0;
                    let outcome = loop {
                        if comm.rank() == 1 && done == 3 {
                            // The others are already inside the fourth.
                            panic!("rank 1 dies");
                        }
                        if let Err(e) = comm.all_reduce(&send, &mut recv, Sum) {
                            break Err(e);
                        }
                        assert_eq!(recv[0], ranks as f64);
                        done += 1;
                        if done > 10_000 {
                            break Ok(());
                        }
                    };
                    outcomes.lock().unwrap().push((comm.rank(), done, outcome));
                })
            });
            assert!(caught.is_err(), "the panic must propagate");
            let outcomes = outcomes.into_inner().unwrap();
            assert_eq!(outcomes.len(), ranks - 1, "{outcomes:?}");
            for (rank, done, outcome) in outcomes {
                // Rank 1 finished round 2, so every rank has finished round 0
                // at least (a collective on a communicator with a lost member
                // may fail even where the lost rank's part is done).
                assert!(done >= 1, "rank {rank} failed after {done} rounds");
                assert!(
                    matches!(outcome, Err(Error::PeerFailed { .. })),
                    "rank {rank}: {outcome:?}"
                );
            }
        });
    }
}

/// The same for a non-blocking all_reduce pending when a rank dies: its
/// request completes with `PeerFailed` on every survivor.
#[test]
fn a_rank_lost_during_iall_reduce_fails_every_survivors_request() {
    watchdog(120, "lost during iall_reduce", || {
        let outcomes = Mutex::new(Vec::new());
        let caught = std::panic::catch_unwind(|| {
            hpcomm::threads(4, |comm| {
                comm.barrier().unwrap();
                if comm.rank() == 3 {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    panic!("rank 3 dies");
                }
                let send = vec![1u64; 4096];
                let mut recv = vec![0u64; 4096];
                let outcome = comm.scope(|s| s.iall_reduce(&send, &mut recv, Sum)?.wait());
                outcomes.lock().unwrap().push((comm.rank(), outcome.map(|_| ())));
            })
        });
        assert!(caught.is_err(), "the panic must propagate");
        let outcomes = outcomes.into_inner().unwrap();
        assert_eq!(outcomes.len(), 3, "{outcomes:?}");
        for (rank, outcome) in outcomes {
            assert!(matches!(outcome, Err(Error::PeerFailed { .. })), "rank {rank}: {outcome:?}");
        }
    });
}

/// Ranks that finish early are not failures: a rank still receiving from
/// several peers gets every message even though they return at once.
#[test]
fn ranks_that_finish_early_are_not_failures() {
    watchdog(60, "early exit", || {
        let received = AtomicUsize::new(0);
        run("early exit", 6, &Default::default(), |comm| {
            if comm.rank() == 0 {
                for _ in 1..comm.size() {
                    let mut v = [0u8];
                    comm.recv(&mut v, Rank::ANY, 0).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    received.fetch_add(1, Ordering::Relaxed);
                }
            } else {
                comm.send(&[1u8], 0, 0).unwrap();
            }
        });
        assert_eq!(received.into_inner(), 5);
    });
}

/// `threads` returns results in rank order, rejects zero ranks, and
/// `init` without a launcher gives a singleton.
#[test]
fn threads_and_init_basics() {
    watchdog(60, "basics", || {
        let ranks = hpcomm::threads(8, |comm| (comm.rank(), comm.size())).unwrap();
        assert_eq!(ranks, (0..8).map(|r| (r, 8)).collect::<Vec<_>>());
        assert!(matches!(hpcomm::threads(0, |_| ()), Err(Error::InvalidCount(_))));
        let universe = hpcomm::init().unwrap();
        let world = universe.world();
        assert_eq!((world.rank(), world.size()), (0, 1));
        world.send(&[42u8], 0, 0).unwrap();
        let mut v = [0u8];
        world.recv(&mut v, 0, 0).unwrap();
        assert_eq!(v, [42]);
        universe.finalize().unwrap();
    });
}

/// Context ids come back when communicators are dropped: a thousand rounds
/// of `dup` and `split`, each used and dropped, stay within the lowest few
/// ids. A communicator dropped with a message nobody received keeps its id:
/// the next one gets another.
#[test]
fn context_ids_are_reused_once_communicators_are_dropped() {
    watchdog(120, "context reuse", || {
        let highest = hpcomm::threads(4, |comm| {
            let mut highest = 0;
            for round in 0..1000u64 {
                let dup = comm.dup().unwrap();
                let half = comm.split(Some(comm.rank() as u32 % 2), 0).unwrap().unwrap();
                let mut total = [0u64];
                dup.all_reduce(&[round], &mut total, Sum).unwrap();
                assert_eq!(total[0], 4 * round);
                half.all_reduce(&[1u64], &mut total, Sum).unwrap();
                assert_eq!(total[0], 2);
                highest = highest.max(dup.context().0).max(half.context().0);
            }
            // Rank 1 sends on a communicator that rank 0 drops unreceived.
            let kept = comm.dup().unwrap();
            let id = kept.context();
            if comm.rank() == 1 {
                kept.send(&[7u8], 0, 3).unwrap();
            }
            if comm.rank() == 0 {
                while kept.iprobe(1, 3).unwrap().is_none() {}
            }
            comm.barrier().unwrap();
            drop(kept);
            let next = comm.dup().unwrap();
            assert_ne!(next.context(), id, "an id with a message in flight was reused");
            highest
        })
        .unwrap();
        assert!(highest.iter().all(|&h| h < 16), "context ids grew: {highest:?}");
    });
}

/// `split_shared` follows the node layout: nodes of two ranks each when
/// the threads pretend so, one node of every rank when they do not.
#[test]
fn split_shared_follows_the_node_layout() {
    watchdog(60, "split_shared", || {
        for (per_node, n) in [(Some(2), 5), (Some(3), 7), (None, 4)] {
            let config = hpcomm::ThreadsConfig { ranks_per_node: per_node, ..Default::default() };
            let groups = hpcomm::threads_with(n, &config, |comm| {
                let shared = comm.split_shared().unwrap();
                (shared.world_ranks(), shared.rank())
            })
            .unwrap();
            for (r, (members, rank)) in groups.into_iter().enumerate() {
                let first = per_node.map_or(0, |k| r / k * k);
                let last = per_node.map_or(n, |k| (first + k).min(n));
                assert_eq!(members, (first..last).collect::<Vec<_>>(), "rank {r} of {n}");
                assert_eq!(rank, r - first);
            }
        }
    });
}

/// Every communicator knows its node layout, the same on every rank: the
/// world's from the launch, a split's and a dup's from their parent's.
#[test]
fn communicators_know_their_node_layout() {
    watchdog(60, "node layout", || {
        let config = hpcomm::ThreadsConfig { ranks_per_node: Some(3), ..Default::default() };
        let layouts = hpcomm::threads_with(7, &config, |comm| {
            let world = comm.nodes().expect("a threads job knows its nodes").clone();
            let dup = comm.dup().unwrap().nodes().cloned();
            // Odd ranks in reverse order: world ranks 5, 3, 1.
            let odd = comm.split(Some(comm.rank() as u32 % 2), -(comm.rank() as i32)).unwrap();
            let odd = odd.unwrap().nodes().cloned();
            let shared = comm.split_shared().unwrap().nodes().map(|l| l.count());
            (world, dup, odd, shared)
        })
        .unwrap();
        for (r, (world, dup, odd, shared)) in layouts.into_iter().enumerate() {
            let nodes: Vec<usize> = (0..7).map(|q| world.node_of(q)).collect();
            assert_eq!(nodes, [0, 0, 0, 1, 1, 1, 2], "rank {r}");
            assert_eq!((world.count(), world.widest(), world.blocked()), (3, 3, true));
            assert_eq!(dup.as_ref(), Some(&world), "rank {r}");
            let odd = odd.unwrap();
            let nodes: Vec<usize> = (0..odd.size()).map(|q| odd.node_of(q)).collect();
            match r % 2 {
                // 5, 3, 1: nodes 1, 1, 0 of the world, renumbered.
                1 => assert_eq!(nodes, [0, 0, 1], "rank {r}"),
                // 6, 4, 2, 0: nodes 2, 1, 0, 0.
                _ => assert_eq!(nodes, [0, 1, 2, 2], "rank {r}"),
            }
            assert_eq!(shared, Some(1), "rank {r}");
        }
        let flat = hpcomm::threads(3, |comm| comm.nodes().map(|l| l.count())).unwrap();
        assert_eq!(flat, [Some(1); 3]);
    });
}
