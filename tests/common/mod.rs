//! Shared by the integration tests: the real binaries, a private home folder, and models.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

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
        .env_remove("DOCHASH_PRECISION")
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

pub struct Env {
    pub _tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub notes: PathBuf,
    pub model: PathBuf,
}

pub fn env() -> Env {
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("home");
    let notes = tmp.path().join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    let model = tiny_model(tmp.path());
    Env {
        home,
        notes,
        model,
        _tmp: tmp,
    }
}

impl Env {
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.notes.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn index(&self, args: &[&str]) -> Output {
        let out = dochash(&self.home)
            .arg("index")
            .arg("--model")
            .arg(&self.model)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "index failed: {}", stderr(&out));
        out
    }

    pub fn query(&self, text: &str, extra: &[&str]) -> (Option<i32>, Vec<Value>) {
        let out = dochash(&self.home)
            .args(["query", "--json", text])
            .args(extra)
            .output()
            .unwrap();
        let hits = stdout(&out)
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        (out.status.code(), hits)
    }

    pub fn status(&self) -> Value {
        let out = dochash(&self.home)
            .args(["status", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str(stdout(&out).trim()).unwrap()
    }
}

/// A `dochash watch` child that is killed when the test ends, passing or failing, so a failed
/// assertion never leaves an owner running.
pub struct Owner(pub Child);

impl std::ops::Deref for Owner {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Owner {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_until(what: &str, pred: impl FnMut() -> bool) {
    wait_up_to(Duration::from_secs(120), what, pred)
}

pub fn wait_up_to(limit: Duration, what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn status(home: &Path) -> Option<Value> {
    let out = dochash(home).args(["status", "--json"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_str(stdout(&out).trim()).ok()
}

pub fn query(home: &Path, text: &str, k: usize) -> Vec<Value> {
    let out = dochash(home)
        .args(["query", "--json", "-k", &k.to_string(), text])
        .output()
        .unwrap();
    assert!(out.status.code() != Some(2), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `dochash watch --no-train`: these tests are about the mechanics of ownership; background
/// training has its own test.
pub fn start_watch(home: &Path, model: &Path, paths: &[&Path]) -> Owner {
    let mut c = Command::new(bin("dochash"));
    c.env("DOCHASH_HOME", home)
        .env_remove("DOCHASH_MODEL")
        .env_remove("DOCHASH_PRECISION")
        .arg("watch")
        .arg("--model")
        .arg(model)
        .arg("--no-train")
        .args(paths)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = Owner(c.spawn().unwrap());
    wait_until("the owner to answer", || {
        status(home).is_some_and(|s| s["owner"] == true && s["job"].is_null())
    });
    child
}

/// Notes of headed sections (one passage each), enough to pass the training threshold.
pub fn many_sections(dir: &Path, files: usize, sections: usize) {
    const WORDS: &[&str] = &[
        "apple", "garden", "river", "ocean", "server", "error", "music", "piano", "bread", "soup",
    ];
    std::fs::create_dir_all(dir).unwrap();
    for f in 0..files {
        let mut text = String::new();
        for s in 0..sections {
            text.push_str(&format!("# Part {s}\n\n"));
            for k in 0..80 {
                text.push_str(WORDS[(f * 7 + s * 3 + k) % WORDS.len()]);
                text.push(' ');
            }
            text.push_str("\n\n");
        }
        std::fs::write(dir.join(format!("n{f:03}.md")), text).unwrap();
    }
}

/// Every passage the word index finds for `words`, with its place and BM25 score (whose
/// statistics count live passages only, so the same notes score the same however they were
/// indexed), in a fixed order.
pub fn lexical_hits(home: &Path, words: &str) -> Vec<String> {
    let out = dochash(home)
        .args(["query", "--json", "--mode", "lexical", "-k", "5000", words])
        .output()
        .unwrap();
    assert!(out.status.code() != Some(2), "{}", stderr(&out));
    let mut hits: Vec<String> = stdout(&out)
        .lines()
        .map(|l| {
            let h: Value = serde_json::from_str(l).unwrap();
            format!(
                "{}:{} {:.4}",
                h["path"].as_str().unwrap(),
                h["line"],
                h["bm25"].as_f64().unwrap_or(f64::NAN)
            )
        })
        .collect();
    hits.sort();
    hits
}

/// Everything a query can see: every passage with its place and cosine, what the word index
/// finds with its scores, and the counts.
pub fn snapshot(home: &Path) -> (Value, Vec<(String, i64, i64, String)>) {
    let words = lexical_hits(home, "apple guitar river note");
    let out = dochash(home)
        .args([
            "query",
            "--json",
            "--mode",
            "semantic",
            "-k",
            "5000",
            "apple guitar river note",
        ])
        .output()
        .unwrap();
    assert!(out.status.code() != Some(2), "{}", stderr(&out));
    let mut hits: Vec<(String, i64, i64, String)> = stdout(&out)
        .lines()
        .map(|l| {
            let h: Value = serde_json::from_str(l).unwrap();
            (
                h["path"].as_str().unwrap().to_string(),
                h["line"].as_i64().unwrap(),
                h["end_line"].as_i64().unwrap(),
                format!("{:.4}", h["score"].as_f64().unwrap()),
            )
        })
        .collect();
    hits.sort();
    let out = dochash(home).args(["status", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let s: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let counts = serde_json::json!({
        "files": s["files"], "passages": s["passages"], "roots": s["roots"],
        "stale": s["stale_codes"], "codes": s["codes"], "words": words,
    });
    (counts, hits)
}

/// The same notes indexed cleanly in another home.
pub fn clean_reference(e: &Env) -> (Value, Vec<(String, i64, i64, String)>) {
    let clean = Env {
        home: e.home.with_file_name("clean-home"),
        notes: e.notes.clone(),
        model: e.model.clone(),
        _tmp: tempfile::tempdir().unwrap(),
    };
    clean.index(&[e.notes.to_str().unwrap()]);
    snapshot(&clean.home)
}

/// A tmpfs of a given size mounted on a folder for as long as this lives: a small real file
/// system to fill. Mounting needs root, which CI has; elsewhere the test fails and says so.
#[cfg(target_os = "linux")]
pub struct Tmpfs {
    pub dir: PathBuf,
}

#[cfg(target_os = "linux")]
impl Tmpfs {
    pub fn mount(dir: &Path, bytes: u64) -> Tmpfs {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(
            root,
            "this test mounts a small tmpfs to fill, which needs root (CI runs as root)"
        );
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0700")])
            .arg("tmpfs")
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(out.status.success(), "mount: {}", stderr(&out));
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// Fills the file system to the last byte with `filler`; returns how much it took.
    pub fn fill(&self) -> u64 {
        use std::io::Write;
        let mut f = std::fs::File::create(self.dir.join("filler")).unwrap();
        let block = vec![0x55u8; 64 * 1024];
        let mut written = 0u64;
        let mut chunk = block.len();
        // Large writes first, then smaller ones to take the last partial blocks too.
        while chunk > 0 {
            match f.write(&block[..chunk]) {
                Ok(0) => chunk /= 2,
                Ok(n) => written += n as u64,
                Err(_) => chunk /= 2,
            }
        }
        let _ = f.sync_all();
        written
    }

    /// Frees what [`fill`](Self::fill) took.
    pub fn free(&self) {
        std::fs::remove_file(self.dir.join("filler")).unwrap();
    }

    /// Bytes still free.
    pub fn available(&self) -> u64 {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(self.dir.as_os_str().as_bytes()).unwrap();
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: a valid C string, and `st` is read only after statvfs filled it.
        let st = unsafe {
            assert_eq!(libc::statvfs(c.as_ptr(), st.as_mut_ptr()), 0);
            st.assume_init()
        };
        st.f_bavail * st.f_frsize
    }
}

#[cfg(target_os = "linux")]
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).output();
    }
}

/// `dochash watch` told to act at failpoints (`points`, e.g. `NAME=pause`; see
/// `dochash::failpoint`), pausing in `fp_dir`; background training stays on, for the tests of it.
pub fn failpoint_owner(
    home: &Path,
    model: &Path,
    fp_dir: &Path,
    points: &str,
    paths: &[&Path],
) -> Owner {
    let mut c = Command::new(bin("dochash"));
    c.env("DOCHASH_HOME", home)
        .env_remove("DOCHASH_MODEL")
        .env("DOCHASH_FAILPOINTS", points)
        .env("DOCHASH_FAILPOINT_DIR", fp_dir)
        .arg("watch")
        .arg("--model")
        .arg(model)
        .args(paths)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Owner(c.spawn().unwrap())
}
