//! Claim C5 for backups: whoever holds the object store (an operator) can neither
//! read a backup nor slip an altered one past a restore, and no plaintext data key
//! is ever stored or logged.
//!
//! One `palisade up` stack takes real backups through logged dispatches; each attack
//! then works on a copy of the store, and `palisade backup restore` must refuse it
//! and leave no output file (not even a temporary one) behind.

#[path = "backup_support.rs"]
mod backup_support;
#[path = "../e2e/common.rs"]
mod common;
#[path = "../agent/harness.rs"]
mod harness;

use backup_support::*;
use base64::Engine;
use harness::Stack;
use palisade_backup::manifest::Manifest;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A store holding a copy of the stack's store, to attack.
struct Scratch {
    _tmp: tempfile::TempDir,
    store: PathBuf,
    out_dir: PathBuf,
}

impl Scratch {
    fn copy_of(stack: &Stack) -> Scratch {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = tmp.path().join("store");
        let out_dir = tmp.path().join("out");
        std::fs::create_dir_all(&out_dir).expect("out dir");
        for f in files_below(&store_dir(stack)) {
            let rel = f.strip_prefix(store_dir(stack)).expect("below");
            let to = store.join(rel);
            std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
            std::fs::copy(&f, &to).expect("copy");
        }
        Scratch {
            _tmp: tmp,
            store,
            out_dir,
        }
    }

    fn object(&self, out: &Value) -> PathBuf {
        self.store.join(out["object"].as_str().expect("object"))
    }

    fn manifest(&self, out: &Value) -> PathBuf {
        self.store.join(out["manifest"].as_str().expect("manifest"))
    }

    /// Restores and expects a refusal naming `why`, with nothing left in the output
    /// directory.
    fn refused(&self, stack: &Stack, manifest: &Path, kms: &str, why: &str) {
        self.refused_with(stack, manifest, kms, why, &[]);
    }

    fn refused_with(&self, stack: &Stack, manifest: &Path, kms: &str, why: &str, extra: &[&str]) {
        let out = self.out_dir.join("snapshot.db");
        let r = restore_cmd_with(stack, manifest, &self.store, kms, &out, extra);
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{why}: the restore succeeded");
        let left: Vec<_> = std::fs::read_dir(&self.out_dir)
            .expect("out dir")
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(
            left.is_empty(),
            "{why}: files left behind: {left:?} ({stderr})"
        );
        eprintln!("{why}: refused: {}", stderr.trim());
    }
}

fn segment_len(stack: &Stack, out: &Value) -> usize {
    let path = manifest_path(stack, out);
    let m = Manifest::unverified(&std::fs::read(path).expect("manifest")).expect("parse");
    m.segment_size as usize + 16
}

fn header_len(manifest: &Path) -> usize {
    let m = Manifest::unverified(&std::fs::read(manifest).expect("manifest")).expect("parse");
    m.header_bytes as usize
}

async fn take_backup(stack: &Stack) -> Value {
    output(
        &stack
            .execute("etcd.backup", &[])
            .await
            .expect("etcd.backup"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_backups_and_foreign_keys_never_restore() {
    let stack = Stack::start();
    stack
        .etcd
        .put("/registry/secrets/default/db", "hunter2-customer-secret");
    // Over three 1 MiB segments, so that segments can be cut and swapped.
    load_bulk(&stack, 4, 900 * 1024);
    let a = take_backup(&stack).await;
    let b = take_backup(&stack).await;
    let kms = kms_socket(&stack);
    let seg = segment_len(&stack, &a);

    // Control: an untouched copy restores.
    let s = Scratch::copy_of(&stack);
    let ok = s.out_dir.join("snapshot.db");
    let r = restore_cmd(&stack, &s.manifest(&a), &s.store, &kms, &ok);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    std::fs::remove_file(&ok).expect("remove");

    // A flipped byte, in the header and in the body.
    for at in [12usize, 4000, 2 * seg + 100] {
        let s = Scratch::copy_of(&stack);
        let mut obj = std::fs::read(s.object(&a)).expect("object");
        let at = at.min(obj.len() - 1);
        obj[at] ^= 0x20;
        std::fs::write(s.object(&a), &obj).expect("write");
        s.refused(&stack, &s.manifest(&a), &kms, &format!("byte {at} flipped"));
    }

    // Truncated at a segment boundary, and in the middle of a segment.
    let hl = header_len(&Scratch::copy_of(&stack).manifest(&a));
    for cut in [hl + 2 * seg, hl + seg + 7] {
        let s = Scratch::copy_of(&stack);
        let obj = std::fs::read(s.object(&a)).expect("object");
        std::fs::write(s.object(&a), &obj[..cut]).expect("write");
        s.refused(
            &stack,
            &s.manifest(&a),
            &kms,
            &format!("truncated to {cut} bytes"),
        );
    }

    // Two segments swapped.
    {
        let s = Scratch::copy_of(&stack);
        let mut obj = std::fs::read(s.object(&a)).expect("object");
        let first = obj[hl..hl + seg].to_vec();
        obj.copy_within(hl + seg..hl + 2 * seg, hl);
        obj[hl + seg..hl + 2 * seg].copy_from_slice(&first);
        std::fs::write(s.object(&a), &obj).expect("write");
        s.refused(&stack, &s.manifest(&a), &kms, "segments 0 and 1 swapped");
    }

    // Data appended after the last segment.
    {
        let s = Scratch::copy_of(&stack);
        let mut obj = std::fs::read(s.object(&a)).expect("object");
        let last = obj[obj.len() - 100..].to_vec();
        obj.extend_from_slice(&last);
        std::fs::write(s.object(&a), &obj).expect("write");
        s.refused(&stack, &s.manifest(&a), &kms, "data appended");
    }

    // Manifests swapped: backup b's manifest over backup a's object and back.
    {
        let s = Scratch::copy_of(&stack);
        std::fs::copy(s.object(&a), s.object(&b)).expect("copy");
        s.refused(&stack, &s.manifest(&b), &kms, "manifest of another backup");
    }

    // An older backup substituted for a newer one: backup a's manifest and object
    // copied under backup b's names. Every signature holds; the signed manifest is
    // simply not the backup asked for.
    {
        let s = Scratch::copy_of(&stack);
        std::fs::copy(s.manifest(&a), s.manifest(&b)).expect("copy manifest");
        std::fs::copy(s.object(&a), s.object(&b)).expect("copy object");
        s.refused(
            &stack,
            &s.manifest(&b),
            &kms,
            "older backup under the newer name",
        );
    }

    // The older backup under its own name, when the customer asked (from the log)
    // for the newer one's manifest digest; the right digest restores.
    {
        let s = Scratch::copy_of(&stack);
        let logged_b = format!("sha256:{}", b["manifest_sha256"].as_str().expect("digest"));
        s.refused_with(
            &stack,
            &s.manifest(&a),
            &kms,
            "a manifest other than the logged one",
            &["--expect-digest", &logged_b],
        );
        let logged_a = format!("sha256:{}", a["manifest_sha256"].as_str().expect("digest"));
        let ok = s.out_dir.join("snapshot.db");
        let r = restore_cmd_with(
            &stack,
            &s.manifest(&a),
            &s.store,
            &kms,
            &ok,
            &["--expect-digest", &logged_a],
        );
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let said = String::from_utf8_lossy(&r.stdout);
        assert!(said.contains("as logged"), "{said}");
        std::fs::remove_file(&ok).expect("remove");
    }

    // A manifest edited to match a forged object keeps no valid signature.
    {
        let s = Scratch::copy_of(&stack);
        let bytes = std::fs::read(s.manifest(&a)).expect("manifest");
        let mut env: Value = serde_json::from_slice(&bytes).expect("envelope");
        let payload = base64::engine::general_purpose::STANDARD
            .decode(env["payload"].as_str().expect("payload"))
            .expect("b64");
        let mut m: Value = serde_json::from_slice(&payload).expect("manifest json");
        m["etcd_revision"] = Value::from(1);
        env["payload"] = Value::String(
            base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&m).expect("json")),
        );
        std::fs::write(s.manifest(&a), serde_json::to_vec(&env).expect("json")).expect("write");
        s.refused(&stack, &s.manifest(&a), &kms, "manifest edited");
    }

    // A manifest signed by a key that is not the agent's.
    {
        let s = Scratch::copy_of(&stack);
        let keys = tempfile::tempdir().expect("tempdir");
        let forger = palisade_policy::keys::generate("agent", keys.path(), false).expect("keygen");
        let forger = palisade_policy::keys::SigningKey::read(&forger.private).expect("key");
        let m = Manifest::unverified(&std::fs::read(s.manifest(&a)).expect("m")).expect("parse");
        std::fs::write(s.manifest(&a), m.sign(&forger).expect("sign")).expect("write");
        s.refused(
            &stack,
            &s.manifest(&a),
            &kms,
            "manifest signed by an unknown key",
        );
    }

    // Another customer's KEK (a second KMS plugin with its own key) cannot unwrap.
    {
        let s = Scratch::copy_of(&stack);
        let other = OtherKms::start();
        s.refused(&stack, &s.manifest(&a), &other.socket, "another KEK");
    }

    // The data key never appears unwrapped: not in the store, the manifest, the
    // stack's files (log tiles, agent state, configuration), nor anything logged.
    // The customer's plugin unwraps it here, as only the customer can.
    let dek = unwrap_dek(
        &std::fs::read(manifest_path(&stack, &a)).expect("manifest"),
        &kms,
    )
    .await;
    let encodings = [
        dek.clone(),
        hex::encode(&dek).into_bytes(),
        base64::engine::general_purpose::STANDARD
            .encode(&dek)
            .into_bytes(),
    ];
    let mut scanned = 0u64;
    for f in files_below(&stack.dir) {
        if f.extension().is_some_and(|e| e == "sock") {
            continue;
        }
        let bytes = std::fs::read(&f).unwrap_or_default();
        scanned += bytes.len() as u64;
        for e in &encodings {
            assert!(!contains(&bytes, e), "the data key is in {}", f.display());
        }
        // And the object holds no customer value in clear.
        if f.starts_with(store_dir(&stack)) {
            assert!(
                !contains(&bytes, b"hunter2-customer-secret"),
                "{}",
                f.display()
            );
        }
    }
    assert!(
        scanned > 3 * 1024 * 1024,
        "the scan read the backups ({scanned} bytes)"
    );
    let mut stack = stack;
    let logged = stack.up.as_mut().map(|u| {
        u.drain();
        u.seen.join("\n")
    });
    let logged = logged.expect("up's output");
    assert!(
        logged.contains("etcd backup stored"),
        "the agent logged its backups"
    );
    for e in &encodings[1..] {
        assert!(
            !logged.contains(std::str::from_utf8(e).expect("text")),
            "the data key was logged"
        );
    }
}

/// Unwraps the manifest's data key through the customer's plugin.
async fn unwrap_dek(manifest: &[u8], kms: &str) -> Vec<u8> {
    let m = Manifest::unverified(manifest).expect("manifest");
    let wrapped = base64::engine::general_purpose::STANDARD
        .decode(&m.wrapped_key)
        .expect("b64");
    let mut c = palisade_kms::KmsClient::connect(kms).await.expect("kms");
    let key = c
        .decrypt(
            &wrapped,
            &palisade_kms::KeyId::new(m.key_id).expect("key id"),
        )
        .await
        .expect("unwrap");
    assert_eq!(key.len(), 32);
    key.to_vec()
}

/// A second KMS plugin with a key of its own (another customer's KEK).
struct OtherKms {
    child: std::process::Child,
    socket: String,
    _dir: tempfile::TempDir,
}

impl OtherKms {
    fn start() -> OtherKms {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("other.key");
        let made = palisade_cmd(&[
            "kms",
            "keygen",
            "--backend",
            "file",
            "--key-file",
            &key.display().to_string(),
            "--allow-insecure-dev-key",
        ]);
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let path = dir.path().join("kms.sock");
        let socket = format!("unix://{}", path.display());
        let child = common::palisade()
            .args([
                "kms",
                "serve",
                "--listen",
                &socket,
                "--backend",
                "file",
                "--key-file",
                &key.display().to_string(),
                "--allow-insecure-dev-key",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("kms serve");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&path).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the second plugin did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        OtherKms {
            child,
            socket,
            _dir: dir,
        }
    }
}

impl Drop for OtherKms {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
