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
    /// The file that answers it.
    pub target: PathBuf,
    /// The section that answers it, as its heading appears in passage trails; `None`: any part
    /// of the file.
    pub heading: Option<String>,
    /// That section's lines, 1-based and inclusive: its heading's to the line before the next
    /// heading.
    pub lines: Option<(usize, usize)>,
}

/// Fewest words of a link's sentence: a bare link in a list ("[Usage](usage.md)") only repeats
/// a title.
const MIN_SENTENCE_WORDS: usize = 3;
/// Fewest words of a title, an alias or a question heading.
const MIN_TITLE_WORDS: usize = 2;
/// The most of a long sentence kept on each side of its link, in bytes.
const CONTEXT_BYTES: usize = 160;

/// Every question the files ask of each other (and of themselves), in file and line order,
/// each once. A link counts only when its target is one of `files` (and its anchor, when it
/// points inside the same file, is a heading there).
pub fn questions(files: &[(PathBuf, Document)]) -> Vec<Question> {
    let corpus = Corpus::new(files);
    let mut out = Vec::new();
    for (i, f) in corpus.files.iter().enumerate() {
        corpus.links_of(i, &mut out);
        titles_of(f, &mut out);
        for h in &f.headings {
            let t = h.title.trim();
            if t.ends_with('?') && t.split_whitespace().count() >= MIN_SENTENCE_WORDS {
                out.push(Question {
                    text: clean(t),
                    kind: QuestionKind::QuestionHeading,
                    source: f.path.to_path_buf(),
                    line: line_of(&f.doc.text, h.at),
                    target: f.path.to_path_buf(),
                    heading: Some(h.title.clone()),
                    lines: Some(f.section_lines(h)),
                });
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|q| {
        seen.insert((
            q.text.to_lowercase(),
            q.target.clone(),
            q.heading.clone(),
            q.kind == QuestionKind::QuestionHeading,
        ))
    });
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
}

struct Corpus<'a> {
    files: Vec<File<'a>>,
    by_path: HashMap<PathBuf, usize>,
    /// Lower-cased file stem → the file, `None` when two files share it.
    by_stem: HashMap<String, Option<usize>>,
    /// reStructuredText labels (lower-cased) → file and heading; they are global.
    labels: HashMap<String, (usize, usize)>,
}

/// Where a link points, before it is looked up.
#[derive(Debug, Clone, PartialEq)]
enum Dest {
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
}

/// A link inside a block: its byte range there, the words it shows (empty: the target's title),
/// where it points and what kind of link it is.
struct Link {
    range: std::ops::Range<usize>,
    words: String,
    dest: Dest,
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
            let mut file = File {
                path,
                doc,
                format,
                sections,
                headings,
                anchors: HashMap::new(),
                definitions: HashMap::new(),
            };
            file.find_anchors(|label, title| {
                out.labels.entry(label).or_insert((i, title));
            });
            out.by_path.insert(normalize(path), i);
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                match out.by_stem.entry(stem.to_lowercase()) {
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
                let links = match f.format {
                    Format::Markdown => markdown_links(block, &f.definitions),
                    Format::ReStructuredText => rst_links(block),
                    Format::AsciiDoc => asciidoc_links(block),
                    Format::Org => org_links(block),
                };
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
                    let heading = heading.and_then(|h| t.headings.get(h));
                    out.push(Question {
                        text,
                        kind: l.kind,
                        source: f.path.to_path_buf(),
                        line: line_of(&f.doc.text, b.range.start + l.range.start),
                        target: t.path.to_path_buf(),
                        heading: heading.map(|h| h.title.clone()),
                        lines: heading.map(|h| t.section_lines(h)),
                    });
                }
            }
        }
    }

    /// The file (and heading) a link points to, if it is one of the corpus's.
    fn resolve(&self, from: usize, dest: &Dest) -> Option<(usize, Option<usize>)> {
        let here = self.files[from].path.parent().unwrap_or(Path::new(""));
        match dest {
            Dest::Path(p, anchor) => {
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
            Dest::Note(name, heading) => {
                let target = if name.is_empty() {
                    from
                } else {
                    let stem = Path::new(name).file_stem()?.to_str()?.to_lowercase();
                    match self.by_stem.get(&stem) {
                        Some(Some(t)) => *t,
                        _ => self.find_path(&here.join(name))?,
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
            Dest::Label(label) => {
                let &(t, h) = self.labels.get(&label.to_lowercase())?;
                Some((t, Some(h)))
            }
            Dest::Doc(doc) => {
                let target = self.find_from(here, doc)?;
                (target != from).then_some((target, None))
            }
            Dest::Heading(title) => Some((from, Some(self.heading_titled(from, title)?))),
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
        const SOURCES: [&str; 7] = ["md", "markdown", "rst", "txt", "adoc", "asciidoc", "org"];
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        let base = if matches!(ext, "html" | "htm") || ext.is_empty() {
            p.with_extension("")
        } else {
            p.clone()
        };
        let mut tries: Vec<PathBuf> = SOURCES.iter().map(|e| base.with_extension(e)).collect();
        for name in ["index", "README", "readme", "_index"] {
            tries.extend(SOURCES.iter().map(|e| p.join(name).with_extension(e)));
        }
        tries.iter().find_map(|t| self.by_path.get(t).copied())
    }

    fn heading_titled(&self, file: usize, title: &str) -> Option<usize> {
        let want = title.trim().to_lowercase();
        self.files[file]
            .headings
            .iter()
            .position(|h| h.title.trim().to_lowercase() == want)
    }
}

impl File<'_> {
    /// A heading's section as lines: from its own to the one before the next heading.
    fn section_lines(&self, h: &Heading) -> (usize, usize) {
        let text = &self.doc.text;
        let first = line_of(text, h.at);
        let last = match self.headings.iter().find(|n| n.at > h.at) {
            Some(n) => line_of(text, n.at).saturating_sub(1).max(first),
            None => line_of(text, text.trim_end().len()),
        };
        (first, last)
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
            let heading = if self.format == Format::Org {
                self.headings.iter().rposition(|h| h.at < start)
            } else {
                self.headings.iter().position(|h| h.at > start)
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
                if let Some(end) = block[i + 2..].find("]]") {
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
                            dest: Dest::Note(name.to_string(), heading),
                            kind: QuestionKind::WikiLink,
                        });
                    }
                    i += 2 + end + 2;
                    continue;
                }
            }
            b'[' => {
                let image = i > 0 && bytes[i - 1] == b'!';
                let Some(close) = matching(&block[i..], b'[', b']') else {
                    i += 1;
                    continue;
                };
                let words = &block[i + 1..i + close - 1];
                let after = i + close;
                let (dest, end) = if block[after..].starts_with('(') {
                    let Some(c) = matching(&block[after..], b'(', b')') else {
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
                    let Some(c) = block[after..].find(']') else {
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
                        dest: Dest::Path(p, a),
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
                    Dest::Doc(target.to_string())
                } else {
                    Dest::Label(target.to_string())
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
        let rest = &block[start + 5..];
        let (Some(open), Some(close)) = (rest.find('['), rest.find(']')) else {
            break;
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
fn adoc_dest(target: &str) -> Dest {
    match target.split_once('#') {
        Some((p, a)) => Dest::Path(p.to_string(), Some(a.to_string())),
        None if target.contains('.') || target.contains('/') => Dest::Path(target.into(), None),
        None => Dest::Path(String::new(), Some(target.to_string())),
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
            Dest::Heading(h.trim().to_string())
        } else if let Some(id) = target.strip_prefix('#') {
            Dest::Path(String::new(), Some(id.to_string()))
        } else if let Some(f) = target.strip_prefix("file:") {
            match f.split_once("::") {
                Some((p, h)) => match h.strip_prefix('*') {
                    Some(h) => Dest::Note(p.to_string(), Some(h.trim().to_string())),
                    None => Dest::Path(p.to_string(), h.strip_prefix('#').map(str::to_string)),
                },
                None => Dest::Path(f.to_string(), None),
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
    let mut start = span.start;
    while start > 0 && !(ends_sentence(start - 1) || item_starts(start - 1)) {
        start -= 1;
    }
    let mut end = span.end;
    while end < plain.len() && !item_starts(end) {
        end += 1;
        if ends_sentence(end - 1) {
            break;
        }
    }
    let mut start = start.max(span.start.saturating_sub(CONTEXT_BYTES));
    let mut end = end.min(span.end + CONTEXT_BYTES);
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
                target: f.path.to_path_buf(),
                heading: None,
                lines: None,
            });
        }
    }
}

/// The 1-based line of byte `at`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
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

    fn corpus(files: &[(&str, &str)]) -> Vec<(PathBuf, Document)> {
        files
            .iter()
            .map(|(p, t)| (PathBuf::from("/notes").join(p), Document::from_text(*t)))
            .collect()
    }

    fn asked(files: &[(&str, &str)]) -> Vec<(String, QuestionKind, String, Option<String>)> {
        questions(&corpus(files))
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
    fn questions_carry_the_line_they_are_written_on() {
        let files = corpus(&[
            ("x.md", "# X\n\nline three\nthen [the y note](y.md) here.\n"),
            ("y.md", "# Y\n"),
        ]);
        let q = questions(&files);
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].line, 4);
        assert_eq!(q[0].text, "line three then the y note here.");
        let files = corpus(&[
            ("x.md", "# X\n\nSee [the second part](y.md#two) for more.\n"),
            (
                "y.md",
                "# Y\n\n## One\n\nA.\n\n## Two\n\nB.\nC.\n\n## Three\n",
            ),
        ]);
        let q = questions(&files);
        assert_eq!(
            (q[0].heading.as_deref(), q[0].lines),
            (Some("Two"), Some((7, 11)))
        );
    }
}
