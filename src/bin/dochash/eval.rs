//! `dochash eval …`: the papers' evaluation protocols on labelled data passed as paths.
//!
//! `hashing`: database = the train file, queries = the test file, relevant = same label, P@100
//! over the top 100 by Hamming distance (ties: the earlier database document). `sts`: Spearman
//! correlation of cosine similarity with gold scores. `retrieval` (known-item search over a
//! folder) is in `retrieval.rs`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use dochash::encoder::{BatchLimits, Encoder, Pooling};
use dochash::index::binarize::{LinearHasher, Method};
use dochash::model::ModelFiles;
use dochash::train::dhim::{self, DhimConfig};
use dochash::train::metrics::{self, label_ids};
use dochash::train::simcse::{self, SimcseConfig};
use dochash::train::states::CorpusStates;

use crate::bench::read_jsonl;
use crate::cli::{AdoptionArgs, EvalCmd, Global, HashingArgs, StsArgs, TextArgs};
use crate::shared::{self, bar};

pub fn run(g: &Global, cmd: &EvalCmd) -> Result<ExitCode> {
    match cmd {
        EvalCmd::Hashing(a) => hashing(g, a),
        EvalCmd::Sts(a) => sts(g, a),
        EvalCmd::Retrieval(a) => crate::retrieval::run(g, a),
        EvalCmd::Adoption(a) => adoption(g, a),
        EvalCmd::Text(a) => text(a),
    }
    .map(|_| ExitCode::SUCCESS)
}

/// Prints (or writes) the text of each file as the index reads it; with `--out`, one TSV line
/// per file on stdout: name, pages (PDF), bytes of text, milliseconds, and why a file gave
/// none.
fn text(a: &TextArgs) -> Result<()> {
    use std::io::Write;
    let cfg = dochash::corpus::CorpusConfig::default();
    let mut stdout = std::io::stdout().lock();
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for f in &a.files {
        let started = std::time::Instant::now();
        let read = dochash::corpus::read_document(f, &cfg);
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let Some(dir) = &a.out else {
            match read {
                Ok(doc) => {
                    for l in dochash::app::sanitize::sanitize_lines(&doc.text) {
                        writeln!(stdout, "{l}")?;
                    }
                }
                Err(skip) => eprintln!("{}", dochash::app::sanitize::sanitize(&skip.to_string())),
            }
            continue;
        };
        let stem = f.file_stem().map(|s| s.to_string_lossy().into_owned());
        let name = dochash::app::sanitize::sanitize(&stem.unwrap_or_else(|| "file".into()));
        match read {
            Ok(doc) => {
                let pages = doc.text.matches(dochash::corpus::PAGE_BREAK).count() + 1;
                let out = dir.join(format!("{name}.txt"));
                std::fs::write(&out, &doc.text)
                    .with_context(|| format!("writing {}", out.display()))?;
                writeln!(stdout, "{name}\t{pages}\t{}\t{ms:.1}\t", doc.text.len())?;
            }
            Err(skip) => writeln!(
                stdout,
                "{name}\t0\t0\t{ms:.1}\t{}",
                dochash::app::sanitize::sanitize(&skip.reason.to_string())
            )?,
        }
    }
    Ok(())
}

const METHODS: [&str; 7] = [
    "cosine",
    "lsh",
    "median",
    "itq",
    "dhim",
    "simcse",
    "simcse+dhim",
];

/// Token states of `texts`, read from `cache` when this model, length limit and text list were
/// encoded before.
pub fn states_cached(
    g: &Global,
    files: &ModelFiles,
    enc: &Encoder,
    texts: &[&str],
    cache: &Path,
    what: &str,
) -> Result<CorpusStates> {
    let key = shared::encoding_key(files, enc, texts);
    let file = cache.join(format!("states-{key}.bin"));
    if let Some(s) = CorpusStates::load(&file)
        && s.len() == texts.len()
        && s.dim == enc.dim()
    {
        shared::note(g, format!("{what}: token states from {}", file.display()));
        return Ok(s);
    }
    let pb = bar(g, texts.len() as u64, &format!("encoding {what}"));
    let s = CorpusStates::encode(enc, texts, BatchLimits::default(), &mut |d, _| {
        pb.set_position(d as u64)
    })?;
    pb.finish_and_clear();
    std::fs::create_dir_all(cache).with_context(|| format!("cannot create {}", cache.display()))?;
    s.save(&file)
        .with_context(|| format!("cannot cache token states in {}", cache.display()))?;
    Ok(s)
}

pub fn default_cache() -> Result<PathBuf> {
    Ok(dochash::model::home_dir()?.join("eval-cache"))
}

struct Row {
    method: String,
    bits: Option<usize>,
    p: f64,
    seconds: Option<f64>,
}

fn hashing(g: &Global, a: &HashingArgs) -> Result<()> {
    let bits = crate::bench::parse_list(&a.bits)?;
    let methods: Vec<&str> = a.methods.split(',').map(str::trim).collect();
    if let Some(m) = methods.iter().find(|m| !METHODS.contains(m)) {
        bail!("unknown method {m:?}: use {}", METHODS.join(", "));
    }
    let train = read_jsonl(&a.train, a.limit_train)?;
    let test = read_jsonl(&a.test, a.limit_test)?;
    if train.len() < 2 || test.is_empty() {
        bail!(
            "{}: need at least 2 training and 1 test document",
            a.train.display()
        );
    }
    let mut table = Vec::new();
    let db_labels: Vec<u32> = label_ids(train.iter().map(|(l, _)| l.as_str()), &mut table);
    let q_labels = label_ids(test.iter().map(|(l, _)| l.as_str()), &mut table);
    let cache = match &a.cache {
        Some(c) => c.clone(),
        None => default_cache()?,
    };

    let files = shared::resolve_model(g)?;
    let enc = shared::load_encoder(g, &files, Some(a.max_len))?;

    let tt: Vec<&str> = train.iter().map(|(_, t)| t.as_str()).collect();
    let qt: Vec<&str> = test.iter().map(|(_, t)| t.as_str()).collect();
    let db = states_cached(g, &files, &enc, &tt, &cache, "train")?;
    let qs = states_cached(g, &files, &enc, &qt, &cache, "test")?;
    // An evenly spaced sample of the database (the files are often sorted by label).
    let sample: Option<Vec<usize>> = a
        .sample_train
        .filter(|&n| n < db.len())
        .map(|n| (0..n).map(|i| i * db.len() / n).collect());
    let (db, db_labels) = match &sample {
        Some(idx) => (db.subset(idx), idx.iter().map(|&i| db_labels[i]).collect()),
        None => (db, db_labels),
    };
    let dim = db.dim;
    let k = a.k;

    let mut rows = Vec::new();
    let emit = |r: Row, rows: &mut Vec<Row>| {
        if a.json {
            println!(
                "{}",
                serde_json::json!({"method": r.method, "bits": r.bits, "p_at_100": r.p,
                    "k": k, "train_seconds": r.seconds, "database": db_labels.len(), "queries": q_labels.len()})
            );
        } else {
            shared::note(
                g,
                format!(
                    "{:<12} {:>5}  P@{k} {:.4}",
                    r.method,
                    r.bits
                        .map(|b| b.to_string())
                        .unwrap_or_else(|| "float".into()),
                    r.p
                ),
            );
        }
        rows.push(r);
    };
    if methods.contains(&"cosine") {
        let p =
            metrics::precision_at_k_cosine(&db.pooled, &db_labels, &qs.pooled, &q_labels, dim, k);
        emit(
            Row {
                method: "cosine".into(),
                bits: None,
                p,
                seconds: None,
            },
            &mut rows,
        );
    }
    // SimCSE fine-tuned on the database texts (no labels), then encoded again.
    let tuned = if methods.iter().any(|m| m.starts_with("simcse")) {
        let key = shared::encoding_key(&files, &enc, &tt);
        let dir = simcse_model(g, &files.dir, &key, &tt, &simcse_config(a), &cache)?;
        let tfiles = dochash::model::resolve(
            &dochash::model::ModelSpec::LocalDir(dir.clone()),
            &shared::fetch_options(g),
        )?;
        let tenc = shared::load_encoder(g, &tfiles, Some(a.max_len))?;
        let tdb = states_cached(g, &tfiles, &tenc, &tt, &cache, "train (simcse)")?;
        let tdb = match &sample {
            Some(idx) => tdb.subset(idx),
            None => tdb,
        };
        let tqs = states_cached(g, &tfiles, &tenc, &qt, &cache, "test (simcse)")?;
        if methods.contains(&"simcse") {
            let p = metrics::precision_at_k_cosine(
                &tdb.pooled,
                &db_labels,
                &tqs.pooled,
                &q_labels,
                dim,
                k,
            );
            emit(
                Row {
                    method: "simcse".into(),
                    bits: None,
                    p,
                    seconds: None,
                },
                &mut rows,
            );
        }
        Some((tdb, tqs))
    } else {
        None
    };
    for &b in &bits {
        for (name, m) in [
            ("lsh", Method::Lsh),
            ("median", Method::Median),
            ("itq", Method::Itq),
        ] {
            if !methods.contains(&name) {
                continue;
            }
            let h = LinearHasher::fit(m, &db.pooled, db.len(), dim, b, 0x5eed)
                .with_context(|| format!("cannot fit {name} at {b} bits"))?;
            let dc = h.encode_batch(&db.pooled, db.len())?;
            let qc = h.encode_batch(&qs.pooled, qs.len())?;
            let p = metrics::precision_at_k_hamming(&dc, &db_labels, &qc, &q_labels, h.words(), k)?;
            emit(
                Row {
                    method: name.into(),
                    bits: Some(b),
                    p,
                    seconds: None,
                },
                &mut rows,
            );
        }
        if methods.contains(&"dhim") {
            let cfg = dhim_config(a, b);
            let (p, secs) = dhim_eval(g, &db, &qs, &db_labels, &q_labels, cfg, &enc, k)?;
            emit(
                Row {
                    method: "dhim".into(),
                    bits: Some(b),
                    p,
                    seconds: Some(secs),
                },
                &mut rows,
            );
        }
        if let Some((tdb, tqs)) = &tuned
            && methods.contains(&"simcse+dhim")
        {
            let cfg = dhim_config(a, b);
            let (p, secs) = dhim_eval(g, tdb, tqs, &db_labels, &q_labels, cfg, &enc, k)?;
            emit(
                Row {
                    method: "simcse+dhim".into(),
                    bits: Some(b),
                    p,
                    seconds: Some(secs),
                },
                &mut rows,
            );
        }
    }
    Ok(())
}

fn simcse_config(a: &HashingArgs) -> SimcseConfig {
    let mut cfg = SimcseConfig::default();
    if let Some(m) = a.simcse_mode {
        cfg.mode = m;
    }
    a.simcse_tuning.apply(&mut cfg);
    cfg
}

/// The SimCSE-tuned model for these texts and settings, trained once and kept in `cache`.
/// `texts_key` is [`shared::encoding_key`] of `texts` under the base model: the tuned model is
/// cached under it and the SimCSE settings.
pub fn simcse_model(
    g: &Global,
    base: &Path,
    texts_key: &str,
    texts: &[&str],
    cfg: &SimcseConfig,
    cache: &Path,
) -> Result<PathBuf> {
    let mut h = blake3::Hasher::new();
    h.update(texts_key.as_bytes());
    h.update(serde_json::to_string(cfg)?.as_bytes());
    let dir = cache.join(format!("simcse-{}", &h.finalize().to_hex()[..16]));
    if dir.join("model.safetensors").is_file() {
        shared::note(g, format!("simcse: tuned model from {}", dir.display()));
        return Ok(dir);
    }
    let pb = bar(g, texts.len() as u64, "simcse: lower layers");
    let (enc, report) = simcse::train(
        base,
        &simcse::Examples::own(texts),
        cfg,
        g.device,
        &AtomicBool::new(false),
        &mut |p| match p {
            simcse::Progress::Caching { done, total } => {
                pb.set_length(total as u64);
                pb.set_position(done as u64);
            }
            simcse::Progress::Step {
                epoch,
                step,
                steps,
                loss,
            } => {
                if step == 1 {
                    pb.set_prefix(format!("simcse epoch {epoch}"));
                }
                pb.set_length(steps as u64);
                pb.set_position(step as u64);
                pb.set_message(format!("loss {loss:.4}"));
            }
        },
    )?;
    pb.finish_and_clear();
    shared::note(
        g,
        format!(
            "simcse: {} steps, loss {:.4} → {:.4}, {:.0} s",
            report.steps, report.loss_start, report.loss_end, report.seconds
        ),
    );
    let tmp = cache.join(format!(".tmp-{}", std::process::id()));
    simcse::save_model(&enc, base, &Default::default(), &tmp)?;
    std::fs::write(
        tmp.join("simcse.json"),
        serde_json::to_string_pretty(&serde_json::json!({"config": cfg, "report": report}))?,
    )?;
    std::fs::rename(&tmp, &dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

fn dhim_config(a: &HashingArgs, bits: usize) -> DhimConfig {
    let mut cfg = DhimConfig {
        bits,
        ..Default::default()
    };
    if let Some(e) = a.epochs {
        cfg.max_epochs = e;
    }
    if let Some(x) = a.alpha {
        cfg.alpha = x;
    }
    if let Some(x) = a.beta {
        cfg.beta = x;
    }
    if let Some(x) = a.lr {
        cfg.lr = x;
    }
    if let Some(x) = a.filters {
        cfg.filters = x;
    }
    if let Some(x) = a.sentence_code {
        cfg.sentence_code = x;
    }
    if let Some(x) = a.init {
        cfg.init = x;
    }
    cfg
}

#[allow(clippy::too_many_arguments)]
fn dhim_eval(
    g: &Global,
    db: &CorpusStates,
    qs: &CorpusStates,
    db_labels: &[u32],
    q_labels: &[u32],
    cfg: DhimConfig,
    enc: &Encoder,
    k: usize,
) -> Result<(f64, f64)> {
    let bits = cfg.bits;
    let pb = bar(g, 0, &format!("dhim {bits} bits"));
    let (head, report) =
        dhim::train(
            db,
            cfg,
            enc.device(),
            &AtomicBool::new(false),
            &mut |p| match p {
                dhim::Progress::Step {
                    epoch,
                    step,
                    steps,
                    loss,
                } => {
                    pb.set_length(steps as u64);
                    pb.set_position(step as u64);
                    pb.set_message(format!(
                        "epoch {epoch} loss {:.4} (local {:.3}, global {:.3})",
                        loss.loss, loss.mi_local, loss.mi_global
                    ));
                }
                dhim::Progress::Epoch {
                    epoch,
                    validation,
                    best,
                } => {
                    pb.suspend(|| {
                        shared::note(
                            g,
                            format!(
                                "  dhim {bits}: epoch {epoch} validation {validation:.4}{}",
                                if best { " (best)" } else { "" }
                            ),
                        )
                    });
                }
            },
        )?;
    pb.finish_and_clear();
    let dc = head.encode_states(db, enc.device())?;
    let qc = head.encode_states(qs, enc.device())?;
    let p = metrics::precision_at_k_hamming(&dc, db_labels, &qc, q_labels, bits.div_ceil(64), k)?;
    tracing::info!(?report, "dhim trained");
    Ok((p, report.seconds))
}

fn sts(g: &Global, a: &StsArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.data)
        .with_context(|| format!("cannot read {}", a.data.display()))?;
    let mut gold = Vec::new();
    let mut s1 = Vec::new();
    let mut s2 = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() < 7 {
            bail!(
                "{} line {}: expected at least 7 tab-separated columns (STS-B: score in 5, sentences in 6 and 7)",
                a.data.display(),
                i + 1
            );
        }
        let score: f64 = cols[4].trim().parse().with_context(|| {
            format!(
                "{} line {}: column 5 is not a score",
                a.data.display(),
                i + 1
            )
        })?;
        gold.push(score);
        s1.push(cols[5]);
        s2.push(cols[6]);
    }
    let files = shared::resolve_model(g)?;
    let enc = shared::load_encoder(g, &files, None)?;
    let e1 = enc.embed(&s1, Pooling::Mean, true, BatchLimits::default())?;
    let e2 = enc.embed(&s2, Pooling::Mean, true, BatchLimits::default())?;
    let sims: Vec<f64> = (0..gold.len())
        .map(|i| {
            e1.row(i)
                .iter()
                .zip(e2.row(i))
                .map(|(a, b)| (a * b) as f64)
                .sum()
        })
        .collect();
    let rho = metrics::spearman(&sims, &gold) * 100.0;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"spearman": rho, "pairs": gold.len(), "model": files.id})
        );
    } else {
        println!(
            "STS Spearman ×100: {rho:.2} ({} pairs, {})",
            gold.len(),
            files.id
        );
    }
    Ok(())
}

/// The held-back known-item check of `dochash train` on `--docs`, for the base model and
/// `--tuned`: the same passages (read and held back exactly as training reads them), the same
/// questions, the same score.
fn adoption(g: &Global, a: &AdoptionArgs) -> Result<()> {
    use dochash::app::known_item::Probes;
    use dochash::app::train::{MAX_TRAIN_PASSAGES, hold_back};
    use dochash::index::{IndexMeta, corpus_passages};

    let files = shared::resolve_model(g)?;
    let base = shared::load_encoder(g, &files, None)?;
    let tuned_files =
        shared::resolve_spec(g, &dochash::model::ModelSpec::LocalDir(a.tuned.clone()))?;
    let tuned = shared::load_encoder(g, &tuned_files, None)?;
    let root = dochash::fsx::canonicalize(&a.docs)
        .with_context(|| format!("cannot open {}", a.docs.display()))?;
    let meta = IndexMeta {
        fingerprint: dochash::app::fingerprint(&files, &base),
        roots: vec![root],
        code: None,
        corpus: Default::default(),
        fusion: None,
    };
    let passages = corpus_passages(&meta, &base, &AtomicBool::new(false), MAX_TRAIN_PASSAGES)
        .with_context(|| format!("cannot read {}", a.docs.display()))?;
    let (_, held) = hold_back(&passages);
    let held: Vec<_> = held.iter().map(|&i| &passages[i]).collect();
    let probes = Probes::new(&held);
    let (b, t) = (probes.score(&base)?, probes.score(&tuned)?);
    let v = serde_json::json!({
        "passages": passages.len(), "held_back": held.len(),
        "title_questions": probes.titles.queries.len(), "lead_questions": probes.leads.queries.len(),
        "base": b, "tuned": t,
        "adopt": t.holds_up_against(&b),
    });
    if a.json {
        println!("{v}");
    } else {
        let pct = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{:.1}", x * 100.0));
        println!(
            "{} passages, {} held back: {} title and {} lead questions",
            passages.len(),
            held.len(),
            probes.titles.queries.len(),
            probes.leads.queries.len()
        );
        for (name, s) in [("base", b), ("tuned", t)] {
            println!(
                "{name:<6} MRR@10 titles {}  leads {}  mean {}  |  fused with BM25: titles {}  leads {}  mean {}",
                pct(s.titles),
                pct(s.leads),
                pct(s.mean),
                pct(s.fused_titles),
                pct(s.fused_leads),
                pct(s.fused)
            );
        }
        println!("adopt: {}", v["adopt"]);
    }
    Ok(())
}
