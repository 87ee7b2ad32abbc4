//! The owner's socket on Windows: a named pipe, `\\.\pipe\dochash-<128 random bits>`, whose
//! name the owner writes to `owner.pipe` in the (private) home for its clients to read.
//!
//! Pipes live in one namespace for the whole machine, so the name is unguessable (no one can
//! take it first) and both ends check who is at the other: the owner creates the first instance
//! (a name already held is refused) with an access list that admits only its own user and no
//! remote clients, and reads each client's user from the client process's token; a client reads
//! the serving process's user the same way and talks only to its own. A name left behind by an
//! owner that died leads nowhere: the pipe went with it.
//!
//! Deadlines: a synchronous pipe read cannot time out, so the pipes are driven by tokio (already
//! the MCP server's runtime), each read and write bounded by `timeout_at`.

use std::ffi::c_void;
use std::os::windows::io::AsRawHandle;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::windows::named_pipe::{
    ClientOptions, NamedPipeClient, NamedPipeServer, ServerOptions,
};
use windows_sys::Win32::Foundation::{CloseHandle, ERROR_PIPE_BUSY, HANDLE, LocalFree};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{
    GetLengthSid, GetTokenInformation, SECURITY_ATTRIBUTES, TOKEN_QUERY, TOKEN_USER, TokenUser,
};
use windows_sys::Win32::System::Pipes::{GetNamedPipeClientProcessId, GetNamedPipeServerProcessId};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, OpenProcess, OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION,
};

use super::{SocketError, Wire};

/// The file in the home that names the running owner's pipe.
pub fn socket_path(home: &Path) -> PathBuf {
    home.join(PIPE_FILE)
}

const PIPE_FILE: &str = "owner.pipe";
const PIPE_PREFIX: &str = r"\\.\pipe\dochash-";

/// A fresh pipe name: 128 bits from the OS's randomness (std's hasher keys are drawn from it).
fn fresh_name() -> PathBuf {
    use std::hash::{BuildHasher, Hasher};
    let mut bits = String::new();
    for i in 0..2u8 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(i);
        bits.push_str(&format!("{:016x}", h.finish()));
    }
    PathBuf::from(format!("{PIPE_PREFIX}{bits}"))
}

/// The pipe named in `file`, if it holds a dochash pipe name (nothing else is ever opened).
fn named_pipe(file: &Path) -> std::io::Result<PathBuf> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(file)?
        .take(256)
        .read_to_string(&mut text)?;
    let name = text.trim();
    let ok = name
        .strip_prefix(PIPE_PREFIX)
        .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ok {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} does not name a dochash pipe", file.display()),
        ));
    }
    Ok(PathBuf::from(name))
}

/// How long `accept` waits for a client before it returns, so that its caller looks at its stop
/// flag even when no connection can wake it.
const ACCEPT_POLL: Duration = Duration::from_secs(5);

pub struct Listener {
    /// Instances waiting for a client (up to two), declared first: dropped before the runtime.
    listening: std::collections::VecDeque<NamedPipeServer>,
    name: PathBuf,
    file: PathBuf,
    security: Security,
    /// Shared with the connections, so a reply in flight outlives the listener.
    runtime: std::sync::Arc<tokio::runtime::Runtime>,
}

/// A security descriptor admitting only this process's user (from `LocalAlloc`).
struct Security(*mut c_void);

// SAFETY: the descriptor is plain memory, read by the system calls that create pipe instances
// and freed once, on drop.
unsafe impl Send for Security {}

impl Drop for Security {
    fn drop(&mut self) {
        // SAFETY: allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW, freed once.
        unsafe { LocalFree(self.0) };
    }
}

impl Security {
    fn only_this_user() -> std::io::Result<Security> {
        let sid = process_user(current_process())
            .ok_or_else(|| std::io::Error::other("cannot read this process's user"))?;
        let mut text: *mut u16 = std::ptr::null_mut();
        // SAFETY: `sid` holds a valid SID (copied from a token); `text` receives a LocalAlloc'd
        // string, freed below.
        if unsafe { ConvertSidToStringSidW(sid.as_ptr() as *mut c_void, &mut text) } == 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a NUL-terminated wide string from the call above.
        let sid_text = unsafe {
            let mut n = 0;
            while *text.add(n) != 0 {
                n += 1;
            }
            let s = String::from_utf16_lossy(std::slice::from_raw_parts(text, n));
            LocalFree(text.cast());
            s
        };
        // Protected list, one entry: full access for this user; nobody else, no inheritance.
        let sddl: Vec<u16> = format!("D:P(A;;GA;;;{sid_text})")
            .encode_utf16()
            .chain([0])
            .collect();
        let mut sd: *mut c_void = std::ptr::null_mut();
        // SAFETY: `sddl` is NUL-terminated; `sd` receives a LocalAlloc'd descriptor.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl.as_ptr(),
                SDDL_REVISION_1,
                &mut sd,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Security(sd))
    }
}

impl Listener {
    pub fn bind(home: &Path) -> std::io::Result<Listener> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("dochash-pipe")
            .enable_all()
            .build()?;
        let mut listener = Listener {
            listening: Default::default(),
            name: fresh_name(),
            file: socket_path(home),
            security: Security::only_this_user()?,
            runtime: std::sync::Arc::new(runtime),
        };
        // The first instance claims the name: if any process holds it already, this fails
        // rather than joining a pipe someone else controls.
        let first = listener.instance(true)?;
        listener.listening.push_back(first);
        let name = listener.name.to_string_lossy().into_owned();
        crate::fsx::write_atomic(&listener.file, name.as_bytes())?;
        Ok(listener)
    }

    fn instance(&self, first: bool) -> std::io::Result<NamedPipeServer> {
        let _in = self.runtime.enter();
        let mut attrs = SECURITY_ATTRIBUTES {
            nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: self.security.0,
            bInheritHandle: 0,
        };
        // SAFETY: `attrs` points at a valid descriptor that outlives the call.
        unsafe {
            ServerOptions::new()
                .first_pipe_instance(first)
                .reject_remote_clients(true)
                .create_with_security_attributes_raw(
                    &self.name,
                    (&mut attrs as *mut SECURITY_ATTRIBUTES).cast(),
                )
        }
    }

    /// The next connection from a process of this user (others are closed unanswered); an
    /// error after [`ACCEPT_POLL`] without one.
    pub fn accept(&mut self) -> std::io::Result<Conn> {
        // Another instance waits before this one is handed out, so a client never finds the
        // name missing between two connections.
        while self.listening.len() < 2 {
            match self.instance(false) {
                Ok(p) => self.listening.push_back(p),
                Err(e) if self.listening.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        let Some(current) = self.listening.pop_front() else {
            return Err(std::io::ErrorKind::WouldBlock.into());
        };
        // Cancel-safe: a client that arrives after the timeout is taken by the next call.
        let connected = self
            .runtime
            .block_on(async { tokio::time::timeout(ACCEPT_POLL, current.connect()).await });
        match connected {
            Err(_) => {
                self.listening.push_front(current);
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            Ok(r) => r?,
        }
        let mut pid = 0u32;
        // SAFETY: the handle is a connected pipe instance; `pid` is valid for writes.
        let known =
            unsafe { GetNamedPipeClientProcessId(current.as_raw_handle() as HANDLE, &mut pid) }
                != 0;
        if !(known && same_user(pid)) {
            return Err(std::io::ErrorKind::PermissionDenied.into());
        }
        Ok(Conn {
            pipe: Pipe::Server(current),
            runtime: Driver::Shared(self.runtime.clone()),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Only our own name: a later owner's file is left alone.
        if named_pipe(&self.file).is_ok_and(|n| n == self.name) {
            let _ = std::fs::remove_file(&self.file);
        }
    }
}

/// Wakes a listener blocked in `accept` (its owner is stopping). Two instances listen at a time
/// (the one `accept` waits on and the next) and a client may reach either, so both are
/// connected, and held until both are; failing that, `accept` returns within [`ACCEPT_POLL`].
pub fn wake(path: &Path) {
    let Ok(name) = named_pipe(path) else { return };
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&name)
    };
    let _both = (open(), open());
}

/// How often a client tries again while every instance of the pipe is busy.
const BUSY_RETRY: Duration = Duration::from_millis(20);

/// Connects to the owner whose pipe `path` names, if the process serving it runs as this user.
pub fn connect(path: &Path, deadline: Instant) -> Result<Conn, SocketError> {
    let name = named_pipe(path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = loop {
        let opened = {
            let _in = runtime.enter();
            ClientOptions::new().open(&name)
        };
        match opened {
            Ok(c) => break c,
            // Every instance taken: the owner is there, only busy.
            Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32) => {
                if Instant::now() + BUSY_RETRY >= deadline {
                    return Err(SocketError::Io(std::io::ErrorKind::TimedOut.into()));
                }
                std::thread::sleep(BUSY_RETRY);
            }
            Err(e) => return Err(SocketError::Io(e)),
        }
    };
    let mut pid = 0u32;
    // SAFETY: the handle is a connected pipe client; `pid` is valid for writes.
    let known =
        unsafe { GetNamedPipeServerProcessId(client.as_raw_handle() as HANDLE, &mut pid) } != 0;
    if !known || !same_user(pid) {
        return Err(SocketError::ForeignPeer(path.to_path_buf()));
    }
    Ok(Conn {
        pipe: Pipe::Client(client),
        runtime: Driver::Own(runtime),
    })
}

enum Pipe {
    Server(NamedPipeServer),
    Client(NamedPipeClient),
}

/// What drives a connection's reads and writes: the listener's runtime (its worker runs the
/// reactor, so any thread may wait on it) or a client's own.
enum Driver {
    Shared(std::sync::Arc<tokio::runtime::Runtime>),
    Own(tokio::runtime::Runtime),
}

pub struct Conn {
    /// Declared first: the pipe is dropped before the runtime that drives it.
    pipe: Pipe,
    runtime: Driver,
}

impl Driver {
    fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        match self {
            Driver::Shared(rt) => rt.handle().block_on(f),
            Driver::Own(rt) => rt.block_on(f),
        }
    }
}

/// `f`, or `TimedOut` once `deadline` passes.
async fn by<T>(
    deadline: Instant,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), f)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

impl Wire for Conn {
    fn read_by(&mut self, buf: &mut [u8], deadline: Instant) -> std::io::Result<usize> {
        let Conn { pipe, runtime } = self;
        runtime.run(by(deadline, async {
            match pipe {
                Pipe::Server(p) => p.read(buf).await,
                Pipe::Client(p) => p.read(buf).await,
            }
        }))
    }

    fn write_by(&mut self, bytes: &[u8], deadline: Instant) -> std::io::Result<()> {
        let Conn { pipe, runtime } = self;
        runtime.run(by(deadline, async {
            match pipe {
                Pipe::Server(p) => p.write_all(bytes).await,
                Pipe::Client(p) => p.write_all(bytes).await,
            }
        }))
    }
}

fn current_process() -> HANDLE {
    // SAFETY: a pseudo-handle; cannot fail, needs no closing.
    unsafe { GetCurrentProcess() }
}

/// Whether process `pid` runs as the same user as this one (its token's user SID).
fn same_user(pid: u32) -> bool {
    // SAFETY: OpenProcess returns null or a handle closed below.
    let process = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if process.is_null() {
        return false;
    }
    let theirs = process_user(process);
    // SAFETY: `process` is a handle opened above and not used after.
    unsafe { CloseHandle(process) };
    match (theirs, process_user(current_process())) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The user SID of a process's token, as bytes (equal bytes: the same SID).
fn process_user(process: HANDLE) -> Option<Vec<u8>> {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: `process` is a valid process handle; `token` receives a handle closed below.
    if unsafe { OpenProcessToken(process, TOKEN_QUERY, &mut token) } == 0 {
        return None;
    }
    // TOKEN_USER plus the SID it points at; 256 bytes hold any SID, aligned for the struct.
    let mut buf = [0u64; 32];
    let mut len = 0u32;
    // SAFETY: `buf` is valid for writes of the size given, and aligned for TOKEN_USER.
    let ok = unsafe {
        GetTokenInformation(
            token,
            TokenUser,
            buf.as_mut_ptr().cast(),
            std::mem::size_of_val(&buf) as u32,
            &mut len,
        )
    } != 0;
    // SAFETY: `token` was opened above and is not used after.
    unsafe { CloseHandle(token) };
    if !ok {
        return None;
    }
    // SAFETY: on success the buffer starts with a TOKEN_USER whose SID lies within the buffer.
    unsafe {
        let user = &*(buf.as_ptr() as *const TOKEN_USER);
        let sid = user.User.Sid;
        let n = GetLengthSid(sid) as usize;
        Some(std::slice::from_raw_parts(sid as *const u8, n).to_vec())
    }
}
