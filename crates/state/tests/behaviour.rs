//! One behavioural suite, run against both stores: whatever a process does with its
//! state works the same on one machine (redb) and across gateway replicas (etcd).

#![allow(clippy::unwrap_used)] // Tests may unwrap.

mod suite;
mod support;

use palisade_state::StateBackend;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_store_meets_the_state_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateBackend::Redb {
        path: dir.path().join("state.redb"),
    }
    .open()
    .await
    .unwrap();
    suite::store_behaves(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_store_meets_the_state_contract() {
    let etcd = support::Etcd::start().await;
    let store = StateBackend::Etcd {
        endpoints: etcd.endpoints(),
        prefix: "/palisade".into(),
        tls: None,
    }
    .open()
    .await
    .unwrap();
    suite::store_behaves(store).await;
}
