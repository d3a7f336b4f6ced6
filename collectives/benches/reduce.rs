//! Reduction kernels (`cargo bench -p hpcomm-collectives --bench reduce`):
//! bytes of the accumulator combined per second, per operation and element
//! type, for a vector that fits in L2 (64 KiB) and one that does not
//! (8 MiB). The roof is the machine's memory bandwidth: a kernel reads two
//! vectors and writes one.

use std::hint::black_box;

use bytemuck::Pod;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hpcomm_collectives::op::{BitXor, Max, Min, Operation, Prod, Sum};

fn kernel<T: Pod, O: Operation<T>>(c: &mut Criterion, op: O, op_name: &str, value: T) {
    let ty = std::any::type_name::<T>();
    let mut group = c.benchmark_group(format!("reduce/{op_name}/{ty}"));
    for bytes in [64usize << 10, 8 << 20] {
        let n = bytes / std::mem::size_of::<T>();
        let mut acc = vec![value; n];
        let other = vec![value; n];
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(BenchmarkId::from_parameter(bytes), |b| {
            b.iter(|| {
                op.apply(black_box(&mut acc), black_box(&other), true);
            })
        });
    }
    group.finish();
}

fn reductions(c: &mut Criterion) {
    kernel(c, Sum, "sum", 1.0f32);
    kernel(c, Sum, "sum", 1.0f64);
    kernel(c, Sum, "sum", 1i32);
    kernel(c, Sum, "sum", 1i64);
    kernel(c, Prod, "prod", 1.0f64);
    kernel(c, Min, "min", 1.0f32);
    kernel(c, Max, "max", 1.0f64);
    kernel(c, Max, "max", 1i32);
    kernel(c, BitXor, "bxor", 1u64);
}

criterion_group!(benches, reductions);
criterion_main!(benches);
