//! What sled holds per file and per passage, in a compact binary form (postcard) behind a
//! format byte. Paths are stored as their bytes: a file name need not be UTF-8, and one such
//! name must never make a record unwritable (it used to stop all indexing).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Bumped when a record's layout changes. A record of an older format still decodes (see
/// [`Record::legacy`]): new fields only add to what search can do, and reading a folder again
/// to fill them in would cost a user hours of re-embedding. Any other format is damage.
const RECORD_FORMAT: u8 = 3;

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
    /// The note's tags (front matter and inline `#tags`), lower-cased, for `tag:` filters.
    pub tags: Vec<String>,
    /// The note's own date (front matter `date`), as seconds since the epoch: `after:` and
    /// `before:` take it over the modification time, which a copy or a sync resets.
    pub date: Option<i64>,
    /// Read from a record of format 1, which had no tags or date: the next update reads the
    /// file again for them (its vectors stay unless its text changed).
    #[serde(skip)]
    pub unread_meta: bool,
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
    /// First and last line (1-based, inclusive) of each unit the passage is matched on, in the
    /// order of its rows; empty when the passage is its only unit (or was stored before units
    /// had lines). What a hit shows and opens at: the unit the query matched best.
    pub units: Vec<(u32, u32)>,
    /// The page (1-based) of a paged document (a PDF) the passage starts on; 0 for a file
    /// without pages. The page of a line further in counts the page breaks in `text` before it.
    pub page: u32,
    /// Its note's other names and tags (front matter `aliases`, `tags`; Logseq and org-roam
    /// properties; inline `#tags`): searched as title words, so a note is found by any name it
    /// goes by. Each passage carries them, as the word index is rebuilt from passages alone.
    pub names: Vec<String>,
    /// The links the passage makes to other notes, files and headings, as written (at most
    /// [`crate::corpus::MAX_PASSAGE_LINKS`]): the notes' own structure, kept for backlinks and
    /// training without reading the files again.
    pub links: Vec<crate::corpus::LinkTarget>,
}

/// The layouts of format 1, read into the current ones.
mod v1 {
    use super::*;

    #[derive(Deserialize)]
    pub struct FileRecord {
        #[serde(with = "path_bytes")]
        pub root: PathBuf,
        pub size: u64,
        pub mtime_ns: i128,
        pub hash: [u8; 32],
        pub passages: Vec<u64>,
        pub lossy: bool,
    }

    #[derive(Deserialize)]
    pub struct PassageRecord {
        #[serde(with = "path_bytes")]
        pub path: PathBuf,
        pub start_byte: usize,
        pub end_byte: usize,
        pub start_line: u32,
        pub end_line: u32,
        pub headings: Vec<String>,
        pub context: Vec<String>,
        pub text: String,
    }
}

/// The passage layout of format 2: format 1's fields, then the units' lines (no page). postcard
/// writes a nested struct as its fields in order, so this reads format 2's flat records.
mod v2 {
    use super::*;

    #[derive(Deserialize)]
    pub struct PassageRecord {
        pub v1: v1::PassageRecord,
        pub units: Vec<(u32, u32)>,
    }
}

/// A stored record, and how one of an older format is read.
pub trait Record: for<'de> Deserialize<'de> {
    /// Decodes `bytes` of the older `format`, when this record had one.
    fn legacy(_format: u8, _bytes: &[u8]) -> Option<Result<Self, String>> {
        None
    }
}

impl Record for FileRecord {
    fn legacy(format: u8, bytes: &[u8]) -> Option<Result<Self, String>> {
        if format == 2 {
            // Unchanged since format 2.
            return Some(postcard::from_bytes(bytes).map_err(|e| e.to_string()));
        }
        (format == 1).then(|| {
            postcard::from_bytes::<v1::FileRecord>(bytes)
                .map(|f| FileRecord {
                    root: f.root,
                    size: f.size,
                    mtime_ns: f.mtime_ns,
                    hash: f.hash,
                    passages: f.passages,
                    lossy: f.lossy,
                    tags: Vec::new(),
                    date: None,
                    unread_meta: true,
                })
                .map_err(|e| e.to_string())
        })
    }
}

impl Record for PassageRecord {
    fn legacy(format: u8, bytes: &[u8]) -> Option<Result<Self, String>> {
        let v2 = match format {
            2 => postcard::from_bytes::<v2::PassageRecord>(bytes),
            1 => postcard::from_bytes(bytes).map(|v1| v2::PassageRecord {
                v1,
                units: Vec::new(),
            }),
            _ => return None,
        };
        Some(v2.map(PassageRecord::from).map_err(|e| e.to_string()))
    }
}

impl From<v2::PassageRecord> for PassageRecord {
    fn from(p: v2::PassageRecord) -> Self {
        let v1::PassageRecord {
            path,
            start_byte,
            end_byte,
            start_line,
            end_line,
            headings,
            context,
            text,
        } = p.v1;
        Self {
            path,
            start_byte,
            end_byte,
            start_line,
            end_line,
            headings,
            context,
            text,
            units: p.units,
            page: 0,
            names: Vec::new(),
            links: Vec::new(),
        }
    }
}

impl Record for Counts {
    // Unchanged since format 1.
    fn legacy(format: u8, bytes: &[u8]) -> Option<Result<Self, String>> {
        (format == 1 || format == 2).then(|| postcard::from_bytes(bytes).map_err(|e| e.to_string()))
    }
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

pub fn decode<T: Record>(b: &[u8]) -> Result<T, String> {
    match b.split_first() {
        Some((&RECORD_FORMAT, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((&f, rest)) => T::legacy(f, rest).unwrap_or_else(|| Err(format!("record format {f}"))),
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
            units: vec![(2, 5), (4, 9)],
            page: 0,
            names: Vec::new(),
            links: Vec::new(),
        };
        assert_eq!(decode::<PassageRecord>(&encode(&p)).unwrap(), p);
        let f = FileRecord {
            root: path,
            size: 10,
            mtime_ns: -5,
            hash: [7; 32],
            passages: vec![1, 2, 3],
            lossy: true,
            tags: vec!["meeting".into()],
            date: Some(-3),
            unread_meta: false,
        };
        assert_eq!(decode::<FileRecord>(&encode(&f)).unwrap(), f);
        assert!(decode::<FileRecord>(b"").is_err());
        assert!(decode::<FileRecord>(&[9, 1, 2]).is_err());
    }

    #[test]
    fn records_of_format_1_still_decode() {
        #[derive(Serialize)]
        struct OldPassage<'a> {
            path: &'a [u8],
            start_byte: usize,
            end_byte: usize,
            start_line: u32,
            end_line: u32,
            headings: Vec<String>,
            context: Vec<String>,
            text: &'a str,
        }
        let mut b = vec![1];
        b.extend(
            postcard::to_allocvec(&OldPassage {
                path: b"/n/a.md",
                start_byte: 0,
                end_byte: 4,
                start_line: 1,
                end_line: 2,
                headings: vec!["H".into()],
                context: Vec::new(),
                text: "body",
            })
            .unwrap(),
        );
        let p: PassageRecord = decode(&b).unwrap();
        assert_eq!((p.text.as_str(), p.end_line, p.units.len()), ("body", 2, 0));
        #[derive(Serialize)]
        struct OldFile<'a> {
            root: &'a [u8],
            size: u64,
            mtime_ns: i128,
            hash: [u8; 32],
            passages: Vec<u64>,
            lossy: bool,
        }
        let mut b = vec![1];
        b.extend(
            postcard::to_allocvec(&OldFile {
                root: b"/n",
                size: 3,
                mtime_ns: 9,
                hash: [1; 32],
                passages: vec![4],
                lossy: false,
            })
            .unwrap(),
        );
        let f: FileRecord = decode(&b).unwrap();
        assert_eq!((f.passages, f.tags.len(), f.date), (vec![4], 0, None));
        assert!(f.unread_meta, "the next update reads its tags");
    }

    #[test]
    fn passages_of_format_2_decode_without_a_page() {
        let mut p = PassageRecord {
            path: "/n/a.md".into(),
            start_byte: 0,
            end_byte: 4,
            start_line: 1,
            end_line: 2,
            headings: vec!["H".into()],
            context: Vec::new(),
            text: "body".into(),
            units: vec![(1, 2)],
            page: 7,
            names: vec!["alias".into()],
            links: vec![crate::corpus::LinkTarget::Note(
                "Bees".into(),
                Some("Winter".into()),
            )],
        };
        let current = encode(&p);
        assert_eq!(decode::<PassageRecord>(&current).unwrap(), p);
        // Format 2 is the same layout without the page, names and links at its end.
        p.names = Vec::new();
        p.links = Vec::new();
        let mut old = encode(&p);
        old[0] = 2;
        old.truncate(old.len() - 3);
        p.page = 0;
        assert_eq!(decode::<PassageRecord>(&old).unwrap(), p);
    }
}
