//! `dochash watch`: the index owner without a UI. Keeps the index up to date as files change
//! and answers `dochash query`/`status` from other terminals through the owner socket.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use dochash::app::{Engine, EngineConfig, Home, socket};

use crate::cli::{Global, WatchArgs};
use crate::shared;

pub fn run(g: &Global, args: &WatchArgs) -> Result<ExitCode> {
    let home = Home::locate()?;
    // Another owner already keeps the index up to date (an owner still starting is waited for
    // by the engine, and replaced when it stops).
    if home.owner()?.is_some() {
        return Err(anyhow!(
            "another dochash (`dochash-tui` or `dochash watch`) owns the index and keeps it up to date; `dochash query` and `dochash status` ask it"
        ));
    }
    let engine = Arc::new(Engine::start(EngineConfig {
        home: home.clone(),
        choice: shared::model_choice(g),
        add_roots: args.paths.clone(),
        watch: true,
        auto_train: !args.no_train,
    }));
    // SIGINT, SIGTERM (what service managers send) and SIGHUP all stop the owner cleanly: the
    // socket removed, the index flushed. Installed first, so a stop while the model loads is
    // clean too.
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Release))
            .context("cannot install the signal handler")?;
    }
    let mut shown = Shown::default();
    loop {
        match engine.wait_open(Duration::from_millis(500)) {
            Ok(()) => break,
            Err(dochash::app::AppError::NotReady(_)) if !stop.load(Ordering::Acquire) => {
                // What it waits for (the model, another process holding the index) is said.
                let s = engine.status();
                if let Some(j) = &s.job {
                    shown.job(g, j);
                }
            }
            Err(dochash::app::AppError::NotReady(_)) => {
                engine.shutdown(Duration::from_secs(5));
                shared::note(g, "stopped");
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => return Err(e).context("cannot start watching"),
        }
    }
    let server = socket::Server::start(home.dir(), engine.clone()).with_context(|| {
        format!(
            "cannot create {}",
            socket::socket_path(home.dir()).display()
        )
    })?;

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
        if s.notes != shown.notes {
            for n in &s.notes {
                shared::note(g, n);
            }
            shown.notes = s.notes.clone();
        }
        shown.line(g, line);
        if let Some(e) = s.error {
            return Err(anyhow!(e));
        }
        // Wakes at once on any change, and twice a second to notice Ctrl-C.
        engine.wait_change(s.changes, Duration::from_millis(500));
    }
    drop(server);
    engine.shutdown(Duration::from_secs(5));
    shared::note(g, "stopped");
    Ok(ExitCode::SUCCESS)
}

/// What was last printed, so each line is said once.
#[derive(Default)]
struct Shown {
    line: String,
    notes: Vec<String>,
    /// The job last printed (its label and detail) and when: a download's count moves every
    /// MiB, and a log needs a line a second at most.
    job: Option<(String, std::time::Instant)>,
}

impl Shown {
    fn job(&mut self, g: &Global, j: &dochash::app::Job) {
        let key = format!("{} {}", j.label, j.detail);
        let fresh = self
            .job
            .as_ref()
            .is_none_or(|(k, at)| *k != key || at.elapsed() >= Duration::from_secs(1));
        if fresh {
            self.job = Some((key, std::time::Instant::now()));
            self.line(g, j.to_string());
        }
    }

    fn line(&mut self, g: &Global, line: String) {
        if line != self.line {
            shared::note(g, &line);
            self.line = line;
        }
    }
}
