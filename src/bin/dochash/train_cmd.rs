//! `dochash train`: fine-tune the encoder (SimCSE) and/or learn the codes (a ranking head, or
//! DHIM) on the indexed documents, build the new generation's index beside the serving one, and
//! switch.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use dochash::app::train::{Outcome, TrainOptions};
use dochash::index::UpdateOptions;
use dochash::train::TrainError;
use dochash::train::dhim::DhimConfig;
use dochash::train::ranked::RankConfig;
use dochash::train::simcse::{self, SimcseConfig};

use crate::cli::{CodesChoice, Global, SimcseChoice, TrainArgs};
use crate::shared;
use crate::shared::bar;

pub fn run(g: &Global, args: &TrainArgs) -> Result<ExitCode> {
    let home = dochash::app::Home::locate()?;
    if home.owner()?.is_some() {
        bail!(
            "a running dochash (TUI or `dochash watch`) owns the index and retrains it in the background as your notes change; stop it to train by hand"
        );
    }
    let codes = if args.dhim {
        CodesChoice::Dhim
    } else {
        args.codes
    };
    if args.simcse == SimcseChoice::Off && codes == CodesChoice::Itq {
        bail!("nothing to train: pass --codes ranked|dhim and/or --simcse head|full");
    }

    let (home, writer, mut index) = shared::open_index(g)?;
    let enc = writer.encoder;
    if index.meta().roots.is_empty() {
        bail!("no folders are indexed yet; run `dochash index PATH` first");
    }
    // Holding the index, no other process can be training: whatever a killed run left is junk.
    home.clean_up();
    // Training reads the files, so bring the serving index up to date first: it is what keeps
    // serving if training is interrupted.
    let uopts = UpdateOptions::keeping(index.meta(), None);
    index.update(&enc, &uopts, &mut |_, _| {})?;
    drop(enc);
    let passages = index.store().passage_count();

    // Training always starts from the base model (the one asked for, else the index's).
    let base = home
        .base_model(&shared::model_choice(g))
        .context("cannot get the base model")?;
    let defaults = TrainOptions::for_device(g.device);
    let opts = TrainOptions {
        simcse: match (args.simcse, defaults.simcse) {
            (SimcseChoice::Off, _) | (_, None) => None,
            (choice, Some(d)) => {
                let mut cfg = SimcseConfig {
                    mode: match choice {
                        SimcseChoice::Full => simcse::Mode::Full,
                        SimcseChoice::Head => simcse::Mode::Head,
                        _ => d.mode,
                    },
                    epochs: args.simcse_epochs,
                    positives: args.simcse_positives.unwrap_or(d.positives),
                    ..d
                };
                args.simcse_tuning.apply(&mut cfg);
                Some(cfg)
            }
        },
        ranked: (codes == CodesChoice::Ranked).then(|| RankConfig {
            steps: args.code_steps,
            ..Default::default()
        }),
        dhim: (codes == CodesChoice::Dhim).then(|| DhimConfig {
            bits: args
                .bits
                .unwrap_or_else(|| index.meta().code_bits(index.store().rows().live_rows())),
            max_epochs: args.epochs,
            ..Default::default()
        }),
        device: g.device,
        force: args.force,
    };

    let cancel = Arc::new(AtomicBool::new(false));
    {
        let c = cancel.clone();
        ctrlc::set_handler(move || c.store(true, Ordering::Release))
            .context("cannot install the Ctrl-C handler")?;
    }
    let pb = bar(g, 0, "reading");
    let mut phase = String::new();
    let serving = index.donor().ok();
    let outcome = home.train(
        &base,
        index.meta(),
        passages,
        serving,
        &opts,
        &cancel,
        &mut |p| {
            let Some(ph) = p.phase() else { return };
            if phase != ph.label {
                phase = ph.label.clone();
                pb.reset();
                pb.set_prefix(ph.label);
            }
            pb.set_length(ph.total as u64);
            pb.set_position(ph.done as u64);
            pb.set_message(ph.detail);
        },
    );
    pb.finish_and_clear();
    let prepared = match outcome {
        Ok(Outcome::Ready(p)) => p,
        Ok(Outcome::Unchanged(notes)) => {
            for n in notes {
                shared::note(g, n);
            }
            shared::note(g, "nothing to switch to; the serving index is unchanged");
            return Ok(ExitCode::SUCCESS);
        }
        Err(TrainError::Cancelled) => {
            shared::note(
                g,
                "training interrupted; the previous generation still serves",
            );
            return Ok(ExitCode::from(130));
        }
        Err(e) => return Err(e).context("training failed; the previous generation still serves"),
    };
    let mut prepared = *prepared;
    // Catch up with files changed while training, then switch.
    drop(index);
    home.switch(&mut prepared, |idx, enc| {
        let uopts = UpdateOptions::keeping(idx.meta(), None);
        idx.update(enc, &uopts, &mut |_, _| {})
    })
    .with_context(|| format!("cannot switch generations in {}", home.dir().display()))?;
    let indexed = prepared.index.store().passage_count();
    drop(prepared.index);
    home.clean_up();
    for n in &prepared.manifest.notes {
        shared::note(g, n);
    }
    shared::note(
        g,
        format!(
            "generation {} serves now ({indexed} passages indexed, model {}); manifest in {}",
            prepared.active.generation,
            prepared.manifest.model,
            home.generation_dir(prepared.active.generation)
                .join("manifest.json")
                .display()
        ),
    );
    Ok(ExitCode::SUCCESS)
}
