//! Questions the notes ask of themselves.
//!
//! A link's words and the sentence around them say, in the writer's own words, what the note or
//! section it points to is about; a front matter title or alias is what the writer calls the
//! note; a heading that asks a question is answered by its section. They are known-item
//! questions labelled for free, on the user's own notes, in the user's own way of asking: what
//! the index fits its fusion of the two rankers on (`index::fit`), per corpus.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::frontmatter::{FrontMatterKind, front_matter};
use super::read::Document;
use super::structure::{self, Format, Heading, Section};

/// Where a question came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuestionKind {
    /// A Markdown link (inline or by reference) or an Org link to another note or a heading.
    Link,
    /// `[[Note]]`, `[[Note#Heading|words]]` (Obsidian, Foam, wikis).
    WikiLink,
    /// reStructuredText `:ref:` and `:doc:`, AsciiDoc `<<id>>` and `xref:`.
    CrossReference,
    /// A front matter `title` or one of its `aliases`.
    Title,
    /// A heading that asks a question (it ends with `?`); its section answers it.
    QuestionHeading,
}

impl QuestionKind {
    pub fn name(self) -> &'static str {
        match self {
            QuestionKind::Link => "link",
            QuestionKind::WikiLink => "wikilink",
            QuestionKind::CrossReference => "cross-reference",
            QuestionKind::Title => "title",
            QuestionKind::QuestionHeading => "question heading",
        }
    }
}

/// A known-item question: its words, where they are written, and what answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub text: String,
    pub kind: QuestionKind,
    /// The file whose text asks it.
    pub source: PathBuf,
    /// The 1-based line of the link or heading in `source`; 0 for front matter, which is not
    /// indexed (so no passage holds the question).
    pub line: usize,
    /// The lines whose text the question quotes (its paragraph), 1-based and inclusive: a
    /// passage holding any of them holds the question. `None` for front matter.
    pub asked_in: Option<(usize, usize)>,
    /// The file that answers it.
    pub target: PathBuf,
    /// The section that answers it, as its heading appears in passage trails; `None`: any part
    /// of the file.
    pub heading: Option<String>,
    /// That section's lines, 1-based and inclusive: its heading's to the line before the next
    /// heading.
    pub lines: Option<(usize, usize)>,
}

impl Question {
    /// Which fixed half the question belongs to: training teaches the encoder one half
    /// (`true`) and the fusion is fitted on the other, so that the fit never judges the sides
    /// by questions the semantic side was taught the answers to. Decided by the question's words,
    /// line and file names alone, so a corpus splits the same way at every update and training,
    /// wherever its folder is.
    pub fn teaches(&self) -> bool {
        // FNV-1a: stable across builds and platforms, unlike the std hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
            }
        };
        let name = |p: &Path| {
            p.file_name()
                .unwrap_or_default()
                .as_encoded_bytes()
                .to_vec()
        };
        eat(&name(&self.source));
        eat(&(self.line as u64).to_le_bytes());
        eat(&name(&self.target));
        eat(self.text.as_bytes());
        // MurmurHash3's finaliser: FNV alone leaves its last bytes out of the high bits.
        h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h = (h ^ (h >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        (h ^ (h >> 33)) & 1 == 1
    }
}

/// Fewest words of a link's sentence or a question heading: a bare link in a list
/// ("[Usage](usage.md)") only repeats a title, and "Why?" asks nothing in particular.
const MIN_SENTENCE_WORDS: usize = 3;
/// Fewest words of a front matter title or alias.
const MIN_TITLE_WORDS: usize = 2;
/// Bytes a link's closing bracket is looked for ahead of its opening: a file of unclosed
/// brackets stays linear.
const MAX_LINK_BYTES: usize = 2048;
/// The most of a long sentence kept on each side of its link, in bytes.
const CONTEXT_BYTES: usize = 160;

/// Most links kept for one passage.
pub const MAX_PASSAGE_LINKS: usize = 64;

/// The links `text` (a passage of a file of `format`) makes to notes, files and headings,
/// each once, in order; links to the web are not kept.
pub fn links_in(text: &str, format: Format) -> Vec<LinkTarget> {
    let links = match format {
        Format::Markdown => markdown_links(text, &HashMap::new()),
        Format::ReStructuredText => rst_links(text),
        Format::AsciiDoc => asciidoc_links(text),
        Format::Org => org_links(text),
    };
    let mut out: Vec<LinkTarget> = Vec::new();
    for l in links {
        if out.len() == MAX_PASSAGE_LINKS {
            break;
        }
        if !out.contains(&l.dest) {
            out.push(l.dest);
        }
    }
    out
}

/// Every question the files ask of each other (and of themselves), in file and line order,
/// each once, at most `per_file` from one file (the first). A link counts only when its target
/// is one of `files` (and its anchor, when it points inside the same file, is a heading there).
pub fn questions(files: &[(PathBuf, Document)], per_file: usize) -> Vec<Question> {
    let corpus = Corpus::new(files);
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, f) in corpus.files.iter().enumerate() {
        let mut mine = Vec::new();
        corpus.links_of(i, &mut mine);
        titles_of(f, &mut mine);
        for (k, h) in f.headings.iter().enumerate() {
            let t = h.title.trim();
            if t.ends_with('?') && t.split_whitespace().count() >= MIN_SENTENCE_WORDS {
                let line = f.line_of(h.at);
                mine.push(Question {
                    text: clean(t),
                    kind: QuestionKind::QuestionHeading,
                    source: f.path.to_path_buf(),
                    line,
                    asked_in: Some((line, line)),
                    target: f.path.to_path_buf(),
                    heading: Some(h.title.clone()),
                    lines: Some(f.section_lines(k)),
                });
            }
        }
        let mut taken = 0;
        for q in mine {
            if taken == per_file {
                break;
            }
            let key = (
                q.text.to_lowercase(),
                q.target.clone(),
                q.heading.clone(),
                q.kind == QuestionKind::QuestionHeading,
            );
            if seen.insert(key) {
                out.push(q);
                taken += 1;
            }
        }
    }
    out
}

struct File<'a> {
    path: &'a Path,
    doc: &'a Document,
    format: Format,
    sections: Vec<Section>,
    headings: Vec<Heading>,
    /// Anchor or id (lower-cased) → the heading it names (its place in `headings`).
    anchors: HashMap<String, usize>,
    /// Markdown link reference definitions: label (lower-cased) → destination.
    definitions: HashMap<String, String>,
    /// Where each line starts, for line numbers in logarithmic time.
    lines: Vec<usize>,
    /// Heading title (trimmed, lower-cased) → its first heading.
    titled: HashMap<String, usize>,
}

struct Corpus<'a> {
    files: Vec<File<'a>>,
    by_path: HashMap<PathBuf, usize>,
    /// Lower-cased file stem → the file, `None` when two files share it.
    by_stem: HashMap<String, Option<usize>>,
    /// reStructuredText labels (lower-cased) → file and heading; they are global.
    labels: HashMap<String, (usize, usize)>,
}

/// Where a link points, as written (before it is looked up among the files): what the index
/// keeps of each link a passage makes (`PassageRecord::links`), so that the notes' own links
/// can be followed later (backlinks, training labels) without reading the files again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkTarget {
    /// A relative path (empty: this file) and an anchor.
    Path(String, Option<String>),
    /// A note by name, as wikilinks name them, and a heading title.
    Note(String, Option<String>),
    /// A reStructuredText label.
    Label(String),
    /// A reStructuredText document path (no extension; a leading `/` is the docs' root).
    Doc(String),
    /// A heading of this file by its title (Org `*Heading`).
    Heading(String),
    /// A heading of a file by its title (Org `file:x.org::*Heading`).
    FileHeading(String, String),
}

/// A link inside a block: its byte range there, the words it shows (empty: the target's title),
/// where it points and what kind of link it is.
struct Link {
    range: std::ops::Range<usize>,
    words: String,
    dest: LinkTarget,
    kind: QuestionKind,
}

impl<'a> Corpus<'a> {
    fn new(files: &'a [(PathBuf, Document)]) -> Self {
        let mut out = Corpus {
            files: Vec::with_capacity(files.len()),
            by_path: HashMap::new(),
            by_stem: HashMap::new(),
            labels: HashMap::new(),
        };
        for (i, (path, doc)) in files.iter().enumerate() {
            let format = Format::from_path(path);
            let (sections, headings) = structure::outline(&doc.text, doc.body.clone(), format);
            let lines = std::iter::once(0)
                .chain(doc.text.match_indices('\n').map(|(i, _)| i + 1))
                .collect();
            let mut titled = HashMap::new();
            for (k, h) in headings.iter().enumerate() {
                titled.entry(h.title.trim().to_lowercase()).or_insert(k);
            }
            let mut file = File {
                path,
                doc,
                format,
                sections,
                headings,
                anchors: HashMap::new(),
                definitions: HashMap::new(),
                lines,
                titled,
            };
            file.find_anchors(|label, title| {
                out.labels.entry(label).or_insert((i, title));
            });
            out.by_path.insert(normalize(path), i);
            if let Some(name) = path.file_name().and_then(|s| s.to_str()) {
                match out.by_stem.entry(note_name(name)) {
                    Entry::Vacant(v) => {
                        v.insert(Some(i));
                    }
                    Entry::Occupied(mut o) => {
                        o.insert(None);
                    }
                }
            }
            out.files.push(file);
        }
        out
    }

    fn links_of(&self, i: usize, out: &mut Vec<Question>) {
        let f = &self.files[i];
        for s in &f.sections {
            for b in s.blocks.iter().filter(|b| !b.code) {
                let Some(block) = f.doc.text.get(b.range.clone()) else {
                    continue;
                };
                let mut links = match f.format {
                    Format::Markdown => markdown_links(block, &f.definitions),
                    Format::ReStructuredText => rst_links(block),
                    Format::AsciiDoc => asciidoc_links(block),
                    Format::Org => org_links(block),
                };
                // Links that overlap (odd markup) keep the first.
                let mut end = 0;
                links.retain(|l| {
                    let keep = l.range.start >= end && l.range.end <= block.len();
                    if keep {
                        end = l.range.end;
                    }
                    keep
                });
                if links.is_empty() {
                    continue;
                }
                let resolved: Vec<Option<(usize, Option<usize>)>> =
                    links.iter().map(|l| self.resolve(i, &l.dest)).collect();
                // The block as it reads: each link shows its words (or its target's title).
                let mut plain = String::new();
                let mut spans = Vec::new();
                let mut at = 0;
                for (l, r) in links.iter().zip(&resolved) {
                    plain.push_str(&block[at..l.range.start]);
                    let start = plain.len();
                    let words = if l.words.trim().is_empty() {
                        r.and_then(|(t, h)| self.files[t].headings.get(h.unwrap_or(0)))
                            .map(|h| h.title.clone())
                            .unwrap_or_default()
                    } else {
                        l.words.clone()
                    };
                    plain.push_str(&words);
                    spans.push(start..plain.len());
                    at = l.range.end;
                }
                plain.push_str(&block[at..]);
                for ((l, r), span) in links.iter().zip(resolved).zip(spans) {
                    let Some((target, heading)) = r else {
                        continue;
                    };
                    let text = clean(sentence_around(&plain, span));
                    if text.split_whitespace().count() < MIN_SENTENCE_WORDS {
                        continue;
                    }
                    let t = &self.files[target];
                    out.push(Question {
                        text,
                        kind: l.kind,
                        source: f.path.to_path_buf(),
                        line: f.line_of(b.range.start + l.range.start),
                        asked_in: Some((
                            f.line_of(b.range.start),
                            f.line_of(b.range.end.saturating_sub(1).max(b.range.start)),
                        )),
                        target: t.path.to_path_buf(),
                        heading: heading
                            .and_then(|h| t.headings.get(h))
                            .map(|h| h.title.clone()),
                        lines: heading.map(|h| t.section_lines(h)),
                    });
                }
            }
        }
    }

    /// The file (and heading) a link points to, if it is one of the corpus's.
    fn resolve(&self, from: usize, dest: &LinkTarget) -> Option<(usize, Option<usize>)> {
        let here = self.files[from].path.parent().unwrap_or(Path::new(""));
        match dest {
            LinkTarget::Path(p, anchor) => {
                let target = if p.is_empty() {
                    from
                } else {
                    self.find_from(here, &percent_decode(p))?
                };
                let heading = anchor
                    .as_ref()
                    .and_then(|a| self.files[target].anchors.get(&a.to_lowercase()).copied());
                // A link inside its own file says where, or it says nothing.
                if target == from && heading.is_none() {
                    return None;
                }
                Some((target, heading))
            }
            LinkTarget::Note(name, heading) => {
                let target = if name.is_empty() {
                    from
                } else {
                    match self.by_stem.get(&note_name(name)) {
                        Some(Some(t)) => *t,
                        _ => self.find_from(here, name)?,
                    }
                };
                let heading = match heading {
                    Some(h) => Some(self.heading_titled(target, h)?),
                    None => None,
                };
                if target == from && heading.is_none() {
                    return None;
                }
                Some((target, heading))
            }
            LinkTarget::Label(label) => {
                let &(t, h) = self.labels.get(&label.to_lowercase())?;
                Some((t, Some(h)))
            }
            LinkTarget::Doc(doc) => {
                let target = self.find_from(here, doc)?;
                (target != from).then_some((target, None))
            }
            LinkTarget::Heading(title) => Some((from, Some(self.heading_titled(from, title)?))),
            LinkTarget::FileHeading(path, title) => {
                let target = self.find_from(here, path)?;
                Some((target, Some(self.heading_titled(target, title)?)))
            }
        }
    }

    /// The file `p` names from folder `here`. A path from the site's root (`/docs/a.md`) is
    /// looked for under the nearest folder above `here` that has it: the notes' own root is
    /// not known from inside them.
    fn find_from(&self, here: &Path, p: &str) -> Option<usize> {
        match p.strip_prefix('/') {
            Some(rest) => here
                .ancestors()
                .take(12)
                .find_map(|a| self.find_path(&a.join(rest))),
            None => self.find_path(&here.join(p)),
        }
    }

    /// A file of the corpus at `p`, as written or as its source: docs link to the page a file
    /// becomes (`usage.html`, `usage/`), or leave the extension out (`:doc:`, wikis).
    fn find_path(&self, p: &Path) -> Option<usize> {
        let p = normalize(p);
        if let Some(&i) = self.by_path.get(&p) {
            return Some(i);
        }
        // The page a source becomes: its name with `.html` for the source's extension, or no
        // extension at all (`v1.2` stays `v1.2`: only a known extension is replaced).
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        let base = if matches!(ext, "html" | "htm") || SOURCES.contains(&ext) {
            p.with_extension("")
        } else {
            p.clone()
        };
        let with = |b: &Path, e: &str| {
            let mut s = b.as_os_str().to_owned();
            s.push(".");
            s.push(e);
            PathBuf::from(s)
        };
        let mut tries: Vec<PathBuf> = SOURCES.iter().map(|e| with(&base, e)).collect();
        for name in ["index", "README", "readme", "_index"] {
            tries.extend(SOURCES.iter().map(|e| with(&p.join(name), e)));
        }
        tries.iter().find_map(|t| self.by_path.get(t).copied())
    }

    fn heading_titled(&self, file: usize, title: &str) -> Option<usize> {
        self.files[file]
            .titled
            .get(&title.trim().to_lowercase())
            .copied()
    }
}

impl File<'_> {
    /// A heading's section as lines: from its own to the one before the next heading.
    /// Heading `k`'s section as lines: from its own to the line before the next heading of its
    /// level or higher (subsections included), less the blank and anchor lines that stand
    /// before that heading (they open its section).
    fn section_lines(&self, k: usize) -> (usize, usize) {
        let h = &self.headings[k];
        let first = self.line_of(h.at);
        let next = self.headings[k + 1..]
            .iter()
            .find(|n| n.level <= h.level)
            .map(|n| self.line_of(n.at));
        let mut last = match next {
            Some(n) => n.saturating_sub(1),
            None => self.line_of(self.doc.text.trim_end().len()),
        };
        if next.is_some() {
            while last > first && self.opens_next(last) {
                last -= 1;
            }
        }
        (first, last.max(first))
    }

    /// Whether line `n` (1-based) is blank or an anchor for the heading after it.
    fn opens_next(&self, n: usize) -> bool {
        let start = self.lines.get(n - 1).copied().unwrap_or(0);
        let end = self.lines.get(n).copied().unwrap_or(self.doc.text.len());
        let t = self.doc.text.get(start..end).unwrap_or("").trim();
        t.is_empty()
            || html_anchor(t).is_some()
            || (t.starts_with("[[") && t.ends_with("]]"))
            || (t.starts_with("[#") && t.ends_with(']'))
            || (t.starts_with(".. _") && t.ends_with(':'))
    }

    /// The 1-based line of byte `at`.
    fn line_of(&self, at: usize) -> usize {
        self.lines.partition_point(|&start| start <= at).max(1)
    }

    /// Fills `anchors` and `definitions`; `label` hears of each reStructuredText label.
    fn find_anchors(&mut self, mut label: impl FnMut(String, usize)) {
        let mut slugs: HashMap<String, usize> = HashMap::new();
        for (i, h) in self.headings.iter().enumerate() {
            let t = h.title.trim();
            // GitHub's slugs, numbered on repeats; Markdown's explicit `{#id}`.
            let base = slug(t);
            let n = slugs.entry(base.clone()).or_insert(0);
            let s = if *n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            *n += 1;
            self.anchors.entry(s).or_insert(i);
            if let Some(open) = t.rfind("{#")
                && let Some(id) = t[open + 2..].strip_suffix('}')
            {
                self.anchors.entry(id.to_lowercase()).or_insert(i);
            }
            // AsciiDoc's automatic ids: `_` and the title's words joined by `_`.
            let auto: String = t
                .to_lowercase()
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join("_");
            self.anchors.entry(format!("_{auto}")).or_insert(i);
        }
        let text = self.doc.body_text();
        let offset = self.doc.body.start;
        let mut at = 0;
        for line in text.split_inclusive('\n') {
            let start = offset + at;
            at += line.len();
            let t = line.trim();
            if let Some(rest) = t.strip_prefix('[')
                && let Some(close) = rest.find("]:")
                && self.format == Format::Markdown
                && line.len() - line.trim_start().len() <= 3
            {
                let dest = rest[close + 2..].split_whitespace().next().unwrap_or("");
                let dest = dest.trim_start_matches('<').trim_end_matches('>');
                self.definitions
                    .entry(rest[..close].to_lowercase())
                    .or_insert_with(|| dest.to_string());
                continue;
            }
            let id = match self.format {
                // `.. _label:` (not `.. __:`, not `.. _name: url`, a link target).
                Format::ReStructuredText => t
                    .strip_prefix(".. _")
                    .and_then(|r| r.strip_suffix(':'))
                    .filter(|r| !r.is_empty() && !r.starts_with('_')),
                // `[[id]]`, `[[id,words]]`, `[#id]`, `[#id.role]`.
                Format::AsciiDoc => t
                    .strip_prefix("[[")
                    .and_then(|r| r.strip_suffix("]]"))
                    .map(|r| r.split(',').next().unwrap_or(r))
                    .or_else(|| {
                        t.strip_prefix("[#")
                            .and_then(|r| r.strip_suffix(']'))
                            .map(|r| r.split(['.', '%', ',']).next().unwrap_or(r))
                    }),
                // `<a id="x"></a>`, `<a name="x"></a>`.
                Format::Markdown => html_anchor(t),
                Format::Org => t
                    .strip_prefix(":CUSTOM_ID:")
                    .map(str::trim)
                    .filter(|r| !r.is_empty()),
            };
            let Some(id) = id.map(str::trim) else {
                continue;
            };
            // An Org property drawer sits under its heading; the others stand before theirs.
            // Headings are in file order.
            let heading = if self.format == Format::Org {
                self.headings
                    .partition_point(|h| h.at < start)
                    .checked_sub(1)
            } else {
                Some(self.headings.partition_point(|h| h.at <= start))
                    .filter(|&i| i < self.headings.len())
            };
            let Some(h) = heading else {
                continue;
            };
            let id = id.to_lowercase();
            if self.format == Format::ReStructuredText {
                label(id.clone(), h);
            }
            self.anchors.entry(id).or_insert(h);
        }
    }
}

/// Extensions of the files links point to by their source's name.
const SOURCES: [&str; 7] = ["md", "markdown", "rst", "txt", "adoc", "asciidoc", "org"];

/// How a wikilink names a note: its file name without a source extension, lower-cased
/// (`v1.2.md` and `[[V1.2]]` are both `v1.2`).
fn note_name(name: &str) -> String {
    let p = Path::new(name);
    let name = match p.extension().and_then(|e| e.to_str()) {
        Some(e) if SOURCES.contains(&e.to_ascii_lowercase().as_str()) => {
            p.file_stem().and_then(|s| s.to_str()).unwrap_or(name)
        }
        _ => p.file_name().and_then(|s| s.to_str()).unwrap_or(name),
    };
    name.to_lowercase()
}

/// The id of a line of nothing but an HTML anchor.
fn html_anchor(t: &str) -> Option<&str> {
    let lower = t.to_ascii_lowercase();
    if !(lower.starts_with("<a id=") || lower.starts_with("<a name=")) || !lower.ends_with("</a>") {
        return None;
    }
    let eq = t.find('=')?;
    let rest = t[eq + 1..].trim_start();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let end = rest[1..].find(quote)?;
    Some(&rest[1..1 + end])
}

/// GitHub's heading anchor: lower case, punctuation dropped, spaces as `-`.
fn slug(title: &str) -> String {
    title
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Splits a destination at its `#`.
fn path_and_anchor(dest: &str) -> (String, Option<String>) {
    match dest.split_once('#') {
        Some((p, a)) => (p.to_string(), Some(a.to_string()).filter(|a| !a.is_empty())),
        None => (dest.to_string(), None),
    }
}

/// A URL with a scheme (`https:`, `mailto:`) or a host (`//host/page`) points outside the notes.
fn is_external(dest: &str) -> bool {
    if dest.starts_with("//") {
        return true;
    }
    match dest.find(':') {
        Some(i) => {
            let scheme = &dest[..i];
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
                && !dest[..i].contains(['/', '#'])
        }
        None => false,
    }
}

/// At most [`MAX_LINK_BYTES`] of `block` from `at` (cut back to a character boundary).
fn window(block: &str, at: usize) -> &str {
    let mut end = (at + MAX_LINK_BYTES).min(block.len());
    while !block.is_char_boundary(end) {
        end -= 1;
    }
    block.get(at..end).unwrap_or("")
}

/// The byte just past the `close` that matches the `open` at `s[0]`, nesting allowed.
fn matching(s: &str, open: u8, close: u8) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b if b == open => depth += 1,
            b if b == close => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn markdown_links(block: &str, definitions: &HashMap<String, String>) -> Vec<Link> {
    let mut out = Vec::new();
    let bytes = block.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            // Inline code holds no links.
            b'`' => {
                let run = block[i..].bytes().take_while(|&b| b == b'`').count();
                let fence = &block[i..i + run];
                i = match block[i + run..].find(fence) {
                    Some(j) => i + run + j + run,
                    None => i + run,
                };
                continue;
            }
            b'\\' => {
                i += 2;
                continue;
            }
            b'[' if block[i..].starts_with("[[") => {
                if let Some(end) = window(block, i + 2).find("]]") {
                    let inner = &block[i + 2..i + 2 + end];
                    let (target, words) = match inner.split_once('|') {
                        Some((t, w)) => (t, w),
                        None => (inner, ""),
                    };
                    let (name, heading) = match target.split_once('#') {
                        Some((n, h)) => (n.trim(), Some(h.trim().to_string())),
                        None => (target.trim(), None),
                    };
                    if !inner.contains('\n') {
                        let words = if words.is_empty() && heading.is_none() {
                            name.to_string()
                        } else {
                            words.to_string()
                        };
                        out.push(Link {
                            range: i..i + 2 + end + 2,
                            words,
                            dest: LinkTarget::Note(name.to_string(), heading),
                            kind: QuestionKind::WikiLink,
                        });
                    }
                    i += 2 + end + 2;
                    continue;
                }
            }
            b'[' => {
                let image = i > 0 && bytes[i - 1] == b'!';
                let Some(close) = matching(window(block, i), b'[', b']') else {
                    i += 1;
                    continue;
                };
                let words = &block[i + 1..i + close - 1];
                let after = i + close;
                let (dest, end) = if block[after..].starts_with('(') {
                    let Some(c) = matching(window(block, after), b'(', b')') else {
                        i += 1;
                        continue;
                    };
                    let inner = block[after + 1..after + c - 1].trim();
                    let dest = if let Some(r) = inner.strip_prefix('<') {
                        r.split('>').next().unwrap_or("")
                    } else {
                        inner.split_whitespace().next().unwrap_or("")
                    };
                    (Some(dest.to_string()), after + c)
                } else if block[after..].starts_with('[') {
                    let Some(c) = window(block, after).find(']') else {
                        i += 1;
                        continue;
                    };
                    let label = &block[after + 1..after + c];
                    let label = if label.is_empty() { words } else { label };
                    (
                        definitions.get(&label.to_lowercase()).cloned(),
                        after + c + 1,
                    )
                } else {
                    (None, after)
                };
                if let Some(dest) = dest
                    && !image
                    && !is_external(&dest)
                {
                    let (p, a) = path_and_anchor(&dest);
                    out.push(Link {
                        range: i..end,
                        words: words.to_string(),
                        dest: LinkTarget::Path(p, a),
                        kind: QuestionKind::Link,
                    });
                }
                // Links do not nest, but an image may sit inside one: look inside the words.
                i = if end > after { end } else { i + 1 };
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

fn rst_links(block: &str) -> Vec<Link> {
    let mut out = Vec::new();
    for (role, doc) in [(":ref:`", false), (":doc:`", true)] {
        let mut from = 0;
        while let Some(j) = block[from..].find(role) {
            let start = from + j;
            let open = start + role.len();
            let Some(len) = block[open..].find('`') else {
                break;
            };
            let inner = block[open..open + len].trim().trim_start_matches('~');
            let (words, target) = match (inner.rfind('<'), inner.ends_with('>')) {
                (Some(lt), true) => (inner[..lt].trim(), &inner[lt + 1..inner.len() - 1]),
                _ => ("", inner),
            };
            from = open + len + 1;
            if target.is_empty() {
                continue;
            }
            out.push(Link {
                range: start..from,
                words: words.to_string(),
                dest: if doc {
                    LinkTarget::Doc(target.to_string())
                } else {
                    LinkTarget::Label(target.to_string())
                },
                kind: QuestionKind::CrossReference,
            });
        }
    }
    out.sort_by_key(|l| l.range.start);
    out
}

fn asciidoc_links(block: &str) -> Vec<Link> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(j) = block[from..].find("<<") {
        let start = from + j;
        let Some(len) = block[start + 2..].find(">>") else {
            break;
        };
        let inner = &block[start + 2..start + 2 + len];
        from = start + 2 + len + 2;
        let (target, words) = inner.split_once(',').unwrap_or((inner, ""));
        out.push(Link {
            range: start..from,
            words: words.trim().to_string(),
            dest: adoc_dest(target.trim()),
            kind: QuestionKind::CrossReference,
        });
    }
    let mut from = 0;
    while let Some(j) = block[from..].find("xref:") {
        let start = from + j;
        let rest = window(block, start + 5);
        let (Some(open), Some(close)) = (rest.find('['), rest.find(']')) else {
            from = start + 5;
            continue;
        };
        from = start + 5 + close.max(open) + 1;
        if close < open || rest[..open].contains(char::is_whitespace) {
            continue;
        }
        out.push(Link {
            range: start..start + 5 + close + 1,
            words: rest[open + 1..close].trim().to_string(),
            dest: adoc_dest(&rest[..open]),
            kind: QuestionKind::CrossReference,
        });
    }
    out.sort_by_key(|l| l.range.start);
    out.dedup_by(|b, a| b.range.start < a.range.end);
    out
}

/// `file.adoc#id`, `file#id`, or `id` in this file.
fn adoc_dest(target: &str) -> LinkTarget {
    match target.split_once('#') {
        Some((p, a)) => LinkTarget::Path(p.to_string(), Some(a.to_string())),
        None if target.contains('.') || target.contains('/') => {
            LinkTarget::Path(target.into(), None)
        }
        None => LinkTarget::Path(String::new(), Some(target.to_string())),
    }
}

fn org_links(block: &str) -> Vec<Link> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(j) = block[from..].find("[[") {
        let start = from + j;
        let Some(len) = block[start..].find("]]") else {
            break;
        };
        let inner = &block[start + 2..start + len];
        from = start + len + 2;
        let (target, words) = inner.split_once("][").unwrap_or((inner, ""));
        let dest = if let Some(h) = target.strip_prefix('*') {
            LinkTarget::Heading(h.trim().to_string())
        } else if let Some(id) = target.strip_prefix('#') {
            LinkTarget::Path(String::new(), Some(id.to_string()))
        } else if let Some(f) = target.strip_prefix("file:") {
            match f.split_once("::") {
                Some((p, h)) => match h.strip_prefix('*') {
                    Some(h) => LinkTarget::FileHeading(p.to_string(), h.trim().to_string()),
                    None => {
                        LinkTarget::Path(p.to_string(), h.strip_prefix('#').map(str::to_string))
                    }
                },
                None => LinkTarget::Path(f.to_string(), None),
            }
        } else {
            continue;
        };
        out.push(Link {
            range: start..from,
            words: words.to_string(),
            dest,
            kind: QuestionKind::Link,
        });
    }
    out
}

/// The sentence of `plain` that holds `span`, at most [`CONTEXT_BYTES`] either side of it.
fn sentence_around(plain: &str, span: std::ops::Range<usize>) -> &str {
    let ends_sentence = |i: usize| {
        let b = plain.as_bytes();
        matches!(b[i], b'.' | b'?' | b'!' | b';')
            && b.get(i + 1).is_none_or(|c| c.is_ascii_whitespace())
    };
    // A list item is a sentence of its own.
    let item_starts = |i: usize| {
        plain.as_bytes()[i] == b'\n' && {
            let t = plain[i + 1..].trim_start();
            t.starts_with(['-', '*', '+']) || t.starts_with(|c: char| c.is_ascii_digit())
        }
    };
    // Never further than CONTEXT_BYTES: a paragraph of thousands of links stays linear.
    let floor = span.start.saturating_sub(CONTEXT_BYTES);
    let ceiling = (span.end + CONTEXT_BYTES).min(plain.len());
    let mut start = span.start;
    while start > floor && !(ends_sentence(start - 1) || item_starts(start - 1)) {
        start -= 1;
    }
    let mut end = span.end;
    while end < ceiling && !item_starts(end) {
        end += 1;
        if ends_sentence(end - 1) {
            break;
        }
    }
    while !plain.is_char_boundary(start) {
        start += 1;
    }
    while !plain.is_char_boundary(end) {
        end -= 1;
    }
    &plain[start..end]
}

/// A sentence as a person would type it: markup, list markers and runs of blanks gone.
fn clean(s: &str) -> String {
    let s = s.trim_start().trim_start_matches(['-', '*', '+']);
    let s = match s.trim_start().split_once(". ") {
        Some((n, rest)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => rest,
        _ => s,
    };
    s.replace(['*', '`'], "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Front matter `title` and `aliases` (YAML or TOML), which the index does not read: what the
/// writer calls the note.
fn titles_of(f: &File<'_>, out: &mut Vec<Question>) {
    let Some(fm) = front_matter(&f.doc.text) else {
        return;
    };
    let content = f.doc.text.get(fm.content.clone()).unwrap_or("");
    let sep = match fm.kind {
        FrontMatterKind::Yaml => ':',
        FrontMatterKind::Toml => '=',
    };
    let unquote = |v: &str| {
        v.trim()
            .trim_matches(|c| c == '"' || c == '\'')
            .trim()
            .to_string()
    };
    let mut names = Vec::new();
    let mut in_aliases = false;
    for line in content.lines() {
        if in_aliases && let Some(item) = line.trim_start().strip_prefix("- ") {
            names.push(unquote(item));
            continue;
        }
        in_aliases = false;
        if line.starts_with(char::is_whitespace) {
            continue;
        }
        let Some((key, value)) = line.split_once(sep) else {
            continue;
        };
        match key.trim().to_lowercase().as_str() {
            "title" => names.push(unquote(value)),
            "aliases" | "alias" => {
                let v = value.trim();
                if let Some(list) = v.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
                    names.extend(list.split(',').map(unquote));
                } else if v.is_empty() {
                    in_aliases = true;
                } else {
                    names.push(unquote(v));
                }
            }
            _ => {}
        }
    }
    for name in names {
        if name.split_whitespace().count() >= MIN_TITLE_WORDS {
            out.push(Question {
                text: clean(&name),
                kind: QuestionKind::Title,
                source: f.path.to_path_buf(),
                line: 0,
                asked_in: None,
                target: f.path.to_path_buf(),
                heading: None,
                lines: None,
            });
        }
    }
}

/// `a/./b/../c` as `a/c`, without asking the disk (a link names a file, not a symlink's target).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// `%20` and the like, as links to names with spaces write them.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(h) = s.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(h, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passages_links_are_kept_as_written_for_every_syntax() {
        let got = links_in(
            "see [[A]] and [x](b.md#c) and [web](https://x.org)",
            Format::Markdown,
        );
        assert_eq!(
            got,
            [
                LinkTarget::Note("A".into(), None),
                LinkTarget::Path("b.md".into(), Some("c".into())),
            ]
        );
        assert!(!links_in("see [[file:x.org][X]]", Format::Org).is_empty());
        assert!(
            !links_in(
                "see :ref:`label` and :doc:`other`",
                Format::ReStructuredText
            )
            .is_empty()
        );
        assert!(!links_in("see <<sec,Section>> and xref:b.adoc[B]", Format::AsciiDoc).is_empty());
        let many: String = (0..200).map(|i| format!("[[n{i}]] ")).collect();
        assert_eq!(links_in(&many, Format::Markdown).len(), MAX_PASSAGE_LINKS);
        assert_eq!(links_in("[[A]] [[A]]", Format::Markdown).len(), 1);
    }

    fn corpus(files: &[(&str, &str)]) -> Vec<(PathBuf, Document)> {
        files
            .iter()
            .map(|(p, t)| (PathBuf::from("/notes").join(p), Document::from_text(*t)))
            .collect()
    }

    fn asked(files: &[(&str, &str)]) -> Vec<(String, QuestionKind, String, Option<String>)> {
        questions(&corpus(files), usize::MAX)
            .into_iter()
            .map(|q| {
                let target = q.target.strip_prefix("/notes").unwrap_or(&q.target);
                (q.text, q.kind, target.display().to_string(), q.heading)
            })
            .collect()
    }

    #[test]
    fn markdown_links_ask_for_their_note_or_heading_in_their_sentence() {
        let got = asked(&[
            (
                "guide/start.md",
                "# Start\n\nFirst install it. Then read [the setup notes](../setup.md#proxy-settings) \
                 before you go on.\n\n- [Setup](../setup.md)\n\nSee the [rendered page](../setup.html) \
                 for the whole story.\n\n![a picture of it](../setup.md)\n\n\
                 A [site link](https://example.org/setup.md) and [a missing one](nowhere.md) count for nothing.\n\n\
                 ```\nsee [the code](../setup.md) here\n```\n\nAlso [by reference][proxy] works fine.\n\n\
                 From the site root, [the top setup page](/setup.md) opens.\n\n\
                 [proxy]: ../setup.md#proxy-settings\n",
            ),
            (
                "setup.md",
                "# Setup\n\nInstall.\n\n## Proxy settings\n\nSet HTTPS_PROXY.\n",
            ),
        ]);
        let proxy = Some("Proxy settings".to_string());
        assert_eq!(
            got,
            vec![
                (
                    "Then read the setup notes before you go on.".into(),
                    QuestionKind::Link,
                    "setup.md".into(),
                    proxy.clone()
                ),
                (
                    "See the rendered page for the whole story.".into(),
                    QuestionKind::Link,
                    "setup.md".into(),
                    None
                ),
                (
                    "Also by reference works fine.".into(),
                    QuestionKind::Link,
                    "setup.md".into(),
                    proxy
                ),
                (
                    "From the site root, the top setup page opens.".into(),
                    QuestionKind::Link,
                    "setup.md".into(),
                    None
                ),
            ]
        );
    }

    #[test]
    fn wikilinks_find_notes_by_name_and_headings_by_title() {
        let got = asked(&[
            (
                "daily/2026-01-02.md",
                "Met Ana about [[Garden Plans#Raised Beds|the raised beds]] and the soil.\n\n\
                 Later looked at [[garden plans]] again with her.\n\n[[No Such Note]] is a dangling link here.\n",
            ),
            (
                "projects/Garden Plans.md",
                "# Garden Plans\n\n## Raised beds\n\nCedar, 30 cm.\n",
            ),
        ]);
        assert_eq!(
            got,
            vec![
                (
                    "Met Ana about the raised beds and the soil.".into(),
                    QuestionKind::WikiLink,
                    "projects/Garden Plans.md".into(),
                    Some("Raised beds".into())
                ),
                (
                    "Later looked at garden plans again with her.".into(),
                    QuestionKind::WikiLink,
                    "projects/Garden Plans.md".into(),
                    None
                ),
            ]
        );
    }

    #[test]
    fn restructuredtext_references_follow_labels_and_documents() {
        let got = asked(&[
            (
                "docs/topics/cache.rst",
                "=====\nCache\n=====\n\nThe cache keeps pages. For the details of expiry see \
                 :ref:`how entries expire <cache-expiry>` below.\n\n.. _cache-expiry:\n\n\
                 Expiry\n------\n\nEntries expire.\n\nUse :doc:`the settings reference </ref/settings>` \
                 to set it.\n\nA bare :ref:`cache-expiry` names its section by title.\n",
            ),
            (
                "docs/ref/settings.rst",
                "Settings\n========\n\nAll of them.\n",
            ),
        ]);
        assert_eq!(
            got,
            vec![
                (
                    "For the details of expiry see how entries expire below.".into(),
                    QuestionKind::CrossReference,
                    "docs/topics/cache.rst".into(),
                    Some("Expiry".into())
                ),
                (
                    "Use the settings reference to set it.".into(),
                    QuestionKind::CrossReference,
                    "docs/ref/settings.rst".into(),
                    None
                ),
                (
                    "A bare Expiry names its section by title.".into(),
                    QuestionKind::CrossReference,
                    "docs/topics/cache.rst".into(),
                    Some("Expiry".into())
                ),
            ]
        );
    }

    #[test]
    fn asciidoc_cross_references_follow_ids_and_automatic_ids() {
        let got = asked(&[
            (
                "manual/intro.adoc",
                "= Intro\n\nRead <<limits,the limits section>> first of all.\n\n\
                 Each xref:install.adoc#_from_source[build from source] takes an hour.\n\n\
                 [[limits]]\n== Limits\n\nTen.\n",
            ),
            (
                "manual/install.adoc",
                "= Install\n\n== From source\n\nmake.\n",
            ),
        ]);
        assert_eq!(
            got,
            vec![
                (
                    "Read the limits section first of all.".into(),
                    QuestionKind::CrossReference,
                    "manual/intro.adoc".into(),
                    Some("Limits".into())
                ),
                (
                    "Each build from source takes an hour.".into(),
                    QuestionKind::CrossReference,
                    "manual/install.adoc".into(),
                    Some("From source".into())
                ),
            ]
        );
    }

    #[test]
    fn org_links_follow_files_and_headlines() {
        let got = asked(&[
            (
                "inbox.org",
                "* Inbox\nCall about [[file:work.org::*Quarterly budget][the budget numbers]] on Monday.\n",
            ),
            ("work.org", "* Quarterly budget\nSpend less.\n"),
        ]);
        assert_eq!(
            got,
            vec![(
                "Call about the budget numbers on Monday.".into(),
                QuestionKind::Link,
                "work.org".into(),
                Some("Quarterly budget".into())
            )]
        );
    }

    #[test]
    fn front_matter_titles_aliases_and_question_headings_ask_for_their_note() {
        let got = asked(&[
            (
                "a.md",
                "---\ntitle: \"Weekly review checklist\"\naliases:\n  - review steps\n  - Sunday\ntags: [x]\n---\n# Weekly\n\nSteps.\n",
            ),
            (
                "b.md",
                "+++\ntitle = \"Tax notes\"\naliases = [\"tax return prep\", \"2025\"]\n+++\nBody.\n",
            ),
            (
                "faq.md",
                "# FAQ\n\n## How do I reset my password?\n\nAsk.\n\n## Why?\n\nShort.\n",
            ),
        ]);
        let t = QuestionKind::Title;
        assert_eq!(
            got,
            vec![
                ("Weekly review checklist".into(), t, "a.md".into(), None),
                ("review steps".into(), t, "a.md".into(), None),
                ("Tax notes".into(), t, "b.md".into(), None),
                ("tax return prep".into(), t, "b.md".into(), None),
                (
                    "How do I reset my password?".into(),
                    QuestionKind::QuestionHeading,
                    "faq.md".into(),
                    Some("How do I reset my password?".into())
                ),
            ]
        );
    }

    #[test]
    fn a_link_within_its_own_file_must_name_a_heading_there() {
        let got = asked(&[(
            "one.md",
            "# One\n\nAs [shown below](#details) the plan works.\n\nAs [shown](#nowhere) it does not.\n\n\
             <a id=\"deep\"></a>\n## Details\n\nThe plan, [again](#deep) as said.\n",
        )]);
        assert_eq!(
            got,
            vec![
                (
                    "As shown below the plan works.".into(),
                    QuestionKind::Link,
                    "one.md".into(),
                    Some("Details".into())
                ),
                (
                    "The plan, again as said.".into(),
                    QuestionKind::Link,
                    "one.md".into(),
                    Some("Details".into())
                ),
            ]
        );
    }

    #[test]
    fn odd_markup_and_long_paragraphs_neither_panic_nor_go_quadratic() {
        // Overlapping roles, a backslash before a multibyte character, unclosed brackets.
        let odd = ":ref:`x :doc:`y` z` \\é [a](b.md \\ü [[c| `:ref:`<` <<d xref:e[f \\";
        let many: String = (0..20_000)
            .map(|i| format!("see [n{i}](b.md) é "))
            .collect();
        let files = corpus(&[
            ("a.rst", odd),
            ("a.md", odd),
            ("a.adoc", odd),
            ("a.org", odd),
            ("many.md", &many),
            ("b.md", "# B\n"),
        ]);
        let got = questions(&files, usize::MAX);
        assert_eq!(
            got.iter().filter(|q| q.source.ends_with("many.md")).count(),
            20_000
        );
        assert_eq!(questions(&files, 5).len(), 5);
    }

    #[test]
    fn dotted_names_and_org_file_links_find_their_own_file() {
        let got = asked(&[
            (
                "notes.md",
                "Changes in [[v1.2]] are listed there in full.\n\n\
                 The [rendered release](v1.2.html) page says the same.\n",
            ),
            ("v1.md", "# One\n"),
            ("v1.2.md", "# One two\n"),
            (
                "plan.org",
                "* Plan\nSee [[file:sub/work.org::*Budget][the budget part]] of it.\n",
            ),
            ("work.md", "# Budget\n"),
            ("sub/work.org", "* Budget\nSpend less.\n"),
        ]);
        let targets: Vec<&str> = got.iter().map(|q| q.2.as_str()).collect();
        assert_eq!(targets, ["v1.2.md", "v1.2.md", "sub/work.org"], "{got:?}");
    }

    #[test]
    fn questions_carry_the_line_they_are_written_on() {
        let files = corpus(&[
            ("x.md", "# X\n\nline three\nthen [the y note](y.md) here.\n"),
            ("y.md", "# Y\n"),
        ]);
        let q = questions(&files, usize::MAX);
        assert_eq!(q.len(), 1);
        assert_eq!((q[0].line, q[0].asked_in), (4, Some((3, 4))));
        assert_eq!(q[0].text, "line three then the y note here.");
        let files = corpus(&[
            ("x.md", "# X\n\nSee [the second part](y.md#two) for more.\n"),
            (
                "y.md",
                "# Y\n\n## One\n\nA.\n\n## Two\n\nB.\n\n### Deeper\n\nD.\n\n<a id=\"t\"></a>\n## Three\n",
            ),
        ]);
        let q = questions(&files, usize::MAX);
        // Its subsections are in the section; the blank and anchor lines before the next
        // heading of its level are not.
        assert_eq!(
            (q[0].heading.as_deref(), q[0].lines),
            (Some("Two"), Some((7, 13)))
        );
    }

    #[test]
    fn questions_split_into_two_fixed_halves_wherever_the_folder_is() {
        let notes = |dir: &str| {
            let files: Vec<(String, String)> = (0..200)
                .map(|i| {
                    (
                        format!("{dir}/n{i}.md"),
                        format!(
                            "# N{i}\n\nFor more on it read [note {}](n{}.md) today.\n",
                            i + 1,
                            (i + 1) % 200
                        ),
                    )
                })
                .collect();
            let files: Vec<(&str, &str)> = files
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect();
            questions(&corpus(&files), usize::MAX)
        };
        let (here, there) = (notes("a"), notes("b/c"));
        assert_eq!(here.len(), 200);
        let split = |qs: &[Question]| qs.iter().map(Question::teaches).collect::<Vec<_>>();
        assert_eq!(
            split(&here),
            split(&there),
            "moving the folder moved the split"
        );
        let taught = here.iter().filter(|q| q.teaches()).count();
        assert!((70..=130).contains(&taught), "{taught} of 200 taught");
    }
}
