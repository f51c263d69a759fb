//! The PKCS#11 session pool: concurrent Encrypt/Decrypt calls share a bounded set of
//! sessions opened under one login, and a backend failure closes all of them (the
//! next call logs in again), so the pool never serves from a session it cannot trust.

#![allow(clippy::unwrap_used)] // Tests may unwrap.

mod support;

use palisade_kms::kek::Kek;
use palisade_kms::pkcs11::{Pkcs11Kek, Token};
use std::num::NonZeroUsize;
use std::sync::Arc;
use support::*;

async fn round_trips(kek: &Arc<Pkcs11Kek>, callers: u8) {
    let tasks: Vec<_> = (0..callers)
        .map(|i| {
            let kek = kek.clone();
            tokio::spawn(async move {
                let ct = kek.encrypt(&[i; 32]).await.unwrap();
                assert_eq!(kek.decrypt(kek.key_id(), &ct).await.unwrap(), vec![i; 32]);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_never_open_more_sessions_than_configured() {
    let _guard = pkcs11_lock().await;
    let hsm = SoftHsm::new("pool-bound");
    // Key generation uses a read-write session of its own, outside the pool.
    Token::new(hsm.token_config()).generate_key("kek").unwrap();
    for size in [1, 3] {
        let mut config = hsm.token_config();
        config.sessions = NonZeroUsize::new(size).unwrap();
        let token = Token::new(config);
        let kek = Arc::new(Pkcs11Kek::open(token.clone(), "kek").await.unwrap());
        round_trips(&kek, 48).await;
        let stats = token.pool_stats();
        assert!(
            (1..=size).contains(&stats.open) && stats.peak <= size,
            "pool of {size}: {stats:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_failure_closes_every_session_and_the_next_call_logs_in_again() {
    let _guard = pkcs11_lock().await;
    let hsm = SoftHsm::new("pool-fail");
    let token = Token::new(hsm.token_config());
    token.generate_key("kek").unwrap();
    let kek = Arc::new(Pkcs11Kek::open(token.clone(), "kek").await.unwrap());
    round_trips(&kek, 16).await;
    assert!(token.pool_stats().open >= 1);

    // The token disappears: the call fails, and no session is kept.
    let token_dir = softhsm_token_dir();
    let parked = tempfile::tempdir().unwrap();
    let entries: Vec<_> = std::fs::read_dir(&token_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for e in &entries {
        std::fs::rename(e, parked.path().join(e.file_name().unwrap())).unwrap();
    }
    assert!(
        kek.encrypt(&[1; 32]).await.is_err(),
        "Encrypt without a token"
    );
    assert_eq!(token.pool_stats().open, 0, "sessions kept after a failure");

    // Back: the next call opens the module again, logs in and finds the key.
    for e in &entries {
        std::fs::rename(parked.path().join(e.file_name().unwrap()), e).unwrap();
    }
    round_trips(&kek, 16).await;
    assert!(token.pool_stats().open >= 1);
}
