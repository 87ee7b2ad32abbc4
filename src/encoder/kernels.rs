//! Element-wise and row-wise kernels of the CPU inference path: bias + activation, softmax and
//! residual + layer norm over plain `f32` slices.
//!
//! They are written as branch-free scalar code over fixed-width lane arrays so that LLVM
//! vectorises them, and compiled twice: once for the build's baseline target and once with AVX2
//! and FMA enabled, picked at run time. Default x86-64 builds target SSE2 only, and the
//! transcendental functions (`erf` for GELU, `exp` for softmax) were a fifth of the encoder's time
//! as scalar `libm` calls.

/// Lanes of the accumulator arrays: one AVX register of `f32`.
const LANES: usize = 8;

/// Defines `pub fn $name(args)` that runs `$imp::<true>` compiled with AVX2 and FMA when the CPU
/// has them, else the portable `$imp::<false>`.
macro_rules! kernel {
    ($(#[$m:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $imp:ident) => {
        $(#[$m])*
        pub fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    $imp::<true>($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the features `avx2` needs were detected on this CPU just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $imp::<false>($($arg),*)
        }
    };
}

#[inline(always)]
fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    // Without the FMA feature `mul_add` becomes a slow library call; the plain form rounds twice,
    // which only moves the last bit.
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// `e^x` to about 2 ulp for the range where f32 is normal; inputs are clamped to it (softmax
/// inputs are ≤ 0 after the max shift and underflow to ~1e-38, never to a denormal).
#[inline(always)]
fn exp<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer in plain arithmetic, which
    // vectorises where `round()` would not.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = fmadd::<FMA>(x, LOG2E, ROUND);
    let n = t - ROUND;
    let r = fmadd::<FMA>(n, -LN2_LO, fmadd::<FMA>(n, -LN2_HI, x));
    // Cephes' expf minimax polynomial on [-ln2/2, ln2/2].
    let mut p = 1.987_569_1e-4;
    p = fmadd::<FMA>(p, r, 1.398_199_9e-3);
    p = fmadd::<FMA>(p, r, 8.333_452e-3);
    p = fmadd::<FMA>(p, r, 4.166_579_6e-2);
    p = fmadd::<FMA>(p, r, 1.666_666_5e-1);
    p = fmadd::<FMA>(p, r, 0.5);
    let e = fmadd::<FMA>(p, r * r, r) + 1.0;
    // 2^n from the integer in `t`'s low mantissa bits: integer ops vectorise, where `n as i32`
    // (a saturating cast) was compiled to a scalar conversion per lane.
    let n_int = t.to_bits().wrapping_sub(ROUND.to_bits());
    e * f32::from_bits(n_int.wrapping_add(127) << 23)
}

/// `erf(x)` as a rational minimax approximation on [-4, 4] (beyond it erf is ±1 in f32), the one
/// Eigen uses for its vectorised erf: a few ulp, no exp and no branch.
#[inline(always)]
fn erf<const FMA: bool>(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10;
    p = fmadd::<FMA>(p, x2, 2.770_681_4e-8);
    p = fmadd::<FMA>(p, x2, -2.101_024e-6);
    p = fmadd::<FMA>(p, x2, -5.692_506_4e-5);
    p = fmadd::<FMA>(p, x2, -7.349_906_3e-4);
    p = fmadd::<FMA>(p, x2, -2.954_600_2e-3);
    p = fmadd::<FMA>(p, x2, -1.609_603_3e-2);
    let mut q = -1.456_607_2e-5;
    q = fmadd::<FMA>(q, x2, -2.133_740_6e-4);
    q = fmadd::<FMA>(q, x2, -1.682_827e-3);
    q = fmadd::<FMA>(q, x2, -7.373_329_4e-3);
    q = fmadd::<FMA>(q, x2, -1.426_473_9e-2);
    x * p / q
}

/// The activation after the intermediate dense layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// `x·Φ(x)` with the exact erf, BERT's `gelu`.
    GeluErf,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
}

#[inline(always)]
fn activate<const FMA: bool>(act: Act, x: f32) -> f32 {
    match act {
        Act::GeluErf => 0.5 * x * (1.0 + erf::<FMA>(x * std::f32::consts::FRAC_1_SQRT_2)),
        Act::GeluTanh => {
            const C: f32 = 0.797_884_6; // sqrt(2/π)
            let u = C * fmadd::<FMA>(0.044_715 * x, x * x, x);
            // tanh(u) = 1 − 2/(e^{2u}+1), exact at both saturations.
            let t = 1.0 - 2.0 / (exp::<FMA>(2.0 * u) + 1.0);
            0.5 * x * (1.0 + t)
        }
        Act::Relu => x.max(0.0),
    }
}

kernel! {
    /// `x = act(x)` element-wise.
    pub fn activate_in_place(x: &mut [f32], act: Act) => activate_impl
}

/// [`activate_in_place`] for callers already compiled with the features `FMA` stands for (the
/// packed GEMM's tile epilogue): inlined there, so it vectorises in their context.
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn activate_slice<const FMA: bool>(x: &mut [f32], act: Act) {
    activate_impl::<FMA>(x, act)
}

#[inline(always)]
fn activate_impl<const FMA: bool>(x: &mut [f32], act: Act) {
    for v in x.iter_mut() {
        *v = activate::<FMA>(act, *v);
    }
}

kernel! {
    /// Softmax of every row of `x` (rows of `cols` values), in place.
    pub fn softmax_rows(x: &mut [f32], cols: usize) => softmax_impl
}

#[inline(always)]
fn softmax_impl<const FMA: bool>(x: &mut [f32], cols: usize) {
    for row in x.chunks_exact_mut(cols) {
        let max = lane_reduce(row, f32::NEG_INFINITY, f32::max);
        let mut acc = [0f32; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for (v, a) in c.iter_mut().zip(&mut acc) {
                *v = exp::<FMA>(*v - max);
                *a += *v;
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for v in chunks.into_remainder() {
            *v = exp::<FMA>(*v - max);
            sum += *v;
        }
        let inv = 1.0 / sum;
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

kernel! {
    /// `x = LayerNorm(x + y)` row by row (rows of `gamma.len()` values): the residual add and
    /// the norm in one pass over memory.
    pub fn residual_layer_norm(
        x: &mut [f32],
        y: &[f32],
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
    ) => residual_layer_norm_impl
}

#[inline(always)]
fn residual_layer_norm_impl<const FMA: bool>(
    x: &mut [f32],
    y: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    let h = gamma.len();
    for (row, yrow) in x.chunks_exact_mut(h).zip(y.chunks_exact(h)) {
        for (v, &a) in row.iter_mut().zip(yrow) {
            *v += a;
        }
        normalize_row::<FMA>(row, gamma, beta, eps);
    }
}

kernel! {
    /// LayerNorm of every row of `x` (rows of `gamma.len()` values), in place.
    pub fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) => layer_norm_impl
}

#[inline(always)]
fn layer_norm_impl<const FMA: bool>(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(gamma.len()) {
        normalize_row::<FMA>(row, gamma, beta, eps);
    }
}

#[inline(always)]
fn normalize_row<const FMA: bool>(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len() as f32;
    let mean = lane_reduce(row, 0.0, |a, b| a + b) / n;
    // Two passes (centre, then square) as in the composed kernels: one-pass E[x²]−E[x]² loses
    // digits when the mean is large.
    let mut acc = [0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (&v, a) in c.iter().zip(&mut acc) {
            let d = v - mean;
            *a = fmadd::<FMA>(d, d, *a);
        }
    }
    let mut var: f32 = acc.iter().sum();
    for &v in chunks.remainder() {
        var += (v - mean) * (v - mean);
    }
    let inv = 1.0 / (var / n + eps).sqrt();
    for ((v, &g), &b) in row.iter_mut().zip(gamma).zip(beta) {
        *v = fmadd::<FMA>((*v - mean) * inv, g, b);
    }
}

/// Folds `row` with `op` in `LANES` independent accumulators, so the loop vectorises without
/// reassociating floats behind the compiler's back.
#[inline(always)]
fn lane_reduce(row: &[f32], init: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (&v, a) in c.iter().zip(&mut acc) {
            *a = op(*a, v);
        }
    }
    let mut r = acc.iter().copied().fold(init, &op);
    for &v in chunks.remainder() {
        r = op(r, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Vec<f32> {
        (-2000..=2000).map(|i| i as f32 * 0.005).collect()
    }

    #[test]
    fn exp_matches_std_in_both_builds() {
        for x in grid().into_iter().chain([-86.0, -50.0, 30.0, 80.0]) {
            let want = x.exp();
            for got in [exp::<true>(x), exp::<false>(x)] {
                assert!(
                    ((got - want) / want).abs() < 3e-7,
                    "exp({x}) = {got}, want {want}"
                );
            }
        }
        assert!(exp::<false>(-1e4) >= 0.0 && exp::<false>(-1e4) < 1e-37);
    }

    #[test]
    fn gelu_matches_the_erf_definition() {
        for x in grid() {
            let want = 0.5 * x as f64 * (1.0 + libm::erf(x as f64 / std::f64::consts::SQRT_2));
            for fma in [true, false] {
                let got = if fma {
                    activate::<true>(Act::GeluErf, x)
                } else {
                    activate::<false>(Act::GeluErf, x)
                };
                assert!(
                    (got as f64 - want).abs() < 2e-6,
                    "gelu({x}) = {got}, want {want}"
                );
            }
        }
    }

    #[test]
    fn gelu_tanh_matches_its_definition() {
        for x in grid() {
            let x64 = x as f64;
            let u = (2.0 / std::f64::consts::PI).sqrt() * (x64 + 0.044715 * x64.powi(3));
            let want = 0.5 * x64 * (1.0 + u.tanh());
            let got = activate::<true>(Act::GeluTanh, x) as f64;
            assert!(
                (got - want).abs() < 2e-6,
                "gelu_tanh({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn softmax_rows_sum_to_one_and_match_the_definition() {
        let cols = 13; // not a multiple of the lane width
        let mut x: Vec<f32> = (0..3 * cols)
            .map(|i| ((i * 37) % 11) as f32 - 5.0)
            .collect();
        let want: Vec<f64> = x
            .chunks(cols)
            .flat_map(|r| {
                let m = r.iter().copied().fold(f32::MIN, f32::max) as f64;
                let s: f64 = r.iter().map(|&v| (v as f64 - m).exp()).sum();
                r.iter()
                    .map(move |&v| (v as f64 - m).exp() / s)
                    .collect::<Vec<_>>()
            })
            .collect();
        softmax_rows(&mut x, cols);
        for (g, w) in x.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-6);
        }
    }

    #[test]
    fn residual_layer_norm_matches_the_definition() {
        let h = 20;
        let mut x: Vec<f32> = (0..2 * h)
            .map(|i| (i as f32 * 0.7).sin() * 3.0 + 100.0)
            .collect();
        let y: Vec<f32> = (0..2 * h).map(|i| (i as f32 * 0.3).cos()).collect();
        let gamma: Vec<f32> = (0..h).map(|i| 1.0 + i as f32 * 0.1).collect();
        let beta: Vec<f32> = (0..h).map(|i| -(i as f32) * 0.05).collect();
        let mut want = Vec::new();
        for r in 0..2 {
            let s: Vec<f64> = (0..h)
                .map(|c| (x[r * h + c] + y[r * h + c]) as f64)
                .collect();
            let mean = s.iter().sum::<f64>() / h as f64;
            let var = s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / h as f64;
            for c in 0..h {
                want.push((s[c] - mean) / (var + 1e-12).sqrt() * gamma[c] as f64 + beta[c] as f64);
            }
        }
        residual_layer_norm(&mut x, &y, &gamma, &beta, 1e-12);
        for (g, w) in x.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-4, "{g} vs {w}");
        }
    }
}
