use super::*;
use crate::note::KeyType;
use crate::testutil::{stored, RefTree};
use crate::tree::{consistency_proof, tree_hash};

const ORIGIN: &str = "palisade.example/clusters/c1";

struct Fixture {
    log: SignerKey,
    witness: SignerKey,
    store: Vec<Hash>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            log: SignerKey::generate(ORIGIN, KeyType::Ed25519).unwrap(),
            witness: SignerKey::generate("witness.example/w1", KeyType::Cosignature).unwrap(),
            store: stored(100),
        }
    }

    fn signed(&self, size: u64) -> Note {
        let root = tree_hash(size, &self.store).unwrap();
        Checkpoint::new(ORIGIN, size, root)
            .unwrap()
            .sign(&self.log)
            .unwrap()
    }

    fn request(&self, old: u64, new: u64) -> AddCheckpointRequest {
        let proof = consistency_proof(old, new, &self.store).unwrap();
        AddCheckpointRequest::new(old, proof, self.signed(new)).unwrap()
    }

    fn state(&self, size: u64) -> WitnessState {
        WitnessState {
            size,
            root: tree_hash(size, &self.store).unwrap(),
        }
    }

    fn decide(
        &self,
        request: &AddCheckpointRequest,
        stored: Option<WitnessState>,
    ) -> Result<Cosigned, Refusal> {
        // The body goes over the wire: always decide on what was parsed.
        let parsed = AddCheckpointRequest::parse(&request.to_bytes()).unwrap();
        assert_eq!(&parsed, request);
        add_checkpoint(
            &parsed,
            Some(&[self.log.verifier()]),
            stored,
            &self.witness,
            1_700_000_000,
        )
    }
}

#[test]
fn spec_example_body_parses() {
    let body = "old 20852014\n\
PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n\
jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n\
5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n\
/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n\
\n\
example.com/behind-the-sofa\n\
20852163\n\
CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\
\n\
— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n\
— example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=\n";
    let request = AddCheckpointRequest::parse(body.as_bytes()).unwrap();
    assert_eq!(request.old_size(), 20_852_014);
    assert_eq!(request.proof().len(), 4);
    assert_eq!(request.origin(), "example.com/behind-the-sofa");
    assert_eq!(request.checkpoint().size(), 20_852_163);
    assert_eq!(request.note().signatures().len(), 2);
    assert_eq!(request.to_bytes(), body.as_bytes());
}

#[test]
fn first_checkpoint_from_a_known_log_is_cosigned() {
    let f = Fixture::new();
    let cosigned = f.decide(&f.request(0, 10), None).unwrap();
    assert_eq!(cosigned.state, f.state(10));
    // The returned line is a cosignature the log can attach and clients verify.
    let checkpoint = Checkpoint::new(ORIGIN, 10, f.state(10).root).unwrap();
    let line = cosigned.response_body();
    let sig = NoteSignature::parse_line(&line).unwrap();
    assert_eq!(
        checkpoint
            .verify_cosignature(&sig, &f.witness.verifier())
            .unwrap(),
        1_700_000_000
    );
}

#[test]
fn consistent_growth_is_cosigned_and_same_checkpoint_is_recosigned() {
    let f = Fixture::new();
    let reference = RefTree::default();
    for (old, new) in [(10, 11), (11, 64), (64, 65), (65, 100), (100, 100)] {
        let cosigned = f.decide(&f.request(old, new), Some(f.state(old))).unwrap();
        assert_eq!(cosigned.state.root, reference.mth(0, new));
    }
}

#[test]
fn refusals_map_to_the_spec_status_codes() {
    let f = Fixture::new();
    let unknown = add_checkpoint(&f.request(0, 5), None, None, &f.witness, 1).unwrap_err();
    assert_eq!(unknown.status(), 404);

    // Signed by someone else → 403.
    let other = SignerKey::generate(ORIGIN, KeyType::Ed25519).unwrap();
    let forged = Checkpoint::new(ORIGIN, 5, f.state(5).root)
        .unwrap()
        .sign(&other)
        .unwrap();
    let request = AddCheckpointRequest::new(0, vec![], forged).unwrap();
    assert_eq!(f.decide(&request, None).unwrap_err().status(), 403);

    // Old size above the checkpoint size → 400.
    let request = AddCheckpointRequest::new(9, vec![], f.signed(5)).unwrap();
    assert_eq!(
        f.decide(&request, Some(f.state(9))).unwrap_err(),
        Refusal::OldSizeAboveNew { old: 9, new: 5 }
    );

    // Old size is not what the witness stored → 409 with the stored size.
    let refusal = f.decide(&f.request(5, 20), Some(f.state(10))).unwrap_err();
    assert_eq!(refusal, Refusal::StaleOldSize { old: 5, stored: 10 });
    assert_eq!(refusal.status(), 409);
    assert_eq!(
        refusal.body(),
        Some(("text/x.tlog.size", "10\n".to_owned()))
    );
    assert_eq!(f.decide(&f.request(5, 20), None).unwrap_err().status(), 409);

    // Bad proof → 422, including a proof where none may be.
    let mut request = f.request(10, 20);
    request.proof[0].0[0] ^= 1;
    assert_eq!(
        f.decide(&request, Some(f.state(10))).unwrap_err().status(),
        422
    );
    let request = AddCheckpointRequest::new(0, vec![f.state(3).root], f.signed(20)).unwrap();
    assert_eq!(f.decide(&request, None).unwrap_err().status(), 422);
    let request = AddCheckpointRequest::new(20, vec![f.state(3).root], f.signed(20)).unwrap();
    assert_eq!(
        f.decide(&request, Some(f.state(20))).unwrap_err().status(),
        422
    );

    // A fork: same size, different root → 409. A different history → 422.
    let forked = WitnessState {
        size: 20,
        root: f.state(19).root,
    };
    let refusal = f.decide(&f.request(20, 20), Some(forked)).unwrap_err();
    assert_eq!(
        refusal,
        Refusal::RootConflict {
            size: 20,
            stored: 20
        }
    );
    assert_eq!(refusal.status(), 409);
    assert_eq!(
        f.decide(&f.request(20, 30), Some(forked))
            .unwrap_err()
            .status(),
        422
    );

    // Keys of the wrong type are a server problem, not the log's.
    let cosigner = SignerKey::generate(ORIGIN, KeyType::Cosignature).unwrap();
    let refusal = add_checkpoint(
        &f.request(0, 5),
        Some(&[cosigner.verifier()]),
        None,
        &f.witness,
        1,
    )
    .unwrap_err();
    assert_eq!(refusal.status(), 500);
    let wrong = SignerKey::generate("w", KeyType::Ed25519).unwrap();
    let refusal =
        add_checkpoint(&f.request(0, 5), Some(&[f.log.verifier()]), None, &wrong, 1).unwrap_err();
    assert_eq!(refusal.status(), 500);
}

#[test]
fn malformed_bodies_are_400() {
    let f = Fixture::new();
    let good = String::from_utf8(f.request(10, 20).to_bytes()).unwrap();
    let note = f.signed(20).to_string();
    let hash = f.state(1).root.to_base64();
    let cases = [
        good.replacen("old 10", "old 010", 1),
        good.replacen("old 10", "old  10", 1),
        good.replacen("old 10", "Old 10", 1),
        good.replacen("old 10", "old -1", 1),
        good.replacen("old 10\n", "old 10\r\n", 1),
        format!("old 0\n{}\n", note),
        format!("old 0\n{hash}\n"),
        format!("old 0\n{}\n\n{note}", hash.trim_end_matches('=')),
        format!("old 0\n{}\n{note}", format!("{hash}\n").repeat(64)),
        format!("old 0\n\n{}", note.replace("\n\n", "\n")),
        "old 0".to_owned(),
        String::new(),
        format!(
            "old 0\n\nnot a checkpoint\n\n{}",
            note.lines().last().unwrap()
        ),
    ];
    for body in cases {
        let err = AddCheckpointRequest::parse(body.as_bytes()).unwrap_err();
        assert_eq!(Refusal::from(err).status(), 400, "{body:?}");
    }
    // 63 proof lines are allowed by the format.
    let most = format!("old 0\n{}\n{note}", format!("{hash}\n").repeat(63));
    assert_eq!(
        AddCheckpointRequest::parse(most.as_bytes())
            .unwrap()
            .proof()
            .len(),
        63
    );
    assert!(AddCheckpointRequest::parse(b"old 0\n\xff\n\n").is_err());
}
