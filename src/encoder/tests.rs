use super::*;
use candle_core::Var;
use candle_nn::Optimizer;

fn tiny(dropout: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path(), 7).unwrap();
    if !dropout {
        let p = dir.path().join("config.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        v["hidden_dropout_prob"] = 0.0.into();
        v["attention_probs_dropout_prob"] = 0.0.into();
        std::fs::write(&p, v.to_string()).unwrap();
    }
    dir
}

fn load(dir: &Path, trainable: bool) -> Encoder {
    Encoder::load(
        dir,
        &LoadOptions {
            device: DeviceSpec::Cpu,
            trainable,
            max_len: None,
            candle_only: false,
            precision: Some(crate::encoder::Precision::F32),
        },
    )
    .unwrap()
}

const TEXTS: &[&str] = &[
    "the apple is in the garden",
    "music with a guitar and a piano",
    "server request and response error",
    "a long river runs to the ocean past the mountain and the forest, very long indeed",
    "bread soup recipe",
    "async await promise callback in a stream",
    "",
    "x",
];

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn padding_and_batching_do_not_change_vectors() {
    let dir = tiny(true);
    let enc = load(dir.path(), false);
    let all = enc
        .embed(TEXTS, Pooling::Mean, false, BatchLimits::default())
        .unwrap();
    assert_eq!(all.len(), TEXTS.len());
    for (i, t) in TEXTS.iter().enumerate() {
        let one = enc
            .embed(&[t], Pooling::Mean, false, BatchLimits::default())
            .unwrap();
        assert!(max_abs_diff(one.row(0), all.row(i)) < 1e-5, "text {i}");
    }
    let small = BatchLimits {
        max_batch: 3,
        max_tokens: 40,
    };
    let again = enc.embed(TEXTS, Pooling::Cls, true, small).unwrap();
    let cls = enc
        .embed(TEXTS, Pooling::Cls, true, BatchLimits::default())
        .unwrap();
    assert!(max_abs_diff(&again.data, &cls.data) < 1e-5);
    for i in 0..cls.len() {
        let n: f32 = cls.row(i).iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-4);
    }
}

#[test]
fn fast_and_differentiable_kernels_agree() {
    let dir = tiny(true);
    let a = load(dir.path(), false)
        .embed(TEXTS, Pooling::Mean, false, BatchLimits::default())
        .unwrap();
    let b = load(dir.path(), true)
        .embed(TEXTS, Pooling::Mean, false, BatchLimits::default())
        .unwrap();
    assert!(max_abs_diff(&a.data, &b.data) < 1e-4);
}

#[test]
fn dropout_is_real_in_train_mode_only() {
    let dir = tiny(true);
    let enc = load(dir.path(), true);
    let toks = enc.tokenize(&TEXTS[..4]).unwrap();
    let items: Vec<&[u32]> = toks.iter().map(|t| t.ids.as_slice()).collect();
    let run = |train| -> Vec<f32> {
        let (s, _) = enc.token_states(&items, train).unwrap();
        s.flatten_all().unwrap().to_vec1().unwrap()
    };
    assert_eq!(run(false), run(false));
    assert!(max_abs_diff(&run(true), &run(true)) > 1e-3);
}

fn info_nce(a: &Tensor, b: &Tensor) -> Tensor {
    let a = l2_normalize(a).unwrap();
    let b = l2_normalize(b).unwrap();
    let sim = (a.matmul(&b.t().unwrap()).unwrap() / 0.05).unwrap();
    let n = sim.dim(0).unwrap() as u32;
    let labels = Tensor::arange(0u32, n, sim.device()).unwrap();
    candle_nn::loss::cross_entropy(&sim, &labels).unwrap()
}

#[test]
fn every_parameter_gets_a_gradient() {
    let dir = tiny(true);
    let enc = load(dir.path(), true);
    let toks = enc.tokenize(&TEXTS[..6]).unwrap();
    let items: Vec<&[u32]> = toks.iter().map(|t| t.ids.as_slice()).collect();
    let (s1, m) = enc.token_states(&items, true).unwrap();
    let (s2, _) = enc.token_states(&items, true).unwrap();
    let loss = info_nce(
        &pool(&s1, &m, Pooling::Mean).unwrap(),
        &pool(&s2, &m, Pooling::Mean).unwrap(),
    );
    let grads = loss.backward().unwrap();
    let data = enc.varmap().unwrap().data().lock().unwrap();
    assert!(data.len() > 20, "{} vars", data.len());
    for (name, var) in data.iter() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name} has no gradient"));
        let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(norm > 0.0, "{name} has a zero gradient");
    }
}

#[test]
fn optimiser_steps_lower_a_contrastive_loss() {
    // No dropout here, so the run is deterministic: the pairs are different texts.
    let dir = tiny(false);
    let enc = load(dir.path(), true);
    let anchors = [
        "apple garden",
        "guitar piano music",
        "server error",
        "river ocean",
    ];
    let positives = [
        "garden apple tree",
        "piano and guitar",
        "error on the server",
        "ocean river",
    ];
    let ta = enc.tokenize(&anchors).unwrap();
    let tp = enc.tokenize(&positives).unwrap();
    let ia: Vec<&[u32]> = ta.iter().map(|t| t.ids.as_slice()).collect();
    let ip: Vec<&[u32]> = tp.iter().map(|t| t.ids.as_slice()).collect();
    let loss = || -> Tensor {
        let (sa, ma) = enc.token_states(&ia, true).unwrap();
        let (sp, mp) = enc.token_states(&ip, true).unwrap();
        info_nce(
            &pool(&sa, &ma, Pooling::Mean).unwrap(),
            &pool(&sp, &mp, Pooling::Mean).unwrap(),
        )
    };
    let vars: Vec<Var> = enc.varmap().unwrap().all_vars();
    let mut opt = candle_nn::AdamW::new(
        vars,
        candle_nn::ParamsAdamW {
            lr: 1e-3,
            ..Default::default()
        },
    )
    .unwrap();
    let first: f32 = loss().to_scalar().unwrap();
    for _ in 0..15 {
        opt.backward_step(&loss()).unwrap();
    }
    let last: f32 = loss().to_scalar().unwrap();
    assert!(last < first * 0.7, "loss {first} -> {last}");
}

#[test]
fn bert_prefix_and_gamma_beta_names_load() {
    let dir = tiny(true);
    let plain = load(dir.path(), false)
        .embed(TEXTS, Pooling::Mean, false, BatchLimits::default())
        .unwrap();
    let w = dir.path().join("model.safetensors");
    let tensors = candle_core::safetensors::load(&w, &Device::Cpu).unwrap();
    let renamed: std::collections::HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| {
            let k = k.replace("LayerNorm.weight", "LayerNorm.gamma");
            let k = k.replace("LayerNorm.bias", "LayerNorm.beta");
            (format!("bert.{k}"), v)
        })
        .collect();
    candle_core::safetensors::save(&renamed, &w).unwrap();
    for trainable in [false, true] {
        let e = load(dir.path(), trainable)
            .embed(TEXTS, Pooling::Mean, false, BatchLimits::default())
            .unwrap();
        assert!(max_abs_diff(&plain.data, &e.data) < 1e-4);
    }
}

fn load_err(dir: &Path, trainable: bool) -> String {
    match Encoder::load(
        dir,
        &LoadOptions {
            device: DeviceSpec::Cpu,
            trainable,
            max_len: None,
            candle_only: false,
            precision: Some(crate::encoder::Precision::F32),
        },
    ) {
        Ok(_) => panic!("loaded a broken model"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn broken_models_give_clear_errors() {
    let dir = tiny(true);
    let w = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    for trainable in [false, true] {
        let e = load_err(dir.path(), trainable);
        assert!(
            e.contains("model.safetensors") && e.contains("dochash model fetch"),
            "{e}"
        );
    }
    std::fs::write(&w, &bytes).unwrap();

    // A config that does not match the weights.
    let c = dir.path().join("config.json");
    let good = std::fs::read_to_string(&c).unwrap();
    std::fs::write(
        &c,
        good.replace("\"intermediate_size\": 64", "\"intermediate_size\": 65"),
    )
    .unwrap();
    for trainable in [false, true] {
        let e = load_err(dir.path(), trainable);
        assert!(e.contains("does not match config.json"), "{e}");
    }
    std::fs::write(&c, "not json").unwrap();
    assert!(load_err(dir.path(), false).contains("config.json"));
    std::fs::write(&c, &good).unwrap();

    // A missing tensor.
    let mut tensors = candle_core::safetensors::load(&w, &Device::Cpu).unwrap();
    tensors.remove("encoder.layer.1.output.dense.bias");
    candle_core::safetensors::save(&tensors, &w).unwrap();
    for trainable in [false, true] {
        let e = load_err(dir.path(), trainable);
        assert!(e.contains("model.safetensors"), "{e}");
    }

    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    assert!(load_err(dir.path(), false).contains("tokenizer.json"));
}

#[test]
fn long_texts_are_truncated_and_reported() {
    let dir = tiny(true);
    let enc = Encoder::load(
        dir.path(),
        &LoadOptions {
            device: DeviceSpec::Cpu,
            trainable: false,
            max_len: Some(16),
            candle_only: false,
            precision: Some(crate::encoder::Precision::F32),
        },
    )
    .unwrap();
    let long = "apple ".repeat(100);
    let e = enc
        .embed(
            &["short", &long],
            Pooling::Mean,
            false,
            BatchLimits::default(),
        )
        .unwrap();
    assert_eq!(e.truncated, vec![1]);
    let toks = enc.tokenize(&[&long]).unwrap();
    assert_eq!(toks[0].ids.len(), 16);
    assert_eq!(*toks[0].ids.last().unwrap(), 3, "ends with [SEP]");
    assert!(enc.tokenizer().count(&long) >= 100);
}

#[test]
fn buckets_respect_limits_and_cover_everything() {
    let toks: Vec<Tokens> = [5usize, 50, 7, 3, 50, 20, 9, 1]
        .iter()
        .map(|&n| Tokens {
            ids: vec![1; n],
            truncated: false,
        })
        .collect();
    let limits = BatchLimits {
        max_batch: 3,
        max_tokens: 100,
    };
    let b = length_buckets(&toks, limits);
    let mut seen: Vec<usize> = b.iter().flatten().copied().collect();
    seen.sort();
    assert_eq!(seen, (0..toks.len()).collect::<Vec<_>>());
    for batch in &b {
        assert!(batch.len() <= 3);
        let w = batch.iter().map(|&i| toks[i].ids.len()).max().unwrap();
        assert!(batch.len() == 1 || batch.len() * w <= 100);
    }
}

fn load_candle(dir: &Path) -> Encoder {
    Encoder::load(
        dir,
        &LoadOptions {
            device: DeviceSpec::Cpu,
            trainable: false,
            max_len: None,
            candle_only: true,
            precision: Some(crate::encoder::Precision::F32),
        },
    )
    .unwrap()
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    let (b, s, h) = t.dims3().unwrap();
    let flat: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    (0..b * s)
        .map(|r| flat[r * h..(r + 1) * h].to_vec())
        .collect()
}

#[test]
fn fused_cpu_path_matches_candle_on_every_real_token() {
    for act in ["gelu", "gelu_new", "relu"] {
        let dir = tiny(true);
        let p = dir.path().join("config.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        v["hidden_act"] = act.into();
        std::fs::write(&p, v.to_string()).unwrap();

        let fused = load(dir.path(), false);
        let candle = load_candle(dir.path());
        assert!(fused.fused_cpu() && !candle.fused_cpu());
        let toks = fused.tokenize(TEXTS).unwrap();
        let items: Vec<&[u32]> = toks.iter().map(|t| t.ids.as_slice()).collect();
        let (a, mask) = fused.token_states(&items, false).unwrap();
        let (b, _) = candle.token_states(&items, false).unwrap();
        let keep: Vec<u32> = mask.flatten_all().unwrap().to_vec1().unwrap();
        let (ra, rb) = (rows(&a), rows(&b));
        for (i, &k) in keep.iter().enumerate() {
            if k == 1 {
                assert!(max_abs_diff(&ra[i], &rb[i]) < 1e-5, "{act}: row {i}");
            } else {
                assert!(ra[i].iter().all(|&x| x == 0.0), "{act}: padding row {i}");
            }
        }
        // A lone text takes the panel-parallel path; it must give the batch's numbers.
        let (one, _) = fused.token_states(&items[3..4], false).unwrap();
        let len = items[3].len();
        let t = a.dim(1).unwrap();
        for (j, row) in rows(&one).iter().enumerate().take(len) {
            assert!(
                max_abs_diff(row, &ra[3 * t + j]) < 1e-5,
                "{act}: lone text row {j}"
            );
        }
    }
}

#[test]
fn fused_cpu_path_honours_masks_with_holes_and_layer_ranges() {
    let dir = tiny(true);
    let fused = load(dir.path(), false);
    let candle = load_candle(dir.path());
    let toks = fused.tokenize(&TEXTS[..4]).unwrap();
    let items: Vec<&[u32]> = toks.iter().map(|t| t.ids.as_slice()).collect();
    // Lower layers on one path, upper on the other: the split point must not matter.
    let (lower, mask) = candle.layer_states(&items, 1, false).unwrap();
    let (b, t) = mask.dims2().unwrap();
    let mut keep: Vec<u32> = mask.flatten_all().unwrap().to_vec1().unwrap();
    keep[2] = 0; // a hole in the first text
    let holed = Tensor::from_vec(keep.clone(), (b, t), &Device::Cpu).unwrap();
    let a = fused.forward_from(&lower, &holed, 1, false).unwrap();
    let c = candle.forward_from(&lower, &holed, 1, false).unwrap();
    let (ra, rc) = (rows(&a), rows(&c));
    for (i, &k) in keep.iter().enumerate() {
        if k == 1 {
            assert!(max_abs_diff(&ra[i], &rc[i]) < 1e-5, "row {i}");
        }
    }
    let (full, _) = fused.token_states(&items, false).unwrap();
    let (lower, mask) = fused.layer_states(&items, 1, false).unwrap();
    let upper = fused.forward_from(&lower, &mask, 1, false).unwrap();
    assert!(max_abs_diff(&rows(&full).concat(), &rows(&upper).concat()) < 1e-6);
    assert!(
        fused.token_states(&items, true).is_err(),
        "dropout on frozen weights"
    );
}

/// A RoBERTa-family checkpoint (XLM-R layout: `roberta.` names, positions counted from the
/// padding id + 1, one token type) is BERT with its position table shifted: made from the same
/// weights, both must give the same vectors, on the fused path and on candle's.
#[test]
fn an_xlm_roberta_layout_loads_as_shifted_bert() {
    let bert = tiny(false);
    let roberta = tempfile::tempdir().unwrap();
    std::fs::copy(
        bert.path().join("tokenizer.json"),
        roberta.path().join("tokenizer.json"),
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bert.path().join("config.json")).unwrap())
            .unwrap();
    let positions = cfg["max_position_embeddings"].as_u64().unwrap() as usize;
    cfg["model_type"] = "xlm-roberta".into();
    cfg["architectures"] = serde_json::json!(["XLMRobertaModel"]);
    cfg["pad_token_id"] = 1.into();
    cfg["max_position_embeddings"] = (positions + 2).into();
    cfg["type_vocab_size"] = 1.into();
    std::fs::write(roberta.path().join("config.json"), cfg.to_string()).unwrap();
    let tensors =
        candle_core::safetensors::load(bert.path().join("model.safetensors"), &Device::Cpu)
            .unwrap();
    let mut out = std::collections::HashMap::new();
    for (name, t) in tensors {
        let t = match name.as_str() {
            "embeddings.position_embeddings.weight" => {
                let h = t.dim(1).unwrap();
                let pad = Tensor::full(9.0f32, (2, h), &Device::Cpu).unwrap();
                Tensor::cat(&[&pad, &t], 0).unwrap()
            }
            "embeddings.token_type_embeddings.weight" => t.narrow(0, 0, 1).unwrap(),
            _ => t,
        };
        out.insert(format!("roberta.{name}"), t);
    }
    candle_core::safetensors::save(&out, roberta.path().join("model.safetensors")).unwrap();

    for candle_only in [false, true] {
        let opts = LoadOptions {
            device: DeviceSpec::Cpu,
            candle_only,
            precision: Some(crate::encoder::Precision::F32),
            ..Default::default()
        };
        let a = Encoder::load(bert.path(), &opts).unwrap();
        let b = Encoder::load(roberta.path(), &opts).unwrap();
        assert_eq!(b.max_len(), a.max_len());
        let ea = a
            .embed(TEXTS, Pooling::Mean, true, BatchLimits::default())
            .unwrap();
        let eb = b
            .embed(TEXTS, Pooling::Mean, true, BatchLimits::default())
            .unwrap();
        assert!(
            max_abs_diff(&ea.data, &eb.data) < 1e-5,
            "candle_only {candle_only}"
        );
    }
    // And it trains like BERT (the shifted table is a view of the variable).
    let t = load(roberta.path(), true);
    assert!(t.varmap().unwrap().all_vars().len() > 10);
}

/// A sentence-transformers folder decides pooling and prompts; a preset fills prompts its
/// folder lacks.
#[test]
fn the_profile_decides_pooling_and_prompts() {
    let dir = tiny(false);
    std::fs::create_dir_all(dir.path().join("1_Pooling")).unwrap();
    std::fs::write(
        dir.path().join("1_Pooling/config.json"),
        r#"{"pooling_mode_cls_token": true}"#,
    )
    .unwrap();
    let enc = load(dir.path(), false);
    assert_eq!(enc.profile().pooling, Pooling::Cls);
    let as_doc = enc
        .embed_as(&["apple pie"], Role::Document, BatchLimits::default())
        .unwrap();
    let cls = enc
        .embed(&["apple pie"], Pooling::Cls, true, BatchLimits::default())
        .unwrap();
    assert!(max_abs_diff(&as_doc.data, &cls.data) < 1e-6);

    let files = crate::model::ModelFiles {
        dir: dir.path().to_path_buf(),
        config: dir.path().join("config.json"),
        tokenizer: dir.path().join("tokenizer.json"),
        weights: dir.path().join("model.safetensors"),
        id: "intfloat/e5-small-v2".into(),
        source: crate::model::Source::LocalDir,
    };
    let enc = Encoder::load_model(&files, &LoadOptions::default()).unwrap();
    assert_eq!(enc.profile().query_prompt, "query: ");
    let q = enc
        .embed_as(&["apple pie"], Role::Query, BatchLimits::default())
        .unwrap();
    let raw = enc
        .embed(
            &["query: apple pie"],
            Pooling::Cls,
            true,
            BatchLimits::default(),
        )
        .unwrap();
    assert!(max_abs_diff(&q.data, &raw.data) < 1e-6);
    let d = enc
        .embed_as(&["apple pie"], Role::Document, BatchLimits::default())
        .unwrap();
    assert!(max_abs_diff(&q.data, &d.data) > 1e-3, "the prompts differ");
}

#[test]
fn int8_is_the_cpu_default_stays_near_f32_and_is_refused_off_the_fused_path() {
    let dir = tiny(false);
    let with = |precision: Option<Precision>, candle_only: bool| {
        Encoder::load(
            dir.path(),
            &LoadOptions {
                device: DeviceSpec::Cpu,
                candle_only,
                precision,
                ..LoadOptions::default()
            },
        )
    };
    let default = with(None, false).unwrap();
    let want = if quant::Kernel::detect().is_simd() {
        Precision::Int8
    } else {
        Precision::F32
    };
    assert_eq!(default.precision(), want);

    let f32 = with(Some(Precision::F32), false).unwrap();
    let int8 = with(Some(Precision::Int8), false).unwrap();
    assert_eq!(int8.precision(), Precision::Int8);
    let a = f32
        .embed(TEXTS, Pooling::Mean, true, BatchLimits::default())
        .unwrap();
    let b = int8
        .embed(TEXTS, Pooling::Mean, true, BatchLimits::default())
        .unwrap();
    for i in 0..TEXTS.len() {
        let cos: f32 = a.row(i).iter().zip(b.row(i)).map(|(x, y)| x * y).sum();
        assert!(cos > 0.99, "text {i}: cosine {cos}");
        assert_ne!(
            a.row(i),
            b.row(i),
            "text {i}: int8 must not be the f32 path"
        );
    }

    let err = with(Some(Precision::Int8), true).err().expect("refused");
    assert!(err.to_string().contains("--precision int8"), "{err}");
    // The candle path and training are f32 whatever the default would be.
    assert_eq!(with(None, true).unwrap().precision(), Precision::F32);
}
