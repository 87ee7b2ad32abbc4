//! A tiny randomly initialised BERT written to disk: the real file formats and the real loading
//! path, for tests and examples where the model's quality does not matter but speed does.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use super::EncoderError;
use super::config::BertConfig;
use crate::rng::SplitMix64;

/// Uniform in ±(std·√3): the variance of N(0, std²) without Box–Muller.
fn weights(rng: &mut SplitMix64, n: usize, std: f32) -> Vec<f32> {
    let a = std * 3f32.sqrt();
    (0..n)
        .map(|_| (rng.uniform_f32() * 2.0 - 1.0) * a)
        .collect()
}

/// The vocabulary: special tokens, letters, digits, punctuation, their `##` continuations and a
/// few hundred common English words, so that ordinary text tokenizes without `[UNK]`.
fn vocab() -> Vec<String> {
    let mut v: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let chars: Vec<char> = ('a'..='z')
        .chain('0'..='9')
        .chain(".,;:!?'\"()[]{}<>-_/\\@#$%^&*+=~`|".chars())
        .collect();
    for c in &chars {
        v.push(c.to_string());
    }
    for c in &chars {
        v.push(format!("##{c}"));
    }
    const WORDS: &str = "the of and to in is that for it as with was on be by this are or at from \
        an have not but what all were when we there can your which their said if do will each about \
        how up out them then she many some so these would other into has more her two like him see \
        time could no make than first been its who now people my made over did down only way find \
        use may water long little very after words called just where most know file files note notes \
        search index query code data test tests build run server client request response error \
        function module stream buffer process thread event events async await promise callback \
        apple banana cherry garden river mountain ocean forest music guitar piano recipe bread soup";
    for w in WORDS.split_whitespace() {
        if !v.iter().any(|x| x == w) {
            v.push(w.to_string());
        }
    }
    v
}

fn tokenizer_json(vocab: &[String], max_len: usize) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), serde_json::Value::from(i as u64)))
        .collect();
    let added: Vec<serde_json::Value> = (0..5)
        .map(|i| {
            serde_json::json!({"id": i, "content": vocab[i], "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    serde_json::json!({
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": max_len, "strategy": "LongestFirst", "stride": 0},
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
            "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
            }
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100, "vocab": map}
    })
}

/// Writes `config.json`, `tokenizer.json` and `model.safetensors` of a 2-layer, 32-wide BERT
/// with weights drawn from `seed` into `dir` (created if missing).
pub fn write_tiny_model(dir: &Path, seed: u64) -> Result<(), EncoderError> {
    let io = |e: std::io::Error| EncoderError::Io {
        path: dir.to_path_buf(),
        source: e,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let vocab = vocab();
    let cfg = BertConfig::tiny(vocab.len());
    let cfg_json = serde_json::json!({
        "architectures": ["BertModel"], "model_type": "bert",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers, "num_attention_heads": cfg.num_attention_heads,
        "intermediate_size": cfg.intermediate_size, "hidden_act": cfg.hidden_act,
        "hidden_dropout_prob": cfg.hidden_dropout_prob,
        "attention_probs_dropout_prob": cfg.attention_probs_dropout_prob,
        "max_position_embeddings": cfg.max_position_embeddings,
        "type_vocab_size": cfg.type_vocab_size, "layer_norm_eps": cfg.layer_norm_eps,
        "pad_token_id": 0, "position_embedding_type": "absolute"
    });
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    std::fs::write(dir.join("config.json"), pretty(&cfg_json)).map_err(io)?;
    std::fs::write(
        dir.join("tokenizer.json"),
        pretty(&tokenizer_json(&vocab, cfg.max_position_embeddings)),
    )
    .map_err(io)?;

    let mut rng = SplitMix64::new(seed);
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let h = cfg.hidden_size;
    let mut put = |name: String, shape: Vec<usize>, kind: Init| -> Result<(), EncoderError> {
        let n: usize = shape.iter().product();
        let data = match kind {
            Init::Normal => weights(&mut rng, n, 0.2),
            Init::Ones => vec![1.0; n],
            Init::Small => weights(&mut rng, n, 0.02),
        };
        tensors.insert(name, Tensor::from_vec(data, shape, &Device::Cpu)?);
        Ok(())
    };
    put(
        "embeddings.word_embeddings.weight".into(),
        vec![cfg.vocab_size, h],
        Init::Normal,
    )?;
    put(
        "embeddings.position_embeddings.weight".into(),
        vec![cfg.max_position_embeddings, h],
        Init::Normal,
    )?;
    put(
        "embeddings.token_type_embeddings.weight".into(),
        vec![cfg.type_vocab_size, h],
        Init::Normal,
    )?;
    put("embeddings.LayerNorm.weight".into(), vec![h], Init::Ones)?;
    put("embeddings.LayerNorm.bias".into(), vec![h], Init::Small)?;
    for l in 0..cfg.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        for (name, out, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", cfg.intermediate_size, h),
            ("output.dense", h, cfg.intermediate_size),
        ] {
            put(format!("{p}.{name}.weight"), vec![out, inp], Init::Normal)?;
            put(format!("{p}.{name}.bias"), vec![out], Init::Small)?;
        }
        for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
            put(format!("{p}.{name}.weight"), vec![h], Init::Ones)?;
            put(format!("{p}.{name}.bias"), vec![h], Init::Small)?;
        }
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    Ok(())
}

#[derive(Clone, Copy)]
enum Init {
    Normal,
    Ones,
    Small,
}
