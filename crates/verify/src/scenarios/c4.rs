//! C4: the allowlist is the approved policy and nothing else. Every parameter attack
//! class of docs/threat-model.md is refused by the gateway (422, logged) and again by the
//! agent; policy changes need M-of-N non-author approvals; a tampered or rolled-back
//! policy does not verify; the agent runs only the policy it verified.

use super::{copy_dir, push, push_with, scratch};
use crate::{BoxFut, Claim::C4, Ctx, Scenario, Scope};
use anyhow::{anyhow, bail};
use palisade_agent::dispatch::RefusalCode;
use palisade_core::event::{ParamValue, PolicyRef};
use palisade_core::{ActionName, Sha256Digest};
use palisade_policy::keys::SigningKey;
use palisade_policy::tuf::{Lifetimes, OnlineKeys, RepoDir, TrustError};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// (id, title, action, raw request body).
type Attack = (&'static str, &'static str, &'static str, fn() -> Value);

fn body(params: Value) -> Value {
    json!({"parameters": params, "ticket": crate::ctx::TICKET, "reason": crate::ctx::REASON})
}

const ATTACKS: &[Attack] = &[
    (
        "c4-gateway-option-injection",
        "Option injection (-rf, --all) in a node name",
        "kube.cordon",
        || body(json!({"node": "-rf"})),
    ),
    (
        "c4-gateway-double-dash",
        "A value that is a long option (--all)",
        "kube.cordon",
        || body(json!({"node": "--all"})),
    ),
    (
        "c4-gateway-shell-metacharacters",
        "Shell metacharacters and command substitution",
        "kube.cordon",
        || body(json!({"node": "worker-1; rm -rf / $(reboot) `id`"})),
    ),
    (
        "c4-gateway-glob",
        "Globs and wildcards",
        "kube.uncordon",
        || body(json!({"node": "worker-*"})),
    ),
    (
        "c4-gateway-path-traversal",
        "Path traversal and absolute paths",
        "kube.cordon",
        || body(json!({"node": "../../etc/passwd"})),
    ),
    (
        "c4-gateway-control-characters",
        "Control characters, newline and NUL",
        "kube.cordon",
        || body(json!({"node": "worker-1\u{0}\nworker-2"})),
    ),
    (
        "c4-gateway-unicode-lookalike",
        "Unicode look-alikes (Cyrillic o)",
        "kube.cordon",
        || body(json!({"node": "w\u{043e}rker-1"})),
    ),
    (
        "c4-gateway-unnormalized-unicode",
        "Unicode normalisation tricks (combining accent)",
        "kube.uncordon",
        || body(json!({"node": "worke\u{0301}r"})),
    ),
    (
        "c4-gateway-oversize",
        "Oversize input (300 characters)",
        "kube.uncordon",
        || body(json!({"node": "a".repeat(300)})),
    ),
    (
        "c4-gateway-type-number",
        "Type confusion: a number for a string",
        "kube.uncordon",
        || body(json!({"node": 7})),
    ),
    (
        "c4-gateway-type-array",
        "Type confusion: an array for a scalar",
        "kube.uncordon",
        || body(json!({"node": ["worker-1", "worker-2"]})),
    ),
    (
        "c4-gateway-unknown-parameter",
        "An unknown parameter (force=true)",
        "kube.uncordon",
        || body(json!({"node": "worker-1", "force": true})),
    ),
    (
        "c4-gateway-missing-parameter",
        "A missing required parameter",
        "kube.uncordon",
        || body(json!({})),
    ),
    (
        "c4-gateway-enum-case",
        "A value outside an enum (ETCD)",
        "component.status",
        || body(json!({"component": "ETCD"})),
    ),
    (
        "c4-gateway-enum-injection",
        "An enum value with a shell suffix (etcd;sh)",
        "component.status",
        || body(json!({"component": "etcd;sh"})),
    ),
];

pub fn add(v: &mut Vec<Scenario>) {
    for a in ATTACKS {
        push_with(
            v,
            C4,
            Scope::Any,
            a.0,
            &format!("{} is refused by the gateway (422) and logged", a.1),
            *a,
            gateway_attack,
        );
    }
    push(
        v,
        C4,
        Scope::Any,
        "c4-gateway-duplicate-keys",
        "Duplicated JSON keys (node twice) are refused by the gateway and logged",
        duplicate_keys,
    );
    push(v, C4, Scope::Local, "c4-agent-revalidates-parameters", "A compromised gateway's logged dispatches with invalid parameters are refused by the agent", agent_params);
    push(
        v,
        C4,
        Scope::Local,
        "c4-agent-refuses-unapproved-policy",
        "A dispatch naming a policy the agent did not verify is refused",
        agent_policy,
    );
    push(
        v,
        C4,
        Scope::Local,
        "c4-agent-runs-the-approved-policy",
        "The agent's loaded policy digest equals the one verified from TUF with 2-of-3 approvals",
        agent_digest,
    );
    push(
        v,
        C4,
        Scope::Local,
        "c4-policy-m-minus-one-not-published",
        "A policy change with 1 of 2 required approvals cannot be published",
        m_minus_one,
    );
    push(
        v,
        C4,
        Scope::Local,
        "c4-policy-author-cannot-approve",
        "The author of a policy change cannot approve it",
        self_approve,
    );
    push(
        v,
        C4,
        Scope::Local,
        "c4-policy-duplicate-approval-counts-once",
        "A reviewer approving twice (or a copied approval) counts once",
        duplicate_approval,
    );
    push(
        v,
        C4,
        Scope::Local,
        "c4-policy-tampered-target-refused",
        "A policy file changed in the repository after publication does not verify",
        tampered_target,
    );
    push(
        v,
        C4,
        Scope::Local,
        "c4-policy-rollback-refused",
        "Restoring an older (validly signed) policy metadata is refused as a rollback",
        rollback,
    );
    push(
        v,
        C4,
        Scope::Local,
        "c4-online-key-cannot-delegate-policy",
        "The repository host's online key delegates the policy role to its own keys and publishes a policy they approved: refused",
        online_key_delegation,
    );
    push(
        v,
        C4,
        Scope::Local,
        "c4-reviewers-change-only-by-root",
        "Changing the reviewers without a threshold of root keys (online key, reviewer key, a forged root) is refused",
        reviewers_need_root,
    );
}

/// A key outside the deployment's trust (the attacker's).
fn attacker_key(dir: &Path, name: &str) -> anyhow::Result<SigningKey> {
    let k = palisade_policy::keys::generate(name, &dir.join("attacker"), true)?;
    Ok(SigningKey::read(&k.private)?)
}

fn online_key_delegation(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        use palisade_policy::{approval, dsse::Envelope, trusted_policy, tuf};
        let t = trust_copy(cx, "c4-online-delegation")?;
        let id = t.propose(2)?;
        let staged = approval::load(&t.repo, &id)?;
        let st = staged.proposal.statement.clone();
        let role = staged
            .proposal
            .staged_role
            .clone()
            .ok_or_else(|| anyhow!("the proposal has no staged policy role"))?;
        let body = palisade_core::canonical::to_canonical_vec(&serde_json::to_value(&st)?)?;
        let (m, n) = (
            attacker_key(&t.dir, "mallory")?,
            attacker_key(&t.dir, "trent")?,
        );
        let state = tuf::RepoState::read(&t.repo)?;
        // Everything a holder of the online key can sign: the delegation to m and n,
        // the policy role signed by them, their DSSE approvals.
        trusted_policy::publish_signed_policy(
            &t.repo,
            &state,
            &OnlineKeys::load(&t.keys)?,
            &[m.public().clone(), n.public().clone()],
            2,
            trusted_policy::PolicyRelease {
                statement: st,
                role: tough::schema::Signed {
                    signatures: vec![
                        tuf::tuf_signature(&role, &m)?,
                        tuf::tuf_signature(&role, &n)?,
                    ],
                    signed: role,
                },
                bytes: staged.payload,
                author_signature: Some(staged.proposal.author_signature),
                approvals: vec![
                    Envelope::sign(approval::APPROVAL_PAYLOAD_TYPE, &body, &m),
                    Envelope::sign(approval::APPROVAL_PAYLOAD_TYPE, &body, &n),
                ],
            },
            &Lifetimes::default(),
        )?;
        match t.verify("ds").await {
            Err(e @ TrustError::DelegationMismatch { .. }) => Ok(vec![
                "policy v2 delegated to mallory+trent and signed by them with the online key"
                    .into(),
                format!("verify_policy refused: {}", super::short(&e.to_string())),
            ]),
            other => bail!(
                "expected DelegationMismatch, got {:?}",
                other.map(|v| format!("policy v{} verified", v.version))
            ),
        }
    })
}

fn reviewers_need_root(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        use palisade_policy::root::{update_root, RootChange};
        use palisade_policy::tuf;
        let t = trust_copy(cx, "c4-reviewers-root")?;
        let mallory = attacker_key(&t.dir, "mallory")?;
        let online = OnlineKeys::load(&t.keys)?;
        let mut evidence = Vec::new();
        let trust = tuf::RepoState::read(&t.repo)?.trust()?;
        let mut reviewers = trust.reviewers.clone();
        reviewers.push(mallory.public().clone());
        for (who, key) in [
            ("online key", SigningKey::read(&t.keys.join("online.key"))?),
            ("reviewer alice's key", t.reviewer("alice")?),
        ] {
            let change = RootChange {
                reviewers: Some((reviewers.clone(), 1)),
                ..RootChange::default()
            };
            match update_root(&t.repo, &[key], &online, change, &Lifetimes::default()) {
                Err(e @ TrustError::RootThreshold { .. }) => evidence.push(format!(
                    "the update-root command, given the {who}: {}",
                    super::short(&e.to_string())
                )),
                other => bail!(
                    "update-root signed by the {who}: expected RootThreshold, got {:?}",
                    other.map(|u| u.version)
                ),
            }
        }
        // A root N+1 written by hand, signed by the online key.
        let state = tuf::RepoState::read(&t.repo)?;
        let mut root = state.root.signed.clone();
        root.version = std::num::NonZeroU64::new(root.version.get() + 1)
            .ok_or_else(|| anyhow!("root version"))?;
        let mut forged = trust.clone();
        forged.reviewers = reviewers;
        forged.threshold = 1;
        root._extra.insert(
            tuf::ROOT_TRUST_FIELD.to_string(),
            serde_json::to_value(&forged)?,
        );
        let signed = tough::schema::Signed {
            signatures: vec![tuf::tuf_signature(&root, &online.online)?],
            signed: root,
        };
        let bytes = serde_json::to_vec_pretty(&signed)?;
        let md = t.repo.metadata();
        std::fs::write(
            md.join(format!("{}.root.json", signed.signed.version)),
            &bytes,
        )?;
        std::fs::write(md.join("root.json"), &bytes)?;
        match t.verify("ds").await {
            Err(e @ TrustError::Signature { .. }) => {
                evidence.push(format!(
                    "root v{} adding mallory, signed by the online key: {}",
                    signed.signed.version,
                    super::short(&e.to_string())
                ));
                Ok(evidence)
            }
            other => bail!(
                "a root signed by the online key: expected a signature refusal, got {:?}",
                other.map(|v| format!("policy v{} verified", v.version))
            ),
        }
    })
}

fn gateway_attack(cx: &Ctx, a: Attack) -> BoxFut<'_> {
    Box::pin(async move {
        let (_, title, action, make) = a;
        let mut b = make();
        if action != "kube.cordon" && action != "kube.uncordon" {
            b["instance"] = Value::String(cx.instance.clone());
        }
        let got = cx
            .gw
            .call(
                "POST",
                &format!("/v1/clusters/{}/actions/{action}", cx.cluster),
                Some(&cx.op_token),
                Some(&b),
            )
            .await?;
        let detail = got.1["detail"].as_str().unwrap_or("").to_string();
        let mut ev = cx
            .expect_refusal(&format!("{action} {title}"), got, 422, "validate")
            .await?;
        ev.push(format!("detail: {}", super::short(&detail)));
        Ok(ev)
    })
}

fn duplicate_keys(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let raw = format!(
            r#"{{"parameters":{{"node":"worker-1","node":"-rf"}},"ticket":"{}","reason":"{}"}}"#,
            crate::ctx::TICKET,
            crate::ctx::REASON
        );
        let got = cx
            .gw
            .call_raw(
                "POST",
                &format!("/v1/clusters/{}/actions/kube.cordon", cx.cluster),
                Some(&cx.op_token),
                Some(&raw),
            )
            .await?;
        cx.expect_refusal("kube.cordon with node twice", got, 422, "validate")
            .await
    })
}

fn agent_params(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let s = |v: &str| ParamValue::Str(v.to_string());
        let cases: Vec<(&str, Vec<(&str, ParamValue)>)> = vec![
            ("kube.cordon", vec![("node", s("-rf"))]),
            ("kube.cordon", vec![("node", s("$(reboot)"))]),
            ("kube.cordon", vec![("node", s("worker-1\0"))]),
            ("kube.cordon", vec![("node", s("w\u{043e}rker-1"))]),
            ("kube.cordon", vec![("node", ParamValue::Int(7))]),
            (
                "kube.cordon",
                vec![("node", s("worker-1")), ("force", ParamValue::Bool(true))],
            ),
            ("component.restart", vec![("component", s("../bin/sh"))]),
            (
                "component.upgrade",
                vec![("component", s("etcd")), ("version", s("3.4.23/../../x"))],
            ),
            (
                "etcd.backup-prune",
                vec![("keep_last", ParamValue::Int(-1))],
            ),
            (
                "etcd.backup-prune",
                vec![("keep_last", ParamValue::Int(i64::MAX))],
            ),
            ("etcd.backup-prune", vec![("keep_last", s("3"))]),
            ("etcd.status", vec![("endpoint", s("http://10.0.0.1:2379"))]),
        ];
        let mut ev = Vec::new();
        for (action, params) in cases {
            let mut p = l.prepare("etcd.status", &[])?;
            p.dispatch.action = ActionName::parse(action).map_err(|e| anyhow!("{e}"))?;
            p.dispatch.parameters = params
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            p.intent.action = p.dispatch.action.clone();
            p.intent.parameters = p.dispatch.parameters.clone();
            p.intent.dispatch_digest = p.dispatch.digest().map_err(|e| anyhow!("{e}"))?;
            let (req, index) = l.logged_request(&p).await?;
            let r = l.refused(&req).await?;
            if r.code != RefusalCode::InvalidParameters {
                bail!("{action} {params:?}: refused as {:?}: {r}", r.code);
            }
            ev.push(format!(
                "{action} {:?}: logged at {index}, {:?}",
                params.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
                r.code
            ));
        }
        Ok(ev)
    })
}

fn agent_policy(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let mut ev = Vec::new();
        for version in [1, 2] {
            let mut p = l.prepare("etcd.status", &[])?;
            p.dispatch.policy = PolicyRef {
                version,
                digest: Sha256Digest::of(b"a policy nobody approved"),
            };
            p.intent.policy = p.dispatch.policy.clone();
            p.intent.dispatch_digest = p.dispatch.digest().map_err(|e| anyhow!("{e}"))?;
            let (req, index) = l.logged_request(&p).await?;
            let r = l.refused(&req).await?;
            if r.code != RefusalCode::PolicyMismatch {
                bail!("version {version}: refused as {:?}: {r}", r.code);
            }
            ev.push(format!(
                "unapproved policy v{version}: logged at {index}, {:?}",
                r.code
            ));
        }
        Ok(ev)
    })
}

fn agent_digest(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let h = l
            .dispatcher
            .health(&l.agent_url())
            .await
            .map_err(|e| anyhow!("{e}"))?;
        let verified = l.policy.digest().to_string();
        if h.policy_digest != verified {
            bail!("agent runs {} but TUF verifies {verified}", h.policy_digest);
        }
        let ds = scratch(cx, "c4-verify-datastore")?;
        let (repo, root) = trust_paths(&l.dir);
        let v = palisade_policy::trusted_policy::verify_policy(
            &RepoDir::new(repo),
            &std::fs::read(root)?,
            &ds,
        )
        .await
        .map_err(|e| anyhow!("{e}"))?;
        Ok(vec![
            format!(
                "agent health: policy v{} {}",
                h.policy_version, h.policy_digest
            ),
            format!(
                "TUF: author {}, approvers {}",
                v.author,
                v.approvers.join(",")
            ),
        ])
    })
}

fn trust_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("trust/repo"), dir.join("trust/root.json"))
}

/// A copy of the deployment's trust directory (repository and keys): policy-change
/// attacks run on it so the live deployment keeps its state.
struct TrustCopy {
    repo: RepoDir,
    keys: PathBuf,
    root: Vec<u8>,
    dir: PathBuf,
}

fn trust_copy(cx: &Ctx, name: &str) -> anyhow::Result<TrustCopy> {
    let l = cx.local()?;
    let dir = scratch(cx, name)?;
    copy_dir(&l.dir.join("trust"), &dir.join("trust"))?;
    let t = dir.join("trust");
    Ok(TrustCopy {
        repo: RepoDir::new(t.join("repo")),
        keys: t.join("keys"),
        root: std::fs::read(t.join("root.json"))?,
        dir,
    })
}

impl TrustCopy {
    fn reviewer(&self, n: &str) -> anyhow::Result<SigningKey> {
        Ok(SigningKey::read(
            &self.keys.join(format!("reviewers/{n}.key")),
        )?)
    }

    fn propose(&self, version: u64) -> anyhow::Result<String> {
        let text = palisade_policy_default().replacen(
            "  version: 1\n",
            &format!("  version: {version}\n"),
            1,
        );
        Ok(palisade_policy::trusted_policy::propose_policy(
            &self.repo,
            &self.reviewer("alice")?,
            text.as_bytes(),
            &Lifetimes::default(),
        )
        .map_err(|e| anyhow!("propose: {e}"))?
        .id)
    }

    fn publish(
        &self,
        id: &str,
    ) -> Result<palisade_policy::trusted_policy::Publication, TrustError> {
        let online = OnlineKeys::load(&self.keys)?;
        palisade_policy::trusted_policy::publish_policy(
            &self.repo,
            &online,
            id,
            &Lifetimes::default(),
        )
    }

    async fn verify(
        &self,
        ds: &str,
    ) -> Result<palisade_policy::trusted_policy::VerifiedPolicy, TrustError> {
        palisade_policy::trusted_policy::verify_policy(&self.repo, &self.root, &self.dir.join(ds))
            .await
    }
}

/// The deployment's published policy text (what reviewers approved).
fn palisade_policy_default() -> String {
    include_str!("../../../../deploy/policy/default.yaml").to_string()
}

fn m_minus_one(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let t = trust_copy(cx, "c4-m-minus-one")?;
        let id = t.propose(2)?;
        palisade_policy::approval::approve(&t.repo, &id, &t.reviewer("bob")?)
            .map_err(|e| anyhow!("{e}"))?;
        match t.publish(&id) {
            Err(TrustError::NotEnoughApprovals {
                counted, required, ..
            }) => {
                let v = t.verify("ds").await.map_err(|e| anyhow!("{e}"))?;
                if v.version != 1 {
                    bail!("the unpublished change is served: v{}", v.version);
                }
                Ok(vec![
                    format!("publish refused: NotEnoughApprovals {counted}/{required}"),
                    "verifiers still get policy v1".into(),
                ])
            }
            other => bail!(
                "expected NotEnoughApprovals, got {:?}",
                other.map(|_| "published")
            ),
        }
    })
}

fn self_approve(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let t = trust_copy(cx, "c4-self-approve")?;
        let id = t.propose(2)?;
        match palisade_policy::approval::approve(&t.repo, &id, &t.reviewer("alice")?) {
            Err(TrustError::AuthorCannotApprove { author }) => {
                Ok(vec![format!("approve by {author}: AuthorCannotApprove")])
            }
            other => bail!(
                "expected AuthorCannotApprove, got {:?}",
                other.map(|_| "approved")
            ),
        }
    })
}

fn duplicate_approval(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let t = trust_copy(cx, "c4-duplicate")?;
        let id = t.propose(2)?;
        let bob = t.reviewer("bob")?;
        palisade_policy::approval::approve(&t.repo, &id, &bob).map_err(|e| anyhow!("{e}"))?;
        let again = palisade_policy::approval::approve(&t.repo, &id, &bob);
        if !matches!(again, Err(TrustError::AlreadyApproved { .. })) {
            bail!("a second approval by bob was not refused");
        }
        let dir = t.repo.proposals().join(&id).join("approvals");
        std::fs::copy(
            dir.join(format!("{}.json", bob.key_id())),
            dir.join("copy.json"),
        )?;
        match t.publish(&id) {
            Err(TrustError::NotEnoughApprovals {
                counted, required, ..
            }) => Ok(vec![
                "second approval by bob: AlreadyApproved".into(),
                format!("copied approval file: publish refused, counted {counted}/{required}"),
            ]),
            other => bail!(
                "expected NotEnoughApprovals, got {:?}",
                other.map(|_| "published")
            ),
        }
    })
}

fn tampered_target(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let t = trust_copy(cx, "c4-tampered")?;
        let targets = t
            .repo
            .metadata()
            .parent()
            .map(|p| p.join("targets"))
            .ok_or_else(|| anyhow!("no targets dir"))?;
        let mut changed = Vec::new();
        for f in super::walk(&targets)? {
            let name = f.display().to_string();
            if name.contains("policy") && (name.ends_with(".yaml") || name.ends_with(".yml")) {
                let text = std::fs::read_to_string(&f)?;
                let widened = text.replacen(
                    "rateLimit: {max: 2, per: 1h}",
                    "rateLimit: {max: 1000, per: 1h}",
                    1,
                );
                let widened = if widened == text {
                    format!("{text}\n# widened\n")
                } else {
                    widened
                };
                std::fs::write(&f, widened)?;
                changed.push(name);
            }
        }
        if changed.is_empty() {
            bail!("no policy target found under {}", targets.display());
        }
        match t.verify("ds").await {
            Err(e) => Ok(vec![
                format!("edited {} policy target file(s)", changed.len()),
                format!("verify_policy refused: {}", super::short(&e.to_string())),
            ]),
            Ok(v) => bail!("the tampered policy verified as v{}", v.version),
        }
    })
}

fn rollback(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let t = trust_copy(cx, "c4-rollback")?;
        let old_meta = t.dir.join("old-metadata");
        copy_dir(&t.repo.metadata(), &old_meta)?;
        let id = t.propose(2)?;
        for r in ["bob", "carol"] {
            palisade_policy::approval::approve(&t.repo, &id, &t.reviewer(r)?)
                .map_err(|e| anyhow!("{e}"))?;
        }
        t.publish(&id).map_err(|e| anyhow!("publish v2: {e}"))?;
        let v2 = t
            .verify("ds")
            .await
            .map_err(|e| anyhow!("verify v2: {e}"))?;
        if v2.version != 2 {
            bail!("v2 did not verify as v2");
        }
        // The repository host restores yesterday's metadata (all validly signed).
        std::fs::remove_dir_all(t.repo.metadata())?;
        copy_dir(&old_meta, &t.repo.metadata())?;
        match t.verify("ds").await {
            Err(e) => Ok(vec![
                "v2 published with bob+carol, verified".into(),
                format!(
                    "old metadata restored: refused ({})",
                    super::short(&e.to_string())
                ),
            ]),
            Ok(v) => bail!("rolled back to v{} without an error", v.version),
        }
    })
}
