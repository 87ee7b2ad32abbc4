//! What a model folder must contain, cheap checks that it really does, and hashing.
//!
//! The checks are deliberately shallow (JSON syntax, a plausible safetensors header): their job
//! is to turn "the encoder crashed with an obscure parse error" into "this file is truncated",
//! and to catch what half-finished downloads and captive-portal HTML pages look like. They are
//! not a substitute for the pinned sha256 of the default model.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::progress::Progress;
use sha2::{Digest, Sha256};

use super::error::{ModelError, io_err};

/// The encoder's configuration.
pub(crate) const CONFIG: &str = "config.json";
/// The tokenizer, in the `tokenizers` crate's single-file format.
pub(crate) const TOKENIZER: &str = "tokenizer.json";
/// The weights; safetensors only, because it cannot execute code and can be memory-mapped.
pub(crate) const WEIGHTS: &str = "model.safetensors";
/// The three files every model folder needs, in the order we report them missing.
pub(crate) const REQUIRED: [&str; 3] = [CONFIG, TOKENIZER, WEIGHTS];
/// The sentence-transformers files that say how a model pools and what it puts in front of
/// queries and documents (`encoder::Profile`); fetched and copied when a model has them.
pub(crate) const OPTIONAL: [&str; 4] = [
    "modules.json",
    "1_Pooling/config.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
];

/// A safetensors header larger than this is not a header but garbage (real ones are kilobytes).
const MAX_SAFETENSORS_HEADER: u64 = 100 << 20;
/// JSON files larger than this are not parsed for validation (multilingual tokenizers reach
/// ~20 MB; nothing legitimate comes near this).
const MAX_JSON_BYTES: u64 = 256 << 20;

/// The three paths of a model folder that passed [`validate_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub tokenizer: PathBuf,
    pub weights: PathBuf,
}

impl Layout {
    /// The paths a model folder at `dir` would have; checks nothing.
    pub(crate) fn at(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            config: dir.join(CONFIG),
            tokenizer: dir.join(TOKENIZER),
            weights: dir.join(WEIGHTS),
        }
    }
}

/// Checks that `dir` is a folder holding the three model files and that each looks sane.
///
/// Missing files are reported before malformed ones, so that a folder missing two files and
/// having a third that is broken first tells the person what to copy in.
pub(crate) fn validate_dir(dir: &Path) -> Result<Layout, ModelError> {
    match fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ModelError::NoSuchDir {
                dir: dir.to_path_buf(),
            });
        }
        Err(e) => return Err(io_err("read", dir)(e)),
        Ok(m) if !m.is_dir() => {
            return Err(ModelError::NotADir {
                path: dir.to_path_buf(),
            });
        }
        Ok(_) => {}
    }
    let layout = Layout::at(dir);
    for (file, path) in REQUIRED
        .iter()
        .zip([&layout.config, &layout.tokenizer, &layout.weights])
    {
        match fs::metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ModelError::MissingFile {
                    dir: dir.to_path_buf(),
                    file,
                });
            }
            Err(e) => return Err(io_err("read", path)(e)),
            Ok(m) if !m.is_file() => {
                return Err(invalid(path, "model file", "not a regular file".into()));
            }
            Ok(m) if m.len() == 0 => return Err(invalid(path, "model file", "it is empty".into())),
            Ok(_) => {}
        }
    }
    check_json(&layout.config, true)?;
    check_json(&layout.tokenizer, true)?;
    check_safetensors(&layout.weights)?;
    Ok(layout)
}

/// [`validate_dir`], plus the pinned sha256 of the weights when there is one.
pub(crate) fn verify_dir(
    dir: &Path,
    expected_sha256: Option<&str>,
    bar: &Progress,
) -> Result<Layout, ModelError> {
    let layout = validate_dir(dir)?;
    if let Some(expected) = expected_sha256 {
        check_sha256(&layout.weights, expected, bar)?;
    }
    Ok(layout)
}

/// Hashes `path` and compares with `expected` (hex, case-insensitive).
///
/// Hashing 90 MB costs about 0.1 s, which would dominate every one-shot `dochash query`; so a
/// successful check leaves a stamp (size, mtime, hash) beside the file, and a file whose size
/// and mtime still match its stamp is not hashed again. Any change to the file invalidates it.
pub(crate) fn check_sha256(path: &Path, expected: &str, bar: &Progress) -> Result<(), ModelError> {
    let stamp_path = stamp_path(path);
    let identity = file_identity(path);
    if let (Some(id), Ok(stamp)) = (&identity, fs::read_to_string(&stamp_path))
        && stamp.trim() == format!("{id} {}", expected.to_ascii_lowercase())
    {
        return Ok(());
    }
    let actual = sha256_file_progress(path, bar)?;
    if actual.eq_ignore_ascii_case(expected) {
        if let Some(id) = identity {
            // Best effort: a read-only cache (e.g. a shared Hugging Face cache) is hashed each time.
            let _ = fs::write(&stamp_path, format!("{id} {actual}\n"));
        }
        Ok(())
    } else {
        Err(ModelError::ChecksumMismatch {
            path: path.to_path_buf(),
            expected: expected.to_ascii_lowercase(),
            actual,
        })
    }
}

/// The sha256 of a file as lowercase hex, read in a streaming fashion.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    sha256_file_progress(path, &Progress::NONE)
}

/// [`sha256_file`] that advances `bar` by the bytes hashed, so verifying 90 MB is visible.
pub(crate) fn sha256_file_progress(path: &Path, bar: &Progress) -> Result<String, ModelError> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let mut reader = bar.wrap_read(file);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("read", path)(e)),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn invalid(path: &Path, what: &'static str, reason: String) -> ModelError {
    ModelError::InvalidFile {
        path: path.to_path_buf(),
        what,
        reason,
    }
}

/// Parses the whole file as JSON without building it (syntax only), and optionally requires a
/// top-level object, which both config.json and tokenizer.json are.
fn check_json(path: &Path, object: bool) -> Result<(), ModelError> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let len = file.metadata().map_err(io_err("read", path))?.len();
    if len > MAX_JSON_BYTES {
        return Err(invalid(
            path,
            "JSON file",
            format!("it is {len} bytes, too large"),
        ));
    }
    let mut text = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(MAX_JSON_BYTES)
        .read_to_end(&mut text)
        .map_err(io_err("read", path))?;
    if object && text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(invalid(
            path,
            "JSON file",
            "it does not start with `{`".into(),
        ));
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(&text)
        .map_err(|e| invalid(path, "JSON file", e.to_string()))?;
    Ok(())
}

/// Checks the safetensors framing: an 8-byte little-endian header length that fits in the file,
/// followed by a JSON object. A truncated download fails here; the tensors themselves are left to
/// the loader.
fn check_safetensors(path: &Path) -> Result<(), ModelError> {
    const WHAT: &str = "safetensors file";
    let mut file = File::open(path).map_err(io_err("open", path))?;
    let len = file.metadata().map_err(io_err("read", path))?.len();
    let mut prefix = [0u8; 9];
    if len < prefix.len() as u64 {
        return Err(invalid(path, WHAT, format!("only {len} bytes")));
    }
    file.read_exact(&mut prefix).map_err(io_err("read", path))?;
    let mut n = [0u8; 8];
    n.copy_from_slice(&prefix[..8]);
    let header = u64::from_le_bytes(n);
    if header == 0 || header > MAX_SAFETENSORS_HEADER || header > len - 8 {
        return Err(invalid(
            path,
            WHAT,
            format!("header length {header} does not fit a {len}-byte file (truncated?)"),
        ));
    }
    if prefix[8] != b'{' {
        return Err(invalid(path, WHAT, "header is not a JSON object".into()));
    }
    Ok(())
}

/// Checks a hub-style name (`org/name` or `name`) and returns the folder name it is cached under.
///
/// The folder name replaces `/` with `--`, the convention of the Hugging Face cache. Names may not
/// contain `--` themselves (the hub forbids it too), which keeps the mapping one-to-one, and may
/// not start with `.`, which rules out `.`/`..` and collisions with our own `.tmp-*` folders.
pub(crate) fn cache_dir_name(name: &str) -> Result<String, ModelError> {
    let fail = |reason| {
        Err(ModelError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return fail("it is empty");
    }
    if name.len() > 200 {
        return fail("it is longer than 200 characters");
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 2 {
        return fail("expected `name` or `organisation/name`");
    }
    for part in &parts {
        if part.is_empty() {
            return fail("a part between slashes is empty");
        }
        if !part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return fail("only ASCII letters, digits, `-`, `_` and `.` are allowed");
        }
        if part.starts_with('.') || part.starts_with('-') {
            return fail("a part may not start with `.` or `-`");
        }
        if part.contains("--") || part.contains("..") {
            return fail("`--` and `..` are not allowed");
        }
    }
    Ok(parts.join("--"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testutil::{fake_safetensors, write_fake_model};

    #[test]
    fn sha256_of_known_input() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(matches!(
            sha256_file(&dir.path().join("nope")),
            Err(ModelError::Io { action: "open", .. })
        ));
    }

    #[test]
    fn missing_files_are_named_with_their_folder() {
        for missing in REQUIRED {
            let dir = tempfile::tempdir().unwrap();
            write_fake_model(dir.path(), b"w");
            fs::remove_file(dir.path().join(missing)).unwrap();
            let err = validate_dir(dir.path()).unwrap_err();
            match &err {
                ModelError::MissingFile { dir: d, file } => {
                    assert_eq!(*file, missing);
                    assert_eq!(d, dir.path());
                }
                other => panic!("unexpected {other:?}"),
            }
            let msg = err.to_string();
            assert!(msg.contains(missing), "{msg}");
            assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        }
    }

    #[test]
    fn malformed_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        write_fake_model(dir.path(), b"w");
        validate_dir(dir.path()).unwrap();

        fs::write(dir.path().join(CONFIG), b"<html>captive portal</html>").unwrap();
        let err = validate_dir(dir.path()).unwrap_err();
        assert!(matches!(err, ModelError::InvalidFile { ref path, .. } if path.ends_with(CONFIG)));

        write_fake_model(dir.path(), b"w");
        fs::write(dir.path().join(TOKENIZER), b"{\"truncated\": ").unwrap();
        let err = validate_dir(dir.path()).unwrap_err();
        assert!(
            matches!(err, ModelError::InvalidFile { ref path, .. } if path.ends_with(TOKENIZER))
        );

        write_fake_model(dir.path(), b"w");
        let mut st = fake_safetensors(b"");
        st.truncate(12);
        fs::write(dir.path().join(WEIGHTS), st).unwrap();
        let err = validate_dir(dir.path()).unwrap_err();
        assert!(matches!(err, ModelError::InvalidFile { ref path, .. } if path.ends_with(WEIGHTS)));

        fs::write(dir.path().join(WEIGHTS), b"").unwrap();
        assert!(validate_dir(dir.path()).unwrap_err().is_corruption());
    }

    #[test]
    fn non_folders_and_absent_folders() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(
            validate_dir(&file),
            Err(ModelError::NotADir { .. })
        ));
        assert!(matches!(
            validate_dir(&dir.path().join("absent")),
            Err(ModelError::NoSuchDir { .. })
        ));
    }

    #[test]
    fn checksum_mismatch_reports_both_digests() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        fs::write(&p, b"abc").unwrap();
        let bar = Progress::NONE;
        check_sha256(
            &p,
            "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
            &bar,
        )
        .unwrap();
        let err = check_sha256(&p, &"0".repeat(64), &bar).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&"0".repeat(64)) && msg.contains("ba7816bf"),
            "{msg}"
        );
    }

    #[test]
    fn cache_dir_names() {
        assert_eq!(
            cache_dir_name("sentence-transformers/all-MiniLM-L6-v2").unwrap(),
            "sentence-transformers--all-MiniLM-L6-v2"
        );
        assert_eq!(
            cache_dir_name("bert-base-uncased").unwrap(),
            "bert-base-uncased"
        );
        for bad in [
            "", "../evil", "a/../b", "a/b/c", "/abs", "a--b/c", ".hidden", "a/ b", "a\\b", "a/",
        ] {
            assert!(
                matches!(cache_dir_name(bad), Err(ModelError::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
    }
}

/// `.<name>.verified` beside the file.
fn stamp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.verified"))
}

/// Size and modification time, which change whenever the file is rewritten.
fn file_identity(path: &Path) -> Option<String> {
    crate::fsx::file_stamp(&fs::metadata(path).ok()?)
}

#[cfg(test)]
mod stamp_tests {
    use super::*;

    #[test]
    fn verified_stamp_is_used_and_invalidated_by_changes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("model.safetensors");
        fs::write(&f, b"weights v1").unwrap();
        let good = sha256_file(&f).unwrap();
        let bar = Progress::NONE;
        check_sha256(&f, &good, &bar).unwrap();
        let stamp = fs::read_to_string(stamp_path(&f)).unwrap();
        assert!(stamp.contains(&good), "{stamp}");
        // A stamp does not vouch for another expected hash.
        assert!(check_sha256(&f, &"0".repeat(64), &bar).is_err());
        // Rewriting the file (new size) invalidates the stamp: the mismatch is found.
        fs::write(&f, b"weights v2, tampered").unwrap();
        assert!(matches!(
            check_sha256(&f, &good, &bar),
            Err(ModelError::ChecksumMismatch { .. })
        ));
    }
}
