//! `dochash model fetch|path|list`.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use dochash::model::{self, DEFAULT_MODEL};

use crate::cli::{Global, ModelCmd};
use crate::shared;

pub fn run(g: &Global, cmd: &ModelCmd) -> Result<ExitCode> {
    match cmd {
        ModelCmd::Fetch { name } => {
            let name = name.as_deref().unwrap_or(DEFAULT_MODEL);
            let files = model::fetch(name, &shared::fetch_options(g))
                .with_context(|| format!("cannot fetch {name}"))?;
            shared::note(g, format!("{} ready ({})", files.id, files.source));
            println!("{}", files.dir.display());
        }
        ModelCmd::Path { name } => {
            let name = name.as_deref().unwrap_or(DEFAULT_MODEL);
            match model::cached_path(name) {
                Some(p) => println!("{}", p.display()),
                None => bail!("{name} is not available locally; run `dochash model fetch {name}`"),
            }
        }
        ModelCmd::List => {
            for p in model::PRESETS {
                let cached = model::cached_path(p.id).is_some();
                println!(
                    "{:<22} {:<58} {}{}",
                    p.name,
                    p.id,
                    p.about,
                    if cached { " (downloaded)" } else { "" }
                );
                for (what, prompt) in [("query", p.query_prompt), ("document", p.document_prompt)] {
                    if !prompt.is_empty() {
                        println!("{:<22} {what} prompt {prompt:?}", "");
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
