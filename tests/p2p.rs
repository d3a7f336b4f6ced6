//! Point-to-point semantics, in the spirit of the MPI test suites, on 1 to 8
//! in-process ranks and under every protocol setting (see `common`).

mod common;

use common::{eager_limit, run, settings, watchdog};
use hpcomm::{Error, Rank, Status, Tag};

/// 30 any-source, any-tag receives of decreasing length are posted first;
/// the messages arrive in order (each sender waits for the previous one's
/// go-ahead), so receive i gets message i: `wait_any` must report each with
/// its own count and data.
#[test]
fn thirty_preposted_wildcard_receives_complete_with_wait_any() {
    watchdog(300, "wait_any", || {
        for (name, config) in settings() {
            for n in 2..=8 {
                for scale in [1usize, 700] {
                    let label = format!("{name}, {n} ranks, scale {scale}");
                    run(&label, n, &config, |comm| {
                        let ctl = comm.dup().unwrap();
                        let len = |i: usize| (30 - i) * scale;
                        if comm.rank() == 0 {
                            let mut bufs: Vec<Vec<u32>> =
                                (0..30).map(|i| vec![u32::MAX; len(i)]).collect();
                            let mut seen = [false; 30];
                            comm.scope(|s| {
                                let mut reqs = Vec::new();
                                for buf in bufs.iter_mut() {
                                    reqs.push(s.irecv(buf, Rank::ANY, Tag::ANY)?);
                                }
                                // Everything is posted: let the first sender go.
                                ctl.send(&[0u8], 1, 0)?;
                                while let Some((i, status)) = hpcomm::wait_any(&mut reqs)? {
                                    assert!(!seen[i], "{label}: request {i} reported twice");
                                    seen[i] = true;
                                    assert_eq!(status.count, len(i), "{label}: count of {i}");
                                    assert_eq!(status.tag, Tag(i as i32), "{label}: tag of {i}");
                                    assert_eq!(status.source, Rank((1 + i % (n - 1)) as i32));
                                }
                                Ok(())
                            })
                            .unwrap();
                            assert!(seen.iter().all(|&s| s), "{label}: a request never completed");
                            for (i, buf) in bufs.iter().enumerate() {
                                assert!(
                                    buf.iter()
                                        .enumerate()
                                        .all(|(j, &v)| v == (i * 1_000_000 + j) as u32),
                                    "{label}: data of message {i}"
                                );
                            }
                        } else {
                            let senders = n - 1;
                            for i in (0..30).filter(|i| 1 + i % senders == comm.rank()) {
                                // Wait for the go-ahead: from rank 0 for the
                                // first message, else from the previous sender.
                                let from = if i == 0 { 0 } else { 1 + (i - 1) % senders };
                                ctl.recv(&mut [0u8], from, i as i32).unwrap();
                                let msg: Vec<u32> =
                                    (0..len(i)).map(|j| (i * 1_000_000 + j) as u32).collect();
                                comm.send(&msg, 0, i as i32).unwrap();
                                if i + 1 < 30 {
                                    ctl.send(&[0u8], 1 + (i + 1) % senders, i as i32 + 1).unwrap();
                                }
                            }
                        }
                    });
                }
            }
        }
    });
}

/// `iprobe` sees nothing before the message is sent; a blocking `probe`
/// posted before it arrives reports its source, tag and size; the receive
/// then gets exactly that.
#[test]
fn probe_waits_for_messages_from_1_byte_to_4_mib() {
    watchdog(300, "probe", || {
        for (name, config) in settings() {
            run(name, 2, &config, |comm| {
                let ctl = comm.dup().unwrap();
                let mut size = 1usize;
                while size <= 4 << 20 {
                    let tag = (size.trailing_zeros() + 1) as i32;
                    if comm.rank() == 0 {
                        assert_eq!(
                            comm.iprobe(1, Tag::ANY).unwrap(),
                            None,
                            "{name}: {size} B seen early"
                        );
                        ctl.send(&[0u8], 1, 0).unwrap();
                        let status = comm.probe(Rank::ANY, Tag::ANY).unwrap();
                        assert_eq!(status, Status { source: Rank(1), tag: Tag(tag), count: size });
                        assert_eq!(comm.iprobe(1, tag).unwrap(), Some(status));
                        let mut buf = vec![0u8; status.count];
                        let got = comm.recv(&mut buf, status.source, status.tag).unwrap();
                        assert_eq!(got.count, size);
                        assert!(
                            buf.iter().enumerate().all(|(i, &b)| b == (i % 253) as u8),
                            "{name}: {size} B"
                        );
                    } else {
                        ctl.recv(&mut [0u8], 0, 0).unwrap();
                        let msg: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
                        comm.send(&msg, 0, tag).unwrap();
                    }
                    size *= 4;
                }
            });
        }
    });
}

/// A short message into a long buffer: the exact count, and the rest of the
/// buffer untouched — at eager and rendezvous sizes.
#[test]
fn short_message_into_long_buffer_leaves_the_rest_untouched() {
    watchdog(120, "short", || {
        for (name, config) in settings() {
            let eager = eager_limit(&config);
            for len in [1, eager / 8, eager / 4 + 1, 4 * eager, 100_000] {
                run(name, 2, &config, |comm| {
                    if comm.rank() == 0 {
                        let mut buf = vec![-1.0f64; len + 1000];
                        let status = comm.recv(&mut buf, 1, 3).unwrap();
                        assert_eq!(status.count, len, "{name}");
                        assert!(buf[..len].iter().enumerate().all(|(i, &v)| v == i as f64));
                        assert!(
                            buf[len..].iter().all(|&v| v == -1.0),
                            "{name}: tail overwritten at {len}"
                        );
                    } else {
                        let msg: Vec<f64> = (0..len).map(|i| i as f64).collect();
                        comm.send(&msg, 0, 3).unwrap();
                    }
                });
            }
        }
    });
}

/// Truncation is an error value carrying both sizes, for pre-posted and
/// unexpected receives at eager and rendezvous sizes; the sender completes
/// normally and both ranks can go on communicating.
#[test]
fn truncation_is_reported_and_the_communicator_stays_usable() {
    watchdog(120, "truncation", || {
        for (name, config) in settings() {
            let eager = eager_limit(&config);
            for len in [16usize, eager, eager + 1, 8 * eager] {
                for preposted in [true, false] {
                    run(name, 2, &config, |comm| {
                        let ctl = comm.dup().unwrap();
                        if comm.rank() == 0 {
                            let mut small = vec![0u8; len / 2];
                            let outcome = if preposted {
                                comm.scope(|s| {
                                    let r = s.irecv(&mut small, 1, 1)?;
                                    ctl.send(&[0u8], 1, 0)?;
                                    r.wait()
                                })
                            } else {
                                ctl.send(&[0u8], 1, 0).unwrap();
                                // Wait until the message is here, unexpected.
                                comm.probe(1, 1).unwrap();
                                comm.recv(&mut small, 1, 1)
                            };
                            assert_eq!(
                                outcome,
                                Err(Error::Truncated { needed: len, capacity: len / 2 }),
                                "{name}: {len} B, preposted {preposted}"
                            );
                            let mut next = [0u32; 2];
                            assert_eq!(comm.recv(&mut next, 1, 2).unwrap().count, 2);
                            assert_eq!(next, [7, 8]);
                        } else {
                            ctl.recv(&mut [0u8], 0, 0).unwrap();
                            comm.send(&vec![1u8; len], 0, 1).unwrap();
                            comm.send(&[7u32, 8], 0, 2).unwrap();
                        }
                    });
                }
            }
        }
    });
}

/// A message that is not a whole number of the receiver's elements.
#[test]
fn partial_elements_are_an_error() {
    watchdog(60, "partial", || {
        run("partial", 2, &Default::default(), |comm| {
            if comm.rank() == 0 {
                let mut buf = [0u32; 4];
                assert_eq!(
                    comm.recv(&mut buf, 1, 0),
                    Err(Error::PartialElement { bytes: 5, elem_size: 4 })
                );
            } else {
                comm.send(&[1u8; 5], 0, 0).unwrap();
            }
        });
    });
}

/// Zero-byte messages, the largest tag, and invalid ranks and tags.
#[test]
fn zero_bytes_extreme_tags_and_invalid_arguments() {
    watchdog(60, "arguments", || {
        for n in 1..=4 {
            run("arguments", n, &Default::default(), |comm| {
                let size = comm.size();
                let bad_ranks =
                    [Rank(-5), Rank(size as i32), Rank(i32::MAX), Rank::from(usize::MAX)];
                for r in bad_ranks {
                    assert_eq!(
                        comm.send(&[1u8], r, 0),
                        Err(Error::InvalidRank { rank: r.0, size })
                    );
                    assert_eq!(
                        comm.recv(&mut [0u8], r, 0),
                        Err(Error::InvalidRank { rank: r.0, size })
                    );
                    assert!(matches!(comm.iprobe(r, 0), Err(Error::InvalidRank { .. })));
                    let in_scope = comm.scope(|s| s.isend(&[1u8], r, 0).map(|_| ()));
                    assert!(matches!(in_scope, Err(Error::InvalidRank { .. })));
                }
                assert_eq!(
                    comm.send(&[1u8], Rank::ANY, 0),
                    Err(Error::InvalidRank { rank: -1, size })
                );
                for t in [Tag(-2), Tag(i32::MIN), Tag::ANY] {
                    assert_eq!(
                        comm.send(&[1u8], 0, t),
                        Err(Error::InvalidTag { tag: t.0, max: i32::MAX })
                    );
                }
                assert!(matches!(comm.recv(&mut [0u8], 0, Tag(-7)), Err(Error::InvalidTag { .. })));

                // After all those errors, the communicator works: a ring of
                // zero-byte messages and of messages with the largest tag.
                let right = (comm.rank() + 1) % size;
                let left = (comm.rank() + size - 1) % size;
                let status = comm.sendrecv::<u64, u64>(&[], right, 0, &mut [], left, 0).unwrap();
                assert_eq!(status, Status { source: Rank(left as i32), tag: Tag(0), count: 0 });
                let mut got = [0u8; 3];
                let status =
                    comm.sendrecv(&[9u8, 9, 9], right, Tag::MAX, &mut got, left, Tag::MAX).unwrap();
                assert_eq!((status.tag, status.count, got), (Tag::MAX, 3, [9, 9, 9]));
                let status = comm
                    .sendrecv::<u8, u8>(&[], right, Tag::MAX, &mut [], Rank::ANY, Tag::ANY)
                    .unwrap();
                assert_eq!(
                    (status.source, status.tag, status.count),
                    (Rank(left as i32), Tag::MAX, 0)
                );
            });
        }
    });
}

/// Operations with the null process complete at once with the empty status.
#[test]
fn null_process_operations_complete_at_once() {
    watchdog(30, "null", || {
        run("null", 1, &Default::default(), |comm| {
            comm.send(&[1u32, 2], Rank::NULL, 5).unwrap();
            comm.ssend(&[1u32, 2], Rank::NULL, 5).unwrap();
            let mut buf = [7u32; 2];
            assert_eq!(comm.recv(&mut buf, Rank::NULL, Tag::ANY).unwrap(), Status::EMPTY);
            assert_eq!(buf, [7, 7]);
            assert_eq!(comm.probe(Rank::NULL, 3).unwrap(), Status::EMPTY);
            comm.scope(|s| {
                let mut r = s.irecv(&mut buf, Rank::NULL, 1)?;
                assert_eq!(r.test()?, Some(Status::EMPTY));
                assert!(!r.is_active());
                let w = s.isend(&[1u8], Rank::NULL, 1)?;
                assert_eq!(w.wait()?, Status::EMPTY);
                Ok(())
            })
            .unwrap();
        });
    });
}

/// Sends to oneself, blocking (eager) and non-blocking (any size).
#[test]
fn sends_to_oneself() {
    watchdog(60, "self", || {
        for (name, config) in settings() {
            let eager = eager_limit(&config);
            run(name, 3, &config, |comm| {
                let me = comm.rank();
                comm.send(&[me as u16; 3], me, 1).unwrap();
                let mut small = [0u16; 3];
                assert_eq!(comm.recv(&mut small, me, 1).unwrap().source, Rank(me as i32));
                assert_eq!(small, [me as u16; 3]);
                for len in [0, eager, eager + 1, 1 << 20] {
                    let msg: Vec<u8> = (0..len).map(|i| (i * 7 + me) as u8).collect();
                    let mut got = vec![0u8; len];
                    comm.scope(|s| {
                        let w = s.isend(&msg, me, 2)?;
                        let r = s.irecv(&mut got, me, 2)?;
                        hpcomm::wait_all(&mut [w, r])?;
                        Ok(())
                    })
                    .unwrap();
                    assert!(got == msg, "{name}: self message of {len} B");
                }
            });
        }
    });
}

/// MPI's non-overtaking rule: messages between a pair on one communicator
/// match in sending order, whatever their sizes and protocols.
#[test]
fn messages_do_not_overtake() {
    watchdog(120, "order", || {
        for (name, config) in settings() {
            let eager = eager_limit(&config);
            let sizes = [1usize, eager + 100, 3, 5 * eager, 0, eager, 2];
            run(name, 2, &config, |comm| {
                if comm.rank() == 0 {
                    for (i, &len) in sizes.iter().enumerate() {
                        let mut buf = vec![0u8; 8 * eager];
                        let status = comm.recv(&mut buf, 1, 4).unwrap();
                        assert_eq!(status.count, len, "{name}: message {i} overtaken");
                        assert!(buf[..len].iter().all(|&b| b == i as u8));
                    }
                } else {
                    let msgs: Vec<Vec<u8>> =
                        sizes.iter().enumerate().map(|(i, &l)| vec![i as u8; l]).collect();
                    comm.scope(|s| {
                        let mut reqs = Vec::new();
                        for m in &msgs {
                            reqs.push(s.isend(m, 0, 4)?);
                        }
                        hpcomm::wait_all(&mut reqs)?;
                        Ok(())
                    })
                    .unwrap();
                }
            });
        }
    });
}

/// 100 000 small messages arrive before any receive is posted; they are all
/// kept and drained in order.
#[test]
fn hundred_thousand_unexpected_messages_drain_in_order() {
    watchdog(300, "unexpected", || {
        for (name, config) in settings() {
            run(name, 2, &config, |comm| {
                const N: u32 = 100_000;
                if comm.rank() == 0 {
                    // The marker comes after all of them from the same
                    // source, so once it is seen, all are unexpected here.
                    comm.probe(1, 2).unwrap();
                    for i in 0..N {
                        let mut v = [0u32];
                        let status = comm.recv(&mut v, Rank::ANY, 1).unwrap();
                        assert_eq!((v[0], status.count), (i, 1), "{name}");
                    }
                    comm.recv::<u8>(&mut [], 1, 2).unwrap();
                } else {
                    for i in 0..N {
                        comm.send(&[i], 0, 1).unwrap();
                    }
                    comm.send::<u8>(&[], 0, 2).unwrap();
                }
            });
        }
    });
}

/// 10 000 requests outstanding at once on each side, completed together.
#[test]
fn ten_thousand_outstanding_requests() {
    watchdog(300, "outstanding", || {
        for (name, config) in settings() {
            run(name, 2, &config, |comm| {
                const N: usize = 10_000;
                let peer = 1 - comm.rank();
                let outgoing: Vec<u64> =
                    (0..N as u64).map(|i| i * 3 + comm.rank() as u64).collect();
                let mut incoming = vec![0u64; N];
                comm.scope(|s| {
                    let mut reqs = Vec::with_capacity(2 * N);
                    for slot in incoming.chunks_mut(1) {
                        reqs.push(s.irecv(slot, peer, 9)?);
                    }
                    for value in outgoing.chunks(1) {
                        reqs.push(s.isend(value, peer, 9)?);
                    }
                    let statuses = hpcomm::wait_all(&mut reqs)?;
                    assert_eq!(statuses.len(), 2 * N);
                    Ok(())
                })
                .unwrap();
                assert!(
                    incoming.iter().enumerate().all(|(i, &v)| v == i as u64 * 3 + peer as u64),
                    "{name}: data out of order"
                );
            });
        }
    });
}

/// Both ranks send to each other at once, at sizes around the eager
/// threshold: with `sendrecv` and with non-blocking pairs, nothing
/// deadlocks.
#[test]
fn head_to_head_large_sends_do_not_deadlock() {
    watchdog(120, "head-to-head", || {
        for (name, config) in settings() {
            let eager = eager_limit(&config);
            for n in [2, 5, 8] {
                run(name, n, &config, |comm| {
                    let size = comm.size();
                    let right = (comm.rank() + 1) % size;
                    let left = (comm.rank() + size - 1) % size;
                    for len in [eager - 1, eager, eager + 1, 4 * eager, 1 << 20] {
                        let msg = vec![comm.rank() as u8; len];
                        let mut got = vec![0u8; len];
                        comm.sendrecv(&msg, right, 0, &mut got, left, 0).unwrap();
                        assert!(got.iter().all(|&b| b == left as u8), "{name}");
                        let mut got2 = vec![0u8; len];
                        comm.scope(|s| {
                            let w = s.isend(&msg, left, 1)?;
                            let r = s.irecv(&mut got2, right, 1)?;
                            w.wait()?;
                            r.wait()?;
                            Ok(())
                        })
                        .unwrap();
                        assert!(got2.iter().all(|&b| b == right as u8), "{name}");
                    }
                });
            }
        }
    });
}

/// A synchronous send does not complete before its receive is posted; a
/// standard eager send does.
#[test]
fn synchronous_send_waits_for_the_match() {
    watchdog(60, "ssend", || {
        for (name, config) in settings() {
            let eager = eager_limit(&config);
            for len in [4usize, eager + 1] {
                run(name, 2, &config, |comm| {
                    let ctl = comm.dup().unwrap();
                    if comm.rank() == 1 {
                        let msg = vec![5u8; len];
                        comm.scope(|s| {
                            let mut r = s.issend(&msg, 0, 0)?;
                            for _ in 0..200 {
                                assert_eq!(
                                    r.test()?,
                                    None,
                                    "{name}: ssend completed before the match"
                                );
                            }
                            ctl.send(&[0u8], 0, 0)?;
                            r.wait()?;
                            Ok(())
                        })
                        .unwrap();
                        // A standard eager send completes with no receive posted.
                        comm.scope(|s| {
                            let mut r = s.isend(&[1u8], 0, 1)?;
                            assert!(
                                r.test()?.is_some(),
                                "{name}: eager isend did not complete at once"
                            );
                            ctl.send(&[0u8], 0, 1)?;
                            Ok(())
                        })
                        .unwrap();
                    } else {
                        ctl.recv(&mut [0u8], 1, 0).unwrap();
                        let mut buf = vec![0u8; len];
                        comm.recv(&mut buf, 1, 0).unwrap();
                        assert!(buf.iter().all(|&b| b == 5));
                        ctl.recv(&mut [0u8], 1, 1).unwrap();
                        comm.recv(&mut [0u8], 1, 1).unwrap();
                    }
                });
            }
        }
    });
}

/// `test`, `test_any` and `wait_any` on completed and inactive requests.
#[test]
fn test_and_any_follow_mpi() {
    watchdog(60, "test_any", || {
        run("test_any", 2, &Default::default(), |comm| {
            let ctl = comm.dup().unwrap();
            let peer = 1 - comm.rank();
            if comm.rank() == 0 {
                let mut a = [0u32];
                let mut b = [0u32];
                comm.scope(|s| {
                    let mut reqs = vec![s.irecv(&mut a, peer, 1)?, s.irecv(&mut b, peer, 2)?];
                    assert_eq!(hpcomm::test_any(&mut reqs)?, None);
                    ctl.send(&[0u8], peer, 0)?;
                    let (i, status) = hpcomm::wait_any(&mut reqs)?.expect("one completes");
                    assert_eq!((i, status.tag), (1, Tag(2)));
                    ctl.send(&[0u8], peer, 0)?;
                    let (i, _) = hpcomm::wait_any(&mut reqs)?.expect("the other completes");
                    assert_eq!(i, 0);
                    assert_eq!(hpcomm::wait_any(&mut reqs)?, None, "no active request left");
                    assert_eq!(hpcomm::test_any(&mut reqs)?, None);
                    Ok(())
                })
                .unwrap();
                assert_eq!((a, b), ([10], [20]));
            } else {
                ctl.recv(&mut [0u8], peer, 0).unwrap();
                comm.send(&[20u32], peer, 2).unwrap();
                ctl.recv(&mut [0u8], peer, 0).unwrap();
                comm.send(&[10u32], peer, 1).unwrap();
            }
        });
    });
}
