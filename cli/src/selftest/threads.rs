//! Threads: endpoints of their own that threads use at once, and an
//! endpoint used from a second thread while the first is inside a call.

use std::time::{Duration, Instant};

use hpcomm::op::Sum;
use hpcomm::{Collectives, Communicator, Error, Rank, Tag};

/// Threads per rank.
const THREADS: usize = 4;
/// Exchanges each thread makes.
const ROUNDS: usize = 40;

/// The value of element `i` that rank `rank`'s thread `t` sends in `round`.
fn code(rank: usize, t: usize, round: usize, i: usize) -> u64 {
    ((rank as u64) << 48) | ((t as u64) << 40) | ((round as u64) << 24) | i as u64
}

/// Every rank opens [`THREADS`] endpoints (after asking for different
/// numbers, an error everywhere) and a thread per endpoint; all
/// exchange at once around the ring — messages of every protocol, from a
/// few bytes to past the eager limit — then any-source receives and an
/// all-reduce, each on its own endpoint. Nothing crosses between
/// endpoints: each thread receives exactly its peers' thread's data.
pub(super) fn endpoints_at_once(comm: &Communicator) {
    let (n, me) = (comm.size(), comm.rank());
    // Ranks that ask for different numbers all get the error, and nothing
    // is opened.
    if n > 1 {
        let asked = if me == 0 { 2 } else { 1 };
        let refused = comm.endpoints(asked).map(|e| e.len());
        assert!(matches!(refused, Err(Error::CollectiveMismatch(_))), "{refused:?}");
    }
    let endpoints = comm.endpoints(THREADS).expect("endpoints");
    assert_eq!(endpoints.len(), THREADS);
    let longest = comm.eager_limit() / 8 * 3 + 5;
    std::thread::scope(|s| {
        for (t, endpoint) in endpoints.iter().enumerate() {
            s.spawn(move || {
                let world = endpoint.world();
                assert_eq!((world.size(), world.rank()), (n, me));
                let (right, left) = ((me + 1) % n, (me + n - 1) % n);
                for round in 0..ROUNDS {
                    let len = 1 + (round * 977 + t * 131) % longest;
                    let mine: Vec<u64> = (0..len).map(|i| code(me, t, round, i)).collect();
                    let mut got = vec![0u64; len];
                    let tag = (round % 5) as i32;
                    let status = world.sendrecv(&mine, right, tag, &mut got, left, tag).unwrap();
                    assert_eq!(status.count, len, "thread {t}, round {round}");
                    let first_wrong = (0..len).find(|&i| got[i] != code(left, t, round, i));
                    assert_eq!(first_wrong, None, "thread {t}, round {round}: {len} elements");
                }
                // Any source: only this endpoint's peers can match.
                let mut from = Vec::new();
                if me == 0 {
                    for _ in 1..n {
                        let mut buf = [0u64; 2];
                        let status = world.recv(&mut buf, Rank::ANY, Tag::ANY).unwrap();
                        assert_eq!(buf, [status.source.0 as u64, t as u64], "thread {t}");
                        from.push(status.source.0);
                    }
                    from.sort_unstable();
                    assert_eq!(from, (1..n as i32).collect::<Vec<_>>());
                } else {
                    world.send(&[me as u64, t as u64], 0, 9).unwrap();
                }
                let mut sum = [0u64];
                world.all_reduce(&[(me * THREADS + t) as u64], &mut sum, Sum).unwrap();
                let want: u64 = (0..n).map(|r| (r * THREADS + t) as u64).sum();
                assert_eq!(sum[0], want, "thread {t}'s all-reduce");
            });
        }
    });
    // Endpoints end collectively, as they are dropped.
    for endpoint in endpoints {
        endpoint.finalize().expect("endpoint finalized");
    }
}

/// A call on an endpoint from a second thread while the first is inside
/// a blocking receive, or inside a scope, fails with `Busy` and starts
/// nothing; the endpoint stays usable, from either thread once the first
/// is done.
pub(super) fn busy_endpoint(comm: &Communicator) {
    let me = comm.rank();
    // Rank 1's message comes only once rank 0's second thread has seen the
    // endpoint busy and said so, over an endpoint of their own.
    let side = comm.endpoints(1).expect("a side endpoint").pop().expect("one");
    if me == 0 {
        std::thread::scope(|s| {
            s.spawn(|| {
                let deadline = Instant::now() + Duration::from_secs(60);
                // Until the first thread is inside its receive.
                loop {
                    match comm.iprobe(1, 77) {
                        Err(Error::Busy) => break,
                        Ok(None) => assert!(Instant::now() < deadline, "never busy"),
                        other => panic!("iprobe from a second thread: {other:?}"),
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                assert_eq!(comm.send(&[1u8], 1, 78), Err(Error::Busy));
                side.world().send(&[1u8], 1, 0).expect("the go-ahead");
            });
            let mut got = [0u32];
            comm.recv(&mut got, 1, 77).unwrap();
            assert_eq!(got, [77]);
        });
    } else if me == 1 {
        side.world().recv(&mut [0u8], 0, 0).expect("the go-ahead");
        comm.send(&[77u32], 0, 77).unwrap();
    }
    // Nothing the refused send would have sent arrived.
    comm.barrier().unwrap();
    assert_eq!(comm.iprobe(Rank::ANY, 78), Ok(None));
    side.finalize().expect("the side endpoint ends");
    // Inside a scope the endpoint is this thread's.
    comm.scope(|_| {
        std::thread::scope(|s| {
            let other = s.spawn(|| comm.iprobe(Rank::ANY, Tag::ANY)).join().expect("no panic");
            assert_eq!(other, Err(Error::Busy));
        });
        Ok(())
    })
    .unwrap();
    // Usable again, from another thread.
    std::thread::scope(|s| {
        s.spawn(|| comm.barrier().unwrap());
    });
}
