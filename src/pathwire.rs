//! Paths in JSON (the owner socket, `--json` output) without losing names that are not UTF-8.
//!
//! File names on Unix are bytes; JSON strings are Unicode. serde's own `PathBuf` support fails on
//! such a name, which would turn one odd file into a failed reply. Two representations:
//! - [`field`]: a flattened `path` field that is always a (lossy) string, for people and scripts,
//!   plus `path_bytes` (the exact bytes) only when the name is not UTF-8, so a client can still
//!   open the file;
//! - [`list`]: paths that are strings when they can be, byte arrays otherwise (request and status
//!   fields, where exactness matters more than looks).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The exact bytes of a path (its encoded form on other platforms).
pub fn to_bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_encoded_bytes().to_vec()
}

/// A file name (or any path) for a terminal, with nothing dropped: where `app::sanitize` removes
/// what could drive the terminal, a name must still name its own file, so controls, bidi
/// controls and bytes that are not UTF-8 are shown escaped — `\n`, `\r`, `\t`, `\x1b`,
/// `\u{202e}`, `\xff` — and so is a backslash once anything is (`\\`), which keeps the
/// escaped form unambiguous. A name without any of them is shown as it is.
pub fn show(path: &Path) -> String {
    show_bytes(&to_bytes(path))
}

fn show_bytes(bytes: &[u8]) -> String {
    let plain = std::str::from_utf8(bytes).is_ok_and(|s| !s.chars().any(is_shown_escaped));
    if plain {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x100 && is_shown_escaped(c) => {
                    out.push_str(&format!("\\x{:02x}", c as u32))
                }
                c if is_shown_escaped(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Controls (C0, DEL, C1) and the bidi controls that could reorder what is shown.
fn is_shown_escaped(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The path whose bytes are `b`; on platforms where paths are not bytes, a lossy decoding.
pub fn from_bytes(b: Vec<u8>) -> PathBuf {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        PathBuf::from(std::ffi::OsString::from_vec(b))
    }
    #[cfg(not(unix))]
    {
        PathBuf::from(String::from_utf8_lossy(&b).into_owned())
    }
}

/// `#[serde(flatten, with = "pathwire::field")]` on a `PathBuf` field: `path` (lossy string) and,
/// for names that are not UTF-8, `path_bytes`.
pub mod field {
    use super::*;
    use serde::ser::SerializeMap;

    pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        let exact = p.to_str().is_some();
        let mut m = s.serialize_map(Some(if exact { 1 } else { 2 }))?;
        m.serialize_entry("path", &p.to_string_lossy())?;
        if !exact {
            m.serialize_entry("path_bytes", &to_bytes(p))?;
        }
        m.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            path: String,
            #[serde(default)]
            path_bytes: Option<Vec<u8>>,
        }
        let w = Wire::deserialize(d)?;
        Ok(match w.path_bytes {
            Some(b) => from_bytes(b),
            None => PathBuf::from(w.path),
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Repr {
    Text(String),
    Bytes(Vec<u8>),
}

fn repr(p: &Path) -> Repr {
    match p.to_str() {
        Some(s) => Repr::Text(s.to_owned()),
        None => Repr::Bytes(to_bytes(p)),
    }
}

fn unrepr(r: Repr) -> PathBuf {
    match r {
        Repr::Text(s) => PathBuf::from(s),
        Repr::Bytes(b) => from_bytes(b),
    }
}

/// `#[serde(with = "pathwire::list")]` on a `Vec<PathBuf>`.
pub mod list {
    use super::*;

    pub fn serialize<S: Serializer>(paths: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(paths.iter().map(|p| repr(p)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
        Ok(Vec::<Repr>::deserialize(d)?
            .into_iter()
            .map(unrepr)
            .collect())
    }
}

/// `#[serde(with = "pathwire::one")]` on a `PathBuf`.
pub mod one {
    use super::*;

    pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        repr(p).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Ok(unrepr(Repr::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_shown_escaped_never_shortened() {
        use std::path::Path;
        assert_eq!(show(Path::new("/n/plain a\\b.md")), "/n/plain a\\b.md");
        assert_eq!(show(Path::new("/n/new\nline.md")), "/n/new\\nline.md");
        assert_eq!(
            show(Path::new("/n/\x1b[31mred\\x.md")),
            "/n/\\x1b[31mred\\\\x.md"
        );
        assert_eq!(show(Path::new("/n/\u{202e}txt.md")), "/n/\\u{202e}txt.md");
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let p = Path::new(std::ffi::OsStr::from_bytes(b"/n/caf\xe9.md"));
            assert_eq!(show(p), "/n/caf\\xe9.md");
        }
        // Two names that differ only in what `sanitize` drops stay apart.
        assert_ne!(show(Path::new("a\nb")), show(Path::new("ab")));
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Hit {
        #[serde(flatten, with = "field")]
        path: PathBuf,
        line: u32,
        #[serde(with = "list")]
        roots: Vec<PathBuf>,
    }

    #[test]
    fn utf8_paths_are_plain_strings() {
        let h = Hit {
            path: "/notes/a.md".into(),
            line: 3,
            roots: vec!["/notes".into()],
        };
        let j = serde_json::to_string(&h).unwrap();
        assert_eq!(j, r#"{"path":"/notes/a.md","line":3,"roots":["/notes"]}"#);
        assert_eq!(serde_json::from_str::<Hit>(&j).unwrap(), h);
    }

    #[cfg(unix)]
    #[test]
    fn other_names_survive_the_round_trip() {
        let odd = from_bytes(b"/notes/caf\xe9.md".to_vec());
        let h = Hit {
            path: odd.clone(),
            line: 1,
            roots: vec![odd.clone()],
        };
        let j = serde_json::to_string(&h).unwrap();
        assert!(j.contains(r#""path":"/notes/caf\ufffd.md""#) || j.contains("caf\u{fffd}"));
        assert!(j.contains("path_bytes"), "{j}");
        assert_eq!(serde_json::from_str::<Hit>(&j).unwrap(), h);
    }
}
