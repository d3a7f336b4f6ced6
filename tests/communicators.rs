//! Communicator construction (dup, split), request soundness, failures and
//! the in-process job runner.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use common::{run, settings, watchdog};
use hpcomm::{Error, Rank, Tag};

/// Split by colour with keys that reverse the order: new ranks follow the
/// key, ties broken by the old rank; the undefined colour gets `None`; each
/// new communicator carries messages among its own members only.
#[test]
fn split_orders_by_key_then_rank_and_handles_the_undefined_colour() {
    watchdog(120, "split", || {
        for n in 1..=8 {
            let results = run("split", n, &Default::default(), |comm| {
                let me = comm.rank();
                // Rank 0 opts out; the others split by parity, with a key
                // that reverses the order and ties between pairs of ranks.
                let color = (me != 0).then_some((me % 2) as u32);
                let key = -((me / 2) as i32);
                let sub = comm.split(color, key).unwrap();
                match sub {
                    None => {
                        assert_eq!(me, 0);
                        None
                    }
                    Some(sub) => {
                        // Everyone in the new communicator sends its world
                        // rank to its new rank 0.
                        let world = sub.world_ranks();
                        assert_eq!(world[sub.rank()], me, "world_ranks is consistent");
                        if sub.rank() == 0 {
                            let mut got = vec![me];
                            for r in 1..sub.size() {
                                let mut v = [0usize];
                                sub.recv(&mut v, r, 0).unwrap();
                                got.push(v[0]);
                            }
                            assert_eq!(got, world, "messages stay within the new communicator");
                        } else {
                            sub.send(&[me], 0, 0).unwrap();
                        }
                        Some((sub.rank(), sub.size(), world))
                    }
                }
            });
            for (me, result) in results.iter().enumerate() {
                if me == 0 {
                    assert!(result.is_none());
                    continue;
                }
                // Expected group: same parity, excluding 0, ordered by
                // key = -(r / 2) ascending, then by world rank.
                let mut group: Vec<usize> = (1..n).filter(|r| r % 2 == me % 2).collect();
                group.sort_by_key(|&r| (-((r / 2) as i32), r));
                let (rank, size, world) = result.clone().unwrap();
                assert_eq!(world, group, "{n} ranks, rank {me}");
                assert_eq!(size, group.len());
                assert_eq!(group[rank], me);
            }
        }
    });
}

/// A message sent on a duplicate never matches a receive on the original
/// (even a wildcard one), and the reverse; nor does it on a split.
#[test]
fn dup_and_split_isolate_their_messages() {
    watchdog(120, "dup", || {
        for (name, config) in settings() {
            run(name, 3, &config, |comm| {
                let dup = comm.dup().unwrap();
                let half = comm.split(Some(0), 0).unwrap().unwrap();
                assert_ne!(dup.context(), comm.context());
                assert_ne!(half.context(), dup.context());
                if comm.rank() == 1 {
                    half.send(&[3u32], 0, 0).unwrap();
                    dup.send(&[2u32], 0, 0).unwrap();
                    comm.send(&[1u32], 0, 0).unwrap();
                } else if comm.rank() == 0 {
                    let mut v = [0u32];
                    let status = comm.recv(&mut v, Rank::ANY, Tag::ANY).unwrap();
                    assert_eq!(
                        (v[0], status.source),
                        (1, Rank(1)),
                        "{name}: world receive took another communicator's message"
                    );
                    assert_eq!(comm.iprobe(Rank::ANY, Tag::ANY).unwrap(), None);
                    dup.recv(&mut v, Rank::ANY, Tag::ANY).unwrap();
                    assert_eq!(v[0], 2);
                    half.recv(&mut v, Rank::ANY, Tag::ANY).unwrap();
                    assert_eq!(v[0], 3);
                }
                // Repeated dups keep working, and agree on contexts.
                let mut c = dup;
                for _ in 0..5 {
                    c = c.dup().unwrap();
                }
                let mut got = [0usize];
                let size = c.size();
                c.sendrecv(&[c.rank()], (c.rank() + 1) % size, 0, &mut got, Rank::ANY, 0).unwrap();
                assert_eq!(got[0], (c.rank() + size - 1) % size);
            });
        }
    });
}

/// Forgetting a request does not end its buffer's borrow early: the scope
/// still completes it, and the data is there afterwards — for receives and
/// for rendezvous sends.
///
/// `Request` has no `Drop` at all — soundness never depends on one running —
/// so clippy notes that forgetting it is the same as dropping it.
#[test]
#[allow(clippy::forget_non_drop)]
fn forgotten_requests_are_completed_by_their_scope() {
    watchdog(60, "forget", || {
        for (name, config) in settings() {
            run(name, 2, &config, |comm| {
                let peer = 1 - comm.rank();
                let big: Vec<u8> = (0..300_000).map(|i| (i % 256) as u8).collect();
                let mut got_small = [0u32; 4];
                let mut got_big = vec![0u8; big.len()];
                comm.scope(|s| {
                    std::mem::forget(s.irecv(&mut got_small, peer, 1)?);
                    std::mem::forget(s.irecv(&mut got_big, peer, 2)?);
                    std::mem::forget(s.isend(&big, peer, 2)?);
                    drop(s.isend(&[7u32; 4], peer, 1)?);
                    Ok(())
                })
                .unwrap();
                assert_eq!(got_small, [7; 4], "{name}");
                assert!(got_big == big, "{name}");
            });
        }
    });
}

/// Errors of requests nobody waited for surface when the scope ends.
#[test]
fn scope_reports_errors_of_unwaited_requests() {
    watchdog(60, "scope errors", || {
        run("scope errors", 2, &Default::default(), |comm| {
            if comm.rank() == 0 {
                let mut small = [0u8; 2];
                let outcome = comm.scope(|s| {
                    let _ = s.irecv(&mut small, 1, 0)?;
                    Ok("closure done")
                });
                assert_eq!(outcome, Err(Error::Truncated { needed: 8, capacity: 2 }));
            } else {
                comm.send(&[1u8; 8], 0, 0).unwrap();
            }
        });
    });
}

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
        for (_, specific, any) in errors {
            assert_eq!(specific, Err(Error::PeerFailed { rank: 2 }));
            // The any-source receive fails because a member is gone: rank 2,
            // or rank 0 if it already left after its own failed receives.
            assert!(
                matches!(any, Err(Error::PeerFailed { rank: 0 | 2 })),
                "any-source receive gave {any:?}"
            );
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
