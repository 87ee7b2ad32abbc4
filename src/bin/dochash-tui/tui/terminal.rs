//! Owning the terminal: raw mode and the alternate screen, giving them back on every exit path,
//! the event loop, and handing the terminal to the editor.

use std::io::{self, IsTerminal, Stdout, Write};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use crossterm::cursor::Show;
use crossterm::event::{self, DisableBracketedPaste, EnableBracketedPaste, Event};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::layout::Rect;

use super::app::{Action, App, SearchRequest, SearchResponse, tilde};
use super::{Backend, TuiOptions, clipboard, editor, ui, worker};

type Term = Terminal<CrosstermBackend<Stdout>>;

/// Whether we currently have the terminal in raw mode on the alternate screen. Global because
/// the panic hook, which can run on any thread, must know whether there is anything to undo.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Set from a signal handler (SIGTERM, SIGHUP: a service manager, a closed terminal window):
/// the loop quits as if the user had, so the terminal is restored and the socket removed.
pub(super) static QUIT_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Set when the panic hook gave the terminal back on some other thread's behalf: the UI thread
/// then takes it back and carries on.
static RESTORED_BY_PANIC: AtomicBool = AtomicBool::new(false);

/// How long to wait for input before looking at background progress again.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// Shorter while a search is in flight, so results appear as soon as they arrive.
const BUSY_POLL: Duration = Duration::from_millis(10);
/// Most events handled before the screen is redrawn: a large paste should not freeze the screen.
const EVENTS_PER_FRAME: usize = 256;

fn enter_terminal() -> io::Result<()> {
    enable_raw_mode()?;
    // Set before the rest so that a failure below still gets raw mode undone.
    ACTIVE.store(true, Ordering::SeqCst);
    execute!(io::stdout(), EnterAlternateScreen, EnableBracketedPaste)
}

/// Leaves the alternate screen and raw mode, once; returns whether there was anything to undo.
/// Best effort: when restoring fails there is nobody left to tell.
fn restore_terminal() -> bool {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return false;
    }
    let _ = disable_raw_mode();
    let _ = execute!(
        io::stdout(),
        DisableBracketedPaste,
        LeaveAlternateScreen,
        Show
    );
    true
}

/// Gives the terminal back when dropped, whatever the reason `run` is returning.
struct TerminalGuard;

impl TerminalGuard {
    fn new() -> io::Result<Self> {
        // Created first, so a failure half-way through entering still restores.
        let guard = TerminalGuard;
        enter_terminal()?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

type Hook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Sync + Send + 'static>;

/// Our panic hook restores the terminal before the previous hook prints the message: otherwise
/// the message lands on the alternate screen, which is thrown away, and the shell is left in raw
/// mode. Dropping the guard puts the previous hook back.
struct PanicHookGuard {
    previous: Arc<Hook>,
}

fn install_panic_hook() -> PanicHookGuard {
    let previous: Arc<Hook> = Arc::new(std::panic::take_hook());
    let chained = Arc::clone(&previous);
    std::panic::set_hook(Box::new(move |info| {
        let restored = restore_terminal();
        chained(info);
        // Only now, with the message printed on the normal screen, may the UI thread (if this
        // is another thread) take the terminal back.
        if restored {
            RESTORED_BY_PANIC.store(true, Ordering::SeqCst);
        }
    }));
    PanicHookGuard { previous }
}

impl Drop for PanicHookGuard {
    fn drop(&mut self) {
        // `set_hook` panics on a panicking thread, and a panic in a destructor during unwinding
        // aborts. Leaving our hook installed is harmless: with the terminal restored it only
        // forwards to the previous one.
        if std::thread::panicking() {
            return;
        }
        let previous = Arc::clone(&self.previous);
        std::panic::set_hook(Box::new(move |info| previous(info)));
    }
}

pub fn run(backend: Arc<dyn Backend>, opts: TuiOptions) -> anyhow::Result<()> {
    if !io::stdin().is_terminal() || !io::stdout().is_terminal() {
        bail!("dochash-tui needs an interactive terminal (stdin and stdout must be a TTY)");
    }
    let editor_cmd = editor::editor_from_env(opts.editor.as_deref());
    let viewer_cmd = editor::viewer_from_env(opts.viewer.as_deref());
    let (requests, responses) =
        worker::spawn(Arc::clone(&backend), opts.limit.max(1), worker::DEBOUNCE)
            .context("starting the search worker")?;
    let mut app = App::new(&opts.query, opts.no_color, backend.status());
    app.set_home(directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf()));
    if let Some(req) = app.initial_request() {
        send(&requests, req)?;
    }

    // Declared in this order so they drop in the reverse: terminal first, then the hook.
    let _hook = install_panic_hook();
    let _guard = TerminalGuard::new().context("setting up the terminal")?;
    #[cfg(unix)]
    end_on_hangup();
    let mut terminal =
        Terminal::new(CrosstermBackend::new(io::stdout())).context("setting up the terminal")?;
    terminal.clear()?;
    let mut ctx = Loop {
        terminal: &mut terminal,
        app: &mut app,
        backend: &*backend,
        requests: &requests,
        responses: &responses,
        editor_cmd: &editor_cmd,
        viewer_cmd: &viewer_cmd,
    };
    ctx.run()
}

/// Ends the process when its terminal hangs up (the window closed, the ssh connection
/// dropped). crossterm 0.28 reads a hung-up terminal in a loop that never returns (each read
/// gives 0 bytes), so the UI thread can neither see it nor quit: it would spin at full CPU for
/// ever, holding the index. This thread sleeps in `poll` until the hangup and then ends the
/// process as a kill would, which every write of the index survives (there is no terminal
/// left to restore or to tell).
#[cfg(unix)]
fn end_on_hangup() {
    let spawned = std::thread::Builder::new()
        .name("dochash-tui-hangup".into())
        .spawn(|| {
            loop {
                let mut fd = libc::pollfd {
                    fd: libc::STDIN_FILENO,
                    events: 0,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; with no events asked for, only a hangup or an
                // error wakes it.
                let n = unsafe { libc::poll(&mut fd, 1, -1) };
                if n > 0 && fd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                    std::process::exit(129);
                }
                if n < 0 {
                    // Interrupted by a signal (a resize): wait again.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
    // Without the thread the UI still works; only a hangup is not noticed.
    drop(spawned);
}

fn send(requests: &Sender<SearchRequest>, req: SearchRequest) -> anyhow::Result<()> {
    requests
        .send(req)
        .map_err(|_| anyhow::anyhow!("the search worker stopped unexpectedly"))
}

struct Loop<'a> {
    terminal: &'a mut Term,
    app: &'a mut App,
    backend: &'a dyn Backend,
    requests: &'a Sender<SearchRequest>,
    responses: &'a Receiver<SearchResponse>,
    editor_cmd: &'a str,
    viewer_cmd: &'a str,
}

impl Loop<'_> {
    fn run(&mut self) -> anyhow::Result<()> {
        loop {
            if QUIT_REQUESTED.load(Ordering::SeqCst) {
                return Ok(());
            }
            let now = Instant::now();
            if !ACTIVE.load(Ordering::SeqCst) && !RESTORED_BY_PANIC.load(Ordering::SeqCst) {
                // Another thread's panic hook gave the terminal back and is printing its
                // message; drawing now would scribble over it.
                std::thread::sleep(BUSY_POLL);
                continue;
            }
            if RESTORED_BY_PANIC.swap(false, Ordering::SeqCst) {
                // Another thread panicked and the hook printed its message on the normal screen,
                // where it will still be after we exit. Take the terminal back and say so.
                enter_terminal().context("re-entering the terminal")?;
                self.terminal.clear()?;
                self.app.set_message(
                    "a background thread crashed; its message is shown after you quit",
                    true,
                    now,
                );
            }
            if let Some(req) = self.app.update_status(self.backend.status(), now) {
                send(self.requests, req)?;
            }
            loop {
                match self.responses.try_recv() {
                    Ok(resp) => {
                        self.app.apply_response(resp);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        bail!("the search worker stopped unexpectedly")
                    }
                }
            }
            self.app.tick(now);
            let size = self.terminal.size()?;
            self.app
                .set_viewport(Rect::new(0, 0, size.width, size.height));
            if self.app.take_dirty() {
                let app = &*self.app;
                self.terminal.draw(|f| ui::draw(f, app))?;
            }

            let timeout = if self.app.is_searching() {
                BUSY_POLL
            } else {
                IDLE_POLL
            };
            if !event::poll(timeout)? {
                continue;
            }
            // Handle everything already queued before drawing again, so fast typing or a paste
            // costs one frame rather than one per key.
            for _ in 0..EVENTS_PER_FRAME {
                if !self.handle_event(event::read()?)? {
                    return Ok(());
                }
                if !event::poll(Duration::ZERO)? {
                    break;
                }
            }
        }
    }

    /// Returns `false` when the UI should quit.
    fn handle_event(&mut self, ev: Event) -> anyhow::Result<bool> {
        let action = match ev {
            Event::Key(key) => self.app.handle_key(key),
            Event::Paste(text) => self.app.paste(&text),
            Event::Resize(..) => {
                self.app.mark_dirty();
                Action::None
            }
            _ => Action::None,
        };
        match action {
            Action::None => {}
            Action::Quit => return Ok(false),
            Action::Search(req) => send(self.requests, req)?,
            Action::OpenEditor { path, line } => self.open_editor(&path, line)?,
            Action::OpenViewer { path, page } => self.open_viewer(&path, page),
            Action::Copy { path } => self.copy(&path),
            Action::Redraw => self.terminal.clear()?,
        }
        Ok(true)
    }

    /// Hands the terminal to the editor and takes it back afterwards. A failure to start the
    /// editor is shown in the status bar rather than ending the session: the user's search is
    /// still there and they may just want to copy the path instead.
    fn open_editor(&mut self, path: &Path, line: u32) -> anyhow::Result<()> {
        let (program, args) = match editor::editor_invocation(self.editor_cmd, path, line) {
            Ok(inv) => inv,
            Err(e) => {
                self.app
                    .set_message(format!("editor: {e}"), true, Instant::now());
                return Ok(());
            }
        };
        restore_terminal();
        let mut cmd = Command::new(&program);
        cmd.args(&args);
        // Files the editor creates follow the user's umask, not dochash's private one.
        dochash::fsx::restore_user_umask(&mut cmd);
        let status = cmd.status();
        enter_terminal().context("re-entering the terminal after the editor")?;
        self.terminal.clear()?;
        self.app.mark_dirty();
        let name = program.to_string_lossy();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => self
                .app
                .set_message(format!("{name} exited with {s}"), true, Instant::now()),
            Err(e) => self.app.set_message(
                format!("cannot start editor `{name}`: {e} (set $VISUAL or $EDITOR)"),
                true,
                Instant::now(),
            ),
        }
        Ok(())
    }

    /// Starts a viewer beside the UI (it has a window of its own, and the search stays where it
    /// is): the PDF viewer at `page`, or the system's opener for a document without pages. Only
    /// a failure to start it is said.
    fn open_viewer(&mut self, path: &Path, page: Option<u32>) {
        let now = Instant::now();
        let cmd = match page {
            Some(_) => self.viewer_cmd,
            None => editor::SYSTEM_OPENER,
        };
        let shown = page.map_or_else(String::new, |p| format!("page {p} "));
        let (program, args) = match editor::viewer_invocation(cmd, path, page.unwrap_or(1)) {
            Ok(inv) => inv,
            Err(e) => return self.app.set_message(format!("viewer: {e}"), true, now),
        };
        let mut cmd = Command::new(&program);
        cmd.args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        dochash::fsx::restore_user_umask(&mut cmd);
        let name = program.to_string_lossy().into_owned();
        match cmd.spawn() {
            Ok(mut child) => {
                // Reaped when it closes, so no finished viewer lingers as a zombie.
                std::thread::spawn(move || child.wait());
                self.app
                    .set_message(format!("opened {shown}with {name}"), false, now);
            }
            Err(e) => self.app.set_message(
                format!("cannot start viewer `{name}`: {e} (set --viewer or DOCHASH_PDF_VIEWER)"),
                true,
                now,
            ),
        }
    }

    fn copy(&mut self, path: &Path) {
        let seq = clipboard::osc52(&clipboard::path_bytes(path));
        let out = self.terminal.backend_mut();
        let written = out.write_all(seq.as_bytes()).and_then(|()| out.flush());
        let now = Instant::now();
        match written {
            Ok(()) => {
                let shown = tilde(path, self.app.home.as_deref());
                self.app.set_message(
                    format!("copied {} (OSC 52)", shown.to_string_lossy()),
                    false,
                    now,
                );
            }
            Err(e) => self.app.set_message(format!("copy failed: {e}"), true, now),
        }
    }
}
