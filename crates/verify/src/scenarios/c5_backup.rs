//! C5 for backups: an operator takes an encrypted etcd backup through the gateway;
//! nobody without the customer's key-encryption key can restore it, a tampered
//! object never restores (and leaves no plaintext file), and the data key is nowhere
//! at rest in the clear. The customer's KMS plugin is the one `palisade up` runs for
//! the agent; the verifier's own SoftHSM2 plugin plays "another key".

use super::push;
use crate::{BoxFut, Claim::C5, Ctx, Scenario, Scope};
use anyhow::{anyhow, bail, Context};
use base64::Engine as _;
use palisade_kms::kek::KeyId;
use palisade_kms::KmsClient;
use std::path::{Path, PathBuf};

pub fn add(v: &mut Vec<Scenario>) {
    push(
        v,
        C5,
        Scope::Local,
        "c5-backup-taken-through-the-gateway",
        "etcd.backup through the gateway: logged, listed, and its output is metadata only",
        taken,
    );
    push(
        v,
        C5,
        Scope::Local,
        "c5-backup-needs-the-customer-key",
        "A backup does not restore through another KMS key; it does through the customer's",
        needs_customer_key,
    );
    push(
        v,
        C5,
        Scope::Local,
        "c5-backup-tampering-detected",
        "A flipped byte or a truncated object fails verify and restore, leaving no output file",
        tampered,
    );
    push(
        v,
        C5,
        Scope::Local,
        "c5-backup-older-substituted-refused",
        "An older backup's manifest and object under a newer backup's name, or a manifest other than the logged one, do not restore",
        substituted,
    );
    push(
        v,
        C5,
        Scope::Local,
        "c5-backup-prune-keeps-the-floor",
        "etcd.backup-prune keep_last=3 right after backups deletes nothing younger than the agent's floor",
        prune_floor,
    );
    push(
        v,
        C5,
        Scope::Local,
        "c5-backup-no-plaintext-key-at-rest",
        "The unwrapped data key is in no stored object, manifest, log tile or agent file",
        no_plaintext_key,
    );
}

/// The newest backup's manifest file, taking one through the gateway if none exists.
async fn newest_manifest(cx: &Ctx) -> anyhow::Result<PathBuf> {
    let l = cx.local()?;
    let dir = l.dir.join("backups").join(&cx.cluster);
    let newest = |dir: &Path| -> Option<PathBuf> {
        let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".manifest.json"))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        found.sort();
        found.pop().map(|(_, p)| p)
    };
    if let Some(p) = newest(&dir) {
        return Ok(p);
    }
    let (status, op) = cx.op_run("etcd.backup", &[]).await?;
    if status != 200 || op["status"] != "succeeded" {
        bail!("etcd.backup did not succeed: {status} {op}");
    }
    newest(&dir).ok_or_else(|| anyhow!("no manifest in {}", dir.display()))
}

fn customer_socket(cx: &Ctx) -> anyhow::Result<String> {
    Ok(format!(
        "unix://{}",
        cx.local()?.dir.join("kms/kms.sock").display()
    ))
}

/// `palisade backup restore`, returning (success, output text).
fn restore(
    cx: &Ctx,
    manifest: &Path,
    store: &Path,
    socket: &str,
    out: &Path,
) -> anyhow::Result<(bool, String)> {
    restore_with(cx, manifest, store, socket, out, &[])
}

/// [`restore`] with more arguments (e.g. `--expect-digest`).
fn restore_with(
    cx: &Ctx,
    manifest: &Path,
    store: &Path,
    socket: &str,
    out: &Path,
    extra: &[&str],
) -> anyhow::Result<(bool, String)> {
    let l = cx.local()?;
    let o = std::process::Command::new(&l.exe)
        .arg("backup")
        .arg("restore")
        .arg("--manifest")
        .arg(manifest)
        .arg("--store")
        .arg(store)
        .arg("--kms-socket")
        .arg(socket)
        .arg("--agent-key")
        .arg(l.dir.join("agent/keys/agent.pub"))
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()?;
    Ok((
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    ))
}

fn no_files_left(dir: &Path) -> anyhow::Result<()> {
    let left: Vec<String> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if !left.is_empty() {
        bail!("files left in {}: {left:?}", dir.display());
    }
    Ok(())
}

fn short(text: &str) -> String {
    text.lines()
        .last()
        .unwrap_or("")
        .chars()
        .take(160)
        .collect()
}

fn taken(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let (status, op) = cx.op_run("etcd.backup", &[]).await?;
        if status != 200 || op["status"] != "succeeded" {
            bail!("etcd.backup: {status} {op}");
        }
        let out = &op["output"];
        let digest = out["manifest_sha256"]
            .as_str()
            .ok_or_else(|| anyhow!("no manifest_sha256 in the output: {out}"))?
            .to_string();
        let text = out.to_string();
        if text.contains(&cx.canary) {
            bail!("the backup's output carries etcd content");
        }
        let result_index = op["result_index"]
            .as_u64()
            .ok_or_else(|| anyhow!("the result was not logged: {op}"))?;
        let event = cx.logged_event(result_index).await?;
        if event["kind"] != "result" || event["outcome"] != "succeeded" {
            bail!("the logged result is {event}");
        }
        let (status, list) = cx.op_run("etcd.backups", &[]).await?;
        if status != 200 || !list["output"].to_string().contains(&digest) {
            bail!("etcd.backups does not list manifest {digest}: {list}");
        }
        Ok(vec![
            format!("backup manifest sha256:{digest}"),
            format!(
                "result logged at index {result_index} (output digest {})",
                event["output_digest"]
            ),
            "etcd.backups lists it".into(),
        ])
    })
}

fn needs_customer_key(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let manifest = newest_manifest(cx).await?;
        let store = l.dir.join("backups");
        let out_dir = cx.scratch.join("restore-other-key");
        std::fs::create_dir_all(&out_dir)?;
        let (ok, text) = restore(
            cx,
            &manifest,
            &store,
            &l.kms.socket,
            &out_dir.join("snap.db"),
        )?;
        if ok {
            bail!("restored through another KMS key: {text}");
        }
        no_files_left(&out_dir)?;
        let good_dir = cx.scratch.join("restore-customer-key");
        std::fs::create_dir_all(&good_dir)?;
        let out = good_dir.join("snap.db");
        let (ok, good) = restore(cx, &manifest, &store, &customer_socket(cx)?, &out)?;
        if !ok {
            bail!("the customer's key did not restore it: {good}");
        }
        let size = std::fs::metadata(&out)?.len();
        std::fs::remove_file(&out)?;
        Ok(vec![
            format!("through the verifier's SoftHSM2 key: refused ({}), no file left", short(&text)),
            format!("through the customer's plugin: restored a {size}-byte etcd snapshot (trailer checked)"),
        ])
    })
}

fn tampered(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let manifest = newest_manifest(cx).await?;
        let m = palisade_backup::manifest::Manifest::unverified(&std::fs::read(&manifest)?)
            .ok_or_else(|| anyhow!("not a manifest"))?;
        let mut evidence = Vec::new();
        for (what, damage) in [("flipped byte", 0u8), ("truncated", 1u8)] {
            // A copy of the store: the deployment's backups stay intact.
            let store = cx.scratch.join(format!("store-{damage}"));
            let object = store.join(&m.object);
            std::fs::create_dir_all(object.parent().context("object dir")?)?;
            let mut bytes = std::fs::read(l.dir.join("backups").join(&m.object))?;
            if damage == 0 {
                let i = bytes.len() / 2;
                bytes[i] ^= 0x01;
            } else {
                bytes.truncate(bytes.len() - 17);
            }
            std::fs::write(&object, &bytes)?;
            let v = std::process::Command::new(&l.exe)
                .arg("backup")
                .arg("verify")
                .arg("--manifest")
                .arg(&manifest)
                .arg("--store")
                .arg(&store)
                .output()?;
            if v.status.success() {
                bail!("backup verify accepted a {what} object");
            }
            let out_dir = cx.scratch.join(format!("restore-{damage}"));
            std::fs::create_dir_all(&out_dir)?;
            let (ok, text) = restore(
                cx,
                &manifest,
                &store,
                &customer_socket(cx)?,
                &out_dir.join("snap.db"),
            )?;
            if ok {
                bail!("restored a {what} object: {text}");
            }
            no_files_left(&out_dir)?;
            evidence.push(format!(
                "{what}: verify and restore refuse ({}), no file left",
                short(&text)
            ));
        }
        Ok(evidence)
    })
}

/// An `etcd.backup` run straight at the agent (logged like any dispatch; the
/// gateway's 4/h limit is left to the other scenarios), returning its output.
async fn agent_backup(cx: &Ctx) -> anyhow::Result<serde_json::Value> {
    let done = cx.local()?.execute("etcd.backup", &[]).await?;
    if done.result.outcome != palisade_agent::dispatch::ResultOutcome::Succeeded {
        bail!(
            "etcd.backup: {:?} {:?}",
            done.result.outcome,
            done.result.error
        );
    }
    done.result
        .output
        .ok_or_else(|| anyhow!("etcd.backup returned no output"))
}

fn out_str<'a>(out: &'a serde_json::Value, field: &str) -> anyhow::Result<&'a str> {
    out[field]
        .as_str()
        .ok_or_else(|| anyhow!("no {field} in the etcd.backup output: {out}"))
}

fn substituted(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let older = agent_backup(cx).await?;
        let newer = agent_backup(cx).await?;
        let real = l.dir.join("backups");
        // The insider's copy of the store: the older backup under the newer's names.
        let store = super::scratch(cx, "store-substituted")?;
        super::copy_dir(&real, &store)?;
        for field in ["manifest", "object"] {
            std::fs::copy(
                real.join(out_str(&older, field)?),
                store.join(out_str(&newer, field)?),
            )?;
        }
        let socket = customer_socket(cx)?;
        let out_dir = super::scratch(cx, "restore-substituted")?;
        let newer_manifest = store.join(out_str(&newer, "manifest")?);
        let (ok, text) = restore(
            cx,
            &newer_manifest,
            &store,
            &socket,
            &out_dir.join("snap.db"),
        )?;
        if ok {
            bail!("the older backup restored as the newer one: {text}");
        }
        no_files_left(&out_dir)?;
        let mut ev = vec![format!(
            "older backup {} under the name of {}: refused ({}), no file left",
            out_str(&older, "backup_id")?,
            out_str(&newer, "backup_id")?,
            short(&text)
        )];
        // The older backup under its own name, but the customer asks for the digest
        // the log recorded for the newer one.
        let logged_newer = format!("sha256:{}", out_str(&newer, "manifest_sha256")?);
        let (ok, text) = restore_with(
            cx,
            &real.join(out_str(&older, "manifest")?),
            &real,
            &socket,
            &out_dir.join("snap.db"),
            &["--expect-digest", &logged_newer],
        )?;
        if ok {
            bail!("a manifest other than the logged one restored: {text}");
        }
        no_files_left(&out_dir)?;
        ev.push(format!(
            "older manifest with --expect-digest of the newer (as logged): refused ({})",
            short(&text)
        ));
        // Control: the newer one, as logged, restores.
        let (ok, text) = restore_with(
            cx,
            &real.join(out_str(&newer, "manifest")?),
            &real,
            &socket,
            &out_dir.join("snap.db"),
            &["--expect-digest", &logged_newer],
        )?;
        if !ok {
            bail!("the logged backup did not restore: {text}");
        }
        std::fs::remove_file(out_dir.join("snap.db"))?;
        ev.push("the newer backup with its logged digest restores".into());
        Ok(ev)
    })
}

fn prune_floor(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let dir = l.dir.join("backups").join(&cx.cluster);
        let manifests = || -> anyhow::Result<Vec<String>> {
            // No backup taken yet: the cluster's directory does not exist.
            if !dir.exists() {
                return Ok(Vec::new());
            }
            let mut v: Vec<String> = std::fs::read_dir(&dir)?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".manifest.json"))
                .collect();
            v.sort();
            Ok(v)
        };
        // More backups than keep_last, all seconds old.
        while manifests()?.len() < 5 {
            agent_backup(cx).await?;
        }
        let before = manifests()?;
        let done = l
            .execute("etcd.backup-prune", &[("keep_last", "3")])
            .await?;
        if done.result.outcome != palisade_agent::dispatch::ResultOutcome::Succeeded {
            bail!(
                "etcd.backup-prune: {:?} {:?}",
                done.result.outcome,
                done.result.error
            );
        }
        let out = done
            .result
            .output
            .ok_or_else(|| anyhow!("etcd.backup-prune returned no output"))?;
        cx.record_output(out.to_string());
        let deleted = out["deleted"].as_array().map_or(usize::MAX, Vec::len);
        let after = manifests()?;
        if deleted != 0 || after != before {
            bail!(
                "prune deleted seconds-old backups: {} before, {} after; output {}",
                before.len(),
                after.len(),
                short(&out.to_string())
            );
        }
        Ok(vec![
            format!(
                "{} backups, all seconds old; etcd.backup-prune keep_last=3 (intent {})",
                before.len(),
                done.intent_index
            ),
            format!(
                "deleted none (floor: {} days, at least {} kept); every manifest still stored",
                out["min_age_days"], out["min_count"]
            ),
        ])
    })
}

fn no_plaintext_key(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let manifest = newest_manifest(cx).await?;
        let m = palisade_backup::manifest::Manifest::unverified(&std::fs::read(&manifest)?)
            .ok_or_else(|| anyhow!("not a manifest"))?;
        let wrapped = base64::engine::general_purpose::STANDARD.decode(&m.wrapped_key)?;
        let mut kms = KmsClient::connect(&customer_socket(cx)?)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        let key_id = KeyId::new(m.key_id.clone()).map_err(|e| anyhow!("{e}"))?;
        let key = kms
            .decrypt(&wrapped, &key_id)
            .await
            .map_err(|e| anyhow!("the customer's plugin could not unwrap: {e}"))?;
        if key.len() != 32 {
            bail!("the data key is {} bytes", key.len());
        }
        let needles = [
            key.to_vec(),
            hex::encode(&key).into_bytes(),
            base64::engine::general_purpose::STANDARD
                .encode(&key)
                .into_bytes(),
        ];
        let mut files = 0;
        let mut stack = vec![
            l.dir.join("backups"),
            l.dir.join("log"),
            l.dir.join("agent"),
            l.dir.join("gateway"),
        ];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir)?.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(bytes) = std::fs::read(&p) {
                    files += 1;
                    for n in &needles {
                        if bytes.windows(n.len()).any(|w| w == n.as_slice()) {
                            bail!("the data key is in {}", p.display());
                        }
                    }
                }
            }
        }
        Ok(vec![
            format!("data key unwrapped through the customer's plugin ({})", m.key_id),
            format!("searched {files} files (store, log, agent, gateway) for it raw, hex and base64: absent"),
        ])
    })
}
