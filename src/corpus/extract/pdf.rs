//! The text layer of a PDF, page by page.
//!
//! PDF readers meet files that make them loop, allocate without end or panic; the binaries
//! therefore run this in the helper process ([`super::helper`]). A PDF that cannot be read is a
//! [`SkipReason::NoText`] note naming why.
//!
//! The reader is `pdf-extract` (over `lopdf`): it keeps a two-column page in column order
//! and says why a file cannot be read (a password, a broken cross-reference table); its
//! comparison with `pdf_oxide` on 1,264 pages is in docs/BENCHMARKS.md. What it gives is made
//! readable here: line-end hyphenation undone, running headers and page numbers dropped, the
//! outline's entries made headings, pages separated by a [`PAGE_BREAK`] line.

use super::plain_line;
use crate::corpus::SkipReason;

/// A PDF's text marks where each page after the first begins with a line holding only this
/// character (form feed, the page break of plain text): a passage's page is one more than the
/// breaks before it (see [`page_of`]).
pub const PAGE_BREAK: char = '\u{c}';

/// The pages' text and the outline, or why there is none.
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
    let named = named_dests(doc, catalog);
    let page_of_dest = |dest: &Object| -> Option<u32> {
        let mut dest = deref(dest)?;
        for _ in 0..4 {
            dest = match dest {
                Object::Array(a) => return pages.get(&a.first()?.as_reference().ok()?).copied(),
                Object::Dictionary(d) => deref(d.get(b"D").ok()?)?,
                Object::Name(n) | Object::String(n, _) => named.get(&n)?.clone(),
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

/// Every named destination: the catalog's `/Dests` dictionary (PDF 1.1) and its `/Names` →
/// `/Dests` tree, read once (at most [`MAX_OUTLINE`] nodes of the tree).
fn named_dests(
    doc: &pdf_extract::Document,
    catalog: &pdf_extract::Dictionary,
) -> std::collections::HashMap<Vec<u8>, pdf_extract::Object> {
    use pdf_extract::Object;
    let deref = |o: &Object| doc.dereference(o).ok().map(|(_, o)| o.clone());
    let mut out = std::collections::HashMap::new();
    if let Some(Object::Dictionary(dests)) = catalog.get(b"Dests").ok().and_then(deref) {
        for (k, v) in dests.iter().take(MAX_OUTLINE) {
            if let Some(v) = deref(v) {
                out.insert(k.clone(), v);
            }
        }
    }
    let tree = catalog
        .get(b"Names")
        .ok()
        .and_then(deref)
        .and_then(|n| deref(n.as_dict().ok()?.get(b"Dests").ok()?));
    let mut stack: Vec<Object> = tree.into_iter().collect();
    let mut visited = 0;
    while let Some(node) = stack.pop() {
        visited += 1;
        if visited > MAX_OUTLINE || out.len() > MAX_OUTLINE {
            break;
        }
        let Ok(node) = node.as_dict() else {
            continue;
        };
        if let Ok(pairs) = node.get(b"Names").and_then(Object::as_array) {
            for pair in pairs.chunks_exact(2).take(MAX_OUTLINE) {
                if let (Ok(k), Some(v)) = (pair[0].as_str(), deref(&pair[1])) {
                    out.insert(k.to_vec(), v);
                }
            }
        }
        if let Ok(kids) = node.get(b"Kids").and_then(Object::as_array) {
            stack.extend(kids.iter().take(MAX_OUTLINE).filter_map(deref));
        }
    }
    out
}

/// The text of a PDF's `bytes` (at most `text_limit` bytes of it), read here: callers that
/// must survive any file run this in the helper (see [`super::helper`]).
pub(crate) fn text(bytes: &[u8], text_limit: u64) -> Result<String, SkipReason> {
    let (pages, outline) = match read_pages(bytes) {
        Pages::Read { pages, outline } => (pages, outline),
        Pages::Unreadable(why) => return Err(SkipReason::NoText(why)),
    };
    super::finished(
        assemble(pages, &outline),
        text_limit,
        "no text layer (scanned pages need OCR first)",
    )
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
        .split(|c: char| c.is_whitespace() || matches!(c, '-' | '–' | '—' | '|'))
        .filter(|w| !w.is_empty() && *w != "page" && *w != "p.")
        .collect();
    let number = |w: &str| {
        (!w.is_empty() && w.len() <= 5 && w.chars().all(|c| c.is_ascii_digit()))
            || (w.len() <= 5 && w.len() >= 2 && w.chars().all(|c| matches!(c, 'i' | 'v' | 'x')))
    };
    match words.as_slice() {
        [pair] if pair.contains('/') => pair.split('/').all(number),
        [n] => number(n),
        // `3 of 12`, `3 / 12`
        [n, "of" | "/", m] => number(n) && number(m),
        _ => false,
    }
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
        // A compound's own hyphen (`state-of-the-` / `art`) stays.
        let joined = if stem.contains('-') {
            format!("{stem}-{word}")
        } else {
            format!("{stem}{word}")
        };
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
            // A chapter's title on its first page may be its running header elsewhere.
            let titled = outline
                .iter()
                .any(|(_, p, t)| *p == number && same_title(line, t));
            if at_edge && !titled && (is_page_number(line) || furniture.contains(&shape(line))) {
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

/// Whether a line of a document's text is a page break (the line between two pages).
pub fn is_page_break(line: &str) -> bool {
    line.strip_prefix(PAGE_BREAK) == Some("")
}

/// The page (1-based) of the PDF text `text` that byte `at` lies on.
pub fn page_of(text: &str, at: usize) -> u32 {
    let before = text.get(..at.min(text.len())).unwrap_or(text);
    let breaks = before.matches(PAGE_BREAK).count();
    u32::try_from(breaks).unwrap_or(u32::MAX).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;

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
        for l in [
            "3", "- 3 -", "Page 3", "3 of 12", "iv", "p. 7", "12/40", "xii",
        ] {
            assert!(is_page_number(l), "{l}");
        }
        for l in [
            "3 apples",
            "Chapter",
            "2024 was a year",
            "Lives",
            "x",
            "ill",
            "3.14",
            "2023 2024",
        ] {
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
