#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))] // Tests may unwrap; library code may not.
//! Palisade's tamper-evident log, the pure part: no network, no filesystem.
//!
//! Every format follows a public specification so that existing verifiers and
//! witnesses interoperate:
//!
//! | module | implements |
//! |---|---|
//! | [`hash`] | RFC 6962 §2.1 leaf and node hashing |
//! | [`tree`] | stored-hash layout, roots, RFC 9162 §2.1.3/§2.1.4 proofs and their verification |
//! | [`tile`] | C2SP tlog-tiles v0.1.0: tile paths, tile contents, entry bundles, a tile-backed hash reader |
//! | [`note`] | C2SP signed-note v1.0.0 with Ed25519 and tlog-cosignature v1 Ed25519 keys |
//! | [`checkpoint`] | C2SP tlog-checkpoint v1.0.0 and witness cosignature quorums |
//! | [`witness`] | C2SP tlog-witness v1.0.0 `add-checkpoint` body and decision |
//! | [`proof`] | C2SP tlog-proof v1 offline inclusion proofs |
//!
//! What this crate guarantees: parsing is strict (one accepted encoding per value),
//! nothing panics on input, and a verified value (an opened note, a checkpoint that
//! met its policy) can only be obtained by running the checks.
//! What it does not do: persistence, fetching, clocks or atomicity — those belong to
//! the sequencer and witness services that call it.
//!
//! The whole path, from appending entries to a client checking an offline proof:
//!
//! ```
//! use palisade_tlog::checkpoint::{Checkpoint, LogPolicy};
//! use palisade_tlog::hash::leaf_hash;
//! use palisade_tlog::note::{KeyType, SignerKey};
//! use palisade_tlog::proof::TlogProof;
//! use palisade_tlog::tree::Frontier;
//!
//! let origin = "palisade.example/clusters/c1";
//! let log_key = SignerKey::generate(origin, KeyType::Ed25519)?;
//! let witness = SignerKey::generate("witness.example/w1", KeyType::Cosignature)?;
//!
//! // The sequencer appends entries and keeps their stored hashes (here in memory).
//! let mut frontier = Frontier::new();
//! let mut stored = Vec::new();
//! for entry in [&b"first"[..], b"second", b"third"] {
//!     stored.extend(frontier.append(leaf_hash(entry))?);
//! }
//!
//! // The log signs a checkpoint; a witness cosigns it.
//! let checkpoint = Checkpoint::new(origin, frontier.size(), frontier.root())?;
//! let mut signed = checkpoint.sign(&log_key)?;
//! signed.add_signature(checkpoint.cosign(&witness, 1_700_000_000)?)?;
//!
//! // A self-contained proof for entry 1, checked by a client that trusts the log
//! // key and requires the witness.
//! let file = TlogProof::produce(1, signed, None, &stored)?.to_bytes();
//! let policy = LogPolicy::new(origin, log_key.verifier())?
//!     .with_witnesses(vec![witness.verifier()], 1)?;
//! let verified = TlogProof::parse(&file)?.verify(b"second", &policy)?;
//! assert_eq!(verified.checkpoint().size(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod checkpoint;
pub mod hash;
pub mod note;
pub mod proof;
pub mod tile;
pub mod tree;
pub mod witness;

mod text;

#[cfg(test)]
mod testutil;
