//! What is stored for a cluster: backups that are good (a manifest signed by a
//! trusted agent key, for this cluster, whose object exists with the size it names),
//! and everything else, reported apart and never counted as a backup.
//!
//! Pruning deletes only good backups (manifest first, so that a half-finished prune
//! never leaves a manifest pointing at nothing), keeping the newest `keep_last` and,
//! when `older_than` is given, everything newer than that — and always the agent's
//! [`PruneFloor`]: nothing younger than its minimum age, never fewer than its
//! minimum count.

use crate::manifest::{Manifest, MAX_MANIFEST_BYTES};
use crate::store::{BackupStore, StoreError, MANIFEST_SUFFIX, OBJECT_SUFFIX};
use crate::take::object_name;
use palisade_core::time::Timestamp;
use palisade_policy::keys::PublicKey;
use std::collections::BTreeMap;
use std::time::Duration;

/// A good backup.
#[derive(Debug, Clone)]
pub struct Listed {
    pub manifest: Manifest,
    pub manifest_sha256: String,
    pub manifest_name: String,
}

/// Something in the store that is not a good backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Newest first.
    pub valid: Vec<Listed>,
    pub invalid: Vec<Invalid>,
}

pub async fn list(
    store: &BackupStore,
    cluster: &str,
    trusted: &[PublicKey],
) -> Result<Catalog, StoreError> {
    let entries = store.list(cluster).await?;
    let sizes: BTreeMap<String, u64> = entries.iter().cloned().collect();
    let mut cat = Catalog::default();
    let mut with_manifest = std::collections::BTreeSet::new();
    for (name, _) in &entries {
        let Some(id) = name
            .strip_prefix(&format!("{cluster}/"))
            .and_then(|n| n.strip_suffix(MANIFEST_SUFFIX))
        else {
            continue;
        };
        let object = object_name(cluster, id);
        with_manifest.insert(object.clone());
        let invalid = |reason: String| Invalid {
            name: name.clone(),
            reason,
        };
        let bytes = match store.read_small(name, MAX_MANIFEST_BYTES).await {
            Ok(b) => b,
            Err(e) => {
                cat.invalid.push(invalid(e.to_string()));
                continue;
            }
        };
        let v = match Manifest::verify(&bytes, trusted) {
            Ok(v) => v,
            Err(e) => {
                cat.invalid.push(invalid(e.to_string()));
                continue;
            }
        };
        let m = v.manifest;
        if m.cluster != cluster || m.backup_id != id || m.object != object {
            cat.invalid.push(invalid(
                "the manifest describes another cluster or backup than its name".into(),
            ));
            continue;
        }
        match sizes.get(&object) {
            Some(&s) if s == m.object_bytes => cat.valid.push(Listed {
                manifest: m,
                manifest_sha256: v.digest.hex(),
                manifest_name: name.clone(),
            }),
            Some(&s) => cat.invalid.push(invalid(format!(
                "the object is {s} bytes, the manifest says {}",
                m.object_bytes
            ))),
            None => cat.invalid.push(invalid("its object is missing".into())),
        }
    }
    for (name, _) in &entries {
        if name.ends_with(OBJECT_SUFFIX) && !with_manifest.contains(name) {
            cat.invalid.push(Invalid {
                name: name.clone(),
                reason: "an object without a manifest".into(),
            });
        }
    }
    cat.valid.sort_by(|a, b| {
        (b.manifest.created_at, &b.manifest.backup_id)
            .cmp(&(a.manifest.created_at, &a.manifest.backup_id))
    });
    Ok(cat)
}

/// The retention every prune keeps whatever its parameters: configured on the agent
/// (not in the request), so that no operator action can delete recent history. A
/// backup younger than `min_age` is never deleted, and at least `min_count` good
/// backups are always left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneFloor {
    pub min_age: Duration,
    pub min_count: usize,
}

impl Default for PruneFloor {
    /// Seven days and three backups.
    fn default() -> Self {
        Self {
            min_age: Duration::from_secs(7 * 86_400),
            min_count: 3,
        }
    }
}

/// Deletes good backups beyond the newest `keep_last`, except those newer than
/// `older_than` (when given), and never beyond `floor`: the newest
/// `floor.min_count` and everything younger than `floor.min_age` stay, whatever
/// `keep_last` and `older_than` say. Returns what was deleted, newest first.
pub async fn prune(
    store: &BackupStore,
    cluster: &str,
    trusted: &[PublicKey],
    keep_last: usize,
    older_than: Option<Duration>,
    floor: PruneFloor,
    now: Timestamp,
) -> Result<(Vec<Listed>, Catalog), StoreError> {
    let cat = list(store, cluster, trusted).await?;
    let keep = keep_last.max(floor.min_count);
    let min_age = older_than.unwrap_or_default().max(floor.min_age);
    let cutoff = now.unix_millis().saturating_sub(i128::from(
        u64::try_from(min_age.as_millis()).unwrap_or(u64::MAX),
    ));
    let mut deleted = Vec::new();
    for b in cat.valid.iter().skip(keep) {
        if b.manifest.created_at.unix_millis() > cutoff {
            continue;
        }
        store.delete(&b.manifest_name).await?;
        store.delete(&b.manifest.object).await?;
        deleted.push(b.clone());
    }
    Ok((deleted, cat))
}
