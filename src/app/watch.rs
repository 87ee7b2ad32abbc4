//! File watching: any change under the roots schedules one incremental update. The update
//! itself compares sizes, mtimes and hashes, so editors' atomic saves (write a temp file, rename
//! it over the note), renames and bursts of thousands of events all reduce to the same thing.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify_debouncer_full::notify::RecursiveMode;
use notify_debouncer_full::notify::event::{
    AccessKind, AccessMode, EventKind, MetadataKind, ModifyKind,
};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

/// How long file events are collected before an update runs: long enough to merge an editor's
/// write-temp-then-rename and a `git checkout` burst, short enough to stay well under the 1 s a
/// saved note may take to become searchable.
pub const WATCH_DEBOUNCE: Duration = Duration::from_millis(150);

pub type Watcher = Debouncer<notify_debouncer_full::notify::RecommendedWatcher, RecommendedCache>;

/// Watches `roots`; `changed` is called once per debounced batch of events that may have
/// changed a note's content (never for the dochash home's own writes).
pub(super) fn watch(
    roots: &[PathBuf],
    home: &Path,
    changed: impl Fn() + Send + 'static,
    armed: &Armed,
) -> notify_debouncer_full::notify::Result<Watcher> {
    // The index may live inside a watched folder; its own writes must not trigger updates.
    let home = crate::fsx::canonicalize(home).unwrap_or_else(|_| home.to_path_buf());
    let gone = armed.gone.clone();
    let mut debouncer = new_debouncer(WATCH_DEBOUNCE, None, move |res: DebounceEventResult| {
        if let Ok(events) = &res {
            note_gone(&gone, events.iter().map(|e| &e.event));
        }
        let relevant = match res {
            Ok(events) => events.iter().any(|e| {
                may_change_content(&e.kind) && e.paths.iter().any(|p| !p.starts_with(&home))
            }),
            // A watcher error (e.g. the kernel's event queue overflowed) may hide changes:
            // an update finds them all.
            Err(_) => true,
        };
        if relevant {
            changed();
        }
    })?;
    for root in roots {
        add(&mut debouncer, root)?;
    }
    Ok(debouncer)
}

/// Whether an event can mean that a file's content, name or presence changed. Opening,
/// reading and closing a file without writing — which the owner's own walk and the preview do
/// all the time — cannot, and counting them made an idle owner re-index itself forever.
fn may_change_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        // Create, remove, data and name changes, permission changes (a file may have become
        // unreadable), and whatever a backend cannot classify.
        _ => true,
    }
}

/// Watches one more root; a root that does not exist (an unmounted drive) is left alone.
pub(super) fn add(w: &mut Watcher, root: &Path) -> notify_debouncer_full::notify::Result<()> {
    if root.is_dir() {
        w.watch(root, RecursiveMode::Recursive)?;
    } else if root.is_file()
        && let Some(parent) = root.parent()
    {
        // A single-file root is replaced, not modified, by atomic saves: watch its folder.
        w.watch(parent, RecursiveMode::NonRecursive)?;
    }
    Ok(())
}

/// What a root was when it was last watched. The kernel drops a watch together with the
/// folder it watched, so a root deleted and made again (a re-clone, a restore from a sync) must
/// be watched again; its identity (device and inode) tells that it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity(u64, u64);

fn identity(root: &Path) -> Option<Identity> {
    let m = std::fs::metadata(root).ok()?;
    // A single-file root is watched through its folder (see [`add`]).
    let m = if m.is_file() {
        std::fs::metadata(root.parent()?).ok()?
    } else {
        m
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(Identity(m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        Some(Identity(0, 0))
    }
}

/// Paths removed or renamed away since the last look, as the watcher reported them: a root
/// among them lost its watch even if a folder made again in its place got the same inode.
type Gone = Arc<Mutex<HashSet<PathBuf>>>;

/// Most paths kept in [`Gone`] between two looks: only roots matter, and a burst of removals
/// must not grow it without bound.
const MAX_GONE: usize = 4096;

fn note_gone<'a>(
    gone: &Gone,
    events: impl Iterator<Item = &'a notify_debouncer_full::notify::Event>,
) {
    let mut set = gone.lock().unwrap_or_else(|p| p.into_inner());
    for e in events {
        if matches!(
            e.kind,
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
        ) {
            for p in &e.paths {
                if set.len() < MAX_GONE {
                    set.insert(p.clone());
                }
            }
        }
    }
}

/// The roots as they were watched (see [`Identity`]).
#[derive(Debug, Default)]
pub(super) struct Armed {
    seen: HashMap<PathBuf, Option<Identity>>,
    gone: Gone,
}

impl Armed {
    /// Records the roots as just watched.
    pub(super) fn new(roots: &[PathBuf]) -> Self {
        Armed {
            seen: roots.iter().map(|r| (r.clone(), identity(r))).collect(),
            gone: Gone::default(),
        }
    }

    /// Watches again every root that came back or was replaced since it was watched; returns
    /// the roots watched again and whether any root is missing now (the caller looks again for
    /// it from time to time: a folder that no longer exists sends no events).
    pub(super) fn refresh(&mut self, w: &mut Watcher, roots: &[PathBuf]) -> (Vec<PathBuf>, bool) {
        self.seen.retain(|r, _| roots.contains(r));
        let gone = std::mem::take(&mut *self.gone.lock().unwrap_or_else(|p| p.into_inner()));
        let mut rearmed = Vec::new();
        let mut missing = false;
        for root in roots {
            let now = identity(root);
            missing |= now.is_none();
            let then = self.seen.get(root).copied().flatten();
            if now.is_some() && (now != then || gone.contains(root)) {
                // A stale watch of the old folder may linger in the watcher's books.
                let _ = w.unwatch(root);
                if add(w, root).is_ok() {
                    rearmed.push(root.clone());
                }
            }
            self.seen.insert(root.clone(), now);
        }
        (rearmed, missing)
    }

    /// Whether a root that was missing (or replaced) is there now, without touching the watcher.
    pub(super) fn changed(&self, roots: &[PathBuf]) -> bool {
        roots
            .iter()
            .any(|r| identity(r) != self.seen.get(r).copied().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify_debouncer_full::notify::event::{CreateKind, DataChange, RemoveKind, RenameMode};

    #[test]
    fn reads_do_not_count_as_changes() {
        assert!(!may_change_content(&EventKind::Access(AccessKind::Read)));
        assert!(!may_change_content(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!may_change_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!may_change_content(&EventKind::Modify(
            ModifyKind::Metadata(MetadataKind::AccessTime)
        )));
        assert!(may_change_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(may_change_content(&EventKind::Create(CreateKind::File)));
        assert!(may_change_content(&EventKind::Remove(RemoveKind::Any)));
        assert!(may_change_content(&EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(may_change_content(&EventKind::Modify(ModifyKind::Name(
            RenameMode::Both
        ))));
        assert!(may_change_content(&EventKind::Any));
    }
}
