//! What sled holds per file and per passage, in a compact binary form (postcard) behind a
//! format byte. Paths are stored as their bytes: a file name need not be UTF-8, and one such
//! name must never make a record unwritable (it used to stop all indexing).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Bumped when a record's layout changes; a record of another format does not decode, which
/// the store treats as damage (and the schema version bump rebuilds the index anyway).
const RECORD_FORMAT: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    #[serde(with = "path_bytes")]
    pub root: PathBuf,
    pub size: u64,
    pub mtime_ns: i128,
    /// blake3 of the raw bytes.
    pub hash: [u8; 32],
    pub passages: Vec<u64>,
    /// The file was not valid UTF-8 and was decoded lossily.
    pub lossy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassageRecord {
    #[serde(with = "path_bytes")]
    pub path: PathBuf,
    pub start_byte: usize,
    pub end_byte: usize,
    /// 1-based, inclusive.
    pub start_line: u32,
    pub end_line: u32,
    /// Shown with the passage: the trail where its new text starts.
    pub headings: Vec<String>,
    /// Searched with its title: the trail where its first byte lies, if that differs.
    pub context: Vec<String>,
    /// The passage body as in the file (without the heading prefix that was embedded).
    pub text: String,
}

/// The store's running totals, kept in the same transactions as the records they count, so that
/// status is O(1) and a crash can be told from a clean state (see `Store::open`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub files: u64,
    pub passages: u64,
    /// XOR of [`id_hash`] over the passages' ids: equal on both sides of sled and the row files
    /// exactly when they hold the same set of passages.
    pub id_set: u64,
}

/// A well-mixed hash of a passage id, for [`Counts::id_set`].
pub fn id_hash(id: u64) -> u64 {
    let mut z = id.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![RECORD_FORMAT];
    // Serialising plain structs into a Vec cannot fail.
    out.extend(postcard::to_allocvec(v).unwrap_or_default());
    out
}

pub fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, String> {
    match b.split_first() {
        Some((&RECORD_FORMAT, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((f, _)) => Err(format!("record format {f}")),
        None => Err("empty record".into()),
    }
}

mod path_bytes {
    use std::path::{Path, PathBuf};

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&crate::pathwire::to_bytes(p))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        let b: Vec<u8> = serde_bytes_vec(d)?;
        Ok(crate::pathwire::from_bytes(b))
    }

    fn serde_bytes_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = a.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_bytes(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_any_file_name() {
        #[cfg(unix)]
        let path = crate::pathwire::from_bytes(b"/notes/caf\xe9 \x1b[2J.md".to_vec());
        #[cfg(not(unix))]
        let path = PathBuf::from("/notes/café.md");
        let p = PassageRecord {
            path: path.clone(),
            start_byte: 3,
            end_byte: 90,
            start_line: 2,
            end_line: 9,
            headings: vec!["Title".into()],
            context: vec!["Earlier".into()],
            text: "body".into(),
        };
        assert_eq!(decode::<PassageRecord>(&encode(&p)).unwrap(), p);
        let f = FileRecord {
            root: path,
            size: 10,
            mtime_ns: -5,
            hash: [7; 32],
            passages: vec![1, 2, 3],
            lossy: true,
        };
        assert_eq!(decode::<FileRecord>(&encode(&f)).unwrap(), f);
        assert!(decode::<FileRecord>(b"").is_err());
        assert!(decode::<FileRecord>(&[9, 1, 2]).is_err());
    }
}
