//! File watching: any change under the roots schedules one incremental update. The update
//! itself compares sizes, mtimes and hashes, so editors' atomic saves (write a temp file, rename
//! it over the note), renames and bursts of thousands of events all reduce to the same thing.

use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;

use notify_debouncer_full::notify::RecursiveMode;
use notify_debouncer_full::notify::event::{
    AccessKind, AccessMode, EventKind, MetadataKind, ModifyKind,
};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

use super::engine::{WATCH_DEBOUNCE, Work};

pub type Watcher = Debouncer<notify_debouncer_full::notify::RecommendedWatcher, RecommendedCache>;

pub(super) fn watch(
    roots: &[PathBuf],
    home: &Path,
    tx: Sender<Work>,
) -> notify_debouncer_full::notify::Result<Watcher> {
    // The index may live inside a watched folder; its own writes must not trigger updates.
    let home = std::fs::canonicalize(home).unwrap_or_else(|_| home.to_path_buf());
    let mut debouncer = new_debouncer(WATCH_DEBOUNCE, None, move |res: DebounceEventResult| {
        let relevant = match res {
            Ok(events) => events.iter().any(|e| {
                may_change_content(&e.kind) && e.paths.iter().any(|p| !p.starts_with(&home))
            }),
            // A watcher error (e.g. the kernel's event queue overflowed) may hide changes:
            // an update finds them all.
            Err(_) => true,
        };
        if relevant {
            let _ = tx.send(Work::Update);
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
