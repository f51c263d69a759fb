//! The log's signing keys: its key and, while it rotates to another, the next one.
//!
//! A key rotation keeps the origin (so that every verifier's view of the log, and
//! every proof it holds, stays valid) and changes the key set in three steps:
//! 1. the log signs every checkpoint with both keys (`next_key_file`); the newest
//!    stored checkpoint is signed again at start, so storage holds one signed by both;
//! 2. each verifier (gateways, agents, witnesses, customers) replaces the old key by
//!    the new one, in any order: checkpoints carry both signatures, and signed-note
//!    ignores signatures by keys a verifier does not know;
//! 3. the log drops the old key (`key_file` = the new one): it opens the checkpoint
//!    stored in step 1 with the new key.

use palisade_tlog::checkpoint::{Checkpoint, CheckpointError};
use palisade_tlog::note::{Note, NoteError, SignerKey, VerifierKey};

/// One or two signing keys, with one name (the log's base origin).
#[derive(Clone)]
pub struct LogKeys {
    keys: Vec<SignerKey>,
}

impl From<SignerKey> for LogKeys {
    fn from(key: SignerKey) -> Self {
        Self { keys: vec![key] }
    }
}

impl LogKeys {
    /// `key`, and `next` during a rotation: it must carry the same name and be
    /// another key.
    pub fn new(key: SignerKey, next: Option<SignerKey>) -> Result<Self, String> {
        let mut keys = vec![key];
        if let Some(next) = next {
            if next.name() != keys[0].name() {
                return Err(format!(
                    "the next key is named {:?}, the log's key {:?}: a rotation keeps the name",
                    next.name(),
                    keys[0].name()
                ));
            }
            if next.verifier() == keys[0].verifier() {
                return Err("the next key is the log's key itself".into());
            }
            keys.push(next);
        }
        Ok(Self { keys })
    }

    /// The key the log is named by (the first).
    pub fn current(&self) -> &SignerKey {
        &self.keys[0]
    }

    /// How many log signatures each checkpoint carries.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn verifiers(&self) -> Vec<VerifierKey> {
        self.keys.iter().map(SignerKey::verifier).collect()
    }

    /// The checkpoint, signed by every key.
    pub fn sign(&self, checkpoint: &Checkpoint) -> Result<Note, CheckpointError> {
        checkpoint.sign_by(&self.keys)
    }

    /// `note` (already opened with one of these keys) signed by every key, its other
    /// signatures (cosignatures) kept after the log's; `None` when nothing is missing.
    pub fn complete(&self, note: &Note) -> Result<Option<Note>, NoteError> {
        let verifiers = self.verifiers();
        let signed_by = |v: &VerifierKey| {
            note.signatures()
                .iter()
                .any(|s| s.name() == v.name() && s.key_id() == v.key_id())
        };
        if verifiers.iter().all(signed_by) {
            return Ok(None);
        }
        let mut out = Note::new(note.text().to_string())?;
        for key in &self.keys {
            out.sign(key)?;
        }
        for s in note.signatures() {
            if !verifiers
                .iter()
                .any(|v| s.name() == v.name() && s.key_id() == v.key_id())
            {
                out.add_signature(s.clone())?;
            }
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_tlog::checkpoint::LogPolicy;
    use palisade_tlog::hash::Hash;
    use palisade_tlog::note::KeyType;

    fn key(name: &str) -> SignerKey {
        SignerKey::generate(name, KeyType::Ed25519).expect("key")
    }

    #[test]
    fn both_keys_sign_and_a_verifier_of_either_accepts() {
        let (old, new) = (key("example.org/log"), key("example.org/log"));
        let keys = LogKeys::new(old.clone(), Some(new.clone())).expect("keys");
        let cp = Checkpoint::new("example.org/log/c1", 3, Hash([7; 32])).expect("cp");
        let note = keys.sign(&cp).expect("sign");
        assert_eq!(note.signatures().len(), 2);
        for k in [&old, &new] {
            let policy = LogPolicy::new("example.org/log/c1", k.verifier()).expect("policy");
            policy
                .verify(&note.to_bytes())
                .expect("verifies with either key");
        }
        let stranger = LogPolicy::new("example.org/log/c1", key("example.org/log").verifier())
            .expect("policy");
        assert!(matches!(
            stranger.verify(&note.to_bytes()),
            Err(CheckpointError::Note(NoteError::NoTrustedSignature { .. }))
        ));
    }

    #[test]
    fn a_next_key_must_share_the_name_and_differ() {
        let old = key("example.org/log");
        assert!(LogKeys::new(old.clone(), Some(key("other.org/log"))).is_err());
        assert!(LogKeys::new(old.clone(), Some(old)).is_err());
    }

    #[test]
    fn completing_a_note_adds_the_missing_signature_and_keeps_cosignatures() {
        let (old, new) = (key("example.org/log"), key("example.org/log"));
        let witness = SignerKey::generate("w", KeyType::Cosignature).expect("w");
        let cp = Checkpoint::new("example.org/log/c1", 3, Hash([7; 32])).expect("cp");
        let mut note = cp.sign(&old).expect("sign");
        note.cosign(&witness, 1_700_000_000).expect("cosign");
        let keys = LogKeys::new(old.clone(), Some(new.clone())).expect("keys");
        let done = keys
            .complete(&note)
            .expect("complete")
            .expect("something added");
        assert_eq!(done.signatures().len(), 3);
        let policy = LogPolicy::new("example.org/log/c1", new.verifier())
            .and_then(|p| p.with_witnesses(vec![witness.verifier()], 1))
            .expect("policy");
        policy
            .verify(&done.to_bytes())
            .expect("new key and witness");
        assert!(keys.complete(&done).expect("complete").is_none());
    }
}
