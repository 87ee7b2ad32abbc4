//! One owner of the index: `dochash watch` holds it, and `dochash query`/`status`/`index` from
//! other processes go through its socket instead of failing on the database lock.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Owner, dochash, query, start_watch, status, stderr, wait_until, wait_up_to};
use serde_json::Value;

fn summary(hits: &[Value]) -> Vec<(String, i64, String)> {
    hits.iter()
        .map(|h| {
            (
                h["path"].as_str().unwrap().to_string(),
                h["line"].as_i64().unwrap(),
                format!("{:.5}", h["score"].as_f64().unwrap()),
            )
        })
        .collect()
}

#[test]
fn queries_through_the_owner_match_direct_queries() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let notes = tmp.path().join("notes");
    let model = common::tiny_model(tmp.path());
    for (i, text) in [
        "apple banana cherry",
        "guitar piano music",
        "river ocean mountain",
        "server request response error",
        "bread soup recipe",
    ]
    .iter()
    .enumerate()
    {
        std::fs::create_dir_all(&notes).unwrap();
        std::fs::write(
            notes.join(format!("n{i}.md")),
            format!("# N{i}\n\n{text}\n"),
        )
        .unwrap();
    }
    let out = dochash(&home)
        .arg("index")
        .arg("--model")
        .arg(&model)
        .arg(&notes)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let direct = query(&home, "guitar piano", 5);
    assert_eq!(direct.len(), 5);

    let mut watch = start_watch(&home, &model, &[]);
    let through = query(&home, "guitar piano", 5);
    assert_eq!(summary(&through), summary(&direct));
    // The owner says what fusion the corpus chose: five unlinked notes keep the default.
    let s = status(&home).unwrap();
    assert_eq!(s["owner"], true, "{s}");
    assert_eq!(
        s["fusion"]["why"], "too few questions to fit (0, needs 40)",
        "{s}"
    );

    // The socket is private to the user.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.join("owner.sock"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    }

    // `dochash index NEW` is handed to the owner.
    let extra = tmp.path().join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(extra.join("e.md"), "# E\n\nsailing boats wind\n").unwrap();
    let out = dochash(&home).arg("index").arg(&extra).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("running dochash"), "{}", stderr(&out));
    wait_until("the new folder to be indexed", || {
        status(&home).is_some_and(|s| s["files"] == 6)
    });
    let through = query(&home, "guitar piano", 5);
    assert!(
        through
            .iter()
            .any(|h| h["path"].as_str().unwrap().ends_with("e.md"))
    );

    // Ctrl-C stops the owner cleanly and removes its socket.
    let st = Command::new("kill")
        .args(["-INT", &watch.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let code = watch.wait().unwrap();
    assert!(code.success(), "{code:?}");
    assert!(!home.join("owner.sock").exists());
    assert_eq!(summary(&query(&home, "guitar piano", 5)), summary(&through));

    // kill -9 leaves a stale socket: queries fall back to opening the index themselves.
    let mut watch = start_watch(&home, &model, &[]);
    watch.kill().unwrap();
    watch.wait().unwrap();
    assert!(home.join("owner.sock").exists());
    assert_eq!(summary(&query(&home, "guitar piano", 5)), summary(&through));
    assert_eq!(status(&home).unwrap()["files"], 6);
}

#[test]
fn watcher_handles_a_burst_of_1000_files_and_atomic_saves() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let notes = tmp.path().join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    let model = common::tiny_model(tmp.path());
    let mut watch = start_watch(&home, &model, &[&notes]);
    assert_eq!(status(&home).unwrap()["files"], 0);

    // A burst, like a `git checkout` touching 1,000 files.
    for i in 0..1000 {
        let dir = notes.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("n{i}.md")),
            format!("note {i} apple river\n"),
        )
        .unwrap();
    }
    wait_until("1000 files indexed", || {
        status(&home).is_some_and(|s| s["files"] == 1000 && s["job"].is_null())
    });
    let hits = query(&home, "apple river", 10);
    assert_eq!(hits.len(), 10);

    // An editor's atomic save: write a temp file, rename it over the note.
    let target = notes.join("d3/n3.md");
    let tmpfile = notes.join("d3/.n3.md.swp");
    std::fs::write(&tmpfile, "completely different words: guitar piano\n").unwrap();
    std::fs::rename(&tmpfile, &target).unwrap();
    let target = std::fs::canonicalize(&target).unwrap();
    wait_until("the saved text to be searchable", || {
        query(&home, "guitar piano", 2000).iter().any(|h| {
            Path::new(h["path"].as_str().unwrap()) == target
                && h["text"].as_str().unwrap().contains("guitar")
        })
    });

    // Deleting a folder of 100 files removes them.
    std::fs::remove_dir_all(notes.join("d7")).unwrap();
    wait_until("the deleted files to leave", || {
        status(&home).is_some_and(|s| s["files"] == 900)
    });
    watch.kill().unwrap();
    watch.wait().unwrap();
}

#[test]
fn the_owner_retrains_in_the_background_and_switches_generations() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let notes = tmp.path().join("notes");
    let model = common::tiny_model(tmp.path());
    common::many_sections(&notes, 105, 10);
    // Not `start_watch`: with training on, the job is busy long after the first update.
    let mut watch = Owner(
        Command::new(common::bin("dochash"))
            .env("DOCHASH_HOME", &home)
            .env_remove("DOCHASH_MODEL")
            .arg("watch")
            .arg("--model")
            .arg(&model)
            .arg(&notes)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The first update is over once the job is training (or nothing, if training is done).
    wait_until("the first update", || {
        status(&home).is_some_and(|s| {
            s["owner"] == true && (s["job"].is_null() || s["job"]["label"] == "training")
        })
    });
    // Queries are answered while training runs.
    assert!(!query(&home, "river ocean", 3).is_empty());
    let done = |s: &Value| {
        s["job"].is_null()
            && s["notes"].as_array().is_some_and(|n| {
                n.iter()
                    .any(|n| n.as_str().unwrap().starts_with("hashing head"))
            })
    };
    wait_up_to(
        Duration::from_secs(900),
        "background training to finish",
        || status(&home).is_some_and(|s| done(&s)),
    );
    // Whether the tiny random model's training is adopted depends on the held-back checks;
    // either way the outcome must be consistent and said.
    let s = status(&home).unwrap();
    let said: Vec<String> = s["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    let simcse = said.iter().any(|n| n.starts_with("SimCSE adopted"));
    let learned = said
        .iter()
        .any(|n| n.starts_with("hashing head (ranking) adopted"));
    assert!(said.iter().any(|n| n.starts_with("SimCSE")), "{said:?}");
    assert_eq!(s["passages"], 1050, "{s}");
    let switched = simcse || learned;
    assert_eq!(home.join("generation.json").is_file(), switched, "{said:?}");
    assert_eq!(
        s["codes"].as_str().unwrap().starts_with("ranked"),
        learned,
        "{s}"
    );
    if switched {
        assert!(
            s["trained"].as_str().unwrap().contains("generation 1"),
            "{s}"
        );
        // What was adopted is said as a gain.
        let gained = s["gained"].as_str().unwrap_or_default();
        assert_eq!(gained.contains("encoder:"), simcse, "{s}");
        assert_eq!(gained.contains("codes:"), learned, "{s}");
        assert!(home.join("generations/1/manifest.json").is_file());
        assert!(
            !home.join("index").exists(),
            "the base index is removed after the switch"
        );
    } else {
        assert!(s["trained"].is_null() && s["gained"].is_null(), "{s}");
        assert!(!home.join("generations/1").exists());
    }

    // The watcher keeps feeding the serving generation.
    std::fs::write(
        notes.join("late.md"),
        "# Late\n\nzebra quartz zebra quartz\n",
    )
    .unwrap();
    // (Asking for every passage: a tiny random model's ranking says nothing.)
    wait_until("the new note to be searchable", || {
        query(&home, "zebra quartz", 2000)
            .iter()
            .any(|h| h["path"].as_str().unwrap().ends_with("late.md"))
    });
    watch.kill().unwrap();
    watch.wait().unwrap();

    // After the owner is gone, one-shot commands open the serving generation themselves.
    let s = status(&home).unwrap();
    assert_eq!(s["trained"].is_object(), switched, "{s}");
    assert_eq!(s["passages"], 1051, "{s}");
}
