//! The papers' retrieval and similarity metrics.
//!
//! Ties are broken by the smaller database index everywhere, so a metric is a pure function of
//! its inputs: at equal Hamming distance (common with short codes) the earlier document wins.

use rayon::prelude::*;

use crate::index::{hamming, weighted};

/// Mean over queries of the fraction of the top `k` database items (by Hamming distance, ties
/// by index) that share the query's label.
pub fn precision_at_k_hamming(
    db: &[u64],
    db_labels: &[u32],
    queries: &[u64],
    query_labels: &[u32],
    words: usize,
    k: usize,
) -> Result<f64, hamming::HammingError> {
    let per: Result<Vec<f64>, _> = queries
        .par_chunks(words)
        .zip(query_labels.par_iter())
        .map(|(q, &label)| {
            let top = hamming::top_candidates(q, db, words, k)?;
            let hits = top
                .iter()
                .filter(|c| db_labels[c.index as usize] == label)
                .count();
            Ok(hits as f64 / k.min(db_labels.len()).max(1) as f64)
        })
        .collect();
    let per = per?;
    Ok(per.iter().sum::<f64>() / per.len().max(1) as f64)
}

/// The `k` rows of `db` (unit length, `dim` wide) nearest to `q` by cosine, best first, ties
/// to the smaller index; `skip` leaves one row out (a query that is itself in `db`). The exact
/// reference every metric here (and `dochash bench recall`) compares against.
pub fn cosine_top_k(
    q: &[f32],
    db: &[f32],
    dim: usize,
    k: usize,
    skip: Option<usize>,
) -> Vec<usize> {
    let scored: Vec<(f32, usize)> = db
        .chunks_exact(dim.max(1))
        .enumerate()
        .filter(|&(i, _)| Some(i) != skip)
        .map(|(i, v)| (q.iter().zip(v).map(|(a, b)| a * b).sum::<f32>(), i))
        .collect();
    top_k(scored, k)
}

/// The indices of the `k` best (score, index) pairs, best first, ties to the smaller index.
fn top_k(mut scored: Vec<(f32, usize)>, k: usize) -> Vec<usize> {
    let order = |a: &(f32, usize), b: &(f32, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    let k = k.min(scored.len());
    if k > 0 && k < scored.len() {
        scored.select_nth_unstable_by(k - 1, order);
    }
    scored.truncate(k);
    scored.sort_by(order);
    // Collected by reference into a new list: `into_iter().collect()` would reuse the n-entry
    // buffer in place, and every kept list would hold it.
    scored.iter().map(|&(_, i)| i).collect()
}

/// The same metric with exact cosine similarity over unit-length rows (the float reference).
pub fn precision_at_k_cosine(
    db: &[f32],
    db_labels: &[u32],
    queries: &[f32],
    query_labels: &[u32],
    dim: usize,
    k: usize,
) -> f64 {
    let per: Vec<f64> = queries
        .par_chunks(dim)
        .zip(query_labels.par_iter())
        .map(|(q, &label)| {
            let top = cosine_top_k(q, db, dim, k, None);
            let hits = top.iter().filter(|&&i| db_labels[i] == label).count();
            hits as f64 / top.len().max(1) as f64
        })
        .collect();
    per.iter().sum::<f64>() / per.len().max(1) as f64
}

/// Spearman's rank correlation (average ranks for ties); `NaN` when either side is constant.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len()) as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    sxy / (sxx * syy).sqrt()
}

/// Integer ids for string labels, in order of first appearance.
pub fn label_ids<'a>(
    labels: impl IntoIterator<Item = &'a str>,
    table: &mut Vec<String>,
) -> Vec<u32> {
    labels
        .into_iter()
        .map(|l| match table.iter().position(|t| t == l) {
            Some(i) => i as u32,
            None => {
                table.push(l.to_string());
                (table.len() - 1) as u32
            }
        })
        .collect()
}

/// How well codes keep the float neighbourhoods, with no labels: for each query row, the
/// fraction of its `k` nearest other rows by cosine (unit-length `vectors`) found among its `c`
/// nearest other rows by the filter the product would use: the weighted one when `margins`
/// gives each query's margins (in `queries` order, see [`crate::index::weighted`]), plain
/// Hamming distance otherwise. The adoption check for a learned hashing head.
#[allow(clippy::too_many_arguments)]
pub fn neighbour_recall(
    codes: &[u64],
    words: usize,
    vectors: &[f32],
    dim: usize,
    queries: &[usize],
    margins: Option<&[Vec<f32>]>,
    k: usize,
    c: usize,
) -> Result<f64, hamming::HammingError> {
    if margins.is_some_and(|m| m.len() != queries.len()) {
        return Err(hamming::HammingError::QueryLength {
            expected: queries.len(),
            got: margins.map_or(0, |m| m.len()),
        });
    }
    let per: Result<Vec<f64>, _> = queries
        .par_iter()
        .enumerate()
        .map(|(qi, &q)| {
            let qv = &vectors[q * dim..(q + 1) * dim];
            let exact = cosine_top_k(qv, vectors, dim, k, Some(q));
            if exact.is_empty() {
                return Ok(1.0);
            }
            // One more candidate than wanted: the query finds itself at distance 0.
            let top = match margins {
                Some(m) => weighted::top_candidates(
                    &weighted::WeightedQuery::new(&m[qi], words)?,
                    codes,
                    words,
                    c + 1,
                )?,
                None => hamming::top_candidates(
                    &codes[q * words..(q + 1) * words],
                    codes,
                    words,
                    c + 1,
                )?,
            };
            let found: std::collections::HashSet<usize> = top
                .iter()
                .map(|t| t.index as usize)
                .filter(|&j| j != q)
                .take(c)
                .collect();
            let hits = exact.iter().filter(|j| found.contains(j)).count();
            Ok(hits as f64 / exact.len() as f64)
        })
        .collect();
    let per = per?;
    Ok(per.iter().sum::<f64>() / per.len().max(1) as f64)
}

/// The reciprocal rank of the first of `relevant` among the top 10 of `scores` (higher is
/// better, ties by the smaller index); 0 if none is there.
pub fn reciprocal_rank_at_10(scores: &[f32], relevant: &[usize]) -> f64 {
    rank_reciprocal(
        &top_k(scores.iter().copied().zip(0..).collect(), 10),
        relevant,
    )
}

fn rank_reciprocal(top: &[usize], relevant: &[usize]) -> f64 {
    top.iter()
        .position(|i| relevant.contains(i))
        .map_or(0.0, |r| 1.0 / (r + 1) as f64)
}

/// Where the product's first stage puts each of `wanted` (0-based ranks) among all `codes`
/// for one query: the weighted filter when `margins` gives the query's margins, Hamming
/// distance from `query_code` otherwise. `skip` leaves one row out (a query that is itself
/// among the codes), as if it were not there.
pub fn filter_ranks(
    codes: &[u64],
    words: usize,
    query_code: &[u64],
    margins: Option<&[f32]>,
    wanted: &[usize],
    skip: Option<usize>,
) -> Result<Vec<usize>, hamming::HammingError> {
    let n = codes.len() / words.max(1);
    let order = match margins {
        Some(m) => {
            weighted::top_candidates(&weighted::WeightedQuery::new(m, words)?, codes, words, n)?
        }
        None => hamming::top_candidates(query_code, codes, words, n)?,
    };
    let mut rank = vec![0usize; n];
    let mut r = 0;
    for c in &order {
        if Some(c.index as usize) == skip {
            continue;
        }
        rank[c.index as usize] = r;
        r += 1;
    }
    Ok(wanted.iter().map(|&i| rank[i]).collect())
}

/// The fewest candidates (a prefix of every query's filter ranking) that hold `target` of all
/// (query, true neighbour) pairs, from the pairs' 0-based `ranks`: the number the filter's
/// candidate count must reach for recall at `target`. 0 for no pairs.
pub fn candidates_for_target(ranks: &mut [usize], target: f64) -> usize {
    if ranks.is_empty() {
        return 0;
    }
    ranks.sort_unstable();
    let need = ((target * ranks.len() as f64).ceil() as usize).clamp(1, ranks.len());
    ranks[need - 1] + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_top_k_list_holds_k_indices_not_the_whole_scoring() {
        // Callers keep one list per passage (the ranking head's teacher: 20,000 of them); a
        // list that kept the n-entry scoring buffer behind it cost n² × 16 bytes (7.6 GB).
        let (n, dim) = (5000, 4);
        let db: Vec<f32> = (0..n * dim)
            .map(|i| ((i * 7919) % 101) as f32 / 101.0)
            .collect();
        let top = cosine_top_k(&db[..dim], &db, dim, 10, Some(0));
        assert_eq!(top.len(), 10);
        assert!(top.capacity() <= 16, "capacity {}", top.capacity());
    }
}
