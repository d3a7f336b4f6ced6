//! Frames that break the protocol, sent by a raw endpoint to a real rank: each
//! fails its sender with `Error::Protocol` and nothing else — no panic, no
//! abort, no unbounded allocation, and the other peers' traffic goes on.

use std::sync::mpsc;
use std::time::Duration;

use hpcomm_runtime::wire::{Header, MessageHeader, MAX_HEADER};
use hpcomm_runtime::{Config, ContextId, Error, Rank, Universe};
use hpcomm_transport::fuzz::{self, Rng};
use hpcomm_transport::loopback::{Loopback, LoopbackConfig};
use hpcomm_transport::{Backend, Event, PeerId, Regions, RemoteKey, Transport};

/// Runs `f` on its own thread; a hang fails the test binary.
fn watchdog(name: &str, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            eprintln!("watchdog: {name} hung");
            std::process::exit(3);
        }
    }
}

/// A job of `n` loopback endpoints: rank 0 a real rank, the others raw.
fn job(n: usize, config: LoopbackConfig) -> (Universe, Vec<Loopback>) {
    let mut eps = Loopback::fabric(n, config);
    let raw = eps.split_off(1);
    let rank0 = eps.pop().expect("rank 0");
    (Universe::from_transport(Backend::Loopback(rank0), Config::default()), raw)
}

fn eager(ctx: u32, src: u32, tag: i32, seq: u32, sync: Option<u64>) -> Vec<u8> {
    let msg = MessageHeader { ctx: ContextId(ctx), src, tag, seq };
    encode(Header::Eager { msg, sync })
}

fn encode(h: Header) -> Vec<u8> {
    let mut buf = [0u8; MAX_HEADER];
    let n = h.encode(&mut buf);
    buf[..n].to_vec()
}

fn send(raw: &mut Loopback, header: &[u8], payload: &[u8]) {
    raw.try_send(PeerId(0), header, payload).expect("room in rank 0's inbox");
}

/// Polls the raw endpoint until a frame whose header `pick` accepts arrives,
/// checking that `request` stays pending meanwhile; what `pick` took.
fn await_header<T>(
    raw: &mut Loopback,
    request: &mut hpcomm_runtime::Request<'_>,
    mut pick: impl FnMut(Header) -> Option<T>,
) -> hpcomm_runtime::Result<T> {
    let regions = Regions::new();
    loop {
        assert!(request.test()?.is_none(), "the request ended early");
        let mut found = None;
        raw.poll(&regions, &mut |ev| {
            if let Event::Frame { header, .. } = ev {
                if let Ok(h) = Header::decode(header) {
                    found = found.take().or_else(|| pick(h));
                }
            }
        })
        .unwrap();
        if let Some(v) = found {
            return Ok(v);
        }
    }
}

fn assert_refused(result: hpcomm_runtime::Result<impl std::fmt::Debug>, what: &str) {
    match result {
        Err(Error::Protocol(why)) => assert!(why.contains("rank 1"), "{what}: {why}"),
        other => panic!("{what}: expected a protocol error naming rank 1, got {other:?}"),
    }
}

#[test]
fn a_frame_naming_a_context_far_ahead_fails_its_sender_without_allocating() {
    watchdog("far context", || {
        let (universe, mut raw) = job(2, LoopbackConfig::default());
        // Far beyond: 64 such contexts are kept aside, the 65th is refused
        // (before the fix the first one asked for 600 GiB and aborted).
        for k in 0..65 {
            send(&mut raw[0], &eager(0xFFFF_FFFF - k, 1, 5, 0, None), b"x");
        }
        let mut buf = [0u8; 8];
        assert_refused(universe.world().recv(&mut buf, 1, 5), "far context");
    });
}

#[test]
fn a_frame_claiming_another_rank_fails_its_sender() {
    watchdog("impostor", || {
        let (universe, mut raw) = job(2, LoopbackConfig::default());
        // Rank 1 claims to be rank 0 on the world communicator.
        send(&mut raw[0], &eager(0, 0, 5, 0, None), &7u64.to_le_bytes());
        let mut buf = [0u8; 8];
        assert_refused(universe.world().recv(&mut buf, Rank::ANY, 5), "impostor");
        // And it claims a rank outside the job.
        let (universe, mut raw) = job(2, LoopbackConfig::default());
        send(&mut raw[0], &eager(0, 9, 5, 0, None), &7u64.to_le_bytes());
        assert_refused(universe.world().recv(&mut buf, 1, 5), "rank outside the job");
    });
}

#[test]
fn a_bad_frame_does_not_cost_the_rest_of_the_poll_batch() {
    watchdog("batch", || {
        let (universe, mut raw) = job(3, LoopbackConfig::default());
        // Rank 1's garbage and rank 2's message arrive in one poll.
        send(&mut raw[0], &[1, 250, 0, 0], b"");
        send(&mut raw[1], &eager(0, 2, 5, 0, None), &42u64.to_le_bytes());
        let mut buf = [0u64; 1];
        let status = universe.world().recv(&mut buf, 2, 5).expect("rank 2's message");
        assert_eq!((buf[0], status.source), (42, Rank(2)));
        assert_refused(universe.world().recv(&mut buf, 1, 5), "garbage");
    });
}

#[test]
fn a_read_rendezvous_is_refused_where_this_rank_cannot_read() {
    watchdog("read without reads", || {
        let config = LoopbackConfig { rma_read: false, ..LoopbackConfig::default() };
        let (universe, mut raw) = job(2, config);
        let msg = MessageHeader { ctx: ContextId(0), src: 1, tag: 5, seq: 0 };
        let rts = Header::Rts {
            msg,
            read: true,
            len: 1 << 20,
            sreq: 1,
            key: RemoteKey { addr: 0, key: 1 },
        };
        send(&mut raw[0], &encode(rts), b"");
        // Before the fix: a million one-byte read jobs.
        let mut buf = vec![0u8; 1 << 20];
        assert_refused(universe.world().recv(&mut buf, 1, 5), "read rendezvous");
    });
}

#[test]
fn only_the_receiver_of_a_synchronous_send_can_acknowledge_it() {
    watchdog("forged ack", || {
        let (universe, mut raw) = job(3, LoopbackConfig::default());
        let world = universe.world();
        world
            .scope(|s| {
                let mut request = s.issend(&[1u64], 1, 5)?;
                // Rank 1 receives the frame; rank 2 forges its answer.
                let sreq = await_header(&mut raw[0], &mut request, |h| match h {
                    Header::Eager { sync: Some(s), .. } => Some(s),
                    _ => None,
                })?;
                let ack = encode(Header::Ack { sreq });
                raw[1].try_send(PeerId(0), &ack, b"").unwrap();
                for _ in 0..100 {
                    assert!(request.test()?.is_none(), "completed by another rank's ACK");
                }
                raw[0].try_send(PeerId(0), &ack, b"").unwrap();
                request.wait()?;
                Ok(())
            })
            .unwrap();
    });
}

#[test]
fn data_for_another_ranks_receive_fails_its_sender() {
    watchdog("stray data", || {
        let config = LoopbackConfig { rma_read: false, ..LoopbackConfig::default() };
        let (universe, mut raw) = job(3, config);
        let world = universe.world();
        let big = 1 << 20;
        let msg = MessageHeader { ctx: ContextId(0), src: 1, tag: 5, seq: 0 };
        let rts = Header::Rts { msg, read: false, len: big, sreq: 1, key: RemoteKey::default() };
        send(&mut raw[0], &encode(rts), b"");
        let mut buf = vec![0u8; big as usize];
        let outcome = world.scope(|s| {
            let mut request = s.irecv(&mut buf, 1, 5)?;
            // Rank 1 gets the clear-to-send; rank 2 answers it.
            let rreq = await_header(&mut raw[0], &mut request, |h| match h {
                Header::Cts { rreq, .. } => Some(rreq),
                _ => None,
            })?;
            let data = encode(Header::Data { rreq, offset: 0 });
            raw[1].try_send(PeerId(0), &data, &[9; 1000]).unwrap();
            // The receive goes on with the real sender's data.
            let chunk = 64 * 1024;
            for offset in (0..big).step_by(chunk) {
                let data = encode(Header::Data { rreq, offset });
                while raw[0].try_send(PeerId(0), &data, &vec![1; chunk]).is_err() {
                    request.test()?;
                }
            }
            request.wait()
        });
        assert_eq!(outcome.expect("rank 1's message").count, big as usize);
        assert!(buf.iter().all(|&b| b == 1), "rank 2's bytes landed");
        match world.recv(&mut buf, 2, 5) {
            Err(Error::Protocol(why)) => assert!(why.contains("rank 2"), "{why}"),
            other => panic!("expected rank 2 refused, got {other:?}"),
        }
    });
}

/// One random frame: mostly a well-formed header of a random kind with
/// plausible fields (the sender telling the truth about its rank), some with
/// a few bytes mutated, some random bytes; a payload of random length.
fn random_frame(rng: &mut Rng) -> (Vec<u8>, Vec<u8>) {
    let msg = MessageHeader {
        ctx: ContextId(rng.below(6) as u32),
        src: if rng.below(5) == 0 { rng.below(4) as u32 } else { 1 },
        tag: rng.below(4) as i32,
        seq: rng.below(8) as u32,
    };
    let word = rng.next_u64();
    let mut header = match rng.below(9) {
        0 => encode(Header::Eager { msg, sync: None }),
        1 => encode(Header::Eager { msg, sync: Some(word) }),
        2 => encode(Header::Rts {
            msg,
            read: rng.below(2) == 0,
            len: rng.below(1 << 22),
            sreq: word,
            key: RemoteKey { addr: rng.next_u64(), key: rng.next_u64() },
        }),
        3 => encode(Header::Ack { sreq: word }),
        4 => encode(Header::Fin { sreq: word }),
        5 => encode(Header::Cts { sreq: word, rreq: rng.next_u64() }),
        6 => encode(Header::Data { rreq: word, offset: rng.below(1 << 22) }),
        _ => rng.bytes_below(MAX_HEADER as u64 + 1),
    };
    if rng.below(4) == 0 {
        rng.mutate(&mut header, 2);
    }
    let payload = rng.bytes_below(300);
    (header, payload)
}

/// Random and mutated frames from a raw peer, while the rank probes (which
/// polls the transport and matches): no panic, no abort, no hang, and the
/// rank's traffic with an honest peer still works afterwards. Batches of up
/// to 100 frames, each against a fresh job; `HPCOMM_FUZZ_CASES` frames in
/// all (10,000 by default, a million in `ci/fuzz.sh`).
#[test]
fn random_and_mutated_frames_never_crash_a_rank() {
    watchdog("fuzz", || {
        let cases = fuzz::cases(10_000);
        let mut rng = Rng::new(fuzz::seed());
        let (mut sent, mut refused, mut kept) = (0, 0, 0);
        while sent < cases {
            let reads = rng.below(2) == 0;
            let config = LoopbackConfig { rma_read: reads, ..LoopbackConfig::default() };
            let (universe, mut raw) = job(3, config);
            let world = universe.world();
            for _ in 0..1 + rng.below(100) {
                let (header, payload) = random_frame(&mut rng);
                let _ = raw[0].try_send(PeerId(0), &header, &payload);
                sent += 1;
                // A probe polls the transport and matches.
                let _ = world.iprobe(Rank::ANY, hpcomm_runtime::Tag::ANY);
            }
            // A send to the raw peer fails at once if it was refused.
            match world.send(&[0u8], 1, 99) {
                Err(Error::Protocol(_)) => refused += 1,
                Ok(()) => kept += 1,
                Err(e) => panic!("{e}"),
            }
            // The honest peer (rank 2, raw) is still heard.
            send(&mut raw[1], &eager(0, 2, 77, 0, None), &5u64.to_le_bytes());
            let mut got = [0u64; 1];
            world.recv(&mut got, 2, 77).expect("the honest peer's message");
            assert_eq!(got[0], 5);
        }
        assert!(refused > 0 && kept > 0, "{refused} peers refused, {kept} kept");
    });
}
