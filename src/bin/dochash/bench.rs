//! `dochash bench …`: measurements that belong in docs/BENCHMARKS.md, never in tests.
//! Every data set is passed as a path; nothing here needs the repository's data.

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use dochash::encoder::{BatchLimits, Encoder, Pooling, Precision};
use dochash::index::search::{Filter, Group, Mode, SearchParams};
use dochash::index::weighted::{self, WeightedQuery};
use dochash::index::{Coder, hamming};
use dochash::model::ModelFiles;
use dochash::rng::SplitMix64;
use dochash::train::dhim::{self, DhimConfig};
use dochash::train::metrics;
use dochash::train::states::CorpusStates;

use crate::cli::{BenchCmd, EncodeArgs, FreshnessArgs, Global, HammingArgs, RecallArgs};
use crate::shared;

pub fn run(g: &Global, cmd: &BenchCmd) -> Result<ExitCode> {
    match cmd {
        BenchCmd::Recall(a) => recall(g, a),
        BenchCmd::Hamming(a) => hamming_scan(a),
        BenchCmd::Search(a) => crate::bench_search::run(a),
        BenchCmd::Freshness(a) => freshness(g, a),
        BenchCmd::Encode(a) => encode(g, a),
    }
    .map(|_| ExitCode::SUCCESS)
}

/// Texts of a `{"label","text"}` JSONL file, at most `limit` of them.
pub fn read_jsonl(path: &Path, limit: Option<usize>) -> Result<Vec<(String, String)>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))?;
        let text = v["text"]
            .as_str()
            .with_context(|| format!("{} line {}: no \"text\" string", path.display(), i + 1))?;
        let label = v["label"].as_str().unwrap_or("").to_string();
        out.push((label, text.to_string()));
    }
    Ok(out)
}

/// Unit-length mean-pooled embeddings of `texts`, cached in `cache` (keyed by the model, the
/// length limit and a hash of the texts) because encoding a corpus on a CPU takes minutes.
pub fn embed_cached(
    g: &Global,
    files: &ModelFiles,
    enc: &Encoder,
    texts: &[&str],
    cache: Option<&Path>,
) -> Result<Vec<f32>> {
    let key = shared::encoding_key(files, enc, texts);
    let file = cache.map(|d| d.join(format!("emb-{key}.f32")));
    if let Some(f) = &file
        && let Ok(mut fh) = std::fs::File::open(f)
    {
        let mut bytes = Vec::new();
        fh.read_to_end(&mut bytes)?;
        if bytes.len() == texts.len() * enc.dim() * 4 {
            return Ok(bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect());
        }
    }
    if let Some(f) = &file {
        shared::note(
            g,
            format!("embedding {} texts into {}", texts.len(), f.display()),
        );
    }
    let started = Instant::now();
    let mut data = Vec::with_capacity(texts.len() * enc.dim());
    let mut tokens = 0usize;
    for (k, chunk) in texts.chunks(512).enumerate() {
        let e = enc.embed(chunk, Pooling::Mean, true, BatchLimits::default())?;
        tokens += enc
            .tokenize(chunk)?
            .iter()
            .map(|t| t.ids.len())
            .sum::<usize>();
        data.extend_from_slice(&e.data);
        shared::note(
            g,
            format!(
                "  embedded {}/{} texts ({:.0} tokens/s)",
                ((k + 1) * 512).min(texts.len()),
                texts.len(),
                tokens as f64 / started.elapsed().as_secs_f64()
            ),
        );
    }
    if let Some(f) = &file {
        if let Some(d) = f.parent() {
            std::fs::create_dir_all(d).ok();
        }
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(f).with_context(|| format!("cannot write {}", f.display()))?,
        );
        for x in &data {
            out.write_all(&x.to_le_bytes())?;
        }
    }
    Ok(data)
}

pub fn parse_list(s: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|x| {
            x.trim()
                .parse::<usize>()
                .with_context(|| format!("bad number {x:?}"))
        })
        .collect()
}

/// Recall@k of the product's semantic search (Hamming filter + cosine rerank, the owner's own
/// `Searcher`) against exact cosine top-k: the corpus's embeddings are written into a real index
/// (`Index::put_file`, codes fitted as an update fits them), one per text.
fn recall(g: &Global, a: &RecallArgs) -> Result<()> {
    let files = shared::resolve_model(g)?;
    let enc = shared::load_encoder(g, &files, Some(a.max_len))?;
    let corpus = read_jsonl(&a.corpus, None)?;
    let queries = read_jsonl(&a.queries, Some(a.limit_queries))?;
    let ct: Vec<&str> = corpus.iter().map(|(_, t)| t.as_str()).collect();
    let qt: Vec<&str> = queries.iter().map(|(_, t)| t.as_str()).collect();
    shared::note(
        g,
        format!("corpus {} texts, {} queries", ct.len(), qt.len()),
    );
    let qs = embed_cached(g, &files, &enc, &qt, a.cache.as_deref())?;
    if let (Some(n), true) = (a.compose, a.units) {
        anyhow::ensure!(
            a.target.is_none(),
            "--units searches through the product's searcher: no --target"
        );
        return composed_units(g, a, &files, &enc, &ct, &qs, n);
    }
    let db = match a.compose {
        Some(n) => {
            anyhow::ensure!(
                a.target.is_some() && a.coders.trim() == "itq",
                "--compose needs --target and --coders itq (composed passages have no text to \
                 train a head on)"
            );
            compose(g, &files, &enc, &ct, n, a.cache.as_deref())?
        }
        None => embed_cached(g, &files, &enc, &ct, a.cache.as_deref())?,
    };
    let dim = enc.dim();
    let n = db.len() / dim.max(1);
    let k = a.k;
    if let Some(target) = a.target {
        let data = Embedded {
            texts: &ct,
            queries: &qt,
            db: &db,
            qs: &qs,
            dim,
        };
        return candidates_for_target(g, a, &enc, &data, target);
    }
    let tmp = tempfile::tempdir()?;

    for bits in parse_list(&a.bits)? {
        let dir = tmp.path().join(format!("b{bits}"));
        let index = crate::bench_search::write_index(&dir, dim, n, bits, |i| {
            (ct[i].to_string(), db[i * dim..(i + 1) * dim].to_vec())
        })?;
        let searcher = index.searcher()?;
        let exact = exact_tops(&index, &qs, dim, k)?;
        for c in candidate_counts(a, n, k, bits)? {
            let (r, p95) = searched_recall(&searcher, &qs, dim, &exact, k, c, None)?;
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"bits": bits, "candidates": c, "n": n, "queries": qt.len(),
                        "k": k, "recall": r, "p95_ms": p95})
                );
            } else {
                println!(
                    "bits {bits:>3}  candidates {c:>6}  recall@{k} {r:.4}  (n={n}, {} queries, p95 {p95:.2} ms)",
                    qt.len()
                );
            }
        }
    }
    Ok(())
}

/// Pieces of a text no longer than [`PIECE_WORDS`] × 2 words: its sentences (ending at `.`, `!`
/// or `?` before white space, or at a blank line), a longer one (or a text without punctuation,
/// such as the preprocessed 20NG) cut into runs of [`PIECE_WORDS`] words; at least four words.
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for s in sentence_spans(text) {
        if s.split_whitespace().count() <= 2 * PIECE_WORDS {
            out.push(s);
            continue;
        }
        let starts: Vec<usize> = s
            .split_whitespace()
            .map(|w| w.as_ptr() as usize - s.as_ptr() as usize)
            .collect();
        for run in starts.chunks(PIECE_WORDS) {
            let from = run[0];
            let last = run[run.len() - 1];
            let to = last
                + s[last..]
                    .find(char::is_whitespace)
                    .unwrap_or(s.len() - last);
            if run.len() >= 4 {
                out.push(&s[from..to]);
            }
        }
    }
    out
}

/// Words per piece when a sentence is too long to be one (see [`sentences`]).
const PIECE_WORDS: usize = 24;

fn sentence_spans(text: &str) -> Vec<&str> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..b.len() {
        let end = match b[i] {
            b'.' | b'!' | b'?' if b.get(i + 1).is_none_or(|c| c.is_ascii_whitespace()) => i + 1,
            b'\n' if b.get(i + 1) == Some(&b'\n') => i,
            _ => continue,
        };
        if end > start {
            // `start` and `end` follow ASCII bytes: char boundaries.
            let s = text[start..end].trim();
            if s.split_whitespace().count() >= 4 {
                out.push(s);
            }
        }
        start = end.max(start);
    }
    let s = text[start..].trim();
    if s.split_whitespace().count() >= 4 {
        out.push(s);
    }
    out
}

/// `--compose N`: N unit vectors, each the normalised mean of 2–6 distinct sentences of one
/// corpus text picked at random (a fixed seed).
fn compose(
    g: &Global,
    files: &ModelFiles,
    enc: &Encoder,
    texts: &[&str],
    n: usize,
    cache: Option<&Path>,
) -> Result<Vec<f32>> {
    let table = Sentences::of(texts)?;
    shared::note(
        g,
        format!(
            "composing {n} passages from {} sentences of {} texts",
            table.all.len(),
            texts.len()
        ),
    );
    let sv = embed_cached(g, files, enc, &table.all, cache)?;
    let dim = enc.dim();
    let mut out = vec![0f32; n * dim];
    for (row, picked) in out.chunks_exact_mut(dim).zip(table.picks()) {
        for s in picked {
            let v = &sv[s * dim..(s + 1) * dim];
            for (r, x) in row.iter_mut().zip(v) {
                *r += x;
            }
        }
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|x| *x /= norm);
        }
    }
    Ok(out)
}

/// A corpus's sentences ([`sentences`]), all in one list, and where each text's sentences
/// begin in it.
struct Sentences<'t> {
    of: Vec<Vec<&'t str>>,
    all: Vec<&'t str>,
    first: Vec<usize>,
    /// Texts with at least one sentence.
    usable: Vec<usize>,
}

impl<'t> Sentences<'t> {
    fn of(texts: &[&'t str]) -> Result<Self> {
        let of: Vec<Vec<&str>> = texts.iter().map(|t| sentences(t)).collect();
        let all: Vec<&str> = of.iter().flatten().copied().collect();
        let mut first = Vec::with_capacity(of.len());
        let mut at = 0;
        for s in &of {
            first.push(at);
            at += s.len();
        }
        let usable: Vec<usize> = (0..of.len()).filter(|&t| !of[t].is_empty()).collect();
        anyhow::ensure!(
            !usable.is_empty(),
            "no sentences of four words or more in the corpus"
        );
        Ok(Self {
            of,
            all,
            first,
            usable,
        })
    }

    /// The composed passages' sentences, the same on every call.
    fn picks(&self) -> Picks<'_> {
        Picks {
            of: &self.of,
            first: &self.first,
            usable: &self.usable,
            rng: SplitMix64::new(0xc0de),
            pick: Vec::new(),
        }
    }
}

/// The sentences of each composed passage, as indexes into all sentences: 2–6 distinct ones of
/// one text, drawn with a fixed seed.
struct Picks<'a> {
    of: &'a [Vec<&'a str>],
    first: &'a [usize],
    usable: &'a [usize],
    rng: SplitMix64,
    pick: Vec<usize>,
}

impl Iterator for Picks<'_> {
    type Item = Vec<usize>;

    fn next(&mut self) -> Option<Vec<usize>> {
        let t = self.usable[self.rng.next_u64() as usize % self.usable.len()];
        let m = self.of[t].len();
        let take = (2 + self.rng.next_u64() as usize % 5).min(m);
        self.pick.clear();
        self.pick.extend(0..m);
        for j in 0..take {
            let r = j + self.rng.next_u64() as usize % (m - j);
            self.pick.swap(j, r);
        }
        Some(
            self.pick[..take]
                .iter()
                .map(|s| self.first[t] + s)
                .collect(),
        )
    }
}

/// `--compose N --units`: composed passages whose sentences are their units, written through
/// the store and searched by the product's searcher at each candidate count; recall@k against
/// the exact best unit of every passage.
fn composed_units(
    g: &Global,
    a: &RecallArgs,
    files: &ModelFiles,
    enc: &Encoder,
    texts: &[&str],
    qs: &[f32],
    n: usize,
) -> Result<()> {
    let table = Sentences::of(texts)?;
    let sv = embed_cached(g, files, enc, &table.all, a.cache.as_deref())?;
    let dim = enc.dim();
    let k = a.k;
    let tmp = tempfile::tempdir()?;
    for bits in parse_list(&a.bits)? {
        let dir = tmp.path().join(format!("b{bits}"));
        let mut picks = table.picks();
        let index = crate::bench_search::write_index(&dir, dim, n, bits, |_| {
            let picked = picks.next().unwrap_or_default();
            let text = picked
                .iter()
                .map(|&s| table.all[s])
                .collect::<Vec<_>>()
                .join(" ");
            let units = picked
                .iter()
                .flat_map(|&s| sv[s * dim..(s + 1) * dim].iter().copied())
                .collect();
            (text, units)
        })?;
        let exact = exact_tops(&index, qs, dim, k)?;
        let rows = index.store().rows().live_rows();
        let searcher = index.searcher()?;
        let shares: Vec<Option<f32>> = match &a.probe_shares {
            Some(s) => s
                .split(',')
                .map(|x| {
                    x.trim()
                        .parse::<f32>()
                        .map(Some)
                        .with_context(|| format!("bad share {x:?}"))
                })
                .collect::<Result<_>>()?,
            None => vec![None],
        };
        for c in candidate_counts(a, rows, k, bits)? {
            for &share in &shares {
                let (r, p95) = searched_recall(&searcher, qs, dim, &exact, k, c, share)?;
                println!(
                    "{}",
                    serde_json::json!({"bits": bits, "candidates": c, "passages": n,
                        "units": rows, "filter": searcher.filter_name(),
                        "lists": searcher.lists(), "probe_share": share,
                        "queries": exact.len(), "k": k, "recall": r, "p95_ms": p95})
                );
            }
        }
    }
    Ok(())
}

/// Each query's exact top `k` passages (see [`crate::bench_search::exact_top`]).
fn exact_tops(
    index: &dochash::index::Index,
    qs: &[f32],
    dim: usize,
    k: usize,
) -> Result<Vec<Vec<u64>>> {
    qs.chunks_exact(dim)
        .map(|q| crate::bench_search::exact_top(index, q, k))
        .collect()
}

/// The candidate counts to measure: `--candidates`, else what queries use for `rows` vectors.
fn candidate_counts(a: &RecallArgs, rows: usize, k: usize, bits: usize) -> Result<Vec<usize>> {
    match &a.candidates {
        Some(c) => parse_list(c),
        None => Ok(vec![dochash::index::search::default_candidates(
            rows, k, bits,
        )]),
    }
}

/// Recall@k of the product's semantic search with `c` candidates against `exact` (each query's
/// true top `k`), and the searches' p95 in milliseconds.
fn searched_recall(
    searcher: &dochash::index::Searcher,
    qs: &[f32],
    dim: usize,
    exact: &[Vec<u64>],
    k: usize,
    c: usize,
    probe_share: Option<f32>,
) -> Result<(f64, f64)> {
    let params = SearchParams {
        k,
        candidates: Some(c),
        mode: Mode::Semantic,
        group: Group::None,
        probe_share,
        ..Default::default()
    };
    let (mut hit, mut took) = (0usize, Vec::with_capacity(exact.len()));
    for (qi, q) in qs.chunks_exact(dim).enumerate() {
        let t0 = Instant::now();
        let hits = searcher.search(q, &params)?;
        took.push(t0.elapsed().as_secs_f64() * 1e3);
        hit += exact[qi]
            .iter()
            .filter(|id| hits.iter().any(|h| h.id == **id))
            .count();
    }
    took.sort_by(f64::total_cmp);
    let recall = hit as f64 / (exact.len() * k).max(1) as f64;
    let p95 = took.get(took.len() * 95 / 100).copied().unwrap_or(0.0);
    Ok((recall, p95))
}

/// A corpus and its queries, with their unit-length embeddings (row-major, `dim` wide).
struct Embedded<'a> {
    texts: &'a [&'a str],
    queries: &'a [&'a str],
    db: &'a [f32],
    qs: &'a [f32],
    dim: usize,
}

/// Per query, its stored and query codes, and the margins the weighted filter needs (`None`
/// for a source that cannot give them).
struct Coded {
    words: usize,
    codes: Vec<u64>,
    query_codes: Vec<u64>,
    query_margins: Option<Vec<Vec<f32>>>,
}

/// For each coder, filter and code length, the fewest candidates at which recall@k of the
/// filter + exact rerank reaches `target`. Recall at `c` candidates is the share of (query,
/// true neighbour) pairs whose neighbour the filter ranks within its first `c` (the rerank is
/// exact, so what the filter keeps is what is found), with the filter's own order and tie-break
/// (`(distance, index)`, as the product's searcher takes its prefix): so one full ranking per
/// query gives the answer for every `c` at once.
fn candidates_for_target(
    g: &Global,
    a: &RecallArgs,
    enc: &Encoder,
    data: &Embedded<'_>,
    target: f64,
) -> Result<()> {
    use rayon::prelude::*;
    anyhow::ensure!(
        target > 0.0 && target <= 1.0,
        "--target must be in (0, 1], got {target}"
    );
    let (dim, k) = (data.dim, a.k);
    let n = data.db.len() / dim;
    let nq = data.qs.len() / dim;
    anyhow::ensure!(n > k && nq > 0, "too few texts for recall@{k}");
    let coders: Vec<String> = a.coders.split(',').map(|c| c.trim().to_string()).collect();
    let filters: Vec<Filter> = a
        .filters
        .split(',')
        .map(|f| f.trim().parse::<Filter>().map_err(anyhow::Error::msg))
        .collect::<Result<_>>()?;
    // Exact top-k by cosine, ties to the smaller index.
    let exact: Vec<Vec<usize>> = data
        .qs
        .par_chunks_exact(dim)
        .map(|q| dochash::train::metrics::cosine_top_k(q, data.db, dim, k, None))
        .collect();
    let mut states = None;
    for coder in &coders {
        for bits in parse_list(&a.bits)? {
            let coded = match coder.as_str() {
                "itq" => code_linear(data, bits)?,
                "learned" => code_ranked(g, data, bits)?,
                "dhim" => code_learned(g, enc, data, bits, &mut states)?,
                other => anyhow::bail!("unknown coder {other:?}: use itq, learned or dhim"),
            };
            for &filter in &filters {
                if filter == Filter::Weighted && coded.query_margins.is_none() {
                    continue;
                }
                let ranks: Vec<Vec<usize>> = (0..nq)
                    .into_par_iter()
                    .map(|qi| filter_ranks(&coded, filter, qi, &exact[qi]))
                    .collect::<Result<_>>()?;
                let mut ranks: Vec<usize> = ranks.into_iter().flatten().collect();
                let candidates = metrics::candidates_for_target(&mut ranks, target);
                let default = dochash::index::search::default_candidates(n, k, bits);
                let at_default =
                    ranks.iter().filter(|&&r| r < default).count() as f64 / ranks.len() as f64;
                let fname = filter.name();
                if a.json {
                    println!(
                        "{}",
                        serde_json::json!({"coder": coder, "filter": fname, "bits": bits, "n": n,
                            "queries": nq, "k": k, "target": target,
                            "candidates_for_target": candidates,
                            "default_candidates": default, "recall_at_default": at_default})
                    );
                } else {
                    println!(
                        "{coder:>7} {fname:>8}  bits {bits:>3}  candidates for recall@{k} ≥ {target}: {candidates:>6} ({:.1}% of {n})  recall@{k} at the default {default}: {at_default:.4}",
                        100.0 * candidates as f64 / n as f64
                    );
                }
            }
        }
    }
    Ok(())
}

/// The filter's rank (0-based) of each of `wanted` for query `qi`.
fn filter_ranks(coded: &Coded, filter: Filter, qi: usize, wanted: &[usize]) -> Result<Vec<usize>> {
    let w = coded.words;
    let margins = match (filter, &coded.query_margins) {
        (Filter::Weighted, Some(m)) => Some(m[qi].as_slice()),
        _ => None,
    };
    Ok(metrics::filter_ranks(
        &coded.codes,
        w,
        &coded.query_codes[qi * w..(qi + 1) * w],
        margins,
        wanted,
        None,
    )?)
}

/// ITQ fitted on the corpus as an update fits it ([`Coder::fit`]).
fn code_linear(data: &Embedded<'_>, bits: usize) -> Result<Coded> {
    let n = data.db.len() / data.dim;
    code_with(&Coder::fit(data.db, n, data.dim, bits)?, data)
}

/// Corpus codes, query codes and query margins from a source that codes vectors.
fn code_with(coder: &Coder, data: &Embedded<'_>) -> Result<Coded> {
    let n = data.db.len() / data.dim;
    let margins = data
        .qs
        .chunks_exact(data.dim)
        .map(|q| {
            coder
                .margins(q)?
                .context("a source that codes vectors has margins")
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Coded {
        words: coder.words(),
        codes: coder.encode(data.db, n)?,
        query_codes: coder.encode(data.qs, data.qs.len() / data.dim)?,
        query_margins: Some(margins),
    })
}

/// The ranking head as `dochash train` trains it (its defaults), on the corpus's vectors; the
/// queries get their margins from it, as the product's weighted filter does.
fn code_ranked(g: &Global, data: &Embedded<'_>, bits: usize) -> Result<Coded> {
    use dochash::train::ranked::{self, RankConfig};
    let n = data.db.len() / data.dim;
    let cfg = RankConfig {
        bits,
        ..Default::default()
    };
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let device = candle_core::Device::Cpu;
    let (head, report) = ranked::train(data.db, n, data.dim, cfg, &device, &cancel, &mut |_| {})?;
    shared::note(
        g,
        format!(
            "ranking head, {bits} bits: best at step {} of {}; held-back candidates {} (ITQ {}), {:.0} s",
            report.best_step,
            report.steps,
            report.head_candidates,
            report.itq_candidates,
            report.seconds
        ),
    );
    let coder = Coder::Ranked(std::sync::Arc::new(head));
    code_with(&coder, data)
}

/// The DHIM head as `dochash train --codes dhim` trains it (its defaults), on the corpus's token
/// states; the queries are coded from theirs. The states are computed once for every length.
fn code_learned(
    g: &Global,
    enc: &Encoder,
    data: &Embedded<'_>,
    bits: usize,
    states: &mut Option<(CorpusStates, CorpusStates)>,
) -> Result<Coded> {
    if states.is_none() {
        shared::note(
            g,
            "token states of the corpus and the queries (for the learned head)",
        );
        let corpus = CorpusStates::encode(enc, data.texts, BatchLimits::default(), &mut |_, _| {})?;
        let queries =
            CorpusStates::encode(enc, data.queries, BatchLimits::default(), &mut |_, _| {})?;
        *states = Some((corpus, queries));
    }
    let Some((corpus, queries)) = states.as_ref() else {
        anyhow::bail!("token states missing");
    };
    let cfg = DhimConfig {
        bits,
        ..Default::default()
    };
    let started = Instant::now();
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let (head, report) = dhim::train(corpus, cfg, enc.device(), &cancel, &mut |_| {})?;
    shared::note(
        g,
        format!(
            "learned head, {bits} bits: {} epochs (best {}), {:.0} s",
            report.epochs,
            report.best_epoch,
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(Coded {
        words: bits.div_ceil(64),
        codes: head.encode_states(corpus, enc.device())?,
        query_codes: head.encode_states(queries, enc.device())?,
        query_margins: None,
    })
}

/// Scan throughput: the plain Hamming scan (one thread), the weighted scan (as the searcher
/// runs it, split across threads from a quarter million codes) or a plain read of the codes.
fn hamming_scan(a: &HammingArgs) -> Result<()> {
    use rayon::prelude::*;
    let words = a.bits.div_ceil(64);
    let mut rng = SplitMix64::new(42);
    let codes: Vec<u64> = (0..a.n * words).map(|_| rng.next_u64()).collect();
    let q: Vec<u64> = (0..words).map(|_| rng.next_u64()).collect();
    let margins: Vec<f32> = (0..a.bits).map(|_| rng.gaussian() as f32).collect();
    let wq = WeightedQuery::new(&margins, words)?;
    let blocks = weighted::Blocks::new(&codes, words);
    let mut times = Vec::with_capacity(a.repeat.max(1));
    for _ in 0..a.repeat.max(1) {
        let t = Instant::now();
        let top = if a.read {
            let part = codes.len().div_ceil(rayon::current_num_threads()).max(1);
            let x = codes
                .par_chunks(part)
                .map(|c| c.iter().fold(0u64, |acc, &w| acc ^ w))
                .reduce(|| 0, |p, q| p ^ q);
            vec![hamming::Candidate {
                index: 0,
                distance: x as u32,
            }]
        } else if a.weighted {
            match &blocks {
                Some(b) => weighted::top_candidates_blocks(&wq, b, a.candidates)?,
                None => weighted::top_candidates(&wq, &codes, words, a.candidates)?,
            }
        } else {
            hamming::top_candidates(&q, &codes, words, a.candidates)?
        };
        std::hint::black_box(&top);
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let (best, median) = (times[0], times[times.len() / 2]);
    let rate = a.n as f64 / best;
    let kernel = match (a.weighted, &blocks) {
        _ if a.read => "read",
        (true, Some(_)) => "weighted-avx2",
        (true, None) => "weighted-portable",
        _ => hamming::kernel_name(),
    };
    println!(
        "{}",
        serde_json::json!({"kernel": kernel, "codes": a.n, "bits": a.bits,
            "candidates": a.candidates, "best_s": best,
            "median_s": median, "codes_per_s": rate})
    );
    Ok(())
}

/// Saves notes into a watched temporary folder and times how long until a query finds each,
/// through the same engine the TUI uses (watcher debounce, incremental update, snapshot swap).
fn freshness(g: &Global, a: &FreshnessArgs) -> Result<()> {
    use dochash::app::{Engine, EngineConfig};
    use dochash::index::SearchParams;

    let tmp = tempfile::tempdir()?;
    let notes = tmp.path().join("notes");
    std::fs::create_dir_all(&notes)?;
    if let Some(seed) = &a.seed {
        for e in
            std::fs::read_dir(seed).with_context(|| format!("cannot read {}", seed.display()))?
        {
            let p = e?.path();
            if p.is_file()
                && let Some(name) = p.file_name()
            {
                std::fs::copy(&p, notes.join(name))?;
            }
        }
    }
    let files = shared::resolve_model(g)?;
    let engine = Engine::start(EngineConfig {
        home: dochash::app::Home::at(tmp.path().join("home")),
        choice: dochash::app::ModelChoice {
            model: Some(dochash::model::ModelSpec::LocalDir(files.dir.clone())),
            ..shared::model_choice(g)
        },
        add_roots: vec![notes.clone()],
        watch: true,
        auto_train: false,
    });
    engine
        .wait_open(std::time::Duration::from_secs(3600))
        .map_err(|e| anyhow::anyhow!(e))?;
    while !engine.is_idle() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let params = SearchParams {
        k: 10_000,
        candidates: None,
        group: Group::None,
        ..Default::default()
    };
    let mut took = Vec::new();
    for i in 0..a.saves {
        let marker = format!("zebra{i} quokka{i} sailing notes");
        let path = notes.join(format!("fresh-{i}.md"));
        let t = Instant::now();
        std::fs::write(&path, format!("# Fresh {i}\n\n{marker}\n"))?;
        let canon = dochash::fsx::canonicalize(&path)?;
        loop {
            let hits = engine.search(&marker, &params).unwrap_or_default();
            if hits.iter().any(|h| h.path == canon) {
                break;
            }
            if t.elapsed().as_secs() > 60 {
                anyhow::bail!("save {i} was not searchable after 60 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        took.push(t.elapsed().as_secs_f64() * 1e3);
    }
    took.sort_by(f64::total_cmp);
    let pct = |p: usize| {
        took.get((took.len() * p / 100).min(took.len() - 1))
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "{}",
        serde_json::json!({"saves": took.len(), "passages": engine.status().passages,
            "p50_ms": pct(50), "p95_ms": pct(95), "max_ms": took.last(),
            "debounce_ms": dochash::app::watch::WATCH_DEBOUNCE.as_millis()})
    );
    engine.shutdown(std::time::Duration::from_secs(5));
    Ok(())
}

/// Which forward pass the encoder runs, for the report.
fn path_label(enc: &Encoder) -> String {
    match (enc.fused_cpu(), enc.precision()) {
        (false, _) => "candle".into(),
        (true, Precision::F32) => "fused".into(),
        (true, Precision::Int8) => format!("fused int8 {}", Encoder::int8_kernel()),
    }
}

/// `embed` over real texts: what indexing sees (tokenizing, length bucketing, padding, pooling).
fn encode_texts(g: &Global, a: &EncodeArgs, files: &ModelFiles, data: &Path) -> Result<()> {
    let texts = read_jsonl(data, Some(a.limit))?;
    if texts.is_empty() {
        anyhow::bail!("{}: no texts", data.display());
    }
    let texts: Vec<&str> = texts.iter().map(|(_, t)| t.as_str()).collect();
    let enc = shared::load_encoder_with(g, files, Some(a.seq.max(2)), a.candle, g.precision)?;
    let limits = BatchLimits {
        max_batch: a.batch.max(1),
        max_tokens: a.batch.max(1) * enc.max_len(),
    };
    let tokens: usize = enc.tokenize(&texts)?.iter().map(|t| t.ids.len()).sum();
    enc.embed(&texts[..texts.len().min(64)], Pooling::Mean, true, limits)?;
    let t = Instant::now();
    enc.embed(&texts, Pooling::Mean, true, limits)?;
    let took = t.elapsed().as_secs_f64();
    let path = path_label(&enc);
    let v = serde_json::json!({"model": files.id, "device": enc.device_label(), "path": path,
        "precision": enc.precision(),
        "data": data.display().to_string(), "texts": texts.len(), "tokens": tokens,
        "max_len": enc.max_len(), "batch": a.batch, "threads": a.threads, "seconds": took,
        "tokens_per_s": tokens as f64 / took, "texts_per_s": texts.len() as f64 / took});
    if a.json {
        println!("{v}");
    } else {
        println!(
            "{:.0} tokens/s, {:.1} texts/s ({} texts, {} tokens up to {} each, in {:.2} s, {}, \
             {path} path)",
            tokens as f64 / took,
            texts.len() as f64 / took,
            texts.len(),
            tokens,
            enc.max_len(),
            took,
            enc.device_label()
        );
    }
    Ok(())
}

/// Forward passes over random ids (not special tokens, no padding), so the number measures the
/// encoder alone: best of `repeat` after one warm-up.
fn encode(g: &Global, a: &EncodeArgs) -> Result<()> {
    if let Some(t) = a.threads {
        // candle's CPU kernels and gemm size their thread pools from these at first use.
        // SAFETY: set before any other thread of this process exists.
        unsafe {
            std::env::set_var("RAYON_NUM_THREADS", t.to_string());
        }
    }
    let files = shared::resolve_model(g)?;
    if let Some(data) = &a.data {
        return encode_texts(g, a, &files, data);
    }
    let enc = shared::load_encoder_with(g, &files, None, a.candle, g.precision)?;
    if a.seq == 0 || a.batch == 0 || a.seq > enc.config().positions() {
        anyhow::bail!(
            "--seq must be 1..={} and --batch at least 1",
            enc.config().positions()
        );
    }
    // BERT vocabularies keep special and unused tokens at the start: draw from the rest.
    let vocab = enc.config().vocab_size as u64;
    let low = (vocab / 10).min(1000);
    let mut rng = SplitMix64::new(1);
    let rows: Vec<Vec<u32>> = (0..a.batch)
        .map(|_| {
            (0..a.seq)
                .map(|_| (low + rng.next_u64() % (vocab - low).max(1)) as u32)
                .collect()
        })
        .collect();
    let items: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
    let run = || -> Result<f64> {
        let t = Instant::now();
        let (states, _) = enc.token_states(&items, false)?;
        // Copy out so that lazy backends (GPU) finish the work inside the timing.
        let _: Vec<f32> = states.flatten_all()?.to_vec1()?;
        Ok(t.elapsed().as_secs_f64())
    };
    run()?;
    let mut best = f64::MAX;
    for _ in 0..a.repeat.max(1) {
        best = best.min(run()?);
    }
    let tokens = (a.batch * a.seq) as f64;
    let path = path_label(&enc);
    let v = serde_json::json!({"model": files.id, "device": enc.device_label(), "path": path,
        "precision": enc.precision(),
        "batch": a.batch, "seq": a.seq, "threads": a.threads, "best_s": best,
        "tokens_per_s": tokens / best});
    if a.json {
        println!("{v}");
    } else {
        println!(
            "{:.0} tokens/s ({} × {} in {:.3} s, best of {}, {}, {path} path)",
            tokens / best,
            a.batch,
            a.seq,
            best,
            a.repeat.max(1),
            enc.device_label()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::sentences;

    #[test]
    fn sentences_end_at_stops_and_blank_lines_and_keep_four_words() {
        let t = "From: someone\n\nThe cat sat on the mat. Then it left! Did it come back home later?\n\
                 Version 1.2 is out now and works\n\nok then";
        assert_eq!(
            sentences(t),
            [
                "The cat sat on the mat.",
                "Did it come back home later?",
                "Version 1.2 is out now and works"
            ]
        );
        assert!(sentences("").is_empty());
        // No punctuation: runs of 24 words (the last run kept at four words or more).
        let words: Vec<String> = (0..53).map(|i| format!("w{i}")).collect();
        let text = words.join(" ");
        let runs = sentences(&text);
        assert_eq!(runs.len(), 3);
        assert_eq!(runs[0], words[..24].join(" "));
        assert_eq!(runs[2], words[48..].join(" "));
        let short: Vec<String> = (0..50).map(|i| format!("w{i}")).collect();
        assert_eq!(
            sentences(&short.join(" ")).len(),
            2,
            "a 2-word tail is dropped"
        );
        assert_eq!(
            sentences("émigré café déjà vu here"),
            ["émigré café déjà vu here"]
        );
    }
}
