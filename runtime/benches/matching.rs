//! Matching throughput (`cargo bench -p hpcomm-runtime --bench matching`):
//! messages matched per second by one context's matcher, when the receives
//! are posted first (each arrival finds its receive) and when the messages
//! arrive first (each post finds its message in the unexpected queue).
//! Batches of 64 messages from 4 sources with distinct tags, the shape of a
//! halo exchange's receives.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hpcomm_runtime::matching::{Envelope, Matcher, Pattern};

const SOURCES: u32 = 4;

fn envelope(i: u32) -> Envelope {
    Envelope { src: i % SOURCES, tag: (i / SOURCES) as i32, len: 8 }
}

fn pattern(i: u32, wildcard: bool) -> Pattern {
    let env = envelope(i);
    Pattern { src: if wildcard { None } else { Some(env.src) }, tag: Some(env.tag) }
}

fn matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("matching");
    for batch in [1u32, 64] {
        group.throughput(Throughput::Elements(batch as u64));
        for wildcard in [false, true] {
            let name = if wildcard { "any-source" } else { "by-source" };
            group.bench_function(BenchmarkId::new(format!("posted-first/{name}"), batch), |b| {
                let mut m: Matcher<u64, u32> = Matcher::new();
                let mut released = Vec::new();
                let mut seq = vec![0u32; SOURCES as usize];
                b.iter(|| {
                    for i in 0..batch {
                        assert!(m.post(pattern(i, wildcard), i).is_none());
                    }
                    for i in 0..batch {
                        let env = envelope(i);
                        let s = &mut seq[env.src as usize];
                        let got = m.arrive(env, *s, || u64::from(i), &mut released);
                        *s += 1;
                        black_box(got.expect("a posted receive matches"));
                    }
                });
            });
            group.bench_function(
                BenchmarkId::new(format!("unexpected-first/{name}"), batch),
                |b| {
                    let mut m: Matcher<u64, u32> = Matcher::new();
                    let mut released = Vec::new();
                    let mut seq = vec![0u32; SOURCES as usize];
                    b.iter(|| {
                        for i in 0..batch {
                            let env = envelope(i);
                            let s = &mut seq[env.src as usize];
                            assert!(m.arrive(env, *s, || u64::from(i), &mut released).is_none());
                            *s += 1;
                        }
                        for i in 0..batch {
                            black_box(m.post(pattern(i, wildcard), i).expect("unexpected match"));
                        }
                    });
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, matching);
criterion_main!(benches);
