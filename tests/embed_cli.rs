//! `dochash embed` on awkward input, with a tiny random model.

mod common;

use common::{dochash, run_with_stdin, stderr, stdout};

fn embed(model: &std::path::Path, args: &[&str], input: &[u8]) -> std::process::Output {
    let home = tempfile::tempdir().expect("tempdir");
    let mut cmd = dochash(home.path());
    cmd.arg("embed").arg("--model").arg(model).args(args);
    run_with_stdin(cmd, input)
}

fn vectors(out: &std::process::Output) -> Vec<Vec<f32>> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON array"))
        .collect()
}

#[test]
fn empty_lines_keep_line_correspondence() {
    let dir = tempfile::tempdir().unwrap();
    let m = common::tiny_model(dir.path());
    let out = embed(&m, &["--normalize"], b"apple\n\nriver ocean\r\n\n");
    assert!(out.status.success(), "{}", stderr(&out));
    let v = vectors(&out);
    assert_eq!(v.len(), 4);
    assert_eq!(v[1], v[3], "empty lines embed identically");
    assert_ne!(v[0], v[1]);
    for row in &v {
        assert_eq!(row.len(), 32);
        let n: f32 = row.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-4);
    }
    // No trailing newline on the last line, and an empty input gives empty output.
    let out = embed(&m, &[], b"apple");
    assert_eq!(vectors(&out).len(), 1);
    let out = embed(&m, &[], b"");
    assert!(out.status.success() && stdout(&out).is_empty());
}

#[test]
fn long_lines_are_truncated_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let m = common::tiny_model(dir.path());
    let long = "apple banana ".repeat(500);
    let input = format!("short\n{long}\n");
    let out = embed(&m, &["--max-len", "32"], input.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(vectors(&out).len(), 2);
    let err = stderr(&out);
    assert!(err.contains("line 2") && err.contains("32 tokens"), "{err}");
}

#[test]
fn invalid_utf8_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let m = common::tiny_model(dir.path());
    let out = embed(&m, &[], b"fine\nbad \xff\xfe bytes\n");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("line 2") && err.contains("UTF-8"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn broken_model_folders_give_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let m = common::tiny_model(dir.path());
    std::fs::remove_file(m.join("tokenizer.json")).unwrap();
    let out = embed(&m, &[], b"x\n");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("tokenizer.json"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let m = common::tiny_model(dir.path());
    std::fs::write(m.join("model.safetensors"), b"garbage").unwrap();
    let out = embed(&m, &[], b"x\n");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("model.safetensors"), "{err}");

    let m = common::tiny_model(dir.path());
    std::fs::write(m.join("config.json"), b"{\"hidden_size\": 7}").unwrap();
    let out = embed(&m, &[], b"x\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("config.json"), "{}", stderr(&out));

    let out = embed(&dir.path().join("nope"), &[], b"x\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));
}

#[test]
fn bench_encode_reports_throughput_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let m = common::tiny_model(dir.path());
    let home = tempfile::tempdir().unwrap();
    let out = dochash(home.path())
        .args([
            "bench", "encode", "--batch", "2", "--seq", "8", "--repeat", "1", "--json", "--model",
        ])
        .arg(&m)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!((v["batch"].as_u64(), v["seq"].as_u64()), (Some(2), Some(8)));
    assert!(v["tokens_per_s"].as_f64().unwrap() > 0.0);
    // A sequence longer than the model allows is refused with one line.
    let out = dochash(home.path())
        .args(["bench", "encode", "--seq", "100000", "--model"])
        .arg(&m)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--seq"), "{}", stderr(&out));
}
