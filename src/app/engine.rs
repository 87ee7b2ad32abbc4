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

use crate::encoder::{DeviceSpec, Encoder, LoadOptions};
use crate::index::{Hit, Index, IndexMeta, Progress, SearchParams, Searcher, Store, UpdateOptions};
use crate::model::{FetchOptions, ModelSpec};

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
    /// Retrain in the background when the notes have drifted (see [`super::drift`]).
    pub auto_train: bool,
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
    /// One-line notes from the last update (skipped files, rebuilds, training outcomes).
    pub notes: Vec<String>,
    /// The trained generation serving, e.g. `generation 2 (SimCSE + DHIM)`; `None` for the
    /// base model with training-free codes.
    pub trained: Option<String>,
}

/// What a query reads, swapped as one: a generation's encoder only ever meets its own codes
/// and vectors.
struct Snapshot {
    encoder: Arc<Encoder>,
    store: Store,
    searcher: Arc<Searcher>,
    meta: IndexMeta,
}

struct Shared {
    /// Background training's progress (shown when no indexing job runs).
    training: Mutex<Option<Job>>,
    trained: Mutex<Option<String>>,
    /// What the last training attempt concluded (kept across updates, unlike `notes`).
    train_notes: Mutex<Vec<String>>,
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
    /// Background training finished with a generation to switch to.
    Switch(Box<super::train::Prepared>),
    /// Background training finished without one (notes say why).
    Trained(Vec<String>),
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
            training: Mutex::new(None),
            trained: Mutex::new(None),
            train_notes: Mutex::new(Vec::new()),
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
            .query(&snap.store, &snap.encoder, text, &wanted)
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
            job: get(&self.shared.job).or_else(|| get(&self.shared.training)),
            model: get(&self.shared.trained).unwrap_or(model),
            codes,
            device: get(&self.shared.device),
            generation: self.shared.generation.load(Ordering::Acquire),
            error: get(&self.shared.error),
            notes: get(&self.shared.notes)
                .into_iter()
                .chain(get(&self.shared.train_notes))
                .collect(),
            trained: get(&self.shared.trained),
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

fn publish(shared: &Shared, index: &Index, encoder: &Arc<Encoder>) -> Result<(), String> {
    let searcher = index.searcher().map_err(|e| e.to_string())?;
    install(
        shared,
        encoder.clone(),
        index.store().clone(),
        searcher,
        index.meta().clone(),
    );
    Ok(())
}

/// Makes a new snapshot the one queries see, and tells the UI the content changed.
fn install(
    shared: &Shared,
    encoder: Arc<Encoder>,
    store: Store,
    searcher: Searcher,
    meta: IndexMeta,
) {
    let snap = Snapshot {
        encoder,
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
    let (files, active) =
        super::generation::resolve_model(&cfg.home, cfg.model.as_ref(), &cfg.fetch)
            .map_err(|e| e.to_string())?;
    set(&shared.trained, active.as_ref().map(describe_generation));
    let enc = Encoder::load(
        &files.dir,
        &LoadOptions {
            device: cfg.device,
            trainable: false,
            max_len: None,
            candle_only: false,
        },
    )
    .map_err(|e| e.to_string())?;
    set(&shared.device, enc.device_label().to_string());
    let dir = super::generation::index_dir(&cfg.home);
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
    // Holding the index, no other process can be training: whatever a killed run left is junk.
    super::generation::clean_up(&cfg.home);
    let enc = Arc::new(enc);
    publish(shared, &index, &enc)?;

    let mut watcher = if cfg.watch {
        Some(
            super::watch::watch(&index.meta().roots, &cfg.home, tx.clone())
                .map_err(|e| format!("cannot watch the folders: {e}"))?,
        )
    } else {
        None
    };

    let mut enc = enc;
    let mut drift = super::drift::Drift::load(&cfg.home);
    let mut trainer: Option<JoinHandle<()>> = None;
    let mut pending = true;
    loop {
        if pending {
            pending = false;
            let report = run_update(shared, &mut index, &enc)?;
            set(&shared.job, None);
            drift.churn += report.passages_added + report.passages_removed;
            let _ = drift.save(&cfg.home);
            let busy = trainer.as_ref().is_some_and(|t| !t.is_finished());
            if cfg.auto_train && !busy && drift.due(index.store().passage_count()) {
                drift.trained(index.store().passage_count());
                let _ = drift.save(&cfg.home);
                trainer = spawn_training(shared, cfg, index.meta().clone(), tx.clone());
            }
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
                Work::Trained(notes) => {
                    set(&shared.training, None);
                    set(&shared.train_notes, notes);
                }
                Work::Switch(prepared) => {
                    set(&shared.training, None);
                    let mut p = *prepared;
                    let new_enc = Arc::new(p.encoder);
                    // Files changed while training are caught up; the snapshots this installs
                    // carry the new encoder with the new index, so queries switch in one step.
                    run_update(shared, &mut p.index, &new_enc)?;
                    set(&shared.job, None);
                    super::generation::switch(&cfg.home, &p.active)
                        .map_err(|e| format!("cannot switch to the trained generation: {e}"))?;
                    let notes = p.manifest.notes.clone();
                    index = p.index;
                    enc = new_enc;
                    set(&shared.trained, Some(describe_generation(&p.active)));
                    super::generation::clean_up(&cfg.home);
                    set(&shared.train_notes, notes);
                }
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

/// How the status bar names a trained generation's model, instead of its folder path.
fn describe_generation(a: &super::generation::Active) -> String {
    let base = a.base_model.strip_prefix("local:").unwrap_or(&a.base_model);
    match &a.model_dir {
        Some(_) => format!("{base} + SimCSE (generation {})", a.generation),
        None => format!("{base} (generation {})", a.generation),
    }
}

/// Starts background training on a low-priority thread pool; the result comes back to the
/// worker as [`Work::Switch`] or [`Work::Trained`]. Shutdown cancels it (the half-made
/// generation is removed; the serving one is untouched).
fn spawn_training(
    shared: &Arc<Shared>,
    cfg: &EngineConfig,
    meta: IndexMeta,
    tx: Sender<Work>,
) -> Option<JoinHandle<()>> {
    let shared = shared.clone();
    let cfg = cfg.clone();
    std::thread::Builder::new()
        .name("dochash-train".into())
        .spawn(move || {
            super::train::lower_this_thread();
            let job = |detail: String, done: usize, total: usize| Job {
                label: "training".into(),
                done: done as u64,
                total: total as u64,
                detail,
            };
            set(&shared.training, Some(job("reading notes".into(), 0, 0)));
            let result = (|| -> Result<super::train::Outcome, String> {
                let base =
                    crate::model::resolve(&cfg.model.clone().unwrap_or_default(), &cfg.fetch)
                        .map_err(|e| e.to_string())?;
                let pool = super::train::low_priority_pool().map_err(|e| e.to_string())?;
                let on_gpu = !matches!(cfg.device, DeviceSpec::Cpu)
                    && crate::encoder::open_device(cfg.device)
                        .map(|(d, _)| !d.is_cpu())
                        .unwrap_or(false);
                let opts = super::train::TrainOptions {
                    simcse: Some(crate::train::simcse::SimcseConfig {
                        mode: if on_gpu {
                            crate::train::simcse::Mode::Full
                        } else {
                            crate::train::simcse::Mode::Head
                        },
                        ..Default::default()
                    }),
                    dhim: Some(crate::train::dhim::DhimConfig {
                        bits: meta.bits(),
                        ..Default::default()
                    }),
                    device: cfg.device,
                    force: false,
                };
                let home = cfg.home.clone();
                let stop = shared.stop.clone();
                pool.install(|| {
                    super::train::prepare(&home, &base, &meta, &opts, &stop, &mut |p| {
                        use super::train::TrainProgress as P;
                        let j = match p {
                            P::Reading => job("reading notes".into(), 0, 0),
                            P::Simcse(crate::train::simcse::Progress::Caching { done, total }) => {
                                job("SimCSE: lower layers".into(), done, total)
                            }
                            P::Simcse(crate::train::simcse::Progress::Step {
                                epoch,
                                step,
                                steps,
                                loss,
                            }) => job(format!("SimCSE epoch {epoch}, loss {loss:.3}"), step, steps),
                            P::Checking => job("checking on held-back passages".into(), 0, 0),
                            P::States { done, total } => job("token states".into(), done, total),
                            P::Dhim(crate::train::dhim::Progress::Step {
                                epoch,
                                step,
                                steps,
                                loss,
                            }) => job(
                                format!("hashing head epoch {epoch}, loss {:.3}", loss.loss),
                                step,
                                steps,
                            ),
                            P::Dhim(crate::train::dhim::Progress::Epoch { .. }) => return,
                            P::Indexing { done, total } => job("re-encoding".into(), done, total),
                        };
                        set(&shared.training, Some(j));
                    })
                })
                .map_err(|e| e.to_string())
            })();
            let msg = match result {
                Ok(super::train::Outcome::Ready(p)) => Work::Switch(p),
                Ok(super::train::Outcome::Unchanged(notes)) => Work::Trained(notes),
                Err(e) if shared.stop.load(Ordering::Acquire) => {
                    tracing::debug!("training stopped: {e}");
                    return;
                }
                Err(e) => Work::Trained(vec![format!(
                    "background training failed ({e}); the current generation keeps serving"
                )]),
            };
            let _ = tx.send(msg);
        })
        .ok()
}

fn run_update(
    shared: &Arc<Shared>,
    index: &mut Index,
    enc: &Arc<Encoder>,
) -> Result<crate::index::UpdateReport, String> {
    let opts = UpdateOptions::keeping(index.meta(), Some(shared.stop.clone()));
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
                        install(shared, enc.clone(), store.clone(), s, meta.clone());
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
    publish(shared, index, enc)?;
    Ok(report)
}
