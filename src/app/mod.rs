//! What both binaries share on top of the pipeline: where the index lives, which model made it,
//! and how to tell whether stored vectors still match the model in hand.

use std::path::PathBuf;

use crate::encoder::Encoder;
use crate::index::{Fingerprint, SCHEMA_VERSION, chunk_config};
use crate::model::{self, ModelError, ModelFiles, ModelSpec};

/// The serving index folder of the current dochash home (`DOCHASH_HOME` or the platform data
/// folder).
pub fn index_dir() -> Result<PathBuf, ModelError> {
    Ok(generation::index_dir(&model::home_dir()?))
}

/// Creates the dochash home if needed and makes sure it is private to the user: it holds the
/// full text of every indexed note. For commands that write to it.
pub fn prepare_home(home: &std::path::Path) -> std::io::Result<()> {
    crate::fsx::create_private_dir_all(home)?;
    narrow_home(home);
    Ok(())
}

/// What dochash keeps in its home, by name or prefix: the index folders (`index`, `index-<n>`)
/// and `index.json`, trained generations, the model cache, the side files, the socket and
/// leftovers of atomic writes. Only these are narrowed: `DOCHASH_HOME` may name a folder that
/// holds other things of the user's.
const HOME_ENTRIES: &[&str] = &[
    "index",
    "generation",
    "models",
    "model.json",
    "precision.json",
    "drift.json",
    "owner.sock",
    ".sock-",
    ".tmp-",
];

/// Narrows an existing home to the user: the folder itself to 0700, and everything dochash keeps
/// in it ([`HOME_ENTRIES`]) to folders 0700 and files 0600. A home made by an older version (0755
/// folders, 0644 files) left the index's files, which hold the text of every note, readable by
/// other users. Every command calls it, read-only ones too.
pub fn narrow_home(home: &std::path::Path) {
    if !home.is_dir() {
        return;
    }
    crate::fsx::make_private_dir(home);
    let Ok(entries) = std::fs::read_dir(home) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let link = e.file_type().is_ok_and(|t| t.is_symlink());
        if !link && HOME_ENTRIES.iter().any(|p| name.starts_with(p)) {
            crate::fsx::make_private_tree(&e.path());
        }
    }
}

/// Everything the stored vectors depend on. The weights' size and mtime stand in for their
/// hash: hashing 90 MB on every query would cost more than the query.
pub fn fingerprint(files: &ModelFiles, enc: &Encoder) -> Fingerprint {
    let stamp = std::fs::metadata(&files.weights)
        .ok()
        .and_then(|m| crate::fsx::file_stamp(&m))
        .unwrap_or_default();
    Fingerprint {
        schema: SCHEMA_VERSION,
        model_id: files.id.clone(),
        model_stamp: stamp,
        dim: enc.dim(),
        pooling: enc.profile().describe(),
        chunking: chunk_config(enc),
        max_len: enc.max_len(),
        precision: enc.precision(),
    }
}

/// The model an index was made with, from the id recorded in it.
pub fn spec_from_id(id: &str) -> ModelSpec {
    match id.strip_prefix("local:") {
        Some(path) => ModelSpec::LocalDir(PathBuf::from(path)),
        None => ModelSpec::Hub(id.to_string()),
    }
}

pub mod drift;
pub mod engine;
mod error;
pub mod generation;
pub mod known_item;
pub mod sanitize;
pub mod socket;
pub mod train;
mod watch;

pub use engine::{Engine, EngineConfig, EngineStatus, Job};
pub use error::AppError;
