//! Plumbing every subcommand needs: logging, errors, model and encoder loading.

use anyhow::{Context, Result};
use dochash::app::sanitize::sanitize;
use dochash::app::{Home, ModelChoice, Writer};
use dochash::encoder::{Encoder, LoadOptions, Precision};
use dochash::index::Index;
use dochash::model::{self, FetchOptions, ModelFiles, ModelSpec};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::Global;

pub fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DOCHASH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("dochash={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();
}

/// One line per cause, as `error: outer: inner`, without a backtrace: messages are written
/// for the user and already say what to do.
pub fn print_error(e: &anyhow::Error) {
    let mut msg = String::from("error: ");
    let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    // Skip causes that the outer message already quotes in full.
    let mut parts: Vec<&str> = Vec::new();
    for c in &chain {
        if !parts.iter().any(|p| p.contains(c.as_str())) {
            parts.push(c);
        }
    }
    msg.push_str(&parts.join(": "));
    eprintln!("{}", sanitize(&msg));
}

/// Prints a note for the user on stderr unless `--quiet`. Notes name files, and file names come
/// from the disk: sanitised, so a name cannot drive the terminal.
pub fn note(g: &Global, msg: impl std::fmt::Display) {
    if !g.quiet {
        eprintln!("{}", sanitize(&msg.to_string()));
    }
}

pub fn fetch_options(g: &Global) -> FetchOptions {
    FetchOptions {
        offline: g.offline,
        progress: if g.quiet {
            model::Progress::NONE
        } else {
            model::Progress::to(std::sync::Arc::new(FetchBars::default()))
        },
    }
}

/// Finds the model asked for, else the default (downloading it on first use), for commands
/// that do not touch the index.
pub fn resolve_model(g: &Global) -> Result<ModelFiles> {
    resolve_spec(g, &g.model.clone().unwrap_or_default())
}

/// Finds `spec`'s files, with an error that names it.
pub fn resolve_spec(g: &Global, spec: &ModelSpec) -> Result<ModelFiles> {
    model::resolve(spec, &fetch_options(g)).context(match spec {
        ModelSpec::LocalDir(d) => format!("cannot use the model folder {}", d.display()),
        ModelSpec::Hub(n) => format!("cannot get the model {n}"),
    })
}

/// The model as the global flags ask for it, for the home's calls.
pub fn model_choice(g: &Global) -> ModelChoice {
    ModelChoice {
        model: g.model.clone(),
        precision: g.precision,
        device: g.device,
        fetch: fetch_options(g),
    }
}

/// The home, with the index's model loaded and the index opened (created, or rebuilt when its
/// model changed, which is noted) for a command that writes to it.
pub fn open_index(g: &Global) -> Result<(Home, Writer, Index)> {
    let home = Home::locate()?;
    home.prepare()
        .with_context(|| format!("cannot create {}", home.dir().display()))?;
    let writer = home
        .writer(&model_choice(g))
        .context("cannot load the model")?;
    tracing::info!(model = %writer.files.id, device = writer.encoder.device_label(), "encoder ready");
    let (index, notes) = home
        .open_index(&writer)
        .with_context(|| format!("cannot open the index at {}", home.index_dir().display()))?;
    for n in writer.notes.iter().chain(&notes) {
        note(g, n);
    }
    Ok((home, writer, index))
}

/// The encoder for a command that does not touch the index: `--precision` or the default.
pub fn load_encoder(g: &Global, files: &ModelFiles, max_len: Option<usize>) -> Result<Encoder> {
    load_encoder_with(g, files, max_len, false, g.precision)
}

/// [`load_encoder`] in a given precision, optionally on candle's general tensor path
/// (`bench encode --candle`).
pub fn load_encoder_with(
    g: &Global,
    files: &ModelFiles,
    max_len: Option<usize>,
    candle_only: bool,
    precision: Option<Precision>,
) -> Result<Encoder> {
    let enc = Encoder::load_model(
        files,
        &LoadOptions {
            device: g.device,
            trainable: false,
            max_len,
            candle_only,
            precision,
        },
    )
    .with_context(|| format!("cannot load the model {}", files.id))?;
    tracing::info!(model = %files.id, device = enc.device_label(), "encoder ready");
    Ok(enc)
}

/// The cache key of `texts` encoded by a model: the model's index fingerprint (everything the
/// vectors depend on: weights, width, pooling, prompts, length limit) and the texts themselves.
pub fn encoding_key(files: &ModelFiles, enc: &Encoder, texts: &[&str]) -> String {
    let fp = dochash::app::fingerprint(files, enc);
    let mut h = blake3::Hasher::new();
    h.update(&serde_json::to_vec(&fp).unwrap_or_default());
    for t in texts {
        h.update(t.as_bytes());
        h.update(&[0]);
    }
    h.finalize().to_hex()[..16].to_string()
}

/// A progress bar on stderr for a long step, hidden with `--quiet`.
pub fn bar(g: &Global, len: u64, what: &str) -> ProgressBar {
    if g.quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

/// The command line's renderer of a model fetch: one bar on stderr (hidden by indicatif when
/// stderr is not a terminal), a spinner for steps of unknown size.
#[derive(Default)]
struct FetchBars(std::sync::Mutex<Option<ProgressBar>>);

impl model::FetchProgress for FetchBars {
    fn step(&self, what: &str, total_bytes: Option<u64>) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let bar = slot.get_or_insert_with(ProgressBar::new_spinner);
        match total_bytes {
            Some(total) => {
                let style = ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar());
                bar.disable_steady_tick();
                bar.set_style(style.progress_chars("=> "));
                bar.set_length(total);
                bar.set_position(0);
            }
            None => {
                let style = ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
                bar.set_style(style);
                bar.enable_steady_tick(std::time::Duration::from_millis(120));
            }
        }
        bar.set_message(what.to_string());
    }

    fn advance(&self, bytes: u64) {
        if let Some(bar) = &*self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            bar.inc(bytes);
        }
    }

    fn done(&self) {
        if let Some(bar) = self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}
