//! The auction policy record: which policy every brain places with (a built-in by name, or a
//! Wasm component), kept in the BBS so that a restarted or failed-over brain uses it too.
//!
//! A component is large (megabytes) and etcd refuses requests over 1.5 MiB, so its base64 is
//! stored in chunks keyed by its sha256, written before the record that points to them; the
//! record's write is guarded by the chunks it needs, so a concurrent set that removes them
//! makes it retry instead of leaving a record without its component.

use base64::Engine;
use diego_model::requests::AuctionPolicyRecord;
use diego_model::validate::Problems;
use diego_model::{BbsError, ErrorType};
use diego_store::{Compare, Op, Txn};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::db::{Versioned, encode, read_error, with_retries};
use crate::{Bbs, BbsResult, keys, now};

/// The largest body the policy routes accept (components are large).
pub const MAX_POLICY_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The base64 stored per key (well under etcd's 1.5 MiB request limit).
const CHUNK_BYTES: usize = 512 * 1024;

/// The longest name or `set_by` kept.
const MAX_TEXT_LEN: usize = 1024;

/// What the record key holds: the record without its component, and how many chunks hold it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredPolicy {
    record: AuctionPolicyRecord,
    chunks: usize,
}

/// Checks a policy before anything is stored; answers the component's sha256 (lowercase hex)
/// for a component policy.
pub fn validate_policy(policy: &AuctionPolicyRecord) -> BbsResult<Option<String>> {
    let mut p = Problems::new();
    p.check(policy.name.len() <= MAX_TEXT_LEN, || {
        format!("name is longer than {MAX_TEXT_LEN} bytes")
    });
    p.check(!policy.name.chars().any(char::is_control), || {
        "name may not contain control characters".into()
    });
    p.check(policy.set_by.len() <= MAX_TEXT_LEN, || {
        format!("set_by is longer than {MAX_TEXT_LEN} bytes")
    });
    let mut sha = None;
    if policy.builtin {
        p.check(!policy.name.is_empty(), || {
            "a built-in policy needs its name (classic, binpack, spread)".into()
        });
        p.check(policy.component.is_empty(), || {
            "a built-in policy carries no component".into()
        });
    } else if policy.component.is_empty() {
        p.add("component is required (the Wasm component, base64) unless builtin is true");
    } else {
        let wanted = policy.sha256.to_ascii_lowercase();
        if wanted.len() != 64 || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
            p.add("sha256 must be the component's sha256 as 64 hex digits");
        }
        match base64::engine::general_purpose::STANDARD.decode(policy.component.as_bytes()) {
            Err(e) => p.add(format!("component is not valid base64: {e}")),
            Ok(bytes) => {
                let actual = hex(&Sha256::digest(&bytes));
                if wanted.len() == 64 && actual != wanted {
                    p.add(format!(
                        "the component's sha256 is {actual}, not {wanted} as the request says"
                    ));
                }
                sha = Some(actual);
            }
        }
    }
    p.into_request_result()?;
    Ok(sha)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn corrupt(why: String) -> BbsError {
    BbsError::new(ErrorType::Deserialize, why)
}

impl Bbs {
    /// The policy an operator set, with its component; `None` until one is set.
    pub async fn auction_policy(&self) -> BbsResult<Option<AuctionPolicyRecord>> {
        with_retries("read auction policy", || async {
            let Some(stored) = self.db.read::<StoredPolicy>(keys::AUCTION_POLICY).await? else {
                return Ok(Some(None));
            };
            let mut record = stored.record.record;
            if record.builtin {
                return Ok(Some(Some(record)));
            }
            let chunks = self
                .db
                .list_json(&keys::policy_component(&record.sha256))
                .await?;
            let component: Vec<u8> = chunks.concat();
            let complete = chunks.len() == stored.record.chunks
                && base64::engine::general_purpose::STANDARD
                    .decode(&component)
                    .is_ok_and(|bytes| hex(&Sha256::digest(&bytes)) == record.sha256);
            if !complete {
                // A concurrent set replaced the record and removed these chunks: read again.
                let again = self.db.read::<StoredPolicy>(keys::AUCTION_POLICY).await?;
                if again.is_some_and(|a| a.revision != stored.revision) {
                    return Ok(None);
                }
                return Err(corrupt(format!(
                    "the stored auction policy component {} is incomplete",
                    record.sha256
                )));
            }
            record.component = String::from_utf8(component)
                .map_err(|e| corrupt(format!("the stored component is not text: {e}")))?;
            Ok(Some(Some(record)))
        })
        .await
    }

    /// Records the policy every brain should place with. Invalid input is refused before
    /// anything is written.
    pub async fn set_auction_policy(&self, mut policy: AuctionPolicyRecord) -> BbsResult<()> {
        let sha = validate_policy(&policy)?;
        if policy.set_at == 0 {
            policy.set_at = now();
        }
        let component = std::mem::take(&mut policy.component);
        if let Some(sha) = &sha {
            policy.sha256.clone_from(sha);
        } else {
            policy.sha256.clear();
        }
        let chunks: Vec<&[u8]> = component.as_bytes().chunks(CHUNK_BYTES).collect();
        let stored = StoredPolicy {
            record: policy,
            chunks: chunks.len(),
        };
        let (previous, revision) = with_retries("set auction policy", || async {
            let guards = match &sha {
                Some(sha) => match self.write_chunks(sha, &chunks).await? {
                    Some(guards) => guards,
                    None => return Ok(None),
                },
                None => Vec::new(),
            };
            let previous = self.db.read::<StoredPolicy>(keys::AUCTION_POLICY).await?;
            let mut txn = Txn::new();
            txn = match &previous {
                None => txn.when(Compare::absent(keys::AUCTION_POLICY)),
                Some(p) => txn.when(Compare::unchanged(keys::AUCTION_POLICY, p.revision)),
            };
            for (key, revision) in guards {
                txn = txn.when(Compare::unchanged(key, revision));
            }
            txn = txn.then(Op::put(keys::AUCTION_POLICY, encode(&stored)?));
            if !self.db.commit(txn).await? {
                return Ok(None);
            }
            let revision = self
                .store()
                .get(keys::AUCTION_POLICY)
                .await
                .map_err(read_error)?
                .map(|kv| kv.mod_revision);
            Ok(Some((previous, revision)))
        })
        .await?;
        tracing::info!(name = %stored.record.name, builtin = stored.record.builtin, sha256 = %stored.record.sha256, "auction policy set");
        if let (Some(previous), Some(revision)) = (previous, revision) {
            self.remove_old_component(&previous, &stored.record.sha256, revision)
                .await;
        }
        Ok(())
    }

    /// Writes the chunks of a component and answers their keys and revisions (to guard the
    /// record's write with); `None` when a concurrent writer changed them meanwhile.
    async fn write_chunks(
        &self,
        sha: &str,
        chunks: &[&[u8]],
    ) -> BbsResult<Option<Vec<(String, diego_store::Revision)>>> {
        let prefix = keys::policy_component(sha);
        let existing = self.store().list(&prefix).await.map_err(read_error)?;
        let mut guards = Vec::with_capacity(chunks.len());
        for (n, chunk) in chunks.iter().enumerate() {
            let key = keys::policy_component_chunk(sha, n);
            let present = existing
                .kvs
                .iter()
                .find(|kv| kv.key == key && kv.value == *chunk);
            if present.is_none() {
                self.db
                    .commit(Txn::new().then(Op::put(&key, chunk.to_vec())))
                    .await?;
            }
        }
        // Read back what is there now: the record is written only if these stay unchanged.
        let written = self.store().list(&prefix).await.map_err(read_error)?;
        for (n, chunk) in chunks.iter().enumerate() {
            let key = keys::policy_component_chunk(sha, n);
            match written.kvs.iter().find(|kv| kv.key == key) {
                Some(kv) if kv.value == *chunk => guards.push((key, kv.mod_revision)),
                _ => return Ok(None),
            }
        }
        Ok(Some(guards))
    }

    /// Deletes the chunks of the component the previous record pointed to, as long as the
    /// record is still the one just written (a later set cleans up after itself).
    async fn remove_old_component(
        &self,
        previous: &Versioned<StoredPolicy>,
        current_sha: &str,
        revision: diego_store::Revision,
    ) {
        let old = &previous.record.record;
        if old.builtin || old.sha256.is_empty() || old.sha256 == current_sha {
            return;
        }
        for n in 0..previous.record.chunks {
            let txn = Txn::new()
                .when(Compare::unchanged(keys::AUCTION_POLICY, revision))
                .then(Op::delete(keys::policy_component_chunk(&old.sha256, n)));
            match self.db.commit(txn).await {
                Ok(true) => {}
                Ok(false) => return, // the record changed again: its writer cleans up
                Err(e) => {
                    tracing::warn!(sha256 = %old.sha256, error = %e, "cannot remove the old auction policy component");
                    return;
                }
            }
        }
    }
}
