//! A full disk costs nothing but the update that did not fit: the home lives on a small tmpfs,
//! which the test fills to the last byte while an update is stopped at one of its write points
//! (a failpoint), then frees. The update must fail with a one-line "disk full" error — never
//! "damaged", never a rebuild — the index must answer as before it, and the next update (or the
//! running owner, by itself) must converge on what a clean build gives.

// A small tmpfs to fill: Linux (and root, which CI has).
#![cfg(target_os = "linux")]

mod common;

use std::path::Path;
use std::process::{Output, Stdio};

use common::{
    Env, Tmpfs, clean_reference, dochash, env, failpoint_owner, snapshot, status, stderr,
    wait_until,
};

const TMPFS_BYTES: u64 = 48 << 20;

fn notes(e: &Env) {
    for i in 0..20 {
        let topic = [
            "apple banana cherry",
            "guitar piano music",
            "river ocean forest",
        ][i % 3];
        e.write(
            &format!("d{}/note{i}.md", i % 4),
            &format!(
                "# Note {i}\n\n{topic} {topic}\n\n## More\n\nnote number {i} and its own words\n"
            ),
        );
    }
}

/// A home on a fresh tmpfs, with the notes indexed.
fn indexed_on_tmpfs(e: &Env) -> Tmpfs {
    let fs = Tmpfs::mount(&e.home, TMPFS_BYTES);
    notes(e);
    e.index(&[e.notes.to_str().unwrap()]);
    fs
}

fn assert_disk_full_not_damage(out: &Output, what: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{what}: {err}");
    assert!(err.contains("disk full"), "{what}: {err}");
    for bad in ["damaged", "rebuild", "Custom {", "StorageFull"] {
        assert!(!err.contains(bad), "{what} says {bad:?}: {err}");
    }
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{what}: one error line, got {err}");
    assert!(errors[0].contains("disk full"), "{what}: {err}");
}

#[test]
fn a_full_disk_at_any_write_point_of_an_update_costs_only_that_update() {
    for point in [
        "store.rows_written",
        "store.committed",
        "lexical.commit",
        "store.flush",
    ] {
        eprintln!("a full disk at {point}");
        let e = env();
        let fs = indexed_on_tmpfs(&e);
        let before = snapshot(&e.home);
        e.write(
            "d0/note0.md",
            "# Note 0\n\nzebra quartz zebra quartz\n\n## More\n\nnote number 0 rewritten\n",
        );
        let after = clean_reference(&e);
        assert_ne!(before.1, after.1, "the edit changed something");

        // The update stops at `point`; the disk fills up; the update goes on and fails.
        let fp = e.notes.with_file_name(format!("fp-{point}"));
        std::fs::create_dir_all(&fp).unwrap();
        let child = dochash(&e.home)
            .env("DOCHASH_FAILPOINTS", format!("{point}=pause"))
            .env("DOCHASH_FAILPOINT_DIR", &fp)
            .arg("index")
            .arg("--model")
            .arg(&e.model)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_until(&format!("the update to reach {point}"), || {
            fp.join(format!("{point}.paused")).exists()
        });
        fs.fill();
        std::fs::write(fp.join(format!("{point}.go")), b"").unwrap();
        let out = child.wait_with_output().unwrap();
        assert_disk_full_not_damage(&out, &format!("the update at {point}"));

        // While the disk is full, a reader either answers or says the disk is full.
        let q = dochash(&e.home)
            .args(["query", "--json", "apple"])
            .output()
            .unwrap();
        eprintln!(
            "query on the full disk: {:?} {}",
            q.status.code(),
            stderr(&q)
        );
        if q.status.code() == Some(2) {
            assert_disk_full_not_damage(&q, &format!("a query on the full disk ({point})"));
        }
        assert!(
            e.home.join("index/sled").exists(),
            "the index is still there"
        );

        // Space comes back: the index answers as before the update, or with the whole of the
        // one file it was changing; nothing was lost, nothing rebuilt.
        fs.free();
        let now = snapshot(&e.home);
        assert!(
            now == before || now == after,
            "after a full disk at {point}: {now:?}\nbefore: {before:?}\nafter: {after:?}"
        );
        let again = e.index(&[]);
        assert!(!stderr(&again).contains("rebuild"), "{}", stderr(&again));
        assert_eq!(
            snapshot(&e.home),
            after,
            "converged after a full disk at {point}"
        );
    }
}

#[test]
fn an_update_that_cannot_fit_stops_before_writing_and_says_how_much_it_needs() {
    let e = env();
    let fs = indexed_on_tmpfs(&e);
    let before = snapshot(&e.home);
    e.write("d0/note0.md", "# Note 0\n\nzebra quartz\n");
    fs.fill();
    fs.free();
    // Leave a little room: less than any update needs.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(fs.dir.join("filler")).unwrap();
        // Enough to open the index (4 MiB and twice sled's snapshot), not to update it.
        let keep = 6 << 20;
        let block = vec![0u8; 64 * 1024];
        while fs.available() > keep + block.len() as u64 {
            f.write_all(&block).unwrap();
        }
        f.sync_all().unwrap();
    }
    let out = dochash(&e.home)
        .arg("index")
        .arg("--model")
        .arg(&e.model)
        .output()
        .unwrap();
    assert_disk_full_not_damage(&out, "an update that does not fit");
    let err = stderr(&out);
    assert!(
        err.contains("needs about") && err.contains("is free") && err.contains("MiB"),
        "{err}"
    );
    // Nothing was touched: the database is still marked clean.
    assert!(e.home.join("index/sled.clean").exists(), "{err}");
    fs.free();
    assert_eq!(snapshot(&e.home), before);
    e.index(&[]);
    assert_eq!(snapshot(&e.home), clean_reference(&e));
}

fn lexical_paths(home: &Path, words: &str) -> Vec<String> {
    let out = dochash(home)
        .args(["query", "--json", "--mode", "lexical", words])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(2), "{}", stderr(&out));
    common::stdout(&out)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["path"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn a_running_owner_rides_out_a_full_disk_and_catches_up_by_itself() {
    // Full before the file's change is written (the usual case: the room check refuses it),
    // and full in the moment between that check and the write.
    for point in ["store.replacing", "store.rows_written"] {
        eprintln!("a full disk at {point}");
        let e = env();
        let fs = indexed_on_tmpfs(&e);
        let fp = e.notes.with_file_name("fp");
        std::fs::create_dir_all(&fp).unwrap();
        // The index is up to date, so the owner writes nothing until a note changes.
        let _owner = failpoint_owner(
            &e.home,
            &e.model,
            &fp,
            &format!("{point}=pause,engine.reopening=pause,search.waits=pause"),
            &[],
        );
        wait_until("the owner", || {
            status(&e.home).is_some_and(|s| s["owner"] == true && s["job"].is_null())
        });
        let note0 = e.notes.join("d0/note0.md");
        let old = lexical_paths(&e.home, "banana");
        assert!(old.iter().any(|p| Path::new(p) == note0), "{old:?}");

        e.write("d0/note0.md", "# Note 0\n\nzebra quartz zebra quartz\n");
        wait_until("the update to reach the write point", || {
            fp.join(format!("{point}.paused")).exists()
        });
        fs.fill();
        std::fs::write(fp.join(format!("{point}.go")), b"").unwrap();
        wait_until("the owner to say the disk is full", || {
            status(&e.home).is_some_and(|s| s["notes"].to_string().contains("disk full"))
        });
        let s = status(&e.home).unwrap();
        assert!(!s["notes"].to_string().contains("damaged"), "{s}");
        // Queries go on from what was indexed. Refused before it wrote, the change left the
        // note's old text; caught in the moment after the check, only that one note may show
        // its new text early. Every other note answers as before.
        let during = lexical_paths(&e.home, "banana");
        if point == "store.replacing" {
            assert_eq!(during, old);
        } else {
            let others: Vec<&String> = old.iter().filter(|p| Path::new(p) != note0).collect();
            let during_others: Vec<&String> =
                during.iter().filter(|p| Path::new(p) != note0).collect();
            assert_eq!(during_others, others);
        }

        // Room again: without a restart, the owner reopens the index and indexes the note. A
        // query that comes while it reopens waits for it, rather than failing.
        fs.free();
        wait_until("the owner to reopen the index", || {
            fp.join("engine.reopening.paused").exists()
        });
        let asking = dochash(&e.home)
            .args(["query", "--json", "--mode", "lexical", "banana"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_until("the query to find the index closed", || {
            fp.join("search.waits.paused").exists()
        });
        std::fs::write(fp.join("search.waits.go"), b"").unwrap();
        std::fs::write(fp.join("engine.reopening.go"), b"").unwrap();
        let out = asking.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(!common::stdout(&out).trim().is_empty(), "{}", stderr(&out));
        wait_until("the owner to index the saved note", || {
            lexical_paths(&e.home, "zebra quartz")
                .iter()
                .any(|p| Path::new(p) == note0)
        });
        assert!(
            !lexical_paths(&e.home, "banana")
                .iter()
                .any(|p| Path::new(p) == note0),
            "the old text is gone"
        );
        let s = status(&e.home).unwrap();
        assert!(!s["notes"].to_string().contains("damaged"), "{s}");
        assert_eq!(s["files"], 20, "{s}");
    }
}
