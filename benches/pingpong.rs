//! Ping-pong latency between two in-process ranks over loopback, in the OSU
//! micro-benchmarks' format. A benchmark program, not a test:
//!
//! ```text
//! cargo bench --bench pingpong [-- --iters N]
//! ```
//!
//! One-way latency is half the round trip, averaged over `iters` round trips
//! after `iters / 10` warm-up round trips, per message size.

use std::time::Instant;

fn main() {
    let mut iters = 10_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--iters" {
            iters = args.next().and_then(|v| v.parse().ok()).unwrap_or(iters);
        }
    }
    let sizes: Vec<usize> = std::iter::once(0).chain((0..=22).map(|p| 1 << p)).collect();
    let results = hpcomm::threads(2, |comm| -> hpcomm::Result<Vec<(usize, f64)>> {
        let peer = 1 - comm.rank();
        let mut rows = Vec::new();
        for &size in &sizes {
            let n = if size >= 1 << 20 { (iters / 100).max(10) } else { iters };
            let msg = vec![1u8; size];
            let mut buf = vec![0u8; size];
            let mut start = Instant::now();
            for i in 0..n + n / 10 {
                if i == n / 10 {
                    start = Instant::now();
                }
                if comm.rank() == 0 {
                    comm.send(&msg, peer, 1)?;
                    comm.recv(&mut buf, peer, 1)?;
                } else {
                    comm.recv(&mut buf, peer, 1)?;
                    comm.send(&msg, peer, 1)?;
                }
            }
            let one_way_us = start.elapsed().as_secs_f64() * 1e6 / (2 * n) as f64;
            rows.push((size, one_way_us));
        }
        Ok(rows)
    })
    .expect("job");
    let rows = results.into_iter().next().expect("rank 0").expect("rank 0 ran");
    println!("# hpcomm ping-pong, 2 ranks as threads over loopback");
    println!("# Size          Latency (us)");
    for (size, us) in rows {
        println!("{size:<16}{us:>12.2}");
    }
}
