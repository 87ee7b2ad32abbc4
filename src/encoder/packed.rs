//! `x · W + b` with the weight matrix packed once at load time.
//!
//! A general GEMM (candle's `gemm`) takes its operands in whatever layout they come and packs them
//! on every call: for the encoder's weight products that was an eighth of a batch's time, and for
//! a one-line query, whose dozen token rows use each weight only a dozen times, reading 42 MB of
//! weights in strided column strips made the products memory-bound (11 ms for a 12-token query).
//! Here the weights are stored as contiguous panels of [`NR`] output columns, so every product
//! streams them front to back, and the bias is the accumulators' starting value.
//!
//! The AVX2+FMA micro-kernel (picked at run time) keeps a 6 × 16 tile of the output in twelve
//! registers; other CPUs run a portable loop over the same layout. (A 4 × 24 tile, three FMAs per
//! broadcast instead of two, needs all sixteen registers and ran at half the speed.)

use super::kernels::{self, Act};

/// Output columns per packed panel.
pub(crate) const NR: usize = 8 * NV;
/// AVX registers per panel row.
const NV: usize = 2;
/// Rows of `x` per micro-kernel call (12 accumulators + 2 weight registers + 1 broadcast).
const MR: usize = 6;
/// Depth per pass: a panel slice of `KC × NR` floats (24 KB) stays in L1 while the packed rows
/// of `x` stream past it; 384 (a MiniLM layer's width) measured 1.5 % faster than 256.
const KC: usize = 384;

/// A `(k, n)` weight matrix (for `x · W`) in panels of [`NR`] columns, the last one zero-padded,
/// cut into depth blocks of [`KC`] rows: block by block, panel by panel, row by row, which is
/// exactly the order the kernel reads them, so a product streams the weights front to back.
pub(crate) struct Packed {
    k: usize,
    n: usize,
    data: Vec<f32>,
}

impl Packed {
    /// Packs the output rows of PyTorch-layout `(out, k)` weights, concatenated in order (Q, K
    /// and V into one matrix), each part scaled by its factor. Reading the checkpoint's layout
    /// directly, without a transposed copy, keeps model loading (a one-shot query pays for it)
    /// to one pass over the weights.
    pub(crate) fn from_rows(parts: &[(&[f32], f32)], k: usize) -> Self {
        let n: usize = parts.iter().map(|(w, _)| w.len() / k.max(1)).sum();
        for (w, _) in parts {
            assert_eq!(
                w.len() % k.max(1),
                0,
                "weight of {} values for width {k}",
                w.len()
            );
        }
        let mut data = vec![0f32; n.div_ceil(NR) * k * NR];
        let rows = parts
            .iter()
            .flat_map(|&(w, scale)| w.chunks_exact(k.max(1)).map(move |r| (r, scale)));
        // Output columns in order, so each panel's 16 columns are written while its block is
        // in cache.
        for (c, (row, scale)) in rows.enumerate() {
            let (j, cc) = (c / NR, c % NR);
            for (p, &v) in row.iter().enumerate() {
                data[Self::offset(k, n, j, p) + cc] = v * scale;
            }
        }
        Self { k, n, data }
    }

    /// Where row `p` of panel `j` starts.
    fn offset(k: usize, n: usize, j: usize, p: usize) -> usize {
        let p0 = p / KC * KC;
        let kc = KC.min(k - p0);
        p0 * n.div_ceil(NR) * NR + (j * kc + (p - p0)) * NR
    }
}

/// `y[r] = act(x[r] · W + bias)` for `m` rows; `x` rows start every `ldx` values, `y` rows
/// every `ldy`. With `parallel`, the panels are shared out over the current rayon pool: for a
/// lone text, which has no other text to run beside it.
///
/// The bias is the accumulators' first value and the activation is applied to each finished
/// tile while it is in L1: neither costs a pass over `y`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dense(
    x: &[f32],
    ldx: usize,
    m: usize,
    w: &Packed,
    bias: &[f32],
    act: Option<Act>,
    y: &mut [f32],
    ldy: usize,
    parallel: bool,
) {
    let (k, n) = (w.k, w.n);
    assert_eq!(bias.len(), n);
    assert!(ldx >= k && ldy >= n);
    if m == 0 {
        return;
    }
    // These bounds make every pointer offset in the kernels below land inside the slices.
    assert!(x.len() >= (m - 1) * ldx + k, "x too short");
    assert!(y.len() >= (m - 1) * ldy + n, "y too short");
    let panels = n.div_ceil(NR);
    let threads = if parallel {
        rayon::current_num_threads().min(panels)
    } else {
        1
    };
    let product = Product {
        x,
        ldx,
        m,
        w,
        bias,
        act,
        y: y.as_mut_ptr(),
        ldy,
    };
    let run = |part: usize| {
        let range = panels * part / threads..panels * (part + 1) / threads;
        // SAFETY: the shapes were checked above, and the parts' panel ranges are disjoint, so
        // no two threads write the same element of y.
        unsafe { compute(&product, range) }
    };
    if threads > 1 {
        use rayon::prelude::*;
        (0..threads).into_par_iter().for_each(run);
    } else {
        run(0);
    }
}

/// One product `y = act(x · W + bias)` whose shapes [`dense`] has checked: `x` holds `m` rows of
/// `w.k` values at stride `ldx`, `y` `m` rows of `w.n` at stride `ldy`, `bias` `w.n` values.
struct Product<'a> {
    x: &'a [f32],
    ldx: usize,
    m: usize,
    w: &'a Packed,
    bias: &'a [f32],
    act: Option<Act>,
    y: *mut f32,
    ldy: usize,
}

// SAFETY: the threads that share a product write disjoint column panels of `y` (see `dense`).
unsafe impl Sync for Product<'_> {}

/// The columns of `panels` of a product.
///
/// # Safety
/// `p`'s shapes must hold (as [`dense`] checks), and no other thread may touch these columns of
/// `y` meanwhile.
unsafe fn compute(p: &Product<'_>, panels: std::ops::Range<usize>) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has the features; the caller guarantees the rest.
            unsafe { avx2::compute(p, panels) };
            return;
        }
    }
    // SAFETY: as above.
    unsafe { portable(p, panels) }
}

/// [`compute`] over the packed layout, without SIMD intrinsics.
///
/// # Safety
/// As [`compute`].
unsafe fn portable(prod: &Product<'_>, panels: std::ops::Range<usize>) {
    let Product {
        x,
        ldx,
        m,
        w,
        bias,
        act,
        y,
        ldy,
    } = *prod;
    let (k, n) = (w.k, w.n);
    for j in panels {
        let cols = NR.min(n - j * NR);
        for r in 0..m {
            // SAFETY: row r's columns j·NR..j·NR+cols lie inside y (caller's guarantee).
            let yr = unsafe { std::slice::from_raw_parts_mut(y.add(r * ldy + j * NR), cols) };
            let mut acc = [0f32; NR];
            acc[..cols].copy_from_slice(&bias[j * NR..j * NR + cols]);
            let xr = &x[r * ldx..r * ldx + k];
            for (p, &xv) in xr.iter().enumerate() {
                let at = Packed::offset(k, n, j, p);
                for (a, &wv) in acc.iter_mut().zip(&w.data[at..at + NR]) {
                    *a += xv * wv;
                }
            }
            yr.copy_from_slice(&acc[..cols]);
            if let Some(act) = act {
                kernels::activate_in_place(yr, act);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Act, KC, MR, NR, NV, Packed, Product};
    use crate::encoder::kernels::activate_slice;

    /// How far ahead of the panel row being multiplied to prefetch: 32 rows of 64 bytes.
    const PREFETCH: usize = 32 * NR;

    thread_local! {
        /// The current depth block of `x`, re-laid out per [`MR`]-row block as `[p][r]`, so the
        /// micro-kernel's broadcasts read one sequential stream instead of six strided rows.
        static XPACK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// The columns of `panels` of a product. Loop order: depth blocks, then panels, then row
    /// blocks, so one panel slice (24 KB) serves every row block from L1 while the packed rows
    /// stream from L2.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA, and the conditions of [`super::compute`] hold.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn compute(prod: &Product<'_>, panels: std::ops::Range<usize>) {
        let Product {
            x,
            ldx,
            m,
            w,
            bias,
            act,
            y,
            ldy,
        } = *prod;
        let (k, n) = (w.k, w.n);
        let blocks = m.div_ceil(MR);
        XPACK.with_borrow_mut(|xpack| {
            if xpack.len() < blocks * MR * KC {
                xpack.resize(blocks * MR * KC, 0.0);
            }
            let yp = y;
            let mut p0 = 0;
            while p0 < k {
                let kc = KC.min(k - p0);
                for b in 0..blocks {
                    let rows = MR.min(m - b * MR);
                    let dst = &mut xpack[b * MR * KC..(b + 1) * MR * KC];
                    for r in 0..rows {
                        let src = &x[(b * MR + r) * ldx + p0..(b * MR + r) * ldx + p0 + kc];
                        for (p, &v) in src.iter().enumerate() {
                            dst[p * MR + r] = v;
                        }
                    }
                }
                let first = p0 == 0;
                let last = p0 + kc == k;
                for j in panels.clone() {
                    let cols = NR.min(n - j * NR);
                    let mut b0 = [0f32; NR];
                    b0[..cols].copy_from_slice(&bias[j * NR..j * NR + cols]);
                    let init = first.then_some(&b0);
                    let act = if last { act } else { None };
                    // SAFETY (all offsets): p0 + kc ≤ k, j < panels, b < blocks, and the caller
                    // guarantees the row extents of y.
                    let panel = unsafe { w.data.as_ptr().add(Packed::offset(k, n, j, p0)) };
                    for b in 0..blocks {
                        let rows = MR.min(m - b * MR);
                        let xt = xpack[b * MR * KC..].as_ptr();
                        let yt = unsafe { yp.add(b * MR * ldy + j * NR) };
                        // Only the first row block reads the panel slice from memory; the
                        // others find it in L1, where prefetching would only cost issue slots.
                        unsafe {
                            if b == 0 {
                                tile_rows::<true>(rows, xt, panel, kc, yt, ldy, cols, init, act)
                            } else {
                                tile_rows::<false>(rows, xt, panel, kc, yt, ldy, cols, init, act)
                            }
                        }
                    }
                }
                p0 += kc;
            }
        });
    }

    /// [`tile`] for `rows` (1..=6) rows.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_rows<const FETCH: bool>(
        rows: usize,
        x: *const f32,
        panel: *const f32,
        kc: usize,
        y: *mut f32,
        ldy: usize,
        cols: usize,
        init: Option<&[f32; NR]>,
        act: Option<Act>,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match rows {
                6 => tile::<6, FETCH>(x, panel, kc, y, ldy, cols, init, act),
                5 => tile::<5, FETCH>(x, panel, kc, y, ldy, cols, init, act),
                4 => tile::<4, FETCH>(x, panel, kc, y, ldy, cols, init, act),
                3 => tile::<3, FETCH>(x, panel, kc, y, ldy, cols, init, act),
                2 => tile::<2, FETCH>(x, panel, kc, y, ldy, cols, init, act),
                _ => tile::<1, FETCH>(x, panel, kc, y, ldy, cols, init, act),
            }
        }
    }

    /// `R` rows × `cols` (≤ 16) columns of `y` (or of `init`, the bias, on the first depth
    /// block) += a packed `kc × MR` block of `x` (first `R` rows used) · a `kc × 16` panel
    /// slice; then `act` on the stored tile (last depth block). With `FETCH`, the panel rows a
    /// little ahead are prefetched: a 12-token query is bound by streaming the 42 MB of weights
    /// from memory, and this took it from 4.9 to 4.2 ms.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize, const FETCH: bool>(
        x: *const f32,
        panel: *const f32,
        kc: usize,
        y: *mut f32,
        ldy: usize,
        cols: usize,
        init: Option<&[f32; NR]>,
        act: Option<Act>,
    ) {
        // SAFETY: the caller passes pointers valid for kc × MR (x), kc × 16 (panel) and R rows
        // of `cols` (y) values.
        unsafe {
            let mut buf = [[0f32; NR]; R];
            let mut acc = [[_mm256_setzero_ps(); NV]; R];
            for (r, a) in acc.iter_mut().enumerate() {
                let src = if let Some(b) = init {
                    b.as_ptr()
                } else if cols == NR {
                    y.add(r * ldy) as *const f32
                } else {
                    std::ptr::copy_nonoverlapping(y.add(r * ldy), buf[r].as_mut_ptr(), cols);
                    buf[r].as_ptr()
                };
                for (v, av) in a.iter_mut().enumerate() {
                    *av = _mm256_loadu_ps(src.add(8 * v));
                }
            }
            let mut xp = x;
            let mut wp = panel;
            for _ in 0..kc {
                if FETCH {
                    _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(PREFETCH) as *const i8);
                }
                let mut w = [_mm256_setzero_ps(); NV];
                for (v, wv) in w.iter_mut().enumerate() {
                    *wv = _mm256_loadu_ps(wp.add(8 * v));
                }
                for (r, a) in acc.iter_mut().enumerate() {
                    let xb = _mm256_broadcast_ss(&*xp.add(r));
                    for (av, &wv) in a.iter_mut().zip(&w) {
                        *av = _mm256_fmadd_ps(xb, wv, *av);
                    }
                }
                xp = xp.add(MR);
                wp = wp.add(NR);
            }
            for (r, a) in acc.iter().enumerate() {
                let dst = if cols == NR {
                    y.add(r * ldy)
                } else {
                    buf[r].as_mut_ptr()
                };
                for (v, av) in a.iter().enumerate() {
                    _mm256_storeu_ps(dst.add(8 * v), *av);
                }
                if cols != NR {
                    std::ptr::copy_nonoverlapping(buf[r].as_ptr(), y.add(r * ldy), cols);
                }
                if let Some(act) = act {
                    activate_slice::<true>(
                        std::slice::from_raw_parts_mut(y.add(r * ldy), cols),
                        act,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// `x · w + bias` in f64, `w` a row-major `(k, n)` matrix: the reference for the packed
    /// and the int8 products.
    pub(in crate::encoder) fn naive(
        x: &[f32],
        m: usize,
        k: usize,
        w: &[f32],
        n: usize,
        bias: &[f32],
    ) -> Vec<f64> {
        let mut y = vec![0f64; m * n];
        for r in 0..m {
            for c in 0..n {
                y[r * n + c] = bias[c] as f64
                    + (0..k)
                        .map(|p| x[r * k + p] as f64 * w[p * n + c] as f64)
                        .sum::<f64>();
            }
        }
        y
    }

    /// Packs a row-major `(k, n)` matrix through the `(out, in)` constructor.
    fn pack(w: &[f32], k: usize, n: usize) -> Packed {
        let rows: Vec<f32> = (0..n)
            .flat_map(|c| (0..k).map(move |p| w[p * n + c]))
            .collect();
        Packed::from_rows(&[(&rows, 1.0)], k)
    }

    /// Deterministic values in [-1, 1] (shared with the int8 products' tests).
    pub(in crate::encoder) fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    #[test]
    fn packed_products_match_a_naive_product_at_awkward_shapes() {
        // Rows not a multiple of 6, columns not a multiple of 16, depth across the KC blocks.
        for &(m, k, n) in &[
            (1, 1, 1),
            (7, 300, 37),
            (13, 257, 16),
            (6, 512, 48),
            (2, 33, 5),
        ] {
            let x = values(m * k, 1);
            let w = values(k * n, 2);
            let bias = values(n, 3);
            let want = naive(&x, m, k, &w, n, &bias);
            let packed = pack(&w, k, n);
            let mut y = vec![f32::NAN; m * n];
            dense(&x, k, m, &packed, &bias, None, &mut y, n, false);
            let mut y_par = vec![f32::NAN; m * n];
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(3)
                .build()
                .unwrap();
            pool.install(|| dense(&x, k, m, &packed, &bias, None, &mut y_par, n, true));
            let mut y2 = vec![f32::NAN; m * n];
            let prod = Product {
                x: &x,
                ldx: k,
                m,
                w: &packed,
                bias: &bias,
                act: None,
                y: y2.as_mut_ptr(),
                ldy: n,
            };
            // SAFETY: y2 holds m rows of n values; no other thread exists.
            unsafe { portable(&prod, 0..n.div_ceil(NR)) };
            for (i, w) in want.iter().enumerate() {
                let tol = 1e-5 * (k as f64).sqrt().max(1.0);
                assert!(
                    (y[i] as f64 - w).abs() < tol,
                    "{m}×{k}×{n} [{i}]: {} vs {w}",
                    y[i]
                );
                assert_eq!(y[i], y_par[i], "parallel {m}×{k}×{n} [{i}]");
                assert!((y2[i] as f64 - w).abs() < tol, "portable {m}×{k}×{n} [{i}]");
            }
        }
    }

    #[test]
    fn the_activation_applies_once_after_the_last_depth_block() {
        // Depth 500 spans two blocks: activating a partial sum would differ.
        let (m, k, n) = (7, 500, 21);
        let x = values(m * k, 6);
        let w = values(k * n, 7);
        let bias = values(n, 8);
        let want = naive(&x, m, k, &w, n, &bias);
        let mut y = vec![0f32; m * n];
        dense(
            &x,
            k,
            m,
            &pack(&w, k, n),
            &bias,
            Some(Act::Relu),
            &mut y,
            n,
            false,
        );
        let mut y2 = vec![0f32; m * n];
        let packed = pack(&w, k, n);
        let prod = Product {
            x: &x,
            ldx: k,
            m,
            w: &packed,
            bias: &bias,
            act: Some(Act::Relu),
            y: y2.as_mut_ptr(),
            ldy: n,
        };
        // SAFETY: y2 holds m rows of n values; no other thread exists.
        unsafe { portable(&prod, 0..2) };
        for (i, w) in want.iter().enumerate() {
            assert!(
                (y[i] as f64 - w.max(0.0)).abs() < 1e-4,
                "[{i}] {} vs {w}",
                y[i]
            );
            assert!((y2[i] as f64 - w.max(0.0)).abs() < 1e-4, "portable [{i}]");
        }
    }

    #[test]
    fn strided_rows_leave_the_gaps_alone() {
        let (m, k, n) = (3, 8, 20);
        let x: Vec<f32> = values(m * 10, 4); // rows of 8 used out of every 10
        let w = values(k * n, 5);
        let bias = vec![0.5; n];
        let mut y = vec![7.0f32; m * 24];
        dense(&x, 10, m, &pack(&w, k, n), &bias, None, &mut y, 24, false);
        let dense: Vec<f32> = (0..m)
            .flat_map(|r| x[r * 10..r * 10 + k].to_vec())
            .collect();
        let want = naive(&dense, m, k, &w, n, &bias);
        for r in 0..m {
            for c in 0..n {
                assert!((y[r * 24 + c] as f64 - want[r * n + c]).abs() < 1e-5);
            }
            assert!(y[r * 24 + n..r * 24 + 24].iter().all(|&v| v == 7.0));
        }
    }
}
