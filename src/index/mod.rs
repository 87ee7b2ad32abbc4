//! Passages → a searchable index: passage records in sled, a binary code and an f16 vector per
//! unit (a passage's 64-token window) in two row files beside it, the words in tantivy; queries
//! answered by a filter over the codes (Hamming distance weighted by the query's margin on each
//! bit, plain Hamming distance for codes of token states), a cosine rerank and BM25, fused.
//!
//! [`Index`] is the one entry point the binaries use: it opens the store (rebuilding it when it
//! is damaged or was made by another model or schema), updates it from the files on disk, and
//! answers queries.

pub mod binarize;
pub mod coder;
pub mod cosine;
pub mod dhim;
pub mod fit;
pub mod hamming;
mod matched;
pub mod partition;
pub mod ranked;
pub mod reuse;
pub mod scope;
pub mod search;
pub mod select;
pub mod store;
pub use store::lexical;
pub mod update;
pub mod weighted;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::corpus::CorpusError;
use crate::encoder::EncoderError;

pub use coder::{Coder, CoderError};
pub use matched::Snippet;
pub use partition::Partition;
pub use reuse::Donor;
pub use scope::Scope;
pub use search::{Group, Hit, SearchParams, Searcher};
pub use select::{Filters, Selection, split_filters};
pub use store::{
    CodeMeta, CorpusSettings, Db, Fingerprint, FusionChoice, IndexMeta, SCHEMA_VERSION, Store,
    StoreError, room_to_open,
};
pub use update::{
    CorpusPassage, Progress, RootTrouble, Unavailable, Unreadable, UpdateOptions, UpdateReport,
    chunk_config, corpus_passages,
};

/// Default code length: 64 bits make the Hamming scan one XOR and one POPCNT per passage.
pub const DEFAULT_BITS: usize = 64;

/// The code length of a large index, and where "large" starts. 64-bit codes separate a
/// million passages too coarsely: on a million real-ish passages (20 Newsgroups sentences
/// composed into passages, `dochash bench recall --compose`) the weighted filter needed 15,701
/// candidates for recall@10 ≥ 0.99 with 64 bits and 2,777 with 128; at 300 k, 6,200 and 1,365;
/// at 100 k, 3,006 and 658. The default rerank of 8,000 candidates keeps 64 bits above 0.99 up
/// to 300 k (0.994 there, 0.974 at 1 M); from 250 k the codes are 128 bits (0.998 at 1 M),
/// refitted by the update that crosses it. Counted in vectors, which the filter scans (a
/// passage has one per unit it is matched on).
pub const LARGE_INDEX_BITS: usize = 128;
pub const LARGE_INDEX_PASSAGES: usize = 250_000;

/// The code length for an index of `vectors` rows when none was asked for.
pub fn default_bits(vectors: usize) -> usize {
    if vectors >= LARGE_INDEX_PASSAGES {
        LARGE_INDEX_BITS
    } else {
        DEFAULT_BITS
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Corpus(#[from] CorpusError),
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    #[error(transparent)]
    Coder(#[from] CoderError),
    #[error("{}: {msg}", path.display())]
    Root { path: PathBuf, msg: String },
    /// A query that cannot be answered as given (the message says why).
    #[error("{0}")]
    Query(String),
    /// An update that did not fit on the disk. It stopped before writing, or the store was left
    /// as a crash would leave it (repaired at the next open); nothing indexed before is lost.
    #[error(
        "disk full: the update needs about {} in {} and {} is free; nothing indexed was lost",
        crate::fsx::human_bytes(*.needed),
        .path.display(),
        crate::fsx::human_bytes(*.free)
    )]
    DiskFull {
        path: PathBuf,
        needed: u64,
        free: u64,
    },
}

impl IndexError {
    /// Whether the disk failed rather than the index or the input (see
    /// [`StoreError::is_storage`]): the writer must be reopened before it writes again.
    pub fn is_storage(&self) -> bool {
        match self {
            IndexError::Store(e) => e.is_storage(),
            IndexError::DiskFull { .. } => true,
            _ => false,
        }
    }

    /// Whether the disk is full (the message says how much is needed).
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self,
            IndexError::DiskFull { .. } | IndexError::Store(StoreError::DiskFull { .. })
        )
    }
}

pub struct Index {
    store: Store,
    meta: IndexMeta,
    coder: Option<Coder>,
    /// Lists of the vectors for the first stage of a large index (see [`partition`]).
    partition: Option<Arc<Partition>>,
    /// When a code fit partitions the vectors, and how finely (tests change it).
    partition_sizing: update::PartitionSizing,
    dir: PathBuf,
}

/// The user's choices that must outlive any rebuild of the database.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Settings {
    #[serde(with = "crate::pathwire::list")]
    roots: Vec<PathBuf>,
    #[serde(default)]
    corpus: CorpusSettings,
}

/// Format of `index.json`; a newer one is left alone (see [`crate::fsx::read_versioned`]).
const SETTINGS_VERSION: u32 = 1;

impl Settings {
    /// The settings file, if there is one. A file that does not parse is moved aside (never
    /// silently overwritten: it is the user's folder list) and a note says so; one written by a
    /// newer dochash, or that cannot be read at all, is an error, so that nothing writes over it.
    fn load(path: &Path, notes: &mut Vec<String>) -> Result<Option<Self>, IndexError> {
        use crate::fsx::SideFileError;
        match crate::fsx::read_versioned(path, SETTINGS_VERSION) {
            Ok(s) => Ok(s),
            Err(SideFileError::Damaged { msg, .. }) => {
                let aside = path.with_extension("json.bad");
                let kept = std::fs::rename(path, &aside).is_ok();
                notes.push(format!(
                    "{} is damaged ({msg}); {}the folder list stored in the index is used",
                    path.display(),
                    if kept {
                        format!("it was kept as {}; ", aside.display())
                    } else {
                        String::new()
                    }
                ));
                Ok(None)
            }
            Err(e) => Err(IndexError::Root {
                path: path.to_path_buf(),
                msg: format!("cannot use the list of indexed folders: {e}"),
            }),
        }
    }
}

/// Checks that `p` can be indexed — an existing folder or regular file (not a FIFO, a device or
/// a socket, whose reading could block or never end) — and returns its canonical path.
pub fn check_root(p: &Path) -> Result<PathBuf, IndexError> {
    let bad = |msg: String| IndexError::Root {
        path: p.to_path_buf(),
        msg,
    };
    let why = |e: std::io::Error| {
        bad(match e.kind() {
            std::io::ErrorKind::NotFound => "does not exist".into(),
            _ => format!("cannot index it: {}", crate::corpus::io_reason(&e)),
        })
    };
    let canon = crate::fsx::canonicalize(p).map_err(why)?;
    let meta = std::fs::metadata(&canon).map_err(why)?;
    if meta.is_dir() {
        // A folder that cannot be listed would look empty, like an unmounted drive.
        std::fs::read_dir(&canon).map_err(why)?;
        Ok(canon)
    } else if meta.is_file() {
        Ok(canon)
    } else {
        Err(bad("cannot index it: not a folder or a regular file".into()))
    }
}

/// `<home>/index.json` beside `<home>/index/`: one file for every index folder of a home, so
/// that a trained generation's index (`<home>/index-<n>/`) shares the user's folders.
fn settings_path(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join("index.json"),
        _ => dir.with_extension("json"),
    }
}

/// Where the index of a dochash home lives.
pub fn index_dir(home: &Path) -> PathBuf {
    home.join("index")
}

impl Index {
    /// Opens the index in `dir` for data made with `fingerprint`. When the stored index is
    /// damaged or was made with something else, it is rebuilt empty (keeping its roots) and the
    /// reason is returned so the caller can say it in one line.
    pub fn open(dir: &Path, fingerprint: &Fingerprint) -> Result<(Self, Vec<String>), IndexError> {
        let mut notes = Vec::new();
        let dim = Some(fingerprint.dim);
        let opened = Store::open(dir, dim).and_then(|(s, note)| {
            let m = s.meta()?;
            // Rows of another width than the metadata says cannot be searched.
            if m.as_ref().is_some_and(|m| m.fingerprint.dim != s.dim()) {
                return Err(corrupt_store(dir, "vectors of another width than recorded"));
            }
            Ok((s, m, note))
        });
        let (store, old) = match opened {
            Ok((s, m, note)) => {
                notes.extend(note);
                (s, m)
            }
            // Another process, or a disk that is full or failing: the index is fine, and
            // rebuilding it would lose it.
            Err(e @ StoreError::Locked(_)) => return Err(e.into()),
            Err(e) if e.is_storage() => return Err(e.into()),
            Err(e) => {
                notes.push(format!("{e}; rebuilding it"));
                (Store::recreate(dir, dim)?, None)
            }
        };
        let roots = old.as_ref().map(|m| m.roots.clone()).unwrap_or_default();
        let corpus = old.as_ref().map(|m| m.corpus.clone()).unwrap_or_default();
        let (store, meta) = match old {
            Some(m) if m.fingerprint == *fingerprint => (store, m),
            other => {
                let mut store = if let Some(m) = other {
                    notes.push(describe_change(&m.fingerprint, fingerprint));
                    drop(store);
                    Store::recreate(dir, dim)?
                } else {
                    store
                };
                let meta = IndexMeta {
                    fingerprint: fingerprint.clone(),
                    roots,
                    code: None,
                    corpus,
                    fusion: None,
                };
                store.set_meta(&meta)?;
                (store, meta)
            }
        };
        let (mut index, had_settings) = Self::assemble(store, meta, dir, &mut notes)?;
        if had_settings {
            index.store.set_meta(&index.meta)?;
        } else {
            index.save_settings()?;
        }
        if index.coder.is_none() && index.meta.code.is_some() {
            index.meta.code = None;
            index.store.set_meta(&index.meta)?;
        }
        Ok((index, notes))
    }

    /// Opens an existing index as it is, without rebuilding anything (for `query` and
    /// `status`, which must never wipe an index). `None` if there is no index yet.
    pub fn open_existing(dir: &Path) -> Result<Option<Self>, IndexError> {
        // "Not there" only when the file system says so: a home that cannot be read (another
        // user's) is an error to say, not an empty index.
        let there = |name: &str| match std::fs::symlink_metadata(dir.join(name)) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(store::from_io(dir, e)),
        };
        if !there("sled")? && !there("conf")? {
            return Ok(None);
        }
        let (store, note) = Store::open(dir, None)?;
        if let Some(n) = note {
            tracing::warn!("{n}");
        }
        let Some(meta) = store.meta()? else {
            return Ok(None);
        };
        Ok(Some(Self::assemble(store, meta, dir, &mut Vec::new())?.0))
    }

    /// Puts an opened store together with its coder and the user's settings. A coder that does
    /// not decode is treated as absent: the next update refits it, and until then every passage
    /// is scored exactly. The folder list and filters are the user's settings, not derived data:
    /// they live in a file of their own, which wins over the database's copy and survives its
    /// rebuild. Returns whether that file existed.
    fn assemble(
        store: Store,
        meta: IndexMeta,
        dir: &Path,
        notes: &mut Vec<String>,
    ) -> Result<(Self, bool), IndexError> {
        let coder = match (&meta.code, store.coder()?) {
            (Some(_), Some(bytes)) => Coder::from_bytes(&bytes).ok(),
            _ => None,
        };
        // Like the coder, a partition that does not decode is absent: every code is scanned.
        let partition = match (&coder, store.partition()?) {
            (Some(_), Some(bytes)) => Partition::from_bytes(&bytes)
                .ok()
                .filter(|p| p.dim() == meta.fingerprint.dim)
                .map(Arc::new),
            _ => None,
        };
        let mut index = Self {
            store,
            meta,
            coder,
            partition,
            partition_sizing: update::PartitionSizing::default(),
            dir: dir.to_path_buf(),
        };
        let settings = Settings::load(&settings_path(dir), notes)?;
        let found = settings.is_some();
        if let Some(settings) = settings {
            index.meta.roots = settings.roots;
            index.meta.corpus = settings.corpus;
        }
        Ok((index, found))
    }

    /// Takes the folder list and filters from the settings file again: another index folder of
    /// the same home (the serving generation, while this one was built by training) may have
    /// changed them since this one was opened.
    pub fn reload_settings(&mut self) -> Result<(), IndexError> {
        let mut notes = Vec::new();
        if let Some(s) = Settings::load(&settings_path(&self.dir), &mut notes)? {
            self.meta.roots = s.roots;
            self.meta.corpus = s.corpus;
            self.store.set_meta(&self.meta)?;
        }
        for n in notes {
            tracing::warn!("{n}");
        }
        Ok(())
    }

    /// Replaces the stored file filters; they apply from the next update on.
    pub fn set_corpus(&mut self, corpus: store::CorpusSettings) -> Result<(), IndexError> {
        self.meta.corpus = corpus;
        self.store.set_meta(&self.meta)?;
        self.save_settings()
    }

    /// Writes the settings file atomically, so a crash leaves the old or the new version,
    /// never half of one.
    fn save_settings(&self) -> Result<(), IndexError> {
        let path = settings_path(&self.dir);
        let io = |e: std::io::Error| {
            if crate::fsx::is_disk_full(&e) {
                return IndexError::Store(StoreError::DiskFull {
                    path: path.clone(),
                    needed: None,
                });
            }
            IndexError::Root {
                path: path.clone(),
                msg: format!("cannot save the list of indexed folders: {e}"),
            }
        };
        let settings = Settings {
            roots: self.meta.roots.clone(),
            corpus: self.meta.corpus.clone(),
        };
        crate::failpoint::hit("settings.write");
        crate::fsx::write_versioned(&path, SETTINGS_VERSION, &settings).map_err(io)
    }

    /// The index folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn meta(&self) -> &IndexMeta {
        &self.meta
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn coder(&self) -> Option<&Coder> {
        self.coder.as_ref()
    }

    /// Makes everything written so far durable and searchable.
    pub fn flush(&mut self) -> Result<(), IndexError> {
        Ok(self.store.flush()?)
    }

    /// Adds folders (or single files) to index; each must be an existing folder or regular file,
    /// and if one is not, none is added. Returns the canonical paths that were new.
    pub fn add_roots(&mut self, paths: &[PathBuf]) -> Result<Vec<PathBuf>, IndexError> {
        let mut checked = Vec::with_capacity(paths.len());
        for p in paths {
            checked.push(check_root(p)?);
        }
        let mut added = Vec::new();
        for canon in checked {
            if !self.meta.roots.contains(&canon) {
                self.meta.roots.push(canon.clone());
                added.push(canon);
            }
        }
        if added.is_empty() {
            return Ok(added);
        }
        self.meta.roots.sort();
        self.store.set_meta(&self.meta)?;
        self.save_settings()?;
        Ok(added)
    }

    /// Stops indexing a root; its files leave the index on the next update.
    pub fn forget_root(&mut self, path: &Path) -> Result<bool, IndexError> {
        let canon = crate::fsx::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let before = self.meta.roots.len();
        self.meta.roots.retain(|r| r != &canon && r != path);
        self.store.set_meta(&self.meta)?;
        self.save_settings()?;
        Ok(self.meta.roots.len() != before)
    }

    /// Brings the index in line with the files. `progress` hears of each step, with the index
    /// as it stands (a caller may build a searcher from it to show early results).
    pub fn update(
        &mut self,
        encoder: &crate::encoder::Encoder,
        opts: &UpdateOptions,
        progress: &mut dyn FnMut(Progress, &Index),
    ) -> Result<UpdateReport, IndexError> {
        update::update(self, encoder, opts, progress)
    }

    /// Fits the fusion to the corpus's own questions now and keeps it (see [`fit`]); updates
    /// do this when [`fit::due`], before their last flush. `None` when `cancel` was raised first.
    pub fn fit_fusion(
        &mut self,
        encoder: &crate::encoder::Encoder,
        cancel: &AtomicBool,
    ) -> Result<Option<FusionChoice>, IndexError> {
        let choice = self.fit_and_keep_fusion(encoder, cancel)?;
        self.store.flush()?;
        Ok(choice)
    }

    /// [`fit_fusion`](Self::fit_fusion) without the flush (an update flushes after it).
    fn fit_and_keep_fusion(
        &mut self,
        encoder: &crate::encoder::Encoder,
        cancel: &AtomicBool,
    ) -> Result<Option<FusionChoice>, IndexError> {
        let choice = fit::fit_fusion(self, encoder, cancel)?;
        if let Some(c) = &choice {
            self.keep_fusion(c.clone())?;
        }
        Ok(choice)
    }

    fn keep_fusion(&mut self, choice: FusionChoice) -> Result<(), IndexError> {
        self.meta.fusion = Some(choice);
        Ok(self.store.set_meta(&self.meta)?)
    }

    /// Makes `coder` the index's code source under a new code generation. Stored codes of the
    /// old generation become stale (scored exactly) until re-coded, so call this on an index
    /// that is about to be filled, or follow it with an update.
    pub fn install_coder(&mut self, coder: Coder, fitted_on: usize) -> Result<(), IndexError> {
        let generation = self.next_code_generation();
        // The lists are the vectors', not the coder's: they stay, and rows take theirs again
        // as they are re-coded.
        let partition = self.partition.clone();
        self.set_coder(coder, generation, fitted_on, partition)
    }

    /// The generation number the next code source gets.
    pub(crate) fn next_code_generation(&self) -> u32 {
        self.meta
            .code
            .as_ref()
            .map(|c| c.generation + 1)
            .unwrap_or(1)
    }

    /// Records `coder` as the source of codes stamped `generation` (written before or after),
    /// and `partition` as the lists rows of that generation are in.
    pub(crate) fn set_coder(
        &mut self,
        coder: Coder,
        generation: u32,
        fitted_on: usize,
        partition: Option<Arc<Partition>>,
    ) -> Result<(), IndexError> {
        let mut meta = self.meta.clone();
        meta.code = Some(CodeMeta {
            source: coder.name(),
            bits: coder.bits(),
            generation,
            fitted_on,
        });
        let lists = partition.as_ref().map(|p| p.to_bytes());
        self.store
            .set_coder(&meta, &coder.to_bytes()?, lists.as_deref())?;
        // Codes of another length than the file's cannot be stored: widen (or narrow) it now,
        // every row stale until the caller codes it.
        let words = coder.words();
        if self.store.rows().words != words {
            let rows = self.store.rows().rows();
            self.store
                .rewrite_codes(0, words, &vec![0; rows * words], None)?;
        }
        self.meta = meta;
        self.coder = Some(coder);
        self.partition = partition;
        Ok(())
    }

    /// Stores `passages` (records with unit vectors: one per unit the passage is matched on,
    /// concatenated) as the content of `path`, as an update does once it has embedded a file:
    /// for tools and benchmarks that bring their own vectors. Codes
    /// come from the current linear coder; the records' `path` should be `path`.
    pub fn put_file(
        &mut self,
        path: &Path,
        root: &Path,
        passages: Vec<(store::PassageRecord, Vec<f32>)>,
    ) -> Result<(), IndexError> {
        let rec = store::FileRecord {
            root: root.to_path_buf(),
            size: 0,
            mtime_ns: 0,
            hash: [0; 32],
            passages: Vec::new(),
            lossy: false,
            tags: Vec::new(),
            date: None,
            unread_meta: false,
        };
        self.replace_coded(path, rec, passages)?;
        Ok(())
    }

    /// The generation stamped on codes written now (0: no code source yet).
    fn code_generation(&self) -> u32 {
        self.meta.code.as_ref().map(|c| c.generation).unwrap_or(0)
    }

    /// Stores `passages` (records with their unit vectors) as the content of `path`, coded by
    /// the current source (uncoded when there is none, or when it codes token states rather
    /// than vectors); returns how many were stored.
    fn replace_coded(
        &mut self,
        path: &Path,
        rec: store::FileRecord,
        passages: Vec<(store::PassageRecord, Vec<f32>)>,
    ) -> Result<usize, IndexError> {
        let dim = self.meta.fingerprint.dim.max(1);
        let new = passages
            .into_iter()
            .map(|(record, vector)| {
                let code = match &self.coder {
                    Some(c) => c.encode_vectors(&vector, vector.len() / dim)?,
                    None => None,
                };
                let lists = match (&code, &self.partition) {
                    (Some(_), Some(p)) => Some(p.assign(&vector)),
                    _ => None,
                };
                Ok(store::NewPassage {
                    record,
                    vector,
                    code,
                    lists,
                })
            })
            .collect::<Result<Vec<_>, IndexError>>()?;
        let generation = self.code_generation();
        self.store.replace_file(path, Some(rec), &new, generation)?;
        Ok(new.len())
    }

    /// A view of this index that an update of another index, made with the same encoder and
    /// passage settings, copies vectors from instead of embedding (see [`Donor`]).
    pub fn donor(&self) -> Result<Donor, IndexError> {
        Ok(Donor::new(
            self.meta.fingerprint.clone(),
            self.store.db().clone(),
            self.store.rows().clone(),
            self.store.vectors()?,
        ))
    }

    /// Fits the code source to the passages now stored, as an update does when the corpus has
    /// grown (see `update`); returns its description when it fitted one.
    pub fn fit_codes(&mut self, bits: usize) -> Result<Option<String>, IndexError> {
        let r = update::refit(self, Some(bits), &mut |_, _| {})?;
        self.store.flush()?;
        Ok(r)
    }

    /// Makes code fits partition the vectors from `rows` live rows on, into lists of about
    /// `rows_per_list`, so that tests can try the partitioned first stage on a small index.
    #[cfg(test)]
    pub(crate) fn partition_from(&mut self, rows: usize, rows_per_list: usize) {
        self.partition_sizing = update::PartitionSizing {
            from_rows: rows,
            rows_per_list,
        };
    }

    /// The lists the vectors are partitioned into, on an index large enough to have them.
    pub fn partition(&self) -> Option<&Partition> {
        self.partition.as_deref()
    }

    /// A searcher over the index as it stands: the current codes copied from memory (no disk
    /// read), the vectors mapped.
    pub fn searcher(&self) -> Result<Searcher, IndexError> {
        Ok(Searcher::new(
            self.store.rows(),
            self.store.vectors()?,
            self.store.db().clone(),
            Some(self.store.words()),
            &self.meta,
            self.coder.clone(),
            self.partition.clone(),
        ))
    }
}

fn corrupt_store(dir: &Path, msg: &str) -> StoreError {
    StoreError::Corrupt {
        path: dir.to_path_buf(),
        msg: msg.into(),
    }
}

fn describe_change(old: &Fingerprint, new: &Fingerprint) -> String {
    format!("the index was {}; rebuilding it", old.difference(new))
}
