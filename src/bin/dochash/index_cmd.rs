//! `dochash index`: add folders and bring the index up to date.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use dochash::encoder::BatchLimits;
use dochash::index::{Progress, UpdateOptions};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::{Global, IndexArgs};
use crate::shared;

pub fn run(g: &Global, args: &IndexArgs) -> Result<ExitCode> {
    // A running TUI or `dochash watch` owns the index and keeps it up to date: hand it the
    // new folders instead of failing on the database lock.
    let home = dochash::app::Home::locate()?;
    if let Some(owner) = home.owner()? {
        if !args.forget.is_empty()
            || !args.include.is_empty()
            || !args.exclude.is_empty()
            || args.extensions.is_some()
            || args.max_file_size.is_some()
            || args.bits.is_some()
        {
            bail!(
                "a running dochash (TUI or `dochash watch`) owns the index; stop it to change folders, filters or --bits"
            );
        }
        let mut add = Vec::new();
        for p in &args.paths {
            add.push(dochash::index::check_root(p)?);
        }
        owner.add_roots(add.clone())?;
        for a in &add {
            shared::note(g, format!("added {}", a.display()));
        }
        shared::note(
            g,
            "a running dochash owns the index and is updating it; `dochash status` shows progress",
        );
        return Ok(ExitCode::SUCCESS);
    }
    let (home, writer, mut index) = shared::open_index(g)?;
    let enc = writer.encoder;

    for p in &args.forget {
        if !index.forget_root(p)? {
            shared::note(g, format!("{} was not an indexed folder", p.display()));
        }
    }
    let added = index.add_roots(&args.paths)?;
    for a in &added {
        shared::note(g, format!("added {}", a.display()));
    }
    if index.meta().roots.is_empty() && args.forget.is_empty() {
        bail!("no folders are indexed yet; run `dochash index PATH`");
    }

    let mut corpus = index.meta().corpus.clone();
    let mut corpus_changed = false;
    if !args.include.is_empty() {
        corpus.include = args.include.clone();
        corpus_changed = true;
    }
    if !args.exclude.is_empty() {
        corpus.exclude = args.exclude.clone();
        corpus_changed = true;
    }
    if let Some(e) = &args.extensions {
        corpus.extensions = Some(
            e.iter()
                .map(|x| x.trim_start_matches('.').to_string())
                .collect(),
        );
        corpus_changed = true;
    }
    if let Some(m) = args.max_file_size {
        corpus.max_file_bytes = Some(m);
        corpus_changed = true;
    }
    if corpus_changed {
        index.set_corpus(corpus)?;
    }
    let opts = UpdateOptions {
        bits: args.bits,
        limits: BatchLimits {
            max_batch: args.batch.max(1),
            max_tokens: args.batch.max(1) * 128,
        },
        ..UpdateOptions::keeping(index.meta(), None)
    };

    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if g.quiet {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {pos}/{len} files, {elapsed} (eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message("scanning");
    let started = std::time::Instant::now();
    let report = index
        .update(&enc, &opts, &mut |p, _| match p {
            Progress::Planned { changed, .. } => {
                bar.set_length(changed as u64);
                bar.set_message("embedding");
            }
            Progress::Embedded { done, passages, .. } => {
                bar.set_position(done as u64);
                bar.set_message(format!("embedding ({passages} passages)"));
            }
            Progress::Fitting { passages } => {
                bar.set_message(format!("fitting codes on {passages} passages"));
            }
            Progress::FittingFusion => {
                bar.set_message("fitting the fusion to the notes' questions")
            }
        })
        .context("indexing failed")?;
    bar.finish_and_clear();
    if let Err(e) = home.record_change(report.passages_added + report.passages_removed) {
        shared::note(
            g,
            format!("cannot record the change for the background retraining rule: {e}"),
        );
    }
    // A code length asked for is a setting: later updates (and rebuilds) keep it instead of
    // choosing by size. Saved once codes of that length exist.
    if let Some(b) = args.bits
        && index.meta().corpus.bits != Some(b)
    {
        let mut corpus = index.meta().corpus.clone();
        corpus.bits = Some(b);
        index.set_corpus(corpus)?;
    }

    for n in report.notes() {
        shared::note(g, n);
    }
    if let Some(r) = &report.refit {
        shared::note(g, r);
    }
    if let Some(f) = &report.fusion {
        shared::note(g, format!("fusion: {}", f.describe()));
    }
    let secs = started.elapsed().as_secs_f64();
    shared::note(
        g,
        format!(
            "{} files ({} embedded, {} unchanged, {} removed), {} passages added, {} removed, in {:.1}s; {} passages indexed",
            report.files_seen,
            report.files_embedded,
            report.files_unchanged,
            report.files_removed,
            report.passages_added,
            report.passages_removed,
            secs,
            index.store().passage_count()
        ),
    );
    Ok(ExitCode::SUCCESS)
}
