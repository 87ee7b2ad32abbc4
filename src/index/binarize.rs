//! Training-free binary codes from float embeddings.
//!
//! Search filters every passage by the Hamming distance of short binary codes before reranking
//! the survivors with float embeddings (see [`super::hamming`]). Until a learned hashing head
//! exists, the codes come from a *linear* hash fitted on the corpus itself: centre the
//! embedding, project it onto `bits` directions, and keep one bit per direction (projection above
//! that direction's threshold). The same three classic fits double as the baselines of a hashing
//! evaluation, so they follow the published methods closely:
//!
//! * [`Method::Lsh`] — random Gaussian hyperplanes through the mean (Charikar's SimHash). Needs no
//!   fitting beyond the mean and works for any `bits`, but wastes bits on directions of little
//!   variance.
//! * [`Method::Median`] — the top `bits` principal directions, each cut at its median on the
//!   training data, so that every bit splits the corpus in half (maximum entropy per bit).
//! * [`Method::Itq`] — Gong & Lazebnik's Iterative Quantization: PCA to `bits` dimensions, then
//!   the orthogonal rotation `R` that minimises the quantisation loss ‖B − VR‖²_F, found by
//!   alternating `B = sign(VR)` with an orthogonal Procrustes step. Rotating spreads the variance,
//!   which PCA concentrates in the first components, evenly over the bits.
//!
//! All three reduce to the same encoder — `bit_j = ⟨proj_j, v − mean⟩ > threshold_j` — so a
//! fitted [`LinearHasher`] is just those arrays, and it serialises to a small versioned byte
//! format ([`LinearHasher::to_bytes`]) that the index stores next to the codes.
//!
//! Bit `j` of a code is bit `j % 64` of word `j / 64`, the layout [`super::hamming`] expects;
//! unused high bits of the last word are zero.

use crate::rng::SplitMix64;
use std::fmt;
use std::str::FromStr;

use nalgebra::{DMatrix, DMatrixView, SVD, SymmetricEigen};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Longest supported code: four 64-bit words.
pub const MAX_BITS: usize = 256;

/// Largest embedding dimension accepted when loading a hasher. Far above any encoder in use; it
/// only exists so that a corrupt header cannot request an absurd allocation.
const MAX_DIM: usize = 1 << 16;

/// ITQ iterations. Gong & Lazebnik report convergence well within 50.
const ITQ_ITERATIONS: usize = 50;

/// Rows per chunk in the parallel passes over the training data: big enough for efficient
/// matrix products, small enough that the per-thread f64 buffers stay a few MB.
const CHUNK_ROWS: usize = 2048;

/// How the projection and thresholds are fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Random Gaussian hyperplanes through the mean, threshold 0.
    Lsh,
    /// Top principal directions, thresholded at the training median.
    Median,
    /// PCA followed by the ITQ rotation, threshold 0.
    Itq,
}

impl Method {
    /// Every method, in the order of the module documentation.
    pub const ALL: [Method; 3] = [Method::Lsh, Method::Median, Method::Itq];

    /// The lowercase name used on the command line, in serialised hashers and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Method::Lsh => "lsh",
            Method::Median => "median",
            Method::Itq => "itq",
        }
    }

    /// Whether the method projects onto principal components, which limits `bits` to `dim`.
    fn uses_pca(self) -> bool {
        matches!(self, Method::Median | Method::Itq)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = BinarizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| BinarizeError::UnknownMethod(s.to_owned()))
    }
}

/// Errors from fitting, encoding and loading hashers. Shapes are checked up front so that bad
/// input is an error, never a panic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BinarizeError {
    #[error("training data has {len} values but {n} rows of {dim} dimensions need {expected}")]
    DataShape {
        len: usize,
        n: usize,
        dim: usize,
        expected: usize,
    },
    #[error("embedding dimension must be between 1 and {MAX_DIM}, got {0}")]
    Dimension(usize),
    #[error("code length must be between 1 and {MAX_BITS} bits, got {0}")]
    Bits(usize),
    #[error(
        "{method} projects onto principal components, so it needs bits <= dim ({bits} > {dim})"
    )]
    BitsExceedDim {
        method: Method,
        bits: usize,
        dim: usize,
    },
    #[error("fitting needs at least 2 training rows, got {0}")]
    TooFewRows(usize),
    #[error("training data has a non-finite value (NaN or infinity) in row {0}")]
    NonFiniteData(usize),
    #[error("vector has {got} dimensions but the hasher expects {expected}")]
    VectorLength { expected: usize, got: usize },
    #[error("code buffer has {got} words but {bits}-bit codes need {expected}")]
    CodeLength {
        expected: usize,
        got: usize,
        bits: usize,
    },
    #[error("unknown hashing method `{0}`; expected lsh, median or itq")]
    UnknownMethod(String),
    #[error("hasher fields are inconsistent: {0}")]
    Inconsistent(String),
    #[error("invalid hasher bytes: {0}")]
    Corrupt(String),
    #[error(
        "hasher format version {0} is not supported (this build reads version {FORMAT_VERSION})"
    )]
    UnsupportedVersion(u32),
    #[error("{0} did not converge")]
    Numerical(&'static str),
}

/// A fitted linear hash: `bit_j(v) = ⟨proj_j, v − mean⟩ > thresholds_j`.
///
/// The public fields describe the hasher; changing them by hand makes it inconsistent, which
/// [`encode`](Self::encode) reports as an error rather than producing garbage.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearHasher {
    pub method: Method,
    pub dim: usize,
    pub bits: usize,
    /// Training mean, `dim` values.
    mean: Vec<f32>,
    /// Projection directions, `bits × dim`, row-major (row `j` produces bit `j`).
    proj: Vec<f32>,
    /// Per-bit thresholds, `bits` values.
    thresholds: Vec<f32>,
}

impl LinearHasher {
    /// Fits a hasher of `bits` bits on `n` training rows of `dim` floats (row-major `data`).
    ///
    /// `seed` makes the random parts (LSH hyperplanes, ITQ's starting rotation) reproducible: the
    /// same data and seed give the same hasher on the same platform. Errors for `n < 2`, `bits`
    /// outside `1..=256`, `bits > dim` for the PCA methods, a `data` length other than `n × dim`,
    /// and non-finite values.
    pub fn fit(
        method: Method,
        data: &[f32],
        n: usize,
        dim: usize,
        bits: usize,
        seed: u64,
    ) -> Result<Self, BinarizeError> {
        validate_shape(method, dim, bits)?;
        let expected = n.saturating_mul(dim);
        if data.len() != expected {
            return Err(BinarizeError::DataShape {
                len: data.len(),
                n,
                dim,
                expected,
            });
        }
        if n < 2 {
            return Err(BinarizeError::TooFewRows(n));
        }
        if let Some(pos) = data.iter().position(|x| !x.is_finite()) {
            return Err(BinarizeError::NonFiniteData(pos / dim));
        }

        let mean = column_mean(data, dim);
        let mut rng = SplitMix64::new(seed);
        let mut hasher = LinearHasher {
            method,
            dim,
            bits,
            mean,
            proj: Vec::new(),
            thresholds: vec![0.0; bits],
        };
        match method {
            Method::Lsh => {
                hasher.proj = (0..bits * dim).map(|_| rng.gaussian() as f32).collect();
            }
            Method::Median => {
                hasher.proj = principal_components(data, dim, &hasher.mean, bits)?;
                let projected = hasher.project_rows(data);
                hasher.thresholds = column_medians(&projected, bits);
            }
            Method::Itq => {
                let pca = principal_components(data, dim, &hasher.mean, bits)?;
                hasher.proj = pca.clone();
                let projected = hasher.project_rows(data);
                let rotation = itq_rotation(&projected, bits, ITQ_ITERATIONS, &mut rng)?.rotation;
                hasher.proj = rotate_projection(&pca, &rotation, bits, dim);
            }
        }
        Ok(hasher)
    }

    /// Number of 64-bit words per code.
    pub fn words(&self) -> usize {
        self.bits.div_ceil(64)
    }

    /// Training mean subtracted before projecting (`dim` values).
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    /// Projection directions, `bits × dim`, row-major.
    pub fn projection(&self) -> &[f32] {
        &self.proj
    }

    /// Per-bit thresholds.
    pub fn thresholds(&self) -> &[f32] {
        &self.thresholds
    }

    /// Encodes one vector into `out` (`words()` words).
    pub fn encode(&self, v: &[f32], out: &mut [u64]) -> Result<(), BinarizeError> {
        self.check()?;
        if v.len() != self.dim {
            return Err(BinarizeError::VectorLength {
                expected: self.dim,
                got: v.len(),
            });
        }
        if out.len() != self.words() {
            return Err(BinarizeError::CodeLength {
                expected: self.words(),
                got: out.len(),
                bits: self.bits,
            });
        }
        let mut scratch = Scratch::new(self.dim, self.bits);
        self.encode_row(v, &mut scratch, out);
        Ok(())
    }

    /// How far one vector lies past each bit's threshold (`⟨proj_j, v − mean⟩ − threshold_j`):
    /// bit `j` of its code is `margins[j] > 0`. The asymmetric filter weighs a query's bits by it
    /// ([`super::weighted`]).
    pub fn margins(&self, v: &[f32]) -> Result<Vec<f32>, BinarizeError> {
        self.check()?;
        if v.len() != self.dim {
            return Err(BinarizeError::VectorLength {
                expected: self.dim,
                got: v.len(),
            });
        }
        let mut scratch = Scratch::new(self.dim, self.bits);
        self.project_row(v, &mut scratch);
        Ok(scratch
            .values
            .iter()
            .zip(&self.thresholds)
            .map(|(v, t)| v - t)
            .collect())
    }

    /// Encodes `n` row-major vectors; returns `n × words()` words, the layout of
    /// [`super::hamming::top_candidates`]. Rows are encoded in parallel, each exactly as
    /// [`encode`](Self::encode) would.
    pub fn encode_batch(&self, data: &[f32], n: usize) -> Result<Vec<u64>, BinarizeError> {
        self.check()?;
        let expected = n.saturating_mul(self.dim);
        if data.len() != expected {
            return Err(BinarizeError::DataShape {
                len: data.len(),
                n,
                dim: self.dim,
                expected,
            });
        }
        let words = self.words();
        let mut codes = vec![0u64; n * words];
        codes
            .par_chunks_mut(words)
            .zip(data.par_chunks_exact(self.dim))
            .with_min_len(256)
            .for_each_init(
                || Scratch::new(self.dim, self.bits),
                |scratch, (out, v)| self.encode_row(v, scratch, out),
            );
        Ok(codes)
    }

    /// Checks the invariants between the fields: the public ones may have been edited, and a
    /// mismatch must become an error, not an out-of-bounds panic or silent garbage.
    fn check(&self) -> Result<(), BinarizeError> {
        let inconsistent = |what: &str| Err(BinarizeError::Inconsistent(what.to_owned()));
        if self.dim == 0 || self.dim > MAX_DIM {
            return inconsistent("dim out of range");
        }
        if self.bits == 0 || self.bits > MAX_BITS {
            return inconsistent("bits out of range");
        }
        if self.mean.len() != self.dim {
            return inconsistent("mean length differs from dim");
        }
        if self.thresholds.len() != self.bits {
            return inconsistent("threshold count differs from bits");
        }
        if Some(self.proj.len()) != self.bits.checked_mul(self.dim) {
            return inconsistent("projection size differs from bits × dim");
        }
        Ok(())
    }

    /// Projections `⟨proj_j, v − mean⟩` of one vector into `scratch.values`. Shapes were checked
    /// by the public callers; the summation order is fixed, so every path that projects a vector
    /// (single, batch, median fitting) gets bit-identical values.
    fn project_row(&self, v: &[f32], scratch: &mut Scratch) {
        debug_assert_eq!(v.len(), self.dim);
        for ((c, x), m) in scratch.centred.iter_mut().zip(v).zip(&self.mean) {
            *c = x - m;
        }
        for (value, row) in scratch
            .values
            .iter_mut()
            .zip(self.proj.chunks_exact(self.dim))
        {
            *value = dot(row, &scratch.centred);
        }
    }

    fn encode_row(&self, v: &[f32], scratch: &mut Scratch, out: &mut [u64]) {
        debug_assert_eq!(out.len(), self.words());
        self.project_row(v, scratch);
        out.fill(0);
        for (j, (value, threshold)) in scratch.values.iter().zip(&self.thresholds).enumerate() {
            if let Some(word) = out.get_mut(j / 64) {
                *word |= u64::from(value > threshold) << (j % 64);
            }
        }
    }

    /// All rows projected, `n × bits` row-major.
    fn project_rows(&self, data: &[f32]) -> Vec<f32> {
        let n = data.len() / self.dim;
        let mut out = vec![0f32; n * self.bits];
        out.par_chunks_mut(self.bits)
            .zip(data.par_chunks_exact(self.dim))
            .with_min_len(256)
            .for_each_init(
                || Scratch::new(self.dim, self.bits),
                |scratch, (values, v)| {
                    self.project_row(v, scratch);
                    values.copy_from_slice(&scratch.values);
                },
            );
        out
    }

    /// Serialises the hasher: a small versioned binary format.
    ///
    /// Layout (all integers little-endian): the 8-byte magic `DHLINHSH`, a `u32` format version,
    /// a `u32` header length, a JSON header `{"method", "dim", "bits"}`, the `f32`s of `mean`
    /// (`dim`), `proj` (`bits × dim`, row-major) and `thresholds` (`bits`), and finally a `u64`
    /// FNV-1a checksum of everything before it. JSON keeps the header readable and extensible;
    /// raw floats keep a 256 × 1024 projection at 1 MB and exact; the checksum catches the flipped
    /// or truncated bytes that length and finiteness checks alone would let through.
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = Header {
            method: self.method,
            dim: self.dim,
            bits: self.bits,
        };
        // Serialising a struct of an enum and two integers cannot fail.
        let header = serde_json::to_vec(&header).unwrap_or_default();
        let floats = self.mean.len() + self.proj.len() + self.thresholds.len();
        let mut bytes = Vec::with_capacity(MAGIC.len() + 8 + header.len() + 4 * floats + 8);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&header);
        for x in self.mean.iter().chain(&self.proj).chain(&self.thresholds) {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        let checksum = fnv1a(&bytes);
        bytes.extend_from_slice(&checksum.to_le_bytes());
        bytes
    }

    /// Loads a hasher written by [`to_bytes`](Self::to_bytes), validating everything: magic,
    /// checksum, version, header, sizes, and that every number is finite.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BinarizeError> {
        let corrupt = |what: &str| BinarizeError::Corrupt(what.to_owned());
        let fixed = MAGIC.len() + 4 + 4;
        if bytes.len() < fixed + 8 {
            return Err(corrupt("too short"));
        }
        if &bytes[..MAGIC.len()] != MAGIC {
            return Err(corrupt("not a dochash hasher (bad magic)"));
        }
        let (body, checksum) = bytes.split_at(bytes.len() - 8);
        if fnv1a(body) != u64::from_le_bytes(array(checksum)?) {
            return Err(corrupt("checksum mismatch (truncated or damaged)"));
        }
        let version = u32::from_le_bytes(array(&body[MAGIC.len()..MAGIC.len() + 4])?);
        if version != FORMAT_VERSION {
            return Err(BinarizeError::UnsupportedVersion(version));
        }
        let header_len = u32::from_le_bytes(array(&body[MAGIC.len() + 4..fixed])?) as usize;
        let header_bytes = body
            .get(fixed..fixed.saturating_add(header_len))
            .ok_or_else(|| corrupt("header runs past the end"))?;
        let header: Header = serde_json::from_slice(header_bytes)
            .map_err(|e| BinarizeError::Corrupt(format!("bad header: {e}")))?;
        validate_shape(header.method, header.dim, header.bits)?;
        let (dim, bits) = (header.dim, header.bits);
        let payload = &body[fixed + header_len..];
        let floats = dim + bits * dim + bits;
        if payload.len() != 4 * floats {
            return Err(BinarizeError::Corrupt(format!(
                "payload is {} bytes, expected {}",
                payload.len(),
                4 * floats
            )));
        }
        let values = finite_f32s(payload).ok_or_else(|| corrupt("non-finite number"))?;
        let (mean, rest) = values.split_at(dim);
        let (proj, thresholds) = rest.split_at(bits * dim);
        Ok(LinearHasher {
            method: header.method,
            dim,
            bits,
            mean: mean.to_vec(),
            proj: proj.to_vec(),
            thresholds: thresholds.to_vec(),
        })
    }
}

const MAGIC: &[u8; 8] = b"DHLINHSH";
/// Version of the [`LinearHasher::to_bytes`] format.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    method: Method,
    dim: usize,
    bits: usize,
}

fn array<const N: usize>(bytes: &[u8]) -> Result<[u8; N], BinarizeError> {
    bytes
        .try_into()
        .map_err(|_| BinarizeError::Corrupt("short field".to_owned()))
}

/// 64-bit FNV-1a: tiny, dependency-free, and plenty to detect accidental damage (this is not a
/// defence against deliberate tampering; the index files are the user's own).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn validate_shape(method: Method, dim: usize, bits: usize) -> Result<(), BinarizeError> {
    if dim == 0 || dim > MAX_DIM {
        return Err(BinarizeError::Dimension(dim));
    }
    if bits == 0 || bits > MAX_BITS {
        return Err(BinarizeError::Bits(bits));
    }
    if method.uses_pca() && bits > dim {
        return Err(BinarizeError::BitsExceedDim { method, bits, dim });
    }
    Ok(())
}

/// Per-thread buffers for projecting one vector.
struct Scratch {
    centred: Vec<f32>,
    values: Vec<f32>,
}

impl Scratch {
    fn new(dim: usize, bits: usize) -> Self {
        Scratch {
            centred: vec![0.0; dim],
            values: vec![0.0; bits],
        }
    }
}

/// Dot product with eight independent partial sums, in a fixed order: LLVM vectorises it (a plain
/// `sum()` of products must stay sequential under IEEE rules), and the result does not depend on
/// which caller or thread computes it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (a8, a_rest) = a.as_chunks::<8>();
    let (b8, b_rest) = b.as_chunks::<8>();
    let mut acc = [0f32; 8];
    for (x, y) in a8.iter().zip(b8) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Column means, accumulated in f64 (a float sum over 100k rows loses digits in f32).
///
/// Chunks are summed in parallel but combined in chunk order, so the result does not depend on
/// the thread count or on how rayon happened to split the work (a parallel `reduce` would
/// associate the sums differently from run to run, and ITQ amplifies such last-bit differences).
fn column_mean(data: &[f32], dim: usize) -> Vec<f32> {
    let n = data.len() / dim;
    let partials: Vec<Vec<f64>> = data
        .par_chunks(CHUNK_ROWS * dim)
        .map(|chunk| {
            let mut s = vec![0f64; dim];
            for row in chunk.chunks_exact(dim) {
                for (acc, &x) in s.iter_mut().zip(row) {
                    *acc += f64::from(x);
                }
            }
            s
        })
        .collect();
    let mut sums = vec![0f64; dim];
    for partial in &partials {
        sums.iter_mut().zip(partial).for_each(|(a, b)| *a += b);
    }
    sums.into_iter().map(|s| (s / n as f64) as f32).collect()
}

/// The `bits` leading principal directions, as a `bits × dim` row-major f32 matrix.
///
/// The covariance is accumulated in f64 as `Σ XcᵀXc` over chunks of centred rows: each chunk is a
/// dense matrix product, so it runs through the blocked, SIMD GEMM that nalgebra uses for dynamic
/// matrices. Threads split the *columns* of the covariance (computing only the lower triangle,
/// half the work, and mirroring it) and every block accumulates the chunks in row order, so each
/// entry is summed in the same order whatever the thread count: fitting stays reproducible
/// without per-thread `dim × dim` copies to merge. Centring *before* the product avoids the
/// cancellation of `E[xxᵀ] − μμᵀ`. Directions are ordered by decreasing eigenvalue, and each is
/// given a canonical sign (largest component positive) so that fitting is reproducible across
/// eigen-solver details.
fn principal_components(
    data: &[f32],
    dim: usize,
    mean: &[f32],
    bits: usize,
) -> Result<Vec<f32>, BinarizeError> {
    let cov = covariance(data, dim, mean);
    let eigen = SymmetricEigen::try_new(cov, f64::EPSILON, 1000 * dim)
        .ok_or(BinarizeError::Numerical("covariance eigen-decomposition"))?;
    let mut order: Vec<usize> = (0..dim).collect();
    order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
    let mut proj = Vec::with_capacity(bits * dim);
    for &k in order.iter().take(bits) {
        let column = eigen.eigenvectors.column(k);
        let pivot = column
            .iter()
            .fold(0f64, |best, &x| if x.abs() > best.abs() { x } else { best });
        let sign = if pivot < 0.0 { -1.0 } else { 1.0 };
        proj.extend(column.iter().map(|&x| (sign * x) as f32));
    }
    Ok(proj)
}

/// Sample covariance (`n − 1` normalisation) of the rows of `data` around `mean`, in f64.
fn covariance(data: &[f32], dim: usize, mean: &[f32]) -> DMatrix<f64> {
    const COLUMN_BLOCKS: usize = 8;
    let n = data.len() / dim;
    let width = dim.div_ceil(COLUMN_BLOCKS);
    let mut blocks: Vec<(usize, DMatrix<f64>)> = (0..dim)
        .step_by(width)
        .map(|first| {
            (
                first,
                DMatrix::<f64>::zeros(dim - first, width.min(dim - first)),
            )
        })
        .collect();
    let mut centred = Vec::with_capacity(CHUNK_ROWS * dim);
    for chunk in data.chunks(CHUNK_ROWS * dim) {
        let rows = chunk.len() / dim;
        centred.clear();
        centred.extend(
            chunk
                .chunks_exact(dim)
                .flat_map(|row| row.iter().zip(mean).map(|(&x, &m)| f64::from(x - m))),
        );
        blocks.par_iter_mut().for_each(|(first, block)| {
            let (below, cols) = block.shape();
            let from = &centred[*first..];
            // Row-major rows × dim is column-major dim × rows, i.e. Xcᵀ: rows `first..` of it
            // start at column `first` of the buffer; the column block of Xc is the same buffer
            // read with swapped strides. Only the lower triangle (rows >= first) is computed.
            let xt = DMatrixView::from_slice_with_strides(from, below, rows, 1, dim);
            let x = DMatrixView::from_slice_with_strides(from, rows, cols, dim, 1);
            block.gemm(1.0, &xt, &x, 1.0);
        });
    }
    let mut cov = DMatrix::<f64>::zeros(dim, dim);
    for (first, block) in &blocks {
        cov.view_mut((*first, *first), block.shape())
            .copy_from(block);
    }
    cov.fill_upper_triangle_with_lower_triangle();
    cov / (n as f64 - 1.0)
}

/// Per-column medians of an `n × bits` row-major matrix. With `value > threshold` deciding a bit,
/// the lower median sets exactly ⌊n/2⌋ of the training rows to one when values are distinct.
fn column_medians(values: &[f32], bits: usize) -> Vec<f32> {
    (0..bits)
        .into_par_iter()
        .map(|j| {
            let mut column: Vec<f32> = values.iter().skip(j).step_by(bits).copied().collect();
            let mid = (column.len().saturating_sub(1)) / 2;
            if column.is_empty() {
                return 0.0;
            }
            let (_, median, _) = column.select_nth_unstable_by(mid, f32::total_cmp);
            *median
        })
        .collect()
}

/// Result of [`itq_rotation`].
struct Itq {
    /// Orthogonal `bits × bits` rotation applied after PCA.
    rotation: DMatrix<f64>,
    /// Quantisation loss ‖B − VR‖²_F before each update (non-increasing).
    #[cfg_attr(not(test), allow(dead_code))]
    losses: Vec<f64>,
}

/// Gong & Lazebnik's ITQ on PCA-projected, centred data `v` (`n × bits`, row-major).
///
/// Alternates (1) `B = sign(VR)`, optimal for fixed `R`, and (2) the orthogonal Procrustes
/// solution `R = Ŝ Sᵀ` from the SVD `BᵀV = S Ω Ŝᵀ`, optimal for fixed `B`; neither step can raise
/// the loss. The heavy products (`VR` and `BᵀV`, `n × bits × bits` each) run in f32 through GEMM,
/// in row chunks across threads, with the small `bits × bits` results summed in f64 in chunk order
/// (so the result does not depend on the thread count) — the SVD and `R` stay f64 so that `R` is
/// orthogonal to machine precision.
fn itq_rotation(
    v: &[f32],
    bits: usize,
    iterations: usize,
    rng: &mut SplitMix64,
) -> Result<Itq, BinarizeError> {
    let mut rotation = random_orthogonal(bits, rng)?;
    let mut losses = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        // Rᵀ in f32: chunks are stored transposed (see below), so VR is computed as Rᵀ Vᵀ.
        let rt = rotation.transpose().map(|x| x as f32);
        let (loss, m) = v
            .par_chunks(CHUNK_ROWS * bits)
            .map(|chunk| {
                let rows = chunk.len() / bits;
                // A row-major rows × bits chunk is the column-major bits × rows matrix Vᵀ.
                let vt = DMatrixView::from_slice(chunk, bits, rows);
                let mut zt = DMatrix::<f32>::zeros(bits, rows);
                zt.gemm(1.0, &rt, &vt, 0.0);
                let mut loss = 0f64;
                let bt = zt.map(|z| {
                    let b = if z > 0.0 { 1.0 } else { -1.0 };
                    loss += f64::from(b - z).powi(2);
                    b
                });
                // BᵀV = (Bᵀ)(Vᵀ)ᵀ: Vᵀ's buffer read with swapped strides is V (rows × bits).
                let v_rows = DMatrixView::from_slice_with_strides(chunk, rows, bits, bits, 1);
                let mut m = DMatrix::<f32>::zeros(bits, bits);
                m.gemm(1.0, &bt, &v_rows, 0.0);
                (loss, m.map(f64::from))
            })
            .collect::<Vec<_>>()
            .into_iter()
            // Combined in chunk order: reproducible whatever the thread count.
            .fold((0.0, DMatrix::<f64>::zeros(bits, bits)), |a, b| {
                (a.0 + b.0, a.1 + b.1)
            });
        losses.push(loss);
        let svd = SVD::try_new(m, true, true, f64::EPSILON, 1000 * bits)
            .ok_or(BinarizeError::Numerical("ITQ rotation SVD"))?;
        let (Some(s), Some(s_hat_t)) = (svd.u, svd.v_t) else {
            return Err(BinarizeError::Numerical("ITQ rotation SVD"));
        };
        rotation = s_hat_t.transpose() * s.transpose();
    }
    Ok(Itq { rotation, losses })
}

/// A random orthogonal matrix: QR of a Gaussian matrix, with the signs fixed by R's diagonal
/// (which makes it Haar-distributed and the result independent of QR sign conventions).
fn random_orthogonal(size: usize, rng: &mut SplitMix64) -> Result<DMatrix<f64>, BinarizeError> {
    let gaussian = DMatrix::<f64>::from_fn(size, size, |_, _| rng.gaussian());
    let qr = gaussian.qr();
    let (mut q, r) = (qr.q(), qr.r());
    for (j, mut column) in q.column_iter_mut().enumerate() {
        if r[(j, j)] < 0.0 {
            column.neg_mut();
        }
    }
    if q.iter().all(|x| x.is_finite()) {
        Ok(q)
    } else {
        Err(BinarizeError::Numerical("random rotation"))
    }
}

/// Folds the ITQ rotation into the PCA projection: bit `j` is `Σ_k R[k, j] ⟨pca_k, v − μ⟩`, so
/// the final row `j` is `Σ_k R[k, j] · pca_k`, i.e. the projection becomes `Rᵀ · PCA`.
fn rotate_projection(pca: &[f32], rotation: &DMatrix<f64>, bits: usize, dim: usize) -> Vec<f32> {
    let mut proj = vec![0f32; bits * dim];
    for (j, row) in proj.chunks_exact_mut(dim).enumerate() {
        let mut acc = vec![0f64; dim];
        for (k, component) in pca.chunks_exact(dim).enumerate() {
            let r = rotation[(k, j)];
            for (a, &p) in acc.iter_mut().zip(component) {
                *a += r * f64::from(p);
            }
        }
        for (out, a) in row.iter_mut().zip(acc) {
            *out = a as f32;
        }
    }
    proj
}

/// Little-endian f32s, as the index's stored blobs hold them; `None` if any is not finite (a
/// damaged blob must not turn into NaN distances). Trailing bytes short of a value are ignored.
pub(super) fn finite_f32s(bytes: &[u8]) -> Option<Vec<f32>> {
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    values.iter().all(|x| x.is_finite()).then_some(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::hamming::top_candidates;

    /// `n` points around `clusters` random centres in `dim` dimensions.
    fn clustered(n: usize, dim: usize, clusters: usize, spread: f64, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        let centres: Vec<f64> = (0..clusters * dim).map(|_| rng.gaussian()).collect();
        let mut data = Vec::with_capacity(n * dim);
        for i in 0..n {
            let c = &centres[(i % clusters) * dim..][..dim];
            data.extend(c.iter().map(|&x| (x + spread * rng.gaussian()) as f32));
        }
        data
    }

    fn cosine(a: &[f32], b: &[f32]) -> f64 {
        let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
        for (&x, &y) in a.iter().zip(b) {
            ab += f64::from(x) * f64::from(y);
            aa += f64::from(x) * f64::from(x);
            bb += f64::from(y) * f64::from(y);
        }
        ab / (aa.sqrt() * bb.sqrt())
    }

    /// Mean share of each query's 10 cosine neighbours found among its `retrieved` nearest codes.
    fn neighbour_recall(data: &[f32], dim: usize, codes: &[u64], words: usize) -> f64 {
        let n = data.len() / dim;
        let queries = (0..n).step_by(n / 100);
        let retrieved = n / 20;
        let mut total = 0.0;
        let mut count = 0;
        for q in queries {
            let qv = &data[q * dim..][..dim];
            let mut by_cosine: Vec<(f64, usize)> = (0..n)
                .filter(|&i| i != q)
                .map(|i| (cosine(qv, &data[i * dim..][..dim]), i))
                .collect();
            by_cosine.sort_by(|a, b| b.0.total_cmp(&a.0));
            let truth: Vec<usize> = by_cosine.iter().take(10).map(|&(_, i)| i).collect();
            let qc = &codes[q * words..][..words];
            let found = top_candidates(qc, codes, words, retrieved + 1).unwrap();
            let found: Vec<usize> = found.iter().map(|c| c.index as usize).collect();
            total += truth.iter().filter(|i| found.contains(i)).count() as f64 / 10.0;
            count += 1;
        }
        total / count as f64
    }

    #[test]
    fn method_names_round_trip() {
        for m in Method::ALL {
            assert_eq!(m.to_string().parse::<Method>(), Ok(m));
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.name()));
            assert_eq!(serde_json::from_str::<Method>(&json).unwrap(), m);
        }
        assert_eq!("ITQ".parse::<Method>(), Ok(Method::Itq));
        assert!(matches!(
            "pq".parse::<Method>(),
            Err(BinarizeError::UnknownMethod(_))
        ));
    }

    #[test]
    fn margins_are_positive_exactly_where_the_code_has_a_one() {
        let (n, dim) = (400, 24);
        let data = clustered(n, dim, 5, 0.5, 9);
        for method in Method::ALL {
            let h = LinearHasher::fit(method, &data, n, dim, 16, 2).unwrap();
            for v in data.chunks(dim) {
                let mut code = [0u64];
                h.encode(v, &mut code).unwrap();
                let m = h.margins(v).unwrap();
                for (b, x) in m.iter().enumerate() {
                    assert_eq!(*x > 0.0, (code[0] >> b) & 1 == 1, "{method} bit {b}");
                }
            }
            assert!(h.margins(&data[..dim - 1]).is_err());
        }
    }

    #[test]
    fn fitting_is_deterministic_for_a_seed() {
        let (n, dim) = (500, 24);
        let data = clustered(n, dim, 5, 0.5, 1);
        for m in Method::ALL {
            let a = LinearHasher::fit(m, &data, n, dim, 16, 42).unwrap();
            let b = LinearHasher::fit(m, &data, n, dim, 16, 42).unwrap();
            assert_eq!(a, b, "{m}");
            assert_eq!(a.encode_batch(&data, n), b.encode_batch(&data, n));
        }
        let a = LinearHasher::fit(Method::Lsh, &data, n, dim, 16, 1).unwrap();
        let b = LinearHasher::fit(Method::Lsh, &data, n, dim, 16, 2).unwrap();
        assert_ne!(a.projection(), b.projection());
    }

    #[test]
    fn fitting_does_not_depend_on_the_thread_count() {
        // Several chunks of rows, so that parallel sums really are split.
        let (n, dim) = (3 * CHUNK_ROWS + 17, 20);
        let data = clustered(n, dim, 6, 0.5, 12);
        let fit_with = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| LinearHasher::fit(Method::Itq, &data, n, dim, 16, 5).unwrap())
        };
        let one = fit_with(1);
        assert_eq!(one, fit_with(3));
        assert_eq!(one, fit_with(8));
    }

    #[test]
    fn covariance_matches_the_definition() {
        // Uneven column blocks and several row chunks.
        let (n, dim) = (2 * CHUNK_ROWS + 5, 13);
        let data = clustered(n, dim, 3, 1.0, 21);
        let mean = column_mean(&data, dim);
        let cov = covariance(&data, dim, &mean);
        for i in 0..dim {
            for j in 0..dim {
                let mut s = 0f64;
                for row in data.chunks_exact(dim) {
                    s += f64::from(row[i] - mean[i]) * f64::from(row[j] - mean[j]);
                }
                let want = s / (n as f64 - 1.0);
                assert!(
                    (cov[(i, j)] - want).abs() < 1e-9 * (1.0 + want.abs()),
                    "({i}, {j})"
                );
            }
        }
    }

    #[test]
    fn pca_finds_the_principal_axes() {
        let (n, dim) = (5000, 20);
        let mut rng = SplitMix64::new(4);
        let mut data = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let (major, minor) = (3.0 * rng.gaussian(), 2.0 * rng.gaussian());
            for d in 0..dim {
                let mut x = 0.3 * rng.gaussian() + 5.0;
                if d < 2 {
                    x += major / 2f64.sqrt();
                }
                if d == 7 {
                    x += minor;
                }
                data.push(x as f32);
            }
        }
        let mean = column_mean(&data, dim);
        let p = principal_components(&data, dim, &mean, 2).unwrap();
        let (first, second) = p.split_at(dim);
        let along =
            |v: &[f32], axis: &[(usize, f32)]| -> f32 { axis.iter().map(|&(d, w)| v[d] * w).sum() };
        let diagonal = 1.0 / 2f32.sqrt();
        // Canonical sign: the largest component is positive.
        assert!(along(first, &[(0, diagonal), (1, diagonal)]) > 0.99);
        assert!(along(second, &[(7, 1.0)]) > 0.99);
    }

    #[test]
    fn itq_loss_never_increases_and_rotation_stays_orthogonal() {
        let (n, dim, bits) = (3000, 32, 16);
        let data = clustered(n, dim, 10, 0.7, 3);
        let mut hasher = LinearHasher::fit(Method::Median, &data, n, dim, bits, 0).unwrap();
        hasher.thresholds.fill(0.0);
        let v = hasher.project_rows(&data);
        let itq = itq_rotation(&v, bits, 50, &mut SplitMix64::new(9)).unwrap();
        assert_eq!(itq.losses.len(), 50);
        for w in itq.losses.windows(2) {
            // Exact arithmetic makes the sequence non-increasing; allow f32 rounding.
            assert!(
                w[1] <= w[0] * (1.0 + 1e-5),
                "loss rose: {} -> {}",
                w[0],
                w[1]
            );
        }
        let first = itq.losses[0];
        let last = itq.losses[itq.losses.len() - 1];
        assert!(
            last < 0.95 * first,
            "ITQ barely improved: {first} -> {last}"
        );
        let r = &itq.rotation;
        let gram = r.transpose() * r;
        let identity = DMatrix::<f64>::identity(bits, bits);
        assert!((gram - identity).abs().max() < 1e-9);
    }

    #[test]
    fn itq_codes_find_cosine_neighbours() {
        let (n, dim, bits) = (2000, 64, 32);
        let data = clustered(n, dim, 10, 0.6, 7);
        let mut recall = Vec::new();
        for m in [Method::Lsh, Method::Itq] {
            let h = LinearHasher::fit(m, &data, n, dim, bits, 11).unwrap();
            let codes = h.encode_batch(&data, n).unwrap();
            recall.push(neighbour_recall(&data, dim, &codes, h.words()));
        }
        let (lsh, itq) = (recall[0], recall[1]);
        // Retrieving 5 % of the corpus at random would find 5 % of the true neighbours.
        let chance = 0.05;
        assert!(itq > 8.0 * chance, "ITQ recall {itq}");
        assert!(lsh > 2.0 * chance, "LSH recall {lsh}");
        assert!(itq >= lsh, "ITQ {itq} < LSH {lsh}");
    }

    #[test]
    fn median_bits_are_balanced_on_training_data() {
        let (n, dim, bits) = (2001, 40, 40);
        let data = clustered(n, dim, 7, 0.8, 5);
        let h = LinearHasher::fit(Method::Median, &data, n, dim, bits, 0).unwrap();
        let codes = h.encode_batch(&data, n).unwrap();
        for j in 0..bits {
            let ones = codes.iter().filter(|&&w| w >> j & 1 == 1).count();
            let share = ones as f64 / n as f64;
            assert!((share - 0.5).abs() < 0.01, "bit {j}: {share}");
        }
    }

    #[test]
    fn padding_bits_stay_zero_and_single_matches_batch() {
        let (n, dim) = (300, 128);
        let data = clustered(n, dim, 4, 1.0, 2);
        for (m, bits) in [(Method::Lsh, 200), (Method::Itq, 100), (Method::Median, 40)] {
            let h = LinearHasher::fit(m, &data, n, dim, bits, 3).unwrap();
            let words = h.words();
            assert_eq!(words, bits.div_ceil(64));
            let batch = h.encode_batch(&data, n).unwrap();
            let mut one = vec![0u64; words];
            for (i, row) in data.chunks_exact(dim).enumerate() {
                h.encode(row, &mut one).unwrap();
                assert_eq!(one, batch[i * words..][..words]);
                let last = one[words - 1];
                assert_eq!(last >> (bits % 64) << (bits % 64), 0, "padding of {m}");
            }
            assert!(batch.iter().any(|&w| w != 0));
        }
    }

    #[test]
    fn serialisation_round_trips_and_rejects_damage() {
        let (n, dim) = (400, 32);
        let data = clustered(n, dim, 4, 1.0, 4);
        for m in Method::ALL {
            let h = LinearHasher::fit(m, &data, n, dim, 24, 8).unwrap();
            let bytes = h.to_bytes();
            let back = LinearHasher::from_bytes(&bytes).unwrap();
            assert_eq!(back, h);
            assert_eq!(back.encode_batch(&data, n), h.encode_batch(&data, n));

            for len in [0, 7, 12, 20, bytes.len() / 2, bytes.len() - 1] {
                assert!(
                    LinearHasher::from_bytes(&bytes[..len]).is_err(),
                    "len {len}"
                );
            }
            for pos in [0, 9, 17, bytes.len() / 2, bytes.len() - 12, bytes.len() - 1] {
                let mut bad = bytes.clone();
                bad[pos] ^= 0x20;
                assert!(LinearHasher::from_bytes(&bad).is_err(), "flip at {pos}");
            }
        }
    }

    /// Builds hasher bytes from parts with a correct checksum, to reach the checks behind it.
    fn sealed(version: u32, header: &str, floats: &[f32]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&version.to_le_bytes());
        b.extend_from_slice(&(header.len() as u32).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        for x in floats {
            b.extend_from_slice(&x.to_le_bytes());
        }
        let sum = fnv1a(&b);
        b.extend_from_slice(&sum.to_le_bytes());
        b
    }

    #[test]
    fn loading_validates_behind_the_checksum() {
        let header = r#"{"method":"lsh","dim":2,"bits":1}"#;
        let ok = [0.0, 0.0, 1.0, -1.0, 0.5];
        let h = LinearHasher::from_bytes(&sealed(1, header, &ok)).unwrap();
        assert_eq!((h.method, h.dim, h.bits), (Method::Lsh, 2, 1));
        assert_eq!(
            LinearHasher::from_bytes(&sealed(2, header, &ok)),
            Err(BinarizeError::UnsupportedVersion(2))
        );
        let nan = [0.0, f32::NAN, 1.0, -1.0, 0.5];
        assert!(LinearHasher::from_bytes(&sealed(1, header, &nan)).is_err());
        assert!(LinearHasher::from_bytes(&sealed(1, header, &ok[..4])).is_err());
        let pca_too_wide = r#"{"method":"itq","dim":2,"bits":3}"#;
        assert!(LinearHasher::from_bytes(&sealed(1, pca_too_wide, &[0.0; 11])).is_err());
        let huge = r#"{"method":"lsh","dim":1000000000,"bits":256}"#;
        assert!(LinearHasher::from_bytes(&sealed(1, huge, &ok)).is_err());
        let extra = r#"{"method":"lsh","dim":2,"bits":1,"x":0}"#;
        assert!(LinearHasher::from_bytes(&sealed(1, extra, &ok)).is_err());
        assert!(LinearHasher::from_bytes(&sealed(1, "{", &ok)).is_err());
    }

    #[test]
    fn bad_shapes_are_errors() {
        let data = vec![0.5f32; 40];
        let fit = |m, n, dim, bits| LinearHasher::fit(m, &data, n, dim, bits, 0);
        assert!(matches!(
            fit(Method::Lsh, 5, 7, 8),
            Err(BinarizeError::DataShape { .. })
        ));
        assert_eq!(
            fit(Method::Lsh, 1, 40, 8),
            Err(BinarizeError::TooFewRows(1))
        );
        assert_eq!(fit(Method::Lsh, 4, 10, 0), Err(BinarizeError::Bits(0)));
        assert_eq!(fit(Method::Lsh, 4, 10, 257), Err(BinarizeError::Bits(257)));
        assert_eq!(fit(Method::Lsh, 40, 0, 8), Err(BinarizeError::Dimension(0)));
        assert!(matches!(
            fit(Method::Itq, 4, 10, 11),
            Err(BinarizeError::BitsExceedDim { .. })
        ));
        assert!(fit(Method::Lsh, 4, 10, 11).is_ok());
        assert!(matches!(
            LinearHasher::fit(Method::Lsh, &[1.0, f32::NAN, 0.0, 0.0], 2, 2, 1, 0),
            Err(BinarizeError::NonFiniteData(0))
        ));

        let (n, dim) = (50, 8);
        let data = clustered(n, dim, 2, 1.0, 1);
        let mut h = LinearHasher::fit(Method::Median, &data, n, dim, 8, 0).unwrap();
        let mut out = [0u64; 1];
        assert!(h.encode(&data[..dim], &mut out).is_ok());
        assert!(matches!(
            h.encode(&data[..dim - 1], &mut out),
            Err(BinarizeError::VectorLength { .. })
        ));
        assert!(matches!(
            h.encode(&data[..dim], &mut [0u64; 2]),
            Err(BinarizeError::CodeLength { .. })
        ));
        assert!(matches!(
            h.encode_batch(&data, n + 1),
            Err(BinarizeError::DataShape { .. })
        ));
        // Edited public fields are reported, not trusted.
        h.dim = 9;
        assert!(matches!(
            h.encode(&[0.0; 9], &mut out),
            Err(BinarizeError::Inconsistent(_))
        ));
    }

    #[test]
    fn constant_data_still_fits() {
        // Zero variance: eigenvectors are arbitrary but the fit must not fail or produce NaN.
        let (n, dim) = (20, 6);
        let data = vec![1.0f32; n * dim];
        for m in Method::ALL {
            let h = LinearHasher::fit(m, &data, n, dim, 4, 0).unwrap();
            assert!(h.projection().iter().all(|x| x.is_finite()));
            assert!(h.encode_batch(&data, n).is_ok());
        }
    }
}
