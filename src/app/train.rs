//! Training a new generation on the indexed documents and building its index beside the
//! serving one; the caller switches to it with [`super::generation::switch`].
//!
//! Training always starts from the base model, not from the previous generation, so repeated
//! retraining cannot drift away from it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::encoder::{BatchLimits, DeviceSpec, Encoder, LoadOptions, Role};
use crate::index::{
    Coder, CorpusPassage, Donor, Index, IndexMeta, Progress as IndexProgress, UpdateOptions,
    UpdateReport, corpus_passages,
};
use crate::model::{self, FetchOptions, ModelFiles, ModelSpec};
use crate::rng::SplitMix64;
use crate::train::TrainError;
use crate::train::dhim::{self, DhimConfig, DhimReport};
use crate::train::ranked::{self, RankConfig, RankReport};
use crate::train::simcse::{self, SimcseConfig, SimcseReport};
use crate::train::states::CorpusStates;

use super::generation::{self, Active};
use super::known_item::{self, Probes, Score};

/// Below this many passages the hashing head is not trained and the training-free ITQ codes
/// stay: on 20 Newsgroups subsets DHIM only beat ITQ from about this size on (docs/BENCHMARKS.md).
pub const MIN_DHIM_PASSAGES: usize = 1000;
/// Below this many passages SimCSE is skipped: a few dozen batches cannot teach the encoder
/// anything about the corpus, and the held-back check would have too few passages to judge.
pub const MIN_SIMCSE_PASSAGES: usize = 1000;
/// Most passages training reads (whole files, a fixed pseudo-random sample): token states cost
/// ~100 KB a passage, so training on everything would need memory in proportion to the notes
/// (tens of GB at 100 k passages, started by the owner on its own). Both learners saturate well
/// below this on the measured corpora (docs/BENCHMARKS.md).
pub const MAX_TRAIN_PASSAGES: usize = 10_000;
/// Most CPU time (the whole process, all threads) one background training may use before it
/// stops and the serving generation stays. Training reads at most [`MAX_TRAIN_PASSAGES`]: on the
/// measured 2-core machine, SimCSE (head) plus one DHIM epoch over 9,472 passages took 16 CPU
/// minutes with the default model, each further DHIM epoch about 4, and today's default
/// (SimCSE with 64-token views, then the ranking head) 29.6 on 18,156 passages, re-encoding
/// them all included (docs/BENCHMARKS.md), so the defaults fit with room to spare; the cap
/// stops a larger model or a much slower machine from spending hours of an idle owner's time.
/// `dochash train`, asked for, has no cap.
pub const BACKGROUND_CPU_BUDGET: std::time::Duration = std::time::Duration::from_secs(90 * 60);
/// Passages held back for the adoption check (at most).
const HELD_BACK_MAX: usize = 2000;

#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// `None`: keep the base encoder.
    pub simcse: Option<SimcseConfig>,
    /// `None`: no DHIM head.
    pub dhim: Option<DhimConfig>,
    /// `None`: no ranking head. Its `bits` are replaced by the new index's code length.
    pub ranked: Option<RankConfig>,
    pub device: DeviceSpec,
    /// Adopt what was trained even when the held-back checks say it is worse than what it
    /// replaces.
    pub force: bool,
}

impl TrainOptions {
    /// What training does unless told otherwise, in the background and from `dochash train`
    /// alike: SimCSE on every weight on a GPU, on the top layers on a CPU, then the ranking
    /// head; no DHIM; adopted only where the checks say so.
    pub fn for_device(device: DeviceSpec) -> Self {
        let on_gpu = !matches!(device, DeviceSpec::Cpu)
            && crate::encoder::open_device(device).is_ok_and(|(d, _)| !d.is_cpu());
        Self {
            simcse: Some(SimcseConfig {
                mode: if on_gpu {
                    simcse::Mode::Full
                } else {
                    simcse::Mode::Head
                },
                ..Default::default()
            }),
            dhim: None,
            ranked: Some(RankConfig::default()),
            device,
            force: false,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum TrainProgress {
    Reading,
    Simcse(simcse::Progress),
    Checking,
    States { done: usize, total: usize },
    Dhim(dhim::Progress),
    Indexing { done: usize, total: usize },
    Ranked(ranked::Progress),
}

/// A training phase as people see it, the same in the status bar and in `dochash train`'s
/// progress bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// What is running, e.g. `SimCSE epoch 1`; a new label starts a new progress bar.
    pub label: String,
    pub done: usize,
    /// 0 when the amount of work is not known.
    pub total: usize,
    /// e.g. `loss 0.413`.
    pub detail: String,
}

impl TrainProgress {
    /// `None` for events that are logged rather than shown (the end of a head epoch).
    pub fn phase(&self) -> Option<Phase> {
        let p = |label: String, done: usize, total: usize, detail: String| {
            Some(Phase {
                label,
                done,
                total,
                detail,
            })
        };
        match *self {
            TrainProgress::Reading => p("reading notes".into(), 0, 0, String::new()),
            TrainProgress::Simcse(simcse::Progress::Caching { done, total }) => {
                p("SimCSE: lower layers".into(), done, total, String::new())
            }
            TrainProgress::Simcse(simcse::Progress::Step {
                epoch,
                step,
                steps,
                loss,
            }) => p(
                format!("SimCSE epoch {epoch}"),
                step,
                steps,
                format!("loss {loss:.4}"),
            ),
            TrainProgress::Checking => {
                p("checking on held-back passages".into(), 0, 0, String::new())
            }
            TrainProgress::States { done, total } => {
                p("token states".into(), done, total, String::new())
            }
            TrainProgress::Dhim(dhim::Progress::Step {
                epoch,
                step,
                steps,
                loss,
            }) => p(
                format!("hashing head epoch {epoch}"),
                step,
                steps,
                format!("loss {:.4}", loss.loss),
            ),
            TrainProgress::Dhim(dhim::Progress::Epoch {
                epoch,
                validation,
                best,
            }) => {
                tracing::info!(epoch, validation, best, "hashing head epoch");
                None
            }
            TrainProgress::Indexing { done, total } => p(
                "the new generation's index".into(),
                done,
                total,
                String::new(),
            ),
            TrainProgress::Ranked(ranked::Progress::Neighbours { done, total }) => p(
                "codes: nearest neighbours".into(),
                done,
                total,
                String::new(),
            ),
            TrainProgress::Ranked(ranked::Progress::Step { step, steps, loss }) => p(
                "codes: ranking head".into(),
                step,
                steps,
                format!("loss {loss:.3}"),
            ),
            TrainProgress::Ranked(ranked::Progress::Check {
                step,
                candidates,
                itq,
            }) => {
                tracing::info!(step, candidates, itq, "ranking head check");
                None
            }
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SimcseOutcome {
    pub config: SimcseConfig,
    pub report: SimcseReport,
    /// Known-item MRR@10 on held-back passages (see [`super::known_item`]), base vs tuned.
    pub base: Option<Score>,
    pub tuned: Option<Score>,
    pub held_back: usize,
    /// Questions the check asked.
    pub questions: usize,
    pub adopted: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DhimOutcome {
    pub config: DhimConfig,
    pub report: DhimReport,
    /// Neighbour recall on held-back queries (see [`crate::train::metrics::neighbour_recall`]).
    pub itq_recall: f64,
    pub dhim_recall: f64,
    pub adopted: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RankedOutcome {
    pub config: RankConfig,
    pub report: RankReport,
    pub adopted: bool,
}

/// Written to `<home>/generations/<n>/manifest.json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Manifest {
    pub generation: u32,
    pub created_unix: u64,
    pub base_model: String,
    pub model: String,
    pub passages: usize,
    pub files: usize,
    pub simcse: Option<SimcseOutcome>,
    pub dhim: Option<DhimOutcome>,
    pub ranked: Option<RankedOutcome>,
    pub notes: Vec<String>,
}

/// Manifests are a few kilobytes; a larger file is not one dochash wrote.
const MANIFEST_CAP: u64 = 1 << 20;

/// What generation `generation`'s training gained, in one line for `status`: read back from
/// its manifest rather than kept in memory, so that an owner started later, or `dochash status`
/// without an owner, says it too. `None` when the manifest is missing, too large or not one this
/// dochash reads, or records no part that was adopted.
pub fn gained(home: &Path, generation: u32) -> Option<String> {
    // Only the numbers the line needs; the manifest holds more.
    #[derive(serde::Deserialize)]
    struct Mean {
        mean: Option<f64>,
    }
    #[derive(serde::Deserialize)]
    struct Simcse {
        base: Option<Mean>,
        tuned: Option<Mean>,
        questions: usize,
        adopted: bool,
    }
    #[derive(serde::Deserialize)]
    struct RankNumbers {
        itq_candidates: usize,
        head_candidates: usize,
    }
    #[derive(serde::Deserialize)]
    struct Ranked {
        report: RankNumbers,
        adopted: bool,
    }
    #[derive(serde::Deserialize)]
    struct Dhim {
        itq_recall: f64,
        dhim_recall: f64,
        adopted: bool,
    }
    #[derive(serde::Deserialize)]
    struct Gains {
        simcse: Option<Simcse>,
        ranked: Option<Ranked>,
        dhim: Option<Dhim>,
    }
    use std::io::Read;
    let path = generation::generation_dir(home, generation).join("manifest.json");
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .ok()?
        .take(MANIFEST_CAP + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    if bytes.len() as u64 > MANIFEST_CAP {
        return None;
    }
    let g: Gains = serde_json::from_slice(&bytes).ok()?;
    let mut parts = Vec::new();
    if let Some(s) = g.simcse.filter(|s| s.adopted) {
        parts.push(
            match (s.base.and_then(|m| m.mean), s.tuned.and_then(|m| m.mean)) {
                (Some(b), Some(t)) => format!(
                    "encoder: known-item MRR@10 on held-back notes {:.1} → {:.1} ({} questions)",
                    b * 100.0,
                    t * 100.0,
                    s.questions
                ),
                _ => "encoder: tuned (too few held-back questions to measure it)".into(),
            },
        );
    }
    if let Some(r) = g.ranked.filter(|r| r.adopted) {
        parts.push(format!(
            "codes: the filter needs {} candidates where ITQ's needed {} (recall@10 ≥ {})",
            r.report.head_candidates,
            r.report.itq_candidates,
            ranked::CHECK_TARGET
        ));
    }
    if let Some(d) = g.dhim.filter(|d| d.adopted) {
        parts.push(format!(
            "codes: DHIM keeps {:.1} % of held-back neighbours, ITQ {:.1} %",
            d.dhim_recall * 100.0,
            d.itq_recall * 100.0
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// A trained generation whose index is built and open, ready to be switched to.
pub struct Prepared {
    pub active: Active,
    pub index: Index,
    pub encoder: Arc<Encoder>,
    pub manifest: Manifest,
}

pub enum Outcome {
    Ready(Box<Prepared>),
    /// Nothing was worth switching to; the notes say why.
    Unchanged(Vec<String>),
}

fn err(e: impl std::fmt::Display) -> TrainError {
    TrainError::Msg(e.to_string())
}

fn check(cancel: &AtomicBool) -> Result<(), TrainError> {
    if cancel.load(Ordering::Acquire) {
        Err(TrainError::Cancelled)
    } else {
        Ok(())
    }
}

/// Trains on the passages of `current`'s folders starting from `base`, and builds the new
/// generation's index. Nothing the serving generation uses is touched; on error or
/// cancellation the half-made generation is removed. `serving`, a view of the serving index,
/// lets the new index copy its vectors when the new generation keeps its encoder (the tuned one
/// was not adopted) instead of computing them again.
pub fn prepare(
    home: &Path,
    base: &ModelFiles,
    current: &IndexMeta,
    serving: Option<Donor>,
    opts: &TrainOptions,
    cancel: &Arc<AtomicBool>,
    progress: &mut dyn FnMut(TrainProgress),
) -> Result<Outcome, TrainError> {
    let n = generation::next_number(home);
    let gdir = generation::generation_dir(home, n);
    let r = prepare_in(
        home, n, &gdir, base, current, serving, opts, cancel, progress,
    );
    if !matches!(r, Ok(Outcome::Ready(_))) {
        let _ = std::fs::remove_dir_all(&gdir);
        let _ = std::fs::remove_dir_all(home.join(format!("index-{n}")));
    }
    r
}

#[allow(clippy::too_many_arguments)]
fn prepare_in(
    home: &Path,
    n: u32,
    gdir: &Path,
    base: &ModelFiles,
    current: &IndexMeta,
    serving: Option<Donor>,
    opts: &TrainOptions,
    cancel: &Arc<AtomicBool>,
    progress: &mut dyn FnMut(TrainProgress),
) -> Result<Outcome, TrainError> {
    let load_opts = LoadOptions {
        device: opts.device,
        trainable: false,
        max_len: None,
        candle_only: false,
        // The new generation's index is built as the serving one was.
        precision: Some(current.fingerprint.precision),
    };
    let load = |dir: &Path| Encoder::load(dir, &load_opts);
    progress(TrainProgress::Reading);
    let base_enc = Encoder::load_model(base, &load_opts)?;
    let passages = corpus_passages(current, &base_enc, cancel, MAX_TRAIN_PASSAGES).map_err(err)?;
    check(cancel)?;
    let files = {
        let mut f: Vec<&PathBuf> = passages.iter().map(|p| &p.path).collect();
        f.dedup();
        f.len()
    };
    let mut notes = Vec::new();
    let texts: Vec<&str> = passages.iter().map(|p| p.text.as_str()).collect();
    // What the learners see is what the index embeds: each passage behind the model's document
    // prompt, if it has one.
    let prompted = base_enc.prompted(&texts, Role::Document);
    let learn: Vec<&str> = prompted.iter().map(|c| c.as_ref()).collect();
    if texts.len() >= MAX_TRAIN_PASSAGES {
        notes.push(format!(
            "trained on a sample of {MAX_TRAIN_PASSAGES} passages from {files} files"
        ));
    }

    let learner = Learner {
        passages: &passages,
        current,
        opts,
        cancel,
        gdir,
    };
    // SimCSE, judged on held-back passages before it is adopted.
    let (simcse_out, model_dir) = match &opts.simcse {
        Some(_) if texts.len() < MIN_SIMCSE_PASSAGES => {
            notes.push(format!(
                "SimCSE skipped: {} passages, at least {MIN_SIMCSE_PASSAGES} needed; the base encoder stays",
                texts.len()
            ));
            (None, None)
        }
        Some(cfg) => {
            let (out, dir) =
                learn_simcse(&learner, cfg, base, &base_enc, &load, &mut notes, progress)?;
            (Some(out), dir)
        }
        None => (None, None),
    };
    check(cancel)?;
    let (gen_files, gen_enc) = match &model_dir {
        Some(d) => (
            model::resolve(
                &ModelSpec::LocalDir(d.clone()),
                &FetchOptions {
                    offline: true,
                    progress: model::Progress::NONE,
                },
            )
            .map_err(err)?,
            load(d)?,
        ),
        None => (base.clone(), base_enc),
    };

    // DHIM on the chosen encoder's token states.
    let (dhim_out, head) = match &opts.dhim {
        Some(_) if texts.len() < MIN_DHIM_PASSAGES => {
            notes.push(format!(
                "hashing head skipped: {} passages, at least {MIN_DHIM_PASSAGES} needed; ITQ codes stay",
                texts.len()
            ));
            (None, None)
        }
        Some(cfg) => {
            let (out, head) = learn_dhim(&learner, cfg, &gen_enc, &learn, &mut notes, progress)?;
            (Some(out), head)
        }
        None => (None, None),
    };
    // Below this many passages the filter already passes a large share of them to the exact
    // rerank: learned codes would save nothing worth a training.
    let ranked_cfg = match &opts.ranked {
        Some(_) if texts.len() < ranked::MIN_PASSAGES => {
            notes.push(format!(
                "hashing head (ranking) skipped: {} passages, at least {} needed; ITQ codes stay",
                texts.len(),
                ranked::MIN_PASSAGES
            ));
            None
        }
        other => other.clone(),
    };
    if model_dir.is_none() && head.is_none() && ranked_cfg.is_none() {
        return Ok(Outcome::Unchanged(notes));
    }
    check(cancel)?;

    // The new generation's index, filled from the files with the new encoder and head.
    let name = format!("index-{n}");
    let dir = home.join(&name);
    let _ = std::fs::remove_dir_all(&dir);
    let fp = super::fingerprint(&gen_files, &gen_enc);
    let (mut index, _) = Index::open(&dir, &fp).map_err(err)?;
    let bits = Some(match &head {
        Some(h) => h.cfg.bits,
        None => current.bits(),
    });
    let dhim_adopted = head.is_some();
    if let Some(h) = head {
        index
            .install_coder(Coder::Dhim(Arc::new(h)), texts.len())
            .map_err(err)?;
    }
    let uopts = UpdateOptions {
        bits,
        reuse: serving,
        ..UpdateOptions::keeping(index.meta(), Some(cancel.clone()))
    };
    crate::failpoint::hit("train.filling");
    let filled = index
        .update(&gen_enc, &uopts, &mut |p, _| {
            if let IndexProgress::Embedded { done, total, .. } = p {
                progress(TrainProgress::Indexing { done, total })
            }
        })
        .map_err(err)?;
    // Done with the serving index: its mapping and database handle go before the head trains.
    drop(uopts);
    check(cancel)?;
    if filled.files_reused > 0 {
        notes.push(format!(
            "{} of {} files copied from the serving index (the encoder is unchanged)",
            filled.files_reused,
            filled.files_reused + filled.files_embedded
        ));
    }

    // The ranking head learns from the new index's own vectors (as search will code them).
    let ranked_out = match &ranked_cfg {
        Some(cfg) => train_ranked(
            &mut index, &gen_enc, cfg, opts.force, cancel, &mut notes, progress,
        )?,
        None => None,
    };
    let codes_adopted = dhim_adopted || ranked_out.as_ref().is_some_and(|r| r.adopted);
    if model_dir.is_none() && !codes_adopted {
        return Ok(Outcome::Unchanged(notes));
    }
    check(cancel)?;

    let manifest = Manifest {
        generation: n,
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        base_model: base.id.clone(),
        model: gen_files.id.clone(),
        passages: texts.len(),
        files,
        simcse: simcse_out,
        dhim: dhim_out,
        ranked: ranked_out,
        notes,
    };
    std::fs::create_dir_all(gdir).map_err(|e| TrainError::io(gdir, e))?;
    let text = serde_json::to_string_pretty(&manifest).map_err(err)?;
    crate::fsx::write_atomic(&gdir.join("manifest.json"), text.as_bytes())
        .map_err(|e| TrainError::io(gdir, e))?;
    Ok(Outcome::Ready(Box::new(Prepared {
        active: Active {
            generation: n,
            base_model: base.id.clone(),
            model_dir,
            index: name,
        },
        index,
        encoder: Arc::new(gen_enc),
        manifest,
    })))
}

/// What every learner of a training run shares: the passages read, the index they came from,
/// the options, the stop flag and the new generation's folder.
struct Learner<'a> {
    passages: &'a [CorpusPassage],
    current: &'a IndexMeta,
    opts: &'a TrainOptions,
    cancel: &'a Arc<AtomicBool>,
    gdir: &'a Path,
}

/// Fine-tunes the encoder with SimCSE and judges it on held-back passages: its outcome, with the
/// tuned model's folder when it is adopted (else the folder is removed).
fn learn_simcse(
    l: &Learner,
    cfg: &SimcseConfig,
    base: &ModelFiles,
    base_enc: &Encoder,
    load: &dyn Fn(&Path) -> Result<Encoder, crate::encoder::EncoderError>,
    notes: &mut Vec<String>,
    progress: &mut dyn FnMut(TrainProgress),
) -> Result<(SimcseOutcome, Option<PathBuf>), TrainError> {
    let (passages, opts, cancel) = (l.passages, l.opts, l.cancel);
    let (train_idx, held) = hold_back(passages);
    let taught = if cfg.structure {
        let questions = crate::index::fit::notes_questions(l.current).map_err(err)?;
        taught_questions(&questions, passages, &train_idx)
    } else {
        Vec::new()
    };
    if !taught.is_empty() {
        notes.push(format!(
            "SimCSE also learned {} questions the notes ask of themselves (links, titles, question headings)",
            taught.len()
        ));
    }
    let (texts, positive) = pair_up(base_enc, passages, &train_idx, cfg.positives, &taught);
    let examples = simcse::Examples {
        texts: texts.iter().map(String::as_str).collect(),
        positive,
    };
    let (tuned, report) =
        simcse::train(&base.dir, &examples, cfg, opts.device, cancel, &mut |p| {
            progress(TrainProgress::Simcse(p))
        })?;
    check(cancel)?;
    progress(TrainProgress::Checking);
    let held_passages: Vec<&CorpusPassage> = held.iter().map(|&i| &passages[i]).collect();
    let probes = Probes::new(&held_passages);
    let score = |enc: &Encoder| -> Result<Option<Score>, TrainError> {
        (!probes.is_empty())
            .then(|| probes.score(enc))
            .transpose()
            .map_err(err)
    };
    let base_score = score(base_enc)?;
    let out = l.gdir.join("model");
    simcse::save_model(&tuned, &base.dir, base_enc.profile(), &out)?;
    drop(tuned);
    let tuned_enc = load(&out)?;
    let tuned_score = score(&tuned_enc)?;
    let (b, t) = (
        base_score.and_then(|s| s.mean),
        tuned_score.and_then(|s| s.mean),
    );
    let passed = matches!((&base_score, &tuned_score), (Some(b), Some(t)) if t.holds_up_against(b));
    let adopted = passed || opts.force;
    notes.push(match (b, t) {
        (Some(b), Some(t)) if passed => format!(
            "SimCSE adopted: held-back known-item MRR@10 {:.1} (base {:.1}, {} questions)",
            t * 100.0,
            b * 100.0,
            probes.len()
        ),
        (Some(b), Some(t)) => format!(
            "SimCSE not adopted: held-back known-item MRR@10 {:.1}, base {:.1} ({} questions); the base encoder stays",
            t * 100.0,
            b * 100.0,
            probes.len()
        ),
        _ if opts.force => "SimCSE adopted (--force) without a held-back check: the held-back passages give too few questions".into(),
        _ => "SimCSE not adopted: the held-back passages give too few questions to check it; the base encoder stays".into(),
    });
    if adopted && !passed && b.is_some() {
        notes.push("SimCSE adopted anyway (--force)".into());
    }
    let model_dir = if adopted {
        Some(out)
    } else {
        let _ = std::fs::remove_dir_all(&out);
        None
    };
    let outcome = SimcseOutcome {
        config: cfg.clone(),
        report,
        base: base_score,
        tuned: tuned_score,
        held_back: held.len(),
        questions: probes.len(),
        adopted,
    };
    Ok((outcome, model_dir))
}

/// Trains a DHIM head on `enc`'s token states of the passages (`learn`, as the index embeds
/// them) and judges it against ITQ: its outcome, with the head when it is adopted (then also
/// saved in the generation's folder).
fn learn_dhim(
    l: &Learner,
    cfg: &DhimConfig,
    enc: &Encoder,
    learn: &[&str],
    notes: &mut Vec<String>,
    progress: &mut dyn FnMut(TrainProgress),
) -> Result<(DhimOutcome, Option<dhim::DhimHead>), TrainError> {
    let (opts, cancel, gdir) = (l.opts, l.cancel, l.gdir);
    let states = CorpusStates::encode(enc, learn, BatchLimits::default(), &mut |done, total| {
        progress(TrainProgress::States { done, total })
    })?;
    check(cancel)?;
    let (h, report) = dhim::train(&states, cfg.clone(), enc.device(), cancel, &mut |p| {
        progress(TrainProgress::Dhim(p))
    })?;
    notes.push(format!(
        "hashing head trained: {} bits, {} epochs (best {}), {:.0} s",
        cfg.bits, report.epochs, report.best_epoch, report.seconds
    ));
    // Adopted only if it keeps float neighbourhoods at least as well as ITQ fitted on the same
    // passages (the codes it replaces).
    check(cancel)?;
    let (itq_recall, dhim_recall) = compare_with_itq(&states, &h, cfg.bits, enc.device())?;
    let passed = dhim_recall >= itq_recall;
    let adopted = passed || opts.force;
    notes.push(format!(
        "hashing head {}: {:.1}% of each passage's 10 nearest neighbours among its 100 nearest codes (ITQ with the weighted filter {:.1}%){}",
        if adopted { "adopted" } else { "not adopted" },
        dhim_recall * 100.0,
        itq_recall * 100.0,
        match (passed, opts.force) {
            (false, true) => "; adopted anyway (--force)",
            (false, false) => "; ITQ codes stay",
            _ => "",
        }
    ));
    let outcome = DhimOutcome {
        config: cfg.clone(),
        report,
        itq_recall,
        dhim_recall,
        adopted,
    };
    if !adopted {
        return Ok((outcome, None));
    }
    std::fs::create_dir_all(gdir).map_err(|e| TrainError::io(gdir, e))?;
    h.save(&gdir.join("dhim.safetensors"))?;
    Ok((outcome, Some(h)))
}

/// Makes a prepared generation the serving one. The user's settings are read again first
/// (folders added while training ran must not be lost), `catch_up` brings the new index in line
/// with files changed meanwhile, everything is made durable, and only then is the pointer moved.
/// The caller then drops the old index and calls [`generation::clean_up`].
pub fn switch<E>(
    home: &Path,
    prepared: &mut Prepared,
    catch_up: impl FnOnce(&mut Index, &Arc<Encoder>) -> Result<UpdateReport, E>,
) -> Result<UpdateReport, super::AppError>
where
    super::AppError: From<E>,
{
    prepared.index.reload_settings()?;
    let report = catch_up(&mut prepared.index, &prepared.encoder)?;
    prepared.index.flush()?;
    crate::failpoint::hit("generation.switch");
    generation::switch(home, &prepared.active).map_err(|source| super::AppError::Io {
        path: home.join("generation.json"),
        source,
    })?;
    Ok(report)
}

/// Most questions taught per passage that answers them: a note that many others link to must
/// not outweigh the rest of the corpus.
const TAUGHT_PER_PASSAGE: usize = 4;

/// The questions training teaches ([`crate::corpus::Question::teaches`]: the half the fusion
/// fit never asks), each as the training passage that answers it and the question's words: the
/// first passage of its target's section that does not hold the question itself. A question
/// asked by or about a held-back file is left out, so that the adoption check stays blind to
/// what was taught.
pub fn taught_questions(
    questions: &[crate::corpus::Question],
    passages: &[CorpusPassage],
    train: &[usize],
) -> Vec<(usize, String)> {
    use std::collections::HashMap;
    let mut files: HashMap<&Path, std::ops::Range<usize>> = HashMap::new();
    for (i, p) in passages.iter().enumerate() {
        files
            .entry(p.path.as_path())
            .and_modify(|r| r.end = i + 1)
            .or_insert(i..i + 1);
    }
    let mut trained = vec![false; passages.len()];
    train.iter().for_each(|&i| trained[i] = true);
    let overlaps = |(a, b): (u32, u32), (first, last): (usize, usize)| {
        a as usize <= last && first <= b as usize
    };
    let mut per_passage: HashMap<usize, usize> = HashMap::new();
    let mut out = Vec::new();
    for q in questions.iter().filter(|q| q.teaches()) {
        let Some(range) = files.get(q.target.as_path()) else {
            continue;
        };
        // A question asked by a held-back file would be taught beside the check's questions.
        if files
            .get(q.source.as_path())
            .is_some_and(|r| !trained[r.start])
        {
            continue;
        }
        let answer = range.clone().find(|&i| {
            let p = &passages[i];
            trained[i]
                && !p.body.trim().is_empty()
                && q.lines.is_none_or(|l| overlaps(p.lines, l))
                && !(q.source == q.target && q.asked_in.is_some_and(|l| overlaps(p.lines, l)))
        });
        if let Some(i) = answer {
            let n = per_passage.entry(i).or_default();
            if *n < TAUGHT_PER_PASSAGE {
                *n += 1;
                out.push((i, q.text.clone()));
            }
        }
    }
    out
}

/// The texts SimCSE learns from, as the index would embed them (behind the model's prompts), and
/// each anchor's positive among them, for the passages `idx` (in corpus order). A passage with a
/// partner of the kind asked for is its body paired with that partner; any other is its indexed
/// text paired with itself (dropout). Each of `taught` ([`taught_questions`]) adds its
/// passage's body as one more anchor, paired with the question read as a query.
pub fn pair_up(
    enc: &Encoder,
    passages: &[CorpusPassage],
    idx: &[usize],
    positives: simcse::Positives,
    taught: &[(usize, String)],
) -> (Vec<String>, Vec<usize>) {
    use simcse::Positives;
    let as_role = |t: &str, role: Role| enc.prompted(&[t], role)[0].to_string();
    let mut texts = Vec::with_capacity(idx.len());
    let mut partners = Vec::new();
    for (k, &i) in idx.iter().enumerate() {
        let p = &passages[i];
        let body = p.body.trim();
        let (anchor, partner) = match positives {
            // Only a title that says what its section is about: one that shares no word with
            // the passage ("Section 12", "Notes 69", a date) would teach the encoder to match
            // numbering.
            Positives::Title => (
                body.to_string(),
                p.title
                    .as_deref()
                    .filter(|t| describes(t, body))
                    .map(|t| as_role(t, Role::Query)),
            ),
            // The next passage of the same file and section, if it is trained on too.
            Positives::Neighbour => (
                body.to_string(),
                idx.get(k + 1)
                    .filter(|&&j| j == i + 1)
                    .map(|&j| &passages[j])
                    .filter(|n| n.path == p.path && n.title == p.title && !n.body.trim().is_empty())
                    .map(|n| as_role(&n.body, Role::Document)),
            ),
            // Which sentence: fixed per passage, so that a retraining sees the same pairs.
            Positives::Sentence => match known_item::split_sentence(body, i as u64) {
                Some((sentence, rest)) => (rest, Some(as_role(&sentence, Role::Query))),
                None => (String::new(), None),
            },
            Positives::Dropout | Positives::Crops(_) => (String::new(), None),
        };
        match partner {
            Some(t) if !anchor.is_empty() => {
                texts.push(as_role(&anchor, Role::Document));
                partners.push((k, t));
            }
            _ => texts.push(as_role(&p.text, Role::Document)),
        }
    }
    for (i, question) in taught {
        partners.push((texts.len(), as_role(question, Role::Query)));
        texts.push(as_role(passages[*i].body.trim(), Role::Document));
    }
    let anchors = texts.len();
    let mut positive: Vec<usize> = (0..anchors).collect();
    for (m, (k, t)) in partners.into_iter().enumerate() {
        positive[k] = anchors + m;
        texts.push(t);
    }
    (texts, positive)
}

/// Whether `title` shares a content word with `body`: a word of at least four letters (most
/// function words are shorter; a few common longer ones are ignored), matched on its first five
/// letters so that "install" meets "installing".
fn describes(title: &str, body: &str) -> bool {
    const COMMON: &[&str] = &[
        "with", "from", "that", "this", "your", "what", "when", "have", "will", "into", "about",
        "more", "than", "then", "there", "which", "their", "these", "those", "they", "were",
        "been", "some", "each", "also", "only", "over", "such", "like", "just", "here", "does",
    ];
    fn stems(s: &str) -> impl Iterator<Item = String> + '_ {
        s.split(|c: char| !c.is_alphabetic())
            .filter(|w| w.chars().count() >= 4)
            .map(str::to_lowercase)
            .filter(|w| !COMMON.contains(&w.as_str()))
            .map(|w| w.chars().take(5).collect())
    }
    let wanted: std::collections::HashSet<String> = stems(title).collect();
    !wanted.is_empty() && stems(body).any(|w| wanted.contains(&w))
}

/// Splits passage indices into training and held-back sets: the passages of about a tenth of
/// the files that have at least two passages (chosen by a seeded shuffle), at most
/// [`HELD_BACK_MAX`] passages. Held-back passages are never trained on.
pub fn hold_back(passages: &[CorpusPassage]) -> (Vec<usize>, Vec<usize>) {
    let mut by_file: Vec<(usize, usize)> = Vec::new(); // (start, len) of each file's run
    let mut i = 0;
    while i < passages.len() {
        let mut j = i + 1;
        while j < passages.len() && passages[j].path == passages[i].path {
            j += 1;
        }
        by_file.push((i, j - i));
        i = j;
    }
    let mut multi: Vec<(usize, usize)> = by_file.iter().copied().filter(|&(_, l)| l >= 2).collect();
    crate::rng::shuffle(&mut multi, &mut SplitMix64::new(0x4e1d));
    let want = (passages.len() / 10).min(HELD_BACK_MAX);
    let mut held = vec![false; passages.len()];
    let mut count = 0;
    for (start, len) in multi {
        if count >= want {
            break;
        }
        held[start..start + len].iter_mut().for_each(|h| *h = true);
        count += len;
    }
    let (h, t): (Vec<usize>, Vec<usize>) = (0..passages.len()).partition(|&i| held[i]);
    (t, h)
}

/// Trains a ranking head on `index`'s live vectors at its code length and, if the filter then
/// needs clearly fewer candidates than with ITQ's codes on held-back passages
/// ([`ranked::ADOPTION_RATIO`]) or `force`, makes it
/// the index's code source and re-codes every vector with it.
fn train_ranked(
    index: &mut Index,
    encoder: &Encoder,
    cfg: &RankConfig,
    force: bool,
    cancel: &Arc<AtomicBool>,
    notes: &mut Vec<String>,
    progress: &mut dyn FnMut(TrainProgress),
) -> Result<Option<RankedOutcome>, TrainError> {
    let Some(bits) = index.meta().code.as_ref().map(|c| c.bits) else {
        return Ok(None);
    };
    // The head trains on an evenly spaced sample (`RankConfig::max_passages`): read only that.
    let need = ranked::MIN_PASSAGES.max(bits * crate::index::coder::MIN_PASSAGES_PER_BIT);
    let (_, vectors) = index
        .store()
        .sample_vectors(cfg.max_passages.max(need))
        .map_err(err)?;
    let dim = index.meta().fingerprint.dim;
    let n = vectors.len() / dim.max(1);
    if n < ranked::MIN_PASSAGES {
        notes.push(format!(
            "hashing head (ranking) skipped: {n} vectors, at least {} needed; ITQ codes stay",
            ranked::MIN_PASSAGES
        ));
        return Ok(None);
    }
    if bits > dim {
        notes.push(format!(
            "hashing head (ranking) skipped: {bits}-bit codes of {dim}-wide vectors (it starts from ITQ, which needs bits ≤ width)"
        ));
        return Ok(None);
    }
    let cfg = RankConfig {
        bits,
        ..cfg.clone()
    };
    let (head, report) = ranked::train(
        &vectors,
        n,
        dim,
        cfg.clone(),
        &candle_core::Device::Cpu,
        cancel,
        &mut |p| progress(TrainProgress::Ranked(p)),
    )?;
    let passed =
        report.head_candidates as f64 <= ranked::ADOPTION_RATIO * report.itq_candidates as f64;
    let adopted = passed || force;
    notes.push(format!(
        "hashing head (ranking) {}: the filter needs {} candidates for recall@10 ≥ {} on {} held-back passages (ITQ {}; adopted at ≤ {}×), {:.0} s{}",
        if adopted { "adopted" } else { "not adopted" },
        report.head_candidates,
        ranked::CHECK_TARGET,
        report.held_back,
        report.itq_candidates,
        ranked::ADOPTION_RATIO,
        report.seconds,
        match (passed, force) {
            (false, true) => "; adopted anyway (--force)",
            (false, false) => "; ITQ codes stay",
            _ => "",
        }
    ));
    if adopted {
        index
            .install_coder(Coder::Ranked(Arc::new(head)), index.store().passage_count())
            .map_err(err)?;
        let uopts = UpdateOptions {
            bits: Some(bits),
            ..UpdateOptions::keeping(index.meta(), Some(cancel.clone()))
        };
        index.update(encoder, &uopts, &mut |_, _| {}).map_err(err)?;
    }
    Ok(Some(RankedOutcome {
        config: cfg,
        report,
        adopted,
    }))
}

/// Neighbour recall (10 cosine neighbours within the 100 nearest codes) of ITQ codes and of
/// the head's codes, over up to 1,000 evenly spaced passages as queries against all, each
/// searched as the product would search it (ITQ with the weighted filter, the head's codes by
/// Hamming distance).
fn compare_with_itq(
    states: &CorpusStates,
    head: &dhim::DhimHead,
    bits: usize,
    device: &candle_core::Device,
) -> Result<(f64, f64), TrainError> {
    use crate::index::binarize::{LinearHasher, Method};
    use crate::train::metrics::neighbour_recall;
    let n = states.len();
    let dim = states.dim;
    let itq = LinearHasher::fit(Method::Itq, &states.pooled, n, dim, bits.min(dim), 0x5eed)
        .map_err(err)?;
    let itq_codes = itq.encode_batch(&states.pooled, n).map_err(err)?;
    let dhim_codes = head.encode_states(states, device)?;
    let q = n.min(1000);
    let queries: Vec<usize> = (0..q).map(|i| i * n / q).collect();
    // ITQ is judged as the product searches its codes: with the query's margins.
    let margins = queries
        .iter()
        .map(|&q| itq.margins(states.pooled_row(q)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    let a = neighbour_recall(
        &itq_codes,
        itq.words(),
        &states.pooled,
        dim,
        &queries,
        Some(&margins),
        10,
        100,
    )
    .map_err(err)?;
    let b = neighbour_recall(
        &dhim_codes,
        bits.div_ceil(64),
        &states.pooled,
        dim,
        &queries,
        None,
        10,
        100,
    )
    .map_err(err)?;
    Ok((a, b))
}

/// CPU time spent since it was started, counted for the whole process: indexing that runs
/// beside a training counts too, which only makes the cap stricter.
pub struct CpuBudget {
    start: Option<std::time::Duration>,
    limit: std::time::Duration,
}

impl CpuBudget {
    pub fn start(limit: std::time::Duration) -> Self {
        Self {
            start: process_cpu_time(),
            limit,
        }
    }

    pub fn limit(&self) -> std::time::Duration {
        self.limit
    }

    /// Whether the budget is used up; never where the system cannot tell the CPU time.
    pub fn spent(&self) -> bool {
        match (self.start, process_cpu_time()) {
            (Some(a), Some(b)) => b.saturating_sub(a) >= self.limit,
            _ => false,
        }
    }
}

/// User plus system CPU time of this process, all threads.
#[cfg(unix)]
fn process_cpu_time() -> Option<std::time::Duration> {
    // SAFETY: getrusage writes into the zeroed struct it is given and reads nothing else.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return None;
    }
    let t = |v: libc::timeval| {
        std::time::Duration::from_secs(v.tv_sec.max(0) as u64)
            + std::time::Duration::from_micros(v.tv_usec.max(0) as u64)
    };
    Some(t(u.ru_utime) + t(u.ru_stime))
}

/// User plus system CPU time of this process, all threads.
#[cfg(windows)]
fn process_cpu_time() -> Option<std::time::Duration> {
    use windows_sys::Win32::Foundation::FILETIME;
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, GetProcessTimes};
    let zero = || FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero(), zero(), zero(), zero());
    // SAFETY: the pseudo-handle of the current process needs no closing; the call writes the
    // four structs it is given and reads nothing else.
    let ok = unsafe {
        GetProcessTimes(
            GetCurrentProcess(),
            &mut created,
            &mut exited,
            &mut kernel,
            &mut user,
        )
    };
    if ok == 0 {
        return None;
    }
    // FILETIME counts 100-nanosecond intervals.
    let t = |f: FILETIME| {
        std::time::Duration::from_nanos(
            ((u64::from(f.dwHighDateTime) << 32) | u64::from(f.dwLowDateTime)).saturating_mul(100),
        )
    };
    Some(t(kernel) + t(user))
}

/// Elsewhere the budget is not enforced (see [`CpuBudget::spent`]).
#[cfg(not(any(unix, windows)))]
fn process_cpu_time() -> Option<std::time::Duration> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reads_what_training_gained_back_from_the_manifest() {
        let home = tempfile::tempdir().unwrap();
        let score = |mean: f64| Score {
            titles: Some(mean),
            leads: None,
            mean: Some(mean),
            fused_titles: None,
            fused_leads: None,
            fused: None,
        };
        let manifest = |simcse_adopted: bool, ranked_adopted: bool| Manifest {
            generation: 3,
            created_unix: 0,
            base_model: "base".into(),
            model: "tuned".into(),
            passages: 10,
            files: 1,
            simcse: Some(SimcseOutcome {
                config: SimcseConfig::default(),
                report: SimcseReport {
                    steps: 1,
                    passages: 10,
                    loss_start: 1.0,
                    loss_end: 0.5,
                    seconds: 1.0,
                },
                base: Some(score(0.431)),
                tuned: Some(score(0.477)),
                held_back: 5,
                questions: 819,
                adopted: simcse_adopted,
            }),
            dhim: None,
            ranked: Some(RankedOutcome {
                config: RankConfig::default(),
                report: RankReport {
                    passages: 10,
                    held_back: 5,
                    steps: 600,
                    best_step: 600,
                    itq_candidates: 341,
                    head_candidates: 217,
                    seconds: 1.0,
                },
                adopted: ranked_adopted,
            }),
            notes: vec![],
        };
        let path = generation::generation_dir(home.path(), 3).join("manifest.json");
        assert_eq!(gained(home.path(), 3), None, "no manifest");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let write = |m: &Manifest| {
            std::fs::write(&path, serde_json::to_string_pretty(m).unwrap()).unwrap();
        };

        write(&manifest(true, true));
        let line = gained(home.path(), 3).unwrap();
        assert!(line.contains("43.1 → 47.7 (819 questions)"), "{line}");
        assert!(
            line.contains("217 candidates where ITQ's needed 341"),
            "{line}"
        );

        // Only what was adopted is a gain.
        write(&manifest(false, true));
        let line = gained(home.path(), 3).unwrap();
        assert!(!line.contains("encoder"), "{line}");
        write(&manifest(false, false));
        assert_eq!(gained(home.path(), 3), None);

        // A manifest that is not one, or too large to be one, says nothing.
        std::fs::write(&path, "{ not json").unwrap();
        assert_eq!(gained(home.path(), 3), None);
        let mut big = serde_json::to_string(&manifest(true, true)).unwrap();
        big.insert_str(
            1,
            &format!("\"pad\": \"{}\", ", "x".repeat(MANIFEST_CAP as usize)),
        );
        std::fs::write(&path, big).unwrap();
        assert_eq!(gained(home.path(), 3), None);
    }

    #[test]
    fn a_cpu_budget_counts_this_process_cpu_time() {
        assert!(CpuBudget::start(std::time::Duration::ZERO).spent());
        let budget = CpuBudget::start(std::time::Duration::from_secs(3600));
        let start = process_cpu_time().expect("CPU time on this system");
        // Work until the clock moves: ends whatever the machine's speed.
        let mut x = 0u64;
        while process_cpu_time().is_some_and(|t| t == start) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(process_cpu_time().is_some_and(|t| t > start));
        assert!(!budget.spent());
    }

    #[test]
    fn the_taught_questions_pair_with_the_training_passage_that_answers_them() {
        use crate::corpus::{Question, QuestionKind};
        let p = |file: &str, lines: (u32, u32), body: &str| CorpusPassage {
            path: PathBuf::from(file),
            text: body.to_string(),
            title: None,
            body: body.to_string(),
            lines,
        };
        let passages = vec![
            p("a.md", (1, 9), "intro of a"),
            p("a.md", (10, 19), "the install section of a"),
            p("a.md", (20, 29), "more of the install section"),
            p("b.md", (1, 9), "b asks: see the install section"),
            p("c.md", (1, 9), "held back, the check's"),
        ];
        // The question's words pick its half; find one of each with the words given.
        let question = |words: &str, source: &str, target: &str, lines, taught: bool| {
            (0..64)
                .map(|k| Question {
                    text: format!("{words} {k}"),
                    kind: QuestionKind::Link,
                    source: PathBuf::from(source),
                    line: 3,
                    asked_in: Some((3, 3)),
                    target: PathBuf::from(target),
                    heading: None,
                    lines,
                })
                .find(|q| q.teaches() == taught)
                .unwrap()
        };
        let train = [0, 1, 2, 3];
        let qs = vec![
            // The first passage of the target's section.
            question("how to install", "b.md", "a.md", Some((10, 29)), true),
            // The fit's half is not taught.
            question("not this half", "b.md", "a.md", Some((10, 29)), false),
            // About a held-back file, or asked by one: the check's, not taught.
            question("the held file", "b.md", "c.md", None, true),
            question("asked from the held file", "c.md", "a.md", None, true),
            // A link in a.md's own install section to itself skips the passage holding it.
            Question {
                asked_in: Some((12, 12)),
                ..question("within itself", "a.md", "a.md", Some((10, 29)), true)
            },
            // A whole-file target: its first passage.
            question("the a note", "b.md", "a.md", None, true),
        ];
        let taught = taught_questions(&qs, &passages, &train);
        let got: Vec<(usize, &str)> = taught
            .iter()
            .map(|(i, t)| (*i, t.rsplit_once(' ').unwrap().0))
            .collect();
        assert_eq!(
            got,
            [
                (1, "how to install"),
                (2, "within itself"),
                (0, "the a note")
            ]
        );

        // A passage many notes point to is taught a few of them.
        let many: Vec<Question> = (0..40)
            .map(|k| question(&format!("link {k}"), "b.md", "a.md", None, true))
            .collect();
        assert_eq!(
            taught_questions(&many, &passages, &train).len(),
            TAUGHT_PER_PASSAGE
        );

        // Each taught question is one more anchor: its passage's body ↔ the question.
        let dir = tempfile::tempdir().unwrap();
        crate::encoder::write_tiny_model(dir.path(), 3).unwrap();
        let enc = Encoder::load(dir.path(), &LoadOptions::default()).unwrap();
        let (texts, positive) =
            pair_up(&enc, &passages, &train, simcse::Positives::Dropout, &taught);
        assert_eq!(positive.len(), train.len() + taught.len());
        assert_eq!(texts[4], "the install section of a");
        assert_eq!(texts[positive[4]], taught[0].1);
    }

    #[test]
    fn passages_pair_with_their_title_or_their_neighbour_in_the_same_section() {
        use crate::train::simcse::Positives;
        let dir = tempfile::tempdir().unwrap();
        crate::encoder::write_tiny_model(dir.path(), 3).unwrap();
        let enc = Encoder::load(dir.path(), &LoadOptions::default()).unwrap();
        let p = |file: &str, title: Option<&str>, body: &str| CorpusPassage {
            path: PathBuf::from(file),
            text: format!("{} {body}", title.unwrap_or_default()),
            title: title.map(str::to_string),
            body: body.to_string(),
            lines: (1, 1),
        };
        let passages = vec![
            p("a.md", Some("Install"), "run the installer"),
            p("a.md", Some("Install"), "then restart the installation"),
            p("a.md", Some("Usage"), "usage: type a query"),
            p("a.md", None, "no heading here"),
            p("b.md", Some("Usage"), "another file's usage"),
            p("b.md", Some("Section 12"), "nothing in common"),
        ];
        let all: Vec<usize> = (0..passages.len()).collect();

        // A title that describes nothing in its passage is no positive.
        assert!(describes("Installing packages", "how to install a package"));
        assert!(!describes("Section 12", "how to install a package"));
        assert!(!describes("12 (2024)", "12 things in 2024"));
        assert!(!describes("About these", "about these and those"));
        let (texts, positive) = pair_up(&enc, &passages, &all, Positives::Title, &[]);
        // Titled passages: body ↔ title; the untitled one is its own positive, whole.
        assert_eq!(
            &texts[..6],
            [
                "run the installer",
                "then restart the installation",
                "usage: type a query",
                " no heading here",
                "another file's usage",
                "Section 12 nothing in common",
            ]
        );
        let partner: Vec<&str> = positive.iter().map(|&i| texts[i].as_str()).collect();
        assert_eq!(
            partner,
            [
                "Install",
                "Install",
                "Usage",
                " no heading here",
                "Usage",
                "Section 12 nothing in common"
            ]
        );

        let (texts, positive) = pair_up(&enc, &passages, &all, Positives::Neighbour, &[]);
        let partner: Vec<&str> = positive.iter().map(|&i| texts[i].as_str()).collect();
        // Only passage 0 has a next passage in its own section and file.
        assert_eq!(partner[0], "then restart the installation");
        assert_eq!(texts[0], "run the installer");
        for (k, &i) in positive.iter().enumerate().skip(1) {
            assert_eq!(i, k, "passage {k} is its own positive");
        }
        // A neighbour that is held back is not paired with.
        let (_, positive) = pair_up(&enc, &passages, &[0, 2, 3, 4], Positives::Neighbour, &[]);
        assert_eq!(positive, [0, 1, 2, 3]);

        // A sentence of a body long enough ↔ the rest; the others are their own positives.
        let long = vec![
            p(
                "c.md",
                Some("Why"),
                "It starts here. The reason is written down in this sentence. More words follow it until the end.",
            ),
            p("c.md", Some("Why"), "too short"),
        ];
        let (texts, positive) = pair_up(&enc, &long, &[0, 1], Positives::Sentence, &[]);
        let (sentence, rest) = known_item::split_sentence(&long[0].body, 0).unwrap();
        assert_eq!(
            (texts[0].as_str(), texts[positive[0]].as_str()),
            (rest.as_str(), sentence.as_str())
        );
        assert_eq!(positive[1], 1);

        let (texts, positive) = pair_up(&enc, &passages, &all, Positives::Dropout, &[]);
        assert_eq!(positive, [0, 1, 2, 3, 4, 5]);
        assert_eq!(
            texts[0], "Install run the installer",
            "the indexed text, trail included"
        );
    }
}
