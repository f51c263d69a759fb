//! The log's side of C2SP tlog-witness: `POST <witness>/add-checkpoint`.
//!
//! The log remembers the size each witness last cosigned, and at start learns it from
//! the cosigned checkpoint in storage. A witness that answers 409
//! tells its stored size (`text/x.tlog.size`); the log then retries once with a
//! consistency proof from that size. Any other answer is a failure for this batch.

use crate::fetch::{MemoryTiles, StoreFetcher};
use crate::store::TileStore;
use palisade_tlog::checkpoint::Checkpoint;
use palisade_tlog::note::{Note, NoteSignature, VerifierKey};
use palisade_tlog::tile::TileHashReader;
use palisade_tlog::tree::consistency_proof;
use palisade_tlog::witness::AddCheckpointRequest;
use std::time::Duration;

/// Where a witness is and how it signs.
#[derive(Clone)]
pub struct WitnessClient {
    name: String,
    /// `<url>/add-checkpoint`, parsed once (or why it cannot be).
    endpoint: Result<reqwest::Url, String>,
    key: VerifierKey,
    http: reqwest::Client,
    /// The size this witness last cosigned, as far as this log knows.
    known_size: Option<u64>,
    /// Its cosignature is needed beside the quorum (a tenant's witness).
    required: bool,
}

impl WitnessClient {
    pub fn new(name: &str, url: &str, key: VerifierKey, http: reqwest::Client) -> Self {
        Self {
            name: name.to_string(),
            endpoint: reqwest::Url::parse(&format!("{}/add-checkpoint", url.trim_end_matches('/')))
                .map_err(|e| format!("its URL is not usable: {e}")),
            key,
            http,
            known_size: None,
            required: false,
        }
    }

    /// Makes this witness's cosignature needed for every append, beside the quorum.
    pub fn required(mut self, required: bool) -> Self {
        self.required = required;
        self
    }

    pub fn is_required(&self) -> bool {
        self.required
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The size this witness last cosigned, as far as this log knows.
    pub fn known_size(&self) -> Option<u64> {
        self.known_size
    }

    /// Learns the size this witness cosigned from a checkpoint the log stored with
    /// its cosignature (the public `checkpoint` object), so that a restarted log
    /// sends the witness its true last size rather than 0, which the witness would
    /// answer with a conflict. A cosignature that does not verify teaches nothing.
    pub fn learn_from(&mut self, note: &Note) {
        let Ok(checkpoint) = Checkpoint::parse(note.text()) else {
            return;
        };
        let cosigned = note.signatures().iter().any(|sig| {
            sig.name() == self.key.name()
                && sig.key_id() == self.key.key_id()
                && checkpoint.verify_cosignature(sig, &self.key).is_ok()
        });
        if cosigned && self.known_size.is_none_or(|k| k < checkpoint.size()) {
            self.known_size = Some(checkpoint.size());
        }
    }

    /// An HTTP client for witnesses: mutual TLS with this log's certificate, and
    /// only servers holding a witness certificate are accepted.
    pub fn http_client(tls: rustls::ClientConfig) -> Result<reqwest::Client, String> {
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())
    }

    /// Asks the witness to cosign `note` (the log-signed checkpoint `checkpoint`).
    pub async fn add_checkpoint(
        &mut self,
        note: &Note,
        checkpoint: &Checkpoint,
        store: &TileStore,
        recent: &MemoryTiles,
    ) -> Result<NoteSignature, String> {
        let endpoint = self.endpoint.as_ref().map_err(Clone::clone)?;
        let mut old = self.known_size.unwrap_or(0).min(checkpoint.size());
        for _attempt in 0..2 {
            let proof = if old == 0 || old == checkpoint.size() {
                Vec::new()
            } else {
                let fetcher = StoreFetcher::new(store, recent);
                let reader = TileHashReader::new(checkpoint.size(), *checkpoint.root(), &fetcher);
                // Usually every hash is in memory; the fetcher blocks (in place) only
                // when it must read a tile from storage.
                consistency_proof(old, checkpoint.size(), &reader)
                    .map_err(|e| format!("cannot build a consistency proof from {old}: {e}"))?
            };
            let body = AddCheckpointRequest::new(old, proof, note.clone())
                .map_err(|e| e.to_string())?
                .to_bytes();
            let resp = self
                .http
                .post(endpoint.clone())
                .body(body)
                .send()
                .await
                .map_err(|e| format!("unreachable: {e}"))?;
            let status = resp.status().as_u16();
            let text = resp.text().await.map_err(|e| format!("bad answer: {e}"))?;
            match status {
                200 => {
                    let sig = text
                        .lines()
                        .filter_map(|l| NoteSignature::parse_line(l).ok())
                        .find(|s| s.name() == self.key.name() && s.key_id() == self.key.key_id())
                        .ok_or_else(|| {
                            "answered 200 without a cosignature by its key".to_string()
                        })?;
                    checkpoint
                        .verify_cosignature(&sig, &self.key)
                        .map_err(|e| format!("bad cosignature: {e}"))?;
                    self.known_size = Some(checkpoint.size());
                    return Ok(sig);
                }
                409 => {
                    let stored: u64 = text.trim().parse().map_err(|_| {
                        format!(
                            "409 without a valid stored size: {:?}",
                            text.chars().take(40).collect::<String>()
                        )
                    })?;
                    if stored > checkpoint.size() || stored == old {
                        return Err(format!(
                            "refused (409): it holds size {stored}, which conflicts with this checkpoint of size {}",
                            checkpoint.size()
                        ));
                    }
                    old = stored;
                }
                _ => {
                    return Err(format!(
                        "refused ({status}): {}",
                        text.trim().chars().take(200).collect::<String>()
                    ))
                }
            }
        }
        Err("refused twice".into())
    }
}
