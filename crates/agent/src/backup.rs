//! The backup actions: `etcd.backup`, `etcd.backups`, `etcd.backup-prune`
//! (claim C5). The work is in `palisade-backup`; this module wires it to the
//! instance's etcd, the KMS plugin, the agent key and the configured store, and
//! reduces what comes back to the actions' output schemas.
//!
//! How a backup is recorded in the cluster's log: the dispatch that asked for it is
//! an intent event in the log (the agent ran it only with a proof of that), and the
//! result event the gateway appends carries the SHA-256 of this action's canonical
//! output, which contains the manifest's SHA-256. So the log commits to the exact
//! manifest, and the manifest (signed by the agent key) names the intent event.
//! Pruning is logged the same way: its output lists every deleted backup.

use crate::accept::Accepted;
use crate::config::BackupSettings;
use crate::etcd::Etcd;
use palisade_backup::catalog;
use palisade_backup::manifest::LogRef;
use palisade_backup::store::{BackupStore, S3Options};
use palisade_backup::take::{self, BackupSubject};
use palisade_core::time::Timestamp;
use palisade_kms::KmsClient;
use palisade_policy::keys::{PublicKey, SigningKey};
use serde::Serialize;
use std::time::Duration;

pub const BACKUP_SCHEMA: &str = "palisade.dev/output/etcd-backup/v1";
pub const BACKUPS_SCHEMA: &str = "palisade.dev/output/etcd-backups/v1";
pub const PRUNE_SCHEMA: &str = "palisade.dev/output/etcd-backup-prune/v1";

/// The most backups (and invalid entries) one listing returns.
pub const MAX_LISTED: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup store: {0}")]
    Store(#[from] palisade_backup::store::StoreError),
    #[error("cannot reach the KMS plugin at {socket}: {reason}")]
    Kms { socket: String, reason: String },
    #[error(transparent)]
    Etcd(#[from] crate::etcd::EtcdError),
    #[error("backup failed: {0}")]
    Take(#[from] palisade_backup::take::TakeError),
    #[error("another backup is running on this agent")]
    Busy,
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Restore(#[from] palisade_backup::restore::RestoreError),
}

/// What `etcd.backup` returns: the manifest's metadata, never key material.
#[derive(Debug, Clone, Serialize)]
pub struct BackupOutput {
    pub backup_id: String,
    pub created_at: Timestamp,
    pub cluster: String,
    pub instance: String,
    pub member_id: String,
    pub etcd_revision: i64,
    pub snapshot_bytes: u64,
    pub object_bytes: u64,
    pub object: String,
    pub object_sha256: String,
    pub manifest: String,
    pub manifest_sha256: String,
    pub key_id: String,
    pub took_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListedBackup {
    pub backup_id: String,
    pub created_at: Timestamp,
    pub instance: String,
    pub etcd_revision: i64,
    pub snapshot_bytes: u64,
    pub object_bytes: u64,
    pub manifest_sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct InvalidEntry {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupsOutput {
    /// Good backups, newest first.
    pub backups: Vec<ListedBackup>,
    /// What is in the store but is not a good backup (never restorable as one).
    pub invalid: Vec<InvalidEntry>,
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneOutput {
    /// The deleted backups (their ids first), newest first, at most [`MAX_LISTED`]:
    /// the customer reads in the log what went.
    pub deleted: Vec<ListedBackup>,
    /// How many were deleted, listed or not.
    pub deleted_count: usize,
    pub kept: usize,
    /// The agent's retention floor this prune kept to.
    pub min_age_days: u64,
    pub min_count: usize,
}

fn listed(l: &catalog::Listed) -> ListedBackup {
    ListedBackup {
        backup_id: l.manifest.backup_id.clone(),
        created_at: l.manifest.created_at,
        instance: l.manifest.instance.clone(),
        etcd_revision: l.manifest.etcd_revision,
        snapshot_bytes: l.manifest.snapshot_bytes,
        object_bytes: l.manifest.object_bytes,
        manifest_sha256: l.manifest_sha256.clone(),
    }
}

/// The agent's backup service.
pub struct Backups {
    store: BackupStore,
    kms_socket: String,
    part_size: usize,
    signer: SigningKey,
    trusted: Vec<PublicKey>,
    floor: catalog::PruneFloor,
    tenant: String,
    cluster: String,
    instance: String,
    running: tokio::sync::Mutex<()>,
}

impl Backups {
    pub fn new(
        settings: &BackupSettings,
        signer: SigningKey,
        tenant: &str,
        cluster: &str,
        instance: &str,
    ) -> Result<Self, BackupError> {
        let store = BackupStore::open(
            &settings.store,
            &S3Options {
                region: settings.region.clone(),
                endpoint: settings.endpoint.clone(),
                credentials_file: settings.credentials_file.clone(),
            },
        )?;
        let mut trusted = vec![signer.public().clone()];
        for path in &settings.trusted_keys {
            trusted.push(PublicKey::read(path).map_err(|e| {
                BackupError::Config(format!("backup.trusted_keys {}: {e}", path.display()))
            })?);
        }
        Ok(Self {
            store,
            kms_socket: settings.kms_socket.clone(),
            part_size: settings.part_size_mib as usize * 1024 * 1024,
            signer,
            trusted,
            floor: settings.prune_floor(),
            tenant: tenant.to_string(),
            cluster: cluster.to_string(),
            instance: instance.to_string(),
            running: tokio::sync::Mutex::new(()),
        })
    }

    /// A connection to the customer's KMS plugin.
    async fn kms(&self) -> Result<KmsClient, BackupError> {
        KmsClient::connect(&self.kms_socket)
            .await
            .map_err(|e| BackupError::Kms {
                socket: self.kms_socket.clone(),
                reason: e.to_string(),
            })
    }

    /// Removes what a backup cut short by a kill of the agent left in the store (a
    /// local store's staging file): called at start, before any backup runs.
    pub async fn remove_incomplete(&self) -> Result<Vec<String>, BackupError> {
        Ok(self.store.remove_incomplete(&self.cluster).await?)
    }

    pub async fn backup(&self, etcd: &Etcd, a: &Accepted) -> Result<BackupOutput, BackupError> {
        let _one = self.running.try_lock().map_err(|_| BackupError::Busy)?;
        let start = std::time::Instant::now();
        let mut kms = self.kms().await?;
        let source = etcd.snapshot().await?;
        let subject = BackupSubject {
            tenant: self.tenant.clone(),
            cluster: self.cluster.clone(),
            instance: self.instance.clone(),
            member_id: format!("{:x}", source.member_id),
            etcd_revision: source.revision,
            requested_by: LogRef {
                origin: a.log_origin.clone(),
                index: a.log_index,
                event_id: a.dispatch.event_id.to_string(),
            },
        };
        let taken = take::take(
            &self.store,
            &mut kms,
            &self.signer,
            subject,
            self.part_size,
            source.stream,
        )
        .await;
        let taken = match taken {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "etcd.backup failed; nothing was recorded as a backup");
                return Err(e.into());
            }
        };
        let m = taken.manifest;
        tracing::info!(
            backup_id = %m.backup_id,
            bytes = m.object_bytes,
            manifest_sha256 = %taken.manifest_digest,
            "etcd backup stored"
        );
        Ok(BackupOutput {
            backup_id: m.backup_id,
            created_at: m.created_at,
            cluster: m.cluster,
            instance: m.instance,
            member_id: m.member_id,
            etcd_revision: m.etcd_revision,
            snapshot_bytes: m.snapshot_bytes,
            object_bytes: m.object_bytes,
            object: m.object,
            object_sha256: m.object_sha256,
            manifest: taken.manifest_name,
            manifest_sha256: taken.manifest_digest.hex(),
            key_id: m.key_id,
            took_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Verifies backup `backup_id` of this cluster (its manifest signed by one of the
    /// cluster's agents) and decrypts its snapshot to `out` with the customer's KMS
    /// plugin; nothing is left at `out` if any check fails.
    pub async fn restore_snapshot(
        &self,
        backup_id: &str,
        out: &std::path::Path,
    ) -> Result<palisade_backup::restore::Restored, BackupError> {
        let _one = self.running.try_lock().map_err(|_| BackupError::Busy)?;
        let manifest = self
            .store
            .read_small(&take::manifest_name(&self.cluster, backup_id), 1 << 20)
            .await?;
        let mut kms = self.kms().await?;
        let expected = palisade_backup::restore::Expected {
            backup_id: Some(backup_id.to_string()),
            cluster: Some(self.cluster.clone()),
            manifest_sha256: None,
        };
        Ok(palisade_backup::restore::restore(
            &manifest,
            &self.trusted,
            &expected,
            &self.store,
            &mut kms,
            out,
            &mut |_| {},
        )
        .await?)
    }

    pub async fn list(&self) -> Result<BackupsOutput, BackupError> {
        let cat = catalog::list(&self.store, &self.cluster, &self.trusted).await?;
        let truncated = cat.valid.len() > MAX_LISTED || cat.invalid.len() > MAX_LISTED;
        Ok(BackupsOutput {
            backups: cat.valid.iter().take(MAX_LISTED).map(listed).collect(),
            invalid: cat
                .invalid
                .iter()
                .take(MAX_LISTED)
                .map(|i| InvalidEntry {
                    name: i.name.chars().take(256).collect(),
                    reason: i.reason.chars().take(256).collect(),
                })
                .collect(),
            truncated,
        })
    }

    pub async fn prune(
        &self,
        keep_last: usize,
        older_than: Option<Duration>,
    ) -> Result<PruneOutput, BackupError> {
        let _one = self.running.try_lock().map_err(|_| BackupError::Busy)?;
        let (deleted, cat) = catalog::prune(
            &self.store,
            &self.cluster,
            &self.trusted,
            keep_last,
            older_than,
            self.floor,
            Timestamp::now(),
        )
        .await?;
        for d in &deleted {
            tracing::info!(backup_id = %d.manifest.backup_id, "etcd backup pruned");
        }
        Ok(PruneOutput {
            kept: cat.valid.len().saturating_sub(deleted.len()),
            deleted: deleted.iter().take(MAX_LISTED).map(listed).collect(),
            deleted_count: deleted.len(),
            min_age_days: self.floor.min_age.as_secs() / 86_400,
            min_count: self.floor.min_count,
        })
    }
}
