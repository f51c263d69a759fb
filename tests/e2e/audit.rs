//! `palisade audit` as a customer runs it: verify a log directory with a state file,
//! see a later run prove the log only grew, see a damaged tile named with exit status
//! 1, and round-trip an offline proof.

mod common;

use common::palisade;
use palisade_tlog::note::{KeyType, SignerKey};
use palisade_tlog_service::sequencer::{self, BatchConfig, WitnessSet};
use palisade_tlog_service::store::TileStore;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

const ORIGIN: &str = "palisade.test/clusters/c1";

fn entry(i: u64) -> String {
    format!("{{\"event\":{i}}}")
}

/// Appends entries `from..to` to the log in `dir` (concurrently, so in batches),
/// then stops its sequencer. Returns each entry by the index it got.
async fn append(dir: &Path, key: &SignerKey, from: u64, to: u64) -> BTreeMap<u64, String> {
    let store = TileStore::local(dir).expect("store");
    let log = sequencer::start(
        ORIGIN,
        key.clone(),
        store,
        BatchConfig::default(),
        WitnessSet::default(),
    )
    .await
    .expect("start the sequencer");
    let mut appends = tokio::task::JoinSet::new();
    for i in from..to {
        let log = log.clone();
        appends.spawn(async move {
            let receipt = log.append(entry(i).into()).await.expect("append");
            (receipt.index, entry(i))
        });
    }
    let mut by_index = BTreeMap::new();
    while let Some(done) = appends.join_next().await {
        let (index, entry) = done.expect("append task");
        by_index.insert(index, entry);
    }
    assert_eq!(
        by_index.keys().copied().collect::<Vec<_>>(),
        (from..to).collect::<Vec<_>>()
    );
    by_index
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn customer_verifies_their_log_and_checks_a_proof() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, state) = (tmp.path().join("log"), tmp.path().join("c1.state"));
    let key = SignerKey::generate(ORIGIN, KeyType::Ed25519).expect("key");
    let key_file = tmp.path().join("log.pub");
    std::fs::write(&key_file, format!("{}\n", key.verifier())).expect("key file");
    let log_key = format!("@{}", key_file.display());
    let verify = || {
        palisade()
            .args(["audit", "verify", "--dir"])
            .arg(&dir)
            .args(["--origin", ORIGIN, "--log-key", &log_key, "--state"])
            .arg(&state)
            .output()
            .expect("run palisade audit verify")
    };

    append(&dir, &key, 0, 300).await;
    let out = verify();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("300 entries"), "{stdout}");
    assert!(stdout.contains("first verification"), "{stdout}");

    let entries = append(&dir, &key, 300, 400).await;
    let out = verify();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("consistent with the previously verified size 300"),
        "{stdout}"
    );

    // A damaged tile: exit status 1, and the message names it.
    let tile = dir.join("tile/0/000");
    let original = std::fs::read(&tile).expect("tile");
    let mut damaged = original.clone();
    damaged[100] ^= 0x01;
    std::fs::write(&tile, damaged).expect("write");
    let out = verify();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("tile/0/000"),
        "{stderr}"
    );
    std::fs::write(&tile, original).expect("restore");

    // A wrong log key: exit status 1.
    let other = SignerKey::generate(ORIGIN, KeyType::Ed25519).expect("key");
    let out = palisade()
        .args(["audit", "verify", "--dir"])
        .arg(&dir)
        .args([
            "--origin",
            ORIGIN,
            "--log-key",
            &other.verifier().to_string(),
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));

    // An offline proof for entry 321, checked with the entry's text.
    let proof = tmp.path().join("321.proof");
    let entry_out = tmp.path().join("321.entry");
    let out = palisade()
        .args(["audit", "proof", "--index", "321", "--dir"])
        .arg(&dir)
        .args(["--origin", ORIGIN, "--log-key", &log_key, "--out"])
        .arg(&proof)
        .arg("--entry-out")
        .arg(&entry_out)
        .output()
        .expect("run palisade audit proof");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let entry_321 = &entries[&321];
    assert_eq!(
        &std::fs::read_to_string(&entry_out).expect("entry"),
        entry_321
    );
    let check = |entry_text: &str| {
        palisade()
            .args(["audit", "check-proof"])
            .arg(&proof)
            .args(["--origin", ORIGIN, "--log-key", &log_key])
            .args(["--entry-text", entry_text])
            .output()
            .expect("run palisade audit check-proof")
    };
    let out = check(entry_321);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("entry 321") && stdout.contains("size 400"),
        "{stdout}"
    );
    let out = check(&entries[&322]);
    assert_eq!(out.status.code(), Some(1));
}
