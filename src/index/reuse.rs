//! Vectors another index already holds, for an update of a new index made with the same encoder
//! and passage settings: a file whose content the other index holds is copied from it instead of
//! embedded again. A training whose encoder is not adopted still builds the next generation's
//! index (for its new codes); with the serving index as donor that costs reading the files, not
//! re-encoding them (minutes per 10 k passages on two cores).

use std::path::Path;

use super::store::{Db, Fingerprint, PassageRecord, RowTable, Vectors};

/// A read-only view of an index to copy from (see [`super::UpdateOptions::reuse`]). It is made
/// from an index that keeps serving and changing: its database is live, its rows are those of
/// the moment it was made. A file is copied only when the stored content hash is the file's
/// and every passage of it has its vectors in this view, so a file changed meanwhile is embedded
/// as usual; a stored vector is never rewritten in place, so what is copied is what was written.
pub struct Donor {
    fingerprint: Fingerprint,
    db: Db,
    table: RowTable,
    vectors: Vectors,
}

impl Donor {
    pub(super) fn new(fingerprint: Fingerprint, db: Db, table: RowTable, vectors: Vectors) -> Self {
        Self {
            fingerprint,
            db,
            table,
            vectors,
        }
    }

    /// What the donor's vectors were made with; only an index with the same fingerprint may
    /// copy them.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// The passages stored for `path` if their content hash is `hash`, each with its unit
    /// vectors (concatenated, as an update stores them); `None` when the donor does not hold
    /// exactly that content, whole. A database that cannot be read is the same as a miss: the
    /// file is then embedded.
    pub(super) fn file(
        &self,
        path: &Path,
        hash: &[u8; 32],
    ) -> Option<Vec<(PassageRecord, Vec<f32>)>> {
        let rec = self.db.file(path).ok()??;
        if rec.hash != *hash {
            return None;
        }
        let dim = self.vectors.dim();
        rec.passages
            .iter()
            .map(|&id| {
                let record = self.db.passage(id).ok()??;
                // The anchor row is the passage's last: present only if all its rows are. A
                // dead row in its range is left from a repair: not this passage's, so no copy.
                self.table.row_of(id)?;
                let rows = self.table.rows_of(id);
                if rows.clone().any(|r| self.table.dead[r]) {
                    return None;
                }
                let mut vector = Vec::with_capacity(rows.len() * dim);
                for r in rows {
                    vector.extend(self.vectors.row(r)?.iter().map(|h| h.to_f32()));
                }
                Some((record, vector))
            })
            .collect()
    }
}
