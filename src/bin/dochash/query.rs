//! `dochash query` and `dochash status`: answers from the index as it is, never rebuilding it.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dochash::app::sanitize::sanitize;
use dochash::app::socket::{Client, QueryRequest};
use dochash::app::{EngineStatus, Home};
use dochash::index::search::check_query;
use dochash::index::{Hit, Index, IndexError, StoreError, hamming};
use dochash::pathwire::show as show_path;

use crate::cli::{Global, QueryArgs, StatusArgs};
use crate::shared;

/// The index itself, or — when another process owns it — a client of that owner.
enum Source {
    Direct(Box<Index>),
    Owner(Client),
}

fn open(home: &Home) -> Result<Source> {
    if let Some(c) = home.owner()? {
        return Ok(Source::Owner(c));
    }
    let dir = home.index_dir();
    match home.open_for_reading() {
        Ok(Some(i)) => Ok(Source::Direct(Box::new(i))),
        Ok(None) => {
            bail!("nothing is indexed yet; run `dochash index PATH` (or `dochash-tui PATH`) first")
        }
        Err(e @ IndexError::Store(StoreError::Locked(_))) => {
            // An owner that is still starting holds the database before its socket is up.
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Some(c) = home.owner()? {
                    return Ok(Source::Owner(c));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e).with_context(|| format!("cannot open the index at {}", dir.display()))
        }
        Err(e) => Err(e).with_context(|| format!("cannot open the index at {}", dir.display())),
    }
}

pub fn run(g: &Global, args: &QueryArgs) -> Result<ExitCode> {
    let text = args.text.join(" ");
    check_query(&text)?;
    let req = QueryRequest {
        text: text.clone(),
        k: args.k,
        per_file: args.per_file,
        candidates: args.candidates,
        mode: args.mode,
        path: args.path.clone(),
    };
    // A running owner (TUI or `dochash watch`) holds the index: ask it.
    let home = Home::locate()?;
    let index = match open(&home)? {
        Source::Direct(i) => i,
        Source::Owner(c) => return print_hits(g, args, &c.query(&req)?),
    };
    let meta = index.meta().clone();
    // The index's own model, unless the user names one; vectors of two models never mix.
    // A named model goes through the generation map (the base a generation was trained from
    // means the generation's encoder).
    let files = match &g.model {
        Some(_) => home
            .reader_model(&shared::model_choice(g))
            .context("cannot get the model")?,
        None => shared::resolve_spec(g, &dochash::app::spec_from_id(&meta.fingerprint.model_id))?,
    };
    // Likewise its precision.
    let precision = g.precision.or(Some(meta.fingerprint.precision));
    let enc = shared::load_encoder_with(g, &files, None, false, precision)?;
    let fp = dochash::app::fingerprint(&files, &enc);
    if fp != meta.fingerprint {
        bail!(
            "the index cannot be searched with {} as it is: it was {}; run `dochash index` to rebuild it",
            fp.model_id,
            meta.fingerprint.difference(&fp)
        );
    }
    let params = req.params(&meta.roots)?;
    let searcher = index.searcher()?;
    let hits = searcher
        .query(&enc, &text, &params)
        .context("cannot answer the query")?;
    print_hits(g, args, &hits)
}

fn print_hits(g: &Global, args: &QueryArgs, hits: &[Hit]) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if args.json {
        for h in hits {
            serde_json::to_writer(&mut out, h)?;
            out.write_all(b"\n")?;
        }
    } else {
        if hits.first().is_some_and(|h| h.without_phrases) {
            shared::note(g, dochash::index::search::PHRASES_MISSING);
        }
        for (i, h) in hits.iter().enumerate() {
            let trail = h.headings.join(" › ");
            writeln!(
                out,
                "{:>2}. {}:{}  {:.3}{}",
                i + 1,
                show_path(&h.path),
                h.line,
                h.score,
                if trail.is_empty() {
                    String::new()
                } else {
                    format!("  {}", sanitize(&trail))
                }
            )?;
            for l in snippet(&h.text, 3) {
                writeln!(out, "      {l}")?;
            }
        }
        if hits.is_empty() {
            shared::note(g, "no results");
        }
    }
    out.flush()?;
    Ok(if hits.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The first non-blank lines of a passage, shortened and sanitised so that a document can never
/// drive the terminal.
fn snippet(text: &str, lines: usize) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(lines)
        .map(|l| {
            let l = sanitize(l);
            if l.chars().count() > 100 {
                format!("{}…", l.chars().take(100).collect::<String>())
            } else {
                l
            }
        })
        .collect()
}

pub fn status(args: &StatusArgs) -> Result<ExitCode> {
    let home = Home::locate()?;
    let index = match open(&home)? {
        Source::Direct(i) => i,
        Source::Owner(c) => {
            print_owner_status(args, c.status()?)?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    let m = index.meta();
    let searcher = index.searcher()?;
    let code = m.code.as_ref();
    let trained = home.active().map(|a| {
        serde_json::json!({
            "generation": a.generation,
            "simcse": a.model_dir.is_some(),
            "manifest": home.generation_dir(a.generation).join("manifest.json"),
            "gained": dochash::app::train::gained(home.dir(), a.generation),
        })
    });
    let files = index.store().file_count();
    let passages = index.store().passage_count();
    if args.json {
        let v = serde_json::json!({
            "index": index.store().path(),
            "roots": m.roots.iter().map(|r| r.to_string_lossy()).collect::<Vec<_>>(),
            "files": files,
            "passages": passages,
            "model": m.fingerprint.model_id,
            "dim": m.fingerprint.dim,
            "precision": m.fingerprint.precision,
            "int8_kernel": dochash::encoder::Encoder::int8_kernel(),
            "codes": code.map(|c| c.source.clone()),
            "bits": code.map(|c| c.bits),
            "code_generation": code.map(|c| c.generation),
            "stale_codes": searcher.stale(),
            "hamming_kernel": hamming::kernel_name(),
            "filter": searcher.filter_name(),
            "fusion": m.fusion,
            "size_bytes": index.store().size_on_disk(),
            "trained": trained,
        });
        writeln!(std::io::stdout(), "{v}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut lines = vec![
        format!("index     {}", index.store().path().display()),
        format!("roots     {}", roots_line(&m.roots)),
        format!("files     {files}"),
        format!("passages  {passages}"),
        format!(
            "model     {} ({} dimensions, {})",
            m.fingerprint.model_id,
            m.fingerprint.dim,
            match m.fingerprint.precision {
                dochash::encoder::Precision::Int8 => {
                    format!("int8 ({})", dochash::encoder::Encoder::int8_kernel())
                }
                p => p.to_string(),
            }
        ),
        match code {
            Some(c) => format!(
                "codes     {} {}-bit (code generation {}, fitted on {} passages){}",
                c.source,
                c.bits,
                c.generation,
                c.fitted_on,
                if searcher.stale() > 0 {
                    format!(", {} passages awaiting codes", searcher.stale())
                } else {
                    String::new()
                }
            ),
            None => "codes     none yet (searching exactly)".into(),
        },
    ];
    if let Some(t) = &trained {
        lines.push(format!(
            "trained   generation {} ({}); {}",
            t["generation"],
            if t["simcse"] == true {
                "SimCSE-tuned encoder"
            } else {
                "base encoder"
            },
            t["manifest"].as_str().unwrap_or_default()
        ));
        if let Some(g) = t["gained"].as_str() {
            lines.push(format!("gained    {g}"));
        }
    }
    lines.push(format!("filter    {}", searcher.filter_name()));
    lines.push(format!("fusion    {}", fusion_line(m.fusion.as_ref())));
    lines.push(format!(
        "size      {:.1} MiB",
        index.store().size_on_disk() as f64 / (1024.0 * 1024.0)
    ));
    print_lines(&lines)?;
    Ok(ExitCode::SUCCESS)
}

/// What `status` says of the fusion, with or without an owner.
fn fusion_line(f: Option<&dochash::index::FusionChoice>) -> String {
    match f {
        Some(f) => f.describe(),
        None => format!(
            "semantic weight {:.1} (the default): not fitted yet",
            dochash::index::search::DEFAULT_SEMANTIC_WEIGHT
        ),
    }
}

fn roots_line(roots: &[std::path::PathBuf]) -> String {
    if roots.is_empty() {
        return "(none)".into();
    }
    roots
        .iter()
        .map(|r| show_path(r))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Prints lines for a person: sanitised, since paths and notes come from the disk.
fn print_lines(lines: &[String]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for l in lines {
        writeln!(out, "{}", sanitize(l))?;
    }
    out.flush()?;
    Ok(())
}

fn print_owner_status(args: &StatusArgs, s: EngineStatus) -> Result<()> {
    if args.json {
        let mut v = serde_json::to_value(&s)?;
        v["owner"] = true.into();
        writeln!(std::io::stdout(), "{v}")?;
        return Ok(());
    }
    let mut lines = vec![
        "owner     a running dochash holds the index".to_string(),
        format!("roots     {}", roots_line(&s.roots)),
        format!("files     {}", s.files),
        format!("passages  {}", s.passages),
        format!("model     {}", s.model),
        format!("codes     {}", s.codes),
        format!("fusion    {}", fusion_line(s.fusion.as_ref())),
        format!("device    {}", s.device),
    ];
    if let Some(t) = &s.trained {
        lines.push(format!("trained   {t}"));
    }
    if let Some(g) = &s.gained {
        lines.push(format!("gained    {g}"));
    }
    for n in &s.notes {
        lines.push(format!("note      {n}"));
    }
    if let Some(j) = &s.job {
        lines.push(format!("job       {j}"));
    }
    if let Some(e) = &s.error {
        lines.push(format!("error     {e}"));
    }
    print_lines(&lines)
}
