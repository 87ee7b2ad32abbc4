//! Atomic installation of a model folder into dochash's cache.
//!
//! Everything is written into a fresh temporary folder *inside* `<home>/models/` (so that the
//! final step is a same-filesystem rename), checked, flushed to disk, and only then renamed to its
//! final name. The final name therefore either does not exist or names a complete, verified
//! model — whatever the moment a crash, a full disk or Ctrl-C strikes. Leftover temporary folders
//! start with `.` (never a valid model name) and are swept up by later installs.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::progress::Progress;

use super::error::{ModelError, io_err};
use super::layout::{Layout, verify_dir};

/// Prefix of the temporary folders installs are built in.
pub(crate) const TMP_PREFIX: &str = ".tmp-";
/// Prefix of folders moved out of the way before deletion.
const TRASH_PREFIX: &str = ".trash-";
/// Prefix of pip's download folders (see the wheel module); swept like the others.
pub(crate) const PIP_PREFIX: &str = ".pip-";
/// Leftovers older than this are certainly not an install in progress.
const STALE_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Builds a model folder with `populate`, verifies it, and moves it to `models_dir/dir_name`.
///
/// `populate` receives an empty folder to fill. Verification is [`verify_dir`] with
/// `expected_sha256`; on any failure nothing is left behind. If the final folder already exists
/// and verifies, another process won the race (or the caller was late): that copy is used and
/// ours is dropped. If it exists and does not verify, it is moved aside and deleted first.
pub(crate) fn install<F>(
    models_dir: &Path,
    dir_name: &str,
    expected_sha256: Option<&str>,
    bar: &Progress,
    populate: F,
) -> Result<Layout, ModelError>
where
    F: FnOnce(&Path) -> Result<(), ModelError>,
{
    fs::create_dir_all(models_dir).map_err(io_err("create folder", models_dir))?;
    sweep_stale(models_dir);
    let tmp = tempfile::Builder::new()
        .prefix(&format!("{TMP_PREFIX}{dir_name}-"))
        .tempdir_in(models_dir)
        .map_err(io_err("create a temporary folder in", models_dir))?;

    // From here on `tmp` deletes itself on every early return.
    populate(tmp.path())?;
    verify_dir(tmp.path(), expected_sha256, bar)?;
    sync_tree(tmp.path())?;

    let target = models_dir.join(dir_name);
    if exists_no_follow(&target) {
        match verify_dir(&target, expected_sha256, bar) {
            Ok(layout) => return Ok(layout),
            Err(e) => {
                tracing::warn!("replacing unusable model folder {}: {e}", target.display());
                discard(&target)?;
            }
        }
    }

    let built = tmp.keep();
    match fs::rename(&built, &target) {
        Ok(()) => {
            crate::fsx::sync_dir(models_dir);
            Ok(Layout::at(&target))
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&built);
            // A concurrent installer may have renamed its copy into place between our check and
            // our rename (renaming onto a non-empty folder fails): theirs is as good as ours.
            verify_dir(&target, expected_sha256, bar)
                .map_err(|_| io_err("move the new model into", &target)(e))
        }
    }
}

/// Removes a cache entry without ever exposing a half-deleted folder under its real name: it is
/// first renamed to a `.trash-*` name, then deleted. A symlink is removed, never followed.
pub(crate) fn discard(path: &Path) -> Result<(), ModelError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("inspect", path)(e)),
    };
    if !meta.is_dir() {
        return fs::remove_file(path).map_err(io_err("remove", path));
    }
    let parent = path.parent().unwrap_or(Path::new("."));
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let aside = parent.join(format!("{TRASH_PREFIX}{}-{stamp}", std::process::id()));
    match fs::rename(path, &aside) {
        Ok(()) => fs::remove_dir_all(&aside).map_err(io_err("remove", &aside)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => fs::remove_dir_all(path).map_err(io_err("remove", path)),
    }
}

fn exists_no_follow(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// Best-effort removal of temporary folders left by crashed installs.
fn sweep_stale(models_dir: &Path) {
    let Ok(entries) = fs::read_dir(models_dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if ![TMP_PREFIX, TRASH_PREFIX, PIP_PREFIX]
            .iter()
            .any(|p| name.starts_with(p))
        {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > STALE_AFTER);
        if old {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Flushes every regular file under `dir`, and `dir` itself, so that the rename that publishes
/// the folder cannot reach the disk before the data it publishes.
fn sync_tree(dir: &Path) -> Result<(), ModelError> {
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io_err("inspect", &path))?;
        if kind.is_dir() {
            sync_tree(&path)?;
        } else if kind.is_file() {
            crate::fsx::sync_file(&path).map_err(io_err("flush", &path))?;
        }
    }
    crate::fsx::sync_dir(dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::layout::{WEIGHTS, sha256_file};
    use crate::model::testutil::{names_in, write_fake_model};

    fn hidden() -> Progress {
        Progress::NONE
    }

    #[test]
    fn failed_verification_leaves_nothing() {
        let home = tempfile::tempdir().unwrap();
        let models = home.path().join("models");
        let err = install(&models, "org--m", Some(&"0".repeat(64)), &hidden(), |d| {
            write_fake_model(d, b"payload");
            Ok(())
        })
        .unwrap_err();
        assert!(
            matches!(err, ModelError::ChecksumMismatch { .. }),
            "{err:?}"
        );
        assert!(names_in(&models).is_empty(), "{:?}", names_in(&models));
    }

    #[test]
    fn failed_population_leaves_nothing() {
        let home = tempfile::tempdir().unwrap();
        let models = home.path().join("models");
        let err = install(&models, "org--m", None, &hidden(), |d| {
            fs::write(d.join("config.json"), b"{}").unwrap();
            Err(ModelError::Pip("simulated failure".into()))
        })
        .unwrap_err();
        assert!(matches!(err, ModelError::Pip(_)));
        assert!(names_in(&models).is_empty());

        // Structurally invalid content fails verification the same way.
        let err = install(&models, "org--m", None, &hidden(), |d| {
            fs::write(d.join("config.json"), b"{}").unwrap();
            Ok(())
        })
        .unwrap_err();
        assert!(matches!(err, ModelError::MissingFile { .. }), "{err:?}");
        assert!(names_in(&models).is_empty());
    }

    #[test]
    fn success_produces_exactly_the_final_folder() {
        let home = tempfile::tempdir().unwrap();
        let models = home.path().join("models");
        let src = tempfile::tempdir().unwrap();
        write_fake_model(src.path(), b"payload");
        let sha = sha256_file(&src.path().join(WEIGHTS)).unwrap();

        let layout = install(&models, "org--m", Some(&sha), &hidden(), |d| {
            write_fake_model(d, b"payload");
            Ok(())
        })
        .unwrap();
        assert_eq!(names_in(&models), ["org--m"]);
        assert_eq!(layout.dir, models.join("org--m"));
        assert_eq!(sha256_file(&layout.weights).unwrap(), sha);
    }

    #[test]
    fn existing_valid_folder_wins_and_invalid_one_is_replaced() {
        let home = tempfile::tempdir().unwrap();
        let models = home.path().join("models");
        let target = models.join("org--m");

        // A valid copy already there (a concurrent installer won): it is kept as is.
        write_fake_model(&target, b"theirs");
        fs::write(target.join("marker"), b"").unwrap();
        let layout = install(&models, "org--m", None, &hidden(), |d| {
            write_fake_model(d, b"ours");
            Ok(())
        })
        .unwrap();
        assert!(layout.dir.join("marker").exists());
        assert_eq!(names_in(&models), ["org--m"]);

        // A broken copy there: replaced by ours.
        fs::remove_file(target.join("config.json")).unwrap();
        let layout = install(&models, "org--m", None, &hidden(), |d| {
            write_fake_model(d, b"ours");
            Ok(())
        })
        .unwrap();
        assert!(!layout.dir.join("marker").exists());
        assert!(layout.config.exists());
        assert_eq!(names_in(&models), ["org--m"]);
    }

    #[test]
    fn discard_removes_folders_files_and_absent_paths() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("m");
        write_fake_model(&d, b"x");
        discard(&d).unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"x").unwrap();
        discard(&f).unwrap();
        discard(&dir.path().join("never")).unwrap();
        assert!(names_in(dir.path()).is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn discard_does_not_follow_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        write_fake_model(&real, b"x");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        discard(&link).unwrap();
        assert!(!link.exists());
        assert!(real.join("config.json").exists());
    }
}
