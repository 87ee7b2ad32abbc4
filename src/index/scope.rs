//! Where a search may look: a folder, a file or a glob inside the indexed folders.
//!
//! An agent (`dochash mcp`'s `search`) or a person narrows a search to part of their notes; the
//! pattern is resolved once against the index's roots, so a relative pattern means the same
//! under every root and nothing outside the roots can be named (a path that leads out of them,
//! through `..` or a link, is refused rather than silently matching nothing).

use std::path::{Component, Path, PathBuf};

use globset::{Glob, GlobMatcher};

use super::IndexError;

/// Longest pattern taken; a path filter is a few words, not a document.
pub const MAX_SCOPE_BYTES: usize = 4096;

#[derive(Debug, Clone)]
pub struct Scope {
    kind: Kind,
    roots: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
enum Kind {
    /// Files at or under these paths (one per root the relative path exists under).
    Under(Vec<PathBuf>),
    /// A glob without `/` tests the file name (`*.md`, as ripgrep's `-g` does); with one, the
    /// path from its root.
    Glob {
        matcher: GlobMatcher,
        name_only: bool,
    },
}

impl Scope {
    /// Resolves `pattern` against `roots` (canonical paths, as the index keeps them).
    pub fn parse(pattern: &str, roots: &[PathBuf]) -> Result<Scope, IndexError> {
        let bad = |msg: &str| IndexError::Query(format!("path filter {pattern:?}: {msg}"));
        let pattern = pattern.trim();
        if pattern.is_empty() {
            return Err(bad("empty"));
        }
        if pattern.len() > MAX_SCOPE_BYTES {
            return Err(bad(&format!("longer than {MAX_SCOPE_BYTES} bytes")));
        }
        if pattern.contains(['*', '?', '[', '{']) {
            let rel = pattern.trim_start_matches("./");
            // Rooted or on a drive (Windows' `/tmp/*.md`, `C:*.md` are not "absolute", but
            // name no place inside the roots either).
            let rooted = Path::new(rel).has_root()
                || matches!(
                    Path::new(rel).components().next(),
                    Some(Component::Prefix(_))
                );
            if rooted {
                return Err(bad(
                    "a glob is matched against paths inside the indexed folders; write it relative to them",
                ));
            }
            if Path::new(rel)
                .components()
                .any(|c| matches!(c, Component::ParentDir))
            {
                return Err(bad("a glob may not lead out of the indexed folders (..)"));
            }
            let glob = Glob::new(rel).map_err(|e| bad(&e.kind().to_string()))?;
            return Ok(Scope {
                kind: Kind::Glob {
                    matcher: glob.compile_matcher(),
                    name_only: !rel.contains('/'),
                },
                roots: roots.to_vec(),
            });
        }
        let candidates = places(Path::new(pattern), roots);
        let mut under = Vec::new();
        let mut outside = false;
        for c in candidates {
            // Resolving `..` and links first: the filter names what is really there.
            let Ok(canon) = crate::fsx::canonicalize(&c) else {
                continue;
            };
            if roots.iter().any(|r| canon.starts_with(r)) {
                under.push(canon);
            } else {
                outside = true;
            }
        }
        if under.is_empty() {
            return Err(bad(if outside {
                "outside the indexed folders"
            } else {
                "no such folder or file in the indexed folders"
            }));
        }
        under.sort();
        under.dedup();
        Ok(Scope {
            kind: Kind::Under(under),
            roots: roots.to_vec(),
        })
    }

    /// Whether a file of the index is in scope.
    pub fn holds(&self, path: &Path) -> bool {
        match &self.kind {
            Kind::Under(dirs) => dirs.iter().any(|d| path.starts_with(d)),
            Kind::Glob { matcher, name_only } => {
                if *name_only {
                    return path.file_name().is_some_and(|n| matcher.is_match(n));
                }
                self.roots.iter().any(|r| {
                    path.strip_prefix(r)
                        .is_ok_and(|rel| !rel.as_os_str().is_empty() && matcher.is_match(rel))
                })
            }
        }
    }
}

/// Where a path a client gives may be: itself when absolute, else under each folder root (a
/// relative path names the same place under every root). Nothing is resolved or checked here.
pub fn places(given: &Path, roots: &[PathBuf]) -> Vec<PathBuf> {
    if given.is_absolute() {
        return vec![given.to_path_buf()];
    }
    roots
        .iter()
        .filter(|r| r.is_dir())
        .map(|r| r.join(given))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let root = crate::fsx::canonicalize(d.path()).unwrap().join("notes");
        std::fs::create_dir_all(root.join("work/meetings")).unwrap();
        std::fs::create_dir_all(root.join("home")).unwrap();
        std::fs::write(root.join("work/meetings/a.md"), "a").unwrap();
        std::fs::write(root.join("home/b.txt"), "b").unwrap();
        (d, root)
    }

    #[test]
    fn a_folder_relative_to_a_root_holds_what_is_under_it() {
        let (_d, root) = tree();
        let roots = vec![root.clone()];
        let s = Scope::parse("work", &roots).unwrap();
        assert!(s.holds(&root.join("work/meetings/a.md")));
        assert!(!s.holds(&root.join("home/b.txt")));
        // Not a prefix of the name: `work` does not hold `workshop`.
        assert!(!s.holds(&root.join("workshop/c.md")));
        let abs = Scope::parse(root.join("home").to_str().unwrap(), &roots).unwrap();
        assert!(abs.holds(&root.join("home/b.txt")));
    }

    #[test]
    fn globs_match_names_or_paths_from_the_root() {
        let (_d, root) = tree();
        let roots = vec![root.clone()];
        let names = Scope::parse("*.md", &roots).unwrap();
        assert!(names.holds(&root.join("work/meetings/a.md")));
        assert!(!names.holds(&root.join("home/b.txt")));
        let paths = Scope::parse("work/**", &roots).unwrap();
        assert!(paths.holds(&root.join("work/meetings/a.md")));
        assert!(!paths.holds(&root.join("home/b.txt")));
    }

    #[test]
    fn nothing_outside_the_roots_can_be_named() {
        let (d, root) = tree();
        let roots = vec![root.clone()];
        std::fs::write(d.path().join("secret.md"), "s").unwrap();
        let outside = d.path().to_str().unwrap().to_string();
        for p in ["../secret.md", &outside, "work/../../secret.md"] {
            let e = Scope::parse(p, &roots).unwrap_err().to_string();
            assert!(e.contains("outside the indexed folders"), "{p}: {e}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(d.path(), root.join("out")).unwrap();
            let e = Scope::parse("out", &roots).unwrap_err().to_string();
            assert!(e.contains("outside"), "{e}");
        }
        for p in ["../*.md", "/tmp/*.md"] {
            assert!(Scope::parse(p, &roots).is_err(), "{p}");
        }
        // A file given as a root is no folder that relative filters lead into.
        let file_root = vec![root.join("home/b.txt")];
        let e = Scope::parse("work", &file_root).unwrap_err().to_string();
        assert!(e.contains("no such folder"), "{e}");
        let e = Scope::parse("nowhere", &roots).unwrap_err().to_string();
        assert!(e.contains("no such folder"), "{e}");
        assert!(Scope::parse("[", &roots).is_err());
        assert!(Scope::parse("  ", &roots).is_err());
    }
}
