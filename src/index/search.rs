//! Query answering: a semantic list (a filter over every code, then cosine rerank) and a
//! lexical list (BM25 over the words), fused.
//!
//! Either list alone misses notes the other finds: dense vectors lose on names, identifiers and
//! rare words; BM25 loses on paraphrase. The lists are fused as standard scores (each list's
//! scores minus their mean, over their spread), which lets a list with one clear winner outweigh
//! a flat one; reciprocal-rank fusion and a min-max convex combination were measured against it
//! (docs/BENCHMARKS.md). Passages the lexical side found
//! but the code filter did not pass are scored exactly, so fusion never loses a good lexical
//! hit to the filter.
//!
//! A `"quoted phrase"` must appear in a hit literally (case-insensitively); the whole query,
//! phrases included, ranks the results both ways.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::IndexError;
use super::coder::Coder;
use super::hamming;
use super::lexical::LexicalSearcher;
use super::store::{Db, IndexMeta, RowTable, Vectors};
use super::weighted::{self, WeightedQuery};

/// One search result: a passage, where it is, and how well it matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// What the results are ordered by: the fused score in hybrid search, the cosine in
    /// semantic search, BM25 in lexical search.
    pub score: f32,
    /// Cosine similarity of query and passage, in -1..=1 (`None` in lexical-only search).
    #[serde(default)]
    pub cosine: Option<f32>,
    /// BM25 score, when the lexical side found the passage.
    #[serde(default)]
    pub bm25: Option<f32>,
    /// 1-based rank in the semantic list (by cosine), when it was in it.
    #[serde(default)]
    pub semantic_rank: Option<u32>,
    /// 1-based rank in the lexical list (by BM25), when it was in it.
    #[serde(default)]
    pub lexical_rank: Option<u32>,
    /// Hamming distance between the query's and the passage's codes (`None` when the passage
    /// was scored exactly: its code was stale, or only the lexical side found it).
    pub distance: Option<u32>,
}

/// Which lists answer a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Both lists, fused.
    #[default]
    Hybrid,
    /// Vectors only (code filter + cosine).
    Semantic,
    /// Words only (BM25).
    Lexical,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hybrid" => Ok(Mode::Hybrid),
            "semantic" => Ok(Mode::Semantic),
            "lexical" => Ok(Mode::Lexical),
            _ => Err(format!(
                "unknown search mode {s:?}: use hybrid, semantic or lexical"
            )),
        }
    }
}

/// How the two lists become one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum Fusion {
    /// Reciprocal-rank fusion: Σ 1 / (k + rank) over the lists a passage is in.
    Rrf { k: f32 },
    /// `alpha × cosine′ + (1 − alpha) × bm25′`, each min-max normalised over the candidates.
    Convex { alpha: f32 },
    /// `alpha × z(cosine) + (1 − alpha) × z(bm25)`: each list's scores as standard scores over
    /// its candidates, so a list with one clear winner outweighs a flat one.
    Zscore { alpha: f32 },
}

/// Standard scores with the lexical side weighted 0.7: on the three dev sets the only fusion
/// measured at or above the better single side on every set (reciprocal rank fell far below
/// BM25 wherever the semantic list was weak; docs/BENCHMARKS.md).
impl Default for Fusion {
    fn default() -> Self {
        Fusion::Zscore { alpha: 0.3 }
    }
}

/// How a query is answered.
#[derive(Debug, Clone, Copy)]
pub struct SearchParams {
    /// Results wanted.
    pub k: usize,
    /// Candidates kept by the code filter for the cosine rerank. `None` picks
    /// [`default_candidates`] for the index size.
    pub candidates: Option<usize>,
    /// Keep only the best passage of each file.
    pub per_file: bool,
    pub mode: Mode,
    pub fusion: Fusion,
    pub filter: Filter,
}

/// How the first stage ranks the stored codes against the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Filter {
    /// The query's real-valued margins against the codes' bits ([`super::weighted`]): a third
    /// to a half of Hamming's candidates for the same recall with 64-bit ITQ codes. Codes of a
    /// source that cannot give margins (the DHIM head) fall back to [`Filter::Hamming`].
    #[default]
    Weighted,
    /// Plain Hamming distance between the query's code and the stored ones.
    Hamming,
}

impl Filter {
    pub fn name(self) -> &'static str {
        match self {
            Filter::Weighted => "weighted",
            Filter::Hamming => "hamming",
        }
    }
}

impl FromStr for Filter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "weighted" => Ok(Filter::Weighted),
            "hamming" => Ok(Filter::Hamming),
            _ => Err(format!("unknown filter {s:?}: use weighted or hamming")),
        }
    }
}

/// Most results a query returns: more is not a search any more, and every hit travels as text.
pub const MAX_K: usize = 10_000;

/// Longest query text searched. A sentence-sized question is a few hundred bytes; the encoder
/// reads at most its window of tokens anyway, and a pasted document is not a query.
pub const MAX_QUERY_BYTES: usize = 8 * 1024;

/// Passages the lexical side contributes to a query (its BM25 top), at least.
const LEXICAL_CANDIDATES: usize = 200;

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
            mode: Mode::default(),
            fusion: Fusion::default(),
            filter: Filter::default(),
        }
    }
}

/// A query split into its free text (quote marks removed) and the phrases that were quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedQuery {
    /// What ranks the results: the whole query without its quote marks.
    pub text: String,
    /// What every hit must contain, lower-cased.
    pub phrases: Vec<String>,
}

/// Splits out `"quoted phrases"`. A quote without its partner is an ordinary character (it is
/// dropped from the text): typing a query must never turn into an error.
pub fn parse_query(q: &str) -> ParsedQuery {
    let quotes = q.matches('"').count();
    let usable = quotes - quotes % 2;
    let mut text = String::with_capacity(q.len());
    let mut phrases = Vec::new();
    let mut inside: Option<String> = None;
    let mut seen = 0;
    for c in q.chars() {
        if c == '"' {
            seen += 1;
            if seen > usable {
                continue;
            }
            match inside.take() {
                Some(p) => {
                    let p = p.trim().to_lowercase();
                    if !p.is_empty() {
                        phrases.push(p);
                    }
                }
                None => inside = Some(String::new()),
            }
            text.push(' ');
            continue;
        }
        if let Some(p) = inside.as_mut() {
            p.push(c);
        }
        text.push(c);
    }
    ParsedQuery {
        text: text.split_whitespace().collect::<Vec<_>>().join(" "),
        phrases,
    }
}

/// Candidates for the rerank: enough that the filter loses (almost) nothing of the exact cosine
/// top k. Shorter codes separate neighbours less well and need a larger share of the corpus. The
/// shares (1/2 of the corpus for 16 bits, 1/3 for 32, 1/5 for 64, 1/8 for 128) were set for plain
/// Hamming distance on 20 Newsgroups; with the weighted filter they give recall@10 ≥ 0.993 on both
/// 20 Newsgroups and R8 at every length, where Hamming fell to 0.98 on R8 (docs/BENCHMARKS.md,
/// `dochash bench recall --target`). The cap keeps the rerank of a very large index within a few
/// milliseconds (about 0.8 µs a candidate at 1 M passages); small indexes are simply scored in
/// full.
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

/// Upper bound of [`default_candidates`]. It was 10,000 under the Hamming filter; the weighted
/// filter needed at most 0.74 of Hamming's candidates for the same recall at every measured
/// length (0.38–0.50 at 64 bits), so 8,000 keeps at least the recall 10,000 gave and pays for the
/// weighted scan with a shorter rerank.
pub const MAX_DEFAULT_CANDIDATES: usize = 8_000;

/// An index ready for queries: the current codes in memory (for the code filter), the
/// vectors mapped (for the rerank), the word index (for BM25) and the database handle (for the
/// hits' passages). Built from the writer's in-memory row table, so making a new one reads
/// nothing from disk.
pub struct Searcher {
    /// Per coded passage, in id order: its id, its row in the vectors, its code.
    ids: Vec<u64>,
    rows: Vec<u32>,
    codes: Vec<u64>,
    words: usize,
    /// The codes again, transposed for the AVX2 weighted scan (where the CPU has it and the
    /// source gives query margins).
    blocks: Option<weighted::Blocks>,
    /// Passages without a current code (id, row), in id order; scored exactly on every query.
    stale: Vec<(u64, u32)>,
    coder: Option<Coder>,
    vectors: Vectors,
    lexical: Option<LexicalSearcher>,
    db: Db,
}

/// A passage on its way to being a hit.
#[derive(Default, Clone, Copy)]
struct Candidate {
    row: Option<u32>,
    distance: Option<u32>,
    cosine: Option<f32>,
    bm25: Option<f32>,
    semantic_rank: Option<u32>,
    lexical_rank: Option<u32>,
    score: f32,
}

impl Searcher {
    pub fn new(
        table: &RowTable,
        vectors: Vectors,
        db: Db,
        lexical: Option<LexicalSearcher>,
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
            blocks: None,
            stale: Vec::new(),
            coder,
            vectors,
            lexical,
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
        if matches!(out.coder, Some(Coder::Linear(_))) {
            out.blocks = weighted::Blocks::new(&out.codes, words);
        }
        out
    }

    pub fn len(&self) -> usize {
        self.ids.len() + self.stale.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first stage as it runs for this index: `weighted` (with `avx2` or `portable` scan)
    /// for codes whose source gives query margins, else `hamming` with the detected kernel.
    pub fn filter_name(&self) -> String {
        match (&self.coder, &self.blocks) {
            (Some(Coder::Linear(_)), Some(_)) => "weighted (avx2)".into(),
            (Some(Coder::Linear(_)), None) => "weighted (portable)".into(),
            _ => format!("hamming ({})", hamming::kernel_name()),
        }
    }

    /// Passages that are scored exactly because they have no current code.
    pub fn stale(&self) -> usize {
        self.stale.len()
    }

    /// The database the hits' passages are read from.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Whether the lexical side is available (it is skipped for an index whose word index is
    /// missing or out of step, when read without being repaired).
    pub fn has_lexical(&self) -> bool {
        self.lexical.is_some()
    }

    /// The vectors row of a passage.
    fn row_of(&self, id: u64) -> Option<u32> {
        if let Ok(i) = self.ids.binary_search(&id) {
            return Some(self.rows[i]);
        }
        self.stale
            .binary_search_by_key(&id, |&(i, _)| i)
            .ok()
            .map(|i| self.stale[i].1)
    }

    /// Answers `text`: encodes it with the index's encoder (vector and, through the same pass,
    /// the code of whatever source made the stored codes) unless the search is lexical only.
    pub fn query(
        &self,
        encoder: &crate::encoder::Encoder,
        text: &str,
        params: &SearchParams,
    ) -> Result<Vec<Hit>, IndexError> {
        check_query(text)?;
        let q = parse_query(text);
        if q.text.is_empty() {
            return Ok(Vec::new());
        }
        if params.mode == Mode::Lexical {
            return self.search_parsed(&q, None, None, params);
        }
        let (emb, code) = super::coder::embed_and_code(
            encoder,
            self.coder.as_ref(),
            &[q.text.as_str()],
            crate::encoder::Role::Query,
            crate::encoder::BatchLimits::default(),
        )?;
        self.search_parsed(&q, Some(emb.row(0)), code.as_deref(), params)
    }

    /// Semantic search given a query's unit-length embedding (no lexical side: there is no
    /// text). A source that codes token states cannot code a bare vector: then every passage is
    /// scored exactly (use [`query`](Self::query) to get the filter).
    pub fn search(&self, query: &[f32], params: &SearchParams) -> Result<Vec<Hit>, IndexError> {
        let code = match &self.coder {
            Some(c) => c.encode_vectors(query, 1)?,
            None => None,
        };
        let params = SearchParams {
            mode: Mode::Semantic,
            ..*params
        };
        let q = ParsedQuery {
            text: String::new(),
            phrases: Vec::new(),
        };
        self.search_parsed(&q, Some(query), code.as_deref(), &params)
    }

    /// Answers `text` given its embedding, computed elsewhere (a benchmark with synthetic
    /// vectors): the code comes from the vector, as [`search`](Self::search) makes it.
    pub fn search_with_vector(
        &self,
        text: &str,
        vector: &[f32],
        params: &SearchParams,
    ) -> Result<Vec<Hit>, IndexError> {
        check_query(text)?;
        let code = match &self.coder {
            Some(c) => c.encode_vectors(vector, 1)?,
            None => None,
        };
        self.search_parsed(&parse_query(text), Some(vector), code.as_deref(), params)
    }

    /// Answers a parsed query given its embedding and code (absent for lexical search).
    pub fn search_parsed(
        &self,
        q: &ParsedQuery,
        vector: Option<&[f32]>,
        code: Option<&[u64]>,
        params: &SearchParams,
    ) -> Result<Vec<Hit>, IndexError> {
        let params = &params.normalized();
        if params.k == 0 || self.is_empty() {
            return Ok(Vec::new());
        }
        let semantic = params.mode != Mode::Lexical && vector.is_some();
        let lexical = params.mode != Mode::Semantic && self.lexical.is_some();
        let mut pool: HashMap<u64, Candidate> = HashMap::new();

        if semantic {
            let bits = self.coder.as_ref().map(|c| c.bits()).unwrap_or(64);
            // More candidates than codes is every code.
            let c = params
                .candidates
                .unwrap_or_else(|| default_candidates(self.len(), params.k, bits))
                .min(self.ids.len())
                .max(1);
            match code {
                Some(qc) if !self.ids.is_empty() && qc.len() == self.words => {
                    let filter_err = |e: hamming::HammingError| {
                        IndexError::Coder(super::CoderError::Fit(e.to_string()))
                    };
                    let margins = match (params.filter, &self.coder, vector) {
                        (Filter::Weighted, Some(coder), Some(v)) => coder.margins(v)?,
                        _ => None,
                    };
                    let top = match margins {
                        Some(m) => {
                            let wq = WeightedQuery::new(&m, self.words).map_err(filter_err)?;
                            let mut top = match &self.blocks {
                                Some(b) => weighted::top_candidates_blocks(&wq, b, c),
                                None => weighted::top_candidates(&wq, &self.codes, self.words, c),
                            }
                            .map_err(filter_err)?;
                            // Hits report the plain Hamming distance, whichever filter ran.
                            for t in &mut top {
                                let i = t.index as usize;
                                t.distance = self.codes[i * self.words..(i + 1) * self.words]
                                    .iter()
                                    .zip(qc)
                                    .map(|(a, b)| (a ^ b).count_ones())
                                    .sum();
                            }
                            top
                        }
                        None => hamming::top_candidates(qc, &self.codes, self.words, c)
                            .map_err(filter_err)?,
                    };
                    for t in &top {
                        let i = t.index as usize;
                        pool.insert(
                            self.ids[i],
                            Candidate {
                                row: Some(self.rows[i]),
                                distance: Some(t.distance),
                                ..Default::default()
                            },
                        );
                    }
                }
                _ => {
                    for (&id, &r) in self.ids.iter().zip(&self.rows) {
                        pool.insert(
                            id,
                            Candidate {
                                row: Some(r),
                                ..Default::default()
                            },
                        );
                    }
                }
            }
            for &(id, r) in &self.stale {
                pool.insert(
                    id,
                    Candidate {
                        row: Some(r),
                        ..Default::default()
                    },
                );
            }
        }
        if lexical && let Some(lex) = &self.lexical {
            // Phrases filter the results afterwards: look deeper so that k survive.
            let depth =
                LEXICAL_CANDIDATES.max(params.k * if q.phrases.is_empty() { 2 } else { 20 });
            let found = lex.search(&q.text, depth)?;
            for (rank, (id, bm25)) in found.into_iter().enumerate() {
                let c = pool.entry(id).or_insert_with(|| Candidate {
                    row: self.row_of(id),
                    ..Default::default()
                });
                c.bm25 = Some(bm25);
                c.lexical_rank = Some(rank as u32 + 1);
            }
        }
        // Exact cosines for every candidate, lexical ones included.
        if let Some(v) = vector {
            for c in pool.values_mut() {
                if let Some(row) = c.row
                    && let Some(x) = self.vectors.row(row as usize)
                {
                    c.cosine = Some(cosine_f16(v, x));
                }
            }
        }
        let mut cands: Vec<(u64, Candidate)> = pool.into_iter().collect();
        if semantic {
            cands.sort_by(|a, b| {
                let (x, y) = (
                    a.1.cosine.unwrap_or(f32::MIN),
                    b.1.cosine.unwrap_or(f32::MIN),
                );
                y.total_cmp(&x).then(a.0.cmp(&b.0))
            });
            for (rank, (_, c)) in cands.iter_mut().enumerate() {
                if c.cosine.is_some() {
                    c.semantic_rank = Some(rank as u32 + 1);
                }
            }
        }
        fuse(&mut cands, params.mode, params.fusion, semantic, lexical);
        cands.sort_by(|a, b| b.1.score.total_cmp(&a.1.score).then(a.0.cmp(&b.0)));

        let mut hits = Vec::with_capacity(params.k.min(cands.len()));
        let mut files: HashSet<PathBuf> = HashSet::new();
        for (id, c) in cands {
            // A passage removed since this searcher was made simply drops out.
            let Some(p) = self.db.passage(id)? else {
                continue;
            };
            if !q.phrases.is_empty() {
                let hay = format!("{}\n{}", p.headings.join("\n"), p.text).to_lowercase();
                if !q.phrases.iter().all(|ph| hay.contains(ph.as_str())) {
                    continue;
                }
            }
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
                score: c.score,
                cosine: c.cosine,
                bm25: c.bm25,
                semantic_rank: c.semantic_rank,
                lexical_rank: c.lexical_rank,
                distance: c.distance,
            });
            if hits.len() == params.k {
                break;
            }
        }
        Ok(hits)
    }
}

/// Sets each candidate's `score` for the mode: the fusion of both lists, or one list's score.
fn fuse(cands: &mut [(u64, Candidate)], mode: Mode, fusion: Fusion, semantic: bool, lexical: bool) {
    match (mode, semantic, lexical) {
        (Mode::Hybrid, true, true) => match fusion {
            Fusion::Rrf { k } => {
                for (_, c) in cands.iter_mut() {
                    c.score = c.semantic_rank.map_or(0.0, |r| 1.0 / (k + r as f32))
                        + c.lexical_rank.map_or(0.0, |r| 1.0 / (k + r as f32));
                }
            }
            Fusion::Convex { alpha } => {
                let range = |f: &dyn Fn(&Candidate) -> Option<f32>| {
                    cands
                        .iter()
                        .filter_map(|(_, c)| f(c))
                        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), x| {
                            (lo.min(x), hi.max(x))
                        })
                };
                let (clo, chi) = range(&|c| c.cosine);
                let (blo, bhi) = range(&|c| c.bm25);
                let norm = |x: f32, lo: f32, hi: f32| {
                    if hi > lo { (x - lo) / (hi - lo) } else { 1.0 }
                };
                for (_, c) in cands.iter_mut() {
                    let s = c.cosine.map_or(0.0, |x| norm(x, clo, chi));
                    let b = c.bm25.map_or(0.0, |x| norm(x, blo, bhi));
                    c.score = alpha * s + (1.0 - alpha) * b;
                }
            }
            Fusion::Zscore { alpha } => {
                // Passages the lexical side did not return score at most its last; 0 is what
                // BM25 gives a passage without any of the words.
                let stats = |f: &dyn Fn(&Candidate) -> Option<f32>, missing: Option<f32>| {
                    let xs: Vec<f32> = cands.iter().filter_map(|(_, c)| f(c).or(missing)).collect();
                    let n = xs.len().max(1) as f32;
                    let mean = xs.iter().sum::<f32>() / n;
                    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n;
                    (mean, var.sqrt().max(1e-6))
                };
                let (cm, cs) = stats(&|c| c.cosine, None);
                let (bm, bs) = stats(&|c| c.bm25, Some(0.0));
                for (_, c) in cands.iter_mut() {
                    let s = c.cosine.map_or(0.0, |x| (x - cm) / cs);
                    let b = (c.bm25.unwrap_or(0.0) - bm) / bs;
                    c.score = alpha * s + (1.0 - alpha) * b;
                }
            }
        },
        (_, true, false) | (Mode::Semantic, true, _) => {
            for (_, c) in cands.iter_mut() {
                c.score = c.cosine.unwrap_or(f32::MIN);
            }
        }
        _ => {
            for (_, c) in cands.iter_mut() {
                c.score = c.bm25.unwrap_or(0.0);
            }
        }
    }
}

/// Cosine of a unit query and a stored f16 vector (f16 rounding leaves it slightly off unit
/// length, so it is renormalised), converting in blocks with the CPU's F16C instructions where
/// available: the rerank of a large index touches millions of elements per query. The sums run
/// in [`LANES`] independent accumulators: one running sum is a chain of dependent additions that
/// the compiler may not reorder, and it made this loop, not memory, the rerank's cost.
pub fn cosine_f16(q: &[f32], v: &[half::f16]) -> f32 {
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
    let (dot, nv): (f32, f32) = (dot.iter().sum(), nv.iter().sum());
    if nv > 0.0 { dot / nv.sqrt() } else { 0.0 }
}

/// Accumulators of [`cosine_f16`]: enough for several vector registers at once.
const LANES: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    /// Cosine of a unit query and a stored vector (f16 rounding leaves it slightly off unit
    /// length, so it is renormalised).
    fn cosine(q: &[f32], v: &[f32]) -> f32 {
        let mut dot = 0f32;
        let mut nv = 0f32;
        for (a, b) in q.iter().zip(v) {
            dot += a * b;
            nv += b * b;
        }
        if nv > 0.0 { dot / nv.sqrt() } else { 0.0 }
    }

    #[test]
    fn cosine_f16_matches_the_scalar_cosine() {
        // Lengths around the lane and block sizes, so every remainder path runs.
        for n in [1, 7, 31, 32, 33, 63, 64, 65, 100, 384, 385, 768] {
            let q: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            let v: Vec<half::f16> = (0..n)
                .map(|i| half::f16::from_f32(((i * 53 % 97) as f32 - 48.0) / 48.0))
                .collect();
            let f: Vec<f32> = v.iter().map(|x| x.to_f32()).collect();
            let (got, want) = (cosine_f16(&q, &v), cosine(&q, &f));
            assert!(
                (got - want).abs() < 1e-4 * want.abs().max(1.0),
                "{n}: {got} vs {want}"
            );
        }
    }

    /// An index of `n` clustered unit vectors (64 dimensions), written through the real store
    /// with its ITQ codes fitted as an update fits them.
    fn clustered_index(dir: &std::path::Path, n: usize) -> (crate::index::Index, Vec<Vec<f32>>) {
        use crate::index::store::{Fingerprint, PassageRecord};
        let dim = 64;
        let fp = Fingerprint {
            schema: crate::index::SCHEMA_VERSION,
            model_id: "synthetic".into(),
            model_stamp: String::new(),
            dim,
            pooling: "mean".into(),
            chunking: Default::default(),
            max_len: 256,
            precision: crate::encoder::Precision::F32,
        };
        let (mut index, _) = crate::index::Index::open(dir, &fp).unwrap();
        let mut rng = crate::rng::SplitMix64::new(3);
        let centres: Vec<Vec<f32>> = (0..20)
            .map(|_| (0..dim).map(|_| rng.gaussian() as f32).collect())
            .collect();
        let unit = |mut v: Vec<f32>| {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            v
        };
        let mut vectors = Vec::new();
        let root = dir.join("notes");
        for f in 0..n / 50 {
            let path = root.join(format!("f{f}.md"));
            let passages = (0..50)
                .map(|i| {
                    let c = &centres[(f * 50 + i) % centres.len()];
                    let v = unit(c.iter().map(|x| x + 0.8 * rng.gaussian() as f32).collect());
                    vectors.push(v.clone());
                    let rec = PassageRecord {
                        path: path.clone(),
                        start_byte: 0,
                        end_byte: 1,
                        start_line: i as u32 + 1,
                        end_line: i as u32 + 1,
                        headings: Vec::new(),
                        context: Vec::new(),
                        text: format!("p{i}"),
                    };
                    (rec, v)
                })
                .collect();
            index.put_file(&path, &root, passages).unwrap();
        }
        index.fit_codes(32).unwrap();
        let queries = (0..40)
            .map(|q| {
                let c = &centres[q % centres.len()];
                unit(c.iter().map(|x| x + 0.8 * rng.gaussian() as f32).collect())
            })
            .collect();
        (index, queries)
    }

    #[test]
    fn the_weighted_filter_keeps_more_true_neighbours_than_hamming_at_equal_candidates() {
        let dir = tempfile::tempdir().unwrap();
        let (index, queries) = clustered_index(dir.path(), 3000);
        let searcher = index.searcher().unwrap();
        let exact = SearchParams {
            mode: Mode::Semantic,
            candidates: Some(usize::MAX),
            ..Default::default()
        };
        let found = |filter: Filter| {
            let params = SearchParams {
                candidates: Some(100),
                filter,
                ..exact
            };
            let mut found = 0;
            for q in &queries {
                let truth = searcher.search(q, &exact).unwrap();
                let hits = searcher.search(q, &params).unwrap();
                found += truth
                    .iter()
                    .filter(|t| hits.iter().any(|h| h.id == t.id))
                    .count();
                // Hits report the plain Hamming distance whichever filter chose them.
                for h in &hits {
                    let t = truth.iter().find(|t| t.id == h.id);
                    if let Some(t) = t {
                        assert_eq!(t.distance, h.distance);
                    }
                }
            }
            found
        };
        let (weighted, hamming) = (found(Filter::Weighted), found(Filter::Hamming));
        assert!(
            weighted > hamming,
            "weighted found {weighted}, hamming {hamming} of {}",
            queries.len() * 10
        );
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
