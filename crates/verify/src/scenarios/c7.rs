//! C7: every call is authenticated and authorized, every action is logged first and
//! audited. Token and on-call attacks at the gateway (each refusal read back from the
//! customer's log); signature, freshness, replay and log-proof attacks at the agent by
//! an attacker holding the gateway key — and the log's and witness's keys; the
//! customer's audit of the whole log, and its detection of a tampered or rolled-back
//! log; the witness refusing a fork.

use super::{copy_dir, push, scratch, short};
use crate::deploy::{SHIFT_ENDED, SHIFT_LATER};
use crate::{BoxFut, Claim::C7, Ctx, Scenario, Scope};
use anyhow::{anyhow, bail};
use base64::engine::general_purpose::STANDARD as B64_STD;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use palisade_agent::dispatch::AgentStatement;
use palisade_agent::dispatch::{Consistency, DispatchRequest, RefusalCode};
use palisade_core::event::{Event, ParamValue};
use palisade_core::time::Timestamp;
use palisade_core::{InstanceId, OperatorId};
use palisade_policy::keys::SigningKey;
use palisade_tlog::checkpoint::Checkpoint;
use palisade_tlog::hash::{leaf_hash, Hash};
use palisade_tlog::note::{Note, SignerKey};
use palisade_tlog::proof::TlogProof;
use palisade_tlog::tree::{consistency_proof, Frontier};

pub fn add(v: &mut Vec<Scenario>) {
    // Gateway: tokens.
    push(
        v,
        C7,
        Scope::Local,
        "c7-token-expired",
        "An expired token is refused (401) and the refusal logged",
        |cx| token_case(cx, "expired"),
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-token-not-yet-valid",
        "A token valid only in an hour is refused and logged",
        |cx| token_case(cx, "future"),
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-token-wrong-audience",
        "A token for another audience is refused and logged",
        |cx| token_case(cx, "audience"),
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-token-wrong-issuer",
        "A token from another issuer is refused and logged",
        |cx| token_case(cx, "issuer"),
    );
    push(
        v,
        C7,
        Scope::Any,
        "c7-token-unknown-key",
        "A token signed by an unknown key is refused and logged",
        |cx| token_case(cx, "stranger"),
    );
    push(
        v,
        C7,
        Scope::Any,
        "c7-token-forged-claims",
        "A real token with its subject changed (signature kept) is refused and logged",
        |cx| token_case(cx, "forged"),
    );
    push(
        v,
        C7,
        Scope::Any,
        "c7-token-alg-none",
        "An unsigned (alg none) token is refused and logged",
        |cx| token_case(cx, "none"),
    );
    push(
        v,
        C7,
        Scope::Any,
        "c7-token-garbage-or-absent",
        "A garbage token and no credentials are refused and logged",
        |cx| token_case(cx, "garbage"),
    );
    // Gateway: on call, justification, limits, targets.
    push(
        v,
        C7,
        Scope::Local,
        "c7-off-call-refused",
        "An authenticated operator who is not on call is refused (403) and logged",
        |cx| off_call(cx, "verify-mallory"),
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-after-shift-refused",
        "An operator whose shift ended is refused and logged",
        |cx| off_call(cx, SHIFT_ENDED),
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-before-shift-refused",
        "An operator whose shift has not started is refused and logged",
        |cx| off_call(cx, SHIFT_LATER),
    );
    push(
        v,
        C7,
        Scope::Any,
        "c7-justification-required",
        "Missing, malformed or too short justifications are refused and logged",
        justification,
    );
    push(
        v,
        C7,
        Scope::Any,
        "c7-unknown-instance-and-cluster",
        "An unknown instance (logged) and an unknown cluster are refused",
        unknown_target,
    );
    push(
        v,
        C7,
        Scope::Any,
        "c7-control-characters-not-logged",
        "An action name with a newline, an escape sequence and a bidi override reaches neither the log nor the audit line; the line's code is the one answered",
        control_characters,
    );
    push(
        v,
        C7,
        Scope::Any,
        "c7-no-cluster-enumeration",
        "Without credentials a cluster that exists and one that does not get the same answer on every route",
        no_enumeration,
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-rate-limit",
        "The per-operator rate limit holds (etcd.alarm-disarm 5/h) and the 429 is logged",
        rate_limit,
    );
    // Agent.
    push(
        v,
        C7,
        Scope::Local,
        "c7-agent-bad-signature",
        "A dispatch signed by a non-gateway key, or with a swapped payload, is refused",
        bad_signature,
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-agent-expired-and-ttl",
        "Expired, not-yet-valid and over-long dispatches are refused",
        times,
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-agent-replay",
        "A dispatch runs once; its replay is refused",
        replay,
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-agent-wrong-target",
        "A dispatch for another instance is refused",
        wrong_target,
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-agent-parameters-changed-after-logging",
        "Parameters changed after the intent was logged are refused",
        changed_after_logging,
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-agent-event-mismatch",
        "An intent naming other parameters or another operator than the dispatch is refused",
        event_mismatch,
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-agent-not-in-log",
        "An intent that was never logged (another entry's proof) is refused",
        not_in_log,
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-agent-forked-checkpoint",
        "A forked log signed with every stolen key (log, witness, tenant witness) is refused: it contradicts the agent's own view",
        forked,
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-provider-fork-needs-tenant-witness",
        "With every key the provider holds (log, witness, gateway) and a copy of the log, a private fork extending the agent's view is refused: the tenant's witness never cosigned it",
        provider_fork,
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-untrusted-log-key-refused",
        "A checkpoint signed by a key with the log's name that the agent does not trust (a retired log key after a rotation), cosigned by every witness, is refused",
        untrusted_log_key,
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-agent-rolled-back-checkpoint",
        "A rolled-back (shorter) log is refused as stale",
        rolled_back,
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-agent-unwitnessed-checkpoint",
        "A checkpoint without the witness cosignature is refused",
        unwitnessed,
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-agent-stale-checkpoint",
        "The real log's checkpoint, cosigned with the stolen log and witness keys 10 minutes ago (a frozen view), is refused; cosigned now, the same dispatch runs",
        stale_checkpoint,
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-agent-impostor-log-key",
        "A checkpoint signed by a key that is not the log's is refused",
        impostor,
    );
    // Log.
    push(
        v,
        C7,
        Scope::Local,
        "c7-forged-result-detected",
        "A result forged with a gateway certificate (\"failed\" for an action that ran, with the agent's copied signature, or with none; \"refused_by_agent\" without the agent's signed refusal) fails the agent-signature check the customer runs; the real one passes",
        forged_result,
    );
    push(
        v,
        C7,
        Scope::Any,
        "c7-customer-audit-verifies",
        "The customer's audit verifies the whole log (every tile, bundle, cosignature)",
        audit_ok,
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-audit-detects-tampered-entry",
        "The customer's audit detects an entry rewritten on the log's disk",
        tampered,
    );
    push(
        v,
        C7,
        Scope::Any,
        "c7-console-verifier-detects-tampering",
        "The console's verifier (the browser's WebAssembly, run here) accepts the log as the gateway relays it, and names a changed entry and a forked log",
        console_verifier,
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-audit-detects-rollback",
        "The customer's audit detects a log rolled back to an older signed checkpoint",
        audit_rollback,
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-witness-refuses-fork",
        "The witness refuses to cosign a fork signed with the stolen log key, or a log outside those it witnesses",
        witness_fork,
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-log-append-needs-gateway-or-agent",
        "An operator certificate cannot append to the log",
        append_role,
    );
}

fn token_case<'a>(cx: &'a Ctx, case: &'static str) -> BoxFut<'a> {
    Box::pin(async move {
        let now = Timestamp::now().unix_seconds();
        let aud = palisade_gateway::auth::DEV_AUDIENCE;
        let iss = format!("{}/dev", cx.gw.url);
        let op = if cx.operator.is_empty() {
            "verify-oncall"
        } else {
            cx.operator.as_str()
        };
        let issuer = || -> anyhow::Result<palisade_authn::DevIssuer> {
            let l = cx.local()?;
            Ok(palisade_authn::DevIssuer::load(
                &l.dir.join("gateway/keys/dev-issuer.key"),
            )?)
        };
        let parts: Vec<&str> = cx.op_token.split('.').collect();
        let payload = parts.get(1).copied().unwrap_or("");
        let tokens: Vec<(String, Option<String>)> = match case {
            "expired" => vec![(
                "expired".into(),
                Some(issuer()?.issue(&iss, aud, op, &[], 60, now - 3600)?),
            )],
            "future" => vec![(
                "not yet valid".into(),
                Some(issuer()?.issue(&iss, aud, op, &[], 600, now + 3600)?),
            )],
            "audience" => vec![(
                "wrong audience".into(),
                Some(issuer()?.issue(&iss, "another-service", op, &[], 600, now)?),
            )],
            "issuer" => vec![(
                "wrong issuer".into(),
                Some(issuer()?.issue("https://issuer.example/dev", aud, op, &[], 600, now)?),
            )],
            "stranger" => {
                let d = scratch(cx, "c7-stranger")?;
                let s = palisade_authn::DevIssuer::create(&d.join("k.key"))?;
                vec![(
                    "unknown key".into(),
                    Some(s.issue(&iss, aud, op, &[], 600, now)?),
                )]
            }
            "forged" => {
                let mut claims: serde_json::Value = serde_json::from_slice(&B64.decode(payload)?)?;
                claims["sub"] = serde_json::Value::String("someone-else".into());
                let forged = format!(
                    "{}.{}.{}",
                    parts.first().unwrap_or(&""),
                    B64.encode(serde_json::to_vec(&claims)?),
                    parts.get(2).unwrap_or(&"")
                );
                vec![("forged subject".into(), Some(forged))]
            }
            "none" => vec![(
                "alg none".into(),
                Some(format!(
                    "{}.{payload}.",
                    B64.encode(br#"{"alg":"none","typ":"JWT"}"#)
                )),
            )],
            _ => vec![
                ("garbage".into(), Some("not-a-jwt".into())),
                ("no credentials".into(), None),
            ],
        };
        let mut ev = Vec::new();
        let mut from = cx.log_size().await?;
        for (what, token) in tokens {
            let body = serde_json::json!({"instance": cx.instance, "ticket": crate::ctx::TICKET, "reason": crate::ctx::REASON});
            from = from.max(cx.log_size().await?);
            let got = cx
                .gw
                .call(
                    "POST",
                    &format!("/v1/clusters/{}/actions/etcd.status", cx.cluster),
                    token.as_deref(),
                    Some(&body),
                )
                .await?;
            let (evidence, index) = cx.expect_unauthenticated(&what, got, from).await?;
            ev.extend(evidence);
            from = index + 1;
        }
        Ok(ev)
    })
}

fn off_call<'a>(cx: &'a Ctx, who: &'static str) -> BoxFut<'a> {
    Box::pin(async move {
        let token = cx.gw.dev_token(who).await?;
        let got = cx
            .gw
            .run(
                &token,
                &cx.cluster,
                "etcd.status",
                Some(&cx.instance),
                &[],
                crate::ctx::TICKET,
                crate::ctx::REASON,
            )
            .await?;
        let detail = got.1["detail"].as_str().unwrap_or("").to_string();
        let mut ev = cx
            .expect_refusal(&format!("{who} (valid token)"), got, 403, "authorize")
            .await?;
        ev.push(format!("detail: {}", short(&detail)));
        Ok(ev)
    })
}

fn justification(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut ev = Vec::new();
        for (ticket, reason) in [
            ("", crate::ctx::REASON),
            ("see slack", crate::ctx::REASON),
            ("INC-1", "x"),
            ("-INC-1", crate::ctx::REASON),
        ] {
            let got = cx
                .gw
                .run(
                    &cx.op_token,
                    &cx.cluster,
                    "etcd.status",
                    Some(&cx.instance),
                    &[],
                    ticket,
                    reason,
                )
                .await?;
            ev.extend(
                cx.expect_refusal(
                    &format!("ticket {ticket:?} reason {:?}", short(reason)),
                    got,
                    422,
                    "validate",
                )
                .await?,
            );
        }
        Ok(ev)
    })
}

fn unknown_target(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let got = cx
            .gw
            .run(
                &cx.op_token,
                &cx.cluster,
                "etcd.status",
                Some("no-such-instance"),
                &[],
                crate::ctx::TICKET,
                crate::ctx::REASON,
            )
            .await?;
        let mut ev = cx
            .expect_refusal("unknown instance", got, 404, "validate")
            .await?;
        let (s, p) = cx
            .gw
            .run(
                &cx.op_token,
                "no-such-cluster",
                "etcd.status",
                None,
                &[],
                crate::ctx::TICKET,
                crate::ctx::REASON,
            )
            .await?;
        if s != 404 {
            bail!("unknown cluster: {s} {p}");
        }
        ev.push(format!(
            "unknown cluster: HTTP {s} (no log exists to record it)"
        ));
        Ok(ev)
    })
}

fn rate_limit(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut ok = 0;
        for _ in 0..5 {
            let (s, op) = cx.op_run("etcd.alarm-disarm", &[]).await?;
            if s == 429 {
                break;
            }
            if s != 200 {
                bail!("alarm-disarm: {s} {}", short(&op.to_string()));
            }
            ok += 1;
        }
        let got = cx.op_run("etcd.alarm-disarm", &[]).await?;
        let mut ev = vec![format!("{ok} calls accepted within the limit")];
        ev.extend(
            cx.expect_refusal("call beyond 5/h", got, 429, "rate_limit")
                .await?,
        );
        Ok(ev)
    })
}

fn reseal(p: &mut palisade_agent::client::Prepared) -> anyhow::Result<()> {
    p.intent.dispatch_digest = p.dispatch.digest().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

fn now_plus(secs: i64) -> Timestamp {
    Timestamp::from_unix_seconds(Timestamp::now().unix_seconds() + secs)
}

fn expect_code(
    r: &palisade_agent::dispatch::Refusal,
    code: RefusalCode,
    what: &str,
) -> anyhow::Result<String> {
    if r.code != code {
        bail!("{what}: refused as {:?}, expected {code:?}: {r}", r.code);
    }
    Ok(format!(
        "{what}: {:?} (HTTP {}) {}",
        r.code,
        r.status,
        short(&r.detail)
    ))
}

fn bad_signature(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let p = l.prepare("etcd.status", &[])?;
        let (mut req, index) = l.logged_request(&p).await?;
        let alice = SigningKey::read(&l.dir.join("trust/keys/reviewers/alice.key"))?;
        let genuine = req.dispatch.clone();
        req.dispatch = p.dispatch.sign(&alice).map_err(|e| anyhow!("{e}"))?;
        let a = expect_code(
            &l.refused(&req).await?,
            RefusalCode::BadSignature,
            "signed by a reviewer's key",
        )?;
        let mut tampered = p.dispatch.clone();
        tampered.action =
            palisade_core::ActionName::parse("etcd.defragment").map_err(|e| anyhow!("{e}"))?;
        let mut swapped = tampered.sign(&alice).map_err(|e| anyhow!("{e}"))?;
        swapped.signatures = genuine.signatures.clone();
        req.dispatch = swapped;
        let b = expect_code(
            &l.refused(&req).await?,
            RefusalCode::BadSignature,
            "payload swapped, signature kept",
        )?;
        req.dispatch = genuine;
        let r = l.send(&req).await?;
        Ok(vec![
            format!("intent logged at {index}"),
            a,
            b,
            format!("the honest dispatch then runs: {:?}", r.outcome),
        ])
    })
}

fn times(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let mut ev = Vec::new();
        for (issued, expires, code, what) in [
            (-200, -100, RefusalCode::Expired, "expired 100 s ago"),
            (0, 3_600, RefusalCode::TtlTooLong, "valid for an hour"),
            (600, 650, RefusalCode::NotYetValid, "valid in 10 minutes"),
        ] {
            let mut p = l.prepare("etcd.status", &[])?;
            p.dispatch.issued_at = now_plus(issued);
            p.dispatch.expires_at = now_plus(expires);
            reseal(&mut p)?;
            let (req, _) = l.logged_request(&p).await?;
            ev.push(expect_code(&l.refused(&req).await?, code, what)?);
        }
        Ok(ev)
    })
}

fn replay(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let p = l.prepare("etcd.status", &[])?;
        let (req, index) = l.logged_request(&p).await?;
        let first = l.send(&req).await?;
        let again = expect_code(&l.refused(&req).await?, RefusalCode::Replayed, "replayed")?;
        Ok(vec![
            format!("first run (intent {index}): {:?}", first.outcome),
            again,
        ])
    })
}

fn wrong_target(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let mut p = l.prepare("etcd.status", &[])?;
        p.dispatch.instance = InstanceId::parse("demo-1").map_err(|e| anyhow!("{e}"))?;
        p.intent.instance = Some(p.dispatch.instance.clone());
        reseal(&mut p)?;
        let (req, _) = l.logged_request(&p).await?;
        Ok(vec![expect_code(
            &l.refused(&req).await?,
            RefusalCode::WrongTarget,
            "instance demo-1",
        )?])
    })
}

fn changed_after_logging(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let logged = l.prepare("kube.cordon", &[("node", "worker-1")])?;
        let (entry, appended) = l
            .log_event(&Event::Intent(Box::new(logged.intent.clone())))
            .await?;
        let mut changed = logged.dispatch.clone();
        changed
            .parameters
            .insert("node".into(), ParamValue::Str("worker-2".into()));
        let env = changed.sign(l.gateway_key()).map_err(|e| anyhow!("{e}"))?;
        let req = l.request_for(&env, &entry, appended.index).await?;
        Ok(vec![
            format!("intent for worker-1 logged at {}", appended.index),
            expect_code(
                &l.refused(&req).await?,
                RefusalCode::EventMismatch,
                "dispatch for worker-2",
            )?,
        ])
    })
}

fn event_mismatch(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let mut p = l.prepare("kube.cordon", &[("node", "worker-1")])?;
        p.intent
            .parameters
            .insert("node".into(), ParamValue::Str("worker-9".into()));
        let (req, _) = l.logged_request(&p).await?;
        let a = expect_code(
            &l.refused(&req).await?,
            RefusalCode::EventMismatch,
            "intent names worker-9",
        )?;
        let mut p = l.prepare("etcd.status", &[])?;
        p.intent.actor.id = OperatorId::parse("op-other").map_err(|e| anyhow!("{e}"))?;
        let (req, _) = l.logged_request(&p).await?;
        let b = expect_code(
            &l.refused(&req).await?,
            RefusalCode::EventMismatch,
            "intent names another operator",
        )?;
        Ok(vec![a, b])
    })
}

fn not_in_log(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let unlogged = l.prepare("etcd.defragment", &[])?;
        let other = l.prepare("etcd.status", &[])?;
        let (mut req, index) = l.logged_request(&other).await?;
        req.dispatch = unlogged
            .dispatch
            .sign(l.gateway_key())
            .map_err(|e| anyhow!("{e}"))?;
        req.event = DispatchRequest::encode_event(
            &Event::Intent(Box::new(unlogged.intent.clone()))
                .to_log_entry()
                .map_err(|e| anyhow!("{e}"))?,
        );
        Ok(vec![
            format!("proof of entry {index} reused"),
            expect_code(
                &l.refused(&req).await?,
                RefusalCode::NotInLog,
                "defragment never logged",
            )?,
        ])
    })
}

/// A tree an attacker holding the log and witness keys can build and sign.
struct ForgedLog {
    frontier: Frontier,
    stored: Vec<Hash>,
}

impl ForgedLog {
    fn with_entries(entries: &[Vec<u8>]) -> anyhow::Result<Self> {
        let mut log = Self {
            frontier: Frontier::new(),
            stored: Vec::new(),
        };
        for e in entries {
            let new = log
                .frontier
                .append(leaf_hash(e))
                .map_err(|e| anyhow!("{e:?}"))?;
            log.stored.extend(new);
        }
        Ok(log)
    }

    fn note(
        &self,
        origin: &str,
        log_key: &SignerKey,
        witnesses: &[&SignerKey],
    ) -> anyhow::Result<Note> {
        let cp = Checkpoint::new(origin, self.frontier.size(), self.frontier.root())
            .map_err(|e| anyhow!("{e}"))?;
        let mut note = cp.sign(log_key).map_err(|e| anyhow!("{e}"))?;
        for w in witnesses {
            let ts = u64::try_from(Timestamp::now().unix_seconds()).unwrap_or(0);
            note.cosign(w, ts).map_err(|e| anyhow!("{e}"))?;
        }
        Ok(note)
    }

    fn proof(&self, index: u64, note: Note) -> anyhow::Result<String> {
        let p = TlogProof::produce(index, note, None, self.stored.as_slice())
            .map_err(|e| anyhow!("{e}"))?;
        Ok(String::from_utf8(p.to_bytes())?)
    }

    fn consistency(&self, old: u64) -> anyhow::Result<Vec<Hash>> {
        consistency_proof(old, self.frontier.size(), self.stored.as_slice())
            .map_err(|e| anyhow!("{e}"))
    }

    /// The consistency proof from `old`, as a dispatch carries it.
    fn consistency_from(&self, old: u64) -> anyhow::Result<Consistency> {
        Ok(Consistency {
            from_size: old,
            hashes: self.consistency(old)?.iter().map(Hash::to_base64).collect(),
        })
    }

    /// The real log up to the agent's view (`f.seen` entries), then the forged intent.
    async fn extending_real_log(l: &crate::ctx::Local, f: &Forgery) -> anyhow::Result<Self> {
        let mut entries = l.log_entries(f.seen).await?;
        entries.push(f.entry.clone());
        Self::with_entries(&entries)
    }
}

const ORIGIN: &str = "palisade.local/log/demo";

/// The forged intent an attacker wants run: signed by the stolen gateway key, never
/// appended to the real log.
struct Forgery {
    envelope: palisade_policy::dsse::Envelope,
    entry: Vec<u8>,
    seen: u64,
    tenant_trust: Option<palisade_policy::dsse::Envelope>,
}

async fn forgery(l: &crate::ctx::Local) -> anyhow::Result<Forgery> {
    // Make sure the agent has a view of a few entries.
    l.execute("etcd.health", &[]).await?;
    let seen = l.seen().await?;
    let p = l.prepare("etcd.defragment", &[])?;
    Ok(Forgery {
        envelope: p
            .dispatch
            .sign(l.gateway_key())
            .map_err(|e| anyhow!("{e}"))?,
        entry: Event::Intent(Box::new(p.intent.clone()))
            .to_log_entry()
            .map_err(|e| anyhow!("{e}"))?,
        seen,
        tenant_trust: l.dispatcher.tenant_trust("demo"),
    })
}

fn junk(n: u64) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("junk {i}").into_bytes()).collect()
}

impl Forgery {
    fn request(&self, proof: String, consistency: Option<Consistency>) -> DispatchRequest {
        DispatchRequest {
            dispatch: self.envelope.clone(),
            event: DispatchRequest::encode_event(&self.entry),
            proof,
            consistency,
            tenant_trust: self.tenant_trust.clone(),
            approval: None,
        }
    }
}

fn forked(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let f = forgery(l).await?;
        // This attacker holds every key, the tenant witness's too: the agent's own
        // view is then the last line.
        let (log_key, witness, tenant) = (
            l.log_signer()?,
            l.witness_signer()?,
            l.tenant_witness_signer()?,
        );
        let mut entries = junk(f.seen - 1);
        entries.push(f.entry.clone());
        let fork = ForgedLog::with_entries(&entries)?;
        let note = fork.note(ORIGIN, &log_key, &[&witness, &tenant])?;
        let a = expect_code(
            &l.refused(&f.request(fork.proof(f.seen - 1, note)?, None))
                .await?,
            RefusalCode::Inconsistent,
            &format!("fork of size {} (agent saw {})", f.seen, f.seen),
        )?;
        let mut entries = junk(f.seen + 2);
        entries.push(f.entry.clone());
        let longer = ForgedLog::with_entries(&entries)?;
        let note = longer.note(ORIGIN, &log_key, &[&witness, &tenant])?;
        let cons = longer.consistency_from(f.seen)?;
        let b = expect_code(
            &l.refused(&f.request(longer.proof(f.seen + 2, note)?, Some(cons)))
                .await?,
            RefusalCode::Inconsistent,
            "longer fork with its own consistency proof",
        )?;
        Ok(vec![
            a,
            b,
            "both signed by the real log key and cosigned by the real witness and tenant witness keys".into(),
        ])
    })
}

/// Everything the provider holds (the log key, its witness's key, the gateway key,
/// and a copy of the log) builds a private fork holding a forged intent and shows
/// it to the real agent: refused, for the tenant's witness never cosigned it.
fn provider_fork(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let f = forgery(l).await?;
        let (log_key, witness) = (l.log_signer()?, l.witness_signer()?);
        let fork = ForgedLog::extending_real_log(l, &f).await?;
        let note = fork.note(ORIGIN, &log_key, &[&witness])?;
        let cons = fork.consistency_from(f.seen)?;
        let r = l
            .refused(&f.request(fork.proof(f.seen, note)?, Some(cons)))
            .await?;
        let refused = expect_code(&r, RefusalCode::NotInLog, "fork extending the real log")?;
        if !r.detail.contains("tenant") {
            bail!("refused, but not for the tenant's witness: {r}");
        }
        Ok(vec![
            format!(
                "fork: the real log's first {} entries, then the forged intent",
                f.seen
            ),
            "signed by the provider's log key and cosigned by the provider's witness key".into(),
            refused,
        ])
    })
}

/// A checkpoint signed by a key that carries the log's name but that the agent does
/// not trust (what a retired log key is after a rotation), over the real log plus a
/// forged intent and cosigned by the real witnesses: refused.
fn untrusted_log_key(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let f = forgery(l).await?;
        let real = l.log_signer()?;
        let other = SignerKey::generate(real.name(), palisade_tlog::note::KeyType::Ed25519)
            .map_err(|e| anyhow!("{e}"))?;
        let fork = ForgedLog::extending_real_log(l, &f).await?;
        let note = fork.note(
            ORIGIN,
            &other,
            &[&l.witness_signer()?, &l.tenant_witness_signer()?],
        )?;
        let cons = fork.consistency_from(f.seen)?;
        let r = l
            .refused(&f.request(fork.proof(f.seen, note)?, Some(cons)))
            .await?;
        let refused = expect_code(
            &r,
            RefusalCode::NotInLog,
            "checkpoint signed by another log key",
        )?;
        Ok(vec![
            format!(
                "checkpoint signed by {}+{:08x} (the log's name, not its key), cosigned by both witnesses",
                other.name(),
                other.verifier().key_id()
            ),
            refused,
        ])
    })
}

fn rolled_back(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let f = forgery(l).await?;
        let short_log = ForgedLog::with_entries(std::slice::from_ref(&f.entry))?;
        let note = short_log.note(
            ORIGIN,
            &l.log_signer()?,
            &[&l.witness_signer()?, &l.tenant_witness_signer()?],
        )?;
        let r = l
            .refused(&f.request(short_log.proof(0, note)?, None))
            .await?;
        let e = expect_code(&r, RefusalCode::StaleView, "log of size 1")?;
        if r.known_size != Some(f.seen) {
            bail!("known size {:?}, expected {}", r.known_size, f.seen);
        }
        Ok(vec![e, format!("agent's known size {}", f.seen)])
    })
}

fn unwitnessed(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let honest = l.prepare("etcd.health", &[])?;
        let (req, index) = l.logged_request(&honest).await?;
        let stripped: String = req
            .proof
            .lines()
            .filter(|x| !x.starts_with("\u{2014} palisade.local/witness "))
            .map(|x| format!("{x}\n"))
            .collect();
        if stripped == req.proof {
            bail!("the proof had no witness cosignature to strip");
        }
        let mut r = req.clone();
        r.proof = stripped;
        Ok(vec![
            format!("intent {index} really logged"),
            expect_code(
                &l.refused(&r).await?,
                RefusalCode::NotInLog,
                "cosignature stripped",
            )?,
        ])
    })
}

fn stale_checkpoint(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let honest = l.prepare("etcd.health", &[])?;
        let (req, index) = l.logged_request(&honest).await?;
        let recosigned = |at: i64| -> anyhow::Result<String> {
            let parsed = palisade_tlog::proof::TlogProof::parse(req.proof.as_bytes())?;
            let text = parsed.checkpoint().text().to_string();
            let mut note = palisade_tlog::note::Note::new(text.clone())?;
            note.sign(&l.log_signer()?)?;
            note.cosign(&l.witness_signer()?, u64::try_from(at)?)?;
            note.cosign(&l.tenant_witness_signer()?, u64::try_from(at)?)?;
            let at = req
                .proof
                .find(&text)
                .ok_or_else(|| anyhow!("the checkpoint is not in the proof"))?;
            Ok(format!(
                "{}{}",
                &req.proof[..at],
                String::from_utf8(note.to_bytes())?
            ))
        };
        let now = palisade_core::time::Timestamp::now().unix_seconds();
        let mut old = req.clone();
        old.proof = recosigned(now - 600)?;
        let refused = expect_code(
            &l.refused(&old).await?,
            RefusalCode::StaleCheckpoint,
            "cosigned 600 s ago",
        )?;
        let mut fresh = req.clone();
        fresh.proof = recosigned(now)?;
        let ran = l
            .send(&fresh)
            .await
            .map_err(|e| anyhow!("the same dispatch cosigned now was refused: {e}"))?;
        Ok(vec![
            format!("intent {index} really logged"),
            refused,
            format!("cosigned now: ran ({:?})", ran.outcome),
        ])
    })
}

fn impostor(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let f = forgery(l).await?;
        let key = SignerKey::generate("palisade.local/log", palisade_tlog::note::KeyType::Ed25519)
            .map_err(|e| anyhow!("{e}"))?;
        let mut entries = junk(f.seen);
        entries.push(f.entry.clone());
        let other = ForgedLog::with_entries(&entries)?;
        let note = other.note(
            ORIGIN,
            &key,
            &[&l.witness_signer()?, &l.tenant_witness_signer()?],
        )?;
        Ok(vec![expect_code(
            &l.refused(&f.request(other.proof(f.seen, note)?, None))
                .await?,
            RefusalCode::NotInLog,
            "signed by an impostor log key",
        )?])
    })
}

fn forged_result(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        use palisade_agent::dispatch::AgentResult;
        use palisade_core::event::{Event, Outcome};
        let l = cx.local()?;
        let (status, op) = cx.op_run("etcd.health", &[]).await?;
        if status != 200 {
            bail!("etcd.health answered {status}: {op}");
        }
        let (intent_index, result_index) =
            match (op["intent_index"].as_u64(), op["result_index"].as_u64()) {
                (Some(i), Some(r)) => (i, r),
                _ => bail!("the operation names no intent and result index: {op}"),
            };
        let entry_at = |index: u64| async move {
            let page = cx.events_page(index, 1).await?;
            let event = page["events"][0]["event"].clone();
            let bytes = palisade_core::canonical::to_canonical_vec(&event)?;
            Event::from_log_entry(&bytes).map_err(|e| anyhow!("entry {index}: {e}"))
        };
        let (Event::Intent(intent), Event::Result(result)) =
            (entry_at(intent_index).await?, entry_at(result_index).await?)
        else {
            bail!("entries {intent_index} and {result_index} are not an intent and its result");
        };
        AgentResult::verify_logged(&intent, &result, &l.agent_keys)
            .map_err(|e| anyhow!("the real result does not verify: {e}"))?;
        let mut evidence = vec![format!(
            "real result {result_index}: the agent's signature verifies"
        )];
        // The gateway's forgeries: "failed" with the agent's signature copied; then
        // without any signature. Each appended with the gateway certificate.
        let mut failed = result.clone();
        failed.event_id = palisade_core::EventId::random().map_err(|e| anyhow!("random: {e}"))?;
        failed.outcome = Outcome::Failed;
        failed.output = None;
        failed.output_digest = None;
        let mut unsigned = failed.clone();
        unsigned.event_id = palisade_core::EventId::random().map_err(|e| anyhow!("random: {e}"))?;
        unsigned.agent = None;
        for (name, forged) in [("copied signature", failed), ("no signature", unsigned)] {
            let entry = Event::Result(forged.clone()).to_log_entry()?;
            let appended = l
                .dispatcher
                .append(&cx.cluster, &entry)
                .await
                .map_err(|e| anyhow!("append: {e}"))?;
            match AgentResult::verify_logged(&intent, &forged, &l.agent_keys) {
                Ok(_) => bail!("a forged result ({name}) passed the agent-signature check"),
                Err(e) => evidence.push(format!(
                    "forged \"failed\" at {} ({name}): {}",
                    appended.index,
                    super::short(&e)
                )),
            }
        }
        // "Refused by the agent" (so nothing ran) for an action that ran: an agent
        // signs its refusals, so one without its signature is the gateway's word.
        let mut refused = result.clone();
        refused.event_id = palisade_core::EventId::random().map_err(|e| anyhow!("random: {e}"))?;
        refused.outcome = Outcome::RefusedByAgent;
        refused.output = None;
        refused.output_digest = None;
        refused.agent = None;
        refused.agent_refusal = None;
        refused.detail = Some("not_in_log: forged".into());
        let entry = Event::Result(refused.clone()).to_log_entry()?;
        let appended = l
            .dispatcher
            .append(&cx.cluster, &entry)
            .await
            .map_err(|e| anyhow!("append: {e}"))?;
        match palisade_agent::dispatch::AgentRefusal::verify_logged(
            &intent,
            &refused,
            &l.agent_keys,
        ) {
            Ok(_) => bail!("a forged refusal passed the agent-signature check"),
            Err(e) => evidence.push(format!(
                "forged \"refused_by_agent\" at {}: {}",
                appended.index,
                super::short(&e)
            )),
        }
        Ok(evidence)
    })
}

fn audit_ok(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let base = format!("{}/logs/{}", cx.log_url, cx.cluster);
        let source =
            palisade_tlog_service::audit::Source::url(&base, Some(&cx.tenant_token), Some(&cx.ca))
                .map_err(|e| anyhow!("{e}"))?;
        let r = palisade_tlog_service::audit::verify(&source, &cx.log_policy, None, |_, _| {})
            .await
            .map_err(|e| anyhow!("audit: {e}"))?;
        if r.entries_checked != r.size || r.size == 0 {
            bail!("checked {} of {} entries", r.entries_checked, r.size);
        }
        Ok(vec![
            format!("{}: size {}, root {}", r.origin, r.size, r.root.to_base64()),
            format!(
                "{} entries, {} tiles, {} bundles checked; {} witness cosignature(s)",
                r.entries_checked,
                r.tiles_checked,
                r.bundles_checked,
                r.cosignatures.len()
            ),
        ])
    })
}

/// The console's verifier ([`palisade_audit::console`], the code the page runs as
/// WebAssembly) on the bytes the gateway relays to the page: the log verifies as it
/// is; an entry changed on its way (same length, so the bundle still parses) and a
/// browser that verified another log before are each named, and a tampered log
/// shows no entries.
fn console_verifier(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        use palisade_audit::console::{self, Input, Seen, Trust};
        use palisade_audit::log::bundles_for;
        // An action of this run, so that the log holds an intent and its signed result.
        let (status, op) = cx.op_run("etcd.status", &[]).await?;
        if status != 200 {
            bail!("etcd.status: HTTP {status}: {op}");
        }
        let base = format!("/v1/tenants/{}/clusters/{}/log", cx.tenant, cx.cluster);
        let (status, _) = cx.gw.get_bytes(&format!("{base}/checkpoint"), None).await?;
        if status != 401 {
            bail!("the log relayed without a tenant token: HTTP {status}");
        }
        let (status, checkpoint) = cx
            .gw
            .get_bytes(&format!("{base}/checkpoint"), Some(&cx.tenant_token))
            .await?;
        if status != 200 {
            bail!("checkpoint: HTTP {status}");
        }
        let checkpoint = String::from_utf8(checkpoint)?;
        let p = &cx.log_policy;
        let trust = Trust {
            origin: p.origin().to_string(),
            log_keys: p.log_keys().iter().map(ToString::to_string).collect(),
            witnesses: p.witnesses().iter().map(ToString::to_string).collect(),
            quorum: Some(p.quorum()),
            groups: vec![],
            // On a local deployment, the demo tenant's key: its statements are
            // checked too.
            tenant_key: cx
                .local
                .as_ref()
                .and_then(|l| {
                    palisade_policy::keys::PublicKey::read(&l.dir.join("tenant-demo/tenant.pub"))
                        .ok()
                })
                .and_then(|k| k.raw().map(|r| B64_STD.encode(r))),
        };
        let size = p
            .verify(checkpoint.as_bytes())
            .map_err(|e| anyhow!("checkpoint: {e}"))?
            .checkpoint()
            .size();
        let mut bundles = Vec::new();
        for b in bundles_for(size)? {
            let (status, body) = cx
                .gw
                .get_bytes(&format!("{base}/{}", b.path), Some(&cx.tenant_token))
                .await?;
            let body = match (status, &b.fallback) {
                (200, _) => body,
                (404, Some(full)) => {
                    cx.gw
                        .get_bytes(&format!("{base}/{full}"), Some(&cx.tenant_token))
                        .await?
                        .1
                }
                _ => bail!("{}: HTTP {status}", b.path),
            };
            bundles.push(body);
        }
        let input = |bundles: &[Vec<u8>], previous: Option<Seen>| Input {
            trust: trust.clone(),
            checkpoint: checkpoint.clone(),
            bundles: bundles.iter().map(|b| B64_STD.encode(b)).collect(),
            previous,
            now: Timestamp::now().unix_seconds(),
            max_age: None,
        };
        let honest = console::verify(&input(&bundles, None));
        // Other scenarios leave entries the checks flag (a result forged with the
        // gateway's certificate, say): those are findings about events, not about
        // the log. The log itself must verify.
        let log_failures: Vec<&String> = honest
            .failures
            .iter()
            .filter(|f| !f.starts_with("events:"))
            .collect();
        if !log_failures.is_empty() || honest.events.is_empty() {
            bail!("the log as relayed does not verify: {log_failures:?}");
        }
        let flagged = honest
            .events
            .iter()
            .filter(|e| !e.problems.is_empty())
            .count();
        // An intent's ticket changed on the way, in place.
        let mut tampered = bundles.clone();
        let changed = tampered.iter_mut().any(|b| {
            let Some(at) = b.windows(9).position(|w| w == b"\"ticket\":") else {
                return false;
            };
            let value = at + 10;
            if b.get(value).is_some_and(u8::is_ascii_alphanumeric) {
                b[value] = if b[value] == b'X' { b'Y' } else { b'X' };
                true
            } else {
                false
            }
        });
        if !changed {
            bail!("no intent with a ticket in the log to tamper with");
        }
        let t = console::verify(&input(&tampered, None));
        let named = t.failures.iter().find(|f| f.starts_with("inclusion"));
        let Some(named) = named.filter(|_| !t.ok && t.events.is_empty()) else {
            bail!(
                "a changed entry was not refused: ok={}, failures {:?}, {} events shown",
                t.ok,
                t.failures,
                t.events.len()
            );
        };
        let fork = console::verify(&input(
            &bundles,
            Some(Seen {
                size: 1,
                root: B64_STD.encode([7u8; 32]),
            }),
        ));
        let Some(forked) = fork.failures.iter().find(|f| f.contains("a fork")) else {
            bail!("a forked log was not named: {:?}", fork.failures);
        };
        Ok(vec![
            format!(
                "the log as relayed: {} entries verified, {} agent signature(s) and {} tenant statement(s) checked, {flagged} entr(ies) flagged by the event checks",
                honest.events.len(),
                honest.signatures_checked,
                honest.tenant_statements_checked.map_or("no".into(), |n| n.to_string()),
            ),
            format!("one ticket changed in transit: {}", short(named)),
            format!("a browser that verified another log: {}", short(forked)),
            "no tenant token: 401".into(),
        ])
    })
}

fn audit_cmd(
    l: &crate::ctx::Local,
    dir: &std::path::Path,
    state: Option<&std::path::Path>,
) -> anyhow::Result<(bool, String)> {
    let mut c = std::process::Command::new(&l.exe);
    c.args(["audit", "verify", "--dir"]).arg(dir).args([
        "--origin",
        ORIGIN,
        "--log-key",
        &format!("@{}/log/keys/palisade.local_log.pub", l.dir.display()),
        "--witness-key",
        &format!(
            "@{}/witness/keys/palisade.local_witness.pub",
            l.dir.display()
        ),
        "--quorum",
        "1",
    ]);
    if let Some(s) = state {
        c.arg("--state").arg(s);
    }
    let out = c.output()?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

fn tiles(l: &crate::ctx::Local) -> std::path::PathBuf {
    l.dir.join("log/tiles/clusters/demo")
}

/// The demo log's storage, once it holds everything the log acknowledged: the log
/// writes it from its journal within its publish interval, then empties the journal.
async fn settled_tiles(l: &crate::ctx::Local) -> anyhow::Result<std::path::PathBuf> {
    let dir = tiles(l);
    let journal = dir.join("journal");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0) > 0 {
        if std::time::Instant::now() > deadline {
            bail!("the log did not write its journal to storage within 30 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(dir)
}

fn tampered(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let copy = scratch(cx, "c7-tampered")?.join("log");
        copy_dir(&settled_tiles(l).await?, &copy)?;
        let (ok, text) = audit_cmd(l, &copy, None)?;
        if !ok {
            bail!("the untouched copy does not verify: {}", short(&text));
        }
        // Rewrite one stored event: an insider hiding what an operator ran.
        // Every stored copy of the bundle (partial and full) is edited, so whichever
        // the customer reads is the rewritten one.
        let mut edited = Vec::new();
        for f in super::walk(&copy.join("tile/entries"))? {
            let mut bytes = std::fs::read(&f)?;
            let mut hit = false;
            while let Some(pos) = bytes.windows(11).position(|w| w == b"etcd.status") {
                bytes[pos + 10] = b'x';
                hit = true;
            }
            if hit {
                std::fs::write(&f, bytes)?;
                edited.push(f.strip_prefix(&copy).unwrap_or(&f).display().to_string());
            }
        }
        if edited.is_empty() {
            bail!("no stored etcd.status event to rewrite");
        }
        let (ok, text) = audit_cmd(l, &copy, None)?;
        if ok {
            bail!("a rewritten entry went unnoticed");
        }
        Ok(vec![
            "untouched copy: verifies".into(),
            format!(
                "rewrote etcd.status -> etcd.statux in {}",
                edited.join(", ")
            ),
            format!("audit verify: FAILED ({})", short(text.trim())),
        ])
    })
}

fn audit_rollback(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let d = scratch(cx, "c7-rollback")?;
        let old = d.join("old");
        copy_dir(&settled_tiles(l).await?, &old)?;
        l.execute("etcd.health", &[]).await?;
        let new = d.join("new");
        copy_dir(&settled_tiles(l).await?, &new)?;
        let state = d.join("customer-state.json");
        let (ok, text) = audit_cmd(l, &new, Some(&state))?;
        if !ok {
            bail!("the current log does not verify: {}", short(&text));
        }
        std::fs::copy(old.join("checkpoint"), new.join("checkpoint"))?;
        let (ok, text) = audit_cmd(l, &new, Some(&state))?;
        if ok || !text.contains("rolled back") {
            bail!("rollback went unnoticed: {}", short(&text));
        }
        Ok(vec![
            "customer verified the current log and saved its state".into(),
            format!("older signed checkpoint restored: {}", short(text.trim())),
        ])
    })
}

fn log_client(
    l: &crate::ctx::Local,
    role: palisade_pki::Role,
    name: &str,
    server: palisade_pki::Role,
) -> anyhow::Result<reqwest::Client> {
    let pki = l.dir.join("pki");
    let tls = palisade_pki::client_config(
        &pki.join("ca.crt"),
        &pki.join(format!("{role}-{name}.crt")),
        &pki.join(format!("{role}-{name}.key")),
        &[server],
    )?;
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()?)
}

fn witness_fork(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        // The witness's stored size: the log's latest checkpoint.
        let reader = reqwest::Client::builder()
            .tls_backend_preconfigured(
                rustls::ClientConfig::builder_with_provider(palisade_pki::crypto_provider())
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(palisade_pki::load_roots(&cx.ca)?)
                    .with_no_client_auth(),
            )
            .build()?;
        let cp_text = reader
            .get(format!("{}/logs/demo/checkpoint", cx.log_url))
            .bearer_auth(&cx.tenant_token)
            .send()
            .await?
            .bytes()
            .await?;
        let note = Note::parse(&cp_text).map_err(|e| anyhow!("{e}"))?;
        let size = Checkpoint::parse(note.text())
            .map_err(|e| anyhow!("{e}"))?
            .size();
        // `add-checkpoint` to the provider's witness with the log's certificate: its
        // HTTP status.
        let witness = log_client(
            l,
            palisade_pki::Role::Log,
            "log",
            palisade_pki::Role::Witness,
        )?;
        let add_checkpoint = |old: u64, proof: Vec<_>, note| {
            let witness = &witness;
            async move {
                let body = palisade_tlog::witness::AddCheckpointRequest::new(old, proof, note)
                    .map_err(|e| anyhow!("{e}"))?
                    .to_bytes();
                let resp = witness
                    .post(format!("https://127.0.0.1:{}/add-checkpoint", l.base + 2))
                    .body(body)
                    .send()
                    .await?;
                anyhow::Ok(resp.status().as_u16())
            }
        };
        let fork = ForgedLog::with_entries(&junk(size + 5))?;
        let forged = fork.note(ORIGIN, &l.log_signer()?, &[])?;
        let status = add_checkpoint(size, fork.consistency(size)?, forged).await?;
        if status != 409 && status != 422 {
            bail!("the witness answered {status} to a fork");
        }
        let mut evidence = vec![
            format!(
                "fork of size {} from size {size}, signed with the log key, sent with the log's certificate",
                size + 5
            ),
            format!("witness: HTTP {status}"),
        ];
        // The witness cosigns the logs below its origin prefix only: the same stolen
        // key cannot open a history it would vouch for elsewhere.
        for outside in ["palisade.local/other/demo", "palisade.local/log"] {
            let note = ForgedLog::with_entries(&junk(1))?.note(outside, &l.log_signer()?, &[])?;
            let status = add_checkpoint(0, Vec::new(), note).await?;
            if status != 404 {
                bail!("the witness answered {status} for {outside:?}, a log it does not witness");
            }
            evidence.push(format!("{outside}: HTTP {status}"));
        }
        Ok(evidence)
    })
}

fn append_role(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let pki = l.dir.join("pki");
        let name = palisade_pki::CertName::new("mallory")?;
        if !palisade_pki::IssuedPaths::in_dir(&pki, palisade_pki::Role::Operator, &name)
            .cert
            .exists()
        {
            palisade_pki::issue(&pki, palisade_pki::Role::Operator, &name, &[], 30, false)?;
        }
        let resp = log_client(
            l,
            palisade_pki::Role::Operator,
            "mallory",
            palisade_pki::Role::Log,
        )?
        .post(format!("{}/logs/demo/append", cx.log_url))
        .body("{\"forged\":true}")
        .send()
        .await;
        match resp {
            Ok(r) if r.status().as_u16() == 403 => {
                Ok(vec!["operator certificate: POST append 403".into()])
            }
            Ok(r) => bail!("an operator certificate got {} from append", r.status()),
            Err(e) => Ok(vec![format!(
                "operator certificate: handshake refused ({})",
                short(&e.to_string())
            )]),
        }
    })
}

/// Whether `c` changes how a line reads without being seen.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
}

fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        serde_json::Value::Object(m) => m.iter().for_each(|(k, x)| {
            out.push(k.clone());
            strings(x, out)
        }),
        _ => {}
    }
}

fn control_characters(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        // etcd.status, a newline, a forged JSON outcome, ESC [2K, U+202E.
        let encoded =
            "etcd.status%0A%7B%22outcome%22%3A%22succeeded%22%7D%1B%5B2K%E2%80%AEdedeeccus";
        let body = serde_json::json!({"instance": cx.instance, "ticket": crate::ctx::TICKET, "reason": crate::ctx::REASON});
        let (s, problem) = cx
            .gw
            .call(
                "POST",
                &format!("/v1/clusters/{}/actions/{encoded}", cx.cluster),
                Some(&cx.op_token),
                Some(&body),
            )
            .await?;
        if s != 404 {
            bail!("the forged action name was answered {s}: {problem}");
        }
        let index = problem["log_index"]
            .as_u64()
            .ok_or_else(|| anyhow!("not logged: {problem}"))?;
        let (st, page) = cx
            .gw
            .call(
                "GET",
                &format!(
                    "/v1/tenants/{}/clusters/{}/events?from={index}&limit=1",
                    cx.tenant, cx.cluster
                ),
                Some(&cx.tenant_token),
                None,
            )
            .await?;
        let (sa, lines) = cx
            .gw
            .call(
                "GET",
                &format!(
                    "/v1/tenants/{}/clusters/{}/events?format=k8s-audit&from={index}&limit=1",
                    cx.tenant, cx.cluster
                ),
                Some(&cx.tenant_token),
                None,
            )
            .await?;
        if st != 200 || sa != 200 {
            bail!("the access log answered {st} / {sa}");
        }
        let event = page["events"][0]["event"].clone();
        // One line of JSON lines is itself a JSON document: the client decoded it.
        let line: serde_json::Value = match lines {
            serde_json::Value::String(text) => {
                serde_json::from_str(text.trim()).unwrap_or_default()
            }
            one => one,
        };
        let mut all = Vec::new();
        strings(&event, &mut all);
        strings(&line, &mut all);
        if let Some(bad) = all.iter().find(|s| s.chars().any(is_unsafe)) {
            bail!("entry {index} carries control or bidi characters: {bad:?}");
        }
        if event["kind"] != "refusal" || event["action"] != "unknown-action" {
            bail!("entry {index} is not a refusal of unknown-action: {event}");
        }
        if line["responseStatus"]["code"] != 404 {
            bail!(
                "the audit line says {} but 404 was answered",
                line["responseStatus"]["code"]
            );
        }
        Ok(vec![
            format!(
                "HTTP 404, refusal at {index}: action unknown-action, digest {}",
                event["action_digest"]
            ),
            format!("audit line: requestURI {}, code 404", line["requestURI"]),
            "no control, escape or bidi character in the entry or its audit line".into(),
        ])
    })
}

fn no_enumeration(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let body = serde_json::json!({"instance": cx.instance, "ticket": crate::ctx::TICKET, "reason": crate::ctx::REASON});
        let mut ev = Vec::new();
        for token in [None, Some("not-a-jwt")] {
            let mut answers = Vec::new();
            for cluster in [cx.cluster.as_str(), "no-such-cluster-0"] {
                let run = cx
                    .gw
                    .call(
                        "POST",
                        &format!("/v1/clusters/{cluster}/actions/etcd.status"),
                        token,
                        Some(&body),
                    )
                    .await?;
                let list = cx
                    .gw
                    .call(
                        "GET",
                        &format!("/v1/clusters/{cluster}/actions"),
                        token,
                        None,
                    )
                    .await?;
                let events = cx
                    .gw
                    .call(
                        "GET",
                        &format!("/v1/tenants/{}/clusters/{cluster}/events", cx.tenant),
                        token,
                        None,
                    )
                    .await?;
                if run.0 != 401 || list.0 != 401 || events.0 != 401 {
                    bail!("cluster {cluster}: {} / {} / {}", run.0, list.0, events.0);
                }
                answers.push((run, list, events));
            }
            if answers.windows(2).any(|w| w[0] != w[1]) {
                bail!("the answers differ by cluster ({token:?}): {answers:?}");
            }
            ev.push(format!(
                "{}: HTTP 401 with the same body for {} and no-such-cluster-0 on actions, list and events",
                if token.is_some() { "garbage token" } else { "no credentials" },
                cx.cluster
            ));
        }
        Ok(ev)
    })
}
