//! Reading one file into a [`Document`].
//!
//! Everything downstream (chunk offsets, line numbers shown to the user, the change hash) is
//! defined against what this module produces, so the rules live in one place: the hash covers
//! the raw bytes, while offsets refer to the decoded text with any BOM removed.

use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::path::Path;

use super::error::{SkipReason, Skipped, io_reason};
use super::extract::{self, Kind};
use super::frontmatter::front_matter;
use super::walk::CorpusConfig;

/// How much of the start of a file is inspected for binary content; large enough to get past
/// short text headers, small enough to cost nothing next to decoding.
const SNIFF_BYTES: usize = 8 * 1024;

/// A decoded file, ready to be chunked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The whole file as text; every byte range and line number elsewhere refers to this, so an
    /// editor can jump straight to a passage.
    pub text: String,
    /// The part of `text` that gets embedded: everything after the front matter.
    pub body: Range<usize>,
    /// The file was not valid UTF-8 and some bytes were replaced, so search hits may show `�`;
    /// the caller should warn rather than fail, because most of such a file is usually fine.
    pub lossy: bool,
    /// blake3 of the raw bytes, so an unchanged file can be recognised without re-embedding.
    pub hash: [u8; 32],
}

impl Document {
    /// Decodes bytes that did not come from a file path (tests, stdin, an editor buffer), with the
    /// same binary detection and decoding rules as [`read_document`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Document, SkipReason> {
        Document::of_kind(bytes, Kind::Text, u64::MAX)
    }

    /// Decodes the bytes of a file of `kind`: a text file as written, a web page or a PDF as
    /// the text a reader sees in it (at most `text_limit` bytes of it). The hash is always of
    /// the bytes, so an unchanged file is known without reading it again.
    pub fn of_kind(bytes: Vec<u8>, kind: Kind, text_limit: u64) -> Result<Document, SkipReason> {
        let hash = *blake3::hash(&bytes).as_bytes();
        match kind {
            Kind::Text => {
                let (text, lossy) = decode(bytes)?;
                Ok(Document::assemble(text, lossy, hash))
            }
            _ => {
                let (text, lossy) = extract::read(kind, &bytes, hash, text_limit)?;
                Ok(Document::whole(text, lossy, hash))
            }
        }
    }

    /// Text made from a document: all of it is body (a page's front matter is not the note's).
    fn whole(text: String, lossy: bool, hash: [u8; 32]) -> Document {
        Document {
            body: 0..text.len(),
            text,
            lossy,
            hash,
        }
    }

    /// Wraps text that is already known to be text, e.g. a note typed into the UI.
    pub fn from_text(text: impl Into<String>) -> Document {
        let text = text.into();
        let hash = *blake3::hash(text.as_bytes()).as_bytes();
        let text = match text.strip_prefix('\u{feff}') {
            Some(rest) => rest.to_owned(),
            None => text,
        };
        Document::assemble(text, false, hash)
    }

    /// The embedded part of the text.
    pub fn body_text(&self) -> &str {
        self.text.get(self.body.clone()).unwrap_or("")
    }

    fn assemble(text: String, lossy: bool, hash: [u8; 32]) -> Document {
        let text = lone_cr_as_newlines(text);
        let start = front_matter(&text).map_or(0, |fm| fm.block.end);
        let body = start..text.len();
        Document {
            text,
            body,
            lossy,
            hash,
        }
    }
}

/// A file whose lines end in a lone carriage return (classic Mac OS, some exports) is read as
/// lines: without this it was one enormous line, taken whole for a heading and lost. Each lone
/// `\r` becomes `\n`, byte for byte, so offsets stay those of the file, and lines count as an
/// editor that reads such files counts them. A stray `\r` in a file of `\n` lines is left alone.
fn lone_cr_as_newlines(text: String) -> String {
    let bytes = text.as_bytes();
    let lone = |i: usize| bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n');
    let lone_crs = (0..bytes.len()).filter(|&i| lone(i)).count();
    let newlines = bytes.iter().filter(|&&b| b == b'\n').count();
    if lone_crs == 0 || lone_crs <= newlines {
        return text;
    }
    let mut out = text.into_bytes();
    for i in 0..out.len() {
        if out[i] == b'\r' && out.get(i + 1) != Some(&b'\n') {
            out[i] = b'\n';
        }
    }
    // Only ASCII bytes were swapped for ASCII bytes: still UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Reads and decodes one file.
///
/// Every failure is a [`Skipped`] note rather than a hard error: in a folder of notes one bad
/// file must not stop the rest. The size limit is enforced again here because a file can grow
/// between the walk and the read, and reading stops at the limit so a runaway log cannot
/// exhaust memory.
pub fn read_document(path: &Path, cfg: &CorpusConfig) -> Result<Document, Skipped> {
    let skip = |reason| Skipped {
        path: path.to_path_buf(),
        reason,
    };
    crate::failpoint::hit("read.opening");
    let file = open_for_reading(path).map_err(|e| skip(SkipReason::Unreadable(io_reason(&e))))?;
    read_open(file, Kind::from_path(path), cfg).map_err(skip)
}

/// Opens a file to read without ever blocking: a FIFO (or a file swapped for one after it was
/// checked) opens at once and is then refused by [`read_open`], instead of holding the reader
/// until something writes to it.
fn open_for_reading(path: &Path) -> std::io::Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK);
    }
    opts.open(path)
}

/// Reads and decodes a file of `kind` already open, judging what the handle is (not what a path
/// named a moment before): only a regular file within the kind's limit is read.
pub fn read_open(mut file: File, kind: Kind, cfg: &CorpusConfig) -> Result<Document, SkipReason> {
    let limit = kind.byte_limit(cfg.max_file_bytes);
    let meta = file
        .metadata()
        .map_err(|e| SkipReason::Unreadable(io_reason(&e)))?;
    if !meta.is_file() {
        return Err(SkipReason::Unreadable("not a regular file".to_owned()));
    }
    if meta.len() > limit {
        return Err(SkipReason::TooLarge {
            size: meta.len(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0).min(1 << 24));
    (&mut file)
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| SkipReason::Unreadable(io_reason(&e)))?;
    let read = bytes.len() as u64;
    if read > limit {
        return Err(SkipReason::TooLarge {
            size: read.max(meta.len()),
            limit,
        });
    }
    Document::of_kind(bytes, kind, cfg.max_file_bytes)
}

/// Heuristic binary check on the start of a file.
///
/// A NUL byte is the classic signal (text encodings other than UTF-16/32 never contain one);
/// the control-byte ratio catches formats that avoid NULs. Tab, newlines, form feed and ESC are
/// allowed because plain text, page-broken manuals and coloured logs use them.
pub fn looks_binary(bytes: &[u8]) -> bool {
    let sample = &bytes[..bytes.len().min(SNIFF_BYTES)];
    if sample.contains(&0) {
        return true;
    }
    let control = sample
        .iter()
        .filter(|&&b| is_suspicious_control(u32::from(b)))
        .count();
    too_many_controls(control, sample.len())
}

fn is_suspicious_control(c: u32) -> bool {
    (c < 0x20 && !matches!(c, 0x09 | 0x0a | 0x0c | 0x0d | 0x1b)) || c == 0x7f
}

/// More than one byte in ten being a control character does not happen in prose or code; a
/// few stray ones (a pasted bell or backspace) in a short note do not make it binary.
fn too_many_controls(control: usize, total: usize) -> bool {
    control > 3 && control * 10 > total
}

/// Turns raw bytes into text, reporting whether anything had to be replaced.
pub(crate) fn decode(bytes: Vec<u8>) -> Result<(String, bool), SkipReason> {
    // UTF-16 files (Windows Notepad's "Unicode") are full of NULs but are text; the BOM is the
    // only reliable way to tell them apart from binary data.
    if let Some(rest) = bytes.strip_prefix(&[0xff, 0xfe]) {
        return decode_utf16(rest, u16::from_le_bytes);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xfe, 0xff]) {
        return decode_utf16(rest, u16::from_be_bytes);
    }
    let body = bytes.strip_prefix(&[0xef, 0xbb, 0xbf]).unwrap_or(&bytes);
    if looks_binary(body) {
        return Err(SkipReason::Binary);
    }
    let had_bom = body.len() != bytes.len();
    let mut bytes = bytes;
    if had_bom {
        bytes.drain(..3);
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok((text, false)),
        Err(err) => Ok((String::from_utf8_lossy(err.as_bytes()).into_owned(), true)),
    }
}

fn decode_utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> Result<(String, bool), SkipReason> {
    let units = bytes.chunks_exact(2).map(|pair| unit([pair[0], pair[1]]));
    let mut lossy = !bytes.len().is_multiple_of(2);
    let mut text = String::with_capacity(bytes.len() / 2);
    for c in char::decode_utf16(units) {
        text.push(c.unwrap_or_else(|_| {
            lossy = true;
            char::REPLACEMENT_CHARACTER
        }));
    }
    // A BOM is no proof: check the decoded start the same way as for UTF-8.
    let mut control = 0;
    let mut total = 0;
    for c in text.chars().take(SNIFF_BYTES / 2) {
        total += 1;
        if c == '\0' {
            return Err(SkipReason::Binary);
        }
        if is_suspicious_control(u32::from(c)) {
            control += 1;
        }
    }
    if too_many_controls(control, total) {
        return Err(SkipReason::Binary);
    }
    Ok((text, lossy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn cfg() -> CorpusConfig {
        CorpusConfig::default()
    }

    #[test]
    fn plain_utf8_file_reads_whole_with_hash_of_raw_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.md");
        fs::write(&p, "# Hi\nthere\n").unwrap();
        let doc = read_document(&p, &cfg()).unwrap();
        assert_eq!(doc.text, "# Hi\nthere\n");
        assert_eq!(doc.body, 0..doc.text.len());
        assert!(!doc.lossy);
        assert_eq!(doc.hash, *blake3::hash(b"# Hi\nthere\n").as_bytes());
    }

    #[test]
    fn invalid_utf8_is_read_lossily_and_flagged() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("latin1.txt");
        fs::write(&p, b"caf\xe9 au lait\n").unwrap();
        let doc = read_document(&p, &cfg()).unwrap();
        assert!(doc.lossy);
        assert_eq!(doc.text, "caf\u{fffd} au lait\n");
        assert_eq!(doc.hash, *blake3::hash(b"caf\xe9 au lait\n").as_bytes());
    }

    #[test]
    fn bom_is_stripped_from_text_but_hashed() {
        let raw = b"\xef\xbb\xbf---\na: 1\n---\nbody\n".to_vec();
        let doc = Document::from_bytes(raw.clone()).unwrap();
        assert_eq!(doc.text, "---\na: 1\n---\nbody\n");
        assert_eq!(
            doc.body_text(),
            "body\n",
            "front matter is found after the BOM"
        );
        assert_eq!(doc.hash, *blake3::hash(&raw).as_bytes());
    }

    #[test]
    fn nul_bytes_and_control_soup_are_binary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.md");
        fs::write(&p, b"PK\x03\x04\x00\x00abc").unwrap();
        assert_eq!(
            read_document(&p, &cfg()).unwrap_err().reason,
            SkipReason::Binary
        );
        let soup: Vec<u8> = (0..200u8)
            .map(|i| if i % 3 == 0 { 0x01 } else { b'a' })
            .collect();
        assert_eq!(Document::from_bytes(soup).unwrap_err(), SkipReason::Binary);
        // Tabs, form feeds and ANSI colours are text.
        let text = b"col\tcol\x0c\n\x1b[31mred\x1b[0m\r\n".to_vec();
        assert!(Document::from_bytes(text).is_ok());
        assert!(
            Document::from_bytes(b"ding\x07\n".to_vec()).is_ok(),
            "one stray control byte"
        );
    }

    #[test]
    fn utf16_with_bom_is_decoded() {
        let mut raw = vec![0xff, 0xfe];
        for u in "h\u{e9}llo\n".encode_utf16() {
            raw.extend_from_slice(&u.to_le_bytes());
        }
        let doc = Document::from_bytes(raw).unwrap();
        assert_eq!(doc.text, "h\u{e9}llo\n");
        assert!(!doc.lossy);
        let mut be = vec![0xfe, 0xff];
        for u in "ok".encode_utf16() {
            be.extend_from_slice(&u.to_be_bytes());
        }
        assert_eq!(Document::from_bytes(be).unwrap().text, "ok");
    }

    #[test]
    fn too_large_file_is_skipped_with_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.txt");
        fs::write(&p, "x".repeat(101)).unwrap();
        let cfg = CorpusConfig {
            max_file_bytes: 100,
            ..CorpusConfig::default()
        };
        let err = read_document(&p, &cfg).unwrap_err();
        assert_eq!(
            err.reason,
            SkipReason::TooLarge {
                size: 101,
                limit: 100
            }
        );
        assert_eq!(err.path, p);
        fs::write(&p, "x".repeat(100)).unwrap();
        assert!(
            read_document(&p, &cfg).is_ok(),
            "exactly the limit is allowed"
        );
    }

    #[test]
    fn missing_file_is_unreadable_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_document(&dir.path().join("gone.md"), &cfg()).unwrap_err();
        assert!(matches!(err.reason, SkipReason::Unreadable(_)), "{err}");
        let err = read_document(dir.path(), &cfg()).unwrap_err();
        assert!(matches!(err.reason, SkipReason::Unreadable(_)), "{err}");
    }

    #[test]
    fn front_matter_is_excluded_from_body_yaml_and_toml() {
        let yaml = Document::from_text("---\ntags: [x]\n---\nHello\n");
        assert_eq!(yaml.body_text(), "Hello\n");
        assert_eq!(
            &yaml.text[..4],
            "---\n",
            "offsets still refer to the whole file"
        );
        let toml = Document::from_text("+++\ntitle = 'x'\n+++\r\nHello\r\n");
        assert_eq!(toml.body_text(), "Hello\r\n");
        let open = Document::from_text("---\ntags: [x]\nHello\n");
        assert_eq!(open.body, 0..open.text.len(), "unterminated block is body");
    }

    /// A FIFO opens without a writer (a blocking open would wait for one for ever, holding the
    /// indexer or a reader) and is then refused as what the handle is.
    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("pipe.md");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let file = open_for_reading(&fifo).unwrap();
        let err = read_open(file, Kind::Text, &CorpusConfig::default()).unwrap_err();
        assert_eq!(err, SkipReason::Unreadable("not a regular file".into()));
        let err = read_document(&fifo, &CorpusConfig::default()).unwrap_err();
        assert_eq!(
            err.reason,
            SkipReason::Unreadable("not a regular file".into())
        );
    }
}
