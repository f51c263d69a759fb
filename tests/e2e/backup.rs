//! Encrypted etcd backups end to end (claim C5): `palisade up` (with its KMS plugin
//! holding the development KEK), data written to the etcd the agent supervises,
//! `etcd.backup` run by an on-call operator through the gateway (logged, dispatched,
//! signed), the backup restored by the customer with their KMS plugin, and the
//! restored snapshot turned back into a working etcd by the standard etcd tools.

#[path = "../claims/backup_support.rs"]
mod backup_support;
#[path = "../e2e/common.rs"]
mod common;
#[path = "../agent/harness.rs"]
mod harness;

use backup_support::*;
use harness::Stack;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_through_the_gateway_restores_into_a_working_etcd() {
    let stack = Stack::start();
    stack
        .etcd
        .put("/registry/configmaps/default/app", "customer-config-7c1e");
    load_bulk(&stack, 3, 700 * 1024);

    // An operator on call asks the gateway; the gateway logs the intent, dispatches,
    // and logs the result (whose output digest commits to the manifest digest).
    let gw = stack.gateway();
    let token = gw.dev_token(&stack.operator()).await;
    let (status, mut op) = gw
        .run(
            &token,
            "demo",
            "etcd.backup",
            Some("demo-0"),
            &[],
            "INC-42",
            "nightly backup check",
        )
        .await;
    assert!(status == 200 || status == 202, "{status}: {op}");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while op["status"] == "running" {
        assert!(
            std::time::Instant::now() < deadline,
            "the backup did not finish: {op}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let id = op["id"].as_str().expect("operation id").to_string();
        op = gw
            .call("GET", &format!("/v1/operations/{id}"), Some(&token), None)
            .await
            .1;
    }
    assert_eq!(op["status"], "succeeded", "{op}");
    assert!(
        op["result_index"].as_u64().is_some(),
        "the result is logged: {op}"
    );
    let out = &op["output"];
    let manifest = manifest_path(&stack, out);
    assert_eq!(
        sha256_hex(&std::fs::read(&manifest).expect("manifest")),
        out["manifest_sha256"].as_str().expect("digest"),
        "the logged output names the stored manifest's digest"
    );
    assert!(
        out["snapshot_bytes"]
            .as_u64()
            .is_some_and(|b| b > 2 * 1024 * 1024),
        "{out}"
    );
    assert!(
        out.get("wrapped_key").is_none(),
        "no key material in the output: {out}"
    );

    // The backup is listed, with the same manifest digest.
    let listed = output(
        &stack
            .execute("etcd.backups", &[])
            .await
            .expect("etcd.backups"),
    );
    assert_eq!(
        listed["backups"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_eq!(
        listed["backups"][0]["manifest_sha256"],
        out["manifest_sha256"]
    );
    assert_eq!(
        listed["invalid"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );

    // An auditor checks it without any key.
    let verify = palisade_cmd(&[
        "backup",
        "verify",
        "--manifest",
        &manifest.display().to_string(),
        "--store",
        &store_dir(&stack).display().to_string(),
        "--agent-key",
        &agent_pub(&stack).display().to_string(),
    ]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // The customer restores with their KMS plugin.
    let work = tempfile::tempdir().expect("tempdir");
    let snap = work.path().join("restored.db");
    let restored = restore_cmd(
        &stack,
        &manifest,
        &store_dir(&stack),
        &kms_socket(&stack),
        &snap,
    );
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    assert_eq!(
        std::fs::metadata(&snap).expect("restored file").len(),
        out["snapshot_bytes"].as_u64().expect("size")
    );

    // The standard tool restores it into a new data dir; etcd starts on it and
    // serves the data.
    let value = etcd_from_snapshot(&snap, work.path(), "/registry/configmaps/default/app");
    assert_eq!(value.as_deref(), Some("customer-config-7c1e"));

    // Pruning (the default policy allows keep_last >= 3): three more backups, then
    // keep_last 3. All four are seconds old, younger than the agent's floor (7 days,
    // at least 3 kept), so nothing goes, and the output says so.
    for _ in 0..3 {
        output(
            &stack
                .execute("etcd.backup", &[])
                .await
                .expect("etcd.backup"),
        );
    }
    let pruned = output(
        &stack
            .execute("etcd.backup-prune", &[("keep_last", "3")])
            .await
            .expect("prune"),
    );
    assert_eq!(
        pruned["deleted"].as_array().map(Vec::len),
        Some(0),
        "{pruned}"
    );
    assert_eq!(pruned["kept"], 4, "{pruned}");
    assert_eq!(pruned["min_age_days"], 7, "{pruned}");
    assert_eq!(pruned["min_count"], 3, "{pruned}");
    let listed = output(
        &stack
            .execute("etcd.backups", &[])
            .await
            .expect("etcd.backups"),
    );
    assert_eq!(
        listed["backups"].as_array().map(Vec::len),
        Some(4),
        "{listed}"
    );
    assert!(manifest.exists(), "a seconds-old backup was pruned");
}
