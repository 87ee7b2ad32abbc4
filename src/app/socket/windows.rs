//! The owner's socket on Windows: a named pipe, `\\.\pipe\dochash-<hash of the home>`.
//!
//! Pipes live in one namespace for the whole machine, so both ends check who is at the other:
//! the owner creates the first instance (a name already held by anyone else is refused) with an
//! access list that admits only its own user and no remote clients, and reads each client's user
//! from the client process's token; a client reads the serving process's user the same way and
//! talks only to its own. There is no file to leave behind: the pipe goes with its owner.
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

/// The pipe that serves `home`: named after the home's path, as one machine has one pipe
/// namespace for every user and every home.
pub fn socket_path(home: &Path) -> PathBuf {
    let hash = blake3::hash(home.as_os_str().as_encoded_bytes());
    PathBuf::from(format!(r"\\.\pipe\dochash-{}", &hash.to_hex()[..24]))
}

pub struct Listener {
    /// Declared first: pipes are dropped before the runtime that drives them.
    next: Option<NamedPipeServer>,
    name: PathBuf,
    security: Security,
    runtime: tokio::runtime::Runtime,
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
            next: None,
            name: socket_path(home),
            security: Security::only_this_user()?,
            runtime,
        };
        // The first instance claims the name: if any process holds it already, this fails
        // rather than joining a pipe someone else controls.
        listener.next = Some(listener.instance(true)?);
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

    /// The next connection from a process of this user; others are closed unanswered.
    pub fn accept(&mut self) -> std::io::Result<Conn> {
        loop {
            let current = match self.next.take() {
                Some(p) => p,
                None => self.instance(false)?,
            };
            // The next instance waits before this one is handed out, so a client never finds
            // the name missing between two connections.
            self.next = self.instance(false).ok();
            self.runtime.block_on(current.connect())?;
            let mut pid = 0u32;
            // SAFETY: the handle is a connected pipe instance; `pid` is valid for writes.
            let known =
                unsafe { GetNamedPipeClientProcessId(current.as_raw_handle() as HANDLE, &mut pid) }
                    != 0;
            if known && same_user(pid) {
                return Ok(Conn {
                    pipe: Pipe::Server(current),
                    runtime: Driver::Shared(self.runtime.handle().clone()),
                });
            }
        }
    }
}

/// Wakes a listener blocked in `accept` (its owner is stopping). Two instances listen at any
/// time (the one `accept` waits on and the next), and a client may reach either, so both are
/// connected, and held until both are.
pub fn wake(path: &Path) {
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
    };
    let _both = (open(), open());
}

/// How often a client tries again while every instance of the pipe is busy.
const BUSY_RETRY: Duration = Duration::from_millis(20);

/// Connects to the owner behind the pipe, if the process serving it runs as this user.
pub fn connect(path: &Path, deadline: Instant) -> Result<Conn, SocketError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = loop {
        let opened = {
            let _in = runtime.enter();
            ClientOptions::new().open(path)
        };
        match opened {
            Ok(c) => break c,
            Err(e)
                if e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32)
                    && Instant::now() + BUSY_RETRY < deadline =>
            {
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
    Shared(tokio::runtime::Handle),
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
            Driver::Shared(h) => h.block_on(f),
            Driver::Own(rt) => rt.block_on(f),
        }
    }
}

fn by<T>(
    deadline: Instant,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> impl std::future::Future<Output = std::io::Result<T>> {
    async move {
        tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), f)
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
    }
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
