//! `dochash-tui [PATH...]`: the interactive search UI.
//!
//! Opens at once on whatever index exists and indexes/watches in the background. If another
//! dochash process already owns the index (a second TUI, `dochash watch` or `dochash mcp`), this
//! one becomes its client over the owner socket instead of failing on the database lock, and
//! takes the index over when that process quits.

mod tui;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use dochash::app::request::QueryRequest;
use dochash::app::{Access, EngineConfig, EngineStatus, Home, ModelChoice, Role};
use dochash::encoder::{DeviceSpec, Precision};
use dochash::index::Hit;
use dochash::index::search::Group;
use dochash::model::{FetchOptions, ModelSpec, Progress};

use tui::{Backend, JobProgress, StatusInfo, TuiOptions};

#[derive(Debug, Parser)]
#[command(
    name = "dochash-tui",
    version,
    about = "Search your documents as you type",
    long_about = "Search your documents as you type.\n\n\
        Opens on the existing index at once; the folders given are added to it and indexed in the \
        background, and changes to files are picked up while the UI is open. The keys are listed \
        below and in the help (F1)."
)]
struct Args {
    /// Folders (or files) to add to the index
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Start with this query
    #[arg(short, long, default_value = "", value_name = "TEXT")]
    query: String,
    /// Editor command for Enter (default: $VISUAL, then $EDITOR, then vi)
    #[arg(long, value_name = "CMD")]
    editor: Option<String>,
    /// Viewer command for Enter on a PDF; `{file}` and `{page}` in it are filled in, and
    /// zathura, evince, okular, mupdf, sioyek and qpdfview are told the page without them
    /// (default: $DOCHASH_PDF_VIEWER, then the system's opener, which opens at the first page)
    #[arg(long, value_name = "CMD")]
    viewer: Option<String>,
    /// Model folder or Hugging Face name (default: the index's model, else all-MiniLM-L6-v2)
    #[arg(long, env = "DOCHASH_MODEL", value_name = "DIR|NAME")]
    model: Option<ModelSpec>,
    /// Compute device: auto, cpu, cuda[:N] or metal[:N]
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    device: DeviceSpec,
    /// Encoder arithmetic: f32, or int8 (about twice as fast on the CPU; vectors within 0.99
    /// cosine of f32's). Default: what the index was built with, else int8 on a CPU with an
    /// int8 SIMD kernel and f32 otherwise; changing it rebuilds the index
    #[arg(long, env = "DOCHASH_PRECISION", value_name = "f32|int8")]
    precision: Option<Precision>,
    /// Never use the network
    #[arg(long)]
    offline: bool,
    /// Do not retrain in the background when the notes have drifted
    #[arg(long)]
    no_train: bool,
}

fn main() -> ExitCode {
    if let Some(code) = dochash::corpus::document_helper_main() {
        return code;
    }
    dochash::corpus::use_document_helper();
    dochash::fsx::private_umask();
    dochash::encoder::keep_large_buffers();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!(
                "error: {}",
                dochash::app::sanitize::sanitize(&parts.join(": "))
            );
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<()> {
    let args = {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Args::command()
            .after_long_help(tui::keys_help())
            .get_matches();
        Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    };
    // SIGTERM (a service manager), SIGHUP (the terminal went away) and SIGINT end the UI the
    // way quitting does: the terminal restored, the socket removed, the index flushed.
    ctrlc::set_handler(tui::request_quit).context("cannot install the signal handler")?;
    let home = Home::locate()?;
    home.prepare()
        .with_context(|| format!("cannot create {}", home.dir().display()))?;
    let opts = TuiOptions {
        query: args.query.clone(),
        no_color: TuiOptions::no_color_from_env(),
        editor: args.editor.clone(),
        viewer: args.viewer.clone(),
        ..Default::default()
    };

    // Checked here, so a mistyped folder is said before the screen is taken.
    for p in &args.paths {
        dochash::index::check_root(p)?;
    }
    // The owner of the index, or a client of the process that owns it (taking over when that
    // one quits): the same as `dochash mcp`.
    let access = Access::start(EngineConfig {
        home,
        // Without one named, the engine uses the model the index was built for.
        choice: ModelChoice {
            model: args.model.clone(),
            device: args.device,
            precision: args.precision,
            // The owner reports the model's download as its job, shown in the status line.
            fetch: FetchOptions {
                offline: args.offline,
                progress: Progress::NONE,
            },
        },
        add_roots: args.paths.clone(),
        watch: true,
        auto_train: !args.no_train,
    });
    let result = tui::run(Arc::new(Shared(access.clone())), opts);
    // Stop serving before the engine goes away, then let the worker stop (it is detached if
    // an update is in the middle of encoding: every file's write is atomic).
    access.shutdown();
    result
}

/// The index as [`Access`] reaches it: the UI never waits for it (a query before the index
/// opens is told what is happening).
struct Shared(Access);

impl Backend for Shared {
    fn search(&self, query: &str, limit: usize, group: Group) -> Result<Vec<Hit>, String> {
        let q = QueryRequest {
            group,
            ..QueryRequest::new(query, limit)
        };
        self.0.query(&q, Duration::ZERO).map_err(|e| e.to_string())
    }

    fn status(&self) -> StatusInfo {
        let suffix = match self.0.role() {
            Role::Client => " (shared)",
            _ => "",
        };
        status_info(self.0.status(), suffix)
    }
}

fn status_info(s: EngineStatus, device_suffix: &str) -> StatusInfo {
    let job = match (&s.error, s.job) {
        (Some(e), _) => Some(JobProgress {
            label: "error".into(),
            done: 0,
            total: 0,
            detail: e.clone(),
        }),
        (None, Some(j)) => Some(JobProgress {
            label: j.label,
            done: j.done,
            total: j.total,
            detail: j.detail,
        }),
        (None, None) => None,
    };
    StatusInfo {
        roots: s.roots,
        files: s.files,
        passages: s.passages,
        job,
        model: short_model(&s.model),
        codes: s.codes,
        fusion: s
            .fusion
            .filter(|f| f.adopted)
            .map(|f| format!("semantic {:.1} (fitted)", f.semantic_weight))
            .unwrap_or_default(),
        device: format!("{}{device_suffix}", s.device),
        content_version: s.content_version,
    }
}

fn short_model(id: &str) -> String {
    id.rsplit('/').next().unwrap_or(id).to_string()
}
