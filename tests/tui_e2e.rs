//! The real `dochash-tui`, driven in tmux as a person would: type, see results, write and
//! delete files while it runs, open a hit in $EDITOR, quit, and find the terminal usable.
//! Needs tmux (`.ci/run` installs it); without tmux this test fails rather than skips.
//!
//! Screens are polled until they show what is expected, with a generous deadline, so the test
//! does not depend on how fast the machine is.

// Driven through tmux.
#![cfg(unix)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn start(&self, shell_cmd: &str) {
        let st = self
            .cmd()
            .args([
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                "120",
                "-y",
                "36",
                "sh",
            ])
            .env("PS1", "$ ")
            .status()
            .expect("tmux must be installed to run the TUI test");
        assert!(st.success());
        self.keys(&[shell_cmd, "Enter"]);
    }

    fn keys(&self, keys: &[&str]) {
        let st = self
            .cmd()
            .args(["send-keys", "-t", "t"])
            .args(keys)
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn literal(&self, text: &str) {
        let st = self
            .cmd()
            .args(["send-keys", "-t", "t", "-l", text])
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-t", "t", "-p"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Replaces the query and waits until the results reflect it.
    fn search(&self, q: &str) {
        self.keys(&["C-u"]);
        self.literal(q);
        self.wait_for(&format!("query {q:?}"), |s| {
            s.lines().next().is_some_and(|l| l.contains(q))
        });
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

fn first_result_line(screen: &str) -> String {
    screen.lines().nth(1).unwrap_or("").to_string()
}

fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

#[test]
fn tui_searches_follows_files_opens_editor_and_restores_the_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let notes = tmp.path().join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    let model = common::real_model();
    std::fs::write(
        notes.join("music.md"),
        "# Music\n\nintro line\n\nguitar piano music guitar piano\n",
    )
    .unwrap();
    std::fs::write(notes.join("fruit.md"), "# Fruit\n\napple banana cherry\n").unwrap();
    let editor_log = tmp.path().join("editor-args");
    let editor = tmp.path().join("editor.sh");
    std::fs::write(
        &editor,
        format!("#!/bin/sh\necho \"$@\" > {}\n", sh_quote(&editor_log)),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    let tmux = Tmux {
        socket: format!("dochash-test-{}", std::process::id()),
    };
    let bin: PathBuf = common::bin("dochash-tui");
    tmux.start(&format!(
        "env DOCHASH_HOME={} EDITOR={} NO_COLOR=1 {} --model {} {}",
        sh_quote(&home),
        sh_quote(&editor),
        sh_quote(&bin),
        sh_quote(&model),
        sh_quote(&notes)
    ));

    // Results appear for a typed query.
    tmux.wait_for("the index to be built", |s| s.contains("2 files"));
    tmux.search("guitar piano music");
    let s = tmux.wait_for("music.md on top", |s| {
        first_result_line(s).contains("music.md")
    });
    assert!(
        s.contains("guitar piano"),
        "preview shows the passage:\n{s}"
    );

    // A file written after start becomes findable.
    std::fs::write(
        notes.join("sail.md"),
        "# Sailing\n\nriver ocean boats river ocean\n",
    )
    .unwrap();
    tmux.wait_for("the new file to be indexed", |s| s.contains("3 files"));
    tmux.search("river ocean boats");
    tmux.wait_for("sail.md on top", |s| {
        first_result_line(s).contains("sail.md")
    });

    // A deleted one disappears.
    std::fs::remove_file(notes.join("fruit.md")).unwrap();
    tmux.wait_for("the deletion to be indexed", |s| s.contains("2 files"));
    tmux.search("apple banana cherry");
    let s = tmux.wait_for("results without fruit.md", |s| {
        s.lines().nth(1).is_some_and(|l| !l.trim().is_empty()) && !s.contains("fruit.md")
    });
    assert!(!s.contains("fruit.md"));

    // Enter opens $EDITOR at the matched line.
    tmux.search("guitar piano music");
    tmux.wait_for("music.md on top", |s| {
        first_result_line(s).contains("music.md")
    });
    tmux.keys(&["Enter"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !editor_log.exists() {
        assert!(Instant::now() < deadline, "the editor was not started");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(200));
    let args = std::fs::read_to_string(&editor_log).unwrap();
    let music = std::fs::canonicalize(notes.join("music.md")).unwrap();
    // The passage spans the section body, lines 3-5; the editor jumps to the line that
    // matched (the query's words are on line 5, not on the passage's first).
    assert_eq!(args.trim(), format!("+5 {}", music.display()));
    // Back in the UI after the editor exits.
    tmux.wait_for("the UI to come back", |s| s.contains("music.md"));

    // Quit: the shell gets a sane terminal back (canonical mode, echo on).
    tmux.keys(&["Escape"]);
    tmux.keys(&[
        "stty -a | tr ' ;' '\\n\\n' | grep -E '^-?(icanon|echo)$' | tr '\\n' ' '; echo END-$((40+2))",
        "Enter",
    ]);
    let s = tmux.wait_for("the shell to run a command", |s| s.contains("END-42"));
    let line = s
        .lines()
        .find(|l| l.contains("END-42") && !l.contains("$(("))
        .unwrap_or("");
    assert!(line.contains("icanon") && !line.contains("-icanon"), "{s}");
    assert!(line.contains("echo") && !line.contains("-echo"), "{s}");
}

/// A terminal that goes away (its window closed, the ssh connection dropped) ends the UI: it
/// used to spin on the dead terminal at full CPU for ever, holding the index as its owner.
#[test]
fn a_closed_terminal_ends_the_ui() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let notes = tmp.path().join("notes-hangup");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join("a.md"), "# A\n\nsome words\n").unwrap();
    let model = common::tiny_model(tmp.path());
    let tmux = Tmux {
        socket: format!("dochash-hangup-{}", std::process::id()),
    };
    tmux.start(&format!(
        "env DOCHASH_HOME={} NO_COLOR=1 {} --model {} {}",
        sh_quote(&home),
        sh_quote(&common::bin("dochash-tui")),
        sh_quote(&model),
        sh_quote(&notes)
    ));
    tmux.wait_for("the index to be built", |s| s.contains("1 passage"));
    let out = Command::new("pgrep")
        .args(["-f", &notes.display().to_string()])
        .output()
        .unwrap();
    let pids: Vec<i32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(pids.len(), 1, "the UI's process: {pids:?}");
    let pid = pids[0];
    let alive = || {
        Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    };
    // The terminal goes away.
    let _ = tmux.cmd().arg("kill-server").status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let survived = alive();
    if survived {
        // Leave nothing spinning behind a failed test.
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    assert!(!survived, "dochash-tui outlived its terminal");
}
