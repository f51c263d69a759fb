use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use super::*;
use crate::hash::leaf_hash;
use crate::testutil::{leaf_data, stored, Rng};
use crate::tree::{consistency_proof, inclusion_proof, tree_hash, verify_inclusion};

fn tile(level: u8, index: u64, width: u16) -> TileId {
    TileId::new(level, index, width).unwrap()
}

#[test]
fn index_is_written_in_x_prefixed_groups() {
    assert_eq!(tile(0, 1_234_067, 256).path(), "tile/0/x001/x234/067");
    assert_eq!(tile(3, 1_234_067, 5).path(), "tile/3/x001/x234/067.p/5");
    assert_eq!(tile(0, 0, 256).path(), "tile/0/000");
    assert_eq!(tile(1, 999, 1).path(), "tile/1/999.p/1");
    assert_eq!(tile(0, 1000, 256).path(), "tile/0/x001/000");
    assert_eq!(
        tile(0, 1_234_067, 256).entries_path(),
        "tile/entries/x001/x234/067"
    );
    assert_eq!(tile(0, 7, 112).entries_path(), "tile/entries/007.p/112");
    assert_eq!(
        tile(0, u64::MAX, 255).path(),
        "tile/0/x018/x446/x744/x073/x709/x551/615.p/255"
    );
}

#[test]
fn paths_round_trip() {
    let mut rng = Rng(3);
    for _ in 0..5000 {
        let level = rng.below(64) as u8;
        let index = match rng.below(3) {
            0 => rng.below(1000),
            1 => rng.below(10_000_000),
            _ => rng.next(),
        };
        let width = 1 + rng.below(256) as u16;
        let t = tile(level, index, width);
        assert_eq!(TilePath::parse(&t.path()).unwrap(), TilePath::Hashes(t));
        let e = tile(0, index, width);
        assert_eq!(
            TilePath::parse(&e.entries_path()).unwrap(),
            TilePath::Entries(e)
        );
    }
}

#[test]
fn non_canonical_paths_are_rejected() {
    use path::PathProblem::*;
    let cases = [
        ("tiles/0/000", Prefix),
        ("/tile/0/000", Prefix),
        ("tile/0/1234067", Index),
        ("tile/0/67", Index),
        ("tile/0/0067", Index),
        ("tile/0/x1/234", Index),
        ("tile/0/x000/067", Index),
        ("tile/0/x001/234/", Index),
        ("tile/0/001/234", Index),
        ("tile/0/X001/234", Index),
        ("tile/0/x001/x234", Index),
        ("tile/0/", Index),
        ("tile/0", Index),
        ("tile/0/+12", Index),
        ("tile/00/000", Level),
        ("tile/01/000", Level),
        ("tile/64/000", Level),
        ("tile/-1/000", Level),
        ("tile/data/000", Level),
        ("tile/0/000.p/0", Width),
        ("tile/0/000.p/256", Width),
        ("tile/0/000.p/05", Width),
        ("tile/0/000.p/", Width),
        ("tile/0/000.p/5/6", Width),
        ("tile/0/x001.p/1/067", Width),
        ("tile/0/000.p", Index),
        ("tile/0/x018/x446/x744/x073/x709/x551/616", IndexOverflow),
        ("tile/entries/000.p/300", Width),
    ];
    for (path, problem) in cases {
        let err = TilePath::parse(path).unwrap_err();
        assert_eq!(err.problem, problem, "{path}");
        assert_eq!(err.path, path);
    }
    let long = format!("tile/0/{}000", "x001/".repeat(20));
    assert_eq!(TilePath::parse(&long).unwrap_err().problem, Length);
}

#[test]
fn tiles_of_a_tree_of_70000_match_the_spec_example() {
    let tiles: Vec<TileId> = tiles_for_size(70_000).collect();
    let full_l0 = tiles
        .iter()
        .filter(|t| t.level() == 0 && t.is_full())
        .count();
    assert_eq!(full_l0, 273);
    assert!(tiles.contains(&tile(0, 273, 112)));
    assert!(tiles.contains(&tile(1, 0, 256)));
    assert!(tiles.contains(&tile(1, 1, 17)));
    assert!(tiles.contains(&tile(2, 0, 1)));
    assert_eq!(tiles.len(), 273 + 1 + 1 + 1 + 1);

    let tiles: Vec<TileId> = tiles_for_size(256).collect();
    assert_eq!(tiles, vec![tile(0, 0, 256), tile(1, 0, 1)]);
    assert_eq!(tiles_for_size(0).count(), 0);
}

#[test]
fn new_tiles_are_exactly_what_changed() {
    let mut rng = Rng(11);
    for _ in 0..300 {
        let new = rng.below(200_000);
        let old = rng.below(new + 1);
        let before: BTreeSet<TileId> = tiles_for_size(old).collect();
        let after: BTreeSet<TileId> = tiles_for_size(new).collect();
        let changed: BTreeSet<TileId> = after.difference(&before).copied().collect();
        let published: BTreeSet<TileId> = new_tiles(old, new).into_iter().collect();
        assert_eq!(published, changed, "{old} -> {new}");
    }
}

/// A tile server as a sequencer would fill it: each checkpoint publishes its new
/// tiles; old partial tiles stay (as tlog-tiles allows).
#[derive(Default)]
struct Server {
    tiles: HashMap<TileId, Vec<u8>>,
    fetched: RefCell<usize>,
}

impl TileFetcher for Server {
    type Error = String;
    fn fetch_tiles(&self, tiles: &[TileId]) -> Result<Vec<Vec<u8>>, String> {
        *self.fetched.borrow_mut() += tiles.len();
        tiles
            .iter()
            .map(|t| {
                self.tiles
                    .get(t)
                    .cloned()
                    .ok_or_else(|| format!("no tile {}", t.path()))
            })
            .collect()
    }
}

fn publish(server: &mut Server, store: &Vec<crate::hash::Hash>, old: u64, new: u64) {
    for t in new_tiles(old, new) {
        let contents = tile_contents(t, store).unwrap();
        assert_eq!(contents.len(), t.byte_len());
        server.tiles.insert(t, contents);
    }
}

#[test]
fn proofs_from_tiles_equal_proofs_from_stored_hashes() {
    let store = stored(70_000);
    let mut server = Server::default();
    let mut rng = Rng(5);
    let mut size = 0;
    let mut checkpoints = Vec::new();
    while size < 70_000 {
        let next = (size + 1 + rng.below(3000)).min(70_000);
        publish(&mut server, &store, size, next);
        size = next;
        checkpoints.push(size);
    }
    for extra in [1, 255, 256, 257, 65_535, 65_536, 65_537] {
        publish(&mut server, &store, 0, extra);
        checkpoints.push(extra);
    }
    for &size in &checkpoints {
        let root = tree_hash(size, &store).unwrap();
        let reader = TileHashReader::new(size, root, &server);
        assert_eq!(tree_hash(size, &reader).unwrap(), root);
        for _ in 0..20 {
            let index = rng.below(size);
            let proof = inclusion_proof(index, size, &reader).unwrap();
            assert_eq!(proof, inclusion_proof(index, size, &store).unwrap());
            verify_inclusion(&leaf_hash(&leaf_data(index)), index, size, &proof, &root).unwrap();
            let old = 1 + rng.below(size);
            assert_eq!(
                consistency_proof(old, size, &reader).unwrap(),
                consistency_proof(old, size, &store).unwrap()
            );
        }
    }
}

#[test]
fn tampered_tiles_are_detected() {
    let size = 70_000;
    let store = stored(size);
    let root = tree_hash(size, &store).unwrap();
    let mut server = Server::default();
    publish(&mut server, &store, 0, size);
    let index = 12_345;

    // A full level-0 tile: caught against its entry in the level-1 tile.
    let mut bad = Server {
        tiles: server.tiles.clone(),
        ..Server::default()
    };
    bad.tiles.get_mut(&tile(0, index / 256, 256)).unwrap()[100] ^= 1;
    let reader = TileHashReader::new(size, root, &bad);
    assert!(matches!(
        inclusion_proof(index, size, &reader),
        Err(crate::tree::TreeError::Read(
            TileReadError::Inconsistent { .. }
        ))
    ));

    // A partial tile: caught against the root.
    let mut bad = Server {
        tiles: server.tiles.clone(),
        ..Server::default()
    };
    bad.tiles.get_mut(&tile(2, 0, 1)).unwrap()[0] ^= 1;
    let reader = TileHashReader::new(size, root, &bad);
    assert!(matches!(
        tree_hash(size, &reader),
        Err(crate::tree::TreeError::Read(TileReadError::RootMismatch {
            size: 70_000
        }))
    ));

    // A short tile.
    let mut bad = Server {
        tiles: server.tiles.clone(),
        ..Server::default()
    };
    bad.tiles.get_mut(&tile(0, 273, 112)).unwrap().pop();
    let reader = TileHashReader::new(size, root, &bad);
    assert!(matches!(
        tree_hash(size, &reader),
        Err(crate::tree::TreeError::Read(
            TileReadError::WrongLength { .. }
        ))
    ));

    // A wrong trusted root.
    let reader = TileHashReader::new(size, leaf_hash(b"lie"), &server);
    assert!(tree_hash(size, &reader).is_err());

    // Hashes beyond the tree are refused, not fetched.
    let reader = TileHashReader::new(1000, tree_hash(1000, &store).unwrap(), &server);
    assert!(matches!(
        reader.read_hashes(&[crate::tree::stored_hash_count(1000)]),
        Err(TileReadError::NotInTree { .. })
    ));
    let reader = TileHashReader::new(u64::MAX, root, &server);
    assert!(matches!(
        reader.read_hashes(&[0]),
        Err(TileReadError::TooLarge { .. })
    ));
}

#[test]
fn tile_contents_rejects_tiles_beyond_the_maximum_tree() {
    let store = stored(10);
    assert!(tile_contents(tile(8, 0, 1), &store).is_err());
    assert!(tile_contents(tile(0, u64::MAX, 256), &store).is_err());
    assert!(matches!(
        tile_contents(tile(0, 0, 256), &store),
        Err(crate::tree::TreeError::Read(_))
    ));
}

#[test]
fn bundles_round_trip_and_enforce_limits() {
    let entries: Vec<Vec<u8>> = (0..256).map(leaf_data).collect();
    let bundle = encode_bundle(&entries).unwrap();
    let parsed = parse_bundle(&bundle).unwrap();
    assert_eq!(parsed.len(), 256);
    assert!(parsed.iter().zip(&entries).all(|(a, b)| a == b));

    let biggest = vec![7u8; MAX_ENTRY_LEN];
    let one = encode_bundle(&[&biggest[..], b""]).unwrap();
    assert_eq!(&one[..2], &[0xff, 0xff]);
    assert_eq!(parse_bundle(&one).unwrap(), vec![&biggest[..], b""]);

    let too_big = vec![0u8; MAX_ENTRY_LEN + 1];
    assert_eq!(
        encode_bundle(&[b"ok".to_vec(), too_big]),
        Err(BundleError::EntryTooLong {
            position: 1,
            len: 65_536
        })
    );
    assert_eq!(
        encode_bundle(&vec![b"x"; 257]),
        Err(BundleError::TooManyEntries { count: 257 })
    );
    assert_eq!(encode_bundle::<&[u8]>(&[]), Err(BundleError::Empty));
    assert_eq!(parse_bundle(&[]), Err(BundleError::Empty));

    // Truncated in a length prefix and in an entry body.
    assert_eq!(
        parse_bundle(&bundle[..bundle.len() - 1]),
        Err(BundleError::Truncated {
            offset: bundle.len() - 2 - 8,
            len: bundle.len() - 1
        })
    );
    assert!(matches!(
        parse_bundle(&[0x00]),
        Err(BundleError::Truncated { offset: 0, len: 1 })
    ));
    let mut extra = bundle.clone();
    extra.extend_from_slice(&[0, 1, 9]);
    assert_eq!(
        parse_bundle(&extra),
        Err(BundleError::TooManyEntries { count: 257 })
    );
}
