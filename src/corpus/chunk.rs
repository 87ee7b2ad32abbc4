//! Cutting a document into passages that fit the encoder.
//!
//! A BERT encoder silently truncates long input, so anything past its window would never be
//! searchable; passages are therefore sized by the encoder's own token count, not by bytes.
//! Within that hard limit the cuts follow the document's structure (sections, then paragraphs,
//! then sentences) because a passage that is one coherent thought embeds much better than an
//! arbitrary window, and consecutive passages overlap so a thought that straddles a cut is
//! still found.
//!
//! Cost is linear in document size: the counter is called once per block, and only blocks too
//! long for a passage are counted again sentence by sentence (then word by word).

use std::collections::VecDeque;
use std::ops::{Range, RangeInclusive};

use serde::{Deserialize, Serialize};

use super::read::Document;
use super::segment::{Level, WordsRev, segments, starts_sentence, trim};
use super::structure::{Block, Format, Section, sections};

/// Counts tokens the way the encoder will, so passages can be sized to its window.
pub trait TokenCounter {
    fn count(&self, text: &str) -> usize;
}

/// Lets a closure serve as a counter, e.g. in tests or with [`approx_token_count`].
impl<F: Fn(&str) -> usize> TokenCounter for F {
    fn count(&self, text: &str) -> usize {
        self(text)
    }
}

/// A cheap stand-in for a WordPiece tokenizer: each run of letters/digits, each other
/// non-space character and each CJK character is one token (BERT tokenizers split CJK text per
/// character, and without that a page of Chinese would look like a single word). Usually at or
/// below a BERT tokenizer's count, so useful for tests and previews, not for sizing real
/// passages.
pub fn approx_token_count(text: &str) -> usize {
    let mut n = 0;
    let mut in_word = false;
    for c in text.chars() {
        if is_cjk(c) {
            n += 1;
            in_word = false;
        } else if c.is_alphanumeric() {
            if !in_word {
                n += 1;
            }
            in_word = true;
        } else {
            in_word = false;
            if !c.is_whitespace() {
                n += 1;
            }
        }
    }
    n
}

/// Scripts written without spaces between words — kana, CJK ideographs (with the extensions
/// and compatibility block) and Hangul syllables — where each character is taken as a unit: a
/// word of the lexical index, a token of [`approx_token_count`].
pub fn is_cjk(c: char) -> bool {
    matches!(u32::from(c),
        0x3040..=0x30ff      // hiragana, katakana
        | 0x3400..=0x4dbf    // CJK extension A
        | 0x4e00..=0x9fff    // CJK unified ideographs
        | 0xac00..=0xd7af    // Hangul syllables
        | 0xf900..=0xfaff    // CJK compatibility ideographs
        | 0x20000..=0x2fa1f) // CJK extensions B–F
}

/// Passage sizing, in the encoder's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChunkConfig {
    /// Hard upper bound on the counted tokens of a passage's embedded text (heading line
    /// included). Leave room below the encoder's window for its special tokens if the counter
    /// does not include them.
    pub max_tokens: usize,
    /// How much of the end of a passage is repeated at the start of the next one in the same
    /// section. Capped at half the room left after the heading line, so every passage is mostly
    /// new text.
    pub overlap_tokens: usize,
    /// A section's last passage with less new text than this is grown backwards to a full
    /// passage, instead of being a near-duplicate sliver of its predecessor.
    pub min_tokens: usize,
    /// Whether the heading trail is embedded with the passage (it gives short passages the
    /// context a reader has; it costs where headings carry no meaning).
    pub embed_headings: bool,
    /// Pack passages across section boundaries, like fixed windows, instead of cutting at every
    /// heading; the trail all sections share (the document's title) is embedded, and each
    /// passage shows the trail of the section it starts in (measured in docs/BENCHMARKS.md).
    #[serde(default)]
    pub across_sections: bool,
    /// Match on smaller units than the passage shown: a passage longer than this many tokens is
    /// also cut into half-overlapping windows of this size (heading line included), each
    /// embedded on its own, and semantic search scores the passage by its best window. 0: the
    /// passage is its own only unit. (A question usually matches a few sentences; one vector for
    /// a 200-token passage blurs them. Measured in docs/BENCHMARKS.md.)
    #[serde(default)]
    pub unit_tokens: usize,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        ChunkConfig {
            max_tokens: 200,
            overlap_tokens: 32,
            min_tokens: 16,
            embed_headings: true,
            across_sections: false,
            unit_tokens: 0,
        }
    }
}

/// One piece of a document, ready to embed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Passage {
    /// Byte range of the passage body in [`Document::text`]; always inside [`Document::body`]
    /// and on char boundaries.
    pub bytes: Range<usize>,
    /// 1-based first and last line of `bytes` in the file, for jumping to a hit.
    pub lines: RangeInclusive<u32>,
    /// Heading trail where the passage's new text starts, outermost first: what is shown.
    pub headings: Vec<String>,
    /// The trail where the passage's first byte lies, when that differs (it starts with the end
    /// of an earlier section, through overlap or packing): that section's heading line is not in
    /// the passage, so the lexical side searches this trail with the passage's title. Empty
    /// otherwise.
    pub context: Vec<String>,
    /// What gets embedded: the heading trail as `A > B`, a newline, then the body. The trail
    /// gives short passages the context a reader would get from the page.
    pub text: String,
    /// What semantic search matches, when the passage is longer than
    /// [`ChunkConfig::unit_tokens`]: its half-overlapping windows, each with the heading line,
    /// in order, together covering the body. Empty: the passage's `text` is its only unit.
    pub units: Vec<String>,
    /// 1-based first and last line of each of `units`, in the same order: where a hit on that
    /// unit opens.
    pub unit_lines: Vec<RangeInclusive<u32>>,
}

/// Splits a document whose format is unknown; the format is guessed from its content.
/// Prefer [`split_as`] with [`Format::from_path`] when the file name is known.
pub fn split(doc: &Document, counter: &dyn TokenCounter, cfg: &ChunkConfig) -> Vec<Passage> {
    let format = Format::detect(doc.body_text());
    split_as(doc, format, counter, cfg)
}

/// Splits a document using the heading conventions of `format`.
pub fn split_as(
    doc: &Document,
    format: Format,
    counter: &dyn TokenCounter,
    cfg: &ChunkConfig,
) -> Vec<Passage> {
    let title = super::note_meta(doc, format).title;
    split_titled(doc, format, title.as_deref(), counter, cfg)
}

/// [`split_as`] for a caller that has read the note's metadata already: `title` (its front
/// matter's, as [`super::note_meta`] gives it) heads every passage's trail.
pub fn split_titled(
    doc: &Document,
    format: Format,
    title: Option<&str>,
    counter: &dyn TokenCounter,
    cfg: &ChunkConfig,
) -> Vec<Passage> {
    let text = doc.text.as_str();
    let Some(body) = valid_body(text, &doc.body) else {
        return Vec::new();
    };
    let mut chunker = Chunker {
        text,
        counter,
        max: cfg.max_tokens.max(1),
        overlap: cfg.overlap_tokens,
        min: cfg.min_tokens,
        embed_headings: cfg.embed_headings,
        unit: cfg.unit_tokens,
        overhead: counter.count(""),
        lines: LineCursor { pos: 0, line: 1 },
        out: Vec::new(),
    };
    let all = sections(text, body, format, title);
    if cfg.across_sections {
        // One run of blocks: passages may span headings (the heading lines between their
        // blocks are part of their text).
        chunker.across(&all);
    } else {
        for section in &all {
            chunker.section(section);
        }
    }
    chunker.out
}

/// The body range clamped to the text and to char boundaries, since a hand-built `Document`
/// could carry any range and slicing must never panic.
fn valid_body(text: &str, body: &Range<usize>) -> Option<Range<usize>> {
    let mut start = body.start.min(text.len());
    let mut end = body.end.min(text.len());
    while !text.is_char_boundary(start) {
        start += 1;
    }
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (start < end).then_some(start..end)
}

/// A unit the packer places whole: a block, or a piece of one that was too long.
#[derive(Debug, Clone)]
struct Atom {
    range: Range<usize>,
    /// Counted tokens, minus the counter's fixed overhead so atoms can be summed.
    tokens: usize,
    code: bool,
    /// How far this atom has been cut already: index into the block's list of levels, or past
    /// its end once only cutting by characters is left.
    depth: usize,
}

const PROSE_LEVELS: &[Level] = &[Level::Sentence, Level::Line, Level::Word];
const CODE_LEVELS: &[Level] = &[Level::Line, Level::Word];

fn levels(code: bool) -> &'static [Level] {
    if code { CODE_LEVELS } else { PROSE_LEVELS }
}

/// A passage under construction, before its text is built.
struct Draft {
    start: usize,
    end: usize,
    /// Where the new (non-overlap) text starts: the passage shows the headings in force there,
    /// not those of the overlap it repeats from its predecessor.
    first: usize,
    /// Tokens of the new (non-overlap) text, to spot a sliver at the end of a section.
    fresh_tokens: usize,
}

struct Chunker<'a> {
    text: &'a str,
    counter: &'a dyn TokenCounter,
    max: usize,
    overlap: usize,
    min: usize,
    embed_headings: bool,
    /// [`ChunkConfig::unit_tokens`].
    unit: usize,
    /// What the counter returns for empty text (special tokens), which must not be counted once
    /// per atom when estimating a sum of atoms.
    overhead: usize,
    lines: LineCursor,
    out: Vec<Passage>,
}

/// A passage is also bounded in bytes: a WordPiece tokenizer turns any "word" longer than 100
/// characters (base64, a minified file, a 4 MiB line without spaces) into a single `[UNK]`, so
/// token counts alone would let such a word through as one enormous passage. Counting at least
/// one token per this many bytes cuts it into passages of at most `max_tokens ×` this many bytes,
/// and leaves ordinary text (4–6 bytes a token) alone.
pub const MAX_BYTES_PER_TOKEN: usize = 16;

impl Chunker<'_> {
    /// Tokens of `s` as far as passage sizing is concerned (see [`MAX_BYTES_PER_TOKEN`]).
    fn count(&self, s: &str) -> usize {
        self.counter
            .count(s)
            .max(s.len().div_ceil(MAX_BYTES_PER_TOKEN))
    }

    fn cost(&self, range: &Range<usize>) -> usize {
        self.count(&self.text[range.clone()])
            .saturating_sub(self.overhead)
    }

    fn section(&mut self, section: &Section) {
        self.run(&section.trail, &section.blocks, &|_| section.trail.clone());
    }

    /// Sections packed as one run (see [`ChunkConfig::across_sections`]): the heading trail all
    /// of them share is embedded, and each passage shows the trail of the section it starts in.
    fn across(&mut self, sections: &[Section]) {
        let mut shared: Vec<String> = Vec::new();
        let mut first = true;
        let mut blocks = Vec::new();
        let mut starts: Vec<(usize, &Vec<String>)> = Vec::new();
        for s in sections.iter().filter(|s| !s.blocks.is_empty()) {
            if first {
                shared = s.trail.clone();
                first = false;
            } else {
                let common = shared
                    .iter()
                    .zip(&s.trail)
                    .take_while(|(a, b)| a == b)
                    .count();
                shared.truncate(common);
            }
            starts.push((s.blocks[0].range.start, &s.trail));
            blocks.extend(s.blocks.iter().cloned());
        }
        let trail_at = |pos: usize| {
            let i = starts.partition_point(|(start, _)| *start <= pos);
            starts
                .get(i.saturating_sub(1))
                .map(|(_, t)| (*t).clone())
                .unwrap_or_default()
        };
        self.run(&shared, &blocks, &trail_at);
    }

    /// Packs `blocks` into passages whose embedded text starts with `trail`; `headings_at`
    /// gives the trail shown for a passage starting at a byte offset.
    fn run(
        &mut self,
        trail: &[String],
        blocks: &[Block],
        headings_at: &dyn Fn(usize) -> Vec<String>,
    ) {
        let (prefix, base) = self.prefix(trail);
        let budget = self.max.saturating_sub(base).max(1);
        let overlap = self.overlap.min(budget / 2);

        let mut atoms = Vec::new();
        for Block { range, code } in blocks {
            self.atomize(trim(self.text, range.clone()), *code, 0, budget, &mut atoms);
        }
        let drafts = self.pack(atoms, &prefix, budget, overlap);
        let drafts = self.grow_last(drafts, &prefix, budget);
        for d in drafts {
            if !self.text[d.start..d.end].chars().any(char::is_alphanumeric) {
                continue;
            }
            let body = &self.text[d.start..d.end];
            let first = self.lines.line_at(self.text, d.start);
            let last = self.lines.line_at(self.text, d.end - 1);
            let headings = headings_at(d.first);
            let context = if d.start < d.first {
                Some(headings_at(d.start)).filter(|c| *c != headings)
            } else {
                None
            };
            let text = format!("{prefix}{}", super::links::as_read(body));
            let units = self.units(trail, blocks, d.start..d.end, &text);
            let mut at = LineCursor {
                pos: d.start,
                line: first,
            };
            let unit_lines = units
                .iter()
                .map(|(_, r)| {
                    let a = at.line_at(self.text, r.start);
                    let b = at.line_at(self.text, r.end.saturating_sub(1).max(r.start));
                    to_u32(a)..=to_u32(b)
                })
                .collect();
            self.out.push(Passage {
                bytes: d.start..d.end,
                lines: to_u32(first)..=to_u32(last),
                headings,
                context: context.unwrap_or_default(),
                text,
                units: units.into_iter().map(|(u, _)| u).collect(),
                unit_lines,
            });
        }
    }

    /// The windows semantic search matches for the passage at `range` (see
    /// [`Passage::units`]): the passage's blocks packed again by the same rules, at the unit
    /// size with half of it overlapping.
    fn units(
        &self,
        trail: &[String],
        blocks: &[Block],
        range: Range<usize>,
        text: &str,
    ) -> Vec<(String, Range<usize>)> {
        if self.unit == 0 || self.count(text) <= self.unit {
            return Vec::new();
        }
        let sub = Chunker {
            max: self.unit,
            overlap: self.unit / 2,
            unit: 0,
            lines: LineCursor { pos: 0, line: 1 },
            out: Vec::new(),
            ..*self
        };
        let (prefix, base) = sub.prefix(trail);
        let budget = sub.max.saturating_sub(base).max(1);
        let mut atoms = Vec::new();
        // Blocks are in text order: start at the first one that reaches the passage.
        let first = blocks.partition_point(|b| b.range.end <= range.start);
        for b in blocks[first..]
            .iter()
            .take_while(|b| b.range.start < range.end)
        {
            let r = b.range.start.max(range.start)..b.range.end.min(range.end);
            if r.start < r.end {
                sub.atomize(trim(self.text, r), b.code, 0, budget, &mut atoms);
            }
        }
        let drafts = sub.pack(atoms, &prefix, budget, sub.overlap.min(budget / 2));
        sub.grow_last(drafts, &prefix, budget)
            .into_iter()
            .map(|u| {
                (
                    format!(
                        "{prefix}{}",
                        super::links::as_read(&self.text[u.start..u.end])
                    ),
                    u.start..u.end,
                )
            })
            .filter(|(u, _)| u.chars().any(char::is_alphanumeric))
            .collect()
    }

    /// The heading line and its token cost. A trail too long to leave half the window for text
    /// is shortened to the innermost heading, then dropped: context must not crowd out content.
    fn prefix(&self, trail: &[String]) -> (String, usize) {
        let mut candidates = Vec::new();
        if !trail.is_empty() && self.embed_headings {
            candidates.push(format!("{}\n", trail.join(" > ")));
        }
        if trail.len() > 1
            && let Some(last) = trail.last()
        {
            candidates.push(format!("{last}\n"));
        }
        for c in candidates {
            let cost = self.count(&c);
            if cost <= self.max / 2 {
                return (c, cost);
            }
        }
        (String::new(), self.overhead)
    }

    /// Appends `range` as one atom if it fits `budget`, otherwise its pieces at the next level
    /// of cutting that actually cuts.
    fn atomize(
        &self,
        range: Range<usize>,
        code: bool,
        depth: usize,
        budget: usize,
        out: &mut Vec<Atom>,
    ) {
        if range.is_empty() {
            return;
        }
        let tokens = self.cost(&range);
        if tokens <= budget {
            out.push(Atom {
                range,
                tokens,
                code,
                depth,
            });
            return;
        }
        for (d, level) in levels(code).iter().enumerate().skip(depth) {
            let pieces = segments(self.text, range.clone(), *level);
            if pieces.len() > 1 {
                for piece in pieces {
                    self.atomize(piece, code, d + 1, budget, out);
                }
                return;
            }
        }
        self.cut_chars(range, code, budget, out);
    }

    /// Last resort for a "word" longer than a passage (a URL, base64, minified code): the
    /// longest prefixes that fit, found by galloping then bisecting so each piece costs a
    /// logarithmic number of counter calls.
    fn cut_chars(&self, range: Range<usize>, code: bool, budget: usize, out: &mut Vec<Atom>) {
        let depth = levels(code).len();
        let mut pos = range.start;
        while pos < range.end {
            let min_end = next_boundary(self.text, pos, range.end);
            let mut good = min_end;
            let mut good_tokens = self.cost(&(pos..min_end));
            // Where the byte bound decides (a "word" the tokenizer sees as one token), the
            // longest piece the bound allows is the answer: try it first.
            let cap = snap_up(
                self.text,
                (pos + budget * MAX_BYTES_PER_TOKEN).min(range.end),
            );
            if good_tokens <= budget && cap > min_end {
                let t = self.cost(&(pos..cap));
                if t <= budget {
                    out.push(Atom {
                        range: pos..cap,
                        tokens: t,
                        code,
                        depth,
                    });
                    pos = cap;
                    continue;
                }
            }
            if good_tokens <= budget {
                let mut step = budget.max(1);
                let mut bad = None;
                while bad.is_none() {
                    let probe = snap_up(self.text, (good + step).min(range.end));
                    if probe <= good {
                        break;
                    }
                    let t = self.cost(&(pos..probe));
                    if t <= budget {
                        good = probe;
                        good_tokens = t;
                        if probe == range.end {
                            break;
                        }
                        step = step.saturating_mul(2);
                    } else {
                        bad = Some(probe);
                    }
                }
                if let Some(mut bad) = bad {
                    loop {
                        let mid = snap_up(self.text, good + (bad - good) / 2);
                        if mid <= good || mid >= bad {
                            break;
                        }
                        let t = self.cost(&(pos..mid));
                        if t <= budget {
                            good = mid;
                            good_tokens = t;
                        } else {
                            bad = mid;
                        }
                    }
                }
            }
            out.push(Atom {
                range: pos..good,
                tokens: good_tokens,
                code,
                depth,
            });
            pos = good;
        }
    }

    /// Cuts an atom that turned out too big once its passage text was actually counted.
    /// Returns `None` when it is a single character and cannot be cut.
    fn cut_smaller(&self, atom: &Atom, budget: usize) -> Option<Vec<Atom>> {
        let mut out = Vec::new();
        for (d, level) in levels(atom.code).iter().enumerate().skip(atom.depth) {
            let pieces = segments(self.text, atom.range.clone(), *level);
            if pieces.len() > 1 {
                for piece in pieces {
                    self.atomize(piece, atom.code, d + 1, budget, &mut out);
                }
                return Some(out);
            }
        }
        // Halve by characters: the counter disagreed with its own per-piece counts, so aim
        // lower than the budget rather than trusting it again.
        let r = &atom.range;
        let mid = snap_up(self.text, r.start + (r.end - r.start) / 2);
        let mid = if mid <= r.start || mid >= r.end {
            next_boundary(self.text, r.start, r.end)
        } else {
            mid
        };
        if mid >= r.end {
            return None;
        }
        let depth = levels(atom.code).len();
        for piece in [r.start..mid, mid..r.end] {
            let tokens = self.cost(&piece);
            out.push(Atom {
                range: piece,
                tokens,
                code: atom.code,
                depth,
            });
        }
        Some(out)
    }

    /// Greedy packing of atoms into passages, each checked with a real count of its full text
    /// because token counts of pieces need not add up exactly to the count of the whole.
    fn pack(&self, atoms: Vec<Atom>, prefix: &str, budget: usize, overlap: usize) -> Vec<Draft> {
        let mut queue: VecDeque<Atom> = atoms.into();
        let mut drafts: Vec<Draft> = Vec::new();
        let mut scratch = String::new();
        'passages: while let Some(first) = queue.pop_front() {
            let mut lead = match drafts.last() {
                Some(prev) if overlap > 0 => {
                    let want = overlap.min(budget.saturating_sub(first.tokens));
                    self.tail(prev.start..prev.end, want, false)
                }
                _ => None,
            };
            let mut estimate = lead.as_ref().map_or(0, |l| l.1) + first.tokens;
            let mut taken = vec![first];
            while let Some(next) = queue.front() {
                if estimate + next.tokens > budget {
                    break;
                }
                estimate += next.tokens;
                if let Some(atom) = queue.pop_front() {
                    taken.push(atom);
                }
            }
            loop {
                let (Some(head), Some(tail)) = (taken.first(), taken.last()) else {
                    continue 'passages;
                };
                let start = lead.as_ref().map_or(head.range.start, |l| l.0);
                let end = tail.range.end;
                scratch.clear();
                scratch.push_str(prefix);
                scratch.push_str(&self.text[start..end]);
                if self.count(&scratch) <= self.max {
                    let fresh_tokens = taken.iter().map(|a| a.tokens).sum();
                    drafts.push(Draft {
                        start,
                        end,
                        first: head.range.start,
                        fresh_tokens,
                    });
                    continue 'passages;
                }
                if taken.len() > 1 {
                    if let Some(atom) = taken.pop() {
                        queue.push_front(atom);
                    }
                    continue;
                }
                if lead.take().is_some() {
                    continue;
                }
                let Some(atom) = taken.pop() else {
                    continue 'passages;
                };
                match self.cut_smaller(&atom, budget) {
                    Some(pieces) => {
                        for piece in pieces.into_iter().rev() {
                            queue.push_front(piece);
                        }
                        continue 'passages;
                    }
                    None => {
                        // A single character the counter still finds too long: keep it rather
                        // than lose text; nothing smaller exists.
                        let r = atom.range;
                        drafts.push(Draft {
                            start: r.start,
                            end: r.end,
                            first: r.start,
                            fresh_tokens: atom.tokens,
                        });
                        continue 'passages;
                    }
                }
            }
        }
        drafts
    }

    /// A start position inside `range` such that `text[start..range.end]` holds at most `want`
    /// tokens (and as many as possible), at a sentence start if that keeps at least half of them,
    /// else at a word start. With `whole` false the start of `range` itself is excluded, so an
    /// overlap never repeats an entire passage.
    ///
    /// Candidate starts are word starts; since every word costs at least one token, no more
    /// than `want` of them can fit, and the best is found by bisection over whole suffixes: a
    /// handful of counter calls instead of one per word, and exact rather than summed counts.
    fn tail(&self, range: Range<usize>, want: usize, whole: bool) -> Option<(usize, usize)> {
        if want == 0 {
            return None;
        }
        let mut starts = Vec::new();
        for word in WordsRev::new(self.text, range.clone()) {
            if word.start == range.start && !whole {
                break;
            }
            starts.push(word.start);
            if starts.len() >= want {
                break;
            }
        }
        if starts.is_empty() {
            return None;
        }
        let suffix = |k: usize| self.cost(&(starts[k]..range.end));
        let first = suffix(0);
        if first > want {
            return None;
        }
        // Invariant: starts[lo] fits, starts[hi] does not (or hi is one past the end).
        let (mut lo, mut lo_tokens, mut hi) = (0, first, starts.len());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let t = suffix(mid);
            if t <= want {
                (lo, lo_tokens) = (mid, t);
            } else {
                hi = mid;
            }
        }
        let sentence = (0..=lo)
            .rev()
            .find(|&k| starts_sentence(self.text, starts[k]));
        if let Some(k) = sentence {
            let t = if k == lo { lo_tokens } else { suffix(k) };
            if t * 2 >= lo_tokens {
                return Some((starts[k], t));
            }
        }
        Some((starts[lo], lo_tokens))
    }

    /// Replaces a sliver at the end of a section by a passage grown backwards to a full budget,
    /// or merges it into its predecessor when both fit together.
    fn grow_last(&self, mut drafts: Vec<Draft>, prefix: &str, budget: usize) -> Vec<Draft> {
        let n = drafts.len();
        if n < 2 || drafts[n - 1].fresh_tokens >= self.min {
            return drafts;
        }
        let (prev_start, last_start, end) =
            (drafts[n - 2].start, drafts[n - 1].start, drafts[n - 1].end);
        let Some((start, _)) = self.tail(prev_start..end, budget, true) else {
            return drafts;
        };
        if start >= last_start || !self.fits(prefix, start..end) {
            return drafts;
        }
        if start <= prev_start {
            let last = drafts.pop();
            if let (Some(prev), Some(last)) = (drafts.last_mut(), last) {
                prev.end = last.end;
                prev.fresh_tokens += last.fresh_tokens;
            }
        } else if let Some(last) = drafts.last_mut() {
            last.start = start;
        }
        drafts
    }

    fn fits(&self, prefix: &str, range: Range<usize>) -> bool {
        let mut s = String::with_capacity(prefix.len() + range.len());
        s.push_str(prefix);
        s.push_str(&self.text[range]);
        self.count(&s) <= self.max
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn snap_up(text: &str, mut i: usize) -> usize {
    while i < text.len() && !text.is_char_boundary(i) {
        i += 1;
    }
    i.min(text.len())
}

fn next_boundary(text: &str, pos: usize, end: usize) -> usize {
    text[pos..end]
        .chars()
        .next()
        .map_or(end, |c| pos + c.len_utf8())
}

/// Line numbers for byte offsets that arrive nearly in order (passage starts move forward, an
/// overlap steps back a little), so counting newlines from the previous answer keeps the whole
/// document linear without an index of every line.
struct LineCursor {
    pos: usize,
    line: usize,
}

impl LineCursor {
    fn line_at(&mut self, text: &str, pos: usize) -> usize {
        let pos = pos.min(text.len());
        let bytes = text.as_bytes();
        if pos >= self.pos {
            self.line += bytes[self.pos..pos].iter().filter(|&&b| b == b'\n').count();
        } else {
            self.line -= bytes[pos..self.pos].iter().filter(|&&b| b == b'\n').count();
        }
        self.pos = pos;
        self.line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    fn words(text: &str) -> usize {
        approx_token_count(text)
    }

    #[test]
    fn approx_counter_counts_words_punctuation_and_cjk() {
        assert_eq!(approx_token_count(""), 0);
        assert_eq!(approx_token_count("Hello, wörld 42!"), 5);
        assert_eq!(approx_token_count("日本語 ok"), 4);
    }

    fn cfg(max: usize, overlap: usize, min: usize) -> ChunkConfig {
        ChunkConfig {
            max_tokens: max,
            overlap_tokens: overlap,
            min_tokens: min,
            embed_headings: true,
            across_sections: false,
            unit_tokens: 0,
        }
    }

    /// Invariants every split must satisfy, whatever the input.
    fn check(doc: &Document, passages: &[Passage], counter: &dyn TokenCounter, cfg: &ChunkConfig) {
        for p in passages {
            assert!(
                p.bytes.start >= doc.body.start && p.bytes.end <= doc.body.end,
                "{p:?} outside body"
            );
            assert!(
                doc.text.is_char_boundary(p.bytes.start) && doc.text.is_char_boundary(p.bytes.end)
            );
            let body = &doc.text[p.bytes.clone()];
            assert!(p.text.ends_with(body));
            assert!(
                counter.count(&p.text) <= cfg.max_tokens,
                "over budget: {} {:?}",
                counter.count(&p.text),
                p.text
            );
            let line_start = doc.text[..p.bytes.start].matches('\n').count() + 1;
            assert_eq!(*p.lines.start() as usize, line_start);
            let line_end = doc.text[..p.bytes.end].matches('\n').count() + 1;
            assert_eq!(*p.lines.end() as usize, line_end);
        }
    }

    fn sentence(i: usize) -> String {
        format!(
            "Sentence number {i} talks about topic {} in some detail. ",
            i % 7
        )
    }

    #[test]
    fn headings_produce_trails_and_prefixes() {
        let doc = Document::from_text(
            "Intro text.\n\n# Garden\n\nTomatoes need sun.\n\n## Pests\n\n\
             Aphids hate garlic.\n\n# Kitchen\nBread.\n",
        );
        let ps = split(&doc, &words, &ChunkConfig::default());
        let trails: Vec<Vec<&str>> = ps
            .iter()
            .map(|p| p.headings.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(
            trails,
            [
                vec![],
                vec!["Garden"],
                vec!["Garden", "Pests"],
                vec!["Kitchen"]
            ]
        );
        assert_eq!(ps[0].text, "Intro text.");
        assert_eq!(ps[2].text, "Garden > Pests\nAphids hate garlic.");
        assert_eq!(&doc.text[ps[2].bytes.clone()], "Aphids hate garlic.");
        assert_eq!(ps[2].lines, 9..=9);
        assert_eq!(ps[3].lines, 12..=12);
        check(&doc, &ps, &words, &ChunkConfig::default());
    }

    #[test]
    fn a_long_passage_is_matched_on_half_overlapping_units_that_cover_it() {
        let text = format!("# Guide\n\n{}", (0..40).map(sentence).collect::<String>());
        let doc = Document::from_text(&text);
        let c = ChunkConfig {
            unit_tokens: 40,
            ..cfg(120, 20, 10)
        };
        let ps = split(&doc, &words, &c);
        check(&doc, &ps, &words, &c);
        assert!(ps.len() >= 2);
        let mut long = 0;
        for p in &ps {
            if words(&p.text) <= 40 {
                assert!(p.units.is_empty(), "a short passage is its own unit");
                continue;
            }
            long += 1;
            let body = &doc.text[p.bytes.clone()];
            let spans: Vec<(usize, usize)> = p
                .units
                .iter()
                .map(|u| {
                    assert!(words(u) <= 40, "unit over budget: {u:?}");
                    let b = u.strip_prefix("Guide\n").expect("the heading line");
                    let at = body.find(b).expect("a unit is a piece of its passage");
                    (at, at + b.len())
                })
                .collect();
            assert!(spans.len() >= 2, "{spans:?}");
            // Each unit's lines are where its text is in the file.
            assert_eq!(p.unit_lines.len(), p.units.len());
            for (&(a, b), lines) in spans.iter().zip(&p.unit_lines) {
                let at = p.bytes.start + a;
                let line_of = |pos: usize| 1 + doc.text[..pos].matches('\n').count() as u32;
                assert_eq!(*lines.start(), line_of(at));
                assert_eq!(*lines.end(), line_of(p.bytes.start + b - 1));
                assert!(p.lines.contains(lines.start()) && p.lines.contains(lines.end()));
            }
            assert_eq!(spans[0].0, 0);
            assert_eq!(spans.last().unwrap().1, body.len());
            for w in spans.windows(2) {
                assert!(
                    w[1].0 > w[0].0 && w[1].0 < w[0].1,
                    "overlapping, in order: {w:?}"
                );
            }
        }
        assert!(long > 0);
        // Off: one vector per passage.
        assert!(
            split(&doc, &words, &cfg(120, 20, 10))
                .iter()
                .all(|p| p.units.is_empty())
        );
    }

    #[test]
    fn paragraphs_are_packed_but_sections_never_mixed() {
        let doc = Document::from_text("# A\n\none.\n\ntwo.\n\nthree.\n\n# B\n\nfour.\n");
        let ps = split(&doc, &words, &ChunkConfig::default());
        assert_eq!(ps.len(), 2);
        assert_eq!(&doc.text[ps[0].bytes.clone()], "one.\n\ntwo.\n\nthree.");
        assert_eq!(ps[0].lines, 3..=7);
        assert_eq!(&doc.text[ps[1].bytes.clone()], "four.");
    }

    #[test]
    fn long_sections_respect_the_budget_and_overlap() {
        let mut text = String::from("# Notes\n\n");
        for p in 0..6 {
            for s in 0..8 {
                text.push_str(&sentence(p * 8 + s));
                if s % 3 == 2 {
                    text.push('\n');
                }
            }
            text.push_str("\n\n");
        }
        let doc = Document::from_text(text);
        let c = cfg(60, 12, 8);
        let ps = split(&doc, &words, &c);
        assert!(ps.len() > 5, "{}", ps.len());
        check(&doc, &ps, &words, &c);
        for pair in ps.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(
                b.bytes.start < a.bytes.end,
                "no overlap between {:?} and {:?}",
                a.bytes,
                b.bytes
            );
            assert!(
                b.bytes.start > a.bytes.start && b.bytes.end > a.bytes.end,
                "no progress"
            );
            let shared = words(&doc.text[b.bytes.start..a.bytes.end]);
            assert!((4..=12).contains(&shared), "overlap of {shared} tokens");
        }
        // Every byte of content is in some passage.
        let mut covered = "# Notes\n\n".len();
        for p in &ps {
            if covered < p.bytes.start {
                assert_eq!(
                    doc.text[covered..p.bytes.start].trim(),
                    "",
                    "gap before {:?}",
                    p.bytes
                );
            }
            covered = covered.max(p.bytes.end);
        }
        assert!(doc.text[covered..].trim().is_empty());
    }

    #[test]
    fn overlap_starts_at_a_sentence_when_it_can() {
        let text = "Alpha beta gamma delta epsilon zeta. Eta theta iota. \
                    Kappa lambda mu nu xi omicron pi rho sigma.";
        let doc = Document::from_text(text);
        let ps = split(&doc, &words, &cfg(14, 6, 0));
        assert!(ps.len() >= 2);
        check(&doc, &ps, &words, &cfg(14, 6, 0));
        assert!(
            ps[1].text.starts_with("Eta theta iota."),
            "{:?}",
            ps[1].text
        );
    }

    #[test]
    fn no_overlap_when_disabled() {
        let text: String = (0..40).map(sentence).collect();
        let doc = Document::from_text(text);
        let c = cfg(50, 0, 0);
        let ps = split(&doc, &words, &c);
        check(&doc, &ps, &words, &c);
        for pair in ps.windows(2) {
            assert!(pair[1].bytes.start >= pair[0].bytes.end);
        }
    }

    #[test]
    fn tiny_trailing_piece_is_grown_not_left_as_a_sliver() {
        // 2 sentences of 11 tokens, then a 3-token tail that does not fit beside them.
        let text = "one two three four five six seven eight nine ten. \
                    one two three four five six seven eight nine ten. End now.";
        let doc = Document::from_text(text);
        let with_merge = cfg(24, 0, 8);
        let ps = split(&doc, &words, &with_merge);
        check(&doc, &ps, &words, &with_merge);
        let last = ps.last().unwrap();
        assert!(
            words(&last.text) > 8,
            "last passage is a sliver: {:?}",
            last.text
        );
        assert!(last.text.ends_with("End now."));
        let without = cfg(24, 0, 0);
        let ps = split(&doc, &words, &without);
        assert_eq!(
            ps.last().unwrap().text,
            "End now.",
            "min_tokens 0 keeps the sliver"
        );
    }

    #[test]
    fn a_long_word_is_cut_by_characters() {
        let word = "x".repeat(1000);
        let text = format!("# H\n\nstart {word} end\n");
        let doc = Document::from_text(text);
        // One token per 10 chars, rounded up: long words cost many tokens.
        let counter = |s: &str| {
            s.split_whitespace()
                .map(|w| w.chars().count().div_ceil(10))
                .sum::<usize>()
        };
        let c = cfg(20, 4, 0);
        let ps = split(&doc, &counter, &c);
        check(&doc, &ps, &counter, &c);
        let joined: usize = ps
            .iter()
            .map(|p| doc.text[p.bytes.clone()].matches('x').count())
            .sum();
        assert!(joined >= 1000, "every character is in some passage");
        assert!(ps.len() >= 6);
    }

    #[test]
    fn code_blocks_stay_whole_when_they_fit_and_split_by_lines_otherwise() {
        let small = concat!(
            "Text before.\n\n",
            "```rust\nfn main() {\n\n    println!(\"hi\");\n}\n```\n\n",
            "Text after.\n"
        );
        let doc = Document::from_text(small);
        let c = cfg(30, 0, 0);
        let ps = split(&doc, &words, &c);
        check(&doc, &ps, &words, &c);
        assert!(ps.iter().any(|p| {
            doc.text[p.bytes.clone()]
                .contains("```rust\nfn main() {\n\n    println!(\"hi\");\n}\n```")
        }));

        let mut big = String::from("```\n");
        for i in 0..60 {
            writeln!(big, "let v{i} = compute({i});").unwrap();
        }
        big.push_str("```\n");
        let doc = Document::from_text(big);
        let ps = split(&doc, &words, &c);
        check(&doc, &ps, &words, &c);
        assert!(ps.len() > 3);
        for p in &ps[1..] {
            let s = &doc.text[p.bytes.clone()];
            assert!(s.starts_with("let v"), "code cut mid-line: {s:?}");
        }
    }

    #[test]
    fn empty_and_whitespace_documents_give_nothing() {
        for t in [
            "",
            "   \n\n\t\r\n",
            "---\ntitle: x\n---\n\n  \n",
            "---\n\n***\n",
        ] {
            let doc = Document::from_text(t);
            assert!(
                split(&doc, &words, &ChunkConfig::default()).is_empty(),
                "{t:?}"
            );
        }
    }

    #[test]
    fn headings_with_nothing_under_them_are_text() {
        let cfg = ChunkConfig::default();
        // An outline: the leaf heading is the text, under the trail of the one above it.
        let doc = Document::from_text("# Only a heading\n\n## And another\n");
        let p = split(&doc, &words, &cfg);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].text.contains("## And another"), "{p:?}");
        assert_eq!((*p[0].lines.start(), *p[0].lines.end()), (3, 3));
        // An Org TODO list: every item.
        let doc = Document::from_text("* TODO renew passport\n* TODO call the bank\n");
        let p = split_as(&doc, Format::Org, &words, &cfg);
        let all: String = p.iter().map(|p| p.text.clone()).collect();
        assert!(
            all.contains("renew passport") && all.contains("call the bank"),
            "{p:?}"
        );
        // A heading that titles a section with text stays out of the text.
        let doc = Document::from_text("# Title\n\n## Part\n\nbody words\n");
        let p = split(&doc, &words, &cfg);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(!p[0].text.contains("# Title"), "{p:?}");
        // A file whose lines end in a lone CR is lines, not one heading.
        let doc = Document::from_text("# Mac\rfirst line\rsecond line\r");
        let p = split(&doc, &words, &cfg);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].headings, vec!["Mac".to_string()]);
        assert_eq!((*p[0].lines.start(), *p[0].lines.end()), (2, 3));
    }

    #[test]
    fn links_are_embedded_as_a_reader_sees_them() {
        let doc =
            Document::from_text("# Bees\n\nSee [[winter-cluster|the cluster]] and [[Smoke]].\n");
        let ps = split(&doc, &words, &ChunkConfig::default());
        assert_eq!(ps[0].text, "Bees\nSee the cluster and Smoke.");
        assert_eq!(
            &doc.text[ps[0].bytes.clone()],
            "See [[winter-cluster|the cluster]] and [[Smoke]].",
            "the file's text is what is stored and shown"
        );
    }

    #[test]
    fn front_matter_is_not_embedded_but_its_title_heads_the_trail() {
        let doc = Document::from_text(
            "---\ntitle: Bees\ntags: [secret, b]\n---\n\n# Real\n\nContent here.\n",
        );
        let ps = split(&doc, &words, &ChunkConfig::default());
        assert_eq!(ps.len(), 1);
        assert!(!ps[0].text.contains("secret"));
        assert_eq!(ps[0].headings, ["Bees", "Real"]);
        assert!(ps[0].text.ends_with("\nContent here."), "{}", ps[0].text);
        assert!(ps[0].text.starts_with("Bees"), "{}", ps[0].text);
        assert_eq!(ps[0].lines, 8..=8);
        // A heading that says the title already is not doubled.
        let doc = Document::from_text("---\ntitle: Real\n---\n# Real\n\nContent here.\n");
        let ps = split(&doc, &words, &ChunkConfig::default());
        assert_eq!(ps[0].headings, ["Real"]);
    }

    #[test]
    fn crlf_documents_have_correct_lines_and_clean_edges() {
        let doc = Document::from_text(
            "# Title\r\n\r\nFirst para\r\nline two.\r\n\r\n## Sub\r\n\r\nSecond.\r\n",
        );
        let ps = split(&doc, &words, &ChunkConfig::default());
        check(&doc, &ps, &words, &ChunkConfig::default());
        assert_eq!(ps.len(), 2);
        assert_eq!(&doc.text[ps[0].bytes.clone()], "First para\r\nline two.");
        assert_eq!(ps[0].lines, 3..=4);
        assert_eq!(ps[1].text, "Title > Sub\nSecond.");
        assert_eq!(ps[1].lines, 8..=8);
    }

    #[test]
    fn counters_with_special_tokens_still_pack_fully() {
        // Like a BERT tokenizer that adds [CLS] and [SEP] to every call.
        let bert_like = |s: &str| words(s) + 2;
        let text: String = (0..30).map(sentence).collect();
        let doc = Document::from_text(text);
        let c = cfg(100, 0, 0);
        let ps = split(&doc, &bert_like, &c);
        check(&doc, &ps, &bert_like, &c);
        for p in &ps[..ps.len() - 1] {
            assert!(
                bert_like(&p.text) > 80,
                "passage underfilled: {}",
                bert_like(&p.text)
            );
        }
    }

    #[test]
    fn a_counter_that_does_not_add_up_still_gets_its_bound() {
        // Counts grow faster than the sum of parts: pieces look cheap, the whole does not.
        let superlinear = |s: &str| {
            let n = words(s);
            n + n * n / 200
        };
        let text: String = (0..80).map(sentence).collect();
        let doc = Document::from_text(format!("# T\n\n{text}"));
        let c = cfg(120, 16, 8);
        let ps = split(&doc, &superlinear, &c);
        check(&doc, &ps, &superlinear, &c);
        assert!(!ps.is_empty());
    }

    #[test]
    fn overlong_heading_trail_is_shortened() {
        let long = "word ".repeat(80);
        let doc = Document::from_text(format!("# {long}\n\n## Short\n\nBody text here.\n"));
        let c = cfg(50, 8, 0);
        let ps = split(&doc, &words, &c);
        check(&doc, &ps, &words, &c);
        assert_eq!(ps.len(), 1);
        assert_eq!(ps[0].text, "Short\nBody text here.");
        assert_eq!(ps[0].headings.len(), 2, "the full trail is still reported");
    }

    #[test]
    fn degenerate_configs_do_not_hang_or_panic() {
        let doc = Document::from_text("Some words here. And more words there.\n\n# H\n\nx\n");
        for c in [cfg(0, 0, 0), cfg(1, 5, 100), cfg(2, 2, 2), cfg(3, 100, 0)] {
            let ps = split(&doc, &words, &c);
            assert!(!ps.is_empty());
            for p in &ps {
                assert!(doc.text.is_char_boundary(p.bytes.start) && p.bytes.end <= doc.text.len());
            }
        }
        let weird = Document {
            text: "héllo".into(),
            body: 2..99,
            lossy: false,
            hash: [0; 32],
        };
        let ps = split(&weird, &words, &ChunkConfig::default());
        assert_eq!(ps.len(), 1);
        assert_eq!(&weird.text[ps[0].bytes.clone()], "llo");
    }

    #[test]
    fn multibyte_text_is_cut_on_char_boundaries() {
        let latin = "Ünïcödé wörds ärë hërë. ".repeat(200);
        let text = latin + &"日本語のテキスト".repeat(100);
        let doc = Document::from_text(text);
        let c = cfg(30, 5, 4);
        let ps = split(&doc, &words, &c);
        check(&doc, &ps, &words, &c);
        assert!(ps.len() > 10);
    }

    #[test]
    fn org_rst_and_asciidoc_headings_reach_passages() {
        let org = Document::from_text("* Projects\n** Garden\nplant beans\n");
        let ps = split_as(&org, Format::Org, &words, &ChunkConfig::default());
        assert_eq!(ps[0].text, "Projects > Garden\nplant beans");
        let rst = Document::from_text("Guide\n=====\n\nSetup\n-----\n\nrun it\n");
        let ps = split_as(
            &rst,
            Format::ReStructuredText,
            &words,
            &ChunkConfig::default(),
        );
        assert_eq!(ps[0].text, "Guide > Setup\nrun it");
        let adoc = Document::from_text("= Manual\n\n== Install\n\ncopy files\n");
        let ps = split(&adoc, &words, &ChunkConfig::default());
        assert_eq!(ps[0].text, "Manual > Install\ncopy files");
    }

    /// Deterministic pseudo-random documents built from the constructs the parser cares about,
    /// checked against the invariants with several configurations; catches panics and budget
    /// violations that hand-written cases miss.
    #[test]
    fn random_documents_keep_every_invariant() {
        const PIECES: &[&str] = &[
            "# Heading\n",
            "## Sub heading ##\n",
            "Title\n=====\n",
            "Other\n---\n",
            "\n",
            "\r\n",
            "\n\n",
            "Plain words here. ",
            "Another sentence! ",
            "question? ",
            "```\n",
            "~~~~\n",
            "code();\n",
            "* star item\n",
            "- dash item\n",
            "** org\n",
            "= adoc\n",
            "#+begin_src\n",
            "#+end_src\n",
            "ünïcödé ",
            "日本語の文。",
            "\u{1f600} ",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "   ",
            "\t",
            "---\n",
            "+++\n",
            ".. note::\n",
            "=====\n",
            ":PROPERTIES:\n",
            ":END:\n",
            "\r",
            "x",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let configs = [
            cfg(1, 0, 0),
            cfg(5, 2, 1),
            cfg(12, 4, 3),
            cfg(40, 10, 8),
            ChunkConfig::default(),
        ];
        let formats = [
            Format::Markdown,
            Format::Org,
            Format::ReStructuredText,
            Format::AsciiDoc,
        ];
        for round in 0..300 {
            let len = (next() % 120) as usize;
            let text: String = (0..len)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect();
            let doc = Document::from_text(text);
            let c = configs[round % configs.len()];
            let format = formats[round % formats.len()];
            let ps = split_as(&doc, format, &words, &c);
            for p in &ps {
                assert!(p.bytes.start < p.bytes.end);
                assert!(p.bytes.start >= doc.body.start && p.bytes.end <= doc.body.end);
                let body = &doc.text[p.bytes.clone()];
                assert!(p.text.ends_with(body));
                assert_eq!(body, body.trim(), "passages start and end on content");
                let line_start = doc.text[..p.bytes.start].matches('\n').count() + 1;
                assert_eq!(*p.lines.start() as usize, line_start);
                // Only an indivisible single character may exceed the budget.
                if words(&p.text) > c.max_tokens {
                    assert_eq!(
                        body.chars().count(),
                        1,
                        "over budget: {:?} with {c:?}",
                        p.text
                    );
                }
            }
            let _ = split(&doc, &words, &c);
        }
    }

    #[test]
    fn passages_can_span_sections_and_show_where_they_start() {
        let text = "# T\n\n## A\n\nalpha words here\n\n## B\n\nbeta words here\n";
        let doc = Document::from_text(text.to_string());
        let cfg = ChunkConfig {
            across_sections: true,
            ..ChunkConfig::default()
        };
        let ps = split(&doc, &words, &cfg);
        assert_eq!(ps.len(), 1);
        assert_eq!(ps[0].headings, ["T", "A"]);
        assert!(ps[0].context.is_empty());
        assert_eq!(ps[0].text, "T\nalpha words here\n\n## B\n\nbeta words here");
        // Small passages: the one that starts in B shows B.
        let cfg = ChunkConfig {
            max_tokens: 5,
            overlap_tokens: 0,
            min_tokens: 0,
            ..cfg
        };
        let ps = split(&doc, &words, &cfg);
        let last = ps.last().unwrap();
        assert!(last.text.contains("beta"), "{ps:?}");
        assert_eq!(last.headings, ["T", "B"]);
        assert!(last.context.is_empty(), "it starts where its new text does");
        // With overlap, the passage's first bytes repeat A's end, yet its new text is B's.
        let cfg = ChunkConfig {
            max_tokens: 9,
            overlap_tokens: 2,
            ..cfg
        };
        let ps = split(&doc, &words, &cfg);
        let b = ps
            .iter()
            .find(|p| p.text.contains("here\n\n## B\n\nbeta"))
            .unwrap_or_else(|| panic!("no overlapping passage in {ps:?}"));
        assert_eq!(b.headings, ["T", "B"], "{ps:?}");
        // A's heading line is not in the passage; its trail is kept for search.
        assert_eq!(b.context, ["T", "A"], "{ps:?}");
    }

    /// How much work the chunker asked of its token counter: linearity is tested by this, not
    /// by time.
    #[derive(Default)]
    struct Meter {
        calls: std::cell::Cell<usize>,
        bytes: std::cell::Cell<usize>,
    }

    impl Meter {
        fn count(&self, s: &str, counter: impl Fn(&str) -> usize) -> usize {
            self.calls.set(self.calls.get() + 1);
            self.bytes.set(self.bytes.get() + s.len());
            counter(s)
        }
    }

    #[test]
    fn a_word_longer_than_the_tokenizer_sees_is_cut_by_bytes() {
        // Like WordPiece: every whitespace-separated word is one token, however long.
        let unk = |s: &str| s.split_whitespace().count() + 2;
        let mut text = String::from("# Dump\n\nbefore ");
        text.push_str(&"Qm9vbXM".repeat(600_000));
        text.push_str(" after\n");
        let doc = Document::from_text(text);
        let meter = Meter::default();
        let cfg = ChunkConfig::default();
        let ps = split(&doc, &|s: &str| meter.count(s, unk), &cfg);
        let limit = cfg.max_tokens * MAX_BYTES_PER_TOKEN;
        assert!(
            ps.iter().all(|p| p.text.len() <= limit),
            "a passage over {limit} bytes"
        );
        let covered: usize = ps.iter().map(|p| p.bytes.len()).sum();
        assert!(covered >= 4_200_000, "the word is searchable in pieces");
        assert!(ps.len() < 4_200_000 / (limit / 2), "{} passages", ps.len());
        let ratio = meter.bytes.get() as f64 / doc.text.len() as f64;
        assert!(ratio < 8.0, "counter read {ratio:.1}x the document");
    }

    #[test]
    fn large_documents_chunk_in_linear_time() {
        // ~4 MiB with long paragraphs, code and headings; a quadratic step would take minutes.
        let mut text = String::with_capacity(4 << 20);
        let mut i = 0;
        while text.len() < 4 << 20 {
            writeln!(text, "## Section {i}\n").unwrap();
            for p in 0..5 {
                for s in 0..12 {
                    text.push_str(&sentence(i * 100 + p * 12 + s));
                }
                text.push_str("\n\n");
            }
            text.push_str("```\ncode line\nmore code\n```\n\n");
            text.push_str(&"longwordwithoutspaces".repeat(40));
            text.push_str("\n\n");
            i += 1;
        }
        let doc = Document::from_text(text);
        // Per section, and as the product cuts: packed across sections, matched on units.
        let product = ChunkConfig {
            across_sections: true,
            unit_tokens: 64,
            ..ChunkConfig::default()
        };
        for (cfg, bound) in [(ChunkConfig::default(), 8.0), (product, 16.0)] {
            let meter = Meter::default();
            let ps = split(&doc, &|s: &str| meter.count(s, words), &cfg);
            assert!(ps.len() > 1000);
            // Work is measured in counter input rather than time, so the test is deterministic:
            // a linear algorithm reads each byte a small constant number of times (units read
            // their passage again, twice over for their overlap).
            let ratio = meter.bytes.get() as f64 / doc.text.len() as f64;
            assert!(ratio < bound, "counter read {ratio:.1}x the document");
            assert!(
                meter.calls.get() < doc.text.len() / 10,
                "{} counter calls",
                meter.calls.get()
            );
        }
    }
}
