//! What in a hit matched: the lines a person should see under it and land on when they open it.
//!
//! A passage is up to a few hundred tokens; showing its first lines (or opening the file at its
//! first line) leaves the reader to find the match themselves. The semantic side knows which of
//! a passage's units scored best; the lexical side knows the query's words. The matched lines
//! are that unit (or, when only words matched, the lines holding the most of them), and the
//! snippet is the few lines of it with the most query words.

use serde::{Deserialize, Serialize};

use super::lexical::Highlighter;
use super::store::PassageRecord;

/// Most lines in a snippet.
pub const SNIPPET_LINES: usize = 4;

/// The few lines shown under a hit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snippet {
    /// Line of the file the snippet starts at, 1-based: where the hit opens.
    pub line: u32,
    /// The lines, joined with `\n` (no trailing newline), as in the file.
    pub text: String,
    /// Byte ranges of `text` holding the query's words, in order.
    pub marks: Vec<(usize, usize)>,
}

/// The matched lines of a passage and the snippet within them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matched {
    /// First and last line (1-based, inclusive) of what matched.
    pub lines: (u32, u32),
    pub snippet: Snippet,
}

/// Finds what matched in `p`: `unit` is the index of the unit the semantic side scored best
/// (`None` when it did not score the passage, or the passage is its own only unit).
pub fn matched(p: &PassageRecord, unit: Option<usize>, words: &Highlighter) -> Matched {
    let lines: Vec<&str> = p.text.split('\n').collect();
    let last = lines.len().saturating_sub(1);
    // The unit's lines as indexes into `lines`, or the whole passage.
    let unit_span = unit.and_then(|u| p.units.get(u)).map(|&(a, b)| {
        let at = |l: u32| (l.saturating_sub(p.start_line) as usize).min(last);
        (at(a), at(b).max(at(a)))
    });
    let (lo, hi) = unit_span.unwrap_or((0, last));
    let hits: Vec<Vec<(usize, usize)>> = lines.iter().map(|l| marks(words, l)).collect();
    let distinct = |from: usize, to: usize| -> usize {
        let mut seen: Vec<String> = Vec::new();
        for i in from..=to {
            for &(a, b) in &hits[i] {
                let w = lines[i][a..b].to_lowercase();
                if !seen.contains(&w) {
                    seen.push(w);
                }
            }
        }
        seen.len()
    };
    let blank = |i: usize| lines[i].trim().is_empty();
    // The window of up to SNIPPET_LINES lines in lo..=hi with the most distinct query words
    // (then the most marks), the earliest on a tie; it starts on a line with text. Without
    // any query word, that is the first lines with text.
    let mut best: Option<(Score, (usize, usize))> = None;
    for start in lo..=hi {
        if blank(start) && start != hi {
            continue;
        }
        let end = (start + SNIPPET_LINES - 1).min(hi);
        let marks: usize = (start..=end).map(|i| hits[i].len()).sum();
        // On equal words, the window that starts with one (not with lines before them).
        let score = (distinct(start, end), marks, !hits[start].is_empty());
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, (start, end)));
        }
    }
    let (start, mut end) = best.map_or((lo, lo), |(_, w)| w);
    while end > start && blank(end) {
        end -= 1;
    }
    let mut text = String::new();
    let mut out_marks = Vec::new();
    for i in start..=end {
        if i > start {
            text.push('\n');
        }
        let base = text.len();
        out_marks.extend(hits[i].iter().map(|&(a, b)| (base + a, base + b)));
        text.push_str(lines[i]);
    }
    let line_of = |i: usize| p.start_line.saturating_add(i as u32);
    let found_words = best.is_some_and(|(s, _)| s.0 > 0);
    // Without a unit, what matched is the lines holding the words (the whole passage when
    // none of them is there).
    let lines = match unit_span {
        Some((a, b)) => (line_of(a), line_of(b)),
        None if found_words => (line_of(start), line_of(end)),
        None => (p.start_line, p.end_line.max(p.start_line)),
    };
    Matched {
        lines,
        snippet: Snippet {
            line: line_of(start),
            text,
            marks: out_marks,
        },
    }
}

/// A window's distinct query words, its marks, and whether its first line has one.
type Score = (usize, usize, bool);

fn marks(words: &Highlighter, line: &str) -> Vec<(usize, usize)> {
    words
        .ranges(line)
        .into_iter()
        .map(|r| (r.start, r.end))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(start: u32, text: &str, units: Vec<(u32, u32)>) -> PassageRecord {
        PassageRecord {
            path: "/n/a.md".into(),
            start_byte: 0,
            end_byte: text.len(),
            start_line: start,
            end_line: start + text.matches('\n').count() as u32,
            headings: Vec::new(),
            context: Vec::new(),
            text: text.into(),
            units,
            page: 0,
            names: Vec::new(),
            links: Vec::new(),
        }
    }

    const TEXT: &str = "Intro line\n\nThe event loop runs callbacks.\nTimers fire later.\n\n\
                        Streams pipe data.\nA readable stream emits data.\nWritable streams take it.\nEnd";

    #[test]
    fn the_semantic_side_s_best_unit_is_what_matched() {
        // Lines 10..=18; units at 10-14 and 14-18.
        let p = passage(10, TEXT, vec![(10, 14), (14, 18)]);
        let m = matched(&p, Some(1), &Highlighter::new("how do streams work"));
        assert_eq!(m.lines, (14, 18));
        // Within the unit, the lines with the query's words; it starts on a line with text.
        assert_eq!(m.snippet.line, 15);
        assert!(
            m.snippet.text.starts_with("Streams pipe data."),
            "{:?}",
            m.snippet
        );
        assert_eq!(m.snippet.text.lines().count(), SNIPPET_LINES);
        let marked: Vec<&str> = m
            .snippet
            .marks
            .iter()
            .map(|&(a, b)| &m.snippet.text[a..b])
            .collect();
        assert_eq!(marked, ["Streams", "stream", "streams"]);
        // A unit without any of the words still is what matched; its first lines show.
        let m = matched(&p, Some(0), &Highlighter::new("kubernetes"));
        assert_eq!((m.lines, m.snippet.line), ((10, 14), 10));
        assert!(m.snippet.marks.is_empty());
    }

    #[test]
    fn without_a_unit_the_lines_with_the_most_query_words_matched() {
        let p = passage(1, TEXT, Vec::new());
        let m = matched(&p, None, &Highlighter::new("timers event loop"));
        assert_eq!(m.snippet.line, 3);
        assert_eq!(m.lines.0, 3);
        assert!(m.snippet.text.starts_with("The event loop"));
        // Trailing blank lines are not shown.
        assert!(!m.snippet.text.ends_with('\n'));
        // No words at all: the whole passage matched, its start shows.
        let m = matched(&p, None, &Highlighter::new("kubernetes"));
        assert_eq!(m.lines, (1, 9));
        assert_eq!(m.snippet.line, 1);
        // A stored unit out of range (an older record, a hand-built one) cannot panic.
        let odd = passage(1, "one\ntwo", vec![(50, 60)]);
        let m = matched(&odd, Some(0), &Highlighter::new("two"));
        assert!(m.snippet.text.contains("two") || m.snippet.text.contains("one"));
        let m = matched(&odd, Some(9), &Highlighter::new("two"));
        assert_eq!(m.snippet.line, 2);
    }
}
