//! What fetching a model reports as it goes — each step (downloading, verifying, extracting)
//! and the bytes it has gone through — as events, so that the command line can draw them as
//! bars and the owner can show them as its job (the TUI's status line, `dochash status`, the MCP
//! `status` tool): two renderers of one stream, and nothing drawn by the library itself.

use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;

/// Receives a fetch's events, from the thread that fetches.
pub trait FetchProgress: Send + Sync {
    /// A step begins: what it does, and how many bytes it goes through when that is known.
    fn step(&self, what: &str, total_bytes: Option<u64>);
    /// `bytes` more of the step are done.
    fn advance(&self, bytes: u64);
    /// The fetch is over, successful or not.
    fn done(&self) {}
}

/// Where a fetch's events go: nowhere, or to one [`FetchProgress`]. Two handles are equal when
/// they lead to the same receiver.
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<dyn FetchProgress>>);

impl Progress {
    pub const NONE: Progress = Progress(None);

    pub fn to(sink: Arc<dyn FetchProgress>) -> Progress {
        Progress(Some(sink))
    }

    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }

    pub(crate) fn step(&self, what: &str, total_bytes: Option<u64>) {
        if let Some(s) = &self.0 {
            s.step(what, total_bytes);
        }
    }

    pub(crate) fn advance(&self, bytes: u64) {
        if let Some(s) = &self.0 {
            s.advance(bytes);
        }
    }

    pub(crate) fn done(&self) {
        if let Some(s) = &self.0 {
            s.done();
        }
    }

    /// `inner`, reporting the bytes read through it.
    pub(crate) fn wrap_read<R: Read>(&self, inner: R) -> Counted<'_, R> {
        Counted {
            inner,
            progress: self,
        }
    }

    /// `inner`, reporting the bytes written through it.
    pub(crate) fn wrap_write<W: Write>(&self, inner: W) -> Counted<'_, W> {
        Counted {
            inner,
            progress: self,
        }
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Progress(reported)"
        } else {
            "Progress(none)"
        })
    }
}

impl PartialEq for Progress {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Progress {}

/// A reader or writer that reports what passes through it.
pub(crate) struct Counted<'a, T> {
    inner: T,
    progress: &'a Progress,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl FetchProgress for Log {
        fn step(&self, what: &str, total: Option<u64>) {
            self.0.lock().unwrap().push(format!("{what} {total:?}"));
        }
        fn advance(&self, bytes: u64) {
            self.0.lock().unwrap().push(format!("+{bytes}"));
        }
    }

    #[test]
    fn reads_and_writes_report_their_bytes() {
        let log = Arc::new(Log::default());
        let p = Progress::to(log.clone());
        p.step("copying", Some(5));
        let mut out = p.wrap_write(Vec::new());
        std::io::copy(&mut p.wrap_read(&b"hello"[..]), &mut out).unwrap();
        let got = log.0.lock().unwrap().clone();
        assert_eq!(got[0], "copying Some(5)");
        let read: u64 = got[1..]
            .iter()
            .filter_map(|s| s.strip_prefix('+')?.parse::<u64>().ok())
            .sum();
        // Each byte counted once reading and once writing.
        assert_eq!(read, 10);
        assert_eq!(p, p.clone());
        assert_ne!(p, Progress::NONE);
    }
}
