//! The owner's socket on Unix: a Unix domain socket file in the home. It is created 0600 inside
//! a private folder and renamed into place, so no other user ever sees it open; a client talks
//! only to a socket file its user owns, and both ends ask the kernel which user the other runs as.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{SOCKET_NAME, SocketError, Wire};

pub fn socket_path(home: &Path) -> PathBuf {
    home.join(SOCKET_NAME)
}

pub struct Listener(UnixListener);

impl Listener {
    pub fn bind(home: &Path) -> std::io::Result<Listener> {
        let path = socket_path(home);
        let private = home.join(format!(".sock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&private);
        std::fs::DirBuilder::new().mode(0o700).create(&private)?;
        let tmp = private.join("s");
        let listener = UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        let _ = std::fs::remove_file(&path);
        std::fs::rename(&tmp, &path)?;
        let _ = std::fs::remove_dir(&private);
        Ok(Listener(listener))
    }

    /// The next connection from a process of this user; others are closed unanswered.
    pub fn accept(&mut self) -> std::io::Result<Conn> {
        loop {
            let (conn, _) = self.0.accept()?;
            if peer_uid(&conn) == Some(current_uid()) {
                return Ok(Conn(conn));
            }
        }
    }
}

/// Wakes a listener blocked in `accept` (its owner is stopping) and removes the socket file.
pub fn wake(path: &Path) {
    let _ = UnixStream::connect(path);
    let _ = std::fs::remove_file(path);
}

/// Connects to the owner behind `path`: the file itself must be a socket of ours (not a link to
/// one elsewhere), and the process it reaches must run as us.
pub fn connect(path: &Path, _deadline: Instant) -> Result<Conn, SocketError> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.uid() != current_uid() || !meta.file_type().is_socket() {
        return Err(SocketError::NotOwned(path.to_path_buf()));
    }
    let conn = UnixStream::connect(path)?;
    if peer_uid(&conn) != Some(current_uid()) {
        return Err(SocketError::ForeignPeer(path.to_path_buf()));
    }
    Ok(Conn(conn))
}

pub struct Conn(UnixStream);

impl From<UnixStream> for Conn {
    fn from(s: UnixStream) -> Conn {
        Conn(s)
    }
}

/// What is left until `deadline`, as a socket timeout (which must not be zero).
fn left(deadline: Instant) -> std::io::Result<std::time::Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::ErrorKind::TimedOut.into());
    }
    Ok(left)
}

impl Wire for Conn {
    fn read_by(&mut self, buf: &mut [u8], deadline: Instant) -> std::io::Result<usize> {
        self.0.set_read_timeout(Some(left(deadline)?))?;
        self.0.read(buf).map_err(timed_out)
    }

    fn write_by(&mut self, bytes: &[u8], deadline: Instant) -> std::io::Result<()> {
        self.0.set_write_timeout(Some(left(deadline)?))?;
        self.0.write_all(bytes).map_err(timed_out)
    }
}

/// A socket timeout reads as `WouldBlock` on Unix; it means the deadline passed.
fn timed_out(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::WouldBlock {
        std::io::ErrorKind::TimedOut.into()
    } else {
        e
    }
}

fn current_uid() -> u32 {
    // SAFETY: geteuid cannot fail and has no side effects.
    unsafe { libc::geteuid() }
}

/// The uid of the process at the other end, from the kernel (not from anything it sent).
#[cfg(target_os = "linux")]
fn peer_uid(conn: &UnixStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given; the fd is open.
    let rc = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

#[cfg(not(target_os = "linux"))]
fn peer_uid(conn: &UnixStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut uid: libc::uid_t = 0;
    let mut gid: libc::gid_t = 0;
    // SAFETY: both out-pointers are valid; the fd is open.
    let rc = unsafe { libc::getpeereid(conn.as_raw_fd(), &mut uid, &mut gid) };
    (rc == 0).then_some(uid)
}
