//! The rerank's inner product: a unit f32 query against a stored f16 vector. The rerank of a
//! large index scores tens of thousands of rows a query, and profiling showed this loop, not
//! memory, as its cost: the generic f16 conversion runs as a call per eight values. Where the CPU
//! has AVX2, FMA and F16C (checked once at run time) the conversion and the sums happen in
//! registers; elsewhere a portable loop gives the same result within rounding.

/// Cosine of a unit query and a stored f16 vector. f16 rounding leaves the stored vector
/// slightly off unit length, so it is renormalised.
pub fn cosine_f16(q: &[f32], v: &[half::f16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: the CPU has the features the kernel is compiled for (checked just above).
        return unsafe { x86::cosine(q, v) };
    }
    portable(q, v)
}

/// Asks the memory system for row `v`'s cache lines ahead of its use: the rows a query scores
/// lie scattered over the vector file, and without a hint each costs a full memory latency.
#[inline]
pub fn prefetch(v: &[half::f16]) {
    let p = v.as_ptr().cast::<u8>();
    for off in (0..std::mem::size_of_val(v)).step_by(64) {
        prefetch_line(p.wrapping_add(off));
    }
}

/// Asks the memory system for the cache line holding `x`, ahead of its use.
#[inline]
pub fn prefetch_value<T>(x: &T) {
    prefetch_line((x as *const T).cast());
}

#[inline]
fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Independent accumulators of the portable loop: one running sum is a chain of dependent
/// additions the compiler may not reorder.
const LANES: usize = 32;

fn portable(q: &[f32], v: &[half::f16]) -> f32 {
    use half::slice::HalfFloatSliceExt;
    const BLOCK: usize = 64;
    let mut buf = [0f32; BLOCK];
    let (mut dot, mut nv) = ([0f32; LANES], [0f32; LANES]);
    for (qs, vs) in q.chunks(BLOCK).zip(v.chunks(BLOCK)) {
        let b = &mut buf[..vs.len()];
        vs.convert_to_f32_slice(b);
        let (mut qi, mut bi) = (qs.chunks_exact(LANES), b.chunks_exact(LANES));
        for (qa, xa) in (&mut qi).zip(&mut bi) {
            for j in 0..LANES {
                dot[j] += qa[j] * xa[j];
                nv[j] += xa[j] * xa[j];
            }
        }
        for (a, x) in qi.remainder().iter().zip(bi.remainder()) {
            dot[0] += a * x;
            nv[0] += x * x;
        }
    }
    finish(dot.iter().sum(), nv.iter().sum())
}

fn finish(dot: f32, nv: f32) -> f32 {
    if nv > 0.0 { dot / nv.sqrt() } else { 0.0 }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    pub fn available() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }

    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn cosine(q: &[f32], v: &[half::f16]) -> f32 {
        let n = q.len().min(v.len());
        let (qp, vp) = (q.as_ptr(), v.as_ptr() as *const u16);
        // Two blocks of 8 a step, each with its own pair of sums, so that the FMAs of one block
        // do not wait for the other's.
        let (mut d0, mut d1, mut n0, mut n1) = (
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
        );
        let mut i = 0;
        // SAFETY (all loads): `i + 16 <= n` and `i + 8 <= n` keep every load inside both slices.
        while i + 16 <= n {
            let x0 = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(vp.add(i) as *const __m128i) });
            let x1 = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(vp.add(i + 8) as *const __m128i) });
            let (a0, a1) = unsafe { (_mm256_loadu_ps(qp.add(i)), _mm256_loadu_ps(qp.add(i + 8))) };
            d0 = _mm256_fmadd_ps(a0, x0, d0);
            d1 = _mm256_fmadd_ps(a1, x1, d1);
            n0 = _mm256_fmadd_ps(x0, x0, n0);
            n1 = _mm256_fmadd_ps(x1, x1, n1);
            i += 16;
        }
        if i + 8 <= n {
            let x0 = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(vp.add(i) as *const __m128i) });
            let a0 = unsafe { _mm256_loadu_ps(qp.add(i)) };
            d0 = _mm256_fmadd_ps(a0, x0, d0);
            n0 = _mm256_fmadd_ps(x0, x0, n0);
            i += 8;
        }
        let (mut dot, mut nv) = (hsum(_mm256_add_ps(d0, d1)), hsum(_mm256_add_ps(n0, n1)));
        for j in i..n {
            let x = v[j].to_f32();
            dot += q[j] * x;
            nv += x * x;
        }
        super::finish(dot, nv)
    }

    #[target_feature(enable = "avx2")]
    fn hsum(x: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(q: &[f32], v: &[f32]) -> f32 {
        let mut dot = 0f64;
        let mut nv = 0f64;
        for (a, b) in q.iter().zip(v) {
            dot += f64::from(*a) * f64::from(*b);
            nv += f64::from(*b) * f64::from(*b);
        }
        if nv > 0.0 {
            (dot / nv.sqrt()) as f32
        } else {
            0.0
        }
    }

    #[test]
    fn every_kernel_matches_the_exact_cosine() {
        // Lengths around the vector, lane and block sizes, so every remainder path runs.
        for n in [
            0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 384, 385, 768,
        ] {
            let q: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            let v: Vec<half::f16> = (0..n)
                .map(|i| half::f16::from_f32(((i * 53 % 97) as f32 - 48.0) / 48.0))
                .collect();
            let f: Vec<f32> = v.iter().map(|x| x.to_f32()).collect();
            let want = cosine(&q, &f);
            let mut got = vec![
                ("dispatched", cosine_f16(&q, &v)),
                ("portable", portable(&q, &v)),
            ];
            #[cfg(target_arch = "x86_64")]
            if x86::available() {
                // SAFETY: checked just above.
                got.push(("avx2", unsafe { x86::cosine(&q, &v) }));
            }
            for (name, g) in got {
                assert!(
                    (g - want).abs() < 1e-4 * want.abs().max(1.0),
                    "{name}, {n}: {g} vs {want}"
                );
            }
        }
    }

    #[test]
    fn a_zero_vector_has_cosine_zero() {
        let v = vec![half::f16::ZERO; 384];
        assert_eq!(cosine_f16(&[0.5; 384], &v), 0.0);
        assert_eq!(portable(&[0.5; 384], &v), 0.0);
    }
}
