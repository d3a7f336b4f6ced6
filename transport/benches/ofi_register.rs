//! What a per-message memory registration costs over libfabric (`cargo
//! bench -p hpcomm-transport --bench ofi_register`): a region exposed for
//! a peer's read (`fi_mr_reg`) and released (`fi_close`), as the runtime
//! does for every large message over ofi, at 64 KiB, 1 MiB and 4 MiB, on
//! each provider found here — asked for EFA's `mr_mode` bits too, where
//! registration pins pages as EFA's does. Beside the time a message of
//! that size takes on the wire, it says whether a registration cache of
//! our own would pay (`docs/performance.md`).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hpcomm_transport::ofi::{Ofi, OfiConfig};
use hpcomm_transport::{Regions, Transport};

fn register(c: &mut Criterion) {
    let mut group = c.benchmark_group("ofi-register");
    for (provider, efa) in [("tcp;ofi_rxm", false), ("tcp;ofi_rxm", true), ("shm", true)] {
        let config =
            OfiConfig { provider: Some(provider.into()), efa_mr_mode: efa, ..OfiConfig::default() };
        let Ok(mut job) = Ofi::local_job(1, &config) else {
            eprintln!("ofi-register: no {provider} here");
            continue;
        };
        let ofi = &mut job[0];
        if !ofi.capabilities().rma_read {
            continue;
        }
        let mode = if efa { "efa-mr-mode" } else { "provider-mr-mode" };
        for size in [64usize << 10, 1 << 20, 4 << 20] {
            let bytes = vec![1u8; size];
            let regions = Regions::new();
            group.throughput(Throughput::Bytes(size as u64));
            let id = BenchmarkId::new(format!("{provider} {mode}"), size);
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    regions.scope(|scope| {
                        for _ in 0..iters {
                            let region = scope.register(&bytes);
                            let start = Instant::now();
                            ofi.expose(&regions, region).expect("expose");
                            regions.release(region);
                            spent += start.elapsed();
                        }
                    });
                    spent
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, register);
criterion_main!(benches);
