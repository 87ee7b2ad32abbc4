//! The index as a long-running front end reaches it: as its owner, or as a client of the
//! process that owns it — decided at start and again whenever that owner goes away.
//!
//! sled lets one process hold the index; a TUI, `dochash mcp` and `dochash watch` all want it
//! all day, and several agents may start several `dochash mcp` at once. So each front end holds
//! an [`Access`] instead of an [`Engine`]: a background thread looks for an owner's socket,
//! else starts an engine, which waits for the index's lock while another process holds it.
//! Whoever opens the index serves the socket; the others see the socket appear and become its
//! clients (their engine, still waiting for the lock, is stopped). A client follows the owner's
//! status with long polls and, when the owner quits, starts over: one of the clients takes the
//! index, and the rest follow it. Exactly one owns, and none fails.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::AppError;
use super::engine::{Engine, EngineConfig, EngineStatus};
use super::request::{Excerpt, QueryRequest, ReadRequest};
use super::socket::{self, Client, Server, SocketError};
use crate::index::Hit;

/// How often a front end whose engine waits for the index looks for the socket of the process
/// that holds it.
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// The least a client waits for an answer: the owner makes a request wait up to 10 s for a
/// turn when it is busy with others.
const QUEUED_ANSWER: Duration = Duration::from_secs(15);

/// How long an owner that is stopping has to let go of the index (its worker may be writing).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Which side of the socket this front end is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Looking for an owner, or waiting for the index to open.
    Starting,
    Owner,
    Client,
    Stopped,
}

enum Link {
    Looking,
    /// Our engine, not yet open (loading the model, or waiting for the lock).
    Starting(Arc<Engine>),
    Owner {
        engine: Arc<Engine>,
        /// `None` when the socket could not be made (the note says why): this front end still
        /// answers its own requests.
        _server: Option<Server>,
    },
    Client {
        client: Client,
        /// The owner's status as the last long poll returned it.
        status: Box<EngineStatus>,
    },
    /// The owner speaks another protocol version, or its socket is not ours: nothing to do
    /// until the user acts.
    Broken(String),
    Stopped,
}

struct Inner {
    cfg: EngineConfig,
    link: Mutex<Link>,
    changed: Condvar,
    stop: AtomicBool,
    /// What happened to the link (took over, followed, …), for the status.
    events: Mutex<Vec<String>>,
}

impl Inner {
    fn link(&self) -> MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, mut guard: MutexGuard<'_, Link>, to: Link) {
        *guard = to;
        drop(guard);
        self.changed.notify_all();
    }

    fn event(&self, e: String) {
        let mut ev = self.events.lock().unwrap_or_else(|p| p.into_inner());
        ev.push(e);
        let len = ev.len();
        if len > 20 {
            ev.drain(..len - 20);
        }
    }
}

/// The index, owned or shared; cheap to clone.
#[derive(Clone)]
pub struct Access {
    inner: Arc<Inner>,
}

impl Access {
    /// Starts looking for the index's owner in the background and returns at once. `cfg` is
    /// what an engine of this process starts with when it is to own the index; its folders are
    /// handed to an owner found instead.
    pub fn start(cfg: EngineConfig) -> Access {
        let inner = Arc::new(Inner {
            cfg,
            link: Mutex::new(Link::Looking),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            events: Mutex::new(Vec::new()),
        });
        let runner = inner.clone();
        let spawned = std::thread::Builder::new()
            .name("dochash-access".into())
            .spawn(move || run(&runner));
        if let Err(e) = spawned {
            *inner.link() = Link::Broken(format!("cannot start a thread: {e}"));
        }
        Access { inner }
    }

    pub fn role(&self) -> Role {
        match &*self.inner.link() {
            Link::Looking | Link::Starting(_) => Role::Starting,
            Link::Owner { .. } => Role::Owner,
            Link::Client { .. } | Link::Broken(_) => Role::Client,
            Link::Stopped => Role::Stopped,
        }
    }

    /// Answers a query, waiting up to `patience` for the index to open (a model still
    /// loading, an owner still starting).
    pub fn query(&self, q: &QueryRequest, patience: Duration) -> Result<Vec<Hit>, AppError> {
        self.ask(patience, |e| e.query(q), |c| c.query(q))
    }

    /// Lines of an indexed file, waiting as [`Self::query`] does.
    pub fn read(&self, r: &ReadRequest, patience: Duration) -> Result<Excerpt, AppError> {
        self.ask(patience, |e| e.read(r), |c| c.read(r))
    }

    /// The owner's status, at once: this process's engine's, or the last one the owner sent
    /// (it is followed as it changes). Before either exists, what is being waited for.
    pub fn status(&self) -> EngineStatus {
        let mut s = match &*self.inner.link() {
            Link::Starting(e) | Link::Owner { engine: e, .. } => e.status(),
            Link::Client { status, .. } => (**status).clone(),
            Link::Looking => EngineStatus {
                job: Some(super::Job {
                    label: "looking for the index".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Link::Broken(why) => EngineStatus {
                error: Some(why.clone()),
                ..Default::default()
            },
            Link::Stopped => EngineStatus {
                error: Some("stopped".into()),
                ..Default::default()
            },
        };
        let events = self.inner.events.lock().unwrap_or_else(|p| p.into_inner());
        s.notes.extend(events.iter().cloned());
        s
    }

    /// Stops following or owning: an owned index is flushed and let go, its socket removed,
    /// so that a client of this process can take over.
    pub fn shutdown(&self) {
        self.inner.stop.store(true, Ordering::Release);
        let old = std::mem::replace(&mut *self.inner.link(), Link::Stopped);
        self.inner.changed.notify_all();
        match old {
            Link::Owner { engine, _server } => {
                drop(_server);
                engine.shutdown(STOP_GRACE);
            }
            Link::Starting(engine) => engine.shutdown(STOP_GRACE),
            _ => {}
        }
    }

    fn ask<T>(
        &self,
        patience: Duration,
        own: impl Fn(&Engine) -> Result<T, AppError>,
        remote: impl Fn(&Client) -> Result<T, SocketError>,
    ) -> Result<T, AppError> {
        let deadline = Instant::now() + patience;
        loop {
            let link = self.inner.link();
            match &*link {
                Link::Owner { engine, .. } => {
                    let engine = engine.clone();
                    drop(link);
                    return own(&engine);
                }
                Link::Client { client, .. } => {
                    // Not longer than the caller waits (but long enough for an owner that is
                    // busy with other clients to reach this one).
                    let client = client.within(
                        deadline
                            .saturating_duration_since(Instant::now())
                            .max(QUEUED_ANSWER),
                    );
                    drop(link);
                    match remote(&client) {
                        // The owner went away: start over, and ask whoever owns next.
                        Err(SocketError::Io(_)) if Instant::now() < deadline => {
                            let link = self.inner.link();
                            if matches!(&*link, Link::Client { .. }) {
                                self.inner.set(link, Link::Looking);
                            }
                            continue;
                        }
                        other => return other.map_err(AppError::from),
                    }
                }
                Link::Broken(why) => return Err(AppError::Failed(why.clone())),
                Link::Stopped => return Err(AppError::NotReady("dochash is stopping".into())),
                Link::Looking | Link::Starting(_) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    // An engine that could not start (no model offline, say) will not open:
                    // its error is the answer, at once.
                    let failed = matches!(&*link, Link::Starting(e) if e.status().error.is_some());
                    if left.is_zero() || failed {
                        return match &*link {
                            Link::Starting(engine) => {
                                let engine = engine.clone();
                                drop(link);
                                own(&engine)
                            }
                            _ => Err(AppError::NotReady("looking for the index…".into())),
                        };
                    }
                    let _ = self
                        .inner
                        .changed
                        .wait_timeout(link, left)
                        .unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }
}

/// The background side: finds or becomes the owner, and starts over when the owner goes.
fn run(inner: &Inner) {
    let home = &inner.cfg.home;
    // The status counter of the owner followed, for its long polls.
    let mut since: Option<u64> = None;
    let mut handed_over = false;
    while !inner.stop.load(Ordering::Acquire) {
        let link = inner.link();
        match &*link {
            Link::Stopped | Link::Broken(_) => return,
            Link::Owner { .. } => {
                // Nothing to do until stopped.
                let _ = inner
                    .changed
                    .wait_timeout(link, Duration::from_secs(3600))
                    .unwrap_or_else(|p| p.into_inner());
            }
            Link::Looking => {
                drop(link);
                let next = match home.owner() {
                    Ok(Some(client)) => follow(inner, client, &mut since, &mut handed_over),
                    Ok(None) => Link::Starting(Arc::new(Engine::start(inner.cfg.clone()))),
                    // An owner that is there but frozen: look again until it answers or goes.
                    Err(AppError::Socket(SocketError::Silent(_))) => {
                        std::thread::sleep(LOOK_EVERY);
                        Link::Looking
                    }
                    Err(e) => Link::Broken(e.to_string()),
                };
                let link = inner.link();
                if matches!(&*link, Link::Looking) {
                    inner.set(link, next);
                } else if let Link::Starting(engine) = next {
                    // Stopped meanwhile.
                    engine.shutdown(STOP_GRACE);
                }
            }
            Link::Starting(engine) => {
                let engine = engine.clone();
                drop(link);
                match engine.wait_open(LOOK_EVERY) {
                    Ok(()) => {
                        let server = match Server::start(home.dir(), engine.clone()) {
                            Ok(s) => Some(s),
                            Err(e) => {
                                inner.event(format!(
                                    "cannot make {} ({e}); other dochash processes cannot ask this one",
                                    socket::socket_path(home.dir()).display()
                                ));
                                None
                            }
                        };
                        let link = inner.link();
                        if matches!(&*link, Link::Starting(_)) {
                            if since.is_some() {
                                inner.event("the dochash that owned the index stopped; this one took it over".into());
                            }
                            inner.set(
                                link,
                                Link::Owner {
                                    engine,
                                    _server: server,
                                },
                            );
                        }
                    }
                    // Still loading, or another process holds the index: once that one
                    // serves its socket, follow it instead of waiting.
                    Err(_) => {
                        if let Ok(Some(client)) = home.owner() {
                            let next = follow(inner, client, &mut since, &mut handed_over);
                            let link = inner.link();
                            if matches!(&*link, Link::Starting(_)) {
                                inner.set(link, next);
                                engine.shutdown(STOP_GRACE);
                            }
                        } else if engine.status().error.is_some() {
                            // The engine stopped (the model could not be loaded, say): its
                            // status says why; look again later in case an owner appears.
                            std::thread::sleep(LOOK_EVERY * 5);
                        }
                    }
                }
            }
            Link::Client { client, .. } => {
                let client = client.clone();
                drop(link);
                let got = client.status_after(since, socket::MAX_STATUS_WAIT);
                let link = inner.link();
                if !matches!(&*link, Link::Client { .. }) {
                    continue;
                }
                match got {
                    Ok(s) => {
                        since = Some(s.changes);
                        inner.set(
                            link,
                            Link::Client {
                                client,
                                status: Box::new(s),
                            },
                        );
                    }
                    Err(SocketError::Io(_)) => inner.set(link, Link::Looking),
                    // Frozen, not gone: keep following.
                    Err(SocketError::Silent(_)) => {}
                    Err(e) => inner.set(link, Link::Broken(e.to_string())),
                }
            }
        }
    }
}

/// Becomes a client of the owner found, handing it this front end's folders the first time.
fn follow(inner: &Inner, client: Client, since: &mut Option<u64>, handed_over: &mut bool) -> Link {
    let add: Vec<PathBuf> = inner.cfg.add_roots.clone();
    if !add.is_empty() && !*handed_over {
        *handed_over = true;
        if let Err(e) = client.add_roots(add) {
            inner.event(format!(
                "the dochash that owns the index could not add the folders: {e}"
            ));
        }
    }
    match client.status() {
        Ok(s) => {
            *since = Some(s.changes);
            Link::Client {
                client,
                status: Box::new(s),
            }
        }
        Err(SocketError::Io(_) | SocketError::Silent(_)) => Link::Looking,
        Err(e) => Link::Broken(e.to_string()),
    }
}
