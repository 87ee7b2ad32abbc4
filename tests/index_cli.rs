//! `dochash index`, `query` and `status` driven as a user would, on temporary folders.
//! The tiny random model is used where only the mechanics matter (its vectors still reflect
//! shared words); the real model where the answer must be semantically right.

mod common;

use std::path::Path;

use common::{dochash, env, stderr, stdout};
use serde_json::Value;

fn canon(p: &Path) -> String {
    std::fs::canonicalize(p).unwrap().display().to_string()
}

fn paths(hits: &[Value]) -> Vec<String> {
    hits.iter()
        .map(|h| h["path"].as_str().unwrap().to_string())
        .collect()
}

const FRUIT: &str = "# Fruit\n\napple banana cherry apple banana cherry\n";
const MUSIC: &str = "# Music\n\nguitar piano music guitar piano music\n";
const RIVER: &str = "# Nature\n\nriver ocean mountain forest river ocean\n";

#[test]
fn index_query_edit_delete_rename() {
    let e = env();
    let fruit = e.write("fruit.md", FRUIT);
    e.write("music.md", MUSIC);
    e.write("sub/nature.txt", RIVER);
    let out = e.index(&[e.notes.to_str().unwrap()]);
    assert!(stderr(&out).contains("3 embedded"), "{}", stderr(&out));

    let (code, hits) = e.query("guitar piano music", &[]);
    assert_eq!(code, Some(0));
    assert_eq!(paths(&hits)[0], canon(&e.notes.join("music.md")));
    let h = &hits[0];
    assert_eq!(h["line"], 3);
    assert!(h["text"].as_str().unwrap().contains("guitar"));
    assert!(h["cosine"].as_f64().unwrap() > 0.5);
    assert_eq!(h["headings"][0], "Music");

    let s = e.status();
    assert_eq!(s["files"], 3);
    assert_eq!(s["roots"][0], canon(&e.notes));
    // Linear codes are searched with the query's margins.
    assert!(s["filter"].as_str().unwrap().starts_with("weighted"), "{s}");

    // Unchanged re-run embeds nothing.
    let out = e.index(&[]);
    assert!(
        stderr(&out).contains("0 embedded, 3 unchanged"),
        "{}",
        stderr(&out)
    );

    // Edit: only that file is re-embedded and the new text is found.
    std::fs::write(&fruit, "# Fruit\n\nbread soup recipe bread soup recipe\n").unwrap();
    let out = e.index(&[]);
    assert!(
        stderr(&out).contains("1 embedded, 2 unchanged"),
        "{}",
        stderr(&out)
    );
    let (_, hits) = e.query("bread soup recipe", &[]);
    assert_eq!(paths(&hits)[0], canon(&fruit));
    assert!(hits[0]["text"].as_str().unwrap().contains("bread"));

    // Delete: gone from results.
    std::fs::remove_file(e.notes.join("music.md")).unwrap();
    e.index(&[]);
    let (_, hits) = e.query("guitar piano music", &["-k", "50"]);
    assert!(!paths(&hits).iter().any(|p| p.ends_with("music.md")));
    assert_eq!(e.status()["files"], 2);

    // Rename: old path gone, new path found.
    let renamed = e.notes.join("sub/renamed.md");
    std::fs::rename(e.notes.join("sub/nature.txt"), &renamed).unwrap();
    e.index(&[]);
    let (_, hits) = e.query("river ocean mountain", &["-k", "50"]);
    let p = paths(&hits);
    assert_eq!(p[0], canon(&renamed));
    assert!(!p.iter().any(|x| x.ends_with("nature.txt")));
}

#[test]
fn awkward_files_are_skipped_or_read_with_notes() {
    let e = env();
    e.write("good.md", MUSIC);
    std::fs::write(e.notes.join("binary.md"), b"\x00\x01\x02binary\x00data").unwrap();
    e.write("huge.md", &"apple ".repeat(200_000));
    std::fs::write(e.notes.join("latin1.md"), b"caf\xe9 river ocean caf\xe9\n").unwrap();
    e.write(".hidden/secret.md", "guitar secret");
    e.write("ignored/skip.md", "guitar ignored");
    e.write(".gitignore", "ignored/\n");
    e.write("image.png", "not a note");
    std::fs::create_dir_all(e.notes.join("empty")).unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&e.notes, e.notes.join("loop")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/target.md", e.notes.join("dangling.md")).unwrap();
    }
    let out = e.index(&[e.notes.to_str().unwrap(), "--max-file-size", "100000"]);
    let err = stderr(&out);
    assert!(err.contains("binary.md") && err.contains("binary"), "{err}");
    assert!(err.contains("huge.md") && err.contains("limit"), "{err}");
    assert!(err.contains("latin1.md") && err.contains("UTF-8"), "{err}");
    let s = e.status();
    assert_eq!(s["files"], 2, "good.md and latin1.md: {s}");
    let (_, hits) = e.query("river ocean", &[]);
    assert!(paths(&hits)[0].ends_with("latin1.md"));
    assert!(hits[0]["text"].as_str().unwrap().contains('\u{fffd}'));
    let (_, hits) = e.query("guitar", &["-k", "50"]);
    assert!(
        !paths(&hits)
            .iter()
            .any(|p| p.contains("secret") || p.contains("skip"))
    );
}

#[test]
fn empty_folder_and_no_results_exit_codes() {
    let e = env();
    let out = dochash(&e.home)
        .args(["query", "anything"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("dochash index"), "{}", stderr(&out));

    e.index(&[e.notes.to_str().unwrap()]);
    assert_eq!(e.status()["passages"], 0);
    let (code, hits) = e.query("anything", &[]);
    assert_eq!((code, hits.len()), (Some(1), 0));

    let out = dochash(&e.home)
        .args(["index", "--model"])
        .arg(&e.model)
        .arg(e.notes.join("does-not-exist"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("does-not-exist"), "{}", stderr(&out));
}

#[test]
fn removed_root_keeps_entries_until_forgotten() {
    let e = env();
    let other = e.notes.parent().unwrap().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("o.md"), RIVER).unwrap();
    e.write("m.md", MUSIC);
    e.index(&[e.notes.to_str().unwrap(), other.to_str().unwrap()]);
    assert_eq!(e.status()["files"], 2);
    let other_canon = canon(&other);
    std::fs::remove_dir_all(&other).unwrap();
    let out = e.index(&[]);
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    assert_eq!(e.status()["files"], 2);
    e.index(&["--forget", &other_canon]);
    assert_eq!(e.status()["files"], 1);
}

#[test]
fn grouping_and_k_limit_results() {
    let e = env();
    let long: String = (0..40)
        .map(|i| format!("## Part {i}\n\nguitar piano music number {i}\n\n"))
        .collect();
    e.write("long.md", &long);
    e.write("other.md", MUSIC);
    e.index(&[e.notes.to_str().unwrap()]);
    let (_, hits) = e.query("guitar piano music", &["-k", "5", "--group", "none"]);
    assert_eq!(hits.len(), 5);
    // Places: -k counts rows, each holding one passage or more (passages packed across a
    // heading share lines with their neighbours and fold with them).
    let (_, all) = e.query("guitar piano music", &["-k", "100", "--group", "none"]);
    let (_, hits) = e.query("guitar piano music", &["-k", "100"]);
    assert!(
        hits.len() < all.len(),
        "{} places of {} passages",
        hits.len(),
        all.len()
    );
    let held: usize = hits
        .iter()
        .map(|h| 1 + h.get("more").map_or(0, |m| m.as_array().unwrap().len()))
        .sum();
    assert_eq!(held, all.len());
    let (_, five) = e.query("guitar piano music", &["-k", "5"]);
    assert_eq!(five.len(), hits.len().min(5));
    for extra in [["--per-file"], ["--group=file"]] {
        let (_, hits) = e.query("guitar piano music", &extra);
        assert_eq!(hits.len(), 2);
    }
    for w in hits.windows(2) {
        assert!(w[0]["score"].as_f64() >= w[1]["score"].as_f64());
    }
}

#[test]
fn model_change_rebuilds_and_damage_is_repaired() {
    let e = env();
    e.write("m.md", MUSIC);
    e.index(&[e.notes.to_str().unwrap()]);

    // A different model: one line saying why, then a full rebuild keeping the roots.
    let other = e.notes.parent().unwrap().join("other-model");
    dochash::encoder::write_tiny_model(&other, 99).unwrap();
    let out = dochash(&e.home)
        .args(["index", "--model"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("rebuilding"), "{}", stderr(&out));
    assert_eq!(e.status()["files"], 1);

    // A damaged database: said in one line, rebuilt from the files.
    let db = e.home.join("index");
    for entry in std::fs::read_dir(&db).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::write(&p, b"garbage garbage garbage").unwrap();
        }
    }
    let out = e.index(&[]);
    let err = stderr(&out);
    assert!(
        err.contains("damaged") && err.contains("rebuilding"),
        "{err}"
    );
    assert_eq!(
        e.status()["files"],
        1,
        "the folder list survived the rebuild"
    );
    let (_, hits) = e.query("guitar piano", &[]);
    assert!(!hits.is_empty());
}

#[test]
fn an_index_of_another_version_says_how_to_rebuild_and_is_rebuilt() {
    let e = env();
    e.write("m.md", MUSIC);
    e.index(&[e.notes.to_str().unwrap()]);
    // The row files of the version before units (version 1).
    let codes = e.home.join("index").join("codes.bin");
    let mut c = std::fs::read(&codes).unwrap();
    c[8..12].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(&codes, c).unwrap();
    // A read-only command does not rebuild: one line saying what will.
    let out = dochash(&e.home).args(["query", "guitar"]).output().unwrap();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("another version") && err.contains("`dochash index`"),
        "{err}"
    );
    let out = e.index(&[]);
    assert!(stderr(&out).contains("rebuilding"), "{}", stderr(&out));
    let (_, hits) = e.query("guitar", &[]);
    assert!(!hits.is_empty());
}

#[test]
fn real_model_finds_the_semantically_right_note() {
    let e = env();
    e.write(
        "cooking.md",
        "# Sourdough\n\nFeed the starter the night before, then mix flour, water and salt. \
         Let the dough rise slowly and bake it in a hot Dutch oven.\n",
    );
    e.write(
        "car.md",
        "# Car maintenance\n\nChange the engine oil every ten thousand kilometres and check the \
         tyre pressure monthly.\n",
    );
    e.write(
        "rust.md",
        "# Ownership\n\nIn Rust every value has a single owner; when the owner goes out of scope \
         the value is dropped. Borrowing lets code use a value without taking ownership.\n",
    );
    let model = common::real_model();
    let out = dochash(&e.home)
        .arg("index")
        .arg("--model")
        .arg(&model)
        .arg(&e.notes)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for (q, want) in [
        ("how do I bake bread", "cooking.md"),
        ("when should I replace the motor oil", "car.md"),
        (
            "memory is freed when a variable leaves its scope",
            "rust.md",
        ),
    ] {
        let (code, hits) = e.query(q, &[]);
        assert_eq!(code, Some(0));
        assert!(paths(&hits)[0].ends_with(want), "{q}: {:?}", paths(&hits));
    }
}

#[test]
fn human_query_output_never_carries_escape_sequences() {
    let e = env();
    e.write(
        "hostile.md",
        "# Music\n\n\x1b]0;pwned title\x07guitar piano \x1b[2Jmusic \x1b[8mhidden\x1b[0m\u{202e}txt\n",
    );
    e.index(&[e.notes.to_str().unwrap()]);
    let out = dochash(&e.home)
        .args(["query", "guitar piano music"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("guitar piano"), "{text}");
    assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
    assert!(
        !text.contains("pwned") && !text.contains('\u{202e}'),
        "{text:?}"
    );
}

#[test]
fn odd_queries_get_a_sane_answer_or_one_line_error() {
    let e = env();
    e.write("music.md", MUSIC);
    e.write("fruit.md", FRUIT);
    e.index(&[e.notes.to_str().unwrap()]);
    // Empty, only stop words, an unbalanced quote, only a quote: answers, never a panic.
    for q in [
        "",
        "   ",
        "the of and a",
        "\"guitar piano",
        "\"",
        "\"\"",
        "apple \"banana",
    ] {
        let (code, hits) = e.query(q, &[]);
        assert!(code == Some(0) || code == Some(1), "{q:?}: exit {code:?}");
        assert!(hits.len() <= 10);
    }
    // A phrase filters: present as written...
    let (_, hits) = e.query("\"banana cherry\"", &[]);
    assert_eq!(paths(&hits), vec![canon(&e.notes.join("fruit.md"))]);
    assert!(hits.iter().all(|h| h.get("without_phrases").is_none()));
    // ...and where no passage holds it as written, the words rank alone and the hits say so.
    let (code, hits) = e.query("\"cherry banana apple\"", &[]);
    assert_eq!(code, Some(0));
    assert!(!hits.is_empty());
    assert!(
        hits.iter().all(|h| h["without_phrases"] == true),
        "{hits:?}"
    );
    let out = dochash(&e.home)
        .args(["query", "\"cherry banana apple\""])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no passage holds the quoted words as written"),
        "{}",
        stderr(&out)
    );
    // 100 KB is refused in one line.
    let out = dochash(&e.home)
        .args(["query", &"word ".repeat(20_000)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    // Each search mode answers on its own.
    for mode in ["lexical", "semantic", "hybrid"] {
        let (code, hits) = e.query("guitar", &["--mode", mode]);
        assert_eq!(code, Some(0), "{mode}");
        // (The tiny random model's own ranking means nothing: the words decide the lexical
        // order; fused, the two sides weigh alike, so only the lexical rank is certain.)
        let h = hits
            .iter()
            .find(|h| h["path"].as_str().unwrap().ends_with("music.md"))
            .unwrap();
        if mode == "lexical" {
            assert!(paths(&hits)[0].ends_with("music.md"), "{mode}");
        }
        match mode {
            "lexical" => assert!(h["cosine"].is_null() && h["lexical_rank"] == 1),
            "semantic" => assert!(h["bm25"].is_null() && h["semantic_rank"].is_number()),
            _ => assert!(h["lexical_rank"] == 1 && h["cosine"].is_number()),
        }
    }
}

#[test]
fn commands_without_model_keep_the_model_the_index_was_built_for() {
    let e = env();
    e.write("m.md", MUSIC);
    e.index(&[e.notes.to_str().unwrap()]);
    let before = e.status();
    let model_id = before["model"].clone();
    assert!(model_id.as_str().unwrap().starts_with("local:"), "{before}");

    // `--offline`: the default model is never fetched; had it been chosen, this would fail.
    let run = |args: &[&str]| {
        let out = dochash(&e.home)
            .arg("--offline")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(!err.contains("rebuilding"), "{args:?}: {err}");
    };
    run(&["index"]);
    assert_eq!(e.status()["model"], model_id);

    // A home from before the choice was remembered: the index's own record is used.
    std::fs::remove_file(e.home.join("model.json")).unwrap();
    run(&["index"]);
    assert_eq!(e.status()["model"], model_id);
    assert!(e.home.join("model.json").is_file(), "remembered again");

    // The owner started without a model keeps it too, and answers queries.
    let mut watch = common::Owner(
        std::process::Command::new(common::bin("dochash"))
            .env("DOCHASH_HOME", &e.home)
            .env_remove("DOCHASH_MODEL")
            .args(["--offline", "watch", "--no-train"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    common::wait_until("the owner to answer", || {
        common::status(&e.home).is_some_and(|s| s["owner"] == true && s["job"].is_null())
            || watch.try_wait().unwrap().is_some()
    });
    assert!(watch.try_wait().unwrap().is_none(), "the owner exited");
    let s = e.status();
    assert_eq!(s["model"], model_id, "{s}");
    assert_eq!(s["files"], 1, "{s}");
    let (_, hits) = e.query("guitar piano", &[]);
    assert!(!hits.is_empty());
}

#[test]
fn precision_is_a_setting_of_the_index() {
    let e = env();
    e.write("m.md", MUSIC);
    e.index(&["--precision", "int8", e.notes.to_str().unwrap()]);
    assert_eq!(e.status()["precision"], "int8");
    // A query without --precision follows the index.
    let (code, hits) = e.query("guitar piano", &[]);
    assert_eq!(code, Some(0));
    assert!(!hits.is_empty());

    // Later updates keep it without being told, even after the database is lost.
    let out = e.index(&[]);
    assert!(!stderr(&out).contains("rebuilding"), "{}", stderr(&out));
    assert_eq!(e.status()["precision"], "int8");
    std::fs::remove_dir_all(e.home.join("index")).unwrap();
    e.index(&[e.notes.to_str().unwrap()]);
    assert_eq!(
        e.status()["precision"],
        "int8",
        "the setting outlived the index"
    );

    // Asking for the other precision on a query is an error that says why; on an update, a
    // rebuild that says why.
    let (code, hits) = e.query("guitar piano", &["--precision", "f32"]);
    assert_eq!(code, Some(2));
    assert!(hits.is_empty());
    let out = dochash(&e.home)
        .args(["query", "--precision", "f32", "guitar"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(err.contains("--precision int8, not f32"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let out = e.index(&["--precision", "f32"]);
    let err = stderr(&out);
    assert!(
        err.contains("--precision int8, not f32") && err.contains("rebuilding"),
        "{err}"
    );
    assert_eq!(e.status()["precision"], "f32");

    // The owner started without the option keeps the home's setting and says which it runs.
    e.index(&["--precision", "int8"]);
    let _owner = common::start_watch(&e.home, &e.model, &[]);
    let s = e.status();
    assert_eq!(s["owner"], true);
    assert!(s["device"].as_str().unwrap().contains("int8"), "{s}");
    let (_, hits) = e.query("guitar piano", &[]);
    assert!(!hits.is_empty());

    // Nonsense is a one-line error naming the option.
    let out = dochash(&e.home)
        .args(["query", "--precision", "int4", "guitar"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("int4"), "{}", stderr(&out));
}

#[test]
fn a_code_length_asked_for_is_kept_through_updates_and_rebuilds() {
    let e = env();
    e.write("m.md", MUSIC);
    e.write("p.md", "# Bread\n\nflour water salt yeast oven bread\n");
    e.index(&[e.notes.to_str().unwrap()]);
    assert_eq!(e.status()["bits"], 64, "the default for a small index");
    e.index(&["--bits", "32"]);
    assert_eq!(e.status()["bits"], 32);
    // A plain update keeps it, and so does a rebuild of a lost database.
    e.write(
        "n.md",
        "# Other\n\nriver ocean mountain river ocean mountain\n",
    );
    e.index(&[]);
    assert_eq!(e.status()["bits"], 32);
    std::fs::remove_dir_all(e.home.join("index")).unwrap();
    e.index(&[]);
    let s = e.status();
    assert_eq!(
        (s["bits"].clone(), s["files"].clone()),
        (32.into(), 3.into()),
        "{s}"
    );
}

#[test]
fn help_lists_what_users_use_and_the_research_tools_stay_reachable() {
    let home = tempfile::tempdir().unwrap();
    let out = dochash(home.path()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = stdout(&out);
    for cmd in [
        "index", "query", "status", "watch", "train", "embed", "model",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(cmd)),
            "{cmd}: {help}"
        );
    }
    for cmd in ["bench", "eval"] {
        assert!(
            !help.lines().any(|l| l.trim_start().starts_with(cmd)),
            "{cmd} is a developer's tool: {help}"
        );
    }
    for (cmd, sub) in [("bench", "recall"), ("eval", "retrieval")] {
        let out = dochash(home.path()).args([cmd, "--help"]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains(sub), "{}", stdout(&out));
    }
}

/// Notes that link to each other fit the fusion to their links, the same way every time (two
/// homes, the same notes); notes with too few links keep the default weight, and `index` and
/// `status` say so.
#[test]
fn the_fusion_is_fitted_to_the_notes_own_links_the_same_way_every_time() {
    let linked = |e: &common::Env| {
        // 120 links: the fit asks the half that training does not teach.
        for i in 0..120 {
            let next = (i * 7 + 3) % 120;
            e.write(
                &format!("topic-{i}.md"),
                &format!(
                    "# Topic {i}\n\nNotes on subject s{i} with the word w{i} and a little more.\n\n\
                     For the details of subject s{next} read [its own note](topic-{next}.md) first.\n"
                ),
            );
        }
    };
    let fitted = |e: &common::Env| {
        let out = e.index(&[e.notes.to_str().unwrap()]);
        assert!(stderr(&out).contains("fusion: "), "{}", stderr(&out));
        e.status()["fusion"].clone()
    };
    let (a, b) = (env(), env());
    linked(&a);
    linked(&b);
    let (fa, fb) = (fitted(&a), fitted(&b));
    let asked = fa["questions"][0][1].as_u64().unwrap_or_default();
    assert_eq!(fa["questions"][0][0], "link", "{fa}");
    assert!((40..=80).contains(&asked), "{fa}");
    assert_eq!(fa["curve"].as_array().map(Vec::len), Some(9), "{fa}");
    assert_eq!(fa, fb, "the same notes fitted differently");

    let small = env();
    small.write(
        "a.md",
        "# A\n\nSee [the b note](b.md) for the rest of it.\n",
    );
    small.write("b.md", "# B\n\nThe rest.\n");
    let f = fitted(&small);
    assert_eq!(f["adopted"], false, "{f}");
    assert_eq!(f["semantic_weight"].as_f64(), Some(0.4f32 as f64), "{f}");
    let out = dochash(&small.home).arg("status").output().unwrap();
    let line = stdout(&out)
        .lines()
        .find(|l| l.starts_with("fusion"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains("(the default): too few questions to fit (") && line.contains(", needs 40)"),
        "{line}"
    );
}
