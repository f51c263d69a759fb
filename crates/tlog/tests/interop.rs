//! Interoperability with independent published implementations:
//! `signed_note` 0.2 (C2SP signed-note) and `tlog_tiles` 0.2 (a port of Go's
//! `golang.org/x/mod/sumdb/tlog` with C2SP checkpoints), both from cloudflare/azul.
//!
//! What Palisade produces must verify with them and what they produce must verify
//! with Palisade.

#![allow(clippy::unwrap_used)] // Tests may unwrap.

use palisade_tlog::checkpoint::Checkpoint;
use palisade_tlog::hash::{leaf_hash, Hash};
use palisade_tlog::note::{self, KeyType, Note, SignerKey, VerifierKey};
use palisade_tlog::tile::{self, TileFetcher, TileId, TilePath};
use palisade_tlog::tree::{self, HashReader};

use signed_note::Verifier as _;

fn data(i: u64) -> Vec<u8> {
    format!("interop entry {i}").into_bytes()
}

fn theirs(h: &Hash) -> tlog_tiles::Hash {
    tlog_tiles::Hash(h.0)
}

fn ours(h: &tlog_tiles::Hash) -> Hash {
    Hash(h.0)
}

/// Their in-memory hash storage.
struct TheirStore(Vec<tlog_tiles::Hash>);

impl tlog_tiles::HashReader for TheirStore {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog_tiles::Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&i| {
                self.0
                    .get(i as usize)
                    .copied()
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

/// Our store, offered through their reader trait.
struct OurStoreForThem<'a>(&'a Vec<Hash>);

impl tlog_tiles::HashReader for OurStoreForThem<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog_tiles::Hash>, tlog_tiles::Error> {
        self.0
            .read_hashes(indexes)
            .map(|v| v.iter().map(theirs).collect())
            .map_err(|_| tlog_tiles::Error::IndexesNotInTree)
    }
}

fn both_stores(size: u64) -> (Vec<Hash>, TheirStore) {
    let mut ours = Vec::new();
    let mut theirs_ = TheirStore(Vec::new());
    for n in 0..size {
        let mine = tree::stored_hashes_for_record(n, &data(n), &ours).unwrap();
        let other = tlog_tiles::stored_hashes(n, &data(n), &theirs_).unwrap();
        assert_eq!(
            mine.iter().map(theirs).collect::<Vec<_>>(),
            other,
            "record {n}"
        );
        ours.extend(mine);
        theirs_.0.extend(other);
    }
    (ours, theirs_)
}

#[test]
fn stored_hashes_roots_and_proofs_agree_with_tlog_tiles() {
    let (store, their_store) = both_stores(2100);
    for size in 0..=2100u64 {
        assert_eq!(
            theirs(&tree::tree_hash(size, &store).unwrap()),
            tlog_tiles::tree_hash(size, &their_store).unwrap()
        );
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for _ in 0..2000 {
        let size = 1 + next(2100);
        let index = next(size);
        let root = tree::tree_hash(size, &store).unwrap();
        let mine = tree::inclusion_proof(index, size, &store).unwrap();
        let other = tlog_tiles::prove_record(size, index, &their_store).unwrap();
        assert_eq!(mine.iter().map(theirs).collect::<Vec<_>>(), other);
        let leaf = leaf_hash(&data(index));
        tlog_tiles::check_record(
            &mine.iter().map(theirs).collect(),
            size,
            theirs(&root),
            index,
            theirs(&leaf),
        )
        .unwrap();
        let other_ours: Vec<Hash> = other.iter().map(ours).collect();
        tree::verify_inclusion(&leaf, index, size, &other_ours, &root).unwrap();

        let old = 1 + next(size);
        let old_root = tree::tree_hash(old, &store).unwrap();
        let mine = tree::consistency_proof(old, size, &store).unwrap();
        let other = tlog_tiles::prove_tree(size, old, &their_store).unwrap();
        assert_eq!(mine.iter().map(theirs).collect::<Vec<_>>(), other);
        tlog_tiles::check_tree(
            &mine.iter().map(theirs).collect(),
            size,
            theirs(&root),
            old,
            theirs(&old_root),
        )
        .unwrap();
        let other_ours: Vec<Hash> = other.iter().map(ours).collect();
        tree::verify_consistency(old, size, &old_root, &root, &other_ours).unwrap();
    }
}

fn their_tile(t: &TileId) -> tlog_tiles::Tile {
    tlog_tiles::Tile::new(8, t.level(), t.index(), u32::from(t.width()), false)
}

#[test]
fn tile_coordinates_and_contents_agree_with_tlog_tiles() {
    // tlog_tiles 0.2 writes Go sumdb paths, `tile/<H>/<L>/<N>` with the height in
    // the path and `data` for entries; C2SP tlog-tiles drops the height and says
    // `entries`. The N encoding and the .p/W suffix are the same.
    for (level, index, width) in [
        (0u8, 0u64, 256u16),
        (0, 1_234_067, 256),
        (3, 1_234_067, 5),
        (1, 999, 1),
    ] {
        let t = TileId::new(level, index, width).unwrap();
        let other = their_tile(&t);
        assert_eq!(
            other.path(),
            format!("tile/8/{}", &t.path()["tile/".len()..])
        );
        let parsed = tlog_tiles::Tile::from_path(&other.path()).unwrap();
        assert_eq!(parsed, other);
        let back = TilePath::parse(&format!("tile/{}", &other.path()["tile/8/".len()..])).unwrap();
        assert_eq!(back, TilePath::Hashes(t));
    }
    let (store, _) = both_stores(70_000);
    for t in tile::tiles_for_size(70_000)
        .filter(|t| t.level() > 0 || t.index() % 37 == 0 || !t.is_full())
    {
        let mine = tile::tile_contents(t, &store).unwrap();
        let other = their_tile(&t).read_data(&OurStoreForThem(&store)).unwrap();
        assert_eq!(mine, other, "{}", t.path());
    }
    // Their list of tiles to publish equals ours.
    for (old, new) in [(0, 70_000), (1000, 1001), (65_535, 65_536), (300, 70_000)] {
        let mine: Vec<tlog_tiles::Tile> =
            tile::new_tiles(old, new).iter().map(their_tile).collect();
        assert_eq!(mine, tlog_tiles::Tile::new_tiles(8, old, new));
    }
}

/// Tiles as Palisade publishes them, served to both implementations' readers.
struct Published(std::collections::HashMap<TileId, Vec<u8>>);

impl TileFetcher for Published {
    type Error = String;
    fn fetch_tiles(&self, tiles: &[TileId]) -> Result<Vec<Vec<u8>>, String> {
        tiles
            .iter()
            .map(|t| self.0.get(t).cloned().ok_or(t.path()))
            .collect()
    }
}

impl tlog_tiles::TileReader for Published {
    fn height(&self) -> u8 {
        8
    }
    fn read_tiles(&self, tiles: &[tlog_tiles::Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        tiles
            .iter()
            .map(|t| {
                let id = TileId::new(t.level(), t.level_index(), t.width() as u16).unwrap();
                self.0
                    .get(&id)
                    .cloned()
                    .ok_or(tlog_tiles::Error::InvalidTile)
            })
            .collect()
    }
    fn save_tiles(&self, _: &[tlog_tiles::Tile], _: &[Vec<u8>]) {}
}

#[test]
fn tlog_tiles_reads_proofs_out_of_palisade_tiles() {
    let (store, _) = both_stores(70_000);
    let mut published = Published(Default::default());
    let mut size = 0;
    for next in [1, 255, 256, 5000, 65_536, 65_537, 70_000] {
        for t in tile::new_tiles(size, next) {
            published
                .0
                .insert(t, tile::tile_contents(t, &store).unwrap());
        }
        size = next;
        let root = tree::tree_hash(size, &store).unwrap();
        let their_reader = tlog_tiles::TileHashReader::new(size, theirs(&root), &published);
        let our_reader = tile::TileHashReader::new(size, root, &published);
        for index in [0, size / 3, size - 1] {
            let other = tlog_tiles::prove_record(size, index, &their_reader).unwrap();
            let mine = tree::inclusion_proof(index, size, &our_reader).unwrap();
            assert_eq!(mine.iter().map(theirs).collect::<Vec<_>>(), other);
        }
        assert_eq!(
            tlog_tiles::tree_hash(size, &their_reader).unwrap(),
            theirs(&tree::tree_hash(size, &our_reader).unwrap())
        );
    }
}

#[test]
fn checkpoints_round_trip_with_tlog_tiles() {
    let root = leaf_hash(b"root");
    for ext in [vec![], vec!["one".to_owned(), "two".to_owned()]] {
        let mine =
            Checkpoint::with_extensions("example.com/log", 123_456, root, ext.clone()).unwrap();
        let other = tlog_tiles::Checkpoint::from_bytes(mine.to_text().as_bytes()).unwrap();
        assert_eq!(other.origin(), "example.com/log");
        assert_eq!(other.size(), 123_456);
        assert_eq!(ours(other.hash()), root);
        assert_eq!(other.to_bytes(), mine.to_text().as_bytes());
        let extension: String = ext.iter().map(|l| format!("{l}\n")).collect();
        let built =
            tlog_tiles::Checkpoint::new("example.com/log", 7, theirs(&root), &extension).unwrap();
        let parsed = Checkpoint::parse(std::str::from_utf8(&built.to_bytes()).unwrap()).unwrap();
        assert_eq!(parsed.size(), 7);
        assert_eq!(parsed.extensions(), &ext[..]);
    }
    // Both refuse a size with a leading zero.
    let bad = format!("o\n07\n{}\n", root.to_base64());
    assert!(Checkpoint::parse(&bad).is_err());
    assert!(tlog_tiles::Checkpoint::from_bytes(bad.as_bytes()).is_err());
}

/// `rand_core` randomness from the OS, for `signed_note::generate_key`.
struct Os;

impl rand_core::RngCore for Os {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        getrandom::getrandom(dest).unwrap();
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for Os {}

#[test]
fn palisade_notes_verify_with_signed_note_and_back() {
    // Palisade signs, signed_note verifies.
    let ours_key = SignerKey::generate("palisade.example/log", KeyType::Ed25519).unwrap();
    let checkpoint = Checkpoint::new("palisade.example/log", 5, leaf_hash(b"r")).unwrap();
    let signed = checkpoint.sign(&ours_key).unwrap().to_bytes();
    let verifier = signed_note::StandardVerifier::new(&ours_key.verifier().to_string()).unwrap();
    assert_eq!(verifier.key_id(), ours_key.key_id());
    let their_note = signed_note::Note::from_bytes(&signed).unwrap();
    let (verified, _) = their_note
        .verify(&signed_note::VerifierList::new(vec![Box::new(verifier)]))
        .unwrap();
    assert_eq!(verified.len(), 1);
    // They accept our private key text too, and sign identically (Ed25519 is deterministic).
    let their_signer = signed_note::StandardSigner::new(&ours_key.to_private_text()).unwrap();
    let mut theirs_note = signed_note::Note::new(checkpoint.to_text().as_bytes(), &[]).unwrap();
    theirs_note.add_sigs(&[&their_signer]).unwrap();
    assert_eq!(theirs_note.to_bytes(), signed);

    // signed_note generates and signs, Palisade verifies.
    let (skey, vkey) = signed_note::generate_key(&mut Os, "other.example/log");
    let their_signer = signed_note::StandardSigner::new(&skey).unwrap();
    let mut n = signed_note::Note::new(
        b"other.example/log\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
        &[],
    )
    .unwrap();
    n.add_sigs(&[&their_signer]).unwrap();
    let trusted = VerifierKey::parse(&vkey).unwrap();
    let opened = note::open(&n.to_bytes(), std::slice::from_ref(&trusted)).unwrap();
    assert_eq!(Checkpoint::parse(opened.text()).unwrap().size(), 0);
    assert_eq!(SignerKey::parse(&skey).unwrap().verifier(), trusted);
    assert_eq!(
        signed_note::key_id(
            "other.example/log",
            &[&[1u8][..], &trusted.public_key()].concat()
        ),
        trusted.key_id()
    );
}

/// A type 0x04 verifier written for this test from the tlog-cosignature text alone,
/// plugged into signed_note's note verification.
struct SpecCosignatureVerifier {
    name: String,
    id: u32,
    key: ed25519_dalek::VerifyingKey,
}

impl signed_note::Verifier for SpecCosignatureVerifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        if sig.len() != 72 {
            return false;
        }
        let time = u64::from_be_bytes(sig[..8].try_into().unwrap());
        let mut signed = format!("cosignature/v1\ntime {time}\n").into_bytes();
        signed.extend_from_slice(msg);
        let sig = ed25519_dalek::Signature::from_bytes(sig[8..].try_into().unwrap());
        self.key.verify_strict(&signed, &sig).is_ok()
    }
}

/// The same, signing.
struct SpecCosigner {
    name: String,
    id: u32,
    key: ed25519_dalek::SigningKey,
    time: u64,
}

impl signed_note::Signer for SpecCosigner {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        use ed25519_dalek::Signer as _;
        let mut signed = format!("cosignature/v1\ntime {}\n", self.time).into_bytes();
        signed.extend_from_slice(msg);
        let mut out = self.time.to_be_bytes().to_vec();
        out.extend_from_slice(&self.key.sign(&signed).to_bytes());
        Ok(out)
    }
}

#[test]
fn cosignatures_match_an_independent_reading_of_the_spec() {
    let seed = [42u8; 32];
    let witness = SignerKey::from_seed("witness.example/w1", KeyType::Cosignature, &seed).unwrap();
    let dalek = ed25519_dalek::SigningKey::from_bytes(&seed);
    // Key id per tlog-cosignature: SHA-256(name || "\n" || 0x04 || key)[:4].
    let id = signed_note::key_id(
        "witness.example/w1",
        &[&[4u8][..], dalek.verifying_key().as_bytes()].concat(),
    );
    assert_eq!(witness.key_id(), id);

    let log = SignerKey::generate("example.com/log", KeyType::Ed25519).unwrap();
    let checkpoint = Checkpoint::new("example.com/log", 9, leaf_hash(b"r")).unwrap();
    let mut ours_note: Note = checkpoint.sign(&log).unwrap();
    ours_note
        .add_signature(checkpoint.cosign(&witness, 1_679_315_147).unwrap())
        .unwrap();

    // Palisade's cosignature verifies through signed_note with the spec verifier.
    let spec_verifier = SpecCosignatureVerifier {
        name: "witness.example/w1".into(),
        id,
        key: dalek.verifying_key(),
    };
    let their_note = signed_note::Note::from_bytes(&ours_note.to_bytes()).unwrap();
    let (verified, unverified) = their_note
        .verify(&signed_note::VerifierList::new(vec![Box::new(
            spec_verifier,
        )]))
        .unwrap();
    assert_eq!((verified.len(), unverified.len()), (1, 1));

    // A cosignature made through signed_note verifies with Palisade, with its time,
    // and is byte-identical to Palisade's own.
    let mut their_note = signed_note::Note::new(checkpoint.to_text().as_bytes(), &[]).unwrap();
    let cosigner = SpecCosigner {
        name: "witness.example/w1".into(),
        id,
        key: dalek,
        time: 1_679_315_147,
    };
    their_note.add_sigs(&[&cosigner]).unwrap();
    let sig = note::NoteSignature::parse_line(
        std::str::from_utf8(&their_note.to_bytes())
            .unwrap()
            .rsplit_once("\n\n")
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(
        checkpoint
            .verify_cosignature(&sig, &witness.verifier())
            .unwrap(),
        1_679_315_147
    );
    assert_eq!(sig, ours_note.signatures()[1]);
}
