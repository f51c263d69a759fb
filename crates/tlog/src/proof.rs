//! C2SP tlog-proof v1: an offline, self-contained proof that an entry is in a log,
//! as seen by the log's witnesses.
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! [extra <base64 opaque data>]
//! index <leaf index, decimal>
//! <base64 hash>            (inclusion proof, leaf's sibling first; zero or more)
//! <blank line>
//! <signed checkpoint, verbatim, with its cosignatures>
//! ```
//!
//! The entry itself is not in the file: the verifier hashes the entry it holds. The
//! extra data is not authenticated and is returned to the caller as such.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::checkpoint::{Checkpoint, CheckpointError, LogPolicy, VerifiedCheckpoint};
use crate::hash::{leaf_hash, Hash};
use crate::note::{Note, NoteError, MAX_NOTE_LEN};
use crate::text::parse_decimal;
use crate::tree::{
    inclusion_proof, verify_inclusion, HashReader, ProofError, TreeError, MAX_PROOF_LEN,
};

/// First line of every proof file.
pub const HEADER: &str = "c2sp.org/tlog-proof@v1";

/// Largest proof file accepted: a maximal note plus proof lines and extra data.
pub const MAX_PROOF_FILE_LEN: usize = 2 * MAX_NOTE_LEN;

/// A parsed proof file. Nothing in it is trusted until [`TlogProof::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlogProof {
    extra: Option<Vec<u8>>,
    index: u64,
    proof: Vec<Hash>,
    checkpoint: Note,
}

/// Why a proof file is malformed or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlogProofError {
    #[error("proof file is {len} bytes, more than {MAX_PROOF_FILE_LEN}")]
    TooLarge { len: usize },
    #[error("proof file is not UTF-8")]
    NotUtf8,
    #[error("proof file does not start with the line {HEADER:?}")]
    Header,
    #[error("extra line {line:?} is not \"extra \" and non-empty base64")]
    BadExtra { line: String },
    #[error("line {line:?} is not \"index <decimal>\"")]
    BadIndex { line: String },
    #[error("inclusion proof line {line:?} is not a base64 hash")]
    BadProofLine { line: String },
    #[error("inclusion proof has more than {MAX_PROOF_LEN} hashes")]
    TooManyProofLines,
    #[error("proof file has no blank line before the checkpoint")]
    MissingBlankLine,
    #[error("checkpoint note: {0}")]
    Note(#[from] NoteError),
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("entry {index} is not included in the checkpoint of size {size}: {reason}")]
    NotIncluded {
        index: u64,
        size: u64,
        reason: ProofError,
    },
}

/// Why a log could not produce a proof file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProduceError<E> {
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("inclusion proof: {0}")]
    Tree(#[source] TreeError<E>),
}

fn shorten(s: &str) -> String {
    s.chars().take(100).collect()
}

impl TlogProof {
    /// Builds a proof file for leaf `index` against the log's own signed checkpoint
    /// (with whatever cosignatures it has gathered), reading the tree from `reader`.
    pub fn produce<R: HashReader + ?Sized>(
        index: u64,
        signed: Note,
        extra: Option<Vec<u8>>,
        reader: &R,
    ) -> Result<TlogProof, ProduceError<R::Error>> {
        let checkpoint = Checkpoint::parse(signed.text())?;
        let proof =
            inclusion_proof(index, checkpoint.size(), reader).map_err(ProduceError::Tree)?;
        Ok(TlogProof {
            extra: extra.filter(|e| !e.is_empty()),
            index,
            proof,
            checkpoint: signed,
        })
    }

    pub fn parse(bytes: &[u8]) -> Result<TlogProof, TlogProofError> {
        if bytes.len() > MAX_PROOF_FILE_LEN {
            return Err(TlogProofError::TooLarge { len: bytes.len() });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| TlogProofError::NotUtf8)?;
        let (header, rest) = text.split_once('\n').ok_or(TlogProofError::Header)?;
        if header != HEADER {
            return Err(TlogProofError::Header);
        }
        let (mut line, mut rest) = rest
            .split_once('\n')
            .ok_or(TlogProofError::MissingBlankLine)?;
        let mut extra = None;
        if let Some(data) = line.strip_prefix("extra ") {
            let decoded = BASE64
                .decode(data)
                .ok()
                .filter(|d| !d.is_empty())
                .ok_or_else(|| TlogProofError::BadExtra {
                    line: shorten(line),
                })?;
            extra = Some(decoded);
            (line, rest) = rest
                .split_once('\n')
                .ok_or(TlogProofError::MissingBlankLine)?;
        }
        let index = line
            .strip_prefix("index ")
            .and_then(parse_decimal)
            .ok_or_else(|| TlogProofError::BadIndex {
                line: shorten(line),
            })?;
        let mut proof = Vec::new();
        loop {
            let (line, tail) = rest
                .split_once('\n')
                .ok_or(TlogProofError::MissingBlankLine)?;
            rest = tail;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_LEN {
                return Err(TlogProofError::TooManyProofLines);
            }
            let hash = Hash::from_base64(line).map_err(|_| TlogProofError::BadProofLine {
                line: shorten(line),
            })?;
            proof.push(hash);
        }
        let checkpoint = Note::parse(rest.as_bytes())?;
        Checkpoint::parse(checkpoint.text())?;
        Ok(TlogProof {
            extra,
            index,
            proof,
            checkpoint,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{HEADER}\n");
        if let Some(extra) = &self.extra {
            out.push_str(&format!("extra {}\n", BASE64.encode(extra)));
        }
        out.push_str(&format!("index {}\n", self.index));
        for hash in &self.proof {
            out.push_str(&hash.to_base64());
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint.to_string());
        out.into_bytes()
    }

    pub fn index(&self) -> u64 {
        self.index
    }

    pub fn proof(&self) -> &[Hash] {
        &self.proof
    }

    /// The opaque extra data. Not authenticated: never trust it implicitly.
    pub fn extra(&self) -> Option<&[u8]> {
        self.extra.as_deref()
    }

    /// The signed checkpoint as carried in the file.
    pub fn checkpoint(&self) -> &Note {
        &self.checkpoint
    }

    /// Verifies that `entry` is at [`TlogProof::index`] in a checkpoint that meets
    /// `policy` (log signature, origin, witness quorum).
    pub fn verify(
        &self,
        entry: &[u8],
        policy: &LogPolicy,
    ) -> Result<VerifiedCheckpoint, TlogProofError> {
        self.verify_leaf_hash(&leaf_hash(entry), policy)
    }

    /// [`TlogProof::verify`] for an entry known only by its RFC 6962 leaf hash.
    pub fn verify_leaf_hash(
        &self,
        leaf: &Hash,
        policy: &LogPolicy,
    ) -> Result<VerifiedCheckpoint, TlogProofError> {
        let verified = policy.verify(&self.checkpoint.to_bytes())?;
        let checkpoint = verified.checkpoint();
        verify_inclusion(
            leaf,
            self.index,
            checkpoint.size(),
            &self.proof,
            checkpoint.root(),
        )
        .map_err(|reason| TlogProofError::NotIncluded {
            index: self.index,
            size: checkpoint.size(),
            reason,
        })?;
        Ok(verified)
    }
}

#[cfg(test)]
mod tests;
