//! What `dochash query` returns, as a user reads it: filters (as words and as flags, one-shot and
//! through a running owner), places folded into one result, and the lines that matched.

mod common;

use std::path::Path;

use common::{dochash, env, start_watch, stderr, stdout};
use serde_json::Value;

fn names(hits: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = hits
        .iter()
        .map(|h| {
            Path::new(h["path"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Notes that differ by folder, extension, tags and date, all about music.
fn notes(e: &common::Env) {
    e.write(
        "work/standup.md",
        "---\ntags: [meeting, team/alpha]\ndate: 2024-03-05\n---\n# Standup\n\nguitar piano music plans\n",
    );
    e.write(
        "work/review.md",
        "+++\ndate = 2023-01-10\ntags = [\"review\"]\n+++\n# Review\n\nguitar piano music review\n",
    );
    e.write(
        "home/diary.txt",
        "Diary\n\nguitar piano music at home #draft\n",
    );
    e.write(
        "home/old.md",
        "---\ndate: 2019-06-01\n---\n# Old\n\nguitar piano music, old times\n",
    );
}

/// Every filter key, good values, through `dochash query` (`via` is "one-shot" or "owner").
fn check_filters(e: &common::Env, via: &str) {
    let q = |text: &str, extra: &[&str]| {
        let (code, hits) = e.query(text, extra);
        assert_eq!(code, Some(0), "{via}: {text} {extra:?} found nothing");
        names(&hits)
    };
    let all = ["diary.txt", "old.md", "review.md", "standup.md"];
    assert_eq!(q("guitar piano", &[]), all, "{via}");
    assert_eq!(q("guitar piano tag:meeting", &[]), ["standup.md"], "{via}");
    assert_eq!(
        q("guitar piano tag:team", &[]),
        ["standup.md"],
        "{via}: nested tag"
    );
    assert_eq!(
        q("guitar piano", &["--tag", "meeting"]),
        ["standup.md"],
        "{via}"
    );
    assert_eq!(
        q("guitar piano tag:draft", &[]),
        ["diary.txt"],
        "{via}: inline tag"
    );
    assert_eq!(
        q("guitar piano -tag:meeting -tag:draft", &[]),
        ["old.md", "review.md"],
        "{via}"
    );
    assert_eq!(q("guitar piano ext:txt", &[]), ["diary.txt"], "{via}");
    assert_eq!(
        q("guitar piano path:work", &[]),
        ["review.md", "standup.md"],
        "{via}"
    );
    assert_eq!(
        q("guitar piano", &["--not-path", "work"]),
        ["diary.txt", "old.md"],
        "{via}"
    );
    assert_eq!(q("guitar piano path:*.txt", &[]), ["diary.txt"], "{via}");
    assert_eq!(q("guitar piano in:notes", &[]), all, "{via}");
    // Front matter dates (the files themselves are new).
    assert_eq!(
        q("guitar piano before:2024", &[]),
        ["old.md", "review.md"],
        "{via}"
    );
    assert_eq!(
        q("guitar piano after:2024-03-05 before:2024-03-06", &[]),
        ["standup.md"],
        "{via}"
    );
    assert_eq!(
        q("guitar piano", &["--after", "2023", "--before", "2024"]),
        ["review.md"],
        "{via}"
    );
    // Filters alone: the notes they keep, newest first.
    let (_, hits) = e.query("path:work", &[]);
    assert_eq!(hits.len(), 2, "{via}");
    assert!(
        hits[0]["path"].as_str().unwrap().ends_with("standup.md"),
        "{via}"
    );
    // Malformed values: one line naming the filter, exit 2.
    for (text, flag, want) in [
        ("music after:soon", None, "filter after:soon: not a date"),
        (
            "music in:nowhere",
            None,
            "no indexed folder of that name (they are: notes)",
        ),
        ("music path:../..", None, "outside the indexed folders"),
        (
            "music",
            Some(["--before", "2024-13"]),
            "filter before:2024-13: not a date",
        ),
    ] {
        let mut cmd = dochash(&e.home);
        cmd.args(["query", text]);
        if let Some(f) = flag {
            cmd.args(f);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{via}: {text}");
        let err = stderr(&out);
        assert!(err.contains(want), "{via}: {text}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{via}: {err}");
    }
}

#[test]
fn filters_narrow_a_query_one_shot_and_through_the_owner() {
    let e = env();
    notes(&e);
    e.index(&[e.notes.to_str().unwrap()]);
    check_filters(&e, "one-shot");
    let _owner = start_watch(&e.home, &e.model, &[]);
    check_filters(&e, "owner");
}

#[test]
fn neighbouring_passages_fold_into_a_place_that_opens_at_what_matched() {
    let e = env();
    // One long section: overlapping passages, each matched on units; the words asked for are
    // on one line near its end.
    let mut long = String::from("# Guide\n\n");
    for i in 0..120 {
        long.push_str(&format!(
            "Line {i} of ordinary filler prose about nothing much.\n"
        ));
    }
    long.push_str("The zebra quokka migration happens here.\n");
    for i in 0..20 {
        long.push_str(&format!("Closing line {i} of filler.\n"));
    }
    e.write("guide.md", &long);
    e.write("other.md", "# Other\n\nzebra quokka elsewhere\n");
    e.index(&[e.notes.to_str().unwrap()]);
    let target = long.lines().position(|l| l.contains("zebra")).unwrap() as u64 + 1;

    let (_, none) = e.query("filler prose line", &["--group", "none", "-k", "500"]);
    let (_, places) = e.query("filler prose line", &["-k", "50"]);
    let guide = |hits: &[Value]| {
        hits.iter()
            .filter(|h| h["path"].as_str().unwrap().ends_with("guide.md"))
            .count()
    };
    assert!(
        guide(&none) > 2,
        "the section has several passages: {}",
        guide(&none)
    );
    // Its passages fold into a few places (one section, at most 120 lines each), which
    // together hold every passage.
    assert!(
        guide(&places) < guide(&none) / 2,
        "{} places",
        guide(&places)
    );
    let held: usize = places
        .iter()
        .filter(|h| h["path"].as_str().unwrap().ends_with("guide.md"))
        .map(|h| 1 + h.get("more").map_or(0, |m| m.as_array().unwrap().len()))
        .sum();
    assert_eq!(held, guide(&none));
    let (_, files) = e.query("filler prose line", &["--group", "file"]);
    assert_eq!(files.len(), 2);

    // Lexical: the hit's snippet is the line with the words, marked, and it opens there.
    let (_, hits) = e.query("zebra quokka migration", &["--mode", "lexical"]);
    let h = hits
        .iter()
        .find(|h| h["path"].as_str().unwrap().ends_with("guide.md"))
        .unwrap();
    assert_eq!(h["snippet"]["line"], target, "{h}");
    let text = h["snippet"]["text"].as_str().unwrap();
    assert!(text.starts_with("The zebra quokka migration"), "{text}");
    let marks: Vec<&str> = h["snippet"]["marks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &text[m[0].as_u64().unwrap() as usize..m[1].as_u64().unwrap() as usize])
        .collect();
    assert_eq!(marks, ["zebra", "quokka", "migration"]);
    assert!(h["matched_lines"][0].as_u64().unwrap() <= target);
    assert!(h["matched_lines"][1].as_u64().unwrap() >= target);
    // Hybrid: what matched holds the line with the words; the unit is smaller than the passage.
    let (_, hits) = e.query("zebra quokka migration", &[]);
    let h = hits
        .iter()
        .find(|h| h["path"].as_str().unwrap().ends_with("guide.md"))
        .unwrap();
    let (a, b) = (
        h["matched_lines"][0].as_u64().unwrap(),
        h["matched_lines"][1].as_u64().unwrap(),
    );
    assert!(a <= target && target <= b, "{h}");
    assert!(
        b - a < h["end_line"].as_u64().unwrap() - h["line"].as_u64().unwrap(),
        "{h}"
    );
    assert_eq!(h["snippet"]["line"], target, "{h}");

    // The plain output: the result's line is the match's, its snippet under it; -C widens it.
    let out = dochash(&e.home)
        .args(["query", "zebra quokka migration", "--mode", "lexical"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(text.contains(&format!("guide.md:{target} ")), "{text}");
    let shown = |extra: &[&str]| {
        let out = dochash(&e.home)
            .args([
                "query",
                "zebra quokka migration path:guide.md",
                "--mode",
                "lexical",
            ])
            .args(extra)
            .output()
            .unwrap();
        stdout(&out).lines().skip(1).count()
    };
    assert!(
        shown(&["-C", "2"]) >= shown(&[]) + 2,
        "-C adds lines around the snippet"
    );
}

#[test]
fn the_plain_output_never_passes_a_control_character_through_a_snippet() {
    let e = env();
    e.write(
        "evil.md",
        "# Evil\n\nzebra \x1b]52;c;AAAA\x07 quokka \x1b[2J here\n",
    );
    e.index(&[e.notes.to_str().unwrap()]);
    let out = dochash(&e.home)
        .args(["query", "zebra quokka"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(text.contains("zebra"), "{text}");
    assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
}
