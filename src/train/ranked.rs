//! Training the ranking head (`index::ranked`) on the corpus's own pooled vectors: its codes
//! learn to put each passage's nearest neighbours (exact cosine, the teacher) first under the
//! product's weighted filter, and the head kept is the one that needs the fewest candidates
//! for recall@10 ≥ 0.99 on held-back passages — the filter's own measure, with no labels.
//!
//! The objective, per (query, teacher neighbour) pair: `log(1 + smooth rank)`, the rank being
//! a sigmoid count of the pool's other passages that score above the neighbour (score = the
//! query's logits against the passage's sign bits, as the weighted filter scores), plus the
//! same averaged over the batch's worst `tail` share of pairs. Bits pass gradients straight
//! through a tanh. Measured alternatives (docs/BENCHMARKS.md): a KL to the teacher's softmax
//! over all passages made codes worse than ITQ; the mean term alone drifts once the typical
//! pair is served, which the tail term and the held-back choice of step hold in check.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use super::TrainError;
use super::metrics::{candidates_for_target, cosine_top_k, filter_ranks};
use super::optim::{adam, snapshot};
use crate::index::binarize::{LinearHasher, Method};
use crate::index::dhim::pack;
pub use crate::index::ranked::{RankConfig, RankHead};
use crate::rng::{SplitMix64, shuffle};

/// Training queries whose comparisons are computed together (see [`objective`]).
const QUERY_CHUNK: usize = 32;

/// Recall@10 the held-back check sizes the filter for (the product's target).
pub const CHECK_TARGET: f64 = 0.99;

/// A head is adopted only if the held-back passages need at most this share of ITQ's
/// candidates. The check's queries are passages of the corpus, the user's are not: a small gain
/// there did not carry over (20NG at 128 bits: 0.93× on held-back passages, 1.10× on the test
/// split's queries), and a saving under a tenth is not worth a learned code source's risk.
pub const ADOPTION_RATIO: f64 = 0.9;

/// Passages needed to train at all. Below it the filter's default candidate count (at least
/// 1,000) is a large share of the index and learned codes would save little; the check also
/// needs held-back queries with real neighbours.
pub const MIN_PASSAGES: usize = 2000;

#[derive(Debug, Clone, Copy)]
pub enum Progress {
    Neighbours {
        done: usize,
        total: usize,
    },
    Step {
        step: usize,
        steps: usize,
        loss: f32,
    },
    Check {
        step: usize,
        candidates: usize,
        itq: usize,
    },
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RankReport {
    /// Passages trained on (the sample) and held back among them as the check's queries.
    pub passages: usize,
    pub held_back: usize,
    pub steps: usize,
    pub best_step: usize,
    /// Candidates the weighted filter needs for recall@10 ≥ [`CHECK_TARGET`] on the held-back
    /// queries: with the ITQ codes training started from, and with the head kept.
    pub itq_candidates: usize,
    pub head_candidates: usize,
    pub seconds: f64,
}

/// Trains a head on `n` row-major unit vectors of width `dim`.
pub fn train(
    vectors: &[f32],
    n: usize,
    dim: usize,
    cfg: RankConfig,
    device: &Device,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(Progress),
) -> Result<(RankHead, RankReport), TrainError> {
    // A step's tensors are freed and built again every step: keep their pages.
    let _memory = crate::encoder::HoldFreedMemory::new();
    let started = Instant::now();
    if vectors.len() != n.saturating_mul(dim) {
        return Err(TrainError::Msg(format!(
            "{} floats are not {n} vectors of {dim}",
            vectors.len()
        )));
    }
    let need = MIN_PASSAGES.max(cfg.bits * crate::index::coder::MIN_PASSAGES_PER_BIT);
    if n < need {
        return Err(TrainError::TooLittleData { have: n, need });
    }
    if cfg.bits > dim || cfg.batch == 0 || cfg.every == 0 || cfg.neighbours == 0 {
        return Err(TrainError::Msg(format!(
            "a ranking head of {} bits needs vectors at least that wide (have {dim}), a batch, a check interval and neighbours",
            cfg.bits
        )));
    }
    let check = || {
        if cancel.load(Ordering::Acquire) {
            Err(TrainError::Cancelled)
        } else {
            Ok(())
        }
    };

    // An evenly spaced sample, so time and memory stay bounded on a large index.
    let m = n.min(cfg.max_passages.max(need));
    let x: Vec<f32> = (0..m)
        .flat_map(|i| {
            let r = i * n / m;
            vectors[r * dim..(r + 1) * dim].iter().copied()
        })
        .collect();
    let h = cfg.held_back.min(m / 5).max(1);
    let held: Vec<usize> = (0..h).map(|i| i * m / h).collect();
    let mut is_held = vec![false; m];
    held.iter().for_each(|&i| is_held[i] = true);
    let trainset: Vec<usize> = (0..m).filter(|&i| !is_held[i]).collect();

    // The teacher: every sampled passage's nearest others by exact cosine.
    let k = cfg.neighbours.min(m - 1);
    let mut neighbours: Vec<Vec<usize>> = Vec::with_capacity(m);
    for start in (0..m).step_by(1024) {
        check()?;
        let end = (start + 1024).min(m);
        neighbours.par_extend(
            (start..end)
                .into_par_iter()
                .map(|i| cosine_top_k(&x[i * dim..(i + 1) * dim], &x, dim, k, Some(i))),
        );
        progress(Progress::Neighbours {
            done: end,
            total: m,
        });
    }

    // Start at ITQ as an update would fit it on these passages.
    let itq = LinearHasher::fit(Method::Itq, &x, m, dim, cfg.bits, 0x5eed)
        .map_err(|e| TrainError::Msg(format!("cannot fit the ITQ start: {e}")))?;
    let head = RankHead::new(cfg.clone(), dim, device)?;
    start_at_itq(&head, &itq, &x, m)?;

    let words = cfg.bits.div_ceil(64);
    let measure = |head: &RankHead| -> Result<usize, TrainError> {
        let logits = head.logits_of(&x, m)?;
        let codes = pack(&logits, m, cfg.bits);
        let bits = cfg.bits;
        let ranks: Result<Vec<Vec<usize>>, _> = held
            .par_iter()
            .map(|&q| {
                filter_ranks(
                    &codes,
                    words,
                    &codes[q * words..(q + 1) * words],
                    Some(&logits[q * bits..(q + 1) * bits]),
                    &neighbours[q],
                    Some(q),
                )
            })
            .collect();
        let mut ranks: Vec<usize> = ranks
            .map_err(|e| TrainError::Msg(e.to_string()))?
            .into_iter()
            .flatten()
            .collect();
        Ok(candidates_for_target(&mut ranks, CHECK_TARGET))
    };

    let vars = head.trained_vars()?;
    let mut opt = adam(vars.clone(), cfg.lr)?;
    let itq_candidates = measure(&head)?;
    progress(Progress::Check {
        step: 0,
        candidates: itq_candidates,
        itq: itq_candidates,
    });
    let mut best = (itq_candidates, 0usize);
    let mut best_weights = snapshot(&vars)?;

    let xt = Tensor::from_slice(&x, (m, dim), device)?;
    let mut rng = SplitMix64::new(cfg.seed);
    let mut order: Vec<usize> = (0..m).collect();
    let pool = cfg.pool.clamp(1, m);
    let mut steps = 0;
    for step in 1..=cfg.steps {
        check()?;
        let pick: Vec<usize> = (0..cfg.batch)
            .map(|_| trainset[(rng.next_u64() % trainset.len() as u64) as usize])
            .collect();
        let cand: Vec<usize> = if pool < m {
            shuffle(&mut order, &mut rng);
            order[..pool].to_vec()
        } else {
            (0..m).collect()
        };
        let (loss, value) = objective(&head, &xt, &pick, &cand, &neighbours, m, &cfg)?;
        let grads = loss.backward()?;
        candle_nn::Optimizer::step(&mut opt, &grads)?;
        steps = step;
        progress(Progress::Step {
            step,
            steps: cfg.steps,
            loss: value,
        });
        if step % cfg.every == 0 || step == cfg.steps {
            let c = measure(&head)?;
            progress(Progress::Check {
                step,
                candidates: c,
                itq: itq_candidates,
            });
            if c < best.0 {
                best = (c, step);
                best_weights = snapshot(&vars)?;
            }
        }
    }
    for (v, w) in vars.iter().zip(&best_weights) {
        v.set(w)?;
    }
    let report = RankReport {
        passages: m,
        held_back: held.len(),
        steps,
        best_step: best.1,
        itq_candidates,
        head_candidates: best.0,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((head, report))
}

/// Sets the head to code exactly as `itq` does, with the residual silent and scaled to each
/// bit's spread over the passages (so its first steps move bits by comparable amounts).
fn start_at_itq(
    head: &RankHead,
    itq: &LinearHasher,
    x: &[f32],
    m: usize,
) -> Result<(), TrainError> {
    let (dim, bits) = (head.dim, head.cfg.bits);
    let p = itq.projection(); // bits × dim
    let mut proj = vec![0f32; dim * bits];
    for j in 0..bits {
        for i in 0..dim {
            proj[i * bits + j] = p[j * dim + i];
        }
    }
    head.set("itq.mean", itq.mean().to_vec())?;
    head.set("itq.offset", itq.thresholds().to_vec())?;
    head.set("proj", proj)?;
    let lin = head.logits_of(x, m)?;
    let scale: Vec<f32> = (0..bits)
        .map(|j| {
            let (s, s2) = (0..m).fold((0f64, 0f64), |(s, s2), r| {
                let v = lin[r * bits + j] as f64;
                (s + v, s2 + v * v)
            });
            let mean = s / m as f64;
            ((s2 / m as f64 - mean * mean).max(0.0).sqrt() as f32).max(1e-6)
        })
        .collect();
    Ok(head.set("scale", scale)?)
}

/// Bits of `z` (rows × bits) whose gradient is `tanh(z / spread)`'s: the straight-through
/// estimator, with each bit's spread over the rows fixing the tanh's width.
fn straight_through(z: &Tensor, spread: &Tensor) -> candle_core::Result<Tensor> {
    let soft = z.broadcast_div(spread)?.tanh()?;
    let hard = ((z.ge(0f32)?.to_dtype(DType::F32)? * 2.0)? - 1.0)?;
    soft.clone() + (hard - soft)?.detach()
}

/// Standard deviation along `dim`, kept, detached, floored away from zero.
fn spread(t: &Tensor, dim: usize) -> candle_core::Result<Tensor> {
    let t = t.detach();
    let mean = t.mean_keepdim(dim)?;
    t.broadcast_sub(&mean)?
        .sqr()?
        .mean_keepdim(dim)?
        .sqrt()?
        .clamp(1e-6f32, f32::MAX)
}

/// The loss on one batch of training queries `pick` ranked among the passages `cand`, and its
/// value.
pub(crate) fn objective(
    head: &RankHead,
    x: &Tensor,
    pick: &[usize],
    cand: &[usize],
    neighbours: &[Vec<usize>],
    m: usize,
    cfg: &RankConfig,
) -> Result<(Tensor, f32), TrainError> {
    let device = x.device();
    let b = pick.len();
    let k = neighbours[pick[0]].len();
    let p = cand.len();
    let idx = |v: &[usize]| -> candle_core::Result<Tensor> {
        let v: Vec<u32> = v.iter().map(|&i| i as u32).collect();
        let len = v.len();
        Tensor::from_vec(v, len, device)
    };
    let nb: Vec<usize> = pick
        .iter()
        .flat_map(|&q| neighbours[q].iter().copied())
        .collect();
    if nb.len() != b * k {
        return Err(TrainError::Msg("passages with too few neighbours".into()));
    }
    let zp = head.logits(&x.index_select(&idx(cand)?, 0)?)?; // (p, bits)
    let sd = spread(&zp, 0)?;
    let bp = straight_through(&zp, &sd)?;
    let g = head.logits(&x.index_select(&idx(pick)?, 0)?)?; // (b, bits)
    let zn = head.logits(&x.index_select(&idx(&nb)?, 0)?)?; // (b·k, bits)
    let bn = straight_through(&zn, &sd)?.reshape((b, k, ()))?;
    // The (queries × neighbours × pool) comparisons are the step's largest tensors; taken
    // QUERY_CHUNK queries at a time, each stays small enough for the allocator to reuse its
    // memory instead of mapping fresh pages every step (a third of a step's time otherwise).
    let mut parts = Vec::with_capacity(b.div_ceil(QUERY_CHUNK));
    for start in (0..b).step_by(QUERY_CHUNK) {
        let len = QUERY_CHUNK.min(b - start);
        let gc = g.narrow(0, start, len)?;
        let s = gc.matmul(&bp.t()?)?; // (len, p)
        let row_sd = spread(&s, 1)?; // (len, 1)
        let s = s.broadcast_div(&row_sd)?;
        let st = gc
            .unsqueeze(1)?
            .broadcast_mul(&bn.narrow(0, start, len)?)?
            .sum(2)?
            .broadcast_div(&row_sd)?; // (len, k)
        // A query is not its own neighbour's rival, nor are its other neighbours.
        let mut mask = vec![1f32; len * p];
        for (r, &q) in pick[start..start + len].iter().enumerate() {
            let own = &neighbours[q];
            for (j, &c) in cand.iter().enumerate() {
                if c == q || own.contains(&c) {
                    mask[r * p + j] = 0.0;
                }
            }
        }
        let mask = Tensor::from_vec(mask, (len, 1, p), device)?;
        let above = candle_nn::ops::sigmoid(
            &(s.unsqueeze(1)?.broadcast_sub(&st.unsqueeze(2)?)? / cfg.temperature)?,
        )?
        .broadcast_mul(&mask)?
        .sum(2)?; // (len, k)
        parts.push(above);
    }
    let rank = (Tensor::cat(&parts, 0)? * (m as f64 / p as f64))?;
    let per_pair = (rank + 1.0)?.log()?; // (b, k)
    let values: Vec<f32> = per_pair.flatten_all()?.to_vec1()?;
    let worst = ((values.len() as f64 * cfg.tail).round() as usize).clamp(1, values.len());
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    let mut tail = vec![0f32; values.len()];
    order[..worst]
        .iter()
        .for_each(|&i| tail[i] = 1.0 / worst as f32);
    let tail = Tensor::from_vec(tail, (b, k), device)?;
    let loss = (per_pair.mean_all()? + per_pair.mul(&tail)?.sum_all()?)?;
    let value = loss.to_scalar::<f32>()?;
    Ok((loss, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unit vectors in `clusters` tight groups around random centres, with a spread inside
    /// each group that ITQ's few directions cannot all follow.
    fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        let centres: Vec<f32> = (0..clusters * dim).map(|_| rng.gaussian() as f32).collect();
        let mut out = Vec::with_capacity(n * dim);
        for i in 0..n {
            let c = i % clusters;
            let v: Vec<f32> = (0..dim)
                .map(|d| centres[c * dim + d] + 0.6 * rng.gaussian() as f32)
                .collect();
            let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            out.extend(v.iter().map(|a| a / norm));
        }
        out
    }

    fn tiny() -> RankConfig {
        RankConfig {
            bits: 16,
            hidden: 32,
            batch: 32,
            pool: 256,
            steps: 40,
            every: 10,
            held_back: 100,
            lr: 3e-3,
            ..Default::default()
        }
    }

    #[test]
    fn every_trained_parameter_gets_a_gradient() {
        let (n, dim) = (600, 24);
        let x = clustered(n, dim, 12, 1);
        let dev = Device::Cpu;
        let cfg = tiny();
        let head = RankHead::new(cfg.clone(), dim, &dev).unwrap();
        let itq = LinearHasher::fit(Method::Itq, &x, n, dim, cfg.bits, 0x5eed).unwrap();
        start_at_itq(&head, &itq, &x, n).unwrap();
        // The output layer starts at zero; give it a value so the hidden layer's gradient is
        // not zero by construction.
        head.set(
            "mlp.w2",
            (0..32 * 16).map(|i| (i as f32).sin() * 0.1).collect(),
        )
        .unwrap();
        let nb: Vec<Vec<usize>> = (0..n)
            .map(|i| cosine_top_k(&x[i * dim..(i + 1) * dim], &x, dim, 10, Some(i)))
            .collect();
        let xt = Tensor::from_slice(&x, (n, dim), &dev).unwrap();
        let pick: Vec<usize> = (0..32).collect();
        let cand: Vec<usize> = (100..400).collect();
        let (loss, value) = objective(&head, &xt, &pick, &cand, &nb, n, &cfg).unwrap();
        assert!(value.is_finite() && value > 0.0);
        let grads = loss.backward().unwrap();
        let data = head.varmap().data().lock().unwrap();
        for name in crate::index::ranked::TRAINED {
            let g = grads.get(data[name].as_tensor()).expect(name);
            let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(norm > 0.0 && norm.is_finite(), "{name}: {norm}");
        }
        for name in ["itq.mean", "itq.offset", "scale"] {
            assert!(
                grads.get(data[name].as_tensor()).is_none(),
                "{name} is fixed"
            );
        }
    }

    #[test]
    fn training_lowers_the_loss_and_keeps_the_best_checked_head() {
        let (n, dim) = (2000, 24);
        let x = clustered(n, dim, 16, 2);
        let cancel = AtomicBool::new(false);
        let mut losses = Vec::new();
        let mut checks = Vec::new();
        let (head, report) = train(
            &x,
            n,
            dim,
            tiny(),
            &Device::Cpu,
            &cancel,
            &mut |p| match p {
                Progress::Step { loss, .. } => losses.push(loss),
                Progress::Check { candidates, .. } => checks.push(candidates),
                Progress::Neighbours { .. } => {}
            },
        )
        .unwrap();
        assert_eq!(losses.len(), 40);
        let first: f32 = losses[..5].iter().sum::<f32>() / 5.0;
        let last: f32 = losses[35..].iter().sum::<f32>() / 5.0;
        assert!(last < first, "loss {first} → {last}");
        // The check ran at the start and every 10 steps; the head kept is the best of them.
        assert_eq!(checks.len(), 5);
        assert_eq!(report.itq_candidates, checks[0]);
        assert_eq!(report.head_candidates, *checks.iter().min().unwrap());
        assert!(report.head_candidates <= report.itq_candidates);
        assert_eq!((report.passages, report.held_back), (2000, 100));
        // The kept head's codes are what the check measured: re-measure it from scratch.
        let logits = head.logits_of(&x, n).unwrap();
        assert!(logits.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn too_few_passages_or_a_cancel_stop_it_cleanly() {
        let dim = 24;
        let x = clustered(1999, dim, 4, 3);
        let cancel = AtomicBool::new(false);
        assert!(matches!(
            train(&x, 1999, dim, tiny(), &Device::Cpu, &cancel, &mut |_| {}),
            Err(TrainError::TooLittleData { have: 1999, .. })
        ));
        let x = clustered(2000, dim, 4, 3);
        let cancel = AtomicBool::new(true);
        assert!(matches!(
            train(&x, 2000, dim, tiny(), &Device::Cpu, &cancel, &mut |_| {}),
            Err(TrainError::Cancelled)
        ));
    }
}
