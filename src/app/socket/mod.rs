//! The owner's local socket: while a TUI or `dochash watch` holds the index (sled allows one
//! process), `dochash query`, `status` and `index` — and a second TUI — ask it through a
//! [`Client`] instead of opening the database, so a user never sees "database locked".
//!
//! Protocol: one JSON request line, one JSON reply line, both carrying the protocol version
//! `v`; a peer of another version gets a typed [`SocketError::Version`] rather than a garbled
//! answer.
//!
//! The socket is another local program's way in, so the owner trusts nothing it sends: a request
//! line is read up to [`MAX_REQUEST_BYTES`] within one deadline for the whole request (a slow
//! writer cannot hold a thread by trickling bytes), at most [`MAX_CLIENTS`] requests are worked
//! on at once (others wait their turn briefly, and at most [`MAX_CONNECTIONS`] are held, the rest
//! waiting in the listen queue), status long polls wait apart from them (at most
//! [`MAX_WAITERS`]; more are answered after a second), and only processes of the same user are answered
//! (the peer's user, from the kernel). A client, too, only talks to an owner that the kernel says
//! runs as its own user.
//!
//! The transport is the platform's own local socket (`unix.rs`: a Unix domain socket, created
//! 0600 inside a private folder before it becomes visible; `windows.rs`: a named pipe whose
//! access list admits only the user, with the peer's user read from its process token). Both
//! give the same [`Wire`]: reads and writes that give up at a deadline, so everything above it —
//! caps, deadlines, slots, the protocol — is one piece of code.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::engine::{Engine, EngineStatus};
use crate::index::Hit;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as transport;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as transport;

pub use transport::socket_path;

/// The socket file's name in the home (Unix); on Windows the home names a pipe instead.
pub const SOCKET_NAME: &str = "owner.sock";

/// Bumped whenever a request or reply changes shape.
pub const PROTOCOL_VERSION: u32 = 3;

/// Longest request line the owner reads; a longer one is refused without reading the rest.
/// Room for the longest query and path filter allowed even when JSON escapes every character
/// (`\u0001` is six bytes).
pub const MAX_REQUEST_BYTES: usize = 128 * 1024;

/// Longest reply a client reads (hits carry passage text; 10,000 hits of long passages stay well
/// below this).
const MAX_REPLY_BYTES: usize = 256 << 20;

/// Requests worked on at once; more wait for a turn (up to [`QUEUE_PATIENCE`]).
pub const MAX_CLIENTS: usize = 16;

/// Connections held at once (each has a thread); more wait in the kernel's listen queue until
/// one ends.
pub const MAX_CONNECTIONS: usize = 64;

/// Status long polls allowed to wait at once; more are answered at once. Long polls wait apart
/// from the work slots, so followers never lock out queries.
pub const MAX_WAITERS: usize = 16;

/// How long a long poll waits when [`MAX_WAITERS`] already do, before it is answered.
const CROWDED_POLL: Duration = Duration::from_secs(1);

/// How long a request waits for a work slot before the owner says it is busy.
const QUEUE_PATIENCE: Duration = Duration::from_secs(10);

/// Time a client has to send its whole request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// Longest a status request may wait for a change (see [`StatusRequest::changed_since`]).
pub const MAX_STATUS_WAIT: Duration = Duration::from_secs(30);

/// One end of a connection to or from the owner: reads and writes that give up at a deadline
/// (with [`std::io::ErrorKind::TimedOut`]), so no peer can hold the other by going quiet.
trait Wire {
    /// Reads what has arrived (0: the peer closed), waiting at most until `deadline`.
    fn read_by(&mut self, buf: &mut [u8], deadline: Instant) -> std::io::Result<usize>;
    /// Writes all of `bytes` by `deadline`.
    fn write_by(&mut self, bytes: &[u8], deadline: Instant) -> std::io::Result<()>;
}

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(
        "{} is not a socket of yours (another user's file, or a link); dochash does not talk to it (remove the file)",
        .0.display()
    )]
    NotOwned(PathBuf),
    /// The socket answers, but from a process of another user (a link planted in its place,
    /// say): nothing is sent to it and nothing it says is shown.
    #[error(
        "{} leads to a process of another user; dochash does not talk to it (remove the file)",
        .0.display()
    )]
    ForeignPeer(PathBuf),
    #[error("talking to the running dochash: {0}")]
    Io(#[from] std::io::Error),
    /// The owner is there (its socket took the request) but said nothing in time: frozen or
    /// overwhelmed, not gone.
    #[error("the running dochash did not answer within {0} s")]
    Silent(u64),
    #[error("bad reply from the running dochash: {0}")]
    BadReply(String),
    #[error(
        "the running dochash speaks protocol version {theirs}, this one {ours}; restart it (stop the TUI or `dochash watch` and start it again)"
    )]
    Version { ours: u32, theirs: u32 },
    /// The owner understood the request and refused or failed it; its message is for the user.
    #[error("{0}")]
    Remote(String),
}

pub use super::request::{Excerpt, QueryRequest, ReadRequest};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRequest {
    /// Long poll: answer only once the owner's change counter differs from this (or after
    /// `wait_ms`, at most [`MAX_STATUS_WAIT`]), so a second UI follows the owner without polling.
    #[serde(default)]
    pub changed_since: Option<u64>,
    #[serde(default)]
    pub wait_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Query(Box<QueryRequest>),
    Status(StatusRequest),
    /// Add folders (absolute paths) and update; answered with the status at once.
    Index {
        #[serde(with = "crate::pathwire::list")]
        add: Vec<PathBuf>,
    },
    /// Lines of an indexed file (see [`ReadRequest::read`]).
    Read(ReadRequest),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Hits(Vec<Hit>),
    Status(Box<EngineStatus>),
    Excerpt(Box<Excerpt>),
    Error(String),
}

/// What travels: the version beside the payload, so a peer of another version is recognised
/// even when it cannot parse the rest.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope<T> {
    v: u32,
    #[serde(flatten)]
    body: T,
}

#[derive(Deserialize)]
struct VersionOnly {
    v: Option<u32>,
}

/// Serves requests until dropped.
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts serving. Call only while holding the index (so a socket file already there is a
    /// leftover of a dead owner and may be replaced).
    pub fn start(home: &Path, engine: Arc<Engine>) -> std::io::Result<Server> {
        let mut listener = transport::Listener::bind(home)?;
        let path = socket_path(home);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            let active = Arc::new(AtomicUsize::new(0));
            std::thread::Builder::new()
                .name("dochash-socket".into())
                .spawn(move || {
                    let limits = Arc::new(Limits::default());
                    loop {
                        // Only connections from this user's processes come back.
                        let conn = listener.accept();
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        let Ok(conn) = conn else {
                            // Out of descriptors or pipe instances, say: not a reason to spin.
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        };
                        // Past the connection cap, later clients wait in the listen queue.
                        while active.load(Ordering::Acquire) >= MAX_CONNECTIONS
                            && !stop.load(Ordering::Acquire)
                        {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        active.fetch_add(1, Ordering::AcqRel);
                        let engine = engine.clone();
                        let limits = limits.clone();
                        let slot = Slot(active.clone());
                        let spawned = std::thread::Builder::new()
                            .name("dochash-client".into())
                            .spawn(move || {
                                let _slot = slot;
                                serve_one(conn, &engine, &limits);
                            });
                        // A failed spawn dropped the closure, and with it the slot.
                        drop(spawned);
                    }
                })?
        };
        Ok(Server {
            path,
            stop,
            thread: Some(thread),
        })
    }
}

/// Gives a connection's place back when its thread ends, however it ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counters of the work slots and of the long polls waiting.
#[derive(Default)]
struct Limits {
    working: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
    waiting: AtomicUsize,
}

impl Limits {
    /// Waits for a work slot, up to `patience`; `None` when none came free.
    fn work(&self, patience: Duration) -> Option<WorkSlot<'_>> {
        let deadline = Instant::now() + patience;
        let mut n = self.working.lock().unwrap_or_else(|p| p.into_inner());
        while *n >= MAX_CLIENTS {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            n = self
                .freed
                .wait_timeout(n, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *n += 1;
        Some(WorkSlot(self))
    }

    /// A place among the long polls, if one is free.
    fn wait_slot(&self) -> Option<WaitSlot<'_>> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= MAX_WAITERS {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(WaitSlot(self))
    }
}

struct WorkSlot<'a>(&'a Limits);

impl Drop for WorkSlot<'_> {
    fn drop(&mut self) {
        let mut n = self.0.working.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        drop(n);
        self.0.freed.notify_one();
    }
}

struct WaitSlot<'a>(&'a Limits);

impl Drop for WaitSlot<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

fn reply_line(a: &Answer) -> Vec<u8> {
    let env = Envelope {
        v: PROTOCOL_VERSION,
        body: a,
    };
    let mut s = serde_json::to_vec(&env).unwrap_or_else(|e| {
        serde_json::to_vec(&Envelope {
            v: PROTOCOL_VERSION,
            body: Answer::Error(format!("cannot encode the reply: {e}")),
        })
        .unwrap_or_default()
    });
    s.push(b'\n');
    s
}

/// Reads one line of at most `max` bytes, all of it within `deadline`. `Ok(None)` when the line
/// is longer than `max` (the rest is not read).
fn read_line(
    conn: &mut impl Wire,
    max: usize,
    deadline: Instant,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if Instant::now() >= deadline {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        let n = conn.read_by(&mut chunk, deadline)?;
        if n == 0 {
            return Ok(Some(buf));
        }
        let got = &chunk[..n];
        if let Some(i) = got.iter().position(|&b| b == b'\n') {
            buf.extend_from_slice(&got[..i]);
            return Ok((buf.len() <= max).then_some(buf));
        }
        buf.extend_from_slice(got);
        if buf.len() > max {
            return Ok(None);
        }
    }
}

/// How long the owner keeps trying to hand a reply to a client that does not read it.
const REPLY_DEADLINE: Duration = Duration::from_secs(30);

fn serve_one(mut conn: impl Wire, engine: &Engine, limits: &Limits) {
    let answer = match read_line(
        &mut conn,
        MAX_REQUEST_BYTES,
        Instant::now() + REQUEST_DEADLINE,
    ) {
        Ok(Some(line)) => answer(&line, engine, limits),
        Ok(None) => Answer::Error(format!(
            "request refused: longer than {} KiB",
            MAX_REQUEST_BYTES / 1024
        )),
        Err(_) => return,
    };
    let _ = conn.write_by(&reply_line(&answer), Instant::now() + REPLY_DEADLINE);
}

fn answer(line: &[u8], engine: &Engine, limits: &Limits) -> Answer {
    let req = match serde_json::from_slice::<Envelope<Request>>(line) {
        Ok(env) if env.v == PROTOCOL_VERSION => env.body,
        Ok(env) => return version_error(env.v),
        Err(e) => {
            return match serde_json::from_slice::<VersionOnly>(line) {
                Ok(VersionOnly { v: Some(v) }) if v != PROTOCOL_VERSION => version_error(v),
                _ => Answer::Error(format!("bad request: {e}")),
            };
        }
    };
    // A long poll waits apart from the work slots (when too many already wait, it is answered
    // at once); everything else takes a work slot, waiting a little for one.
    if let Request::Status(s) = &req {
        if let Some(since) = s.changed_since {
            let wait = Duration::from_millis(s.wait_ms).min(MAX_STATUS_WAIT);
            match limits.wait_slot() {
                Some(_waiting) => {
                    engine.wait_change(since, wait);
                }
                // Too many followers already wait: this one is answered after a pause, so a
                // follower that asks again at once does not spin.
                None => std::thread::sleep(wait.min(CROWDED_POLL)),
            }
        }
        return Answer::Status(Box::new(engine.status()));
    }
    let Some(_working) = limits.work(QUEUE_PATIENCE) else {
        return Answer::Error("the running dochash is busy with other clients; try again".into());
    };
    match req {
        Request::Query(q) => match engine.query(&q) {
            Ok(h) => Answer::Hits(h),
            Err(e) => Answer::Error(e.to_string()),
        },
        Request::Read(r) => match engine.read(&r) {
            Ok(e) => Answer::Excerpt(Box::new(e)),
            Err(e) => Answer::Error(e.to_string()),
        },
        Request::Status(_) => Answer::Status(Box::new(engine.status())),
        Request::Index { add } => match engine.add_roots(add) {
            Ok(()) => Answer::Status(Box::new(engine.status())),
            Err(e) => Answer::Error(e.to_string()),
        },
    }
}

/// The error a client of another version reads: worded from its side (it is "this one").
fn version_error(client: u32) -> Answer {
    Answer::Error(
        SocketError::Version {
            ours: client,
            theirs: PROTOCOL_VERSION,
        }
        .to_string(),
    )
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocking accept so the thread sees the flag.
        transport::wake(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A connection to the running owner, typed: each call sends one request and checks that the
/// reply is of the kind asked for.
#[derive(Debug, Clone)]
pub struct Client {
    path: PathBuf,
    /// How long an answer is waited for (beyond a long poll's own wait).
    patience: Duration,
}

/// How long a client waits for an answer unless told otherwise: a query on a huge index on a
/// slow machine, queued behind others, still answers well within it.
const ANSWER_WAIT: Duration = Duration::from_secs(120);

/// How long [`Client::connect`] waits for the owner's first answer: status is answered at once
/// by a live owner, so one that says nothing for this long is frozen (stopped, swapped out).
const CONNECT_WAIT: Duration = Duration::from_secs(10);

impl Client {
    /// The owner of `home`'s index, if one is running: `Ok(None)` when there is no socket or
    /// nobody answers on it (a crashed owner's leftover), so the caller opens the index itself.
    pub fn connect(home: &Path) -> Result<Option<Client>, SocketError> {
        let probe = Client {
            path: socket_path(home),
            patience: CONNECT_WAIT,
        };
        match probe.exchange(&Request::Status(StatusRequest {
            changed_since: None,
            wait_ms: 0,
        })) {
            Ok(_) => Ok(Some(probe.within(ANSWER_WAIT))),
            Err(SocketError::Io(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// This client, waiting at most `patience` for each answer (a request whose caller has a
    /// deadline: an agent's host gives up after a minute).
    pub fn within(&self, patience: Duration) -> Client {
        Client {
            path: self.path.clone(),
            patience,
        }
    }

    pub fn query(&self, q: &QueryRequest) -> Result<Vec<Hit>, SocketError> {
        match self.exchange(&Request::Query(Box::new(q.clone())))? {
            Answer::Hits(h) => Ok(h),
            other => Err(unexpected(&other)),
        }
    }

    pub fn status(&self) -> Result<EngineStatus, SocketError> {
        self.status_after(None, Duration::ZERO)
    }

    /// The status once it differs from `since` (the `changes` counter of an earlier status), or
    /// after `wait`.
    pub fn status_after(
        &self,
        since: Option<u64>,
        wait: Duration,
    ) -> Result<EngineStatus, SocketError> {
        let req = Request::Status(StatusRequest {
            changed_since: since,
            wait_ms: wait.as_millis().min(u64::MAX as u128) as u64,
        });
        match self.exchange(&req)? {
            Answer::Status(s) => Ok(*s),
            other => Err(unexpected(&other)),
        }
    }

    /// Hands folders to the owner, which validates, saves and indexes them.
    pub fn add_roots(&self, add: Vec<PathBuf>) -> Result<EngineStatus, SocketError> {
        match self.exchange(&Request::Index { add })? {
            Answer::Status(s) => Ok(*s),
            other => Err(unexpected(&other)),
        }
    }

    pub fn read(&self, r: &ReadRequest) -> Result<Excerpt, SocketError> {
        match self.exchange(&Request::Read(r.clone()))? {
            Answer::Excerpt(e) => Ok(*e),
            other => Err(unexpected(&other)),
        }
    }

    fn exchange(&self, req: &Request) -> Result<Answer, SocketError> {
        let mut line = serde_json::to_vec(&Envelope {
            v: PROTOCOL_VERSION,
            body: req,
        })
        .map_err(|e| SocketError::BadReply(e.to_string()))?;
        if line.len() > MAX_REQUEST_BYTES {
            return Err(SocketError::Remote(format!(
                "request refused: longer than {} KiB",
                MAX_REQUEST_BYTES / 1024
            )));
        }
        line.push(b'\n');
        let wait = match req {
            Request::Status(s) => Duration::from_millis(s.wait_ms).min(MAX_STATUS_WAIT),
            _ => Duration::ZERO,
        };
        let patience = self.patience.max(Duration::from_millis(1)) + wait;
        let deadline = Instant::now() + patience;
        // A deadline passed while connecting or sending means an owner that is there but does
        // not take the request (busy or frozen), not one that is gone.
        let silent = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                SocketError::Silent(patience.as_secs_f64().round() as u64)
            }
            _ => SocketError::Io(e),
        };
        // Only an endpoint of ours, served by a process of this user, is talked to.
        let mut conn = transport::connect(&self.path, deadline).map_err(|e| match e {
            SocketError::Io(e) => silent(e),
            e => e,
        })?;
        conn.write_by(&line, deadline).map_err(silent)?;
        let reply = match read_line(&mut conn, MAX_REPLY_BYTES, deadline) {
            Ok(Some(reply)) => reply,
            Ok(None) => {
                return Err(SocketError::BadReply(format!(
                    "a reply longer than {} MiB",
                    MAX_REPLY_BYTES >> 20
                )));
            }
            Err(e) => return Err(silent(e)),
        };
        if reply.is_empty() {
            return Err(SocketError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        match serde_json::from_slice::<Envelope<Answer>>(&reply) {
            Ok(env) if env.v == PROTOCOL_VERSION => match env.body {
                Answer::Error(e) => Err(SocketError::Remote(e)),
                a => Ok(a),
            },
            Ok(env) => Err(SocketError::Version {
                ours: PROTOCOL_VERSION,
                theirs: env.v,
            }),
            Err(e) => match serde_json::from_slice::<VersionOnly>(&reply) {
                Ok(VersionOnly { v: Some(v) }) if v != PROTOCOL_VERSION => {
                    Err(SocketError::Version {
                        ours: PROTOCOL_VERSION,
                        theirs: v,
                    })
                }
                _ => Err(SocketError::BadReply(e.to_string())),
            },
        }
    }
}

fn unexpected(a: &Answer) -> SocketError {
    let kind = match a {
        Answer::Hits(_) => "hits",
        Answer::Status(_) => "a status",
        Answer::Excerpt(_) => "an excerpt",
        Answer::Error(_) => "an error",
    };
    SocketError::BadReply(format!("unexpected {kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_carry_the_version() {
        let req = Request::Query(Box::new(QueryRequest::new("x", 3)));
        let line = serde_json::to_string(&Envelope {
            v: PROTOCOL_VERSION,
            body: &req,
        })
        .unwrap();
        assert!(line.starts_with(r#"{"v":3,"op":"query""#), "{line}");
        let back: Envelope<Request> = serde_json::from_str(&line).unwrap();
        assert_eq!(back.body, req);
        let reply = String::from_utf8(reply_line(&Answer::Error("no".into()))).unwrap();
        assert_eq!(reply, "{\"v\":3,\"error\":\"no\"}\n");
    }

    /// The platform's transport (a Unix socket, or a named pipe on Windows) carries a line each
    /// way, and neither end waits past its deadline for a peer that says nothing.
    #[test]
    fn a_line_goes_each_way_and_a_silent_peer_is_given_up_at_the_deadline() {
        use std::io::ErrorKind;
        let home = tempfile::tempdir().unwrap();
        let path = socket_path(home.path());
        let far = || Instant::now() + Duration::from_secs(20);
        let soon = || Instant::now() + Duration::from_millis(200);
        let nobody = tempfile::tempdir().unwrap();
        assert!(matches!(
            transport::connect(&socket_path(nobody.path()), far()),
            Err(SocketError::Io(_))
        ));

        let mut listener = transport::Listener::bind(home.path()).unwrap();
        let owner = std::thread::spawn(move || {
            let mut conn = listener.accept().unwrap();
            let line = read_line(&mut conn, 100, far()).unwrap().unwrap();
            conn.write_by(&[&line[..], b" back\n"].concat(), far())
                .unwrap();
            let mut quiet = listener.accept().unwrap();
            let err = read_line(&mut quiet, 100, soon()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::TimedOut);
            quiet
        });
        let mut conn = transport::connect(&path, far()).unwrap();
        conn.write_by(b"hello\n", far()).unwrap();
        assert_eq!(
            read_line(&mut conn, 100, far()).unwrap().unwrap(),
            b"hello back"
        );

        let mut quiet = transport::connect(&path, far()).unwrap();
        // The owner has given up on this client's request, and holds the connection silently.
        let held = owner.join().unwrap();
        let err = read_line(&mut quiet, 100, soon()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        drop(held);
    }

    #[cfg(unix)]
    #[test]
    fn request_lines_are_capped_and_must_arrive_before_the_deadline() {
        use std::io::Write;
        use std::os::unix::net::UnixStream;
        let pair = || {
            let (a, b) = UnixStream::pair().unwrap();
            (unix::Conn::from(a), b)
        };
        let (mut a, mut b) = pair();
        b.write_all(b"{\"v\":1}\nrest").unwrap();
        let far = Instant::now() + Duration::from_secs(10);
        assert_eq!(read_line(&mut a, 100, far).unwrap().unwrap(), b"{\"v\":1}");

        let (mut a, mut b) = pair();
        b.write_all(&vec![b'x'; 300]).unwrap();
        assert!(read_line(&mut a, 100, far).unwrap().is_none());

        // A writer that never finishes its line runs into the deadline, however it trickles.
        let (mut a, mut b) = pair();
        b.write_all(b"{\"v\"").unwrap();
        let soon = Instant::now() + Duration::from_millis(50);
        assert!(read_line(&mut a, 100, soon).is_err());
    }
}
