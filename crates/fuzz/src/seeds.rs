//! Seed inputs: one or more valid examples per target, made with the same encoders
//! the services use, so that the fuzzer starts from inputs that reach deep into each
//! parser. `scripts/fuzz.sh` writes them into `fuzz/corpus/<target>/seed-*` before a
//! campaign; they are also replayed by this crate's tests.

use crate::keys::{fixed_kek, keys, ORIGIN};
use palisade_core::event::EVENT_SCHEMA;
use palisade_kms::Kek;
use palisade_tlog::checkpoint::Checkpoint;
use palisade_tlog::hash::leaf_hash;
use palisade_tlog::proof::TlogProof;
use palisade_tlog::tile::encode_bundle;
use palisade_tlog::tree::Frontier;
use palisade_tlog::witness::AddCheckpointRequest;
use serde_json::json;

/// The entry the seed tlog-proofs prove.
pub const ENTRY: &[u8] = b"entry";
/// The plaintext the seed backup streams seal.
pub const SEALED: &[u8] = b"etcd snapshot bytes stand-in for the fuzz seeds";

/// Every target's seeds: (target name, seed bytes).
pub fn all() -> Result<Vec<(&'static str, Vec<u8>)>, String> {
    let mut out: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let (note, proof) = signed_tree()?;
    out.push(("signed_note", note.clone()));
    out.push(("tlog_proof", proof.clone()));
    let signed = palisade_tlog::note::Note::parse(&note).map_err(|e| e.to_string())?;
    let req = AddCheckpointRequest::new(0, Vec::new(), signed).map_err(|e| e.to_string())?;
    out.push(("add_checkpoint", req.to_bytes()));
    for path in ["tile/0/000", "tile/1/x001/234.p/17", "tile/entries/005.p/3"] {
        out.push(("tile", path.as_bytes().to_vec()));
    }
    let bundle = encode_bundle(&[b"first".as_slice(), b"second"]).map_err(|e| e.to_string())?;
    out.push(("tile", bundle));
    for q in ["wait=stored", "wait=witnessed&consistency_from=12"] {
        out.push(("append_query", q.as_bytes().to_vec()));
    }
    out.push(("log_journal", journal(&note)));
    let [intent, result, refusal] = events()?;
    out.push(("access_event", intent.clone()));
    out.push(("access_event", result));
    out.push(("access_event", refusal));
    out.push(("dispatch_request", dispatch_request(&intent, &proof)?));
    out.push(("backup_manifest", manifest()?));
    out.push(("backup_stream", backup_stream()?));
    out.extend(kms_requests()?.into_iter().map(|r| ("kms_request", r)));
    out.push(("oncall_feed", ICAL.as_bytes().to_vec()));
    out.push(("oncall_feed", ROTA.as_bytes().to_vec()));
    out.push((
        "policy_parse",
        include_str!("../../../deploy/policy/default.yaml")
            .as_bytes()
            .to_vec(),
    ));
    for params in [
        &b"\x00{}"[..],
        b"\x05{\"keep_last\":3}",
        b"\x09{\"component\":\"etcd\"}",
    ] {
        out.push(("validate_params", params.to_vec()));
    }
    Ok(out)
}

/// A three-entry tree: its checkpoint signed by the fuzz log key and cosigned by the
/// fuzz witness, and the tlog-proof of [`ENTRY`] at index 0.
fn signed_tree() -> Result<(Vec<u8>, Vec<u8>), String> {
    let k = keys();
    let mut frontier = Frontier::new();
    let mut stored = Vec::new();
    for e in [ENTRY, b"two".as_slice(), b"three"] {
        stored.extend(frontier.append(leaf_hash(e)).map_err(|e| e.to_string())?);
    }
    let cp =
        Checkpoint::new(ORIGIN, frontier.size(), frontier.root()).map_err(|e| e.to_string())?;
    let mut note = cp.sign(&k.log).map_err(|e| e.to_string())?;
    note.add_signature(
        cp.cosign(&k.witness, 1_700_000_000)
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let bytes = note.to_bytes();
    let proof = TlogProof::produce(0, note, None, &stored).map_err(|e| format!("{e:?}"))?;
    Ok((bytes, proof.to_bytes()))
}

fn journal(note: &[u8]) -> Vec<u8> {
    use palisade_tlog_service::journal::{encode, Record};
    let record = Record {
        first: 0,
        entries: vec![
            ENTRY.to_vec().into(),
            b"two".to_vec().into(),
            b"three".to_vec().into(),
        ],
        note: note.to_vec().into(),
    };
    let mut out = encode(&record);
    out.extend(encode(&record));
    out
}

fn canonical(v: serde_json::Value) -> Result<Vec<u8>, String> {
    palisade_core::canonical::to_canonical_vec(&v).map_err(|e| e.to_string())
}

/// An intent, a result and a refusal, as log entries.
fn events() -> Result<[Vec<u8>; 3], String> {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let intent = canonical(json!({
        "schema": EVENT_SCHEMA, "kind": "intent",
        "event_id": "0123456789abcdef0123456789abcdef", "time": "2026-12-07T01:02:03Z",
        "tenant": "demo", "cluster": "demo", "instance": "demo-0",
        "actor": {"id": "op-5f3a9c0d2b7e4f18", "groups": ["sre"], "grant": {"schedule": "primary", "role": "operator", "ends_at": "2026-12-07T09:00:00Z"}},
        "action": "etcd.status", "parameters": {},
        "justification": {"ticket": "INC-1", "reason": "etcd latency alert"},
        "policy": {"version": 1, "digest": digest},
        "dispatch_digest": digest,
    }))?;
    let result = canonical(json!({
        "schema": EVENT_SCHEMA, "kind": "result",
        "event_id": "1123456789abcdef0123456789abcdef", "time": "2026-12-07T01:02:04Z",
        "cluster": "demo", "intent": "0123456789abcdef0123456789abcdef",
        "outcome": "succeeded", "output_digest": digest,
    }))?;
    let refusal = canonical(json!({
        "schema": EVENT_SCHEMA, "kind": "refusal",
        "event_id": "2123456789abcdef0123456789abcdef", "time": "2026-12-07T01:02:05Z",
        "cluster": "demo", "action": "unknown-action",
        "action_digest": format!("sha256:{}", "cd".repeat(32)), "stage": "validate",
        "reason": "unknown-action", "status": 400,
    }))?;
    Ok([intent, result, refusal])
}

fn dispatch_request(intent: &[u8], proof: &[u8]) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let digest = format!("sha256:{}", "ab".repeat(32));
    let dispatch = canonical(json!({
        "schema": palisade_agent::dispatch::DISPATCH_SCHEMA,
        "nonce": "3123456789abcdef0123456789abcdef",
        "issued_at": "2026-12-07T01:02:03Z", "expires_at": "2026-12-07T01:03:03Z",
        "tenant": "demo", "cluster": "demo", "instance": "demo-0",
        "event_id": "0123456789abcdef0123456789abcdef",
        "actor": "op-5f3a9c0d2b7e4f18", "action": "etcd.status", "parameters": {},
        "policy": {"version": 1, "digest": digest},
    }))?;
    let env = palisade_policy::dsse::Envelope::sign(
        palisade_agent::dispatch::DISPATCH_PAYLOAD_TYPE,
        &dispatch,
        &crate::keys::untrusted_signer()?,
    );
    serde_json::to_vec(&json!({
        "dispatch": env,
        "event": b64.encode(intent),
        "proof": String::from_utf8_lossy(proof),
        "consistency": {"from_size": 1, "hashes": [b64.encode([1u8; 32])]},
    }))
    .map_err(|e| e.to_string())
}

fn manifest() -> Result<Vec<u8>, String> {
    let body = canonical(json!({
        "schema": palisade_backup::manifest::MANIFEST_SCHEMA,
        "backup_id": "20261207-010203-demo-0", "format_version": 1,
        "tenant": "demo", "cluster": "demo", "instance": "demo-0",
        "member_id": "8e9e05c52164694d", "etcd_revision": 42,
        "created_at": "2026-12-07T01:02:03Z", "object": "demo/demo/20261207-010203-demo-0.pbk",
        "snapshot_bytes": 20512, "object_bytes": 20700, "header_bytes": 120,
        "segment_size": 65536, "segments": 1, "object_sha256": "cd".repeat(32),
        "key_id": "insecure-dev:file:00", "wrapped_key": "AAAA",
        "requested_by": {"origin": ORIGIN, "index": 7, "event_id": "0123456789abcdef0123456789abcdef"},
    }))?;
    let env = palisade_policy::dsse::Envelope::sign(
        palisade_backup::manifest::MANIFEST_PAYLOAD_TYPE,
        &body,
        &crate::keys::untrusted_signer()?,
    );
    serde_json::to_vec(&env).map_err(|e| e.to_string())
}

fn backup_stream() -> Result<Vec<u8>, String> {
    use palisade_backup::format::{DataKey, Header, Sealer};
    let key = DataKey::from_unwrapped(&[5; 32]).ok_or("data key")?;
    let header = Header::new("seed-backup-1", "insecure-dev:file:00", vec![9; 60])
        .map_err(|e| e.to_string())?;
    let (mut sealer, mut out) = Sealer::new(&key, &header).map_err(|e| e.to_string())?;
    sealer.push(SEALED, &mut out).map_err(|e| e.to_string())?;
    sealer.finish(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn kms_requests() -> Result<Vec<Vec<u8>>, String> {
    use palisade_kms::pb;
    use prost::Message;
    let kek = fixed_kek()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| e.to_string())?;
    let ciphertext = rt
        .block_on(kek.encrypt(&[1; 32]))
        .map_err(|e| e.to_string())?;
    let key_id = kek.key_id().as_str().to_string();
    let with = |pick: u8, msg: Vec<u8>| {
        let mut v = vec![pick];
        v.extend(msg);
        v
    };
    let mut annotations = std::collections::HashMap::new();
    annotations.insert("version.encryption.example.com".to_string(), b"1".to_vec());
    Ok(vec![
        with(0, pb::StatusRequest::default().encode_to_vec()),
        with(
            1,
            pb::EncryptRequest {
                plaintext: vec![2; 32],
                uid: "6f1d0e1c-1".into(),
            }
            .encode_to_vec(),
        ),
        with(
            2,
            pb::DecryptRequest {
                ciphertext,
                uid: "6f1d0e1c-2".into(),
                key_id,
                annotations,
            }
            .encode_to_vec(),
        ),
    ])
}

const ICAL: &str =
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Example Paging Service//On-call export//EN\r\n\
BEGIN:VEVENT\r\nUID:Q1EXAMPLE-20260105\r\nDTSTAMP:20260101T000000Z\r\n\
DTSTART;VALUE=DATE-TIME:20260105T080000Z\r\nDTEND;VALUE=DATE-TIME:20260112T080000Z\r\n\
SUMMARY:On Call - Alice Example - Primary\r\nATTENDEE;CN=Alice Example:mailto:alice@example.com\r\n\
RRULE:FREQ=WEEKLY;COUNT=4\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

const ROTA: &str = "apiVersion: palisade.dev/v1\nkind: Rota\nschedules:\n  - name: primary\n    \
timeZone: Europe/Berlin\n    rotation: weekly\n    handoff: \"09:00\"\n    handoffDay: monday\n    \
start: 2026-01-05\n    participants: [alice, bob, carol]\n";
