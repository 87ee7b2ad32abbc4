//! When the owner retrains in the background.
//!
//! The rule: train the first time the index holds at least
//! [`MIN_DHIM_PASSAGES`](super::train::MIN_DHIM_PASSAGES) passages (below that SimCSE is
//! skipped and there are too few passages for learned codes), then again once the passages added plus removed since the last
//! training reach [`CHURN_FRACTION`] of the passages that training saw. Churn rather than size:
//! replacing half the notes changes what the corpus is about as much as doubling it. Every
//! attempt, adopted or not, resets the count, so a corpus on which training does not help is not
//! retrained in a loop; and each attempt in a row that adopted nothing doubles the churn the
//! next one waits for, so such a corpus costs one attempt rather than one per half-corpus of
//! edits, until it has changed enough to be a different corpus.

use std::path::Path;

use super::train::MIN_DHIM_PASSAGES;

pub const CHURN_FRACTION: f64 = 0.5;
/// Most doublings of the churn fraction after attempts that adopted nothing (0.5 → 8× the
/// passages trained on).
const MAX_BACKOFF: u32 = 4;
const FILE: &str = "drift.json";
const VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Drift {
    /// Passages the last training attempt saw; `None` before the first attempt.
    pub trained_on: Option<usize>,
    /// Passages added plus removed since then.
    pub churn: usize,
    /// Attempts in a row that adopted nothing (absent in files of older versions).
    #[serde(default)]
    pub misses: u32,
}

impl Drift {
    /// The saved state; a missing, damaged or newer file counts as no training yet (the worst
    /// that does is one training attempt more).
    pub fn load(home: &Path) -> Self {
        crate::fsx::read_versioned(&home.join(FILE), VERSION)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    pub fn save(&self, home: &Path) -> std::io::Result<()> {
        crate::fsx::write_versioned(&home.join(FILE), VERSION, self)
    }

    /// Whether a corpus of `passages` passages should be retrained now.
    pub fn due(&self, passages: usize) -> bool {
        if passages < MIN_DHIM_PASSAGES {
            return false;
        }
        match self.next_after() {
            None => true,
            Some(needed) => self.churn >= needed,
        }
    }

    /// How much churn the next attempt waits for; `None` before the first attempt.
    pub fn next_after(&self) -> Option<usize> {
        let fraction = CHURN_FRACTION * f64::from(1u32 << self.misses.min(MAX_BACKOFF));
        self.trained_on
            .map(|n| (fraction * n.max(1) as f64).ceil() as usize)
    }

    /// Records that the last attempt adopted something.
    pub fn adopted(&mut self) {
        self.misses = 0;
    }

    /// Records that the last attempt adopted nothing (or failed, or ran out of its budget).
    pub fn missed(&mut self) {
        self.misses = self.misses.saturating_add(1);
    }

    /// Counts passages added plus removed by an update.
    pub fn changed(&mut self, passages: usize) {
        self.churn = self.churn.saturating_add(passages);
    }

    /// Records an attempt on `passages` passages.
    pub fn trained(&mut self, passages: usize) {
        self.trained_on = Some(passages);
        self.churn = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_training_waits_for_enough_passages_then_churn_decides() {
        let mut d = Drift::default();
        assert!(!d.due(MIN_DHIM_PASSAGES - 1));
        assert!(d.due(MIN_DHIM_PASSAGES));
        d.trained(2000);
        assert!(!d.due(2000));
        d.churn = 999;
        assert!(!d.due(2000));
        d.churn = 1000;
        assert!(d.due(2000));
        d.trained(2500);
        assert_eq!(d.churn, 0);
        assert!(!d.due(2500));
    }

    #[test]
    fn attempts_that_adopt_nothing_wait_for_more_change() {
        let mut d = Drift::default();
        d.trained(2000);
        d.missed();
        d.churn = 1999;
        assert!(!d.due(2000), "a similar corpus is not retrained");
        d.churn = 2000;
        assert!(d.due(2000));
        d.trained(2000);
        d.missed();
        d.churn = 3999;
        assert!(!d.due(2000));
        assert_eq!(d.next_after(), Some(4000));
        for _ in 0..40 {
            d.missed();
        }
        assert_eq!(d.next_after(), Some(16_000), "backoff is bounded");
        d.adopted();
        assert_eq!(d.next_after(), Some(1000));
    }

    #[test]
    fn files_without_misses_still_load() {
        let dir = tempfile::tempdir().unwrap();
        crate::fsx::write_versioned(
            &dir.path().join(FILE),
            VERSION,
            &serde_json::json!({"trained_on": 5000, "churn": 12}),
        )
        .unwrap();
        let d = Drift::load(dir.path());
        assert_eq!((d.trained_on, d.churn, d.misses), (Some(5000), 12, 0));
    }

    #[test]
    fn state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Drift::default();
        d.trained(1234);
        d.churn = 7;
        d.missed();
        d.save(dir.path()).unwrap();
        assert_eq!(Drift::load(dir.path()), d);
        std::fs::write(dir.path().join(FILE), "garbage").unwrap();
        assert_eq!(Drift::load(dir.path()), Drift::default());
    }
}
