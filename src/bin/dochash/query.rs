//! `dochash query` and `dochash status`: answers from the index as it is, never rebuilding it.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use dochash::app::sanitize::sanitize;
use dochash::app::socket::{self, Reply, Request};
use dochash::index::{Hit, Index, IndexError, SearchParams, StoreError, hamming};
use dochash::model::{self, ModelSpec};

use crate::cli::{Global, QueryArgs, StatusArgs};
use crate::shared;

/// The index itself, or — when another process owns it — that owner's answer to `req`.
enum Source {
    Direct(Box<Index>),
    Owner(Reply),
}

fn open(req: &Request) -> Result<Source> {
    let home = model::home_dir()?;
    if let Some(reply) = socket::ask(&home, req) {
        return Ok(Source::Owner(reply.map_err(|e| anyhow!(e))?));
    }
    let dir = dochash::app::generation::index_dir(&home);
    match Index::open_existing(&dir) {
        Ok(Some(i)) => Ok(Source::Direct(Box::new(i))),
        Ok(None) => {
            bail!("nothing is indexed yet; run `dochash index PATH` (or `dochash-tui PATH`) first")
        }
        Err(e @ IndexError::Store(StoreError::Locked(_))) => {
            // An owner that is still starting holds the database before its socket is up.
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Some(reply) = socket::ask(&home, req) {
                    return Ok(Source::Owner(reply.map_err(|e| anyhow!(e))?));
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
    // A running owner (TUI or `dochash watch`) holds the index: ask it.
    let req = Request::Query {
        text: text.clone(),
        k: args.k,
        per_file: args.per_file,
        candidates: args.candidates,
    };
    let index = match open(&req)? {
        Source::Direct(i) => i,
        Source::Owner(Reply::Hits(hits)) => return print_hits(g, args, &hits),
        Source::Owner(Reply::Error(e)) => return Err(anyhow!(e)),
        Source::Owner(Reply::Status(_)) => bail!("unexpected reply from the running dochash"),
    };
    let meta = index.meta().clone();
    // The index's own model, unless the user names one; vectors of two models never mix.
    // A named model goes through the generation map (the base a generation was trained from
    // means the generation's encoder).
    let files = match &g.model {
        Some(_) => shared::resolve_index_model(g)?,
        None => {
            let spec = dochash::app::spec_from_id(&meta.fingerprint.model_id);
            model::resolve(&spec, &shared::fetch_options(g)).with_context(|| match &spec {
                ModelSpec::LocalDir(d) => format!("cannot use the model folder {}", d.display()),
                ModelSpec::Hub(n) => format!("cannot get the model {n}"),
            })?
        }
    };
    let enc = shared::load_encoder(g, &files, None)?;
    let fp = dochash::app::fingerprint(&files, &enc);
    if fp != meta.fingerprint {
        bail!(
            "the index was made with {} and cannot be searched with {} as it is; run `dochash index` to rebuild it",
            meta.fingerprint.model_id,
            fp.model_id
        );
    }
    let searcher = index.searcher()?;
    let params = SearchParams {
        k: args.k,
        candidates: args.candidates,
        per_file: args.per_file,
    };
    let hits = searcher
        .query(index.store(), &enc, &text, &params)
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
        for (i, h) in hits.iter().enumerate() {
            let trail = h.headings.join(" › ");
            writeln!(
                out,
                "{:>2}. {}:{}  {:.3}{}",
                i + 1,
                h.path.display(),
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
    let index = match open(&Request::Status)? {
        Source::Direct(i) => i,
        Source::Owner(Reply::Error(e)) => bail!(e),
        Source::Owner(Reply::Hits(_)) => bail!("unexpected reply from the running dochash"),
        Source::Owner(Reply::Status(s)) => {
            print_owner_status(args, s)?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    let m = index.meta();
    let searcher = index.searcher()?;
    let code = m.code.as_ref();
    let home = dochash::model::home_dir()?;
    let trained = dochash::app::generation::active(&home).map(|a| {
        serde_json::json!({
            "generation": a.generation,
            "simcse": a.model_dir.is_some(),
            "manifest": dochash::app::generation::generation_dir(&home, a.generation).join("manifest.json"),
        })
    });
    let v = serde_json::json!({
        "index": index.store().path(),
        "roots": m.roots,
        "files": index.store().file_count(),
        "passages": index.store().passage_count(),
        "model": m.fingerprint.model_id,
        "dim": m.fingerprint.dim,
        "codes": code.map(|c| c.source.clone()),
        "bits": code.map(|c| c.bits),
        "code_generation": code.map(|c| c.generation),
        "stale_codes": searcher.stale(),
        "hamming_kernel": hamming::kernel_name(),
        "size_bytes": index.store().size_on_disk(),
        "trained": trained,
    });
    if args.json {
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("index     {}", index.store().path().display());
    println!(
        "roots     {}",
        if m.roots.is_empty() {
            "(none)".into()
        } else {
            m.roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    println!("files     {}", index.store().file_count());
    println!("passages  {}", index.store().passage_count());
    println!(
        "model     {} ({} dimensions)",
        m.fingerprint.model_id, m.fingerprint.dim
    );
    match code {
        Some(c) => println!(
            "codes     {} {}-bit (generation {}, fitted on {} passages){}",
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
        None => println!("codes     none yet (searching exactly)"),
    }
    if let Some(t) = &trained {
        println!(
            "trained   generation {} ({}); {}",
            t["generation"],
            if t["simcse"] == true {
                "SimCSE-tuned encoder"
            } else {
                "base encoder"
            },
            t["manifest"].as_str().unwrap_or_default()
        );
    }
    println!("hamming   {} kernel", hamming::kernel_name());
    println!(
        "size      {:.1} MiB",
        index.store().size_on_disk() as f64 / (1024.0 * 1024.0)
    );
    Ok(ExitCode::SUCCESS)
}

fn print_owner_status(args: &StatusArgs, s: socket::StatusReply) -> Result<()> {
    if args.json {
        let mut v = serde_json::to_value(&s)?;
        v["owner"] = true.into();
        println!("{v}");
    } else {
        println!("owner     a running dochash holds the index");
        println!(
            "roots     {}",
            s.roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!("files     {}", s.files);
        println!("passages  {}", s.passages);
        println!("model     {}", s.model);
        println!("codes     {}", s.codes);
        println!("device    {}", s.device);
        if let Some(t) = &s.trained {
            println!("trained   {t}");
        }
        for n in &s.notes {
            println!("note      {n}");
        }
        if let Some(j) = s.job {
            println!("job       {j}");
        }
    }
    Ok(())
}
