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
