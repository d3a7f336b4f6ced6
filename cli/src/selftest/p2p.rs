//! The point-to-point and communicator cases of the suite: arguments, the
//! null process, matching order, probes, truncation, synchronous sends,
//! request completion, scopes, and communicator creation.

use hpcomm::{Communicator, Error, Rank, Status, Tag};

fn label(comm: &Communicator) -> String {
    format!(
        "{} ranks over {}, eager limit {}",
        comm.size(),
        comm.transport_name(),
        comm.eager_limit()
    )
}

/// Bad ranks and tags are error values, and the communicator still works
/// afterwards: zero-byte messages and the largest tag around a ring.
pub(super) fn arguments(comm: &Communicator) {
    let size = comm.size();
    let bad_ranks = [Rank(-5), Rank(size as i32), Rank(i32::MAX), Rank::from(usize::MAX)];
    for r in bad_ranks {
        assert_eq!(comm.send(&[1u8], r, 0), Err(Error::InvalidRank { rank: r.0, size }));
        assert_eq!(comm.recv(&mut [0u8], r, 0), Err(Error::InvalidRank { rank: r.0, size }));
        assert!(matches!(comm.iprobe(r, 0), Err(Error::InvalidRank { .. })));
        let in_scope = comm.scope(|s| s.isend(&[1u8], r, 0).map(|_| ()));
        assert!(matches!(in_scope, Err(Error::InvalidRank { .. })));
    }
    assert_eq!(comm.send(&[1u8], Rank::ANY, 0), Err(Error::InvalidRank { rank: -1, size }));
    for t in [Tag(-2), Tag(i32::MIN), Tag::ANY] {
        assert_eq!(comm.send(&[1u8], 0, t), Err(Error::InvalidTag { tag: t.0, max: i32::MAX }));
    }
    assert!(matches!(comm.recv(&mut [0u8], 0, Tag(-7)), Err(Error::InvalidTag { .. })));

    let right = (comm.rank() + 1) % size;
    let left = (comm.rank() + size - 1) % size;
    let status = comm.sendrecv::<u64, u64>(&[], right, 0, &mut [], left, 0).unwrap();
    assert_eq!(status, Status { source: Rank(left as i32), tag: Tag(0), count: 0 });
    let mut got = [0u8; 3];
    let status = comm.sendrecv(&[9u8, 9, 9], right, Tag::MAX, &mut got, left, Tag::MAX).unwrap();
    assert_eq!((status.tag, status.count, got), (Tag::MAX, 3, [9, 9, 9]));
    let status =
        comm.sendrecv::<u8, u8>(&[], right, Tag::MAX, &mut [], Rank::ANY, Tag::ANY).unwrap();
    assert_eq!((status.source, status.tag, status.count), (Rank(left as i32), Tag::MAX, 0));
}

/// Operations with the null process complete at once with the empty status.
pub(super) fn null_process(comm: &Communicator) {
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
}

/// Sends to oneself: blocking (eager) and non-blocking (any size).
pub(super) fn sends_to_self(comm: &Communicator) {
    let eager = comm.eager_limit();
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
        assert!(got == msg, "{}: self message of {len} B", label(comm));
    }
}

/// 30 any-source, any-tag receives of decreasing length are posted first;
/// rank 0 then lets the senders go one message at a time (MPI orders
/// messages per sender, not across senders), so receive i gets message i:
/// `wait_any` must report each with its own count and data. Small and
/// rendezvous sizes.
pub(super) fn wait_any_thirty(comm: &Communicator) {
    let n = comm.size();
    let senders = n - 1;
    let sender_of = |i: usize| 1 + i % senders;
    let ctl = comm.dup().unwrap();
    for scale in [1usize, 700] {
        let len = |i: usize| (30 - i) * scale;
        if comm.rank() == 0 {
            let mut bufs: Vec<Vec<u32>> = (0..30).map(|i| vec![u32::MAX; len(i)]).collect();
            let mut seen = [false; 30];
            comm.scope(|s| {
                let mut reqs = Vec::new();
                for buf in bufs.iter_mut() {
                    reqs.push(s.irecv(buf, Rank::ANY, Tag::ANY)?);
                }
                for next in 0..30 {
                    ctl.send(&[0u8], sender_of(next), next as i32)?;
                    let (i, status) = hpcomm::wait_any(&mut reqs)?.expect("an active request");
                    assert_eq!(i, next, "{}: message {next} matched request {i}", label(comm));
                    assert!(!seen[i], "request {i} reported twice");
                    seen[i] = true;
                    assert_eq!(status.count, len(i), "{}: count of {i}", label(comm));
                    assert_eq!(status.tag, Tag(i as i32));
                    assert_eq!(status.source, Rank(sender_of(i) as i32));
                }
                assert_eq!(hpcomm::wait_any(&mut reqs)?, None, "no active request left");
                Ok(())
            })
            .unwrap();
            for (i, buf) in bufs.iter().enumerate() {
                assert!(
                    buf.iter().enumerate().all(|(j, &v)| v == (i * 1_000_000 + j) as u32),
                    "{}: data of message {i}",
                    label(comm)
                );
            }
        } else {
            for i in (0..30).filter(|&i| sender_of(i) == comm.rank()) {
                ctl.recv(&mut [0u8], 0, i as i32).unwrap();
                let msg: Vec<u32> = (0..len(i)).map(|j| (i * 1_000_000 + j) as u32).collect();
                comm.send(&msg, 0, i as i32).unwrap();
            }
        }
    }
}

/// `iprobe` sees nothing before the message is sent; a blocking `probe`
/// posted before it arrives reports its source, tag and size (1 B to 4 MiB);
/// the receive then gets exactly that.
pub(super) fn probe_sizes(comm: &Communicator) {
    let ctl = comm.dup().unwrap();
    let mut size = 1usize;
    while size <= 4 << 20 {
        let tag = (size.trailing_zeros() + 1) as i32;
        if comm.rank() == 0 {
            assert_eq!(comm.iprobe(1, Tag::ANY).unwrap(), None, "{size} B seen early");
            ctl.send(&[0u8], 1, 0).unwrap();
            let status = comm.probe(1, Tag::ANY).unwrap();
            assert_eq!(status, Status { source: Rank(1), tag: Tag(tag), count: size });
            assert_eq!(comm.iprobe(1, tag).unwrap(), Some(status));
            let mut buf = vec![0u8; status.count];
            let got = comm.recv(&mut buf, status.source, status.tag).unwrap();
            assert_eq!(got.count, size);
            assert!(buf.iter().enumerate().all(|(i, &b)| b == (i % 253) as u8), "{size} B");
        } else if comm.rank() == 1 {
            ctl.recv(&mut [0u8], 0, 0).unwrap();
            let msg: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
            comm.send(&msg, 0, tag).unwrap();
        }
        size *= 4;
    }
}

/// A short message into a long buffer: the exact count, and the rest of the
/// buffer untouched — at eager and rendezvous sizes.
pub(super) fn short_message(comm: &Communicator) {
    let eager = comm.eager_limit();
    for len in [1, eager / 8, eager / 4 + 1, 4 * eager, 100_000] {
        if comm.rank() == 0 {
            let mut buf = vec![-1.0f64; len + 1000];
            let status = comm.recv(&mut buf, 1, 3).unwrap();
            assert_eq!(status.count, len);
            assert!(buf[..len].iter().enumerate().all(|(i, &v)| v == i as f64));
            assert!(buf[len..].iter().all(|&v| v == -1.0), "tail overwritten at {len}");
        } else if comm.rank() == 1 {
            let msg: Vec<f64> = (0..len).map(|i| i as f64).collect();
            comm.send(&msg, 0, 3).unwrap();
        }
    }
}

/// Truncation is an error value carrying both sizes, for pre-posted and
/// unexpected receives at eager and rendezvous sizes; the sender completes
/// normally and both ranks go on communicating.
pub(super) fn truncation(comm: &Communicator) {
    let ctl = comm.dup().unwrap();
    let eager = comm.eager_limit();
    for len in [16usize, eager, eager + 1, 8 * eager] {
        for preposted in [true, false] {
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
                    comm.probe(1, 1).unwrap();
                    comm.recv(&mut small, 1, 1)
                };
                assert_eq!(
                    outcome,
                    Err(Error::Truncated { needed: len, capacity: len / 2 }),
                    "{}: {len} B, preposted {preposted}",
                    label(comm)
                );
                let mut next = [0u32; 2];
                assert_eq!(comm.recv(&mut next, 1, 2).unwrap().count, 2);
                assert_eq!(next, [7, 8]);
            } else if comm.rank() == 1 {
                ctl.recv(&mut [0u8], 0, 0).unwrap();
                comm.send(&vec![1u8; len], 0, 1).unwrap();
                comm.send(&[7u32, 8], 0, 2).unwrap();
            }
        }
    }
    // A send-receive whose receive is truncated at once (the message was
    // already waiting) still sends.
    if comm.rank() < 2 {
        let peer = 1 - comm.rank();
        comm.send(&[1u64, 2, 3], peer, 3).unwrap();
        comm.probe(peer, 3).unwrap();
        let outcome = comm.sendrecv(&[4u64, 5], peer, 4, &mut [0u64; 1], peer, 3);
        assert_eq!(outcome, Err(Error::Truncated { needed: 24, capacity: 8 }));
        let mut got = [0u64; 2];
        comm.recv(&mut got, peer, 4).unwrap();
        assert_eq!(got, [4, 5]);
    }
}

/// A message that is not a whole number of the receiver's elements.
pub(super) fn partial_element(comm: &Communicator) {
    if comm.rank() == 0 {
        let mut buf = [0u32; 4];
        assert_eq!(
            comm.recv(&mut buf, 1, 0),
            Err(Error::PartialElement { bytes: 5, elem_size: 4 })
        );
    } else if comm.rank() == 1 {
        comm.send(&[1u8; 5], 0, 0).unwrap();
    }
}

/// MPI's non-overtaking rule: messages between a pair on one communicator
/// match in sending order, whatever their sizes and protocols.
pub(super) fn order(comm: &Communicator) {
    let eager = comm.eager_limit();
    let sizes = [1usize, eager + 100, 3, 5 * eager, 0, eager, 2];
    if comm.rank() == 0 {
        for (i, &len) in sizes.iter().enumerate() {
            let mut buf = vec![0u8; 8 * eager];
            let status = comm.recv(&mut buf, 1, 4).unwrap();
            assert_eq!(status.count, len, "{}: message {i} overtaken", label(comm));
            assert!(buf[..len].iter().all(|&b| b == i as u8));
        }
    } else if comm.rank() == 1 {
        let msgs: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &l)| vec![i as u8; l]).collect();
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
}

/// 100 000 small messages arrive before any receive is posted; they are all
/// kept and drained in order.
pub(super) fn unexpected_100k(comm: &Communicator) {
    const N: u32 = 100_000;
    if comm.rank() == 0 {
        // The marker comes after all of them from the same source, so once
        // it is seen, all are waiting here, unexpected.
        comm.probe(1, 2).unwrap();
        for i in 0..N {
            let mut v = [0u32];
            let status = comm.recv(&mut v, Rank::ANY, 1).unwrap();
            assert_eq!((v[0], status.count), (i, 1), "{}", label(comm));
        }
        comm.recv::<u8>(&mut [], 1, 2).unwrap();
    } else if comm.rank() == 1 {
        for i in 0..N {
            comm.send(&[i], 0, 1).unwrap();
        }
        comm.send::<u8>(&[], 0, 2).unwrap();
    }
}

/// 10 000 requests outstanding at once on each side, completed together.
pub(super) fn outstanding_10k(comm: &Communicator) {
    const N: usize = 10_000;
    if comm.rank() > 1 {
        return;
    }
    let peer = 1 - comm.rank();
    let outgoing: Vec<u64> = (0..N as u64).map(|i| i * 3 + comm.rank() as u64).collect();
    let mut incoming = vec![0u64; N];
    comm.scope(|s| {
        let mut reqs = Vec::with_capacity(2 * N);
        for slot in incoming.chunks_mut(1) {
            reqs.push(s.irecv(slot, peer, 9)?);
        }
        for value in outgoing.chunks(1) {
            reqs.push(s.isend(value, peer, 9)?);
        }
        assert_eq!(hpcomm::wait_all(&mut reqs)?.len(), 2 * N);
        Ok(())
    })
    .unwrap();
    assert!(
        incoming.iter().enumerate().all(|(i, &v)| v == i as u64 * 3 + peer as u64),
        "{}: data out of order",
        label(comm)
    );
}

/// Every rank sends to its neighbour at once, at sizes around the eager
/// threshold: with `sendrecv` and with non-blocking pairs, nothing
/// deadlocks.
pub(super) fn head_to_head(comm: &Communicator) {
    let eager = comm.eager_limit();
    let size = comm.size();
    let right = (comm.rank() + 1) % size;
    let left = (comm.rank() + size - 1) % size;
    for len in [eager - 1, eager, eager + 1, 4 * eager, 1 << 20] {
        let msg = vec![comm.rank() as u8; len];
        let mut got = vec![0u8; len];
        comm.sendrecv(&msg, right, 0, &mut got, left, 0).unwrap();
        assert!(got.iter().all(|&b| b == left as u8), "{}", label(comm));
        let mut got2 = vec![0u8; len];
        comm.scope(|s| {
            let w = s.isend(&msg, left, 1)?;
            let r = s.irecv(&mut got2, right, 1)?;
            w.wait()?;
            r.wait()?;
            Ok(())
        })
        .unwrap();
        assert!(got2.iter().all(|&b| b == right as u8), "{}", label(comm));
    }
}

/// A synchronous send does not complete before its receive is posted; a
/// standard eager send does.
pub(super) fn ssend(comm: &Communicator) {
    let ctl = comm.dup().unwrap();
    let eager = comm.eager_limit();
    for len in [4usize, eager + 1] {
        if comm.rank() == 1 {
            let msg = vec![5u8; len];
            comm.scope(|s| {
                let mut r = s.issend(&msg, 0, 0)?;
                for _ in 0..200 {
                    assert_eq!(
                        r.test()?,
                        None,
                        "{}: ssend completed before the match",
                        label(comm)
                    );
                }
                ctl.send(&[0u8], 0, 0)?;
                r.wait()?;
                Ok(())
            })
            .unwrap();
            comm.scope(|s| {
                let mut r = s.isend(&[1u8], 0, 1)?;
                assert!(r.test()?.is_some(), "an eager isend did not complete at once");
                ctl.send(&[0u8], 0, 1)?;
                Ok(())
            })
            .unwrap();
        } else if comm.rank() == 0 {
            ctl.recv(&mut [0u8], 1, 0).unwrap();
            let mut buf = vec![0u8; len];
            comm.recv(&mut buf, 1, 0).unwrap();
            assert!(buf.iter().all(|&b| b == 5));
            ctl.recv(&mut [0u8], 1, 1).unwrap();
            comm.recv(&mut [0u8], 1, 1).unwrap();
        }
    }
}

/// `test_any` and `wait_any` on completed and inactive requests.
pub(super) fn test_any(comm: &Communicator) {
    let ctl = comm.dup().unwrap();
    if comm.rank() > 1 {
        return;
    }
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
}

/// Forgetting a request does not end its buffer's borrow early: the scope
/// still completes it, and the data is there afterwards.
#[allow(clippy::forget_non_drop)]
pub(super) fn forget(comm: &Communicator) {
    if comm.rank() > 1 {
        return;
    }
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
    assert_eq!(got_small, [7; 4], "{}", label(comm));
    assert!(got_big == big, "{}", label(comm));
}

/// Errors of requests nobody waited for surface when the scope ends.
pub(super) fn scope_errors(comm: &Communicator) {
    if comm.rank() == 0 {
        let mut small = [0u8; 2];
        let outcome = comm.scope(|s| {
            let _ = s.irecv(&mut small, 1, 0)?;
            Ok("closure done")
        });
        assert_eq!(outcome, Err(Error::Truncated { needed: 8, capacity: 2 }));
    } else if comm.rank() == 1 {
        comm.send(&[1u8; 8], 0, 0).unwrap();
    }
}

/// Split with keys that reverse the order: new ranks follow the key, ties
/// broken by the old rank; the undefined colour gets `None`; the new
/// communicator carries messages among its own members only.
pub(super) fn split(comm: &Communicator) {
    let n = comm.size();
    let me = comm.rank();
    let color = (me != 0).then_some((me % 2) as u32);
    let key = -((me / 2) as i32);
    let sub = comm.split(color, key).unwrap();
    let Some(sub) = sub else {
        assert_eq!(me, 0, "only rank 0 chose the undefined colour");
        return;
    };
    let mut group: Vec<usize> = (1..n).filter(|r| r % 2 == me % 2).collect();
    group.sort_by_key(|&r| (-((r / 2) as i32), r));
    let parent = comm.world_ranks();
    let expected: Vec<usize> = group.iter().map(|&r| parent[r]).collect();
    assert_eq!(sub.world_ranks(), expected, "{}: rank {me}", label(comm));
    assert_eq!(sub.size(), group.len());
    assert_eq!(group[sub.rank()], me);
    if sub.rank() == 0 {
        let mut got = vec![me];
        for r in 1..sub.size() {
            let mut v = [0usize];
            sub.recv(&mut v, r, 0).unwrap();
            got.push(v[0]);
        }
        assert_eq!(got, group, "messages stay within the new communicator");
    } else {
        sub.send(&[me], 0, 0).unwrap();
    }
}

/// `split_shared` groups exactly the ranks that name the same node (as
/// the launch says: `HPCOMM_NODE`, the host, or the threads' layout), in
/// this communicator's order, and the group communicates on its own.
pub(super) fn split_shared(comm: &Communicator) {
    use hpcomm::Collectives;
    let (n, me) = (comm.size(), comm.rank());
    let node = comm.config().node.clone().expect("a universe sets the node");
    // Every rank's node, as (length, bytes) padded to 256 bytes.
    let mut mine = [0u8; 256];
    let bytes = node.as_bytes();
    let len = bytes.len().min(255);
    mine[0] = len as u8;
    mine[1..=len].copy_from_slice(&bytes[..len]);
    let mut all = vec![0u8; 256 * n];
    comm.all_gather(&mine, &mut all).unwrap();
    let group: Vec<usize> = (0..n).filter(|&r| all[256 * r..256 * (r + 1)] == mine[..]).collect();
    let shared = comm.split_shared().unwrap();
    let parent = comm.world_ranks();
    let expected: Vec<usize> = group.iter().map(|&r| parent[r]).collect();
    assert_eq!(shared.world_ranks(), expected, "{}: rank {me} on {node}", label(comm));
    assert_eq!(group[shared.rank()], me);
    let mut count = [0u64];
    shared.all_reduce(&[1u64], &mut count, hpcomm::op::Sum).unwrap();
    assert_eq!(count[0] as usize, group.len());
}

/// A message sent on a duplicate never matches a receive on the original
/// (even a wildcard one), nor on a split; repeated dups keep working.
pub(super) fn dup_isolation(comm: &Communicator) {
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
            "a receive took another communicator's message"
        );
        assert_eq!(comm.iprobe(Rank::ANY, Tag::ANY).unwrap(), None);
        dup.recv(&mut v, Rank::ANY, Tag::ANY).unwrap();
        assert_eq!(v[0], 2);
        half.recv(&mut v, Rank::ANY, Tag::ANY).unwrap();
        assert_eq!(v[0], 3);
    }
    let mut c = dup;
    for _ in 0..5 {
        c = c.dup().unwrap();
    }
    let mut got = [0usize];
    let size = c.size();
    c.sendrecv(&[c.rank()], (c.rank() + 1) % size, 0, &mut got, Rank::ANY, 0).unwrap();
    assert_eq!(got[0], (c.rank() + size - 1) % size);
}
