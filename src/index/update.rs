//! Bringing the index in line with the files on disk: walk, compare, re-embed what changed,
//! drop what vanished, then (re)fit the codes when the corpus has grown enough.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::corpus::{self, ChunkConfig, CorpusConfig, Format, Kind, Skipped, TokenCounter};
use crate::encoder::{BatchLimits, Encoder};

use super::coder::{Coder, embed_and_code};
use super::partition::Partition;
use super::reuse::Donor;
use super::store::{FileRecord, NewPassage, PassageRecord};
use super::{Index, IndexError};

/// Files are embedded in groups of about this many passages: enough for the encoder's length
/// bucketing to fill batches, small enough that progress and crash-safety stay fine-grained.
const GROUP_PASSAGES: usize = 256;

/// What happens during an update, for progress bars and status lines.
#[derive(Debug, Clone)]
pub enum Progress {
    /// The walk found `files` candidate files, of which `changed` need (re-)embedding.
    Planned { files: usize, changed: usize },
    /// `done` of `total` changed files are embedded; `passages` so far.
    Embedded {
        done: usize,
        total: usize,
        passages: usize,
    },
    /// Codes are being fitted on `passages` passages.
    Fitting { passages: usize },
    /// Everything is written; the fusion is being fitted to the corpus's questions. A caller
    /// that shows early results should show them all now.
    FittingFusion,
}

#[derive(Debug, Default, Clone)]
pub struct UpdateReport {
    pub files_seen: usize,
    pub files_embedded: usize,
    /// Files copied from [`UpdateOptions::reuse`] instead of embedded.
    pub files_reused: usize,
    pub files_unchanged: usize,
    pub files_removed: usize,
    pub passages_added: usize,
    pub passages_removed: usize,
    pub skipped: Vec<Skipped>,
    /// Files that were not valid UTF-8 and were read lossily.
    pub lossy: Vec<PathBuf>,
    /// Roots that could not be searched this time; their entries were left alone.
    pub unavailable: Vec<Unavailable>,
    /// Folders inside the roots that could not be listed; their entries were left alone.
    pub unreadable: Vec<Unreadable>,
    /// The code source was (re)fitted: its description.
    pub refit: Option<String>,
    /// The fusion was fitted to the corpus's questions (`super::fit`).
    pub fusion: Option<super::FusionChoice>,
    /// Fitting the fusion failed; the one before (or the default) stays.
    pub fusion_error: Option<String>,
}

/// A root whose files stay indexed although the walk could not see them: a drive that is not
/// mounted (its mount point is missing, or present and empty) must not wipe the index. `dochash
/// index --forget` is the way to drop such a root's entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub root: PathBuf,
    pub why: RootTrouble,
    /// Files of the root kept in the index.
    pub kept_files: usize,
}

/// A folder inside a root that the walk could not list: its indexed files are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub dir: PathBuf,
    /// Why, as the walk said it (e.g. `permission denied`).
    pub why: String,
    pub kept_files: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootTrouble {
    /// Gone, or no longer a folder or regular file; the message says which.
    Unusable(String),
    /// Exists but holds no file to index, while the index holds files from it.
    Empty,
}

impl UpdateReport {
    /// One line for each thing the user should know about this update, the same in `dochash
    /// index`, `dochash watch` and the status bar.
    pub fn notes(&self) -> Vec<String> {
        let mut out: Vec<String> = self.skipped.iter().map(|s| s.to_string()).collect();
        out.extend(self.lossy.iter().map(|p| {
            format!(
                "{} is not valid UTF-8; indexed with replacement characters",
                crate::pathwire::show(p)
            )
        }));
        for u in &self.unreadable {
            out.push(format!(
                "{}: cannot read it ({}); its {} indexed files are kept until it can be read",
                crate::pathwire::show(&u.dir),
                u.why,
                u.kept_files
            ));
        }
        for u in &self.unavailable {
            let why = match &u.why {
                RootTrouble::Unusable(m) => m.clone(),
                RootTrouble::Empty => "it is empty (a drive that is not mounted?)".into(),
            };
            let root = crate::pathwire::show(&u.root);
            out.push(format!(
                "{root}: {why}; its {} indexed files are kept until it is back (`dochash index --forget {root}` drops them)",
                u.kept_files,
            ));
        }
        if let Some(e) = &self.fusion_error {
            out.push(format!(
                "cannot fit the fusion to this corpus ({e}); the previous one serves"
            ));
        }
        out
    }
}

pub struct UpdateOptions {
    pub corpus: CorpusConfig,
    /// The code length; `None`: the index's own choice for its size
    /// ([`super::IndexMeta::code_bits`]).
    pub bits: Option<usize>,
    pub limits: BatchLimits,
    /// Set from another thread to stop between files; what was written stays (each file is
    /// atomic) and the next update carries on.
    pub cancel: Option<Arc<AtomicBool>>,
    /// An index made with the same encoder and passage settings (the serving one, when a
    /// training builds the next generation's index with the same encoder): files whose content
    /// it holds are copied from it instead of embedded. Ignored when its fingerprint differs
    /// from this index's, or when the code source codes token states (which only the encoder
    /// gives).
    pub reuse: Option<Donor>,
}

impl UpdateOptions {
    /// An update that keeps `meta`'s folder settings and code length, in default batches.
    pub fn keeping(meta: &super::IndexMeta, cancel: Option<Arc<AtomicBool>>) -> Self {
        Self {
            corpus: meta.corpus.to_config(),
            bits: None,
            limits: BatchLimits::default(),
            cancel,
            reuse: None,
        }
    }
}

struct Counter<'a>(&'a Encoder);

impl TokenCounter for Counter<'_> {
    fn count(&self, text: &str) -> usize {
        self.0.tokenizer().count(text)
    }
}

/// Passage sizing for an encoder: 200 tokens, or less when the model's window is smaller,
/// leaving room for `[CLS]` and `[SEP]`, packed across headings with the document's title
/// embedded, and matched on half-overlapping 64-token units. Chosen on three known-item dev
/// sets (docs/BENCHMARKS.md): smaller passages, more overlap and dropping the trail all scored
/// lower; packing across headings raised fused search on the two sets with headings and left
/// the third unchanged; units of 64 tokens raised semantic search by 7.6 and 31 points on two
/// sets and left the third unchanged, where smaller passages cost the lexical side.
pub fn chunk_config(encoder: &Encoder) -> ChunkConfig {
    let max = encoder.max_len().saturating_sub(2).clamp(8, 200);
    ChunkConfig {
        max_tokens: max,
        overlap_tokens: (max / 6).min(32),
        min_tokens: (max / 12).min(16),
        embed_headings: true,
        across_sections: true,
        unit_tokens: UNIT_TOKENS.min(max),
    }
}

/// The default [`ChunkConfig::unit_tokens`].
pub const UNIT_TOKENS: usize = 64;

struct Pending {
    path: PathBuf,
    record: FileRecord,
    /// Each passage with the texts its vectors are made of (its units, or its text).
    passages: Vec<(PassageRecord, Vec<String>)>,
}

/// Room an update of `text` bytes of notes in `files` files may take: the text again in sled
/// (with its log) and in the word index, a row per unit (about one per 128 bytes of text, as
/// units are 64-token windows that overlap by half) of an f16 vector and a code, and slack for
/// sled's next log segment and the word index's next segment.
fn room_needed(text: u64, files: u64, dim: usize) -> u64 {
    const SLACK: u64 = 8 << 20;
    let rows = text / 128 + files;
    text.saturating_mul(3)
        .saturating_add(rows.saturating_mul(2 * dim as u64 + 32))
        .saturating_add(SLACK)
}

pub(super) fn update(
    index: &mut Index,
    encoder: &Encoder,
    opts: &UpdateOptions,
    progress: &mut dyn FnMut(Progress, &Index),
) -> Result<UpdateReport, IndexError> {
    let mut needed = 0;
    let dir = index.dir.clone();
    update_within(index, encoder, opts, progress, &mut needed).map_err(|e| {
        if e.is_disk_full() && !matches!(e, IndexError::DiskFull { .. }) {
            IndexError::DiskFull {
                free: crate::fsx::free_space(&dir).unwrap_or(0),
                path: dir,
                needed,
            }
        } else {
            e
        }
    })
}

/// The update; `needed` is set to the room it expects to take once it knows what changed.
fn update_within(
    index: &mut Index,
    encoder: &Encoder,
    opts: &UpdateOptions,
    progress: &mut dyn FnMut(Progress, &Index),
    needed: &mut u64,
) -> Result<UpdateReport, IndexError> {
    let mut report = UpdateReport::default();
    let stored = index.store.files()?;
    let held = |root: &Path| {
        stored
            .iter()
            .filter(|(p, r)| r.root.starts_with(root) || p.starts_with(root))
            .count()
    };
    // A root that is gone, or is no longer a folder or a regular file (a FIFO cannot be
    // walked), keeps its entries.
    let mut present: Vec<PathBuf> = Vec::new();
    for r in &index.meta.roots {
        match super::check_root(r) {
            Ok(_) => present.push(r.clone()),
            Err(e) => report.unavailable.push(Unavailable {
                root: r.clone(),
                why: RootTrouble::Unusable(match e {
                    IndexError::Root { msg, .. } => msg,
                    other => other.to_string(),
                }),
                kept_files: held(r),
            }),
        }
    }

    let walk = if present.is_empty() {
        corpus::Walk::default()
    } else {
        corpus::walk(&present, &opts.corpus)?
    };
    // A root with nothing in it while the index holds files from it looks like the empty mount
    // point of a drive that is not mounted: keep its entries too.
    present.retain(|r| {
        let found = walk
            .files
            .iter()
            .any(|f| f.root.starts_with(r) || f.path.starts_with(r));
        let kept_files = held(r);
        if found || kept_files == 0 {
            return true;
        }
        report.unavailable.push(Unavailable {
            root: r.clone(),
            why: RootTrouble::Empty,
            kept_files,
        });
        false
    });
    report.files_seen = walk.files.len();
    // A folder the walk could not list (its permissions changed, say) hides its files; they are
    // kept, as for a root that is not there, rather than dropped as deleted.
    let (unreadable, skipped): (Vec<_>, Vec<_>) = walk
        .skipped
        .into_iter()
        .partition(|s| matches!(s.reason, corpus::SkipReason::Unreadable(_)) && s.path.is_dir());
    report.skipped = skipped;
    let unreadable: Vec<(PathBuf, String)> = unreadable
        .into_iter()
        .map(|s| {
            let why = match s.reason {
                corpus::SkipReason::Unreadable(why) => why,
                other => other.to_string(),
            };
            (s.path, why)
        })
        .collect();

    let seen: HashSet<&Path> = walk.files.iter().map(|f| f.path.as_path()).collect();
    let stored_map: HashMap<&Path, &FileRecord> =
        stored.iter().map(|(p, r)| (p.as_path(), r)).collect();
    let changed: Vec<&corpus::SourceFile> = walk
        .files
        .iter()
        .filter(|f| match stored_map.get(f.path.as_path()) {
            Some(r) => r.size != f.size || r.mtime_ns != f.mtime_ns || r.unread_meta,
            None => true,
        })
        .collect();
    report.files_unchanged = walk.files.len() - changed.len();
    // A disk without room for the update stops it before it writes anything, rather than in
    // the middle (where it would cost a repair at the next open).
    // Files of the same size whose date moved (a checkout, a touch) are most often unchanged;
    // each file's change checks its own room anyway (see `Store::replace_file`).
    let text: u64 = changed
        .iter()
        .filter(|f| {
            stored_map
                .get(f.path.as_path())
                .is_none_or(|r| r.size != f.size)
        })
        .map(|f| f.size)
        .sum();
    *needed = room_needed(text, changed.len() as u64, index.meta.fingerprint.dim);
    if let Some(free) = crate::fsx::free_space(&index.dir)
        && text > 0
        && free < *needed
    {
        return Err(IndexError::DiskFull {
            path: index.dir.clone(),
            needed: *needed,
            free,
        });
    }
    // Files in the index under a present root that the walk did not find are gone (or now
    // excluded): remove them. Files under unavailable roots stay until the root is forgotten,
    // and files under unreadable folders until they can be read.
    let mut kept = vec![0usize; unreadable.len()];
    for (path, rec) in &stored {
        let under_present = present
            .iter()
            .any(|r| rec.root.starts_with(r) || path.starts_with(r));
        let under_any = index
            .meta
            .roots
            .iter()
            .any(|r| rec.root.starts_with(r) || path.starts_with(r));
        if let Some(k) = unreadable.iter().position(|(d, _)| path.starts_with(d)) {
            kept[k] += 1;
            continue;
        }
        if (under_present || !under_any) && !seen.contains(path.as_path()) {
            index.store.replace_file(path, None, &[], 0)?;
            report.files_removed += 1;
            report.passages_removed += rec.passages.len();
        }
    }

    for ((dir, why), kept_files) in unreadable.into_iter().zip(kept) {
        report.unreadable.push(Unreadable {
            dir,
            why,
            kept_files,
        });
    }

    progress(
        Progress::Planned {
            files: walk.files.len(),
            changed: changed.len(),
        },
        index,
    );

    let chunking = index.meta.fingerprint.chunking;
    let reuse = opts.reuse.as_ref().filter(|d| {
        d.fingerprint() == &index.meta.fingerprint
            && index.coder.as_ref().is_none_or(Coder::codes_vectors)
    });
    // Words of copied files added to the word index since its last commit.
    let mut reused_passages = 0;
    let counter = Counter(encoder);
    let mut group: Vec<Pending> = Vec::new();
    let mut group_passages = 0;
    let mut done = 0;
    let cancelled = || {
        opts.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Acquire))
    };
    for f in &changed {
        if cancelled() {
            if reused_passages > 0 {
                index.store.commit_words()?;
            }
            return Ok(report);
        }
        let doc = match corpus::read_document(&f.path, &opts.corpus) {
            Ok(d) => d,
            Err(skip) => {
                // Unreadable now (deleted mid-run, permissions, turned binary): whatever was
                // indexed for it is no longer true.
                if stored_map.contains_key(f.path.as_path()) {
                    index.store.replace_file(&f.path, None, &[], 0)?;
                    report.files_removed += 1;
                }
                report.skipped.push(skip);
                done += 1;
                continue;
            }
        };
        let hash = doc.hash;
        let format = Format::from_path(&f.path);
        let kind = Kind::from_path(&f.path);
        let mut meta = corpus::note_meta(&doc, format);
        if kind != Kind::Text {
            // A page's `#` words are not tags a person gave it; a title is a title.
            meta = corpus::NoteMeta {
                title: meta.title,
                ..Default::default()
            };
        }
        let title = meta.title.clone();
        let names: Vec<String> = meta.aliases.iter().chain(&meta.tags).cloned().collect();
        let record = FileRecord {
            root: f.root.clone(),
            size: f.size,
            mtime_ns: f.mtime_ns,
            hash,
            passages: Vec::new(),
            lossy: doc.lossy,
            tags: meta.tags,
            date: meta.date,
            unread_meta: false,
        };
        if doc.lossy {
            report.lossy.push(f.path.clone());
        }
        if let Some(old) = stored_map.get(f.path.as_path())
            && old.hash == hash
        {
            // Touched but not changed: keep the vectors, record the new mtime.
            let mut rec = record;
            rec.passages = old.passages.clone();
            index.store.touch_file(&f.path, &rec)?;
            report.files_unchanged += 1;
            done += 1;
            continue;
        }
        if let Some(copied) = reuse.and_then(|d| d.file(&f.path, &hash)) {
            let stored = index.replace_coded(&f.path, record, copied)?;
            report.files_reused += 1;
            report.passages_added += stored;
            report.passages_removed += stored_map
                .get(f.path.as_path())
                .map_or(0, |r| r.passages.len());
            reused_passages += stored;
            done += 1;
            if reused_passages >= GROUP_PASSAGES {
                index.store.commit_words()?;
                reused_passages = 0;
                embedded(progress, index, done, changed.len(), &report);
            }
            continue;
        }
        let passages = corpus::split_titled(&doc, format, title.as_deref(), &counter, &chunking);
        let passages: Vec<(PassageRecord, Vec<String>)> = passages
            .into_iter()
            .map(|p| {
                let body = doc.text.get(p.bytes.clone()).unwrap_or("").to_string();
                let links = match kind {
                    Kind::Text => corpus::links_in(&body, format),
                    _ => Vec::new(),
                };
                (
                    PassageRecord {
                        path: f.path.clone(),
                        start_byte: p.bytes.start,
                        end_byte: p.bytes.end,
                        start_line: *p.lines.start(),
                        end_line: *p.lines.end(),
                        headings: p.headings,
                        context: p.context,
                        text: body,
                        units: p
                            .unit_lines
                            .iter()
                            .map(|l| (*l.start(), *l.end()))
                            .collect(),
                        page: if kind == Kind::Pdf {
                            corpus::page_of(&doc.text, p.bytes.start)
                        } else {
                            0
                        },
                        names: names.clone(),
                        links,
                    },
                    if p.units.is_empty() {
                        vec![p.text]
                    } else {
                        p.units
                    },
                )
            })
            .collect();
        group_passages += passages.len();
        group.push(Pending {
            path: f.path.clone(),
            record,
            passages,
        });
        if group_passages >= GROUP_PASSAGES {
            done += group.len();
            flush_group(index, encoder, opts, &mut group, &mut report)?;
            group_passages = 0;
            embedded(progress, index, done, changed.len(), &report);
        }
    }
    if reused_passages > 0 {
        index.store.commit_words()?;
    }
    if cancelled() {
        return Ok(report);
    }
    done += group.len();
    flush_group(index, encoder, opts, &mut group, &mut report)?;
    embedded(progress, index, done, changed.len(), &report);

    report.refit = refit(index, opts.bits, progress)?;
    if super::fit::due(index) {
        progress(Progress::FittingFusion, index);
        let never = AtomicBool::new(false);
        let cancel = opts.cancel.as_deref().unwrap_or(&never);
        match index.fit_and_keep_fusion(encoder, cancel) {
            Ok(choice) => report.fusion = choice,
            Err(e) if e.is_storage() => return Err(e),
            // The index is whole without it: the fusion before serves, and the failure is
            // kept as this size's answer, so that the next updates do not try again at once.
            Err(e) => {
                report.fusion_error = Some(e.to_string());
                let failed = super::fit::failed(index, &e.to_string());
                index.keep_fusion(failed)?;
            }
        }
    }
    index.store.compact_if_worth_it()?;
    index.store.flush()?;
    Ok(report)
}

fn embedded(
    progress: &mut dyn FnMut(Progress, &Index),
    index: &Index,
    done: usize,
    total: usize,
    report: &UpdateReport,
) {
    progress(
        Progress::Embedded {
            done,
            total,
            passages: report.passages_added,
        },
        index,
    );
}

fn flush_group(
    index: &mut Index,
    encoder: &Encoder,
    opts: &UpdateOptions,
    group: &mut Vec<Pending>,
    report: &mut UpdateReport,
) -> Result<(), IndexError> {
    if group.is_empty() {
        return Ok(());
    }
    let texts: Vec<&str> = group
        .iter()
        .flat_map(|p| {
            p.passages
                .iter()
                .flat_map(|(_, t)| t.iter().map(String::as_str))
        })
        .collect();
    let (emb, codes) = embed_and_code(
        encoder,
        index.coder.as_ref(),
        &texts,
        crate::encoder::Role::Document,
        opts.limits,
    )?;
    // Every unit of the batch placed in its list at once, beside its code.
    let lists = match (&codes, &index.partition) {
        (Some(_), Some(part)) => Some(part.assign(&emb.data)),
        _ => None,
    };
    let generation = index.code_generation();
    let words = index.coder.as_ref().map(|c| c.words()).unwrap_or(0);
    let mut row = 0;
    for p in group.drain(..) {
        let new: Vec<NewPassage> = p
            .passages
            .into_iter()
            .map(|(record, units)| {
                let rows = row..row + units.len();
                row = rows.end;
                NewPassage {
                    record,
                    vector: rows.clone().flat_map(|i| emb.row(i).to_vec()).collect(),
                    code: codes
                        .as_ref()
                        .map(|c| c[rows.start * words..rows.end * words].to_vec()),
                    lists: lists.as_ref().map(|l| l[rows].to_vec()),
                }
            })
            .collect();
        let old = index
            .store
            .file(&p.path)?
            .map(|r| r.passages.len())
            .unwrap_or(0);
        index
            .store
            .replace_file(&p.path, Some(p.record), &new, generation)?;
        report.files_embedded += 1;
        report.passages_added += new.len();
        report.passages_removed += old;
    }
    index.store.commit_words()?;
    Ok(())
}

/// Refits the code source when there is none, when the code length changed (`--bits`, or the
/// size crossed [`super::LARGE_INDEX_PASSAGES`]), when the corpus has at least doubled since the
/// last fit, or when random hyperplanes can now give way to ITQ.
pub(super) fn refit(
    index: &mut Index,
    bits: Option<usize>,
    progress: &mut dyn FnMut(Progress, &Index),
) -> Result<Option<String>, IndexError> {
    let done = maybe_refit(index, bits, progress)?;
    recode_stale(index)?;
    Ok(done)
}

fn maybe_refit(
    index: &mut Index,
    bits: Option<usize>,
    progress: &mut dyn FnMut(Progress, &Index),
) -> Result<Option<String>, IndexError> {
    let n = index.store.passage_count();
    // The filter scans vectors (a passage has one per unit): their number sizes the code.
    let bits = bits.unwrap_or_else(|| index.meta.code_bits(index.store.rows().live_rows()));
    // With a single passage there is nothing to fit, and exact search costs nothing.
    if n < 2 {
        return Ok(None);
    }
    let dim = index.meta.fingerprint.dim;
    let live = index.store.rows().live_rows();
    // Grown large enough to be partitioned (see `fit_partition`) and not yet.
    let partition_due = index.partition.is_none() && live >= index.partition_sizing.from_rows;
    // A learned head of vectors keeps its codes, but an index grown large enough still gets
    // its lists: the head's rows are coded again under the same head, each with its list.
    if let (Some(meta), Some(coder)) = (&index.meta.code, &index.coder)
        && coder.is_learned()
        && coder.codes_vectors()
        && meta.bits == bits
        && partition_due
    {
        let (coder, fitted_on) = (coder.clone(), meta.fitted_on);
        progress(Progress::Fitting { passages: n }, index);
        let (_, vectors) = index.store.sample_vectors(FIT_SAMPLE)?;
        let Some(partition) = fit_partition(&vectors, dim, live, index.partition_sizing)? else {
            return Ok(None);
        };
        drop(vectors);
        let desc = format!(
            "the {} head's {live} vectors in {} lists",
            coder.name(),
            partition.lists()
        );
        let generation = index.next_code_generation();
        index.set_coder(coder, generation, fitted_on, Some(Arc::new(partition)))?;
        recode_all(index)?;
        return Ok(Some(desc));
    }
    let due = match (&index.meta.code, &index.coder) {
        // A learned head is only replaced for another code length; growth is the retraining
        // rule's business.
        (Some(meta), Some(coder)) if coder.is_learned() => meta.bits != bits,
        (Some(meta), Some(coder)) => {
            meta.bits != bits
                || n >= meta.fitted_on.saturating_mul(2)
                || partition_due
                || (coder.name() == "lsh"
                    && n >= bits * super::coder::MIN_PASSAGES_PER_BIT
                    && bits <= dim)
        }
        _ => true,
    };
    if !due {
        return Ok(None);
    }
    progress(Progress::Fitting { passages: n }, index);
    let (ids, vectors) = index.store.sample_vectors(FIT_SAMPLE)?;
    if ids.len() < 2 {
        return Ok(None);
    }
    let coder = Coder::fit(&vectors, ids.len(), dim, bits)?;
    let partition = fit_partition(&vectors, dim, live, index.partition_sizing)?;
    drop(vectors);
    let desc = format!(
        "{} {}-bit codes fitted on {} passages ({} vectors{}){}",
        coder.name(),
        bits,
        n,
        live,
        if ids.len() < live {
            format!(", a sample of {}", ids.len())
        } else {
            String::new()
        },
        match &partition {
            Some(p) => format!(", the vectors in {} lists", p.lists()),
            None => String::new(),
        }
    );
    // The coder first, then its codes: a crash in between leaves codes of the old generation,
    // which are stale (scored exactly) until `recode_stale` catches them up.
    let generation = index.next_code_generation();
    index.set_coder(coder, generation, n, partition.map(Arc::new))?;
    crate::failpoint::hit("refit.coder_saved");
    recode_all(index)?;
    Ok(Some(desc))
}

/// Codes every row (dead ones too, so row numbers stay) with the current coder, where it codes
/// vectors.
fn recode_all(index: &mut Index) -> Result<(), IndexError> {
    let (Some(coder), Some(meta)) = (&index.coder, &index.meta.code) else {
        return Ok(());
    };
    let words = coder.words();
    let rows = index.store.rows().rows();
    let dim = index.meta.fingerprint.dim;
    let partition = index.partition.as_deref();
    let Some((codes, lists)) = code_rows(coder, partition, &index.store, dim, 0..rows)? else {
        return Ok(());
    };
    let generation = meta.generation;
    index
        .store
        .rewrite_codes(generation, words, &codes, lists.as_deref())?;
    Ok(())
}

/// Vectors a code fit reads at most. ITQ's rotation is settled well before this (a 384-wide
/// covariance from 100,000 rows), and its f32 copy stays at 150 MB however large the index.
const FIT_SAMPLE: usize = 100_000;

/// Rows converted to f32 and coded at a time, so that coding every row of a large index holds
/// one chunk, not the index, as f32.
const CODE_CHUNK: usize = 16_384;

/// The codes of `rows` (in the vector file), in their order, with their lists where there is
/// a `partition`; a row without a vector (a hole left by a crash) codes as zeros. `None` for a
/// source that needs token states.
fn code_rows(
    coder: &Coder,
    partition: Option<&Partition>,
    store: &super::store::Store,
    dim: usize,
    rows: impl ExactSizeIterator<Item = usize>,
) -> Result<Option<CodedRows>, IndexError> {
    let mut lists = partition.map(|_| Vec::with_capacity(rows.len()));
    let mut codes = Vec::with_capacity(rows.len() * coder.words());
    let mut data = Vec::with_capacity(CODE_CHUNK.min(rows.len()) * dim);
    let mut rows = rows.peekable();
    while rows.peek().is_some() {
        // A mapping per chunk: the pages read are let go with it, so a pass over every
        // vector does not keep the whole file resident in this process.
        let vectors = store.vectors()?;
        data.clear();
        let mut n = 0;
        for r in rows.by_ref().take(CODE_CHUNK) {
            match vectors.row(r) {
                Some(v) => data.extend(v.iter().map(|h| h.to_f32())),
                None => data.extend(std::iter::repeat_n(0.0, dim)),
            }
            n += 1;
        }
        match coder.encode_vectors(&data, n)? {
            Some(c) => codes.extend_from_slice(&c),
            None => return Ok(None),
        }
        if let (Some(p), Some(l)) = (partition, lists.as_mut()) {
            l.extend(p.assign(&data));
        }
    }
    Ok(Some((codes, lists)))
}

/// Rows' codes, and their lists where the index has a partition.
type CodedRows = (Vec<u64>, Option<Vec<u32>>);

/// Live rows from which an index's vectors are partitioned into lists, so that a query's first
/// stage scans the lists near it rather than every code (see [`super::partition`]). Below it
/// the whole scan costs little next to the rest of a query (an eighth of it at 500,000 rows,
/// over half at 5 M; docs/BENCHMARKS.md).
pub const PARTITION_ROWS: usize = 1 << 20;

/// Rows a list holds on average, which sets the number of lists: finer lists let a query scan
/// a smaller share of the rows for the same recall, and cost more to rank (a query scores
/// every list's centroid). See docs/BENCHMARKS.md for the measurements behind it.
pub(crate) const ROWS_PER_LIST: usize = 1024;

/// When a code fit partitions the vectors: from `from_rows` live rows ([`PARTITION_ROWS`]),
/// into lists of about `rows_per_list` rows ([`ROWS_PER_LIST`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PartitionSizing {
    pub from_rows: usize,
    pub rows_per_list: usize,
}

impl Default for PartitionSizing {
    fn default() -> Self {
        Self {
            from_rows: PARTITION_ROWS,
            rows_per_list: ROWS_PER_LIST,
        }
    }
}

/// The partition for an index of `live` rows, fitted on the code fit's sample; `None` below
/// `sizing.from_rows`.
fn fit_partition(
    sample: &[f32],
    dim: usize,
    live: usize,
    sizing: PartitionSizing,
) -> Result<Option<Partition>, IndexError> {
    if live < sizing.from_rows || dim == 0 || sample.len() < dim {
        return Ok(None);
    }
    // Two levels of about √(lists) each (see `Partition`).
    let side = ((live / sizing.rows_per_list.max(1)) as f64).sqrt().ceil() as usize;
    let n = sample.len() / dim;
    let coarse = side.clamp(1, n.max(1));
    Partition::fit(sample, dim, coarse, side.max(1), PARTITION_ROUNDS, 0x1157)
        .map(Some)
        .map_err(|e| IndexError::Coder(super::CoderError::Fit(e.to_string())))
}

/// Rounds of k-means at each level of a partition.
const PARTITION_ROUNDS: usize = 8;

/// Brings stale codes — passages stored before any coder existed, or left behind by a refit a
/// crash interrupted — under the current coder. The DHIM head codes token states, which are not
/// stored: its stale passages stay exactly scored until their files change.
fn recode_stale(index: &mut Index) -> Result<(), IndexError> {
    let (Some(coder), Some(meta)) = (&index.coder, &index.meta.code) else {
        return Ok(());
    };
    if !coder.codes_vectors() {
        return Ok(());
    }
    let t = index.store.rows();
    if t.words != coder.words() {
        return recode_all(index);
    }
    let stale: Vec<usize> = (0..t.rows())
        .filter(|&r| !t.dead[r] && t.gens[r] != meta.generation)
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    let dim = index.meta.fingerprint.dim;
    let partition = index.partition.as_deref();
    let Some((codes, lists)) =
        code_rows(coder, partition, &index.store, dim, stale.iter().copied())?
    else {
        return Ok(());
    };
    let words = coder.words();
    let generation = meta.generation;
    let items: Vec<(usize, &[u64], u32)> = stale
        .iter()
        .enumerate()
        .map(|(i, &r)| {
            let list = lists.as_ref().map_or(0, |l| l[i]);
            (r, &codes[i * words..(i + 1) * words], list)
        })
        .collect();
    index.store.put_codes(generation, &items)?;
    Ok(())
}

/// A passage of the corpus as training reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusPassage {
    pub path: PathBuf,
    /// As the encoder sees it (heading trail included).
    pub text: String,
    /// The innermost heading where the passage starts, if any.
    pub title: Option<String>,
    /// The passage's own text, without the trail.
    pub body: String,
    /// Its first and last line in the file, 1-based.
    pub lines: (u32, u32),
}

/// Passages of the index's roots as the encoder sees them (heading trail included), with
/// their files: what training learns from. Read from the files, like an update, so it needs
/// nothing from the store. At most `max` passages: whole files in a fixed pseudo-random order
/// until the sample is full, so that training's memory and time do not grow with the corpus;
/// each file's passages stay together, in file order.
pub fn corpus_passages(
    meta: &super::IndexMeta,
    encoder: &Encoder,
    cancel: &AtomicBool,
    max: usize,
) -> Result<Vec<CorpusPassage>, IndexError> {
    let present: Vec<PathBuf> = meta.roots.iter().filter(|r| r.exists()).cloned().collect();
    if present.is_empty() {
        return Ok(Vec::new());
    }
    let cfg = meta.corpus.to_config();
    let mut files = corpus::walk(&present, &cfg)?.files;
    crate::rng::shuffle(&mut files, &mut crate::rng::SplitMix64::new(0x5a3b));
    // Training learns on passages; the units semantic search matches are not needed here.
    let chunking = ChunkConfig {
        unit_tokens: 0,
        ..meta.fingerprint.chunking
    };
    let counter = Counter(encoder);
    let mut picked: Vec<(PathBuf, Vec<CorpusPassage>)> = Vec::new();
    let mut n = 0;
    for f in &files {
        if cancel.load(Ordering::Acquire) || n >= max {
            break;
        }
        let Ok(doc) = corpus::read_document(&f.path, &cfg) else {
            continue;
        };
        let texts: Vec<CorpusPassage> =
            corpus::split_as(&doc, Format::from_path(&f.path), &counter, &chunking)
                .into_iter()
                .take(max - n)
                .map(|p| CorpusPassage {
                    path: f.path.clone(),
                    body: doc
                        .text
                        .get(p.bytes.clone())
                        .unwrap_or_default()
                        .to_string(),
                    title: p.headings.last().cloned(),
                    lines: (*p.lines.start(), *p.lines.end()),
                    text: p.text,
                })
                .collect();
        n += texts.len();
        picked.push((f.path.clone(), texts));
    }
    picked.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(picked.into_iter().flat_map(|(_, ts)| ts).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny model and a folder `notes` of `files` notes of `parts` headed parts each, in `dir`.
    fn tiny_notes(dir: &Path, files: usize, parts: usize) -> (Encoder, PathBuf) {
        let model = dir.join("model");
        crate::encoder::write_tiny_model(&model, 5).unwrap();
        let enc = Encoder::load(&model, &crate::encoder::LoadOptions::default()).unwrap();
        let notes = dir.join("notes");
        std::fs::create_dir_all(&notes).unwrap();
        for f in 0..files {
            let text: String = (0..parts)
                .map(|s| format!("# Part {s}\n\nwords of file {f} part {s}\n\n"))
                .collect();
            std::fs::write(notes.join(format!("n{f:02}.md")), text).unwrap();
        }
        (enc, notes)
    }

    /// The fingerprint an update with the tiny encoder `enc` stamps its index with.
    fn tiny_fingerprint(enc: &Encoder) -> super::super::Fingerprint {
        super::super::Fingerprint {
            model_id: "tiny".into(),
            dim: enc.dim(),
            chunking: chunk_config(enc),
            max_len: enc.max_len(),
            precision: enc.precision(),
            ..super::super::Fingerprint::synthetic(enc.dim())
        }
    }

    #[test]
    fn training_reads_a_bounded_sample_of_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let (enc, notes) = tiny_notes(dir.path(), 12, 5);
        let meta = super::super::IndexMeta {
            fingerprint: super::super::Fingerprint {
                schema: 0,
                model_id: String::new(),
                model_stamp: String::new(),
                dim: enc.dim(),
                pooling: "mean".into(),
                // One passage per section, so the counts below are easy to follow.
                chunking: ChunkConfig {
                    across_sections: false,
                    ..chunk_config(&enc)
                },
                max_len: enc.max_len(),
                precision: enc.precision(),
            },
            roots: vec![crate::fsx::canonicalize(&notes).unwrap()],
            code: None,
            corpus: Default::default(),
            fusion: None,
        };
        let stop = AtomicBool::new(false);
        assert_eq!(
            corpus_passages(&meta, &enc, &stop, usize::MAX)
                .unwrap()
                .len(),
            60
        );
        let sample = corpus_passages(&meta, &enc, &stop, 23).unwrap();
        assert_eq!(sample.len(), 23);
        // Grouped by file, in path order, and the same sample every time.
        let files: Vec<&PathBuf> = sample.iter().map(|p| &p.path).collect();
        assert!(files.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(corpus_passages(&meta, &enc, &stop, 23).unwrap(), sample);
    }

    /// A file and its passages as (text, unit vectors).
    type Contents = (PathBuf, Vec<(String, Vec<half::f16>)>);

    /// Each file's passages in file order, for comparing indexes.
    fn contents(index: &Index) -> Vec<Contents> {
        let vectors = index.store().vectors().unwrap();
        let mut files = index.store().files().unwrap();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        files
            .into_iter()
            .map(|(path, rec)| {
                let passages = rec
                    .passages
                    .iter()
                    .map(|&id| {
                        let text = index.store().passage(id).unwrap().unwrap().text;
                        let rows = index.store().rows().rows_of(id);
                        assert!(!rows.is_empty());
                        let v = rows
                            .flat_map(|r| vectors.row(r).unwrap().to_vec())
                            .collect();
                        (text, v)
                    })
                    .collect();
                (path, passages)
            })
            .collect()
    }

    /// A vault's links, names and pages as the index keeps them with each passage.
    #[test]
    fn passages_keep_their_links_and_their_notes_names() {
        use crate::corpus::LinkTarget;
        let dir = tempfile::tempdir().unwrap();
        let (enc, notes) = tiny_notes(dir.path(), 0, 0);
        std::fs::write(
            notes.join("hub.md"),
            "---\naliases: [Central]\ntags: [garden]\n---\n# Hub\n\nSee [[Moss|the moss note]] \
             and [watering](care/water.md#schedule), or [[Moss#Shade]] again.\n",
        )
        .unwrap();
        let fp = tiny_fingerprint(&enc);
        let (mut index, _) = Index::open(&dir.path().join("index"), &fp).unwrap();
        index.add_roots(std::slice::from_ref(&notes)).unwrap();
        let opts = UpdateOptions::keeping(index.meta(), None);
        index.update(&enc, &opts, &mut |_, _| {}).unwrap();
        let files = index.store().files().unwrap();
        let id = files[0].1.passages[0];
        let p = index.store().passage(id).unwrap().unwrap();
        assert_eq!(
            p.links,
            [
                LinkTarget::Note("Moss".into(), None),
                LinkTarget::Path("care/water.md".into(), Some("schedule".into())),
                LinkTarget::Note("Moss".into(), Some("Shade".into())),
            ]
        );
        assert_eq!(p.names, ["Central", "garden"]);
        assert_eq!(p.page, 0);
    }

    #[test]
    fn an_update_copies_unchanged_files_from_an_index_of_the_same_encoder() {
        let dir = tempfile::tempdir().unwrap();
        let (enc, notes) = tiny_notes(dir.path(), 6, 4);
        let fp = tiny_fingerprint(&enc);
        let fill = |name: &str, fp: &super::super::Fingerprint, reuse: Option<Donor>| {
            let (mut index, _) = Index::open(&dir.path().join(name), fp).unwrap();
            index.add_roots(std::slice::from_ref(&notes)).unwrap();
            let opts = UpdateOptions {
                reuse,
                ..UpdateOptions::keeping(index.meta(), None)
            };
            let report = index.update(&enc, &opts, &mut |_, _| {}).unwrap();
            (index, report)
        };
        let (serving, _) = fill("serving", &fp, None);
        // Changed after the serving index read it: its stored vectors are no longer its own.
        std::fs::write(
            notes.join("n00.md"),
            "# New\n\nentirely different words now\n",
        )
        .unwrap();

        let (copied, report) = fill("copied", &fp, Some(serving.donor().unwrap()));
        assert_eq!((report.files_reused, report.files_embedded), (5, 1));
        let (embedded, report) = fill("embedded", &fp, None);
        assert_eq!((report.files_reused, report.files_embedded), (0, 6));
        // The same passages, the same vectors bit for bit, the same codes and words to search.
        assert_eq!(contents(&copied), contents(&embedded));
        assert_eq!(
            copied.store().passage_count(),
            embedded.store().passage_count()
        );
        let (a, b) = (copied.searcher().unwrap(), embedded.searcher().unwrap());
        let params = super::super::SearchParams::default();
        let ids = |s: &super::super::Searcher| -> Vec<(PathBuf, u32, u32)> {
            let hits = s.query(&enc, "words of file 3 part 2", &params).unwrap();
            assert!(!hits.is_empty());
            hits.into_iter()
                .map(|h| (h.path, h.line, h.end_line))
                .collect()
        };
        assert_eq!(ids(&a), ids(&b));
        assert_eq!(
            copied.meta().code.as_ref().map(|c| c.bits),
            embedded.meta().code.as_ref().map(|c| c.bits)
        );

        // An index of another encoder (here: other weights) copies nothing.
        let other = super::super::Fingerprint {
            model_stamp: "other weights".into(),
            ..fp.clone()
        };
        let (_, report) = fill("other", &other, Some(serving.donor().unwrap()));
        assert_eq!((report.files_reused, report.files_embedded), (0, 6));
    }

    #[test]
    fn an_update_places_the_units_it_embeds_in_their_lists() {
        let dir = tempfile::tempdir().unwrap();
        let (enc, notes) = tiny_notes(dir.path(), 12, 5);
        let fp = tiny_fingerprint(&enc);
        let (mut index, _) = Index::open(&dir.path().join("index"), &fp).unwrap();
        // Lists of about a row each, so that this small corpus has several.
        index.partition_from(0, 1);
        index.add_roots(std::slice::from_ref(&notes)).unwrap();
        let opts = UpdateOptions::keeping(index.meta(), None);
        index.update(&enc, &opts, &mut |_, _| {}).unwrap();
        assert!(index.partition().is_some_and(|p| p.lists() > 1));
        // Files embedded once the lists exist: their units are placed as they are stored.
        let before = index.store().rows().rows();
        for (i, words) in [
            "other words entirely",
            "a recipe for bread",
            "the tide tables",
        ]
        .iter()
        .enumerate()
        {
            let text = format!("# Changed {i}\n\n{words}\n\n## More\n\n{words} again\n");
            std::fs::write(notes.join(format!("n0{i}.md")), text).unwrap();
        }
        let report = index.update(&enc, &opts, &mut |_, _| {}).unwrap();
        assert_eq!(report.files_embedded, 3);
        let table = index.store().rows();
        let vectors = index.store().vectors().unwrap();
        let fresh: Vec<usize> = (before..table.rows()).filter(|&r| !table.dead[r]).collect();
        let data: Vec<f32> = fresh
            .iter()
            .flat_map(|&r| vectors.row(r).unwrap().iter().map(|h| h.to_f32()))
            .collect();
        let assigned = index.partition().unwrap().assign(&data);
        // Not all in the list a row without one would show.
        assert!(assigned.iter().any(|&l| l != 0), "{assigned:?}");
        let stored: Vec<u32> = fresh.iter().map(|&r| table.lists[r]).collect();
        assert_eq!(stored, assigned);
    }
}
