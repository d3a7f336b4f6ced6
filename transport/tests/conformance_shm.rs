//! The transport conformance suite over the shared-memory backend, with
//! single-copy reads (process_vm_readv) and with the pipelined fallback;
//! with every pair on the queues, every pair on a ring from its first
//! frame, and a pool too small for every pair.

use hpcomm_transport::conformance;
use hpcomm_transport::shm::{Shm, ShmConfig};

#[test]
fn shm_with_single_copy_reads() {
    conformance::run_all(|n| Shm::local_job(n, &ShmConfig::default()).expect("shm job"));
}

#[test]
fn shm_without_single_copy_reads() {
    conformance::run_all(|n| {
        Shm::local_job(n, &ShmConfig { cma: false, ..ShmConfig::default() }).expect("shm job")
    });
}

#[test]
fn shm_with_small_rings() {
    conformance::run_all(|n| {
        Shm::local_job(
            n,
            &ShmConfig { ring_bytes: Some(16 << 10), eager_limit: 1024, ..ShmConfig::default() },
        )
        .expect("shm job")
    });
}

#[test]
fn shm_queues_only() {
    conformance::run_all(|n| {
        Shm::local_job(n, &ShmConfig { ring_after: u32::MAX, ..ShmConfig::default() })
            .expect("shm job")
    });
}

#[test]
fn shm_rings_at_once() {
    conformance::run_all(|n| {
        Shm::local_job(n, &ShmConfig { ring_after: 0, ..ShmConfig::default() }).expect("shm job")
    });
}

#[test]
fn shm_with_a_pool_of_two_rings() {
    conformance::run_all(|n| {
        let config = ShmConfig {
            ring_bytes: Some(16 << 10),
            pool_bytes: 32 << 10,
            ring_after: 2,
            eager_limit: 1024,
            ..ShmConfig::default()
        };
        Shm::local_job(n, &config).expect("shm job")
    });
}

/// Pairs move from the queue to a ring after `ring_after` frames, as long
/// as the pool lasts; the others stay on the queue; nothing is lost or
/// reordered across the move.
#[test]
fn pairs_take_rings_from_the_pool_as_they_talk() {
    use hpcomm_transport::{Event, PeerId, Regions, Transport, TransportError};
    use std::time::{Duration, Instant};

    let config = ShmConfig {
        ring_bytes: Some(16 << 10),
        pool_bytes: 3 * (16 << 10),
        ring_after: 4,
        ..ShmConfig::default()
    };
    let mut eps = Shm::local_job(3, &config).expect("shm job");
    assert_eq!(eps[0].pool_use(), (0, 3));
    let regions = Regions::new();
    // Ranks 1 and 2 send 20 frames each to rank 0; rank 0 sends 2 to rank 1.
    let mut received = vec![Vec::new(); 3];
    let start = Instant::now();
    for seq in 0..20u32 {
        for src in [1, 2] {
            loop {
                match eps[src].try_send(PeerId(0), &seq.to_le_bytes(), &[src as u8; 100]) {
                    Ok(()) => break,
                    Err(TransportError::WouldBlock) => {}
                    Err(e) => panic!("{e}"),
                }
                eps[0]
                    .poll(&regions, &mut |ev| {
                        if let Event::Frame { src, header, .. } = ev {
                            received[src.index()]
                                .push(u32::from_le_bytes(header.try_into().unwrap()));
                        }
                    })
                    .unwrap();
                assert!(start.elapsed() < Duration::from_secs(10), "no room");
            }
        }
    }
    for _ in 0..2 {
        eps[0].try_send(PeerId(1), b"few", b"").unwrap();
    }
    while received[1].len() + received[2].len() < 40 {
        eps[0]
            .poll(&regions, &mut |ev| {
                if let Event::Frame { src, header, .. } = ev {
                    received[src.index()].push(u32::from_le_bytes(header.try_into().unwrap()));
                }
            })
            .unwrap();
        assert!(start.elapsed() < Duration::from_secs(10), "frames missing");
    }
    let in_order: Vec<u32> = (0..20).collect();
    assert_eq!(received[1], in_order);
    assert_eq!(received[2], in_order);
    // The two busy pairs took rings; the pair that sent two frames did not.
    assert_eq!((eps[1].rings_out(), eps[2].rings_out(), eps[0].rings_out()), (1, 1, 0));
    assert_eq!(eps[0].pool_use(), (2, 3));
}

/// A job of no ranks, or a rank outside its job, is a set-up error, not a
/// panic.
#[test]
fn impossible_jobs_are_set_up_errors() {
    use hpcomm_transport::exchange::Local;
    use hpcomm_transport::TransportError;

    let mut exchange = Local::new(1);
    for (me, ranks) in [(0, 0), (3, 2)] {
        match Shm::open(me, ranks, &mut exchange, &ShmConfig::default()) {
            Err(TransportError::Setup(why)) => assert!(why.contains("outside"), "{why}"),
            other => panic!("rank {me} of {ranks}: {other:?}"),
        }
    }
}

/// A read goes to the process this rank knows the peer by, whatever the
/// key says: a peer cannot have this rank read another process's memory
/// (as root, pid 1's) and hand it back to it.
#[test]
fn reads_ignore_the_process_a_key_names() {
    use hpcomm_transport::{Event, PeerId, Regions, RemoteKey, Transport};

    let mut eps = Shm::local_job(2, &ShmConfig::default()).expect("shm job");
    if !eps[0].capabilities().rma_read {
        eprintln!("process_vm_readv is not permitted here; nothing to check");
        return;
    }
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    let mut got = vec![0u8; data.len()];
    let (exposer, reader) = eps.split_at_mut(1);
    let (theirs, mine) = (Regions::new(), Regions::new());
    theirs.scope(|t| {
        let src = t.register(&data);
        let key = exposer[0].expose(&theirs, src).expect("expose");
        mine.scope(|m| {
            let dst = m.register_mut(&mut got);
            let forged = RemoteKey { key: 1, ..key };
            reader[0].start_read(&mine, PeerId(0), forged, 0, dst, 0, 4096, 9).unwrap();
            let mut done = None;
            while done.is_none() {
                reader[0]
                    .poll(&mine, &mut |ev| match ev {
                        Event::RmaDone { token } => done = Some(Ok(token)),
                        Event::RmaFailed { token, error } => done = Some(Err((token, error))),
                        _ => {}
                    })
                    .unwrap();
            }
            assert_eq!(done, Some(Ok(9)));
        });
    });
    assert_eq!(got, data);
}
