//! Which trained generation serves: a pointer file in the dochash home, switched atomically.
//!
//! A generation is a fine-tuned encoder (optional), a hashing head (optional) and the index built
//! with them, in `<home>/generations/<n>/` and `<home>/index-<n>/`. Training builds the next
//! generation beside the serving one and then rewrites `<home>/generation.json` (temp file +
//! rename), so a crash or Ctrl-C at any point leaves either the old or the new generation
//! serving, never a mix. Without the pointer, `<home>/index` and the base model serve.

use std::path::{Path, PathBuf};

use crate::encoder::Precision;
use crate::model::{self, FetchOptions, ModelError, ModelFiles, ModelSpec};

const POINTER: &str = "generation.json";

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Active {
    pub generation: u32,
    /// The model id training started from; the generation only applies while the user keeps
    /// asking for this model.
    pub base_model: String,
    /// The fine-tuned model folder, or `None` when the base model was kept.
    pub model_dir: Option<PathBuf>,
    /// The index folder's name inside the home.
    pub index: String,
}

/// Format of the pointer file.
const POINTER_VERSION: u32 = 1;

/// The serving generation, if training ever switched one in and its files are still there.
/// A pointer that does not parse, or was written by a newer dochash, is ignored (the base
/// index serves) and left where it is.
pub fn active(home: &Path) -> Option<Active> {
    let a: Active = match crate::fsx::read_versioned(&home.join(POINTER), POINTER_VERSION) {
        Ok(a) => a?,
        Err(e) => {
            tracing::warn!("ignoring the trained generation: {e}");
            return None;
        }
    };
    let model_ok = a
        .model_dir
        .as_ref()
        .is_none_or(|d| d.join("model.safetensors").is_file());
    let name_ok = !a.index.is_empty() && !a.index.contains(['/', '\\']) && a.index != "..";
    (model_ok && name_ok).then_some(a)
}

/// Where the serving index lives.
pub fn index_dir(home: &Path) -> PathBuf {
    match active(home) {
        Some(a) => home.join(a.index),
        None => crate::index::index_dir(home),
    }
}

/// Folder of generation `n`'s checkpoints.
pub fn generation_dir(home: &Path, n: u32) -> PathBuf {
    home.join("generations").join(n.to_string())
}

/// Makes `a` the serving generation (atomic rename of the pointer file).
pub fn switch(home: &Path, a: &Active) -> std::io::Result<()> {
    crate::fsx::write_versioned(&home.join(POINTER), POINTER_VERSION, a)
}

/// Forgets every generation: the base model and `<home>/index` serve again.
pub fn reset(home: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(home.join(POINTER)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether resolving the model may retire a trained generation trained from another model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retire {
    /// For commands that write the index (`index`, `train`, the owner): the generation's index
    /// cannot be searched with the model asked for, so the pointer goes and `<home>/index` is
    /// rebuilt for the new model.
    Allowed,
    /// For commands that only read (`query`, `status`): nothing is removed; a model that does not
    /// match the index is the caller's error to report.
    Never,
}

/// `<home>/model.json`: the base model an index of this home was last built for. The model is a
/// setting like the folder list: a command run without `--model` must not rebuild the index
/// (or retire a trained generation) for the default model.
const CHOICE: &str = "model.json";
const CHOICE_VERSION: u32 = 1;

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Choice {
    /// A model id as [`ModelFiles::id`] gives it (see [`super::spec_from_id`]).
    model: String,
}

/// The base model to use: the one asked for, else the one this home's index was last built
/// for (a home older than `model.json`: the serving generation's base, else the model recorded
/// in the base index), else the default.
pub fn base_spec(home: &Path, requested: Option<&ModelSpec>) -> ModelSpec {
    if let Some(spec) = requested {
        return spec.clone();
    }
    match crate::fsx::read_versioned::<Choice>(&home.join(CHOICE), CHOICE_VERSION) {
        Ok(Some(c)) => return super::spec_from_id(&c.model),
        Ok(None) => {}
        Err(e) => tracing::warn!("ignoring the remembered model: {e}"),
    }
    if let Some(a) = active(home) {
        return super::spec_from_id(&a.base_model);
    }
    let recorded = crate::index::Index::open_existing(&crate::index::index_dir(home))
        .ok()
        .flatten()
        .map(|i| i.meta().fingerprint.model_id.clone());
    recorded.map_or_else(ModelSpec::default, |id| super::spec_from_id(&id))
}

/// Records `id` as the home's model (see [`base_spec`]), unless it already is, or the file was
/// written by a newer dochash (left alone).
fn remember(home: &Path, id: &str) -> std::io::Result<()> {
    let path = home.join(CHOICE);
    match crate::fsx::read_versioned::<Choice>(&path, CHOICE_VERSION) {
        Ok(Some(c)) if c.model == id => Ok(()),
        Err(crate::fsx::SideFileError::Newer { .. }) => Ok(()),
        _ => crate::fsx::write_versioned(
            &path,
            CHOICE_VERSION,
            &Choice {
                model: id.to_string(),
            },
        ),
    }
}

/// `<home>/precision.json`: the number format the home's index is built with, a setting like
/// the model (see [`base_precision`]); it survives a rebuild of the index.
const PRECISION: &str = "precision.json";
const PRECISION_VERSION: u32 = 1;

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct PrecisionChoice {
    precision: Precision,
}

/// The precision to encode with: the one asked for, else the one this home's index was last
/// built with (`precision.json`, else the serving index's fingerprint: an index made before
/// the setting existed is `f32`); `None` for a new home (the encoder's default).
pub fn base_precision(home: &Path, requested: Option<Precision>) -> Option<Precision> {
    if requested.is_some() {
        return requested;
    }
    match crate::fsx::read_versioned::<PrecisionChoice>(&home.join(PRECISION), PRECISION_VERSION) {
        Ok(Some(c)) => return Some(c.precision),
        Ok(None) => {}
        Err(e) => tracing::warn!("ignoring the remembered precision: {e}"),
    }
    crate::index::Index::open_existing(&index_dir(home))
        .ok()
        .flatten()
        .map(|i| i.meta().fingerprint.precision)
}

/// Records `p` as the home's precision (for commands that write the index), unless it already
/// is, or the file was written by a newer dochash (left alone).
pub fn remember_precision(home: &Path, p: Precision) -> Result<(), ModelError> {
    let path = home.join(PRECISION);
    let write = match crate::fsx::read_versioned::<PrecisionChoice>(&path, PRECISION_VERSION) {
        Ok(Some(c)) => c.precision != p,
        Err(crate::fsx::SideFileError::Newer { .. }) => false,
        _ => true,
    };
    if !write {
        return Ok(());
    }
    crate::fsx::write_versioned(&path, PRECISION_VERSION, &PrecisionChoice { precision: p })
        .map_err(|source| ModelError::Io {
            action: "write",
            path,
            source,
        })
}

/// The model to encode with, and the serving generation: the generation's fine-tuned model when
/// the base model (see [`base_spec`]) is the one it was trained from, otherwise the base model.
/// The third value is the generation that was retired because another model was asked for
/// (only with [`Retire::Allowed`], which also remembers the base model), for the caller to say
/// so.
pub fn resolve_model(
    home: &Path,
    requested: Option<&ModelSpec>,
    fetch: &FetchOptions,
    retire: Retire,
) -> Result<(ModelFiles, Option<Active>, Option<Active>), ModelError> {
    let spec = base_spec(home, requested);
    let base = model::resolve(&spec, fetch)?;
    if retire == Retire::Allowed {
        remember(home, &base.id).map_err(|source| ModelError::Io {
            action: "write",
            path: home.join(CHOICE),
            source,
        })?;
    }
    match active(home) {
        Some(a) if a.base_model == base.id => match &a.model_dir {
            Some(dir) => Ok((
                model::resolve(&ModelSpec::LocalDir(dir.clone()), fetch)?,
                Some(a),
                None,
            )),
            None => Ok((base, Some(a), None)),
        },
        Some(a) if retire == Retire::Allowed => {
            reset(home).map_err(|source| ModelError::Io {
                action: "remove",
                path: home.join(POINTER),
                source,
            })?;
            Ok((base, None, Some(a)))
        }
        Some(_) | None => Ok((base, None, None)),
    }
}

/// What to tell the user when [`resolve_model`] retired a generation.
pub fn retired_note(a: &Active, model: &str) -> String {
    format!(
        "trained generation {} (from {}) retired: {model} was asked for; the index is rebuilt for it",
        a.generation, a.base_model
    )
}

/// The next unused generation number (never reuses a folder a crash may have left half-written).
pub fn next_number(home: &Path) -> u32 {
    let current = active(home).map(|a| a.generation).unwrap_or(0);
    let on_disk = std::fs::read_dir(home.join("generations"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .max()
        .unwrap_or(0);
    current.max(on_disk) + 1
}

/// Removes generation folders and index folders that are not serving (left by a finished
/// switch or an interrupted training run).
pub fn clean_up(home: &Path) {
    let active = active(home);
    let keep_gen = active.as_ref().map(|a| a.generation);
    let keep_index = active.as_ref().map(|a| a.index.clone());
    for e in std::fs::read_dir(home.join("generations"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let n = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok());
        if n.is_some() && n != keep_gen {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    for e in std::fs::read_dir(home).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let is_gen_index = name
            .strip_prefix("index-")
            .is_some_and(|n| n.parse::<u32>().is_ok());
        // With a generation serving, the base index is unused derived data too.
        let is_base_index = name == "index" && keep_index.is_some();
        if (is_gen_index || is_base_index) && Some(&name) != keep_index.as_ref() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(n: u32) -> Active {
        Active {
            generation: n,
            base_model: "base".into(),
            model_dir: None,
            index: format!("index-{n}"),
        }
    }

    #[test]
    fn the_pointer_decides_the_index_folder_and_survives_only_when_valid() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        assert_eq!(index_dir(h), h.join("index"));
        switch(h, &active(3)).unwrap();
        assert_eq!(index_dir(h), h.join("index-3"));
        assert_eq!(super::active(h), Some(active(3)));
        // A pointer to a fine-tuned model that is gone, or with a path for a name, is ignored.
        let mut a = active(4);
        a.model_dir = Some(h.join("missing"));
        switch(h, &a).unwrap();
        assert_eq!(index_dir(h), h.join("index"));
        let mut a = active(5);
        a.index = "../elsewhere".into();
        switch(h, &a).unwrap();
        assert_eq!(super::active(h), None);
        std::fs::write(h.join(POINTER), "{not json").unwrap();
        assert_eq!(super::active(h), None);
        reset(h).unwrap();
        reset(h).unwrap();
    }

    #[test]
    fn numbers_are_never_reused_and_clean_up_keeps_only_the_serving_generation() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        assert_eq!(next_number(h), 1);
        for n in [1, 2, 7] {
            std::fs::create_dir_all(generation_dir(h, n)).unwrap();
            std::fs::create_dir_all(h.join(format!("index-{n}"))).unwrap();
        }
        std::fs::create_dir_all(h.join("index")).unwrap();
        std::fs::create_dir_all(h.join("models")).unwrap();
        assert_eq!(next_number(h), 8);
        // Nothing serves yet: half-made generations go, the base index stays.
        clean_up(h);
        assert!(h.join("index").is_dir());
        assert!(!h.join("index-7").exists() && !generation_dir(h, 7).exists());
        std::fs::create_dir_all(generation_dir(h, 2)).unwrap();
        std::fs::create_dir_all(h.join("index-2")).unwrap();
        switch(h, &active(2)).unwrap();
        clean_up(h);
        assert!(h.join("index-2").is_dir() && generation_dir(h, 2).is_dir());
        assert!(
            !h.join("index").exists(),
            "the base index is unused once a generation serves"
        );
        assert!(h.join("models").is_dir());
    }
}
