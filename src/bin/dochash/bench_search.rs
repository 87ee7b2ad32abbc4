//! `dochash bench search`: the product's query path at scale. A synthetic index — clustered unit
//! vectors and words drawn per cluster — is written through the real store (`Index::put_file`,
//! the same per-file write an update makes, then `Index::fit_codes`), reopened cold, and queried
//! through the same `Searcher` the owner uses. Query encoding is left out: it does not depend on
//! the index size and `bench encode` measures it.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use dochash::index::cosine::cosine_f16;
use dochash::index::search::{Filter, Group, Mode, SearchParams};
use dochash::index::store::PassageRecord;
use dochash::index::{Fingerprint, Index, Selection, hamming, split_filters};
use dochash::rng::SplitMix64;

use crate::cli::SearchBenchArgs;

/// Passages per synthetic file (the unit of the store's writes).
const PER_FILE: usize = 100;
/// Words per passage and in the vocabulary of each cluster.
const WORDS: usize = 30;
const TOPIC_WORDS: usize = 60;
const COMMON_WORDS: usize = 3000;

struct Synth {
    dim: usize,
    clusters: usize,
    centres: Vec<f32>,
}

impl Synth {
    fn new(dim: usize, clusters: usize) -> Self {
        let mut rng = SplitMix64::new(7);
        let centres = (0..clusters * dim)
            .map(|_| rng.uniform_f32() * 2.0 - 1.0)
            .collect();
        Self {
            dim,
            clusters,
            centres,
        }
    }

    fn cluster(&self, i: usize) -> usize {
        (i * 7919) % self.clusters
    }

    /// Passage `i`'s unit vector: its cluster's centre plus noise.
    fn vector(&self, i: usize, noise: f32, rng: &mut SplitMix64) -> Vec<f32> {
        let c = self.cluster(i);
        let mut v: Vec<f32> = (0..self.dim)
            .map(|j| self.centres[c * self.dim + j] + noise * (rng.uniform_f32() * 2.0 - 1.0))
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    /// `n` words: mostly from the cluster's topic words, the rest common ones; skewed so that a
    /// few words are frequent, as in text.
    fn words(&self, i: usize, n: usize, rng: &mut SplitMix64) -> String {
        let c = self.cluster(i);
        let mut out = Vec::with_capacity(n);
        for k in 0..n {
            let r = rng.uniform_f32();
            let skew = (r * r * r * 1000.0) as usize;
            if k % 3 == 2 {
                out.push(format!("common{}", skew % COMMON_WORDS));
            } else {
                out.push(format!("t{c}w{}", skew % TOPIC_WORDS));
            }
        }
        out.join(" ")
    }
}

fn rss_mb() -> f64 {
    status_mb("VmRSS:")
}

/// A memory figure of this process from `/proc/self/status` (`VmRSS:`, or `VmHWM:` for the
/// peak so far), 0 where there is none.
fn status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Writes `n` passages, `passage(i)` giving each one's text and unit vector, into a new index
/// at `dir` through the index's own write path (`Index::put_file`, [`PER_FILE`] passages a
/// file), then fits `bits`-bit codes as an update would.
pub fn write_index(
    dir: &Path,
    dim: usize,
    n: usize,
    bits: usize,
    mut passage: impl FnMut(usize) -> (String, Vec<f32>),
) -> Result<Index> {
    let (mut index, _) = Index::open(dir, &Fingerprint::synthetic(dim))?;
    let root = dir.join("notes");
    let mut i = 0;
    let mut file = 0;
    while i < n {
        let path = root.join(format!("f{file:07}.md"));
        let count = PER_FILE.min(n - i);
        let passages = (0..count)
            .map(|k| {
                let (text, vector) = passage(i + k);
                let rec = PassageRecord {
                    path: path.clone(),
                    start_byte: 0,
                    end_byte: text.len(),
                    start_line: k as u32 + 1,
                    end_line: k as u32 + 1,
                    headings: Vec::new(),
                    context: Vec::new(),
                    text,
                    units: Vec::new(),
                    page: 0,
                    names: Vec::new(),
                    links: Vec::new(),
                };
                (rec, vector)
            })
            .collect();
        index.put_file(&path, &root, passages)?;
        i += count;
        file += 1;
        if file % 1000 == 0 {
            index.flush()?;
            eprintln!("written {i} passages");
        }
    }
    index.fit_codes(bits)?;
    index.flush()?;
    Ok(index)
}

/// The ids of the `k` passages closest to `q` by exact cosine, each passage scored by its best
/// row, over every live row.
pub fn exact_top(index: &Index, q: &[f32], k: usize) -> Result<Vec<u64>> {
    exact_top_of(index, q, k, None)
}

/// [`exact_top`] among the passages in `only`.
fn exact_top_of(
    index: &Index,
    q: &[f32],
    k: usize,
    only: Option<&HashSet<u64>>,
) -> Result<Vec<u64>> {
    let rows = index.store().rows();
    let vectors = index.store().vectors()?;
    let mut all: Vec<(f32, u64)> = Vec::with_capacity(rows.live());
    for r in (0..rows.rows()).filter(|&r| !rows.dead[r]) {
        if only.is_some_and(|o| !o.contains(&rows.id(r))) {
            continue;
        }
        let Some(v) = vectors.row(r) else { continue };
        let (cos, id) = (cosine_f16(q, v), rows.id(r));
        // A passage's rows are consecutive.
        match all.last_mut() {
            Some(last) if last.1 == id => last.0 = last.0.max(cos),
            _ => all.push((cos, id)),
        }
    }
    let k = k.min(all.len());
    if k == 0 {
        return Ok(Vec::new());
    }
    all.select_nth_unstable_by(k - 1, |x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    Ok(all[..k].iter().map(|x| x.1).collect())
}

/// Whether the index at `dir` was written by this bench with these settings: the same
/// fingerprint (format version and dimension included, as every other opener compares it), the
/// same passage and vector counts and code length.
fn reusable(dir: &Path, passages: usize, units: usize, bits: usize, dim: usize) -> bool {
    Index::open_existing(dir).ok().flatten().is_some_and(|i| {
        i.meta().fingerprint == Fingerprint::synthetic(dim)
            && i.store().passage_count() == passages
            && i.store().rows().live_rows() == passages * units
            && i.meta().bits() == bits
    })
}

fn build(dir: &Path, a: &SearchBenchArgs, synth: &Synth) -> Result<f64> {
    let t = Instant::now();
    let mut rng = SplitMix64::new(11);
    write_index(dir, a.dim, a.passages, a.bits, |i| {
        let words = synth.words(i, WORDS, &mut rng);
        // Units of one passage: draws around the same cluster, as a passage's windows are.
        let vectors = (0..a.units)
            .flat_map(|_| synth.vector(i, 0.6, &mut rng))
            .collect();
        (words, vectors)
    })?;
    Ok(t.elapsed().as_secs_f64())
}

pub fn run(a: &SearchBenchArgs) -> Result<()> {
    let filter: Filter = a.filter.parse().map_err(anyhow::Error::msg)?;
    let modes: Vec<Mode> = a
        .modes
        .split(',')
        .map(|m| m.trim().parse::<Mode>().map_err(anyhow::Error::msg))
        .collect::<Result<_>>()?;
    if a.passages == 0 || a.dim == 0 || a.units == 0 {
        bail!("--passages, --dim and --units must be at least 1");
    }
    if a.units > dochash::index::store::rows::MAX_UNITS {
        bail!(
            "--units: at most {} vectors a passage",
            dochash::index::store::rows::MAX_UNITS
        );
    }
    let synth = Synth::new(a.dim, a.clusters.max(1));
    let tmp;
    let dir = match &a.store {
        Some(d) => d.join("index"),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().join("index")
        }
    };
    let build_s = if reusable(&dir, a.passages, a.units, a.bits, a.dim) {
        None
    } else {
        let _ = std::fs::remove_dir_all(&dir);
        Some(build(&dir, a, &synth)?)
    };

    // The peak so far is the build's (with the synthetic vectors it generated).
    let peak_build = build_s.map(|_| status_mb("VmHWM:"));
    // Cold open: the store, the codes into memory, the vectors mapped, the word index.
    let rss_before = rss_mb();
    let t = Instant::now();
    let index = Index::open_existing(&dir)?.context("the benchmark index is missing")?;
    let searcher = index.searcher()?;
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    if a.warm {
        searcher.warm_in_background();
    }
    let t = Instant::now();
    if a.warmed {
        searcher.warm_now();
    }
    let warmed_ms = a.warmed.then(|| t.elapsed().as_secs_f64() * 1e3);
    let searcher = if a.next_searcher {
        let next = index.searcher()?;
        next.warm_in_background();
        drop(searcher);
        next
    } else {
        searcher
    };
    let rss_after_open = rss_mb();
    let bytes = index.store().size_on_disk();
    let c = a.candidates;

    let mut rng = SplitMix64::new(99);
    let queries: Vec<(usize, Vec<f32>, String)> = (0..a.queries)
        .map(|q| {
            let src = (q * 104_729) % a.passages;
            let v = synth.vector(src, 0.6, &mut rng);
            (src, v, synth.words(src, 4, &mut rng))
        })
        .collect();
    // The filters, resolved against the synthetic folder, and the passages they keep.
    let selection = match &a.filters {
        Some(words) => {
            let (_, f) = split_filters(words)?;
            let sel = Selection::resolve(&f, &[dir.join("notes")])?;
            let mut kept = HashSet::new();
            for (path, rec) in index.store().files()? {
                if sel.holds(&path, &rec) {
                    kept.extend(rec.passages.iter().copied());
                }
            }
            Some((Arc::new(sel), kept))
        }
        None => None,
    };
    let runs = modes
        .iter()
        .flat_map(|&m| std::iter::once((m, None)).chain(selection.as_ref().map(|s| (m, Some(s)))));
    for (mode, selected) in runs {
        let params = SearchParams {
            k: 10,
            candidates: c,
            mode,
            filter,
            group: Group::None,
            selection: selected.map(|s| s.0.clone()),
            probe_share: a.probe_share,
            ..Default::default()
        };
        let mut lat = Vec::with_capacity(queries.len());
        let (mut found, mut checked) = (0usize, 0usize);
        for (qi, (_, v, words)) in queries.iter().enumerate() {
            let t = Instant::now();
            let hits = searcher.search_with_vector(words, v, &params)?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            // Recall of the semantic side against exact cosine over every row (not timed).
            if mode == Mode::Semantic && qi < a.recall_queries {
                let exact = exact_top_of(&index, v, 10, selected.map(|s| &s.1))?;
                found += hits.iter().filter(|h| exact.contains(&h.id)).count();
                checked += exact.len();
            }
        }
        lat.sort_by(f64::total_cmp);
        let pct = |p: usize| lat.get(lat.len() * p / 100).copied().unwrap_or(0.0);
        let mode_name = format!("{mode:?}").to_lowercase();
        println!(
            "{}",
            serde_json::json!({"passages": a.passages, "vectors": searcher.vectors(),
            "dim": a.dim, "bits": a.bits, "mode": mode_name,
            "candidates": c.unwrap_or_else(||
                dochash::index::search::default_candidates(searcher.vectors(), 10, a.bits)),
            "filters": selected.and(a.filters.as_deref()),
            "kept_passages": selected.map(|s| s.1.len()),
            "queries": a.queries, "warm": a.warm, "warmed_ms": warmed_ms,
            "next_searcher": a.next_searcher, "lists": searcher.lists(),
            "probe_share": a.probe_share, "p50_ms": pct(50), "p95_ms": pct(95),
            "max_ms": lat.last(), "open_ms": open_ms, "build_s": build_s,
            "recall_at_10": (checked > 0).then(|| found as f64 / checked as f64),
            "rss_mb_after_open": rss_after_open, "rss_mb_before_open": rss_before,
            "rss_mb_peak_build": peak_build,
            "rss_mb_after_queries": rss_mb(),
            "index_bytes": bytes, "filter": match filter {
                Filter::Weighted => searcher.filter_name(),
                Filter::Hamming => format!("hamming ({})", hamming::kernel_name()),
            }})
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_index_is_reused_only_with_the_same_settings() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("index");
        let synth = Synth::new(8, 4);
        let mut rng = SplitMix64::new(1);
        let index = write_index(&dir, 8, 300, 16, |i| {
            (synth.words(i, 5, &mut rng), synth.vector(i, 0.6, &mut rng))
        })
        .unwrap();
        drop(index);
        assert!(reusable(&dir, 300, 1, 16, 8));
        assert!(!reusable(&dir, 301, 1, 16, 8));
        assert!(!reusable(&dir, 300, 2, 16, 8));
        assert!(!reusable(&dir, 300, 1, 32, 8));
        // Another dimension is another fingerprint, as another format version is.
        assert!(!reusable(&dir, 300, 1, 16, 16));
    }
}
