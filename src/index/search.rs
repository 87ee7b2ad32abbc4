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

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use super::IndexError;
use super::coder::Coder;
use super::cosine::{cosine_f16, prefetch, prefetch_value};
use super::hamming;
use super::lexical::{Highlighter, LexicalSearcher};
use super::matched::{Snippet, matched};
use super::partition::Partition;
use super::select::Selection;
use super::store::{Db, FileRecord, IndexMeta, RowTable, Vectors};
use super::weighted::{self, RowMask, WeightedQuery};

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
    /// The query's quoted phrases are in no passage as written, so this hit was ranked by its
    /// words alone (in JSON only when true).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub without_phrases: bool,
    /// First and last line of what matched best: the unit the semantic side scored highest,
    /// or the lines holding the most query words.
    #[serde(default)]
    pub matched_lines: (u32, u32),
    /// A few lines of what matched, with the query's words marked; its line is where the hit
    /// opens.
    #[serde(default)]
    pub snippet: Snippet,
    /// Other passages of the same place (or file, grouping by file) that ranked lower, best
    /// first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more: Vec<Member>,
    /// The page (1-based) of a PDF the hit's snippet is on; what a person looks for in the
    /// document, where its lines are only the text's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
}

/// A passage folded into a hit by grouping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub line: u32,
    pub end_line: u32,
    pub score: f32,
}

impl Hit {
    /// The line the hit opens at: the first of its snippet (what matched), else the
    /// passage's.
    pub fn open_line(&self) -> u32 {
        if self.snippet.line > 0 {
            self.snippet.line
        } else {
            self.line
        }
    }

    /// Where in its file the hit is, as a person finds it there: `:LINE` after the path, or
    /// ` p. PAGE` in a PDF, whose lines are only dochash's.
    pub fn location(&self) -> String {
        match self.page {
            Some(p) => format!(" p. {p}"),
            None => format!(":{}", self.open_line()),
        }
    }

    /// Whether the hit or a passage folded into it covers any of `first..=last` of `path`.
    pub fn covers(&self, path: &std::path::Path, first: u32, last: u32) -> bool {
        self.path == path
            && (self.line <= last && self.end_line >= first
                || self
                    .more
                    .iter()
                    .any(|m| m.line <= last && m.end_line >= first))
    }
}

/// How passages of one file fold into one result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    /// Passages that overlap or touch (one section's run of neighbours) are one result, shown
    /// by the best of them.
    #[default]
    Place,
    /// One result per file.
    File,
    /// Every passage is its own result.
    None,
}

impl FromStr for Group {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "place" => Ok(Group::Place),
            "file" => Ok(Group::File),
            "none" => Ok(Group::None),
            _ => Err(format!("unknown grouping {s:?} (place, file or none)")),
        }
    }
}

/// What a person is told when the query's quoted words are in no passage as written and the
/// hits rank the words alone ([`Hit::without_phrases`]); the CLI and the TUI say the same.
pub const PHRASES_MISSING: &str =
    "no passage holds the quoted words as written; these are the closest by all the words";

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
    /// its best candidates, so a list with one clear winner outweighs a flat one.
    Zscore { alpha: f32 },
}

/// Standard scores (each over its side's best 100), the semantic side weighted 0.4: on the three
/// dev sets, with the semantic side matching 64-token units, the best mean of the fusions
/// measured at or above the better single side on every set (reciprocal rank fell far below
/// BM25 wherever the semantic list was weak; docs/BENCHMARKS.md).
impl Default for Fusion {
    fn default() -> Self {
        Fusion::Zscore {
            alpha: DEFAULT_SEMANTIC_WEIGHT,
        }
    }
}

/// The semantic side's weight in the default fusion.
pub const DEFAULT_SEMANTIC_WEIGHT: f32 = 0.4;

/// How a query is answered.
#[derive(Debug, Clone)]
pub struct SearchParams {
    /// Results wanted.
    pub k: usize,
    /// Candidates kept by the code filter for the cosine rerank. `None` picks
    /// [`default_candidates`] for the index size.
    pub candidates: Option<usize>,
    /// How passages of one file fold into one result.
    pub group: Group,
    pub mode: Mode,
    /// `None`: the corpus's own (see [`super::fit`]), else the default.
    pub fusion: Option<Fusion>,
    pub filter: Filter,
    /// Return every candidate the query scored, in the order the results are ranked, not only
    /// the best `k` (`k` still sizes the search): what `dochash eval retrieval --pool` writes
    /// out, so that other fusion rules can be tried on the same candidates.
    pub whole_pool: bool,
    /// Only passages of the files these filters select; applied before either side's cut, so
    /// a selective filter still returns the best `k` of what it keeps.
    pub selection: Option<Arc<Selection>>,
    /// On a partitioned index, the share of the coded rows the first stage scans: the lists
    /// nearest the query until they hold it. `None`: [`PROBE_SHARE`]; 1 scans every code.
    pub probe_share: Option<f32>,
}

/// Share of a partitioned index's coded rows a query's first stage scans, the lists nearest to
/// it first (see [`super::partition`]). Set by recall@10 against exact search: on real
/// sentences a tenth already loses under half a point; the synthetic bench's clusters, whose
/// points spread evenly in 384 dimensions, need a quarter for 0.99 (docs/BENCHMARKS.md).
pub const PROBE_SHARE: f32 = 0.25;

/// A query scans at least this many times its candidates, however small the share.
const PROBE_CANDIDATES: usize = 16;

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
pub const LEXICAL_CANDIDATES: usize = 200;

/// How many of each side's best scores z-score fusion normalises over.
const ZSCORE_DEPTH: usize = 100;

/// Filter-found passages that are scored over all their units, best first by the units the
/// filter kept. The filter keeps rows, and scoring every row of every passage it touched cost
/// five times the rows the filter kept (a passage has about five units); a passage the filter
/// found through a weaker unit only moves up when rescored, and one ranked below this many by
/// its kept units would have to overtake them all with a unit the filter missed. Twice
/// [`ZSCORE_DEPTH`], so the scores fusion normalises over are exact.
const RESCORE_DEPTH: usize = 2 * ZSCORE_DEPTH;

/// Most lines one place spans: a section's run of neighbours, not a whole long section (or a
/// whole file without headings, once a filter leaves only it).
const PLACE_MAX_LINES: u32 = 120;

/// Lines from the first of two spans' starts to the last of their ends.
fn extent(a: (u32, u32), b: (u32, u32)) -> u32 {
    a.1.max(b.1).saturating_sub(a.0.min(b.0)) + 1
}

/// Candidates past the last place's that grouping still reads for passages joining the places
/// found (at least twice the places wanted).
const GROUP_LOOKAHEAD: usize = 30;

/// Rows of the filter's candidates fetched ahead of the one being scored.
const PREFETCH_AHEAD: usize = 8;

/// Kept rows from which the rerank is split across cores: each row is a wait on memory, and
/// two cores wait on two at once. Below it the hand-over costs more than it saves.
const PARALLEL_RERANK: usize = 2048;

impl SearchParams {
    /// The parameters with `k` capped at [`MAX_K`] (callers pass what users typed; a huge `k`
    /// must not turn into a huge allocation).
    pub fn normalized(&self) -> Self {
        Self {
            k: self.k.min(MAX_K),
            ..self.clone()
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

/// Checks a result count asked for: a request for none, or for more than [`MAX_K`], is a
/// mistake to say, not to answer with nothing or with a silently smaller list.
pub fn check_k(k: usize) -> Result<(), IndexError> {
    if k == 0 || k > MAX_K {
        return Err(IndexError::Query(format!(
            "{k} results asked for; ask for 1 to {MAX_K}"
        )));
    }
    Ok(())
}

impl Default for SearchParams {
    fn default() -> Self {
        Self {
            k: 10,
            candidates: None,
            group: Group::default(),
            mode: Mode::default(),
            fusion: None,
            filter: Filter::default(),
            whole_pool: false,
            selection: None,
            probe_share: None,
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
    /// Per coded row, in row order: its passage's span (id and rows, as in `spans`, copied so
    /// that a filter candidate costs one memory read, not two dependent ones) and its own row
    /// in the vectors. A passage has a row per unit it is matched on.
    passages: Vec<(Span, u32)>,
    /// Per coded row: its passage's place in `spans` (what a filter's mask is over).
    span_at: Vec<u32>,
    codes: Vec<u64>,
    words: usize,
    /// The codes again, transposed for the AVX2 weighted scan (where the CPU has it and the
    /// source gives query margins).
    blocks: Option<weighted::Blocks>,
    /// A partitioned index's lists: then the coded rows (`passages`, `span_at`, `codes`) are
    /// in list order, not row order.
    probe: Option<Probe>,
    /// Per row without a current code, in row order: its passage's span; scored exactly on
    /// every query.
    stale: Vec<Span>,
    /// Per live passage, in id order: its span. The semantic side scores a passage by its best
    /// row.
    spans: Vec<Span>,
    coder: Option<Coder>,
    vectors: Vectors,
    lexical: Option<LexicalSearcher>,
    db: Db,
    /// The fusion the corpus chose.
    fusion: Fusion,
    /// The files and their passages' places in `spans`, read from the database the first time
    /// a query filters.
    files: OnceLock<Vec<FileEntry>>,
    /// What the last filters allowed: a person refining a query keeps its filters, so each
    /// keystroke's search reuses them.
    last_allowed: std::sync::Mutex<Option<(SelectionKey, Arc<Allowed>)>>,
}

type SelectionKey = (super::select::Filters, Option<i64>, Option<i64>);

/// The lists of a partitioned index over its coded rows, which are ordered by list.
struct Probe {
    partition: Arc<Partition>,
    /// Per list: its first coded row; one more entry, the number of coded rows, at the end.
    starts: Vec<u32>,
}

impl Probe {
    /// Where each list's coded rows begin once they are in list order (one more entry at the
    /// end: every row), or `None` where a row's list is not one of the partition's (a damaged
    /// file): then every code is scanned.
    fn starts(partition: &Partition, lists: impl Iterator<Item = u32>) -> Option<Vec<u32>> {
        let n = partition.lists();
        let mut starts = vec![0u32; n + 1];
        for l in lists {
            *starts.get_mut(l as usize + 1)? += 1;
        }
        for l in 0..n {
            starts[l + 1] += starts[l];
        }
        Some(starts)
    }

    /// The blocks of [`weighted::Blocks`] to scan for `query`: the lists nearest to it until
    /// they hold `share` of the coded rows (and at least [`PROBE_CANDIDATES`] × `c`), as
    /// ranges of blocks in increasing order, merged where they touch.
    fn blocks(&self, query: &[f32], share: f32, c: usize) -> Vec<std::ops::Range<usize>> {
        let total = self.starts.last().copied().unwrap_or(0) as usize;
        let want = ((total as f64 * f64::from(share.clamp(0.0, 1.0))).ceil() as usize)
            .max(c.saturating_mul(PROBE_CANDIDATES))
            .min(total);
        let block = weighted::BLOCK;
        let mut ranges = Vec::new();
        let mut covered = 0usize;
        for l in self.partition.ranked(query) {
            if covered >= want {
                break;
            }
            let (a, b) = (self.starts[l as usize], self.starts[l as usize + 1]);
            if b > a {
                covered += (b - a) as usize;
                ranges.push(a as usize / block..(b as usize).div_ceil(block));
            }
        }
        ranges.sort_unstable_by_key(|r| r.start);
        let mut merged: Vec<std::ops::Range<usize>> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        merged
    }
}

/// A file as filters see it.
struct FileEntry {
    path: PathBuf,
    record: FileRecord,
    /// Its passages' places in `spans`.
    spans: Vec<u32>,
}

/// What a query's filters allow: passages by their place in `spans`.
struct Allowed {
    spans: Vec<u64>,
    /// Rows of the allowed passages.
    rows: usize,
    /// Their ids, sorted, for the lexical side.
    ids: Arc<Vec<u64>>,
}

impl Allowed {
    fn has(&self, span: usize) -> bool {
        self.spans
            .get(span / 64)
            .is_some_and(|w| w >> (span % 64) & 1 == 1)
    }
}

/// A passage's id and its rows in the vectors (`first..end`, consecutive).
type Span = (u64, u32, u32);

/// A filter candidate after the rerank: its coded row, its passage's span, and its cosine to
/// the query with its row in the vectors (`None` without a query vector).
type Reranked = (u32, Span, Option<(f32, u32)>);

/// The candidates of a query by passage id. Ids are the index's own, not an attacker's: a
/// fast hash, for the thousands a query adds.
type Pool = HashMap<u64, Candidate, BuildHasherDefault<rustc_hash::FxHasher>>;

/// A passage on its way to being a hit.
#[derive(Default, Clone, Copy)]
struct Candidate {
    /// Its rows in the vectors.
    rows: Option<(u32, u32)>,
    /// The coded row the filter ranked it by: its nearest unit's (its plain Hamming distance
    /// is reported with the hit, reckoned only for the hits).
    coded: Option<u32>,
    distance: Option<u32>,
    cosine: Option<f32>,
    bm25: Option<f32>,
    semantic_rank: Option<u32>,
    lexical_rank: Option<u32>,
    score: f32,
    /// Scored over all its rows whatever the filter kept (it has rows without a current code).
    all_rows: bool,
    /// The row (in the vectors) of its best unit so far.
    best_row: Option<u32>,
}

impl Searcher {
    pub fn new(
        table: &RowTable,
        vectors: Vectors,
        db: Db,
        lexical: Option<LexicalSearcher>,
        meta: &IndexMeta,
        coder: Option<Coder>,
        partition: Option<Arc<Partition>>,
    ) -> Self {
        // Without a coder no code is current: every passage is scored exactly.
        let generation = match (&meta.code, &coder) {
            (Some(m), Some(c)) if c.words() == table.words => Some(m.generation),
            _ => None,
        };
        let words = table.words;
        let mut out = Self {
            passages: Vec::with_capacity(table.live_rows()),
            span_at: Vec::with_capacity(table.live_rows()),
            codes: Vec::with_capacity(table.live_rows() * words),
            words,
            blocks: None,
            probe: None,
            stale: Vec::new(),
            spans: Vec::with_capacity(table.live()),
            coder,
            vectors,
            lexical,
            db,
            fusion: match &meta.fusion {
                Some(c) if c.adopted => Fusion::Zscore {
                    alpha: c.semantic_weight,
                },
                _ => Fusion::default(),
            },
            files: OnceLock::new(),
            last_allowed: std::sync::Mutex::new(None),
        };
        let visible = out.vectors.rows().min(table.rows());
        let live = || (0..visible).filter(|&r| !table.dead[r]);
        for r in live() {
            let id = table.id(r);
            match out.spans.last_mut() {
                Some((last, _, end)) if *last == id && *end as usize == r => *end += 1,
                _ => out.spans.push((id, r as u32, r as u32 + 1)),
            }
        }
        let coded = |r: usize| generation.is_some_and(|g| table.gens[r] == g);
        let list = |r: usize| table.lists.get(r).copied().unwrap_or(0);
        // On a partitioned index the coded rows go in list order, so that a list's codes are
        // one run of blocks: each to its place as the rows are read in order (a write stream
        // a list, which the caches hold).
        let vectors_coded = out.coder.as_ref().is_some_and(Coder::codes_vectors);
        let probe = match partition {
            Some(p) if vectors_coded => Probe::starts(&p, live().filter(|&r| coded(r)).map(list))
                .map(|starts| Probe {
                    partition: p,
                    starts,
                }),
            _ => None,
        };
        let mut next = probe.as_ref().map(|p| p.starts.clone());
        if let Some(n) = probe.as_ref().and_then(|p| p.starts.last()) {
            let n = *n as usize;
            out.passages = vec![((0, 0, 0), 0); n];
            out.span_at = vec![0; n];
            out.codes = vec![0; n * words];
        }
        // Spans and live rows are both in row order: a cursor walks the spans.
        let mut at = 0;
        for r in live() {
            while out.spans.get(at).is_some_and(|s| s.2 as usize <= r) {
                at += 1;
            }
            let Some(&span) = out.spans.get(at) else {
                break;
            };
            if !coded(r) {
                out.stale.push(span);
                continue;
            }
            match next.as_mut() {
                Some(next) => {
                    let slot = &mut next[list(r) as usize];
                    let i = *slot as usize;
                    *slot += 1;
                    out.passages[i] = (span, r as u32);
                    out.span_at[i] = at as u32;
                    out.codes[i * words..(i + 1) * words].copy_from_slice(table.code(r));
                }
                None => {
                    out.passages.push((span, r as u32));
                    out.span_at.push(at as u32);
                    out.codes.extend_from_slice(table.code(r));
                }
            }
        }
        out.probe = probe;
        if vectors_coded {
            out.blocks = weighted::Blocks::new(&out.codes, words);
        }
        out
    }

    /// The number of lists the first stage picks from, on a partitioned index.
    pub fn lists(&self) -> Option<usize> {
        self.probe.as_ref().map(|p| p.partition.lists())
    }

    /// Maps the vectors in ahead of the queries, in the background (see
    /// [`Vectors::warm_in_background`]): for a searcher that will serve many.
    pub fn warm_in_background(&self) {
        self.vectors.warm_in_background();
    }

    /// The same, done before returning (see [`Vectors::warm_now`]).
    pub fn warm_now(&self) {
        self.vectors.warm_now();
    }

    /// Passages searched.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Vectors searched (a passage has one per unit it is matched on).
    pub fn vectors(&self) -> usize {
        self.passages.len() + self.stale.len()
    }

    /// The first stage as it runs for this index: `weighted` (with `avx2` or `portable` scan)
    /// for codes whose source gives query margins, else `hamming` with the detected kernel.
    pub fn filter_name(&self) -> String {
        match (&self.coder, &self.blocks) {
            (Some(c), Some(_)) if c.codes_vectors() => "weighted (avx2)".into(),
            (Some(c), None) if c.codes_vectors() => "weighted (portable)".into(),
            _ => format!("hamming ({})", hamming::kernel_name()),
        }
    }

    /// Vectors that are scored exactly because they have no current code.
    pub fn stale(&self) -> usize {
        self.stale.len()
    }

    /// The database the hits' passages are read from.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The rows of a passage.
    fn rows_of(&self, id: u64) -> Option<(u32, u32)> {
        let i = self.spans.binary_search_by_key(&id, |s| s.0).ok()?;
        let (_, first, end) = self.spans[i];
        Some((first, end))
    }

    /// Adds the passage of `span`, which the filter found through one of its rows (`coded`,
    /// the filter's nearest first, with that row's `cosine` to the query).
    fn found<'p>(
        &self,
        pool: &'p mut Pool,
        span: Span,
        coded: Option<u32>,
        cosine: Option<(f32, u32)>,
    ) -> &'p mut Candidate {
        let (id, first, end) = span;
        let c = pool.entry(id).or_insert_with(|| Candidate {
            rows: Some((first, end)),
            ..Default::default()
        });
        c.coded = c.coded.or(coded);
        if let Some((x, row)) = cosine
            && c.cosine.is_none_or(|y| x > y)
        {
            c.cosine = Some(x);
            c.best_row = Some(row);
        }
        c
    }

    /// Each kept coded row with its passage's span, the row's cosine to the query and its row
    /// in the vectors. The rows lie scattered over the vector file, and so do their entries in
    /// `passages`: an entry is fetched two steps ahead of its use and its row one step ahead,
    /// so that neither read waits on the other; a long list is split across cores, each
    /// waiting on memory for its own part. The span is handed on so that the pool need not
    /// read the entry again.
    fn rerank(&self, top: &[hamming::Candidate], vector: Option<&[f32]>) -> Vec<Reranked> {
        use rayon::prelude::*;
        let entry = |i: usize| self.passages.get(top.get(i)?.index as usize);
        let Some(v) = vector else {
            return top
                .iter()
                .filter_map(|t| Some((t.index, self.passages.get(t.index as usize)?.0, None)))
                .collect();
        };
        let score = |part: std::ops::Range<usize>| -> Vec<Reranked> {
            let end = part.end;
            part.filter_map(|i| {
                if i + 2 * PREFETCH_AHEAD < end
                    && let Some(e) = entry(i + 2 * PREFETCH_AHEAD)
                {
                    prefetch_value(e);
                }
                if i + PREFETCH_AHEAD < end
                    && let Some(&(_, r)) = entry(i + PREFETCH_AHEAD)
                    && let Some(x) = self.vectors.row(r as usize)
                {
                    prefetch(x);
                }
                let coded = top.get(i)?.index;
                let &(span, r) = entry(i)?;
                let scored = self.vectors.row(r as usize).map(|x| (cosine_f16(v, x), r));
                Some((coded, span, scored))
            })
            .collect()
        };
        let parts = if top.len() >= PARALLEL_RERANK {
            rayon::current_num_threads().clamp(1, 8)
        } else {
            1
        };
        if parts == 1 {
            return score(0..top.len());
        }
        let n = top.len();
        let scored: Vec<Vec<Reranked>> = (0..parts)
            .into_par_iter()
            .map(|p| score(n * p / parts..n * (p + 1) / parts))
            .collect();
        scored.concat()
    }

    /// Scores a candidate by the best cosine over all of its rows.
    fn score_rows(&self, query: &[f32], c: &mut Candidate) {
        let Some((first, end)) = c.rows else {
            c.cosine = None;
            return;
        };
        let best = (first..end)
            .filter_map(|r| Some((cosine_f16(query, self.vectors.row(r as usize)?), r)))
            .reduce(|a, b| if b.0 > a.0 { b } else { a });
        c.cosine = best.map(|b| b.0);
        c.best_row = best.map(|b| b.1);
    }

    /// The semantic side's candidates, into the pool: the filter's nearest codes, reranked, or
    /// every allowed passage where the filters leave few or there are no codes.
    fn semantic_side(
        &self,
        pool: &mut Pool,
        vector: Option<&[f32]>,
        code: Option<&[u64]>,
        params: &SearchParams,
        allowed: Option<&Arc<Allowed>>,
    ) -> Result<(), IndexError> {
        let allowed = allowed.cloned();
        let bits = self.coder.as_ref().map(|c| c.bits()).unwrap_or(64);
        // Candidates as for an index of what the filters keep; more than there are codes is
        // every code.
        let searched = allowed.as_ref().map_or(self.vectors(), |a| a.rows);
        let c = params
            .candidates
            .unwrap_or_else(|| default_candidates(searched, params.k, bits))
            .min(self.passages.len())
            .max(1);
        pool.reserve(c);
        let mask = allowed.as_ref().map(|a| RowMask {
            allowed: &a.spans,
            group_of: &self.span_at,
            count: a.rows,
        });
        match code {
            // Filters that keep no more rows than an unfiltered search reranks: score them
            // all (as fast as the rerank, and exact, where the codes of a small and
            // scattered set would separate its neighbours less well).
            _ if allowed
                .as_ref()
                .is_some_and(|a| a.rows <= c.max(MAX_DEFAULT_CANDIDATES)) =>
            {
                if let Some(a) = &allowed {
                    for (i, &span) in self.spans.iter().enumerate() {
                        if a.has(i) {
                            self.found(pool, span, None, None).all_rows = true;
                        }
                    }
                }
            }
            Some(qc) if !self.passages.is_empty() && qc.len() == self.words => {
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
                        let share = params.probe_share.unwrap_or(PROBE_SHARE);
                        match (&self.blocks, &self.probe, vector) {
                            // Filters are applied in the scan, and the lists near the query
                            // may hold none of what they keep: a filtered query scans all.
                            (Some(b), Some(probe), Some(v)) if mask.is_none() && share < 1.0 => {
                                let ranges = probe.blocks(v, share, c);
                                weighted::top_candidates_in_blocks(&wq, b, c, &ranges)
                            }
                            (Some(b), _, _) => {
                                weighted::top_candidates_blocks_masked(&wq, b, c, mask.as_ref())
                            }
                            (None, _, _) => weighted::top_candidates_masked(
                                &wq,
                                &self.codes,
                                self.words,
                                c,
                                mask.as_ref(),
                            ),
                        }
                        .map_err(filter_err)?
                    }
                    None => match &mask {
                        None => hamming::top_candidates(qc, &self.codes, self.words, c)
                            .map_err(filter_err)?,
                        Some(m) => {
                            // The Hamming kernels scan contiguous codes: gather the
                            // allowed ones.
                            let keep: Vec<usize> =
                                (0..self.passages.len()).filter(|&i| m.allows(i)).collect();
                            let mut codes = Vec::with_capacity(keep.len() * self.words);
                            for &i in &keep {
                                codes.extend_from_slice(
                                    &self.codes[i * self.words..(i + 1) * self.words],
                                );
                            }
                            let mut top = hamming::top_candidates(qc, &codes, self.words, c)
                                .map_err(filter_err)?;
                            for t in &mut top {
                                t.index = keep[t.index as usize] as u32;
                            }
                            top
                        }
                    },
                };
                for (coded, span, cosine) in self.rerank(&top, vector) {
                    self.found(pool, span, Some(coded), cosine);
                }
            }
            _ => {
                for (i, &span) in self.spans.iter().enumerate() {
                    if allowed.as_ref().is_none_or(|a| a.has(i)) {
                        self.found(pool, span, None, None);
                    }
                }
            }
        }
        for &span in &self.stale {
            let ok = allowed.as_ref().is_none_or(|a| {
                self.spans
                    .binary_search_by_key(&span.0, |s| s.0)
                    .is_ok_and(|i| a.has(i))
            });
            if ok {
                self.found(pool, span, None, None).all_rows = true;
            }
        }
        Ok(())
    }

    /// The files and where their passages are in `spans`, read once per searcher.
    fn file_table(&self) -> Result<&[FileEntry], IndexError> {
        if let Some(t) = self.files.get() {
            return Ok(t);
        }
        let mut table = Vec::new();
        for (path, record) in self.db.files()? {
            let spans = record
                .passages
                .iter()
                .filter_map(|id| self.spans.binary_search_by_key(id, |s| s.0).ok())
                .map(|i| i as u32)
                .collect();
            table.push(FileEntry {
                path,
                record,
                spans,
            });
        }
        Ok(self.files.get_or_init(|| table))
    }

    /// A query of filters alone: the files they select, newest first (by the note's date,
    /// else its modification time), each as its first passage.
    fn browse(&self, sel: &Selection, params: &SearchParams) -> Result<Vec<Hit>, IndexError> {
        let params = params.normalized();
        let mut files: Vec<&FileEntry> = self
            .file_table()?
            .iter()
            .filter(|f| !f.spans.is_empty() && sel.holds(&f.path, &f.record))
            .collect();
        let when = |f: &FileEntry| {
            f.record
                .date
                .map_or(f.record.mtime_ns, |d| d as i128 * 1_000_000_000)
        };
        files.sort_by(|a, b| when(b).cmp(&when(a)).then(a.path.cmp(&b.path)));
        let none = Highlighter::default();
        let mut hits = Vec::new();
        for f in files {
            if hits.len() == params.k {
                break;
            }
            // Its first passage: ids are given in the file's order.
            let Some(&i) = f.spans.iter().min() else {
                continue;
            };
            let id = self.spans[i as usize].0;
            let Some(p) = self.db.passage(id)? else {
                continue;
            };
            let m = matched(&p, None, &none);
            // Unranked: no side scored it.
            hits.push(hit(id, p, &Candidate::default(), m, false));
        }
        Ok(hits)
    }

    /// [`allowed`](Self::allowed), reused while the filters stay the same.
    fn allowed_cached(&self, sel: &Selection) -> Result<Arc<Allowed>, IndexError> {
        let key = sel.key();
        if let Ok(last) = self.last_allowed.lock()
            && let Some((k, a)) = last.as_ref()
            && *k == key
        {
            return Ok(a.clone());
        }
        let a = Arc::new(self.allowed(sel)?);
        if let Ok(mut last) = self.last_allowed.lock() {
            *last = Some((key, a.clone()));
        }
        Ok(a)
    }

    /// The passages `sel` allows.
    fn allowed(&self, sel: &Selection) -> Result<Allowed, IndexError> {
        let mut spans = vec![0u64; self.spans.len().div_ceil(64)];
        let mut rows = 0;
        for f in self.file_table()? {
            if !sel.holds(&f.path, &f.record) {
                continue;
            }
            for &i in &f.spans {
                let i = i as usize;
                spans[i / 64] |= 1 << (i % 64);
                let (_, first, end) = self.spans[i];
                rows += (end - first) as usize;
            }
        }
        let mut allowed = Allowed {
            spans,
            rows,
            ids: Arc::new(Vec::new()),
        };
        let ids: Vec<u64> = (0..self.spans.len())
            .filter(|&i| allowed.has(i))
            .map(|i| self.spans[i].0)
            .collect();
        allowed.ids = Arc::new(ids);
        Ok(allowed)
    }

    /// Answers `text`: encodes it with the index's encoder (vector and, through the same pass,
    /// the code of whatever source made the stored codes) unless the search is lexical only.
    pub fn query(
        &self,
        encoder: &crate::encoder::Encoder,
        text: &str,
        params: &SearchParams,
    ) -> Result<Vec<Hit>, IndexError> {
        Ok(self
            .query_many(encoder, &[text], params)?
            .pop()
            .unwrap_or_default())
    }

    /// Answers several queries, encoded together (the encoder runs a batch's texts in
    /// parallel, so many questions cost less than one at a time); one list of hits per text.
    pub fn query_many(
        &self,
        encoder: &crate::encoder::Encoder,
        texts: &[&str],
        params: &SearchParams,
    ) -> Result<Vec<Vec<Hit>>, IndexError> {
        for t in texts {
            check_query(t)?;
        }
        let parsed: Vec<ParsedQuery> = texts.iter().map(|t| parse_query(t)).collect();
        let asked: Vec<&str> = parsed
            .iter()
            .filter(|q| !q.text.is_empty())
            .map(|q| q.text.as_str())
            .collect();
        let encoded = if params.mode == Mode::Lexical || asked.is_empty() {
            None
        } else {
            Some(super::coder::embed_and_code(
                encoder,
                self.coder.as_ref(),
                &asked,
                crate::encoder::Role::Query,
                crate::encoder::BatchLimits::default(),
            )?)
        };
        let mut out = Vec::with_capacity(texts.len());
        let mut row = 0;
        for q in &parsed {
            if q.text.is_empty() {
                out.push(match &params.selection {
                    Some(sel) => self.browse(sel, params)?,
                    None => Vec::new(),
                });
                continue;
            }
            let hits = match &encoded {
                None => self.search_parsed(q, None, None, params)?,
                Some((emb, codes)) => {
                    let words = codes.as_ref().map_or(0, |c| c.len() / asked.len().max(1));
                    let code = codes
                        .as_deref()
                        .and_then(|c| c.get(row * words..(row + 1) * words));
                    self.search_parsed(q, Some(emb.row(row)), code, params)?
                }
            };
            row += 1;
            out.push(hits);
        }
        Ok(out)
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
            ..params.clone()
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
        let allowed = match &params.selection {
            Some(sel) => Some(self.allowed_cached(sel)?),
            None => None,
        };
        if allowed.as_ref().is_some_and(|a| a.ids.is_empty()) {
            return Ok(Vec::new());
        }
        let mut pool = Pool::default();

        // The two sides read different data: the lexical search runs while the semantic side
        // scans and reranks (two cores overlap what one thread of each leaves idle). In rayon's
        // pool, as the scan's parts are: a thread of its own beside them was slower (one more
        // thread than cores), and the query's own encoding waits for that pool anyway.
        let lexical_found = || -> Result<Option<Vec<(u64, f32)>>, IndexError> {
            let Some(lex) = self.lexical.as_ref().filter(|_| lexical) else {
                return Ok(None);
            };
            // Phrases filter the results afterwards, and grouping folds neighbours into one:
            // look deeper so that k survive.
            let depth = LEXICAL_CANDIDATES.max(
                params.k
                    * if q.phrases.is_empty() { 2 } else { 20 }
                    * if params.group == Group::None { 1 } else { 3 },
            );
            Ok(Some(lex.search_within(
                &q.text,
                depth,
                allowed.as_ref().map(|a| a.ids.clone()),
            )?))
        };
        let (semantic_done, found) = if semantic {
            rayon::join(
                || self.semantic_side(&mut pool, vector, code, params, allowed.as_ref()),
                lexical_found,
            )
        } else {
            (Ok(()), lexical_found())
        };
        semantic_done?;
        if let Some(found) = found? {
            for (rank, (id, bm25)) in found.into_iter().enumerate() {
                let c = pool.entry(id).or_insert_with(|| Candidate {
                    rows: self.rows_of(id),
                    ..Default::default()
                });
                c.bm25 = Some(bm25);
                c.lexical_rank = Some(rank as u32 + 1);
            }
        }
        // A passage scores its best unit. Candidates with no row scored yet (an index without
        // codes, the lexical side's), those with stale rows and every lexical candidate are
        // scored over all their rows; of those the filter found through some of their rows, the best
        // RESCORE_DEPTH by their best kept row are.
        if let Some(v) = vector {
            let mut open: Vec<&mut Candidate> = Vec::new();
            for c in pool.values_mut() {
                let one_row = c.rows.is_some_and(|(first, end)| end - first <= 1);
                if c.cosine.is_none() || c.bm25.is_some() || c.all_rows {
                    self.score_rows(v, c);
                } else if !one_row {
                    open.push(c);
                }
            }
            let depth = RESCORE_DEPTH.max(2 * params.k);
            let best_first = |a: &&mut Candidate, b: &&mut Candidate| {
                b.cosine
                    .unwrap_or(f32::MIN)
                    .total_cmp(&a.cosine.unwrap_or(f32::MIN))
            };
            if open.len() > depth {
                open.select_nth_unstable_by(depth, best_first);
                open.truncate(depth);
            }
            for c in open {
                self.score_rows(v, c);
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
        let fusion = params.fusion.unwrap_or(self.fusion);
        fuse(&mut cands, params.mode, fusion, semantic, lexical);
        cands.sort_by(|a, b| b.1.score.total_cmp(&a.1.score).then(a.0.cmp(&b.0)));
        if params.mode == Mode::Hybrid && semantic && lexical {
            let mut exact = q.phrases.clone();
            exact.extend(super::lexical::identifiers(&q.text));
            if !exact.is_empty() {
                keep_exact_match(&mut cands, EXACT_PLACE.min(params.k), |id| {
                    Ok(self.db.passage(id)?.is_some_and(|p| holds_all(&p, &exact)))
                })?;
            }
        }

        let wanted = if params.whole_pool {
            cands.len()
        } else {
            params.k
        };
        let code = code.filter(|qc| qc.len() == self.words);
        let mut hits = self.collect(&cands, q, code, params, wanted, true)?;
        // Quoted words that no passage holds as written (an error message remembered loosely,
        // a paraphrased quotation) leave the words to rank alone, and the hits say so.
        if hits.is_empty() && !q.phrases.is_empty() {
            hits = self.collect(&cands, q, code, params, wanted, false)?;
        }
        Ok(hits)
    }

    /// The first `wanted` of the ranked candidates as hits: those still in the index, holding
    /// the query's phrases when `strict`, grouped as asked, each with what matched in it.
    fn collect(
        &self,
        cands: &[(u64, Candidate)],
        q: &ParsedQuery,
        code: Option<&[u64]>,
        params: &SearchParams,
        wanted: usize,
        strict: bool,
    ) -> Result<Vec<Hit>, IndexError> {
        let group = if params.whole_pool {
            Group::None
        } else {
            params.group
        };
        let words = Highlighter::new(&q.text);
        let mut hits: Vec<Hit> = Vec::with_capacity(wanted.min(cands.len()));
        // Per hit: the lines its place covers so far.
        let mut spans: Vec<(u32, u32)> = Vec::new();
        let mut looked_past = 0;
        for &(id, ref c) in cands {
            // A passage removed since this searcher was made simply drops out.
            let Some(p) = self.db.passage(id)? else {
                continue;
            };
            if strict && !q.phrases.is_empty() && !holds_all(&p, &q.phrases) {
                continue;
            }
            let (lo, hi) = (p.start_line, p.end_line.max(p.start_line));
            // The places this passage joins: the same file and, by place, lines that overlap or
            // touch.
            let joins: Vec<usize> = match group {
                Group::None => Vec::new(),
                Group::File => hits
                    .iter()
                    .position(|h| h.path == p.path)
                    .into_iter()
                    .collect(),
                Group::Place => (0..hits.len())
                    .filter(|&i| {
                        // Passages that share lines are one place; ones that only touch are when
                        // they are of one section.
                        let overlap = lo <= spans[i].1 && hi >= spans[i].0;
                        let touch = lo <= spans[i].1.saturating_add(1)
                            && hi.saturating_add(1) >= spans[i].0;
                        hits[i].path == p.path
                            && (overlap || touch && hits[i].headings == p.headings)
                            && extent(spans[i], (lo, hi)) <= PLACE_MAX_LINES
                    })
                    .collect(),
            };
            let member = Member {
                id,
                line: p.start_line,
                end_line: p.end_line,
                score: c.score,
            };
            if let Some((&first, rest)) = joins.split_first() {
                hits[first].more.push(member);
                spans[first] = (spans[first].0.min(lo), spans[first].1.max(hi));
                // A passage between two places joins them, while the place stays within its
                // bound: the lower one folds into the higher (later indexes first, so earlier
                // ones stay put).
                for &j in rest.iter().rev() {
                    if extent(spans[first], spans[j]) > PLACE_MAX_LINES {
                        continue;
                    }
                    let folded = hits.remove(j);
                    let (a, b) = spans.remove(j);
                    spans[first] = (spans[first].0.min(a), spans[first].1.max(b));
                    hits[first].more.push(Member {
                        id: folded.id,
                        line: folded.line,
                        end_line: folded.end_line,
                        score: folded.score,
                    });
                    hits[first].more.extend(folded.more);
                }
                hits[first]
                    .more
                    .sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
                continue;
            }
            if hits.len() == wanted {
                // Full: what follows can only join the places found, and a bounded look
                // further finds the neighbours ranked just below the cut.
                if looked_past >= GROUP_LOOKAHEAD.max(2 * wanted) || group == Group::None {
                    break;
                }
                looked_past += 1;
                continue;
            }
            // Only a ranking by meaning says which unit matched.
            let unit = c
                .best_row
                .filter(|_| params.mode != Mode::Lexical)
                .zip(c.rows)
                .map(|(r, (first, _))| r.saturating_sub(first) as usize);
            // The whole pool is for measuring rankings: nothing is shown.
            let m = if params.whole_pool {
                super::matched::Matched::default()
            } else {
                matched(&p, unit, &words)
            };
            spans.push((lo, hi));
            let mut c = *c;
            // Hits report the plain Hamming distance, whichever filter ran.
            c.distance = c.coded.zip(code).and_then(|(i, qc)| {
                let i = i as usize;
                let row = self.codes.get(i * self.words..(i + 1) * self.words)?;
                Some(row.iter().zip(qc).map(|(a, b)| (a ^ b).count_ones()).sum())
            });
            hits.push(hit(id, p, &c, m, !strict));
        }
        Ok(hits)
    }
}

/// A passage as a hit: where it is, how the candidate scored, what matched in it.
fn hit(
    id: u64,
    p: super::store::PassageRecord,
    c: &Candidate,
    m: super::matched::Matched,
    without_phrases: bool,
) -> Hit {
    let opens_at = [m.snippet.line, m.lines.0, p.start_line]
        .into_iter()
        .find(|&l| l > 0)
        .unwrap_or(1);
    let page = page_at(&p, opens_at);
    Hit {
        page,
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
        without_phrases,
        matched_lines: m.lines,
        snippet: m.snippet,
        more: Vec::new(),
    }
}

/// The page of a paged document that line `line` of passage `p` is on: the passage's first
/// page and the page breaks in its text before that line.
fn page_at(p: &super::store::PassageRecord, line: u32) -> Option<u32> {
    if p.page == 0 {
        return None;
    }
    let into = line.saturating_sub(p.start_line) as usize;
    let breaks = p
        .text
        .lines()
        .take(into)
        .filter(|l| crate::corpus::is_page_break(l))
        .count();
    Some(
        p.page
            .saturating_add(u32::try_from(breaks).unwrap_or(u32::MAX)),
    )
}

/// Whether a passage's heading trail or text holds each of `words` (lower-cased) as written,
/// case aside.
fn holds_all(p: &super::store::PassageRecord, words: &[String]) -> bool {
    let hay = format!("{}\n{}", p.headings.join("\n"), p.text).to_lowercase();
    words.iter().all(|w| hay.contains(w.as_str()))
}

/// The fused place the lexical side's first passage cannot fall below when it holds the query's
/// quoted phrases and identifiers whole: a person who types `max_file_size` or "exact words" is
/// searching by the letter, and the semantic side may not know the name at all.
const EXACT_PLACE: usize = 3;

/// Moves the lexical side's first candidate up to `place` (1-based) in the fused order when
/// `holds` says it holds the query's exact words; it takes the score of the one it passes, so
/// the order stays by score.
fn keep_exact_match(
    cands: &mut Vec<(u64, Candidate)>,
    place: usize,
    holds: impl FnOnce(u64) -> Result<bool, IndexError>,
) -> Result<(), IndexError> {
    let Some(at) = cands.iter().position(|(_, c)| c.lexical_rank == Some(1)) else {
        return Ok(());
    };
    let to = place.max(1) - 1;
    if at <= to || !holds(cands[at].0)? {
        return Ok(());
    }
    let mut moved = cands.remove(at);
    moved.1.score = cands[to].1.score;
    cands.insert(to, moved);
    Ok(())
}

/// Fewer scores than this on one side, and its spread leans on a prior (see [`zscore_scores`]).
const SPREAD_SAMPLES: usize = 10;

/// Z-score fusion of one query's candidates: `alpha × z(cosine) + (1 − alpha) × z(bm25)`.
/// Each side's standard scores are taken over its own best [`ZSCORE_DEPTH`] candidates, so
/// that the balance does not move with how many candidates the filter kept (which grows with
/// the index). A candidate without any of the words has BM25 0; one without a cosine scores
/// the semantic side's mean.
pub fn zscore_scores(cosine: &[Option<f32>], bm25: &[Option<f32>], alpha: f32) -> Vec<f32> {
    let stats = |side: &[Option<f32>]| {
        let mut xs: Vec<f32> = side.iter().flatten().copied().collect();
        if xs.len() > ZSCORE_DEPTH {
            xs.select_nth_unstable_by(ZSCORE_DEPTH, |a, b| b.total_cmp(a));
            xs.truncate(ZSCORE_DEPTH);
        }
        let n = xs.len().max(1) as f32;
        let mean = xs.iter().sum::<f32>() / n;
        let mut var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n;
        // A spread cannot be told from a handful of scores (one lexical match has none, and
        // dividing by a floor of 1e-6 put every other candidate at minus millions, so that the
        // lone match decided the order alone): below SPREAD_SAMPLES scores, the missing ones
        // count as a prior spread of half the mean.
        if xs.len() < SPREAD_SAMPLES {
            let prior = (0.5 * mean).powi(2);
            let missing = (SPREAD_SAMPLES - xs.len()) as f32;
            var = (xs.len() as f32 * var + missing * prior) / SPREAD_SAMPLES as f32;
        }
        (mean, var.sqrt().max(1e-6))
    };
    let (cm, cs) = stats(cosine);
    let (bm, bs) = stats(bm25);
    cosine
        .iter()
        .zip(bm25)
        .map(|(c, b)| {
            let s = c.map_or(0.0, |x| (x - cm) / cs);
            let b = (b.unwrap_or(0.0) - bm) / bs;
            alpha * s + (1.0 - alpha) * b
        })
        .collect()
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
                let cos: Vec<Option<f32>> = cands.iter().map(|(_, c)| c.cosine).collect();
                let bm25: Vec<Option<f32>> = cands.iter().map(|(_, c)| c.bm25).collect();
                for ((_, c), s) in cands.iter_mut().zip(zscore_scores(&cos, &bm25, alpha)) {
                    c.score = s;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An index of `n` clustered unit vectors (64 dimensions), written through the real store
    /// with its ITQ codes fitted as an update fits them.
    fn clustered_index(dir: &std::path::Path, n: usize) -> (crate::index::Index, Vec<Vec<f32>>) {
        clustered_index_from(dir, n, None)
    }

    /// [`clustered_index`], its vectors partitioned into lists from `partition_from` rows.
    fn clustered_index_from(
        dir: &std::path::Path,
        n: usize,
        partition_from: Option<usize>,
    ) -> (crate::index::Index, Vec<Vec<f32>>) {
        let dim = 64;
        let mut index = synthetic_index(dir, dim);
        if let Some(rows) = partition_from {
            index.partition_from(rows, crate::index::update::ROWS_PER_LIST);
        }
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
                    (record(&path, i), v)
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

    /// An empty index for vectors of `dim` dimensions, opened through the real store.
    fn synthetic_index(dir: &std::path::Path, dim: usize) -> crate::index::Index {
        let fp = crate::index::store::Fingerprint::synthetic(dim);
        crate::index::Index::open(dir, &fp).unwrap().0
    }

    /// Passage `i` of `path`: line `i + 1`, text `p{i}`.
    fn record(path: &std::path::Path, i: usize) -> crate::index::store::PassageRecord {
        crate::index::store::PassageRecord {
            path: path.to_path_buf(),
            start_byte: 0,
            end_byte: 1,
            start_line: i as u32 + 1,
            end_line: i as u32 + 1,
            headings: Vec::new(),
            context: Vec::new(),
            text: format!("p{i}"),
            units: Vec::new(),
            page: 0,
            names: Vec::new(),
            links: Vec::new(),
        }
    }

    /// A passage of `path` at lines `lines`, with `text`.
    fn at(
        path: &std::path::Path,
        lines: (u32, u32),
        text: &str,
        units: Vec<(u32, u32)>,
    ) -> crate::index::store::PassageRecord {
        crate::index::store::PassageRecord {
            start_line: lines.0,
            end_line: lines.1,
            text: text.into(),
            units,
            ..record(path, 0)
        }
    }

    /// A unit vector at `deg` degrees in the plane of the first two axes.
    fn angle(deg: f32) -> Vec<f32> {
        let r = deg.to_radians();
        vec![r.cos(), r.sin(), 0.0, 0.0]
    }

    fn semantic(group: Group) -> SearchParams {
        SearchParams {
            mode: Mode::Semantic,
            candidates: Some(usize::MAX),
            k: 10,
            group,
            ..Default::default()
        }
    }

    /// Each live row's stored list, and the list its vector belongs to.
    fn stored_and_assigned_lists(index: &crate::index::Index) -> (Vec<u32>, Vec<u32>) {
        let table = index.store().rows();
        let vectors = index.store().vectors().unwrap();
        let part = index.partition().unwrap();
        let live: Vec<usize> = (0..table.rows()).filter(|&r| !table.dead[r]).collect();
        let stored = live.iter().map(|&r| table.lists[r]).collect();
        let data: Vec<f32> = live
            .iter()
            .flat_map(|&r| vectors.row(r).unwrap().iter().map(|h| h.to_f32()))
            .collect();
        (stored, part.assign(&data))
    }

    #[test]
    fn a_partitioned_index_scans_the_lists_near_the_query_and_finds_what_a_full_scan_finds() {
        let dir = tempfile::tempdir().unwrap();
        let (mut index, queries) = clustered_index_from(dir.path(), 5000, Some(0));
        let lists = index.partition().expect("a partition was fitted").lists();
        assert!(lists > 1);
        // Every row was coded with its list, and a passage stored later is too.
        let (stored, assigned) = stored_and_assigned_lists(&index);
        assert_eq!(stored, assigned);
        let root = dir.path().join("notes");
        let late = root.join("late.md");
        let v: Vec<f32> = queries[3].clone();
        index
            .put_file(&late, &root, vec![(record(&late, 0), v)])
            .unwrap();
        let (stored, assigned) = stored_and_assigned_lists(&index);
        assert_eq!(stored, assigned);
        assert!(
            stored
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len()
                > 1
        );

        // The partition and the lists outlive the process.
        drop(index);
        let index = synthetic_index(dir.path(), 64);
        assert_eq!(index.partition().map(|p| p.lists()), Some(lists));
        let (stored, assigned) = stored_and_assigned_lists(&index);
        assert_eq!(stored, assigned);

        let searcher = index.searcher().unwrap();
        assert_eq!(searcher.lists(), Some(lists));
        let probe = searcher.probe.as_ref().unwrap();
        let params = |share| SearchParams {
            mode: Mode::Semantic,
            candidates: Some(20),
            k: 10,
            group: Group::None,
            probe_share: Some(share),
            ..Default::default()
        };
        let (mut found, mut wanted) = (0, 0);
        for q in &queries {
            // The lists near the query hold a share of the rows, not all of them.
            let scanned: usize = probe.blocks(q, 0.1, 20).iter().map(|r| r.len()).sum();
            assert!(scanned * weighted::BLOCK < searcher.vectors());
            let all: Vec<u64> = searcher
                .search(q, &params(1.0))
                .unwrap()
                .iter()
                .map(|h| h.id)
                .collect();
            let near = searcher.search(q, &params(0.1)).unwrap();
            wanted += all.len();
            found += near.iter().filter(|h| all.contains(&h.id)).count();
            // The best passage of the full scan is found through its list.
            assert_eq!(near.first().map(|h| h.id), all.first().copied());
        }
        assert!(found * 10 >= wanted * 9, "{found} of {wanted}");
    }

    #[test]
    fn an_index_that_grows_large_enough_is_partitioned_at_its_next_fit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut index, _) = clustered_index(dir.path(), 1000);
        assert!(index.partition().is_none());
        // Neither the code length nor the corpus changed: only the size the partition needs.
        index.partition_from(1000, crate::index::update::ROWS_PER_LIST);
        let desc = index.fit_codes(32).unwrap().expect("a fit");
        assert!(desc.contains("lists"), "{desc}");
        assert!(index.partition().is_some());
        let (stored, assigned) = stored_and_assigned_lists(&index);
        assert_eq!(stored, assigned);
        assert!(index.searcher().unwrap().lists().is_some());
        // And once partitioned, the next fit is not due again for that.
        assert!(index.fit_codes(32).unwrap().is_none());
    }

    #[test]
    fn a_learned_head_keeps_its_codes_and_a_grown_index_still_gets_its_lists() {
        let dir = tempfile::tempdir().unwrap();
        let (mut index, _) = clustered_index(dir.path(), 1000);
        let cfg = crate::index::ranked::RankConfig {
            bits: 32,
            hidden: 16,
            ..Default::default()
        };
        let head = crate::index::ranked::RankHead::new(cfg, 64, &candle_core::Device::Cpu).unwrap();
        let coder = Coder::Ranked(Arc::new(head));
        index.install_coder(coder.clone(), 1000).unwrap();
        index.fit_codes(32).unwrap();
        assert!(index.partition().is_none());
        index.partition_from(1000, crate::index::update::ROWS_PER_LIST);
        let desc = index.fit_codes(32).unwrap().expect("lists fitted");
        assert!(desc.contains("ranked head"), "{desc}");
        assert!(index.partition().is_some());
        let (stored, assigned) = stored_and_assigned_lists(&index);
        assert_eq!(stored, assigned);
        // Still the head's codes, all current.
        let searcher = index.searcher().unwrap();
        assert_eq!(searcher.stale(), 0);
        assert!(searcher.lists().is_some());
        let vectors = index.store().vectors().unwrap();
        let first: Vec<f32> = vectors.row(0).unwrap().iter().map(|h| h.to_f32()).collect();
        let code = coder.encode_vectors(&first, 1).unwrap().unwrap();
        assert_eq!(index.store().rows().code(0), &code[..]);
    }

    #[test]
    fn probed_blocks_cover_the_nearest_lists_in_order_and_merge_where_they_touch() {
        let dir = tempfile::tempdir().unwrap();
        let (index, queries) = clustered_index_from(dir.path(), 5000, Some(0));
        let searcher = index.searcher().unwrap();
        let probe = searcher.probe.as_ref().unwrap();
        let total = searcher.vectors();
        for q in &queries[..5] {
            let ranges = probe.blocks(q, 0.3, 10);
            assert!(ranges.windows(2).all(|w| w[0].end < w[1].start));
            let blocks: usize = ranges.iter().map(|r| r.len()).sum();
            assert!(blocks * weighted::BLOCK >= total * 3 / 10);
            // The nearest list is among them.
            let first = probe.partition.ranked(q)[0] as usize;
            let (a, b) = (
                probe.starts[first] as usize,
                probe.starts[first + 1] as usize,
            );
            assert!(
                ranges
                    .iter()
                    .any(|r| r.start * weighted::BLOCK <= a && b <= r.end * weighted::BLOCK)
            );
            // A share of everything is every block.
            let all = probe.blocks(q, 1.0, 10);
            assert_eq!(all, vec![0..total.div_ceil(weighted::BLOCK)]);
        }
    }

    #[test]
    fn neighbouring_passages_of_a_file_fold_into_one_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = synthetic_index(dir.path(), 4);
        let root = dir.path().join("notes");
        let (a, b) = (root.join("a.md"), root.join("b.md"));
        // By closeness to the query (angle 0): a 1-5, b 1-5, a 30-33, a 4-8 (overlaps 1-5),
        // a 9-12 (touches 4-8).
        index
            .put_file(
                &a,
                &root,
                vec![
                    (at(&a, (1, 5), "x", vec![]), angle(0.0)),
                    (at(&a, (4, 8), "x", vec![]), angle(30.0)),
                    (at(&a, (9, 12), "x", vec![]), angle(40.0)),
                    (at(&a, (30, 33), "x", vec![]), angle(20.0)),
                ],
            )
            .unwrap();
        index
            .put_file(&b, &root, vec![(at(&b, (1, 5), "x", vec![]), angle(10.0))])
            .unwrap();
        let searcher = index.searcher().unwrap();
        let q = angle(0.0);
        type Row = (String, u32, Vec<(u32, u32)>);
        let lines = |hits: &[Hit]| -> Vec<Row> {
            hits.iter()
                .map(|h| {
                    let name = h.path.file_name().unwrap().to_string_lossy().into_owned();
                    (
                        name,
                        h.line,
                        h.more.iter().map(|m| (m.line, m.end_line)).collect(),
                    )
                })
                .collect()
        };
        let none = searcher.search(&q, &semantic(Group::None)).unwrap();
        assert_eq!(none.len(), 5);
        assert!(none.iter().all(|h| h.more.is_empty()));
        let place = searcher.search(&q, &semantic(Group::Place)).unwrap();
        assert_eq!(
            lines(&place),
            [
                ("a.md".into(), 1, vec![(4, 8), (9, 12)]),
                ("b.md".into(), 1, vec![]),
                ("a.md".into(), 30, vec![]),
            ]
        );
        let file = searcher.search(&q, &semantic(Group::File)).unwrap();
        assert_eq!(
            lines(&file),
            [
                ("a.md".into(), 1, vec![(30, 33), (4, 8), (9, 12)]),
                ("b.md".into(), 1, vec![])
            ]
        );
        // A hit covers what its members cover.
        assert!(place[0].covers(&a, 10, 10) && !place[0].covers(&a, 20, 25));
        // k counts places: the best 2.
        let two = searcher
            .search(
                &q,
                &SearchParams {
                    k: 2,
                    ..semantic(Group::Place)
                },
            )
            .unwrap();
        assert_eq!(lines(&two), lines(&place[..2]));
    }

    #[test]
    fn a_place_stays_within_its_section_and_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = synthetic_index(dir.path(), 4);
        let root = dir.path().join("notes");
        let a = root.join("a.md");
        let under = |lines: (u32, u32), heading: &str| crate::index::store::PassageRecord {
            headings: vec![heading.to_string()],
            ..at(&a, lines, "x", vec![])
        };
        // 1-5 and 6-9 touch but lie in two sections; 30-35 and 34-38 are of two sections too
        // but share lines (a passage packed across a heading): one place. Then a run of
        // touching passages of one section, 20 lines each, longer than a place may be.
        let mut passages = vec![
            (under((1, 5), "One"), angle(0.0)),
            (under((6, 9), "Two"), angle(1.0)),
            (under((30, 35), "Three"), angle(2.0)),
            (under((34, 38), "Four"), angle(3.0)),
        ];
        for k in 0..10u32 {
            passages.push((
                under((100 + 20 * k, 119 + 20 * k), "Long"),
                angle(10.0 + k as f32),
            ));
        }
        index.put_file(&a, &root, passages).unwrap();
        let searcher = index.searcher().unwrap();
        let hits = searcher
            .search(
                &angle(0.0),
                &SearchParams {
                    k: 20,
                    ..semantic(Group::Place)
                },
            )
            .unwrap();
        let rows: Vec<(u32, u32)> = hits
            .iter()
            .map(|h| {
                let last = h
                    .more
                    .iter()
                    .map(|m| m.end_line)
                    .chain([h.end_line])
                    .max()
                    .unwrap();
                (h.line, last)
            })
            .collect();
        assert_eq!(rows[..3], [(1, 5), (6, 9), (30, 38)], "{rows:?}");
        // The long section is cut into places of at most PLACE_MAX_LINES lines, covering it all.
        let long: Vec<&(u32, u32)> = rows[3..].iter().collect();
        assert!(long.len() >= 2, "{rows:?}");
        assert!(
            long.iter().all(|(a, b)| b - a < PLACE_MAX_LINES),
            "{rows:?}"
        );
        let covered: u32 = hits[3..].iter().map(|h| 1 + h.more.len() as u32).sum();
        assert_eq!(covered, 10);
    }

    #[test]
    fn a_passage_between_two_places_joins_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = synthetic_index(dir.path(), 4);
        let root = dir.path().join("notes");
        let a = root.join("a.md");
        // 1-5 first, 9-12 second (apart), then 4-8, which touches both.
        index
            .put_file(
                &a,
                &root,
                vec![
                    (at(&a, (1, 5), "x", vec![]), angle(0.0)),
                    (at(&a, (4, 8), "x", vec![]), angle(50.0)),
                    (at(&a, (9, 12), "x", vec![]), angle(30.0)),
                ],
            )
            .unwrap();
        let searcher = index.searcher().unwrap();
        let hits = searcher
            .search(&angle(0.0), &semantic(Group::Place))
            .unwrap();
        assert_eq!(hits.len(), 1, "{hits:?}");
        let more: Vec<u32> = hits[0].more.iter().map(|m| m.line).collect();
        assert_eq!((hits[0].line, more), (1, vec![9, 4]), "members best first");
    }

    #[test]
    fn a_hit_shows_and_opens_at_what_matched() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = synthetic_index(dir.path(), 4);
        let root = dir.path().join("notes");
        let a = root.join("a.md");
        let text = "Setup\ninstall the tool\nrun it once\nthen\nconfigure the daemon\n\
                    set the port\nrestart the daemon\ndone";
        let e = |i: usize| {
            let mut v = vec![0f32; 4];
            v[i] = 1.0;
            v
        };
        index
            .put_file(
                &a,
                &root,
                vec![(
                    at(&a, (10, 17), text, vec![(10, 13), (13, 17)]),
                    [e(0), e(1)].concat(),
                )],
            )
            .unwrap();
        index.store.commit_words().unwrap();
        let searcher = index.searcher().unwrap();
        // Semantic: the unit whose vector matched.
        for (q, lines, snippet_line) in [(e(0), (10, 13), 10), (e(1), (13, 17), 13)] {
            let h = &searcher.search(&q, &semantic(Group::Place)).unwrap()[0];
            assert_eq!((h.matched_lines, h.snippet.line), (lines, snippet_line));
            assert!(h.snippet.text.lines().count() <= super::super::matched::SNIPPET_LINES);
        }
        // Hybrid: within the best unit, the lines with the query's words, marked.
        let hybrid = SearchParams {
            candidates: Some(usize::MAX),
            ..Default::default()
        };
        let h = &searcher
            .search_with_vector("daemon port", &e(1), &hybrid)
            .unwrap()[0];
        assert_eq!(h.matched_lines, (13, 17));
        assert_eq!(h.snippet.line, 14, "{:?}", h.snippet);
        let marked: Vec<&str> = h
            .snippet
            .marks
            .iter()
            .map(|&(x, y)| &h.snippet.text[x..y])
            .collect();
        assert_eq!(marked, ["daemon", "port", "daemon"]);
        // Lexical: the lines holding the words.
        let lexical = SearchParams {
            mode: Mode::Lexical,
            ..Default::default()
        };
        let h = &searcher
            .search_with_vector("install", &e(0), &lexical)
            .unwrap()[0];
        assert_eq!((h.matched_lines.0, h.snippet.line), (11, 11));
        assert!(h.snippet.text.starts_with("install the tool"));
    }

    #[test]
    fn filters_apply_before_the_cut_on_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        let (index, queries) = clustered_index(dir.path(), 2000);
        let searcher = index.searcher().unwrap();
        let roots = vec![dir.path().join("notes")];
        let selection = |q: &str| {
            let (_, f) = crate::index::split_filters(q).unwrap();
            Some(Arc::new(Selection::resolve(&f, &roots).unwrap()))
        };
        let name = |h: &Hit| h.path.file_name().unwrap().to_string_lossy().into_owned();
        let exact = |q: &[f32], keep: &dyn Fn(&str) -> bool| -> Vec<(String, u32)> {
            let mut all = searcher
                .search(
                    q,
                    &SearchParams {
                        k: 10_000,
                        ..semantic(Group::None)
                    },
                )
                .unwrap();
            all.retain(|h| keep(&name(h)));
            all.truncate(10);
            all.iter().map(|h| (name(h), h.line)).collect()
        };
        // 50 of 2,000 passages (fewer rows than the filter would pass: all scored exactly).
        // 1,950 (more: the filter scans with a mask). Either way the best 10 of those kept.
        for (filter, keep) in [
            (
                "path:f3.*",
                &(|n: &str| n == "f3.md") as &dyn Fn(&str) -> bool,
            ),
            ("-path:f3.*", &|n: &str| n != "f3.md"),
        ] {
            let params = SearchParams {
                selection: selection(filter),
                candidates: None,
                ..semantic(Group::None)
            };
            let mut found = 0;
            for q in &queries[..10] {
                let hits = searcher.search(q, &params).unwrap();
                assert_eq!(hits.len(), 10, "{filter}");
                assert!(hits.iter().all(|h| keep(&name(h))), "{filter}");
                let want = exact(q, keep);
                found += hits
                    .iter()
                    .filter(|h| want.contains(&(name(h), h.line)))
                    .count();
            }
            assert!(found >= 95, "{filter}: recall@10 {found}/100");
        }
        // The lexical side: every file has a passage "p7"; only f3's may answer, even at k 1.
        let lexical = SearchParams {
            mode: Mode::Lexical,
            k: 1,
            selection: selection("path:f3.*"),
            ..Default::default()
        };
        let hits = searcher
            .search_with_vector("p7", &queries[0], &lexical)
            .unwrap();
        assert_eq!(
            hits.iter().map(|h| (name(h), h.line)).collect::<Vec<_>>(),
            [("f3.md".to_string(), 8)]
        );
        // Filters that keep nothing answer nothing.
        let none = SearchParams {
            selection: selection("path:nothing.*"),
            ..Default::default()
        };
        assert!(
            searcher
                .search_with_vector("p7", &queries[0], &none)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn zscore_fusion_does_not_move_with_the_weak_candidates_the_filter_adds() {
        let cand = |cosine: f32, bm25: Option<f32>| Candidate {
            cosine: Some(cosine),
            bm25,
            ..Default::default()
        };
        // Two contenders, a few word matches, and semantic candidates the filter kept.
        let pool = |weak: usize| {
            let mut c = vec![(1, cand(0.8, Some(2.0))), (2, cand(0.6, Some(6.0)))];
            c.extend((0..5).map(|i| (10 + i, cand(0.3, Some(1.0 + i as f32)))));
            c.extend((0..150).map(|i| (100 + i, cand(0.4 + i as f32 / 1500.0, None))));
            c.extend((0..weak).map(|i| (1000 + i as u64, cand(0.1, None))));
            fuse(&mut c, Mode::Hybrid, Fusion::default(), true, true);
            (c[0].1.score, c[1].1.score)
        };
        // A larger index keeps more weak candidates; the two scores must not change.
        assert_eq!(pool(0), pool(5000));
    }

    #[test]
    fn zscore_weights_move_the_ranking_between_the_sides() {
        // Candidate 0 is the semantic side's clear winner, 1 the lexical side's; 2 has no words.
        let cosine = [Some(0.9), Some(0.5), Some(0.4), Some(0.3)];
        let bm25 = [Some(1.0), Some(9.0), None, Some(0.5)];
        let best = |alpha| {
            let s = zscore_scores(&cosine, &bm25, alpha);
            (0..s.len()).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap()
        };
        assert_eq!(best(1.0), 0);
        assert_eq!(best(0.0), 1);
        // At weight 1 the words do not count at all: the order is the cosine order.
        let s = zscore_scores(&cosine, &bm25, 1.0);
        assert!(s.windows(2).all(|w| w[0] > w[1]), "{s:?}");
        // Without a cosine a candidate gets the semantic side's mean, not its best.
        let s = zscore_scores(&[None, Some(1.0), Some(0.0)], &[Some(1.0), None, None], 1.0);
        assert_eq!(s[0], 0.0);
    }

    #[test]
    fn fusion_never_drops_an_exact_match_the_lexical_side_ranked_first() {
        // Ten passages the semantic side prefers, then the lexical side's first.
        let pool = || -> Vec<(u64, Candidate)> {
            (0..12)
                .map(|i| {
                    let c = Candidate {
                        score: 1.0 - i as f32 / 20.0,
                        lexical_rank: (i == 9).then_some(1),
                        ..Default::default()
                    };
                    (i, c)
                })
                .collect()
        };
        let order = |c: &[(u64, Candidate)]| c.iter().map(|x| x.0).collect::<Vec<_>>();
        let mut c = pool();
        keep_exact_match(&mut c, EXACT_PLACE, |id| Ok(id == 9)).unwrap();
        assert_eq!(order(&c)[..4], [0, 1, 9, 2]);
        assert!(c.windows(2).all(|w| w[0].1.score >= w[1].1.score));
        // Asked for one result, it is that one.
        let mut c = pool();
        keep_exact_match(&mut c, 1, |_| Ok(true)).unwrap();
        assert_eq!(c[0].0, 9);
        // A first place without the exact words, or already high enough, stays where it is.
        let mut c = pool();
        keep_exact_match(&mut c, EXACT_PLACE, |_| Ok(false)).unwrap();
        assert_eq!(order(&c), order(&pool()));
        let mut c = pool();
        keep_exact_match(&mut c, 11, |_| Ok(true)).unwrap();
        assert_eq!(order(&c), order(&pool()));
    }

    #[test]
    fn a_lone_lexical_match_counts_without_deciding_the_order_alone() {
        // Twenty candidates, the first the semantic side's clear winner; one holds the word.
        let cosine: Vec<Option<f32>> = (0..20)
            .map(|i| Some(if i == 0 { 0.95 } else { 0.51 - 0.01 * i as f32 }))
            .collect();
        let mut bm25 = vec![None; 20];
        bm25[10] = Some(7.5);
        let s = zscore_scores(&cosine, &bm25, 0.4);
        assert!(s.iter().all(|x| x.is_finite() && x.abs() < 10.0), "{s:?}");
        // The match is lifted above its semantic neighbours...
        assert!(s[10] > s[9] && s[10] > s[11], "{s:?}");
        // ...but a clear semantic winner still leads.
        let best = (0..s.len()).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap();
        assert_eq!(best, 0, "{s:?}");
        // Two matches of one score have no spread either.
        bm25[3] = Some(7.5);
        let s = zscore_scores(&cosine, &bm25, 0.4);
        assert!(s.iter().all(|x| x.abs() < 10.0), "{s:?}");
    }

    #[test]
    fn searches_fuse_as_the_corpus_chose() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = synthetic_index(dir.path(), 4);
        let choice = |adopted| crate::index::FusionChoice {
            semantic_weight: 0.7,
            adopted,
            questions: vec![("link".into(), 50)],
            check: Some((0.5, 0.6)),
            why: None,
            curve: Vec::new(),
            passages: 1,
        };
        assert_eq!(index.searcher().unwrap().fusion, Fusion::default());
        index.meta.fusion = Some(choice(true));
        assert_eq!(
            index.searcher().unwrap().fusion,
            Fusion::Zscore { alpha: 0.7 }
        );
        index.meta.fusion = Some(choice(false));
        assert_eq!(index.searcher().unwrap().fusion, Fusion::default());
    }

    #[test]
    fn a_passage_is_scored_by_its_best_unit() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = synthetic_index(dir.path(), 4);
        let root = dir.path().join("notes");
        let path = root.join("a.md");
        let e = |i: usize| {
            let mut v = vec![0f32; 4];
            v[i] = 1.0;
            v
        };
        // Passage 0 is matched on two units (axes 0 and 1), passage 1 on one (axis 2), passage
        // 2 on one (between axes 1 and 2).
        let mixed = vec![0.0, 0.6, 0.8, 0.0];
        let passages = vec![
            (record(&path, 0), [e(0), e(1)].concat()),
            (record(&path, 1), e(2)),
            (record(&path, 2), mixed),
        ];
        index.put_file(&path, &root, passages).unwrap();
        index.fit_codes(32).unwrap();
        let searcher = index.searcher().unwrap();
        assert_eq!((searcher.len(), searcher.vectors()), (3, 4));
        // Every coded row carries its passage's whole span.
        for &(id, first, end) in searcher
            .passages
            .iter()
            .map(|p| &p.0)
            .chain(&searcher.stale)
        {
            assert_eq!(searcher.rows_of(id), Some((first, end)));
        }
        assert_eq!(searcher.spans[0].2 - searcher.spans[0].1, 2);
        for candidates in [Some(1), Some(usize::MAX)] {
            let params = SearchParams {
                mode: Mode::Semantic,
                candidates,
                ..Default::default()
            };
            // The second unit of passage 0 is the query: passage 0 comes first, at cosine 1.
            let hits = searcher.search(&e(1), &params).unwrap();
            assert_eq!(hits[0].line, 1, "{candidates:?}");
            assert!((hits[0].cosine.unwrap() - 1.0).abs() < 1e-3);
            // Its first unit, too.
            let hits = searcher.search(&e(0), &params).unwrap();
            assert_eq!(hits[0].line, 1, "{candidates:?}");
        }
        let all = SearchParams {
            mode: Mode::Semantic,
            candidates: Some(usize::MAX),
            k: 10,
            group: Group::None,
            ..Default::default()
        };
        // Found by its words only (the filter kept passage 2's row): scored by its best unit,
        // not its first.
        let hybrid = SearchParams {
            mode: Mode::Hybrid,
            candidates: Some(1),
            k: 10,
            ..Default::default()
        };
        let hits = searcher
            .search_with_vector("p0", &[0.0, 0.6, 0.8, 0.0], &hybrid)
            .unwrap();
        let p0 = hits.iter().find(|h| h.line == 1).expect("the word match");
        assert!(p0.lexical_rank.is_some() && p0.distance.is_none());
        assert!((p0.cosine.unwrap() - 0.6).abs() < 1e-3, "{:?}", p0.cosine);
        let hits = searcher.search(&e(1), &all).unwrap();
        assert_eq!(hits.len(), 3, "one hit per passage, not per unit");
        let cos: Vec<f32> = hits.iter().map(|h| h.cosine.unwrap()).collect();
        assert!(
            (cos[1] - 0.6).abs() < 1e-3 && cos[2].abs() < 1e-3,
            "{cos:?}"
        );
        // Replacing the file retires every unit of the old passages.
        index
            .put_file(&path, &root, vec![(record(&path, 5), e(3))])
            .unwrap();
        let searcher = index.searcher().unwrap();
        assert_eq!((searcher.len(), searcher.vectors()), (1, 1));
        assert_eq!(searcher.search(&e(1), &all).unwrap()[0].line, 6);
    }

    #[test]
    fn a_passage_the_filter_found_through_a_weaker_unit_is_scored_by_its_best() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = synthetic_index(dir.path(), 4);
        let root = dir.path().join("notes");
        let path = root.join("a.md");
        let unit = |v: [f32; 4]| {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.map(|x| x / n).to_vec()
        };
        let query = unit([1.0, 0.2, 0.1, 0.05]);
        // Passage 0: a unit near the query, then the query itself. Its two rows get the same
        // code, so a filter keeping one row keeps the first (ties go to the smaller row).
        let near = unit([1.0, 0.25, 0.1, 0.05]);
        let passages = vec![
            (record(&path, 0), [near.clone(), query.clone()].concat()),
            (record(&path, 1), unit([0.0, 1.0, 0.0, 0.0])),
            (record(&path, 2), unit([0.0, 0.0, 1.0, 0.2])),
            (record(&path, 3), unit([-1.0, 0.0, 0.3, 0.0])),
        ];
        index.put_file(&path, &root, passages).unwrap();
        index.fit_codes(32).unwrap();
        let searcher = index.searcher().unwrap();
        let w = searcher.words;
        assert_eq!(
            searcher.codes[..w],
            searcher.codes[w..2 * w],
            "the test needs both units of passage 0 under one code"
        );
        let params = SearchParams {
            mode: Mode::Semantic,
            candidates: Some(1),
            ..Default::default()
        };
        let hits = searcher.search(&query, &params).unwrap();
        assert_eq!(hits[0].line, 1);
        let cosine = hits[0].cosine.unwrap();
        assert!(
            (cosine - 1.0).abs() < 1e-3,
            "scored by the kept unit: {cosine}"
        );
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
                ..exact.clone()
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
    fn the_whole_pool_is_the_same_search_continued() {
        let dir = tempfile::tempdir().unwrap();
        let (index, queries) = clustered_index(dir.path(), 1000);
        let searcher = index.searcher().unwrap();
        let params = SearchParams {
            mode: Mode::Semantic,
            candidates: Some(300),
            ..Default::default()
        };
        let all = SearchParams {
            whole_pool: true,
            ..params.clone()
        };
        for q in queries.iter().take(5) {
            let best = searcher.search(q, &params).unwrap();
            let pool = searcher.search(q, &all).unwrap();
            assert_eq!(best.len(), 10);
            // Every passage the 300 candidate rows belong to, not only the best 10 ...
            assert!(pool.len() > 100, "{}", pool.len());
            // ... ranked as the best 10 were: those come first, in their order and scores.
            let ids = |h: &[Hit]| h.iter().map(|h| (h.id, h.score)).collect::<Vec<_>>();
            assert_eq!(ids(&pool[..10]), ids(&best));
            assert!(pool.windows(2).all(|w| w[0].score >= w[1].score));
        }
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
