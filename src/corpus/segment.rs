//! Finer cut points inside a block: sentences, lines, words.
//!
//! Used only when a block is too long for one passage, and to find where an overlap may
//! begin. All ranges are absolute byte offsets into the document text, trimmed of surrounding
//! whitespace, and lie on char boundaries because they are found by iterating chars.

use std::ops::Range;

/// Closing punctuation that may follow a sentence terminator: `He said "no." Then…`.
const CLOSERS: &[char] = &[
    '"', '\'', ')', ']', '}', '\u{201d}', '\u{2019}', '\u{bb}', '*', '_', '\u{300d}', '\u{300f}',
    '\u{ff09}',
];

fn is_terminator(c: char) -> bool {
    matches!(
        c,
        '.' | '!' | '?' | '\u{2026}' | '\u{3002}' | '\u{ff01}' | '\u{ff1f}'
    )
}

fn is_wide_terminator(c: char) -> bool {
    matches!(c, '\u{3002}' | '\u{ff01}' | '\u{ff1f}')
}

/// How to cut a range; tried from coarse to fine so pieces stay as meaningful as possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Sentence,
    Line,
    Word,
}

pub(crate) fn segments(text: &str, range: Range<usize>, level: Level) -> Vec<Range<usize>> {
    match level {
        Level::Sentence => sentences(text, range),
        Level::Line => split_trimmed(text, range, |c| c == '\n'),
        Level::Word => split_trimmed(text, range, char::is_whitespace),
    }
}

/// Shrinks a range to exclude leading and trailing whitespace.
pub(crate) fn trim(text: &str, range: Range<usize>) -> Range<usize> {
    let s = &text[range.clone()];
    let lead = s.len() - s.trim_start().len();
    let trail = s.len() - s.trim_end().len();
    if lead == s.len() {
        return range.start..range.start;
    }
    range.start + lead..range.end - trail
}

fn split_trimmed(text: &str, range: Range<usize>, sep: impl Fn(char) -> bool) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = range.start;
    for (i, c) in text[range.clone()].char_indices() {
        if sep(c) {
            push_trimmed(text, start..range.start + i, &mut out);
            start = range.start + i + c.len_utf8();
        }
    }
    push_trimmed(text, start..range.end, &mut out);
    out
}

fn push_trimmed(text: &str, range: Range<usize>, out: &mut Vec<Range<usize>>) {
    let r = trim(text, range);
    if !r.is_empty() {
        out.push(r);
    }
}

/// Sentence ends: a terminator, optional closing quotes/brackets, then whitespace. Crude
/// (abbreviations split too), but a wrong cut only costs a slightly worse passage edge.
fn sentences(text: &str, range: Range<usize>) -> Vec<Range<usize>> {
    let s = &text[range.clone()];
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = s.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if !is_terminator(c) {
            continue;
        }
        // Chinese and Japanese put no space after a full stop, so their terminators end a
        // sentence on their own.
        let mut wide = is_wide_terminator(c);
        while let Some(&(_, next)) = chars.peek() {
            if is_terminator(next) || CLOSERS.contains(&next) {
                wide |= is_wide_terminator(next);
                chars.next();
            } else {
                break;
            }
        }
        match chars.peek() {
            Some(&(i, next)) if next.is_whitespace() || wide => {
                push_trimmed(text, range.start + start..range.start + i, &mut out);
                start = i;
            }
            _ => {}
        }
    }
    push_trimmed(text, range.start + start..range.end, &mut out);
    out
}

/// Whether a sentence (or paragraph) begins at `pos`: judged from the text before it, so it
/// works on any position a backwards word scan stops at.
pub(crate) fn starts_sentence(text: &str, pos: usize) -> bool {
    let before = &text[..pos];
    let trimmed = before.trim_end();
    if trimmed.is_empty() {
        return true;
    }
    let gap = &before[trimmed.len()..];
    if gap.matches('\n').count() >= 2 {
        return true;
    }
    if gap.contains('\n') && starts_list_item(&text[pos..]) {
        return true;
    }
    let core = trimmed.trim_end_matches(CLOSERS);
    !gap.is_empty() && core.ends_with(is_terminator)
}

/// List items rarely end in a full stop, yet each is a self-contained unit to start from.
fn starts_list_item(s: &str) -> bool {
    let bullet = s.starts_with(['-', '*', '+']) && s[1..].starts_with([' ', '\t']);
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let numbered = digits > 0
        && s[digits..].starts_with(['.', ')'])
        && s[digits + 1..].starts_with([' ', '\t']);
    bullet || numbered
}

/// Word ranges walking backwards from `end` to `start`, so an overlap can be grown from the end
/// of a passage without scanning all of it.
pub(crate) struct WordsRev<'a> {
    text: &'a str,
    start: usize,
    pos: usize,
}

impl<'a> WordsRev<'a> {
    pub(crate) fn new(text: &'a str, range: Range<usize>) -> Self {
        WordsRev {
            text,
            start: range.start,
            pos: range.end,
        }
    }
}

impl Iterator for WordsRev<'_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        let s = &self.text[self.start..self.pos];
        let end = self.start + s.trim_end().len();
        if end == self.start {
            self.pos = self.start;
            return None;
        }
        let word_start = match self.text[self.start..end]
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
        {
            Some((i, c)) => self.start + i + c.len_utf8(),
            None => self.start,
        };
        self.pos = word_start;
        Some(word_start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str, level: Level) -> Vec<&str> {
        segments(text, 0..text.len(), level)
            .into_iter()
            .map(|r| &text[r])
            .collect()
    }

    #[test]
    fn sentences_split_after_terminators_and_closers() {
        let t = "One. Two! (Three?) \"Four.\" Five... six\nSeven 3.14 pi";
        assert_eq!(
            texts(t, Level::Sentence),
            [
                "One.",
                "Two!",
                "(Three?)",
                "\"Four.\"",
                "Five...",
                "six\nSeven 3.14 pi"
            ]
        );
        assert_eq!(
            texts("日本語。「次の文！」最後", Level::Sentence),
            ["日本語。", "「次の文！」", "最後"]
        );
    }

    #[test]
    fn lines_and_words_are_trimmed_and_non_empty() {
        assert_eq!(texts("  a b \r\n\n  c\n", Level::Line), ["a b", "c"]);
        assert_eq!(
            texts(" héllo  wörld\u{3000}x ", Level::Word),
            ["héllo", "wörld", "x"]
        );
    }

    #[test]
    fn words_backwards() {
        let t = "zero one  two\nthree ";
        let words: Vec<&str> = WordsRev::new(t, 5..t.len()).map(|r| &t[r]).collect();
        assert_eq!(words, ["three", "two", "one"]);
    }

    #[test]
    fn sentence_starts() {
        let t = "End here. Next one\n\npara x";
        assert!(starts_sentence(t, 0));
        assert!(starts_sentence(t, 10));
        assert!(!starts_sentence(t, 15));
        assert!(starts_sentence(t, 20));
        assert!(!starts_sentence(t, 25));
        let list = "intro line\n- first item\n12. second";
        assert!(starts_sentence(list, 11));
        assert!(!starts_sentence(list, 13));
        assert!(starts_sentence(list, 24));
    }
}
