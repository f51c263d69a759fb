//! C2SP tlog-checkpoint v1.0.0: the signed tree head, and the witness cosignatures
//! (tlog-cosignature v1) that make it trustworthy against split views.
//!
//! ```text
//! <origin>
//! <tree size, decimal>
//! <root hash, base64>
//! [extension lines]
//! ```
//!
//! A [`VerifiedCheckpoint`] only comes out of [`LogPolicy::verify`]: signed by the
//! log, for the expected origin, cosigned by a quorum of distinct witnesses.

use std::fmt;

use crate::hash::Hash;
use crate::note::{
    cosign_text, sign_text, KeyType, Note, NoteError, NoteSignature, SignerKey, VerifierKey,
};
use crate::text::parse_decimal;

/// A tree head: what a log commits to at one size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root: Hash,
    extensions: Vec<String>,
}

/// Why a checkpoint, or a policy to check one, was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("malformed checkpoint: {problem}")]
    Malformed { problem: String },
    #[error(transparent)]
    Note(#[from] NoteError),
    #[error("checkpoint is for origin {got:?}, expected {want:?}")]
    WrongOrigin { want: String, got: String },
    #[error("checkpoint for {origin:?} carries no valid signature from the log's key")]
    NotSignedByLog { origin: String },
    #[error("checkpoint has {have} valid witness cosignatures, policy needs {need}")]
    QuorumNotMet { have: usize, need: usize },
    /// A group of witnesses that must cosign in addition to the quorum (a tenant's
    /// own witnesses) did not.
    #[error("only {have} of the {need} required cosignatures of {group} are present")]
    GroupNotMet {
        group: String,
        have: usize,
        need: usize,
    },
    #[error("key {name} is a {key_type:?} key, but a {want:?} key is needed here")]
    WrongKeyType {
        name: String,
        key_type: KeyType,
        want: KeyType,
    },
    #[error("signature is by {got}, not by the witness key {want}")]
    NotThisWitness { want: String, got: String },
    #[error("cosignature by {name} does not verify")]
    BadCosignature { name: String },
    #[error("policy needs {need} witnesses but only {have} distinct witness keys are configured")]
    ImpossibleQuorum { have: usize, need: usize },
}

fn malformed(problem: impl Into<String>) -> CheckpointError {
    CheckpointError::Malformed {
        problem: problem.into(),
    }
}

impl Checkpoint {
    /// A checkpoint without extension lines. The origin must be a non-empty line
    /// with no control characters.
    pub fn new(origin: &str, size: u64, root: Hash) -> Result<Checkpoint, CheckpointError> {
        Checkpoint::with_extensions(origin, size, root, Vec::new())
    }

    /// A checkpoint with extension lines (each non-empty, no control characters).
    /// tlog-checkpoint does not recommend them: monitors cannot audit them.
    pub fn with_extensions(
        origin: &str,
        size: u64,
        root: Hash,
        extensions: Vec<String>,
    ) -> Result<Checkpoint, CheckpointError> {
        check_line("origin", origin)?;
        for line in &extensions {
            check_line("extension line", line)?;
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// Parses checkpoint note text strictly: at least three lines, each ending in a
    /// newline; the size in canonical decimal; the root as canonical base64 of 32
    /// bytes; extension lines non-empty.
    pub fn parse(text: &str) -> Result<Checkpoint, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| malformed("text does not end with a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        let size = lines
            .next()
            .ok_or_else(|| malformed("missing tree size line"))?;
        let root = lines
            .next()
            .ok_or_else(|| malformed("missing root hash line"))?;
        let size = parse_decimal(size).ok_or_else(|| {
            malformed(format!(
                "tree size {size:?} is not a decimal without leading zeros"
            ))
        })?;
        let root = Hash::from_base64(root).map_err(|e| malformed(e.to_string()))?;
        Checkpoint::with_extensions(origin, size, root, lines.map(str::to_owned).collect())
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn root(&self) -> &Hash {
        &self.root
    }

    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// The note text.
    pub fn to_text(&self) -> String {
        self.to_string()
    }

    /// The signed note, signed by the log's Ed25519 key. (tlog-checkpoint: the key
    /// name SHOULD be the origin; Palisade's logs name their keys so.)
    pub fn sign(&self, log_key: &SignerKey) -> Result<Note, CheckpointError> {
        self.sign_by(std::slice::from_ref(log_key))
    }

    /// The signed note, signed by each of `log_keys`. A log rotating its key signs
    /// with the old and the new one (one name, two key IDs); a verifier that knows
    /// either accepts the note, for signed-note ignores signatures by unknown keys.
    pub fn sign_by(&self, log_keys: &[SignerKey]) -> Result<Note, CheckpointError> {
        let mut note = Note::new(self.to_text())?;
        for key in log_keys {
            note.add_signature(sign_text(note.text(), key)?)?;
        }
        Ok(note)
    }

    /// A witness's tlog-cosignature v1 over this checkpoint at `timestamp`.
    pub fn cosign(
        &self,
        witness: &SignerKey,
        timestamp: u64,
    ) -> Result<NoteSignature, CheckpointError> {
        Ok(cosign_text(&self.to_text(), witness, timestamp)?)
    }

    /// Checks one cosignature line against one witness key and returns its time.
    pub fn verify_cosignature(
        &self,
        signature: &NoteSignature,
        witness: &VerifierKey,
    ) -> Result<u64, CheckpointError> {
        require_type(witness, KeyType::Cosignature)?;
        if signature.name() != witness.name() || signature.key_id() != witness.key_id() {
            return Err(CheckpointError::NotThisWitness {
                want: format!("{}+{:08x}", witness.name(), witness.key_id()),
                got: format!("{}+{:08x}", signature.name(), signature.key_id()),
            });
        }
        let mut note = Note::new(self.to_text())?;
        note.add_signature(signature.clone())?;
        let bad = || CheckpointError::BadCosignature {
            name: witness.name().to_owned(),
        };
        let opened = note
            .open(std::slice::from_ref(witness))
            .map_err(|_| bad())?;
        opened
            .verified()
            .first()
            .and_then(|v| v.timestamp())
            .ok_or_else(bad)
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.origin)?;
        writeln!(f, "{}", self.size)?;
        writeln!(f, "{}", self.root.to_base64())?;
        for line in &self.extensions {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

fn check_line(what: &str, line: &str) -> Result<(), CheckpointError> {
    if line.is_empty() {
        return Err(malformed(format!("{what} is empty")));
    }
    // signed-note forbids characters below U+0020 anywhere in a note.
    if let Some(c) = line.chars().find(|&c| c < ' ') {
        return Err(malformed(format!(
            "{what} {line:?} contains control character U+{:04X}",
            u32::from(c)
        )));
    }
    Ok(())
}

fn require_type(key: &VerifierKey, want: KeyType) -> Result<(), CheckpointError> {
    if key.key_type() != want {
        return Err(CheckpointError::WrongKeyType {
            name: key.name().to_owned(),
            key_type: key.key_type(),
            want,
        });
    }
    Ok(())
}

/// What a client trusts about one log: its origin, its key(s), and which witnesses
/// must cosign (at least `quorum` distinct witness keys).
#[derive(Debug, Clone)]
pub struct LogPolicy {
    origin: String,
    log_keys: Vec<VerifierKey>,
    witnesses: Vec<VerifierKey>,
    quorum: usize,
    /// Further witness groups, each of which must reach its own quorum too.
    groups: Vec<WitnessGroup>,
}

/// Witnesses that must cosign in addition to a log's quorum: at least `quorum`
/// distinct keys among `keys` (e.g. the witnesses a tenant runs itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessGroup {
    pub name: String,
    pub keys: Vec<VerifierKey>,
    pub quorum: usize,
}

impl LogPolicy {
    /// A policy that trusts `log_key` (Ed25519) for `origin`, with no witnesses.
    pub fn new(origin: &str, log_key: VerifierKey) -> Result<LogPolicy, CheckpointError> {
        require_type(&log_key, KeyType::Ed25519)?;
        check_line("origin", origin)?;
        Ok(LogPolicy {
            origin: origin.to_owned(),
            log_keys: vec![log_key],
            witnesses: Vec::new(),
            quorum: 0,
            groups: Vec::new(),
        })
    }

    /// Also accepts checkpoints signed by `log_key` (e.g. during key rotation).
    pub fn with_log_key(mut self, log_key: VerifierKey) -> Result<LogPolicy, CheckpointError> {
        require_type(&log_key, KeyType::Ed25519)?;
        self.log_keys.push(log_key);
        Ok(self)
    }

    /// Requires cosignatures from at least `quorum` distinct keys among `witnesses`.
    pub fn with_witnesses(
        mut self,
        witnesses: Vec<VerifierKey>,
        quorum: usize,
    ) -> Result<LogPolicy, CheckpointError> {
        for w in &witnesses {
            require_type(w, KeyType::Cosignature)?;
        }
        let have = distinct_keys(witnesses.iter());
        if quorum > have {
            return Err(CheckpointError::ImpossibleQuorum { have, need: quorum });
        }
        self.witnesses = witnesses;
        self.quorum = quorum;
        Ok(self)
    }

    /// Also requires `group`'s quorum: a checkpoint then needs both.
    pub fn with_group(mut self, group: WitnessGroup) -> Result<LogPolicy, CheckpointError> {
        for w in &group.keys {
            require_type(w, KeyType::Cosignature)?;
        }
        let have = distinct_keys(group.keys.iter());
        if group.quorum == 0 || group.quorum > have {
            return Err(CheckpointError::ImpossibleQuorum {
                have,
                need: group.quorum,
            });
        }
        self.groups.push(group);
        Ok(self)
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// The keys the log signs with.
    pub fn log_keys(&self) -> &[VerifierKey] {
        &self.log_keys
    }

    /// The log's own witnesses (of which [`LogPolicy::quorum`] must cosign).
    pub fn witnesses(&self) -> &[VerifierKey] {
        &self.witnesses
    }

    /// The groups required beside the quorum.
    pub fn groups(&self) -> &[WitnessGroup] {
        &self.groups
    }

    /// Opens a checkpoint this verifier accepted in full before (its stored view of
    /// the log): the expected origin and a valid signature by one of the log's keys
    /// or of `retired` (keys the log signed with before a key rotation). Witnesses are
    /// not required again, so a view survives a witness's rotation too.
    pub fn verify_stored(
        &self,
        signed: &[u8],
        retired: &[VerifierKey],
    ) -> Result<Checkpoint, CheckpointError> {
        let mut keys = self.log_keys.clone();
        for k in retired {
            require_type(k, KeyType::Ed25519)?;
            keys.push(k.clone());
        }
        let log_only = LogPolicy {
            origin: self.origin.clone(),
            log_keys: keys,
            witnesses: Vec::new(),
            quorum: 0,
            groups: Vec::new(),
        };
        Ok(log_only.verify(signed)?.checkpoint)
    }

    /// Opens a signed checkpoint: a valid log signature, the expected origin, and a
    /// quorum of valid cosignatures from distinct witness keys. Any signature from a
    /// configured key that fails to verify rejects the checkpoint (signed-note).
    pub fn verify(&self, signed: &[u8]) -> Result<VerifiedCheckpoint, CheckpointError> {
        let trusted: Vec<VerifierKey> = self
            .log_keys
            .iter()
            .chain(&self.witnesses)
            .chain(self.groups.iter().flat_map(|g| &g.keys))
            .cloned()
            .collect();
        let opened = Note::parse(signed)?.open(&trusted)?;
        let checkpoint = Checkpoint::parse(opened.text())?;
        if checkpoint.origin != self.origin {
            return Err(CheckpointError::WrongOrigin {
                want: self.origin.clone(),
                got: checkpoint.origin,
            });
        }
        let by_log = opened
            .verified()
            .iter()
            .any(|v| self.log_keys.contains(v.key()));
        if !by_log {
            return Err(CheckpointError::NotSignedByLog {
                origin: checkpoint.origin,
            });
        }
        let cosignatures: Vec<Cosignature> = opened
            .verified()
            .iter()
            .filter(|v| {
                self.witnesses.contains(v.key())
                    || self.groups.iter().any(|g| g.keys.contains(v.key()))
            })
            .filter_map(|v| {
                Some(Cosignature {
                    witness: v.key().clone(),
                    timestamp: v.timestamp()?,
                })
            })
            .collect();
        let have = distinct_keys(
            cosignatures
                .iter()
                .map(|c| &c.witness)
                .filter(|w| self.witnesses.contains(w)),
        );
        if have < self.quorum {
            return Err(CheckpointError::QuorumNotMet {
                have,
                need: self.quorum,
            });
        }
        for g in &self.groups {
            let have = distinct_keys(
                cosignatures
                    .iter()
                    .map(|c| &c.witness)
                    .filter(|w| g.keys.contains(w)),
            );
            if have < g.quorum {
                return Err(CheckpointError::GroupNotMet {
                    group: g.name.clone(),
                    have,
                    need: g.quorum,
                });
            }
        }
        Ok(VerifiedCheckpoint {
            checkpoint,
            note: opened.note().clone(),
            cosignatures,
        })
    }
}

/// Counts distinct public keys: tlog-cosignature v1 does not sign the witness
/// name, so one key listed under two names is one witness.
fn distinct_keys<'a>(keys: impl Iterator<Item = &'a VerifierKey>) -> usize {
    let mut seen: Vec<[u8; 32]> = keys.map(VerifierKey::public_key).collect();
    seen.sort_unstable();
    seen.dedup();
    seen.len()
}

/// A witness cosignature that verified.
#[derive(Debug, Clone)]
pub struct Cosignature {
    witness: VerifierKey,
    timestamp: u64,
}

impl Cosignature {
    pub fn witness(&self) -> &VerifierKey {
        &self.witness
    }

    /// When the witness cosigned (POSIX seconds).
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }
}

/// A checkpoint that met a [`LogPolicy`].
#[derive(Debug, Clone)]
pub struct VerifiedCheckpoint {
    checkpoint: Checkpoint,
    note: Note,
    cosignatures: Vec<Cosignature>,
}

impl VerifiedCheckpoint {
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The whole signed note, with every signature line it came with.
    pub fn note(&self) -> &Note {
        &self.note
    }

    /// The valid cosignatures from the policy's witnesses.
    pub fn cosignatures(&self) -> &[Cosignature] {
        &self.cosignatures
    }
}

#[cfg(test)]
mod tests;
