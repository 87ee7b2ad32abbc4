//! Errors and skip notes for the corpus stage.
//!
//! Two kinds of trouble are kept apart on purpose: a [`CorpusError`] means the request itself
//! cannot be honoured (a root that does not exist, a glob that does not parse) and stops the
//! run, while a [`Skipped`] note is about one file and must never stop an index of thousands.

use std::fmt;
use std::path::PathBuf;

use crate::fsx::human_bytes;

use serde::{Deserialize, Serialize};

/// Failures that make a whole walk meaningless, so the caller should stop and tell the user.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// Reported instead of silently indexing nothing, which would look like an empty index.
    #[error(
        "cannot open folder {}: {source}; check that the path exists and is readable",
        path.display()
    )]
    RootNotFound {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A device, socket or pipe given as a root: there is nothing sensible to walk.
    #[error(
        "{} is neither a folder nor a regular file; pass a folder of notes or a single note",
        path.display()
    )]
    RootNotDirectory { path: PathBuf },
    /// Carries the pattern as written, since the user has to find it in their own config.
    #[error("invalid {list} pattern {pattern:?}: {source}; fix or remove it")]
    InvalidGlob {
        /// Which list it came from: "include" or "exclude".
        list: &'static str,
        pattern: String,
        #[source]
        source: globset::Error,
    },
}

/// Why a file was left out; each variant tells the user what, if anything, they can change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SkipReason {
    /// Huge files are nearly always exports or logs, and would drown out real notes.
    TooLarge { size: u64, limit: u64 },
    /// Embedding binary data produces noise that matches every query a little.
    Binary,
    /// Permission denied, vanished mid-walk, broken symlink: the text says which.
    Unreadable(String),
    /// Following a symlink out of the chosen folders would index things the user never asked for.
    OutsideRoots,
    /// A symlink that points back at one of its own ancestors.
    Loop,
    /// A document (a PDF) whose text cannot be had: encrypted, damaged, only pictures of
    /// pages, or one that made the reader fail or run out of time. The text says which.
    NoText(String),
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::TooLarge { size, limit } => write!(
                f,
                "file is {}, over the {} limit (raise max_file_bytes to include it)",
                human_bytes(*size),
                human_bytes(*limit)
            ),
            SkipReason::Binary => f.write_str("looks like a binary file, not text"),
            SkipReason::Unreadable(why) => write!(f, "could not be read: {why}"),
            SkipReason::OutsideRoots => f.write_str(concat!(
                "symlink leads outside the indexed folders ",
                "(add its target as a root to include it)"
            )),
            SkipReason::Loop => {
                f.write_str("symlink loop: it points back into one of its own parent folders")
            }
            SkipReason::NoText(why) => write!(f, "no text to index: {why}"),
        }
    }
}

/// One left-out path, ready to be shown as a one-line note after an indexing run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The path as found during the walk (the symlink, not its target), because that is the name
    /// the user sees in their folder.
    pub path: PathBuf,
    pub reason: SkipReason,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "skipped {}: {}",
            crate::pathwire::show(&self.path),
            self.reason
        )
    }
}

/// Lets a single unreadable file be propagated with `?` when the caller does want to stop,
/// e.g. a command that indexes exactly one file.
impl std::error::Error for Skipped {}

/// Phrases the common I/O failures the way a user would describe them; the raw OS text
/// ("os error 13") means little to someone looking at their notes folder.
pub fn io_reason(err: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match err.kind() {
        ErrorKind::PermissionDenied => "permission denied".to_owned(),
        ErrorKind::NotFound => "it disappeared while indexing (or is a broken symlink)".to_owned(),
        _ => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_notes_read_as_one_line_and_name_the_file() {
        let s = Skipped {
            path: PathBuf::from("notes/big.md"),
            reason: SkipReason::TooLarge {
                size: 5 * 1024 * 1024 + 1024 * 200,
                limit: 4 * 1024 * 1024,
            },
        };
        let line = s.to_string();
        assert_eq!(
            line,
            concat!(
                "skipped notes/big.md: file is 5.2 MiB, over the 4.0 MiB limit ",
                "(raise max_file_bytes to include it)"
            )
        );
        assert!(!line.contains('\n'));
        for reason in [
            SkipReason::Binary,
            SkipReason::Unreadable("permission denied".into()),
            SkipReason::OutsideRoots,
            SkipReason::Loop,
        ] {
            let line = Skipped {
                path: PathBuf::from("a/b.txt"),
                reason,
            }
            .to_string();
            assert!(line.starts_with("skipped a/b.txt: "), "{line}");
            assert!(!line.contains('\n'));
        }
    }
}
