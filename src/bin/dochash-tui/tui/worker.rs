//! The search worker: runs queries and reads the files for the preview, off the UI thread.
//!
//! A search can take tens of milliseconds and reading files can stall on a slow disk or network
//! mount; doing either on the UI thread would make typing lag. The worker only ever runs the
//! newest request it has: while the user types, older queries are superseded before they run.

use std::collections::HashMap;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::{Duration, Instant, SystemTime};

use dochash::index::lexical::Highlighter;
use dochash::index::search::Group;
use dochash::index::split_filters;

use super::Backend;
use super::app::{Entry, FileView, SearchRequest, SearchResponse};
use super::sanitize::sanitize_lines;

/// Quiet time after a keystroke before its query runs: long enough that a burst of typing runs
/// one search, short enough to feel instant.
pub const DEBOUNCE: Duration = Duration::from_millis(80);

/// Files larger than this are not previewed in context (the indexed passage is shown instead):
/// notes are small, and reading a multi-megabyte log on every keystroke is not.
pub const MAX_PREVIEW_FILE_BYTES: u64 = 2 * 1024 * 1024;

/// Upper bound on what the file cache holds before it starts over.
const MAX_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Starts the worker thread. It stops when the request sender is dropped (or the response
/// receiver is), finishing at most the search it is running.
pub fn spawn(
    backend: Arc<dyn Backend>,
    limit: usize,
    debounce: Duration,
) -> std::io::Result<(Sender<SearchRequest>, Receiver<SearchResponse>)> {
    let (req_tx, req_rx) = std::sync::mpsc::channel();
    let (resp_tx, resp_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("dochash-tui-search".into())
        .spawn(move || worker_loop(&*backend, limit, debounce, &req_rx, &resp_tx))?;
    Ok((req_tx, resp_rx))
}

fn worker_loop(
    backend: &dyn Backend,
    limit: usize,
    debounce: Duration,
    requests: &Receiver<SearchRequest>,
    responses: &Sender<SearchResponse>,
) {
    let mut files = FileCache::default();
    while let Some(req) = next_request(requests, debounce) {
        let outcome = if req.query.trim().is_empty() {
            // The UI clears the results itself; this only supersedes older pending queries.
            Ok(Vec::new())
        } else {
            let group = if req.fold { Group::Place } else { Group::None };
            files.new_search();
            run_search(backend, &req.query, limit, group).map(|hits| {
                // The query's words, not its filters, are what is marked.
                let words = split_filters(&req.query).map_or_else(|_| req.query.clone(), |w| w.0);
                let terms = Arc::new(Highlighter::new(&words));
                let mut entries: Vec<Entry> = hits
                    .into_iter()
                    .map(|hit| {
                        let (file, modified) = files.get(&hit.path);
                        let mut e = Entry::new(hit, file).with_terms(terms.clone());
                        e.modified = modified;
                        e
                    })
                    .collect();
                if req.newest {
                    // Stable: files of one date keep their ranking.
                    entries.sort_by_key(|e| std::cmp::Reverse(e.modified));
                }
                entries
            })
        };
        let resp = SearchResponse {
            seq: req.seq,
            query: req.query,
            outcome,
        };
        if responses.send(resp).is_err() {
            return;
        }
    }
}

/// Waits for a request, then for the debounce period to pass without a newer one; returns the
/// newest. `None` when the UI has gone away.
fn next_request(requests: &Receiver<SearchRequest>, debounce: Duration) -> Option<SearchRequest> {
    let mut req = requests.recv().ok()?;
    let mut received = Instant::now();
    loop {
        // Anything already queued supersedes what we have.
        loop {
            match requests.try_recv() {
                Ok(newer) => {
                    req = newer;
                    received = Instant::now();
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return None,
            }
        }
        let wait = if req.debounce {
            debounce
        } else {
            Duration::ZERO
        };
        let Some(left) = wait
            .checked_sub(received.elapsed())
            .filter(|d| !d.is_zero())
        else {
            return Some(req);
        };
        match requests.recv_timeout(left) {
            Ok(newer) => {
                req = newer;
                received = Instant::now();
            }
            Err(RecvTimeoutError::Timeout) => return Some(req),
            Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// Runs the backend's search, turning a panic into an error so one bad query does not kill the
/// worker and leave the UI without search.
fn run_search(
    backend: &dyn Backend,
    query: &str,
    limit: usize,
    group: Group,
) -> Result<Vec<dochash::index::search::Hit>, String> {
    catch_unwind(AssertUnwindSafe(|| backend.search(query, limit, group))).unwrap_or_else(|_| {
        Err("the search engine crashed (details are printed when you quit)".into())
    })
}

/// Sanitized file contents, reused while a file's size and modification time are unchanged, so
/// typing does not re-read the same notes for every query.
#[derive(Default)]
struct FileCache {
    files: HashMap<PathBuf, Cached>,
    bytes: usize,
    /// Documents (PDFs, office files, e-books) this search may still read: reading one takes
    /// up to seconds, so a search reads a few and shows the others by their passage until a
    /// later search (the next keystroke) reads them in turn.
    documents_left: usize,
}

/// Documents read for the preview per search.
const DOCUMENTS_PER_SEARCH: usize = 2;

struct Cached {
    len: u64,
    modified: Option<SystemTime>,
    /// The lines, or why a document gave none (not tried again until it changes).
    view: FileView,
}

impl FileCache {
    /// A new search begins: it may read its share of documents.
    fn new_search(&mut self) {
        self.documents_left = DOCUMENTS_PER_SEARCH;
    }

    /// The file's lines (or why not) and when it was last modified.
    fn get(&mut self, path: &Path) -> (FileView, Option<SystemTime>) {
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) => return (FileView::Unavailable(describe_io_error(&e)), None),
        };
        let modified = meta.modified().ok();
        (self.view(path, &meta), modified)
    }

    fn view(&mut self, path: &Path, meta: &fs::Metadata) -> FileView {
        // Opening a FIFO or a device for reading could block the worker forever.
        if !meta.is_file() {
            return FileView::Unavailable("not a regular file".into());
        }
        let kind = dochash::corpus::Kind::from_path(path);
        // A document's text may be as long as the index takes; a note's is kept short.
        let text_limit = if kind.is_document() {
            dochash::corpus::CorpusConfig::default().max_file_bytes
        } else {
            MAX_PREVIEW_FILE_BYTES
        };
        if meta.len() > kind.byte_limit(text_limit) {
            return FileView::Unavailable(format!(
                "file too large to preview ({} KiB)",
                meta.len() / 1024
            ));
        }
        let modified = meta.modified().ok();
        if let Some(c) = self.files.get(path)
            && c.len == meta.len()
            && c.modified == modified
            && modified.is_some()
        {
            return c.view.clone();
        }
        if kind.is_document() {
            if self.documents_left == 0 {
                return FileView::Passage;
            }
            self.documents_left -= 1;
        }
        // Read as the index reads it, so a web page or a PDF previews as the text that was
        // searched, on the lines the hit names.
        let cfg = dochash::corpus::CorpusConfig {
            max_file_bytes: text_limit,
            ..Default::default()
        };
        let (view, bytes) = match dochash::corpus::read_document(path, &cfg) {
            Ok(doc) => {
                let mut lines = sanitize_lines(&doc.text);
                if kind == dochash::corpus::Kind::Pdf {
                    lines = page_rules(lines, &doc.text);
                }
                (FileView::Lines(Arc::new(lines)), doc.text.len())
            }
            // A note that cannot be read is tried again (it may be mid-save); a document
            // that cannot is not, until it changes.
            Err(skip) if !kind.is_document() => {
                return FileView::Unavailable(skip.reason.to_string());
            }
            Err(skip) => (FileView::Unavailable(skip.reason.to_string()), 0),
        };
        if self.bytes + bytes > MAX_CACHE_BYTES {
            self.files.clear();
            self.bytes = 0;
        }
        self.bytes += bytes;
        self.files.insert(
            path.to_path_buf(),
            Cached {
                len: meta.len(),
                modified,
                view: view.clone(),
            },
        );
        view
    }
}

/// A PDF's page breaks (a line of a form feed, which sanitising empties) shown as a rule
/// naming the page that begins there.
fn page_rules(mut lines: Vec<String>, text: &str) -> Vec<String> {
    let mut page = 1;
    for (shown, raw) in lines.iter_mut().zip(text.split('\n')) {
        if dochash::corpus::is_page_break(raw) {
            page += 1;
            *shown = format!("── p. {page} ──");
        }
    }
    lines
}

fn describe_io_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "file no longer exists".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => format!("cannot read file: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::super::StatusInfo;
    use super::*;
    use dochash::index::search::Hit;

    /// Records the queries it runs; optionally slow, optionally panicking on "boom".
    struct Recorder {
        queries: Mutex<Vec<String>>,
        delay: Duration,
        path: PathBuf,
    }

    impl Backend for Recorder {
        fn search(&self, query: &str, limit: usize, _: Group) -> Result<Vec<Hit>, String> {
            if query == "boom" {
                panic!("backend bug");
            }
            if query == "fail" {
                return Err("index is locked".into());
            }
            if let Ok(mut q) = self.queries.lock() {
                q.push(query.to_owned());
            }
            std::thread::sleep(self.delay);
            let mut hit = super::super::app::tests::hit(1, "/x", 2);
            hit.path = self.path.clone();
            Ok(vec![hit; limit.min(2)])
        }

        fn status(&self) -> StatusInfo {
            StatusInfo::default()
        }
    }

    fn recorder(delay: Duration, path: &Path) -> Arc<Recorder> {
        Arc::new(Recorder {
            queries: Mutex::new(Vec::new()),
            delay,
            path: path.to_path_buf(),
        })
    }

    fn req(seq: u64, query: &str, debounce: bool) -> SearchRequest {
        SearchRequest {
            seq,
            query: query.into(),
            fold: true,
            newest: false,
            debounce,
        }
    }

    const WAIT: Duration = Duration::from_secs(10);

    #[test]
    fn bursts_run_only_the_latest_query() {
        let dir = tempfile::tempdir().unwrap();
        let backend = recorder(Duration::ZERO, &dir.path().join("missing.md"));
        // A long debounce makes the test independent of scheduling on a busy machine.
        let (tx, rx) = spawn(backend.clone(), 5, Duration::from_millis(400)).unwrap();
        for (i, q) in ["r", "ru", "rus", "rust"].iter().enumerate() {
            tx.send(req(i as u64 + 1, q, true)).unwrap();
        }
        let resp = rx.recv_timeout(WAIT).unwrap();
        assert_eq!((resp.seq, resp.query.as_str()), (4, "rust"));
        let entries = resp.outcome.unwrap();
        assert_eq!(entries.len(), 2);
        assert!(matches!(&entries[0].file, FileView::Unavailable(m) if m.contains("no longer")));
        assert_eq!(*backend.queries.lock().unwrap(), ["rust"]);
    }

    #[test]
    fn requests_queued_behind_a_slow_search_are_coalesced() {
        let dir = tempfile::tempdir().unwrap();
        let backend = recorder(Duration::from_millis(300), &dir.path().join("x"));
        let (tx, rx) = spawn(backend.clone(), 5, Duration::ZERO).unwrap();
        tx.send(req(1, "first", false)).unwrap();
        // Let the first one start, then queue two more while it runs.
        std::thread::sleep(Duration::from_millis(100));
        tx.send(req(2, "second", false)).unwrap();
        tx.send(req(3, "third", false)).unwrap();
        assert_eq!(rx.recv_timeout(WAIT).unwrap().seq, 1);
        assert_eq!(rx.recv_timeout(WAIT).unwrap().seq, 3);
        assert_eq!(*backend.queries.lock().unwrap(), ["first", "third"]);
    }

    #[test]
    fn empty_queries_skip_the_backend_and_errors_pass_through() {
        let dir = tempfile::tempdir().unwrap();
        let backend = recorder(Duration::ZERO, &dir.path().join("x"));
        let (tx, rx) = spawn(backend.clone(), 5, Duration::ZERO).unwrap();
        tx.send(req(1, "", false)).unwrap();
        assert!(rx.recv_timeout(WAIT).unwrap().outcome.unwrap().is_empty());
        tx.send(req(2, "fail", false)).unwrap();
        assert_eq!(
            rx.recv_timeout(WAIT).unwrap().outcome.unwrap_err(),
            "index is locked"
        );
        assert!(backend.queries.lock().unwrap().is_empty());
    }

    #[test]
    fn a_panicking_backend_does_not_kill_the_worker() {
        let dir = tempfile::tempdir().unwrap();
        let backend = recorder(Duration::ZERO, &dir.path().join("x"));
        let (tx, rx) = spawn(backend, 5, Duration::ZERO).unwrap();
        tx.send(req(1, "boom", false)).unwrap();
        assert!(rx.recv_timeout(WAIT).unwrap().outcome.is_err());
        tx.send(req(2, "fine", false)).unwrap();
        assert!(rx.recv_timeout(WAIT).unwrap().outcome.is_ok());
    }

    #[test]
    fn files_are_read_sanitized_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("note.md");
        fs::write(&path, "# T\n\x1b]0;title\x07body\tx\n").unwrap();
        let mut cache = FileCache::default();
        let (FileView::Lines(a), _) = cache.get(&path) else {
            panic!()
        };
        assert_eq!(*a, ["# T", "body    x"]);
        let (FileView::Lines(b), _) = cache.get(&path) else {
            panic!()
        };
        assert!(Arc::ptr_eq(&a, &b), "unchanged file comes from the cache");
        fs::write(&path, "# T\nchanged, and longer\n").unwrap();
        let (FileView::Lines(c), _) = cache.get(&path) else {
            panic!()
        };
        assert_eq!(c[1], "changed, and longer");
        fs::remove_file(&path).unwrap();
        assert!(matches!(cache.get(&path).0, FileView::Unavailable(_)));
        assert!(
            matches!(cache.get(dir.path()).0, FileView::Unavailable(m) if m.contains("regular"))
        );
    }

    #[test]
    fn invalid_utf8_is_shown_lossily() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin.md");
        fs::write(&path, b"ok\n\xff\xfe bad\n").unwrap();
        let (FileView::Lines(lines), _) = FileCache::default().get(&path) else {
            panic!()
        };
        assert_eq!(lines[1], "\u{fffd}\u{fffd} bad");
    }

    /// A PDF previews as its text (the lines a hit names), a few documents a search; one that
    /// cannot be read says why and is not read again while unchanged.
    #[test]
    fn documents_are_read_a_few_a_search_and_their_failures_kept() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/documents");
        let names = [
            "hyphenated.pdf",
            "two-columns.pdf",
            "non-latin.pdf",
            "encrypted.pdf",
        ];
        let paths: Vec<PathBuf> = names
            .iter()
            .map(|n| {
                let p = dir.path().join(n);
                fs::copy(fixtures.join(n), &p).unwrap();
                p
            })
            .collect();
        let mut cache = FileCache::default();
        cache.new_search();
        assert!(
            matches!(cache.get(&paths[0]).0, FileView::Lines(ref l) if l.iter().any(|l| l.contains("winter cluster")))
        );
        assert!(matches!(cache.get(&paths[1]).0, FileView::Lines(_)));
        assert!(
            matches!(cache.get(&paths[2]).0, FileView::Passage),
            "the third document waits for the next search"
        );
        cache.new_search();
        assert!(
            matches!(cache.get(&paths[0]).0, FileView::Lines(_)),
            "cached"
        );
        assert!(matches!(cache.get(&paths[2]).0, FileView::Lines(_)));
        let (FileView::Unavailable(why), _) = cache.get(&paths[3]) else {
            panic!("an encrypted PDF has no lines")
        };
        assert!(why.contains("password"), "{why}");
        cache.new_search();
        cache.documents_left = 0;
        assert!(
            matches!(cache.get(&paths[3]).0, FileView::Unavailable(_)),
            "its failure is kept without reading it again"
        );
    }
}
