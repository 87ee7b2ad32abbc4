//! `dochash eval retrieval`: known-item search as users judge it. Each query names the one
//! passage that answers it (a file and a line range); a result is a hit when it lies in that file
//! and its lines overlap the range. The folder is indexed and searched with the product's own
//! code (`Index::update`, `Searcher::query`), so what is measured is what users get.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use dochash::index::search::{Fusion, Hit, Mode, SearchParams};
use dochash::index::{Index, Progress, UpdateOptions};

use crate::cli::{Global, RetrievalArgs};
use crate::shared;
use crate::shared::bar;

/// One known item: the query and where its answer is.
struct Item {
    query: String,
    file: PathBuf,
    first: u32,
    last: u32,
}

fn read_items(path: &Path, limit: Option<usize>) -> Result<Vec<Item>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        let bad = || {
            anyhow::anyhow!(
                "{} line {}: expected query, file, first line, last line (tab-separated)",
                path.display(),
                i + 1
            )
        };
        if cols.len() < 4 {
            return Err(bad());
        }
        out.push(Item {
            query: cols[0].to_string(),
            file: PathBuf::from(cols[1]),
            first: cols[2].trim().parse().map_err(|_| bad())?,
            last: cols[3].trim().parse().map_err(|_| bad())?,
        });
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
    }
    if out.is_empty() {
        bail!("{}: no queries", path.display());
    }
    Ok(out)
}

/// `corpus` (the index's own choice) or a rule.
pub fn parse_fusion(s: &str) -> Result<Option<Fusion>> {
    if s == "corpus" {
        return Ok(None);
    }
    let (name, arg) = s.split_once(':').unwrap_or((s, ""));
    let num = |d: f32| -> Result<f32> {
        if arg.is_empty() {
            Ok(d)
        } else {
            arg.parse()
                .with_context(|| format!("{s}: expected a number after ':'"))
        }
    };
    match name {
        "rrf" => Ok(Some(Fusion::Rrf { k: num(60.0)? })),
        "convex" => Ok(Some(Fusion::Convex { alpha: num(0.5)? })),
        "zscore" => Ok(Some(Fusion::Zscore { alpha: num(0.5)? })),
        _ => bail!("unknown fusion {s:?}: use corpus, rrf, rrf:K, convex:ALPHA or zscore:ALPHA"),
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
struct Scores {
    mode: String,
    hit_at_1: f64,
    hit_at_10: f64,
    mrr_at_10: f64,
    /// Different files among the first 10 results, on average.
    distinct_files_at_10: f64,
    /// MRR@10 counting a result only when the passage it shows holds the answer (not a
    /// passage folded into it).
    mrr_at_10_shown: f64,
    queries: usize,
}

pub fn run(g: &Global, a: &RetrievalArgs) -> Result<()> {
    let modes: Vec<Mode> = a
        .modes
        .split(',')
        .map(|m| m.trim().parse::<Mode>().map_err(anyhow::Error::msg))
        .collect::<Result<_>>()?;
    let fusion = parse_fusion(&a.fusion)?;
    let items = read_items(&a.queries, a.limit)?;
    // Created before the work, so that a path that cannot be written fails at once.
    let ranks_file = a
        .ranks
        .as_ref()
        .map(|p| std::fs::File::create(p).with_context(|| format!("cannot write {}", p.display())))
        .transpose()?;
    let mut pool_file = a
        .pool
        .as_ref()
        .map(|p| {
            std::fs::File::create(p)
                .map(std::io::BufWriter::new)
                .with_context(|| format!("cannot write {}", p.display()))
        })
        .transpose()?;
    let docs = dochash::fsx::canonicalize(&a.docs)
        .with_context(|| format!("cannot use {}", a.docs.display()))?;

    let files = shared::resolve_model(g)?;
    let enc = shared::load_encoder(g, &files, None)?;
    let mut fp = dochash::app::fingerprint(&files, &enc);
    if let Some(t) = a.passage_tokens {
        fp.chunking.max_tokens = t.clamp(8, enc.max_len().saturating_sub(2));
        fp.chunking.min_tokens = (fp.chunking.max_tokens / 12).min(16);
        fp.chunking.overlap_tokens = (fp.chunking.max_tokens / 6).min(32);
    }
    if let Some(o) = a.overlap {
        fp.chunking.overlap_tokens = o;
    }
    if a.no_heading_embed {
        fp.chunking.embed_headings = false;
    }
    if a.within_sections {
        fp.chunking.across_sections = false;
    }
    if let Some(u) = a.unit_tokens {
        fp.chunking.unit_tokens = if u == 0 {
            0
        } else {
            u.clamp(8, fp.chunking.max_tokens)
        };
    }
    let tmp;
    let home = match &a.home {
        Some(h) => h.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let dir = home.join("index");
    let (mut index, notes) = Index::open(&dir, &fp)
        .with_context(|| format!("cannot open the index at {}", dir.display()))?;
    for n in notes {
        shared::note(g, n);
    }
    index.add_roots(std::slice::from_ref(&docs))?;
    let pb = bar(g, 0, "indexing");
    index.update(
        &enc,
        &UpdateOptions::keeping(index.meta(), None),
        &mut |p, _| {
            if let Progress::Embedded { done, total, .. } = p {
                pb.set_length(total as u64);
                pb.set_position(done as u64);
            }
        },
    )?;
    pb.finish_and_clear();
    if a.refit_fusion {
        index.fit_fusion(&enc, &std::sync::atomic::AtomicBool::new(false))?;
    }
    let searcher = index.searcher()?;
    shared::note(
        g,
        format!(
            "{} passages of {} files; chunking {:?}",
            index.store().passage_count(),
            index.store().file_count(),
            fp.chunking
        ),
    );
    if let Some(c) = &index.meta().fusion {
        shared::note(g, format!("the corpus's fusion: {}", c.describe()));
    }

    let mut ranks = String::new();
    let mut rows = Vec::new();
    for mode in modes {
        let pb = bar(g, items.len() as u64, &format!("{mode:?}").to_lowercase());
        let mut s = Scores {
            mode: format!("{mode:?}").to_lowercase(),
            queries: items.len(),
            ..Default::default()
        };
        let params = SearchParams {
            k: 10,
            mode,
            fusion,
            whole_pool: pool_file.is_some(),
            group: a.group,
            ..Default::default()
        };
        let mut shown = 0;
        for (i, it) in items.iter().enumerate() {
            let hits = searcher.query(&enc, &it.query, &params)?;
            let want = docs.join(&it.file);
            let wanted = |h: &Hit| h.covers(&want, it.first, it.last);
            let mut files: Vec<&std::path::Path> = hits
                .iter()
                .take(params.k)
                .map(|h| h.path.as_path())
                .collect();
            files.sort();
            files.dedup();
            s.distinct_files_at_10 += files.len() as f64;
            if let (Some(f), Some(path)) = (pool_file.as_mut(), &a.pool) {
                use std::io::Write;
                let opt = |x: Option<f32>| x.map(|x| x.to_string()).unwrap_or_default();
                let mut lines: Vec<String> = hits
                    .iter()
                    .enumerate()
                    .map(|(n, h)| {
                        format!(
                            "{}\t{}\t{}\t{}\t{}",
                            n + 1,
                            u8::from(wanted(h)),
                            opt(h.cosine),
                            opt(h.bm25),
                            h.score
                        )
                    })
                    .collect();
                // A query nothing answered still has its line, so that every query is counted.
                if lines.is_empty() {
                    lines.push("0\t0\t\t\t".into());
                }
                for l in lines {
                    writeln!(f, "{}\t{}\t{l}", s.mode, i + 1)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                }
            }
            let rank = hits.iter().take(params.k).position(wanted);
            let shows = |h: &Hit| h.path == want && h.line <= it.last && h.end_line >= it.first;
            if let Some(r) = hits.iter().take(params.k).position(shows) {
                s.mrr_at_10_shown += 1.0 / (r + 1) as f64;
            }
            ranks.push_str(&format!(
                "{}\t{}\t{}\n",
                s.mode,
                i + 1,
                rank.map_or(0, |r| r + 1)
            ));
            if let Some(r) = rank {
                s.hit_at_10 += 1.0;
                s.mrr_at_10 += 1.0 / (r + 1) as f64;
                if r == 0 {
                    s.hit_at_1 += 1.0;
                }
            } else if shown < a.misses {
                shown += 1;
                let mut lines = vec![format!(
                    "{} missed {:?} (want {}:{}-{})",
                    s.mode,
                    it.query,
                    it.file.display(),
                    it.first,
                    it.last
                )];
                for h in hits.iter().take(3) {
                    let rel = h.path.strip_prefix(&docs).unwrap_or(&h.path);
                    lines.push(format!(
                        "    {}:{}-{} {:?}",
                        rel.display(),
                        h.line,
                        h.end_line,
                        h.text.chars().take(80).collect::<String>()
                    ));
                }
                for l in lines {
                    shared::note(g, l);
                }
            }
            pb.set_position(i as u64 + 1);
        }
        pb.finish_and_clear();
        let n = items.len() as f64;
        s.hit_at_1 /= n;
        s.hit_at_10 /= n;
        s.mrr_at_10 /= n;
        s.distinct_files_at_10 /= n;
        s.mrr_at_10_shown /= n;
        rows.push(s);
    }
    if let (Some(mut f), Some(path)) = (ranks_file, &a.ranks) {
        use std::io::Write;
        f.write_all(ranks.as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let (Some(f), Some(path)) = (pool_file, &a.pool) {
        f.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if a.json {
        for r in &rows {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        println!("| mode | hit@1 | hit@10 | MRR@10 | files in top 10 |");
        println!("|---|---:|---:|---:|---:|");
        for r in &rows {
            println!(
                "| {} | {:.3} | {:.3} | {:.3} | {:.2} |",
                r.mode, r.hit_at_1, r.hit_at_10, r.mrr_at_10, r.distinct_files_at_10
            );
        }
    }
    Ok(())
}
