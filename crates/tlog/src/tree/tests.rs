use super::*;
use crate::hash::{empty_root, leaf_hash, Hash};
use crate::testutil::{leaf_data, stored, stored_via_frontier, RefTree, Rng};

/// RFC 6962 test vectors: leaves and roots for sizes 1..8.
const LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn rfc6962_roots_for_sizes_1_to_8() {
    let mut store = Vec::new();
    let mut frontier = Frontier::new();
    for (n, leaf) in LEAVES.iter().enumerate() {
        let data = unhex(leaf);
        store.extend(stored_hashes_for_record(n as u64, &data, &store).unwrap());
        frontier.append(leaf_hash(&data)).unwrap();
        let want = Hash::from_hex(ROOTS[n]).unwrap();
        assert_eq!(
            tree_hash(n as u64 + 1, &store).unwrap(),
            want,
            "size {}",
            n + 1
        );
        assert_eq!(frontier.root(), want, "frontier size {}", n + 1);
    }
    assert_eq!(tree_hash(0, &store).unwrap(), empty_root());
}

#[test]
fn frontier_stores_what_the_reader_path_stores() {
    let (via_frontier, frontier) = stored_via_frontier(1100);
    assert_eq!(via_frontier, stored(1100));
    assert_eq!(via_frontier.len() as u64, stored_hash_count(1100));
    for size in [0, 1, 2, 3, 255, 256, 257, 1023, 1024, 1099, 1100] {
        let rebuilt = Frontier::from_stored(size, &via_frontier).unwrap();
        assert_eq!(rebuilt.size(), size);
        assert_eq!(rebuilt.root(), tree_hash(size, &via_frontier).unwrap());
    }
    assert_eq!(frontier.root(), tree_hash(1100, &via_frontier).unwrap());
    assert_eq!(frontier.roots().len(), 1100u64.count_ones() as usize);
}

#[test]
fn roots_match_the_reference_tree() {
    let reference = RefTree::default();
    let store = stored(1100);
    for size in 0..=1100 {
        assert_eq!(
            tree_hash(size, &store).unwrap(),
            reference.mth(0, size),
            "size {size}"
        );
    }
}

#[test]
fn inclusion_proofs_for_every_leaf_of_every_size_up_to_1100() {
    let reference = RefTree::default();
    let store = stored(1100);
    for size in 1..=1100u64 {
        let root = reference.mth(0, size);
        for index in 0..size {
            let proof = inclusion_proof(index, size, &store).unwrap();
            assert_eq!(proof, reference.path(index, 0, size), "{index} in {size}");
            let leaf = leaf_hash(&leaf_data(index));
            verify_inclusion(&leaf, index, size, &proof, &root).unwrap();
        }
    }
}

#[test]
fn tampered_inclusion_proofs_fail() {
    let reference = RefTree::default();
    let store = stored(300);
    let mut rng = Rng(7);
    for size in 1..=300u64 {
        let root = reference.mth(0, size);
        for index in (0..size).step_by(7) {
            let leaf = leaf_hash(&leaf_data(index));
            let proof = inclusion_proof(index, size, &store).unwrap();
            for i in 0..proof.len() {
                let mut bad = proof.clone();
                bad[i].0[rng.below(32) as usize] ^= 1 << rng.below(8);
                assert_eq!(
                    verify_inclusion(&leaf, index, size, &bad, &root),
                    Err(ProofError::RootMismatch)
                );
            }
            let wrong_leaf = leaf_hash(b"not the leaf");
            assert!(verify_inclusion(&wrong_leaf, index, size, &proof, &root).is_err());
            if size > 1 {
                let other = (index + 1) % size;
                assert!(verify_inclusion(&leaf, other, size, &proof, &root).is_err());
            }
            let mut longer = proof.clone();
            longer.push(root);
            assert!(matches!(
                verify_inclusion(&leaf, index, size, &longer, &root),
                Err(ProofError::WrongLength { .. })
            ));
            if let Some((_, shorter)) = proof.split_last() {
                assert!(matches!(
                    verify_inclusion(&leaf, index, size, shorter, &root),
                    Err(ProofError::WrongLength { .. })
                ));
            }
            // A size that needs a different path length cannot be claimed.
            let bigger = size * 2 + 1;
            assert!(verify_inclusion(&leaf, index, bigger, &proof, &root).is_err());
            assert_eq!(
                verify_inclusion(&leaf, size, size, &proof, &root),
                Err(ProofError::IndexOutOfRange { index: size, size })
            );
        }
    }
}

#[test]
fn consistency_proofs_for_every_pair_up_to_130() {
    let reference = RefTree::default();
    let store = stored(130);
    for new in 0..=130u64 {
        let new_root = reference.mth(0, new);
        for old in 0..=new {
            let old_root = reference.mth(0, old);
            let proof = consistency_proof(old, new, &store).unwrap();
            assert_eq!(proof, reference.proof(old, new), "{old} -> {new}");
            verify_consistency(old, new, &old_root, &new_root, &proof).unwrap();
        }
    }
}

#[test]
fn consistency_proofs_for_random_pairs_up_to_5000() {
    let reference = RefTree::default();
    let store = stored(5000);
    let mut rng = Rng(0x5eed);
    for _ in 0..3000 {
        let new = 1 + rng.below(5000);
        let old = 1 + rng.below(new);
        let (old_root, new_root) = (reference.mth(0, old), reference.mth(0, new));
        let proof = consistency_proof(old, new, &store).unwrap();
        assert_eq!(proof, reference.proof(old, new), "{old} -> {new}");
        verify_consistency(old, new, &old_root, &new_root, &proof).unwrap();

        let index = rng.below(new);
        let path = inclusion_proof(index, new, &store).unwrap();
        assert_eq!(path, reference.path(index, 0, new));
        verify_inclusion(&leaf_hash(&leaf_data(index)), index, new, &path, &new_root).unwrap();
    }
}

#[test]
fn tampered_consistency_proofs_fail() {
    let reference = RefTree::default();
    let store = stored(200);
    let mut rng = Rng(99);
    for new in 2..=200u64 {
        let new_root = reference.mth(0, new);
        for old in (1..new).step_by(5) {
            let old_root = reference.mth(0, old);
            let proof = consistency_proof(old, new, &store).unwrap();
            for i in 0..proof.len() {
                let mut bad = proof.clone();
                bad[i].0[rng.below(32) as usize] ^= 1 << rng.below(8);
                assert!(
                    verify_consistency(old, new, &old_root, &new_root, &bad).is_err(),
                    "{old} -> {new} with hash {i} flipped"
                );
            }
            let wrong = leaf_hash(b"wrong root");
            assert!(verify_consistency(old, new, &wrong, &new_root, &proof).is_err());
            assert!(verify_consistency(old, new, &old_root, &wrong, &proof).is_err());
            let mut longer = proof.clone();
            longer.push(new_root);
            assert!(verify_consistency(old, new, &old_root, &new_root, &longer).is_err());
            assert!(verify_consistency(old, new, &old_root, &new_root, &proof[1..]).is_err());
            assert!(verify_consistency(old, new, &old_root, &new_root, &[]).is_err());
        }
    }
}

#[test]
fn consistency_edge_rules() {
    let a = leaf_hash(b"a");
    let b = leaf_hash(b"b");
    // Equal sizes: empty proof, equal roots.
    assert_eq!(verify_consistency(5, 5, &a, &a, &[]), Ok(()));
    assert_eq!(
        verify_consistency(5, 5, &a, &b, &[]),
        Err(ProofError::RootMismatch)
    );
    assert_eq!(
        verify_consistency(5, 5, &a, &a, &[a]),
        Err(ProofError::NotEmpty {
            old: 5,
            new: 5,
            len: 1
        })
    );
    // From the empty tree: empty proof, anything goes.
    assert_eq!(verify_consistency(0, 9, &a, &b, &[]), Ok(()));
    assert_eq!(
        verify_consistency(0, 9, &a, &b, &[a]),
        Err(ProofError::NotEmpty {
            old: 0,
            new: 9,
            len: 1
        })
    );
    assert_eq!(
        verify_consistency(9, 5, &a, &b, &[a]),
        Err(ProofError::OldLargerThanNew { old: 9, new: 5 })
    );
    // Huge sizes do not overflow or loop: the proof is simply too short.
    assert!(verify_consistency(u64::MAX - 1, u64::MAX, &a, &b, &[a, b]).is_err());
    assert!(verify_inclusion(&a, u64::MAX - 1, u64::MAX, &[b], &a).is_err());
    // Overlong proofs are refused before any hashing.
    let long = vec![a; MAX_PROOF_LEN + 1];
    assert!(matches!(
        verify_inclusion(&a, 0, 2, &long, &b),
        Err(ProofError::WrongLength { .. })
    ));
}

#[test]
fn generation_rejects_bad_sizes() {
    let store = stored(10);
    assert!(matches!(
        inclusion_proof(10, 10, &store),
        Err(TreeError::IndexOutOfRange {
            index: 10,
            size: 10
        })
    ));
    assert!(matches!(
        consistency_proof(11, 10, &store),
        Err(TreeError::OldLargerThanNew { old: 11, new: 10 })
    ));
    assert!(matches!(
        tree_hash(MAX_TREE_SIZE + 1, &store),
        Err(TreeError::TooLarge { .. })
    ));
    // Asking beyond what is stored is a reader error, not a panic.
    assert!(matches!(
        tree_hash(11, &store),
        Err(TreeError::Read(MissingHash { .. }))
    ));
    assert_eq!(consistency_proof(0, 10, &store).unwrap(), vec![]);
    assert_eq!(consistency_proof(10, 10, &store).unwrap(), vec![]);
}

#[test]
fn short_reads_are_errors() {
    struct Liar;
    impl HashReader for Liar {
        type Error = ();
        fn read_hashes(&self, _: &[u64]) -> Result<Vec<Hash>, ()> {
            Ok(vec![])
        }
    }
    assert!(matches!(
        tree_hash(3, &Liar),
        Err(TreeError::ShortRead { want: 2, got: 0 })
    ));
}
