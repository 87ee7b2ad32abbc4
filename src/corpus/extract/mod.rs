//! Documents that are not plain text: the text a reader sees in them.
//!
//! Web pages (`html`), PDFs (`pdf`), and Word, OpenDocument and EPUB files (`office`).
//!
//! What comes out is Markdown-shaped text (headings as `#` lines, everything else as plain
//! lines), so the chunker, the heading trail, the word index, the preview and the snippets
//! read it as they read a note. It *is* the document from then on: passages, lines and what
//! `dochash read` returns are all of this text, and a PDF's pages are marked in it (see
//! [`PAGE_BREAK`]).

mod helper;
pub(crate) mod html;
pub(crate) mod office;
pub(crate) mod pdf;

use std::borrow::Cow;
use std::path::Path;
use std::sync::Mutex;

use crate::corpus::SkipReason;

pub use helper::{document_helper_main, use_document_helper};
pub use pdf::{PAGE_BREAK, is_page_break, page_of};

/// How a file's bytes become text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Read as written (Markdown, Org, reStructuredText, AsciiDoc, plain text).
    Text,
    /// The visible text of a web page.
    Html,
    /// The text layer of a PDF, page by page.
    Pdf,
    /// A Word document's paragraphs.
    Docx,
    /// An OpenDocument text's paragraphs.
    Odt,
    /// An e-book's chapters in reading order.
    Epub,
}

impl Kind {
    pub fn from_path(path: &Path) -> Kind {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match ext.to_ascii_lowercase().as_str() {
            "html" | "htm" | "xhtml" => Kind::Html,
            "pdf" => Kind::Pdf,
            "docx" => Kind::Docx,
            "odt" => Kind::Odt,
            "epub" => Kind::Epub,
            _ => Kind::Text,
        }
    }

    /// The kind's name, as the helper is told it.
    fn name(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Html => "html",
            Kind::Pdf => "pdf",
            Kind::Docx => "docx",
            Kind::Odt => "odt",
            Kind::Epub => "epub",
        }
    }

    fn from_name(name: &str) -> Option<Kind> {
        [
            Kind::Text,
            Kind::Html,
            Kind::Pdf,
            Kind::Docx,
            Kind::Odt,
            Kind::Epub,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }

    /// Whether the file is a document that is not text (a PDF, an office file, an e-book): it
    /// opens in a viewer, not an editor, and its lines are only those of the text read from it.
    pub fn is_document(self) -> bool {
        !matches!(self, Kind::Text | Kind::Html)
    }

    /// Largest file of this kind read, given the limit for text files: a document's bytes are
    /// mostly fonts, images and markup, so the same text takes many times the bytes.
    pub fn byte_limit(self, text_limit: u64) -> u64 {
        if self.is_document() {
            text_limit.saturating_mul(DOCUMENT_BYTES_PER_TEXT_BYTE)
        } else {
            text_limit
        }
    }
}

/// How many times the text limit a document may be (4 MiB of text → a 64 MiB PDF).
const DOCUMENT_BYTES_PER_TEXT_BYTE: u64 = 16;

/// Documents whose reading failed, by their bytes' hash, kind and text limit: the same bytes
/// fail the same way, and a PDF that takes its reader's whole time must not take it again at
/// every update of a watched folder. Bounded; the oldest is forgotten first.
static FAILED: Mutex<Vec<(FailedKey, SkipReason)>> = Mutex::new(Vec::new());
/// A document's bytes' hash, its kind, and the text limit it was read under.
type FailedKey = ([u8; 32], Kind, u64);
const MAX_FAILED: usize = 256;

/// The text of a document of `kind` (not [`Kind::Text`]) and whether bytes had to be
/// replaced: read in the helper process when the binary set one up.
pub(crate) fn read(
    kind: Kind,
    bytes: &[u8],
    hash: [u8; 32],
    text_limit: u64,
) -> Result<(String, bool), SkipReason> {
    let key = (hash, kind, text_limit);
    let remembered = |failed: &Vec<_>| {
        failed
            .iter()
            .find(|(k, _): &&(_, SkipReason)| *k == key)
            .map(|(_, r)| r.clone())
    };
    if let Some(reason) = remembered(&FAILED.lock().unwrap_or_else(|p| p.into_inner())) {
        return Err(reason);
    }
    let read =
        helper::run(kind, bytes, text_limit).unwrap_or_else(|| read_here(kind, bytes, text_limit));
    if let Err(reason) = &read {
        let mut failed = FAILED.lock().unwrap_or_else(|p| p.into_inner());
        if failed.len() >= MAX_FAILED {
            failed.remove(0);
        }
        failed.push((key, reason.clone()));
    }
    read
}

/// Reads a document in this process (the helper's work).
fn read_here(kind: Kind, bytes: &[u8], text_limit: u64) -> Result<(String, bool), SkipReason> {
    use office::Office;
    let office = |format| office::text(bytes, format, text_limit).map(|t| (t, false));
    match kind {
        Kind::Text => Err(SkipReason::NoText("not a document".into())),
        Kind::Html => {
            let (page, lossy) = super::read::decode(bytes.to_vec())?;
            Ok((html::text(&page), lossy))
        }
        Kind::Pdf => pdf::text(bytes, text_limit).map(|t| (t, false)),
        Kind::Docx => office(Office::Docx),
        Kind::Odt => office(Office::Odt),
        Kind::Epub => office(Office::Epub),
    }
}

/// A document's text as read, or why it is not indexed: `empty` when it has no letter or
/// digit, too large past `text_limit`.
fn finished(text: String, text_limit: u64, empty: &str) -> Result<String, SkipReason> {
    if !text.chars().any(char::is_alphanumeric) {
        return Err(SkipReason::NoText(empty.into()));
    }
    if text.len() as u64 > text_limit {
        return Err(SkipReason::TooLarge {
            size: text.len() as u64,
            limit: text_limit,
        });
    }
    Ok(text)
}

/// The bytes of a document the tests read (`tests/fixtures/documents/`, made by its `make.sh`).
#[cfg(test)]
fn fixture(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/documents")
        .join(name);
    std::fs::read(p).unwrap()
}

/// A line of a document's text as Markdown will not misread it: a line that starts like a
/// heading, a fence, a link definition or a heading's underline gets a backslash in front, so
/// a shell comment in a code sample or a row of dashes in a PDF stays text.
pub(crate) fn plain_line(line: &str) -> Cow<'_, str> {
    let t = line.trim_start();
    let underline = !t.is_empty() && (t.chars().all(|c| c == '=') || t.chars().all(|c| c == '-'));
    // Only what `structure` reads as a heading: 1 to 6 `#` and then a space or nothing
    // (`#include` and `#tag` are text).
    let hashes = t.chars().take_while(|&c| c == '#').count();
    let atx = (1..=6).contains(&hashes)
        && t[hashes..]
            .chars()
            .next()
            .is_none_or(|c| c == ' ' || c == '\t');
    let marker = atx
        || t.starts_with("```")
        || t.starts_with("~~~")
        || (t.starts_with('[') && t.contains("]:"));
    if underline || marker {
        Cow::Owned(format!("\\{line}"))
    } else {
        Cow::Borrowed(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_extension() {
        assert_eq!(Kind::from_path(Path::new("a/B.HTML")), Kind::Html);
        assert_eq!(Kind::from_path(Path::new("x.htm")), Kind::Html);
        assert_eq!(Kind::from_path(Path::new("paper.Pdf")), Kind::Pdf);
        assert_eq!(Kind::from_path(Path::new("n.md")), Kind::Text);
        assert_eq!(Kind::from_path(Path::new("r.DOCX")), Kind::Docx);
        assert_eq!(Kind::from_path(Path::new("r.odt")), Kind::Odt);
        assert_eq!(Kind::from_path(Path::new("b.epub")), Kind::Epub);
        assert!(Kind::Epub.is_document() && !Kind::Html.is_document());
        assert_eq!(Kind::Pdf.byte_limit(4 << 20), 64 << 20);
        assert_eq!(Kind::Html.byte_limit(7), 7);
    }

    #[test]
    fn markdown_markers_in_plain_lines_are_escaped() {
        assert_eq!(plain_line("# comment"), "\\# comment");
        assert_eq!(plain_line("  ```"), "\\  ```");
        assert_eq!(plain_line("-----"), "\\-----");
        assert_eq!(plain_line("[a]: b"), "\\[a]: b");
        assert_eq!(plain_line("a # b"), "a # b");
        assert_eq!(plain_line("#include <stdio.h>"), "#include <stdio.h>");
        assert_eq!(plain_line("#"), "\\#");
        assert_eq!(Kind::from_name(Kind::Epub.name()), Some(Kind::Epub));
        assert_eq!(plain_line("- item"), "- item");
        assert_eq!(plain_line(""), "");
    }
}
