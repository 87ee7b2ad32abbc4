//! When the owner retrains in the background.
//!
//! The rule: train the first time the index holds at least
//! [`MIN_DHIM_PASSAGES`](super::train::MIN_DHIM_PASSAGES) passages (below that the learned
//! codes do not beat ITQ), then again once the passages added plus removed since the last
//! training reach [`CHURN_FRACTION`] of the passages that training saw. Churn rather than size:
//! replacing half the notes changes what the corpus is about as much as doubling it. Every
//! attempt, adopted or not, resets the count, so a corpus on which training does not help is not
//! retrained in a loop.

use std::path::Path;

use super::train::MIN_DHIM_PASSAGES;

pub const CHURN_FRACTION: f64 = 0.5;
const FILE: &str = "drift.json";
const VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Drift {
    /// Passages the last training attempt saw; `None` before the first attempt.
    pub trained_on: Option<usize>,
    /// Passages added plus removed since then.
    pub churn: usize,
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
        match self.trained_on {
            None => true,
            Some(n) => self.churn as f64 >= CHURN_FRACTION * n.max(1) as f64,
        }
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
    fn state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Drift::default();
        d.trained(1234);
        d.churn = 7;
        d.save(dir.path()).unwrap();
        assert_eq!(Drift::load(dir.path()), d);
        std::fs::write(dir.path().join(FILE), "garbage").unwrap();
        assert_eq!(Drift::load(dir.path()), Drift::default());
    }
}
