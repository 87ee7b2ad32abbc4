//! `dochash query` and `dochash status`: answers from the index as it is, never rebuilding it.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dochash::app::sanitize::sanitize;
use dochash::app::socket::{Client, QueryRequest};
use dochash::app::{EngineStatus, Home};
use dochash::index::lexical::Highlighter;
use dochash::index::search::{Group, check_query};
use dochash::index::split_filters;
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
        group: if args.per_file {
            Group::File
        } else {
            args.group
        },
        candidates: args.candidates,
        mode: args.mode,
        path: None,
        filters: args.filters.filters()?,
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
    let (words, params) = req.plan(&meta.roots)?;
    let searcher = index.searcher()?;
    let hits = searcher
        .query(&enc, &words, &params)
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
        let words = split_filters(&args.text.join(" ")).map_or_else(|_| String::new(), |w| w.0);
        let marker = Marker::for_stdout(&words);
        for (i, h) in hits.iter().enumerate() {
            let trail = h.headings.join(" › ");
            writeln!(
                out,
                "{:>2}. {}{}  {:.3}{}{}",
                i + 1,
                show_path(&h.path),
                h.location(),
                h.score,
                if trail.is_empty() {
                    String::new()
                } else {
                    format!("  {}", sanitize(&trail))
                },
                if h.more.is_empty() {
                    String::new()
                } else {
                    format!("  (+{} more here)", h.more.len())
                }
            )?;
            for l in snippet_lines(h, args.context) {
                writeln!(out, "      {}", marker.line(l))?;
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

/// The lines shown under a hit: its snippet, widened by `context` lines of the passage on
/// each side, without blank lines at either end.
fn snippet_lines(h: &Hit, context: usize) -> Vec<&str> {
    let lines: Vec<&str> = h.text.split('\n').collect();
    let shown = h.snippet.text.split('\n').count().max(1);
    let at = (h.snippet.line.saturating_sub(h.line)) as usize;
    if h.snippet.line < h.line || at >= lines.len() {
        return h.snippet.text.split('\n').collect();
    }
    let from = at.saturating_sub(context);
    let to = at
        .saturating_add(shown)
        .saturating_add(context)
        .min(lines.len());
    let mut out = &lines[from..to];
    while out.first().is_some_and(|l| l.trim().is_empty()) {
        out = &out[1..];
    }
    while out.last().is_some_and(|l| l.trim().is_empty()) {
        out = &out[..out.len() - 1];
    }
    out.to_vec()
}

/// Marks the query's words in shown lines (bold, on a terminal that takes colour) and fits
/// each line to the terminal's width, keeping its first marked word in view.
struct Marker {
    words: Highlighter,
    bold: bool,
    width: usize,
}

impl Marker {
    fn for_stdout(words: &str) -> Self {
        use std::io::IsTerminal;
        let tty = std::io::stdout().is_terminal();
        let width = if tty {
            crossterm::terminal::size().map_or(100, |(w, _)| w as usize)
        } else {
            // Piped output is read by programs and other tools: lines as a wide terminal shows them.
            160
        };
        Marker {
            words: Highlighter::new(words),
            bold: tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            // The indent, and room for the ellipses.
            width: width.saturating_sub(8).max(20),
        }
    }

    fn line(&self, raw: &str) -> String {
        let raw = raw.trim_end();
        let marks = self.words.ranges(raw);
        let chars: Vec<(usize, char)> = raw.char_indices().collect();
        // Columns, not characters: a CJK character takes two.
        let cols = |c: char| unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        // A window of `width` columns, starting about a quarter of it before the first mark.
        let first = marks
            .first()
            .map_or(0, |m| chars.partition_point(|&(b, _)| b < m.start));
        let mut start = first;
        let mut before = 0;
        while start > 0 && before + cols(chars[start - 1].1) <= self.width / 4 {
            start -= 1;
            before += cols(chars[start].1);
        }
        let fits = |from: usize| {
            let mut used = 0;
            let mut end = from;
            while end < chars.len() && used + cols(chars[end].1) <= self.width {
                used += cols(chars[end].1);
                end += 1;
            }
            end
        };
        // The whole line when it fits; otherwise no room left unused at its end.
        if fits(0) == chars.len() {
            start = 0;
        }
        while start > 0 && fits(start - 1) == chars.len() {
            start -= 1;
        }
        let end = fits(start);
        let byte = |i: usize| chars.get(i).map_or(raw.len(), |c| c.0);
        let (lo, hi) = (byte(start), byte(end));
        let mut out = String::new();
        if start > 0 {
            out.push('…');
        }
        let mut at = lo;
        for m in marks.iter().filter(|m| m.start >= lo && m.end <= hi) {
            out.push_str(&sanitize(&raw[at..m.start]));
            let word = sanitize(&raw[m.clone()]);
            if self.bold {
                out.push_str(&format!("\x1b[1m{word}\x1b[0m"));
            } else {
                out.push_str(&word);
            }
            at = m.end;
        }
        out.push_str(&sanitize(&raw[at..hi]));
        if end < chars.len() {
            out.push('…');
        }
        out
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use unicode_width::UnicodeWidthStr;

    fn marker(width: usize) -> Marker {
        Marker {
            words: Highlighter::new("needle"),
            bold: false,
            width,
        }
    }

    #[test]
    fn shown_lines_fit_the_width_in_columns_and_keep_the_match_in_view() {
        let m = marker(40);
        assert_eq!(m.line("a short needle line"), "a short needle line");
        // Wide characters count two columns each.
        let cjk = format!("{} needle {}", "東".repeat(200), "x".repeat(50));
        let shown = m.line(&cjk);
        assert!(shown.contains("needle"), "{shown}");
        assert!(
            shown.width() <= 40 + 2,
            "{} columns: {shown}",
            shown.width()
        );
        assert!(shown.starts_with('…') && shown.ends_with('…'));
        // A match near the end: the window ends with the line, no room left unused.
        let tail = format!("{} needle", "y".repeat(300));
        let shown = m.line(&tail);
        assert!(shown.ends_with("needle") && shown.width() == 41, "{shown}");
        // Control characters never pass, marked or not.
        let evil = m.line("x \x1b[2J needle \x07");
        assert!(!evil.contains('\x1b') && !evil.contains('\x07'), "{evil:?}");
    }

    #[test]
    fn a_huge_context_is_clamped_not_overflowed() {
        let mut h: Hit = serde_json::from_value(serde_json::json!({
            "id": 1, "path": "/n/a.md", "line": 1, "end_line": 3, "headings": [],
            "text": "first\nsecond\nthird", "score": 1.0, "cosine": null, "bm25": null,
            "semantic_rank": null, "lexical_rank": null, "distance": null
        }))
        .unwrap();
        h.snippet.line = 2;
        h.snippet.text = "second".into();
        assert_eq!(snippet_lines(&h, usize::MAX), ["first", "second", "third"]);
        assert_eq!(snippet_lines(&h, 0), ["second"]);
    }
}
