//! `x · W + b` in 8-bit integers: the int8 inference path (`--precision int8`).
//!
//! The encoder is bound by its weight products, and an integer multiply-add does four times the
//! work of an `f32` FMA per instruction (VNNI's `vpdpbusd`: 32 byte products summed into 8
//! lanes). The scheme is dynamic quantisation, as onnxruntime's `quantize_dynamic`:
//! - weights: symmetric, one scale per output column, `q ∈ [-127, 127]`, quantised at load;
//! - activations: asymmetric per row (token), `q ∈ [0, 255]` with a zero point, quantised on
//!   the fly before each product, so an outlier in one token costs precision in that token only;
//! - `y = sₓ·s_w·(Σ qₓ·q_w − zₓ·Σ q_w) + b`, with `Σ q_w` per column computed at load.
//!
//! Every kernel computes the integer sums exactly (no 16-bit saturation: the AVX2 kernel widens
//! to 16 bits before `vpmaddwd` instead of using `vpmaddubsw`), and they share one `f32`
//! epilogue, so all of them give bit-identical vectors and an index does not depend on which
//! CPU built it. Everything else in a layer (attention, softmax, layer norm, GELU, residuals)
//! stays `f32`.

use std::cell::RefCell;

use super::kernels::{self, Act};

/// Output columns per packed panel: two registers of eight `i32` sums.
pub(crate) const NR: usize = 16;
/// Bytes of one depth quad of a panel: four depths of each of its columns.
const QUAD: usize = 4 * NR;
/// `x` rounded to the nearest integer, ties to even, for `|x| < 2²²`: adding and subtracting
/// 1.5·2²³ leaves no fraction bits, and the FPU rounds ties to even. The same as
/// `round_ties_even` (and `vcvtps2dq`), but plain arithmetic: it vectorises where
/// `round_ties_even` is a libm call per value (baseline x86-64 has no `roundps`), which made
/// quantising the weights at load a visible part of a one-shot query.
#[inline(always)]
fn round_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³
    (x + MAGIC) - MAGIC
}

/// Rows per tile of the AVX-VNNI kernel (12 accumulators, 2 weight registers, 1 broadcast).
const MR: usize = 6;

/// A `(k, n)` weight matrix (for `x · W`) as 8-bit integers, in panels of [`NR`] columns (the
/// last one zero-padded); each panel is its depth quads in order, and each quad holds four
/// consecutive depths of every column, which is the operand layout of `vpdpbusd`.
pub(crate) struct PackedI8 {
    k: usize,
    n: usize,
    /// `k` rounded up to a whole quad; padded depths are zero.
    kp: usize,
    data: Vec<i8>,
    /// Per column (padded to whole panels): the dequantisation scale.
    scale: Vec<f32>,
    /// Per column: `Σ q_w`, for the activations' zero point.
    sum: Vec<i32>,
}

impl PackedI8 {
    /// Quantises the output rows of PyTorch-layout `(out, k)` weights, concatenated in order,
    /// each part scaled by its factor first (the same contract as `Packed::from_rows`).
    pub(crate) fn from_rows(parts: &[(&[f32], f32)], k: usize) -> Self {
        let kk = k.max(1);
        for (w, _) in parts {
            assert_eq!(
                w.len() % kk,
                0,
                "weight of {} values for width {k}",
                w.len()
            );
        }
        let n: usize = parts.iter().map(|(w, _)| w.len() / kk).sum();
        let kp = k.div_ceil(4) * 4;
        let panels = n.div_ceil(NR);
        let mut data = vec![0i8; panels * kp * NR];
        let mut scale = vec![0f32; panels * NR];
        let mut sum = vec![0i32; panels * NR];
        let rows = parts
            .iter()
            .flat_map(|&(w, s)| w.chunks_exact(kk).map(move |r| (r, s)));
        for (c, (row, s)) in rows.enumerate() {
            let max = row.iter().fold(0f32, |m, &v| m.max((v * s).abs()));
            if max == 0.0 || !max.is_finite() {
                continue; // an all-zero column: scale 0, nothing to store
            }
            let step = max / 127.0;
            let (j, cc) = (c / NR, c % NR);
            let panel = j * kp * NR;
            let mut total = 0i32;
            for (p, &v) in row.iter().enumerate() {
                let q = round_even((v * s) / step).clamp(-127.0, 127.0) as i8;
                data[panel + (p / 4) * QUAD + cc * 4 + p % 4] = q;
                total += i32::from(q);
            }
            scale[c] = step;
            sum[c] = total;
        }
        Self {
            k,
            n,
            kp,
            data,
            scale,
            sum,
        }
    }

    #[cfg(test)]
    fn n(&self) -> usize {
        self.n
    }
}

/// The rows of `x` quantised for one product: `m` rows of `kp` bytes (padding zero), and each
/// row's scale and zero point.
#[derive(Default)]
struct Quantised {
    q: Vec<u8>,
    scale: Vec<f32>,
    zero: Vec<i32>,
}

thread_local! {
    static QX: RefCell<Quantised> = RefCell::new(Quantised::default());
}

/// Quantises one row to `[0, 255]` over its range widened to include 0 (so that zero, the
/// padding, is exact); returns the scale and the zero point.
#[inline(always)]
fn quantise_row(x: &[f32], out: &mut [u8]) -> (f32, i32) {
    let Some((scale, inv, zero)) = row_range(bounds(x)) else {
        out.fill(0);
        return (0.0, 0);
    };
    quantise_values(x, inv, zero, out);
    out[x.len()..].fill(0);
    (scale, zero as i32)
}

/// One value's code: `round_ties_even(v·inv + zero)` saturated to `[0, 255]` (`as u8`
/// saturates), two roundings (no FMA) so the SIMD version gives the same bytes.
#[inline(always)]
fn quantise_values(x: &[f32], inv: f32, zero: f32, out: &mut [u8]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = round_even(v * inv + zero) as u8;
    }
}

/// The smallest and largest of 0 and `x`'s values; NaNs are passed over (a comparison with
/// one is false), as `vminps`/`vmaxps` pass them over in [`x86::bounds`].
#[inline(always)]
fn bounds(x: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = (0f32, 0f32);
    for &v in x {
        if v < lo {
            lo = v;
        }
        if v > hi {
            hi = v;
        }
    }
    (lo, hi)
}

/// A row's scale, its inverse and its zero point from its [`bounds`]; `None` for a row of
/// zeros (or of non-finite values).
#[inline(always)]
fn row_range((lo, hi): (f32, f32)) -> Option<(f32, f32, f32)> {
    let range = hi - lo;
    if range == 0.0 || !range.is_finite() {
        return None;
    }
    let inv = 255.0 / range;
    Some((
        range / 255.0,
        inv,
        (-lo * inv).round_ties_even().clamp(0.0, 255.0),
    ))
}

/// `y[r] = act(x[r] · W + bias)` for `m` rows, as `super::packed::dense` does for `f32` weights:
/// `x` rows every `ldx` values, `y` rows every `ldy`; with `parallel`, the panels are shared out
/// over the current rayon pool.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dense_i8(
    x: &[f32],
    ldx: usize,
    m: usize,
    w: &PackedI8,
    bias: &[f32],
    act: Option<Act>,
    y: &mut [f32],
    ldy: usize,
    parallel: bool,
) {
    dense_with(Kernel::detect(), x, ldx, m, w, bias, act, y, ldy, parallel)
}

/// The integer kernels, best first; the CPU's is picked at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// `vpdpbusd` on 512-bit registers (AVX-512 VNNI).
    Avx512Vnni,
    /// `vpdpbusd` with the VEX encoding (AVX-VNNI: Alder Lake, Zen 5).
    AvxVnni,
    /// AVX2 without VNNI: bytes widened to 16 bits, `vpmaddwd`.
    Avx2,
    Portable,
}

impl Kernel {
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2")
                && has!("avx512f")
                && has!("avx512bw")
                && has!("avx512vl")
                && has!("avx512vnni")
            {
                return Kernel::Avx512Vnni;
            }
            if has!("avx2") && has!("avxvnni") {
                return Kernel::AvxVnni;
            }
            if has!("avx2") {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }

    /// The kernels this CPU can run (for tests that compare them).
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Self> {
        let best = Self::detect();
        [
            Kernel::Avx512Vnni,
            Kernel::AvxVnni,
            Kernel::Avx2,
            Kernel::Portable,
        ]
        .into_iter()
        .filter(|k| match k {
            Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("avxvnni")
            }
            _ => *k as u8 >= best as u8,
        })
        .collect()
    }

    /// Whether this is a SIMD kernel (int8 is then faster than f32).
    pub(crate) fn is_simd(self) -> bool {
        self != Kernel::Portable
    }

    /// How this CPU runs int8 products, for `status` and benchmarks.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kernel::Avx512Vnni => "avx512-vnni",
            Kernel::AvxVnni => "avx-vnni",
            Kernel::Avx2 => "avx2",
            Kernel::Portable => "portable",
        }
    }
}

/// One product whose shapes [`dense_with`] has checked, its `x` already quantised.
struct Product<'a> {
    q: &'a Quantised,
    m: usize,
    w: &'a PackedI8,
    bias: &'a [f32],
    act: Option<Act>,
    y: *mut f32,
    ldy: usize,
}

// SAFETY: the threads that share a product write disjoint column panels of `y`.
unsafe impl Sync for Product<'_> {}

#[allow(clippy::too_many_arguments)]
fn dense_with(
    kernel: Kernel,
    x: &[f32],
    ldx: usize,
    m: usize,
    w: &PackedI8,
    bias: &[f32],
    act: Option<Act>,
    y: &mut [f32],
    ldy: usize,
    parallel: bool,
) {
    let (k, n, kp) = (w.k, w.n, w.kp);
    assert_eq!(bias.len(), n);
    assert!(ldx >= k && ldy >= n);
    if m == 0 {
        return;
    }
    // These bounds make every pointer offset in the kernels land inside the slices.
    assert!(x.len() >= (m - 1) * ldx + k, "x too short");
    assert!(y.len() >= (m - 1) * ldy + n, "y too short");
    QX.with_borrow_mut(|qx| {
        if qx.q.len() < m * kp {
            qx.q.resize(m * kp, 0);
        }
        qx.scale.resize(m, 0.0);
        qx.zero.resize(m, 0);
        for r in 0..m {
            let (s, z) = quantise(
                kernel,
                &x[r * ldx..r * ldx + k],
                &mut qx.q[r * kp..(r + 1) * kp],
            );
            qx.scale[r] = s;
            qx.zero[r] = z;
        }
        let panels = n.div_ceil(NR);
        let threads = if parallel {
            rayon::current_num_threads().min(panels)
        } else {
            1
        };
        let product = Product {
            q: qx,
            m,
            w,
            bias,
            act,
            y: y.as_mut_ptr(),
            ldy,
        };
        let run = |part: usize| {
            let range = panels * part / threads..panels * (part + 1) / threads;
            // SAFETY: shapes checked above; the parts' panel ranges are disjoint.
            unsafe { compute(kernel, &product, range) }
        };
        if threads > 1 {
            use rayon::prelude::*;
            (0..threads).into_par_iter().for_each(run);
        } else {
            run(0);
        }
    });
}

fn quantise(kernel: Kernel, x: &[f32], out: &mut [u8]) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    if kernel != Kernel::Portable {
        #[target_feature(enable = "avx2")]
        fn avx2(x: &[f32], out: &mut [u8]) -> (f32, i32) {
            let whole = x.len() / 32 * 32;
            // SAFETY: AVX2 is enabled.
            let (lo, hi) = unsafe { x86::bounds(&x[..whole]) };
            let (rlo, rhi) = bounds(&x[whole..]);
            let Some((scale, inv, zero)) = row_range((lo.min(rlo), hi.max(rhi))) else {
                out.fill(0);
                return (0.0, 0);
            };
            // SAFETY: AVX2 is enabled; both slices hold `whole` values.
            unsafe { x86::quantise32(&x[..whole], inv, zero, &mut out[..whole]) };
            quantise_values(&x[whole..], inv, zero, &mut out[whole..]);
            out[x.len()..].fill(0);
            (scale, zero as i32)
        }
        // SAFETY: every kernel but the portable one was detected with AVX2.
        return unsafe { avx2(x, out) };
    }
    let _ = kernel;
    quantise_row(x, out)
}

/// The columns of `panels`.
///
/// # Safety
/// The shapes must hold (as [`dense_with`] checks), `kernel` must run on this CPU, and no other
/// thread may touch these columns of `y` meanwhile.
unsafe fn compute(kernel: Kernel, p: &Product<'_>, panels: std::ops::Range<usize>) {
    // SAFETY: forwarded.
    unsafe {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => x86::avx512vnni::compute(p, panels),
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni => x86::avxvnni::compute(p, panels),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => x86::avx2::compute(p, panels),
            _ => portable(p, panels),
        }
    }
}

/// Row `r`'s sums for panel `j` → `y` (the `cols` real columns): dequantised, plus the bias.
/// Shared by every kernel (inlined into each one's feature context) so they round alike.
///
/// # Safety
/// Row `r`'s columns `j·NR .. j·NR + cols` must lie inside `y`.
#[inline(always)]
unsafe fn finish(p: &Product<'_>, r: usize, j: usize, cols: usize, acc: &[i32; NR]) {
    let (sx, zx) = (p.q.scale[r], p.q.zero[r]);
    let c0 = j * NR;
    let sw: &[f32; NR] = p.w.scale[c0..c0 + NR].try_into().expect("panel width");
    let sum: &[i32; NR] = p.w.sum[c0..c0 + NR].try_into().expect("panel width");
    let mut out = [0f32; NR];
    let mut bias = [0f32; NR];
    bias[..cols].copy_from_slice(&p.bias[c0..c0 + cols]);
    for c in 0..NR {
        out[c] = (acc[c] - zx * sum[c]) as f32 * (sx * sw[c]) + bias[c];
    }
    // SAFETY: the caller's guarantee.
    unsafe { std::ptr::copy_nonoverlapping(out.as_ptr(), p.y.add(r * p.ldy + c0), cols) };
}

/// The activation over each row's columns of `panels`, once they are all final.
///
/// # Safety
/// As [`compute`].
#[inline(always)]
unsafe fn activate<const FMA: bool>(p: &Product<'_>, panels: &std::ops::Range<usize>) {
    let Some(act) = p.act else { return };
    let c0 = panels.start * NR;
    let c1 = (panels.end * NR).min(p.w.n);
    if c1 <= c0 {
        return;
    }
    for r in 0..p.m {
        // SAFETY: row r's columns c0..c1 lie inside y and belong to this call.
        let row = unsafe { std::slice::from_raw_parts_mut(p.y.add(r * p.ldy + c0), c1 - c0) };
        kernels::activate_slice::<FMA>(row, act);
    }
}

/// The loop every kernel shares: up to `P` panels at a time, `T` rows at a time,
/// `tile(x, panel, panels, rows, sums)` fills the sums of `rows` (1..=T) rows starting at `x`
/// against `panels` (1..=P) consecutive panels starting at `panel`, which [`finish`] turns into
/// `y`; then the activation. Inlined into each kernel's feature context.
///
/// # Safety
/// As [`compute`]; `tile` may read `rows` rows of `kp` bytes at `x` and the `kp / 4` quads of
/// each of its panels, nothing else.
#[inline(always)]
unsafe fn tiles<const T: usize, const P: usize, const FMA: bool>(
    p: &Product<'_>,
    panels: std::ops::Range<usize>,
    tile: impl Fn(*const u8, *const i8, usize, usize, &mut [[[i32; NR]; P]; T]),
) {
    let kp = p.w.kp;
    let mut j = panels.start;
    while j < panels.end {
        let np = P.min(panels.end - j);
        // SAFETY (all pointers): j + np <= panels and r0 < m, the shapes `dense_with` checked.
        unsafe {
            let panel = p.w.data.as_ptr().add(j * kp * NR);
            let mut r0 = 0;
            while r0 < p.m {
                let rows = T.min(p.m - r0);
                let mut acc = [[[0i32; NR]; P]; T];
                tile(p.q.q.as_ptr().add(r0 * kp), panel, np, rows, &mut acc);
                for (r, sums) in acc.iter().enumerate().take(rows) {
                    for (i, a) in sums.iter().enumerate().take(np) {
                        let cols = NR.min(p.w.n - (j + i) * NR);
                        finish(p, r0 + r, j + i, cols, a);
                    }
                }
                r0 += rows;
            }
        }
        j += np;
    }
    // SAFETY: as above.
    unsafe { activate::<FMA>(p, &panels) };
}

/// [`compute`] in plain integer arithmetic.
///
/// # Safety
/// As [`compute`].
unsafe fn portable(p: &Product<'_>, panels: std::ops::Range<usize>) {
    let kp = p.w.kp;
    // SAFETY: the caller's guarantee; the tile reads one row and one panel.
    unsafe {
        tiles::<1, 1, false>(p, panels, |x, panel, _, _, acc| {
            let xr = std::slice::from_raw_parts(x, kp);
            let panel = std::slice::from_raw_parts(panel, kp * NR);
            for (quad, xq) in panel.chunks_exact(QUAD).zip(xr.chunks_exact(4)) {
                for (a, wq) in acc[0][0].iter_mut().zip(quad.chunks_exact(4)) {
                    for (&xv, &wv) in xq.iter().zip(wq) {
                        *a += i32::from(xv) * i32::from(wv);
                    }
                }
            }
        })
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// [`super::bounds`] eight lanes at a time. `vminps(v, lo)` returns `lo` when `v` is NaN,
    /// as the scalar comparison keeps it.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn bounds(x: &[f32]) -> (f32, f32) {
        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut chunks = x.chunks_exact(8);
        for c in &mut chunks {
            // SAFETY: eight floats.
            let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
            lo = _mm256_min_ps(v, lo);
            hi = _mm256_max_ps(v, hi);
        }
        let (mut l, mut h) = ([0f32; 8], [0f32; 8]);
        // SAFETY: eight floats each.
        unsafe {
            _mm256_storeu_ps(l.as_mut_ptr(), lo);
            _mm256_storeu_ps(h.as_mut_ptr(), hi);
        }
        let (rl, rh) = super::bounds(chunks.remainder());
        (
            l.iter().fold(rl, |a, &b| a.min(b)),
            h.iter().fold(rh, |a, &b| a.max(b)),
        )
    }

    /// [`super::quantise_values`] 32 values at a time (`x.len()` a multiple of 32):
    /// `vcvtps2dq` rounds to nearest even like `round_ties_even`, and the two saturating packs
    /// clamp to `[0, 255]` like `as u8` (a NaN's integer, `i32::MIN`, packs to 0 as `as u8`
    /// makes it).
    ///
    /// # Safety
    /// The CPU must have AVX2; `out` at least as long as `x`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantise32(x: &[f32], inv: f32, zero: f32, out: &mut [u8]) {
        assert!(out.len() >= x.len() && x.len().is_multiple_of(32));
        let (vi, vz) = (_mm256_set1_ps(inv), _mm256_set1_ps(zero));
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for (src, dst) in x.chunks_exact(32).zip(out.chunks_exact_mut(32)) {
            // SAFETY: 32 floats in, 32 bytes out.
            unsafe {
                let q = |i: usize| {
                    let v = _mm256_loadu_ps(src.as_ptr().add(8 * i));
                    _mm256_cvtps_epi32(_mm256_add_ps(_mm256_mul_ps(v, vi), vz))
                };
                let ab = _mm256_packs_epi32(q(0), q(1));
                let cd = _mm256_packs_epi32(q(2), q(3));
                let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), order);
                _mm256_storeu_si256(dst.as_mut_ptr() as *mut __m256i, bytes);
            }
        }
    }

    /// The AVX-512 VNNI kernel: one quad of a panel (16 columns × 4 depths) is one 512-bit
    /// register, and a tile is [`MR512`] rows × two panels (24 accumulators), so each weight
    /// load serves 12 rows and each broadcast row quad two panels. On CPUs with full-width
    /// 512-bit units (Zen 5, Intel server cores) this is twice the multiply-adds per
    /// instruction of the 256-bit kernels.
    pub(super) mod avx512vnni {
        use std::arch::x86_64::*;

        use super::super::{NR, Product, QUAD, tiles};

        /// Rows per tile.
        const MR512: usize = 12;
        /// Panels per tile.
        const NP: usize = 2;

        /// # Safety
        /// The CPU must have the features; the conditions of `compute` hold.
        #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
        pub(in super::super) unsafe fn compute(p: &Product<'_>, panels: std::ops::Range<usize>) {
            let kp = p.w.kp;
            macro_rules! pick {
                ($np:literal, $rows:expr, $x:expr, $panel:expr, $acc:expr; $($r:literal)*) => {
                    match $rows {
                        $($r => tile::<$r, $np>($x, kp, $panel, $acc),)*
                        _ => unreachable!("rows per tile"),
                    }
                };
            }
            // SAFETY: the caller's guarantee; each tile reads its rows and its panels.
            unsafe {
                tiles::<MR512, NP, true>(p, panels, |x, panel, np, rows, acc| {
                    if np == 2 {
                        pick!(2, rows, x, panel, acc; 1 2 3 4 5 6 7 8 9 10 11 12)
                    } else {
                        pick!(1, rows, x, panel, acc; 1 2 3 4 5 6 7 8 9 10 11 12)
                    }
                })
            }
        }

        #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
        #[inline]
        unsafe fn tile<const R: usize, const P: usize>(
            x: *const u8,
            kp: usize,
            panel: *const i8,
            out: &mut [[[i32; NR]; NP]; MR512],
        ) {
            // SAFETY: the caller passes R rows of kp bytes and P panels of kp/4 quads.
            unsafe {
                let mut acc = [[_mm512_setzero_si512(); P]; R];
                for q in 0..kp / 4 {
                    let mut w = [_mm512_setzero_si512(); P];
                    for (i, wv) in w.iter_mut().enumerate() {
                        *wv = _mm512_loadu_si512(panel.add(i * kp * NR + q * QUAD) as *const _);
                    }
                    for (r, a) in acc.iter_mut().enumerate() {
                        let b = _mm512_set1_epi32(
                            (x.add(r * kp + 4 * q) as *const i32).read_unaligned(),
                        );
                        for (s, &wv) in a.iter_mut().zip(&w) {
                            *s = _mm512_dpbusd_epi32(*s, b, wv);
                        }
                    }
                }
                for (o, a) in out.iter_mut().zip(&acc) {
                    for (oo, &s) in o.iter_mut().zip(a) {
                        _mm512_storeu_si512(oo.as_mut_ptr() as *mut _, s);
                    }
                }
            }
        }
    }

    /// The AVX-VNNI kernel (VEX `vpdpbusd`, 256-bit): [`MR`] rows × 16 columns of sums per
    /// tile, each row's four quantised activations of a quad broadcast against the panel's two
    /// quad registers.
    pub(super) mod avxvnni {
        use std::arch::x86_64::*;

        use super::super::{MR, NR, Product, QUAD, tiles};

        /// # Safety
        /// The CPU must have the features; the conditions of `compute` hold.
        #[target_feature(enable = "avx2,fma,avxvnni")]
        pub(in super::super) unsafe fn compute(p: &Product<'_>, panels: std::ops::Range<usize>) {
            let kp = p.w.kp;
            // SAFETY: the caller's guarantee; each tile reads its rows and one panel.
            unsafe {
                tiles::<MR, 1, true>(p, panels, |x, panel, _, rows, acc| match rows {
                    6 => tile::<6>(x, kp, panel, acc),
                    5 => tile::<5>(x, kp, panel, acc),
                    4 => tile::<4>(x, kp, panel, acc),
                    3 => tile::<3>(x, kp, panel, acc),
                    2 => tile::<2>(x, kp, panel, acc),
                    _ => tile::<1>(x, kp, panel, acc),
                })
            }
        }

        #[target_feature(enable = "avx2,fma,avxvnni")]
        #[inline]
        unsafe fn tile<const R: usize>(
            x: *const u8,
            kp: usize,
            panel: *const i8,
            out: &mut [[[i32; NR]; 1]; MR],
        ) {
            // SAFETY: the caller passes R rows of kp bytes and a panel of kp/4 quads.
            unsafe {
                let mut acc = [[_mm256_setzero_si256(); 2]; R];
                let mut w = panel;
                for q in 0..kp / 4 {
                    let w0 = _mm256_loadu_si256(w as *const __m256i);
                    let w1 = _mm256_loadu_si256(w.add(32) as *const __m256i);
                    for (r, a) in acc.iter_mut().enumerate() {
                        let b = _mm256_set1_epi32(
                            (x.add(r * kp + 4 * q) as *const i32).read_unaligned(),
                        );
                        a[0] = _mm256_dpbusd_avx_epi32(a[0], b, w0);
                        a[1] = _mm256_dpbusd_avx_epi32(a[1], b, w1);
                    }
                    w = w.add(QUAD);
                }
                for (o, a) in out.iter_mut().zip(&acc) {
                    let o = &mut o[0];
                    _mm256_storeu_si256(o.as_mut_ptr() as *mut __m256i, a[0]);
                    _mm256_storeu_si256(o.as_mut_ptr().add(8) as *mut __m256i, a[1]);
                }
            }
        }
    }

    /// AVX2 without VNNI. `vpmaddubsw` would saturate its 16-bit pair sums (255·127·2 > 32767),
    /// so the weights are widened to 16 bits and multiplied with `vpmaddwd`, whose 32-bit sums
    /// are exact: half the products per instruction, the same answer as VNNI.
    pub(super) mod avx2 {
        use std::arch::x86_64::*;

        use super::super::{NR, Product, QUAD, tiles};

        /// Rows per tile: 4 registers of sums per row (pairs of depths still apart).
        const R2: usize = 2;

        /// # Safety
        /// The CPU must have AVX2 and FMA; the conditions of `compute` hold.
        #[target_feature(enable = "avx2,fma")]
        pub(in super::super) unsafe fn compute(p: &Product<'_>, panels: std::ops::Range<usize>) {
            let kp = p.w.kp;
            // SAFETY: the caller's guarantee; each tile reads its rows and one panel.
            unsafe {
                tiles::<R2, 1, true>(p, panels, |x, panel, _, rows, acc| {
                    if rows == 2 {
                        tile::<2>(x, kp, panel, acc)
                    } else {
                        tile::<1>(x, kp, panel, acc)
                    }
                })
            }
        }

        #[target_feature(enable = "avx2,fma")]
        #[inline]
        unsafe fn tile<const R: usize>(
            x: *const u8,
            kp: usize,
            panel: *const i8,
            out: &mut [[[i32; NR]; 1]; R2],
        ) {
            // SAFETY: the caller passes R rows of kp bytes and a panel of kp/4 quads.
            unsafe {
                // acc[r][v] lanes: columns 4v..4v+4, each as two partial sums (depths 0+1, 2+3).
                let mut acc = [[_mm256_setzero_si256(); 4]; R];
                let mut w = panel;
                for q in 0..kp / 4 {
                    let mut b = [_mm256_setzero_si256(); R];
                    for (r, bv) in b.iter_mut().enumerate() {
                        let v = (x.add(r * kp + 4 * q) as *const u32).read_unaligned() as u64;
                        let spread = (v & 0xff)
                            | ((v >> 8) & 0xff) << 16
                            | ((v >> 16) & 0xff) << 32
                            | ((v >> 24) & 0xff) << 48;
                        *bv = _mm256_set1_epi64x(spread as i64);
                    }
                    for v in 0..4 {
                        let wv =
                            _mm256_cvtepi8_epi16(_mm_loadu_si128(w.add(16 * v) as *const __m128i));
                        for (a, &bv) in acc.iter_mut().zip(&b) {
                            a[v] = _mm256_add_epi32(a[v], _mm256_madd_epi16(bv, wv));
                        }
                    }
                    w = w.add(QUAD);
                }
                for (o, a) in out.iter_mut().zip(&acc) {
                    let o = &mut o[0];
                    for h in 0..2 {
                        // hadd → [c0 c1 c4 c5 | c2 c3 c6 c7] of this half; reorder the quads.
                        let s = _mm256_hadd_epi32(a[2 * h], a[2 * h + 1]);
                        let s = _mm256_permute4x64_epi64::<0b11_01_10_00>(s);
                        _mm256_storeu_si256(o.as_mut_ptr().add(8 * h) as *mut __m256i, s);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::packed::tests::{naive, values};
    use super::*;

    fn run(
        kernel: Kernel,
        x: &[f32],
        m: usize,
        w: &PackedI8,
        bias: &[f32],
        act: Option<Act>,
    ) -> Vec<f32> {
        let mut y = vec![f32::NAN; m * w.n];
        dense_with(kernel, x, w.k, m, w, bias, act, &mut y, w.n, false);
        y
    }

    #[test]
    fn every_kernel_gives_the_same_bits_at_awkward_shapes() {
        let kernels = Kernel::available();
        assert!(kernels.contains(&Kernel::detect()));
        for &(m, k, n) in &[
            (1, 1, 1),
            (7, 301, 37),
            (13, 384, 16),
            (5, 33, 5),
            (9, 1536, 40),
            // Whole and partial 12-row tiles over panel pairs and a lone last panel.
            (29, 64, 80),
            (24, 8, 32),
        ] {
            let x = values(m * k, 1);
            let rows = values(k * n, 2);
            let bias = values(n, 3);
            let w = PackedI8::from_rows(&[(&rows, 1.0)], k);
            let want = run(Kernel::Portable, &x, m, &w, &bias, Some(Act::GeluErf));
            for &kernel in &kernels {
                let y = run(kernel, &x, m, &w, &bias, Some(Act::GeluErf));
                // The integer sums are exact in every kernel; only the activation's FMA build may
                // move the last bit.
                for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                        "{kernel:?} {m}×{k}×{n} [{i}]: {a} vs {b}"
                    );
                }
                let plain = run(kernel, &x, m, &w, &bias, None);
                assert_eq!(
                    plain,
                    run(Kernel::Portable, &x, m, &w, &bias, None),
                    "{kernel:?} {m}×{k}×{n}"
                );
            }
        }
    }

    #[test]
    fn products_stay_within_the_quantisation_bound_of_the_exact_ones() {
        let (m, k, n) = (6, 384, 48);
        let x = values(m * k, 4);
        let rows = values(k * n, 5);
        let bias = values(n, 6);
        let w = PackedI8::from_rows(&[(&rows, 1.0)], k);
        // The exact product of the same weights, as a row-major `(k, n)` matrix.
        let w_kn: Vec<f32> = (0..k * n).map(|i| rows[(i % n) * k + i / n]).collect();
        let want = naive(&x, m, k, &w_kn, n, &bias);
        let y = run(Kernel::detect(), &x, m, &w, &bias, None);
        // Each factor's rounding error is at most half a step (2/255 for x, 2/254 for W over
        // ranges of ±1); summed over k independent terms it grows like √k.
        let step = 1.0 / 255.0 + 1.0 / 254.0;
        let bound = 4.0 * step * (k as f64).sqrt();
        for (i, (a, b)) in y.iter().zip(&want).enumerate() {
            assert!(
                (*a as f64 - b).abs() < bound,
                "[{i}]: {a} vs {b} (bound {bound})"
            );
        }
    }

    #[test]
    fn parts_are_scaled_and_concatenated_and_parallel_runs_agree() {
        let (m, k) = (3, 40);
        let a = values(5 * k, 7);
        let b = values(20 * k, 8);
        let x = values(m * k, 9);
        let both = PackedI8::from_rows(&[(&a, 0.5), (&b, 1.0)], k);
        assert_eq!(both.n(), 25);
        let half: Vec<f32> = a.iter().map(|v| v * 0.5).collect();
        let mut joined = half.clone();
        joined.extend_from_slice(&b);
        let same = PackedI8::from_rows(&[(&joined, 1.0)], k);
        let bias = vec![0.25; 25];
        let y = run(Kernel::detect(), &x, m, &both, &bias, None);
        assert_eq!(y, run(Kernel::detect(), &x, m, &same, &bias, None));
        let mut par = vec![0f32; m * 25];
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| dense_i8(&x, k, m, &both, &bias, None, &mut par, 25, true));
        assert_eq!(y, par);
    }

    #[test]
    fn round_even_is_round_ties_even_in_range() {
        for i in -600_000..600_000 {
            let x = i as f32 / 1024.0; // includes every .5 tie in range
            assert_eq!(round_even(x), x.round_ties_even(), "{x}");
        }
        assert_eq!(round_even(254.5), 254.0);
        assert_eq!(round_even(255.5), 256.0);
        assert!(round_even(f32::NAN).is_nan());
    }

    #[test]
    fn zero_rows_and_columns_give_the_bias_exactly() {
        let (m, k, n) = (2, 8, 3);
        let mut rows = values(n * k, 10);
        rows[k..2 * k].fill(0.0); // column 1 all zero
        let w = PackedI8::from_rows(&[(&rows, 1.0)], k);
        let mut x = values(m * k, 11);
        x[k..].fill(0.0); // row 1 all zero
        let bias = [1.5, -2.0, 0.75];
        let y = run(Kernel::detect(), &x, m, &w, &bias, None);
        assert_eq!(y[1], -2.0);
        assert_eq!(&y[3..], &bias);
    }

    #[test]
    fn strided_rows_leave_the_gaps_alone() {
        let (m, k, n) = (3, 8, 20);
        let x = values(m * 10, 12);
        let rows = values(k * n, 13);
        let w = PackedI8::from_rows(&[(&rows, 1.0)], k);
        let bias = vec![0.5; n];
        let mut y = vec![7.0f32; m * 24];
        dense_i8(&x, 10, m, &w, &bias, None, &mut y, 24, false);
        for r in 0..m {
            assert!(y[r * 24 + n..r * 24 + 24].iter().all(|&v| v == 7.0));
            assert!(y[r * 24..r * 24 + n].iter().all(|v| v.is_finite()));
        }
    }
}
