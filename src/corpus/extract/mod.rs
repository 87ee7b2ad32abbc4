//! Documents that are not plain text: the text a reader sees in them.
//!
//! Web pages (`html`), PDFs (`pdf`), and Word, OpenDocument and EPUB files (`office`).
//!
//! What comes out is Markdown-shaped text (headings as `#` lines, everything else as plain
//! lines), so the chunker, the heading trail, the word index, the preview and the snippets
//! read it as they read a note. It *is* the document from then on: passages, lines and what
//! `dochash read` returns are all of this text, and a PDF's pages are marked in it (see
//! [`PAGE_BREAK`]).

pub(crate) mod html;
pub(crate) mod office;
pub(crate) mod pdf;

use std::borrow::Cow;
use std::path::Path;

pub use pdf::{PAGE_BREAK, page_of, pdf_helper_main, use_pdf_helper};

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

/// A line of a document's text as Markdown will not misread it: a line that starts like a
/// heading, a fence, a link definition or a heading's underline gets a backslash in front, so
/// a shell comment in a code sample or a row of dashes in a PDF stays text.
pub(crate) fn plain_line(line: &str) -> Cow<'_, str> {
    let t = line.trim_start();
    let underline = !t.is_empty() && (t.chars().all(|c| c == '=') || t.chars().all(|c| c == '-'));
    let marker = t.starts_with('#')
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
        assert_eq!(plain_line("- item"), "- item");
        assert_eq!(plain_line(""), "");
    }
}
