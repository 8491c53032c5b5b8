//! Lifecycle records: which lifecycle components an operator added (their bytes are in the blob
//! store), so that every apps API, cell and restarted platform finds them. One key per
//! lifecycle; a version is added by a compare-and-swap on it, so concurrent adds never lose one.

use diego_model::lifecycle::{MAX_LIFECYCLE_VERSIONS, validate_lifecycle_name};
use diego_model::validate::Problems;
use diego_model::{BbsError, LifecycleRecord, LifecycleVersion};
use diego_store::{Compare, Op, Txn};

use crate::db::{encode, with_retries};
use crate::{Bbs, BbsResult, keys, now};

fn not_found(name: &str) -> BbsError {
    BbsError::not_found(format!("no lifecycle named {name:?}"))
}

impl Bbs {
    /// Every added lifecycle, by name.
    pub async fn lifecycles(&self) -> BbsResult<Vec<LifecycleRecord>> {
        Ok(self
            .db
            .list::<LifecycleRecord>(keys::LIFECYCLES)
            .await?
            .into_iter()
            .map(|v| v.record)
            .collect())
    }

    pub async fn lifecycle(&self, name: &str) -> BbsResult<LifecycleRecord> {
        let mut p = Problems::new();
        validate_lifecycle_name(name, &mut p);
        p.into_request_result()?;
        self.db
            .read::<LifecycleRecord>(&keys::lifecycle(name))
            .await?
            .map(|v| v.record)
            .ok_or_else(|| not_found(name))
    }

    /// Adds `version` to lifecycle `name` (created if new) as its current version, and answers
    /// the record as written.
    pub async fn add_lifecycle_version(
        &self,
        name: &str,
        mut version: LifecycleVersion,
    ) -> BbsResult<LifecycleRecord> {
        let mut p = Problems::new();
        validate_lifecycle_name(name, &mut p);
        version.validate_into(&mut p);
        p.into_request_result()?;
        if version.added_at == 0 {
            version.added_at = now();
        }
        let key = keys::lifecycle(name);
        let record = with_retries("add lifecycle version", || async {
            let previous = self.db.read::<LifecycleRecord>(&key).await?;
            let mut record = previous
                .as_ref()
                .map(|v| v.record.clone())
                .unwrap_or_else(|| LifecycleRecord {
                    name: name.to_owned(),
                    versions: Vec::new(),
                });
            if let Some(same) = record
                .versions
                .iter()
                .find(|v| v.version == version.version && v.sha256 != version.sha256)
            {
                return Err(BbsError::conflict(format!(
                    "lifecycle {name:?} already has a version {:?} with other bytes (sha256 {}): give the new component a new version",
                    same.version, same.sha256
                )));
            }
            // The same bytes again: that version (as first added) becomes the current one, a
            // roll-back; already current, nothing changes.
            if record.current().is_some_and(|v| v.sha256 == version.sha256) {
                return Ok(Some(record));
            }
            let mut added = version.clone();
            if let Some(at) = record.versions.iter().position(|v| v.sha256 == version.sha256) {
                added = record.versions.remove(at);
            }
            record.versions.push(added);
            let excess = record.versions.len().saturating_sub(MAX_LIFECYCLE_VERSIONS);
            record.versions.drain(..excess);
            let guard = match &previous {
                None => Compare::absent(&key),
                Some(v) => Compare::unchanged(&key, v.revision),
            };
            let txn = Txn::new()
                .when(guard)
                .then(Op::put(&key, encode(&record)?));
            Ok(self.db.commit(txn).await?.then_some(record))
        })
        .await?;
        tracing::info!(lifecycle = %name, version = %version.version, sha256 = %version.sha256, "lifecycle version added");
        Ok(record)
    }

    /// Removes lifecycle `name` and answers what it was.
    pub async fn remove_lifecycle(&self, name: &str) -> BbsResult<LifecycleRecord> {
        let mut p = Problems::new();
        validate_lifecycle_name(name, &mut p);
        p.into_request_result()?;
        let key = keys::lifecycle(name);
        let removed = with_retries("remove lifecycle", || async {
            let Some(previous) = self.db.read::<LifecycleRecord>(&key).await? else {
                return Err(not_found(name));
            };
            let txn = Txn::new()
                .when(Compare::unchanged(&key, previous.revision))
                .then(Op::delete(&key));
            Ok(self.db.commit(txn).await?.then_some(previous.record))
        })
        .await?;
        tracing::info!(lifecycle = %name, "lifecycle removed");
        Ok(removed)
    }
}
