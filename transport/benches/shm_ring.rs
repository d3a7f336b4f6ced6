//! The shm backend's ring, cell by cell (`cargo bench -p hpcomm-transport
//! --bench shm_ring`): the time to write one frame into a peer's ring
//! (`try_send`) and to read one out of it (`poll`), for several payload
//! sizes, both ends in this thread so that only the cell work is timed.
//! Frames are written and read in batches of 32, each side timed on its
//! own.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hpcomm_transport::shm::{Shm, ShmConfig};
use hpcomm_transport::{Event, PeerId, Regions, Transport};

const BATCH: usize = 32;
const HEADER: [u8; 24] = [7; 24];

fn ring(c: &mut Criterion) {
    let mut eps = Shm::local_job(2, &ShmConfig::default()).expect("an shm job");
    let mut reader = eps.pop().expect("rank 1");
    let mut writer = eps.pop().expect("rank 0");
    let regions = Regions::new();
    let mut group = c.benchmark_group("shm-ring");
    for size in [8usize, 256, 4096] {
        let payload = vec![1u8; size];
        group.throughput(Throughput::Elements(1));
        // Writes `iters` frames and reads them back; returns the time spent
        // writing and the time spent reading.
        let mut run = |iters: u64| -> (Duration, Duration) {
            let (mut write, mut read) = (Duration::ZERO, Duration::ZERO);
            let mut left = iters as usize;
            while left > 0 {
                let n = left.min(BATCH);
                let t = Instant::now();
                for _ in 0..n {
                    writer.try_send(PeerId(1), &HEADER, &payload).expect("a free cell");
                }
                write += t.elapsed();
                let t = Instant::now();
                let mut got = 0;
                while got < n {
                    got += reader
                        .poll(&regions, &mut |e| {
                            if let Event::Frame { payload, .. } = e {
                                black_box(payload);
                            }
                        })
                        .expect("poll");
                }
                read += t.elapsed();
                left -= n;
            }
            (write, read)
        };
        group.bench_function(BenchmarkId::new("write", size), |b| {
            b.iter_custom(|iters| run(iters).0)
        });
        group.bench_function(BenchmarkId::new("read", size), |b| {
            b.iter_custom(|iters| run(iters).1)
        });
    }
    group.finish();
}

criterion_group!(benches, ring);
criterion_main!(benches);
