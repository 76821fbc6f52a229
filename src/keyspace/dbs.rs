//! The databases: where each db's key table is found.

use super::layout::*;
use super::{KeySpace, StoreError};

impl KeySpace {
    pub(super) fn root_db(&self, db: u8) -> u64 {
        self.layout.root + ROOT_DBS + u64::from(db) * 8
    }

    pub(super) fn db_table(&self, db: u8) -> Result<Option<u64>, StoreError> {
        let t = self.store.read_word(self.root_db(db))?;
        Ok((t != 0).then_some(t))
    }
}
