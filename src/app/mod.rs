//! What both binaries and the owner share on top of the pipeline: the home folder and every
//! procedure on it ([`Home`]), the owner ([`Engine`]), training a generation, and how to tell
//! whether stored vectors still match the model in hand.

use std::path::PathBuf;

use crate::encoder::Encoder;
use crate::index::{Fingerprint, SCHEMA_VERSION, chunk_config};
use crate::model::{ModelFiles, ModelSpec};

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

pub mod access;
pub mod drift;
pub mod engine;
mod error;
pub mod generation;
pub mod home;
pub mod known_item;
pub mod request;
pub mod sanitize;
pub mod socket;
pub mod train;
pub mod watch;

pub use access::{Access, Role};
pub use engine::{Engine, EngineConfig, EngineStatus, Job};
pub use error::AppError;
pub use home::{Home, ModelChoice, Writer};
