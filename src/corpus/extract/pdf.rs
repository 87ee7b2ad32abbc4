//! The text layer of a PDF, page by page, in a process of its own.
//!
//! PDF readers meet files that make them loop, allocate without end or panic (a damaged font
//! table, a content stream of a billion operators). The owner runs all day and must never be
//! stopped by one file, so the binaries read each PDF in a child process of themselves (see
//! [`use_pdf_helper`]): it gets the bytes on stdin, a memory limit and a CPU limit, and is
//! killed when it takes longer than [`time_limit`]. A PDF that cannot be read is a
//! [`SkipReason::NoText`] note naming why. Without the helper (a library caller, unit tests)
//! the same reading runs in this process, guarded only against panics.
//!
//! The reader is `pdf-extract` (over `lopdf`): it keeps a two-column page in column order
//! and says why a file cannot be read (a password, a broken cross-reference table); its
//! comparison with `pdf_oxide` on 1,264 pages is in docs/BENCHMARKS.md. What it gives is made
//! readable here: line-end hyphenation undone, running headers and page numbers dropped, the
//! outline's entries made headings, pages separated by a [`PAGE_BREAK`] line.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::plain_line;
use crate::corpus::SkipReason;

/// A PDF's text marks where each page after the first begins with a line holding only this
/// character (form feed, the page break of plain text): a passage's page is one more than the
/// breaks before it (see [`page_of`]).
pub const PAGE_BREAK: char = '\u{c}';

/// The argument that makes a dochash binary the PDF helper.
const HELPER_ARG: &str = "__pdf-text";

/// Most memory the helper may map, in bytes: far above what a real PDF needs, far below what
/// would push the user's own programs into swap.
#[cfg(unix)]
const HELPER_MEMORY: u64 = 2 << 30;

static HELPER: OnceLock<PathBuf> = OnceLock::new();

/// Reads PDFs in a child process of this executable from now on. A binary that calls this
/// must call [`pdf_helper_main`] first thing in `main`.
pub fn use_pdf_helper() {
    if let Ok(exe) = std::env::current_exe() {
        let _ = HELPER.set(exe);
    }
}

/// When this process was started as the PDF helper, does the helper's work and returns the
/// exit code; otherwise returns `None` at once.
pub fn pdf_helper_main() -> Option<ExitCode> {
    let mut args = std::env::args_os();
    if args.nth(1).is_none_or(|a| a != HELPER_ARG) {
        return None;
    }
    let limit = args
        .next()
        .and_then(|a| a.to_str()?.parse::<u64>().ok())
        .unwrap_or(0);
    #[cfg(unix)]
    limit_self(limit);
    let mut bytes = Vec::new();
    if std::io::stdin()
        .lock()
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .is_err()
    {
        return Some(ExitCode::from(2));
    }
    crate::failpoint::hit("pdf.reading");
    let answer = read_pages(&bytes);
    let out = serde_json::to_vec(&answer).unwrap_or_default();
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(&out)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return Some(ExitCode::from(2));
    }
    Some(ExitCode::SUCCESS)
}

/// Caps the helper's own memory and CPU time, so that a file that makes the reader run away
/// ends the helper (the parent then says so) instead of the machine's memory or the user's day.
#[cfg(unix)]
fn limit_self(file_bytes: u64) {
    let set = |resource, value: u64| {
        let lim = libc::rlimit {
            rlim_cur: value as libc::rlim_t,
            rlim_max: value as libc::rlim_t,
        };
        // SAFETY: setrlimit reads a valid rlimit; failing leaves the limit as it was.
        unsafe { libc::setrlimit(resource, &lim) };
    };
    set(libc::RLIMIT_AS, HELPER_MEMORY);
    set(libc::RLIMIT_CPU, time_limit(file_bytes).as_secs() + 1);
}

/// How long one PDF may take to read: enough for a long manual on a slow machine (a 1,000-page
/// book reads in a few seconds), not enough for a stuck reader to hold up an update for long.
pub fn time_limit(file_bytes: u64) -> Duration {
    let mib = file_bytes / (1 << 20);
    Duration::from_secs((20 + mib).min(120))
}

/// What the helper answers: the pages' text and the outline, or why there is none.
#[derive(Debug, Serialize, Deserialize)]
enum Pages {
    Read {
        pages: Vec<String>,
        /// (level, 1-based page, title) of each outline entry.
        outline: Vec<(usize, u32, String)>,
    },
    Unreadable(String),
}

/// Reads every page's text. A page the reader fails on (or panics on) is empty, so the pages
/// after it keep their numbers.
fn read_pages(bytes: &[u8]) -> Pages {
    use pdf_extract::{Document, PlainTextOutput, output_doc_page};
    let loaded = std::panic::catch_unwind(|| Document::load_mem(bytes));
    let mut doc = match loaded {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return Pages::Unreadable(format!("damaged ({e})")),
        Err(_) => return Pages::Unreadable("damaged (the PDF reader failed on it)".into()),
    };
    if doc.is_encrypted() && doc.decrypt("").is_err() {
        return Pages::Unreadable("encrypted with a password".into());
    }
    let numbers: Vec<u32> = doc.get_pages().keys().copied().collect();
    let mut pages = Vec::with_capacity(numbers.len());
    for n in 1..=numbers.last().copied().unwrap_or(0) {
        let page = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut s = String::new();
            let ok = output_doc_page(&doc, &mut PlainTextOutput::new(&mut s), n).is_ok();
            if ok { s } else { String::new() }
        }));
        pages.push(page.unwrap_or_default());
    }
    let outline = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| outline(&doc)))
        .unwrap_or_default();
    Pages::Read { pages, outline }
}

/// Most outline entries read: a book's table of contents has hundreds, not millions.
const MAX_OUTLINE: usize = 10_000;

/// The outline (bookmarks) as (level from 0, page, title), in reading order. Its entries point
/// at pages directly, by a name in the catalog's `/Dests` (groff), or by a name in the
/// `/Names` tree (LaTeX); all three are followed. Entries are read at most once each, so a
/// cycle in a damaged file ends.
fn outline(doc: &pdf_extract::Document) -> Vec<(usize, u32, String)> {
    use pdf_extract::Object;
    let pages: std::collections::HashMap<_, u32> =
        doc.get_pages().into_iter().map(|(n, id)| (id, n)).collect();
    let Ok(catalog) = doc.catalog() else {
        return Vec::new();
    };
    let deref =
        |o: &'_ Object| -> Option<Object> { doc.dereference(o).ok().map(|(_, o)| o.clone()) };
    let Some(Object::Dictionary(root)) = catalog.get(b"Outlines").ok().and_then(deref) else {
        return Vec::new();
    };
    let page_of_dest = |dest: &Object| -> Option<u32> {
        let mut dest = deref(dest)?;
        for _ in 0..4 {
            dest = match dest {
                Object::Array(a) => return pages.get(&a.first()?.as_reference().ok()?).copied(),
                Object::Dictionary(d) => deref(d.get(b"D").ok()?)?,
                Object::Name(n) | Object::String(n, _) => named_dest(doc, catalog, &n)?,
                _ => return None,
            };
        }
        None
    };
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut stack: Vec<(pdf_extract::ObjectId, usize)> = Vec::new();
    if let Ok(first) = root.get(b"First").and_then(Object::as_reference) {
        stack.push((first, 0));
    }
    while let Some((id, level)) = stack.pop() {
        if !seen.insert(id) || seen.len() > MAX_OUTLINE {
            continue;
        }
        let Ok(item) = doc.get_dictionary(id) else {
            continue;
        };
        if let Ok(next) = item.get(b"Next").and_then(Object::as_reference) {
            stack.push((next, level));
        }
        if let Ok(child) = item.get(b"First").and_then(Object::as_reference) {
            stack.push((child, level + 1));
        }
        let title = item
            .get(b"Title")
            .ok()
            .and_then(deref)
            .and_then(|t| pdf_extract::decode_text_string(&t).ok());
        let dest = item.get(b"Dest").ok().cloned().or_else(|| {
            let action = deref(item.get(b"A").ok()?)?;
            action.as_dict().ok()?.get(b"D").ok().cloned()
        });
        if let (Some(title), Some(page)) = (title, dest.as_ref().and_then(page_of_dest)) {
            out.push((level, page, title));
        }
    }
    out
}

/// The destination a name stands for: in the catalog's `/Dests` dictionary (PDF 1.1) or its
/// `/Names` → `/Dests` tree (searched at most [`MAX_OUTLINE`] nodes deep and wide).
fn named_dest(
    doc: &pdf_extract::Document,
    catalog: &pdf_extract::Dictionary,
    name: &[u8],
) -> Option<pdf_extract::Object> {
    use pdf_extract::Object;
    let deref = |o: &Object| doc.dereference(o).ok().map(|(_, o)| o.clone());
    if let Some(Object::Dictionary(dests)) = catalog.get(b"Dests").ok().and_then(deref)
        && let Ok(d) = dests.get(name)
    {
        return deref(d);
    }
    let names = catalog.get(b"Names").ok().and_then(deref)?;
    let tree = deref(names.as_dict().ok()?.get(b"Dests").ok()?)?;
    let mut stack = vec![tree];
    let mut visited = 0;
    while let Some(node) = stack.pop() {
        visited += 1;
        if visited > MAX_OUTLINE {
            return None;
        }
        let Ok(node) = node.as_dict() else {
            continue;
        };
        if let Ok(pairs) = node.get(b"Names").and_then(Object::as_array) {
            for pair in pairs.chunks_exact(2) {
                if pair[0].as_str().is_ok_and(|k| k == name) {
                    return deref(&pair[1]);
                }
            }
        }
        if let Ok(kids) = node.get(b"Kids").and_then(Object::as_array) {
            stack.extend(kids.iter().filter_map(deref));
        }
    }
    None
}

/// The text of a PDF's `bytes`, read by the helper when there is one. `text_limit` bounds the
/// text kept, as it bounds a text file.
pub(crate) fn text(bytes: &[u8], text_limit: u64) -> Result<String, SkipReason> {
    let pages = match HELPER.get() {
        Some(exe) => in_helper(exe, bytes, text_limit)?,
        None => read_pages(bytes),
    };
    let (pages, outline) = match pages {
        Pages::Read { pages, outline } => (pages, outline),
        Pages::Unreadable(why) => return Err(SkipReason::NoText(why)),
    };
    let text = assemble(pages, &outline);
    if !text.chars().any(char::is_alphanumeric) {
        return Err(SkipReason::NoText(
            "no text layer (scanned pages need OCR first)".into(),
        ));
    }
    if text.len() as u64 > text_limit {
        return Err(SkipReason::TooLarge {
            size: text.len() as u64,
            limit: text_limit,
        });
    }
    Ok(text)
}

fn in_helper(exe: &PathBuf, bytes: &[u8], text_limit: u64) -> Result<Pages, SkipReason> {
    let failed = |why: String| SkipReason::NoText(format!("the PDF reader failed ({why})"));
    let mut child = Command::new(exe)
        .arg(HELPER_ARG)
        .arg(bytes.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(failed("no pipe to it".into()));
    };
    // Both ends in threads: the helper may stop reading or writing at any point, and neither
    // may block this thread past the deadline.
    let limit = time_limit(bytes.len() as u64);
    let bytes = bytes.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&bytes);
    });
    // The answer is the text in JSON: escaping at most doubles it, six times for control
    // characters a page cannot be full of.
    let cap = text_limit.saturating_mul(6).saturating_add(1 << 20);
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.take(cap).read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let _ = writer.join();
    let out = reader.join().unwrap_or_default();
    let Some(status) = status else {
        return Err(SkipReason::NoText(format!(
            "took longer than {} s to read",
            limit.as_secs()
        )));
    };
    if !status.success() {
        return Err(failed(exit_reason(status)));
    }
    serde_json::from_slice(&out).map_err(|_| failed("its answer did not decode".into()))
}

fn exit_reason(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return match sig {
                libc::SIGXCPU => "it ran out of CPU time".into(),
                libc::SIGKILL => "it was killed".into(),
                libc::SIGABRT | libc::SIGSEGV => "it crashed, perhaps out of memory".into(),
                s => format!("signal {s}"),
            };
        }
    }
    format!("{status}")
}

/// One page's lines after the reader: spaces collapsed, control characters gone.
fn clean_lines(page: &str) -> Vec<String> {
    page.lines()
        .map(|l| {
            let mut out = String::with_capacity(l.len());
            for w in l.split(|c: char| c.is_whitespace() || c.is_control()) {
                if w.is_empty() {
                    continue;
                }
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(w);
            }
            out
        })
        .collect()
}

/// A line that only numbers its page: `3`, `- 3 -`, `Page 3`, `3 of 12`, `iv`.
fn is_page_number(line: &str) -> bool {
    let lower = line.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| c.is_whitespace() || matches!(c, '-' | '–' | '—' | '|' | '.' | '/'))
        .filter(|w| !w.is_empty() && *w != "page" && *w != "p" && *w != "of")
        .collect();
    !words.is_empty()
        && words.len() <= 2
        && words.iter().all(|w| {
            w.chars().all(|c| c.is_ascii_digit())
                || (w.len() <= 6 && w.chars().all(|c| matches!(c, 'i' | 'v' | 'x' | 'l')))
        })
}

/// A line's shape with its numbers blurred, so "Chapter 2 — page 14" on every page is seen as
/// the same running header.
fn shape(line: &str) -> String {
    line.chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect::<String>()
        .to_lowercase()
}

/// Lines that sit at the top or the bottom of most pages: running headers and footers, which
/// would otherwise join every passage on every page.
fn furniture(pages: &[Vec<String>]) -> std::collections::HashSet<String> {
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for page in pages {
        let filled: Vec<&String> = page.iter().filter(|l| !l.is_empty()).collect();
        let depth = edge_depth(filled.len());
        let edges = filled
            .iter()
            .take(depth)
            .chain(filled.iter().rev().take(depth));
        let mut seen = std::collections::HashSet::new();
        for l in edges {
            if seen.insert(shape(l)) {
                *counts.entry(shape(l)).or_default() += 1;
            }
        }
    }
    counts
        .into_iter()
        .filter(|&(_, n)| pages.len() >= 4 && n * 2 > pages.len())
        .map(|(s, _)| s)
        .collect()
}

/// How many lines at each end of a page of `filled` lines may be furniture: on a short page
/// (a slide) the second line is content.
fn edge_depth(filled: usize) -> usize {
    if filled >= 6 { 2 } else { 1 }
}

/// Joins a word broken at a line end (`clus-` / `ter`): the part on the next line moves up.
fn undo_hyphenation(lines: &mut [String]) {
    for i in 0..lines.len().saturating_sub(1) {
        let Some(stem) = lines[i].strip_suffix('-') else {
            continue;
        };
        let before = stem.chars().next_back();
        if !before.is_some_and(char::is_alphabetic) {
            continue;
        }
        let next = &lines[i + 1];
        if !next.chars().next().is_some_and(char::is_lowercase) {
            continue;
        }
        let (word, rest) = match next.find(' ') {
            Some(at) => (&next[..at], next[at + 1..].to_string()),
            None => (next.as_str(), String::new()),
        };
        let joined = format!("{stem}{word}");
        lines[i] = joined;
        lines[i + 1] = rest;
    }
}

/// The document's text from its pages: cleaned, furniture dropped, words joined, outline
/// entries as headings, [`PAGE_BREAK`] lines between pages.
fn assemble(pages: Vec<String>, outline: &[(usize, u32, String)]) -> String {
    let mut pages: Vec<Vec<String>> = pages.iter().map(|p| clean_lines(p)).collect();
    let furniture = furniture(&pages);
    let mut out = String::new();
    for (i, page) in pages.iter_mut().enumerate() {
        let number = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let filled = page.iter().filter(|l| !l.is_empty()).count();
        let mut seen = 0;
        for line in page.iter_mut() {
            if line.is_empty() {
                continue;
            }
            seen += 1;
            let depth = edge_depth(filled);
            let at_edge = seen <= depth || seen + depth > filled;
            if at_edge && (is_page_number(line) || furniture.contains(&shape(line))) {
                line.clear();
            }
        }
        // Removing a line between the halves of a word must not keep them apart.
        page.retain(|l| !l.is_empty());
        undo_hyphenation(page);
        let headings: Vec<(usize, &str)> = outline
            .iter()
            .filter(|(_, p, _)| *p == number)
            .map(|(level, _, t)| (*level, t.as_str()))
            .collect();
        if i > 0 {
            out.push('\n');
            out.push(PAGE_BREAK);
            out.push('\n');
        }
        let lines: Vec<&String> = page.iter().filter(|l| !l.is_empty()).collect();
        let mut at = 0;
        while at < lines.len() {
            if at > 0 {
                out.push('\n');
            }
            // A long title wraps: its entry may match this line and the next few together.
            let heading = (0..MAX_TITLE_LINES).find_map(|extra| {
                let end = at + extra;
                let joined = lines
                    .get(at..=end)?
                    .iter()
                    .map(|l| l.as_str())
                    .collect::<Vec<_>>()
                    .join(" ");
                let (level, _) = headings.iter().find(|(_, t)| same_title(&joined, t))?;
                Some((*level, joined, extra))
            });
            match heading {
                Some((level, title, extra)) => {
                    out.push_str(&"#".repeat((level + 1).clamp(1, 6)));
                    out.push(' ');
                    out.push_str(&title);
                    at += extra + 1;
                }
                None => {
                    out.push_str(&plain_line(lines[at]));
                    at += 1;
                }
            }
        }
    }
    out
}

/// Most lines one outline title is matched across.
const MAX_TITLE_LINES: usize = 3;

/// Whether a page's line is the outline's title, numbering and case aside.
/// Only letters and digits are compared: outline writers drop or escape punctuation (groff's
/// bookmarks lose the `()` of `blob.arrayBuffer()`).
fn same_title(line: &str, title: &str) -> bool {
    let norm = |s: &str| {
        s.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    let (l, t) = (norm(line), norm(title));
    !t.is_empty() && l == t
}

/// The page (1-based) of the PDF text `text` that byte `at` lies on.
pub fn page_of(text: &str, at: usize) -> u32 {
    let before = text.get(..at.min(text.len())).unwrap_or(text);
    let breaks = before.matches(PAGE_BREAK).count();
    u32::try_from(breaks).unwrap_or(u32::MAX).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/documents")
            .join(name);
        std::fs::read(p).unwrap()
    }

    /// The pages, each with its lines joined by spaces: what was read, line breaks aside.
    fn pages_of(t: &str) -> Vec<String> {
        t.split(&format!("\n{PAGE_BREAK}\n"))
            .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    }

    #[test]
    fn hyphenated_pages_read_whole_words_without_page_numbers() {
        let t = text(&fixture("hyphenated.pdf"), 1 << 20).unwrap();
        let pages = pages_of(&t);
        assert_eq!(pages.len(), 2, "{t}");
        assert!(pages[0].contains("winter cluster"), "{t}");
        assert!(!t.contains("clus-"), "{t}");
        assert!(!t.contains("-2-"), "the page number is furniture: {t}");
        assert!(pages[1].contains("Spring inspection"), "{t}");
        assert!(pages[1].contains("queen is laying"), "{t}");
        let at = t.find("queen").unwrap();
        assert_eq!(page_of(&t, at), 2);
        assert_eq!(page_of(&t, 0), 1);
    }

    #[test]
    fn two_columns_read_column_by_column() {
        let t = text(&fixture("two-columns.pdf"), 1 << 20).unwrap();
        let sour = t.find("sourdough").unwrap();
        let acidic = t.find("more acidic").unwrap();
        let bike = t.find("bicycle").unwrap();
        assert!(sour < acidic && acidic < bike, "{t}");
        assert!(pages_of(&t)[0].contains("week between feedings"), "{t}");
    }

    #[test]
    fn non_latin_text_keeps_its_letters_and_pages() {
        let t = text(&fixture("non-latin.pdf"), 1 << 20).unwrap();
        assert!(t.contains("Лёд на озере держится до мая"), "{t}");
        assert!(t.contains("Σαμαριάς"), "{t}");
        let at = t.find("борща").unwrap();
        assert_eq!(page_of(&t, at), 2, "{t}");
    }

    #[test]
    fn unreadable_pdfs_say_why() {
        let why = |name| match text(&fixture(name), 1 << 20) {
            Err(SkipReason::NoText(w)) => w,
            other => panic!("{name}: {other:?}"),
        };
        assert!(why("encrypted.pdf").contains("password"));
        assert!(why("image-only.pdf").contains("no text layer"));
        assert!(why("damaged.pdf").starts_with("damaged"));
    }

    #[test]
    fn text_over_the_limit_is_too_large() {
        let err = text(&fixture("hyphenated.pdf"), 100).unwrap_err();
        assert!(
            matches!(err, SkipReason::TooLarge { limit: 100, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn furniture_and_page_numbers() {
        for l in ["3", "- 3 -", "Page 3", "3 of 12", "iv", "p. 7"] {
            assert!(is_page_number(l), "{l}");
        }
        for l in ["3 apples", "Chapter", "2024 was a year", "Lives"] {
            assert!(!is_page_number(l), "{l}");
        }
        let pages: Vec<Vec<String>> = (1..=5)
            .map(|i| {
                let mut page = vec![format!("Field guide, chapter {i}")];
                let topics = ["bees", "wax", "honey", "hives", "queens", "frames", "smoke"];
                page.extend(
                    (1..=8).map(|l| format!("Body text {i}.{l} on {}", topics[(i * 3 + l) % 7])),
                );
                page.push(format!("{i}"));
                page
            })
            .collect();
        let f = furniture(&pages);
        assert!(f.contains(&shape("Field guide, chapter 9")));
        let text = assemble(pages.iter().map(|p| p.join("\n")).collect(), &[]);
        assert!(!text.contains("Field guide"), "{text}");
        assert!(text.contains("Body text 5.1") && text.contains("Body text 5.8"));
        assert!(!text.lines().any(|l| l == "5"), "{text}");
        // Slides of three lines: a line in every slide's middle is not furniture.
        let slides: Vec<Vec<String>> = (1..=5)
            .map(|i| {
                vec![
                    format!("Step {i}"),
                    "Mix the flour".into(),
                    format!("Slide {i}"),
                ]
            })
            .collect();
        let f = furniture(&slides);
        assert!(!f.contains(&shape("Mix the flour")), "{f:?}");
    }

    #[test]
    fn outline_entries_become_headings_and_hyphens_join() {
        let pages = vec![
            "1.2 Getting started\nInstall the clus-\nter tools first".to_string(),
            "Appendix\n# not a heading\nA title too long\nfor one line\nbody".to_string(),
        ];
        let outline = vec![
            (1, 1, "Getting started".to_string()),
            (0, 2, "Appendix".into()),
            (2, 2, "A title too long for one line".into()),
        ];
        let t = assemble(pages, &outline);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "## 1.2 Getting started");
        assert_eq!(lines[1], "Install the cluster");
        assert_eq!(lines[2], "tools first");
        assert_eq!(lines[3], "\u{c}");
        assert_eq!(lines[4], "# Appendix");
        assert_eq!(lines[5], "\\# not a heading");
        assert_eq!(lines[6], "### A title too long for one line");
        assert_eq!(lines[7], "body");
    }
}
