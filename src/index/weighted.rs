//! The asymmetric candidate filter: the query keeps its real-valued projections, the passages
//! keep their bits.
//!
//! Plain Hamming distance throws away how sure the query is of each of its bits: a projection of
//! 0.001 and one of 3.0 both become one bit. Scoring the stored codes `s ∈ {−1, 1}^B` against the
//! query's margins `z` (projection minus threshold, whose sign is the query's bit) with `⟨z, s⟩`
//! keeps it. Since `⟨z, s⟩ = Σ|z_b| − 2 Σ_{b: s_b ≠ sign z_b} |z_b|`, ranking by that inner product is
//! ranking by a *weighted* Hamming distance: the sum of `|z_b|` over the bits where the code
//! disagrees with the query. With ITQ at 64 bits this needs 0.38 (20 Newsgroups) and 0.50 (R8)
//! of the candidates plain Hamming needs for recall@10 ≥ 0.99 (docs/BENCHMARKS.md), and the
//! candidates are the exact rerank, the expensive part of a query.
//!
//! The weights are quantised to 0..=31 (measured: recall at a given candidate count is the same
//! as with unquantised weights to within noise, docs/BENCHMARKS.md) and folded into one 16-entry
//! table per half byte of the code (`table[nibble] = Σ` weights of its bits that differ from the
//! query's, at most 124), so the distance of a code is a sum of table lookups that fits in 16
//! bits for codes of up to 256 bits. Two layouts are scanned:
//!
//! - row-major codes (the Hamming filter's), with the half-byte tables merged into one 256-entry
//!   table per byte: eight lookups per 64-bit code, ~0.45 G codes/s on one core;
//! - [`Blocks`]: the codes' bytes transposed in blocks of 32 codes, so that one AVX2 `vpshufb`
//!   looks up a half byte of 32 codes at once (the "fast scan" of product quantisation), about
//!   five times the rate. The searcher keeps this copy where the CPU has AVX2.
//!
//! Both give identical distances. Selection keeps a rejection threshold as the Hamming scan does
//! (see [`super::hamming`]): after `2c` survivors the buffer is cut back to the best `c`, and
//! later codes at or above the cut are not kept; on large scans a sample sets the starting
//! threshold. Ties go to the smaller index, as in the Hamming filter.

use super::hamming::{self, Candidate, HammingError};

/// Largest quantised weight of one bit: a half byte's table entry is at most 4 × 31 = 124, so
/// a byte's two lookups (at most 248) add up in a `u8` lane before widening.
const MAX_WEIGHT: f32 = 31.0;
/// Codes per block of the transposed layout: one 256-bit register of bytes.
pub const BLOCK: usize = 32;

/// A query for the asymmetric filter: its bits and its distance tables.
#[derive(Debug, Clone)]
pub struct WeightedQuery {
    /// The query's own code, as wide as the codes it is scored against (bit `b` set where its
    /// margin is positive, as the coder makes it).
    code: Vec<u64>,
    /// Per code byte, the tables of its low and high half: `2 × words × 8` tables of 16.
    nibbles: Vec<[u8; 16]>,
    /// Per code byte, the sum of its two half-byte tables for each byte value.
    bytes: Vec<[u8; 256]>,
}

impl WeightedQuery {
    /// Builds the query from its per-bit margins (bit `b` of the code is `margins[b] > 0`), for
    /// codes of `words` words; bits past `margins.len()` weigh nothing. Non-finite margins weigh
    /// nothing either, and if every margin is zero each bit weighs the same (plain Hamming).
    pub fn new(margins: &[f32], words: usize) -> Result<Self, HammingError> {
        if words == 0 {
            return Err(HammingError::ZeroWords);
        }
        if words > 4 {
            return Err(HammingError::TooWide { words });
        }
        if margins.len() > words * 64 {
            return Err(HammingError::QueryLength {
                expected: words,
                got: margins.len().div_ceil(64),
            });
        }
        let mut code = vec![0u64; words];
        for (b, &m) in margins.iter().enumerate() {
            code[b / 64] |= u64::from(m > 0.0) << (b % 64);
        }
        let largest = margins
            .iter()
            .filter(|m| m.is_finite())
            .fold(0f32, |a, m| a.max(m.abs()));
        let weight = |b: usize| -> u8 {
            match margins.get(b) {
                Some(m) if largest > 0.0 && m.is_finite() => {
                    (m.abs() / largest * MAX_WEIGHT).round() as u8
                }
                Some(_) if largest > 0.0 => 0,
                Some(_) => 1,
                None => 0,
            }
        };
        let mut nibbles = vec![[0u8; 16]; words * 16];
        for (half, table) in nibbles.iter_mut().enumerate() {
            let first = half * 4;
            let query = (code[first / 64] >> (first % 64)) as u8 & 0x0f;
            for (value, slot) in table.iter_mut().enumerate() {
                let differ = value as u8 ^ query;
                *slot = (0..4)
                    .filter(|i| differ >> i & 1 == 1)
                    .map(|i| weight(first + i))
                    .sum();
            }
        }
        let bytes = (0..words * 8)
            .map(|byte| {
                let (lo, hi) = (&nibbles[2 * byte], &nibbles[2 * byte + 1]);
                std::array::from_fn(|v| lo[v & 0x0f] + hi[v >> 4])
            })
            .collect();
        Ok(Self {
            code,
            nibbles,
            bytes,
        })
    }

    /// The query's code, for plain Hamming distances to the candidates.
    pub fn code(&self) -> &[u64] {
        &self.code
    }

    /// Weighted distance of one row-major code (`words` words).
    #[inline(always)]
    fn distance(&self, code: &[u64]) -> u32 {
        let mut d = 0u32;
        for (w, &x) in code.iter().enumerate() {
            for (b, table) in self.bytes[w * 8..w * 8 + 8].iter().enumerate() {
                d += u32::from(table[usize::from((x >> (8 * b)) as u8)]);
            }
        }
        d
    }
}

/// The survivors of a scan and the distance at or above which no later code can enter; the cuts
/// and the final order are the Hamming filter's ([`hamming::keep_best`],
/// [`hamming::finish_within`]) over the larger range of weighted distances.
struct Selector<'m> {
    /// Codes outside it are never kept (a query's filters, applied before the cut).
    mask: Option<&'m RowMask<'m>>,
    kept: Vec<Candidate>,
    accept_below: u32,
    c: usize,
    max_distance: usize,
    /// Scratch for the cuts: 4 × (maximum distance + 1) counters, reused.
    hist: Vec<u32>,
}

impl<'m> Selector<'m> {
    fn new(c: usize, words: usize, mask: Option<&'m RowMask<'m>>) -> Self {
        let max_distance = max_distance(words);
        Self {
            mask,
            kept: Vec::with_capacity(c.saturating_mul(2).min(1 << 16) + BLOCK),
            accept_below: u32::MAX,
            c,
            max_distance,
            hist: vec![0; 4 * (max_distance + 1)],
        }
    }

    /// Offers codes in increasing index order.
    #[inline(always)]
    fn offer(&mut self, index: usize, distance: u32) {
        // The mask is tested only for codes close enough to be kept: a filter costs the scan
        // (almost) nothing.
        if distance < self.accept_below && self.mask.is_none_or(|m| m.allows(index)) {
            self.kept.push(Candidate {
                index: index as u32,
                distance,
            });
            if self.kept.len() >= 2 * self.c {
                self.accept_below = hamming::keep_best(&mut self.kept, self.c, &mut self.hist).0;
            }
        }
    }

    /// The best `c`, sorted by `(distance, index)`.
    fn finish(mut self) -> Vec<Candidate> {
        hamming::finish_within(&mut self.kept, self.c, self.max_distance);
        self.kept
    }
}

/// Which codes a scan may keep: those whose group (a passage, for the rows of its units) is
/// set in `allowed`, a bit set over groups.
#[derive(Debug, Clone, Copy)]
pub struct RowMask<'a> {
    pub allowed: &'a [u64],
    /// Per code: its group.
    pub group_of: &'a [u32],
    /// How many codes are allowed (sizes the scan's starting threshold).
    pub count: usize,
}

impl RowMask<'_> {
    #[inline(always)]
    pub fn allows(&self, code: usize) -> bool {
        self.group_of.get(code).is_some_and(|&g| {
            self.allowed
                .get(g as usize / 64)
                .is_some_and(|w| w >> (g % 64) & 1 == 1)
        })
    }
}

/// The `c` row-major codes nearest to `query` by weighted distance, sorted by
/// `(distance, index)`.
pub fn top_candidates(
    query: &WeightedQuery,
    codes: &[u64],
    words: usize,
    c: usize,
) -> Result<Vec<Candidate>, HammingError> {
    top_candidates_masked(query, codes, words, c, None)
}

/// [`top_candidates`] among the codes `mask` allows.
pub fn top_candidates_masked(
    query: &WeightedQuery,
    codes: &[u64],
    words: usize,
    c: usize,
    mask: Option<&RowMask>,
) -> Result<Vec<Candidate>, HammingError> {
    // The query's code has the query's width: the Hamming filter's own shape checks apply.
    let n = hamming::validate(&query.code, codes, words)?;
    let c = c.min(mask.map_or(n, |m| m.count.min(n)));
    if c == 0 {
        return Ok(Vec::new());
    }
    let mut sel = Selector::new(c, words, mask);
    for (i, code) in codes.chunks_exact(words).enumerate() {
        sel.offer(i, query.distance(code));
    }
    Ok(sel.finish())
}

/// Codes with their bytes transposed in blocks of 32 codes (block `k`, byte `p`: byte `p` of
/// codes `32k..32k + 32`, zero past the last code), for the AVX2 scan.
#[derive(Debug, Clone)]
pub struct Blocks {
    words: usize,
    n: usize,
    bytes: Vec<u8>,
}

impl Blocks {
    /// The transposed copy of `n × words` row-major codes, or `None` where the CPU has no AVX2
    /// (the row-major scan is used there) or the codes are wider than the filter handles.
    pub fn new(codes: &[u64], words: usize) -> Option<Self> {
        if !avx2_supported() || words == 0 || words > 4 || !codes.len().is_multiple_of(words) {
            return None;
        }
        let n = codes.len() / words;
        if n > u32::MAX as usize {
            return None;
        }
        let per_block = words * 8 * BLOCK;
        let mut bytes = vec![0u8; n.div_ceil(BLOCK) * per_block];
        for (i, code) in codes.chunks_exact(words).enumerate() {
            let block = &mut bytes[(i / BLOCK) * per_block..][..per_block];
            for (w, &x) in code.iter().enumerate() {
                for b in 0..8 {
                    block[(w * 8 + b) * BLOCK + i % BLOCK] = (x >> (8 * b)) as u8;
                }
            }
        }
        Some(Self { words, n, bytes })
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

fn avx2_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`top_candidates`] over the transposed layout: the same answer, about five times faster.
pub fn top_candidates_blocks(
    query: &WeightedQuery,
    blocks: &Blocks,
    c: usize,
) -> Result<Vec<Candidate>, HammingError> {
    top_candidates_blocks_masked(query, blocks, c, None)
}

/// [`top_candidates_blocks`] among the codes `mask` allows.
pub fn top_candidates_blocks_masked(
    query: &WeightedQuery,
    blocks: &Blocks,
    c: usize,
    mask: Option<&RowMask>,
) -> Result<Vec<Candidate>, HammingError> {
    top_in_parts(query, blocks, c, mask, scan_threads(blocks.n))
}

/// [`top_candidates_blocks_masked`], the blocks scanned in `parts` contiguous ranges, one a
/// thread.
fn top_in_parts(
    query: &WeightedQuery,
    blocks: &Blocks,
    c: usize,
    mask: Option<&RowMask>,
    parts: usize,
) -> Result<Vec<Candidate>, HammingError> {
    hamming::validate(&query.code, &[], blocks.words)?;
    let c = c.min(mask.map_or(blocks.n, |m| m.count.min(blocks.n)));
    if c == 0 {
        return Ok(Vec::new());
    }
    #[cfg(target_arch = "x86_64")]
    {
        let every = 0..blocks.n.div_ceil(BLOCK);
        let all = std::slice::from_ref(&every);
        if let Some(guess) = sampled_threshold(query, blocks, c, mask) {
            let kept = scan_parts(query, blocks, c, mask, Some(guess), all, parts);
            // At least `c` codes under the guess: the true best `c` are all among them.
            if kept.len() >= c {
                return Ok(finish_kept(kept, c, blocks.words));
            }
        }
        let kept = scan_parts(query, blocks, c, mask, None, all, parts);
        Ok(finish_kept(kept, c, blocks.words))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // Unreachable: `Blocks::new` returns `None` off x86-64.
        let _ = (query, mask, parts);
        Ok(Vec::new())
    }
}

/// [`top_candidates_blocks`] over only the blocks in `ranges` (of block numbers, increasing
/// and disjoint): the lists of a partitioned index nearest to the query (see
/// [`super::partition`]). Every code of those blocks is a candidate, the others none.
pub fn top_candidates_in_blocks(
    query: &WeightedQuery,
    blocks: &Blocks,
    c: usize,
    ranges: &[std::ops::Range<usize>],
) -> Result<Vec<Candidate>, HammingError> {
    hamming::validate(&query.code, &[], blocks.words)?;
    let total = blocks.n.div_ceil(BLOCK);
    let ranges: Vec<std::ops::Range<usize>> = ranges
        .iter()
        .map(|r| r.start.min(total)..r.end.min(total))
        .filter(|r| !r.is_empty())
        .collect();
    let scanned: usize = ranges.iter().map(|r| r.len()).sum();
    let c = c.min(scanned * BLOCK).min(blocks.n);
    if c == 0 {
        return Ok(Vec::new());
    }
    #[cfg(target_arch = "x86_64")]
    {
        let kept = scan_parts(
            query,
            blocks,
            c,
            None,
            None,
            &ranges,
            scan_threads(scanned * BLOCK),
        );
        Ok(finish_kept(kept, c, blocks.words))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // Unreachable: `Blocks::new` returns `None` off x86-64.
        Ok(Vec::new())
    }
}

/// `ranges` (holding `total` blocks) cut into `parts` pieces of about as many blocks, in order.
#[cfg(any(target_arch = "x86_64", test))]
fn split_ranges(
    ranges: &[std::ops::Range<usize>],
    total: usize,
    parts: usize,
) -> Vec<Vec<std::ops::Range<usize>>> {
    let parts = parts.clamp(1, total.max(1));
    let mut pieces = vec![Vec::new(); parts];
    let mut done = 0usize;
    for r in ranges {
        let mut start = r.start;
        while start < r.end {
            let piece = (done * parts / total).min(parts - 1);
            // Blocks left before the next piece begins.
            let room = ((piece + 1) * total).div_ceil(parts) - done;
            let end = r.end.min(start + room.max(1));
            pieces[piece].push(start..end);
            done += end - start;
            start = end;
        }
    }
    pieces.retain(|p| !p.is_empty());
    pieces
}

/// Codes from which a scan is split across threads. The scan of a million 128-bit codes
/// reads 16 MB, and one core waits on much of it: two scanned 5 M such codes 1.5 times as fast
/// as one (docs/BENCHMARKS.md).
const PARALLEL_CODES: usize = 1 << 18;

/// Threads a scan of `codes` codes is split across (see [`PARALLEL_CODES`]).
fn scan_threads(codes: usize) -> usize {
    if codes >= PARALLEL_CODES {
        rayon::current_num_threads().clamp(1, 8)
    } else {
        1
    }
}

/// The survivors of a scan of the blocks in `ranges` (increasing and disjoint; each piece's
/// survivors in index order, concatenated), cut into `parts` pieces of about as many blocks, one
/// a thread; `guess` starts every piece's threshold.
#[cfg(target_arch = "x86_64")]
fn scan_parts(
    query: &WeightedQuery,
    blocks: &Blocks,
    c: usize,
    mask: Option<&RowMask>,
    guess: Option<u32>,
    ranges: &[std::ops::Range<usize>],
    parts: usize,
) -> Vec<Candidate> {
    use rayon::prelude::*;
    let scan = |piece: &Vec<std::ops::Range<usize>>| {
        let mut sel = Selector::new(c, blocks.words, mask);
        if let Some(g) = guess {
            sel.accept_below = g;
        }
        for r in piece {
            // SAFETY: `Blocks` exist only where `avx2_supported()` said yes (see `Blocks::new`),
            // and the query's width was checked against theirs.
            unsafe { x86::scan_blocks(query, blocks, r.clone(), 1, &mut sel) };
        }
        sel.kept
    };
    let total = ranges.iter().map(|r| r.len()).sum();
    match split_ranges(ranges, total, parts).as_slice() {
        [] => Vec::new(),
        [one] => scan(one),
        pieces => {
            let kept: Vec<Vec<Candidate>> = pieces.par_iter().map(scan).collect();
            kept.concat()
        }
    }
}

/// The best `c` of survivors in index order, sorted by `(distance, index)`.
#[cfg(target_arch = "x86_64")]
fn finish_kept(mut kept: Vec<Candidate>, c: usize, words: usize) -> Vec<Candidate> {
    hamming::finish_within(&mut kept, c, max_distance(words));
    kept
}

/// The largest weighted distance of a code of `words` words: per code byte, two half-byte
/// entries of 4 × [`MAX_WEIGHT`].
fn max_distance(words: usize) -> usize {
    words * 8 * 2 * 4 * MAX_WEIGHT as usize
}

/// A starting threshold from every 32nd block, set a margin above the distance under which `c`
/// of all `n` codes are expected, so that the scan appends little more than `c` codes instead
/// of working its threshold down from the top (about `c · ln(n / c)` appends, two thirds of the
/// time of a `c` = 10,000 query over 1 M codes). Only an optimisation: the caller checks that
/// at least `c` codes passed it and rescans without it otherwise.
#[cfg(target_arch = "x86_64")]
fn sampled_threshold(
    query: &WeightedQuery,
    blocks: &Blocks,
    c: usize,
    mask: Option<&RowMask>,
) -> Option<u32> {
    const STRIDE: usize = 32;
    // What the sample is a sample of: the allowed codes.
    let n = mask.map_or(blocks.n, |m| m.count);
    if blocks.n < 64 * STRIDE * BLOCK || c.saturating_mul(8) > n {
        return None;
    }
    // A selector that keeps every allowed code it is offered.
    let mut sample = Selector::new(usize::MAX / 4, blocks.words, mask);
    // SAFETY: as in `top_candidates_blocks`, the caller.
    unsafe {
        x86::scan_blocks(
            query,
            blocks,
            0..blocks.n.div_ceil(BLOCK),
            STRIDE,
            &mut sample,
        )
    };
    let m = sample.kept.len();
    let expected = c as f64 * m as f64 / n as f64;
    let want = (expected * 1.25 + 3.0 * expected.sqrt() + 2.0).ceil() as usize;
    if want >= m {
        return None;
    }
    let mut d: Vec<u32> = sample.kept.iter().map(|k| k.distance).collect();
    let (_, &mut t, _) = d.select_nth_unstable(want);
    Some(t + 1)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BLOCK, Blocks, Selector, WeightedQuery};
    use std::arch::x86_64::*;

    /// Bytes of blocks ahead of the one being scored that are asked of the memory meanwhile.
    /// The scan's loads sit among a dozen arithmetic instructions each, which leaves the core
    /// fewer reads in flight than a plain read keeps: asking ahead made a one-thread scan of
    /// 5 M 128-bit codes 12 % faster here (docs/BENCHMARKS.md).
    const SCAN_AHEAD: usize = 4096;

    /// Sampled blocks ahead of the one being scored that a sampling pass asks for.
    const SAMPLE_AHEAD: usize = 4;

    /// Every `stride`-th block of `range`: for each code byte, two `vpshufb` lookups (low and
    /// high half byte of 32 codes), added in bytes (at most 248), widened to 16 bits and
    /// accumulated; then a compare against the selector's threshold, and only where some code
    /// passes, a look at the lanes.
    ///
    /// # Safety
    /// The CPU must have AVX2, and the query's code must be `blocks.words` wide.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn scan_blocks(
        query: &WeightedQuery,
        blocks: &Blocks,
        range: std::ops::Range<usize>,
        stride: usize,
        sel: &mut Selector<'_>,
    ) {
        let bytes_per_code = blocks.words * 8;
        let per_block = bytes_per_code * BLOCK;
        let low = _mm256_set1_epi8(0x0f);
        let zero = _mm256_setzero_si256();
        // Each 16-entry table in both 128-bit lanes, as `vpshufb` looks up within a lane.
        let tables: Vec<__m256i> = query
            .nibbles
            .iter()
            .map(|t| {
                // SAFETY: `t` is 16 readable bytes; the load is unaligned.
                let x = unsafe { _mm_loadu_si128(t.as_ptr().cast()) };
                _mm256_broadcastsi128_si256(x)
            })
            .collect();
        let mut lanes = [0u16; 32];
        for (k, block) in blocks
            .bytes
            .chunks_exact(per_block)
            .enumerate()
            .skip(range.start)
            .take(range.len())
            .step_by(stride.max(1))
        {
            // A sampling pass (stride > 1) asks for the blocks it will sample next, each a
            // memory latency of its own, since the hardware's prefetcher does not follow a
            // stride of many pages.
            let ahead = if stride <= 1 {
                SCAN_AHEAD
            } else {
                SAMPLE_AHEAD * stride * per_block
            };
            let ahead = block.as_ptr().wrapping_add(ahead) as *const i8;
            for line in (0..per_block).step_by(64) {
                // A prefetch never faults, whatever the address.
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line));
            }
            // Codes 0–7 and 16–23 of the block accumulate in `a`, 8–15 and 24–31 in `b`
            // (the in-lane order of the byte unpacks).
            let mut a = zero;
            let mut b = zero;
            for p in 0..bytes_per_code {
                // SAFETY: `block` holds `bytes_per_code × 32` bytes; the load is unaligned.
                let v = unsafe { _mm256_loadu_si256(block.as_ptr().add(p * BLOCK).cast()) };
                let lo = _mm256_and_si256(v, low);
                let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                let s = _mm256_add_epi8(
                    _mm256_shuffle_epi8(tables[2 * p], lo),
                    _mm256_shuffle_epi8(tables[2 * p + 1], hi),
                );
                a = _mm256_add_epi16(a, _mm256_unpacklo_epi8(s, zero));
                b = _mm256_add_epi16(b, _mm256_unpackhi_epi8(s, zero));
            }
            // Distances are at most 32 × 248 < 2^15, so the signed compare is exact.
            let limit = _mm256_set1_epi16(sel.accept_below.min(i16::MAX as u32) as i16);
            let pass_a = _mm256_movemask_epi8(_mm256_cmpgt_epi16(limit, a)) as u32;
            let pass_b = _mm256_movemask_epi8(_mm256_cmpgt_epi16(limit, b)) as u32;
            if pass_a | pass_b == 0 {
                continue;
            }
            // SAFETY: `lanes` holds 32 u16, two registers' worth; the stores are unaligned.
            unsafe {
                _mm256_storeu_si256(lanes.as_mut_ptr().cast(), a);
                _mm256_storeu_si256(lanes.as_mut_ptr().add(16).cast(), b);
            }
            // Back to code order (a: codes 0–7 then 16–23; b: 8–15 then 24–31), offering only
            // the codes that passed: two mask bits per 16-bit lane.
            let mut passed = [0u32; BLOCK];
            let mut count = 0;
            for (mask, offset) in [(pass_a, 0usize), (pass_b, 16usize)] {
                let mut m = mask & 0x5555_5555;
                while m != 0 {
                    let lane = (m.trailing_zeros() / 2) as usize;
                    m &= m - 1;
                    let code = match (offset, lane) {
                        (0, 0..=7) => lane,
                        (0, _) => lane + 8,
                        (_, 0..=7) => lane + 8,
                        (_, _) => lane + 16,
                    };
                    passed[count] = code as u32;
                    count += 1;
                }
            }
            // Offered in index order, as the selector's tie-break needs.
            passed[..count].sort_unstable();
            let base = k * BLOCK;
            for &code in &passed[..count] {
                let code = code as usize;
                let i = base + code;
                if i >= blocks.n {
                    break;
                }
                let lane = match code {
                    0..=7 => code,
                    8..=15 => 16 + code - 8,
                    16..=23 => 8 + code - 16,
                    _ => code,
                };
                sel.offer(i, u32::from(lanes[lane]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// Weighted distance by its definition, bit by bit, unquantised.
    fn reference(margins: &[f32], code: &[u64]) -> f32 {
        margins
            .iter()
            .enumerate()
            .filter(|&(b, &m)| ((code[b / 64] >> (b % 64)) & 1 == 1) != (m > 0.0))
            .map(|(_, m)| m.abs())
            .sum()
    }

    fn random(words: usize, bits: usize, n: usize, seed: u64) -> (Vec<f32>, Vec<u64>) {
        let mut rng = SplitMix64::new(seed);
        let margins: Vec<f32> = (0..bits).map(|_| rng.gaussian() as f32).collect();
        let mut codes: Vec<u64> = (0..n * words).map(|_| rng.next_u64()).collect();
        if !bits.is_multiple_of(64) {
            for c in codes.chunks_mut(words) {
                c[words - 1] &= (1u64 << (bits % 64)) - 1;
            }
        }
        (margins, codes)
    }

    #[test]
    fn distances_follow_the_margins_they_were_quantised_from() {
        for (words, bits) in [(1, 64), (1, 32), (2, 128), (4, 200)] {
            let (margins, codes) = random(words, bits, 300, 7);
            let q = WeightedQuery::new(&margins, words).unwrap();
            let largest = margins.iter().fold(0f32, |a, m| a.max(m.abs()));
            for code in codes.chunks(words) {
                let want = reference(&margins, code) / largest * MAX_WEIGHT;
                let got = q.distance(code) as f32;
                // Each bit is rounded by at most half a step.
                assert!(
                    (want - got).abs() <= 0.5 * bits as f32 + 1e-3,
                    "{want} vs {got}"
                );
            }
        }
    }

    #[test]
    fn the_query_code_is_the_sign_of_its_margins() {
        let q = WeightedQuery::new(&[0.5, -1.0, 2.0, 0.0], 1).unwrap();
        assert_eq!(q.code(), &[0b101]);
        // A code equal to the query's own is at distance 0.
        let top = top_candidates(&q, &[0b111, 0b101, 0b010], 1, 3).unwrap();
        assert_eq!(
            top[0],
            Candidate {
                index: 1,
                distance: 0
            }
        );
    }

    #[test]
    fn selection_is_the_exact_top_c_with_ties_to_the_smaller_index() {
        for (words, bits, n, c) in [(1, 64, 5000, 37), (2, 128, 3000, 500), (1, 16, 4000, 100)] {
            let (margins, codes) = random(words, bits, n, 11);
            let q = WeightedQuery::new(&margins, words).unwrap();
            let mut all: Vec<Candidate> = codes
                .chunks(words)
                .enumerate()
                .map(|(i, code)| Candidate {
                    index: i as u32,
                    distance: q.distance(code),
                })
                .collect();
            all.sort_by_key(|k| (k.distance, k.index));
            all.truncate(c);
            assert_eq!(top_candidates(&q, &codes, words, c).unwrap(), all);
        }
    }

    #[test]
    fn the_blocked_scan_gives_the_row_major_answer() {
        let Some(_) = Blocks::new(&[0], 1) else {
            // Without AVX2 there are no blocks, and the searcher scans row-major codes.
            assert!(!avx2_supported());
            return;
        };
        for (words, bits, n, c) in [
            (1, 64, 5000, 37),
            (1, 64, 1000, 1000),
            (1, 16, 77, 5),
            (2, 128, 3001, 500),
            (3, 150, 999, 64),
            (4, 256, 2050, 300),
            // Large enough for the sampled starting threshold.
            (1, 64, 70_000, 500),
            (2, 128, 70_000, 5000),
        ] {
            let (margins, codes) = random(words, bits, n, 5);
            let q = WeightedQuery::new(&margins, words).unwrap();
            let blocks = Blocks::new(&codes, words).unwrap();
            assert_eq!(blocks.len(), n);
            assert_eq!(
                top_candidates_blocks(&q, &blocks, c).unwrap(),
                top_candidates(&q, &codes, words, c).unwrap(),
                "{words} words, {n} codes, c = {c}"
            );
        }
        let q = WeightedQuery::new(&[1.0; 64], 1).unwrap();
        let wide = Blocks::new(&[0, 0], 2).unwrap();
        assert!(top_candidates_blocks(&q, &wide, 1).is_err());
        // A mask keeps the best `c` of the allowed codes, in either layout, the sampled
        // threshold included.
        for (n, c, every) in [(70_000, 500, 3), (70_000, 50, 997), (5000, 37, 2)] {
            let (margins, codes) = random(1, 64, n, 9);
            let q = WeightedQuery::new(&margins, 1).unwrap();
            let blocks = Blocks::new(&codes, 1).unwrap();
            // Codes in pairs (a passage's two units); every `every`-th pair allowed.
            let group_of: Vec<u32> = (0..n as u32).map(|i| i / 2).collect();
            let groups = n.div_ceil(2);
            let mut allowed = vec![0u64; groups.div_ceil(64)];
            for g in (0..groups).step_by(every) {
                allowed[g / 64] |= 1 << (g % 64);
            }
            let count = (0..n).filter(|&i| (i / 2) % every == 0).count();
            let mask = RowMask {
                allowed: &allowed,
                group_of: &group_of,
                count,
            };
            let mut want = top_candidates(&q, &codes, 1, n).unwrap();
            want.retain(|k| mask.allows(k.index as usize));
            want.truncate(c);
            assert_eq!(
                top_candidates_masked(&q, &codes, 1, c, Some(&mask)).unwrap(),
                want
            );
            assert_eq!(
                top_candidates_blocks_masked(&q, &blocks, c, Some(&mask)).unwrap(),
                want,
                "{n} codes, every {every}"
            );
        }
        assert!(top_candidates_blocks(&q, &wide, 1).is_err());
        assert!(Blocks::new(&[0; 5], 5).is_none());
    }

    #[test]
    fn a_scan_split_across_threads_gives_the_one_thread_answer() {
        if Blocks::new(&[0], 1).is_none() {
            assert!(!avx2_supported());
            return;
        }
        // 16-bit codes tie often: the split must keep the smaller indexes across parts.
        for (words, bits, n, c) in [(1, 16, 70_001, 3000), (2, 128, 100_003, 5000)] {
            let (margins, codes) = random(words, bits, n, 13);
            let q = WeightedQuery::new(&margins, words).unwrap();
            let blocks = Blocks::new(&codes, words).unwrap();
            let want = top_candidates(&q, &codes, words, c).unwrap();
            for parts in [1, 2, 3, 8] {
                assert_eq!(
                    top_in_parts(&q, &blocks, c, None, parts).unwrap(),
                    want,
                    "{bits} bits, {parts} parts"
                );
            }
        }
    }

    #[test]
    fn a_scan_of_some_blocks_keeps_the_best_of_their_codes_only() {
        if Blocks::new(&[0], 1).is_none() {
            assert!(!avx2_supported());
            return;
        }
        let (words, bits, n, c) = (2, 128, 300_001, 700);
        let (margins, codes) = random(words, bits, n, 21);
        let q = WeightedQuery::new(&margins, words).unwrap();
        let blocks = Blocks::new(&codes, words).unwrap();
        let total = n.div_ceil(BLOCK);
        // Over every block: the whole scan's answer.
        assert_eq!(
            top_candidates_in_blocks(&q, &blocks, c, std::slice::from_ref(&(0..total))).unwrap(),
            top_candidates(&q, &codes, words, c).unwrap()
        );
        // Over some (large enough to be split across threads, the last one cut short): the
        // best of exactly their codes.
        let ranges = [3..1000, 1500..1501, 2000..7000, total - 10..total + 5];
        let inside = |i: usize| ranges.iter().any(|r| r.contains(&(i / BLOCK)));
        let mut want = top_candidates(&q, &codes, words, n).unwrap();
        want.retain(|k| inside(k.index as usize));
        want.truncate(c);
        assert_eq!(
            top_candidates_in_blocks(&q, &blocks, c, &ranges).unwrap(),
            want
        );
        assert!(
            top_candidates_in_blocks(&q, &blocks, c, &[])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn ranges_split_into_pieces_of_about_as_many_blocks_in_order() {
        let ranges = [0..3, 5..12, 20..21];
        for parts in 1..=12 {
            let pieces = split_ranges(&ranges, 11, parts);
            assert_eq!(pieces.len(), parts.min(11));
            let flat: Vec<usize> = pieces.iter().flatten().flat_map(|r| r.clone()).collect();
            let want: Vec<usize> = ranges.iter().flat_map(|r| r.clone()).collect();
            assert_eq!(flat, want, "{parts} parts");
            let sizes: Vec<usize> = pieces
                .iter()
                .map(|p| p.iter().map(|r| r.len()).sum())
                .collect();
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        }
    }

    #[test]
    fn zero_margins_fall_back_to_hamming_and_bad_shapes_are_errors() {
        let q = WeightedQuery::new(&[0.0; 64], 1).unwrap();
        let top = top_candidates(&q, &[u64::MAX, 0, 1], 1, 3).unwrap();
        assert_eq!(
            top.iter().map(|t| t.distance).collect::<Vec<_>>(),
            vec![0, 1, 64]
        );
        assert!(WeightedQuery::new(&[1.0; 65], 1).is_err());
        assert!(WeightedQuery::new(&[1.0], 0).is_err());
        assert!(top_candidates(&q, &[0, 0, 0], 2, 1).is_err());
        let q2 = WeightedQuery::new(&[1.0; 64], 2).unwrap();
        assert!(top_candidates(&q2, &[0, 0, 0], 2, 1).is_err());
        assert!(top_candidates(&q, &[], 1, 5).unwrap().is_empty());
        // A NaN margin weighs nothing; the rest still rank.
        let q3 = WeightedQuery::new(&[f32::NAN, 1.0], 1).unwrap();
        let top = top_candidates(&q3, &[0b00, 0b10, 0b11], 1, 3).unwrap();
        assert_eq!(
            top.iter()
                .map(|t| (t.index, t.distance))
                .collect::<Vec<_>>(),
            vec![(1, 0), (2, 0), (0, 31)]
        );
    }
}
