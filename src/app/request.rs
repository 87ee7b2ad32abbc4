//! What a client asks of the index — a query, or lines of an indexed file — in one shape for
//! every way in (the owner's socket, `dochash query`, `dochash mcp`), and the one place each is
//! checked and resolved against the index's folders.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::AppError;
use crate::corpus::{CorpusConfig, SkipReason, read_open};
use crate::index::search::Group;
use crate::index::{Db, Filters, IndexError, SearchParams, Selection, split_filters};

/// A query as a client sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryRequest {
    /// What was typed: words to search, and filter words (see [`crate::index::select`]).
    pub text: String,
    pub k: usize,
    #[serde(default)]
    pub group: Group,
    #[serde(default)]
    pub candidates: Option<usize>,
    #[serde(default)]
    pub mode: crate::index::search::Mode,
    /// Only files at or under this folder or file, or matching this glob, inside the indexed
    /// folders (see [`Scope`](crate::index::Scope)): the same as a `path:` word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Filters given apart from the text (command-line flags); they add to the text's.
    #[serde(default, skip_serializing_if = "Filters::is_empty")]
    pub filters: Filters,
}

impl QueryRequest {
    /// A query of `text` for the best `k`, everything else as by default.
    pub fn new(text: impl Into<String>, k: usize) -> Self {
        Self {
            text: text.into(),
            k,
            group: Group::default(),
            candidates: None,
            mode: Default::default(),
            path: None,
            filters: Filters::default(),
        }
    }

    /// The words to search and the search parameters, with the filters (the text's, the
    /// flags' and the path) resolved against `roots` (the index's).
    pub fn plan(&self, roots: &[PathBuf]) -> Result<(String, SearchParams), IndexError> {
        let (words, mut filters) = split_filters(&self.text)?;
        filters.merge(&self.filters);
        if let Some(p) = &self.path {
            filters.path.push(p.clone());
        }
        let selection = if filters.is_empty() {
            None
        } else {
            Some(Arc::new(Selection::resolve(&filters, roots)?))
        };
        Ok((
            words,
            SearchParams {
                k: self.k,
                candidates: self.candidates,
                group: self.group,
                mode: self.mode,
                selection,
                ..Default::default()
            },
        ))
    }
}

/// Most lines one read returns.
pub const MAX_READ_LINES: u32 = 400;
/// Most bytes of text one read returns (whole lines; a longer first line is cut).
pub const MAX_READ_BYTES: usize = 64 * 1024;

/// Lines of a file the index holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadRequest {
    /// Absolute, or relative to one of the indexed folders.
    pub path: String,
    /// First line, 1-based (default 1).
    #[serde(default)]
    pub first: Option<u32>,
    /// Last line, inclusive (default: [`MAX_READ_LINES`] lines from `first`).
    #[serde(default)]
    pub last: Option<u32>,
}

/// What a read returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Excerpt {
    #[serde(flatten, with = "crate::pathwire::field")]
    pub path: PathBuf,
    pub first_line: u32,
    /// The last line returned (fewer than asked when a cap or the file's end came first).
    pub last_line: u32,
    /// Lines in the whole file.
    pub total_lines: u32,
    /// The lines, each ending in `\n`, as the index read them (the line numbers of hits).
    pub text: String,
    /// A cap ([`MAX_READ_LINES`], [`MAX_READ_BYTES`]) cut the range asked for.
    pub truncated: bool,
}

impl ReadRequest {
    /// Reads the lines asked for, but only of a file inside `roots` that the index holds
    /// (`db`): a path that leads out of the folders (`..`, a link), a file the index skips
    /// (ignored, binary, too large) and a missing one are refused, each saying so.
    pub fn read(
        &self,
        roots: &[PathBuf],
        db: &Db,
        corpus: &CorpusConfig,
    ) -> Result<Excerpt, AppError> {
        let refuse = |why: String| AppError::Index(IndexError::Query(why));
        let shown = crate::pathwire::show(Path::new(&self.path));
        if self.path.trim().is_empty() {
            return Err(refuse("read: no path given".into()));
        }
        if self.path.len() > crate::index::scope::MAX_SCOPE_BYTES {
            return Err(refuse("read: the path is too long".into()));
        }
        let first = self.first.unwrap_or(1);
        if first == 0 {
            return Err(refuse("read: lines are numbered from 1".into()));
        }
        let last = match self.last {
            Some(l) if l < first => {
                return Err(refuse(format!(
                    "read: the last line ({l}) is before the first ({first})"
                )));
            }
            Some(l) => l,
            None => first.saturating_add(MAX_READ_LINES - 1),
        };
        let candidates = crate::index::scope::places(Path::new(&self.path), roots);
        let found = match candidates.iter().find(|c| c.symlink_metadata().is_ok()) {
            Some(f) => f.clone(),
            None => match self.lossy_match(db) {
                Some(f) => f,
                None => return Err(refuse(format!("{shown} does not exist"))),
            },
        };
        let canon = crate::fsx::canonicalize(&found)
            .map_err(|e| refuse(format!("{shown}: {}", crate::corpus::io_reason(&e))))?;
        let Some(root) = roots.iter().find(|r| canon.starts_with(r)) else {
            return Err(refuse(format!("{shown} is outside the indexed folders")));
        };
        let rel = canon.strip_prefix(root).unwrap_or(Path::new(""));
        // Read through a handle opened under the root one name at a time, following no link:
        // the file checked above may have been swapped since (for a link leading out, or a
        // FIFO), and what is read must be what is under the root now.
        let load = || {
            let file = crate::fsx::open_beneath(root, rel)
                .map_err(|e| SkipReason::Unreadable(crate::corpus::io_reason(&e)))?;
            read_open(file, crate::corpus::Kind::from_path(&canon), corpus)
        };
        let held = [found.as_path(), canon.as_path()]
            .into_iter()
            .find(|p| matches!(db.file(p), Ok(Some(_))));
        let Some(path) = held.map(Path::to_path_buf) else {
            // Why the index does not hold it, as the index would say.
            let why = match load() {
                Err(reason) => reason.to_string(),
                Ok(_) => "ignored (an ignore file, a hidden name, a file type the index \
                          leaves out) or not indexed yet"
                    .into(),
            };
            return Err(refuse(format!("{shown} is not in the index: {why}")));
        };
        crate::failpoint::hit("read.checked");
        let doc = load().map_err(|reason| refuse(format!("{shown}: {reason}")))?;
        let e = excerpt(path, &doc.text, first, last);
        if first > e.total_lines.max(1) {
            return Err(refuse(format!(
                "{shown} has {} lines; line {first} was asked for",
                e.total_lines
            )));
        }
        Ok(e)
    }
}

impl ReadRequest {
    /// The indexed file whose name, shown with replacement characters (as hits show a name
    /// that is not UTF-8), is the path asked for, when exactly one is.
    fn lossy_match(&self, db: &Db) -> Option<PathBuf> {
        if !self.path.contains('\u{fffd}') {
            return None;
        }
        let files = db.files().ok()?;
        let mut matching = files
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| p.to_string_lossy() == self.path.as_str());
        let one = matching.next()?;
        matching.next().is_none().then_some(one)
    }
}

/// Cuts lines `first..=last` out of `text`, within the caps.
fn excerpt(path: PathBuf, text: &str, first: u32, last: u32) -> Excerpt {
    let total = text.split_inclusive('\n').count() as u32;
    let last_asked = last.min(first.saturating_add(MAX_READ_LINES - 1));
    let mut out = String::new();
    let mut last_line = first.saturating_sub(1);
    let mut truncated = last_asked < last && last_asked < total;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let n = i as u32 + 1;
        if n < first {
            continue;
        }
        if n > last_asked {
            break;
        }
        if out.len() + line.len() > MAX_READ_BYTES {
            truncated = true;
            if out.is_empty() {
                // One enormous line: its start, cut at a character boundary.
                let mut cut = MAX_READ_BYTES;
                while !line.is_char_boundary(cut) {
                    cut -= 1;
                }
                out.push_str(&line[..cut]);
                last_line = n;
            }
            break;
        }
        out.push_str(line);
        last_line = n;
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    Excerpt {
        path,
        first_line: first,
        last_line,
        total_lines: total,
        text: out,
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_excerpt_keeps_to_the_range_and_the_caps() {
        let text: String = (1..=1000).map(|i| format!("line {i}\n")).collect();
        let e = excerpt(PathBuf::from("/n.md"), &text, 3, 5);
        assert_eq!(e.text, "line 3\nline 4\nline 5\n");
        assert_eq!((e.first_line, e.last_line, e.total_lines), (3, 5, 1000));
        assert!(!e.truncated);
        let e = excerpt(PathBuf::from("/n.md"), &text, 1, 5000);
        assert_eq!(e.last_line, MAX_READ_LINES);
        assert!(e.truncated);
        let e = excerpt(PathBuf::from("/n.md"), &text, 998, 5000);
        assert_eq!((e.last_line, e.truncated), (1000, false));
        let long = "é".repeat(MAX_READ_BYTES);
        let e = excerpt(PathBuf::from("/n.md"), &format!("{long}\nnext\n"), 1, 2);
        assert!(
            e.truncated && e.text.len() <= MAX_READ_BYTES + 1,
            "{}",
            e.text.len()
        );
        assert_eq!(e.last_line, 1);
    }
}
