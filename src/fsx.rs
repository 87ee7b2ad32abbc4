//! File-system helpers every layer shares: private folders and files, and the one way side files
//! (settings, pointers, manifests) are replaced.
//!
//! The dochash home holds the full text of every indexed note, so nothing in it may be readable
//! by other users: folders are created 0700 and files 0600 (the binaries also narrow the umask,
//! so that files created by sled, tantivy or pip inside the home follow the same rule).

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` so that a crash or a full disk leaves either the old file or the new
/// one, never a mix: a private temp file beside it, fsync, rename over the target, fsync of the
/// folder (without it the rename itself may not survive a power cut).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tmp-");
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600));
    let mut tmp = builder.tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir);
    Ok(())
}

/// Makes a rename or a new file in `dir` durable. Best effort: not every platform or file system
/// can sync a folder, and the data itself was already synced.
pub fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Creates `dir` and any missing parents, each new one private to the user (0700).
pub fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// Narrows an existing folder to 0700 (a home or index folder made by an older version with the
/// default 0755). Best effort: a folder the user shares on purpose is theirs to keep.
pub fn make_private(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(dir)
            && m.is_dir()
            && m.permissions().mode() & 0o077 != 0
        {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// A file's size and modification time (nanoseconds), which change whenever it is rewritten:
/// a cheap stand-in for hashing it.
pub fn file_stamp(meta: &std::fs::Metadata) -> Option<String> {
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(format!("{} {mtime}", meta.len()))
}

/// Why a side file (settings, pointer, drift state) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SideFileError {
    /// Written by a newer dochash, in a format this one does not know: left alone, never
    /// overwritten, so that the newer version still finds it.
    #[error("{} was written by a newer version of dochash (format {found}, this one reads {ours}); update dochash", path.display())]
    Newer {
        path: std::path::PathBuf,
        found: u32,
        ours: u32,
    },
    /// Not valid: the caller keeps it aside and carries on without it.
    #[error("{} is damaged ({msg})", path.display())]
    Damaged {
        path: std::path::PathBuf,
        msg: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Reads a JSON side file that carries a `version` (files written before versions existed
/// count as version 1). `Ok(None)` when there is no file.
pub fn read_versioned<T: serde::de::DeserializeOwned>(
    path: &Path,
    ours: u32,
) -> Result<Option<T>, SideFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SideFileError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let damaged = |msg: String| SideFileError::Damaged {
        path: path.to_path_buf(),
        msg,
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| damaged(e.to_string()))?;
    let found = match value.get("version") {
        None => 1,
        Some(v) => v
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| damaged("its version is not a number".into()))?,
    };
    if found > ours {
        return Err(SideFileError::Newer {
            path: path.to_path_buf(),
            found,
            ours,
        });
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| damaged(e.to_string()))
}

/// Writes `value` as a JSON side file with its format `version`, atomically.
pub fn write_versioned<T: serde::Serialize>(
    path: &Path,
    version: u32,
    value: &T,
) -> std::io::Result<()> {
    let mut v = serde_json::to_value(value).map_err(std::io::Error::other)?;
    if let Some(map) = v.as_object_mut() {
        map.insert("version".into(), version.into());
    }
    let text = serde_json::to_string_pretty(&v).map_err(std::io::Error::other)?;
    write_atomic(path, text.as_bytes())
}

/// The umask the process started with, so that programs it starts for the user (the editor)
/// create files the way the user expects.
static USER_UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// Makes every file and folder this process creates private to the user (umask 077): sled,
/// tantivy and the model cache create files themselves, with the default mode. Call first thing
/// in `main`, before any thread starts.
pub fn private_umask() {
    #[cfg(unix)]
    // SAFETY: umask only swaps the process's file-creation mask.
    unsafe {
        let old = libc::umask(0o077);
        let _ = USER_UMASK.set(old as u32);
    }
}

/// Gives a child process the umask the user started dochash with (see [`private_umask`]).
pub fn restore_user_umask(cmd: &mut std::process::Command) {
    #[cfg(unix)]
    if let Some(&mask) = USER_UMASK.get() {
        use std::os::unix::process::CommandExt;
        // SAFETY: umask is async-signal-safe, as pre_exec requires.
        unsafe {
            cmd.pre_exec(move || {
                libc::umask(mask as libc::mode_t);
                Ok(())
            });
        }
    }
    #[cfg(not(unix))]
    let _ = cmd;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_files_carry_their_version() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct S {
            a: u32,
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        assert!(read_versioned::<S>(&p, 2).unwrap().is_none());
        write_versioned(&p, 2, &S { a: 7 }).unwrap();
        assert!(
            std::fs::read_to_string(&p)
                .unwrap()
                .contains("\"version\": 2")
        );
        assert_eq!(read_versioned::<S>(&p, 2).unwrap(), Some(S { a: 7 }));
        // Older files without a version are version 1.
        std::fs::write(&p, r#"{"a": 3}"#).unwrap();
        assert_eq!(read_versioned::<S>(&p, 2).unwrap(), Some(S { a: 3 }));
        std::fs::write(&p, r#"{"a": 3, "version": 9}"#).unwrap();
        assert!(matches!(
            read_versioned::<S>(&p, 2),
            Err(SideFileError::Newer { found: 9, .. })
        ));
        std::fs::write(&p, "{oops").unwrap();
        assert!(matches!(
            read_versioned::<S>(&p, 2),
            Err(SideFileError::Damaged { .. })
        ));
    }

    #[test]
    fn atomic_writes_replace_the_file_privately() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("settings.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        // No temp files are left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let d = dir.path().join("a/b");
            create_private_dir_all(&d).unwrap();
            let mode = std::fs::metadata(&d).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
            make_private(&d);
            let mode = std::fs::metadata(&d).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }
}
