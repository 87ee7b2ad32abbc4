//! Front matter detection.
//!
//! Static-site and note tools put metadata (tags, dates, layout names) in a block at the top of
//! a file. That block repeats across many files, so embedding it makes unrelated notes look
//! alike; it is located here so the chunker can leave it out while offsets stay file-relative.

use std::ops::Range;

/// Which convention the block follows; kept so a caller can parse it later if it wants titles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontMatterKind {
    /// `---` … `---` (or `...`), as used by Jekyll, Hugo, Obsidian, Pandoc.
    Yaml,
    /// `+++` … `+++`, as used by Hugo and Zola.
    Toml,
}

/// Where a front matter block sits in the decoded text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontMatter {
    pub kind: FrontMatterKind,
    /// The whole block: opening delimiter through the closing delimiter's line ending, so
    /// `block.end` is where the document body begins.
    pub block: Range<usize>,
    /// Just the metadata between the delimiter lines.
    pub content: Range<usize>,
}

/// Finds a front matter block at the very start of `text`.
///
/// Only the start counts, and the block must be closed: a lone `---` further down is a
/// Markdown rule or heading underline, and an unclosed block is more likely a rule at the top
/// of a note than metadata, so treating it as front matter would hide the whole note.
pub fn front_matter(text: &str) -> Option<FrontMatter> {
    let (kind, closers): (FrontMatterKind, &[&str]) = if text.starts_with("---") {
        (FrontMatterKind::Yaml, &["---", "..."])
    } else if text.starts_with("+++") {
        (FrontMatterKind::Toml, &["+++"])
    } else {
        return None;
    };

    let mut lines = LineSpans::new(text);
    let first = lines.next()?;
    // The opening line must be the delimiter alone; `---foo` or a bare `---` at end of file is not
    // a block opener.
    if strip_eol(&text[first.clone()]).trim_end_matches([' ', '\t']) != &text[..3] || first.end == 3
    {
        return None;
    }
    let content_start = first.end;
    for line in lines {
        let content = strip_eol(&text[line.clone()]).trim_end_matches([' ', '\t']);
        if closers.contains(&content) {
            return Some(FrontMatter {
                kind,
                block: 0..line.end,
                content: content_start..line.start,
            });
        }
    }
    None
}

/// Byte ranges of lines including their `\n`, so ranges tile the text exactly.
struct LineSpans<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> LineSpans<'a> {
    fn new(text: &'a str) -> Self {
        LineSpans { text, pos: 0 }
    }
}

impl Iterator for LineSpans<'_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        if self.pos >= self.text.len() {
            return None;
        }
        let start = self.pos;
        let end = match self.text[start..].find('\n') {
            Some(i) => start + i + 1,
            None => self.text.len(),
        };
        self.pos = end;
        Some(start..end)
    }
}

fn strip_eol(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_block_is_found_and_body_starts_after_it() {
        let text = "---\ntitle: Hello\ntags: [a]\n---\n# Body\n";
        let fm = front_matter(text).expect("front matter");
        assert_eq!(fm.kind, FrontMatterKind::Yaml);
        assert_eq!(&text[fm.block.end..], "# Body\n");
        assert_eq!(&text[fm.content.clone()], "title: Hello\ntags: [a]\n");
    }

    #[test]
    fn yaml_block_may_close_with_dots_and_have_crlf() {
        let text = "---\r\ntitle: x\r\n...\r\nbody";
        let fm = front_matter(text).expect("front matter");
        assert_eq!(&text[fm.block.end..], "body");
    }

    #[test]
    fn toml_block_is_found() {
        let text = "+++\ntitle = \"x\"\n+++\nbody\n";
        let fm = front_matter(text).expect("front matter");
        assert_eq!(fm.kind, FrontMatterKind::Toml);
        assert_eq!(&text[fm.block.end..], "body\n");
    }

    #[test]
    fn block_closing_at_end_of_file_without_newline() {
        let text = "---\na: 1\n---";
        assert_eq!(front_matter(text).map(|f| f.block), Some(0..text.len()));
    }

    #[test]
    fn unterminated_or_misplaced_blocks_are_not_front_matter() {
        assert_eq!(front_matter("---\ntitle: x\nno end here\n"), None);
        assert_eq!(front_matter("\n---\na: 1\n---\n"), None);
        assert_eq!(front_matter("# Title\n---\na: 1\n---\n"), None);
        assert_eq!(front_matter("----\na: 1\n----\n"), None);
        assert_eq!(front_matter("---"), None);
        assert_eq!(
            front_matter("+++\na = 1\n---\n"),
            None,
            "delimiters must match"
        );
        assert_eq!(front_matter(""), None);
    }
}
