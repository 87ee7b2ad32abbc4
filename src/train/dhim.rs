//! Training the DHIM hashing head (Ou et al., 2021; the head itself is `index::dhim`): codes
//! learned by maximising mutual information between each position's local code and the
//! document's global code.
//!
//! Differences from the reference implementation, each deliberate:
//! - the global READOUT averages over real tokens only (the reference averages over padding,
//!   which makes a document's code depend on the batch it was padded in);
//! - padded positions are zeroed before the convolutions, so a position next to the end of the
//!   text sees the same zeros whether the batch was padded or not;
//! - β weighs the global/sentence-embedding term (the reference parses β and ignores it);
//! - the JS estimator is applied to the raw bilinear scores (the reference passes them through a
//!   sigmoid first, which bounds the estimate and flattens its gradient);
//! - the sentence embedding is the mean-pooled vector the index uses, with its own projection
//!   to `bits` logits, since its width (384 for MiniLM) differs from the local features' (768).

use candle_core::{DType, Device, Tensor};

use crate::rng::SplitMix64;

use super::TrainError;
use super::optim::{adam, clip_gradients, snapshot};
use super::states::CorpusStates;
pub use crate::index::dhim::{
    DhimConfig, DhimHead, HeadError, HeadInit, SentenceCode, WINDOWS, pack,
};
use crate::rng::shuffle;

/// Scalars of one step, for progress bars and the manifest.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct DhimLoss {
    pub loss: f32,
    pub mi_local: f32,
    pub mi_global: f32,
}

/// `log(1 + exp(x))` without overflow, from differentiable primitives.
fn softplus(x: &Tensor) -> candle_core::Result<Tensor> {
    x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?
}

/// candle's fused sigmoid: its backward is `s(1 − s)`. Composing `1 / (1 + exp(−x))` instead
/// overflows `exp` for very negative logits and turns the gradient into `0 · ∞ = NaN`.
fn sigmoid(x: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::sigmoid(x)
}

impl DhimHead {
    /// Sets the weights so that the head's codes are ITQ codes of the READOUT of the
    /// documents `docs` (see [`HeadInit::Itq`]). Filters beyond the first `2 × bits` of window
    /// 1, and the other windows, keep their random weights but start with no say in the
    /// logits; training gives them one.
    pub fn warm_start_itq(&self, states: &CorpusStates, docs: &[usize]) -> Result<(), TrainError> {
        use crate::index::binarize::{LinearHasher, Method};
        let (bits, f, h) = (self.cfg.bits, self.cfg.filters, self.hidden);
        if 2 * bits > f || bits > h {
            return Err(TrainError::Msg(format!(
                "an ITQ start needs at least 2 × bits = {} filters per window and at most {h} \
                 bits; have {f} filters",
                2 * bits
            )));
        }
        let readouts = states.readouts(docs, self.cfg.max_tokens);
        let hasher = LinearHasher::fit(Method::Itq, &readouts, docs.len(), h, bits, self.cfg.seed)
            .map_err(|e| TrainError::Msg(format!("cannot fit the ITQ start: {e}")))?;
        let (mean, dirs) = (hasher.mean(), hasher.projection());

        let mut w: Vec<f32> = self.convs[0].0.flatten_all()?.to_vec1()?;
        let mut b: Vec<f32> = self.convs[0].1.to_vec1()?;
        let feat = f * WINDOWS.len();
        let mut pw = vec![0f32; bits * feat];
        for j in 0..bits {
            let d = &dirs[j * h..(j + 1) * h];
            let offset: f32 = d.iter().zip(mean).map(|(a, m)| a * m).sum();
            // Spread of this direction over the documents, so that logits / α start with a
            // standard deviation of about 2: codes start as ITQ's, samples mostly agree with
            // them, and the sigmoid is not so saturated that the STE gradient vanishes.
            let z: Vec<f32> = readouts
                .chunks_exact(h)
                .map(|r| r.iter().zip(d).map(|(a, b)| a * b).sum::<f32>() - offset)
                .collect();
            let var = z.iter().map(|v| v * v).sum::<f32>() / z.len().max(1) as f32;
            let scale = 2.0 * self.cfg.alpha as f32 / var.sqrt().max(1e-6);
            w[j * h..(j + 1) * h].copy_from_slice(d);
            w[(bits + j) * h..(bits + j + 1) * h]
                .iter_mut()
                .zip(d)
                .for_each(|(o, a)| *o = -a);
            b[j] = -offset;
            b[bits + j] = offset;
            pw[j * feat + j] = scale;
            pw[j * feat + bits + j] = -scale;
        }
        self.set("conv1.weight", w)?;
        self.set("conv1.bias", b)?;
        self.set("proj.weight", pw)?;
        Ok(self.set("proj.bias", vec![0.0; bits])?)
    }

    /// Codes of every text in `states`, `batch` at a time.
    pub fn encode_states(
        &self,
        states: &CorpusStates,
        device: &Device,
    ) -> Result<Vec<u64>, TrainError> {
        let idx: Vec<usize> = (0..states.len()).collect();
        let mut out = Vec::with_capacity(states.len() * self.cfg.bits.div_ceil(64));
        for chunk in idx.chunks(self.cfg.batch.max(1)) {
            let (x, m) = states.batch(chunk, self.cfg.max_tokens, device)?;
            out.extend(self.codes(&x, &m)?);
        }
        Ok(out)
    }

    /// Bernoulli sample of `sigmoid(logits / α)` whose gradient is the probability's
    /// (straight-through estimator).
    fn sample(&self, logits: &Tensor, rng: &mut SplitMix64) -> candle_core::Result<Tensor> {
        let p = sigmoid(&(logits / self.cfg.alpha)?)?;
        let u: Vec<f32> = (0..p.elem_count()).map(|_| rng.uniform_f32()).collect();
        let u = Tensor::from_vec(u, p.shape(), p.device())?;
        let hard = p.gt(&u)?.to_dtype(DType::F32)?;
        p.clone() + (hard - p)?.detach()
    }

    /// The negative objective on one batch: `−(MI_local + β · MI_global)`. With `rng` the codes
    /// are sampled (training); without, the probabilities are used (a deterministic
    /// validation score).
    ///
    /// `sentence` is the batch's mean-pooled embeddings `(b, hidden)`, or with
    /// [`SentenceCode::Itq`] their fixed 0/1 codes `(b, bits)`.
    pub fn loss(
        &self,
        x: &Tensor,
        mask: &Tensor,
        sentence: &Tensor,
        rng: Option<&mut SplitMix64>,
    ) -> Result<(Tensor, DhimLoss), TrainError> {
        let (b, t) = mask.dims2()?;
        let bits = self.cfg.bits;
        let (local, global) = self.features(x, mask)?;
        let ll = Self::project(&local, &self.proj_w, &self.proj_b)?;
        let lg = Self::project(&global, &self.proj_w, &self.proj_b)?;
        let fixed = self.cfg.sentence_code == SentenceCode::Itq;
        let ls = if fixed {
            sentence.clone()
        } else {
            Self::project(sentence, &self.sent_w, &self.sent_b)?
        };
        let (cl, cg, cs) = match rng {
            Some(r) => {
                let cs = if fixed { ls } else { self.sample(&ls, r)? };
                (self.sample(&ll, r)?, self.sample(&lg, r)?, cs)
            }
            None => {
                let p = |l: &Tensor| sigmoid(&(l / self.cfg.alpha)?);
                let cs = if fixed { ls } else { p(&ls)? };
                (p(&ll)?, p(&lg)?, cs)
            }
        };

        // Local/global: score every global code against every position of every document.
        let cl = cl.reshape((b * t, bits))?;
        let s = cg.matmul(&self.disc_l)?.matmul(&cl.t()?)?; // (b, b*t)
        let mvec: Vec<f32> = mask.flatten_all()?.to_vec1()?;
        let mut pos = vec![0f32; b * b * t];
        let mut neg = vec![0f32; b * b * t];
        for i in 0..b {
            for j in 0..b {
                for p in 0..t {
                    let real = mvec[j * t + p];
                    let at = i * b * t + j * t + p;
                    if i == j {
                        pos[at] = real;
                    } else {
                        neg[at] = real;
                    }
                }
            }
        }
        let dev = x.device();
        let pos = Tensor::from_vec(pos, (b, b * t), dev)?;
        let neg = Tensor::from_vec(neg, (b, b * t), dev)?;
        let mi_local = js_estimate(&s, &pos, &neg)?;

        // Global/sentence: the document's own sentence code against the others'.
        let s = cg.matmul(&self.disc_g)?.matmul(&cs.t()?)?; // (b, b)
        let eye = Tensor::eye(b, DType::F32, dev)?;
        let off = (eye.ones_like()? - &eye)?;
        let mi_global = js_estimate(&s, &eye, &off)?;

        let loss = ((&mi_local + (&mi_global * self.cfg.beta)?)? * -1.0)?;
        let scalars = DhimLoss {
            loss: loss.to_scalar::<f32>()?,
            mi_local: mi_local.to_scalar::<f32>()?,
            mi_global: mi_global.to_scalar::<f32>()?,
        };
        Ok((loss, scalars))
    }
}

/// Jensen-Shannon MI lower bound from scores `s` with 0/1 masks of positive and negative pairs:
/// `E_pos[−softplus(−s)] − E_neg[softplus(s)]`, averaged per row, then over rows.
fn js_estimate(s: &Tensor, pos: &Tensor, neg: &Tensor) -> candle_core::Result<Tensor> {
    let ep = (softplus(&s.neg()?)?.neg()? * pos)?.sum(1)? / pos.sum(1)?.clamp(1.0, f64::MAX)?;
    let en = (softplus(s)? * neg)?.sum(1)? / neg.sum(1)?.clamp(1.0, f64::MAX)?;
    (ep? - en?)?.mean_all()
}

/// What happened while training, for progress reporting.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    Step {
        epoch: usize,
        step: usize,
        steps: usize,
        loss: DhimLoss,
    },
    Epoch {
        epoch: usize,
        validation: f32,
        best: bool,
    },
}

/// The result of [`train`]: the head with its best-validation weights and how it got there.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DhimReport {
    pub epochs: usize,
    pub best_epoch: usize,
    pub best_validation: f32,
    pub train_docs: usize,
    pub validation_docs: usize,
    pub seconds: f64,
}

/// Trains a head on `states` with Adam, gradient clipping and early stopping on the
/// deterministic objective of held-back documents (an unsupervised signal: no labels).
pub fn train(
    states: &CorpusStates,
    cfg: DhimConfig,
    device: &Device,
    cancel: &std::sync::atomic::AtomicBool,
    progress: &mut dyn FnMut(Progress),
) -> Result<(DhimHead, DhimReport), TrainError> {
    // A step's tensors are freed and built again every step: keep their pages.
    let _memory = crate::encoder::HoldFreedMemory::new();
    use candle_nn::Optimizer;
    let started = std::time::Instant::now();
    let n = states.len();
    if n < 4 {
        return Err(TrainError::TooLittleData { have: n, need: 4 });
    }
    let head = DhimHead::new(cfg.clone(), states.dim, device)?;
    let mut rng = SplitMix64::new(cfg.seed ^ 0x9e37);
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, &mut rng);
    // A tenth of the documents (at most 1,000) judge the epochs; tiny corpora keep two.
    let n_val = (n / 10).clamp(2, 1000);
    let (val, trainset) = order.split_at(n_val);
    let val = val.to_vec();
    let mut trainset = trainset.to_vec();
    let batch = cfg.batch.clamp(2, trainset.len().max(2));
    if cfg.init == HeadInit::Itq {
        head.warm_start_itq(states, &trainset)?;
    }

    // With a fixed ITQ target, the codes of every document, as 0/1 floats.
    let targets: Option<Vec<f32>> = match cfg.sentence_code {
        SentenceCode::Learned => None,
        SentenceCode::Itq => {
            let h = crate::index::binarize::LinearHasher::fit(
                crate::index::binarize::Method::Itq,
                &states.pooled,
                n,
                states.dim,
                cfg.bits.min(states.dim),
                cfg.seed,
            )
            .map_err(|e| TrainError::Msg(format!("cannot fit the ITQ target: {e}")))?;
            let words = h.words();
            let codes = h
                .encode_batch(&states.pooled, n)
                .map_err(|e| TrainError::Msg(e.to_string()))?;
            let mut t = Vec::with_capacity(n * cfg.bits);
            for i in 0..n {
                for b in 0..cfg.bits {
                    let set = b < h.bits && codes[i * words + b / 64] >> (b % 64) & 1 == 1;
                    t.push(if set { 1.0 } else { 0.0 });
                }
            }
            Some(t)
        }
    };
    let sentence = |idx: &[usize]| -> Result<Tensor, TrainError> {
        match &targets {
            None => states.pooled_batch(idx, device),
            Some(t) => {
                let mut v = Vec::with_capacity(idx.len() * cfg.bits);
                for &i in idx {
                    v.extend_from_slice(&t[i * cfg.bits..(i + 1) * cfg.bits]);
                }
                Ok(Tensor::from_vec(v, (idx.len(), cfg.bits), device)?)
            }
        }
    };
    let vars = head.varmap.all_vars();
    let mut opt = adam(vars.clone(), cfg.lr)?;
    let validate = |head: &DhimHead| -> Result<f32, TrainError> {
        let mut total = 0f32;
        let mut count = 0;
        for chunk in val.chunks(batch) {
            if chunk.len() < 2 {
                continue;
            }
            let (x, m) = states.batch(chunk, cfg.max_tokens, device)?;
            let s = sentence(chunk)?;
            total += head.loss(&x, &m, &s, None)?.1.loss;
            count += 1;
        }
        Ok(total / count.max(1) as f32)
    };

    let mut best = validate(&head)?;
    let mut best_weights = snapshot(&vars)?;
    let mut best_epoch = 0;
    let mut epochs = 0;
    for epoch in 1..=cfg.max_epochs {
        shuffle(&mut trainset, &mut rng);
        let batches: Vec<&[usize]> = trainset.chunks(batch).filter(|c| c.len() >= 2).collect();
        for (step, chunk) in batches.iter().enumerate() {
            if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(TrainError::Cancelled);
            }
            let t0 = std::time::Instant::now();
            let (x, m) = states.batch(chunk, cfg.max_tokens, device)?;
            let s = sentence(chunk)?;
            let t1 = std::time::Instant::now();
            let (loss, scalars) = head.loss(&x, &m, &s, Some(&mut rng))?;
            let t2 = std::time::Instant::now();
            let mut grads = loss.backward()?;
            let t3 = std::time::Instant::now();
            clip_gradients(&vars, &mut grads, cfg.clip)?;
            opt.step(&grads)?;
            tracing::debug!(
                step,
                batch_ms = (t1 - t0).as_millis() as u64,
                forward_ms = (t2 - t1).as_millis() as u64,
                backward_ms = (t3 - t2).as_millis() as u64,
                update_ms = t3.elapsed().as_millis() as u64,
                loss = scalars.loss,
                "dhim step"
            );
            progress(Progress::Step {
                epoch,
                step: step + 1,
                steps: batches.len(),
                loss: scalars,
            });
        }
        epochs = epoch;
        let v = validate(&head)?;
        let improved = v < best;
        progress(Progress::Epoch {
            epoch,
            validation: v,
            best: improved,
        });
        if improved {
            best = v;
            best_weights = snapshot(&vars)?;
            best_epoch = epoch;
        } else if epoch - best_epoch >= cfg.patience {
            break;
        }
    }
    for (v, w) in vars.iter().zip(&best_weights) {
        v.set(w)?;
    }
    let report = DhimReport {
        epochs,
        best_epoch,
        best_validation: best,
        train_docs: trainset.len(),
        validation_docs: val.len(),
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((head, report))
}
