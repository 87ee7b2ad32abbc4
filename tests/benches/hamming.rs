//! Candidate-filter throughput: one query against 1 M codes, keeping c = 1000.
//!
//! Run with `cargo bench --bench hamming` (needs the `[[bench]] name = "hamming", harness = false`
//! stanza in Cargo.toml). Throughput is reported in codes per second, for every kernel this CPU
//! supports.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dochash::index::hamming::{Kernel, top_candidates_with_kernel};

const N: usize = 1 << 20;
const C: usize = 1000;

fn random_words(seed: u64, len: usize, mask: u64) -> Vec<u64> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) & mask
        })
        .collect()
}

fn kernels(c: &mut Criterion) {
    for (bits, words, mask) in [
        (64usize, 1usize, u64::MAX),
        (16, 1, 0xFFFF),
        (256, 4, u64::MAX),
    ] {
        let codes = random_words(1, N * words, mask);
        let query = random_words(2, words, mask);
        let mut group = c.benchmark_group(format!("top_candidates/{bits}bit_1M_c{C}"));
        group.throughput(Throughput::Elements(N as u64));
        for kernel in Kernel::ALL.into_iter().filter(|k| k.is_supported()) {
            group.bench_function(BenchmarkId::new("kernel", kernel.name()), |b| {
                b.iter(|| {
                    top_candidates_with_kernel(kernel, black_box(&query), &codes, words, C)
                        .unwrap_or_default()
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
