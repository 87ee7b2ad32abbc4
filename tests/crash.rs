//! Crashes at named points (test-only failpoints, see `dochash::failpoint`): the process aborts
//! exactly there — the test checks that it did — and the next run must converge on exactly the
//! index a clean run builds, with the user's folder list intact.

mod common;

use std::process::Output;

use common::{Env, clean_reference, dochash, env, snapshot, stderr};
use serde_json::Value;

const FRUIT: &str = "# Fruit\n\napple banana cherry apple banana cherry\n";
const MUSIC: &str = "# Music\n\nguitar piano music guitar piano music\n";
const RIVER: &str = "# Nature\n\nriver ocean mountain forest river ocean\n";

fn fill(e: &Env, n: usize) {
    for i in 0..n {
        let text = [FRUIT, MUSIC, RIVER][i % 3];
        e.write(
            &format!("d{:02}/note{i}.md", i % 7),
            &format!("{text}\n## More\n\nnote number {i} with words of its own\n"),
        );
    }
}

/// `dochash index ARGS` told to abort at `point`; checks that it aborted there.
fn index_aborting(e: &Env, point: &str, args: &[&str]) -> Output {
    let out = dochash(&e.home)
        .env("DOCHASH_FAILPOINTS", point)
        .arg("index")
        .arg("--model")
        .arg(&e.model)
        .args(args)
        .output()
        .unwrap();
    assert_aborted_at(&out, point.split('=').next().unwrap());
    out
}

/// Whether the process ended by `abort()`: SIGABRT on Unix; on Windows Rust's abort is a fast
/// fail (0xC0000409), or exit code 3 from the C runtime's.
fn aborted(status: &std::process::ExitStatus) -> bool {
    #[cfg(unix)]
    return std::os::unix::process::ExitStatusExt::signal(status) == Some(6);
    #[cfg(windows)]
    return matches!(status.code(), Some(3) | Some(-1073740791));
}

fn assert_aborted_at(out: &Output, name: &str) {
    assert!(
        aborted(&out.status),
        "expected an abort at {name}, got {:?}: {}",
        out.status,
        stderr(out)
    );
    assert!(
        stderr(out).contains(&format!("failpoint {name}: abort")),
        "{}",
        stderr(out)
    );
}

#[test]
fn a_crash_inside_a_files_change_converges() {
    for point in ["store.rows_written", "store.committed"] {
        let e = env();
        fill(&e, 40);
        let want = clean_reference(&e);
        // First run, aborted in the middle of the 10th file.
        index_aborting(
            &e,
            &format!("{point}=abort@10"),
            &[e.notes.to_str().unwrap()],
        );
        // Edits before the next run, so it has real work besides recovery; then the same on a
        // second crash, during an update of an existing index.
        e.write("d00/note0.md", &format!("{FRUIT}\nchanged\n"));
        e.write("d03/note3.md", &format!("{MUSIC}\nchanged too\n"));
        index_aborting(&e, &format!("{point}=abort@2"), &[]);
        e.index(&[]);
        // The reference must see the same edits.
        let want_after = clean_reference(&e);
        assert_ne!(want.1, want_after.1, "the edits changed something");
        assert_eq!(snapshot(&e.home), want_after, "after a crash at {point}");
        // And the folder list is the user's.
        let saved = std::fs::read_to_string(e.home.join("index.json")).unwrap();
        assert!(saved.contains("notes"), "{saved}");
    }
}

#[test]
fn a_crash_between_code_generations_converges() {
    let e = env();
    fill(&e, 30);
    // The first fit of codes happens at the end of the first run: abort after the coder is
    // saved, before its codes are written.
    index_aborting(&e, "refit.coder_saved=abort", &[e.notes.to_str().unwrap()]);
    e.index(&[]);
    let got = snapshot(&e.home);
    assert_eq!(got.0["stale"], 0, "{}", got.0);
    assert_eq!(got, clean_reference(&e));
}

#[test]
fn a_crash_while_saving_the_folder_list_keeps_it() {
    let e = env();
    fill(&e, 6);
    e.index(&[e.notes.to_str().unwrap()]);
    let extra = e.notes.parent().unwrap().join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(extra.join("x.md"), "# X\n\nzebra quartz\n").unwrap();
    index_aborting(&e, "settings.write=abort", &[extra.to_str().unwrap()]);
    // The file is either the old list or the new one, never half of one.
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(e.home.join("index.json")).unwrap())
            .expect("index.json is whole");
    assert!(saved["roots"].to_string().contains("notes"), "{saved}");
    e.index(&[extra.to_str().unwrap()]);
    let s = e.status();
    assert_eq!(s["roots"].as_array().unwrap().len(), 2, "{s}");
    assert_eq!(s["files"], 7);
}

#[test]
fn a_crash_during_the_generation_switch_keeps_the_serving_generation() {
    let e = env();
    // Enough passages to train on (the threshold is 1,000).
    for f in 0..110 {
        let mut text = String::new();
        for s in 0..10 {
            text.push_str(&format!("# Part {s}\n\n"));
            let w = ["apple", "river", "music", "bread", "server"][(f + s) % 5];
            // 80 words: one passage per section for the tiny model.
            text.push_str(&format!("{w} words {f} {s} {}\n\n", [w; 76].join(" ")));
        }
        e.write(&format!("n{f:03}.md"), &text);
    }
    e.index(&[e.notes.to_str().unwrap()]);
    let before = snapshot(&e.home);
    let train = |failpoints: &str| {
        dochash(&e.home)
            .env("DOCHASH_FAILPOINTS", failpoints)
            .args([
                "train", "--simcse", "off", "--dhim", "--force", "--epochs", "1",
            ])
            .arg("--model")
            .arg(&e.model)
            .output()
            .unwrap()
    };
    let out = train("generation.switch=abort");
    assert_aborted_at(&out, "generation.switch");
    // The base generation still serves, untouched.
    assert!(!e.home.join("generation.json").exists());
    assert_eq!(snapshot(&e.home), before);
    // The next run cleans up the half-made generation and works.
    let out = train("");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(e.home.join("generation.json").is_file());
    let after = snapshot(&e.home);
    assert_eq!(after.0["passages"], before.0["passages"]);
    assert_eq!(after.0["codes"], "dhim");
    let dirs: Vec<String> = std::fs::read_dir(&e.home)
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("index"))
        .collect();
    assert_eq!(dirs.len(), 2, "{dirs:?}"); // the serving index-N and index.json
}

/// A power cut can lose the row files' last writes while sled (which syncs on its own) kept the
/// passages that point at them: the next run must notice and index those files again.
#[test]
fn lost_row_writes_are_noticed_and_repaired() {
    let e = env();
    fill(&e, 30);
    e.index(&[e.notes.to_str().unwrap()]);
    let want = snapshot(&e.home);
    for f in ["codes.bin", "vectors.bin"] {
        let p = e.home.join("index").join(f);
        let len = std::fs::metadata(&p).unwrap().len();
        let row = if f == "codes.bin" { 24 } else { 2 * 32 };
        let file = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        file.set_len(len - 5 * row).unwrap();
    }
    let out = e.index(&[]);
    assert!(
        stderr(&out).contains("not closed cleanly"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot(&e.home), want);
}

/// The word index is derived data too: damaged or missing, it is rebuilt from the passages.
#[test]
fn a_damaged_word_index_is_rebuilt() {
    let e = env();
    fill(&e, 12);
    e.index(&[e.notes.to_str().unwrap()]);
    let want = snapshot(&e.home);
    let lexical = e.home.join("index/lexical");
    std::fs::write(lexical.join("meta.json"), "{ not json").unwrap();
    let out = e.index(&[]);
    assert!(stderr(&out).contains("word index"), "{}", stderr(&out));
    assert_eq!(snapshot(&e.home), want);
    std::fs::remove_dir_all(&lexical).unwrap();
    e.index(&[]);
    assert_eq!(snapshot(&e.home), want);
}

/// Runs a command, killing it if it has not finished within `limit`: the point is that it
/// finishes, and a hang must fail the test rather than the suite.
fn finishes(mut cmd: std::process::Command, limit: std::time::Duration) -> Output {
    use std::io::Read;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = Vec::new();
            let mut err = Vec::new();
            child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
            child.stderr.take().unwrap().read_to_end(&mut err).unwrap();
            return Output {
                status,
                stdout: out,
                stderr: err,
            };
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A database damaged at rest (a flipped bit in a page that sled reads lazily) used to make
/// sled's iterator return the same error forever, and `status` spun at 100 % CPU. Opening must
/// finish: the damage is found and the index rebuilt from the files.
#[test]
fn a_damaged_database_is_found_and_rebuilt_not_spun_on() {
    const MARKER: &[u8] = b"SPINMARKER-0123456789";
    let e = env();
    // A database of several segments, so that the damaged page is one sled reads lazily.
    let words = [
        "apple", "banana", "river", "ocean", "guitar", "piano", "bread", "server",
    ];
    for i in 0..400usize {
        let body: Vec<&str> = (0..250)
            .map(|j| words[(i * 7 + j * 3 + j / 5) % 8])
            .collect();
        e.write(
            &format!("d{:02}/note{i:03}.md", i % 7),
            &format!("# Note {i}\n\n{}\n", body.join(" ")),
        );
    }
    e.write(
        "d03/marked.md",
        &format!(
            "# Marked\n\n{} apple\n",
            std::str::from_utf8(MARKER).unwrap()
        ),
    );
    e.index(&[e.notes.to_str().unwrap()]);
    // Opened and closed again: sled snapshots at open, and later opens read pages lazily.
    for _ in 0..2 {
        e.status();
    }
    let db = ["index/sled/db", "index/db"]
        .iter()
        .map(|p| e.home.join(p))
        .find(|p| p.is_file())
        .unwrap();
    let mut b = std::fs::read(&db).unwrap();
    let mut flipped = 0;
    let mut i = 0;
    while i + MARKER.len() <= b.len() {
        if &b[i..i + MARKER.len()] == MARKER {
            b[i + 8] ^= 1;
            flipped += 1;
            i += MARKER.len();
        } else {
            i += 1;
        }
    }
    assert!(flipped > 0);
    std::fs::write(&db, &b).unwrap();

    let limit = std::time::Duration::from_secs(60);
    let mut status = dochash(&e.home);
    status.args(["status", "--json"]);
    let out = finishes(status, limit);
    if !out.status.success() {
        assert!(stderr(&out).contains("damaged"), "{}", stderr(&out));
    }
    let mut index = dochash(&e.home);
    index.arg("index").arg("--model").arg(&e.model);
    let out = finishes(index, limit);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = e.status();
    assert_eq!(s["files"], 401, "{s}");
    let (code, hits) = e.query("apple", &["-k", "1000", "--mode", "semantic"]);
    assert_eq!(code, Some(0));
    assert!(
        hits.iter()
            .any(|h| h["path"].as_str().unwrap().ends_with("marked.md"))
    );
}
