use std::sync::atomic::AtomicBool;

use candle_core::Device;

use super::dhim::{DhimConfig, DhimHead, Progress, train};
use super::metrics::{precision_at_k_cosine, precision_at_k_hamming, spearman};
use super::states::CorpusStates;
use crate::rng::SplitMix64;

fn small_cfg(bits: usize) -> DhimConfig {
    DhimConfig {
        bits,
        filters: 8,
        batch: 8,
        max_epochs: 6,
        patience: 6,
        max_tokens: 16,
        ..Default::default()
    }
}

/// Synthetic ragged states in `topics` clusters: each document's tokens are noisy copies of its
/// topic's direction, so there is structure for the head to find.
fn synthetic(n: usize, dim: usize, topics: usize, seed: u64) -> CorpusStates {
    let mut rng = SplitMix64::new(seed);
    let centres: Vec<Vec<f32>> = (0..topics)
        .map(|_| (0..dim).map(|_| rng.gaussian() as f32).collect())
        .collect();
    let mut offsets = vec![0];
    let mut states = Vec::new();
    let mut pooled = Vec::new();
    for i in 0..n {
        let c = &centres[i % topics];
        let len = 4 + (rng.next_u64() % 10) as usize;
        let mut mean = vec![0f32; dim];
        for _ in 0..len {
            for (d, m) in mean.iter_mut().enumerate() {
                let v = c[d] + 0.8 * rng.gaussian() as f32;
                *m += v / len as f32;
                states.push(half::f16::from_f32(v));
            }
        }
        let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
        pooled.extend(mean.iter().map(|x| x / norm));
        offsets.push(offsets.last().copied().unwrap_or(0) + len);
    }
    CorpusStates {
        dim,
        offsets,
        states,
        pooled,
    }
}

#[test]
fn straight_through_sampling_passes_gradients_to_every_parameter() {
    let dev = Device::Cpu;
    let st = synthetic(8, 12, 2, 1);
    let head = DhimHead::new(small_cfg(16), 12, &dev).unwrap();
    let idx: Vec<usize> = (0..8).collect();
    let (x, m) = st.batch(&idx, 16, &dev).unwrap();
    let s = st.pooled_batch(&idx, &dev).unwrap();
    let mut rng = SplitMix64::new(3);
    let (loss, _) = head.loss(&x, &m, &s, Some(&mut rng)).unwrap();
    let grads = loss.backward().unwrap();
    let vars = head.varmap().data().lock().unwrap();
    for (name, v) in vars.iter() {
        let g = grads
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            norm > 0.0,
            "{name}: zero gradient through the sampled codes"
        );
    }
}

#[test]
fn padding_does_not_change_codes() {
    let dev = Device::Cpu;
    let st = synthetic(6, 12, 2, 2);
    let head = DhimHead::new(small_cfg(32), 12, &dev).unwrap();
    // Alone, document 0 is padded to its own length; next to the longest one it is padded more.
    let longest = (0..6).max_by_key(|&i| st.tokens(i)).unwrap();
    let shortest = (0..6).min_by_key(|&i| st.tokens(i)).unwrap();
    assert!(st.tokens(longest) > st.tokens(shortest));
    let (x1, m1) = st.batch(&[shortest], 16, &dev).unwrap();
    let (x2, m2) = st.batch(&[shortest, longest], 16, &dev).unwrap();
    let l1: Vec<f32> = head
        .logits(&x1, &m1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let l2 = head
        .logits(&x2, &m2)
        .unwrap()
        .get(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for (a, b) in l1.iter().zip(&l2) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    assert_eq!(
        head.codes(&x1, &m1).unwrap()[0],
        head.codes(&x2, &m2).unwrap()[0]
    );
}

#[test]
fn training_raises_the_mi_estimate_and_the_checkpoint_reloads_to_the_same_codes() {
    let dev = Device::Cpu;
    let st = synthetic(96, 12, 4, 4);
    let cfg = small_cfg(16);
    let mut losses = Vec::new();
    let (head, report) = train(&st, cfg.clone(), &dev, &AtomicBool::new(false), &mut |p| {
        if let Progress::Step { loss, .. } = p {
            losses.push(loss.loss);
        }
    })
    .unwrap();
    let k = 8;
    let first: f32 = losses[..k].iter().sum::<f32>() / k as f32;
    let last: f32 = losses[losses.len() - k..].iter().sum::<f32>() / k as f32;
    assert!(last < first - 0.05, "loss {first} → {last}");
    assert!(report.best_epoch >= 1);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dhim.safetensors");
    head.save(&path).unwrap();
    let again = DhimHead::load(cfg, 12, &path, &dev).unwrap();
    assert_eq!(
        head.encode_states(&st, &dev).unwrap(),
        again.encode_states(&st, &dev).unwrap()
    );
}

#[test]
fn cancelling_stops_training_with_an_error() {
    let st = synthetic(32, 12, 2, 5);
    let r = train(
        &st,
        small_cfg(8),
        &Device::Cpu,
        &AtomicBool::new(true),
        &mut |_| {},
    );
    assert!(matches!(r, Err(super::TrainError::Cancelled)));
}

#[test]
fn states_round_trip_through_a_file_and_reject_damage() {
    let st = synthetic(5, 6, 2, 6);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.bin");
    st.save(&p).unwrap();
    let back = CorpusStates::load(&p).unwrap();
    assert_eq!(back.offsets, st.offsets);
    assert_eq!(back.states, st.states);
    assert_eq!(back.pooled, st.pooled);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
    assert!(CorpusStates::load(&p).is_none());
}

#[test]
fn precision_counts_same_label_neighbours_with_index_tiebreak() {
    // Four database codes; the query is at distance 0 from 0 and 1, distance 1 from 2.
    let db = [0b00u64, 0b00, 0b01, 0b11];
    let labels = [0, 1, 0, 0];
    let p = precision_at_k_hamming(&db, &labels, &[0], &[0], 1, 2).unwrap();
    assert_eq!(p, 0.5);
    let p = precision_at_k_hamming(&db, &labels, &[0], &[0], 1, 3).unwrap();
    assert!((p - 2.0 / 3.0).abs() < 1e-12);
    let v = [1.0f32, 0.0, 0.0, 1.0, 0.6, 0.8];
    let p = precision_at_k_cosine(&v, &[0, 1, 1], &[0.0, 1.0], &[1], 2, 2);
    assert_eq!(p, 1.0);
}

#[test]
fn spearman_handles_ties_and_monotone_maps() {
    let x = [1.0, 2.0, 3.0, 4.0];
    assert!((spearman(&x, &[10.0, 20.0, 30.0, 40.0]) - 1.0).abs() < 1e-12);
    assert!((spearman(&x, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
    let r = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]);
    assert!(r > 0.9 && r < 1.0);
}

#[test]
fn batch_drops_cls_and_zeroes_padding() {
    let st = synthetic(2, 4, 1, 7);
    let (x, m) = st.batch(&[0, 1], 64, &Device::Cpu).unwrap();
    let t = x.dim(1).unwrap();
    let mask: Vec<Vec<f32>> = m.to_vec2().unwrap();
    for (k, row) in mask.iter().enumerate() {
        let real = row.iter().filter(|&&v| v == 1.0).count();
        assert_eq!(real, st.tokens(k) - 1);
        let padded: f32 = x
            .get(k)
            .unwrap()
            .narrow(0, real, t - real)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(padded, 0.0);
    }
}

#[test]
fn crops_keep_cls_and_the_last_token_around_a_contiguous_run() {
    let st = synthetic(6, 4, 2, 3);
    let mut rng = crate::rng::SplitMix64::new(5);
    let len = 5;
    let idx: Vec<usize> = (0..st.len()).collect();
    let (x, m) = st.batch_crops(&idx, len, &mut rng, &Device::Cpu).unwrap();
    let x: Vec<Vec<Vec<f32>>> = x.to_vec3().unwrap();
    let m: Vec<Vec<f32>> = m.to_vec2().unwrap();
    let row = |i: usize, t: usize| -> Vec<f32> {
        let d = st.dim;
        st.states[(st.offsets[i] + t) * d..(st.offsets[i] + t + 1) * d]
            .iter()
            .map(|s| s.to_f32())
            .collect()
    };
    for &i in &idx {
        let n = st.tokens(i);
        let kept = m[i].iter().filter(|&&v| v == 1.0).count();
        assert_eq!(kept, n.min(len));
        assert_eq!(x[i][0], row(i, 0), "[CLS] first");
        assert_eq!(x[i][kept - 1], row(i, n - 1), "last token last");
        // The middle is a contiguous run of word positions.
        let start = (1..n)
            .find(|&t| row(i, t) == x[i][1])
            .expect("first word of the crop is a token of the text");
        for (j, got) in x[i][1..kept - 1].iter().enumerate() {
            assert_eq!(*got, row(i, start + j));
        }
    }
}

mod simcse {
    use std::sync::atomic::AtomicBool;

    use candle_core::Tensor;

    use crate::encoder::{
        BatchLimits, DeviceSpec, Encoder, LoadOptions, Pooling, write_tiny_model,
    };
    use crate::rng::SplitMix64;
    use crate::train::simcse::{self, Mode, SimcseConfig, save_model};

    const WORDS: &[&str] = &[
        "apple", "garden", "river", "ocean", "server", "error", "music", "piano", "bread", "soup",
        "stream", "async", "mountain", "forest", "request", "guitar",
    ];

    fn texts(n: usize) -> Vec<String> {
        let mut rng = SplitMix64::new(11);
        (0..n)
            .map(|_| {
                (0..6)
                    .map(|_| WORDS[(rng.next_u64() % WORDS.len() as u64) as usize])
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    fn weights(enc: &Encoder) -> Vec<(String, Tensor)> {
        let data = enc.varmap().unwrap().data().lock().unwrap();
        let mut v: Vec<(String, Tensor)> = data
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().copy().unwrap()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn changed(a: &Tensor, b: &Tensor) -> bool {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    }

    fn run(mode: Mode) -> (tempfile::TempDir, Encoder, simcse::SimcseReport) {
        let t = texts(96);
        let t: Vec<&str> = t.iter().map(String::as_str).collect();
        let cfg = SimcseConfig { mode, ..tiny_cfg() };
        let dir = tempfile::tempdir().unwrap();
        let (enc, report) = train_tiny(dir.path(), &t, &cfg).unwrap();
        (dir, enc, report)
    }

    /// Head mode on the top layer of the tiny model, a learning rate and epochs large enough to
    /// see the loss fall on a few dozen texts.
    fn tiny_cfg() -> SimcseConfig {
        SimcseConfig {
            mode: Mode::Head,
            head_layers: 1,
            lr: 3e-3,
            batch: 16,
            epochs: 6,
            ..Default::default()
        }
    }

    /// SimCSE on a tiny random BERT written to `dir`.
    fn train_tiny(
        dir: &std::path::Path,
        t: &[&str],
        cfg: &SimcseConfig,
    ) -> Result<(Encoder, simcse::SimcseReport), crate::train::TrainError> {
        train_on(dir, &simcse::Examples::own(t), cfg)
    }

    /// SimCSE on `examples` with a tiny random BERT written to `dir` (once).
    fn train_on(
        dir: &std::path::Path,
        examples: &simcse::Examples,
        cfg: &SimcseConfig,
    ) -> Result<(Encoder, simcse::SimcseReport), crate::train::TrainError> {
        if !dir.join("config.json").exists() {
            write_tiny_model(dir, 3).unwrap();
        }
        simcse::train(
            dir,
            examples,
            cfg,
            DeviceSpec::Cpu,
            &AtomicBool::new(false),
            &mut |_| {},
        )
    }

    /// Head mode with one layer: the tuned weights differ from the base model's in the top
    /// layer (of two) and nowhere else.
    fn assert_only_the_top_layer_trained(dir: &std::path::Path, enc: &Encoder) {
        let before = weights(&base(dir));
        for ((name, a), (_, b)) in before.iter().zip(&weights(enc)) {
            let top = name.contains("encoder.layer.1.");
            assert_eq!(changed(a, b), top, "{name}: trained = {}", changed(a, b));
        }
    }

    fn base(dir: &std::path::Path) -> Encoder {
        Encoder::load(
            dir,
            &LoadOptions {
                device: DeviceSpec::Cpu,
                trainable: true,
                max_len: Some(32),
                candle_only: false,
                precision: Some(crate::encoder::Precision::F32),
            },
        )
        .unwrap()
    }

    #[test]
    fn head_mode_trains_only_the_top_layer_and_lowers_the_loss() {
        let (dir, enc, report) = run(Mode::Head);
        assert!(report.loss_end < report.loss_start * 0.8, "{report:?}");
        assert_only_the_top_layer_trained(dir.path(), &enc);
    }

    #[test]
    fn blending_moves_each_weight_that_share_of_the_way_from_its_start() {
        let start = Tensor::new(&[1f32, -2.0, 0.5], &candle_core::Device::Cpu).unwrap();
        let v = candle_core::Var::new(&[3f32, 2.0, 0.5], &candle_core::Device::Cpu).unwrap();
        let starts = [start.clone()];
        simcse::blend(std::slice::from_ref(&v), &starts, 0.25).unwrap();
        let got: Vec<f32> = v.as_tensor().to_vec1().unwrap();
        assert_eq!(got, vec![1.5, -1.0, 0.5]);
        simcse::blend(std::slice::from_ref(&v), &starts, 1.0).unwrap();
        assert_eq!(v.as_tensor().to_vec1::<f32>().unwrap(), got);
    }

    #[test]
    fn a_tuned_weight_of_zero_keeps_the_base_weights_and_one_the_trained() {
        let t = texts(96);
        let t: Vec<&str> = t.iter().map(String::as_str).collect();
        let dir = tempfile::tempdir().unwrap();
        let none = SimcseConfig {
            tuned_weight: 0.0,
            ..tiny_cfg()
        };
        let (enc, report) = train_tiny(dir.path(), &t, &none).unwrap();
        // It did train (the loss fell) and then went back to where it started.
        assert!(report.loss_end < report.loss_start * 0.8, "{report:?}");
        for ((name, a), (_, b)) in weights(&base(dir.path())).iter().zip(&weights(&enc)) {
            assert!(!changed(a, b), "{name} moved");
        }
        let whole = SimcseConfig {
            tuned_weight: 1.0,
            ..tiny_cfg()
        };
        let (enc, _) = train_tiny(dir.path(), &t, &whole).unwrap();
        assert_only_the_top_layer_trained(dir.path(), &enc);
        for bad in [-0.1, 1.5, f64::NAN] {
            let cfg = SimcseConfig {
                tuned_weight: bad,
                ..tiny_cfg()
            };
            assert!(train_tiny(dir.path(), &t, &cfg).is_err(), "{bad}");
        }
    }

    #[test]
    fn crops_of_long_passages_train_and_lower_the_loss() {
        let dir = tempfile::tempdir().unwrap();
        let long: Vec<String> = texts(96 * 8).chunks(8).map(|c| c.join(" ")).collect();
        let t: Vec<&str> = long.iter().map(String::as_str).collect();
        let cfg = SimcseConfig {
            max_len: 12,
            positives: simcse::Positives::Crops(48),
            ..tiny_cfg()
        };
        let (enc, report) = train_tiny(dir.path(), &t, &cfg).unwrap();
        assert!(report.loss_end < report.loss_start * 0.9, "{report:?}");
        assert_only_the_top_layer_trained(dir.path(), &enc);
        let full = SimcseConfig {
            mode: Mode::Full,
            ..cfg
        };
        assert!(train_tiny(dir.path(), &t, &full).is_err());
    }

    /// Anchors paired with texts of their own (a title, a neighbour): 96 anchors, and for each
    /// of the first 80 a partner text sharing half its words, as a section's title shares words
    /// with its body.
    fn paired(t: &[String]) -> (Vec<String>, Vec<usize>) {
        let n = t.len();
        let mut texts = t.to_vec();
        let mut positive: Vec<usize> = (0..n).collect();
        for (i, p) in positive.iter_mut().enumerate().take(80) {
            let words: Vec<&str> = t[i].split(' ').take(3).collect();
            texts.push(format!("{} {}", words.join(" "), WORDS[i % WORDS.len()]));
            *p = n + i;
        }
        (texts, positive)
    }

    #[test]
    fn paired_positives_train_the_head_and_lower_the_loss() {
        let dir = tempfile::tempdir().unwrap();
        let (texts, positive) = paired(&texts(96));
        let examples = simcse::Examples {
            texts: texts.iter().map(String::as_str).collect(),
            positive,
        };
        let cfg = tiny_cfg();
        let (enc, report) = train_on(dir.path(), &examples, &cfg).unwrap();
        assert_eq!(report.passages, 96, "anchors, not texts");
        assert!(report.loss_end < report.loss_start * 0.8, "{report:?}");
        assert_only_the_top_layer_trained(dir.path(), &enc);
        // Full mode reads the same pairs.
        let full = SimcseConfig {
            mode: Mode::Full,
            epochs: 2,
            ..cfg
        };
        let (_, report) = train_on(dir.path(), &examples, &full).unwrap();
        assert!(report.loss_end.is_finite() && report.steps > 0);
        // A positive past the texts is refused, not read out of bounds.
        let broken = simcse::Examples {
            positive: vec![examples.texts.len(); 96],
            ..examples.clone()
        };
        let r = train_on(dir.path(), &broken, &cfg);
        assert!(r.is_err());
    }

    #[test]
    fn positives_parse_as_the_flag_spells_them() {
        use simcse::Positives;
        for (s, p) in [
            ("dropout", Positives::Dropout),
            ("crops:128", Positives::Crops(128)),
            ("title", Positives::Title),
            ("neighbour", Positives::Neighbour),
            ("sentence", Positives::Sentence),
        ] {
            assert_eq!(s.parse::<Positives>(), Ok(p));
            assert_eq!(p.to_string(), s);
        }
        for bad in ["", "crops", "crops:2", "crops:x", "titles"] {
            assert!(bad.parse::<Positives>().is_err(), "{bad}");
        }
    }

    #[test]
    fn full_mode_trains_every_weight_and_lowers_the_loss() {
        let (dir, enc, report) = run(Mode::Full);
        assert!(report.loss_end < report.loss_start * 0.8, "{report:?}");
        let before = weights(&base(dir.path()));
        for ((name, a), (_, b)) in before.iter().zip(&weights(&enc)) {
            // Position rows beyond the 32-token limit are never used, so only check they load.
            if name.contains("position_embeddings")
                || name.contains("token_type")
                || name.contains("word_embeddings")
            {
                continue;
            }
            assert!(changed(a, b), "{name} did not change");
        }
    }

    #[test]
    fn a_saved_model_loads_frozen_to_the_trained_vectors() {
        let (dir, enc, _) = run(Mode::Head);
        let out = dir.path().join("tuned");
        save_model(&enc, dir.path(), &Default::default(), &out).unwrap();
        let frozen = Encoder::load(
            &out,
            &LoadOptions {
                device: DeviceSpec::Cpu,
                trainable: false,
                max_len: Some(32),
                candle_only: false,
                precision: Some(crate::encoder::Precision::F32),
            },
        )
        .unwrap();
        let t = texts(5);
        let t: Vec<&str> = t.iter().map(String::as_str).collect();
        let a = enc
            .embed(&t, Pooling::Mean, true, BatchLimits::default())
            .unwrap();
        let b = frozen
            .embed(&t, Pooling::Mean, true, BatchLimits::default())
            .unwrap();
        let d = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-4, "max diff {d}");
        let base = Encoder::load(
            dir.path(),
            &LoadOptions {
                device: DeviceSpec::Cpu,
                trainable: false,
                max_len: Some(32),
                candle_only: false,
                precision: Some(crate::encoder::Precision::F32),
            },
        )
        .unwrap();
        let c = base
            .embed(&t, Pooling::Mean, true, BatchLimits::default())
            .unwrap();
        assert!(
            a.data
                .iter()
                .zip(&c.data)
                .any(|(x, y)| (x - y).abs() > 1e-3)
        );
    }

    #[test]
    fn too_few_passages_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let r = train_tiny(dir.path(), &["a b", "c d"], &SimcseConfig::default());
        assert!(matches!(
            r,
            Err(crate::train::TrainError::TooLittleData { .. })
        ));
    }
}

#[test]
fn reciprocal_rank_takes_the_first_answer_in_the_top_ten_and_breaks_ties_by_index() {
    use super::metrics::reciprocal_rank_at_10;
    // Cosines of a query at angle 0 against documents on the unit circle: answers at ranks 1, 2
    // and beyond 10.
    let scores: Vec<f32> = (0..12).map(|i| (i as f32 * 0.1).cos()).collect();
    assert_eq!(reciprocal_rank_at_10(&scores, &[0]), 1.0);
    assert_eq!(reciprocal_rank_at_10(&scores, &[1, 5]), 0.5);
    assert_eq!(reciprocal_rank_at_10(&scores, &[11]), 0.0);
    let scores: Vec<f32> = (0..12).map(|i| 12.0 - i as f32).collect();
    assert_eq!(reciprocal_rank_at_10(&scores, &[3, 1]), 0.5);
    assert_eq!(reciprocal_rank_at_10(&scores, &[10]), 0.0);
    // Equal scores: the smaller index ranks first; no scores, no rank.
    assert_eq!(reciprocal_rank_at_10(&[1.0, 1.0, 1.0], &[2]), 1.0 / 3.0);
    assert_eq!(reciprocal_rank_at_10(&[], &[0]), 0.0);
}

#[test]
fn saturated_logits_keep_gradients_finite() {
    let dev = Device::Cpu;
    let st = synthetic(8, 12, 2, 9);
    let mut cfg = small_cfg(16);
    cfg.alpha = 1e-3; // logit / α far beyond exp's range
    let head = DhimHead::new(cfg, 12, &dev).unwrap();
    let idx: Vec<usize> = (0..8).collect();
    let (x, m) = st.batch(&idx, 16, &dev).unwrap();
    let x = (x * 1e4).unwrap();
    let s = st.pooled_batch(&idx, &dev).unwrap();
    let (loss, scalars) = head
        .loss(&x, &m, &s, Some(&mut SplitMix64::new(1)))
        .unwrap();
    assert!(scalars.loss.is_finite());
    let grads = loss.backward().unwrap();
    for v in head.varmap().all_vars() {
        let g = grads.get(v.as_tensor()).unwrap();
        let sum = g
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(sum.is_finite(), "non-finite gradient");
    }
}

#[test]
fn neighbour_recall_rewards_codes_that_keep_cosine_neighbours() {
    use super::metrics::neighbour_recall;
    // Two tight clusters; good codes separate them, bad codes cross them.
    let v = [
        1.0f32, 0.0, 0.99, 0.14, 0.98, 0.2, 0.0, 1.0, 0.14, 0.99, 0.2, 0.98,
    ];
    let good = [
        0b0000u64,
        0b0001,
        0b0011,
        0b1111_0000,
        0b1111_1000,
        0b1111_1100,
    ];
    let bad = [
        0b0000u64,
        0b1111_0000,
        0b1111_1000,
        0b0001,
        0b0011,
        0b1111_1100,
    ];
    let q: Vec<usize> = (0..6).collect();
    let g = neighbour_recall(&good, 1, &v, 2, &q, None, 2, 2).unwrap();
    let b = neighbour_recall(&bad, 1, &v, 2, &q, None, 2, 2).unwrap();
    assert_eq!(g, 1.0);
    assert!(b < 0.5, "{b}");
    // Margins of equal size and the codes' own signs make the weighted filter plain Hamming.
    let signs = |codes: &[u64]| -> Vec<Vec<f32>> {
        q.iter()
            .map(|&i| {
                (0..8)
                    .map(|b| if codes[i] >> b & 1 == 1 { 1.0 } else { -1.0 })
                    .collect()
            })
            .collect()
    };
    let gw = neighbour_recall(&good, 1, &v, 2, &q, Some(&signs(&good)), 2, 2).unwrap();
    let bw = neighbour_recall(&bad, 1, &v, 2, &q, Some(&signs(&bad)), 2, 2).unwrap();
    assert_eq!((gw, bw), (g, b));
    assert!(neighbour_recall(&good, 1, &v, 2, &q, Some(&signs(&good)[..2]), 2, 2).is_err());
}

#[test]
fn an_itq_start_makes_the_head_an_itq_hasher_of_its_readout() {
    use crate::index::binarize::{LinearHasher, Method};
    let dev = Device::Cpu;
    let (n, dim, bits) = (60, 12, 8);
    let st = synthetic(n, dim, 4, 9);
    let cfg = DhimConfig {
        filters: 16,
        ..small_cfg(bits)
    };
    let idx: Vec<usize> = (0..n).collect();
    let itq = LinearHasher::fit(
        Method::Itq,
        &st.readouts(&idx, cfg.max_tokens),
        n,
        dim,
        bits,
        cfg.seed,
    )
    .unwrap()
    .encode_batch(&st.readouts(&idx, cfg.max_tokens), n)
    .unwrap();
    let differing = |codes: &[u64]| -> u32 {
        codes
            .iter()
            .zip(&itq)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum()
    };

    let head = DhimHead::new(cfg.clone(), dim, &dev).unwrap();
    let random = differing(&head.encode_states(&st, &dev).unwrap());
    head.warm_start_itq(&st, &idx).unwrap();
    let started = differing(&head.encode_states(&st, &dev).unwrap());
    // Rounding may flip a bit whose projection is within float error of zero, nothing more.
    assert!(
        started <= 2,
        "{started} of {} bits differ from ITQ",
        n * bits
    );
    assert!(
        random > 50,
        "a random head agreed with ITQ ({random} bits differ)"
    );

    // Too few filters to carry ±w for every bit is an error, not a silent partial start.
    let narrow = DhimHead::new(
        DhimConfig {
            filters: bits,
            ..small_cfg(bits)
        },
        dim,
        &dev,
    )
    .unwrap();
    let err = narrow.warm_start_itq(&st, &idx).unwrap_err().to_string();
    assert!(err.contains("filters"), "{err}");
}
