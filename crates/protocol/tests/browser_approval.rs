//! The console signs approvals in the browser from what `palisade_audit::approval`
//! builds; the gateway and agents open them with `palisade_policy`. The two must
//! agree byte for byte: the payload, the message signed, the approver's key id.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use palisade_core::canonical::to_canonical_vec;
use palisade_core::time::Timestamp;
use palisade_core::{ClusterId, EventId, Sha256Digest, TenantId};
use palisade_policy::customer_approval::{
    CustomerApproval, Decision, APPROVAL_PAYLOAD_TYPE, APPROVAL_SCHEMA,
};
use palisade_policy::dsse::{Envelope, EnvelopeSignature};
use palisade_policy::keys::{generate, SigningKey};

fn approval(decision: Decision, reason: Option<&str>) -> CustomerApproval {
    CustomerApproval {
        schema: APPROVAL_SCHEMA.into(),
        tenant: TenantId::parse("demo").expect("tenant"),
        cluster: ClusterId::parse("demo").expect("cluster"),
        request: EventId::parse("0123456789abcdef0123456789abcdef").expect("id"),
        request_index: 4,
        request_digest: Sha256Digest::of(b"the request's entry"),
        decision,
        issued_at: Timestamp::from_unix_seconds(1_780_000_000),
        expires_at: Timestamp::from_unix_seconds(1_780_028_800),
        reason: reason.map(str::to_string),
    }
}

fn as_page_sends(a: &CustomerApproval) -> palisade_audit::approval::Decision {
    palisade_audit::approval::Decision {
        tenant: a.tenant.to_string(),
        cluster: a.cluster.to_string(),
        request: a.request.to_string(),
        request_index: a.request_index,
        request_digest: a.request_digest.to_string(),
        decision: a.decision.as_str().to_string(),
        issued_at: a.issued_at.to_string(),
        expires_at: a.expires_at.to_string(),
        reason: a.reason.clone(),
    }
}

#[test]
fn an_approval_signed_as_the_console_signs_it_opens_as_any_approval() {
    assert_eq!(palisade_audit::approval::APPROVAL_SCHEMA, APPROVAL_SCHEMA);
    assert_eq!(
        palisade_audit::approval::APPROVAL_PAYLOAD_TYPE,
        APPROVAL_PAYLOAD_TYPE
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let files = generate("ana", dir.path(), false).expect("key");
    let key = SigningKey::read(&files.private).expect("read key");
    let raw = key.public().raw().expect("ed25519").to_vec();
    let keyid = palisade_audit::approval::key_id(&raw).expect("key id");
    assert_eq!(keyid, key.key_id(), "the page's key id is the TUF key id");
    assert!(palisade_audit::approval::key_id(&raw[..31]).is_err());

    for (decision, reason) in [
        (Decision::Approve, None),
        (Decision::Deny, Some("not during the freeze")),
    ] {
        let a = approval(decision, reason);
        let built = palisade_audit::approval::to_sign(&as_page_sends(&a)).expect("to sign");
        let payload = STANDARD.decode(&built.payload).expect("base64");
        assert_eq!(payload, to_canonical_vec(&a).expect("canonical"));
        // What WebCrypto signs is the PAE; the gateway opens the envelope.
        let sig = key.sign(&STANDARD.decode(&built.pae).expect("pae"));
        let env = Envelope {
            payload: built.payload.clone(),
            payload_type: built.payload_type.to_string(),
            signatures: vec![EnvelopeSignature {
                keyid: keyid.clone(),
                sig: STANDARD.encode(sig),
            }],
        };
        let opened = CustomerApproval::open(&env, std::slice::from_ref(key.public()))
            .expect("the gateway opens it");
        assert_eq!(opened.approval, a);
    }

    let mut odd = as_page_sends(&approval(Decision::Approve, None));
    odd.decision = "maybe".into();
    assert!(palisade_audit::approval::to_sign(&odd).is_err());
}

#[test]
fn a_tenant_statement_is_checked_in_the_browser_as_the_agent_checks_it() {
    use palisade_policy::tenant::TENANT_TRUST_PAYLOAD_TYPE;
    assert_eq!(
        palisade_audit::console::TENANT_TRUST_PAYLOAD_TYPE,
        TENANT_TRUST_PAYLOAD_TYPE
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let tenant = SigningKey::read(&generate("tenant", dir.path(), false).expect("key").private)
        .expect("read");
    let other = SigningKey::read(&generate("other", dir.path(), false).expect("key").private)
        .expect("read");
    let raw: [u8; 32] = tenant
        .public()
        .raw()
        .expect("ed25519")
        .try_into()
        .expect("32");
    let body = br#"{"seq":1}"#;
    let signed = |key: &SigningKey, payload_type: &str| {
        palisade_core::event::SignedEnvelope::from(&Envelope::sign(payload_type, body, key))
    };
    let ok = palisade_audit::agent::statement_signed_by(
        &signed(&tenant, TENANT_TRUST_PAYLOAD_TYPE),
        TENANT_TRUST_PAYLOAD_TYPE,
        &raw,
    )
    .expect("the tenant's own statement");
    assert_eq!(ok, body);
    let by_other = palisade_audit::agent::statement_signed_by(
        &signed(&other, TENANT_TRUST_PAYLOAD_TYPE),
        TENANT_TRUST_PAYLOAD_TYPE,
        &raw,
    );
    assert!(by_other.is_err_and(|e| e.contains("not signed by your tenant key")));
    let other_type = palisade_audit::agent::statement_signed_by(
        &signed(&tenant, "application/vnd.palisade.customer-approval+json"),
        TENANT_TRUST_PAYLOAD_TYPE,
        &raw,
    );
    assert!(other_type.is_err_and(|e| e.contains("payload type")));
}
