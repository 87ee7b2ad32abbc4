//! Documents that are not plain text, as a user's folder holds them: PDFs made with groff,
//! ghostscript, qpdf and reportlab (tests/fixtures/documents/make.sh), and a page of installed
//! HTML documentation, indexed and searched through the real binary.

mod common;

use std::path::Path;

use common::{dochash, env, stderr, stdout};
use serde_json::Value;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/documents")
        .join(name)
}

fn copy_in(e: &common::Env, names: &[&str]) {
    for n in names {
        std::fs::copy(fixture(n), e.notes.join(n)).unwrap();
    }
}

fn file_name(h: &Value) -> String {
    Path::new(h["path"].as_str().unwrap())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn top(e: &common::Env, words: &str) -> Value {
    let (code, hits) = e.query(words, &["--mode", "lexical"]);
    assert_eq!(code, Some(0), "{words}: nothing found");
    hits.into_iter().next().unwrap()
}

#[test]
fn pdfs_and_web_pages_are_searched_by_page_and_line() {
    let e = env();
    copy_in(
        &e,
        &[
            "hyphenated.pdf",
            "two-columns.pdf",
            "non-latin.pdf",
            "libffi-the-basics.html",
        ],
    );
    e.write("plain.md", "# Plain\n\nA note about gardening tools.\n");
    let out = e.index(&[e.notes.to_str().unwrap()]);
    assert_eq!(e.status()["files"], 5, "{}", stderr(&out));

    // A word the PDF hyphenated at a line end is found whole, on its page.
    let h = top(&e, "cluster condensation");
    assert_eq!(file_name(&h), "hyphenated.pdf");
    assert_eq!(h["page"], 1);
    let h = top(&e, "queen laying robbing");
    assert_eq!(file_name(&h), "hyphenated.pdf");
    assert_eq!(h["page"], 2, "{h}");
    // The running page number is not text.
    let (_, hits) = e.query("2", &["--mode", "lexical"]);
    assert!(
        hits.iter().all(|h| file_name(h) != "hyphenated.pdf"),
        "{hits:?}"
    );

    // Non-Latin text, second page.
    let h = top(&e, "борща свёклой");
    assert_eq!(file_name(&h), "non-latin.pdf");
    assert_eq!(h["page"], 2);
    let h = top(&e, "Σαμαριάς");
    assert_eq!(h["page"], 1);

    // The web page: visible text, at its line in the source, under its heading.
    let h = top(&e, "ffi_prep_cif_var variadic");
    assert_eq!(file_name(&h), "libffi-the-basics.html");
    assert!(h.get("page").is_none(), "{h}");
    let src = std::fs::read_to_string(fixture("libffi-the-basics.html")).unwrap();
    let line = h["snippet"]["line"].as_u64().unwrap() as usize;
    let snippet = h["snippet"]["text"].as_str().unwrap();
    let first = snippet.lines().next().unwrap();
    let word = first.split_whitespace().last().unwrap();
    assert!(
        src.lines().nth(line - 1).unwrap().contains(word),
        "line {line} of the source holds {word:?} of {first:?}"
    );
    assert!(!snippet.contains("<code>"), "{snippet}");
    let trail: Vec<&str> = h["headings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(trail.contains(&"2.1 The Basics"), "{trail:?}");
    // Scripts and styles are not searched.
    let (code, _) = e.query("copiable", &["--mode", "lexical"]);
    assert_eq!(code, Some(1), "the page's style sheet is not text");

    // People read `p. N` for a PDF, `:LINE` for the rest.
    let out = dochash(&e.home)
        .args(["query", "--mode", "lexical", "queen laying robbing"])
        .output()
        .unwrap();
    let first = stdout(&out).lines().next().unwrap_or("").to_string();
    assert!(first.contains("hyphenated.pdf p. 2"), "{first}");
}

#[test]
fn unreadable_pdfs_are_one_line_each_and_the_rest_is_indexed() {
    let e = env();
    copy_in(
        &e,
        &[
            "encrypted.pdf",
            "image-only.pdf",
            "damaged.pdf",
            "hyphenated.pdf",
        ],
    );
    let out = e.index(&[e.notes.to_str().unwrap()]);
    let err = stderr(&out);
    let line = |name: &str| {
        let found: Vec<&str> = err.lines().filter(|l| l.contains(name)).collect();
        assert_eq!(found.len(), 1, "one line for {name}: {err}");
        found[0].to_string()
    };
    assert!(line("encrypted.pdf").contains("password"), "{err}");
    assert!(line("image-only.pdf").contains("no text layer"), "{err}");
    assert!(line("damaged.pdf").contains("damaged"), "{err}");
    assert_eq!(e.status()["files"], 1, "{err}");
    assert_eq!(file_name(&top(&e, "beekeepers")), "hyphenated.pdf");
}

/// A PDF that makes the reader hang (a failpoint holds the helper process mid-read) is given
/// up after its time and said; the update finishes with everything else.
#[test]
fn a_pdf_that_stalls_its_reader_is_killed_and_skipped() {
    let e = env();
    copy_in(&e, &["hyphenated.pdf"]);
    e.write("note.md", "# Note\n\nbeekeepers and honey\n");
    let fp = tempfile::tempdir().unwrap();
    let out = dochash(&e.home)
        .args(["index", "--model"])
        .arg(&e.model)
        .arg(&e.notes)
        .env("DOCHASH_FAILPOINTS", "document.reading=pause")
        .env("DOCHASH_FAILPOINT_DIR", fp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        fp.path().join("document.reading.paused").exists(),
        "the helper was stopped mid-read"
    );
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.contains("hyphenated.pdf") && l.contains("took longer than")),
        "{err}"
    );
    assert_eq!(e.status()["files"], 1);
}

/// A reader that crashes on a PDF takes only its helper down.
#[test]
fn a_pdf_that_crashes_its_reader_is_skipped() {
    let e = env();
    copy_in(&e, &["hyphenated.pdf"]);
    e.write("note.md", "# Note\n\nbeekeepers and honey\n");
    let out = dochash(&e.home)
        .args(["index", "--model"])
        .arg(&e.model)
        .arg(&e.notes)
        .env("DOCHASH_FAILPOINTS", "document.reading=abort")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.contains("hyphenated.pdf") && l.contains("the document reader failed")),
        "{err}"
    );
    assert_eq!(e.status()["files"], 1);
}

/// Word, OpenDocument and EPUB files made by pandoc from one text are found alike, under their
/// headings; none has pages.
#[test]
fn office_documents_and_e_books_are_searched() {
    let e = env();
    copy_in(
        &e,
        &["moss-garden.docx", "moss-garden.odt", "moss-garden.epub"],
    );
    e.index(&[e.notes.to_str().unwrap()]);
    assert_eq!(e.status()["files"], 3);
    let (code, hits) = e.query("mist patches weeks", &["--mode", "lexical"]);
    assert_eq!(code, Some(0));
    let mut names: Vec<String> = hits.iter().map(file_name).collect();
    names.sort();
    assert_eq!(
        names,
        ["moss-garden.docx", "moss-garden.epub", "moss-garden.odt"]
    );
    for h in &hits {
        let trail = h["headings"].to_string();
        assert!(trail.contains("Watering"), "{h}");
        assert!(h.get("page").is_none(), "{h}");
    }
}

/// A vault as note apps write it: a note is found by its front matter title and by an alias,
/// under the title it gives itself; the front matter's other keys are not text.
#[test]
fn note_titles_aliases_and_properties_are_searched_as_titles() {
    let e = env();
    e.write(
        "obsidian.md",
        "---\ntitle: Sourdough starter care\naliases: [levain, mother dough]\ntags: [baking]\nsecret: zebra\n---\n\nFeed it flour and water every day.\n",
    );
    e.write(
        "logseq.md",
        "title:: Derailleur tuning\nalias:: gear adjustment\n\n- Turn the barrel adjuster a quarter turn.\n",
    );
    e.write(
        "roam.org",
        ":PROPERTIES:\n:ROAM_ALIASES: \"hive inspection\"\n:END:\n#+TITLE: Spring beekeeping\n\nLift the lid on a warm afternoon.\n",
    );
    e.index(&[e.notes.to_str().unwrap()]);
    for (words, file) in [
        ("levain", "obsidian.md"),
        ("mother dough", "obsidian.md"),
        ("gear adjustment", "logseq.md"),
        ("hive inspection", "roam.org"),
        ("baking", "obsidian.md"),
    ] {
        let h = top(&e, words);
        assert_eq!(file_name(&h), file, "{words}");
    }
    let h = top(&e, "flour water");
    assert_eq!(h["headings"][0], "Sourdough starter care", "{h}");
    let h = top(&e, "afternoon");
    assert_eq!(h["headings"][0], "Spring beekeeping", "{h}");
    let (code, _) = e.query("zebra", &["--mode", "lexical"]);
    assert_eq!(code, Some(1), "other front matter keys are not searched");
}
