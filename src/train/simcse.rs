//! Unsupervised SimCSE (Gao et al., 2021): the same passage encoded twice with dropout is its
//! own positive, the other passages of the batch are negatives, and the loss is cross-entropy
//! over cosine similarities divided by a temperature of 0.05.
//!
//! Choices, and why:
//! - *mean pooling*, not the paper's CLS + MLP: the base model (all-MiniLM-L6-v2) was trained
//!   with mean pooling and the index stores mean-pooled vectors, so training the vector the index
//!   uses avoids a train/serve mismatch and needs no extra head.
//! - *head* mode trains only the top layers: the layers below are run once per passage with the
//!   fast frozen kernels and their outputs cached, so a step costs the top layers only. This is
//!   what fits a CPU. *full* mode trains every weight and is meant for a GPU.
//! - 64-token views in batches of 32: the length of the units semantic search matches. Views
//!   of 32 tokens (the paper's recipe) gained less on every dev set, and a step's activations
//!   grow with batch × tokens, so 64 tokens in batches of 64 needed 3.3 GB where 32 in batches
//!   of 64 needed 1.7 and 64 in batches of 32 2.1 (docs/BENCHMARKS.md).
//! - *sentence* positives by default: a passage's body without one of its sentences must find
//!   that sentence (the inverse cloze task), every view still under its own dropout mask. Of the
//!   positives measured on the dev sets (dropout, crops, title, neighbour, sentence) it gained the
//!   most semantic MRR@10 (docs/BENCHMARKS.md); a passage too short to split keeps the paper's
//!   dropout pair.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{D, DType, Tensor, Var};

use crate::encoder::{BatchLimits, DeviceSpec, Encoder, LoadOptions, l2_normalize, pool};
use crate::rng::SplitMix64;

use super::TrainError;
use super::optim::{adam, clip_gradients};
use super::states::CorpusStates;
use crate::rng::shuffle;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every weight (GPU).
    Full,
    /// Only the top layers; the rest are frozen and their outputs cached (CPU).
    Head,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        super::parse_choice(s, "SimCSE mode", "full, head or off")
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SimcseConfig {
    pub mode: Mode,
    /// Layers trained in head mode.
    pub head_layers: usize,
    pub lr: f64,
    pub batch: usize,
    /// Tokens per passage, `[CLS]` and `[SEP]` included.
    pub max_len: usize,
    pub epochs: usize,
    pub temperature: f64,
    pub clip: f64,
    pub seed: u64,
    #[serde(default)]
    pub positives: Positives,
    /// Also learn the questions the notes ask of themselves (a link's sentence ↔ the section
    /// it points to, a front matter title ↔ its note, a question heading ↔ its answer;
    /// `corpus::questions`), each beside the passages' own positives.
    #[serde(default)]
    pub structure: bool,
    /// Share of the trained weights in the model kept; the rest is the base's (WiSE-FT's
    /// weight averaging, Wortsman et al. 2022). Halfway lost semantic gain on two of the three
    /// dev sets (docs/BENCHMARKS.md), so the default keeps the trained weights whole.
    #[serde(default = "whole")]
    pub tuned_weight: f64,
}

fn whole() -> f64 {
    1.0
}

/// What a passage is trained to pick out of the batch. Every view runs under its own dropout
/// mask, so each kind keeps the paper's objective and adds what the notes give for free.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Positives {
    /// Itself (its first `max_len` tokens) under another dropout mask, as in the paper.
    Dropout,
    /// Two random crops of `max_len` tokens from its first N (Contriever's independent
    /// cropping), so a view must recognise other parts of its own passage. Head mode only.
    Crops(usize),
    /// Its body (without the heading trail) ↔ the title of its section, read as a query: what
    /// people type is closer to a title than to a paragraph.
    Title,
    /// Its body ↔ the body of the next passage of the same section: one topic, other words.
    Neighbour,
    /// Its body without one of its sentences ↔ that sentence, read as a query (the inverse cloze
    /// task): a question is often one sentence's worth of a passage.
    #[default]
    Sentence,
}

impl std::str::FromStr for Positives {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "unknown SimCSE positives {s:?}: use dropout, crops:N, title, neighbour or sentence"
            )
        };
        match s {
            "dropout" => Ok(Self::Dropout),
            "title" => Ok(Self::Title),
            "neighbour" | "neighbor" => Ok(Self::Neighbour),
            "sentence" => Ok(Self::Sentence),
            _ => match s.strip_prefix("crops:").map(str::parse::<usize>) {
                Some(Ok(n)) if n >= 3 => Ok(Self::Crops(n)),
                _ => Err(bad()),
            },
        }
    }
}

impl std::fmt::Display for Positives {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dropout => f.write_str("dropout"),
            Self::Crops(n) => write!(f, "crops:{n}"),
            Self::Title => f.write_str("title"),
            Self::Neighbour => f.write_str("neighbour"),
            Self::Sentence => f.write_str("sentence"),
        }
    }
}

/// What SimCSE learns from: anchors, each with the text that is its positive. A passage without
/// a text to pair it with is its own positive (the paper's dropout pair).
#[derive(Debug, Clone)]
pub struct Examples<'a> {
    /// The anchors first, then texts that only serve as positives.
    pub texts: Vec<&'a str>,
    /// Per anchor, its positive's index in `texts` (its own index: itself).
    pub positive: Vec<usize>,
}

impl<'a> Examples<'a> {
    /// Every text is an anchor and its own positive.
    pub fn own(texts: &[&'a str]) -> Self {
        Self {
            texts: texts.to_vec(),
            positive: (0..texts.len()).collect(),
        }
    }

    pub fn anchors(&self) -> usize {
        self.positive.len()
    }

    /// Splits shuffled anchors into batches in which no text appears twice: the same words as
    /// one member's anchor or positive and another's would be a negative identical to a positive
    /// (two passages of one section share its title; a note copied into two files). An anchor
    /// that would repeat a text waits for a later batch; batches of fewer than two are dropped.
    fn batches(&self, order: &[usize], size: usize) -> Vec<Vec<usize>> {
        let size = size.max(2);
        let mut out = Vec::new();
        let mut pending: Vec<usize> = order.to_vec();
        while !pending.is_empty() {
            let mut batch = Vec::with_capacity(size);
            let mut used: std::collections::HashSet<&str> = std::collections::HashSet::new();
            let mut later = Vec::new();
            for &i in &pending {
                let (a, p) = (self.texts[i], self.texts[self.positive[i]]);
                let own = self.positive[i] == i || a == p;
                if batch.len() < size && !used.contains(a) && (own || !used.contains(p)) {
                    used.insert(a);
                    used.insert(p);
                    batch.push(i);
                } else {
                    later.push(i);
                }
            }
            if batch.len() < 2 {
                break;
            }
            out.push(batch);
            pending = later;
        }
        out
    }
}

impl Default for SimcseConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Head,
            head_layers: 2,
            lr: 3e-5,
            batch: 32,
            max_len: 64,
            epochs: 1,
            temperature: 0.05,
            clip: 1.0,
            seed: 0x51c5e,
            positives: Positives::Sentence,
            structure: false,
            tuned_weight: 1.0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// Running the frozen lower layers once over the passages.
    Caching { done: usize, total: usize },
    Step {
        epoch: usize,
        step: usize,
        steps: usize,
        loss: f32,
    },
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SimcseReport {
    pub steps: usize,
    pub passages: usize,
    /// Mean loss over the first and the last tenth of the steps.
    pub loss_start: f32,
    pub loss_end: f32,
    pub seconds: f64,
}

/// Fine-tunes the model in `model_dir` on `examples` and returns the trained (trainable) encoder;
/// save it with [`save_model`].
pub fn train(
    model_dir: &Path,
    examples: &Examples,
    cfg: &SimcseConfig,
    device: DeviceSpec,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Encoder, SimcseReport), TrainError> {
    // A step's tensors are freed and built again every step: keep their pages.
    let _memory = crate::encoder::HoldFreedMemory::new();
    use candle_nn::Optimizer;
    let started = std::time::Instant::now();
    let texts = &examples.texts;
    let anchors = examples.anchors();
    if anchors < 2 * cfg.batch.max(2) {
        return Err(TrainError::TooLittleData {
            have: anchors,
            need: 2 * cfg.batch.max(2),
        });
    }
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        return Err(TrainError::Msg(format!(
            "SimCSE learning rate {}: must be a positive number",
            cfg.lr
        )));
    }
    if !(0.0..=1.0).contains(&cfg.tuned_weight) {
        return Err(TrainError::Msg(format!(
            "SimCSE tuned weight {}: must be between 0 and 1",
            cfg.tuned_weight
        )));
    }
    if examples.positive.iter().any(|&p| p >= texts.len()) {
        return Err(TrainError::Msg(
            "a SimCSE positive points past the texts".into(),
        ));
    }
    let crops_of = match cfg.positives {
        Positives::Crops(n) => n,
        _ => 0,
    };
    let opts = LoadOptions {
        device,
        trainable: true,
        max_len: Some(cfg.max_len),
        candle_only: false,
        precision: Some(crate::encoder::Precision::F32),
    };
    if crops_of > 0 && cfg.mode != Mode::Head {
        return Err(TrainError::Msg("SimCSE crops need head mode".into()));
    }
    let enc = Encoder::load(model_dir, &opts)?;
    let layers = enc.num_layers();
    let from = match cfg.mode {
        Mode::Full => 0,
        Mode::Head => layers.saturating_sub(cfg.head_layers.clamp(1, layers)),
    };
    let vars = trainable_vars(&enc, from)?;
    // Deep copies (the optimiser writes into the variables' own storage), only when the end
    // blends them back in.
    let starts = if cfg.tuned_weight < 1.0 {
        vars.iter()
            .map(|v| v.as_tensor().copy())
            .collect::<candle_core::Result<Vec<_>>>()?
    } else {
        Vec::new()
    };

    // Head mode: the frozen lower layers, once. Full mode: just the token ids.
    let (lower, tokens) = match cfg.mode {
        Mode::Head => {
            let frozen = Encoder::load(
                model_dir,
                &LoadOptions {
                    trainable: false,
                    max_len: Some(cfg.max_len.max(crops_of)),
                    ..opts.clone()
                },
            )?;
            let s = CorpusStates::encode_layers(
                &frozen,
                texts,
                from,
                BatchLimits::default(),
                &mut |done, total| progress(Progress::Caching { done, total }),
            )?;
            (Some(s), Vec::new())
        }
        Mode::Full => (None, enc.tokenize(texts)?),
    };

    let pooling = enc.profile().pooling;
    let mut opt = adam(vars.clone(), cfg.lr)?;
    let mut rng = SplitMix64::new(cfg.seed);
    let mut order: Vec<usize> = (0..anchors).collect();
    let mut losses = Vec::new();
    let dev = enc.device().clone();
    for epoch in 1..=cfg.epochs.max(1) {
        shuffle(&mut order, &mut rng);
        // Sorting each batch's members by length would bias the negatives; batches are random.
        let batches = examples.batches(&order, cfg.batch);
        for (step, idx) in batches.iter().enumerate() {
            if cancel.load(Ordering::Relaxed) {
                return Err(TrainError::Cancelled);
            }
            let partners: Vec<usize> = idx.iter().map(|&i| examples.positive[i]).collect();
            let mut view = |enc: &Encoder, idx: &[usize]| -> Result<Tensor, TrainError> {
                let (states, mask) = match &lower {
                    Some(l) => {
                        let (x, m) = if crops_of > 0 {
                            l.batch_crops(idx, cfg.max_len, &mut rng, &dev)?
                        } else {
                            l.batch_full(idx, &dev)?
                        };
                        (enc.forward_from(&x, &m, from, true)?, m)
                    }
                    None => {
                        let items: Vec<&[u32]> =
                            idx.iter().map(|&i| tokens[i].ids.as_slice()).collect();
                        enc.token_states(&items, true)?
                    }
                };
                Ok(l2_normalize(&pool(&states, &mask, pooling)?)?)
            };
            let a = view(&enc, idx)?;
            let b = view(&enc, &partners)?;
            let loss = info_nce(&a, &b, cfg.temperature)?;
            let mut grads = loss.backward()?;
            clip_gradients(&vars, &mut grads, cfg.clip)?;
            opt.step(&grads)?;
            let l = loss.to_scalar::<f32>()?;
            losses.push(l);
            tracing::debug!(epoch, step, loss = l, "simcse step");
            progress(Progress::Step {
                epoch,
                step: step + 1,
                steps: batches.len(),
                loss: l,
            });
        }
    }
    blend(&vars, &starts, cfg.tuned_weight)?;
    let tenth = (losses.len() / 10).max(1);
    let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len().max(1) as f32;
    let report = SimcseReport {
        steps: losses.len(),
        passages: anchors,
        loss_start: mean(&losses[..tenth.min(losses.len())]),
        loss_end: mean(&losses[losses.len().saturating_sub(tenth)..]),
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((enc, report))
}

/// Moves each variable to `start + weight × (now − start)`: `weight` 1 keeps what training
/// reached, 0 restores the start.
pub(crate) fn blend(vars: &[Var], starts: &[Tensor], weight: f64) -> candle_core::Result<()> {
    if weight == 1.0 {
        return Ok(());
    }
    for (v, start) in vars.iter().zip(starts) {
        let moved = (v.as_tensor() - start)?;
        v.set(&(start + (moved * weight)?)?)?;
    }
    Ok(())
}

/// Cross-entropy of each row of `a` finding its own row of `b` among all rows of `b`, with
/// cosine similarities (rows are unit length) divided by `temperature`.
pub fn info_nce(a: &Tensor, b: &Tensor, temperature: f64) -> candle_core::Result<Tensor> {
    let n = a.dim(0)?;
    let s = (a.matmul(&b.t()?)? / temperature)?;
    let max = s.max_keepdim(D::Minus1)?.detach();
    let lse = (s
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        + max)?;
    let eye = Tensor::eye(n, DType::F32, s.device())?;
    let own = (s * eye)?.sum_keepdim(D::Minus1)?;
    (lse - own)?.mean_all()
}

/// The variables of layers `from..` (all of them, embeddings included, for `from == 0`).
fn trainable_vars(enc: &Encoder, from: usize) -> Result<Vec<Var>, TrainError> {
    let map = enc
        .varmap()
        .ok_or_else(|| TrainError::Msg("the encoder was loaded frozen".into()))?;
    let data = map
        .data()
        .lock()
        .map_err(|_| TrainError::Msg("variable map lock poisoned".into()))?;
    let mut vars: Vec<(String, Var)> = data
        .iter()
        .filter(|(name, _)| from == 0 || layer_of(name).is_some_and(|l| l >= from))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    // A fixed order keeps the optimiser's behaviour reproducible.
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(vars.into_iter().map(|(_, v)| v).collect())
}

fn layer_of(name: &str) -> Option<usize> {
    let rest = name.split("encoder.layer.").nth(1)?;
    rest.split('.').next()?.parse().ok()
}

/// Saves a tuned model beside what it needs to load like its base: the base's files other than
/// the weights, and `profile`'s prompts (which may have come from a preset, not the folder).
pub fn save_model(
    enc: &Encoder,
    base_dir: &Path,
    profile: &crate::encoder::Profile,
    out: &Path,
) -> Result<(), TrainError> {
    let map = enc
        .varmap()
        .ok_or_else(|| TrainError::Msg("the encoder was loaded frozen".into()))?;
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    // Everything but the weights, so the tuned model pools and prompts like its base.
    for f in [
        "config.json",
        "tokenizer.json",
        "sentence_bert_config.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "modules.json",
        "1_Pooling/config.json",
        "config_sentence_transformers.json",
    ] {
        let src = base_dir.join(f);
        if src.is_file() {
            let dst = out.join(f);
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent).map_err(|e| TrainError::io(parent, e))?;
            }
            std::fs::copy(&src, &dst).map_err(|e| TrainError::io(&src, e))?;
        }
    }
    if !profile.query_prompt.is_empty() || !profile.document_prompt.is_empty() {
        let st = serde_json::json!({"prompts": {
            "query": profile.query_prompt, "document": profile.document_prompt
        }});
        let p = out.join("config_sentence_transformers.json");
        std::fs::write(&p, st.to_string()).map_err(|e| TrainError::io(&p, e))?;
    }
    let weights = out.join("model.safetensors");
    map.save(&weights)
        .map_err(|e| TrainError::Msg(format!("{}: cannot write: {e}", weights.display())))
}

#[cfg(test)]
mod tests {
    use super::Examples;

    #[test]
    fn a_batch_never_holds_one_text_twice_and_every_anchor_is_trained_on() {
        // 40 anchors; anchors 0..30 pair up in threes with one shared text each (three passages
        // of a section, one title), anchor 30 is anchor 31's positive, anchors 32 and 33 are
        // the same words (one note in two files), the rest are their own.
        let mut owned: Vec<String> = (0..50).map(|i| format!("text {i}")).collect();
        owned[33] = owned[32].clone();
        let mut positive: Vec<usize> = (0..40).collect();
        for (i, p) in positive.iter_mut().enumerate().take(30) {
            *p = 40 + i / 3;
        }
        positive[31] = 30;
        let ex = Examples {
            texts: owned.iter().map(String::as_str).collect(),
            positive,
        };
        let order: Vec<usize> = (0..40).collect();
        let batches = ex.batches(&order, 8);
        let mut seen = Vec::new();
        for b in &batches {
            assert!(b.len() >= 2 && b.len() <= 8, "{b:?}");
            let mut used: Vec<&str> = b
                .iter()
                .flat_map(|&i| [ex.texts[i], ex.texts[ex.positive[i]]])
                .collect();
            used.sort_unstable();
            let before = used.len();
            used.dedup();
            // An anchor that is its own positive counts once.
            let own = b.iter().filter(|&&i| ex.positive[i] == i).count();
            assert_eq!(used.len(), before - own, "a text twice in {b:?}");
            seen.extend_from_slice(b);
        }
        seen.sort_unstable();
        let trained = seen.len();
        seen.dedup();
        assert_eq!(seen.len(), trained, "an anchor twice in one epoch");
        // Only a last batch of one may be left out.
        assert!(trained >= 39, "{trained} of 40 anchors trained on");
    }
}
