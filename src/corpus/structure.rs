//! Document structure: headings, paragraphs and literal blocks.
//!
//! The chunker needs to know where sections begin (so a passage never mixes two topics and can
//! carry its heading trail) and which lines belong together (a code block split in half is
//! useless to a reader). Only that much is parsed; inline markup is left alone because the
//! encoder copes with it fine.

use std::ops::Range;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Markup convention of a document; it decides which lines count as headings.
///
/// The conventions disagree in ways that matter: `* item` is a list in Markdown but a heading
/// in Org, and `# note` is a heading in Markdown but a comment in Org.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Also used for plain text, whose informal conventions (`# Title`, underlined titles) are
    /// Markdown's.
    Markdown,
    Org,
    ReStructuredText,
    AsciiDoc,
}

impl Format {
    /// The format implied by a file name; unknown extensions are read as Markdown/plain text.
    pub fn from_path(path: &Path) -> Format {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match ext.to_ascii_lowercase().as_str() {
            "org" => Format::Org,
            "rst" | "rest" => Format::ReStructuredText,
            "adoc" | "asciidoc" | "asc" => Format::AsciiDoc,
            _ => Format::Markdown,
        }
    }

    /// Guesses the format from content, for callers that have no file name.
    ///
    /// Only unambiguous markers are counted (Org `#+KEYWORD:` lines and `**` headlines,
    /// reStructuredText directives and over-/underlined titles, AsciiDoc `= Title` and
    /// attributes); anything else is Markdown, which is also the safest reading of plain text.
    pub fn detect(text: &str) -> Format {
        let mut org = 0u32;
        let mut rst = 0u32;
        let mut adoc = 0u32;
        let mut md = 0u32;
        let mut prev: &str = "";
        let mut first_content = true;
        for line in text.lines().take(2000) {
            let line = line.trim_end();
            if line.starts_with("#+") && line[2..].starts_with(|c: char| c.is_ascii_alphabetic()) {
                org += 3;
            } else if line.eq_ignore_ascii_case(":PROPERTIES:") || line.starts_with("** ") {
                org += 2;
            } else if line.starts_with(".. ") {
                rst += 2;
            } else if line.starts_with("= ") && first_content {
                adoc += 4;
            } else if line.starts_with("== ") || line.starts_with("[source") {
                adoc += 2;
            } else if is_asciidoc_attribute(line) {
                adoc += 1;
            } else if line.starts_with("# ") || line.starts_with("## ") || line.starts_with("```") {
                md += 1;
            }
            // Underlines other than Markdown's `=`/`-` (and not a code fence) are a
            // reStructuredText habit.
            if let Some(c) = adornment(line)
                && !matches!(c, '-' | '=' | '`')
                && !prev.trim().is_empty()
                && adornment(prev).is_none()
                && line.len() >= prev.trim().chars().count()
            {
                rst += 2;
            }
            first_content &= line.is_empty();
            prev = line;
        }
        let best = org.max(rst).max(adoc);
        if best == 0 || md >= best {
            Format::Markdown
        } else if best == org {
            Format::Org
        } else if best == adoc {
            Format::AsciiDoc
        } else {
            Format::ReStructuredText
        }
    }
}

/// Most headings a section's trail keeps: the outermost (usually the document's title) and the
/// innermost ones, which say most about the text. Every passage carries its trail, so without a
/// bound a document of deeply nested headings (1,443 levels of Org outline in 1 MiB) would store
/// a quadratic number of them.
pub const MAX_TRAIL: usize = 6;

/// Longest heading kept, in characters; a longer one is cut with an ellipsis.
pub const MAX_HEADING_CHARS: usize = 160;

fn bounded_trail(titles: &[&String]) -> Vec<String> {
    if titles.len() <= MAX_TRAIL {
        return titles.iter().map(|t| (*t).clone()).collect();
    }
    let mut out = Vec::with_capacity(MAX_TRAIL);
    out.push(titles[0].clone());
    out.push("…".to_string());
    let inner = MAX_TRAIL - 2;
    out.extend(titles[titles.len() - inner..].iter().map(|t| (*t).clone()));
    out
}

fn bounded_title(title: String) -> String {
    match title.char_indices().nth(MAX_HEADING_CHARS) {
        Some((cut, _)) => format!("{}…", &title[..cut]),
        None => title,
    }
}

/// A run of body text under one heading trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Section {
    /// Heading titles, outermost first; empty for text before the first heading.
    pub trail: Vec<String>,
    pub blocks: Vec<Block>,
}

/// A paragraph or a literal block, as a byte range of the document text that starts at a line
/// start and ends at the end of its last line (line ending excluded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Block {
    pub range: Range<usize>,
    /// Literal blocks are cut at line boundaries rather than sentences when too long.
    pub code: bool,
}

/// Splits `text[body]` into sections of blocks. A `title` the note gives apart from its
/// headings (its front matter's) heads every trail, unless a heading says the same.
pub(crate) fn sections(
    text: &str,
    body: Range<usize>,
    format: Format,
    title: Option<&str>,
) -> Vec<Section> {
    let (mut sections, headings) = outline(text, body, format);
    let Some(title) = title.map(|t| bounded_title(t.to_owned())) else {
        return sections;
    };
    if headings
        .iter()
        .any(|h| h.title.eq_ignore_ascii_case(&title))
    {
        return sections;
    }
    for s in &mut sections {
        let trail: Vec<&String> = std::iter::once(&title).chain(&s.trail).collect();
        s.trail = bounded_trail(&trail);
    }
    sections
}

/// A heading as written: where its first line starts and its title (bounded as trails are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Heading {
    pub at: usize,
    pub level: usize,
    pub title: String,
}

/// The sections of `text[body]` and every heading, in order: a link's anchor names a heading
/// that may title no text of its own.
pub(crate) fn outline(
    text: &str,
    body: Range<usize>,
    format: Format,
) -> (Vec<Section>, Vec<Heading>) {
    let mut parser = Parser {
        headings: Vec::new(),
        text,
        format,
        sections: Vec::new(),
        stack: Vec::new(),
        blocks: Vec::new(),
        para: None,
        lead: None,
        fence: None,
        rst_styles: Vec::new(),
        bare: None,
    };
    let mut lines = Lines {
        text,
        pos: body.start,
        end: body.end,
        ahead: Vec::new(),
    };
    while let Some(line) = lines.next() {
        parser.line(line, &mut lines);
    }
    let headings = std::mem::take(&mut parser.headings);
    (parser.finish(), headings)
}

#[derive(Debug, Clone, Copy)]
struct Line {
    start: usize,
    /// End of content, before `\r\n` or `\n`.
    end: usize,
}

/// Line iterator with a little lookahead, for two- and three-line headings.
struct Lines<'a> {
    text: &'a str,
    pos: usize,
    end: usize,
    ahead: Vec<Line>,
}

impl Lines<'_> {
    fn read(&mut self) -> Option<Line> {
        if self.pos >= self.end {
            return None;
        }
        let start = self.pos;
        let (mut content_end, next) = match self.text[start..self.end].find('\n') {
            Some(i) => (start + i, start + i + 1),
            None => (self.end, self.end),
        };
        if self.text[start..content_end].ends_with('\r') {
            content_end -= 1;
        }
        self.pos = next;
        Some(Line {
            start,
            end: content_end,
        })
    }

    fn peek(&mut self, n: usize) -> Option<Line> {
        while self.ahead.len() <= n {
            let line = self.read()?;
            self.ahead.push(line);
        }
        self.ahead.get(n).copied()
    }

    fn skip(&mut self, n: usize) {
        for _ in 0..n {
            self.next();
        }
    }
}

impl Iterator for Lines<'_> {
    type Item = Line;

    fn next(&mut self) -> Option<Line> {
        if self.ahead.is_empty() {
            self.read()
        } else {
            Some(self.ahead.remove(0))
        }
    }
}

#[derive(Debug)]
enum FenceKind {
    /// Markdown ``` or ~~~ with the opening length.
    Markdown(char, usize),
    /// Org `#+begin_x` … `#+end_x`.
    OrgBlock,
    /// Org property drawer; metadata, not content.
    Drawer,
    /// AsciiDoc delimited block, closed by an identical line.
    Delimited(String),
}

#[derive(Debug)]
struct Fence {
    kind: FenceKind,
    start: usize,
    /// End of the last non-blank line so far, where an unclosed block ends.
    last: usize,
    /// Comment blocks and drawers are dropped rather than embedded.
    drop: bool,
}

struct Parser<'a> {
    text: &'a str,
    format: Format,
    sections: Vec<Section>,
    /// Open headings as (level, title).
    stack: Vec<(usize, String)>,
    blocks: Vec<Block>,
    para: Option<Range<usize>>,
    /// An anchor paragraph waiting to see whether a heading follows it.
    lead: Option<Range<usize>>,
    fence: Option<Fence>,
    /// reStructuredText heading levels come from the order adornment styles first appear.
    rst_styles: Vec<(char, bool)>,
    /// The last heading's level and lines, while nothing but headings has followed it.
    bare: Option<(usize, Range<usize>)>,
    headings: Vec<Heading>,
}

impl Parser<'_> {
    fn line(&mut self, line: Line, lines: &mut Lines<'_>) {
        let s = &self.text[line.start..line.end];
        if let Some(fence) = &mut self.fence {
            if closes(&fence.kind, s) {
                let (start, drop) = (fence.start, fence.drop);
                self.fence = None;
                if !drop {
                    self.flush_lead();
                    self.blocks.push(Block {
                        range: start..line.end,
                        code: true,
                    });
                }
            } else if !s.trim().is_empty() {
                fence.last = line.end;
            }
            return;
        }
        if s.trim().is_empty() {
            self.close_para();
            return;
        }
        if let Some((kind, drop)) = opens(self.format, s) {
            self.close_para();
            self.fence = Some(Fence {
                kind,
                start: line.start,
                last: line.end,
                drop,
            });
            return;
        }
        if let Some((level, title)) = single_line_heading(self.format, s) {
            self.heading(level, title, line.start..line.end);
            return;
        }
        match self.format {
            Format::Markdown => {
                if let Some(next) = lines.peek(0)
                    && let Some(level) = setext_level(&self.text[next.start..next.end])
                    && can_be_setext_title(s)
                {
                    lines.skip(1);
                    self.heading(level, s.trim().to_owned(), line.start..next.end);
                    return;
                }
            }
            Format::ReStructuredText => {
                if self.rst_heading(s, line, lines) {
                    return;
                }
            }
            Format::Org | Format::AsciiDoc => {}
        }
        match &mut self.para {
            Some(p) => p.end = line.end,
            None => self.para = Some(line.start..line.end),
        }
    }

    /// Recognises `Title` + underline and overline + `Title` + underline.
    fn rst_heading(&mut self, s: &str, line: Line, lines: &mut Lines<'_>) -> bool {
        if let Some(over) = adornment(s) {
            let (Some(title), Some(under)) = (lines.peek(0), lines.peek(1)) else {
                return false;
            };
            let title_text = self.text[title.start..title.end].trim();
            let under_text = &self.text[under.start..under.end];
            if !title_text.is_empty()
                && adornment(title_text).is_none()
                && adornment(under_text) == Some(over)
            {
                lines.skip(2);
                let level = self.rst_level((over, true));
                self.heading(level, title_text.to_owned(), line.start..under.end);
                return true;
            }
            return false;
        }
        if s.starts_with(char::is_whitespace) {
            return false;
        }
        let Some(next) = lines.peek(0) else {
            return false;
        };
        let under = self.text[next.start..next.end].trim_end();
        let Some(c) = adornment(under) else {
            return false;
        };
        let len = under.len();
        if len < 4 && len < s.trim_end().chars().count() {
            return false;
        }
        lines.skip(1);
        let level = self.rst_level((c, false));
        self.heading(level, s.trim().to_owned(), line.start..next.end);
        true
    }

    fn rst_level(&mut self, style: (char, bool)) -> usize {
        match self.rst_styles.iter().position(|s| *s == style) {
            Some(i) => i + 1,
            None => {
                self.rst_styles.push(style);
                self.rst_styles.len()
            }
        }
    }

    fn close_para(&mut self) {
        let Some(range) = self.para.take() else {
            return;
        };
        let text = &self.text[range.clone()];
        if self.format == Format::Markdown {
            // Link reference definitions (`[label]: url`) are where links point, not text:
            // matching a query against a list of link targets only crowds out real passages.
            if text.lines().all(is_link_definition) {
                return;
            }
            // An HTML anchor on its own (`<a id="…"></a>`) names the heading that follows it;
            // it belongs to that section, not to the end of the one before.
            if text.lines().all(is_anchor) {
                self.flush_lead();
                self.lead = Some(range);
                return;
            }
        }
        self.flush_lead();
        self.blocks.push(Block { range, code: false });
    }

    /// An anchor that turned out not to precede a heading stays where it was.
    fn flush_lead(&mut self) {
        if let Some(range) = self.lead.take() {
            self.blocks.push(Block { range, code: false });
        }
    }

    /// Closes the open section; `next` is the level of the heading that closes it (`None` at
    /// the end of the document).
    fn close_section(&mut self, next: Option<usize>) {
        self.close_para();
        // A heading with nothing under it — an Org TODO item, an outline's leaf, a note cut down
        // to its title — is text people search for: its own line becomes its section's text.
        // A heading followed by a deeper one is not (it titles what follows, and its words are
        // in every trail below it).
        if let Some((level, range)) = self.bare.take()
            && self.blocks.is_empty()
            && next.is_none_or(|n| n <= level)
        {
            self.blocks.push(Block { range, code: false });
        }
        if !self.blocks.is_empty() {
            let titles: Vec<&String> = self
                .stack
                .iter()
                .filter(|(_, t)| !t.is_empty())
                .map(|(_, t)| t)
                .collect();
            let trail = bounded_trail(&titles);
            let blocks = std::mem::take(&mut self.blocks);
            self.sections.push(Section { trail, blocks });
        }
    }

    fn heading(&mut self, level: usize, title: String, lines: Range<usize>) {
        self.close_section(Some(level));
        let title = bounded_title(title);
        self.headings.push(Heading {
            at: lines.start,
            level,
            title: title.clone(),
        });
        while self.stack.last().is_some_and(|(l, _)| *l >= level) {
            self.stack.pop();
        }
        self.stack.push((level, title));
        self.bare = Some((level, lines));
        if let Some(range) = self.lead.take() {
            self.blocks.push(Block { range, code: false });
        }
    }

    fn finish(mut self) -> Vec<Section> {
        // An unclosed literal block runs to the end, as Markdown renderers show it.
        if let Some(fence) = self.fence.take()
            && !fence.drop
        {
            self.close_para();
            self.flush_lead();
            self.blocks.push(Block {
                range: fence.start..fence.last,
                code: true,
            });
        }
        self.close_para();
        self.flush_lead();
        self.close_section(None);
        self.sections
    }
}

/// `[label]: destination` at most three spaces in (CommonMark's link reference definition).
fn is_link_definition(line: &str) -> bool {
    let t = line.trim_start();
    if line.len() - t.len() > 3 || !t.starts_with('[') {
        return false;
    }
    match t.find("]:") {
        Some(i) => i > 1 && !t[i + 2..].trim().is_empty(),
        None => false,
    }
}

/// A line of nothing but HTML anchors: `<a id="x"></a>` or `<a name="x"></a>`, repeated.
fn is_anchor(line: &str) -> bool {
    let mut t = line.trim();
    if t.is_empty() {
        return false;
    }
    while !t.is_empty() {
        let lower = t.get(..6).unwrap_or("").to_ascii_lowercase();
        if !(lower.starts_with("<a id=") || lower.starts_with("<a nam")) {
            return false;
        }
        let Some(close) = t.find("</a>") else {
            return false;
        };
        // Only the tag: nothing visible between `>` and `</a>`.
        let Some(gt) = t.find('>') else {
            return false;
        };
        if gt > close || !t[gt + 1..close].trim().is_empty() {
            return false;
        }
        t = t[close + 4..].trim_start();
    }
    true
}

fn opens(format: Format, s: &str) -> Option<(FenceKind, bool)> {
    let t = s.trim_start();
    let indent = s.len() - t.len();
    if matches!(format, Format::Markdown | Format::AsciiDoc) && indent <= 3 {
        for fence_char in ['`', '~'] {
            let n = t.chars().take_while(|&c| c == fence_char).count();
            if n >= 3 && !(fence_char == '`' && t[n..].contains('`')) {
                return Some((FenceKind::Markdown(fence_char, n), false));
            }
        }
    }
    match format {
        Format::Org => {
            let lower = t.get(..8).unwrap_or("").to_ascii_lowercase();
            if lower == "#+begin_" {
                let comment = t
                    .get(8..15)
                    .is_some_and(|k| k.eq_ignore_ascii_case("comment"));
                return Some((FenceKind::OrgBlock, comment));
            }
            let tt = t.trim_end();
            if tt.len() > 2
                && tt.starts_with(':')
                && tt.ends_with(':')
                && tt[1..tt.len() - 1]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                && !tt.eq_ignore_ascii_case(":END:")
            {
                return Some((FenceKind::Drawer, true));
            }
            None
        }
        Format::AsciiDoc => {
            let tt = s.trim_end();
            if tt == "|===" {
                return Some((FenceKind::Delimited(tt.to_owned()), false));
            }
            let first = tt.chars().next()?;
            if tt.len() >= 4 && "-.=*_+/".contains(first) && tt.chars().all(|c| c == first) {
                return Some((FenceKind::Delimited(tt.to_owned()), first == '/'));
            }
            None
        }
        Format::Markdown | Format::ReStructuredText => None,
    }
}

fn closes(kind: &FenceKind, s: &str) -> bool {
    let t = s.trim();
    match kind {
        FenceKind::Markdown(c, n) => t.len() >= *n && t.chars().all(|x| x == *c),
        FenceKind::OrgBlock => t.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("#+end_")),
        FenceKind::Drawer => t.eq_ignore_ascii_case(":END:"),
        FenceKind::Delimited(d) => s.trim_end() == d,
    }
}

fn single_line_heading(format: Format, s: &str) -> Option<(usize, String)> {
    match format {
        Format::Markdown => atx(s),
        Format::AsciiDoc => asciidoc_title(s).or_else(|| atx(s)),
        Format::Org => org_headline(s),
        Format::ReStructuredText => None,
    }
}

/// `# Title`, `## Title ##`; up to three spaces of indent, a space required after the marks
/// (so `#tag` lines stay text).
fn atx(s: &str) -> Option<(usize, String)> {
    let t = s.trim_start();
    if s.len() - t.len() > 3 {
        return None;
    }
    let level = t.chars().take_while(|&c| c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &t[level..];
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    let rest = rest.trim();
    let without_closing = rest.trim_end_matches('#');
    let title = if without_closing.is_empty() || without_closing.ends_with([' ', '\t']) {
        without_closing.trim_end()
    } else {
        rest
    };
    Some((level, title.to_owned()))
}

fn asciidoc_title(s: &str) -> Option<(usize, String)> {
    let level = s.chars().take_while(|&c| c == '=').count();
    if !(1..=6).contains(&level) || !s[level..].starts_with([' ', '\t']) {
        return None;
    }
    let title = s[level..].trim();
    let title = match title.strip_suffix(&"=".repeat(level)) {
        Some(t) if t.ends_with(' ') => t.trim_end(),
        _ => title,
    };
    Some((level, title.to_owned()))
}

/// `** TODO [#A] Title   :tag:other:` → (2, "Title"): keywords, priorities and tags are
/// bookkeeping that would only add noise to every passage's context line.
fn org_headline(s: &str) -> Option<(usize, String)> {
    let level = s.chars().take_while(|&c| c == '*').count();
    if level == 0 || !s[level..].starts_with([' ', '\t']) {
        return None;
    }
    let mut title = s[level..].trim();
    for kw in [
        "TODO ",
        "DONE ",
        "NEXT ",
        "WAITING ",
        "CANCELLED ",
        "CANCELED ",
    ] {
        if let Some(rest) = title.strip_prefix(kw) {
            title = rest.trim_start();
            break;
        }
    }
    if title.len() >= 5 && title.starts_with("[#") && title.as_bytes().get(3) == Some(&b']') {
        title = title[4..].trim_start();
    }
    if let Some(i) = title.rfind([' ', '\t']) {
        let last = &title[i + 1..];
        if last.len() > 2 && last.starts_with(':') && last.ends_with(':') {
            title = title[..i].trim_end();
        }
    }
    Some((level, title.to_owned()))
}

/// `===` → level 1, `---` → level 2.
fn setext_level(s: &str) -> Option<usize> {
    let t = s.trim_start();
    if s.len() - t.len() > 3 {
        return None;
    }
    let t = t.trim_end();
    let c = t.chars().next()?;
    if !(c == '=' || c == '-') || !t.chars().all(|x| x == c) {
        return None;
    }
    Some(if c == '=' { 1 } else { 2 })
}

/// Lines that Markdown would not turn into a heading even with an underline below them.
fn can_be_setext_title(s: &str) -> bool {
    let t = s.trim_start();
    if s.len() - t.len() > 3 || t.starts_with(['>', '|']) {
        return false;
    }
    let list_marker = t.starts_with(['-', '*', '+']) && t[1..].starts_with([' ', '\t']);
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    let ordered = digits > 0
        && t[digits..].starts_with(['.', ')'])
        && t[digits + 1..].starts_with([' ', '\t']);
    !list_marker && !ordered
}

/// `:name:` or `:name: value` at the start of a line.
fn is_asciidoc_attribute(line: &str) -> bool {
    let Some(rest) = line.strip_prefix(':') else {
        return false;
    };
    let Some(end) = rest.find(':') else {
        return false;
    };
    end > 0
        && rest[..end]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && (rest.len() == end + 1 || rest[end + 1..].starts_with(' '))
}

/// A reStructuredText adornment line: one punctuation character repeated, at least twice.
fn adornment(s: &str) -> Option<char> {
    let t = s.trim_end();
    let c = t.chars().next()?;
    if t.len() < 2 || !c.is_ascii_punctuation() || !t.chars().all(|x| x == c) {
        return None;
    }
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, format: Format) -> Vec<(Vec<String>, Vec<String>)> {
        sections(text, 0..text.len(), format, None)
            .into_iter()
            .map(|s| {
                (
                    s.trail,
                    s.blocks
                        .iter()
                        .map(|b| text[b.range.clone()].to_owned())
                        .collect(),
                )
            })
            .collect()
    }

    fn trails(text: &str, format: Format) -> Vec<Vec<String>> {
        parse(text, format).into_iter().map(|(t, _)| t).collect()
    }

    #[test]
    fn anchors_go_with_their_heading_and_link_definitions_are_not_text() {
        let text = "# Errors\n\nIntro text.\n\n<a id=\"ERR_X\"></a>\n\n## ERR_X\n\nAn X failed.\n\n\
                    [`x`]: #err_x\n[Y]: https://example.com/y\n\n<a id=\"stray\"></a>\n\nplain end\n";
        let doc = crate::corpus::Document::from_text(text.to_string());
        let secs = sections(text, doc.body.clone(), Format::Markdown, None);
        let shown: Vec<(Vec<String>, Vec<&str>)> = secs
            .iter()
            .map(|s| {
                (
                    s.trail.clone(),
                    s.blocks.iter().map(|b| &text[b.range.clone()]).collect(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            vec![
                (vec!["Errors".to_string()], vec!["Intro text."]),
                (
                    vec!["Errors".to_string(), "ERR_X".to_string()],
                    vec![
                        "<a id=\"ERR_X\"></a>",
                        "An X failed.",
                        "<a id=\"stray\"></a>",
                        "plain end"
                    ]
                ),
            ]
        );
        assert!(is_link_definition("[`napi_finalize`]: #napi_finalize"));
        assert!(!is_link_definition("[not a def] just text"));
        assert!(is_anchor("<a id=\"a\"></a><a name=\"b\"></a>"));
        assert!(!is_anchor("<a id=\"a\">visible</a>"));
    }

    #[test]
    fn deep_outlines_keep_trails_bounded() {
        // 1,443 nested Org headings, each with a line of text: the trails stay linear in size.
        let mut text = String::new();
        for d in 1..=1443 {
            text.push_str(&"*".repeat(d));
            text.push_str(&format!(" heading number {d}\ntext {d}\n"));
        }
        let long = format!("* {}\nbody\n", "t".repeat(10_000));
        text.push_str(&long);
        let all = trails(&text, Format::Org);
        assert_eq!(all.len(), 1444);
        let stored: usize = all.iter().map(Vec::len).sum();
        assert!(stored <= 1444 * MAX_TRAIL, "{stored} headings");
        let deepest = &all[1442];
        assert_eq!(deepest.len(), MAX_TRAIL);
        assert_eq!(deepest[0], "heading number 1");
        assert_eq!(deepest[1], "…");
        assert_eq!(deepest[MAX_TRAIL - 1], "heading number 1443");
        let last = all.last().unwrap();
        assert_eq!(last[0].chars().count(), MAX_HEADING_CHARS + 1);
    }

    #[test]
    fn markdown_atx_and_setext_build_a_trail() {
        let text = "intro\n\n# Title #\n\ntext\n\n## Sub\npara\n\nOther\n-----\nx\n\nTop\n===\ny\n";
        assert_eq!(
            parse(text, Format::Markdown),
            vec![
                (vec![], vec!["intro".to_owned()]),
                (vec!["Title".to_owned()], vec!["text".to_owned()]),
                (
                    vec!["Title".to_owned(), "Sub".to_owned()],
                    vec!["para".to_owned()]
                ),
                (
                    vec!["Title".to_owned(), "Other".to_owned()],
                    vec!["x".to_owned()]
                ),
                (vec!["Top".to_owned()], vec!["y".to_owned()]),
            ]
        );
    }

    #[test]
    fn markdown_non_headings() {
        let text =
            "#tag line\n- item\n---\n\n    # indented code\n\n```sh\n# comment\n\ncode\n```\n";
        let parsed = parse(text, Format::Markdown);
        assert_eq!(parsed.len(), 1, "{parsed:?}");
        assert_eq!(
            parsed[0].1,
            [
                "#tag line\n- item\n---",
                "    # indented code",
                "```sh\n# comment\n\ncode\n```"
            ]
        );
    }

    #[test]
    fn unclosed_fence_runs_to_the_end() {
        let text = "a\n\n~~~\ncode\n# not a heading\n\n";
        assert_eq!(
            parse(text, Format::Markdown),
            vec![(
                vec![],
                vec!["a".into(), "~~~\ncode\n# not a heading".into()]
            )]
        );
    }

    #[test]
    fn org_headlines_strip_keywords_and_tags_and_drop_drawers() {
        let text = concat!(
            "#+TITLE: x\n* TODO [#A] Plan   :work:\n:PROPERTIES:\n:ID: 1\n:END:\nbody\n",
            "** Step\n- item\n#+begin_src sh\n* not heading\n#+end_src\n"
        );
        let parsed = parse(text, Format::Org);
        assert_eq!(
            trails(text, Format::Org),
            [vec![], vec!["Plan"], vec!["Plan", "Step"]]
        );
        assert_eq!(parsed[1].1, ["body"]);
        assert_eq!(
            parsed[2].1,
            ["- item", "#+begin_src sh\n* not heading\n#+end_src"]
        );
    }

    #[test]
    fn rst_titles_use_style_order_for_levels() {
        let text = concat!(
            "=====\nDoc\n=====\n\nChapter\n-------\n\ntext\n\nSection\n~~~~~~~\n\nmore\n\n",
            "Next chapter\n------------\nend\n"
        );
        assert_eq!(
            trails(text, Format::ReStructuredText),
            [
                vec!["Doc", "Chapter"],
                vec!["Doc", "Chapter", "Section"],
                vec!["Doc", "Next chapter"]
            ]
        );
    }

    #[test]
    fn asciidoc_titles_and_delimited_blocks() {
        let text = concat!(
            "= Book\n:toc:\n\n== Part\n\n[source,rust]\n----\n== not a title\n----\n\n",
            "////\nhidden\n////\n=== Deep ===\nx\n"
        );
        let parsed = parse(text, Format::AsciiDoc);
        assert_eq!(
            trails(text, Format::AsciiDoc),
            [
                vec!["Book"],
                vec!["Book", "Part"],
                vec!["Book", "Part", "Deep"]
            ]
        );
        assert_eq!(parsed[1].1, ["[source,rust]", "----\n== not a title\n----"]);
    }

    #[test]
    fn crlf_lines_are_handled() {
        let text = "# A\r\n\r\none\r\ntwo\r\n\r\nB\r\n---\r\nthree\r\n";
        assert_eq!(
            parse(text, Format::Markdown),
            vec![
                (vec!["A".into()], vec!["one\r\ntwo".into()]),
                (vec!["A".into(), "B".into()], vec!["three".into()])
            ]
        );
    }

    #[test]
    fn detects_formats_from_content() {
        assert_eq!(
            Format::detect("# Title\n\n* item\n* item\n"),
            Format::Markdown
        );
        assert_eq!(
            Format::detect("#+title: Notes\n* Heading\ntext\n"),
            Format::Org
        );
        assert_eq!(
            Format::detect("Title\n~~~~~\n\n.. note::\n   hi\n"),
            Format::ReStructuredText
        );
        assert_eq!(
            Format::detect("= Document\n:author: me\n\n== Part\n"),
            Format::AsciiDoc
        );
        assert_eq!(Format::detect("just some text\n"), Format::Markdown);
        assert_eq!(Format::from_path(Path::new("a/B.ORG")), Format::Org);
        assert_eq!(Format::from_path(Path::new("x.txt")), Format::Markdown);
    }
}
