//! The on-disk index: sled for metadata, file records and passages; two row files for what a
//! query scans (codes) and reranks (vectors); see [`rows`].
//!
//! sled 0.34 is unmaintained and has open corruption reports, so nothing here is precious: every
//! byte is derived from the user's files and the model, and any doubt about the database (it will
//! not open, the metadata does not decode, it was built by another schema or model) is answered
//! by rebuilding it.
//!
//! One passage lives in three places — its record in sled, its row in `codes.bin` and
//! the vectors file — and a file's change touches them in a fixed order: new rows are appended,
//! then one sled transaction replaces the file's record and passages and updates the counts,
//! then the old rows are tombstoned. A process killed anywhere in between (or sled losing the
//! last transactions it had not flushed) leaves the two sides disagreeing on the set of live
//! passages, which [`Counts::id_set`] reveals at the next open; `Store::open` then drops
//! whatever is only on one side — files whose passages lost their rows are removed so that the
//! next update indexes them again — with work proportional to the index, never a loop.
//!
//! Layout of an index folder: `sled/` (trees `meta`, `files`, `passages`), `codes.bin`, and
//! the vectors file it names (`vectors.bin`, after a compaction `vectors.N.bin`).

pub mod lexical;
pub mod records;
pub mod rows;

use std::collections::HashSet;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

pub use records::{Counts, FileRecord, PassageRecord};
pub use rows::{RowTable, Vectors};

use records::{decode, encode, id_hash};
use rows::RowFiles;

/// Bumped whenever the layout or the meaning of stored data changes; a mismatch rebuilds.
pub const SCHEMA_VERSION: u32 = 5;

const SLED_DIR: &str = "sled";
/// sled's log, in [`SLED_DIR`].
const SLED_LOG: &str = "db";

/// sled's page cache. Its default (1 GiB) grew an update's memory with the index, about a
/// kilobyte a passage, for data a search reads a few dozen records of; the vectors and codes are
/// mapped or held apart from it.
const SLED_CACHE_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the index at {} is in use by another dochash process; wait for it to finish (a running `dochash watch` or `dochash-tui` keeps it up to date by itself)",
        .0.display()
    )]
    Locked(PathBuf),
    #[error("the index at {} is damaged ({msg})", path.display())]
    Corrupt { path: PathBuf, msg: String },
    #[error(
        "the index at {} was made by another version of dochash; `dochash index` rebuilds it",
        .0.display()
    )]
    OtherVersion(PathBuf),
    /// The file system holding the index has no room left. Nothing is wrong with the index:
    /// what was written before stays, and a later update that fits carries on.
    #[error(
        "disk full: no room left for the index in {}{}",
        .path.display(),
        .needed.map(|n| format!(" (it needs about {} free to open)", crate::fsx::human_bytes(n))).unwrap_or_default()
    )]
    DiskFull { path: PathBuf, needed: Option<u64> },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StoreError {
    /// Whether the disk (not the index) failed: full, unreadable, gone. Such an error must never
    /// be answered by rebuilding, and a writer that met it is reopened before it writes again
    /// (sled refuses every write after its first I/O error).
    pub fn is_storage(&self) -> bool {
        matches!(self, StoreError::DiskFull { .. } | StoreError::Io { .. })
    }
}

pub(crate) fn corrupt(path: &Path, msg: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

pub(crate) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| from_io(path, source)
}

/// An I/O error as the store reports it: a full disk told apart from the rest, and a file of
/// the index that is missing or cut short (which is damage, rebuilt) from a disk that failed.
pub(crate) fn from_io(path: &Path, source: std::io::Error) -> StoreError {
    use std::io::ErrorKind;
    if matches!(
        source.kind(),
        ErrorKind::NotFound | ErrorKind::UnexpectedEof | ErrorKind::InvalidData
    ) {
        return corrupt(path, source);
    }
    if crate::fsx::is_disk_full(&source) {
        StoreError::DiskFull {
            path: path.to_path_buf(),
            needed: None,
        }
    } else {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A sled error as the store reports it: only what sled found wrong in its own files is damage;
/// an I/O error (a full disk above all) is the disk's, and rebuilding would lose the index.
pub(crate) fn sled_err(path: &Path, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) => from_io(path, io),
        other => corrupt(path, other),
    }
}

/// What the stored vectors and passages were made with. Any difference from what the current
/// run would make means the stored data is of another generation and must be rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub schema: u32,
    /// e.g. `sentence-transformers/all-MiniLM-L6-v2`, or a local model folder.
    pub model_id: String,
    /// Size and mtime of the weights: changes when a local model is replaced or retrained.
    pub model_stamp: String,
    pub dim: usize,
    pub pooling: String,
    /// How documents are cut into passages: the update cuts with exactly this.
    pub chunking: crate::corpus::ChunkConfig,
    /// The encoder's window in tokens (longer passages would be truncated).
    pub max_len: usize,
    /// The encoder's weight-product precision; an index from before the setting is `f32`.
    #[serde(default = "f32_precision")]
    pub precision: crate::encoder::Precision,
}

/// What an index written before the precision was recorded was made with.
fn f32_precision() -> crate::encoder::Precision {
    crate::encoder::Precision::F32
}

impl Fingerprint {
    /// The fingerprint of an index whose vectors (of `dim` dimensions) no model made: the
    /// benchmarks' and tests' synthetic indexes.
    pub fn synthetic(dim: usize) -> Self {
        Fingerprint {
            schema: super::SCHEMA_VERSION,
            model_id: "synthetic".into(),
            model_stamp: String::new(),
            dim,
            pooling: "mean".into(),
            chunking: Default::default(),
            max_len: 256,
            precision: crate::encoder::Precision::F32,
        }
    }

    /// What differs from `other`, in words, for telling the user why an index does not fit.
    pub fn difference(&self, other: &Fingerprint) -> String {
        if self.schema != other.schema {
            format!(
                "made by another version of dochash (schema {} → {})",
                self.schema, other.schema
            )
        } else if self.model_id != other.model_id {
            format!(
                "made with the model {}, not {}",
                self.model_id, other.model_id
            )
        } else if self.model_stamp != other.model_stamp {
            format!(
                "made with other weights of {} (their size or date differ)",
                other.model_id
            )
        } else if self.precision != other.precision {
            format!(
                "made with --precision {}, not {}",
                self.precision, other.precision
            )
        } else if self.dim != other.dim || self.pooling != other.pooling {
            "made with another pooling or width".into()
        } else {
            "made with other passage settings".into()
        }
    }
}

/// The fitted code source currently in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeMeta {
    /// `itq`, `lsh`, `median` (training-free) or `dhim` (learned).
    pub source: String,
    pub bits: usize,
    /// Codes stamped with another generation are stale.
    pub generation: u32,
    /// How many passages the source was fitted on: refitting when the corpus has grown a lot.
    pub fitted_on: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexMeta {
    pub fingerprint: Fingerprint,
    #[serde(with = "crate::pathwire::list")]
    pub roots: Vec<PathBuf>,
    pub code: Option<CodeMeta>,
    /// Which files to index; kept with the index so that every later update (and the watcher)
    /// applies the same filters as the command that set them.
    #[serde(default)]
    pub corpus: CorpusSettings,
    /// How this corpus fuses its two rankers, as fitted on its own questions
    /// (`index::fit`); absent before the first fit.
    #[serde(default)]
    pub fusion: Option<FusionChoice>,
}

/// The fusion a corpus chose and why: derived from the files like everything here, so refitted
/// after a rebuild.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FusionChoice {
    /// The semantic side's weight in z-score fusion that searches use.
    pub semantic_weight: f32,
    /// The weight was fitted and beat the default on held-back questions.
    pub adopted: bool,
    /// Questions asked, by kind (`link`, `title`, …), in a fixed order.
    pub questions: Vec<(String, usize)>,
    /// The questions' MRR@10 at the default weight and at the one chosen.
    pub check: Option<(f32, f32)>,
    /// Why, in a few words, when not adopted.
    pub why: Option<String>,
    /// The questions' MRR@10 at each weight tried: (weight, even half, odd half).
    #[serde(default)]
    pub curve: Vec<(f32, f32, f32)>,
    /// Live passages when it was fitted: a corpus that has changed much is fitted again.
    pub passages: usize,
}

impl FusionChoice {
    /// One line for `dochash status`.
    pub fn describe(&self) -> String {
        let total: usize = self.questions.iter().map(|(_, n)| n).sum();
        let kinds = self
            .questions
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ");
        let asked = if total == 0 {
            "no questions".to_string()
        } else {
            format!("{total} questions ({kinds})")
        };
        let check = self
            .check
            .map(|(d, f)| format!("; their MRR@10 {d:.3} at the default, {f:.3} chosen"))
            .unwrap_or_default();
        if self.adopted {
            format!(
                "semantic weight {:.1}, fitted to {asked}{check}",
                self.semantic_weight
            )
        } else {
            format!(
                "semantic weight {:.1} (the default): {}; {asked}{check}",
                self.semantic_weight,
                self.why
                    .as_deref()
                    .unwrap_or("the fitted weight did no better")
            )
        }
    }
}

impl IndexMeta {
    /// The code length updates keep: the index's own, or the default before it has codes.
    pub fn bits(&self) -> usize {
        self.code
            .as_ref()
            .map(|c| c.bits)
            .unwrap_or(super::DEFAULT_BITS)
    }

    /// The code length an index whose filter scans `vectors` rows (a passage has one per unit
    /// it is matched on) should have: the one asked for with `--bits`
    /// (kept in the settings), else one chosen before that setting was kept (a current length
    /// other than the two defaults), else the default for its size ([`super::default_bits`]).
    /// Large codes stay until the index has shrunk to half the threshold, so an index that
    /// hovers around it is not refitted back and forth.
    pub fn code_bits(&self, vectors: usize) -> usize {
        use super::{DEFAULT_BITS, LARGE_INDEX_BITS, LARGE_INDEX_PASSAGES};
        if let Some(b) = self.corpus.bits {
            return b;
        }
        match &self.code {
            Some(c) if c.bits != DEFAULT_BITS && c.bits != LARGE_INDEX_BITS => c.bits,
            Some(c) if c.bits == LARGE_INDEX_BITS && vectors >= LARGE_INDEX_PASSAGES / 2 => {
                LARGE_INDEX_BITS
            }
            _ => super::default_bits(vectors),
        }
    }
}

/// The persistent part of [`crate::corpus::CorpusConfig`]; `None` means the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorpusSettings {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub extensions: Option<Vec<String>>,
    pub max_file_bytes: Option<u64>,
    /// The code length asked for with `dochash index --bits`; `None` chooses by size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits: Option<usize>,
}

impl CorpusSettings {
    pub fn to_config(&self) -> crate::corpus::CorpusConfig {
        let d = crate::corpus::CorpusConfig::default();
        crate::corpus::CorpusConfig {
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            extensions: self.extensions.clone().unwrap_or(d.extensions),
            max_file_bytes: self.max_file_bytes.unwrap_or(d.max_file_bytes),
            follow_symlinks: d.follow_symlinks,
        }
    }
}

/// A passage ready to be stored: its record, its unit-length embeddings (one per unit it is
/// matched on, concatenated: at least one, at most [`rows::MAX_UNITS`]) and, when a code source
/// is fitted, their codes under the current generation (concatenated likewise).
#[derive(Debug, Clone)]
pub struct NewPassage {
    pub record: PassageRecord,
    pub vector: Vec<f32>,
    pub code: Option<Vec<u64>>,
    /// Per unit, its list in the index's partition (with the code; none: list 0).
    pub lists: Option<Vec<u32>>,
}

const META_KEY: &[u8] = b"meta";
const CODER_KEY: &[u8] = b"coder";
/// The partition of the vectors that goes with the coder (see `index::partition`); absent for
/// an index too small to need one.
const PARTITION_KEY: &[u8] = b"partition";
const COUNTS_KEY: &[u8] = b"counts";

/// How long [`Store::open`] waits for another process to release the database.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

/// The sled side, shared by the writer and every searcher (cloning shares the database).
#[derive(Clone)]
pub struct Db(Arc<DbHandles>);

/// sled's handles, closed together when the last [`Db`] goes.
pub struct DbHandles {
    path: PathBuf,
    db: ManuallyDrop<sled::Db>,
    meta: ManuallyDrop<sled::Tree>,
    files: ManuallyDrop<sled::Tree>,
    passages: ManuallyDrop<sled::Tree>,
    /// Nothing was written since the last flush or since the database was verified (see
    /// [`CLEAN_MARKER`]).
    clean: AtomicBool,
    /// The log file as opened: a rebuilt index is a new database in the same folder, which
    /// these handles must not stamp.
    log: Option<(u64, u64)>,
}

impl std::ops::Deref for Db {
    type Target = DbHandles;

    fn deref(&self) -> &DbHandles {
        &self.0
    }
}

impl Drop for DbHandles {
    /// sled writes its files at open and again when it closes (its recovery, a snapshot), so a
    /// stamp taken at the last flush no longer matched and every open after a mere read — a
    /// `status`, a one-shot `query` — read the whole database through (over a second at a
    /// million passages). Closed with nothing written since a flush, the stamp is taken again
    /// once sled has finished with its files.
    fn drop(&mut self) {
        // SAFETY: the handles are dropped once, here, and not used afterwards.
        unsafe {
            ManuallyDrop::drop(&mut self.passages);
            ManuallyDrop::drop(&mut self.files);
            ManuallyDrop::drop(&mut self.meta);
            ManuallyDrop::drop(&mut self.db);
        }
        let marker = self.path.join(CLEAN_MARKER);
        if self.clean.load(Ordering::Acquire)
            && self.log.is_some()
            && crate::fsx::file_identity(&self.path.join(SLED_DIR).join(SLED_LOG)) == self.log
            && let Some(stamp) = clean_stamp(&self.path)
        {
            // Not written: the next open verifies the database, as after a crash.
            let _ = crate::fsx::write_atomic(&marker, stamp.as_bytes());
        }
    }
}

/// Room a file's change must leave free (see [`Store::check_room`]): sled's next log segment
/// and the word index's next segment.
const WRITE_ROOM: u64 = 1 << 20;

/// Room sled must find before it is opened, besides twice its snapshot: opening writes (its
/// recovery rewrites the snapshot and the log's tail), and an open that ran out of room half way
/// left a database that no longer opened once the room was back. Without the room, the open is
/// refused as a full disk before sled touches anything.
const OPEN_ROOM: u64 = 4 << 20;

/// The room opening the index in `dir` needs (see [`OPEN_ROOM`]).
pub fn room_to_open(dir: &Path) -> u64 {
    room_to_open_sled(&dir.join(SLED_DIR))
}

fn room_to_open_sled(sled_dir: &Path) -> u64 {
    let snapshots: u64 = std::fs::read_dir(sled_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("snap."))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    OPEN_ROOM.saturating_add(snapshots.saturating_mul(2))
}

impl Db {
    fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(SLED_DIR);
        let room = room_to_open_sled(&path);
        if crate::fsx::free_space(dir).is_some_and(|free| free < room) {
            return Err(StoreError::DiskFull {
                path: dir.to_path_buf(),
                needed: Some(room),
            });
        }
        // Another process may hold the database for a moment (a one-shot `query` or `status`
        // while an owner starts): wait a little before calling it locked.
        let deadline = std::time::Instant::now() + LOCK_PATIENCE;
        let db = loop {
            match sled::Config::new()
                .path(&path)
                .cache_capacity(SLED_CACHE_BYTES)
                .flush_every_ms(Some(200))
                .open()
            {
                Ok(db) => break db,
                Err(sled::Error::Io(io)) if is_lock_error(&io) => {
                    if std::time::Instant::now() >= deadline {
                        return Err(StoreError::Locked(dir.to_path_buf()));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(other) => return Err(sled_err(dir, other)),
            }
        };
        let tree = |name: &str| {
            db.open_tree(name)
                .map(ManuallyDrop::new)
                .map_err(|e| sled_err(dir, e))
        };
        Ok(Self(Arc::new(DbHandles {
            path: dir.to_path_buf(),
            meta: tree("meta")?,
            files: tree("files")?,
            passages: tree("passages")?,
            db: ManuallyDrop::new(db),
            clean: AtomicBool::new(false),
            log: crate::fsx::file_identity(&path.join(SLED_LOG)),
        })))
    }

    fn corrupt(&self, msg: impl std::fmt::Display) -> StoreError {
        corrupt(&self.path, msg)
    }

    /// A sled error of this database (see [`sled_err`]).
    fn err(&self, e: sled::Error) -> StoreError {
        sled_err(&self.path, e)
    }

    /// Reads every record once, stopping at the first that sled cannot read. sled checks a
    /// page only when it first reads it, and a damaged page makes its iterator return the same
    /// error forever (its own `len()` never returns), so damage must be found by a read that
    /// stops — here, at open, rather than by a status or a query later.
    fn verify(&self) -> Result<(), StoreError> {
        for tree in [&self.meta, &self.files, &self.passages] {
            for kv in tree.iter() {
                kv.map_err(|e| self.err(e))?;
            }
        }
        Ok(())
    }

    pub fn meta(&self) -> Result<Option<IndexMeta>, StoreError> {
        match self.meta.get(META_KEY).map_err(|e| self.err(e))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| self.corrupt(format!("metadata: {e}"))),
        }
    }

    fn set_meta(&self, meta: &IndexMeta) -> Result<(), StoreError> {
        let v = serde_json::to_vec(meta).map_err(|e| self.corrupt(e))?;
        self.meta.insert(META_KEY, v).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// A blob kept in the meta tree under `key` (the coder, the partition).
    fn meta_blob(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .meta
            .get(key)
            .map_err(|e| self.err(e))?
            .map(|v| v.to_vec()))
    }

    pub fn counts(&self) -> Result<Counts, StoreError> {
        match self.meta.get(COUNTS_KEY).map_err(|e| self.err(e))? {
            None => Ok(Counts::default()),
            Some(v) => decode(&v).map_err(|e| self.corrupt(format!("counts: {e}"))),
        }
    }

    pub fn file(&self, path: &Path) -> Result<Option<FileRecord>, StoreError> {
        match self.files.get(path_key(path)).map_err(|e| self.err(e))? {
            None => Ok(None),
            Some(v) => decode(&v)
                .map(Some)
                .map_err(|e| self.corrupt(format!("file record of {}: {e}", path.display()))),
        }
    }

    pub fn files(&self) -> Result<Vec<(PathBuf, FileRecord)>, StoreError> {
        self.files
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(|e| self.err(e))?;
                let path = crate::pathwire::from_bytes(k.to_vec());
                let rec = decode(&v)
                    .map_err(|e| self.corrupt(format!("file record of {}: {e}", path.display())))?;
                Ok((path, rec))
            })
            .collect()
    }

    /// A passage's record; `None` if it is gone (or its record does not decode: a query simply
    /// skips it, and the next open's check finds the damage).
    pub fn passage(&self, id: u64) -> Result<Option<PassageRecord>, StoreError> {
        match self
            .passages
            .get(id.to_be_bytes())
            .map_err(|e| self.err(e))?
        {
            None => Ok(None),
            Some(v) => Ok(decode(&v)
                .inspect_err(|e| tracing::warn!("passage {id} does not decode: {e}"))
                .ok()),
        }
    }

    /// Every passage, in id order.
    pub fn passages_iter(
        &self,
    ) -> impl Iterator<Item = Result<(u64, PassageRecord), StoreError>> + '_ {
        self.passages.iter().filter_map(move |kv| {
            let (k, v) = match kv {
                Ok(kv) => kv,
                Err(e) => return Some(Err(self.err(e))),
            };
            let id = key_id(&k)?;
            Some(
                decode(&v)
                    .map(|r| (id, r))
                    .map_err(|e| self.corrupt(format!("passage {id}: {e}"))),
            )
        })
    }

    fn max_passage_id(&self) -> Result<u64, StoreError> {
        Ok(self
            .passages
            .last()
            .map_err(|e| self.err(e))?
            .and_then(|(k, _)| key_id(&k))
            .unwrap_or(0))
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Replaces a file's record and passages in one transaction with the counts.
    fn commit_file(
        &self,
        path: &Path,
        old: Option<&FileRecord>,
        rec: Option<&FileRecord>,
        new: &[(u64, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let key = path_key(path);
        let rec_bytes = rec.map(encode);
        let res: Result<(), TransactionError<String>> =
            (&*self.files, &*self.passages, &*self.meta).transaction(|(files, passages, meta)| {
                let mut counts: Counts = match meta.get(COUNTS_KEY)? {
                    Some(v) => decode(&v).map_err(ConflictableTransactionError::Abort)?,
                    None => Counts::default(),
                };
                if let Some(old) = old {
                    for id in &old.passages {
                        if passages.remove(&id.to_be_bytes())?.is_some() {
                            counts.passages -= 1;
                            counts.id_set ^= id_hash(*id);
                        }
                    }
                }
                for (id, bytes) in new {
                    passages.insert(&id.to_be_bytes(), bytes.as_slice())?;
                    counts.passages += 1;
                    counts.id_set ^= id_hash(*id);
                }
                match (&rec_bytes, old.is_some()) {
                    (Some(r), had) => {
                        files.insert(key.as_slice(), r.as_slice())?;
                        if !had {
                            counts.files += 1;
                        }
                    }
                    (None, true) => {
                        files.remove(key.as_slice())?;
                        counts.files -= 1;
                    }
                    (None, false) => {}
                }
                meta.insert(COUNTS_KEY, encode(&counts))?;
                Ok(())
            });
        res.map_err(|e| match e {
            TransactionError::Storage(e) => self.err(e),
            TransactionError::Abort(msg) => self.corrupt(msg),
        })
    }
}

/// The writer's store: the database, the row files and the word index.
pub struct Store {
    path: PathBuf,
    db: Db,
    rows: RowFiles,
    lexical: lexical::Lexical,
    next_id: u64,
    /// Whether the clean marker is in place (see [`CLEAN_MARKER`]); removed before the first
    /// write to sled, written again after each flush.
    clean: bool,
}

impl Store {
    /// Opens (creating if needed, for vectors of `dim` dimensions) the index in `dir`; an
    /// existing index keeps its own width ([`Store::dim`]). Returns a note when the two sides
    /// had to be reconciled (see the module documentation).
    pub fn open(dir: &Path, dim: Option<usize>) -> Result<(Self, Option<String>), StoreError> {
        if dir.join("conf").exists() {
            // The layout before schema 2 kept sled at the top of the folder.
            return Err(StoreError::OtherVersion(dir.to_path_buf()));
        }
        crate::fsx::create_private_dir_all(dir).map_err(io_err(dir))?;
        let clean = clean_stamp(dir)
            .is_some_and(|s| std::fs::read_to_string(dir.join(CLEAN_MARKER)).is_ok_and(|m| m == s));
        let db = Db::open(dir)?;
        if !clean {
            db.verify()?;
        }
        let mut rows = RowFiles::open(dir, dim)?;
        let next_id = db.max_passage_id()?.max(rows.table().last_id()) + 1;
        let mut notes: Vec<String> = reconcile(&db, &mut rows)?.into_iter().collect();
        let counts = db.counts()?;
        let (lexical, note) = lexical::Lexical::open(dir, &db, &counts)?;
        notes.extend(note);
        // Known whole (clean, verified or reconciled and flushed): closed with nothing written
        // after this, it is stamped clean again.
        db.clean.store(true, Ordering::Release);
        let store = Store {
            path: dir.to_path_buf(),
            db,
            rows,
            lexical,
            next_id,
            clean,
        };
        Ok((store, (!notes.is_empty()).then(|| notes.join("; "))))
    }

    /// Deletes the index in `dir` and opens a fresh one.
    pub fn recreate(dir: &Path, dim: Option<usize>) -> Result<Self, StoreError> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(io_err(dir))?;
        }
        Ok(Self::open(dir, dim)?.0)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn rows(&self) -> &RowTable {
        self.rows.table()
    }

    /// A mapping of the vectors as written so far.
    pub fn vectors(&self) -> Result<Vectors, StoreError> {
        self.rows.vectors()
    }

    pub fn dim(&self) -> usize {
        self.rows.dim()
    }

    pub fn meta(&self) -> Result<Option<IndexMeta>, StoreError> {
        self.db.meta()
    }

    /// Stores `meta`, unless it is what is stored: opening the index for an update writes its
    /// settings back, and an unchanged write would cost the database its clean mark (a
    /// read-through at the next open) for nothing.
    pub fn set_meta(&mut self, meta: &IndexMeta) -> Result<(), StoreError> {
        if self.db.meta()?.as_ref() == Some(meta) {
            return Ok(());
        }
        self.dirty()?;
        self.db.set_meta(meta)
    }

    /// The serialised code source (e.g. a fitted ITQ rotation).
    pub fn coder(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.meta_blob(CODER_KEY)
    }

    /// The serialised partition of the vectors that goes with the coder, if any.
    pub fn partition(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.meta_blob(PARTITION_KEY)
    }

    /// Installs a new code source, its partition and their metadata together, so that a crash
    /// never pairs a generation number with the wrong coder or lists.
    pub fn set_coder(
        &mut self,
        meta: &IndexMeta,
        coder: &[u8],
        partition: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        self.dirty()?;
        let m = serde_json::to_vec(meta).map_err(|e| self.db.corrupt(e))?;
        let mut b = sled::Batch::default();
        b.insert(META_KEY, m);
        b.insert(CODER_KEY, coder);
        match partition {
            Some(p) => b.insert(PARTITION_KEY, p),
            None => b.remove(PARTITION_KEY),
        }
        self.db.meta.apply_batch(b).map_err(|e| self.db.err(e))
    }

    pub fn file(&self, path: &Path) -> Result<Option<FileRecord>, StoreError> {
        self.db.file(path)
    }

    pub fn files(&self) -> Result<Vec<(PathBuf, FileRecord)>, StoreError> {
        self.db.files()
    }

    /// Kept in the store's transactions: constant time.
    pub fn file_count(&self) -> usize {
        self.db.counts().map(|c| c.files as usize).unwrap_or(0)
    }

    pub fn passage_count(&self) -> usize {
        self.db.counts().map(|c| c.passages as usize).unwrap_or(0)
    }

    pub fn passage(&self, id: u64) -> Result<Option<PassageRecord>, StoreError> {
        self.db.passage(id)
    }

    /// Updates only a file's size/mtime (content unchanged, e.g. after `touch`).
    pub fn touch_file(&mut self, path: &Path, rec: &FileRecord) -> Result<(), StoreError> {
        self.dirty()?;
        self.db
            .files
            .insert(path_key(path), encode(rec))
            .map_err(|e| self.db.err(e))?;
        Ok(())
    }

    /// Replaces everything stored for `path` with `new` (or removes the file when `rec` is
    /// `None`). Returns the ids given to the new passages. See the module documentation for
    /// the order of the writes.
    pub fn replace_file(
        &mut self,
        path: &Path,
        rec: Option<FileRecord>,
        new: &[NewPassage],
        code_generation: u32,
    ) -> Result<Vec<u64>, StoreError> {
        crate::failpoint::hit("store.replacing");
        self.check_room(new)?;
        self.dirty()?;
        let old = self.db.file(path)?;
        let ids: Vec<u64> = (self.next_id..self.next_id + new.len() as u64).collect();
        let (dim, words) = (self.dim(), self.rows.table().words);
        let mut rows: Vec<rows::NewRow> = Vec::new();
        for (&id, p) in ids.iter().zip(new) {
            let units = p.vector.len() / dim.max(1);
            if units == 0 || units * dim != p.vector.len() || units > rows::MAX_UNITS {
                return Err(self.db.corrupt("a passage's vectors are of another width"));
            }
            let code = p.code.as_deref().filter(|c| c.len() == units * words);
            for (u, v) in p.vector.chunks_exact(dim).enumerate() {
                let key = rows::row_key(id, u, units)
                    .ok_or_else(|| self.db.corrupt("passage ids ran out"))?;
                let c = code.map_or(&[][..], |c| &c[u * words..(u + 1) * words]);
                let list = p
                    .lists
                    .as_ref()
                    .and_then(|l| l.get(u))
                    .copied()
                    .unwrap_or(0);
                rows.push((key, code_generation, c, list, v));
            }
        }
        self.rows.append(&rows)?;
        self.next_id += new.len() as u64;
        crate::failpoint::hit("store.rows_written");
        let rec = rec.map(|mut r| {
            r.passages = ids.clone();
            r
        });
        let records: Vec<(u64, Vec<u8>)> = ids
            .iter()
            .zip(new)
            .map(|(id, p)| (*id, encode(&p.record)))
            .collect();
        self.db
            .commit_file(path, old.as_ref(), rec.as_ref(), &records)?;
        crate::failpoint::hit("store.committed");
        if let Some(old) = old {
            self.rows.kill(&old.passages)?;
            self.lexical.delete(&old.passages);
        }
        for (id, p) in ids.iter().zip(new) {
            self.lexical.add(*id, &p.record)?;
        }
        Ok(ids)
    }

    /// Refuses a file's change while the disk lacks the room for it: a write that fails half
    /// way leaves sled ahead of the disk and of the word index until the store is opened again,
    /// so the check comes first (an update checks its whole room before it starts, and this
    /// catches a disk that filled up since).
    fn check_room(&self, new: &[NewPassage]) -> Result<(), StoreError> {
        let bytes: u64 = new
            .iter()
            .map(|p| (p.vector.len() * 2 + p.record.text.len() * 4 + 256) as u64)
            .sum();
        match crate::fsx::free_space(&self.path) {
            Some(free) if free < bytes.saturating_add(WRITE_ROOM) => Err(StoreError::DiskFull {
                path: self.path.clone(),
                needed: None,
            }),
            _ => Ok(()),
        }
    }

    /// Live rows' passage ids and vectors (row-major; a passage has a row per unit): at most
    /// `max` of them as f32, evenly spaced over the rows (every one when there
    /// are no more): what a fit reads, so that its memory does not grow with the index (five
    /// million 384-wide vectors are 7.7 GB as f32).
    pub fn sample_vectors(&self, max: usize) -> Result<(Vec<u64>, Vec<f32>), StoreError> {
        let t = self.rows.table();
        let live = t.live_rows();
        let take = live.min(max);
        let mut ids = Vec::with_capacity(take);
        let mut data = Vec::with_capacity(take * self.dim());
        let mut seen = 0usize;
        for r in 0..t.rows() {
            if t.dead[r] {
                continue;
            }
            // The i-th live row is taken when i·take/live reaches a new whole number: `take`
            // rows, evenly spaced.
            let i = seen;
            seen += 1;
            if take < live && (i + 1) * take / live == i * take / live {
                continue;
            }
            if !self.rows.read_vector(r, &mut data)? {
                return Err(self.db.corrupt("a passage has no vector"));
            }
            ids.push(t.id(r));
        }
        Ok((ids, data))
    }

    /// Replaces every row's code (`rows × words`, in row order, dead rows included) and its
    /// list in the partition (none: there is no partition).
    pub fn rewrite_codes(
        &mut self,
        generation: u32,
        words: usize,
        codes: &[u64],
        lists: Option<&[u32]>,
    ) -> Result<(), StoreError> {
        self.rows.rewrite_codes(generation, words, codes, lists)
    }

    /// Writes codes and lists for some rows in place (same code length as the file's).
    pub fn put_codes(
        &mut self,
        generation: u32,
        items: &[(usize, &[u64], u32)],
    ) -> Result<(), StoreError> {
        self.rows.put_codes(generation, items)
    }

    /// Rewrites the row files without dead rows once those outnumber the live ones (and are
    /// more than a few), so the files stay within twice their live size.
    pub fn compact_if_worth_it(&mut self) -> Result<bool, StoreError> {
        let dead = self.rows.dead_rows();
        if dead > 1024 && dead > self.rows.table().live_rows() {
            self.rows.compact()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Makes the word index's additions searchable (after a group of files, say).
    pub fn commit_words(&mut self) -> Result<(), StoreError> {
        let counts = self.db.counts()?;
        self.lexical.commit(&counts)
    }

    /// A searcher over the word index's last commit.
    pub fn words(&self) -> lexical::LexicalSearcher {
        self.lexical.searcher()
    }

    /// Makes everything written so far durable, and marks the database clean.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        crate::failpoint::hit("store.flush");
        self.rows.sync()?;
        self.db.flush()?;
        self.commit_words()?;
        if let Some(stamp) = clean_stamp(&self.path) {
            crate::fsx::write_atomic(&self.path.join(CLEAN_MARKER), stamp.as_bytes())
                .map_err(io_err(&self.path))?;
            self.clean = true;
            self.db.clean.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Before the first write to sled after a flush: the database is no longer known clean.
    fn dirty(&mut self) -> Result<(), StoreError> {
        self.db.clean.store(false, Ordering::Release);
        if self.clean {
            match std::fs::remove_file(self.path.join(CLEAN_MARKER)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_err(&self.path)(e));
                }
                _ => {}
            }
            self.clean = false;
        }
        Ok(())
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk() + self.rows.size_on_disk()
    }
}

/// Brings sled and the row files back to the same set of passages after a crash (see the
/// module documentation). Work is linear in the index; nothing loops.
fn reconcile(db: &Db, rows: &mut RowFiles) -> Result<Option<String>, StoreError> {
    let counts = db.counts()?;
    let (live, id_set) = rows.table().live_set();
    if counts.passages == live && counts.id_set == id_set {
        return Ok(None);
    }
    let mut keep: HashSet<u64> = HashSet::new();
    let mut fresh = Counts::default();
    let mut dropped = 0usize;
    for (path, rec) in db.files()? {
        let whole = rec.passages.iter().all(|id| {
            rows.table().row_of(*id).is_some()
                && db.passages.contains_key(id.to_be_bytes()).unwrap_or(false)
        });
        if whole {
            fresh.files += 1;
            for id in &rec.passages {
                keep.insert(*id);
                fresh.passages += 1;
                fresh.id_set ^= id_hash(*id);
            }
        } else {
            // Indexed again by the next update, which no longer finds the file.
            db.files.remove(path_key(&path)).map_err(|e| db.err(e))?;
            dropped += 1;
        }
    }
    let mut orphans = sled::Batch::default();
    for k in db.passages.iter().keys() {
        let k = k.map_err(|e| db.err(e))?;
        if key_id(&k).is_none_or(|id| !keep.contains(&id)) {
            orphans.remove(k);
        }
    }
    db.passages.apply_batch(orphans).map_err(|e| db.err(e))?;
    let t = rows.table();
    let mut stray: Vec<u64> = (0..t.rows())
        .filter(|&r| !t.dead[r] && !keep.contains(&t.id(r)))
        .map(|r| t.id(r))
        .collect();
    stray.dedup();
    rows.kill(&stray)?;
    db.meta
        .insert(COUNTS_KEY, encode(&fresh))
        .map_err(|e| db.err(e))?;
    rows.sync()?;
    db.flush()?;
    Ok((dropped > 0).then(|| {
        format!(
            "the index was not closed cleanly; {dropped} file(s) whose passages were incomplete are indexed again"
        )
    }))
}

/// Written beside the database after each flush: what its files looked like then. A database
/// whose files still match was closed cleanly and not touched since, and opens without reading
/// it whole; any other is verified at open (see [`Db::verify`]).
const CLEAN_MARKER: &str = "sled.clean";

/// Names, sizes and modification times of the database's files.
fn clean_stamp(dir: &Path) -> Option<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join(SLED_DIR)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()? {
            let e = e.ok()?;
            let m = e.metadata().ok()?;
            if m.is_dir() {
                stack.push(e.path());
                continue;
            }
            out.push(format!(
                "{} {}",
                e.path().display(),
                crate::fsx::file_stamp(&m)?
            ));
        }
    }
    out.sort();
    Some(out.join("\n"))
}

fn is_lock_error(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock")
}

fn path_key(p: &Path) -> Vec<u8> {
    crate::pathwire::to_bytes(p)
}

fn key_id(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(path: &str, text: &str) -> NewPassage {
        NewPassage {
            record: PassageRecord {
                path: path.into(),
                start_byte: 0,
                end_byte: text.len(),
                start_line: 1,
                end_line: 1,
                headings: vec!["H".into()],
                context: Vec::new(),
                text: text.into(),
                units: Vec::new(),
                page: 0,
                names: Vec::new(),
                links: Vec::new(),
            },
            vector: vec![0.6, 0.8],
            code: Some(vec![0b1011]),
            lists: None,
        }
    }

    fn file(root: &str) -> FileRecord {
        FileRecord {
            root: root.into(),
            size: 1,
            mtime_ns: 2,
            hash: [0; 32],
            passages: vec![],
            lossy: false,
            tags: Vec::new(),
            date: None,
            unread_meta: false,
        }
    }

    #[test]
    fn replace_and_remove_files_with_counts() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, note) = Store::open(dir.path(), Some(2)).unwrap();
        assert!(note.is_none());
        let p = Path::new("/notes/a.md");
        let ids = s
            .replace_file(
                p,
                Some(file("/notes")),
                &[rec("/notes/a.md", "x"), rec("/notes/a.md", "y")],
                1,
            )
            .unwrap();
        assert_eq!((s.file_count(), s.passage_count()), (1, 2));
        assert_eq!(s.file(p).unwrap().unwrap().passages, ids);
        assert_eq!(s.passage(ids[1]).unwrap().unwrap().text, "y");
        let r = s.rows().row_of(ids[0]).unwrap();
        let v = s.vectors().unwrap();
        let v = v.row(r).unwrap();
        assert!((v[0].to_f32() - 0.6).abs() < 1e-3 && (v[1].to_f32() - 0.8).abs() < 1e-3);
        assert_eq!(s.rows().code(r), &[0b1011]);

        let ids2 = s
            .replace_file(p, Some(file("/notes")), &[rec("/notes/a.md", "z")], 1)
            .unwrap();
        assert_eq!((s.file_count(), s.passage_count()), (1, 1));
        assert!(s.passage(ids[0]).unwrap().is_none());
        assert!(ids2[0] > ids[1]);
        assert_eq!(s.rows().live(), 1);

        s.replace_file(p, None, &[], 1).unwrap();
        assert_eq!((s.passage_count(), s.file_count()), (0, 0));
        assert_eq!(s.sample_vectors(usize::MAX).unwrap().0.len(), 0);
        drop(s);
        let (s, note) = Store::open(dir.path(), Some(2)).unwrap();
        assert!(note.is_none(), "{note:?}");
        assert_eq!(s.passage_count(), 0);
    }

    #[test]
    fn a_fit_reads_an_evenly_spaced_sample_of_the_live_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Store::open(dir.path(), Some(2)).unwrap();
        let with = |x: f32| NewPassage {
            vector: vec![x, 1.0],
            ..rec("/n/a.md", "a")
        };
        // Ten files of one passage each; the third is replaced (its old row is dead).
        for f in 0..10 {
            let path = format!("/n/{f}.md");
            s.replace_file(Path::new(&path), Some(file("/n")), &[with(f as f32)], 1)
                .unwrap();
        }
        s.replace_file(Path::new("/n/2.md"), Some(file("/n")), &[with(20.0)], 1)
            .unwrap();
        let firsts = |max: usize| -> Vec<f32> {
            let (ids, data) = s.sample_vectors(max).unwrap();
            assert_eq!(data.len(), ids.len() * 2);
            data.chunks(2).map(|v| v[0]).collect()
        };
        // Live rows in order: 0 1 3 4 5 6 7 8 9 20.
        assert_eq!(
            firsts(100),
            vec![0.0, 1.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 20.0]
        );
        assert_eq!(firsts(100), firsts(10));
        assert_eq!(firsts(5), vec![1.0, 4.0, 6.0, 8.0, 20.0]);
        assert_eq!(firsts(1), vec![20.0]);
        assert!(firsts(0).is_empty());
        assert_eq!(s.sample_vectors(usize::MAX).unwrap().0.len(), 10);
    }

    #[test]
    fn a_database_only_read_opens_clean_next_time() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Store::open(dir.path(), Some(2)).unwrap();
        s.replace_file(
            Path::new("/n/a.md"),
            Some(file("/n")),
            &[rec("/n/a.md", "a")],
            1,
        )
        .unwrap();
        s.flush().unwrap();
        drop(s);
        // Opened, read and closed, as by `status` or a one-shot query: sled rewrites its files
        // at open and close, and the next open must still know the database clean.
        for _ in 0..3 {
            let (s, _) = Store::open(dir.path(), None).unwrap();
            assert!(s.clean, "opened as not closed cleanly");
            assert_eq!(s.passage_count(), 1);
        }
        // Written without a flush (a crash): not clean.
        let (mut s, _) = Store::open(dir.path(), None).unwrap();
        s.replace_file(
            Path::new("/n/b.md"),
            Some(file("/n")),
            &[rec("/n/b.md", "b")],
            1,
        )
        .unwrap();
        drop(s);
        let (s, _) = Store::open(dir.path(), None).unwrap();
        assert!(!s.clean);
        // Verified at that open, and closed unwritten: clean again.
        drop(s);
        let (s, _) = Store::open(dir.path(), None).unwrap();
        assert!(s.clean);
    }

    #[test]
    fn sides_that_disagree_are_reconciled_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Store::open(dir.path(), Some(2)).unwrap();
        s.replace_file(
            Path::new("/n/a.md"),
            Some(file("/n")),
            &[rec("/n/a.md", "a")],
            1,
        )
        .unwrap();
        s.replace_file(
            Path::new("/n/b.md"),
            Some(file("/n")),
            &[rec("/n/b.md", "b1"), rec("/n/b.md", "b2")],
            1,
        )
        .unwrap();
        // A row that never reached sled (killed between the two writes)...
        let key = rows::row_key(99, 0, 1).unwrap();
        s.rows.append(&[(key, 1, &[1], 0, &[0.6, 0.8])]).unwrap();
        // ...and a file whose rows were lost (sled durable, the rows file not).
        let b = s.file(Path::new("/n/b.md")).unwrap().unwrap();
        s.rows.kill(&b.passages[..1]).unwrap();
        s.flush().unwrap();
        drop(s);

        let (s, note) = Store::open(dir.path(), Some(2)).unwrap();
        assert!(note.unwrap().contains("1 file"));
        assert_eq!((s.file_count(), s.passage_count()), (1, 1));
        assert!(s.file(Path::new("/n/b.md")).unwrap().is_none());
        assert_eq!(s.rows().live(), 1);
        assert!(s.rows().row_of(99).is_none());
        drop(s);
        let (s, note) = Store::open(dir.path(), Some(2)).unwrap();
        assert!(note.is_none());
        // Ids are never reused, even the stray one's.
        assert!(s.next_id > 99);
    }

    #[test]
    fn a_store_left_empty_by_a_crash_empties_the_word_index_too() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Store::open(dir.path(), Some(2)).unwrap();
        s.replace_file(
            Path::new("/n/a.md"),
            Some(file("/n")),
            &[rec("/n/a.md", "apple")],
            1,
        )
        .unwrap();
        // The word index committed the passage; its rows never reached the disk.
        let a = s.file(Path::new("/n/a.md")).unwrap().unwrap();
        s.rows.kill(&a.passages).unwrap();
        s.flush().unwrap();
        assert_eq!(s.words().search("apple", 10).unwrap().len(), 1);
        drop(s);

        let (s, _) = Store::open(dir.path(), Some(2)).unwrap();
        assert_eq!((s.file_count(), s.passage_count()), (0, 0));
        assert_eq!(
            s.words().search("apple", 10).unwrap(),
            vec![],
            "a word-index entry outlived its passage"
        );
    }

    #[test]
    fn the_code_length_is_the_one_asked_for_else_chosen_by_size() {
        let with = |asked: Option<usize>, current: Option<usize>| IndexMeta {
            fingerprint: Fingerprint::synthetic(384),
            roots: vec![],
            fusion: None,
            corpus: CorpusSettings {
                bits: asked,
                ..Default::default()
            },
            code: current.map(|bits| CodeMeta {
                source: "itq".into(),
                bits,
                generation: 1,
                fitted_on: 10,
            }),
        };
        let large = crate::index::LARGE_INDEX_PASSAGES;
        // Nothing asked: by size, with the large length kept down to half the threshold.
        assert_eq!(with(None, None).code_bits(10), 64);
        assert_eq!(with(None, Some(64)).code_bits(large - 1), 64);
        assert_eq!(with(None, Some(64)).code_bits(large), 128);
        assert_eq!(with(None, Some(128)).code_bits(large - 1), 128);
        assert_eq!(with(None, Some(128)).code_bits(large / 2 - 1), 64);
        // Asked for (now or before the setting was kept): kept at any size.
        assert_eq!(with(Some(64), Some(64)).code_bits(10 * large), 64);
        assert_eq!(with(Some(256), None).code_bits(10), 256);
        assert_eq!(with(None, Some(32)).code_bits(10 * large), 32);
    }

    #[test]
    fn meta_and_coder_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let meta = IndexMeta {
            fingerprint: Fingerprint::synthetic(2),
            roots: vec!["/notes".into()],
            fusion: None,
            corpus: CorpusSettings::default(),
            code: Some(CodeMeta {
                source: "itq".into(),
                bits: 64,
                generation: 3,
                fitted_on: 10,
            }),
        };
        {
            let (mut s, _) = Store::open(dir.path(), Some(2)).unwrap();
            assert!(s.meta().unwrap().is_none());
            s.set_coder(&meta, b"blob", None).unwrap();
            s.flush().unwrap();
        }
        let (s, _) = Store::open(dir.path(), Some(2)).unwrap();
        assert_eq!(s.meta().unwrap(), Some(meta));
        assert_eq!(s.coder().unwrap().as_deref(), Some(&b"blob"[..]));
    }

    #[test]
    fn a_second_open_reports_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _s = Store::open(dir.path(), Some(2)).unwrap();
        match Store::open(dir.path(), Some(2)) {
            Err(StoreError::Locked(_)) => {}
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("opened a locked index twice"),
        }
    }

    #[test]
    fn garbage_metadata_is_reported_as_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path(), Some(2)).unwrap();
        s.db.meta.insert(META_KEY, &b"{not json"[..]).unwrap();
        assert!(matches!(s.meta(), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn the_old_layout_is_another_version() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("conf"), "segment_size: 524288").unwrap();
        assert!(matches!(
            Store::open(dir.path(), Some(2)),
            Err(StoreError::OtherVersion(_))
        ));
    }
}
