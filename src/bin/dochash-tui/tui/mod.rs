//! Interactive terminal UI: search-as-you-type over the index, with a preview of each passage in
//! its file and a jump into the user's editor.
//!
//! The UI knows the engine only through [`Backend`], so it can be developed and tested against a
//! fake, and the engine can change how it indexes and searches without touching the UI.
//!
//! Threads: the UI thread owns the terminal and never waits on search or on file reads; a worker
//! thread runs queries (newest only) and reads the files shown in the preview.
//!
//! Module map: `app` (state machine, no I/O), `ui` (rendering), `worker` (search and file reads),
//! `terminal` (raw mode, the event loop, the editor), plus small helpers `input`, `sanitize`,
//! `editor`, `clipboard`.

use std::path::PathBuf;
use std::sync::Arc;

use dochash::index::search::{Group, Hit};

mod app;
mod clipboard;
mod editor;
mod input;
mod keymap;
mod layout;
mod sanitize;
mod terminal;
mod ui;
mod worker;

/// What the UI needs from the search engine.
pub trait Backend: Send + Sync + 'static {
    /// Runs a query; may take tens of milliseconds; called from a worker thread, never the UI
    /// thread.
    fn search(&self, query: &str, limit: usize, group: Group) -> Result<Vec<Hit>, String>;
    /// Cheap snapshot for the status bar; called often from the UI thread.
    fn status(&self) -> StatusInfo;
}

/// A snapshot of the index and of background work, for the status bar and the empty states.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusInfo {
    /// Directories being indexed.
    pub roots: Vec<PathBuf>,
    /// Files in the index.
    pub files: usize,
    /// Passages in the index.
    pub passages: usize,
    /// The background job running now, if any.
    pub job: Option<JobProgress>,
    /// Encoder model name.
    pub model: String,
    /// Binary code scheme, e.g. "itq 64-bit".
    pub codes: String,
    /// The corpus's own fusion when it chose one, e.g. "semantic 0.3 (fitted)"; empty for the
    /// default.
    pub fusion: String,
    /// Compute device, e.g. "cpu" or "cuda:0".
    pub device: String,
    /// Bumps whenever the index content changes: the UI re-runs the current query when it
    /// changes, so results follow edits and deletions.
    pub content_version: u64,
}

/// Progress of a background job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobProgress {
    /// What is happening: "indexing", "training", "re-encoding".
    pub label: String,
    /// Units done so far.
    pub done: u64,
    /// Units in total; 0 when unknown.
    pub total: u64,
    /// Free-form detail, e.g. "epoch 2/5 loss 0.413".
    pub detail: String,
}

/// How to start the UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TuiOptions {
    /// Query typed in when the UI opens (searched immediately when not blank).
    pub query: String,
    /// Most results to ask the backend for.
    pub limit: usize,
    /// Use no colours at all, only bold/reverse/underline. Set it from the `NO_COLOR`
    /// environment variable (see [`TuiOptions::no_color_from_env`]).
    pub no_color: bool,
    /// Editor command overriding `$VISUAL`/`$EDITOR`, split like a shell would (quotes allowed).
    pub editor: Option<String>,
    /// PDF viewer command overriding `$DOCHASH_PDF_VIEWER` (see `editor::viewer_invocation`).
    pub viewer: Option<String>,
}

impl Default for TuiOptions {
    fn default() -> Self {
        Self {
            query: String::new(),
            limit: 50,
            no_color: false,
            editor: None,
            viewer: None,
        }
    }
}

impl TuiOptions {
    /// Whether the environment asks for no colour: `NO_COLOR` set to a non-empty value, as
    /// <https://no-color.org> specifies.
    pub fn no_color_from_env() -> bool {
        std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
    }
}

/// The keys, one per line, for `--help`.
pub fn keys_help() -> String {
    let mut out = String::from("Keys:\n");
    for b in keymap::KEYMAP {
        out.push_str(&format!("  {:<38} {}\n", keymap::keys_label(b), b.help));
    }
    out
}

/// Runs the UI until the user quits. Takes over the terminal (alternate screen, raw mode) and
/// gives it back on every exit path: normal return, error, or panic.
///
/// Fails without touching the terminal when stdin or stdout is not a terminal.
pub fn run(backend: Arc<dyn Backend>, opts: TuiOptions) -> anyhow::Result<()> {
    terminal::run(backend, opts)
}

/// Makes [`run`] return at its next turn, as if the user had quit: for a termination signal.
pub fn request_quit() {
    terminal::QUIT_REQUESTED.store(true, std::sync::atomic::Ordering::SeqCst);
}
