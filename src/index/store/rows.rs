//! The search data, out of sled: rows of vectors and codes (a passage has one per unit it is
//! matched on) in two files with the same row numbers.
//!
//! - `codes.bin`: per row the passage id, the code generation, flags and the code's words. Small
//!   (24 bytes a row at 64 bits), read whole into memory at open: the Hamming filter scans it.
//! - `vectors.bin`: per row the unit embedding in f16, memory-mapped: the rerank reads only the
//!   rows of its candidates, so a million passages open in milliseconds and cost no RAM until
//!   searched.
//!
//! A passage has one row per unit it is matched on (see `ChunkConfig::unit_tokens`), keyed by
//! [`row_key`]: the passage id in the high bits, the unit in the low byte, counted so that the
//! passage's last row (the one written last) is its *anchor*. A passage is present when its
//! anchor is: a crash that cut the files inside a passage's rows leaves no anchor, and the rows
//! before it are garbage (marked dead at open).
//!
//! Rows are only ever appended, in increasing key order (so a binary search finds a passage's
//! rows), and removed by a tombstone flag written in place; [`RowFiles::compact`] rewrites both files
//! without the dead rows once they outnumber the live ones. A row's vector is never rewritten,
//! so a reader's mapping stays valid while the writer appends. Nor is the vectors file ever
//! replaced: compaction writes a new one under the next name (`vectors.N.bin`), and the codes
//! file, replaced by rename, names in its header the vectors file its rows go with. One rename
//! switches both, and no file a reader maps is ever renamed over (Windows refuses that).
//!
//! Everything here is derived data. What a crash can leave — a torn last row, rows whose passage
//! never reached sled, tombstones that did not — is repaired at open (see `Store::open`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::f16;

use super::{StoreError, corrupt, io_err};

#[cfg(not(target_endian = "little"))]
compile_error!("the row files are little-endian and read in place");

pub const CODES_FILE: &str = "codes.bin";
/// The first vectors file; later ones are numbered (see [`vectors_name`]).
pub const VECTORS_FILE: &str = "vectors.bin";

/// The name of vectors file number `n`, as the codes header names it.
pub fn vectors_name(n: u32) -> String {
    if n == 0 {
        VECTORS_FILE.to_string()
    } else {
        format!("vectors.{n}.bin")
    }
}

/// Whether a file in the index folder is a vectors file (current or left over).
fn is_vectors_name(name: &str) -> bool {
    name == VECTORS_FILE
        || name
            .strip_prefix("vectors.")
            .and_then(|r| r.strip_suffix(".bin"))
            .is_some_and(|n| n.parse::<u32>().is_ok())
}

const HEADER: u64 = 64;
const CODES_MAGIC: &[u8; 8] = b"DHCODES\x01";
const VECTORS_MAGIC: &[u8; 8] = b"DHVECS\x00\x01";
/// Bumped when a file's layout changes; another version is rebuilt like any damage.
/// 2: rows keyed by passage and unit ([`row_key`]).
const FILE_VERSION: u32 = 2;
/// A codes file whose header names a numbered vectors file: a version of its own, so that a
/// dochash from before numbered files (which always opens `vectors.bin`) rebuilds such an index
/// instead of pairing its codes with a leftover.
const LINKED_VERSION: u32 = 3;

/// Most rows (units) one passage may have.
pub const MAX_UNITS: usize = 1 << UNIT_BITS;
const UNIT_BITS: u32 = 8;
/// The low byte of a passage's anchor row.
const ANCHOR: u64 = (1 << UNIT_BITS) - 1;

/// The key of row `unit` of a passage with `units` rows (`unit < units ≤ MAX_UNITS`); `None`
/// for an id too large to key (only a damaged database hands out such ids).
pub fn row_key(id: u64, unit: usize, units: usize) -> Option<u64> {
    if id >= 1 << (64 - UNIT_BITS) || unit >= units || units > MAX_UNITS {
        return None;
    }
    Some((id << UNIT_BITS) | (ANCHOR + 1 - units as u64 + unit as u64))
}

/// The passage a row key belongs to.
pub fn passage_of(key: u64) -> u64 {
    key >> UNIT_BITS
}

fn is_anchor(key: u64) -> bool {
    key & ANCHOR == ANCHOR
}

const FLAG_DEAD: u32 = 1;
/// A row's list in the index's partition (see `index::partition`) is kept in the flags' upper
/// 24 bits: valid, like the code, for rows of the partition's code generation.
const LIST_SHIFT: u32 = 8;
/// Most lists a row's flags can name.
pub const MAX_LIST: u32 = (1 << (32 - LIST_SHIFT)) - 1;

fn flags(dead: bool, list: u32) -> u32 {
    (u32::from(dead) * FLAG_DEAD) | (list.min(MAX_LIST) << LIST_SHIFT)
}

/// Longest code, in words, and widest vector a header may declare (a damaged header must not
/// turn into a huge allocation).
const MAX_WORDS: usize = 64;
const MAX_DIM: usize = 1 << 16;

/// The in-memory mirror of `codes.bin`: what the writer updates and searchers are built from.
#[derive(Debug, Clone, Default)]
pub struct RowTable {
    pub words: usize,
    /// Per row: its [`row_key`] (strictly increasing).
    pub keys: Vec<u64>,
    /// Per row: the code generation (0: no code).
    pub gens: Vec<u32>,
    /// Per row: tombstoned.
    pub dead: Vec<bool>,
    /// `rows × words` code words.
    pub codes: Vec<u64>,
    /// Per row: its list in the partition, where its code generation has one (else 0).
    pub lists: Vec<u32>,
    /// Live rows, and live passages (anchors) among them.
    live_rows: usize,
    live: usize,
}

impl RowTable {
    pub fn rows(&self) -> usize {
        self.keys.len()
    }

    /// Live passages.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Live rows (a passage has one per unit).
    pub fn live_rows(&self) -> usize {
        self.live_rows
    }

    /// The passage row `r` belongs to.
    pub fn id(&self, r: usize) -> u64 {
        passage_of(self.keys[r])
    }

    /// The anchor row of a live passage (present when the passage is).
    pub fn row_of(&self, id: u64) -> Option<usize> {
        let r = self.keys.binary_search(&row_key(id, 0, 1)?).ok()?;
        (!self.dead[r]).then_some(r)
    }

    /// All rows of a passage, live or dead (consecutive).
    pub fn rows_of(&self, id: u64) -> std::ops::Range<usize> {
        let Some(anchor) = row_key(id, 0, 1) else {
            return 0..0;
        };
        let first = anchor & !ANCHOR;
        let lo = self.keys.partition_point(|&k| k < first);
        let hi = self.keys.partition_point(|&k| k <= anchor);
        lo..hi
    }

    pub fn code(&self, row: usize) -> &[u64] {
        &self.codes[row * self.words..(row + 1) * self.words]
    }

    /// The live passages' count and id-set hash (see `Counts`).
    pub fn live_set(&self) -> (u64, u64) {
        let mut h = 0u64;
        for (&key, dead) in self.keys.iter().zip(&self.dead) {
            if !dead && is_anchor(key) {
                h ^= super::records::id_hash(passage_of(key));
            }
        }
        (self.live as u64, h)
    }

    /// The largest passage id with a row (dead or alive): ids are never reused.
    pub fn last_id(&self) -> u64 {
        self.keys.last().copied().map(passage_of).unwrap_or(0)
    }

    fn push(
        &mut self,
        key: u64,
        gen_: u32,
        dead: bool,
        list: u32,
        code: impl IntoIterator<Item = u64>,
    ) {
        self.keys.push(key);
        self.gens.push(gen_);
        self.dead.push(dead);
        self.lists.push(list);
        if !dead {
            self.live_rows += 1;
            self.live += usize::from(is_anchor(key));
        }
        self.codes.extend(code);
    }

    fn kill_row(&mut self, r: usize) {
        if !self.dead[r] {
            self.dead[r] = true;
            self.live_rows -= 1;
            self.live -= usize::from(is_anchor(self.keys[r]));
        }
    }
}

/// A row to append: `(key, code generation, code words or empty, list, vector)`.
pub type NewRow<'a> = (u64, u32, &'a [u64], u32, &'a [f32]);

/// A read-only view of the vectors, shared by searchers (cheap to clone).
#[derive(Clone, Default)]
pub struct Vectors {
    map: Option<Arc<memmap2::Mmap>>,
    dim: usize,
    rows: usize,
}

impl Vectors {
    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Maps every page of this view into the process, on a thread of the lowest priority that
    /// stops when the last clone of the view is gone. A query reads thousands of rows scattered
    /// over the file; on a fresh mapping each read is a page fault, even with the file cached,
    /// and at a million passages those faults were the first queries' cost.
    pub fn warm_in_background(&self) {
        let Some(job) = self.warm_job() else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("dochash-warm".into())
            .spawn(move || {
                crate::priority::lower_this_thread();
                job();
            });
        // Without a thread the queries fault the pages in themselves.
        drop(spawned);
    }

    /// [`Vectors::warm_in_background`]'s work, done before returning (for a benchmark of what
    /// a running owner reaches once it has been idle for a moment).
    pub fn warm_now(&self) {
        if let Some(job) = self.warm_job() {
            job();
        }
    }

    /// The warming of this view, holding it only weakly: a chunk at a time, so that a view let
    /// go stops the work within one.
    fn warm_job(&self) -> Option<impl FnOnce() + Send + 'static> {
        let map = Arc::downgrade(self.map.as_ref()?);
        Some(move || {
            let mut at = 0usize;
            while let Some(m) = map.upgrade() {
                if at >= m.len() {
                    break;
                }
                let len = WARM_CHUNK.min(m.len() - at);
                populate(&m, at, len);
                at += len;
            }
        })
    }

    /// Row `r`'s vector; `None` past the rows this view was mapped with.
    pub fn row(&self, r: usize) -> Option<&[f16]> {
        let map = self.map.as_ref()?;
        if r >= self.rows {
            return None;
        }
        let start = HEADER as usize + r * self.dim * 2;
        let bytes = map.get(start..start + self.dim * 2)?;
        bytemuck::try_cast_slice(bytes).ok()
    }
}

/// Bytes of the vectors mapped in at a time by [`Vectors::warm_in_background`].
const WARM_CHUNK: usize = 16 << 20;

/// Maps `len` bytes of `map` from `at` into the process: in one call where the kernel can
/// (Linux 5.14), else by reading a byte of each page.
fn populate(map: &memmap2::Mmap, at: usize, len: usize) {
    #[cfg(target_os = "linux")]
    if map
        .advise_range(memmap2::Advice::PopulateRead, at, len)
        .is_ok()
    {
        return;
    }
    for page in (at..at + len).step_by(4096) {
        std::hint::black_box(map.get(page).copied());
    }
}

/// The writer's handle on both files.
pub struct RowFiles {
    dir: PathBuf,
    /// `None` only while the file is being replaced (see [`RowFiles::replace_codes`]).
    codes: Option<File>,
    vectors: File,
    /// The number of the vectors file (see [`vectors_name`]).
    vfile: u32,
    dim: usize,
    table: RowTable,
}

/// A file header: magic, version, width, and (codes only) the vectors file the rows go with.
fn header(magic: &[u8; 8], width: usize, vfile: u32) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[..8].copy_from_slice(magic);
    let version = if vfile == 0 {
        FILE_VERSION
    } else {
        LINKED_VERSION
    };
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[12..16].copy_from_slice(&(width as u32).to_le_bytes());
    h[16..20].copy_from_slice(&vfile.to_le_bytes());
    h
}

/// Reads a header; returns the width it declares and the vectors file it names (0 unless a codes
/// file of [`LINKED_VERSION`]).
fn read_header(
    f: &mut File,
    path: &Path,
    magic: &[u8; 8],
    max: usize,
) -> Result<(usize, u32), StoreError> {
    let mut h = [0u8; HEADER as usize];
    f.read_exact(&mut h).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => corrupt(path, "header: the file is cut short"),
        _ => super::from_io(path, e),
    })?;
    if &h[..8] != magic {
        return Err(corrupt(path, "not a dochash row file"));
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    let linked = magic == CODES_MAGIC && version == LINKED_VERSION;
    if version != FILE_VERSION && !linked {
        return Err(StoreError::OtherVersion(path.to_path_buf()));
    }
    let width = u32::from_le_bytes([h[12], h[13], h[14], h[15]]) as usize;
    if width == 0 || width > max {
        return Err(corrupt(path, format!("bad width {width}")));
    }
    let vfile = if linked {
        u32::from_le_bytes([h[16], h[17], h[18], h[19]])
    } else {
        0
    };
    Ok((width, vfile))
}

fn code_row_bytes(words: usize) -> u64 {
    16 + 8 * words as u64
}

impl RowFiles {
    /// Opens the row files in `dir`, creating them for vectors of `dim` dimensions if they are
    /// missing (`None`: they must exist). Existing files keep their own width; the caller
    /// compares it with what it expects. Cuts a torn last row, and marks dead any row whose id
    /// does not increase (garbage from a crash).
    pub fn open(dir: &Path, dim: Option<usize>) -> Result<Self, StoreError> {
        let cpath = dir.join(CODES_FILE);
        // A new index: the vectors file first, so that a codes file always has its partner.
        if !cpath.exists() {
            let Some(dim) = dim else {
                return Err(corrupt(dir, "the vector files are missing"));
            };
            Self::create(&dir.join(VECTORS_FILE), VECTORS_MAGIC, dim)?;
            Self::create(&cpath, CODES_MAGIC, 1)?;
        }
        let mut codes = open_rw(&cpath)?;
        let (words, vfile) = read_header(&mut codes, &cpath, CODES_MAGIC, MAX_WORDS)?;
        let vpath = dir.join(vectors_name(vfile));
        if !vpath.exists() {
            // Damage, said as such (and rebuilt by the store), never silently started afresh.
            return Err(corrupt(
                &vpath,
                "the vectors file the codes name is missing",
            ));
        }
        let mut vectors = open_rw(&vpath)?;
        let (vdim, _) = read_header(&mut vectors, &vpath, VECTORS_MAGIC, MAX_DIM)?;
        // Both headers are sound, so the link is to be trusted: other vectors files are leftovers.
        remove_other_vectors(dir, vfile);
        let crow = code_row_bytes(words);
        let vrow = 2 * vdim as u64;
        let clen = codes.metadata().map_err(io_err(&cpath))?.len();
        let vlen = vectors.metadata().map_err(io_err(&vpath))?.len();
        let rows = (clen.saturating_sub(HEADER) / crow).min(vlen.saturating_sub(HEADER) / vrow);
        // A crash can leave a half-written last row in either file.
        if clen != HEADER + rows * crow {
            codes
                .set_len(HEADER + rows * crow)
                .map_err(io_err(&cpath))?;
        }
        if vlen != HEADER + rows * vrow {
            vectors
                .set_len(HEADER + rows * vrow)
                .map_err(io_err(&vpath))?;
        }
        let mut bytes = Vec::with_capacity((rows * crow) as usize);
        codes.read_to_end(&mut bytes).map_err(io_err(&cpath))?;
        let mut files = RowFiles {
            dir: dir.to_path_buf(),
            codes: Some(codes),
            vectors,
            vfile,
            dim: vdim,
            table: RowTable {
                words,
                ..Default::default()
            },
        };
        files.load_table(&bytes)?;
        Ok(files)
    }

    fn create(path: &Path, magic: &[u8; 8], width: usize) -> Result<(), StoreError> {
        let mut f = File::create(path).map_err(io_err(path))?;
        f.write_all(&header(magic, width, 0)).map_err(io_err(path))
    }

    /// The current vectors file.
    fn vectors_path(&self) -> PathBuf {
        self.dir.join(vectors_name(self.vfile))
    }

    /// The writer's handle on the codes file.
    fn codes(&self) -> Result<&File, StoreError> {
        self.codes.as_ref().ok_or_else(|| {
            corrupt(
                &self.dir.join(CODES_FILE),
                "the codes file could not be reopened after it was replaced",
            )
        })
    }

    /// Replaces the codes file with `bytes` (written beside it, synced, renamed over it, so a
    /// crash leaves the old file or the new one). This writer's own handle is closed first:
    /// Windows refuses to replace an open file, and no one else holds this one (searchers take
    /// the codes from memory).
    fn replace_codes(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.dir.join(CODES_FILE);
        self.codes = None;
        // `Err` only when the file was not replaced (the rename is the last step that can fail).
        let replaced = crate::fsx::write_atomic(&path, bytes).map_err(io_err(&path));
        // Whichever file is in place now: the new one, or the old one if that failed. Should it
        // not open again, every later write fails rather than reach a file it does not know.
        self.codes = open_rw(&path).ok();
        replaced
    }

    fn load_table(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let words = self.table.words;
        let crow = code_row_bytes(words) as usize;
        let rows = bytes.len() / crow;
        let t = &mut self.table;
        t.keys.reserve(rows);
        t.gens.reserve(rows);
        t.dead.reserve(rows);
        t.lists.reserve(rows);
        t.codes.reserve(rows * words);
        let mut garbage = Vec::new();
        let mut last = 0u64;
        for (r, row) in bytes.chunks_exact(crow).enumerate() {
            let key = u64::from_le_bytes(row[0..8].try_into().unwrap_or_default());
            let gen_ = u32::from_le_bytes(row[8..12].try_into().unwrap_or_default());
            let flags = u32::from_le_bytes(row[12..16].try_into().unwrap_or_default());
            let mut dead = flags & FLAG_DEAD != 0;
            let list = flags >> LIST_SHIFT;
            if key <= last {
                // Not in key order: garbage. Kept as a dead row (the row numbers of the vectors
                // file must not shift), with a key that keeps the order.
                dead = true;
                if flags & FLAG_DEAD == 0 {
                    garbage.push(r);
                }
            }
            let key = key.max(last.saturating_add(1));
            last = key;
            let code = row[16..]
                .chunks_exact(8)
                .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()));
            t.push(key, gen_, dead, list, code);
        }
        // Rows after the last anchor belong to a passage whose anchor a crash cut off.
        for r in (0..t.rows()).rev() {
            if is_anchor(t.keys[r]) {
                break;
            }
            if !t.dead[r] {
                t.kill_row(r);
                garbage.push(r);
            }
        }
        for r in garbage {
            self.write_flags(r, flags(true, self.table.lists[r]))?;
        }
        Ok(())
    }

    pub fn table(&self) -> &RowTable {
        &self.table
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Row `r`'s vector, read from the file and appended to `out` as f32; `false` past the
    /// rows written. Not through a mapping: a fault maps the pages around the one read too (64
    /// KiB on Linux), so a sample of rows spread over the file made all of it resident.
    pub fn read_vector(&self, r: usize, out: &mut Vec<f32>) -> Result<bool, StoreError> {
        if r >= self.table.rows() {
            return Ok(false);
        }
        let mut buf = vec![0u8; self.dim * 2];
        let at = HEADER + r as u64 * 2 * self.dim as u64;
        match read_at(&self.vectors, at, &mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(io_err(&self.vectors_path())(e)),
        }
        out.extend(
            buf.chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()),
        );
        Ok(true)
    }

    /// A fresh read-only mapping of the vectors, covering every row written so far.
    pub fn vectors(&self) -> Result<Vectors, StoreError> {
        let path = self.vectors_path();
        let rows = self.table.rows();
        if rows == 0 {
            return Ok(Vectors {
                map: None,
                dim: self.dim,
                rows: 0,
            });
        }
        // SAFETY: rows are never rewritten in place and the file is only ever grown by this
        // process or replaced by rename (compaction), so the mapped bytes do not change under
        // a reader. Another process writing this file would violate that, and the index lock
        // (sled's) keeps other dochash processes out.
        let map =
            unsafe { memmap2::MmapOptions::new().map(&self.vectors) }.map_err(io_err(&path))?;
        let rows = rows.min((map.len().saturating_sub(HEADER as usize)) / (2 * self.dim));
        Ok(Vectors {
            map: Some(Arc::new(map)),
            dim: self.dim,
            rows,
        })
    }

    /// Appends rows: `(key, code generation, code words or empty, list, vector)`, keys from
    /// [`row_key`], greater than every key already written, each passage's rows together and
    /// in unit order.
    pub fn append(&mut self, rows: &[NewRow<'_>]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let words = self.table.words;
        let mut cbuf = Vec::with_capacity(rows.len() * code_row_bytes(words) as usize);
        let mut vbuf = Vec::with_capacity(rows.len() * self.dim * 2);
        let mut last = self.table.keys.last().copied().unwrap_or(0);
        for (id, gen_, code, list, vector) in rows {
            if *id <= last || vector.len() != self.dim {
                return Err(corrupt(
                    &self.dir,
                    "rows appended out of order or of another width",
                ));
            }
            last = *id;
            let (gen_, code, list) = if code.len() == words {
                (*gen_, *code, *list)
            } else {
                (0, &[][..], 0)
            };
            cbuf.extend_from_slice(&id.to_le_bytes());
            cbuf.extend_from_slice(&gen_.to_le_bytes());
            cbuf.extend_from_slice(&flags(false, list).to_le_bytes());
            for w in 0..words {
                cbuf.extend_from_slice(&code.get(w).copied().unwrap_or(0).to_le_bytes());
            }
            for x in *vector {
                vbuf.extend_from_slice(&f16::from_f32(*x).to_le_bytes());
            }
        }
        let at = self.table.rows() as u64;
        write_at(
            &self.vectors,
            &self.vectors_path(),
            HEADER + at * 2 * self.dim as u64,
            &vbuf,
        )?;
        write_at(
            self.codes()?,
            &self.dir.join(CODES_FILE),
            HEADER + at * code_row_bytes(words),
            &cbuf,
        )?;
        let t = &mut self.table;
        for (key, gen_, code, list, _) in rows {
            let coded = code.len() == words;
            let code = (0..words).map(|w| if coded { code[w] } else { 0 });
            let (gen_, list) = if coded { (*gen_, *list) } else { (0, 0) };
            t.push(*key, gen_, false, list.min(MAX_LIST), code);
        }
        Ok(())
    }

    /// Tombstones the rows of these passages (ids without a live row are ignored).
    pub fn kill(&mut self, ids: &[u64]) -> Result<(), StoreError> {
        for id in ids {
            for r in self.table.rows_of(*id) {
                if !self.table.dead[r] {
                    self.write_flags(r, flags(true, self.table.lists[r]))?;
                    self.table.kill_row(r);
                }
            }
        }
        Ok(())
    }

    fn write_flags(&self, row: usize, flags: u32) -> Result<(), StoreError> {
        let at = HEADER + row as u64 * code_row_bytes(self.table.words) + 12;
        write_at(
            self.codes()?,
            &self.dir.join(CODES_FILE),
            at,
            &flags.to_le_bytes(),
        )
    }

    /// Writes codes of generation `gen_` for rows in place (same code length), with each
    /// row's list.
    pub fn put_codes(
        &mut self,
        gen_: u32,
        items: &[(usize, &[u64], u32)],
    ) -> Result<(), StoreError> {
        let words = self.table.words;
        let path = self.dir.join(CODES_FILE);
        for (row, code, list) in items {
            if *row >= self.table.rows() || code.len() != words {
                continue;
            }
            let list = (*list).min(MAX_LIST);
            let mut buf = Vec::with_capacity(8);
            buf.extend_from_slice(&gen_.to_le_bytes());
            buf.extend_from_slice(&flags(self.table.dead[*row], list).to_le_bytes());
            let at = HEADER + *row as u64 * code_row_bytes(words) + 8;
            write_at(self.codes()?, &path, at, &buf)?;
            let mut wbuf = Vec::with_capacity(8 * words);
            for w in *code {
                wbuf.extend_from_slice(&w.to_le_bytes());
            }
            write_at(self.codes()?, &path, at + 8, &wbuf)?;
            self.table.gens[*row] = gen_;
            self.table.lists[*row] = list;
            self.table.codes[row * words..(row + 1) * words].copy_from_slice(code);
        }
        Ok(())
    }

    /// Replaces every row's code with `codes` (`rows × words`, dead rows included) and its
    /// list with `lists` (one a row; none: every row in list 0) under generation `gen_`,
    /// possibly with another code length: a new file, renamed into place, so a crash leaves the
    /// old codes or the new ones.
    pub fn rewrite_codes(
        &mut self,
        gen_: u32,
        words: usize,
        codes: &[u64],
        lists: Option<&[u32]>,
    ) -> Result<(), StoreError> {
        let rows = self.table.rows();
        if codes.len() != rows * words
            || words == 0
            || words > MAX_WORDS
            || lists.is_some_and(|l| l.len() != rows)
        {
            return Err(corrupt(&self.dir, "codes of the wrong size"));
        }
        let list = |r: usize| lists.map_or(0, |l| l[r].min(MAX_LIST));
        let mut buf = Vec::with_capacity(HEADER as usize + rows * code_row_bytes(words) as usize);
        buf.extend_from_slice(&header(CODES_MAGIC, words, self.vfile));
        for r in 0..rows {
            buf.extend_from_slice(&self.table.keys[r].to_le_bytes());
            buf.extend_from_slice(&gen_.to_le_bytes());
            buf.extend_from_slice(&flags(self.table.dead[r], list(r)).to_le_bytes());
            for w in &codes[r * words..(r + 1) * words] {
                buf.extend_from_slice(&w.to_le_bytes());
            }
        }
        self.replace_codes(&buf)?;
        self.table.words = words;
        self.table.gens.iter_mut().for_each(|g| *g = gen_);
        self.table.codes = codes.to_vec();
        self.table.lists = (0..rows).map(list).collect();
        Ok(())
    }

    /// Dead rows, for deciding when to [`compact`](Self::compact).
    pub fn dead_rows(&self) -> usize {
        self.table.rows() - self.table.live_rows
    }

    /// Rewrites both files with only the live rows: a new vectors file under the next name,
    /// then the codes file naming it, renamed into place. Readers keep their mappings of the old
    /// vectors file, which is removed now where the system allows it, else at the next open.
    pub fn compact(&mut self) -> Result<(), StoreError> {
        let t = &self.table;
        let words = t.words;
        let keep: Vec<usize> = (0..t.rows()).filter(|&r| !t.dead[r]).collect();
        let old = self.vectors()?;
        let mut cbuf =
            Vec::with_capacity(HEADER as usize + keep.len() * code_row_bytes(words) as usize);
        let mut vbuf = Vec::with_capacity(HEADER as usize + keep.len() * 2 * self.dim);
        let next = self.vfile.checked_add(1).unwrap_or(1);
        cbuf.extend_from_slice(&header(CODES_MAGIC, words, next));
        vbuf.extend_from_slice(&header(VECTORS_MAGIC, self.dim, 0));
        let mut table = RowTable {
            words,
            ..Default::default()
        };
        for &r in &keep {
            let Some(v) = old.row(r) else {
                return Err(corrupt(&self.dir, "a row has no vector"));
            };
            cbuf.extend_from_slice(&t.keys[r].to_le_bytes());
            cbuf.extend_from_slice(&t.gens[r].to_le_bytes());
            cbuf.extend_from_slice(&flags(false, t.lists[r]).to_le_bytes());
            for w in t.code(r) {
                cbuf.extend_from_slice(&w.to_le_bytes());
            }
            vbuf.extend_from_slice(bytemuck::cast_slice(v));
            table.push(
                t.keys[r],
                t.gens[r],
                false,
                t.lists[r],
                t.code(r).iter().copied(),
            );
        }
        // The new vectors file first, under a name nothing reads yet: a crash before the codes
        // file names it leaves the old pair whole (the new file is removed at the next open).
        let vpath = self.dir.join(vectors_name(next));
        crate::fsx::write_atomic(&vpath, &vbuf).map_err(io_err(&vpath))?;
        let vectors = match open_rw(&vpath) {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(&vpath);
                return Err(e);
            }
        };
        crate::failpoint::hit("rows.compact");
        if let Err(e) = self.replace_codes(&cbuf) {
            let _ = std::fs::remove_file(&vpath);
            return Err(e);
        }
        // Switched: from here the writer follows the new pair, whatever else happens.
        self.vectors = vectors;
        self.vfile = next;
        // The old file, and any an earlier compaction could not remove while it was mapped.
        remove_other_vectors(&self.dir, next);
        self.table = table;
        Ok(())
    }

    /// Makes everything written durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.codes()?
            .sync_data()
            .map_err(io_err(&self.dir.join(CODES_FILE)))?;
        self.vectors
            .sync_data()
            .map_err(io_err(&self.vectors_path()))
    }

    pub fn size_on_disk(&self) -> u64 {
        let len = |f: &File| f.metadata().map(|m| m.len()).unwrap_or(0);
        self.codes.as_ref().map_or(0, len) + len(&self.vectors)
    }
}

#[cfg(unix)]
fn read_at(f: &File, at: u64, buf: &mut [u8]) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, at)
}

#[cfg(not(unix))]
fn read_at(f: &File, at: u64, buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    let mut f = f;
    f.seek(SeekFrom::Start(at))?;
    f.read_exact(buf)
}

#[cfg(unix)]
fn write_at(f: &File, path: &Path, at: u64, bytes: &[u8]) -> Result<(), StoreError> {
    std::os::unix::fs::FileExt::write_all_at(f, bytes, at).map_err(io_err(path))
}

#[cfg(not(unix))]
fn write_at(f: &File, path: &Path, at: u64, bytes: &[u8]) -> Result<(), StoreError> {
    use std::io::{Seek, SeekFrom};
    let mut f = f;
    f.seek(SeekFrom::Start(at)).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))
}

fn open_rw(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err(path))
}

/// Removes vectors files the codes file no longer names: left by a compaction that crashed
/// before its switch, or whose removal the system refused while a reader still mapped it.
/// Best effort: one still mapped by a reader elsewhere stays until a later open.
fn remove_other_vectors(dir: &Path, current: u32) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let keep = vectors_name(current);
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_vectors_name(name) && name != keep {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vec_of(x: f32, dim: usize) -> Vec<f32> {
        (0..dim).map(|i| x + i as f32 / 100.0).collect()
    }

    /// The key of a one-unit passage.
    fn k(id: u64) -> u64 {
        row_key(id, 0, 1).unwrap()
    }

    #[test]
    fn append_kill_reopen_and_compact() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = RowFiles::open(dir.path(), Some(4)).unwrap();
        let (a, b, c) = (vec_of(0.1, 4), vec_of(0.2, 4), vec_of(0.3, 4));
        f.append(&[(k(1), 0, &[], 0, &a), (k(2), 0, &[], 0, &b)])
            .unwrap();
        f.append(&[(k(5), 0, &[], 0, &c)]).unwrap();
        assert!(
            f.append(&[(k(5), 0, &[], 0, &c)]).is_err(),
            "keys must increase"
        );
        f.kill(&[2]).unwrap();
        assert_eq!((f.table().rows(), f.table().live()), (3, 2));
        assert_eq!(f.table().row_of(5), Some(2));
        assert_eq!(f.table().row_of(2), None);
        let v = f.vectors().unwrap();
        assert!((v.row(2).unwrap()[1].to_f32() - 0.31).abs() < 1e-3);
        drop(f);

        let mut f = RowFiles::open(dir.path(), Some(4)).unwrap();
        assert_eq!((f.table().rows(), f.table().live()), (3, 2));
        f.rewrite_codes(3, 2, &[1, 2, 3, 4, 5, 6], None).unwrap();
        assert_eq!(f.table().code(2), &[5, 6]);
        f.compact().unwrap();
        assert_eq!(f.table().keys, vec![k(1), k(5)]);
        assert_eq!(f.table().code(1), &[5, 6]);
        let v = f.vectors().unwrap();
        assert!((v.row(1).unwrap()[1].to_f32() - 0.31).abs() < 1e-3);
        drop(f);
        let f = RowFiles::open(dir.path(), Some(4)).unwrap();
        assert_eq!(
            (f.table().keys.clone(), f.table().gens.clone()),
            (vec![k(1), k(5)], vec![3, 3])
        );
        assert_eq!(RowFiles::open(dir.path(), Some(8)).unwrap().dim(), 4);
    }

    #[test]
    fn a_rows_list_is_written_with_its_code_and_outlives_kills_reopens_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = RowFiles::open(dir.path(), Some(4)).unwrap();
        let (a, b, c) = (vec_of(0.1, 4), vec_of(0.2, 4), vec_of(0.3, 4));
        f.append(&[(k(1), 0, &[], 0, &a)]).unwrap();
        f.rewrite_codes(2, 1, &[7], Some(&[4])).unwrap();
        assert_eq!(f.table().lists, vec![4]);
        f.append(&[(k(2), 2, &[8], 5, &b), (k(3), 2, &[9], 6, &c)])
            .unwrap();
        // A row without a code has no list either.
        f.append(&[(k(4), 2, &[], 3, &c)]).unwrap();
        assert_eq!(f.table().lists, vec![4, 5, 6, 0]);
        f.kill(&[2]).unwrap();
        f.put_codes(2, &[(2, &[10], 9)]).unwrap();
        drop(f);
        let mut f = RowFiles::open(dir.path(), Some(4)).unwrap();
        assert_eq!(f.table().lists, vec![4, 5, 9, 0]);
        assert_eq!(f.table().dead, vec![false, true, false, false]);
        assert_eq!(f.table().code(2), &[10]);
        f.compact().unwrap();
        assert_eq!(f.table().lists, vec![4, 9, 0]);
        drop(f);
        let f = RowFiles::open(dir.path(), Some(4)).unwrap();
        assert_eq!(f.table().lists, vec![4, 9, 0]);
        assert_eq!(f.table().keys, vec![k(1), k(3), k(4)]);
        assert_eq!(f.table().live_rows(), 3);
    }

    #[test]
    fn compaction_switches_to_a_new_vectors_file_and_never_renames_over_a_mapped_one() {
        let dir = tempfile::tempdir().unwrap();
        let names = || {
            let mut n: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            n.sort();
            n
        };
        let mut f = RowFiles::open(dir.path(), Some(4)).unwrap();
        let (a, b) = (vec_of(0.1, 4), vec_of(0.2, 4));
        f.append(&[(k(1), 0, &[], 0, &a), (k(2), 0, &[], 0, &b)])
            .unwrap();
        let before = f.vectors().unwrap();
        let vectors_before = std::fs::read(dir.path().join(VECTORS_FILE)).unwrap();
        f.kill(&[1]).unwrap();
        f.compact().unwrap();
        // Unix removes the old file at once; Windows keeps it while the reader maps it.
        let expected = if cfg!(unix) {
            &["codes.bin", "vectors.1.bin"][..]
        } else {
            &["codes.bin", "vectors.1.bin", "vectors.bin"][..]
        };
        assert_eq!(names(), expected);
        // The reader's mapping still shows the rows it was made with.
        assert!((before.row(0).unwrap()[0].to_f32() - 0.1).abs() < 1e-3);
        assert_eq!(f.vectors().unwrap().rows(), 1);
        drop(before);
        f.kill(&[2]).unwrap();
        f.compact().unwrap();
        assert_eq!(names(), ["codes.bin", "vectors.2.bin"]);
        drop(f);

        // A compaction cut off before its switch left a newer file nothing names, and a system
        // that refused a removal left an older one: both go at the next open, the named one stays.
        std::fs::write(dir.path().join("vectors.3.bin"), b"partial").unwrap();
        std::fs::write(dir.path().join(VECTORS_FILE), &vectors_before).unwrap();
        std::fs::write(dir.path().join("vectors.x.bin"), b"not ours").unwrap();
        let mut f = RowFiles::open(dir.path(), Some(4)).unwrap();
        assert_eq!(names(), ["codes.bin", "vectors.2.bin", "vectors.x.bin"]);
        assert_eq!(f.table().live(), 0);
        f.append(&[(k(3), 0, &[], 0, &a)]).unwrap();
        drop(f);
        let f = RowFiles::open(dir.path(), Some(4)).unwrap();
        assert_eq!(f.table().row_of(3), Some(0));
        assert!((f.vectors().unwrap().row(0).unwrap()[0].to_f32() - 0.1).abs() < 1e-3);
        drop(f);

        // A dochash from before numbered files must not pair these codes with a `vectors.bin`:
        // the codes file says it is of another version.
        let codes = std::fs::read(dir.path().join(CODES_FILE)).unwrap();
        assert_eq!(codes[8..12], LINKED_VERSION.to_le_bytes());
        assert_eq!(codes[16..20], 2u32.to_le_bytes());
        // The named file gone is damage, said as such, never a silent fresh start.
        std::fs::remove_file(dir.path().join("vectors.2.bin")).unwrap();
        assert!(matches!(
            RowFiles::open(dir.path(), Some(4)),
            Err(StoreError::Corrupt { .. })
        ));
        assert_eq!(std::fs::read(dir.path().join(CODES_FILE)).unwrap(), codes);
    }

    #[test]
    fn a_passage_s_units_live_and_die_together_and_a_cut_one_is_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = RowFiles::open(dir.path(), Some(2)).unwrap();
        let units = |id: u64, n: usize| (0..n).map(move |u| row_key(id, u, n).unwrap());
        let v = [0.6f32, 0.8];
        let rows: Vec<NewRow> = units(7, 3)
            .chain(units(8, 1))
            .chain(units(9, 2))
            .map(|key| (key, 0, &[][..], 0, &v[..]))
            .collect();
        f.append(&rows).unwrap();
        assert_eq!(f.table().rows_of(7), 0..3);
        assert_eq!(f.table().row_of(7), Some(2), "the last unit is the anchor");
        assert_eq!(f.table().rows_of(9), 4..6);
        assert!((0..6).all(|r| f.table().id(r) == [7, 7, 7, 8, 9, 9][r]));
        assert_eq!((f.table().live(), f.table().live_rows()), (3, 6));
        f.kill(&[7]).unwrap();
        assert_eq!((f.table().live(), f.table().live_rows()), (2, 3));
        assert_eq!(f.dead_rows(), 3);
        drop(f);
        // A crash cut passage 9's anchor: its first row is garbage, passage 8 is whole.
        for (name, width) in [(CODES_FILE, code_row_bytes(1)), (VECTORS_FILE, 4)] {
            let path = dir.path().join(name);
            let len = std::fs::metadata(&path).unwrap().len();
            OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(len - width)
                .unwrap();
        }
        let f = RowFiles::open(dir.path(), Some(2)).unwrap();
        assert_eq!((f.table().live(), f.table().live_rows()), (1, 1));
        assert_eq!(f.table().row_of(8), Some(3));
        assert_eq!(f.table().row_of(9), None);
        assert!(f.table().dead[4]);
        assert_eq!(f.table().last_id(), 9, "ids are never reused");
        let (n, _) = f.table().live_set();
        assert_eq!(n, 1);
        assert_eq!(row_key(1 << 56, 0, 1), None);
        assert_eq!(row_key(1, 2, 2), None);
    }

    #[test]
    fn a_torn_tail_and_garbage_rows_are_repaired_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = RowFiles::open(dir.path(), Some(2)).unwrap();
        f.append(&[
            (k(1), 0, &[], 0, &[0.6, 0.8]),
            (k(2), 0, &[], 0, &[0.8, 0.6]),
        ])
        .unwrap();
        drop(f);
        // Half a row more in the codes file, a whole garbage row (key 0) in both.
        let cpath = dir.path().join(CODES_FILE);
        let mut c = std::fs::read(&cpath).unwrap();
        c.extend_from_slice(&[0u8; 24]);
        c.extend_from_slice(&[9u8; 10]);
        std::fs::write(&cpath, c).unwrap();
        let vpath = dir.path().join(VECTORS_FILE);
        let mut v = std::fs::read(&vpath).unwrap();
        v.extend_from_slice(&[0u8; 4]);
        std::fs::write(&vpath, v).unwrap();
        let f = RowFiles::open(dir.path(), Some(2)).unwrap();
        assert_eq!((f.table().rows(), f.table().live()), (3, 2));
        assert!(f.table().dead[2]);
        drop(f);
        let f = RowFiles::open(dir.path(), Some(2)).unwrap();
        assert_eq!((f.table().rows(), f.table().live()), (3, 2));
    }

    #[test]
    fn damaged_headers_are_reported_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        drop(RowFiles::open(dir.path(), Some(2)).unwrap());
        let cpath = dir.path().join(CODES_FILE);
        let mut c = std::fs::read(&cpath).unwrap();
        c[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&cpath, c).unwrap();
        assert!(matches!(
            RowFiles::open(dir.path(), Some(2)),
            Err(StoreError::Corrupt { .. })
        ));
        // Another format version is not damage: it says so.
        let mut c = std::fs::read(&cpath).unwrap();
        c[12..16].copy_from_slice(&1u32.to_le_bytes());
        c[8..12].copy_from_slice(&7u32.to_le_bytes());
        std::fs::write(&cpath, c).unwrap();
        assert!(matches!(
            RowFiles::open(dir.path(), Some(2)),
            Err(StoreError::OtherVersion(_))
        ));
    }
}
