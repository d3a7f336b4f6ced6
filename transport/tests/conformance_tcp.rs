//! The transport conformance suite over the TCP backend on the loopback
//! interface: one connection per pair, the default two, and four stripes
//! with small frames so that striping (and the reordering it allows) is
//! exercised.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use hpcomm_transport::conformance::{self, DEADLINE};
use hpcomm_transport::tcp::{Tcp, TcpConfig};
use hpcomm_transport::Transport;

fn config() -> TcpConfig {
    TcpConfig { secret: "conformance".into(), ..TcpConfig::default() }
}

#[test]
fn tcp_one_connection_per_pair() {
    conformance::run_all(|n| {
        Tcp::local_job(n, &TcpConfig { stripes: 1, ..config() }).expect("tcp job")
    });
}

#[test]
fn tcp_default_stripes() {
    assert_eq!(config().stripes, 2);
    conformance::run_all(|n| Tcp::local_job(n, &config()).expect("tcp job"));
}

#[test]
fn tcp_four_stripes() {
    conformance::run_all(|n| {
        Tcp::local_job(
            n,
            &TcpConfig { stripes: 4, eager_limit: 1024, max_payload: 128 << 10, ..config() },
        )
        .expect("tcp job")
    });
}

/// The suite with at most one open connection per rank: every change of
/// peer closes a connection and opens another, and nothing may be lost or
/// reordered across it.
#[test]
fn tcp_with_one_open_connection() {
    conformance::run_all(|n| {
        Tcp::local_job(n, &TcpConfig { max_conns: Some(1), ..config() }).expect("tcp job")
    });
}

/// Strangers knocking while a job sets up — random bytes, a half handshake
/// that then says nothing, a wrong secret — are refused; the ranks still
/// connect and frames flow.
#[test]
fn strangers_are_refused_during_set_up() {
    use std::io::Write;
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    use hpcomm_transport::exchange::{Exchange, Local};
    use hpcomm_transport::{Event, PeerId, Regions, Transport};

    let ranks = 3;
    let exchange = Local::new(ranks);
    let config = config();
    let eps = std::thread::scope(|s| {
        let open = |me: usize| {
            let mut exchange = exchange.clone();
            let config = config.clone();
            s.spawn(move || Tcp::open(me, ranks, &mut exchange, &config).expect("set up"))
        };
        // Ranks 1 and 2 start listening; rank 0 comes only after the
        // stranger, so rank 2 meets the stranger's connections first.
        let late = [open(1), open(2)];
        // The stranger reads rank 2's published address, as anyone on the
        // network could find the port, and knocks three times.
        let mut spy = exchange.clone();
        let addr = String::from_utf8(spy.get("tcp-2").unwrap()).unwrap();
        let knock = |bytes: &[u8]| {
            let mut c = TcpStream::connect(&addr).expect("the listener is up");
            c.write_all(bytes).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        };
        knock(b"GET / HTTP/1.0\r\n\r\n\x00\x01\x02\x03");
        knock(b"HPCTCP01");
        let mut wrong = b"HPCTCP01".to_vec();
        wrong.extend_from_slice(&0u32.to_le_bytes());
        wrong.extend_from_slice(&0u32.to_le_bytes());
        wrong.extend_from_slice(&5u32.to_le_bytes());
        wrong.extend_from_slice(b"guess");
        knock(&wrong);
        let first = open(0);
        let mut eps = vec![first.join().unwrap()];
        eps.extend(late.into_iter().map(|h| h.join().unwrap()));
        eps
    });
    let mut eps = eps;
    let regions = Regions::new();
    eps[0].try_send(PeerId(2), b"hello", b"world").unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    while got.is_empty() {
        eps[0].poll(&regions, &mut |_| {}).unwrap();
        eps[2]
            .poll(&regions, &mut |ev| {
                if let Event::Frame { src, header, payload } = ev {
                    got.push((src, header.to_vec(), payload.to_vec()));
                }
            })
            .unwrap();
        assert!(start.elapsed() < Duration::from_secs(10), "no frame after the strangers");
    }
    assert_eq!(got, vec![(PeerId(0), b"hello".to_vec(), b"world".to_vec())]);
}

/// A stranger that trickles its handshake a byte every 1.9 s, and a crowd
/// that connects and says nothing, do not hold set-up: the ranks connect
/// within a second.
#[test]
fn trickling_strangers_do_not_hold_set_up() {
    use std::io::Write;
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    use hpcomm_transport::exchange::{Exchange, Local};

    let ranks = 2;
    let exchange = Local::new(ranks);
    let config = config();
    let started = std::thread::scope(|s| {
        let open = |me: usize| {
            let mut exchange = exchange.clone();
            let config = config.clone();
            s.spawn(move || Tcp::open(me, ranks, &mut exchange, &config).expect("set up"))
        };
        let late = open(1);
        let mut spy = exchange.clone();
        let addr = String::from_utf8(spy.get("tcp-1").unwrap()).unwrap();
        let mut crowd: Vec<TcpStream> =
            (0..100).map(|_| TcpStream::connect(&addr).expect("the listener is up")).collect();
        let mut trickle = TcpStream::connect(&addr).unwrap();
        s.spawn(move || {
            for &b in b"HPCTCP01\0\0\0\0" {
                if trickle.write_all(&[b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1900));
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        let start = Instant::now();
        let first = open(0);
        first.join().unwrap();
        late.join().unwrap();
        crowd.clear();
        start.elapsed()
    });
    assert!(started < Duration::from_secs(1), "set-up took {started:?}");
}

/// A peer of the job (it knows the secret) that announces a 4 GiB payload is
/// lost at once; nothing is allocated for the frame.
#[test]
fn a_payload_longer_than_the_limit_loses_its_peer() {
    use std::io::Write;
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    use hpcomm_transport::exchange::{Exchange, Local};
    use hpcomm_transport::tcp::handshake;
    use hpcomm_transport::{Event, LossCause, PeerId, Regions, Transport};

    let exchange = Local::new(2);
    let config = config();
    let (mut rank0, mut fake) = std::thread::scope(|s| {
        let mut ex0 = exchange.clone();
        let cfg = config.clone();
        let rank0 = s.spawn(move || Tcp::open(0, 2, &mut ex0, &cfg).expect("set up"));
        // Rank 1, by hand: it publishes an address, and connects to rank 0
        // with a good handshake when it first sends.
        let mut ex1 = exchange.clone();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        ex1.put("tcp-1", listener.local_addr().unwrap().to_string().as_bytes()).unwrap();
        ex1.fence().unwrap();
        let addr = String::from_utf8(ex1.get("tcp-0").unwrap()).unwrap();
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.write_all(&handshake::encode(1, 0, &config.secret)).unwrap();
        // The sync marker that precedes a rank's first frame: its first set
        // of connections.
        conn.write_all(&[0, 0, 0xa0, 0x7c, 1, 0, 0, 0]).unwrap();
        (rank0.join().unwrap(), conn)
    });
    // Header length 16, the marker, a payload of 4 GiB - 1.
    let mut prefix = 16u16.to_le_bytes().to_vec();
    prefix.extend_from_slice(&0x7c9eu16.to_le_bytes());
    prefix.extend_from_slice(&u32::MAX.to_le_bytes());
    fake.write_all(&prefix).unwrap();
    fake.write_all(&[0; 16]).unwrap();
    let regions = Regions::new();
    let start = Instant::now();
    let mut lost = None;
    while lost.is_none() {
        rank0
            .poll(&regions, &mut |ev| {
                if let Event::PeerLost { peer, cause } = ev {
                    lost = Some((peer, cause));
                }
            })
            .unwrap();
        assert!(start.elapsed() < Duration::from_secs(10), "the peer was not lost");
    }
    assert_eq!(lost, Some((PeerId(1), LossCause::Protocol)));
    drop(fake);
}

/// A largest payload the 32-bit length on the wire cannot carry is a set-up
/// error, not a length silently cut to its low 32 bits.
#[test]
fn a_payload_limit_beyond_32_bits_is_refused() {
    let config = TcpConfig { max_payload: 5 << 30, ..config() };
    match Tcp::local_job(2, &config) {
        Err(e) => assert!(e.to_string().contains("32-bit"), "{e}"),
        Ok(_) => panic!("a 5 GiB frame payload was accepted"),
    }
}

/// What a test keeps of an event.
#[derive(Debug, PartialEq)]
enum Seen {
    Frame { src: usize, header: Vec<u8>, payload: Vec<u8> },
    Lost(usize, hpcomm_transport::LossCause),
}

/// Polls `ep` at least once and then until `done` (given the endpoint and
/// everything seen so far) says so; fails the test after 30 s instead of
/// hanging.
fn drive(ep: &mut Tcp, what: &str, mut done: impl FnMut(&mut Tcp, &[Seen]) -> bool) -> Vec<Seen> {
    use hpcomm_transport::Event;
    let regions = hpcomm_transport::Regions::new();
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        ep.poll(&regions, &mut |ev| match ev {
            Event::Frame { src, header, payload } => seen.push(Seen::Frame {
                src: src.index(),
                header: header.to_vec(),
                payload: payload.to_vec(),
            }),
            Event::PeerLost { peer, cause } => seen.push(Seen::Lost(peer.index(), cause)),
            other => panic!("{what}: {other:?}"),
        })
        .unwrap();
        if done(ep, &seen) {
            return seen;
        }
        if start.elapsed() > DEADLINE {
            let mut frames = std::collections::BTreeMap::<usize, usize>::new();
            for s in &seen {
                if let Seen::Frame { src, .. } = s {
                    *frames.entry(*src).or_default() += 1;
                }
            }
            panic!("rank {}: {what}: timed out; frames from each source {frames:?}", ep.peer_id());
        }
        std::thread::yield_now();
    }
}

/// Sends a frame to `dst`, polling (into `seen`) while the backend pushes
/// back; fails the test after 30 s instead of hanging.
fn send(ep: &mut Tcp, dst: usize, header: &[u8], payload: &[u8], seen: &mut Vec<Seen>) {
    use hpcomm_transport::{PeerId, TransportError};
    let start = Instant::now();
    loop {
        match ep.try_send(PeerId(dst as u32), header, payload) {
            Ok(()) => return,
            Err(TransportError::WouldBlock) => seen.extend(drive(ep, "room", |_, _| true)),
            Err(e) => panic!("rank {} to {dst}: {e}", ep.peer_id()),
        }
        assert!(start.elapsed() < DEADLINE, "rank {} to {dst}: no room", ep.peer_id());
    }
}

/// A barrier for the ranks of a threaded test that fails instead of
/// hanging: when a rank has panicked, or after [`DEADLINE`].
struct Gate {
    ranks: usize,
    arrived: AtomicUsize,
    failed: AtomicBool,
}

impl Gate {
    /// Waits for every rank's `k`-th call (counting from 1), polling `ep`
    /// meanwhile: what it queued may still need its progress to leave (a
    /// connection still being made), and nothing more may arrive.
    fn meet(&self, k: usize, ep: &mut Tcp) {
        let me = ep.peer_id();
        let regions = hpcomm_transport::Regions::new();
        self.wait_with(k, || {
            ep.poll(&regions, &mut |ev| panic!("rank {me}: {ev:?} at the gate")).unwrap();
        });
    }

    /// Waits for every rank's `k`-th call without polling: the last, after
    /// which the endpoints are dropped.
    fn wait(&self, k: usize) {
        self.wait_with(k, || {});
    }

    fn wait_with(&self, k: usize, mut meanwhile: impl FnMut()) {
        self.arrived.fetch_add(1, Ordering::AcqRel);
        let start = Instant::now();
        while self.arrived.load(Ordering::Acquire) < k * self.ranks {
            assert!(!self.failed.load(Ordering::Acquire), "another rank failed");
            assert!(start.elapsed() < DEADLINE, "the other ranks never came");
            meanwhile();
            std::thread::yield_now();
        }
    }
}

/// Runs `body` on a thread per endpoint, each with the job's [`Gate`]; a
/// rank that panics opens the gate for the others, so that the test fails
/// with its message instead of hanging.
fn each_rank(eps: Vec<Tcp>, body: impl Fn(Tcp, &Gate) + Sync) {
    struct Guard<'a>(&'a Gate);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.0.failed.store(true, Ordering::Release);
            }
        }
    }
    let gate =
        Gate { ranks: eps.len(), arrived: AtomicUsize::new(0), failed: AtomicBool::new(false) };
    std::thread::scope(|s| {
        for ep in eps {
            let (gate, body) = (&gate, &body);
            s.spawn(move || {
                let _guard = Guard(gate);
                body(ep, gate);
            });
        }
    });
}

/// Every rank sends to every other at once, before anyone has a
/// connection: every pair races to connect. Every frame arrives, each
/// direction in order, and no pair ends up with more than one set of
/// connections per direction.
#[test]
fn every_rank_sends_to_every_other_at_once() {
    const RANKS: usize = 8;
    const FRAMES: u32 = 50;
    let eps = Tcp::local_job(RANKS, &config()).expect("tcp job");
    each_rank(eps, |mut ep, gate| {
        let me = ep.peer_id().index();
        gate.wait(1);
        let mut seen = Vec::new();
        for seq in 0..FRAMES {
            for dst in (0..RANKS).filter(|&d| d != me) {
                send(&mut ep, dst, &seq.to_le_bytes(), b"x", &mut seen);
            }
        }
        let expected = (RANKS - 1) * FRAMES as usize;
        let have = seen.len();
        seen.extend(drive(&mut ep, "all frames", |_, s| have + s.len() >= expected));
        assert_eq!(seen.len(), expected, "rank {me}");
        let mut next = [0u32; RANKS];
        for s in seen {
            let Seen::Frame { src, header, .. } = s else { panic!("rank {me}: {s:?}") };
            let seq = u32::from_le_bytes(header.try_into().unwrap());
            assert_eq!(seq, next[src], "rank {me}: out of order from {src}");
            next[src] += 1;
        }
        // Every pair talked both ways: one set of connections each way at
        // most, and at least one between every pair.
        let conns = ep.connections();
        let set = config().stripes;
        assert!(
            (set * (RANKS - 1)..=2 * set * (RANKS - 1)).contains(&conns),
            "rank {me} has {conns} connections"
        );
        gate.meet(2, &mut ep);
        gate.wait(3);
    });
}

/// Half the ranks send first; the others answer only once they have heard
/// from every sender, so they reply on the connections they accepted: one
/// set of connections per pair, made by the sender — with several stripes
/// too, where a replier may hear a sender's first frame before the rest of
/// its set has come, and must wait for it rather than dial a set of its own.
#[test]
fn half_the_ranks_send_first() {
    for stripes in [1, 2, 4] {
        half_the_ranks_send_first_over(stripes);
    }
}

fn half_the_ranks_send_first_over(stripes: usize) {
    use hpcomm_transport::PeerId;
    const RANKS: usize = 6;
    let eps = Tcp::local_job(RANKS, &TcpConfig { stripes, ..config() }).expect("tcp job");
    each_rank(eps, |mut ep, gate| {
        let me = ep.peer_id().index();
        let first = me % 2 == 0;
        let others: Vec<usize> = (0..RANKS).filter(|&r| r % 2 != me % 2).collect();
        if first {
            for &dst in &others {
                ep.try_send(PeerId(dst as u32), b"hello", &[me as u8]).unwrap();
            }
        }
        let mut seen = drive(&mut ep, "frames", |_, seen| seen.len() >= others.len());
        if !first {
            // Every sender's first frame is in: reply, on their connections
            // once each set is whole.
            for &dst in &others {
                send(&mut ep, dst, b"reply", &[me as u8], &mut seen);
            }
        }
        let mut heard: Vec<usize> = seen
            .into_iter()
            .map(|s| {
                let Seen::Frame { src, header, payload } = s else { panic!("{s:?}") };
                assert_eq!(payload, [src as u8]);
                assert_eq!(header, if first { &b"reply"[..] } else { &b"hello"[..] });
                src
            })
            .collect();
        heard.sort();
        assert_eq!(heard, others, "rank {me}, {stripes} stripes");
        // The repliers used the senders' connections.
        assert_eq!(ep.connections(), others.len() * stripes, "rank {me}, {stripes} stripes");
        gate.meet(1, &mut ep);
        gate.wait(2);
    });
}

/// A peer that is gone before anyone connected to it: the first send to it
/// finds nobody listening, and the peer is reported lost as ended, with no
/// hang and no panic; the others are unaffected.
#[test]
fn a_peer_lost_before_its_connection_is_reported() {
    use hpcomm_transport::{LossCause, PeerId, Transport, TransportError};
    let mut eps = Tcp::local_job(3, &config()).expect("tcp job");
    drop(eps.pop());
    let mut ep = eps.remove(0);
    let mut other = eps.remove(0);
    ep.try_send(PeerId(2), b"to the gone", b"")
        .or_else(|e| match e {
            TransportError::PeerLost(_) => Ok(()),
            e => Err(e),
        })
        .unwrap();
    ep.try_send(PeerId(1), b"to the living", b"").unwrap();
    let seen = drive(&mut ep, "the loss", |_, seen| !seen.is_empty());
    assert_eq!(seen, [Seen::Lost(2, LossCause::Ended)]);
    assert_eq!(ep.try_send(PeerId(2), b"again", b""), Err(TransportError::PeerLost(PeerId(2))));
    let seen = drive(&mut other, "the living", |_, seen| !seen.is_empty());
    assert_eq!(seen, [Seen::Frame { src: 0, header: b"to the living".to_vec(), payload: vec![] }]);
}

/// Six ranks each send to all others in turn, with at most two open
/// connections per rank: connections are closed and made again all the
/// time, by both ends, while frames flow both ways. Every frame arrives,
/// each pair's in order, and no rank ever holds more than the cap open.
#[test]
fn a_connection_cap_closes_and_reopens_without_loss() {
    const RANKS: usize = 6;
    const ROUNDS: u32 = 30;
    // Two peers' sets of connections.
    let cap = 2 * config().stripes;
    let eps = Tcp::local_job(RANKS, &TcpConfig { max_conns: Some(cap), ..config() }).expect("job");
    each_rank(eps, |mut ep, gate| {
        let me = ep.peer_id().index();
        let mut seen = Vec::new();
        for round in 0..ROUNDS {
            for k in 1..RANKS {
                let dst = (me + k) % RANKS;
                send(&mut ep, dst, &round.to_le_bytes(), &[7; 300], &mut seen);
                seen.extend(drive(&mut ep, "progress", |_, _| true));
                let open = ep.open_connections();
                assert!(open <= cap, "rank {me} has {open} open connections");
            }
        }
        let expected = (RANKS - 1) * ROUNDS as usize;
        let have = seen.len();
        seen.extend(drive(&mut ep, "all frames", |_, s| have + s.len() >= expected));
        let mut next = [0u32; RANKS];
        for s in &seen {
            let Seen::Frame { src, header, payload } = s else { panic!("rank {me}: {s:?}") };
            assert_eq!(payload.len(), 300);
            let round = u32::from_le_bytes(header[..].try_into().unwrap());
            assert_eq!(round, next[*src], "rank {me}: out of order from {src}");
            next[*src] += 1;
        }
        assert_eq!(seen.len(), expected, "rank {me}");
        gate.meet(1, &mut ep);
        gate.wait(2);
    });
}
