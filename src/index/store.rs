//! The on-disk index, in sled.
//!
//! sled 0.34 is unmaintained and has open corruption reports, so nothing here is precious: every
//! byte is derived from the user's files and the model, and any doubt about the database (it will
//! not open, a record does not decode, it was built by another schema or model) is answered by
//! rebuilding it. Each file's passages, vectors and codes change in one multi-tree transaction, so
//! a process killed at any point leaves every file either fully old or fully new; the next run
//! compares sizes, mtimes and hashes and converges.
//!
//! Trees:
//! - `meta`: one JSON [`IndexMeta`] under the key `meta`, plus the fitted code source.
//! - `files`: canonical path → JSON [`FileRecord`].
//! - `passages`: id (u64 BE) → JSON [`PassageRecord`].
//! - `vectors`: id → the passage embedding, unit length, f16 little-endian.
//! - `codes`: id → code generation (u32 LE) followed by the code's u64 words (LE). A code whose
//!   generation is not the current one is stale and is never used for filtering.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::f16;
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

/// Bumped whenever the layout or the meaning of stored data changes; a mismatch rebuilds.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the index at {} is in use by another dochash process; wait for it to finish (a running `dochash watch` or `dochash-tui` keeps it up to date by itself)",
        .0.display()
    )]
    Locked(PathBuf),
    #[error("the index at {} is damaged ({msg})", path.display())]
    Corrupt { path: PathBuf, msg: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn corrupt(path: &Path, msg: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        msg: msg.to_string(),
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
    /// Chunking parameters, as passages depend on them.
    pub chunking: String,
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
    pub roots: Vec<PathBuf>,
    pub code: Option<CodeMeta>,
    /// Which files to index; kept with the index so that every later update (and the watcher)
    /// applies the same filters as the command that set them.
    #[serde(default)]
    pub corpus: CorpusSettings,
}

impl IndexMeta {
    /// The code length updates keep: the index's own, or the default before it has codes.
    pub fn bits(&self) -> usize {
        self.code
            .as_ref()
            .map(|c| c.bits)
            .unwrap_or(super::DEFAULT_BITS)
    }
}

/// The persistent part of [`crate::corpus::CorpusConfig`]; `None` means the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorpusSettings {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub extensions: Option<Vec<String>>,
    pub max_file_bytes: Option<u64>,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub root: PathBuf,
    pub size: u64,
    pub mtime_ns: i128,
    /// blake3 of the raw bytes, hex.
    pub hash: String,
    pub passages: Vec<u64>,
    /// The file was not valid UTF-8 and was decoded lossily.
    #[serde(default)]
    pub lossy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassageRecord {
    pub path: PathBuf,
    pub start_byte: usize,
    pub end_byte: usize,
    /// 1-based, inclusive.
    pub start_line: u32,
    pub end_line: u32,
    pub headings: Vec<String>,
    /// The passage body as in the file (without the heading prefix that was embedded).
    pub text: String,
}

/// A passage ready to be stored: its record, unit-length embedding and, when a code source is
/// fitted, its code under the current generation.
#[derive(Debug, Clone)]
pub struct NewPassage {
    pub record: PassageRecord,
    pub vector: Vec<f32>,
    pub code: Option<Vec<u64>>,
}

/// The codes of one generation as loaded for searching.
#[derive(Debug, Clone, Default)]
pub struct CodeSet {
    /// Passage ids, one per code.
    pub ids: Vec<u64>,
    /// `ids.len() × words` words, row-major.
    pub codes: Vec<u64>,
    /// Passages without a code of this generation.
    pub stale: Vec<u64>,
}

#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    meta: sled::Tree,
    files: sled::Tree,
    passages: sled::Tree,
    vectors: sled::Tree,
    codes: sled::Tree,
}

const META_KEY: &[u8] = b"meta";

/// How long [`Store::open`] waits for another process to release the database.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);
const CODER_KEY: &[u8] = b"coder";

impl Store {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        // Another process may hold the database for a moment (a one-shot `query` or `status`
        // while an owner starts): wait a little before calling it locked.
        let deadline = std::time::Instant::now() + LOCK_PATIENCE;
        let db = loop {
            match sled::Config::new()
                .path(dir)
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
                Err(other) => return Err(corrupt(dir, other)),
            }
        };
        let tree = |name: &str| db.open_tree(name).map_err(|e| corrupt(dir, e));
        Ok(Self {
            path: dir.to_path_buf(),
            meta: tree("meta")?,
            files: tree("files")?,
            passages: tree("passages")?,
            vectors: tree("vectors")?,
            codes: tree("codes")?,
            db,
        })
    }

    /// Deletes the database in `dir` and opens a fresh one.
    pub fn recreate(dir: &Path) -> Result<Self, StoreError> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| StoreError::Io {
                path: dir.to_path_buf(),
                source: e,
            })?;
        }
        Self::open(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn corrupt(&self, msg: impl std::fmt::Display) -> StoreError {
        corrupt(&self.path, msg)
    }

    pub fn meta(&self) -> Result<Option<IndexMeta>, StoreError> {
        match self.meta.get(META_KEY).map_err(|e| self.corrupt(e))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| self.corrupt(format!("metadata: {e}"))),
        }
    }

    pub fn set_meta(&self, meta: &IndexMeta) -> Result<(), StoreError> {
        let v = serde_json::to_vec(meta).map_err(|e| self.corrupt(e))?;
        self.meta.insert(META_KEY, v).map_err(|e| self.corrupt(e))?;
        Ok(())
    }

    /// The serialised code source (e.g. a fitted ITQ rotation), stored with its generation.
    pub fn coder(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .meta
            .get(CODER_KEY)
            .map_err(|e| self.corrupt(e))?
            .map(|v| v.to_vec()))
    }

    /// Installs a new code source and its metadata together, so that a crash never pairs a
    /// generation number with the wrong coder.
    pub fn set_coder(&self, meta: &IndexMeta, coder: &[u8]) -> Result<(), StoreError> {
        let m = serde_json::to_vec(meta).map_err(|e| self.corrupt(e))?;
        let mut b = sled::Batch::default();
        b.insert(META_KEY, m);
        b.insert(CODER_KEY, coder);
        self.meta.apply_batch(b).map_err(|e| self.corrupt(e))
    }

    pub fn file(&self, path: &Path) -> Result<Option<FileRecord>, StoreError> {
        match self
            .files
            .get(path_key(path))
            .map_err(|e| self.corrupt(e))?
        {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| self.corrupt(format!("file record of {}: {e}", path.display()))),
        }
    }

    pub fn files(&self) -> Result<Vec<(PathBuf, FileRecord)>, StoreError> {
        self.files
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(|e| self.corrupt(e))?;
                let path = key_path(&k);
                let rec = serde_json::from_slice(&v)
                    .map_err(|e| self.corrupt(format!("file record of {}: {e}", path.display())))?;
                Ok((path, rec))
            })
            .collect()
    }

    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    pub fn passage_count(&self) -> usize {
        self.passages.len()
    }

    /// Updates only a file's size/mtime (content unchanged, e.g. after `touch`).
    pub fn touch_file(&self, path: &Path, rec: &FileRecord) -> Result<(), StoreError> {
        let v = serde_json::to_vec(rec).map_err(|e| self.corrupt(e))?;
        self.files
            .insert(path_key(path), v)
            .map_err(|e| self.corrupt(e))?;
        Ok(())
    }

    /// Replaces everything stored for `path` with `new` (or removes the file when `rec` is
    /// `None`), atomically across all trees. Returns the ids given to the new passages.
    pub fn replace_file(
        &self,
        path: &Path,
        rec: Option<FileRecord>,
        new: &[NewPassage],
        code_generation: u32,
    ) -> Result<Vec<u64>, StoreError> {
        let old = self.file(path)?;
        let ids = new
            .iter()
            .map(|_| self.db.generate_id())
            .collect::<Result<Vec<u64>, _>>()
            .map_err(|e| self.corrupt(e))?;
        let rec_bytes = match rec {
            Some(mut r) => {
                r.passages = ids.clone();
                Some(serde_json::to_vec(&r).map_err(|e| self.corrupt(e))?)
            }
            None => None,
        };
        let mut encoded = Vec::with_capacity(new.len());
        for p in new {
            encoded.push((
                serde_json::to_vec(&p.record).map_err(|e| self.corrupt(e))?,
                vector_bytes(&p.vector),
                p.code.as_ref().map(|c| code_bytes(code_generation, c)),
            ));
        }
        let key = path_key(path);
        let res: Result<(), TransactionError<()>> =
            (&self.files, &self.passages, &self.vectors, &self.codes).transaction(
                |(files, passages, vectors, codes)| {
                    if let Some(old) = &old {
                        for id in &old.passages {
                            let k = id.to_be_bytes();
                            passages.remove(&k)?;
                            vectors.remove(&k)?;
                            codes.remove(&k)?;
                        }
                    }
                    for (id, (rec, vec, code)) in ids.iter().zip(&encoded) {
                        let k = id.to_be_bytes();
                        passages.insert(&k, rec.as_slice())?;
                        vectors.insert(&k, vec.as_slice())?;
                        if let Some(c) = code {
                            codes.insert(&k, c.as_slice())?;
                        }
                    }
                    match &rec_bytes {
                        Some(r) => files.insert(key.as_slice(), r.as_slice())?,
                        None => files.remove(key.as_slice())?,
                    };
                    Ok::<(), ConflictableTransactionError<()>>(())
                },
            );
        res.map_err(|e| self.corrupt(format!("{e:?}")))?;
        Ok(ids)
    }

    pub fn passage(&self, id: u64) -> Result<Option<PassageRecord>, StoreError> {
        match self
            .passages
            .get(id.to_be_bytes())
            .map_err(|e| self.corrupt(e))?
        {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| self.corrupt(format!("passage {id}: {e}"))),
        }
    }

    pub fn vector(&self, id: u64) -> Result<Option<Vec<f32>>, StoreError> {
        match self
            .vectors
            .get(id.to_be_bytes())
            .map_err(|e| self.corrupt(e))?
        {
            None => Ok(None),
            Some(v) => decode_vector(&v)
                .map(Some)
                .ok_or_else(|| self.corrupt(format!("vector {id} has a bad length"))),
        }
    }

    /// Every (id, vector), in id order; for fitting a code source and for re-coding.
    pub fn vectors(&self) -> Result<(Vec<u64>, Vec<f32>, usize), StoreError> {
        let mut ids = Vec::with_capacity(self.vectors.len());
        let mut data = Vec::new();
        let mut dim = 0;
        for kv in self.vectors.iter() {
            let (k, v) = kv.map_err(|e| self.corrupt(e))?;
            let id = key_id(&k).ok_or_else(|| self.corrupt("bad vector key"))?;
            let vec = decode_vector(&v).ok_or_else(|| self.corrupt("bad vector"))?;
            if dim == 0 {
                dim = vec.len();
            } else if vec.len() != dim {
                return Err(self.corrupt("vectors of different lengths"));
            }
            ids.push(id);
            data.extend_from_slice(&vec);
        }
        Ok((ids, data, dim))
    }

    /// Codes of the given generation, plus the ids of passages whose code is missing or stale
    /// (they are searched exactly instead).
    pub fn codes(&self, generation: u32, words: usize) -> Result<CodeSet, StoreError> {
        let mut ids = Vec::with_capacity(self.codes.len());
        let mut codes = Vec::with_capacity(self.codes.len() * words);
        let mut fresh: HashMap<u64, ()> = HashMap::new();
        for kv in self.codes.iter() {
            let (k, v) = kv.map_err(|e| self.corrupt(e))?;
            let id = key_id(&k).ok_or_else(|| self.corrupt("bad code key"))?;
            if let Some(c) = decode_code(&v, generation, words) {
                ids.push(id);
                codes.extend_from_slice(&c);
                fresh.insert(id, ());
            }
        }
        let mut stale = Vec::new();
        if fresh.len() != self.passages.len() {
            for k in self.passages.iter().keys() {
                let k = k.map_err(|e| self.corrupt(e))?;
                let id = key_id(&k).ok_or_else(|| self.corrupt("bad passage key"))?;
                if !fresh.contains_key(&id) {
                    stale.push(id);
                }
            }
        }
        Ok(CodeSet { ids, codes, stale })
    }

    /// Writes codes of one generation for existing passages (re-coding after a refit).
    /// Passages deleted in the meantime are skipped.
    pub fn put_codes(&self, generation: u32, items: &[(u64, Vec<u64>)]) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (id, code) in items {
            if self
                .passages
                .contains_key(id.to_be_bytes())
                .map_err(|e| self.corrupt(e))?
            {
                b.insert(&id.to_be_bytes(), code_bytes(generation, code));
            }
        }
        self.codes.apply_batch(b).map_err(|e| self.corrupt(e))
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| self.corrupt(e))
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

fn is_lock_error(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock")
}

fn path_key(p: &Path) -> Vec<u8> {
    p.as_os_str().as_encoded_bytes().to_vec()
}

fn key_path(k: &[u8]) -> PathBuf {
    // Keys were made from `as_encoded_bytes` of real paths; a damaged key still yields a path
    // (lossy) that simply will not match any file on disk and gets removed on the next update.
    PathBuf::from(String::from_utf8_lossy(k).into_owned())
}

fn key_id(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}

pub fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| f16::from_f32(*x).to_le_bytes())
        .collect()
}

pub fn decode_vector(b: &[u8]) -> Option<Vec<f32>> {
    if !b.len().is_multiple_of(2) || b.is_empty() {
        return None;
    }
    let halves: Vec<f16> = b
        .chunks_exact(2)
        .map(|c| f16::from_le_bytes([c[0], c[1]]))
        .collect();
    let mut out = vec![0f32; halves.len()];
    // Uses the CPU's F16C conversion when it has one: the rerank decodes thousands of vectors
    // per query.
    half::slice::HalfFloatSliceExt::convert_to_f32_slice(halves.as_slice(), &mut out);
    Some(out)
}

fn code_bytes(generation: u32, code: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 8 * code.len());
    out.extend_from_slice(&generation.to_le_bytes());
    for w in code {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out
}

fn decode_code(b: &[u8], generation: u32, words: usize) -> Option<Vec<u64>> {
    let (g, rest) = b.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*g) != generation || rest.len() != words * 8 {
        return None;
    }
    Some(
        rest.chunks_exact(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                u64::from_le_bytes(w)
            })
            .collect(),
    )
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
                text: text.into(),
            },
            vector: vec![0.6, 0.8],
            code: Some(vec![0b1011]),
        }
    }

    fn file(root: &str) -> FileRecord {
        FileRecord {
            root: root.into(),
            size: 1,
            mtime_ns: 2,
            hash: "h".into(),
            passages: vec![],
            lossy: false,
        }
    }

    #[test]
    fn replace_and_remove_files_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let p = Path::new("/notes/a.md");
        let ids = s
            .replace_file(
                p,
                Some(file("/notes")),
                &[rec("/notes/a.md", "x"), rec("/notes/a.md", "y")],
                1,
            )
            .unwrap();
        assert_eq!(s.passage_count(), 2);
        assert_eq!(s.file(p).unwrap().unwrap().passages, ids);
        assert_eq!(s.passage(ids[1]).unwrap().unwrap().text, "y");
        let v = s.vector(ids[0]).unwrap().unwrap();
        assert!((v[0] - 0.6).abs() < 1e-3 && (v[1] - 0.8).abs() < 1e-3);

        let c = s.codes(1, 1).unwrap();
        assert_eq!(
            (c.ids.len(), c.codes, c.stale.len()),
            (2, vec![0b1011, 0b1011], 0)
        );
        // Another generation's codes are stale: the passages are reported for exact search.
        let c = s.codes(2, 1).unwrap();
        assert_eq!((c.ids.len(), c.stale.len()), (0, 2));

        let ids2 = s
            .replace_file(p, Some(file("/notes")), &[rec("/notes/a.md", "z")], 1)
            .unwrap();
        assert_eq!(s.passage_count(), 1);
        assert!(s.passage(ids[0]).unwrap().is_none());
        assert!(!ids.contains(&ids2[0]));

        s.replace_file(p, None, &[], 1).unwrap();
        assert_eq!((s.passage_count(), s.file_count()), (0, 0));
        assert_eq!(s.vectors().unwrap().0.len(), 0);
    }

    #[test]
    fn meta_and_coder_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let meta = IndexMeta {
            fingerprint: Fingerprint {
                schema: SCHEMA_VERSION,
                model_id: "m".into(),
                model_stamp: "1".into(),
                dim: 2,
                pooling: "mean".into(),
                chunking: "200/32".into(),
            },
            roots: vec!["/notes".into()],
            corpus: CorpusSettings::default(),
            code: Some(CodeMeta {
                source: "itq".into(),
                bits: 64,
                generation: 3,
                fitted_on: 10,
            }),
        };
        {
            let s = Store::open(dir.path()).unwrap();
            assert!(s.meta().unwrap().is_none());
            s.set_coder(&meta, b"blob").unwrap();
            s.flush().unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.meta().unwrap(), Some(meta));
        assert_eq!(s.coder().unwrap().as_deref(), Some(&b"blob"[..]));
    }

    #[test]
    fn a_second_open_reports_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _s = Store::open(dir.path()).unwrap();
        match Store::open(dir.path()) {
            Err(StoreError::Locked(_)) => {}
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("opened a locked index twice"),
        }
    }

    #[test]
    fn garbage_metadata_is_reported_as_damage() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.meta.insert(META_KEY, &b"{not json"[..]).unwrap();
        assert!(matches!(s.meta(), Err(StoreError::Corrupt { .. })));
        s.codes.insert(5u64.to_be_bytes(), &b"xy"[..]).unwrap();
        // A short code record is simply not a valid code.
        assert!(s.codes(0, 1).unwrap().ids.is_empty());
    }

    #[test]
    fn vectors_round_trip_through_f16() {
        let v = vec![0.1f32, -0.5, 0.99, 0.0];
        let back = decode_vector(&vector_bytes(&v)).unwrap();
        for (a, b) in v.iter().zip(&back) {
            assert!((a - b).abs() < 1e-3);
        }
        assert!(decode_vector(&[1, 2, 3]).is_none());
    }
}
