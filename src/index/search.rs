//! Query answering: Hamming-distance filter over all codes, then cosine rerank.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::Serialize;

use super::IndexError;
use super::coder::Coder;
use super::hamming;
use super::store::{Db, IndexMeta, RowTable, Vectors};

/// One search result: a passage, where it is, and how well it matched.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Hit {
    /// Passage id in the index.
    pub id: u64,
    /// Absolute path of the file: `path` in JSON (lossy for a name that is not UTF-8, whose
    /// exact bytes are then in `path_bytes`).
    #[serde(flatten, with = "crate::pathwire::field")]
    pub path: PathBuf,
    /// First line of the passage, 1-based.
    pub line: u32,
    /// Last line of the passage, 1-based, inclusive.
    pub end_line: u32,
    /// Heading trail, outermost first.
    pub headings: Vec<String>,
    /// The passage text as it appears in the file.
    pub text: String,
    /// Cosine similarity of query and passage, in -1..=1.
    pub score: f32,
    /// Hamming distance between the query's and the passage's codes (`None` when the passage
    /// was scored exactly because its code was stale).
    pub distance: Option<u32>,
}

/// How a query is answered.
#[derive(Debug, Clone, Copy)]
pub struct SearchParams {
    /// Results wanted.
    pub k: usize,
    /// Candidates kept by the Hamming filter for the cosine rerank. `None` picks
    /// [`default_candidates`] for the index size.
    pub candidates: Option<usize>,
    /// Keep only the best passage of each file.
    pub per_file: bool,
}

/// Most results a query returns: more is not a search any more, and every hit travels as text.
pub const MAX_K: usize = 10_000;

/// Longest query text searched. A sentence-sized question is a few hundred bytes; the encoder
/// reads at most its window of tokens anyway, and a pasted document is not a query.
pub const MAX_QUERY_BYTES: usize = 8 * 1024;

impl SearchParams {
    /// The parameters with `k` capped at [`MAX_K`] (callers pass what users typed; a huge `k`
    /// must not turn into a huge allocation).
    pub fn normalized(&self) -> Self {
        Self {
            k: self.k.min(MAX_K),
            ..*self
        }
    }
}

/// Checks a query's text before it is encoded.
pub fn check_query(text: &str) -> Result<(), IndexError> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(IndexError::Query(format!(
            "the query is {} KiB; at most {} KiB can be searched",
            text.len().div_ceil(1024),
            MAX_QUERY_BYTES / 1024
        )));
    }
    Ok(())
}

impl Default for SearchParams {
    fn default() -> Self {
        Self {
            k: 10,
            candidates: None,
            per_file: false,
        }
    }
}

/// Candidates for the rerank: enough that the Hamming filter loses (almost) nothing of the exact
/// cosine top k. Shorter codes separate neighbours less well and need a larger share of the
/// corpus: on 20 Newsgroups (11,293 passages, all-MiniLM-L6-v2, ITQ) recall@10 reaches 0.99 at
/// about 1/2 of the corpus for 16 bits, 1/3 for 32, 1/5 for 64 and 1/8 for 128 (docs/BENCHMARKS.md,
/// `dochash bench recall`). The cap keeps the rerank of a very large index within a few
/// milliseconds; small indexes are simply scored in full.
pub fn default_candidates(n: usize, k: usize, bits: usize) -> usize {
    let share = match bits {
        0..=16 => 2,
        17..=32 => 3,
        33..=64 => 5,
        _ => 8,
    };
    n.div_ceil(share)
        .clamp(1000, MAX_DEFAULT_CANDIDATES)
        .max(k * 20)
}

/// Upper bound of [`default_candidates`].
pub const MAX_DEFAULT_CANDIDATES: usize = 10_000;

/// An index ready for queries: the current codes in memory (for the Hamming filter), the
/// vectors mapped (for the rerank), and the database handle (for the hits' passages). Built from
/// the writer's in-memory row table, so making a new one reads nothing from disk.
pub struct Searcher {
    /// Per coded passage: its id, its row in the vectors, its code.
    ids: Vec<u64>,
    rows: Vec<u32>,
    codes: Vec<u64>,
    words: usize,
    /// Passages without a current code (id, row); scored exactly on every query.
    stale: Vec<(u64, u32)>,
    coder: Option<Coder>,
    vectors: Vectors,
    db: Db,
}

impl Searcher {
    pub fn new(
        table: &RowTable,
        vectors: Vectors,
        db: Db,
        meta: &IndexMeta,
        coder: Option<Coder>,
    ) -> Self {
        // Without a coder no code is current: every passage is scored exactly.
        let generation = match (&meta.code, &coder) {
            (Some(m), Some(c)) if c.words() == table.words => Some(m.generation),
            _ => None,
        };
        let words = table.words;
        let mut out = Self {
            ids: Vec::with_capacity(table.live()),
            rows: Vec::with_capacity(table.live()),
            codes: Vec::with_capacity(table.live() * words),
            words,
            stale: Vec::new(),
            coder,
            vectors,
            db,
        };
        let visible = out.vectors.rows().min(table.rows());
        for r in 0..visible {
            if table.dead[r] {
                continue;
            }
            let id = table.ids[r];
            if generation.is_some_and(|g| table.gens[r] == g) {
                out.ids.push(id);
                out.rows.push(r as u32);
                out.codes.extend_from_slice(table.code(r));
            } else {
                out.stale.push((id, r as u32));
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.ids.len() + self.stale.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Passages that are scored exactly because they have no current code.
    pub fn stale(&self) -> usize {
        self.stale.len()
    }

    /// The database the hits' passages are read from.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Encodes `text` with the index's encoder (vector and, through the same pass, the code
    /// of whatever source made the stored codes) and answers it.
    pub fn query(
        &self,
        encoder: &crate::encoder::Encoder,
        text: &str,
        params: &SearchParams,
    ) -> Result<Vec<Hit>, IndexError> {
        check_query(text)?;
        let (emb, code) = super::coder::embed_and_code(
            encoder,
            self.coder.as_ref(),
            &[text],
            crate::encoder::BatchLimits::default(),
        )?;
        self.search_coded(emb.row(0), code.as_deref(), params)
    }

    /// Answers a query given its unit-length embedding. A source that codes token states
    /// cannot code a bare vector: then every passage is scored exactly (use
    /// [`query`](Self::query) to get the filter).
    pub fn search(&self, query: &[f32], params: &SearchParams) -> Result<Vec<Hit>, IndexError> {
        let code = match &self.coder {
            Some(c) => c.encode_vectors(query, 1)?,
            None => None,
        };
        self.search_coded(query, code.as_deref(), params)
    }

    /// Answers a query given its embedding and its code under the loaded generation.
    pub fn search_coded(
        &self,
        query: &[f32],
        code: Option<&[u64]>,
        params: &SearchParams,
    ) -> Result<Vec<Hit>, IndexError> {
        let params = &params.normalized();
        if params.k == 0 || self.is_empty() {
            return Ok(Vec::new());
        }
        let bits = self.coder.as_ref().map(|c| c.bits()).unwrap_or(64);
        // More candidates than codes is every code.
        let c = params
            .candidates
            .unwrap_or_else(|| default_candidates(self.len(), params.k, bits))
            .min(self.ids.len())
            .max(1);
        let mut cands: Vec<(u64, u32, Option<u32>)> = Vec::new();
        match code {
            Some(q) if !self.ids.is_empty() && q.len() == self.words => {
                let top = hamming::top_candidates(q, &self.codes, self.words, c)
                    .map_err(|e| IndexError::Coder(super::CoderError::Fit(e.to_string())))?;
                cands.extend(top.iter().map(|t| {
                    let i = t.index as usize;
                    (self.ids[i], self.rows[i], Some(t.distance))
                }));
            }
            _ => cands.extend(
                self.ids
                    .iter()
                    .zip(&self.rows)
                    .map(|(&id, &r)| (id, r, None)),
            ),
        }
        cands.extend(self.stale.iter().map(|&(id, r)| (id, r, None)));

        let mut scored: Vec<(f32, u64, Option<u32>)> = Vec::with_capacity(cands.len());
        for (id, row, distance) in cands {
            if let Some(v) = self.vectors.row(row as usize) {
                scored.push((cosine_f16(query, v), id, distance));
            }
        }
        let by_score = |a: &(f32, u64, Option<u32>), b: &(f32, u64, Option<u32>)| {
            b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
        };
        // Only the best ones are looked at (per-file filtering may skip some): partition out
        // a generous head instead of sorting every candidate.
        let head = if params.per_file {
            scored.len()
        } else {
            params.k.min(scored.len())
        };
        if head > 0 && head < scored.len() {
            scored.select_nth_unstable_by(head - 1, by_score);
            scored.truncate(head);
        }
        scored.sort_by(by_score);

        let mut hits = Vec::with_capacity(params.k.min(scored.len()));
        let mut files: HashSet<std::path::PathBuf> = HashSet::new();
        for (score, id, distance) in scored {
            // A passage removed since this searcher was made simply drops out.
            let Some(p) = self.db.passage(id)? else {
                continue;
            };
            if params.per_file && !files.insert(p.path.clone()) {
                continue;
            }
            hits.push(Hit {
                id,
                path: p.path,
                line: p.start_line,
                end_line: p.end_line,
                headings: p.headings,
                text: p.text,
                score,
                distance,
            });
            if hits.len() == params.k {
                break;
            }
        }
        Ok(hits)
    }
}

/// Cosine of a unit query and a stored f16 vector (f16 rounding leaves it slightly off unit
/// length, so it is renormalised), converting in blocks with the CPU's F16C instructions where
/// available: the rerank of a large index touches millions of elements per query.
pub fn cosine_f16(q: &[f32], v: &[half::f16]) -> f32 {
    use half::slice::HalfFloatSliceExt;
    const BLOCK: usize = 64;
    let mut buf = [0f32; BLOCK];
    let (mut dot, mut nv) = (0f32, 0f32);
    for (qs, vs) in q.chunks(BLOCK).zip(v.chunks(BLOCK)) {
        let b = &mut buf[..vs.len()];
        vs.convert_to_f32_slice(b);
        for (a, x) in qs.iter().zip(b.iter()) {
            dot += a * x;
            nv += x * x;
        }
    }
    if nv > 0.0 { dot / nv.sqrt() } else { 0.0 }
}

/// Cosine of a unit query and a stored vector (f16 rounding leaves it slightly off unit
/// length, so it is renormalised).
pub fn cosine(q: &[f32], v: &[f32]) -> f32 {
    let mut dot = 0f32;
    let mut nv = 0f32;
    for (a, b) in q.iter().zip(v) {
        dot += a * b;
        nv += b * b;
    }
    if nv > 0.0 { dot / nv.sqrt() } else { 0.0 }
}

/// Dot product of an f32 query with an f16 vector, converting in blocks with the CPU's F16C
/// instructions where available (one element at a time is ~10x slower, and the rerank of a
/// large index touches millions of elements per query).
pub fn dot_f16(q: &[f32], v: &[half::f16]) -> f32 {
    use half::slice::HalfFloatSliceExt;
    const BLOCK: usize = 64;
    let mut buf = [0f32; BLOCK];
    let mut acc = 0f32;
    for (qs, vs) in q.chunks(BLOCK).zip(v.chunks(BLOCK)) {
        let b = &mut buf[..vs.len()];
        vs.convert_to_f32_slice(b);
        acc += qs.iter().zip(b.iter()).map(|(a, b)| a * b).sum::<f32>();
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_f16_matches_the_scalar_dot() {
        let q: Vec<f32> = (0..385)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let v: Vec<half::f16> = (0..385)
            .map(|i| half::f16::from_f32(((i * 53 % 97) as f32 - 48.0) / 48.0))
            .collect();
        let want: f32 = q.iter().zip(&v).map(|(a, b)| a * b.to_f32()).sum();
        assert!((dot_f16(&q, &v) - want).abs() < 1e-3);
    }

    #[test]
    fn default_candidates_grow_for_short_codes_and_are_capped() {
        assert_eq!(default_candidates(500, 10, 64), 1000);
        assert!(default_candidates(11_293, 10, 16) > default_candidates(11_293, 10, 64));
        assert!(default_candidates(11_293, 10, 64) > default_candidates(11_293, 10, 128));
        assert_eq!(
            default_candidates(10_000_000, 10, 64),
            MAX_DEFAULT_CANDIDATES
        );
        assert_eq!(default_candidates(100, 100, 64), 2000);
    }
}
