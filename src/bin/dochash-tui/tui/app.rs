//! The UI state machine: query editing, selection and scrolling, which results are current.
//!
//! Nothing here touches the terminal, the clock, or the disk, so every behaviour can be tested
//! by feeding it keys and responses; the event loop in `terminal.rs` only moves data between
//! this, the search worker and the screen.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dochash::index::lexical::Highlighter;
use std::time::{Duration, Instant, SystemTime};

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::Rect;

use super::StatusInfo;
use super::input::QueryInput;
use super::keymap::{self, Command};
use super::sanitize::{sanitize, sanitize_lines};
use dochash::index::search::Hit;

/// How long an informational status-bar message stays.
const MESSAGE_TTL: Duration = Duration::from_secs(3);
/// Errors stay longer: they usually need reading.
const ERROR_TTL: Duration = Duration::from_secs(8);
/// While indexing, the generation can change many times a second; re-running the query on every
/// change would keep a core busy with searches nobody reads. Results still follow the index
/// within this delay.
pub const GENERATION_RERUN_INTERVAL: Duration = Duration::from_millis(300);

/// What the event loop should do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing beyond redrawing.
    None,
    /// Leave the UI.
    Quit,
    /// Send this query to the search worker.
    Search(SearchRequest),
    /// Suspend the UI and open `path` at `line` in the editor.
    OpenEditor { path: PathBuf, line: u32 },
    /// Open a document beside the UI: a PDF at `page` in the PDF viewer, any other (an office
    /// file, an e-book) with the system's opener.
    OpenViewer { path: PathBuf, page: Option<u32> },
    /// Put `path` on the clipboard.
    Copy { path: PathBuf },
    /// Clear the screen and repaint everything (Ctrl-l), for when something else wrote to it.
    Redraw,
}

/// A query for the worker. `seq` increases with every request, so responses can be ordered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRequest {
    pub seq: u64,
    pub query: String,
    /// Neighbouring passages of a file shown as one result (the default) or each apart.
    pub fold: bool,
    /// Newest file first rather than best first.
    pub newest: bool,
    /// Typing is debounced; re-runs after an index change and the initial query are not, since
    /// nothing else is about to supersede them.
    pub debounce: bool,
}

/// The worker's answer to a [`SearchRequest`].
#[derive(Debug, Clone)]
pub struct SearchResponse {
    pub seq: u64,
    pub query: String,
    pub outcome: Result<Vec<Entry>, String>,
}

/// One result, prepared for display: everything that came from a document is already sanitized
/// (by the worker, off the UI thread), except `hit`, which is kept raw because the editor and the
/// clipboard need the real path.
#[derive(Debug, Clone)]
pub struct Entry {
    pub hit: Hit,
    /// Sanitized heading trail, outermost first.
    pub headings: Vec<String>,
    /// Sanitized lines of the indexed passage text, shown when the file cannot be.
    pub passage: Vec<String>,
    /// The file's current contents, for showing the passage in context.
    pub file: FileView,
    /// The words of the query that found it, to mark in the preview.
    pub terms: Arc<Highlighter>,
    /// When its file was last modified, as the worker saw it.
    pub modified: Option<SystemTime>,
}

/// What the worker could read of a result's file.
#[derive(Debug, Clone)]
pub enum FileView {
    /// Sanitized lines; line `n` is at index `n - 1`. Shared between hits in the same file.
    Lines(Arc<Vec<String>>),
    /// Why the file cannot be shown (deleted, unreadable, too large, not a regular file).
    Unavailable(String),
    /// A document (a PDF, an office file, an e-book) not read yet: its indexed passage is
    /// shown until a search reads it (reading one can take seconds, so a search reads few).
    Passage,
}

impl Entry {
    pub fn new(hit: Hit, file: FileView) -> Self {
        Self {
            headings: hit.headings.iter().map(|h| sanitize(h)).collect(),
            passage: sanitize_lines(&hit.text),
            file,
            terms: Arc::default(),
            modified: None,
            hit,
        }
    }

    /// The line the hit opens at: the first of its snippet (what matched), else the
    /// passage's.
    pub fn open_line(&self) -> u32 {
        self.hit.open_line()
    }

    /// The lines the preview marks: what matched, else the passage.
    pub fn marked_lines(&self) -> (u32, u32) {
        match self.hit.matched_lines {
            (0, _) => (self.hit.line, self.hit.end_line),
            m => m,
        }
    }

    /// Marks the words of `terms` wherever the preview shows them.
    pub fn with_terms(mut self, terms: Arc<Highlighter>) -> Self {
        self.terms = terms;
        self
    }
}

/// A transient status-bar message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub text: String,
    pub error: bool,
    pub until: Instant,
}

/// All UI state. Fields are readable by the renderer; changes go through methods so that the
/// invariants (selection in range, selected row visible) hold.
#[derive(Debug)]
pub struct App {
    pub(super) input: QueryInput,
    /// Results currently displayed.
    pub(super) entries: Vec<Entry>,
    /// The query `entries` (or `error`) answer; `None` before the first response.
    pub(super) results_query: Option<String>,
    pub(super) error: Option<String>,
    pub(super) selected: usize,
    /// First result row on screen.
    pub(super) offset: usize,
    /// Sequence number of the newest request sent.
    pub(super) sent_seq: u64,
    /// Sequence number of the response on screen; older responses are dropped.
    pub(super) displayed_seq: u64,
    /// Trimmed text of the newest request, to skip searches that could not change anything
    /// (typing a trailing space).
    sent_query: String,
    pub(super) status: StatusInfo,
    seen_content: Option<u64>,
    generation_pending: bool,
    /// When the last re-run for an index change was sent, for throttling.
    last_rerun: Option<Instant>,
    pub(super) show_preview: bool,
    /// Neighbouring passages of a file are one result.
    pub(super) fold: bool,
    /// Results newest file first.
    pub(super) newest: bool,
    pub(super) show_help: bool,
    pub(super) message: Option<Message>,
    pub(super) no_color: bool,
    /// Terminal size, for paging and keeping the selection visible.
    pub(super) viewport: Rect,
    /// For showing paths under the home directory as `~/…`.
    pub(super) home: Option<PathBuf>,
    /// Spinner frame while a background job runs; derived from the time since `created` so it
    /// turns at the same speed however often the loop wakes.
    pub(super) spinner: usize,
    created: Instant,
    dirty: bool,
}

impl App {
    pub fn new(query: &str, no_color: bool, status: StatusInfo) -> Self {
        // Newlines or escapes in a query from the command line would corrupt the input line.
        let query = sanitize(query);
        Self {
            input: QueryInput::new(&query),
            entries: Vec::new(),
            results_query: None,
            error: None,
            selected: 0,
            offset: 0,
            sent_seq: 0,
            displayed_seq: 0,
            sent_query: String::new(),
            seen_content: Some(status.content_version),
            status,
            generation_pending: false,
            last_rerun: None,
            show_preview: true,
            fold: true,
            newest: false,
            show_help: false,
            message: None,
            no_color,
            viewport: Rect::new(0, 0, 80, 24),
            home: None,
            spinner: 0,
            created: Instant::now(),
            dirty: true,
        }
    }

    /// Sets the directory shown as `~` in paths.
    pub fn set_home(&mut self, home: Option<PathBuf>) {
        self.home = home;
    }

    /// The request for the query the UI was started with, if any.
    pub fn initial_request(&mut self) -> Option<SearchRequest> {
        (!self.input.text().trim().is_empty()).then(|| self.request(false))
    }

    pub fn query(&self) -> &str {
        self.input.text()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn selected(&self) -> usize {
        self.selected
    }

    pub fn selected_entry(&self) -> Option<&Entry> {
        self.entries.get(self.selected)
    }

    /// Whether a newer query than the one on screen is in flight.
    pub fn is_searching(&self) -> bool {
        self.displayed_seq < self.sent_seq
    }

    /// Whether something changed since the last call, so the screen needs repainting.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    pub fn set_viewport(&mut self, viewport: Rect) {
        if viewport != self.viewport {
            self.viewport = viewport;
            self.ensure_visible();
            self.dirty = true;
        }
    }

    /// Result rows that fit on screen; a page for PgUp/PgDn.
    pub fn page_size(&self) -> usize {
        usize::from(
            super::layout::layout(self.viewport, self.show_preview)
                .list
                .height,
        )
        .max(1)
    }

    pub fn set_message(&mut self, text: impl Into<String>, error: bool, now: Instant) {
        let ttl = if error { ERROR_TTL } else { MESSAGE_TTL };
        self.message = Some(Message {
            text: sanitize(&text.into()),
            error,
            until: now + ttl,
        });
        self.dirty = true;
    }

    /// Expires messages and advances the spinner.
    pub fn tick(&mut self, now: Instant) {
        if self.message.as_ref().is_some_and(|m| now >= m.until) {
            self.message = None;
            self.dirty = true;
        }
        if self.status.job.is_some() {
            let frame = (now.saturating_duration_since(self.created).as_millis() / 100) as usize;
            if frame != self.spinner {
                self.spinner = frame;
                self.dirty = true;
            }
        }
    }

    /// Forces a repaint (after the terminal was handed to another program, for instance).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Takes a fresh status snapshot. When the index content changed (the generation moved) and
    /// there is a query, returns a request that re-runs it, so results follow edits, deletions and
    /// newly indexed files; at most once per [`GENERATION_RERUN_INTERVAL`].
    pub fn update_status(&mut self, status: StatusInfo, now: Instant) -> Option<SearchRequest> {
        if self.seen_content != Some(status.content_version) {
            self.seen_content = Some(status.content_version);
            self.generation_pending = true;
        }
        if status != self.status {
            self.status = status;
            self.dirty = true;
        }
        if !self.generation_pending {
            return None;
        }
        if self.input.text().trim().is_empty() {
            self.generation_pending = false;
            return None;
        }
        let due = self
            .last_rerun
            .is_none_or(|t| now.saturating_duration_since(t) >= GENERATION_RERUN_INTERVAL);
        if !due {
            return None;
        }
        self.generation_pending = false;
        self.last_rerun = Some(now);
        Some(self.request(false))
    }

    fn request(&mut self, debounce: bool) -> SearchRequest {
        self.sent_seq += 1;
        self.sent_query = self.input.text().trim().to_owned();
        self.dirty = true;
        SearchRequest {
            seq: self.sent_seq,
            query: self.sent_query.clone(),
            fold: self.fold,
            newest: self.newest,
            debounce,
        }
    }

    /// Called after every edit of the query: returns the search to send, if the query changed in
    /// a way that matters. An emptied query clears the results at once (the empty-state text takes
    /// over) and still goes to the worker, so that a pending search for the old text is dropped.
    fn query_edited(&mut self) -> Action {
        self.dirty = true;
        if self.input.text().trim() == self.sent_query {
            return Action::None;
        }
        let req = self.request(true);
        if req.query.is_empty() {
            self.entries.clear();
            self.error = None;
            self.results_query = None;
            self.displayed_seq = req.seq;
            self.selected = 0;
            self.offset = 0;
        }
        Action::Search(req)
    }

    /// Shows a worker response unless a newer one is already on screen. Returns whether it was
    /// shown. When the response answers the same query as the results on screen (a re-run after
    /// an index change), the selection stays on the same passage if it is still there.
    pub fn apply_response(&mut self, resp: SearchResponse) -> bool {
        if resp.seq <= self.displayed_seq {
            return false;
        }
        self.displayed_seq = resp.seq;
        let same_query = self.results_query.as_deref() == Some(resp.query.as_str());
        let keep_id = self
            .selected_entry()
            .filter(|_| same_query)
            .map(|e| e.hit.id);
        match resp.outcome {
            Ok(entries) => {
                if entries.first().is_some_and(|e| e.hit.without_phrases) {
                    self.set_message(
                        dochash::index::search::PHRASES_MISSING,
                        false,
                        Instant::now(),
                    );
                }
                self.entries = entries;
                self.error = None;
            }
            Err(e) => {
                self.entries.clear();
                self.error = Some(sanitize(&e));
            }
        }
        self.results_query = Some(resp.query);
        if same_query {
            if let Some(i) = keep_id.and_then(|id| self.entries.iter().position(|e| e.hit.id == id))
            {
                self.selected = i;
            }
        } else {
            self.selected = 0;
            self.offset = 0;
        }
        self.clamp_selection();
        self.dirty = true;
        true
    }

    /// Inserts pasted text at the cursor. Line breaks become spaces: a query is one line, and a
    /// pasted newline must not act as Enter.
    pub fn paste(&mut self, text: &str) -> Action {
        let joined = text.replace(['\r', '\n'], " ");
        self.input.insert_str(&sanitize(&joined));
        self.query_edited()
    }

    /// The state machine's core: what a key does.
    pub fn handle_key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        self.dirty = true;
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);

        let command = keymap::lookup(&key);
        if command == Some(Command::Quit) && ctrl {
            return Action::Quit;
        }
        if self.show_help {
            match command {
                Some(Command::Quit | Command::ToggleHelp | Command::HelpWhenEmpty) => {
                    self.show_help = false;
                    return Action::None;
                }
                // Any other key closes the help and then does what it normally does, so the
                // overlay never swallows a keystroke.
                _ => self.show_help = false,
            }
        }

        match command {
            Some(Command::Quit) => Action::Quit,
            Some(Command::ToggleHelp) => {
                self.show_help = !self.show_help;
                Action::None
            }
            Some(Command::HelpWhenEmpty) if self.input.text().is_empty() => {
                self.show_help = true;
                Action::None
            }
            Some(Command::Open) => self.open_selected(),
            Some(Command::ToggleFold) => {
                self.fold = !self.fold;
                self.rerun()
            }
            Some(Command::ToggleSort) => {
                self.newest = !self.newest;
                self.rerun()
            }
            Some(Command::TogglePreview) => {
                self.show_preview = !self.show_preview;
                self.ensure_visible();
                Action::None
            }
            Some(Command::Up) => self.move_by(-1),
            Some(Command::Down) => self.move_by(1),
            Some(Command::PageUp) => self.move_by(-(self.page_size() as isize)),
            Some(Command::PageDown) => self.move_by(self.page_size() as isize),
            Some(Command::WordLeft) => self.cursor(QueryInput::word_left),
            Some(Command::WordRight) => self.cursor(QueryInput::word_right),
            Some(Command::Left) => self.cursor(QueryInput::left),
            Some(Command::Right) => self.cursor(QueryInput::right),
            Some(Command::Home) => self.cursor(QueryInput::home),
            Some(Command::End) => self.cursor(QueryInput::end),
            Some(Command::DeleteWordBack) => self.edit(QueryInput::delete_word_back),
            Some(Command::Backspace) => self.edit(QueryInput::backspace),
            Some(Command::Delete) => self.edit(QueryInput::delete),
            Some(Command::Clear) => self.edit(QueryInput::clear),
            Some(Command::KillToEnd) => self.edit(QueryInput::kill_to_end),
            Some(Command::Copy) => match self.selected_entry() {
                Some(e) => Action::Copy {
                    path: e.hit.path.clone(),
                },
                None => Action::None,
            },
            Some(Command::Redraw) => Action::Redraw,
            // `?` with text in the query, and every other printable character, is typed.
            Some(Command::HelpWhenEmpty) | None => match key.code {
                KeyCode::Char(c) if !ctrl && !alt && !c.is_control() => {
                    self.input.insert_char(c);
                    self.query_edited()
                }
                _ => Action::None,
            },
        }
    }

    fn open_selected(&self) -> Action {
        match self.selected_entry() {
            Some(e) if dochash::corpus::Kind::from_path(&e.hit.path).is_document() => {
                Action::OpenViewer {
                    path: e.hit.path.clone(),
                    page: e.hit.page,
                }
            }
            Some(e) => Action::OpenEditor {
                path: e.hit.path.clone(),
                line: e.open_line(),
            },
            None => Action::None,
        }
    }

    /// The query again, as the fold or sort changed (nothing when there is no query).
    fn rerun(&mut self) -> Action {
        self.dirty = true;
        if self.input.text().trim().is_empty() {
            return Action::None;
        }
        Action::Search(self.request(false))
    }

    fn cursor(&mut self, f: fn(&mut QueryInput)) -> Action {
        f(&mut self.input);
        Action::None
    }

    fn edit(&mut self, f: fn(&mut QueryInput) -> bool) -> Action {
        if f(&mut self.input) {
            self.query_edited()
        } else {
            Action::None
        }
    }

    /// Moves the selection by `delta` rows, clamped to the list (no wrap-around: holding a key
    /// should stop at the end, not jump back to the top).
    fn move_by(&mut self, delta: isize) -> Action {
        if !self.entries.is_empty() {
            let last = self.entries.len() - 1;
            self.selected = self.selected.saturating_add_signed(delta).min(last);
            self.ensure_visible();
        }
        Action::None
    }

    fn clamp_selection(&mut self) {
        self.selected = self.selected.min(self.entries.len().saturating_sub(1));
        self.ensure_visible();
    }

    /// Scrolls the list so the selected row is on screen, without leaving empty rows below the
    /// last result when the list is long enough to fill the pane.
    fn ensure_visible(&mut self) {
        self.offset = visible_offset(
            self.selected,
            self.offset,
            self.page_size(),
            self.entries.len(),
        );
    }
}

/// The first row to show so that `selected` is visible in `rows` rows, moving as little as
/// possible from `offset`.
pub fn visible_offset(selected: usize, offset: usize, rows: usize, len: usize) -> usize {
    let rows = rows.max(1);
    let mut offset = offset.min(len.saturating_sub(rows));
    if selected < offset {
        offset = selected;
    } else if selected >= offset + rows {
        offset = selected + 1 - rows;
    }
    offset
}

/// A path as the user thinks of it: relative to the indexed root that contains it (prefixed
/// with the root's name when there are several roots, to tell them apart), else under `~`, else
/// as is. Sanitized: file names can contain escape sequences too.
pub fn display_path(path: &Path, roots: &[PathBuf], home: Option<&Path>) -> String {
    let best_root = roots
        .iter()
        .filter(|r| path.starts_with(r) && path != r.as_path())
        .max_by_key(|r| r.components().count());
    let shown = match best_root {
        Some(root) => {
            let rel = path.strip_prefix(root).unwrap_or(path);
            match root.file_name() {
                Some(name) if roots.len() > 1 => Path::new(name).join(rel),
                _ => rel.to_path_buf(),
            }
        }
        None => tilde(path, home),
    };
    // Escaped rather than stripped: a name must still name its own file.
    dochash::pathwire::show(&shown)
}

/// `path` with the home directory replaced by `~`.
pub fn tilde(path: &Path, home: Option<&Path>) -> PathBuf {
    match home.and_then(|h| path.strip_prefix(h).ok()) {
        Some(rest) if rest.as_os_str().is_empty() => PathBuf::from("~"),
        Some(rest) => Path::new("~").join(rest),
        None => path.to_path_buf(),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub fn hit(id: u64, path: &str, line: u32) -> Hit {
        Hit {
            id,
            path: PathBuf::from(path),
            line,
            end_line: line + 2,
            headings: vec!["Top".into(), format!("Section {id}")],
            text: format!("passage {id} line one\nline two\nline three"),
            score: 0.9 - id as f32 / 100.0,
            cosine: Some(0.9 - id as f32 / 100.0),
            bm25: None,
            semantic_rank: Some(id as u32 + 1),
            lexical_rank: None,
            distance: Some(3),
            without_phrases: false,
            matched_lines: (line, line + 2),
            snippet: Default::default(),
            more: Vec::new(),
            page: None,
        }
    }

    pub fn entries(n: u64) -> Vec<Entry> {
        (0..n)
            .map(|i| {
                Entry::new(
                    hit(i, &format!("/home/u/notes/file{i}.md"), 10 + i as u32),
                    FileView::Unavailable("not read in tests".into()),
                )
            })
            .collect()
    }

    pub fn status() -> StatusInfo {
        StatusInfo {
            roots: vec![PathBuf::from("/home/u/notes")],
            files: 12,
            passages: 345,
            job: None,
            model: "minilm".into(),
            codes: "itq 64-bit".into(),
            fusion: "semantic 0.3 (fitted)".into(),
            device: "cpu".into(),
            content_version: 1,
        }
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn ctrl(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }

    fn type_str(app: &mut App, s: &str) -> Vec<Action> {
        s.chars()
            .map(|c| app.handle_key(key(KeyCode::Char(c))))
            .collect()
    }

    /// An app showing `n` results for "q".
    pub fn app_with(n: u64) -> App {
        let mut app = App::new("", false, status());
        let Action::Search(req) = type_str(&mut app, "q").remove(0) else {
            panic!("typing should search");
        };
        assert!(app.apply_response(SearchResponse {
            seq: req.seq,
            query: req.query,
            outcome: Ok(entries(n)),
        }));
        app
    }

    #[test]
    fn results_without_the_quoted_words_say_so() {
        let mut app = App::new("", false, status());
        let Action::Search(req) = type_str(&mut app, "\"gone away\"").pop().unwrap() else {
            panic!("typing should search");
        };
        let mut loose = entries(2);
        for e in &mut loose {
            e.hit.without_phrases = true;
        }
        assert!(app.apply_response(SearchResponse {
            seq: req.seq,
            query: req.query,
            outcome: Ok(loose),
        }));
        assert_eq!(
            app.message.as_ref().map(|m| m.text.as_str()),
            Some(dochash::index::search::PHRASES_MISSING)
        );
        assert!(app_with(2).message.is_none());
    }

    #[test]
    fn typing_sends_debounced_searches_with_increasing_seq() {
        let mut app = App::new("", false, status());
        let actions = type_str(&mut app, "ab");
        let seqs: Vec<u64> = actions
            .iter()
            .map(|a| match a {
                Action::Search(r) => {
                    assert!(r.debounce);
                    r.seq
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(seqs, [1, 2]);
        assert_eq!(app.query(), "ab");
        assert!(app.is_searching());
        // A trailing space cannot change the results: no search.
        assert_eq!(app.handle_key(key(KeyCode::Char(' '))), Action::None);
        assert_eq!(app.query(), "ab ");
    }

    #[test]
    fn stale_results_are_dropped() {
        let mut app = App::new("", false, status());
        let reqs: Vec<SearchRequest> = type_str(&mut app, "abc")
            .into_iter()
            .map(|a| match a {
                Action::Search(r) => r,
                other => panic!("{other:?}"),
            })
            .collect();
        let resp = |r: &SearchRequest, n| SearchResponse {
            seq: r.seq,
            query: r.query.clone(),
            outcome: Ok(entries(n)),
        };
        // The newest arrives first (say the older one was slow); the older is then ignored.
        assert!(app.apply_response(resp(&reqs[2], 3)));
        assert!(!app.is_searching());
        assert!(!app.apply_response(resp(&reqs[1], 7)));
        assert!(!app.apply_response(resp(&reqs[0], 7)));
        assert_eq!(app.entries().len(), 3);
        assert_eq!(app.results_query.as_deref(), Some("abc"));
        // The same response twice is also ignored.
        assert!(!app.apply_response(resp(&reqs[2], 5)));
        assert_eq!(app.entries().len(), 3);
    }

    #[test]
    fn intermediate_results_are_shown_while_typing() {
        let mut app = App::new("", false, status());
        let reqs: Vec<SearchRequest> = type_str(&mut app, "ab")
            .into_iter()
            .filter_map(|a| match a {
                Action::Search(r) => Some(r),
                _ => None,
            })
            .collect();
        assert!(app.apply_response(SearchResponse {
            seq: reqs[0].seq,
            query: reqs[0].query.clone(),
            outcome: Ok(entries(2)),
        }));
        assert!(app.is_searching(), "a newer query is still pending");
    }

    #[test]
    fn clearing_the_query_drops_in_flight_results() {
        let mut app = App::new("", false, status());
        let Action::Search(old) = type_str(&mut app, "x").remove(0) else {
            panic!()
        };
        let Action::Search(clear) = app.handle_key(ctrl('u')) else {
            panic!("clearing should notify the worker")
        };
        assert_eq!(clear.query, "");
        assert!(!app.is_searching());
        assert!(!app.apply_response(SearchResponse {
            seq: old.seq,
            query: old.query,
            outcome: Ok(entries(4)),
        }));
        assert!(app.entries().is_empty());
    }

    #[test]
    fn movement_clamps() {
        let mut app = app_with(5);
        assert_eq!(app.selected(), 0);
        app.handle_key(key(KeyCode::Up));
        assert_eq!(app.selected(), 0);
        app.handle_key(key(KeyCode::Down));
        app.handle_key(ctrl('n'));
        assert_eq!(app.selected(), 2);
        app.handle_key(ctrl('p'));
        assert_eq!(app.selected(), 1);
        for _ in 0..10 {
            app.handle_key(key(KeyCode::Down));
        }
        assert_eq!(app.selected(), 4);
        // No results: moving is harmless.
        let mut empty = App::new("", false, status());
        empty.handle_key(key(KeyCode::Down));
        empty.handle_key(key(KeyCode::PageDown));
        assert_eq!(empty.selected(), 0);
    }

    #[test]
    fn page_moves_and_scrolling() {
        let mut app = app_with(50);
        app.set_viewport(Rect::new(0, 0, 80, 24));
        let page = app.page_size();
        assert!(page > 1 && page < 20, "{page}");
        app.handle_key(key(KeyCode::PageDown));
        assert_eq!(app.selected(), page);
        assert!(app.offset <= app.selected() && app.selected() < app.offset + page);
        app.handle_key(key(KeyCode::PageDown));
        app.handle_key(key(KeyCode::PageUp));
        assert_eq!(app.selected(), page);
        app.handle_key(key(KeyCode::PageUp));
        app.handle_key(key(KeyCode::PageUp));
        assert_eq!((app.selected(), app.offset), (0, 0));
        for _ in 0..100 {
            app.handle_key(key(KeyCode::PageDown));
        }
        assert_eq!(app.selected(), 49);
        assert_eq!(app.offset, 50 - page);
        // Growing the terminal scrolls back so the pane stays full.
        app.set_viewport(Rect::new(0, 0, 80, 60));
        assert_eq!(app.offset, 50 - app.page_size());
    }

    #[test]
    fn visible_offset_cases() {
        assert_eq!(visible_offset(0, 0, 10, 50), 0);
        assert_eq!(visible_offset(9, 0, 10, 50), 0);
        assert_eq!(visible_offset(10, 0, 10, 50), 1);
        assert_eq!(visible_offset(3, 5, 10, 50), 3);
        assert_eq!(visible_offset(2, 40, 10, 5), 0);
        assert_eq!(visible_offset(0, 0, 0, 0), 0);
    }

    #[test]
    fn tab_help_and_quit() {
        let mut app = app_with(3);
        assert!(app.show_preview);
        app.handle_key(key(KeyCode::Tab));
        assert!(!app.show_preview);
        app.handle_key(key(KeyCode::Tab));
        assert!(app.show_preview);

        // `?` is a character once something is typed…
        assert!(matches!(
            app.handle_key(key(KeyCode::Char('?'))),
            Action::Search(_)
        ));
        assert!(!app.show_help);
        assert_eq!(app.query(), "q?");
        // …F1 always toggles help, and Esc closes it before it quits.
        app.handle_key(key(KeyCode::F(1)));
        assert!(app.show_help);
        assert_eq!(app.handle_key(key(KeyCode::Esc)), Action::None);
        assert!(!app.show_help);
        assert_eq!(app.handle_key(key(KeyCode::Esc)), Action::Quit);

        let mut app = App::new("", false, status());
        assert_eq!(app.handle_key(key(KeyCode::Char('?'))), Action::None);
        assert!(app.show_help);
        assert_eq!(app.query(), "");
        app.handle_key(key(KeyCode::Char('?')));
        assert!(!app.show_help);
        assert_eq!(app.handle_key(ctrl('c')), Action::Quit);
        app.handle_key(key(KeyCode::F(1)));
        assert_eq!(
            app.handle_key(ctrl('c')),
            Action::Quit,
            "quits even from help"
        );
    }

    #[test]
    fn help_does_not_swallow_typing() {
        let mut app = App::new("", false, status());
        app.handle_key(key(KeyCode::F(1)));
        assert!(matches!(
            app.handle_key(key(KeyCode::Char('z'))),
            Action::Search(_)
        ));
        assert!(!app.show_help);
        assert_eq!(app.query(), "z");
    }

    #[test]
    fn enter_opens_and_ctrl_y_copies_the_selection() {
        let mut app = app_with(3);
        app.handle_key(key(KeyCode::Down));
        assert_eq!(
            app.handle_key(key(KeyCode::Enter)),
            Action::OpenEditor {
                path: PathBuf::from("/home/u/notes/file1.md"),
                line: 11
            }
        );
        assert_eq!(
            app.handle_key(ctrl('y')),
            Action::Copy {
                path: PathBuf::from("/home/u/notes/file1.md")
            }
        );
        let mut empty = App::new("", false, status());
        assert_eq!(empty.handle_key(key(KeyCode::Enter)), Action::None);
        assert_eq!(empty.handle_key(ctrl('y')), Action::None);
    }

    #[test]
    fn enter_opens_at_what_matched_and_the_folds_and_sort_rerun_the_query() {
        let mut app = app_with(3);
        app.entries[0].hit.snippet.line = 17;
        assert_eq!(
            app.handle_key(key(KeyCode::Enter)),
            Action::OpenEditor {
                path: PathBuf::from("/home/u/notes/file0.md"),
                line: 17
            }
        );
        let Action::Search(req) = app.handle_key(ctrl('g')) else {
            panic!("unfolding searches again");
        };
        assert!(!req.fold && !req.newest && !req.debounce);
        let Action::Search(req) = app.handle_key(ctrl('t')) else {
            panic!("sorting searches again");
        };
        assert!(!req.fold && req.newest);
        let Action::Search(req) = app.handle_key(ctrl('g')) else {
            panic!("folding searches again");
        };
        assert!(req.fold && req.newest);
        // Typing keeps them.
        let Action::Search(req) = type_str(&mut app, "x").remove(0) else {
            panic!("typing searches");
        };
        assert!(req.fold && req.newest);
        let mut empty = App::new("", false, status());
        assert_eq!(empty.handle_key(ctrl('g')), Action::None);
    }

    #[test]
    fn enter_on_a_document_opens_a_viewer_a_pdf_at_its_page() {
        let mut app = app_with(2);
        app.entries[0].hit.path = PathBuf::from("/home/u/papers/bees.pdf");
        app.entries[0].hit.page = Some(12);
        assert_eq!(
            app.handle_key(key(KeyCode::Enter)),
            Action::OpenViewer {
                path: PathBuf::from("/home/u/papers/bees.pdf"),
                page: Some(12)
            }
        );
        app.entries[0].hit.path = PathBuf::from("/home/u/books/moss.epub");
        app.entries[0].hit.page = None;
        assert_eq!(
            app.handle_key(key(KeyCode::Enter)),
            Action::OpenViewer {
                path: PathBuf::from("/home/u/books/moss.epub"),
                page: None
            },
            "an e-book opens in its reader, not the editor"
        );
    }

    #[test]
    fn query_editing_keys() {
        let mut app = App::new("", false, status());
        type_str(&mut app, "hello world");
        app.handle_key(ctrl('a'));
        app.handle_key(key(KeyCode::Delete));
        assert_eq!(app.query(), "ello world");
        app.handle_key(ctrl('e'));
        app.handle_key(key(KeyCode::Backspace));
        assert_eq!(app.query(), "ello worl");
        app.handle_key(key(KeyCode::Left));
        app.handle_key(key(KeyCode::Right));
        app.handle_key(key(KeyCode::Home));
        app.handle_key(key(KeyCode::End));
        app.handle_key(ctrl('w'));
        assert_eq!(app.query(), "ello ");
        app.handle_key(ctrl('u'));
        assert_eq!(app.query(), "");
        // Upper case arrives with SHIFT; it is still text.
        app.handle_key(KeyEvent::new(KeyCode::Char('Q'), KeyModifiers::SHIFT));
        assert_eq!(app.query(), "Q");
        // Releases (reported on some platforms) are not keystrokes.
        let mut release = key(KeyCode::Char('x'));
        release.kind = KeyEventKind::Release;
        assert_eq!(app.handle_key(release), Action::None);
        assert_eq!(app.query(), "Q");
    }

    #[test]
    fn paste_is_one_line_and_sanitized() {
        let mut app = App::new("", false, status());
        let action = app.paste("multi\nline\x1b[2J paste");
        assert!(matches!(action, Action::Search(_)));
        assert_eq!(app.query(), "multi line paste");
    }

    #[test]
    fn initial_query_searches_immediately() {
        let mut app = App::new("rust", false, status());
        let req = app.initial_request().unwrap();
        assert_eq!(
            (req.seq, req.query.as_str(), req.debounce),
            (1, "rust", false)
        );
        assert!(App::new("  ", false, status()).initial_request().is_none());
        let app = App::new("evil\x1b]0;x\x07", false, status());
        assert_eq!(app.query(), "evil");
    }

    #[test]
    fn generation_change_reruns_the_query_and_keeps_the_selection() {
        let t0 = Instant::now();
        let mut app = app_with(5);
        app.handle_key(key(KeyCode::Down));
        app.handle_key(key(KeyCode::Down));
        let selected_id = app.selected_entry().unwrap().hit.id;

        // Same content: nothing to do.
        assert_eq!(app.update_status(status(), t0), None);
        let mut st = status();
        st.content_version = 2;
        let req = app.update_status(st.clone(), t0).unwrap();
        assert!(!req.debounce);
        assert_eq!(req.query, "q");
        // The index changed: passage 0 is gone, the rest reordered.
        let mut new_entries = entries(5);
        new_entries.remove(0);
        new_entries.reverse();
        assert!(app.apply_response(SearchResponse {
            seq: req.seq,
            query: req.query,
            outcome: Ok(new_entries),
        }));
        assert_eq!(app.selected_entry().unwrap().hit.id, selected_id);

        // Rapid changes are throttled, and the pending re-run happens later.
        st.content_version = 3;
        assert_eq!(
            app.update_status(st.clone(), t0 + Duration::from_millis(10)),
            None
        );
        assert_eq!(
            app.update_status(st.clone(), t0 + Duration::from_millis(20)),
            None
        );
        let later = t0 + GENERATION_RERUN_INTERVAL + Duration::from_millis(1);
        assert!(app.update_status(st.clone(), later).is_some());
        assert_eq!(
            app.update_status(st, later + GENERATION_RERUN_INTERVAL),
            None
        );
    }

    #[test]
    fn generation_change_without_query_does_nothing() {
        let mut app = App::new("", false, status());
        let mut st = status();
        st.content_version = 9;
        assert_eq!(app.update_status(st.clone(), Instant::now()), None);
        // And it does not fire later when typing starts.
        type_str(&mut app, "a");
        assert_eq!(
            app.update_status(st, Instant::now() + Duration::from_secs(1)),
            None
        );
    }

    #[test]
    fn new_query_resets_selection_and_errors_show() {
        let mut app = app_with(5);
        app.handle_key(key(KeyCode::Down));
        let Action::Search(req) = app.handle_key(key(KeyCode::Char('z'))) else {
            panic!()
        };
        assert!(app.apply_response(SearchResponse {
            seq: req.seq,
            query: req.query.clone(),
            outcome: Ok(entries(5)),
        }));
        assert_eq!(app.selected(), 0);
        let Action::Search(req) = app.handle_key(key(KeyCode::Char('!'))) else {
            panic!()
        };
        assert!(app.apply_response(SearchResponse {
            seq: req.seq,
            query: req.query,
            outcome: Err("model \x1b[31mexploded".into()),
        }));
        assert!(app.entries().is_empty());
        assert_eq!(app.error.as_deref(), Some("model exploded"));
    }

    #[test]
    fn shrinking_results_clamp_the_selection() {
        let mut app = app_with(5);
        for _ in 0..4 {
            app.handle_key(key(KeyCode::Down));
        }
        let mut st = status();
        st.content_version = 5;
        let req = app.update_status(st, Instant::now()).unwrap();
        assert!(app.apply_response(SearchResponse {
            seq: req.seq,
            query: req.query,
            outcome: Ok(entries(2)),
        }));
        assert_eq!(app.selected(), 1);
    }

    #[test]
    fn messages_expire() {
        let t0 = Instant::now();
        let mut app = App::new("", false, status());
        app.set_message("copied", false, t0);
        app.tick(t0 + Duration::from_secs(1));
        assert!(app.message.is_some());
        app.tick(t0 + MESSAGE_TTL);
        assert!(app.message.is_none());
    }

    #[test]
    fn paths_are_shown_relative_ish() {
        let roots = [PathBuf::from("/home/u/notes")];
        let home = Some(Path::new("/home/u"));
        assert_eq!(
            display_path(Path::new("/home/u/notes/a/b.md"), &roots, home),
            "a/b.md"
        );
        assert_eq!(
            display_path(Path::new("/home/u/other/c.md"), &roots, home),
            "~/other/c.md"
        );
        assert_eq!(display_path(Path::new("/etc/x"), &roots, home), "/etc/x");
        let two = [PathBuf::from("/home/u/notes"), PathBuf::from("/srv/wiki")];
        assert_eq!(
            display_path(Path::new("/srv/wiki/d.md"), &two, home),
            "wiki/d.md"
        );
        // A name is shown escaped, never stripped to another file's name.
        assert_eq!(
            display_path(Path::new("/home/u/notes/\x1b[2Jx.md"), &roots, home),
            "\\x1b[2Jx.md"
        );
        assert_eq!(tilde(Path::new("/home/u"), home), PathBuf::from("~"));
    }
}
