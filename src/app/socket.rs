//! The owner's local socket: while a TUI or `dochash watch` holds the index (sled allows one
//! process), `dochash query` and `dochash status` ask it instead of opening the database, so a
//! user never sees "database locked". One JSON request line, one JSON response line.
//!
//! The socket lives in the dochash home and is created with mode 0600 before it becomes visible
//! (bound inside a private 0700 folder, then renamed into place), and a client only talks to a
//! socket owned by the owner of the home folder.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::engine::{Engine, EngineStatus};
use crate::index::{Hit, SearchParams};

pub const SOCKET_NAME: &str = "owner.sock";

pub fn socket_path(home: &Path) -> PathBuf {
    home.join(SOCKET_NAME)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    Query {
        text: String,
        k: usize,
        per_file: bool,
        candidates: Option<usize>,
    },
    Status,
    /// Add folders (absolute paths) and update; answered with the status at once.
    Index {
        add: Vec<PathBuf>,
    },
}

/// The owner's status as sent over the socket (and printed by `dochash status --json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StatusReply {
    pub roots: Vec<PathBuf>,
    pub files: usize,
    pub passages: usize,
    pub model: String,
    pub codes: String,
    pub device: String,
    pub job: Option<String>,
    pub error: Option<String>,
    /// The trained generation serving, if any.
    #[serde(default)]
    pub trained: Option<String>,
    /// One-line notes from the last update and the last training.
    #[serde(default)]
    pub notes: Vec<String>,
}

impl From<EngineStatus> for StatusReply {
    fn from(s: EngineStatus) -> Self {
        StatusReply {
            roots: s.roots,
            files: s.files,
            passages: s.passages,
            model: s.model,
            codes: s.codes,
            device: s.device,
            job: s.job.map(|j| {
                if j.total > 0 {
                    format!("{} {}/{} {}", j.label, j.done, j.total, j.detail)
                } else {
                    format!("{} {}", j.label, j.detail)
                }
            }),
            error: s.error,
            trained: s.trained,
            notes: s.notes,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    Hits(Vec<Hit>),
    Status(StatusReply),
    Error(String),
}

/// Serves requests until dropped.
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[cfg(unix)]
impl Server {
    /// Binds the socket. Call only while holding the index (so any socket file already there
    /// is a leftover of a dead owner and may be replaced).
    pub fn start(home: &Path, engine: Arc<Engine>) -> std::io::Result<Server> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        use std::os::unix::net::UnixListener;

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

        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("dochash-socket".into())
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        let Ok(conn) = conn else { continue };
                        let engine = engine.clone();
                        let _ = std::thread::Builder::new()
                            .name("dochash-client".into())
                            .spawn(move || serve_one(conn, &engine));
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

#[cfg(unix)]
fn serve_one(conn: std::os::unix::net::UnixStream, engine: &Engine) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut line = String::new();
    if BufReader::new(conn).read_line(&mut line).is_err() {
        return;
    }
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Query {
            text,
            k,
            per_file,
            candidates,
        }) => match engine.search(
            &text,
            &SearchParams {
                k,
                candidates,
                per_file,
            },
        ) {
            Ok(h) => Reply::Hits(h),
            Err(e) => Reply::Error(e),
        },
        Ok(Request::Status) => Reply::Status(engine.status().into()),
        Ok(Request::Index { add }) => {
            if add.iter().any(|p| !p.is_absolute()) {
                Reply::Error("folders must be given as absolute paths".into())
            } else {
                engine.add_roots(add);
                Reply::Status(engine.status().into())
            }
        }
        Err(e) => Reply::Error(format!("bad request: {e}")),
    };
    if let Ok(mut s) = serde_json::to_string(&reply) {
        s.push('\n');
        let _ = writer.write_all(s.as_bytes());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocking accept so the thread sees the flag.
        #[cfg(unix)]
        let _ = std::os::unix::net::UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Asks a running owner. `None` when there is none (no socket, or nobody listening), so the
/// caller opens the index itself.
#[cfg(unix)]
pub fn ask(home: &Path, req: &Request) -> Option<Result<Reply, String>> {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::net::UnixStream;

    let path = socket_path(home);
    let sock_meta = std::fs::symlink_metadata(&path).ok()?;
    let home_meta = std::fs::metadata(home).ok()?;
    if sock_meta.uid() != home_meta.uid() {
        return Some(Err(format!(
            "{} is not owned by the owner of {}; remove it",
            path.display(),
            home.display()
        )));
    }
    let mut conn = UnixStream::connect(&path).ok()?;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
    let io = |e: std::io::Error| format!("talking to the running dochash: {e}");
    let mut run = || -> Result<Reply, String> {
        let mut s = serde_json::to_string(req).map_err(|e| e.to_string())?;
        s.push('\n');
        conn.write_all(s.as_bytes()).map_err(io)?;
        let mut line = String::new();
        BufReader::new(&conn).read_line(&mut line).map_err(io)?;
        serde_json::from_str(&line).map_err(|e| format!("bad reply from the running dochash: {e}"))
    };
    Some(run())
}

#[cfg(not(unix))]
pub fn ask(_home: &Path, _req: &Request) -> Option<Result<Reply, String>> {
    None
}

#[cfg(not(unix))]
impl Server {
    pub fn start(_home: &Path, _engine: Arc<Engine>) -> std::io::Result<Server> {
        Err(std::io::Error::other(
            "serving other processes needs Unix sockets",
        ))
    }
}
