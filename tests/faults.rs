//! Faults an adversarial tester found in the always-on owner and the one-shot commands (issue
//! "Nothing lost, nothing stuck"), each driven through the real binaries: a folder made again,
//! an index held by another process, files of headings alone, a lone word match, a socket that
//! leads to another user, more clients than work slots, an unreadable home or folder, a
//! termination signal, names that carry controls, result counts out of range, a home an older
//! version left open, and BM25 scores that depended on the order of updates.
//!
//! Where a test needs another user (a server of theirs, a folder they cannot read), it runs that
//! part as `nobody` (uid 65534), which needs root; CI runs as root. Without root it fails and
//! says so rather than skip.

// What a shared Unix machine does: other users' files and sockets, permissions, signals, FIFOs.
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    Env, Owner, bin, clean_reference, dochash, env, query, start_watch, status, stderr, stdout,
    wait_until,
};
use serde_json::Value;

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn require_root(what: &str) {
    assert!(
        is_root(),
        "{what} needs a second user, which needs root (CI runs as root)"
    );
}

/// Hands everything under `dir` (and `dir`) to `nobody`.
fn give_to_nobody(dir: &Path) {
    let out = Command::new("chown")
        .args(["-R", &format!("{NOBODY}:{NOBODY}")])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

fn as_nobody(mut c: Command) -> Command {
    c.uid(NOBODY).gid(NOBODY);
    c
}

fn paths_of(hits: &[Value]) -> Vec<String> {
    hits.iter()
        .map(|h| h["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn notes_of_headings_alone_and_cr_only_files_are_searchable() {
    let e = env();
    e.write(
        "todo.org",
        "* TODO renew passport\n* TODO call the plumber\n* DONE buy zebra food\n",
    );
    e.write("outline.md", "# Garden\n\n## Tomatoes\n\n## Quince trees\n");
    e.write(
        "titles.rst",
        "Xylophone tuning\n================\n\nMarimba care\n------------\n",
    );
    e.write("titles.adoc", "= Harpsichord\n\n== Clavichord voicing\n");
    e.write("one.md", "# Lonely kumquat\n");
    e.write(
        "mac.txt",
        "Old Mac note\rabout the quokka habitat\r\rsecond paragraph on wombats\r",
    );
    e.index(&[e.notes.to_str().unwrap()]);
    for (word, file) in [
        ("passport", "todo.org"),
        ("plumber", "todo.org"),
        ("zebra", "todo.org"),
        ("tomatoes", "outline.md"),
        ("quince", "outline.md"),
        ("xylophone", "titles.rst"),
        ("marimba", "titles.rst"),
        ("clavichord", "titles.adoc"),
        ("kumquat", "one.md"),
        ("quokka", "mac.txt"),
        ("wombats", "mac.txt"),
    ] {
        let (code, hits) = e.query(word, &["--mode", "lexical"]);
        assert_eq!(code, Some(0), "{word}");
        assert!(
            paths_of(&hits).iter().any(|p| p.ends_with(file)),
            "{word} → {file}: {hits:?}"
        );
    }
    // Lines of a CR-only file count as an editor counts them.
    let (_, hits) = e.query("wombats", &["--mode", "lexical"]);
    let mac = hits
        .iter()
        .find(|h| h["path"].as_str().unwrap().ends_with("mac.txt"))
        .unwrap();
    assert_eq!(mac["end_line"], 4, "{mac}");
    assert!(mac["text"].as_str().unwrap().contains("wombats"), "{mac}");
    // A note edited down to its title stays findable by it.
    e.write(
        "shrunk.md",
        "# Persimmon jam\n\nA recipe with many words in it.\n",
    );
    e.index(&[]);
    e.write("shrunk.md", "# Persimmon jam\n");
    e.index(&[]);
    let (_, hits) = e.query("persimmon", &["--mode", "lexical"]);
    assert!(
        paths_of(&hits).iter().any(|p| p.ends_with("shrunk.md")),
        "{hits:?}"
    );
}

#[test]
fn a_lone_word_match_keeps_fused_scores_sane() {
    let e = env();
    for i in 0..12 {
        e.write(
            &format!("n{i}.md"),
            &format!("# Note {i}\n\nplain words about gardens and rivers number {i}\n"),
        );
    }
    e.write("rare.md", "# Rare\n\nthe xyzzyplugh setting lives here\n");
    e.index(&[e.notes.to_str().unwrap()]);
    let (code, hits) = e.query("xyzzyplugh", &["-k", "13"]);
    assert_eq!(code, Some(0));
    assert!(hits.len() > 1, "{hits:?}");
    for h in &hits {
        let s = h["score"].as_f64().unwrap();
        assert!(s.abs() < 20.0, "a fused score out of range: {h}");
    }
    assert!(hits[0]["path"].as_str().unwrap().ends_with("rare.md"));
}

#[test]
fn result_counts_out_of_range_are_usage_errors() {
    let e = env();
    e.write("a.md", "# A\n\napple\n");
    e.index(&[e.notes.to_str().unwrap()]);
    for k in ["0", "10001"] {
        let out = dochash(&e.home)
            .args(["query", "-k", k, "apple"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "-k {k}: {}", stderr(&out));
        assert!(stderr(&out).contains("10000"), "-k {k}: {}", stderr(&out));
        assert!(stdout(&out).is_empty());
    }
    let out = dochash(&e.home)
        .args(["query", "-k", "10000", "apple"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn names_with_controls_are_shown_escaped_not_shortened() {
    let e = env();
    e.write("new\nline.md", "# One\n\nquetzal feathers\n");
    e.write("esc\x1b[31mred.md", "# Two\n\nquetzal nests\n");
    e.write("newline.md", "# Three\n\nsomething else\n");
    e.index(&[e.notes.to_str().unwrap()]);
    let out = dochash(&e.home)
        .args(["query", "--mode", "lexical", "quetzal"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("new\\nline.md"), "{text}");
    assert!(text.contains("esc\\x1b[31mred.md"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "a raw escape reached the terminal: {text:?}"
    );
    // The real `newline.md` is not what either name shows as.
    assert!(!text.contains("/newline.md"), "{text}");
}

#[test]
fn any_command_narrows_a_home_an_older_version_left_open() {
    let e = env();
    e.write("a.md", "# A\n\napple\n");
    e.index(&[e.notes.to_str().unwrap()]);
    // What an older version left: folders 0755, files 0644, everywhere.
    let out = Command::new("chmod")
        .args(["-R", "go+rX"])
        .arg(&e.home)
        .output()
        .unwrap();
    assert!(out.status.success());
    let open = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o077 != 0;
    assert!(open(&e.home.join("index/sled")));
    // A read-only command.
    let out = dochash(&e.home).args(["status"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut stack = vec![e.home.clone()];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        assert!(!open(&d), "{} is still open", d.display());
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let m = entry.metadata().unwrap();
            if m.is_dir() {
                stack.push(entry.path());
            } else if m.is_file() {
                seen += 1;
                assert!(
                    !open(&entry.path()),
                    "{} is still open",
                    entry.path().display()
                );
            }
        }
    }
    assert!(seen > 5, "the index's files were looked at");
}

#[test]
fn lexical_scores_do_not_depend_on_the_order_of_updates() {
    let e = env();
    let text = |i: usize, round: usize| {
        format!(
            "# Note {i}\n\nriver ocean boat {} harbour\n\nround {round} of edits with words {}\n",
            "sail ".repeat(1 + (i + round) % 4),
            "anchor ".repeat(1 + (i * round) % 3)
        )
    };
    for i in 0..80 {
        e.write(&format!("n{i}.md"), &text(i, 0));
    }
    e.index(&[e.notes.to_str().unwrap()]);
    // Twenty updates, each rewriting three of the first notes: their old passages stay in the
    // word index's first, large segment, which small commits are not merged with. The notes
    // are short (their lengths are recorded exactly), so the scores must agree exactly.
    for round in 1..=20 {
        for i in [round % 40, (round * 7) % 40, 40 + round % 3] {
            e.write(&format!("n{i}.md"), &text(i, round));
        }
        e.index(&[]);
    }
    let words = "sail anchor harbour round";
    let updated = common::lexical_hits(&e.home, words);
    assert!(updated.len() >= 80, "{updated:?}");
    clean_reference(&e);
    let clean = common::lexical_hits(&e.home.with_file_name("clean-home"), words);
    assert_eq!(updated, clean);
}

/// A `dochash watch` whose stderr lines arrive on a channel.
fn watch_with_lines(e: &Env) -> (Owner, std::sync::mpsc::Receiver<String>) {
    let mut c = Command::new(bin("dochash"));
    c.env("DOCHASH_HOME", &e.home)
        .env_remove("DOCHASH_MODEL")
        .env_remove("DOCHASH_PRECISION")
        .args(["watch", "--no-train", "--model"])
        .arg(&e.model)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Owner(child), rx)
}

#[test]
fn an_owner_started_while_another_process_holds_the_index_waits_then_serves() {
    let e = env();
    for i in 0..4 {
        e.write(
            &format!("n{i}.md"),
            &format!("# N{i}\n\napple banana {i}\n"),
        );
    }
    e.index(&[e.notes.to_str().unwrap()]);
    e.write("late.md", "# Late\n\nquince marmalade\n");
    // A one-shot update holds the index, stopped in the middle of its work.
    let fp = e.notes.with_file_name("fp");
    std::fs::create_dir_all(&fp).unwrap();
    let mut one_shot = dochash(&e.home)
        .env("DOCHASH_FAILPOINTS", "store.rows_written=pause")
        .env("DOCHASH_FAILPOINT_DIR", &fp)
        .arg("index")
        .arg("--model")
        .arg(&e.model)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the one-shot update to hold the index", || {
        fp.join("store.rows_written.paused").exists()
    });
    let (mut owner, lines) = watch_with_lines(&e);
    // The owner says it waits (it used to give up with "in use by another dochash process").
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(120))
            .expect("the owner to say something");
        assert!(!line.contains("error"), "{line}");
        if line.contains("waiting for the index") {
            break;
        }
    }
    assert!(owner.try_wait().unwrap().is_none(), "the owner gave up");
    std::fs::write(fp.join("store.rows_written.go"), b"").unwrap();
    assert!(one_shot.wait().unwrap().success());
    wait_until("the owner to serve", || {
        status(&e.home).is_some_and(|s| s["owner"] == true && s["files"] == 5)
    });
    assert!(
        paths_of(&query(&e.home, "quince marmalade", 5))
            .iter()
            .any(|p| p.ends_with("late.md"))
    );
}

#[test]
fn the_owner_indexes_at_the_lowest_priority() {
    // Indexing on the threads queries run on, at their priority, made a query wait 10× longer.
    let e = env();
    e.write("a.md", "# A\n\napple banana\n");
    let fp = e.notes.with_file_name("fp");
    std::fs::create_dir_all(&fp).unwrap();
    let owner = common::failpoint_owner(
        &e.home,
        &e.model,
        &fp,
        "store.rows_written=pause",
        &[&e.notes],
    );
    let paused = fp.join("store.rows_written.paused");
    // The file holds the paused thread's id once its write is done.
    let read = || std::fs::read_to_string(&paused).unwrap_or_default();
    wait_until("the owner's update to pause mid-write", || {
        !read().trim().is_empty()
    });
    let tid = read();
    let stat =
        std::fs::read_to_string(format!("/proc/{}/task/{}/stat", owner.id(), tid.trim())).unwrap();
    // Field 19 of the line is the nice value; fields are counted after the command's ")".
    let nice: i64 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(16)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(nice, 19, "the update ran on {stat}");
    std::fs::write(fp.join("store.rows_written.go"), b"").unwrap();
}

#[test]
fn a_watched_folder_deleted_and_made_again_is_watched_again() {
    let e = env();
    e.write("a.md", "# A\n\napple banana\n");
    e.index(&[e.notes.to_str().unwrap()]);
    let _owner = start_watch(&e.home, &e.model, &[]);
    // A re-clone: the folder goes away...
    std::fs::remove_dir_all(&e.notes).unwrap();
    wait_until("the owner to see the folder gone", || {
        status(&e.home).is_some_and(|s| s["notes"].to_string().contains("does not exist"))
    });
    // ...and comes back with new notes, which the owner indexes by itself.
    e.write("b.md", "# B\n\nzucchini fritters\n");
    wait_until("the new note in the re-made folder", || {
        paths_of(&query(&e.home, "zucchini fritters", 5))
            .iter()
            .any(|p| p.ends_with("b.md"))
    });
    // And later saves in it are seen too.
    e.write("c.md", "# C\n\nelderflower cordial\n");
    wait_until("a note saved after that", || {
        paths_of(&query(&e.home, "elderflower cordial", 5))
            .iter()
            .any(|p| p.ends_with("c.md"))
    });
    let s = status(&e.home).unwrap();
    assert!(!s["notes"].to_string().contains("does not exist"), "{s}");
}

#[test]
fn sigterm_stops_the_owner_cleanly() {
    let e = env();
    e.write("a.md", "# A\n\napple\n");
    let mut owner = start_watch(&e.home, &e.model, &[&e.notes]);
    assert!(e.home.join("owner.sock").exists());
    // SAFETY: kill with a valid pid of our own child.
    unsafe { libc::kill(owner.id() as i32, libc::SIGTERM) };
    let status = owner.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(!e.home.join("owner.sock").exists(), "the socket was left");
    // The index is whole and answers without its owner.
    let out = dochash(&e.home).args(["query", "apple"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// Long polls and queries as a second UI and other terminals send them.
fn raw_request(home: &Path, line: &str) -> std::os::unix::net::UnixStream {
    let mut s = std::os::unix::net::UnixStream::connect(home.join("owner.sock")).unwrap();
    s.write_all(line.as_bytes()).unwrap();
    s.write_all(b"\n").unwrap();
    s
}

#[test]
fn many_clients_wait_their_turn_and_long_polls_never_lock_out_queries() {
    let e = env();
    for i in 0..5 {
        e.write(
            &format!("n{i}.md"),
            &format!("# N{i}\n\napple banana {i}\n"),
        );
    }
    let _owner = start_watch(&e.home, &e.model, &[&e.notes]);
    let changes = status(&e.home).unwrap()["changes"].as_u64().unwrap();
    // Sixteen followers wait for a change that does not come.
    let polls: Vec<_> = (0..16)
        .map(|_| {
            raw_request(
                &e.home,
                &format!(
                    r#"{{"v":{},"op":"status","changed_since":{changes},"wait_ms":30000}}"#,
                    dochash::app::socket::PROTOCOL_VERSION
                ),
            )
        })
        .collect();
    // A query is answered all the same, while they still wait.
    let out = dochash(&e.home).args(["query", "apple"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for mut p in polls {
        p.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 1];
        let r = p.read(&mut buf);
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a long poll was answered before its time: {r:?}"
        );
    }
    // Forty queries at once: each waits its turn, none is turned away.
    let runs: Vec<_> = (0..40)
        .map(|_| {
            dochash(&e.home)
                .args(["query", "apple", "-k", "3"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for r in runs {
        let out = r.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    // A request for no results is refused through the socket too.
    let mut s = raw_request(
        &e.home,
        &format!(
            r#"{{"v":{},"op":"query","text":"apple","k":0}}"#,
            dochash::app::socket::PROTOCOL_VERSION
        ),
    );
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.contains("\"error\""), "{reply}");
}

/// A server of another user on `sock`, answering every request with a forged hit.
fn forged_server(sock: &Path) -> Owner {
    let script = r#"
import os, socket, sys
path = sys.argv[1]
os.setgid(65534); os.setuid(65534)
s = socket.socket(socket.AF_UNIX)
s.bind(path)
os.chmod(path, 0o777)
s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.recv(65536)
    c.sendall(b'{"v":3,"hits":[{"id":1,"path":"/forged.md","line":1,"end_line":1,"headings":[],"text":"FORGED","score":1.0,"cosine":null,"bm25":null,"semantic_rank":null,"lexical_rank":null,"distance":null}]}\n')
    c.close()
"#;
    let mut c = Command::new("python3")
        .args(["-c", script])
        .arg(sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    Owner(c)
}

#[test]
fn a_socket_that_leads_to_another_user_is_refused() {
    require_root("a server of another user");
    let e = env();
    e.write("a.md", "# A\n\napple\n");
    e.index(&[e.notes.to_str().unwrap()]);
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let theirs = shared.path().join("s");
    let _server = forged_server(&theirs);
    let mine = e.home.join("owner.sock");
    // A link planted where the socket goes...
    std::os::unix::fs::symlink(&theirs, &mine).unwrap();
    let refused = |what: &str| {
        let out = dochash(&e.home).args(["query", "apple"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{what}: {}", stdout(&out));
        assert!(!stdout(&out).contains("FORGED"), "{what}");
        assert!(
            stderr(&out).contains("dochash does not talk to it"),
            "{what}: {}",
            stderr(&out)
        );
    };
    refused("a link");
    // ...or a socket file of ours (a hard link, handed to us) whose server is theirs.
    std::fs::remove_file(&mine).unwrap();
    std::fs::hard_link(&theirs, &mine).unwrap();
    std::os::unix::fs::chown(&mine, Some(0), Some(0)).unwrap();
    refused("a socket of ours served by another user");
}

#[test]
fn an_unreadable_home_root_or_folder_is_said_and_nothing_is_dropped() {
    require_root("a user who cannot read what another can");
    let e = env();
    for i in 0..3 {
        e.write(&format!("top{i}.md"), &format!("# Top {i}\n\napple {i}\n"));
        e.write(
            &format!("sub/deep{i}.md"),
            &format!("# Deep {i}\n\nbanana {i}\n"),
        );
    }
    // Everything belongs to nobody, who runs the commands.
    let tmp = e.home.parent().unwrap().to_path_buf();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    give_to_nobody(&tmp);
    let run = |args: &[&str]| {
        let mut c = as_nobody(dochash(&e.home));
        c.args(args).arg("--model").arg(&e.model);
        c.output().unwrap()
    };
    let out = run(&["index", e.notes.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let files =
        |out: &std::process::Output| -> Value { serde_json::from_str(stdout(out).trim()).unwrap() };
    assert_eq!(files(&run(&["status", "--json"]))["files"], 6);

    // A folder inside the notes that cannot be read: its files are kept, and that is said.
    let sub = e.notes.join("sub");
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = run(&["index"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("cannot read it") && err.contains("3 indexed files are kept"),
        "{err}"
    );
    assert_eq!(files(&run(&["status", "--json"]))["files"], 6);

    // The whole folder unreadable: not "empty", and kept.
    std::fs::set_permissions(&e.notes, std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = run(&["index"]);
    let err = stderr(&out);
    assert!(err.contains("permission denied"), "{err}");
    assert!(!err.contains("empty"), "{err}");
    assert_eq!(files(&run(&["status", "--json"]))["files"], 6);
    std::fs::set_permissions(&e.notes, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();

    // Another user's home: not "nothing is indexed yet".
    let home_of_root: PathBuf = e.home.clone();
    Command::new("chown")
        .args(["-R", "0:0"])
        .arg(&home_of_root)
        .output()
        .unwrap();
    std::fs::set_permissions(&home_of_root, std::fs::Permissions::from_mode(0o700)).unwrap();
    for args in [&["query", "apple"][..], &["status"][..]] {
        let out = run(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("nothing is indexed"), "{args:?}: {err}");
        assert!(
            err.to_lowercase().contains("permission denied"),
            "{args:?}: {err}"
        );
    }
}

/// A note swapped for a FIFO between the moment it is found and the moment it is opened (a
/// failpoint holds the reader there) is refused as what it is by then; opening it must not wait
/// for a writer that never comes.
#[test]
fn a_note_swapped_for_a_fifo_as_it_is_opened_is_skipped_not_waited_on() {
    let e = common::env();
    let note = e.write("a.md", "# A\n\napple\n");
    let fp = e._tmp.path().join("fp");
    std::fs::create_dir_all(&fp).unwrap();
    let mut child = dochash(&e.home)
        .env("DOCHASH_FAILPOINTS", "read.opening=pause")
        .env("DOCHASH_FAILPOINT_DIR", &fp)
        .arg("index")
        .arg("--model")
        .arg(&e.model)
        .arg(&e.notes)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the reader to reach the open", || {
        fp.join("read.opening.paused").exists()
    });
    std::fs::remove_file(&note).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(&note)
            .status()
            .unwrap()
            .success()
    );
    std::fs::write(fp.join("read.opening.go"), "").unwrap();
    // A reader stuck on the FIFO never exits; a minute is ample for one file.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("dochash index is stuck opening the FIFO");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
}
