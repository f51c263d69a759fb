//! `palisade kms serve --config FILE`: a plugin started from a configuration file
//! serves Encrypt and Decrypt; a bad file is refused before anything is served, with
//! an error naming the file and the field; `--config` is never combined with flags.

#![allow(clippy::unwrap_used)] // Tests may unwrap.

#[path = "../../crates/kms/tests/support/mod.rs"]
mod support;

use palisade_kms::KmsClient;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use support::*;

fn palisade() -> Command {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
}

/// `palisade kms serve` as a child; killed when dropped.
struct PluginProcess(Child);

impl Drop for PluginProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the plugin answers Status with "ok", or fails if it exits first. No
/// deadline here: nextest stops a test that hangs.
async fn wait_for_plugin(socket: &str, child: &mut Child) -> KmsClient {
    loop {
        if let Ok(mut c) = KmsClient::connect(socket).await {
            if matches!(c.status().await, Ok(s) if s.healthz == "ok") {
                return c;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the plugin exited with {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A PKCS#11 configuration with the PIN file beside it, named relatively.
fn pkcs11_config(hsm: &SoftHsm, socket: &str, extra_backend: &str) -> String {
    format!(
        "listen = \"{socket}\"\n\
         \n\
         [backend]\n\
         kind = \"pkcs11\"\n\
         module = \"{SOFTHSM_MODULE}\"\n\
         token = \"{}\"\n\
         pin_file = \"kms.pin\"\n\
         key_labels = [\"kek\"]\n\
         {extra_backend}",
        hsm.label
    )
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("kms.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn serve_config(path: &Path, extra: &[&str]) -> Output {
    palisade()
        .args(["kms", "serve", "--config"])
        .arg(path)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_started_from_a_config_file_serves_encrypt_and_decrypt() {
    let hsm = SoftHsm::new("kms-config");
    let keygen = palisade()
        .args(["kms", "keygen", "--backend", "pkcs11", "--pkcs11-module"])
        .arg(SOFTHSM_MODULE)
        .args(["--pkcs11-token", &hsm.label, "--pkcs11-pin-file"])
        .arg(&hsm.pin_file)
        .args(["--key-label", "kek"])
        .output()
        .unwrap();
    assert!(
        keygen.status.success(),
        "{}",
        String::from_utf8_lossy(&keygen.stderr)
    );
    let key_id = String::from_utf8(keygen.stdout).unwrap().trim().to_string();

    let dir = tempfile::tempdir().unwrap();
    write_private(&dir.path().join("kms.pin"), USER_PIN);
    let socket = format!("unix://{}", dir.path().join("kms.sock").display());
    let config = write_config(dir.path(), &pkcs11_config(&hsm, &socket, "sessions = 2\n"));
    // Started from another directory: the relative PIN file is found beside the file.
    let child = palisade()
        .current_dir("/")
        .args(["kms", "serve", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut plugin = PluginProcess(child);
    let mut client = wait_for_plugin(&socket, &mut plugin.0).await;

    let status = client.status().await.unwrap();
    assert_eq!(status.key_id, key_id);
    let (ciphertext, used) = client.encrypt(&[5; 32]).await.unwrap();
    assert_eq!(used.as_str(), key_id);
    let plaintext = client.decrypt(&ciphertext, &used).await.unwrap();
    assert_eq!(plaintext.as_slice(), [5; 32].as_slice());
}

#[test]
fn a_bad_config_file_is_refused_naming_the_field() {
    let hsm = SoftHsm::new("kms-config-bad");
    let dir = tempfile::tempdir().unwrap();
    write_private(&dir.path().join("kms.pin"), USER_PIN);
    let socket = format!("unix://{}", dir.path().join("kms.sock").display());
    let good = pkcs11_config(&hsm, &socket, "");
    let refused = |text: &str, extra: &[&str], want: &[&str]| {
        let path = write_config(dir.path(), text);
        let out = serve_config(&path, extra);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "accepted:\n{text}");
        for w in want {
            assert!(stderr.contains(w), "{w:?} not in: {stderr}");
        }
        assert!(
            !dir.path().join("kms.sock").exists(),
            "a socket was bound for a refused configuration"
        );
    };
    let file = dir.path().join("kms.toml").display().to_string();

    // An unknown key (a typo) is an error, not a silently kept default.
    refused(
        &good.replace("[backend]", "alow_uids = [0]\n\n[backend]"),
        &[],
        &[&file, "unknown field `alow_uids`"],
    );
    refused(
        &good.replace("key_labels", "key_label = \"kek\"\nkey_labels"),
        &[],
        &[&file, "unknown field `key_label`"],
    );
    // Missing backend settings.
    refused(
        &good.replace(&format!("token = \"{}\"\n", hsm.label), ""),
        &[],
        &[&file, "missing field `token`"],
    );
    refused(
        &good.replace("key_labels = [\"kek\"]", "key_labels = []"),
        &[],
        &[&file, "field `backend.key_labels`"],
    );
    // A PIN file that is not there.
    refused(
        &good.replace(
            "pin_file = \"kms.pin\"",
            "pin_file = \"secrets/missing.pin\"",
        ),
        &[],
        &[
            &file,
            "field `backend.pin_file`",
            &dir.path().join("secrets/missing.pin").display().to_string(),
        ],
    );
    // The file backend without its explicit insecure switch.
    refused(
        &format!("listen = \"{socket}\"\n[backend]\nkind = \"file\"\nkey_files = [\"kms.pin\"]\n"),
        &[],
        &[&file, "field `backend.allow_insecure_dev_key`"],
    );
    // --config holds every setting: flags are not combined with it.
    refused(&good, &["--listen", &socket], &["--config", "--listen"]);
    refused(
        &good,
        &["--backend", "file"],
        &["cannot be used with", "--backend"],
    );
}
