//! `dochash watch`: the index owner without a UI. Keeps the index up to date as files change
//! and answers `dochash query`/`status` from other terminals through the owner socket.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use dochash::app::{Engine, EngineConfig, socket};
use dochash::model;

use crate::cli::{Global, WatchArgs};
use crate::shared;

pub fn run(g: &Global, args: &WatchArgs) -> Result<ExitCode> {
    let home = model::home_dir()?;
    let engine = Arc::new(Engine::start(EngineConfig {
        home: home.clone(),
        model: g.model.clone(),
        device: g.device,
        precision: g.precision,
        fetch: shared::fetch_options(g),
        add_roots: args.paths.clone(),
        watch: true,
        auto_train: !args.no_train,
    }));
    engine
        .wait_open(Duration::from_secs(24 * 3600))
        .context("cannot start watching")?;
    let _server = socket::Server::start(&home, engine.clone())
        .with_context(|| format!("cannot create {}", socket::socket_path(&home).display()))?;

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Release))
            .context("cannot install the Ctrl-C handler")?;
    }
    let mut last_line = String::new();
    let mut last_notes: Vec<String> = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let s = engine.status();
        let line = match &s.job {
            Some(j) => j.to_string(),
            None => format!(
                "watching {} folder(s): {} files, {} passages ({})",
                s.roots.len(),
                s.files,
                s.passages,
                s.codes
            ),
        };
        if s.notes != last_notes {
            for n in &s.notes {
                shared::note(g, n);
            }
            last_notes = s.notes.clone();
        }
        if line != last_line {
            shared::note(g, &line);
            last_line = line;
        }
        if let Some(e) = s.error {
            return Err(anyhow!(e));
        }
        // Wakes at once on any change, and twice a second to notice Ctrl-C.
        engine.wait_change(s.changes, Duration::from_millis(500));
    }
    shared::note(g, "stopped");
    Ok(ExitCode::SUCCESS)
}
