use super::*;
use crate::note::{KeyType, SignerKey};
use crate::testutil::{leaf_data, stored};
use crate::tree::tree_hash;

const ORIGIN: &str = "palisade.example/clusters/c1";

struct Log {
    key: SignerKey,
    witness: SignerKey,
    store: Vec<Hash>,
}

impl Log {
    fn new() -> Log {
        Log {
            key: SignerKey::generate(ORIGIN, KeyType::Ed25519).unwrap(),
            witness: SignerKey::generate("witness.example/w1", KeyType::Cosignature).unwrap(),
            store: stored(300),
        }
    }

    fn signed(&self, size: u64) -> Note {
        let c = Checkpoint::new(ORIGIN, size, tree_hash(size, &self.store).unwrap()).unwrap();
        let mut note = c.sign(&self.key).unwrap();
        note.add_signature(c.cosign(&self.witness, 1_700_000_000).unwrap())
            .unwrap();
        note
    }

    fn policy(&self) -> LogPolicy {
        LogPolicy::new(ORIGIN, self.key.verifier())
            .unwrap()
            .with_witnesses(vec![self.witness.verifier()], 1)
            .unwrap()
    }
}

#[test]
fn produced_proofs_verify_offline() {
    let log = Log::new();
    for size in [1u64, 2, 3, 7, 8, 255, 256, 257, 300] {
        for index in [0, size / 2, size - 1] {
            let proof = TlogProof::produce(index, log.signed(size), None, &log.store).unwrap();
            let bytes = proof.to_bytes();
            let parsed = TlogProof::parse(&bytes).unwrap();
            assert_eq!(parsed, proof);
            let verified = parsed.verify(&leaf_data(index), &log.policy()).unwrap();
            assert_eq!(verified.checkpoint().size(), size);
            assert_eq!(verified.cosignatures().len(), 1);
            if size > 1 {
                let other = (index + 1) % size;
                assert!(matches!(
                    parsed.verify(&leaf_data(other), &log.policy()),
                    Err(TlogProofError::NotIncluded { .. })
                ));
            }
        }
    }
}

#[test]
fn the_file_looks_like_the_spec() {
    let log = Log::new();
    let proof =
        TlogProof::produce(5, log.signed(8), Some(b"age-v1.2.1".to_vec()), &log.store).unwrap();
    let text = String::from_utf8(proof.to_bytes()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "c2sp.org/tlog-proof@v1");
    assert_eq!(lines[1], format!("extra {}", BASE64.encode(b"age-v1.2.1")));
    assert_eq!(lines[2], "index 5");
    assert_eq!(lines[3..6].iter().filter(|l| l.len() == 44).count(), 3);
    assert_eq!(lines[6], "");
    assert_eq!(lines[7], ORIGIN);
    let parsed = TlogProof::parse(text.as_bytes()).unwrap();
    assert_eq!(parsed.extra(), Some(&b"age-v1.2.1"[..]));
    parsed.verify(&leaf_data(5), &log.policy()).unwrap();
}

#[test]
fn proofs_without_the_witness_quorum_or_from_another_log_fail() {
    let log = Log::new();
    let c = Checkpoint::new(ORIGIN, 10, tree_hash(10, &log.store).unwrap()).unwrap();
    let uncosigned = c.sign(&log.key).unwrap();
    let proof = TlogProof::produce(3, uncosigned, None, &log.store).unwrap();
    assert!(matches!(
        proof.verify(&leaf_data(3), &log.policy()),
        Err(TlogProofError::Checkpoint(CheckpointError::QuorumNotMet {
            have: 0,
            need: 1
        }))
    ));
    let stranger = Log::new();
    let proof = TlogProof::produce(3, stranger.signed(10), None, &stranger.store).unwrap();
    assert!(matches!(
        proof.verify(&leaf_data(3), &log.policy()),
        Err(TlogProofError::Checkpoint(CheckpointError::Note(_)))
    ));
    // Index beyond the checkpoint cannot even be produced.
    assert!(matches!(
        TlogProof::produce(10, log.signed(10), None, &log.store),
        Err(ProduceError::Tree(TreeError::IndexOutOfRange { .. }))
    ));
}

#[test]
fn malformed_files_are_rejected() {
    let log = Log::new();
    let good = String::from_utf8(
        TlogProof::produce(5, log.signed(8), None, &log.store)
            .unwrap()
            .to_bytes(),
    )
    .unwrap();
    let hash = log.store[0].to_base64();
    let cases = [
        good.replacen(HEADER, "c2sp.org/tlog-proof@v2", 1),
        good.replacen("index 5", "index 05", 1),
        good.replacen("index 5", "index  5", 1),
        good.replacen("index 5", "Index 5", 1),
        good.replacen("index 5\n", "extra \nindex 5\n", 1),
        good.replacen("index 5\n", "extra !!\nindex 5\n", 1),
        good.replacen("index 5\n", "index 5\nextra AA==\n", 1),
        good.replacen(
            "index 5\n",
            &format!("index 5\n{}", format!("{hash}\n").repeat(66)),
            1,
        ),
        good.replacen("index 5\n", &format!("index 5\n{}\n", &hash[1..]), 1),
        good.replace('\n', "\r\n"),
        good.split("\n\n").next().unwrap().to_owned(),
        format!("{HEADER}\nindex 1\n\nnot a checkpoint\n\n— x AAAAAAA=\n"),
        String::new(),
    ];
    for case in cases {
        assert!(TlogProof::parse(case.as_bytes()).is_err(), "{case:?}");
    }
    assert!(matches!(
        TlogProof::parse(&vec![b'a'; MAX_PROOF_FILE_LEN + 1]),
        Err(TlogProofError::TooLarge { .. })
    ));
    // Zero proof lines is valid (a tree of one leaf).
    let single = TlogProof::produce(0, log.signed(1), None, &log.store).unwrap();
    assert!(single.proof().is_empty());
    TlogProof::parse(&single.to_bytes())
        .unwrap()
        .verify(&leaf_data(0), &log.policy())
        .unwrap();
}
