//! `dochash-tui [PATH...]`: the interactive search UI.
//!
//! Opens at once on whatever index exists and indexes/watches in the background. If another
//! dochash process already owns the index (a second TUI, or `dochash watch`), this one becomes
//! its client over the owner socket instead of failing on the database lock.

mod tui;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use dochash::app::socket::{self, Reply, Request};
use dochash::app::{Engine, EngineConfig};
use dochash::encoder::DeviceSpec;
use dochash::index::{Hit, SearchParams};
use dochash::model::{self, FetchOptions, ModelSpec};

use tui::{Backend, JobProgress, StatusInfo, TuiOptions};

#[derive(Debug, Parser)]
#[command(
    name = "dochash-tui",
    version,
    about = "Search your documents as you type",
    long_about = "Search your documents as you type.\n\n\
        Opens on the existing index at once; the folders given are added to it and indexed in the \
        background, and changes to files are picked up while the UI is open. Keys: type to search, \
        ↑/↓ (Ctrl-p/Ctrl-n) and PgUp/PgDn move, Enter opens the file in $EDITOR at the passage, \
        Tab toggles the preview, Ctrl-y copies the path, F1 (or ? on an empty query) shows help, \
        Esc or Ctrl-c quits."
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
    /// Model folder or Hugging Face name (default: the index's model, else all-MiniLM-L6-v2)
    #[arg(long, env = "DOCHASH_MODEL", value_name = "DIR|NAME")]
    model: Option<ModelSpec>,
    /// Compute device: auto, cpu, cuda[:N] or metal[:N]
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    device: DeviceSpec,
    /// Never use the network
    #[arg(long)]
    offline: bool,
    /// Do not retrain in the background when the notes have drifted
    #[arg(long)]
    no_train: bool,
}

fn main() -> ExitCode {
    dochash::encoder::keep_large_buffers();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", parts.join(": "));
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<()> {
    let args = Args::parse();
    let home = model::home_dir()?;
    std::fs::create_dir_all(&home).with_context(|| format!("cannot create {}", home.display()))?;
    let opts = TuiOptions {
        query: args.query.clone(),
        no_color: TuiOptions::no_color_from_env(),
        editor: args.editor.clone(),
        ..Default::default()
    };

    // Another process owns the index: be its client.
    if let Some(Ok(Reply::Status(_))) = socket::ask(&home, &Request::Status) {
        if !args.paths.is_empty() {
            eprintln!(
                "note: another dochash owns the index; the folders given were not added (stop it, or use `dochash index` after it exits)"
            );
        }
        return tui::run(Arc::new(Client { home }), opts);
    }

    // The model the index was made with, unless one is named, so that opening the UI never
    // rebuilds an index with another model by surprise.
    let model = args.model.clone().or_else(|| {
        // A trained generation names the base model it was trained from; the engine maps
        // that to the generation's own encoder.
        if let Some(a) = dochash::app::generation::active(&home) {
            return Some(dochash::app::spec_from_id(&a.base_model));
        }
        let meta =
            dochash::index::Index::open_existing(&dochash::app::generation::index_dir(&home))
                .ok()
                .flatten()?;
        Some(dochash::app::spec_from_id(
            &meta.meta().fingerprint.model_id,
        ))
    });
    let engine = Arc::new(Engine::start(EngineConfig {
        home: home.clone(),
        model,
        device: args.device,
        fetch: FetchOptions {
            offline: args.offline,
            progress: false,
        },
        add_roots: args.paths.clone(),
        watch: true,
        auto_train: !args.no_train,
    }));
    // Serve other processes once the index is ours (in the background: the UI opens now).
    let server_slot: Arc<std::sync::Mutex<Option<socket::Server>>> = Arc::default();
    {
        let engine = engine.clone();
        let slot = server_slot.clone();
        let home = home.clone();
        std::thread::spawn(move || {
            if engine.wait_open(Duration::from_secs(24 * 3600)).is_ok()
                && let Ok(s) = socket::Server::start(&home, engine)
                && let Ok(mut g) = slot.lock()
            {
                *g = Some(s);
            }
        });
    }
    let result = tui::run(Arc::new(Local(engine.clone())), opts);
    // Stop serving before the engine goes away, then let the worker stop (it is detached if
    // an update is in the middle of encoding: every file's write is atomic).
    if let Ok(mut g) = server_slot.lock() {
        g.take();
    }
    engine.shutdown(Duration::from_millis(500));
    result
}

struct Local(Arc<Engine>);

impl Backend for Local {
    fn search(&self, query: &str, limit: usize) -> Result<Vec<Hit>, String> {
        self.0.search(
            query,
            &SearchParams {
                k: limit,
                candidates: None,
                per_file: false,
            },
        )
    }

    fn status(&self) -> StatusInfo {
        let s = self.0.status();
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
            device: s.device,
            generation: s.generation,
        }
    }
}

/// Talks to the process that owns the index.
struct Client {
    home: PathBuf,
}

impl Backend for Client {
    fn search(&self, query: &str, limit: usize) -> Result<Vec<Hit>, String> {
        let req = Request::Query {
            text: query.to_string(),
            k: limit,
            per_file: false,
            candidates: None,
        };
        match socket::ask(&self.home, &req) {
            Some(Ok(Reply::Hits(h))) => Ok(h),
            Some(Ok(Reply::Error(e))) | Some(Err(e)) => Err(e),
            Some(Ok(Reply::Status(_))) => Err("unexpected reply".into()),
            None => Err("the dochash that owned the index has exited; restart dochash-tui".into()),
        }
    }

    fn status(&self) -> StatusInfo {
        match socket::ask(&self.home, &Request::Status) {
            Some(Ok(Reply::Status(s))) => StatusInfo {
                roots: s.roots,
                files: s.files,
                passages: s.passages,
                job: s.job.map(|j| JobProgress {
                    label: j,
                    ..Default::default()
                }),
                model: short_model(&s.model),
                codes: s.codes,
                device: format!("{} (shared)", s.device),
                // Content changes are not pushed over the socket; re-running the query on
                // every count change keeps results fresh enough.
                generation: (s.files as u64) << 32 | s.passages as u64,
            },
            _ => StatusInfo::default(),
        }
    }
}

fn short_model(id: &str) -> String {
    id.rsplit('/').next().unwrap_or(id).to_string()
}
