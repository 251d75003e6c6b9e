//! Criterion benches of the DRF allocator: one full cycle (every agent
//! offered, then every offer given back) at 1k and 10k agents with 100
//! frameworks.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
#[allow(dead_code)] // `run` and the flags serve the binary, not this bench
#[path = "../src/allocator.rs"]
mod allocator;

use allocator::{build, cycle};

const RESOURCES: &str = "cpus:16;mem:65536;disk:100000;ports:[31000-32000]";

fn full_cycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("allocator_full_cycle");
    group.sample_size(20);
    for agents in [1_000usize, 10_000] {
        let mut alloc = build(agents, 100, 10, RESOURCES).expect("valid bench setup");
        group.bench_function(format!("{agents}_agents_100_frameworks"), |b| {
            b.iter_batched(|| (), |_| cycle(&mut alloc), BatchSize::SmallInput)
        });
    }
    group.finish();
}

criterion_group!(benches, full_cycle);
criterion_main!(benches);
