//! `dochash train` driven as a user would: it trains on the indexed notes, builds the next
//! generation beside the serving one and switches to it. The tiny random model keeps this fast;
//! quality is measured by `dochash eval` (docs/BENCHMARKS.md), not here.

mod common;

use std::path::{Path, PathBuf};

use common::{dochash, stderr, stdout};
use serde_json::Value;

const WORDS: &[&str] = &[
    "apple", "garden", "river", "ocean", "server", "error", "music", "piano", "bread", "soup",
    "stream", "async", "mountain", "forest", "request", "guitar", "cherry", "banana", "water",
    "thread",
];

/// `files` notes of `sections` headed sections each: one passage per section, since a section
/// (80 in-vocabulary words) fills more than half of the tiny model's passage.
fn notes(dir: &Path, files: usize, sections: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut state = 7u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    for f in 0..files {
        let topic = f % 5;
        let mut text = String::new();
        for s in 0..sections {
            text.push_str(&format!("# Section {s}\n\n"));
            for _ in 0..80 {
                let w = WORDS[(topic * 4 + next() % 6) % WORDS.len()];
                text.push_str(w);
                text.push(' ');
            }
            text.push_str("\n\n");
        }
        std::fs::write(dir.join(format!("note{f:03}.md")), text).unwrap();
    }
}

fn index(home: &Path, model: &Path, notes: &Path) {
    let out = dochash(home)
        .arg("index")
        .arg("--model")
        .arg(model)
        .arg(notes)
        .output()
        .unwrap();
    assert!(out.status.success(), "index failed: {}", stderr(&out));
}

fn status(home: &Path) -> Value {
    let out = dochash(home).args(["status", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(stdout(&out).trim()).unwrap()
}

fn query(home: &Path, text: &str) -> Vec<Value> {
    let out = dochash(home)
        .args(["query", "--json", "--group", "none", "-k", "5", text])
        .output()
        .unwrap();
    assert!(out.status.success(), "query failed: {}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn training_switches_to_a_new_generation_that_queries_use() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let dir = tmp.path().join("notes");
    let model: PathBuf = common::tiny_model(tmp.path());
    notes(&dir, 110, 10);
    index(&home, &model, &dir);
    let before = status(&home);
    assert_eq!(before["passages"], 1100, "{before}");

    let out = dochash(&home)
        .arg("train")
        .arg("--model")
        .arg(&model)
        .args(["--dhim", "--bits", "32", "--epochs", "2", "--force"])
        .args(["--simcse-max-len", "24"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "train failed: {err}");
    assert!(
        err.contains("generation 1 serves now (1100 passages indexed"),
        "{err}"
    );
    assert!(err.contains("hashing head trained: 32 bits"), "{err}");
    assert!(err.contains("SimCSE"), "{err}");
    // A new encoder: every file is embedded again.
    assert!(!err.contains("copied from the serving index"), "{err}");

    // The pointer names the new index; the old one is gone; the manifest is complete.
    let pointer: Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("generation.json")).unwrap())
            .unwrap();
    assert_eq!(pointer["generation"], 1);
    assert_eq!(pointer["index"], "index-1");
    let names = entries(&home);
    assert!(names.contains(&"index-1".to_string()), "{names:?}");
    assert!(!names.contains(&"index".to_string()), "{names:?}");
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(home.join("generations/1/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["passages"], 1100);
    assert_eq!(manifest["dhim"]["config"]["bits"], 32);
    assert!(manifest["simcse"]["report"]["steps"].as_u64().unwrap() > 0);
    // It trained with the SimCSE setting given on the command line, and the default positives.
    assert_eq!(manifest["simcse"]["config"]["max_len"], 24);
    assert_eq!(manifest["simcse"]["config"]["positives"], "sentence");
    // The adoption check asked the held-back files' section titles for their sections and
    // their passages' openings for the rest, of the base and the tuned model.
    let simcse = &manifest["simcse"];
    assert!(simcse["questions"].as_u64().unwrap() >= 20, "{simcse}");
    for side in ["base", "tuned"] {
        let s = &simcse[side];
        let (t, l, m) = (
            s["titles"].as_f64(),
            s["leads"].as_f64(),
            s["mean"].as_f64(),
        );
        assert!(t.is_some() || l.is_some(), "{simcse}");
        let parts: Vec<f64> = [t, l].into_iter().flatten().collect();
        assert!(parts.iter().all(|x| (0.0..=1.0).contains(x)), "{simcse}");
        let mean = parts.iter().sum::<f64>() / parts.len() as f64;
        assert!((m.unwrap() - mean).abs() < 1e-12, "{simcse}");
        // The same questions answered fused with BM25, kind by kind.
        let (ft, fl, fm) = (
            s["fused_titles"].as_f64(),
            s["fused_leads"].as_f64(),
            s["fused"].as_f64(),
        );
        assert_eq!(
            (ft.is_some(), fl.is_some()),
            (t.is_some(), l.is_some()),
            "{simcse}"
        );
        let parts: Vec<f64> = [ft, fl].into_iter().flatten().collect();
        assert!(parts.iter().all(|x| (0.0..=1.0).contains(x)), "{simcse}");
        let mean = parts.iter().sum::<f64>() / parts.len() as f64;
        assert!((fm.unwrap() - mean).abs() < 1e-12, "{simcse}");
    }
    assert!(home.join("generations/1/dhim.safetensors").is_file());

    // Status and queries go through the new generation.
    let after = status(&home);
    assert_eq!(after["passages"], 1100, "{after}");
    assert_eq!(after["codes"], "dhim", "{after}");
    assert_eq!(after["bits"], 32, "{after}");
    assert_eq!(after["trained"]["generation"], 1, "{after}");
    let hits = query(&home, "river ocean mountain");
    assert_eq!(hits.len(), 5);

    // Edits after the switch are indexed into the new generation.
    std::fs::write(dir.join("new.md"), "# Fresh\n\nzebra zebra zebra quartz\n").unwrap();
    let out = dochash(&home).arg("index").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(status(&home)["passages"], 1101);
    let out = dochash(&home)
        .args(["query", "--json", "-k", "2000", "zebra quartz"])
        .output()
        .unwrap();
    assert!(stdout(&out).contains("new.md"), "{}", stderr(&out));
}

#[test]
fn a_ranking_head_becomes_the_code_source_and_search_uses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let dir = tmp.path().join("notes");
    let model: PathBuf = common::tiny_model(tmp.path());
    notes(&dir, 210, 10);
    // The tiny model's vectors are 32 wide: ITQ (where the head starts) needs bits ≤ width.
    let out = dochash(&home)
        .args(["index", "--bits", "32", "--model"])
        .arg(&model)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "index failed: {}", stderr(&out));
    let before = status(&home);
    assert_eq!(before["passages"], 2100, "{before}");
    assert_eq!(
        (before["codes"].as_str(), before["bits"].as_u64()),
        (Some("itq"), Some(32)),
        "{before}"
    );

    let out = dochash(&home)
        .arg("train")
        .arg("--model")
        .arg(&model)
        .args([
            "--simcse",
            "off",
            "--codes",
            "ranked",
            "--code-steps",
            "20",
            "--force",
        ])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "train failed: {err}");
    assert!(
        err.contains("hashing head (ranking) adopted: the filter needs"),
        "{err}"
    );
    // The encoder is the serving index's: its vectors are copied, none computed again.
    assert!(
        err.contains("210 of 210 files copied from the serving index (the encoder is unchanged)"),
        "{err}"
    );
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(home.join("generations/1/manifest.json")).unwrap(),
    )
    .unwrap();
    let ranked = &manifest["ranked"];
    assert_eq!(ranked["adopted"], true, "{ranked}");
    assert_eq!(ranked["config"]["bits"], before["bits"], "{ranked}");
    let report = &ranked["report"];
    assert_eq!(report["steps"], 20, "{report}");
    assert!(report["best_step"].as_u64().unwrap() <= 20, "{report}");
    assert!(
        report["head_candidates"].as_u64().unwrap() <= report["itq_candidates"].as_u64().unwrap(),
        "the head kept is the best checked, and step 0 is ITQ's: {report}"
    );
    assert!(manifest["simcse"].is_null() && manifest["dhim"].is_null());

    // Every vector is coded by the head (none left to exact scoring), and queries use it.
    let after = status(&home);
    assert_eq!(after["codes"], "ranked", "{after}");
    // Status says what the training gained, from the manifest, in JSON and to a person.
    let gain = format!(
        "codes: the filter needs {} candidates where ITQ's needed {}",
        report["head_candidates"], report["itq_candidates"]
    );
    let said = after["trained"]["gained"].as_str().unwrap_or_default();
    assert!(said.starts_with(&gain), "{after}");
    let out = dochash(&home).arg("status").output().unwrap();
    assert!(
        stdout(&out).contains(&format!("gained    {gain}")),
        "{}",
        stdout(&out)
    );
    assert_eq!(after["passages"], 2100, "{after}");
    assert_eq!(after["stale_codes"], 0, "{after}");
    assert!(
        after["filter"].as_str().unwrap().starts_with("weighted"),
        "{after}"
    );
    let hits = query(&home, "river ocean mountain");
    assert_eq!(hits.len(), 5);

    // A new file is coded by the head as it is indexed, and found.
    std::fs::write(dir.join("new.md"), "# Fresh\n\nzebra zebra zebra quartz\n").unwrap();
    let out = dochash(&home).arg("index").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let now = status(&home);
    assert_eq!(
        (now["passages"].as_u64(), now["stale_codes"].as_u64()),
        (Some(2101), Some(0)),
        "{now}"
    );
    assert_eq!(now["codes"], "ranked", "{now}");
    let out = dochash(&home)
        .args(["query", "--json", "-k", "3000", "zebra quartz"])
        .output()
        .unwrap();
    assert!(stdout(&out).contains("new.md"), "{}", stderr(&out));

    // An owner started now does not train the same notes again: this run counts as the last
    // attempt, as one of its own would.
    let first = owner_first_update(&home, &model);
    assert_eq!(first["trainings"], 0, "{first}");
    assert!(first["job"].is_null(), "{first}");

    // What `dochash index` adds without an owner counts towards the next training: more than
    // half of the 2,100 passages trained on, so the next owner trains.
    notes(&tmp.path().join("more"), 110, 10);
    let out = dochash(&home)
        .arg("index")
        .arg(tmp.path().join("more"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let first = owner_first_update(&home, &model);
    assert_eq!(first["trainings"], 1, "{first}");
}

/// Starts an owner (training on), waits for its first update, which includes the decision
/// whether to train, and returns its status then; the owner is stopped.
fn owner_first_update(home: &Path, model: &Path) -> Value {
    let _watch = common::Owner(
        std::process::Command::new(common::bin("dochash"))
            .env("DOCHASH_HOME", home)
            .env_remove("DOCHASH_MODEL")
            .arg("watch")
            .arg("--model")
            .arg(model)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut first = Value::Null;
    common::wait_until("the owner's first update", || {
        common::status(home).is_some_and(|s| {
            let done = s["owner"] == true && s["updates"].as_u64() >= Some(1);
            if done {
                first = s;
            }
            done
        })
    });
    first
}

#[test]
fn too_few_passages_keep_the_serving_index() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let dir = tmp.path().join("notes");
    let model = common::tiny_model(tmp.path());
    notes(&dir, 3, 4);
    index(&home, &model, &dir);
    let out = dochash(&home)
        .arg("train")
        .arg("--model")
        .arg(&model)
        .arg("--dhim")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("SimCSE skipped: 12 passages"), "{err}");
    assert!(err.contains("hashing head skipped: 12 passages"), "{err}");
    assert!(err.contains("serving index is unchanged"), "{err}");
    assert!(!home.join("generation.json").exists());
    assert!(!home.join("generations").join("1").exists());
    assert_eq!(query(&home, "river").len(), 5);
}

#[test]
fn nothing_to_train_and_no_index_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let model = common::tiny_model(tmp.path());
    let out = dochash(&home)
        .arg("train")
        .arg("--model")
        .arg(&model)
        .args(["--simcse", "off", "--codes", "itq"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("nothing to train"),
        "{}",
        stderr(&out)
    );
    let out = dochash(&home)
        .arg("train")
        .arg("--model")
        .arg(&model)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no folders are indexed yet"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn interrupted_training_leaves_the_serving_generation_intact() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use dochash::app::train::{TrainOptions, TrainProgress, prepare};
    use dochash::encoder::DeviceSpec;
    use dochash::model::{FetchOptions, ModelSpec};
    use dochash::train::TrainError;
    use dochash::train::dhim::DhimConfig;

    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let dir = tmp.path().join("notes");
    let model = common::tiny_model(tmp.path());
    notes(&dir, 110, 10);
    index(&home, &model, &dir);
    let before = query(&home, "river ocean mountain");

    let base = dochash::model::resolve(
        &ModelSpec::LocalDir(model.clone()),
        &FetchOptions {
            offline: true,
            progress: dochash::model::Progress::NONE,
        },
    )
    .unwrap();
    let meta = {
        let index = dochash::index::Index::open_existing(&home.join("index"))
            .unwrap()
            .unwrap();
        index.meta().clone()
    };
    let opts = TrainOptions {
        simcse: None,
        dhim: Some(DhimConfig {
            bits: 16,
            max_epochs: 3,
            ..Default::default()
        }),
        ranked: None,
        device: DeviceSpec::Cpu,
        force: false,
    };
    // Interrupt at the first step of the hashing head, after the token states were computed.
    let cancel = Arc::new(AtomicBool::new(false));
    let mut phases = Vec::new();
    let r = prepare(&home, &base, &meta, None, &opts, &cancel, &mut |p| {
        if let TrainProgress::Dhim(_) = p {
            cancel.store(true, Ordering::Release);
        }
        phases.push(
            format!("{p:?}")
                .split(['(', ' ', '{'])
                .next()
                .unwrap()
                .to_string(),
        );
    });
    assert!(matches!(r, Err(TrainError::Cancelled)), "{:?}", r.err());
    assert!(phases.contains(&"States".to_string()), "{phases:?}");
    assert!(!home.join("generation.json").exists());
    assert!(!home.join("generations/1").exists());
    assert!(!home.join("index-1").exists());
    assert_eq!(query(&home, "river ocean mountain"), before);
}
