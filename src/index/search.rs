//! Query answering: Hamming-distance filter over all codes, then cosine rerank.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::Serialize;

use super::IndexError;
use super::coder::Coder;
use super::hamming;
use super::store::{IndexMeta, Store};

/// One search result: a passage, where it is, and how well it matched.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Hit {
    /// Passage id in the index.
    pub id: u64,
    /// Absolute path of the file.
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

impl Default for SearchParams {
    fn default() -> Self {
        Self {
            k: 10,
            candidates: None,
            per_file: false,
        }
    }
}

/// Candidates for the rerank: enough that the filter loses (almost) nothing of the exact
/// cosine top 10 — measured with `dochash bench recall`, see docs/BENCHMARKS.md — while the
/// rerank stays a small fraction of a millisecond.
pub fn default_candidates(n: usize, k: usize) -> usize {
    (n / 50).clamp(1000, 20_000).max(k * 20)
}

/// The codes of an index, in memory, ready for queries.
pub struct Searcher {
    ids: Vec<u64>,
    codes: Vec<u64>,
    words: usize,
    /// Passages without a current code; scored exactly on every query.
    stale: Vec<u64>,
    coder: Option<Coder>,
}

impl Searcher {
    pub fn load(store: &Store, meta: &IndexMeta, coder: Option<Coder>) -> Result<Self, IndexError> {
        let (generation, words) = match (&meta.code, &coder) {
            (Some(m), Some(c)) => (m.generation, c.words()),
            _ => (u32::MAX, 1),
        };
        // Without a coder no stored code can carry generation u32::MAX: all passages are stale
        // and scored exactly.
        let set = store.codes(generation, words)?;
        Ok(Self {
            ids: set.ids,
            codes: set.codes,
            words,
            stale: set.stale,
            coder,
        })
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

    /// Answers a query given its unit-length embedding.
    pub fn search(
        &self,
        store: &Store,
        query: &[f32],
        params: &SearchParams,
    ) -> Result<Vec<Hit>, IndexError> {
        if params.k == 0 || self.is_empty() {
            return Ok(Vec::new());
        }
        let c = params
            .candidates
            .unwrap_or_else(|| default_candidates(self.len(), params.k));
        let mut cands: Vec<(u64, Option<u32>)> = Vec::new();
        if let Some(coder) = &self.coder
            && !self.ids.is_empty()
        {
            let q = coder.encode(query, 1)?;
            let top = hamming::top_candidates(&q, &self.codes, self.words, c)
                .map_err(|e| IndexError::Coder(super::CoderError::Fit(e.to_string())))?;
            cands.extend(
                top.iter()
                    .map(|t| (self.ids[t.index as usize], Some(t.distance))),
            );
        }
        cands.extend(self.stale.iter().map(|&id| (id, None)));

        let mut scored: Vec<(f32, u64, Option<u32>)> = Vec::with_capacity(cands.len());
        for (id, distance) in cands {
            // A passage removed since the codes were loaded simply drops out.
            if let Some(v) = store.vector(id)? {
                scored.push((cosine(query, &v), id, distance));
            }
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));

        let mut hits = Vec::with_capacity(params.k);
        let mut files: HashSet<std::path::PathBuf> = HashSet::new();
        for (score, id, distance) in scored {
            let Some(p) = store.passage(id)? else {
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
