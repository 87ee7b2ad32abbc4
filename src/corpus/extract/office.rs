//! Word (DOCX), OpenDocument text (ODT) and EPUB: zip archives of markup.
//!
//! Each is read from the parts a reader sees: DOCX's `word/document.xml`, ODT's `content.xml`,
//! and an EPUB's chapters in its spine's order (each an XHTML page, read as a web page is). The
//! XML parts are tokenized by the same html5ever tokenizer as web pages (element names keep
//! their prefix, `w:p`; entities are decoded): these parts use no DTD, so a tokenizer that never
//! fails is all they need. Paragraph styles (`Heading1`, `Title`, an outline level) make
//! headings. An archive member is read only up to a bound, so a zip bomb costs nothing.

use std::cell::RefCell;
use std::io::Read;

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::{
    BufferQueue, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
};

use super::{html, plain_line};
use crate::corpus::SkipReason;

/// Most entries of an archive looked at: a document has tens, an e-book hundreds.
const MAX_ENTRIES: usize = 10_000;

/// One markup event: an element opens (with its attributes) or closes, or text.
enum Ev<'a> {
    Open(&'a str, &'a [(String, String)], bool),
    Close(&'a str),
    Text(&'a str),
}

struct Collect(RefCell<Vec<Owned>>);

enum Owned {
    Open(String, Vec<(String, String)>, bool),
    Close(String),
    Text(String),
}

impl TokenSink for Collect {
    type Handle = ();
    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        let mut v = self.0.borrow_mut();
        match token {
            Token::TagToken(t) => {
                let name = t.name.to_string();
                match t.kind {
                    TagKind::StartTag => {
                        let attrs = t
                            .attrs
                            .iter()
                            .map(|a| (a.name.local.to_string(), a.value.to_string()))
                            .collect();
                        v.push(Owned::Open(name, attrs, t.self_closing));
                    }
                    TagKind::EndTag => v.push(Owned::Close(name)),
                }
            }
            Token::CharacterTokens(t) => match v.last_mut() {
                Some(Owned::Text(s)) => s.push_str(&t),
                _ => v.push(Owned::Text(t.to_string())),
            },
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

/// Calls `f` with each event of the markup `text`, in order.
fn events(text: &str, mut f: impl FnMut(Ev<'_>)) {
    let tok = Tokenizer::new(Collect(RefCell::new(Vec::new())), TokenizerOpts::default());
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(text));
    let _ = tok.feed(&input);
    tok.end();
    for e in tok.sink.0.into_inner() {
        match &e {
            Owned::Open(n, a, s) => f(Ev::Open(n, a, *s)),
            Owned::Close(n) => f(Ev::Close(n)),
            Owned::Text(t) => f(Ev::Text(t)),
        }
    }
}

fn attr<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Paragraphs as they are written out: a heading as a `#` line, anything else as a plain line,
/// a blank line between them.
#[derive(Default)]
struct Paragraphs {
    out: String,
    current: String,
    level: Option<usize>,
}

impl Paragraphs {
    fn push_text(&mut self, t: &str) {
        self.current.push_str(t);
    }

    fn end(&mut self) {
        let text = std::mem::take(&mut self.current);
        let level = self.level.take();
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.is_empty() {
            return;
        }
        if !self.out.is_empty() {
            self.out.push_str("\n\n");
        }
        match level {
            Some(l) => {
                self.out.push_str(&"#".repeat(l.clamp(1, 6)));
                self.out.push(' ');
                self.out.push_str(&words.join(" "));
            }
            None => {
                // Line breaks inside a paragraph stay; other white space is one space.
                let lines: Vec<String> = text
                    .split('\n')
                    .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                    .filter(|l| !l.is_empty())
                    .map(|l| plain_line(&l).into_owned())
                    .collect();
                self.out.push_str(&lines.join("\n"));
            }
        }
    }
}

/// A heading level from a Word paragraph style: `Title` is 1, `Heading2` (or `heading 2`) is 2.
fn word_style_level(style: &str) -> Option<usize> {
    let s = style.to_ascii_lowercase().replace(' ', "");
    if s == "title" {
        return Some(1);
    }
    s.strip_prefix("heading")?.parse::<usize>().ok()
}

/// The text of DOCX's `word/document.xml`.
fn docx_text(xml: &str) -> String {
    let mut p = Paragraphs::default();
    let mut in_text = false;
    events(xml, |e| match e {
        Ev::Open("w:t", _, false) => in_text = true,
        Ev::Close("w:t") => in_text = false,
        Ev::Open("w:tab", _, _) => p.push_text(" "),
        Ev::Open("w:br" | "w:cr", _, _) => p.push_text("\n"),
        Ev::Open("w:pstyle", a, _) => {
            if let Some(l) = attr(a, "w:val").and_then(word_style_level) {
                p.level = Some(l);
            }
        }
        Ev::Open("w:outlinelvl", a, _) => {
            // Levels 0 to 8 are outline levels; 9 is body text.
            if let Some(l) = attr(a, "w:val").and_then(|v| v.parse::<usize>().ok())
                && l <= 8
            {
                p.level = Some(l + 1);
            }
        }
        Ev::Close("w:p") => p.end(),
        Ev::Text(t) if in_text => p.push_text(t),
        _ => {}
    });
    p.end();
    p.out
}

/// The text of ODT's `content.xml`.
fn odt_text(xml: &str) -> String {
    let mut p = Paragraphs::default();
    let mut in_body = false;
    events(xml, |e| match e {
        Ev::Open("office:body", _, _) => in_body = true,
        Ev::Open("text:h", a, false) => {
            p.end();
            let level = attr(a, "text:outline-level").and_then(|v| v.parse().ok());
            p.level = Some(level.unwrap_or(1));
        }
        Ev::Open("text:p", _, false) => p.end(),
        Ev::Close("text:h" | "text:p") => p.end(),
        Ev::Open("text:s", a, _) => {
            let n = attr(a, "text:c").and_then(|v| v.parse::<usize>().ok());
            p.push_text(&" ".repeat(n.unwrap_or(1).min(64)));
        }
        Ev::Open("text:tab", _, _) => p.push_text(" "),
        Ev::Open("text:line-break", _, _) => p.push_text("\n"),
        Ev::Text(t) if in_body => p.push_text(t),
        _ => {}
    });
    p.end();
    p.out
}

/// An archive's member `name`, as text, read up to `limit` bytes (a member that unpacks to more
/// is cut there, which a zip bomb would be).
fn member(
    zip: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>,
    name: &str,
    limit: u64,
) -> Option<String> {
    let f = zip.by_name(name).ok()?;
    let mut bytes = Vec::new();
    f.take(limit).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

fn open(bytes: &[u8]) -> Result<zip::ZipArchive<std::io::Cursor<&[u8]>>, SkipReason> {
    let zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| SkipReason::NoText(format!("damaged ({e})")))?;
    if zip.len() > MAX_ENTRIES {
        return Err(SkipReason::NoText(format!(
            "damaged (an archive of {} entries)",
            zip.len()
        )));
    }
    Ok(zip)
}

/// Which office format a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Office {
    Docx,
    Odt,
    Epub,
}

/// The text of an office document or e-book of `bytes`, at most `text_limit` bytes of it.
pub(crate) fn text(bytes: &[u8], format: Office, text_limit: u64) -> Result<String, SkipReason> {
    let mut zip = open(bytes)?;
    // Markup is several times its text: read that much of a part, and no more.
    let part_limit = text_limit.saturating_mul(8);
    let missing = |what: &str| SkipReason::NoText(format!("damaged (no {what} in it)"));
    let text = match format {
        Office::Docx => docx_text(
            &member(&mut zip, "word/document.xml", part_limit)
                .ok_or_else(|| missing("word/document.xml"))?,
        ),
        Office::Odt => odt_text(
            &member(&mut zip, "content.xml", part_limit).ok_or_else(|| missing("content.xml"))?,
        ),
        Office::Epub => epub_text(&mut zip, part_limit, text_limit)?,
    };
    super::finished(text, text_limit, "no text in it")
}

/// An EPUB's chapters in reading order: `META-INF/container.xml` names the package file, whose
/// spine lists the chapters by their manifest ids.
fn epub_text(
    zip: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>,
    part_limit: u64,
    text_limit: u64,
) -> Result<String, SkipReason> {
    let missing = |what: &str| SkipReason::NoText(format!("damaged (no {what} in it)"));
    let container = member(zip, "META-INF/container.xml", part_limit)
        .ok_or_else(|| missing("META-INF/container.xml"))?;
    let mut opf_path = None;
    events(&container, |e| {
        if let Ev::Open("rootfile", a, _) = e
            && opf_path.is_none()
        {
            opf_path = attr(a, "full-path").map(str::to_owned);
        }
    });
    let opf_path = opf_path.ok_or_else(|| missing("package file"))?;
    let opf = member(zip, &opf_path, part_limit).ok_or_else(|| missing("package file"))?;
    let base = opf_path.rsplit_once('/').map_or("", |(dir, _)| dir);
    let mut manifest: Vec<(String, String)> = Vec::new();
    let mut spine: Vec<String> = Vec::new();
    events(&opf, |e| match e {
        Ev::Open("item", a, _) => {
            if let (Some(id), Some(href)) = (attr(a, "id"), attr(a, "href")) {
                manifest.push((id.to_owned(), href.to_owned()));
            }
        }
        Ev::Open("itemref", a, _) => {
            if attr(a, "linear") != Some("no")
                && let Some(id) = attr(a, "idref")
            {
                spine.push(id.to_owned());
            }
        }
        _ => {}
    });
    let manifest: std::collections::HashMap<String, String> = manifest.into_iter().collect();
    let mut seen = std::collections::HashSet::new();
    // All chapters together are read up to one part's bound: a spine that lists one zip bomb
    // ten thousand times costs one bound, not ten thousand.
    let mut budget = part_limit;
    let mut out = String::new();
    for id in spine.iter().take(MAX_ENTRIES) {
        if !seen.insert(id) || budget == 0 {
            continue;
        }
        let Some(href) = manifest.get(id) else {
            continue;
        };
        let href = href.split('#').next().unwrap_or(href);
        let path = join_zip_path(base, &percent_decode(href));
        let Some(page) = member(zip, &path, budget) else {
            continue;
        };
        budget = budget.saturating_sub(page.len() as u64);
        let chapter = html::text(&page);
        let chapter = chapter.trim();
        if chapter.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(chapter);
        if out.len() as u64 > text_limit {
            break;
        }
    }
    Ok(out)
}

/// `dir/../x` within an archive, as zip names are written (no leading `/`).
fn join_zip_path(base: &str, href: &str) -> String {
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
    for p in href.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;

    /// The same text, written by pandoc as DOCX, ODT and EPUB, reads the same.
    #[test]
    fn office_documents_and_e_books_read_with_their_headings() {
        for (name, format) in [
            ("moss-garden.docx", Office::Docx),
            ("moss-garden.odt", Office::Odt),
            ("moss-garden.epub", Office::Epub),
        ] {
            let t = text(&fixture(name), format, 1 << 20).unwrap();
            let lines: Vec<&str> = t.lines().collect();
            assert!(lines.contains(&"# Choosing a site"), "{name}: {t}");
            assert!(lines.contains(&"## Watering"), "{name}: {t}");
            assert!(lines.contains(&"# Maintenance"), "{name}: {t}");
            let flat = t.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                flat.contains("Moss thrives in damp shade where grass gives up."),
                "{name}: {t}"
            );
            assert!(flat.contains("pH near five"), "{name}: {t}");
            let water = t.find("Watering").unwrap();
            let mist = t.find("Mist the new patches").unwrap();
            let rake = t.find("Rake fallen leaves").unwrap();
            assert!(water < mist && mist < rake, "{name}: reading order");
        }
    }

    #[test]
    fn damaged_and_empty_archives_say_why() {
        let err = text(b"PK\x03\x04 not really", Office::Docx, 1 << 20).unwrap_err();
        assert!(
            matches!(&err, SkipReason::NoText(w) if w.starts_with("damaged")),
            "{err:?}"
        );
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut w = zip::ZipWriter::new(&mut buf);
            w.start_file(
                "word/document.xml",
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
            std::io::Write::write_all(&mut w, b"<w:document><w:body/></w:document>").unwrap();
            w.finish().unwrap();
        }
        let err = text(buf.get_ref(), Office::Docx, 1 << 20).unwrap_err();
        assert_eq!(err, SkipReason::NoText("no text in it".into()));
        let err = text(buf.get_ref(), Office::Odt, 1 << 20).unwrap_err();
        assert!(
            matches!(&err, SkipReason::NoText(w) if w.contains("content.xml")),
            "{err:?}"
        );
    }

    #[test]
    fn word_outline_levels_make_headings_but_level_9_is_body_text() {
        let para = |lvl: &str, text: &str| {
            format!(
                "<w:p><w:pPr><w:outlineLvl w:val=\"{lvl}\"/></w:pPr><w:r><w:t>{text}</w:t></w:r></w:p>"
            )
        };
        let xml = format!(
            "<w:body>{}{}</w:body>",
            para("1", "Section"),
            para("9", "Body words")
        );
        assert_eq!(docx_text(&xml), "## Section\n\nBody words");
    }

    #[test]
    fn word_styles_and_paths() {
        assert_eq!(word_style_level("Heading2"), Some(2));
        assert_eq!(word_style_level("heading 3"), Some(3));
        assert_eq!(word_style_level("Title"), Some(1));
        assert_eq!(word_style_level("BodyText"), None);
        assert_eq!(
            join_zip_path("OEBPS/text", "../img/a.xhtml"),
            "OEBPS/img/a.xhtml"
        );
        assert_eq!(join_zip_path("", "ch%201.xhtml"), "ch%201.xhtml");
        assert_eq!(percent_decode("ch%201.xhtml"), "ch 1.xhtml");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
