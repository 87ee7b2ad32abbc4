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

/// The absolute path of `path` with every link resolved, in the form people read and tools
/// take: on Windows `C:\…` and `\\server\share\…` rather than the verbatim `\\?\C:\…` that
/// `std::fs::canonicalize` returns there. Always that form, however long the path (std adds the
/// verbatim prefix itself where a long path needs it), so that paths from here compare with each
/// other. Elsewhere, the same as `std::fs::canonicalize`.
pub fn canonicalize(path: impl AsRef<Path>) -> std::io::Result<std::path::PathBuf> {
    let canon = std::fs::canonicalize(path)?;
    #[cfg(windows)]
    let canon = without_verbatim(canon);
    Ok(canon)
}

#[cfg(windows)]
fn without_verbatim(p: std::path::PathBuf) -> std::path::PathBuf {
    use std::ffi::OsString;
    use std::os::windows::ffi::{OsStrExt, OsStringExt};
    use std::path::{Component, Prefix};
    let Some(Component::Prefix(prefix)) = p.components().next() else {
        return p;
    };
    let wide: Vec<u16> = p.as_os_str().encode_wide().collect();
    let units = |s: &str| s.encode_utf16().collect::<Vec<u16>>();
    // On the UTF-16 units, so that a name that is not valid Unicode keeps its exact bytes.
    let plain = match prefix.kind() {
        Prefix::VerbatimDisk(_) => wide.strip_prefix(&units(r"\\?\")[..]).map(<[u16]>::to_vec),
        Prefix::VerbatimUNC(..) => wide
            .strip_prefix(&units(r"\\?\UNC\")[..])
            .map(|rest| [&units(r"\\")[..], rest].concat()),
        _ => None,
    };
    plain.map_or(p, |w| OsString::from_wide(&w).into())
}

/// Flushes a file already written to the disk. Windows flushes only through a handle that may
/// write (a read-only one is refused: "Access denied"); Unix through any.
pub fn sync_file(path: &Path) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(windows)]
    o.write(true);
    o.open(path)?.sync_all()
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

/// Whether an I/O error means the file system has no room left (or the user's quota is spent):
/// what a full disk looks like, which must never be mistaken for a damaged index.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    if matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded) {
        return true;
    }
    #[cfg(unix)]
    if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
        return true;
    }
    // Libraries that wrap an I/O error in a custom one keep the original as its source.
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(is_disk_full)
}

/// Bytes an unprivileged user can still write on the file system holding `path`; `None` where it
/// cannot be told (no such path, or a platform without `statvfs`).
pub fn free_space(path: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `c` is a valid C string and `st` is written by statvfs before it is read.
        let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
        if rc != 0 {
            return None;
        }
        // SAFETY: statvfs returned 0, so it filled `st`.
        let st = unsafe { st.assume_init() };
        #[allow(clippy::unnecessary_cast)]
        Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// A byte count for a person: `12 B`, `2.0 KiB`, `3.4 MiB`, `1.2 GiB`.
pub fn human_bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    let x = n as f64;
    if x < KIB {
        format!("{n} B")
    } else if x < KIB * KIB {
        format!("{:.1} KiB", x / KIB)
    } else if x < KIB * KIB * KIB {
        format!("{:.1} MiB", x / (KIB * KIB))
    } else {
        format!("{:.1} GiB", x / (KIB * KIB * KIB))
    }
}

/// Narrows `path` to the user: a folder to 0700, a file to 0600 (an executable keeps its owner's
/// execute bit), and, for a folder, everything in it. Symbolic links inside are not followed (the
/// top one is), and what the user does not own is left alone. Best effort.
pub fn make_private_tree(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        // SAFETY: getuid cannot fail and has no side effects.
        let me = unsafe { libc::getuid() };
        let narrow = |p: &Path, m: &std::fs::Metadata| {
            let mode = m.permissions().mode();
            if m.uid() != me || mode & 0o077 == 0 {
                return;
            }
            let new = if m.is_dir() {
                0o700
            } else {
                (mode & 0o700) | 0o600
            };
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(new));
        };
        let Ok(top) = std::fs::metadata(path) else {
            return;
        };
        narrow(path, &top);
        if !top.is_dir() {
            return;
        }
        let mut stack = vec![path.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                // Not followed: a link inside leads somewhere that is not ours to change.
                let Ok(m) = e.metadata() else { continue };
                if m.is_dir() {
                    narrow(&e.path(), &m);
                    stack.push(e.path());
                } else if m.is_file() {
                    narrow(&e.path(), &m);
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Narrows one folder itself (not what is in it) to 0700, following a link to it.
pub fn make_private_dir(dir: &Path) {
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

/// Which file this is, beyond its name: a file deleted and written again under the same name
/// is another one (device and inode; where there are none, its creation time).
pub fn file_identity(path: &std::path::Path) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let created = meta
            .created()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        Some((created.as_secs(), u64::from(created.subsec_nanos())))
    }
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
#[cfg(unix)]
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

/// Opens `rel` (a path of plain names) under the folder `root` for reading, one component at
/// a time and following no link on the way, without blocking on a FIFO. What a checked path
/// named a moment ago may have been swapped since (a folder for a link leading out, a file for
/// a FIFO); opening this way reaches only what is really under `root` now, or fails. `rel`
/// empty opens `root` itself (a file given as a root).
pub fn open_beneath(root: &Path, rel: &Path) -> std::io::Result<std::fs::File> {
    use std::path::Component;
    let invalid = || std::io::Error::from(std::io::ErrorKind::InvalidInput);
    let names: Vec<&std::ffi::OsStr> = rel
        .components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(invalid()),
        })
        .collect::<Result<_, _>>()?;
    #[cfg(unix)]
    {
        use std::os::fd::{AsRawFd, FromRawFd};
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::OpenOptionsExt;
        let mut at = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(root)?;
        for (i, name) in names.iter().enumerate() {
            let last = i + 1 == names.len();
            let flags = libc::O_RDONLY
                | libc::O_NOFOLLOW
                | libc::O_CLOEXEC
                | if last {
                    libc::O_NONBLOCK
                } else {
                    libc::O_DIRECTORY
                };
            let c = std::ffi::CString::new(name.as_bytes()).map_err(|_| invalid())?;
            // SAFETY: `at` is an open descriptor and `c` a NUL-terminated name; the result is
            // checked before it is owned.
            let fd = unsafe { libc::openat(at.as_raw_fd(), c.as_ptr(), flags) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: `fd` was just opened and is owned by nothing else.
            at = unsafe { std::fs::File::from_raw_fd(fd) };
        }
        Ok(at)
    }
    #[cfg(not(unix))]
    {
        let mut path = root.to_path_buf();
        path.extend(names);
        if std::fs::symlink_metadata(&path)?.file_type().is_symlink() {
            return Err(invalid());
        }
        std::fs::File::open(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paths are shown, stored and compared in the form people and tools use: on Windows
    /// `std::fs::canonicalize` gives `\\?\C:\…`, which editors and viewers do not all take.
    #[test]
    fn canonical_paths_are_in_their_ordinary_form() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.md"), "a").unwrap();
        let canon = canonicalize(dir.path().join("a.md")).unwrap();
        assert!(canon.is_absolute(), "{}", canon.display());
        assert!(
            !canon.to_string_lossy().starts_with(r"\\?\"),
            "{}",
            canon.display()
        );
        assert_eq!(canonicalize(&canon).unwrap(), canon);
    }

    /// Every verbatim form is made ordinary, however long (the prefix is no longer needed once
    /// std adds it itself for long paths), so that a file's path and its folder's compare.
    #[cfg(windows)]
    #[test]
    fn verbatim_prefixes_are_removed_however_long_the_path() {
        use std::path::PathBuf;
        let long = "a-folder-with-a-long-name\\".repeat(12);
        let cases = [
            (
                format!(r"\\?\C:\notes\{long}n.md"),
                format!(r"C:\notes\{long}n.md"),
            ),
            (
                r"\\?\UNC\server\share\n.md".to_string(),
                r"\\server\share\n.md".to_string(),
            ),
            (r"C:\notes\n.md".to_string(), r"C:\notes\n.md".to_string()),
            (
                r"\\server\share\n.md".to_string(),
                r"\\server\share\n.md".to_string(),
            ),
        ];
        for (given, plain) in cases {
            assert_eq!(
                without_verbatim(PathBuf::from(&given)),
                PathBuf::from(plain),
                "{given}"
            );
        }
        let root = without_verbatim(PathBuf::from(r"\\?\C:\notes"));
        let file = without_verbatim(PathBuf::from(format!(r"\\?\C:\notes\{long}n.md")));
        assert!(file.starts_with(&root));
    }

    #[test]
    fn human_bytes_picks_a_readable_unit() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(2048), "2.0 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

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
            // A tree an older version left open is narrowed whole, executables kept so.
            let f = d.join("notes.bin");
            std::fs::write(&f, b"text").unwrap();
            let x = dir.path().join("a/tool");
            std::fs::write(&x, b"#!").unwrap();
            for (p, m) in [(&d, 0o755), (&f, 0o644), (&x, 0o755)] {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
            }
            std::fs::set_permissions(dir.path().join("a"), std::fs::Permissions::from_mode(0o755))
                .unwrap();
            make_private_tree(&dir.path().join("a"));
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir.path().join("a")), 0o700);
            assert_eq!(mode(&d), 0o700);
            assert_eq!(mode(&f), 0o600);
            assert_eq!(mode(&x), 0o700);
        }
    }

    #[cfg(unix)]
    #[test]
    fn open_beneath_reaches_only_what_is_under_the_root_now() {
        use std::io::Read;
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("notes");
        std::fs::create_dir_all(root.join("work")).unwrap();
        std::fs::write(root.join("work/a.md"), "inside").unwrap();
        std::fs::write(d.path().join("secret.md"), "outside").unwrap();
        let mut s = String::new();
        open_beneath(&root, Path::new("work/a.md"))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "inside");
        // The file swapped for a link leading out.
        std::fs::remove_file(root.join("work/a.md")).unwrap();
        std::os::unix::fs::symlink(d.path().join("secret.md"), root.join("work/a.md")).unwrap();
        assert!(open_beneath(&root, Path::new("work/a.md")).is_err());
        // A folder swapped for a link leading out.
        std::fs::remove_file(root.join("work/a.md")).unwrap();
        std::fs::remove_dir(root.join("work")).unwrap();
        std::fs::create_dir(d.path().join("elsewhere")).unwrap();
        std::fs::write(d.path().join("elsewhere/a.md"), "outside").unwrap();
        std::os::unix::fs::symlink(d.path().join("elsewhere"), root.join("work")).unwrap();
        assert!(open_beneath(&root, Path::new("work/a.md")).is_err());
        // A FIFO opens at once (and reads as what it is), never blocking.
        let fifo = root.join("fifo.md");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let f = open_beneath(&root, Path::new("fifo.md")).unwrap();
        assert!(!f.metadata().unwrap().is_file());
        assert!(open_beneath(&root, Path::new("../secret.md")).is_err());
        assert!(open_beneath(&root, Path::new("/etc/passwd")).is_err());
    }
}
