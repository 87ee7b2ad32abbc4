//! Fitting the fusion of the two rankers to the corpus.
//!
//! One weight cannot suit every corpus. Where notes are looked up by their own words (names,
//! identifiers, headings) BM25 is the stronger side; where people ask in other words than the
//! note's (a FAQ, prose) the semantic side is; the dev sets and the held-out sets disagreed on
//! which to trust (docs/BENCHMARKS.md). The notes ask questions of themselves for free
//! ([`crate::corpus::questions`]): a link's sentence should find what it points to, a title or
//! alias its note. The weight that answers them best is kept only where each half of them (odd
//! and even) agrees that it beats the default, and searches move halfway to it ([`choose`]).
//! Questions are asked of the index itself, so each side's scores are the ones searches will
//! see, with the passages that hold the question left out of its answers. Everything is in a
//! fixed order, so a corpus and its index always choose the same.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::corpus::{self, Question, QuestionKind};
use crate::encoder::Encoder;

use super::search::{DEFAULT_SEMANTIC_WEIGHT, Mode, SearchParams, zscore_scores};
use super::store::FusionChoice;
use super::{Index, IndexError};

/// Semantic weights tried.
pub const GRID: [f32; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
/// Fewer answerable questions than this, and the corpus keeps the default: half of 40 cannot
/// tell weights apart.
pub const MIN_QUESTIONS: usize = 40;
/// Questions asked at most: a few seconds of queries.
pub const MAX_QUESTIONS: usize = 1_000;
/// Questions looked at at most (some have no answer left in the index).
const MAX_TRIED: usize = 4 * MAX_QUESTIONS;
/// Questions taken from one file at most, so that one long page of links does not speak for
/// the corpus.
const PER_FILE: usize = 16;
/// Files read for questions at most, and their text in bytes at most (files are read into
/// memory together, since a link's target may be any of them).
const MAX_FILES: usize = 5_000;
const MAX_BYTES: u64 = 64 << 20;
/// The corpus is fitted again once its live passages have changed by this fraction.
const REFIT_CHANGE: f64 = 0.25;
/// Results a question is judged on (MRR@10).
const DEPTH: usize = 10;
/// Questions encoded in one batch (the stop flag is looked at between batches).
const ENCODED_TOGETHER: usize = 64;
/// A longer question (a title of a whole paragraph, an odd link) is not one a person types.
const MAX_QUESTION_BYTES: usize = 1024;

/// Whether the index should fit its fusion: it never did, or its number of passages has moved
/// by a quarter since (a cheap test on every update; a corpus rewritten at the same size keeps
/// its fit until the next training, whose new index fits afresh).
pub fn due(index: &Index) -> bool {
    let now = index.store().passage_count();
    match &index.meta().fusion {
        Some(c) if c.passages > 0 => {
            let then = c.passages as f64;
            (now as f64 - then).abs() / then >= REFIT_CHANGE
        }
        _ => now > 0,
    }
}

/// One question's candidates as the product ranked them: each side's score and whether it is
/// an answer.
#[derive(Debug, Clone, Default)]
pub struct Pool {
    pub cosine: Vec<Option<f32>>,
    pub bm25: Vec<Option<f32>>,
    pub answer: Vec<bool>,
}

impl Pool {
    /// The reciprocal rank of the first answer when fused with `weight` (0 past [`DEPTH`]);
    /// ties keep the pool's order.
    fn reciprocal_rank(&self, weight: f32) -> f32 {
        let scores = zscore_scores(&self.cosine, &self.bm25, weight);
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        order
            .iter()
            .take(DEPTH)
            .position(|&i| self.answer[i])
            .map_or(0.0, |r| 1.0 / (r + 1) as f32)
    }
}

/// The default weight, not adopted, for `why`.
fn unfitted(why: String) -> FusionChoice {
    FusionChoice {
        semantic_weight: DEFAULT_SEMANTIC_WEIGHT,
        adopted: false,
        questions: Vec::new(),
        check: None,
        why: Some(why),
        curve: Vec::new(),
        passages: 0,
    }
}

/// What a fit that failed with `why` leaves: the fusion in force before it (or the default), so
/// that the next fit waits for the corpus to change as after a success.
pub fn failed(index: &Index, why: &str) -> FusionChoice {
    let why = format!("the fit failed: {why}");
    let mut c = match &index.meta().fusion {
        Some(c) if c.adopted => c.clone(),
        Some(c) => FusionChoice {
            why: Some(why),
            ..c.clone()
        },
        None => unfitted(why),
    };
    c.passages = index.store().passage_count();
    c
}

/// Asks the corpus's questions of `index` and chooses its fusion; the caller stores it. `None`
/// when `cancel` was raised, or when a folder of the index is missing (an unmounted drive's
/// notes would be missing from the questions; the fit in force stays).
pub fn fit_fusion(
    index: &Index,
    encoder: &Encoder,
    cancel: &AtomicBool,
) -> Result<Option<FusionChoice>, IndexError> {
    let passages = index.store().passage_count();
    if index.meta().roots.iter().any(|r| !r.exists()) {
        return Ok(None);
    }
    let asked = questions(index)?;
    if cancel.load(Ordering::Acquire) {
        return Ok(None);
    }
    let searcher = index.searcher()?;
    let params = SearchParams {
        k: DEPTH,
        mode: Mode::Hybrid,
        whole_pool: true,
        ..Default::default()
    };
    // The questions that still have an answer in the index, with their answers.
    let mut judged = Vec::new();
    for q in asked.iter().take(MAX_TRIED) {
        if judged.len() == MAX_QUESTIONS {
            break;
        }
        if let Some(j) = answers(index, q)? {
            judged.push((q, j));
        }
    }
    let mut pools = Vec::with_capacity(judged.len());
    let mut kinds: Vec<(QuestionKind, usize)> = Vec::new();
    for chunk in judged.chunks(ENCODED_TOGETHER) {
        if cancel.load(Ordering::Acquire) {
            return Ok(None);
        }
        // Quote marks in a sentence would turn its words into a phrase filter.
        let texts: Vec<String> = chunk
            .iter()
            .map(|(q, _)| q.text.replace('"', " "))
            .collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let answered = searcher.query_many(encoder, &texts, &params)?;
        for ((q, (answers, asking)), hits) in chunk.iter().zip(answered) {
            let mut pool = Pool::default();
            for h in hits.iter().filter(|h| !asking.contains(&h.id)) {
                pool.cosine.push(h.cosine);
                pool.bm25.push(h.bm25);
                pool.answer.push(answers.contains(&h.id));
            }
            pools.push(pool);
            match kinds.iter_mut().find(|(k, _)| *k == q.kind) {
                Some((_, n)) => *n += 1,
                None => kinds.push((q.kind, 1)),
            }
        }
    }
    kinds.sort();
    let mut choice = choose(&pools);
    choice.questions = kinds
        .into_iter()
        .map(|(k, n)| (k.name().to_string(), n))
        .collect();
    choice.passages = passages;
    Ok(Some(choice))
}

/// Picks the weight the questions answer best, and keeps it only where it beats the default on
/// each half of them (odd and even), so that no one half's accident decides. Searches then use
/// the weight halfway from the default towards it (on the grid, rounded towards the default):
/// the questions are the notes' own sentences, not the user's queries, and on the dev sets
/// whose notes link (docs/BENCHMARKS.md) the halfway weight held where the full step overshot.
pub fn choose(pools: &[Pool]) -> FusionChoice {
    if pools.len() < MIN_QUESTIONS {
        return unfitted(format!(
            "too few questions to fit ({}, needs {MIN_QUESTIONS})",
            pools.len()
        ));
    }
    let mut choice = unfitted(String::new());
    // MRR@10 over the questions from `first` on, every `step`th.
    let mrr = |first: usize, step: usize, w: f32| {
        let (sum, n) = pools
            .iter()
            .skip(first)
            .step_by(step)
            .fold((0.0f64, 0usize), |(s, n), p| {
                (s + p.reciprocal_rank(w) as f64, n + 1)
            });
        (sum / n.max(1) as f64) as f32
    };
    choice.curve = GRID
        .iter()
        .map(|&w| (w, mrr(0, 2, w), mrr(1, 2, w)))
        .collect();
    let default = DEFAULT_SEMANTIC_WEIGHT;
    let nearer = |a: f32, b: f32| (a - default).abs() < (b - default).abs();
    // Ties go to the weight nearest the default.
    let mut best = default;
    let mut best_mrr = mrr(0, 1, best);
    for w in GRID {
        let m = mrr(0, 1, w);
        if m > best_mrr || (m == best_mrr && nearer(w, best)) {
            (best, best_mrr) = (w, m);
        }
    }
    let halfway = GRID
        .iter()
        .copied()
        .filter(|&w| (w - default).abs() <= (best - default).abs() / 2.0 + 1e-4)
        .filter(|&w| (w - default) * (best - default) >= 0.0)
        .fold(default, |a, w| if nearer(a, w) { w } else { a });
    choice.check = Some((mrr(0, 1, default), mrr(0, 1, halfway)));
    let beats = |w: f32| (0..2).all(|h| mrr(h, 2, w) > mrr(h, 2, default));
    if best == default {
        choice.why = Some("the default answered the questions best".into());
    } else if !beats(best) {
        choice.why = Some(format!(
            "{best:.1} answered them best, but not on both halves"
        ));
    } else if halfway == default {
        choice.why = Some(format!(
            "{best:.1} answered them best, too near the default to move halfway"
        ));
    } else if !beats(halfway) {
        choice.why = Some(format!(
            "{best:.1} answered them best, but halfway to it ({halfway:.1}) did not beat the default on both halves"
        ));
    } else {
        choice.semantic_weight = halfway;
        choice.adopted = true;
        choice.why = None;
    }
    choice
}

/// The questions the fit asks of the index (every root is present: see [`fit_fusion`]): links
/// of every syntax and front matter titles, the half that training does not teach
/// ([`Question::teaches`]). A question heading is not asked: its words are in the very passage
/// that answers it.
fn questions(index: &Index) -> Result<Vec<Question>, IndexError> {
    Ok(notes_questions(index.meta())?
        .into_iter()
        .filter(|q| q.kind != QuestionKind::QuestionHeading && !q.teaches())
        .collect())
}

/// Every question the notes of `meta`'s folders ask of themselves ([`corpus::questions`]) that
/// is short enough to be one a person types, from a bounded sample of the files, in a fixed
/// pseudo-random order: what the fit asks and what training teaches.
pub fn notes_questions(meta: &super::IndexMeta) -> Result<Vec<Question>, IndexError> {
    let present: Vec<PathBuf> = meta.roots.iter().filter(|r| r.exists()).cloned().collect();
    if present.is_empty() {
        return Ok(Vec::new());
    }
    let cfg = meta.corpus.to_config();
    let mut files = corpus::walk(&present, &cfg)?.files;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    crate::rng::shuffle(&mut files, &mut crate::rng::SplitMix64::new(0xf05e));
    files.truncate(MAX_FILES);
    let mut bytes = 0u64;
    files.retain(|f| {
        bytes += f.size;
        bytes <= MAX_BYTES
    });
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let docs: Vec<(PathBuf, corpus::Document)> = files
        .into_iter()
        .filter_map(|f| Some((f.path.clone(), corpus::read_document(&f.path, &cfg).ok()?)))
        .collect();
    let mut qs: Vec<Question> = corpus::questions(&docs, PER_FILE)
        .into_iter()
        .filter(|q| q.text.len() <= MAX_QUESTION_BYTES)
        .collect();
    crate::rng::shuffle(&mut qs, &mut crate::rng::SplitMix64::new(0xa5c));
    Ok(qs)
}

/// Passage ids: those that answer a question, and those that ask it.
type Judged = (HashSet<u64>, HashSet<u64>);

/// The passages that answer `q` (those of its target overlapping the target's lines) and those
/// that ask it (holding any line it quotes); `None` when nothing is left to find.
fn answers(index: &Index, q: &Question) -> Result<Option<Judged>, IndexError> {
    let store = index.store();
    let overlaps = |p: &super::store::PassageRecord, (first, last): (usize, usize)| {
        p.start_line as usize <= last && first <= p.end_line as usize
    };
    let Some(target) = store.file(&q.target)? else {
        return Ok(None);
    };
    let mut asking = HashSet::new();
    if let Some(lines) = q.asked_in
        && let Some(f) = store.file(&q.source)?
    {
        for &id in &f.passages {
            if let Some(p) = store.passage(id)?
                && overlaps(&p, lines)
            {
                asking.insert(id);
            }
        }
    }
    let mut answers = HashSet::new();
    for &id in &target.passages {
        if asking.contains(&id) {
            continue;
        }
        if let Some(p) = store.passage(id)?
            && q.lines.is_none_or(|lines| overlaps(&p, lines))
        {
            answers.insert(id);
        }
    }
    Ok((!answers.is_empty()).then_some((answers, asking)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool where the answer is the semantic side's first and the lexical side's `lex_rank`th
    /// of `n` candidates.
    fn pool(n: usize, lex_rank: usize) -> Pool {
        let mut p = Pool::default();
        for i in 0..n {
            p.cosine.push(Some(0.8 - 0.01 * i as f32));
            let b = if i == 0 {
                lex_rank
            } else if i <= lex_rank {
                i - 1
            } else {
                i
            };
            p.bm25.push(Some(20.0 - b as f32));
            p.answer.push(i == 0);
        }
        p
    }

    #[test]
    fn a_corpus_too_small_to_fit_keeps_the_default_and_says_so() {
        let pools: Vec<Pool> = (0..MIN_QUESTIONS - 1).map(|_| pool(30, 5)).collect();
        let c = choose(&pools);
        assert!(!c.adopted);
        assert_eq!(c.semantic_weight, DEFAULT_SEMANTIC_WEIGHT);
        assert!(
            c.why.as_deref().unwrap().contains("too few questions"),
            "{c:?}"
        );
        assert!(c.describe().contains("(the default)"), "{}", c.describe());
    }

    #[test]
    fn questions_the_semantic_side_answers_move_the_weight_its_way() {
        let pools: Vec<Pool> = (0..60).map(|i| pool(30, 8 + i % 5)).collect();
        let c = choose(&pools);
        assert!(c.adopted, "{c:?}");
        assert!(c.semantic_weight > DEFAULT_SEMANTIC_WEIGHT, "{c:?}");
        let (default, fitted) = c.check.unwrap();
        assert!(fitted > default);
    }

    #[test]
    fn the_fit_is_deterministic() {
        let pools: Vec<Pool> = (0..80).map(|i| pool(40, i % 7)).collect();
        assert_eq!(choose(&pools), choose(&pools));
    }
}
