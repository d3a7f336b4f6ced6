//! The transport conformance suite over the shared-memory backend, with
//! single-copy reads (process_vm_readv) and with the pipelined fallback.

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
                        Event::ReadDone { token } => done = Some(Ok(token)),
                        Event::ReadFailed { token, error } => done = Some(Err((token, error))),
                        _ => {}
                    })
                    .unwrap();
            }
            assert_eq!(done, Some(Ok(9)));
        });
    });
    assert_eq!(got, data);
}
