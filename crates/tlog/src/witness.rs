//! C2SP tlog-witness v1.0.0, the pure part: the `add-checkpoint` request body and
//! the witness's decision. Persistence (atomic check-and-store) and HTTP belong to
//! the caller:
//!
//! 1. parse the body with [`AddCheckpointRequest::parse`] (error → 400);
//! 2. under a lock or transaction for [`AddCheckpointRequest::origin`], load the
//!    log's keys and the stored [`WitnessState`];
//! 3. call [`add_checkpoint`]; on `Ok`, durably store [`Cosigned::state`] *before*
//!    answering 200 with [`Cosigned::response_body`]; on `Err`, answer
//!    [`Refusal::status`] with [`Refusal::body`].

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::hash::{empty_root, Hash};
use crate::note::{cosign_text, KeyType, Note, NoteError, NoteSignature, SignerKey, VerifierKey};
use crate::text::parse_decimal;
use crate::tree::{verify_consistency, ProofError};

/// Most consistency proof lines a request may carry (tlog-witness).
pub const MAX_PROOF_LINES: usize = 63;

/// Content type of a 409 answer's body.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// A parsed `add-checkpoint` body. Nothing in it is verified yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpointRequest {
    old_size: u64,
    proof: Vec<Hash>,
    note: Note,
    checkpoint: Checkpoint,
}

/// Why a request body is malformed (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request body is not UTF-8")]
    NotUtf8,
    #[error("request does not start with a line \"old <size>\" (got {line:?})")]
    BadOldLine { line: String },
    #[error("request has more than {MAX_PROOF_LINES} consistency proof lines")]
    TooManyProofLines,
    #[error("consistency proof line {line:?} is not a base64 hash")]
    BadProofLine { line: String },
    #[error("request has no blank line before the checkpoint")]
    MissingBlankLine,
    #[error("checkpoint note: {0}")]
    Note(#[from] NoteError),
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
}

fn shorten(s: &str) -> String {
    s.chars().take(100).collect()
}

impl AddCheckpointRequest {
    /// A request for a log to send: proof from `old_size` to the signed checkpoint.
    pub fn new(old_size: u64, proof: Vec<Hash>, signed: Note) -> Result<Self, RequestError> {
        if proof.len() > MAX_PROOF_LINES {
            return Err(RequestError::TooManyProofLines);
        }
        let checkpoint = Checkpoint::parse(signed.text())?;
        Ok(AddCheckpointRequest {
            old_size,
            proof,
            note: signed,
            checkpoint,
        })
    }

    /// Parses `old <size>\n`, up to 63 base64 hash lines, a blank line, and a
    /// signed checkpoint.
    pub fn parse(body: &[u8]) -> Result<Self, RequestError> {
        let (first, mut rest) = split_line(body).ok_or(RequestError::BadOldLine {
            line: String::new(),
        })?;
        let first = std::str::from_utf8(first).map_err(|_| RequestError::NotUtf8)?;
        let old_size = first
            .strip_prefix("old ")
            .and_then(parse_decimal)
            .ok_or_else(|| RequestError::BadOldLine {
                line: shorten(first),
            })?;
        let mut proof = Vec::new();
        loop {
            let (line, tail) = split_line(rest).ok_or(RequestError::MissingBlankLine)?;
            rest = tail;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_LINES {
                return Err(RequestError::TooManyProofLines);
            }
            let line = std::str::from_utf8(line).map_err(|_| RequestError::NotUtf8)?;
            let hash = Hash::from_base64(line).map_err(|_| RequestError::BadProofLine {
                line: shorten(line),
            })?;
            proof.push(hash);
        }
        AddCheckpointRequest::new(old_size, proof, Note::parse(rest)?)
    }

    /// The request body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("old {}\n", self.old_size);
        for hash in &self.proof {
            out.push_str(&hash.to_base64());
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.note.to_string());
        out.into_bytes()
    }

    /// The claimed origin, to look up the log's keys and state. Unverified.
    pub fn origin(&self) -> &str {
        self.checkpoint.origin()
    }

    pub fn old_size(&self) -> u64 {
        self.old_size
    }

    pub fn proof(&self) -> &[Hash] {
        &self.proof
    }

    /// The checkpoint as sent (unverified until [`add_checkpoint`] accepts it).
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    pub fn note(&self) -> &Note {
        &self.note
    }
}

/// One `\n`-terminated line and the rest; `None` if there is no newline.
fn split_line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = bytes.iter().position(|&b| b == b'\n')?;
    let (line, rest) = bytes.split_at(i);
    Some((line, rest.get(1..)?))
}

/// What a witness remembers about one log: the last checkpoint it cosigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WitnessState {
    pub size: u64,
    pub root: Hash,
}

/// Why a witness refuses to cosign, with the HTTP answer tlog-witness prescribes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("malformed request: {0}")]
    Malformed(#[from] RequestError),
    #[error("unknown log origin {origin:?}")]
    UnknownOrigin { origin: String },
    #[error("checkpoint for {origin:?} is not validly signed by the log: {reason}")]
    BadSignature { origin: String, reason: NoteError },
    #[error("old size {old} is larger than the checkpoint size {new}")]
    OldSizeAboveNew { old: u64, new: u64 },
    #[error("old size {old} does not match the last cosigned size {stored}")]
    StaleOldSize { old: u64, stored: u64 },
    #[error("checkpoint of size {size} has a different root than the one already cosigned")]
    RootConflict { size: u64, stored: u64 },
    #[error("consistency proof from {old} to {new} does not verify: {reason}")]
    BadProof {
        old: u64,
        new: u64,
        reason: ProofError,
    },
    #[error("witness is misconfigured: {reason}")]
    Misconfigured { reason: String },
}

impl Refusal {
    /// The HTTP status tlog-witness assigns to this refusal.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Malformed(_) | Refusal::OldSizeAboveNew { .. } => 400,
            Refusal::BadSignature { .. } => 403,
            Refusal::UnknownOrigin { .. } => 404,
            Refusal::StaleOldSize { .. } | Refusal::RootConflict { .. } => 409,
            Refusal::BadProof { .. } => 422,
            Refusal::Misconfigured { .. } => 500,
        }
    }

    /// The body and its content type where the spec defines one: a 409 carries
    /// the stored size so the log can retry with the right proof.
    pub fn body(&self) -> Option<(&'static str, String)> {
        match self {
            Refusal::StaleOldSize { stored, .. } | Refusal::RootConflict { stored, .. } => {
                Some((SIZE_CONTENT_TYPE, format!("{stored}\n")))
            }
            _ => None,
        }
    }
}

/// An accepted checkpoint: the state to persist and the cosignature to return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosigned {
    pub state: WitnessState,
    pub signature: NoteSignature,
}

impl Cosigned {
    /// The 200 response body: the cosignature line.
    pub fn response_body(&self) -> String {
        self.signature.to_line()
    }
}

/// The witness's decision on one request (tlog-witness §add-checkpoint), in the
/// spec's order: known origin (404), log signature (403), sizes (400, 409),
/// consistency proof (422), same-size root (409). `log_keys` is `None` when the
/// origin is unknown; `stored` is `None` if this witness never cosigned for it.
/// `now` is the cosignature time in POSIX seconds.
pub fn add_checkpoint(
    request: &AddCheckpointRequest,
    log_keys: Option<&[VerifierKey]>,
    stored: Option<WitnessState>,
    witness: &SignerKey,
    now: u64,
) -> Result<Cosigned, Refusal> {
    let origin = request.origin();
    let keys = log_keys.ok_or_else(|| Refusal::UnknownOrigin {
        origin: origin.to_owned(),
    })?;
    // Only a log's own Ed25519 signature counts; a cosignature key configured as a
    // log key would let one witness vouch for a checkpoint.
    if let Some(key) = keys.iter().find(|k| k.key_type() != KeyType::Ed25519) {
        return Err(Refusal::Misconfigured {
            reason: format!(
                "log key {} for {origin:?} is not an Ed25519 key",
                key.name()
            ),
        });
    }
    request
        .note
        .clone()
        .open(keys)
        .map_err(|reason| Refusal::BadSignature {
            origin: origin.to_owned(),
            reason,
        })?;

    let (old, new) = (request.old_size, request.checkpoint.size());
    let new_root = *request.checkpoint.root();
    if old > new {
        return Err(Refusal::OldSizeAboveNew { old, new });
    }
    let stored_size = stored.map_or(0, |s| s.size);
    if old != stored_size {
        return Err(Refusal::StaleOldSize {
            old,
            stored: stored_size,
        });
    }
    // What the witness knows the old tree's root to be; the empty tree's root when
    // it never saw this log (old is then 0).
    let old_root = stored.map_or_else(empty_root, |s| s.root);
    // Same size: the proof must be empty (422) and the roots equal (409). A
    // never-seen log at size 0 must show the empty tree's root.
    if old == new {
        if !request.proof.is_empty() {
            let len = request.proof.len();
            return Err(bad_proof(old, new, ProofError::NotEmpty { old, new, len }));
        }
        if old_root != new_root {
            return Err(Refusal::RootConflict {
                size: new,
                stored: stored_size,
            });
        }
    }
    verify_consistency(old, new, &old_root, &new_root, &request.proof)
        .map_err(|reason| bad_proof(old, new, reason))?;

    let signature =
        cosign_text(request.note.text(), witness, now).map_err(|e| Refusal::Misconfigured {
            reason: e.to_string(),
        })?;
    Ok(Cosigned {
        state: WitnessState {
            size: new,
            root: new_root,
        },
        signature,
    })
}

fn bad_proof(old: u64, new: u64, reason: ProofError) -> Refusal {
    Refusal::BadProof { old, new, reason }
}

#[cfg(test)]
mod tests;
