//! Candidate-filter throughput: one query against 1 M codes, keeping c = 1000.
//!
//! Run with `cargo bench --bench hamming` (needs the `[[bench]] name = "hamming", harness = false`
//! stanza in Cargo.toml). Throughput is reported in codes per second. Besides every kernel this
//! CPU supports, the `selection` group compares the shipped single-pass threshold scan with the
//! two alternatives it was chosen over (full histogram of all distances, bounded max-heap), both
//! built on the fastest distance kernel so that only the selection strategy differs.

use std::collections::BinaryHeap;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dochash::index::hamming::{
    Candidate, Kernel, distances, top_candidates, top_candidates_par, top_candidates_with_kernel,
};

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
        group.bench_function(BenchmarkId::new("par", Kernel::detect().name()), |b| {
            b.iter(|| top_candidates_par(black_box(&query), &codes, words, C).unwrap_or_default())
        });
        group.finish();
    }
}

/// Histogram of all `n` distances, cut-off, then collect in index order (two passes).
fn two_pass_histogram(query: &[u64], codes: &[u64], words: usize, dist: &mut Vec<u32>) -> usize {
    if distances(query, codes, words, dist).is_err() {
        return 0;
    }
    let mut hist = vec![0usize; words * 64 + 1];
    for &d in dist.iter() {
        hist[d as usize] += 1;
    }
    let (mut closer, mut t) = (0, 0);
    while closer + hist[t] < C {
        closer += hist[t];
        t += 1;
    }
    let mut ties = C - closer;
    let mut out = Vec::with_capacity(C);
    for (i, &d) in dist.iter().enumerate() {
        if d < t as u32 || (d == t as u32 && ties > 0) {
            ties -= usize::from(d == t as u32);
            out.push(Candidate {
                index: i as u32,
                distance: d,
            });
        }
    }
    out.sort_unstable_by_key(|c| (c.distance, c.index));
    out.len()
}

/// Bounded max-heap over all distances.
fn heap(query: &[u64], codes: &[u64], words: usize, dist: &mut Vec<u32>) -> usize {
    if distances(query, codes, words, dist).is_err() {
        return 0;
    }
    let mut heap = BinaryHeap::with_capacity(C + 1);
    for (i, &d) in dist.iter().enumerate() {
        let key = (d, i as u32);
        if heap.len() < C {
            heap.push(key);
        } else if heap.peek().is_some_and(|top| key < *top) {
            heap.pop();
            heap.push(key);
        }
    }
    heap.into_sorted_vec().len()
}

fn selection(c: &mut Criterion) {
    let codes = random_words(1, N, u64::MAX);
    let query = random_words(2, 1, u64::MAX);
    let mut group = c.benchmark_group(format!("selection/64bit_1M_c{C}"));
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("threshold_scan", |b| {
        b.iter(|| top_candidates(black_box(&query), &codes, 1, C).unwrap_or_default())
    });
    let mut dist = Vec::new();
    group.bench_function("two_pass_histogram", |b| {
        b.iter(|| two_pass_histogram(black_box(&query), &codes, 1, &mut dist))
    });
    group.bench_function("heap", |b| {
        b.iter(|| heap(black_box(&query), &codes, 1, &mut dist))
    });
    group.finish();
}

criterion_group!(benches, kernels, selection);
criterion_main!(benches);
