//! Shared by the integration tests: the real binaries, a private home folder, and models.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// A dochash home shared by all tests of this build, so the real model is fetched once.
pub fn shared_home() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dochash-home")
}

pub fn bin(name: &str) -> PathBuf {
    match name {
        "dochash" => PathBuf::from(env!("CARGO_BIN_EXE_dochash")),
        "dochash-tui" => PathBuf::from(env!("CARGO_BIN_EXE_dochash-tui")),
        other => panic!("no binary {other}"),
    }
}

/// `dochash ARGS` with `home` as DOCHASH_HOME and a clean environment for the model options.
pub fn dochash(home: &Path) -> Command {
    let mut c = Command::new(bin("dochash"));
    c.env("DOCHASH_HOME", home)
        .env_remove("DOCHASH_MODEL")
        .env_remove("DOCHASH_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    c
}

pub fn run_with_stdin(mut cmd: Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer");
    out
}

/// The real default model, fetched through `dochash model fetch` (the way a user gets it).
pub fn real_model() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = dochash(&shared_home())
            .args(["model", "fetch", "--quiet"])
            .output()
            .expect("run dochash model fetch");
        assert!(
            out.status.success(),
            "model fetch failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

/// A tiny random BERT in `dir`.
pub fn tiny_model(dir: &Path) -> PathBuf {
    let m = dir.join("tiny-model");
    dochash::encoder::write_tiny_model(&m, 11).expect("write tiny model");
    m
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
