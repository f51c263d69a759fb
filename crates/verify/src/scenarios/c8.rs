//! C8: only tested software deployed by the trusted pipeline runs. What runs is the
//! approved release; unapproved, unsigned or untested artifacts are refused (and the
//! running etcd is left alone); a binary swapped on disk after verification is caught
//! right before it would start, and the approved release restores service.

use super::{copy_dir, push, scratch, short};
use crate::{BoxFut, Claim::C8, Ctx, Scenario, Scope};
use anyhow::{anyhow, bail};
use palisade_agent::dispatch::ResultOutcome;
use palisade_policy::keys::SigningKey;
use palisade_policy::release::{self, TestOutcome, TestResult};
use palisade_policy::tuf::{self, Lifetimes, OnlineKeys, RepoDir, TrustError};
use std::path::PathBuf;

pub fn add(v: &mut Vec<Scenario>) {
    push(
        v,
        C8,
        Scope::Any,
        "c8-running-etcd-is-a-release",
        "component.status reports etcd running from a verified artifact digest",
        status_any,
    );
    push(v, C8, Scope::Local, "c8-running-digest-equals-approved-release", "The running etcd's digest equals the approved release's (pipeline-signed, PASSED, 2 approvals)", status_release);
    push(
        v,
        C8,
        Scope::Any,
        "c8-gateway-refuses-version-traversal",
        "component.upgrade with a path as version is refused by the gateway (422) and logged",
        version_traversal,
    );
    push(
        v,
        C8,
        Scope::Local,
        "c8-upgrade-to-unapproved-version-refused",
        "An upgrade to a version with no release is refused and the old etcd keeps running",
        unapproved,
    );
    push(
        v,
        C8,
        Scope::Local,
        "c8-unsigned-artifact-refused",
        "An artifact dropped into the repository without the pipeline's signature is refused",
        unsigned,
    );
    push(
        v,
        C8,
        Scope::Local,
        "c8-failed-attestation-not-proposable",
        "A release whose test attestation says FAILED cannot be proposed",
        |cx| bad_attestation(cx, "failed"),
    );
    push(
        v,
        C8,
        Scope::Local,
        "c8-attestation-for-other-digest-refused",
        "An attestation for another build's digest is refused",
        |cx| bad_attestation(cx, "digest"),
    );
    push(
        v,
        C8,
        Scope::Local,
        "c8-attestation-by-untrusted-ci-refused",
        "An attestation signed by an untrusted CI key is refused",
        |cx| bad_attestation(cx, "untrusted"),
    );
    push(
        v,
        C8,
        Scope::Local,
        "c8-release-needs-two-non-author-approvals",
        "A release cannot be approved by its author nor published with one approval",
        approvals,
    );
    push(
        v,
        C8,
        Scope::Local,
        "c8-pipeline-signed-failed-attestation-refused",
        "A pipeline-signed release carrying a FAILED attestation does not verify",
        republished_failed,
    );
    push(
        v,
        C8,
        Scope::Local,
        "c8-other-bytes-than-approved-refused",
        "Bytes other than the approved artifact do not verify as the release",
        other_bytes,
    );
    push(
        v,
        C8,
        Scope::Local,
        "c8-retired-pipeline-key-signs-nothing-accepted",
        "After a pipeline key rotation (root update), releases re-signed with the retired key do not verify",
        retired_pipeline_key,
    );
    push(v, C8, Scope::Local, "c8-swapped-binary-caught-before-restart", "A binary swapped in the agent's work directory is refused right before restart; the approved release restores etcd", swapped);
}

fn find_etcd() -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("etcd"))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| anyhow!("etcd is not installed (apt-get install etcd-server)"))
}

async fn etcd_status(cx: &Ctx) -> anyhow::Result<serde_json::Value> {
    let (s, op) = cx
        .op_run("component.status", &[("component", "etcd")])
        .await?;
    if s != 200 || op["status"] != "succeeded" {
        bail!("component.status: HTTP {s} {}", short(&op.to_string()));
    }
    Ok(op["output"]["components"][0].clone())
}

fn status_any(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let c = etcd_status(cx).await?;
        let sha = c["artifact_sha256"].as_str().unwrap_or("");
        if c["state"] != "running" || sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit())
        {
            bail!("etcd status: {c}");
        }
        Ok(vec![format!(
            "etcd {} {} sha256:{sha}",
            c["version"], c["state"]
        )])
    })
}

fn status_release(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let c = etcd_status(cx).await?;
        let version = c["version"].as_str().unwrap_or("").to_string();
        let bytes = std::fs::read(find_etcd()?)?;
        let ds = scratch(cx, "c8-verify-ds")?;
        let v = release::verify_release(
            &RepoDir::new(l.dir.join("trust/repo")),
            &std::fs::read(l.dir.join("trust/root.json"))?,
            &ds,
            "etcd",
            &version,
            &bytes,
            &[],
        )
        .await
        .map_err(|e| anyhow!("the installed etcd does not verify as release {version}: {e}"))?;
        if c["artifact_sha256"].as_str() != Some(v.sha256.as_str()) {
            bail!(
                "running {} but the release is {}",
                c["artifact_sha256"],
                v.sha256
            );
        }
        Ok(vec![
            format!("running etcd {version}: sha256:{}", v.sha256),
            format!(
                "release {}: test {:?}, author {}, approvers {}",
                v.target,
                v.test_result.result,
                v.author,
                v.approvers.join(",")
            ),
        ])
    })
}

fn version_traversal(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let got = cx
            .op_run(
                "component.upgrade",
                &[("component", "etcd"), ("version", "../../etc")],
            )
            .await?;
        cx.expect_refusal("component.upgrade version=../../etc", got, 422, "validate")
            .await
    })
}

async fn upgrade_refused(cx: &Ctx, version: &str) -> anyhow::Result<Vec<String>> {
    let l = cx.local()?;
    let before = etcd_status(cx).await?;
    let done = l
        .execute(
            "component.upgrade",
            &[("component", "etcd"), ("version", version)],
        )
        .await?;
    if done.result.outcome == ResultOutcome::Succeeded {
        bail!("the agent upgraded etcd to {version}");
    }
    let after = etcd_status(cx).await?;
    if after["state"] != "running"
        || after["version"] != before["version"]
        || after["artifact_sha256"] != before["artifact_sha256"]
    {
        bail!("the running etcd changed: {before} -> {after}");
    }
    Ok(vec![
        format!(
            "upgrade to {version} (intent {}): {:?}: {}",
            done.intent_index,
            done.result.outcome,
            short(done.result.error.as_deref().unwrap_or(""))
        ),
        format!(
            "etcd still running {} sha256:{}",
            after["version"],
            after["artifact_sha256"].as_str().unwrap_or("")
        ),
    ])
}

fn unapproved(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move { upgrade_refused(cx, "3.9.9").await })
}

fn unsigned(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let repo = RepoDir::new(l.dir.join("trust/repo"));
        let path = repo.target_path("components/etcd/3.9.8/etcd");
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::copy(find_etcd()?, &path)?;
        let mut ev = vec![format!("dropped {} (never signed)", path.display())];
        let r = upgrade_refused(cx, "3.9.8").await;
        let _ = std::fs::remove_file(&path);
        ev.extend(r?);
        Ok(ev)
    })
}

struct Repo {
    repo: RepoDir,
    keys: PathBuf,
    root: Vec<u8>,
    dir: PathBuf,
}

fn repo_copy(cx: &Ctx, name: &str) -> anyhow::Result<Repo> {
    let l = cx.local()?;
    let dir = scratch(cx, name)?;
    copy_dir(&l.dir.join("trust"), &dir.join("trust"))?;
    Ok(Repo {
        repo: RepoDir::new(dir.join("trust/repo")),
        keys: dir.join("trust/keys"),
        root: std::fs::read(dir.join("trust/root.json"))?,
        dir,
    })
}

impl Repo {
    fn key(&self, rel: &str) -> anyhow::Result<SigningKey> {
        Ok(SigningKey::read(&self.keys.join(rel))?)
    }

    fn attest(
        &self,
        artifact: &[u8],
        outcome: TestOutcome,
        key: &SigningKey,
    ) -> anyhow::Result<palisade_policy::dsse::Envelope> {
        let result = TestResult {
            result: outcome,
            configuration: vec![],
            url: "https://ci.example/run/verify".into(),
            passed_tests: vec!["e2e".into()],
            warned_tests: vec![],
            failed_tests: if outcome == TestOutcome::Failed {
                vec!["e2e".into()]
            } else {
                vec![]
            },
        };
        release::attest("etcd", artifact, result, key).map_err(|e| anyhow!("{e}"))
    }

    fn propose(
        &self,
        version: &str,
        artifact: &[u8],
        att: palisade_policy::dsse::Envelope,
    ) -> Result<String, TrustError> {
        release::propose_release(
            &self.repo,
            &self
                .key("reviewers/alice.key")
                .map_err(|e| TrustError::Invalid(e.to_string()))?,
            "etcd",
            version,
            "etcd",
            artifact,
            att,
            &[],
        )
    }

    async fn verify(
        &self,
        version: &str,
        artifact: &[u8],
    ) -> Result<release::VerifiedRelease, TrustError> {
        release::verify_release(
            &self.repo,
            &self.root,
            &self.dir.join("ds"),
            "etcd",
            version,
            artifact,
            &[],
        )
        .await
    }
}

fn bad_attestation<'a>(cx: &'a Ctx, case: &'static str) -> BoxFut<'a> {
    Box::pin(async move {
        let r = repo_copy(cx, &format!("c8-{case}"))?;
        let artifact = b"etcd build under test (verify-claims)".to_vec();
        let ci = r.key("ci/ci.key")?;
        let att = match case {
            "failed" => r.attest(&artifact, TestOutcome::Failed, &ci)?,
            "digest" => r.attest(b"another build", TestOutcome::Passed, &ci)?,
            _ => {
                let d = scratch(cx, "c8-rogue-ci")?;
                palisade_policy::keys::generate("rogue-ci", &d, false)?;
                r.attest(
                    &artifact,
                    TestOutcome::Passed,
                    &SigningKey::read(&d.join("rogue-ci.key"))?,
                )?
            }
        };
        let outcome = r.propose("9.0.0", &artifact, att);
        let ok = matches!(
            (case, &outcome),
            ("failed", Err(TrustError::AttestationNotPassed { .. }))
                | ("digest", Err(TrustError::AttestationSubject { .. }))
                | ("untrusted", Err(TrustError::AttestationUntrusted { .. }))
        );
        if !ok {
            bail!(
                "{case}: expected a refusal, got {:?}",
                outcome.map(|_| "proposed")
            );
        }
        let verified = r.verify("9.0.0", &artifact).await;
        if verified.is_ok() {
            bail!("release 9.0.0 verifies");
        }
        Ok(vec![
            format!(
                "propose: {}",
                short(&outcome.err().map(|e| e.to_string()).unwrap_or_default())
            ),
            format!(
                "verify 9.0.0: {}",
                short(&verified.err().map(|e| e.to_string()).unwrap_or_default())
            ),
        ])
    })
}

fn approvals(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let r = repo_copy(cx, "c8-approvals")?;
        let artifact = b"etcd build 9.1.0".to_vec();
        let att = r.attest(&artifact, TestOutcome::Passed, &r.key("ci/ci.key")?)?;
        let id = r
            .propose("9.1.0", &artifact, att)
            .map_err(|e| anyhow!("{e}"))?;
        let selfie =
            palisade_policy::approval::approve(&r.repo, &id, &r.key("reviewers/alice.key")?);
        if !matches!(selfie, Err(TrustError::AuthorCannotApprove { .. })) {
            bail!("the author's approval was not refused");
        }
        palisade_policy::approval::approve(&r.repo, &id, &r.key("reviewers/bob.key")?)
            .map_err(|e| anyhow!("{e}"))?;
        let published = release::publish_release(
            &r.repo,
            &OnlineKeys::load(&r.keys)?,
            &id,
            &[],
            &Lifetimes::default(),
        );
        match published {
            Err(TrustError::NotEnoughApprovals {
                counted, required, ..
            }) => {
                if r.verify("9.1.0", &artifact).await.is_ok() {
                    bail!("9.1.0 verifies");
                }
                Ok(vec![
                    "alice (author) approving: AuthorCannotApprove".into(),
                    format!("publish with bob only: NotEnoughApprovals {counted}/{required}"),
                    "9.1.0 does not verify".into(),
                ])
            }
            other => bail!(
                "expected NotEnoughApprovals, got {:?}",
                other.map(|_| "published")
            ),
        }
    })
}

fn republished_failed(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let r = repo_copy(cx, "c8-republished")?;
        let etcd = std::fs::read(find_etcd()?)?;
        let c = etcd_status(cx).await?;
        let version = c["version"].as_str().unwrap_or("").to_string();
        r.verify(&version, &etcd)
            .await
            .map_err(|e| anyhow!("the copy does not verify before the attack: {e}"))?;
        // A pipeline (holding its own key) that publishes what CI failed.
        let failed = r.attest(&etcd, TestOutcome::Failed, &r.key("ci/ci.key")?)?;
        let state = tuf::RepoState::read(&r.repo)?;
        let mut role = state
            .delegated
            .get(tuf::COMPONENTS_ROLE)
            .ok_or_else(|| anyhow!("no components role"))?
            .signed
            .clone();
        for t in role.targets.values_mut() {
            t.custom
                .insert("attestation".into(), serde_json::to_value(&failed)?);
        }
        role.version = role
            .version
            .checked_add(1)
            .ok_or_else(|| anyhow!("version overflow"))?;
        let pipeline = r.key("pipeline.key")?;
        let sig = tuf::tuf_signature(&role, &pipeline)?;
        let online = OnlineKeys::load(&r.keys)?;
        tuf::commit(
            &r.repo,
            &state,
            &online.online,
            tuf::Commit {
                targets: None,
                delegated: vec![(
                    tuf::COMPONENTS_ROLE.to_string(),
                    tough::schema::Signed {
                        signed: role,
                        signatures: vec![sig],
                    },
                )],
                files: vec![],
            },
            &Lifetimes::default(),
        )?;
        match r.verify(&version, &etcd).await {
            Err(TrustError::AttestationNotPassed { result }) => Ok(vec![
                format!("etcd {version} re-signed by the pipeline with a {result} attestation"),
                "verify_release: AttestationNotPassed".into(),
            ]),
            other => bail!(
                "expected AttestationNotPassed, got {:?}",
                other.map(|_| "verified")
            ),
        }
    })
}

fn retired_pipeline_key(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let r = repo_copy(cx, "c8-retired-pipeline-key")?;
        let c = etcd_status(cx).await?;
        let version = c["version"].as_str().unwrap_or("").to_string();
        let etcd = std::fs::read(find_etcd()?)?;
        let life = Lifetimes::default();
        let mut keys = OnlineKeys::load(&r.keys)?;
        let next = palisade_policy::keys::generate("pipeline-next", &r.dir.join("next"), false)?;
        let retired = std::mem::replace(&mut keys.pipeline, SigningKey::read(&next.private)?);
        let change = palisade_policy::root::RootChange {
            pipeline_key: Some(keys.pipeline.public().clone()),
            ..Default::default()
        };
        let root = palisade_policy::root::update_root(
            &r.repo,
            &[r.key("root.key")?],
            &keys,
            change,
            &life,
        )?;
        r.verify(&version, &etcd)
            .await
            .map_err(|e| anyhow!("the release does not verify under the new pipeline key: {e}"))?;
        // Whoever kept the retired key re-signs the releases with it; the online key
        // signs targets, snapshot and timestamp as usual.
        let stolen = OnlineKeys {
            online: r.key("online.key")?,
            pipeline: retired,
        };
        palisade_policy::trusted_policy::resign_components(&r.repo, &stolen, &life)?;
        match r.verify(&version, &etcd).await {
            Err(e) if e.to_string().contains("Signature threshold") => Ok(vec![
                format!(
                    "root version {} pins the new pipeline key {}",
                    root.version,
                    keys.pipeline.key_id()
                ),
                format!(
                    "etcd {version} re-signed with the retired key: {}",
                    short(&e.to_string())
                ),
            ]),
            other => bail!(
                "expected a signature refusal, got {:?}",
                other.map(|_| "verified")
            ),
        }
    })
}

fn other_bytes(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let r = repo_copy(cx, "c8-other-bytes")?;
        let c = etcd_status(cx).await?;
        let version = c["version"].as_str().unwrap_or("").to_string();
        let mut bytes = std::fs::read(find_etcd()?)?;
        bytes.extend_from_slice(b"#backdoor");
        match r.verify(&version, &bytes).await {
            Err(TrustError::ArtifactDigest { expected, found }) => Ok(vec![
                format!("expected sha256:{expected}"),
                format!("found sha256:{found}: ArtifactDigest"),
            ]),
            other => bail!(
                "expected ArtifactDigest, got {:?}",
                other.map(|_| "verified")
            ),
        }
    })
}

fn swapped(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let c = etcd_status(cx).await?;
        let version = c["version"].as_str().unwrap_or("").to_string();
        let sha = c["artifact_sha256"].as_str().unwrap_or("").to_string();
        let bin = l
            .dir
            .join("agent/work/bin")
            .join(format!("etcd-{version}-{}", sha.get(..16).unwrap_or("")));
        if !bin.is_file() {
            bail!("the installed binary {} is not there", bin.display());
        }
        let marker = cx.scratch.join("impostor-ran");
        let tmp = bin.with_extension("impostor");
        std::fs::write(
            &tmp,
            format!("#!/bin/sh\ntouch {}\nexec sleep 30\n", marker.display()),
        )?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700))?;
        }
        std::fs::rename(&tmp, &bin)?;
        let done = l
            .execute("component.restart", &[("component", "etcd")])
            .await?;
        let err = done.result.error.clone().unwrap_or_default();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let ran = marker.exists();
        // Recovery: re-install the approved release through an action.
        let fixed = l
            .execute(
                "component.upgrade",
                &[("component", "etcd"), ("version", &version)],
            )
            .await?;
        let after = etcd_status(cx).await?;
        if done.result.outcome == ResultOutcome::Succeeded {
            bail!("the restart with a swapped binary succeeded");
        }
        if ran {
            bail!("the swapped binary ran");
        }
        if fixed.result.outcome != ResultOutcome::Succeeded
            || after["state"] != "running"
            || after["artifact_sha256"].as_str() != Some(sha.as_str())
        {
            bail!(
                "the approved release did not restore etcd: {:?} {after}",
                fixed.result.error
            );
        }
        Ok(vec![
            format!(
                "swapped {}",
                bin.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            format!(
                "component.restart (intent {}): {:?}: {}",
                done.intent_index,
                done.result.outcome,
                short(&err)
            ),
            "the impostor never ran".into(),
            format!(
                "component.upgrade to the approved {version} (intent {}): running sha256:{sha}",
                fixed.intent_index
            ),
        ])
    })
}
