//! Finding the files to index.
//!
//! The walk decides *which* files are candidates; it never opens them (that is
//! [`read_document`](super::read_document)'s job), so it stays cheap enough to re-run on every
//! change notification. Anything it has to leave out is reported as a [`Skipped`] note instead
//! of an error, because one unreadable folder must not stop an index of thousands of notes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use ignore::{DirEntry, WalkBuilder};
use serde::{Deserialize, Serialize};

use super::error::{CorpusError, SkipReason, Skipped, io_reason};

/// Version-control folders that are not hidden by a leading dot, so `hidden(true)` would miss
/// them; their contents are never notes.
const VCS_DIRS: &[&str] = &["CVS", "_darcs", "_MTN"];

/// A per-folder ignore file (gitignore syntax) for notes that should stay in git but out of
/// search, without touching `.gitignore`.
pub const IGNORE_FILE: &str = ".dochashignore";

/// What to index. Field semantics are chosen so that the defaults index a typical notes folder
/// with no configuration at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CorpusConfig {
    /// File extensions to index, without the dot; compared case-insensitively so `README.MD`
    /// counts. An empty list accepts every extension (binary detection still applies).
    pub extensions: Vec<String>,
    /// Globs a file's path relative to its root must match, when non-empty. Like `.gitignore`,
    /// a pattern without `/` matches at any depth, `*` does not cross `/`, and `**` does.
    pub include: Vec<String>,
    /// Globs (same syntax as `include`) for files and folders to leave out; wins over
    /// `include`, and an excluded folder is not descended into at all.
    pub exclude: Vec<String>,
    /// Larger files are skipped with [`SkipReason::TooLarge`]: they are almost always exports
    /// or logs that would swamp real notes in the results.
    pub max_file_bytes: u64,
    /// Follow symlinks to files and folders, as long as their target stays inside the roots.
    pub follow_symlinks: bool,
}

impl Default for CorpusConfig {
    fn default() -> Self {
        let exts = [
            "md", "markdown", "txt", "text", "org", "rst", "adoc", "asciidoc", "html", "htm",
            "pdf", "docx", "odt", "epub",
        ];
        CorpusConfig {
            extensions: exts.iter().map(|s| (*s).to_owned()).collect(),
            include: Vec::new(),
            exclude: Vec::new(),
            max_file_bytes: 4 * 1024 * 1024,
            follow_symlinks: true,
        }
    }
}

impl CorpusConfig {
    /// Largest file read at `path`: `max_file_bytes` of text, more for a document whose
    /// bytes are mostly not text (see [`super::Kind::byte_limit`]).
    pub fn byte_limit(&self, path: &Path) -> u64 {
        super::Kind::from_path(path).byte_limit(self.max_file_bytes)
    }
}

/// A file that passed every filter and should be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    /// Canonical absolute path: the identity of the file, so two routes to it count once.
    pub path: PathBuf,
    /// Canonical root that contains `path` (so `path.strip_prefix(root)` always works and gives
    /// a short name for display). For a root that is a single file this is that file's folder.
    pub root: PathBuf,
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch (negative before it), compared with
    /// the stored value to notice edits without hashing every file; 0 where the platform has
    /// no modification time.
    pub mtime_ns: i128,
}

/// Result of [`walk`]: what to read, and what was left out and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walk {
    /// Sorted by path, each file once.
    pub files: Vec<SourceFile>,
    /// Sorted by path; meant to be shown to the user as one line each.
    pub skipped: Vec<Skipped>,
}

/// Walks `roots` and returns the candidate files.
///
/// Ignore rules are those of `git` (`.gitignore`, `.git/info/exclude`, the global excludes
/// file) plus `.ignore` and [`IGNORE_FILE`], applied even outside a git repository because a
/// notes folder is often not one; hidden files and folders are skipped. A root that is a single
/// file is always indexed, whatever its extension and the globs say, because naming it
/// explicitly is a stronger signal than a config default; the size limit still applies.
///
/// Fails only if a root cannot be used at all or a glob does not parse; all per-file trouble is
/// reported in [`Walk::skipped`].
pub fn walk(roots: &[PathBuf], cfg: &CorpusConfig) -> Result<Walk, CorpusError> {
    let filters = Arc::new(Filters::new(cfg)?);
    let roots = resolve_roots(roots)?;
    let scope = Arc::new(Scope::new(&roots));
    let mut state = WalkState::default();

    for root in &roots {
        match root {
            Root::File(path) => state.add_file(path, false, path, &scope, cfg),
            Root::Dir(dir) => walk_dir(dir, cfg, &filters, &scope, &mut state),
        }
    }
    Ok(state.finish())
}

enum Root {
    Dir(PathBuf),
    File(PathBuf),
}

/// Canonicalises roots up front so that containment checks compare like with like and a
/// root given through a symlink or with `..` still works.
fn resolve_roots(roots: &[PathBuf]) -> Result<Vec<Root>, CorpusError> {
    let mut out = Vec::with_capacity(roots.len());
    for given in roots {
        let not_found = |source| CorpusError::RootNotFound {
            path: given.clone(),
            source,
        };
        let canonical = crate::fsx::canonicalize(given).map_err(not_found)?;
        let meta = fs::metadata(&canonical).map_err(not_found)?;
        if meta.is_dir() {
            out.push(Root::Dir(canonical));
        } else if meta.is_file() {
            out.push(Root::File(canonical));
        } else {
            return Err(CorpusError::RootNotDirectory {
                path: given.clone(),
            });
        }
    }
    Ok(out)
}

/// The set of places a file may live in; shared with the walker's filter callback.
struct Scope {
    dirs: Vec<PathBuf>,
    files: Vec<PathBuf>,
}

impl Scope {
    fn new(roots: &[Root]) -> Scope {
        let mut scope = Scope {
            dirs: Vec::new(),
            files: Vec::new(),
        };
        for root in roots {
            match root {
                Root::Dir(d) => scope.dirs.push(d.clone()),
                Root::File(f) => scope.files.push(f.clone()),
            }
        }
        scope
    }

    fn contains(&self, canonical: &Path) -> bool {
        self.dirs.iter().any(|d| canonical.starts_with(d))
            || self.files.iter().any(|f| f == canonical)
    }

    /// The root a file is attributed to: the one being walked if it contains the file,
    /// otherwise the first root that does (a symlink from one root into another).
    fn owner(&self, walking: &Path, canonical: &Path) -> PathBuf {
        if canonical.starts_with(walking) {
            return walking.to_path_buf();
        }
        self.dirs
            .iter()
            .find(|d| canonical.starts_with(d))
            .cloned()
            .unwrap_or_else(|| parent_or_self(canonical))
    }
}

fn parent_or_self(path: &Path) -> PathBuf {
    path.parent()
        .map_or_else(|| path.to_path_buf(), Path::to_path_buf)
}

/// Extension and glob filters, compiled once.
struct Filters {
    extensions: Vec<String>,
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl Filters {
    fn new(cfg: &CorpusConfig) -> Result<Filters, CorpusError> {
        let extensions = cfg
            .extensions
            .iter()
            .map(|e| e.trim().trim_start_matches('.').to_lowercase())
            .filter(|e| !e.is_empty())
            .collect();
        Ok(Filters {
            extensions,
            include: compile_globs("include", &cfg.include)?,
            exclude: compile_globs("exclude", &cfg.exclude)?,
        })
    }

    fn extension_ok(&self, path: &Path) -> bool {
        if self.extensions.is_empty() {
            return true;
        }
        let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
            return false;
        };
        self.extensions
            .iter()
            .any(|want| want.eq_ignore_ascii_case(ext))
    }

    fn excluded(&self, rel: &Path) -> bool {
        self.exclude.as_ref().is_some_and(|g| g.is_match(rel))
    }

    /// A file is included if it or any folder above it matches, so `include = ["journal"]`
    /// means the whole folder, as it would in a `.gitignore`.
    fn included(&self, rel: &Path) -> bool {
        self.include.as_ref().is_none_or(|g| {
            rel.ancestors()
                .filter(|a| !a.as_os_str().is_empty())
                .any(|a| g.is_match(a))
        })
    }
}

/// Compiles user globs with `.gitignore`-like conventions, since that is the syntax people
/// already know for "which files": a leading `/` or `./` anchors (and is dropped), a trailing
/// `/` is dropped, and a pattern with no `/` matches at any depth.
fn compile_globs(list: &'static str, patterns: &[String]) -> Result<Option<GlobSet>, CorpusError> {
    let mut builder = GlobSetBuilder::new();
    let mut any = false;
    for pattern in patterns {
        let trimmed = pattern.trim();
        let anchored = trimmed
            .strip_prefix("./")
            .or_else(|| trimmed.strip_prefix('/'));
        let body = anchored.unwrap_or(trimmed).trim_end_matches('/');
        if body.is_empty() {
            continue;
        }
        let effective = if anchored.is_none() && !body.contains('/') {
            format!("**/{body}")
        } else {
            body.to_owned()
        };
        let glob = GlobBuilder::new(&effective)
            .literal_separator(true)
            .build()
            .map_err(|source| CorpusError::InvalidGlob {
                list,
                pattern: pattern.clone(),
                source,
            })?;
        builder.add(glob);
        any = true;
    }
    if !any {
        return Ok(None);
    }
    let set = builder.build().map_err(|source| CorpusError::InvalidGlob {
        list,
        pattern: patterns.join(", "),
        source,
    })?;
    Ok(Some(set))
}

/// Accumulates results across roots; keyed by canonical path so every route to a file
/// collapses into one entry, and the first route (in root order, then name order) wins.
#[derive(Default)]
struct WalkState {
    files: BTreeMap<PathBuf, SourceFile>,
    seen: HashSet<PathBuf>,
    skipped: Vec<Skipped>,
    /// Canonical form of each directory seen, so files that are not symlinks themselves need
    /// no `realpath` call of their own.
    canonical_dirs: HashMap<PathBuf, PathBuf>,
}

impl WalkState {
    fn skip(&mut self, path: &Path, reason: SkipReason) {
        self.skipped.push(Skipped {
            path: path.to_path_buf(),
            reason,
        });
    }

    /// Records one candidate file, found at `found` inside the walk of `walking`.
    fn add_file(
        &mut self,
        found: &Path,
        is_link: bool,
        walking: &Path,
        scope: &Scope,
        cfg: &CorpusConfig,
    ) {
        let canonical = match self.canonicalize_file(found, is_link) {
            Ok(c) => c,
            Err(e) => return self.skip(found, SkipReason::Unreadable(io_reason(&e))),
        };
        if !scope.contains(&canonical) {
            return self.skip(found, SkipReason::OutsideRoots);
        }
        if !self.seen.insert(canonical.clone()) {
            return;
        }
        let meta = match fs::metadata(&canonical) {
            Ok(m) => m,
            Err(e) => return self.skip(found, SkipReason::Unreadable(io_reason(&e))),
        };
        let limit = cfg.byte_limit(&canonical);
        if meta.len() > limit {
            let reason = SkipReason::TooLarge {
                size: meta.len(),
                limit,
            };
            return self.skip(found, reason);
        }
        let mtime_ns = meta
            .modified()
            .ok()
            .map_or(0, |t| match t.duration_since(UNIX_EPOCH) {
                Ok(d) => d.as_nanos() as i128,
                Err(before) => -(before.duration().as_nanos() as i128),
            });
        // Only a single-file root is walked as itself.
        let root = if walking == canonical {
            parent_or_self(&canonical)
        } else {
            scope.owner(walking, &canonical)
        };
        let file = SourceFile {
            path: canonical.clone(),
            root,
            size: meta.len(),
            mtime_ns,
        };
        self.files.insert(canonical, file);
    }

    fn canonicalize_file(&mut self, found: &Path, is_link: bool) -> std::io::Result<PathBuf> {
        match (is_link, found.parent(), found.file_name()) {
            (false, Some(parent), Some(name)) => {
                if let Some(dir) = self.canonical_dirs.get(parent) {
                    return Ok(dir.join(name));
                }
                let dir = crate::fsx::canonicalize(parent)?;
                self.canonical_dirs
                    .insert(parent.to_path_buf(), dir.clone());
                Ok(dir.join(name))
            }
            _ => crate::fsx::canonicalize(found),
        }
    }

    fn finish(mut self) -> Walk {
        self.skipped.sort_by(|a, b| a.path.cmp(&b.path));
        self.skipped.dedup();
        Walk {
            files: self.files.into_values().collect(),
            skipped: self.skipped,
        }
    }
}

/// Skip notes produced inside the walker's filter callback, which must be `Send + Sync`.
type SharedSkips = Arc<Mutex<Vec<Skipped>>>;

fn walk_dir(
    dir: &Path,
    cfg: &CorpusConfig,
    filters: &Arc<Filters>,
    scope: &Arc<Scope>,
    state: &mut WalkState,
) {
    let pruned: SharedSkips = Arc::default();
    let mut builder = WalkBuilder::new(dir);
    builder
        .follow_links(cfg.follow_symlinks)
        .hidden(true)
        .ignore(true)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(true)
        .parents(true)
        .require_git(false)
        .add_custom_ignore_filename(IGNORE_FILE)
        .sort_by_file_name(|a, b| a.cmp(b));
    {
        let root = dir.to_path_buf();
        let filters = Arc::clone(filters);
        let scope = Arc::clone(scope);
        let pruned = Arc::clone(&pruned);
        builder.filter_entry(move |entry| keep_entry(entry, &root, &filters, &scope, &pruned));
    }

    for item in builder.build() {
        let entry = match item {
            Ok(entry) => entry,
            Err(err) => {
                record_walk_error(err, None, dir, &mut state.skipped);
                continue;
            }
        };
        if let Some(err) = entry.error() {
            // Problems in an ignore file (a bad pattern) only weaken filtering; they are worth
            // a log line but say nothing about whether this entry can be indexed.
            tracing::warn!(path = %entry.path().display(), "problem in ignore file: {err}");
        }
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        if !filters.extension_ok(path) {
            continue;
        }
        let rel = path.strip_prefix(dir).unwrap_or(path);
        if !filters.included(rel) {
            continue;
        }
        state.add_file(path, entry.path_is_symlink(), dir, scope, cfg);
    }

    let mut pruned = pruned
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    state.skipped.append(&mut pruned);
}

/// Decides during the walk whether to descend into or yield an entry. Excluded folders and
/// symlinked folders leading outside the roots are cut off here, before their (possibly huge)
/// contents are listed.
fn keep_entry(
    entry: &DirEntry,
    root: &Path,
    filters: &Filters,
    scope: &Scope,
    pruned: &SharedSkips,
) -> bool {
    let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
    if is_dir
        && entry
            .file_name()
            .to_str()
            .is_some_and(|n| VCS_DIRS.contains(&n))
    {
        return false;
    }
    let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
    if filters.excluded(rel) {
        return false;
    }
    if is_dir && entry.path_is_symlink() {
        // If the target cannot be resolved, let the walker report the error itself.
        if let Ok(target) = crate::fsx::canonicalize(entry.path())
            && !scope.contains(&target)
        {
            let note = Skipped {
                path: entry.path().to_path_buf(),
                reason: SkipReason::OutsideRoots,
            };
            pruned
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(note);
            return false;
        }
    }
    true
}

/// Turns a walker error into skip notes, keeping the most specific path it carries.
fn record_walk_error(
    err: ignore::Error,
    path: Option<PathBuf>,
    root: &Path,
    out: &mut Vec<Skipped>,
) {
    use ignore::Error as E;
    match err {
        E::WithPath { path, err } => record_walk_error(*err, Some(path), root, out),
        E::WithDepth { err, .. } | E::WithLineNumber { err, .. } => {
            record_walk_error(*err, path, root, out)
        }
        E::Partial(errs) => {
            for err in errs {
                record_walk_error(err, path.clone(), root, out);
            }
        }
        E::Loop { child, .. } => out.push(Skipped {
            path: child,
            reason: SkipReason::Loop,
        }),
        E::Io(io) => out.push(Skipped {
            path: path.unwrap_or_else(|| root.to_path_buf()),
            reason: SkipReason::Unreadable(io_reason(&io)),
        }),
        other => {
            // Glob and type-definition errors come from ignore files, not from notes.
            let at = path.unwrap_or_else(|| root.to_path_buf());
            tracing::warn!(path = %at.display(), "problem in ignore file: {other}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(root: &Path, rel: &str, contents: &str) -> PathBuf {
        let p = root.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, contents).unwrap();
        p
    }

    /// Names of indexed files relative to their root, which is what the tests reason about.
    fn names(w: &Walk) -> Vec<String> {
        w.files
            .iter()
            .map(|f| {
                f.path
                    .strip_prefix(&f.root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/")
            })
            .collect()
    }

    fn walk_one(root: &Path, cfg: &CorpusConfig) -> Walk {
        walk(&[root.to_path_buf()], cfg).unwrap()
    }

    #[test]
    fn respects_gitignore_outside_a_repo_and_skips_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(r, ".gitignore", "build/\nsecret.md\n");
        write(r, ".ignore", "scratch.md\n");
        write(r, "sub/.dochashignore", "private.txt\n");
        write(r, "sub/private.txt", "p");
        write(r, "a.md", "a");
        write(r, "secret.md", "s");
        write(r, "scratch.md", "s");
        write(r, "build/out.md", "b");
        write(r, ".hidden/h.md", "h");
        write(r, ".dot.md", "d");
        write(r, "sub/b.txt", "b");
        write(r, "CVS/entries.txt", "c");
        let w = walk_one(r, &CorpusConfig::default());
        assert_eq!(names(&w), ["a.md", "sub/b.txt"]);
        assert!(w.skipped.is_empty(), "{:?}", w.skipped);
    }

    #[test]
    fn git_info_exclude_is_respected() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(r, ".git/info/exclude", "private.md\n");
        write(r, "private.md", "p");
        write(r, "public.md", "p");
        assert_eq!(names(&walk_one(r, &CorpusConfig::default())), ["public.md"]);
    }

    #[test]
    fn extension_filter_is_case_insensitive() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(r, "A.MD", "a");
        write(r, "b.org", "b");
        write(r, "c.png", "c");
        write(r, "Makefile", "m");
        write(r, "d.rs", "d");
        assert_eq!(
            names(&walk_one(r, &CorpusConfig::default())),
            ["A.MD", "b.org"]
        );
        let cfg = CorpusConfig {
            extensions: vec![".RS".into()],
            ..CorpusConfig::default()
        };
        assert_eq!(names(&walk_one(r, &cfg)), ["d.rs"]);
    }

    #[test]
    fn include_and_exclude_globs_with_exclude_winning() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(r, "journal/2024/jan.md", "j");
        write(r, "journal/2024/draft-feb.md", "j");
        write(r, "journal/top.md", "j");
        write(r, "work/plan.md", "w");
        write(r, "work/drafts/idea.md", "w");
        let cfg = CorpusConfig {
            include: vec!["journal/**".into()],
            exclude: vec!["draft-*".into()],
            ..CorpusConfig::default()
        };
        assert_eq!(
            names(&walk_one(r, &cfg)),
            ["journal/2024/jan.md", "journal/top.md"]
        );
        let cfg = CorpusConfig {
            exclude: vec!["drafts/".into(), "/journal".into()],
            ..CorpusConfig::default()
        };
        assert_eq!(names(&walk_one(r, &cfg)), ["work/plan.md"]);
        let cfg = CorpusConfig {
            include: vec!["journal/*.md".into()],
            ..CorpusConfig::default()
        };
        assert_eq!(
            names(&walk_one(r, &cfg)),
            ["journal/top.md"],
            "`*` does not cross folders"
        );
    }

    #[test]
    fn invalid_glob_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = CorpusConfig {
            exclude: vec!["a[".into()],
            ..CorpusConfig::default()
        };
        let err = walk(&[dir.path().to_path_buf()], &cfg).unwrap_err();
        assert!(matches!(
            err,
            CorpusError::InvalidGlob {
                list: "exclude",
                ..
            }
        ));
        assert!(err.to_string().contains("\"a[\""), "{err}");
    }

    #[test]
    fn too_large_files_are_skipped_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let big = write(r, "big.md", &"x".repeat(2000));
        write(r, "small.md", "ok");
        let cfg = CorpusConfig {
            max_file_bytes: 1000,
            ..CorpusConfig::default()
        };
        let w = walk_one(r, &cfg);
        assert_eq!(names(&w), ["small.md"]);
        assert_eq!(w.skipped.len(), 1);
        assert_eq!(w.skipped[0].path.file_name(), big.file_name());
        assert_eq!(
            w.skipped[0].reason,
            SkipReason::TooLarge {
                size: 2000,
                limit: 1000
            }
        );
    }

    #[test]
    fn files_carry_canonical_path_root_size_and_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(r, "n/a.md", "hello");
        // Give the root in a roundabout way; results must still be canonical.
        let roundabout = r.join("n").join("..");
        let w = walk(&[roundabout], &CorpusConfig::default()).unwrap();
        let canon_root = crate::fsx::canonicalize(r).unwrap();
        assert_eq!(w.files.len(), 1);
        let f = &w.files[0];
        assert_eq!(f.path, canon_root.join("n/a.md"));
        assert_eq!(f.root, canon_root);
        assert_eq!(f.size, 5);
        let expected = fs::metadata(&f.path)
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap();
        assert_eq!(f.mtime_ns, expected.as_nanos() as i128);
    }

    #[test]
    fn missing_root_and_odd_roots() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = walk(std::slice::from_ref(&missing), &CorpusConfig::default()).unwrap_err();
        assert!(matches!(err, CorpusError::RootNotFound { .. }));
        assert!(
            err.to_string().contains(&*missing.to_string_lossy()),
            "{err}"
        );
        assert_eq!(
            walk(&[], &CorpusConfig::default()).unwrap(),
            Walk::default()
        );
    }

    #[test]
    fn a_single_file_root_is_indexed_whatever_its_extension() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "notes.log", "x");
        let w = walk(std::slice::from_ref(&f), &CorpusConfig::default()).unwrap();
        assert_eq!(w.files.len(), 1);
        assert_eq!(w.files[0].path, crate::fsx::canonicalize(&f).unwrap());
        assert_eq!(
            w.files[0].root,
            crate::fsx::canonicalize(dir.path()).unwrap()
        );
    }

    #[test]
    fn overlapping_roots_list_each_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(r, "sub/a.md", "a");
        write(r, "b.md", "b");
        let w = walk(
            &[r.join("sub"), r.to_path_buf(), r.join("sub/a.md")],
            &CorpusConfig::default(),
        )
        .unwrap();
        assert_eq!(w.files.len(), 2);
        let canon = crate::fsx::canonicalize(r).unwrap();
        assert_eq!(w.files[0].path, canon.join("b.md"));
        assert_eq!(w.files[1].path, canon.join("sub/a.md"));
        assert_eq!(
            w.files[1].root,
            canon.join("sub"),
            "first root in order wins"
        );
    }

    #[cfg(unix)]
    mod symlinks {
        use super::*;
        use std::os::unix::fs::symlink;

        #[test]
        fn a_symlink_loop_neither_hangs_nor_fails() {
            let dir = tempfile::tempdir().unwrap();
            let r = dir.path();
            write(r, "a/note.md", "n");
            symlink(r.join("a"), r.join("a/back")).unwrap();
            symlink(r, r.join("a/top")).unwrap();
            let w = walk_one(r, &CorpusConfig::default());
            assert_eq!(names(&w), ["a/note.md"]);
            let loops: Vec<_> = w
                .skipped
                .iter()
                .filter(|s| s.reason == SkipReason::Loop)
                .collect();
            assert_eq!(loops.len(), 2, "{:?}", w.skipped);
        }

        #[test]
        fn symlinks_leading_outside_the_root_are_skipped() {
            let outside = tempfile::tempdir().unwrap();
            write(outside.path(), "secret.md", "s");
            write(outside.path(), "dir/deep.md", "d");
            let dir = tempfile::tempdir().unwrap();
            let r = dir.path();
            write(r, "mine.md", "m");
            symlink(outside.path().join("secret.md"), r.join("link.md")).unwrap();
            symlink(outside.path().join("dir"), r.join("linkdir")).unwrap();
            let w = walk_one(r, &CorpusConfig::default());
            assert_eq!(names(&w), ["mine.md"]);
            let skipped: Vec<_> = w
                .skipped
                .iter()
                .map(|s| (s.path.file_name().unwrap().to_owned(), s.reason.clone()))
                .collect();
            assert_eq!(
                skipped,
                [
                    ("link.md".into(), SkipReason::OutsideRoots),
                    ("linkdir".into(), SkipReason::OutsideRoots)
                ]
            );
        }

        #[test]
        fn a_file_reachable_by_several_links_appears_once() {
            let dir = tempfile::tempdir().unwrap();
            let r = dir.path();
            write(r, "real/note.md", "n");
            symlink(r.join("real/note.md"), r.join("alias1.md")).unwrap();
            symlink(r.join("real/note.md"), r.join("alias2.md")).unwrap();
            symlink(r.join("real"), r.join("realdir")).unwrap();
            let w = walk_one(r, &CorpusConfig::default());
            assert_eq!(w.files.len(), 1, "{:?}", w.files);
            assert_eq!(
                w.files[0].path,
                crate::fsx::canonicalize(r.join("real/note.md")).unwrap()
            );
            assert!(w.skipped.is_empty(), "{:?}", w.skipped);
        }

        #[test]
        fn a_link_into_another_root_is_inside_the_roots() {
            let a = tempfile::tempdir().unwrap();
            let b = tempfile::tempdir().unwrap();
            write(b.path(), "b.md", "b");
            symlink(b.path().join("b.md"), a.path().join("link.md")).unwrap();
            let w = walk(
                &[a.path().to_path_buf(), b.path().to_path_buf()],
                &CorpusConfig::default(),
            )
            .unwrap();
            assert_eq!(w.files.len(), 1);
            assert_eq!(
                w.files[0].root,
                crate::fsx::canonicalize(b.path()).unwrap(),
                "root contains the path"
            );
            assert!(w.skipped.is_empty());
        }

        #[test]
        fn broken_links_are_unreadable_and_links_ignored_when_not_following() {
            let dir = tempfile::tempdir().unwrap();
            let r = dir.path();
            write(r, "real.md", "r");
            symlink(r.join("missing.md"), r.join("broken.md")).unwrap();
            symlink(r.join("real.md"), r.join("alias.md")).unwrap();
            let w = walk_one(r, &CorpusConfig::default());
            assert_eq!(names(&w), ["real.md"]);
            assert_eq!(w.skipped.len(), 1, "{:?}", w.skipped);
            assert!(matches!(w.skipped[0].reason, SkipReason::Unreadable(_)));
            assert!(w.skipped[0].path.ends_with("broken.md"));

            let cfg = CorpusConfig {
                follow_symlinks: false,
                ..CorpusConfig::default()
            };
            let w = walk_one(r, &cfg);
            assert_eq!(names(&w), ["real.md"]);
            assert!(w.skipped.is_empty(), "{:?}", w.skipped);
        }

        #[test]
        fn unreadable_folder_is_a_note_not_a_failure() {
            use std::os::unix::fs::PermissionsExt;
            let dir = tempfile::tempdir().unwrap();
            let r = dir.path();
            write(r, "ok.md", "o");
            write(r, "locked/x.md", "x");
            fs::set_permissions(r.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
            // Root ignores permissions; then the folder is simply readable and nothing is skipped.
            let readable_anyway = fs::read_dir(r.join("locked")).is_ok();
            let w = walk_one(r, &CorpusConfig::default());
            fs::set_permissions(r.join("locked"), fs::Permissions::from_mode(0o755)).unwrap();
            if readable_anyway {
                assert_eq!(names(&w), ["locked/x.md", "ok.md"]);
            } else {
                assert_eq!(names(&w), ["ok.md"]);
                assert_eq!(w.skipped.len(), 1, "{:?}", w.skipped);
                assert_eq!(
                    w.skipped[0].reason,
                    SkipReason::Unreadable("permission denied".into())
                );
            }
        }
    }
}
