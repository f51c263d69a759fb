use super::*;
use crate::hash::leaf_hash;

const SOFA: &str =
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

fn signer(name: &str, key_type: KeyType) -> SignerKey {
    SignerKey::generate(name, key_type).unwrap()
}

#[test]
fn spec_example_parses_and_formats_back() {
    let c = Checkpoint::parse(SOFA).unwrap();
    assert_eq!(c.origin(), "example.com/behind-the-sofa");
    assert_eq!(c.size(), 20_852_163);
    assert_eq!(
        c.root().to_base64(),
        "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
    );
    assert!(c.extensions().is_empty());
    assert_eq!(c.to_text(), SOFA);

    let ext = format!("{SOFA}ext one\next two\n");
    let c = Checkpoint::parse(&ext).unwrap();
    assert_eq!(c.extensions(), ["ext one", "ext two"]);
    assert_eq!(c.to_text(), ext);
    assert_eq!(
        Checkpoint::parse("o\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n")
            .unwrap()
            .size(),
        0
    );
}

#[test]
fn checkpoints_are_parsed_strictly() {
    let root = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=";
    let bad = [
        format!("example.com/log\n20852163\n{root}"),
        format!("\n20852163\n{root}\n"),
        format!("example.com/log\n020852163\n{root}\n"),
        format!("example.com/log\n+20852163\n{root}\n"),
        format!("example.com/log\n 20852163\n{root}\n"),
        format!("example.com/log\n20852163 \n{root}\n"),
        format!("example.com/log\n-1\n{root}\n"),
        format!("example.com/log\n18446744073709551616\n{root}\n"),
        format!("example.com/log\n0x10\n{root}\n"),
        format!("example.com/log\n\n{root}\n"),
        "example.com/log\n20852163\n".to_owned(),
        "example.com/log\n20852163\nAAAA\n".to_owned(),
        format!(
            "example.com/log\n20852163\n{}\n",
            root.trim_end_matches('=')
        ),
        format!("example.com/log\n20852163\n {root}\n"),
        format!("example.com/log\n20852163\n{root}\n\n"),
        format!("example.com/log\n20852163\n{root}\next\n\nmore\n"),
        format!("example.com/log\r\n20852163\n{root}\n"),
        "example.com/log\n".to_owned(),
        String::new(),
    ];
    for text in bad {
        assert!(
            matches!(
                Checkpoint::parse(&text),
                Err(CheckpointError::Malformed { .. })
            ),
            "{text:?}"
        );
    }
    assert!(Checkpoint::new("", 1, leaf_hash(b"")).is_err());
    assert!(Checkpoint::new("a\nb", 1, leaf_hash(b"")).is_err());
    assert!(Checkpoint::with_extensions("a", 1, leaf_hash(b""), vec![String::new()]).is_err());
}

#[test]
fn signed_checkpoint_meets_a_witness_quorum() {
    let origin = "palisade.example/clusters/c1";
    let log = signer(origin, KeyType::Ed25519);
    let w: Vec<SignerKey> = (1..=3)
        .map(|i| signer(&format!("witness.example/w{i}"), KeyType::Cosignature))
        .collect();
    let checkpoint = Checkpoint::new(origin, 42, leaf_hash(b"root")).unwrap();
    let mut note = checkpoint.sign(&log).unwrap();
    note.add_signature(checkpoint.cosign(&w[0], 1_700_000_000).unwrap())
        .unwrap();
    note.add_signature(checkpoint.cosign(&w[2], 1_700_000_005).unwrap())
        .unwrap();
    // A cosignature from a witness nobody configured is ignored.
    let stranger = signer("stranger.example", KeyType::Cosignature);
    note.add_signature(checkpoint.cosign(&stranger, 1).unwrap())
        .unwrap();
    let bytes = note.to_bytes();

    let witnesses: Vec<VerifierKey> = w.iter().map(SignerKey::verifier).collect();
    let policy = LogPolicy::new(origin, log.verifier())
        .unwrap()
        .with_witnesses(witnesses.clone(), 2)
        .unwrap();
    let verified = policy.verify(&bytes).unwrap();
    assert_eq!(verified.checkpoint(), &checkpoint);
    let times: Vec<u64> = verified
        .cosignatures()
        .iter()
        .map(Cosignature::timestamp)
        .collect();
    assert_eq!(times, vec![1_700_000_000, 1_700_000_005]);
    assert_eq!(verified.note().signatures().len(), 4);

    let strict = LogPolicy::new(origin, log.verifier())
        .unwrap()
        .with_witnesses(witnesses.clone(), 3)
        .unwrap();
    assert_eq!(
        strict.verify(&bytes).unwrap_err(),
        CheckpointError::QuorumNotMet { have: 2, need: 3 }
    );
    assert!(matches!(
        LogPolicy::new(origin, log.verifier())
            .unwrap()
            .with_witnesses(witnesses, 4),
        Err(CheckpointError::ImpossibleQuorum { have: 3, need: 4 })
    ));
}

#[test]
fn one_witness_key_under_two_names_counts_once() {
    let origin = "log.example";
    let log = signer(origin, KeyType::Ed25519);
    let seed = [5u8; 32];
    let a = SignerKey::from_seed("a.example", KeyType::Cosignature, &seed).unwrap();
    let b = SignerKey::from_seed("b.example", KeyType::Cosignature, &seed).unwrap();
    let checkpoint = Checkpoint::new(origin, 1, leaf_hash(b"x")).unwrap();
    let mut note = checkpoint.sign(&log).unwrap();
    note.add_signature(checkpoint.cosign(&a, 10).unwrap())
        .unwrap();
    note.add_signature(checkpoint.cosign(&b, 10).unwrap())
        .unwrap();
    assert!(matches!(
        LogPolicy::new(origin, log.verifier())
            .unwrap()
            .with_witnesses(vec![a.verifier(), b.verifier()], 2),
        Err(CheckpointError::ImpossibleQuorum { have: 1, need: 2 })
    ));
    let c = signer("c.example", KeyType::Cosignature);
    let policy = LogPolicy::new(origin, log.verifier())
        .unwrap()
        .with_witnesses(vec![a.verifier(), b.verifier(), c.verifier()], 2)
        .unwrap();
    assert_eq!(
        policy.verify(&note.to_bytes()).unwrap_err(),
        CheckpointError::QuorumNotMet { have: 1, need: 2 }
    );
}

#[test]
fn policy_rejects_wrong_origin_missing_log_signature_and_bad_cosignatures() {
    let origin = "log.example";
    let log = signer(origin, KeyType::Ed25519);
    let w = signer("w.example", KeyType::Cosignature);
    let policy = LogPolicy::new(origin, log.verifier())
        .unwrap()
        .with_witnesses(vec![w.verifier()], 1)
        .unwrap();

    let other = Checkpoint::new("other.example", 1, leaf_hash(b"x")).unwrap();
    let mut note = other.sign(&log).unwrap();
    note.add_signature(other.cosign(&w, 1).unwrap()).unwrap();
    assert!(matches!(
        policy.verify(&note.to_bytes()),
        Err(CheckpointError::WrongOrigin { .. })
    ));

    // Only the witness signed: not enough, the log must sign.
    let checkpoint = Checkpoint::new(origin, 1, leaf_hash(b"x")).unwrap();
    let mut only_witness = Note::new(checkpoint.to_text()).unwrap();
    only_witness
        .add_signature(checkpoint.cosign(&w, 1).unwrap())
        .unwrap();
    assert!(matches!(
        policy.verify(&only_witness.to_bytes()),
        Err(CheckpointError::NotSignedByLog { .. })
    ));

    // A cosignature over a different checkpoint fails, failing the whole note.
    let mut note = checkpoint.sign(&log).unwrap();
    let elsewhere = Checkpoint::new(origin, 2, leaf_hash(b"y")).unwrap();
    note.add_signature(elsewhere.cosign(&w, 1).unwrap())
        .unwrap();
    assert!(matches!(
        policy.verify(&note.to_bytes()),
        Err(CheckpointError::Note(NoteError::BadSignature { .. }))
    ));

    // Keys of the wrong type are refused by the policy itself.
    assert!(matches!(
        LogPolicy::new(origin, w.verifier()),
        Err(CheckpointError::WrongKeyType { .. })
    ));
    assert!(LogPolicy::new(origin, log.verifier())
        .unwrap()
        .with_witnesses(vec![log.verifier()], 1)
        .is_err());
}

#[test]
fn a_single_cosignature_can_be_checked_for_its_time() {
    let w = signer("w.example", KeyType::Cosignature);
    let x = signer("x.example", KeyType::Cosignature);
    let checkpoint = Checkpoint::parse(SOFA).unwrap();
    let sig = checkpoint.cosign(&w, 1_679_315_147).unwrap();
    assert_eq!(
        checkpoint.verify_cosignature(&sig, &w.verifier()).unwrap(),
        1_679_315_147
    );
    assert!(matches!(
        checkpoint.verify_cosignature(&sig, &x.verifier()),
        Err(CheckpointError::NotThisWitness { .. })
    ));
    let other = Checkpoint::new("example.com/behind-the-sofa", 1, leaf_hash(b"")).unwrap();
    assert!(matches!(
        other.verify_cosignature(&sig, &w.verifier()),
        Err(CheckpointError::BadCosignature { .. })
    ));
}

/// A required group (a tenant's witnesses) must cosign beside the log's quorum: the
/// quorum alone, however large, does not stand in for it, nor the group for it.
#[test]
fn a_required_group_must_cosign_besides_the_quorum() {
    let origin = "log.example";
    let log = signer(origin, KeyType::Ed25519);
    let provider = signer("provider.example", KeyType::Cosignature);
    let tenant = signer("tenant.example", KeyType::Cosignature);
    let checkpoint = Checkpoint::new(origin, 3, leaf_hash(b"x")).unwrap();
    let base = LogPolicy::new(origin, log.verifier())
        .unwrap()
        .with_witnesses(vec![provider.verifier()], 1)
        .unwrap();
    let group = WitnessGroup {
        name: "tenant".into(),
        keys: vec![tenant.verifier()],
        quorum: 1,
    };
    let policy = base.clone().with_group(group.clone()).unwrap();

    let mut by_provider = checkpoint.sign(&log).unwrap();
    by_provider
        .add_signature(checkpoint.cosign(&provider, 10).unwrap())
        .unwrap();
    assert!(base.verify(&by_provider.to_bytes()).is_ok());
    assert_eq!(
        policy.verify(&by_provider.to_bytes()).unwrap_err(),
        CheckpointError::GroupNotMet {
            group: "tenant".into(),
            have: 0,
            need: 1
        }
    );

    let mut by_tenant = checkpoint.sign(&log).unwrap();
    by_tenant
        .add_signature(checkpoint.cosign(&tenant, 10).unwrap())
        .unwrap();
    assert_eq!(
        policy.verify(&by_tenant.to_bytes()).unwrap_err(),
        CheckpointError::QuorumNotMet { have: 0, need: 1 }
    );

    let mut both = by_provider.clone();
    both.add_signature(checkpoint.cosign(&tenant, 11).unwrap())
        .unwrap();
    let verified = policy.verify(&both.to_bytes()).unwrap();
    assert_eq!(verified.cosignatures().len(), 2);
    assert_eq!(policy.groups(), &[group]);

    assert!(matches!(
        base.clone().with_group(WitnessGroup {
            name: "empty".into(),
            keys: vec![],
            quorum: 1
        }),
        Err(CheckpointError::ImpossibleQuorum { have: 0, need: 1 })
    ));
    assert!(matches!(
        base.with_group(WitnessGroup {
            name: "zero".into(),
            keys: vec![tenant.verifier()],
            quorum: 0
        }),
        Err(CheckpointError::ImpossibleQuorum { have: 1, need: 0 })
    ));
}

#[test]
fn a_stored_view_opens_with_a_retired_log_key_and_needs_no_witness_again() {
    let origin = "example.com/log/c1";
    let (old, new) = (
        signer("example.com/log", KeyType::Ed25519),
        signer("example.com/log", KeyType::Ed25519),
    );
    let witness = signer("w", KeyType::Cosignature);
    let cp = Checkpoint::new(origin, 5, Hash([3; 32])).unwrap();
    let stored = cp.sign(&old).unwrap().to_bytes();
    let policy = LogPolicy::new(origin, new.verifier())
        .unwrap()
        .with_witnesses(vec![witness.verifier()], 1)
        .unwrap();
    // From the network, a checkpoint signed by the retired key alone is refused...
    assert!(matches!(
        policy.verify(&stored),
        Err(CheckpointError::Note(NoteError::NoTrustedSignature { .. }))
    ));
    // ...and so is a stored one, unless the key is named as retired.
    assert!(policy.verify_stored(&stored, &[]).is_err());
    let opened = policy.verify_stored(&stored, &[old.verifier()]).unwrap();
    assert_eq!(opened.size(), 5);
    // The origin still binds, and a retired key must be a log (Ed25519) key.
    let elsewhere = Checkpoint::new("example.com/log/c2", 5, Hash([3; 32]))
        .unwrap()
        .sign(&old)
        .unwrap()
        .to_bytes();
    assert!(matches!(
        policy.verify_stored(&elsewhere, &[old.verifier()]),
        Err(CheckpointError::WrongOrigin { .. })
    ));
    assert!(matches!(
        policy.verify_stored(&stored, &[witness.verifier()]),
        Err(CheckpointError::WrongKeyType { .. })
    ));
}
