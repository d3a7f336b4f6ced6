//! The transport conformance suite over the TCP backend on the loopback
//! interface: one connection per pair, and four stripes with small frames
//! so that striping (and the reordering it allows) is exercised.

use hpcomm_transport::conformance;
use hpcomm_transport::tcp::{Tcp, TcpConfig};

fn config() -> TcpConfig {
    TcpConfig { secret: "conformance".into(), ..TcpConfig::default() }
}

#[test]
fn tcp_one_connection_per_pair() {
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
