//! The index owner: one process that holds the index open, keeps it up to date in the
//! background (initial indexing, then a file watcher), and answers queries at any time.
//!
//! sled allows one process per database, and indexing can take minutes, so the owner splits the
//! work: a single worker thread holds the mutable [`Index`] and runs every update; readers use a
//! clone of the store and an immutable [`Searcher`] snapshot that the worker swaps in after each
//! batch of changes. A query therefore never waits for indexing, and never sees a half-written
//! file (each file's passages change in one transaction).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::encoder::{BatchLimits, DeviceSpec, Encoder, LoadOptions, Pooling};
use crate::index::{
    DEFAULT_BITS, Hit, Index, IndexMeta, Progress, SearchParams, Searcher, Store, UpdateOptions,
};
use crate::model::{self, FetchOptions, ModelSpec};

/// How long file events are collected before an update runs: long enough to merge an editor's
/// write-temp-then-rename and a `git checkout` burst, short enough to stay well under the 1 s a
/// saved note may take to become searchable.
pub const WATCH_DEBOUNCE: Duration = Duration::from_millis(150);

/// While a long update runs, the searchable snapshot is refreshed at most this often, so a first
/// index shows results early without reloading codes after every file.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub home: PathBuf,
    pub model: Option<ModelSpec>,
    pub device: DeviceSpec,
    pub fetch: FetchOptions,
    /// Folders to add to the index before the first update.
    pub add_roots: Vec<PathBuf>,
    /// Keep watching the roots after the first update.
    pub watch: bool,
}

/// A background job as the UI shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub label: String,
    pub done: u64,
    pub total: u64,
    pub detail: String,
}

/// What the status bar and `dochash status` show.
#[derive(Debug, Clone, Default)]
pub struct EngineStatus {
    pub roots: Vec<PathBuf>,
    pub files: usize,
    pub passages: usize,
    pub job: Option<Job>,
    pub model: String,
    pub codes: String,
    pub device: String,
    /// Bumped whenever searchable content changes.
    pub generation: u64,
    /// A problem the user should see (e.g. the model could not be loaded).
    pub error: Option<String>,
    /// One-line notes from the last update (skipped files, rebuilds).
    pub notes: Vec<String>,
}

struct Snapshot {
    store: Store,
    searcher: Arc<Searcher>,
    meta: IndexMeta,
}

struct Shared {
    encoder: RwLock<Option<Arc<Encoder>>>,
    snapshot: RwLock<Option<Snapshot>>,
    job: Mutex<Option<Job>>,
    error: Mutex<Option<String>>,
    notes: Mutex<Vec<String>>,
    device: Mutex<String>,
    generation: AtomicU64,
    /// Set when the engine shuts down; shared with the running update so that it stops between
    /// files.
    stop: Arc<AtomicBool>,
}

pub(super) enum Work {
    Update,
    AddRoots(Vec<PathBuf>),
    Stop,
}

pub struct Engine {
    shared: Arc<Shared>,
    tx: Sender<Work>,
    worker: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts the owner: returns at once; model loading, index opening and the first update
    /// run on the worker thread, and progress shows in [`Engine::status`].
    pub fn start(cfg: EngineConfig) -> Self {
        let shared = Arc::new(Shared {
            encoder: RwLock::new(None),
            snapshot: RwLock::new(None),
            job: Mutex::new(Some(Job {
                label: "loading model".into(),
                done: 0,
                total: 0,
                detail: String::new(),
            })),
            error: Mutex::new(None),
            notes: Mutex::new(Vec::new()),
            device: Mutex::new(String::new()),
            generation: AtomicU64::new(0),
            stop: Arc::new(AtomicBool::new(false)),
        });
        let (tx, rx) = channel();
        let worker = {
            let shared = shared.clone();
            let tx = tx.clone();
            let cfg = cfg.clone();
            std::thread::Builder::new()
                .name("dochash-index".into())
                .spawn(move || {
                    if let Err(e) = worker(&shared, &cfg, tx, rx) {
                        set(&shared.error, Some(e));
                    }
                    set(&shared.job, None);
                })
                .ok()
        };
        Self { shared, tx, worker }
    }

    /// Blocks until the index is open and searchable, or opening failed (the error says why,
    /// e.g. another process owns the index).
    pub fn wait_open(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if read(&self.shared.snapshot).is_some() {
                return Ok(());
            }
            if let Some(e) = get(&self.shared.error) {
                return Err(e);
            }
            if Instant::now() >= deadline {
                return Err("timed out waiting for the index to open".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a query against the current snapshot. Hits in files deleted since the last update
    /// are dropped, so a deleted note leaves the results at once.
    pub fn search(&self, text: &str, params: &SearchParams) -> Result<Vec<Hit>, String> {
        let enc = read(&self.shared.encoder)
            .clone()
            .ok_or_else(|| pending_message(&self.shared))?;
        let q = enc
            .embed(&[text], Pooling::Mean, true, BatchLimits::default())
            .map_err(|e| e.to_string())?;
        let guard = self
            .shared
            .snapshot
            .read()
            .map_err(|_| "index snapshot lock poisoned".to_string())?;
        let Some(snap) = guard.as_ref() else {
            return Err(pending_message(&self.shared));
        };
        let mut wanted = *params;
        wanted.k = params.k + params.k / 2 + 2;
        let hits = snap
            .searcher
            .search(&snap.store, q.row(0), &wanted)
            .map_err(|e| e.to_string())?;
        Ok(hits
            .into_iter()
            .filter(|h| h.path.exists())
            .take(params.k)
            .collect())
    }

    pub fn status(&self) -> EngineStatus {
        let snap = read(&self.shared.snapshot);
        let (roots, files, passages, model, codes) = match snap.as_ref() {
            Some(s) => (
                s.meta.roots.clone(),
                s.store.file_count(),
                s.store.passage_count(),
                s.meta.fingerprint.model_id.clone(),
                match &s.meta.code {
                    Some(c) => format!("{} {}-bit", c.source, c.bits),
                    None => "exact (no codes yet)".into(),
                },
            ),
            None => Default::default(),
        };
        EngineStatus {
            roots,
            files,
            passages,
            job: get(&self.shared.job),
            model,
            codes,
            device: get(&self.shared.device),
            generation: self.shared.generation.load(Ordering::Acquire),
            error: get(&self.shared.error),
            notes: get(&self.shared.notes),
        }
    }

    /// True once the first update has finished (or failed).
    pub fn is_idle(&self) -> bool {
        get(&self.shared.job).is_none()
    }

    /// Adds folders (absolute paths) to the index and updates it in the background; used when
    /// `dochash index PATH` runs while this process owns the index.
    pub fn add_roots(&self, paths: Vec<PathBuf>) {
        let _ = self.tx.send(Work::AddRoots(paths));
    }
}

impl Engine {
    /// Asks the worker to stop and waits for it up to `grace`. A worker in the middle of
    /// encoding a batch is left behind (the process is exiting): every file's write is one
    /// transaction, so the index stays consistent, as after a kill.
    pub fn shutdown(&self, grace: Duration) {
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.tx.send(Work::Stop);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.worker.as_ref().is_none_or(|w| w.is_finished()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(s) = read(&self.shared.snapshot).as_ref() {
            let _ = s.store.flush();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.tx.send(Work::Stop);
        if let Some(w) = self.worker.take()
            && w.is_finished()
        {
            let _ = w.join();
        }
    }
}

fn pending_message(shared: &Shared) -> String {
    match (get(&shared.error), get(&shared.job)) {
        (Some(e), _) => e,
        (None, Some(j)) => format!("{}…", j.label),
        (None, None) => "the index is not open".into(),
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn get<T: Clone>(m: &Mutex<T>) -> T {
    m.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn set<T>(m: &Mutex<T>, v: T) {
    *m.lock().unwrap_or_else(|p| p.into_inner()) = v;
}

fn publish(shared: &Shared, index: &Index) -> Result<(), String> {
    let searcher = index.searcher().map_err(|e| e.to_string())?;
    install(
        shared,
        index.store().clone(),
        searcher,
        index.meta().clone(),
    );
    Ok(())
}

/// Makes a new snapshot the one queries see, and tells the UI the content changed.
fn install(shared: &Shared, store: Store, searcher: Searcher, meta: IndexMeta) {
    let snap = Snapshot {
        store,
        searcher: Arc::new(searcher),
        meta,
    };
    *shared.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Some(snap);
    shared.generation.fetch_add(1, Ordering::AcqRel);
}

fn worker(
    shared: &Arc<Shared>,
    cfg: &EngineConfig,
    tx: Sender<Work>,
    rx: Receiver<Work>,
) -> Result<(), String> {
    let spec = cfg.model.clone().unwrap_or_default();
    let files = model::resolve(&spec, &cfg.fetch).map_err(|e| e.to_string())?;
    let enc = Encoder::load(
        &files.dir,
        &LoadOptions {
            device: cfg.device,
            trainable: false,
            max_len: None,
        },
    )
    .map_err(|e| e.to_string())?;
    set(&shared.device, enc.device_label().to_string());
    let dir = crate::index::index_dir(&cfg.home);
    let fp = super::fingerprint(&files, &enc);
    let (mut index, rebuilt) = Index::open(&dir, &fp).map_err(|e| e.to_string())?;
    if let Some(why) = rebuilt {
        shared
            .notes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(why);
    }
    index.add_roots(&cfg.add_roots).map_err(|e| e.to_string())?;
    let enc = Arc::new(enc);
    *shared.encoder.write().unwrap_or_else(|p| p.into_inner()) = Some(enc.clone());
    publish(shared, &index)?;

    let mut watcher = if cfg.watch {
        Some(
            super::watch::watch(&index.meta().roots, &cfg.home, tx.clone())
                .map_err(|e| format!("cannot watch the folders: {e}"))?,
        )
    } else {
        None
    };

    let mut pending = true;
    loop {
        if pending {
            pending = false;
            run_update(shared, &mut index, &enc)?;
            set(&shared.job, None);
        }
        if !cfg.watch {
            return Ok(());
        }
        let first = match rx.recv_timeout(Duration::from_secs(3600)) {
            Ok(w) => w,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        // Merge everything already queued into one update.
        let queued: Vec<Work> = std::iter::once(first).chain(rx.try_iter()).collect();
        for w in queued {
            match w {
                Work::Stop => return Ok(()),
                Work::Update => pending = true,
                Work::AddRoots(paths) => {
                    let added = index.add_roots(&paths).map_err(|e| e.to_string())?;
                    if let Some(w) = watcher.as_mut() {
                        for root in &added {
                            if let Err(e) = super::watch::add(w, root) {
                                tracing::warn!("cannot watch {}: {e}", root.display());
                            }
                        }
                    }
                    pending = true;
                }
            }
        }
        if shared.stop.load(Ordering::Acquire) {
            return Ok(());
        }
    }
}

fn run_update(shared: &Arc<Shared>, index: &mut Index, enc: &Encoder) -> Result<(), String> {
    let bits = index
        .meta()
        .code
        .as_ref()
        .map(|c| c.bits)
        .unwrap_or(DEFAULT_BITS);
    let opts = UpdateOptions {
        corpus: index.meta().corpus.to_config(),
        bits,
        limits: BatchLimits::default(),
        cancel: Some(shared.stop.clone()),
    };
    set(
        &shared.job,
        Some(Job {
            label: "indexing".into(),
            done: 0,
            total: 0,
            detail: "scanning".into(),
        }),
    );
    let mut last = Instant::now();
    let mut refresh_due = false;
    let report = {
        let store = index.store().clone();
        let meta = index.meta().clone();
        let coder = index.coder().cloned();
        index
            .update(enc, &opts, &mut |p| {
                let job = match p {
                    Progress::Planned { changed, .. } => Job {
                        label: "indexing".into(),
                        done: 0,
                        total: changed as u64,
                        detail: String::new(),
                    },
                    Progress::Embedded {
                        done,
                        total,
                        passages,
                    } => {
                        refresh_due = true;
                        Job {
                            label: "indexing".into(),
                            done: done as u64,
                            total: total as u64,
                            detail: format!("{passages} passages"),
                        }
                    }
                    Progress::Fitting { passages } => Job {
                        label: "fitting codes".into(),
                        done: 0,
                        total: 0,
                        detail: format!("{passages} passages"),
                    },
                };
                set(&shared.job, Some(job));
                // Mid-update snapshots use the coder in force before the update; passages it
                // has not coded yet are scored exactly.
                if refresh_due && last.elapsed() >= SNAPSHOT_EVERY {
                    refresh_due = false;
                    last = Instant::now();
                    if let Ok(s) = Searcher::load(&store, &meta, coder.clone()) {
                        install(shared, store.clone(), s, meta.clone());
                    }
                }
            })
            .map_err(|e| e.to_string())?
    };
    let mut notes: Vec<String> = report.skipped.iter().map(|s| s.to_string()).collect();
    notes.extend(report.lossy.iter().map(|p| {
        format!(
            "{} is not valid UTF-8; indexed with replacement characters",
            p.display()
        )
    }));
    *shared.notes.lock().unwrap_or_else(|p| p.into_inner()) = notes;
    publish(shared, index)
}
