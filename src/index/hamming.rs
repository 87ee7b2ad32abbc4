//! Hamming-distance candidate filter: the first stage of every query.
//!
//! A query is answered in two stages: this module scans the binary codes of *all* passages and
//! keeps the `c` closest by Hamming distance, then the caller reranks those few with float
//! embeddings. The scan touches every code on every query, so it is the part of search whose cost
//! grows with the corpus; everything here is shaped by that.
//!
//! # Layout
//!
//! A code is `words` little 64-bit words (bit `j` of the code is bit `j % 64` of word `j / 64`).
//! Codes narrower than 64 bits (16, 32) occupy one word with zero high bits, so they cost the same
//! as 64-bit codes; any width is padded up to whole words with zero bits, which never contribute
//! to a distance because both query and code have them cleared. All `n` codes live in
//! one contiguous row-major `&[u64]` of `n * words` words: one allocation, sequential reads, and
//! hardware prefetching does the rest.
//!
//! # Kernels
//!
//! The default `x86-64` target does not enable the `popcnt` instruction, so `u64::count_ones`
//! compiles to a dozen-instruction bit-twiddling sequence. Rather than forcing users to build with
//! `-C target-cpu=native` (which would produce binaries that crash on older machines), the scan
//! loops are compiled several times with different `#[target_feature]`s and the best one the CPU
//! supports is picked once at run time ([`Kernel::detect`], cached in a `OnceLock`). See
//! [`Kernel`] for the variants and [`kernel_name`] for reporting the choice.
//!
//! # Selection
//!
//! Distances are small integers (at most `64 * words`), which makes an exact, sort-free selection
//! possible. The scan keeps a *rejection threshold*: once `c` codes with distance `<= t` have been
//! seen, no later code with distance `>= t` can make the result (ties are broken by the smaller
//! index, and every later index is larger). Each kernel therefore only appends codes strictly
//! under the threshold; whenever the buffer of survivors grows past `c` by a margin, a histogram of
//! their distances gives the new cut-off and the buffer is compacted back to `c`; the result is
//! finally ordered with a counting sort on distance. For large scans a small sample of distances
//! sets the starting threshold near the final cut-off (and is verified afterwards), so almost
//! nothing is appended and the hot loop is load, xor, popcount, compare: no heap, no sort of `n`
//! elements, a single pass over the codes. The alternatives, measured when this design was chosen
//! on 1 M 64-bit codes and `c` = 1000, are 5–6× slower: a two-pass "histogram of all `n`
//! distances, then collect" (≈ 0.54 G codes/s) and a bounded max-heap (≈ 0.50 G codes/s), against
//! ≈ 2.8–3.3 G codes/s here.

use std::sync::OnceLock;

/// One surviving code: its position in the code array and its Hamming distance to the query.
///
/// `#[repr(C)]` because the AVX2 kernel writes candidates as packed 64-bit lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct Candidate {
    /// Row of the code in the `codes` slice (that is, the passage number the index assigned).
    pub index: u32,
    /// Number of differing bits between the query and this code.
    pub distance: u32,
}

/// Shape errors: every function here validates lengths up front instead of panicking, because
/// the code array may come from disk and the query from a user-configured hasher.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HammingError {
    /// `words == 0` would make every code empty and every distance zero: certainly a caller bug.
    #[error("codes must be at least one 64-bit word wide")]
    ZeroWords,
    /// The distance is an `u32`, so codes wider than `u32::MAX` bits cannot be measured.
    #[error("codes of {words} words are too wide")]
    TooWide { words: usize },
    /// The query and the stored codes disagree on the code width.
    #[error("query has {got} words but codes are {expected} words wide")]
    QueryLength { expected: usize, got: usize },
    /// The code array does not hold a whole number of codes (truncated or mis-sized).
    #[error("code array of {len} words is not a whole number of {words}-word codes")]
    RaggedCodes { len: usize, words: usize },
    /// Candidate indices are `u32`, which bounds the number of codes.
    #[error("{n} codes exceed the u32 index range")]
    TooManyCodes { n: usize },
    /// A specific kernel was requested that this CPU cannot run.
    #[error("Hamming kernel `{0}` is not supported by this CPU")]
    UnsupportedKernel(&'static str),
}

/// The implementations of the distance scan; one is chosen at run time.
///
/// All kernels return identical results; they only differ in speed. [`top_candidates`] on one
/// core of the development machine (AMD EPYC, Zen 3 class, 2 vCPUs shared with other work; median
/// over 1500 random queries; 1 M codes, `c` = 1000):
///
/// | kernel     | 64-bit codes     | 256-bit codes    |
/// |------------|------------------|------------------|
/// | `portable` | 0.87 G codes/s   | 0.26 G codes/s   |
/// | `popcnt`   | 2.2 G codes/s    | 0.45 G codes/s   |
/// | `avx2`     | 3.2 G codes/s    | 0.47 G codes/s   |
///
/// The AVX2 nibble-table popcount wins for one-word codes because four codes share each
/// instruction; for wider codes a code's words must be summed across lanes, which costs what it
/// saves, so `avx2` runs the `popcnt` loops there. With 4 M 64-bit codes (32 MB, beyond the
/// cache) `avx2` drops to ≈ 1.9 G codes/s, bounded by memory. AVX-512 `VPOPCNTDQ` was not
/// tried: no machine at hand has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// `u64::count_ones` compiled for the build target. On x86-64 without `popcnt` this is slow;
    /// on aarch64 it is already the NEON `cnt` instruction and is the kernel used there.
    Portable,
    /// The same loops compiled with `#[target_feature(enable = "popcnt")]`: one `xor` + `popcnt`
    /// per word.
    Popcnt,
    /// 64-bit codes: four codes per 256-bit register, popcount by the nibble look-up table
    /// (`vpshufb`) summed per 64-bit lane with `vpsadbw`, and one rarely-taken branch per 16 codes.
    /// Wider codes use the `popcnt` loops, which were as fast for them. Needs `avx2` and `popcnt`.
    Avx2,
}

impl Kernel {
    /// Every kernel, in increasing order of preference.
    pub const ALL: [Kernel; 3] = [Kernel::Portable, Kernel::Popcnt, Kernel::Avx2];

    /// Short stable name, used by `status` and the benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            Kernel::Popcnt => "popcnt",
            Kernel::Avx2 => "avx2",
        }
    }

    /// Whether this CPU can run the kernel.
    pub fn is_supported(self) -> bool {
        match self {
            Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Popcnt => std::arch::is_x86_feature_detected!("popcnt"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                std::arch::is_x86_feature_detected!("popcnt")
                    && std::arch::is_x86_feature_detected!("avx2")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Popcnt | Kernel::Avx2 => false,
        }
    }

    /// The fastest kernel this CPU supports. Detection runs once; later calls read a cached value,
    /// so it is cheap enough to call per query.
    pub fn detect() -> Kernel {
        static ACTIVE: OnceLock<Kernel> = OnceLock::new();
        *ACTIVE.get_or_init(|| {
            Kernel::ALL
                .into_iter()
                .rev()
                .find(|k| k.is_supported())
                .unwrap_or(Kernel::Portable)
        })
    }

    /// Function table of the kernel. Only reachable through [`Kernel::checked_fns`] or for the
    /// detected kernel, which is what makes calling the `unsafe` pointers sound.
    fn fns(self) -> KernelFns {
        match self {
            Kernel::Portable => KernelFns {
                scan: scan_portable,
                dist: dist_portable,
            },
            #[cfg(target_arch = "x86_64")]
            Kernel::Popcnt => KernelFns {
                scan: x86::scan_popcnt,
                dist: x86::dist_popcnt,
            },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => KernelFns {
                scan: x86::scan_avx2,
                dist: x86::dist_avx2,
            },
            // Unreachable in practice: `is_supported` is false for these off x86-64, and
            // `checked_fns` refuses unsupported kernels. Falling back keeps this total.
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Popcnt | Kernel::Avx2 => Kernel::Portable.fns(),
        }
    }

    fn checked_fns(self) -> Result<KernelFns, HammingError> {
        if self.is_supported() {
            Ok(self.fns())
        } else {
            Err(HammingError::UnsupportedKernel(self.name()))
        }
    }
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Name of the kernel used by [`top_candidates`] on this machine.
pub fn kernel_name() -> &'static str {
    Kernel::detect().name()
}

#[derive(Clone, Copy)]
struct KernelFns {
    scan: ScanFn,
    dist: DistFn,
}

/// Most codes scanned between two looks at the survivor buffer: large enough that the per-block
/// bookkeeping vanishes, small enough that the threshold follows the buffer closely.
const BLOCK: usize = 1 << 14;

/// Checks the shapes shared by all entry points and returns the number of codes.
pub(super) fn validate(query: &[u64], codes: &[u64], words: usize) -> Result<usize, HammingError> {
    if words == 0 {
        return Err(HammingError::ZeroWords);
    }
    if words > (u32::MAX / 64) as usize {
        return Err(HammingError::TooWide { words });
    }
    if query.len() != words {
        return Err(HammingError::QueryLength {
            expected: words,
            got: query.len(),
        });
    }
    if !codes.len().is_multiple_of(words) {
        return Err(HammingError::RaggedCodes {
            len: codes.len(),
            words,
        });
    }
    let n = codes.len() / words;
    if n > u32::MAX as usize {
        return Err(HammingError::TooManyCodes { n });
    }
    Ok(n)
}

/// The `c` codes closest to `query`, sorted by `(distance, index)`.
///
/// Ties at equal distance are broken by the smaller index so that results are deterministic: the
/// same index and query always give the same candidates regardless of kernel or build. `c == 0`
/// gives an empty result and `c >= n` gives all codes, sorted. `words` is the code width in
/// 64-bit words and `codes` holds `n * words` words, row-major.
pub fn top_candidates(
    query: &[u64],
    codes: &[u64],
    words: usize,
    c: usize,
) -> Result<Vec<Candidate>, HammingError> {
    top_candidates_with_kernel(Kernel::detect(), query, codes, words, c)
}

/// [`top_candidates`] with an explicit kernel, for tests and benchmarks; errors if the CPU lacks
/// it.
pub fn top_candidates_with_kernel(
    kernel: Kernel,
    query: &[u64],
    codes: &[u64],
    words: usize,
    c: usize,
) -> Result<Vec<Candidate>, HammingError> {
    let fns = kernel.checked_fns()?;
    let n = validate(query, codes, words)?;
    let mut survivors = scan_select(fns, query, codes, words, 0, c);
    finish(&mut survivors, c.min(n), words);
    Ok(survivors)
}

/// Scans `codes` (numbered from `base`) and returns a superset of their top `c`, in index order.
fn scan_select(
    fns: KernelFns,
    query: &[u64],
    codes: &[u64],
    words: usize,
    base: u32,
    c: usize,
) -> Vec<Candidate> {
    if c == 0 || codes.is_empty() {
        return Vec::new();
    }
    let n = codes.len() / words;
    let mut hist = vec![0u32; 4 * (words * 64 + 1)];
    if let Some(guess) = sampled_threshold(fns, query, codes, words, c, &mut hist) {
        let survivors = threshold_scan(fns, query, codes, words, base, c, Some(guess), &mut hist);
        // Enough codes under the guessed threshold means the guess was above the true cut-off
        // and nothing was missed; otherwise (rare, by the margin) start over without it.
        if survivors.len() >= c.min(n) {
            return survivors;
        }
    }
    threshold_scan(fns, query, codes, words, base, c, None, &mut hist)
}

/// A guess of the rejection threshold from a sample, so that the scan starts near the final
/// cut-off instead of working down to it.
///
/// Without a guess, the threshold after `m` codes sits at the `c / m` quantile, and the scan keeps
/// appending (and mispredicting on) about `c · ln(n / c)` codes on the way down — a third of the
/// time of a 1 M-code, `c` = 1000 query. A sample of 64 evenly spread runs of codes (at most 1/32
/// of `n`) places the threshold a safety margin above the estimated `c / n` quantile at once. The
/// guess is only ever an optimisation: [`scan_select`] checks that at least `c` codes passed it
/// and rescans without it otherwise.
///
/// Returns `None` when sampling would not pay: small `n`, or `c` so small that the prefix scan
/// reaches the cut-off almost immediately anyway.
fn sampled_threshold(
    fns: KernelFns,
    query: &[u64],
    codes: &[u64],
    words: usize,
    c: usize,
    hist: &mut [u32],
) -> Option<u32> {
    let n = codes.len() / words;
    let wanted = SAMPLE_HITS.saturating_mul(n).div_ceil(c);
    if n < 1 << 17 || wanted > n / 32 {
        return None;
    }
    let run = wanted.div_ceil(SAMPLE_RUNS).max(16);
    let mut dist = vec![0u32; run * SAMPLE_RUNS];
    for (k, out) in dist.chunks_exact_mut(run).enumerate() {
        let start = k * (n / SAMPLE_RUNS) * words;
        let sample = codes.get(start..start + run * words)?;
        // SAFETY: the kernel is supported and the shapes were validated by the callers; the
        // sample is `run` whole codes and `out` has `run` slots.
        unsafe { (fns.dist)(query, sample, words, out) };
    }
    let hist = histogram(dist.iter().copied(), hist);
    // Margin: three standard deviations of the (Poisson) sample count, plus a few.
    let expected = c as f64 * dist.len() as f64 / n as f64;
    let need = (expected + 3.0 * expected.sqrt() + 3.0).ceil() as usize;
    let mut seen = 0usize;
    for (t, &h) in hist.iter().enumerate() {
        seen += h as usize;
        if seen >= need {
            return Some(t as u32 + 1);
        }
    }
    None
}

/// Number of evenly spaced runs of codes in the threshold sample.
const SAMPLE_RUNS: usize = 64;

/// Sample size, as the expected number of sampled codes under the true cut-off. 8 and 16 were
/// tried: 8 halves the sampling cost and the margin below keeps fallbacks rare.
const SAMPLE_HITS: usize = 8;

/// Histogram of small integers into four interleaved sets of counters (`scratch` holds
/// 4 × bins), summed into the first set, which is returned. Values crowd into a few bins, and
/// repeated increments of one counter would serialise on store-to-load forwarding.
fn histogram(values: impl Iterator<Item = u32>, scratch: &mut [u32]) -> &[u32] {
    let bins = scratch.len() / 4;
    scratch.fill(0);
    for (i, v) in values.enumerate() {
        if let Some(h) = scratch.get_mut((i & 3) * bins + v as usize) {
            *h += 1;
        }
    }
    let (first, rest) = scratch.split_at_mut(bins);
    for lane in rest.chunks_exact(bins) {
        for (h, x) in first.iter_mut().zip(lane) {
            *h += x;
        }
    }
    first
}

/// The scan proper: appends codes under the rejection threshold and tightens the threshold from
/// the survivors. Starts from `guess` (see [`sampled_threshold`]) or, without one, accepts
/// everything until `c` codes have been seen.
#[allow(clippy::too_many_arguments)]
fn threshold_scan(
    fns: KernelFns,
    query: &[u64],
    codes: &[u64],
    words: usize,
    base: u32,
    c: usize,
    guess: Option<u32>,
    hist: &mut [u32],
) -> Vec<Candidate> {
    // Compact when the buffer reaches 2c (c + c/2 after a sampled guess, which starts close to
    // the cut-off and gains from settling early): the compaction costs O(buffer), so each one is
    // paid for by at least c/2 appended codes. Both factors were tuned on 1 M-code scans.
    let slack = if guess.is_some() { c / 2 } else { c };
    let tighten_at = c.saturating_add(slack).max(64);
    let mut accept_below = guess.unwrap_or(words as u32 * 64 + 1);
    // With a guess only a small share passes; without one, everything does at first.
    let mut dense = guess.is_none();
    let mut survivors = Vec::with_capacity((2 * tighten_at).min(codes.len() / words + 1));
    let mut next = base;
    let mut scanned = 0usize;
    let mut rest = codes;
    // Without a guess the first block is kept just big enough to fill the buffer once; blocks
    // then double, so the threshold tracks the running `c`-th distance closely while it is still
    // falling fast, and the bookkeeping stays negligible later.
    let mut block_codes = if guess.is_some() { BLOCK } else { tighten_at };
    while !rest.is_empty() {
        let take = (block_codes * words).min(rest.len());
        let (block, tail) = rest.split_at(take);
        rest = tail;
        block_codes = (block_codes * 2).min(BLOCK);
        let before = survivors.len();
        let scan = Scan {
            query,
            codes: block,
            words,
            base: next,
            accept_below,
        };
        // SAFETY: the kernel is supported (callers got `fns` from `checked_fns` or `detect`) and
        // the shapes were validated; a block is a whole number of codes because `codes` is.
        unsafe { (fns.scan)(&scan, dense, &mut survivors) };
        let block_len = block.len() / words;
        next = next.wrapping_add(block_len as u32);
        scanned += block_len;
        // Estimated share of the next block that will pass the threshold.
        let mut rate = (survivors.len() - before) as f64 / block_len.max(1) as f64;
        if survivors.len() >= tighten_at {
            let (cut, closer) = keep_best(&mut survivors, c, hist);
            accept_below = cut;
            rate = closer as f64 / scanned as f64;
            if accept_below == 0 {
                // `c` exact matches found: nothing later can displace them.
                break;
            }
        }
        dense = rate >= DENSE_RATE;
    }
    survivors
}

/// Above this pass rate the kernels append branch-free (every code is written, the output
/// length advances only for those that pass); below it they branch on the rare hit. Branching
/// costs a misprediction per hit, writing costs a store per code; the cross-over was measured.
const DENSE_RATE: f64 = 1.0 / 64.0;

/// Reduces `survivors` (in index order, at least `c` of them) to exactly its best `c`, using `hist`
/// (4 × (maximum distance + 1) counters) as scratch. Returns the new rejection threshold — later
/// codes must be strictly closer than it to matter — and how many of the kept ones are strictly
/// under it.
pub(super) fn keep_best(
    survivors: &mut Vec<Candidate>,
    c: usize,
    hist: &mut [u32],
) -> (u32, usize) {
    debug_assert!(survivors.len() >= c && c > 0);
    let hist = histogram(survivors.iter().map(|s| s.distance), hist);
    // Cut-off distance `t`: fewer than `c` codes are strictly closer, at least `c` are `<= t`.
    let mut closer = 0usize;
    let mut t = 0usize;
    while t + 1 < hist.len() && closer + (hist[t] as usize) < c {
        closer += hist[t] as usize;
        t += 1;
    }
    let t = t as u32;
    // Survivors are in index order, so keeping the first ties keeps the smallest indices. The
    // compaction is written without data-dependent branches: which survivors stay is
    // unpredictable, and mispredictions would dominate.
    let mut ties_left = c - closer;
    let mut kept = 0;
    for read in 0..survivors.len() {
        let s = survivors[read];
        let tie = usize::from(s.distance == t && ties_left > 0);
        ties_left -= tie;
        survivors[kept] = s;
        kept += usize::from(s.distance < t) | tie;
    }
    survivors.truncate(kept);
    (t, closer)
}

/// Turns the index-ordered survivor buffer into the final answer: exactly `c` entries sorted by
/// `(distance, index)`. A stable counting sort on distance does it in `O(c + bits)`.
fn finish(survivors: &mut Vec<Candidate>, c: usize, words: usize) {
    finish_within(survivors, c, words * 64);
}

/// [`finish`] for distances of at most `max_distance` (the weighted filter's are larger than a
/// bit count).
pub(super) fn finish_within(survivors: &mut Vec<Candidate>, c: usize, max_distance: usize) {
    if survivors.len() > c && c > 0 {
        keep_best(survivors, c, &mut vec![0u32; 4 * (max_distance + 1)]);
    }
    survivors.truncate(c);
    let mut hist = vec![0u32; max_distance + 2];
    for s in survivors.iter() {
        hist[s.distance as usize + 1] += 1;
    }
    for d in 1..hist.len() {
        hist[d] += hist[d - 1];
    }
    let mut sorted = vec![
        Candidate {
            index: 0,
            distance: 0
        };
        survivors.len()
    ];
    for s in survivors.iter() {
        let slot = &mut hist[s.distance as usize];
        sorted[*slot as usize] = *s;
        *slot += 1;
    }
    *survivors = sorted;
}

/// One kernel call: append every code of `codes` whose distance to `query` is `< accept_below`,
/// in index order, numbering codes from `base`.
struct Scan<'a> {
    query: &'a [u64],
    codes: &'a [u64],
    words: usize,
    base: u32,
    accept_below: u32,
}

/// A scan kernel; `dense` selects the branch-free append (see [`DENSE_RATE`]).
///
/// # Safety
/// The CPU must support the kernel's target features, and the shapes must be validated:
/// `query.len() == words >= 1`, `codes.len() % words == 0`, `base + n <= 2^32`, and `words * 64`
/// fits in `u32`.
type ScanFn = unsafe fn(&Scan<'_>, bool, &mut Vec<Candidate>);

/// Writes the distance of every code to `out` (`out.len() == codes.len() / words`).
///
/// # Safety
/// As for [`ScanFn`].
type DistFn = unsafe fn(&[u64], &[u64], usize, &mut [u32]);

// ---------------------------------------------------------------------------------------------
// Scalar loops. Written once as `#[inline(always)]` bodies and instantiated per target feature,
// so that the `popcnt` build of the very same loop gets the hardware instruction.
// ---------------------------------------------------------------------------------------------

#[inline(always)]
fn code_distance<const W: usize>(query: &[u64; W], code: &[u64; W]) -> u32 {
    let mut d = 0;
    for w in 0..W {
        d += (query[w] ^ code[w]).count_ones();
    }
    d
}

#[inline(always)]
fn slice_distance(query: &[u64], code: &[u64]) -> u32 {
    query
        .iter()
        .zip(code)
        .map(|(a, b)| (a ^ b).count_ones())
        .sum()
}

/// Scalar scan over fixed-width codes; `distance` measures one code.
#[inline(always)]
fn scan_codes<T>(
    codes: &[T],
    distance: impl Fn(&T) -> u32,
    scan: &Scan<'_>,
    dense: bool,
    out: &mut Vec<Candidate>,
) {
    let accept_below = scan.accept_below;
    let mut index = scan.base;
    if dense {
        out.reserve(codes.len());
        let start = out.len();
        let spare = out.spare_capacity_mut();
        let mut kept = 0;
        for code in codes {
            let distance = distance(code);
            // Written unconditionally and kept only if it passes: nothing to mispredict.
            if let Some(slot) = spare.get_mut(kept) {
                slot.write(Candidate { index, distance });
            }
            kept += usize::from(distance < accept_below);
            index = index.wrapping_add(1);
        }
        // SAFETY: `kept <= spare.len()` (one slot was reserved per code), and every slot below
        // `kept` was written: a slot is only passed over after the candidate in it was kept.
        unsafe { out.set_len(start + kept) };
    } else {
        // Four codes per test: one well-predicted branch on the closest of four.
        let (quads, rest) = codes.as_chunks::<4>();
        for quad in quads {
            let d = quad.each_ref().map(&distance);
            if d[0].min(d[1]).min(d[2].min(d[3])) < accept_below {
                for (k, distance) in (0u32..).zip(d) {
                    if distance < accept_below {
                        out.push(Candidate {
                            index: index.wrapping_add(k),
                            distance,
                        });
                    }
                }
            }
            index = index.wrapping_add(4);
        }
        for code in rest {
            let distance = distance(code);
            if distance < accept_below {
                out.push(Candidate { index, distance });
            }
            index = index.wrapping_add(1);
        }
    }
}

/// Scalar scan over codes of any width: the plain loop (these widths are not worth tuning).
#[inline(always)]
fn scan_any_width(scan: &Scan<'_>, out: &mut Vec<Candidate>) {
    let mut index = scan.base;
    for code in scan.codes.chunks_exact(scan.words) {
        let distance = slice_distance(scan.query, code);
        if distance < scan.accept_below {
            out.push(Candidate { index, distance });
        }
        index = index.wrapping_add(1);
    }
}

#[inline(always)]
fn scan_fixed<const W: usize>(scan: &Scan<'_>, dense: bool, out: &mut Vec<Candidate>) {
    let Ok(&q) = <&[u64; W]>::try_from(scan.query) else {
        return;
    };
    let (codes, _) = scan.codes.as_chunks::<W>();
    scan_codes(codes, |code| code_distance(&q, code), scan, dense, out);
}

/// The 1- to 4-word widths (64 to 256 bits) get fully unrolled loops; others the generic one.
#[inline(always)]
fn scan_body(scan: &Scan<'_>, dense: bool, out: &mut Vec<Candidate>) {
    match scan.words {
        1 => scan_fixed::<1>(scan, dense, out),
        2 => scan_fixed::<2>(scan, dense, out),
        3 => scan_fixed::<3>(scan, dense, out),
        4 => scan_fixed::<4>(scan, dense, out),
        _ => scan_any_width(scan, out),
    }
}

#[inline(always)]
fn dist_fixed<const W: usize>(query: &[u64], codes: &[u64], out: &mut [u32]) {
    let Ok(q) = <&[u64; W]>::try_from(query) else {
        return;
    };
    for (code, o) in codes.as_chunks::<W>().0.iter().zip(out.iter_mut()) {
        *o = code_distance(q, code);
    }
}

#[inline(always)]
fn dist_body(query: &[u64], codes: &[u64], words: usize, out: &mut [u32]) {
    match words {
        1 => dist_fixed::<1>(query, codes, out),
        2 => dist_fixed::<2>(query, codes, out),
        3 => dist_fixed::<3>(query, codes, out),
        4 => dist_fixed::<4>(query, codes, out),
        _ => {
            for (code, o) in codes.chunks_exact(words).zip(out.iter_mut()) {
                *o = slice_distance(query, code);
            }
        }
    }
}

/// # Safety
/// Always safe to call (no target features); `unsafe` only to fit [`ScanFn`].
unsafe fn scan_portable(scan: &Scan<'_>, dense: bool, out: &mut Vec<Candidate>) {
    scan_body(scan, dense, out);
}

/// # Safety
/// Always safe to call (no target features); `unsafe` only to fit [`DistFn`].
unsafe fn dist_portable(query: &[u64], codes: &[u64], words: usize, out: &mut [u32]) {
    dist_body(query, codes, words, out);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! x86-64 kernels. Each is an `unsafe fn` only because of its `#[target_feature]`: calling
    //! it on a CPU without the feature is undefined behaviour, so the dispatcher hands these out
    //! only after `is_x86_feature_detected!` confirmed support. The bodies use bounds-checked
    //! slices except for the unaligned vector loads and stores, whose SAFETY is stated inline.

    use super::{Candidate, Scan, dist_body, scan_body};
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support `popcnt`.
    #[target_feature(enable = "popcnt")]
    pub(super) unsafe fn scan_popcnt(scan: &Scan<'_>, dense: bool, out: &mut Vec<Candidate>) {
        scan_body(scan, dense, out);
    }

    /// # Safety
    /// The CPU must support `popcnt`.
    #[target_feature(enable = "popcnt")]
    pub(super) unsafe fn dist_popcnt(query: &[u64], codes: &[u64], words: usize, out: &mut [u32]) {
        dist_body(query, codes, words, out);
    }

    /// Per-64-bit-lane popcount of `x`: nibble look-up with `vpshufb`, then `vpsadbw` against
    /// zero sums the eight byte counts of each lane into the low 16 bits of that lane.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn lane_popcount(x: __m256i, lut: __m256i, nibble: __m256i) -> __m256i {
        let lo = _mm256_and_si256(x, nibble);
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(x), nibble);
        let counts = _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
        _mm256_sad_epu8(counts, _mm256_setzero_si256())
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn nibble_lut() -> __m256i {
        _mm256_setr_epi8(
            0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2,
            3, 3, 4,
        )
    }

    /// Loads codes `at..at + 4` of a 16-code group.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn load4(group: &[u64; 16], at: usize) -> __m256i {
        let four: &[u64] = &group[at..at + 4];
        // SAFETY: `four` is 32 readable bytes (the slice above is bounds-checked);
        // `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_si256(four.as_ptr().cast()) }
    }

    /// `vpermd` indices moving the 64-bit lanes selected by a 4-bit mask to the front, in order.
    const COMPRESS: [[i32; 8]; 16] = {
        let mut table = [[0i32; 8]; 16];
        let mut mask = 0;
        while mask < 16 {
            let mut kept = 0;
            let mut lane = 0usize;
            while lane < 4 {
                if mask & (1 << lane) != 0 {
                    table[mask][2 * kept] = (2 * lane) as i32;
                    table[mask][2 * kept + 1] = (2 * lane + 1) as i32;
                    kept += 1;
                }
                lane += 1;
            }
            mask += 1;
        }
        table
    };

    /// Appends the codes of a 16-code group whose distances (`d[k]`, one per 64-bit lane, for
    /// codes `4k..4k + 4`) are under `threshold`, without branching on which ones: each quarter
    /// is packed into `Candidate`s, the passing ones moved to the front with `vpermd`, all four
    /// stored, and the length advanced by the number that passed.
    #[inline]
    #[target_feature(enable = "avx2,popcnt")]
    fn append_passing(d: [__m256i; 4], threshold: __m256i, index: u32, out: &mut Vec<Candidate>) {
        // Spare room for 16 more: the stores below write up to 4 slots past what is kept.
        out.reserve(16);
        let start = out.len();
        let spare = out.spare_capacity_mut();
        let low32 = _mm256_set1_epi64x(0xffff_ffff);
        let mut lane_index = _mm256_add_epi64(
            _mm256_set1_epi64x(i64::from(index)),
            _mm256_setr_epi64x(0, 1, 2, 3),
        );
        let mut kept = 0usize;
        for dk in d {
            let pass = _mm256_cmpgt_epi64(threshold, dk);
            let mask = _mm256_movemask_pd(_mm256_castsi256_pd(pass)) as usize & 15;
            // A `Candidate` is `#[repr(C)] { index: u32, distance: u32 }`: in memory, the
            // little-endian u64 `index | distance << 32`. Masking the index wraps it like
            // `u32::wrapping_add`.
            let packed = _mm256_or_si256(
                _mm256_and_si256(lane_index, low32),
                _mm256_slli_epi64::<32>(dk),
            );
            // SAFETY: reading one 32-byte row of a constant table; no alignment needed.
            let order = unsafe { _mm256_loadu_si256(COMPRESS[mask].as_ptr().cast()) };
            let front = _mm256_permutevar8x32_epi32(packed, order);
            if let Some(slots) = spare.get_mut(kept..kept + 4) {
                // SAFETY: `slots` is 4 writable `Candidate`s, 32 bytes (the bounds-checked slice
                // above never fails: `kept <= 12` and 16 slots were reserved); `storeu` has no
                // alignment requirement.
                unsafe { _mm256_storeu_si256(slots.as_mut_ptr().cast(), front) };
            }
            kept += mask.count_ones() as usize;
            lane_index = _mm256_add_epi64(lane_index, _mm256_set1_epi64x(4));
        }
        // SAFETY: the slots `start..start + kept` were written above with valid `Candidate` bit
        // patterns (any two u32s are one), and `kept <= 16 <= spare.len()`.
        unsafe { out.set_len(start + kept) };
    }

    /// # Safety
    /// The CPU must support `avx2` and `popcnt`.
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) unsafe fn scan_avx2(scan: &Scan<'_>, dense: bool, out: &mut Vec<Candidate>) {
        let (1, Some(&q0)) = (scan.words, scan.query.first()) else {
            return scan_body(scan, dense, out);
        };
        let q = _mm256_set1_epi64x(q0 as i64);
        let lut = nibble_lut();
        let nibble = _mm256_set1_epi8(0x0f);
        // In each 64-bit lane: the threshold in the low 16 bits, zero above. Distances from
        // `vpsadbw` have the same shape, so 16-bit compares test exactly the low words.
        let threshold = _mm256_set1_epi64x(i64::from(scan.accept_below.min(0x7fff)));
        if dense {
            // Dense: one append per 16 codes, unconditionally.
            out.reserve(scan.codes.len());
        }
        let mut groups = scan.codes.chunks_exact(16);
        let mut index = scan.base;
        for group in groups.by_ref() {
            let Ok(g) = <&[u64; 16]>::try_from(group) else {
                break;
            };
            let d0 = lane_popcount(_mm256_xor_si256(load4(g, 0), q), lut, nibble);
            let d1 = lane_popcount(_mm256_xor_si256(load4(g, 4), q), lut, nibble);
            let d2 = lane_popcount(_mm256_xor_si256(load4(g, 8), q), lut, nibble);
            let d3 = lane_popcount(_mm256_xor_si256(load4(g, 12), q), lut, nibble);
            let closest = _mm256_min_epu16(_mm256_min_epu16(d0, d1), _mm256_min_epu16(d2, d3));
            let any = _mm256_cmpgt_epi16(threshold, closest);
            // Sparse: the branch is rarely taken once the threshold has settled.
            if dense || _mm256_testz_si256(any, any) == 0 {
                append_passing([d0, d1, d2, d3], threshold, index, out);
            }
            index = index.wrapping_add(16);
        }
        let tail = Scan {
            codes: groups.remainder(),
            base: index,
            ..*scan
        };
        scan_body(&tail, dense, out);
    }

    /// # Safety
    /// The CPU must support `avx2` and `popcnt`.
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) unsafe fn dist_avx2(query: &[u64], codes: &[u64], words: usize, out: &mut [u32]) {
        let (1, Some(&q0)) = (words, query.first()) else {
            return dist_body(query, codes, words, out);
        };
        let q = _mm256_set1_epi64x(q0 as i64);
        let lut = nibble_lut();
        let nibble = _mm256_set1_epi8(0x0f);
        // After `d0 | d1 << 32` the u32 lanes are d0[0] d1[0] d0[1] d1[1] ...; this restores order.
        let order = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
        let mut groups = codes.chunks_exact(16);
        let mut outs = out.chunks_exact_mut(16);
        for (group, o) in groups.by_ref().zip(outs.by_ref()) {
            let Ok(g) = <&[u64; 16]>::try_from(group) else {
                break;
            };
            for at in [0, 8] {
                let d0 = lane_popcount(_mm256_xor_si256(load4(g, at), q), lut, nibble);
                let d1 = lane_popcount(_mm256_xor_si256(load4(g, at + 4), q), lut, nibble);
                let packed = _mm256_permutevar8x32_epi32(
                    _mm256_or_si256(d0, _mm256_slli_epi64::<32>(d1)),
                    order,
                );
                let eight: &mut [u32] = &mut o[at..at + 8];
                // SAFETY: `eight` is 32 writable bytes (bounds-checked slice); `storeu` has no
                // alignment requirement.
                unsafe { _mm256_storeu_si256(eight.as_mut_ptr().cast(), packed) };
            }
        }
        dist_body(query, groups.remainder(), 1, outs.into_remainder());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64: enough randomness for test data without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }

    fn random_codes(rng: &mut Rng, n: usize, words: usize, mask: u64) -> Vec<u64> {
        (0..n * words).map(|_| rng.next() & mask).collect()
    }

    fn naive_distances(query: &[u64], codes: &[u64], words: usize) -> Vec<u32> {
        codes
            .chunks_exact(words)
            .map(|code| {
                let mut d = 0;
                for (a, b) in query.iter().zip(code) {
                    let mut x = a ^ b;
                    while x != 0 {
                        d += (x & 1) as u32;
                        x >>= 1;
                    }
                }
                d
            })
            .collect()
    }

    fn naive_top(query: &[u64], codes: &[u64], words: usize, c: usize) -> Vec<Candidate> {
        let mut all: Vec<Candidate> = naive_distances(query, codes, words)
            .into_iter()
            .enumerate()
            .map(|(i, d)| Candidate {
                index: i as u32,
                distance: d,
            })
            .collect();
        all.sort_by_key(|c| (c.distance, c.index));
        all.truncate(c);
        all
    }

    /// The kernels to check: every supported one. Portable is always among them, so a CPU without
    /// the x86 extensions still exercises real code rather than passing vacuously.
    fn kernels_under_test() -> Vec<Kernel> {
        let ks: Vec<Kernel> = Kernel::ALL
            .into_iter()
            .filter(|k| k.is_supported())
            .collect();
        assert!(ks.contains(&Kernel::Portable));
        ks
    }

    #[test]
    fn unsupported_kernels_are_refused_and_supported_ones_run() {
        let q = [0u64];
        let codes = [1u64, 3, 0];
        for k in Kernel::ALL {
            let got = top_candidates_with_kernel(k, &q, &codes, 1, 2);
            if k.is_supported() {
                let want = vec![
                    Candidate {
                        index: 2,
                        distance: 0,
                    },
                    Candidate {
                        index: 0,
                        distance: 1,
                    },
                ];
                assert_eq!(got, Ok(want), "kernel {k}");
            } else {
                assert_eq!(got, Err(HammingError::UnsupportedKernel(k.name())));
            }
        }
        assert!(Kernel::detect().is_supported());
        assert_eq!(kernel_name(), Kernel::detect().name());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_detection_matches_cpu() {
        assert_eq!(
            Kernel::Popcnt.is_supported(),
            std::arch::is_x86_feature_detected!("popcnt")
        );
        // The best supported kernel must be the one picked.
        let best = if Kernel::Avx2.is_supported() {
            Kernel::Avx2
        } else if Kernel::Popcnt.is_supported() {
            Kernel::Popcnt
        } else {
            Kernel::Portable
        };
        assert_eq!(Kernel::detect(), best);
    }

    #[test]
    fn every_kernel_matches_naive_reference() {
        let mut rng = Rng(7);
        for words in [1usize, 2, 3, 4, 5] {
            // Sizes around the 16-code AVX2 group, and across the scan block boundary.
            for n in [
                0usize,
                1,
                7,
                15,
                16,
                17,
                33,
                257,
                BLOCK + 13,
                2 * BLOCK + 31,
            ] {
                // Full-entropy codes, and codes with 6 random bits, where most distances tie.
                for mask in [u64::MAX, 0b10_0100_1011] {
                    let codes = random_codes(&mut rng, n, words, mask);
                    let query = random_codes(&mut rng, 1, words, mask);
                    let want_d = naive_distances(&query, &codes, words);
                    for k in kernels_under_test() {
                        // The distance kernel (used to sample the starting threshold) on its own.
                        let mut got_d = vec![0; n];
                        // SAFETY: `k` is supported and the shapes match `DistFn`'s contract.
                        unsafe { (k.fns().dist)(&query, &codes, words, &mut got_d) };
                        assert_eq!(got_d, want_d, "distances kernel {k} words {words} n {n}");
                        // `c == n` below ranks every code, so it checks every scanned distance.
                        for c in [0, 1, 5, 100, n.saturating_sub(1), n, n + 10] {
                            let got = top_candidates_with_kernel(k, &query, &codes, words, c);
                            let want = naive_top(&query, &codes, words, c);
                            assert_eq!(
                                got,
                                Ok(want),
                                "kernel {k} words {words} n {n} c {c} mask {mask:x}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn sampled_threshold_path_is_exact() {
        let mut rng = Rng(5);
        let n = 200_003;
        let codes = random_codes(&mut rng, n, 1, u64::MAX);
        let query = random_codes(&mut rng, 1, 1, u64::MAX);
        for k in kernels_under_test() {
            let fns = k.fns();
            for c in [700, 1000, 5000] {
                let mut hist = vec![0; 4 * 65];
                // Large enough for the sampled start to be taken...
                assert!(sampled_threshold(fns, &query, &codes, 1, c, &mut hist).is_some());
                // ...and it must not change the answer.
                let got = top_candidates_with_kernel(k, &query, &codes, 1, c);
                assert_eq!(got, Ok(naive_top(&query, &codes, 1, c)), "kernel {k} c {c}");
            }
        }
    }

    #[test]
    fn misleading_sample_falls_back_to_exact_scan() {
        // Every sampled code equals the query and every other code is far: the sample suggests
        // a cut-off of 0, under which far fewer than `c` codes pass.
        let n = 200_000;
        let c = 5000;
        let query = [0x0123_4567_89ab_cdef_u64];
        let mut codes = vec![!query[0]; n];
        let mut hist = vec![0; 4 * 65];
        let wanted = SAMPLE_HITS.saturating_mul(n).div_ceil(c);
        let run = wanted.div_ceil(SAMPLE_RUNS).max(16);
        for k in 0..SAMPLE_RUNS {
            let start = k * (n / SAMPLE_RUNS);
            codes[start..start + run].fill(query[0]);
        }
        for k in kernels_under_test() {
            let fns = k.fns();
            let guess = sampled_threshold(fns, &query, &codes, 1, c, &mut hist);
            assert_eq!(guess, Some(1));
            let partial = threshold_scan(fns, &query, &codes, 1, 0, c, guess, &mut hist);
            assert!(
                partial.len() < c,
                "the guess must be misleading for this test"
            );
            let got = top_candidates_with_kernel(k, &query, &codes, 1, c);
            assert_eq!(got, Ok(naive_top(&query, &codes, 1, c)), "kernel {k}");
        }
    }

    #[test]
    fn all_equal_distances_keep_index_order() {
        let words = 2;
        let n = BLOCK + 100;
        let codes = vec![0xF0F0_u64; n * words];
        let query = [0x0F0F_u64, 0xF0F0];
        for k in kernels_under_test() {
            for c in [1, 10, 999, n] {
                let got = top_candidates_with_kernel(k, &query, &codes, words, c).unwrap();
                assert_eq!(got.len(), c);
                for (i, cand) in got.iter().enumerate() {
                    assert_eq!(cand.index as usize, i, "kernel {k}");
                    assert_eq!(cand.distance, 16);
                }
            }
        }
    }

    #[test]
    fn narrow_codes_in_one_word() {
        // 16-bit codes: high bits zero in both query and codes, so distances stay <= 16.
        let mut rng = Rng(3);
        let codes = random_codes(&mut rng, 1000, 1, 0xFFFF);
        let query = [rng.next() & 0xFFFF];
        let got = top_candidates(&query, &codes, 1, 1000).unwrap();
        assert!(got.iter().all(|c| c.distance <= 16));
        assert_eq!(got, naive_top(&query, &codes, 1, 1000));
    }

    #[test]
    fn bad_shapes_are_errors() {
        let codes = [0u64; 6];
        assert_eq!(
            top_candidates(&[0], &codes, 0, 1),
            Err(HammingError::ZeroWords)
        );
        assert_eq!(
            top_candidates(&[0], &codes, 2, 1),
            Err(HammingError::QueryLength {
                expected: 2,
                got: 1
            })
        );
        assert_eq!(
            top_candidates(&[0; 4], &codes, 4, 1),
            Err(HammingError::RaggedCodes { len: 6, words: 4 })
        );
    }

    #[test]
    fn known_distances() {
        for k in kernels_under_test() {
            let one = top_candidates_with_kernel(k, &[0b1011], &[0], 1, 1).unwrap();
            assert_eq!(one[0].distance, 3, "kernel {k}");
            let three = top_candidates_with_kernel(k, &[u64::MAX, 0, 1], &[0, 0, 0], 3, 1).unwrap();
            assert_eq!(three[0].distance, 65, "kernel {k}");
        }
    }
}
