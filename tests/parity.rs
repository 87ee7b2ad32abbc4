//! all-MiniLM-L6-v2 against vectors from an independent reference implementation
//! (tests/fixtures/minilm-l6-parity.json): identical token ids, mean and CLS within 1e-4.

mod common;

use dochash::encoder::{BatchLimits, DeviceSpec, Encoder, LoadOptions, Pooling};

const TOL: f32 = 1e-4;

struct Item {
    text: String,
    ids: Vec<u32>,
    mean: Vec<f32>,
    cls: Vec<f32>,
}

fn fixture() -> Vec<Item> {
    let raw = include_str!("fixtures/minilm-l6-parity.json");
    let v: serde_json::Value = serde_json::from_str(raw).expect("fixture parses");
    let floats = |x: &serde_json::Value| -> Vec<f32> {
        x.as_array()
            .expect("array")
            .iter()
            .map(|f| f.as_f64().expect("number") as f32)
            .collect()
    };
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|it| Item {
            text: it["text"].as_str().expect("text").to_string(),
            ids: it["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|x| x.as_u64().expect("id") as u32)
                .collect(),
            mean: floats(&it["mean"]),
            cls: floats(&it["cls"]),
        })
        .collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= TOL,
        "{what}: max abs difference {worst:e} > {TOL:e}"
    );
}

#[test]
fn library_matches_reference() {
    let items = fixture();
    assert_eq!(items.len(), 10);
    let dir = common::real_model();
    let texts: Vec<&str> = items.iter().map(|i| i.text.as_str()).collect();
    // Both kernels: frozen (fused ops) and trainable (differentiable ops).
    for trainable in [false, true] {
        let enc = Encoder::load(
            &dir,
            &LoadOptions {
                device: DeviceSpec::Cpu,
                trainable,
                max_len: None,
                candle_only: false,
                precision: Some(dochash::encoder::Precision::F32),
            },
        )
        .expect("load model");
        let toks = enc.tokenize(&texts).expect("tokenize");
        let mean = enc
            .embed(&texts, Pooling::Mean, false, BatchLimits::default())
            .expect("embed");
        let cls = enc
            .embed(&texts, Pooling::Cls, false, BatchLimits::default())
            .expect("embed");
        for (i, it) in items.iter().enumerate() {
            assert_eq!(toks[i].ids, it.ids, "token ids of {:?}", it.text);
            assert_close(&format!("mean of {:?}", it.text), mean.row(i), &it.mean);
            assert_close(&format!("cls of {:?}", it.text), cls.row(i), &it.cls);
        }
    }
}

#[test]
fn embed_command_matches_reference() {
    let items = fixture();
    let dir = common::real_model();
    let input: String = items.iter().map(|i| format!("{}\n", i.text)).collect();
    for (pool, pick) in [("mean", 0), ("cls", 1)] {
        let mut cmd = common::dochash(&common::shared_home());
        cmd.arg("embed")
            .arg("--pool")
            .arg(pool)
            .arg("--model")
            .arg(&dir)
            .arg("--device")
            .arg("cpu");
        // No `--precision`: the default is the model's own (f32) vectors, on any CPU.
        let out = common::run_with_stdin(cmd, input.as_bytes());
        assert!(out.status.success(), "{}", common::stderr(&out));
        let lines: Vec<Vec<f32>> = common::stdout(&out)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON array per line"))
            .collect();
        assert_eq!(lines.len(), items.len());
        for (it, got) in items.iter().zip(&lines) {
            let want = if pick == 0 { &it.mean } else { &it.cls };
            assert_close(
                &format!("dochash embed --pool {pool} of {:?}", it.text),
                got,
                want,
            );
        }
    }
}

/// The int8 path's bound, measured on these ten texts: its mean-pooled vectors keep a cosine of
/// at least this with the reference (f32) vectors. See docs/BENCHMARKS.md for what it costs in
/// STS-B and known-item retrieval.
const INT8_MIN_COSINE: f32 = 0.99;

#[test]
fn int8_stays_within_its_bound_of_the_reference() {
    let items = fixture();
    let dir = common::real_model();
    let texts: Vec<&str> = items.iter().map(|i| i.text.as_str()).collect();
    let enc = Encoder::load(
        &dir,
        &LoadOptions {
            device: DeviceSpec::Cpu,
            precision: Some(dochash::encoder::Precision::Int8),
            ..LoadOptions::default()
        },
    )
    .expect("load model");
    assert_eq!(enc.precision(), dochash::encoder::Precision::Int8);
    let mean = enc
        .embed(&texts, Pooling::Mean, false, BatchLimits::default())
        .expect("embed");
    let cos = |a: &[f32], b: &[f32]| {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (n(a) * n(b))
    };
    let mut worst = 1f32;
    for (i, it) in items.iter().enumerate() {
        let c = cos(mean.row(i), &it.mean);
        eprintln!("int8 cosine {c:.5} {:?}", it.text);
        worst = worst.min(c);
        // Not the f32 vector: quantisation moved it.
        assert_ne!(mean.row(i), &it.mean[..]);
    }
    assert!(
        worst >= INT8_MIN_COSINE,
        "int8 vs reference: worst cosine {worst} < {INT8_MIN_COSINE}"
    );
}
