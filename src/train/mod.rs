//! Learning on the user's own documents: SimCSE fine-tuning of the encoder and the DHIM hashing
//! head, plus the retrieval metrics both are judged by.
//!
//! Everything here reads the encoder's outputs and writes checkpoints; the index decides when to
//! use them.

pub mod dhim;
pub mod metrics;
mod optim;
pub mod ranked;

pub mod simcse;
pub mod states;

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("too little data to train: {have} texts, at least {need} needed")]
    TooLittleData { have: usize, need: usize },
    #[error("training was interrupted")]
    Cancelled,
    #[error("{0}")]
    Msg(String),
    #[error(transparent)]
    Encoder(#[from] crate::encoder::EncoderError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Head(#[from] crate::index::dhim::HeadError),
}

impl TrainError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Parses an option value by the type's serde name, so a flag and a manifest spell a choice
/// the same way.
pub(crate) fn parse_choice<T: serde::de::DeserializeOwned>(
    s: &str,
    what: &str,
    choices: &str,
) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("unknown {what} {s:?}: use {choices}"))
}

#[cfg(test)]
mod tests;
