//! The transport conformance suite over libfabric (Debian's libfabric1):
//! `tcp;ofi_rxm` (reads through FI_RMA), `shm`, and `udp;ofi_rxd`, which
//! like EFA's SRD builds reliable delivery over unreliable datagrams; and
//! runs that act as if the provider had asked for EFA's `mr_mode` bits.

use hpcomm_transport::conformance;
use hpcomm_transport::ofi::{Ofi, OfiConfig};

/// One libfabric job at a time in this process: libfabric 1.17 crashes
/// when several jobs' endpoints open and close concurrently in one process
/// (each rank of a real job is a process of its own).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn suite(provider: &str, efa_mr_mode: bool) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let config = OfiConfig { provider: Some(provider.into()), efa_mr_mode, ..OfiConfig::default() };
    conformance::run_all(|n| {
        Ofi::local_job(n, &config).unwrap_or_else(|e| panic!("{provider}: {e}"))
    });
}

#[test]
fn ofi_tcp_rxm() {
    suite("tcp;ofi_rxm", false);
}

/// `tcp;ofi_rxm` as a provider without reads: the backend offers no
/// single-copy rendezvous, and `expose` is an error.
#[test]
fn ofi_tcp_rxm_without_reads() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let config =
        OfiConfig { provider: Some("tcp;ofi_rxm".into()), reads: false, ..OfiConfig::default() };
    conformance::run_all(|n| Ofi::local_job(n, &config).expect("tcp;ofi_rxm job"));
}

#[test]
fn ofi_shm() {
    suite("shm", false);
}

#[test]
fn ofi_udp_rxd() {
    suite("udp;ofi_rxd", false);
}

#[test]
fn ofi_tcp_rxm_with_efa_mr_mode() {
    suite("tcp;ofi_rxm", true);
}

#[test]
fn ofi_shm_with_efa_mr_mode() {
    suite("shm", true);
}

/// A provider that does not exist is a clear set-up error.
#[test]
fn an_unknown_provider_is_a_clear_error() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let config = OfiConfig { provider: Some("no-such-provider".into()), ..OfiConfig::default() };
    let e = Ofi::local_job(2, &config).unwrap_err().to_string();
    assert!(e.contains("no RDM provider \"no-such-provider\""), "{e}");
}

/// A peer address that cannot go into the address vector is a set-up
/// error that names the rank.
#[test]
fn a_bad_peer_address_is_a_clear_error() {
    use hpcomm_transport::exchange::{Exchange, Local};
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let config = OfiConfig { provider: Some("tcp;ofi_rxm".into()), ..OfiConfig::default() };
    for (bad, says) in [
        // One NIC, whose name is 3 bytes long.
        (&[1, 3, 0, b'b', b'a', b'd'][..], "rank 0 published an address of 3 bytes for NIC 0"),
        // Lists that do not parse.
        (&b"bad"[..], "published 98 NICs"),
        (&[0][..], "published 0 NICs"),
        (&[2, 16, 0][..], "truncated"),
        (&[][..], "published no address"),
    ] {
        let exchange = Local::new(2);
        let mut impostor = exchange.clone();
        let bad = bad.to_vec();
        let fake = std::thread::spawn(move || {
            impostor.put("ofi-0", &bad).unwrap();
            let _ = impostor.fence();
        });
        let mut mine = exchange.clone();
        let e = Ofi::open(1, 2, &mut mine, &config).unwrap_err().to_string();
        exchange.abort("done");
        fake.join().unwrap();
        assert!(e.contains(says), "{says}: {e}");
    }
}

/// Two NICs (this host's first interface and loopback, as two tcp
/// domains): the whole suite, and frames of 16 KiB and more taking the
/// rails in turn while small ones keep to the first.
#[test]
fn ofi_tcp_rxm_over_two_nics() {
    use hpcomm_transport::ofi::Nics;
    use hpcomm_transport::{PeerId, Regions, Transport};

    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let config = OfiConfig {
        provider: Some("tcp;ofi_rxm".into()),
        nics: Nics::Count(2),
        ..OfiConfig::default()
    };
    {
        let mut job = Ofi::local_job(2, &config).expect("tcp;ofi_rxm job");
        let nics: Vec<String> = job[0].nics().iter().map(|s| s.to_string()).collect();
        assert_eq!(nics.len(), 2, "this test needs two tcp domains (interfaces): {nics:?}");
        // Several rails stream the rendezvous, so that it is striped.
        assert!(!job[0].capabilities().rma_read);
        let before = job[0].frames_per_nic();
        let big = vec![7u8; 32 << 10];
        for i in 0..40u8 {
            let payload: &[u8] = if i % 2 == 0 { &big } else { &[5, 5, 5] };
            loop {
                match job[0].try_send(PeerId(1), &[i], payload) {
                    Ok(()) => break,
                    Err(hpcomm_transport::TransportError::WouldBlock) => {
                        let regions = Regions::new();
                        for t in job.iter_mut() {
                            t.poll(&regions, &mut |_| {}).unwrap();
                        }
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        let regions = Regions::new();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while got.len() < 40 && std::time::Instant::now() < deadline {
            job[0].poll(&regions, &mut |_| {}).unwrap();
            job[1]
                .poll(&regions, &mut |e| {
                    if let hpcomm_transport::Event::Frame { header, payload, .. } = e {
                        got.push((
                            header[0],
                            payload.len(),
                            payload.iter().all(|&b| b == payload[0]),
                        ));
                    }
                })
                .unwrap();
        }
        assert_eq!(got.len(), 40, "every frame arrives");
        got.sort();
        for (i, &(h, len, same)) in got.iter().enumerate() {
            assert_eq!((h as usize, len, same), (i, if i % 2 == 0 { 32 << 10 } else { 3 }, true));
        }
        let after = job[0].frames_per_nic();
        let sent: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        assert_eq!(sent, [20 + 10, 10], "big frames alternate, small ones keep to rail 0");
    }
    conformance::run_all(|n| Ofi::local_job(n, &config).expect("tcp;ofi_rxm job over two NICs"));
}

/// A read's destination stays pinned until its completion has been seen:
/// released early (its request failed because a peer was lost), it is gone
/// for everyone else at once, but its memory and registration stay until the
/// provider is done; and a scope that closes over a read in flight waits for
/// it through the drain hook, so the provider never writes into memory the
/// scope gave back. Before pins, `release` freed the memory and closed the
/// registration while `fi_read` still wrote into it.
#[test]
fn read_destinations_outlive_their_release_until_the_read_completes() {
    use std::sync::{Arc, Mutex};

    use hpcomm_transport::{Event, PeerId, Regions, Transport};

    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let config = OfiConfig { provider: Some("tcp;ofi_rxm".into()), ..OfiConfig::default() };
    let mut eps = Ofi::local_job(2, &config).expect("tcp;ofi_rxm job");
    let reader = Arc::new(Mutex::new(eps.pop().unwrap()));
    let mut owner = eps.pop().unwrap();
    let (theirs, mine) = (Regions::new(), Regions::new());
    let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let src = theirs.insert_owned_read_only(data.clone());
    let key = owner.expose(&theirs, src).expect("expose");
    // The owner must progress for the read to be served (manual progress).
    let owner = Arc::new(Mutex::new(owner));
    let (o, r, t, m) = (owner.clone(), reader.clone(), theirs.clone(), mine.clone());
    mine.set_drain(Box::new(move || {
        o.lock().unwrap().poll(&t, &mut |_| {}).unwrap();
        r.lock().unwrap().poll(&m, &mut |_| {}).unwrap();
    }));

    // Released before completion: gone for users, kept for the provider.
    let dst = mine.insert_owned(vec![0; 1 << 20]);
    reader.lock().unwrap().start_read(&mine, PeerId(0), key, 0, dst, 0, 1 << 20, 5).unwrap();
    mine.release(dst);
    assert_eq!(mine.len(dst), None);
    assert!(mine.has_pinned(), "a read's destination was freed while the read was in flight");
    let mut done = false;
    while !done {
        owner.lock().unwrap().poll(&theirs, &mut |_| {}).unwrap();
        reader
            .lock()
            .unwrap()
            .poll(&mine, &mut |ev| done |= matches!(ev, Event::RmaDone { token: 5 }))
            .unwrap();
    }
    assert!(!mine.has_pinned() && mine.is_empty(), "the region outlived its read");

    // A scope closing over a read in flight waits for it.
    let mut got = vec![0u8; 1 << 20];
    mine.scope(|s| {
        let dst = s.register_mut(&mut got);
        reader.lock().unwrap().start_read(&mine, PeerId(0), key, 0, dst, 0, 1 << 20, 6).unwrap();
    });
    assert!(mine.is_empty() && !mine.has_pinned());
    assert!(got == data, "the scope ended before the read landed");
    theirs.release(src);
}

/// Keep-alives never lose a live peer that does not poll (a rank busy
/// computing): a waiting endpoint probes it every tenth of the peer
/// timeout for several timeouts, and the peer's provider takes the
/// probes; when the peer polls again, the frame sent before arrives, and
/// no loss was reported on either side.
#[test]
fn keepalives_spare_a_peer_that_computes() {
    use std::time::{Duration, Instant};

    use hpcomm_transport::{Event, PeerId, Regions, Transport};

    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let config = OfiConfig {
        provider: Some("tcp;ofi_rxm".into()),
        peer_timeout: Duration::from_millis(500),
        ..OfiConfig::default()
    };
    let mut eps = Ofi::local_job(2, &config).expect("tcp;ofi_rxm job");
    let mut busy = eps.pop().unwrap();
    let mut waiting = eps.pop().unwrap();
    let regions = Regions::new();
    waiting.try_send(PeerId(1), b"work", b"for you").expect("send");
    let mut events = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        waiting.poll(&regions, &mut |ev| events.push(format!("{ev:?}"))).unwrap();
        waiting.wait(Duration::from_millis(1));
    }
    assert!(events.is_empty(), "the waiting side reported {events:?}");
    let mut frames = Vec::new();
    let start = Instant::now();
    while frames.is_empty() {
        busy.poll(&regions, &mut |ev| match ev {
            Event::Frame { header, .. } => frames.push(header.to_vec()),
            other => events.push(format!("{other:?}")),
        })
        .unwrap();
        waiting.poll(&regions, &mut |ev| events.push(format!("{ev:?}"))).unwrap();
        assert!(start.elapsed() < Duration::from_secs(30), "the frame never arrived");
    }
    assert_eq!(frames, [b"work".to_vec()]);
    assert!(events.is_empty(), "a live peer was reported: {events:?}");
}
