//! The dochash home: the one owner of the folder that holds the index, the trained generations,
//! the model cache and the side files, and of the procedures on it that every entry point
//! shares. `dochash`, `dochash-tui` and the owner open, train and switch through these calls
//! only, so a rule about the home (which model, which precision, when to retrain, who may read
//! it) is written once.
//!
//! What lives in it, by name (see [`HOME_ENTRIES`]):
//! - `index/` (the base index) and `index-<n>/` (generation `n`'s); `generation.json` says which
//!   serves ([`super::generation`]);
//! - `generations/<n>/`: a trained generation's model, head and manifest;
//! - `models/`: downloaded models; `model.json`, `precision.json`: the model and number format
//!   the index is built with; `drift.json`: when to retrain ([`super::drift`]);
//! - `owner.sock`: the running owner's socket on Unix ([`super::socket`]); on Windows
//!   `owner.pipe` names its pipe.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::encoder::{DeviceSpec, Encoder, LoadOptions, Precision};
use crate::index::{Donor, Index, IndexError, IndexMeta, UpdateReport};
use crate::model::{self, FetchOptions, ModelFiles, ModelSpec};
use crate::train::TrainError;

use super::AppError;
use super::drift::Drift;
use super::generation::{self, Active, Retire};
use super::train::{Outcome, Prepared, TrainOptions, TrainProgress};

/// A dochash home folder (`DOCHASH_HOME`, else the platform's data folder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    dir: PathBuf,
}

/// The model a command asks for, as every entry point passes it (flags of `dochash` and
/// `dochash-tui`, the owner's configuration): `None` keeps the home's own choice.
#[derive(Debug, Clone, Default)]
pub struct ModelChoice {
    pub model: Option<ModelSpec>,
    pub precision: Option<Precision>,
    pub device: DeviceSpec,
    pub fetch: FetchOptions,
}

/// The encoder that writes the home's index, and what resolving it found.
pub struct Writer {
    pub files: ModelFiles,
    pub encoder: Encoder,
    /// The serving trained generation, if its model is the one in use.
    pub active: Option<Active>,
    /// What the user should be told (a generation retired for another model, an index rebuilt).
    pub notes: Vec<String>,
}

/// What dochash keeps in its home, by name or prefix: the index folders (`index`, `index-<n>`)
/// and `index.json`, trained generations, the model cache, the side files, the socket and
/// leftovers of atomic writes. Only these are narrowed: `DOCHASH_HOME` may name a folder that
/// holds other things of the user's.
const HOME_ENTRIES: &[&str] = &[
    "index",
    "generation",
    "models",
    "model.json",
    "precision.json",
    "drift.json",
    "owner.sock",
    "owner.pipe",
    ".sock-",
    ".tmp-",
];

impl Home {
    /// The user's home folder: `DOCHASH_HOME`, else the platform's data folder.
    pub fn locate() -> Result<Self, AppError> {
        Ok(Self::at(model::home_dir()?))
    }

    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the folder if needed and makes it private to the user: it holds the full text
    /// of every indexed note. For commands that write to it.
    pub fn prepare(&self) -> Result<(), AppError> {
        crate::fsx::create_private_dir_all(&self.dir).map_err(|source| AppError::Io {
            path: self.dir.clone(),
            source,
        })?;
        self.narrow();
        Ok(())
    }

    /// Narrows an existing home to the user: the folder itself to 0700, and everything dochash
    /// keeps in it ([`HOME_ENTRIES`]) to folders 0700 and files 0600. A home made by an older
    /// version (0755 folders, 0644 files) left the index's files, which hold the text of every
    /// note, readable by other users. Every command calls it, read-only ones too.
    pub fn narrow(&self) {
        if !self.dir.is_dir() {
            return;
        }
        crate::fsx::make_private_dir(&self.dir);
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let link = e.file_type().is_ok_and(|t| t.is_symlink());
            if !link && HOME_ENTRIES.iter().any(|p| name.starts_with(p)) {
                crate::fsx::make_private_tree(&e.path());
            }
        }
    }

    /// The serving index's folder.
    pub fn index_dir(&self) -> PathBuf {
        generation::index_dir(&self.dir)
    }

    /// Trained generation `n`'s folder (model, head, manifest).
    pub fn generation_dir(&self, n: u32) -> PathBuf {
        generation::generation_dir(&self.dir, n)
    }

    /// The serving trained generation, if any.
    pub fn active(&self) -> Option<Active> {
        generation::active(&self.dir)
    }

    /// The model and encoder that write the index: the serving generation's model when it was
    /// trained from the model asked for (else the model asked for, retiring that generation,
    /// which a note says), in the home's precision unless another is asked for (then
    /// remembered). Creates the home.
    pub fn writer(&self, choice: &ModelChoice) -> Result<Writer, AppError> {
        self.prepare()?;
        let (files, active, retired) = generation::resolve_model(
            &self.dir,
            choice.model.as_ref(),
            &choice.fetch,
            Retire::Allowed,
        )?;
        let notes = retired
            .iter()
            .map(|a| generation::retired_note(a, &files.id))
            .collect();
        let precision = generation::base_precision(&self.dir, choice.precision);
        let encoder = Encoder::load_model(
            &files,
            &LoadOptions {
                device: choice.device,
                trainable: false,
                max_len: None,
                candle_only: false,
                precision,
            },
        )?;
        generation::remember_precision(&self.dir, encoder.precision())?;
        Ok(Writer {
            files,
            encoder,
            active,
            notes,
        })
    }

    /// Opens (creates, or rebuilds when its model changed) the serving index for `writer`'s
    /// encoder, with what the user should be told. A lock held by another process is
    /// [`IndexError::Store`]`(Locked)`: the owner waits and tries again, a command reports it.
    pub fn open_index(&self, writer: &Writer) -> Result<(Index, Vec<String>), IndexError> {
        let fp = super::fingerprint(&writer.files, &writer.encoder);
        Index::open(&self.index_dir(), &fp)
    }

    /// The serving index as it is, for reading (`dochash query`, `status`): never created or
    /// rebuilt; `None` when nothing is indexed.
    pub fn open_for_reading(&self) -> Result<Option<Index>, IndexError> {
        Index::open_existing(&self.index_dir())
    }

    /// The model a command that only reads the index encodes queries with (as [`Self::writer`]
    /// resolves it, but never retiring a generation nor remembering the choice).
    pub fn reader_model(&self, choice: &ModelChoice) -> Result<ModelFiles, AppError> {
        let (files, _, _) = generation::resolve_model(
            &self.dir,
            choice.model.as_ref(),
            &choice.fetch,
            Retire::Never,
        )?;
        Ok(files)
    }

    /// The model training starts from: the one asked for, else the home's; never a trained
    /// generation's, so that retraining cannot drift away from it.
    pub fn base_model(&self, choice: &ModelChoice) -> Result<ModelFiles, AppError> {
        let spec = generation::base_spec(&self.dir, choice.model.as_ref());
        Ok(model::resolve(&spec, &choice.fetch)?)
    }

    /// The running owner of the index, if there is one.
    pub fn owner(&self) -> Result<Option<super::socket::Client>, AppError> {
        Ok(super::socket::Client::connect(&self.dir)?)
    }

    /// Removes what a finished switch or an interrupted training left (generations and index
    /// folders that do not serve). Only a holder of the index may call it.
    pub fn clean_up(&self) {
        generation::clean_up(&self.dir);
    }

    /// Counts `passages` added plus removed by an update towards the next background training.
    pub fn record_change(&self, passages: usize) -> std::io::Result<()> {
        if passages == 0 {
            return Ok(());
        }
        self.edit_drift(|d| d.changed(passages))
    }

    /// Whether a corpus of `passages` passages has changed enough to be trained again.
    pub fn training_due(&self, passages: usize) -> bool {
        Drift::load(&self.dir).due(passages)
    }

    /// How much change the next background training waits for, once one was tried.
    pub fn next_training_after(&self) -> Option<usize> {
        Drift::load(&self.dir).next_after()
    }

    /// Trains the next generation on the notes of `current` (an index of this home with
    /// `passages` passages) and builds its index beside the serving one, for [`Self::switch`]
    /// (see [`super::train::prepare`]). The attempt is recorded for the retraining rule when it
    /// starts; one that ends without a generation to switch to (nothing adopted, a failure, a
    /// stop for its budget) counts as a miss, one stopped by `cancel` as neither.
    #[allow(clippy::too_many_arguments)]
    pub fn train(
        &self,
        base: &ModelFiles,
        current: &IndexMeta,
        passages: usize,
        serving: Option<Donor>,
        opts: &TrainOptions,
        cancel: &Arc<AtomicBool>,
        progress: &mut dyn FnMut(TrainProgress),
    ) -> Result<Outcome, TrainError> {
        // Recorded (best effort) before it runs, so that changes made meanwhile count towards
        // the next one; a full disk costs at most one attempt more.
        let _ = self.edit_drift(|d| d.trained(passages));
        let outcome =
            super::train::prepare(&self.dir, base, current, serving, opts, cancel, progress);
        match &outcome {
            Ok(Outcome::Ready(_)) | Err(TrainError::Cancelled) => {}
            Ok(Outcome::Unchanged(_)) | Err(_) => self.record_miss(),
        }
        outcome
    }

    /// Counts a training attempt that produced nothing to switch to for the retraining rule
    /// (also one stopped from outside [`Self::train`], as the owner stops one for its budget).
    pub fn record_miss(&self) {
        let _ = self.edit_drift(Drift::missed);
    }

    /// Makes a prepared generation the serving one ([`super::train::switch`]: files changed
    /// meanwhile are caught up by `catch_up` first) and records that training adopted
    /// something. A switch that fails counts as a miss. The caller drops the old index, then
    /// calls [`Self::clean_up`].
    pub fn switch<E>(
        &self,
        prepared: &mut Prepared,
        catch_up: impl FnOnce(&mut Index, &Arc<Encoder>) -> Result<UpdateReport, E>,
    ) -> Result<UpdateReport, AppError>
    where
        AppError: From<E>,
    {
        let switched = super::train::switch(&self.dir, prepared, catch_up);
        match &switched {
            Ok(_) => {
                let _ = self.edit_drift(Drift::adopted);
            }
            Err(_) => self.record_miss(),
        }
        switched
    }

    fn edit_drift(&self, f: impl FnOnce(&mut Drift)) -> std::io::Result<()> {
        // The owner's worker and its training thread both edit the file: one at a time.
        static EDITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = EDITING.lock().unwrap_or_else(|p| p.into_inner());
        let mut d = Drift::load(&self.dir);
        f(&mut d);
        d.save(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_home_is_made_private_and_only_dochash_entries_are_narrowed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("h"));
        home.prepare().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(home.dir()), 0o700);
        let open = std::fs::Permissions::from_mode(0o644);
        for name in ["drift.json", "notes-of-mine.txt"] {
            let p = home.dir().join(name);
            std::fs::write(&p, "x").unwrap();
            std::fs::set_permissions(&p, open.clone()).unwrap();
        }
        home.narrow();
        assert_eq!(mode(&home.dir().join("drift.json")), 0o600);
        assert_eq!(mode(&home.dir().join("notes-of-mine.txt")), 0o644);
    }

    #[test]
    fn the_retraining_rule_is_kept_in_the_home() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let passages = super::super::train::MIN_DHIM_PASSAGES;
        assert!(home.training_due(passages));
        assert_eq!(home.next_training_after(), None);
        home.edit_drift(|d| d.trained(passages)).unwrap();
        assert!(!home.training_due(passages));
        home.record_change(passages / 2).unwrap();
        assert!(home.training_due(passages));
        home.edit_drift(|d| d.trained(passages)).unwrap();
        home.record_miss();
        // After a miss the next attempt waits for twice the change.
        assert_eq!(home.next_training_after(), Some(passages));
    }
}
