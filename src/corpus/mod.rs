//! Files → passages: the first stage of the pipeline.
//!
//! The stage is split the same way the work is: [`walk`] decides which files are candidates
//! without opening them (cheap enough to repeat on every change), [`read_document`] decodes one
//! file and separates metadata from body, and [`split_as`] cuts a body into passages that fit
//! the encoder's context. Per-file trouble is always a [`Skipped`] note, never a failure of the
//! run, because one odd file must not stop an index of thousands of notes.
//!
//! ```no_run
//! use dochash::corpus::{self, ChunkConfig, CorpusConfig, Format};
//! # fn main() -> Result<(), corpus::CorpusError> {
//! let cfg = CorpusConfig::default();
//! let found = corpus::walk(&["notes".into()], &cfg)?;
//! for file in &found.files {
//!     match corpus::read_document(&file.path, &cfg) {
//!         Ok(doc) => {
//!             let format = Format::from_path(&file.path);
//!             let chunking = ChunkConfig::default();
//!             // The real counter wraps the encoder's tokenizer; this one only approximates it.
//!             let counter = corpus::approx_token_count;
//!             let passages = corpus::split_as(&doc, format, &counter, &chunking);
//!             println!("{}: {} passages", file.path.display(), passages.len());
//!         }
//!         Err(skipped) => eprintln!("{skipped}"),
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod chunk;
mod error;
mod extract;
mod frontmatter;
mod links;
mod notemeta;
mod questions;
mod read;
mod segment;
mod structure;
mod walk;

pub use chunk::{
    ChunkConfig, Passage, TokenCounter, approx_token_count, is_cjk, split, split_as, split_titled,
};
pub use error::{CorpusError, SkipReason, Skipped, io_reason};
pub use extract::{
    Kind, PAGE_BREAK, document_helper_main, is_page_break, page_of, use_document_helper,
};
pub use frontmatter::{FrontMatter, FrontMatterKind, front_matter};
pub use notemeta::{MAX_TAGS, NoteMeta, local_time, note_meta, parse_date};
pub use questions::{LinkTarget, MAX_PASSAGE_LINKS, Question, QuestionKind, links_in, questions};
pub use read::{Document, looks_binary, read_document, read_open};
pub use structure::Format;
pub use walk::{CorpusConfig, IGNORE_FILE, SourceFile, Walk, walk};
