//! C5: no plaintext key-encryption key, nothing readable in etcd. The KMS plugin on
//! SoftHSM2 is attacked through its socket and the KEK through PKCS#11; Secrets are
//! written to etcd the way kube-apiserver does with KMS v2 and `scan` finds only
//! envelopes. (Backup scenarios are added once `etcd.backup` exists in the agent.)

use super::push;
use crate::deploy::{HSM_TOKEN, KEK_LABEL, SOFTHSM_MODULE};
use crate::{BoxFut, Claim::C5, Ctx, Scenario, Scope};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use anyhow::{anyhow, bail};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use palisade_kms::kek::KeyId;
use palisade_kms::{pb, KmsClient};
use prost::Message;
use std::collections::HashMap;

pub fn add(v: &mut Vec<Scenario>) {
    push(
        v,
        C5,
        Scope::Any,
        "c5-plugin-healthy-v2-hsm-key",
        "The plugin answers Status v2/ok with the HSM key's id",
        status,
    );
    push(
        v,
        C5,
        Scope::Any,
        "c5-plugin-round-trip",
        "Encrypt then Decrypt of a DEK seed round-trips through the HSM",
        round_trip,
    );
    push(
        v,
        C5,
        Scope::Any,
        "c5-plugin-refuses-wrong-key-id",
        "Decrypt under a key_id the plugin never issued fails",
        wrong_key_id,
    );
    push(
        v,
        C5,
        Scope::Any,
        "c5-plugin-refuses-tampered-ciphertext",
        "Decrypt of a modified ciphertext fails (authenticated)",
        tampered,
    );
    push(
        v,
        C5,
        Scope::Any,
        "c5-tampered-ciphertext-is-invalid-argument-not-an-outage",
        "A ciphertext with a bad GCM tag is INVALID_ARGUMENT, and Status stays ok",
        tampered_is_bad_data,
    );
    push(
        v,
        C5,
        Scope::Any,
        "c5-plugin-refuses-oversize",
        "Oversize Encrypt plaintext and Decrypt ciphertext are refused",
        oversize,
    );
    push(
        v,
        C5,
        Scope::Local,
        "c5-kek-attributes-non-extractable",
        "The KEK is sensitive, non-extractable, always sensitive, never extractable (PKCS#11)",
        attributes,
    );
    push(
        v,
        C5,
        Scope::Local,
        "c5-kek-value-unreadable",
        "C_GetAttributeValue(CKA_VALUE) of the KEK yields nothing",
        value_unreadable,
    );
    push(
        v,
        C5,
        Scope::Local,
        "c5-kek-cannot-be-wrapped-out",
        "C_WrapKey of the KEK with an attacker's extractable key fails",
        wrap_out,
    );
    push(
        v,
        C5,
        Scope::Local,
        "c5-kek-cannot-become-extractable",
        "Copying the KEK as extractable or flipping its attributes fails",
        copy_out,
    );
    push(
        v,
        C5,
        Scope::Local,
        "c5-etcd-holds-only-envelopes",
        "Secrets written as kube-apiserver does (KMS v2) leave only envelopes in etcd (scan)",
        envelopes,
    );
    push(
        v,
        C5,
        Scope::Local,
        "c5-scan-detects-plaintext",
        "The etcd scan has teeth: a plaintext Secret is reported (key only, never the value)",
        scan_teeth,
    );
    push(
        v,
        C5,
        Scope::Local,
        "c5-dev-file-key-refused",
        "The development file backend is refused without its explicit flag",
        dev_file_key,
    );
}

async fn client(cx: &Ctx) -> anyhow::Result<KmsClient> {
    let socket = cx
        .kms_socket
        .as_deref()
        .ok_or_else(|| anyhow!("no KMS plugin socket to attack ([kms] socket with --against)"))?;
    KmsClient::connect(socket)
        .await
        .map_err(|e| anyhow!("connect to the plugin: {e}"))
}

fn status(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let s = client(cx)
            .await?
            .status()
            .await
            .map_err(|e| anyhow!("{e}"))?;
        if s.healthz != "ok" || s.version != "v2" {
            bail!("status: {s:?}");
        }
        if let Some(l) = &cx.local {
            if s.key_id.as_str() != l.kms.key_id
                || !l
                    .kms
                    .key_id
                    .starts_with(&format!("pkcs11:{HSM_TOKEN}/{KEK_LABEL}/"))
            {
                bail!(
                    "the plugin does not use the HSM's key: {}",
                    s.key_id.as_str()
                );
            }
        }
        Ok(vec![format!(
            "Status: version {} healthz {} key_id {}",
            s.version,
            s.healthz,
            s.key_id.as_str()
        )])
    })
}

fn round_trip(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut c = client(cx).await?;
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| anyhow!("{e}"))?;
        let (ct, key_id) = c.encrypt(&seed).await.map_err(|e| anyhow!("{e}"))?;
        if ct.windows(32).any(|w| w == seed) {
            bail!("the ciphertext contains the seed");
        }
        let back = c.decrypt(&ct, &key_id).await.map_err(|e| anyhow!("{e}"))?;
        if back.as_slice() != seed {
            bail!("decrypt returned other bytes");
        }
        Ok(vec![
            format!(
                "32-byte seed -> {} byte ciphertext under {}",
                ct.len(),
                key_id.as_str()
            ),
            "decrypts back to the seed".into(),
        ])
    })
}

fn wrong_key_id(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut c = client(cx).await?;
        let (ct, _) = c.encrypt(&[7u8; 32]).await.map_err(|e| anyhow!("{e}"))?;
        let other = KeyId::new(format!("pkcs11:{HSM_TOKEN}/{KEK_LABEL}/not-a-real-key"))
            .map_err(|e| anyhow!("{e}"))?;
        match c.decrypt(&ct, &other).await {
            Err(e) => Ok(vec![format!(
                "Decrypt under an unknown key_id: {}",
                super::short(&e.to_string())
            )]),
            Ok(_) => bail!("decrypted under a key_id it never issued"),
        }
    })
}

fn tampered(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut c = client(cx).await?;
        let (mut ct, key_id) = c.encrypt(&[9u8; 32]).await.map_err(|e| anyhow!("{e}"))?;
        if let Some(last) = ct.last_mut() {
            *last ^= 1;
        }
        match c.decrypt(&ct, &key_id).await {
            Err(e) => Ok(vec![format!(
                "one bit flipped: Decrypt refused ({})",
                super::short(&e.to_string())
            )]),
            Ok(_) => bail!("a modified ciphertext decrypted"),
        }
    })
}

/// kube-apiserver and monitoring read UNAVAILABLE as "the plugin is down": a bad
/// ciphertext (SoftHSM2 answers a bad GCM tag with CKR_GENERAL_ERROR) must be told
/// apart from a broken HSM and answered INVALID_ARGUMENT, with health left ok.
fn tampered_is_bad_data(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut c = client(cx).await?;
        let (ct, key_id) = c.encrypt(&[11u8; 32]).await.map_err(|e| anyhow!("{e}"))?;
        let mut bad = ct.clone();
        if let Some(last) = bad.last_mut() {
            *last ^= 1;
        }
        let answer = c
            .raw()
            .decrypt(pb::DecryptRequest {
                ciphertext: bad,
                uid: "verify".into(),
                key_id: key_id.to_string(),
                annotations: HashMap::new(),
            })
            .await;
        let code = match answer {
            Ok(_) => bail!("a ciphertext with a flipped tag bit decrypted"),
            Err(e) if e.code() == tonic::Code::InvalidArgument => e.code(),
            Err(e) => bail!(
                "a bad ciphertext was answered {:?} ({}), not InvalidArgument: it reads as a plugin outage",
                e.code(),
                super::short(e.message())
            ),
        };
        let status = c.status().await.map_err(|e| anyhow!("{e}"))?;
        if status.healthz != "ok" {
            bail!("Status after a bad ciphertext: {}", status.healthz);
        }
        let back = c.decrypt(&ct, &key_id).await.map_err(|e| anyhow!("{e}"))?;
        if back.as_slice() != [11u8; 32] {
            bail!("the good ciphertext no longer decrypts to its seed");
        }
        Ok(vec![
            format!("flipped tag bit: Decrypt answered {code:?}"),
            format!("Status afterwards: healthz {}", status.healthz),
            "the untouched ciphertext still decrypts".into(),
        ])
    })
}

fn oversize(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut c = client(cx).await?;
        let key_id = c.status().await.map_err(|e| anyhow!("{e}"))?.key_id;
        let e = c
            .raw()
            .encrypt(pb::EncryptRequest {
                plaintext: vec![1u8; 4096],
                uid: "verify".into(),
            })
            .await;
        let Err(e) = e else {
            bail!("a 4096-byte plaintext was encrypted")
        };
        let d = c
            .raw()
            .decrypt(pb::DecryptRequest {
                ciphertext: vec![1u8; 4096],
                uid: "verify".into(),
                key_id: key_id.to_string(),
                annotations: HashMap::new(),
            })
            .await;
        let Err(d) = d else {
            bail!("a 4096-byte ciphertext was accepted")
        };
        Ok(vec![
            format!(
                "Encrypt 4096 B: {:?} {}",
                e.code(),
                super::short(e.message())
            ),
            format!(
                "Decrypt 4096 B: {:?} {}",
                d.code(),
                super::short(d.message())
            ),
        ])
    })
}

/// An attacker's PKCS#11 session on the customer's token, logged in with the user PIN.
fn session(cx: &Ctx) -> anyhow::Result<(Pkcs11, Session, ObjectHandle)> {
    let l = cx.local()?;
    let ctx = Pkcs11::new(SOFTHSM_MODULE)?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    let slot = ctx
        .get_slots_with_token()?
        .into_iter()
        .find(|s| {
            ctx.get_token_info(*s)
                .map(|i| i.label().trim_end() == HSM_TOKEN)
                .unwrap_or(false)
        })
        .ok_or_else(|| anyhow!("token {HSM_TOKEN} not found"))?;
    let session = ctx.open_rw_session(slot)?;
    session.login(UserType::User, Some(&AuthPin::from(l.kms.pin.clone())))?;
    let found = session.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Label(KEK_LABEL.as_bytes().to_vec()),
    ])?;
    let kek = *found
        .first()
        .ok_or_else(|| anyhow!("no KEK labelled {KEK_LABEL}"))?;
    Ok((ctx, session, kek))
}

fn with_session<T>(
    cx: &Ctx,
    f: impl FnOnce(&Session, ObjectHandle) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let (ctx, s, kek) = session(cx)?;
    let r = f(&s, kek);
    drop(s);
    let _ = ctx.finalize();
    r
}

fn attributes(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        with_session(cx, |s, kek| {
            let attrs = s.get_attributes(
                kek,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                ],
            )?;
            let mut ev = Vec::new();
            for a in &attrs {
                let (name, ok, val) = match a {
                    Attribute::Sensitive(b) => ("CKA_SENSITIVE", *b, *b),
                    Attribute::Extractable(b) => ("CKA_EXTRACTABLE", !*b, *b),
                    Attribute::AlwaysSensitive(b) => ("CKA_ALWAYS_SENSITIVE", *b, *b),
                    Attribute::NeverExtractable(b) => ("CKA_NEVER_EXTRACTABLE", *b, *b),
                    other => bail!("unexpected attribute {other:?}"),
                };
                if !ok {
                    bail!("{name} = {val}");
                }
                ev.push(format!("{name} = {val}"));
            }
            if attrs.len() != 4 {
                bail!("only {} attributes answered", attrs.len());
            }
            Ok(ev)
        })
    })
}

fn value_unreadable(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        with_session(cx, |s, kek| {
            match s.get_attributes(kek, &[AttributeType::Value]) {
                Err(e) => Ok(vec![format!("CKA_VALUE: {e}")]),
                Ok(v)
                    if v.iter()
                        .all(|a| !matches!(a, Attribute::Value(b) if !b.is_empty())) =>
                {
                    Ok(vec!["CKA_VALUE: no value returned".into()])
                }
                Ok(_) => bail!("CKA_VALUE of the KEK was readable"),
            }
        })
    })
}

fn wrap_out(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        with_session(cx, |s, kek| {
            let wrapper = s.generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32.into()),
                    Attribute::Token(false),
                    Attribute::Wrap(true),
                    Attribute::Extractable(true),
                    Attribute::Sensitive(false),
                ],
            )?;
            let a = s.wrap_key(&Mechanism::AesKeyWrap, wrapper, kek);
            let b = s.wrap_key(&Mechanism::AesKeyWrapPad, wrapper, kek);
            match (a, b) {
                (Err(a), Err(b)) => Ok(vec![
                    format!("C_WrapKey AES-KW: {a}"),
                    format!("C_WrapKey AES-KWP: {b}"),
                ]),
                _ => bail!("C_WrapKey exported the KEK"),
            }
        })
    })
}

fn copy_out(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        with_session(cx, |s, kek| {
            let attempts = [
                (
                    "C_CopyObject extractable",
                    s.copy_object(kek, &[Attribute::Extractable(true)])
                        .map(|_| ()),
                ),
                (
                    "C_CopyObject non-sensitive",
                    s.copy_object(kek, &[Attribute::Sensitive(false)])
                        .map(|_| ()),
                ),
                (
                    "C_SetAttributeValue extractable",
                    s.update_attributes(kek, &[Attribute::Extractable(true)]),
                ),
                (
                    "C_SetAttributeValue non-sensitive",
                    s.update_attributes(kek, &[Attribute::Sensitive(false)]),
                ),
            ];
            let mut ev = Vec::new();
            for (what, r) in attempts {
                match r {
                    Err(e) => ev.push(format!("{what}: {e}")),
                    Ok(()) => bail!("{what} succeeded"),
                }
            }
            Ok(ev)
        })
    })
}

/// kube-apiserver's KMS v2 storage format (EncryptedObject).
#[derive(Clone, PartialEq, prost::Message)]
struct EncryptedObject {
    #[prost(bytes = "vec", tag = "1")]
    encrypted_data: Vec<u8>,
    #[prost(string, tag = "2")]
    key_id: String,
    #[prost(bytes = "vec", tag = "3")]
    encrypted_dek_source: Vec<u8>,
    #[prost(map = "string, bytes", tag = "4")]
    annotations: HashMap<String, Vec<u8>>,
    #[prost(int32, tag = "5")]
    encrypted_dek_source_type: i32,
}

/// HKDF-SHA256 from the seed with a random info, then AES-256-GCM with the etcd key
/// as additional data (KMS v2 `HKDF_SHA256_XNONCE_AES_GCM_SEED`).
fn seal(seed: &[u8; 32], etcd_key: &str, plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut info = [0u8; 32];
    let mut nonce = [0u8; 12];
    getrandom::getrandom(&mut info).map_err(|e| anyhow!("{e}"))?;
    getrandom::getrandom(&mut nonce).map_err(|e| anyhow!("{e}"))?;
    let hk = hkdf::Hkdf::<sha2::Sha256>::from_prk(seed).map_err(|e| anyhow!("{e}"))?;
    let mut key = [0u8; 32];
    hk.expand(&info, &mut key).map_err(|e| anyhow!("{e}"))?;
    let ct = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key))
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: etcd_key.as_bytes(),
            },
        )
        .map_err(|e| anyhow!("{e}"))?;
    Ok([info.as_slice(), nonce.as_slice(), ct.as_slice()].concat())
}

const SCAN_PREFIX: &str = "/registry/secrets/verify-kms/";

fn envelopes(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let mut c = client(cx).await?;
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| anyhow!("{e}"))?;
        let (wrapped, key_id) = c.encrypt(&seed).await.map_err(|e| anyhow!("{e}"))?;
        let mut etcd = etcd_client::Client::connect([l.etcd_endpoint.as_str()], None).await?;
        for i in 0..10 {
            let key = format!("{SCAN_PREFIX}db-password-{i}");
            let secret = format!(
                r#"{{"kind":"Secret","apiVersion":"v1","metadata":{{"name":"db-password-{i}"}},"data":{{"password":"{}"}}}}"#,
                cx.canary
            );
            let obj = EncryptedObject {
                encrypted_data: seal(&seed, &key, secret.as_bytes())?,
                key_id: key_id.to_string(),
                encrypted_dek_source: wrapped.clone(),
                annotations: HashMap::new(),
                encrypted_dek_source_type: 1,
            };
            let mut value = b"k8s:enc:kms:v2:palisade:".to_vec();
            value.extend(obj.encode_to_vec());
            etcd.put(key, value, None).await?;
        }
        let report = palisade_kms::scan::scan(
            std::slice::from_ref(&l.etcd_endpoint),
            SCAN_PREFIX.as_bytes(),
        )
        .await
        .map_err(|e| anyhow!("{e}"))?;
        if !report.is_clean() || report.scanned != 10 {
            bail!(
                "scan: {} scanned, unencrypted {:?}",
                report.scanned,
                report.unencrypted_keys.len()
            );
        }
        // Nothing of the Secret is readable in the stored bytes, and the DEK opens
        // only through the plugin (the customer's key).
        let got = etcd
            .get(format!("{SCAN_PREFIX}db-password-0"), None)
            .await?;
        let stored = got
            .kvs()
            .first()
            .map(|kv| kv.value().to_vec())
            .unwrap_or_default();
        if stored
            .windows(cx.canary.len())
            .any(|w| w == cx.canary.as_bytes())
        {
            bail!("the canary is readable in etcd");
        }
        let back = c
            .decrypt(&wrapped, &key_id)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        if back.as_slice() != seed {
            bail!("the stored DEK seed does not unwrap through the plugin");
        }
        Ok(vec![
            format!(
                "10 Secrets written under {SCAN_PREFIX} as KMS v2 envelopes (key_id {})",
                key_id.as_str()
            ),
            format!("scan: {} scanned, 0 unencrypted", report.scanned),
            "canary not present in stored bytes; DEK unwraps only through the HSM".into(),
        ])
    })
}

fn scan_teeth(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let prefix = "/registry/secrets/verify-plain/";
        let mut etcd = etcd_client::Client::connect([l.etcd_endpoint.as_str()], None).await?;
        etcd.put(format!("{prefix}leaked"), cx.canary.clone(), None)
            .await?;
        let out = std::process::Command::new(&l.exe)
            .args([
                "kms",
                "scan-etcd",
                "--endpoints",
                &l.etcd_endpoint,
                "--prefix",
                prefix,
            ])
            .output()?;
        etcd.delete(format!("{prefix}leaked"), None).await?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() || !text.contains("leaked") {
            bail!(
                "scan-etcd did not report the plaintext Secret: {}",
                super::short(&text)
            );
        }
        if text.contains(&cx.canary) {
            bail!("scan-etcd printed the value");
        }
        Ok(vec![format!(
            "palisade kms scan-etcd exit {}: reported the key, not the value",
            out.status.code().unwrap_or(-1)
        )])
    })
}

fn dev_file_key(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let dir = super::scratch(cx, "c5-dev-key")?;
        let key = dir.join("dev.key");
        let gen = std::process::Command::new(&l.exe)
            .args(["kms", "keygen", "--backend", "file", "--key-file"])
            .arg(&key)
            .arg("--allow-insecure-dev-key")
            .output()?;
        if !gen.status.success() {
            bail!(
                "could not create a dev key: {}",
                String::from_utf8_lossy(&gen.stderr)
            );
        }
        let socket = format!("unix://{}", dir.join("dev.sock").display());
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            tokio::process::Command::new(&l.exe)
                .args([
                    "kms",
                    "serve",
                    "--listen",
                    &socket,
                    "--backend",
                    "file",
                    "--key-file",
                ])
                .arg(&key)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| anyhow!("kms serve with a file key kept running without the flag"))??;
        if out.status.success() {
            bail!("kms serve with a file key exited 0 without the flag");
        }
        Ok(vec![format!(
            "kms serve --backend file without --allow-insecure-dev-key: exit {} ({})",
            out.status.code().unwrap_or(-1),
            super::short(String::from_utf8_lossy(&out.stderr).trim())
        )])
    })
}
