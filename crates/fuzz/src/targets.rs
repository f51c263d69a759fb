//! The target bodies. Each asserts only what must hold for every input; a failed
//! assertion is a finding, like a panic.

use crate::keys::{keys, log_verifier};
use palisade_agent::dispatch::{Dispatch, DispatchRequest, DISPATCH_PAYLOAD_TYPE};
use palisade_core::event::Event;
use palisade_tlog::checkpoint::Checkpoint;
use palisade_tlog::hash::Hash;
use palisade_tlog::note::{self, Note, NoteSignature, VerifierKey};
use palisade_tlog::proof::TlogProof;
use palisade_tlog::tile::TilePath;
use palisade_tlog::tile::{encode_bundle, parse_bundle};
use palisade_tlog::tree::verify_consistency;
use palisade_tlog::witness::{add_checkpoint as witness_add, AddCheckpointRequest, WitnessState};

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// The agent's `POST /v1/dispatch` body, taken apart as the acceptor does before any
/// state is touched: the JSON request, the DSSE envelope and its signatures, the
/// signed dispatch, the intent entry, its tlog-proof and the consistency hashes.
pub fn dispatch_request(data: &[u8]) {
    // The signed dispatch alone, as if its signature had verified.
    if let Ok(d) = Dispatch::from_bytes(data) {
        assert_eq!(
            d.to_bytes().ok().as_deref(),
            Some(data),
            "a dispatch has one spelling"
        );
    }
    let Ok(req) = serde_json::from_slice::<DispatchRequest>(data) else {
        return;
    };
    let k = keys();
    let signed = !req.dispatch.verified_by(&k.gateway_public).is_empty();
    // Nothing from outside can carry this run's gateway signature.
    assert!(
        !signed,
        "a dispatch verified under a key generated for this run"
    );
    if let Ok(payload) = req.dispatch.payload_bytes(DISPATCH_PAYLOAD_TYPE) {
        let _ = Dispatch::from_bytes(&payload);
    }
    if let Ok(entry) = req.event_bytes() {
        access_event(&entry);
        if let Ok(proof) = TlogProof::parse(req.proof.as_bytes()) {
            let _ = proof.verify(&entry, &k.policy);
        }
    }
    if let Some(c) = &req.consistency {
        let hashes: Vec<Hash> = c
            .hashes
            .iter()
            .filter_map(|h| Hash::from_base64(h).ok())
            .collect();
        let root = palisade_tlog::hash::leaf_hash(b"");
        let _ = verify_consistency(
            c.from_size,
            c.from_size.saturating_add(1),
            &root,
            &root,
            &hashes,
        );
    }
}

/// A log entry as the customer's verifier and the agent decode it: only the
/// canonical bytes of the known schema parse, and they re-encode to themselves.
pub fn access_event(data: &[u8]) {
    if let Ok(event) = Event::from_log_entry(data) {
        let again = event.to_log_entry().ok();
        assert_eq!(again.as_deref(), Some(data), "an event has one spelling");
    }
}

/// The log's append query: only `wait` and `consistency_from`, each at most once.
pub fn append_query(data: &[u8]) {
    let Some(q) = text(data) else { return };
    if palisade_tlog_service::server::append_options(Some(q)).is_ok() {
        let pairs: Vec<&str> = q.split('&').filter(|p| !p.is_empty()).collect();
        assert!(pairs.len() <= 2, "more than two options accepted: {q:?}");
    }
}

/// The journal a log replays at start: whole records are returned in order and cover
/// exactly the bytes said; damage never panics.
pub fn log_journal(data: &[u8]) {
    if let Ok((records, used)) = palisade_tlog_service::journal::decode_all(data) {
        assert!(used <= data.len());
        assert_eq!(records.is_empty(), used == 0);
    }
}

/// The witness's add-checkpoint body through the cosigning decision, with the fuzz
/// log's key and a stored state: a cosignature is only ever given to a checkpoint
/// the log signed, of the log's origin, and never to a tree smaller than the stored
/// one. (The fuzz log key has a fixed seed so that the seed corpus can hold checkpoints
/// it signed.)
pub fn add_checkpoint(data: &[u8]) {
    let Ok(req) = AddCheckpointRequest::parse(data) else {
        return;
    };
    let _ = AddCheckpointRequest::parse(&req.to_bytes());
    let k = keys();
    let log_keys = [log_verifier()];
    let stored = WitnessState {
        size: 3,
        root: palisade_tlog::hash::leaf_hash(b"fuzz"),
    };
    for state in [None, Some(stored)] {
        let min = state.as_ref().map_or(0, |s| s.size);
        if witness_add(&req, Some(&log_keys), state, &k.witness, 1_700_000_000).is_ok() {
            assert!(
                note::open(&req.note().to_bytes(), &log_keys).is_ok(),
                "the witness cosigned a checkpoint the log did not sign"
            );
            assert!(
                req.checkpoint().size() >= min,
                "the witness cosigned a smaller tree"
            );
        }
    }
    assert!(
        witness_add(&req, None, None, &k.witness, 0).is_err(),
        "the witness cosigned for an origin it does not know"
    );
}

/// Signed notes, checkpoints, signature lines and verifier keys.
pub fn signed_note(data: &[u8]) {
    if let Ok(n) = Note::parse(data) {
        let _ = Checkpoint::parse(n.text());
        let _ = Note::parse(&n.to_bytes());
    }
    let k = keys();
    let trusted: [VerifierKey; 2] = [log_verifier(), k.witness.verifier()];
    if let Ok(opened) = note::open(data, &trusted) {
        assert!(
            !opened.verified().is_empty(),
            "a note opened with no verified signature"
        );
    }
    if let Ok(verified) = k.policy.verify(data) {
        assert_eq!(verified.checkpoint().origin(), crate::keys::ORIGIN);
    }
    if let Some(t) = text(data) {
        if let Ok(c) = Checkpoint::parse(t) {
            assert_eq!(Checkpoint::parse(&c.to_text()).ok().as_ref(), Some(&c));
        }
        let _ = VerifierKey::parse(t);
        for line in t.lines() {
            if let Ok(sig) = NoteSignature::parse_line(line) {
                assert_eq!(
                    NoteSignature::parse_line(&sig.to_line()).ok().as_ref(),
                    Some(&sig)
                );
            }
        }
    }
}

/// Tile paths and entry bundles: a parsed path prints as itself, a parsed bundle
/// encodes to the same bytes.
pub fn tile(data: &[u8]) {
    if let Some(t) = text(data) {
        if let Ok(path) = TilePath::parse(t) {
            let tile = path.tile();
            let printed = match path {
                TilePath::Hashes(_) => tile.path(),
                TilePath::Entries(_) => tile.entries_path(),
            };
            assert_eq!(printed, t, "a tile path has one spelling");
        }
    }
    if let Ok(entries) = parse_bundle(data) {
        let again = encode_bundle(&entries).ok();
        assert_eq!(again.as_deref(), Some(data), "a bundle has one spelling");
    }
}

/// tlog-proof files: what parses re-encodes to itself, and a proof that verifies
/// places its entry inside the tree.
pub fn tlog_proof(data: &[u8]) {
    let Ok(proof) = TlogProof::parse(data) else {
        return;
    };
    assert_eq!(
        TlogProof::parse(&proof.to_bytes())
            .ok()
            .map(|p| p.to_bytes()),
        Some(proof.to_bytes())
    );
    if let Ok(verified) = proof.verify(crate::seeds::ENTRY, &keys().policy) {
        assert!(proof.index() < verified.checkpoint().size());
    }
}

/// Signed backup manifests: nothing opens under a key made for this run.
pub fn backup_manifest(data: &[u8]) {
    assert!(
        palisade_backup::Manifest::verify(data, &keys().gateway_public).is_err(),
        "a manifest verified under a key generated for this run"
    );
    let _ = palisade_backup::Manifest::unverified(data);
}

/// The encrypted backup stream: the header, then segments under a fixed data key.
/// A stream yields only plaintext that was sealed under that key, in order.
pub fn backup_stream(data: &[u8]) {
    use palisade_backup::format::{DataKey, Header, Opener};
    let Ok((header, used)) = Header::parse(data) else {
        return;
    };
    let (Some(head), Some(rest)) = (data.get(..used), data.get(used..)) else {
        panic!("header length {used} beyond the input");
    };
    assert_eq!(
        header.encode().ok().as_deref(),
        Some(head),
        "a header has one spelling"
    );
    let Some(key) = DataKey::from_unwrapped(&[5; 32]) else {
        return;
    };
    let mut opener = Opener::new(&key, &header, head);
    let mut out = Vec::new();
    if opener.push(rest, &mut out).is_ok() {
        let _ = opener.finish(&mut out);
    }
    // Only what the seeds sealed under this key can come out, and only in order.
    assert!(
        crate::seeds::SEALED.starts_with(&out),
        "plaintext that was never sealed: {} bytes",
        out.len()
    );
}

/// KMS v2 requests through the plugin's gRPC service on a file key: the first byte
/// picks Status, Encrypt or Decrypt, the rest is the protobuf message. A request
/// never panics the service, and a ciphertext that does not open is never answered
/// as an outage (UNAVAILABLE): kube-apiserver would take the plugin for down.
pub fn kms_request(data: &[u8]) {
    use palisade_kms::pb;
    use palisade_kms::pb::key_management_service_server::KeyManagementService;
    use prost::Message;
    let Some((pick, body)) = data.split_first() else {
        return;
    };
    let Some(service) = kms_service() else {
        return;
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        return;
    };
    rt.block_on(async {
        match pick % 3 {
            0 => {
                if let Ok(req) = pb::StatusRequest::decode(body) {
                    let _ = service.status(tonic::Request::new(req)).await;
                }
            }
            1 => {
                if let Ok(req) = pb::EncryptRequest::decode(body) {
                    let _ = service.encrypt(tonic::Request::new(req)).await;
                }
            }
            _ => {
                if let Ok(req) = pb::DecryptRequest::decode(body) {
                    if let Err(status) = service.decrypt(tonic::Request::new(req)).await {
                        assert_ne!(
                            status.code(),
                            tonic::Code::Unavailable,
                            "a bad request answered as an outage: {}",
                            status.message()
                        );
                    }
                }
            }
        }
    });
}

fn kms_service() -> Option<&'static palisade_kms::service::KmsService> {
    use palisade_kms::health::{Health, HealthPolicy};
    use palisade_kms::metrics::Metrics;
    use palisade_kms::{Kek, KeyRing};
    use std::sync::{Arc, OnceLock};
    static SERVICE: OnceLock<Option<palisade_kms::service::KmsService>> = OnceLock::new();
    SERVICE
        .get_or_init(|| {
            let kek: Arc<dyn Kek> = Arc::new(crate::keys::fixed_kek().ok()?);
            let ring = Arc::new(KeyRing::new(vec![kek]).ok()?);
            let metrics = Arc::new(Metrics::new());
            let health = Arc::new(Health::new(
                ring.clone(),
                metrics.clone(),
                HealthPolicy::default(),
            ));
            Some(palisade_kms::service::KmsService::new(
                ring, health, metrics,
            ))
        })
        .as_ref()
}

/// On-call feeds: iCalendar (what PagerDuty, Opsgenie and Grafana OnCall export) and
/// the YAML rota. A shift always ends after it starts.
pub fn oncall_feed(data: &[u8]) {
    let Some(t) = text(data) else { return };
    if let Ok(shifts) = palisade_oncall::parse_ical(t, "fuzz") {
        for s in shifts {
            assert!(s.start < s.end, "a shift that ends before it starts: {s:?}");
        }
    }
    let _ = palisade_oncall::parse_rota(t);
}

/// Policy YAML: the linter returns a policy or errors, and a policy it accepts has a
/// stable digest.
pub fn policy_parse(data: &[u8]) {
    let Some(t) = text(data) else { return };
    if let Ok(policy) = palisade_policy::Policy::parse_yaml(t) {
        let again = palisade_policy::Policy::parse_yaml(t).map(|p| p.digest());
        assert_eq!(again.ok(), Some(policy.digest()));
    }
}

/// Any bytes as the parameters of any action of the default policy: the validator
/// never panics, and whatever it accepts obeys the always-on string rules.
pub fn validate_params(data: &[u8]) {
    use palisade_core::event::ParamValue;
    use std::sync::OnceLock;
    static POLICY: OnceLock<Option<palisade_policy::Policy>> = OnceLock::new();
    let Some(policy) = POLICY
        .get_or_init(|| {
            palisade_policy::Policy::parse_yaml(include_str!("../../../deploy/policy/default.yaml"))
                .ok()
        })
        .as_ref()
    else {
        panic!("the default policy does not parse");
    };
    // The first byte picks the action; the rest is the parameters object.
    let Some((pick, params)) = data.split_first() else {
        return;
    };
    let names: Vec<String> = policy.actions().map(|a| a.name.to_string()).collect();
    let Some(action) = names.get(usize::from(*pick) % names.len().max(1)) else {
        return;
    };
    if let Ok(valid) = policy.validate(action, params) {
        for value in valid.params().values() {
            if let ParamValue::Str(s) = value {
                assert!(s.is_ascii(), "non-ASCII accepted: {s:?}");
                assert!(!s.starts_with('-'), "leading dash accepted: {s:?}");
                assert!(!s.chars().any(char::is_control), "control accepted: {s:?}");
            }
        }
    }
}
