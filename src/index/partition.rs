//! A coarse partition of the unit vectors, so that the first stage of a large index reads the
//! codes of the part of the corpus near the query instead of every code.
//!
//! Why: at five million unit rows the weighted scan reads 80 MB of codes a query, at about
//! twice the cost of merely reading them, and on two cores that is over half of a query's time
//! (docs/BENCHMARKS.md, issue #38). Codes cannot be made shorter without losing neighbours, and
//! no bound on a passage's codes prunes enough (measured there). What can be skipped is most of
//! the corpus: spherical k-means over a sample of the vectors gives each row the list of its
//! nearest centroid, and a query scans only the lists whose centroids are nearest to it, until
//! a share of the rows is covered (an inverted file, as in Jégou et al. 2011 and FAISS's IVF).
//! The lists are scanned whole, so a query still reads long runs of codes in order.
//!
//! Deterministic for a given sample and seed: the fit starts from rows the seed picks, and
//! every step is a plain sum in row order.

use nalgebra::{DMatrix, DMatrixView};
use rayon::prelude::*;

use super::binarize::finite_f32s;
use super::cosine::cosine_f16;
use crate::rng::SplitMix64;

/// Format of [`Partition::to_bytes`].
const MAGIC: &[u8; 8] = b"DHPART\x00\x01";
/// Most lists a partition may have (a damaged blob must not turn into a huge allocation).
const MAX_LISTS: usize = 1 << 20;
/// Widest vector a blob may declare.
const MAX_DIM: usize = 1 << 16;
/// Rows scored against the centroids at once, one such block a thread.
const ASSIGN_CHUNK: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("cannot fit a partition: {0}")]
    Fit(String),
    #[error("the stored partition is damaged: {0}")]
    Decode(String),
}

/// Two levels of unit-length centroids: `coarse` ones, and under each of them `per` fine ones.
/// A row belongs to the fine list nearest to it under its two nearest coarse centroids (list
/// `coarse × per + fine`): so placing a row costs `coarse + 2 × per` inner products, not one
/// per list, which at five million rows is the difference between a minute and an hour. A
/// query ranks every fine centroid directly. (On 84,000 real sentences, 32 × 32 lists found
/// what one level of 1,024 lists found to within half a point of recall at each share of the
/// rows scanned; docs/BENCHMARKS.md.)
#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    dim: usize,
    per: usize,
    /// `coarse × dim`, row-major.
    coarse: Vec<f32>,
    /// `coarse × per × dim`, row-major: coarse centroid `c`'s fine ones are rows
    /// `c × per .. (c + 1) × per`.
    fine: Vec<f32>,
    /// The coarse centroids as a `coarse × dim` matrix, and each one's fine centroids as a
    /// `per × dim` one: the left side of the products that place rows. (nalgebra multiplies a
    /// transposed view by inner products, seven times slower here than its matrix product.)
    coarse_rows: DMatrix<f32>,
    fine_rows: Vec<DMatrix<f32>>,
    /// `fine` in half precision, which a query ranks: at 4,900 lists the f32 centroids are
    /// 7.5 MB read from memory every query, a sixteenth of its time (perf, 1 M × 5), and
    /// half the bytes through the rerank's own f16 kernel rank the same lists.
    fine_half: Vec<half::f16>,
}

impl Partition {
    /// Spherical k-means over the `sample` (row-major, `dim` wide): `coarse` lists, then `per`
    /// lists within each over the sample rows it holds, `rounds` rounds each. A coarse list
    /// with fewer sample rows than `per` repeats its centroids (the copies stay empty).
    pub fn fit(
        sample: &[f32],
        dim: usize,
        coarse: usize,
        per: usize,
        rounds: usize,
        seed: u64,
    ) -> Result<Self, PartitionError> {
        if dim == 0 || dim > MAX_DIM || !sample.len().is_multiple_of(dim) {
            return Err(PartitionError::Fit(format!(
                "{} values are not rows of {dim}",
                sample.len()
            )));
        }
        let n = sample.len() / dim;
        if coarse == 0 || per == 0 || coarse.saturating_mul(per) > MAX_LISTS || n < coarse {
            return Err(PartitionError::Fit(format!(
                "{coarse} × {per} lists from {n} vectors"
            )));
        }
        let mut rng = SplitMix64::new(seed);
        let top = kmeans(sample, dim, coarse, rounds, &mut rng);
        let of = nearest(&top, dim, sample);
        let mut fine = Vec::with_capacity(coarse * per * dim);
        let mut members = Vec::new();
        for c in 0..coarse {
            members.clear();
            for (r, _) in of.iter().enumerate().filter(|&(_, &l)| l as usize == c) {
                members.extend_from_slice(&sample[r * dim..(r + 1) * dim]);
            }
            let here = (members.len() / dim).min(per);
            let mut lists = if here == 0 {
                top[c * dim..(c + 1) * dim].to_vec()
            } else {
                kmeans(&members, dim, here, rounds, &mut rng)
            };
            let made = lists.len() / dim;
            for i in made..per {
                let again = lists[(i % made) * dim..(i % made + 1) * dim].to_vec();
                lists.extend(again);
            }
            fine.extend(lists);
        }
        Ok(Self::new(dim, per, top, fine))
    }

    fn new(dim: usize, per: usize, coarse: Vec<f32>, fine: Vec<f32>) -> Self {
        let coarse_rows = rows_matrix(&coarse, dim);
        let fine_rows = fine
            .chunks_exact(per * dim)
            .map(|f| rows_matrix(f, dim))
            .collect();
        let fine_half = fine.iter().map(|&x| half::f16::from_f32(x)).collect();
        Self {
            dim,
            per,
            coarse,
            fine,
            coarse_rows,
            fine_rows,
            fine_half,
        }
    }

    pub fn lists(&self) -> usize {
        self.fine.len() / self.dim.max(1)
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Each row's list (row-major `vectors`, `dim` wide; a short last row is ignored): the
    /// nearest fine centroid under the row's two nearest coarse ones. A row near the border of
    /// two coarse lists would otherwise land in a list whose fine centroids are far from it,
    /// where a query near the row ranks that list low.
    pub fn assign(&self, vectors: &[f32]) -> Vec<u32> {
        let (dim, per) = (self.dim, self.per);
        vectors
            .par_chunks(ASSIGN_CHUNK * dim)
            .flat_map_iter(|chunk| {
                let n = chunk.len() / dim;
                let chunk = &chunk[..n * dim];
                // The rows under each coarse centroid, scored against its fine ones in one
                // matrix product rather than an inner product at a time.
                let mut under: Vec<Vec<usize>> = vec![Vec::new(); self.coarse.len() / dim];
                for (j, [a, b]) in top_two(&self.coarse_rows, dim, chunk)
                    .into_iter()
                    .enumerate()
                {
                    under[a as usize].push(j);
                    if b != a {
                        under[b as usize].push(j);
                    }
                }
                let mut best = vec![(0u32, f32::NEG_INFINITY); n];
                let mut rows = Vec::new();
                for (c, js) in under.iter().enumerate().filter(|(_, js)| !js.is_empty()) {
                    rows.clear();
                    for &j in js {
                        rows.extend_from_slice(&chunk[j * dim..(j + 1) * dim]);
                    }
                    let v = DMatrixView::from_slice(&rows, dim, js.len());
                    let scores = &self.fine_rows[c] * v;
                    for (k, &j) in js.iter().enumerate() {
                        for (l, &s) in scores.column(k).iter().enumerate() {
                            let list = (c * per + l) as u32;
                            let b = &mut best[j];
                            if s > b.1 || (s == b.1 && list < b.0) {
                                *b = (list, s);
                            }
                        }
                    }
                }
                best.into_iter().map(|b| b.0)
            })
            .collect()
    }

    /// Every list, the one whose centroid is nearest to `query` first (ties: lower list
    /// first). A query of another width ranks the lists in their own order.
    pub fn ranked(&self, query: &[f32]) -> Vec<u32> {
        let mut scored: Vec<(f32, u32)> = if query.len() == self.dim {
            self.fine_half
                .chunks_exact(self.dim)
                .enumerate()
                .map(|(l, c)| (cosine_f16(query, c), l as u32))
                .collect()
        } else {
            (0..self.lists() as u32).map(|l| (0.0, l)).collect()
        };
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.into_iter().map(|(_, l)| l).collect()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + 4 * (self.coarse.len() + self.fine.len()));
        out.extend_from_slice(MAGIC);
        for x in [self.dim, self.coarse.len() / self.dim, self.per] {
            out.extend_from_slice(&(x as u32).to_le_bytes());
        }
        for x in self.coarse.iter().chain(&self.fine) {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PartitionError> {
        let bad = |m: &str| PartitionError::Decode(m.to_string());
        let head = bytes.get(..20).ok_or_else(|| bad("too short"))?;
        if &head[..8] != MAGIC {
            return Err(bad("not a partition of this version"));
        }
        let word = |at: usize| {
            u32::from_le_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]) as usize
        };
        let (dim, coarse, per) = (word(8), word(12), word(16));
        if dim == 0
            || dim > MAX_DIM
            || coarse == 0
            || per == 0
            || coarse.saturating_mul(per) > MAX_LISTS
        {
            return Err(bad("impossible shape"));
        }
        let body = &bytes[20..];
        if body.len() != dim * coarse * (1 + per) * 4 {
            return Err(bad("centroids of the wrong size"));
        }
        let values = finite_f32s(body).ok_or_else(|| bad("a centroid is not finite"))?;
        let fine = values[coarse * dim..].to_vec();
        let mut coarse_c = values;
        coarse_c.truncate(coarse * dim);
        Ok(Self::new(dim, per, coarse_c, fine))
    }
}

/// `lists` unit-length centroids of the `sample` rows by spherical k-means in `rounds` rounds,
/// starting from distinct rows the `rng` picks; a list left empty takes a row it picks.
fn kmeans(
    sample: &[f32],
    dim: usize,
    lists: usize,
    rounds: usize,
    rng: &mut SplitMix64,
) -> Vec<f32> {
    let n = sample.len() / dim;
    // The first centroids: `lists` distinct sample rows (a partial shuffle).
    let mut order: Vec<usize> = (0..n).collect();
    for i in 0..lists {
        let j = i + (rng.next_u64() % (n - i) as u64) as usize;
        order.swap(i, j);
    }
    let mut centroids = Vec::with_capacity(lists * dim);
    for &r in &order[..lists] {
        centroids.extend_from_slice(&sample[r * dim..(r + 1) * dim]);
    }
    normalise_rows(&mut centroids, dim);
    for _ in 0..rounds {
        let of = nearest(&centroids, dim, sample);
        let mut sums = vec![0f32; lists * dim];
        let mut counts = vec![0usize; lists];
        for (r, &l) in of.iter().enumerate() {
            let l = l as usize;
            counts[l] += 1;
            let row = &sample[r * dim..(r + 1) * dim];
            for (s, x) in sums[l * dim..(l + 1) * dim].iter_mut().zip(row) {
                *s += x;
            }
        }
        for (l, &count) in counts.iter().enumerate() {
            if count == 0 {
                let r = (rng.next_u64() % n as u64) as usize;
                sums[l * dim..(l + 1) * dim].copy_from_slice(&sample[r * dim..(r + 1) * dim]);
            }
        }
        normalise_rows(&mut sums, dim);
        centroids = sums;
    }
    centroids
}

/// For each row of `vectors`, the row of `centroids` with the largest inner product (the
/// first on ties), computed as a matrix product a block of rows at a time.
fn nearest(centroids: &[f32], dim: usize, vectors: &[f32]) -> Vec<u32> {
    nearest_two(centroids, dim, vectors)
        .into_iter()
        .map(|[a, _]| a)
        .collect()
}

/// For each row of `vectors`, the two rows of `centroids` with the largest inner products,
/// the larger first (ties: the first row; with one centroid, it twice).
fn nearest_two(centroids: &[f32], dim: usize, vectors: &[f32]) -> Vec<[u32; 2]> {
    let c = rows_matrix(centroids, dim);
    vectors
        .par_chunks(ASSIGN_CHUNK * dim)
        .flat_map_iter(|chunk| top_two(&c, dim, &chunk[..chunk.len() / dim * dim]))
        .collect()
}

/// [`nearest_two`] of one block of rows, as a matrix product with the centroids as the rows of
/// `c`.
fn top_two(c: &DMatrix<f32>, dim: usize, rows: &[f32]) -> Vec<[u32; 2]> {
    let n = rows.len() / dim;
    let v = DMatrixView::from_slice(rows, dim, n);
    // Column j: row j's inner product with every centroid.
    let scores = c * v;
    (0..n)
        .map(|j| {
            let mut first = (0usize, f32::NEG_INFINITY);
            let mut second = (0usize, f32::NEG_INFINITY);
            for (l, &s) in scores.column(j).iter().enumerate() {
                if s > first.1 {
                    second = first;
                    first = (l, s);
                } else if s > second.1 {
                    second = (l, s);
                }
            }
            if second.1 == f32::NEG_INFINITY {
                second = first;
            }
            [first.0 as u32, second.0 as u32]
        })
        .collect()
}

/// Row-major `dim`-wide rows as the rows of a matrix.
fn rows_matrix(data: &[f32], dim: usize) -> DMatrix<f32> {
    DMatrixView::from_slice(data, dim, data.len() / dim).transpose()
}

/// Scales each `dim`-wide row to unit length (a zero row stays zero).
fn normalise_rows(data: &mut [f32], dim: usize) {
    for row in data.chunks_exact_mut(dim) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|x| *x /= norm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` unit vectors around `centres` well-separated directions, and each one's centre.
    fn clustered(n: usize, dim: usize, centres: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
        let mut rng = SplitMix64::new(seed);
        let mut out = Vec::with_capacity(n * dim);
        let mut of = Vec::with_capacity(n);
        for i in 0..n {
            let c = i % centres;
            let mut v: Vec<f32> = (0..dim).map(|_| 0.05 * rng.gaussian() as f32).collect();
            v[c] += 1.0;
            normalise_rows(&mut v, dim);
            out.extend(v);
            of.push(c);
        }
        (out, of)
    }

    #[test]
    fn rows_of_one_cluster_share_a_list_and_the_query_ranks_it_first() {
        let (data, of) = clustered(2000, 16, 8, 3);
        let p = Partition::fit(&data, 16, 8, 1, 6, 7).unwrap();
        assert_eq!(p.lists(), 8);
        let lists = p.assign(&data);
        assert_eq!(lists.len(), 2000);
        for c in 0..8 {
            let mine: Vec<u32> = (0..2000)
                .filter(|&i| of[i] == c)
                .map(|i| lists[i])
                .collect();
            assert!(mine.iter().all(|&l| l == mine[0]), "centre {c} split");
            let mut q = vec![0f32; 16];
            q[c] = 1.0;
            assert_eq!(p.ranked(&q)[0], mine[0]);
        }
        // Every list is used: eight centres, eight lists.
        let mut used: Vec<u32> = lists.clone();
        used.sort_unstable();
        used.dedup();
        assert_eq!(used.len(), 8);
    }

    #[test]
    fn the_fit_is_deterministic_and_survives_a_round_trip() {
        let (data, _) = clustered(3000, 24, 20, 5);
        let a = Partition::fit(&data, 24, 4, 8, 4, 9).unwrap();
        let b = Partition::fit(&data, 24, 4, 8, 4, 9).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.assign(&data), b.assign(&data));
        let back = Partition::from_bytes(&a.to_bytes()).unwrap();
        assert_eq!(back, a);
        let ranked = a.ranked(&data[..24]);
        let mut sorted = ranked.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..32).collect::<Vec<u32>>());
    }

    #[test]
    fn bad_shapes_and_damaged_blobs_are_errors() {
        assert!(Partition::fit(&[0.0; 10], 3, 2, 1, 1, 0).is_err());
        assert!(Partition::fit(&[0.0; 6], 3, 3, 1, 1, 0).is_err());
        assert!(Partition::fit(&[0.0; 6], 3, 0, 1, 1, 0).is_err());
        assert!(Partition::fit(&[0.0; 6], 3, 1, 0, 1, 0).is_err());
        let (data, _) = clustered(100, 4, 4, 1);
        let bytes = Partition::fit(&data, 4, 2, 2, 2, 1).unwrap().to_bytes();
        assert!(Partition::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(Partition::from_bytes(&bytes[..10]).is_err());
        let mut wrong = bytes.clone();
        wrong[0] ^= 1;
        assert!(Partition::from_bytes(&wrong).is_err());
        let mut huge = bytes.clone();
        huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Partition::from_bytes(&huge).is_err());
        let mut nan = bytes;
        nan[20..24].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(Partition::from_bytes(&nan).is_err());
    }
}
