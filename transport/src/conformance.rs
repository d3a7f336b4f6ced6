//! The transport conformance suite: what every backend must do, generic over
//! [`Transport`].
//!
//! Each check takes a factory that makes the connected endpoints of a fresh
//! job of `n` ranks, and panics with a message when the backend breaks the
//! contract. A backend's test file instantiates the suite once:
//!
//! ```
//! use hpcomm_transport::{conformance, loopback::Loopback};
//! conformance::run_all(|n| Loopback::fabric(n, Default::default()));
//! ```
//!
//! Every wait in the suite has a deadline, so a backend that hangs fails
//! instead of stalling the test run.

use std::collections::HashSet;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::{Event, PeerId, Regions, Transport, TransportError};

/// How long any single check waits for an event before failing.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Runs every check of the suite.
pub fn run_all<T, F>(make: F)
where
    T: Transport + Send + 'static,
    F: Fn(usize) -> Vec<T>,
{
    capabilities_are_consistent(&make);
    frames_arrive_intact(&make);
    invalid_frames_and_peers_are_errors(&make);
    back_pressure_is_a_return_value(&make);
    concurrent_frames_arrive_exactly_once(&make);
    reads_copy_exposed_memory(&make);
    revoked_regions_cannot_be_read(&make);
    only_outside_readers_get_writable_regions(&make);
    writes_land_in_exposed_memory(&make);
    lost_peers_are_reported(&make);
    closing_is_polled_and_ends_in_order(&make);
}

/// A received frame, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Sender.
    pub src: PeerId,
    /// Header bytes.
    pub header: Vec<u8>,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

/// Polls `eps[watch]` until `done` says so, collecting its frames, and
/// polls the other endpoints too: `poll` is where a backend makes progress,
/// and a sender's frames may move only when it polls (libfabric providers
/// with manual progress). Panics at the deadline.
fn poll_until<T: Transport>(
    eps: &mut [T],
    watch: usize,
    regions: &Regions,
    frames: &mut Vec<Received>,
    others: &mut Vec<String>,
    mut done: impl FnMut(&[Received], &[String]) -> bool,
    what: &str,
) {
    let start = Instant::now();
    let idle = Regions::new();
    while !done(frames, others) {
        for (i, ep) in eps.iter_mut().enumerate().filter(|(i, _)| *i != watch) {
            ep.poll(&idle, &mut |ev| {
                if let Event::Frame { .. } = ev {
                    panic!("{what}: endpoint {i} got {ev:?}");
                }
            })
            .unwrap_or_else(|e| panic!("{what}: poll failed: {e}"));
        }
        let ep = &mut eps[watch];
        ep.poll(regions, &mut |ev| match ev {
            Event::Frame { src, header, payload } => {
                frames.push(Received { src, header: header.to_vec(), payload: payload.to_vec() })
            }
            Event::RmaDone { token } => others.push(format!("done {token}")),
            Event::RmaFailed { token, .. } => others.push(format!("failed {token}")),
            Event::PeerLost { peer, .. } => others.push(format!("lost {peer}")),
        })
        .unwrap_or_else(|e| panic!("{what}: poll failed: {e}"));
        if start.elapsed() > DEADLINE {
            panic!("{what}: no progress within {DEADLINE:?}");
        }
        ep.wait(Duration::from_micros(100));
    }
}

/// Sends a frame, progressing this endpoint while the backend pushes back.
fn send_blocking<T: Transport>(ep: &mut T, regions: &Regions, dst: PeerId, h: &[u8], p: &[u8]) {
    let start = Instant::now();
    let mut kept = Vec::new();
    loop {
        match ep.try_send(dst, h, p) {
            Ok(()) => break,
            Err(TransportError::WouldBlock) => {
                ep.poll(regions, &mut |ev| {
                    if let Event::Frame { src, header, payload } = ev {
                        kept.push((src, header.to_vec(), payload.to_vec()));
                    }
                })
                .expect("poll");
                assert!(kept.is_empty(), "unexpected frame while sending");
                assert!(start.elapsed() < DEADLINE, "send to {dst} never found room");
                thread::yield_now();
            }
            Err(e) => panic!("send to {dst} failed: {e}"),
        }
    }
}

/// The limits relate as the runtime expects.
pub fn capabilities_are_consistent<T: Transport>(make: &impl Fn(usize) -> Vec<T>) {
    for n in [1, 2, 3] {
        let eps = make(n);
        assert_eq!(eps.len(), n);
        for (i, ep) in eps.iter().enumerate() {
            assert_eq!(ep.peer_id(), PeerId(i as u32));
            assert_eq!(ep.peer_count(), n);
            ep.capabilities().validate().unwrap();
            for peer in 0..n as u32 {
                let caps = ep.peer_capabilities(PeerId(peer));
                caps.validate().unwrap();
                // What holds for every peer holds for each.
                let all = ep.capabilities();
                assert!(all.max_payload <= caps.max_payload && all.eager_limit <= caps.eager_limit);
                assert!(!all.rma_read || caps.rma_read);
            }
        }
    }
}

/// Frames of every size from empty to the payload limit reach every peer,
/// the sender itself included, with header and payload intact.
pub fn frames_arrive_intact<T: Transport>(make: &impl Fn(usize) -> Vec<T>) {
    let mut eps = make(2);
    let regions = [Regions::new(), Regions::new()];
    let caps = eps[0].capabilities().clone();
    let sizes = [0, 1, 7, 64, caps.inline_limit, caps.eager_limit, caps.max_payload];
    let header: Vec<u8> = (0..caps.max_header.min(64)).map(|i| i as u8 ^ 0x5a).collect();
    for dst in 0..2 {
        for &size in &sizes {
            let payload: Vec<u8> = (0..size).map(|i| (i * 31 + size) as u8).collect();
            send_blocking(&mut eps[0], &regions[0], PeerId(dst), &header, &payload);
            let mut frames = Vec::new();
            poll_until(
                &mut eps,
                dst as usize,
                &regions[dst as usize],
                &mut frames,
                &mut Vec::new(),
                |f, _| !f.is_empty(),
                "frames_arrive_intact",
            );
            assert_eq!(frames.len(), 1, "one frame sent, several received");
            assert_eq!(frames[0].src, PeerId(0));
            assert_eq!(frames[0].header, header);
            assert_eq!(frames[0].payload, payload, "payload of {size} B to peer {dst}");
        }
    }
}

/// Oversized frames (for the limits towards that peer) and unknown peers
/// are error values.
pub fn invalid_frames_and_peers_are_errors<T: Transport>(make: &impl Fn(usize) -> Vec<T>) {
    let mut eps = make(2);
    let caps = eps[0].peer_capabilities(PeerId(1)).clone();
    let readable = (0..2).any(|p| eps[0].peer_capabilities(PeerId(p)).rma_read);
    let big = vec![0u8; caps.max_payload + 1];
    assert!(matches!(
        eps[0].try_send(PeerId(1), b"h", &big),
        Err(TransportError::FrameTooLarge { .. })
    ));
    let long_header = vec![0u8; caps.max_header + 1];
    assert!(matches!(
        eps[0].try_send(PeerId(1), &long_header, b""),
        Err(TransportError::FrameTooLarge { .. })
    ));
    assert!(matches!(
        eps[0].try_send(PeerId(2), b"h", b""),
        Err(TransportError::InvalidPeer { .. })
    ));
    if !readable {
        let regions = Regions::new();
        let buf = [0u8; 8];
        regions.scope(|s| {
            let id = s.register(&buf);
            assert!(eps[0].expose(&regions, id).is_err(), "expose without rma_read");
        });
    }
}

/// A peer that does not poll makes `try_send` return `WouldBlock` (within
/// 64 MiB of unread data), never block; once it polls, sending resumes and
/// every accepted frame arrives exactly once.
pub fn back_pressure_is_a_return_value<T: Transport>(make: &impl Fn(usize) -> Vec<T>) {
    let mut eps = make(2);
    let regions = [Regions::new(), Regions::new()];
    let size = 1024.min(eps[0].capabilities().max_payload);
    let payload = vec![0xabu8; size];
    let mut accepted = 0u64;
    let mut pushed_back = false;
    while (accepted as usize) * size < 64 << 20 {
        let started = Instant::now();
        let r = eps[0].try_send(PeerId(1), &accepted.to_le_bytes(), &payload);
        assert!(started.elapsed() < Duration::from_secs(5), "try_send blocked");
        match r {
            Ok(()) => accepted += 1,
            Err(TransportError::WouldBlock) => {
                pushed_back = true;
                break;
            }
            Err(e) => panic!("unexpected error under load: {e}"),
        }
    }
    assert!(pushed_back, "no back-pressure after {accepted} unread frames");
    // Drain, then check sending works again. The sender polls too: a
    // backend may keep accepted bytes queued until its own `poll` (tcp's
    // user-space send buffer), since `poll` is where a backend progresses.
    let mut frames = Vec::new();
    let want = accepted as usize;
    let start = Instant::now();
    while frames.len() < want {
        let (sender, receiver) = eps.split_at_mut(1);
        sender[0].poll(&regions[0], &mut |ev| panic!("the sender got {ev:?}")).expect("poll");
        receiver[0]
            .poll(&regions[1], &mut |ev| {
                if let Event::Frame { src, header, payload } = ev {
                    frames.push(Received {
                        src,
                        header: header.to_vec(),
                        payload: payload.to_vec(),
                    })
                }
            })
            .expect("poll");
        assert!(start.elapsed() < DEADLINE, "drain: {} of {want} frames", frames.len());
    }
    send_blocking(&mut eps[0], &regions[0], PeerId(1), &u64::MAX.to_le_bytes(), &payload);
    poll_until(
        &mut eps,
        1,
        &regions[1],
        &mut frames,
        &mut Vec::new(),
        |f, _| f.len() > want,
        "after back-pressure",
    );
    let seen: HashSet<Vec<u8>> = frames.iter().map(|f| f.header.clone()).collect();
    assert_eq!(seen.len(), frames.len(), "a frame arrived twice");
    assert_eq!(frames.len(), want + 1);
}

/// Every endpoint sends numbered frames to every other from its own thread;
/// each arrives exactly once, and in order where the backend says it keeps
/// order.
pub fn concurrent_frames_arrive_exactly_once<T, F>(make: &F)
where
    T: Transport + Send + 'static,
    F: Fn(usize) -> Vec<T>,
{
    const N: usize = 4;
    const PER_PEER: u32 = 2000;
    let eps = make(N);
    let ordered = eps[0].capabilities().ordered;
    let handles: Vec<_> = eps
        .into_iter()
        .map(|mut ep| {
            thread::spawn(move || {
                let regions = Regions::new();
                let me = ep.peer_id();
                let mut frames = Vec::new();
                let expected = (N as u32 * PER_PEER) as usize;
                let start = Instant::now();
                let mut next = [0u32; N];
                while frames.len() < expected || next.iter().any(|&n| n < PER_PEER) {
                    for (dst, next) in next.iter_mut().enumerate() {
                        if *next < PER_PEER {
                            let seq = *next;
                            let payload = [me.0 as u8; 16];
                            match ep.try_send(
                                PeerId(dst as u32),
                                &seq.to_le_bytes(),
                                &payload[..(seq % 17) as usize],
                            ) {
                                Ok(()) => *next += 1,
                                Err(TransportError::WouldBlock) => {}
                                Err(e) => panic!("send failed: {e}"),
                            }
                        }
                    }
                    ep.poll(&regions, &mut |ev| {
                        if let Event::Frame { src, header, payload } = ev {
                            frames.push(Received {
                                src,
                                header: header.to_vec(),
                                payload: payload.to_vec(),
                            });
                        }
                    })
                    .expect("poll");
                    assert!(start.elapsed() < DEADLINE, "peer {me}: stalled");
                    thread::yield_now();
                }
                frames
            })
        })
        .collect();
    for handle in handles {
        let frames = handle.join().expect("endpoint thread panicked");
        let mut last = [None::<u32>; N];
        let mut seen = HashSet::new();
        for f in &frames {
            let seq = u32::from_le_bytes(f.header[..4].try_into().unwrap());
            assert!(seen.insert((f.src, seq)), "frame {seq} from {} twice", f.src);
            assert_eq!(f.payload.len(), (seq % 17) as usize);
            assert!(f.payload.iter().all(|&b| b == f.src.0 as u8), "payload corrupted");
            if ordered {
                let prev = last[f.src.index()].replace(seq);
                assert_eq!(prev.map_or(0, |p| p + 1), seq, "out of order from {}", f.src);
            }
        }
        assert_eq!(seen.len(), N * PER_PEER as usize);
    }
}

/// Where `rma_read` is offered: a peer reads an exposed buffer, whole and in
/// parts at offsets, and gets exactly its bytes.
pub fn reads_copy_exposed_memory<T, F>(make: &F)
where
    T: Transport + Send + 'static,
    F: Fn(usize) -> Vec<T>,
{
    let mut eps = make(2);
    if !eps[1].peer_capabilities(PeerId(0)).rma_read {
        return;
    }
    let mut reader = eps.pop().unwrap();
    let mut owner = eps.pop().unwrap();
    let (key_tx, key_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let owner_thread = thread::spawn(move || {
        let regions = Regions::new();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        regions.scope(|s| {
            let id = s.register(&data);
            key_tx.send(owner.expose(&regions, id).expect("expose")).unwrap();
            // Keep progressing (as the runtime would) until the reader is done.
            let start = Instant::now();
            while done_rx.try_recv().is_err() {
                owner.poll(&regions, &mut |_| {}).expect("poll");
                assert!(start.elapsed() < DEADLINE, "reader never finished");
                thread::yield_now();
            }
        });
        owner
    });
    let key = key_rx.recv_timeout(DEADLINE).expect("no key");
    let regions = Regions::new();
    let mut dst = vec![0u8; 100_000];
    regions.scope(|s| {
        let id = s.register_mut(&mut dst);
        reader.start_read(&regions, PeerId(0), key, 0, id, 0, 60_000, 1).expect("read");
        reader.start_read(&regions, PeerId(0), key, 60_000, id, 60_000, 40_000, 2).expect("read");
        let mut others = Vec::new();
        poll_until(
            std::slice::from_mut(&mut reader),
            0,
            &regions,
            &mut Vec::new(),
            &mut others,
            |_, o| o.len() >= 2,
            "reads",
        );
        others.sort();
        assert_eq!(others, vec!["done 1".to_string(), "done 2".to_string()]);
    });
    done_tx.send(()).unwrap();
    let expected: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    assert!(dst == expected, "read returned wrong bytes");
    drop(owner_thread.join().expect("owner panicked"));
}

/// Where `rma_write` is offered: a peer writes into an exposed writable
/// buffer, in parts at offsets, and exactly its bytes land there once the
/// writes are reported done; the rest of the buffer is untouched.
pub fn writes_land_in_exposed_memory<T, F>(make: &F)
where
    T: Transport + Send + 'static,
    F: Fn(usize) -> Vec<T>,
{
    const LEN: usize = 100_000;
    let mut eps = make(2);
    if !eps[1].peer_capabilities(PeerId(0)).rma_write {
        return;
    }
    let mut writer = eps.pop().unwrap();
    let mut owner = eps.pop().unwrap();
    let (key_tx, key_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let owner_thread = thread::spawn(move || {
        let regions = Regions::new();
        let mut window = vec![0u8; LEN + 16];
        regions.scope(|s| {
            let id = s.register_mut(&mut window);
            key_tx.send(owner.expose(&regions, id).expect("expose")).unwrap();
            let start = Instant::now();
            while done_rx.try_recv().is_err() {
                owner.poll(&regions, &mut |_| {}).expect("poll");
                assert!(start.elapsed() < DEADLINE, "writer never finished");
                thread::yield_now();
            }
        });
        (owner, window)
    });
    let key = key_rx.recv_timeout(DEADLINE).expect("no key");
    let regions = Regions::new();
    let data: Vec<u8> = (0..LEN as u32).map(|i| (i % 251) as u8 | 1).collect();
    regions.scope(|s| {
        let id = s.register(&data);
        writer.start_write(&regions, id, 0, PeerId(0), key, 8, 60_000, 1).expect("write");
        writer
            .start_write(&regions, id, 60_000, PeerId(0), key, 60_008, LEN - 60_000, 2)
            .expect("write");
        let mut others = Vec::new();
        poll_until(
            std::slice::from_mut(&mut writer),
            0,
            &regions,
            &mut Vec::new(),
            &mut others,
            |_, o| o.len() >= 2,
            "writes",
        );
        others.sort();
        assert_eq!(others, vec!["done 1".to_string(), "done 2".to_string()]);
    });
    done_tx.send(()).unwrap();
    let (_owner, window) = owner_thread.join().expect("owner panicked");
    assert_eq!(window[..8], [0; 8], "a write landed before its offset");
    assert!(window[8..LEN + 8] == data[..], "writes landed wrong bytes");
    assert_eq!(window[LEN + 8..], [0; 8], "a write landed past its end");
}

/// Where the backend says reads are revocable: once a region leaves its
/// table, reading it fails with an event (or an error from `start_read`); it
/// never returns stale memory.
pub fn revoked_regions_cannot_be_read<T: Transport>(make: &impl Fn(usize) -> Vec<T>) {
    let mut eps = make(2);
    let caps = eps[1].peer_capabilities(PeerId(0));
    if !caps.rma_read || !caps.revocable {
        return;
    }
    let regions = [Regions::new(), Regions::new()];
    let data = [9u8; 32];
    let key = regions[0].scope(|s| {
        let id = s.register(&data);
        eps[0].expose(&regions[0], id).expect("expose")
    });
    let mut dst = [0u8; 32];
    regions[1].scope(|s| {
        let id = s.register_mut(&mut dst);
        match eps[1].start_read(&regions[1], PeerId(0), key, 0, id, 0, 32, 7) {
            Err(_) => {}
            Ok(()) => {
                let mut others = Vec::new();
                poll_until(
                    &mut eps,
                    1,
                    &regions[1],
                    &mut Vec::new(),
                    &mut others,
                    |_, o| !o.is_empty(),
                    "revoked read",
                );
                assert_eq!(others, vec!["failed 7".to_string()]);
            }
        }
    });
    assert_eq!(dst, [0u8; 32], "a revoked region was read");
}

/// Read-only regions can be exposed; writable ones only where peers read
/// from outside the process (`reads_from_outside`: kernel or NIC copies).
/// Read in-process (another thread's copy), a writable one could be written
/// (a receive, a read landing in it) while a peer reads it — a data race.
pub fn only_outside_readers_get_writable_regions<T: Transport>(make: &impl Fn(usize) -> Vec<T>) {
    let mut eps = make(2);
    if !eps[0].capabilities().rma_read {
        return;
    }
    let outside = eps[0].capabilities().reads_from_outside;
    let regions = Regions::new();
    let mut buf = [0u8; 64];
    let owned = regions.insert_owned(vec![0; 64]);
    regions.scope(|s| {
        let id = s.register_mut(&mut buf);
        for region in [id, owned] {
            match (eps[0].expose(&regions, region), outside) {
                (Err(TransportError::InvalidRegion), false) | (Ok(_), true) => {}
                (other, _) => panic!("writable region, reads from outside {outside}: {other:?}"),
            }
        }
    });
    let frozen = regions.insert_owned_read_only(vec![1; 64]);
    eps[0].expose(&regions, frozen).expect("a read-only owned region is exposed");
    regions.release(frozen);
    regions.release(owned);
}

/// A peer that goes away is reported once, after every frame it sent; sends
/// to it then fail with `PeerLost`.
pub fn lost_peers_are_reported<T: Transport>(make: &impl Fn(usize) -> Vec<T>) {
    let mut eps = make(3);
    let regions = Regions::new();
    let mut leaving = eps.pop().unwrap();
    send_blocking(&mut leaving, &Regions::new(), PeerId(0), b"last words", b"bye");
    drop(leaving);
    let mut frames = Vec::new();
    let mut others = Vec::new();
    poll_until(&mut eps, 0, &regions, &mut frames, &mut others, |_, o| !o.is_empty(), "peer loss");
    assert_eq!(others, vec!["lost 2".to_string()]);
    assert_eq!(frames.len(), 1, "the lost peer's last frame must arrive first");
    assert_eq!(frames[0].header, b"last words");
    let start = Instant::now();
    loop {
        match eps[0].try_send(PeerId(2), b"h", b"p") {
            Err(TransportError::PeerLost(PeerId(2))) => break,
            Err(TransportError::WouldBlock) if start.elapsed() < DEADLINE => thread::yield_now(),
            other => panic!("send to a lost peer gave {other:?}"),
        }
    }
    // Polling again reports nothing new.
    others.clear();
    eps[0].poll(&regions, &mut |ev| others.push(format!("{ev:?}"))).unwrap();
    assert!(others.is_empty(), "peer loss reported twice: {others:?}");
}

/// Closing is a step the caller takes between rounds of progress
/// ([`Transport::close`]) while the peers make progress too: it finishes
/// in bounded time, stays finished, lets
/// the frames sent before it arrive, and a peer then sees an orderly end;
/// dropping a closed endpoint has nothing left to wait for.
pub fn closing_is_polled_and_ends_in_order<T: Transport>(make: &impl Fn(usize) -> Vec<T>) {
    let mut eps = make(3);
    let regions = Regions::new();
    let mut leaving = eps.pop().unwrap();
    send_blocking(&mut leaving, &Regions::new(), PeerId(0), b"before close", b"x");
    let start = Instant::now();
    let (mut frames, mut others) = (Vec::new(), Vec::new());
    while !leaving.close() {
        leaving.poll(&regions, &mut |_| {}).expect("poll");
        for (i, ep) in eps.iter_mut().enumerate() {
            ep.poll(&regions, &mut |ev| match ev {
                Event::Frame { src, header, payload } => frames.push(Received {
                    src,
                    header: header.to_vec(),
                    payload: payload.to_vec(),
                }),
                Event::PeerLost { peer, .. } if i == 0 => others.push(format!("lost {peer}")),
                _ => {}
            })
            .expect("poll");
        }
        assert!(start.elapsed() < DEADLINE, "close did not finish within {DEADLINE:?}");
        thread::yield_now();
    }
    assert!(leaving.close(), "a closed endpoint must stay closed");
    let dropped = Instant::now();
    drop(leaving);
    assert!(
        dropped.elapsed() < Duration::from_secs(1),
        "dropping a closed endpoint took {:?}",
        dropped.elapsed()
    );
    poll_until(&mut eps, 0, &regions, &mut frames, &mut others, |_, o| !o.is_empty(), "close");
    assert_eq!(others, vec!["lost 2".to_string()]);
    assert_eq!(frames.len(), 1, "the frame sent before closing must arrive, once");
    assert_eq!(frames[0].header, b"before close");
}
