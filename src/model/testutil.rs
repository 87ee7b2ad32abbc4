//! Fixtures shared by the unit tests of [`crate::model`].

use std::fs;
use std::path::Path;

use super::layout::{CONFIG, TOKENIZER, WEIGHTS};

/// Writes a small but structurally valid model folder whose weights' data section is `payload`.
pub(crate) fn write_fake_model(dir: &Path, payload: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(
        dir.join(CONFIG),
        br#"{"model_type":"bert","hidden_size":4}"#,
    )
    .unwrap();
    fs::write(dir.join(TOKENIZER), br#"{"version":"1.0","model":{}}"#).unwrap();
    fs::write(dir.join(WEIGHTS), fake_safetensors(payload)).unwrap();
}

/// A well-framed safetensors file whose data section is `payload`.
pub(crate) fn fake_safetensors(payload: &[u8]) -> Vec<u8> {
    let header = br#"{"__metadata__":{}}"#;
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header);
    v.extend_from_slice(payload);
    v
}

/// The names in `dir`, sorted; panics if it cannot be listed.
pub(crate) fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
