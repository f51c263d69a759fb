//! Claim C5 (backups): pruning cannot delete recent history. Whatever `keep_last`
//! and `older_than` a prune asks for, the agent's floor holds: no backup younger
//! than its minimum age is deleted and never fewer than its minimum count are left.
//! What is deleted is returned (ids first), which the action's output, and so the
//! customer's log, carries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade_backup::catalog::{self, PruneFloor};
use palisade_backup::manifest::{LogRef, Manifest, MANIFEST_SCHEMA};
use palisade_backup::store::{BackupStore, S3Options, StoreUrl};
use palisade_backup::take::{manifest_name, object_name};
use palisade_core::time::Timestamp;
use palisade_policy::keys::{generate, SigningKey};
use std::time::Duration;

const CLUSTER: &str = "demo";
const DAY_MS: i128 = 86_400_000;

struct Fixture {
    _tmp: tempfile::TempDir,
    store: BackupStore,
    key: SigningKey,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let files = generate("agent", &tmp.path().join("keys"), false).unwrap();
        let key = SigningKey::read(&files.private).unwrap();
        let dir = tmp.path().join("store");
        std::fs::create_dir_all(&dir).unwrap();
        let store = BackupStore::open(&StoreUrl::Local(dir), &S3Options::default()).unwrap();
        Self {
            _tmp: tmp,
            store,
            key,
        }
    }

    /// A good backup (signed manifest, object of the size it names) created
    /// `age_ms` before `now`.
    async fn backup(&self, n: u32, now: Timestamp, age_ms: i128) -> String {
        let created_at = Timestamp::from_unix_millis(now.unix_millis() - age_ms);
        let id = format!("20260101T0000{:02}Z-0000{n:04x}", n % 60);
        let object = object_name(CLUSTER, &id);
        let body = vec![7u8; 64];
        let m = Manifest {
            schema: MANIFEST_SCHEMA.into(),
            backup_id: id.clone(),
            format_version: 1,
            tenant: "acme".into(),
            cluster: CLUSTER.into(),
            instance: "demo-0".into(),
            member_id: "8e9e05c52164694d".into(),
            etcd_revision: 100 + i64::from(n),
            created_at,
            object: object.clone(),
            snapshot_bytes: 32,
            object_bytes: body.len() as u64,
            header_bytes: 16,
            segment_size: 65_536,
            segments: 1,
            object_sha256: "00".repeat(32),
            key_id: "kek-1".into(),
            wrapped_key: "AAAA".into(),
            requested_by: LogRef {
                origin: format!("palisade.local/{CLUSTER}"),
                index: u64::from(n),
                event_id: format!("{n:032x}"),
            },
        };
        self.store.put(&object, body).await.unwrap();
        self.store
            .put(&manifest_name(CLUSTER, &id), m.sign(&self.key).unwrap())
            .await
            .unwrap();
        id
    }

    async fn prune(
        &self,
        keep_last: usize,
        older_than: Option<Duration>,
        floor: PruneFloor,
        now: Timestamp,
    ) -> (Vec<String>, usize) {
        let trusted = [self.key.public().clone()];
        let (deleted, _) = catalog::prune(
            &self.store,
            CLUSTER,
            &trusted,
            keep_last,
            older_than,
            floor,
            now,
        )
        .await
        .unwrap();
        let left = catalog::list(&self.store, CLUSTER, &trusted)
            .await
            .unwrap()
            .valid
            .len();
        (
            deleted.into_iter().map(|l| l.manifest.backup_id).collect(),
            left,
        )
    }
}

#[tokio::test]
async fn prune_never_deletes_backups_younger_than_the_floor() {
    let f = Fixture::new();
    let now = Timestamp::now();
    for n in 0..5 {
        f.backup(n, now, i128::from(n) * 1_000).await;
    }
    // keep_last 1 and no older_than: what an operator asked for in the review.
    let (deleted, left) = f.prune(1, None, PruneFloor::default(), now).await;
    assert_eq!(deleted, Vec::<String>::new(), "seconds-old backups deleted");
    assert_eq!(left, 5);
    // Even a day later, a week has not passed.
    let later = Timestamp::from_unix_millis(now.unix_millis() + DAY_MS);
    let (deleted, left) = f.prune(1, None, PruneFloor::default(), later).await;
    assert!(deleted.is_empty(), "{deleted:?}");
    assert_eq!(left, 5);
}

#[tokio::test]
async fn prune_keeps_the_minimum_count_and_reports_what_it_deleted() {
    let f = Fixture::new();
    let now = Timestamp::now();
    let mut ids = Vec::new();
    // Newest first: 2 young ones, then 4 a month old.
    for (n, age) in [(0, 0), (1, 1), (2, 30), (3, 31), (4, 32), (5, 33)] {
        ids.push(f.backup(n, now, age * DAY_MS + i128::from(n)).await);
    }
    // keep_last 1: the two young ones stay by age, the floor's count keeps one more
    // (the newest three), and only the three old ones after that go.
    let (deleted, left) = f.prune(1, None, PruneFloor::default(), now).await;
    assert_eq!(deleted, ids[3..].to_vec());
    assert_eq!(left, 3);

    // A store with only old backups: the count floor still keeps three.
    let g = Fixture::new();
    for n in 0..6 {
        g.backup(n, now, 40 * DAY_MS + i128::from(n)).await;
    }
    let (deleted, left) = g
        .prune(
            1,
            Some(Duration::from_secs(3_600)),
            PruneFloor::default(),
            now,
        )
        .await;
    assert_eq!(deleted.len(), 3, "{deleted:?}");
    assert_eq!(left, 3);

    // A stricter request than the floor is honoured.
    let h = Fixture::new();
    for n in 0..6 {
        h.backup(n, now, (10 + i128::from(n) * 10) * DAY_MS).await;
    }
    let (deleted, left) = h
        .prune(
            3,
            Some(Duration::from_secs(45 * 86_400)),
            PruneFloor::default(),
            now,
        )
        .await;
    // Ages 10, 20, 30 kept by count; 40 younger than 45 days; 50 and 60 go.
    assert_eq!(deleted.len(), 2, "{deleted:?}");
    assert_eq!(left, 4);
}
