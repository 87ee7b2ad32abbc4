//! The lexical side of search: a BM25 index (tantivy) of every passage, beside the vectors.
//!
//! Dense vectors lose exactly where people search by the letter: names, identifiers, error
//! codes, rare words. Each passage is one document: its body (`text`), its heading trail and file
//! name (`title`), and its id (for deletion and for joining with the semantic side).
//!
//! Words are cut so that code and prose both match ([`Words`]): `snake_case`, `camelCase`,
//! `a.b.c`, `kebab-case` and `mod::item` are indexed whole *and* in parts; Chinese, Japanese and
//! Korean text, which has no spaces, is indexed as single characters and pairs of them; then
//! everything is lower-cased and stemmed as English (`running` finds `runs`). A query's ranking
//! skips the commonest English words ([`terms`]); a title word counts half a body word.
//!
//! Like everything in the index folder this is derived data: it lives in `lexical/`, each commit
//! records the store's counts it matches, and an index that is damaged, of another version or out
//! of step with the store after a crash is repaired from the passages in sled.

use std::collections::HashSet;
use std::path::Path;

use tantivy::collector::{FilterCollector, TopDocs};
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, Stemmer, TextAnalyzer, Token, TokenStream, Tokenizer,
};
use tantivy::{IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use super::{Counts, Db, PassageRecord, StoreError, corrupt};
use crate::corpus::is_cjk;

pub const LEXICAL_DIR: &str = "lexical";
const TOKENIZER: &str = "dochash";
/// Bumped when the tokenizer or the schema changes; an index of another version is rebuilt.
const LEXICAL_VERSION: u32 = 1;
/// Tantivy's smallest indexing budget; the owner indexes a few files at a time.
const WRITER_MEMORY: usize = 20_000_000;
/// How much a word in the title field counts against one in the body. The title holds every
/// heading trail the passage touches, and a passage packs several short sections, so its title
/// also names its neighbours: at 2 (the weight before), a question's common words matching
/// other questions' headings outranked the answer's own rare words. Measured on five dev sets
/// at 0, 0.25, 0.5, 1, 1.5 and 2: 0.5 is the best mean and below none of the sets' lexical
/// MRR@10 at 2 (docs/BENCHMARKS.md, "The lexical side against a plain BM25").
const TITLE_BOOST: f32 = 0.5;

/// Words a query's ranking ignores (Lucene's English stop list): in a question in words they
/// matched every passage a little and, through the short title field, other sections' headings
/// a lot. The index keeps them (quoted phrases and highlighting of the text still see them), and
/// a query of nothing but these words keeps them all.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
];

/// The analyzer for indexing and for queries (they must agree).
pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(Words)
        .filter(RemoveLongFilter::limit(64))
        .filter(LowerCaser)
        .filter(Stemmer::new(Language::English))
        .build()
}

/// Cuts text into words for BM25 (see the module documentation).
#[derive(Clone, Default)]
pub struct Words;

pub struct WordStream {
    tokens: Vec<Token>,
    next: usize,
}

impl Tokenizer for Words {
    type TokenStream<'a> = WordStream;
    fn token_stream<'a>(&'a mut self, text: &'a str) -> WordStream {
        let mut tokens = Vec::new();
        split_words(text, &mut |from, to, text| {
            tokens.push(Token {
                offset_from: from,
                offset_to: to,
                position: tokens.len(),
                text,
                position_length: 1,
            })
        });
        WordStream { tokens, next: 0 }
    }
}

impl TokenStream for WordStream {
    fn advance(&mut self) -> bool {
        if self.next < self.tokens.len() {
            self.next += 1;
            true
        } else {
            false
        }
    }
    fn token(&self) -> &Token {
        &self.tokens[self
            .next
            .saturating_sub(1)
            .min(self.tokens.len().saturating_sub(1))]
    }
    fn token_mut(&mut self) -> &mut Token {
        let i = self
            .next
            .saturating_sub(1)
            .min(self.tokens.len().saturating_sub(1));
        &mut self.tokens[i]
    }
}

fn is_connector(c: char) -> bool {
    matches!(c, '_' | '.' | '-' | ':' | '$' | '#' | '\'')
}

/// Calls `emit(from, to, text)` for each word of `text`: alphanumeric runs joined by connectors
/// (`_ . - : $ # '`) whole and, when they have several parts, each part; CJK characters alone and
/// in adjacent pairs.
pub fn split_words(text: &str, emit: &mut dyn FnMut(usize, usize, String)) {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let end_of = |i: usize| chars.get(i).map_or(text.len(), |(o, _)| *o);
    let mut i = 0;
    while i < chars.len() {
        let (start, c) = chars[i];
        if is_cjk(c) {
            let stop = end_of(i + 1);
            emit(start, stop, text[start..stop].to_string());
            if let Some((_, n)) = chars.get(i + 1)
                && is_cjk(*n)
            {
                let pair_end = end_of(i + 2);
                emit(start, pair_end, text[start..pair_end].to_string());
            }
            i += 1;
            continue;
        }
        if !c.is_alphanumeric() {
            i += 1;
            continue;
        }
        // A compound: alphanumerics, with single connectors between them.
        let mut j = i + 1;
        while j < chars.len() {
            let ch = chars[j].1;
            if ch.is_alphanumeric() && !is_cjk(ch) {
                j += 1;
                continue;
            }
            // One or two connectors (`::`, `->` is not one) between word characters.
            let run = chars[j..]
                .iter()
                .take(2)
                .take_while(|(_, c)| is_connector(*c))
                .count();
            let joins = run > 0
                && chars
                    .get(j + run)
                    .is_some_and(|(_, n)| n.is_alphanumeric() && !is_cjk(*n));
            if !joins {
                break;
            }
            j += run + 1;
        }
        let stop = end_of(j);
        emit_compound(text, start, stop, emit);
        i = j;
    }
}

fn emit_compound(
    text: &str,
    start: usize,
    stop: usize,
    emit: &mut dyn FnMut(usize, usize, String),
) {
    let word = &text[start..stop];
    let mut parts: Vec<(usize, usize)> = Vec::new();
    let mut part_start: Option<usize> = None;
    let mut prev: Option<char> = None;
    let chars: Vec<(usize, char)> = word.char_indices().collect();
    for (k, &(o, c)) in chars.iter().enumerate() {
        if is_connector(c) {
            if let Some(s) = part_start.take() {
                parts.push((s, o));
            }
            prev = None;
            continue;
        }
        let next = chars.get(k + 1).map(|(_, n)| *n);
        // camelCase and HTTPServer: a new part at lower→Upper, and at the last capital of a
        // run of capitals followed by a lower-case letter.
        let boundary = match prev {
            Some(p) => {
                (c.is_uppercase() && (p.is_lowercase() || p.is_ascii_digit()))
                    || (c.is_uppercase()
                        && p.is_uppercase()
                        && next.is_some_and(|n| n.is_lowercase()))
            }
            None => false,
        };
        if boundary && let Some(s) = part_start.take() {
            parts.push((s, o));
        }
        if part_start.is_none() {
            part_start = Some(o);
        }
        prev = Some(c);
    }
    if let Some(s) = part_start {
        parts.push((s, word.len()));
    }
    emit(start, stop, word.to_string());
    if parts.len() > 1 {
        for (s, e) in parts {
            emit(start + s, start + e, word[s..e].to_string());
        }
    }
}

/// The analysed terms of a query, each once, without its stop words (unless it has nothing
/// else): what ranks and what is highlighted.
pub fn terms(text: &str) -> Vec<String> {
    let mut a = analyzer();
    let mut stream = a.token_stream(text);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    while stream.advance() {
        let t = stream.token().text.clone();
        if seen.insert(t.clone()) {
            out.push(t);
        }
    }
    if out.iter().any(|t| !STOP_WORDS.contains(&t.as_str())) {
        out.retain(|t| !STOP_WORDS.contains(&t.as_str()));
    }
    out
}

/// The identifiers of a query, lower-cased: its words that join parts with `_ . : # $` or
/// `camelCase`, or mix letters and digits (`max_file_size`, `fs.readFile`, `HTTPServer`, `v2`).
/// A passage holding one whole is what a person typing it wants (see the fusion's
/// `keep_exact_match`).
pub fn identifiers(query: &str) -> Vec<String> {
    let mut out = Vec::new();
    for w in query.split_whitespace() {
        let w = w.trim_matches(|c: char| !c.is_alphanumeric());
        let chars: Vec<char> = w.chars().collect();
        let joined = chars
            .windows(3)
            .any(|x| x[0].is_alphanumeric() && "_.:#$".contains(x[1]) && x[2].is_alphanumeric());
        let camel = chars
            .windows(2)
            .any(|x| x[0].is_lowercase() && x[1].is_uppercase())
            || chars
                .windows(3)
                .any(|x| x[0].is_uppercase() && x[1].is_uppercase() && x[2].is_lowercase());
        let mixed =
            chars.iter().any(|c| c.is_alphabetic()) && chars.iter().any(|c| c.is_ascii_digit());
        let w = w.to_lowercase();
        if (joined || camel || mixed) && !out.contains(&w) {
            out.push(w);
        }
    }
    out
}

/// Finds the words of a text that match a query's terms (for highlighting): the same analysis
/// on both sides, so `running` lights up for a query of `runs`.
#[derive(Debug, Clone, Default)]
pub struct Highlighter {
    wanted: HashSet<String>,
}

impl Highlighter {
    pub fn new(query: &str) -> Self {
        Self {
            wanted: terms(query).into_iter().collect(),
        }
    }

    /// Byte ranges of `text` to highlight, in order, not overlapping.
    pub fn ranges(&self, text: &str) -> Vec<std::ops::Range<usize>> {
        if self.wanted.is_empty() || text.is_empty() {
            return Vec::new();
        }
        let mut a = analyzer();
        let mut stream = a.token_stream(text);
        let mut out: Vec<std::ops::Range<usize>> = Vec::new();
        while stream.advance() {
            let t = stream.token();
            if self.wanted.contains(&t.text) {
                let r = t.offset_from..t.offset_to;
                // Parts of a compound lie inside the whole: keep the widest.
                if let Some(last) = out.last_mut()
                    && r.start < last.end
                {
                    last.end = last.end.max(r.end);
                    continue;
                }
                out.push(r);
            }
        }
        out
    }
}

/// [`Highlighter::ranges`] for one text.
pub fn matches(query: &str, text: &str) -> Vec<std::ops::Range<usize>> {
    Highlighter::new(query).ranges(text)
}

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    title: Field,
    text: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let words = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let id = b.add_u64_field("id", INDEXED | FAST);
    let title = b.add_text_field("title", words.clone());
    let text = b.add_text_field("text", words);
    (b.build(), Fields { id, title, text })
}

/// What a commit records: the layout version and the store's counts it matches.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Payload {
    version: u32,
    passages: u64,
    id_set: u64,
}

fn lex_err(dir: &Path) -> impl Fn(tantivy::TantivyError) -> StoreError + '_ {
    move |e| {
        use tantivy::TantivyError as T;
        use tantivy::directory::error::LockError;
        use tantivy::directory::error::{OpenDirectoryError, OpenReadError, OpenWriteError};
        let io = match &e {
            T::IoError(io)
            | T::OpenWriteError(OpenWriteError::IoError { io_error: io, .. })
            | T::OpenReadError(OpenReadError::IoError { io_error: io, .. })
            | T::OpenDirectoryError(OpenDirectoryError::IoError { io_error: io, .. })
            | T::LockFailure(LockError::IoError(io), _) => {
                Some(std::io::Error::new(io.kind(), io.to_string()))
            }
            // Another writer holds the word index: another process has the index.
            T::LockFailure(LockError::LockBusy, _) => {
                return StoreError::Locked(dir.parent().unwrap_or(dir).to_path_buf());
            }
            // Errors that carry their cause only as text (a segment that could not be written,
            // the writer's threads dying of it) leave a writer that must be opened again; they
            // are the disk's doing, not the index's: full when it has (almost) no room.
            T::ErrorInThread(_) | T::Poisoned | T::InternalError(_) | T::SystemError(_) => Some(
                if crate::fsx::free_space(dir).is_some_and(|f| f < FULL_DISK_SLACK) {
                    std::io::Error::from(std::io::ErrorKind::StorageFull)
                } else {
                    std::io::Error::other(format!("lexical index: {e}"))
                },
            ),
            _ => None,
        };
        match io {
            Some(io) => super::from_io(dir, io),
            None => corrupt(dir, format!("lexical index: {e}")),
        }
    }
}

/// Below this much free space, a writer thread that died is taken for a full disk.
const FULL_DISK_SLACK: u64 = 1 << 20;

/// The writer's handle on the lexical index.
pub struct Lexical {
    dir: std::path::PathBuf,
    index: tantivy::Index,
    writer: IndexWriter,
    reader: IndexReader,
    fields: Fields,
}

/// The title words of a passage: every heading trail it touches (where its first byte lies and
/// where its new text starts), its file's name and its note's other names and tags. Measured against the trail where it starts
/// alone, the trail where its new text starts alone, and the outermost heading alone (which
/// wins only where section headings carry no meaning): docs/BENCHMARKS.md.
fn title_of(p: &PassageRecord) -> String {
    let mut t = p.context.join(" \u{2192} ");
    for h in p.headings.iter().filter(|h| !p.context.contains(h)) {
        if !t.is_empty() {
            t.push_str(" \u{2192} ");
        }
        t.push_str(h);
    }
    if let Some(stem) = p.path.file_stem() {
        t.push(' ');
        t.push_str(&stem.to_string_lossy());
    }
    for n in &p.names {
        t.push_str(" \u{2192} ");
        t.push_str(n);
    }
    t
}

impl Lexical {
    /// Opens the lexical index in `<dir>/lexical`, creating it if missing, rebuilding it empty
    /// if it does not open or is of another version, and repairing it from `db` when its last
    /// commit does not match the store's `counts`. Returns a note when it was rebuilt or repaired.
    pub fn open(
        dir: &Path,
        db: &Db,
        counts: &Counts,
    ) -> Result<(Self, Option<String>), StoreError> {
        let path = dir.join(LEXICAL_DIR);
        let mut note = None;
        let (index, fresh) = match Self::open_index(&path) {
            Ok(i) => i,
            // A full or failing disk is not damage: rebuilding would throw the word index away.
            Err(e) if e.is_storage() => return Err(e),
            Err(e) => {
                note = Some(format!("{e}; rebuilding the word index"));
                let _ = std::fs::remove_dir_all(&path);
                Self::open_index(&path)?
            }
        };
        let (_, fields) = schema();
        let writer = index
            .writer_with_num_threads(1, WRITER_MEMORY)
            .map_err(lex_err(&path))?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(lex_err(&path))?;
        let mut lex = Lexical {
            dir: path,
            index,
            writer,
            reader,
            fields,
        };
        let payload = lex.payload();
        let in_step = payload
            .as_ref()
            .is_some_and(|p| p.passages == counts.passages && p.id_set == counts.id_set);
        // An empty store wants an empty word index: a crash can lose every passage of the
        // store (its rows never reached the disk) after the word index committed them.
        let empty_and_fine = counts.passages == 0 && lex.reader.searcher().num_docs() == 0;
        if !in_step && !empty_and_fine {
            let fixed = lex.repair(db, counts)?;
            if note.is_none() && !fresh && fixed > 0 {
                note = Some(format!(
                    "the word index was out of step with the store; {fixed} passages repaired"
                ));
            }
        }
        Ok((lex, note))
    }

    fn open_index(path: &Path) -> Result<(tantivy::Index, bool), StoreError> {
        std::fs::create_dir_all(path).map_err(super::io_err(path))?;
        let (schema, _) = schema();
        let fresh = !path.join("meta.json").exists();
        let index = if fresh {
            tantivy::Index::create_in_dir(path, schema.clone()).map_err(lex_err(path))?
        } else {
            let i = tantivy::Index::open_in_dir(path).map_err(lex_err(path))?;
            if i.schema() != schema {
                return Err(StoreError::OtherVersion(path.to_path_buf()));
            }
            if let Some(p) = payload_of(&i)
                && p.version != LEXICAL_VERSION
            {
                return Err(StoreError::OtherVersion(path.to_path_buf()));
            }
            i
        };
        index.tokenizers().register(TOKENIZER, analyzer());
        Ok((index, fresh))
    }

    fn payload(&self) -> Option<Payload> {
        payload_of(&self.index)
    }

    /// Adds a passage (visible after the next [`commit`](Self::commit)).
    pub fn add(&self, id: u64, p: &PassageRecord) -> Result<(), StoreError> {
        let mut doc = TantivyDocument::default();
        doc.add_u64(self.fields.id, id);
        doc.add_text(self.fields.title, title_of(p));
        doc.add_text(self.fields.text, &p.text);
        self.writer.add_document(doc).map_err(lex_err(&self.dir))?;
        Ok(())
    }

    pub fn delete(&self, ids: &[u64]) {
        for id in ids {
            self.writer
                .delete_term(Term::from_field_u64(self.fields.id, *id));
        }
    }

    /// Makes what was added and deleted searchable and durable, recording the store's counts
    /// it now matches.
    pub fn commit(&mut self, counts: &Counts) -> Result<(), StoreError> {
        crate::failpoint::hit("lexical.commit");
        let payload = serde_json::to_string(&Payload {
            version: LEXICAL_VERSION,
            passages: counts.passages,
            id_set: counts.id_set,
        })
        .map_err(|e| corrupt(&self.dir, e))?;
        let mut prepared = self.writer.prepare_commit().map_err(lex_err(&self.dir))?;
        prepared.set_payload(&payload);
        prepared.commit().map_err(lex_err(&self.dir))?;
        self.reader.reload().map_err(lex_err(&self.dir))?;
        Ok(())
    }

    /// Brings the index to the store's passages by difference: deletes what the store no
    /// longer has, adds what it lacks. Returns how many passages changed.
    fn repair(&mut self, db: &Db, counts: &Counts) -> Result<usize, StoreError> {
        let mut have: HashSet<u64> = HashSet::new();
        let searcher = self.reader.searcher();
        for seg in searcher.segment_readers() {
            let ids = seg.fast_fields().u64("id").map_err(lex_err(&self.dir))?;
            for doc in seg.doc_ids_alive() {
                if let Some(id) = ids.first(doc) {
                    have.insert(id);
                }
            }
        }
        let mut changed = 0;
        let mut want: HashSet<u64> = HashSet::new();
        for item in db.passages_iter() {
            let (id, rec) = item?;
            want.insert(id);
            if !have.contains(&id) {
                self.add(id, &rec)?;
                changed += 1;
            }
        }
        let stale: Vec<u64> = have.difference(&want).copied().collect();
        changed += stale.len();
        self.delete(&stale);
        self.commit(counts)?;
        Ok(changed)
    }

    /// A searcher over the last commit.
    pub fn searcher(&self) -> LexicalSearcher {
        LexicalSearcher {
            searcher: self.reader.searcher(),
            fields: self.fields,
            tokens: Default::default(),
        }
    }
}

fn payload_of(index: &tantivy::Index) -> Option<Payload> {
    let meta = index.load_metas().ok()?;
    serde_json::from_str(meta.payload.as_deref()?).ok()
}

/// A read-only view of one commit of the lexical index (cheap to clone).
#[derive(Clone)]
pub struct LexicalSearcher {
    searcher: tantivy::Searcher,
    fields: Fields,
    /// Tokens of the live documents per field (title, text), counted at the first query.
    tokens: std::sync::Arc<std::sync::OnceLock<[u64; 2]>>,
}

/// BM25's statistics over the live documents alone. Tantivy's own count a deleted document
/// until its segment is merged away, so an index that was updated file by file scored some
/// passages unlike a clean build of the same notes (how many documents hold a word, how long
/// the average one is); with these the document frequencies are exact and the lengths exact
/// but for the rounding of deleted passages' lengths (see [`LiveStats::count_tokens`]), so the
/// scores hardly depend on the order of the updates that put the passages there.
struct LiveStats<'a> {
    searcher: &'a tantivy::Searcher,
    fields: Fields,
    tokens: &'a std::sync::OnceLock<[u64; 2]>,
}

impl LiveStats<'_> {
    /// Tokens per field of the live documents: a segment's exact total, less the lengths of
    /// its deleted documents as their field norms record them (tantivy keeps lengths above
    /// about 40 tokens rounded down to steps of a few percent, so an index with deletions can
    /// differ from a clean build by that rounding of the deleted passages' lengths; one without
    /// deletions gets exactly tantivy's own statistics).
    fn count_tokens(&self) -> tantivy::Result<[u64; 2]> {
        let mut out = [0u64; 2];
        for (slot, field) in [self.fields.title, self.fields.text]
            .into_iter()
            .enumerate()
        {
            for seg in self.searcher.segment_readers() {
                let mut total = seg.inverted_index(field)?.total_num_tokens();
                if let Some(alive) = seg.alive_bitset() {
                    let norms = seg.get_fieldnorms_reader(field)?;
                    let deleted: u64 = (0..seg.max_doc())
                        .filter(|&d| !alive.is_alive(d))
                        .map(|d| u64::from(norms.fieldnorm(d)))
                        .sum();
                    total = total.saturating_sub(deleted);
                }
                out[slot] += total;
            }
        }
        Ok(out)
    }
}

impl tantivy::query::Bm25StatisticsProvider for LiveStats<'_> {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        let tokens = match self.tokens.get() {
            Some(t) => *t,
            None => {
                let t = self.count_tokens()?;
                *self.tokens.get_or_init(|| t)
            }
        };
        Ok(if field == self.fields.title {
            tokens[0]
        } else {
            tokens[1]
        })
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.searcher.num_docs())
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        use tantivy::DocSet;
        let mut n = 0u64;
        for seg in self.searcher.segment_readers() {
            let inverted = seg.inverted_index(term.field())?;
            let Some(alive) = seg.alive_bitset() else {
                n += u64::from(inverted.doc_freq(term)?);
                continue;
            };
            let Some(mut postings) = inverted.read_postings(term, IndexRecordOption::Basic)? else {
                continue;
            };
            let mut doc = postings.doc();
            while doc != tantivy::TERMINATED {
                n += u64::from(alive.is_alive(doc));
                doc = postings.advance();
            }
        }
        Ok(n)
    }
}

impl LexicalSearcher {
    /// A BM25 index of `texts` in memory (no titles; the id of a text is its position), scored
    /// exactly as the store's: for measurements on text that is not in the index, such as the
    /// held-back questions of a training run.
    pub fn in_memory(texts: &[&str]) -> Result<Self, StoreError> {
        Self::in_memory_titled(texts.iter().map(|t| ("", *t)))
    }

    /// [`in_memory`](Self::in_memory) of (title, text) pairs.
    fn in_memory_titled<'t>(
        docs: impl Iterator<Item = (&'t str, &'t str)>,
    ) -> Result<Self, StoreError> {
        let err = |e: tantivy::TantivyError| corrupt(Path::new("lexical (memory)"), e);
        let (schema, fields) = schema();
        let index = tantivy::Index::create_in_ram(schema);
        index.tokenizers().register(TOKENIZER, analyzer());
        let mut writer: IndexWriter = index
            .writer_with_num_threads(1, WRITER_MEMORY)
            .map_err(err)?;
        for (i, (title, t)) in docs.enumerate() {
            let mut doc = TantivyDocument::default();
            doc.add_u64(fields.id, i as u64);
            if !title.is_empty() {
                doc.add_text(fields.title, title);
            }
            doc.add_text(fields.text, t);
            writer.add_document(doc).map_err(err)?;
        }
        writer.commit().map_err(err)?;
        let reader: IndexReader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(err)?;
        Ok(Self {
            searcher: reader.searcher(),
            fields,
            tokens: Default::default(),
        })
    }

    /// The best `n` passages for `query` by BM25 over body and title, best first: (id, score).
    /// Words of the query are alternatives (any may match); an empty analysis finds nothing.
    pub fn search(&self, query: &str, n: usize) -> Result<Vec<(u64, f32)>, StoreError> {
        self.search_within(query, n, None)
    }

    /// [`search`](Self::search) among the passages whose ids are in `only` (sorted): the best
    /// `n` of those, however few of all passages they are.
    pub fn search_within(
        &self,
        query: &str,
        n: usize,
        only: Option<std::sync::Arc<Vec<u64>>>,
    ) -> Result<Vec<(u64, f32)>, StoreError> {
        let terms = terms(query);
        if terms.is_empty() || n == 0 {
            return Ok(Vec::new());
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for t in &terms {
            clauses.push((
                Occur::Should,
                Box::new(TermQuery::new(
                    Term::from_field_text(self.fields.text, t),
                    IndexRecordOption::WithFreqs,
                )),
            ));
            clauses.push((
                Occur::Should,
                Box::new(BoostQuery::new(
                    Box::new(TermQuery::new(
                        Term::from_field_text(self.fields.title, t),
                        IndexRecordOption::WithFreqs,
                    )),
                    TITLE_BOOST,
                )),
            ));
        }
        let q = BooleanQuery::new(clauses);
        let err = |e: tantivy::TantivyError| corrupt(Path::new("lexical"), e);
        let stats = LiveStats {
            searcher: &self.searcher,
            fields: self.fields,
            tokens: &self.tokens,
        };
        let collector = TopDocs::with_limit(n).order_by_score();
        let top = match only {
            None => self
                .searcher
                .search_with_statistics_provider(&q, &collector, &stats)
                .map_err(err)?,
            Some(ids) => {
                let allowed = move |id: u64| ids.binary_search(&id).is_ok();
                let filtered = FilterCollector::new("id".to_string(), allowed, collector);
                self.searcher
                    .search_with_statistics_provider(&q, &filtered, &stats)
                    .map_err(err)?
            }
        };
        let mut out = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let seg = self.searcher.segment_reader(addr.segment_ord);
            let ids = seg.fast_fields().u64("id").map_err(err)?;
            if let Some(id) = ids.first(addr.doc_id) {
                out.push((id, score));
            }
        }
        Ok(out)
    }

    pub fn num_docs(&self) -> u64 {
        self.searcher.num_docs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        split_words(text, &mut |_, _, t| out.push(t));
        out
    }

    #[test]
    fn identifiers_are_indexed_whole_and_in_parts() {
        assert_eq!(
            words("call fs.readFileSync(path)"),
            [
                "call",
                "fs.readFileSync",
                "fs",
                "read",
                "File",
                "Sync",
                "path"
            ]
        );
        assert_eq!(
            words("max_file_size"),
            ["max_file_size", "max", "file", "size"]
        );
        assert_eq!(
            words("HTTPServer v2"),
            ["HTTPServer", "HTTP", "Server", "v2"]
        );
        assert_eq!(
            words("std::fs::File"),
            ["std::fs::File", "std", "fs", "File"]
        );
        assert_eq!(words("end. Next"), ["end", "Next"]);
        assert_eq!(
            words("ERR_INVALID_ARG_TYPE"),
            ["ERR_INVALID_ARG_TYPE", "ERR", "INVALID", "ARG", "TYPE"]
        );
    }

    #[test]
    fn an_index_in_memory_scores_texts_by_position() {
        let texts = [
            "the event loop runs callbacks",
            "streams pipe data between processes",
            "a worker thread runs its own event loop",
        ];
        let lex = LexicalSearcher::in_memory(&texts).unwrap();
        assert_eq!(lex.num_docs(), 3);
        let hits = lex.search("pipe streams", 10).unwrap();
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), [1]);
        // Stemmed like the store's index ("running" finds "runs"), best first.
        let hits = lex.search("running event loops", 10).unwrap();
        assert_eq!(hits.len(), 2);
        assert!(hits[0].1 >= hits[1].1);
        assert!(lex.search("kubernetes", 10).unwrap().is_empty());
        assert_eq!(LexicalSearcher::in_memory(&[]).unwrap().num_docs(), 0);
        // Among allowed passages only, however low they rank among all: the best 1 of {2}.
        let only = std::sync::Arc::new(vec![2]);
        let hits = lex
            .search_within("running event loops", 1, Some(only))
            .unwrap();
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn cjk_text_is_indexed_by_characters_and_pairs() {
        assert_eq!(words("東京都"), ["東", "東京", "京", "京都", "都"]);
        assert_eq!(words("rust语言"), ["rust", "语", "语言", "言"]);
    }

    #[test]
    fn queries_match_stems_and_parts() {
        assert!(terms("Running servers").contains(&"run".to_string()));
        assert!(
            terms("readFile").contains(&"readfil".to_string())
                || terms("readFile").contains(&"read".to_string())
        );
        let text = "the max_file_size option";
        let m: Vec<&str> = matches("file sizes", text)
            .into_iter()
            .map(|r| &text[r])
            .collect();
        assert_eq!(m, ["file", "size"]);
        assert!(matches("the", "").is_empty());
    }

    #[test]
    fn identifiers_are_told_from_words() {
        assert_eq!(
            identifiers("set max_file_size in fs.readFile, (HTTPServer) v2 don't 2024 Rust"),
            ["max_file_size", "fs.readfile", "httpserver", "v2"]
        );
        assert!(identifiers("how do I read a file?").is_empty());
    }

    #[test]
    fn a_question_ignores_stop_words_unless_it_has_nothing_else() {
        assert_eq!(terms("Is it the cache?"), ["cach"]);
        assert_eq!(terms("to be or not to be"), ["to", "be", "or", "not"]);
        let text = "the cache";
        let m: Vec<&str> = matches("is the cache", text)
            .into_iter()
            .map(|r| &text[r])
            .collect();
        assert_eq!(m, ["cache"]);
    }

    /// A FAQ whose answers were packed with their neighbours' questions into the title field:
    /// the question's rare words in the answer's body must outrank its common words in other
    /// passages' titles.
    #[test]
    fn a_questions_rare_words_in_a_body_beat_its_common_words_in_other_titles() {
        let docs = [
            (
                "FAQ \u{2192} How can I make the crawler use less memory? \u{2192} Can I run it in the cloud? faq",
                "Turn off the page cache and lower the concurrency. Any host with Python works.",
            ),
            (
                "FAQ \u{2192} How can I see what is sent? \u{2192} Why is it slow? faq",
                "Enable the debug middleware. Slowness usually comes from throttling.",
            ),
            (
                "FAQ faq",
                "The login cookie is rejected when its domain differs from the site's: set the \
                 cookie domain to the host you browse.",
            ),
            (
                "FAQ \u{2192} How can I use it with a proxy? \u{2192} Is it the right tool? faq",
                "Set the proxy variable. It suits pages that are mostly static.",
            ),
        ];
        let lex = LexicalSearcher::in_memory_titled(docs.into_iter()).unwrap();
        let hits = lex
            .search("How can I log in when the cookie domain is wrong?", 10)
            .unwrap();
        assert_eq!(hits.first().map(|h| h.0), Some(2), "{hits:?}");
    }

    #[test]
    fn titles_hold_every_trail_the_passage_touches_once_and_the_file_name() {
        let p = PassageRecord {
            path: "/notes/guide.md".into(),
            start_byte: 0,
            end_byte: 1,
            start_line: 1,
            end_line: 1,
            headings: vec!["Guide".into(), "Streams".into()],
            context: vec!["Guide".into(), "Buffers".into()],
            text: String::new(),
            units: Vec::new(),
            page: 0,
            names: Vec::new(),
            links: Vec::new(),
        };
        assert_eq!(
            title_of(&p),
            "Guide \u{2192} Buffers \u{2192} Streams guide"
        );
        let p = PassageRecord {
            context: Vec::new(),
            ..p
        };
        assert_eq!(title_of(&p), "Guide \u{2192} Streams guide");
    }
}
